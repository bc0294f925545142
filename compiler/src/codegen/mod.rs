//! Thread IR → LLVM IR → PTX.

use crate::diag::Diagnostic;
use crate::{Target, lir};

pub fn emit(_k: &lir::Kernel, _t: Target) -> Result<(String, String), Diagnostic> {
    Err(Diagnostic::ice("codegen", "not written yet"))
}
