//! Per-thread code of the ops that walk an axis of a tile staged in shared memory: inclusive
//! scans (`local_scan`: `cumsum`, `cummax`) and index reductions (`local_argmax`/`argmin`).
//!
//! Each register's element finds the start of its line along the axis and loops over the whole
//! line (a counted loop, the same trip count for every thread): a scan accumulates the elements
//! up to its own position (`j <= pos`, by a select, so that there is no divergence); an index
//! reduction keeps the best value and its index, replacing them only on a strictly better,
//! non-NaN element, so ties keep the first index and NaNs are skipped (the interpreter's rule).
//! Sums of f16/bf16 accumulate in f32, as reductions do.

use super::{Cv, Gen, Res, math, row_major};
use crate::dtype::DType;
use crate::ir::Block;
use crate::lir;
use crate::mir::{Cmp, FCmp, IntOp, V};
use crate::tir::{ArgOp, BinaryOp, Lit, ReduceOp, ScanOp};

impl Gen<'_> {
    /// For each register of `t`: the element index of the start of its line along `axis` in the
    /// row-major `src_shape` tile, and (for scans, where `t` has `src_shape`) its position on it.
    fn line_starts(&self, t: &lir::Type, src_shape: &[i64], axis: usize, scan: bool) -> Res<Vec<(V, Option<V>)>> {
        let strides = row_major(src_shape);
        let mut out = vec![];
        for r in 0..self.nregs(t) {
            let c = if t.shape().is_empty() { vec![] } else { self.coords(t, r)? };
            let mut base = self.i32c(0);
            let mut ci = 0;
            let mut pos = None;
            for (i, &s) in strides.iter().enumerate() {
                if i == axis && scan {
                    pos = c.get(i).copied();
                    ci += 1;
                    continue;
                }
                if i == axis {
                    continue;
                }
                let x = *c.get(ci).ok_or("coordinate count does not match the shape")?;
                base = self.add(base, self.mulc(x, s)?)?;
                ci += 1;
            }
            out.push((base, pos));
        }
        Ok(out)
    }

    /// Element `j` of the line starting at element `base` (elements `stride` apart) of the staged
    /// tile at `offset`.
    fn line_elem(&self, offset: u32, base: V, j: V, stride: i64, dtype: DType) -> Res<V> {
        let idx = self.b.int_bin(IntOp::Add, base, self.b.int_bin(IntOp::Mul, j, self.i32c(stride)));
        self.staged(offset, idx, dtype)
    }

    /// Element `idx` of the staged tile (element type `dtype`) at `offset`.
    fn staged(&self, offset: u32, idx: V, dtype: DType) -> Res<V> {
        let off = self.addc(self.mulc(idx, dtype.size() as i64)?, offset as i64)?;
        let p = self.smem_ptr(off)?;
        self.load_mem(p, dtype)
    }

    pub(crate) fn local_scan(
        &mut self,
        t: lir::Type,
        offset: u32,
        op: ScanOp,
        axis: usize,
        src_shape: &[i64],
        dtype: DType,
    ) -> Res<Vec<Cv>> {
        let lines = self.line_starts(&t, src_shape, axis, true)?;
        let stride = row_major(src_shape)[axis];
        let n = src_shape[axis];
        let acc_d = if matches!(dtype, DType::F16 | DType::BF16) && matches!(op, ScanOp::Sum | ScanOp::Prod) { DType::F32 } else { dtype };
        // `cummax`/`cummin` of floats start from NaN, which maxNum/minNum drop: an all-NaN prefix
        // stays NaN. Sums start from -0.0, the additive identity (a run of -0.0s stays -0.0).
        let init = match (op, dtype.is_float()) {
            (ScanOp::Sum, true) => math::constant(self, Lit::Float(-0.0), acc_d)?,
            (ScanOp::Sum, false) => math::constant(self, Lit::Int(0), acc_d)?,
            (ScanOp::Prod, true) => math::constant(self, Lit::Float(1.0), acc_d)?,
            (ScanOp::Prod, false) => math::constant(self, Lit::Int(1), acc_d)?,
            (ScanOp::Max | ScanOp::Min, true) => math::constant(self, Lit::Float(f64::NAN), acc_d)?,
            (ScanOp::Max, false) => math::reduce_identity(self, ReduceOp::Max, acc_d)?,
            (ScanOp::Min, false) => math::reduce_identity(self, ReduceOp::Min, acc_d)?,
        };
        let bop = match op {
            ScanOp::Sum => BinaryOp::Add,
            ScanOp::Prod => BinaryOp::Mul,
            ScanOp::Max => BinaryOp::Max,
            ScanOp::Min => BinaryOp::Min,
        };
        let res = self.counted_loop(n, vec![init; lines.len()], &mut |g, j, accs| {
            let mut next = vec![];
            for (i, &(base, pos)) in lines.iter().enumerate() {
                let v = g.line_elem(offset, base, j, stride, dtype)?;
                let v = math::convert(g, v, dtype, acc_d)?;
                let upd = math::binary(g, bop, accs[i], v, acc_d)?;
                let pos = pos.ok_or("a scan element without a position")?;
                let take = g.b.icmp(Cmp::Sle, j, pos);
                next.push(g.b.select(take, upd, accs[i]));
            }
            Ok(next)
        })?;
        let out = res.into_iter().map(|v| math::convert(self, v, acc_d, dtype)).collect::<Res<Vec<_>>>()?;
        Ok(vec![Cv::Regs(out)])
    }

    /// `local_scan_fn`: each register's running value starts as its line's first element and
    /// becomes `f(acc, x_j)` (the combine function `f`, generated for every register and step)
    /// for `j` up to its position, in order: the interpreter's left fold.
    pub(crate) fn local_scan_fn(
        &mut self,
        t: lir::Type,
        offset: u32,
        f: Block,
        axis: usize,
        src_shape: &[i64],
        dtype: DType,
    ) -> Res<Vec<Cv>> {
        let lines = self.line_starts(&t, src_shape, axis, true)?;
        let stride = row_major(src_shape)[axis];
        let n = src_shape[axis];
        let [acc_arg, x_arg] = self.k.body.block(f).args[..] else { return Err("the combine function takes two arguments".into()) };
        let firsts = lines.iter().map(|&(base, _)| self.staged(offset, base, dtype)).collect::<Res<Vec<_>>>()?;
        if n <= 1 {
            return Ok(vec![Cv::Regs(firsts)]);
        }
        let res = self.counted_loop(n - 1, firsts, &mut |g, j0, accs| {
            let j = g.b.int_bin(IntOp::Add, j0, g.i32c(1));
            let mut next = vec![];
            for (i, &(base, pos)) in lines.iter().enumerate() {
                let v = g.line_elem(offset, base, j, stride, dtype)?;
                g.vals.insert(acc_arg, Cv::Regs(vec![accs[i]]));
                g.vals.insert(x_arg, Cv::Regs(vec![v]));
                let y = Self::flatten(&g.region(f)?)?;
                let [upd] = y[..] else { return Err("the combine function yields one scalar".into()) };
                let pos = pos.ok_or("a scan element without a position")?;
                let take = g.b.icmp(Cmp::Sle, j, pos);
                next.push(g.b.select(take, upd, accs[i]));
            }
            Ok(next)
        })?;
        Ok(vec![Cv::Regs(res)])
    }

    pub(crate) fn local_arg_reduce(
        &mut self,
        t: lir::Type,
        offset: u32,
        op: ArgOp,
        axis: usize,
        src_shape: &[i64],
        dtype: DType,
    ) -> Res<Vec<Cv>> {
        let lines = self.line_starts(&t, src_shape, axis, false)?;
        let stride = row_major(src_shape)[axis];
        let n = src_shape[axis];
        let cmp_d = if matches!(dtype, DType::F16 | DType::BF16) { DType::F32 } else { dtype };
        // The best value so far starts as NaN (floats: any number beats it) or the type's minimum
        // (maximum) so that only a strictly better element moves the index off 0.
        let start = match (dtype.is_float(), op) {
            (true, _) => math::constant(self, Lit::Float(f64::NAN), cmp_d)?,
            (false, ArgOp::Max) => math::reduce_identity(self, ReduceOp::Max, cmp_d)?,
            (false, ArgOp::Min) => math::reduce_identity(self, ReduceOp::Min, cmp_d)?,
        };
        let mut inits = vec![];
        for _ in &lines {
            inits.push(start);
            inits.push(self.i32c(0));
        }
        let res = self.counted_loop(n, inits, &mut |g, j, accs| {
            let mut next = vec![];
            for (i, &(base, _)) in lines.iter().enumerate() {
                let (best, best_i) = (accs[2 * i], accs[2 * i + 1]);
                let v = g.line_elem(offset, base, j, stride, dtype)?;
                let v = math::convert(g, v, dtype, cmp_d)?;
                let better = if cmp_d.is_float() {
                    let (x, y) = (v, best);
                    let pred = if op == ArgOp::Max { FCmp::Ogt } else { FCmp::Olt };
                    let gt = g.b.fcmp(pred, x, y);
                    let best_nan = g.b.fcmp(FCmp::Uno, y, y);
                    let v_num = g.b.fcmp(FCmp::Ord, x, x);
                    let either = g.b.int_bin(IntOp::Or, gt, best_nan);
                    g.b.int_bin(IntOp::And, v_num, either)
                } else {
                    let pred = match (op, cmp_d.is_signed()) {
                        (ArgOp::Max, true) => Cmp::Sgt,
                        (ArgOp::Max, false) => Cmp::Ugt,
                        (ArgOp::Min, true) => Cmp::Slt,
                        (ArgOp::Min, false) => Cmp::Ult,
                    };
                    g.b.icmp(pred, v, best)
                };
                next.push(g.b.select(better, v, best));
                next.push(g.b.select(better, j, best_i));
            }
            Ok(next)
        })?;
        let out = res.into_iter().skip(1).step_by(2).collect();
        Ok(vec![Cv::Regs(out)])
    }
}
