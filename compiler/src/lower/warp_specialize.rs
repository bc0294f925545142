//! `warp_specialize`: a kernel marked `#[warp_specialize]` whose main loop pipelines bulk tensor
//! copies (`pipeline.rs`, sm_90a) gets a producer warpgroup that issues them, so that the
//! kernel's own warps (the consumers) only wait for data and compute.
//!
//! Before, thread 0 issued iteration `i + stages - 1`'s copies inside iteration `i`, after a
//! block-wide barrier that told it every warp was done with the buffer being refilled. After:
//! - `ws_init` initialises, per stage, a "full" mbarrier (the copies' bytes, one arrival) and an
//!   "empty" one (one arrival per consumer thread), then the block synchronises once;
//! - `ws_split` sends the threads past the consumers (one warpgroup) into a region of their own:
//!   a loop over the same iterations that waits until the consumers released a stage (`empty`,
//!   from the second round of stages on), then issues that iteration's copies into it (the same
//!   `tma_copy`s, their operands recomputed from the loop's index: the pure scalar ops they came
//!   from are cloned) and arrives on `full` with the bytes to expect; then it leaves the kernel;
//! - the consumers' loop keeps its wait on `full` (now unconditional) and, where the barrier
//!   stood (the point where the previous iteration's tensor-core reads are complete), releases
//!   the previous iteration's stage (`mbar_arrive` on `empty`) instead of synchronising; its
//!   prologue copies are gone. From the split on their barriers are named barriers of the
//!   consumer threads (codegen), and each side sets its registers with `setmaxnreg`.
//!
//! The pass leaves the kernel as it is (and `Kernel::ws` unset) unless it finds exactly one such
//! loop at the top level whose copies it can recompute, no `return`, whole consumer warpgroups, room for the
//! extra mbarriers, and (under `#[blocks_per_sm(N)]`, N > 1) at least the registers the
//! consumers had without the producer.

use super::max_shared_bytes;
use crate::diag::Span;
use crate::ir::{Block, Op, Value, ValueDef};
use crate::lir::{self, Kernel, OpKind, PRODUCER_THREADS, TurnStep, WarpSpec};
use crate::tir::{self, BinaryOp, CmpOp, Lit};
use std::collections::{HashMap, HashSet};

/// Registers per thread the producer warpgroup keeps (CUTLASS's choice for a load warpgroup).
const PRODUCER_REGS: u32 = 40;
/// The most a consumer thread asks for (FlashAttention-3's and CUTLASS's two-consumer figure).
const MAX_CONSUMER_REGS: u32 = 240;

pub fn run(k: &mut Kernel) {
    if k.warp_specialize
        && k.ws.is_none()
        && let Some(done) = specialize(k)
    {
        *k = done;
    }
}

/// The registers each side asks for: the launch gives every thread `65536 / (threads · blocks)`
/// (rounded down to 8); the producer gives back all but `PRODUCER_REGS` and the consumers share
/// them. `None` where the consumers would gain nothing.
pub fn register_split(consumers: u32, blocks_per_sm: u32) -> (Option<u32>, Option<u32>) {
    let threads = consumers + PRODUCER_THREADS;
    let at_launch = launch_registers(threads, blocks_per_sm);
    if at_launch >= 248 || consumers == 0 {
        return (None, None);
    }
    let pool = at_launch * threads - PRODUCER_REGS * PRODUCER_THREADS;
    let consumer = (pool / consumers / 8 * 8).min(MAX_CONSUMER_REGS);
    if consumer <= at_launch { (None, None) } else { (Some(PRODUCER_REGS), Some(consumer)) }
}

/// The registers a consumer thread has with the producer warpgroup (after `setmaxnreg`).
fn consumer_registers(consumers: u32, blocks_per_sm: u32) -> u32 {
    let at_launch = launch_registers(consumers + PRODUCER_THREADS, blocks_per_sm).min(255);
    register_split(consumers, blocks_per_sm).1.unwrap_or(at_launch)
}

/// Registers per thread when `blocks_per_sm` blocks of `threads` share the 64K register file
/// (ptxas's granule of 8).
fn launch_registers(threads: u32, blocks_per_sm: u32) -> u32 {
    (65536 / (threads * blocks_per_sm.max(1))) / 8 * 8
}

