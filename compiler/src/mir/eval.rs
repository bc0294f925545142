//! A small evaluator of the machine IR: runs one thread of a function on given parameters and
//! memory, for unit tests of what the builder emits (folding, division by constants, value
//! numbering, hoisting) — the instructions are run, not their text read.
//!
//! Registers hold the bits of their class width (an `I8` is a 16-bit register, as on the GPU).
//! Approximate float functions are computed exactly. Inline asm, shuffles and calls are not
//! evaluated (an error); a barrier is a no-op (one thread).

use super::builder::{eval_fcmp, eval_icmp, fold_int, unsigned};
use super::{Addr, FOp, FUn, Function, Inst, IntOp, K, MemTy, Module, NumTy, Rnd, SReg, Space, Term, Ty, V, mask};
use crate::dtype::{DType, float_bits, float_from_bits};
use std::collections::HashMap;

/// What a thread sees besides its parameters.
#[derive(Clone, Debug, Default)]
pub struct Env {
    /// Bytes of memory by space and address.
    pub memory: HashMap<(u8, u64), u8>,
    pub tid: u32,
    pub ctaid: [u32; 3],
    pub nctaid: [u32; 3],
    /// At most this many instructions run (0: 1,000,000).
    pub max_steps: u64,
}

impl Env {
    fn key(space: Space, a: u64) -> (u8, u64) {
        (space as u8, a)
    }

    /// Writes `bytes` at `addr` in `space`.
    pub fn write(&mut self, space: Space, addr: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            self.memory.insert(Env::key(space, addr + i as u64), *b);
        }
    }

    /// Reads `n` bytes at `addr` in `space` (0 where never written).
    pub fn read(&self, space: Space, addr: u64, n: usize) -> Vec<u8> {
        (0..n).map(|i| self.memory.get(&Env::key(space, addr + i as u64)).copied().unwrap_or(0)).collect()
    }
}

/// Runs `f` (of `m`) to its return with parameter bits `args`; returns the final registers'
/// bits (`None`: never written).
pub fn run(m: &Module, f: &Function, args: &[u64], env: &mut Env) -> Result<Vec<Option<u64>>, String> {
    let mut regs: Vec<Option<u64>> = vec![None; f.regs.len()];
    let mut b = 0usize;
    let max = if env.max_steps == 0 { 1_000_000 } else { env.max_steps };
    let mut steps = 0u64;
    loop {
        let blk = f.blocks.get(b).ok_or_else(|| format!("no block bb{b}"))?;
        for i in &blk.insts {
            steps += 1;
            if steps > max {
                return Err("too many steps".into());
            }
            step(m, f, i, args, &mut regs, env)?;
        }
        // Phi copies: all sources read first.
        let vals: Vec<u64> = blk.copies.iter().map(|&(_, s)| get(&regs, s)).collect::<Result<_, _>>()?;
        for (&(d, _), v) in blk.copies.iter().zip(vals) {
            set(&mut regs, d, v)?;
        }
        match &blk.term {
            Some(Term::Br(t)) => b = t.0,
            Some(Term::CondBr(c, t, e)) => b = if get(&regs, *c)? != 0 { t.0 } else { e.0 },
            Some(Term::Ret) | None => return Ok(regs),
            Some(Term::Trap) => return Err("trap".into()),
        }
    }
}

/// The bits of an operand, masked to its register's width.
fn get(regs: &[Option<u64>], v: V) -> Result<u64, String> {
    match v.k {
        K::Imm(_) => Ok(v.imm_bits().unwrap_or(0)),
        K::Reg(r) => regs
            .get(r as usize)
            .copied()
            .flatten()
            .map(|x| x & mask(v.ty.class_bits()))
            .ok_or_else(|| format!("%{r} read before it is written")),
    }
}

fn set(regs: &mut [Option<u64>], d: V, bits: u64) -> Result<(), String> {
    let r = d.reg().ok_or("a constant destination")?;
    let slot = regs.get_mut(r as usize).ok_or_else(|| format!("%{r} is not a register"))?;
    *slot = Some(bits & mask(d.ty.class_bits()));
    Ok(())
}

