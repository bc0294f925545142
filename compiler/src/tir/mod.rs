//! Level 1, the tile IR: SSA operations on whole tiles, structured control flow, one kernel per
//! `Kernel`, every tile shape a constant (kernels are specialised on their `const` parameters).
//!
//! Types: a `Tile` of rank 0 is a scalar; `Tensor` values are kernel parameters and views of them.
//! The text form (`print`) parses back (`parse`); `verify` checks the invariants below.

pub mod parse;
pub mod print;
pub mod verify;

use crate::dtype::DType;
use crate::ir::{Block, Body, Value};
use serde::{Deserialize, Serialize};
use std::fmt;

pub use parse::parse_kernel;
pub use print::print_kernel;
pub use verify::verify_kernel;

/// The type of a tile-IR value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    /// A tile of constant shape; `shape == []` is a scalar.
    Tile { dtype: DType, shape: Vec<i64> },
    /// A strided view of device memory of the given rank.
    Tensor { dtype: DType, rank: usize, mutable: bool },
}

impl Type {
    pub fn scalar(dtype: DType) -> Type {
        Type::Tile { dtype, shape: vec![] }
    }

    pub fn tile(dtype: DType, shape: Vec<i64>) -> Type {
        Type::Tile { dtype, shape }
    }

    pub fn dtype(&self) -> DType {
        match self {
            Type::Tile { dtype, .. } | Type::Tensor { dtype, .. } => *dtype,
        }
    }

    /// The tile shape (empty for scalars and tensors).
    pub fn shape(&self) -> &[i64] {
        match self {
            Type::Tile { shape, .. } => shape,
            Type::Tensor { .. } => &[],
        }
    }

    pub fn is_tensor(&self) -> bool {
        matches!(self, Type::Tensor { .. })
    }

    pub fn is_scalar(&self) -> bool {
        matches!(self, Type::Tile { shape, .. } if shape.is_empty())
    }

    /// The same shape with another element type.
    pub fn with_dtype(&self, dtype: DType) -> Type {
        match self {
            Type::Tile { shape, .. } => Type::Tile { dtype, shape: shape.clone() },
            Type::Tensor { rank, mutable, .. } => Type::Tensor { dtype, rank: *rank, mutable: *mutable },
        }
    }

    /// The number of elements (saturating: a shape too large to count is caught by the limits,
    /// never wrapped to a small one).
    pub fn numel(&self) -> i64 {
        numel(self.shape())
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Tile { dtype, shape } if shape.is_empty() => write!(f, "{dtype}"),
            Type::Tile { dtype, shape } => {
                write!(f, "{dtype}[")?;
                for (i, d) in shape.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{d}")?;
                }
                f.write_str("]")
            }
            Type::Tensor { dtype, rank, mutable } => {
                write!(f, "tensor<{}{dtype}, {rank}>", if *mutable { "mut " } else { "" })
            }
        }
    }
}

/// A literal constant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lit {
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Not,
    Abs,
    Exp,
    Exp2,
    Log,
    Log2,
    Sqrt,
    Rsqrt,
    Sin,
    Cos,
    Tanh,
    Sigmoid,
    Erf,
    Floor,
    Ceil,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}

/// Declares the op-name table once; the printer and parser both use it.
macro_rules! names {
    ($ty:ident { $($v:ident => $s:literal),* $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$v),*];
            pub fn name(self) -> &'static str {
                match self { $($ty::$v => $s),* }
            }
            pub fn from_name(s: &str) -> Option<$ty> {
                match s { $($s => Some($ty::$v),)* _ => None }
            }
        }
    };
}

names!(BinaryOp { Add => "add", Sub => "sub", Mul => "mul", Div => "div", Rem => "rem", Min => "min",
    Max => "max", And => "and", Or => "or", Xor => "xor", Shl => "shl", Shr => "shr" });
