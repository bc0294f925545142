//! Interpreter tests: small kernels built with the `Body` builder (or parsed from the text form)
//! checked against plain Rust.

use super::*;
use crate::diag::Span;
use crate::ir::Block;
use crate::tir::{BinaryOp, CmpOp, Dim, HostExpr, HostOp, Kernel, Lit, Param, ReduceOp, TirBody};

/// A small kernel builder: appends ops to `cur` and returns their (single) result.
struct Kb {
    k: Kernel,
    cur: Block,
}

impl Kb {
    fn new(name: &str, params: Vec<Param>, grid: Vec<HostExpr>) -> Kb {
        let mut body = TirBody::new();
        for p in &params {
            body.add_block_arg(body.entry, p.ty());
        }
        let cur = body.entry;
        Kb {
            k: Kernel {
                name: name.into(),
                doc: None,
                params,
                consts: vec![],
                grid,
                warps: 4,
                stages: 1,
                blocks_per_sm: None,
                warp_specialize: false,
                requires: vec![],
                tune: Default::default(),
                body,
            },
            cur,
        }
    }

    fn param(&self, i: usize) -> Value {
        self.k.param_value(i)
    }

    fn op(&mut self, kind: OpKind, operands: Vec<Value>, ty: Type) -> Value {
        let op = self.k.body.append(self.cur, kind, operands, vec![ty], vec![], Span::default());
        self.k.body.result(op)
    }

    fn effect(&mut self, kind: OpKind, operands: Vec<Value>) {
        self.k.body.append(self.cur, kind, operands, vec![], vec![], Span::default());
    }

    fn int(&mut self, v: i64) -> Value {
        self.op(OpKind::Const(Lit::Int(v)), vec![], Type::scalar(DType::I32))
    }

    fn float(&mut self, dtype: DType, v: f64, shape: &[i64]) -> Value {
        self.op(OpKind::Const(Lit::Float(v)), vec![], Type::tile(dtype, shape.to_vec()))
    }

    fn bin(&mut self, op: BinaryOp, a: Value, b: Value) -> Value {
        let ty = self.k.body.ty(a).clone();
        self.op(OpKind::Binary(op), vec![a, b], ty)
    }

    /// `for iv in lo..hi step s` carrying `inits`; `body(kb, iv, iters)` returns the next iters.
    fn for_loop(
        &mut self,
        lo: Value,
        hi: Value,
        step: Value,
        inits: Vec<Value>,
        body: impl FnOnce(&mut Kb, Value, Vec<Value>) -> Vec<Value>,
    ) -> Vec<Value> {
        let mut tys = vec![Type::scalar(DType::I32)];
        tys.extend(inits.iter().map(|&v| self.k.body.ty(v).clone()));
        let b = self.k.body.new_block(&tys);
        let args = self.k.body.block(b).args.clone();
        let outer = self.cur;
        self.cur = b;
        let next = body(self, args[0], args[1..].to_vec());
        self.effect(OpKind::Yield, next);
        self.cur = outer;
        let mut operands = vec![lo, hi, step];
        operands.extend(&inits);
        let op = self.k.body.append(outer, OpKind::For, operands, tys[1..].to_vec(), vec![b], Span::default());
        self.k.body.op(op).results.clone()
    }
}

fn tensor(name: &str, dtype: DType, dims: &[&str], mutable: bool) -> Param {
    let dims = dims.iter().map(|d| d.parse::<i64>().map(Dim::Const).unwrap_or_else(|_| Dim::Sym(d.to_string()))).collect();
    Param { name: name.into(), kind: ParamKind::Tensor { dtype, dims, mutable } }
}

fn cdiv(sym: &str, by: i64) -> HostExpr {
    let s = Box::new(HostExpr::Sym(sym.into()));
    HostExpr::Bin(HostOp::Div, Box::new(HostExpr::Bin(HostOp::Add, s, Box::new(HostExpr::Int(by - 1)))), Box::new(HostExpr::Int(by)))
}

