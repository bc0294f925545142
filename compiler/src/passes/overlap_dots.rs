//! Tile-IR pass `overlap_dots` (warp-specialised kernels): a loop whose body computes one `dot`
//! from another's result and accumulates it into a loop-carried value (attention's `S = Q·Kᵀ`,
//! softmax, `acc = dot(P, V, acc · α)`) is rotated so that the second `dot` of iteration `i`
//! runs in iteration `i + 1`, issued right after that iteration's first `dot`: the tensor cores
//! then compute `P_i·V_i` while the threads compute the softmax of `S_{i+1}`
//! (FlashAttention-3's intra-warpgroup overlap). With asynchronous `wgmma`, `sink_wgmma_wait`
//! leaves the second group in flight through the softmax (`wgmma.wait_group 1`).
//!
//! ```text
//! for iv in lo..hi { s = dot(a(iv), …); …; x = …(acc); yield …, dot(p, v(iv), x) }
//! ```
//! becomes
//! ```text
//! s₀ = …(lo); …                                   // iteration lo's first part (speculative)
//! c = if lo < hi { yield …₀ } else { yield init }   // the other carried values
//! for iv in lo+step..hi, carrying (…, p, x, ivp) {
//!     s = dot(a(iv), …)
//!     acc = dot(p, v(iv - step), x)                // the previous iteration's second dot
//!     …(acc)                                       // the rest, reading `acc`
//!     yield …, p', x', iv
//! }
//! acc = if lo < hi { yield dot(p, v(ivp), x) } else { yield init }
//! ```
//! The second `dot`'s operands computed from `iv` alone (a load of an immutable tensor at the
//! iteration's offsets, the views and index arithmetic leading to it) are computed again at
//! `iv - step`, so a load stays a load of the loop (pipelined and copied by the copy engine
//! like any other); the others (`p`, `x`) are carried. The first part of iteration `lo` runs
//! before the loop even when the loop runs no iteration (its results are then discarded), so
//! the pass applies only to bodies with no side effects, no integer division and no reads of
//! tensors the program may write.
//!
//! Applies when the body has exactly two `dot`s at its top level, the second reads the first's
//! result (through other ops), its result is yielded and read by nothing else, and the
//! loop-carried value it replaces is read only after the first `dot`. Only in
//! `#[warp_specialize]` kernels of 8 warps or more (two consumer warpgroups, which take turns at
//! the tensor cores), whose consumers have the registers to keep `p` and `x` live across the
//! loop's back edge.

use crate::diag::Span;
use crate::dtype::DType;
use crate::ir::{Block, Op, Value, ValueDef};
use crate::tir::{BinaryOp, CmpOp, Kernel, OpKind, Type};
use std::collections::{HashMap, HashSet};

/// The most ops recomputed for one operand of the second `dot` (a load and its index math).
const MAX_RECOMPUTE: usize = 64;

pub fn run(k: &mut Kernel) {
    // Two consumer warpgroups or more: their registers (240 a thread) hold the carried `p` and
    // `x` beside the accumulator. With one, the kernel would give up blocks per multiprocessor
    // (attention at 64 queries on 4 warps: 2.4 → 3.0 ms on an H100).
    if !k.warp_specialize || k.warps < 8 {
        return;
    }
    for blk in k.body.blocks() {
        let mut at = 0;
        while at < k.body.block(blk).ops.len() {
            let op = k.body.block(blk).ops[at];
            at = match plan(k, op) {
                Some(p) => rewrite(k, blk, at, &p),
                None => at + 1,
            };
        }
    }
}

/// Where an operand of the deferred `dot` comes from in the rotated loop.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// Defined before the loop: read as it is.
    Outside(Value),
    /// Computed in the body from the induction variable alone: computed again at `iv - step`.
    Recompute(Value),
    /// Carried from the previous iteration.
    Carry(Value),
}

#[derive(Debug)]
struct Plan {
    body: Block,
    /// The first `dot`'s index in the body, and the deferred one.
    first: usize,
    second: Op,
    /// The yield slot (and loop-carried value) the second `dot` produces.
    slot: usize,
    sources: Vec<Source>,
}

