//! Host-side pieces shared by the interpreter and the GPU runtime: host tensors, and binding a
//! launch's arguments to a kernel's signature (dimension symbols, grid, `#[require]`).

use crate::dtype::DType;
use crate::tir::{Dim, HostExpr, Param, ParamKind, Require};
use half::{bf16, f16};
use std::fmt;

/// A dense, row-major array in host memory, stored as little-endian bytes of its dtype.
#[derive(Clone, PartialEq)]
pub struct HostTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for HostTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostTensor({}{:?})", self.dtype, self.shape)
    }
}

/// The largest host tensor [`HostTensor::try_zeros`] makes: 16 GiB.
pub const MAX_HOST_TENSOR_BYTES: usize = 16 << 30;

/// Why a host tensor could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("a tensor {dtype}{shape:?} has more bytes than memory can address")]
    Overflow { dtype: DType, shape: Vec<usize> },
    #[error("a tensor {dtype}{shape:?} needs {bytes} bytes, more than the limit of {limit} bytes on one host tensor")]
    TooLarge { dtype: DType, shape: Vec<usize>, bytes: usize, limit: usize },
    #[error("a tensor {dtype}{shape:?} needs {bytes} bytes of host memory{available}")]
    OutOfMemory { dtype: DType, shape: Vec<usize>, bytes: usize, available: String },
}

/// Tensors above this size are checked against the memory the system has available.
const CHECK_AVAILABLE_ABOVE: usize = 64 << 20;

/// `MemAvailable` of `/proc/meminfo`, in bytes (Linux; `None` elsewhere or if unreadable).
fn available_memory() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: usize = info.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    kb.checked_mul(1024)
}

