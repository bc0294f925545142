//! Running a compiled kernel on host tensors with either backend, and comparing results: what
//! the CLI's `run --check`, the self-test and the examples share; and the host arguments of
//! `tessera run` and `tessera bench` made from their `--arg`, `--dims` and `--out` flags.

use crate::device::{DeviceArg, Runtime, RuntimeError};
use crate::npy;
use tessera_compiler::interp::{self, Arg, InterpError, RunOptions};
use tessera_compiler::tir::{Dim, ParamKind};
use tessera_compiler::{AllocError, CompiledKernel, DType, HostTensor, KernelMeta, Scalar};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Interp(#[from] InterpError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// A small, fast, deterministic generator (splitmix64) for test inputs.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// A tensor of random values: floats uniform in [-1, 1), integers in [-50, 50) (unsigned
/// [0, 100)), bools half true. Never all zeros. For sizes a user chooses, use
/// [`try_random_tensor`]: this one panics where that one returns an error.
pub fn random_tensor(dtype: DType, shape: &[usize], rng: &mut Rng) -> HostTensor {
    try_random_tensor(dtype, shape, rng).unwrap_or_else(|e| panic!("{e}"))
}

/// [`random_tensor`], with its size checked as [`HostTensor::try_zeros`] checks it.
pub fn try_random_tensor(dtype: DType, shape: &[usize], rng: &mut Rng) -> Result<HostTensor, AllocError> {
    let mut t = HostTensor::try_zeros(dtype, shape)?;
    for i in 0..t.numel() {
        if dtype.is_float() {
            t.set_f64(i, rng.uniform());
        } else {
            let v = (rng.next_u64() % 100) as i64;
            t.set_i64(
                i,
                if dtype == DType::Bool {
                    v & 1
                } else if dtype.is_signed() {
                    v - 50
                } else {
                    v
                },
            );
        }
    }
    Ok(t)
}

/// The `--arg`, `--dims` and `--seed` flags of `tessera run` and `tessera bench`.
#[derive(Clone, Copy, Debug)]
pub struct ArgFlags<'a> {
    /// `NAME=FILE.npy`, `NAME=random`, `NAME=zeros` or `NAME=SCALAR`, one per parameter.
    pub args: &'a [String],
    /// `SYM=SIZE`, one per dimension symbol.
    pub dims: &'a [String],
    /// The seed of `random` tensors.
    pub seed: u64,
}

/// How a command makes the tensors that are not given a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inputs {
    /// `tessera run`: `random` and `zeros` as asked; a `&mut` tensor not given is zeros (to be
    /// poisoned on the GPU); any other tensor must be given.
    Run,
    /// `tessera bench`: `zeros` is refused (timing on zeros hides unwritten outputs); a tensor not
    /// given is random, or, if `&mut`, made to be poisoned.
    Bench,
}

/// The largest size of a dimension: sizes are `i32` in the kernel parameter ABI.
const MAX_DIM: u64 = i32::MAX as u64;

fn split_kv<'a>(s: &'a str, flag: &str) -> Result<(&'a str, &'a str), String> {
    s.split_once('=').map(|(a, b)| (a.trim(), b.trim())).ok_or_else(|| format!("error: `{flag} {s}`: expected NAME=VALUE"))
}

use tessera_compiler::host::describe;

/// Parses a scalar argument of type `d`.
pub fn parse_scalar(v: &str, d: DType) -> Option<Scalar> {
    match d {
        DType::Bool => v.parse().ok().map(Scalar::Bool),
        d if d.is_float() => v.parse().ok().map(Scalar::Float),
        _ => v.parse().ok().map(Scalar::Int),
    }
}

