//! Unit tests of the builder's folding, division by constants, hoisting and phi copies, and of
//! the verifier: the instructions built are run by the evaluator over edge values and compared
//! with plain Rust arithmetic, not read as text.

use super::builder::Builder;
use super::eval::{Env, run};
use super::{Addr, Cmp, FCmp, FOp, FUn, Inst, IntOp, MemTy, Module, Space, Ty, V, verify_module};
use crate::Target;

/// Where test functions store their results.
const OUT: u64 = 0x1000;

/// A kernel with parameters `params` then an `I64` output address, whose `body` computes values
/// that are stored there one after another (8 bytes apart).
fn build(params: &[Ty], body: impl FnOnce(&Builder, &[V]) -> Vec<V>) -> Module {
    let b = Builder::new(Target::Sm90a);
    let ps: Vec<V> = params.iter().map(|&t| b.param(t)).collect();
    let out = b.param(Ty::I64);
    let results = body(&b, &ps);
    for (i, r) in results.iter().enumerate() {
        let r = b.materialize(*r);
        let ty = if r.ty == Ty::Pred { b.int_cast(r, Ty::I32, false) } else { r };
        b.store(Space::Global, MemTy::of(Ty::int_of_bits(ty.ty.class_bits())), &[ty], Addr { base: out, offset: 8 * i as i64 }, None);
    }
    b.ret();
    let m = b.finish("t", 32, None);
    if let Err(e) = verify_module(&m) {
        panic!("{e}\n{}", super::print_module(&m));
    }
    m
}

/// Runs `m` on the parameter bits `args`; returns the `n` results, 8 bytes apart.
fn eval(m: &Module, args: &[u64], n: usize) -> Vec<u64> {
    let mut env = Env::default();
    let mut a = args.to_vec();
    a.push(OUT);
    run(m, &m.kernel, &a, &mut env).unwrap_or_else(|e| panic!("{e}\n{}", super::print_module(m)));
    (0..n)
        .map(|i| {
            let bytes = env.read(Space::Global, OUT + 8 * i as u64, 8);
            u64::from_le_bytes(bytes.try_into().unwrap_or_default())
        })
        .collect()
}

fn instructions(m: &Module) -> Vec<&Inst> {
    m.kernel.blocks.iter().flat_map(|b| &b.insts).collect()
}

const EDGES32: [i64; 12] = [0, 1, 2, 3, 7, 100, 65535, -1, -7, i32::MAX as i64, i32::MIN as i64, i32::MIN as i64 + 1];

/// Division and remainder by constants, built as multiplications and shifts, agree with Rust's
/// (truncating) division on edge values, signed and unsigned, 32 and 64 bits, and no division
/// instruction is left.
#[test]
fn division_by_constants_is_exact() {
    let divisors = [2i64, 3, 5, 6, 7, 10, 12, 25, 64, 100, 641, 1000, 65537, (1 << 31) - 1, -3, -8, -1000];
    for ty in [Ty::I32, Ty::I64] {
        let m = build(&[ty], |b, p| {
            let mut out = vec![];
            for &d in &divisors {
                for op in [IntOp::UDiv, IntOp::URem, IntOp::SDiv, IntOp::SRem] {
                    out.push(b.int_bin(op, p[0], V::int(ty, d)));
                }
            }
            out
        });
        assert!(
            !instructions(&m).iter().any(|i| matches!(i, Inst::Int { op: IntOp::UDiv | IntOp::SDiv | IntOp::URem | IntOp::SRem, .. })),
            "a division instruction is left:\n{}",
            super::print_module(&m)
        );
        let mut xs: Vec<i64> = EDGES32.to_vec();
        if ty == Ty::I64 {
            xs.extend([i64::MAX, i64::MIN, i64::MIN + 1, 12345678901234567, -98765432109876]);
        }
        for &x in &xs {
            let got = eval(&m, &[x as u64], divisors.len() * 4);
            let bits = ty.bits();
            let (sx, ux) = if bits == 32 { (x as i32 as i64, x as u32 as u64) } else { (x, x as u64) };
            for (j, &d) in divisors.iter().enumerate() {
                let (sd, ud) = if bits == 32 { (d as i32 as i64, d as u32 as u64) } else { (d, d as u64) };
                let want = [ux / ud, ux % ud, sx.wrapping_div(sd) as u64, sx.wrapping_rem(sd) as u64];
                for (k, w) in want.iter().enumerate() {
                    let mask = super::mask(bits);
                    assert_eq!(got[4 * j + k] & mask, w & mask, "{ty} x = {x}, d = {d}, op {k}");
                }
            }
        }
    }
}

