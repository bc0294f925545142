//! End-to-end tests of the `tessera` command: exit codes and messages for bad input, and a run
//! on the interpreter written to and read back from `.npy`.

use std::path::PathBuf;
use std::process::Command;
use tessera_compiler::{DType, HostTensor};

fn tessera(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run tessera");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tessera-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d.join(name)
}

#[test]
fn check_reports_located_errors_with_exit_1() {
    for (file, want) in [
        ("tests/ui/syntax_error.tile", "expected `;`, found `let`"),
        ("tests/ui/unknown_name.tile", "unknown name `ofset`"),
        ("tests/ui/dtype_mismatch.tile", "dtype mismatch: bf16 and f32"),
    ] {
        let (code, _, err) = tessera(&["check", file]);
        assert_eq!(code, 1, "{file}: {err}");
        assert!(err.starts_with("error: "), "{file}: first line must be the error: {err}");
        assert!(err.contains(want) && err.contains(&format!("{file}:")), "{file}: {err}");
        assert!(!err.contains("panicked"), "{file}: {err}");
    }
}

#[test]
fn run_explains_bad_arguments() {
    let (code, _, err) = tessera(&["run", "examples/matmul.tile", "--dims", "M=4,N=4,K=4", "--arg", "a=random", "--backend", "interp"]);
    assert_eq!(code, 1);
    assert!(err.contains("missing argument `b`"), "{err}");

    let ints = tmp("ints.npy");
    tessera_runtime::write_npy(&ints, &HostTensor::zeros(DType::I32, &[4, 8])).expect("write");
    let (code, _, err) = tessera(&[
        "run",
        "examples/matmul.tile",
        "--arg",
        &format!("a={}", ints.display()),
        "--arg",
        "b=random",
        "--dims",
        "N=2",
        "--backend",
        "interp",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("argument `a`") && err.contains("i32"), "{err}");

    let a = tmp("a.npy");
    let b = tmp("b.npy");
    tessera_runtime::write_npy(&a, &HostTensor::zeros(DType::F32, &[4, 8])).expect("write");
    tessera_runtime::write_npy(&b, &HostTensor::zeros(DType::F32, &[9, 2])).expect("write");
    let (code, _, err) = tessera(&[
        "run",
        "examples/matmul.tile",
        "--arg",
        &format!("a={}", a.display()),
        "--arg",
        &format!("b={}", b.display()),
        "--backend",
        "interp",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("dimension `K` disagrees: `a` has K = 8, but `b` has K = 9"), "{err}");
}

#[test]
fn run_on_the_interpreter_writes_npy() {
    let z = tmp("z.npy");
    let (code, out, err) = tessera(&[
        "run",
        "examples/vector_add.tile",
        "--dims",
        "N=1500",
        "--arg",
        "x=random",
        "--arg",
        "y=random",
        "--backend",
        "interp",
        "--out",
        &format!("z={}", z.display()),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("on the interpreter"), "{out}");
    let t = tessera_runtime::read_npy(&z).expect("read z");
    assert_eq!(t.shape, vec![1500]);
    assert!((0..1500).any(|i| t.get_f64(i) != 0.0), "output not written");
}

#[test]
fn build_emits_every_form() {
    let (code, out, err) = tessera(&["build", "examples/softmax.tile", "--emit", "tir,lir,ptx,meta"]);
    assert_eq!(code, 0, "{err}");
    for want in ["kernel @softmax(", "#blocked<", ".entry softmax(", "\"shared_bytes\""] {
        assert!(out.contains(want), "missing `{want}`");
    }
}
