//! Kernel parameter packing: launch arguments to the typed values of the PTX parameter list,
//! as a pure function that needs no GPU.
//!
//! The ABI is `tessera_compiler::abi`: for each tensor parameter, its device pointer (u64), then
//! one i32 per dimension (the size), then one i64 per dimension (the stride in elements,
//! row-major); for each scalar parameter, its value in the parameter's dtype (bool as a u8 of 0
//! or 1, f16 and bf16 as their u16 bits). Packing fills its slots in order.

use tessera_compiler::abi;
use tessera_compiler::host::{ScalarValue, fit_scalar};
use tessera_compiler::tir::{Param, ParamKind};
use tessera_compiler::{DType, Scalar};

/// One PTX kernel parameter, typed as the kernel declares it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelParam {
    /// `.u8`/`.b8` (bool, u8).
    U8(u8),
    /// `.s8`.
    I8(i8),
    /// `.b16`: i16.
    I16(i16),
    /// `.b16`: the bits of an f16 or bf16.
    U16(u16),
    /// `.s32`: a dimension size or an i32 scalar.
    I32(i32),
    /// `.u32`.
    U32(u32),
    /// `.s64`: a stride or an i64 scalar.
    I64(i64),
    /// `.u64`: a device pointer or a u64 scalar.
    U64(u64),
    /// `.f32`.
    F32(f32),
    /// `.f64`.
    F64(f64),
}

impl KernelParam {
    /// Size (and alignment) in bytes.
    pub fn size(self) -> usize {
        match self {
            KernelParam::U8(_) | KernelParam::I8(_) => 1,
            KernelParam::I16(_) | KernelParam::U16(_) => 2,
            KernelParam::I32(_) | KernelParam::U32(_) | KernelParam::F32(_) => 4,
            KernelParam::I64(_) | KernelParam::U64(_) | KernelParam::F64(_) => 8,
        }
    }

    /// The little-endian bytes of the value.
    pub fn to_le_bytes(self) -> Vec<u8> {
        match self {
            KernelParam::U8(v) => vec![v],
            KernelParam::I8(v) => v.to_le_bytes().to_vec(),
            KernelParam::I16(v) => v.to_le_bytes().to_vec(),
            KernelParam::U16(v) => v.to_le_bytes().to_vec(),
            KernelParam::I32(v) => v.to_le_bytes().to_vec(),
            KernelParam::U32(v) => v.to_le_bytes().to_vec(),
            KernelParam::I64(v) => v.to_le_bytes().to_vec(),
            KernelParam::U64(v) => v.to_le_bytes().to_vec(),
            KernelParam::F32(v) => v.to_le_bytes().to_vec(),
            KernelParam::F64(v) => v.to_le_bytes().to_vec(),
        }
    }
}

/// The byte image of a parameter list as the CUDA driver lays it out in the kernel's
/// parameter space: each value at the next multiple of its own size.
pub fn param_buffer(params: &[KernelParam]) -> Vec<u8> {
    let mut out = vec![];
    for p in params {
        let align = p.size();
        out.resize(out.len().div_ceil(align) * align, 0);
        out.extend_from_slice(&p.to_le_bytes());
    }
    out
}

/// One launch argument as packing sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PackArg<'a> {
    /// A dense row-major tensor at device address `ptr`.
    Tensor {
        /// Device address of element 0.
        ptr: u64,
        /// Shape (the strides follow from it).
        shape: &'a [usize],
    },
    /// A scalar value.
    Scalar(Scalar),
}

/// Row-major strides in elements (saturating: only empty tensors can overflow).
pub fn row_major_strides(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1].saturating_mul(i64::try_from(shape[i + 1]).unwrap_or(i64::MAX));
    }
    s
}

