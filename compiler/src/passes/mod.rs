//! Tile-IR passes, run in one explicit pipeline. Each pass is a plain function over a kernel;
//! the verifier runs after each one when `Options::verify` is on (tests and debug builds).

mod dce;
mod dot_acc;
mod overlap_dots;
mod uniform_mask;

use crate::diag::Diagnostic;
use crate::{Options, tir};

/// A tile-IR pass: a name (for `--dump-after` and error messages), a function, and the target
/// it is for (`None`: every target).
pub struct Pass {
    pub name: &'static str,
    pub run: fn(&mut tir::Kernel),
    pub only: Option<crate::Target>,
}

/// The pipeline, in order.
/// - `dot_acc` turns `x + dot(a, b)` into `dot(a, b, x)` (accumulating in `x`'s registers).
/// - `uniform_mask` skips a `where` whose mask of index-range comparisons holds for the whole
///   tile (`if all(mask) { a } else { where(mask, a, b) }`): loops compute masks only at edges.
/// - `overlap_dots` (`#[warp_specialize]` kernels, sm_90a: their asynchronous `wgmma`) rotates a loop whose second `dot` reads the
///   first's result and accumulates into a carried value (attention) so that iteration `i`'s
///   second `dot` is issued in iteration `i + 1`, right after its first: the tensor cores
///   compute it while the threads compute the softmax.
/// - `dce` removes what sema emitted but nothing uses (dimension symbols, folded constants, the
///   products `dot_acc` replaced).
pub const PIPELINE: &[Pass] = &[
    Pass { name: "dot_acc", run: dot_acc::run, only: None },
    Pass { name: "uniform_mask", run: uniform_mask::run, only: None },
    Pass { name: "overlap_dots", run: overlap_dots::run, only: Some(crate::Target::Sm90a) },
    Pass { name: "dce", run: dce::run, only: None },
];

/// The ops reachable from the kernel's entry, in program order, and how many operands of them
/// name each value (indexed by value).
fn live_ops_and_uses(k: &tir::Kernel) -> (Vec<crate::ir::Op>, Vec<u32>) {
    let mut ops = vec![];
    k.body.walk(k.body.entry, &mut |op| ops.push(op));
    let mut uses = vec![0u32; k.body.values.len()];
    for &op in &ops {
        for &o in &k.body.op(op).operands {
            uses[o.index()] += 1;
        }
    }
    (ops, uses)
}

/// Runs the tile-IR pass pipeline on one kernel.
pub fn run_pipeline(k: &mut tir::Kernel, opts: &Options) -> Result<(), Diagnostic> {
    run_pipeline_observed(k, opts, &mut |_, _| {})
}

/// Runs the pipeline and shows the kernel to `after` after sema (stage `"sema"`) and after each
/// pass (by its name), before that stage's verifier runs: what `--dump-after`/`--dump-all` print.
pub fn run_pipeline_observed(
    k: &mut tir::Kernel,
    opts: &Options,
    after: &mut dyn FnMut(&'static str, &tir::Kernel),
) -> Result<(), Diagnostic> {
    after("sema", k);
    if opts.verify {
        tir::verify_kernel(k).map_err(|e| Diagnostic::ice("sema", e))?;
    }
    for p in PIPELINE {
        // A pass for another target is shown as having changed nothing: every target lists
        // the same stages.
        if p.only.is_none_or(|t| t == opts.target) {
            (p.run)(k);
        }
        after(p.name, k);
        if opts.verify {
            tir::verify_kernel(k).map_err(|e| Diagnostic::ice(p.name, e))?;
        }
    }
    Ok(())
}
