//! Host expressions: `#[grid]` sizes and `#[require]` conditions, evaluated at launch over
//! dimension symbols and integer scalar parameters. `fn` calls (like `cdiv`) are inlined
//! symbolically.

use crate::diag::{Diagnostic, Span};
use crate::syntax::ast::{self, BinOp, ExprKind, FuncDecl, StmtKind, UnOp};
use crate::tir::{ConstValue, HostExpr, HostOp, Param, ParamKind};
use std::cell::Cell;
use std::collections::HashMap;

pub(super) struct HostCtx<'a> {
    pub consts: &'a [(String, ConstValue)],
    pub params: &'a [Param],
    pub fns: &'a HashMap<String, FuncDecl>,
    /// Expression nodes lowered for the current attribute argument (see [`MAX_NODES`]).
    pub nodes: Cell<usize>,
}

const MAX_DEPTH: usize = 32;
/// Most expression nodes one launch-time expression may visit, its `fn` calls inlined (a `fn`
/// that uses its argument twice doubles at each level of calls).
pub(super) const MAX_NODES: usize = 4096;
/// Deepest launch-time expression tree: it is evaluated at every launch and written in the AOT
/// metadata (JSON, whose readers bound nesting).
pub(super) const MAX_TREE_DEPTH: usize = 48;

fn depth(h: &HostExpr) -> usize {
    match h {
        HostExpr::Neg(x) | HostExpr::Not(x) => 1 + depth(x),
        HostExpr::Bin(_, a, b) => 1 + depth(a).max(depth(b)),
        _ => 1,
    }
}

fn bin(op: HostOp, a: HostExpr, b: HostExpr) -> HostExpr {
    // Fold constants so that `cdiv(M, 128)` prints as `((M + 127) / 128)`.
    if let (HostExpr::Int(x), HostExpr::Int(y)) = (&a, &b) {
        let v = HostExpr::Bin(op, Box::new(a.clone()), Box::new(b.clone())).eval(&|_| None);
        if let Ok(v) = v {
            return match op {
                HostOp::Eq | HostOp::Ne | HostOp::Lt | HostOp::Le | HostOp::Gt | HostOp::Ge | HostOp::And | HostOp::Or => {
                    HostExpr::Bool(v != 0)
                }
                _ => HostExpr::Int(v),
            };
        }
        let _ = (x, y);
    }
    // `(M + 128) - 1` → `M + 127` (unless `128 - 1` itself overflows; a folded constant that
    // overflows stays unfolded, so the launch reports it).
    if let (HostOp::Sub, HostExpr::Bin(HostOp::Add, l, r), HostExpr::Int(c)) = (op, &a, &b)
        && let HostExpr::Int(k) = **r
        && let Some(kc) = k.checked_sub(*c)
    {
        return HostExpr::Bin(HostOp::Add, l.clone(), Box::new(HostExpr::Int(kc)));
    }
    HostExpr::Bin(op, Box::new(a), Box::new(b))
}

