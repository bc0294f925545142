//! Scalar arithmetic of one register: constants, conversions, binary and unary math, with the
//! language's semantics (integer division by zero gives 0 and `MIN / -1` wraps, shifts mask
//! their amount, float min/max ignore NaN, float `%` is C's exact `fmod`, float→int casts
//! saturate). 16-bit floats compute in f32 and round once.

use super::fold::Tag;
use super::{Gen, Ice, Res, reg_type};
use crate::dtype::DType;
use crate::tir::{BinaryOp, Lit, ReduceOp, UnaryOp};
use inkwell::values::{BasicValueEnum, FloatValue, IntValue};
use inkwell::{FloatPredicate, IntPredicate};

fn is_half(d: DType) -> bool {
    matches!(d, DType::F16 | DType::BF16)
}

fn fsuffix(d: DType) -> &'static str {
    if d == DType::F64 { "f64" } else { "f32" }
}

pub(crate) fn constant<'c>(g: &Gen<'c, '_>, l: Lit, d: DType) -> Res<BasicValueEnum<'c>> {
    let t = reg_type(g.ctx, d);
    Ok(match (l, d) {
        (Lit::Bool(b), _) => g.ctx.bool_type().const_int(b as u64, false).into(),
        (Lit::Int(i), d) if d.is_float() => t.into_float_type().const_float(i as f64).into(),
        (Lit::Float(f), d) if d.is_float() => t.into_float_type().const_float(f).into(),
        (Lit::Int(i), DType::Bool) => g.ctx.bool_type().const_int((i != 0) as u64, false).into(),
        (Lit::Int(i), _) => t.into_int_type().const_int(i as u64, true).into(),
        (Lit::Float(f), _) => t.into_int_type().const_int(f as i64 as u64, true).into(),
    })
}

/// Converts a register between dtypes with the language's cast rules.
pub(crate) fn convert<'c>(g: &Gen<'c, '_>, v: BasicValueEnum<'c>, from: DType, to: DType) -> Res<BasicValueEnum<'c>> {
    if from == to {
        return Ok(v);
    }
    let b = &g.b;
    let tt = reg_type(g.ctx, to);
    Ok(match (from.is_float(), to.is_float()) {
        (true, true) => {
            let x = v.into_float_value();
            if from.size() < to.size() || (from == DType::F16 && to == DType::BF16) || (from == DType::BF16 && to == DType::F16) {
                // f16 ↔ bf16 goes through f32 (exact for both), then rounds once.
                let wide = b.build_float_ext(x, g.ctx.f32_type(), "ext").ice()?;
                if to == DType::F32 {
                    return Ok(wide.into());
                }
                if to == DType::F64 {
                    return Ok(b.build_float_ext(x, g.ctx.f64_type(), "ext").ice()?.into());
                }
                b.build_float_trunc(wide, tt.into_float_type(), "tr").ice()?.into()
            } else {
                b.build_float_trunc(x, tt.into_float_type(), "tr").ice()?.into()
            }
        }
        (false, true) => {
            let x = v.into_int_value();
            if from.is_signed() {
                b.build_signed_int_to_float(x, tt.into_float_type(), "cvt").ice()?.into()
            } else {
                b.build_unsigned_int_to_float(x, tt.into_float_type(), "cvt").ice()?.into()
            }
        }
        (true, false) if to == DType::Bool => {
            let x = v.into_float_value();
            b.build_float_compare(FloatPredicate::UNE, x, x.get_type().const_zero(), "nz").ice()?.into()
        }
        (true, false) => {
            let x = v.into_float_value();
            let x = if is_half(from) { b.build_float_ext(x, g.ctx.f32_type(), "ext").ice()? } else { x };
            let sat = if to.is_signed() { "fptosi" } else { "fptoui" };
            let name = format!("llvm.{sat}.sat.i{}.{}", to.bits(), fsuffix(from));
            g.call(&name, &[x.into()], tt)?
        }
        (false, false) if to == DType::Bool => {
            let x = v.into_int_value();
            b.build_int_compare(IntPredicate::NE, x, x.get_type().const_zero(), "nz").ice()?.into()
        }
        (false, false) => {
            let x = v.into_int_value();
            let ti = tt.into_int_type();
            if from.bits() > to.bits() {
                b.build_int_truncate(x, ti, "tr").ice()?.into()
            } else if from.is_signed() {
                b.build_int_s_extend(x, ti, "sx").ice()?.into()
            } else {
                b.build_int_z_extend(x, ti, "zx").ice()?.into()
            }
        }
    })
}

