//! Tile IR → thread IR: layout assignment and shared-memory planning.
//!
//! Algorithm:
//! 1. `layout::assign` picks the layouts: the MMA accumulator layout for tensor-core `dot`s and
//!    the elementwise ops and loop-carried values that follow them; every other tile gets the
//!    blocked layout for its element count (`Layout::blocked_for`), so elementwise operands in
//!    blocked layouts always agree and `reshape`/`expand_dims` move no data;
//! 2. an operand in a layout its user cannot take is converted through shared memory (constants
//!    and splats are rebuilt in the wanted layout instead);
//! 3. every op that needs other threads' elements (`broadcast`, `permute`, `reduce`, `dot`)
//!    becomes: each thread stores its elements to shared memory, a barrier, each thread reads the
//!    elements it needs (an affine map, a loop over the reduced axis, `ldmatrix` + `mma.sync`, or
//!    a k-loop of FMAs), and a barrier so that the next such op may reuse the buffer;
//! 4. all such ops share one scratch region at offset 0 (the barriers order them), so the
//!    kernel's shared memory is the largest single need.

use crate::Options;
use crate::diag::Diagnostic;
use crate::ir::{Block, Value};
use crate::lir::{self, Layout, LirBody};
use crate::tir::{self, OpKind, row_major};
use std::collections::{HashMap, HashSet};

pub mod defer_wait;
pub mod drop_barriers;
pub mod hoist_loads;
pub mod layout;
mod ops;
pub mod order;
mod pipeline;
mod remat;
pub mod sink_wait;
mod tma_store;
pub mod warp_specialize;

/// A thread-IR pass: a name (for `--dump-after` and error messages) and a function.
pub struct LirPass {
    pub name: &'static str,
    pub run: fn(&mut lir::Kernel),
}

/// The thread-IR passes run after lowering, in order.
/// - `order_memory` puts barriers between a program's own global-memory accesses that may touch
///   one element from different threads (a store and a later load of the same tensor).
/// - `defer_wgmma_wait` lets a pipelined loop's `wgmma` run into the next iteration.
/// - `hoist_loads` issues loads from read-only tensors as early as their operands allow.
/// - `sink_wgmma_wait` and `defer_bulk_wait` move the other waits for the tensor cores and the
///   copy engine as late as what they guard allows.
/// - `drop_barriers` drops a barrier between two others when nothing on one side conflicts with
///   anything on the other; it runs before `defer_bulk_wait`, whose waits would pin barriers.
/// - `warp_specialize` (`#[warp_specialize]` kernels) hands the main loop's bulk tensor copies to
///   a producer warpgroup; last, as it needs the barriers and waits where the others left them.
pub const LIR_PIPELINE: &[LirPass] = &[
    LirPass { name: "order_memory", run: order::run },
    LirPass { name: "defer_wgmma_wait", run: defer_wait::run },
    LirPass { name: "hoist_loads", run: hoist_loads::run },
    LirPass { name: "sink_wgmma_wait", run: sink_wait::run_wgmma },
    LirPass { name: "drop_barriers", run: |k| _ = drop_barriers::run(k) },
    LirPass { name: "defer_bulk_wait", run: sink_wait::run_bulk },
    LirPass { name: "warp_specialize", run: warp_specialize::run },
];

/// Shared memory available to one block on the targets (227 KiB on sm_90, 163 KiB on sm_80).
pub fn max_shared_bytes(target: crate::Target) -> u32 {
    match target {
        crate::Target::Sm80 => 163 * 1024,
        crate::Target::Sm90a => 227 * 1024,
    }
}

