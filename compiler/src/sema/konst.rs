//! Compile-time scalars and their folding, so that a folded result is always the one the run time
//! computes.
//!
//! A typed constant (`BM`, `7i64`, `x as u32` of a constant) folds in its type, and an overflow is
//! an error, as in Rust's constant evaluation: every value the expression computes must fit the
//! type (`i32::MAX + 1`, `MIN / -1`, `-MIN`, `1 << 31` on i32), a shift amount must be below the
//! width, and a division or remainder by zero is refused. Where no error is raised, the exact
//! result fits the type, so it equals the wrapped result the run time computes.
//!
//! An untyped integer (a literal, or arithmetic on literals only) is computed exactly in 64 bits
//! and remembers the range of every value it computed and its largest shift ([`Need`]). It takes
//! the type of what it meets (`i32` alone, also as the operand of a cast or a comparison), and
//! that type must hold all of them: the same as if each literal had had that type from the start.
//!
//! Untyped float constants are exact (f64) and rounded once to the type they meet; typed `f32` and
//! `f64` ones round after each operation, like the run time. Conversions fold only when they are
//! exact; any other is left to the run time (which rounds, wraps or saturates).

use crate::DType;
use crate::syntax::ast::BinOp;

/// A compile-time scalar. A typed integer is stored as the run time stores it: a `u64` above
/// `i64::MAX` as its bits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Konst {
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// What an untyped integer asks of the type it takes: every value it computed in `lo..=hi`, and a
/// width above every shift amount (`shift` is the largest amount plus one; 0 without shifts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    pub lo: i64,
    pub hi: i64,
    pub shift: u32,
}

impl Need {
    /// A literal's need: its own value.
    pub fn of(v: i64) -> Need {
        Need { lo: v, hi: v, shift: 0 }
    }

    fn join(self, o: Need) -> Need {
        Need { lo: self.lo.min(o.lo), hi: self.hi.max(o.hi), shift: self.shift.max(o.shift) }
    }

    fn with(self, v: i64) -> Need {
        self.join(Need::of(v))
    }
}

/// The type of a compile-time scalar.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KTy {
    /// A fixed dtype; the value is valid for it.
    Of(DType),
    /// Untyped: a literal or arithmetic on literals, typed by what it meets (see the module
    /// comment). The need is that of an integer; a float's is unused.
    Weak(Need),
}

impl KTy {
    /// An untyped float.
    pub const FLOAT: KTy = KTy::Weak(Need { lo: 0, hi: 0, shift: 0 });

    pub fn dtype(self) -> Option<DType> {
        match self {
            KTy::Of(d) => Some(d),
            KTy::Weak(_) => None,
        }
    }
}

/// The smallest and largest value of an integer type (bool: 0 and 1; a float type: i64's range,
/// which is what an integer constant converted to it can be).
pub(crate) fn int_bounds(d: DType) -> (i128, i128) {
    match d {
        DType::Bool => (0, 1),
        DType::I8 => (i8::MIN.into(), i8::MAX.into()),
        DType::I16 => (i16::MIN.into(), i16::MAX.into()),
        DType::I32 => (i32::MIN.into(), i32::MAX.into()),
        DType::U8 => (0, u8::MAX.into()),
        DType::U32 => (0, u32::MAX.into()),
        DType::U64 => (0, u64::MAX.into()),
        _ => (i64::MIN.into(), i64::MAX.into()),
    }
}

pub(crate) fn fits(v: i128, d: DType) -> bool {
    let (lo, hi) = int_bounds(d);
    lo <= v && v <= hi
}

/// `-128 to 127`, for messages.
pub(crate) fn int_range(d: DType) -> String {
    let (lo, hi) = int_bounds(d);
    format!("{lo} to {hi}")
}

/// The mathematical value of a typed integer constant.
fn value(d: DType, bits: i64) -> i128 {
    if d == DType::U64 { i128::from(bits as u64) } else { i128::from(bits) }
}

/// An untyped integer taking integer type `d`: its value, or why it cannot.
pub(crate) fn settle(v: i64, need: Need, d: DType) -> Result<i64, String> {
    if !fits(v.into(), d) {
        return Err(format!("{v} does not fit in {d} ({})", int_range(d)));
    }
    for x in [need.lo, need.hi] {
        if !fits(x.into(), d) {
            return Err(format!("this constant expression computes {x}, which does not fit in {d} ({})", int_range(d)));
        }
    }
    if need.shift > d.bits() {
        return Err(format!("this constant expression shifts by {}, but {d} has {} bits", need.shift - 1, d.bits()));
    }
    Ok(v)
}

fn overflow(op: BinOp, x: i128, y: i128, t: &str) -> String {
    format!("this constant expression overflows {t}: {x} {} {y}", op.symbol())
}

