//! Property tests (proptest): the front end never panics, on arbitrary bytes and on mutations of
//! the examples (token insertions, deletions and swaps), whatever it reports stays inside the
//! sources; and randomly generated small tile-IR programs (every op kind, nested regions) print
//! to text that parses back to the same text; and layout conversions by warp shuffles give every
//! thread the elements the conversion asks for; and the launch binder accepts exactly the valid
//! argument lists (against an oracle in exact arithmetic), never panicking.

use crate::common::{root, tile_files};
use proptest::prelude::*;
use tessera_compiler::diag::Diagnostics;
use tessera_compiler::ir::{Block, Value};
use tessera_compiler::syntax::lexer;
use tessera_compiler::tir::{
    self, ArgOp, AtomicOp, BinaryOp, CmpOp, Kernel, Lit, OpKind, ReduceOp, ScanOp, Type, UnaryOp, parse_kernel, print_kernel,
};
use tessera_compiler::{DType, Options, Source, Span};

/// Every label of every diagnostic points inside a file of the map, within its text.
fn check_spans(d: &Diagnostics, what: &str) {
    let rendered = d.render();
    assert!(!rendered.is_empty(), "{what}: an error that renders to nothing");
    for item in &d.items {
        for l in &item.labels {
            let text = d.sources.text(l.span.file);
            assert!(l.span.start <= l.span.end && l.span.end as usize <= text.len(), "{what}: label {l:?} outside its file");
        }
    }
}

/// Runs the front end (and, when it succeeds, the whole compiler) on `text`.
fn compile_any(text: &str, full: bool) {
    let o = Options { verify: true, ..Options::default() };
    let src = Source::new("fuzz.tile", text);
    match tessera_compiler::frontend(&src, &o) {
        Err(d) => {
            check_spans(&d, text);
            assert!(d.has_errors(), "a failed compilation without an error:\n{text}");
        }
        Ok(_) if full => {
            if let Err(d) = tessera_compiler::compile(&src, &o) {
                let r = d.render();
                assert!(!r.contains("internal compiler error"), "{r}\n{text}");
            }
        }
        Ok(_) => {}
    }
}

/// The `.tile` files whose mutations are tried.
fn corpus() -> Vec<String> {
    let mut out = vec![];
    for dir in ["examples", "stdlib"] {
        for f in tile_files(dir) {
            out.push(std::fs::read_to_string(&f).unwrap_or_default());
        }
    }
    let _ = root();
    out
}

/// Tokens to insert: the language's own pieces.
const PIECES: &[&str] = &[
    "kernel",
    "fn",
    "let",
    "mut",
    "for",
    "in",
    "if",
    "else",
    "while",
    "return",
    "use",
    "as",
    "inf",
    "None",
    "#",
    "[",
    "]",
    "(",
    ")",
    "{",
    "}",
    ",",
    ";",
    ":",
    "::",
    ".",
    "..",
    "=",
    "==",
    "<",
    ">",
    "+",
    "-",
    "*",
    "/",
    "%",
    "&",
    "&&",
    "!",
    "_",
    "x",
    "f32",
    "i32",
    "0",
    "1.5",
    "\"s\"",
    "\"{}\"",
    "arange(4)",
    "gather",
    "scatter",
    "atomic_add",
    "print",
    "assert",
    "cumsum",
    "argmax",
    "join",
    "split",
];

#[derive(Clone, Debug)]
enum Mutation {
    Delete(usize),
    Insert(usize, usize),
    Swap(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), 0..PIECES.len()).prop_map(|(a, p)| Mutation::Insert(a, p)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
    ]
}