/// The arguments of kernel `meta` from the command's flags: each tensor (loaded from a `.npy`
/// file, or made) or scalar, with whether it was made here as an output (to be poisoned on the
/// GPU). Every flag is checked first, naming the flag or the argument at fault: an unknown or
/// repeated parameter, a `--dims` symbol repeated or not used by any parameter, a size that is
/// not a number or does not fit `i32`, a `.npy` file of the wrong dtype or rank, a tensor too
/// large to make ([`HostTensor::try_zeros`]).
pub fn host_args(meta: &KernelMeta, flags: &ArgFlags<'_>, inputs: Inputs) -> Result<(Vec<Arg>, Vec<bool>), String> {
    let mut given: Vec<(&str, &str, &str)> = vec![];
    for a in flags.args {
        let (n, v) = split_kv(a, "--arg")?;
        if !meta.params.iter().any(|p| p.name == n) {
            let names: Vec<&str> = meta.params.iter().map(|p| p.name.as_str()).collect();
            return Err(format!("error: `--arg {a}`: kernel `{}` has no parameter `{n}` (parameters: {})", meta.name, names.join(", ")));
        }
        if let Some((_, _, first)) = given.iter().find(|(x, ..)| *x == n) {
            return Err(format!("error: `--arg {a}`: `{n}` is already given (`--arg {first}`)"));
        }
        given.push((n, v, a));
    }
    let known = KernelMeta::dims_of(&meta.params);
    // Each symbol with its size and where the size came from (`--dims N=…` or `x.npy`).
    let mut syms: Vec<(String, usize, String)> = vec![];
    for d in flags.dims {
        let (n, v) = split_kv(d, "--dims")?;
        if !known.iter().any(|k| k == n) {
            let list = if known.is_empty() { "it has none".to_string() } else { format!("dimensions: {}", known.join(", ")) };
            return Err(format!("error: `--dims {d}`: kernel `{}` has no dimension `{n}` ({list})", meta.name));
        }
        if let Some((_, _, first)) = syms.iter().find(|(x, ..)| x == n) {
            return Err(format!("error: `--dims {d}`: `{n}` is already given (`{first}`)"));
        }
        let size: u64 = v.parse().map_err(|_| format!("error: `--dims {d}`: `{v}` is not a size"))?;
        if size > MAX_DIM {
            return Err(format!(
                "error: `--dims {d}`: {n} = {size} is larger than {MAX_DIM}, the largest size a kernel takes (sizes are i32)"
            ));
        }
        syms.push((n.to_string(), size as usize, format!("--dims {d}")));
    }
    let value = |name: &str| given.iter().find(|(n, ..)| *n == name).map(|(_, v, _)| *v);
    // First pass: tensors loaded from files bind dimension symbols too.
    let mut loaded: Vec<Option<HostTensor>> = vec![];
    for p in &meta.params {
        loaded.push(match (&p.kind, value(&p.name)) {
            (ParamKind::Tensor { dtype, dims, .. }, Some(path)) if path.ends_with(".npy") => {
                let t = npy::read_npy_as(path, *dtype).map_err(|e| format!("error: argument `{}`: {e}", p.name))?;
                if t.shape.len() != dims.len() {
                    return Err(format!(
                        "error: argument `{}`: expected a tensor of rank {} ({}), `{path}` has rank {} (shape {:?})",
                        p.name,
                        dims.len(),
                        describe(&p.kind),
                        t.shape.len(),
                        t.shape
                    ));
                }
                for (d, &n) in dims.iter().zip(&t.shape) {
                    if let Dim::Sym(s) = d {
                        match syms.iter().find(|(x, ..)| x == s) {
                            Some((_, v, from)) if *v != n && from.starts_with("--dims") => {
                                return Err(format!("error: argument `{}`: `{path}` has {s} = {n}, but `{from}` says {v}", p.name));
                            }
                            Some(_) => {} // Two files that disagree: the binder names both.
                            None => syms.push((s.clone(), n, path.to_string())),
                        }
                    }
                }
                Some(t)
            }
            _ => None,
        });
    }
    let mut rng = Rng::new(flags.seed);
    let (mut out, mut fresh) = (vec![], vec![]);
    for (p, l) in meta.params.iter().zip(loaded) {
        if let Some(t) = l {
            out.push(Arg::Tensor(t));
            fresh.push(false);
            continue;
        }
        let v = value(&p.name);
        match &p.kind {
            ParamKind::Tensor { dtype, dims, mutable } => {
                let mut shape = vec![];
                for d in dims {
                    shape.push(match d {
                        Dim::Const(c) => {
                            usize::try_from(*c).map_err(|_| format!("error: argument `{}`: dimension {c} is negative", p.name))?
                        }
                        Dim::Sym(s) => syms.iter().find(|(x, ..)| x == s).map(|(_, n, _)| *n).ok_or_else(|| {
                            format!("error: argument `{}`: the size of `{s}` is unknown; give `--dims {s}=…` or a .npy file", p.name)
                        })?,
                    });
                }
                let alloc = |e: AllocError| format!("error: argument `{}`: {e}", p.name);
                let (t, made) = match (v, inputs) {
                    (None, _) if *mutable => (HostTensor::try_zeros(*dtype, &shape).map_err(alloc)?, true),
                    (Some("random"), _) | (None, Inputs::Bench) => (try_random_tensor(*dtype, &shape, &mut rng).map_err(alloc)?, false),
                    (Some("zeros"), Inputs::Run) => (HostTensor::try_zeros(*dtype, &shape).map_err(alloc)?, false),
                    (None, Inputs::Run) => {
                        return Err(format!(
                            "error: missing argument `{}` ({}); give `--arg {}=FILE.npy|random|zeros`",
                            p.name,
                            describe(&p.kind),
                            p.name
                        ));
                    }
                    (Some("zeros"), Inputs::Bench) => {
                        return Err(format!(
                            "error: argument `{}`: `tessera bench` does not time on zeros (they hide unwritten outputs and can run \
                             faster than real data); use `random` or a .npy file",
                            p.name
                        ));
                    }
                    (Some(other), Inputs::Run) => {
                        return Err(format!("error: argument `{}`: `{other}` is not a .npy file, `random` or `zeros`", p.name));
                    }
                    (Some(other), Inputs::Bench) => {
                        return Err(format!("error: argument `{}`: `{other}` is not a .npy file or `random`", p.name));
                    }
                };
                out.push(Arg::Tensor(t));
                fresh.push(made);
            }
            ParamKind::Scalar { dtype } => {
                let Some(v) = v else {
                    return Err(format!("error: missing argument `{}` ({dtype}); give `--arg {}=VALUE`", p.name, p.name));
                };
                let s = parse_scalar(v, *dtype).ok_or_else(|| format!("error: argument `{}`: `{v}` is not a {dtype}", p.name))?;
                out.push(Arg::Scalar(s));
                fresh.push(false);
            }
        }
    }
    Ok((out, fresh))
}