names!(CmpOp { Eq => "eq", Ne => "ne", Lt => "lt", Le => "le", Gt => "gt", Ge => "ge" });
names!(UnaryOp { Neg => "neg", Not => "not", Abs => "abs", Exp => "exp", Exp2 => "exp2", Log => "log",
    Log2 => "log2", Sqrt => "sqrt", Rsqrt => "rsqrt", Sin => "sin", Cos => "cos", Tanh => "tanh",
    Sigmoid => "sigmoid", Erf => "erf", Floor => "floor", Ceil => "ceil" });
names!(ReduceOp { Sum => "sum", Max => "max", Min => "min" });

/// The read-modify-write of an `atomic` op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AtomicOp {
    Add,
    Max,
    Min,
}

/// Index reductions: the position of the largest (smallest) element along an axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArgOp {
    Max,
    Min,
}

/// Inclusive scans along an axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScanOp {
    Sum,
    Max,
    Min,
    Prod,
}

names!(AtomicOp { Add => "add", Max => "max", Min => "min" });
names!(ArgOp { Max => "argmax", Min => "argmin" });
names!(ScanOp { Sum => "sum", Max => "max", Min => "min", Prod => "prod" });

/// The operations of the tile IR. Operand and result conventions are listed per variant;
/// `verify` checks them.
#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    /// `() -> T`: a constant, splatted when `T` is a tile.
    Const(Lit),
    /// `() -> i32`: this program's index along `axis` of the grid.
    ProgramId(u32),
    /// `() -> i32`: the grid size along `axis`.
    NumPrograms(u32),
    /// `() -> i32[n]`: `0, 1, …, n-1`.
    Arange(i64),
    /// `(s: T) -> T[shape]`.
    Splat,
    /// `(x: T[s]) -> T[s']`, same rank, each dimension equal or 1 in `s`.
    Broadcast,
    /// `(x: T[s]) -> T[s with a 1 inserted at axis]`.
    ExpandDims(u32),
    /// `(x: T[s]) -> T[s']`, same number of elements, row-major order kept.
    Reshape,
    /// `(x: T[s]) -> T[permuted s]`: result dimension `i` is operand dimension `perm[i]`.
    Permute(Vec<u32>),
    /// `(a: T[s], b: T[s]) -> T[s]`.
    Binary(BinaryOp),
    /// `(a: T[s], b: T[s]) -> bool[s]`.
    Cmp(CmpOp),
    /// `(a: T[s]) -> T[s]`.
    Unary(UnaryOp),
    /// `(c: bool[s], a: T[s], b: T[s]) -> T[s]`.
    Select,
    /// `(a: T[s], b: T[s], c: T[s]) -> T[s]`, floats: `a · b + c` rounded once (`f16`/`bf16`:
    /// computed in f32, then rounded to the type).
    Fma,
    /// `(a: T[s]) -> U[s]`: the result type names the target.
    Cast,
    /// `(a: T[s]) -> T[s without axis]`.
    Reduce(ReduceOp, u32),
    /// `(a: T[m, k], b: T[k, n], acc: A[m, n]) -> A[m, n]`: `acc + a · b`.
    Dot,
    /// `(t: tensor<T, r>) -> i32`: the size of dimension `axis`.
    Dim(u32),
    /// `(t: tensor<T, r>, i0: i32, …) -> tensor<T, r - k>`: fixes the first `k` indices.
    View,
    /// `(t: tensor<T, r>, o0: i32, …, o_{r-1}: i32, pad: T) -> T[d0, …]` (rank r): out-of-range
    /// elements are `pad`.
    Load,
    /// `(t: tensor<mut T, r>, o0: i32, …, x: T[d0, …]) -> ()`: out-of-range elements are dropped.
    Store,
    /// `(t: tensor<T, r>, i0: i32[s], …, i_{r-1}: i32[s], mask: bool[s], pad: T) -> T[s]`: element
    /// `c` reads `t[i0[c], …]` when `mask[c]` holds and every index is in range, else `pad`.
    Gather,
    /// `(t: tensor<mut T, r>, i0: i32[s], …, i_{r-1}: i32[s], x: T[s], mask: bool[s]) -> ()`:
    /// writes `x[c]` at `t[i0[c], …]` where `mask[c]` holds and every index is in range. Several
    /// elements at one index: the interpreter keeps the last in row-major order, the GPU any one.
    Scatter,
    /// Operands as `Scatter`: `t[i0[c], …] = op(t[…], x[c])` atomically (relaxed, device scope)
    /// for each selected in-range element.
    Atomic(AtomicOp),
    /// `(x: T[s]) -> i32[s without axis]`: the index of the largest (smallest) element along
    /// `axis`; the first on ties; NaNs are ignored unless all are NaN (then 0).
    ArgReduce(ArgOp, u32),
    /// `(x: T[s]) -> T[s]`: the inclusive scan (running sum or maximum) along `axis`.
    Scan(ScanOp, u32),
    /// `(x: T[s]) -> T[s]`: the inclusive scan along `axis` with a combine function, its one
    /// region `^(acc: T, x: T)` of elementwise scalar ops yielding the next `T`: element `j` is
    /// `f(…f(f(x₀, x₁), x₂)…, x_j)`, folded left in that order.
    ScanFn(u32),
    /// `(x: T[s]) -> T[s']`: the elements `start..start + s'[axis]` along `axis` (`Slice(axis,
    /// start)`; the other dimensions unchanged).
    Slice(u32, u32),
    /// `(a: T[s], b: T[s]) -> T[s, 2]`: stacks `a` and `b` on a new last axis.
    Join,
    /// `(x: T[s, 2]) -> (T[s], T[s])`: the two halves of the last axis (the inverse of `Join`).
    Split,
    /// `(x…) -> ()`: prints the format (each `{}` replaced by the next operand, `{{` and `}}` are
    /// braces) with the program id. The operands share one shape; a tile prints one line per
    /// element, prefixed by its index.
    Print(String),
    /// `(c: bool[s]) -> ()`: stops the program with the message when an element of `c` is false.
    Assert(String),
    /// `(init: T…) -> (T…)`; two regions taking `(T…)`: the condition, ending with
    /// `Yield(c: bool)`, and the body, ending with `Yield(next: T…)`. Runs the body while the
    /// condition holds; the results are the values for which it first failed.
    While,
    /// `() -> ()`: ends the program (the ops after it in its region do not run).
    Return,
    /// `(lo: i32, hi: i32, step: i32, init…) -> (T…)`; one region whose block takes
    /// `(iv: i32, iter: T…)` and ends with `Yield(next: T…)`.
    For,
    /// `(cond: bool) -> (T…)`; two regions (then, else), each ending with `Yield(T…)`.
    If,
    /// `(v…) -> ()`: ends a region, passing its values to the parent op.
    Yield,
}