#[test]
fn constants_and_identities_fold() {
    let b = Builder::new(Target::Sm90a);
    let x = b.param(Ty::I32);
    assert_eq!(b.int_bin(IntOp::Add, V::int(Ty::I32, 2), V::int(Ty::I32, 3)), V::int(Ty::I32, 5));
    assert_eq!(b.int_bin(IntOp::Add, x, V::int(Ty::I32, 0)), x);
    assert_eq!(b.int_bin(IntOp::Mul, V::int(Ty::I32, 1), x), x);
    assert_eq!(b.int_bin(IntOp::Mul, x, V::int(Ty::I32, 0)), V::int(Ty::I32, 0));
    // i32 arithmetic wraps.
    assert_eq!(b.int_bin(IntOp::Add, V::int(Ty::I32, i32::MAX as i64), V::int(Ty::I32, 1)), V::int(Ty::I32, i32::MIN as i64));
    assert_eq!(b.icmp(Cmp::Ult, V::int(Ty::I32, -1), V::int(Ty::I32, 0)), V::int(Ty::Pred, 0));
    assert_eq!(b.fbin(FOp::Mul, V::float(Ty::F32, 1.5), V::float(Ty::F32, 2.0)), V::float(Ty::F32, 3.0));
    assert_eq!(b.select(V::int(Ty::Pred, 1), x, V::int(Ty::I32, 9)), x);
    // `true || p` is true and `p ^ true` is `!p`, without a predicate register for `true`.
    let p = b.icmp(Cmp::Slt, x, V::int(Ty::I32, 3));
    let t = V::int(Ty::Pred, 1);
    assert_eq!(b.int_bin(IntOp::Or, t, p), t);
    assert_eq!(b.int_bin(IntOp::Or, x, V::int(Ty::I32, -1)), V::int(Ty::I32, -1));
    let n = b.int_bin(IntOp::Xor, p, t);
    let m = b.finish("t", 32, None);
    assert!(matches!(m.kernel.blocks[0].insts.last(), Some(Inst::Not { dst, .. }) if *dst == n), "{}", super::print_module(&m));
    assert!(!m.kernel.blocks[0].insts.iter().any(|i| matches!(i, Inst::Mov { dst, .. } if dst.ty == Ty::Pred)));
}

/// Every integer operation on constants folds to what the same instruction computes on
/// registers (the evaluator runs the register form), at the edges of each width.
#[test]
fn integer_folding_agrees_with_the_instructions() {
    let ops = [
        IntOp::Add,
        IntOp::Sub,
        IntOp::Mul,
        IntOp::UDiv,
        IntOp::URem,
        IntOp::SDiv,
        IntOp::SRem,
        IntOp::And,
        IntOp::Or,
        IntOp::Xor,
        IntOp::Shl,
        IntOp::LShr,
        IntOp::AShr,
    ];
    for ty in [Ty::I8, Ty::I16, Ty::I32, Ty::I64] {
        let vals: Vec<i64> = [0, 1, 2, 5, 7, -1, -2, -128, 127, 255, i16::MIN as i64, i32::MAX as i64, i64::MIN]
            .iter()
            .map(|&v| V::int(ty, v).imm().unwrap_or(0))
            .collect();
        let m = build(&[ty, ty], |b, p| ops.iter().map(|&op| b.int_bin(op, p[0], p[1])).collect());
        for &x in &vals {
            for &y in &vals {
                let shift = matches!(y, 0..=6);
                let got = eval(&m, &[x as u64, y as u64], ops.len());
                let cb = ty.class_bits();
                for (k, &op) in ops.iter().enumerate() {
                    let is_shift = matches!(op, IntOp::Shl | IntOp::LShr | IntOp::AShr);
                    let is_div = matches!(op, IntOp::UDiv | IntOp::URem | IntOp::SDiv | IntOp::SRem);
                    if (is_shift && !shift) || (is_div && (y == 0 || y == -1)) {
                        continue;
                    }
                    let b = Builder::new(Target::Sm90a);
                    let folded = b.int_bin(op, V::int(ty, x), V::int(ty, y));
                    let Some(f) = folded.imm() else { continue };
                    // An i8 lives in a 16-bit register: compare the 8 bits that are its value.
                    let mask = super::mask(ty.bits());
                    assert_eq!(got[k] & mask & super::mask(cb), f as u64 & mask, "{ty} {op:?} {x} {y}");
                }
            }
        }
    }
}

