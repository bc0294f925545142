//! Thread-IR pass `drop_barriers`: a barrier between two barriers of its block goes when nothing
//! before it (back to the previous barrier) conflicts with anything after it (up to the next).
//!
//! Why: the lowering hands shared memory from one op to the next with barriers at both ends of
//! each op (a reduction or a `dot` staged through the scratch region ends with one so that the
//! next user may write there), so a block often holds a barrier that separates ops touching
//! different bytes: a reduction's read of the scratch region and the staging of a `dot` operand
//! elsewhere, or a product reading pipeline stages and a bulk store's staging store. Every
//! barrier kept is a point where the warps wait for the slowest.
//!
//! Two ops conflict when one writes shared memory the other reads or writes (`lir::shared_writes`,
//! and the reads below), when one writes global memory and the other touches global memory, or
//! when either is opaque (an op with regions, mbarrier set-up, a reduction with barriers of its
//! own, anything not listed). Asynchronous units count where they finish: a `wgmma_wait` reads
//! every tile any `wgmma` of the kernel reads, a `bulk_wait_read` reads its staged tile, and a
//! `tma_wait` or `async_wait` writes every tile a copy of the kernel lands in. Only barriers with
//! barriers on both sides in the same block are candidates: a block's first and last barriers
//! stay, so whatever an op relies on across a block boundary (a loop's back edge, the ops after a
//! loop or branch) is still separated by the same barrier.

use crate::ir::{Block, Op};
use crate::lir::{self, LirBody, OpKind, SmemRange};
use crate::tir;

/// Runs the pass; returns the number of barriers dropped.
pub fn run(k: &mut lir::Kernel) -> usize {
    let b = &mut k.body;
    let mut ops = vec![];
    b.walk(b.entry, &mut |o| ops.push(o));
    let wgmma: Vec<SmemRange> = ops.iter().filter(|&&o| b.op(o).kind.is_wgmma()).flat_map(|&o| wgmma_reads(b, o)).collect();
    // A copy whose bytes are not known lands anywhere.
    let copies: Vec<SmemRange> = ops
        .iter()
        .filter(|&&o| matches!(b.op(o).kind, OpKind::TmaCopy { .. } | OpKind::AsyncCopy { .. }))
        .map(|&o| lir::shared_writes(b, o).unwrap_or(SmemRange::to_end(0)))
        .collect();
    let cx = Cx { wgmma, copies };
    let mut blocks = vec![b.entry];
    for &o in &ops {
        blocks.extend(b.op(o).regions.iter().copied());
    }
    let mut dropped = 0;
    for blk in blocks {
        dropped += drop_in(b, blk, &cx);
    }
    dropped
}

/// What the whole kernel's asynchronous units touch.
struct Cx {
    /// Every tile a `wgmma` reads.
    wgmma: Vec<SmemRange>,
    /// Every tile an asynchronous copy writes.
    copies: Vec<SmemRange>,
}

/// What an op touches, as far as a barrier is concerned.
#[derive(Default, Debug)]
struct Effects {
    reads: Vec<SmemRange>,
    writes: Vec<SmemRange>,
    global_read: bool,
    global_write: bool,
    opaque: bool,
}

impl Effects {
    /// A write of `w`, or of anything when its bytes are not known.
    fn write(&mut self, w: Option<SmemRange>) {
        match w {
            Some(w) => self.writes.push(w),
            None => self.opaque = true,
        }
    }

    fn add(&mut self, o: Effects) {
        self.reads.extend(o.reads);
        self.writes.extend(o.writes);
        self.global_read |= o.global_read;
        self.global_write |= o.global_write;
        self.opaque |= o.opaque;
    }

    fn conflicts(&self, o: &Effects) -> bool {
        let hit = |a: &[SmemRange], b: &[SmemRange]| a.iter().any(|x| b.iter().any(|y| x.overlaps(*y)));
        self.opaque
            || o.opaque
            || hit(&self.writes, &o.writes)
            || hit(&self.writes, &o.reads)
            || hit(&self.reads, &o.writes)
            || self.global_write && (o.global_read || o.global_write)
            || o.global_write && self.global_read
    }
}

/// Drops the barriers of `blk` that order nothing; returns how many.
fn drop_in(b: &mut LirBody, blk: Block, cx: &Cx) -> usize {
    let ops = b.block(blk).ops.clone();
    let bars: Vec<usize> = (0..ops.len()).filter(|&i| b.op(ops[i]).kind == OpKind::Barrier).collect();
    let segment = |from: usize, to: usize| {
        let mut e = Effects::default();
        for &o in &ops[from + 1..to] {
            e.add(effects(b, o, cx));
        }
        e
    };
    let mut gone = vec![];
    // The ops since the last barrier kept.
    let mut left: Option<Effects> = None;
    for w in bars.windows(3) {
        let (a, m, c) = (w[0], w[1], w[2]);
        let before = left.take().unwrap_or_else(|| segment(a, m));
        let after = segment(m, c);
        if before.conflicts(&after) {
            left = Some(after);
        } else {
            gone.push(ops[m]);
            let mut joined = before;
            joined.add(after);
            left = Some(joined);
        }
    }
    b.blocks[blk.index()].ops.retain(|o| !gone.contains(o));
    gone.len()
}

