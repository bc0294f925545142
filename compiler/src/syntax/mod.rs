//! The front end's first stage: a logos lexer and a lalrpop grammar, text → `ast::File`.
//!
//! `lexer.rs` turns the text into tokens (bad characters become error tokens), a pre-pass here
//! drops doc comments that document nothing and bounds the nesting depth (so that no later
//! recursive pass can overflow its stack), and `grammar.lalrpop` (see the comment at its top for
//! precedence, the `if`-tail rule and error recovery) builds the tree, with `actions.rs` decoding
//! literals. Syntax errors become diagnostics that say what was expected, in the user's words, at
//! the offending token; the grammar recovers at statement, block and item level, so one run
//! reports the errors of several statements and items.

mod actions;
pub mod ast;
pub mod lexer;

lalrpop_util::lalrpop_mod!(
    #[allow(clippy::all, unused_qualifications, unused_imports, unused_parens, dead_code)]
    grammar,
    "/syntax/grammar.rs"
);

use crate::diag::{Diagnostic, FileId, Span};
use actions::Cx;
use lalrpop_util::ParseError;
use lexer::{LexError, Spanned, Tok};

/// Most brackets (`(`, `[`, `{`) open at once.
pub const MAX_NESTING: usize = 128;
/// Most operators in one statement (and its enclosing expressions), a bound on the tree's depth.
pub const MAX_OPERATORS: usize = 1024;
/// Most kernels in one file: each is compiled and kept whole (its IR forms and PTX), so this
/// bounds a build's time and memory (about 10 s and 1 GB at the bound). Checked on the tokens,
/// before anything is built.
pub const MAX_KERNELS: usize = 1 << 16;

/// Parses a file. Never fails outright: returns the tree it could build and every syntax error.
/// Items and statements that had syntax errors are left out of the tree.
pub fn parse_file(file: FileId, text: &str) -> (ast::File, Vec<Diagnostic>) {
    let raw = lexer::tokenize(text);
    let tokens = match prepare(file, &raw) {
        Ok(tokens) => tokens,
        Err(d) => return (ast::File::default(), vec![d]),
    };
    let mut cx = Cx::new(file);
    let result = grammar::FileParser::new().parse(&mut cx, tokens.iter().copied().map(Ok::<_, LexError>));
    let reporter = Reporter::new(file, text, &tokens);
    let mut diags = Vec::new();
    let tree = match result {
        Ok(tree) => tree,
        Err(e) => {
            diags.push(reporter.syntax_error(&e));
            ast::File::default()
        }
    };
    for recovered in std::mem::take(&mut cx.errors) {
        diags.push(reporter.syntax_error(&recovered.error));
    }
    diags.append(&mut cx.diags);
    diags.sort_by_key(|d| d.span().map(|s| (s.start, s.end)));
    diags.dedup_by(|a, b| a.message == b.message && a.span() == b.span());
    (tree, diags)
}

/// Drops doc comments that are not at the top level before an item (they are plain comments
/// there), and refuses input nested deeper than the limits.
fn prepare<'s>(file: FileId, raw: &[Spanned<'s>]) -> Result<Vec<Spanned<'s>>, Diagnostic> {
    // A doc comment documents the next `#[…]`, `kernel` or `fn`, after any further doc lines.
    let mut keep_doc = vec![false; raw.len()];
    let mut next = None;
    for (i, t) in raw.iter().enumerate().rev() {
        if let Tok::Doc(_) = t.1 {
            keep_doc[i] = matches!(next, Some(Tok::Hash | Tok::Kernel | Tok::Fn));
        } else {
            next = Some(t.1);
        }
    }
    // For each open bracket: the operator count when it opened, and the count inside it.
    let mut levels: Vec<(usize, usize)> = vec![(0, 0)];
    let mut out = Vec::with_capacity(raw.len());
    let mut kernels = 0;
    for (i, &(l, tok, r)) in raw.iter().enumerate() {
        if tok == Tok::Kernel {
            kernels += 1;
            if kernels > MAX_KERNELS {
                return Err(Diagnostic::error(format!("a file may define at most {MAX_KERNELS} kernels"))
                    .with_label(Span::new(file, l, r), format!("kernel number {kernels}"))
                    .note("split the kernels over several files"));
            }
        }
        let depth = levels.len() - 1;
        let (base, count) = levels.last().copied().unwrap_or((0, 0));
        match tok {
            Tok::Doc(_) => {
                if depth == 0 && keep_doc.get(i).copied().unwrap_or(false) {
                    out.push((l, tok, r));
                }
                continue;
            }
            Tok::LParen | Tok::LBracket | Tok::LBrace => {
                if depth >= MAX_NESTING {
                    return Err(Diagnostic::error("brackets are nested too deeply")
                        .with_label(Span::new(file, l, r), format!("more than {MAX_NESTING} levels"))
                        .note("split the expression with `let` statements or a `fn`"));
                }
                levels.push((base + count, 0));
            }
            Tok::RParen | Tok::RBracket | Tok::RBrace if depth > 0 => {
                levels.pop();
            }
            // A new statement or item: `if` after `;`, `{` or `}` (not `else`) starts a statement.
            Tok::Semi
            | Tok::Let
            | Tok::For
            | Tok::While
            | Tok::Return
            | Tok::Break
            | Tok::Continue
            | Tok::Loop
            | Tok::Kernel
            | Tok::Fn
            | Tok::Use
            | Tok::Hash => {
                if let Some(level) = levels.last_mut() {
                    level.1 = 0;
                }
            }
            Tok::If if i == 0 || matches!(raw.get(i - 1), Some((_, Tok::Semi | Tok::LBrace | Tok::RBrace, _))) => {
                if let Some(level) = levels.last_mut() {
                    level.1 = 0;
                }
            }
            Tok::Plus
            | Tok::Minus
            | Tok::Star
            | Tok::Slash
            | Tok::Percent
            | Tok::EqEq
            | Tok::Ne
            | Tok::Lt
            | Tok::Le
            | Tok::Gt
            | Tok::Ge
            | Tok::AmpAmp
            | Tok::PipePipe
            | Tok::Amp
            | Tok::Pipe
            | Tok::Caret
            | Tok::Shl
            | Tok::Shr
            | Tok::Bang
            | Tok::Dot
            | Tok::DotDot
            | Tok::As
            | Tok::Else => {
                if base + count >= MAX_OPERATORS {
                    return Err(Diagnostic::error("expression is too complex")
                        .with_label(Span::new(file, l, r), format!("more than {MAX_OPERATORS} operators in one statement"))
                        .note("split it into several `let` statements"));
                }
                if let Some(level) = levels.last_mut() {
                    level.1 += 1;
                }
            }
            _ => {}
        }
        out.push((l, tok, r));
    }
    Ok(out)
}

