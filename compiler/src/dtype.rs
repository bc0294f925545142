//! Element types shared by every stage: the scalar types of the language, and the one rounding
//! of an `f64` to each float type (used by the interpreter, the code generator's constants, host
//! tensors and the launch packer alike).

use half::{bf16, f16};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U32,
    U64,
    F16,
    BF16,
    F32,
    F64,
}

impl DType {
    pub const ALL: [DType; 12] = [
        DType::Bool,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U32,
        DType::U64,
        DType::F16,
        DType::BF16,
        DType::F32,
        DType::F64,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    pub fn parse(s: &str) -> Option<DType> {
        DType::ALL.iter().copied().find(|d| d.name() == s)
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }

    pub fn is_int(self) -> bool {
        !self.is_float() && self != DType::Bool
    }

    pub fn is_signed(self) -> bool {
        matches!(self, DType::I8 | DType::I16 | DType::I32 | DType::I64)
    }

    /// Size of one element in bytes (bool is stored as one byte).
    pub fn size(self) -> usize {
        match self {
            DType::Bool | DType::I8 | DType::U8 => 1,
            DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::I64 | DType::U64 | DType::F64 => 8,
        }
    }

    /// Width in bits of the value (bool: 1).
    pub fn bits(self) -> u32 {
        if self == DType::Bool { 1 } else { self.size() as u32 * 8 }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An `exp` or `exp2` result as the GPU gives it: `ex2.approx.ftz.f32` flushes results under
/// f32's smallest normal (2^-126) to 0 in every float dtype but f64, so the interpreter does too.
pub fn flush_exp_result(dtype: DType, r: f64) -> f64 {
    if dtype != DType::F64 && r.abs() < f32::MIN_POSITIVE as f64 { 0.0 } else { r }
}

/// Rounds an `f64` to the nearest value of the float `dtype`, ties to even (other dtypes: `x`).
///
/// f16 and bf16 go through f32 with round-to-odd: `half`'s own `from_f64` drops the low 32
/// mantissa bits before rounding, which misrounds values just above a tie, and `x as f32` first
/// rounds twice. Rounding to odd at 24 bits and then to nearest at 11 (or 8) bits is exact,
/// because 24 ≥ 11 + 2.
pub fn round_float(dtype: DType, x: f64) -> f64 {
    match dtype {
        DType::F32 => x as f32 as f64,
        DType::F16 => f16::from_f32(f64_to_f32_odd(x)).to_f64(),
        DType::BF16 => bf16::from_f32(f64_to_f32_odd(x)).to_f64(),
        _ => x,
    }
}

/// The bits of `x` rounded to the float `dtype` (as `round_float`); for other dtypes, the bits
/// of the f64.
pub fn float_bits(dtype: DType, x: f64) -> u64 {
    match dtype {
        DType::F32 => (x as f32).to_bits() as u64,
        DType::F16 => f16::from_f32(f64_to_f32_odd(x)).to_bits() as u64,
        DType::BF16 => bf16::from_f32(f64_to_f32_odd(x)).to_bits() as u64,
        _ => x.to_bits(),
    }
}

/// The value of a float of `dtype` from its bits (the low bits of `bits`); for other dtypes the
/// bits are an f64's.
pub fn float_from_bits(dtype: DType, bits: u64) -> f64 {
    match dtype {
        DType::F32 => f32::from_bits(bits as u32) as f64,
        DType::F16 => f16::from_bits(bits as u16).to_f64(),
        DType::BF16 => bf16::from_bits(bits as u16).to_f64(),
        _ => f64::from_bits(bits),
    }
}

/// `x` rounded to f32 precision with round-to-odd (truncate, then set the last bit if inexact).
fn f64_to_f32_odd(x: f64) -> f32 {
    let f = x as f32;
    if x.is_nan() || f as f64 == x {
        return f;
    }
    if f.is_infinite() {
        // A finite value beyond f32's range: the largest finite f32 (whose last bit is odd).
        return f32::MAX.copysign(f);
    }
    let mut bits = f.to_bits();
    if (f as f64).abs() > x.abs() {
        // Nearest rounded away from zero: step one ulp back toward zero to truncate.
        bits -= 1;
    }
    f32::from_bits(bits | 1)
}
