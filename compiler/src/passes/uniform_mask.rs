//! Skipping masks that hold for a whole tile: inside a loop, `where(c, a, b)` whose condition
//! is built from comparisons of index ranges (`k0 + arange(BK) < S`, `kpos[None, :] <=
//! qpos[:, None]`) becomes `if all(c) { a } else { where(c, a, b) }`, the test a few scalar
//! operations. A loop over key blocks computes its mask only on the blocks at an edge (the
//! partial last block, the diagonal of a causal mask); every other iteration skips the
//! comparisons and selects. Outside loops a `where` runs once per program, and the branch would
//! only cost registers.
//!
//! The condition must be a conjunction (`&&`, through broadcasts and reshapes, with constant
//! `true` operands dropped and `x || false` read as `x`) of integer comparisons `l < r` (`<=`,
//! `>`, `>=`) whose sides are affine in scalars and index ranges: sums and differences of
//! scalars, constants, `arange`s and constant multiples of them. Each side's range is bounded
//! (ranges treated as independent, so the bound is safe), and `l - r < 0` holds for every
//! element when the largest `l - r` does; the bounds are computed in i64, so they are exact
//! wherever the tile's own i32 arithmetic is. The mask's operations only the `where` reads move
//! into the `else` branch.

use crate::dtype::DType;
use crate::ir::{Block, Op, Value};
use crate::tir::{BinaryOp, CmpOp, Kernel, Lit, OpKind, Type};
use std::collections::HashMap;

/// Bounds the recursion through a value's producers (deeper expressions are left alone).
const MAX_DEPTH: u32 = 32;

pub fn run(k: &mut Kernel) {
    // Only inside loops, where the test pays for itself on every iteration; a `where` that runs
    // once per program would only trade its mask for a branch and more live registers.
    let mut blocks = vec![];
    k.body.walk(k.body.entry, &mut |op| {
        if matches!(k.body.op(op).kind, OpKind::For | OpKind::While) {
            blocks.extend(k.body.op(op).regions.iter().copied());
        }
    });
    for i in 0.. {
        let Some(&b) = blocks.get(i) else { break };
        for &op in &k.body.block(b).ops {
            for &r in &k.body.op(op).regions {
                if !blocks.contains(&r) {
                    blocks.push(r);
                }
            }
        }
    }
    for blk in blocks {
        let mut at = 0;
        while at < k.body.block(blk).ops.len() {
            let op = k.body.block(blk).ops[at];
            at = match plan(k, op) {
                Some(leaves) => rewrite(k, blk, at, &leaves) + 1,
                None => at + 1,
            };
        }
    }
}

/// `Σ coef · scalar + [lo, hi]`: an integer tile whose elements differ from a sum of scalars by
/// an offset in `lo..=hi`.
#[derive(Clone, Debug, Default)]
struct Affine {
    terms: Vec<(Value, i64)>,
    lo: i64,
    hi: i64,
}

impl Affine {
    fn constant(c: i64) -> Self {
        Affine { terms: vec![], lo: c, hi: c }
    }

    fn add(mut self, o: Affine, sign: i64) -> Option<Self> {
        for (v, c) in o.terms {
            let c = c.checked_mul(sign)?;
            match self.terms.iter_mut().find(|(x, _)| *x == v) {
                Some((_, have)) => *have = have.checked_add(c)?,
                None => self.terms.push((v, c)),
            }
        }
        let (olo, ohi) = if sign > 0 { (o.lo, o.hi) } else { (o.hi.checked_neg()?, o.lo.checked_neg()?) };
        Some(Affine { terms: self.terms, lo: self.lo.checked_add(olo)?, hi: self.hi.checked_add(ohi)? })
    }

    fn scale(self, c: i64) -> Option<Self> {
        let terms = self.terms.into_iter().map(|(v, x)| Some((v, x.checked_mul(c)?))).collect::<Option<Vec<_>>>()?;
        let (a, b) = (self.lo.checked_mul(c)?, self.hi.checked_mul(c)?);
        Some(Affine { terms, lo: a.min(b), hi: a.max(b) })
    }
}

/// The integer constant `v` holds (splatted or not).
fn int_const(k: &Kernel, v: Value) -> Option<i64> {
    let d = k.body.op(k.body.producer(v)?);
    match (&d.kind, d.operands.first()) {
        (OpKind::Const(Lit::Int(c)), _) => Some(*c),
        (OpKind::Splat, Some(&x)) => int_const(k, x),
        _ => None,
    }
}