/// Applies token-level mutations to `text`.
fn mutate(text: &str, muts: &[Mutation]) -> String {
    let mut toks: Vec<String> = lexer::tokenize(text).iter().map(|&(l, _, r)| text[l..r].to_string()).collect();
    for m in muts {
        if toks.is_empty() {
            break;
        }
        let n = toks.len();
        match *m {
            Mutation::Delete(i) => {
                toks.remove(i % n);
            }
            Mutation::Insert(i, p) => toks.insert(i % (n + 1), PIECES[p].to_string()),
            Mutation::Swap(a, b) => toks.swap(a % n, b % n),
        }
    }
    toks.join(" ")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn front_end_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        compile_any(&String::from_utf8_lossy(&bytes), false);
    }

    #[test]
    fn front_end_never_panics_on_token_soup(picks in proptest::collection::vec(0..PIECES.len(), 0..80)) {
        let text: Vec<&str> = picks.iter().map(|&p| PIECES[p]).collect();
        compile_any(&text.join(" "), false);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn compiler_never_panics_on_mutated_examples(which in any::<usize>(), muts in proptest::collection::vec(mutation(), 1..4)) {
        let corpus = corpus();
        prop_assume!(!corpus.is_empty());
        let text = mutate(&corpus[which % corpus.len()], &muts);
        compile_any(&text, true);
    }

    #[test]
    fn tile_ir_round_trips(seeds in proptest::collection::vec(any::<u32>(), 1..48)) {
        let k = random_kernel(&seeds);
        tir::verify_kernel(&k).map_err(|e| TestCaseError::fail(format!("the generator made invalid IR: {e}\n{}", print_kernel(&k))))?;
        let text = print_kernel(&k);
        let parsed = parse_kernel(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(print_kernel(&parsed), text.clone());
        tir::verify_kernel(&parsed).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
    }
}

/// Builds a valid kernel from `seeds`: each seed picks an op and its operands among the values in
/// scope (so shrinking the seed list shrinks the program). Regions (`for`, `if`, `while`) nest
/// up to three deep and consume the seeds that follow them.
fn random_kernel(seeds: &[u32]) -> Kernel {
    let header = "kernel @rand(%0 = x: &f32[N, 4], %1 = y: &mut f32[N], %2 = ix: &mut i32[8], %3 = flag: bool, %4 = n: i32)\n    grid(N) warps(4) stages(1)\n{\n}\n";
    let k = parse_kernel(header).unwrap_or_else(|e| panic!("{e}"));
    let params: Vec<Value> = (0..5).map(|i| k.param_value(i)).collect();
    let mut g = Gen { k, seeds: seeds.to_vec(), pos: 0, params };
    let entry = g.k.body.entry;
    let scalars = vec![g.params[3], g.params[4]];
    g.fill(entry, scalars, 0);
    g.k
}

struct Gen {
    k: Kernel,
    seeds: Vec<u32>,
    pos: usize,
    params: Vec<Value>,
}

const SHAPES: &[&[i64]] = &[&[], &[4], &[2, 4], &[4, 2], &[8]];
const DTYPES: &[DType] = &[DType::F32, DType::I32, DType::Bool];

impl Gen {
    fn next(&mut self) -> Option<u32> {
        let s = self.seeds.get(self.pos).copied();
        self.pos += 1;
        s
    }

    fn ty(&self, v: Value) -> Type {
        self.k.body.ty(v).clone()
    }

    fn op(&mut self, blk: Block, kind: OpKind, operands: Vec<Value>, tys: Vec<Type>) -> Vec<Value> {
        let op = self.k.body.append(blk, kind, operands, tys, vec![], Span::default());
        self.k.body.op(op).results.clone()
    }

    fn konst(&mut self, blk: Block, dtype: DType, shape: &[i64], s: u32) -> Value {
        let lit = match dtype {
            DType::Bool => Lit::Bool(s.is_multiple_of(2)),
            DType::I32 => Lit::Int(s as i64 % 100 - 50),
            _ => Lit::Float([0.5, -1.25, 3.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e-7][s as usize % 7]),
        };
        self.op(blk, OpKind::Const(lit), vec![], vec![Type::tile(dtype, shape.to_vec())])[0]
    }

    /// A value of `ty` from the pool, or a new constant.
    fn value_of(&mut self, blk: Block, pool: &[Value], ty: &Type, s: u32) -> Value {
        let same: Vec<Value> = pool.iter().copied().filter(|&v| self.ty(v) == *ty).collect();
        if same.is_empty() || s.is_multiple_of(4) { self.konst(blk, ty.dtype(), ty.shape(), s) } else { same[s as usize % same.len()] }
    }

    fn i32s(&mut self, blk: Block, pool: &[Value], s: u32) -> Value {
        self.value_of(blk, pool, &Type::scalar(DType::I32), s)
    }

    /// Appends ops to `blk` until the seeds run out or (in a region) a seed ends it.
    fn fill(&mut self, blk: Block, mut pool: Vec<Value>, depth: usize) -> Vec<Value> {
        while let Some(s) = self.next() {
            if depth > 0 && s % 11 == 0 {
                break;
            }
            let s2 = self.next().unwrap_or(7);
            let pick = |pool: &[Value], k: u32| pool.get(k as usize % pool.len().max(1)).copied();
            match s % 20 {
                0 => {
                    let ty = Type::tile(DTYPES[s2 as usize % 3], SHAPES[(s2 / 3) as usize % SHAPES.len()].to_vec());
                    pool.push(self.konst(blk, ty.dtype(), ty.shape(), s2));
                }
                1 => pool.extend(self.op(blk, OpKind::Arange(4), vec![], vec![Type::tile(DType::I32, vec![4])])),
                2..=4 => {
                    let Some(a) = pick(&pool, s2) else { continue };
                    let t = self.ty(a);
                    let b = self.value_of(blk, &pool, &t, s2 / 7);
                    let (kind, rt) = match (s % 20, t.dtype()) {
                        (3, _) => (OpKind::Cmp(CmpOp::ALL[s2 as usize % CmpOp::ALL.len()]), t.with_dtype(DType::Bool)),
                        (4, DType::F32) => (OpKind::Unary(UnaryOp::ALL[s2 as usize % 14 + 2]), t.clone()),
                        (4, DType::I32) => (OpKind::Unary([UnaryOp::Neg, UnaryOp::Not, UnaryOp::Abs][s2 as usize % 3]), t.clone()),
                        (4, _) => (OpKind::Unary(UnaryOp::Not), t.clone()),
                        (_, DType::F32) => (OpKind::Binary(BinaryOp::ALL[s2 as usize % 7]), t.clone()),
                        (_, DType::I32) => (OpKind::Binary(BinaryOp::ALL[s2 as usize % BinaryOp::ALL.len()]), t.clone()),
                        _ => (OpKind::Binary([BinaryOp::And, BinaryOp::Or, BinaryOp::Xor][s2 as usize % 3]), t.clone()),
                    };
                    let operands = if matches!(kind, OpKind::Unary(_)) { vec![a] } else { vec![a, b] };
                    pool.extend(self.op(blk, kind, operands, vec![rt]));
                }
                5 => {
                    let Some(a) = pick(&pool, s2) else { continue };
                    let t = self.ty(a);
                    let c = self.value_of(blk, &pool, &t.with_dtype(DType::Bool), s2 / 5);
                    let b = self.value_of(blk, &pool, &t, s2 / 3);
                    pool.extend(self.op(blk, OpKind::Select, vec![c, a, b], vec![t]));
                }
                6 => {
                    let Some(a) = pick(&pool, s2) else { continue };
                    let t = self.ty(a).with_dtype(DTYPES[(s2 / 5) as usize % 3]);
                    pool.extend(self.op(blk, OpKind::Cast, vec![a], vec![t]));
                }
                7..=9 => {
                    let Some(a) = pick(&pool, s2) else { continue };
                    let t = self.ty(a);
                    let (d, shape) = (t.dtype(), t.shape().to_vec());
                    match (s % 20, shape.len()) {
                        (7, _) if shape.is_empty() => {
                            pool.extend(self.op(blk, OpKind::Splat, vec![a], vec![Type::tile(d, vec![4])]));
                        }
                        (7, _) => {
                            let n: i64 = shape.iter().product();
                            let to = if s2.is_multiple_of(2) { vec![n] } else { vec![1, n] };
                            pool.extend(self.op(blk, OpKind::Reshape, vec![a], vec![Type::tile(d, to)]));
                        }
                        (8, 1..=3) => {
                            let mut e = shape.clone();
                            e.insert(0, 1);
                            let x = self.op(blk, OpKind::ExpandDims(0), vec![a], vec![Type::tile(d, e.clone())])[0];
                            e[0] = 2;
                            pool.extend(self.op(blk, OpKind::Broadcast, vec![x], vec![Type::tile(d, e)]));
                        }
                        (9, 2) => {
                            pool.extend(self.op(blk, OpKind::Permute(vec![1, 0]), vec![a], vec![Type::tile(d, vec![shape[1], shape[0]])]));
                        }
                        _ => {}
                    }
                }
                10 => {
                    let Some(a) = pick(&pool, s2) else { continue };
                    let t = self.ty(a);
                    if t.shape().is_empty() || t.dtype() == DType::Bool {
                        continue;
                    }
                    let axis = s2 % t.shape().len() as u32;
                    let mut less = t.shape().to_vec();
                    less.remove(axis as usize);
                    let (kind, rt) = match s2 % 3 {
                        0 => (OpKind::Reduce(ReduceOp::ALL[(s2 / 3) as usize % 3], axis), Type::tile(t.dtype(), less)),
                        1 => (OpKind::ArgReduce([ArgOp::Max, ArgOp::Min][(s2 / 3) as usize % 2], axis), Type::tile(DType::I32, less)),
                        _ => (OpKind::Scan([ScanOp::Sum, ScanOp::Max][(s2 / 3) as usize % 2], axis), t.clone()),
                    };
                    pool.extend(self.op(blk, kind, vec![a], vec![rt]));
                }
                11 => {
                    let Some(a) = pick(&pool, s2) else { continue };
                    let t = self.ty(a);
                    if t.shape().len() >= 4 {
                        continue;
                    }
                    let mut js = t.shape().to_vec();
                    js.push(2);
                    let j = self.op(blk, OpKind::Join, vec![a, a], vec![Type::tile(t.dtype(), js)])[0];
                    pool.push(j);
                    if s2.is_multiple_of(2) {
                        pool.extend(self.op(blk, OpKind::Split, vec![j], vec![t.clone(), t]));
                    }
                }
                12 => {
                    // Loads: a window, a gather and an element.
                    let (x, pad) = (self.params[0], self.konst(blk, DType::F32, &[], s2));
                    let i = self.i32s(blk, &pool, s2);
                    pool.extend(self.op(blk, OpKind::Load, vec![x, i, i, pad], vec![Type::tile(DType::F32, vec![2, 4])]));
                    let idx = self.value_of(blk, &pool, &Type::tile(DType::I32, vec![4]), s2 / 3);
                    let m = self.value_of(blk, &pool, &Type::tile(DType::Bool, vec![4]), s2 / 5);
                    pool.extend(self.op(blk, OpKind::Gather, vec![x, idx, idx, m, pad], vec![Type::tile(DType::F32, vec![4])]));
                    let v = self.op(blk, OpKind::View, vec![x, i], vec![Type::Tensor { dtype: DType::F32, rank: 1, mutable: false }])[0];
                    let d = self.op(blk, OpKind::Dim(0), vec![v], vec![Type::scalar(DType::I32)]);
                    pool.extend(d);
                }
                13 => {
                    let (y, ix) = (self.params[1], self.params[2]);
                    let i = self.i32s(blk, &pool, s2);
                    let v = self.value_of(blk, &pool, &Type::tile(DType::F32, vec![4]), s2 / 3);
                    let idx = self.value_of(blk, &pool, &Type::tile(DType::I32, vec![4]), s2 / 5);
                    let m = self.value_of(blk, &pool, &Type::tile(DType::Bool, vec![4]), s2 / 7);
                    match s2 % 3 {
                        0 => {
                            self.op(blk, OpKind::Store, vec![y, i, v], vec![]);
                        }
                        1 => {
                            self.op(blk, OpKind::Scatter, vec![y, idx, v, m], vec![]);
                        }
                        _ => {
                            let a = AtomicOp::ALL[(s2 / 3) as usize % 3];
                            self.op(blk, OpKind::Atomic(a), vec![ix, idx, idx, m], vec![]);
                        }
                    }
                }
                14 => {
                    let Some(a) = pick(&pool, s2) else { continue };
                    let t = self.ty(a);
                    if s2.is_multiple_of(2) {
                        let fmt = ["a = {}", "{{}} \u{e9}\n{}", "\"{}\\"][(s2 / 2) as usize % 3];
                        self.op(blk, OpKind::Print(fmt.into()), vec![a], vec![]);
                    } else {
                        let c = self.value_of(blk, &pool, &t.with_dtype(DType::Bool), s2 / 3);
                        self.op(blk, OpKind::Assert("ok \"really\"".into()), vec![c], vec![]);
                    }
                }
                15..=17 if depth < 3 => {
                    let Some(a) = pick(&pool, s2) else { continue };
                    let t = self.ty(a);
                    let results = match s % 20 {
                        15 => {
                            let lo = self.i32s(blk, &pool, s2);
                            let body = self.k.body.new_block(&[Type::scalar(DType::I32), t.clone()]);
                            let args = self.k.body.block(body).args.clone();
                            let mut inner = pool.clone();
                            inner.extend(&args);
                            let inner = self.fill(body, inner, depth + 1);
                            let y = self.value_of(body, &inner, &t, s2 / 3);
                            self.op(body, OpKind::Yield, vec![y], vec![]);
                            let op = self.k.body.append(blk, OpKind::For, vec![lo, lo, lo, a], vec![t], vec![body], Span::default());
                            self.k.body.op(op).results.clone()
                        }
                        16 => {
                            let c = self.value_of(blk, &pool, &Type::scalar(DType::Bool), s2);
                            let mut regions = vec![];
                            for _ in 0..2 {
                                let r = self.k.body.new_block(&[]);
                                let inner = self.fill(r, pool.clone(), depth + 1);
                                let y = self.value_of(r, &inner, &t, s2 / 5);
                                self.op(r, OpKind::Yield, vec![y], vec![]);
                                regions.push(r);
                            }
                            let op = self.k.body.append(blk, OpKind::If, vec![c], vec![t], regions, Span::default());
                            self.k.body.op(op).results.clone()
                        }
                        _ => {
                            let mut regions = vec![];
                            for want in [Type::scalar(DType::Bool), t.clone()] {
                                let r = self.k.body.new_block(std::slice::from_ref(&t));
                                let mut inner = pool.clone();
                                inner.extend(self.k.body.block(r).args.clone());
                                let inner = self.fill(r, inner, depth + 1);
                                let y = self.value_of(r, &inner, &want, s2 / 7);
                                self.op(r, OpKind::Yield, vec![y], vec![]);
                                regions.push(r);
                            }
                            let op = self.k.body.append(blk, OpKind::While, vec![a], vec![t], regions, Span::default());
                            self.k.body.op(op).results.clone()
                        }
                    };
                    pool.extend(results);
                }
                18 if depth > 0 => {
                    self.op(blk, OpKind::Return, vec![], vec![]);
                }
                19 => {
                    let axis = s2 % 3;
                    let kind = if s2.is_multiple_of(2) { OpKind::ProgramId(axis) } else { OpKind::NumPrograms(axis) };
                    pool.extend(self.op(blk, kind, vec![], vec![Type::scalar(DType::I32)]));
                }
                _ => {}
            }
        }
        pool
    }
}

/// The generator reaches every op kind (over a few fixed seed lists), so the round-trip property
/// covers them all.
#[test]
fn generated_programs_cover_every_op() {
    let mut seen = std::collections::BTreeSet::new();
    let mut x = 0x9e37_79b9u32;
    for _ in 0..40 {
        let seeds: Vec<u32> = (0..120)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x
            })
            .collect();
        let k = random_kernel(&seeds);
        tir::verify_kernel(&k).unwrap_or_else(|e| panic!("{e}\n{}", print_kernel(&k)));
        let text = print_kernel(&k);
        assert_eq!(print_kernel(&parse_kernel(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))), text);
        k.body.walk(k.body.entry, &mut |op| {
            let m = k.body.op(op).kind.mnemonic();
            seen.insert(m.split(['.', ' ']).next().unwrap_or_default().to_string());
        });
    }
    for want in [
        "const",
        "arange",
        "splat",
        "broadcast",
        "expand_dims",
        "reshape",
        "permute",
        "cmp",
        "select",
        "cast",
        "reduce",
        "argmax",
        "argmin",
        "scan",
        "join",
        "split",
        "load",
        "gather",
        "view",
        "dim",
        "store",
        "scatter",
        "atomic",
        "print",
        "assert",
        "for",
        "if",
        "while",
        "return",
        "yield",
        "program_id",
        "num_programs",
        "exp",
        "add",
    ] {
        assert!(seen.contains(want), "no `{want}` generated; saw {seen:?}");
    }
}