fn widen<'c>(g: &Gen<'c, '_>, v: BasicValueEnum<'c>, d: DType) -> Res<FloatValue<'c>> {
    Ok(if is_half(d) { g.b.build_float_ext(v.into_float_value(), g.ctx.f32_type(), "w").ice()? } else { v.into_float_value() })
}

fn narrow<'c>(g: &Gen<'c, '_>, v: FloatValue<'c>, d: DType) -> Res<BasicValueEnum<'c>> {
    Ok(if is_half(d) { g.b.build_float_trunc(v, reg_type(g.ctx, d).into_float_type(), "n").ice()?.into() } else { v.into() })
}

pub(crate) fn binary<'c>(g: &Gen<'c, '_>, op: BinaryOp, a: BasicValueEnum<'c>, c: BasicValueEnum<'c>, d: DType) -> Res<BasicValueEnum<'c>> {
    let b = &g.b;
    if d.is_float() {
        let (x, y) = (widen(g, a, d)?, widen(g, c, d)?);
        let sfx = fsuffix(if is_half(d) { DType::F32 } else { d });
        let r = match op {
            BinaryOp::Add => b.build_float_add(x, y, "add").ice()?,
            BinaryOp::Sub => b.build_float_sub(x, y, "sub").ice()?,
            BinaryOp::Mul => b.build_float_mul(x, y, "mul").ice()?,
            BinaryOp::Div => b.build_float_div(x, y, "div").ice()?,
            BinaryOp::Rem if d == DType::F64 => b.build_float_rem(x, y, "rem").ice()?,
            BinaryOp::Rem => fmod_f32(g, x, y)?,
            BinaryOp::Min => g.call(&format!("llvm.minnum.{sfx}"), &[x.into(), y.into()], x.get_type().into())?.into_float_value(),
            BinaryOp::Max => g.call(&format!("llvm.maxnum.{sfx}"), &[x.into(), y.into()], x.get_type().into())?.into_float_value(),
            other => return Err(format!("`{}` on floats", other.name())),
        };
        return narrow(g, r, d);
    }
    let (x, y) = (a.into_int_value(), c.into_int_value());
    let s = d.is_signed();
    let zero = x.get_type().const_zero();
    // Integer ops go through `fold`: indices are computed per register, mostly from the same
    // few values and constants.
    Ok(match op {
        // The program's own arithmetic keeps its shape (no constants moved outwards): LLVM
        // knows more about `(x + 128) + i` than about `(x + i) + 128` (that it is disjoint,
        // non-negative).
        BinaryOp::Add => g.plain(Tag::Add, x, y)?.into(),
        BinaryOp::Sub => g.plain(Tag::Sub, x, y)?.into(),
        BinaryOp::Mul => g.plain(Tag::Mul, x, y)?.into(),
        BinaryOp::Div | BinaryOp::Rem => {
            // Division by zero gives 0 and `MIN / -1` wraps to MIN with remainder 0 (the
            // interpreter's rules); both are poison for LLVM's `sdiv`/`srem`, so neither divisor
            // reaches them: `x / -1` is `-x` and `x % -1` is 0.
            let is0 = g.icmp(IntPredicate::EQ, y, zero)?;
            let m1 = g.icmp(IntPredicate::EQ, y, x.get_type().const_all_ones())?;
            let unsafe_d = if s { g.or(is0, m1)? } else { is0 };
            let safe = g.select(unsafe_d, x.get_type().const_int(1, false), y)?;
            let q = match (op, s, Gen::const_of(safe)) {
                (BinaryOp::Div, _, Some(1)) => x,
                (BinaryOp::Rem, _, Some(1)) => zero,
                (BinaryOp::Div, false, Some(k)) if k > 0 => g.udivc(x, k)?,
                (BinaryOp::Rem, false, Some(k)) if k > 0 => g.uremc(x, k)?,
                (BinaryOp::Div, true, _) => g.bin(Tag::SDiv, x, safe)?,
                (BinaryOp::Div, false, _) => g.bin(Tag::UDiv, x, safe)?,
                (_, true, _) => g.bin(Tag::SRem, x, safe)?,
                (_, false, _) => g.bin(Tag::URem, x, safe)?,
            };
            let q = match (op, s) {
                (BinaryOp::Div, true) => g.select(m1, g.sub(zero, x)?, q)?,
                (_, true) => g.select(m1, zero, q)?,
                _ => q,
            };
            g.select(is0, zero, q)?.into()
        }
        BinaryOp::Min | BinaryOp::Max => {
            let p = match (op, s) {
                (BinaryOp::Min, true) => IntPredicate::SLT,
                (BinaryOp::Min, false) => IntPredicate::ULT,
                (_, true) => IntPredicate::SGT,
                (_, false) => IntPredicate::UGT,
            };
            g.select(g.icmp(p, x, y)?, x, y)?.into()
        }
        BinaryOp::And => g.and(x, y)?.into(),
        BinaryOp::Or => g.or(x, y)?.into(),
        BinaryOp::Xor => g.xor(x, y)?.into(),
        BinaryOp::Shl | BinaryOp::Shr => {
            let amt = g.and(y, x.get_type().const_int(d.bits() as u64 - 1, false))?;
            match (op, s) {
                (BinaryOp::Shl, _) => g.bin(Tag::Shl, x, amt)?.into(),
                (_, true) => g.bin(Tag::AShr, x, amt)?.into(),
                (_, false) => g.bin(Tag::LShr, x, amt)?.into(),
            }
        }
    })
}

