//! Run-time values of the interpreter and the number conversions that define the language's
//! arithmetic: rounding to each float type, wrapping to each integer width, casts.
//!
//! Representation: float tiles hold `f64`s that are already exactly representable in the tile's
//! dtype; integer and bool tiles hold `i64`s normalised to the dtype (signed types
//! sign-extended, `u8`/`u32` zero-extended, `u64` as its bit pattern, bool as 0 or 1), so that
//! equal values always have equal representations.

use crate::dtype::DType;
use std::rc::Rc;

/// The elements of a tile, row-major.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Data {
    F(Vec<f64>),
    I(Vec<i64>),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tile {
    pub dtype: DType,
    pub shape: Vec<i64>,
    pub data: Data,
}

impl Tile {
    /// A tile of `shape` filled with `v` (already in `dtype`'s representation).
    pub(crate) fn filled(dtype: DType, shape: &[i64], v: Elem) -> Tile {
        let n = numel(shape);
        let data = match v {
            Elem::F(f) => Data::F(vec![f; n]),
            Elem::I(i) => Data::I(vec![i; n]),
        };
        Tile { dtype, shape: shape.to_vec(), data }
    }

    /// The single element of a scalar (or one-element) tile.
    pub(crate) fn elem(&self) -> Option<Elem> {
        match &self.data {
            Data::F(v) if v.len() == 1 => Some(Elem::F(v[0])),
            Data::I(v) if v.len() == 1 => Some(Elem::I(v[0])),
            _ => None,
        }
    }
}

/// One element, in the representation of its tile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Elem {
    F(f64),
    I(i64),
}

/// A tensor argument, or a view of one: which argument, where its element `[0, …]` is, its
/// sizes and strides (in elements).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TensorRef {
    pub arg: usize,
    pub offset: i64,
    pub shape: Vec<i64>,
    pub strides: Vec<i64>,
    /// A view taken at an out-of-range index: it has no elements (loads pad, stores drop, its
    /// dimensions read as 0), whatever its nominal shape.
    pub empty: bool,
    /// Whether the parameter it comes from is `&mut`.
    pub mutable: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum Val {
    Tile(Rc<Tile>),
    Tensor(Rc<TensorRef>),
}

/// The number of elements of a shape (negative dimensions count as empty; saturating, so that
/// malformed shapes are caught by size checks instead of overflowing).
pub(crate) fn numel(shape: &[i64]) -> usize {
    shape.iter().fold(1usize, |n, &d| n.saturating_mul(d.max(0) as usize))
}

/// Rounds an `f64` to the nearest value of the float `dtype`, ties to even
/// (`dtype::round_float`, the one rounding of the project).
pub(crate) fn round_to(dtype: DType, x: f64) -> f64 {
    crate::dtype::round_float(dtype, x)
}

/// Wraps an integer to `dtype`'s width (two's complement), in the normalised representation.
pub(crate) fn wrap(dtype: DType, v: i64) -> i64 {
    match dtype {
        DType::Bool => v & 1,
        DType::I8 => v as i8 as i64,
        DType::I16 => v as i16 as i64,
        DType::I32 => v as i32 as i64,
        DType::U8 => v as u8 as i64,
        DType::U32 => v as u32 as i64,
        _ => v,
    }
}

/// Whether integers of this dtype compare, divide and shift as unsigned.
pub(crate) fn is_unsigned(dtype: DType) -> bool {
    matches!(dtype, DType::Bool | DType::U8 | DType::U32 | DType::U64)
}

/// The mathematical value of a normalised integer of `dtype`.
pub(crate) fn int_value(dtype: DType, v: i64) -> i128 {
    if dtype == DType::U64 { v as u64 as i128 } else { v as i128 }
}

/// Float → integer: truncates toward zero and saturates, NaN gives 0 (Rust's `as`); to bool:
/// `x != 0` (so NaN is true).
pub(crate) fn float_to_int(dtype: DType, x: f64) -> i64 {
    match dtype {
        DType::Bool => (x != 0.0) as i64,
        DType::I8 => x as i8 as i64,
        DType::I16 => x as i16 as i64,
        DType::I32 => x as i32 as i64,
        DType::U8 => x as u8 as i64,
        DType::U32 => x as u32 as i64,
        DType::U64 => x as u64 as i64,
        _ => x as i64,
    }
}

