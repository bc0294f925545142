//! A PTX function under construction: typed virtual registers in basic blocks, printed as PTX
//! text at the end.
//!
//! The builder does the little optimisation the generated code needs and ptxas does not do:
//! integer and float constants are folded, and a pure instruction whose operands are all defined
//! outside the innermost loops goes to the preheader of the outermost loop it varies in (loop-
//! invariant code motion at construction: ptxas does not hoist address arithmetic out of loops).
//! Phis are registers written by copies at the ends of their predecessors (PTX registers are
//! variables), as parallel copies.

use crate::Target;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write;

/// The type of a register or constant. 8- and 16-bit values live in 16-bit registers (PTX has no
/// 8-bit registers); an `I8` register's upper byte is unspecified and normalised where it
/// matters (comparisons, division, right shifts, conversions).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Ty {
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
    pub(crate) fn bits(self) -> u32 {
        match self {
            Ty::Pred => 1,
            Ty::I8 => 8,
            Ty::I16 | Ty::F16 | Ty::BF16 => 16,
            Ty::I32 | Ty::F32 => 32,
            Ty::I64 | Ty::F64 => 64,
        }
    }

    pub(crate) fn is_float(self) -> bool {
        matches!(self, Ty::F16 | Ty::BF16 | Ty::F32 | Ty::F64)
    }

    /// The integer type of the same width (bit casts).
    pub(crate) fn int_of_bits(bits: u32) -> Ty {
        match bits {
            1 => Ty::Pred,
            8 => Ty::I8,
            16 => Ty::I16,
            32 => Ty::I32,
            _ => Ty::I64,
        }
    }

    /// Register class: the width of the register that holds it.
    fn class(self) -> usize {
        match self {
            Ty::Pred => 0,
            Ty::I8 | Ty::I16 | Ty::F16 | Ty::BF16 => 1,
            Ty::I32 | Ty::F32 => 2,
            Ty::I64 | Ty::F64 => 3,
        }
    }

    /// The width of the register, in bits (8-bit values are in 16-bit registers).
    pub(crate) fn class_bits(self) -> u32 {
        [1, 16, 32, 64][self.class()]
    }

    /// The untyped PTX type of the register (`b16`, `b32`, …).
    pub(crate) fn b(self) -> &'static str {
        ["pred", "b16", "b32", "b64"][self.class()]
    }

    /// The signed integer PTX type of the register's width.
    fn s(self) -> &'static str {
        ["pred", "s16", "s32", "s64"][self.class()]
    }

    fn u(self) -> &'static str {
        ["pred", "u16", "u32", "u64"][self.class()]
    }

    /// The float PTX type.
    fn f(self) -> &'static str {
        match self {
            Ty::F16 => "f16",
            Ty::BF16 => "bf16",
            Ty::F64 => "f64",
            _ => "f32",
        }
    }

    /// The PTX type of this value in memory (`u8` for bytes).
    pub(crate) fn mem(self) -> &'static str {
        match self {
            Ty::Pred | Ty::I8 => "u8",
            _ => self.b(),
        }
    }
}

const PREFIX: [&str; 4] = ["%p", "%h", "%r", "%rd"];

/// A value: a register or a constant (integers sign-extended from their width, floats as their
/// bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct V {
    pub(crate) ty: Ty,
    pub(crate) k: K,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum K {
    Reg(u32),
    Imm(i64),
}

impl V {
    /// An integer constant of `ty`, wrapped to its width.
    pub(crate) fn int(ty: Ty, v: i64) -> V {
        let v = match ty.bits() {
            1 => (v != 0) as i64,
            8 => v as i8 as i64,
            16 => v as i16 as i64,
            32 => v as i32 as i64,
            _ => v,
        };
        V { ty, k: K::Imm(v) }
    }

    pub(crate) fn float(ty: Ty, v: f64) -> V {
        let bits = match ty {
            Ty::F64 => v.to_bits() as i64,
            Ty::F32 => (v as f32).to_bits() as i64,
            Ty::F16 => f32_to_f16_bits(f64_to_f32_odd(v)) as i64,
            _ => f32_to_bf16_bits(f64_to_f32_odd(v)) as i64,
        };
        V { ty, k: K::Imm(bits) }
    }

    /// The constant (sign-extended integer, or float bits), if this is one.
    pub(crate) fn imm(self) -> Option<i64> {
        match self.k {
            K::Imm(v) => Some(v),
            K::Reg(_) => None,
        }
    }

    /// The value of a float constant.
    pub(crate) fn float_imm(self) -> Option<f64> {
        let b = self.imm()?;
        Some(match self.ty {
            Ty::F64 => f64::from_bits(b as u64),
            Ty::F32 => f32::from_bits(b as u32) as f64,
            Ty::F16 => f16_bits_to_f32(b as u16) as f64,
            Ty::BF16 => f32::from_bits((b as u32 & 0xffff) << 16) as f64,
            _ => return None,
        })
    }

    /// A unique number of a register or constant with its type, for value-numbering keys: the
    /// same register seen as another type (an i16 and its i8 truncation) is another value.
    pub(crate) fn id(self) -> u128 {
        let ty = self.ty as u128;
        match self.k {
            K::Reg(r) => (r as u128) << 8 | ty << 1,
            K::Imm(v) => (v as u64 as u128) << 8 | ty << 1 | 1,
        }
    }

    /// The same register seen as another type of the same register width.
    pub(crate) fn retype(self, ty: Ty) -> V {
        V { ty, k: self.k }
    }
}

/// `x` at f32 precision rounded to odd (truncated, the last bit set if inexact): rounding that to
/// a 16-bit float is the correct rounding of `x` (24 ≥ 11 + 2 bits), where `x as f32` first would
/// round twice. The interpreter rounds constants the same way.
fn f64_to_f32_odd(x: f64) -> f32 {
    let f = x as f32;
    if x.is_nan() || f as f64 == x {
        return f;
    }
    if f.is_infinite() {
        // Beyond f32's range: the largest finite f32 (odd), which still rounds to infinity.
        return f32::MAX.copysign(f);
    }
    let mut bits = f.to_bits();
    if (f as f64).abs() > x.abs() {
        bits -= 1;
    }
    f32::from_bits(bits | 1)
}

fn f32_to_bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return 0x7fc0;
    }
    // Round to nearest even.
    let r = b.wrapping_add(0x7fff + ((b >> 16) & 1));
    (r >> 16) as u16
}

fn f32_to_f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    if x.is_nan() {
        return sign | 0x7e00;
    }
    let a = x.abs();
    if a >= 65520.0 {
        return sign | 0x7c00;
    }
    if a < 6.103_515_6e-5 {
        // Subnormal (or zero): units of 2^-24, rounded to nearest even.
        let q = a * 16_777_216.0;
        let r = q.round_ties_even();
        return sign | r as u16;
    }
    let e = ((b >> 23) & 0xff) as i32 - 127 + 15;
    let m = b & 0x7f_ffff;
    let mut h = ((e as u32) << 10) | (m >> 13);
    let rest = m & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
        h += 1;
    }
    sign | h as u16
}

fn f16_bits_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let e = ((h >> 10) & 0x1f) as i32;
    let m = (h & 0x3ff) as f32;
    match e {
        0 => sign * m * 2f32.powi(-24),
        31 if m == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        _ => sign * (1.0 + m / 1024.0) * 2f32.powi(e - 15),
    }
}

/// A basic block of the function being built.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Blk(pub(crate) usize);

#[derive(Default)]
struct BlockData {
    label: String,
    body: String,
    /// Phi copies `(phi, value)` done at the end of this block.
    copies: Vec<(V, V)>,
    term: Option<String>,
}

