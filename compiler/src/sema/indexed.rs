//! Indexed memory: `t.gather(…)`, `t.scatter(…)`, `t.atomic_add/max/min(…)` and scalar element
//! reads `t[i, j]`. Index tiles, values and masks broadcast to one shape, numpy style.

use super::expr::{Lowerer, R, broadcast_shapes, not_value, shape_str};
use super::scope::{KTy, Konst, Val};
use crate::DType;
use crate::diag::{Diagnostic, Span};
use crate::ir::Value;
use crate::syntax::ast;
use crate::tir::{AtomicOp, OpKind, Type};

/// What an indexed write does.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Write {
    Scatter,
    Atomic(AtomicOp),
}

impl Write {
    fn name(self) -> &'static str {
        match self {
            Write::Scatter => "scatter",
            Write::Atomic(AtomicOp::Add) => "atomic_add",
            Write::Atomic(AtomicOp::Max) => "atomic_max",
            Write::Atomic(AtomicOp::Min) => "atomic_min",
        }
    }
}

fn arity(name: &str, args: &[ast::Expr], range: std::ops::RangeInclusive<usize>, usage: &str, span: Span) -> R<()> {
    if range.contains(&args.len()) {
        return Ok(());
    }
    let (lo, hi) = (*range.start(), *range.end());
    Err(Diagnostic::error(format!("`{name}` takes {lo} to {hi} arguments, got {}", args.len()))
        .with_label(span, "wrong argument count")
        .note(format!("write `{usage}`")))
}

