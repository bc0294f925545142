//! `break` and `continue`: a loop that has them is rewritten (AST to AST) into a `while` loop
//! over flags before it is lowered, so that the tile IR keeps structured loops.
//!
//! `while cond { body }` becomes
//!
//! ```text
//! let mut #go = true;                          // with a `break`
//! while if #go { cond } else { false } {       // `cond` is not evaluated after a `break`
//!     let mut #skip = false;                   // with a `continue`
//!     body'
//! }
//! ```
//!
//! and `for i in (lo..hi).step_by(s) { body }` becomes the same `while` over `#i < #hi`, with
//! `let i = #i; #i += #s;` first in the body (so that `continue` needs nothing more). In `body'`
//! `break;` is `#go = false;`, `continue;` is `#skip = true;`, and the statements after an `if`
//! that may have run one are wrapped in `if #go && !#skip { … }`; statements after an exit in
//! the same block are dropped (they cannot run). Exits inside a nested loop belong to that loop,
//! which is rewritten when it is lowered. The flag names start with `#`, which no user name can.

use crate::diag::{Diagnostic, Span};
use crate::syntax::ast::{BinOp, Block, Expr, ExprKind, Ident, Pattern, Stmt, StmtKind, TypeExpr, TypeKind, UnOp};

/// The `break`s and `continue`s of a loop body that belong to this loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exits {
    pub breaks: bool,
    pub continues: bool,
}

impl Exits {
    pub fn any(self) -> bool {
        self.breaks || self.continues
    }

    fn or(self, o: Exits) -> Exits {
        Exits { breaks: self.breaks || o.breaks, continues: self.continues || o.continues }
    }
}

/// The exits in `b` that leave (or continue) the loop whose body `b` is, not a nested loop.
pub fn exits(b: &Block) -> Exits {
    let mut e = b.stmts.iter().fold(Exits::default(), |acc, s| acc.or(stmt_exits(s)));
    if let Some(t) = &b.tail {
        e = e.or(expr_exits(t));
    }
    e
}

fn stmt_exits(s: &Stmt) -> Exits {
    match &s.kind {
        StmtKind::Break => Exits { breaks: true, continues: false },
        StmtKind::Continue => Exits { breaks: false, continues: true },
        StmtKind::Let { init: e, .. } | StmtKind::Assign { value: e, .. } | StmtKind::Expr(e) => expr_exits(e),
        // A nested loop's exits are its own; its range or condition has no statements.
        StmtKind::For { .. } | StmtKind::While { .. } | StmtKind::Return => Exits::default(),
    }
}

fn expr_exits(e: &Expr) -> Exits {
    let mut out = Exits::default();
    walk_blocks(e, &mut |b| out = out.or(exits(b)));
    out
}

/// Calls `f` on each block directly inside `e` (the branches of its `if`s, at any depth of the
/// expression, but not blocks inside those blocks).
fn walk_blocks(e: &Expr, f: &mut dyn FnMut(&Block)) {
    match &e.kind {
        ExprKind::If(c, t, el) => {
            walk_blocks(c, f);
            f(t);
            if let Some(el) = el {
                f(el);
            }
        }
        ExprKind::Unary(_, a) | ExprKind::Cast(a, _) | ExprKind::Paren(a) => walk_blocks(a, f),
        ExprKind::Binary(_, a, b) | ExprKind::Range(a, b) => {
            walk_blocks(a, f);
            walk_blocks(b, f);
        }
        ExprKind::Call(_, args) | ExprKind::Tuple(args) | ExprKind::List(args) => args.iter().for_each(|a| walk_blocks(a, f)),
        ExprKind::Method(r, _, args) => {
            walk_blocks(r, f);
            args.iter().for_each(|a| walk_blocks(a, f));
        }
        ExprKind::Index(b, idx) => {
            walk_blocks(b, f);
            for i in idx {
                match i {
                    crate::syntax::ast::IndexArg::Expr(x) => walk_blocks(x, f),
                    crate::syntax::ast::IndexArg::Range(a, b, _) => a.iter().chain(b).for_each(|x| walk_blocks(x, f)),
                    _ => {}
                }
            }
        }
        ExprKind::Int(..)
        | ExprKind::Float(..)
        | ExprKind::Bool(_)
        | ExprKind::Inf
        | ExprKind::Str(_)
        | ExprKind::Wildcard
        | ExprKind::Name(_) => {}
    }
}