/// Deterministic pseudo-random values in [-1, 1).
fn noise(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

fn out(args: &[Arg], i: usize) -> &HostTensor {
    match &args[i] {
        Arg::Tensor(t) => t,
        Arg::Scalar(_) => panic!("argument {i} is a scalar"),
    }
}

/// `z[i] = x[i] + y[i]`, BLOCK elements per program.
fn vadd(block: i64) -> Kernel {
    let params =
        vec![tensor("x", DType::F32, &["N"], false), tensor("y", DType::F32, &["N"], false), tensor("z", DType::F32, &["N"], true)];
    let mut b = Kb::new("vadd", params, vec![cdiv("N", block)]);
    let (x, y, z) = (b.param(0), b.param(1), b.param(2));
    let pid = b.op(OpKind::ProgramId(0), vec![], Type::scalar(DType::I32));
    let bs = b.int(block);
    let off = b.bin(BinaryOp::Mul, pid, bs);
    let pad = b.float(DType::F32, 0.0, &[]);
    let t = Type::tile(DType::F32, vec![block]);
    let lx = b.op(OpKind::Load, vec![x, off, pad], t.clone());
    let ly = b.op(OpKind::Load, vec![y, off, pad], t);
    let s = b.bin(BinaryOp::Add, lx, ly);
    b.effect(OpKind::Store, vec![z, off, s]);
    b.k
}

#[test]
fn vector_add() {
    let n = 1000;
    let (xs, ys) = (noise(n, 1), noise(n, 2));
    let mut args = vec![
        Arg::Tensor(HostTensor::from_f64(DType::F32, &[n], &xs)),
        Arg::Tensor(HostTensor::from_f64(DType::F32, &[n], &ys)),
        Arg::Tensor(HostTensor::from_f64(DType::F32, &[n], &vec![f64::NAN; n])),
    ];
    run_kernel(&vadd(256), &mut args).unwrap();
    let z = out(&args, 2);
    for i in 0..n {
        let want = xs[i] as f32 + ys[i] as f32;
        assert_eq!(z.get_f64(i), want as f64, "element {i}");
    }
}

/// `out[r] = Σ_j x[r, j]` for j < N, one row per program, a 64-wide tile masked to N.
fn row_sum() -> Kernel {
    let params = vec![tensor("x", DType::F32, &["M", "N"], false), tensor("out", DType::F32, &["M"], true)];
    let mut b = Kb::new("row_sum", params, vec![HostExpr::Sym("M".into())]);
    let (x, o) = (b.param(0), b.param(1));
    let row = b.op(OpKind::ProgramId(0), vec![], Type::scalar(DType::I32));
    let zero = b.int(0);
    // Pad with NaN so that only the mask keeps the padding out of the sum.
    let nan = b.float(DType::F32, f64::NAN, &[]);
    let t = Type::tile(DType::F32, vec![1, 64]);
    let v = b.op(OpKind::Load, vec![x, row, zero, nan], t.clone());
    let ar = b.op(OpKind::Arange(64), vec![], Type::tile(DType::I32, vec![64]));
    let ar = b.op(OpKind::ExpandDims(0), vec![ar], Type::tile(DType::I32, vec![1, 64]));
    let n = b.op(OpKind::Dim(1), vec![x], Type::scalar(DType::I32));
    let n = b.op(OpKind::Splat, vec![n], Type::tile(DType::I32, vec![1, 64]));
    let mask = b.op(OpKind::Cmp(CmpOp::Lt), vec![ar, n], Type::tile(DType::Bool, vec![1, 64]));
    let zeros = b.float(DType::F32, 0.0, &[1, 64]);
    let v = b.op(OpKind::Select, vec![mask, v, zeros], t);
    let s = b.op(OpKind::Reduce(ReduceOp::Sum, 1), vec![v], Type::tile(DType::F32, vec![1]));
    b.effect(OpKind::Store, vec![o, row, s]);
    b.k
}

#[test]
fn masked_row_sum() {
    let (m, n) = (7, 50);
    let xs = noise(m * n, 3);
    let mut args = vec![Arg::Tensor(HostTensor::from_f64(DType::F32, &[m, n], &xs)), Arg::Tensor(HostTensor::zeros(DType::F32, &[m]))];
    run_kernel(&row_sum(), &mut args).unwrap();
    let o = out(&args, 1);
    for r in 0..m {
        // The reference rule: sum the f32 values in f64, round once.
        let want = (0..n).map(|j| xs[r * n + j] as f32 as f64).sum::<f64>() as f32;
        assert_eq!(o.get_f64(r), want as f64, "row {r}");
    }
}

/// `c = a · b` with BM×BN tiles, accumulating BK-wide slices in a loop.
fn matmul(bm: i64, bn: i64, bk: i64, dtype: DType) -> Kernel {
    let params =
        vec![tensor("a", dtype, &["M", "K"], false), tensor("b", dtype, &["K", "N"], false), tensor("c", DType::F32, &["M", "N"], true)];
    let mut b = Kb::new("matmul", params, vec![cdiv("M", bm), cdiv("N", bn)]);
    let (a, bt, c) = (b.param(0), b.param(1), b.param(2));
    let i32s = Type::scalar(DType::I32);
    let pm = b.op(OpKind::ProgramId(0), vec![], i32s.clone());
    let pn = b.op(OpKind::ProgramId(1), vec![], i32s.clone());
    let (bmv, bnv) = (b.int(bm), b.int(bn));
    let om = b.bin(BinaryOp::Mul, pm, bmv);
    let on = b.bin(BinaryOp::Mul, pn, bnv);
    let k = b.op(OpKind::Dim(1), vec![a], i32s);
    let (zero, step) = (b.int(0), b.int(bk));
    let acc = b.float(DType::F32, 0.0, &[bm, bn]);
    let res = b.for_loop(zero, k, step, vec![acc], |b, kk, iters| {
        let pad = b.float(dtype, 0.0, &[]);
        let ta = b.op(OpKind::Load, vec![a, om, kk, pad], Type::tile(dtype, vec![bm, bk]));
        let tb = b.op(OpKind::Load, vec![bt, kk, on, pad], Type::tile(dtype, vec![bk, bn]));
        vec![b.op(OpKind::Dot, vec![ta, tb, iters[0]], Type::tile(DType::F32, vec![bm, bn]))]
    });
    b.effect(OpKind::Store, vec![c, om, on, res[0]]);
    b.k
}

/// The reference rule for `matmul`: per `bk` slice, `acc + Σ a·b` in f64, rounded to f32.
fn matmul_reference(a: &HostTensor, b: &HostTensor, m: usize, k: usize, n: usize, bk: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for k0 in (0..k).step_by(bk) {
                let mut s = acc as f64;
                for kk in k0..(k0 + bk).min(k) {
                    s += a.get_f64(i * k + kk) * b.get_f64(kk * n + j);
                }
                acc = s as f32;
            }
            c[i * n + j] = acc as f64;
        }
    }
    c
}

