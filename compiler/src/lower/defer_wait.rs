//! Thread-IR pass `defer_wgmma_wait`: in a loop fed by the copy engine, an iteration's `wgmma`
//! keeps running while the next iteration waits for its data and issues its own.
//!
//! `lower::pipeline` ends each iteration of a pipelined `wgmma` loop with `wgmma_wait` (group 0:
//! every MMA done) and starts the next with a barrier, after which thread 0 refills the buffer
//! the previous iteration read. Between the wait and the next issue the tensor cores idle. This
//! pass reorders such a body to
//!
//! ```text
//! tma_wait (this stage)   local_mma … wgmma   wgmma_wait 1   barrier   tma_copy … (refill)
//! ```
//!
//! `wgmma_wait 1` leaves this iteration's group in flight and waits only for the previous one;
//! the barrier after it (every warp has passed it) is what makes the previous iteration's
//! buffers free, so the refill issued after it still overwrites only a buffer no MMA reads. Each
//! thread waits on the stage's mbarrier itself, so the data needs no barrier before the MMA.
//! When the runtime could not encode the tensor maps, `tma_copy` is a plain copy by every
//! thread: what iteration `i` writes (after its barrier) iteration `i + 1`'s barrier publishes
//! before iteration `i + 2` reads it, and a barrier is added before the loop for the prologue's
//! copies. The accumulator leaves the loop in flight: a `wgmma_wait 0` right after the loop is
//! what later ops read.
//!
//! The loop qualifies only when its body is the pipeline's and nothing else: one `wgmma` op whose
//! accumulator is a loop-carried value read by nothing else, its `wgmma_wait` yielded and read
//! by nothing else, the copy engine's ops, one barrier before the MMA, and scalar arithmetic.

use crate::ir::{Block, Op, Value};
use crate::lir::{self, LirBody, OpKind};
use crate::tir;

pub fn run(k: &mut lir::Kernel) {
    deferred(k);
}

/// Runs the pass; returns the number of loops it changed.
pub fn deferred(k: &mut lir::Kernel) -> usize {
    let mut blocks = vec![k.body.entry];
    k.body.walk(k.body.entry, &mut |op| blocks.extend(k.body.op(op).regions.iter().copied()));
    let mut changed = 0;
    for blk in blocks {
        let mut at = 0;
        while at < k.body.block(blk).ops.len() {
            let op = k.body.block(blk).ops[at];
            if let Some(plan) = plan(&k.body, op) {
                at = apply(&mut k.body, blk, at, plan);
                changed += 1;
            }
            at += 1;
        }
    }
    changed
}

/// What changes in one qualifying loop.
struct Plan {
    body: Block,
    /// Positions in the body: the barrier, the MMA and its wait.
    barrier: usize,
    mma: usize,
    wait: usize,
    /// The index of the accumulator among the loop's results.
    result: usize,
}

fn pure(kind: &OpKind) -> bool {
    matches!(
        kind,
        OpKind::Tir(
            tir::OpKind::Binary(_)
                | tir::OpKind::Cmp(_)
                | tir::OpKind::Unary(_)
                | tir::OpKind::Const(_)
                | tir::OpKind::Select
                | tir::OpKind::Cast
        )
    )
}