impl HostTensor {
    /// A tensor of zeros. For sizes a user chooses, use [`HostTensor::try_zeros`]: this one
    /// panics where that one returns an error.
    pub fn zeros(dtype: DType, shape: &[usize]) -> HostTensor {
        HostTensor::try_zeros(dtype, shape).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The number of bytes of a tensor of `dtype` and `shape`, if it fits in `usize`.
    pub fn byte_len(dtype: DType, shape: &[usize]) -> Option<usize> {
        shape.iter().try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
    }

    /// A tensor of zeros, or an error (never a panic or an abort) when its size overflows, is
    /// over [`MAX_HOST_TENSOR_BYTES`], is over the memory the system has available (Linux), or
    /// cannot be allocated.
    pub fn try_zeros(dtype: DType, shape: &[usize]) -> Result<HostTensor, AllocError> {
        let bytes = HostTensor::byte_len(dtype, shape).ok_or_else(|| AllocError::Overflow { dtype, shape: shape.to_vec() })?;
        if bytes > MAX_HOST_TENSOR_BYTES {
            return Err(AllocError::TooLarge { dtype, shape: shape.to_vec(), bytes, limit: MAX_HOST_TENSOR_BYTES });
        }
        let oom = |available: String| AllocError::OutOfMemory { dtype, shape: shape.to_vec(), bytes, available };
        if bytes > CHECK_AVAILABLE_ABOVE
            && let Some(avail) = available_memory()
            && bytes > avail
        {
            return Err(oom(format!(", more than the {avail} bytes available")));
        }
        let mut v = Vec::new();
        v.try_reserve_exact(bytes).map_err(|_| oom(": the allocation failed".into()))?;
        v.resize(bytes, 0);
        Ok(HostTensor { dtype, shape: shape.to_vec(), bytes: v })
    }

    /// A tensor of the given dtype whose elements are `values` rounded to the dtype.
    pub fn from_f64(dtype: DType, shape: &[usize], values: &[f64]) -> HostTensor {
        let mut t = HostTensor::zeros(dtype, shape);
        for (i, &v) in values.iter().enumerate().take(t.numel()) {
            t.set_f64(i, v);
        }
        t
    }

    pub fn from_i64(dtype: DType, shape: &[usize], values: &[i64]) -> HostTensor {
        let mut t = HostTensor::zeros(dtype, shape);
        for (i, &v) in values.iter().enumerate().take(t.numel()) {
            t.set_i64(i, v);
        }
        t
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Row-major strides in elements.
    pub fn strides(&self) -> Vec<i64> {
        let mut s = vec![1i64; self.shape.len()];
        for i in (0..self.shape.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * self.shape[i + 1] as i64;
        }
        s
    }

    fn raw(&self, i: usize) -> u64 {
        let n = self.dtype.size();
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.bytes[i * n..i * n + n]);
        u64::from_le_bytes(b)
    }

    fn set_raw(&mut self, i: usize, v: u64) {
        let n = self.dtype.size();
        self.bytes[i * n..i * n + n].copy_from_slice(&v.to_le_bytes()[..n]);
    }

    /// Element `i` (row-major) as f64; integers convert exactly up to 2^53.
    pub fn get_f64(&self, i: usize) -> f64 {
        let r = self.raw(i);
        match self.dtype {
            DType::F16 | DType::BF16 | DType::F32 | DType::F64 => crate::dtype::float_from_bits(self.dtype, r),
            DType::U64 => r as f64,
            _ => self.get_i64(i) as f64,
        }
    }

    /// Element `i` as i64 (floats truncate toward zero, saturating; NaN is 0).
    pub fn get_i64(&self, i: usize) -> i64 {
        let r = self.raw(i);
        match self.dtype {
            DType::Bool => (r & 1) as i64,
            DType::I8 => r as u8 as i8 as i64,
            DType::I16 => r as u16 as i16 as i64,
            DType::I32 => r as u32 as i32 as i64,
            DType::I64 => r as i64,
            DType::U8 => r as u8 as i64,
            DType::U32 => r as u32 as i64,
            DType::U64 => r as i64,
            _ => self.get_f64(i) as i64,
        }
    }

    /// Stores `v` rounded to the dtype (round to nearest even for floats; integers saturate).
    pub fn set_f64(&mut self, i: usize, v: f64) {
        let r = match self.dtype {
            // The one rounding rule, shared with the interpreter and constant folding.
            DType::F16 | DType::BF16 | DType::F32 | DType::F64 => crate::dtype::float_bits(self.dtype, v),
            DType::Bool => (v != 0.0) as u64,
            DType::I8 => v as i8 as u8 as u64,
            DType::I16 => v as i16 as u16 as u64,
            DType::I32 => v as i32 as u32 as u64,
            DType::I64 => v as i64 as u64,
            DType::U8 => v as u8 as u64,
            DType::U32 => v as u32 as u64,
            DType::U64 => v as u64,
        };
        self.set_raw(i, r);
    }

    /// Stores `v` wrapped to the integer dtype (bool: nonzero is true).
    pub fn set_i64(&mut self, i: usize, v: i64) {
        if self.dtype.is_float() {
            return self.set_f64(i, v as f64);
        }
        let r = if self.dtype == DType::Bool { (v != 0) as u64 } else { v as u64 };
        self.set_raw(i, r);
    }

    pub fn to_f64_vec(&self) -> Vec<f64> {
        (0..self.numel()).map(|i| self.get_f64(i)).collect()
    }
}

/// A scalar argument value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    pub fn as_i64(self) -> i64 {
        match self {
            Scalar::Int(v) => v,
            Scalar::Float(f) => f as i64,
            Scalar::Bool(b) => b as i64,
        }
    }

    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::Int(v) => v as f64,
            Scalar::Float(f) => f,
            Scalar::Bool(b) => b as i64 as f64,
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(v) => write!(f, "{v}"),
            Scalar::Float(v) => write!(f, "{v}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A scalar argument converted to its parameter's dtype: exactly the value the kernel sees, on
/// the interpreter and on the GPU alike (the GPU packer writes `bits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScalarValue {
    pub dtype: DType,
    /// The value's little-endian bits in `dtype`, zero-extended to 64 bits: bool 0 or 1, f16 and
    /// bf16 their 16-bit patterns, signed integers two's complement.
    pub bits: u64,
}

