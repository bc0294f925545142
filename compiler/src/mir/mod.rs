//! Level 3, the machine IR: one kernel as functions of basic blocks over typed virtual
//! registers, every instruction as data.
//!
//! This is what codegen builds from the thread IR (through [`builder::Builder`], which folds,
//! numbers and hoists as it goes) and what the emitters read: `emit::ptx` prints it as PTX, and
//! `emit::llvm` translates it to LLVM IR for LLVM's NVPTX back end.
//!
//! Registers are variables, as in PTX: most are written once, but a phi is a register written by
//! the parallel copies at the ends of its block's predecessors ([`BlockData::copies`]), and an
//! instruction may update a register in place (a predicated load keeps the old value where its
//! predicate is false; an inline-asm accumulator tied to its input). The verifier checks that
//! every use is reached only through a definition on every path. A register has the type it was
//! created with; an operand ([`V`]) may read it as another type of the same width (a bit cast,
//! free: the same register), which the LLVM emitter turns into a `bitcast`.
//!
//! 8- and 16-bit integers and 16-bit floats live in 16-bit registers (PTX has no 8-bit ones): an
//! `I8` value's upper byte is unspecified, and instructions that depend on it normalise first
//! (the builder emits the conversion).

pub mod builder;
pub mod dce;
pub mod eval;
mod print;
#[cfg(test)]
mod tests;
mod verify;

use crate::Target;
use std::fmt;

pub use print::print_module;

/// A machine-IR pass: a name for `--dump-after` and the function that runs it.
pub struct MirPass {
    pub name: &'static str,
    pub run: fn(&mut Module) -> usize,
}

/// The machine-IR passes run after codegen, before either emitter, in order.
/// - `mir_dce` removes what the builder built and folding left unread (`dce`).
pub const MIR_PIPELINE: &[MirPass] = &[MirPass { name: "mir_dce", run: dce::run }];
pub use verify::verify_module;

/// The type of a register or constant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Ty {
    Pred,
    I8,
    I16,
    I32,
    I64,
    F16,
    BF16,
    F32,
    F64,
}

impl Ty {
    pub fn bits(self) -> u32 {
        match self {
            Ty::Pred => 1,
            Ty::I8 => 8,
            Ty::I16 | Ty::F16 | Ty::BF16 => 16,
            Ty::I32 | Ty::F32 => 32,
            Ty::I64 | Ty::F64 => 64,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Ty::F16 | Ty::BF16 | Ty::F32 | Ty::F64)
    }

    /// The integer type of the same width (bit casts).
    pub fn int_of_bits(bits: u32) -> Ty {
        match bits {
            1 => Ty::Pred,
            8 => Ty::I8,
            16 => Ty::I16,
            32 => Ty::I32,
            _ => Ty::I64,
        }
    }

    /// Register class: 0 predicates, 1 16-bit, 2 32-bit, 3 64-bit registers.
    pub fn class(self) -> usize {
        match self {
            Ty::Pred => 0,
            Ty::I8 | Ty::I16 | Ty::F16 | Ty::BF16 => 1,
            Ty::I32 | Ty::F32 => 2,
            Ty::I64 | Ty::F64 => 3,
        }
    }

    /// The width of the register, in bits (8-bit values are in 16-bit registers).
    pub fn class_bits(self) -> u32 {
        [1, 16, 32, 64][self.class()]
    }