/// Turns lalrpop's errors into diagnostics in the user's terms.
struct Reporter<'a, 's> {
    file: FileId,
    text: &'s str,
    tokens: &'a [Spanned<'s>],
    /// Where the closing brackets that close nothing start, in order.
    unmatched_closers: Vec<usize>,
}

impl<'a, 's> Reporter<'a, 's> {
    fn new(file: FileId, text: &'s str, tokens: &'a [Spanned<'s>]) -> Self {
        let mut depth = 0usize;
        let mut unmatched_closers = Vec::new();
        for &(l, tok, _) in tokens {
            match tok {
                Tok::LParen | Tok::LBracket | Tok::LBrace => depth += 1,
                Tok::RParen | Tok::RBracket | Tok::RBrace if depth == 0 => unmatched_closers.push(l),
                Tok::RParen | Tok::RBracket | Tok::RBrace => depth -= 1,
                _ => {}
            }
        }
        Reporter { file, text, tokens, unmatched_closers }
    }

    fn span(&self, l: usize, r: usize) -> Span {
        Span::new(self.file, l, r.max(l))
    }

    fn syntax_error(&self, e: &ParseError<usize, Tok<'_>, LexError>) -> Diagnostic {
        match e {
            ParseError::UnrecognizedToken { token: (l, tok, r), expected } => {
                let span = self.span(*l, *r);
                if let Tok::Error(kind) = tok {
                    return self.lex_error(*kind, span);
                }
                // `match x { … }`, `struct S { … }`: a keyword of Rust's the language lacks, read
                // as a name, and the syntax broke right after it.
                if let Some(&(pl, Tok::Ident(name), pr)) = self.prev_token(*l)
                    && let Some(hint) = unsupported_keyword(name)
                {
                    return Diagnostic::error(format!("`{name}` is not supported in tile programs"))
                        .with_label(self.span(pl, pr), "not supported")
                        .note(hint);
                }
                let found = tok.describe();
                let mut d = match describe_expected(expected) {
                    Some(want) => Diagnostic::error(format!("expected {want}, found {found}")).with_label(span, format!("expected {want}")),
                    None => Diagnostic::error(format!("unexpected {found}")).with_label(span, "unexpected here"),
                };
                let expects = |t: &str| expected.iter().any(|x| x.trim_matches('"') == t);
                // `let x = 1` ⏎ `let y = …`: point at the end of the line that lacks its `;`.
                if expects(";")
                    && let Some(prev_end) = self.prev_token_end(*l)
                    && self.text.get(prev_end..*l).is_some_and(|gap| gap.contains('\n'))
                {
                    d = d.with_secondary(self.span(prev_end, prev_end), "`;` missing here?");
                }
                if self.prev_token(*l).is_some_and(|t| t.1 == Tok::Return) {
                    d = d.note("`return;` ends the program and takes no value; a `fn` returns its last expression");
                }
                match tok {
                    Tok::Assign | Tok::PlusEq | Tok::MinusEq | Tok::StarEq | Tok::SlashEq if expects(";") => {
                        d = d.note("only a plain name can be assigned to; write to a tensor with `t.store(…)`");
                    }
                    Tok::RParen | Tok::RBracket | Tok::RBrace if !self.is_matched(*l) => {
                        d = d.note(format!("this `{tok}` has no matching opening bracket"));
                    }
                    Tok::Plus | Tok::Minus | Tok::Star | Tok::Slash | Tok::Percent if expects(">") && expects(",") => {
                        d = d.note("a `const` parameter's default that is an expression needs parentheses: `= (…)`");
                    }
                    Tok::Star if self.prev_token(*l).is_some_and(|t| t.1 == Tok::Star && t.2 == *l) => {
                        d = d.note("`**` is not supported: write `pow(x, y)` (`std::math`), or multiply");
                    }
                    Tok::Colon | Tok::ColonColon if expects("]") => {
                        d = d.note("a slice has no step: `lo:hi`, either bound optional (`t[2:6]`, `t[:, -16:]`)");
                    }
                    Tok::DotDot if expects("]") => {
                        d = d.note("a slice of a tile is written `lo:hi` (`t[2:6]`)");
                    }
                    _ => {}
                }
                d
            }
            ParseError::UnrecognizedEof { location, expected } => {
                let at = (*location).max(self.text.len());
                let span = self.span(at, at);
                let mut d = match describe_expected(expected) {
                    Some(want) => {
                        Diagnostic::error(format!("expected {want}, found end of file")).with_label(span, format!("expected {want}"))
                    }
                    None => Diagnostic::error("unexpected end of file").with_label(span, "the file ends here"),
                };
                if let Some((l, tok, r)) = self.unclosed_bracket() {
                    d = d.with_secondary(self.span(l, r), format!("this `{tok}` is not closed"));
                }
                d
            }
            ParseError::InvalidToken { location } => {
                Diagnostic::error("invalid token").with_label(self.span(*location, *location + 1), "not a token")
            }
            ParseError::ExtraToken { token: (l, tok, r) } => {
                Diagnostic::error(format!("unexpected {}", tok.describe())).with_label(self.span(*l, *r), "expected the end of the file")
            }
            ParseError::User { error } => {
                let at = self.text.len();
                self.lex_error(*error, self.span(at, at))
            }
        }
    }

    fn lex_error(&self, kind: LexError, span: Span) -> Diagnostic {
        match kind {
            LexError::UnexpectedChar => {
                let c = self.text.get(span.start as usize..).and_then(|s| s.chars().next()).unwrap_or('?');
                let shown = if c.is_control() || c.is_whitespace() { c.escape_debug().to_string() } else { c.to_string() };
                let mut d = Diagnostic::error(format!("unexpected character `{shown}`")).with_label(span, "not part of the language");
                if c == '\'' {
                    d = d.note("strings use double quotes: \"…\"");
                } else if !c.is_ascii() && c.is_alphabetic() {
                    d = d.note("names are made of ASCII letters, digits and `_`");
                }
                d
            }
            LexError::UnterminatedString => Diagnostic::error("unterminated string literal")
                .with_label(span, "this string is not closed")
                .note("a string ends with `\"` on the line where it starts"),
            LexError::UnterminatedComment => {
                Diagnostic::error("unterminated block comment").with_label(span, "this comment is never closed").note("close it with `*/`")
            }
        }
    }

    /// The token before the one that starts at `start`.
    fn prev_token(&self, start: usize) -> Option<&Spanned<'_>> {
        let i = self.tokens.partition_point(|t| t.0 < start);
        i.checked_sub(1).and_then(|p| self.tokens.get(p))
    }

