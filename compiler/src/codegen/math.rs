//! Scalar arithmetic of one register: constants, conversions, binary and unary math, with the
//! language's semantics (integer division by zero gives 0 and `MIN / -1` wraps, shifts mask
//! their amount, float min/max ignore NaN, float `%` is C's exact `fmod`, float→int casts
//! saturate). 16-bit floats compute in f32 and round once.

use super::fold::Tag;
use super::{Gen, Res, reg_type};
use crate::dtype::DType;
use crate::mir::{Cmp, FCmp, FOp, FUn, IntOp, Ty, V};
use crate::tir::{BinaryOp, Lit, ReduceOp, UnaryOp};

fn is_half(d: DType) -> bool {
    matches!(d, DType::F16 | DType::BF16)
}

pub(crate) fn constant(_g: &Gen<'_>, l: Lit, d: DType) -> Res<V> {
    let t = reg_type(d);
    Ok(match (l, d) {
        (Lit::Bool(b), _) => V::int(Ty::Pred, b as i64),
        (Lit::Int(i), d) if d.is_float() => V::float(t, i as f64),
        (Lit::Float(f), d) if d.is_float() => V::float(t, f),
        (Lit::Int(i), DType::Bool) => V::int(Ty::Pred, (i != 0) as i64),
        (Lit::Int(i), _) => V::int(t, i),
        (Lit::Float(f), _) => V::int(t, f as i64),
    })
}

/// Converts a register between dtypes with the language's cast rules.
pub(crate) fn convert(g: &Gen<'_>, v: V, from: DType, to: DType) -> Res<V> {
    if from == to {
        return Ok(v);
    }
    let b = &g.b;
    let tt = reg_type(to);
    Ok(match (from.is_float(), to.is_float()) {
        (true, true) => {
            if from.size() < to.size() || (from == DType::F16 && to == DType::BF16) || (from == DType::BF16 && to == DType::F16) {
                // f16 ↔ bf16 goes through f32 (exact for both), then rounds once.
                let wide = b.fcast(v, Ty::F32);
                if to == DType::F32 {
                    return Ok(wide);
                }
                if to == DType::F64 {
                    return Ok(b.fcast(v, Ty::F64));
                }
                b.fcast(wide, tt)
            } else {
                b.fcast(v, tt)
            }
        }
        (false, true) => b.int_to_float(v, tt, from.is_signed()),
        (true, false) if to == DType::Bool => b.fcmp(FCmp::Une, v, V::float(v.ty, 0.0)),
        (true, false) => {
            let x = if is_half(from) { b.fcast(v, Ty::F32) } else { v };
            b.float_to_int(x, tt, to.is_signed())
        }
        (false, false) if to == DType::Bool => b.icmp(Cmp::Ne, v, V::int(v.ty, 0)),
        (false, false) => b.int_cast(v, tt, from.is_signed()),
    })
}

/// A 16-bit float widened to f32 (other values unchanged): 16-bit floats compute in f32.
pub(crate) fn widen(g: &Gen<'_>, v: V, d: DType) -> V {
    if is_half(d) { g.b.fcast(v, Ty::F32) } else { v }
}

fn narrow(g: &Gen<'_>, v: V, d: DType) -> V {
    if is_half(d) { g.b.fcast(v, reg_type(d)) } else { v }
}