/// A function's blocks and registers.
pub(crate) struct Func {
    blocks: Vec<BlockData>,
    cur: usize,
    /// The preheader of each enclosing loop, outermost first.
    loops: Vec<usize>,
    /// Per register: the loop depth its value varies at.
    depth: Vec<u32>,
    /// Per register: the same in every thread of the block (built from parameters, block
    /// indices and constants only).
    uniform: Vec<bool>,
    /// Constants materialised in registers (the entry block), by value.
    consts: HashMap<(Ty, i64), V>,
    /// Bytes of the per-thread local buffer (`vprintf` arguments).
    local_bytes: u32,
    local_align: u32,
}

/// The PTX module of one kernel.
pub(crate) struct Builder {
    f: RefCell<Func>,
    /// Global constant strings, `.global` declarations.
    globals: RefCell<Vec<String>>,
    /// `.extern .func` declarations used.
    externs: RefCell<Vec<&'static str>>,
    /// Finished device functions.
    funcs: RefCell<Vec<String>>,
    pub(crate) target: Target,
}

impl Func {
    fn new() -> Func {
        let entry = BlockData { label: "$L__entry".into(), ..Default::default() };
        Func {
            blocks: vec![entry],
            cur: 0,
            loops: vec![],
            depth: vec![],
            uniform: vec![],
            consts: HashMap::new(),
            local_bytes: 0,
            local_align: 1,
        }
    }
}

impl Builder {
    pub(crate) fn new(target: Target) -> Builder {
        Builder {
            f: RefCell::new(Func::new()),
            globals: RefCell::default(),
            externs: RefCell::default(),
            funcs: RefCell::default(),
            target,
        }
    }

    /// Starts building a device function; returns the function being built until now (for
    /// `end_func`).
    pub(crate) fn begin_func(&self) -> Func {
        std::mem::replace(&mut *self.f.borrow_mut(), Func::new())
    }

    /// Ends the device function `name` with parameters `params` (read with `param`), and
    /// resumes `saved`.
    pub(crate) fn end_func(&self, saved: Func, name: &str, params: &[Ty]) {
        let f = std::mem::replace(&mut *self.f.borrow_mut(), saved);
        let mut out = format!(".func {name}(");
        let decls: Vec<String> =
            params.iter().enumerate().map(|(i, t)| format!("\n\t.param .{} {name}_param_{i}", param_type(*t))).collect();
        out.push_str(&decls.join(","));
        out.push_str("\n)\n{\n");
        print_body(&f, &mut out);
        self.funcs.borrow_mut().push(out);
    }

    /// A call of device function `name` with `args` (by value).
    pub(crate) fn call(&self, name: &str, args: &[V]) {
        let mut text = String::from("{\n");
        let mut names = vec![];
        for (i, a) in args.iter().enumerate() {
            let a = self.materialize(*a);
            writeln!(text, ".param .{} param{i};\nst.param.{} [param{i}], {};", a.ty.b(), a.ty.b(), self.o(a)).ok();
            names.push(format!("param{i}"));
        }
        writeln!(text, "call.uni {name}, ({});\n}}", names.join(", ")).ok();
        for line in text.lines() {
            self.emit(line);
        }
    }

    pub(crate) fn entry(&self) -> Blk {
        Blk(0)
    }

    // ---- blocks and control flow -------------------------------------------------------------

    pub(crate) fn block(&self, name: &str) -> Blk {
        let mut f = self.f.borrow_mut();
        let n = f.blocks.len();
        let label = format!("$L__{}_{n}", name.replace('.', "_"));
        f.blocks.push(BlockData { label, ..Default::default() });
        Blk(n)
    }

    pub(crate) fn current(&self) -> Blk {
        Blk(self.f.borrow().cur)
    }

    pub(crate) fn position(&self, b: Blk) {
        self.f.borrow_mut().cur = b.0;
    }

    fn terminate(&self, text: String) {
        let mut f = self.f.borrow_mut();
        let cur = f.cur;
        // Code after a terminator (after `return`) is unreachable: its block is already closed.
        if f.blocks[cur].term.is_none() {
            f.blocks[cur].term = Some(text);
        }
    }

    pub(crate) fn br(&self, to: Blk) {
        let label = self.f.borrow().blocks[to.0].label.clone();
        self.terminate(format!("bra.uni {label};"));
    }

    pub(crate) fn cond_br(&self, c: V, t: Blk, e: Blk) {
        match c.imm() {
            Some(0) => return self.br(e),
            Some(_) => return self.br(t),
            None => {}
        }
        let (lt, le) = {
            let f = self.f.borrow();
            (f.blocks[t.0].label.clone(), f.blocks[e.0].label.clone())
        };
        let p = self.o(c);
        self.terminate(format!("@{p} bra {lt};\nbra.uni {le};"));
    }

    pub(crate) fn ret(&self) {
        self.terminate("ret;".into());
    }

    /// `trap;` and nothing after it.
    pub(crate) fn trap(&self) {
        self.terminate("trap;".into());
    }

    /// A register set by copies at the ends of predecessors (`incoming`).
    pub(crate) fn phi(&self, ty: Ty) -> V {
        self.fresh(ty)
    }

    pub(crate) fn incoming(&self, phi: V, v: V, from: Blk) {
        if phi == v {
            return;
        }
        self.f.borrow_mut().blocks[from.0].copies.push((phi, v));
    }

    /// Enters a loop whose preheader is the current block.
    pub(crate) fn enter_loop(&self) {
        let mut f = self.f.borrow_mut();
        let cur = f.cur;
        f.loops.push(cur);
    }

    pub(crate) fn exit_loop(&self) {
        self.f.borrow_mut().loops.pop();
    }

    /// The loop depth of the code being built.
    pub(crate) fn loop_level(&self) -> u32 {
        self.f.borrow().loops.len() as u32
    }

    /// The loop depth a register varies at.
    pub(crate) fn depth_of(&self, v: V) -> Option<u32> {
        match v.k {
            K::Reg(r) => self.f.borrow().depth.get(r as usize).copied(),
            K::Imm(_) => None,
        }
    }

    /// Whether `v` is the same in every thread (constants are).
    pub(crate) fn is_uniform(&self, v: V) -> bool {
        match v.k {
            K::Reg(r) => self.f.borrow().uniform.get(r as usize).copied().unwrap_or(false),
            K::Imm(_) => true,
        }
    }

    /// Marks a register as the same in every thread (a parameter, a block index).
    pub(crate) fn set_uniform(&self, v: V) {
        if let K::Reg(r) = v.k {
            self.f.borrow_mut().uniform[r as usize] = true;
        }
    }

    /// Runs `build` with code going to the end of the entry block, outside every loop.
    pub(crate) fn at_entry<T>(&self, build: impl FnOnce() -> T) -> T {
        let (cur, loops) = {
            let mut f = self.f.borrow_mut();
            let saved = (f.cur, std::mem::take(&mut f.loops));
            f.cur = 0;
            saved
        };
        let r = build();
        let mut f = self.f.borrow_mut();
        f.cur = cur;
        f.loops = loops;
        r
    }

    // ---- registers and operands --------------------------------------------------------------

    fn new_reg(f: &mut Func, ty: Ty, depth: u32) -> V {
        let n = f.depth.len() as u32;
        f.depth.push(depth);
        f.uniform.push(false);
        V { ty, k: K::Reg(n) }
    }

    /// A register defined here (varying in the current loop).
    pub(crate) fn fresh(&self, ty: Ty) -> V {
        let mut f = self.f.borrow_mut();
        let d = f.loops.len() as u32;
        Self::new_reg(&mut f, ty, d)
    }

