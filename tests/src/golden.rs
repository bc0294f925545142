//! Golden tests: every example compiles (verifiers on after every pass), its tile IR, thread IR
//! and PTX are snapshotted (sm_90a; sm_80 too for the tensor-core examples), its tile IR prints and parses back to the same text, and its PTX
//! assembles with ptxas for sm_90a and sm_80 (sm_90a register and spill counts snapshotted).
//! The tensor-core examples' PTX is checked for the matrix instructions (`mma.sync`,
//! `ldmatrix`, `cp.async`), and ptxas must report no spills at the default configs.

use crate::common::{examples, opts, ptxas, run_ptxas};
use std::sync::OnceLock;
use tessera_compiler::{Codegen, DType, Options, Target, tir};

#[test]
fn examples_snapshots_and_roundtrip() {
    let all = examples(Target::Sm90a);
    assert!(all.len() >= 3, "examples are missing");
    for ex in all {
        let stem = &ex.stem;
        for k in &ex.kernels {
            let tir_text = tir::print_kernel(&k.tir);
            let parsed = tir::parse_kernel(&tir_text).unwrap_or_else(|e| panic!("{stem}: tile IR does not parse back: {e}\n{tir_text}"));
            assert_eq!(tir::print_kernel(&parsed), tir_text, "{stem}: tile IR round trip changed the text");
            tir::verify_kernel(&parsed).unwrap_or_else(|e| panic!("{stem}: parsed tile IR fails the verifier: {e}"));
            insta::assert_snapshot!(format!("{stem}.{}.tir", k.meta.name), tir_text);
            insta::assert_snapshot!(format!("{stem}.{}.lir", k.meta.name), tessera_compiler::lir::print_kernel(&k.lir));
            insta::assert_snapshot!(format!("{stem}.{}.ptx", k.meta.name), k.ptx);
        }
    }
}

