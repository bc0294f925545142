//! Thread-IR pass `hoist_loads`: a global `load` from a tensor the kernel never writes moves up
//! its block to just before the last op ahead of it that blocks the thread (a `wgmma_wait`,
//! `tma_wait`, `async_wait`, `bulk_wait_read` or barrier), with the pure ops computing its
//! operands, so that its latency overlaps that wait instead of following it. Not further: the
//! loaded registers would be live longer for nothing (at D 128 the attention backward's two row
//! statistics at the top of the loop body made ptxas spill).
//!
//! In a loop body the row statistics an attention backward loads each iteration (`lse`,
//! `delta`) are then in flight while the iteration's first products run; the lowering had put
//! them where the program reads them, after those products' waits, which the loads could not
//! cross later (the waits are inline assembly that clobbers memory).
//!
//! A read-only tensor (an immutable parameter or a view of one; distinct parameters do not
//! overlap, `docs/language.md`) has no write to order against, and an op stays in its block, so
//! it runs under the same conditions as before. Only the registers of the loaded values live
//! longer.

use crate::ir::{Block, Op};
use crate::lir::{self, LirBody, OpKind, Type};
use crate::tir;

pub fn run(k: &mut lir::Kernel) {
    hoisted(k);
}

/// Runs the pass; returns the number of loads it moved.
pub fn hoisted(k: &mut lir::Kernel) -> usize {
    let b = &mut k.body;
    let mut blocks = vec![b.entry];
    b.walk(b.entry, &mut |op| blocks.extend(b.op(op).regions.iter().copied()));
    let mut moved = 0;
    for blk in blocks {
        let loads: Vec<Op> = b.block(blk).ops.iter().copied().filter(|&o| read_only_load(b, o)).collect();
        for op in loads {
            moved += usize::from(hoist(b, blk, op));
        }
    }
    moved
}

fn read_only_load(b: &LirBody, op: Op) -> bool {
    let d = b.op(op);
    matches!(d.kind, OpKind::Tir(tir::OpKind::Load))
        && d.operands.first().is_some_and(|&t| matches!(b.ty(t), Type::Tensor { mutable: false, .. }))
}

/// Ops that compute a value from their operands alone, with no effect: free to move up.
fn pure(kind: &OpKind) -> bool {
    match kind {
        OpKind::Tir(k) => {
            k.is_elementwise()
                || matches!(
                    k,
                    tir::OpKind::View
                        | tir::OpKind::Dim(_)
                        | tir::OpKind::Splat
                        | tir::OpKind::Arange(_)
                        | tir::OpKind::ProgramId(_)
                        | tir::OpKind::NumPrograms(_)
                )
        }
        OpKind::Reshape => true,
        _ => false,
    }
}

fn position(b: &LirBody, blk: Block, op: Op) -> Option<usize> {
    b.block(blk).ops.iter().position(|&o| o == op)
}

/// Ops that block the thread until something else has finished.
fn blocking(kind: &OpKind) -> bool {
    matches!(
        kind,
        OpKind::WgmmaWait { .. } | OpKind::TmaWait { .. } | OpKind::AsyncWait { .. } | OpKind::BulkWaitRead { .. } | OpKind::Barrier
    )
}

/// Moves load `op` of `blk` to just before the last blocking op ahead of it (with the pure ops
/// computing its operands after that point); returns whether it moved.
fn hoist(b: &mut LirBody, blk: Block, op: Op) -> bool {
    let Some(at) = position(b, blk, op) else { return false };
    let Some(wait) = b.block(blk).ops[..at].iter().rev().copied().find(|&o| blocking(&b.op(o).kind)) else { return false };
    lift(b, blk, op, wait, 0)
}

/// Moves `op` to just before `target` (earlier in `blk`), lifting first the definitions of its
/// operands that lie between them, which must be pure; `false` (nothing of `op` moved) when one
/// is not.
fn lift(b: &mut LirBody, blk: Block, op: Op, target: Op, depth: u32) -> bool {
    let Some(t) = position(b, blk, target) else { return false };
    if depth > 16 {
        return false;
    }
    let defs: Vec<Op> = b.op(op).operands.iter().filter_map(|&v| b.producer(v)).collect();
    for def in defs {
        let after = position(b, blk, def).is_some_and(|j| j >= position(b, blk, target).unwrap_or(t));
        if after && !(pure(&b.op(def).kind) && lift(b, blk, def, target, depth + 1)) {
            return false;
        }
    }
    let (Some(at), Some(t)) = (position(b, blk, op), position(b, blk, target)) else { return false };
    let ops = &mut b.blocks[blk.index()].ops;
    ops.remove(at);
    ops.insert(t, op);
    true
}
