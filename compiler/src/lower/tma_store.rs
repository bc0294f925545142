//! Epilogue stores through the copy engine (sm_90a): a window `store` of a tile in an MMA layout
//! goes through shared memory and leaves it as bulk tensor stores (`tma_store`).
//!
//! Why: stored from registers, an MMA-layout tile is one 4-byte store per register pair per
//! thread, each checked against the tensor's edges (the load/store unit throttles, and an edge
//! path per chunk is most of a GEMM's code). Staged in shared memory in the copy engine's
//! swizzled layout, it is a few conflict-free shared stores per thread and one bulk store per box
//! from one thread; the copy engine drops the elements outside the tensor, so edge tiles need no
//! masks.
//!
//! A store qualifies when its tile is 2-D, in an `Mma` layout, of the tensor's 16-bit dtype, in
//! a window that is one tensor-map box (or one per 128-byte column block, `tensor_map_of`), the
//! tensor is a parameter that no other op of the kernel reads or writes (the bulk store is
//! ordered with nothing else; `tma_store` itself orders a loop's successive stores). At the
//! kernel's top level the staging buffer is the pipeline buffers' region when the store comes
//! after every `dot` (the buffers are dead then: the loops waited for their copies) and it fits
//! there; else, and inside loops (a persistent kernel's epilogue: the next tile's copies may be in
//! flight in the buffers), the scratch region, if the kernel still fits in shared memory.
//! Otherwise the store stays as it is.
//!
//! Emitted: `async_wait 0` (in the buffers' region: no copy into them in flight), `barrier`
//! (every warp is done with the buffer), `local_store` swizzled, `barrier` (whose async-proxy
//! fence makes the shared stores visible to the copy engine), `tma_store`, `barrier` (the buffer
//! is free again).

use super::Cx;
use crate::diag::{Diagnostic, Span};
use crate::dtype::DType;
use crate::ir::{Block, Op, Value};
use crate::lir::{self, Layout};
use crate::tir::{AtomicOp, BinaryOp, Lit, OpKind};

/// Where a qualifying store stages its tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Staging {
    /// The scratch region at offset 0, shared with every other scratch user.
    Scratch,
    /// The pipeline buffers, dead after the kernel's last `dot` (patched by `patch_pipeline`).
    DeadBuffers,
    /// A buffer of its own after the pipeline buffers (patched likewise), for a store inside a
    /// loop when the scratch region has no other user (so the bytes are the same).
    Own,
}

/// Where a qualifying store stages its tile.
pub(super) struct TmaStorePlan {
    map: crate::abi::TensorMap,
    bytes: u32,
    staging: Staging,
    /// For a window reduction (`atomic.add` at a window's indices): its offsets (tile-IR
    /// scalars; `None` for 0) and its op. A store's offsets are its operands.
    reduce: Option<(Vec<Option<Value>>, AtomicOp)>,
}

