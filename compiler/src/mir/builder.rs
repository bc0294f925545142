//! Builds machine-IR functions: typed virtual registers in basic blocks, with the little
//! optimisation the generated code needs and the assemblers do not do.
//!
//! - Integer and float constants are folded, and the identities (`x + 0`, `x * 1`, `x & ones`,
//!   …) give their operand back.
//! - Division and remainder by a constant become multiply-high and shifts (Granlund and
//!   Montgomery); ptxas runs `div` by a constant as a full division. So do 32-bit divisions in
//!   a loop by a divisor defined outside it (a persistent loop's `s / k_steps`): the multiplier
//!   and shifts are computed once, before the loop, from the divisor at run time.
//! - A pure instruction whose operands are all defined outside the innermost loops goes to the
//!   preheader of the outermost loop it varies in (loop-invariant code motion at construction:
//!   ptxas does not hoist address arithmetic out of loops, and a later pass would have to
//!   rediscover what the builder knows, that the operand was defined outside).
//! - Registers built only from parameters, block indices and constants are marked uniform (the
//!   same in every thread of the block).
//!
//! Phis are registers written by copies at the ends of their predecessors (`incoming`), done as
//! one parallel copy per block. Constants of the types PTX takes no immediate of (predicates and
//! 16-bit floats) are materialised in registers once, in the entry block.

use super::{
    Addr, AtomTy, Blk, BlockData, Callee, Cmp, FCmp, FOp, FUn, Function, Inst, IntOp, K, MemTy, Module, NumTy, RedOp, Rnd, SReg, Sem,
    ShflMode, Space, Sym, Term, Ty, V,
};
use crate::Target;
use crate::ir::FastMap as HashMap;
use std::cell::RefCell;

/// The function being built, with what the builder knows of its registers.
pub struct FuncState {
    func: Function,
    cur: usize,
    /// The preheader of each enclosing loop, outermost first.
    loops: Vec<usize>,
    /// Per register: the loop depth its value varies at.
    depth: Vec<u32>,
    /// Per register: the same in every thread of the block.
    uniform: Vec<bool>,
    /// Constants materialised in registers (the entry block), by value.
    consts: HashMap<(Ty, i64), V>,
}

impl FuncState {
    fn new(name: &str) -> FuncState {
        FuncState { func: Function::new(name), cur: 0, loops: vec![], depth: vec![], uniform: vec![], consts: HashMap::default() }
    }
}

/// The machine-IR module of one kernel under construction.
pub struct Builder {
    f: RefCell<FuncState>,
    /// Finished device functions.
    funcs: RefCell<Vec<Function>>,
    strings: RefCell<Vec<String>>,
    pub target: Target,
}

impl Builder {
    pub fn new(target: Target) -> Builder {
        Builder { f: RefCell::new(FuncState::new("")), funcs: RefCell::default(), strings: RefCell::default(), target }
    }

    /// Starts building device function `name`; returns the function being built until now
    /// (for `end_func`).
    pub fn begin_func(&self, name: &str) -> FuncState {
        std::mem::replace(&mut *self.f.borrow_mut(), FuncState::new(name))
    }

    /// Ends the device function being built and resumes `saved`; returns the function's
    /// callee.
    pub fn end_func(&self, saved: FuncState) -> Callee {
        let f = std::mem::replace(&mut *self.f.borrow_mut(), saved);
        let mut funcs = self.funcs.borrow_mut();
        funcs.push(f.func);
        Callee::Func(funcs.len() - 1)
    }

    /// The module: the kernel (the function being built) and the device functions.
    pub fn finish(self, name: &str, threads: u32, blocks_per_sm: Option<u32>) -> Module {
        let mut f = self.f.into_inner();
        f.func.name = name.to_string();
        Module {
            target: self.target,
            kernel: f.func,
            threads,
            blocks_per_sm,
            funcs: self.funcs.into_inner(),
            strings: self.strings.into_inner(),
        }
    }

    /// Reads the function's next parameter, of type `ty` (a `Pred` is passed as a byte and
    /// read as an `I8`), in the entry block.
    pub fn param(&self, ty: Ty) -> V {
        self.param_with(ty, None)
    }

    /// Declares the next kernel parameter, an opaque blob of `bytes` bytes aligned to `align`
    /// passed by value (a tensor map; see `mir::Param::by_value`); returns its index.
    pub fn param_by_value(&self, bytes: u32, align: u32) -> usize {
        let mut f = self.f.borrow_mut();
        f.func.params.push(super::Param { ty: Ty::I64, global_align: None, by_value: Some((bytes, align)) });
        f.func.params.len() - 1
    }