/// The `--out NAME=FILE.npy` flags, checked before anything runs: each names a tensor parameter
/// of `meta`, once. Returns the parameter index and the file of each.
pub fn out_files<'a>(meta: &KernelMeta, outs: &'a [String]) -> Result<Vec<(usize, &'a str)>, String> {
    let mut v: Vec<(usize, &str)> = vec![];
    for o in outs {
        let (n, path) = split_kv(o, "--out")?;
        let i = meta.params.iter().position(|p| p.name == n).ok_or_else(|| {
            let names: Vec<&str> = meta.params.iter().map(|p| p.name.as_str()).collect();
            format!("error: `--out {o}`: kernel `{}` has no parameter `{n}` (parameters: {})", meta.name, names.join(", "))
        })?;
        if let ParamKind::Scalar { .. } = meta.params[i].kind {
            return Err(format!("error: `--out {o}`: `{n}` is a scalar"));
        }
        if let Some((_, first)) = v.iter().find(|(j, _)| *j == i) {
            return Err(format!("error: `--out {o}`: `{n}` is already written (`--out {n}={first}`)"));
        }
        v.push((i, path));
    }
    Ok(v)
}

/// Runs `k` on the interpreter with the default options (races checked, the default budget of
/// programs); tensors in `args` are updated in place.
pub fn run_interp(k: &CompiledKernel, args: &mut [Arg]) -> Result<(), ExecError> {
    run_interp_with(k, args, &RunOptions::default())
}

