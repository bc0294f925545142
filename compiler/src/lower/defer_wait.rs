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
//!
//! Or the same with an epilogue: the waited accumulator read only by a last `if` whose result
//! is yielded in its place (a persistent loop over tiles and their k-steps that stores a tile and
//! restarts from zero after its last step: `if last { store(acc); yield 0 } else { yield acc }`).
//! Each branch that reads the accumulator other than by yielding it starts with a
//! `wgmma_wait 0` of its own; the others pass the group on in flight, as the plain loop does.
//! The accumulator then leaves the `if`: the loop yields the in-flight value itself, and a
//! restart from a zero tile becomes a loop-carried `accumulate` flag, false after it, that makes
//! the next `wgmma` ignore the registers (`scale-d` 0). Copying accumulators a `wgmma` group may
//! still own (into an `if`'s result) or writing zeros into them makes ptxas serialise every
//! `wgmma` of the kernel.

use crate::ir::{Block, Op, Value};
use crate::lir::{self, LirBody, OpKind};
use crate::tir;

pub fn run(k: &mut lir::Kernel) {
    deferred(k);
}

/// Runs the pass; returns the number of loops it changed.
pub fn deferred(k: &mut lir::Kernel) -> usize {
    let mut changed = 0;
    for blk in k.body.blocks() {
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
    /// The epilogue `if` that reads the waited accumulator, if any.
    epilogue: Option<Epilogue>,
}

struct Epilogue {
    op: Op,
    /// Which of its results is the accumulator.
    result: usize,
    /// Per branch, whether it restarts from a zero tile (else it yields the accumulator).
    zero: Vec<bool>,
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
                | tir::OpKind::Fma
                | tir::OpKind::Cast
                | tir::OpKind::ProgramId(_)
                | tir::OpKind::NumPrograms(_)
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
    let mut mmas = (0..ops.len()).filter(|&i| kind(i).is_wgmma());
    let (mma, None) = (mmas.next()?, mmas.next()) else { return None };
    let mut barriers = (0..ops.len()).filter(|&i| matches!(kind(i), OpKind::Barrier));
    let (barrier, None) = (barriers.next()?, barriers.next()) else { return None };
    let mut waits = (0..ops.len()).filter(|&i| matches!(kind(i), OpKind::WgmmaWait { .. }));
    let (wait, None) = (waits.next()?, waits.next()) else { return None };
    let last = ops.len().checked_sub(1)?;
    // An epilogue: one op with regions, an `if` right before the yield.
    let epilogue = match (0..ops.len()).filter(|&i| !b.op(ops[i]).regions.is_empty()).collect::<Vec<_>>()[..] {
        [] => None,
        [i] if i + 1 == last && i > wait && matches!(kind(i), OpKind::Tir(tir::OpKind::If)) => Some(i),
        _ => return None,
    };
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
            _ => i == mma || i == wait || i == barrier || i == last || Some(i) == epilogue || pure(k),
        };
        if !ok {
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
    let nested = |v: Value| ops.iter().map(|&o| b.uses_in(o, v)).sum::<usize>();
    if copies == 0 || uses(acc) != 1 || nested(acc) != uses(acc) {
        return None;
    }
    let epilogue = match epilogue {
        // The waited value is yielded directly, and read nowhere else.
        None if uses(waited) == 1 && nested(waited) == 1 && y.operands.get(result) == Some(&waited) => None,
        None => return None,
        // The `if` reads the waited value inside its branches only, and its result is yielded.
        Some(i) => {
            let e = ops[i];
            let ok = uses(waited) == 0
                && nested(waited) == b.uses_in(e, waited)
                && uses(*y.operands.get(result)?) == 1
                && b.op(e).regions.len() == 2;
            if !ok {
                return None;
            }
            let ri = b.op(e).results.iter().position(|r| y.operands.get(result) == Some(r))?;
            let mut zero = vec![];
            for &blk in &b.op(e).regions {
                let yielded = *b.op(*b.block(blk).ops.last()?).operands.get(ri)?;
                let is_zero = b
                    .producer(yielded)
                    .is_some_and(|o| matches!(b.op(o).kind, OpKind::Tir(tir::OpKind::Const(tir::Lit::Float(z))) if z == 0.0));
                if yielded != waited && !is_zero {
                    return None;
                }
                zero.push(is_zero);
            }
            // The restart needs `scale-d`: a shared-memory `wgmma` of a pipelined loop (both
            // bases given).
            if zero.contains(&true) && !(matches!(m.kind, OpKind::LocalMma { .. }) && m.operands.len() == 3) {
                return None;
            }
            Some(Epilogue { op: e, result: ri, zero })
        }
    };
    Some(Plan { body, barrier, mma, wait, result, epilogue })
}

/// In each branch of the epilogue `if` that reads `acc` other than by yielding it, a
/// `wgmma_wait 0` first, whose result the branch reads instead; then the body's scalar
/// arithmetic that only that branch reads (the tile's coordinates for its store), moved in
/// after the wait. ptxas serialises every `wgmma` when the wait is not the first instruction of
/// its branch, and LLVM's machine sinking would put such arithmetic there.
fn wait_in_branches(b: &mut LirBody, body_blk: Block, e: Op, acc: Value, span: crate::diag::Span) {
    for blk in b.op(e).regions.clone() {
        let ops = b.block(blk).ops.clone();
        let Some((_, body)) = ops.split_last() else { continue };
        if body.iter().all(|&o| b.uses_in(o, acc) == 0) {
            continue;
        }
        let ty = b.ty(acc).clone();
        let done = b.create_op(OpKind::WgmmaWait { pending: 0 }, vec![acc], vec![ty], vec![], span);
        let waited = b.result(done);
        // The yield keeps the in-flight value: the loop yields that one (`acc_out_of_epilogue`).
        for &o in body {
            b.replace_uses_in(o, acc, waited);
        }
        b.blocks[blk.index()].ops.insert(0, done);
        sink_into(b, body_blk, blk);
    }
}

/// Moves the pure ops of `from` whose results only `into` (a branch of an op of `from`) reads
/// into it, after its first op, in their order.
fn sink_into(b: &mut LirBody, from: Block, into: Block) {
    let mut moved: Vec<Op> = vec![];
    for &o in b.block(from).ops.clone().iter().rev() {
        let d = b.op(o);
        if !pure(&d.kind) || d.results.is_empty() || !d.regions.is_empty() {
            continue;
        }
        // Every use is in `into` or in an op already moved (both counted in `from`'s, which
        // hold them until the move).
        let only_there = d.results.iter().all(|&r| {
            let inside: usize = b.block(into).ops.iter().chain(&moved).map(|&x| b.uses_in(x, r)).sum();
            let all: usize = b.block(from).ops.iter().map(|&x| b.uses_in(x, r)).sum();
            inside > 0 && inside == all
        });
        if only_there {
            moved.push(o);
        }
    }
    if moved.is_empty() {
        return;
    }
    b.blocks[from.index()].ops.retain(|o| !moved.contains(o));
    moved.reverse();
    let at = 1.min(b.block(into).ops.len());
    b.blocks[into.index()].ops.splice(at..at, moved);
}

/// Takes the accumulator out of the epilogue `if`: the loop yields the MMA's in-flight result
/// `acc` itself (a branch either yields it or a zero tile, so no register is copied while a
/// group may own it), and the `if` loses that result. When a branch restarts from zero, a new
/// loop-carried flag, true before the loop and false after such a branch, is the `wgmma`'s
/// `accumulate` operand. Returns the loop's new position in `blk` (a constant may be added
/// before it).
fn acc_out_of_epilogue(b: &mut LirBody, blk: Block, at: usize, p: &Plan, e: &Epilogue, acc: Value) -> usize {
    let for_op = b.block(blk).ops[at];
    let span = b.span(for_op);
    let loop_yield = *b.block(p.body).ops.last().unwrap_or(&e.op);
    b.op_mut(loop_yield).operands[p.result] = acc;
    b.remove_result(e.op, e.result);
    for blk in b.op(e.op).regions.clone() {
        let Some(&yield_op) = b.block(blk).ops.last() else { continue };
        let gone = b.op_mut(yield_op).operands.remove(e.result);
        // A zero tile now unread is not materialised.
        if let Some(z) = b.producer(gone).filter(|_| b.block(blk).ops.iter().all(|&o| b.uses_in(o, gone) == 0)) {
            b.blocks[blk.index()].ops.retain(|&o| o != z);
        }
    }
    if !e.zero.contains(&true) {
        return at;
    }
    let flag_ty = b.ty(b.op(e.op).operands[0]).clone();
    let konst = |b: &mut LirBody, v: bool| {
        let op = b.create_op(OpKind::Tir(tir::OpKind::Const(tir::Lit::Bool(v))), vec![], vec![flag_ty.clone()], vec![], span);
        (op, b.result(op))
    };
    let (init_op, init) = konst(b, true);
    b.blocks[blk.index()].ops.insert(at, init_op);
    b.op_mut(for_op).operands.push(init);
    let on = b.add_block_arg(p.body, flag_ty.clone());
    b.add_result(for_op, flag_ty.clone());
    let mma = b.block(p.body).ops.iter().copied().find(|&o| matches!(b.op(o).kind, OpKind::LocalMma { wgmma: true, .. }));
    if let Some(mma) = mma {
        b.op_mut(mma).operands.push(on);
    }
    for (i, blk) in b.op(e.op).regions.clone().into_iter().enumerate() {
        let Some(&yield_op) = b.block(blk).ops.last() else { continue };
        let (flag_op, flag) = konst(b, !e.zero[i]);
        let n = b.block(blk).ops.len();
        b.blocks[blk.index()].ops.insert(n - 1, flag_op);
        b.op_mut(yield_op).operands.push(flag);
    }
    let next = b.add_result(e.op, flag_ty);
    b.op_mut(loop_yield).operands.push(next);
    at + 1
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
    let mut at = at;
    if let Some(e) = &p.epilogue {
        wait_in_branches(b, p.body, e.op, b.result(wait), span);
        at = acc_out_of_epilogue(b, blk, at, &p, e, b.result(wait));
    }
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
