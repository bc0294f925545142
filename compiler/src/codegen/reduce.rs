//! Reductions of blocked tiles along their last axis with warp shuffles (`ShuffleReduce`):
//! registers first, then butterfly shuffles among the lanes that share a row, then one value per
//! warp through shared memory. See `lir::OpKind::ShuffleReduce`.

use super::{Gen, Res};
use crate::dtype::DType;
use crate::ir::Value;
use crate::lir::{self, Layout};
use crate::mir::{Cmp, V};
use crate::tir::{BinaryOp, ReduceOp};

impl Gen<'_> {
    pub(crate) fn shuffle_reduce(&mut self, x: Value, rt: &lir::Type, op: ReduceOp, offset: u32) -> Res<Vec<V>> {
        let t = self.k.body.ty(x).clone();
        let Some(Layout::Blocked { vec }) = t.layout() else { return Err("shuffle_reduce of a tile not in a blocked layout".into()) };
        let regs = self.regs(x)?;
        let d = t.dtype();
        let acc_d = if matches!(d, DType::F16 | DType::BF16) { DType::F32 } else { d };
        let bop = match op {
            ReduceOp::Sum => BinaryOp::Add,
            ReduceOp::Max => BinaryOp::Max,
            ReduceOp::Min => BinaryOp::Min,
        };
        let threads = self.k.threads as i64;
        let vec = vec as i64;
        let c = *t.shape().last().ok_or("shuffle_reduce of a scalar")?;
        let cpr = c / vec;
        let group = cpr.min(threads);
        let lanes = group.min(32);
        let nw = (group / 32).max(1);
        let chunks = regs.len() as i64 / vec;
        // A thread's chunks of one row are consecutive: `per_row` of them when a row spans all
        // threads several times over, otherwise one.
        let per_row = if cpr >= threads { cpr / threads } else { 1 };
        let mut partials = vec![];
        for g in 0..(chunks / per_row).max(1) {
            let mut acc: Option<V> = None;
            for j in g * per_row..(g + 1) * per_row {
                for e in 0..vec {
                    let v = super::math::convert(self, regs[(j * vec + e) as usize], d, acc_d)?;
                    acc = Some(match acc {
                        None => v,
                        Some(a) => super::math::binary(self, bop, a, v, acc_d)?,
                    });
                }
            }
            let mut v = acc.ok_or("empty reduction")?;
            let mut m = 1;
            while m < lanes {
                let o = self.shfl_xor(v, m)?;
                v = super::math::binary(self, bop, v, o, acc_d)?;
                m *= 2;
            }
            partials.push((g * per_row, v));
        }
        // One writer per (row, warp): the first lane of each group of `lanes`.
        let writer = self.icmp(Cmp::Eq, self.and(self.tid, self.i32c(lanes - 1))?, self.i32c(0))?;
        let widx = if nw > 1 { self.uremc(self.lshr(self.tid, 5)?, nw)? } else { self.i32c(0) };
        for (j0, v) in partials {
            let row = self.udivc(self.addc(self.tid, j0 * threads)?, cpr)?;
            let slot = self.add(self.mulc(row, nw)?, widx)?;
            let off = self.addc(self.mulc(slot, 4)?, offset as i64)?;
            let p = self.smem_ptr(off)?;
            self.guarded(writer, &mut |g| g.store_mem(p, v, acc_d).map(|_| None), None)?;
        }
        self.barrier();
        let mut out = vec![];
        for i in 0..self.nregs(rt) {
            let row = self.linear(rt, i)?;
            let mut acc: Option<V> = None;
            for k in 0..nw {
                let slot = self.addc(self.mulc(row, nw)?, k)?;
                let off = self.addc(self.mulc(slot, 4)?, offset as i64)?;
                let v = self.load_mem(self.smem_ptr(off)?, acc_d)?;
                acc = Some(match acc {
                    None => v,
                    Some(a) => super::math::binary(self, bop, a, v, acc_d)?,
                });
            }
            out.push(super::math::convert(self, acc.ok_or("no partial")?, acc_d, d)?);
        }
        self.barrier();
        Ok(out)
    }
}
