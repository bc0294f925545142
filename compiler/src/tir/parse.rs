//! Parses the tile IR's text form (as printed by `print`) back into a `Kernel`.
//!
//! The grammar is the printer's output read token by token; whitespace is insignificant except
//! that an op's operands must be on the line of its mnemonic (an op with no operands and no
//! results, such as `yield`, would otherwise swallow the next op's result names). Values must be
//! defined before use, and a value defined in a region is visible only inside it. Errors are
//! `line:col: message`; malformed input never panics (nesting is bounded to keep the recursion
//! off the end of the stack).

use super::{
    ArgOp, AtomicOp, BinaryOp, CmpOp, ConstValue, Dim, HostExpr, HostOp, Kernel, Lit, OpKind, Param, ParamKind, ReduceOp, Require, ScanOp,
    TirBody, TuneSpace, Type, UnaryOp,
};
use crate::diag::Span;
use crate::dtype::DType;
use crate::ir::{Block, Value};
use std::collections::{HashMap, HashSet};

/// Deeper nesting than this (regions, host-expression parentheses) is rejected rather than
/// risking a stack overflow; real kernels nest a handful of levels.
const MAX_DEPTH: usize = 100;

/// Parses one kernel in the text form.
pub fn parse_kernel(text: &str) -> Result<Kernel, String> {
    let toks = lex(text)?;
    let mut p =
        Parser { toks, pos: 0, body: TirBody::new(), scope: HashMap::new(), scopes: vec![vec![]], defined: HashSet::new(), depth: 0 };
    p.kernel()
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// Identifiers, keywords and dotted mnemonics (`cmp.lt`, `reduce.sum`).
    Ident(String),
    /// An unsigned integer literal (the sign is a separate `-` token).
    Int(u64),
    /// An unsigned float literal: digits with a fraction or an exponent.
    Float(f64),
    /// `%n`.
    Value(u32),
    /// `@name`.
    Global(String),
    /// A Rust-debug-escaped string literal, unescaped.
    Str(String),
    /// The text of a `///` line after the slashes.
    Doc(String),
    Punct(&'static str),
    Eof,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: u32,
    col: u32,
}

const PUNCT2: [&str; 6] = ["==", "!=", "<=", ">=", "&&", "||"];
const PUNCT1: [&str; 18] = ["(", ")", "[", "]", "{", "}", "<", ">", ",", ":", "=", "^", "&", "-", "!", "+", "*", "/"];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

fn lex(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = vec![];
    let (mut i, mut line, mut col) = (0usize, 1u32, 1u32);
    // Advances over `n` characters, keeping line and column current.
    let advance = |i: &mut usize, line: &mut u32, col: &mut u32, n: usize| {
        for _ in 0..n {
            if chars.get(*i) == Some(&'\n') {
                *line += 1;
                *col = 1;
            } else {
                *col += 1;
            }
            *i += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            advance(&mut i, &mut line, &mut col, 1);
            continue;
        }
        let (tl, tc) = (line, col);
        let at = |i: usize, s: &str| -> bool { s.chars().enumerate().all(|(k, ch)| chars.get(i + k) == Some(&ch)) };
        let err = |m: String| format!("{tl}:{tc}: {m}");
        let start = i;
        let tok = if at(i, "///") {
            let mut j = i + 3;
            while j < chars.len() && chars[j] != '\n' {
                j += 1;
            }
            let s: String = chars[i + 3..j].iter().collect();
            advance(&mut i, &mut line, &mut col, j - start);
            Tok::Doc(s)
        } else if is_ident_start(c) || c == '@' {
            let mut j = if c == '@' { i + 1 } else { i };
            if c == '@' && !chars.get(j).is_some_and(|&c| is_ident_start(c)) {
                return Err(err("expected a name after `@`".into()));
            }
            while j < chars.len() && is_ident_char(chars[j]) {
                j += 1;
            }
            let s: String = chars[i..j].iter().collect();
            advance(&mut i, &mut line, &mut col, j - start);
            if let Some(name) = s.strip_prefix('@') { Tok::Global(name.to_string()) } else { Tok::Ident(s) }
        } else if c == '%' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
            let mut j = i + 1;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            let s: String = chars[i + 1..j].iter().collect();
            let n = s.parse::<u32>().map_err(|_| err(format!("value number `%{s}` is too large")))?;
            advance(&mut i, &mut line, &mut col, j - start);
            Tok::Value(n)
        } else if c.is_ascii_digit() {
            let mut j = i;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            let mut float = false;
            if chars.get(j) == Some(&'.') && chars.get(j + 1).is_some_and(|c| c.is_ascii_digit()) {
                float = true;
                j += 1;
                while j < chars.len() && chars[j].is_ascii_digit() {
                    j += 1;
                }
            }
            if matches!(chars.get(j), Some('e' | 'E')) {
                let k = if matches!(chars.get(j + 1), Some('+' | '-')) { j + 2 } else { j + 1 };
                if chars.get(k).is_some_and(|c| c.is_ascii_digit()) {
                    float = true;
                    j = k;
                    while j < chars.len() && chars[j].is_ascii_digit() {
                        j += 1;
                    }
                }
            }
            if chars.get(j).is_some_and(|&c| is_ident_char(c)) {
                return Err(err(format!("malformed number `{}`", chars[i..=j].iter().collect::<String>())));
            }
            let s: String = chars[i..j].iter().collect();
            advance(&mut i, &mut line, &mut col, j - start);
            if float {
                Tok::Float(s.parse::<f64>().map_err(|e| err(format!("bad float `{s}`: {e}")))?)
            } else {
                Tok::Int(s.parse::<u64>().map_err(|_| err(format!("integer `{s}` is out of range")))?)
            }
        } else if c == '"' {
            let (s, n) = lex_string(&chars[i..]).map_err(|(m, k)| {
                // Report the position of the offending character inside the string.
                let mut l = tl;
                let mut cc = tc;
                for &ch in &chars[i..i + k] {
                    if ch == '\n' {
                        l += 1;
                        cc = 1;
                    } else {
                        cc += 1;
                    }
                }
                format!("{l}:{cc}: {m}")
            })?;
            advance(&mut i, &mut line, &mut col, n);
            Tok::Str(s)
        } else if let Some(p) = PUNCT2.iter().copied().find(|p| at(i, p)) {
            advance(&mut i, &mut line, &mut col, 2);
            Tok::Punct(p)
        } else if c == '%' {
            advance(&mut i, &mut line, &mut col, 1);
            Tok::Punct("%")
        } else if let Some(p) = PUNCT1.iter().copied().find(|p| at(i, p)) {
            advance(&mut i, &mut line, &mut col, 1);
            Tok::Punct(p)
        } else {
            return Err(err(format!("unexpected character `{}`", c.escape_debug())));
        };
        toks.push(Token { tok, line: tl, col: tc });
    }
    toks.push(Token { tok: Tok::Eof, line, col });
    Ok(toks)
}

