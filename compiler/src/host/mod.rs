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
            DType::F16 => f16::from_bits(r as u16).to_f64(),
            DType::BF16 => bf16::from_bits(r as u16).to_f64(),
            DType::F32 => f32::from_bits(r as u32) as f64,
            DType::F64 => f64::from_bits(r),
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
            // Through f32: `half`'s f64 conversion drops low bits before rounding.
            DType::F16 => f16::from_f32(v as f32).to_bits() as u64,
            DType::BF16 => bf16::from_f32(v as f32).to_bits() as u64,
            DType::F32 => (v as f32).to_bits() as u64,
            DType::F64 => v.to_bits(),
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

/// What the binder needs to know of one argument.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgInfo {
    Tensor { dtype: DType, shape: Vec<usize> },
    Scalar(Scalar),
}

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
    TooLarge { sym: String, val: i64 },
    #[error("requirement `{text}` failed ({detail})")]
    Require { text: String, detail: String },
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

fn describe(p: &ParamKind) -> String {
    match p {
        ParamKind::Tensor { dtype, dims, mutable } => {
            let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
            format!("&{}{dtype}[{}]", if *mutable { "mut " } else { "" }, d.join(", "))
        }
        ParamKind::Scalar { dtype } => dtype.to_string(),
    }
}

/// Checks arguments against the signature, binds dimension symbols (the first parameter that
/// names a symbol binds it; every later one must agree), checks `#[require]`, evaluates the grid.
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
                        Dim::Const(c) if *c != n as i64 => {
                            return Err(BindError::ConstDim { param: p.name.clone(), axis, expected: *c, got: n });
                        }
                        Dim::Const(_) => {}
                        Dim::Sym(s) => {
                            if n > i32::MAX as usize {
                                return Err(BindError::TooLarge { sym: s.clone(), val: n as i64 });
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
                if dtype.is_int() || *dtype == DType::Bool {
                    syms.push((p.name.clone(), v.as_i64(), p.name.clone()));
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
    for r in requires {
        match r.cond.eval(&lookup) {
            Ok(0) => {
                let mut names = vec![];
                r.cond.symbols(&mut names);
                let vals: Vec<String> = names.iter().map(|n| format!("{n} = {}", bound.lookup(n).unwrap_or(0))).collect();
                return Err(BindError::Require { text: r.text.clone(), detail: vals.join(", ") });
            }
            Ok(_) => {}
            Err(e) => return Err(BindError::Require { text: r.text.clone(), detail: e }),
        }
    }
    let mut g = [1u32; 3];
    for (axis, e) in grid.iter().enumerate().take(3) {
        let v = e.eval(&lookup).map_err(|d| BindError::Grid { axis, expr: e.to_string(), detail: d })?;
        if !(0..=i32::MAX as i64).contains(&v) || (axis > 0 && v > 65535) {
            return Err(BindError::Grid { axis, expr: e.to_string(), detail: format!("{v} is out of range") });
        }
        g[axis] = v as u32;
    }
    Ok(Bound { grid: g, ..bound })
}

#[cfg(test)]
mod tests {
    use super::*;

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