    /// The end of the token before the one that starts at `start`.
    fn prev_token_end(&self, start: usize) -> Option<usize> {
        self.prev_token(start).map(|t| t.2)
    }

    /// Whether the closing bracket at `at` closes an opening one.
    fn is_matched(&self, at: usize) -> bool {
        self.unmatched_closers.binary_search(&at).is_err()
    }

    /// The innermost bracket still open at the end of the file.
    fn unclosed_bracket(&self) -> Option<Spanned<'_>> {
        let mut open: Vec<Spanned<'_>> = Vec::new();
        for &(l, tok, r) in self.tokens {
            match tok {
                Tok::LParen | Tok::LBracket | Tok::LBrace => open.push((l, tok, r)),
                Tok::RParen | Tok::RBracket | Tok::RBrace => {
                    open.pop();
                }
                _ => {}
            }
        }
        open.pop()
    }
}

/// Tokens that start an expression.
const EXPR_START: &[&str] = &["IDENT", "NUMBER", "STRING", "(", "[", "-", "!", "true", "false", "inf", "if"];
/// Tokens that start a statement that is not an expression.
const STMT_START: &[&str] = &["let", "for", "while", "loop", "break", "continue", "return", ";"];
/// Tokens that continue an expression.
const OPERATORS: &[&str] = &[
    "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "&", "|", "^", "<<", ">>", ".", "[", "(", "as", "..", "+=",
    "-=", "*=", "/=",
];

/// Tokens that can only be binary operators (`-`, `<`, `>`, `&`, `(`, `[`, `.` have other uses).
const BINARY_ONLY: &[&str] = &["+", "*", "/", "%", "==", "!=", "<=", ">=", "&&", "||", "|", "^", "<<", ">>", "as", ".."];

/// "`;` or `}`", "an expression", "a statement or `}`": lalrpop's list of expected terminals in
/// the user's terms, or `None` when it is empty. Operators are left out when anything else fits.
fn describe_expected(expected: &[String]) -> Option<String> {
    let mut names: Vec<&str> = expected.iter().map(|s| s.trim_matches('"')).collect();
    let has = |names: &[&str], n: &str| names.contains(&n);
    let mut first = Vec::new();
    let mut last: Vec<String> = Vec::new();
    if has(&names, "kernel") && has(&names, "fn") && has(&names, "use") {
        first.push("an item (`kernel`, `fn` or `use`)".to_string());
        names.retain(|n| !matches!(*n, "kernel" | "fn" | "use" | "#" | "DOC"));
    }
    let expression = has(&names, "IDENT") && has(&names, "NUMBER") && has(&names, "-");
    if has(&names, "let") && has(&names, "for") {
        first.push("a statement".to_string());
        names.retain(|n| !STMT_START.contains(n) && !EXPR_START.contains(n));
    } else if expression {
        first.push("an expression".to_string());
        names.retain(|n| !EXPR_START.contains(n));
    }
    // After an expression an operator could always come: saying so adds nothing to "expected
    // `;`". Tokens that are only ever operators tell that this is such a place.
    let after_expr = names.iter().any(|n| BINARY_ONLY.contains(n));
    if first.is_empty() && names.iter().all(|n| OPERATORS.contains(n)) {
        if after_expr {
            last.push("an operator".to_string());
            names.clear();
        }
    } else if after_expr {
        names.retain(|n| !OPERATORS.contains(n));
    } else if names.iter().any(|n| !matches!(*n, "." | "[")) {
        names.retain(|n| !matches!(*n, "." | "["));
    }
    let middle = names.iter().map(|n| match *n {
        "IDENT" => "a name".to_string(),
        "NUMBER" => "a number".to_string(),
        "STRING" => "a string".to_string(),
        "DOC" => "a doc comment".to_string(),
        other => format!("`{other}`"),
    });
    let all: Vec<String> = first.into_iter().chain(middle).chain(last).collect();
    match all.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        [init @ .., last] => Some(format!("{} or {last}", init.join(", "))),
    }
}

/// What to write instead of a Rust keyword the language does not have (read as a name:
/// sema reports it where it is used as one, the parser where it breaks the syntax).
pub(crate) fn unsupported_keyword(name: &str) -> Option<&'static str> {
    Some(match name {
        "match" => "use `if … else if … else`",
        "struct" | "enum" | "impl" | "trait" | "type" => "tile programs have tiles, tensors and scalars only; group values in tuples",
        "mod" | "pub" | "static" | "unsafe" | "async" | "await" | "dyn" | "ref" | "move" => {
            "tile programs are kernels and `fn`s; see docs/language.md"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::ast::*;
    use super::*;

    const FIRST: &str = r#"use std::math::cdiv;

/// C = A · B, bf16 in, f32 accumulate, bf16 out.
#[grid(cdiv(M, BM), cdiv(N, BN))]
#[tune(BM = [64, 128], BN = [128, 256], BK = [32, 64], warps = [4, 8], stages = [3, 4])]
kernel matmul<const BM: i32 = 128, const BN: i32 = 128, const BK: i32 = 64>(
    a: &bf16[M, K],
    b: &bf16[K, N],
    c: &mut bf16[M, N],
) {
    let m0 = program_id(0) * BM;
    let n0 = program_id(1) * BN;
    let mut acc: f32[BM, BN] = 0.0;
    for k0 in (0..K).step_by(BK) {
        acc = dot(a.load([m0, k0], [BM, BK]), b.load([k0, n0], [BK, BN]), acc);
    }
    c.store([m0, n0], acc as bf16);
}
"#;

    const ATTENTION: &str = r#"#[grid(cdiv(S, BQ), H, B)]
#[warps(8)]
kernel attention<const BQ: i32 = 128, const BK: i32 = 64, const D: i32 = 128, const CAUSAL: bool = false>(
    q: &bf16[B, H, S, D], k: &bf16[B, H, S, D], v: &bf16[B, H, S, D],
    o: &mut bf16[B, H, S, D], scale: f32,
) {
    let (b, h) = (program_id(2), program_id(1));
    let q0 = program_id(0) * BQ;
    let qt = q[b, h].load([q0, 0], [BQ, D]);
    let mut m: f32[BQ] = -inf;
    let mut l: f32[BQ] = 0.0;
    let mut acc: f32[BQ, D] = 0.0;
    let qk_scale = scale * 1.4426950408889634;   // log2(e): exp2 below
    let kv_end = if CAUSAL { min(S, q0 + BQ) } else { S };
    for k0 in (0..kv_end).step_by(BK) {
        let kt = k[b, h].load([k0, 0], [BK, D]);
        let vt = v[b, h].load([k0, 0], [BK, D]);
        let kpos = k0 + arange(BK);
        let qpos = q0 + arange(BQ);
        let ok = kpos[None, :] < S && (!CAUSAL || kpos[None, :] <= qpos[:, None]);
        let s = where(ok, dot(qt, trans(kt)) * qk_scale, -inf);
        let m_new = max(m, s.max(1));
        let p = exp2(s - m_new[:, None]);
        let alpha = exp2(m - m_new);
        l = l * alpha + p.sum(1);
        acc = acc * alpha[:, None] + dot(p as bf16, vt);
        m = m_new;
    }
    o[b, h].store([q0, 0], (acc / l[:, None]) as bf16);
}
"#;

    const NA2D: &str = r#"#[grid(cdiv(X, TX) * cdiv(Y, TY), H, B)]
#[require(X >= KS, Y >= KS)]
kernel na2d<const TX: i32 = 8, const TY: i32 = 8, const WX: i32 = 16, const WY: i32 = 16,
            const KS: i32 = 7, const D: i32 = 64>(
    q: &bf16[B, H, X, Y, D], k: &bf16[B, H, X, Y, D], v: &bf16[B, H, X, Y, D],
    o: &mut bf16[B, H, X, Y, D], scale: f32,
) {
    let (h, b) = (program_id(1), program_id(2));
    let x0 = (program_id(0) / cdiv(Y, TY)) * TX;
    let y0 = (program_id(0) % cdiv(Y, TY)) * TY;
    let r = KS / 2;
    let kx0 = clamp(x0 - r, 0, X - KS);
    let ky0 = clamp(y0 - r, 0, Y - KS);
    let qt = reshape(q[b, h].load([x0, y0, 0], [TX, TY, D]), [TX * TY, D]);
    let kt = reshape(k[b, h].load([kx0, ky0, 0], [WX, WY, D]), [WX * WY, D]);
    let vt = reshape(v[b, h].load([kx0, ky0, 0], [WX, WY, D]), [WX * WY, D]);
    let si = clamp(x0 + arange(TX * TY) / TY - r, 0, X - KS);   // window start per query
    let sj = clamp(y0 + arange(TX * TY) % TY - r, 0, Y - KS);
    let ki = kx0 + arange(WX * WY) / WY;
    let kj = ky0 + arange(WX * WY) % WY;
    let inside = ki[None, :] >= si[:, None] && ki[None, :] < si[:, None] + KS
              && kj[None, :] >= sj[:, None] && kj[None, :] < sj[:, None] + KS;
    let s = where(inside, dot(qt, trans(kt)) * (scale * 1.4426950408889634), -inf);
    let p = exp2(s - s.max(1)[:, None]);
    let out = dot(p as bf16, vt) / p.sum(1)[:, None];
    o[b, h].store([x0, y0, 0], reshape(out, [TX, TY, D]) as bf16);
}
"#;

    const SPMM: &str = r#"#[grid(R, cdiv(F, BF))]
#[require(R1 == R + 1)]
kernel spmm_csr<const BF: i32 = 64, const BE: i32 = 32>(
    row_ptr: &i32[R1], col_idx: &i32[E], vals: &f32[E],
    x: &f32[N, F], y: &mut f32[R, F],
) {
    let row = program_id(0);
    let f = program_id(1) * BF + arange(BF);
    let (start, end) = (row_ptr[row], row_ptr[row + 1]);
    let mut acc: f32[BF] = 0.0;
    for e0 in (start..end).step_by(BE) {
        let e = e0 + arange(BE);
        let live = e < end;
        let cols = col_idx.gather([e], live, 0);
        let w = vals.gather([e], live, 0.0);
        acc += (x.gather([cols[:, None], f[None, :]], live[:, None], 0.0) * w[:, None]).sum(0);
    }
    y.store([row, program_id(1) * BF], acc);
}
"#;

    const RGCN: &str = r#"#[grid(T, cdiv(FO, BN))]
kernel rgcn<const BE: i32 = 64, const BN: i32 = 64, const FI: i32 = 128>(
    x: &f32[N, FI], w: &f32[RELS, FI, FO],
    src: &i32[E], dst: &i32[E], norm: &f32[E],
    tile_rel: &i32[T], tile_start: &i32[T], tile_end: &i32[T],
    out: &mut f32[N, FO],
) {
    let t = program_id(0);
    let n0 = program_id(1) * BN;
    let e = tile_start[t] + arange(BE);
    let live = e < tile_end[t];
    let s = src.gather([e], live, 0);
    let d = dst.gather([e], live, 0);
    let xs = x.gather([s[:, None], arange(FI)[None, :]], live[:, None], 0.0);
    let msg = dot(xs, w[tile_rel[t]].load([0, n0], [FI, BN])) * norm.gather([e], live, 0.0)[:, None];
    out.atomic_add([d[:, None], (n0 + arange(BN))[None, :]], msg, live[:, None]);
}
"#;

    const SOFTMAX: &str = r#"use std::math::{cdiv, gelu,};
use "helpers/common.tile"::{swizzle};
use "other.tile"::one;

/// Row softmax of a tile: `_` matches any constant size.
fn softmax(x: f32[_, _], axis: i32) -> f32[_, _] {
    let m = x.max(axis);
    let p = exp(x - m[:, None]);
    p / p.sum(axis)[:, None]
}

/* a block comment /* nested */ still a comment */
fn pick(c, a, b) {
    if c { a } else if !c { b } else { a + b }
}

/// Softmax over rows of X.
/// Second doc line.
#[grid(M)]
#[warps(4)] #[stages(3)]
kernel softmax_rows<const BN: i32 = 1024, const FAST: bool = true, const NEG: i32 = -1>(
    x: &f32[M, N], y: &mut f32[M, N],
) {
    let row = program_id(0);
    let t = x.load([row, 0], [1, BN], -inf);
    let s = softmax(t, 1);
    let mut i = 0;
    while i < 1 {
        i += 1;
    }
    if row >= M {
        return;
    }
    if FAST {
        y.store([row, 0], s);
    } else {
        y.store([row, 0], t);
    }
}
"#;

    const VECTOR_ADD: &str = r#"// c = a + b, one block of BLOCK elements per program.
#[grid(cdiv(N, BLOCK))]
kernel vector_add<const BLOCK: i32 = 1024>(a: &f32[N], b: &f32[N], c: &mut f32[N]) {
    let off = program_id(0) * BLOCK;
    let x = a.load([off], [BLOCK]);
    let y = b.load([off], [BLOCK]);
    c.store([off], x + y);
}
"#;

    const ALL: &[(&str, &str)] = &[
        ("first", FIRST),
        ("attention", ATTENTION),
        ("na2d", NA2D),
        ("spmm", SPMM),
        ("rgcn", RGCN),
        ("softmax", SOFTMAX),
        ("vector_add", VECTOR_ADD),
    ];

    fn parse(text: &str) -> (File, Vec<Diagnostic>) {
        parse_file(FileId(0), text)
    }

    fn parse_ok(text: &str) -> File {
        let (f, d) = parse(text);
        assert!(d.is_empty(), "unexpected diagnostics: {d:#?}");
        f
    }

    fn func(f: &File, i: usize) -> &FuncDecl {
        let funcs: Vec<&FuncDecl> = f.items.iter().filter_map(|it| if let Item::Func(f) = it { Some(f) } else { None }).collect();
        funcs[i]
    }

    /// A fully parenthesised rendering, to check precedence.
    fn show(e: &Expr) -> String {
        let list = |xs: &[Expr]| xs.iter().map(show).collect::<Vec<_>>().join(", ");
        match &e.kind {
            ExprKind::Int(v, s) => format!("{v}{}", s.as_deref().unwrap_or("")),
            ExprKind::Float(v, s) => format!("{v:?}{}", s.as_deref().unwrap_or("")),
            ExprKind::Bool(b) => b.to_string(),
            ExprKind::Inf => "inf".into(),
            ExprKind::Str(s) => format!("{s:?}"),
            ExprKind::Wildcard => "_".into(),
            ExprKind::Name(n) => n.name.clone(),
            ExprKind::Unary(UnOp::Neg, x) => format!("(-{})", show(x)),
            ExprKind::Unary(UnOp::Not, x) => format!("(!{})", show(x)),
            ExprKind::Binary(op, a, b) => format!("({} {} {})", show(a), op.symbol(), show(b)),
            ExprKind::Call(f, args) => format!("{}({})", f.name, list(args)),
            ExprKind::Method(r, m, args) => format!("{}.{}({})", show(r), m.name, list(args)),
            ExprKind::Index(b, idx) => {
                let idx: Vec<String> = idx
                    .iter()
                    .map(|i| match i {
                        IndexArg::Expr(e) => show(e),
                        IndexArg::NewAxis(_) => "None".into(),
                        IndexArg::Full(_) => ":".into(),
                        IndexArg::Range(a, b, _) => {
                            format!(
                                "{}:{}",
                                a.as_ref().map(|e| show(e)).unwrap_or_default(),
                                b.as_ref().map(|e| show(e)).unwrap_or_default()
                            )
                        }
                    })
                    .collect();
                format!("{}[{}]", show(b), idx.join(", "))
            }
            ExprKind::Cast(x, t) => match &t.kind {
                TypeKind::Scalar(n) => format!("({} as {})", show(x), n.name),
                _ => format!("({} as ?)", show(x)),
            },
            ExprKind::If(c, t, f) => {
                let blk = |b: &Block| format!("{{{} stmts; {}}}", b.stmts.len(), b.tail.as_deref().map(show).unwrap_or_default());
                match f {
                    Some(f) => format!("if {} {} else {}", show(c), blk(t), blk(f)),
                    None => format!("if {} {}", show(c), blk(t)),
                }
            }
            ExprKind::Tuple(xs) => format!("tuple({})", list(xs)),
            ExprKind::List(xs) => format!("[{}]", list(xs)),
            ExprKind::Range(a, b) => format!("({}..{})", show(a), show(b)),
            ExprKind::Paren(x) => show(x),
        }
    }

    /// Parses `e` as the tail of a `fn` and renders it.
    fn expr(e: &str) -> String {
        let f = parse_ok(&format!("fn f() {{ {e} }}"));
        show(func(&f, 0).body.tail.as_deref().expect("a tail"))
    }

    fn expr_err(e: &str) -> Vec<Diagnostic> {
        parse(&format!("fn f() {{ {e} }}")).1
    }

    #[test]
    fn canonical_programs_parse() {
        for (name, text) in ALL {
            let (f, d) = parse(text);
            assert!(d.is_empty(), "{name}: {d:#?}");
            assert!(!f.items.is_empty(), "{name}: no items");
        }
    }

    #[test]
    fn first_kernel_structure() {
        let f = parse_ok(FIRST);
        assert_eq!(f.items.len(), 2);
        let Item::Use(u) = &f.items[0] else { panic!("not a use") };
        assert_eq!(u.names[0].name, "cdiv");
        assert!(matches!(&u.source, UseSource::Path(p) if p.len() == 2 && p[1].name == "math"));
        let k = func(&f, 0);
        assert!(k.is_kernel);
        assert_eq!(k.name.name, "matmul");
        assert_eq!(k.doc.as_deref(), Some("C = A · B, bf16 in, f32 accumulate, bf16 out."));
        assert_eq!(k.attrs.len(), 2);
        assert_eq!(k.attrs[0].name.name, "grid");
        assert!(matches!(&k.attrs[1].args[0], AttrArg::Named(n, e) if n.name == "BM" && show(e) == "[64, 128]"));
        assert_eq!(k.consts.len(), 3);
        assert_eq!(k.consts[2].name.name, "BK");
        assert_eq!(k.consts[2].default.as_ref().map(show).as_deref(), Some("64"));
        assert_eq!(k.params.len(), 3);
        assert!(matches!(&k.params[2].ty, Some(TypeExpr { kind: TypeKind::Tensor { mutable: true, dims, .. }, .. }) if dims.len() == 2));
        assert!(matches!(&k.params[0].ty, Some(TypeExpr { kind: TypeKind::Tensor { mutable: false, .. }, .. })));
        assert_eq!(k.body.stmts.len(), 5);
        assert!(k.body.tail.is_none());
        let StmtKind::Let { mutable: true, ty: Some(ty), .. } = &k.body.stmts[2].kind else { panic!("let mut") };
        assert!(matches!(&ty.kind, TypeKind::Tile { elem, dims } if elem.name == "f32" && dims.len() == 2));
        let StmtKind::For { var, iter, body } = &k.body.stmts[3].kind else { panic!("for") };
        assert_eq!(var.name, "k0");
        assert_eq!(show(iter), "(0..K).step_by(BK)");
        assert!(matches!(&body.stmts[0].kind, StmtKind::Assign { op: None, .. }));
        let StmtKind::Expr(e) = &k.body.stmts[4].kind else { panic!("expr stmt") };
        assert_eq!(show(e), "c.store([m0, n0], (acc as bf16))");
        // Spans: the kernel's name, and a statement.
        assert_eq!(&FIRST[k.name.span.start as usize..k.name.span.end as usize], "matmul");
        let s = &k.body.stmts[0];
        assert_eq!(&FIRST[s.span.start as usize..s.span.end as usize], "let m0 = program_id(0) * BM;");
    }

    #[test]
    fn attention_structure() {
        let f = parse_ok(ATTENTION);
        let k = func(&f, 0);
        assert_eq!(k.consts.len(), 4);
        assert_eq!(k.consts[3].default.as_ref().map(show).as_deref(), Some("false"));
        assert_eq!(k.params.len(), 5);
        assert!(matches!(&k.params[4].ty, Some(TypeExpr { kind: TypeKind::Scalar(n), .. }) if n.name == "f32"));
        let StmtKind::Let { pat: Pattern::Tuple(names, _), init, .. } = &k.body.stmts[0].kind else { panic!() };
        assert_eq!(names.len(), 2);
        assert_eq!(show(init), "tuple(program_id(2), program_id(1))");
        let StmtKind::Let { init, .. } = &k.body.stmts[3].kind else { panic!() };
        assert_eq!(show(init), "(-inf)");
        let StmtKind::Let { init, .. } = &k.body.stmts[7].kind else { panic!() };
        assert_eq!(show(init), "if CAUSAL {0 stmts; min(S, (q0 + BQ))} else {0 stmts; S}");
        let StmtKind::For { body, .. } = &k.body.stmts[8].kind else { panic!() };
        let StmtKind::Let { init, .. } = &body.stmts[4].kind else { panic!() };
        assert_eq!(show(init), "((kpos[None, :] < S) && ((!CAUSAL) || (kpos[None, :] <= qpos[:, None])))");
        let StmtKind::Assign { value, .. } = &body.stmts[10].kind else { panic!() };
        assert_eq!(show(value), "((acc * alpha[:, None]) + dot((p as bf16), vt))");
    }

    #[test]
    fn fn_items_and_if_tail() {
        let f = parse_ok(SOFTMAX);
        assert_eq!(f.items.len(), 6);
        let Item::Use(u) = &f.items[0] else { panic!() };
        assert_eq!(u.names.len(), 2);
        let Item::Use(u) = &f.items[1] else { panic!() };
        assert!(matches!(&u.source, UseSource::File(p, _) if p == "helpers/common.tile"));
        let Item::Use(u) = &f.items[2] else { panic!() };
        assert!(matches!(&u.source, UseSource::File(p, _) if p == "other.tile") && u.names[0].name == "one");
        let sm = func(&f, 0);
        assert!(!sm.is_kernel);
        assert!(matches!(&sm.ret, Some(TypeExpr { kind: TypeKind::Tile { dims, .. }, .. })
            if dims.iter().all(|d| matches!(d.kind, ExprKind::Wildcard))));
        assert_eq!(sm.body.tail.as_deref().map(show).as_deref(), Some("(p / p.sum(axis)[:, None])"));
        let pick = func(&f, 1);
        assert!(pick.params.iter().all(|p| p.ty.is_none()));
        assert_eq!(
            pick.body.tail.as_deref().map(show).as_deref(),
            Some("if c {0 stmts; a} else {0 stmts; if (!c) {0 stmts; b} else {0 stmts; (a + b)}}")
        );
        let k = func(&f, 2);
        assert_eq!(k.doc.as_deref(), Some("Softmax over rows of X.\nSecond doc line."));
        assert_eq!(k.attrs.len(), 3);
        assert_eq!(k.consts[2].default.as_ref().map(show).as_deref(), Some("(-1)"));
        // An `if` statement followed by more is a statement; the trailing one is the tail.
        assert_eq!(k.body.stmts.len(), 6);
        assert!(matches!(k.body.stmts[4].kind, StmtKind::While { .. }));
        let StmtKind::Expr(Expr { kind: ExprKind::If(_, then, None), .. }) = &k.body.stmts[5].kind else { panic!() };
        assert!(matches!(then.stmts[0].kind, StmtKind::Return));
        let Some(ExprKind::If(_, then, Some(_))) = k.body.tail.as_deref().map(|e| &e.kind) else { panic!("if tail") };
        assert_eq!(then.stmts.len(), 1);
        // The stores after it make it a statement again.
        let f = parse_ok(VECTOR_ADD);
        assert!(func(&f, 0).body.tail.is_none());
    }

    #[test]
    fn if_statement_rules() {
        // `if` at the start of a statement ends at its `}`: `-x` is the next statement.
        let f = parse_ok("fn f(c, x) { if c { 1 } else { 2 } -x }");
        let b = &func(&f, 0).body;
        assert_eq!(b.stmts.len(), 1);
        assert_eq!(b.tail.as_deref().map(show).as_deref(), Some("(-x)"));
        // `;` keeps a trailing `if` a statement.
        let f = parse_ok("fn f(c) { if c { g(); }; }");
        let b = &func(&f, 0).body;
        assert_eq!(b.stmts.len(), 1);
        assert!(b.tail.is_none());
        // In expression position an `if` is an operand.
        assert_eq!(expr("let y = if c { 1 } else { 2 } + 3; y"), "y");
        let f = parse_ok("fn f(c) { let y = if c { 1 } else { 2 } + 3; }");
        let StmtKind::Let { init, .. } = &func(&f, 0).body.stmts[0].kind else { panic!() };
        assert_eq!(show(init), "(if c {0 stmts; 1} else {0 stmts; 2} + 3)");
        // Statements after block statements need no `;`.
        let f = parse_ok("fn f(n) { for i in 0..n { g(i); } while n > 0 { n -= 1; } let z = 0; z }");
        assert_eq!(func(&f, 0).body.stmts.len(), 3);
    }

    #[test]
    fn precedence() {
        assert_eq!(expr("a + b * c - d"), "((a + (b * c)) - d)");
        assert_eq!(expr("-x as f32 * 2"), "(((-x) as f32) * 2)");
        assert_eq!(expr("!a || b && c == d"), "((!a) || (b && (c == d)))");
        assert_eq!(expr("a | b ^ c & d << 1 + 2"), "(a | (b ^ (c & (d << (1 + 2)))))");
        assert_eq!(expr("a < b + 1 && c >= d"), "((a < (b + 1)) && (c >= d))");
        assert_eq!(expr("0..n - 1"), "(0..(n - 1))");
        assert_eq!(expr("x.sum(1)[:, None] / 2"), "(x.sum(1)[:, None] / 2)");
        assert_eq!(expr("q[b, h].load([0], [D])"), "q[b, h].load([0], [D])");
        assert_eq!(expr("(a, b,)"), "tuple(a, b)");
        assert_eq!(expr("(a,)"), "tuple(a)");
        assert_eq!(expr("()"), "tuple()");
        assert_eq!(expr("[]"), "[]");
        assert_eq!(expr("f()"), "f()");
        assert_eq!(expr("- - x"), "(-(-x))");
        assert_eq!(expr("x as i32 as f32"), "((x as i32) as f32)");
        assert_eq!(expr("a % b * c / d"), "(((a % b) * c) / d)");
        assert_eq!(expr("(a + b) * c"), "((a + b) * c)");
    }

    #[test]
    fn literals() {
        assert_eq!(expr("42"), "42");
        assert_eq!(expr("0x2a"), "42");
        assert_eq!(expr("0b101_0"), "10");
        assert_eq!(expr("0o17"), "15");
        assert_eq!(expr("1_000"), "1000");
        assert_eq!(expr("42i64"), "42i64");
        assert_eq!(expr("7u32"), "7u32");
        assert_eq!(expr("0xffu8"), "255u8");
        assert_eq!(expr("1.0"), "1.0");
        assert_eq!(expr("1e-6"), "1e-6");
        assert_eq!(expr("2E+3"), "2000.0");
        assert_eq!(expr("1e3"), "1000.0");
        assert_eq!(expr("0.5f32"), "0.5f32");
        assert_eq!(expr("1.5e-3bf16"), "0.0015bf16");
        assert_eq!(expr("1f32"), "1.0f32");
        assert_eq!(expr("true && false"), "(true && false)");
        assert_eq!(expr(&i64::MAX.to_string()), i64::MAX.to_string());
        for (bad, what) in [
            ("9223372036854775808", "too large"),
            ("99999999999999999999999", "too large"),
            ("0xffffffffffffffffff", "too large"),
            ("1.5i32", "integer suffix"),
            ("12abc", "invalid suffix `abc`"),
            ("1e", "invalid suffix `e`"),
            ("0x", "missing digits"),
            ("0b102", "invalid digit `2`"),
            ("0x1f32", "fits"),
            ("1e400", "out of range"),
            ("0x10f64", "fits"),
        ] {
            let d = expr_err(bad);
            if what == "fits" {
                assert!(d.is_empty(), "{bad}: {d:#?}");
                continue;
            }
            assert_eq!(d.len(), 1, "{bad}: {d:#?}");
            assert!(d[0].message.contains(what), "{bad}: {}", d[0].message);
            let s = d[0].span().expect("span");
            assert_eq!((s.start, s.end), (9, 9 + bad.len() as u32), "{bad}");
        }
    }

    #[test]
    fn lexer_tokens() {
        use lexer::Tok as T;
        let toks: Vec<T> = lexer::tokenize("_x _ a::b .. . ..= -> >>= /// doc\n//// not doc\n// plain\n/* c */ \"s\\\"t\"")
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(
            toks,
            vec![
                T::Ident("_x"),
                T::Underscore,
                T::Ident("a"),
                T::ColonColon,
                T::Ident("b"),
                T::DotDot,
                T::Dot,
                T::DotDot,
                T::Assign,
                T::Arrow,
                T::Shr,
                T::Assign,
                T::Doc(" doc"),
                T::Str("\"s\\\"t\""),
            ]
        );
        let toks = lexer::tokenize("a $ é \"open\nb /* never closed");
        let kinds: Vec<_> = toks.iter().map(|t| t.1).collect();
        assert_eq!(
            kinds,
            vec![
                T::Ident("a"),
                T::Error(LexError::UnexpectedChar),
                T::Error(LexError::UnexpectedChar),
                T::Error(LexError::UnterminatedString),
                T::Ident("b"),
                T::Error(LexError::UnterminatedComment),
            ]
        );
        assert_eq!((toks[2].0, toks[2].2), (4, 6), "é is two bytes");
        assert_eq!(toks[5].2 - toks[5].0, 2, "the error covers `/*`");
    }

    fn messages(text: &str) -> Vec<(String, String)> {
        let (_, d) = parse(text);
        d.iter()
            .map(|d| {
                let s = d.span().expect("every syntax error has a span");
                let at = text.get(s.start as usize..s.end as usize).unwrap_or("<bad span>").to_string();
                (d.message.clone(), at)
            })
            .collect()
    }

    #[test]
    fn syntax_errors_are_located() {
        let m = |text: &str, msg: &str, at: &str| {
            let got = messages(text);
            assert_eq!(got.first(), Some(&(msg.to_string(), at.to_string())), "{text:?}: {got:?}");
        };
        m("kernel k() {\n    let x = 1\n    let y = 2;\n}\n", "expected `;`, found `let`", "let");
        let (_, d) = parse("kernel k() {\n    let x = 1\n    let y = 2;\n}\n");
        assert_eq!(d.len(), 1);
        assert!(d[0].labels.iter().any(|l| !l.primary && l.span.start == 26), "{d:#?}");
        m("fn f() { g(1; }", "expected `)` or `,`, found `;`", ";");
        m("fn f() { let = 3; }", "expected `mut`, `(` or a name, found `=`", "=");
        m("fn f() { let x = ; }", "expected an expression, found `;`", ";");
        m("fn f() { x.y; }", "expected `(`, found `;`", ";");
        m("kernel k() { let x = 3 $ 4; }", "unexpected character `$`", "$");
        m("kernel k() { x = 'a'; }", "unexpected character `'`", "'");
        m("let x = 1;", "expected an item (`kernel`, `fn` or `use`), found `let`", "let");
        m("kernel k() { let s = \"abc; }", "unterminated string literal", "\"");
        m("kernel k() { /* oops }", "unterminated block comment", "/*");
        m("kernel k() { if a < b < c { } }", "comparison operators cannot be chained", "a < b < c");
        m("kernel k() { x = 1; ", "expected a statement or `}`, found end of file", "");
        let (_, d) = parse("kernel k() { x = 1; ");
        assert!(d[0].labels.iter().any(|l| !l.primary && l.span.start == 11), "the open `{{`: {d:#?}");
        m("use cdiv;", "`use` needs a module and the names to import from it", "use cdiv;");
        m("kernel k<const A: i32 = 1 + 2>() {}", "expected `,` or `>`, found `+`", "+");
        m("kernel k() { x }}", "expected an item (`kernel`, `fn` or `use`), found `}`", "}");
        m("kernel k(a: &f32) {}", "expected `[`, found `)`", ")");
        m("kernel k() { t[i] = 3; }", "expected `}` or `;`, found `=`", "=");
        m("kernel k() { return x; }", "expected `;`, found identifier `x`", "x");
        m("kernel k() { y += 1; z = 1 }", "expected `;`, found `}`", "}");
        let (_, d) = parse("kernel k() { x }}");
        assert!(d[0].notes[0].contains("no matching opening bracket"), "{d:#?}");
        let m = messages("fn f() { \"\\q\" }");
        assert!(m.iter().any(|(msg, at)| msg.contains("unknown escape") && at == "\\q"), "{m:?}");
    }

    #[test]
    fn several_errors_are_reported_together() {
        let text = "kernel a() {\n    let x = ;\n    let y = 1;\n    y = y +* 2;\n    z(;\n}\n\
                    fn b(x) { x + }\n\
                    kernel c( { }\n\
                    kernel d() { let ok = 1; }\n";
        let (f, d) = parse(text);
        assert_eq!(d.len(), 5, "{d:#?}");
        // Lines of the errors: 2, 4, 5 (statements of `a`), 7 (`b`'s tail), 8 (`c`'s header).
        let lines: Vec<usize> = d.iter().filter_map(|d| d.span()).map(|s| text[..s.start as usize].matches('\n').count() + 1).collect();
        assert_eq!(lines, vec![2, 4, 5, 7, 8]);
        // `a` (statement-level recovery), `b` (block-level) and `d` survive; `c` is dropped.
        let names: Vec<&str> =
            f.items.iter().filter_map(|i| if let Item::Func(f) = i { Some(f.name.name.as_str()) } else { None }).collect();
        assert_eq!(names, vec!["a", "b", "d"]);
        assert_eq!(func(&f, 0).body.stmts.len(), 1, "only `let y = 1;` survives in `a`");
    }

    #[test]
    fn doc_comments_inside_bodies_are_comments() {
        let f = parse_ok("/// lost\nuse std::math::cdiv;\n/// kept\nfn f() {\n    /// not an item\n    1\n}\n/// trailing\n");
        assert_eq!(func(&f, 0).doc.as_deref(), Some("kept"));
    }

    #[test]
    fn deep_input_is_refused_not_overflowed() {
        let deep = format!("fn f() {{ {}1{} }}", "(".repeat(100_000), ")".repeat(100_000));
        let (_, d) = parse(&deep);
        assert_eq!(d.len(), 1);
        assert!(d[0].message.contains("nested too deeply"));
        let long = format!("fn f() {{ {}1 }}", "1 + ".repeat(100_000));
        let (_, d) = parse(&long);
        assert!(d[0].message.contains("too complex"), "{d:#?}");
        let unary = format!("fn f() {{ {}x }}", "-".repeat(100_000));
        assert!(parse(&unary).1[0].message.contains("too complex"));
        let chain = format!("fn f(c) {{ if c {{ 1 }}{} }}", " else if c { 1 }".repeat(20_000));
        assert!(parse(&chain).1[0].message.contains("too complex"));
        // Within the limits, long but shallow is fine.
        let many = format!("fn f() {{ {} }}", "let x = [1, 2, 3];\n".repeat(20_000));
        assert_eq!(func(&parse_ok(&many), 0).body.stmts.len(), 20_000);
        let ok = format!("fn f() {{ {}1 }}", "1 + ".repeat(MAX_OPERATORS - 1));
        parse_ok(&ok);
        let ok = format!("fn f() {{ {}1{} }}", "(".repeat(MAX_NESTING - 1), ")".repeat(MAX_NESTING - 1));
        parse_ok(&ok);
    }

    #[test]
    fn the_number_of_kernels_is_bounded_before_parsing() {
        let kernel = "kernel k(x: &mut f32[4]) {}\n";
        let (file, d) = parse(&kernel.repeat(MAX_KERNELS));
        assert!(d.is_empty(), "{d:#?}");
        assert_eq!(file.items.len(), MAX_KERNELS);
        let (file, d) = parse(&kernel.repeat(MAX_KERNELS + 1));
        assert!(d[0].message.contains(&format!("at most {MAX_KERNELS} kernels")), "{d:#?}");
        assert!(file.items.is_empty());
    }

    #[test]
    fn repository_tile_files_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut seen = 0;
        for dir in ["examples", "stdlib", "tests/ui"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_none_or(|e| e != "tile") {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(&path) else { continue };
                seen += 1;
                let (f, d) = parse(&text);
                // The UI files that test syntax errors, and their first error.
                let broken = [
                    ("syntax_error.tile", "expected `;`, found `let`"),
                    ("unsupported_keyword.tile", "`match` is not supported in tile programs"),
                    ("pow_operator.tile", "expected an expression, found `*`"),
                    ("slice_step.tile", "expected `]` or `,`, found `:`"),
                ];
                if let Some((_, want)) = broken.iter().find(|(name, _)| path.ends_with(name)) {
                    assert_eq!(d.first().map(|d| d.message.as_str()), Some(*want), "{}: {d:#?}", path.display());
                } else {
                    assert!(d.is_empty(), "{}: {d:#?}", path.display());
                    assert!(!f.items.is_empty(), "{}", path.display());
                }
            }
        }
        assert!(seen > 0, "no .tile files found under {}", root.display());
    }

    /// A small deterministic generator (no dependency needed).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn check_never_panics(text: &str) {
        let result = std::panic::catch_unwind(|| parse(text));
        let Ok((_, diags)) = result else { panic!("parse_file panicked on {text:?}") };
        for d in &diags {
            for l in &d.labels {
                assert!(l.span.start <= l.span.end && l.span.end as usize <= text.len(), "bad span {l:?} in {text:?}");
            }
            assert!(d.span().is_some(), "a syntax error without a location: {d:?} in {text:?}");
        }
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Random bytes, made into text lossily.
        for _ in 0..3000 {
            let len = rng.below(120);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            check_never_panics(&String::from_utf8_lossy(&bytes));
        }
        // Random token soup from the language's own pieces.
        const PIECES: &[&str] = &[
            "kernel",
            "fn",
            "let",
            "mut",
            "const",
            "for",
            "in",
            "if",
            "else",
            "while",
            "return",
            "use",
            "as",
            "true",
            "false",
            "inf",
            "None",
            "#",
            "[",
            "]",
            "(",
            ")",
            "{",
            "}",
            ",",
            ";",
            ":",
            "::",
            ".",
            "..",
            "->",
            "=",
            "==",
            "<",
            ">",
            "+",
            "-",
            "*",
            "/",
            "%",
            "+=",
            "&",
            "&&",
            "|",
            "^",
            "!",
            "<<",
            "_",
            "x",
            "f32",
            "0",
            "1.5",
            "0x",
            "99999999999999999999",
            "1e",
            "\"s\"",
            "\"",
            "///d\n",
            "/*",
            "*/",
            "$",
            "é",
            "\n",
        ];
        for _ in 0..3000 {
            let n = rng.below(60);
            let text: Vec<&str> = (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            check_never_panics(&text.join(" "));
        }
        // Truncations and single-token deletions of the examples.
        for (_, text) in ALL {
            for (i, _) in text.char_indices() {
                check_never_panics(&text[..i]);
                check_never_panics(&text[i..]);
            }
            let toks = lexer::tokenize(text);
            for _ in 0..200 {
                let (l, _, r) = toks[rng.below(toks.len())];
                let mut t = text.to_string();
                t.replace_range(l..r, PIECES[rng.below(PIECES.len())]);
                check_never_panics(&t);
            }
        }
    }
}
