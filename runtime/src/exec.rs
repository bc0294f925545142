//! Running a compiled kernel on host tensors with either backend, and comparing results: what
//! the CLI's `run --check`, the self-test and the examples share.

use crate::device::{DeviceArg, Runtime, RuntimeError};
use tessera_compiler::interp::{self, Arg, InterpError, RunOptions};
use tessera_compiler::tir::ParamKind;
use tessera_compiler::{CompiledKernel, DType, HostTensor};

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
/// [0, 100)), bools half true. Never all zeros.
pub fn random_tensor(dtype: DType, shape: &[usize], rng: &mut Rng) -> HostTensor {
    let mut t = HostTensor::zeros(dtype, shape);
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
    t
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
pub fn run_gpu(rt: &Runtime, k: &CompiledKernel, args: &mut [Arg], poison: &[bool]) -> Result<(), ExecError> {
    let loaded = rt.load(&k.ptx, &k.meta)?;
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
    Ok(())
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

/// The index of element `i` of a row-major shape, for messages (`[3, 17]`).
pub fn unravel(shape: &[usize], mut i: usize) -> Vec<usize> {
    let mut out = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        if shape[d] > 0 {
            out[d] = i % shape[d];
            i /= shape[d];
        }
    }
    out
}