    /// The generic address of by-value parameter `index` (`param_by_value`), taken here rather
    /// than in the entry block: a register holding it across the kernel's loops costs two.
    pub fn param_address(&self, index: usize) -> V {
        let d = self.fresh(Ty::I64);
        self.push(Inst::Param { dst: d, index });
        d
    }

    /// `param`, declaring a global pointer's pointee alignment (see `mir::Param`).
    pub fn param_with(&self, ty: Ty, global_align: Option<u32>) -> V {
        let index = {
            let mut f = self.f.borrow_mut();
            f.func.params.push(super::Param { ty, global_align, by_value: None });
            f.func.params.len() - 1
        };
        let rty = if ty == Ty::Pred { Ty::I8 } else { ty };
        let v = self.at_entry(|| {
            let d = self.fresh(rty);
            self.push(Inst::Param { dst: d, index });
            d
        });
        self.set_uniform(v);
        v
    }

    /// A call of `callee` with `args` (by value).
    pub fn call(&self, callee: Callee, args: &[V]) {
        let args = match callee {
            Callee::Func(_) => args.iter().map(|&a| self.materialize(a)).collect(),
            _ => args.to_vec(),
        };
        self.push(Inst::Call { callee, args });
    }

    pub fn entry(&self) -> Blk {
        Blk(0)
    }

    // ---- blocks and control flow -------------------------------------------------------------

    pub fn block(&self, name: &str) -> Blk {
        let mut f = self.f.borrow_mut();
        let n = f.func.blocks.len();
        f.func.blocks.push(BlockData { name: name.replace('.', "_"), ..Default::default() });
        Blk(n)
    }

    pub fn current(&self) -> Blk {
        Blk(self.f.borrow().cur)
    }

    pub fn position(&self, b: Blk) {
        self.f.borrow_mut().cur = b.0;
    }

    fn terminate(&self, t: Term) {
        let mut f = self.f.borrow_mut();
        let cur = f.cur;
        // Code after a terminator (after `return`) is unreachable: its block is already closed.
        if f.func.blocks[cur].term.is_none() {
            f.func.blocks[cur].term = Some(t);
        }
    }

    pub fn br(&self, to: Blk) {
        self.terminate(Term::Br(to));
    }

    pub fn cond_br(&self, c: V, t: Blk, e: Blk) {
        match c.imm() {
            Some(0) => return self.br(e),
            Some(_) => return self.br(t),
            None => {}
        }
        self.terminate(Term::CondBr(c, t, e));
    }

    pub fn ret(&self) {
        self.terminate(Term::Ret);
    }

    /// Stops the thread with an error, and nothing after it.
    pub fn trap(&self) {
        self.terminate(Term::Trap);
    }

    /// A register set by copies at the ends of predecessors (`incoming`).
    pub fn phi(&self, ty: Ty) -> V {
        self.fresh(ty)
    }

    pub fn incoming(&self, phi: V, v: V, from: Blk) {
        if phi == v {
            return;
        }
        self.f.borrow_mut().func.blocks[from.0].copies.push((phi, v));
    }

    /// Enters a loop whose preheader is the current block.
    pub fn enter_loop(&self) {
        let mut f = self.f.borrow_mut();
        let cur = f.cur;
        f.loops.push(cur);
    }

    pub fn exit_loop(&self) {
        self.f.borrow_mut().loops.pop();
    }

    /// The loop depth of the code being built.
    pub fn loop_level(&self) -> u32 {
        self.f.borrow().loops.len() as u32
    }

    /// The loop depth a register varies at.
    pub fn depth_of(&self, v: V) -> Option<u32> {
        match v.k {
            K::Reg(r) => self.f.borrow().depth.get(r as usize).copied(),
            K::Imm(_) => None,
        }
    }

    /// Whether `v` is the same in every thread (constants are).
    pub fn is_uniform(&self, v: V) -> bool {
        match v.k {
            K::Reg(r) => self.f.borrow().uniform.get(r as usize).copied().unwrap_or(false),
            K::Imm(_) => true,
        }
    }

    /// Marks a register as the same in every thread (a parameter, a block index).
    pub fn set_uniform(&self, v: V) {
        if let K::Reg(r) = v.k
            && let Some(u) = self.f.borrow_mut().uniform.get_mut(r as usize)
        {
            *u = true;
        }
    }