impl OpKind {
    /// Elementwise arithmetic (constants, unary and binary ops, compares, `select`, casts): what a
    /// scan's combine function may hold.
    pub fn is_elementwise(&self) -> bool {
        matches!(
            self,
            OpKind::Const(_) | OpKind::Binary(_) | OpKind::Unary(_) | OpKind::Cmp(_) | OpKind::Select | OpKind::Fma | OpKind::Cast
        )
    }

    /// Computes its results from its operands alone (no memory, no regions, no effects): an op
    /// that may be computed again elsewhere (`lower::pipeline`'s `clone_at`, `overlap_dots`).
    pub fn is_pure(&self) -> bool {
        self.is_elementwise()
            || matches!(
                self,
                OpKind::ProgramId(_)
                    | OpKind::NumPrograms(_)
                    | OpKind::Arange(_)
                    | OpKind::Splat
                    | OpKind::Broadcast
                    | OpKind::ExpandDims(_)
                    | OpKind::Reshape
                    | OpKind::Permute(_)
                    | OpKind::Dim(_)
                    | OpKind::View
            )
    }

    /// The keyword of this op in the text form.
    pub fn mnemonic(&self) -> String {
        match self {
            OpKind::Const(_) => "const".into(),
            OpKind::ProgramId(_) => "program_id".into(),
            OpKind::NumPrograms(_) => "num_programs".into(),
            OpKind::Arange(_) => "arange".into(),
            OpKind::Splat => "splat".into(),
            OpKind::Broadcast => "broadcast".into(),
            OpKind::ExpandDims(_) => "expand_dims".into(),
            OpKind::Reshape => "reshape".into(),
            OpKind::Permute(_) => "permute".into(),
            OpKind::Binary(b) => b.name().into(),
            OpKind::Cmp(c) => format!("cmp.{}", c.name()),
            OpKind::Unary(u) => u.name().into(),
            OpKind::Select => "select".into(),
            OpKind::Fma => "fma".into(),
            OpKind::Cast => "cast".into(),
            OpKind::Reduce(r, _) => format!("reduce.{}", r.name()),
            OpKind::Dot => "dot".into(),
            OpKind::Dim(_) => "dim".into(),
            OpKind::View => "view".into(),
            OpKind::Load => "load".into(),
            OpKind::Store => "store".into(),
            OpKind::Gather => "gather".into(),
            OpKind::Scatter => "scatter".into(),
            OpKind::Atomic(a) => format!("atomic.{}", a.name()),
            OpKind::ArgReduce(a, _) => a.name().into(),
            OpKind::Scan(s, _) => format!("scan.{}", s.name()),
            OpKind::ScanFn(_) => "scan_fn".into(),
            OpKind::Slice(..) => "slice".into(),
            OpKind::Join => "join".into(),
            OpKind::Split => "split".into(),
            OpKind::Print(_) => "print".into(),
            OpKind::Assert(_) => "assert".into(),
            OpKind::While => "while".into(),
            OpKind::Return => "return".into(),
            OpKind::For => "for".into(),
            OpKind::If => "if".into(),
            OpKind::Yield => "yield".into(),
        }
    }
}