fn div_by_zero(op: BinOp) -> String {
    let what = if op == BinOp::Div { "division" } else { "remainder" };
    format!("{what} by zero in a constant expression")
}

/// The amount of a shift on `bits`-bit integers, checked.
fn shift_amount(y: i128, bits: u32, t: &str) -> Result<u32, String> {
    match u32::try_from(y) {
        Ok(s) if s < bits => Ok(s),
        _ => Err(format!("shift amount {y} is out of range for {t} (0 to {})", bits - 1)),
    }
}

/// `x op y` on exact integers. `None` for a comparison or an op integers do not have.
fn int_op(op: BinOp, x: i128, y: i128, bits: u32, t: &str) -> Result<Option<i128>, String> {
    Ok(Some(match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x.checked_mul(y).ok_or_else(|| overflow(op, x, y, t))?,
        BinOp::Div | BinOp::Rem if y == 0 => return Err(div_by_zero(op)),
        BinOp::Div => x / y,
        BinOp::Rem => x % y,
        BinOp::BitAnd => x & y,
        BinOp::BitOr => x | y,
        BinOp::BitXor => x ^ y,
        BinOp::Shl => x.checked_mul(1i128 << shift_amount(y, bits, t)?).ok_or_else(|| overflow(op, x, y, t))?,
        BinOp::Shr => x >> shift_amount(y, bits, t)?,
        _ => return Ok(None),
    }))
}

fn compare(op: BinOp, o: std::cmp::Ordering) -> Option<bool> {
    Some(match op {
        BinOp::Eq => o.is_eq(),
        BinOp::Ne => o.is_ne(),
        BinOp::Lt => o.is_lt(),
        BinOp::Le => o.is_le(),
        BinOp::Gt => o.is_gt(),
        BinOp::Ge => o.is_ge(),
        _ => return None,
    })
}

/// Folds `a op b`. `Ok(None)`: not foldable here (different types, an op the operands do not
/// have, a 16-bit float); the operands then become values and the op's own rules apply. An error
/// is the message for an overflow, a bad shift or a division by zero.
pub(crate) fn binary(op: BinOp, a: (Konst, KTy), b: (Konst, KTy)) -> Result<Option<(Konst, KTy)>, String> {
    let (da, db) = (a.1.dtype(), b.1.dtype());
    if let (Some(x), Some(y)) = (da, db)
        && x != y
    {
        return Ok(None);
    }
    match (a, b) {
        ((Konst::Int(x), tx), (Konst::Int(y), ty)) => match da.or(db) {
            Some(t) if t.is_int() => {
                let typed = |v: i64, k: KTy| match k {
                    KTy::Weak(n) => settle(v, n, t).map(|v| value(t, v)),
                    KTy::Of(_) => Ok(value(t, v)),
                };
                let (x, y) = (typed(x, tx)?, typed(y, ty)?);
                if let Some(c) = compare(op, x.cmp(&y)) {
                    return Ok(Some((Konst::Bool(c), KTy::Of(DType::Bool))));
                }
                let Some(r) = int_op(op, x, y, t.bits(), t.name())? else { return Ok(None) };
                if !fits(r, t) {
                    return Err(overflow(op, x, y, t.name()));
                }
                Ok(Some((Konst::Int(r as i64), KTy::Of(t))))
            }
            Some(_) => Ok(None),
            None => {
                let (KTy::Weak(nx), KTy::Weak(ny)) = (tx, ty) else { return Ok(None) };
                if compare(op, x.cmp(&y)).is_some() {
                    // Compared, the literals are values of their default type.
                    let (x, y) = (settle(x, nx, DType::I32)?, settle(y, ny, DType::I32)?);
                    return Ok(compare(op, x.cmp(&y)).map(|c| (Konst::Bool(c), KTy::Of(DType::Bool))));
                }
                let Some(r) = int_op(op, x.into(), y.into(), 64, "i64")? else { return Ok(None) };
                if !fits(r, DType::I64) {
                    return Err(format!("{} (untyped integer constants compute in 64 bits)", overflow(op, x.into(), y.into(), "i64")));
                }
                let mut need = nx.join(ny).with(r as i64);
                if matches!(op, BinOp::Shl | BinOp::Shr) {
                    need.shift = need.shift.max(y as u32 + 1);
                }
                Ok(Some((Konst::Int(r as i64), KTy::Weak(need))))
            }
        },
        ((Konst::Int(_) | Konst::Float(_), _), (Konst::Int(_) | Konst::Float(_), _)) => float_binary(op, a, b),
        ((Konst::Bool(x), _), (Konst::Bool(y), _)) => Ok(Some((
            Konst::Bool(match op {
                BinOp::And | BinOp::BitAnd => x && y,
                BinOp::Or | BinOp::BitOr => x || y,
                BinOp::BitXor | BinOp::Ne => x != y,
                BinOp::Eq => x == y,
                _ => return Ok(None),
            }),
            KTy::Of(DType::Bool),
        ))),
        _ => Ok(None),
    }
}

