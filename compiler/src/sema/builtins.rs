//! The built-in functions and methods of the language: their type rules and their tile-IR form.

use super::expr::{Lowerer, R, check_dim, not_value, poison, shape_str};
use super::indexed::Write;
use super::konst::{self, KTy};
use super::scope::{Konst, Val};
use crate::DType;
use crate::diag::{Diagnostic, Span};
use crate::ir::Value;
use crate::syntax::ast::{self, BinOp};
use crate::tir::{AtomicOp, BinaryOp, OpKind, ReduceOp, Type, UnaryOp};

/// Every built-in function name (for "did you mean").
pub(crate) const BUILTINS: &[&str] = &[
    "program_id",
    "num_programs",
    "arange",
    "full",
    "where",
    "max",
    "min",
    "clamp",
    "exp",
    "exp2",
    "log",
    "log2",
    "sqrt",
    "rsqrt",
    "abs",
    "sin",
    "cos",
    "tanh",
    "sigmoid",
    "erf",
    "floor",
    "ceil",
    "fma",
    "dot",
    "trans",
    "permute",
    "reshape",
    "broadcast",
    "join",
    "split",
    "print",
    "assert",
];

/// The methods of tensors (for "did you mean").
const TENSOR_METHODS: &[&str] =
    &["load", "store", "store_add", "store_max", "store_min", "gather", "scatter", "atomic_add", "atomic_max", "atomic_min"];

/// The methods of tiles.
const TILE_METHODS: &[&str] = &["sum", "max", "min", "argmax", "argmin", "cumsum", "cumprod", "cummax", "cummin", "scan"];

fn math_op(name: &str) -> Option<UnaryOp> {
    Some(match name {
        "exp" => UnaryOp::Exp,
        "exp2" => UnaryOp::Exp2,
        "log" => UnaryOp::Log,
        "log2" => UnaryOp::Log2,
        "sqrt" => UnaryOp::Sqrt,
        "rsqrt" => UnaryOp::Rsqrt,
        "abs" => UnaryOp::Abs,
        "sin" => UnaryOp::Sin,
        "cos" => UnaryOp::Cos,
        "tanh" => UnaryOp::Tanh,
        "sigmoid" => UnaryOp::Sigmoid,
        "erf" => UnaryOp::Erf,
        "floor" => UnaryOp::Floor,
        "ceil" => UnaryOp::Ceil,
        _ => return None,
    })
}

fn arity(name: &str, args: &[ast::Expr], want: &[usize], span: Span) -> R<()> {
    if want.contains(&args.len()) {
        return Ok(());
    }
    let w: Vec<String> = want.iter().map(|n| n.to_string()).collect();
    Err(Diagnostic::error(format!("`{name}` takes {} arguments, got {}", w.join(" or "), args.len()))
        .with_label(span, "wrong argument count"))
}