    /// Runs `build` with code going to the end of the entry block, outside every loop.
    pub fn at_entry<T>(&self, build: impl FnOnce() -> T) -> T {
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

    // ---- registers and instructions ---------------------------------------------------------

    fn new_reg(f: &mut FuncState, ty: Ty, depth: u32) -> V {
        let n = f.depth.len() as u32;
        f.depth.push(depth);
        f.uniform.push(false);
        f.func.regs.push(ty);
        V { ty, k: K::Reg(n) }
    }

    /// A register defined here (varying in the current loop).
    pub fn fresh(&self, ty: Ty) -> V {
        let mut f = self.f.borrow_mut();
        let d = f.loops.len() as u32;
        Self::new_reg(&mut f, ty, d)
    }

    /// Appends an instruction to the current block.
    pub fn push(&self, i: Inst) {
        let mut f = self.f.borrow_mut();
        let cur = f.cur;
        f.func.blocks[cur].insts.push(i);
    }

    fn push_to(&self, b: Blk, i: Inst) {
        self.f.borrow_mut().func.blocks[b.0].insts.push(i);
    }

    /// `v` in a register (constants are materialised once, in the entry block).
    pub fn materialize(&self, v: V) -> V {
        let Some(i) = v.imm() else { return v };
        if let Some(&r) = self.f.borrow().consts.get(&(v.ty, i)) {
            return r;
        }
        let mut f = self.f.borrow_mut();
        let r = Self::new_reg(&mut f, v.ty, 0);
        f.func.blocks[0].insts.push(Inst::Mov { dst: r, src: v });
        f.consts.insert((v.ty, i), r);
        if let K::Reg(n) = r.k {
            f.uniform[n as usize] = true;
        }
        r
    }

    /// An operand as PTX takes it: a constant of a type PTX has no immediate of (a predicate,
    /// a 16-bit float) in a register.
    fn operand(&self, v: V) -> V {
        match (v.k, v.ty) {
            (K::Imm(_), Ty::Pred | Ty::F16 | Ty::BF16) => self.materialize(v),
            _ => v,
        }
    }

    /// The block a pure instruction over `srcs` goes to, and the loop depth of its result.
    pub fn placement(&self, srcs: &[V]) -> (Blk, u32) {
        let f = self.f.borrow();
        let here = f.loops.len() as u32;
        let d = srcs
            .iter()
            .map(|v| match v.k {
                K::Reg(r) => f.depth.get(r as usize).copied().unwrap_or(here),
                K::Imm(_) => 0,
            })
            .max()
            .unwrap_or(0)
            .min(here);
        if d < here { (Blk(f.loops[d as usize]), d) } else { (Blk(f.cur), d) }
    }

    /// A pure instruction over `srcs` with a result of type `ty`, placed by `placement`: `make`
    /// builds it from the destination and the operands (constants PTX takes no immediate of
    /// materialised).
    fn pure(&self, ty: Ty, srcs: &[V], make: impl FnOnce(V, &[V]) -> Inst) -> V {
        let (b, d) = self.placement(srcs);
        let ops: Vec<V> = srcs.iter().map(|&s| self.operand(s)).collect();
        let uniform = srcs.iter().all(|&v| self.is_uniform(v));
        let dst = {
            let mut f = self.f.borrow_mut();
            Self::new_reg(&mut f, ty, d)
        };
        if uniform {
            self.set_uniform(dst);
        }
        self.push_to(b, make(dst, &ops));
        dst
    }

    /// An instruction with effects (or reading memory) in the current block, whose one result
    /// of type `ty` `make` receives.
    fn effect(&self, ty: Ty, make: impl FnOnce(V) -> Inst) -> V {
        let d = self.fresh(ty);
        self.push(make(d));
        d
    }

    /// `dst = src` (a copy into a new register of this loop iteration).
    pub fn mov(&self, dst: V, src: V) {
        let src = self.operand(src);
        self.push(Inst::Mov { dst, src });
    }

    // ---- memory and special values ------------------------------------------------------------

    /// A load of `n` elements of `ty` (registers of type `reg`) at `addr` in `space`.
    pub fn load(&self, space: Space, sem: Sem, ty: MemTy, reg: Ty, n: usize, addr: Addr) -> Vec<V> {
        let dsts: Vec<V> = (0..n).map(|_| self.fresh(reg)).collect();
        self.push(Inst::Load { space, sem, ty, dsts: dsts.clone(), addr, pred: None });
        dsts
    }

    /// Where `pred` holds, `dsts = *addr` (the registers keep their values elsewhere).
    pub fn load_pred(&self, space: Space, ty: MemTy, dsts: &[V], addr: Addr, pred: V) {
        let pred = self.materialize(pred);
        self.push(Inst::Load { space, sem: Sem::Weak, ty, dsts: dsts.to_vec(), addr, pred: Some(pred) });
    }

    /// `*addr = vals` (where `pred` holds, with one).
    pub fn store(&self, space: Space, ty: MemTy, vals: &[V], addr: Addr, pred: Option<V>) {
        let vals = vals.iter().map(|&v| self.operand(v)).collect();
        let pred = pred.map(|p| self.materialize(p));
        self.push(Inst::Store { space, sem: Sem::Weak, ty, vals, addr, pred });
    }

    /// `ld.relaxed.gpu` of one value.
    pub fn load_relaxed(&self, ty: Ty, addr: Addr) -> V {
        self.effect(ty, |d| Inst::Load { space: Space::Global, sem: Sem::RelaxedGpu, ty: MemTy::of(ty), dsts: vec![d], addr, pred: None })
    }

    pub fn red(&self, op: RedOp, ty: AtomTy, addr: Addr, val: V) {
        let val = self.materialize(val);
        self.push(Inst::Red { op, ty, addr, val });
    }

    pub fn atom_cas(&self, ty: Ty, addr: Addr, cmp: V, new: V) -> V {
        let (cmp, new) = (self.operand(cmp), self.operand(new));
        self.effect(ty, |d| Inst::AtomCas { dst: d, addr, cmp, new })
    }

    pub fn shfl(&self, mode: ShflMode, val: V, lane: V, clamp: u32) -> V {
        let (val, lane) = (self.operand(val), self.operand(lane));
        self.effect(Ty::I32, |d| Inst::Shfl { mode, dst: d, val, lane, clamp })
    }

    pub fn barrier(&self) {
        self.push(Inst::Barrier);
    }

    pub fn sreg(&self, reg: SReg) -> V {
        self.effect(Ty::I32, |d| Inst::SReg { dst: d, reg })
    }

    pub fn sym_addr(&self, sym: Sym) -> V {
        let ty = match sym {
            Sym::Smem => Ty::I32,
            Sym::Str(_) | Sym::LocalDepot => Ty::I64,
        };
        self.effect(ty, |d| Inst::SymAddr { dst: d, sym })
    }

    /// A `space` address as a generic one.
    pub fn cvta(&self, space: Space, src: V) -> V {
        self.effect(Ty::I64, |d| Inst::Cvta { dst: d, src, space })
    }

    /// Inline PTX (see `Inst::Asm`): `outputs` are new registers or, for an accumulator updated
    /// in place, registers of the inputs they are tied to.
    pub fn asm(&self, template: &str, constraints: &str, outputs: Vec<V>, inputs: Vec<V>) {
        self.push(Inst::Asm { template: template.into(), constraints: constraints.into(), outputs, inputs });
    }

    /// Reserves `bytes` of this thread's local buffer; its byte offset.
    pub fn local(&self, bytes: u32, align: u32) -> u32 {
        let mut f = self.f.borrow_mut();
        let at = f.func.local_bytes.div_ceil(align) * align;
        f.func.local_bytes = at + bytes;
        f.func.local_align = f.func.local_align.max(align);
        at
    }

    /// A private constant string in global memory.
    pub fn global_string(&self, s: &str) -> Sym {
        let mut g = self.strings.borrow_mut();
        g.push(s.to_string());
        Sym::Str(g.len() - 1)
    }
}

/// The arithmetic a builder does, with constants folded.
impl Builder {
    /// `op` of two integers (or predicates) of the same type.
    pub fn int_bin(&self, op: IntOp, a: V, b: V) -> V {
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
            (IntOp::Mul | IntOp::And | IntOp::MulHiS | IntOp::MulHiU, Some(0), _)
            | (IntOp::Mul | IntOp::And | IntOp::MulHiS | IntOp::MulHiU, _, Some(0)) => return V::int(ty, 0),
            (IntOp::Or, Some(x), _) | (IntOp::Or, _, Some(x)) if x == ones => return V::int(ty, ones),
            (IntOp::Xor, Some(x), _) if x == ones => return self.not(b),
            (IntOp::Xor, _, Some(x)) if x == ones => return self.not(a),
            _ => {}
        }
        let raw = |op: IntOp, x: V, y: V| self.pure(ty, &[x, y], |dst, s| Inst::Int { op, dst, a: s[0], b: s[1] });
        if ty == Ty::Pred {
            let op = match op {
                IntOp::And | IntOp::Or => op,
                _ => IntOp::Xor,
            };
            return raw(op, a, b);
        }
        let norm = |v: V, signed: bool| if ty == Ty::I8 { self.norm8(v, signed) } else { v };
        match op {
            // A power of two is a shift (ptxas then fuses it into the add of an address).
            IntOp::Mul if matches!(b.imm(), Some(k) if k > 0 && k & (k - 1) == 0) => {
                self.int_bin(IntOp::Shl, a, V::int(ty, b.imm().unwrap_or(1).trailing_zeros() as i64))
            }
            IntOp::Mul if matches!(a.imm(), Some(k) if k > 0 && k & (k - 1) == 0) => self.int_bin(IntOp::Mul, b, a),
            IntOp::UDiv | IntOp::URem | IntOp::SDiv | IntOp::SRem
                if matches!(ty, Ty::I32 | Ty::I64)
                    && matches!(b.imm(), Some(d) if d != 0 && d != 1 && d != -1 && d.unsigned_abs() < 1 << 62) =>
            {
                self.div_by_constant(op, a, b.imm().unwrap_or(2))
            }
            IntOp::UDiv | IntOp::URem | IntOp::SDiv | IntOp::SRem if ty == Ty::I32 && self.varies_inside(a, b) => {
                self.div_by_invariant(op, a, b)
            }
            IntOp::UDiv | IntOp::URem => raw(op, norm(a, false), norm(b, false)),
            IntOp::SDiv | IntOp::SRem => raw(op, norm(a, true), norm(b, true)),
            IntOp::Shl | IntOp::LShr | IntOp::AShr => {
                // The shift amount is a u32.
                let amt = self.to_u32(b);
                let a = match op {
                    IntOp::LShr => norm(a, false),
                    IntOp::AShr => norm(a, true),
                    _ => a,
                };
                raw(op, a, amt)
            }
            _ => raw(op, a, b),
        }
    }

