//! The lexer: a `logos` state machine from source text to tokens with byte spans.
//!
//! Whitespace, `//` line comments and `/* */` block comments (which nest, as in Rust) are skipped;
//! `///` doc comments are tokens (`Tok::Doc`, the text after `///`; `////…` is a plain comment).
//! String literals end on their line. Numbers are lexed loosely as one `Tok::Number` (`42`,
//! `0x2a`, `1_000`, `42i64`, `1.5e-3f32`) and classified by the parser's actions
//! (`actions::parse_number`), which report bad suffixes,
//! missing digits and overflow as located diagnostics. Characters that start no token become
//! `Tok::Error`, which no grammar rule accepts: the parser reports it where it stands.

use logos::{FilterResult, Logos};
use std::fmt;

/// Why the lexer could not make a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LexError {
    /// A character that starts no token (`$`, `@`, a non-ASCII letter, …).
    #[default]
    UnexpectedChar,
    /// `"…` without the closing quote.
    UnterminatedString,
    /// `/* …` without the closing `*/`.
    UnterminatedComment,
}

/// Skips a (nested) block comment after its opening `/*`; errors when the input ends first.
fn block_comment<'s>(lex: &mut logos::Lexer<'s, Tok<'s>>) -> FilterResult<(), LexError> {
    let bytes = lex.remainder().as_bytes();
    let mut depth = 1usize;
    let mut i = 0usize;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'/', Some(b'*')) => {
                depth += 1;
                i += 2;
            }
            (b'*', Some(b'/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    lex.bump(i);
                    return FilterResult::Skip;
                }
            }
            _ => i += 1,
        }
    }
    // Unterminated: the error token covers only the `/*`, so that the caret points at it.
    FilterResult::Error(LexError::UnterminatedComment)
}

/// A string literal that the line (or the file) ends in.
fn unterminated_string<'s>(_: &mut logos::Lexer<'s, Tok<'s>>) -> Result<(), LexError> {
    Err(LexError::UnterminatedString)
}

/// A `//` comment: `///` (but not `////`) is a doc comment whose text is kept.
fn line_comment<'s>(lex: &mut logos::Lexer<'s, Tok<'s>>) -> logos::Filter<&'s str> {
    let text = lex.slice();
    match text.strip_prefix("///") {
        Some(rest) if !rest.starts_with('/') => logos::Filter::Emit(rest.strip_suffix('\r').unwrap_or(rest)),
        _ => logos::Filter::Skip,
    }
}