fn plan(k: &Kernel, op: Op) -> Option<Plan> {
    let d = k.body.op(op);
    if d.kind != OpKind::For || d.operands.len() < 4 {
        return None;
    }
    let [body] = d.regions[..] else { return None };
    let ops = &k.body.block(body).ops;
    let args = &k.body.block(body).args;
    let &yield_op = ops.last()?;
    let yielded = &k.body.op(yield_op).operands;
    if k.body.op(yield_op).kind != OpKind::Yield || args.len() != d.operands.len() - 2 || yielded.len() + 1 != args.len() {
        return None;
    }
    if ops.iter().any(|&o| !speculable(k, o)) {
        return None;
    }
    // Live products only: `dot_acc` leaves the ones it replaced to `dce`.
    let read = |v: Value| ops.iter().any(|&o| k.body.uses_in(o, v) > 0);
    let dots: Vec<usize> = (0..ops.len()).filter(|&i| k.body.op(ops[i]).kind == OpKind::Dot && read(k.body.result(ops[i]))).collect();
    let [first, second_at] = dots[..] else { return None };
    let second = ops[second_at];
    let sd = k.body.op(second);
    if sd.operands.len() != 3 {
        return None;
    }
    let result = k.body.result(second);
    // Yielded once, read by nothing else.
    let slot = k.body.op(yield_op).operands.iter().position(|&v| v == result)?;
    if ops.iter().map(|&o| k.body.uses_in(o, result)).sum::<usize>() != 1 {
        return None;
    }
    // The loop-carried value it replaces is read only after the first `dot`.
    let carried = *args.get(1 + slot)?;
    if ops[..=first].iter().any(|&o| k.body.uses_in(o, carried) > 0) {
        return None;
    }
    // The second `dot` must depend on the first: otherwise nothing is overlapped.
    let first_result = k.body.result(ops[first]);
    let in_body: HashSet<Op> = ops.iter().copied().collect();
    if !depends_on(k, result, first_result, &in_body) {
        return None;
    }
    let iv = args[0];
    let mut sources = vec![];
    for &v in &sd.operands {
        let inside = k.body.producer(v).is_some_and(|p| in_body.contains(&p)) || args.contains(&v);
        sources.push(if !inside {
            Source::Outside(v)
        } else if recomputable(k, v, iv, &in_body) {
            Source::Recompute(v)
        } else if is_loaded(k, v, &in_body) {
            // A tile loaded from memory is carried through registers, not reloaded: not worth it.
            return None;
        } else {
            Source::Carry(v)
        });
    }
    Some(Plan { body, first, second, slot, sources })
}

/// Whether `op` may run speculatively (once more, before the loop, even when the loop runs no
/// iteration): no side effects, no integer division, no read of a tensor the program may write,
/// nothing nested that has them.
fn speculable(k: &Kernel, op: Op) -> bool {
    let d = k.body.op(op);
    let ok = match &d.kind {
        OpKind::Store | OpKind::Scatter | OpKind::Atomic(_) | OpKind::Print(_) | OpKind::Assert(_) | OpKind::Return => false,
        OpKind::Binary(BinaryOp::Div | BinaryOp::Rem) => d.results.iter().all(|&r| k.body.ty(r).dtype().is_float()),
        // A read of a tensor the program may write (another program, say): not made where the
        // loop would not have made it.
        OpKind::Load | OpKind::Gather => matches!(d.operands.first().map(|&t| k.body.ty(t)), Some(Type::Tensor { mutable: false, .. })),
        _ => true,
    };
    ok && d.regions.iter().all(|&r| k.body.block(r).ops.iter().all(|&o| speculable(k, o)))
}

/// Whether `v` depends on `on` through ops of `ops` (the body's top level).
fn depends_on(k: &Kernel, v: Value, on: Value, ops: &HashSet<Op>) -> bool {
    let mut seen = HashSet::new();
    let mut work = vec![v];
    while let Some(x) = work.pop() {
        if x == on {
            return true;
        }
        if !seen.insert(x) {
            continue;
        }
        if let Some(p) = k.body.producer(x).filter(|p| ops.contains(p)) {
            work.extend(operands_deep(k, p));
        }
    }
    false
}