/// Lowers one kernel to the thread IR. `#[stages(N)]` is the deepest software pipeline wanted:
/// where `N` stages of buffers do not fit the target's shared memory, the deepest that does (at
/// least 2) is used, so that one default serves an H100 (227 KiB) and an A100 (163 KiB); a depth
/// set in `Options::stages` (`--stages`, the autotuner) is taken as it is.
pub fn lower_kernel(k: &tir::Kernel, opts: &Options) -> Result<lir::Kernel, Diagnostic> {
    // Sema applied (and checked) the `Options` overrides; a kernel from elsewhere (the tile-IR
    // parser) is checked here, so that no warp count reaches the layouts unchecked.
    tir::check_warps(k.warps.into()).map_err(|e| Diagnostic::error(format!("kernel `{}`: warps({}): {e}", k.name, k.warps)))?;
    tir::check_stages(k.stages.into()).map_err(|e| Diagnostic::error(format!("kernel `{}`: stages({}): {e}", k.name, k.stages)))?;
    let mut stages = k.stages;
    loop {
        match lower_at(k, opts, stages)? {
            Ok(lk) => return Ok(lk),
            Err(_) if opts.stages.is_none() && stages > 2 => stages -= 1,
            Err(shared_bytes) => {
                let limit = max_shared_bytes(opts.target);
                return Err(Diagnostic::error(format!(
                    "kernel `{}` needs {shared_bytes} bytes of shared memory, but {} allows {limit}",
                    k.name,
                    opts.target.name()
                ))
                .note("use smaller tiles (a smaller const parameter, e.g. `--const BK=32`)"));
            }
        }
    }
}

/// [`lower_kernel`] with `stages` pipeline buffers: the thread IR, or the shared memory it would
/// need when that is over the target's limit.
fn lower_at(k: &tir::Kernel, opts: &Options, stages: u32) -> Result<Result<lir::Kernel, u32>, Diagnostic> {
    let threads = k.warps * 32;
    let layouts = layout::assign(k, threads / 32, opts.target, opts.tf32);
    let mut uses = HashMap::new();
    k.body.walk(k.body.entry, &mut |op| {
        for &o in &k.body.op(op).operands {
            *uses.entry(o).or_insert(0) += 1;
        }
    });
    let mut cx = Cx {
        src: &k.body,
        params: &k.params,
        tensor_maps: vec![],
        loops_open: 0,
        dst: LirBody::new(),
        map: HashMap::new(),
        threads,
        smem: 0,
        layouts,
        converted: HashMap::new(),
        uses,
        stages,
        checked: opts.checked,
        target: opts.target,
        fused: HashMap::new(),
        skipped: HashSet::new(),
        remat_only: HashSet::new(),
        trans_operands: HashSet::new(),
        early: HashMap::new(),
        staged: HashMap::new(),
        invariant: HashSet::new(),
        invariant_stores: HashMap::new(),
        group_seq: Some(0),
        loop_ctx: None,
        current_src_block: k.body.entry,
        pipelined_loops: HashSet::new(),
        pipe_bytes: 0,
        mbar_bytes: 0,
        pipe_patch: vec![],
        mma_pipe_a: vec![],
        mma_pipe_b: vec![],
    };
    let entry = cx.dst.entry;
    for (i, p) in k.params.iter().enumerate() {
        let v = cx.dst.add_block_arg(entry, cx.ty(&p.ty()));
        cx.map.insert(k.param_value(i), v);
    }
    cx.remat_only = cx.find_remat_only();
    cx.trans_operands = cx.find_trans_operands();
    cx.block(k.body.entry, entry, &[])?;
    cx.patch_pipeline()?;
    let shared_bytes = cx.smem;
    if shared_bytes > max_shared_bytes(opts.target) {
        return Ok(Err(shared_bytes));
    }
    Ok(Ok(lir::Kernel {
        name: k.name.clone(),
        params: k.params.clone(),
        threads,
        shared_bytes,
        blocks_per_sm: k.blocks_per_sm,
        tensor_maps: cx.tensor_maps,
        warp_specialize: k.warp_specialize,
        ws: None,
        body: cx.dst,
    }))
}