    /// The full product of two `I32`s as an `I64` (`mul.wide`).
    pub fn mul_wide(&self, signed: bool, a: V, b: V) -> V {
        self.pure(Ty::I64, &[a, b], |dst, s| Inst::MulWide { signed, dst, a: s[0], b: s[1] })
    }

    /// Division (or remainder) of a 32- or 64-bit `a` by a constant `d` (not 0 or ±1) as
    /// multiplications and shifts (Granlund and Montgomery, "Division by invariant integers using
    /// multiplication", figures 4.1 and 5.2).
    fn div_by_constant(&self, op: IntOp, a: V, d: i64) -> V {
        let ty = a.ty;
        let n = ty.bits();
        let c = |v: i64| V::int(ty, v);
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
                let t1 = self.int_bin(IntOp::MulHiU, a, c(m as i64));
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
                    let hi = self.int_bin(IntOp::MulHiS, a, c(m));
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

    /// Whether `a` varies in a loop that `b` (a register) is defined outside of.
    fn varies_inside(&self, a: V, b: V) -> bool {
        match (self.depth_of(a), self.depth_of(b)) {
            (Some(da), Some(db)) => da > db,
            _ => false,
        }
    }

    /// Division (or remainder) of the 32-bit `a` by `d`, a register defined outside the loop
    /// `a` varies in: Granlund and Montgomery's figure 4.1 with the multiplier and shifts
    /// computed at run time, where `d` is defined (`pure` places them there), so that the loop
    /// does a multiply-high, two shifts and two adds instead of a full division. Signed
    /// division divides the magnitudes and sets the sign (truncating, as `div.s32`).
    fn div_by_invariant(&self, op: IntOp, a: V, d: V) -> V {
        let i32c = |v: i64| V::int(Ty::I32, v);
        let signed = matches!(op, IntOp::SDiv | IntOp::SRem);
        let abs = |v: V| self.select(self.icmp(Cmp::Slt, v, i32c(0)), self.neg(v), v);
        let (n, dd) = if signed { (abs(a), abs(d)) } else { (a, d) };
        // Per divisor: l = ceil(log2 dd), m = floor(2^32 (2^l - dd) / dd) + 1 (32 bits),
        // shifts min(l, 1) and max(l - 1, 0).
        let clz = self.pure(Ty::I32, &[self.int_bin(IntOp::Sub, dd, i32c(1))], |dst, s| Inst::Clz { dst, a: s[0] });
        let l = self.int_bin(IntOp::Sub, i32c(32), clz);
        let d64 = self.int_cast(dd, Ty::I64, false);
        let pow = self.int_bin(IntOp::Shl, V::int(Ty::I64, 1), l);
        let num = self.int_bin(IntOp::Shl, self.int_bin(IntOp::Sub, pow, d64), V::int(Ty::I64, 32));
        let m = self.int_cast(self.int_bin(IntOp::Add, self.int_bin(IntOp::UDiv, num, d64), V::int(Ty::I64, 1)), Ty::I32, false);
        let sh1 = self.select(self.icmp(Cmp::Ne, l, i32c(0)), i32c(1), i32c(0));
        let sh2 = self.int_bin(IntOp::Sub, l, sh1);
        // In the loop.
        let t1 = self.int_bin(IntOp::MulHiU, n, m);
        let half = self.int_bin(IntOp::LShr, self.int_bin(IntOp::Sub, n, t1), sh1);
        let q = self.int_bin(IntOp::LShr, self.int_bin(IntOp::Add, t1, half), sh2);
        let q = if signed {
            let negative = self.icmp(Cmp::Slt, self.int_bin(IntOp::Xor, a, d), i32c(0));
            self.select(negative, self.neg(q), q)
        } else {
            q
        };
        match op {
            IntOp::UDiv | IntOp::SDiv => q,
            _ => self.int_bin(IntOp::Sub, a, self.int_bin(IntOp::Mul, q, d)),
        }
    }

    /// A conversion instruction.
    fn cvt(&self, to_ty: Ty, a: V, to: NumTy, from: NumTy, rnd: Option<Rnd>) -> V {
        self.pure(to_ty, &[a], |dst, s| Inst::Cvt { dst, src: s[0], to, from, rnd })
    }

    fn to_u32(&self, v: V) -> V {
        match (v.imm(), v.ty) {
            (Some(i), _) => V::int(Ty::I32, i),
            (None, Ty::I32) => v,
            (None, Ty::I64) => self.cvt(Ty::I32, v, NumTy::U32, NumTy::U64, None),
            (None, _) => self.cvt(Ty::I32, v, NumTy::U32, NumTy::U16, None),
        }
    }

    /// An 8-bit value with its register's upper byte set from it (sign or zero).
    fn norm8(&self, v: V, signed: bool) -> V {
        if let Some(i) = v.imm() {
            return V { ty: Ty::I8, k: K::Imm(if signed { i as i8 as i64 } else { i as u8 as i64 }) };
        }
        if signed {
            self.cvt(Ty::I8, v, NumTy::S16, NumTy::S8, None)
        } else {
            self.pure(Ty::I8, &[v, V::int(Ty::I16, 255)], |dst, s| Inst::Int { op: IntOp::And, dst, a: s[0], b: s[1] })
        }
    }

    /// Integer comparison.
    pub fn icmp(&self, p: Cmp, a: V, b: V) -> V {
        let ty = a.ty;
        if let (Some(x), Some(y)) = (a.imm(), b.imm()) {
            return V::int(Ty::Pred, eval_icmp(p, ty, x, y) as i64);
        }
        if ty == Ty::Pred {
            // Bools order false < true whatever the signedness asked for (as the constant
            // folding does): `a < b` is `!a & b`.
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
        self.pure(Ty::Pred, &[a, b], |dst, s| Inst::ICmp { cmp: p, dst, a: s[0], b: s[1] })
    }

    /// Float comparison (`FCmp::Une` and `Uno` are true on NaN).
    pub fn fcmp(&self, p: FCmp, a: V, b: V) -> V {
        if matches!(a.ty, Ty::F16 | Ty::BF16) {
            // Compared exactly in f32 (16-bit float compares need sm_90 for bf16).
            return self.fcmp(p, self.fcast(a, Ty::F32), self.fcast(b, Ty::F32));
        }
        if let (Some(x), Some(y)) = (a.float_imm(), b.float_imm()) {
            return V::int(Ty::Pred, eval_fcmp(p, x, y) as i64);
        }
        self.pure(Ty::Pred, &[a, b], |dst, s| Inst::FCmp { cmp: p, dst, a: s[0], b: s[1] })
    }

    /// `c ? a : b`.
    pub fn select(&self, c: V, a: V, b: V) -> V {
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
        self.pure(a.ty, &[a, b, c], |dst, s| Inst::Select { dst, c: s[2], a: s[0], b: s[1] })
    }

    pub fn not(&self, a: V) -> V {
        if let Some(i) = a.imm() {
            return V::int(a.ty, if a.ty == Ty::Pred { (i == 0) as i64 } else { !i });
        }
        self.pure(a.ty, &[a], |dst, s| Inst::Not { dst, a: s[0] })
    }

    pub fn neg(&self, a: V) -> V {
        if a.ty.is_float() {
            if let Some(x) = a.float_imm() {
                return V::float(a.ty, -x);
            }
        } else if let Some(i) = a.imm() {
            return V::int(a.ty, i.wrapping_neg());
        }
        self.pure(a.ty, &[a], |dst, s| Inst::Neg { dst, a: s[0] })
    }

    /// Integer width change: sign or zero extension, or truncation.
    pub fn int_cast(&self, a: V, to: Ty, signed: bool) -> V {
        if a.ty == to {
            return a;
        }
        if let Some(i) = a.imm() {
            let i = if signed { i } else { unsigned(a.ty, i) as i64 };
            return V::int(to, i);
        }
        if a.ty == Ty::Pred {
            return self.pure(to, &[V::int(to, if signed { -1 } else { 1 }), V::int(to, 0), a], |dst, s| Inst::Select {
                dst,
                c: s[2],
                a: s[0],
                b: s[1],
            });
        }
        if to == Ty::Pred {
            let low = self.int_bin(IntOp::And, a, V::int(a.ty, 1));
            return self.icmp(Cmp::Ne, low, V::int(a.ty, 0));
        }
        let from = match (a.ty, signed) {
            (Ty::I8, s) => NumTy::int(8, s),
            (t, s) => NumTy::int(t.class_bits(), s),
        };
        let dst = match to {
            Ty::I8 => NumTy::U16,
            t => NumTy::int(t.class_bits(), signed),
        };
        if a.ty.class_bits() == to.class_bits() {
            // i8 ↔ i16: the same register, extended from the low byte when widening.
            if to.bits() > a.ty.bits() {
                return self.cvt(to, a, dst, from, None);
            }
            return a.retype(to);
        }
        self.cvt(to, a, dst, from, None)
    }

    /// A bit cast between types of the same register width (free: the same register).
    pub fn bitcast(&self, a: V, to: Ty) -> V {
        a.retype(to)
    }

    /// Float arithmetic (round to nearest even; no contraction into FMA).
    pub fn fbin(&self, op: FOp, a: V, b: V) -> V {
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
                return V::float(ty, r);
            }
        }
        self.pure(ty, &[a, b], |dst, s| Inst::Float { op, dst, a: s[0], b: s[1] })
    }