/// The sm_80 PTX of the examples whose sm_90a code uses `wgmma`: their `ldmatrix` fragment
/// addressing, swizzled `cp.async` stores and `mma.sync` register map appear nowhere else in a
/// snapshot.
#[test]
fn sm80_tensor_core_snapshots() {
    let mut seen = 0;
    for ex in examples(Target::Sm80) {
        for k in &ex.kernels {
            if k.ptx.contains("ldmatrix") && ["matmul", "attention", "na2d"].contains(&ex.stem.as_str()) {
                insta::assert_snapshot!(format!("{}.{}.sm_80.ptx", ex.stem, k.meta.name), k.ptx);
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 3, "the tensor-core examples no longer use ldmatrix on sm_80");
}

/// `ptxas -v` logs of every example kernel at its defaults for `target`, `(example, kernel,
/// log)`, made once per test binary; `None` without ptxas (outside CI). Panics if ptxas rejects
/// a PTX.
fn ptxas_logs(target: Target) -> Option<&'static [(String, String, String)]> {
    type Logs = OnceLock<Option<Vec<(String, String, String)>>>;
    static SM90A: Logs = OnceLock::new();
    static SM80: Logs = OnceLock::new();
    let cell = match target {
        Target::Sm90a => &SM90A,
        Target::Sm80 => &SM80,
    };
    cell.get_or_init(|| {
        let ptxas = ptxas()?;
        let mut out = vec![];
        for ex in examples(target) {
            for k in &ex.kernels {
                out.push((ex.stem.clone(), k.meta.name.clone(), run_ptxas(&ptxas, &k.meta.name, &k.ptx, target)));
            }
        }
        Some(out)
    })
    .as_deref()
}

/// A kernel asking for `#[blocks_per_sm(N)]` says so in its PTX through either emitter, and
/// ptxas then gives each thread at most the registers that let N blocks fit (here fewer than the
/// same kernel takes without the attribute).
#[test]
fn blocks_per_sm_bounds_the_registers() {
    let path = crate::common::root().join("tests/passes/blocks_per_sm.tile");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let build = |text: &str, codegen: Codegen| {
        let ks = tessera_compiler::compile(
            &tessera_compiler::Source::new("blocks_per_sm.tile", text.to_string()),
            &Options { codegen, ..opts(&[]) },
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        ks.kernels.into_iter().next().unwrap_or_else(|| unreachable!())
    };
    // The runtime's reading of ptxas's report (`tessera build --spills`).
    let registers = |ptxas: &std::path::Path, k: &tessera_compiler::CompiledKernel| -> u32 {
        let r = tessera_runtime::ptxas::resources(ptxas, &k.ptx, &k.meta).unwrap_or_else(|e| panic!("{e}"));
        u32::try_from(r.registers).unwrap_or_else(|_| panic!("{} registers", r.registers))
    };
    let unbounded = text.replace("#[blocks_per_sm(4)]", "");
    assert_ne!(unbounded, text, "the test kernel asks for 4 blocks per multiprocessor");
    for codegen in [Codegen::Llvm, Codegen::Ptx] {
        let k = build(&text, codegen);
        assert_eq!(k.tir.blocks_per_sm, Some(4));
        assert!(k.ptx.contains(".minnctapersm 4"), "{codegen:?}: no `.minnctapersm 4`");
        let Some(ptxas) = ptxas() else { continue };
        let regs = registers(&ptxas, &k);
        assert!(regs * k.meta.threads * 4 <= 65536, "{codegen:?}: {regs} registers × {} threads × 4 blocks", k.meta.threads);
        let free = build(&unbounded, codegen);
        assert!(!free.ptx.contains(".minnctapersm"), "{codegen:?}");
        let free_regs = registers(&ptxas, &free);
        assert!(free_regs > regs, "{codegen:?}: {free_regs} registers without the bound, {regs} with it");
    }
}

/// Every PTX the examples produce (both targets) assembles; the sm_90a resource use is recorded.
#[test]
fn examples_assemble_with_ptxas() {
    let (Some(sm90a), Some(_)) = (ptxas_logs(Target::Sm90a), ptxas_logs(Target::Sm80)) else { return };
    let mut report = String::new();
    for (_, kernel, log) in sm90a {
        // Lines of a device function the kernel calls (the slow window copies) name it.
        let mut function = kernel.clone();
        for line in log.lines() {
            let line = line.trim_start_matches("ptxas info    : ").trim();
            if let Some(f) = line.strip_prefix("Function properties for ") {
                function = f.trim().to_string();
            } else if line.contains("Used") || line.contains("spill") {
                let who = if function == *kernel { kernel.clone() } else { format!("{kernel} (.func {function})") };
                report.push_str(&format!("{who}: {line}\n"));
            }
        }
    }
    insta::assert_snapshot!("ptxas_resources", report);
}

/// The window loads behind a `dot` operand: `x.load(…)` is a plain window, an N-D window load
/// reshaped to 2-D (`reshape(x.load([…], [WX, WY, D]), [WX * WY, D])`) a reshaped one; either
/// may be under `trans`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Window {
    Plain,
    Reshaped,
}

/// The dtype of the first `dot` of 16-bit float operands in `k` (the ones the tensor cores
/// run), with the kinds of window load among the operands of all such dots.
fn tensor_core_dots(k: &tir::Kernel) -> Option<(DType, Vec<Window>)> {
    use tessera_compiler::ir::ValueDef;
    let body = &k.body;
    let def = |v: tessera_compiler::ir::Value| match body.values[v.index()].def {
        ValueDef::Result(op, _) => Some(body.op(op)),
        ValueDef::Arg(..) => None,
    };
    let window = |v| {
        let v = match def(v) {
            Some(p) if p.kind == tir::OpKind::Permute(vec![1, 0]) => p.operands[0],
            _ => v,
        };
        match def(v)? {
            d if d.kind == tir::OpKind::Load => Some(Window::Plain),
            d if d.kind == tir::OpKind::Reshape && def(d.operands[0]).is_some_and(|l| l.kind == tir::OpKind::Load) => {
                Some(Window::Reshaped)
            }
            _ => None,
        }
    };
    let mut found: Option<(DType, Vec<Window>)> = None;
    body.walk(body.entry, &mut |op| {
        let d = body.op(op);
        if d.kind != tir::OpKind::Dot {
            return;
        }
        let dt = body.ty(d.operands[0]).dtype();
        if !matches!(dt, DType::F16 | DType::BF16) {
            return;
        }
        let f = found.get_or_insert((dt, vec![]));
        f.1.extend(d.operands[..2].iter().filter_map(|&o| window(o)));
    });
    found
}

/// Every example with a `dot` of f16/bf16 operands runs it on the tensor cores at its default
/// config. On sm_80 its PTX has `mma.sync.m16n8k16` of that dtype and `ldmatrix`; on sm_90a the
/// canonical programs run Hopper's `wgmma.mma_async` (with its fences, commit and wait) and the
/// others at least one of the two. Where a dot operand is a window load, there are 16-byte
/// `cp.async` copies, their commits and waits, or on sm_90a bulk tensor copies on mbarriers (the
/// linear and neighborhood-attention examples always; NA-3D's six-axis tensors through maps of
/// five).
#[test]
fn tensor_core_examples_use_matrix_instructions() {
    let hopper_canonical = ["matmul", "linear", "attention", "na1d", "na2d"];
    for target in [Target::Sm80, Target::Sm90a] {
        let mut checked = vec![];
        for ex in examples(target) {
            for k in &ex.kernels {
                let Some((dt, windows)) = tensor_core_dots(&k.tir) else { continue };
                let name = format!("{}.{} ({target:?})", ex.stem, k.meta.name);
                let mma = format!("mma.sync.aligned.m16n8k16.row.col.f32.{dt}.{dt}.f32");
                let wgmma = format!("k16.f32.{dt}.{dt}");
                let uses_wgmma = k.ptx.contains("wgmma.mma_async.sync.aligned.m64n") && k.ptx.contains(&wgmma);
                let mut wanted = match target {
                    Target::Sm80 => vec![mma.as_str(), "ldmatrix.sync.aligned"],
                    Target::Sm90a if uses_wgmma || hopper_canonical.contains(&ex.stem.as_str()) => vec![
                        wgmma.as_str(),
                        "wgmma.fence.sync.aligned",
                        "wgmma.commit_group.sync.aligned",
                        "wgmma.wait_group.sync.aligned",
                        "fence.proxy.async.shared::cta",
                    ],
                    Target::Sm90a => vec![mma.as_str(), "ldmatrix.sync.aligned"],
                };
                assert!(target == Target::Sm90a || !k.ptx.contains("wgmma"), "{name}: wgmma in code for sm_80");
                let copied = windows.contains(&Window::Plain) || windows.contains(&Window::Reshaped);
                // Pipelined copies on sm_90a go through the copy engine on mbarriers (tensor maps
                // that only bulk-store an epilogue are not that).
                assert!(target == Target::Sm90a || k.meta.tensor_maps.is_empty(), "{name}: tensor maps in code for sm_80");
                let tma = k.ptx.contains("cp.async.bulk.tensor") && k.ptx.contains(".shared::cluster.global.");
                if tma {
                    wanted.extend([
                        "cp.async.bulk.tensor.",
                        "mbarrier.init.shared::cta.b64",
                        "mbarrier.arrive.expect_tx",
                        "mbarrier.try_wait.parity",
                    ]);
                } else if copied {
                    wanted.extend(["cp.async.cg.shared.global", "cp.async.commit_group", "cp.async.wait_group"]);
                }
                if target == Target::Sm90a && ["linear", "na1d", "na2d", "na3d", "na3d_bwd"].contains(&ex.stem.as_str()) {
                    assert!(tma, "{name}: its dot operands are not copied through tensor maps");
                }
                // `[B, H, Z, X, Y, D]`: six axes, the two the views fix folded into one of the
                // map's five (`abi::TensorMap::folded`).
                if target == Target::Sm90a && ex.stem.starts_with("na3d") {
                    assert!(
                        k.meta.tensor_maps.iter().all(|m| m.boxes.len() == 6 && m.folded() == 2 && m.map_rank() == 5),
                        "{name}: {:?}",
                        k.meta.tensor_maps
                    );
                    assert!(k.ptx.contains("cp.async.bulk.tensor.5d."), "{name}: no five-axis bulk tensor copy");
                }
                for w in wanted {
                    assert!(k.ptx.contains(w), "{name}: its PTX has no `{w}` (a {dt} dot; window-load operands: {windows:?})");
                }
                checked.push((ex.stem.as_str(), windows.first().copied()));
            }
        }
        // The detection above found the canonical tensor-core examples (it must not pass vacuously).
        let (plain, reshaped) = (Some(Window::Plain), Some(Window::Reshaped));
        for want in [("matmul", plain), ("linear", plain), ("attention", plain), ("na1d", plain), ("na2d", reshaped)] {
            assert!(checked.contains(&want), "{want:?} missing from the tensor-core examples found for {target:?}: {checked:?}");
        }
    }
}

/// i8 dots run as `mma.m16n8k32` (s8 → s32); f32 dots run as `mma.m16n8k8` on tf32 operands
/// (rounded with `cvt.rna`) only in a `tf32` build, FMAs otherwise; `wgmma` takes neither.
#[test]
fn wide_dots_use_matrix_instructions() {
    let path = crate::common::root().join("tests/ops/dot_wide.tile");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let s8 = "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32";
    let tf32 = "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32";
    for (allow, target) in [(false, Target::Sm90a), (true, Target::Sm90a), (true, Target::Sm80)] {
        let opts = tessera_compiler::Options { tf32: allow, target, ..crate::common::opts(&[]) };
        let m = tessera_compiler::compile(&tessera_compiler::Source::new("tests/ops/dot_wide.tile", text.clone()), &opts)
            .unwrap_or_else(|d| panic!("dot_wide does not compile:\n{}", d.render()));
        let ptx = &m.kernels[0].ptx;
        assert!(ptx.contains(s8), "{target:?}: no `{s8}` for the i8 dots");
        assert_eq!(ptx.contains(tf32), allow, "{target:?}, tf32 {allow}: `{tf32}` present: {}", ptx.contains(tf32));
        assert_eq!(ptx.contains("cvt.rna.tf32.f32"), allow, "{target:?}: tf32 operands are rounded exactly when tf32 is on");
        assert!(!ptx.contains("wgmma"), "{target:?}: no wgmma for 8- and 32-bit operands");
    }
}

/// The spill store and spill load bytes of a `ptxas -v` log, summed over its functions.
fn spill_bytes(log: &str) -> Option<(u64, u64)> {
    let number_before = |line: &str, what: &str| -> Option<u64> {
        let head = &line[..line.find(what)?];
        head.trim_end().rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let mut total: Option<(u64, u64)> = None;
    for line in log.lines().filter(|l| l.contains("bytes spill stores")) {
        let (s, l) = (number_before(line, " bytes spill stores")?, number_before(line, " bytes spill loads")?);
        let (ts, tl) = total.unwrap_or((0, 0));
        total = Some((ts + s, tl + l));
    }
    total
}

/// ptxas reports no spill stores or loads for any example at its default config (sm_90a). (na2d
/// spilled about 20 KB per thread until its reshaped 3-D window loads were fused into `cp.async`
/// copies: they no longer occupy registers.)
#[test]
fn examples_do_not_spill_at_default_config() {
    let Some(logs) = ptxas_logs(Target::Sm90a) else { return };
    let mut failures = vec![];
    for (stem, kernel, log) in logs {
        let (stores, loads) = spill_bytes(log).unwrap_or_else(|| panic!("{kernel}: no spill line in the ptxas log:\n{log}"));
        if stores + loads > 0 {
            failures.push(format!("{stem}.{kernel}: {stores} bytes of spill stores, {loads} bytes of spill loads"));
        }
    }
    assert!(failures.is_empty(), "ptxas -v spills at the default configs (sm_90a):\n{}", failures.join("\n"));
}

/// ptxas runs every example's `wgmma`s asynchronously: it serialises them (warning C7514) when
/// another instruction reads the accumulators while they are in flight, which a pipelined loop
/// that waits for the previous iteration's group only (`defer_wgmma_wait`) makes easy to do.
#[test]
fn wgmma_is_not_serialised() {
    let Some(logs) = ptxas_logs(Target::Sm90a) else { return };
    for (stem, kernel, log) in logs {
        assert!(!log.contains("C7514"), "{stem}.{kernel}: ptxas serialises the wgmma pipeline:\n{log}");
    }
}

/// The `llvm` emitter: every example at its defaults goes through LLVM for both targets, its
/// PTX assembles, does not spill, and has the same matrix instructions as the `ptx` emitter's
/// (`wgmma` on sm_90a, `mma.sync` and `ldmatrix` on sm_80, `cp.async` on both).
#[test]
fn llvm_emitter_examples_assemble() {
    let Some(ptxas) = ptxas() else { return };
    for target in [Target::Sm90a, Target::Sm80] {
        for ex in examples(target) {
            let kernels = crate::common::compile_example(
                &format!("{}.tile", ex.stem),
                &tessera_compiler::Options { target, codegen: tessera_compiler::Codegen::Llvm, ..crate::common::opts(&[]) },
            );
            for (k, direct) in kernels.iter().zip(&ex.kernels) {
                assert!(k.ptx.contains(&format!(".entry {}(", k.meta.name)), "{}: no entry in the LLVM PTX", ex.stem);
                let log = run_ptxas(&ptxas, &format!("{}-llvm", k.meta.name), &k.ptx, target);
                if target == Target::Sm90a {
                    assert_eq!(spill_bytes(&log), Some((0, 0)), "{}: the LLVM build spills:\n{log}", ex.stem);
                    assert!(!log.contains("C7514"), "{}: ptxas serialises the LLVM build's wgmma pipeline:\n{log}", ex.stem);
                }
                for m in ["wgmma.mma_async", "mma.sync.aligned", "ldmatrix.sync.aligned", "cp.async.cg.shared.global", "bar.sync"] {
                    assert_eq!(
                        k.ptx.contains(m),
                        direct.ptx.contains(m),
                        "{} ({}): `{m}` in one emitter's PTX but not the other's",
                        ex.stem,
                        target.name()
                    );
                }
            }
        }
    }
}

/// Every example built with `--warp-specialize true` (verifiers on, both emitters): the kernels
/// the pass takes verify, assemble with `setmaxnreg` kept (no C7508) and no spill; those it
/// leaves are the `--warp-specialize false` build's PTX. Which examples it takes is pinned here
/// (`attention` is specialised by its own attribute too).
#[test]
fn warp_specialized_examples_verify_and_assemble() {
    let ptxas = ptxas();
    let mut taken = vec![];
    for ex in examples(Target::Sm90a) {
        let off =
            tessera_compiler::Options { codegen: tessera_compiler::Codegen::Ptx, warp_specialize: Some(false), ..crate::common::opts(&[]) };
        let plain_kernels = crate::common::compile_example(&format!("{}.tile", ex.stem), &off);
        for codegen in [tessera_compiler::Codegen::Ptx, tessera_compiler::Codegen::Llvm] {
            let o = tessera_compiler::Options { codegen, warp_specialize: Some(true), ..crate::common::opts(&[]) };
            let kernels = crate::common::compile_example(&format!("{}.tile", ex.stem), &o);
            for (k, plain) in kernels.iter().zip(&plain_kernels) {
                let Some(ws) = k.lir.ws else {
                    if codegen == tessera_compiler::Codegen::Ptx {
                        assert_eq!(k.ptx, plain.ptx, "{}: not specialised, yet its PTX changed", k.meta.name);
                    }
                    continue;
                };
                if codegen == tessera_compiler::Codegen::Ptx {
                    taken.push(format!("{}{}", k.meta.name, if ws.pingpong { " (pingpong)" } else { "" }));
                }
                assert_eq!(k.meta.threads, plain.meta.threads + 128, "{}", k.meta.name);
                if let Some(p) = &ptxas {
                    let log = run_ptxas(p, &format!("{}-ws-{}", k.meta.name, codegen.name()), &k.ptx, Target::Sm90a);
                    assert!(!log.contains("C7508"), "{} ({}): ptxas ignored setmaxnreg:\n{log}", k.meta.name, codegen.name());
                    assert_eq!(spill_bytes(&log), Some((0, 0)), "{} ({}): spills:\n{log}", k.meta.name, codegen.name());
                }
            }
        }
    }
    let want = [
        "attention (pingpong)",
        "attention_fwd",
        "attention_bwd_dkdv",
        "attention_bwd_dq (pingpong)",
        "linear",
        "linear_fwd",
        "linear_bwd_dx",
        "linear_bwd_dw",
        "matmul",
        "matmul_persistent",
        "matmul_splitk",
        "na1d_bwd_dkdv",
        "na2d_fwd",
        "na2d_bwd_dq",
        "na2d_bwd_dkdv",
        "na2d_stream",
        "na3d",
        "na3d_fwd",
        "na3d_bwd_dq",
        "na3d_bwd_dkdv",
    ];
    let mut sorted = taken.clone();
    sorted.sort();
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(sorted, want, "the kernels `warp_specialize` takes at the examples' defaults");
}

#[test]
fn spill_bytes_parses_ptxas_logs() {
    let log = "ptxas info    : Compiling entry function 'na2d' for 'sm_90a'\n\
               ptxas info    : Function properties for na2d\n    \
               2904 bytes stack frame, 2488 bytes spill stores, 2564 bytes spill loads\n\
               ptxas info    : Used 255 registers, used 1 barriers, 2904 bytes cumulative stack size\n";
    assert_eq!(spill_bytes(log), Some((2488, 2564)));
    assert_eq!(spill_bytes("    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"), Some((0, 0)));
    assert_eq!(spill_bytes("ptxas info    : Used 34 registers"), None);
}