/// Float arithmetic (an integer operand is a literal meeting a float): exact when untyped,
/// rounded after each operation in `f32`/`f64`; 16-bit floats are left to the run time.
fn float_binary(op: BinOp, a: (Konst, KTy), b: (Konst, KTy)) -> Result<Option<(Konst, KTy)>, String> {
    let t = a.1.dtype().or(b.1.dtype());
    let round = |v: f64| if t == Some(DType::F32) { v as f32 as f64 } else { v };
    let operand = |k: Konst| match k {
        // As a literal meeting `t` would be: rounded once to it.
        Konst::Int(i) if t == Some(DType::F32) => i as f32 as f64,
        Konst::Int(i) => i as f64,
        Konst::Float(f) => round(f),
        Konst::Bool(b) => f64::from(u8::from(b)),
    };
    match t {
        None | Some(DType::F32 | DType::F64) => {}
        _ => return Ok(None),
    }
    let (x, y) = (operand(a.0), operand(b.0));
    if compare(op, std::cmp::Ordering::Equal).is_some() {
        // Unordered (NaN) compares false, except `!=`.
        let c = x.partial_cmp(&y).map_or(op == BinOp::Ne, |o| compare(op, o).unwrap_or(false));
        return Ok(Some((Konst::Bool(c), KTy::Of(DType::Bool))));
    }
    let r = match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => x / y,
        _ => return Ok(None),
    };
    Ok(Some((Konst::Float(round(r)), t.map_or(KTy::FLOAT, KTy::Of))))
}

/// `-k`, with the same rules.
pub(crate) fn neg(k: Konst, t: KTy) -> Result<Option<(Konst, KTy)>, String> {
    Ok(Some(match (k, t) {
        (Konst::Int(v), KTy::Of(d)) if d.is_int() => {
            let r = -value(d, v);
            if !fits(r, d) {
                return Err(format!("this constant expression overflows {d}: -({})", value(d, v)));
            }
            (Konst::Int(r as i64), t)
        }
        (Konst::Int(v), KTy::Weak(n)) => {
            let r = v.checked_neg().ok_or_else(|| format!("this constant expression overflows i64: -({v})"))?;
            (Konst::Int(r), KTy::Weak(n.with(r)))
        }
        (Konst::Float(f), _) => (Konst::Float(-f), t),
        _ => return Ok(None),
    }))
}

/// Whether `f` is a value of the float type `d`.
fn representable(f: f64, d: DType) -> bool {
    match d {
        DType::F64 => true,
        DType::F32 => f as f32 as f64 == f,
        DType::F16 => half::f16::from_f64(f).to_f64() == f,
        DType::BF16 => half::bf16::from_f64(f).to_f64() == f,
        _ => false,
    }
}