impl Lowerer<'_> {
    /// An axis of a tile of `rank`: `0 .. rank`, or counted from the end, `-rank .. 0` (`-1` is
    /// the last).
    pub(super) fn axis_arg(&mut self, e: &ast::Expr, rank: usize) -> R<u32> {
        let a = self.const_int(e, "an axis")?;
        let n = rank.max(1) as i64;
        if a < -n || a >= n {
            return Err(Diagnostic::error(format!("axis {a} is out of range for rank {rank}"))
                .with_label(e.span, "bad axis")
                .note(format!("axes are 0 to {} (or -{n} to -1 from the end)", n - 1)));
        }
        Ok(if a < 0 { (a + n) as u32 } else { a as u32 })
    }

    /// The `keepdim` argument of a reduction (`x.sum(1, true)`): a constant bool.
    pub(super) fn keepdim_arg(&mut self, e: Option<&ast::Expr>) -> R<bool> {
        let Some(e) = e else { return Ok(false) };
        match self.lower_expr(e)? {
            Val::K(Konst::Bool(b), _) => Ok(b),
            _ => Err(Diagnostic::error("`keepdim` is a constant bool")
                .with_label(e.span, "not `true` or `false`")
                .note("`x.sum(1, true)` keeps the reduced axis as an axis of 1")),
        }
    }

    /// `x` with an axis of 1 inserted at `axis` (a reduction's `keepdim`).
    pub(super) fn keep_axis(&mut self, x: Value, axis: u32, span: Span) -> Value {
        let t = self.ty(x);
        let mut shape = t.shape().to_vec();
        shape.insert(axis as usize, 1);
        self.emit(OpKind::ExpandDims(axis), vec![x], Type::tile(t.dtype(), shape), span)
    }

    fn tile_arg(&mut self, e: &ast::Expr) -> R<Value> {
        let v = self.lower_expr(e)?;
        let x = self.materialize(v, e.span)?;
        if self.ty(x).is_tensor() {
            return Err(Diagnostic::error("expected a tile, found a tensor")
                .with_label(e.span, "a tensor")
                .note("load a tile first: `t.load([offsets], [shape])`"));
        }
        Ok(x)
    }

    fn shape_list(&mut self, e: &ast::Expr) -> R<Vec<i64>> {
        match &e.kind {
            ast::ExprKind::List(ds) => self.tile_dims(ds),
            _ => Err(Diagnostic::error("expected a shape list like `[64, 64]`").with_label(e.span, "not a list")),
        }
    }

    /// A built-in call, or `None` if `f` is not a built-in.
    pub(super) fn builtin(&mut self, f: &ast::Ident, args: &[ast::Expr], span: Span) -> Option<R<Val>> {
        let name = f.name.as_str();
        if !BUILTINS.contains(&name) {
            return None;
        }
        Some(self.builtin_inner(name, args, span))
    }

    fn builtin_inner(&mut self, name: &str, args: &[ast::Expr], span: Span) -> R<Val> {
        if let Some(u) = math_op(name) {
            arity(name, args, &[1], span)?;
            let v = self.lower_expr(&args[0])?;
            let v = match v {
                Val::K(k @ (Konst::Int(_) | Konst::Float(_)), t @ KTy::Weak(_)) => {
                    Val::K(super::expr::settle(k, t, DType::F32, args[0].span)?, KTy::Of(DType::F32))
                }
                v => v,
            };
            let x = self.materialize(v, args[0].span)?;
            let t = self.ty(x);
            if !(t.dtype().is_float() || u == UnaryOp::Abs && t.dtype().is_int()) {
                return Err(Diagnostic::error(format!("`{name}` needs a float argument, found {t}"))
                    .with_label(args[0].span, format!("this is {t}"))
                    .note("cast it: `x as f32`"));
            }
            return Ok(Val::V(self.emit(OpKind::Unary(u), vec![x], t, span)));
        }
        match name {
            "program_id" | "num_programs" => {
                arity(name, args, &[1], span)?;
                let a = self.axis_arg(&args[0], 3)?;
                let k = if name == "program_id" { OpKind::ProgramId(a) } else { OpKind::NumPrograms(a) };
                Ok(Val::V(self.emit(k, vec![], Type::scalar(DType::I32), span)))
            }
            "arange" => {
                arity(name, args, &[1], span)?;
                let n = self.const_int(&args[0], "the length of `arange`")?;
                check_dim(n, args[0].span)?;
                Ok(Val::V(self.emit(OpKind::Arange(n), vec![], Type::tile(DType::I32, vec![n]), span)))
            }
            "full" => {
                arity(name, args, &[2], span)?;
                let shape = self.shape_list(&args[0])?;
                let v = self.lower_expr(&args[1])?;
                let d = self.type_of(&v).ok_or_else(|| not_value(&v, args[1].span))?.dtype();
                Ok(Val::V(self.coerce(v, &Type::tile(d, shape), args[1].span)?))
            }
            "where" => {
                arity(name, args, &[3], span)?;
                let c = self.lower_expr(&args[0])?;
                let a = self.lower_expr(&args[1])?;
                let b = self.lower_expr(&args[2])?;
                let (x, y) = self.unify(a, b, args[1].span, args[2].span)?;
                let ct = self.type_of(&c).ok_or_else(|| not_value(&c, args[0].span))?;
                if ct.dtype() != DType::Bool {
                    return Err(Diagnostic::error(format!("the condition of `where` must be bool, found {ct}"))
                        .with_label(args[0].span, format!("this is {ct}")));
                }
                let shape = super::expr::broadcast_shapes(ct.shape(), self.ty(x).shape()).ok_or_else(|| {
                    Diagnostic::error(format!(
                        "shape mismatch: condition {} and values {} do not broadcast",
                        shape_str(ct.shape()),
                        shape_str(self.ty(x).shape())
                    ))
                    .with_label(span, "here")
                })?;
                let c = self.coerce(c, &Type::tile(DType::Bool, shape.clone()), args[0].span)?;
                let t = self.ty(x);
                let x = self.broadcast_to(x, &shape, args[1].span)?;
                let y = self.broadcast_to(y, &shape, args[2].span)?;
                Ok(Val::V(self.emit(OpKind::Select, vec![c, x, y], Type::tile(t.dtype(), shape), span)))
            }
            "max" | "min" => {
                arity(name, args, &[2], span)?;
                let a = self.lower_expr(&args[0])?;
                let b = self.lower_expr(&args[1])?;
                let op = if name == "max" { BinaryOp::Max } else { BinaryOp::Min };
                self.minmax(op, a, b, args[0].span, args[1].span, span)
            }
            "clamp" => {
                arity(name, args, &[3], span)?;
                let x = self.lower_expr(&args[0])?;
                let lo = self.lower_expr(&args[1])?;
                let hi = self.lower_expr(&args[2])?;
                let m = self.minmax(BinaryOp::Max, x, lo, args[0].span, args[1].span, span)?;
                self.minmax(BinaryOp::Min, m, hi, args[0].span, args[2].span, span)
            }
            "fma" => {
                arity(name, args, &[3], span)?;
                let a = self.lower_expr(&args[0])?;
                let b = self.lower_expr(&args[1])?;
                let c = self.lower_expr(&args[2])?;
                let (sa, sb, sc) = (args[0].span, args[1].span, args[2].span);
                // Constants fold as a product and a sum, integers compute so too; floats are
                // rounded once (one `fma` op on operands of one type and shape).
                if [&a, &b, &c].iter().all(|v| matches!(v, Val::K(..))) {
                    let p = self.binary(BinOp::Mul, a, b, sa, sb, span)?;
                    return self.binary(BinOp::Add, p, c, span, sc, span);
                }
                let (a1, c1) = self.unify(a, c, sa, sc)?;
                let (b1, c2) = self.unify(b, Val::V(c1), sb, sc)?;
                let (a2, b2) = self.unify(Val::V(a1), Val::V(b1), sa, sb)?;
                let t = self.ty(a2);
                if !t.dtype().is_float() || self.ty(b2) != t || self.ty(c2) != t {
                    let p = self.binary(BinOp::Mul, Val::V(a2), Val::V(b2), sa, sb, span)?;
                    return self.binary(BinOp::Add, p, Val::V(c2), span, sc, span);
                }
                Ok(Val::V(self.emit(OpKind::Fma, vec![a2, b2, c2], t, span)))
            }
            "dot" => {
                arity(name, args, &[2, 3], span)?;
                let a = self.tile_arg(&args[0])?;
                let b = self.tile_arg(&args[1])?;
                let (ta, tb) = (self.ty(a), self.ty(b));
                if ta.shape().len() != 2 || tb.shape().len() != 2 {
                    let (bad, t) = if ta.shape().len() != 2 { (args[0].span, &ta) } else { (args[1].span, &tb) };
                    return Err(Diagnostic::error(format!("`dot` takes 2-D tiles, found {t}")).with_label(bad, "not 2-D"));
                }
                if ta.dtype() != tb.dtype() {
                    return Err(Diagnostic::error(format!("dtype mismatch in `dot`: {} and {}", ta.dtype(), tb.dtype()))
                        .with_label(args[0].span, format!("this is {}", ta.dtype()))
                        .with_secondary(args[1].span, format!("this is {}", tb.dtype()))
                        .note(format!("cast one operand: `(…) as {}`", ta.dtype())));
                }
                if !matches!(ta.dtype(), DType::F16 | DType::BF16 | DType::F32 | DType::I8) {
                    return Err(Diagnostic::error(format!("`dot` takes f16, bf16, f32 or i8 tiles, found {}", ta.dtype()))
                        .with_label(args[0].span, "unsupported dtype"));
                }
                let (m, k, k2, n) = (ta.shape()[0], ta.shape()[1], tb.shape()[0], tb.shape()[1]);
                if k != k2 {
                    return Err(Diagnostic::error(format!(
                        "`dot` inner dimensions differ: {} · {}",
                        shape_str(ta.shape()),
                        shape_str(tb.shape())
                    ))
                    .with_label(args[0].span, format!("{k} columns"))
                    .with_secondary(args[1].span, format!("{k2} rows"))
                    .note("a: [M, K] and b: [K, N] must share K; `trans(b)` swaps b's dimensions"));
                }
                let acc_d = if ta.dtype() == DType::I8 { DType::I32 } else { DType::F32 };
                let acc_t = Type::tile(acc_d, vec![m, n]);
                let acc = match args.get(2) {
                    Some(e) => {
                        let v = self.lower_expr(e)?;
                        if let Some(t) = self.type_of(&v)
                            && !matches!(v, Val::K(_, KTy::Weak(_)))
                            && t != acc_t
                        {
                            return Err(Diagnostic::error(format!("the accumulator of `dot` must be {acc_t}, found {t}"))
                                .with_label(e.span, format!("this is {t}")));
                        }
                        self.coerce(v, &acc_t, e.span)?
                    }
                    None => self.konst(Konst::Int(0), &acc_t, span)?,
                };
                Ok(Val::V(self.emit(OpKind::Dot, vec![a, b, acc], acc_t, span)))
            }
            "trans" => {
                arity(name, args, &[1], span)?;
                let x = self.tile_arg(&args[0])?;
                let t = self.ty(x);
                if t.shape().len() != 2 {
                    return Err(Diagnostic::error(format!("`trans` takes a 2-D tile, found {t}"))
                        .with_label(args[0].span, "not 2-D")
                        .note("use `permute(x, [..])` for other ranks"));
                }
                let s = t.shape();
                Ok(Val::V(self.emit(OpKind::Permute(vec![1, 0]), vec![x], Type::tile(t.dtype(), vec![s[1], s[0]]), span)))
            }
            "permute" => {
                arity(name, args, &[2], span)?;
                let x = self.tile_arg(&args[0])?;
                let t = self.ty(x);
                let ast::ExprKind::List(ps) = &args[1].kind else {
                    return Err(Diagnostic::error("`permute` takes a list of axes, e.g. `[1, 0]`").with_label(args[1].span, "not a list"));
                };
                let mut perm = vec![];
                for p in ps {
                    perm.push(self.axis_arg(p, t.shape().len())?);
                }
                let mut sorted = perm.clone();
                sorted.sort();
                if sorted != (0..t.shape().len() as u32).collect::<Vec<_>>() {
                    return Err(Diagnostic::error(format!("`permute` needs each axis of the rank-{} tile once", t.shape().len()))
                        .with_label(args[1].span, "not a permutation"));
                }
                let shape = perm.iter().map(|&p| t.shape()[p as usize]).collect();
                Ok(Val::V(self.emit(OpKind::Permute(perm), vec![x], Type::tile(t.dtype(), shape), span)))
            }
            "reshape" => {
                arity(name, args, &[2], span)?;
                let x = self.tile_arg(&args[0])?;
                let t = self.ty(x);
                let shape = self.shape_list(&args[1])?;
                let n = crate::tir::numel(&shape);
                if n != t.numel() {
                    return Err(Diagnostic::error(format!(
                        "cannot reshape {t} ({} elements) to {} ({n} elements)",
                        t.numel(),
                        shape_str(&shape)
                    ))
                    .with_label(args[1].span, "element count differs"));
                }
                Ok(Val::V(self.emit(OpKind::Reshape, vec![x], Type::tile(t.dtype(), shape), span)))
            }
            "broadcast" => {
                arity(name, args, &[2], span)?;
                let v = self.lower_expr(&args[0])?;
                let shape = self.shape_list(&args[1])?;
                let d = self.type_of(&v).ok_or_else(|| not_value(&v, args[0].span))?.dtype();
                Ok(Val::V(self.coerce(v, &Type::tile(d, shape), args[0].span)?))
            }
            "print" => self.print(args, span),
            "assert" => self.assert(args, span),
            "join" | "split" => self.join_split(name, args, span),
            _ => Err(Diagnostic::ice("sema", format!("built-in `{name}` has no rule"))),
        }
    }

    fn minmax(&mut self, op: BinaryOp, a: Val, b: Val, sa: Span, sb: Span, span: Span) -> R<Val> {
        if let (Val::K(x, tx), Val::K(y, ty)) = (&a, &b)
            && let Some(k) = fold_minmax(op == BinaryOp::Max, (*x, *tx), (*y, *ty), span)?
        {
            return Ok(k);
        }
        let (x, y) = self.unify(a, b, sa, sb)?;
        let t = self.ty(x);
        Ok(Val::V(self.emit(OpKind::Binary(op), vec![x, y], t, span)))
    }

    pub(super) fn method(&mut self, recv: &ast::Expr, name: &ast::Ident, args: &[ast::Expr], span: Span) -> R<Val> {
        let r = self.lower_expr(recv)?;
        match (&r, name.name.as_str()) {
            (Val::Range(lo, hi, None), "step_by") => {
                arity("step_by", args, &[1], span)?;
                let s = self.lower_expr(&args[0])?;
                Ok(Val::Range(lo.clone(), hi.clone(), Some(Box::new(s))))
            }
            (Val::V(x), m) if self.ty(*x).is_tensor() => {
                let x = *x;
                match m {
                    "load" => self.load(x, recv, args, span),
                    "store" => self.store(None, x, recv, args, span),
                    "store_add" => self.store(Some(AtomicOp::Add), x, recv, args, span),
                    "store_max" => self.store(Some(AtomicOp::Max), x, recv, args, span),
                    "store_min" => self.store(Some(AtomicOp::Min), x, recv, args, span),
                    "gather" => self.gather(x, recv, args, span),
                    "scatter" => self.indexed_write(Write::Scatter, x, recv, args, span),
                    "atomic_add" => self.indexed_write(Write::Atomic(AtomicOp::Add), x, recv, args, span),
                    "atomic_max" => self.indexed_write(Write::Atomic(AtomicOp::Max), x, recv, args, span),
                    "atomic_min" => self.indexed_write(Write::Atomic(AtomicOp::Min), x, recv, args, span),
                    _ => {
                        let mut d = Diagnostic::error(format!("tensors have no method `{m}`")).with_label(name.span, "unknown method");
                        if let Some(s) = super::expr::did_you_mean(m, TENSOR_METHODS.iter().copied()) {
                            d = d.note(format!("did you mean `{s}`?"));
                        }
                        Err(d.note(format!("tensor methods: {}", TENSOR_METHODS.join(", "))))
                    }
                }
            }
            (Val::V(_) | Val::K(..), m @ ("sum" | "max" | "min")) => {
                arity(m, args, &[0, 1, 2], span)?;
                let mut x = self.materialize(r.clone(), recv.span)?;
                let mut t = self.ty(x);
                if t.shape().is_empty() {
                    return Err(Diagnostic::error(format!("`.{m}` reduces a tile; this is a scalar")).with_label(recv.span, "a scalar"));
                }
                // Without an axis, over every element: the tile flattened, then its one axis.
                let axis = match args.first() {
                    Some(a) => self.axis_arg(a, t.shape().len())?,
                    None => {
                        if t.shape().len() > 1 {
                            let flat = Type::tile(t.dtype(), vec![t.numel()]);
                            x = self.emit(OpKind::Reshape, vec![x], flat.clone(), recv.span);
                            t = flat;
                        }
                        0
                    }
                };
                if t.dtype() == DType::Bool {
                    return Err(Diagnostic::error(format!("`.{m}` is not defined on bool tiles"))
                        .with_label(recv.span, "bool")
                        .note("cast to i32 first"));
                }
                let mut shape = t.shape().to_vec();
                shape.remove(axis as usize);
                let op = match m {
                    "sum" => ReduceOp::Sum,
                    "max" => ReduceOp::Max,
                    _ => ReduceOp::Min,
                };
                let keep = self.keepdim_arg(args.get(1))?;
                let r = self.emit(OpKind::Reduce(op, axis), vec![x], Type::tile(t.dtype(), shape), span);
                Ok(Val::V(if keep { self.keep_axis(r, axis, span) } else { r }))
            }
            (Val::V(_) | Val::K(..), m @ ("argmax" | "argmin" | "cumsum" | "cumprod" | "cummax" | "cummin")) => {
                let x = self.materialize(r.clone(), recv.span)?;
                self.scan_method(m, x, recv, args, span)
            }
            (Val::V(_) | Val::K(..), "scan") => {
                let x = self.materialize(r.clone(), recv.span)?;
                self.scan_fn_method(x, recv, args, span)
            }
            (Val::Poison, _) => Err(poison()),
            (_, m) => {
                let mut d = Diagnostic::error(format!("no method `{m}` here")).with_label(name.span, "unknown method");
                if let Some(s) = super::expr::did_you_mean(m, TILE_METHODS.iter().copied()) {
                    d = d.note(format!("did you mean `{s}`?"));
                }
                Err(d.note(format!("tile methods: {}; tensor methods: {}", TILE_METHODS.join(", "), TENSOR_METHODS.join(", "))))
            }
        }
    }

    fn offsets(&mut self, e: &ast::Expr, rank: usize, tname: &str) -> R<Vec<Value>> {
        let ast::ExprKind::List(items) = &e.kind else {
            return Err(Diagnostic::error("expected a list of offsets like `[m0, 0]`").with_label(e.span, "not a list"));
        };
        if items.len() != rank {
            return Err(Diagnostic::error(format!("wrong number of indices: `{tname}` has rank {rank}, got {} offsets", items.len()))
                .with_label(e.span, format!("expected {rank}")));
        }
        let mut out = vec![];
        for it in items {
            let v = self.lower_expr(it)?;
            out.push(self.coerce(v, &Type::scalar(DType::I32), it.span).map_err(|d| d.note("offsets are i32 scalars"))?);
        }
        Ok(out)
    }

    fn load(&mut self, t: Value, recv: &ast::Expr, args: &[ast::Expr], span: Span) -> R<Val> {
        arity("load", args, &[2, 3], span)?;
        let Type::Tensor { dtype, rank, .. } = self.ty(t) else { return Err(Diagnostic::ice("sema", "load on a non-tensor")) };
        let tname = super::host::render(recv);
        let mut ops = vec![t];
        ops.extend(self.offsets(&args[0], rank, &tname)?);
        let shape = self.shape_list(&args[1])?;
        if shape.len() != rank {
            return Err(Diagnostic::error(format!("the tile shape has rank {}, but `{tname}` has rank {rank}", shape.len()))
                .with_label(args[1].span, format!("expected {rank} dimensions")));
        }
        let pad = match args.get(2) {
            Some(e) => {
                let v = self.lower_expr(e)?;
                self.coerce(v, &Type::scalar(dtype), e.span)?
            }
            None => self.konst(if dtype == DType::Bool { Konst::Bool(false) } else { Konst::Int(0) }, &Type::scalar(dtype), span)?,
        };
        ops.push(pad);
        Ok(Val::V(self.emit(OpKind::Load, ops, Type::tile(dtype, shape), span)))
    }

    /// `t.store(offsets, x, mask)`: writes the elements of `x` where `mask` (broadcast to `x`'s
    /// shape) holds and leaves the others untouched: a `scatter` to the window's own indices
    /// (`offsets[d] + arange` along each axis), so elements outside the tensor are dropped as by
    /// `store`.
    /// A window write as an indexed one: `kind` (`Scatter` or `Atomic`) at the indices of the
    /// window at `offs` of `x`'s shape, where `mask` holds (everywhere without one).
    fn window_write(&mut self, kind: OpKind, t: Value, offs: &[Value], x: Value, mask: Option<&ast::Expr>, span: Span) -> R<Val> {
        let mask = self.mask_arg(mask)?;
        let shape = self.ty(x).shape().to_vec();
        let mut ops = vec![t];
        for (d, &o) in offs.iter().enumerate() {
            let n = shape[d];
            // `arange(n)` along axis `d` (unit axes inserted around it: rebuilt in any layout).
            let mut along = self.emit(OpKind::Arange(n), vec![], Type::tile(DType::I32, vec![n]), span);
            let mut s = vec![n];
            for axis in (0..shape.len()).filter(|&a| a != d) {
                s.insert(axis, 1);
                along = self.emit(OpKind::ExpandDims(axis as u32), vec![along], Type::tile(DType::I32, s.clone()), span);
            }
            let idx = self.binary(BinOp::Add, Val::V(o), Val::V(along), span, span, span)?;
            let idx = self.materialize(idx, span)?;
            ops.push(self.broadcast_to(idx, &shape, span)?);
        }
        ops.push(x);
        ops.push(self.full_mask(mask, &shape, span)?);
        self.emit0(kind, ops, span);
        Ok(Val::Unit)
    }

    /// `t.store(offsets, tile[, mask])`, or with `atomic` `t.store_add/max/min(…)`: the window
    /// combined into the tensor element by element, atomically (an `Atomic` op at the window's
    /// indices, which the lowering may turn into the copy engine's bulk reductions).
    fn store(&mut self, atomic: Option<AtomicOp>, t: Value, recv: &ast::Expr, args: &[ast::Expr], span: Span) -> R<Val> {
        let name = match atomic {
            None => "store",
            Some(AtomicOp::Add) => "store_add",
            Some(AtomicOp::Max) => "store_max",
            Some(AtomicOp::Min) => "store_min",
        };
        arity(name, args, &[2, 3], span)?;
        let Type::Tensor { dtype, rank, mutable } = self.ty(t) else { return Err(Diagnostic::ice("sema", "store on a non-tensor")) };
        let tname = super::host::render(recv);
        if !mutable {
            let what = if atomic.is_some() { format!("write to `{tname}` with `{name}`") } else { format!("store to `{tname}`") };
            return Err(Diagnostic::error(format!("cannot {what}: it is a read-only tensor"))
                .with_label(recv.span, "declared `&`")
                .note("declare the parameter `&mut` to write to it"));
        }
        if let Some(a) = atomic
            && !crate::tir::verify::atomic_dtype_ok(a, dtype)
        {
            return Err(Diagnostic::error(format!("`{name}` is not supported on {dtype} tensors"))
                .with_label(recv.span, format!("{} {dtype} tensor", if dtype.name().starts_with(['i', 'u']) { "an" } else { "a" }))
                .note("atomics support i32, u32, i64, u64, f32 and f64 tensors"));
        }
        let mut ops = vec![t];
        ops.extend(self.offsets(&args[0], rank, &tname)?);
        let v = self.lower_expr(&args[1])?;
        let x = match v {
            Val::K(..) => {
                return Err(Diagnostic::error(format!("`{name}` takes a tile"))
                    .with_label(args[1].span, "a scalar constant")
                    .note("build a tile with `full([..], v)`"));
            }
            v => self.materialize(v, args[1].span)?,
        };
        let xt = self.ty(x);
        if xt.dtype() != dtype {
            return Err(Diagnostic::error(format!("dtype mismatch: `{tname}` holds {dtype}, the tile is {}", xt.dtype()))
                .with_label(args[1].span, format!("this is {}", xt.dtype()))
                .note(format!("convert it: `(…) as {dtype}`")));
        }
        let mut shape = xt.shape().to_vec();
        if shape.len() > rank {
            return Err(Diagnostic::error(format!("a rank-{} tile cannot be stored to rank-{rank} `{tname}`", shape.len()))
                .with_label(args[1].span, "too many dimensions"));
        }
        // A lower-rank tile is stored along the trailing dimensions.
        let x = if shape.len() < rank {
            let mut s = vec![1; rank - shape.len()];
            s.append(&mut shape);
            self.emit(OpKind::Reshape, vec![x], Type::tile(dtype, s), args[1].span)
        } else {
            x
        };
        match atomic {
            Some(a) => self.window_write(OpKind::Atomic(a), t, &ops[1..], x, args.get(2), span),
            None if args.len() == 3 => self.window_write(OpKind::Scatter, t, &ops[1..], x, args.get(2), span),
            None => {
                ops.push(x);
                self.emit0(OpKind::Store, ops, span);
                Ok(Val::Unit)
            }
        }
    }
}