    /// The register's name (a constant prints as its integer value: only `o` formats
    /// constants, and only registers are named).
    fn name(v: V) -> String {
        match v.k {
            K::Reg(r) => format!("{}{r}", PREFIX[v.ty.class()]),
            K::Imm(i) => i.to_string(),
        }
    }

    /// An operand: a register name, or a constant where PTX takes one (16-bit floats and
    /// predicates are put in registers).
    pub(crate) fn o(&self, v: V) -> String {
        match (v.k, v.ty) {
            (K::Reg(_), _) => Self::name(v),
            (K::Imm(_), Ty::Pred | Ty::F16 | Ty::BF16) => Self::name(self.materialize(v)),
            (K::Imm(i), Ty::F32) => format!("0f{:08X}", i as u32),
            (K::Imm(i), Ty::F64) => format!("0d{:016X}", i as u64),
            (K::Imm(i), _) => i.to_string(),
        }
    }

    /// `v` in a register (constants are materialised once, in the entry block).
    pub(crate) fn materialize(&self, v: V) -> V {
        let Some(i) = v.imm() else { return v };
        if let Some(&r) = self.f.borrow().consts.get(&(v.ty, i)) {
            return r;
        }
        let r = {
            let mut f = self.f.borrow_mut();
            Self::new_reg(&mut f, v.ty, 0)
        };
        let src = match v.ty {
            Ty::Pred => (i != 0) as i64 as u32 as i64,
            Ty::F16 | Ty::BF16 | Ty::I8 | Ty::I16 => i & 0xffff,
            Ty::I32 | Ty::F32 => i & 0xffff_ffff,
            _ => i,
        };
        let text = if v.ty == Ty::Pred {
            format!("setp.ne.u32 {}, {src}, 0;", Self::name(r))
        } else {
            format!("mov.{} {}, {src};", v.ty.b(), Self::name(r))
        };
        let mut f = self.f.borrow_mut();
        writeln!(f.blocks[0].body, "{text}").ok();
        f.consts.insert((v.ty, i), r);
        if let K::Reg(n) = r.k {
            f.uniform[n as usize] = true;
        }
        r
    }

    /// The block a pure instruction over `srcs` goes to, and the loop depth of its result.
    pub(crate) fn placement(&self, srcs: &[V]) -> (Blk, u32) {
        let f = self.f.borrow();
        let here = f.loops.len() as u32;
        let d = srcs
            .iter()
            .map(|v| match v.k {
                K::Reg(r) => f.depth[r as usize],
                K::Imm(_) => 0,
            })
            .max()
            .unwrap_or(0)
            .min(here);
        if d < here { (Blk(f.loops[d as usize]), d) } else { (Blk(f.cur), d) }
    }

    /// Appends a line to block `b`.
    fn put(&self, b: Blk, line: &str) {
        let mut f = self.f.borrow_mut();
        let body = &mut f.blocks[b.0].body;
        body.push_str(line);
        body.push('\n');
    }

    /// Raw PTX in the current block.
    pub(crate) fn emit(&self, line: &str) {
        let cur = self.f.borrow().cur;
        self.put(Blk(cur), line);
    }

    /// A pure instruction `op dst, srcs…;` with its result of type `ty`, placed by `placement`.
    pub(crate) fn pure(&self, op: &str, ty: Ty, srcs: &[V]) -> V {
        let (b, d) = self.placement(srcs);
        let ops: Vec<String> = srcs.iter().map(|&s| self.o(s)).collect();
        let uniform = srcs.iter().all(|&v| self.is_uniform(v));
        let dst = {
            let mut f = self.f.borrow_mut();
            Self::new_reg(&mut f, ty, d)
        };
        if uniform {
            self.set_uniform(dst);
        }
        let mut line = format!("{op} {}", Self::name(dst));
        for o in ops {
            line.push_str(", ");
            line.push_str(&o);
        }
        line.push(';');
        self.put(b, &line);
        dst
    }

    /// An instruction with effects (or reading memory) in the current block: `text` with `{d}`
    /// replaced by the new register of type `ty`.
    pub(crate) fn effect(&self, text: &str, ty: Ty) -> V {
        let d = self.fresh(ty);
        self.emit(&text.replace("{d}", &Self::name(d)));
        d
    }

    // ---- memory -------------------------------------------------------------------------------

    /// `[reg+offset]` of an address built as `x + k`.
    pub(crate) fn addr(&self, base: V, off: i64) -> String {
        match base.imm() {
            Some(b) => format!("[{}]", b + off),
            None if off == 0 => format!("[{}]", Self::name(base)),
            None => format!("[{}+{off}]", Self::name(base)),
        }
    }

    /// Reserves `bytes` of this thread's local buffer; its byte offset.
    pub(crate) fn local(&self, bytes: u32, align: u32) -> u32 {
        let mut f = self.f.borrow_mut();
        let at = f.local_bytes.div_ceil(align) * align;
        f.local_bytes = at + bytes;
        f.local_align = f.local_align.max(align);
        at
    }

    /// A private constant string in global memory; its symbol.
    pub(crate) fn global_string(&self, s: &str) -> String {
        let mut g = self.globals.borrow_mut();
        let name = format!("tessera_str{}", g.len());
        let bytes: Vec<String> = s.bytes().chain([0]).map(|b| b.to_string()).collect();
        g.push(format!(".global .align 1 .b8 {name}[{}] = {{{}}};", s.len() + 1, bytes.join(", ")));
        name
    }

    pub(crate) fn declare_extern(&self, decl: &'static str) {
        let mut e = self.externs.borrow_mut();
        if !e.contains(&decl) {
            e.push(decl);
        }
    }

    // ---- printing -----------------------------------------------------------------------------

    /// The PTX module: header, declarations and the kernel `.entry`.
    pub(crate) fn finish(&self, name: &str, params: &[Ty], threads: u32) -> String {
        let f = self.f.borrow();
        let (version, sm) = match self.target {
            Target::Sm80 => ("7.0", "sm_80"),
            Target::Sm90a => ("8.0", "sm_90a"),
        };
        let mut out = String::with_capacity(f.blocks.iter().map(|b| b.body.len() + 64).sum::<usize>() + 4096);
        writeln!(out, "//\n// Generated by Tessera\n//\n\n.version {version}\n.target {sm}\n.address_size 64\n").ok();
        for e in self.externs.borrow().iter() {
            writeln!(out, "{e}").ok();
        }
        for g in self.globals.borrow().iter() {
            writeln!(out, "{g}").ok();
        }
        writeln!(out, ".extern .shared .align 1024 .b8 tessera_smem[];\n").ok();
        for func in self.funcs.borrow().iter() {
            out.push_str(func);
            out.push('\n');
        }
        writeln!(out, ".visible .entry {name}(").ok();
        for (i, t) in params.iter().enumerate() {
            let sep = if i + 1 < params.len() { "," } else { "" };
            writeln!(out, "\t.param .{} {name}_param_{i}{sep}", param_type(*t)).ok();
        }
        writeln!(out, ")\n.maxntid {threads}, 1, 1\n{{").ok();
        print_body(&f, &mut out);
        out
    }
}

/// The PTX type of a parameter holding `t`.
pub(crate) fn param_type(t: Ty) -> &'static str {
    match t {
        Ty::Pred | Ty::I8 => "u8",
        Ty::I16 | Ty::F16 | Ty::BF16 => "b16",
        Ty::I32 => "u32",
        Ty::F32 => "f32",
        Ty::I64 => "u64",
        Ty::F64 => "f64",
    }
}