/// The body of a kernel in the tile IR.
pub type TirBody = Body<OpKind, Type>;

/// A dimension of a tensor parameter's declared shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dim {
    Const(i64),
    Sym(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Const(c) => write!(f, "{c}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

/// A kernel parameter as the launcher sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Param {
    pub name: String,
    pub kind: ParamKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ParamKind {
    Tensor { dtype: DType, dims: Vec<Dim>, mutable: bool },
    Scalar { dtype: DType },
}

impl Param {
    /// The tile-IR type of the entry-block argument for this parameter.
    pub fn ty(&self) -> Type {
        match &self.kind {
            ParamKind::Tensor { dtype, dims, mutable } => Type::Tensor { dtype: *dtype, rank: dims.len(), mutable: *mutable },
            ParamKind::Scalar { dtype } => Type::scalar(*dtype),
        }
    }
}

/// Integer and boolean expressions evaluated on the host at launch: grid sizes and `#[require]`
/// conditions, over dimension symbols and integer scalar parameters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostExpr {
    Int(i64),
    Bool(bool),
    /// A dimension symbol or an integer scalar parameter, by name.
    Sym(String),
    Neg(Box<HostExpr>),
    Not(Box<HostExpr>),
    Bin(HostOp, Box<HostExpr>, Box<HostExpr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostOp {
    Add,
    Sub,
    Mul,
    /// Integer division rounding toward zero (division by zero and `i64::MIN / -1` are
    /// evaluation errors, as every overflow is).
    Div,
    Rem,
    Min,
    Max,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl HostOp {
    pub fn symbol(self) -> &'static str {
        match self {
            HostOp::Add => "+",
            HostOp::Sub => "-",
            HostOp::Mul => "*",
            HostOp::Div => "/",
            HostOp::Rem => "%",
            HostOp::Min => "min",
            HostOp::Max => "max",
            HostOp::Eq => "==",
            HostOp::Ne => "!=",
            HostOp::Lt => "<",
            HostOp::Le => "<=",
            HostOp::Gt => ">",
            HostOp::Ge => ">=",
            HostOp::And => "&&",
            HostOp::Or => "||",
        }
    }
}

impl HostExpr {
    /// Evaluates with `lookup` giving symbol values; booleans are 0 or 1. Arithmetic is checked:
    /// an overflow of i64, a division by zero or an unknown symbol is an error naming the
    /// sub-expression and the values of its symbols (never a wrapped value).
    pub fn eval(&self, lookup: &dyn Fn(&str) -> Option<i64>) -> Result<i64, String> {
        let fail = |what: &str| {
            let mut names = vec![];
            self.symbols(&mut names);
            let vals: Vec<String> = names.iter().map(|n| format!("{n} = {}", lookup(n).map_or("?".into(), |v| v.to_string()))).collect();
            let with = if vals.is_empty() { String::new() } else { format!(" with {}", vals.join(", ")) };
            format!("`{self}` {what}{with}")
        };
        Ok(match self {
            HostExpr::Int(v) => *v,
            HostExpr::Bool(b) => *b as i64,
            HostExpr::Sym(s) => lookup(s).ok_or_else(|| format!("no value for `{s}`"))?,
            HostExpr::Neg(e) => e.eval(lookup)?.checked_neg().ok_or_else(|| fail("overflows i64"))?,
            HostExpr::Not(e) => (e.eval(lookup)? == 0) as i64,
            HostExpr::Bin(op, a, b) => {
                let a = a.eval(lookup)?;
                // `&&` and `||` short-circuit, so `n == 0 || K / n > 2` is not a division by zero.
                match (op, a != 0) {
                    (HostOp::And, false) => return Ok(0),
                    (HostOp::Or, true) => return Ok(1),
                    _ => {}
                }
                let b = b.eval(lookup)?;
                let checked = |r: Option<i64>| r.ok_or_else(|| fail("overflows i64"));
                match op {
                    HostOp::Add => checked(a.checked_add(b))?,
                    HostOp::Sub => checked(a.checked_sub(b))?,
                    HostOp::Mul => checked(a.checked_mul(b))?,
                    HostOp::Div | HostOp::Rem if b == 0 => {
                        return Err(fail(if *op == HostOp::Div { "divides by zero" } else { "takes a remainder by zero" }));
                    }
                    HostOp::Div => checked(a.checked_div(b))?,
                    // Only `i64::MIN % -1` fails `checked_rem` here, and its remainder is 0.
                    HostOp::Rem => a.checked_rem(b).unwrap_or(0),
                    HostOp::Min => a.min(b),
                    HostOp::Max => a.max(b),
                    HostOp::Eq => (a == b) as i64,
                    HostOp::Ne => (a != b) as i64,
                    HostOp::Lt => (a < b) as i64,
                    HostOp::Le => (a <= b) as i64,
                    HostOp::Gt => (a > b) as i64,
                    HostOp::Ge => (a >= b) as i64,
                    HostOp::And | HostOp::Or => (b != 0) as i64,
                }
            }
        })
    }

    /// Whether this expression reads the symbol `name` (allocates nothing).
    pub fn reads(&self, name: &str) -> bool {
        match self {
            HostExpr::Sym(s) => s == name,
            HostExpr::Neg(e) | HostExpr::Not(e) => e.reads(name),
            HostExpr::Bin(_, a, b) => a.reads(name) || b.reads(name),
            HostExpr::Int(_) | HostExpr::Bool(_) => false,
        }
    }

    /// The symbols this expression reads.
    pub fn symbols(&self, out: &mut Vec<String>) {
        match self {
            HostExpr::Sym(s) if !out.contains(s) => out.push(s.clone()),
            HostExpr::Neg(e) | HostExpr::Not(e) => e.symbols(out),
            HostExpr::Bin(_, a, b) => {
                a.symbols(out);
                b.symbols(out);
            }
            _ => {}
        }
    }
}

impl fmt::Display for HostExpr {
    /// Fully parenthesised infix; `min`/`max` as calls. Parses back with the tile-IR parser.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostExpr::Int(v) => write!(f, "{v}"),
            HostExpr::Bool(b) => write!(f, "{b}"),
            HostExpr::Sym(s) => f.write_str(s),
            HostExpr::Neg(e) => write!(f, "(-{e})"),
            HostExpr::Not(e) => write!(f, "(!{e})"),
            HostExpr::Bin(op @ (HostOp::Min | HostOp::Max), a, b) => write!(f, "{}({a}, {b})", op.symbol()),
            HostExpr::Bin(op, a, b) => write!(f, "({a} {} {b})", op.symbol()),
        }
    }
}

/// A `#[require]` condition with its source text for the launch-time error message.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Require {
    pub cond: HostExpr,
    pub text: String,
}

