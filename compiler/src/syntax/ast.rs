//! The abstract syntax tree of a `.tile` file: what the parser produces, with a span on every node.

use crate::diag::Span;

/// An identifier with its location.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A parsed source file.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // few items per file; boxing would only add noise
pub enum Item {
    /// `kernel NAME<…>(…) { … }` or `fn NAME(…) -> T { … }`.
    Func(FuncDecl),
    /// `use std::math::cdiv;`, `use std::math::{a, b};`, `use "file.tile"::{a, b};`.
    Use(UseDecl),
}

#[derive(Clone, Debug, PartialEq)]
pub struct UseDecl {
    pub source: UseSource,
    /// The imported names; `use std::math::cdiv;` imports one.
    pub names: Vec<Ident>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum UseSource {
    /// `std::math` is `Path(["std", "math"])`.
    Path(Vec<Ident>),
    /// `"relative/path.tile"`.
    File(String, Span),
}

/// `#[name(args)]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    pub name: Ident,
    pub args: Vec<AttrArg>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AttrArg {
    /// A positional expression: `cdiv(M, BM)`, `X >= KS`, `4`.
    Expr(Expr),
    /// `BM = [64, 128]`.
    Named(Ident, Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub struct FuncDecl {
    /// The `///` lines before the item, joined with newlines, without the `///`.
    pub doc: Option<String>,
    pub attrs: Vec<Attr>,
    pub is_kernel: bool,
    pub name: Ident,
    pub consts: Vec<ConstParam>,
    pub params: Vec<Param>,
    pub ret: Option<TypeExpr>,
    pub body: Block,
    pub span: Span,
}

/// `const BM: i32 = 128`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConstParam {
    pub name: Ident,
    pub ty: TypeExpr,
    pub default: Option<Expr>,
    pub span: Span,
}

/// `a: &bf16[M, K]`, or in a `fn`, `x` with no type.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub ty: Option<TypeExpr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    pub kind: TypeKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TypeKind {
    /// `f32`, `i32`, `bool`: the identifier is the element type's name (checked by sema).
    Scalar(Ident),
    /// `f32[128, BN]`; a dimension may be `_` (`Expr::Wildcard`) in `fn` signatures.
    Tile { elem: Ident, dims: Vec<Expr> },
    /// `&bf16[M, K]` or `&mut bf16[M, K]`.
    Tensor { mutable: bool, elem: Ident, dims: Vec<Expr> },
    /// `(f32[_], i32)`: only as a `fn`'s return type.
    Tuple(Vec<TypeExpr>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    /// The value of the block: its last expression when it has no `;`.
    pub tail: Option<Box<Expr>>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    /// `let [mut] pat [: T] = init;`
    Let {
        pat: Pattern,
        mutable: bool,
        ty: Option<TypeExpr>,
        init: Expr,
    },
    /// `x = e;` (`op` is `None`) or `x += e;` (`op` is `Some(Add)`).
    Assign {
        target: Ident,
        op: Option<BinOp>,
        value: Expr,
    },
    /// `for var in iter { body }`; `iter` is a `Range` or `(range).step_by(s)` expression.
    For {
        var: Ident,
        iter: Expr,
        body: Block,
    },
    While {
        cond: Expr,
        body: Block,
    },
    /// `return;`
    Return,
    /// `break;`: leaves the innermost loop (`sema::loop_exits` rewrites loops that have one).
    Break,
    /// `continue;`: skips the rest of the innermost loop's body.
    Continue,
    /// An expression statement: `c.store(...);`, or an `if` without `;`.
    Expr(Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Pattern {
    Name(Ident),
    /// `(b, h)`.
    Tuple(Vec<Ident>, Span),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    BitAnd,
    BitOr,
    BitXor,
    Shl,
    Shr,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
            BinOp::BitAnd => "&",
            BinOp::BitOr => "|",
            BinOp::BitXor => "^",
            BinOp::Shl => "<<",
            BinOp::Shr => ">>",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    Neg,
    Not,
}

/// One index in `t[i, None, :]`.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexArg {
    Expr(Expr),
    /// `None`: a new axis of size 1.
    NewAxis(Span),
    /// `:`: the whole axis.
    Full(Span),
    /// `a:b`, `a:`, `:b`: the elements `a..b` of the axis (constant bounds).
    Range(Option<Box<Expr>>, Option<Box<Expr>>, Span),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// `42`, `0x2a`, `1_000`, `42i64` (the suffix is the type name).
    Int(i64, Option<String>),
    /// `1.0`, `1e-6`, `0.5f32`.
    Float(f64, Option<String>),
    Bool(bool),
    /// `inf`: positive infinity of the context's float type.
    Inf,
    /// `"text"` (escapes decoded): the format of `print`, the message of `assert`.
    Str(String),
    /// `_` in a type's dimension list.
    Wildcard,
    Name(Ident),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `f(args)`; `f` is a plain name (built-in, `fn`, or imported).
    Call(Ident, Vec<Expr>),
    /// `recv.name(args)`: `x.sum(1)`, `t.load(...)`, `(0..K).step_by(BK)`.
    Method(Box<Expr>, Ident, Vec<Expr>),
    /// `base[args]`.
    Index(Box<Expr>, Vec<IndexArg>),
    /// `e as T`.
    Cast(Box<Expr>, TypeExpr),
    /// `if cond { … } else { … }`; `else if` is an `else` block holding only an `If` tail.
    If(Box<Expr>, Block, Option<Block>),
    /// `(a, b)`.
    Tuple(Vec<Expr>),
    /// `[a, b]`: offsets, shapes, attribute value lists.
    List(Vec<Expr>),
    /// `a..b`.
    Range(Box<Expr>, Box<Expr>),
    /// `( e )`, kept so that spans and printing stay faithful.
    Paren(Box<Expr>),
}