/// One pipeline of the loop: the bulk tensor copies of one `dot` operand group, completing on
/// one set of mbarriers.
struct Pipe {
    /// The body's copies and arrival, in order; its wait on them.
    copies: Vec<Op>,
    arrive: Op,
    wait: Op,
    /// The barrier that guarded the refill.
    barrier: Op,
    /// The "full" mbarriers and the bytes a stage delivers; the stages.
    mbar: u32,
    bytes: u32,
    stages: u32,
    /// The copies' stage, validity and iteration (`valid = iv_next < hi`).
    stage: Value,
    valid: Value,
    iv_next: Value,
    /// Where its "empty" mbarriers go.
    empty: u32,
}

/// What the pass found: the loop (in the entry block), its body and its pipelines.
struct Found {
    lp: Op,
    body: Block,
    pipes: Vec<Pipe>,
}

fn specialize(k: &Kernel) -> Option<Kernel> {
    let c = k.threads;
    if !c.is_multiple_of(PRODUCER_THREADS) || c + PRODUCER_THREADS > 1024 {
        return None;
    }
    // Several blocks per multiprocessor (`#[blocks_per_sm]`) bound each thread's registers: the
    // producer's threads would take a share the consumers had without it.
    if let Some(n) = k.blocks_per_sm.filter(|&n| n > 1)
        && consumer_registers(c, n) < launch_registers(c, n).min(255)
    {
        return None;
    }
    let mut f = find(k)?;
    let mut shared = k.shared_bytes.div_ceil(8) * 8;
    for p in &mut f.pipes {
        p.empty = shared;
        shared = shared.checked_add(8 * p.stages)?;
    }
    if shared > max_shared_bytes(crate::Target::Sm90a) {
        return None;
    }
    let mut out = k.clone();
    let b = &mut out.body;
    let entry = b.entry;
    let span = b.span(f.lp);
    let producer = build_producer(k, b, &f, span)?;

    // The consumers: no prologue copies; in the loop, no copies, each refill's barrier becomes
    // (or, when threads also write shared memory in the loop, is followed by) the release of the
    // previous iteration's stage, and the waits on the copies no longer depend on maps.
    let mbars: HashSet<u32> = f.pipes.iter().map(|p| p.mbar).collect();
    let ours = |kind: &OpKind| match kind {
        OpKind::TmaCopy { mbar: m, .. } | OpKind::TmaArrive { mbar: m, .. } | OpKind::MbarInit { mbar: m, .. } => mbars.contains(m),
        _ => false,
    };
    // Without `cp.async` copies anywhere, the loop's and prologue's group commits and waits are
    // left with nothing to do.
    let mut cp_async = false;
    k.body.walk(entry, &mut |o| cp_async |= matches!(k.body.op(o).kind, OpKind::AsyncCopy { .. }));
    let groups = |o: &Op| matches!(k.body.op(*o).kind, OpKind::AsyncCommit | OpKind::AsyncWait { .. });
    let lp_at = b.block(entry).ops.iter().position(|&o| o == f.lp)?;
    let keep: Vec<Op> = b
        .block(entry)
        .ops
        .iter()
        .enumerate()
        .filter(|&(i, o)| !(ours(&k.body.op(*o).kind) || i < lp_at && !cp_async && groups(o)))
        .map(|(_, &o)| o)
        .collect();
    b.blocks[entry.index()].ops = keep;
    // Threads writing shared memory in the loop may rely on the barriers: those stay.
    // (Branches count by what they hold: attention's causal mask is a branch of register ops.)
    let refills: HashSet<Op> = f.pipes.iter().map(|p| p.barrier).collect();
    let mut thread_writes = false;
    b.walk(f.body, &mut |o| {
        thread_writes |= !matches!(b.op(o).kind, OpKind::TmaCopy { .. } | OpKind::TmaArrive { .. } | OpKind::MbarInit { .. })
            && (lir::shared_writes(b, o).is_some() || b.op(o).kind == OpKind::Barrier && !refills.contains(&o))
    });
    let (iv, lo) = (b.block(f.body).args[0], b.op(f.lp).operands[0]);
    let bool_ty = b.ty(f.pipes[0].valid).clone();
    let mut gone: HashSet<Op> = HashSet::new();
    if !cp_async {
        gone.extend(k.body.block(f.body).ops.iter().copied().filter(groups));
    }
    let mut at_barrier: HashMap<Op, Vec<Op>> = HashMap::new();
    let mut at_wait: HashMap<Op, Vec<Op>> = HashMap::new();
    for p in &f.pipes {
        gone.extend(p.copies.iter().copied().chain([p.arrive]));
        let pred = b.create_op(OpKind::Tir(tir::OpKind::Cmp(CmpOp::Gt)), vec![iv, lo], vec![bool_ty.clone()], vec![], span);
        let pred_v = b.result(pred);
        let release = b.create_op(OpKind::MbarArrive { mbar: p.empty }, vec![p.stage, pred_v], vec![], vec![], span);
        let here = at_barrier.entry(p.barrier).or_default();
        if thread_writes && here.is_empty() {
            here.push(p.barrier);
        }
        here.extend([pred, release]);
        let yes = b.create_op(OpKind::Tir(tir::OpKind::Const(Lit::Bool(true))), vec![], vec![bool_ty.clone()], vec![], span);
        let yes_v = b.result(yes);
        let [stage, parity] = b.op(p.wait).operands[..] else { return None };
        let wait = b.create_op(OpKind::MbarWait { mbar: p.mbar }, vec![stage, parity, yes_v], vec![], vec![], span);
        at_wait.insert(p.wait, vec![yes, wait]);
    }
    // Two consumer warpgroups whose loop issues several products take turns issuing them.
    let pingpong = pingpong_applies(k, f.body, c);
    let mut ops = vec![];
    for o in b.block(f.body).ops.clone() {
        if let Some(r) = at_barrier.get(&o) {
            ops.extend(r.iter().copied());
        } else if let Some(r) = at_wait.get(&o) {
            ops.extend(r.iter().copied());
        } else if gone.contains(&o) {
            continue;
        } else if pingpong && b.op(o).kind.is_wgmma() {
            let wait = b.create_op(OpKind::Turn(TurnStep::Wait), vec![], vec![], vec![], span);
            let pass = b.create_op(OpKind::Turn(TurnStep::Pass), vec![], vec![], vec![], span);
            ops.extend([wait, o, pass]);
        } else {
            ops.push(o);
        }
    }
    if pingpong {
        merge_turns(b, &mut ops);
    }
    b.blocks[f.body.index()].ops = ops;
    // One consumers' barrier before the loop: a window copied before it (attention's `q`) was,
    // without tensor maps, written by every thread, and the loop's first refill barrier that
    // published it is gone.
    let publish = b.create_op(OpKind::Barrier, vec![], vec![], vec![], span);
    let mut around = vec![publish];
    if pingpong {
        around.push(b.create_op(OpKind::Turn(TurnStep::Start), vec![], vec![], vec![], span));
    }
    around.push(f.lp);
    if pingpong {
        around.push(b.create_op(OpKind::Turn(TurnStep::End), vec![], vec![], vec![], span));
    }
    let at = b.block(entry).ops.iter().position(|&o| o == f.lp)?;
    b.blocks[entry.index()].ops.splice(at..=at, around);

    let mut head = vec![];
    for p in &f.pipes {
        head.push(b.create_op(
            OpKind::WsInit { full: p.mbar, empty: p.empty, stages: p.stages, consumers: c },
            vec![],
            vec![],
            vec![],
            span,
        ));
    }
    head.push(b.create_op(OpKind::WsSplit, vec![], vec![], vec![producer], span));
    b.blocks[entry.index()].ops.splice(0..0, head);
    out.shared_bytes = shared;
    let (producer_regs, consumer_regs) = register_split(c, k.blocks_per_sm.unwrap_or(1));
    out.ws = Some(WarpSpec { producer_regs, consumer_regs, pingpong });
    Some(out)
}