fn run_matmul(m: usize, k: usize, n: usize, tiles: (i64, i64, i64), dtype: DType) {
    let a = HostTensor::from_f64(dtype, &[m, k], &noise(m * k, 4));
    let b = HostTensor::from_f64(dtype, &[k, n], &noise(k * n, 5));
    let want = matmul_reference(&a, &b, m, k, n, tiles.2 as usize);
    let mut args = vec![Arg::Tensor(a), Arg::Tensor(b), Arg::Tensor(HostTensor::from_f64(DType::F32, &[m, n], &vec![f64::NAN; m * n]))];
    run_kernel(&matmul(tiles.0, tiles.1, tiles.2, dtype), &mut args).unwrap();
    assert_eq!(out(&args, 2).to_f64_vec(), want);
}

#[test]
fn tiny_dot_with_accumulator_loop() {
    run_matmul(19, 21, 13, (16, 8, 8), DType::F32);
    run_matmul(5, 3, 4, (4, 4, 2), DType::BF16);
}

#[test]
fn matmul_257x129x95_is_fast() {
    let start = std::time::Instant::now();
    run_matmul(257, 129, 95, (64, 64, 64), DType::F32);
    // Generous: about 0.1 s in a debug build; catches accidental quadratic work.
    assert!(start.elapsed().as_secs_f64() < 5.0, "took {:?}", start.elapsed());
}