pub(crate) fn binary(g: &Gen<'_>, op: BinaryOp, a: V, c: V, d: DType) -> Res<V> {
    if d.is_float() {
        let (x, y) = (widen(g, a, d), widen(g, c, d));
        let b = &g.b;
        let r = match op {
            BinaryOp::Add => b.fbin(FOp::Add, x, y),
            BinaryOp::Sub => b.fbin(FOp::Sub, x, y),
            BinaryOp::Mul => b.fbin(FOp::Mul, x, y),
            BinaryOp::Div => b.fbin(FOp::Div, x, y),
            BinaryOp::Rem if d == DType::F64 => {
                // `x - trunc(x / y) · y` (exact only when the quotient is).
                let q = b.funary(FUn::Trunc, b.fbin(FOp::Div, x, y));
                b.fbin(FOp::Sub, x, b.fbin(FOp::Mul, q, y))
            }
            BinaryOp::Rem => fmod_f32(g, x, y)?,
            BinaryOp::Min => b.fbin(FOp::Min, x, y),
            BinaryOp::Max => b.fbin(FOp::Max, x, y),
            other => return Err(format!("`{}` on floats", other.name())),
        };
        return Ok(narrow(g, r, d));
    }
    let (x, y) = (a, c);
    let s = d.is_signed();
    let zero = V::int(x.ty, 0);
    // Integer ops go through `fold`: indices are computed per register, mostly from the same
    // few values and constants.
    Ok(match op {
        // Index arithmetic of the program folds like the generated one (constants move
        // outwards, so that registers share the rest).
        BinaryOp::Add => g.add(x, y)?,
        BinaryOp::Sub => g.sub(x, y)?,
        BinaryOp::Mul => g.mul(x, y)?,
        // A non-negative value by a positive constant: unsigned (shifts and masks, and the sums
        // `fold` splits).
        BinaryOp::Div | BinaryOp::Rem if matches!(y.imm(), Some(k) if k > 0) && g.facts(x).is_some() => {
            let k = y.imm().unwrap_or(1);
            if op == BinaryOp::Div { g.udivc(x, k)? } else { g.uremc(x, k)? }
        }
        BinaryOp::Div | BinaryOp::Rem => {
            // Division by zero gives 0 and `MIN / -1` wraps to MIN with remainder 0 (the
            // interpreter's rules); PTX's `div`/`rem` leave both unspecified, so neither divisor
            // reaches them: `x / -1` is `-x` and `x % -1` is 0.
            let is0 = g.icmp(Cmp::Eq, y, zero)?;
            let m1 = g.icmp(Cmp::Eq, y, V::int(x.ty, -1))?;
            let unsafe_d = if s { g.or(is0, m1)? } else { is0 };
            let safe = g.select(unsafe_d, V::int(x.ty, 1), y)?;
            let q = match (op, s, Gen::const_of(safe)) {
                (BinaryOp::Div, _, Some(1)) => x,
                (BinaryOp::Rem, _, Some(1)) => zero,
                (BinaryOp::Div, false, Some(k)) if k > 0 => g.udivc(x, k)?,
                (BinaryOp::Rem, false, Some(k)) if k > 0 => g.uremc(x, k)?,
                (BinaryOp::Div, true, _) => g.bin(Tag::Int(IntOp::SDiv), x, safe)?,
                (BinaryOp::Div, false, _) => g.bin(Tag::Int(IntOp::UDiv), x, safe)?,
                (_, true, _) => g.bin(Tag::Int(IntOp::SRem), x, safe)?,
                (_, false, _) => g.bin(Tag::Int(IntOp::URem), x, safe)?,
            };
            let q = match (op, s) {
                (BinaryOp::Div, true) if m1.imm() == Some(0) => q,
                (BinaryOp::Div, true) => g.select(m1, g.sub(zero, x)?, q)?,
                (_, true) => g.select(m1, zero, q)?,
                _ => q,
            };
            g.select(is0, zero, q)?
        }
        BinaryOp::Min | BinaryOp::Max => {
            let p = match (op, s) {
                (BinaryOp::Min, true) => Cmp::Slt,
                (BinaryOp::Min, false) => Cmp::Ult,
                (_, true) => Cmp::Sgt,
                (_, false) => Cmp::Ugt,
            };
            g.select(g.icmp(p, x, y)?, x, y)?
        }
        BinaryOp::And => g.and(x, y)?,
        BinaryOp::Or => g.or(x, y)?,
        BinaryOp::Xor => g.xor(x, y)?,
        BinaryOp::Shl | BinaryOp::Shr => {
            let amt = g.and(y, V::int(x.ty, d.bits() as i64 - 1))?;
            match (op, s) {
                (BinaryOp::Shl, _) => g.bin(Tag::Int(IntOp::Shl), x, amt)?,
                (_, true) => g.bin(Tag::Int(IntOp::AShr), x, amt)?,
                (_, false) => g.bin(Tag::Int(IntOp::LShr), x, amt)?,
            }
        }
    })
}