// ---- layout conversions by warp shuffles ----

use tessera_compiler::lir::{self, Layout, shuffle};

/// A tile type for the shuffle-plan property: `shape` in `layout` on `threads` threads, if valid.
fn lir_tile(shape: Vec<i64>, layout: Layout, threads: u32) -> Option<lir::Type> {
    layout.valid_for(&shape, threads).then_some(lir::Type::Tile { dtype: DType::F32, shape, layout })
}

/// The layouts of the thread IR that can hold a `[m, n]` tile, or its `[m, 1]` and `[1, n]`
/// slices, on `warps` warps.
fn layouts_for(m: i64, n: i64, warps: u32) -> Vec<(Vec<i64>, Layout)> {
    let threads = warps * 32;
    let mut out = vec![(vec![m, n], Layout::blocked_for(m * n, threads))];
    for wm in [1, 2, 4, 8] {
        let wn = warps / wm;
        if wm * wn == warps {
            out.push((vec![m, n], Layout::Mma { warps_m: wm, warps_n: wn }));
            out.push((vec![1, n], Layout::MmaCols { warps_m: wm, warps_n: wn }));
        }
    }
    out.push((vec![m, 1], Layout::MmaRows { warps_m: warps }));
    out.push((vec![m, 1], Layout::blocked_for(m, threads)));
    out.push((vec![1, n], Layout::blocked_for(n, threads)));
    out.into_iter().filter(|(s, l)| l.valid_for(s, threads)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Wherever `shuffle::plan` finds a plan for a conversion (a plain one, a broadcast of a row
    /// or a column, or a transpose), following it gives every thread, in every register, exactly
    /// the element the index map asks for, from its own registers and the lanes of its own warp.
    /// (About half the generated cases have a plan, from plain register copies to 64 shuffles.)
    #[test]
    fn shuffle_plans_deliver_the_right_elements(mi in 0usize..4, ni in 0usize..4, wi in 0usize..3, si in any::<u32>(), di in any::<u32>()) {
        let (m, n, warps) = ([16i64, 32, 64, 128][mi], [8i64, 16, 64, 128][ni], [1u32, 2, 4][wi]);
        let threads = warps * 32;
        let all = layouts_for(m, n, warps);
        let (src_shape, sl) = all[si as usize % all.len()].clone();
        let dsts: Vec<(Vec<i64>, Layout)> = all.iter().filter(|(s, _)| s == &vec![m, n]).cloned().collect();
        let (dst_shape, dl) = dsts[di as usize % dsts.len()].clone();
        let (Some(src), Some(dst)) = (lir_tile(src_shape.clone(), sl, threads), lir_tile(dst_shape.clone(), dl, threads)) else { return Ok(()) };
        // The index map: row-major for [m, n] (or a transpose when square), zero strides for
        // broadcast axes.
        let strides = match src_shape.as_slice() {
            [1, _] => vec![0, 1],
            [_, 1] => vec![1, 0],
            _ if di % 2 == 1 && m == n => vec![1, m],
            _ => vec![n, 1],
        };
        let Some(plan) = shuffle::plan(&src, &dst, &strides, threads) else { return Ok(()) };
        for t in 0..threads {
            for (r, s) in plan.sources.iter().enumerate() {
                let l = shuffle::element_of(dl, &dst_shape, threads, t, r);
                let want = (l / n) * strides[0] + (l % n) * strides[1];
                let got = match s {
                    shuffle::Source::Own(reg) => shuffle::element_of(sl, &src_shape, threads, t, *reg),
                    shuffle::Source::Shuffle { reg, lane } => {
                        prop_assert!(lane.eval(t) < 32);
                        shuffle::element_of(sl, &src_shape, threads, t / 32 * 32 + lane.eval(t), *reg)
                    }
                    shuffle::Source::Gather { regs, lane, pick } => {
                        prop_assert!(lane.eval(t) < 32 && (pick.eval(t) as usize) < regs.len());
                        shuffle::element_of(sl, &src_shape, threads, t / 32 * 32 + lane.eval(t), regs[pick.eval(t) as usize])
                    }
                };
                prop_assert_eq!(got, want, "{} -> {} strides {:?}: thread {} register {}", src, dst, strides, t, r);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The launch binder (`host::bind`) against an independent oracle.

/// Draws from a list of seeds (cycling, mixed with the position), so that proptest shrinks the
/// whole case by shrinking the seeds.
struct Draw<'a> {
    seeds: &'a [u64],
    pos: usize,
}

impl Draw<'_> {
    fn next(&mut self) -> u64 {
        let s = self.seeds.get(self.pos % self.seeds.len().max(1)).copied().unwrap_or(0);
        self.pos += 1;
        s.wrapping_add(self.pos as u64 / self.seeds.len().max(1) as u64 * 0x9e37_79b9)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())].clone()
    }
}

const SYMS: &[&str] = &["M", "N", "K"];
const BIND_DTYPES: &[DType] = &[
    DType::Bool,
    DType::I8,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::U8,
    DType::U32,
    DType::U64,
    DType::F16,
    DType::BF16,
    DType::F32,
    DType::F64,
];
const INT_EDGES: &[i64] = &[
    0,
    1,
    -1,
    2,
    127,
    128,
    -128,
    -129,
    255,
    256,
    32767,
    32768,
    65535,
    65536,
    i32::MAX as i64,
    1 << 31,
    i32::MIN as i64,
    (i32::MIN as i64) - 1,
    1 << 32,
    u32::MAX as i64,
    i64::MAX,
    i64::MIN,
];
const FLOAT_EDGES: &[f64] = &[
    0.0,
    -0.0,
    0.5,
    1.0,
    -3.0,
    65504.0,
    65519.99,
    65520.0,
    -65520.0,
    1e6,
    3.3895e38,
    3.4e38,
    3.4028235e38,
    3.41e38,
    1e300,
    f64::INFINITY,
    f64::NAN,
    9223372036854775807.0,
    18446744073709549568.0,
    18446744073709551616.0,
    2147483647.0,
    2147483648.0,
];
const SIZES: &[usize] = &[0, 1, 2, 3, 7, 65535, 65536, i32::MAX as usize, 1 << 31, usize::MAX];
/// Small values, common so that many cases are accepted.
const SMALL: &[i64] = &[0, 1, 2, 3, 5, 8];

/// Scalars on both sides of the edges of `dtype`'s range.
fn scalar_edges(dtype: DType) -> Vec<tessera_compiler::Scalar> {
    use tessera_compiler::Scalar::{Bool, Float, Int};
    let float = |max: f64, ulp: f64| {
        let boundary = max + ulp / 2.0;
        vec![
            Float(max),
            Float(boundary),
            Float(-boundary),
            Float(boundary - ulp / 4.0),
            Float(f64::NEG_INFINITY),
            Float(f64::NAN),
            Bool(true),
        ]
    };
    match dtype {
        DType::F16 => float(65504.0, 32.0),
        DType::BF16 => float((2.0 - 2f64.powi(-7)) * 2f64.powi(127), 2f64.powi(120)),
        DType::F32 => float(f32::MAX as f64, 2f64.powi(104)),
        DType::F64 => vec![Float(f64::MAX), Float(f64::MIN_POSITIVE), Int(i64::MIN), Bool(false)],
        DType::Bool => vec![Int(0), Int(1), Int(2), Int(-1), Bool(true), Float(1.0)],
        _ => {
            let (lo, hi): (i128, i128) = match dtype {
                DType::I8 => (-128, 127),
                DType::I16 => (-32768, 32767),
                DType::I32 => (i32::MIN as i128, i32::MAX as i128),
                DType::U8 => (0, 255),
                DType::U32 => (0, u32::MAX as i128),
                DType::U64 => (0, u64::MAX as i128),
                _ => (i64::MIN as i128, i64::MAX as i128),
            };
            let int = |v: i128| Int(v.clamp(i64::MIN as i128, i64::MAX as i128) as i64);
            vec![int(lo), int(lo - 1), int(hi), int(hi + 1), Float(hi as f64), Float((hi + 1) as f64), Float(lo as f64 - 1.0), Float(0.5)]
        }
    }
}

/// A size: mostly small, now and then an edge.
fn size(d: &mut Draw) -> usize {
    if d.below(4) == 0 { d.pick(SIZES) } else { d.pick(&[0, 1, 2, 3, 7]) }
}

fn random_host_expr(d: &mut Draw, names: &[String], depth: usize) -> tir::HostExpr {
    use tir::{HostExpr, HostOp};
    if depth == 0 || d.below(3) == 0 {
        return match d.below(6) {
            _ if names.is_empty() => HostExpr::Int(d.pick(SMALL)),
            0 => HostExpr::Int(d.pick(INT_EDGES)),
            1 | 2 => HostExpr::Int(d.pick(SMALL)),
            _ => HostExpr::Sym(d.pick(names)),
        };
    }
    if d.below(8) == 0 {
        return HostExpr::Neg(Box::new(random_host_expr(d, names, depth - 1)));
    }
    let op = d.pick(&[HostOp::Add, HostOp::Add, HostOp::Sub, HostOp::Mul, HostOp::Mul, HostOp::Div, HostOp::Rem, HostOp::Min, HostOp::Max]);
    HostExpr::Bin(op, Box::new(random_host_expr(d, names, depth - 1)), Box::new(random_host_expr(d, names, depth - 1)))
}

fn random_condition(d: &mut Draw, names: &[String]) -> tir::HostExpr {
    use tir::{HostExpr, HostOp};
    let cmp = |d: &mut Draw| {
        let op = d.pick(&[HostOp::Ge, HostOp::Ge, HostOp::Lt, HostOp::Ne, HostOp::Eq]);
        HostExpr::Bin(op, Box::new(random_host_expr(d, names, 2)), Box::new(HostExpr::Int(d.pick(&[0, 1, 8]))))
    };
    match d.below(4) {
        0 => HostExpr::Bin(HostOp::And, Box::new(cmp(d)), Box::new(cmp(d))),
        1 => HostExpr::Bin(HostOp::Or, Box::new(cmp(d)), Box::new(cmp(d))),
        2 => HostExpr::Not(Box::new(cmp(d))),
        _ => cmp(d),
    }
}

/// The oracle's value of `e` in exact (i128) arithmetic: `None` where `host::bind` must refuse
/// (a result outside i64, a division by zero, an unbound symbol). `&&`, `||` short-circuit.
fn oracle_eval(e: &tir::HostExpr, syms: &[(String, i128)]) -> Option<i128> {
    use tir::{HostExpr, HostOp};
    let fit = |v: i128| (i64::MIN as i128..=i64::MAX as i128).contains(&v).then_some(v);
    match e {
        HostExpr::Int(v) => Some(*v as i128),
        HostExpr::Bool(b) => Some(*b as i128),
        HostExpr::Sym(s) => syms.iter().find(|(n, _)| n == s).map(|(_, v)| *v),
        HostExpr::Neg(x) => fit(-oracle_eval(x, syms)?),
        HostExpr::Not(x) => Some((oracle_eval(x, syms)? == 0) as i128),
        HostExpr::Bin(HostOp::And, a, b) => Some((oracle_eval(a, syms)? != 0 && oracle_eval(b, syms)? != 0) as i128),
        HostExpr::Bin(HostOp::Or, a, b) => Some((oracle_eval(a, syms)? != 0 || oracle_eval(b, syms)? != 0) as i128),
        HostExpr::Bin(op, a, b) => {
            let (a, b) = (oracle_eval(a, syms)?, oracle_eval(b, syms)?);
            match op {
                HostOp::Add => fit(a + b),
                HostOp::Sub => fit(a - b),
                HostOp::Mul => fit(a * b),
                HostOp::Div if b == 0 => None,
                HostOp::Rem if b == 0 => None,
                HostOp::Div => fit(a / b),
                HostOp::Rem => fit(a % b),
                HostOp::Min => Some(a.min(b)),
                HostOp::Max => Some(a.max(b)),
                HostOp::Eq => Some((a == b) as i128),
                HostOp::Ne => Some((a != b) as i128),
                HostOp::Lt => Some((a < b) as i128),
                HostOp::Le => Some((a <= b) as i128),
                HostOp::Gt => Some((a > b) as i128),
                HostOp::Ge => Some((a >= b) as i128),
                HostOp::And | HostOp::Or => None,
            }
        }
    }
}

/// Whether scalar `v` fits `dtype`, by the documented rule, computed independently of
/// `host::fit_scalar`; for integer and bool dtypes, the value.
fn oracle_fit(dtype: DType, v: tessera_compiler::Scalar) -> Option<Option<i128>> {
    use tessera_compiler::Scalar;
    if dtype.is_float() {
        // A finite value at or past the rounding boundary above the largest finite value (half an
        // ulp past it) rounds to infinity.
        let limit = match dtype {
            DType::F16 => 65520.0,
            DType::BF16 => (2.0 - 2f64.powi(-8)) * 2f64.powi(127),
            DType::F32 => (2.0 - 2f64.powi(-24)) * 2f64.powi(127),
            _ => f64::INFINITY,
        };
        let x = match v {
            Scalar::Bool(_) => return None,
            Scalar::Int(i) => i as f64,
            Scalar::Float(f) => f,
        };
        return (!x.is_finite() || x.abs() < limit).then_some(None);
    }
    let (lo, hi): (i128, i128) = match dtype {
        DType::Bool => (0, 1),
        DType::I8 => (-128, 127),
        DType::I16 => (-32768, 32767),
        DType::I32 => (-(1 << 31), (1 << 31) - 1),
        DType::I64 => (-(1 << 63), (1 << 63) - 1),
        DType::U8 => (0, 255),
        DType::U32 => (0, (1 << 32) - 1),
        _ => (0, (1 << 64) - 1),
    };
    let i = match (v, dtype) {
        (Scalar::Float(_), DType::Bool) => return None,
        (Scalar::Int(i), _) => i as i128,
        (Scalar::Bool(b), _) => b as i128,
        (Scalar::Float(f), _) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e30 => f as i128,
        (Scalar::Float(_), _) => return None,
    };
    (lo..=hi).contains(&i).then_some(Some(i))
}

/// The grid `host::bind` must give, or `None` where it must refuse: arguments match the
/// signature in count, kind, dtype and rank; constant dimensions match; every size fits in i32;
/// the tensors agree on each dimension symbol; scalars fit their dtypes; requirements hold and
/// the grid evaluates without overflow, each axis within CUDA's limits.
fn oracle_bind(
    params: &[tir::Param],
    grid: &[tir::HostExpr],
    requires: &[tir::Require],
    args: &[tessera_compiler::ArgInfo],
) -> Option<[u32; 3]> {
    use tessera_compiler::ArgInfo;
    use tir::{Dim, ParamKind};
    if params.len() != args.len() {
        return None;
    }
    let mut syms: Vec<(String, i128)> = vec![];
    for (p, a) in params.iter().zip(args) {
        match (&p.kind, a) {
            (ParamKind::Tensor { dtype, dims, .. }, ArgInfo::Tensor { dtype: got, shape }) => {
                if dtype != got || dims.len() != shape.len() {
                    return None;
                }
                for (d, &n) in dims.iter().zip(shape) {
                    if n > i32::MAX as usize {
                        return None;
                    }
                    match d {
                        Dim::Const(c) if *c as i128 != n as i128 => return None,
                        Dim::Const(_) => {}
                        Dim::Sym(s) => match syms.iter().find(|(x, _)| x == s) {
                            Some((_, v)) if *v != n as i128 => return None,
                            Some(_) => {}
                            None => syms.push((s.clone(), n as i128)),
                        },
                    }
                }
            }
            (ParamKind::Scalar { dtype }, ArgInfo::Scalar(v)) => {
                if let Some(i) = oracle_fit(*dtype, *v)? {
                    let read = grid.iter().chain(requires.iter().map(|r| &r.cond)).any(|e| e.reads(&p.name));
                    if i > i64::MAX as i128 {
                        if read {
                            return None;
                        }
                    } else if !syms.iter().any(|(x, _)| x == &p.name) {
                        syms.push((p.name.clone(), i));
                    }
                }
            }
            _ => return None,
        }
    }
    for r in requires {
        if oracle_eval(&r.cond, &syms)? == 0 {
            return None;
        }
    }
    let mut g = [1u32; 3];
    for (axis, e) in grid.iter().enumerate().take(3) {
        let v = oracle_eval(e, &syms)?;
        if v < 0 || v > [i32::MAX as i128, 65535, 65535][axis] {
            return None;
        }
        g[axis] = v as u32;
    }
    Some(g)
}

/// A random signature with `#[grid]` and `#[require]` over its symbols, and a random argument
/// list for it: mostly matching (so that acceptance is common), with mismatched kinds, dtypes,
/// ranks and counts, sizes from 0 to past i32 and scalars at and past their dtype's edges.
#[allow(clippy::type_complexity)]
fn random_binding(seeds: &[u64]) -> (Vec<tir::Param>, Vec<tir::HostExpr>, Vec<tir::Require>, Vec<tessera_compiler::ArgInfo>) {
    use tessera_compiler::{ArgInfo, Scalar};
    use tir::{Dim, Param, ParamKind, Require};
    let mut d = Draw { seeds, pos: 0 };
    let mut params = vec![];
    for i in 0..d.below(5) {
        let kind = if d.below(3) > 0 {
            let dims = (0..1 + d.below(3))
                .map(|_| if d.below(4) == 0 { Dim::Const(d.pick(&[1, 2, 3, 3, 1 << 31])) } else { Dim::Sym(d.pick(SYMS).into()) })
                .collect();
            ParamKind::Tensor { dtype: d.pick(&[DType::F32, DType::BF16, DType::I32]), dims, mutable: d.below(2) == 0 }
        } else {
            ParamKind::Scalar { dtype: d.pick(BIND_DTYPES) }
        };
        // Now and then a scalar takes a dimension symbol's name: the first binder wins.
        let name = if matches!(kind, ParamKind::Scalar { .. }) && d.below(6) == 0 { d.pick(SYMS).to_string() } else { format!("p{i}") };
        params.push(Param { name, kind });
    }
    // The names the expressions read: the symbols of the signature (integer and bool scalars,
    // dimension symbols of its tensors), and now and then one it does not bind.
    let mut names: Vec<String> = vec![];
    for p in &params {
        match &p.kind {
            ParamKind::Tensor { dims, .. } => names.extend(dims.iter().filter_map(|x| match x {
                Dim::Sym(s) => Some(s.clone()),
                Dim::Const(_) => None,
            })),
            ParamKind::Scalar { dtype } if !dtype.is_float() || d.below(4) == 0 => names.push(p.name.clone()),
            ParamKind::Scalar { .. } => {}
        }
    }
    if d.below(8) == 0 {
        names.push("unbound".into());
    }
    let grid = (0..1 + d.below(3))
        .map(|_| if d.below(3) == 0 { tir::HostExpr::Int(d.pick(&[0, 1, 4, 65536])) } else { random_host_expr(&mut d, &names, 2) })
        .collect();
    let requires = (0..d.below(3)).map(|_| Require { cond: random_condition(&mut d, &names), text: "r".into() }).collect();
    let base: Vec<usize> = SYMS.iter().map(|_| size(&mut d)).collect();
    let mut args = vec![];
    for p in &params {
        let mismatch = d.below(24) == 0;
        args.push(match (&p.kind, mismatch) {
            (ParamKind::Tensor { dtype, dims, .. }, false) => {
                let mut shape: Vec<usize> = dims
                    .iter()
                    .map(|dim| match dim {
                        _ if d.below(16) == 0 => size(&mut d),
                        Dim::Const(c) => *c as usize,
                        Dim::Sym(s) => base[SYMS.iter().position(|x| x == s).unwrap_or(0)],
                    })
                    .collect();
                let dtype = if d.below(15) == 0 { DType::F16 } else { *dtype };
                if d.below(15) == 0 {
                    shape.push(1);
                }
                ArgInfo::Tensor { dtype, shape }
            }
            (ParamKind::Scalar { dtype }, false) => ArgInfo::Scalar(match d.below(8) {
                0 => Scalar::Float(d.pick(FLOAT_EDGES)),
                1 => Scalar::Bool(d.below(2) == 0),
                2 => Scalar::Int(d.pick(INT_EDGES)),
                3..=5 => d.pick(&scalar_edges(*dtype)),
                _ => Scalar::Int(d.pick(&[0, 1])),
            }),
            (ParamKind::Tensor { .. }, true) => ArgInfo::Scalar(Scalar::Int(1)),
            (ParamKind::Scalar { .. }, true) => ArgInfo::Tensor { dtype: DType::F32, shape: vec![1] },
        });
    }
    match d.below(32) {
        0 => {
            args.pop();
        }
        1 => args.push(ArgInfo::Scalar(Scalar::Int(0))),
        _ => {}
    }
    (params, grid, requires, args)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8192, failure_persistence: None, ..ProptestConfig::default() })]

    /// `host::bind` never panics, and accepts exactly the argument lists the oracle accepts, with
    /// the same grid; a refusal is a message naming what is wrong.
    #[test]
    fn the_binder_accepts_exactly_the_valid_arguments(seeds in proptest::collection::vec(any::<u64>(), 1..40)) {
        let (params, grid, requires, args) = random_binding(&seeds);
        let got = tessera_compiler::host::bind("k", &params, &grid, &requires, &args);
        let want = oracle_bind(&params, &grid, &requires, &args);
        match (&got, want) {
            (Ok(b), Some(g)) => prop_assert_eq!(b.grid, g),
            (Err(e), None) => prop_assert!(!e.to_string().is_empty()),
            _ => prop_assert!(false, "bind {:?}, oracle {:?}\nparams {:?}\ngrid {:?}\nrequires {:?}\nargs {:?}", got, want, params, grid, requires, args),
        }
    }
}