/// `x % y` on f32 as C's `fmod`, exactly (LLVM lowers `frem` on NVPTX to `x - trunc(x / y) · y`,
/// which is wrong whenever the quotient rounds). With `|x| = mx·2^ex` and `|y| = my·2^ey`
/// (integer significands below 2^24, `ex >= ey`), `|x| mod |y| = (mx · (2^(ex-ey) mod my) mod my)
/// · 2^ey`: the power comes from square-and-multiply over the 8 bits of `ex - ey`, in u64 (every
/// product is below 2^48), and the result, below `|y|`, is exact in f32. It takes `x`'s sign;
/// NaN when `x` is NaN or infinite or `y` is NaN or zero; `x` itself when `|x| < |y|`.
fn fmod_f32<'c>(g: &Gen<'c, '_>, x: FloatValue<'c>, y: FloatValue<'c>) -> Res<FloatValue<'c>> {
    let b = &g.b;
    let (i32t, i64t, f64t) = (g.ctx.i32_type(), g.ctx.i64_type(), g.ctx.f64_type());
    let c32 = |v: u64| i32t.const_int(v, false);
    let c64 = |v: u64| i64t.const_int(v, false);
    // (magnitude bits, significand with the hidden bit, biased exponent at least 1).
    let parts = |v: FloatValue<'c>| -> Res<(IntValue<'c>, IntValue<'c>, IntValue<'c>)> {
        let bits = b.build_bit_cast(v, i32t, "bits").ice()?.into_int_value();
        let mag = b.build_and(bits, c32(0x7fff_ffff), "mag").ice()?;
        let e = b.build_right_shift(mag, c32(23), false, "e").ice()?;
        let normal = b.build_int_compare(IntPredicate::NE, e, c32(0), "normal").ice()?;
        let hidden = b.build_select(normal, c32(0x80_0000), c32(0), "hidden").ice()?.into_int_value();
        let m = b.build_or(b.build_and(mag, c32(0x7f_ffff), "frac").ice()?, hidden, "m").ice()?;
        let e = b.build_select(normal, e, c32(1), "e").ice()?.into_int_value();
        Ok((mag, m, e))
    };
    let (ax, mx, ex) = parts(x)?;
    let (ay, my, ey) = parts(y)?;
    let d = b.build_int_sub(ex, ey, "d").ice()?;
    // `my` is 0 only for y = ±0, which gives NaN below; 1 keeps the remainders defined.
    let my = b.build_int_z_extend(my, i64t, "my").ice()?;
    let my_zero = b.build_int_compare(IntPredicate::EQ, my, c64(0), "myz").ice()?;
    let m = b.build_select(my_zero, c64(1), my, "mod").ice()?.into_int_value();
    let mut p = b.build_int_unsigned_rem(c64(1), m, "p").ice()?;
    for bit in (0..8).rev() {
        p = b.build_int_unsigned_rem(b.build_int_mul(p, p, "sq").ice()?, m, "p").ice()?;
        let twice = b.build_int_unsigned_rem(b.build_left_shift(p, c64(1), "p2").ice()?, m, "p2").ice()?;
        let set = b.build_and(b.build_right_shift(d, c32(bit), false, "bit").ice()?, c32(1), "bit").ice()?;
        let set = b.build_int_compare(IntPredicate::NE, set, c32(0), "set").ice()?;
        p = b.build_select(set, twice, p, "p").ice()?.into_int_value();
    }
    let mx = b.build_int_z_extend(mx, i64t, "mx").ice()?;
    let r = b.build_int_unsigned_rem(b.build_int_mul(mx, p, "mp").ice()?, m, "r").ice()?;
    // r · 2^(ey - 150): the power as f64 bits (exponent field ey - 150 + 1023).
    let e = b.build_int_z_extend(b.build_int_add(ey, c32(1023 - 150), "eb").ice()?, i64t, "eb").ice()?;
    let scale = b.build_bit_cast(b.build_left_shift(e, c64(52), "sb").ice()?, f64t, "scale").ice()?.into_float_value();
    let rf = b.build_unsigned_int_to_float(r, f64t, "rf").ice()?;
    let v = b.build_float_trunc(b.build_float_mul(rf, scale, "rs").ice()?, g.ctx.f32_type(), "v").ice()?;
    let v = g.call("llvm.copysign.f32", &[v.into(), x.into()], g.ctx.f32_type().into())?.into_float_value();
    let f32c = |v: f64| g.ctx.f32_type().const_float(v);
    let nan_in = b.build_float_compare(FloatPredicate::UNO, x, y, "nanin").ice()?;
    let x_inf = b.build_int_compare(IntPredicate::EQ, ax, c32(0x7f80_0000), "xinf").ice()?;
    let y_zero = b.build_float_compare(FloatPredicate::OEQ, y, f32c(0.0), "yz").ice()?;
    let is_nan = b.build_or(b.build_or(nan_in, x_inf, "n").ice()?, y_zero, "n").ice()?;
    let small = b.build_int_compare(IntPredicate::ULT, ax, ay, "small").ice()?;
    let v = b.build_select(small, x, v, "fmod").ice()?.into_float_value();
    Ok(b.build_select(is_nan, f32c(f64::NAN), v, "fmod").ice()?.into_float_value())
}

