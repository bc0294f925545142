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
use crate::ir::{Block, Op};
use crate::lir::{self, Layout};
use crate::tir::OpKind;

/// Where a qualifying store stages its tile.
pub(super) struct TmaStorePlan {
    map: crate::abi::TensorMap,
    bytes: u32,
    /// In the pipeline buffers' region (patched by `patch_pipeline`), else at scratch offset 0.
    in_pipeline: bool,
}

impl Cx<'_> {
    /// Whether store `op` (in the tile-IR block being lowered) goes through the copy engine.
    pub(super) fn tma_store_plan(&self, op: Op) -> Option<TmaStorePlan> {
        if self.target != crate::Target::Sm90a {
            return None;
        }
        // At the top level (once per program) the pipeline's buffers may hold the staging tile;
        // inside a loop (a persistent kernel's epilogue) the next copies may be in flight there.
        let top = self.loops_open == 0 && self.current_src_block == self.src.entry;
        let d = self.src.op(op);
        let (&t, rest) = d.operands.split_first()?;
        let (&x, offs) = rest.split_last()?;
        let xt = self.src.ty(x);
        let shape = xt.shape();
        if shape.len() != 2 || offs.len() != 2 || !matches!(self.layouts.get(&x), Some(Layout::Mma { .. })) {
            return None;
        }
        let (param, _) = self.param_root(t)?;
        let crate::tir::ParamKind::Tensor { dtype, .. } = &self.params.get(param)?.kind else { return None };
        if *dtype != xt.dtype() || !matches!(dtype, DType::BF16 | DType::F16) {
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
            return Some(TmaStorePlan { map, bytes, in_pipeline: true });
        }
        let need = u64::from(self.smem.max(bytes).div_ceil(1024) * 1024) + u64::from(self.pipe_bytes) + u64::from(self.mbar_bytes) + 8;
        (need <= u64::from(super::max_shared_bytes(self.target))).then_some(TmaStorePlan { map, bytes, in_pipeline: false })
    }

    /// Whether any op other than `op` (and views) reads or writes parameter `param`.
    fn param_touched_elsewhere(&self, param: usize, op: Op) -> bool {
        let mut touched = false;
        self.src.walk(self.src.entry, &mut |o| {
            let d = self.src.op(o);
            if o == op || d.kind == OpKind::View {
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
        let x = d.operands[n - 1];
        let layout = self.layouts.get(&x).copied();
        let xv = self.operand(x, layout, dst, span)?;
        let mut window = vec![];
        for &o in &d.operands[..n - 1] {
            window.push(self.v(o)?);
        }
        let map = self.register_map(plan.map);
        if !plan.in_pipeline {
            self.smem = self.smem.max(plan.bytes);
        }
        let shape = self.src.ty(x).shape().to_vec();
        if plan.in_pipeline {
            self.emit(dst, lir::OpKind::AsyncWait { pending: 0 }, vec![], vec![], span);
        }
        self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
        let st = self.dst.append(dst, lir::OpKind::LocalStore { offset: 0, swizzled: true }, vec![xv], vec![], vec![], span);
        self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
        let tma = self.dst.append(dst, lir::OpKind::TmaStore { offset: 0, shape, map }, window, vec![], vec![], span);
        self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
        if plan.in_pipeline {
            self.pipe_patch.extend([st, tma]);
        }
        Ok(vec![])
    }
}