/// The generator reaches both answers often, and every kind of refusal.
#[test]
fn generated_bindings_cover_acceptance_and_refusals() {
    use tessera_compiler::BindError as E;
    let mut rng = tessera_runtime::exec::Rng::new(11);
    let (mut ok, mut kinds) = (0, std::collections::BTreeMap::new());
    for _ in 0..4000 {
        let seeds: Vec<u64> = (0..24).map(|_| rng.next_u64()).collect();
        let (params, grid, requires, args) = random_binding(&seeds);
        match tessera_compiler::host::bind("k", &params, &grid, &requires, &args) {
            Ok(_) => ok += 1,
            Err(e) => {
                *kinds
                    .entry(match e {
                        E::ArgCount { .. } => "count",
                        E::NotTensor { .. } | E::NotScalar { .. } => "kind",
                        E::DType { .. } => "dtype",
                        E::Rank { .. } => "rank",
                        E::ConstDim { .. } => "const",
                        E::SymMismatch { .. } => "sym",
                        E::TooLarge { .. } | E::DimTooLarge { .. } => "i32",
                        E::Scalar { .. } => "scalar",
                        E::Require { .. } => "require",
                        E::RequireEval { .. } => "require-eval",
                        E::Grid { .. } => "grid",
                    })
                    .or_insert(0) += 1;
            }
        }
    }
    // Shown with `--nocapture`: how the cases are spread.
    eprintln!("{ok} accepted; refused: {kinds:?}");
    assert!(ok > 400, "only {ok} of 4000 accepted");
    assert_eq!(kinds.len(), 11, "refusal kinds reached: {kinds:?}");
}