/// Comparisons of bool registers, evaluated on every pair of inputs, agree with the constant
/// folding (unsigned order: false < true).
#[test]
fn bool_comparisons_order_false_before_true() {
    let cmps = [Cmp::Eq, Cmp::Ne, Cmp::Ult, Cmp::Ule, Cmp::Ugt, Cmp::Uge, Cmp::Slt, Cmp::Sle, Cmp::Sgt, Cmp::Sge];
    let m = build(&[Ty::I32, Ty::I32], |b, p| {
        let (x, y) = (b.int_cast(p[0], Ty::Pred, false), b.int_cast(p[1], Ty::Pred, false));
        cmps.iter().map(|&c| b.icmp(c, x, y)).collect()
    });
    for (xv, yv) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        let got = eval(&m, &[xv, yv], cmps.len());
        for (k, &c) in cmps.iter().enumerate() {
            let want = Builder::new(Target::Sm90a).icmp(c, V::int(Ty::Pred, xv as i64), V::int(Ty::Pred, yv as i64));
            assert_eq!(got[k] & 1, want.imm().unwrap_or(-1) as u64, "{c:?} {xv} {yv}");
        }
    }
}

/// Value ids tell types and constants apart: an i16 register and its i8 truncation, or two i64
/// constants that differ only in their top bits, are different values.
#[test]
fn value_ids_tell_types_and_constants_apart() {
    let b = Builder::new(Target::Sm90a);
    let x = b.fresh(Ty::I16);
    assert_ne!(x.id(), x.retype(Ty::I8).id());
    assert_ne!(V::int(Ty::I16, 5).id(), V::int(Ty::I8, 5).id());
    assert_ne!(V::int(Ty::I64, 1).id(), V::int(Ty::I64, 1 + (1 << 59)).id());
    assert_ne!(V::int(Ty::I64, 1 << 59).id(), V::int(Ty::I64, 1 << 60).id());
    assert_ne!(V::int(Ty::I32, 0).id(), V::float(Ty::F32, 0.0).id());
}

/// A loop whose phis swap each iteration: the copies at the latch are parallel (both sources
/// read before either is written), and arithmetic on values from outside the loop is built in
/// its preheader.
#[test]
fn phis_swap_in_parallel_and_invariants_hoist() {
    let b = Builder::new(Target::Sm90a);
    let x = b.param(Ty::I32);
    let out = b.param(Ty::I64);
    let pre = b.current();
    let lp = b.block("loop");
    let exit = b.block("exit");
    b.br(lp);
    b.enter_loop();
    b.position(lp);
    let (i, p, q) = (b.phi(Ty::I32), b.phi(Ty::I32), b.phi(Ty::I32));
    b.incoming(i, V::int(Ty::I32, 0), pre);
    b.incoming(p, V::int(Ty::I32, 1), pre);
    b.incoming(q, V::int(Ty::I32, 2), pre);
    let inv = b.int_bin(IntOp::Mul, x, V::int(Ty::I32, 3));
    let i1 = b.int_bin(IntOp::Add, i, inv);
    assert_eq!(b.placement(&[x]).0, pre);
    assert_eq!(b.placement(&[i1]).0, lp);
    let more = b.icmp(Cmp::Slt, i1, V::int(Ty::I32, 30));
    b.incoming(i, i1, lp);
    b.incoming(p, q, lp);
    b.incoming(q, p, lp);
    b.cond_br(more, lp, exit);
    b.exit_loop();
    b.position(exit);
    for (k, v) in [i, p, q].iter().enumerate() {
        b.store(Space::Global, MemTy::B32, &[*v], Addr { base: out, offset: 8 * k as i64 }, None);
    }
    b.ret();
    let m = b.finish("t", 32, None);
    verify_module(&m).unwrap_or_else(|e| panic!("{e}"));
    // The multiplication is in the preheader, the add in the loop.
    let has = |blk: usize, f: &dyn Fn(&Inst) -> bool| m.kernel.blocks[blk].insts.iter().any(f);
    assert!(has(pre.0, &|i| matches!(i, Inst::Int { op: IntOp::Mul, .. })), "{}", super::print_module(&m));
    assert!(!has(lp.0, &|i| matches!(i, Inst::Int { op: IntOp::Mul, .. })), "{}", super::print_module(&m));
    // x = 4: i runs 0, 12, 24, 36 (3 iterations): an odd number of swaps.
    let mut env = Env::default();
    run(&m, &m.kernel, &[4, OUT], &mut env).unwrap_or_else(|e| panic!("{e}"));
    let word = |k: u64| u32::from_le_bytes(env.read(Space::Global, OUT + 8 * k, 4).try_into().unwrap_or_default());
    assert_eq!((word(0), word(1), word(2)), (36, 2, 1));
}