/// Products issued one after the other with no wait for a `wgmma` group between them (the
/// `S = Q·Kᵀ` and the deferred `P·V` of a loop rotated by `overlap_dots`) are issued in one turn:
/// a `turn.pass` followed by a `turn.wait` with only scalar work, mbarrier waits and releases
/// between them goes, as FlashAttention-3 issues both products of an iteration in one turn.
fn merge_turns(b: &lir::LirBody, ops: &mut Vec<Op>) {
    let mut i = 0;
    while i < ops.len() {
        if b.op(ops[i]).kind != OpKind::Turn(TurnStep::Pass) {
            i += 1;
            continue;
        }
        let next = (i + 1..ops.len()).find(|&j| {
            let d = b.op(ops[j]);
            matches!(d.kind, OpKind::Turn(_) | OpKind::WgmmaWait { .. } | OpKind::Barrier) || !d.regions.is_empty()
        });
        match next {
            Some(j) if b.op(ops[j]).kind == OpKind::Turn(TurnStep::Wait) => {
                ops.remove(j);
                ops.remove(i);
            }
            _ => i += 1,
        }
    }
}

/// Whether the two consumer warpgroups of a `consumers`-thread kernel take turns issuing the
/// products of loop body `body`: two warpgroups, at least two products, each issued directly in
/// the body (one in a branch could be issued by one warpgroup and not the other).
fn pingpong_applies(k: &Kernel, body: Block, consumers: u32) -> bool {
    let direct = k.body.block(body).ops.iter().filter(|&&o| k.body.op(o).kind.is_wgmma()).count();
    let mut all = 0;
    k.body.walk(body, &mut |o| all += usize::from(k.body.op(o).kind.is_wgmma()));
    consumers == 2 * PRODUCER_THREADS && direct >= 2 && direct == all
}

