//! Thread-IR passes `sink_wgmma_wait` and `defer_bulk_wait`: a wait for an asynchronous unit
//! placed as late as what it guards allows, so that the tensor cores (a `wgmma` group) or the
//! copy engine (a bulk store reading its staged tile) work while the threads go on.
//!
//! The lowering puts each wait right after its issue: `local_mma … wgmma` then `wgmma_wait`,
//! `tma_store` then `bulk_wait_read`. Both guard two things: values (a `wgmma` group's
//! accumulators, which nothing may read before the wait) and shared memory (the tiles a group
//! reads, the tile a bulk store reads), which nothing may write before the wait, and before a
//! barrier after it when other threads write: the wait only orders its own thread. So a wait may
//! move down its block past every op that neither reads its result nor writes what it guards;
//! at the first that does, it goes before the last barrier since its old place (or right
//! before that op when there is none).
//!
//! `sink_wgmma_wait`: a `wgmma_wait 0` whose group was issued earlier in the same block moves
//! down to its first user (a `yield` included), the first other `wgmma_wait`, the first op whose
//! regions issue or wait for `wgmma`s, or the first write to the group's operand tiles
//! (`lir::wgmma_reads`). Groups finish
//! in issue order and `wgmma.wait_group N` leaves the newest `N` in flight, so the moved wait
//! becomes `wgmma_wait N` with `N` the groups issued between its own and it: with the program's
//! `dot`s written in the order they are needed (`S = Q·Kᵀ`, then `dP = dO·Vᵀ`, then the softmax
//! of `S`), the softmax runs while `dP`'s group computes.
//!
//! `defer_bulk_wait`: a `bulk_wait_read` moves down likewise (it reads no values; another one
//! later with no write between takes its range and replaces it). At the end of a loop body it
//! goes round: the body is scanned from its start (the next iteration) to the wait's old place,
//! and where the first write to the staged tile has a barrier before it there, the wait goes
//! before that barrier, and a copy after the loop covers the last iteration (and is deferred in
//! turn). An iteration's reduction then reads its tile while the next iteration computes, and
//! where the body ended `barrier`, bulk store, wait, `barrier`, that last barrier (it only
//! published the wait) goes. A wait placed with no barrier between it and the write it guards
//! (a copy after a loop) gets one after it.

use crate::ir::{Block, Op, Value};
use crate::lir::{self, LirBody, OpKind, SmemRange};
use crate::tir;

pub fn run_wgmma(k: &mut lir::Kernel) {
    sink_wgmma_waits(k);
}

pub fn run_bulk(k: &mut lir::Kernel) {
    defer_bulk_waits(k);
}

/// Where a scan from a wait stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    /// At op `at`, the last barrier passed on the way at `barrier`.
    Stop { at: usize, barrier: Option<usize> },
    /// At another wait of the same kind at `at`, nothing stopping the scan before it.
    Other { at: usize },
    /// At the end of the block (before its `yield`).
    End { barrier: Option<usize> },
}

impl Scan {
    /// Where the wait goes for this outcome: before the last barrier passed, else right here.
    fn place(self, end: usize) -> usize {
        match self {
            Scan::Stop { at, barrier } => barrier.unwrap_or(at),
            Scan::Other { at } => at,
            Scan::End { barrier } => barrier.unwrap_or(end),
        }
    }
}

/// Whether `op` (or an op in its regions) writes shared memory in one of `ranges`; a barrier in
/// its regions counts, since the wait would have to come before it.
fn writes(b: &LirBody, op: Op, ranges: &[SmemRange]) -> bool {
    if lir::shared_writes(b, op).is_some_and(|w| ranges.iter().any(|r| r.overlaps(w))) {
        return true;
    }
    b.op(op).regions.iter().any(|&r| b.block(r).ops.iter().any(|&o| b.op(o).kind == OpKind::Barrier || writes(b, o, ranges)))
}

/// The ops of `blk` a wait may pass: all but a final `yield`.
fn end_of(b: &LirBody, blk: Block) -> usize {
    let ops = &b.block(blk).ops;
    match ops.last() {
        Some(&y) if matches!(b.op(y).kind, OpKind::Tir(tir::OpKind::Yield)) => ops.len() - 1,
        _ => ops.len(),
    }
}