fn affine(k: &Kernel, v: Value, depth: u32) -> Option<Affine> {
    let ty = k.body.ty(v);
    if depth > MAX_DEPTH || !matches!(ty.dtype(), DType::I32) || ty.is_tensor() {
        return None;
    }
    if let Some(c) = int_const(k, v) {
        return Some(Affine::constant(c));
    }
    if ty.is_scalar() {
        return Some(Affine { terms: vec![(v, 1)], lo: 0, hi: 0 });
    }
    let d = k.body.op(k.body.producer(v)?);
    let arg = |i: usize| d.operands.get(i).copied();
    match &d.kind {
        OpKind::Arange(n) if *n >= 1 => Some(Affine { terms: vec![], lo: 0, hi: n - 1 }),
        OpKind::Splat | OpKind::Broadcast | OpKind::ExpandDims(_) | OpKind::Reshape | OpKind::Permute(_) => affine(k, arg(0)?, depth + 1),
        OpKind::Binary(BinaryOp::Add) => affine(k, arg(0)?, depth + 1)?.add(affine(k, arg(1)?, depth + 1)?, 1),
        OpKind::Binary(BinaryOp::Sub) => affine(k, arg(0)?, depth + 1)?.add(affine(k, arg(1)?, depth + 1)?, -1),
        OpKind::Binary(BinaryOp::Mul) => {
            let (a, b) = (arg(0)?, arg(1)?);
            match (int_const(k, a), int_const(k, b)) {
                (Some(c), _) => affine(k, b, depth + 1)?.scale(c),
                (_, Some(c)) => affine(k, a, depth + 1)?.scale(c),
                _ => None,
            }
        }
        _ => None,
    }
}

/// One comparison of the conjunction: it holds everywhere when `Σ terms + bound` compares to 0
/// by `cmp`.
struct Leaf {
    terms: Vec<(Value, i64)>,
    bound: i64,
    cmp: CmpOp,
}

fn bool_const(k: &Kernel, v: Value) -> Option<bool> {
    let d = k.body.op(k.body.producer(v)?);
    match (&d.kind, d.operands.first()) {
        (OpKind::Const(Lit::Bool(b)), _) => Some(*b),
        (OpKind::Splat | OpKind::Broadcast | OpKind::ExpandDims(_) | OpKind::Reshape | OpKind::Permute(_), Some(&x)) => bool_const(k, x),
        _ => None,
    }
}

/// The comparisons whose conjunction is `c`; `None` when `c` is anything else.
fn conjuncts(k: &Kernel, c: Value, depth: u32, out: &mut Vec<Leaf>) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    match bool_const(k, c) {
        Some(true) => return Some(()),
        Some(false) => return None,
        None => {}
    }
    let d = k.body.op(k.body.producer(c)?);
    let arg = |i: usize| d.operands.get(i).copied();
    match &d.kind {
        OpKind::Binary(BinaryOp::And) => {
            conjuncts(k, arg(0)?, depth + 1, out)?;
            conjuncts(k, arg(1)?, depth + 1, out)
        }
        OpKind::Binary(BinaryOp::Or) => {
            let (a, b) = (arg(0)?, arg(1)?);
            match (bool_const(k, a), bool_const(k, b)) {
                (Some(true), _) | (_, Some(true)) => Some(()),
                (Some(false), _) => conjuncts(k, b, depth + 1, out),
                (_, Some(false)) => conjuncts(k, a, depth + 1, out),
                _ => None,
            }
        }
        OpKind::Broadcast | OpKind::ExpandDims(_) | OpKind::Reshape | OpKind::Permute(_) => conjuncts(k, arg(0)?, depth + 1, out),
        OpKind::Cmp(cmp @ (CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge)) => {
            let diff = affine(k, arg(0)?, 0)?.add(affine(k, arg(1)?, 0)?, -1)?;
            let bound = if matches!(cmp, CmpOp::Lt | CmpOp::Le) { diff.hi } else { diff.lo };
            out.push(Leaf { terms: diff.terms, bound, cmp: *cmp });
            Some(())
        }
        _ => None,
    }
}

/// The comparisons of a qualifying `select` on a tile.
fn plan(k: &Kernel, op: Op) -> Option<Vec<Leaf>> {
    let d = k.body.op(op);
    if d.kind != OpKind::Select || d.operands.len() != 3 || k.body.ty(*d.results.first()?).is_scalar() {
        return None;
    }
    let mut leaves = vec![];
    conjuncts(k, d.operands[0], 0, &mut leaves)?;
    // A comparison of scalars alone is as cheap as the test.
    leaves.iter().any(|l| !l.terms.is_empty() || l.bound != 0).then_some(leaves)
}