/// The one loop of the entry block whose body issues bulk tensor copies, and its pipelines.
fn find(k: &Kernel) -> Option<Found> {
    let b = &k.body;
    let entry = b.entry;
    let copies_in =
        |blk: Block| b.block(blk).ops.iter().copied().filter(|&o| matches!(b.op(o).kind, OpKind::TmaCopy { .. })).collect::<Vec<_>>();
    let loops: Vec<Op> = b
        .block(entry)
        .ops
        .iter()
        .copied()
        .filter(|&o| {
            matches!(b.op(o).kind, OpKind::Tir(tir::OpKind::For)) && b.op(o).regions.first().is_some_and(|&r| !copies_in(r).is_empty())
        })
        .collect();
    let [lp] = loops[..] else { return None };
    let body = b.op(lp).regions[0];
    let lp_at = b.block(entry).ops.iter().position(|&o| o == lp)?;
    let prologue: HashSet<Op> = b.block(entry).ops[..lp_at].iter().copied().collect();
    let in_body: HashSet<Op> = b.block(body).ops.iter().copied().collect();
    let mut mbars: Vec<u32> = vec![];
    for o in copies_in(body) {
        if let OpKind::TmaCopy { mbar, .. } = b.op(o).kind
            && !mbars.contains(&mbar)
        {
            mbars.push(mbar);
        }
    }
    let mut pipes = vec![];
    for mbar in mbars {
        pipes.push(pipe(k, lp, body, mbar, &prologue, &in_body)?);
    }
    // Nothing else may use the machinery this pass rewrites, and the consumers run every
    // iteration: a `return` could leave the producer waiting for a release that never comes.
    let mut ok = true;
    b.walk(entry, &mut |o| {
        ok &= !matches!(
            b.op(o).kind,
            OpKind::WsInit { .. }
                | OpKind::WsSplit
                | OpKind::MbarWait { .. }
                | OpKind::MbarArrive { .. }
                | OpKind::Tir(tir::OpKind::Return)
        )
    });
    ok.then_some(Found { lp, body, pipes })
}