pub(crate) fn fma<'c>(
    g: &Gen<'c, '_>,
    a: BasicValueEnum<'c>,
    b: BasicValueEnum<'c>,
    c: BasicValueEnum<'c>,
    d: DType,
) -> Res<BasicValueEnum<'c>> {
    if d.is_float() {
        let ty = reg_type(g.ctx, d);
        return g.call(&format!("llvm.fma.{}", fsuffix(d)), &[a, b, c], ty);
    }
    let p = binary(g, BinaryOp::Mul, a, b, d)?;
    binary(g, BinaryOp::Add, p, c, d)
}

pub(crate) fn reduce_identity<'c>(g: &Gen<'c, '_>, op: ReduceOp, d: DType) -> Res<BasicValueEnum<'c>> {
    let l = match (op, d.is_float()) {
        (ReduceOp::Sum, _) => Lit::Int(0),
        (ReduceOp::Max, true) => Lit::Float(f64::NEG_INFINITY),
        (ReduceOp::Min, true) => Lit::Float(f64::INFINITY),
        (ReduceOp::Max, false) => Lit::Int(if d.is_signed() { -(1i64 << (d.bits() - 1).min(63)) } else { 0 }),
        (ReduceOp::Min, false) => Lit::Int(if d.is_signed() { (1i64 << (d.bits() - 1).min(63)) - 1 } else { -1 }),
    };
    if d == DType::I64 && matches!(op, ReduceOp::Max) {
        return constant(g, Lit::Int(i64::MIN), d);
    }
    if d == DType::I64 && matches!(op, ReduceOp::Min) {
        return constant(g, Lit::Int(i64::MAX), d);
    }
    constant(g, l, d)
}

fn f32c<'c>(g: &Gen<'c, '_>, v: f64) -> FloatValue<'c> {
    g.ctx.f32_type().const_float(v)
}

fn nvvm<'c>(g: &Gen<'c, '_>, name: &str, x: FloatValue<'c>) -> Res<FloatValue<'c>> {
    Ok(g.call(name, &[x.into()], g.ctx.f32_type().into())?.into_float_value())
}

fn exp2f<'c>(g: &Gen<'c, '_>, x: FloatValue<'c>) -> Res<FloatValue<'c>> {
    nvvm(g, "llvm.nvvm.ex2.approx.f", x)
}