/// The operands of `op` and of the ops nested in its regions.
fn operands_deep(k: &Kernel, op: Op) -> Vec<Value> {
    let mut out = k.body.op(op).operands.clone();
    for &r in &k.body.op(op).regions {
        for &o in &k.body.block(r).ops {
            out.extend(operands_deep(k, o));
        }
    }
    out
}

/// Whether `v` is computed in the body from the induction variable and values from outside
/// alone, by pure ops with no regions (loads of immutable tensors included), in at most
/// `MAX_RECOMPUTE` ops.
fn recomputable(k: &Kernel, v: Value, iv: Value, ops: &HashSet<Op>) -> bool {
    let mut seen = HashSet::new();
    let mut work = vec![v];
    while let Some(x) = work.pop() {
        if x == iv || !seen.insert(x) {
            continue;
        }
        let Some(p) = k.body.producer(x) else {
            // A loop-carried value is not known at another iteration; an outer one is.
            match k.body.values[x.index()].def {
                ValueDef::Arg(b, _) if Some(b) == body_of(k, iv) => return false,
                _ => continue,
            }
        };
        if !ops.contains(&p) {
            continue;
        }
        let d = k.body.op(p);
        let pure = match d.kind {
            OpKind::Load => matches!(d.operands.first().map(|&t| k.body.ty(t)), Some(Type::Tensor { mutable: false, .. })),
            ref kind => kind.is_pure(),
        };
        if !pure || !d.regions.is_empty() || seen.len() > MAX_RECOMPUTE {
            return false;
        }
        work.extend(d.operands.iter().copied());
    }
    true
}

/// The block whose argument `v` is.
fn body_of(k: &Kernel, v: Value) -> Option<Block> {
    match k.body.values[v.index()].def {
        ValueDef::Arg(b, _) => Some(b),
        ValueDef::Result(..) => None,
    }
}

/// Whether `v` is a tile loaded in the body (through casts and reshapes): carried through the
/// back edge, it would stay in registers instead of being loaded again where it is read.
fn is_loaded(k: &Kernel, v: Value, ops: &HashSet<Op>) -> bool {
    let mut x = v;
    for _ in 0..MAX_RECOMPUTE {
        let Some(p) = k.body.producer(x).filter(|p| ops.contains(p)) else { return false };
        let d = k.body.op(p);
        match d.kind {
            OpKind::Load | OpKind::Gather => return true,
            OpKind::Permute(_) | OpKind::Reshape | OpKind::Cast | OpKind::Broadcast | OpKind::ExpandDims(_) => match d.operands.first() {
                Some(&o) => x = o,
                None => return false,
            },
            _ => return false,
        }
    }
    false
}

/// Appends to `into` a copy of `op` (its regions copied too) whose operands are renamed by
/// `map`; records the copy's results (and its regions' arguments) in `map`.
fn clone_op(k: &mut Kernel, op: Op, into: Block, map: &mut HashMap<Value, Value>) -> Op {
    let d = k.body.op(op).clone();
    let operands = d.operands.iter().map(|v| *map.get(v).unwrap_or(v)).collect();
    let mut regions = vec![];
    for &r in &d.regions {
        let arg_types: Vec<Type> = k.body.block(r).args.iter().map(|&a| k.body.ty(a).clone()).collect();
        let nb = k.body.new_block(&arg_types);
        for (&a, &b) in k.body.block(r).args.clone().iter().zip(&k.body.block(nb).args.clone()) {
            map.insert(a, b);
        }
        for inner in k.body.block(r).ops.clone() {
            clone_op(k, inner, nb, map);
        }
        regions.push(nb);
    }
    let types = d.results.iter().map(|&r| k.body.ty(r).clone()).collect();
    let span = k.body.span(op);
    let new = k.body.append(into, d.kind, operands, types, regions, span);
    for (&a, &b) in d.results.iter().zip(&k.body.op(new).results.clone()) {
        map.insert(a, b);
    }
    new
}