/// The pipeline on mbarrier `mbar` of loop `lp`.
fn pipe(k: &Kernel, lp: Op, body: Block, mbar: u32, prologue: &HashSet<Op>, in_body: &HashSet<Op>) -> Option<Pipe> {
    let b = &k.body;
    // Every op on this mbarrier: the copies and arrival of the body and of the prologue (the
    // entry block, before the loop), its initialisation there, the body's wait.
    let (mut copies, mut arrives, mut waits, mut stages) = (vec![], vec![], vec![], None);
    let mut ok = true;
    b.walk(b.entry, &mut |o| {
        let (here, pro) = (in_body.contains(&o), prologue.contains(&o));
        match b.op(o).kind {
            OpKind::TmaCopy { mbar: m, producer, .. } if m == mbar => {
                ok &= !producer && (here || pro);
                if here {
                    copies.push(o);
                }
            }
            OpKind::TmaArrive { mbar: m, producer, bytes } if m == mbar => {
                ok &= !producer && (here || pro);
                if here {
                    arrives.push((o, bytes));
                }
            }
            OpKind::TmaWait { mbar: m } if m == mbar => {
                ok &= here;
                waits.push(o);
            }
            OpKind::MbarInit { mbar: m, count } if m == mbar => {
                ok &= pro && stages.is_none();
                stages = Some(count);
            }
            _ => {}
        }
    });
    let ([(arrive, bytes)], [wait], Some(stages), true) = (&arrives[..], &waits[..], stages, ok) else { return None };
    // One stage operand and one validity for all of them; validity is `iv_next < hi`.
    let last2 = |o: Op| {
        let ops = &b.op(o).operands;
        (ops.len() >= 2).then(|| (ops[ops.len() - 2], ops[ops.len() - 1]))
    };
    let (stage, valid) = last2(*arrive)?;
    if copies.iter().any(|&o| last2(o) != Some((stage, valid))) {
        return None;
    }
    let vdef = b.op(b.producer(valid)?);
    let hi = b.op(lp).operands.get(1).copied()?;
    if vdef.kind != OpKind::Tir(tir::OpKind::Cmp(CmpOp::Lt)) || vdef.operands.get(1) != Some(&hi) {
        return None;
    }
    let iv_next = vdef.operands[0];
    // The barrier before the refill: only scalar ops (and the stage's `wgmma`, issued before its
    // refill) between it and the first copy.
    let ops = &b.block(body).ops;
    let first = ops.iter().position(|o| copies.contains(o) || o == arrive)?;
    let at = (0..first).rev().find(|&i| !is_pure_scalar(k, ops[i]) && !b.op(ops[i]).kind.is_wgmma())?;
    if b.op(ops[at]).kind != OpKind::Barrier {
        return None;
    }
    // The release names the stage: defined before the barrier (or outside the loop).
    if let ValueDef::Result(d, _) = b.values[stage.index()].def
        && let Some(i) = ops.iter().position(|&o| o == d)
        && i > at
    {
        return None;
    }
    Some(Pipe { copies, arrive: *arrive, wait: *wait, barrier: ops[at], mbar, bytes: *bytes, stages, stage, valid, iv_next, empty: 0 })
}

/// A scalar op with no effect that the producer may recompute.
fn is_pure_scalar(k: &Kernel, op: Op) -> bool {
    let d = k.body.op(op);
    let scalar = d.results.iter().all(|&r| match k.body.ty(r) {
        lir::Type::Tile { shape, .. } => shape.is_empty(),
        lir::Type::Tensor { .. } => true,
    });
    scalar && d.regions.is_empty() && d.kind.is_pure()
}

/// Recomputes values in the producer region: pure scalar ops are cloned (those of the loop body
/// into the producer's loop, the others before it), the kernel's parameters are used as they are.
struct Cloner<'a> {
    k: &'a Kernel,
    /// Ops directly in the consumers' loop body.
    in_body: HashSet<Op>,
    memo: HashMap<Value, Value>,
    /// The producer region, where the loop op will go (clones of outside values go before it).
    outer: Block,
    inner: Block,
}

