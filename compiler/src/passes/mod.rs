//! Tile-IR passes, run in one explicit pipeline.

use crate::diag::Diagnostic;
use crate::{Options, tir};

/// Runs the tile-IR pass pipeline on one kernel.
pub fn run_pipeline(k: &mut tir::Kernel, opts: &Options) -> Result<(), Diagnostic> {
    if opts.verify {
        tir::verify_kernel(k).map_err(|e| Diagnostic::ice("sema", e))?;
    }
    Ok(())
}