/// Float casts through the builder round like the interpreter (`dtype::round_float`), on both
/// targets (sm_80 narrows f64 to bf16 through f32 rounded to odd).
#[test]
fn float_casts_round_once() {
    let xs = [1.0 + 2f64.powi(-8), 1.0 + 2f64.powi(-8) + 2f64.powi(-40), -3.25, 65504.0, 1e-9, f64::INFINITY];
    for target in [Target::Sm80, Target::Sm90a] {
        let b = Builder::new(target);
        let x = b.param(Ty::F64);
        let out = b.param(Ty::I64);
        let vals = [b.fcast(x, Ty::BF16), b.fcast(x, Ty::F16), b.fcast(x, Ty::F32)];
        for (k, v) in vals.iter().enumerate() {
            b.store(Space::Global, MemTy::of(Ty::int_of_bits(v.ty.class_bits())), &[*v], Addr { base: out, offset: 8 * k as i64 }, None);
        }
        b.ret();
        let m = b.finish("t", 32, None);
        verify_module(&m).unwrap_or_else(|e| panic!("{e}"));
        for &x in &xs {
            let got = eval(&m, &[x.to_bits()], 3);
            for (k, d) in [crate::DType::BF16, crate::DType::F16, crate::DType::F32].iter().enumerate() {
                let mask = super::mask(d.bits());
                assert_eq!(got[k] & mask, crate::dtype::float_bits(*d, x), "{} {x} to {d}", target.name());
            }
        }
    }
}

/// A 16-bit float constant is rounded once from its f64 value: just above a tie it rounds up
/// (through `as f32` the excess would be lost and the tie rounded to even, down).
#[test]
fn half_constants_round_once() {
    let above = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
    assert_eq!(V::float(Ty::F16, above).float_imm(), Some(1.0 + 2f64.powi(-10)));
    assert_eq!(V::float(Ty::F16, 1.0 + 2f64.powi(-11)).float_imm(), Some(1.0));
    let above = 1.0 + 2f64.powi(-8) + 2f64.powi(-45);
    assert_eq!(V::float(Ty::BF16, above).float_imm(), Some(1.0 + 2f64.powi(-7)));
    assert_eq!(V::float(Ty::F16, 65519.99).float_imm(), Some(65504.0));
    assert_eq!(V::float(Ty::F16, 1e300).float_imm(), Some(f64::INFINITY));
}

#[test]
fn float_compares_with_nan() {
    let m =
        build(&[Ty::F32, Ty::F32], |b, p| [FCmp::Oeq, FCmp::Une, FCmp::Olt, FCmp::Uno].iter().map(|&c| b.fcmp(c, p[0], p[1])).collect());
    let nan = f32::NAN.to_bits() as u64;
    assert_eq!(eval(&m, &[nan, 1f32.to_bits() as u64], 4).iter().map(|v| v & 1).collect::<Vec<_>>(), [0, 1, 0, 1]);
    assert_eq!(eval(&m, &[1f32.to_bits() as u64, 2f32.to_bits() as u64], 4).iter().map(|v| v & 1).collect::<Vec<_>>(), [0, 1, 1, 0]);
}