    /// The untyped PTX type of the register (`b16`, `b32`, …).
    pub fn b(self) -> &'static str {
        ["pred", "b16", "b32", "b64"][self.class()]
    }

    /// The signed integer PTX type of the register's width.
    pub fn s(self) -> &'static str {
        ["pred", "s16", "s32", "s64"][self.class()]
    }

    /// The unsigned integer PTX type of the register's width.
    pub fn u(self) -> &'static str {
        ["pred", "u16", "u32", "u64"][self.class()]
    }

    /// The float PTX type.
    pub fn f(self) -> &'static str {
        match self {
            Ty::F16 => "f16",
            Ty::BF16 => "bf16",
            Ty::F64 => "f64",
            _ => "f32",
        }
    }

    /// The PTX type of this value in memory (`u8` for bytes).
    pub fn mem(self) -> &'static str {
        match self {
            Ty::Pred | Ty::I8 => "u8",
            _ => self.b(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Ty::Pred => "pred",
            Ty::I8 => "i8",
            Ty::I16 => "i16",
            Ty::I32 => "i32",
            Ty::I64 => "i64",
            Ty::F16 => "f16",
            Ty::BF16 => "bf16",
            Ty::F32 => "f32",
            Ty::F64 => "f64",
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value: a register or a constant (integers sign-extended from their width, floats as their
/// bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct V {
    pub ty: Ty,
    pub k: K,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum K {
    Reg(u32),
    Imm(i64),
}

impl V {
    /// An integer constant of `ty`, wrapped to its width.
    pub fn int(ty: Ty, v: i64) -> V {
        let v = match ty.bits() {
            1 => (v != 0) as i64,
            8 => v as i8 as i64,
            16 => v as i16 as i64,
            32 => v as i32 as i64,
            _ => v,
        };
        V { ty, k: K::Imm(v) }
    }

    /// A float constant of `ty`, rounded to nearest even (`dtype::round_bits`, the
    /// interpreter's rounding).
    pub fn float(ty: Ty, v: f64) -> V {
        let d = match ty {
            Ty::F64 => crate::DType::F64,
            Ty::F32 => crate::DType::F32,
            Ty::F16 => crate::DType::F16,
            _ => crate::DType::BF16,
        };
        V { ty, k: K::Imm(crate::dtype::float_bits(d, v) as i64) }
    }

    /// The constant (sign-extended integer, or float bits), if this is one.
    pub fn imm(self) -> Option<i64> {
        match self.k {
            K::Imm(v) => Some(v),
            K::Reg(_) => None,
        }
    }

    /// The register, if this is one.
    pub fn reg(self) -> Option<u32> {
        match self.k {
            K::Reg(r) => Some(r),
            K::Imm(_) => None,
        }
    }

    /// The value of a float constant.
    pub fn float_imm(self) -> Option<f64> {
        let b = self.imm()?;
        let d = match self.ty {
            Ty::F64 => crate::DType::F64,
            Ty::F32 => crate::DType::F32,
            Ty::F16 => crate::DType::F16,
            Ty::BF16 => crate::DType::BF16,
            _ => return None,
        };
        Some(crate::dtype::float_from_bits(d, b as u64))
    }

    /// A unique number of a register or constant with its type, for value-numbering keys: the
    /// same register seen as another type (an i16 and its i8 truncation) is another value.
    pub fn id(self) -> u128 {
        let ty = self.ty as u128;
        match self.k {
            K::Reg(r) => (r as u128) << 8 | ty << 1,
            K::Imm(v) => (v as u64 as u128) << 8 | ty << 1 | 1,
        }
    }

    /// The same register seen as another type of the same register width.
    pub fn retype(self, ty: Ty) -> V {
        V { ty, k: self.k }
    }

    /// The bits of a constant, masked to its register's width.
    pub fn imm_bits(self) -> Option<u64> {
        let i = self.imm()? as u64;
        Some(match self.ty {
            Ty::Pred => (i != 0) as u64,
            t => i & mask(t.class_bits()),
        })
    }
}

/// The low `bits` bits set.
pub fn mask(bits: u32) -> u64 {
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

/// A basic block of a function.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Blk(pub usize);

impl fmt::Display for Blk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bb{}", self.0)
    }
}

/// Integer (and, for `And`/`Or`/`Xor`, predicate) operations of two operands of one type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum IntOp {
    Add,
    Sub,
    /// The low half of the product.
    Mul,
    UDiv,
    URem,
    SDiv,
    SRem,
    And,
    Or,
    Xor,
    /// Shifts take the amount as an `I32` (PTX's `.u32` shift operand).
    Shl,
    LShr,
    AShr,
    /// The high half of the double-width product.
    MulHiS,
    MulHiU,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Cmp {
    Eq,
    Ne,
    Slt,
    Sle,
    Sgt,
    Sge,
    Ult,
    Ule,
    Ugt,
    Uge,
}

/// Float comparisons: ordered ones are false on NaN; `Une` and `Uno` true.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FCmp {
    Oeq,
    Une,
    Olt,
    Ole,
    Ogt,
    Oge,
    Uno,
    Ord,
}

/// Float operations of two operands, rounded to nearest even (`Min`/`Max` ignore one NaN).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FOp {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
}