/// [`run_interp`] with options.
pub fn run_interp_with(k: &CompiledKernel, args: &mut [Arg], opts: &RunOptions) -> Result<(), ExecError> {
    interp::run_kernel_with(&k.tir, args, opts, &mut std::io::stdout().lock())?;
    Ok(())
}

/// Runs `k` on the GPU; writable tensors in `args` are replaced by their contents after the
/// launch. Where `poison[i]` is set, tensor `i` starts as all-ones bytes (NaN for floats, -1 for
/// integers) instead of its host contents, so elements the kernel fails to write show up.
/// Returns the driver's spill warning for the kernel, if it spilled registers.
pub fn run_gpu(rt: &Runtime, k: &CompiledKernel, args: &mut [Arg], poison: &[bool]) -> Result<Option<String>, ExecError> {
    let loaded = rt.load(&k.ptx, &k.meta)?;
    let warning = loaded.spill_warning();
    let mut dev = vec![];
    for (i, a) in args.iter().enumerate() {
        dev.push(match a {
            Arg::Tensor(t) if poison.get(i).copied().unwrap_or(false) => Some(rt.alloc_filled(t.dtype, &t.shape, 0xff)?),
            Arg::Tensor(t) => Some(rt.upload(t)?),
            Arg::Scalar(_) => None,
        });
    }
    let dargs: Vec<DeviceArg> = args
        .iter()
        .zip(&dev)
        .map(|(a, d)| match (a, d) {
            (_, Some(t)) => DeviceArg::Tensor(t),
            (Arg::Scalar(s), None) => DeviceArg::Scalar(*s),
            (Arg::Tensor(_), None) => DeviceArg::Scalar(tessera_compiler::Scalar::Int(0)),
        })
        .collect();
    rt.launch(&loaded, &dargs)?;
    for (i, p) in k.meta.params.iter().enumerate() {
        if let (ParamKind::Tensor { mutable: true, .. }, Some(d)) = (&p.kind, &dev[i]) {
            args[i] = Arg::Tensor(rt.download(d)?);
        }
    }
    Ok(warning)
}

/// How far two tensors are apart.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub n: usize,
    pub max_abs: f64,
    pub max_rel: f64,
    /// Elements outside the tolerance (NaN on either side always counts).
    pub bad: usize,
    pub first_bad: Option<(usize, f64, f64)>,
    pub rtol: f64,
    pub atol: f64,
}

impl Comparison {
    pub fn ok(&self) -> bool {
        self.bad == 0
    }
}

/// Relative and absolute tolerance for results of a dtype computed in different orders.
pub fn tolerance(d: DType) -> (f64, f64) {
    match d {
        DType::BF16 => (1.6e-2, 1e-2),
        DType::F16 => (2e-3, 1e-3),
        DType::F32 => (1e-4, 1e-5),
        DType::F64 => (1e-10, 1e-12),
        _ => (0.0, 0.0),
    }
}

/// Compares `got` against `want` element by element.
pub fn compare(got: &HostTensor, want: &HostTensor) -> Comparison {
    let (rtol, atol) = tolerance(want.dtype);
    let n = got.numel().min(want.numel());
    let mut c = Comparison { n, max_abs: 0.0, max_rel: 0.0, bad: 0, first_bad: None, rtol, atol };
    if got.shape != want.shape || got.dtype != want.dtype {
        c.bad = n.max(1);
        return c;
    }
    for i in 0..n {
        let (g, w) = (got.get_f64(i), want.get_f64(i));
        let diff = (g - w).abs();
        let fails = g.is_nan() || w.is_nan() || diff > atol + rtol * w.abs();
        if !g.is_nan() && !w.is_nan() {
            c.max_abs = c.max_abs.max(diff);
            if w != 0.0 {
                c.max_rel = c.max_rel.max(diff / w.abs());
            }
        }
        if fails {
            c.bad += 1;
            if c.first_bad.is_none() {
                c.first_bad = Some((i, g, w));
            }
        }
    }
    c
}

pub use tessera_compiler::host::unravel;