/// `2^x` in f32 is `ex2.approx.ftz`: a result under 2^-126 is 0, as in the interpreter.
#[test]
fn ex2_in_f32_flushes_subnormal_results() {
    let m = build(&[Ty::F32], |b, p| vec![b.funary(FUn::Ex2Approx, p[0])]);
    for (x, want) in [(-130f32, 0f32), (-126.0, f32::MIN_POSITIVE), (3.0, 8.0), (-149.0, 0.0)] {
        assert_eq!(eval(&m, &[x.to_bits() as u64], 1)[0] as u32, want.to_bits(), "2^{x}");
    }
}

/// The verifier rejects a read of a register no path has written, and an operand whose width
/// is not its register's.
#[test]
fn verifier_catches_undefined_reads_and_width_mismatches() {
    let b = Builder::new(Target::Sm90a);
    let x = b.param(Ty::I32);
    let y = b.fresh(Ty::I32);
    let then = b.block("then");
    let join = b.block("join");
    let c = b.icmp(Cmp::Slt, x, V::int(Ty::I32, 0));
    b.cond_br(c, then, join);
    b.position(then);
    b.mov(y, x);
    b.br(join);
    b.position(join);
    b.int_bin(IntOp::Add, y, x);
    b.ret();
    let m = b.finish("t", 32, None);
    let e = verify_module(&m).expect_err("y is unset on the path that skips `then`");
    assert!(e.contains("before it is written"), "{e}");

    let b = Builder::new(Target::Sm90a);
    let x = b.param(Ty::I32);
    b.push(Inst::Int { op: IntOp::Add, dst: b.fresh(Ty::I64), a: x, b: x });
    b.ret();
    let e = verify_module(&b.finish("t", 32, None)).expect_err("an i32 add into an i64");
    assert!(e.contains("different widths"), "{e}");
}

/// Pack and unpack round-trip 16-bit parts through one 32-bit register (lowest part first), and
/// the LLVM emitter makes each one vector move (`mov.b32 %r, {%a, %b}`), not shifts and ors.
#[test]
fn pack_and_unpack_are_one_move() {
    let m = build(&[Ty::I32], |b, p| {
        let halves = b.unpack(p[0], 2, Ty::I16);
        let swapped = b.pack(&[halves[1], halves[0]], Ty::I32);
        vec![swapped, b.int_cast(halves[0], Ty::I32, false)]
    });
    let got = eval(&m, &[0x1234_abcd], 2);
    assert_eq!(got[0] as u32, 0xabcd_1234);
    assert_eq!(got[1] as u32, 0xabcd);
    #[cfg(feature = "llvm")]
    {
        let ptx = crate::emit::llvm::emit(&m, crate::emit::llvm::PIPELINE, false).expect("emits").ptx;
        let body = &ptx[ptx.find(".entry").expect("an entry")..];
        assert!(body.contains("mov.b32 \t{") || body.contains("mov.b32 \t%r"), "{body}");
        assert!(!body.contains("shl.b32") && !body.contains("shr.u32") && !body.contains("or.b32"), "{body}");
    }
}

/// A select on two conditions `and`ed (a tile's mask: in range and causal) is one select: the
/// LLVM emitter keeps NVPTX from splitting it into a select of a select (`emit::llvm`'s
/// `select`), which cost one more instruction per element of attention's causal mask.
#[test]
fn select_of_anded_conditions_is_one_select() {
    let m = build(&[Ty::I32, Ty::I32, Ty::F32], |b, p| {
        let lo = b.icmp(Cmp::Slt, p[0], p[1]);
        let hi = b.icmp(Cmp::Sle, p[1], V::int(Ty::I32, 100));
        let both = b.int_bin(IntOp::And, lo, hi);
        let x = b.fbin(FOp::Mul, p[2], V::float(Ty::F32, 2.0));
        vec![b.select(both, x, V::float(Ty::F32, f64::NEG_INFINITY))]
    });
    let bits = |x: f32| x.to_bits() as u64;
    assert_eq!(eval(&m, &[1, 5, bits(1.5)], 1)[0] as u32, 3.0f32.to_bits());
    assert_eq!(eval(&m, &[5, 5, bits(1.5)], 1)[0] as u32, f32::NEG_INFINITY.to_bits());
    assert_eq!(eval(&m, &[1, 101, bits(1.5)], 1)[0] as u32, f32::NEG_INFINITY.to_bits());
    #[cfg(feature = "llvm")]
    {
        let ptx = crate::emit::llvm::emit(&m, crate::emit::llvm::PIPELINE, false).expect("emits").ptx;
        let body = &ptx[ptx.find(".entry").expect("an entry")..];
        assert_eq!(body.matches("selp.").count(), 1, "{body}");
    }
}