/// A `.npy` file with header dictionary `dict` (version 1.0) followed by `data`.
fn npy_file(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    v.extend_from_slice(dict.as_bytes());
    v.extend_from_slice(data);
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// The `.npy` reader never panics or over-allocates: on arbitrary bytes, on a valid prefix
    /// followed by arbitrary bytes, and on headers with arbitrary shapes (up to 2^64 - 1 per
    /// axis), dtypes and data lengths. A tensor it returns has exactly the bytes its shape needs.
    #[test]
    fn npy_reader_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        descr in prop::sample::select(vec!["<f4", "|u1", "<f8", "|b1", "<i2", ">f4", "<c8", "", "<f2"]),
        shape in proptest::collection::vec(prop_oneof![0u64..5, any::<u64>(), Just(u64::MAX), Just(1u64 << 40)], 0..4),
        fortran in any::<bool>(),
        data_len in 0usize..80,
        cut in any::<prop::sample::Index>(),
    ) {
        let p = std::path::Path::new("fuzz.npy");
        let _ = tessera_runtime::npy::decode_npy(&bytes, p);
        let mut prefixed = b"\x93NUMPY\x01\x00".to_vec();
        prefixed.extend_from_slice(&bytes);
        let _ = tessera_runtime::npy::decode_npy(&prefixed, p);
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
        let dict = format!("{{'descr': '{descr}', 'fortran_order': {}, 'shape': {tuple}, }}\n", if fortran { "True" } else { "False" });
        let file = npy_file(&dict, &bytes[..data_len.min(bytes.len())]);
        for f in [&file[..], &file[..cut.index(file.len() + 1)]] {
            if let Ok(t) = tessera_runtime::npy::decode_npy(f, p) {
                prop_assert_eq!(Some(t.bytes.len()), tessera_compiler::HostTensor::byte_len(t.dtype, &t.shape));
            }
        }
    }
}