impl ScalarValue {
    /// The value of a float dtype (exact); integers convert to the nearest f64.
    pub fn to_f64(self) -> f64 {
        match self.dtype {
            DType::F16 | DType::BF16 | DType::F32 | DType::F64 => crate::dtype::float_from_bits(self.dtype, self.bits),
            _ => self.to_i128() as f64,
        }
    }

    /// The value of an integer or bool dtype (exact; unsigned types zero-extended). Floats
    /// truncate toward zero.
    pub fn to_i128(self) -> i128 {
        let b = self.bits;
        match self.dtype {
            DType::I8 => b as u8 as i8 as i128,
            DType::I16 => b as u16 as i16 as i128,
            DType::I32 => b as u32 as i32 as i128,
            DType::I64 => b as i64 as i128,
            DType::Bool | DType::U8 | DType::U32 | DType::U64 => b as i128,
            _ => self.to_f64() as i128,
        }
    }
}

/// The range of an integer (or bool) dtype.
fn int_range(dtype: DType) -> (i128, i128) {
    match dtype {
        DType::Bool => (0, 1),
        DType::I8 => (i8::MIN as i128, i8::MAX as i128),
        DType::I16 => (i16::MIN as i128, i16::MAX as i128),
        DType::I32 => (i32::MIN as i128, i32::MAX as i128),
        DType::U8 => (0, u8::MAX as i128),
        DType::U32 => (0, u32::MAX as i128),
        DType::U64 => (0, u64::MAX as i128),
        _ => (i64::MIN as i128, i64::MAX as i128),
    }
}

/// Converts a scalar argument to its parameter's dtype, or says why it does not fit. The one
/// rule both backends apply (the interpreter through [`bind`], the GPU packer directly):
///
/// - an integer parameter takes an integer in its range, a bool (0 or 1), or a float that is a
///   whole number in its range; nothing is wrapped or truncated;
/// - a bool parameter takes a bool or the integers 0 and 1;
/// - a float parameter takes a float or an integer, rounded to nearest even once (integers
///   exactly, without a double rounding through f64). A finite value whose rounding overflows to
///   infinity is refused (`1e6` for an f16); infinities and NaN given as such pass. A bool is
///   refused.
pub fn fit_scalar(dtype: DType, v: Scalar) -> Result<ScalarValue, String> {
    use crate::interp::value::{int_to_float, round_to};
    if dtype.is_float() {
        let (x, given) = match v {
            Scalar::Float(f) => (if dtype == DType::F64 { f } else { round_to(dtype, f) }, f),
            Scalar::Int(i) => (int_to_float(DType::I64, dtype, i), i as f64),
            Scalar::Bool(_) => return Err(format!("expected {dtype}, got a bool")),
        };
        if x.is_infinite() && given.is_finite() {
            let max = match dtype {
                DType::F16 => f16::MAX.to_string(),
                DType::BF16 => format!("{:e}", bf16::MAX.to_f32()),
                _ => format!("{:e}", f32::MAX),
            };
            return Err(format!("{v} does not fit in {dtype} (it rounds to infinity; the largest finite {dtype} is {max})"));
        }
        // `x` is exactly representable, so this encoding is exact.
        let bits = crate::dtype::float_bits(dtype, x);
        return Ok(ScalarValue { dtype, bits });
    }
    if dtype == DType::Bool {
        return match v {
            Scalar::Bool(b) => Ok(ScalarValue { dtype, bits: b as u64 }),
            Scalar::Int(i @ (0 | 1)) => Ok(ScalarValue { dtype, bits: i as u64 }),
            other => Err(format!("expected a bool (true, false, 0 or 1), got {other}")),
        };
    }
    let i: i128 = match v {
        Scalar::Int(i) => i as i128,
        Scalar::Bool(b) => b as i128,
        // Whole floats beyond ±2^127 saturate, and are then out of every range.
        Scalar::Float(f) if f.is_finite() && f.fract() == 0.0 => f as i128,
        Scalar::Float(f) => return Err(format!("expected an integer ({dtype}), got {f}")),
    };
    let (lo, hi) = int_range(dtype);
    if !(lo..=hi).contains(&i) {
        return Err(format!("{v} does not fit in {dtype} (its range is {lo}..={hi})"));
    }
    let mask = if dtype.bits() >= 64 { u64::MAX } else { (1u64 << dtype.bits().max(8)) - 1 };
    Ok(ScalarValue { dtype, bits: (i as i64 as u64) & mask })
}