/// Integer → float, rounded to nearest even once (no double rounding through f64).
pub(crate) fn int_to_float(from: DType, to: DType, v: i64) -> f64 {
    let exact = int_value(from, v);
    match to {
        DType::F64 => exact as f64,
        DType::F32 => exact as f32 as f64,
        // Round to odd at f32 precision, then to nearest (see `round_to`).
        _ => {
            let f = exact as f32;
            let odd = if f as i128 == exact {
                f
            } else {
                let mut bits = f.to_bits();
                if (f as i128).abs() > exact.abs() {
                    bits -= 1;
                }
                f32::from_bits(bits | 1)
            };
            round_to(to, odd as f64)
        }
    }
}

/// Integer → integer: wraps to the target width (Rust's `as`), except that bool is `!= 0`.
pub(crate) fn int_to_int(to: DType, v: i64) -> i64 {
    if to == DType::Bool { (v != 0) as i64 } else { wrap(to, v) }
}

/// Converts one element of `from` to `to` by the cast rules.
pub(crate) fn cast_elem(from: DType, to: DType, e: Elem) -> Elem {
    match (e, to.is_float()) {
        (Elem::F(x), true) => Elem::F(round_to(to, x)),
        (Elem::F(x), false) => Elem::I(float_to_int(to, x)),
        (Elem::I(i), true) => Elem::F(int_to_float(from, to, i)),
        (Elem::I(i), false) => Elem::I(int_to_int(to, i)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_to_half_types_is_correct_near_ties() {
        // 1 + 2^-11 is the tie between 1 and the next f16; anything above it rounds up. `half`'s
        // from_f64 sees only the tie when the excess is below bit 32 of the mantissa.
        let above = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
        assert_eq!(round_to(DType::F16, above), 1.0 + 2f64.powi(-10));
        assert_eq!(round_to(DType::F16, 1.0 + 2f64.powi(-11)), 1.0);
        assert_eq!(round_to(DType::F16, 1.0 + 3.0 * 2f64.powi(-11)), 1.0 + 2.0 * 2f64.powi(-10));
        let above = 1.0 + 2f64.powi(-8) + 2f64.powi(-45);
        assert_eq!(round_to(DType::BF16, above), 1.0 + 2f64.powi(-7));
        assert_eq!(round_to(DType::BF16, 1.0 + 2f64.powi(-8)), 1.0);
        assert_eq!(round_to(DType::F16, 65520.0), f64::INFINITY);
        assert_eq!(round_to(DType::F16, 65519.99), 65504.0);
        assert_eq!(round_to(DType::BF16, 1e300), f64::INFINITY);
        assert_eq!(round_to(DType::BF16, -1e300), f64::NEG_INFINITY);
        assert_eq!(round_to(DType::F16, 2f64.powi(-25)), 0.0);
        assert_eq!(round_to(DType::F16, 2f64.powi(-25) * (1.0 + 1e-12)), 2f64.powi(-24));
        assert_eq!(round_to(DType::BF16, 1e-300), 0.0);
        assert!(round_to(DType::F16, f64::NAN).is_nan());
        assert_eq!(round_to(DType::F32, 0.1), 0.1f32 as f64);
    }

    #[test]
    fn integer_conversions() {
        assert_eq!(wrap(DType::I32, i32::MAX as i64 + 1), i32::MIN as i64);
        assert_eq!(wrap(DType::U8, -1), 255);
        assert_eq!(float_to_int(DType::I32, 1e20), i32::MAX as i64);
        assert_eq!(float_to_int(DType::I32, -2.9), -2);
        assert_eq!(float_to_int(DType::U8, -3.0), 0);
        assert_eq!(float_to_int(DType::I64, f64::NAN), 0);
        assert_eq!(float_to_int(DType::Bool, f64::NAN), 1);
        assert_eq!(int_to_float(DType::I64, DType::F32, (1 << 40) + 1), ((1i64 << 40) + 1) as f32 as f64);
        assert_eq!(int_to_float(DType::U64, DType::F64, -1), 18446744073709551615.0);
        // 2^60 + 2^52 + 1 is just above the tie between two bf16s: a double rounding through
        // f64 (which would drop the +1) would give the even one below.
        let v = (1i64 << 60) + (1 << 52) + 1;
        assert_eq!(int_to_float(DType::I64, DType::BF16, v), 2f64.powi(60) + 2f64.powi(53));
        assert_eq!(int_to_float(DType::I32, DType::F16, 70000), f64::INFINITY);
        assert_eq!(int_to_int(DType::Bool, 4), 1);
        assert_eq!(int_to_int(DType::I8, 200), -56);
    }
}
