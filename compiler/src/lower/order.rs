//! Thread-IR pass `order_memory`: orders a program's own global-memory accesses.
//!
//! A program's tile operations are sequential (a `load` after a `store` to the same tensor sees
//! the stored values), but on the GPU each thread issues its own share of an operation: thread 5
//! may load an element that thread 70 stored, and nothing orders thread 70's `st.global` before
//! thread 5's `ld.global` unless a block-wide barrier (`bar.sync`, which orders global memory
//! among the threads of the block) lies between them. So do a load followed by a store (thread
//! 70 overwrites what thread 5 has not read yet) and two stores (the later one must win).
//!
//! Algorithm: walk the thread IR in program order, keeping per tensor parameter (views of one
//! parameter may overlap, so accesses are tracked by the parameter they come from) the accesses
//! made since the last barrier: their kind and, for window accesses, the region they cover
//! (each offset as a value plus a constant, and the extent). An access that conflicts with one of
//! them gets a `barrier` inserted before it, which clears the record. Two accesses conflict when
//! - one writes (`store`, `scatter`) and the other reads, writes or is an atomic, or one reads
//!   (`load`, `gather`, `async_copy`) and the other is an atomic (atomics among themselves
//!   commute);
//! - their regions may overlap: unknown for indexed accesses, else disjoint when, along some
//!   dimension, both offsets are the same value plus constants whose ranges do not meet;
//! - and some element may be touched by two threads: not when both are window accesses of the
//!   same region, tile type and layout where each element has one holder (for two writes, one
//!   owner thread: replicated tiles are written by one thread per element), which is then the
//!   same thread in both.
//!
//! An `async_copy` reads global memory until a later `async_wait 0`: a write that conflicts with
//! a copy still in flight gets `async_wait 0` and then the barrier. Existing barriers (and
//! `shuffle_reduce`, which ends with one) clear the record except for copies still in flight.
//! Loops are walked to a fixed point (what the end of an iteration left pending meets the start
//! of the next; regions whose offsets are computed inside the loop are forgotten on the way
//! round, since the next iteration's values differ), `if` branches joined. Distinct tensor
//! parameters are taken not to overlap in memory (docs/language.md).

use crate::ir::{Block, Op, Value};
use crate::lir::{self, Layout, LirBody, OpKind};
use crate::tir::{self, Lit};
use std::collections::{BTreeMap, HashSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Access {
    Read,
    Write,
    Atomic,
}

/// An offset: `base + c` (`base` `None`: the constant `c`).
type Affine = (Option<Value>, i64);

/// One access since the last barrier.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Rec {
    access: Access,
    /// Per dimension of the parameter, the first index and the extent (window accesses only).
    region: Option<Vec<(Affine, i64)>>,
    /// The tile accessed, for window accesses whose elements each have one holder (or, for a
    /// write, one owner): its shape and layout.
    holders: Option<(Vec<i64>, Layout)>,
    /// An `async_copy` that may still be reading.
    in_flight: bool,
}

/// A window access: its offsets, the tile's shape and its layout (`None`: shared memory).
type Window = (Vec<Value>, Vec<i64>, Option<Layout>);

/// Accesses per tensor parameter (its entry-block argument) since the last barrier.
type State = BTreeMap<Value, Vec<Rec>>;

/// More records than this per parameter collapse into region-less ones (bounds the work; the
/// result is only more barriers).
const MAX_RECORDS: usize = 32;

fn join(a: &State, b: &State) -> State {
    let mut out = a.clone();
    for (&k, recs) in b {
        let e = out.entry(k).or_default();
        for r in recs {
            push(e, r.clone());
        }
    }
    out
}

fn push(recs: &mut Vec<Rec>, r: Rec) {
    if recs.contains(&r) {
        return;
    }
    recs.push(r);
    if recs.len() > MAX_RECORDS {
        let mut kinds: Vec<Rec> = vec![];
        for r in recs.drain(..) {
            let c = Rec { region: None, holders: None, ..r };
            if !kinds.contains(&c) {
                kinds.push(c);
            }
        }
        *recs = kinds;
    }
}

/// A barrier orders every access before it, except the reads of copies still in flight.
fn barrier(state: &mut State) {
    for recs in state.values_mut() {
        recs.retain(|r| r.in_flight);
    }
    state.retain(|_, recs| !recs.is_empty());
}