/// Reads a string literal in Rust's `{:?}` form starting at `s[0] == '"'`; returns the unescaped
/// text and the number of characters consumed, or a message and the offset of the problem.
fn lex_string(s: &[char]) -> Result<(String, usize), (String, usize)> {
    let mut out = String::new();
    let mut i = 1;
    loop {
        match s.get(i) {
            None => return Err(("unterminated string".into(), 0)),
            Some('"') => return Ok((out, i + 1)),
            Some('\\') => {
                let esc = s.get(i + 1).copied();
                match esc {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some('0') => out.push('\0'),
                    Some('\\') => out.push('\\'),
                    Some('"') => out.push('"'),
                    Some('\'') => out.push('\''),
                    Some('u') => {
                        if s.get(i + 2) != Some(&'{') {
                            return Err(("expected `{` after `\\u`".into(), i));
                        }
                        let mut j = i + 3;
                        let mut hex = String::new();
                        while let Some(&c) = s.get(j) {
                            if c == '}' {
                                break;
                            }
                            hex.push(c);
                            j += 1;
                        }
                        if s.get(j) != Some(&'}') {
                            return Err(("unterminated `\\u{…}` escape".into(), i));
                        }
                        let ch = u32::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| hex.len() <= 6)
                            .and_then(char::from_u32)
                            .ok_or((format!("invalid unicode escape `\\u{{{hex}}}`"), i))?;
                        out.push(ch);
                        i = j + 1;
                        continue;
                    }
                    _ => return Err(("unknown escape in string".into(), i)),
                }
                i += 2;
            }
            Some(&c) => {
                out.push(c);
                i += 1;
            }
        }
    }
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    body: TirBody,
    /// Printed number → value, for the values visible at this point.
    scope: HashMap<u32, Value>,
    /// The numbers defined in each open region (the outermost is the kernel body), removed from
    /// `scope` when the region closes.
    scopes: Vec<Vec<u32>>,
    /// Every number defined so far: numbering is global, so a number is never defined twice.
    defined: HashSet<u32>,
    depth: usize,
}

