//! Tensor-core `dot`s fed by window loads: the loads become asynchronous copies straight into
//! swizzled shared memory (no register round trip), and inside a `for` loop they are software
//! pipelined over `stages` buffers.
//!
//! Algorithm, for a loop `for iv in (lo..hi).step_by(step) { … dot(x.load(o(iv)), …) … }`:
//! 1. a load is fused when its only users are MMA `dot`s in the same block (directly or through
//!    a `trans` or a merging reshape), its pad is 0 and its tile is 2-D with rows of whole 16-byte
//!    chunks; the first of those `dot`s copies it and the others read its buffer (`Staged`);
//! 2. its offsets (and tensor view) must be computable at any `iv`: the ops they depend on inside
//!    the loop body are pure, and are cloned with `iv` replaced (`clone_at`);
//! 3. before the loop (the prologue), copies for iterations `0 .. stages-1` go into buffers
//!    `0 .. stages-1`, one commit group each; iteration `i` waits until at most `stages - 2`
//!    groups are in flight (so its own buffer has landed) and synchronises the block once: now
//!    every thread has also finished iteration `i - 1`'s MMAs, so it issues the copies of
//!    iteration `i + stages - 1` (out of range at the end, so they only zero-fill) into buffer
//!    `(i + stages - 1) % stages = (i - 1) % stages`, commits, and runs the MMAs on buffer
//!    `i % stages` while those copies fly. One barrier per iteration; a second one only when the
//!    `dot` also reads the shared scratch region (an operand that is not a fused load).
//!
//! On sm_90a, when every fused load of a pipelined `wgmma` dot reads a kernel parameter (through
//! views) that the kernel never writes, and its window is one tensor-map box (rows of at most
//! 128 bytes, `Cx::tensor_map_for`), the copies are bulk tensor copies (`tma_copy`) instead: thread 0
//! issues them for a stage, arriving on that stage's mbarrier with the bytes to expect
//! (`tma_arrive`), and iteration `i` waits for phase `i / stages` of mbarrier `i % stages`
//! (`tma_wait`) where it waited for its `cp.async` group; copies for iterations past the end are
//! not issued (`valid`), so none is in flight when the loop ends. The `cp.async` path stays
//! beside it: the runtime passes a flag saying whether it could encode the tensor maps (a
//! tensor whose strides the copy engine cannot take is copied as before).
//!
//! The pipeline buffers live after the shared scratch region; their offsets are patched once
//! the scratch size is known (`Cx::patch_pipeline`).

use super::Cx;
use crate::diag::{Diagnostic, Span};
use crate::dtype::DType;
use crate::ir::{Block, Op, Value};
use crate::lir::{self, Layout};
use crate::tir::{Lit, OpKind};
use std::collections::{HashMap, HashSet};

/// Per value, its uses as `(op, operand index)` (`Cx::all_uses`).
pub(super) type Uses = HashMap<Value, Vec<(Op, usize)>>;

/// The loop being lowered, when its body may pipeline its loads.
#[derive(Clone, Debug)]
pub(super) struct LoopCtx {
    /// The tile-IR body block and its induction variable.
    pub body: Block,
    pub iv: Value,
    /// Thread-IR values of the bounds, and the block before the loop (for the prologue).
    pub lo: Value,
    pub hi: Value,
    pub step: Value,
    pub parent: Block,
    /// Inside another loop (its prologue runs more than once).
    pub nested: bool,
}

/// Where a `dot` left the copy of a fused load, for a later `dot` of the same block that reads
/// the same window (`only_feeds_dots`): no second copy and no second wait.
#[derive(Clone, Copy, Debug)]
pub(super) struct Staged {
    /// The thread-IR block of the `dot`s.
    block: Block,
    /// The buffer (relative to the pipeline buffers) and this iteration's stage base in it.
    offset: u32,
    base: Value,
    /// Pipelined: the next iteration's barrier protects the buffer; otherwise a barrier must
    /// follow every `dot` that reads it.
    pipelined: bool,
}

/// Bulk tensor copies of a pipelined dot's operands (sm_90a): per operand, its tensor map.
struct Tma {
    maps: [Option<u32>; 2],
    /// The stages' mbarriers (relative to the pipeline buffers, like the buffers).
    mbar: u32,
    /// Bytes one stage's copies deliver.
    bytes: u32,
}

/// A `dot` operand copied asynchronously from the window load it comes from (`fusable_loads`).
pub(super) struct Fusion {
    pub operand: Value,
    pub load: Value,
    /// Read transposed (`trans` of the load).
    pub trans: bool,
    /// The values between the load and the operand, not lowered.
    pub chain: Vec<Value>,
    /// The load is in the block enclosing the `dot`'s loop: copied once, before it.
    pub invariant: bool,
}