impl HostCtx<'_> {
    pub fn lower(&self, e: &ast::Expr, depth: usize) -> Result<HostExpr, Diagnostic> {
        self.nodes.set(0);
        let h = self.lower_in(e, &HashMap::new(), depth);
        if self.nodes.get() > MAX_NODES {
            return Err(Diagnostic::error(format!(
                "this launch-time expression has more than {MAX_NODES} operations with its `fn` calls inlined"
            ))
            .with_label(e.span, "too large")
            .note("every call is inlined: a `fn` that uses its argument twice doubles at each level of calls"));
        }
        let h = h?;
        if self::depth(&h) > MAX_TREE_DEPTH {
            return Err(Diagnostic::error(format!(
                "this launch-time expression nests more than {MAX_TREE_DEPTH} operations deep, its `fn` calls inlined"
            ))
            .with_label(e.span, "too deep")
            .note("split it, e.g. into several `#[require(..)]` conditions"));
        }
        Ok(h)
    }

    fn lower_in(&self, e: &ast::Expr, env: &HashMap<String, HostExpr>, depth: usize) -> Result<HostExpr, Diagnostic> {
        self.nodes.set(self.nodes.get() + 1);
        if self.nodes.get() > MAX_NODES {
            // `lower` reports it, at the whole expression.
            return Err(super::expr::poison());
        }
        let not_host = |span: Span| {
            Diagnostic::error("this is not allowed in a launch-time expression")
                .with_label(span, "not a host expression")
                .note("`#[grid]` and `#[require]` use integers, consts, dimension symbols, integer scalar parameters, arithmetic, comparisons, `min`, `max` and `fn` calls")
        };
        Ok(match &e.kind {
            ExprKind::Int(v, _) => HostExpr::Int(*v),
            ExprKind::Bool(b) => HostExpr::Bool(*b),
            ExprKind::Paren(e) => self.lower_in(e, env, depth)?,
            ExprKind::Name(n) => {
                if let Some(h) = env.get(&n.name) {
                    h.clone()
                } else if let Some((_, v)) = self.consts.iter().find(|(c, _)| c == &n.name) {
                    match v {
                        ConstValue::Int(i) => HostExpr::Int(*i),
                        ConstValue::Bool(b) => HostExpr::Bool(*b),
                    }
                } else if self.is_symbol(&n.name) {
                    HostExpr::Sym(n.name.clone())
                } else {
                    return Err(Diagnostic::error(format!("`{}` is not a dimension symbol, const or integer parameter", n.name))
                        .with_label(n.span, "unknown in a launch-time expression"));
                }
            }
            ExprKind::Unary(UnOp::Neg, x) => match self.lower_in(x, env, depth)? {
                HostExpr::Int(v) if v != i64::MIN => HostExpr::Int(-v),
                h => HostExpr::Neg(Box::new(h)),
            },
            ExprKind::Unary(UnOp::Not, x) => match self.lower_in(x, env, depth)? {
                HostExpr::Bool(v) => HostExpr::Bool(!v),
                h => HostExpr::Not(Box::new(h)),
            },
            ExprKind::Binary(op, a, b) => {
                let hop = match op {
                    BinOp::Add => HostOp::Add,
                    BinOp::Sub => HostOp::Sub,
                    BinOp::Mul => HostOp::Mul,
                    BinOp::Div => HostOp::Div,
                    BinOp::Rem => HostOp::Rem,
                    BinOp::Eq => HostOp::Eq,
                    BinOp::Ne => HostOp::Ne,
                    BinOp::Lt => HostOp::Lt,
                    BinOp::Le => HostOp::Le,
                    BinOp::Gt => HostOp::Gt,
                    BinOp::Ge => HostOp::Ge,
                    BinOp::And => HostOp::And,
                    BinOp::Or => HostOp::Or,
                    _ => return Err(not_host(e.span)),
                };
                bin(hop, self.lower_in(a, env, depth)?, self.lower_in(b, env, depth)?)
            }
            ExprKind::Call(f, args) if (f.name == "min" || f.name == "max") && args.len() == 2 => {
                let op = if f.name == "min" { HostOp::Min } else { HostOp::Max };
                bin(op, self.lower_in(&args[0], env, depth)?, self.lower_in(&args[1], env, depth)?)
            }
            ExprKind::Call(f, args) => {
                let Some(decl) = self.fns.get(&f.name) else {
                    return Err(Diagnostic::error(format!("unknown function `{}`", f.name))
                        .with_label(f.span, "not found")
                        .note("functions are defined with `fn` or imported with `use std::math::cdiv;`"));
                };
                if decl.name.name == super::modules::UNRESOLVED {
                    return Err(super::expr::poison());
                }
                if depth >= MAX_DEPTH {
                    return Err(Diagnostic::error("function calls nest too deeply (recursion?)").with_label(f.span, "here"));
                }
                if decl.params.len() != args.len() {
                    return Err(Diagnostic::error(format!("`{}` takes {} arguments, got {}", f.name, decl.params.len(), args.len()))
                        .with_label(e.span, "wrong argument count"));
                }
                let mut inner = HashMap::new();
                for (p, a) in decl.params.iter().zip(args) {
                    inner.insert(p.name.name.clone(), self.lower_in(a, env, depth)?);
                }
                for s in &decl.body.stmts {
                    match &s.kind {
                        StmtKind::Let { pat: ast::Pattern::Name(n), init, .. } => {
                            let v = self.lower_in(init, &inner, depth + 1)?;
                            inner.insert(n.name.clone(), v);
                        }
                        _ => return Err(not_host(s.span).with_secondary(e.span, "in this call")),
                    }
                }
                match &decl.body.tail {
                    Some(t) => self.lower_in(t, &inner, depth + 1).map_err(|d| d.with_secondary(e.span, "in this call"))?,
                    None => return Err(Diagnostic::error(format!("`{}` returns no value", f.name)).with_label(e.span, "used here")),
                }
            }
            _ => return Err(not_host(e.span)),
        })
    }

    fn is_symbol(&self, name: &str) -> bool {
        self.params.iter().any(|p| match &p.kind {
            ParamKind::Tensor { dims, .. } => dims.iter().any(|d| matches!(d, crate::tir::Dim::Sym(s) if s == name)),
            ParamKind::Scalar { dtype } => p.name == name && (dtype.is_int() || *dtype == crate::DType::Bool),
        })
    }
}