/// Appends a copy of what computes `v` in `body` (its ops in body order) to `into`, with `iv`
/// replaced by `at`; returns the copy of `v`.
fn recompute(k: &mut Kernel, v: Value, body: Block, iv: Value, at: Value, into: Block) -> Value {
    let in_body: HashSet<Op> = k.body.block(body).ops.iter().copied().collect();
    let mut needed = HashSet::new();
    let mut work = vec![v];
    while let Some(x) = work.pop() {
        if let Some(p) = k.body.producer(x).filter(|p| in_body.contains(p))
            && needed.insert(p)
        {
            work.extend(k.body.op(p).operands.iter().copied());
        }
    }
    let mut map = HashMap::from([(iv, at)]);
    for op in k.body.block(body).ops.clone() {
        if needed.contains(&op) {
            clone_op(k, op, into, &mut map);
        }
    }
    *map.get(&v).unwrap_or(&v)
}

/// The deferred `dot`, appended to `into` at induction variable `at`, its carried operands read
/// from `carried` (in `Source::Carry` order).
fn deferred_dot(k: &mut Kernel, p: &Plan, iv: Value, at: Value, carried: &[Value], into: Block) -> Value {
    let mut operands = vec![];
    let mut next = carried.iter();
    for s in &p.sources {
        operands.push(match *s {
            Source::Outside(v) => v,
            Source::Recompute(v) => recompute(k, v, p.body, iv, at, into),
            Source::Carry(_) => next.next().copied().unwrap_or(at),
        });
    }
    let ty = k.body.ty(k.body.result(p.second)).clone();
    let span = k.body.span(p.second);
    let dot = k.body.append(into, OpKind::Dot, operands, vec![ty], vec![], span);
    k.body.result(dot)
}

fn scalar_op(k: &mut Kernel, into: Block, kind: OpKind, operands: Vec<Value>, dtype: DType, span: Span) -> Value {
    let op = k.body.append(into, kind, operands, vec![Type::scalar(dtype)], vec![], span);
    k.body.result(op)
}