/// Sign-extends the low `bits` bits.
fn sext(x: u64, bits: u32) -> i64 {
    if bits >= 64 {
        return x as i64;
    }
    let s = 64 - bits;
    ((x << s) as i64) >> s
}

fn dtype_of(t: Ty) -> DType {
    match t {
        Ty::F16 => DType::F16,
        Ty::BF16 => DType::BF16,
        Ty::F64 => DType::F64,
        _ => DType::F32,
    }
}

fn fval(bits: u64, t: Ty) -> f64 {
    float_from_bits(dtype_of(t), bits)
}

fn fbits(x: f64, t: Ty) -> u64 {
    float_bits(dtype_of(t), x)
}

fn num_dtype(n: NumTy) -> DType {
    match n {
        NumTy::F16 => DType::F16,
        NumTy::BF16 => DType::BF16,
        NumTy::F64 => DType::F64,
        _ => DType::F32,
    }
}

fn load_bytes(env: &Env, space: Space, a: u64, ty: MemTy) -> u64 {
    let n = ty.bytes() as usize;
    let mut x = 0u64;
    for (i, b) in env.read(space, a, n).iter().enumerate() {
        x |= (*b as u64) << (8 * i);
    }
    x
}

fn address(regs: &[Option<u64>], a: &Addr) -> Result<u64, String> {
    Ok(get(regs, a.base)?.wrapping_add(a.offset as u64))
}