impl Lowerer<'_> {
    /// The index list of an indexed access: one integer scalar or tile per dimension of the
    /// tensor, each with its span. Literals become i32; other integer types must be cast.
    fn index_list(&mut self, e: &ast::Expr, rank: usize, tname: &str, method: &str) -> R<Vec<(Value, Span)>> {
        let ast::ExprKind::List(items) = &e.kind else {
            return Err(Diagnostic::error(format!("`{method}` takes a list of index tiles, one per dimension of `{tname}`"))
                .with_label(e.span, "not a list")
                .note(format!("write `{tname}.{method}([i0, i1, …], …)` with i32 tiles or scalars")));
        };
        if items.len() != rank {
            return Err(Diagnostic::error(format!(
                "wrong number of indices: `{tname}` has rank {rank}, got {} index {}",
                items.len(),
                if items.len() == 1 { "tile" } else { "tiles" }
            ))
            .with_label(e.span, format!("expected {rank}")));
        }
        let mut out = vec![];
        for it in items {
            let v = self.lower_expr(it)?;
            let x = match v {
                v @ Val::K(Konst::Int(_), KTy::Weak(_)) => self.coerce(v, &Type::scalar(DType::I32), it.span)?,
                v => self.materialize(v, it.span)?,
            };
            let t = self.ty(x);
            if t.is_tensor() || t.dtype() != DType::I32 {
                let mut d = Diagnostic::error(format!("indices are i32, found {t}")).with_label(it.span, format!("this is {t}"));
                if t.dtype().is_int() {
                    d = d.note("convert it: `(…) as i32`");
                }
                return Err(d);
            }
            out.push((x, it.span));
        }
        Ok(out)
    }

    /// An optional mask argument: a bool scalar or tile.
    pub(super) fn mask_arg(&mut self, e: Option<&ast::Expr>) -> R<Option<(Value, Span)>> {
        let Some(e) = e else { return Ok(None) };
        let v = self.lower_expr(e)?;
        let t = self.type_of(&v).ok_or_else(|| not_value(&v, e.span))?;
        if t.is_tensor() || t.dtype() != DType::Bool {
            return Err(Diagnostic::error(format!("the mask must be bool, found {t}"))
                .with_label(e.span, format!("this is {t}"))
                .note("write a comparison such as `e < end`"));
        }
        Ok(Some((self.materialize(v, e.span)?, e.span)))
    }

    /// The common shape of the parts of an indexed access, or an error naming two that differ.
    fn common_shape(&self, parts: &[(Value, Span)], method: &str) -> R<Vec<i64>> {
        let mut shape: Vec<i64> = vec![];
        let mut from: Option<Span> = None;
        for &(v, s) in parts {
            let vs = self.ty(v).shape().to_vec();
            match broadcast_shapes(&shape, &vs) {
                Some(b) => shape = b,
                None => {
                    let mut d = Diagnostic::error(format!(
                        "shape mismatch in `{method}`: {} and {} do not broadcast",
                        shape_str(&shape),
                        shape_str(&vs)
                    ))
                    .with_label(s, format!("shape {}", shape_str(&vs)))
                    .note("indices, values and the mask broadcast to one shape; add axes with `i[:, None]`");
                    if let Some(f) = from {
                        d = d.with_secondary(f, format!("shape {}", shape_str(&shape)));
                    }
                    return Err(d);
                }
            }
            if from.is_none() || self.ty(v).shape().len() >= shape.len() {
                from = Some(s);
            }
        }
        if shape.len() > 4 {
            return Err(Diagnostic::error(format!("`{method}` would make a tile of rank {}; tiles have rank at most 4", shape.len()))
                .with_label(parts.last().map(|p| p.1).unwrap_or_default(), "here"));
        }
        Ok(shape)
    }

    /// `t.gather([i0, …])`, `t.gather(idx, mask)`, `t.gather(idx, mask, pad)`.
    pub(super) fn gather(&mut self, t: Value, recv: &ast::Expr, args: &[ast::Expr], span: Span) -> R<Val> {
        arity("gather", args, 1..=3, "t.gather([i0, …], mask, pad)", span)?;
        let Type::Tensor { dtype, rank, .. } = self.ty(t) else { return Err(Diagnostic::ice("sema", "gather on a non-tensor")) };
        let tname = super::host::render(recv);
        let idx = self.index_list(&args[0], rank, &tname, "gather")?;
        let mask = self.mask_arg(args.get(1))?;
        let pad = match args.get(2) {
            Some(e) => {
                let v = self.lower_expr(e)?;
                self.coerce(v, &Type::scalar(dtype), e.span).map_err(|d| d.note(format!("the pad is a {dtype} scalar")))?
            }
            None => self.zero(dtype, span)?,
        };
        let mut parts = idx.clone();
        parts.extend(mask);
        let shape = self.common_shape(&parts, "gather")?;
        let mut ops = vec![t];
        for (x, s) in idx {
            ops.push(self.broadcast_to(x, &shape, s)?);
        }
        ops.push(self.full_mask(mask, &shape, span)?);
        ops.push(pad);
        Ok(Val::V(self.emit(OpKind::Gather, ops, Type::tile(dtype, shape), span)))
    }

    /// `t.scatter(idx, values[, mask])` and the atomics.
    pub(super) fn indexed_write(&mut self, w: Write, t: Value, recv: &ast::Expr, args: &[ast::Expr], span: Span) -> R<Val> {
        let name = w.name();
        arity(name, args, 2..=3, &format!("t.{name}([i0, …], values, mask)"), span)?;
        let Type::Tensor { dtype, rank, mutable } = self.ty(t) else { return Err(Diagnostic::ice("sema", "scatter on a non-tensor")) };
        let tname = super::host::render(recv);
        if !mutable {
            return Err(Diagnostic::error(format!("cannot write to `{tname}` with `{name}`: it is a read-only tensor"))
                .with_label(recv.span, "declared `&`")
                .note("declare the parameter `&mut` to write to it"));
        }
        if let Write::Atomic(a) = w
            && !crate::tir::verify::atomic_dtype_ok(a, dtype)
        {
            return Err(Diagnostic::error(format!("`{name}` is not supported on {dtype} tensors"))
                .with_label(recv.span, format!("{} {dtype} tensor", if dtype.name().starts_with(['i', 'u']) { "an" } else { "a" }))
                .note("atomics support i32, u32, i64, u64, f32 and f64 tensors"));
        }
        let idx = self.index_list(&args[0], rank, &tname, name)?;
        let v = self.lower_expr(&args[1])?;
        let vt = self.type_of(&v).ok_or_else(|| not_value(&v, args[1].span))?;
        if vt.is_tensor() {
            return Err(Diagnostic::error(format!("`{name}` writes a tile, found a tensor"))
                .with_label(args[1].span, "a tensor")
                .note("load a tile first: `t.load([offsets], [shape])`"));
        }
        if !matches!(v, Val::K(_, KTy::Weak(_))) && vt.dtype() != dtype {
            return Err(Diagnostic::error(format!("dtype mismatch: `{tname}` holds {dtype}, the values are {}", vt.dtype()))
                .with_label(args[1].span, format!("this is {}", vt.dtype()))
                .note(format!("convert them: `(…) as {dtype}`")));
        }
        // A literal takes the tensor's dtype; a tile keeps its shape (it broadcasts below).
        let x = match v {
            v @ Val::K(..) => self.coerce(v, &Type::scalar(dtype), args[1].span)?,
            v => self.materialize(v, args[1].span)?,
        };
        let mask = self.mask_arg(args.get(2))?;
        let mut parts = idx.clone();
        parts.push((x, args[1].span));
        parts.extend(mask);
        let shape = self.common_shape(&parts, name)?;
        let mut ops = vec![t];
        for (i, s) in idx {
            ops.push(self.broadcast_to(i, &shape, s)?);
        }
        ops.push(self.broadcast_to(x, &shape, args[1].span)?);
        ops.push(self.full_mask(mask, &shape, span)?);
        let kind = match w {
            Write::Scatter => OpKind::Scatter,
            Write::Atomic(a) => OpKind::Atomic(a),
        };
        self.emit0(kind, ops, span);
        Ok(Val::Unit)
    }

    /// The mask broadcast to `shape`, or all true.
    pub(super) fn full_mask(&mut self, mask: Option<(Value, Span)>, shape: &[i64], span: Span) -> R<Value> {
        match mask {
            Some((m, s)) => self.broadcast_to(m, shape, s),
            None => self.konst(Konst::Bool(true), &Type::tile(DType::Bool, shape.to_vec()), span),
        }
    }

    /// The zero of `dtype` (false for bool).
    pub(super) fn zero(&mut self, dtype: DType, span: Span) -> R<Value> {
        self.konst(if dtype == DType::Bool { Konst::Bool(false) } else { Konst::Int(0) }, &Type::scalar(dtype), span)
    }

    /// `t[i, j]` with every dimension indexed: one element, 0 (false) when out of range. A load
    /// of a `[1, …, 1]` tile (through a view when the rank exceeds a tile's), reshaped.
    pub(super) fn scalar_read(&mut self, t: Value, idx: Vec<Value>, span: Span) -> R<Val> {
        let Type::Tensor { dtype, rank, mutable } = self.ty(t) else { return Err(Diagnostic::ice("sema", "element read of a non-tensor")) };
        let (base, offs) = if rank > 4 {
            let (lead, last) = idx.split_at(rank - 1);
            let mut ops = vec![t];
            ops.extend(lead);
            (self.emit(OpKind::View, ops, Type::Tensor { dtype, rank: 1, mutable }, span), last.to_vec())
        } else {
            (t, idx)
        };
        let pad = self.zero(dtype, span)?;
        let mut ops = vec![base];
        let n = offs.len();
        ops.extend(offs);
        ops.push(pad);
        let one = self.emit(OpKind::Load, ops, Type::tile(dtype, vec![1; n]), span);
        Ok(Val::V(self.emit(OpKind::Reshape, vec![one], Type::scalar(dtype), span)))
    }
}