impl Cloner<'_> {
    fn value(&mut self, b: &mut lir::LirBody, v: Value) -> Option<Value> {
        if let Some(&c) = self.memo.get(&v) {
            return Some(c);
        }
        let op = match self.k.body.values[v.index()].def {
            ValueDef::Arg(blk, _) if blk == self.k.body.entry => return Some(v),
            ValueDef::Arg(..) => return None,
            ValueDef::Result(op, _) => op,
        };
        let d = self.k.body.op(op).clone();
        let regions = if is_pure_scalar(self.k, op) {
            vec![]
        } else if scalar_if(self.k, op) {
            self.branches(b, op)?
        } else {
            return None;
        };
        let mut operands = vec![];
        for &o in &d.operands {
            operands.push(self.value(b, o)?);
        }
        let tys: Vec<lir::Type> = d.results.iter().map(|&r| self.k.body.ty(r).clone()).collect();
        let span = self.k.body.span(op);
        let into = if self.in_body.contains(&op) { self.inner } else { self.outer };
        let new = b.append(into, d.kind.clone(), operands, tys, regions, span);
        for (&r, &n) in d.results.iter().zip(&b.op(new).results.clone()) {
            self.memo.insert(r, n);
        }
        self.memo.get(&v).copied()
    }

    /// The branches of a scalar `if` (`scalar_if`), cloned: what they read from outside first
    /// (where it belongs), then their ops into new blocks.
    fn branches(&mut self, b: &mut lir::LirBody, op: Op) -> Option<Vec<Block>> {
        let d = self.k.body.op(op).clone();
        let inside: HashSet<Op> = d.regions.iter().flat_map(|&r| self.k.body.block(r).ops.iter().copied()).collect();
        for &r in &d.regions {
            for &o in &self.k.body.block(r).ops {
                for &x in &self.k.body.op(o).operands {
                    let local = matches!(self.k.body.values[x.index()].def, ValueDef::Result(p, _) if inside.contains(&p));
                    if !local {
                        self.value(b, x)?;
                    }
                }
            }
        }
        let mut out = vec![];
        for &r in &d.regions {
            let nb = b.new_block(&[]);
            for &o in &self.k.body.block(r).ops {
                let od = self.k.body.op(o).clone();
                let operands: Vec<Value> = od.operands.iter().map(|x| self.memo.get(x).copied()).collect::<Option<_>>()?;
                let tys: Vec<lir::Type> = od.results.iter().map(|&x| self.k.body.ty(x).clone()).collect();
                let new = b.append(nb, od.kind.clone(), operands, tys, vec![], self.k.body.span(o));
                for (&x, &n) in od.results.iter().zip(&b.op(new).results.clone()) {
                    self.memo.insert(x, n);
                }
            }
            out.push(nb);
        }
        Some(out)
    }
}

/// An `if` with scalar results whose branches hold only pure scalar ops and their `yield`
/// (`kt = cdiv(K, BK) + if K == 0 { 1 } else { 0 }`): the producer may recompute it.
fn scalar_if(k: &Kernel, op: Op) -> bool {
    let d = k.body.op(op);
    let scalar = |v: &Value| matches!(k.body.ty(*v), lir::Type::Tile { shape, .. } if shape.is_empty());
    d.kind == OpKind::Tir(tir::OpKind::If)
        && d.results.iter().all(scalar)
        && d.regions
            .iter()
            .all(|&r| k.body.block(r).ops.iter().all(|&o| is_pure_scalar(k, o) || k.body.op(o).kind == OpKind::Tir(tir::OpKind::Yield)))
}

