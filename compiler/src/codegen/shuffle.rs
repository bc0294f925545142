//! Layout conversions in registers (`shuffle_convert`): each destination register is one of the
//! thread's own registers or a register of another lane read with `shfl.sync.idx`, as
//! the op's plan (`lir::shuffle::plan`) says; and the 32-bit warp shuffles of any element type.

use super::{Gen, Res};
use crate::ir::Value;
use crate::lir::shuffle;
use crate::mir::{Cmp, ShflMode, Ty, V};
use std::collections::HashMap;

impl Gen<'_> {
    pub(crate) fn shuffle_convert(&self, x: Value, plan: &shuffle::ShufflePlan) -> Res<Vec<V>> {
        let regs = self.regs(x)?;
        let reg = |r: usize| regs.get(r).copied().ok_or_else(|| format!("shuffle_convert reads register {r} of {}", regs.len()));
        // Equal sources (a broadcast reads one value into many registers) are shuffled once.
        let mut done: HashMap<&shuffle::Source, V> = HashMap::new();
        let mut out = Vec::with_capacity(plan.sources.len());
        for s in &plan.sources {
            let v = match s {
                shuffle::Source::Own(r) => reg(*r)?,
                shuffle::Source::Shuffle { reg: r, lane } => match done.get(s) {
                    Some(v) => *v,
                    None => {
                        let l = self.lane_of(lane)?;
                        let v = self.shfl(ShflMode::Idx, reg(*r)?, l)?;
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
                        let mut v: Option<V> = None;
                        for (i, &r) in rs.iter().enumerate() {
                            let x = self.shfl(ShflMode::Idx, reg(r)?, l)?;
                            v = Some(match v {
                                None => x,
                                Some(acc) => {
                                    let hit = self.icmp(Cmp::Eq, want, self.i32c(i as i64))?;
                                    self.b.select(hit, x, acc)
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
    fn lane_of(&self, m: &shuffle::LaneMap) -> Res<V> {
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

    /// A full-warp 32-bit shuffle (`mode` is `idx` or `bfly`) of a value of any type: narrower
    /// values are widened, 64-bit ones shuffled in two halves.
    pub(crate) fn shfl(&self, mode: ShflMode, v: V, lane: V) -> Res<V> {
        if v.ty == Ty::Pred {
            let w = self.shfl(mode, self.b.int_cast(v, Ty::I32, false), lane)?;
            return Ok(self.b.icmp(Cmp::Ne, w, V::int(Ty::I32, 0)));
        }
        let ty = v.ty;
        let width = ty.class_bits();
        let bits = v.retype(Ty::int_of_bits(width));
        let parts: Vec<V> = match width {
            64 => self.b.unpack(bits, 2, Ty::I32),
            32 => vec![bits],
            _ => vec![self.b.int_cast(bits, Ty::I32, false)],
        };
        let lane = self.b.materialize(lane);
        let mut out = vec![];
        for p in parts {
            let p = self.b.materialize(p);
            out.push(self.b.shfl(mode, p, lane, 31));
        }
        let joined = match width {
            64 => self.b.pack(&out, Ty::I64),
            32 => out[0],
            _ => self.b.int_cast(out[0], Ty::I16, false),
        };
        Ok(joined.retype(ty))
    }
}