fn may_overlap(a: &Option<Vec<(Affine, i64)>>, b: &Option<Vec<(Affine, i64)>>) -> bool {
    let (Some(a), Some(b)) = (a, b) else { return true };
    a.len() != b.len()
        || a.iter().zip(b).all(|(((ba, ca), ea), ((bb, cb), eb))| {
            ba != bb || (ca.checked_add(*ea).is_none_or(|end| end > *cb) && cb.checked_add(*eb).is_none_or(|end| end > *ca))
        })
}

/// What must come before access `new`, given the earlier record `old` of the same parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fence {
    None,
    Barrier,
    /// `async_wait 0`, then a barrier.
    DrainAndBarrier,
}

fn fence(old: &Rec, new: &Rec) -> Fence {
    let kinds = match (old.access, new.access) {
        (Access::Write, _) | (_, Access::Write) => true,
        (Access::Atomic, Access::Atomic) | (Access::Read, Access::Read) => false,
        (Access::Atomic, Access::Read) | (Access::Read, Access::Atomic) => true,
    };
    if !kinds || !may_overlap(&old.region, &new.region) {
        return Fence::None;
    }
    let same_thread = old.region.is_some() && old.region == new.region && old.holders.is_some() && old.holders == new.holders;
    if same_thread && !old.in_flight {
        return Fence::None;
    }
    if old.in_flight { Fence::DrainAndBarrier } else { Fence::Barrier }
}

/// Runs the pass.
pub fn run(k: &mut lir::Kernel) {
    fences_inserted(k);
}

/// Runs the pass; returns the number of fences it inserted.
pub fn fences_inserted(k: &mut lir::Kernel) -> usize {
    let threads = k.threads;
    let mut w = Walker { body: &mut k.body, threads, inserted: 0 };
    let entry = w.body.entry;
    w.block(entry, State::new(), true);
    w.inserted
}

struct Walker<'a> {
    body: &'a mut LirBody,
    threads: u32,
    inserted: usize,
}

