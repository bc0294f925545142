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

    /// `x.scan(axis, f)`: the inclusive scan with a combine `fn` of two scalars of `x`'s dtype,
    /// inlined into the op's region on its two arguments (elementwise ops only).
    pub(super) fn scan_fn_method(&mut self, x: crate::ir::Value, recv: &ast::Expr, args: &[ast::Expr], span: Span) -> R<Val> {
        let usage = "`x.scan(axis, f)` with `fn f(acc, x) { … }` combining two elements";
        if args.len() != 2 {
            return Err(Diagnostic::error(format!("`.scan` takes 2 arguments (the axis, a combine `fn`), got {}", args.len()))
                .with_label(span, "wrong argument count")
                .note(usage));
        }
        let t = self.ty(x);
        if t.shape().is_empty() {
            return Err(Diagnostic::error("`.scan` works along an axis of a tile; this is a scalar").with_label(recv.span, "a scalar"));
        }
        let axis = self.axis_arg(&args[0], t.shape().len())?;
        if t.dtype() == DType::Bool {
            return Err(Diagnostic::error("`.scan` is not defined on bool tiles")
                .with_label(recv.span, "bool")
                .note("cast to i32 first: `(x as i32)`"));
        }
        let fns = self.fns;
        let decl = match &args[1].kind {
            ast::ExprKind::Name(f) => fns.get(&f.name),
            _ => None,
        };
        let Some(decl) = decl else {
            return Err(Diagnostic::error("the second argument of `.scan` must name a `fn`")
                .with_label(args[1].span, "not the name of a `fn`")
                .note(usage));
        };
        if decl.params.len() != 2 {
            return Err(Diagnostic::error(format!(
                "`{}` takes {} arguments; a combine function takes 2",
                decl.name.name,
                decl.params.len()
            ))
            .with_label(args[1].span, "not a combine function")
            .with_secondary(decl.name.span, "defined here"));
        }
        // The combine function's body, inlined into a region of its own on two scalars.
        let elem = Type::scalar(t.dtype());
        let region = self.body.new_block(&[elem.clone(), elem.clone()]);
        let [a, b] = self.body.block(region).args[..] else {
            return Err(Diagnostic::ice("sema", "a region of two arguments without them"));
        };
        let saved = self.block;
        self.block = region;
        let at = args[1].span;
        let combined = self.inline_vals(decl, vec![(Val::V(a), at), (Val::V(b), at)], span).and_then(|r| {
            self.coerce(r, &elem, at).map_err(|d| d.note(format!("a combine function of {} elements returns `{}`", t.dtype(), t.dtype())))
        });
        if let Ok(y) = combined {
            self.emit0(OpKind::Yield, vec![y], at);
        }
        self.block = saved;
        combined?;
        let bad = self
            .body
            .block(region)
            .ops
            .iter()
            .map(|&o| self.body.op(o))
            .find(|d| !(d.kind.is_elementwise() || d.kind == OpKind::Yield) || d.results.iter().any(|&r| !self.body.ty(r).is_scalar()));
        if let Some(d) = bad {
            return Err(Diagnostic::error(format!("`{}` cannot be a scan's combine function", decl.name.name))
                .with_label(at, "used as a combine function here")
                .with_secondary(decl.name.span, "defined here")
                .note(format!(
                    "a combine function may only compute on its two scalars (arithmetic, comparisons, `where`, `min`/`max`, math functions, casts); this one has `{}`",
                    d.kind.mnemonic()
                )));
        }
        self.check_size(&OpKind::ScanFn(axis), &[x], &t, span);
        let op = self.body.append(self.block, OpKind::ScanFn(axis), vec![x], vec![t], vec![region], span);
        Ok(Val::V(self.body.result(op)))
    }
}
