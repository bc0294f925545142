//! Per-stage IR tests: each `tests/passes/*.tile` program starts with a comment saying what it
//! checks. Its IR after every stage up to the thread IR (`sema`, each pass of
//! `passes::PIPELINE`, `lower`: layout assignment, pipelining, rematerialisation) is snapshotted,
//! so each section of a snapshot is the input of the stage printed below it; and the facts the
//! header states are asserted on the IR directly, so that a regression fails with a message
//! saying which property broke, not only with a snapshot diff.

use crate::common::{opts, root, tile_files};
use std::collections::HashMap;
use tessera_compiler::ir::{Block, Op, Value};
use tessera_compiler::lir::{self, Layout};
use tessera_compiler::{DType, DumpSink, Options, Source, Target, tir};

/// Records the IR after every stage up to `lower` (the PTX of `codegen` is left to the golden
/// PTX snapshots).
#[derive(Default)]
struct Recorder {
    dumps: Vec<(String, &'static str, String)>,
}

impl DumpSink for Recorder {
    fn wants(&self, stage: &str) -> bool {
        !machine_ir(stage)
    }
    fn dump(&mut self, kernel: &str, stage: &str, ir: &str) {
        let stage = tessera_compiler::dump_stages().into_iter().find(|s| *s == stage).unwrap_or("?");
        self.dumps.push((kernel.to_string(), stage, ir.to_string()));
    }
}

/// The stages from the machine IR on (what these tests leave to the golden PTX snapshots).
fn machine_ir(stage: &str) -> bool {
    stage == "codegen" || stage == "emit" || tessera_compiler::mir::MIR_PIPELINE.iter().any(|p| p.name == stage)
}

/// One `tests/passes` program, compiled with the dumps recorded.
struct Staged {
    name: String,
    /// The tile IR after sema, parsed back from its dump (the input of the first pass).
    sema: tir::Kernel,
    /// The compiled kernel: its tile IR after all passes and its thread IR.
    kernel: tessera_compiler::CompiledKernel,
    /// The header and the IR after each stage.
    snap: String,
}

impl Staged {
    /// The IR printed after `stage`.
    fn dump_of(&self, stage: &str) -> &str {
        let head = format!("after {stage} (");
        let at = self.snap.find(&head).unwrap_or_else(|| panic!("{}: no dump after {stage}", self.name));
        let text = &self.snap[at..];
        let start = text.find('\n').map_or(text.len(), |i| i + 1);
        let end = text[start..].find("\n==== ").map_or(text.len(), |i| start + i);
        &text[start..end]
    }

