//! Thread IR → machine IR (`mir`), which the emitters (`emit`) turn into PTX.
//!
//! Each thread-IR tile becomes, per thread, the list of values of the elements that thread
//! holds (its "registers", in the layout's order); tensors become a 64-bit address with i32 sizes
//! and i64 strides. Structured control flow becomes loops and diamonds whose phis are register
//! copies. Element addresses, bounds masks and shared-memory offsets are computed from the
//! layout, per register, through `fold` (which builds each distinct value once); the builder
//! (`mir::builder`) folds constants and moves loop-invariant arithmetic out of loops.

mod control;
mod fold;
mod indexed;
mod math;
mod memory;
mod mma;
mod reduce;
mod scan;
mod shuffle;
mod tma;
mod wgmma;

use crate::Target;
use crate::abi::Slot;
use crate::diag::Diagnostic;
use crate::dtype::DType;
use crate::ir::FastMap as HashMap;
use crate::ir::{Block, Value};
use crate::lir::{self, Layout, OpKind};
use crate::mir::builder::Builder;
use crate::mir::{Addr, Blk, Cmp, FCmp, MemTy, SReg, Space, Sym, Ty, V};
use crate::tir::{self, BinaryOp, CmpOp, ReduceOp, row_major};
use std::cell::RefCell;

type Res<T> = Result<T, String>;

/// An element-by-element window copy's device function: dtype, shape, swizzle and direction.
type SlowCopyKey = (DType, Vec<i64>, bool, mma::Toward);

/// The body of a counted loop: (generator, induction variable, carried values) → next values.
type LoopBody<'a, 'm> = &'a mut dyn FnMut(&mut Gen<'m>, V, &[V]) -> Res<Vec<V>>;

/// Builds the machine IR of one kernel.
pub fn codegen(k: &lir::Kernel, target: Target) -> Result<crate::mir::Module, Diagnostic> {
    let mut g = Gen::new(k, target);
    g.kernel().map_err(|e| Diagnostic::ice("codegen", e))?;
    // `setmaxnreg` needs ptxas to know the registers at entry: one block per multiprocessor.
    let blocks_per_sm = if k.ws.is_some() { Some(k.blocks_per_sm.unwrap_or(1)) } else { k.blocks_per_sm };
    Ok(g.b.finish(&k.name, k.launch_threads(), blocks_per_sm))
}

/// A memory address: a register (or constant) in an address space (32 bits in shared memory,
/// 64 in global memory).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Ptr {
    pub(crate) at: V,
    pub(crate) space: Space,
}

#[derive(Clone)]
pub(crate) enum Cv {
    /// The elements this thread holds, in register order.
    Regs(Vec<V>),
    Tensor {
        /// The global address of element 0.
        ptr: V,
        sizes: Vec<V>,
        strides: Vec<V>,
    },
}

pub(crate) struct Gen<'m> {
    pub(crate) b: Builder,
    pub(crate) k: &'m lir::Kernel,
    pub(crate) vals: HashMap<Value, Cv>,
    pub(crate) tid: V,
    /// The shared-memory window address of `tessera_smem` (32 bits).
    smem: V,
    /// Whether the async proxy reads shared memory that threads wrote (a `local_mma` running as
    /// `wgmma`, a `tma_store`): barriers that publish shared-memory writes also fence the proxies.
    async_proxy_reads: bool,
    /// Integer instructions built by the `fold` helpers, by block, operation and operands.
    cse: RefCell<HashMap<fold::CseKey, V>>,
    /// `v → (x, k)` for each `v = x + k` (constant `k`) built by `fold::add`.
    plus_const: RefCell<HashMap<u128, (V, i64)>>,
    /// What is known of index values (`fold::Facts`).
    facts: RefCell<HashMap<u128, fold::Facts>>,
    /// `v → x` for each `v = sext(x)` (i32 to i64) built by `fold::sext`.
    sexts: RefCell<HashMap<u128, V>>,
    /// The compares built by `fold::icmp`: `v → (predicate, a, b)`.
    cmps: RefCell<HashMap<u128, (Cmp, V, V)>>,
    /// `v → (x, y)` for each `v = x + y` of two variables built by `fold::add`.
    sums: RefCell<HashMap<u128, (V, V)>>,
    /// The values built once in the entry block (`fold::hoisted`).
    hoist: RefCell<HashMap<fold::HoistKey, V>>,
    /// How many ops use each value (accumulators used once are updated in place).
    uses: HashMap<Value, u32>,
    /// Special registers read (once, in the entry block).
    sregs: RefCell<HashMap<SReg, V>>,
    /// How many loops enclose the code being built.
    loop_depth: std::cell::Cell<u32>,
    /// The device functions of the element-by-element window copies, by dtype, shape, swizzle
    /// and direction (`async_copy`'s slow path, `tma_store`'s fallback).
    slow_copies: HashMap<SlowCopyKey, crate::mir::Callee>,
    /// With tensor maps (`lir::Kernel::tensor_maps`): whether the runtime encoded them (a
    /// predicate), and each one's machine parameter (its address is taken where it is used).
    pub(crate) maps_ready: Option<V>,
    pub(crate) tensor_map_params: Vec<usize>,
    /// Tensors that are views of a parameter: the parameter and the indices the views fix.
    pub(crate) roots: HashMap<Value, (usize, Vec<V>)>,
    /// In a warp-specialised kernel's consumer code: the consumer threads (barriers are named).
    consumers: Option<u32>,
    /// In its producer region: the thread's index within the producer warpgroup.
    pub(crate) producer: Option<V>,
}

/// The named barrier of a warp-specialised kernel's consumers (0 is `bar.sync 0`'s).
const CONSUMER_BARRIER: u32 = 1;
/// The named barrier of its producer warpgroup.
const PRODUCER_BARRIER: u32 = 2;
/// The first of its two consumer warpgroups' turn barriers (`lir::TurnStep`).
const TURN_BARRIER: u32 = 3;