/// A function's register declarations and blocks, and its closing brace.
fn print_body(f: &Func, out: &mut String) {
    // One declaration per class, sized by the register count (unused names cost nothing), with
    // room for the temporaries of phi copies.
    let temps = f.blocks.iter().map(|b| b.copies.len()).max().unwrap_or(0);
    let n = f.depth.len() + temps + 2;
    for (c, p) in PREFIX.iter().enumerate() {
        writeln!(out, "\t.reg .{} \t{p}<{n}>;", ["pred", "b16", "b32", "b64"][c]).ok();
    }
    if f.local_bytes > 0 {
        writeln!(out, "\t.local .align {} .b8 \t__local_depot[{}];", f.local_align, f.local_bytes).ok();
    }
    for b in f.blocks.iter() {
        if b.term.is_none() && b.body.is_empty() && b.copies.is_empty() {
            // A block nothing reaches (after a `return`): no label, no code.
            continue;
        }
        writeln!(out, "{}:", b.label).ok();
        for line in b.body.lines() {
            writeln!(out, "\t{line}").ok();
        }
        for line in parallel_copies(&b.copies, &f.depth) {
            writeln!(out, "\t{line}").ok();
        }
        for line in b.term.as_deref().unwrap_or("ret;").lines() {
            writeln!(out, "\t{line}").ok();
        }
    }
    out.push_str("}\n");
}

/// The copies of a block's phis as sequential moves: a copy whose source another copy
/// overwrites first reads it through a temporary.
fn parallel_copies(copies: &[(V, V)], depth: &[u32]) -> Vec<String> {
    let mut out = vec![];
    let dsts: Vec<V> = copies.iter().map(|c| c.0).collect();
    let mut tmp = depth.len() as u32 + 1;
    let mut late = vec![];
    for &(d, s) in copies {
        let src = match s.k {
            K::Reg(_) if dsts.contains(&s) => {
                // Read before any copy writes it.
                let t = V { ty: s.ty, k: K::Reg(tmp) };
                tmp += 1;
                out.push(format!("mov.{} {}, {};", s.ty.b(), Builder::name(t), Builder::name(s)));
                t
            }
            _ => s,
        };
        late.push((d, src));
    }
    for (d, s) in late {
        let src = match (s.k, s.ty) {
            (K::Imm(i), Ty::Pred) => {
                out.push(format!("setp.ne.u32 {}, {}, 0;", Builder::name(d), (i != 0) as u32));
                continue;
            }
            (K::Imm(i), _) => {
                let mask = match d.ty.class_bits() {
                    16 => i & 0xffff,
                    32 => i & 0xffff_ffff,
                    _ => i,
                };
                mask.to_string()
            }
            (K::Reg(_), _) => Builder::name(s),
        };
        out.push(format!("mov.{} {}, {src};", d.ty.b(), Builder::name(d)));
    }
    out
}

/// The arithmetic a builder does, with constants folded.
impl Builder {
    /// `op` of two integers (or predicates) of the same type.
    pub(crate) fn int_bin(&self, op: IntOp, a: V, b: V) -> V {
        let ty = a.ty;
        if let (Some(x), Some(y)) = (a.imm(), b.imm())
            && let Some(r) = fold_int(op, ty, x, y)
        {
            return V::int(ty, r);
        }
        let ones = if ty == Ty::Pred { 1 } else { -1 };
        match (op, a.imm(), b.imm()) {
            (IntOp::Add | IntOp::Or | IntOp::Xor, Some(0), _) | (IntOp::Mul, Some(1), _) => return b,
            (IntOp::And, Some(x), _) if x == ones => return b,
            (IntOp::Add | IntOp::Sub | IntOp::Or | IntOp::Xor | IntOp::Shl | IntOp::LShr | IntOp::AShr, _, Some(0)) => return a,
            (IntOp::Mul | IntOp::UDiv | IntOp::SDiv, _, Some(1)) => return a,
            (IntOp::And, _, Some(x)) if x == ones => return a,
            (IntOp::Mul | IntOp::And, Some(0), _) | (IntOp::Mul | IntOp::And, _, Some(0)) => return V::int(ty, 0),
            (IntOp::Or, Some(x), _) | (IntOp::Or, _, Some(x)) if x == ones => return V::int(ty, ones),
            (IntOp::Xor, Some(x), _) if x == ones => return self.not(b),
            (IntOp::Xor, _, Some(x)) if x == ones => return self.not(a),
            _ => {}
        }
        if ty == Ty::Pred {
            let name = match op {
                IntOp::And => "and.pred",
                IntOp::Or => "or.pred",
                _ => "xor.pred",
            };
            return self.pure(name, ty, &[a, b]);
        }
        let norm = |v: V, signed: bool| if ty == Ty::I8 { self.norm8(v, signed) } else { v };
        let (s, u, bb) = (ty.s(), ty.u(), ty.b());
        match op {
            IntOp::Add => self.pure(&format!("add.{s}"), ty, &[a, b]),
            IntOp::Sub => self.pure(&format!("sub.{s}"), ty, &[a, b]),
            // A power of two is a shift (ptxas then fuses it into the add of an address).
            IntOp::Mul if matches!(b.imm(), Some(k) if k > 0 && k & (k - 1) == 0) => {
                self.int_bin(IntOp::Shl, a, V::int(ty, b.imm().unwrap_or(1).trailing_zeros() as i64))
            }
            IntOp::Mul if matches!(a.imm(), Some(k) if k > 0 && k & (k - 1) == 0) => self.int_bin(IntOp::Mul, b, a),
            IntOp::Mul => self.pure(&format!("mul.lo.{s}"), ty, &[a, b]),
            IntOp::UDiv | IntOp::URem | IntOp::SDiv | IntOp::SRem
                if matches!(ty, Ty::I32 | Ty::I64)
                    && matches!(b.imm(), Some(d) if d != 0 && d != 1 && d != -1 && d.unsigned_abs() < 1 << 62) =>
            {
                self.div_by_constant(op, a, b.imm().unwrap_or(2))
            }
            IntOp::UDiv => self.pure(&format!("div.{u}"), ty, &[norm(a, false), norm(b, false)]),
            IntOp::URem => self.pure(&format!("rem.{u}"), ty, &[norm(a, false), norm(b, false)]),
            IntOp::SDiv => self.pure(&format!("div.{s}"), ty, &[norm(a, true), norm(b, true)]),
            IntOp::SRem => self.pure(&format!("rem.{s}"), ty, &[norm(a, true), norm(b, true)]),
            IntOp::And => self.pure(&format!("and.{bb}"), ty, &[a, b]),
            IntOp::Or => self.pure(&format!("or.{bb}"), ty, &[a, b]),
            IntOp::Xor => self.pure(&format!("xor.{bb}"), ty, &[a, b]),
            IntOp::Shl | IntOp::LShr | IntOp::AShr => {
                // The shift amount is a u32.
                let amt = self.to_u32(b);
                let a = match op {
                    IntOp::LShr => norm(a, false),
                    IntOp::AShr => norm(a, true),
                    _ => a,
                };
                let name = match op {
                    IntOp::Shl => format!("shl.{bb}"),
                    IntOp::LShr => format!("shr.{u}"),
                    _ => format!("shr.{s}"),
                };
                self.pure(&name, ty, &[a, amt])
            }
        }
    }