/// The value of a `const` parameter the kernel was specialised with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConstValue {
    Int(i64),
    Bool(bool),
}

impl fmt::Display for ConstValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConstValue::Int(v) => write!(f, "{v}"),
            ConstValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// The autotuner's search space, from `#[tune(BM = [64, 128], warps = [4, 8], stages = [3, 4])]`:
/// the values to try for each named `const` parameter, and for the warps, stages and blocks per
/// multiprocessor. An empty
/// list means "the kernel's own value". The space is kept for the tuner; code generation ignores
/// it (each configuration is a separate build with `Options::consts`, `warps` and `stages`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TuneSpace {
    /// `const` parameter name → the values to try, in declaration order of the attribute.
    pub consts: Vec<(String, Vec<i64>)>,
    pub warps: Vec<u32>,
    pub stages: Vec<u32>,
    #[serde(default)]
    pub blocks_per_sm: Vec<u32>,
    /// `warp_specialize = [false, true]`: with and without a producer warpgroup.
    #[serde(default)]
    pub warp_specialize: Vec<bool>,
}

impl TuneSpace {
    /// Whether there is nothing to tune (no `#[tune]` attribute).
    pub fn is_empty(&self) -> bool {
        self.consts.is_empty()
            && self.warps.is_empty()
            && self.stages.is_empty()
            && self.blocks_per_sm.is_empty()
            && self.warp_specialize.is_empty()
    }