/// A token. Literal tokens borrow their text from the source.
#[derive(Logos, Clone, Copy, Debug, PartialEq)]
#[logos(error = LexError)]
#[logos(skip r"[ \t\r\n\f\v]+")]
pub enum Tok<'s> {
    /// Never produced by logos itself: the lexer wrapper turns logos errors into it.
    Error(LexError),

    #[regex(r"//[^\n]*", line_comment, allow_greedy = true)]
    Doc(&'s str),
    #[token("/*", block_comment)]
    BlockComment,

    #[regex(r"[A-Za-z_][A-Za-z0-9_]*", |lex| lex.slice())]
    Ident(&'s str),
    /// Integer or float literal, classified by the parser.
    #[regex(r"[0-9][0-9A-Za-z_]*", |lex| lex.slice())]
    #[regex(r"[0-9][0-9_]*\.[0-9][0-9A-Za-z_]*", |lex| lex.slice())]
    #[regex(r"[0-9][0-9_]*(\.[0-9][0-9_]*)?[eE][+-][0-9][0-9A-Za-z_]*", |lex| lex.slice())]
    Number(&'s str),
    /// A string literal, quotes included; escapes are processed by the parser.
    #[regex(r#""([^"\\\n]|\\.)*""#, |lex| lex.slice())]
    Str(&'s str),
    /// A string that the line ends in: an error token.
    #[regex(r#""([^"\\\n]|\\.)*\\?"#, unterminated_string)]
    UnterminatedStr,

    #[token("kernel")]
    Kernel,
    #[token("fn")]
    Fn,
    #[token("let")]
    Let,
    #[token("mut")]
    Mut,
    #[token("const")]
    Const,
    #[token("for")]
    For,
    #[token("in")]
    In,
    #[token("if")]
    If,
    #[token("else")]
    Else,
    #[token("while")]
    While,
    #[token("return")]
    Return,
    #[token("break")]
    Break,
    #[token("loop")]
    Loop,
    #[token("continue")]
    Continue,
    #[token("use")]
    Use,
    #[token("as")]
    As,
    #[token("true")]
    True,
    #[token("false")]
    False,
    #[token("inf")]
    Inf,
    #[token("None")]
    None,

    #[token("#")]
    Hash,
    #[token("[")]
    LBracket,
    #[token("]")]
    RBracket,
    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token("{")]
    LBrace,
    #[token("}")]
    RBrace,
    #[token(",")]
    Comma,
    #[token(";")]
    Semi,
    #[token(":")]
    Colon,
    #[token("::")]
    ColonColon,
    #[token(".")]
    Dot,
    #[token("..")]
    DotDot,
    #[token("->")]
    Arrow,
    #[token("=")]
    Assign,
    #[token("==")]
    EqEq,
    #[token("!=")]
    Ne,
    #[token("<")]
    Lt,
    #[token("<=")]
    Le,
    #[token(">")]
    Gt,
    #[token(">=")]
    Ge,
    #[token("+")]
    Plus,
    #[token("-")]
    Minus,
    #[token("*")]
    Star,
    #[token("/")]
    Slash,
    #[token("%")]
    Percent,
    #[token("+=")]
    PlusEq,
    #[token("-=")]
    MinusEq,
    #[token("*=")]
    StarEq,
    #[token("/=")]
    SlashEq,
    #[token("&")]
    Amp,
    #[token("&&")]
    AmpAmp,
    #[token("|")]
    Pipe,
    #[token("||")]
    PipePipe,
    #[token("^")]
    Caret,
    #[token("!")]
    Bang,
    #[token("<<")]
    Shl,
    #[token(">>")]
    Shr,
    #[token("_", priority = 3)]
    Underscore,
}

impl Tok<'_> {
    /// How the token reads in an error message: "`let`", "identifier `foo`", "end of file".
    pub fn describe(&self) -> String {
        match self {
            Tok::Error(LexError::UnexpectedChar) => "an unexpected character".into(),
            Tok::Error(LexError::UnterminatedString) => "an unterminated string literal".into(),
            Tok::Error(LexError::UnterminatedComment) => "an unterminated block comment".into(),
            Tok::Doc(_) => "a doc comment".into(),
            Tok::Ident(s) => format!("identifier `{}`", shorten(s)),
            Tok::Number(s) => format!("number `{}`", shorten(s)),
            Tok::Str(_) => "a string literal".into(),
            Tok::BlockComment | Tok::UnterminatedStr => "a comment".into(),
            t => format!("`{t}`"),
        }
    }
}

/// At most 32 characters of `s`, for messages.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(32) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Tok::Error(_) => "<error>",
            Tok::Doc(s) | Tok::Ident(s) | Tok::Number(s) | Tok::Str(s) => s,
            Tok::BlockComment => "/*",
            Tok::UnterminatedStr => "\"",
            Tok::Kernel => "kernel",
            Tok::Fn => "fn",
            Tok::Let => "let",
            Tok::Mut => "mut",
            Tok::Const => "const",
            Tok::For => "for",
            Tok::In => "in",
            Tok::If => "if",
            Tok::Else => "else",
            Tok::While => "while",
            Tok::Return => "return",
            Tok::Break => "break",
            Tok::Loop => "loop",
            Tok::Continue => "continue",
            Tok::Use => "use",
            Tok::As => "as",
            Tok::True => "true",
            Tok::False => "false",
            Tok::Inf => "inf",
            Tok::None => "None",
            Tok::Hash => "#",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::Comma => ",",
            Tok::Semi => ";",
            Tok::Colon => ":",
            Tok::ColonColon => "::",
            Tok::Dot => ".",
            Tok::DotDot => "..",
            Tok::Arrow => "->",
            Tok::Assign => "=",
            Tok::EqEq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
            Tok::PlusEq => "+=",
            Tok::MinusEq => "-=",
            Tok::StarEq => "*=",
            Tok::SlashEq => "/=",
            Tok::Amp => "&",
            Tok::AmpAmp => "&&",
            Tok::Pipe => "|",
            Tok::PipePipe => "||",
            Tok::Caret => "^",
            Tok::Bang => "!",
            Tok::Shl => "<<",
            Tok::Shr => ">>",
            Tok::Underscore => "_",
        };
        f.write_str(s)
    }
}

/// A token with its byte range.
pub type Spanned<'s> = (usize, Tok<'s>, usize);

/// Lexes a whole file. Never fails: characters that start no token become `Tok::Error` tokens
/// (an unterminated block comment's error covers only its `/*`; an unterminated string's covers
/// only its opening quote).
pub fn tokenize(text: &str) -> Vec<Spanned<'_>> {
    let mut out = Vec::new();
    let mut lex = Tok::lexer(text);
    while let Some(res) = lex.next() {
        let span = lex.span();
        match res {
            Ok(tok) => out.push((span.start, tok, span.end)),
            Err(e) => {
                let end = match e {
                    LexError::UnterminatedComment => span.start + 2,
                    LexError::UnterminatedString => span.start + 1,
                    LexError::UnexpectedChar => {
                        // Cover the whole (possibly multi-byte) character.
                        let c = text.get(span.start..).and_then(|s| s.chars().next());
                        span.start + c.map_or(1, char::len_utf8)
                    }
                };
                out.push((span.start, Tok::Error(e), end.min(text.len()).max(span.start)));
                if e == LexError::UnterminatedComment {
                    // The rest of the file is inside the comment.
                    break;
                }
            }
        }
    }
    out
}