/// One-operand float operations.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FUn {
    Abs,
    /// Correctly rounded square root.
    Sqrt,
    /// The GPU's approximations (`ex2.approx`, …): `2^x`, `log2 x`, `1/√x`, `sin`, `cos`, and
    /// `1/x` (`rcp.approx.ftz`: at most 1 ulp off, subnormals flushed to zero). In f32, `2^x`
    /// is `ex2.approx.ftz`: a result below 2^-126 is 0 (one `MUFU.EX2`, where the subnormal
    /// range costs three more instructions per call).
    Ex2Approx,
    Lg2Approx,
    RsqrtApprox,
    RcpApprox,
    SinApprox,
    CosApprox,
    /// Rounding to an integral value in the same type.
    Floor,
    Ceil,
    Trunc,
}

/// The numeric type of one side of a conversion, as PTX spells it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum NumTy {
    S8,
    U8,
    S16,
    U16,
    S32,
    U32,
    S64,
    U64,
    F16,
    BF16,
    F32,
    F64,
    /// `tf32` (an f32 with a 10-bit mantissa), in a 32-bit register.
    TF32,
}

impl NumTy {
    pub fn name(self) -> &'static str {
        match self {
            NumTy::S8 => "s8",
            NumTy::U8 => "u8",
            NumTy::S16 => "s16",
            NumTy::U16 => "u16",
            NumTy::S32 => "s32",
            NumTy::U32 => "u32",
            NumTy::S64 => "s64",
            NumTy::U64 => "u64",
            NumTy::F16 => "f16",
            NumTy::BF16 => "bf16",
            NumTy::F32 => "f32",
            NumTy::F64 => "f64",
            NumTy::TF32 => "tf32",
        }
    }

    pub fn bits(self) -> u32 {
        match self {
            NumTy::S8 | NumTy::U8 => 8,
            NumTy::S16 | NumTy::U16 | NumTy::F16 | NumTy::BF16 => 16,
            NumTy::S32 | NumTy::U32 | NumTy::F32 | NumTy::TF32 => 32,
            NumTy::S64 | NumTy::U64 | NumTy::F64 => 64,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, NumTy::F16 | NumTy::BF16 | NumTy::F32 | NumTy::F64 | NumTy::TF32)
    }

    pub fn is_signed(self) -> bool {
        matches!(self, NumTy::S8 | NumTy::S16 | NumTy::S32 | NumTy::S64)
    }

    /// The integer type of `bits` bits and this signedness.
    pub fn int(bits: u32, signed: bool) -> NumTy {
        match (bits, signed) {
            (8, true) => NumTy::S8,
            (8, false) => NumTy::U8,
            (16, true) => NumTy::S16,
            (16, false) => NumTy::U16,
            (32, true) => NumTy::S32,
            (32, false) => NumTy::U32,
            (_, true) => NumTy::S64,
            (_, false) => NumTy::U64,
        }
    }

    /// The float type of a register type.
    pub fn float(t: Ty) -> NumTy {
        match t {
            Ty::F16 => NumTy::F16,
            Ty::BF16 => NumTy::BF16,
            Ty::F64 => NumTy::F64,
            _ => NumTy::F32,
        }
    }
}