/// `k as to` when the conversion is exact (or to/from bool), `Ok(None)` when the run time must do
/// it (it rounds, wraps or saturates). An untyped integer is an `i32` here; an untyped float is
/// exact, so a conversion to a float type is the literal taking that type.
pub(crate) fn cast(k: Konst, t: KTy, to: DType) -> Result<Option<(Konst, KTy)>, String> {
    let typed = |k: Konst| Some((k, KTy::Of(to)));
    if t == KTy::Of(to) {
        return Ok(Some((k, t)));
    }
    Ok(match (k, t) {
        (Konst::Int(v), KTy::Weak(n)) => return cast(Konst::Int(settle(v, n, DType::I32)?), KTy::Of(DType::I32), to),
        (Konst::Bool(b), _) if to.is_float() => typed(Konst::Float(f64::from(u8::from(b)))),
        (Konst::Bool(b), _) if to == DType::Bool => typed(Konst::Bool(b)),
        (Konst::Bool(b), _) => typed(Konst::Int(b.into())),
        (Konst::Int(v), KTy::Of(from)) => {
            let x = value(from, v);
            if to == DType::Bool {
                typed(Konst::Bool(x != 0))
            } else if to.is_int() {
                fits(x, to).then_some((Konst::Int(x as i64), KTy::Of(to)))
            } else {
                let f = x as f64;
                (f as i128 == x && representable(f, to)).then_some((Konst::Float(f), KTy::Of(to)))
            }
        }
        (Konst::Float(f), _) if to == DType::Bool => typed(Konst::Bool(f != 0.0)),
        (Konst::Float(f), _) if to.is_int() => {
            let exact = f.is_finite() && f.fract() == 0.0 && f.abs() < 1.9e19 && fits(f as i128, to);
            exact.then_some((Konst::Int(f as i128 as i64), KTy::Of(to)))
        }
        (Konst::Float(f), KTy::Weak(_)) => typed(Konst::Float(f)),
        (Konst::Float(f), KTy::Of(_)) => representable(f, to).then_some((Konst::Float(f), KTy::Of(to))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weak(v: i64) -> (Konst, KTy) {
        (Konst::Int(v), KTy::Weak(Need::of(v)))
    }

    fn typed(v: i64, d: DType) -> (Konst, KTy) {
        (Konst::Int(v), KTy::Of(d))
    }

    #[test]
    fn typed_overflow_is_an_error() {
        let max = typed(i32::MAX.into(), DType::I32);
        let min = typed(i32::MIN.into(), DType::I32);
        assert!(binary(BinOp::Add, max, weak(1)).unwrap_err().contains("overflows i32"));
        assert!(binary(BinOp::Div, min, weak(-1)).unwrap_err().contains("overflows i32"));
        assert!(neg(min.0, min.1).unwrap_err().contains("overflows i32"));
        assert!(binary(BinOp::Shl, weak(1), typed(31, DType::I32)).unwrap_err().contains("overflows i32"));
        assert!(binary(BinOp::Shl, weak(1), typed(32, DType::I32)).unwrap_err().contains("shift amount 32"));
        assert!(binary(BinOp::Div, max, weak(0)).unwrap_err().contains("division by zero"));
        // MIN % -1 is 0, at run time too.
        assert_eq!(binary(BinOp::Rem, min, weak(-1)), Ok(Some(typed(0, DType::I32))));
        // u64 above i64::MAX is kept as its bits.
        let big = binary(BinOp::Shl, typed(1, DType::U64), weak(63)).unwrap().unwrap();
        assert_eq!(big, typed(i64::MIN, DType::U64));
        assert_eq!(binary(BinOp::Gt, big, weak(1)), Ok(Some((Konst::Bool(true), KTy::Of(DType::Bool)))));
    }

    #[test]
    fn untyped_integers_are_exact_and_checked_where_they_land() {
        let (k, t) = binary(BinOp::Add, weak(i32::MAX.into()), weak(1)).unwrap().unwrap();
        assert_eq!(k, Konst::Int(1 << 31));
        let KTy::Weak(n) = t else { panic!("typed") };
        assert!(settle(1 << 31, n, DType::I32).is_err());
        assert_eq!(settle(1 << 31, n, DType::I64), Ok(1 << 31));
        // `(MAX + 1) / 2` fits i32, but its intermediate does not.
        let (k, t) = binary(BinOp::Div, (k, t), weak(2)).unwrap().unwrap();
        let KTy::Weak(n) = t else { panic!("typed") };
        assert!(settle(k_int(k), n, DType::I32).unwrap_err().contains("computes 2147483648"));
        // A shift remembers its amount.
        let (k, t) = binary(BinOp::Shr, weak(5), weak(40)).unwrap().unwrap();
        let KTy::Weak(n) = t else { panic!("typed") };
        assert!(settle(k_int(k), n, DType::I32).unwrap_err().contains("shifts by 40"));
        assert_eq!(settle(k_int(k), n, DType::I64), Ok(0));
        // Compared, literals are i32.
        assert!(binary(BinOp::Gt, weak(3_000_000_000), weak(0)).is_err());
        // Cast: an untyped integer is i32.
        assert!(cast(Konst::Int(1 << 31), KTy::Weak(Need::of(1 << 31)), DType::F32).is_err());
    }

    fn k_int(k: Konst) -> i64 {
        match k {
            Konst::Int(v) => v,
            _ => panic!("not an integer"),
        }
    }

    #[test]
    fn conversions_fold_only_when_exact() {
        let c = |v: i64, from: DType, to: DType| cast(Konst::Int(v), KTy::Of(from), to).unwrap();
        assert_eq!(c(300, DType::I32, DType::U8), None);
        assert_eq!(c(200, DType::I32, DType::U8), Some(typed(200, DType::U8)));
        assert_eq!(c(16_777_217, DType::I32, DType::F32), None);
        assert_eq!(c(-1, DType::I64, DType::U64), None);
        let f = |v: f64, to: DType| cast(Konst::Float(v), KTy::Of(DType::F64), to).unwrap();
        assert_eq!(f(2.5, DType::I32), None);
        assert_eq!(f(-3.0, DType::I8), Some(typed(-3, DType::I8)));
        assert_eq!(f(0.1, DType::F32), None);
        assert_eq!(f(0.5, DType::BF16), Some((Konst::Float(0.5), KTy::Of(DType::BF16))));
    }
}
