//! Lowering of statements and expressions to the tile IR, with type and shape checking.

use super::konst::{self, KTy, Need};
use super::scope::{Konst, Scopes, Slot, Val, VarId};
use crate::DType;
use crate::diag::{Diagnostic, Span};
use crate::ir::{Block, Value};
use crate::syntax::ast::{self, BinOp, ExprKind, FuncDecl, IndexArg, Pattern, StmtKind, TypeKind, UnOp};
use crate::tir::{self, BinaryOp, CmpOp, ConstValue, Lit, OpKind, Param, ParamKind, TirBody, Type, UnaryOp};
use std::collections::HashMap;

pub(crate) type R<T> = Result<T, Diagnostic>;

use crate::tir::MAX_TILE_ELEMS;
const MAX_INLINE_DEPTH: usize = 32;
/// Most tile-IR operations one kernel may have, its `fn` calls inlined. Every call is inlined, so
/// a `fn` that calls another twice doubles at each level; this bounds the time and memory that
/// costs (a kernel at the bound takes about 1 s and 150 MB to build). The largest example
/// (`na2d`) has about 200, a thousandth of it.
pub const MAX_KERNEL_OPS: usize = 1 << 18;

pub(crate) fn unknown_type(name: &str, span: Span) -> Diagnostic {
    let names: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
    let mut d = Diagnostic::error(format!("unknown type `{name}`")).with_label(span, "not a type");
    if let Some(s) = did_you_mean(name, names.iter().copied()) {
        d = d.note(format!("did you mean `{s}`?"));
    }
    d.note(format!("element types: {}", names.join(", ")))
}

/// The closest name by edit distance, if close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(name, c);
        if d <= (name.len().max(2) / 3).max(1) && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let sub = prev[j - 1] + (a[i - 1] != b[j - 1]) as usize;
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

pub(crate) fn shape_str(s: &[i64]) -> String {
    format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}

/// Numpy broadcasting of two shapes.
pub(crate) fn broadcast_shapes(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

pub(crate) struct Lowerer<'a> {
    pub body: TirBody,
    pub(super) fns: &'a HashMap<String, FuncDecl>,
    diags: &'a mut Vec<Diagnostic>,
    slots: Vec<Slot>,
    scopes: Vec<Scopes>,
    /// Where new operations go.
    pub(super) block: Block,
    /// The `fn` calls being inlined (callee and call site), innermost last.
    call_stack: Vec<(String, Span)>,
    /// Whether the kernel went over [`MAX_KERNEL_OPS`] (reported once; later calls are skipped).
    too_large: bool,
    errors: usize,
    /// What the target allows one kernel (checked as ops are emitted); `None` skips the checks.
    pub(super) limits: Option<Limits>,
    /// Whether a tile was already reported too large (one message per kernel is enough).
    size_reported: bool,
    /// Loops rewritten for their `break`/`continue` so far (numbers their flags).
    loops_rewritten: u32,
}

/// The resources of the target that a single tile or op must fit in.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub threads: u32,
    pub shared_bytes: u32,
    pub target: &'static str,
}

/// Most 32-bit registers one tile may take per thread. The hardware has 255 per thread; tiles a
/// little beyond that spill to local memory and still work, but one this large is a sizing
/// mistake (e.g. a const of 1024 where 128 was meant).
pub(crate) const MAX_TILE_REGS: i64 = 1024;