fn step(m: &Module, f: &Function, i: &Inst, args: &[u64], regs: &mut [Option<u64>], env: &mut Env) -> Result<(), String> {
    let g = |regs: &[Option<u64>], v: V| get(regs, v);
    match i {
        Inst::Int { op, dst, a, b } => {
            let cb = dst.ty.class_bits();
            let t = Ty::int_of_bits(cb);
            let (x, y) = (sext(g(regs, *a)?, cb), sext(g(regs, *b)?, b.ty.class_bits()));
            let r = match op {
                IntOp::MulHiS => ((x as i128 * y as i128) >> cb) as i64,
                IntOp::MulHiU => ((unsigned(t, x) as u128 * unsigned(t, y) as u128) >> cb) as i64,
                // Shifts past the width: PTX clamps (shl, shr.u give 0; shr.s the sign).
                IntOp::Shl | IntOp::LShr if unsigned(Ty::I32, y) >= cb as u64 => 0,
                IntOp::AShr if unsigned(Ty::I32, y) >= cb as u64 => x >> 63,
                // Division by zero is undefined in PTX; the evaluator gives all ones.
                IntOp::UDiv | IntOp::SDiv | IntOp::URem | IntOp::SRem if y == 0 => -1,
                IntOp::SDiv if y == -1 => x.wrapping_neg(),
                IntOp::SRem if y == -1 => 0,
                _ => fold_int(*op, if dst.ty == Ty::Pred { Ty::Pred } else { t }, x, y).ok_or("unfoldable integer op")?,
            };
            set(regs, *dst, r as u64)
        }
        Inst::MulWide { signed, dst, a, b } => {
            let (x, y) = (g(regs, *a)?, g(regs, *b)?);
            let r = if *signed { (sext(x, 32) * sext(y, 32)) as u64 } else { x * y };
            set(regs, *dst, r)
        }
        Inst::Not { dst, a } => set(regs, *dst, !g(regs, *a)?),
        Inst::Clz { dst, a } => set(regs, *dst, (g(regs, *a)? as u32).leading_zeros() as u64),
        Inst::Neg { dst, a } => {
            let x = g(regs, *a)?;
            let r = if dst.ty.is_float() { fbits(-fval(x, dst.ty), dst.ty) } else { (x as i64).wrapping_neg() as u64 };
            set(regs, *dst, r)
        }
        Inst::ICmp { cmp, dst, a, b } => {
            let cb = a.ty.class_bits();
            let t = Ty::int_of_bits(cb);
            let (x, y) = (sext(g(regs, *a)?, cb), sext(g(regs, *b)?, cb));
            set(regs, *dst, eval_icmp(*cmp, t, x, y) as u64)
        }
        Inst::FCmp { cmp, dst, a, b } => {
            let (x, y) = (fval(g(regs, *a)?, a.ty), fval(g(regs, *b)?, b.ty));
            set(regs, *dst, eval_fcmp(*cmp, x, y) as u64)
        }
        Inst::Select { dst, c, a, b } => {
            let v = if g(regs, *c)? != 0 { g(regs, *a)? } else { g(regs, *b)? };
            set(regs, *dst, v)
        }
        Inst::Float { op, dst, a, b } => {
            let t = dst.ty;
            let (x, y) = (fval(g(regs, *a)?, t), fval(g(regs, *b)?, t));
            let r = match op {
                FOp::Add => x + y,
                FOp::Sub => x - y,
                FOp::Mul => x * y,
                FOp::Div => x / y,
                FOp::Min => x.min(y),
                FOp::Max => x.max(y),
            };
            set(regs, *dst, fbits(r, t))
        }
        Inst::Fma { dst, a, b, c } => {
            let t = dst.ty;
            let r = fval(g(regs, *a)?, t).mul_add(fval(g(regs, *b)?, t), fval(g(regs, *c)?, t));
            set(regs, *dst, fbits(r, t))
        }
        Inst::FUnary { op, dst, a } => {
            let t = dst.ty;
            let x = fval(g(regs, *a)?, t);
            let r = match op {
                FUn::Abs => x.abs(),
                FUn::Sqrt => x.sqrt(),
                FUn::Ex2Approx => crate::dtype::flush_exp_result(dtype_of(t), x.exp2()),
                FUn::Lg2Approx => x.log2(),
                FUn::RsqrtApprox => 1.0 / x.sqrt(),
                FUn::RcpApprox => 1.0 / x,
                FUn::SinApprox => x.sin(),
                FUn::CosApprox => x.cos(),
                FUn::Floor => x.floor(),
                FUn::Ceil => x.ceil(),
                FUn::Trunc => x.trunc(),
            };
            set(regs, *dst, fbits(r, t))
        }
        Inst::Copysign { dst, sign, mag } => {
            let t = dst.ty;
            let r = fval(g(regs, *mag)?, t).abs().copysign(fval(g(regs, *sign)?, t));
            set(regs, *dst, fbits(r, t))
        }
        Inst::Cvt { dst, src, to, from, rnd } => {
            let x = g(regs, *src)?;
            set(regs, *dst, convert(x, *to, *from, *rnd)?)
        }
        Inst::Mov { dst, src } => set(regs, *dst, g(regs, *src)?),
        Inst::Pack { dst, parts } => {
            let mut x = 0u64;
            let mut at = 0;
            for p in parts {
                x |= g(regs, *p)? << at;
                at += p.ty.class_bits();
            }
            set(regs, *dst, x)
        }
        Inst::Unpack { dsts, src } => {
            let x = g(regs, *src)?;
            let mut at = 0;
            for d in dsts {
                set(regs, *d, x >> at)?;
                at += d.ty.class_bits();
            }
            Ok(())
        }
        Inst::Load { space, ty, dsts, addr, pred, .. } => {
            if let Some(p) = pred
                && g(regs, *p)? == 0
            {
                return Ok(());
            }
            let a = address(regs, addr)?;
            for (k, d) in dsts.iter().enumerate() {
                let v = load_bytes(env, *space, a + (k as u64) * ty.bytes() as u64, *ty);
                set(regs, *d, v)?;
            }
            Ok(())
        }
        Inst::Store { space, ty, vals, addr, pred, .. } => {
            if let Some(p) = pred
                && g(regs, *p)? == 0
            {
                return Ok(());
            }
            let a = address(regs, addr)?;
            for (k, v) in vals.iter().enumerate() {
                let x = g(regs, *v)?;
                let n = ty.bytes() as usize;
                env.write(*space, a + (k * n) as u64, &x.to_le_bytes()[..n]);
            }
            Ok(())
        }
        Inst::Barrier => Ok(()),
        Inst::SReg { dst, reg } => {
            let v = match reg {
                SReg::Tid => env.tid,
                SReg::CtaId(a) => env.ctaid.get(*a as usize).copied().unwrap_or(0),
                SReg::NCtaId(a) => env.nctaid.get(*a as usize).copied().unwrap_or(1),
            };
            set(regs, *dst, v as u64)
        }
        Inst::Param { dst, index } => set(regs, *dst, *args.get(*index).ok_or_else(|| format!("no argument {index}"))?),
        Inst::SymAddr { dst, .. } => set(regs, *dst, 0),
        Inst::Cvta { dst, src, .. } => set(regs, *dst, g(regs, *src)?),
        Inst::Red { .. }
        | Inst::AtomCas { .. }
        | Inst::Shfl { .. }
        | Inst::Call { .. }
        | Inst::Asm { .. }
        | Inst::LdMatrix { .. }
        | Inst::Mma { .. }
        | Inst::CpAsync { .. }
        | Inst::CpAsyncCommit
        | Inst::CpAsyncWait(_) => {
            let _ = (m, f);
            Err(format!("the evaluator does not run {i:?}"))
        }
    }
}