/// Rewrites the `select` at `at` in `blk`; returns the position of the `if` that replaces it.
fn rewrite(k: &mut Kernel, blk: Block, at: usize, leaves: &[Leaf]) -> usize {
    let sel = k.body.block(blk).ops[at];
    let span = k.body.span(sel);
    let (i64t, boolt) = (Type::scalar(DType::I64), Type::scalar(DType::Bool));
    let mut pre: Vec<Op> = vec![];
    let mut wide: HashMap<Value, Value> = HashMap::new();
    let mut emit = |k: &mut Kernel, kind: OpKind, operands: Vec<Value>, ty: Type| {
        let op = k.body.create_op(kind, operands, vec![ty], vec![], span);
        pre.push(op);
        k.body.result(op)
    };
    let mut all: Option<Value> = None;
    for leaf in leaves {
        let mut sum = emit(k, OpKind::Const(Lit::Int(leaf.bound)), vec![], i64t.clone());
        for &(v, c) in &leaf.terms {
            if c == 0 {
                continue;
            }
            let x = match wide.get(&v) {
                Some(&x) => x,
                None => {
                    let x = emit(k, OpKind::Cast, vec![v], i64t.clone());
                    wide.insert(v, x);
                    x
                }
            };
            let term = if c == 1 {
                x
            } else {
                let cv = emit(k, OpKind::Const(Lit::Int(c)), vec![], i64t.clone());
                emit(k, OpKind::Binary(BinaryOp::Mul), vec![x, cv], i64t.clone())
            };
            sum = emit(k, OpKind::Binary(BinaryOp::Add), vec![sum, term], i64t.clone());
        }
        let zero = emit(k, OpKind::Const(Lit::Int(0)), vec![], i64t.clone());
        let holds = emit(k, OpKind::Cmp(leaf.cmp), vec![sum, zero], boolt.clone());
        all = Some(match all {
            Some(a) => emit(k, OpKind::Binary(BinaryOp::And), vec![a, holds], boolt.clone()),
            None => holds,
        });
    }
    let cond = match all {
        Some(c) => c,
        None => emit(k, OpKind::Const(Lit::Bool(true)), vec![], boolt.clone()),
    };
    let (mask, a) = (k.body.op(sel).operands[0], k.body.op(sel).operands[1]);
    let old = k.body.result(sel);
    let ty = k.body.ty(old).clone();
    // The branches: `a` itself, or the select after the mask's own operations.
    let then_b = k.body.new_block(&[]);
    k.body.append(then_b, OpKind::Yield, vec![a], vec![], vec![], span);
    let else_b = k.body.new_block(&[]);
    let extra: Vec<Op> = pre.iter().copied().chain(k.body.block(then_b).ops.iter().copied()).collect();
    let moved = mask_only(k, blk, at, mask, &extra);
    let if_op = k.body.create_op(OpKind::If, vec![cond], vec![ty], vec![then_b, else_b], span);
    let new = k.body.result(if_op);
    let rest: Vec<Op> = k.body.block(blk).ops.iter().skip(at + 1).copied().collect();
    for o in rest {
        k.body.replace_uses_in(o, old, new);
    }
    let ops = &mut k.body.blocks[blk.index()].ops;
    ops.retain(|o| !moved.contains(o) && *o != sel);
    let at = at - moved.len();
    ops.splice(at..at, pre.iter().copied().chain([if_op]));
    let else_ops = &mut k.body.blocks[else_b.index()].ops;
    else_ops.extend(moved.iter().copied().chain([sel]));
    k.body.append(else_b, OpKind::Yield, vec![old], vec![], vec![], span);
    at + pre.len()
}

/// The operations of `blk` before `at` that compute `mask` and nothing else the kernel reads
/// (what only the `select` at `at` needs), in program order. `extra`: ops not yet placed whose
/// operands count as uses.
fn mask_only(k: &Kernel, blk: Block, at: usize, mask: Value, extra: &[Op]) -> Vec<Op> {
    let mut uses: HashMap<Value, usize> = HashMap::new();
    let mut count = |op: Op| {
        for &o in &k.body.op(op).operands {
            *uses.entry(o).or_default() += 1;
        }
    };
    k.body.walk(k.body.entry, &mut count);
    extra.iter().for_each(|&op| count(op));
    // Uses by the ops chosen so far (the select's own use of the mask included).
    let mut inside: HashMap<Value, usize> = HashMap::from([(mask, 1)]);
    let mut chosen = vec![];
    for &op in k.body.block(blk).ops[..at].iter().rev() {
        let d = k.body.op(op);
        let movable = d.regions.is_empty()
            && (d.kind.is_elementwise()
                || matches!(
                    d.kind,
                    OpKind::Arange(_) | OpKind::Splat | OpKind::Broadcast | OpKind::ExpandDims(_) | OpKind::Reshape | OpKind::Permute(_)
                ));
        let only_mask =
            !d.results.is_empty() && d.results.iter().all(|r| inside.get(r).copied().unwrap_or(0) > 0 && inside.get(r) == uses.get(r));
        if movable && only_mask {
            for &o in &d.operands {
                *inside.entry(o).or_default() += 1;
            }
            chosen.push(op);
        }
    }
    chosen.reverse();
    chosen
}

