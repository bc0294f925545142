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
    use tessera_compiler::interp::{Arg, run_kernel};
    let ks = tessera_compiler::frontend(&Source::new("fold.tile", text), &Options { verify: true, ..Options::default() })
        .map_err(|e| e.render())?;
    let mut args = vec![Arg::Tensor(tessera_compiler::HostTensor::zeros(d, &[1]))];
    // A scalar argument is converted to the parameter's type by wrapping, so bits will do.
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
        let at_run_time = interpret(&run_src, d, &[x, y]).map_err(TestCaseError::fail)?;
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
        prop_assert_eq!(folded, interpret(&run_src, DType::Bool, &[x, y]).map_err(TestCaseError::fail)?, "{} {} {}", x, cmp, y);
        // `x as u`: folded when exact, else converted at run time; the same value either way.
        let u = INT_TYPES.get(ui).copied().unwrap_or(DType::F32);
        let fold_src = format!("kernel k(o: &mut {u}[1]) {{\n    o.store([0], full([1], ({}) as {u}));\n}}\n", typed_literal(x, d));
        let run_src = format!("kernel k(o: &mut {u}[1], a: {d}) {{\n    o.store([0], full([1], a as {u}));\n}}\n");
        let folded = interpret(&fold_src, u, &[]).map_err(TestCaseError::fail)?;
        prop_assert_eq!(folded, interpret(&run_src, u, &[x]).map_err(TestCaseError::fail)?, "{} as {}", x, u);
    }
}
