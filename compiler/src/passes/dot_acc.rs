//! Accumulating into a `dot`: `x + dot(a, b)` becomes `dot(a, b, x)` (and `dot(a, b) + x`
//! likewise), so that `acc += dot(a, b)` in a loop runs as one product accumulating in `acc`'s
//! registers instead of a product into fresh zeros and an addition: half the accumulator
//! registers, no extra pass over them. Applies when the `dot`'s accumulator is a constant zero,
//! its result has no other use, it is in the same block as the addition (not hoisted into a
//! loop) and `x` has its type. The sum is the same up to rounding (`x` is added first, not
//! last), as for Triton's `acc += tl.dot(a, b)`; the dead `dot` is left to `dce`.

use crate::ir::{Op, Value, ValueDef};
use crate::tir::{BinaryOp, Kernel, Lit, OpKind};

pub fn run(k: &mut Kernel) {
    let (ops, uses) = super::live_ops_and_uses(k);
    // The block each op is in.
    let mut block_of = vec![None; k.body.ops.len()];
    for (b, data) in k.body.blocks.iter().enumerate() {
        for &op in &data.ops {
            block_of[op.index()] = Some(b);
        }
    }
    for op in ops {
        let d = k.body.op(op);
        if d.kind != OpKind::Binary(BinaryOp::Add) || d.operands.len() != 2 {
            continue;
        }
        let (p, q) = (d.operands[0], d.operands[1]);
        let found = [(q, p), (p, q)].into_iter().find_map(|(dot, x)| fusable(k, dot, x, op, &uses, &block_of).map(|(a, b)| (a, b, x)));
        if let Some((a, b, x)) = found {
            let add = k.body.op_mut(op);
            add.kind = OpKind::Dot;
            add.operands = vec![a, b, x];
        }
    }
}

/// The operands `(a, b)` of `dot` when `add`, the addition of `dot` and `x`, can become
/// `dot(a, b, x)`.
fn fusable(k: &Kernel, dot: Value, x: Value, add: Op, uses: &[u32], block_of: &[Option<usize>]) -> Option<(Value, Value)> {
    let ValueDef::Result(p, 0) = k.body.values[dot.index()].def else { return None };
    let d = k.body.op(p);
    if d.kind != OpKind::Dot || d.operands.len() != 3 || uses[dot.index()] != 1 || k.body.ty(x) != k.body.ty(dot) {
        return None;
    }
    if block_of[p.index()].is_none() || block_of[p.index()] != block_of[add.index()] {
        return None;
    }
    let zero = match k.body.producer(d.operands[2]).map(|z| &k.body.op(z).kind) {
        Some(OpKind::Const(Lit::Float(f))) => *f == 0.0,
        Some(OpKind::Const(Lit::Int(i))) => *i == 0,
        _ => false,
    };
    zero.then_some((d.operands[0], d.operands[1]))
}

#[cfg(test)]
mod tests {
    use crate::tir;

    /// A loop adding a product to `%9`, then (`%21`) a product added to a value defined after
    /// it, and (`%24`) a product used twice.
    const SRC: &str = "kernel @acc(%0 = a: &bf16[64, 64], %1 = b: &bf16[64, 64], %2 = c: &mut f32[64, 64])
    grid(1) warps(4) stages(3)
{
  %3 = const 1.0 : f32[64, 64]
  %4 = const 0 : i32
  %5 = const 4 : i32
  %6 = const 1 : i32
  %12 = const 0.0 : bf16
  %7 = for %4, %5, %6, %3 : f32[64, 64] {
  ^(%8: i32, %9: f32[64, 64]):
    %13 = load %0, %4, %4, %12 : bf16[64, 64]
    %17 = load %1, %4, %4, %12 : bf16[64, 64]
    %18 = const 0.0 : f32[64, 64]
    %19 = dot %13, %17, %18 : f32[64, 64]
    %20 = add %9, %19 : f32[64, 64]
    yield %20
  }
  %30 = load %0, %4, %4, %12 : bf16[64, 64]
  %31 = const 0.0 : f32[64, 64]
  %32 = dot %30, %30, %31 : f32[64, 64]
  %33 = exp %7 : f32[64, 64]
  %21 = add %32, %33 : f32[64, 64]
  %24 = dot %30, %30, %31 : f32[64, 64]
  %25 = add %21, %24 : f32[64, 64]
  %26 = mul %25, %24 : f32[64, 64]
  store %2, %4, %4, %26
}";

    fn run(src: &str) -> String {
        let mut k = tir::parse_kernel(src).unwrap_or_else(|e| panic!("{e}"));
        super::run(&mut k);
        tir::verify_kernel(&k).unwrap_or_else(|e| panic!("{e}"));
        super::super::dce::run(&mut k);
        tir::print_kernel(&k)
    }

    #[test]
    fn accumulates_into_the_addend() {
        let out = run(SRC);
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        let dots: Vec<&&str> = lines.iter().filter(|l| l.contains("= dot ")).collect();
        // The loop's product accumulates into the loop-carried value, the second into `exp`'s
        // result (defined after the product was); the third has two uses and stays.
        assert_eq!(dots.len(), 3, "{out}");
        assert_eq!(lines.iter().filter(|l| l.contains("= add ")).count(), 1, "{out}");
        let loop_body = &out[out.find("^(").unwrap_or(0)..out.find("yield").unwrap_or(0)];
        assert!(loop_body.contains("dot") && !loop_body.contains("add") && !loop_body.contains("const 0.0"), "{out}");
        // The product after the loop reads `exp`'s result, computed before it now.
        let exp = out.find("= exp ").unwrap_or(usize::MAX);
        let second = out.match_indices("= dot ").nth(1).map_or(0, |(i, _)| i);
        assert!(exp < second, "{out}");
        assert_eq!(tir::print_kernel(&tir::parse_kernel(&out).unwrap_or_else(|e| panic!("{e}"))), out);
    }

    #[test]
    fn leaves_nonzero_accumulators_and_other_blocks() {
        // A product with an accumulator of its own, and one outside the loop it is added in.
        let src = "kernel @k(%0 = a: &bf16[64, 64], %2 = c: &mut f32[64, 64])
    grid(1) warps(4) stages(3)
{
  %4 = const 0 : i32
  %5 = const 4 : i32
  %6 = const 1 : i32
  %12 = const 0.0 : bf16
  %3 = const 1.0 : f32[64, 64]
  %30 = load %0, %4, %4, %12 : bf16[64, 64]
  %32 = dot %30, %30, %3 : f32[64, 64]
  %40 = const 0.0 : f32[64, 64]
  %41 = dot %30, %30, %40 : f32[64, 64]
  %7 = for %4, %5, %6, %32 : f32[64, 64] {
  ^(%8: i32, %9: f32[64, 64]):
    %20 = add %9, %41 : f32[64, 64]
    yield %20
  }
  store %2, %4, %4, %7
}";
        let out = run(src);
        assert_eq!(out.matches("= dot ").count(), 2, "{out}");
        assert_eq!(out.matches("= add ").count(), 1, "{out}");
    }
}