impl Cx<'_> {
    /// Loads of `blk` that can be copied asynchronously into a tensor-core `dot`'s operands: an
    /// operand may be a load, or a reshape of an N-D load that merges its leading dimensions (a
    /// `[WX, WY, D]` window used as `[WX·WY, D]`), and either operand may also be `trans` of
    /// either (`a` only of 16-bit elements): copied as loaded, read transposed by `ldmatrix` or
    /// `wgmma`.
    pub(super) fn fusable_loads(&self, blk: Block) -> Vec<Fusion> {
        let mut out = vec![];
        for &op in &self.src.block(blk).ops {
            let d = self.src.op(op);
            if d.kind != OpKind::Dot || !matches!(self.layouts.get(&d.results[0]), Some(Layout::Mma { .. })) {
                continue;
            }
            // A transposed `a` is read by `ldmatrix.trans` (16-bit elements) or by `wgmma`'s
            // M-major descriptors (16-bit only too).
            let a_16bit = matches!(self.src.ty(d.operands[0]).dtype(), DType::BF16 | DType::F16);
            for (i, &x) in d.operands[..2].iter().enumerate() {
                if let Some((load, chain)) = self.fused_source(x, blk, &[blk]) {
                    out.push(Fusion { operand: x, load, trans: false, chain, invariant: false });
                } else if (i == 1 || a_16bit)
                    && let Some(p) = self.def_in(x, blk)
                    && self.src.op(p).kind == OpKind::Permute(vec![1, 0])
                    && self.uses.get(&x).copied().unwrap_or(0) == 1
                    && let Some((load, mut chain)) = self.fused_source(self.src.op(p).operands[0], blk, &[blk])
                {
                    chain.push(x);
                    out.push(Fusion { operand: x, load, trans: true, chain, invariant: false });
                }
            }
        }
        // On sm_90a, the loop-invariant `a` of a `wgmma` dot in a loop directly inside `blk`
        // (attention's q) is copied once, where it is loaded, straight into shared memory, and
        // read by descriptor in every iteration: it never occupies registers.
        if self.target == crate::Target::Sm90a {
            for &op in &self.src.block(blk).ops {
                let d = self.src.op(op);
                let Some(&body) = d.regions.first().filter(|_| d.kind == OpKind::For) else { continue };
                for &dop in &self.src.block(body).ops {
                    let dd = self.src.op(dop);
                    if dd.kind != OpKind::Dot || !self.invariant_a_wgmma(dop, body) {
                        continue;
                    }
                    // Read only as the `a` of such `dot`s, here and in `blk` (a loop rotated by
                    // `overlap_dots` runs its first iteration's before the loop): another use
                    // (through `trans`, say) would find the load lowered nowhere.
                    let q = dd.operands[0];
                    let readers = [(blk, &self.src.block(blk).ops), (body, &self.src.block(body).ops)]
                        .iter()
                        .flat_map(|(b, ops)| ops.iter().map(move |&o| (*b, o)))
                        .filter(|&(b, o)| {
                            let od = self.src.op(o);
                            od.kind == OpKind::Dot
                                && od.operands[0] == q
                                && od.operands[1..].iter().all(|&x| x != q)
                                && (b == body || self.is_mma_dot(o))
                                && self.invariant_a_wgmma(o, b)
                        })
                        .count();
                    if self.uses.get(&q).copied().unwrap_or(0) == readers
                        && let Some((load, chain)) = self.fused_source(q, blk, &[blk, body])
                    {
                        out.push(Fusion { operand: dd.operands[0], load, trans: false, chain, invariant: true });
                    }
                }
            }
        }
        out
    }

    /// Whether dot `op` of loop body `body` runs as `wgmma` with its `a` read from shared memory.
    fn invariant_a_wgmma(&self, op: Op, body: Block) -> bool {
        let d = self.src.op(op);
        let Some(&layout) = self.layouts.get(&d.results[0]) else { return false };
        let (at, rt) = (self.src.ty(d.operands[0]), self.src.ty(d.results[0]));
        let (Some(&k), Some(&m), Some(&n)) = (at.shape().get(1), rt.shape().first(), rt.shape().get(1)) else { return false };
        // `b` is read transposed when it is `trans` of a load of the body (fused as such).
        let b_trans = self.def_in(d.operands[1], body).is_some_and(|p| self.src.op(p).kind == OpKind::Permute(vec![1, 0]));
        lir::wgmma_fits(m, n, Some(layout), k, at.dtype(), lir::MmaA::KMajor, b_trans, &[])
    }

    /// The op defining `v` if it is in block `blk`.
    fn def_in(&self, v: Value, blk: Block) -> Option<Op> {
        match self.src.values[v.index()].def {
            crate::ir::ValueDef::Result(op, _) if self.src.block(blk).ops.contains(&op) => Some(op),
            _ => None,
        }
    }

    /// A fusable load behind `x` (itself, or a leading-dimension-merging reshape of it).
    fn fused_source(&self, x: Value, blk: Block, users: &[Block]) -> Option<(Value, Vec<Value>)> {
        if self.is_fusable_load(x, blk) && self.only_feeds_dots(x, users) {
            return Some((x, vec![x]));
        }
        let op = self.def_in(x, blk)?;
        let d = self.src.op(op);
        let y = *d.operands.first()?;
        let (ys, xs) = (self.src.ty(y).shape(), self.src.ty(x).shape());
        let merges = d.kind == OpKind::Reshape
            && ys.len() >= 2
            && xs.len() == 2
            && xs[1] == ys[ys.len() - 1]
            && xs[0] == ys[..ys.len() - 1].iter().product::<i64>();
        (merges && self.only_feeds_dots(x, users) && self.uses.get(&y).copied().unwrap_or(0) == 1 && self.is_fusable_load(y, blk))
            .then(|| (y, vec![x, y]))
    }

    /// Whether every use of `v` is an operand of a tensor-core `dot` of `blocks` that
    /// `fusable_loads` fuses: `v` itself, or `trans(v)` used by nothing else. One staged window
    /// then feeds all of them (a backward kernel's `k` in `q · kᵀ` and `ds · k`).
    fn only_feeds_dots(&self, v: Value, blocks: &[Block]) -> bool {
        let is_mma_dot = |op: Op| self.is_mma_dot(op);
        let mut found = 0;
        for (&blk, &op) in blocks.iter().flat_map(|b| self.src.block(*b).ops.iter().map(move |o| (b, o))) {
            let d = self.src.op(op);
            for (i, &o) in d.operands.iter().enumerate() {
                if o != v {
                    continue;
                }
                let fused = match &d.kind {
                    OpKind::Dot => i < 2 && is_mma_dot(op),
                    OpKind::Permute(p) if *p == [1, 0] => {
                        let t = d.results[0];
                        self.uses.get(&t).copied().unwrap_or(0) == 1
                            && self.src.block(blk).ops.iter().any(|&u| {
                                let ud = self.src.op(u);
                                is_mma_dot(u) && ud.operands[..2].contains(&t) && ud.operands[2..].iter().all(|&x| x != t)
                            })
                    }
                    _ => false,
                };
                if !fused {
                    return false;
                }
                found += 1;
            }
        }
        found >= 1 && found == self.uses.get(&v).copied().unwrap_or(0)
    }

    fn is_fusable_load(&self, v: Value, blk: Block) -> bool {
        let crate::ir::ValueDef::Result(op, _) = self.src.values[v.index()].def else { return false };
        let d = self.src.op(op);
        if d.kind != OpKind::Load || !self.src.block(blk).ops.contains(&op) {
            return false;
        }
        let t = self.src.ty(v);
        let pad_zero = match self.src.values[d.operands[d.operands.len() - 1].index()].def {
            crate::ir::ValueDef::Result(p, _) => matches!(self.src.op(p).kind, OpKind::Const(Lit::Int(0)) | OpKind::Const(Lit::Float(0.0))),
            crate::ir::ValueDef::Arg(..) => false,
        };
        let chunks_ok = t.shape().len() >= 2 && (t.shape()[t.shape().len() - 1] * t.dtype().size() as i64) % 16 == 0;
        pad_zero && chunks_ok && matches!(t.dtype(), DType::BF16 | DType::F16)
    }

    /// The thread-IR value of tile-IR `v` with the loop's induction variable replaced by `at`,
    /// emitting copies of the pure ops in between into `into`; `None` if `v` depends on
    /// something that cannot be recomputed (a load, a loop-carried value).
    pub(super) fn clone_at(&mut self, v: Value, lc: &LoopCtx, at: Value, into: Block, memo: &mut HashMap<Value, Value>) -> Option<Value> {
        if v == lc.iv {
            return Some(at);
        }
        if let Some(&c) = memo.get(&v) {
            return Some(c);
        }
        let op = match self.src.values[v.index()].def {
            crate::ir::ValueDef::Result(op, _) if self.src.block(lc.body).ops.contains(&op) => op,
            crate::ir::ValueDef::Arg(..) if self.src.block(lc.body).args.contains(&v) => return None,
            _ => return self.map.get(&v).copied(),
        };
        let d = self.src.op(op);
        let pure = d.kind.is_pure();
        // Only scalars (and tensor views): tiles would need layouts and conversions.
        if !pure || !(self.src.ty(v).is_scalar() || self.src.ty(v).is_tensor()) {
            return None;
        }
        let kind = d.kind.clone();
        let mut ops = vec![];
        for &o in &d.operands.clone() {
            ops.push(self.clone_at(o, lc, at, into, memo)?);
        }
        let ty = self.vty(v);
        let r = self.emit(into, lir::OpKind::Tir(kind), ops, vec![ty], self.src.span(op))[0];
        memo.insert(v, r);
        Some(r)
    }

    pub(super) fn i32_const(&mut self, blk: Block, v: i64, span: Span) -> Value {
        let ty = self.ty(&crate::tir::Type::scalar(DType::I32));
        self.emit(blk, lir::OpKind::Tir(OpKind::Const(Lit::Int(v))), vec![], vec![ty], span)[0]
    }

    pub(super) fn i32_op(&mut self, blk: Block, op: crate::tir::BinaryOp, a: Value, b: Value, span: Span) -> Value {
        let ty = self.ty(&crate::tir::Type::scalar(DType::I32));
        self.emit(blk, lir::OpKind::Tir(OpKind::Binary(op)), vec![a, b], vec![ty], span)[0]
    }

    /// The thread-IR values of load `load`'s tensor and window offsets: evaluated at iteration
    /// `at` of loop `lc` (copies of the pure ops between emitted into `into`), or as they are.
    fn window_operands(&mut self, load: Value, lc_at: Option<(&LoopCtx, Value)>, into: Block) -> Option<Vec<Value>> {
        let crate::ir::ValueDef::Result(op, _) = self.src.values[load.index()].def else { return None };
        let d = self.src.op(op).clone();
        let mut memo = HashMap::new();
        let mut ops = vec![];
        for &o in &d.operands[..d.operands.len() - 1] {
            ops.push(match lc_at {
                Some((lc, at)) => self.clone_at(o, lc, at, into, &mut memo)?,
                None => self.map.get(&o).copied()?,
            });
        }
        Some(ops)
    }

    #[allow(clippy::too_many_arguments)]
    /// Issues the asynchronous copy of tile-IR load `load` (its operands evaluated at `at`, or as
    /// they are when `lc` is `None`) into the pipeline buffer at `offset + base`.
    pub(super) fn issue_copy(
        &mut self,
        load: Value,
        lc: Option<&LoopCtx>,
        at: Option<Value>,
        base: Value,
        offset: u32,
        into: Block,
        span: Span,
    ) -> Option<()> {
        let lc_at = lc.zip(at);
        let mut ops = vec![base];
        ops.extend(self.window_operands(load, lc_at, into)?);
        let shape = self.src.ty(load).shape().to_vec();
        let op = self.dst.append(into, lir::OpKind::AsyncCopy { offset, swizzled: true, shape }, ops, vec![], vec![], span);
        self.pipe_patch.push(op);
        Some(())
    }

    /// The tensor map (registered in `tensor_maps`) through which fused load `load` can be a bulk
    /// tensor copy into its buffer, or `None`. The load must read a parameter the kernel never
    /// writes (so no copy in flight can race the program's own stores), through views that fix
    /// leading dimensions; its window lands in shared memory in `index::SmemTile`'s layout as one
    /// box (rows of 128 bytes or less), or one box per 128-byte column block (wider rows).
    fn tensor_map_for(&self, load: Value) -> Option<crate::abi::TensorMap> {
        let crate::ir::ValueDef::Result(op, _) = self.src.values[load.index()].def else { return None };
        let t = *self.src.op(op).operands.first()?;
        self.tensor_map_of(t, self.src.ty(load).shape(), false)
    }

    /// The parameter tensor `t` is a view of, and the number of leading indices its views fix.
    pub(super) fn param_root(&self, mut t: Value) -> Option<(usize, usize)> {
        let mut fixed = 0usize;
        loop {
            match self.src.values[t.index()].def {
                crate::ir::ValueDef::Result(v, _) if self.src.op(v).kind == OpKind::View => {
                    fixed += self.src.op(v).operands.len() - 1;
                    t = self.src.op(v).operands[0];
                }
                crate::ir::ValueDef::Arg(b, i) if b == self.src.entry => return Some((i as usize, fixed)),
                _ => return None,
            }
        }
    }

    /// The tensor map whose box is a window of `shape` of tensor `t` (a view of a parameter),
    /// when the copy engine can move it; a `writable` parameter only for stores.
    pub(super) fn tensor_map_of(&self, t: Value, shape: &[i64], writable: bool) -> Option<crate::abi::TensorMap> {
        let (param, fixed) = self.param_root(t)?;
        let crate::tir::ParamKind::Tensor { dtype, dims, mutable } = &self.params.get(param)?.kind else { return None };
        if *mutable && !writable {
            return None;
        }
        let shape = shape.to_vec();
        // 16-bit tiles both ways; f32 ones only out of shared memory (window reductions).
        let ok = matches!(dtype, DType::BF16 | DType::F16) || (writable && *dtype == DType::F32);
        if shape.is_empty() || dims.len() != fixed + shape.len() || !ok {
            return None;
        }
        let es = dtype.size() as i64;
        let (last, rows) = (shape[shape.len() - 1], shape[..shape.len() - 1].iter().product::<i64>());
        let tile = crate::lir::index::SmemTile::new(rows, last, es, true);
        // The box is a whole row of 32/64/128 bytes (the copy engine's swizzles are the tile's),
        // or one 128-byte column block of a blocked tile (a box per block, each starting on a
        // 1024-byte boundary); other rows are not swizzled.
        let (swizzle, inner) = match last * es {
            _ if tile.blocked() && rows % 8 == 0 => (128, 128 / es),
            128 => (128, last),
            64 => (64, last),
            32 => (32, last),
            b if b % 16 == 0 && b < 128 && tile.period() == 1 => (0, last),
            _ => return None,
        };
        let mut boxes = vec![1u32; fixed];
        boxes.extend(shape[..shape.len() - 1].iter().map(|&s| s as u32));
        boxes.push(inner as u32);
        let map = crate::abi::TensorMap { param, boxes, swizzle };
        // Past the copy engine's rank, the outermost axes fold into one: the views fix them.
        if map.boxes.iter().any(|&b| b == 0 || b > 256) || map.folded() > fixed {
            return None;
        }
        Some(map)
    }

    /// The index of tensor map `map` in the kernel's list (added if new).
    pub(super) fn register_map(&mut self, map: crate::abi::TensorMap) -> u32 {
        let i = match self.tensor_maps.iter().position(|m| *m == map) {
            Some(i) => i,
            None => {
                self.tensor_maps.push(map);
                self.tensor_maps.len() - 1
            }
        };
        i as u32
    }

    /// Issues the bulk tensor copy of fused load `load` (its operands evaluated at iteration `at`
    /// of loop `lc`, or as they are) into the buffer at `offset + base`, on stage `stage`'s
    /// mbarrier, if `valid` (`lir::OpKind::TmaCopy`).
    #[allow(clippy::too_many_arguments)]
    fn issue_tma(
        &mut self,
        load: Value,
        lc_at: Option<(&LoopCtx, Value)>,
        base: Value,
        (offset, map, mbar): (u32, u32, u32),
        (stage, valid): (Value, Value),
        into: Block,
        span: Span,
    ) -> Option<()> {
        let mut ops = vec![base];
        ops.extend(self.window_operands(load, lc_at, into)?);
        ops.extend([stage, valid]);
        let shape = self.src.ty(load).shape().to_vec();
        let op = self.dst.append(into, lir::OpKind::TmaCopy { offset, shape, map, mbar, producer: false }, ops, vec![], vec![], span);
        self.pipe_patch.push(op);
        Some(())
    }

    /// `iv < hi` as a thread-IR `bool`.
    fn in_range(&mut self, blk: Block, iv: Value, hi: Value, span: Span) -> Value {
        let ty = self.ty(&crate::tir::Type::scalar(DType::Bool));
        self.emit(blk, lir::OpKind::Tir(OpKind::Cmp(crate::tir::CmpOp::Lt)), vec![iv, hi], vec![ty], span)[0]
    }

    /// Waits for the early bulk tensor copies on `mbars` (their one phase, parity 0).
    fn wait_early(&mut self, blk: Block, mbars: &[u32], zero: Value, span: Span) {
        for &mbar in mbars {
            self.mbar_op(blk, lir::OpKind::TmaWait { mbar }, vec![zero, zero], span);
        }
    }

    /// Appends an mbarrier op (its offset patched with the buffers').
    fn mbar_op(&mut self, blk: Block, kind: lir::OpKind, operands: Vec<Value>, span: Span) {
        let op = self.dst.append(blk, kind, operands, vec![], vec![], span);
        self.pipe_patch.push(op);
    }

    /// Issues the copy of a fused load at the load itself (outside pipelined loops), so that it
    /// flies while the program computes until the `dot` that needs it.
    /// On sm_90a, outside loops, through the copy engine on an mbarrier of its own (waited for
    /// with parity 0 by the `dot`s that read it).
    pub(super) fn issue_early(&mut self, load: Value, dst: Block, span: Span) -> Result<(), Diagnostic> {
        let map = if self.target == crate::Target::Sm90a && self.loops_open == 0 { self.tensor_map_for(load) } else { None };
        let bytes = self.bytes(load);
        let zero = self.i32_const(dst, 0, span);
        let (off, mbar) = if let Some(map) = map {
            let off = self.pipe_bytes.div_ceil(1024) * 1024;
            self.pipe_bytes = off + bytes.div_ceil(1024) * 1024;
            let mbar = self.mbar_bytes;
            self.mbar_bytes += 8;
            let map = self.register_map(map);
            self.mbar_op(dst, lir::OpKind::MbarInit { mbar, count: 1 }, vec![], span);
            let ty = self.ty(&crate::tir::Type::scalar(DType::Bool));
            let yes = self.emit(dst, lir::OpKind::Tir(OpKind::Const(Lit::Bool(true))), vec![], vec![ty], span)[0];
            self.issue_tma(load, None, zero, (off, map, mbar), (zero, yes), dst, span)
                .ok_or_else(|| Diagnostic::ice("lower", "early copy"))?;
            self.mbar_op(dst, lir::OpKind::TmaArrive { mbar, bytes, producer: false }, vec![zero, yes], span);
            (off, Some(mbar))
        } else {
            let off = self.pipe_bytes;
            self.pipe_bytes += super::align16(bytes);
            self.issue_copy(load, None, None, zero, off, dst, span).ok_or_else(|| Diagnostic::ice("lower", "early copy"))?;
            (off, None)
        };
        self.emit(dst, lir::OpKind::AsyncCommit, vec![], vec![], span);
        let group = self.group_seq.unwrap_or(0);
        self.early.insert(load, (off, group, mbar));
        self.group_seq = self.group_seq.map(|g| g + 1);
        Ok(())
    }

    /// Whether tile-IR `v` is defined before the loop whose body is `body`.
    fn defined_outside(&self, v: Value, body: Block) -> bool {
        match self.src.values[v.index()].def {
            crate::ir::ValueDef::Result(op, _) => {
                let mut inside = false;
                self.src.walk(body, &mut |o| inside |= o == op);
                !inside
            }
            crate::ir::ValueDef::Arg(b, _) => b != body,
        }
    }

    /// Whether every fused load of a dot can be re-evaluated at another iteration.
    pub(super) fn loads_clonable(&mut self, loads: &[Value], lc: &LoopCtx) -> bool {
        // Probe in a scratch block that is never attached to the kernel.
        let probe = self.dst.new_block(&[]);
        let at = self.map.get(&lc.iv).copied();
        let ok = loads.iter().all(|&l| match (at, self.src.values[l.index()].def) {
            (Some(at), crate::ir::ValueDef::Result(op, _)) => {
                let d = self.src.op(op).clone();
                let mut memo = HashMap::new();
                d.operands[..d.operands.len() - 1].iter().all(|&o| self.clone_at(o, lc, at, probe, &mut memo).is_some())
            }
            _ => false,
        });
        self.dst.blocks[probe.index()].ops.clear();
        ok
    }

    /// Moves the pipeline buffers after the scratch region, now that its size is known.
    pub(super) fn patch_pipeline(&mut self) -> Result<(), Diagnostic> {
        // wgmma's swizzle atoms must start on 1024-byte boundaries (its offsets were checked
        // relative to the pipeline buffers).
        let wgmma = self.pipe_patch.iter().any(|&op| {
            matches!(
                self.dst.op(op).kind,
                lir::OpKind::LocalMma { wgmma: true, .. } | lir::OpKind::RegMma { wgmma: true, .. } | lir::OpKind::TmaStore { .. }
            )
        });
        let scratch = if wgmma { self.smem.div_ceil(1024) * 1024 } else { super::align16(self.smem) };
        // The mbarriers after the buffers (8-byte aligned).
        let bars = (scratch + self.pipe_bytes).div_ceil(8) * 8;
        for &op in &self.pipe_patch.clone() {
            match &mut self.dst.op_mut(op).kind {
                lir::OpKind::AsyncCopy { offset, .. }
                | lir::OpKind::LocalStore { offset, .. }
                | lir::OpKind::TmaStore { offset, .. }
                | lir::OpKind::BulkWaitRead { offset, .. } => *offset += scratch,
                lir::OpKind::TmaCopy { offset, mbar, .. } => {
                    *offset += scratch;
                    *mbar += bars;
                }
                lir::OpKind::MbarInit { mbar, .. } | lir::OpKind::TmaArrive { mbar, .. } | lir::OpKind::TmaWait { mbar } => *mbar += bars,
                lir::OpKind::RegMma { b_offset, .. } => *b_offset += scratch,
                lir::OpKind::LocalMma { a_offset, b_offset, .. } => {
                    if self.mma_pipe_a.contains(&op) {
                        *a_offset += scratch;
                    }
                    if self.mma_pipe_b.contains(&op) {
                        *b_offset += scratch;
                    }
                }
                other => return Err(Diagnostic::ice("lower", format!("pipeline patch of `{}`", other.mnemonic()))),
            }
        }
        self.smem = if self.mbar_bytes > 0 { bars + self.mbar_bytes } else { scratch + self.pipe_bytes };
        Ok(())
    }

    /// Whether `op` is a `dot` on the tensor cores (its result in an MMA layout).
    fn is_mma_dot(&self, op: Op) -> bool {
        let d = self.src.op(op);
        d.kind == OpKind::Dot && matches!(self.layouts.get(&d.results[0]), Some(Layout::Mma { .. }))
    }

    /// Every op of the kernel (nested regions included) and, per value, its uses as `(op,
    /// operand index)`.
    pub(super) fn all_uses(&self) -> (Vec<Op>, Uses) {
        let mut ops = vec![];
        self.src.walk(self.src.entry, &mut |op| ops.push(op));
        let mut users: Uses = HashMap::new();
        for &op in &ops {
            for (i, &o) in self.src.op(op).operands.iter().enumerate() {
                users.entry(o).or_default().push((op, i));
            }
        }
        (ops, users)
    }

    /// The results of `trans(x)` (`permute [1, 0]`) of 2-D 16-bit tiles that are not loads,
    /// whose every use is as operand `a` or `b` of a tensor-core `dot`: such a dot stores `x`
    /// into shared memory as it is and reads it transposed (as it does a loaded window under
    /// `trans`), where converting `x` would take a trip through shared memory and two barriers
    /// before the store (a one-pass attention backward's `dot(trans(ds), k)`).
    pub(super) fn find_trans_operands(&self) -> HashSet<Value> {
        let (_, users) = self.all_uses();
        let mut set = HashSet::new();
        for blk in self.src.blocks() {
            for &op in &self.src.block(blk).ops {
                let d = self.src.op(op);
                if d.kind != OpKind::Permute(vec![1, 0]) {
                    continue;
                }
                let (x, r) = (d.operands[0], d.results[0]);
                let xt = self.src.ty(x);
                // A load of the same block is fused under `trans` (`fusable_loads`); one from
                // outside (a window loaded before the loop) is a register tile like any other,
                // then stored once before the loop and read transposed.
                if xt.shape().len() != 2
                    || !matches!(xt.dtype(), DType::BF16 | DType::F16)
                    || self.def_in(x, blk).is_some_and(|p| self.src.op(p).kind == OpKind::Load)
                {
                    continue;
                }
                if users.get(&r).is_some_and(|u| !u.is_empty() && u.iter().all(|&(u, i)| i < 2 && self.is_mma_dot(u))) {
                    set.insert(r);
                }
            }
        }
        set
    }
    /// Lowers a tensor-core `dot` whose operands `a`/`b` may be fused loads; returns its result.
    pub(super) fn lower_mma_dot(&mut self, op: Op, dst: Block, rty: lir::Type, acc: Value, span: Span) -> Result<Value, Diagnostic> {
        let d = self.src.op(op).clone();
        let src_block = self.current_src_block;
        let fused: Vec<bool> = d.operands[..2].iter().map(|o| self.fused.contains_key(o)).collect();
        let lc = self.loop_ctx.clone().filter(|lc| lc.body == src_block);
        // Loop-invariant operands copied before the loop (`fusable_loads`) are not pipelined.
        let invariant: Vec<bool> =
            d.operands[..2].iter().map(|o| self.fused.get(o).is_some_and(|f| self.invariant.contains(&f.0))).collect();
        // Operands whose window an earlier `dot` of this block copied: read from its buffer.
        let staged: Vec<Option<Staged>> = (0..2)
            .map(|i| {
                let f = self.fused.get(&d.operands[i])?;
                self.staged.get(&f.0).copied().filter(|s| !invariant[i] && s.block == dst)
            })
            .collect();
        let fused_loads: Vec<Value> = d.operands[..2]
            .iter()
            .zip(&invariant)
            .zip(&staged)
            .filter(|((_, inv), st)| !**inv && st.is_none())
            .filter_map(|((o, _), _)| self.fused.get(o).map(|f| f.0))
            .collect();
        // `trans(x)` of a register tile: `x` is stored as it is and read transposed.
        let tr: Vec<Option<Value>> = (0..2)
            .map(|i| {
                let o = d.operands[i];
                (!fused[i] && self.trans_operands.contains(&o)).then(|| self.def(o).map(|p| p.operands[0])).flatten()
            })
            .collect();
        let a_trans = self.fused.get(&d.operands[0]).is_some_and(|f| f.1) || tr[0].is_some();
        let b_trans = self.fused.get(&d.operands[1]).is_some_and(|f| f.1) || tr[1].is_some();
        let a_smem = if a_trans { lir::MmaA::MMajor } else { lir::MmaA::KMajor };
        let stages = self.stages.max(1) as i64;
        let pipelined = match &lc {
            Some(lc) if stages > 1 && !fused_loads.is_empty() => self.loads_clonable(&fused_loads, lc),
            _ => false,
        };
        let at = self.src.ty(d.operands[0]).clone();
        let (k, dtype) = (at.shape()[1], at.dtype());
        let zero = self.i32_const(dst, 0, span);
        let mut bases = [zero, zero];
        let mut offsets = [0u32, 0u32];
        let mut in_pipe = [false, false];
        // Loads are copied as they are: `trans(load)` keeps the load's shape.
        let loaded = |cx: &Self, i: usize| cx.fused.get(&d.operands[i]).map(|f| f.0).unwrap_or(d.operands[i]);
        let mut scratch_off = 0u32;
        // A loop-invariant 16-bit `a` (attention's q) is converted once, before the loop, into
        // the accumulator layout of the warps' rows, so its fragments live in registers. Not
        // when the dot can run as wgmma: then it is stored once into shared memory and read by
        // descriptor (as a wgmma register operand, ptxas 12.8 reuses its registers after the
        // first iteration as if the wgmma had consumed them: wrong results from the second on).
        let (m, n) = (rty.shape()[0], rty.shape()[1]);
        let hopper = self.target == crate::Target::Sm90a && lir::wgmma_fits(m, n, rty.layout(), k, dtype, a_smem, b_trans, &[]);
        let mut a_reg = None;
        if let (Some(lc), Some(Layout::Mma { warps_m, warps_n: 1 })) = (&lc, rty.layout())
            && !hopper
            && !fused[0]
            && tr[0].is_none()
            && self.defined_outside(d.operands[0], lc.body)
        {
            let at = self.src.ty(d.operands[0]).clone();
            let fits = Layout::mma_fits(at.shape(), warps_m, 1) && at.shape()[1] % 16 == 0;
            if fits && matches!(at.dtype(), DType::BF16 | DType::F16) {
                let parent = lc.parent;
                a_reg = Some(self.operand(d.operands[0], Some(Layout::Mma { warps_m, warps_n: 1 }), parent, span)?);
            }
        }
        // A 16-bit `a` already in this accumulator layout (attention's `p`) stays in registers.
        let a_in_regs = a_reg.is_some()
            || !fused[0]
                && tr[0].is_none()
                && {
                    let x = self.v(d.operands[0])?;
                    let xt = self.dst.ty(x).clone();
                    matches!((xt.layout(), rty.layout()), (Some(Layout::Mma { warps_m: w1, warps_n: 1 }), Some(Layout::Mma { warps_m: w2, warps_n: 1 })) if w1 == w2)
                        && matches!(xt.dtype(), DType::BF16 | DType::F16)
                };
        // Operands that are not fused: a loop-invariant one is stored once before the loop into
        // its own buffer; the others go through the scratch region each time.
        let mut in_scratch = [false, false];
        for i in 0..2 {
            if fused[i] || (i == 0 && a_in_regs) {
                continue;
            }
            let src = tr[i].unwrap_or(d.operands[i]);
            let x = self.v(src)?;
            if let Some(lc) = &lc
                && self.defined_outside(src, lc.body)
            {
                in_pipe[i] = true;
                if let Some(&off) = self.invariant_stores.get(&(x, lc.parent)) {
                    offsets[i] = off;
                    continue;
                }
                offsets[i] = self.pipe_bytes;
                self.invariant_stores.insert((x, lc.parent), offsets[i]);
                self.pipe_bytes += super::align16(self.bytes(src));
                let st = self.dst.append(
                    lc.parent,
                    lir::OpKind::LocalStore { offset: offsets[i], swizzled: true },
                    vec![x],
                    vec![],
                    vec![],
                    span,
                );
                self.pipe_patch.push(st);
                self.emit(lc.parent, lir::OpKind::Barrier, vec![], vec![], span);
                continue;
            }
            offsets[i] = scratch_off;
            in_scratch[i] = true;
            self.emit(dst, lir::OpKind::LocalStore { offset: scratch_off, swizzled: true }, vec![x], vec![], span);
            scratch_off = super::align16(scratch_off + self.bytes(src));
        }
        self.smem = self.smem.max(scratch_off);
        let mut copies = vec![];
        let mut early_groups = vec![];
        let mut early_mbars = vec![];
        for i in 0..2 {
            if let Some(st) = staged[i] {
                offsets[i] = st.offset;
                bases[i] = st.base;
                in_pipe[i] = true;
                continue;
            }
            if fused[i]
                && (!pipelined || invariant[i])
                && let Some(&(off, group, mbar)) = self.early.get(&loaded(self, i))
            {
                // Already issued where it was loaded (`issue_early`).
                offsets[i] = off;
                in_pipe[i] = true;
                early_groups.push(group);
                early_mbars.extend(mbar);
                continue;
            }
            if fused[i] {
                copies.push(i);
            }
        }
        // Bulk tensor copies when every pipelined operand has a tensor map (see the module doc).
        let mut tma = None;
        if pipelined && hopper && !copies.is_empty() && lc.as_ref().is_some_and(|lc| !lc.nested) {
            let found: Vec<Option<crate::abi::TensorMap>> = copies.iter().map(|&i| self.tensor_map_for(loaded(self, i))).collect();
            if found.iter().all(Option::is_some) {
                let mut maps = [None, None];
                for (&i, m) in copies.iter().zip(found.into_iter().flatten()) {
                    maps[i] = Some(self.register_map(m));
                }
                tma = Some(Tma { maps, mbar: 0, bytes: 0 });
            }
        }
        let copies: Vec<(usize, u32)> = copies
            .into_iter()
            .map(|i| {
                let bytes = self.bytes(loaded(self, i));
                // The copy engine writes swizzled boxes at 1024-byte boundaries.
                let size = if tma.is_some() { bytes.div_ceil(1024) * 1024 } else { super::align16(bytes) };
                if tma.is_some() {
                    self.pipe_bytes = self.pipe_bytes.div_ceil(1024) * 1024;
                }
                let n = if pipelined { stages as u32 } else { 1 };
                offsets[i] = self.pipe_bytes;
                self.pipe_bytes += n * size;
                in_pipe[i] = true;
                (i, size)
            })
            .collect();
        if let Some(t) = &mut tma {
            t.mbar = self.mbar_bytes;
            self.mbar_bytes += 8 * stages as u32;
            t.bytes = copies.iter().map(|&(i, _)| self.bytes(loaded(self, i))).sum();
        }
        // Every early copy it reads came through the copy engine when each has an mbarrier: the
        // wait on it makes the data visible to the waiting thread, no barrier needed.
        let staged_only = staged.iter().any(Option::is_some)
            && copies.is_empty()
            && early_groups.len() == early_mbars.len()
            && !in_scratch.iter().any(|&x| x);
        // Where a pipelined `wgmma` is issued: before the copies that refill the other stages,
        // so that the tensor cores work while they are issued.
        let mut mma_at = None;
        if pipelined {
            let lc = lc.clone().ok_or_else(|| Diagnostic::ice("lower", "pipeline without a loop"))?;
            // Prologue: iterations 0 .. stages-1 into buffers 0 .. stages-1.
            if let Some(t) = &tma {
                self.mbar_op(lc.parent, lir::OpKind::MbarInit { mbar: t.mbar, count: stages as u32 }, vec![], span);
            }
            for j in 0..stages - 1 {
                let jj = self.i32_const(lc.parent, j, span);
                let off = self.i32_op(lc.parent, crate::tir::BinaryOp::Mul, jj, lc.step, span);
                let iv_j = self.i32_op(lc.parent, crate::tir::BinaryOp::Add, lc.lo, off, span);
                let valid = tma.as_ref().map(|_| self.in_range(lc.parent, iv_j, lc.hi, span));
                for &(i, size) in &copies {
                    let base = self.i32_const(lc.parent, j * size as i64, span);
                    let issued = match (&tma, valid) {
                        (Some(t), Some(valid)) => {
                            let (map, mbar) = (t.maps[i].unwrap_or(0), t.mbar);
                            self.issue_tma(loaded(self, i), Some((&lc, iv_j)), base, (offsets[i], map, mbar), (jj, valid), lc.parent, span)
                        }
                        _ => self.issue_copy(loaded(self, i), Some(&lc), Some(iv_j), base, offsets[i], lc.parent, span),
                    };
                    issued.ok_or_else(|| Diagnostic::ice("lower", "prologue copy"))?;
                }
                if let (Some(t), Some(valid)) = (&tma, valid) {
                    let kind = lir::OpKind::TmaArrive { mbar: t.mbar, bytes: t.bytes, producer: false };
                    self.mbar_op(lc.parent, kind, vec![jj, valid], span);
                }
                self.emit(lc.parent, lir::OpKind::AsyncCommit, vec![], vec![], span);
            }
            // This iteration's index and the buffers it reads and fills.
            let iv = self.v(lc.iv)?;
            let rel = self.i32_op(dst, crate::tir::BinaryOp::Sub, iv, lc.lo, span);
            let idx = self.i32_op(dst, crate::tir::BinaryOp::Div, rel, lc.step, span);
            let s_const = self.i32_const(dst, stages, span);
            let cur = self.i32_op(dst, crate::tir::BinaryOp::Rem, idx, s_const, span);
            let ahead = self.i32_const(dst, stages - 1, span);
            let nidx = self.i32_op(dst, crate::tir::BinaryOp::Add, idx, ahead, span);
            let nxt = self.i32_op(dst, crate::tir::BinaryOp::Rem, nidx, s_const, span);
            let dist = self.i32_op(dst, crate::tir::BinaryOp::Mul, ahead, lc.step, span);
            let iv_n = self.i32_op(dst, crate::tir::BinaryOp::Add, iv, dist, span);
            // Wait for this iteration's buffers, then one barrier: every thread has landed its
            // copies and finished the previous iteration's MMAs, so the buffer those read can
            // be refilled while this iteration computes.
            self.emit(dst, lir::OpKind::AsyncWait { pending: stages as u32 - 2 }, vec![], vec![], span);
            if let Some(t) = &tma {
                let round = self.i32_op(dst, crate::tir::BinaryOp::Div, idx, s_const, span);
                let two = self.i32_const(dst, 2, span);
                let parity = self.i32_op(dst, crate::tir::BinaryOp::Rem, round, two, span);
                self.mbar_op(dst, lir::OpKind::TmaWait { mbar: t.mbar }, vec![cur, parity], span);
            }
            self.wait_early(dst, &early_mbars, zero, span);
            self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
            for &(i, size) in &copies {
                let sz = self.i32_const(dst, size as i64, span);
                bases[i] = self.i32_op(dst, crate::tir::BinaryOp::Mul, cur, sz, span);
            }
            mma_at = Some(self.dst.blocks[dst.index()].ops.len());
            let valid = tma.as_ref().map(|_| self.in_range(dst, iv_n, lc.hi, span));
            for &(i, size) in &copies {
                let sz = self.i32_const(dst, size as i64, span);
                let base_n = self.i32_op(dst, crate::tir::BinaryOp::Mul, nxt, sz, span);
                let issued = match (&tma, valid) {
                    (Some(t), Some(valid)) => {
                        let (map, mbar) = (t.maps[i].unwrap_or(0), t.mbar);
                        self.issue_tma(loaded(self, i), Some((&lc, iv_n)), base_n, (offsets[i], map, mbar), (nxt, valid), dst, span)
                    }
                    _ => self.issue_copy(loaded(self, i), Some(&lc), Some(iv_n), base_n, offsets[i], dst, span),
                };
                issued.ok_or_else(|| Diagnostic::ice("lower", "pipelined copy"))?;
            }
            if let (Some(t), Some(valid)) = (&tma, valid) {
                self.mbar_op(dst, lir::OpKind::TmaArrive { mbar: t.mbar, bytes: t.bytes, producer: false }, vec![nxt, valid], span);
            }
            self.emit(dst, lir::OpKind::AsyncCommit, vec![], vec![], span);
            self.pipelined_loops.insert(lc.body);
        } else {
            if !copies.is_empty() {
                for &(i, _) in &copies {
                    self.issue_copy(loaded(self, i), None, None, zero, offsets[i], dst, span)
                        .ok_or_else(|| Diagnostic::ice("lower", "copy"))?;
                }
                self.emit(dst, lir::OpKind::AsyncCommit, vec![], vec![], span);
                self.group_seq = None;
                self.emit(dst, lir::OpKind::AsyncWait { pending: 0 }, vec![], vec![], span);
            } else if !early_groups.is_empty() {
                // Groups committed after the newest one needed here may stay in flight (not
                // counted across the iterations of a loop: all of them).
                let pending = match (self.group_seq, early_groups.iter().max()) {
                    (Some(seq), Some(&newest)) if !invariant.contains(&true) => seq.saturating_sub(newest + 1),
                    _ => 0,
                };
                self.emit(dst, lir::OpKind::AsyncWait { pending }, vec![], vec![], span);
            }
            self.wait_early(dst, &early_mbars, zero, span);
            // A dot reading only windows an earlier dot waited for, copies of the copy engine it
            // waited for itself, and registers needs no barrier: no thread wrote shared memory
            // for it.
            if !staged_only {
                self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
            }
        }
        for &(i, _) in &copies {
            let st = Staged { block: dst, offset: offsets[i], base: bases[i], pipelined };
            self.staged.insert(loaded(self, i), st);
        }
        let mut wait = None;
        let mop = if a_in_regs {
            let a = match a_reg {
                Some(a) => a,
                None => self.v(d.operands[0])?,
            };
            let wgmma = self.target == crate::Target::Sm90a
                && lir::wgmma_fits(m, n, rty.layout(), k, dtype, lir::MmaA::Regs, b_trans, &offsets[1..]);
            let kind = lir::OpKind::RegMma { b_offset: offsets[1], k, dtype, b_trans, wgmma };
            let mop = self.dst.append(dst, kind, vec![acc, a, bases[1]], vec![rty.clone()], vec![], span);
            if wgmma {
                wait =
                    Some(self.dst.append(dst, lir::OpKind::WgmmaWait { pending: 0 }, vec![self.dst.result(mop)], vec![rty], vec![], span));
            }
            mop
        } else {
            let wgmma = self.target == crate::Target::Sm90a && lir::wgmma_fits(m, n, rty.layout(), k, dtype, a_smem, b_trans, &offsets);
            let kind = lir::OpKind::LocalMma { a_offset: offsets[0], b_offset: offsets[1], k, dtype, a_trans, b_trans, wgmma };
            let mop = self.dst.append(dst, kind, vec![acc, bases[0], bases[1]], vec![rty.clone()], vec![], span);
            if wgmma {
                if let Some(at) = mma_at {
                    let ops = &mut self.dst.blocks[dst.index()].ops;
                    ops.pop();
                    ops.insert(at, mop);
                }
                wait =
                    Some(self.dst.append(dst, lir::OpKind::WgmmaWait { pending: 0 }, vec![self.dst.result(mop)], vec![rty], vec![], span));
            }
            mop
        };
        if in_pipe[0] || in_pipe[1] {
            self.pipe_patch.push(mop);
            if in_pipe[0] {
                self.mma_pipe_a.push(mop);
            }
            if in_pipe[1] {
                self.mma_pipe_b.push(mop);
            }
        }
        // The scratch region (a non-fused operand) and unpipelined buffers may be rewritten by the
        // next shared-memory op; pipelined buffers are protected by the next iteration's barrier.
        let protected = pipelined || (staged_only && staged.iter().flatten().all(|s| s.pipelined));
        if !protected || in_scratch.iter().any(|&x| x) {
            self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
        }
        Ok(self.dst.result(wait.unwrap_or(mop)))
    }
}