struct Cx<'a> {
    src: &'a tir::TirBody,
    /// The kernel's parameters (a bulk tensor copy reads a parameter tensor through a map).
    params: &'a [tir::Param],
    /// Tensor maps of the bulk tensor copies (`lir::Kernel::tensor_maps`).
    tensor_maps: Vec<crate::abi::TensorMap>,
    /// `for`/`while` loops being lowered around the current op.
    loops_open: u32,
    dst: LirBody,
    map: HashMap<Value, Value>,
    threads: u32,
    smem: u32,
    /// Layouts other than the default blocked one (`layout::assign`).
    layouts: HashMap<Value, Layout>,
    /// Conversions already emitted: (tile-IR value, layout, block) → thread-IR value.
    converted: HashMap<(Value, Layout, Block), Value>,
    /// Number of uses of each tile-IR value.
    uses: HashMap<Value, usize>,
    /// Software-pipelining depth of loops that feed tensor cores (`#[stages]`).
    stages: u32,
    /// Whether `assert`s are kept (`Options::checked`).
    checked: bool,
    /// The GPU generation: on sm_90a, tensor-core dots that fit run as `wgmma`.
    target: crate::Target,
    /// `dot` operands copied asynchronously into shared memory instead of lowered: operand →
    /// (the load it comes from, read transposed). The loads (and `trans`) are not lowered.
    fused: HashMap<Value, (Value, bool)>,
    skipped: HashSet<Value>,
    /// Fused loads whose copies were issued where they were loaded: load → (buffer, group, the
    /// mbarrier of its bulk tensor copy).
    early: HashMap<Value, (u32, u32, Option<u32>)>,
    /// Fused loads a `dot` copied (in a loop, this iteration's stage) that a later `dot` of the
    /// same block reads from the same buffer (`pipeline::Staged`).
    staged: HashMap<Value, pipeline::Staged>,
    /// Fused loads of a loop-invariant operand: copied once, before the loop of their `dot`.
    invariant: HashSet<Value>,
    /// Loop-invariant register operands of `dot`s stored before their loop: (thread-IR value,
    /// the block before the loop) → its buffer (before `patch_pipeline`), so that a second
    /// `dot` of the loop reading the same tile (the backward's `k`, in `k · qᵀ` and `dsᵀ · k`)
    /// reads the same bytes instead of a copy of its own.
    invariant_stores: HashMap<(Value, Block), u32>,
    /// Commit groups issued so far in the block being lowered (`None` once unknown, e.g.
    /// after a nested loop).
    group_seq: Option<u32>,
    /// Values only used where they are rebuilt in the user's layout (`remat`): not lowered.
    remat_only: HashSet<Value>,
    /// `trans(x)` of 16-bit register tiles read only by tensor-core `dot`s: never lowered; the
    /// dot stores `x` as it is and reads it transposed (`Cx::find_trans_operands`).
    trans_operands: HashSet<Value>,
    /// The innermost `for` being lowered and the tile-IR block being lowered.
    loop_ctx: Option<pipeline::LoopCtx>,
    current_src_block: Block,
    /// Bodies of loops that were pipelined (they need a final `async_wait 0`).
    pipelined_loops: HashSet<Block>,
    /// Pipeline buffers: their total size, and the ops whose offsets are relative to them.
    pipe_bytes: u32,
    /// The mbarriers of bulk tensor copies: their total size (they live after the buffers).
    mbar_bytes: u32,
    pipe_patch: Vec<crate::ir::Op>,
    mma_pipe_a: Vec<crate::ir::Op>,
    mma_pipe_b: Vec<crate::ir::Op>,
}

fn align16(x: u32) -> u32 {
    x.div_ceil(16) * 16
}