    /// Division (or remainder) of a 32- or 64-bit `a` by a constant `d` (not 0 or ±1) as
    /// multiplications and shifts (Granlund and Montgomery, "Division by invariant integers using
    /// multiplication", figures 4.1 and 5.2): ptxas runs `div`/`rem` by a constant as a full
    /// division.
    fn div_by_constant(&self, op: IntOp, a: V, d: i64) -> V {
        let ty = a.ty;
        let n = ty.bits();
        let c = |v: i64| V::int(ty, v);
        let (s, u) = (ty.s(), ty.u());
        let q = match op {
            IntOp::UDiv | IntOp::URem => {
                let ud = unsigned(ty, d) as u128;
                if ud & (ud - 1) == 0 {
                    let k = ud.trailing_zeros() as i64;
                    return if op == IntOp::UDiv {
                        self.int_bin(IntOp::LShr, a, c(k))
                    } else {
                        self.int_bin(IntOp::And, a, c((ud - 1) as i64))
                    };
                }
                let (m, l) = udiv_magic(ud, n);
                let t1 = self.pure(&format!("mul.hi.{u}"), ty, &[a, c(m as i64)]);
                let t2 = self.int_bin(IntOp::LShr, self.int_bin(IntOp::Sub, a, t1), c(1));
                self.int_bin(IntOp::LShr, self.int_bin(IntOp::Add, t1, t2), c(l as i64 - 1))
            }
            _ => {
                let ad = d.unsigned_abs() as u128;
                let q0 = if ad & (ad - 1) == 0 {
                    // x / 2^k rounds toward zero: add 2^k - 1 to negative x first.
                    let k = ad.trailing_zeros() as i64;
                    let sign = self.int_bin(IntOp::AShr, a, c(n as i64 - 1));
                    let bias = self.int_bin(IntOp::LShr, sign, c(n as i64 - k));
                    self.int_bin(IntOp::AShr, self.int_bin(IntOp::Add, a, bias), c(k))
                } else {
                    let (m, l) = sdiv_magic(ad, n);
                    let hi = self.pure(&format!("mul.hi.{s}"), ty, &[a, c(m)]);
                    let q0 = self.int_bin(IntOp::AShr, self.int_bin(IntOp::Add, a, hi), c(l as i64 - 1));
                    let xsign = self.int_bin(IntOp::AShr, a, c(n as i64 - 1));
                    self.int_bin(IntOp::Sub, q0, xsign)
                };
                if d < 0 { self.neg(q0) } else { q0 }
            }
        };
        match op {
            IntOp::UDiv | IntOp::SDiv => q,
            _ => self.int_bin(IntOp::Sub, a, self.int_bin(IntOp::Mul, q, c(d))),
        }
    }

    fn to_u32(&self, v: V) -> V {
        match (v.imm(), v.ty) {
            (Some(i), _) => V::int(Ty::I32, i),
            (None, Ty::I32) => v,
            (None, Ty::I64) => self.pure("cvt.u32.u64", Ty::I32, &[v]),
            (None, _) => self.pure("cvt.u32.u16", Ty::I32, &[v]),
        }
    }

    /// An 8-bit value with its register's upper byte set from it (sign or zero).
    fn norm8(&self, v: V, signed: bool) -> V {
        if let Some(i) = v.imm() {
            return V { ty: Ty::I8, k: K::Imm(if signed { i as i8 as i64 } else { i as u8 as i64 }) };
        }
        if signed { self.pure("cvt.s16.s8", Ty::I8, &[v]) } else { self.pure("and.b16", Ty::I8, &[v, V::int(Ty::I16, 255)]) }
    }

    /// Integer comparison.
    pub(crate) fn icmp(&self, p: Cmp, a: V, b: V) -> V {
        let ty = a.ty;
        if let (Some(x), Some(y)) = (a.imm(), b.imm()) {
            let (ux, uy) = (unsigned(ty, x), unsigned(ty, y));
            let r = match p {
                Cmp::Eq => x == y,
                Cmp::Ne => x != y,
                Cmp::Slt => x < y,
                Cmp::Sle => x <= y,
                Cmp::Sgt => x > y,
                Cmp::Sge => x >= y,
                Cmp::Ult => ux < uy,
                Cmp::Ule => ux <= uy,
                Cmp::Ugt => ux > uy,
                Cmp::Uge => ux >= uy,
            };
            return V::int(Ty::Pred, r as i64);
        }
        if ty == Ty::Pred {
            // Bools order false < true whatever the signedness asked for (as the constant
            // folding above does): `a < b` is `!a & b`.
            let (and, or) = (IntOp::And, IntOp::Or);
            return match p {
                Cmp::Eq => {
                    let x = self.int_bin(IntOp::Xor, a, b);
                    self.not(x)
                }
                Cmp::Ne => self.int_bin(IntOp::Xor, a, b),
                Cmp::Ult | Cmp::Slt => self.int_bin(and, self.not(a), b),
                Cmp::Ule | Cmp::Sle => self.int_bin(or, self.not(a), b),
                Cmp::Ugt | Cmp::Sgt => self.int_bin(and, a, self.not(b)),
                Cmp::Uge | Cmp::Sge => self.int_bin(or, a, self.not(b)),
            };
        }
        let signed = matches!(p, Cmp::Slt | Cmp::Sle | Cmp::Sgt | Cmp::Sge);
        let (a, b) = if ty == Ty::I8 { (self.norm8(a, signed), self.norm8(b, signed)) } else { (a, b) };
        let t = if signed { ty.s() } else { ty.u() };
        let c = match p {
            Cmp::Eq => "eq",
            Cmp::Ne => "ne",
            Cmp::Slt | Cmp::Ult => "lt",
            Cmp::Sle | Cmp::Ule => "le",
            Cmp::Sgt | Cmp::Ugt => "gt",
            Cmp::Sge | Cmp::Uge => "ge",
        };
        self.pure(&format!("setp.{c}.{t}"), Ty::Pred, &[a, b])
    }

    /// Float comparison (`FCmp::Une` and `Uno` are true on NaN).
    pub(crate) fn fcmp(&self, p: FCmp, a: V, b: V) -> V {
        if matches!(a.ty, Ty::F16 | Ty::BF16) {
            // Compared exactly in f32 (16-bit float compares need sm_90 for bf16).
            return self.fcmp(p, self.fcast(a, Ty::F32), self.fcast(b, Ty::F32));
        }
        if let (Some(x), Some(y)) = (a.float_imm(), b.float_imm()) {
            let r = match p {
                FCmp::Oeq => x == y,
                FCmp::Une => x != y,
                FCmp::Olt => x < y,
                FCmp::Ole => x <= y,
                FCmp::Ogt => x > y,
                FCmp::Oge => x >= y,
                FCmp::Uno => x.is_nan() || y.is_nan(),
                FCmp::Ord => !x.is_nan() && !y.is_nan(),
            };
            return V::int(Ty::Pred, r as i64);
        }
        let c = match p {
            FCmp::Oeq => "eq",
            FCmp::Une => "neu",
            FCmp::Olt => "lt",
            FCmp::Ole => "le",
            FCmp::Ogt => "gt",
            FCmp::Oge => "ge",
            FCmp::Uno => "nan",
            FCmp::Ord => "num",
        };
        self.pure(&format!("setp.{c}.{}", a.ty.f()), Ty::Pred, &[a, b])
    }

    /// `c ? a : b`.
    pub(crate) fn select(&self, c: V, a: V, b: V) -> V {
        match c.imm() {
            Some(0) => return b,
            Some(_) => return a,
            None if a == b => return a,
            None => {}
        }
        if a.ty == Ty::Pred {
            let t = self.int_bin(IntOp::And, c, a);
            let e = self.int_bin(IntOp::And, self.not(c), b);
            return self.int_bin(IntOp::Or, t, e);
        }
        self.pure(&format!("selp.{}", a.ty.b()), a.ty, &[a, b, c])
    }

