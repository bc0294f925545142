//! Helpers shared by the tests: finding files, compiling, running the interpreter, ptxas.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tessera_compiler::interp::{self, Arg};
use tessera_compiler::{CompiledKernel, ConstValue, HostTensor, Options, Source, Target};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `.tile` files of a folder of the repository, sorted.
pub fn tile_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("cannot read {dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tile"))
        .collect();
    v.sort();
    v
}

/// Options for the tests: verifiers on, and the `ptx` emitter, whose PTX the golden snapshots
/// hold (the `llvm` emitter's output is assembled, not snapshotted: `golden::llvm_*`).
pub fn opts(consts: &[(&str, i64)]) -> Options {
    Options {
        consts: consts.iter().map(|(n, v)| (n.to_string(), ConstValue::Int(*v))).collect(),
        verify: true,
        codegen: tessera_compiler::Codegen::Ptx,
        ..Options::default()
    }
}

/// Like [`opts`], plus `bool` consts.
pub fn opts_with_bools(ints: &[(&str, i64)], bools: &[(&str, bool)]) -> Options {
    let mut o = opts(ints);
    o.consts.extend(bools.iter().map(|(n, b)| (n.to_string(), ConstValue::Bool(*b))));
    o
}

/// Compiles an example file; panics with the rendered diagnostics on failure.
pub fn compile_example(name: &str, o: &Options) -> Vec<CompiledKernel> {
    let path = root().join("examples").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match tessera_compiler::compile(&Source::new(format!("examples/{name}"), text), o) {
        Ok(m) => m.kernels,
        Err(d) => panic!("{name} does not compile:\n{}", d.render()),
    }
}

/// One example file compiled at its defaults.
pub struct Example {
    /// The file name without `.tile`.
    pub stem: String,
    pub kernels: Vec<CompiledKernel>,
}

/// Every example compiled at its defaults (verifiers on) for `target`, once per test binary:
/// the tests that read the examples' IR or PTX share these instead of compiling them again.
pub fn examples(target: Target) -> &'static [Example] {
    static SM90A: OnceLock<Vec<Example>> = OnceLock::new();
    static SM80: OnceLock<Vec<Example>> = OnceLock::new();
    let cell = match target {
        Target::Sm90a => &SM90A,
        Target::Sm80 => &SM80,
    };
    cell.get_or_init(|| {
        tile_files("examples")
            .iter()
            .map(|f| {
                let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
                let kernels = compile_example(&name, &Options { target, ..opts(&[]) });
                Example { stem: name.trim_end_matches(".tile").to_string(), kernels }
            })
            .collect()
    })
}

/// Runs a kernel on the interpreter and returns the arguments afterwards.
pub fn interp(k: &CompiledKernel, mut args: Vec<Arg>) -> Vec<Arg> {
    if let Err(e) = interp::run_kernel(&k.tir, &mut args) {
        panic!("interpreter failed on {}: {e}", k.meta.name);
    }
    args
}

pub fn tensor(a: &Arg) -> &HostTensor {
    match a {
        Arg::Tensor(t) => t,
        Arg::Scalar(_) => panic!("expected a tensor argument"),
    }
}

/// ptxas from PATH or from the `nvidia-cuda-nvcc-cu12` wheel. In CI a missing ptxas fails.
pub fn ptxas() -> Option<PathBuf> {
    let out = std::process::Command::new("bash").arg(root().join("scripts/find-ptxas.sh")).output().ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !p.is_empty() {
        return Some(PathBuf::from(p));
    }
    assert!(std::env::var_os("CI").is_none(), "ptxas is required in CI: run scripts/setup.sh");
    eprintln!("note: ptxas not found; PTX assembly checks skipped (run scripts/setup.sh)");
    None
}

/// Assembles `ptx` (kernel `name`) with `ptxas -v` for `target` and returns its log; panics
/// with the log if ptxas rejects it.
pub fn run_ptxas(ptxas: &Path, name: &str, ptx: &str, target: Target) -> String {
    let dir = std::env::temp_dir().join(format!("tessera-ptxas-{}-{name}-{}", std::process::id(), target.name()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(format!("{name}.ptx"));
    std::fs::write(&file, ptx).expect("write ptx");
    let out = std::process::Command::new(ptxas)
        .args(["-v", &format!("-arch={}", target.name()), "-o"])
        .arg(dir.join("out.cubin"))
        .arg(&file)
        .output()
        .expect("run ptxas");
    let _ = std::fs::remove_dir_all(&dir);
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "ptxas rejected {name} for {}:\n{log}", target.name());
    log
}

/// Philox 4×32-10 as the Random123 paper defines it (the reference of `std::random`).
pub fn philox_ref(mut c: [u32; 4], mut k: [u32; 2]) -> [u32; 4] {
    for _ in 0..10 {
        let p0 = u64::from(c[0]) * 0xD251_1F53;
        let p1 = u64::from(c[2]) * 0xCD9E_8D57;
        c = [(p1 >> 32) as u32 ^ c[1] ^ k[0], p1 as u32, (p0 >> 32) as u32 ^ c[3] ^ k[1], p0 as u32];
        k = [k[0].wrapping_add(0x9E37_79B9), k[1].wrapping_add(0xBB67_AE85)];
    }
    c
}

/// Triton's `uint_to_uniform_float`: the bits as an i32 folded to `[0, 2³¹)`, times 2⁻³¹.
pub fn uniform_ref(x: u32) -> f32 {
    let i = x as i32;
    let folded = if i < 0 { i.wrapping_neg().wrapping_sub(1) } else { i };
    folded as f32 * 4.656_612_7e-10_f32
}