// ---- the build's overrides ------------------------------------------------------------------

/// Two kernels with const parameters of both integer types and a bool.
const OVERRIDES: &str = "kernel k<const BM: i32 = 64, const BIG: i64 = 8>(x: &mut f32[N]) {
    x.store([0], x.load([0], [16]) + (BIG as f32));
}
kernel j<const FLAG: bool = false>(y: &mut f32[N]) {
    if FLAG {
        y.store([0], y.load([0], [16]) * 2.0);
    }
}
";

/// A warp or stage count: mostly near the valid ones, sometimes anything.
fn count() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![Just(None), (0u32..40).prop_map(Some), any::<u32>().prop_map(Some)]
}

/// A `--const` value for one of the names (a known one or a typo).
fn const_override() -> impl Strategy<Value = (String, tessera_compiler::ConstValue)> {
    use tessera_compiler::ConstValue;
    let name = prop_oneof![Just("BM"), Just("BIG"), Just("FLAG"), Just("BN")].prop_map(String::from);
    let int =
        prop_oneof![(-4i64..300), Just(i32::MAX as i64), Just(i32::MIN as i64), Just(1i64 << 31), Just(-(1i64 << 31) - 1), any::<i64>()];
    let value = prop_oneof![int.prop_map(ConstValue::Int), any::<bool>().prop_map(ConstValue::Bool)];
    (name, value)
}

