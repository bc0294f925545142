//! The debugging built-ins: `print("fmt", x…)` and `assert(cond, "msg")`.

use super::expr::{Lowerer, R, broadcast_shapes, not_value, shape_str};
use crate::DType;
use crate::diag::{Diagnostic, Span};
use crate::syntax::ast;
use crate::tir::{FormatPiece, OpKind, parse_format};

impl Lowerer<'_> {
    /// `print("fmt", x…)`: each `{}` of the format is replaced by the next value; tiles (broadcast
    /// to one shape) print one line per element.
    pub(super) fn print(&mut self, args: &[ast::Expr], span: Span) -> R<super::scope::Val> {
        let Some(first) = args.first() else {
            return Err(Diagnostic::error("`print` takes a format string and the values it shows")
                .with_label(span, "no format")
                .note("write `print(\"x = {}\", x)`"));
        };
        let ast::ExprKind::Str(fmt) = &first.kind else {
            return Err(Diagnostic::error("the first argument of `print` must be a format string")
                .with_label(first.span, "not a string")
                .note("write `print(\"x = {}\", x)`"));
        };
        let pieces = parse_format(fmt)
            .map_err(|m| Diagnostic::error(format!("invalid format string: {m}")).with_label(first.span, "in this format"))?;
        let holes = pieces.iter().filter(|p| **p == FormatPiece::Value).count();
        let values = &args[1..];
        if holes != values.len() {
            return Err(Diagnostic::error(format!(
                "the format has {holes} `{{}}` but {} {} given",
                values.len(),
                if values.len() == 1 { "value is" } else { "values are" }
            ))
            .with_label(first.span, format!("{holes} placeholders"))
            .note("each `{}` shows the next value; write `{{` and `}}` for braces"));
        }
        let mut vals = vec![];
        let mut shape: Vec<i64> = vec![];
        for e in values {
            let v = self.lower_expr(e)?;
            let x = self.materialize(v, e.span)?;
            let t = self.ty(x);
            if t.is_tensor() {
                return Err(Diagnostic::error("`print` shows scalars and tiles, not tensors")
                    .with_label(e.span, "a tensor")
                    .note("load a tile first: `t.load([offsets], [shape])`"));
            }
            shape = broadcast_shapes(&shape, t.shape()).ok_or_else(|| {
                Diagnostic::error(format!("shape mismatch in `print`: {} and {} do not broadcast", shape_str(&shape), shape_str(t.shape())))
                    .with_label(e.span, format!("shape {}", shape_str(t.shape())))
            })?;
            vals.push((x, e.span));
        }
        let mut ops = vec![];
        for (x, s) in vals {
            ops.push(self.broadcast_to(x, &shape, s)?);
        }
        self.emit0(OpKind::Print(fmt.clone()), ops, span);
        Ok(super::scope::Val::Unit)
    }

    /// `assert(cond, "msg")` (the message defaults to the condition's text).
    pub(super) fn assert(&mut self, args: &[ast::Expr], span: Span) -> R<super::scope::Val> {
        if args.is_empty() || args.len() > 2 {
            return Err(Diagnostic::error(format!("`assert` takes 1 or 2 arguments, got {}", args.len()))
                .with_label(span, "wrong argument count")
                .note("write `assert(cond, \"message\")`"));
        }
        let message = match args.get(1).map(|e| (&e.kind, e.span)) {
            Some((ast::ExprKind::Str(m), _)) => m.clone(),
            Some((_, s)) => {
                return Err(Diagnostic::error("the message of `assert` must be a string")
                    .with_label(s, "not a string")
                    .note("write `assert(cond, \"message\")`"));
            }
            None => super::host::render(&args[0]),
        };
        let v = self.lower_expr(&args[0])?;
        let t = self.type_of(&v).ok_or_else(|| not_value(&v, args[0].span))?;
        if t.is_tensor() || t.dtype() != DType::Bool {
            return Err(Diagnostic::error(format!("`assert` needs a bool condition, found {t}"))
                .with_label(args[0].span, format!("this is {t}"))
                .note("compare it: `x > 0`"));
        }
        let c = self.materialize(v, args[0].span)?;
        self.emit0(OpKind::Assert(message), vec![c], span);
        Ok(super::scope::Val::Unit)
    }
}