/// `max(a, b)` (or `min`) of two constants: the larger (smaller) one, in the type of the typed
/// operand if there is one; two untyped integers stay untyped (exact, with both needs). `None`
/// when the operands' types differ (`unify` reports it).
fn fold_minmax(max: bool, a: (Konst, KTy), b: (Konst, KTy), span: Span) -> R<Option<Val>> {
    if let ((Konst::Int(x), KTy::Weak(nx)), (Konst::Int(y), KTy::Weak(ny))) = (a, b) {
        let (k, n) = if (x >= y) == max { (x, nx) } else { (y, ny) };
        let other = if (x >= y) == max { ny } else { nx };
        let need = konst::Need { lo: n.lo.min(other.lo), hi: n.hi.max(other.hi), shift: n.shift.max(other.shift) };
        return Ok(Some(Val::K(Konst::Int(k), KTy::Weak(need))));
    }
    let ge = match konst::binary(BinOp::Ge, a, b) {
        Ok(Some((Konst::Bool(c), _))) => c,
        Ok(_) => return Ok(None),
        Err(m) => return Err(Diagnostic::error(m).with_label(span, "in this constant expression")),
    };
    let (k, t) = if ge == max { a } else { b };
    Ok(Some(match a.1.dtype().or(b.1.dtype()) {
        Some(d) => Val::K(super::expr::settle(k, t, d, span)?, KTy::Of(d)),
        None => Val::K(k, t),
    }))
}
