//! The grammar's semantic actions: spans, literal decoding (numbers, strings) and the few checks
//! that are easier here than in the grammar. Problems become diagnostics; nothing panics.

use super::ast::*;
use super::lexer::{LexError, Tok};
use crate::diag::{Diagnostic, FileId, Span};
use lalrpop_util::ErrorRecovery;

/// The parser's state, shared by every action.
pub(crate) struct Cx<'s> {
    pub file: FileId,
    /// Syntax errors the grammar recovered from (`!`), converted by `parse_file`.
    pub errors: Vec<ErrorRecovery<usize, Tok<'s>, LexError>>,
    /// Errors found by the actions: bad literals, chained comparisons, …
    pub diags: Vec<Diagnostic>,
}

/// What may precede `kernel`/`fn`: doc comment lines and attributes.
pub(crate) enum Meta {
    Doc(String),
    Attr(Attr),
}

impl Meta {
    /// The doc comment (lines joined with `\n`, one leading space of each line removed) and the
    /// attributes, in order.
    pub fn split(meta: Vec<Meta>) -> (Option<String>, Vec<Attr>) {
        let mut docs = Vec::new();
        let mut attrs = Vec::new();
        for m in meta {
            match m {
                Meta::Doc(d) => docs.push(d.strip_prefix(' ').map(str::to_string).unwrap_or(d)),
                Meta::Attr(a) => attrs.push(a),
            }
        }
        let doc = if docs.is_empty() { None } else { Some(docs.join("\n")) };
        (doc, attrs)
    }
}

/// Integer literal suffixes.
pub(crate) const INT_SUFFIXES: &[&str] = &["i8", "i16", "i32", "i64", "u8", "u32", "u64"];
/// Float literal suffixes.
pub(crate) const FLOAT_SUFFIXES: &[&str] = &["f16", "bf16", "f32", "f64"];