/// Rewrites the loop at `at` of `blk`; returns the index after what replaced it.
fn rewrite(k: &mut Kernel, blk: Block, at: usize, p: &Plan) -> usize {
    let lp = k.body.block(blk).ops[at];
    let span = k.body.span(lp);
    let d = k.body.op(lp).clone();
    let (lo, hi, step) = (d.operands[0], d.operands[1], d.operands[2]);
    let inits = d.operands[3..].to_vec();
    let args = k.body.block(p.body).args.clone();
    let iv = args[0];
    let body_ops = k.body.block(p.body).ops.clone();
    let (&yield_op, body_ops) = body_ops.split_last().unwrap_or((&p.second, &[]));
    let yielded = k.body.op(yield_op).operands.clone();
    let carry: Vec<Value> = p.sources.iter().filter_map(|s| if let Source::Carry(v) = s { Some(*v) } else { None }).collect();
    let carry_types: Vec<Type> = carry.iter().map(|&v| k.body.ty(v).clone()).collect();
    let others: Vec<usize> = (0..inits.len()).filter(|&j| j != p.slot).collect();
    let i32t = Type::scalar(DType::I32);

    // Built in a detached block, spliced in place of the loop at the end.
    let pre = k.body.new_block(&[]);
    let cond = scalar_op(k, pre, OpKind::Cmp(CmpOp::Lt), vec![lo, hi], DType::Bool, span);

    // Iteration `lo`'s first part.
    let mut map: HashMap<Value, Value> = HashMap::from([(iv, lo)]);
    for (j, &a) in args[1..].iter().enumerate() {
        map.insert(a, inits[j]);
    }
    for &op in body_ops {
        if op != p.second {
            clone_op(k, op, pre, &mut map);
        }
    }
    let get = |map: &HashMap<Value, Value>, v: Value| *map.get(&v).unwrap_or(&v);
    // The other carried values: iteration lo's, or the initial ones when it does not run.
    let types: Vec<Type> = others.iter().map(|&j| k.body.ty(inits[j]).clone()).collect();
    let then_b = k.body.new_block(&[]);
    let else_b = k.body.new_block(&[]);
    let firsts: Vec<Value> = others.iter().map(|&j| get(&map, yielded[j])).collect();
    k.body.append(then_b, OpKind::Yield, firsts, vec![], vec![], span);
    k.body.append(else_b, OpKind::Yield, others.iter().map(|&j| inits[j]).collect(), vec![], vec![], span);
    let sel_results = if others.is_empty() {
        vec![]
    } else {
        let sel = k.body.append(pre, OpKind::If, vec![cond], types.clone(), vec![then_b, else_b], span);
        k.body.op(sel).results.clone()
    };
    let carry0: Vec<Value> = carry.iter().map(|&v| get(&map, v)).collect();

    // `lo + step`, or `hi` where that overflows (the loop then ran once).
    let next = scalar_op(k, pre, OpKind::Binary(BinaryOp::Add), vec![lo, step], DType::I32, span);
    let wrapped = scalar_op(k, pre, OpKind::Cmp(CmpOp::Lt), vec![next, lo], DType::Bool, span);
    let lo2 = scalar_op(k, pre, OpKind::Select, vec![wrapped, hi, next], DType::I32, span);

    // The rotated loop: (iv, the other carried values, the deferred dot's carried operands, ivp).
    let mut arg_types = vec![i32t.clone()];
    arg_types.extend(types.iter().cloned());
    arg_types.extend(carry_types.iter().cloned());
    arg_types.push(i32t.clone());
    let nb = k.body.new_block(&arg_types);
    let nargs = k.body.block(nb).args.clone();
    let niv = nargs[0];
    let (n_others, rest) = nargs[1..].split_at(others.len());
    let n_carry = &rest[..carry.len()];
    let mut map: HashMap<Value, Value> = HashMap::from([(iv, niv)]);
    for (&j, &a) in others.iter().zip(n_others) {
        map.insert(args[1 + j], a);
    }
    for (idx, &op) in body_ops.iter().enumerate() {
        if op == p.second {
            continue;
        }
        clone_op(k, op, nb, &mut map);
        if idx == p.first {
            // The previous iteration's second dot, at `iv - step` (computed from `iv` so that the
            // pipeliner can compute its loads' offsets at any iteration).
            let prev = scalar_op(k, nb, OpKind::Binary(BinaryOp::Sub), vec![niv, step], DType::I32, span);
            let acc = deferred_dot(k, p, iv, prev, n_carry, nb);
            map.insert(args[1 + p.slot], acc);
        }
    }
    let mut next_vals: Vec<Value> = others.iter().map(|&j| get(&map, yielded[j])).collect();
    next_vals.extend(carry.iter().map(|&v| get(&map, v)));
    next_vals.push(niv);
    k.body.append(nb, OpKind::Yield, next_vals, vec![], vec![], span);
    let mut loop_operands = vec![lo2, hi, step];
    loop_operands.extend(sel_results.iter().copied());
    loop_operands.extend(carry0.iter().copied());
    loop_operands.push(lo);
    let loop_types: Vec<Type> = arg_types[1..].to_vec();
    let new_loop = k.body.append(pre, OpKind::For, loop_operands, loop_types, vec![nb], span);
    let lres = k.body.op(new_loop).results.clone();
    let (l_others, rest) = lres.split_at(others.len());
    let (l_carry, l_ivp) = rest.split_at(carry.len());

    // The last iteration's second dot.
    let then_b = k.body.new_block(&[]);
    let else_b = k.body.new_block(&[]);
    let last = deferred_dot(k, p, iv, l_ivp[0], l_carry, then_b);
    k.body.append(then_b, OpKind::Yield, vec![last], vec![], vec![], span);
    k.body.append(else_b, OpKind::Yield, vec![inits[p.slot]], vec![], vec![], span);
    let acc_ty = k.body.ty(inits[p.slot]).clone();
    let tail = k.body.append(pre, OpKind::If, vec![cond], vec![acc_ty], vec![then_b, else_b], span);
    let acc = k.body.result(tail);

    // The old loop's results, now these.
    let mut results = vec![acc; inits.len()];
    for (&j, &v) in others.iter().zip(l_others) {
        results[j] = v;
    }
    for (&old, &new) in d.results.iter().zip(&results) {
        for o in k.body.block(blk).ops.clone() {
            k.body.replace_uses_in(o, old, new);
        }
    }
    let new_ops = std::mem::take(&mut k.body.blocks[pre.index()].ops);
    let n = new_ops.len();
    k.body.blocks[blk.index()].ops.splice(at..=at, new_ops);
    at + n
}

#[cfg(test)]
mod tests {
    use crate::tir;