    pub(crate) fn not(&self, a: V) -> V {
        if let Some(i) = a.imm() {
            return V::int(a.ty, if a.ty == Ty::Pred { (i == 0) as i64 } else { !i });
        }
        self.pure(&format!("not.{}", a.ty.b()), a.ty, &[a])
    }

    pub(crate) fn neg(&self, a: V) -> V {
        if a.ty.is_float() {
            if let Some(x) = a.float_imm() {
                return V::float(a.ty, -x);
            }
            return self.pure(&format!("neg.{}", a.ty.f()), a.ty, &[a]);
        }
        if let Some(i) = a.imm() {
            return V::int(a.ty, i.wrapping_neg());
        }
        self.pure(&format!("neg.{}", a.ty.s()), a.ty, &[a])
    }

    /// Integer width change: sign or zero extension, or truncation.
    pub(crate) fn int_cast(&self, a: V, to: Ty, signed: bool) -> V {
        if a.ty == to {
            return a;
        }
        if let Some(i) = a.imm() {
            let i = if signed { i } else { unsigned(a.ty, i) as i64 };
            return V::int(to, i);
        }
        if a.ty == Ty::Pred {
            return self.pure(&format!("selp.{}", to.b()), to, &[V::int(to, if signed { -1 } else { 1 }), V::int(to, 0), a]);
        }
        if to == Ty::Pred {
            let low = self.int_bin(IntOp::And, a, V::int(a.ty, 1));
            return self.icmp(Cmp::Ne, low, V::int(a.ty, 0));
        }
        let src = match (a.ty, signed) {
            (Ty::I8, true) => "s8",
            (Ty::I8, false) => "u8",
            (t, true) => t.s(),
            (t, false) => t.u(),
        };
        let dst = match to {
            Ty::I8 => "u16",
            t if signed => t.s(),
            t => t.u(),
        };
        if a.ty.class_bits() == to.class_bits() {
            // i8 ↔ i16: the same register, extended from the low byte when widening.
            if to.bits() > a.ty.bits() {
                return self.pure(&format!("cvt.{dst}.{src}"), to, &[a]);
            }
            return a.retype(to);
        }
        self.pure(&format!("cvt.{dst}.{src}"), to, &[a])
    }

    /// A bit cast between types of the same register width (free: the same register).
    pub(crate) fn bitcast(&self, a: V, to: Ty) -> V {
        a.retype(to)
    }

    /// Float arithmetic (round to nearest even; no contraction into FMA).
    pub(crate) fn fbin(&self, op: FOp, a: V, b: V) -> V {
        let ty = a.ty;
        if let (Some(x), Some(y)) = (a.float_imm(), b.float_imm()) {
            let r = match op {
                FOp::Add => Some(x + y),
                FOp::Sub => Some(x - y),
                FOp::Mul => Some(x * y),
                FOp::Div => Some(x / y),
                FOp::Min | FOp::Max => None,
            };
            if let (Some(r), Ty::F32 | Ty::F64) = (r, ty) {
                let r = if ty == Ty::F32 { (r as f32) as f64 } else { r };
                return V::float(ty, r);
            }
        }
        let f = ty.f();
        let name = match op {
            FOp::Add => format!("add.rn.{f}"),
            FOp::Sub => format!("sub.rn.{f}"),
            FOp::Mul => format!("mul.rn.{f}"),
            FOp::Div => format!("div.rn.{f}"),
            FOp::Min => format!("min.{f}"),
            FOp::Max => format!("max.{f}"),
        };
        self.pure(&name, ty, &[a, b])
    }

    pub(crate) fn fma(&self, a: V, b: V, c: V) -> V {
        self.pure(&format!("fma.rn.{}", a.ty.f()), a.ty, &[a, b, c])
    }

    /// A unary float instruction (`sqrt.rn`, `ex2.approx`, `abs`, `cvt.rmi` …) of `a`'s type.
    pub(crate) fn funary(&self, op: &str, a: V) -> V {
        let f = a.ty.f();
        let name = match op {
            "floor" => format!("cvt.rmi.{f}.{f}"),
            "ceil" => format!("cvt.rpi.{f}.{f}"),
            "trunc" => format!("cvt.rzi.{f}.{f}"),
            _ => format!("{op}.{f}"),
        };
        self.pure(&name, a.ty, &[a])
    }

    /// `|mag|` with the sign of `sign`.
    pub(crate) fn copysign(&self, mag: V, sign: V) -> V {
        // PTX's `copysign d, a, b` copies the sign of `a` into `b`.
        self.pure(&format!("copysign.{}", mag.ty.f()), mag.ty, &[sign, mag])
    }

    /// Float width change (widening exact, narrowing to nearest even).
    pub(crate) fn fcast(&self, a: V, to: Ty) -> V {
        if a.ty == to {
            return a;
        }
        if let Some(x) = a.float_imm() {
            return V::float(to, x);
        }
        match (a.ty, to) {
            // bf16 → f32 is the bits shifted up.
            (Ty::BF16, Ty::F32) if self.target == Target::Sm80 => {
                let w = self.pure("cvt.u32.u16", Ty::I32, &[a.retype(Ty::I16)]);
                self.pure("shl.b32", Ty::I32, &[w, V::int(Ty::I32, 16)]).retype(Ty::F32)
            }
            (Ty::BF16, Ty::F64) => {
                let f = self.fcast(a, Ty::F32);
                self.fcast(f, Ty::F64)
            }
            (Ty::F64, Ty::BF16) if self.target == Target::Sm80 => {
                // Through f32 rounded to odd (see `int_to_float`).
                let rz = self.pure("cvt.rz.f32.f64", Ty::F32, &[a]);
                let back = self.pure("cvt.f64.f32", Ty::F64, &[rz]);
                let inexact = self.fcmp(FCmp::Une, back, a);
                let odd = self.int_bin(IntOp::Or, rz.retype(Ty::I32), V::int(Ty::I32, 1)).retype(Ty::F32);
                let odd = self.select(self.fcmp(FCmp::Uno, a, a), rz, odd);
                self.fcast(self.select(inexact, odd, rz), Ty::BF16)
            }
            _ if to.bits() > a.ty.bits() => self.pure(&format!("cvt.{}.{}", to.f(), a.ty.f()), to, &[a]),
            _ => self.pure(&format!("cvt.rn.{}.{}", to.f(), a.ty.f()), to, &[a]),
        }
    }

    /// Integer → float, rounding to nearest even.
    pub(crate) fn int_to_float(&self, a: V, to: Ty, signed: bool) -> V {
        if to == Ty::BF16 && self.target == Target::Sm80 {
            // No integer → bf16 conversion before sm_90: to f32 rounded to odd, then to bf16
            // (exact: f32 has more than two extra bits, so the two roundings are one).
            let a = if a.ty.class_bits() < 32 { self.int_cast(a, Ty::I32, signed) } else { a };
            let src = if signed { a.ty.s() } else { a.ty.u() };
            let rz = self.pure(&format!("cvt.rz.f32.{src}"), Ty::F32, &[a]);
            let back = self.pure(&format!("cvt.rzi.{src}.f32"), a.ty, &[rz]);
            let inexact = self.icmp(Cmp::Ne, back, a);
            let odd = self.int_bin(IntOp::Or, rz.retype(Ty::I32), V::int(Ty::I32, 1)).retype(Ty::F32);
            return self.fcast(self.select(inexact, odd, rz), Ty::BF16);
        }
        let a = match a.ty {
            Ty::I8 => self.norm8(a, signed),
            Ty::Pred => self.int_cast(a, Ty::I32, false),
            _ => a,
        };
        let src = if signed { a.ty.s() } else { a.ty.u() };
        self.pure(&format!("cvt.rn.{}.{src}", to.f()), to, &[a])
    }