/// Scans `blk`'s ops `from..to` for what stops a wait guarding `ranges`: `stops` says which ops
/// stop it whatever they write, `other` which are another wait of its kind.
fn scan(
    b: &LirBody,
    blk: Block,
    from: usize,
    to: usize,
    ranges: &[SmemRange],
    stops: impl Fn(Op) -> bool,
    other: impl Fn(Op) -> bool,
) -> Scan {
    let mut barrier = None;
    for j in from..to {
        let op = b.block(blk).ops[j];
        if b.op(op).kind == OpKind::Barrier {
            barrier = Some(j);
        } else if other(op) {
            return Scan::Other { at: j };
        } else if stops(op) || writes(b, op, ranges) {
            return Scan::Stop { at: j, barrier };
        }
    }
    Scan::End { barrier }
}

/// Moves the op at `from` of `blk` to just before the op now at `to`.
fn move_op(b: &mut LirBody, blk: Block, from: usize, to: usize) {
    let ops = &mut b.blocks[blk.index()].ops;
    let op = ops.remove(from);
    ops.insert(if to > from { to - 1 } else { to }, op);
}

/// Every block with the op that holds it and the block that op is in (`None` for the entry).
fn parents(b: &LirBody) -> Vec<(Block, Option<(Op, Block)>)> {
    fn go(b: &LirBody, blk: Block, out: &mut Vec<(Block, Option<(Op, Block)>)>) {
        for &op in &b.block(blk).ops {
            for &r in &b.op(op).regions {
                out.push((r, Some((op, blk))));
                go(b, r, out);
            }
        }
    }
    let mut out = vec![(b.entry, None)];
    go(b, b.entry, &mut out);
    out
}

/// Whether `op`'s regions issue or wait for `wgmma` groups (which a wait moved past them would
/// have to count).
fn has_wgmma(b: &LirBody, op: Op) -> bool {
    b.op(op).regions.iter().any(|&r| {
        b.block(r).ops.iter().any(|&o| b.op(o).kind.is_wgmma() || matches!(b.op(o).kind, OpKind::WgmmaWait { .. }) || has_wgmma(b, o))
    })
}

/// Runs `sink_wgmma_wait`; returns the number of waits it moved.
pub fn sink_wgmma_waits(k: &mut lir::Kernel) -> usize {
    let b = &mut k.body;
    let mut moved = 0;
    for (blk, _) in parents(b) {
        let mut i = 0;
        while i < b.block(blk).ops.len() {
            let w = b.block(blk).ops[i];
            i += 1;
            let d = b.op(w);
            let (OpKind::WgmmaWait { pending: 0 }, [acc], [res]) = (&d.kind, &d.operands[..], &d.results[..]) else { continue };
            let Some(g) = b.producer(*acc).filter(|&g| b.op(g).kind.is_wgmma()) else { continue };
            let Some(gi) = b.block(blk).ops[..i - 1].iter().position(|&o| o == g) else { continue };
            let res: Value = *res;
            let ranges = lir::wgmma_reads(b, g);
            let at = {
                let stops = |o: Op| b.uses_in(o, res) > 0 || has_wgmma(b, o);
                let other = |o: Op| matches!(b.op(o).kind, OpKind::WgmmaWait { .. });
                scan(b, blk, i, end_of(b, blk), &ranges, stops, other).place(end_of(b, blk))
            };
            // Groups issued in regions in between could not be counted.
            if at <= i || b.block(blk).ops[gi + 1..at].iter().any(|&o| has_wgmma(b, o)) {
                continue;
            }
            // The groups issued after this one that may still run at the wait.
            let pending = b.block(blk).ops[gi + 1..at].iter().filter(|&&o| b.op(o).kind.is_wgmma()).count();
            b.op_mut(w).kind = OpKind::WgmmaWait { pending: u32::try_from(pending).unwrap_or(u32::MAX) };
            move_op(b, blk, i - 1, at);
            i -= 1;
            moved += 1;
        }
    }
    moved
}