    /// The number of configurations (the product of the list lengths; 1 when empty).
    pub fn len(&self) -> usize {
        let lens = self.consts.iter().map(|(_, v)| v.len()).chain([
            self.warps.len(),
            self.stages.len(),
            self.blocks_per_sm.len(),
            self.warp_specialize.len(),
        ]);
        lens.map(|n| n.max(1)).fold(1usize, |a, n| a.saturating_mul(n))
    }
}

/// Most elements of one tile (a guard against sizing mistakes like `[1 << 30]`).
pub const MAX_TILE_ELEMS: i64 = 1 << 20;

/// The number of elements of `shape`, saturating at `i64::MAX` (negative dimensions count as 0).
pub fn numel(shape: &[i64]) -> i64 {
    shape.iter().fold(1i64, |n, &d| n.saturating_mul(d.max(0)))
}

/// Most warps per block: 32 warps are the 1024 threads a block may have.
pub const MAX_WARPS: u32 = 32;
/// Most software-pipelining stages (each one is a set of shared-memory buffers).
pub const MAX_STAGES: u32 = 16;

/// The rule for a kernel's warp count, shared by `#[warps]`, `#[tune(warps = ..)]`, the
/// `Options::warps` override (`--warps`) and the verifier: a power of two from 1 to
/// [`MAX_WARPS`]. The error is the rule, for the caller to prefix with what gave the value.
pub fn check_warps(v: i64) -> Result<u32, String> {
    match u32::try_from(v) {
        Ok(w) if w.is_power_of_two() && w <= MAX_WARPS => Ok(w),
        _ => Err(format!("warps must be a power of two from 1 to {MAX_WARPS}")),
    }
}

/// The rule for a kernel's pipelining depth, shared by `#[stages]`, `#[tune(stages = ..)]`, the
/// `Options::stages` override (`--stages`) and the verifier: from 1 to [`MAX_STAGES`].
pub fn check_stages(v: i64) -> Result<u32, String> {
    match u32::try_from(v) {
        Ok(s) if (1..=MAX_STAGES).contains(&s) => Ok(s),
        _ => Err(format!("stages must be from 1 to {MAX_STAGES}")),
    }
}