    pub fn fma(&self, a: V, b: V, c: V) -> V {
        self.pure(a.ty, &[a, b, c], |dst, s| Inst::Fma { dst, a: s[0], b: s[1], c: s[2] })
    }

    /// A one-operand float instruction of `a`'s type.
    pub fn funary(&self, op: FUn, a: V) -> V {
        self.pure(a.ty, &[a], |dst, s| Inst::FUnary { op, dst, a: s[0] })
    }

    /// `|mag|` with the sign of `sign`.
    pub fn copysign(&self, mag: V, sign: V) -> V {
        self.pure(mag.ty, &[sign, mag], |dst, s| Inst::Copysign { dst, sign: s[0], mag: s[1] })
    }

    /// `f32` bits rounded to `tf32` (to nearest, ties away from zero), as an `I32`.
    pub fn to_tf32(&self, a: V) -> V {
        let a = self.materialize(a);
        self.effect(Ty::I32, |d| Inst::Cvt { dst: d, src: a, to: NumTy::TF32, from: NumTy::F32, rnd: Some(Rnd::Rna) })
    }

    /// Float width change (widening exact, narrowing to nearest even).
    pub fn fcast(&self, a: V, to: Ty) -> V {
        if a.ty == to {
            return a;
        }
        if let Some(x) = a.float_imm() {
            return V::float(to, x);
        }
        let (nt, nf) = (NumTy::float(to), NumTy::float(a.ty));
        match (a.ty, to) {
            // bf16 → f32 is the bits shifted up.
            (Ty::BF16, Ty::F32) if self.target == Target::Sm80 => {
                let w = self.cvt(Ty::I32, a.retype(Ty::I16), NumTy::U32, NumTy::U16, None);
                self.pure(Ty::I32, &[w, V::int(Ty::I32, 16)], |dst, s| Inst::Int { op: IntOp::Shl, dst, a: s[0], b: s[1] }).retype(Ty::F32)
            }
            (Ty::BF16, Ty::F64) => {
                let f = self.fcast(a, Ty::F32);
                self.fcast(f, Ty::F64)
            }
            (Ty::F64, Ty::BF16) if self.target == Target::Sm80 => {
                // Through f32 rounded to odd (see `int_to_float`).
                let rz = self.cvt(Ty::F32, a, NumTy::F32, NumTy::F64, Some(Rnd::Rz));
                let back = self.cvt(Ty::F64, rz, NumTy::F64, NumTy::F32, None);
                let inexact = self.fcmp(FCmp::Une, back, a);
                let odd = self.int_bin(IntOp::Or, rz.retype(Ty::I32), V::int(Ty::I32, 1)).retype(Ty::F32);
                let odd = self.select(self.fcmp(FCmp::Uno, a, a), rz, odd);
                self.fcast(self.select(inexact, odd, rz), Ty::BF16)
            }
            _ if to.bits() > a.ty.bits() => self.cvt(to, a, nt, nf, None),
            _ => self.cvt(to, a, nt, nf, Some(Rnd::Rn)),
        }
    }