type PResult<T> = Result<T, String>;

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].tok
    }

    fn peek_at(&self, k: usize) -> &Tok {
        &self.toks[(self.pos + k).min(self.toks.len() - 1)].tok
    }

    fn here(&self) -> &Token {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let t = self.here().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn err<T>(&self, msg: impl Into<String>) -> PResult<T> {
        let t = self.here();
        Err(format!("{}:{}: {}", t.line, t.col, msg.into()))
    }

    fn describe(t: &Tok) -> String {
        match t {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Int(v) => format!("`{v}`"),
            Tok::Float(v) => format!("`{v:?}`"),
            Tok::Value(v) => format!("`%{v}`"),
            Tok::Global(s) => format!("`@{s}`"),
            Tok::Str(s) => format!("{s:?}"),
            Tok::Doc(_) => "a doc comment".into(),
            Tok::Punct(p) => format!("`{p}`"),
            Tok::Eof => "end of input".into(),
        }
    }

    fn expected<T>(&self, what: &str) -> PResult<T> {
        self.err(format!("expected {what}, found {}", Self::describe(self.peek())))
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Tok::Punct(q) if *q == p)
    }

    fn is_ident(&self, s: &str) -> bool {
        matches!(self.peek(), Tok::Ident(q) if q == s)
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        let yes = self.is_punct(p);
        if yes {
            self.bump();
        }
        yes
    }

    fn expect_punct(&mut self, p: &str) -> PResult<()> {
        if self.eat_punct(p) { Ok(()) } else { self.expected(&format!("`{p}`")) }
    }

    fn expect_keyword(&mut self, k: &str) -> PResult<()> {
        if self.is_ident(k) {
            self.bump();
            Ok(())
        } else {
            self.expected(&format!("`{k}`"))
        }
    }

    fn ident(&mut self, what: &str) -> PResult<String> {
        match self.peek().clone() {
            Tok::Ident(s) => {
                self.bump();
                Ok(s)
            }
            _ => self.expected(what),
        }
    }

    fn u64_lit(&mut self, what: &str) -> PResult<u64> {
        match *self.peek() {
            Tok::Int(v) => {
                self.bump();
                Ok(v)
            }
            _ => self.expected(what),
        }
    }

    fn u32_lit(&mut self, what: &str) -> PResult<u32> {
        let v = self.u64_lit(what)?;
        u32::try_from(v).or_else(|_| {
            self.pos -= 1;
            self.err(format!("{v} does not fit in u32"))
        })
    }

    /// An integer with an optional leading `-`.
    fn i64_lit(&mut self, what: &str) -> PResult<i64> {
        let neg = self.is_punct("-") && matches!(self.peek_at(1), Tok::Int(_));
        if neg {
            self.bump();
        }
        let start = self.pos;
        let v = self.u64_lit(what)? as i128;
        let v = if neg { -v } else { v };
        i64::try_from(v).or_else(|_| {
            self.pos = start;
            self.err(format!("{v} does not fit in i64"))
        })
    }

    fn dtype(&mut self) -> PResult<DType> {
        match self.peek() {
            Tok::Ident(s) => match DType::parse(s) {
                Some(d) => {
                    self.bump();
                    Ok(d)
                }
                None => self.err(format!("unknown element type `{s}`")),
            },
            _ => self.expected("an element type"),
        }
    }

    fn kernel(&mut self) -> PResult<Kernel> {
        let mut doc: Vec<String> = vec![];
        while let Tok::Doc(d) = self.peek().clone() {
            self.bump();
            // The printer writes `/// line` (or `///` for an empty line): drop that one space.
            doc.push(d.strip_prefix(' ').unwrap_or(&d).to_string());
        }
        let doc = if doc.is_empty() { None } else { Some(doc.join("\n")) };
        self.expect_keyword("kernel")?;
        let name = match self.peek().clone() {
            Tok::Global(n) => {
                self.bump();
                n
            }
            _ => return self.expected("the kernel name `@name`"),
        };
        self.expect_punct("(")?;
        let mut params = vec![];
        if !self.is_punct(")") {
            loop {
                params.push(self.param()?);
                if !self.eat_punct(",") {
                    break;
                }
            }
        }
        self.expect_punct(")")?;
        let mut consts = vec![];
        if self.is_ident("consts") {
            self.bump();
            self.expect_punct("(")?;
            if !self.is_punct(")") {
                loop {
                    let n = self.ident("a const parameter name")?;
                    self.expect_punct("=")?;
                    let v = match self.peek() {
                        Tok::Ident(s) if s == "true" || s == "false" => {
                            let b = s == "true";
                            self.bump();
                            ConstValue::Bool(b)
                        }
                        _ => ConstValue::Int(self.i64_lit("an integer or boolean constant")?),
                    };
                    consts.push((n, v));
                    if !self.eat_punct(",") {
                        break;
                    }
                }
            }
            self.expect_punct(")")?;
        }
        self.expect_keyword("grid")?;
        self.expect_punct("(")?;
        let mut grid = vec![];
        if !self.is_punct(")") {
            loop {
                grid.push(self.host_expr()?);
                if !self.eat_punct(",") {
                    break;
                }
            }
        }
        self.expect_punct(")")?;
        self.expect_keyword("warps")?;
        self.expect_punct("(")?;
        let warps = self.u32_lit("the number of warps")?;
        self.expect_punct(")")?;
        self.expect_keyword("stages")?;
        self.expect_punct("(")?;
        let stages = self.u32_lit("the number of stages")?;
        self.expect_punct(")")?;
        let mut blocks_per_sm = None;
        if self.is_ident("blocks_per_sm") {
            self.bump();
            self.expect_punct("(")?;
            blocks_per_sm = Some(self.u32_lit("the number of blocks per multiprocessor")?);
            self.expect_punct(")")?;
        }
        let warp_specialize = self.is_ident("warp_specialize");
        if warp_specialize {
            self.bump();
        }
        let mut requires = vec![];
        while self.is_ident("require") {
            self.bump();
            self.expect_punct("(")?;
            let cond = self.host_expr()?;
            self.expect_punct(",")?;
            let text = match self.peek().clone() {
                Tok::Str(s) => {
                    self.bump();
                    s
                }
                _ => return self.expected("the requirement's text as a string"),
            };
            self.expect_punct(")")?;
            requires.push(Require { cond, text });
        }
        self.expect_punct("{")?;
        let entry = self.body.entry;
        self.ops(entry)?;
        self.expect_punct("}")?;
        if *self.peek() != Tok::Eof {
            return self.expected("end of input after the kernel");
        }
        let body = std::mem::take(&mut self.body);
        Ok(Kernel {
            name,
            doc,
            params,
            consts,
            grid,
            warps,
            stages,
            blocks_per_sm,
            warp_specialize,
            requires,
            tune: TuneSpace::default(),
            body,
        })
    }

    /// `%n = name: &mut T[D, …]` or `%n = name: T`; adds the entry-block argument.
    fn param(&mut self) -> PResult<Param> {
        let num = self.new_name()?;
        self.expect_punct("=")?;
        let name = self.ident("a parameter name")?;
        self.expect_punct(":")?;
        let kind = if self.eat_punct("&") {
            let mutable = self.is_ident("mut");
            if mutable {
                self.bump();
            }
            let dtype = self.dtype()?;
            self.expect_punct("[")?;
            let mut dims = vec![];
            if !self.is_punct("]") {
                loop {
                    let d = match self.peek().clone() {
                        Tok::Ident(s) => {
                            self.bump();
                            Dim::Sym(s)
                        }
                        _ => Dim::Const(self.i64_lit("a dimension (an integer or a symbol)")?),
                    };
                    dims.push(d);
                    if !self.eat_punct(",") {
                        break;
                    }
                }
            }
            self.expect_punct("]")?;
            ParamKind::Tensor { dtype, dims, mutable }
        } else {
            ParamKind::Scalar { dtype: self.dtype()? }
        };
        let p = Param { name, kind };
        let entry = self.body.entry;
        let v = self.body.add_block_arg(entry, p.ty());
        self.define(num, v);
        Ok(p)
    }

    /// Reads a `%n` that is about to be defined and reserves its number.
    fn new_name(&mut self) -> PResult<u32> {
        match *self.peek() {
            Tok::Value(n) => {
                if !self.defined.insert(n) {
                    return self.err(format!("`%{n}` is defined twice"));
                }
                self.bump();
                Ok(n)
            }
            _ => self.expected("a value name `%n`"),
        }
    }

    fn define(&mut self, num: u32, v: Value) {
        self.scope.insert(num, v);
        if let Some(s) = self.scopes.last_mut() {
            s.push(num);
        }
    }

    fn use_value(&mut self) -> PResult<Value> {
        match *self.peek() {
            Tok::Value(n) => match self.scope.get(&n) {
                Some(&v) => {
                    self.bump();
                    Ok(v)
                }
                None if self.defined.contains(&n) => {
                    self.err(format!("`%{n}` is not visible here (defined in another region, or by the op that uses it)"))
                }
                None => self.err(format!("`%{n}` is used before it is defined")),
            },
            _ => self.expected("a value `%n`"),
        }
    }

    fn ty(&mut self) -> PResult<Type> {
        if self.is_ident("tensor") {
            self.bump();
            self.expect_punct("<")?;
            let mutable = self.is_ident("mut");
            if mutable {
                self.bump();
            }
            let dtype = self.dtype()?;
            self.expect_punct(",")?;
            let rank = self.u64_lit("the tensor's rank")?;
            let rank = usize::try_from(rank).or_else(|_| self.err("rank too large"))?;
            self.expect_punct(">")?;
            return Ok(Type::Tensor { dtype, rank, mutable });
        }
        let dtype = self.dtype()?;
        let mut shape = vec![];
        if self.eat_punct("[") {
            if !self.is_punct("]") {
                loop {
                    shape.push(self.i64_lit("a dimension")?);
                    if !self.eat_punct(",") {
                        break;
                    }
                }
            }
            self.expect_punct("]")?;
            if shape.is_empty() {
                // `T[]` would print back as `T`: not the printer's form.
                return self.err("a scalar type is written without `[]`");
            }
        }
        Ok(Type::Tile { dtype, shape })
    }

    /// The ops of `block` up to (not including) the closing `}`.
    fn ops(&mut self, block: Block) -> PResult<()> {
        while !self.is_punct("}") {
            if *self.peek() == Tok::Eof {
                return self.expected("`}`");
            }
            self.op(block)?;
        }
        Ok(())
    }

    fn op(&mut self, block: Block) -> PResult<()> {
        let mut results = vec![];
        if matches!(self.peek(), Tok::Value(_)) {
            loop {
                results.push(self.new_name()?);
                if !self.eat_punct(",") {
                    break;
                }
            }
            self.expect_punct("=")?;
        }
        let mn_line = self.here().line;
        let mnemonic = self.ident("an operation")?;
        let kind = self.op_kind(&mnemonic)?;
        let has_attr = matches!(
            kind,
            OpKind::Const(_)
                | OpKind::ProgramId(_)
                | OpKind::NumPrograms(_)
                | OpKind::Arange(_)
                | OpKind::ExpandDims(_)
                | OpKind::Permute(_)
                | OpKind::Reduce(..)
                | OpKind::ArgReduce(..)
                | OpKind::Scan(..)
                | OpKind::ScanFn(_)
                | OpKind::Slice(..)
                | OpKind::Print(_)
                | OpKind::Assert(_)
                | OpKind::Dim(_)
        );
        let mut operands = vec![];
        // After an attribute a comma introduces the operands; otherwise they start right away.
        let more = if has_attr { self.eat_punct(",") } else { matches!(self.peek(), Tok::Value(_)) && self.here().line == mn_line };
        if more {
            loop {
                operands.push(self.use_value()?);
                if !self.eat_punct(",") {
                    break;
                }
            }
        }
        let mut types = vec![];
        if !results.is_empty() {
            self.expect_punct(":")?;
            loop {
                types.push(self.ty()?);
                if !self.eat_punct(",") {
                    break;
                }
            }
            if types.len() != results.len() {
                return self.err(format!("{} results but {} result types", results.len(), types.len()));
            }
        } else if self.is_punct(":") {
            return self.err("result types given for an op without results");
        }
        let op = self.body.append(block, kind, operands, types, vec![], Span::default());
        let mut regions = vec![];
        while self.is_punct("{") {
            regions.push(self.region()?);
        }
        self.body.op_mut(op).regions = regions;
        // Results come into scope after the op (and its regions).
        let vals = self.body.op(op).results.clone();
        for (n, v) in results.into_iter().zip(vals) {
            self.define(n, v);
        }
        Ok(())
    }

    fn op_kind(&mut self, m: &str) -> PResult<OpKind> {
        let kind = match m {
            "const" => OpKind::Const(self.lit()?),
            "program_id" => OpKind::ProgramId(self.u32_lit("a grid axis")?),
            "num_programs" => OpKind::NumPrograms(self.u32_lit("a grid axis")?),
            "arange" => OpKind::Arange(self.i64_lit("the arange length")?),
            "splat" => OpKind::Splat,
            "broadcast" => OpKind::Broadcast,
            "expand_dims" => OpKind::ExpandDims(self.u32_lit("an axis")?),
            "reshape" => OpKind::Reshape,
            "permute" => {
                self.expect_punct("[")?;
                let mut perm = vec![];
                if !self.is_punct("]") {
                    loop {
                        perm.push(self.u32_lit("an axis")?);
                        if !self.eat_punct(",") {
                            break;
                        }
                    }
                }
                self.expect_punct("]")?;
                OpKind::Permute(perm)
            }
            "select" => OpKind::Select,
            "fma" => OpKind::Fma,
            "cast" => OpKind::Cast,
            "dot" => OpKind::Dot,
            "dim" => OpKind::Dim(self.u32_lit("an axis")?),
            "view" => OpKind::View,
            "load" => OpKind::Load,
            "store" => OpKind::Store,
            "for" => OpKind::For,
            "if" => OpKind::If,
            "yield" => OpKind::Yield,
            "gather" => OpKind::Gather,
            "scatter" => OpKind::Scatter,
            "join" => OpKind::Join,
            "split" => OpKind::Split,
            "scan_fn" => OpKind::ScanFn(self.u32_lit("an axis")?),
            "slice" => OpKind::Slice(self.u32_lit("an axis")?, self.u32_lit("a start")?),
            "while" => OpKind::While,
            "return" => OpKind::Return,
            "print" => OpKind::Print(self.string("the format string")?),
            "assert" => OpKind::Assert(self.string("the assertion's message")?),
            _ => {
                if let Some(c) = m.strip_prefix("cmp.").and_then(CmpOp::from_name) {
                    OpKind::Cmp(c)
                } else if let Some(r) = m.strip_prefix("reduce.").and_then(ReduceOp::from_name) {
                    OpKind::Reduce(r, self.u32_lit("an axis")?)
                } else if let Some(s) = m.strip_prefix("scan.").and_then(ScanOp::from_name) {
                    OpKind::Scan(s, self.u32_lit("an axis")?)
                } else if let Some(a) = ArgOp::from_name(m) {
                    OpKind::ArgReduce(a, self.u32_lit("an axis")?)
                } else if let Some(a) = m.strip_prefix("atomic.").and_then(AtomicOp::from_name) {
                    OpKind::Atomic(a)
                } else if let Some(b) = BinaryOp::from_name(m) {
                    OpKind::Binary(b)
                } else if let Some(u) = UnaryOp::from_name(m) {
                    OpKind::Unary(u)
                } else {
                    self.pos -= 1;
                    return self.err(format!("unknown operation `{m}`"));
                }
            }
        };
        Ok(kind)
    }

    /// A string literal (as the printer writes it with `{:?}`).
    fn string(&mut self, what: &str) -> PResult<String> {
        match self.peek().clone() {
            Tok::Str(s) => {
                self.bump();
                Ok(s)
            }
            _ => self.expected(what),
        }
    }

    /// A `const` literal: an integer, a float (`1.0`, `1e-6`, `inf`, `-inf`, `nan`) or a bool.
    fn lit(&mut self) -> PResult<Lit> {
        let neg = self.is_punct("-");
        if neg {
            self.bump();
        }
        let start = self.pos;
        let l = match self.peek().clone() {
            Tok::Int(v) => {
                self.bump();
                let v = if neg { -(v as i128) } else { v as i128 };
                Lit::Int(i64::try_from(v).or_else(|_| {
                    self.pos = start;
                    self.err(format!("{v} does not fit in i64"))
                })?)
            }
            Tok::Float(f) => {
                self.bump();
                Lit::Float(if neg { -f } else { f })
            }
            Tok::Ident(s) if s == "inf" => {
                self.bump();
                Lit::Float(if neg { f64::NEG_INFINITY } else { f64::INFINITY })
            }
            Tok::Ident(s) if s == "nan" && !neg => {
                self.bump();
                Lit::Float(f64::NAN)
            }
            Tok::Ident(s) if (s == "true" || s == "false") && !neg => {
                self.bump();
                Lit::Bool(s == "true")
            }
            _ => return self.expected("a literal"),
        };
        Ok(l)
    }

    fn region(&mut self) -> PResult<Block> {
        self.expect_punct("{")?;
        if self.depth >= MAX_DEPTH {
            return self.err(format!("regions nested more than {MAX_DEPTH} deep"));
        }
        self.depth += 1;
        self.scopes.push(vec![]);
        let r = self.region_inner();
        if let Some(names) = self.scopes.pop() {
            for n in names {
                self.scope.remove(&n);
            }
        }
        self.depth -= 1;
        r
    }

    fn region_inner(&mut self) -> PResult<Block> {
        self.expect_punct("^")?;
        self.expect_punct("(")?;
        let b = self.body.new_block(&[]);
        if !self.is_punct(")") {
            loop {
                let n = self.new_name()?;
                self.expect_punct(":")?;
                let t = self.ty()?;
                let v = self.body.add_block_arg(b, t);
                self.define(n, v);
                if !self.eat_punct(",") {
                    break;
                }
            }
        }
        self.expect_punct(")")?;
        self.expect_punct(":")?;
        self.ops(b)?;
        self.expect_punct("}")?;
        Ok(b)
    }

    /// A host expression as `HostExpr`'s `Display` writes it: atoms (integers, possibly negative;
    /// `true`/`false`; symbols; `min(a, b)`/`max(a, b)`) and fully parenthesised `(-e)`, `(!e)`,
    /// `(a op b)`.
    fn host_expr(&mut self) -> PResult<HostExpr> {
        if self.depth >= MAX_DEPTH {
            return self.err(format!("expression nested more than {MAX_DEPTH} deep"));
        }
        self.depth += 1;
        let r = self.host_expr_inner();
        self.depth -= 1;
        r
    }

    fn host_expr_inner(&mut self) -> PResult<HostExpr> {
        match self.peek().clone() {
            Tok::Int(_) => Ok(HostExpr::Int(self.i64_lit("an integer")?)),
            Tok::Punct("-") if matches!(self.peek_at(1), Tok::Int(_)) => Ok(HostExpr::Int(self.i64_lit("an integer")?)),
            Tok::Ident(s) if s == "true" || s == "false" => {
                self.bump();
                Ok(HostExpr::Bool(s == "true"))
            }
            Tok::Ident(s) if (s == "min" || s == "max") && matches!(self.peek_at(1), Tok::Punct("(")) => {
                self.bump();
                self.bump();
                let a = self.host_expr()?;
                self.expect_punct(",")?;
                let b = self.host_expr()?;
                self.expect_punct(")")?;
                let op = if s == "min" { HostOp::Min } else { HostOp::Max };
                Ok(HostExpr::Bin(op, Box::new(a), Box::new(b)))
            }
            Tok::Ident(s) => {
                self.bump();
                Ok(HostExpr::Sym(s))
            }
            Tok::Punct("(") => {
                self.bump();
                // `(-5)` is the negation of 5 (the integer -5 prints without parentheses), but in
                // `(-5 + x)` the `-5` is a negative literal operand.
                let negation =
                    self.is_punct("-") && (!matches!(self.peek_at(1), Tok::Int(_)) || matches!(self.peek_at(2), Tok::Punct(")")));
                if negation || self.is_punct("!") {
                    let not = self.is_punct("!");
                    self.bump();
                    let e = self.host_expr()?;
                    self.expect_punct(")")?;
                    return Ok(if not { HostExpr::Not(Box::new(e)) } else { HostExpr::Neg(Box::new(e)) });
                }
                let a = self.host_expr()?;
                let op = match self.peek() {
                    Tok::Punct(p) => match *p {
                        "+" => HostOp::Add,
                        "-" => HostOp::Sub,
                        "*" => HostOp::Mul,
                        "/" => HostOp::Div,
                        "%" => HostOp::Rem,
                        "==" => HostOp::Eq,
                        "!=" => HostOp::Ne,
                        "<" => HostOp::Lt,
                        "<=" => HostOp::Le,
                        ">" => HostOp::Gt,
                        ">=" => HostOp::Ge,
                        "&&" => HostOp::And,
                        "||" => HostOp::Or,
                        _ => return self.expected("a binary operator"),
                    },
                    _ => return self.expected("a binary operator"),
                };
                self.bump();
                let b = self.host_expr()?;
                self.expect_punct(")")?;
                Ok(HostExpr::Bin(op, Box::new(a), Box::new(b)))
            }
            _ => self.expected("an expression"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tir::print_kernel;

    fn span() -> Span {
        Span::default()
    }

    fn tensor(name: &str, dtype: DType, dims: &[&str], mutable: bool) -> Param {
        let dims = dims.iter().map(|d| d.parse::<i64>().map(Dim::Const).unwrap_or_else(|_| Dim::Sym(d.to_string()))).collect();
        Param { name: name.into(), kind: ParamKind::Tensor { dtype, dims, mutable } }
    }

    fn kernel(name: &str, params: Vec<Param>, grid: Vec<HostExpr>) -> Kernel {
        let mut body = TirBody::new();
        for p in &params {
            body.add_block_arg(body.entry, p.ty());
        }
        Kernel {
            name: name.into(),
            doc: None,
            params,
            consts: vec![],
            grid,
            warps: 4,
            stages: 3,
            blocks_per_sm: None,
            warp_specialize: false,
            requires: vec![],
            tune: TuneSpace::default(),
            body,
        }
    }

    fn sym(s: &str) -> Box<HostExpr> {
        Box::new(HostExpr::Sym(s.into()))
    }

    fn int(v: i64) -> Box<HostExpr> {
        Box::new(HostExpr::Int(v))
    }

    fn i32s() -> Type {
        Type::scalar(DType::I32)
    }

    /// Prints, parses, prints again and compares; returns the text.
    fn round_trip(k: &Kernel) -> String {
        let text = print_kernel(k);
        let parsed = parse_kernel(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(print_kernel(&parsed), text);
        assert_eq!(parsed.params, k.params);
        assert_eq!(parsed.grid, k.grid);
        assert_eq!(parsed.requires, k.requires);
        assert_eq!(parsed.consts, k.consts);
        assert_eq!(parsed.doc, k.doc);
        text
    }

    fn vadd() -> Kernel {
        let params =
            vec![tensor("x", DType::F32, &["N"], false), tensor("y", DType::F32, &["N"], false), tensor("z", DType::F32, &["N"], true)];
        let grid = vec![HostExpr::Bin(HostOp::Div, Box::new(HostExpr::Bin(HostOp::Add, sym("N"), int(255))), int(256))];
        let mut k = kernel("vadd", params, grid);
        k.doc = Some("Adds two vectors.\n\n  Indented line.".into());
        k.consts =
            vec![("BLOCK".into(), ConstValue::Int(256)), ("FLAG".into(), ConstValue::Bool(false)), ("NEG".into(), ConstValue::Int(-3))];
        k.requires = vec![Require {
            cond: HostExpr::Bin(HostOp::Eq, Box::new(HostExpr::Bin(HostOp::Rem, sym("N"), int(8))), int(0)),
            text: "N % 8 == 0 \"quoted\" \\ \n\t ü \u{7f}".into(),
        }];
        let (x, y, z) = (k.param_value(0), k.param_value(1), k.param_value(2));
        let b = &mut k.body;
        let e = b.entry;
        let t = Type::tile(DType::I32, vec![256]);
        let pid = b.append(e, OpKind::ProgramId(0), vec![], vec![i32s()], vec![], span());
        let blk = b.append(e, OpKind::Const(Lit::Int(256)), vec![], vec![i32s()], vec![], span());
        let off = b.append(e, OpKind::Binary(BinaryOp::Mul), vec![b.result(pid), b.result(blk)], vec![i32s()], vec![], span());
        let ar = b.append(e, OpKind::Arange(256), vec![], vec![t.clone()], vec![], span());
        let pad = b.append(e, OpKind::Const(Lit::Float(0.0)), vec![], vec![Type::scalar(DType::F32)], vec![], span());
        let ft = Type::tile(DType::F32, vec![256]);
        let lx = b.append(e, OpKind::Load, vec![x, b.result(off), b.result(pad)], vec![ft.clone()], vec![], span());
        let ly = b.append(e, OpKind::Load, vec![y, b.result(off), b.result(pad)], vec![ft.clone()], vec![], span());
        let s = b.append(e, OpKind::Binary(BinaryOp::Add), vec![b.result(lx), b.result(ly)], vec![ft.clone()], vec![], span());
        let _ = ar;
        b.append(e, OpKind::Store, vec![z, b.result(off), b.result(s)], vec![], vec![], span());
        k
    }

    #[test]
    fn vadd_round_trips() {
        let text = round_trip(&vadd());
        assert!(text.contains("store %2, %5, %10\n"), "{text}");
    }

    #[test]
    fn every_simple_op_round_trips() {
        let params = vec![
            tensor("a", DType::BF16, &["M", "64"], false),
            tensor("o", DType::F32, &["M"], true),
            Param { name: "scale".into(), kind: ParamKind::Scalar { dtype: DType::F32 } },
        ];
        let grid = vec![
            HostExpr::Bin(HostOp::Min, sym("M"), Box::new(HostExpr::Neg(int(5)))),
            HostExpr::Bin(
                HostOp::Max,
                Box::new(HostExpr::Neg(Box::new(HostExpr::Neg(int(-7))))),
                Box::new(HostExpr::Not(Box::new(HostExpr::Bool(true)))),
            ),
            HostExpr::Bin(
                HostOp::Sub,
                int(-5),
                Box::new(HostExpr::Bin(
                    HostOp::Or,
                    Box::new(HostExpr::Bool(false)),
                    Box::new(HostExpr::Bin(HostOp::Le, sym("M"), int(i64::MIN))),
                )),
            ),
        ];
        let mut k = kernel("ops", params, grid);
        k.requires.push(Require { cond: HostExpr::Bin(HostOp::Ge, sym("M"), int(1)), text: "M >= 1".into() });
        k.requires.push(Require {
            cond: HostExpr::Bin(
                HostOp::And,
                Box::new(HostExpr::Bin(HostOp::Ne, sym("M"), int(3))),
                Box::new(HostExpr::Bin(HostOp::Gt, sym("M"), int(0))),
            ),
            text: String::new(),
        });
        let (a, o, scale) = (k.param_value(0), k.param_value(1), k.param_value(2));
        let b = &mut k.body;
        let e = b.entry;
        let f = |s: Vec<i64>| Type::tile(DType::F32, s);
        let mut lits = vec![];
        for l in [
            Lit::Int(-9223372036854775808),
            Lit::Float(1e-6),
            Lit::Float(-0.0),
            Lit::Float(f64::INFINITY),
            Lit::Float(f64::NEG_INFINITY),
            Lit::Float(f64::NAN),
            Lit::Float(1e300),
            Lit::Float(123.5),
            Lit::Bool(true),
            Lit::Bool(false),
        ] {
            lits.push(b.append(e, OpKind::Const(l), vec![], vec![f(vec![])], vec![], span()));
        }
        let pid = b.append(e, OpKind::ProgramId(2), vec![], vec![i32s()], vec![], span());
        let np = b.append(e, OpKind::NumPrograms(1), vec![], vec![i32s()], vec![], span());
        let d = b.append(e, OpKind::Dim(1), vec![a], vec![i32s()], vec![], span());
        let v = b.append(
            e,
            OpKind::View,
            vec![o, b.result(pid)],
            vec![Type::Tensor { dtype: DType::F32, rank: 0, mutable: true }],
            vec![],
            span(),
        );
        let zero = b.append(e, OpKind::Const(Lit::Float(0.0)), vec![], vec![Type::scalar(DType::BF16)], vec![], span());
        let l = b.append(
            e,
            OpKind::Load,
            vec![a, b.result(pid), b.result(np), b.result(zero)],
            vec![Type::tile(DType::BF16, vec![16, 64])],
            vec![],
            span(),
        );
        let c = b.append(e, OpKind::Cast, vec![b.result(l)], vec![f(vec![16, 64])], vec![], span());
        let sp = b.append(e, OpKind::Splat, vec![scale], vec![f(vec![16, 64])], vec![], span());
        let mut x = b.append(e, OpKind::Binary(BinaryOp::Mul), vec![b.result(c), b.result(sp)], vec![f(vec![16, 64])], vec![], span());
        for u in UnaryOp::ALL {
            x = b.append(e, OpKind::Unary(*u), vec![b.result(x)], vec![f(vec![16, 64])], vec![], span());
        }
        for bo in BinaryOp::ALL {
            x = b.append(e, OpKind::Binary(*bo), vec![b.result(x), b.result(c)], vec![f(vec![16, 64])], vec![], span());
        }
        let mut m = x;
        for co in CmpOp::ALL {
            m = b.append(e, OpKind::Cmp(*co), vec![b.result(x), b.result(c)], vec![Type::tile(DType::Bool, vec![16, 64])], vec![], span());
        }
        let s = b.append(e, OpKind::Select, vec![b.result(m), b.result(x), b.result(c)], vec![f(vec![16, 64])], vec![], span());
        let p = b.append(e, OpKind::Permute(vec![1, 0]), vec![b.result(s)], vec![f(vec![64, 16])], vec![], span());
        let r = b.append(e, OpKind::Reshape, vec![b.result(p)], vec![f(vec![1024])], vec![], span());
        let ed = b.append(e, OpKind::ExpandDims(0), vec![b.result(r)], vec![f(vec![1, 1024])], vec![], span());
        let bc = b.append(e, OpKind::Broadcast, vec![b.result(ed)], vec![f(vec![4, 1024])], vec![], span());
        for ro in ReduceOp::ALL {
            b.append(e, OpKind::Reduce(*ro, 1), vec![b.result(bc)], vec![f(vec![4])], vec![], span());
        }
        let acc = b.append(e, OpKind::Const(Lit::Float(0.0)), vec![], vec![f(vec![16, 16])], vec![], span());
        let pt = b.append(e, OpKind::Permute(vec![1, 0]), vec![b.result(c)], vec![f(vec![64, 16])], vec![], span());
        b.append(e, OpKind::Dot, vec![b.result(c), b.result(pt), b.result(acc)], vec![f(vec![16, 16])], vec![], span());
        let _ = d;
        b.append(e, OpKind::Store, vec![b.result(v), b.result(lits[1])], vec![], vec![], span());
        let text = round_trip(&k);
        for want in [
            "const -9223372036854775808 : f32",
            "const 1e-6",
            "const -0.0",
            "const inf",
            "const -inf",
            "const nan",
            "const 1e300",
            "const true",
            "permute [1, 0], ",
            "reduce.min 1, ",
            "cmp.ge ",
            "erf ",
            "shr ",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    /// A loop with iteration arguments, an `if` with results nested inside it, and a
    /// zero-operand `yield`.
    fn control_flow(well_scoped: bool) -> Kernel {
        let params =
            vec![tensor("out", DType::F32, &["4"], true), Param { name: "n".into(), kind: ParamKind::Scalar { dtype: DType::I32 } }];
        let mut k = kernel("loops", params, vec![HostExpr::Int(1), HostExpr::Int(2)]);
        let (out, n) = (k.param_value(0), k.param_value(1));
        let b = &mut k.body;
        let e = b.entry;
        let f4 = Type::tile(DType::F32, vec![4]);
        let lo = b.append(e, OpKind::Const(Lit::Int(0)), vec![], vec![i32s()], vec![], span());
        let st = b.append(e, OpKind::Const(Lit::Int(1)), vec![], vec![i32s()], vec![], span());
        let init = b.append(e, OpKind::Const(Lit::Float(0.0)), vec![], vec![f4.clone()], vec![], span());
        let body = b.new_block(&[i32s(), f4.clone(), i32s()]);
        let (iv, acc, cnt) = (b.block(body).args[0], b.block(body).args[1], b.block(body).args[2]);
        let two = b.append(body, OpKind::Const(Lit::Int(2)), vec![], vec![i32s()], vec![], span());
        let r = b.append(body, OpKind::Binary(BinaryOp::Rem), vec![iv, b.result(two)], vec![i32s()], vec![], span());
        let c = b.append(body, OpKind::Cmp(CmpOp::Eq), vec![b.result(r), b.result(lo)], vec![Type::scalar(DType::Bool)], vec![], span());
        let then = b.new_block(&[]);
        let one = b.append(then, OpKind::Const(Lit::Float(1.0)), vec![], vec![f4.clone()], vec![], span());
        let a2 = b.append(then, OpKind::Binary(BinaryOp::Add), vec![acc, b.result(one)], vec![f4.clone()], vec![], span());
        b.append(then, OpKind::Yield, vec![b.result(a2), iv], vec![], vec![], span());
        let els = b.new_block(&[]);
        b.append(els, OpKind::Yield, vec![acc, cnt], vec![], vec![], span());
        let iff = b.append(body, OpKind::If, vec![b.result(c)], vec![f4.clone(), i32s()], vec![then, els], span());
        let res = b.op(iff).results.clone();
        b.append(body, OpKind::Yield, res, vec![], vec![], span());
        let fr = b.append(
            e,
            OpKind::For,
            vec![b.result(lo), n, b.result(st), b.result(init), b.result(lo)],
            vec![f4.clone(), i32s()],
            vec![body],
            span(),
        );
        // An `if` without results whose branches yield nothing.
        let t2 = b.new_block(&[]);
        b.append(t2, OpKind::Store, vec![out, b.result(lo), b.result(fr)], vec![], vec![], span());
        b.append(t2, OpKind::Yield, vec![], vec![], vec![], span());
        let e2 = b.new_block(&[]);
        b.append(e2, OpKind::Yield, vec![], vec![], vec![], span());
        // The condition: a fresh one, or `c`, which lives inside the loop and is out of scope here.
        let cond = if well_scoped {
            let t = b.append(e, OpKind::Const(Lit::Bool(true)), vec![], vec![Type::scalar(DType::Bool)], vec![], span());
            b.result(t)
        } else {
            b.result(c)
        };
        b.append(e, OpKind::If, vec![cond], vec![], vec![t2, e2], span());
        k
    }

    #[test]
    fn control_flow_round_trips() {
        let text = round_trip(&control_flow(true));
        assert!(text.contains("} {\n"), "{text}");
        assert!(text.contains("= for %"), "{text}");
        assert!(text.contains("^(%"), "{text}");
    }

    #[test]
    fn values_of_a_region_are_not_visible_after_it() {
        let text = print_kernel(&control_flow(false));
        let err = parse_kernel(&text).unwrap_err();
        assert!(err.contains("not visible"), "{err}");
    }

    #[test]
    fn parses_the_documented_example() {
        let text = "kernel @vadd(%0 = x: &f32[N], %1 = y: &f32[N], %2 = z: &mut f32[N])\n    grid(((N + 1023) / 1024)) warps(4) stages(3)\n{\n  %3 = program_id 0 : i32\n  %4 = const 1024 : i32\n  %5 = mul %3, %4 : i32\n  %9 = const 0.0 : f32[4]\n  %6 = for %3, %4, %5, %9 : f32[4] {\n  ^(%7: i32, %8: f32[4]):\n    yield %8\n  }\n}\n";
        let k = parse_kernel(text).unwrap();
        assert_eq!(k.params.len(), 3);
        assert_eq!(k.grid.len(), 1);
        let again = print_kernel(&k);
        assert_eq!(print_kernel(&parse_kernel(&again).unwrap()), again);
    }

    /// A scan with a combine function prints its region and parses back; the verifier accepts
    /// elementwise scalar ops there and nothing that reads outside the region.
    #[test]
    fn scan_fn_round_trips_and_its_region_is_checked() {
        let head = "kernel @k(%0 = x: &f32[N, M])\n    grid(1) warps(4) stages(3)\n{\n  %1 = const 0 : i32\n  %2 = const 0.0 : f32\n  %3 = load %0, %1, %1, %2 : f32[4, 8]\n";
        let good = format!(
            "{head}  %4 = scan_fn 1, %3 : f32[4, 8] {{\n  ^(%5: f32, %6: f32):\n    %7 = const 0.5 : f32\n    %8 = mul %5, %7 : f32\n    %9 = add %8, %6 : f32\n    yield %9\n  }}\n}}\n"
        );
        let k = parse_kernel(&good).unwrap();
        crate::tir::verify_kernel(&k).unwrap();
        let text = print_kernel(&k);
        assert!(text.contains("scan_fn 1, %3 : f32[4, 8] {"), "{text}");
        assert_eq!(print_kernel(&parse_kernel(&text).unwrap()), text);
        // A value of the kernel used inside the combine function.
        let outer = format!(
            "{head}  %4 = scan_fn 1, %3 : f32[4, 8] {{\n  ^(%5: f32, %6: f32):\n    %9 = add %5, %2 : f32\n    yield %9\n  }}\n}}\n"
        );
        let err = crate::tir::verify_kernel(&parse_kernel(&outer).unwrap()).unwrap_err();
        assert!(err.contains("before its definition or outside its scope"), "{err}");
        // A tile op inside it.
        let tile = format!(
            "{head}  %4 = scan_fn 1, %3 : f32[4, 8] {{\n  ^(%5: f32, %6: f32):\n    %7 = arange 4 : i32[4]\n    yield %5\n  }}\n}}\n"
        );
        let err = crate::tir::verify_kernel(&parse_kernel(&tile).unwrap()).unwrap_err();
        assert!(err.contains("elementwise scalar ops only"), "{err}");
    }

    /// `slice axis start` prints and parses back; the verifier checks the range.
    #[test]
    fn slice_round_trips_and_is_checked() {
        let head = "kernel @k(%0 = x: &f32[N, M])\n    grid(1) warps(4) stages(3)\n{\n  %1 = const 0 : i32\n  %2 = const 0.0 : f32\n  %3 = load %0, %1, %1, %2 : f32[4, 8]\n";
        let good = format!("{head}  %4 = slice 1 4, %3 : f32[4, 4]\n}}\n");
        let k = parse_kernel(&good).unwrap();
        crate::tir::verify_kernel(&k).unwrap();
        assert_eq!(print_kernel(&k), good);
        let past = format!("{head}  %4 = slice 1 6, %3 : f32[4, 4]\n}}\n");
        let err = crate::tir::verify_kernel(&parse_kernel(&past).unwrap()).unwrap_err();
        assert!(err.contains("is not elements 6.. of axis 1"), "{err}");
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let good = print_kernel(&vadd());
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "expected `kernel`"),
            ("kernel @k() grid(1) warps(4) stages(3) {\n  %0 = add %1, %2 : i32\n}".into(), "used before it is defined"),
            ("kernel @k() grid(1) warps(4) stages(3) {\n  %0 = const 1 : i32\n  %0 = const 2 : i32\n}".into(), "defined twice"),
            ("kernel @k() grid(1) warps(4) stages(3) {\n  %0 = frob : i32\n}".into(), "unknown operation"),
            ("kernel @k() grid(1) warps(4) stages(3) {\n  %0 = const 1 : q32\n}".into(), "unknown element type"),
            ("kernel @k() grid(1) warps(4) stages(3) {\n  %0, %1 = const 1 : i32\n}".into(), "2 results but 1"),
            ("kernel @k() grid(1) warps(4) stages(3) {\n  %0 = const 99999999999999999999 : i32\n}".into(), "out of range"),
            ("kernel @k() grid(1) warps(4) stages(3) {\n  %0 = const 1 : i32\n".into(), "expected `}`"),
            ("kernel @k() grid(1) warps(4) stages(3) {\n}\nextra".into(), "end of input"),
            ("kernel @k() grid((1 + )) warps(4) stages(3) {\n}".into(), "expected an expression"),
            ("kernel @k() grid((1 ? 2)) warps(4) stages(3) {\n}".into(), "unexpected character"),
            ("kernel @k() grid(1) warps(4) stages(3) require((1 == 1), \"abc) {\n}".into(), "unterminated string"),
            ("kernel @k() grid(1) warps(4) stages(3) require((1 == 1), \"a\\qb\") {\n}".into(), "unknown escape"),
            ("kernel @k() grid(1) warps(99999999999) stages(3) {\n}".into(), "does not fit"),
            ("kernel @k(%0 = x: &f32[N) grid(1) warps(4) stages(3) {\n}".into(), "expected `]`"),
            ("kernel @k() grid(1) warps(4) stages(3) {\n  %0 = const 1 : i32\n  %2 = for %0 : i32 {\n  ^(%1: i32):\n    yield %1\n  }\n  yield %1\n}".into(), "not visible"),
            ("kernel @k() grid(1) warps(4) stages(3) {\n  %0 = const 1 : i32 {\n  ^(%1 i32):\n  }\n}".into(), "expected `:`"),
            ("kernel @k() grid(1) warps(4) stages(3) {\n  %4294967296 = const 1 : i32\n}".into(), "too large"),
            ("kernel @k() grid(1) warps(4) stages(3) {\n  %0 = const 1 : i32[]\n}".into(), "without `[]`"),
            ("kernel @k() grid(1) warps(4) stages(3) {\n  %0 = const -nan : f32\n}".into(), "expected a literal"),
            ("kernel @k() grid(1) warps(4) stages(3) {\n  %0 = const 1x : i32\n}".into(), "malformed number"),
            ("kernel @k() grid(1) warps(4) stages(3) {\n  store : i32\n}".into(), "without results"),
            (good.replace("%5, %10", "%5, %99"), "used before"),
            (good.replace("warps(", "warps "), "expected `(`"),
            ("kernel @k() grid(1) warps(4) stages(3) {\n  %0 = const 1 : tensor<f32, 2\n}".into(), "expected `>`"),
        ];
        for (text, want) in cases {
            match parse_kernel(&text) {
                Ok(k) => panic!("accepted malformed input:\n{text}\n{}", print_kernel(&k)),
                Err(e) => {
                    assert!(e.contains(want), "error {e:?} does not mention {want:?}\n{text}");
                    let (line, rest) = e.split_once(':').unwrap();
                    assert!(line.parse::<u32>().is_ok() && rest.split_once(':').unwrap().0.parse::<u32>().is_ok(), "no line:col in {e:?}");
                }
            }
        }
    }

    #[test]
    fn error_positions_are_line_and_column() {
        let e = parse_kernel("kernel @k() grid(1) warps(4) stages(3) {\n  %0 = const 1 : i32\n  %1 = add %0, %7 : i32\n}").unwrap_err();
        assert!(e.starts_with("3:16:"), "{e}");
    }

    #[test]
    fn deep_nesting_and_garbage_do_not_panic() {
        let mut deep = String::from("kernel @k() grid(1) warps(4) stages(3) {\n");
        for i in 0..10_000 {
            deep.push_str(&format!("if %0 {{\n^(%{}: i32):\n", i + 1));
        }
        assert!(parse_kernel(&deep).is_err());
        let deep_expr = format!("kernel @k() grid({}1{}) warps(4) stages(3) {{\n}}", "(-".repeat(10_000), ")".repeat(10_000));
        assert!(parse_kernel(&deep_expr).unwrap_err().contains("nested"));
        // Every prefix of a valid kernel is an error, never a panic.
        let text = print_kernel(&control_flow(true));
        for (i, _) in text.char_indices() {
            let _ = parse_kernel(&text[..i]);
        }
        // Byte-level corruption of a valid kernel, deterministically.
        let good = print_kernel(&vadd());
        let bytes = good.as_bytes();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut b = bytes.to_vec();
            let at = (seed % b.len() as u64) as usize;
            let alphabet = b"%(){}[],:=-^@\"\\0a9 \n.e";
            b[at] = alphabet[(seed >> 32) as usize % alphabet.len()];
            if let Ok(s) = String::from_utf8(b) {
                let _ = parse_kernel(&s);
            }
        }
    }
}