/// What the binder needs to know of one argument.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgInfo {
    Tensor { dtype: DType, shape: Vec<usize> },
    Scalar(Scalar),
}

/// The most programs CUDA launches along each grid axis (x, y, z).
pub const GRID_LIMITS: [i64; 3] = [i32::MAX as i64, 65535, 65535];

/// Why a launch's arguments do not fit the kernel.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("kernel `{kernel}` takes {expected} arguments, got {got}")]
    ArgCount { kernel: String, expected: usize, got: usize },
    #[error("argument `{param}`: expected a tensor {expected}, got a scalar")]
    NotTensor { param: String, expected: String },
    #[error("argument `{param}`: expected a scalar {expected}, got a tensor")]
    NotScalar { param: String, expected: String },
    #[error("argument `{param}`: expected dtype {expected}, got {got}")]
    DType { param: String, expected: DType, got: DType },
    #[error("argument `{param}`: expected a tensor of rank {expected} ({decl}), got shape {got:?}")]
    Rank { param: String, expected: usize, decl: String, got: Vec<usize> },
    #[error("argument `{param}`: dimension {axis} must be {expected}, got {got}")]
    ConstDim { param: String, axis: usize, expected: i64, got: usize },
    #[error("dimension `{sym}` disagrees: `{first}` has {sym} = {first_val}, but `{param}` has {sym} = {val}")]
    SymMismatch { sym: String, first: String, first_val: i64, param: String, val: i64 },
    #[error("dimension `{sym}` = {val} does not fit in i32")]
    TooLarge { sym: String, val: u64 },
    #[error("argument `{param}`: dimension {axis} = {val} does not fit in i32")]
    DimTooLarge { param: String, axis: usize, val: u64 },
    /// A scalar argument that does not fit its parameter's dtype (see [`fit_scalar`]).
    #[error("argument `{param}`: {detail}")]
    Scalar { param: String, detail: String },
    #[error("requirement `{text}` failed ({detail})")]
    Require { text: String, detail: String },
    /// A `#[require]` condition whose evaluation overflowed or divided by zero.
    #[error("requirement `{text}` cannot be evaluated: {detail}")]
    RequireEval { text: String, detail: String },
    #[error("grid axis {axis} = {expr}: {detail}")]
    Grid { axis: usize, expr: String, detail: String },
}

/// A launch's arguments bound to a kernel signature.
#[derive(Clone, Debug, PartialEq)]
pub struct Bound {
    /// Dimension symbols and integer scalar parameters, by name.
    pub syms: Vec<(String, i64)>,
    /// Grid size in programs, three axes (unused axes are 1).
    pub grid: [u32; 3],
}

impl Bound {
    pub fn lookup(&self, s: &str) -> Option<i64> {
        self.syms.iter().find(|(n, _)| n == s).map(|(_, v)| *v)
    }
}

/// The multi-index of row-major element `i` of `shape` (for messages: `[3, 17]`).
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

/// A parameter's declared type as a message shows it (`&mut f32[M, 4]`).
pub fn describe(p: &ParamKind) -> String {
    match p {
        ParamKind::Tensor { dtype, dims, mutable } => {
            let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
            format!("&{}{dtype}[{}]", if *mutable { "mut " } else { "" }, d.join(", "))
        }
        ParamKind::Scalar { dtype } => dtype.to_string(),
    }
}