    /// Float → integer, truncating, saturated to the range (NaN gives 0): PTX's `cvt.rzi`.
    pub(crate) fn float_to_int(&self, a: V, to: Ty, signed: bool) -> V {
        let dst = match (to, signed) {
            (Ty::I8, true) => "s8",
            (Ty::I8, false) => "u8",
            (t, true) => t.s(),
            (t, false) => t.u(),
        };
        self.pure(&format!("cvt.rzi.{dst}.{}", a.ty.f()), to, &[a])
    }

    /// Packs registers into one wider one, lowest first (`mov.b32 %r, {%h1, %h2}`).
    pub(crate) fn pack(&self, parts: &[V], to: Ty) -> V {
        let names: Vec<String> = parts.iter().map(|&p| self.o(self.materialize(p))).collect();
        let (b, d) = self.placement(parts);
        let dst = {
            let mut f = self.f.borrow_mut();
            Self::new_reg(&mut f, to, d)
        };
        self.put(b, &format!("mov.{} {}, {{{}}};", to.b(), Self::name(dst), names.join(", ")));
        dst
    }

    /// Splits a register into `n` parts of type `part`, lowest first.
    pub(crate) fn unpack(&self, v: V, n: usize, part: Ty) -> Vec<V> {
        let v = self.materialize(v);
        if part.class_bits() == 8 || part == Ty::I8 {
            // Bytes: shifted out one by one (PTX has no 8-bit registers).
            return (0..n)
                .map(|i| {
                    let s = self.int_bin(IntOp::LShr, v, V::int(v.ty, 8 * i as i64));
                    self.int_cast(s, Ty::I16, false).retype(Ty::I8)
                })
                .collect();
        }
        let (b, d) = self.placement(&[v]);
        let parts: Vec<V> = {
            let mut f = self.f.borrow_mut();
            (0..n).map(|_| Self::new_reg(&mut f, part, d)).collect()
        };
        let names: Vec<String> = parts.iter().map(|&p| Self::name(p)).collect();
        self.put(b, &format!("mov.{} {{{}}}, {};", v.ty.b(), names.join(", "), Self::name(v)));
        parts
    }
}

/// `(m, l)` of unsigned division by `d` (not a power of two, below 2^62) of `n`-bit values:
/// `q = (t + ((x - t) >> 1)) >> (l - 1)` with `t = mulhi(x, m)` (Granlund–Montgomery 4.1).
fn udiv_magic(d: u128, n: u32) -> (u128, u32) {
    let l = 128 - (d - 1).leading_zeros();
    (((1u128 << n) * ((1u128 << l) - d)) / d + 1, l)
}

/// `(m, l)` of signed division by `|d|` (not a power of two, below 2^62) of `n`-bit values:
/// `q = ((x + mulhi_s(x, m)) >> (l - 1)) - (x >> (n - 1))`, negated for a negative divisor
/// (Granlund–Montgomery 5.2; `m` is the multiplier less `2^n`, a signed `n`-bit value).
fn sdiv_magic(ad: u128, n: u32) -> (i64, u32) {
    let l = (128 - (ad - 1).leading_zeros()).max(1);
    let m = 1 + (1u128 << (n + l - 1)) / ad;
    ((m as i128 - (1i128 << n)) as i64, l)
}

fn unsigned(ty: Ty, v: i64) -> u64 {
    match ty.bits() {
        1 => v as u64 & 1,
        8 => v as u8 as u64,
        16 => v as u16 as u64,
        32 => v as u32 as u64,
        _ => v as u64,
    }
}

fn fold_int(op: IntOp, ty: Ty, x: i64, y: i64) -> Option<i64> {
    let (ux, uy) = (unsigned(ty, x), unsigned(ty, y));
    let bits = ty.bits();
    let sh = |v: u64| -> Option<u32> { if v < bits as u64 { Some(v as u32) } else { None } };
    Some(match op {
        IntOp::Add => x.wrapping_add(y),
        IntOp::Sub => x.wrapping_sub(y),
        IntOp::Mul => x.wrapping_mul(y),
        IntOp::UDiv if uy != 0 => (ux / uy) as i64,
        IntOp::URem if uy != 0 => (ux % uy) as i64,
        IntOp::SDiv if y != 0 && y != -1 => x / y,
        IntOp::SRem if y != 0 && y != -1 => x % y,
        IntOp::And => x & y,
        IntOp::Or => x | y,
        IntOp::Xor => x ^ y,
        IntOp::Shl => ((ux << sh(uy)?) & mask(bits)) as i64,
        IntOp::LShr => (ux >> sh(uy)?) as i64,
        IntOp::AShr => x >> sh(uy)?,
        _ => return None,
    })
}

