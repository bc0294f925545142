//! Shape and scan built-ins: `join(a, b)`, `split(x)`, `x.argmax(axis)`, `x.argmin(axis)`,
//! `x.cumsum(axis)`, `x.cummax(axis)`.

use super::expr::{Lowerer, R};
use super::scope::Val;
use crate::DType;
use crate::diag::{Diagnostic, Span};
use crate::syntax::ast;
use crate::tir::{ArgOp, OpKind, ScanOp, Type};

impl Lowerer<'_> {
    /// `join(a, b)` (a new last axis of 2) and `split(x)` (its inverse, a pair).
    pub(super) fn join_split(&mut self, name: &str, args: &[ast::Expr], span: Span) -> R<Val> {
        let want = if name == "join" { 2 } else { 1 };
        if args.len() != want {
            return Err(Diagnostic::error(format!(
                "`{name}` takes {want} argument{}, got {}",
                if want == 1 { "" } else { "s" },
                args.len()
            ))
            .with_label(span, "wrong argument count"));
        }
        if name == "join" {
            let a = self.lower_expr(&args[0])?;
            let b = self.lower_expr(&args[1])?;
            for (v, e) in [(&a, &args[0]), (&b, &args[1])] {
                if self.type_of(v).is_some_and(|t| t.is_tensor()) {
                    return Err(Diagnostic::error("`join` takes tiles, found a tensor").with_label(e.span, "a tensor"));
                }
            }
            let (x, y) = self.unify(a, b, args[0].span, args[1].span)?;
            let t = self.ty(x);
            let mut shape = t.shape().to_vec();
            if shape.len() >= 4 {
                return Err(
                    Diagnostic::error(format!("`join` of {t} would have rank 5; tiles have rank at most 4")).with_label(span, "here")
                );
            }
            shape.push(2);
            return Ok(Val::V(self.emit(OpKind::Join, vec![x, y], Type::tile(t.dtype(), shape), span)));
        }
        let v = self.lower_expr(&args[0])?;
        let x = self.materialize(v, args[0].span)?;
        let t = self.ty(x);
        if t.is_tensor() || t.shape().last() != Some(&2) {
            return Err(Diagnostic::error(format!("`split` needs a tile whose last dimension is 2, found {t}"))
                .with_label(args[0].span, format!("this is {t}"))
                .note("`split` undoes `join(a, b)`; reshape first, e.g. `reshape(x, [n, 2])`"));
        }
        let half = Type::tile(t.dtype(), t.shape()[..t.shape().len() - 1].to_vec());
        let op = self.body.append(self.block, OpKind::Split, vec![x], vec![half.clone(), half], vec![], span);
        let rs = self.body.op(op).results.clone();
        Ok(Val::Tuple(rs.into_iter().map(Val::V).collect()))
    }

    /// `x.argmax(axis)`, `x.argmin(axis)`, `x.cumsum(axis)`, `x.cumprod(axis)`, `x.cummax(axis)`,
    /// `x.cummin(axis)`.
    pub(super) fn scan_method(&mut self, m: &str, x: crate::ir::Value, recv: &ast::Expr, args: &[ast::Expr], span: Span) -> R<Val> {
        let arg_reduce = matches!(m, "argmax" | "argmin");
        if args.len() != 1 && !(arg_reduce && args.len() == 2) {
            let what = if arg_reduce { "1 or 2 arguments (the axis, keepdim)" } else { "1 argument (the axis)" };
            return Err(Diagnostic::error(format!("`.{m}` takes {what}, got {}", args.len())).with_label(span, "wrong argument count"));
        }
        let t = self.ty(x);
        if t.shape().is_empty() {
            return Err(
                Diagnostic::error(format!("`.{m}` works along an axis of a tile; this is a scalar")).with_label(recv.span, "a scalar")
            );
        }
        let axis = self.axis_arg(&args[0], t.shape().len())?;
        if t.dtype() == DType::Bool {
            return Err(Diagnostic::error(format!("`.{m}` is not defined on bool tiles"))
                .with_label(recv.span, "bool")
                .note("cast to i32 first: `(x as i32)`"));
        }
        let (kind, ty) = match m {
            "argmax" | "argmin" => {
                let mut s = t.shape().to_vec();
                s.remove(axis as usize);
                let op = if m == "argmax" { ArgOp::Max } else { ArgOp::Min };
                (OpKind::ArgReduce(op, axis), Type::tile(DType::I32, s))
            }
            "cumsum" => (OpKind::Scan(ScanOp::Sum, axis), t.clone()),
            "cumprod" => (OpKind::Scan(ScanOp::Prod, axis), t.clone()),
            "cummin" => (OpKind::Scan(ScanOp::Min, axis), t.clone()),
            _ => (OpKind::Scan(ScanOp::Max, axis), t.clone()),
        };
        let keep = self.keepdim_arg(args.get(1))?;
        let r = self.emit(kind, vec![x], ty, span);
        Ok(Val::V(if keep { self.keep_axis(r, axis, span) } else { r }))
    }
}