/// The result bits of `cvt{.rnd}.to.from` of `x`.
fn convert(x: u64, to: NumTy, from: NumTy, rnd: Option<Rnd>) -> Result<u64, String> {
    if to == NumTy::TF32 {
        // Keep 10 mantissa bits, rounding to nearest with ties away from zero.
        let b = x as u32;
        let r = if f32::from_bits(b).is_finite() { b.wrapping_add(0x1000) & 0xffff_e000 } else { b };
        return Ok(r as u64);
    }
    let value: Num = if from.is_float() {
        Num::F(float_from_bits(num_dtype(from), x))
    } else if from.is_signed() {
        Num::I(sext(x, from.bits()) as i128)
    } else {
        Num::I((x & mask(from.bits())) as i128)
    };
    Ok(match (value, to.is_float()) {
        (Num::F(v), true) => {
            let v = match rnd {
                Some(Rnd::Rmi) => v.floor(),
                Some(Rnd::Rpi) => v.ceil(),
                Some(Rnd::Rzi) => v.trunc(),
                Some(Rnd::Rz) if to == NumTy::F32 => toward_zero_f32(v),
                _ => v,
            };
            float_bits(num_dtype(to), v)
        }
        (Num::I(i), true) => {
            let v = i as f64;
            let v = if rnd == Some(Rnd::Rz) && to == NumTy::F32 { toward_zero_f32_int(i) } else { v };
            float_bits(num_dtype(to), v)
        }
        (Num::F(v), false) => {
            // Truncated, saturated; NaN gives 0.
            let (lo, hi) = int_range(to);
            let t = v.trunc();
            let i = if v.is_nan() {
                0
            } else if t <= lo as f64 {
                lo
            } else if t >= hi as f64 {
                hi
            } else {
                t as i128
            };
            fit(i, to)
        }
        (Num::I(i), false) => fit(i, to),
    })
}

/// An integer result in its destination register: 8-bit results sign- or zero-extended to
/// the 16-bit register (PTX's rule), others truncated to their width.
fn fit(i: i128, to: NumTy) -> u64 {
    if to.bits() == 8 {
        let x = if to.is_signed() { i as i8 as i64 } else { i as u8 as i64 };
        return x as u64 & 0xffff;
    }
    i as u64 & mask(to.bits())
}

enum Num {
    I(i128),
    F(f64),
}

fn int_range(t: NumTy) -> (i128, i128) {
    let b = t.bits();
    if t.is_signed() { (-(1i128 << (b - 1)), (1i128 << (b - 1)) - 1) } else { (0, (1i128 << b) - 1) }
}

/// `v` rounded toward zero to an f32 value.
fn toward_zero_f32(v: f64) -> f64 {
    let f = v as f32;
    if (f as f64).abs() > v.abs() { f32::from_bits(f.to_bits() - 1) as f64 } else { f as f64 }
}

fn toward_zero_f32_int(i: i128) -> f64 {
    toward_zero_f32(i as f64)
}