/// Runs `defer_bulk_wait`; returns the number of waits it moved or merged.
pub fn defer_bulk_waits(k: &mut lir::Kernel) -> usize {
    let b = &mut k.body;
    let mut changed = 0;
    // The waits to place, each once: a copy made after a loop joins the list.
    let mut work: Vec<(Op, Block)> = vec![];
    let parent = parents(b);
    for &(blk, _) in &parent {
        work.extend(b.block(blk).ops.iter().filter(|&&o| matches!(b.op(o).kind, OpKind::BulkWaitRead { .. })).map(|&o| (o, blk)));
    }
    let is_bulk_wait = |b: &LirBody, o: Op| matches!(b.op(o).kind, OpKind::BulkWaitRead { .. });
    while let Some((w, blk)) = work.pop() {
        let Some(i) = b.block(blk).ops.iter().position(|&o| o == w) else { continue };
        let OpKind::BulkWaitRead { offset, bytes } = b.op(w).kind else { continue };
        let range = SmemRange::new(offset, bytes as i64);
        let end = end_of(b, blk);
        let tail = scan(b, blk, i + 1, end, &[range], |_| false, |o| is_bulk_wait(b, o));
        if let Scan::Other { at } = tail {
            // The later wait covers this one's tile too.
            let other = b.block(blk).ops[at];
            if let OpKind::BulkWaitRead { offset: o2, bytes: n2 } = b.op(other).kind {
                let start = offset.min(o2);
                let stop = (offset as u64 + bytes as u64).max(o2 as u64 + n2 as u64);
                let merged = u32::try_from(stop - start as u64).unwrap_or(u32::MAX);
                b.op_mut(other).kind = OpKind::BulkWaitRead { offset: start, bytes: merged };
                b.blocks[blk.index()].ops.remove(i);
                changed += 1;
                continue;
            }
        }
        let mut at = tail.place(end);
        // Round the loop: the next iteration's first write to the tile, before the wait's
        // old place, with a barrier ahead of it.
        let holder = parent.iter().find(|(x, _)| *x == blk).and_then(|(_, p)| *p);
        let mut after_loop = None;
        if let (Scan::End { .. }, Some((lp, outer))) = (tail, holder)
            && matches!(b.op(lp).kind, OpKind::Tir(tir::OpKind::For))
            && let Scan::Stop { barrier: Some(pb), .. } = scan(b, blk, 0, i, &[range], |_| false, |_| false)
        {
            at = pb;
            after_loop = Some((lp, outer));
        }
        // A wait with no barrier between it and the write it guards orders only its own thread:
        // a barrier goes in after it (a copy after a loop can land there).
        if let Scan::Stop { at: w_at, barrier: None } = tail
            && after_loop.is_none()
        {
            let span = b.span(w);
            let bar = b.create_op(OpKind::Barrier, vec![], vec![], vec![], span);
            b.blocks[blk.index()].ops.insert(w_at, bar);
            at = w_at;
        }
        if at == i + 1 && after_loop.is_none() {
            continue;
        }
        // Gone round the loop, the wait no longer needs the barrier the lowering put after the
        // bulk store (`barrier`, `tma_store`, wait, `barrier` ending the body): the next
        // iteration's barrier after the wait orders the tile's next write, and the bulk store
        // was the only thing since the barrier before it.
        let trailing = after_loop.is_some() && trailing_barrier_of_store(b, blk, i, offset);
        move_op(b, blk, i, at);
        changed += 1;
        if trailing {
            let end = end_of(b, blk);
            b.blocks[blk.index()].ops.remove(end - 1);
        }
        if let Some((lp, outer)) = after_loop {
            let span = b.span(w);
            let copy = b.create_op(OpKind::BulkWaitRead { offset, bytes }, vec![], vec![], vec![], span);
            let li = b.block(outer).ops.iter().position(|&o| o == lp).unwrap_or(0);
            b.blocks[outer.index()].ops.insert(li + 1, copy);
            work.push((copy, outer));
        }
    }
    changed
}

/// Whether the wait at `i` of `blk` sits in `barrier`, `tma_store` (staged at `offset`), wait,
/// `barrier` at the end of the block: the last barrier only publishes the wait.
fn trailing_barrier_of_store(b: &LirBody, blk: Block, i: usize, offset: u32) -> bool {
    let ops = &b.block(blk).ops;
    let kind = |j: usize| ops.get(j).map(|&o| &b.op(o).kind);
    i >= 2
        && i + 2 == end_of(b, blk)
        && matches!(kind(i - 2), Some(OpKind::Barrier))
        && matches!(kind(i - 1), Some(OpKind::TmaStore { offset: o, .. }) if *o == offset)
        && matches!(kind(i + 1), Some(OpKind::Barrier))
}