    /// Integer → float, rounding to nearest even.
    pub fn int_to_float(&self, a: V, to: Ty, signed: bool) -> V {
        if to == Ty::BF16 && self.target == Target::Sm80 {
            // No integer → bf16 conversion before sm_90: to f32 rounded to odd, then to bf16
            // (exact: f32 has more than two extra bits, so the two roundings are one).
            let a = if a.ty.class_bits() < 32 { self.int_cast(a, Ty::I32, signed) } else { a };
            let src = NumTy::int(a.ty.class_bits(), signed);
            let rz = self.cvt(Ty::F32, a, NumTy::F32, src, Some(Rnd::Rz));
            let back = self.cvt(a.ty, rz, src, NumTy::F32, Some(Rnd::Rzi));
            let inexact = self.icmp(Cmp::Ne, back, a);
            let odd = self.int_bin(IntOp::Or, rz.retype(Ty::I32), V::int(Ty::I32, 1)).retype(Ty::F32);
            return self.fcast(self.select(inexact, odd, rz), Ty::BF16);
        }
        let a = match a.ty {
            Ty::I8 => self.norm8(a, signed),
            Ty::Pred => self.int_cast(a, Ty::I32, false),
            _ => a,
        };
        let src = NumTy::int(a.ty.class_bits(), signed);
        self.cvt(to, a, NumTy::float(to), src, Some(Rnd::Rn))
    }

