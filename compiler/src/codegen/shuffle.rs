//! Layout conversions in registers (`shuffle_convert`): each destination register is one of the
//! thread's own registers or a register of another lane read with `shfl.sync.idx`, as
//! the op's plan (`lir::shuffle::plan`) says; and the 32-bit warp shuffles of any element type.

use super::{Gen, Ice, Res};
use crate::ir::Value;
use crate::lir::shuffle;
use inkwell::values::{BasicValueEnum, IntValue};
use std::collections::HashMap;

impl<'c> Gen<'c, '_> {
    pub(crate) fn shuffle_convert(&self, x: Value, plan: &shuffle::ShufflePlan) -> Res<Vec<BasicValueEnum<'c>>> {
        let regs = self.regs(x)?;
        let reg = |r: usize| regs.get(r).copied().ok_or_else(|| format!("shuffle_convert reads register {r} of {}", regs.len()));
        // Equal sources (a broadcast reads one value into many registers) are shuffled once.
        let mut done: HashMap<&shuffle::Source, BasicValueEnum<'c>> = HashMap::new();
        let mut out = Vec::with_capacity(plan.sources.len());
        for s in &plan.sources {
            let v = match s {
                shuffle::Source::Own(r) => reg(*r)?,
                shuffle::Source::Shuffle { reg: r, lane } => match done.get(s) {
                    Some(v) => *v,
                    None => {
                        let l = self.lane_of(lane)?;
                        let v = self.shfl("llvm.nvvm.shfl.sync.idx.i32", reg(*r)?, l)?;
                        done.insert(s, v);
                        v
                    }
                },
                // Every lane sends each of `regs` in turn; the reader keeps the one it wants.
                shuffle::Source::Gather { regs: rs, lane, pick } => match done.get(s) {
                    Some(v) => *v,
                    None => {
                        let l = self.lane_of(lane)?;
                        let want = self.lane_of(pick)?;
                        let mut v: Option<BasicValueEnum<'c>> = None;
                        for (i, &r) in rs.iter().enumerate() {
                            let x = self.shfl("llvm.nvvm.shfl.sync.idx.i32", reg(r)?, l)?;
                            v = Some(match v {
                                None => x,
                                Some(acc) => {
                                    let hit = self.icmp(inkwell::IntPredicate::EQ, want, self.i32c(i as i64))?;
                                    self.b.build_select(hit, x, acc, "g").ice()?
                                }
                            });
                        }
                        let v = v.ok_or("a gather of no register")?;
                        done.insert(s, v);
                        v
                    }
                },
            };
            out.push(v);
        }
        Ok(out)
    }

    /// The lane a `LaneMap` gives this thread: its thread-dependent part is built once per
    /// kernel (bits that stay in place are one `and`), the constant is one `xor`.
    fn lane_of(&self, m: &shuffle::LaneMap) -> Res<IntValue<'c>> {
        let key: Vec<i64> = m.bits.iter().flat_map(|&(b, k)| [b as i64, k as i64]).collect();
        let base = self.hoisted(("shfl.lane", key), |g| {
            let kept: u32 = m.bits.iter().filter(|&&(b, k)| k == 1 << b).map(|&(_, k)| k).sum();
            let mut acc = if kept == 0 { g.i32c(0) } else { g.and(g.tid, g.i32c(kept as i64))? };
            for &(b, k) in m.bits.iter().filter(|&&(b, k)| k != 1 << b) {
                let bit = g.and(g.lshr(g.tid, b as i64)?, g.i32c(1))?;
                acc = g.xor(acc, g.mulc(bit, k as i64)?)?;
            }
            Ok(acc)
        })?;
        if m.xor == 0 { Ok(base) } else { self.xor(base, self.i32c(m.xor as i64)) }
    }

    /// A full-warp 32-bit shuffle (`intrinsic` is `llvm.nvvm.shfl.sync.{idx,bfly}.i32`) of a
    /// value of any type: narrower values are widened, 64-bit ones shuffled in two halves.
    pub(crate) fn shfl(&self, intrinsic: &str, v: BasicValueEnum<'c>, lane: IntValue<'c>) -> Res<BasicValueEnum<'c>> {
        let i32t = self.ctx.i32_type();
        let ty = v.get_type();
        let bits = match ty {
            inkwell::types::BasicTypeEnum::FloatType(f) => {
                let it = match f.get_bit_width() {
                    16 => self.ctx.i16_type(),
                    32 => self.ctx.i32_type(),
                    64 => self.ctx.i64_type(),
                    w => return Err(format!("shuffle of a {w}-bit float")),
                };
                self.b.build_bit_cast(v, it, "b").ice()?.into_int_value()
            }
            inkwell::types::BasicTypeEnum::IntType(_) => v.into_int_value(),
            _ => return Err(format!("shuffle of a {ty}")),
        };
        let width = bits.get_type().get_bit_width();
        let mut parts = vec![];
        for half in 0..width.div_ceil(32) {
            let p = if width > 32 {
                let s = self.b.build_right_shift(bits, bits.get_type().const_int(32 * half as u64, false), false, "hi").ice()?;
                self.b.build_int_truncate(s, i32t, "lo").ice()?
            } else if width < 32 {
                self.b.build_int_z_extend(bits, i32t, "z").ice()?
            } else {
                bits
            };
            let r = self.call(intrinsic, &[i32t.const_all_ones().into(), p.into(), lane.into(), self.i32c(31).into()], i32t.into())?;
            parts.push(r.into_int_value());
        }
        let it = bits.get_type();
        let joined = match width {
            w if w < 32 => self.b.build_int_truncate(parts[0], it, "t").ice()?,
            32 => parts[0],
            _ => {
                let lo = self.b.build_int_z_extend(parts[0], it, "lo").ice()?;
                let hi = self.b.build_int_z_extend(parts[1], it, "hi").ice()?;
                let hi = self.b.build_left_shift(hi, it.const_int(32, false), "hs").ice()?;
                self.b.build_or(lo, hi, "j").ice()?
            }
        };
        if ty.is_float_type() {
            return self.b.build_bit_cast(joined, ty, "f").ice();
        }
        Ok(joined.into())
    }
}
