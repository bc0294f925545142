//! Golden tests: every example compiles (verifiers on after every pass), its tile IR, thread IR
//! and PTX are snapshotted, its tile IR prints and parses back to the same text, and its PTX
//! assembles with ptxas for sm_90a (register and spill counts snapshotted).

use crate::common::{compile_example, opts, ptxas, root, tile_files};
use tessera_compiler::tir;

#[test]
fn examples_snapshots_and_roundtrip() {
    let files = tile_files("examples");
    assert!(files.len() >= 3, "examples are missing");
    for f in files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let stem = name.trim_end_matches(".tile");
        for k in compile_example(&name, &opts(&[])) {
            let tir_text = tir::print_kernel(&k.tir);
            let parsed = tir::parse_kernel(&tir_text).unwrap_or_else(|e| panic!("{stem}: tile IR does not parse back: {e}\n{tir_text}"));
            assert_eq!(tir::print_kernel(&parsed), tir_text, "{stem}: tile IR round trip changed the text");
            tir::verify_kernel(&parsed).unwrap_or_else(|e| panic!("{stem}: parsed tile IR fails the verifier: {e}"));
            insta::assert_snapshot!(format!("{stem}.{}.tir", k.meta.name), tir_text);
            insta::assert_snapshot!(format!("{stem}.{}.lir", k.meta.name), tessera_compiler::lir::print_kernel(&k.lir));
            insta::assert_snapshot!(format!("{stem}.{}.ptx", k.meta.name), k.ptx);
        }
    }
}

/// Every PTX the examples produce (both targets) assembles; the sm_90a resource use is recorded.
#[test]
fn examples_assemble_with_ptxas() {
    let Some(ptxas) = ptxas() else { return };
    let dir = std::env::temp_dir().join(format!("tessera-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut report = String::new();
    for f in tile_files("examples") {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        for target in [tessera_compiler::Target::Sm90a, tessera_compiler::Target::Sm80] {
            let o = tessera_compiler::Options { target, ..opts(&[]) };
            for k in compile_example(&name, &o) {
                let ptx = dir.join(format!("{}.{}.ptx", k.meta.name, target.name()));
                std::fs::write(&ptx, &k.ptx).expect("write ptx");
                let out = std::process::Command::new(&ptxas)
                    .args(["-v", &format!("-arch={}", target.name()), "-o"])
                    .arg(dir.join("out.cubin"))
                    .arg(&ptx)
                    .output()
                    .expect("run ptxas");
                let log = String::from_utf8_lossy(&out.stderr).to_string();
                assert!(out.status.success(), "ptxas rejected {} for {}:\n{log}", k.meta.name, target.name());
                if target == tessera_compiler::Target::Sm90a {
                    for line in log.lines().filter(|l| l.contains("Used") || l.contains("spill")) {
                        let line = line.trim_start_matches("ptxas info    : ").trim();
                        report.push_str(&format!("{}: {line}\n", k.meta.name));
                    }
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = root();
    insta::assert_snapshot!("ptxas_resources", report);
}