/// Whether the build's overrides are valid for `OVERRIDES`: the rules the compiler must apply.
fn overrides_valid(o: &Options) -> bool {
    use tessera_compiler::ConstValue;
    let warps_ok = o.warps.is_none_or(|w| w.is_power_of_two() && w <= 32);
    let stages_ok = o.stages.is_none_or(|s| (1..=16).contains(&s));
    let mut names: Vec<&str> = o.consts.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    let distinct = names.windows(2).all(|w| w[0] != w[1]);
    let consts_ok = o.consts.iter().all(|(n, v)| match (n.as_str(), v) {
        ("BM", ConstValue::Int(i)) => i32::try_from(*i).is_ok(),
        ("BIG", ConstValue::Int(_)) => true,
        ("FLAG", ConstValue::Bool(_)) => true,
        _ => false,
    });
    warps_ok && stages_ok && distinct && consts_ok
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random `--warps`, `--stages` and `--const` values through `Options`: the compiler never
    /// panics, and builds exactly when they are valid. (BM and BIG values that compile still
    /// may be too large for a tile: those are located errors in the source, not about options.)
    #[test]
    fn overrides_never_panic_and_are_accepted_iff_valid(
        warps in count(),
        stages in count(),
        consts in proptest::collection::vec(const_override(), 0..3),
    ) {
        let o = Options { warps, stages, consts, verify: true, ..Options::default() };
        let valid = overrides_valid(&o);
        let src = Source::new("overrides.tile", OVERRIDES);
        match tessera_compiler::frontend(&src, &o) {
            Ok(_) => prop_assert!(valid, "accepted invalid overrides {o:?}"),
            Err(d) => {
                check_spans(&d, OVERRIDES);
                let r = d.render();
                prop_assert!(!r.contains("internal compiler error"), "{r}");
                // A valid BM or BIG can still make a tile too large for the target.
                let sizing = r.contains("elements") || r.contains("registers") || r.contains("tile dimension") || r.contains("overflows");
                prop_assert!(!valid || sizing, "refused valid overrides {o:?}:\n{r}");
            }
        }
        if valid && let Ok(m) = tessera_compiler::compile(&src, &o) {
            let threads = o.warps.unwrap_or(4) * 32;
            prop_assert!(m.kernels.iter().all(|k| k.meta.threads == threads));
        }
    }
}

// ---- constant folding against the run time --------------------------------------------------

/// The integer types whose arithmetic is folded.
const INT_TYPES: [DType; 7] = [DType::I8, DType::I16, DType::I32, DType::I64, DType::U8, DType::U32, DType::U64];

/// An operand of `d`: edge values (0, ±1, the extremes and their neighbours, powers of two) and
/// values in between, as the mathematical value.
fn operand(d: DType, pick: u64, edge: bool) -> i128 {
    let (lo, hi): (i128, i128) = match d {
        DType::I8 => (i8::MIN.into(), i8::MAX.into()),
        DType::I16 => (i16::MIN.into(), i16::MAX.into()),
        DType::I32 => (i32::MIN.into(), i32::MAX.into()),
        DType::I64 => (i64::MIN.into(), i64::MAX.into()),
        DType::U8 => (0, u8::MAX.into()),
        DType::U32 => (0, u32::MAX.into()),
        _ => (0, u64::MAX.into()),
    };
    if edge {
        let bits = d.bits() as u64;
        let edges =
            [0, 1, -1, 2, lo, lo + 1, hi, hi - 1, 1i128 << (pick % bits), -(1i128 << (pick % bits)), (bits - 1) as i128, bits as i128];
        let v = edges[(pick / 64 % edges.len() as u64) as usize];
        return v.clamp(lo, hi);
    }
    lo + (pick as i128).rem_euclid(hi - lo + 1)
}

/// `v` as a typed literal of `d`: `-5i8`, and a u64 above i64::MAX as a typed sum.
fn typed_literal(v: i128, d: DType) -> String {
    if v > i64::MAX as i128 {
        let rest = v - i64::MAX as i128;
        let a = rest.min(i64::MAX as i128);
        format!("(9223372036854775807u64 + {a}u64 + {}u64)", rest - a)
    } else if v == i64::MIN as i128 {
        // -9223372036854775808 is not a literal: its magnitude is no i64.
        "(-9223372036854775807i64 - 1i64)".into()
    } else {
        format!("{v}{d}")
    }
}