impl Walker<'_> {
    /// `v` as a value plus a constant.
    fn affine(&self, v: Value) -> Affine {
        let (mut base, mut c) = (v, 0i64);
        // Bounded by the number of ops: each step goes to an operand's definition.
        for _ in 0..self.body.ops.len() {
            let Some(op) = self.body.producer(base) else { break };
            let d = self.body.op(op);
            let lit = |x: Value| match self.body.producer(x).map(|p| &self.body.op(p).kind) {
                Some(OpKind::Tir(tir::OpKind::Const(Lit::Int(n)))) => Some(*n),
                _ => None,
            };
            match (&d.kind, d.operands.as_slice()) {
                (OpKind::Tir(tir::OpKind::Const(Lit::Int(n))), _) => return c.checked_add(*n).map_or((Some(v), 0), |c| (None, c)),
                (OpKind::Tir(tir::OpKind::Binary(tir::BinaryOp::Add)), &[x, y]) => match (lit(x), lit(y)) {
                    (_, Some(n)) => (base, c) = (x, c.saturating_add(n)),
                    (Some(n), _) => (base, c) = (y, c.saturating_add(n)),
                    _ => break,
                },
                (OpKind::Tir(tir::OpKind::Binary(tir::BinaryOp::Sub)), &[x, y]) => match lit(y) {
                    Some(n) => (base, c) = (x, c.saturating_sub(n)),
                    None => break,
                },
                _ => break,
            }
        }
        if c == i64::MIN || c == i64::MAX { (Some(v), 0) } else { (Some(base), c) }
    }

    /// The tensor parameter `t` is a view of, and the indices its views fix (leading
    /// dimensions, extent 1).
    fn root(&self, mut t: Value) -> (Value, Vec<(Affine, i64)>) {
        let mut fixed: Vec<Vec<(Affine, i64)>> = vec![];
        for _ in 0..self.body.ops.len() {
            let Some(op) = self.body.producer(t) else { break };
            let d = self.body.op(op);
            if !matches!(d.kind, OpKind::Tir(tir::OpKind::View)) {
                break;
            }
            let Some((&src, idx)) = d.operands.split_first() else { break };
            fixed.push(idx.iter().map(|&i| (self.affine(i), 1)).collect());
            t = src;
        }
        (t, fixed.into_iter().rev().flatten().collect())
    }

    /// The record of a global-memory access by `op`, and the parameter it touches.
    fn record(&self, op: Op) -> Option<(Value, Rec)> {
        let d = self.body.op(op);
        let (access, tensor, window): (Access, usize, Option<Window>) = match &d.kind {
            OpKind::Tir(tir::OpKind::Load) => {
                let t = self.body.ty(*d.results.first()?);
                let offs = d.operands.get(1..d.operands.len().checked_sub(1)?)?.to_vec();
                (Access::Read, 0, Some((offs, t.shape().to_vec(), t.layout())))
            }
            OpKind::Tir(tir::OpKind::Store) => {
                let t = self.body.ty(*d.operands.last()?);
                let offs = d.operands.get(1..d.operands.len().checked_sub(1)?)?.to_vec();
                (Access::Write, 0, Some((offs, t.shape().to_vec(), t.layout())))
            }
            OpKind::AsyncCopy { shape, .. } => (Access::Read, 1, Some((d.operands.get(2..)?.to_vec(), shape.clone(), None))),
            // (base, t, offsets…, stage, valid)
            OpKind::TmaCopy { shape, .. } => {
                (Access::Read, 1, Some((d.operands.get(2..d.operands.len().checked_sub(2)?)?.to_vec(), shape.clone(), None)))
            }
            // (t, offsets…): a write of the window, finished (as far as shared memory goes) when
            // the op returns; `tma_store`'s lowering only picks a tensor nothing else touches.
            OpKind::TmaStore { shape, reduce, .. } => {
                let access = if reduce.is_some() { Access::Atomic } else { Access::Write };
                (access, 0, Some((d.operands.get(1..)?.to_vec(), shape.clone(), None)))
            }
            OpKind::Tir(tir::OpKind::Gather) => (Access::Read, 0, None),
            OpKind::Tir(tir::OpKind::Scatter) => (Access::Write, 0, None),
            OpKind::Tir(tir::OpKind::Atomic(_)) => (Access::Atomic, 0, None),
            _ => return None,
        };
        let (root, fixed) = self.root(*d.operands.get(tensor)?);
        let mut rec =
            Rec { access, region: None, holders: None, in_flight: matches!(d.kind, OpKind::AsyncCopy { .. } | OpKind::TmaCopy { .. }) };
        if let Some((offs, shape, layout)) = window {
            // A tile of lower rank than the window goes along its trailing dimensions.
            let pad = offs.len().saturating_sub(shape.len());
            let mut region = fixed;
            for (i, &o) in offs.iter().enumerate() {
                let extent = if i < pad { 1 } else { shape.get(i - pad).copied().unwrap_or(1) };
                region.push((self.affine(o), extent));
            }
            rec.region = Some(region);
            let numel: i64 = shape.iter().product();
            let one_holder = match layout {
                Some(Layout::Blocked { .. }) => numel >= self.threads as i64 || access == Access::Write,
                Some(Layout::Mma { .. }) => true,
                // Replicated over lanes; a write has one owner, but not a read.
                Some(Layout::MmaRows { .. } | Layout::MmaCols { .. }) => access == Access::Write,
                None => false,
            };
            if let (true, Some(l)) = (one_holder, layout) {
                rec.holders = Some((shape, l));
            }
        }
        Some((root, rec))
    }

    /// Walks `blk` from `state`; returns the state at its end. With `insert`, adds the fences;
    /// without, only computes what the state would be (for loop fixed points).
    fn block(&mut self, blk: Block, mut state: State, insert: bool) -> State {
        let mut i = 0;
        while i < self.body.block(blk).ops.len() {
            let op = self.body.block(blk).ops[i];
            match &self.body.op(op).kind {
                OpKind::Barrier | OpKind::ShuffleReduce { .. } => barrier(&mut state),
                OpKind::AsyncWait { pending: 0 } => {
                    for recs in state.values_mut() {
                        for r in recs.iter_mut() {
                            r.in_flight = false;
                        }
                    }
                }
                OpKind::Tir(tir::OpKind::For | tir::OpKind::While) => state = self.looped(op, state, insert),
                OpKind::Tir(tir::OpKind::If) => {
                    let regions = self.body.op(op).regions.clone();
                    let mut out: Option<State> = None;
                    for r in regions {
                        let s = self.block(r, state.clone(), insert);
                        out = Some(match out {
                            Some(o) => join(&o, &s),
                            None => s,
                        });
                    }
                    state = out.unwrap_or(state);
                }
                _ => {
                    if let Some((root, rec)) = self.record(op) {
                        let f =
                            state.get(&root).map_or(Fence::None, |recs| recs.iter().map(|o| fence(o, &rec)).max().unwrap_or(Fence::None));
                        if f != Fence::None {
                            if insert {
                                i += self.insert_fence(blk, i, op, f);
                            }
                            match f {
                                Fence::DrainAndBarrier => state.clear(),
                                _ => barrier(&mut state),
                            }
                        }
                        push(state.entry(root).or_default(), rec);
                    }
                }
            }
            i += 1;
        }
        state
    }

    /// Inserts `fence` before position `at` of `blk` (the op `before`); returns how many ops.
    fn insert_fence(&mut self, blk: Block, at: usize, before: Op, fence: Fence) -> usize {
        let span = self.body.span(before);
        let mut kinds = vec![];
        if fence == Fence::DrainAndBarrier {
            kinds.push(OpKind::AsyncWait { pending: 0 });
        }
        kinds.push(OpKind::Barrier);
        let n = kinds.len();
        for (j, kind) in kinds.into_iter().enumerate() {
            let new = self.body.create_op(kind, vec![], vec![], vec![], span);
            self.body.blocks[blk.index()].ops.insert(at + j, new);
        }
        self.inserted += 1;
        n
    }

    /// Every kind of access pending on every tensor parameter, nothing known of their regions.
    fn top(&self) -> State {
        let mut out = State::new();
        for &p in &self.body.block(self.body.entry).args {
            if matches!(self.body.ty(p), lir::Type::Tensor { .. }) {
                let recs = out.entry(p).or_default();
                for access in [Access::Read, Access::Write, Access::Atomic] {
                    recs.push(Rec { access, region: None, holders: None, in_flight: true });
                }
            }
        }
        out
    }

    /// The values defined inside `regions` (block arguments and results, nested ones too).
    fn defined_in(&self, regions: &[Block]) -> HashSet<Value> {
        let mut out = HashSet::new();
        for &r in regions {
            out.extend(self.body.block(r).args.iter().copied());
            self.body.walk(r, &mut |op| {
                out.extend(self.body.op(op).results.iter().copied());
                for &b in &self.body.op(op).regions {
                    out.extend(self.body.block(b).args.iter().copied());
                }
            });
        }
        out
    }

    /// `state` carried around a loop's back edge: regions over values of the iteration that
    /// ends are not regions of the next one.
    fn round(state: &State, inner: &HashSet<Value>) -> State {
        let mut out = State::new();
        for (&k, recs) in state {
            let e: &mut Vec<Rec> = out.entry(k).or_default();
            for r in recs {
                let varies = r.region.as_ref().is_some_and(|reg| reg.iter().any(|((b, _), _)| b.is_some_and(|b| inner.contains(&b))));
                push(e, if varies { Rec { region: None, holders: None, ..r.clone() } } else { r.clone() });
            }
        }
        out
    }

    /// A `for` (one region) or a `while` (the condition, then the body; it exits after the
    /// condition): the state at the loop head is the join of the entry state and every
    /// iteration's end, found by iterating to a fixed point; then the regions are walked once
    /// more from it, inserting fences.
    fn looped(&mut self, op: Op, entry: State, insert: bool) -> State {
        let regions = self.body.op(op).regions.clone();
        let is_while = matches!(self.body.op(op).kind, OpKind::Tir(tir::OpKind::While));
        let inner = self.defined_in(&regions);
        let mut head = entry.clone();
        // Each round only adds records, from a finite set (bounded by MAX_RECORDS per
        // parameter); the cap is a safety net that falls back to forgetting every region.
        let mut converged = false;
        for _ in 0..64 {
            let mut s = head.clone();
            for &r in &regions {
                s = self.block(r, s, false);
            }
            let next = join(&entry, &Self::round(&s, &inner));
            if next == head {
                converged = true;
                break;
            }
            head = next;
        }
        if !converged {
            head = self.top();
        }
        let mut s = head;
        let mut exit = None;
        for (n, &r) in regions.iter().enumerate() {
            s = self.block(r, s, insert);
            if is_while && n == 0 {
                exit = Some(s.clone());
            }
        }
        let out = match exit {
            Some(e) => e,
            // Zero iterations leave the entry state; otherwise the last iteration's end.
            None => join(&entry, &s),
        };
        Self::round(&out, &inner)
    }
}
