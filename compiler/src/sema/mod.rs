//! Semantic analysis: names, types, shapes, constant evaluation; AST → tile IR.

use crate::diag::{Diagnostic, SourceMap};
use crate::syntax::ast;
use crate::{Options, tir};

/// Checks a parsed file and produces the tile IR of each kernel, specialised on its consts.
pub fn check_file(_file: &ast::File, _sources: &mut SourceMap, _opts: &Options) -> Result<Vec<tir::Kernel>, Vec<Diagnostic>> {
    Err(vec![Diagnostic::error("sema not written yet")])
}