/// The rounding of a conversion.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Rnd {
    /// Float results: to nearest even, toward zero, to nearest away from zero (`tf32`).
    Rn,
    Rz,
    Rna,
    /// Float → integer (and float → integral float): toward zero, down, up.
    Rzi,
    Rmi,
    Rpi,
}

impl Rnd {
    pub fn name(self) -> &'static str {
        match self {
            Rnd::Rn => "rn",
            Rnd::Rz => "rz",
            Rnd::Rna => "rna",
            Rnd::Rzi => "rzi",
            Rnd::Rmi => "rmi",
            Rnd::Rpi => "rpi",
        }
    }
}

/// A memory space.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Space {
    /// Device memory, 64-bit addresses.
    Global,
    /// The block's shared memory, 32-bit addresses (`tessera_smem`'s window).
    Shared,
    /// The thread's local buffer (`vprintf` arguments), 64-bit addresses.
    Local,
}

impl Space {
    pub fn name(self) -> &'static str {
        match self {
            Space::Global => "global",
            Space::Shared => "shared",
            Space::Local => "local",
        }
    }

    /// The register type of an address in this space.
    pub fn addr_ty(self) -> Ty {
        match self {
            Space::Shared => Ty::I32,
            Space::Global | Space::Local => Ty::I64,
        }
    }
}

/// The memory-model semantics of an access.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Sem {
    /// An ordinary (weak) access.
    Weak,
    /// `.relaxed.gpu`: a relaxed atomic access at device scope.
    RelaxedGpu,
}

/// The type of a memory access, as PTX spells it: `u8` (a byte, zero-extended into a 16-bit
/// register) or the untyped `bN` of the access width.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MemTy {
    U8,
    B8,
    B16,
    B32,
    B64,
}

impl MemTy {
    pub fn name(self) -> &'static str {
        match self {
            MemTy::U8 => "u8",
            MemTy::B8 => "b8",
            MemTy::B16 => "b16",
            MemTy::B32 => "b32",
            MemTy::B64 => "b64",
        }
    }

    pub fn bytes(self) -> u32 {
        match self {
            MemTy::U8 | MemTy::B8 => 1,
            MemTy::B16 => 2,
            MemTy::B32 => 4,
            MemTy::B64 => 8,
        }
    }

    /// The access type of a register type (`u8` for 8-bit values and predicates).
    pub fn of(t: Ty) -> MemTy {
        match t {
            Ty::Pred | Ty::I8 => MemTy::U8,
            t => match t.class_bits() {
                16 => MemTy::B16,
                32 => MemTy::B32,
                _ => MemTy::B64,
            },
        }
    }
}

/// An address: a register (or constant) plus a byte offset.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Addr {
    pub base: V,
    pub offset: i64,
}

/// The operation of a `red` (an atomic without a result).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RedOp {
    Add,
    Max,
    Min,
}

/// The type a `red` computes in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AtomTy {
    U32,
    U64,
    S32,
    S64,
    F32,
    F64,
}

impl AtomTy {
    pub fn name(self) -> &'static str {
        match self {
            AtomTy::U32 => "u32",
            AtomTy::U64 => "u64",
            AtomTy::S32 => "s32",
            AtomTy::S64 => "s64",
            AtomTy::F32 => "f32",
            AtomTy::F64 => "f64",
        }
    }
}

/// A special register.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SReg {
    /// `%tid.x`.
    Tid,
    /// `%ctaid.{x,y,z}`: the block's index along an axis.
    CtaId(u8),
    /// `%nctaid.{x,y,z}`: the grid's size along an axis.
    NCtaId(u8),
}

impl SReg {
    pub fn name(self) -> String {
        let axis = |a: u8| ["x", "y", "z"].get(a as usize).copied().unwrap_or("x");
        match self {
            SReg::Tid => "tid.x".into(),
            SReg::CtaId(a) => format!("ctaid.{}", axis(a)),
            SReg::NCtaId(a) => format!("nctaid.{}", axis(a)),
        }
    }
}