fn effects(b: &LirBody, op: Op, cx: &Cx) -> Effects {
    let d = b.op(op);
    let mut e = Effects::default();
    if !d.regions.is_empty() && !matches!(d.kind, OpKind::LocalScanFn { .. }) {
        e.opaque = true;
        return e;
    }
    let span = |offset: u32, shape: &[i64], dtype: crate::dtype::DType| {
        SmemRange::new(offset, shape.iter().product::<i64>() * dtype.size() as i64)
    };
    match &d.kind {
        OpKind::Tir(k) => match k {
            tir::OpKind::Load | tir::OpKind::Gather => e.global_read = true,
            tir::OpKind::Store | tir::OpKind::Scatter | tir::OpKind::Atomic(_) => e.global_write = true,
            tir::OpKind::Const(_)
            | tir::OpKind::ProgramId(_)
            | tir::OpKind::NumPrograms(_)
            | tir::OpKind::Arange(_)
            | tir::OpKind::Splat
            | tir::OpKind::Broadcast
            | tir::OpKind::ExpandDims(_)
            | tir::OpKind::Reshape
            | tir::OpKind::Permute(_)
            | tir::OpKind::Binary(_)
            | tir::OpKind::Cmp(_)
            | tir::OpKind::Unary(_)
            | tir::OpKind::Select
            | tir::OpKind::Fma
            | tir::OpKind::Cast
            | tir::OpKind::Dim(_)
            | tir::OpKind::View
            | tir::OpKind::Yield => {}
            _ => e.opaque = true,
        },
        OpKind::Reshape | OpKind::RowReduce { .. } | OpKind::RowBroadcast | OpKind::ShuffleConvert { .. } | OpKind::Coord { .. } => {}
        OpKind::AsyncCommit => {}
        OpKind::LocalStore { .. } | OpKind::TmaArrive { .. } => e.write(lir::shared_writes(b, op)),
        OpKind::LocalLoad { offset, .. } => e.reads.push(SmemRange::to_end(*offset)),
        OpKind::LocalReduce { offset, src_shape, dtype, .. }
        | OpKind::LocalScan { offset, src_shape, dtype, .. }
        | OpKind::LocalScanFn { offset, src_shape, dtype, .. }
        | OpKind::LocalArgReduce { offset, src_shape, dtype, .. } => e.reads.push(span(*offset, src_shape, *dtype)),
        OpKind::LocalDot { a_offset, b_offset, .. } => e.reads.push(SmemRange::to_end((*a_offset).min(*b_offset))),
        OpKind::LocalMma { wgmma: true, .. } | OpKind::RegMma { wgmma: true, .. } => e.reads.extend(wgmma_reads(b, op)),
        OpKind::LocalMma { a_offset, b_offset, .. } => e.reads.push(SmemRange::to_end((*a_offset).min(*b_offset))),
        OpKind::RegMma { b_offset, .. } => e.reads.push(SmemRange::to_end(*b_offset)),
        OpKind::WgmmaWait { .. } => e.reads.extend(cx.wgmma.iter().copied()),
        OpKind::TmaStore { offset, shape, .. } => {
            match d.operands.first().map(|&t| b.ty(t)) {
                Some(lir::Type::Tensor { dtype, .. }) => e.reads.push(span(*offset, shape, *dtype)),
                _ => e.reads.push(SmemRange::to_end(*offset)),
            }
            e.global_write = true;
        }
        OpKind::BulkWaitRead { offset, bytes } => e.reads.push(SmemRange::new(*offset, i64::from(*bytes))),
        OpKind::TmaCopy { .. } | OpKind::AsyncCopy { .. } => {
            e.write(lir::shared_writes(b, op));
            e.global_read = true;
        }
        OpKind::TmaWait { mbar } => {
            e.writes.extend(cx.copies.iter().copied());
            e.reads.push(SmemRange::to_end(*mbar));
        }
        OpKind::AsyncWait { .. } => e.writes.extend(cx.copies.iter().copied()),
        OpKind::MbarInit { .. }
        | OpKind::ShuffleReduce { .. }
        | OpKind::Barrier
        | OpKind::WsInit { .. }
        | OpKind::WsSplit
        | OpKind::MbarWait { .. }
        | OpKind::MbarArrive { .. }
        | OpKind::Turn(_) => e.opaque = true,
    }
    e
}

/// The tiles a `wgmma` reads (all of shared memory when they are not known).
fn wgmma_reads(b: &LirBody, op: Op) -> Vec<SmemRange> {
    let r = lir::wgmma_reads(b, op);
    if r.is_empty() { vec![SmemRange::to_end(0)] } else { r }
}
