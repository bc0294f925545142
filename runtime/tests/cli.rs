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

/// bf16 `.npy` files as ml_dtypes' users have them (`<V2`, NumPy's 2-byte void) are read as
/// bf16, and `--bf16-npy ml-dtypes` writes a bf16 output that way (the default stays `<f4`).
#[test]
fn run_reads_and_writes_ml_dtypes_bfloat16() {
    use tessera_runtime::npy::{Bf16Npy, encode_npy_with};
    let (a, b) = (tmp("a_v2.npy"), tmp("b_v2.npy"));
    let vals: Vec<f64> = (0..64).map(|i| (i % 7) as f64 - 3.0).collect();
    let t = tessera_compiler::HostTensor::from_f64(tessera_compiler::DType::BF16, &[8, 8], &vals);
    for f in [&a, &b] {
        std::fs::write(f, encode_npy_with(&t, f, Bf16Npy::MlDtypes).expect("encodes")).expect("writes");
    }
    assert!(std::fs::read(&a).expect("reads").windows(4).any(|w| w == b"<V2'"), "not an ml_dtypes file");
    for (flag, descr, name) in [(None, "'<f4'", "c_f4.npy"), (Some("ml-dtypes"), "'<V2'", "c_v2.npy")] {
        let c = tmp(name);
        let mut args = vec![
            "run".to_string(),
            "examples/matmul.tile".into(),
            "--arg".into(),
            format!("a={}", a.display()),
            "--arg".into(),
            format!("b={}", b.display()),
            "--backend".into(),
            "interp".into(),
            "--out".into(),
            format!("c={}", c.display()),
        ];
        if let Some(f) = flag {
            args.extend(["--bf16-npy".to_string(), f.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = tessera(&args);
        assert_eq!(code, 0, "{out}{err}");
        let bytes = std::fs::read(&c).expect("c written");
        assert!(String::from_utf8_lossy(&bytes[..128]).contains(descr), "{flag:?}: {}", String::from_utf8_lossy(&bytes[..128]));
        let got = tessera_runtime::read_npy_as(&c, tessera_compiler::DType::BF16).expect("reads c");
        // c = a · b: row 0 of a times column 0 of b.
        let want: f64 = (0..8).map(|k| vals[k] * vals[k * 8]).sum();
        assert_eq!(got.get_f64(0), want, "{flag:?}");
    }
}

/// Both backends bind through one check: a scalar that does not fit its type, and a grid
/// expression that overflows, are refused before anything runs (`--arg s=300` for an i8 ran a
/// grid of 300 on the interpreter, each program seeing 44).
#[test]
fn run_refuses_scalars_that_do_not_fit_and_grids_that_overflow() {
    let file = tmp("fit.tile");
    std::fs::write(
        &file,
        "#[grid(s)]\nkernel k(s: i8, y: &mut i32[300]) { y.store([program_id(0)], full([1], s as i32)); }\n\n\
         #[grid(s * s + 1)]\nkernel w(s: i64, y: &mut i32[1]) { y.store([0], full([1], 1)); }\n",
    )
    .expect("write");
    let f = file.to_str().expect("utf-8 temp path");
    for backend in ["interp", "auto"] {
        let (code, out, err) = tessera(&["run", f, "--kernel", "k", "--arg", "s=300", "--backend", backend]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains("argument `s`: 300 does not fit in i8 (its range is -128..=127)"), "{err}");
        let (code, out, err) = tessera(&["run", f, "--kernel", "w", "--arg", "s=4294967296", "--backend", backend]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains("grid axis 0 = ((s * s) + 1): `(s * s)` overflows i64 with s = 4294967296"), "{err}");
    }
    let (code, out, err) = tessera(&["run", f, "--kernel", "k", "--arg", "s=127", "--backend", "interp"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("grid [127, 1, 1]"), "{out}");
}

/// The interpreter reports races between programs (on by default; `--no-race-check` turns it
/// off) and refuses grids over its budget of programs (`--interp-max-programs` lifts it).
#[test]
fn run_on_the_interpreter_checks_races_and_its_budget() {
    let gn = [
        "run",
        "tests/races/groupnorm.tile",
        "--kernel",
        "groupnorm_overlap",
        "--dims",
        "N=5,C=72",
        "--arg",
        "x=random",
        "--arg",
        "eps=1e-5",
    ];
    let (code, out, err) = tessera(&[&gn[..], &["--backend", "interp"]].concat());
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("data race on `y` at element [0, 24]: program (0, 0, 0) wrote it and program (0, 1, 0) writes it in the same launch"),
        "{err}"
    );
    let (code, out, err) = tessera(&[&gn[..], &["--backend", "interp", "--no-race-check"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ran `groupnorm_overlap` on the interpreter"), "{out}");

    let va = ["run", "examples/vector_add.tile", "--dims", "N=6000", "--arg", "x=random", "--arg", "y=random", "--backend", "interp"];
    let (code, out, err) = tessera(&[&va[..], &["--interp-max-programs", "5"]].concat());
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("the grid [6, 1, 1] has 6 programs, more than the interpreter's budget of 5"), "{err}");
    assert!(err.contains("`tessera run --interp-max-programs 6`"), "{err}");
    let (code, out, err) = tessera(&[&va[..], &["--interp-max-programs", "6"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("grid [6, 1, 1]"), "{out}");
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
    assert!(err.contains("`--dump-after nope`: no such stage (stages: sema, dot_acc, uniform_mask, overlap_dots, dce"), "{err}");
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

/// Runs `tessera` in `dir` with a deadline: a command that blocks (on a FIFO) fails the test
/// instead of hanging it.
fn tessera_in(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tessera");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`tessera {}` did not finish in 60 s (blocked?)", args.join(" "));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("stdout");
    child.stderr.take().expect("stderr").read_to_string(&mut err).expect("stderr");
    (status.code().unwrap_or(-1), out, err)
}

/// A fresh folder for one test.
fn fresh(name: &str) -> PathBuf {
    let d = tmp(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

fn mkfifo(p: &std::path::Path) {
    let _ = std::fs::remove_file(p);
    assert!(Command::new("mkfifo").arg(p).status().expect("mkfifo").success(), "mkfifo {}", p.display());
}

const KERNEL: &str = "#[grid(1)]\nkernel k(c: &mut f32[N]) {\n    c.store([0], full([64], 1.0));\n}\n";

/// Imports: only regular `.tile` files of at most 4 MiB, relative to the importer; a file that is
/// not tile source is never quoted. Each of these used to read the file (and print its first
/// line), hang (FIFO) or run out of memory (`/dev/zero`).
#[cfg(unix)]
#[test]
fn imports_are_checked_before_they_are_read() {
    let dir = fresh("imports");
    let off = [("TESSERA_CACHE_DIR", "off")];
    mkfifo(&dir.join("fifo.tile"));
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.tile")).expect("symlink");
    std::fs::write(dir.join("secret.tile"), "SECRET-TOKEN-42 is not tile source\n").expect("write");
    std::fs::write(dir.join("big.tile"), format!("fn f(x) {{ x }}\n{}", "// padding\n".repeat(500_000))).expect("write");
    std::fs::write(dir.join("secret.txt"), "fn f(x) { x }\n").expect("write");
    for (import, want) in [
        ("fifo.tile", "cannot import \"fifo.tile\": it is a FIFO, not a regular file"),
        ("zero.tile", "cannot import \"zero.tile\": it is a device, not a regular file"),
        ("big.tile", "cannot import \"big.tile\": it is 5500014 bytes, more than the limit of 4194304 bytes"),
        ("secret.tile", "cannot import \"secret.tile\": it does not parse (a syntax error at line 1, column 1)"),
        ("secret.txt", "cannot import \"secret.txt\": only `.tile` files can be imported"),
        ("../../../../../../../../../etc/passwd", "only `.tile` files can be imported"),
        ("/etc/passwd", "an import path must be relative"),
        ("/dev/zero", "an import path must be relative"),
        ("/proc/self/environ", "an import path must be relative"),
    ] {
        std::fs::write(dir.join("main.tile"), format!("use \"{import}\"::{{f}};\n{KERNEL}")).expect("write");
        let (code, _, err) = tessera_in(&dir, &["check", "main.tile"], &off);
        assert_eq!(code, 1, "{import}: {err}");
        assert!(err.contains(want), "{import}: {err}");
        assert!(err.contains("main.tile:1:5"), "{import}: not located at the `use`: {err}");
        for secret in ["SECRET-TOKEN", "root:", "padding", "PATH="] {
            assert!(!err.contains(secret), "{import}: the error shows the file: {err}");
        }
    }
}

/// The file given on the command line gets the same checks (it used to hang on a FIFO and run
/// out of memory on `/dev/zero`).
#[cfg(unix)]
#[test]
fn the_source_file_is_checked_before_it_is_read() {
    let dir = fresh("main-file");
    mkfifo(&dir.join("fifo.tile"));
    std::fs::write(dir.join("big.tile"), "// padding\n".repeat(500_000)).expect("write");
    std::fs::write(dir.join("latin1.tile"), b"// caf\xe9\n").expect("write");
    for (file, want) in [
        ("fifo.tile", "error: cannot read `fifo.tile`: it is a FIFO, not a regular file"),
        ("/dev/zero", "error: cannot read `/dev/zero`: it is a device, not a regular file"),
        ("big.tile", "error: cannot read `big.tile`: it is 5500000 bytes, more than the limit of 4194304 bytes"),
        ("latin1.tile", "error: cannot read `latin1.tile`: it is not UTF-8 text"),
        (".", "error: cannot read `.`: it is a folder, not a file"),
    ] {
        for cmd in ["check", "build", "run"] {
            let (code, _, err) = tessera_in(&dir, &[cmd, file], &[("TESSERA_CACHE_DIR", "off")]);
            assert_eq!(code, 1, "{cmd} {file}: {err}");
            assert!(err.starts_with(want), "{cmd} {file}: {err}");
        }
    }
}

/// `.npy` inputs: a FIFO, a device, a file longer than its header says (a sparse 1 TiB file:
/// it used to be read whole) and one of the wrong rank are errors naming the argument.
#[cfg(unix)]
#[test]
fn npy_inputs_are_checked_before_they_are_read() {
    let dir = fresh("npy");
    mkfifo(&dir.join("fifo.npy"));
    let good = dir.join("x.npy");
    tessera_runtime::write_npy(&good, &HostTensor::zeros(DType::F32, &[4])).expect("write");
    let long = dir.join("long.npy");
    std::fs::copy(&good, &long).expect("copy");
    std::fs::OpenOptions::new().write(true).open(&long).expect("open").set_len(1 << 40).expect("sparse");
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.npy")).expect("symlink");
    let matrix = dir.join("m.npy");
    tessera_runtime::write_npy(&matrix, &HostTensor::zeros(DType::F32, &[4, 2])).expect("write");
    let vector_add = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/vector_add.tile");
    for (x, want) in [
        ("fifo.npy", "error: argument `x`: fifo.npy: it is a FIFO, not a regular file"),
        ("long.npy", "error: argument `x`: long.npy: shape [4] of f32 needs 16 bytes of data, the file has 1099511627648"),
        ("zero.npy", "error: argument `x`: zero.npy: it is a device, not a regular file"),
        ("m.npy", "error: argument `x`: expected a tensor of rank 1 (&f32[N]), `m.npy` has rank 2 (shape [4, 2])"),
    ] {
        let arg = format!("x={x}");
        let (code, _, err) = tessera_in(
            &dir,
            &["run", vector_add, "--arg", &arg, "--arg", "y=x.npy", "--backend", "interp"],
            &[("TESSERA_CACHE_DIR", "off")],
        );
        assert_eq!(code, 1, "{x}: {err}");
        assert!(err.starts_with(want), "{x}: {err}");
    }
}

/// Sizes a user gives are checked before anything is allocated: they used to panic (capacity
/// overflow) or abort (a 4 TiB allocation).
#[test]
fn sizes_are_checked_before_allocating() {
    for (dims, want) in [
        ("N=18446744073709551615", "error: `--dims N=18446744073709551615`: N = 18446744073709551615 is larger than 2147483647"),
        (
            "N=1099511627776",
            "error: `--dims N=1099511627776`: N = 1099511627776 is larger than 2147483647, the largest size a kernel takes",
        ),
        ("N=-4", "error: `--dims N=-4`: `-4` is not a size"),
        ("N=99999999999999999999999", "error: `--dims N=99999999999999999999999`: `99999999999999999999999` is not a size"),
    ] {
        let (code, _, err) =
            tessera(&["run", "examples/vector_add.tile", "--dims", dims, "--arg", "x=random", "--arg", "y=random", "--backend", "interp"]);
        assert_eq!(code, 1, "{dims}: {err}");
        assert!(err.starts_with(want), "{dims}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Every size fits i32, but the tensor does not fit the host limit.
    let (code, _, err) = tessera(&[
        "run",
        "examples/matmul.tile",
        "--dims",
        "M=2000000000,K=2000000000,N=1",
        "--arg",
        "a=random",
        "--arg",
        "b=random",
        "--backend",
        "interp",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("error: argument `a`: a tensor bf16[2000000000, 2000000000] needs 8000000000000000000 bytes, more than the limit"),
        "{err}"
    );
}

/// Repeated and unknown names in `--arg`, `--dims` and `--out` are refused, naming the flag
/// (they used to be accepted: the last or first won, a typo ran with a default).
#[test]
fn repeated_and_unknown_flag_names_are_refused() {
    let z = tmp("dup-z.npy");
    let z = z.to_str().expect("utf-8");
    let base = ["run", "examples/vector_add.tile", "--backend", "interp", "--arg", "x=random"];
    for (extra, want) in [
        (vec!["--arg", "y=random", "--arg", "y=zeros", "--dims", "N=8"], "error: `--arg y=zeros`: `y` is already given (`--arg y=random`)"),
        (vec!["--arg", "y=random", "--dims", "N=8", "--dims", "N=9"], "error: `--dims N=9`: `N` is already given (`--dims N=8`)"),
        (vec!["--arg", "y=random", "--dims", "N=8,N=8"], "error: `--dims N=8`: `N` is already given (`--dims N=8`)"),
        (vec!["--arg", "y=random", "--dims", "N=8,M=4"], "error: `--dims M=4`: kernel `vector_add` has no dimension `M` (dimensions: N)"),
        (vec!["--arg", "y=random", "--dims", "n=8"], "error: `--dims n=8`: kernel `vector_add` has no dimension `n` (dimensions: N)"),
        (
            vec!["--arg", "w=random", "--dims", "N=8"],
            "error: `--arg w=random`: kernel `vector_add` has no parameter `w` (parameters: x, y, z)",
        ),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let (code, _, err) = tessera(&args);
        assert_eq!(code, 1, "{extra:?}: {err}");
        assert!(err.starts_with(want), "{extra:?}: {err}");
    }
    // `--out` names are checked before the run.
    let out1 = format!("z={z}");
    let out2 = format!("z={z}.2");
    for (outs, want) in [
        (vec!["--out", &out1, "--out", &out2], format!("error: `--out {out2}`: `z` is already written (`--out z={z}`)")),
        (vec!["--out", "q=a.npy"], "error: `--out q=a.npy`: kernel `vector_add` has no parameter `q`".to_string()),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(["--arg", "y=random", "--dims", "N=8"]).chain(outs.iter().copied()).collect();
        let (code, out, err) = tessera(&args);
        assert_eq!(code, 1, "{outs:?}: {err}");
        assert!(err.starts_with(&want), "{outs:?}: {err}");
        assert!(!out.contains("ran `vector_add`"), "ran before checking `--out`: {out}");
    }
}

/// `-o DIR` where a file is in the way says which path and why (it used to print only
/// `File exists (os error 17)`).
#[test]
fn the_output_folder_error_names_the_path() {
    let dir = fresh("out-file");
    let file = dir.join("f");
    std::fs::write(&file, "x").expect("write");
    let f = file.to_str().expect("utf-8");
    let (code, _, err) = tessera(&["build", "examples/vector_add.tile", "-o", f]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim_end(), format!("error: `-o {f}`: cannot create the output folder: it exists and is not a folder"));
    let sub = format!("{f}/sub");
    let (code, _, err) = tessera(&["build", "examples/vector_add.tile", "-o", &sub]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.trim_end(), format!("error: `-o {sub}`: cannot create the output folder: `{f}` is a file, not a folder"));
}

/// After editing a file that the source imports, `build` compiles the new code (it used to
/// return the old PTX from the cache while `run` used the new code).
#[test]
fn editing_an_import_is_a_cache_miss() {
    let dir = fresh("import-cache");
    let cache = dir.join("cache");
    let env = [("TESSERA_CACHE_DIR", cache.to_str().expect("utf-8"))];
    std::fs::write(dir.join("h.tile"), "fn bump(x) { x + 1.0 }\n").expect("write");
    std::fs::write(
        dir.join("main.tile"),
        "use \"h.tile\"::{bump};\n#[grid(1)]\nkernel k(x: &f32[N], y: &mut f32[N]) {\n    y.store([0], bump(x.load([0], [128])));\n}\n",
    )
    .expect("write");
    let (code, first, err) = tessera_in(&dir, &["build", "main.tile", "--time"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("(cache miss)"), "{err}");
    let (_, again, err) = tessera_in(&dir, &["build", "main.tile", "--time"], &env);
    assert!(err.contains("(cache disk)"), "{err}");
    assert_eq!(again, first);
    std::fs::write(dir.join("h.tile"), "fn bump(x) { x + 2.0 }\n").expect("write");
    let (code, edited, err) = tessera_in(&dir, &["build", "main.tile", "--time"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("(cache miss)"), "{err}");
    assert_ne!(edited, first, "the old PTX after the import changed");
}

/// The bytes of a cache entry, as the cache writes them.
fn entry(kind: &str, key: &str, payload: &[u8]) -> Vec<u8> {
    use sha3::Digest;
    let sum: String = sha3::Sha3_256::digest(payload).iter().map(|b| format!("{b:02x}")).collect();
    let mut out = format!("tessera-cache 2 {kind}\n{key}\n{} {sum}\n", payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Rewrites the one compile entry in `cache` with `edit` applied to its JSON, keeping the
/// checksum valid (as anyone can).
fn plant(cache: &std::path::Path, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let path = std::fs::read_dir(cache)
        .expect("cache")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "tsc"))
        .expect("an entry");
    let bytes = std::fs::read(&path).expect("entry");
    let mut lines = bytes.splitn(4, |&b| b == b'\n');
    let (_, key, _, payload) = (lines.next(), lines.next().expect("key"), lines.next(), lines.next().expect("payload"));
    let mut json: serde_json::Value = serde_json::from_slice(payload).expect("json");
    edit(&mut json);
    let key = std::str::from_utf8(key).expect("key");
    std::fs::write(&path, entry("compile", key, &serde_json::to_vec(&json).expect("json"))).expect("plant");
    path
}

/// A cache folder others can write to is not used: an entry planted there (with a valid
/// checksum) used to be printed by `build` as if compiled.
#[cfg(unix)]
#[test]
fn a_shared_cache_folder_is_not_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let dir = fresh("shared-cache");
    let cache = dir.join("cache");
    let env = [("TESSERA_CACHE_DIR", cache.to_str().expect("utf-8"))];
    let build = || tessera_env(&["build", "examples/vector_add.tile", "--time"], &env);
    let (code, real, err) = build();
    assert_eq!(code, 0, "{err}");
    plant(&cache, |j| {
        let ptx = format!("// PLANTED\n{}", j["kernels"][0]["ptx"].as_str().expect("ptx"));
        j["kernels"][0]["ptx"] = ptx.into();
    });
    // In the user's own private folder the entry is trusted (only the user could write it).
    let (_, out, _) = build();
    assert!(out.contains("PLANTED"));
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (code, out, err) = build();
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("PLANTED"), "a planted entry was used");
    assert_eq!(out, real);
    assert!(err.contains("warning: not using the compile cache folder") && err.contains("(cache miss)"), "{err}");
}

/// A kernel name from a cache entry that would leave `-o DIR` is refused (it used to write
/// `DIR/../../x.ptx`).
#[test]
fn kernel_names_from_the_cache_stay_inside_the_output_folder() {
    let dir = fresh("escape");
    let cache = dir.join("cache");
    let out = dir.join("a/b/out");
    let env = [("TESSERA_CACHE_DIR", cache.to_str().expect("utf-8"))];
    let build = || tessera_env(&["build", "examples/vector_add.tile", "--emit", "ptx", "-o", out.to_str().expect("utf-8")], &env);
    assert_eq!(build().0, 0);
    plant(&cache, |j| {
        j["kernels"][0]["meta"]["name"] = "../../escaped".into();
        let ptx = j["kernels"][0]["ptx"].as_str().expect("ptx").replace(".entry vector_add(", ".entry ../../escaped(");
        j["kernels"][0]["ptx"] = ptx.into();
    });
    let (code, _, err) = build();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("is damaged") && err.contains("not an identifier"), "{err}");
    assert!(!dir.join("a/escaped.ptx").exists(), "wrote outside `-o DIR`");
    assert!(out.join("vector_add.ptx").exists());
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

/// Output cut short by its reader (`tessera build … | head -c 100`) ends the process quietly: it
/// used to panic in `print!` ("failed printing to stdout: Broken pipe").
#[cfg(unix)]
#[test]
fn a_closed_output_pipe_is_not_a_panic() {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' build examples/matmul.tile --emit ptx,tir,lir --no-cache --codegen ptx | head -c 100 >/dev/null",
            env!("CARGO_BIN_EXE_tessera")
        ))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("bash");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
}

/// LLVM ends the process on some pass pipelines (InstCombine's fixpoint check, LICM outside
/// `loop-mssa`), and some passes write files (`dot-cfg`): `--llvm-passes` is checked before LLVM
/// sees it, and InstCombine runs without its fixpoint check.
#[test]
fn llvm_pass_pipelines_are_checked_before_llvm_runs() {
    let na2d = ["build", "examples/na2d.tile", "--codegen", "llvm", "--no-cache", "--const", "KS=7", "--const", "D=64", "--llvm-passes"];
    // This pipeline's InstCombine does not reach a fixpoint on this kernel in one iteration.
    let (code, out, err) = tessera(&[&na2d[..], &["function(mem2reg,instcombine)"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(".entry na2d"), "{out}");
    for (pipeline, want) in [
        ("function(licm)", "`licm` runs only inside `loop-mssa(...)`"),
        ("dot-cfg", "`dot-cfg` is not a pass a pipeline may name here"),
        ("default<O7>", "`default` takes one of O0"),
        ("function(mem2reg", "expected `)`"),
    ] {
        let (code, _, err) = tessera(&[&na2d[..], &[pipeline]].concat());
        assert_eq!(code, 1, "{pipeline}: {err}");
        assert!(err.starts_with("error: ") && err.contains(want), "{pipeline}: {err}");
        assert!(!err.contains("LLVM ERROR") && !err.contains("panicked"), "{pipeline}: {err}");
    }
}