/// The value launch-time expressions see for the integer or bool scalar parameter `param`
/// (`None` for a float parameter). They compute in i64: a u64 value above `i64::MAX` is refused
/// if a `#[grid]` or `#[require]` expression reads it, and otherwise stays unbound.
pub fn scalar_sym(param: &str, v: ScalarValue, grid: &[HostExpr], requires: &[Require]) -> Result<Option<i64>, BindError> {
    if v.dtype.is_float() {
        return Ok(None);
    }
    match i64::try_from(v.to_i128()) {
        Ok(x) => Ok(Some(x)),
        Err(_) if grid.iter().chain(requires.iter().map(|r| &r.cond)).any(|e| e.reads(param)) => Err(BindError::Scalar {
            param: param.into(),
            detail: format!("{} is above i64::MAX, the largest value `#[grid]` and `#[require]` compute with", v.to_i128()),
        }),
        Err(_) => Ok(None),
    }
}

/// Checks the `#[require]` conditions over the bound symbols.
pub fn check_requires(requires: &[Require], lookup: &dyn Fn(&str) -> Option<i64>) -> Result<(), BindError> {
    for r in requires {
        match r.cond.eval(lookup) {
            Ok(0) => {
                let mut names = vec![];
                r.cond.symbols(&mut names);
                let vals: Vec<String> = names.iter().map(|n| format!("{n} = {}", lookup(n).unwrap_or(0))).collect();
                return Err(BindError::Require { text: r.text.clone(), detail: vals.join(", ") });
            }
            Ok(_) => {}
            Err(e) => return Err(BindError::RequireEval { text: r.text.clone(), detail: e }),
        }
    }
    Ok(())
}

/// Evaluates the grid over the bound symbols (checked arithmetic). Each axis must be in
/// `0..=GRID_LIMITS[axis]`, what CUDA launches; an axis of 0 is a launch of no programs.
pub fn eval_grid(grid: &[HostExpr], lookup: &dyn Fn(&str) -> Option<i64>) -> Result<[u32; 3], BindError> {
    let mut g = [1u32; 3];
    for (axis, e) in grid.iter().enumerate().take(3) {
        let err = |detail: String| BindError::Grid { axis, expr: e.to_string(), detail };
        let v = e.eval(lookup).map_err(err)?;
        let max = GRID_LIMITS[axis];
        if v < 0 {
            return Err(err(format!("{v} programs is negative")));
        }
        if v > max {
            let name = ["x", "y", "z"][axis];
            return Err(err(format!("{v} programs is more than CUDA launches along {name} ({max})")));
        }
        g[axis] = v as u32;
    }
    Ok(g)
}