/// A symbol whose address an instruction takes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Sym {
    /// The kernel's dynamic shared memory (`tessera_smem`), a 32-bit shared-window address.
    Smem,
    /// A constant string of the module (`Module::strings`), a 64-bit global address.
    Str(usize),
    /// The thread's local buffer, a 64-bit local address.
    LocalDepot,
}

/// A function an instruction calls.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Callee {
    /// A device function of the module, by index in `Module::funcs`.
    Func(usize),
    /// CUDA's `vprintf(format, args)` (both generic addresses; its result is ignored).
    Vprintf,
    /// CUDA's `__assertfail(message, file, line, function, char size)`.
    AssertFail,
}

/// `shfl.sync` modes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ShflMode {
    Idx,
    Bfly,
    Down,
    Up,
}

impl ShflMode {
    pub fn name(self) -> &'static str {
        match self {
            ShflMode::Idx => "idx",
            ShflMode::Bfly => "bfly",
            ShflMode::Down => "down",
            ShflMode::Up => "up",
        }
    }
}

/// The shapes and types of `mma.sync` the code generator uses (row-major A, column-major B).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MmaKind {
    /// `m16n8k16`, bf16 operands, f32 accumulators.
    Bf16,
    /// `m16n8k16`, f16 operands, f32 accumulators.
    F16,
    /// `m16n8k8`, tf32 operands, f32 accumulators.
    Tf32,
    /// `m16n8k32`, s8 operands, s32 accumulators.
    S8,
}

impl MmaKind {
    /// The PTX shape and types after `mma.sync.aligned.`.
    pub fn ptx(self) -> &'static str {
        match self {
            MmaKind::Bf16 => "m16n8k16.row.col.f32.bf16.bf16.f32",
            MmaKind::F16 => "m16n8k16.row.col.f32.f16.f16.f32",
            MmaKind::Tf32 => "m16n8k8.row.col.f32.tf32.tf32.f32",
            MmaKind::S8 => "m16n8k32.row.col.s32.s8.s8.s32",
        }
    }

    /// The accumulator type.
    pub fn acc(self) -> Ty {
        if self == MmaKind::S8 { Ty::I32 } else { Ty::F32 }
    }
}