impl<'a> Lowerer<'a> {
    pub fn new(body: TirBody, fns: &'a HashMap<String, FuncDecl>, diags: &'a mut Vec<Diagnostic>) -> Lowerer<'a> {
        let entry = body.entry;
        Lowerer {
            body,
            fns,
            diags,
            slots: vec![],
            scopes: vec![Scopes::default()],
            block: entry,
            call_stack: vec![],
            too_large: false,
            errors: 0,
            limits: None,
            size_reported: false,
            loops_rewritten: 0,
        }
    }

    pub fn finish(self) -> (TirBody, bool) {
        (self.body, self.errors == 0)
    }

    /// Reports an error, noting the inlined calls it happened in.
    pub(super) fn report(&mut self, mut d: Diagnostic) {
        for &(_, call) in self.call_stack.iter().rev() {
            d = d.with_secondary(call, "in this call");
        }
        self.errors += 1;
        self.diags.push(d);
    }

    fn scopes(&mut self) -> &mut Scopes {
        // There is always at least one function frame (pushed in `new`).
        let last = self.scopes.len() - 1;
        &mut self.scopes[last]
    }

    fn push_frame(&mut self) {
        self.scopes().frames.push(HashMap::new());
    }

    fn pop_frame(&mut self) {
        self.scopes().frames.pop();
    }

    pub(super) fn declare(&mut self, name: &str, mutable: bool, ty: Option<Type>, val: Val, span: Span) -> VarId {
        let id = VarId(self.slots.len() as u32);
        self.slots.push(Slot { mutable, ty, val, span });
        if self.scopes().frames.is_empty() {
            self.push_frame();
        }
        if let Some(f) = self.scopes().frames.last_mut() {
            f.insert(name.to_string(), id);
        }
        id
    }

    fn slot(&self, v: VarId) -> &Slot {
        &self.slots[v.0 as usize]
    }

    /// Binds const parameters, kernel parameters and dimension symbols.
    /// `consts[i]` has type `const_types[i]`.
    pub fn bind_kernel(&mut self, params: &[Param], args: &[Value], consts: &[(String, ConstValue)], const_types: &[DType]) {
        self.push_frame();
        for ((name, v), &dtype) in consts.iter().zip(const_types) {
            let k = match v {
                ConstValue::Int(i) => Val::K(Konst::Int(*i), KTy::Of(dtype)),
                ConstValue::Bool(b) => Val::K(Konst::Bool(*b), KTy::Of(DType::Bool)),
            };
            self.declare(name, false, None, k, Span::default());
        }
        let mut syms: Vec<String> = vec![];
        for (p, &a) in params.iter().zip(args) {
            if let ParamKind::Tensor { dims, .. } = &p.kind {
                for (axis, d) in dims.iter().enumerate() {
                    if let tir::Dim::Sym(s) = d
                        && !syms.contains(s)
                    {
                        syms.push(s.clone());
                        let v = self.emit(OpKind::Dim(axis as u32), vec![a], Type::scalar(DType::I32), Span::default());
                        self.declare(s, false, None, Val::V(v), Span::default());
                    }
                }
            }
            self.declare(&p.name, false, None, Val::V(a), Span::default());
        }
    }

    pub(super) fn emit(&mut self, kind: OpKind, operands: Vec<Value>, ty: Type, span: Span) -> Value {
        self.check_size(&kind, &operands, &ty, span);
        let op = self.body.append(self.block, kind, operands, vec![ty], vec![], span);
        self.body.result(op)
    }

    /// Reports a tile that cannot live in the target's registers, or an op whose operands cannot
    /// be staged in its shared memory (the lowering stages `dot`, reductions, scans, `join`,
    /// `split`, `broadcast` and `permute` operands there).
    pub(super) fn check_size(&mut self, kind: &OpKind, operands: &[Value], ty: &Type, span: Span) {
        let Some(lim) = self.limits else { return };
        if self.size_reported {
            return;
        }
        // Every tile an op makes (broadcast, join, reshape, dot results: not only written shapes).
        if !ty.is_tensor()
            && let Some(d) = too_many_elements(ty.shape())
        {
            self.size_reported = true;
            self.report(d.with_label(span, "made here"));
            return;
        }
        let bytes = |t: &Type| t.numel().saturating_mul(t.dtype().size() as i64);
        let ceil = |a: i64, b: i64| (a + b - 1) / b;
        let regs = ceil(ceil(bytes(ty), 4), lim.threads.max(1) as i64);
        if !ty.is_tensor() && regs > MAX_TILE_REGS {
            self.size_reported = true;
            let warps = lim.threads / 32;
            self.report(
                Diagnostic::error(format!(
                    "tile {ty} is too large for the target: it needs {regs} registers per thread on {} threads ({warps} warps)",
                    lim.threads
                ))
                .with_label(span, format!("{} bytes", bytes(ty)))
                .note(format!("a tile may take at most {MAX_TILE_REGS} 32-bit registers per thread (the hardware has 255); use a smaller tile or more warps (`#[warps(..)]`)")),
            );
            return;
        }
        let ty_of = |i: usize| operands.get(i).map(|&v| self.body.ty(v).clone());
        let staged: Option<(i64, String)> = match kind {
            OpKind::Dot => match (ty_of(0), ty_of(1)) {
                (Some(a), Some(b)) => Some((ceil(bytes(&a), 16) * 16 + bytes(&b), format!("its operands {a} and {b}"))),
                _ => None,
            },
            OpKind::Join => ty_of(0).map(|a| (2 * bytes(&a), format!("two {a} tiles"))),
            OpKind::Broadcast
            | OpKind::Permute(_)
            | OpKind::Reduce(..)
            | OpKind::Scan(..)
            | OpKind::ScanFn(_)
            | OpKind::Slice(..)
            | OpKind::ArgReduce(..)
            | OpKind::Split => ty_of(0).map(|a| (bytes(&a), format!("its operand {a}"))),
            _ => None,
        };
        if let Some((need, what)) = staged
            && need > lim.shared_bytes as i64
        {
            self.size_reported = true;
            self.report(
                Diagnostic::error(format!(
                    "`{}` needs {need} bytes of shared memory for {what}, but {} allows {} per block",
                    user_name(kind),
                    lim.target,
                    lim.shared_bytes
                ))
                .with_label(span, "too large for shared memory")
                .note("use smaller tiles (a smaller const parameter, e.g. `--const BK=32`)"),
            );
        }
    }

    pub(super) fn emit0(&mut self, kind: OpKind, operands: Vec<Value>, span: Span) {
        self.body.append(self.block, kind, operands, vec![], vec![], span);
    }

    pub(super) fn ty(&self, v: Value) -> Type {
        self.body.ty(v).clone()
    }

    /// The type a value has (literals: their default type).
    pub(super) fn type_of(&self, v: &Val) -> Option<Type> {
        match v {
            Val::V(x) => Some(self.ty(*x)),
            Val::K(k, t) => Some(Type::scalar(t.dtype().unwrap_or(default_dtype(*k)))),
            _ => None,
        }
    }

    // ---- conversions -------------------------------------------------------------------------

    /// A constant of type `ty` (a tile constant is splatted). `k` is the compiler's own, or one
    /// already given `ty`'s dtype (`settle`).
    pub(super) fn konst(&mut self, k: Konst, ty: &Type, span: Span) -> R<Value> {
        let dtype = ty.dtype();
        let lit = match (k, dtype) {
            (Konst::Bool(b), DType::Bool) => Lit::Bool(b),
            (Konst::Bool(_), _) => {
                return Err(Diagnostic::error(format!("dtype mismatch: expected {dtype}, found a bool")).with_label(span, "a bool"));
            }
            (Konst::Int(i), d) if d.is_float() => Lit::Float(i as f64),
            (Konst::Int(i), d) if d.is_int() => Lit::Int(i),
            (Konst::Float(f), d) if d.is_float() => Lit::Float(f),
            (Konst::Float(_), d) => {
                return Err(Diagnostic::error(format!("dtype mismatch: expected {d}, found a float literal"))
                    .with_label(span, "a float")
                    .note(format!("write an integer, or cast: `(x) as {d}`")));
            }
            (Konst::Int(_), d) => {
                return Err(Diagnostic::error(format!("dtype mismatch: expected {d}, found an integer")).with_label(span, "an integer"));
            }
        };
        Ok(self.emit(OpKind::Const(lit), vec![], ty.clone(), span))
    }

    /// The value as an SSA value (literals get their default type).
    pub(super) fn materialize(&mut self, v: Val, span: Span) -> R<Value> {
        match v {
            Val::V(x) => Ok(x),
            Val::K(k, t) => {
                let d = t.dtype().unwrap_or(default_dtype(k));
                let k = settle(k, t, d, span)?;
                self.konst(k, &Type::scalar(d), span)
            }
            Val::Poison => Err(poison()),
            other => {
                Err(Diagnostic::error(format!("expected a scalar or a tile, found {}", describe(&other))).with_label(span, "not a value"))
            }
        }
    }

    /// Converts to exactly `ty`: literals take its dtype, tiles broadcast to its shape.
    pub(super) fn coerce(&mut self, v: Val, ty: &Type, span: Span) -> R<Value> {
        match v {
            Val::K(k, t) => {
                if let Some(d) = t.dtype()
                    && d != ty.dtype()
                {
                    return Err(dtype_mismatch(ty.dtype(), d, span));
                }
                let k = settle(k, t, ty.dtype(), span)?;
                self.konst(k, ty, span)
            }
            Val::V(x) => {
                let xt = self.ty(x);
                if xt.is_tensor() || ty.is_tensor() {
                    if &xt == ty {
                        return Ok(x);
                    }
                    return Err(Diagnostic::error(format!("type mismatch: expected {ty}, found {xt}")).with_label(span, "here"));
                }
                if xt.dtype() != ty.dtype() {
                    return Err(dtype_mismatch(ty.dtype(), xt.dtype(), span));
                }
                self.broadcast_to(x, ty.shape(), span)
            }
            other => self.materialize(other, span),
        }
    }

    /// Broadcasts a tile (or scalar) to `shape`, numpy style.
    pub(super) fn broadcast_to(&mut self, x: Value, shape: &[i64], span: Span) -> R<Value> {
        let xt = self.ty(x);
        let xs = xt.shape().to_vec();
        if xs == shape {
            return Ok(x);
        }
        let dtype = xt.dtype();
        if broadcast_shapes(&xs, shape).as_deref() != Some(shape) {
            return Err(Diagnostic::error(format!("cannot broadcast {} to {}", shape_str(&xs), shape_str(shape)))
                .with_label(span, format!("this has shape {}", shape_str(&xs)))
                .note("dimensions must be equal, or 1 in the smaller shape; add an axis with `t[:, None]`"));
        }
        if xs.is_empty() {
            return Ok(self.emit(OpKind::Splat, vec![x], Type::tile(dtype, shape.to_vec()), span));
        }
        let mut cur = x;
        if xs.len() < shape.len() {
            let mut padded = vec![1; shape.len() - xs.len()];
            padded.extend(&xs);
            cur = self.emit(OpKind::Reshape, vec![cur], Type::tile(dtype, padded.clone()), span);
            if padded == shape {
                return Ok(cur);
            }
        }
        Ok(self.emit(OpKind::Broadcast, vec![cur], Type::tile(dtype, shape.to_vec()), span))
    }

    /// Brings two operands to one dtype and one (broadcast) shape.
    pub(super) fn unify(&mut self, a: Val, b: Val, sa: Span, sb: Span) -> R<(Value, Value)> {
        for (v, s) in [(&a, sa), (&b, sb)] {
            if self.type_of(v).is_some_and(|t| t.is_tensor()) {
                return Err(Diagnostic::error("a tensor is not a value: load a tile from it first")
                    .with_label(s, "a tensor")
                    .note("write `t.load([offsets], [shape])`, or `t[i, j]` for one element"));
            }
        }
        let dtype = match (&a, &b) {
            (Val::K(_, KTy::Weak(_)), Val::K(_, KTy::Weak(_))) => {
                let (x, y) = (self.type_of(&a), self.type_of(&b));
                let (x, y) = (x.map(|t| t.dtype()), y.map(|t| t.dtype()));
                if x == Some(DType::F32) || y == Some(DType::F32) { DType::F32 } else { x.unwrap_or(DType::I32) }
            }
            (Val::K(_, KTy::Weak(_)), other) => self.type_of(other).map(|t| t.dtype()).ok_or_else(|| not_value(other, sb))?,
            (other, Val::K(_, KTy::Weak(_))) => self.type_of(other).map(|t| t.dtype()).ok_or_else(|| not_value(other, sa))?,
            _ => {
                let ta = self.type_of(&a).ok_or_else(|| not_value(&a, sa))?;
                let tb = self.type_of(&b).ok_or_else(|| not_value(&b, sb))?;
                if ta.is_tensor() || tb.is_tensor() {
                    let s = if ta.is_tensor() { sa } else { sb };
                    return Err(Diagnostic::error("a tensor is not a value: load a tile from it first")
                        .with_label(s, "a tensor")
                        .note("write `t.load([offsets], [shape])`"));
                }
                if ta.dtype() != tb.dtype() {
                    let hint = format!("cast one side, e.g. `(…) as {}`", ta.dtype());
                    return Err(Diagnostic::error(format!("dtype mismatch: {} and {}", ta.dtype(), tb.dtype()))
                        .with_label(sa, format!("this is {}", ta.dtype()))
                        .with_secondary(sb, format!("this is {}", tb.dtype()))
                        .note(hint));
                }
                ta.dtype()
            }
        };
        let sa_shape = self.type_of(&a).map(|t| t.shape().to_vec()).unwrap_or_default();
        let sb_shape = self.type_of(&b).map(|t| t.shape().to_vec()).unwrap_or_default();
        let Some(shape) = broadcast_shapes(&sa_shape, &sb_shape) else {
            let dim = (0..sa_shape.len().max(sb_shape.len())).rev().find(|&i| {
                let n = sa_shape.len().max(sb_shape.len());
                let da = if i + sa_shape.len() >= n { sa_shape[i + sa_shape.len() - n] } else { 1 };
                let db = if i + sb_shape.len() >= n { sb_shape[i + sb_shape.len() - n] } else { 1 };
                da != db && da != 1 && db != 1
            });
            let err = Diagnostic::error(format!("shape mismatch: {} and {} do not broadcast", shape_str(&sa_shape), shape_str(&sb_shape)))
                .with_label(sa, format!("shape {}", shape_str(&sa_shape)))
                .with_secondary(sb, format!("shape {}", shape_str(&sb_shape)))
                .note(match dim {
                    Some(d) => format!("dimension {d} differs and neither side is 1"),
                    None => "shapes must be equal or 1 in each dimension".into(),
                });
            // A reduction's result (`x.max(1)`) against the tile it came from: the axis it removed
            // goes back as an axis of 1.
            let hint = [(&sa_shape, &sb_shape, "right"), (&sb_shape, &sa_shape, "left")].into_iter().find_map(|(full, part, side)| {
                removed_axis(full, part).map(|i| {
                    let idx: Vec<&str> = (0..full.len()).map(|j| if j == i { "None" } else { ":" }).collect();
                    format!("to broadcast the {side} side along axis {i}, give it an axis of 1 there: `…[{}]`", idx.join(", "))
                })
            });
            return Err(match hint {
                Some(h) => err.note(h),
                None => err,
            });
        };
        let ty = Type::tile(dtype, shape);
        let x = self.coerce(a, &ty, sa)?;
        let y = self.coerce(b, &ty, sb)?;
        Ok((x, y))
    }

    // ---- statements --------------------------------------------------------------------------

    /// Lowers a kernel body into `into` (its tail, if any, is evaluated for effect).
    pub fn lower_block_stmts(&mut self, b: &ast::Block, into: Block) {
        let saved = self.block;
        self.block = into;
        self.push_frame();
        for s in &b.stmts {
            if let Err(d) = self.lower_stmt(s) {
                self.report_unless_poison(d);
            }
        }
        if let Some(t) = &b.tail
            && let Err(d) = self.lower_tail(t)
        {
            self.report_unless_poison(d);
        }
        self.pop_frame();
        self.block = saved;
    }

    /// A block's tail. An `if` whose branches do not all end in a value is a statement that
    /// happens to end the block (`for … { if c { x += 1; } }`), not a value.
    fn lower_tail(&mut self, t: &ast::Expr) -> R<Val> {
        match &t.kind {
            ExprKind::If(c, then, els) if !if_gives_value(t) => {
                self.lower_if(c, then, els.as_ref(), false, t.span)?;
                Ok(Val::Unit)
            }
            _ => self.lower_expr(t),
        }
    }

    fn report_unless_poison(&mut self, d: Diagnostic) {
        if d.message != POISON {
            self.report(d);
        }
    }

    /// Lowers a block in the current insertion block and returns its tail value.
    pub(super) fn lower_block(&mut self, b: &ast::Block) -> Val {
        self.push_frame();
        let before = self.errors;
        for s in &b.stmts {
            if let Err(d) = self.lower_stmt(s) {
                self.report_unless_poison(d);
            }
        }
        let v = match &b.tail {
            Some(t) => match self.lower_tail(t) {
                Ok(v) => v,
                Err(d) => {
                    self.report_unless_poison(d);
                    Val::Poison
                }
            },
            None => Val::Unit,
        };
        self.pop_frame();
        if self.errors > before { Val::Poison } else { v }
    }

    fn lower_stmt(&mut self, s: &ast::Stmt) -> R<()> {
        match &s.kind {
            StmtKind::Let { pat, mutable, ty, init } => {
                let v = self.lower_expr(init);
                let v = match v {
                    Ok(v) => v,
                    Err(d) => {
                        self.bind_poison(pat);
                        return Err(d);
                    }
                };
                let declared = match ty {
                    Some(t) => match self.resolve_type(t) {
                        Ok(t) => Some(t),
                        Err(d) => {
                            self.bind_poison(pat);
                            return Err(d);
                        }
                    },
                    None => None,
                };
                match pat {
                    Pattern::Name(n) => {
                        let (v, ty) = match (&declared, *mutable) {
                            (Some(t), _) => match self.coerce(v, t, init.span) {
                                Ok(x) => (Val::V(x), Some(t.clone())),
                                Err(d) => {
                                    self.bind_poison(pat);
                                    return Err(d);
                                }
                            },
                            (None, true) => match self.materialize(v, init.span) {
                                Ok(x) => (Val::V(x), Some(self.ty(x))),
                                Err(d) => {
                                    self.bind_poison(pat);
                                    return Err(d);
                                }
                            },
                            (None, false) => (v, None),
                        };
                        self.declare(&n.name, *mutable, ty, v, n.span);
                    }
                    Pattern::Tuple(names, span) => {
                        let Val::Tuple(vals) = v else {
                            self.bind_poison(pat);
                            return Err(Diagnostic::error(format!("expected a tuple of {} values", names.len()))
                                .with_label(init.span, "not a tuple")
                                .with_secondary(*span, "tuple pattern"));
                        };
                        if vals.len() != names.len() {
                            self.bind_poison(pat);
                            return Err(Diagnostic::error(format!("tuple of {} values bound to {} names", vals.len(), names.len()))
                                .with_label(*span, "pattern")
                                .with_secondary(init.span, "value"));
                        }
                        for (n, v) in names.iter().zip(vals) {
                            let (v, ty) = if *mutable {
                                let x = self.materialize(v, init.span)?;
                                (Val::V(x), Some(self.ty(x)))
                            } else {
                                (v, None)
                            };
                            self.declare(&n.name, *mutable, ty, v, n.span);
                        }
                    }
                }
                Ok(())
            }
            StmtKind::Assign { target, op, value } => {
                let Some(id) = self.scopes.last().and_then(|s| s.lookup(&target.name)) else {
                    return Err(self.unknown_name(&target.name, target.span));
                };
                let slot = self.slot(id).clone();
                if !slot.mutable {
                    let mut d = Diagnostic::error(format!("cannot assign to `{}`: it is not `mut`", target.name))
                        .with_label(target.span, "assigned here");
                    if slot.span != Span::default() {
                        d = d.with_secondary(slot.span, format!("declared here; write `let mut {}`", target.name));
                    }
                    return Err(d);
                }
                let rhs = self.lower_expr(value)?;
                let new = match op {
                    Some(op) => self.binary(*op, slot.val.clone(), rhs, target.span, value.span, s.span)?,
                    None => rhs,
                };
                let ty = slot.ty.clone().ok_or_else(|| Diagnostic::ice("sema", "mutable variable without a type"))?;
                let x = self.coerce(new, &ty, value.span).map_err(|d| d.note(format!("`{}` has type {ty}", target.name)))?;
                self.slots[id.0 as usize].val = Val::V(x);
                Ok(())
            }
            StmtKind::For { body, .. } | StmtKind::While { body, .. } if super::loop_exits::exits(body).any() => {
                self.loops_rewritten += 1;
                for st in super::loop_exits::rewrite(s, self.loops_rewritten)? {
                    self.lower_stmt(&st)?;
                }
                Ok(())
            }
            StmtKind::For { var, iter, body } => self.lower_for(var, iter, body),
            StmtKind::While { cond, body } => self.lower_while(cond, body, s.span),
            StmtKind::Break | StmtKind::Continue => {
                let what = if matches!(s.kind, StmtKind::Break) { "break" } else { "continue" };
                Err(Diagnostic::error(format!("`{what}` outside of a loop"))
                    .with_label(s.span, "not inside a `for` or `while`")
                    .note("a `fn`'s body is not part of its caller's loop; to end the program, use `return`"))
            }
            StmtKind::Return => {
                self.emit0(OpKind::Return, vec![], s.span);
                Ok(())
            }
            StmtKind::Expr(e) => {
                match &e.kind {
                    ExprKind::If(c, t, f) => {
                        self.lower_if(c, t, f.as_ref(), false, e.span)?;
                    }
                    _ => {
                        self.lower_expr(e)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn bind_poison(&mut self, pat: &Pattern) {
        match pat {
            Pattern::Name(n) => {
                self.declare(&n.name, true, None, Val::Poison, n.span);
            }
            Pattern::Tuple(ns, _) => {
                for n in ns {
                    self.declare(&n.name, true, None, Val::Poison, n.span);
                }
            }
        }
    }

    /// Slots assigned anywhere in `blocks` that are visible here and mutable.
    fn assigned_slots(&self, blocks: &[&ast::Block]) -> Vec<VarId> {
        let mut names = vec![];
        for b in blocks {
            collect_assigned(b, &mut names);
        }
        let mut out = vec![];
        if let Some(sc) = self.scopes.last() {
            for n in names {
                if let Some(id) = sc.lookup(&n)
                    && self.slot(id).mutable
                    && !out.contains(&id)
                    && self.slot(id).ty.is_some()
                {
                    out.push(id);
                }
            }
        }
        out
    }

    fn scalar_i32(&mut self, v: Val, span: Span) -> R<Value> {
        let x = self.coerce(v.clone(), &Type::scalar(DType::I32), span);
        match (x, &v) {
            (Ok(x), _) => Ok(x),
            (Err(_), Val::V(x)) => {
                let t = self.ty(*x);
                Err(Diagnostic::error(format!("expected an i32 scalar, found {t}")).with_label(span, format!("this is {t}")))
            }
            (Err(d), _) => Err(d),
        }
    }

    fn lower_for(&mut self, var: &ast::Ident, iter: &ast::Expr, body: &ast::Block) -> R<()> {
        let it = self.lower_expr(iter)?;
        let Val::Range(lo, hi, step) = it else {
            return Err(Diagnostic::error("a `for` loop runs over a range")
                .with_label(iter.span, "not a range")
                .note("write `for i in a..b` or `for i in (a..b).step_by(s)`"));
        };
        if let Some(s) = &step
            && let Val::K(Konst::Int(s), _) = **s
            && s <= 0
        {
            return Err(Diagnostic::error(format!("`step_by({s})`: the step must be positive")).with_label(iter.span, "here"));
        }
        let lo = self.scalar_i32(*lo, iter.span)?;
        let hi = self.scalar_i32(*hi, iter.span)?;
        let step = self.scalar_i32(step.map(|s| *s).unwrap_or(Val::K(Konst::Int(1), KTy::Weak(Need::of(1)))), iter.span)?;
        let carried = self.assigned_slots(&[body]);
        let mut types = vec![Type::scalar(DType::I32)];
        let mut inits = vec![];
        for &id in &carried {
            let slot = self.slot(id).clone();
            let ty = slot.ty.clone().unwrap_or(Type::scalar(DType::I32));
            let x = self.coerce(slot.val, &ty, iter.span)?;
            inits.push(x);
            types.push(ty);
        }
        let blk = self.body.new_block(&types);
        let args = self.body.block(blk).args.clone();
        for (i, &id) in carried.iter().enumerate() {
            self.slots[id.0 as usize].val = Val::V(args[i + 1]);
        }
        let saved = self.block;
        self.block = blk;
        self.push_frame();
        self.declare(&var.name, false, None, Val::V(args[0]), var.span);
        let _ = self.lower_block(body);
        self.pop_frame();
        let mut yields = vec![];
        for (i, &id) in carried.iter().enumerate() {
            let v = self.slot(id).val.clone();
            yields.push(self.coerce(v, &types[i + 1], iter.span).unwrap_or(args[i + 1]));
        }
        self.emit0(OpKind::Yield, yields, iter.span);
        self.block = saved;
        let mut operands = vec![lo, hi, step];
        operands.extend(inits);
        let op = self.body.append(self.block, OpKind::For, operands, types[1..].to_vec(), vec![blk], iter.span);
        let results = self.body.op(op).results.clone();
        for (i, &id) in carried.iter().enumerate() {
            self.slots[id.0 as usize].val = Val::V(results[i]);
        }
        Ok(())
    }

    /// `while cond { body }`: a `while` op whose condition region evaluates `cond` on the loop
    /// values (the mutable variables the body assigns) and whose body region updates them.
    fn lower_while(&mut self, cond: &ast::Expr, body: &ast::Block, span: Span) -> R<()> {
        let carried = self.assigned_slots(&[body]);
        let mut types = vec![];
        let mut inits = vec![];
        for &id in &carried {
            let slot = self.slot(id).clone();
            let ty = slot.ty.clone().unwrap_or(Type::scalar(DType::I32));
            inits.push(self.coerce(slot.val, &ty, cond.span)?);
            types.push(ty);
        }
        let saved_block = self.block;
        let bind = |lw: &mut Self, blk: Block| {
            let args = lw.body.block(blk).args.clone();
            for (i, &id) in carried.iter().enumerate() {
                lw.slots[id.0 as usize].val = Val::V(args[i]);
            }
        };
        // The condition region.
        let cblk = self.body.new_block(&types);
        bind(self, cblk);
        self.block = cblk;
        let c = self.while_condition(cond);
        let c = match c {
            Ok(c) => c,
            Err(d) => {
                self.block = saved_block;
                for (i, &id) in carried.iter().enumerate() {
                    self.slots[id.0 as usize].val = Val::V(inits[i]);
                }
                return Err(d);
            }
        };
        let Some(c) = c else {
            // `while false`: the body never runs.
            self.block = saved_block;
            for (i, &id) in carried.iter().enumerate() {
                self.slots[id.0 as usize].val = Val::V(inits[i]);
            }
            return Ok(());
        };
        self.emit0(OpKind::Yield, vec![c], cond.span);
        // The body region.
        let bblk = self.body.new_block(&types);
        bind(self, bblk);
        self.block = bblk;
        let _ = self.lower_block(body);
        let mut yields = vec![];
        let args = self.body.block(bblk).args.clone();
        for (i, &id) in carried.iter().enumerate() {
            let v = self.slot(id).val.clone();
            yields.push(self.coerce(v, &types[i], span).unwrap_or(args[i]));
        }
        self.emit0(OpKind::Yield, yields, span);
        self.block = saved_block;
        let op = self.body.append(self.block, OpKind::While, inits, types, vec![cblk, bblk], span);
        let results = self.body.op(op).results.clone();
        for (i, &id) in carried.iter().enumerate() {
            self.slots[id.0 as usize].val = Val::V(results[i]);
        }
        Ok(())
    }

    /// The condition of a `while` as a bool scalar, or `None` for a constant `false`.
    fn while_condition(&mut self, cond: &ast::Expr) -> R<Option<Value>> {
        let v = self.lower_expr(cond)?;
        if let Val::K(Konst::Bool(false), _) = v {
            return Ok(None);
        }
        let x = self.materialize(v, cond.span)?;
        let t = self.ty(x);
        if t != Type::scalar(DType::Bool) {
            return Err(Diagnostic::error(format!("`while` needs a scalar bool condition, found {t}"))
                .with_label(cond.span, format!("this is {t}"))
                .note(if t.dtype() == DType::Bool {
                    "a program runs the loop as a whole: reduce the tile to a scalar first, e.g. `while x.max(0) > 0`"
                } else {
                    "compare it, e.g. `while i < n`"
                }));
        }
        Ok(Some(x))
    }

    /// `if` as a statement (`want_value == false`) or an expression.
    pub(super) fn lower_if(
        &mut self,
        cond: &ast::Expr,
        then: &ast::Block,
        els: Option<&ast::Block>,
        want_value: bool,
        span: Span,
    ) -> R<Val> {
        let c = self.lower_expr(cond)?;
        if let Val::K(Konst::Bool(b), _) = c {
            // A compile-time condition (`if CAUSAL`): only the taken branch exists.
            return Ok(match (b, els) {
                (true, _) => self.lower_block(then),
                (false, Some(e)) => self.lower_block(e),
                (false, None) => Val::Unit,
            });
        }
        let cv = self.materialize(c, cond.span)?;
        let ct = self.ty(cv);
        if ct != Type::scalar(DType::Bool) {
            return Err(Diagnostic::error(format!("`if` needs a scalar bool condition, found {ct}"))
                .with_label(cond.span, format!("this is {ct}"))
                .note("for a per-element choice use `where(cond, a, b)`"));
        }
        let mut blocks = vec![then];
        if let Some(e) = els {
            blocks.push(e);
        }
        let carried = self.assigned_slots(&blocks);
        let saved_vals: Vec<Val> = carried.iter().map(|&id| self.slot(id).val.clone()).collect();
        let saved_block = self.block;
        let mut branch_blocks = vec![];
        let mut tails = vec![];
        let mut branch_vals = vec![];
        for b in [Some(then), els] {
            let blk = self.body.new_block(&[]);
            self.block = blk;
            let tail = match b {
                Some(b) => self.lower_block(b),
                None => Val::Unit,
            };
            branch_vals.push(carried.iter().map(|&id| self.slot(id).val.clone()).collect::<Vec<_>>());
            for (i, &id) in carried.iter().enumerate() {
                self.slots[id.0 as usize].val = saved_vals[i].clone();
            }
            branch_blocks.push(blk);
            tails.push(tail);
        }
        // The value's type: from whichever branch has a typed value.
        let mut result_types: Vec<Type> = carried.iter().map(|&id| self.slot(id).ty.clone().unwrap_or(Type::scalar(DType::I32))).collect();
        let value_ty = if want_value {
            if els.is_none() {
                self.block = saved_block;
                return Err(Diagnostic::error("an `if` without `else` has no value").with_label(span, "add an `else` branch"));
            }
            if tails.contains(&Val::Poison) {
                self.block = saved_block;
                return Err(poison());
            }
            let t = match (&tails[0], &tails[1]) {
                (Val::V(x), _) | (_, Val::V(x)) => self.ty(*x),
                (a @ Val::K(..), Val::K(..)) => self.type_of(a).unwrap_or(Type::scalar(DType::I32)),
                _ => {
                    self.block = saved_block;
                    return Err(Diagnostic::error("both branches of this `if` must give a value").with_label(span, "here"));
                }
            };
            result_types.push(t.clone());
            Some(t)
        } else {
            None
        };
        for (bi, &blk) in branch_blocks.iter().enumerate() {
            self.block = blk;
            let mut ys = vec![];
            for (i, v) in branch_vals[bi].clone().into_iter().enumerate() {
                ys.push(self.coerce(v, &result_types[i], span)?);
            }
            if let Some(t) = &value_ty {
                ys.push(self.coerce(tails[bi].clone(), t, span)?);
            }
            self.emit0(OpKind::Yield, ys, span);
        }
        self.block = saved_block;
        let op = self.body.append(self.block, OpKind::If, vec![cv], result_types, branch_blocks, span);
        let results = self.body.op(op).results.clone();
        for (i, &id) in carried.iter().enumerate() {
            self.slots[id.0 as usize].val = Val::V(results[i]);
        }
        Ok(if want_value { Val::V(results[carried.len()]) } else { Val::Unit })
    }

    // ---- types -------------------------------------------------------------------------------

    /// A compile-time integer (shape dimension, axis).
    pub(super) fn const_int(&mut self, e: &ast::Expr, what: &str) -> R<i64> {
        match self.lower_expr(e)? {
            Val::K(Konst::Int(i), _) => Ok(i),
            Val::Poison => Err(poison()),
            _ => Err(Diagnostic::error(format!("{what} must be a compile-time constant"))
                .with_label(e.span, "not a constant")
                .note("use literals, `const` parameters and arithmetic on them")),
        }
    }

    /// A tile shape: constant powers of two.
    pub(super) fn tile_dims(&mut self, dims: &[ast::Expr]) -> R<Vec<i64>> {
        let mut out = vec![];
        for d in dims {
            let v = self.const_int(d, "a tile dimension")?;
            check_dim(v, d.span)?;
            out.push(v);
        }
        if out.len() > 4 {
            return Err(Diagnostic::error(format!("tiles have rank 1 to 4, this one has rank {}", out.len()))
                .with_label(dims[0].span.to(dims[dims.len() - 1].span), "too many dimensions"));
        }
        if let Some(d) = too_many_elements(&out) {
            return Err(d.with_label(dims[0].span.to(dims[dims.len() - 1].span), "too large"));
        }
        Ok(out)
    }

    pub(super) fn resolve_type(&mut self, t: &ast::TypeExpr) -> R<Type> {
        match &t.kind {
            TypeKind::Scalar(e) => Ok(Type::scalar(super::dtype_of(e)?)),
            TypeKind::Tile { elem, dims } => {
                let d = super::dtype_of(elem)?;
                Ok(Type::tile(d, self.tile_dims(dims)?))
            }
            TypeKind::Tensor { .. } => {
                Err(Diagnostic::error("tensor types are only allowed on kernel parameters").with_label(t.span, "tensor type"))
            }
            TypeKind::Tuple(_) => {
                Err(Diagnostic::error("tuple types are only allowed as a `fn`'s return type").with_label(t.span, "tuple type"))
            }
        }
    }

    pub(super) fn unknown_name(&self, name: &str, span: Span) -> Diagnostic {
        let mut cands = self.scopes.last().map(|s| s.names()).unwrap_or_default();
        // Imported helpers' internal keys (`std::math::cdiv`) are not names the user can write.
        cands.extend(self.fns.keys().filter(|k| !k.contains("::")).cloned());
        cands.extend(super::builtins::BUILTINS.iter().map(|s| s.to_string()));
        // Inside an imported `fn`, an unknown callee carries its module's key prefix.
        let name = name.rsplit("::").next().unwrap_or(name);
        if let Some(hint) = crate::syntax::unsupported_keyword(name) {
            return Diagnostic::error(format!("`{name}` is not supported in tile programs")).with_label(span, "not supported").note(hint);
        }
        let mut d = Diagnostic::error(format!("unknown name `{name}`")).with_label(span, "not found in this scope");
        if let Some(s) = did_you_mean(name, cands.iter().map(|s| s.as_str())) {
            d = d.note(format!("did you mean `{s}`?"));
        }
        d
    }

    // ---- expressions -------------------------------------------------------------------------

    pub(super) fn lower_expr(&mut self, e: &ast::Expr) -> R<Val> {
        match &e.kind {
            ExprKind::Int(v, suffix) => self.int_literal(*v, suffix, e.span),
            ExprKind::Float(v, suffix) => {
                let d = self.suffix(suffix, e.span)?;
                match d {
                    Some(d) if !d.is_float() => {
                        Err(Diagnostic::error(format!("a float literal cannot have type {d}")).with_label(e.span, "here"))
                    }
                    // An `f32` constant holds an f32 value (the wider ones are rounded by the run time).
                    Some(DType::F32) => Ok(Val::K(Konst::Float(*v as f32 as f64), KTy::Of(DType::F32))),
                    Some(d) => Ok(Val::K(Konst::Float(*v), KTy::Of(d))),
                    None => Ok(Val::K(Konst::Float(*v), KTy::FLOAT)),
                }
            }
            ExprKind::Bool(b) => Ok(Val::K(Konst::Bool(*b), KTy::Of(DType::Bool))),
            ExprKind::Inf => Ok(Val::K(Konst::Float(f64::INFINITY), KTy::FLOAT)),
            ExprKind::Str(_) => Err(Diagnostic::error("a string is not a value")
                .with_label(e.span, "a string")
                .note("strings are the format of `print(\"…\", x)` and the message of `assert(cond, \"…\")`")),
            ExprKind::Wildcard => Err(Diagnostic::error("`_` is only allowed in a type's dimensions").with_label(e.span, "here")),
            ExprKind::Paren(x) => self.lower_expr(x),
            ExprKind::Name(n) => {
                let Some(id) = self.scopes.last().and_then(|s| s.lookup(&n.name)) else {
                    return Err(self.unknown_name(&n.name, n.span));
                };
                match &self.slot(id).val {
                    Val::Poison => Err(poison()),
                    v => Ok(v.clone()),
                }
            }
            ExprKind::Tuple(xs) => Ok(Val::Tuple(xs.iter().map(|x| self.lower_expr(x)).collect::<R<_>>()?)),
            ExprKind::List(xs) => Ok(Val::List(xs.iter().map(|x| self.lower_expr(x)).collect::<R<_>>()?)),
            ExprKind::Range(a, b) => Ok(Val::Range(Box::new(self.lower_expr(a)?), Box::new(self.lower_expr(b)?), None)),
            // A negative literal is one value (`-2147483648` is an i32).
            ExprKind::Unary(UnOp::Neg, x) if matches!(x.kind, ExprKind::Int(..)) => match &x.kind {
                ExprKind::Int(v, suffix) => self.int_literal(-*v, suffix, e.span),
                _ => Err(Diagnostic::ice("sema", "a negative literal that is not one")),
            },
            ExprKind::Unary(op, x) => {
                let v = self.lower_expr(x)?;
                self.unary(*op, v, x.span, e.span)
            }
            ExprKind::Binary(op, a, b) => {
                let va = self.lower_expr(a)?;
                let vb = self.lower_expr(b)?;
                self.binary(*op, va, vb, a.span, b.span, e.span)
            }
            ExprKind::Cast(x, t) => {
                let v = self.lower_expr(x)?;
                let TypeKind::Scalar(name) = &t.kind else {
                    return Err(Diagnostic::error("`as` takes an element type, e.g. `x as bf16`").with_label(t.span, "not an element type"));
                };
                let d = super::dtype_of(name)?;
                self.cast(v, d, x.span)
            }
            ExprKind::If(c, t, f) => self.lower_if(c, t, f.as_ref(), true, e.span),
            ExprKind::Index(base, idx) => self.index(base, idx, e.span),
            ExprKind::Call(f, args) => self.call(f, args, e.span),
            ExprKind::Method(recv, name, args) => self.method(recv, name, args, e.span),
        }
    }

    /// An integer literal: untyped, or of its suffix's type, which must hold it.
    fn int_literal(&self, v: i64, suffix: &Option<String>, span: Span) -> R<Val> {
        match self.suffix(suffix, span)? {
            Some(d) if !konst::fits(v.into(), d) => Err(Diagnostic::error(format!("literal {v} does not fit in {d}"))
                .with_label(span, "out of range")
                .note(format!("{d} holds {}", konst::int_range(d)))),
            Some(d) => Ok(Val::K(Konst::Int(v), KTy::Of(d))),
            None => Ok(Val::K(Konst::Int(v), KTy::Weak(Need::of(v)))),
        }
    }

    fn suffix(&self, s: &Option<String>, span: Span) -> R<Option<DType>> {
        match s {
            None => Ok(None),
            Some(s) => DType::parse(s).map(Some).ok_or_else(|| unknown_type(s, span)),
        }
    }

    pub(super) fn cast(&mut self, v: Val, d: DType, span: Span) -> R<Val> {
        match v {
            Val::K(k, t) => match konst::cast(k, t, d) {
                Ok(Some((k, t))) => Ok(Val::K(k, t)),
                Err(m) => Err(Diagnostic::error(m).with_label(span, "converted here").note(UNTYPED_NOTE)),
                // Not exact: the run time converts (an untyped float as the exact f64 it is).
                Ok(None) => {
                    let from = match t {
                        KTy::Of(f) => f,
                        KTy::Weak(_) if matches!(k, Konst::Float(_)) => DType::F64,
                        KTy::Weak(_) => DType::I32,
                    };
                    let x = self.coerce(Val::K(k, t), &Type::scalar(from), span)?;
                    Ok(Val::V(self.emit(OpKind::Cast, vec![x], Type::scalar(d), span)))
                }
            },
            Val::V(x) => {
                let t = self.ty(x);
                if t.is_tensor() {
                    return Err(Diagnostic::error("cannot cast a tensor; load a tile first").with_label(span, "a tensor"));
                }
                if t.dtype() == d {
                    return Ok(Val::V(x));
                }
                Ok(Val::V(self.emit(OpKind::Cast, vec![x], t.with_dtype(d), span)))
            }
            Val::Poison => Err(poison()),
            other => Err(not_value(&other, span)),
        }
    }

    fn unary(&mut self, op: UnOp, v: Val, sx: Span, span: Span) -> R<Val> {
        match (op, &v) {
            (UnOp::Neg, Val::K(k, t)) => match konst::neg(*k, *t) {
                Ok(Some((k, t))) => return Ok(Val::K(k, t)),
                Ok(None) => {}
                Err(m) => return Err(Diagnostic::error(m).with_label(span, "overflows")),
            },
            (UnOp::Not, Val::K(Konst::Bool(b), t)) => return Ok(Val::K(Konst::Bool(!b), *t)),
            _ => {}
        }
        let x = self.materialize(v, sx)?;
        let t = self.ty(x);
        let u = match op {
            UnOp::Neg if t.dtype() == DType::Bool => return Err(Diagnostic::error("cannot negate a bool; use `!`").with_label(sx, "bool")),
            UnOp::Neg => UnaryOp::Neg,
            UnOp::Not if t.dtype().is_float() => {
                return Err(Diagnostic::error(format!("`!` needs a bool or integer, found {t}")).with_label(sx, "float"));
            }
            UnOp::Not => UnaryOp::Not,
        };
        Ok(Val::V(self.emit(OpKind::Unary(u), vec![x], t, span)))
    }

    pub(super) fn binary(&mut self, op: BinOp, a: Val, b: Val, sa: Span, sb: Span, span: Span) -> R<Val> {
        if let (Val::K(x, tx), Val::K(y, ty)) = (&a, &b) {
            match konst::binary(op, (*x, *tx), (*y, *ty)) {
                Ok(Some((k, t))) => return Ok(Val::K(k, t)),
                // Not a constant operation: the operands become values and the op's rules apply.
                Ok(None) => {}
                Err(m) => return Err(Diagnostic::error(m).with_label(span, "in this constant expression")),
            }
        }
        if a == Val::Poison || b == Val::Poison {
            return Err(poison());
        }
        let (x, y) = self.unify(a, b, sa, sb)?;
        let t = self.ty(x);
        let d = t.dtype();
        let arith = |bop: BinaryOp| -> R<OpKind> {
            if d == DType::Bool {
                return Err(Diagnostic::error(format!("`{}` is not defined on bool", op.symbol()))
                    .with_label(span, "bool operands")
                    .note("cast to an integer type first"));
            }
            Ok(OpKind::Binary(bop))
        };
        let (kind, rt) = match op {
            BinOp::Add => (arith(BinaryOp::Add)?, t),
            BinOp::Sub => (arith(BinaryOp::Sub)?, t),
            BinOp::Mul => (arith(BinaryOp::Mul)?, t),
            BinOp::Div => (arith(BinaryOp::Div)?, t),
            BinOp::Rem => (arith(BinaryOp::Rem)?, t),
            BinOp::Eq => (OpKind::Cmp(CmpOp::Eq), t.with_dtype(DType::Bool)),
            BinOp::Ne => (OpKind::Cmp(CmpOp::Ne), t.with_dtype(DType::Bool)),
            BinOp::Lt => (OpKind::Cmp(CmpOp::Lt), t.with_dtype(DType::Bool)),
            BinOp::Le => (OpKind::Cmp(CmpOp::Le), t.with_dtype(DType::Bool)),
            BinOp::Gt => (OpKind::Cmp(CmpOp::Gt), t.with_dtype(DType::Bool)),
            BinOp::Ge => (OpKind::Cmp(CmpOp::Ge), t.with_dtype(DType::Bool)),
            BinOp::And | BinOp::Or => {
                if d != DType::Bool {
                    return Err(Diagnostic::error(format!("`{}` needs bool operands, found {d}", op.symbol()))
                        .with_label(span, "here")
                        .note("for bits of integers use `&` or `|`"));
                }
                (OpKind::Binary(if op == BinOp::And { BinaryOp::And } else { BinaryOp::Or }), t)
            }
            BinOp::BitAnd | BinOp::BitOr | BinOp::BitXor | BinOp::Shl | BinOp::Shr => {
                if d.is_float() {
                    return Err(
                        Diagnostic::error(format!("`{}` needs integer or bool operands, found {d}", op.symbol())).with_label(span, "here")
                    );
                }
                let b = match op {
                    BinOp::BitAnd => BinaryOp::And,
                    BinOp::BitOr => BinaryOp::Or,
                    BinOp::BitXor => BinaryOp::Xor,
                    BinOp::Shl => BinaryOp::Shl,
                    _ => BinaryOp::Shr,
                };
                (OpKind::Binary(b), t)
            }
        };
        Ok(Val::V(self.emit(kind, vec![x, y], rt, span)))
    }

    fn index(&mut self, base: &ast::Expr, idx: &[IndexArg], span: Span) -> R<Val> {
        let b = self.lower_expr(base)?;
        let Val::V(x) = b else {
            return Err(Diagnostic::error("only tensors and tiles can be indexed").with_label(base.span, "not indexable"));
        };
        let t = self.ty(x);
        match t {
            Type::Tensor { dtype, rank, mutable } => {
                let mut offs = vec![];
                for a in idx {
                    match a {
                        IndexArg::Expr(e) => {
                            let v = self.lower_expr(e)?;
                            offs.push(self.scalar_i32(v, e.span)?);
                        }
                        IndexArg::NewAxis(s) | IndexArg::Full(s) | IndexArg::Range(_, _, s) => {
                            return Err(Diagnostic::error("a tensor is indexed with scalars (`q[b, h]`)")
                                .with_label(*s, "not allowed on a tensor")
                                .note("load a window (`t.load(offsets, shape)`) to work on part of a tensor"));
                        }
                    }
                }
                if offs.len() == rank {
                    return self.scalar_read(x, offs, span);
                }
                if offs.len() > rank {
                    return Err(Diagnostic::error(format!("wrong number of indices: the tensor has rank {rank}, got {}", offs.len()))
                        .with_label(span, "too many indices")
                        .note("indexing fixes leading dimensions and gives a view (or, with every dimension, reads one element)"));
                }
                let mut ops = vec![x];
                let k = offs.len();
                ops.extend(offs);
                Ok(Val::V(self.emit(OpKind::View, ops, Type::Tensor { dtype, rank: rank - k, mutable }, span)))
            }
            Type::Tile { dtype, shape } => self.index_tile(x, dtype, &shape, idx, span),
        }
    }

    /// `t[i, :, None]` on a tile, as NumPy: an expression picks one element along its axis (the
    /// axis goes), `:` keeps an axis (trailing ones may be left out once something is picked),
    /// `None` inserts an axis of 1. Picking is a masked sum along the axis: every element but the
    /// chosen one becomes the sum's identity (`-0.0` for floats, since `x + -0.0 == x` for every
    /// `x`, `-0.0` and NaN included), so the picked element comes out exactly. A constant index
    /// may count from the end (`t[:, -1]`) and is checked; a computed one outside the axis picks
    /// nothing and gives zero.
    fn index_tile(&mut self, x: Value, dtype: DType, shape: &[i64], idx: &[IndexArg], span: Span) -> R<Val> {
        let picks = idx.iter().filter(|a| matches!(a, IndexArg::Expr(_))).count();
        let ranges = idx.iter().filter(|a| matches!(a, IndexArg::Range(..))).count();
        let named = idx.iter().filter(|a| !matches!(a, IndexArg::NewAxis(_))).count();
        if named > shape.len() || (picks == 0 && ranges == 0 && named != shape.len()) {
            return Err(Diagnostic::error(format!(
                "a tile of rank {} is indexed with an index or `:` per dimension and `None` for new axes",
                shape.len()
            ))
            .with_label(span, "here")
            .note("e.g. `t[:, None]` turns a [n] tile into [n, 1]; `t[:, 0]` is the first column of a 2-D tile"));
        }
        // The axis of `x` each picking index or range applies to.
        let mut picked = vec![];
        let mut axis = 0usize;
        let mut x = x;
        for a in idx {
            match a {
                IndexArg::Expr(e) => {
                    picked.push((axis, e));
                    axis += 1;
                }
                IndexArg::Range(lo, hi, s) => {
                    x = self.slice_axis(x, axis, lo.as_deref(), hi.as_deref(), *s)?;
                    axis += 1;
                }
                IndexArg::Full(_) => axis += 1,
                IndexArg::NewAxis(_) => {}
            }
        }
        let shape = self.ty(x).shape().to_vec();
        let shape = &shape[..];
        // Bool tiles are picked as 0/1 integers.
        let mut cur = if dtype == DType::Bool && picks > 0 {
            self.emit(OpKind::Cast, vec![x], Type::tile(DType::I32, shape.to_vec()), span)
        } else {
            x
        };
        let work = if dtype == DType::Bool { DType::I32 } else { dtype };
        let mut cur_shape = shape.to_vec();
        // From the last picked axis to the first, so that the earlier axes keep their numbers.
        for &(axis, e) in picked.iter().rev() {
            let n = cur_shape[axis];
            let v = self.lower_expr(e)?;
            let i = match v {
                Val::K(Konst::Int(k), _) => {
                    let k = if k < 0 { k + n } else { k };
                    if !(0..n).contains(&k) {
                        return Err(Diagnostic::error(format!("index out of range: axis {axis} of this tile has {n} elements"))
                            .with_label(e.span, "out of range"));
                    }
                    self.konst(Konst::Int(k), &Type::scalar(DType::I32), e.span)?
                }
                v => self.scalar_i32(v, e.span)?,
            };
            let along = self.emit(OpKind::Arange(n), vec![], Type::tile(DType::I32, vec![n]), e.span);
            let mut s = vec![1; cur_shape.len()];
            s[axis] = n;
            let along = self.emit(OpKind::Reshape, vec![along], Type::tile(DType::I32, s), e.span);
            let hit = self.binary(BinOp::Eq, Val::V(along), Val::V(i), e.span, e.span, e.span)?;
            let hit = self.materialize(hit, e.span)?;
            let hit = self.broadcast_to(hit, &cur_shape, e.span)?;
            let identity = if work.is_float() { Konst::Float(-0.0) } else { Konst::Int(0) };
            let zero = self.konst(identity, &Type::scalar(work), e.span)?;
            let zero = self.broadcast_to(zero, &cur_shape, e.span)?;
            let kept = self.emit(OpKind::Select, vec![hit, cur, zero], Type::tile(work, cur_shape.clone()), e.span);
            cur_shape.remove(axis);
            cur = self.emit(OpKind::Reduce(crate::tir::ReduceOp::Sum, axis as u32), vec![kept], Type::tile(work, cur_shape.clone()), span);
        }
        if dtype == DType::Bool && picks > 0 {
            let zero = self.konst(Konst::Int(0), &Type::scalar(DType::I32), span)?;
            let nz = self.binary(BinOp::Ne, Val::V(cur), Val::V(zero), span, span, span)?;
            cur = self.materialize(nz, span)?;
        }
        // New axes, at their places among the axes that remain.
        let mut pos = 0usize;
        for a in idx {
            match a {
                IndexArg::Full(_) | IndexArg::Range(..) => pos += 1,
                IndexArg::Expr(_) => {}
                IndexArg::NewAxis(_) => {
                    if self.ty(cur).shape().len() >= 4 {
                        return Err(Diagnostic::error("tiles have rank at most 4").with_label(span, "too many axes"));
                    }
                    cur = self.keep_axis(cur, pos as u32, span);
                    pos += 1;
                }
            }
        }
        Ok(Val::V(cur))
    }

    /// `x[…, lo:hi, …]` along `axis`: constant bounds, counting from the end when negative,
    /// `lo` 0 and `hi` the length when left out; the length `hi - lo` is a power of two, as
    /// every tile dimension is. Staged through shared memory (`slice`).
    fn slice_axis(&mut self, x: Value, axis: usize, lo: Option<&ast::Expr>, hi: Option<&ast::Expr>, span: Span) -> R<Value> {
        let t = self.ty(x);
        let n = t.shape()[axis];
        let mut bound = |e: Option<&ast::Expr>, default: i64| -> R<i64> {
            let Some(e) = e else { return Ok(default) };
            let v = self.const_int(e, "a slice bound")?;
            Ok(if v < 0 { v.saturating_add(n) } else { v })
        };
        let (a, b) = (bound(lo, 0)?, bound(hi, n)?);
        if !(0 <= a && a < b && b <= n) {
            return Err(Diagnostic::error(format!("slice {a}:{b} is out of range: axis {axis} of this tile has {n} elements"))
                .with_label(span, "out of range")
                .note("a slice takes elements `lo` up to (not including) `hi`, with `0 <= lo < hi <= n`"));
        }
        let len = b - a;
        if (len as u64).count_ones() != 1 {
            return Err(Diagnostic::error(format!("slice {a}:{b} has {len} elements; tile dimensions are powers of two"))
                .with_label(span, "not a power of two")
                .note(format!("e.g. `{a}:{}`", a + (1i64 << (63 - (len as u64).leading_zeros())))));
        }
        if len == n {
            return Ok(x);
        }
        let mut s = t.shape().to_vec();
        s[axis] = len;
        Ok(self.emit(OpKind::Slice(axis as u32, a as u32), vec![x], Type::tile(t.dtype(), s), span))
    }

    fn call(&mut self, f: &ast::Ident, args: &[ast::Expr], span: Span) -> R<Val> {
        let fns = self.fns;
        if let Some(decl) = fns.get(&f.name) {
            return self.inline_call(decl, args, span);
        }
        if let Some(r) = self.builtin(f, args, span) {
            return r;
        }
        Err(self.unknown_name(&f.name, f.span))
    }

    fn inline_call(&mut self, decl: &FuncDecl, args: &[ast::Expr], span: Span) -> R<Val> {
        if decl.name.name == super::modules::UNRESOLVED {
            // Its import failed and was reported.
            return Err(poison());
        }
        if decl.params.len() != args.len() {
            return Err(Diagnostic::error(format!("`{}` takes {} arguments, got {}", decl.name.name, decl.params.len(), args.len()))
                .with_label(span, "wrong argument count")
                .with_secondary(decl.name.span, "defined here"));
        }
        let mut vals = vec![];
        for a in args {
            vals.push((self.lower_expr(a)?, a.span));
        }
        self.inline_vals(decl, vals, span)
    }

    /// The body of `fn` `decl` inlined at `span` on argument values (each with its span), after
    /// the checks of [`Self::inline_call`].
    pub(super) fn inline_vals(&mut self, decl: &FuncDecl, args: Vec<(Val, Span)>, span: Span) -> R<Val> {
        if self.too_large {
            return Err(poison());
        }
        if self.body.ops.len() >= MAX_KERNEL_OPS {
            self.too_large = true;
            let outer = self.call_stack.first().map_or(span, |c| c.1);
            let chain: Vec<&str> = self.call_stack.iter().map(|c| c.0.as_str()).chain([decl.name.name.as_str()]).collect();
            // Not `report`: one label at the kernel's call says it all; the chain names the rest.
            self.errors += 1;
            self.diags.push(
                Diagnostic::error(format!("the kernel has more than {MAX_KERNEL_OPS} operations with its `fn` calls inlined"))
                    .with_label(outer, "inlining this call")
                    .note(format!("call chain: {}", chain.join(" → ")))
                    .note("every call is inlined: a `fn` that calls another twice doubles at each level; compute a value once and reuse it with `let`"),
            );
            return Err(poison());
        }
        if self.call_stack.len() >= MAX_INLINE_DEPTH {
            return Err(Diagnostic::error(format!("calls to `{}` nest too deeply (recursion is not supported)", decl.name.name))
                .with_label(span, "here"));
        }
        let mut vals = vec![];
        for (p, (v, at)) in decl.params.iter().zip(args) {
            let v = match &p.ty {
                Some(t) => self.check_param(v, t, at, &p.name.name)?,
                None => v,
            };
            vals.push(v);
        }
        self.scopes.push(Scopes::default());
        self.call_stack.push((decl.name.name.clone(), span));
        self.push_frame();
        for (p, v) in decl.params.iter().zip(vals) {
            self.declare(&p.name.name, false, None, v, p.name.span);
        }
        let before = self.errors;
        let r = self.lower_block(&decl.body);
        self.call_stack.pop();
        self.scopes.pop();
        if self.errors > before || r == Val::Poison {
            return Err(poison());
        }
        match &decl.ret {
            Some(t) => self.check_param(r, t, span, "the return value"),
            None => Ok(r),
        }
    }

    /// Checks a value against a `fn` signature type (`_` dimensions match anything).
    fn check_param(&mut self, v: Val, t: &ast::TypeExpr, span: Span, what: &str) -> R<Val> {
        match &t.kind {
            TypeKind::Scalar(d) => {
                let d = super::dtype_of(d)?;
                match v {
                    Val::K(k, t @ KTy::Weak(_)) => Ok(Val::K(settle(k, t, d, span)?, KTy::Of(d))),
                    // A constant of the declared type stays a constant (an `if` on it is chosen at
                    // compile time), as it does for an untyped parameter.
                    Val::K(k, KTy::Of(have)) if have == d => Ok(Val::K(k, KTy::Of(d))),
                    v => {
                        let x = self.coerce(v, &Type::scalar(d), span).map_err(|e| e.note(format!("{what} is declared `{d}`")))?;
                        Ok(Val::V(x))
                    }
                }
            }
            TypeKind::Tile { elem, dims } => {
                let d = super::dtype_of(elem)?;
                let Some(vt) = self.type_of(&v) else { return Err(not_value(&v, span)) };
                let ok_rank = vt.shape().len() == dims.len();
                let mut ok = ok_rank && vt.dtype() == d;
                if ok {
                    for (i, de) in dims.iter().enumerate() {
                        if matches!(de.kind, ExprKind::Wildcard) {
                            continue;
                        }
                        if self.const_int(de, "a dimension")? != vt.shape()[i] {
                            ok = false;
                        }
                    }
                }
                if !ok {
                    return Err(Diagnostic::error(format!("{what} must be `{}`, found {vt}", super::host::render_type(t)))
                        .with_label(span, format!("this is {vt}")));
                }
                Ok(v)
            }
            TypeKind::Tensor { .. } => Ok(v),
            TypeKind::Tuple(ts) => match v {
                Val::Tuple(vs) if vs.len() == ts.len() => {
                    let mut out = vec![];
                    for (i, (v, t)) in vs.into_iter().zip(ts).enumerate() {
                        out.push(self.check_param(v, t, span, &format!("element {i} of {what}"))?);
                    }
                    Ok(Val::Tuple(out))
                }
                Val::Tuple(vs) => {
                    Err(Diagnostic::error(format!("{what} is a tuple of {}, declared `{}`", vs.len(), super::host::render_type(t)))
                        .with_label(span, format!("{} values", vs.len())))
                }
                _ => Err(Diagnostic::error(format!("{what} is not a tuple, declared `{}`", super::host::render_type(t)))
                    .with_label(span, "one value")),
            },
        }
    }
}

/// The message of the marker error for "already reported".
pub(crate) const POISON: &str = "\u{0}poison";

pub(crate) fn poison() -> Diagnostic {
    Diagnostic::error(POISON)
}

pub(crate) fn default_dtype(k: Konst) -> DType {
    match k {
        Konst::Int(_) => DType::I32,
        Konst::Float(_) => DType::F32,
        Konst::Bool(_) => DType::Bool,
    }
}

/// The note of an untyped constant that does not fit the type it takes (see `konst`).
const UNTYPED_NOTE: &str = "an untyped integer constant is computed exactly and takes the type of what it meets (i32 alone, and in a cast): all it computes must fit that type; give a literal a suffix (`1i64`) for another type";

/// A compile-time scalar as a constant of `d`: an untyped one takes `d` (an integer must hold it,
/// and everything computed to make it); a typed one of another dtype is left to `konst`'s errors.
pub(super) fn settle(k: Konst, t: KTy, d: DType, span: Span) -> R<Konst> {
    match (k, t) {
        (Konst::Int(i), KTy::Weak(n)) if d.is_int() => konst::settle(i, n, d)
            .map(Konst::Int)
            .map_err(|m| Diagnostic::error(m).with_label(span, format!("used as {d} here")).note(UNTYPED_NOTE)),
        // Rounded once to the float type (f16 and bf16 by the run time, from this exact value).
        (Konst::Int(i), KTy::Weak(_)) if d == DType::F32 => Ok(Konst::Float(i as f32 as f64)),
        (Konst::Int(i), KTy::Weak(_)) if d.is_float() => Ok(Konst::Float(i as f64)),
        (k, _) => Ok(k),
    }
}

/// The error for a tile shape over [`MAX_TILE_ELEMS`] elements (counted without overflow).
pub(crate) fn too_many_elements(shape: &[i64]) -> Option<Diagnostic> {
    let n = shape.iter().try_fold(1i64, |n, &d| n.checked_mul(d));
    match n {
        Some(n) if n <= MAX_TILE_ELEMS => None,
        Some(n) => Some(Diagnostic::error(format!("tile {} has {n} elements; at most {MAX_TILE_ELEMS} are allowed", shape_str(shape)))),
        None => Some(Diagnostic::error(format!(
            "tile {} has more elements than can be counted in 64 bits; at most {MAX_TILE_ELEMS} are allowed",
            shape_str(shape)
        ))),
    }
}

pub(crate) fn check_dim(v: i64, span: Span) -> R<()> {
    if v <= 0 || (v as u64).count_ones() != 1 {
        let next = if v <= 0 { 1 } else { (v as u64).next_power_of_two() };
        return Err(Diagnostic::error(format!("tile dimension {v} is not a power of two"))
            .with_label(span, "must be a power of two")
            .note(format!("use {next} and mask the extra elements (loads pad them, stores drop them)")));
    }
    Ok(())
}

pub(crate) fn dtype_mismatch(want: DType, got: DType, span: Span) -> Diagnostic {
    Diagnostic::error(format!("dtype mismatch: expected {want}, found {got}"))
        .with_label(span, format!("this is {got}"))
        .note(format!("convert it: `(…) as {want}`"))
}

pub(crate) fn describe(v: &Val) -> &'static str {
    match v {
        Val::V(_) | Val::K(..) => "a value",
        Val::Tuple(_) => "a tuple",
        Val::List(_) => "a list",
        Val::Range(..) => "a range",
        Val::Unit => "no value",
        Val::Poison => "an error",
    }
}

pub(crate) fn not_value(v: &Val, span: Span) -> Diagnostic {
    if *v == Val::Poison {
        return poison();
    }
    Diagnostic::error(format!("expected a scalar or a tile, found {}", describe(v))).with_label(span, "not a value")
}

/// How the user writes the op that `kind` comes from (for messages).
fn user_name(kind: &OpKind) -> String {
    match kind {
        OpKind::Reduce(r, _) => format!(".{}", r.name()),
        OpKind::Scan(crate::tir::ScanOp::Sum, _) => ".cumsum".into(),
        OpKind::Scan(crate::tir::ScanOp::Max, _) => ".cummax".into(),
        OpKind::Scan(crate::tir::ScanOp::Min, _) => ".cummin".into(),
        OpKind::Scan(crate::tir::ScanOp::Prod, _) => ".cumprod".into(),
        OpKind::ArgReduce(a, _) => format!(".{}", a.name()),
        OpKind::Permute(_) => "permute".into(),
        other => other.mnemonic(),
    }
}

/// Whether an `if` expression has a value: an `else`, and a value at the end of both branches.
fn if_gives_value(e: &ast::Expr) -> bool {
    let block_value = |b: &ast::Block| b.tail.as_deref().is_some_and(|t| !matches!(t.kind, ExprKind::If(..)) || if_gives_value(t));
    match &e.kind {
        ExprKind::If(_, t, Some(f)) => block_value(t) && block_value(f),
        ExprKind::If(..) => false,
        _ => true,
    }
}

/// Names assigned (`x = …`, `x += …`) anywhere in a block, nested blocks included.
fn collect_assigned(b: &ast::Block, out: &mut Vec<String>) {
    for s in &b.stmts {
        match &s.kind {
            StmtKind::Assign { target, .. } => out.push(target.name.clone()),
            StmtKind::For { body, .. } | StmtKind::While { body, .. } => collect_assigned(body, out),
            StmtKind::Expr(e) | StmtKind::Let { init: e, .. } => collect_assigned_expr(e, out),
            StmtKind::Return | StmtKind::Break | StmtKind::Continue => {}
        }
    }
    if let Some(t) = &b.tail {
        collect_assigned_expr(t, out);
    }
}

fn collect_assigned_expr(e: &ast::Expr, out: &mut Vec<String>) {
    if let ExprKind::If(_, t, f) = &e.kind {
        collect_assigned(t, out);
        if let Some(f) = f {
            collect_assigned(f, out);
        }
    }
}

/// The axis `i` such that `part` is `full` without it, if there is one.
fn removed_axis(full: &[i64], part: &[i64]) -> Option<usize> {
    if full.len() != part.len() + 1 {
        return None;
    }
    (0..full.len()).rev().find(|&i| full[..i] == part[..i] && full[i + 1..] == part[i..])
}