/// Packs launch arguments for `params` per the ABI above. Errors (a message naming the
/// parameter) for a tensor/scalar mismatch, a rank mismatch, a dimension over `i32::MAX`, or a
/// scalar that does not fit the parameter's dtype.
pub fn pack_params(params: &[Param], args: &[PackArg<'_>]) -> Result<Vec<KernelParam>, String> {
    if params.len() != args.len() {
        return Err(format!("the kernel takes {} arguments, got {}", params.len(), args.len()));
    }
    // Check each argument against its parameter, then fill the ABI's slots in order.
    let mut scalars = vec![None; params.len()];
    let mut strides = vec![vec![]; params.len()];
    for (i, (p, a)) in params.iter().zip(args).enumerate() {
        match (&p.kind, a) {
            (ParamKind::Tensor { dims, .. }, PackArg::Tensor { shape, .. }) => {
                if dims.len() != shape.len() {
                    return Err(format!("argument `{}`: expected a tensor of rank {}, got shape {shape:?}", p.name, dims.len()));
                }
                if let Some((axis, d)) = shape.iter().enumerate().find(|(_, d)| i32::try_from(**d).is_err()) {
                    return Err(format!("argument `{}`: dimension {axis} = {d} does not fit in i32", p.name));
                }
                strides[i] = row_major_strides(shape);
            }
            (ParamKind::Scalar { dtype }, PackArg::Scalar(v)) => {
                scalars[i] = Some(scalar_param(*dtype, *v).map_err(|e| format!("argument `{}`: {e}", p.name))?);
            }
            (ParamKind::Tensor { .. }, PackArg::Scalar(_)) => {
                return Err(format!("argument `{}`: expected a tensor, got a scalar", p.name));
            }
            (ParamKind::Scalar { dtype }, PackArg::Tensor { .. }) => {
                return Err(format!("argument `{}`: expected a scalar {dtype}, got a tensor", p.name));
            }
        }
    }
    // The reference packer never passes tensor maps (a kernel with some gets `maps_ready` 0
    // from it: the copies without the copy engine).
    abi::slots(params, &[])
        .into_iter()
        .map(|slot| {
            let Some(param) = slot.param() else { return Ok(KernelParam::U32(0)) };
            let tensor = match args[param] {
                PackArg::Tensor { ptr, shape } => Some((ptr, shape)),
                PackArg::Scalar(_) => None,
            };
            match slot {
                abi::Slot::Ptr { .. } => tensor.map(|(ptr, _)| KernelParam::U64(ptr)),
                abi::Slot::Size { axis, .. } => {
                    tensor.and_then(|(_, shape)| shape.get(axis)).and_then(|&d| i32::try_from(d).ok()).map(KernelParam::I32)
                }
                abi::Slot::Stride { param, axis } => strides[param].get(axis).copied().map(KernelParam::I64),
                abi::Slot::Scalar { param, .. } => scalars[param],
                abi::Slot::MapsReady | abi::Slot::TensorMap { .. } => None,
            }
            .ok_or_else(|| format!("argument `{}`: internal error packing {}", params[param].name, slot.name(params)))
        })
        .collect()
}

/// Converts a scalar argument to a parameter of type `dtype`, by the binder's one rule
/// ([`tessera_compiler::host::fit_scalar`]): integers must fit exactly, floats are rounded once
/// to nearest even and must not overflow to infinity, a bool parameter takes a bool, 0 or 1.
pub fn scalar_param(dtype: DType, v: Scalar) -> Result<KernelParam, String> {
    Ok(param_of(fit_scalar(dtype, v)?))
}

/// The PTX parameter holding a converted scalar.
pub fn param_of(v: ScalarValue) -> KernelParam {
    let b = v.bits;
    match v.dtype {
        DType::Bool | DType::U8 => KernelParam::U8(b as u8),
        DType::I8 => KernelParam::I8(b as u8 as i8),
        DType::I16 => KernelParam::I16(b as u16 as i16),
        DType::F16 | DType::BF16 => KernelParam::U16(b as u16),
        DType::I32 => KernelParam::I32(b as u32 as i32),
        DType::U32 => KernelParam::U32(b as u32),
        DType::I64 => KernelParam::I64(b as i64),
        DType::U64 => KernelParam::U64(b),
        DType::F32 => KernelParam::F32(f32::from_bits(b as u32)),
        DType::F64 => KernelParam::F64(f64::from_bits(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KernelParam as K;
    use tessera_compiler::tir::Dim;

    fn tensor(name: &str, dtype: DType, dims: Vec<Dim>) -> Param {
        Param { name: name.into(), kind: ParamKind::Tensor { dtype, dims, mutable: false } }
    }

    fn scalar(name: &str, dtype: DType) -> Param {
        Param { name: name.into(), kind: ParamKind::Scalar { dtype } }
    }

    #[test]
    fn tensors_then_scalars() {
        let params = vec![
            tensor("a", DType::F32, vec![Dim::Sym("M".into()), Dim::Sym("K".into())]),
            tensor("b", DType::F16, vec![Dim::Const(4), Dim::Sym("K".into()), Dim::Sym("N".into())]),
            scalar("scale", DType::F32),
            scalar("n", DType::I32),
            scalar("big", DType::I64),
            scalar("flag", DType::Bool),
            scalar("x", DType::F64),
            scalar("h", DType::F16),
            scalar("bh", DType::BF16),
            tensor("s", DType::I8, vec![]),
        ];
        let args = [
            PackArg::Tensor { ptr: 0x7f00_0000_1000, shape: &[3, 5] },
            PackArg::Tensor { ptr: 0x7f00_0000_2000, shape: &[4, 5, 6] },
            PackArg::Scalar(Scalar::Float(0.125)),
            PackArg::Scalar(Scalar::Int(-7)),
            PackArg::Scalar(Scalar::Int(1 << 40)),
            PackArg::Scalar(Scalar::Bool(true)),
            PackArg::Scalar(Scalar::Float(0.1)),
            PackArg::Scalar(Scalar::Float(1.5)),
            PackArg::Scalar(Scalar::Int(3)),
            PackArg::Tensor { ptr: 0x10, shape: &[] },
        ];
        let packed = pack_params(&params, &args).unwrap();
        assert_eq!(
            packed,
            vec![
                K::U64(0x7f00_0000_1000),
                K::I32(3),
                K::I32(5),
                K::I64(5),
                K::I64(1),
                K::U64(0x7f00_0000_2000),
                K::I32(4),
                K::I32(5),
                K::I32(6),
                K::I64(30),
                K::I64(6),
                K::I64(1),
                K::F32(0.125),
                K::I32(-7),
                K::I64(1 << 40),
                K::U8(1),
                K::F64(0.1),
                K::U16(0x3e00),
                K::U16(0x4040),
                K::U64(0x10),
            ]
        );
    }

    #[test]
    fn byte_layout_is_naturally_aligned() {
        let buf = param_buffer(&[K::U64(0x0102030405060708), K::I32(3), K::U8(1), K::I64(-1), K::U16(0x3c00), K::F32(1.0)]);
        let mut want = vec![8, 7, 6, 5, 4, 3, 2, 1, 3, 0, 0, 0, 1, 0, 0, 0];
        want.extend_from_slice(&[0xff; 8]);
        want.extend_from_slice(&[0x00, 0x3c, 0, 0]);
        want.extend_from_slice(&1.0f32.to_le_bytes());
        assert_eq!(buf, want);
    }

    #[test]
    fn scalar_conversions() {
        assert_eq!(scalar_param(DType::I8, Scalar::Int(-128)), Ok(K::I8(-128)));
        assert!(scalar_param(DType::I8, Scalar::Int(128)).is_err());
        assert!(scalar_param(DType::U32, Scalar::Int(-1)).unwrap_err().contains("does not fit in u32"));
        assert_eq!(scalar_param(DType::U64, Scalar::Int(i64::MAX)), Ok(K::U64(i64::MAX as u64)));
        assert_eq!(scalar_param(DType::I32, Scalar::Float(4096.0)), Ok(K::I32(4096)));
        assert!(scalar_param(DType::I32, Scalar::Float(0.5)).is_err());
        assert!(scalar_param(DType::I32, Scalar::Float(f64::NAN)).is_err());
        assert!(scalar_param(DType::I32, Scalar::Int(1 << 31)).is_err());
        assert_eq!(scalar_param(DType::I16, Scalar::Bool(true)), Ok(K::I16(1)));
        assert_eq!(scalar_param(DType::U8, Scalar::Int(255)), Ok(K::U8(255)));
        assert_eq!(scalar_param(DType::Bool, Scalar::Int(0)), Ok(K::U8(0)));
        assert!(scalar_param(DType::Bool, Scalar::Int(2)).is_err());
        assert!(scalar_param(DType::Bool, Scalar::Float(1.0)).is_err());
        assert!(scalar_param(DType::F32, Scalar::Bool(true)).is_err());
        // i64 → f32 rounds once, to nearest even.
        assert_eq!(scalar_param(DType::F32, Scalar::Int((1 << 24) + 1)), Ok(K::F32(16777216.0)));
        assert_eq!(scalar_param(DType::F64, Scalar::Int(3)), Ok(K::F64(3.0)));
        assert_eq!(scalar_param(DType::BF16, Scalar::Float(1.0 + 1.0 / 256.0)), Ok(K::U16(0x3f80)));
        // The binder's rule (`host::fit_scalar`): a finite value that rounds to infinity does not
        // fit; infinity itself does; the largest value below the rounding boundary is the max.
        assert_eq!(
            scalar_param(DType::F16, Scalar::Float(65520.0)),
            Err("65520 does not fit in f16 (it rounds to infinity; the largest finite f16 is 65504)".into())
        );
        assert!(scalar_param(DType::F16, Scalar::Int(70000)).unwrap_err().contains("does not fit in f16"));
        assert!(scalar_param(DType::F32, Scalar::Float(1e39)).unwrap_err().contains("the largest finite f32 is 3.4028235e38"));
        assert!(scalar_param(DType::BF16, Scalar::Float(-1e300)).unwrap_err().contains("does not fit in bf16"));
        assert_eq!(scalar_param(DType::F16, Scalar::Float(65519.99)), Ok(K::U16(0x7bff)));
        assert_eq!(scalar_param(DType::F16, Scalar::Float(f64::NEG_INFINITY)), Ok(K::U16(0xfc00)));
        assert!(matches!(scalar_param(DType::F32, Scalar::Float(f64::NAN)), Ok(K::F32(x)) if x.is_nan()));
        // Rounded once, correctly, like the interpreter: just above the tie between 1 and the next
        // bf16 (and f16) rounds up (`half`'s own f64 conversion rounded these down).
        assert_eq!(scalar_param(DType::BF16, Scalar::Float(1.0 + 2f64.powi(-8) + 2f64.powi(-40))), Ok(K::U16(0x3f81)));
        assert_eq!(scalar_param(DType::F16, Scalar::Float(1.0 + 2f64.powi(-11) + 2f64.powi(-40))), Ok(K::U16(0x3c01)));
        // Integers to f16 and bf16 round once too (2^60 + 2^52 + 1 is just above a bf16 tie).
        assert_eq!(scalar_param(DType::BF16, Scalar::Int((1 << 60) + (1 << 52) + 1)), Ok(K::U16(0x5d81)));
        // Integer edges: exact fits only.
        assert_eq!(scalar_param(DType::I8, Scalar::Int(300)), Err("300 does not fit in i8 (its range is -128..=127)".into()));
        assert_eq!(scalar_param(DType::U8, Scalar::Int(-1)), Err("-1 does not fit in u8 (its range is 0..=255)".into()));
        assert_eq!(scalar_param(DType::I64, Scalar::Int(i64::MIN)), Ok(K::I64(i64::MIN)));
        assert_eq!(scalar_param(DType::U64, Scalar::Float(18446744073709549568.0)), Ok(K::U64(18446744073709549568)));
        assert!(scalar_param(DType::U64, Scalar::Float(18446744073709551616.0)).is_err());
        assert!(scalar_param(DType::I64, Scalar::Float(9223372036854775808.0)).is_err());
        assert_eq!(scalar_param(DType::I16, Scalar::Float(-32768.0)), Ok(K::I16(-32768)));
        assert!(scalar_param(DType::Bool, Scalar::Int(-1)).unwrap_err().contains("expected a bool (true, false, 0 or 1), got -1"));
    }

    #[test]
    fn mismatches_are_errors() {
        let params = vec![tensor("a", DType::F32, vec![Dim::Sym("M".into())]), scalar("n", DType::I32)];
        let t = PackArg::Tensor { ptr: 0, shape: &[2] };
        let s = PackArg::Scalar(Scalar::Int(1));
        assert!(pack_params(&params, &[t]).unwrap_err().contains("takes 2 arguments"));
        assert!(pack_params(&params, &[s, s]).unwrap_err().contains("argument `a`: expected a tensor"));
        assert!(pack_params(&params, &[t, t]).unwrap_err().contains("argument `n`: expected a scalar i32"));
        let t2 = PackArg::Tensor { ptr: 0, shape: &[2, 2] };
        assert!(pack_params(&params, &[t2, s]).unwrap_err().contains("rank 1"));
        let huge = PackArg::Tensor { ptr: 0, shape: &[1 << 31] };
        assert!(pack_params(&params, &[huge, s]).unwrap_err().contains("does not fit in i32"));
        let bad = PackArg::Scalar(Scalar::Float(2.5));
        assert!(pack_params(&params, &[t, bad]).unwrap_err().starts_with("argument `n`: expected an integer"));
    }

    #[test]
    fn strides() {
        assert_eq!(row_major_strides(&[]), Vec::<i64>::new());
        assert_eq!(row_major_strides(&[7]), vec![1]);
        assert_eq!(row_major_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(row_major_strides(&[0, 3]), vec![3, 1]);
        // Empty tensors with huge other dimensions saturate rather than overflow.
        let s = row_major_strides(&[0, 1 << 31, 1 << 31, 1 << 31]);
        assert_eq!(s[0], i64::MAX);
    }
}