/// Parses a kernel from the text form (shorter than the builder for one-op checks).
fn parse(text: &str) -> Kernel {
    crate::tir::parse_kernel(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Runs `y = op(x[, x2])` elementwise on 4-element tensors and returns y.
fn run_elementwise(op: &str, ty: &str, out_ty: &str, inputs: &[&HostTensor]) -> HostTensor {
    let n = inputs[0].numel();
    let operands = if inputs.len() == 2 { "%5, %6" } else { "%5" };
    let text = format!(
        "kernel @k(%0 = x: &{ty}[{n}], %1 = x2: &{ty}[{n}], %2 = y: &mut {out_ty}[{n}])\n    grid(1) warps(4) stages(1)\n{{\n  %3 = const 0 : i32\n  %4 = const 0 : {ty}\n  %5 = load %0, %3, %4 : {ty}[{n}]\n  %6 = load %1, %3, %4 : {ty}[{n}]\n  %7 = {op} {operands} : {out_ty}[{n}]\n  store %2, %3, %7\n}}\n"
    );
    let x2 = inputs.get(1).copied().unwrap_or(inputs[0]).clone();
    let dt = DType::parse(out_ty).unwrap();
    let mut args = vec![Arg::Tensor(inputs[0].clone()), Arg::Tensor(x2), Arg::Tensor(HostTensor::zeros(dt, &[n]))];
    run_kernel(&parse(&text), &mut args).unwrap();
    out(&args, 2).clone()
}

fn ints(dtype: DType, v: &[i64]) -> HostTensor {
    HostTensor::from_i64(dtype, &[v.len()], v)
}

fn floats(dtype: DType, v: &[f64]) -> HostTensor {
    HostTensor::from_f64(dtype, &[v.len()], v)
}

fn as_i64(t: &HostTensor) -> Vec<i64> {
    (0..t.numel()).map(|i| t.get_i64(i)).collect()
}

#[test]
fn integer_arithmetic_wraps_truncates_and_defines_division_by_zero() {
    let a = ints(DType::I32, &[7, -7, i32::MIN as i64, 5, i32::MAX as i64]);
    let b = ints(DType::I32, &[2, 2, -1, 0, 1]);
    assert_eq!(as_i64(&run_elementwise("div", "i32", "i32", &[&a, &b])), [3, -3, i32::MIN as i64, 0, i32::MAX as i64]);
    assert_eq!(as_i64(&run_elementwise("rem", "i32", "i32", &[&a, &b])), [1, -1, 0, 0, 0]);
    assert_eq!(as_i64(&run_elementwise("add", "i32", "i32", &[&a, &b])), [9, -5, i32::MAX as i64, 5, i32::MIN as i64]);
    assert_eq!(as_i64(&run_elementwise("mul", "i32", "i32", &[&a, &a])), [49, 49, 0, 25, 1]);
    // Shift amounts are taken modulo the width; `shr` is arithmetic on signed types.
    let s = ints(DType::I32, &[1, 33, -1, 31, 0]);
    assert_eq!(as_i64(&run_elementwise("shl", "i32", "i32", &[&b, &s])), [4, 4, i32::MIN as i64, 0, 1]);
    assert_eq!(as_i64(&run_elementwise("shr", "i32", "i32", &[&a, &s])), [3, -4, -1, 0, i32::MAX as i64]);
    // Unsigned: logical shift, unsigned division and comparison.
    let u = ints(DType::U32, &[0xffff_fff0, 10, 3, 0, 1]);
    let v = ints(DType::U32, &[4, 3, 0, 1, 0xffff_ffff]);
    assert_eq!(as_i64(&run_elementwise("shr", "u32", "u32", &[&u, &v])), [0x0fff_ffff, 1, 3, 0, 0]);
    assert_eq!(as_i64(&run_elementwise("div", "u32", "u32", &[&u, &v])), [0x3fff_fffc, 3, 0, 0, 0]);
    assert_eq!(as_i64(&run_elementwise("max", "u32", "u32", &[&u, &v])), [0xffff_fff0, 10, 3, 1, 0xffff_ffff]);
    assert_eq!(as_i64(&run_elementwise("cmp.lt", "u32", "bool", &[&u, &v])), [0, 0, 0, 1, 1]);
    assert_eq!(as_i64(&run_elementwise("sub", "u8", "u8", &[&ints(DType::U8, &[1]), &ints(DType::U8, &[2])])), [255]);
    let i8s = ints(DType::I8, &[-128, 127, -1]);
    assert_eq!(as_i64(&run_elementwise("neg", "i8", "i8", &[&i8s])), [-128, -127, 1]);
    assert_eq!(as_i64(&run_elementwise("abs", "i8", "i8", &[&i8s])), [-128, 127, 1]);
    assert_eq!(as_i64(&run_elementwise("not", "i8", "i8", &[&i8s])), [127, -128, 0]);
    assert_eq!(as_i64(&run_elementwise("not", "bool", "bool", &[&ints(DType::Bool, &[0, 1])])), [1, 0]);
    let u64s = ints(DType::U64, &[-1, 2]);
    assert_eq!(as_i64(&run_elementwise("div", "u64", "u64", &[&u64s, &ints(DType::U64, &[2, 2])])), [i64::MAX, 1]);
}

#[test]
fn float_arithmetic_rounds_once_and_handles_nan() {
    let nan = f64::NAN;
    let a = floats(DType::F32, &[1.0, nan, nan, -0.5, 3.0]);
    let b = floats(DType::F32, &[nan, 2.0, nan, 0.25, 0.0]);
    let mx = run_elementwise("max", "f32", "f32", &[&a, &b]).to_f64_vec();
    assert_eq!(mx[..2], [1.0, 2.0]);
    assert!(mx[2].is_nan());
    assert_eq!(mx[3..], [0.25, 3.0]);
    let mn = run_elementwise("min", "f32", "f32", &[&a, &b]).to_f64_vec();
    assert_eq!((mn[0], mn[1], mn[3], mn[4]), (1.0, 2.0, -0.5, 0.0));
    assert_eq!(as_i64(&run_elementwise("cmp.eq", "f32", "bool", &[&a, &b])), [0, 0, 0, 0, 0]);
    assert_eq!(as_i64(&run_elementwise("cmp.ne", "f32", "bool", &[&a, &b])), [1, 1, 1, 1, 1]);
    assert_eq!(as_i64(&run_elementwise("cmp.ge", "f32", "bool", &[&a, &b])), [0, 0, 0, 0, 1]);
    let d = run_elementwise("div", "f32", "f32", &[&a, &b]).to_f64_vec();
    assert_eq!((d[3], d[4]), (-2.0, f64::INFINITY));
    let r = run_elementwise("rem", "f32", "f32", &[&floats(DType::F32, &[-7.5, 7.5]), &floats(DType::F32, &[2.0, -2.0])]).to_f64_vec();
    assert_eq!(r, [-1.5, 1.5]);
    // bf16: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 and rounds to even; the sum is rounded once.
    let x = floats(DType::BF16, &[1.0, 1.0 + 2f64.powi(-7)]);
    let y = floats(DType::BF16, &[2f64.powi(-8), 2f64.powi(-8)]);
    assert_eq!(run_elementwise("add", "bf16", "bf16", &[&x, &y]).to_f64_vec(), [1.0, 1.0 + 2.0 * 2f64.powi(-7)]);
    // f16 products are rounded from the exact product.
    let p = floats(DType::F16, &[1.0 + 2f64.powi(-10), 3.0]);
    let want = ((1.0 + 2f64.powi(-10)) * (1.0 + 2f64.powi(-10)), 9.0);
    let got = run_elementwise("mul", "f16", "f16", &[&p, &p]).to_f64_vec();
    assert_eq!(got, [half::f16::from_f64(want.0).to_f64(), want.1]);
}

#[test]
fn unary_functions() {
    let xs = [-2.5, -1.0, -0.3, 0.0, 0.7, 1.5, 4.0];
    let t = floats(DType::F64, &xs);
    let check = |op: &str, f: fn(f64) -> f64| {
        let got = run_elementwise(op, "f64", "f64", &[&t]).to_f64_vec();
        for (x, g) in xs.iter().zip(got) {
            let w = f(*x);
            assert!(g == w || (g.is_nan() && w.is_nan()), "{op}({x}) = {g}, want {w}");
        }
    };
    check("exp", f64::exp);
    check("exp2", f64::exp2);
    check("log", f64::ln);
    check("log2", f64::log2);
    check("sqrt", f64::sqrt);
    check("rsqrt", |x| 1.0 / x.sqrt());
    check("sin", f64::sin);
    check("cos", f64::cos);
    check("tanh", f64::tanh);
    check("sigmoid", |x| 1.0 / (1.0 + (-x).exp()));
    check("floor", f64::floor);
    check("ceil", f64::ceil);
    check("abs", f64::abs);
    check("neg", |x| -x);
    check("erf", math::erf);
    let e = run_elementwise("erf", "f32", "f32", &[&floats(DType::F32, &[0.5])]).to_f64_vec();
    assert_eq!(e, [0.5204998778130465f64 as f32 as f64]);
}

#[test]
fn casts() {
    let f = floats(DType::F32, &[2.9, -2.9, 1e10, -1e10, f64::NAN, 0.0]);
    assert_eq!(as_i64(&run_elementwise("cast", "f32", "i32", &[&f])), [2, -2, i32::MAX as i64, i32::MIN as i64, 0, 0]);
    assert_eq!(as_i64(&run_elementwise("cast", "f32", "u8", &[&f])), [2, 0, 255, 0, 0, 0]);
    assert_eq!(as_i64(&run_elementwise("cast", "f32", "bool", &[&f])), [1, 1, 1, 1, 1, 0]);
    let i = ints(DType::I32, &[16_777_217, -1, 300, 0]);
    assert_eq!(run_elementwise("cast", "i32", "f32", &[&i]).to_f64_vec(), [16_777_216.0, -1.0, 300.0, 0.0]);
    assert_eq!(as_i64(&run_elementwise("cast", "i32", "i8", &[&i])), [1, -1, 44, 0]);
    assert_eq!(as_i64(&run_elementwise("cast", "i32", "u32", &[&i])), [16_777_217, 0xffff_ffff, 300, 0]);
    assert_eq!(as_i64(&run_elementwise("cast", "i32", "bool", &[&i])), [1, 1, 1, 0]);
    let h = floats(DType::F32, &[65504.0, 65520.0, 1.0 + 2f64.powi(-11) + 2f64.powi(-20)]);
    assert_eq!(run_elementwise("cast", "f32", "f16", &[&h]).to_f64_vec(), [65504.0, f64::INFINITY, 1.0 + 2f64.powi(-10)]);
    let b = ints(DType::Bool, &[1, 0]);
    assert_eq!(run_elementwise("cast", "bool", "f32", &[&b]).to_f64_vec(), [1.0, 0.0]);
}

#[test]
fn shape_ops_and_reductions() {
    let text = "kernel @k(%0 = x: &f32[2, 4], %1 = t: &mut f32[4, 2], %2 = b: &mut f32[3, 4], %3 = r: &mut f32[4], %4 = m: &mut f32[4])\n    grid(1) warps(4) stages(1)\n{\n  %5 = const 0 : i32\n  %6 = const 0.0 : f32\n  %7 = load %0, %5, %5, %6 : f32[2, 4]\n  %8 = permute [1, 0], %7 : f32[4, 2]\n  store %1, %5, %5, %8\n  %9 = reshape %7 : f32[8]\n  %10 = reshape %9 : f32[2, 4]\n  %11 = reduce.sum 0, %10 : f32[4]\n  store %3, %5, %11\n  %12 = expand_dims 0, %11 : f32[1, 4]\n  %13 = broadcast %12 : f32[3, 4]\n  store %2, %5, %5, %13\n  %14 = reduce.max 1, %7 : f32[2]\n  store %4, %5, %14\n  %15 = const nan : f32[4]\n  %16 = reduce.max 0, %15 : f32\n  %17 = const 2 : i32\n  %18 = view %4, %17 : tensor<mut f32, 0>\n  store %18, %16\n  %19 = const -inf : f32[4]\n  %20 = reduce.max 0, %19 : f32\n  %21 = const 3 : i32\n  %22 = view %4, %21 : tensor<mut f32, 0>\n  store %22, %20\n}\n";
    let nan = f64::NAN;
    let xs = [0.0, 1.0, nan, 3.0, 4.0, 5.0, 6.0, 7.0];
    let mut args = vec![
        Arg::Tensor(HostTensor::from_f64(DType::F32, &[2, 4], &xs)),
        Arg::Tensor(HostTensor::zeros(DType::F32, &[4, 2])),
        Arg::Tensor(HostTensor::zeros(DType::F32, &[3, 4])),
        Arg::Tensor(HostTensor::zeros(DType::F32, &[4])),
        Arg::Tensor(HostTensor::zeros(DType::F32, &[4])),
    ];
    run_kernel(&parse(text), &mut args).unwrap();
    let same = |got: Vec<f64>, want: &[f64]| {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!(g == w || (g.is_nan() && w.is_nan()), "{got:?} != {want:?}");
        }
    };
    same(out(&args, 1).to_f64_vec(), &[0.0, 4.0, 1.0, 5.0, nan, 6.0, 3.0, 7.0]);
    same(out(&args, 3).to_f64_vec(), &[4.0, 6.0, nan, 10.0]);
    same(out(&args, 2).to_f64_vec(), &[4.0, 6.0, nan, 10.0, 4.0, 6.0, nan, 10.0, 4.0, 6.0, nan, 10.0]);
    // max ignores NaN unless every element is NaN; all -inf gives -inf.
    same(out(&args, 4).to_f64_vec(), &[3.0, 7.0, nan, f64::NEG_INFINITY]);
}

#[test]
fn views_and_out_of_range_accesses() {
    // Row `pid - 1` of x through a view: program 0 views row -1 (empty: pads, drops stores);
    // the store at offset 2 of a 4-wide row drops the last two elements.
    let text = "kernel @k(%0 = x: &i32[R, 4], %1 = y: &mut i32[R, 4], %2 = d: &mut i32[R])\n    grid(R) warps(4) stages(1)\n{\n  %3 = program_id 0 : i32\n  %4 = const 1 : i32\n  %5 = sub %3, %4 : i32\n  %6 = view %0, %5 : tensor<i32, 1>\n  %7 = view %1, %5 : tensor<mut i32, 1>\n  %8 = const -1 : i32\n  %9 = const 2 : i32\n  %10 = load %6, %9, %8 : i32[4]\n  store %7, %9, %10\n  %11 = dim 0, %6 : i32\n  %12 = view %2, %3 : tensor<mut i32, 0>\n  store %12, %11\n}\n";
    let r = 3;
    let xs: Vec<i64> = (0..12).collect();
    let mut args = vec![
        Arg::Tensor(HostTensor::from_i64(DType::I32, &[r, 4], &xs)),
        Arg::Tensor(HostTensor::from_i64(DType::I32, &[r, 4], &[100; 12])),
        Arg::Tensor(HostTensor::zeros(DType::I32, &[r])),
    ];
    run_kernel(&parse(text), &mut args).unwrap();
    // Row 0 is never a valid view target of a store (program 0 views row -1).
    assert_eq!(as_i64(out(&args, 1)), [100, 100, 2, 3, 100, 100, 6, 7, 100, 100, 100, 100]);
    assert_eq!(as_i64(out(&args, 2)), [0, 4, 4]);
}

#[test]
fn if_with_results_and_scalar_parameters() {
    // y[0] = n > 0 ? n * s : -1.0, with a loop summing 0..n in a scalar.
    let text = "kernel @k(%0 = y: &mut f32[2], %1 = n: i32, %2 = s: f32)\n    grid(1) warps(4) stages(1)\n{\n  %3 = const 0 : i32\n  %4 = cmp.gt %1, %3 : bool\n  %5 = if %4 : f32 {\n  ^():\n    %6 = cast %1 : f32\n    %7 = mul %6, %2 : f32\n    yield %7\n  } {\n  ^():\n    %8 = const -1.0 : f32\n    yield %8\n  }\n  %9 = const 1 : i32\n  %10 = for %3, %1, %9, %3 : i32 {\n  ^(%11: i32, %12: i32):\n    %13 = add %11, %12 : i32\n    yield %13\n  }\n  %14 = cast %10 : f32\n  %15 = view %0, %3 : tensor<mut f32, 0>\n  store %15, %5\n  %16 = view %0, %9 : tensor<mut f32, 0>\n  store %16, %14\n}\n";
    let k = parse(text);
    let mut args = vec![Arg::Tensor(HostTensor::zeros(DType::F32, &[2])), Arg::Scalar(Scalar::Int(5)), Arg::Scalar(Scalar::Float(0.1))];
    run_kernel(&k, &mut args).unwrap();
    assert_eq!(out(&args, 0).to_f64_vec(), [(5.0 * (0.1f32 as f64)) as f32 as f64, 10.0]);
    args[1] = Arg::Scalar(Scalar::Int(-3));
    run_kernel(&k, &mut args).unwrap();
    assert_eq!(out(&args, 0).to_f64_vec(), [-1.0, 0.0]);
}

#[test]
fn integer_dot() {
    let text = "kernel @k(%0 = a: &i8[2, 3], %1 = b: &i8[3, 2], %2 = c: &mut i32[2, 2])\n    grid(1) warps(4) stages(1)\n{\n  %3 = const 0 : i32\n  %4 = const 0 : i8\n  %5 = load %0, %3, %3, %4 : i8[2, 4]\n  %6 = load %1, %3, %3, %4 : i8[4, 2]\n  %7 = const 7 : i32[2, 2]\n  %8 = dot %5, %6, %7 : i32[2, 2]\n  store %2, %3, %3, %8\n}\n";
    let a = HostTensor::from_i64(DType::I8, &[2, 3], &[1, -2, 3, 127, -128, 5]);
    let b = HostTensor::from_i64(DType::I8, &[3, 2], &[4, 5, 6, -7, 8, 9]);
    let mut args = vec![Arg::Tensor(a), Arg::Tensor(b), Arg::Tensor(HostTensor::zeros(DType::I32, &[2, 2]))];
    run_kernel(&parse(text), &mut args).unwrap();
    assert_eq!(as_i64(out(&args, 2)), [7 + 4 - 12 + 24, 7 + 5 + 14 + 27, 7 + 508 - 768 + 40, 7 + 635 + 896 + 45]);
}

#[test]
fn errors_are_reported_not_panics() {
    let n = 8;
    let mk = || {
        vec![
            Arg::Tensor(HostTensor::zeros(DType::F32, &[n])),
            Arg::Tensor(HostTensor::zeros(DType::F32, &[n])),
            Arg::Tensor(HostTensor::zeros(DType::F32, &[n])),
        ]
    };
    // Binding errors.
    let mut few = mk();
    few.pop();
    assert!(matches!(run_kernel(&vadd(4), &mut few), Err(InterpError::Bind(BindError::ArgCount { .. }))));
    let mut bad = mk();
    bad[0] = Arg::Tensor(HostTensor::zeros(DType::F16, &[n]));
    assert!(matches!(run_kernel(&vadd(4), &mut bad), Err(InterpError::Bind(BindError::DType { .. }))));
    let mut short = mk();
    if let Arg::Tensor(t) = &mut short[1] {
        t.bytes.pop();
    }
    assert!(matches!(run_kernel(&vadd(4), &mut short), Err(InterpError::TensorBytes { .. })));

    // Storing to a read-only parameter.
    let mut k = vadd(4);
    let store = *k.body.block(k.body.entry).ops.last().unwrap();
    let x = k.param_value(0);
    k.body.op_mut(store).operands[0] = x;
    assert!(matches!(run_kernel(&k, &mut mk()), Err(InterpError::ReadOnlyStore { .. })));

    // A zero or negative loop step.
    for step in ["0", "-2"] {
        let text = format!(
            "kernel @k(%0 = y: &mut f32[1])\n    grid(1) warps(4) stages(1)\n{{\n  %1 = const 0 : i32\n  %2 = const 10 : i32\n  %3 = const {step} : i32\n  %4 = for %1, %2, %3, %1 : i32 {{\n  ^(%5: i32, %6: i32):\n    yield %6\n  }}\n}}\n"
        );
        let mut args = vec![Arg::Tensor(HostTensor::zeros(DType::F32, &[1]))];
        assert!(matches!(run_kernel(&parse(&text), &mut args), Err(InterpError::NonPositiveStep { .. })));
    }

    // Malformed IR: every operand of every op replaced by a value of the wrong kind or one
    // not yet defined, one at a time; each must be an error or run, never panic.
    let base = matmul(8, 8, 4, DType::F32);
    let nvals = base.body.values.len() as u32;
    for op in 0..base.body.ops.len() {
        for slot in 0..base.body.ops[op].operands.len() {
            for v in [0, 2, 5, nvals - 1, nvals + 3] {
                let mut k = base.clone();
                k.body.ops[op].operands[slot] = Value(v);
                let mut args = vec![
                    Arg::Tensor(HostTensor::zeros(DType::F32, &[9, 5])),
                    Arg::Tensor(HostTensor::zeros(DType::F32, &[5, 10])),
                    Arg::Tensor(HostTensor::zeros(DType::F32, &[9, 10])),
                ];
                let _ = run_kernel(&k, &mut args);
            }
        }
        // Wrong result types, wrong attributes, missing regions.
        for ty in [
            Type::scalar(DType::F32),
            Type::tile(DType::I32, vec![8, 8]),
            Type::tile(DType::F32, vec![-1, 3]),
            Type::Tensor { dtype: DType::F32, rank: 1, mutable: true },
        ] {
            let mut k = base.clone();
            if let Some(&r) = k.body.ops[op].results.first() {
                k.body.values[r.index()].ty = ty;
            }
            let mut args = vec![
                Arg::Tensor(HostTensor::zeros(DType::F32, &[9, 5])),
                Arg::Tensor(HostTensor::zeros(DType::F32, &[5, 10])),
                Arg::Tensor(HostTensor::zeros(DType::F32, &[9, 10])),
            ];
            let _ = run_kernel(&k, &mut args);
        }
        let mut k = base.clone();
        k.body.ops[op].regions = vec![k.body.entry];
        let mut args = vec![
            Arg::Tensor(HostTensor::zeros(DType::F32, &[9, 5])),
            Arg::Tensor(HostTensor::zeros(DType::F32, &[5, 10])),
            Arg::Tensor(HostTensor::zeros(DType::F32, &[9, 10])),
        ];
        let _ = run_kernel(&k, &mut args);
    }
    let mut k = base.clone();
    let first = k.body.block(k.body.entry).ops[0];
    k.body.op_mut(first).operands.push(Value(10_000));
    let mut args = vec![
        Arg::Tensor(HostTensor::zeros(DType::F32, &[9, 5])),
        Arg::Tensor(HostTensor::zeros(DType::F32, &[5, 10])),
        Arg::Tensor(HostTensor::zeros(DType::F32, &[9, 10])),
    ];
    assert!(matches!(run_kernel(&k, &mut args), Err(InterpError::Internal(_))));
}

#[test]
fn bool_and_bitwise_ops() {
    // Logical ops on bool tiles and xor on ints.
    let a = ints(DType::Bool, &[0, 0, 1, 1]);
    let b = ints(DType::Bool, &[0, 1, 0, 1]);
    assert_eq!(as_i64(&run_elementwise("and", "bool", "bool", &[&a, &b])), [0, 0, 0, 1]);
    assert_eq!(as_i64(&run_elementwise("or", "bool", "bool", &[&a, &b])), [0, 1, 1, 1]);
    assert_eq!(as_i64(&run_elementwise("xor", "bool", "bool", &[&a, &b])), [0, 1, 1, 0]);
    let x = ints(DType::I16, &[0x7fff, -1]);
    assert_eq!(as_i64(&run_elementwise("xor", "i16", "i16", &[&x, &ints(DType::I16, &[-1, 0x7fff])])), [-0x8000, -0x8000]);
}