    /// Float → integer, truncating, saturated to the range (NaN gives 0): PTX's `cvt.rzi`.
    pub fn float_to_int(&self, a: V, to: Ty, signed: bool) -> V {
        let dst = match to {
            Ty::I8 => NumTy::int(8, signed),
            t => NumTy::int(t.class_bits(), signed),
        };
        self.cvt(to, a, dst, NumTy::float(a.ty), Some(Rnd::Rzi))
    }

    /// Packs registers into one wider one, lowest first.
    pub fn pack(&self, parts: &[V], to: Ty) -> V {
        let regs: Vec<V> = parts.iter().map(|&p| self.materialize(p)).collect();
        let (b, d) = self.placement(parts);
        let dst = {
            let mut f = self.f.borrow_mut();
            Self::new_reg(&mut f, to, d)
        };
        self.push_to(b, Inst::Pack { dst, parts: regs });
        dst
    }

    /// Splits a register into `n` parts of type `part`, lowest first.
    pub fn unpack(&self, v: V, n: usize, part: Ty) -> Vec<V> {
        let v = self.materialize(v);
        if part == Ty::I8 {
            // Bytes: shifted out one by one (there are no 8-bit registers).
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
        self.push_to(b, Inst::Unpack { dsts: parts.clone(), src: v });
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

/// The bits of a constant of `ty` as an unsigned number.
pub fn unsigned(ty: Ty, v: i64) -> u64 {
    match ty.bits() {
        1 => v as u64 & 1,
        8 => v as u8 as u64,
        16 => v as u16 as u64,
        32 => v as u32 as u64,
        _ => v as u64,
    }
}

/// `op` of two constants of `ty` (sign-extended), as the instruction computes it; `None` where
/// the folding is left to the instruction (division by zero, shifts past the width).
pub fn fold_int(op: IntOp, ty: Ty, x: i64, y: i64) -> Option<i64> {
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
        IntOp::Shl => ((ux << sh(uy)?) & super::mask(bits)) as i64,
        IntOp::LShr => (ux >> sh(uy)?) as i64,
        IntOp::AShr => x >> sh(uy)?,
        _ => return None,
    })
}

/// An integer comparison of two constants of `ty` (sign-extended).
pub fn eval_icmp(p: Cmp, ty: Ty, x: i64, y: i64) -> bool {
    let (ux, uy) = (unsigned(ty, x), unsigned(ty, y));
    match p {
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
    }
}

/// A float comparison.
pub fn eval_fcmp(p: FCmp, x: f64, y: f64) -> bool {
    match p {
        FCmp::Oeq => x == y,
        FCmp::Une => x != y,
        FCmp::Olt => x < y,
        FCmp::Ole => x <= y,
        FCmp::Ogt => x > y,
        FCmp::Oge => x >= y,
        FCmp::Uno => x.is_nan() || y.is_nan(),
        FCmp::Ord => !x.is_nan() && !y.is_nan(),
    }
}
