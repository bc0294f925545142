//! Property tests (proptest): the front end never panics, on arbitrary bytes and on mutations of
//! the examples (token insertions, deletions and swaps), whatever it reports stays inside the
//! sources; and randomly generated small tile-IR programs (every op kind, nested regions) print
//! to text that parses back to the same text; and layout conversions by warp shuffles give every
//! thread the elements the conversion asks for.

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