    /// Snapshots the IR after each stage. Called after the fact checks, so that a regression
    /// first fails on the property it breaks.
    fn snapshot(&self) {
        insta::assert_snapshot!(self.name.trim_end_matches(".tile"), self.snap);
    }
}

/// Compiles `tests/passes/{name}` and prints its IR after each stage, headed by the file's
/// leading comment (see [`Staged::snapshot`]).
fn staged(name: &str) -> Staged {
    staged_on(name, Target::Sm90a)
}

/// [`staged`] for `target`; the snapshot of an sm_80 build is named `NAME@sm_80`.
fn staged_on(name: &str, target: Target) -> Staged {
    let path = root().join("tests/passes").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header: Vec<&str> = text.lines().take_while(|l| l.starts_with("//")).collect();
    assert!(!header.is_empty(), "{name}: a tests/passes file starts with a comment saying what it checks");
    let src = Source::new(format!("tests/passes/{name}"), text.clone()).with_path(&path);
    let mut rec = Recorder::default();
    let module = match tessera_compiler::compile_with(&src, &Options { target, ..opts(&[]) }, &mut rec) {
        Ok(m) => m,
        Err(d) => panic!("{name} does not compile:\n{}", d.render()),
    };
    assert_eq!(module.kernels.len(), 1, "{name}: one kernel per tests/passes file");
    let kernel = module.kernels.into_iter().next().unwrap_or_else(|| unreachable!());

    let mut snap = header.join("\n");
    snap.push('\n');
    let mut prev: Option<&str> = None;
    for (k, stage, ir) in &rec.dumps {
        if prev == Some(ir.as_str()) {
            snap.push_str(&format!("\n==== @{k} after {stage}: unchanged ====\n"));
        } else {
            let thread_ir = *stage == "lower" || tessera_compiler::lower::LIR_PIPELINE.iter().any(|p| p.name == *stage);
            let what = if thread_ir { "thread IR" } else { "tile IR" };
            snap.push_str(&format!("\n==== @{k} after {stage} ({what}) ====\n{ir}"));
        }
        prev = Some(ir);
    }
    let stages: Vec<&str> = rec.dumps.iter().map(|d| d.1).collect();
    let expected: Vec<&str> = tessera_compiler::dump_stages().into_iter().filter(|s| !machine_ir(s)).collect();
    assert_eq!(stages, expected, "{name}: the dump sink saw every stage up to lowering, in order");

    let sema_text = &rec.dumps[0].2;
    let sema = tir::parse_kernel(sema_text).unwrap_or_else(|e| panic!("{name}: the sema dump does not parse: {e}\n{sema_text}"));
    let name = match target {
        Target::Sm90a => name.to_string(),
        other => format!("{}@{}", name.trim_end_matches(".tile"), other.name()),
    };
    Staged { name, sema, kernel, snap }
}

// ---- helpers over the two IRs ----

fn tir_ops(k: &tir::Kernel) -> Vec<Op> {
    let mut v = vec![];
    k.body.walk(k.body.entry, &mut |op| v.push(op));
    v
}

fn tir_count(k: &tir::Kernel, mnemonic: &str) -> usize {
    tir_ops(k).into_iter().filter(|&op| k.body.op(op).kind.mnemonic() == mnemonic).count()
}

fn lir_ops(k: &lir::Kernel) -> Vec<Op> {
    let mut v = vec![];
    k.body.walk(k.body.entry, &mut |op| v.push(op));
    v
}

fn mnemonic(k: &lir::Kernel, op: Op) -> String {
    k.body.op(op).kind.mnemonic()
}

/// Ops of the whole thread-IR kernel with this mnemonic.
fn lir_find(k: &lir::Kernel, m: &str) -> Vec<Op> {
    lir_ops(k).into_iter().filter(|&op| mnemonic(k, op) == m).collect()
}

/// The direct ops of `b` (not those of nested regions), as mnemonics.
fn block_mnemonics(k: &lir::Kernel, b: Block) -> Vec<String> {
    k.body.block(b).ops.iter().map(|&op| mnemonic(k, op)).collect()
}

fn layout(k: &lir::Kernel, v: Value) -> Option<Layout> {
    k.body.ty(v).layout()
}

fn is_mma(l: Option<Layout>) -> bool {
    matches!(l, Some(Layout::Mma { .. } | Layout::MmaRows { .. }))
}

/// The only `for` of the entry block and its body.
fn the_loop(k: &lir::Kernel) -> (Op, Block) {
    let fors: Vec<Op> = k.body.block(k.body.entry).ops.iter().copied().filter(|&op| mnemonic(k, op) == "for").collect();
    assert_eq!(fors.len(), 1, "expected one `for` in the entry block of {}", k.name);
    (fors[0], k.body.op(fors[0]).regions[0])
}

/// Positions of `wanted` as a subsequence of `have` (each after the previous), or a message.
fn in_order(have: &[String], wanted: &[&str]) -> Result<Vec<usize>, String> {
    let mut at = vec![];
    let mut from = 0;
    for w in wanted {
        match have[from..].iter().position(|h| h == w) {
            Some(i) => {
                at.push(from + i);
                from += i + 1;
            }
            None => return Err(format!("`{w}` missing after position {from} in {have:?} (wanted in order: {wanted:?})")),
        }
    }
    Ok(at)
}

/// The types of the tiles that `local_store`s write while in an MMA layout (an accumulator going
/// through shared memory).
/// MMA-layout tiles written to shared memory, except an epilogue staged for the copy engine
/// (a swizzled `local_store` that a `tma_store` reads at the same offset).
fn mma_tiles_stored(k: &lir::Kernel) -> Vec<String> {
    let staged: Vec<u32> = lir_find(k, "tma_store")
        .into_iter()
        .filter_map(|op| match &k.body.op(op).kind {
            lir::OpKind::TmaStore { offset, .. } => Some(*offset),
            _ => None,
        })
        .collect();
    lir_find(k, "local_store")
        .into_iter()
        .filter(|&op| !matches!(k.body.op(op).kind, lir::OpKind::LocalStore { offset, swizzled: true } if staged.contains(&offset)))
        .filter_map(|op| {
            let v = k.body.op(op).operands[0];
            is_mma(layout(k, v)).then(|| format!("{}", k.body.ty(v)))
        })
        .collect()
}

fn grid_m(l: Layout) -> u32 {
    match l {
        Layout::Mma { warps_m, .. } => warps_m,
        _ => 0,
    }
}

fn grid_n(l: Layout) -> u32 {
    match l {
        Layout::Mma { warps_n, .. } => warps_n,
        _ => 0,
    }
}

/// Every test program has its own test below (a new file without checks fails here).
#[test]
fn every_pass_program_is_checked() {
    let tested = [
        "blocks_per_sm.tile",
        "bulk_trailing.tile",
        "chained.tile",
        "convert_shuffle.tile",
        "dce.tile",
        "drop_barriers.tile",
        "hoist_loads.tile",
        "layout_epilogue.tile",
        "layout_rows.tile",
        "order_memory.tile",
        "pipeline_gemm.tile",
        "pipeline_invariant.tile",
        "pipeline_shared_window.tile",
        "pipeline_trans.tile",
        "remat_mask.tile",
        "shared_operand.tile",
        "sink_wait.tile",
        "tma_reduce.tile",
        "tma_store.tile",
        "uniform_mask.tile",
        "warp_specialize.tile",
        "wgmma_columns.tile",
    ];
    let files: Vec<String> =
        tile_files("tests/passes").iter().filter_map(|f| f.file_name().and_then(|n| n.to_str()).map(String::from)).collect();
    assert_eq!(files, tested, "tests/passes/*.tile and the tests of tests/src/passes.rs disagree");
}

#[test]
fn dce_removes_unused_pure_ops() {
    let s = staged("dce.tile");
    let (before, after) = (&s.sema, &s.kernel.tir);
    // Sema emitted the dead code; dce removed it, to a fixed point.
    assert_eq!(tir_count(before, "exp2"), 1, "{}: sema should emit `dead`", s.name);
    assert_eq!(tir_count(before, "for"), 2, "{}: sema should emit both loops", s.name);
    assert_eq!(tir_count(before, "dim"), 1, "{}: sema should emit a `dim` for `N`", s.name);
    assert_eq!(tir_count(after, "dim"), 0, "{}: the unused `dim` survived dce", s.name);
    assert_eq!(tir_count(after, "exp2"), 0, "{}: `dead` (exp2) survived dce", s.name);
    assert_eq!(tir_count(after, "for"), 1, "{}: the loop that only builds an unused value survived dce", s.name);
    assert_eq!(tir_count(after, "store"), 2, "{}: dce must keep both stores", s.name);
    assert!(tir_ops(after).len() < tir_ops(before).len());
    // The loop that stays is the one with the store.
    let kept_for = tir_ops(after).into_iter().find(|&op| after.body.op(op).kind == tir::OpKind::For).unwrap_or_else(|| unreachable!());
    let inner = after.body.op(kept_for).regions[0];
    assert!(after.body.block(inner).ops.iter().any(|&op| after.body.op(op).kind == tir::OpKind::Store), "the kept loop stores");
    // The fixed point: no pure op with an unused result is left.
    let mut uses: HashMap<Value, usize> = HashMap::new();
    for op in tir_ops(after) {
        for &o in &after.body.op(op).operands {
            *uses.entry(o).or_default() += 1;
        }
    }
    for op in tir_ops(after) {
        let d = after.body.op(op);
        let control = matches!(d.kind, tir::OpKind::For | tir::OpKind::If | tir::OpKind::While);
        if !control && !d.results.is_empty() {
            assert!(
                d.results.iter().any(|r| uses.contains_key(r)),
                "{}: `{}` has no use after dce:\n{}",
                s.name,
                d.kind.mnemonic(),
                tir::print_kernel(after)
            );
        }
    }
    s.snapshot();
}

#[test]
fn order_memory_barriers_between_conflicting_accesses() {
    let s = staged("order_memory.tile");
    let k = &s.kernel.lir;
    // The ops of the entry block and of the loop body, as mnemonics, from the first `store`.
    let entry = block_mnemonics(k, k.body.entry);
    let (_, body) = the_loop(k);
    let body = block_mnemonics(k, body);
    in_order(&body, &["barrier", "gather", "barrier", "store"]).unwrap_or_else(|e| panic!("{}: loop body: {e}", s.name));
    assert_eq!(body.iter().filter(|m| *m == "barrier").count(), 2, "{}: loop body {body:?}", s.name);
    let from = entry.iter().position(|m| m == "for").unwrap_or_else(|| unreachable!());
    let after: Vec<String> = entry[from + 1..].to_vec();
    let want = ["load", "store", "load", "barrier", "store", "atomic.add", "atomic.add", "barrier", "gather", "store", "store"];
    let memory: Vec<&str> = after.iter().map(String::as_str).filter(|m| want.contains(m)).collect();
    assert_eq!(memory, want, "{}: the accesses after the loop and the barriers between them", s.name);
    // The same program without the pass has no barrier at all: every one is the pass's.
    let before = s.dump_of("lower");
    assert!(!before.contains("barrier"), "{}: the lowering itself put barriers:\n{before}", s.name);
    s.snapshot();
}

#[test]
fn layout_mma_accumulator_and_epilogue() {
    for target in [Target::Sm80, Target::Sm90a] {
        layout_epilogue_on(target);
    }
}

fn layout_epilogue_on(target: Target) {
    let s = staged_on("layout_epilogue.tile", target);
    let k = &s.kernel.lir;
    let mma = lir_find(k, "local_mma");
    assert_eq!(mma.len(), 1, "{}: the dot is one local_mma", s.name);
    let acc = k.body.op(mma[0]).results[0];
    let (grid, why) = match target {
        Target::Sm80 => (Layout::Mma { warps_m: 2, warps_n: 2 }, "64×64 on 4 warps is a 2×2 warp grid"),
        Target::Sm90a => (Layout::Mma { warps_m: 4, warps_n: 1 }, "one warpgroup owns the 64 rows of a wgmma"),
    };
    assert_eq!(layout(k, acc), Some(grid), "{}: {why}", s.name);
    let wgmma = matches!(k.body.op(mma[0]).kind, lir::OpKind::LocalMma { wgmma: true, .. });
    assert_eq!(wgmma, target == Target::Sm90a, "{}: wgmma exactly on sm_90a", s.name);
    assert!(lir_find(k, "local_dot").is_empty(), "{}: the bf16 dot must not fall back to FMAs", s.name);
    // The epilogue computes in the accumulator's layout.
    for m in ["mul", "add", "max", "cast"] {
        let ops = lir_find(k, m);
        let tiles: Vec<Op> = ops.into_iter().filter(|&op| k.body.ty(k.body.op(op).results[0]).shape() == [64, 64]).collect();
        assert!(!tiles.is_empty(), "{}: no 64×64 `{m}` in the epilogue", s.name);
        for op in tiles {
            let r = k.body.op(op).results[0];
            assert_eq!(layout(k, r), layout(k, acc), "{}: epilogue `{m}` is not in the accumulator layout", s.name);
        }
    }
    // The result leaves in the accumulator's layout: stored from registers (sm_80), or staged
    // in shared memory for the copy engine's bulk stores (sm_90a).
    let (stored, staged) = (lir_find(k, "store"), lir_find(k, "local_store"));
    match target {
        Target::Sm80 => {
            assert_eq!(stored.len(), 1);
            assert_eq!(layout(k, k.body.op(stored[0]).operands.last().copied().unwrap_or_else(|| unreachable!())), layout(k, acc));
            assert!(staged.is_empty() && lir_find(k, "tma_store").is_empty(), "{}: shared memory in the epilogue", s.name);
        }
        Target::Sm90a => {
            assert!(stored.is_empty(), "{}: the result is stored from registers, not by the copy engine", s.name);
            assert_eq!((staged.len(), lir_find(k, "tma_store").len()), (1, 1), "{}: one staged tile, one bulk store", s.name);
            assert_eq!(layout(k, k.body.op(staged[0]).operands[0]), layout(k, acc), "{}: staged from the accumulator's layout", s.name);
        }
    }
    assert_eq!(mma_tiles_stored(k), Vec::<String>::new(), "{}: the accumulator went through shared memory", s.name);
    // The bias: loaded in the accumulator's columns, broadcast in registers; the residual:
    // loaded in the accumulator's layout.
    assert!(lir_find(k, "local_load").is_empty(), "{}: the bias went through shared memory", s.name);
    let cols = Layout::MmaCols { warps_m: grid_m(grid), warps_n: grid_n(grid) };
    let loads = lir_find(k, "load");
    assert_eq!(loads.iter().map(|&op| layout(k, k.body.op(op).results[0])).collect::<Vec<_>>(), [Some(cols), Some(grid)], "{}", s.name);
    let bcast = lir_find(k, "shuffle_convert");
    assert_eq!(bcast.len(), 1, "{}: the bias broadcast", s.name);
    let d = k.body.op(bcast[0]);
    let lir::OpKind::ShuffleConvert { strides, .. } = &d.kind else { unreachable!() };
    let plan = lir::shuffle::plan(k.body.ty(d.operands[0]), k.body.ty(d.results[0]), strides, k.threads).expect("a plan");
    assert_eq!(plan.shuffles(), 0, "{}: the bias broadcast reads other lanes", s.name);
    // Both operands are window loads: copied asynchronously, never loaded into registers.
    let copies = lir_find(k, "async_copy").len() + lir_find(k, "tma_copy").len();
    assert_eq!(copies, 2, "{}: both dot operands are async copies", s.name);
    assert!(lir_find(k, "load").iter().all(|&op| k.body.ty(k.body.op(op).results[0]).dtype() == DType::F32), "only the bias is loaded");
    s.snapshot();
}

#[test]
fn layout_chained_dots_warps_own_rows() {
    let s = staged("chained.tile");
    let k = &s.kernel.lir;
    let rows = Layout::Mma { warps_m: 4, warps_n: 1 };
    let first = lir_find(k, "local_mma");
    assert_eq!(first.len(), 1, "{}: the first dot is a local_mma", s.name);
    assert_eq!(layout(k, k.body.op(first[0]).results[0]), Some(rows), "{}: chained dots need a w×1 warp grid", s.name);
    for (m, n) in [("row_reduce.max", 1), ("row_reduce.sum", 1)] {
        let ops = lir_find(k, m);
        assert_eq!(ops.len(), n, "{}: expected {n} `{m}` (a row reduction in registers)", s.name);
        assert_eq!(layout(k, k.body.op(ops[0]).results[0]), Some(Layout::MmaRows { warps_m: 4 }));
    }
    assert!(
        lir_find(k, "local_reduce.max").is_empty() && lir_find(k, "local_reduce.sum").is_empty(),
        "{}: a row reduction went through shared memory",
        s.name
    );
    let bcast = lir_find(k, "row_broadcast");
    assert_eq!(bcast.len(), 2, "{}: `m[:, None]` and `l[:, None]` are row broadcasts", s.name);
    let reg = lir_find(k, "reg_mma");
    assert_eq!(reg.len(), 1, "{}: the second dot takes `p` from registers", s.name);
    let d = k.body.op(reg[0]);
    assert_eq!(layout(k, d.results[0]), Some(rows));
    // `p as bf16` is the A operand, in the first dot's accumulator layout.
    let p = d.operands[1];
    assert_eq!(layout(k, p), Some(rows), "{}: reg_mma's A operand is not in the accumulator layout", s.name);
    assert_eq!(k.body.ty(p).dtype(), DType::BF16);
    let stores_p = lir_find(k, "local_store").into_iter().any(|op| k.body.op(op).operands.contains(&p));
    assert!(!stores_p, "{}: `p` is stored to shared memory", s.name);
    assert_eq!(mma_tiles_stored(k), Vec::<String>::new(), "{}: an accumulator-layout tile went through shared memory", s.name);
    assert!(lir_find(k, "local_load").is_empty(), "{}: nothing is converted through shared memory", s.name);
    s.snapshot();
}

#[test]
fn convert_by_shuffles_where_cheaper() {
    let s = staged("convert_shuffle.tile");
    let k = &s.kernel.lir;
    let shuffles = lir_find(k, "shuffle_convert");
    let dtypes: Vec<DType> = shuffles.iter().map(|&op| k.body.ty(k.body.op(op).results[0]).dtype()).collect();
    assert_eq!(dtypes, [DType::F32, DType::Bool], "{}: the row max and the row mask are broadcast by shuffles", s.name);
    for &op in &shuffles {
        let d = k.body.op(op);
        let (x, r) = (d.operands[0], d.results[0]);
        let lir::OpKind::ShuffleConvert { strides, .. } = &d.kind else { unreachable!() };
        assert_eq!(strides, &[1, 0], "{}: a row broadcast reads element (i, j) from row i", s.name);
        let plan = lir::shuffle::plan(k.body.ty(x), k.body.ty(r), strides, k.threads).expect("a plan");
        // Each thread's 8 registers span two rows: two shuffles, not one per register.
        assert_eq!(plan.shuffles(), 2, "{}: {plan:?}", s.name);
        assert!(lir::shuffle::shuffle_is_cheaper(&plan, k.body.ty(x), k.body.ty(r), k.threads));
    }
    // The two conversions whose elements are in other warps go through shared memory.
    let loads: Vec<String> = lir_find(k, "local_load").into_iter().map(|op| k.body.ty(k.body.op(op).results[0]).to_string()).collect();
    assert_eq!(loads, ["f32[4, 256] #blocked<4>", "f32[256, 4] #blocked<4>"], "{}", s.name);
    // Each is `local_store x; barrier; local_load; barrier`, and no shuffle plan exists for it.
    let ops = &k.body.block(k.body.entry).ops;
    for (i, &op) in ops.iter().enumerate() {
        let d = k.body.op(op);
        let lir::OpKind::LocalLoad { strides, .. } = &d.kind else { continue };
        let store = k.body.op(ops[i - 2]);
        assert_eq!(store.kind.mnemonic(), "local_store", "{}: {op} does not read what was just stored", s.name);
        let x = store.operands[0];
        assert!(lir::shuffle::plan(k.body.ty(x), k.body.ty(d.results[0]), strides, k.threads).is_none(), "{}: {op} could shuffle", s.name);
    }
    s.snapshot();
}

#[test]
fn remat_rebuilds_arange_mask_in_mma_layout() {
    let s = staged("remat_mask.tile");
    let k = &s.kernel.lir;
    assert!(tir_count(&s.kernel.tir, "arange") == 2, "{}: the tile IR builds the mask from two aranges", s.name);
    assert!(lir_find(k, "arange").is_empty(), "{}: an arange was lowered instead of rematerialised", s.name);
    let acc = k.body.op(lir_find(k, "local_mma")[0]).results[0];
    let coords = lir_find(k, "coord");
    let mut axes: Vec<u32> = coords
        .iter()
        .filter_map(|&op| match k.body.op(op).kind {
            lir::OpKind::Coord { axis } => Some(axis),
            _ => None,
        })
        .collect();
    axes.sort();
    assert_eq!(axes, [0, 1], "{}: rows and columns are rebuilt from coordinates", s.name);
    for &op in &coords {
        assert_eq!(layout(k, k.body.op(op).results[0]), layout(k, acc), "{}: coord not in the accumulator layout", s.name);
    }
    let select = lir_find(k, "select");
    assert_eq!(select.len(), 1);
    let mask = k.body.op(select[0]).operands[0];
    assert_eq!(layout(k, mask), layout(k, acc), "{}: the mask is not in the accumulator layout", s.name);
    let stored: Vec<String> = lir_find(k, "local_store")
        .into_iter()
        .map(|op| k.body.ty(k.body.op(op).operands[0]).clone())
        .filter(|t| matches!(t.dtype(), DType::I32 | DType::Bool))
        .map(|t| t.to_string())
        .collect();
    assert!(stored.is_empty(), "{}: mask pieces went through shared memory: {stored:?}", s.name);
    assert!(lir_find(k, "local_load").is_empty(), "{}: something was converted through shared memory", s.name);
    s.snapshot();
}

#[test]
fn uniform_mask_branches_around_the_mask() {
    let s = staged("uniform_mask.tile");
    let t = &s.kernel.tir;
    let ifs: Vec<Op> = tir_ops(t).into_iter().filter(|&op| t.body.op(op).kind == tir::OpKind::If).collect();
    assert_eq!(ifs.len(), 1, "{}: one `if` around the masked product", s.name);
    let [then_b, else_b] = t.body.op(ifs[0]).regions[..] else { panic!("{}: an `if` has two branches", s.name) };
    let kinds = |b: Block| t.body.block(b).ops.iter().map(|&op| t.body.op(op).kind.mnemonic()).collect::<Vec<_>>();
    assert_eq!(kinds(then_b), ["yield"], "{}: the `then` branch yields the product as it is", s.name);
    let tile_cmps = |b: Block| {
        t.body
            .block(b)
            .ops
            .iter()
            .filter(|&&op| t.body.op(op).kind.mnemonic().starts_with("cmp.") && !t.body.ty(t.body.result(op)).is_scalar())
            .count()
    };
    assert_eq!(tile_cmps(else_b), 2, "{}: the mask's two comparisons are built in the `else` branch", s.name);
    assert_eq!(tir_count(t, "select"), 1, "{}", s.name);
    let scalar_tests: Vec<String> = tir_ops(t)
        .into_iter()
        .filter(|&op| t.body.op(op).kind.mnemonic().starts_with("cmp.") && t.body.ty(t.body.result(op)).is_scalar())
        .map(|op| t.body.op(op).kind.mnemonic())
        .collect();
    assert_eq!(scalar_tests, ["cmp.lt", "cmp.le"], "{}: one scalar test per comparison", s.name);
    // Thread IR: the mask rebuilt from coordinates in the accumulator's layout, nothing through
    // shared memory for it, the branch's result in that layout.
    let k = &s.kernel.lir;
    let acc = k.body.op(lir_find(k, "local_mma")[0]).results[0];
    assert!(lir_find(k, "arange").is_empty(), "{}: an arange was lowered instead of rematerialised", s.name);
    let lif = lir_find(k, "if");
    assert_eq!(lif.len(), 1, "{}", s.name);
    assert_eq!(layout(k, k.body.op(lif[0]).results[0]), layout(k, acc), "{}: the branch's result is not in the accumulator layout", s.name);
    let coords = lir_find(k, "coord");
    assert!(!coords.is_empty(), "{}: no coordinates: the mask was not rebuilt", s.name);
    let lelse = k.body.op(lif[0]).regions[1];
    for op in coords {
        assert!(k.body.block(lelse).ops.contains(&op), "{}: a coordinate outside the `else` branch", s.name);
    }
    let stored = lir_find(k, "local_store")
        .into_iter()
        .filter(|&op| matches!(k.body.ty(k.body.op(op).operands[0]).dtype(), DType::I32 | DType::Bool))
        .count();
    assert_eq!(stored, 0, "{}: mask pieces went through shared memory", s.name);
    s.snapshot();
}

/// The checks common to a 3-stage pipelined k-loop with `copies` fused operands per iteration,
/// after `early` loop-invariant operands copied before the loop (one group each).
fn check_pipeline(s: &Staged, copies: usize, early: usize) -> (Block, Op) {
    let k = &s.kernel.lir;
    let (for_op, body) = the_loop(k);
    let entry = block_mnemonics(k, k.body.entry);
    let for_at = k.body.block(k.body.entry).ops.iter().position(|&o| o == for_op).unwrap_or_else(|| unreachable!());
    // Through the copy engine (sm_90a, operands with tensor maps): bulk tensor copies, each
    // stage's arrival on its mbarrier (initialised before the prologue) and the wait for it
    // beside the `cp.async` group's.
    let tma = !k.tensor_maps.is_empty();
    let copy = if tma { "tma_copy" } else { "async_copy" };
    // Prologue: stages - 1 = 2 groups, each of `copies` copies and a commit, before the loop.
    let mut group: Vec<&str> = vec![copy; copies];
    if tma {
        group.push("tma_arrive");
    }
    group.push("async_commit");
    let init: &[&str] = if tma { &["mbar_init"] } else { &[] };
    // An early copy (outside the loop) goes through the copy engine on its own mbarrier too.
    let early_group: &[&str] = if tma { &["mbar_init", "tma_copy", "tma_arrive", "async_commit"] } else { &["async_copy", "async_commit"] };
    let prologue: Vec<&str> = [early_group.repeat(early), init.to_vec(), group.clone(), group].concat();
    let pre: Vec<String> =
        entry[..for_at].iter().filter(|m| m.starts_with("async_") || m.starts_with("tma_") || m.starts_with("mbar_")).cloned().collect();
    assert_eq!(pre, prologue, "{}: the prologue issues iterations 0 and 1, one group each", s.name);
    // In the loop: wait for this stage, one barrier, copy the stage 2 ahead, commit, compute.
    // With wgmma, the MMAs are issued first (they run while the copies are issued) and waited
    // for at the end of the iteration; through the copy engine (`defer_wgmma_wait`), the wait
    // is for the previous iteration's group, right after the issue, and the barrier follows it.
    let inner = block_mnemonics(k, body);
    let hopper = inner.iter().any(|m| m == "wgmma_wait");
    let deferred = k.body.block(body).ops.iter().any(|&o| matches!(k.body.op(o).kind, lir::OpKind::WgmmaWait { pending: 1 }));
    assert_eq!(deferred, tma, "{}: the wgmma wait is deferred exactly when the copy engine feeds the loop", s.name);
    // After the loop, nothing is left in flight: the last MMAs waited for first (deferred), then
    // the copies.
    let post: Vec<&lir::OpKind> = k.body.block(k.body.entry).ops[for_at + 1..].iter().map(|&o| &k.body.op(o).kind).collect();
    let drained = if deferred { &post[1..] } else { &post[..] };
    assert!(!deferred || matches!(post[0], lir::OpKind::WgmmaWait { pending: 0 }), "{}: `wgmma_wait` right after the loop", s.name);
    assert!(!deferred || entry[for_at - 1] == "barrier", "{}: a barrier before the deferred loop", s.name);
    assert!(matches!(drained.first(), Some(lir::OpKind::AsyncWait { pending: 0 })), "{}: `async_wait 0` after the loop", s.name);
    let mut wanted = vec!["async_wait"];
    if tma {
        wanted.push("tma_wait");
    }
    if !deferred {
        wanted.push("barrier");
    }
    if hopper {
        wanted.push("local_mma");
    }
    if deferred {
        wanted.extend(["wgmma_wait", "barrier"]);
    }
    wanted.extend(vec![copy; copies]);
    if tma {
        wanted.push("tma_arrive");
    }
    wanted.push("async_commit");
    if !deferred {
        wanted.push(if hopper { "wgmma_wait" } else { "local_mma" });
    }
    let at = in_order(&inner, &wanted).unwrap_or_else(|e| panic!("{}: loop body out of order: {e}", s.name));
    let wait = k.body.block(body).ops[at[0]];
    assert!(matches!(k.body.op(wait).kind, lir::OpKind::AsyncWait { pending: 1 }), "{}: stages - 2 = 1 group may stay in flight", s.name);
    assert_eq!(inner.iter().filter(|m| *m == "barrier").count(), 1, "{}: one barrier per pipelined iteration", s.name);
    assert_eq!(inner.iter().filter(|m| *m == copy).count(), copies, "{}: copies per iteration", s.name);
    let maps = s.kernel.lir.tensor_maps.len();
    assert!(!tma || hopper && (copies..=copies + early).contains(&maps), "{}: a tensor map per copied operand, on sm_90a", s.name);
    assert!(!inner.iter().any(|m| m == "load"), "{}: a fused window load was also lowered as a load", s.name);
    let mma_at = at[wanted.iter().position(|m| *m == "local_mma").unwrap_or_else(|| unreachable!())];
    let mma = k.body.block(body).ops[mma_at];
    assert_eq!(matches!(k.body.op(mma).kind, lir::OpKind::LocalMma { wgmma: true, .. }), hopper, "{}: wgmma_wait without wgmma", s.name);
    // The accumulator is loop-carried in MMA registers.
    assert!(is_mma(layout(k, k.body.op(for_op).results[0])), "{}: the loop-carried accumulator is not in the MMA layout", s.name);
    (body, mma)
}

#[test]
fn pipeline_three_stage_gemm() {
    for target in [Target::Sm80, Target::Sm90a] {
        pipeline_gemm_on(target);
    }
}

fn pipeline_gemm_on(target: Target) {
    let s = staged_on("pipeline_gemm.tile", target);
    let (_, mma) = check_pipeline(&s, 2, 0);
    let k = &s.kernel.lir;
    assert!(matches!(k.body.op(mma).kind, lir::OpKind::LocalMma { b_trans: false, .. }));
    assert_eq!(k.body.op(mma).operands.len(), 3, "{}: local_mma takes the stage bases of A and B", s.name);
    assert!(lir_find(k, "local_store").is_empty(), "{}: no operand goes through registers", s.name);
    s.snapshot();
}

#[test]
fn pipeline_fuses_trans_load() {
    for target in [Target::Sm80, Target::Sm90a] {
        pipeline_trans_on(target);
    }
}

fn pipeline_trans_on(target: Target) {
    let s = staged_on("pipeline_trans.tile", target);
    let (body, mma) = check_pipeline(&s, 2, 0);
    let k = &s.kernel.lir;
    assert!(
        matches!(k.body.op(mma).kind, lir::OpKind::LocalMma { b_trans: true, .. }),
        "{}: `trans(load)` should be read transposed",
        s.name
    );
    // The B window is copied in its loaded shape [64, 32], not transposed through shared memory.
    let shapes: Vec<String> = k
        .body
        .block(body)
        .ops
        .iter()
        .filter_map(|&op| match &k.body.op(op).kind {
            lir::OpKind::AsyncCopy { shape, .. } | lir::OpKind::TmaCopy { shape, .. } => Some(format!("{shape:?}")),
            _ => None,
        })
        .collect();
    assert_eq!(shapes, ["[64, 32]", "[64, 32]"], "{}: copies of A [64, 32] and of B as loaded [64, 32]", s.name);
    assert!(
        lir_find(k, "local_store").is_empty() && lir_find(k, "local_load").is_empty(),
        "{}: the transpose went through shared memory",
        s.name
    );
    s.snapshot();
}

/// A window shared only where every use is a fused `dot` operand: `q` read by the loop's `wgmma`
/// as its invariant `a` and again through `trans` (copied once, before the loop, only when that
/// dot is its one reader: here it stays in registers), and a window read by a `dot` and by an
/// elementwise op (not copied for the `dot`). Both compile on both targets.
#[test]
fn windows_with_other_readers_are_not_shared() {
    let kernel = |body: &str| {
        format!(
            "use std::math::cdiv;\n#[grid(cdiv(M, 64))]\n#[warps(4)]\n#[stages(2)]\n\
             kernel w(q: &bf16[M, 64], k: &bf16[N, 64], o: &mut f32[M, 64]) {{\n\
             let m0 = program_id(0) * 64;\nlet qt = q.load([m0, 0], [64, 64]);\nlet mut acc: f32[64, 64] = 0.0;\n\
             for n0 in (0..N).step_by(64) {{\nlet kt = k.load([n0, 0], [64, 64]);\n{body}\n}}\no.store([m0, 0], acc);\n}}\n"
        )
    };
    for body in ["acc += dot(dot(qt, trans(kt)) as bf16, trans(qt));", "acc += dot(qt, trans(kt)) + (kt as f32);"] {
        for target in [Target::Sm80, Target::Sm90a] {
            tessera_compiler::compile(&Source::new("w.tile", kernel(body)), &Options { target, ..opts(&[]) })
                .unwrap_or_else(|d| panic!("{target:?}, `{body}`: {}", d.render()));
        }
    }
}

#[test]
fn layout_row_statistic_loads_in_rows() {
    // On sm_90a the product runs as `wgmma`, whose warps own whole rows (`#mma<4x1>`); on sm_80
    // this program's `mma.sync` grid is 2 × 2, where rows are split between warps and the row
    // layout does not apply.
    let s = staged_on("layout_rows.tile", Target::Sm90a);
    let k = &s.kernel.lir;
    let (_, body) = the_loop(k);
    let lse_load = k.body.block(k.body.entry).ops.iter().find(|&&o| {
        let d = k.body.op(o);
        d.kind == lir::OpKind::Tir(tir::OpKind::Load) && d.results.first().is_some_and(|&r| k.body.ty(r).shape() == [64])
    });
    let lse_load = lse_load.unwrap_or_else(|| panic!("{}: no load of `lse` before the loop", s.name));
    let layout = k.body.ty(k.body.op(*lse_load).results[0]).layout();
    assert!(matches!(layout, Some(Layout::MmaRows { .. })), "{}: `lse` loaded as {layout:?}", s.name);
    let ops = &k.body.block(body).ops;
    assert!(ops.iter().any(|&o| k.body.op(o).kind == lir::OpKind::RowBroadcast), "{}: the column is broadcast in registers", s.name);
    assert!(!lir_find(k, "local_load").iter().any(|o| ops.contains(o)), "{}: a shared-memory round trip in the loop", s.name);
    s.snapshot();
}

#[test]
fn pipeline_shares_a_window_between_dots() {
    for target in [Target::Sm80, Target::Sm90a] {
        let s = staged_on("pipeline_shared_window.tile", target);
        let k = &s.kernel.lir;
        let (_, body) = the_loop(k);
        let ops = &k.body.block(body).ops;
        let copies =
            ops.iter().filter(|&&o| matches!(k.body.op(o).kind, lir::OpKind::AsyncCopy { .. } | lir::OpKind::TmaCopy { .. })).count();
        assert_eq!(copies, 1, "{}: the shared window is copied once per iteration", s.name);
        // Both MMAs read B at the same buffer and stage base.
        let reads: Vec<(u32, Value)> = ops
            .iter()
            .filter_map(|&o| {
                let d = k.body.op(o);
                match d.kind {
                    lir::OpKind::LocalMma { b_offset, .. } | lir::OpKind::RegMma { b_offset, .. } => Some((b_offset, d.operands[2])),
                    _ => None,
                }
            })
            .collect();
        assert_eq!(reads.len(), 2, "{}: two MMAs in the loop", s.name);
        assert_eq!(reads[0], reads[1], "{}: both MMAs read the one copy (offset, stage base)", s.name);
        assert!(
            !lir_find(k, "local_store").iter().any(|&o| ops.contains(&o)),
            "{}: nothing of the window goes through the scratch region",
            s.name
        );
        s.snapshot();
    }
}

#[test]
fn pipeline_stores_loop_invariant_operand_once() {
    for target in [Target::Sm80, Target::Sm90a] {
        pipeline_invariant_on(target);
    }
}

fn pipeline_invariant_on(target: Target) {
    let s = staged_on("pipeline_invariant.tile", target);
    let (body, mma) = check_pipeline(&s, 1, usize::from(target == Target::Sm90a));
    let k = &s.kernel.lir;
    let entry_ops = &k.body.block(k.body.entry).ops;
    let (for_op, _) = the_loop(k);
    let for_at = entry_ops.iter().position(|&o| o == for_op);
    if target == Target::Sm90a {
        // The first copy of the kernel is `xt`'s, before the loop, into the buffer wgmma reads.
        assert!(lir_find(k, "local_store").is_empty(), "{}: xt went through registers", s.name);
        assert!(lir_find(k, "load").is_empty(), "{}: xt was loaded into registers", s.name);
        let copies = [lir_find(k, "async_copy"), lir_find(k, "tma_copy")].concat();
        let first = copies.iter().filter_map(|c| entry_ops.iter().position(|o| o == c)).min();
        assert!(first.is_some_and(|a| Some(a) < for_at), "{}: xt is not copied before the loop", s.name);
        let first_copy = entry_ops[first.unwrap_or_default()];
        let (
            lir::OpKind::AsyncCopy { offset, shape, .. } | lir::OpKind::TmaCopy { offset, shape, .. },
            lir::OpKind::LocalMma { a_offset, wgmma, .. },
        ) = (&k.body.op(first_copy).kind, &k.body.op(mma).kind)
        else {
            panic!("{}: unexpected op kinds", s.name)
        };
        assert_eq!((offset, shape.as_slice()), (a_offset, &[64, 64][..]), "{}: local_mma reads A where xt was copied", s.name);
        assert!(wgmma, "{}: the dot runs as wgmma", s.name);
        s.snapshot();
        return;
    }
    let stores = lir_find(k, "local_store");
    assert_eq!(stores.len(), 1, "{}: the invariant operand is stored once", s.name);
    let at = entry_ops.iter().position(|&o| o == stores[0]);
    assert!(at.is_some_and(|a| Some(a) < for_at), "{}: the invariant operand is not stored before the loop", s.name);
    let next = at.and_then(|a| entry_ops.get(a + 1)).map(|&o| mnemonic(k, o));
    assert_eq!(next.as_deref(), Some("barrier"), "{}: a barrier follows the store", s.name);
    assert!(!block_mnemonics(k, body).iter().any(|m| m == "local_store"), "{}: stored again in the loop", s.name);
    let (lir::OpKind::LocalStore { offset, swizzled }, lir::OpKind::LocalMma { a_offset, .. }) =
        (&k.body.op(stores[0]).kind, &k.body.op(mma).kind)
    else {
        panic!("{}: unexpected op kinds", s.name)
    };
    assert!(swizzled, "{}: the ldmatrix/wgmma operand must be stored swizzled", s.name);
    assert_eq!(offset, a_offset, "{}: local_mma reads A where it was stored", s.name);
    s.snapshot();
}

/// The copy engine takes only loads of tensors the kernel never writes (no copy in flight can
/// race its stores) in a loop that is not inside another loop (the mbarriers are initialised
/// once, before the prologue); elsewhere the pipeline keeps `cp.async`.
#[test]
fn copy_engine_only_for_read_only_operands_of_top_level_loops() {
    let gemm = |a_ty: &str, outer: bool| {
        let inner = "for k0 in (0..K).step_by(32) { acc = dot(a.load([m0, k0], [64, 32]), b.load([k0, n0], [32, 64]), acc); }";
        let body = if outer { format!("for r in 0..2 {{ {inner} }}") } else { inner.to_string() };
        format!(
            "use std::math::cdiv;\n#[grid(cdiv(M, 64), cdiv(N, 64))]\n#[warps(4)]\nkernel gemm(a: {a_ty}[M, K], b: &bf16[K, N], c: &mut f32[M, N]) {{\n\
             let (m0, n0) = (program_id(0) * 64, program_id(1) * 64);\nlet mut acc: f32[64, 64] = 0.0;\n{body}\nc.store([m0, n0], acc);\n}}\n"
        )
    };
    let maps = |text: String, target: Target| {
        let m = tessera_compiler::compile(&Source::new("gemm.tile", text), &Options { target, ..opts(&[]) })
            .unwrap_or_else(|d| panic!("{}", d.render()));
        let k = &m.kernels[0];
        (k.meta.tensor_maps.len(), lir_find(&k.lir, "tma_copy").len(), lir_find(&k.lir, "async_copy").len())
    };
    assert_eq!(maps(gemm("&bf16", false), Target::Sm90a), (2, 6, 0), "both operands through the copy engine");
    assert_eq!(maps(gemm("&bf16", false), Target::Sm80), (0, 0, 6), "no copy engine on sm_80");
    assert_eq!(maps(gemm("&mut bf16", false), Target::Sm90a), (0, 0, 6), "`a` is writable");
    assert_eq!(maps(gemm("&bf16", true), Target::Sm90a), (0, 0, 6), "the k-loop is inside another loop");
}

/// `defer_wgmma_wait` changes only loops whose accumulator nothing but the `wgmma` reads: when
/// the body also reads it (here a running sum of the accumulator), every iteration still waits
/// for its own group (`wgmma_wait` with 0 pending) and keeps its barrier.
#[test]
fn wgmma_wait_is_deferred_only_when_nothing_else_reads_the_accumulator() {
    let gemm = |extra: &str| {
        format!(
            "use std::math::cdiv;\n#[grid(cdiv(M, 64), cdiv(N, 64))]\n#[warps(4)]\n\
             kernel gemm(a: &bf16[M, K], b: &bf16[K, N], c: &mut f32[M, N], t: &mut f32[M]) {{\n\
             let (m0, n0) = (program_id(0) * 64, program_id(1) * 64);\nlet mut acc: f32[64, 64] = 0.0;\n\
             let mut tot: f32[64] = 0.0;\n\
             for k0 in (0..K).step_by(32) {{ acc = dot(a.load([m0, k0], [64, 32]), b.load([k0, n0], [32, 64]), acc); {extra} }}\n\
             c.store([m0, n0], acc);\nt.store([m0], tot);\n}}\n"
        )
    };
    let waits = |text: String| {
        let m = tessera_compiler::compile(&Source::new("gemm.tile", text), &Options { target: Target::Sm90a, ..opts(&[]) })
            .unwrap_or_else(|d| panic!("{}", d.render()));
        let k = &m.kernels[0].lir;
        let mut pending = vec![];
        k.body.walk(k.body.entry, &mut |op| {
            if let lir::OpKind::WgmmaWait { pending: p } = k.body.op(op).kind {
                pending.push(p);
            }
        });
        pending
    };
    assert_eq!(waits(gemm("")), [1, 0], "deferred: group 1 in the loop, group 0 after it");
    assert_eq!(waits(gemm("tot = tot + acc.sum(1);")), [0], "the body reads the accumulator: not deferred");
}

/// A persistent loop over (tile, k-step) pairs whose tile epilogue is an `if` at the end of the
/// body (store the tile, restart from zero): `defer_wgmma_wait` still leaves each iteration's
/// group in flight. The epilogue branch waits for it itself, the accumulator leaves the `if`
/// (the loop yields the in-flight value), and the restart is a loop-carried `accumulate` flag on
/// the `wgmma` instead of zeroed registers.
#[test]
fn wgmma_wait_is_deferred_past_a_tile_epilogue() {
    let text = "use std::math::cdiv;\n#[grid(4)]\n#[warps(4)]\n\
         kernel gemm(a: &bf16[M, K], b: &bf16[K, N], c: &mut bf16[M, N]) {\n\
         let tn = cdiv(N, 64);\nlet kt = cdiv(K, 32);\n\
         let mine = cdiv(cdiv(M, 64) * tn - program_id(0), num_programs(0));\n\
         let mut acc: f32[64, 64] = 0.0;\n\
         for s in 0..mine * kt {\n\
           let t = program_id(0) + (s / kt) * num_programs(0);\nlet ki = s % kt;\n\
           let (m0, n0) = ((t / tn) * 64, (t % tn) * 64);\n\
           acc = dot(a.load([m0, ki * 32], [64, 32]), b.load([ki * 32, n0], [32, 64]), acc);\n\
           if ki == kt - 1 { c.store([m0, n0], acc as bf16); acc = 0.0; }\n\
         }\n}\n";
    let m = tessera_compiler::compile(&Source::new("persistent.tile", text), &Options { target: Target::Sm90a, ..opts(&[]) })
        .unwrap_or_else(|d| panic!("{}", d.render()));
    let k = &m.kernels[0].lir;
    lir::verify_kernel(k).unwrap_or_else(|e| panic!("{e}"));
    let for_op = k.body.block(k.body.entry).ops.iter().copied().find(|&o| matches!(k.body.op(o).kind, lir::OpKind::Tir(tir::OpKind::For)));
    let for_op = for_op.unwrap_or_else(|| panic!("no loop"));
    let body = k.body.op(for_op).regions[0];
    let ops: Vec<_> = k.body.block(body).ops.iter().map(|&o| k.body.op(o)).collect();
    let mma = ops.iter().position(|d| matches!(d.kind, lir::OpKind::LocalMma { wgmma: true, .. })).unwrap_or_else(|| panic!("no wgmma"));
    assert!(matches!(ops[mma + 1].kind, lir::OpKind::WgmmaWait { pending: 1 }), "group 1 right after the issue");
    assert!(matches!(ops[mma + 2].kind, lir::OpKind::Barrier), "then the barrier");
    // The `accumulate` operand: the loop's last body argument, true before the loop.
    let flag = *ops[mma].operands.last().unwrap_or_else(|| unreachable!());
    assert_eq!(ops[mma].operands.len(), 4);
    assert_eq!(k.body.block(body).args.last(), Some(&flag), "the flag is carried by the loop");
    // The epilogue: no tile result; its storing branch waits for the group first, and yields
    // `false` (restart), the other `true`.
    let epi = ops.iter().find(|d| matches!(d.kind, lir::OpKind::Tir(tir::OpKind::If))).unwrap_or_else(|| panic!("no epilogue"));
    assert!(epi.results.iter().all(|&r| k.body.ty(r).shape().is_empty()), "the accumulator left the `if`");
    let first = |blk| k.body.op(k.body.block(blk).ops[0]).kind.clone();
    assert!(matches!(first(epi.regions[0]), lir::OpKind::WgmmaWait { pending: 0 }), "the storing branch waits first");
    assert!(!matches!(first(epi.regions[1]), lir::OpKind::WgmmaWait { .. }), "the other passes the group on");
    // The store's coordinates, read only there, are computed in that branch after the wait (ptxas
    // serialises the `wgmma`s when anything precedes the wait in its branch).
    let arith =
        |blk| k.body.block(blk).ops.iter().filter(|&&o| matches!(k.body.op(o).kind, lir::OpKind::Tir(tir::OpKind::Binary(_)))).count();
    assert!(arith(epi.regions[0]) >= 2, "the tile's coordinates moved into the epilogue");
    let yielded_flag = |blk| {
        let y = k.body.op(*k.body.block(blk).ops.last().unwrap_or_else(|| unreachable!()));
        let v = *y.operands.last().unwrap_or_else(|| unreachable!());
        k.body.producer(v).map(|p| k.body.op(p).kind.clone())
    };
    assert_eq!(yielded_flag(epi.regions[0]), Some(lir::OpKind::Tir(tir::OpKind::Const(tir::Lit::Bool(false)))));
    assert_eq!(yielded_flag(epi.regions[1]), Some(lir::OpKind::Tir(tir::OpKind::Const(tir::Lit::Bool(true)))));
    // The loop yields the in-flight accumulator itself.
    let loop_yield = ops.last().unwrap_or_else(|| unreachable!());
    assert_eq!(loop_yield.operands[0], k.body.op(k.body.block(body).ops[mma + 1]).results[0]);
}

#[test]
fn epilogue_stores_through_the_copy_engine() {
    let s = staged("tma_store.tile");
    let k = &s.kernel.lir;
    assert!(lir_find(k, "store").is_empty(), "{}: a plain store is left", s.name);
    let tma = lir_find(k, "tma_store");
    assert_eq!(tma.len(), 1, "{}: one bulk store", s.name);
    let lir::OpKind::TmaStore { offset, shape, map, reduce: None } = k.body.op(tma[0]).kind.clone() else { unreachable!() };
    assert_eq!(shape, [64, 128]);
    let m = &k.tensor_maps[map as usize];
    assert_eq!((m.param, m.boxes.as_slice(), m.swizzle), (2, &[64u32, 64][..], 128), "{}: c's map, a box per column block", s.name);
    // In order at the top level, right before the end.
    let top: Vec<Op> = k.body.block(k.body.entry).ops.clone();
    let at = top.iter().position(|&o| o == tma[0]).unwrap_or_else(|| unreachable!());
    let seq: Vec<String> = top[at - 4..].iter().map(|&o| mnemonic(k, o)).collect();
    // The copy engine has read the staged tile before the program ends.
    assert_eq!(seq, ["async_wait", "barrier", "local_store", "barrier", "tma_store", "bulk_wait_read", "barrier"], "{}", s.name);
    let staged = k.body.op(top[at - 2]);
    assert_eq!(staged.kind, lir::OpKind::LocalStore { offset, swizzled: true }, "{}: staged where the bulk store reads", s.name);
    assert_eq!(layout(k, staged.operands[0]), Some(Layout::Mma { warps_m: 4, warps_n: 1 }), "{}: from the accumulator's registers", s.name);
    // The staging tile lives in the dead pipeline buffers: 3 stages of a 64×64 and a 64×128
    // bf16 tile, their mbarriers, and nothing more.
    let pipeline = 3 * (64 * 64 + 64 * 128) * 2;
    let copies: Vec<u32> = lir_find(k, "tma_copy")
        .into_iter()
        .filter_map(|o| match k.body.op(o).kind {
            lir::OpKind::TmaCopy { offset, .. } => Some(offset),
            _ => None,
        })
        .collect();
    assert!(copies.contains(&offset), "{}: the staging tile is not in the pipeline's buffers ({copies:?}, {offset})", s.name);
    assert!(k.shared_bytes < pipeline + 64 * 128 * 2, "{}: {} bytes of shared memory", s.name, k.shared_bytes);
    s.snapshot();
}

#[test]
fn window_reductions_go_through_the_copy_engine() {
    let s = staged("tma_reduce.tile");
    let k = &s.kernel.lir;
    assert!(lir_find(k, "atomic.add").is_empty(), "{}: a per-element atomic is left", s.name);
    let tma = lir_find(k, "tma_reduce.add");
    assert_eq!(tma.len(), 1, "{}: one bulk reduction", s.name);
    let lir::OpKind::TmaStore { offset, shape, map, reduce } = k.body.op(tma[0]).kind.clone() else { unreachable!() };
    assert_eq!((shape.as_slice(), reduce), (&[64i64, 64][..], Some(tir::AtomicOp::Add)));
    let m = &k.tensor_maps[map as usize];
    assert_eq!((m.param, m.boxes.as_slice(), m.swizzle), (2, &[64u32, 32][..], 128), "{}: c's map, a box per column block", s.name);
    let top: Vec<Op> = k.body.block(k.body.entry).ops.clone();
    let at = top.iter().position(|&o| o == tma[0]).unwrap_or_else(|| unreachable!());
    let seq: Vec<String> = top[at - 3..=at + 2].iter().map(|&o| mnemonic(k, o)).collect();
    assert_eq!(seq, ["barrier", "local_store", "barrier", "tma_reduce.add", "bulk_wait_read", "barrier"], "{}", s.name);
    let staged = k.body.op(top[at - 2]);
    assert_eq!(staged.kind, lir::OpKind::LocalStore { offset, swizzled: true }, "{}: staged where the bulk reduction reads", s.name);
    // The window's offsets are the program's tile origin, not index tiles.
    assert!(k.body.op(tma[0]).operands[1..].iter().all(|&o| k.body.ty(o).shape().is_empty()), "{}: scalar offsets", s.name);
    // sm_80 has no copy engine: per-element atomics.
    let s80 = staged_on("tma_reduce.tile", Target::Sm80);
    assert_eq!(lir_find(&s80.kernel.lir, "atomic.add").len(), 1, "{}: sm_80 adds element by element", s80.name);
    s.snapshot();
}

/// Stores that keep the registers' path: on sm_80, to a tensor the kernel also reads or writes
/// elsewhere, and of a tile in the blocked layout; one in a loop goes through the copy engine.
#[test]
fn tma_store_only_where_nothing_else_touches_the_tensor() {
    let gemm = |epilogue: &str| {
        format!(
            "#[grid(1)]\n#[warps(4)]\nkernel g(a: &bf16[M, K], b: &bf16[K, N], c: &mut bf16[M, N]) {{\n\
             let mut acc: f32[64, 128] = 0.0;\n\
             for k0 in (0..K).step_by(64) {{ acc = dot(a.load([0, k0], [64, 64]), b.load([k0, 0], [64, 128]), acc); }}\n\
             {epilogue}\n}}\n"
        )
    };
    let cases = [
        (gemm("c.store([0, 0], acc as bf16);"), Target::Sm90a, 1),
        (gemm("c.store([0, 0], acc as bf16);"), Target::Sm80, 0),
        (gemm("c.store([0, 0], (acc + c.load([0, 0], [64, 128]) as f32) as bf16);"), Target::Sm90a, 0),
        (gemm("c.store([0, 0], acc as bf16);\nc.store([64, 0], acc as bf16);"), Target::Sm90a, 0),
        // In a loop, staged in the scratch region (the pipeline's copies may be in flight).
        (gemm("for i in 0..2 { c.store([i * 64, 0], acc as bf16); }"), Target::Sm90a, 1),
        (gemm("c.store([0, 0], a.load([0, 0], [64, 128]));"), Target::Sm90a, 0),
    ];
    for (text, target, want) in cases {
        let m = tessera_compiler::compile(&Source::new("g.tile", text.as_str()), &Options { target, ..opts(&[]) })
            .unwrap_or_else(|d| panic!("{}", d.render()));
        let k = &m.kernels[0].lir;
        assert_eq!(lir_find(k, "tma_store").len(), want, "{target:?}:\n{text}");
        if want == 0 {
            assert!(!lir_find(k, "store").is_empty(), "{target:?}: the store is gone:\n{text}");
        }
    }
}

/// `#[stages(N)]` is the deepest pipeline: a GEMM whose four 48 KiB stages fit an H100's shared
/// memory but not an A100's gets three there (and still four on sm_90a), while a depth asked for
/// in the options (`--stages 4`, the autotuner) is exact and refused where it does not fit.
#[test]
fn pipeline_depth_shrinks_to_fit_shared_memory() {
    let src = "
#[grid(cdiv(M, 128), cdiv(N, 256))]
#[warps(8)]
#[stages(4)]
kernel mm(a: &bf16[M, K], b: &bf16[K, N], c: &mut bf16[M, N]) {
    let (m0, n0) = (program_id(0) * 128, program_id(1) * 256);
    let mut acc: f32[128, 256] = 0.0;
    for k0 in (0..K).step_by(64) {
        acc = dot(a.load([m0, k0], [128, 64]), b.load([k0, n0], [64, 256]), acc);
    }
    c.store([m0, n0], acc as bf16);
}
fn cdiv(a, b) { (a + b - 1) / b }";
    let build = |target: Target, stages: Option<u32>| {
        let o = Options { target, stages, verify: true, ..Options::default() };
        tessera_compiler::compile(&Source::new("mm.tile", src), &o).map(|m| m.kernels[0].meta.shared_bytes)
    };
    let stage = 48 * 1024;
    let h100 = build(Target::Sm90a, None).unwrap_or_else(|d| panic!("{}", d.render()));
    let a100 = build(Target::Sm80, None).unwrap_or_else(|d| panic!("{}", d.render()));
    assert!(h100 >= 4 * stage, "sm_90a keeps 4 stages: {h100} bytes");
    assert!((3 * stage..4 * stage).contains(&a100), "sm_80 gets 3 stages: {a100} bytes");
    let forced = build(Target::Sm80, Some(4)).map(|_| ()).unwrap_err();
    assert!(forced.render().contains("bytes of shared memory, but sm_80 allows"), "{}", forced.render());
}

/// `sink_wgmma_wait` and `defer_bulk_wait`: in the loop, the first product's wait comes after
/// the second product's issue as `wgmma_wait 1` (its operand tiles are in other pipeline stages
/// than the second's copies write), the second's after the third's issue, also `1`; the bulk
/// reduction's read wait goes round the loop to just before the last barrier ahead of the next
/// staging store (in a buffer of its own), with a copy after the loop. sm_80 has neither kind
/// of wait.
#[test]
fn waits_move_as_late_as_what_they_guard_allows() {
    let s = staged("sink_wait.tile");
    let k = &s.kernel.lir;
    let lp = lir_find(k, "for")[0];
    let body = k.body.op(lp).regions[0];
    let ops = k.body.block(body).ops.clone();
    let names = block_mnemonics(k, body);
    let at = |op: Op| ops.iter().position(|&o| o == op).unwrap_or_else(|| unreachable!());
    let issues: Vec<usize> = (0..ops.len()).filter(|&i| names[i] == "local_mma" || names[i] == "reg_mma").collect();
    assert_eq!(issues.len(), 3, "{}: three products in the loop: {names:?}", s.name);
    let wait_of = |i: usize| {
        let r = k.body.result(ops[i]);
        let w = ops.iter().copied().find(|&o| names[at(o)] == "wgmma_wait" && k.body.op(o).operands[0] == r);
        w.unwrap_or_else(|| panic!("{}: no wait for op {i}", s.name))
    };
    for (n, want_after) in [(0, 1), (1, 2)] {
        let w = wait_of(issues[n]);
        assert_eq!(k.body.op(w).kind, lir::OpKind::WgmmaWait { pending: 1 }, "{}: product {n}'s wait", s.name);
        assert!(at(w) > issues[want_after], "{}: product {n}'s wait comes after product {want_after}'s issue: {names:?}", s.name);
    }
    let bulk: Vec<usize> = (0..ops.len()).filter(|&i| names[i] == "bulk_wait_read").collect();
    let reduce = names.iter().position(|n| n == "tma_reduce.add").unwrap_or_else(|| panic!("{}: no bulk reduction", s.name));
    let lir::OpKind::TmaStore { offset, .. } = k.body.op(ops[reduce]).kind else { unreachable!() };
    let staging = (0..reduce)
        .rev()
        .find(|&i| k.body.op(ops[i]).kind == lir::OpKind::LocalStore { offset, swizzled: true })
        .unwrap_or_else(|| panic!("{}: no staging store", s.name));
    assert_eq!(bulk.len(), 1, "{}: {names:?}", s.name);
    assert!(
        bulk[0] < staging && names[bulk[0] + 1] == "barrier",
        "{}: the read wait before the barrier ahead of the staging store: {names:?}",
        s.name
    );
    assert!(!names[bulk[0] + 1..staging].contains(&"local_store".to_string()), "{}: {names:?}", s.name);
    let top = k.body.block(k.body.entry).ops.clone();
    let after = top.iter().position(|&o| o == lp).unwrap_or_else(|| unreachable!());
    assert!(top[after..].iter().any(|&o| mnemonic(k, o) == "bulk_wait_read"), "{}: no read wait after the loop", s.name);
    let s80 = staged_on("sink_wait.tile", Target::Sm80);
    let k80 = &s80.kernel.lir;
    assert!(lir_find(k80, "bulk_wait_read").is_empty() && lir_find(k80, "wgmma_wait").is_empty(), "{}", s80.name);
    s.snapshot();
}

/// `defer_bulk_wait` on a loop body that ends with a window reduction staged in the scratch
/// region: the body ends `local_store` (the staging, at offset 0), `barrier`, `tma_reduce`,
/// `yield` (the barrier after the reduction, which only published its read wait, is gone), with
/// two barriers in all, the wait right before the first; after the loop the wait's copy is
/// followed by a barrier before the next `local_store` to the same bytes (the wait orders only
/// its own thread).
#[test]
fn a_bulk_read_wait_gone_round_the_loop_takes_the_last_barrier_with_it() {
    let s = staged("bulk_trailing.tile");
    let k = &s.kernel.lir;
    let lp = lir_find(k, "for")[0];
    let body = k.body.op(lp).regions[0];
    let ops = &k.body.block(body).ops;
    let names = block_mnemonics(k, body);
    let n = names.len();
    assert!(n > 4 && names[n - 4..] == ["local_store", "barrier", "tma_reduce.add", "yield"], "{}: {names:?}", s.name);
    assert_eq!(
        k.body.op(ops[n - 4]).kind,
        lir::OpKind::LocalStore { offset: 0, swizzled: true },
        "{}: staged in the scratch region",
        s.name
    );
    let bars: Vec<usize> = (0..n).filter(|&i| names[i] == "barrier").collect();
    assert_eq!(bars.len(), 2, "{}: {names:?}", s.name);
    assert_eq!(names[bars[0] - 1], "bulk_wait_read", "{}: {names:?}", s.name);
    let top = block_mnemonics(k, k.body.entry);
    let after = k.body.block(k.body.entry).ops.iter().position(|&o| o == lp).unwrap_or_else(|| unreachable!());
    let copy =
        (after..top.len()).find(|&i| top[i] == "bulk_wait_read").unwrap_or_else(|| panic!("{}: no wait after the loop: {top:?}", s.name));
    assert_eq!(top[copy + 1..copy + 3], ["barrier", "local_store"], "{}: {top:?}", s.name);
    s.snapshot();
}

/// `drop_barriers`: at the top level, the barrier that ended the column sums (reading the
/// scratch region) is gone, so the sums' reduction is followed by `kt`'s staging store at
/// another offset with no barrier between; the barrier between the sums' store and their
/// reduction (the same bytes) stays.
#[test]
fn a_barrier_between_ops_on_different_bytes_goes() {
    let s = staged("drop_barriers.tile");
    let k = &s.kernel.lir;
    let ops = &k.body.block(k.body.entry).ops;
    let names = block_mnemonics(k, k.body.entry);
    let reduce = names.iter().position(|n| n.starts_with("local_reduce")).unwrap_or_else(|| panic!("{}: no reduction: {names:?}", s.name));
    assert_eq!(names[reduce - 1], "barrier", "{}: the sums' store is published: {names:?}", s.name);
    let next = (reduce + 1..names.len())
        .find(|&i| names[i] == "local_store" || names[i] == "barrier")
        .unwrap_or_else(|| panic!("{}: nothing after the reduction: {names:?}", s.name));
    assert_eq!(names[next], "local_store", "{}: no barrier between the sums and the next staging store: {names:?}", s.name);
    let lir::OpKind::LocalStore { offset, .. } = k.body.op(ops[next]).kind else { unreachable!() };
    assert_ne!(offset, 0, "{}: the next store is elsewhere", s.name);
    s.snapshot();
}

/// `hoist_loads`: the read-only row vector's load comes before the product's wait (it was
/// after it), the load of the tensor the kernel writes stays after.
#[test]
fn read_only_loads_are_issued_before_the_waits_ahead_of_them() {
    let s = staged("hoist_loads.tile");
    let k = &s.kernel.lir;
    let blocking = ["wgmma_wait", "tma_wait", "async_wait", "bulk_wait_read", "barrier"];
    let param_load = |blk, p: usize| {
        let (ops, names) = (&k.body.block(blk).ops, block_mnemonics(k, blk));
        let i = (0..ops.len()).find(|&i| names[i] == "load" && k.body.op(ops[i]).operands[0] == k.body.block(k.body.entry).args[p]);
        i.unwrap_or_else(|| panic!("{}: no load of parameter {p}: {names:?}", s.name))
    };
    let lp = lir_find(k, "for")[0];
    let body = k.body.op(lp).regions[0];
    let names = block_mnemonics(k, body);
    let first_wait = names.iter().position(|n| blocking.contains(&n.as_str())).unwrap_or_else(|| panic!("{}: no wait: {names:?}", s.name));
    let wgmma_wait = names.iter().position(|n| n == "wgmma_wait").unwrap_or_else(|| panic!("{}: no wgmma_wait: {names:?}", s.name));
    assert!(param_load(body, 2) < first_wait, "{}: `m` loaded before the body's first wait: {names:?}", s.name);
    assert!(param_load(body, 3) > wgmma_wait, "{}: `r` (written by the kernel) loaded where it was: {names:?}", s.name);
    // After the loop: above the product's wait, below the loop.
    let entry = k.body.entry;
    let names = block_mnemonics(k, entry);
    let for_at = k.body.block(entry).ops.iter().position(|&o| o == lp).unwrap_or_else(|| panic!("{}: no loop", s.name));
    let last_wait = names.iter().rposition(|n| n == "wgmma_wait").unwrap_or_else(|| panic!("{}: no wgmma_wait: {names:?}", s.name));
    let bias = param_load(entry, 4);
    assert!(for_at < bias && bias < last_wait, "{}: `bias` loaded between the loop and the last wait: {names:?}", s.name);
    s.snapshot();
}

/// `wgmma` on warp columns: the 64-row accumulator on 8 warps takes the 4 × 2 grid and the
/// product runs as `wgmma` (each warpgroup `m64n64k16` on its half of the columns); on sm_80 the
/// grid is the `mma.sync` one.
#[test]
fn short_products_run_as_wgmma_on_warp_columns() {
    let s = staged("wgmma_columns.tile");
    let k = &s.kernel.lir;
    let mma = lir_find(k, "local_mma");
    assert_eq!(mma.len(), 1, "{}", s.name);
    let lir::OpKind::LocalMma { wgmma, .. } = k.body.op(mma[0]).kind else { unreachable!() };
    assert!(wgmma, "{}: the product is not a wgmma", s.name);
    assert_eq!(layout(k, k.body.result(mma[0])), Some(Layout::Mma { warps_m: 4, warps_n: 2 }), "{}", s.name);
    let issues = s.kernel.ptx.matches("wgmma.mma_async.sync.aligned.m64n64k16").count();
    assert_eq!(issues, 4, "{}: one m64n64k16 per k-step of 16 (a 64-deep step)", s.name);
    let s80 = staged_on("wgmma_columns.tile", Target::Sm80);
    let k80 = &s80.kernel.lir;
    let m80 = lir_find(k80, "local_mma");
    assert_eq!(layout(k80, k80.body.result(m80[0])), Some(Layout::Mma { warps_m: 2, warps_n: 4 }), "{}: the mma.sync grid", s80.name);
    s.snapshot();
}

/// The lowering of a loop's register `dot` operands (sm_90a): `kt`, `a` of the first product and
/// `b` of the third, is stored once before the loop and both read that buffer; `pt`, stored each
/// iteration for the third product, has a buffer of its own (not the scratch region, offset 0,
/// where the window reduction stages its tile), so the body has two barriers (the pipeline's and
/// the one publishing `pt`'s store) before the staging store, with none between the third
/// product and it.
/// `#[blocks_per_sm]` reaches every IR level (its code: `golden::blocks_per_sm_bounds_the_registers`).
#[test]
fn blocks_per_sm_is_kept_by_every_ir_level() {
    let s = staged("blocks_per_sm.tile");
    assert_eq!(s.sema.blocks_per_sm, Some(4), "{}: the tile IR's text keeps it", s.name);
    assert_eq!(s.kernel.tir.blocks_per_sm, Some(4));
    assert_eq!(s.kernel.lir.blocks_per_sm, Some(4));
    assert_eq!(s.kernel.mir.blocks_per_sm, Some(4), "{}: the machine IR keeps it", s.name);
    assert!(s.dump_of("lower").contains("threads(128) shared("), "{}", s.name);
    assert!(s.dump_of("lower").lines().nth(1).is_some_and(|l| l.ends_with("blocks_per_sm(4)")), "{}: {}", s.name, s.dump_of("lower"));
}

#[test]
fn a_loop_operand_is_stored_once_for_every_product_reading_it() {
    let s = staged("shared_operand.tile");
    let k = &s.kernel.lir;
    let top = block_mnemonics(k, k.body.entry);
    let lp = lir_find(k, "for")[0];
    let at_loop = k.body.block(k.body.entry).ops.iter().position(|&o| o == lp).unwrap_or_else(|| unreachable!());
    let before = top[..at_loop].iter().filter(|n| *n == "local_store").count();
    assert_eq!(before, 1, "{}: kt is stored once before the loop: {top:?}", s.name);
    let body = k.body.op(lp).regions[0];
    let ops = &k.body.block(body).ops;
    let names = block_mnemonics(k, body);
    assert!(!names.iter().any(|n| n == "local_load"), "{}: kt is not converted in the loop: {names:?}", s.name);
    let mmas: Vec<&lir::OpKind> = ops
        .iter()
        .map(|&o| &k.body.op(o).kind)
        .filter(|o| matches!(o, lir::OpKind::LocalMma { .. } | lir::OpKind::RegMma { .. }))
        .collect();
    let [lir::OpKind::LocalMma { b_offset: first, b_trans: true, .. }, _, lir::OpKind::RegMma { b_offset: third, b_trans: false, .. }] =
        mmas[..]
    else {
        panic!("{}: q · ktᵀ from shared memory, then p · kt with p in registers: {mmas:?}", s.name)
    };
    assert_eq!(first, third, "{}: both products read kt's one buffer", s.name);
    s.snapshot();
}

/// `warp_specialize`: the producer region issues every pipelined copy, the consumers' loop none;
/// each pipeline's refill barrier became a release; the registers move to the consumers; both
/// emitters' PTX splits the block and ptxas takes it without ignoring `setmaxnreg`.
#[test]
fn warp_specialize_hands_the_copies_to_a_producer_warpgroup() {
    let s = staged("warp_specialize.tile");
    let k = &s.kernel.lir;
    assert!(s.sema.warp_specialize, "{}: the tile IR's text keeps the attribute", s.name);
    assert_eq!(k.ws, Some(lir::WarpSpec { producer_regs: Some(40), consumer_regs: Some(232), pingpong: true }), "{}", s.name);
    lir::verify_kernel(k).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    let entry = block_mnemonics(k, k.body.entry);
    assert_eq!(entry[..3], ["ws_init", "ws_init", "ws_split"], "{}: {entry:?}", s.name);
    let split = lir_find(k, "ws_split")[0];
    let region = k.body.op(split).regions[0];
    let producer_loop = k.body.block(region).ops.iter().copied().find(|&o| mnemonic(k, o) == "for").expect("the producer's loop");
    let inner = block_mnemonics(k, k.body.op(producer_loop).regions[0]);
    let wanted = ["mbar_wait", "tma_copy", "tma_arrive", "mbar_wait", "tma_copy", "tma_arrive"];
    in_order(&inner, &wanted).unwrap_or_else(|e| panic!("{}: the producer's loop: {e}", s.name));
    let mut producer_ops = 0;
    k.body.walk(region, &mut |o| {
        if let lir::OpKind::TmaCopy { producer, .. } | lir::OpKind::TmaArrive { producer, .. } = k.body.op(o).kind {
            assert!(producer, "{}: a copy of the producer region is not marked as the producer's", s.name);
            producer_ops += 1;
        }
    });
    assert_eq!(producer_ops, 4, "{}: two copies and two arrivals", s.name);
    let (_, body) = the_loop(k);
    let consumer = block_mnemonics(k, body);
    for gone in ["tma_copy", "tma_arrive", "barrier", "async_commit", "async_wait"] {
        assert!(!consumer.iter().any(|m| m == gone), "{}: the consumers' loop still has `{gone}`: {consumer:?}", s.name);
    }
    // `q`, copied once before the loop by the consumers, keeps its wait.
    assert_eq!(consumer.iter().filter(|m| *m == "tma_wait").count(), 1, "{}: {consumer:?}", s.name);
    // Rotated by `overlap_dots`: this iteration's `s` and the previous one's product with `v`
    // are issued back to back, and `s` is waited for with the other still in flight.
    let wanted = ["mbar_wait", "mbar_arrive", "local_mma", "mbar_wait", "mbar_arrive", "reg_mma", "wgmma_wait", "wgmma_wait"];
    in_order(&consumer, &wanted).unwrap_or_else(|e| panic!("{}: the consumers' loop: {e}", s.name));
    // Two consumer warpgroups take turns: both products in one turn (a wait before the first, a
    // pass after the second), warpgroup 1 handing the first turn to 0 before the loop, 0 taking
    // the last one after it.
    let at = |m: &str| consumer.iter().position(|x| x == m).unwrap_or_else(|| panic!("{}: no `{m}`: {consumer:?}", s.name));
    assert_eq!(consumer.iter().filter(|m| m.starts_with("turn.")).count(), 2, "{}: {consumer:?}", s.name);
    assert_eq!(
        (consumer[at("local_mma") - 1].as_str(), consumer[at("reg_mma") + 1].as_str()),
        ("turn.wait", "turn.pass"),
        "{}: {consumer:?}",
        s.name
    );
    in_order(&entry, &["turn.start", "for", "turn.end"]).unwrap_or_else(|e| panic!("{}: the entry block: {e}", s.name));
    assert_eq!(s.kernel.meta.threads, 384, "{}: the launch adds the producer warpgroup", s.name);
    // The verifier holds the roles apart: planted faults fail it.
    let mut bad = k.clone();
    bad.ws = None;
    assert!(lir::verify_kernel(&bad).is_err_and(|e| e.contains("ws_split")), "{}: a split without its roles", s.name);
    let mut bad = k.clone();
    let bar = bad.body.create_op(lir::OpKind::Barrier, vec![], vec![], vec![], tessera_compiler::Span::default());
    bad.body.blocks[region.index()].ops.insert(0, bar);
    let e = lir::verify_kernel(&bad).expect_err("a barrier in the producer's region");
    assert!(e.contains("`barrier` in the producer's region"), "{}: {e}", s.name);

    for codegen in [tessera_compiler::Codegen::Ptx, tessera_compiler::Codegen::default()] {
        let src = Source::new(
            "tests/passes/warp_specialize.tile",
            std::fs::read_to_string(root().join("tests/passes/warp_specialize.tile")).expect("read"),
        );
        let m = tessera_compiler::compile(&src, &Options { codegen, ..opts(&[]) }).unwrap_or_else(|d| panic!("{}", d.render()));
        let ptx = &m.kernels[0].ptx;
        for text in [
            "setmaxnreg.dec.sync.aligned.u32 40;",
            "setmaxnreg.inc.sync.aligned.u32 232;",
            "bar.sync 1, 256;",
            "bar.arrive 3, 256;",
            "bar.sync 3, 256;",
            ".maxntid 384, 1, 1",
            ".minnctapersm 1",
        ] {
            assert!(ptx.contains(text), "{}: the {} PTX has no `{text}`", s.name, codegen.name());
        }
        if let Some(p) = crate::common::ptxas() {
            let log = crate::common::run_ptxas(&p, "ws", ptx, Target::Sm90a);
            assert!(!log.contains("C7508") && !log.contains("setmaxnreg' ignored"), "{}: ptxas ignored setmaxnreg:\n{log}", s.name);
        }
    }
    s.snapshot();
}

/// Without the attribute (or where the loop has no bulk tensor copies) the pass changes nothing.
#[test]
fn warp_specialize_leaves_other_kernels_alone() {
    let s = staged("pipeline_gemm.tile");
    assert!(s.kernel.lir.ws.is_none() && !s.kernel.lir.warp_specialize, "{}", s.name);
    assert!(s.snap.contains("after warp_specialize: unchanged"), "{}: the pass dumped a change", s.name);
}

/// A kernel that may `return` before or inside its loop is left alone: the producer would wait
/// for stages the consumers never release.
#[test]
fn warp_specialize_declines_a_kernel_that_may_return() {
    let text = std::fs::read_to_string(root().join("tests/passes/warp_specialize.tile")).expect("read");
    let early = text.replace("    let qt = q.load", "    if m0 >= M {\n        return;\n    }\n    let qt = q.load");
    assert_ne!(early, text);
    for (src, applied) in [(text, true), (early, false)] {
        let m = tessera_compiler::compile(&Source::new("ws.tile", src), &opts(&[])).unwrap_or_else(|d| panic!("{}", d.render()));
        assert_eq!(m.kernels[0].lir.ws.is_some(), applied);
    }
}