impl<'s> Cx<'s> {
    pub fn new(file: FileId) -> Cx<'s> {
        Cx { file, errors: Vec::new(), diags: Vec::new() }
    }

    pub fn span(&self, l: usize, r: usize) -> Span {
        Span::new(self.file, l, r.max(l))
    }

    fn span_from(&self, start: Span, r: usize) -> Span {
        Span::new(self.file, start.start as usize, r.max(start.start as usize))
    }

    /// `l op r`; reports chained comparisons (`a < b < c`), which Rust rejects too.
    pub fn binary(&mut self, op: BinOp, l: Expr, r: Expr) -> Expr {
        if is_comparison(op)
            && let ExprKind::Binary(inner, _, _) = &l.kind
            && is_comparison(*inner)
        {
            self.diags.push(
                Diagnostic::error("comparison operators cannot be chained")
                    .with_label(l.span.to(r.span), "a chain of comparisons")
                    .note("write `a < b && b < c`, or add parentheses to compare a bool"),
            );
        }
        let span = l.span.to(r.span);
        Expr { kind: ExprKind::Binary(op, Box::new(l), Box::new(r)), span }
    }

    pub fn range(l: Expr, r: Expr) -> Expr {
        let span = l.span.to(r.span);
        Expr { kind: ExprKind::Range(Box::new(l), Box::new(r)), span }
    }

    pub fn cast(e: Expr, t: TypeExpr) -> Expr {
        let span = e.span.to(t.span);
        Expr { kind: ExprKind::Cast(Box::new(e), t), span }
    }

    pub fn unary(op_span: Span, op: UnOp, e: Expr) -> Expr {
        let span = op_span.to(e.span);
        Expr { kind: ExprKind::Unary(op, Box::new(e)), span }
    }

    pub fn method(&self, recv: Expr, name: Ident, args: Vec<Expr>, r: usize) -> Expr {
        let span = self.span_from(recv.span, r);
        Expr { kind: ExprKind::Method(Box::new(recv), name, args), span }
    }

    pub fn index(&self, base: Expr, idx: Vec<IndexArg>, r: usize) -> Expr {
        let span = self.span_from(base.span, r);
        Expr { kind: ExprKind::Index(Box::new(base), idx), span }
    }

    pub fn stmt(kind: StmtKind, span: Span) -> Option<(Stmt, bool)> {
        Some((Stmt { kind, span }, false))
    }

    /// A block from its statements (`None` for `;` and recovered errors) and its tail. An `if`
    /// statement without `;` that ends the block becomes its tail.
    pub fn block(stmts: Vec<Option<(Stmt, bool)>>, tail: Option<Expr>, span: Span) -> Block {
        let mut stmts = stmts;
        let mut tail = tail;
        if tail.is_none()
            && matches!(stmts.last(), Some(Some((_, true))))
            && let Some(Some((s, _))) = stmts.pop()
        {
            match s.kind {
                StmtKind::Expr(e) => tail = Some(e),
                kind => stmts.push(Some((Stmt { kind, span: s.span }, false))),
            }
        }
        Block { stmts: stmts.into_iter().flatten().map(|(s, _)| s).collect(), tail: tail.map(Box::new), span }
    }

    /// `use a::b::c;`: the last segment is the imported name.
    pub fn use_single(&mut self, mut path: Vec<Ident>, l: usize, r: usize) -> UseDecl {
        let span = self.span(l, r);
        let name = if path.len() >= 2 { path.pop() } else { None };
        let names = match name {
            Some(n) => vec![n],
            None => {
                self.diags.push(
                    Diagnostic::error("`use` needs a module and the names to import from it")
                        .with_label(span, "no module path")
                        .note("write e.g. `use std::math::cdiv;` or `use std::math::{cdiv, gelu};`"),
                );
                vec![]
            }
        };
        UseDecl { source: UseSource::Path(path), names, span }
    }

    /// A number literal; a bad one is reported and read as `0`.
    pub fn number(&mut self, text: &str, l: usize, r: usize) -> Expr {
        let span = self.span(l, r);
        let kind = match parse_number(text) {
            Ok(kind) => kind,
            Err(e) => {
                let mut d = Diagnostic::error(e.message).with_label(span, e.label);
                if let Some(n) = e.note {
                    d = d.note(n);
                }
                self.diags.push(d);
                ExprKind::Int(0, None)
            }
        };
        Expr { kind, span }
    }

    /// The value of a string literal (`raw` includes the quotes); bad escapes are reported.
    pub fn string(&mut self, raw: &str, l: usize) -> String {
        let inner = raw.strip_prefix('"').unwrap_or(raw);
        let inner = inner.strip_suffix('"').unwrap_or(inner);
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some((j, e)) = chars.next() else {
                break;
            };
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                other => {
                    let start = l + 1 + i;
                    let end = l + 1 + j + other.len_utf8();
                    self.diags.push(
                        Diagnostic::error(format!("unknown escape `\\{other}` in a string"))
                            .with_label(self.span(start, end), "unknown escape")
                            .note("the escapes are `\\n`, `\\t`, `\\r`, `\\0`, `\\\\`, `\\\"` and `\\'`"),
                    );
                }
            }
        }
        out
    }

    /// A string literal as an expression (the format of `print`, the message of `assert`; sema
    /// rejects it anywhere else).
    pub fn string_expr(&mut self, raw: &str, l: usize, r: usize) -> Expr {
        let span = self.span(l, r);
        let text = self.string(raw, l);
        Expr { kind: ExprKind::Str(text), span }
    }
}

fn is_comparison(op: BinOp) -> bool {
    matches!(op, BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge)
}

/// Why a number literal is invalid.
#[derive(Debug, PartialEq)]
pub(crate) struct NumberError {
    pub message: String,
    pub label: String,
    pub note: Option<String>,
}

fn num_err(message: impl Into<String>, label: &str, note: Option<String>) -> NumberError {
    NumberError { message: message.into(), label: label.into(), note }
}

fn suffix_note() -> Option<String> {
    Some(format!("integer suffixes are {}; float suffixes are {}", INT_SUFFIXES.join(", "), FLOAT_SUFFIXES.join(", ")))
}

