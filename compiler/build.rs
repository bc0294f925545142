//! Build script: generates the parser (`$OUT_DIR/syntax/grammar.rs`) from
//! `src/syntax/grammar.lalrpop` with LALRPOP.

fn main() {
    let result = lalrpop::Configuration::new().use_cargo_dir_conventions().emit_rerun_directives(true).process();
    if let Err(e) = result {
        eprintln!("error: generating the parser from src/syntax/grammar.lalrpop failed: {e}");
        std::process::exit(1);
    }
    println!("cargo:rerun-if-changed=build.rs");
}