/// An instruction. Destinations are registers; operands registers or constants.
#[derive(Clone, Debug, PartialEq)]
pub enum Inst {
    /// `dst = a op b`.
    Int {
        op: IntOp,
        dst: V,
        a: V,
        b: V,
    },
    /// `dst = sext/zext(a) * sext/zext(b)`: the full product of two `I32`s as an `I64`.
    MulWide {
        signed: bool,
        dst: V,
        a: V,
        b: V,
    },
    /// Bitwise (predicate) not.
    Not {
        dst: V,
        a: V,
    },
    /// Integer or float negation.
    Neg {
        dst: V,
        a: V,
    },
    /// The leading zero bits of an `I32` (32 for 0).
    Clz {
        dst: V,
        a: V,
    },
    ICmp {
        cmp: Cmp,
        dst: V,
        a: V,
        b: V,
    },
    FCmp {
        cmp: FCmp,
        dst: V,
        a: V,
        b: V,
    },
    /// `dst = c ? a : b`.
    Select {
        dst: V,
        c: V,
        a: V,
        b: V,
    },
    Float {
        op: FOp,
        dst: V,
        a: V,
        b: V,
    },
    /// `a * b + c`, rounded once.
    Fma {
        dst: V,
        a: V,
        b: V,
        c: V,
    },
    FUnary {
        op: FUn,
        dst: V,
        a: V,
    },
    /// `|mag|` with the sign of `sign`.
    Copysign {
        dst: V,
        sign: V,
        mag: V,
    },
    /// A numeric conversion `to ← from` (see `NumTy`), rounded by `rnd` where it rounds.
    Cvt {
        dst: V,
        src: V,
        to: NumTy,
        from: NumTy,
        rnd: Option<Rnd>,
    },
    /// `dst = src` (also: a constant into a register).
    Mov {
        dst: V,
        src: V,
    },
    /// Registers joined into one wider one, lowest first.
    Pack {
        dst: V,
        parts: Vec<V>,
    },
    /// A register split into narrower ones, lowest first.
    Unpack {
        dsts: Vec<V>,
        src: V,
    },
    /// `dsts = *addr` as a vector of `dsts.len()` elements of `ty`; with `pred`, only where it
    /// holds (the destinations keep their values otherwise).
    Load {
        space: Space,
        sem: Sem,
        ty: MemTy,
        dsts: Vec<V>,
        addr: Addr,
        pred: Option<V>,
    },
    /// `*addr = vals`; with `pred`, only where it holds.
    Store {
        space: Space,
        sem: Sem,
        ty: MemTy,
        vals: Vec<V>,
        addr: Addr,
        pred: Option<V>,
    },
    /// `*addr = op(*addr, val)` atomically (relaxed, device scope), in global memory.
    Red {
        op: RedOp,
        ty: AtomTy,
        addr: Addr,
        val: V,
    },
    /// Compare-and-swap of `bN` in global memory (relaxed, device scope): `dst = *addr; if dst ==
    /// cmp { *addr = new }`.
    AtomCas {
        dst: V,
        addr: Addr,
        cmp: V,
        new: V,
    },
    /// `dst` = `val` of lane `lane` (by `mode`), among all 32 lanes; `clamp` is PTX's `c`.
    Shfl {
        mode: ShflMode,
        dst: V,
        val: V,
        lane: V,
        clamp: u32,
    },
    /// `bar.sync 0`: every thread of the block waits; orders memory among them.
    Barrier,
    SReg {
        dst: V,
        reg: SReg,
    },
    /// The address of a symbol.
    SymAddr {
        dst: V,
        sym: Sym,
    },
    /// A `space` address as a generic one.
    Cvta {
        dst: V,
        src: V,
        space: Space,
    },
    /// The function's parameter `index`.
    Param {
        dst: V,
        index: usize,
    },
    Call {
        callee: Callee,
        args: Vec<V>,
    },
    /// `ldmatrix.sync.aligned.m8n8.x{n}[.trans].shared.b16`: `n` (1, 2 or 4) 8×8 matrices of
    /// 16-bit elements from shared memory at `addr` (each lane gives a row address), one `I32`
    /// register each.
    LdMatrix {
        dsts: Vec<V>,
        addr: V,
        trans: bool,
    },
    /// `mma.sync.aligned`: `acc += a · b` of one warp, the four accumulator registers updated in
    /// place (`a`: four `I32`, `b`: two `I32` fragment registers).
    Mma {
        kind: MmaKind,
        acc: Vec<V>,
        a: Vec<V>,
        b: Vec<V>,
    },
    /// `cp.async.cg.shared.global` of 16 bytes from `src` (global) to `dst` (shared); with
    /// `src_bytes`, only that many are read and the rest are zero-filled.
    CpAsync {
        dst: V,
        src: V,
        src_bytes: Option<V>,
    },
    /// `cp.async.commit_group`.
    CpAsyncCommit,
    /// `cp.async.wait_group n`: waits until at most `n` committed groups are in flight.
    CpAsyncWait(u32),
    /// Inline PTX: `$i` in `template` names operand `i` of `constraints` (LLVM's syntax:
    /// outputs `=r`, `=&r`, `=l`, `=h`, `=f`, `=d` first, then inputs `r`, `l`, `h`, `f`, `d`,
    /// `b` (a predicate) or the number of the output it is tied to, then clobbers `~{memory}`).
    /// The inputs are `inputs` in order (a tied input is in the register of its output).
    Asm {
        template: String,
        constraints: String,
        outputs: Vec<V>,
        inputs: Vec<V>,
    },
}