#[cfg(test)]
mod tests {
    use crate::tir;

    fn run(src: &str) -> String {
        let mut k = tir::parse_kernel(src).unwrap_or_else(|e| panic!("{e}"));
        super::run(&mut k);
        tir::verify_kernel(&k).unwrap_or_else(|e| panic!("{e}\n{}", tir::print_kernel(&k)));
        tir::print_kernel(&k)
    }

    /// `k0 + arange(64) < n` and `<= q0 + arange(64)`, the second through `x || false`, and an
    /// equality the pass cannot bound.
    const SRC: &str = "kernel @m(%0 = a: &f32[64, 64], %1 = c: &mut f32[64, 64], %2 = n: i32, %3 = q0: i32)
    grid(1) warps(4) stages(1)
{
  %4 = const 0 : i32
  %5 = const 0.0 : f32
  %6 = load %0, %4, %4, %5 : f32[64, 64]
  %7 = const 128 : i32
  %8 = const 64 : i32
  %9 = const -inf : f32[64, 64]
  %10 = for %4, %7, %8, %6 : f32[64, 64] {
  ^(%11: i32, %12: f32[64, 64]):
    %13 = arange 64 : i32[64]
    %14 = splat %11 : i32[64]
    %15 = add %14, %13 : i32[64]
    %16 = expand_dims 0, %15 : i32[1, 64]
    %17 = splat %2 : i32[1, 64]
    %18 = cmp.lt %16, %17 : bool[1, 64]
    %19 = splat %3 : i32[64]
    %20 = add %19, %13 : i32[64]
    %21 = expand_dims 1, %20 : i32[64, 1]
    %22 = broadcast %16 : i32[64, 64]
    %23 = broadcast %21 : i32[64, 64]
    %24 = cmp.le %22, %23 : bool[64, 64]
    %25 = const false : bool[64, 64]
    %26 = or %24, %25 : bool[64, 64]
    %27 = broadcast %18 : bool[64, 64]
    %28 = and %27, %26 : bool[64, 64]
    %29 = select %28, %12, %9 : f32[64, 64]
    %30 = cmp.eq %22, %23 : bool[64, 64]
    %31 = select %30, %29, %9 : f32[64, 64]
    yield %31
  }
  store %1, %4, %4, %10
}";

    #[test]
    fn masks_of_index_ranges_are_skipped_when_they_hold_everywhere() {
        let out = run(SRC);
        // One `if`: the first select; the equality's select stays as it was.
        assert_eq!(out.matches(" = if ").count(), 1, "{out}");
        assert_eq!(out.matches(" = select ").count(), 2, "{out}");
        // The tests: `k0 + 63 - n < 0` and `k0 + 63 - q0 <= 0`, in i64.
        for want in ["const 63 : i64", "cmp.lt", "cmp.le", "cast %"] {
            assert!(out.contains(want), "missing `{want}`:\n{out}");
        }
        // The mask's comparisons moved into the `else` branch; what the equality also reads
        // (the broadcasts) stayed before the `if`.
        let (before_if, after_if) = out.split_at(out.find(" = if ").unwrap_or(0));
        assert!(!before_if.contains("cmp.lt %") || before_if.matches("cmp.lt").count() == 1, "{out}");
        assert!(after_if.contains("or ") && after_if.contains("and "), "{out}");
        assert!(before_if.contains("broadcast"), "{out}");
        assert_eq!(tir::print_kernel(&tir::parse_kernel(&out).unwrap_or_else(|e| panic!("{e}"))), out);
    }

    #[test]
    fn other_conditions_are_left_alone() {
        // A mask read from memory, a product of two ranges and a scalar condition.
        let src = "kernel @m(%0 = a: &f32[64], %1 = c: &mut f32[64], %2 = n: i32, %3 = ok: &bool[64])
    grid(1) warps(4) stages(1)
{
  %4 = const 0 : i32
  %5 = const 0.0 : f32
  %6 = load %0, %4, %5 : f32[64]
  %7 = const false : bool
  %8 = load %3, %4, %7 : bool[64]
  %9 = select %8, %6, %6 : f32[64]
  %10 = arange 64 : i32[64]
  %11 = mul %10, %10 : i32[64]
  %12 = splat %2 : i32[64]
  %13 = cmp.lt %11, %12 : bool[64]
  %14 = select %13, %9, %6 : f32[64]
  %15 = cmp.lt %2, %4 : bool
  %16 = splat %15 : bool[64]
  %17 = select %16, %14, %6 : f32[64]
  store %1, %4, %17
}";
        let out = run(src);
        assert_eq!(out.matches(" = if ").count(), 0, "{out}");
    }
}