impl Cx<'_> {
    /// Whether store `op` (in the tile-IR block being lowered), or an `atomic.add` of f32 at a
    /// window's indices (what `t.store_add(offsets, x)` builds), goes through the copy engine.
    pub(super) fn tma_store_plan(&self, op: Op) -> Option<TmaStorePlan> {
        if self.target != crate::Target::Sm90a {
            return None;
        }
        // At the top level (once per program) the pipeline's buffers may hold the staging tile;
        // inside a loop (a persistent kernel's epilogue) the next copies may be in flight there.
        let top = self.loops_open == 0 && self.current_src_block == self.src.entry;
        let d = self.src.op(op);
        let (t, x, reduce) = match d.kind {
            OpKind::Store => (d.operands[0], *d.operands.last()?, None),
            OpKind::Atomic(_) => {
                let r = self.window_reduction(op)?;
                (d.operands[0], d.operands[d.operands.len() - 2], Some(r))
            }
            _ => return None,
        };
        let xt = self.src.ty(x);
        let shape = xt.shape();
        if shape.len() != 2 || d.operands.len() != 4 && reduce.is_none() || !matches!(self.layouts.get(&x), Some(Layout::Mma { .. })) {
            return None;
        }
        let (param, _) = self.param_root(t)?;
        let crate::tir::ParamKind::Tensor { dtype, .. } = &self.params.get(param)?.kind else { return None };
        if *dtype != xt.dtype() || !matches!(dtype, DType::BF16 | DType::F16) && reduce.is_none() {
            return None;
        }
        let map = self.tensor_map_of(t, shape, true)?;
        if self.param_touched_elsewhere(param, op) {
            return None;
        }
        let bytes = u32::try_from(shape.iter().product::<i64>() * dtype.size() as i64).ok()?;
        // The buffers are dead once no `dot` (nor a loop or branch, which may hold one) follows.
        let ops = &self.src.block(self.src.entry).ops;
        let dead_buffers = top
            && ops.iter().position(|&o| o == op).is_some_and(|at| {
                !ops[at + 1..].iter().any(|&o| matches!(self.src.op(o).kind, OpKind::Dot | OpKind::For | OpKind::While | OpKind::If))
            });
        if dead_buffers && self.pipe_bytes >= bytes {
            return Some(TmaStorePlan { map, bytes, staging: Staging::DeadBuffers, reduce });
        }
        let kib = |b: u32| u64::from(b.div_ceil(1024)) * 1024;
        let rest = u64::from(self.pipe_bytes) + u64::from(self.mbar_bytes) + 8;
        let need = kib(self.smem.max(bytes)) + rest;
        let max = u64::from(super::max_shared_bytes(self.target));
        if need > max {
            return None;
        }
        // In a loop, a buffer of its own spares the barriers that hand the scratch region from
        // one user to the next, when it costs no shared memory: when no other op has used the
        // scratch region so far. (Where it cost 8 KiB, the fused attention backward at D 64 ran
        // 2-3% slower on an H100 than with the shared region: less L1 beside the same blocks.)
        let own = kib(self.smem) + kib(self.pipe_bytes) + kib(bytes) + u64::from(self.mbar_bytes) + 8;
        let staging = if !top && own <= need { Staging::Own } else { Staging::Scratch };
        Some(TmaStorePlan { map, bytes, staging, reduce })
    }

    /// For an `atomic.add` (sm_90a) of a 2-D f32 tile in an `#mma` layout with no mask, at the
    /// indices of a window (what `t.store_add(offsets, x)` builds): the window's offsets (tile-IR
    /// scalars; `None` for 0) and the op, which the copy engine can do as bulk reductions. Only
    /// the op's own shape is looked at (not the shared memory left): the index tiles of such an
    /// op are left unlowered (`find_remat_only`), and rebuilt if the op is lowered per element
    /// after all.
    pub(super) fn window_reduction(&self, op: Op) -> Option<(Vec<Option<Value>>, AtomicOp)> {
        let d = self.src.op(op);
        let (OpKind::Atomic(a @ AtomicOp::Add), crate::Target::Sm90a) = (&d.kind, self.target) else { return None };
        // (t, i0, …, x, mask): the mask all true, each index a window's.
        let [_, idx @ .., x, mask] = d.operands.as_slice() else { return None };
        let xt = self.src.ty(*x);
        let shape = xt.shape();
        if idx.len() != 2 || shape.len() != 2 || xt.dtype() != DType::F32 || !self.is_true(*mask) {
            return None;
        }
        if !matches!(self.layouts.get(x), Some(Layout::Mma { .. })) {
            return None;
        }
        let offs = idx.iter().enumerate().map(|(axis, &i)| self.window_offset(i, axis, shape)).collect::<Option<Vec<_>>>()?;
        Some((offs, *a))
    }

    /// Whether tile-IR value `v` is the constant `true`.
    fn is_true(&self, v: Value) -> bool {
        matches!(self.def(v).map(|d| &d.kind), Some(OpKind::Const(Lit::Bool(true))))
    }

    /// The offset `o` when index tile `idx` of a `shape` tile is `o + arange(n)` laid along
    /// `axis` (then broadcast): `Some(Some(o))`, or `Some(None)` for a bare `arange` (offset 0);
    /// `None` for any other index.
    fn window_offset(&self, idx: Value, axis: usize, shape: &[i64]) -> Option<Option<Value>> {
        let n = *shape.get(axis)?;
        let along = |v: Value| {
            let s = self.src.ty(v).shape();
            s.len() == shape.len() && s.iter().enumerate().all(|(i, &e)| e == if i == axis { n } else { 1 })
        };
        let mut v = idx;
        if let Some(d) = self.def(v)
            && d.kind == OpKind::Broadcast
        {
            v = d.operands[0];
        }
        if !along(v) {
            return None;
        }
        // An `arange(n)` reshaped (or expanded) to lie along `axis`.
        let is_arange = |mut v: Value| loop {
            match self.def(v).map(|d| (&d.kind, d.operands.first().copied())) {
                Some((OpKind::Reshape | OpKind::ExpandDims(_), Some(o))) => v = o,
                Some((OpKind::Arange(m), _)) => return *m == n,
                _ => return false,
            }
        };
        if is_arange(v) {
            return Some(None);
        }
        let d = self.def(v)?;
        if d.kind != OpKind::Binary(BinaryOp::Add) {
            return None;
        }
        let (a, b) = (d.operands[0], d.operands[1]);
        let scalar = |s: Value| match self.def(s) {
            Some(d) if d.kind == OpKind::Splat && self.src.ty(d.operands[0]).shape().is_empty() => Some(d.operands[0]),
            _ => None,
        };
        match (is_arange(a), is_arange(b)) {
            (true, false) => scalar(b).map(Some),
            (false, true) => scalar(a).map(Some),
            _ => None,
        }
    }

    /// Whether any op other than `op` (and views) reads or writes parameter `param`; when `op`
    /// is a window reduction, other window reductions do not count (reductions commute).
    fn param_touched_elsewhere(&self, param: usize, op: Op) -> bool {
        let reduction = self.window_reduction(op).is_some();
        let mut touched = false;
        self.src.walk(self.src.entry, &mut |o| {
            let d = self.src.op(o);
            if o == op || d.kind == OpKind::View || reduction && self.window_reduction(o).is_some() {
                return;
            }
            touched |= d
                .operands
                .iter()
                .any(|&v| matches!(self.src.ty(v), crate::tir::Type::Tensor { .. }) && self.param_root(v).is_some_and(|(p, _)| p == param));
        });
        touched
    }

    /// Lowers store `op` as planned: the tile staged in shared memory, then bulk tensor stores.
    pub(super) fn lower_tma_store(
        &mut self,
        op: Op,
        dst: Block,
        plan: TmaStorePlan,
        span: Span,
    ) -> Result<Vec<crate::ir::Value>, Diagnostic> {
        let d = self.src.op(op).clone();
        let n = d.operands.len();
        let x = if plan.reduce.is_some() { d.operands[n - 2] } else { d.operands[n - 1] };
        let layout = self.layouts.get(&x).copied();
        let xv = self.operand(x, layout, dst, span)?;
        let mut window = vec![self.v(d.operands[0])?];
        match &plan.reduce {
            Some((offs, _)) => {
                for &o in offs {
                    window.push(match o {
                        Some(o) => self.v(o)?,
                        None => self.i32_const(dst, 0, span),
                    });
                }
            }
            None => {
                for &o in &d.operands[1..n - 1] {
                    window.push(self.v(o)?);
                }
            }
        }
        let map = self.register_map(plan.map);
        let offset = match plan.staging {
            Staging::Scratch => {
                self.smem = self.smem.max(plan.bytes);
                0
            }
            Staging::DeadBuffers => 0,
            Staging::Own => {
                let at = self.pipe_bytes.div_ceil(1024) * 1024;
                self.pipe_bytes = at + plan.bytes.div_ceil(1024) * 1024;
                at
            }
        };
        let shape = self.src.ty(x).shape().to_vec();
        if plan.staging == Staging::DeadBuffers {
            self.emit(dst, lir::OpKind::AsyncWait { pending: 0 }, vec![], vec![], span);
        }
        // Every warp is done with the buffer (unless a barrier was the last thing emitted: a
        // `dot` that read the scratch region ends with one). An own buffer's one other user is
        // this store's previous iteration, whose read wait and a barrier after it come before
        // (`defer_bulk_wait` places them).
        if plan.staging != Staging::Own && self.dst.block(dst).ops.last().is_none_or(|&o| self.dst.op(o).kind != lir::OpKind::Barrier) {
            self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
        }
        let st = self.dst.append(dst, lir::OpKind::LocalStore { offset, swizzled: true }, vec![xv], vec![], vec![], span);
        self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
        let es = self.src.ty(x).dtype().size() as i64;
        let bytes = u32::try_from(shape.iter().product::<i64>() * es)
            .map_err(|_| Diagnostic::ice("lower", "a bulk store's staged tile does not fit shared memory"))?;
        let tma = self.dst.append(
            dst,
            lir::OpKind::TmaStore { offset, shape, map, reduce: plan.reduce.as_ref().map(|r| r.1) },
            window,
            vec![],
            vec![],
            span,
        );
        let wait = self.dst.append(dst, lir::OpKind::BulkWaitRead { offset, bytes }, vec![], vec![], vec![], span);
        self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
        if plan.staging != Staging::Scratch {
            self.pipe_patch.extend([st, tma, wait]);
        }
        Ok(vec![])
    }
}