/// The exact (Rust-checked) result of `x op y` in `d`, or `None` where constant evaluation must
/// refuse it: an overflow, a shift amount outside the width, a division by zero.
fn checked(op: &str, d: DType, x: i128, y: i128) -> Option<i128> {
    let bits = d.bits();
    let shift = |y: i128| u32::try_from(y).ok().filter(|&s| s < bits);
    let r = match op {
        "+" => x + y,
        "-" => x - y,
        "*" => x.checked_mul(y)?,
        "/" if y != 0 => x / y,
        "%" if y != 0 => x % y,
        "&" => x & y,
        "|" => x | y,
        "^" => x ^ y,
        "<<" => x.checked_mul(1i128 << shift(y)?)?,
        ">>" => x >> shift(y)?,
        "neg" => -x,
        _ => return None,
    };
    let (lo, hi): (i128, i128) = match d {
        DType::U64 => (0, u64::MAX.into()),
        DType::U8 | DType::U32 => (0, (1i128 << bits) - 1),
        _ => (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1),
    };
    (lo..=hi).contains(&r).then_some(r)
}

const INT_OPS: [&str; 11] = ["+", "-", "*", "/", "%", "&", "|", "^", "<<", ">>", "neg"];

/// Runs the single kernel of `text` on the interpreter; returns its output element (a float's
/// bits).
fn interpret(text: &str, d: DType, scalars: &[i128]) -> Result<i64, String> {
    interpret_args(text, d, scalars).map_err(|e| e.to_string())
}

/// `interpret` of a case with scalar arguments: a u64 above `i64::MAX` has no `Scalar` form (a
/// launch refuses the wrapped negative value), so such a case is rejected rather than run.
fn interpret_run(text: &str, d: DType, scalars: &[i128]) -> Result<i64, TestCaseError> {
    if scalars.iter().any(|&v| i64::try_from(v).is_err()) {
        return Err(TestCaseError::reject("a u64 argument above i64::MAX"));
    }
    interpret(text, d, scalars).map_err(TestCaseError::fail)
}

fn interpret_args(text: &str, d: DType, scalars: &[i128]) -> Result<i64, String> {
    use tessera_compiler::interp::{Arg, run_kernel};
    let ks = tessera_compiler::frontend(&Source::new("fold.tile", text), &Options { verify: true, ..Options::default() })
        .map_err(|e| e.render())?;
    let mut args = vec![Arg::Tensor(tessera_compiler::HostTensor::zeros(d, &[1]))];
    args.extend(scalars.iter().map(|&v| Arg::Scalar(tessera_compiler::Scalar::Int(v as i64))));
    run_kernel(&ks[0], &mut args).map_err(|e| e.to_string())?;
    match &args[0] {
        Arg::Tensor(t) if d.is_float() => Ok(t.get_f64(0).to_bits() as i64),
        Arg::Tensor(t) => Ok(t.get_i64(0)),
        Arg::Scalar(_) => Err("no output".into()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// `x op y` folded from constants (typed literals, or untyped ones that take the type where
    /// the result is stored) gives the interpreter's run-time result of the same op on scalar
    /// parameters, or is a compile-time error exactly where the checked result does not exist.
    #[test]
    fn folded_integer_arithmetic_is_the_run_time_arithmetic(
        ti in 0..INT_TYPES.len(),
        oi in 0..INT_OPS.len(),
        (px, py) in (any::<u64>(), any::<u64>()),
        (ex, ey) in (any::<bool>(), any::<bool>()),
        untyped in any::<bool>(),
    ) {
        let (d, op) = (INT_TYPES[ti], INT_OPS[oi]);
        let (x, mut y) = (operand(d, px, ex), operand(d, py, ey));
        if matches!(op, "<<" | ">>") && !ey {
            y = (py % (d.bits() as u64 + 8)) as i128;
        }
        let expr = |a: &str, b: &str| if op == "neg" { format!("-({a})") } else { format!("{a} {op} {b}") };
        // Untyped literals are i64 values; an u64 above that is written typed.
        let untyped = untyped && x <= i64::MAX as i128 && y <= i64::MAX as i128 && x > i64::MIN as i128 && y > i64::MIN as i128;
        let folded = if untyped { expr(&x.to_string(), &y.to_string()) } else { expr(&typed_literal(x, d), &typed_literal(y, d)) };
        let fold_src = format!("kernel k(o: &mut {d}[1]) {{\n    let r: {d} = {folded};\n    o.store([0], full([1], r));\n}}\n");
        let run_src = format!("kernel k(o: &mut {d}[1], a: {d}, b: {d}) {{\n    o.store([0], full([1], {}));\n}}\n", expr("a", "b"));
        let at_run_time = interpret_run(&run_src, d, &[x, y])?;
        // Untyped constants compute in i64: an intermediate beyond it is refused too.
        let want = checked(op, d, x, y).filter(|&r| !untyped || i64::try_from(r).is_ok());
        match (interpret(&fold_src, d, &[]), want) {
            (Ok(bits), Some(r)) => {
                prop_assert_eq!(bits, r as i64, "{} folded", folded);
                prop_assert_eq!(bits, at_run_time, "{} folded vs at run time", folded);
            }
            (Ok(bits), None) => prop_assert!(false, "{folded} in {d} folded to {bits}, but it overflows (run time: {at_run_time})"),
            (Err(e), Some(r)) => prop_assert!(false, "{folded} in {d} = {r} was refused:\n{e}"),
            (Err(e), None) => prop_assert!(
                ["constant expression", "does not fit", "by zero", "shift amount"].iter().any(|w| e.contains(w)),
                "{folded} in {d}: unexpected error:\n{e}"
            ),
        }
    }

    /// The same for comparisons (their operands' type is fixed by a typed literal) and for
    /// conversions between every pair of integer types and to `f32`.
    #[test]
    fn folded_comparisons_and_casts_are_the_run_time_ones(
        ti in 0..INT_TYPES.len(),
        ui in 0..INT_TYPES.len() + 1,
        ci in 0..6usize,
        (px, py) in (any::<u64>(), any::<u64>()),
        (ex, ey) in (any::<bool>(), any::<bool>()),
    ) {
        let d = INT_TYPES[ti];
        let (x, y) = (operand(d, px, ex), operand(d, py, ey));
        let cmp = ["==", "!=", "<", "<=", ">", ">="][ci];
        let fold_src = format!(
            "kernel k(o: &mut bool[1]) {{\n    o.store([0], full([1], {} {cmp} {}));\n}}\n",
            typed_literal(x, d),
            typed_literal(y, d)
        );
        let run_src = format!("kernel k(o: &mut bool[1], a: {d}, b: {d}) {{\n    o.store([0], full([1], a {cmp} b));\n}}\n");
        let folded = interpret(&fold_src, DType::Bool, &[]).map_err(TestCaseError::fail)?;
        prop_assert_eq!(folded, interpret_run(&run_src, DType::Bool, &[x, y])?, "{} {} {}", x, cmp, y);
        // `x as u`: folded when exact, else converted at run time; the same value either way.
        let u = INT_TYPES.get(ui).copied().unwrap_or(DType::F32);
        let fold_src = format!("kernel k(o: &mut {u}[1]) {{\n    o.store([0], full([1], ({}) as {u}));\n}}\n", typed_literal(x, d));
        let run_src = format!("kernel k(o: &mut {u}[1], a: {d}) {{\n    o.store([0], full([1], a as {u}));\n}}\n");
        let folded = interpret(&fold_src, u, &[]).map_err(TestCaseError::fail)?;
        prop_assert_eq!(folded, interpret_run(&run_src, u, &[x])?, "{} as {}", x, u);
    }
}
