//! End-to-end tests of the `tessera` command: exit codes and messages for bad input, and a run
//! on the interpreter written to and read back from `.npy`.

use std::path::PathBuf;
use std::process::Command;
use tessera_compiler::{DType, HostTensor};

fn tessera(args: &[&str]) -> (i32, String, String) {
    tessera_env(args, &[("TESSERA_CACHE_DIR", tmp("cache").to_str().expect("utf-8 temp path"))])
}

/// Runs `tessera` with extra environment variables.
fn tessera_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .envs(env.iter().copied())
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

#[test]
fn a_second_build_is_a_cache_hit_and_a_damaged_entry_is_rebuilt() {
    let cache = tmp("cache-hit");
    let _ = std::fs::remove_dir_all(&cache);
    let env = [("TESSERA_CACHE_DIR", cache.to_str().expect("utf-8"))];
    let out = tmp("cache-hit-out");
    let build =
        || tessera_env(&["build", "examples/vector_add.tile", "--emit", "ptx,meta", "-o", out.to_str().expect("utf-8"), "--time"], &env);
    let (code, _, err) = build();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("(cache miss)"), "{err}");
    let ptx = std::fs::read_to_string(out.join("vector_add.ptx")).expect("ptx written");
    let (code, _, err) = build();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("(cache disk)"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("vector_add.ptx")).expect("ptx"), ptx);

    // Truncate the entry: the next build notes it, rebuilds, and writes the same PTX.
    let entries: Vec<PathBuf> = std::fs::read_dir(&cache).expect("cache dir").flatten().map(|e| e.path()).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let bytes = std::fs::read(&entries[0]).expect("entry");
    std::fs::write(&entries[0], &bytes[..bytes.len() / 3]).expect("truncate");
    let (code, _, err) = build();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("is damaged") && err.contains("rebuilt") && err.contains("(cache miss)"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("vector_add.ptx")).expect("ptx"), ptx);
    assert_eq!(std::fs::read(&entries[0]).expect("rewritten"), bytes);

    // `--no-cache` and `TESSERA_CACHE_DIR=off` leave the disk alone.
    let (code, _, err) = tessera_env(&["build", "examples/softmax.tile", "--time"], &[("TESSERA_CACHE_DIR", "off")]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("(cache miss)"), "{err}");
}