/// The names of one loop's flags (`n` makes them unique in the kernel).
struct Flags {
    go: String,
    skip: String,
    exits: Exits,
}

/// Rewrites loop statement `s` (a `for` or `while` whose body has exits, [`exits`]) into
/// statements without them; `n` is a number no other rewritten loop of the kernel has.
pub fn rewrite(s: &Stmt, n: u32) -> Result<Vec<Stmt>, Diagnostic> {
    let sp = s.span;
    let (body, ex) = match &s.kind {
        StmtKind::For { body, .. } | StmtKind::While { body, .. } => (body, exits(body)),
        _ => return Err(Diagnostic::ice("sema", "loop_exits::rewrite of a statement that is not a loop")),
    };
    let fl = Flags { go: format!("#go{n}"), skip: format!("#skip{n}"), exits: ex };
    let mut out = vec![];
    if ex.breaks {
        out.push(let_(&fl.go, true, None, boolean(true, sp), sp));
    }
    let mut inner = vec![];
    let cond = match &s.kind {
        StmtKind::While { cond, .. } => cond.clone(),
        StmtKind::For { var, iter, .. } => {
            let (lo, hi, step) = range_parts(iter)?;
            let (i, h, st) = (format!("#i{n}"), format!("#hi{n}"), format!("#step{n}"));
            out.push(let_(&h, false, Some(i32_ty(sp)), hi, sp));
            out.push(let_(&st, false, Some(i32_ty(sp)), step, sp));
            out.push(let_(&i, true, Some(i32_ty(sp)), lo, sp));
            inner.push(let_(&var.name, false, None, name(&i, var.span), var.span));
            inner.push(Stmt { kind: StmtKind::Assign { target: ident(&i, sp), op: Some(BinOp::Add), value: name(&st, sp) }, span: sp });
            binary(BinOp::Lt, name(&i, sp), name(&h, sp), iter.span)
        }
        _ => return Err(Diagnostic::ice("sema", "loop_exits::rewrite of a statement that is not a loop")),
    };
    // Once broken, the condition is not evaluated again (it may read what the break guarded).
    let cond = if ex.breaks {
        let cs = cond.span;
        Expr { kind: ExprKind::If(Box::new(name(&fl.go, cs)), tail_block(cond, cs), Some(tail_block(boolean(false, cs), cs))), span: cs }
    } else {
        cond
    };
    if ex.continues {
        inner.push(let_(&fl.skip, true, None, boolean(false, sp), sp));
    }
    let body = rewrite_block(body, &fl)?;
    inner.extend(body.stmts);
    let body = Block { stmts: inner, tail: None, span: body.span };
    out.push(Stmt { kind: StmtKind::While { cond, body }, span: sp });
    Ok(out)
}