/// Source-like text of an expression, for launch-time messages (`X >= KS`).
pub(super) fn render(e: &ast::Expr) -> String {
    match &e.kind {
        ExprKind::Int(v, _) => v.to_string(),
        ExprKind::Float(v, _) => format!("{v:?}"),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Name(n) => n.name.clone(),
        ExprKind::Paren(x) => format!("({})", render(x)),
        ExprKind::Unary(UnOp::Neg, x) => format!("-{}", render(x)),
        ExprKind::Unary(UnOp::Not, x) => format!("!{}", render(x)),
        ExprKind::Binary(op, a, b) => format!("{} {} {}", render(a), op.symbol(), render(b)),
        ExprKind::Call(f, args) => format!("{}({})", f.name, args.iter().map(render).collect::<Vec<_>>().join(", ")),
        ExprKind::Str(s) => format!("{s:?}"),
        ExprKind::Inf => "inf".into(),
        ExprKind::Method(r, m, args) => format!("{}.{}({})", render(r), m.name, args.iter().map(render).collect::<Vec<_>>().join(", ")),
        ExprKind::List(xs) => format!("[{}]", xs.iter().map(render).collect::<Vec<_>>().join(", ")),
        ExprKind::Index(b, idx) => {
            let idx: Vec<String> = idx
                .iter()
                .map(|i| match i {
                    ast::IndexArg::Expr(e) => render(e),
                    ast::IndexArg::NewAxis(_) => "None".into(),
                    ast::IndexArg::Full(_) => ":".into(),
                    ast::IndexArg::Range(a, b, _) => {
                        format!(
                            "{}:{}",
                            a.as_ref().map(|e| render(e)).unwrap_or_default(),
                            b.as_ref().map(|e| render(e)).unwrap_or_default()
                        )
                    }
                })
                .collect();
            format!("{}[{}]", render(b), idx.join(", "))
        }
        ExprKind::Cast(x, t) => format!("{} as {}", render(x), render_type(t)),
        _ => "…".into(),
    }
}

/// Source-like text of a type, for messages (`f32[_, _]`).
pub(super) fn render_type(t: &ast::TypeExpr) -> String {
    use ast::TypeKind;
    let dims = |ds: &[ast::Expr]| {
        ds.iter().map(|d| if matches!(d.kind, ExprKind::Wildcard) { "_".to_string() } else { render(d) }).collect::<Vec<_>>().join(", ")
    };
    match &t.kind {
        TypeKind::Scalar(n) => n.name.clone(),
        TypeKind::Tile { elem, dims: ds } => format!("{}[{}]", elem.name, dims(ds)),
        TypeKind::Tensor { mutable, elem, dims: ds } => format!("&{}{}[{}]", if *mutable { "mut " } else { "" }, elem.name, dims(ds)),
        TypeKind::Tuple(ts) => format!("({})", ts.iter().map(render_type).collect::<Vec<_>>().join(", ")),
    }
}