pub(crate) fn unary<'c>(g: &Gen<'c, '_>, op: UnaryOp, a: BasicValueEnum<'c>, d: DType) -> Res<BasicValueEnum<'c>> {
    let b = &g.b;
    if !d.is_float() {
        let x = a.into_int_value();
        return Ok(match op {
            UnaryOp::Neg => b.build_int_neg(x, "neg").ice()?.into(),
            UnaryOp::Not => b.build_not(x, "not").ice()?.into(),
            UnaryOp::Abs => {
                let neg = b.build_int_compare(IntPredicate::SLT, x, x.get_type().const_zero(), "n").ice()?;
                b.build_select(neg, b.build_int_neg(x, "neg").ice()?, x, "abs").ice()?
            }
            other => return Err(format!("`{}` on integers", other.name())),
        });
    }
    if d == DType::F64 && !matches!(op, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sqrt | UnaryOp::Floor | UnaryOp::Ceil) {
        return Err(format!("`{}` on f64 has no GPU implementation yet", op.name()));
    }
    let x = widen(g, a, d)?;
    let sfx = fsuffix(if is_half(d) { DType::F32 } else { d });
    let ty = x.get_type();
    let log2e = std::f64::consts::LOG2_E;
    let r = match op {
        UnaryOp::Neg => b.build_float_neg(x, "neg").ice()?,
        UnaryOp::Abs => g.call(&format!("llvm.fabs.{sfx}"), &[x.into()], ty.into())?.into_float_value(),
        UnaryOp::Sqrt => g.call(&format!("llvm.sqrt.{sfx}"), &[x.into()], ty.into())?.into_float_value(),
        UnaryOp::Floor => g.call(&format!("llvm.floor.{sfx}"), &[x.into()], ty.into())?.into_float_value(),
        UnaryOp::Ceil => g.call(&format!("llvm.ceil.{sfx}"), &[x.into()], ty.into())?.into_float_value(),
        UnaryOp::Exp2 => exp2f(g, x)?,
        UnaryOp::Exp => exp2f(g, b.build_float_mul(x, f32c(g, log2e), "e").ice()?)?,
        UnaryOp::Log2 => nvvm(g, "llvm.nvvm.lg2.approx.f", x)?,
        UnaryOp::Log => b.build_float_mul(nvvm(g, "llvm.nvvm.lg2.approx.f", x)?, f32c(g, std::f64::consts::LN_2), "ln").ice()?,
        UnaryOp::Rsqrt => nvvm(g, "llvm.nvvm.rsqrt.approx.f", x)?,
        UnaryOp::Sin => nvvm(g, "llvm.nvvm.sin.approx.f", x)?,
        UnaryOp::Cos => nvvm(g, "llvm.nvvm.cos.approx.f", x)?,
        UnaryOp::Sigmoid => {
            let e = exp2f(g, b.build_float_mul(x, f32c(g, -log2e), "e").ice()?)?;
            b.build_float_div(f32c(g, 1.0), b.build_float_add(f32c(g, 1.0), e, "d").ice()?, "sig").ice()?
        }
        UnaryOp::Tanh => {
            // tanh(x) = sign(x) · (1 - 2 / (exp(2|x|) + 1)), stable for large |x|.
            let ax = g.call("llvm.fabs.f32", &[x.into()], ty.into())?.into_float_value();
            let e = exp2f(g, b.build_float_mul(ax, f32c(g, 2.0 * log2e), "e").ice()?)?;
            let t = b
                .build_float_sub(
                    f32c(g, 1.0),
                    b.build_float_div(f32c(g, 2.0), b.build_float_add(e, f32c(g, 1.0), "d").ice()?, "q").ice()?,
                    "t",
                )
                .ice()?;
            g.call("llvm.copysign.f32", &[t.into(), x.into()], ty.into())?.into_float_value()
        }
        UnaryOp::Erf => {
            // Abramowitz & Stegun 7.1.26: |error| < 1.5e-7, below f32's resolution near 1.
            let ax = g.call("llvm.fabs.f32", &[x.into()], ty.into())?.into_float_value();
            let t = b
                .build_float_div(
                    f32c(g, 1.0),
                    b.build_float_add(f32c(g, 1.0), b.build_float_mul(ax, f32c(g, 0.3275911), "p").ice()?, "d").ice()?,
                    "t",
                )
                .ice()?;
            let coeffs = [1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592];
            let mut poly = f32c(g, coeffs[0]);
            for c in &coeffs[1..] {
                poly = g.call("llvm.fma.f32", &[poly.into(), t.into(), f32c(g, *c).into()], ty.into())?.into_float_value();
            }
            poly = b.build_float_mul(poly, t, "p").ice()?;
            let x2 = b.build_float_mul(ax, ax, "x2").ice()?;
            let e = exp2f(g, b.build_float_mul(x2, f32c(g, -log2e), "e").ice()?)?;
            let r = b.build_float_sub(f32c(g, 1.0), b.build_float_mul(poly, e, "pe").ice()?, "r").ice()?;
            g.call("llvm.copysign.f32", &[r.into(), x.into()], ty.into())?.into_float_value()
        }
        UnaryOp::Not => return Err("`not` on floats".into()),
    };
    narrow(g, r, d)
}