/// `lo`, `hi` and the step of a `for` loop's range (`lo..hi` or `(lo..hi).step_by(s)`).
fn range_parts(iter: &Expr) -> Result<(Expr, Expr, Expr), Diagnostic> {
    let strip = |e: &Expr| -> Expr {
        let mut e = e.clone();
        while let ExprKind::Paren(x) = e.kind {
            e = *x;
        }
        e
    };
    let bad = || {
        Diagnostic::error("a `for` loop runs over a range")
            .with_label(iter.span, "not a range")
            .note("write `for i in a..b` or `for i in (a..b).step_by(s)`")
    };
    match strip(iter).kind {
        ExprKind::Range(lo, hi) => Ok((*lo, *hi, int(1, iter.span))),
        ExprKind::Method(r, m, args) if m.name == "step_by" && args.len() == 1 => match strip(&r).kind {
            ExprKind::Range(lo, hi) => {
                let step = args[0].clone();
                if let ExprKind::Int(s, _) = strip(&step).kind
                    && s <= 0
                {
                    return Err(Diagnostic::error(format!("`step_by({s})`: the step must be positive")).with_label(iter.span, "here"));
                }
                Ok((*lo, *hi, step))
            }
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// `b` with its exits turned into flag assignments and what follows them guarded.
fn rewrite_block(b: &Block, fl: &Flags) -> Result<Block, Diagnostic> {
    let mut stmts: Vec<Stmt> = b.stmts.clone();
    let mut tail = b.tail.clone();
    // A trailing `if` (no `;`) with an exit is a statement of the loop's body.
    if let Some(t) = &tail
        && matches!(t.kind, ExprKind::If(..))
        && expr_exits(t).any()
    {
        stmts.push(Stmt { kind: StmtKind::Expr((**t).clone()), span: t.span });
        tail = None;
    }
    let mut out = vec![];
    for (k, s) in stmts.iter().enumerate() {
        match &s.kind {
            StmtKind::Break => {
                out.push(assign(&fl.go, boolean(false, s.span), s.span));
                return Ok(Block { stmts: out, tail: None, span: b.span });
            }
            StmtKind::Continue => {
                out.push(assign(&fl.skip, boolean(true, s.span), s.span));
                return Ok(Block { stmts: out, tail: None, span: b.span });
            }
            StmtKind::Expr(Expr { kind: ExprKind::If(c, t, e), span }) if stmt_exits(s).any() => {
                if expr_exits(c).any() {
                    return Err(unsupported(c.span));
                }
                let t = rewrite_block(t, fl)?;
                let e = e.as_ref().map(|e| rewrite_block(e, fl)).transpose()?;
                out.push(Stmt { kind: StmtKind::Expr(Expr { kind: ExprKind::If(c.clone(), t, e), span: *span }), span: s.span });
                let rest = Block { stmts: stmts[k + 1..].to_vec(), tail: tail.clone(), span: b.span };
                if !rest.stmts.is_empty() || rest.tail.is_some() {
                    let rest = rewrite_block(&rest, fl)?;
                    let live = live(fl, rest.span);
                    out.push(Stmt {
                        kind: StmtKind::Expr(Expr { kind: ExprKind::If(Box::new(live), rest, None), span: b.span }),
                        span: b.span,
                    });
                }
                return Ok(Block { stmts: out, tail: None, span: b.span });
            }
            _ if stmt_exits(s).any() => return Err(unsupported(s.span)),
            _ => out.push(s.clone()),
        }
    }
    if let Some(t) = &tail
        && expr_exits(t).any()
    {
        return Err(unsupported(t.span));
    }
    Ok(Block { stmts: out, tail, span: b.span })
}

fn unsupported(span: Span) -> Diagnostic {
    Diagnostic::error("`break` and `continue` must be statements of the loop's body or of `if` statements in it")
        .with_label(span, "an exit inside an expression")
        .note("an `if` whose value is used cannot leave the loop: assign the value in the branches instead")
}

/// `#go && !#skip` (the parts the loop has): whether the rest of an iteration runs.
fn live(fl: &Flags, span: Span) -> Expr {
    let go = fl.exits.breaks.then(|| name(&fl.go, span));
    let run = fl.exits.continues.then(|| Expr { kind: ExprKind::Unary(UnOp::Not, Box::new(name(&fl.skip, span))), span });
    match (go, run) {
        (Some(a), Some(b)) => binary(BinOp::And, a, b, span),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => boolean(true, span),
    }
}

fn ident(n: &str, span: Span) -> Ident {
    Ident { name: n.to_string(), span }
}

fn name(n: &str, span: Span) -> Expr {
    Expr { kind: ExprKind::Name(ident(n, span)), span }
}

fn boolean(b: bool, span: Span) -> Expr {
    Expr { kind: ExprKind::Bool(b), span }
}

fn int(v: i64, span: Span) -> Expr {
    Expr { kind: ExprKind::Int(v, None), span }
}

fn binary(op: BinOp, a: Expr, b: Expr, span: Span) -> Expr {
    Expr { kind: ExprKind::Binary(op, Box::new(a), Box::new(b)), span }
}

fn tail_block(e: Expr, span: Span) -> Block {
    Block { stmts: vec![], tail: Some(Box::new(e)), span }
}

fn i32_ty(span: Span) -> TypeExpr {
    TypeExpr { kind: TypeKind::Scalar(ident("i32", span)), span }
}

fn let_(n: &str, mutable: bool, ty: Option<TypeExpr>, init: Expr, span: Span) -> Stmt {
    Stmt { kind: StmtKind::Let { pat: Pattern::Name(ident(n, span)), mutable, ty, init }, span }
}

fn assign(n: &str, value: Expr, span: Span) -> Stmt {
    Stmt { kind: StmtKind::Assign { target: ident(n, span), op: None, value }, span }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::ast::Item;

    /// The statements of kernel `k`'s body in `src`.
    fn body(src: &str) -> Vec<Stmt> {
        let (file, errs) = crate::syntax::parse_file(crate::diag::FileId(0), src);
        assert!(errs.is_empty(), "{errs:?}");
        let Some(Item::Func(f)) = file.items.into_iter().next() else { panic!("no kernel") };
        f.body.stmts
    }

    fn names(stmts: &[Stmt]) -> Vec<String> {
        stmts
            .iter()
            .map(|s| match &s.kind {
                StmtKind::Let { pat: Pattern::Name(n), mutable, .. } => format!("let{} {}", if *mutable { " mut" } else { "" }, n.name),
                StmtKind::Assign { target, op, .. } => format!("{}{}=", target.name, op.map(|o| o.symbol()).unwrap_or("")),
                StmtKind::While { .. } => "while".into(),
                StmtKind::For { .. } => "for".into(),
                StmtKind::Expr(Expr { kind: ExprKind::If(..), .. }) => "if".into(),
                StmtKind::Expr(_) => "expr".into(),
                StmtKind::Break => "break".into(),
                StmtKind::Continue => "continue".into(),
                StmtKind::Return => "return".into(),
                StmtKind::Let { .. } => "let (…)".into(),
            })
            .collect()
    }

    #[test]
    fn exits_of_nested_loops_are_their_own() {
        let b = body("kernel k() { for i in 0..4 { while true { break; } if i == 1 { continue; } } }");
        let StmtKind::For { body: outer, .. } = &b[0].kind else { panic!() };
        assert_eq!(exits(outer), Exits { breaks: false, continues: true });
        let StmtKind::While { body: inner, .. } = &outer.stmts[0].kind else { panic!() };
        assert_eq!(exits(inner), Exits { breaks: true, continues: false });
    }

    #[test]
    fn a_for_loop_with_both_becomes_a_guarded_while() {
        let b = body(
            "kernel k() { let mut s = 0; for i in (0..9).step_by(2) { if i == 4 { continue; } s += i; if s > 6 { break; } s += 1; } }",
        );
        let out = rewrite(&b[1], 7).expect("rewrite");
        assert_eq!(names(&out), ["let mut #go7", "let #hi7", "let #step7", "let mut #i7", "while"]);
        let StmtKind::While { cond, body } = &out[4].kind else { panic!() };
        // Once broken, the condition is not evaluated again.
        assert!(matches!(&cond.kind, ExprKind::If(c, _, Some(_)) if matches!(&c.kind, ExprKind::Name(n) if n.name == "#go7")));
        assert_eq!(names(&body.stmts), ["let i", "#i7+=", "let mut #skip7", "if", "if"]);
        assert_eq!(exits(body), Exits::default());
        // `if i == 4 { #skip7 = true; }`, then the rest under `if #go7 && !#skip7`.
        let StmtKind::Expr(Expr { kind: ExprKind::If(_, t, None), .. }) = &body.stmts[3].kind else { panic!() };
        assert_eq!(names(&t.stmts), ["#skip7="]);
        let StmtKind::Expr(Expr { kind: ExprKind::If(live, rest, None), .. }) = &body.stmts[4].kind else { panic!() };
        assert!(matches!(&live.kind, ExprKind::Binary(BinOp::And, ..)));
        assert_eq!(names(&rest.stmts), ["s+=", "if", "if"]);
        let StmtKind::Expr(Expr { kind: ExprKind::If(_, t, None), .. }) = &rest.stmts[1].kind else { panic!() };
        assert_eq!(names(&t.stmts), ["#go7="]);
    }

    #[test]
    fn statements_after_an_exit_are_dropped_and_a_while_keeps_its_condition() {
        let b = body("kernel k() { let mut j = 0; while j < 3 { j += 1; continue; j += 5; } }");
        let out = rewrite(&b[1], 1).expect("rewrite");
        assert_eq!(names(&out), ["while"]);
        let StmtKind::While { cond, body } = &out[0].kind else { panic!() };
        assert!(matches!(cond.kind, ExprKind::Binary(BinOp::Lt, ..)), "no break: the condition as written");
        assert_eq!(names(&body.stmts), ["let mut #skip1", "j+=", "#skip1="]);
    }

    #[test]
    fn an_exit_inside_a_value_is_refused() {
        let b = body("kernel k() { let mut s = 0; for i in 0..4 { s += if i == 2 { break; } else { i }; } }");
        let e = rewrite(&b[1], 1).expect_err("refused");
        assert!(e.message.contains("must be statements"), "{}", e.message);
    }
}