/// The producer's region: its loop over the consumers' iterations, per pipeline waiting for the
/// stage to be released (from the second round of stages on) and issuing that iteration's
/// copies into it.
fn build_producer(k: &Kernel, b: &mut lir::LirBody, f: &Found, span: Span) -> Option<Block> {
    let outer = b.new_block(&[]);
    let i32_ty = b.ty(b.block(f.body).args[0]).clone();
    let bool_ty = b.ty(f.pipes[0].valid).clone();
    let inner = b.new_block(std::slice::from_ref(&i32_ty));
    let iv = b.block(inner).args[0];
    let mut cl = Cloner { k, in_body: b.block(f.body).ops.iter().copied().collect(), memo: HashMap::new(), outer, inner };
    let bounds: Vec<Value> = b.op(f.lp).operands.get(..3)?.to_vec();
    let mut nb = vec![];
    for v in bounds {
        nb.push(cl.value(b, v)?);
    }
    let konst = |b: &mut lir::LirBody, lit: Lit, ty: &lir::Type| {
        let o = b.append(inner, OpKind::Tir(tir::OpKind::Const(lit)), vec![], vec![ty.clone()], vec![], span);
        b.result(o)
    };
    let bin = |b: &mut lir::LirBody, op: BinaryOp, x: Value, y: Value| {
        let o = b.append(inner, OpKind::Tir(tir::OpKind::Binary(op)), vec![x, y], vec![i32_ty.clone()], vec![], span);
        b.result(o)
    };
    let (one, two) = (konst(b, Lit::Int(1), &i32_ty), konst(b, Lit::Int(2), &i32_ty));
    let yes = konst(b, Lit::Bool(true), &bool_ty);
    let rel = bin(b, BinaryOp::Sub, iv, nb[0]);
    let idx = bin(b, BinaryOp::Div, rel, nb[2]);
    for p in &f.pipes {
        let stages = konst(b, Lit::Int(p.stages.into()), &i32_ty);
        let stage = bin(b, BinaryOp::Rem, idx, stages);
        let round = bin(b, BinaryOp::Div, idx, stages);
        let next_round = bin(b, BinaryOp::Add, round, one);
        // Round r ≥ 1 reuses the stage the consumers released in round r - 1: that phase's parity.
        let parity = bin(b, BinaryOp::Rem, next_round, two);
        let again = b.append(inner, OpKind::Tir(tir::OpKind::Cmp(CmpOp::Ge)), vec![idx, stages], vec![bool_ty.clone()], vec![], span);
        let again = b.result(again);
        b.append(inner, OpKind::MbarWait { mbar: p.empty }, vec![stage, parity, again], vec![], vec![], span);
        // This pipeline's values at the producer's iteration (the consumers' copies ran ahead).
        let saved = cl.memo.clone();
        cl.memo.insert(p.iv_next, iv);
        cl.memo.insert(p.stage, stage);
        cl.memo.insert(p.valid, yes);
        for &c in &p.copies {
            let d = b.op(c).clone();
            let mut operands = vec![];
            for &o in &d.operands {
                operands.push(cl.value(b, o)?);
            }
            let OpKind::TmaCopy { offset, shape, map, mbar, .. } = d.kind else { return None };
            b.append(inner, OpKind::TmaCopy { offset, shape, map, mbar, producer: true }, operands, vec![], vec![], span);
        }
        b.append(inner, OpKind::TmaArrive { mbar: p.mbar, bytes: p.bytes, producer: true }, vec![stage, yes], vec![], vec![], span);
        // Values of the body computed from this pipeline's iteration are not the next one's.
        let outer_only: HashMap<Value, Value> =
            cl.memo.iter().filter(|(v, _)| !body_value(k, f.body, **v)).map(|(&v, &n)| (v, n)).collect();
        cl.memo = saved;
        cl.memo.extend(outer_only);
    }
    b.append(inner, OpKind::Tir(tir::OpKind::Yield), vec![], vec![], vec![], span);
    b.append(outer, OpKind::Tir(tir::OpKind::For), nb, vec![], vec![inner], span);
    b.append(outer, OpKind::Tir(tir::OpKind::Yield), vec![], vec![], vec![], span);
    Some(outer)
}

/// Whether `v` is defined directly in block `body` (an op's result or an argument).
fn body_value(k: &Kernel, body: Block, v: Value) -> bool {
    match k.body.values[v.index()].def {
        ValueDef::Arg(blk, _) => blk == body,
        ValueDef::Result(op, _) => k.body.block(body).ops.contains(&op),
    }
}

#[cfg(test)]
mod tests {
    use super::register_split;

    /// Two consumer warpgroups: 168 registers at launch, the producer keeps 40, the consumers
    /// get 232 (all of the 64K register file); one consumer warpgroup already has 255.
    #[test]
    fn registers_move_from_the_producer_to_the_consumers() {
        assert_eq!(register_split(256, 1), (Some(40), Some(232)));
        assert_eq!(register_split(384, 1), (Some(40), Some(152)));
        assert_eq!(register_split(128, 1), (None, None));
        // Three blocks of one consumer warpgroup: 80 at launch, 120 after the split, where
        // `#[blocks_per_sm(3)]` alone leaves 168 (the pass declines).
        assert_eq!(register_split(128, 3), (Some(40), Some(120)));
        assert!(super::consumer_registers(128, 3) < 168);
        for c in [256u32, 384, 512, 768] {
            if let (Some(p), Some(q)) = register_split(c, 1) {
                assert!(p * 128 + q * c <= 65536, "{c} consumers: {p}/{q} over the register file");
                assert!(q % 8 == 0 && (24..=256).contains(&q));
            }
        }
    }
}