    /// Attention's loop, reduced: `s = q·kᵀ`, a row maximum, `p = exp2(s - m)`, and the output
    /// accumulated as `dot(p, v, acc · α)`.
    const SRC: &str =
        "kernel @att(%0 = q: &bf16[64, 64], %1 = k: &bf16[256, 64], %2 = v: &bf16[256, 64], %3 = o: &mut f32[64, 64], %4 = n: i32)
    grid(1) warps(8) stages(2) warp_specialize
{
  %5 = const 0 : i32
  %6 = const 0.0 : bf16
  %7 = load %0, %5, %5, %6 : bf16[64, 64]
  %8 = const 0.0 : f32[64, 64]
  %9 = const -inf : f32[64]
  %10 = const 64 : i32
  %11, %12 = for %5, %4, %10, %8, %9 : f32[64, 64], f32[64] {
  ^(%13: i32, %14: f32[64, 64], %15: f32[64]):
    %16 = load %1, %13, %5, %6 : bf16[64, 64]
    %17 = load %2, %13, %5, %6 : bf16[64, 64]
    %18 = permute [1, 0], %16 : bf16[64, 64]
    %19 = dot %7, %18, %8 : f32[64, 64]
    %20 = reduce.max 1, %19 : f32[64]
    %21 = max %15, %20 : f32[64]
    %22 = expand_dims 1, %21 : f32[64, 1]
    %23 = broadcast %22 : f32[64, 64]
    %24 = sub %19, %23 : f32[64, 64]
    %25 = exp2 %24 : f32[64, 64]
    %26 = sub %15, %21 : f32[64]
    %27 = exp2 %26 : f32[64]
    %28 = expand_dims 1, %27 : f32[64, 1]
    %29 = broadcast %28 : f32[64, 64]
    %30 = mul %14, %29 : f32[64, 64]
    %31 = cast %25 : bf16[64, 64]
    %32 = dot %31, %17, %30 : f32[64, 64]
    yield %32, %21
  }
  store %3, %5, %5, %11
}";

    fn run(src: &str) -> String {
        let mut k = tir::parse_kernel(src).unwrap_or_else(|e| panic!("{e}"));
        super::run(&mut k);
        tir::verify_kernel(&k).unwrap_or_else(|e| panic!("{e}"));
        super::super::dce::run(&mut k);
        tir::verify_kernel(&k).unwrap_or_else(|e| panic!("{e}"));
        tir::print_kernel(&k)
    }

    #[test]
    fn defers_the_second_dot_by_one_iteration() {
        let out = run(SRC);
        // Three products: iteration lo's first (before the loop), the loop's two, the last
        // iteration's second (after it).
        assert_eq!(out.matches("= dot ").count(), 4, "{out}");
        let body = &out[out.find("= for ").unwrap_or(0)..];
        let body = &body[..body.find("yield").unwrap_or(0)];
        let dots: Vec<usize> = body.match_indices("= dot ").map(|(i, _)| i).collect();
        // In the loop the deferred product comes right after the first, before the softmax.
        assert_eq!(dots.len(), 2, "{out}");
        let between = &body[dots[0]..dots[1]];
        assert!(!between.contains("exp2") && !between.contains("reduce"), "{out}");
        assert!(body[dots[1]..].contains("exp2"), "{out}");
        // It reloads `v` at `iv - step` in the loop.
        assert!(body.contains("= sub ") && body.matches("= load ").count() == 2, "{out}");
        assert_eq!(tir::print_kernel(&tir::parse_kernel(&out).unwrap_or_else(|e| panic!("{e}"))), out);
    }

    #[test]
    fn leaves_kernels_it_does_not_apply_to() {
        // Not warp-specialised; one consumer warpgroup; a store in the body; the product not
        // reading the first.
        let cases = [
            SRC.replace(" warp_specialize", ""),
            SRC.replace("warps(8)", "warps(4)"),
            SRC.replace("    yield %32, %21", "    store %3, %5, %5, %30\n    yield %32, %21"),
            SRC.replace("%32 = dot %31, %17, %30", "%32 = dot %7, %17, %14"),
        ];
        for src in cases {
            let out = run(&src);
            assert_eq!(out.matches("= dot ").count(), 2, "{out}");
            assert!(!out.contains("= if "), "{out}");
        }
    }
}
