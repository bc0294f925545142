//! Build script: generates the parser (`$OUT_DIR/syntax/grammar.rs`) from
//! `src/syntax/grammar.lalrpop` with LALRPOP, and fingerprints the compiler's sources
//! (`TESSERA_BUILD_ID`, the key of the compile caches: a change to any file of `src/` or
//! `../stdlib/` gives a new fingerprint).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

fn main() {
    let result = lalrpop::Configuration::new().use_cargo_dir_conventions().emit_rerun_directives(true).process();
    if let Err(e) = result {
        eprintln!("error: generating the parser from src/syntax/grammar.lalrpop failed: {e}");
        std::process::exit(1);
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=../stdlib");
    println!("cargo:rerun-if-changed=Cargo.toml");
    let mut files = vec![PathBuf::from("build.rs"), PathBuf::from("Cargo.toml")];
    collect(Path::new("src"), &mut files);
    collect(Path::new("../stdlib"), &mut files);
    files.sort();
    // SipHash with fixed keys: deterministic for a toolchain, so the same sources give the same id.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut h2 = std::collections::hash_map::DefaultHasher::new();
    0x7e55e2au32.hash(&mut h2);
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        f.to_string_lossy().hash(&mut h);
        bytes.hash(&mut h);
        f.to_string_lossy().hash(&mut h2);
        bytes.hash(&mut h2);
    }
    println!("cargo:rustc-env=TESSERA_BUILD_ID={:016x}{:016x}", h.finish(), h2.finish());
}

/// Every file under `dir`, recursively.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}