fn mask(bits: u32) -> u64 {
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum IntOp {
    Add,
    Sub,
    Mul,
    UDiv,
    URem,
    SDiv,
    SRem,
    And,
    Or,
    Xor,
    Shl,
    LShr,
    AShr,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Cmp {
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

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum FCmp {
    Oeq,
    Une,
    Olt,
    Ole,
    Ogt,
    Oge,
    Uno,
    Ord,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum FOp {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The magic-number divisions, evaluated as the emitted instructions compute them, agree with
    /// plain division on the edges and a spread of values, for 32 and 64 bits.
    #[test]
    fn division_by_constants_is_exact() {
        let xs32: Vec<u64> = vec![0, 1, 2, 3, 7, 100, 65535, 1 << 31, (1 << 31) - 1, u32::MAX as u64 - 1, u32::MAX as u64];
        let divisors = [3u64, 5, 6, 7, 9, 10, 12, 25, 100, 641, 1000, 65537, (1 << 31) - 1];
        for n in [32u32, 64] {
            let mask = if n == 32 { u32::MAX as u128 } else { u64::MAX as u128 };
            let mut xs: Vec<u128> = xs32.iter().map(|&x| x as u128).collect();
            if n == 64 {
                xs.extend([u64::MAX as u128, (1u128 << 63) - 1, 1u128 << 63, 12345678901234567]);
            }
            for &d in &divisors {
                let (m, l) = udiv_magic(d as u128, n);
                for &x in &xs {
                    let t = (x * m) >> n;
                    let q = ((t + (((x.wrapping_sub(t)) & mask) >> 1)) & mask) >> (l - 1);
                    assert_eq!(q, x / d as u128, "{x} / {d} ({n} bits)");
                }
                let (ms, l) = sdiv_magic(d as u128, n);
                for &x in &xs {
                    // The same bits as a signed value.
                    let xs = if x >> (n - 1) & 1 == 1 { x as i128 - (1i128 << n) } else { x as i128 };
                    let hi = (xs * ms as i128) >> n;
                    let wrap = |v: i128| {
                        let v = v.rem_euclid(1i128 << n);
                        if v >= 1i128 << (n - 1) { v - (1i128 << n) } else { v }
                    };
                    let q0 = wrap(xs + hi) >> (l - 1);
                    let q = wrap(q0 - (xs >> (n - 1)));
                    assert_eq!(q, xs / d as i128, "{xs} / {d} ({n} bits, signed)");
                }
            }
        }
    }

    #[test]
    fn division_by_a_constant_has_no_div_instruction() {
        let b = Builder::new(Target::Sm90a);
        let x = b.fresh(Ty::I32);
        b.int_bin(IntOp::UDiv, x, V::int(Ty::I32, 7));
        b.int_bin(IntOp::SRem, x, V::int(Ty::I32, -12));
        let y = b.fresh(Ty::I64);
        b.int_bin(IntOp::SDiv, y, V::int(Ty::I64, 1000));
        b.ret();
        let ptx = b.finish("k", &[], 32);
        assert!(ptx.contains("mul.hi.u32") && ptx.contains("mul.hi.s64"), "{ptx}");
        assert!(!ptx.contains("div.") && !ptx.contains("rem."), "{ptx}");
    }

    #[test]
    fn constants_and_identities_fold() {
        let b = Builder::new(Target::Sm90a);
        let x = b.fresh(Ty::I32);
        assert_eq!(b.int_bin(IntOp::Add, V::int(Ty::I32, 2), V::int(Ty::I32, 3)), V::int(Ty::I32, 5));
        assert_eq!(b.int_bin(IntOp::Add, x, V::int(Ty::I32, 0)), x);
        assert_eq!(b.int_bin(IntOp::Mul, V::int(Ty::I32, 1), x), x);
        assert_eq!(b.int_bin(IntOp::Mul, x, V::int(Ty::I32, 0)), V::int(Ty::I32, 0));
        // i32 arithmetic wraps.
        assert_eq!(b.int_bin(IntOp::Add, V::int(Ty::I32, i32::MAX as i64), V::int(Ty::I32, 1)), V::int(Ty::I32, i32::MIN as i64));
        assert_eq!(b.icmp(Cmp::Ult, V::int(Ty::I32, -1), V::int(Ty::I32, 0)), V::int(Ty::Pred, 0));
        assert_eq!(b.fbin(FOp::Mul, V::float(Ty::F32, 1.5), V::float(Ty::F32, 2.0)), V::float(Ty::F32, 3.0));
        assert_eq!(b.select(V::int(Ty::Pred, 1), x, V::int(Ty::I32, 9)), x);
        // `true || p` is true and `p ^ true` is `!p`, without a predicate register for `true`.
        let p = b.fresh(Ty::Pred);
        let t = V::int(Ty::Pred, 1);
        assert_eq!(b.int_bin(IntOp::Or, t, p), t);
        assert_eq!(b.int_bin(IntOp::Or, x, V::int(Ty::I32, -1)), V::int(Ty::I32, -1));
        b.int_bin(IntOp::Xor, p, t);
        let body = b.f.borrow().blocks[0].body.clone();
        assert!(body.contains("not.pred") && !body.contains("setp.ne.u32"), "{body}");
    }

    /// A 16-bit float constant is rounded once from its f64 value: just above a tie it rounds
    /// up (through `as f32` the excess is lost and the tie rounds to even, down).
    #[test]
    fn half_constants_round_once() {
        let above = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
        assert_eq!(V::float(Ty::F16, above).float_imm(), Some(1.0 + 2f64.powi(-10)));
        assert_eq!(V::float(Ty::F16, 1.0 + 2f64.powi(-11)).float_imm(), Some(1.0));
        let above = 1.0 + 2f64.powi(-8) + 2f64.powi(-45);
        assert_eq!(V::float(Ty::BF16, above).float_imm(), Some(1.0 + 2f64.powi(-7)));
        assert_eq!(V::float(Ty::F16, 65519.99).float_imm(), Some(65504.0));
        assert_eq!(V::float(Ty::F16, 1e300).float_imm(), Some(f64::INFINITY));
    }

    /// Registers and constants are numbered with their types: an i16 register and its i8
    /// truncation, or two i64 constants that differ only in their top bits, are different values.
    #[test]
    fn value_ids_tell_types_and_constants_apart() {
        let b = Builder::new(Target::Sm90a);
        let x = b.fresh(Ty::I16);
        assert_ne!(x.id(), x.retype(Ty::I8).id());
        assert_ne!(V::int(Ty::I16, 5).id(), V::int(Ty::I8, 5).id());
        assert_ne!(V::int(Ty::I64, 1).id(), V::int(Ty::I64, 1 + (1 << 59)).id());
        assert_ne!(V::int(Ty::I64, 1 << 59).id(), V::int(Ty::I64, 1 << 60).id());
        assert_ne!(V::int(Ty::I32, 0).id(), V::float(Ty::F32, 0.0).id());
    }

    /// Comparisons of bool registers, evaluated on every pair of inputs by reading back the
    /// predicate instructions they emit, agree with the constant folding (unsigned: false < true).
    #[test]
    fn bool_comparisons_order_false_before_true() {
        for p in [Cmp::Eq, Cmp::Ne, Cmp::Ult, Cmp::Ule, Cmp::Ugt, Cmp::Uge, Cmp::Slt, Cmp::Sle, Cmp::Sgt, Cmp::Sge] {
            let b = Builder::new(Target::Sm90a);
            let (x, y) = (b.fresh(Ty::Pred), b.fresh(Ty::Pred));
            let r = b.icmp(p, x, y);
            let body = b.f.borrow().blocks[0].body.clone();
            for (xv, yv) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let mut env: HashMap<String, bool> = HashMap::new();
                env.insert(Builder::name(x), xv == 1);
                env.insert(Builder::name(y), yv == 1);
                for line in body.lines() {
                    let t: Vec<&str> = line.trim().trim_end_matches(';').split([' ', ',']).filter(|s| !s.is_empty()).collect();
                    let get = |s: &str| env.get(s).copied().unwrap_or_else(|| panic!("{s} undefined in {body}"));
                    let v = match t[0] {
                        "not.pred" => !get(t[2]),
                        "and.pred" => get(t[2]) && get(t[3]),
                        "or.pred" => get(t[2]) || get(t[3]),
                        "xor.pred" => get(t[2]) != get(t[3]),
                        other => panic!("unexpected {other} in {body}"),
                    };
                    env.insert(t[1].to_string(), v);
                }
                let want = b.icmp(p, V::int(Ty::Pred, xv), V::int(Ty::Pred, yv)) == V::int(Ty::Pred, 1);
                assert_eq!(env[&Builder::name(r)], want, "{p:?} {xv} {yv}: {body}");
            }
        }
    }

    /// A swap of two phis reads its sources before it writes them.
    #[test]
    fn phi_copies_are_parallel() {
        let b = Builder::new(Target::Sm90a);
        let (p, q) = (b.phi(Ty::I32), b.phi(Ty::I32));
        let here = b.current();
        b.incoming(p, q, here);
        b.incoming(q, p, here);
        b.ret();
        let ptx = b.finish("k", &[], 32);
        let lines: Vec<&str> = ptx.lines().map(str::trim).filter(|l| l.starts_with("mov.b32")).collect();
        assert_eq!(lines.len(), 4, "{ptx}");
        // Both sources are saved first.
        assert!(lines[0].ends_with("%r1;") && lines[1].ends_with("%r0;"), "{lines:?}");
    }

    /// Arithmetic on values from outside a loop is built in the loop's preheader.
    #[test]
    fn loop_invariant_arithmetic_is_hoisted() {
        let b = Builder::new(Target::Sm90a);
        let x = b.fresh(Ty::I32);
        let pre = b.current();
        let lp = b.block("loop");
        b.br(lp);
        b.enter_loop();
        b.position(lp);
        let i = b.phi(Ty::I32);
        b.incoming(i, V::int(Ty::I32, 0), pre);
        let inv = b.int_bin(IntOp::Mul, x, V::int(Ty::I32, 3));
        let var = b.int_bin(IntOp::Add, i, inv);
        assert_eq!(b.placement(&[x]).0, pre);
        assert_eq!(b.placement(&[var]).0, lp);
        b.incoming(i, var, lp);
        b.br(lp);
        b.exit_loop();
        let ptx = b.finish("k", &[], 32);
        let (head, body) = ptx.split_once("$L__loop_1:").unwrap_or_default();
        assert!(head.contains("mul.lo.s32") && body.contains("add.s32") && !body.contains("mul.lo.s32"), "{ptx}");
    }
}