/// Decodes a `Tok::Number`: `42`, `0x2a`, `0b1010`, `0o17`, `1_000`, `42i64`, `1.0`, `1e-6`,
/// `0.5f32`, `1f32` (an integer with a float suffix is a float, as in Rust).
pub(crate) fn parse_number(text: &str) -> Result<ExprKind, NumberError> {
    let radix = match text.get(..2) {
        Some("0x" | "0X") => 16,
        Some("0o" | "0O") => 8,
        Some("0b" | "0B") => 2,
        _ => 10,
    };
    if radix != 10 {
        let rest = text.get(2..).unwrap_or("");
        let end = rest.find(|c: char| !(c.is_digit(radix) || c == '_')).unwrap_or(rest.len());
        let (digits, suffix) = rest.split_at(end);
        let clean: String = digits.chars().filter(|&c| c != '_').collect();
        let base = match radix {
            16 => "hexadecimal",
            8 => "octal",
            _ => "binary",
        };
        if suffix.starts_with(|c: char| c.is_ascii_hexdigit()) && !INT_SUFFIXES.contains(&suffix) {
            let c = suffix.chars().next().unwrap_or('?');
            return Err(num_err(format!("invalid digit `{c}` in a {base} literal"), "invalid digit", None));
        }
        if clean.is_empty() {
            return Err(num_err(format!("missing digits after `{}`", text.get(..2).unwrap_or("0x")), "no digits", None));
        }
        let suffix = check_suffix(suffix, false)?;
        if suffix.as_deref().is_some_and(|s| FLOAT_SUFFIXES.contains(&s)) {
            return Err(num_err(format!("a {base} literal cannot be a float"), "float suffix", suffix_note()));
        }
        return match u64::from_str_radix(&clean, radix).ok().and_then(|v| i64::try_from(v).ok()) {
            Some(v) => Ok(ExprKind::Int(v, suffix)),
            None => Err(too_large()),
        };
    }

    // Decimal: digits, optional `.digits`, optional exponent, optional suffix.
    let bytes = text.as_bytes();
    let digits_end =
        |from: usize| bytes.iter().skip(from).position(|&b| !(b.is_ascii_digit() || b == b'_')).map_or(bytes.len(), |p| p + from);
    let mut i = digits_end(0);
    let mut is_float = false;
    if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
        is_float = true;
        i = digits_end(i + 1);
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(i + 1), Some(b'+' | b'-')));
        if bytes.get(i + 1 + sign).is_some_and(u8::is_ascii_digit) {
            is_float = true;
            i = digits_end(i + 1 + sign);
        }
    }
    let (number, suffix) = text.split_at(i.min(text.len()));
    let suffix = check_suffix(suffix, is_float)?;
    if suffix.as_deref().is_some_and(|s| FLOAT_SUFFIXES.contains(&s)) {
        is_float = true;
    }
    let clean: String = number.chars().filter(|&c| c != '_').collect();
    if is_float {
        match clean.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(ExprKind::Float(v, suffix)),
            Ok(_) => Err(num_err("float literal is out of range", "too large for f64", Some("use `inf` for infinity".into()))),
            Err(_) => Err(num_err(format!("invalid float literal `{text}`"), "not a number", None)),
        }
    } else {
        clean.parse::<i64>().map(|v| ExprKind::Int(v, suffix)).map_err(|_| too_large())
    }
}

fn too_large() -> NumberError {
    num_err("integer literal is too large", "does not fit in 64 bits", Some(format!("the largest integer literal is {}", i64::MAX)))
}

/// Checks a literal's suffix: empty, an integer type (not on a float), or a float type.
fn check_suffix(suffix: &str, is_float: bool) -> Result<Option<String>, NumberError> {
    if suffix.is_empty() {
        return Ok(None);
    }
    if FLOAT_SUFFIXES.contains(&suffix) || (!is_float && INT_SUFFIXES.contains(&suffix)) {
        return Ok(Some(suffix.to_string()));
    }
    if INT_SUFFIXES.contains(&suffix) {
        return Err(num_err(
            format!("a float literal cannot have the integer suffix `{suffix}`"),
            "integer suffix",
            Some(format!("cast it instead: `(…) as {suffix}`")),
        ));
    }
    Err(num_err(format!("invalid suffix `{suffix}` on a number literal"), "invalid suffix", suffix_note()))
}