impl<'m> Gen<'m> {
    fn new(k: &'m lir::Kernel, target: Target) -> Gen<'m> {
        let b = Builder::new(target);
        let mut async_proxy_reads = false;
        k.body.walk(k.body.entry, &mut |op| {
            async_proxy_reads |= matches!(
                k.body.op(op).kind,
                OpKind::LocalMma { wgmma: true, .. } | OpKind::RegMma { wgmma: true, .. } | OpKind::TmaStore { .. }
            )
        });
        let mut uses: HashMap<Value, u32> = HashMap::default();
        k.body.walk(k.body.entry, &mut |op| {
            for &o in &k.body.op(op).operands {
                *uses.entry(o).or_default() += 1;
            }
        });
        let tid = b.sreg(SReg::Tid);
        let smem = b.sym_addr(Sym::Smem);
        b.set_uniform(smem);
        let body = b.block("body");
        b.br(body);
        b.position(body);
        Gen {
            b,
            k,
            vals: HashMap::default(),
            tid,
            smem,
            async_proxy_reads,
            cse: RefCell::default(),
            plus_const: RefCell::default(),
            sums: RefCell::default(),
            cmps: RefCell::default(),
            facts: RefCell::default(),
            sexts: RefCell::default(),
            hoist: RefCell::default(),
            uses,
            sregs: RefCell::default(),
            loop_depth: Default::default(),
            slow_copies: HashMap::default(),
            maps_ready: None,
            tensor_map_params: vec![],
            roots: HashMap::default(),
            consumers: None,
            producer: None,
        }
    }

    /// Reads the next kernel parameter (in the entry block). `pointee`: for a tensor's pointer,
    /// its element size (declared with the parameter, so a loader can check the dtype).
    fn param(&mut self, ty: Ty, pointee: Option<u32>) -> V {
        self.b.param_with(ty, pointee)
    }

    fn kernel(&mut self) -> Res<()> {
        let entry = self.k.body.entry;
        // The machine parameters, in the ABI's order, grouped back into the tile parameters.
        // (pointer, sizes, strides) of each tensor parameter.
        type Parts = (V, Vec<V>, Vec<V>);
        let mut tensors: Vec<Option<Parts>> = vec![None; self.k.params.len()];
        for slot in crate::abi::slots(&self.k.params, &self.k.tensor_maps) {
            match slot {
                Slot::MapsReady => {
                    let x = self.param(Ty::I32, None);
                    self.maps_ready = Some(self.b.at_entry(|| self.b.icmp(Cmp::Ne, x, V::int(Ty::I32, 0))));
                    continue;
                }
                Slot::TensorMap { .. } => {
                    let a = self.b.param_by_value(crate::abi::TENSOR_MAP_BYTES, crate::abi::TENSOR_MAP_ALIGN);
                    self.tensor_map_params.push(a);
                    continue;
                }
                _ => {}
            }
            let v = self.k.body.block(entry).args[slot.param().ok_or("a parameter slot without its parameter")?];
            match slot {
                Slot::Ptr { param, elem_bytes } => {
                    let ptr = self.param(Ty::I64, Some(elem_bytes));
                    *tensors.get_mut(param).ok_or("a slot of no parameter")? = Some((ptr, vec![], vec![]));
                }
                Slot::Size { param, .. } => {
                    let x = self.param(Ty::I32, None);
                    tensors.get_mut(param).and_then(|t| t.as_mut()).ok_or("a size before its pointer")?.1.push(x);
                }
                Slot::Stride { param, .. } => {
                    let x = self.param(Ty::I64, None);
                    tensors.get_mut(param).and_then(|t| t.as_mut()).ok_or("a stride before its pointer")?.2.push(x);
                }
                Slot::Scalar { dtype, .. } => {
                    let x = self.param(reg_type(dtype), None);
                    let x = if dtype == DType::Bool { self.b.at_entry(|| self.b.icmp(Cmp::Ne, x, V::int(Ty::I8, 0))) } else { x };
                    self.vals.insert(v, Cv::Regs(vec![x]));
                }
                Slot::MapsReady | Slot::TensorMap { .. } => {}
            }
        }
        for (param, t) in tensors.into_iter().enumerate() {
            let Some((ptr, sizes, strides)) = t else { continue };
            let v = self.k.body.block(entry).args[param];
            self.vals.insert(v, Cv::Tensor { ptr, sizes, strides });
            self.roots.insert(v, (param, vec![]));
        }
        self.note(self.tid, Some(fold::Facts { lo: 0, hi: self.k.threads as i64 - 1, align: 1 }));
        self.region(entry)?;
        self.b.ret();
        Ok(())
    }

    // ---- helpers -----------------------------------------------------------------------------

    pub(crate) fn i32c(&self, v: i64) -> V {
        V::int(Ty::I32, v)
    }

    fn i64c(&self, v: i64) -> V {
        V::int(Ty::I64, v)
    }

    /// A special register (`%ctaid.x`, …), read once in the entry block.
    pub(crate) fn sreg(&self, name: SReg) -> V {
        if let Some(&v) = self.sregs.borrow().get(&name) {
            return v;
        }
        let v = self.b.at_entry(|| self.b.sreg(name));
        // Block indices and counts are the same in every thread of the block.
        self.b.set_uniform(v);
        self.note(v, Some(fold::Facts { lo: 0, hi: i32::MAX as i64, align: 1 }));
        self.sregs.borrow_mut().insert(name, v);
        v
    }

    /// Inline PTX with LLVM-style operands (see `mir::Inst::Asm`): `$i` in `text` names operand
    /// `i` of `constraints` (outputs `=r`/`=&r`/`=l`/`=f`/`=h`/`=d` first, then the inputs `args`:
    /// `r`, `l`, `h`, `f`, `d` or the number of the output it is tied to). Returns the outputs;
    /// it stays where it is written (never hoisted). With `in_place`, an input tied to an output
    /// that is a register of this loop iteration (or of a loop that has ended: a loop's results)
    /// becomes that output (no copy: the caller knows the input is not used after).
    /// Accumulators of `mma.sync` and `wgmma` pass so: a copy of a `wgmma` accumulator before its
    /// wait would make ptxas serialise the pipeline.
    pub(crate) fn inline_asm(&self, text: &str, constraints: &str, args: &[V], in_place: bool) -> Res<Vec<V>> {
        let mut outs: Vec<V> = vec![];
        let mut inputs: Vec<V> = vec![];
        let mut ai = 0;
        for c in constraints.split(',') {
            let c = c.trim();
            if c.starts_with('~') || c.is_empty() {
                continue;
            }
            if let Some(o) = c.strip_prefix('=') {
                let ty = match o.trim_start_matches('&') {
                    "r" => Ty::I32,
                    "l" => Ty::I64,
                    "h" => Ty::I16,
                    "f" => Ty::F32,
                    "d" => Ty::F64,
                    other => return Err(format!("inline asm output constraint `{other}`")),
                };
                outs.push(self.b.fresh(ty));
                continue;
            }
            let a = *args.get(ai).ok_or_else(|| format!("inline asm `{text}`: too few operands"))?;
            ai += 1;
            if let Ok(tied) = c.parse::<usize>() {
                let out = *outs.get(tied).ok_or("inline asm tied to a missing output")?;
                if in_place
                    && a.imm().is_none()
                    && self.b.depth_of(a).is_some_and(|d| d >= self.b.loop_level())
                    && a.ty.class_bits() == out.ty.class_bits()
                {
                    // The accumulator is updated in its own register.
                    outs[tied] = a.retype(out.ty);
                } else if a != out {
                    let a = self.b.materialize(a);
                    self.b.mov(out, a.retype(out.ty));
                }
                inputs.push(outs[tied]);
                continue;
            }
            inputs.push(self.b.materialize(a));
        }
        if ai != args.len() {
            return Err(format!("inline asm `{text}`: {} operands for {ai} constraints", args.len()));
        }
        self.b.asm(text, constraints, outs.clone(), inputs);
        Ok(outs)
    }

    /// Whether the registers `regs` of `v` may be overwritten by the op that uses `v`: it is
    /// used by that op only, and no register holds two of its elements.
    pub(crate) fn in_place_ok(&self, v: Value, regs: &[V]) -> bool {
        let mut seen = std::collections::HashSet::new();
        self.uses.get(&v).copied().unwrap_or(0) <= 1 && regs.iter().all(|r| r.imm().is_some() || seen.insert(*r))
    }

    /// `bar.sync 0`; after a warp-specialised kernel's split, the consumers' named barrier
    /// (the producer warpgroup never reaches it).
    pub(crate) fn barrier(&self) {
        match self.consumers {
            Some(n) => {
                let text = format!("bar.sync {CONSUMER_BARRIER}, {n};");
                // An asm statement with operands never fails to build.
                let _ = self.inline_asm(&text, "~{memory}", &[], false);
            }
            None => self.b.barrier(),
        }
    }

    pub(crate) fn regs(&self, v: Value) -> Res<Vec<V>> {
        match self.vals.get(&v) {
            Some(Cv::Regs(r)) => Ok(r.clone()),
            Some(Cv::Tensor { .. }) => Err(format!("{v} is a tensor, expected a tile")),
            None => Err(format!("{v} has no value")),
        }
    }

    fn ty(&self, v: Value) -> &lir::Type {
        self.k.body.ty(v)
    }

    fn nregs(&self, t: &lir::Type) -> usize {
        match t.layout() {
            Some(l) => l.regs(t.shape(), self.k.threads),
            None => 0,
        }
    }

    /// The row-major linear index of register `r` of this thread in a tile of type `t`.
    pub(crate) fn linear(&self, t: &lir::Type, r: usize) -> Res<V> {
        let n = t.numel();
        match t.layout() {
            Some(layout @ Layout::Blocked { .. }) => {
                if n < self.k.threads as i64 {
                    return self.hoisted(("blocked.rep", vec![n]), |g| g.and(g.tid, g.i32c(n - 1)));
                }
                let (base, mul) = layout.linear(n, self.k.threads, r);
                let t0 = self.hoisted(("blocked.t", vec![mul]), |g| g.mulc(g.tid, mul))?;
                self.addc(t0, base)
            }
            Some(Layout::Mma { warps_m, warps_n }) => {
                let [row, col] = self.mma_row_col(t.shape(), warps_m, warps_n, r)?;
                self.add(self.mulc(row, t.shape().last().copied().unwrap_or(1))?, col)
            }
            // `[m]` or `[m, 1]`: the linear index is the row.
            Some(Layout::MmaRows { .. }) => Ok(self.coords(t, r)?[0]),
            // `[n]` or `[1, n]`: the linear index is the column.
            Some(Layout::MmaCols { .. }) => self.coords(t, r)?.last().copied().ok_or_else(|| "a scalar in #mma_cols".into()),
            None => Err("linear index of a tensor".into()),
        }
    }

    /// The coordinates of register `r` of this thread.
    pub(crate) fn coords(&self, t: &lir::Type, r: usize) -> Res<Vec<V>> {
        match t.layout() {
            Some(Layout::Mma { warps_m, warps_n }) => return self.mma_coords(t.shape(), warps_m, warps_n, r),
            Some(Layout::MmaRows { warps_m }) => return self.mma_row_coords(t.shape(), warps_m, r),
            Some(Layout::MmaCols { warps_m, warps_n }) => return self.mma_col_coords(t.shape(), warps_m, warps_n, r),
            _ => {}
        }
        let shape = t.shape();
        let strides = row_major(shape);
        if let Some(layout @ Layout::Blocked { .. }) = t.layout()
            && t.numel() >= self.k.threads as i64
        {
            // Register `r` is at `tid · vec + k + e` (`k` a multiple of `threads · vec`, `e <
            // vec`): where no carry crosses a coordinate, each coordinate is the thread's own
            // (built once) plus a constant.
            let (base, vec) = layout.linear(t.numel(), self.k.threads, r);
            let (k, e) = (base - base % vec, base % vec);
            let mut out = vec![];
            for (i, (&d, &s)) in shape.iter().zip(&strides).enumerate() {
                match self.blocked_coord(vec, k, e, s, if i == 0 { None } else { Some(d) })? {
                    Some(c) => out.push(c),
                    None => break,
                }
            }
            if out.len() == shape.len() {
                return Ok(out);
            }
        }
        let l = self.linear(t, r)?;
        let mut out = vec![];
        for (i, &d) in shape.iter().enumerate() {
            let q = self.udivc(l, strides[i])?;
            out.push(if i == 0 { q } else { self.uremc(q, d)? });
        }
        Ok(out)
    }

    /// `((tid · vec + k + e) / s) % d` (no `% d` for `None`) when it is a thread value plus a
    /// constant (see `coords`), else `None`.
    fn blocked_coord(&self, vec: i64, k: i64, e: i64, s: i64, d: Option<i64>) -> Res<Option<V>> {
        let t0 = self.hoisted(("blocked.t", vec![vec]), |g| g.mulc(g.tid, vec))?;
        if s == 1 {
            return match d {
                None => Ok(Some(self.addc(t0, k + e)?)),
                // `tid · vec % d` is a multiple of `vec` below `d`: adding `e` does not wrap.
                Some(d) if k % d == 0 && d % vec == 0 => {
                    let m = self.hoisted(("blocked.mod", vec![vec, 1, d]), |g| g.uremc(t0, d))?;
                    Ok(Some(self.addc(m, e)?))
                }
                Some(_) => Ok(None),
            };
        }
        if s % vec != 0 || k % s != 0 {
            return Ok(None);
        }
        // `(tid · vec) % s` is a multiple of `vec` below `s`: adding `e` does not carry.
        let q = self.hoisted(("blocked.div", vec![vec, s]), |g| g.udivc(t0, s))?;
        match d {
            None => Ok(Some(self.addc(q, k / s)?)),
            Some(d) if (k / s) % d == 0 => Ok(Some(self.hoisted(("blocked.mod", vec![vec, s, d]), |g| g.uremc(q, d))?)),
            Some(_) => Ok(None),
        }
    }

    /// The 32-bit shared-memory address of a byte offset, for inline asm (`ldmatrix`,
    /// `cp.async`): shared addresses fit in 32 bits.
    pub(crate) fn smem_addr32(&self, byte_offset: V) -> Res<V> {
        self.add(self.smem, byte_offset)
    }

    /// The shared-memory address of a byte offset.
    pub(crate) fn smem_ptr(&self, byte_offset: V) -> Res<Ptr> {
        Ok(Ptr { at: self.smem_addr32(byte_offset)?, space: Space::Shared })
    }

    /// `p` plus `bytes`.
    pub(crate) fn ptr_add(&self, p: Ptr, bytes: V) -> Res<Ptr> {
        let bytes = if p.space == Space::Shared { bytes } else { self.sext(bytes, Ty::I64)? };
        Ok(Ptr { at: self.add(p.at, bytes)?, space: p.space })
    }

    /// `p` plus a constant number of bytes.
    pub(crate) fn ptr_addc(&self, p: Ptr, bytes: i64) -> Res<Ptr> {
        Ok(Ptr { at: self.addc(p.at, bytes)?, space: p.space })
    }

    /// The address of element `idx` (i64) of `d` from `ptr`. The scaling distributes over the
    /// sums `fold::add` built, in an order that shares work: first the terms that vary per
    /// thread but not in the current loop (their part of the address is built once, outside
    /// it), then those that vary in it, then the ones the same in every thread (per-register
    /// offsets such as `k · stride`, which ptxas keeps in uniform registers), constants last.
    pub(crate) fn gep(&self, ptr: V, idx: V, d: DType) -> Res<Ptr> {
        let size = d.size() as i64;
        let mut terms = vec![];
        let mut k = 0i64;
        self.terms(idx, &mut terms, &mut k, 0);
        let here = self.b.loop_level();
        let rank = |v: &V| match (self.b.is_uniform(*v), self.b.depth_of(*v).unwrap_or(0) < here) {
            (false, true) => 0,
            (false, false) => 1,
            (true, _) => 2,
        };
        terms.sort_by_key(rank);
        let mut p = ptr;
        for t in terms {
            p = self.add(p, self.mul_wide(t, size)?)?;
        }
        Ok(Ptr { at: self.addc(p, k.wrapping_mul(size))?, space: Space::Global })
    }

    /// The summands of `v` (as `fold::add` built it) and its constant part.
    fn terms(&self, v: V, out: &mut Vec<V>, k: &mut i64, depth: u32) {
        if let Some(c) = v.imm() {
            *k = k.wrapping_add(c);
        } else if let Some((x, c)) = self.split_const(v) {
            *k = k.wrapping_add(c);
            self.terms(x, out, k, depth + 1);
        } else if let (Some((a, b)), true) = (self.sum_of(v), depth < 16) {
            self.terms(a, out, k, depth + 1);
            self.terms(b, out, k, depth + 1);
        } else {
            out.push(v);
        }
    }

    /// `sext(idx)` to i64 where `idx` is known to be in `[0, 2^31)` (a window inside its
    /// tensor): `sext(x) + k` where it was built as `x + k`, so that registers share `x`.
    pub(crate) fn sext_in_range(&self, idx: V) -> Res<V> {
        match self.split_const(idx) {
            Some((x, k)) if (0..1 << 30).contains(&k) => self.addc(self.sext(x, Ty::I64)?, k),
            _ => self.sext(idx, Ty::I64),
        }
    }

    /// `x + k` of an address built as `x + k` (the constant in the instruction).
    pub(crate) fn address(&self, p: V) -> Addr {
        match self.split_const(p) {
            Some((x, k)) if (-(1 << 31)..1 << 31).contains(&k) => Addr { base: x, offset: k },
            _ => Addr { base: p, offset: 0 },
        }
    }

    pub(crate) fn load_mem(&self, ptr: Ptr, d: DType) -> Res<V> {
        let ty = mem_reg_type(d);
        let v = self.b.load(ptr.space, crate::mir::Sem::Weak, MemTy::of(ty), ty, 1, self.address(ptr.at))[0];
        if d == DType::Bool {
            return Ok(self.b.icmp(Cmp::Ne, v, V::int(Ty::I8, 0)));
        }
        Ok(v)
    }

    pub(crate) fn store_mem(&self, ptr: Ptr, v: V, d: DType) -> Res<()> {
        let v = if d == DType::Bool { self.b.int_cast(v, Ty::I8, false) } else { v };
        self.b.store(ptr.space, MemTy::of(v.ty), &[v], self.address(ptr.at), None);
        Ok(())
    }

    pub(crate) fn block(&self, name: &str) -> Blk {
        self.b.block(name)
    }

    /// A do-while loop `for j in 0..n` (n ≥ 1) carrying `inits`; `body` gives the next values.
    pub(crate) fn counted_loop(&mut self, n: i64, inits: Vec<V>, body: LoopBody<'_, 'm>) -> Res<Vec<V>> {
        let pre = self.b.current();
        let lp = self.block("loop");
        let exit = self.block("loop_end");
        self.b.br(lp);
        self.b.enter_loop();
        self.b.position(lp);
        let j = self.b.phi(Ty::I32);
        let phis: Vec<V> = inits.iter().map(|v| self.b.phi(v.ty)).collect();
        self.b.incoming(j, self.i32c(0), pre);
        for (p, init) in phis.iter().zip(&inits) {
            self.b.incoming(*p, *init, pre);
        }
        self.loop_depth.set(self.loop_depth.get() + 1);
        let next = body(self, j, &phis);
        self.loop_depth.set(self.loop_depth.get() - 1);
        let next = next?;
        let j1 = self.b.int_bin(crate::mir::IntOp::Add, j, self.i32c(1));
        let cont = self.b.icmp(Cmp::Slt, j1, self.i32c(n));
        let end = self.b.current();
        self.b.incoming(j, j1, end);
        for (p, nx) in phis.iter().zip(&next) {
            self.b.incoming(*p, *nx, end);
        }
        self.b.cond_br(cont, lp, exit);
        self.b.exit_loop();
        self.b.position(exit);
        Ok(next)
    }

    // ---- ops ---------------------------------------------------------------------------------

    /// Lowers a block's ops; returns the operands of its `yield`, if any.
    fn region(&mut self, blk: Block) -> Res<Vec<Cv>> {
        let body = &self.k.body;
        for &op in &body.block(blk).ops {
            let d = body.op(op);
            if let OpKind::Tir(tir::OpKind::Yield) = d.kind {
                return d.operands.iter().map(|o| self.vals.get(o).cloned().ok_or_else(|| format!("{o} has no value"))).collect();
            }
            let results = self.op(op)?;
            for (&r, v) in d.results.iter().zip(results) {
                self.vals.insert(r, v);
            }
        }
        Ok(vec![])
    }

    fn op(&mut self, op: crate::ir::Op) -> Res<Vec<Cv>> {
        let body = &self.k.body;
        let d = body.op(op);
        let rt = d.results.first().map(|&r| body.ty(r).clone());
        let one = |regs: Vec<V>| Ok(vec![Cv::Regs(regs)]);
        match &d.kind {
            OpKind::WgmmaWait { pending } => {
                let accs = self.regs(d.operands[0])?;
                // The wait changes no value: its registers may be reused even when the operand
                // is read again (a copy would read registers a `wgmma` group may still own, which
                // makes ptxas serialise the kernel's `wgmma`s).
                let mut seen = std::collections::HashSet::new();
                let in_place = accs.iter().all(|r| r.imm().is_none() && seen.insert(*r));
                Ok(vec![Cv::Regs(self.wgmma_wait(&accs, in_place, *pending)?)])
            }
            OpKind::Barrier => {
                if self.async_proxy_reads {
                    self.proxy_fence()?;
                }
                self.barrier();
                Ok(vec![])
            }
            OpKind::Reshape => {
                let v = self.vals.get(&d.operands[0]).cloned().ok_or("reshape of an undefined value")?;
                Ok(vec![v])
            }
            OpKind::LocalStore { offset, swizzled } => {
                let x = d.operands[0];
                let t = self.ty(x).clone();
                let regs = self.regs(x)?;
                let size = t.dtype().size() as i64;
                // An MMA layout's register pairs are adjacent columns: one 32-bit store each.
                let pairs = size == 2
                    && t.shape().len() == 2
                    && regs.len() % 2 == 0
                    && t.layout().is_some_and(|l| {
                        (0..regs.len()).step_by(2).all(|r| {
                            matches!((l.mma_reg_offset(t.shape(), r), l.mma_reg_offset(t.shape(), r + 1)),
                                (Some((r0, c0)), Some((r1, c1))) if r1 == r0 && c1 == c0 + 1 && c0 % 2 == 0)
                        })
                    });
                let step = if pairs { 2 } else { 1 };
                for (r, v) in regs.chunks(step).enumerate().map(|(i, c)| (i * step, c)) {
                    let off = if *swizzled && t.shape().len() == 2 {
                        let c = self.coords(&t, r)?;
                        self.smem_offset_2d(c[0], c[1], crate::lir::index::SmemTile::new(t.shape()[0], t.shape()[1], size, true))?
                    } else {
                        self.mulc(self.linear(&t, r)?, size)?
                    };
                    let off = self.addc(off, *offset as i64)?;
                    let p = self.smem_ptr(off)?;
                    match v {
                        [v] => self.store_mem(p, *v, t.dtype())?,
                        _ => self.vector_store(p, v, t.dtype())?,
                    }
                }
                Ok(vec![])
            }
            OpKind::LocalLoad { offset, strides } => {
                let t = rt.ok_or("local_load without result")?;
                let size = t.dtype().size() as i64;
                let mut out = vec![];
                for r in 0..self.nregs(&t) {
                    let c = self.coords(&t, r)?;
                    let mut idx = self.i32c(0);
                    for (ci, &s) in c.iter().zip(strides) {
                        idx = self.add(idx, self.mulc(*ci, s)?)?;
                    }
                    let off = self.addc(self.mulc(idx, size)?, *offset as i64)?;
                    let p = self.smem_ptr(off)?;
                    out.push(self.load_mem(p, t.dtype())?);
                }
                one(out)
            }
            OpKind::LocalReduce { offset, op: rop, axis, src_shape, dtype } => {
                self.local_reduce(rt.ok_or("reduce without result")?, *offset, *rop, *axis as usize, src_shape, *dtype)
            }
            OpKind::LocalDot { a_offset, b_offset, k, dtype } => {
                let acc = d.operands[0];
                self.local_dot(rt.ok_or("dot without result")?, acc, *a_offset, *b_offset, *k, *dtype)
            }
            OpKind::LocalMma { a_offset, b_offset, k, dtype, a_trans, b_trans, wgmma: true } => {
                let (acc, a_base, b_base) = (d.operands[0], d.operands.get(1).copied(), d.operands.get(2).copied());
                let accumulate = d.operands.get(3).copied();
                let t = rt.ok_or("mma without result")?;
                let tiles = mma::Tiles { a_off: *a_offset, b_off: *b_offset, a_trans: *a_trans, b_trans: *b_trans };
                self.local_wgmma(&t, acc, [a_base, b_base], accumulate, tiles, *k, *dtype)
            }
            OpKind::LocalMma { a_offset, b_offset, k, dtype, a_trans, b_trans, wgmma: false } => {
                if d.operands.len() > 3 {
                    return Err("local_mma: `accumulate` is for wgmma only".into());
                }
                let (acc, a_base, b_base) = (d.operands[0], d.operands.get(1).copied(), d.operands.get(2).copied());
                let tiles = mma::Tiles { a_off: *a_offset, b_off: *b_offset, a_trans: *a_trans, b_trans: *b_trans };
                self.local_mma(&rt.ok_or("mma without result")?, acc, [a_base, b_base], tiles, *k, *dtype)
            }
            OpKind::AsyncCopy { offset, swizzled, shape } => {
                self.async_copy(&d.operands, *offset, *swizzled, shape)?;
                Ok(vec![])
            }
            OpKind::TmaCopy { offset, shape, map, mbar, producer } => {
                self.tma_copy(&d.operands, *offset, shape, *map, *mbar, *producer)?;
                Ok(vec![])
            }
            OpKind::TmaStore { offset, shape, map, reduce } => {
                self.tma_store(&d.operands, *offset, shape, *map, *reduce)?;
                Ok(vec![])
            }
            OpKind::BulkWaitRead { .. } => {
                // Every thread: one that started no bulk store has nothing to wait for.
                self.inline_asm("cp.async.bulk.wait_group.read 0;", "~{memory}", &[], false)?;
                Ok(vec![])
            }
            OpKind::MbarInit { mbar, count } => {
                self.mbar_init(*mbar, *count)?;
                Ok(vec![])
            }
            OpKind::TmaArrive { mbar, bytes, producer } => {
                self.tma_arrive(&d.operands, *mbar, *bytes, *producer)?;
                Ok(vec![])
            }
            OpKind::WsInit { full, empty, stages, consumers } => {
                self.ws_init(*full, *empty, *stages, *consumers)?;
                Ok(vec![])
            }
            OpKind::WsSplit => {
                self.ws_split(op)?;
                Ok(vec![])
            }
            OpKind::MbarWait { mbar } => {
                self.mbar_wait(&d.operands, *mbar)?;
                Ok(vec![])
            }
            OpKind::MbarArrive { mbar } => {
                self.mbar_arrive(&d.operands, *mbar)?;
                Ok(vec![])
            }
            OpKind::Turn(step) => {
                self.turn(*step)?;
                Ok(vec![])
            }
            OpKind::TmaWait { mbar } => {
                self.tma_wait(&d.operands, *mbar)?;
                Ok(vec![])
            }
            OpKind::RowReduce { op: rop } => {
                let x = d.operands[0];
                self.row_reduce(x, *rop).map(|r| vec![Cv::Regs(r)])
            }
            OpKind::ShuffleReduce { op: rop, offset } => {
                let t = rt.ok_or("shuffle_reduce without result")?;
                self.shuffle_reduce(d.operands[0], &t, *rop, *offset).map(|r| vec![Cv::Regs(r)])
            }
            OpKind::ShuffleConvert { plan, .. } => self.shuffle_convert(d.operands[0], plan).map(|r| vec![Cv::Regs(r)]),
            OpKind::RowBroadcast => {
                let t = rt.ok_or("row_broadcast without result")?;
                let src = self.regs(d.operands[0])?;
                let n = self.nregs(&t);
                // Register (mi, ni, c) of the accumulator is row value (mi, c / 2).
                let nt = n / 4 / src.len().div_ceil(2).max(1);
                let regs = (0..n).map(|r| src[(r / 4 / nt) * 2 + (r % 4) / 2]).collect();
                Ok(vec![Cv::Regs(regs)])
            }
            OpKind::Coord { axis } => {
                let t = rt.ok_or("coord without result")?;
                let regs = (0..self.nregs(&t)).map(|r| self.coords(&t, r).map(|c| c[*axis as usize])).collect::<Res<Vec<_>>>()?;
                Ok(vec![Cv::Regs(regs)])
            }
            OpKind::RegMma { b_offset, k, dtype, b_trans, wgmma: true } => {
                let t = rt.ok_or("reg_mma without result")?;
                self.reg_wgmma(&t, d.operands[0], d.operands[1], d.operands[2], (*b_offset, *b_trans), *k, *dtype)
            }
            OpKind::RegMma { b_offset, k, dtype, b_trans, wgmma: false } => {
                let t = rt.ok_or("reg_mma without result")?;
                self.reg_mma(&t, d.operands[0], d.operands[1], d.operands[2], (*b_offset, *b_trans), *k, *dtype)
            }
            OpKind::AsyncCommit => {
                self.async_commit()?;
                Ok(vec![])
            }
            OpKind::AsyncWait { pending } => {
                self.async_wait(*pending)?;
                Ok(vec![])
            }
            OpKind::LocalScan { offset, op: sop, axis, src_shape, dtype } => {
                self.local_scan(rt.ok_or("scan without result")?, *offset, *sop, *axis as usize, src_shape, *dtype)
            }
            OpKind::LocalScanFn { offset, axis, src_shape, dtype } => {
                let f = *d.regions.first().ok_or("scan_fn without its combine function")?;
                self.local_scan_fn(rt.ok_or("scan without result")?, *offset, f, *axis as usize, src_shape, *dtype)
            }
            OpKind::LocalArgReduce { offset, op: aop, axis, src_shape, dtype } => {
                self.local_arg_reduce(rt.ok_or("argmax without result")?, *offset, *aop, *axis as usize, src_shape, *dtype)
            }
            OpKind::Tir(kind) => self.tir_op(op, kind, rt),
        }
    }

    fn local_reduce(&mut self, t: lir::Type, offset: u32, rop: ReduceOp, axis: usize, src_shape: &[i64], dtype: DType) -> Res<Vec<Cv>> {
        let src_strides = row_major(src_shape);
        let size = dtype.size() as i64;
        let n = src_shape[axis];
        let acc_d = if matches!(dtype, DType::F16 | DType::BF16) { DType::F32 } else { dtype };
        let mut bases = vec![];
        for r in 0..self.nregs(&t) {
            let c = if t.shape().is_empty() { vec![] } else { self.coords(&t, r)? };
            let mut base = self.i32c(0);
            let mut ci = 0;
            for (i, &s) in src_strides.iter().enumerate() {
                if i == axis {
                    continue;
                }
                base = self.add(base, self.mulc(c[ci], s)?)?;
                ci += 1;
            }
            bases.push(base);
        }
        let ident = math::reduce_identity(self, rop, acc_d)?;
        let inits = vec![ident; bases.len()];
        let stride = src_strides[axis];
        let res = self.counted_loop(n, inits, &mut |g, j, accs| {
            let mut next = vec![];
            for (bi, base) in bases.iter().enumerate() {
                let idx = g.add(*base, g.mulc(j, stride)?)?;
                let off = g.addc(g.mulc(idx, size)?, offset as i64)?;
                let p = g.smem_ptr(off)?;
                let v = g.load_mem(p, dtype)?;
                let v = math::convert(g, v, dtype, acc_d)?;
                let op = match rop {
                    ReduceOp::Sum => BinaryOp::Add,
                    ReduceOp::Max => BinaryOp::Max,
                    ReduceOp::Min => BinaryOp::Min,
                };
                next.push(math::binary(g, op, accs[bi], v, acc_d)?);
            }
            Ok(next)
        })?;
        let out = res.into_iter().map(|v| math::convert(self, v, acc_d, dtype)).collect::<Res<Vec<_>>>()?;
        Ok(vec![Cv::Regs(out)])
    }

    fn local_dot(&mut self, t: lir::Type, acc: Value, a_off: u32, b_off: u32, k: i64, dtype: DType) -> Res<Vec<Cv>> {
        let n = t.shape()[1];
        let acc_d = t.dtype();
        let size = dtype.size() as i64;
        let mut rows = vec![];
        let mut cols = vec![];
        for r in 0..self.nregs(&t) {
            let c = self.coords(&t, r)?;
            // Byte offsets of a[i, 0] and b[0, j].
            rows.push(self.addc(self.mulc(c[0], k * size)?, a_off as i64)?);
            cols.push(self.addc(self.mulc(c[1], size)?, b_off as i64)?);
        }
        let inits = self.regs(acc)?;
        let res = self.counted_loop(k, inits, &mut |g, kk, accs| {
            let a_step = g.mulc(kk, size)?;
            let b_step = g.mulc(kk, n * size)?;
            let mut next = vec![];
            for (ri, acc) in accs.iter().enumerate() {
                let pa = g.smem_ptr(g.add(rows[ri], a_step)?)?;
                let pb = g.smem_ptr(g.add(cols[ri], b_step)?)?;
                let a = g.load_mem(pa, dtype)?;
                let b = g.load_mem(pb, dtype)?;
                let a = math::convert(g, a, dtype, acc_d)?;
                let b = math::convert(g, b, dtype, acc_d)?;
                next.push(math::fma(g, a, b, *acc, acc_d)?);
            }
            Ok(next)
        })?;
        Ok(vec![Cv::Regs(res)])
    }

    /// `if cond { then() }` returning the value of `then` or `otherwise`.
    pub(crate) fn guarded(&mut self, cond: V, then: &mut dyn FnMut(&mut Self) -> Res<Option<V>>, otherwise: Option<V>) -> Res<Option<V>> {
        let pre = self.b.current();
        let tb = self.block("in");
        let mb = self.block("join");
        self.b.cond_br(cond, tb, mb);
        self.b.position(tb);
        let v = then(self)?;
        let tend = self.b.current();
        self.b.br(mb);
        self.b.position(mb);
        match (v, otherwise) {
            (Some(v), Some(o)) => {
                let phi = self.b.phi(v.ty);
                self.b.incoming(phi, v, tend);
                self.b.incoming(phi, o, pre);
                Ok(Some(phi))
            }
            _ => Ok(None),
        }
    }

    fn tir_op(&mut self, op: crate::ir::Op, kind: &tir::OpKind, rt: Option<lir::Type>) -> Res<Vec<Cv>> {
        let d = self.k.body.op(op);
        let operands = d.operands.clone();
        let rt_ok = || rt.clone().ok_or_else(|| format!("{} without a result", kind.mnemonic()));
        let one = |regs: Vec<V>| Ok(vec![Cv::Regs(regs)]);
        match kind {
            tir::OpKind::Const(l) => {
                let t = rt_ok()?;
                let c = math::constant(self, *l, t.dtype())?;
                one(vec![c; self.nregs(&t)])
            }
            tir::OpKind::ProgramId(a) | tir::OpKind::NumPrograms(a) => {
                let name = match (matches!(kind, tir::OpKind::ProgramId(_)), *a) {
                    (true, a @ 0..=2) => SReg::CtaId(a as u8),
                    (false, a @ 0..=2) => SReg::NCtaId(a as u8),
                    _ => return Err("axis > 2".into()),
                };
                one(vec![self.sreg(name)])
            }
            tir::OpKind::Arange(_) => {
                let t = rt_ok()?;
                let regs = (0..self.nregs(&t)).map(|r| self.linear(&t, r)).collect::<Res<Vec<_>>>()?;
                one(regs)
            }
            tir::OpKind::Splat => {
                let t = rt_ok()?;
                let x = self.regs(operands[0])?[0];
                one(vec![x; self.nregs(&t)])
            }
            tir::OpKind::Binary(b) => {
                let (x, y) = (self.regs(operands[0])?, self.regs(operands[1])?);
                let dt = self.ty(operands[0]).dtype();
                let regs = x.iter().zip(&y).map(|(a, c)| math::binary(self, *b, *a, *c, dt)).collect::<Res<Vec<_>>>()?;
                one(regs)
            }
            tir::OpKind::Cmp(c) => {
                let (x, y) = (self.regs(operands[0])?, self.regs(operands[1])?);
                let dt = self.ty(operands[0]).dtype();
                let regs = x.iter().zip(&y).map(|(a, b)| self.compare(*c, *a, *b, dt)).collect::<Res<Vec<_>>>()?;
                one(regs)
            }
            tir::OpKind::Unary(u) => {
                let x = self.regs(operands[0])?;
                let dt = self.ty(operands[0]).dtype();
                let regs = x.iter().map(|a| math::unary(self, *u, *a, dt)).collect::<Res<Vec<_>>>()?;
                one(regs)
            }
            tir::OpKind::Select => {
                let (c, x, y) = (self.regs(operands[0])?, self.regs(operands[1])?, self.regs(operands[2])?);
                let mut regs = vec![];
                for i in 0..x.len() {
                    regs.push(if x[i].ty.is_float() { self.b.select(c[i], x[i], y[i]) } else { self.select(c[i], x[i], y[i])? });
                }
                one(regs)
            }
            tir::OpKind::Fma => {
                let (x, y, z) = (self.regs(operands[0])?, self.regs(operands[1])?, self.regs(operands[2])?);
                let dt = self.ty(operands[0]).dtype();
                let regs = (0..x.len()).map(|i| math::fma(self, x[i], y[i], z[i], dt)).collect::<Res<Vec<_>>>()?;
                one(regs)
            }
            tir::OpKind::Cast => {
                let x = self.regs(operands[0])?;
                let (from, to) = (self.ty(operands[0]).dtype(), rt_ok()?.dtype());
                let regs = x.iter().map(|a| math::convert(self, *a, from, to)).collect::<Res<Vec<_>>>()?;
                one(regs)
            }
            tir::OpKind::Dim(axis) => match self.vals.get(&operands[0]) {
                Some(Cv::Tensor { sizes, .. }) => one(vec![*sizes.get(*axis as usize).ok_or("dim axis out of range")?]),
                _ => Err("dim of a non-tensor".into()),
            },
            tir::OpKind::View => {
                let Some(Cv::Tensor { ptr, sizes, strides }) = self.vals.get(&operands[0]).cloned() else {
                    return Err("view of a non-tensor".into());
                };
                let k = operands.len() - 1;
                let mut valid = V::int(Ty::Pred, 1);
                let mut lin = self.i64c(0);
                for i in 0..k {
                    let idx = self.regs(operands[i + 1])?[0];
                    valid = self.and(valid, self.icmp(Cmp::Ult, idx, sizes[i])?)?;
                    lin = self.add(lin, self.mul(self.sext(idx, Ty::I64)?, strides[i])?)?;
                }
                let dt = self.ty(operands[0]).dtype();
                // An out-of-range view gets sizes 0, so it is never read.
                let p = self.gep(ptr, lin, dt)?.at;
                let mut nsizes = vec![];
                for s in &sizes[k..] {
                    nsizes.push(self.select(valid, *s, self.i32c(0))?);
                }
                if let (Some((param, mut fixed)), Some(&result)) =
                    (self.roots.get(&operands[0]).cloned(), self.k.body.op(op).results.first())
                {
                    for &i in &operands[1..] {
                        fixed.push(self.regs(i)?[0]);
                    }
                    self.roots.insert(result, (param, fixed));
                }
                Ok(vec![Cv::Tensor { ptr: p, sizes: nsizes, strides: strides[k..].to_vec() }])
            }
            tir::OpKind::Load => {
                let t = rt_ok()?;
                let tensor = self.vals.get(&operands[0]).cloned().ok_or("load from undefined tensor")?;
                let n = operands.len();
                let pad = self.regs(operands[n - 1])?[0];
                let regs = self.load_window(&tensor, &operands[1..n - 1], &t, pad)?;
                one(regs)
            }
            tir::OpKind::Store => {
                let tensor = self.vals.get(&operands[0]).cloned().ok_or("store to undefined tensor")?;
                let n = operands.len();
                let x = operands[n - 1];
                let t = self.ty(x).clone();
                let vals = self.regs(x)?;
                // A replicated tile is stored by one thread per element.
                let owner = self.owner(&t)?;
                self.store_window(&tensor, &operands[1..n - 1], &t, &vals, owner)?;
                Ok(vec![])
            }
            tir::OpKind::Gather => self.gather(op),
            tir::OpKind::Scatter => self.indexed_write(op, None),
            tir::OpKind::Atomic(a) => self.indexed_write(op, Some(*a)),
            tir::OpKind::Print(f) => self.print(op, f),
            tir::OpKind::Assert(m) => self.assert(op, m),
            tir::OpKind::Return => self.return_op(),
            tir::OpKind::While => self.while_loop(op),
            tir::OpKind::For => self.for_loop(op),
            tir::OpKind::If => self.if_op(op),
            other => Err(format!("`{}` reached code generation; the lowering should have replaced it", other.mnemonic())),
        }
    }

    fn compare(&self, c: CmpOp, a: V, b: V, d: DType) -> Res<V> {
        if d.is_float() {
            let (a, b) = (math::widen(self, a, d), math::widen(self, b, d));
            let p = match c {
                CmpOp::Eq => FCmp::Oeq,
                CmpOp::Ne => FCmp::Une,
                CmpOp::Lt => FCmp::Olt,
                CmpOp::Le => FCmp::Ole,
                CmpOp::Gt => FCmp::Ogt,
                CmpOp::Ge => FCmp::Oge,
            };
            return Ok(self.b.fcmp(p, a, b));
        }
        let s = d.is_signed();
        let p = match c {
            CmpOp::Eq => Cmp::Eq,
            CmpOp::Ne => Cmp::Ne,
            CmpOp::Lt if s => Cmp::Slt,
            CmpOp::Le if s => Cmp::Sle,
            CmpOp::Gt if s => Cmp::Sgt,
            CmpOp::Ge if s => Cmp::Sge,
            CmpOp::Lt => Cmp::Ult,
            CmpOp::Le => Cmp::Ule,
            CmpOp::Gt => Cmp::Ugt,
            CmpOp::Ge => Cmp::Uge,
        };
        self.icmp(p, a, b)
    }

    fn flatten(vals: &[Cv]) -> Res<Vec<V>> {
        let mut out = vec![];
        for v in vals {
            match v {
                Cv::Regs(r) => out.extend(r),
                Cv::Tensor { .. } => return Err("a tensor cannot be carried through control flow".into()),
            }
        }
        Ok(out)
    }

    /// Splits flat registers back into per-value groups following `types`.
    fn unflatten(&self, flat: &[V], types: &[lir::Type]) -> Vec<Cv> {
        let mut out = vec![];
        let mut i = 0;
        for t in types {
            let n = self.nregs(t);
            out.push(Cv::Regs(flat[i..i + n].to_vec()));
            i += n;
        }
        out
    }

    fn for_loop(&mut self, op: crate::ir::Op) -> Res<Vec<Cv>> {
        let d = self.k.body.op(op).clone();
        let lo = self.regs(d.operands[0])?[0];
        let hi = self.regs(d.operands[1])?[0];
        let step = self.regs(d.operands[2])?[0];
        let inits: Vec<Cv> =
            d.operands[3..].iter().map(|o| self.vals.get(o).cloned().ok_or("undefined loop init")).collect::<Result<_, _>>()?;
        let flat_init = Self::flatten(&inits)?;
        let types: Vec<lir::Type> = d.results.iter().map(|&r| self.ty(r).clone()).collect();
        let pre = self.b.current();
        let header = self.block("for_head");
        let body_bb = self.block("for_body");
        let exit = self.block("for_end");
        self.b.br(header);
        self.b.enter_loop();
        self.b.position(header);
        let iv = self.b.phi(Ty::I32);
        let phis: Vec<V> = flat_init.iter().map(|v| self.b.phi(v.ty)).collect();
        self.b.incoming(iv, lo, pre);
        for (p, init) in phis.iter().zip(&flat_init) {
            self.b.incoming(*p, *init, pre);
        }
        let cond = self.b.icmp(Cmp::Slt, iv, hi);
        self.b.cond_br(cond, body_bb, exit);
        self.b.position(body_bb);
        // With a non-negative start and a positive constant step, the body sees `lo <= iv < hi`.
        if let (Some(f), Some(st)) = (self.facts(lo), step.imm())
            && st > 0
        {
            self.note(iv, Some(fold::Facts { lo: f.lo, hi: i32::MAX as i64, align: if f.align == 0 { st } else { gcd(f.align, st) } }));
        }
        let region = d.regions[0];
        let args = self.k.body.block(region).args.clone();
        self.vals.insert(args[0], Cv::Regs(vec![iv]));
        for (a, v) in args[1..].iter().zip(self.unflatten(&phis, &types)) {
            self.vals.insert(*a, v);
        }
        self.loop_depth.set(self.loop_depth.get() + 1);
        let yields = self.region(region);
        self.loop_depth.set(self.loop_depth.get() - 1);
        let flat_next = Self::flatten(&yields?)?;
        let next_iv = self.b.int_bin(crate::mir::IntOp::Add, iv, step);
        let latch = self.b.current();
        self.b.incoming(iv, next_iv, latch);
        for (p, nx) in phis.iter().zip(&flat_next) {
            self.b.incoming(*p, *nx, latch);
        }
        self.b.br(header);
        self.b.exit_loop();
        self.b.position(exit);
        Ok(self.unflatten(&phis, &types))
    }

    fn if_op(&mut self, op: crate::ir::Op) -> Res<Vec<Cv>> {
        let d = self.k.body.op(op).clone();
        let cond = self.regs(d.operands[0])?[0];
        let types: Vec<lir::Type> = d.results.iter().map(|&r| self.ty(r).clone()).collect();
        let tb = self.block("if_then");
        let eb = self.block("if_else");
        let mb = self.block("if_end");
        self.b.cond_br(cond, tb, eb);
        let mut incoming = vec![];
        for (bb, region) in [(tb, d.regions[0]), (eb, d.regions[1])] {
            self.b.position(bb);
            let ys = self.region(region)?;
            let flat = Self::flatten(&ys)?;
            incoming.push((flat, self.b.current()));
            self.b.br(mb);
        }
        self.b.position(mb);
        let mut flat = vec![];
        for i in 0..incoming[0].0.len() {
            let phi = self.b.phi(incoming[0].0[i].ty);
            self.b.incoming(phi, incoming[0].0[i], incoming[0].1);
            self.b.incoming(phi, incoming[1].0[i], incoming[1].1);
            flat.push(phi);
        }
        Ok(self.unflatten(&flat, &types))
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.abs() } else { gcd(b, a % b) }
}

/// The PTX type of a register holding `d`.
pub(crate) fn reg_type(d: DType) -> Ty {
    match d {
        DType::Bool => Ty::Pred,
        DType::I8 | DType::U8 => Ty::I8,
        DType::I16 => Ty::I16,
        DType::I32 | DType::U32 => Ty::I32,
        DType::I64 | DType::U64 => Ty::I64,
        DType::F16 => Ty::F16,
        DType::BF16 => Ty::BF16,
        DType::F32 => Ty::F32,
        DType::F64 => Ty::F64,
    }
}

/// The type of `d` in memory, as loaded into a register (bool is a byte).
pub(crate) fn mem_reg_type(d: DType) -> Ty {
    if d == DType::Bool { Ty::I8 } else { reg_type(d) }
}