/// How a block ends.
#[derive(Clone, Debug, PartialEq)]
pub enum Term {
    Br(Blk),
    /// `if c { t } else { e }`.
    CondBr(V, Blk, Blk),
    Ret,
    /// Stops the thread with an error (after `__assertfail`).
    Trap,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct BlockData {
    /// A name for the printed label.
    pub name: String,
    pub insts: Vec<Inst>,
    /// Phi copies `(phi, value)` done, as one parallel copy, at the end of this block.
    pub copies: Vec<(V, V)>,
    /// `None`: not terminated (an unreachable block after a `return`, or the end of a function,
    /// which returns).
    pub term: Option<Term>,
}

/// A function parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// Its type (a `Pred` is passed as a byte).
    pub ty: Ty,
    /// For a global pointer (a tensor's address, an `I64`): the alignment of what it points to,
    /// its element size. Declared with the parameter (`.ptr.global.align N`), so a loader can
    /// check the pointee type against the metadata.
    pub global_align: Option<u32>,
    /// An opaque kernel parameter passed by value, `(bytes, alignment)` (a tensor map): no
    /// register holds it; `Inst::Param` of it gives its generic address (an `I64`).
    pub by_value: Option<(u32, u32)>,
}

/// A function: the kernel entry or a device function.
#[derive(Clone, Debug, PartialEq)]
pub struct Function {
    pub name: String,
    pub params: Vec<Param>,
    /// The type each register was created with.
    pub regs: Vec<Ty>,
    /// Block 0 is the entry.
    pub blocks: Vec<BlockData>,
    /// Bytes and alignment of the per-thread local buffer.
    pub local_bytes: u32,
    pub local_align: u32,
}

impl Function {
    pub fn new(name: impl Into<String>) -> Function {
        Function {
            name: name.into(),
            params: vec![],
            regs: vec![],
            blocks: vec![BlockData { name: "entry".into(), ..Default::default() }],
            local_bytes: 0,
            local_align: 1,
        }
    }

    /// The blocks a block branches to.
    pub fn successors(&self, b: Blk) -> Vec<Blk> {
        match self.blocks.get(b.0).and_then(|d| d.term.as_ref()) {
            Some(Term::Br(t)) => vec![*t],
            Some(Term::CondBr(_, t, e)) => vec![*t, *e],
            _ => vec![],
        }
    }
}

/// The machine IR of one kernel: its entry, the device functions it calls, and its constant
/// strings.
#[derive(Clone, Debug, PartialEq)]
pub struct Module {
    pub target: Target,
    pub kernel: Function,
    /// Threads per block (`.maxntid`).
    pub threads: u32,
    /// Blocks that must fit on a multiprocessor together (`.minnctapersm`): ptxas caps the
    /// registers to let them.
    pub blocks_per_sm: Option<u32>,
    pub funcs: Vec<Function>,
    /// NUL-terminated in memory.
    pub strings: Vec<String>,
}

