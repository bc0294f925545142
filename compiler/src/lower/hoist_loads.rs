//! Thread-IR pass `hoist_loads`: a global `load` from a tensor the kernel never writes moves up
//! its block to just before the first op ahead of it that blocks the thread (a `wgmma_wait`,
//! `tma_wait`, `async_wait`, `bulk_wait_read` or barrier) and follows the block's last loop
//! ahead of it, with the pure ops computing its operands, so that its latency overlaps those
//! waits instead of following them.
//!
//! In a loop body the row statistics an attention backward loads each iteration (`lse`,
//! `delta`) are then in flight while the iteration waits for its copies and runs its first
//! products; the lowering had put them where the program reads them, after those products'
//! waits, which the loads could not cross later (the waits are inline assembly that clobbers
//! memory). Measured on an H100 (docs/benchmarks.md, fifteenth session): the fused backward 6 %
//! faster at D 128 and 9 % at D 64 than with the loads just before the last wait, although at
//! D 128 the registers they hold longer spill a few more bytes.
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
    let mut moved = 0;
    for blk in b.blocks() {
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

fn position(b: &LirBody, blk: Block, op: Op) -> Option<usize> {
    b.block(blk).ops.iter().position(|&o| o == op)
}

fn is_loop(kind: &OpKind) -> bool {
    matches!(kind, OpKind::Tir(tir::OpKind::For | tir::OpKind::While))
}

/// Ops that block the thread until something else has finished.
fn blocking(kind: &OpKind) -> bool {
    matches!(
        kind,
        OpKind::WgmmaWait { .. } | OpKind::TmaWait { .. } | OpKind::AsyncWait { .. } | OpKind::BulkWaitRead { .. } | OpKind::Barrier
    )
}

/// Moves load `op` of `blk` to just before the first blocking op ahead of it (with the pure ops
/// computing its operands after that point), or as far towards it as its operands allow; returns
/// whether it moved.
fn hoist(b: &mut LirBody, blk: Block, op: Op) -> bool {
    let Some(at) = position(b, blk, op) else { return false };
    // Not above a loop: the registers would be held through all of its iterations (a GEMM's
    // bias, loaded for the epilogue, across the main loop). A branch runs once, like the
    // straight-line code around it.
    let from = b.block(blk).ops[..at].iter().rposition(|&o| is_loop(&b.op(o).kind)).map_or(0, |i| i + 1);
    let waits: Vec<Op> = b.block(blk).ops[from..at].iter().copied().filter(|&o| blocking(&b.op(o).kind)).collect();
    // The earliest wait the load (with its operands) can go before: an operand computed by an
    // effect between two waits pins it below that effect.
    waits.into_iter().any(|w| lift(b, blk, op, w, 0))
}

/// Moves `op` to just before `target` (earlier in `blk`), lifting first the definitions of its
/// operands that lie between them, which must be pure; `false` (`op` not moved) when one is not.
/// Pure definitions already lifted stay where they went (`hoist` then tries a later wait): they
/// have no effect, so only where their registers live changes.
fn lift(b: &mut LirBody, blk: Block, op: Op, target: Op, depth: u32) -> bool {
    let Some(t) = position(b, blk, target) else { return false };
    if depth > 16 {
        return false;
    }
    let defs: Vec<Op> = b.op(op).operands.iter().filter_map(|&v| b.producer(v)).collect();
    for def in defs {
        let after = position(b, blk, def).is_some_and(|j| j >= position(b, blk, target).unwrap_or(t));
        if after && !(OpKind::is_pure(&b.op(def).kind) && lift(b, blk, def, target, depth + 1)) {
            return false;
        }
    }
    let (Some(at), Some(t)) = (position(b, blk, op), position(b, blk, target)) else { return false };
    let ops = &mut b.blocks[blk.index()].ops;
    ops.remove(at);
    ops.insert(t, op);
    true
}