/// Division and remainder in a loop by a divisor defined outside it, built as a multiplier and
/// shifts computed before the loop, agree with Rust's (truncating, wrapping) division on edge
/// values of both operands, signed and unsigned; the loop has no division instruction.
#[test]
fn division_by_loop_invariants_is_exact() {
    let b = Builder::new(Target::Sm90a);
    let (x, d, out) = (b.param(Ty::I32), b.param(Ty::I32), b.param(Ty::I64));
    let pre = b.current();
    let (lp, exit) = (b.block("loop"), b.block("exit"));
    b.br(lp);
    b.enter_loop();
    b.position(lp);
    let n = b.phi(Ty::I32);
    b.incoming(n, x, pre);
    for (k, op) in [IntOp::UDiv, IntOp::URem, IntOp::SDiv, IntOp::SRem].into_iter().enumerate() {
        let r = b.int_bin(op, n, d);
        b.store(Space::Global, MemTy::B32, &[r], Addr { base: out, offset: 8 * k as i64 }, None);
    }
    b.br(exit);
    b.exit_loop();
    b.position(exit);
    b.ret();
    let m = b.finish("t", 32, None);
    verify_module(&m).unwrap_or_else(|e| panic!("{e}\n{}", super::print_module(&m)));
    let divides =
        |i: &Inst| matches!(i, Inst::Int { op: IntOp::UDiv | IntOp::SDiv | IntOp::URem | IntOp::SRem, dst, .. } if dst.ty == Ty::I32);
    assert!(!m.kernel.blocks[lp.0].insts.iter().any(divides), "a division is left in the loop:\n{}", super::print_module(&m));
    let divisors =
        [1i64, 2, 3, 5, 7, 10, 64, 100, 641, 65535, 65537, (1 << 31) - 1, -1, -2, -3, -7, -641, i32::MIN as i64, i32::MIN as i64 + 1];
    let mut xs = EDGES32.to_vec();
    xs.extend([123456789, -987654321, 1 << 30, (1 << 31) - 2]);
    for &dv in &divisors {
        for &xv in &xs {
            let mut env = Env::default();
            run(&m, &m.kernel, &[xv as u32 as u64, dv as u32 as u64, OUT], &mut env).unwrap_or_else(|e| panic!("{e}"));
            let word = |k: u64| u32::from_le_bytes(env.read(Space::Global, OUT + 8 * k, 4).try_into().unwrap_or_default());
            let (ux, ud, sx, sd) = (xv as u32, dv as u32, xv as i32, dv as i32);
            let want = [ux / ud, ux % ud, sx.wrapping_div(sd) as u32, sx.wrapping_rem(sd) as u32];
            for (k, w) in want.iter().enumerate() {
                assert_eq!(word(k as u64), *w, "x = {xv}, d = {dv}, op {k}");
            }
        }
    }
}

/// `mir_dce` removes an unread chain of pure instructions (the second reads the first: both
/// go, over two rounds) and keeps what a store reads; the function computes the same.
#[test]
fn dce_removes_only_unread_pure_instructions() {
    let mut m = build(&[Ty::I32], |b, p| {
        let dead = b.int_bin(IntOp::Xor, p[0], V::int(Ty::I32, 0x55));
        let _also_dead = b.int_bin(IntOp::Add, dead, V::int(Ty::I32, 7));
        vec![b.int_bin(IntOp::Add, p[0], V::int(Ty::I32, 1))]
    });
    let before = instructions(&m).len();
    let want = eval(&m, &[5], 1);
    assert_eq!(super::dce::run(&mut m), 2);
    verify_module(&m).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(instructions(&m).len(), before - 2);
    assert_eq!(eval(&m, &[5], 1), want);
    assert_eq!(want, [6]);
    // Nothing left to remove.
    assert_eq!(super::dce::run(&mut m), 0);
}