/// Most blocks a multiprocessor holds at once (sm_80 and sm_90).
pub const MAX_BLOCKS_PER_SM: u32 = 32;
/// Most threads a multiprocessor holds at once (sm_80 and sm_90).
pub const MAX_THREADS_PER_SM: u32 = 2048;

/// The rule for `#[blocks_per_sm(N)]` with `warps` warps per block, shared by the attribute and
/// the verifier: from 1 to [`MAX_BLOCKS_PER_SM`], and N blocks' threads fit on a
/// multiprocessor.
pub fn check_blocks_per_sm(v: i64, warps: u32) -> Result<u32, String> {
    match u32::try_from(v) {
        Ok(n) if (1..=MAX_BLOCKS_PER_SM).contains(&n) => {
            let threads = u64::from(n) * u64::from(warps) * 32;
            if threads > u64::from(MAX_THREADS_PER_SM) {
                Err(format!(
                    "{n} blocks of {} threads are {threads} threads, more than the {MAX_THREADS_PER_SM} a multiprocessor holds",
                    warps * 32
                ))
            } else {
                Ok(n)
            }
        }
        _ => Err(format!("blocks_per_sm must be from 1 to {MAX_BLOCKS_PER_SM}")),
    }
}

/// One kernel, specialised on its `const` parameters, in the tile IR.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub name: String,
    pub doc: Option<String>,
    /// Parameters in declaration order; the entry block has one argument per parameter.
    pub params: Vec<Param>,
    pub consts: Vec<(String, ConstValue)>,
    /// Grid size per axis (1 to 3 axes).
    pub grid: Vec<HostExpr>,
    pub warps: u32,
    pub stages: u32,
    /// `#[blocks_per_sm(N)]`: blocks that must fit on one multiprocessor together, which caps
    /// each thread's registers at `65536 / (N · threads)` (CUDA's `__launch_bounds__` minimum).
    pub blocks_per_sm: Option<u32>,
    /// `#[warp_specialize]`: on sm_90a, a producer warpgroup issues the main loop's bulk tensor
    /// copies while the kernel's warps compute (`lower::warp_specialize`).
    pub warp_specialize: bool,
    pub requires: Vec<Require>,
    /// The `#[tune]` space (not part of the text form: the tuner reads it, codegen does not).
    pub tune: TuneSpace,
    pub body: TirBody,
}

impl Kernel {
    pub fn entry(&self) -> Block {
        self.body.entry
    }

    /// The entry-block argument of parameter `i`.
    pub fn param_value(&self, i: usize) -> Value {
        self.body.block(self.body.entry).args[i]
    }
}

/// A piece of a `print` format: literal text, or the place of the next value (`{}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatPiece {
    Text(String),
    Value,
}

/// The row-major strides, in elements, of a tile or tensor of `shape` (wrapping: a huge shape
/// never panics).
pub fn row_major(shape: &[i64]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1].wrapping_mul(shape[i + 1]);
    }
    s
}

/// Splits a `print` format into text and `{}` placeholders; `{{` and `}}` are literal braces.
/// A lone `{` or `}` is an error (the message says what to write instead).
pub fn parse_format(fmt: &str) -> Result<Vec<FormatPiece>, String> {
    let mut out = vec![];
    let mut text = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('{', Some('{')) | ('}', Some('}')) => {
                chars.next();
                text.push(c);
            }
            ('{', Some('}')) => {
                chars.next();
                if !text.is_empty() {
                    out.push(FormatPiece::Text(std::mem::take(&mut text)));
                }
                out.push(FormatPiece::Value);
            }
            ('{', _) => return Err("`{` must be followed by `}` (a value) or `{` (a literal brace)".into()),
            ('}', _) => return Err("a lone `}`: write `}}` for a literal brace".into()),
            _ => text.push(c),
        }
    }
    if !text.is_empty() {
        out.push(FormatPiece::Text(text));
    }
    Ok(out)
}