impl Cx<'_> {
    fn ty(&self, t: &tir::Type) -> lir::Type {
        self.ty_in(t, None)
    }

    /// The thread-IR type of a tile-IR type in `layout` (default: blocked).
    fn ty_in(&self, t: &tir::Type, layout: Option<Layout>) -> lir::Type {
        match t {
            tir::Type::Tile { dtype, shape } => {
                let n: i64 = shape.iter().product();
                let layout = layout.unwrap_or(Layout::blocked_for(n, self.threads));
                lir::Type::Tile { dtype: *dtype, shape: shape.clone(), layout }
            }
            tir::Type::Tensor { dtype, rank, mutable } => lir::Type::Tensor { dtype: *dtype, rank: *rank, mutable: *mutable },
        }
    }

    /// Whether a reduction of `x` along `axis` can use shuffles (`ShuffleReduce`); if so, the
    /// shared memory it needs for the per-warp partials.
    fn shuffle_reducible(&self, x: Value, axis: u32) -> Option<u32> {
        let t = self.vty(x);
        let shape = t.shape();
        let (Some(Layout::Blocked { vec }), Some(&c)) = (t.layout(), shape.last()) else { return None };
        let ok_dtype =
            matches!(t.dtype(), crate::DType::F32 | crate::DType::F16 | crate::DType::BF16 | crate::DType::I32 | crate::DType::U32);
        let threads = self.threads as i64;
        if axis as usize != shape.len() - 1 || !ok_dtype || t.numel() < threads || c % vec as i64 != 0 {
            return None;
        }
        let cpr = c / vec as i64;
        let group = cpr.min(threads);
        // Chunks of one row must be whole groups of threads, and a thread's chunks of one row
        // must be consecutive (both hold for powers of two).
        if (cpr >= threads && cpr % threads != 0) || (cpr < threads && threads % cpr != 0) {
            return None;
        }
        let rows = t.numel() / c;
        let warps_per_row = (group / 32).max(1);
        Some((rows * warps_per_row * 4) as u32)
    }

    /// The thread-IR type of tile-IR value `v`, in its assigned layout.
    fn vty(&self, v: Value) -> lir::Type {
        self.ty_in(self.src.ty(v), self.layouts.get(&v).copied())
    }

    /// Operand `v` in `layout` (or as it is when `layout` is `None` or it is a tensor): converts
    /// through shared memory, or rebuilds a constant or splat in the wanted layout.
    fn operand(&mut self, v: Value, layout: Option<Layout>, blk: Block, span: crate::Span) -> Result<Value, Diagnostic> {
        if self.remat_only.contains(&v) {
            // Never lowered on its own: rebuilt in every consumer's layout.
            return self.remat(v, layout, blk, span).ok_or_else(|| Diagnostic::ice("lower", "rematerialisation failed"));
        }
        let mapped = self.v(v)?;
        let cur = self.dst.ty(mapped).clone();
        let (Some(want), Some(have)) = (layout, cur.layout()) else { return Ok(mapped) };
        if want == have {
            return Ok(mapped);
        }
        if let Some(&c) = self.converted.get(&(v, want, blk)) {
            return Ok(c);
        }
        let target = self.ty_in(self.src.ty(v), Some(want));
        let def = self.src.producer(v).map(|op| self.src.op(op));
        if !matches!(want, Layout::Blocked { .. })
            && let Some(r) = self.remat(v, Some(want), blk, span)
        {
            self.converted.insert((v, want, blk), r);
            return Ok(r);
        }
        let out = match def.map(|d| (&d.kind, d.operands.clone())) {
            Some((OpKind::Const(l), _)) => self.emit(blk, lir::OpKind::Tir(OpKind::Const(*l)), vec![], vec![target], span)[0],
            Some((OpKind::Splat, ops)) => {
                let x = self.v(ops[0])?;
                self.emit(blk, lir::OpKind::Tir(OpKind::Splat), vec![x], vec![target], span)[0]
            }
            _ => {
                let strides = row_major(cur.shape());
                self.relayout(mapped, self.bytes(v), strides, target, blk, span)
            }
        };
        self.converted.insert((v, want, blk), out);
        Ok(out)
    }

    /// `x` (`bytes` big) as a tile of type `target` whose element `c` is `x`'s element at linear
    /// index `Σ c_i · strides_i`: by warp shuffles where every element is in the reader's warp
    /// and that is cheaper (`lir::shuffle`), else through shared memory.
    fn relayout(&mut self, x: Value, bytes: u32, strides: Vec<i64>, target: lir::Type, blk: Block, span: crate::Span) -> Value {
        let xt = self.dst.ty(x).clone();
        if let Some(plan) = lir::shuffle::plan(&xt, &target, &strides, self.threads)
            && lir::shuffle::shuffle_is_cheaper(&plan, &xt, &target, self.threads)
        {
            return self.emit(blk, lir::OpKind::ShuffleConvert { strides, plan }, vec![x], vec![target], span)[0];
        }
        self.smem = self.smem.max(bytes);
        self.emit(blk, lir::OpKind::LocalStore { offset: 0, swizzled: false }, vec![x], vec![], span);
        self.emit(blk, lir::OpKind::Barrier, vec![], vec![], span);
        let r = self.emit(blk, lir::OpKind::LocalLoad { offset: 0, strides }, vec![], vec![target], span)[0];
        self.emit(blk, lir::OpKind::Barrier, vec![], vec![], span);
        r
    }

    /// The op defining tile-IR value `v` (`None` for a block argument).
    fn def(&self, v: Value) -> Option<&crate::ir::OpData<OpKind>> {
        self.src.producer(v).map(|op| self.src.op(op))
    }

    fn v(&self, v: Value) -> Result<Value, Diagnostic> {
        self.map.get(&v).copied().ok_or_else(|| Diagnostic::ice("lower", format!("{v} used before its definition")))
    }

    fn bytes(&self, v: Value) -> u32 {
        let t = self.src.ty(v);
        (t.numel() as u64 * t.dtype().size() as u64).min(u32::MAX as u64) as u32
    }

    fn emit(&mut self, blk: Block, kind: lir::OpKind, operands: Vec<Value>, results: Vec<lir::Type>, span: crate::Span) -> Vec<Value> {
        let op = self.dst.append(blk, kind, operands, results, vec![], span);
        self.dst.op(op).results.clone()
    }

    /// Lowers the ops of `src` into `dst`; a final `yield` gets its operands converted to
    /// `yield_types`' layouts (the parent op's result or argument layouts).
    fn block(&mut self, src: Block, dst: Block, yield_types: &[lir::Type]) -> Result<(), Diagnostic> {
        let saved_src = self.current_src_block;
        self.current_src_block = src;
        for f in self.fusable_loads(src) {
            if f.invariant {
                self.invariant.insert(f.load);
            }
            self.fused.insert(f.operand, (f.load, f.trans));
            self.skipped.extend(f.chain);
        }
        for &op in &self.src.block(src).ops {
            let d = self.src.op(op);
            if !d.results.is_empty() && d.results.iter().all(|r| self.remat_only.contains(r) || self.trans_operands.contains(r)) {
                continue;
            }
            // Copied asynchronously by the `dot` that uses it (see `pipeline`); outside a loop
            // body, issued right here so that the copy overlaps what comes before the `dot`.
            if d.results.iter().any(|r| self.skipped.contains(r)) {
                let in_loop_body = self.loop_ctx.as_ref().is_some_and(|lc| lc.body == src);
                if d.kind == OpKind::Load && (!in_loop_body || self.invariant.contains(&d.results[0])) {
                    let span = self.src.span(op);
                    self.issue_early(d.results[0], dst, span)?;
                }
                continue;
            }
            let span = self.src.span(op);
            if matches!(d.kind, OpKind::Store | OpKind::Atomic(_))
                && let Some(plan) = self.tma_store_plan(op)
            {
                self.lower_tma_store(op, dst, plan, span)?;
                continue;
            }
            let rtys: Vec<lir::Type> = d.results.iter().map(|&r| self.vty(r)).collect();
            let res_layout = rtys.first().and_then(|t| t.layout());
            let results: Vec<Value> = match &d.kind {
                OpKind::ExpandDims(_) | OpKind::Reshape => {
                    // Free in blocked layouts (they keep the linear order) and in an MMA layout
                    // both shapes fit the same way (a row layout gaining a trailing axis of 1, an
                    // accumulator's rows split over leading dimensions). Otherwise the operand
                    // is reshaped blocked and converted: `reshape([4, 16] → [64])` feeding a
                    // bias-like broadcast down an accumulator's rows.
                    let (from, to) = (self.src.ty(d.operands[0]).shape().to_vec(), self.src.ty(d.results[0]).shape().to_vec());
                    let blocked = Layout::blocked_for(self.src.ty(d.operands[0]).numel(), self.threads);
                    match res_layout {
                        Some(l @ (Layout::MmaRows { .. } | Layout::MmaCols { .. } | Layout::Mma { .. }))
                            if !l.reshape_is_free(&from, &to, self.threads) =>
                        {
                            let x = self.operand(d.operands[0], Some(blocked), dst, span)?;
                            let flat = self.ty_in(self.src.ty(d.results[0]), Some(blocked));
                            let y = self.emit(dst, lir::OpKind::Reshape, vec![x], vec![flat], span)[0];
                            let target = rtys.into_iter().next().ok_or_else(|| Diagnostic::ice("lower", "a reshape without a result"))?;
                            vec![self.relayout(y, self.bytes(d.operands[0]), row_major(&to), target, dst, span)]
                        }
                        Some(l @ (Layout::MmaRows { .. } | Layout::MmaCols { .. } | Layout::Mma { .. })) => {
                            let x = self.operand(d.operands[0], Some(l), dst, span)?;
                            self.emit(dst, lir::OpKind::Reshape, vec![x], rtys, span)
                        }
                        _ => {
                            let x = self.operand(d.operands[0], Some(blocked), dst, span)?;
                            self.emit(dst, lir::OpKind::Reshape, vec![x], rtys, span)
                        }
                    }
                }
                OpKind::Broadcast
                    if matches!(self.dst.ty(self.v(d.operands[0])?).layout(), Some(Layout::MmaRows { .. }))
                        && matches!(res_layout, Some(Layout::Mma { .. })) =>
                {
                    let x = self.v(d.operands[0])?;
                    self.emit(dst, lir::OpKind::RowBroadcast, vec![x], rtys, span)
                }
                OpKind::Broadcast | OpKind::Permute(_) if res_layout.is_some() && self.remat_ok(d.results[0], 0) => {
                    vec![self.remat(d.results[0], res_layout, dst, span).ok_or_else(|| Diagnostic::ice("lower", "remat"))?]
                }
                OpKind::Broadcast | OpKind::Permute(_) => {
                    let src_shape = self.src.ty(d.operands[0]).shape().to_vec();
                    let dst_shape = self.src.ty(d.results[0]).shape().to_vec();
                    let rm = row_major(&src_shape);
                    let strides = match &d.kind {
                        OpKind::Permute(p) => p.iter().map(|&i| rm[i as usize]).collect(),
                        _ => (0..dst_shape.len()).map(|i| if src_shape[i] == 1 && dst_shape[i] != 1 { 0 } else { rm[i] }).collect(),
                    };
                    let x = self.v(d.operands[0])?;
                    let target = rtys.into_iter().next().ok_or_else(|| Diagnostic::ice("lower", "broadcast without a result"))?;
                    vec![self.relayout(x, self.bytes(d.operands[0]), strides, target, dst, span)]
                }
                OpKind::Reduce(rop, 1) if matches!(res_layout, Some(Layout::MmaRows { .. })) => {
                    let x = self.v(d.operands[0])?;
                    self.emit(dst, lir::OpKind::RowReduce { op: *rop }, vec![x], rtys, span)
                }
                OpKind::Reduce(rop, axis) if self.shuffle_reducible(d.operands[0], *axis).is_some() => {
                    let x = self.v(d.operands[0])?;
                    let bytes = self.shuffle_reducible(d.operands[0], *axis).unwrap_or(0);
                    self.smem = self.smem.max(bytes);
                    self.emit(dst, lir::OpKind::ShuffleReduce { op: *rop, offset: 0 }, vec![x], rtys, span)
                }
                OpKind::Reduce(rop, axis) => {
                    let st = self.src.ty(d.operands[0]).clone();
                    let x = self.v(d.operands[0])?;
                    self.smem = self.smem.max(self.bytes(d.operands[0]));
                    self.emit(dst, lir::OpKind::LocalStore { offset: 0, swizzled: false }, vec![x], vec![], span);
                    self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
                    let kind =
                        lir::OpKind::LocalReduce { offset: 0, op: *rop, axis: *axis, src_shape: st.shape().to_vec(), dtype: st.dtype() };
                    let r = self.emit(dst, kind, vec![], rtys, span);
                    self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
                    r
                }
                OpKind::Dot if matches!(res_layout, Some(Layout::Mma { .. })) => {
                    let acc = self.operand(d.operands[2], res_layout, dst, span)?;
                    vec![self.lower_mma_dot(op, dst, rtys[0].clone(), acc, span)?]
                }
                OpKind::Dot => {
                    let at = self.src.ty(d.operands[0]).clone();
                    let a = self.v(d.operands[0])?;
                    let b = self.v(d.operands[1])?;
                    let acc = self.operand(d.operands[2], res_layout, dst, span)?;
                    let a_bytes = align16(self.bytes(d.operands[0]));
                    let b_bytes = self.bytes(d.operands[1]);
                    self.smem = self.smem.max(a_bytes.saturating_add(b_bytes));
                    self.emit(dst, lir::OpKind::LocalStore { offset: 0, swizzled: false }, vec![a], vec![], span);
                    self.emit(dst, lir::OpKind::LocalStore { offset: a_bytes, swizzled: false }, vec![b], vec![], span);
                    self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
                    let kind = lir::OpKind::LocalDot { a_offset: 0, b_offset: a_bytes, k: at.shape()[1], dtype: at.dtype() };
                    let r = self.emit(dst, kind, vec![acc], rtys, span);
                    self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
                    r
                }
                OpKind::For | OpKind::If => {
                    let is_for = d.kind == OpKind::For;
                    let mut operands = vec![];
                    for (i, &o) in d.operands.iter().enumerate() {
                        // `for` inits take the layouts of the loop's results.
                        let want = if is_for && i >= 3 { rtys[i - 3].layout() } else { None };
                        operands.push(self.operand(o, want, dst, span)?);
                    }
                    let mut regions = vec![];
                    for &r in &d.regions {
                        let arg_tys: Vec<lir::Type> = self.src.block(r).args.iter().map(|&a| self.vty(a)).collect();
                        let nb = self.dst.new_block(&arg_tys);
                        for (i, &a) in self.src.block(r).args.iter().enumerate() {
                            let na = self.dst.block(nb).args[i];
                            self.map.insert(a, na);
                        }
                        let saved = self.loop_ctx.take();
                        if is_for {
                            let iv = self.src.block(r).args[0];
                            let nested = self.loops_open > 0;
                            self.loop_ctx = Some(pipeline::LoopCtx {
                                body: r,
                                iv,
                                lo: operands[0],
                                hi: operands[1],
                                step: operands[2],
                                parent: dst,
                                nested,
                            });
                        } else {
                            self.loop_ctx = saved.clone();
                        }
                        let saved_seq = self.group_seq.replace(0);
                        self.loops_open += is_for as u32;
                        let lowered = self.block(r, nb, &rtys);
                        self.loops_open -= is_for as u32;
                        lowered?;
                        self.group_seq = saved_seq;
                        self.loop_ctx = saved;
                        regions.push(nb);
                    }
                    let op = self.dst.append(dst, lir::OpKind::Tir(d.kind.clone()), operands, rtys, regions, span);
                    // The region may have committed copy groups: later waits cannot count on them.
                    self.group_seq = None;
                    if is_for && self.pipelined_loops.contains(&d.regions[0]) {
                        // No copy may still be in flight when the buffers are reused or the program ends.
                        self.emit(dst, lir::OpKind::AsyncWait { pending: 0 }, vec![], vec![], span);
                    }
                    self.dst.op(op).results.clone()
                }
                OpKind::Join | OpKind::Split | OpKind::Slice(..) | OpKind::Scan(..) | OpKind::ScanFn(_) | OpKind::ArgReduce(..) => {
                    self.lower_staged(op, dst, rtys, span)?
                }
                OpKind::Gather | OpKind::Scatter | OpKind::Atomic(_) | OpKind::Print(_) | OpKind::Assert(_) => {
                    self.lower_per_thread(op, dst, rtys, span, self.checked)?
                }
                OpKind::While => self.lower_while(op, dst, rtys, span)?,
                OpKind::Yield => {
                    let mut operands = vec![];
                    for (i, &o) in d.operands.iter().enumerate() {
                        operands.push(self.operand(o, yield_types.get(i).and_then(|t| t.layout()), dst, span)?);
                    }
                    self.emit(dst, lir::OpKind::Tir(OpKind::Yield), operands, vec![], span)
                }
                OpKind::Binary(_) | OpKind::Cmp(_) | OpKind::Unary(_) | OpKind::Select | OpKind::Fma | OpKind::Cast => {
                    let mut operands = vec![];
                    for &o in &d.operands {
                        operands.push(self.operand(o, res_layout, dst, span)?);
                    }
                    self.emit(dst, lir::OpKind::Tir(d.kind.clone()), operands, rtys, span)
                }
                kind => {
                    let operands: Vec<Value> = d.operands.iter().map(|&o| self.v(o)).collect::<Result<_, _>>()?;
                    self.emit(dst, lir::OpKind::Tir(kind.clone()), operands, rtys, span)
                }
            };
            for (&s, &n) in d.results.iter().zip(&results) {
                self.map.insert(s, n);
            }
        }
        self.current_src_block = saved_src;
        Ok(())
    }
}