impl Inst {
    /// The registers (and constants) the instruction reads, in operand order. A predicated
    /// load also reads its destinations (kept where the predicate is false).
    pub fn uses(&self) -> Vec<V> {
        match self {
            Inst::Int { a, b, .. }
            | Inst::MulWide { a, b, .. }
            | Inst::ICmp { a, b, .. }
            | Inst::FCmp { a, b, .. }
            | Inst::Float { a, b, .. } => vec![*a, *b],
            Inst::Not { a, .. } | Inst::Neg { a, .. } | Inst::Clz { a, .. } | Inst::FUnary { a, .. } => vec![*a],
            Inst::Select { c, a, b, .. } => vec![*c, *a, *b],
            Inst::Fma { a, b, c, .. } => vec![*a, *b, *c],
            Inst::Copysign { sign, mag, .. } => vec![*sign, *mag],
            Inst::Cvt { src, .. } | Inst::Mov { src, .. } | Inst::Unpack { src, .. } | Inst::Cvta { src, .. } => vec![*src],
            Inst::Pack { parts, .. } => parts.clone(),
            Inst::Load { dsts, addr, pred, .. } => {
                let mut v = vec![addr.base];
                if let Some(p) = pred {
                    v.push(*p);
                    v.extend(dsts.iter().copied());
                }
                v
            }
            Inst::Store { vals, addr, pred, .. } => {
                let mut v = vec![addr.base];
                v.extend(vals.iter().copied());
                v.extend(pred.iter().copied());
                v
            }
            Inst::Red { addr, val, .. } => vec![addr.base, *val],
            Inst::AtomCas { addr, cmp, new, .. } => vec![addr.base, *cmp, *new],
            Inst::Shfl { val, lane, .. } => vec![*val, *lane],
            Inst::Call { args, .. } => args.clone(),
            Inst::Asm { inputs, .. } => inputs.clone(),
            Inst::LdMatrix { addr, .. } => vec![*addr],
            Inst::Mma { acc, a, b, .. } => a.iter().chain(b).chain(acc).copied().collect(),
            Inst::CpAsync { dst, src, src_bytes } => {
                let mut v = vec![*dst, *src];
                v.extend(src_bytes.iter().copied());
                v
            }
            Inst::CpAsyncCommit | Inst::CpAsyncWait(_) => vec![],
            Inst::Barrier | Inst::SReg { .. } | Inst::SymAddr { .. } | Inst::Param { .. } => vec![],
        }
    }

    /// The registers the instruction writes.
    pub fn defs(&self) -> Vec<V> {
        match self {
            Inst::Int { dst, .. }
            | Inst::MulWide { dst, .. }
            | Inst::Not { dst, .. }
            | Inst::Neg { dst, .. }
            | Inst::Clz { dst, .. }
            | Inst::ICmp { dst, .. }
            | Inst::FCmp { dst, .. }
            | Inst::Select { dst, .. }
            | Inst::Float { dst, .. }
            | Inst::Fma { dst, .. }
            | Inst::FUnary { dst, .. }
            | Inst::Copysign { dst, .. }
            | Inst::Cvt { dst, .. }
            | Inst::Mov { dst, .. }
            | Inst::Pack { dst, .. }
            | Inst::AtomCas { dst, .. }
            | Inst::Shfl { dst, .. }
            | Inst::SReg { dst, .. }
            | Inst::SymAddr { dst, .. }
            | Inst::Cvta { dst, .. }
            | Inst::Param { dst, .. } => vec![*dst],
            Inst::Unpack { dsts, .. } | Inst::Load { dsts, .. } | Inst::LdMatrix { dsts, .. } => dsts.clone(),
            Inst::Mma { acc, .. } => acc.clone(),
            Inst::Asm { outputs, .. } => outputs.clone(),
            Inst::Store { .. }
            | Inst::Red { .. }
            | Inst::Barrier
            | Inst::Call { .. }
            | Inst::CpAsync { .. }
            | Inst::CpAsyncCommit
            | Inst::CpAsyncWait(_) => vec![],
        }
    }

    /// Whether the instruction only computes its destinations from its operands (no memory, no
    /// effects, the same in every thread given the same operands): what value numbering and
    /// hoisting may move or merge.
    pub fn is_pure(&self) -> bool {
        !matches!(
            self,
            Inst::Load { .. }
                | Inst::Store { .. }
                | Inst::Red { .. }
                | Inst::AtomCas { .. }
                | Inst::Shfl { .. }
                | Inst::Barrier
                | Inst::SReg { .. }
                | Inst::Param { .. }
                | Inst::Call { .. }
                | Inst::Asm { .. }
                | Inst::LdMatrix { .. }
                | Inst::Mma { .. }
                | Inst::CpAsync { .. }
                | Inst::CpAsyncCommit
                | Inst::CpAsyncWait(_)
        )
    }
}