/// `x % y` on f32 as C's `fmod`, exactly (`x - trunc(x / y) · y` is wrong whenever the quotient
/// rounds). With `|x| = mx·2^ex` and `|y| = my·2^ey`
/// (integer significands below 2^24, `ex >= ey`), `|x| mod |y| = (mx · (2^(ex-ey) mod my) mod my)
/// · 2^ey`: the power comes from square-and-multiply over the 8 bits of `ex - ey`, in u64 (every
/// product is below 2^48), and the result, below `|y|`, is exact in f32. It takes `x`'s sign;
/// NaN when `x` is NaN or infinite or `y` is NaN or zero; `x` itself when `|x| < |y|`.
fn fmod_f32(g: &Gen<'_>, x: V, y: V) -> Res<V> {
    let b = &g.b;
    let c32 = |v: i64| V::int(Ty::I32, v);
    let c64 = |v: i64| V::int(Ty::I64, v);
    let ib = |op, a, c| b.int_bin(op, a, c);
    // (magnitude bits, significand with the hidden bit, biased exponent at least 1).
    let parts = |v: V| -> (V, V, V) {
        let bits = b.bitcast(v, Ty::I32);
        let mag = ib(IntOp::And, bits, c32(0x7fff_ffff));
        let e = ib(IntOp::LShr, mag, c32(23));
        let normal = b.icmp(Cmp::Ne, e, c32(0));
        let hidden = b.select(normal, c32(0x80_0000), c32(0));
        let m = ib(IntOp::Or, ib(IntOp::And, mag, c32(0x7f_ffff)), hidden);
        let e = b.select(normal, e, c32(1));
        (mag, m, e)
    };
    let (ax, mx, ex) = parts(x);
    let (ay, my, ey) = parts(y);
    let d = ib(IntOp::Sub, ex, ey);
    // `my` is 0 only for y = ±0, which gives NaN below; 1 keeps the remainders defined.
    let my = b.int_cast(my, Ty::I64, false);
    let my_zero = b.icmp(Cmp::Eq, my, c64(0));
    let m = b.select(my_zero, c64(1), my);
    let mut p = ib(IntOp::URem, c64(1), m);
    for bit in (0..8).rev() {
        p = ib(IntOp::URem, ib(IntOp::Mul, p, p), m);
        let twice = ib(IntOp::URem, ib(IntOp::Shl, p, c64(1)), m);
        let set = ib(IntOp::And, ib(IntOp::LShr, d, c32(bit)), c32(1));
        let set = b.icmp(Cmp::Ne, set, c32(0));
        p = b.select(set, twice, p);
    }
    let mx = b.int_cast(mx, Ty::I64, false);
    let r = ib(IntOp::URem, ib(IntOp::Mul, mx, p), m);
    // r · 2^(ey - 150): the power as f64 bits (exponent field ey - 150 + 1023).
    let e = b.int_cast(ib(IntOp::Add, ey, c32(1023 - 150)), Ty::I64, false);
    let scale = b.bitcast(ib(IntOp::Shl, e, c64(52)), Ty::F64);
    let rf = b.int_to_float(r, Ty::F64, false);
    let v = b.fcast(b.fbin(FOp::Mul, rf, scale), Ty::F32);
    let v = b.copysign(v, x);
    let nan_in = b.fcmp(FCmp::Uno, x, y);
    let x_inf = b.icmp(Cmp::Eq, ax, c32(0x7f80_0000));
    let y_zero = b.fcmp(FCmp::Oeq, y, V::float(Ty::F32, 0.0));
    let is_nan = ib(IntOp::Or, ib(IntOp::Or, nan_in, x_inf), y_zero);
    let small = b.icmp(Cmp::Ult, ax, ay);
    let v = b.select(small, x, v);
    Ok(b.select(is_nan, V::float(Ty::F32, f64::NAN), v))
}

/// `a · b + c`, rounded once for floats (halves computed in f32, then rounded to the type).
pub(crate) fn fma(g: &Gen<'_>, a: V, b: V, c: V, d: DType) -> Res<V> {
    if d.is_float() {
        let r = g.b.fma(widen(g, a, d), widen(g, b, d), widen(g, c, d));
        return Ok(narrow(g, r, d));
    }
    let p = binary(g, BinaryOp::Mul, a, b, d)?;
    binary(g, BinaryOp::Add, p, c, d)
}

pub(crate) fn reduce_identity(g: &Gen<'_>, op: ReduceOp, d: DType) -> Res<V> {
    // The extreme values of an integer type of `bits` bits (shifts, no overflow at 64 bits).
    let bits = d.bits().clamp(1, 64);
    let l = match (op, d.is_float()) {
        (ReduceOp::Sum, _) => Lit::Int(0),
        (ReduceOp::Max, true) => Lit::Float(f64::NEG_INFINITY),
        (ReduceOp::Min, true) => Lit::Float(f64::INFINITY),
        (ReduceOp::Max, false) => Lit::Int(if d.is_signed() { i64::MIN >> (64 - bits) } else { 0 }),
        (ReduceOp::Min, false) => Lit::Int(if d.is_signed() { i64::MAX >> (64 - bits) } else { -1 }),
    };
    constant(g, l, d)
}