#[test]
fn the_aot_pair_is_enough_to_launch() {
    let dir = tmp("aot");
    let (code, _, err) = tessera(&["build", "examples/vector_add.tile", "--emit", "ptx,meta", "-o", dir.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    // Read back by the runtime alone: no compiler call from here on.
    let k = tessera_runtime::aot::AotKernel::read(&dir, "vector_add").expect("reads and validates");
    assert_eq!(k.meta.dims, ["N"]);
    assert_eq!(k.meta.threads, 128);
    assert_eq!(k.meta.grid.len(), 1);
    let parts: Vec<(&str, &str)> = k.meta.ptx_params.iter().map(|p| (p.name.as_str(), p.ty.as_str())).collect();
    assert_eq!(parts[..3], [("x.ptr", "ptr"), ("x.size0", "i32"), ("x.stride0", "i64")]);
    assert!(k.meta.compiler.starts_with(env!("CARGO_PKG_VERSION")), "{}", k.meta.compiler);
    #[cfg(feature = "gpu-tests")]
    {
        let rt = tessera_runtime::Runtime::new().expect("these tests need a GPU");
        let kernel = k.load(&rt).expect("loads");
        let x = rt.tensor(&[0.25f32; 5000], &[5000]).expect("upload");
        let z = rt.zeros::<f32>(&[5000]).expect("alloc");
        rt.launch(&kernel, &[x.arg(), x.arg(), z.arg()]).expect("launches");
        assert_eq!(z.to_vec(&rt).expect("download"), vec![0.5f32; 5000]);
    }
}

#[test]
fn dumps_show_the_ir_after_each_stage() {
    let (code, out, err) = tessera(&["build", "examples/vector_add.tile", "--dump-after", "dce,lower", "--emit", "meta"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"ptx_params\""), "{out}");
    assert!(err.contains("IR after `dce`, kernel `vector_add`") && err.contains("kernel @vector_add("), "{err}");
    assert!(err.contains("IR after `lower`") && err.contains("#blocked<"), "{err}");
    assert!(!err.contains("IR after `sema`"), "{err}");
    let (code, _, err) = tessera(&["build", "examples/vector_add.tile", "--dump-all"]);
    assert_eq!(code, 0, "{err}");
    for stage in tessera_compiler::dump_stages() {
        assert!(err.contains(&format!("IR after `{stage}`")), "{stage}: {err}");
    }
    assert!(err.contains(".visible .entry vector_add("), "{err}");
    let (code, _, err) = tessera(&["build", "examples/vector_add.tile", "--dump-after", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("`--dump-after nope`: no such stage (stages: sema, dce"), "{err}");
}

#[test]
fn bench_checks_its_arguments_and_needs_a_gpu() {
    let (code, _, err) = tessera(&["bench", "examples/vector_add.tile", "--dims", "N=1000", "--arg", "x=zeros"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not time on zeros"), "{err}");
    let (code, _, err) = tessera(&["bench", "examples/vector_add.tile", "--arg", "x=random"]);
    assert_eq!(code, 1);
    assert!(err.contains("the size of `N` is unknown"), "{err}");
    if tessera_runtime::Runtime::new().is_err() {
        let (code, _, err) = tessera(&["bench", "examples/vector_add.tile", "--dims", "N=1000"]);
        assert_eq!(code, 1);
        assert!(err.contains("`tessera bench` needs a GPU"), "{err}");
    }
}

/// `--warps`, `--stages` and `--const` are checked by the rules of the attributes and the
/// kernel's const parameters; the error names the flag (and never panics or aborts).
#[test]
fn build_options_are_checked() {
    let matmul = "examples/matmul.tile";
    for (flag, value, want) in [
        ("--warps", "0", "`--warps 0`: warps must be a power of two from 1 to 32"),
        ("--warps", "3", "`--warps 3`: warps must be a power of two from 1 to 32"),
        ("--warps", "64", "`--warps 64`: warps must be"),
        ("--warps", "4294967295", "`--warps 4294967295`: warps must be"),
        ("--stages", "0", "`--stages 0`: stages must be from 1 to 16"),
        ("--stages", "4294967295", "`--stages 4294967295`: stages must be from 1 to 16"),
        ("--const", "BMX=64", "`--const BMX=64`: no kernel here has a const parameter `BMX`"),
        ("--const", "BM=4294967296", "`--const BM=4294967296`: 4294967296 does not fit in i32"),
    ] {
        for cmd in ["check", "build"] {
            let mut args = vec![cmd, matmul];
            if cmd == "build" {
                args.push("--no-cache");
            }
            args.extend([flag, value]);
            let (code, out, err) = tessera(&args);
            assert_eq!(code, 1, "{cmd} {flag} {value}: {err}");
            assert!(err.contains(want) && !err.contains("panicked"), "{cmd} {flag} {value}: {err}");
            assert!(out.is_empty(), "{cmd} {flag} {value}: {out}");
        }
    }
    let (code, _, err) = tessera(&["check", matmul, "--const", "BM=64", "--const", "BM=128"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`--const BM` is given twice (64 and 128)"), "{err}");
    let (code, out, err) = tessera(&["check", matmul, "--warps", "8", "--stages", "4", "--const", "BM=128"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok: kernel `matmul`"), "{out}");
}

/// A file with no kernel is an error for every command that compiles it.
#[test]
fn a_file_without_kernels_is_an_error() {
    let empty = tmp("empty.tile");
    std::fs::write(&empty, "// only a comment\nfn helper(x) { x + 1 }\n").expect("write");
    let path = empty.to_str().expect("utf-8 temp path");
    for args in [vec!["check", path], vec!["build", "--no-cache", path], vec!["run", path, "--backend", "interp"]] {
        let (code, _, err) = tessera(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(&format!("no kernels in `{path}`")), "{args:?}: {err}");
    }
}