/// Checks arguments against the signature, binds dimension symbols (the first parameter that
/// names a symbol binds it; every later one must agree) and integer scalar parameters, checks
/// that every scalar fits its dtype ([`fit_scalar`]) and every dimension fits in i32, checks
/// `#[require]`, evaluates the grid ([`eval_grid`]).
pub fn bind(kernel: &str, params: &[Param], grid: &[HostExpr], requires: &[Require], args: &[ArgInfo]) -> Result<Bound, BindError> {
    if params.len() != args.len() {
        return Err(BindError::ArgCount { kernel: kernel.into(), expected: params.len(), got: args.len() });
    }
    let mut syms: Vec<(String, i64, String)> = vec![];
    for (p, a) in params.iter().zip(args) {
        match (&p.kind, a) {
            (ParamKind::Tensor { dtype, dims, .. }, ArgInfo::Tensor { dtype: got, shape }) => {
                if dtype != got {
                    return Err(BindError::DType { param: p.name.clone(), expected: *dtype, got: *got });
                }
                if dims.len() != shape.len() {
                    return Err(BindError::Rank {
                        param: p.name.clone(),
                        expected: dims.len(),
                        decl: describe(&p.kind),
                        got: shape.clone(),
                    });
                }
                for (axis, (d, &n)) in dims.iter().zip(shape).enumerate() {
                    match d {
                        // Sizes are passed as i32 (a constant dimension may be declared larger).
                        Dim::Const(_) if n > i32::MAX as usize => {
                            return Err(BindError::DimTooLarge { param: p.name.clone(), axis, val: n as u64 });
                        }
                        Dim::Const(c) if i64::try_from(n) != Ok(*c) => {
                            return Err(BindError::ConstDim { param: p.name.clone(), axis, expected: *c, got: n });
                        }
                        Dim::Const(_) => {}
                        Dim::Sym(s) => {
                            if n > i32::MAX as usize {
                                return Err(BindError::TooLarge { sym: s.clone(), val: n as u64 });
                            }
                            match syms.iter().find(|(name, _, _)| name == s) {
                                Some((_, v, first)) if *v != n as i64 => {
                                    return Err(BindError::SymMismatch {
                                        sym: s.clone(),
                                        first: first.clone(),
                                        first_val: *v,
                                        param: p.name.clone(),
                                        val: n as i64,
                                    });
                                }
                                Some(_) => {}
                                None => syms.push((s.clone(), n as i64, p.name.clone())),
                            }
                        }
                    }
                }
            }
            (ParamKind::Scalar { dtype }, ArgInfo::Scalar(v)) => {
                let fitted = fit_scalar(*dtype, *v).map_err(|detail| BindError::Scalar { param: p.name.clone(), detail })?;
                if let Some(x) = scalar_sym(&p.name, fitted, grid, requires)?
                    && !syms.iter().any(|(name, _, _)| name == &p.name)
                {
                    syms.push((p.name.clone(), x, p.name.clone()));
                }
            }
            (ParamKind::Tensor { .. }, ArgInfo::Scalar(_)) => {
                return Err(BindError::NotTensor { param: p.name.clone(), expected: describe(&p.kind) });
            }
            (ParamKind::Scalar { .. }, ArgInfo::Tensor { .. }) => {
                return Err(BindError::NotScalar { param: p.name.clone(), expected: describe(&p.kind) });
            }
        }
    }
    let bound = Bound { syms: syms.into_iter().map(|(n, v, _)| (n, v)).collect(), grid: [1; 3] };
    let lookup = |s: &str| bound.lookup(s);
    check_requires(requires, &lookup)?;
    let grid = eval_grid(grid, &lookup)?;
    Ok(Bound { grid, ..bound })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tir::HostOp;

    fn scalar(name: &str, dtype: DType) -> Param {
        Param { name: name.into(), kind: ParamKind::Scalar { dtype } }
    }

    #[test]
    fn scalars_fit_exactly_or_are_refused() {
        let fits = |d, v| fit_scalar(d, v).map(|x| x.to_i128());
        assert_eq!(fits(DType::I8, Scalar::Int(-128)), Ok(-128));
        assert_eq!(fits(DType::I8, Scalar::Int(-129)), Err("-129 does not fit in i8 (its range is -128..=127)".into()));
        assert_eq!(fits(DType::U32, Scalar::Int(u32::MAX as i64)), Ok(u32::MAX as i128));
        assert_eq!(fits(DType::U64, Scalar::Float(2f64.powi(63))), Ok(1i128 << 63));
        assert_eq!(fits(DType::I32, Scalar::Bool(true)), Ok(1));
        assert_eq!(fits(DType::Bool, Scalar::Int(1)), Ok(1));
        assert!(fits(DType::Bool, Scalar::Float(0.0)).is_err());
        assert!(fits(DType::I64, Scalar::Float(f64::INFINITY)).is_err());
        let f = |d, v| fit_scalar(d, v).map(|x| x.to_f64());
        assert_eq!(f(DType::F32, Scalar::Int(16777217)), Ok(16777216.0));
        assert_eq!(f(DType::BF16, Scalar::Float(3.0e38)), Ok(226.0 * 2f64.powi(120)));
        assert!(f(DType::BF16, Scalar::Float(3.4e38)).unwrap_err().contains("rounds to infinity"));
        assert_eq!(f(DType::F64, Scalar::Float(f64::MAX)), Ok(f64::MAX));
        assert!(f(DType::F16, Scalar::Bool(false)).is_err());
    }

    /// A u64 scalar above `i64::MAX` is a fine argument, but launch-time expressions compute in
    /// i64: refused only if one of them reads it.
    #[test]
    fn huge_u64_scalars_bind_unless_an_expression_reads_them() {
        let params = [scalar("n", DType::U64)];
        let big = [ArgInfo::Scalar(Scalar::Float(2f64.powi(63)))];
        let b = bind("k", &params, &[HostExpr::Int(2)], &[], &big).expect("binds");
        assert_eq!((b.grid, b.lookup("n")), ([2, 1, 1], None));
        let grid = [HostExpr::Bin(HostOp::Div, Box::new(HostExpr::Sym("n".into())), Box::new(HostExpr::Int(1 << 40)))];
        assert_eq!(
            bind("k", &params, &grid, &[], &big).unwrap_err().to_string(),
            "argument `n`: 9223372036854775808 is above i64::MAX, the largest value `#[grid]` and `#[require]` compute with"
        );
        let small = [ArgInfo::Scalar(Scalar::Int(1 << 50))];
        assert_eq!(bind("k", &params, &grid, &[], &small).expect("binds").grid, [1024, 1, 1]);
    }

    #[test]
    fn dimensions_past_i32_are_refused_even_when_declared() {
        let params =
            [Param { name: "x".into(), kind: ParamKind::Tensor { dtype: DType::F32, dims: vec![Dim::Const(1 << 31)], mutable: false } }];
        let args = [ArgInfo::Tensor { dtype: DType::F32, shape: vec![1 << 31] }];
        assert_eq!(
            bind("k", &params, &[], &[], &args).unwrap_err().to_string(),
            "argument `x`: dimension 0 = 2147483648 does not fit in i32"
        );
    }

    #[test]
    fn and_or_short_circuit() {
        let sym = |s: &str| Box::new(HostExpr::Sym(s.into()));
        let div = HostExpr::Bin(HostOp::Gt, Box::new(HostExpr::Bin(HostOp::Div, sym("k"), sym("n"))), Box::new(HostExpr::Int(2)));
        let cond = HostExpr::Bin(HostOp::Or, Box::new(HostExpr::Bin(HostOp::Eq, sym("n"), Box::new(HostExpr::Int(0)))), Box::new(div));
        let lookup = |s: &str| Some(if s == "n" { 0 } else { 7 });
        assert_eq!(cond.eval(&lookup), Ok(1));
        assert_eq!(HostExpr::Bin(HostOp::Rem, Box::new(HostExpr::Int(i64::MIN)), Box::new(HostExpr::Int(-1))).eval(&lookup), Ok(0));
        assert_eq!(
            HostExpr::Bin(HostOp::Div, Box::new(HostExpr::Int(i64::MIN)), Box::new(HostExpr::Int(-1))).eval(&lookup),
            Err("`(-9223372036854775808 / -1)` overflows i64".into())
        );
        assert_eq!(HostExpr::Neg(Box::new(HostExpr::Int(i64::MIN))).eval(&lookup), Err("`(--9223372036854775808)` overflows i64".into()));
    }

    #[test]
    fn sizes_a_user_chooses_are_errors_not_aborts() {
        let t = HostTensor::try_zeros(DType::F32, &[3, 5]).expect("small");
        assert_eq!((t.bytes.len(), t.numel()), (60, 15));
        assert!(matches!(HostTensor::try_zeros(DType::F32, &[usize::MAX]), Err(AllocError::Overflow { .. })));
        assert!(matches!(HostTensor::try_zeros(DType::U8, &[1 << 40, 1 << 40]), Err(AllocError::Overflow { .. })));
        // 4 TiB: refused before any allocation.
        let e = HostTensor::try_zeros(DType::F32, &[1 << 40]).unwrap_err();
        assert!(matches!(e, AllocError::TooLarge { bytes, .. } if bytes == 4 << 40), "{e}");
        assert!(e.to_string().contains("more than the limit of 17179869184 bytes on one host tensor"), "{e}");
        assert_eq!(HostTensor::byte_len(DType::F64, &[2, 3]), Some(48));
        assert_eq!(HostTensor::byte_len(DType::F64, &[]), Some(8));
    }
}