fn f32c(v: f64) -> V {
    V::float(Ty::F32, v)
}

pub(crate) fn unary(g: &Gen<'_>, op: UnaryOp, a: V, d: DType) -> Res<V> {
    let b = &g.b;
    if !d.is_float() {
        let x = a;
        return Ok(match op {
            UnaryOp::Neg => b.neg(x),
            UnaryOp::Not => b.not(x),
            UnaryOp::Abs => {
                let neg = b.icmp(Cmp::Slt, x, V::int(x.ty, 0));
                b.select(neg, b.neg(x), x)
            }
            other => return Err(format!("`{}` on integers", other.name())),
        });
    }
    if d == DType::F64 && !matches!(op, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sqrt | UnaryOp::Floor | UnaryOp::Ceil) {
        return Err(format!("`{}` on f64 has no GPU implementation yet", op.name()));
    }
    let x = widen(g, a, d);
    let log2e = std::f64::consts::LOG2_E;
    let mul = |p: V, q: V| b.fbin(FOp::Mul, p, q);
    let exp2f = |v: V| b.funary(FUn::Ex2Approx, v);
    let rcp = |v: V| b.funary(FUn::RcpApprox, v);
    let r = match op {
        UnaryOp::Neg => b.neg(x),
        UnaryOp::Abs => b.funary(FUn::Abs, x),
        UnaryOp::Sqrt => b.funary(FUn::Sqrt, x),
        UnaryOp::Floor => b.funary(FUn::Floor, x),
        UnaryOp::Ceil => b.funary(FUn::Ceil, x),
        UnaryOp::Exp2 => exp2f(x),
        UnaryOp::Exp => exp2f(mul(x, f32c(log2e))),
        UnaryOp::Log2 => b.funary(FUn::Lg2Approx, x),
        UnaryOp::Log => mul(b.funary(FUn::Lg2Approx, x), f32c(std::f64::consts::LN_2)),
        UnaryOp::Rsqrt => b.funary(FUn::RsqrtApprox, x),
        UnaryOp::Sin => b.funary(FUn::SinApprox, x),
        UnaryOp::Cos => b.funary(FUn::CosApprox, x),
        // The reciprocals below are of values ≥ 1 (or +inf): `rcp.approx` is 1 ulp off where a
        // correctly rounded division is a subroutine that holds registers across an epilogue.
        UnaryOp::Sigmoid => {
            let e = exp2f(mul(x, f32c(-log2e)));
            rcp(b.fbin(FOp::Add, f32c(1.0), e))
        }
        UnaryOp::Tanh => {
            // tanh(x) = sign(x) · (1 - 2 / (exp(2|x|) + 1)), stable for large |x|.
            let ax = b.funary(FUn::Abs, x);
            let e = exp2f(mul(ax, f32c(2.0 * log2e)));
            let t = b.fma(f32c(-2.0), rcp(b.fbin(FOp::Add, e, f32c(1.0))), f32c(1.0));
            b.copysign(t, x)
        }
        UnaryOp::Erf => {
            // Abramowitz & Stegun 7.1.26: |error| < 1.5e-7, below f32's resolution near 1. The
            // polynomial's coefficients are negated so that `1 - p·t·e` is one `fma` (an
            // epilogue of 128 `erf`s per thread is most of a linear layer's code).
            let ax = b.funary(FUn::Abs, x);
            let t = rcp(b.fma(ax, f32c(0.3275911), f32c(1.0)));
            let coeffs = [1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592];
            let mut poly = f32c(-coeffs[0]);
            for c in &coeffs[1..] {
                poly = b.fma(poly, t, f32c(-*c));
            }
            poly = mul(poly, t);
            let x2 = mul(ax, ax);
            let e = exp2f(mul(x2, f32c(-log2e)));
            b.copysign(b.fma(poly, e, f32c(1.0)), x)
        }
        UnaryOp::Not => return Err("`not` on floats".into()),
    };
    Ok(narrow(g, r, d))
}