/// The plan for `op` if it is a qualifying `for` loop.
fn plan(b: &LirBody, op: Op) -> Option<Plan> {
    let d = b.op(op);
    if !matches!(d.kind, OpKind::Tir(tir::OpKind::For)) || d.regions.len() != 1 {
        return None;
    }
    let body = d.regions[0];
    let ops = &b.block(body).ops;
    let kind = |i: usize| &b.op(ops[i]).kind;
    let is_mma = |k: &OpKind| matches!(k, OpKind::LocalMma { wgmma: true, .. } | OpKind::RegMma { wgmma: true, .. });
    let mut mmas = (0..ops.len()).filter(|&i| is_mma(kind(i)));
    let (mma, None) = (mmas.next()?, mmas.next()) else { return None };
    let mut barriers = (0..ops.len()).filter(|&i| matches!(kind(i), OpKind::Barrier));
    let (barrier, None) = (barriers.next()?, barriers.next()) else { return None };
    let mut waits = (0..ops.len()).filter(|&i| matches!(kind(i), OpKind::WgmmaWait { .. }));
    let (wait, None) = (waits.next()?, waits.next()) else { return None };
    let last = ops.len().checked_sub(1)?;
    let (m, w, y) = (b.op(ops[mma]), b.op(ops[wait]), b.op(ops[last]));
    let shaped = matches!(kind(last), OpKind::Tir(tir::OpKind::Yield))
        && matches!(kind(wait), OpKind::WgmmaWait { pending: 0 })
        && barrier < mma
        && mma < wait
        && wait < last
        && w.operands.first() == m.results.first();
    if !shaped {
        return None;
    }
    // Everything else is the copy engine's or scalar arithmetic; copies come after the MMA.
    let mut copies = 0;
    for (i, &o) in ops.iter().enumerate() {
        let k = &b.op(o).kind;
        let ok = match k {
            OpKind::TmaCopy { .. } => {
                copies += 1;
                i > mma
            }
            OpKind::TmaWait { .. } | OpKind::TmaArrive { .. } | OpKind::AsyncWait { .. } | OpKind::AsyncCommit => true,
            _ => i == mma || i == wait || i == barrier || i == last || pure(k),
        };
        if !ok || !b.op(o).regions.is_empty() {
            return None;
        }
    }
    // The accumulator: a loop-carried value read only by the MMA, whose waited result is only
    // yielded back in its place.
    let acc = *m.operands.first()?;
    let waited = *w.results.first()?;
    let args = &b.block(body).args;
    let carried = args.iter().position(|&a| a == acc)?;
    let result = carried.checked_sub(1)?;
    let uses = |v: Value| ops.iter().map(|&o| b.op(o).operands.iter().filter(|&&x| x == v).count()).sum::<usize>();
    if copies == 0 || uses(acc) != 1 || uses(waited) != 1 || y.operands.get(result) != Some(&waited) {
        return None;
    }
    Some(Plan { body, barrier, mma, wait, result })
}

/// Rewrites the loop at position `at` of `blk`; returns the position of the op it added after
/// the loop.
fn apply(b: &mut LirBody, blk: Block, at: usize, p: Plan) -> usize {
    let for_op = b.block(blk).ops[at];
    let span = b.span(for_op);
    // The body: the wait right after the MMA (group 1), then the barrier.
    let ops = &mut b.blocks[p.body.index()].ops;
    let (barrier, wait) = (ops[p.barrier], ops[p.wait]);
    ops.remove(p.wait);
    ops.remove(p.barrier);
    let mma_at = p.mma - 1;
    ops.insert(mma_at + 1, wait);
    ops.insert(mma_at + 2, barrier);
    b.op_mut(wait).kind = OpKind::WgmmaWait { pending: 1 };
    // Before the loop: the barrier that publishes the prologue's copies when they are plain
    // stores.
    let pre = b.create_op(OpKind::Barrier, vec![], vec![], vec![], span);
    b.blocks[blk.index()].ops.insert(at, pre);
    let at = at + 1;
    // After the loop: the last group waited for.
    let acc = b.op(for_op).results[p.result];
    let ty = b.ty(acc).clone();
    let drain = b.create_op(OpKind::WgmmaWait { pending: 0 }, vec![acc], vec![ty], vec![], span);
    let waited = b.result(drain);
    // Right after the loop: ptxas serialises the MMAs when another instruction (even
    // `cp.async.wait_group`) comes between the loop's end and this wait.
    let after = at + 1;
    let rest: Vec<Op> = b.block(blk).ops[after..].to_vec();
    b.blocks[blk.index()].ops.insert(after, drain);
    for op in rest {
        b.replace_uses_in(op, acc, waited);
    }
    after
}
