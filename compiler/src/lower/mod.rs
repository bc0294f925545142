//! Tile IR → thread IR.

use crate::diag::Diagnostic;
use crate::{Options, lir, tir};

pub fn lower_kernel(k: &tir::Kernel, _opts: &Options) -> Result<lir::Kernel, Diagnostic> {
    Ok(lir::Kernel { name: k.name.clone(), threads: 128, shared_bytes: 0 })
}
