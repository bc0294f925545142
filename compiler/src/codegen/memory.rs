//! Window loads and stores: vectorised where the elements a thread holds are contiguous in
//! memory, masks only where the window touches an edge.
//!
//! A thread's registers are grouped in chunks of elements consecutive along the last dimension
//! (a blocked layout's `vec`, an MMA accumulator's column pairs). For chunks of several elements
//! one uniform check decides for the whole window:
//! - fully inside the tensor, with a unit last stride and every chunk aligned to its size: one
//!   vector access per chunk, no mask, straight-line code (the common case);
//! - otherwise (the edge path), per chunk: one vector access where the chunk is inside,
//!   contiguous and aligned, else element by element, each predicated on its own mask. These
//!   are predicated PTX accesses (inline asm, one statement per chunk, which also computes the
//!   chunk's masks from its indices: no per-element mask in LLVM IR), so the edge path has no
//!   branch either; a masked-off load gives the pad.
//!
//! Single elements (and replicated tiles, which their owner threads store) take the edge path
//! only: predicated stores, and loads from a clamped, always-valid address with the pad
//! selected outside the tensor. Such a load from an empty tensor (a size of 0), which has no
//! valid address, is skipped by one uniform branch.

use super::{Cv, Gen, Ice, Res, mem_type};
use crate::dtype::DType;
use crate::ir::Value;
use crate::lir::{self, Layout};
use inkwell::IntPredicate;
use inkwell::basic_block::BasicBlock;
use inkwell::types::{BasicTypeEnum, IntType};
use inkwell::values::{BasicValue, BasicValueEnum, IntValue, PointerValue};

/// Where one chunk of a window access goes (the edge path). Its masks are built only where
/// LLVM IR needs them (`Gen::chunk_masks`); the inline-asm accesses compute them in PTX from
/// `lead`, `idx` and `size`.
struct Chunk<'c> {
    /// The registers, consecutive along the last dimension.
    regs: Vec<usize>,
    /// The first element's address (valid only where its element is inside).
    ptr: PointerValue<'c>,
    /// Linear element offset of the first element.
    lin: IntValue<'c>,
    /// The leading indices are inside the tensor.
    lead: IntValue<'c>,
    /// The first element's last-dimension index, and the tensor's size along it.
    idx: IntValue<'c>,
    size: IntValue<'c>,
    /// `chunks_aligned`, for chunks of several elements.
    aligned: Option<IntValue<'c>>,
}

/// A chunk's masks in LLVM IR.
struct Masks<'c> {
    /// Per element: inside the tensor.
    inb: Vec<IntValue<'c>>,
    /// Every element inside, contiguous and aligned: one vector access.
    fast: IntValue<'c>,
}

/// A predicated global access of `bytes` bytes: the integer type of one of its parts, the number
/// of parts (two 8-byte halves of a 16-byte access), the PTX type and the inline-asm register
/// constraint of a part.
fn access(ctx: &inkwell::context::Context, bytes: usize) -> Option<(IntType<'_>, usize, &'static str, &'static str)> {
    match bytes {
        1 => Some((ctx.i16_type(), 1, "u8", "h")),
        2 => Some((ctx.i16_type(), 1, "b16", "h")),
        4 => Some((ctx.i32_type(), 1, "b32", "r")),
        8 => Some((ctx.i64_type(), 1, "b64", "l")),
        16 => Some((ctx.i64_type(), 2, "b64", "l")),
        _ => None,
    }
}

impl<'c> Gen<'c, '_> {
    /// Registers grouped by contiguity along the last dimension.
    fn chunks_of(&self, t: &lir::Type) -> Vec<Vec<usize>> {
        let n = self.nregs(t);
        let last = t.shape().last().copied().unwrap_or(1);
        let group = match t.layout() {
            Some(Layout::Blocked { vec }) if t.numel() >= self.k.threads as i64 && last % vec as i64 == 0 => vec as usize,
            Some(Layout::Mma { .. } | Layout::MmaCols { .. }) => 2,
            _ => 1,
        };
        (0..n).step_by(group.max(1)).map(|r| (r..(r + group).min(n)).collect()).collect()
    }

    fn window_offsets(&self, offs: &[Value]) -> Res<Vec<IntValue<'c>>> {
        offs.iter().map(|&o| self.regs(o).map(|r| r[0].into_int_value())).collect()
    }

    /// Whether the window at `offs` is inside the tensor (uniform).
    fn window_in_range(&self, tensor: &Cv<'c>, offs: &[IntValue<'c>], shape: &[i64]) -> Res<IntValue<'c>> {
        use IntPredicate::{SGE, SLE};
        let Cv::Tensor { sizes, .. } = tensor else { return Err("window access on a non-tensor".into()) };
        let mut ok = self.ctx.bool_type().const_int(1, false);
        for i in 0..sizes.len() {
            // `offs + shape <= size` as `offs <= size - shape`, which cannot overflow.
            let ge0 = self.icmp(SGE, offs[i], self.i32c(0))?;
            let fits = self.icmp(SLE, offs[i], self.sub(sizes[i], self.i32c(shape[i]))?)?;
            ok = self.and(ok, self.and(ge0, fits)?)?;
        }
        Ok(ok)
    }

    /// Whether chunks of `k` elements of `d` are contiguous and aligned to their size wherever
    /// they are (uniform): a unit last stride, an aligned base, aligned row strides and a last
    /// offset that is a multiple of `k` (a chunk starts at a multiple of `k` in the tile).
    fn chunks_aligned(&self, tensor: &Cv<'c>, offs: &[IntValue<'c>], k: usize, d: DType) -> Res<IntValue<'c>> {
        use IntPredicate::EQ;
        let Cv::Tensor { ptr, strides, .. } = tensor else { return Err("window access on a non-tensor".into()) };
        let i64t = self.ctx.i64_type();
        let last = strides.len() - 1;
        let bytes = (k * d.size()) as u64;
        let eq0 = |x: IntValue<'c>, mask: u64| -> Res<IntValue<'c>> {
            let t = x.get_type();
            self.icmp(EQ, self.and(x, t.const_int(mask, false))?, t.const_zero())
        };
        let mut ok = self.icmp(EQ, strides[last], i64t.const_int(1, false))?;
        let addr = self.b.build_ptr_to_int(*ptr, i64t, "pa").ice()?;
        ok = self.and(ok, eq0(addr, bytes - 1)?)?;
        for s in &strides[..last] {
            ok = self.and(ok, eq0(self.mulc(*s, d.size() as i64)?, bytes - 1)?)?;
        }
        self.and(ok, eq0(offs[last], k as u64 - 1)?)
    }

    /// The address of the element at coordinates `c` of the window at `offs`, on the fast path
    /// (the window inside the tensor; `unit`: with a unit last stride). Each index `offs + c` is
    /// in range there, so it is sign-extended as `sext(x) + k` where it was built as `x + k`:
    /// every register shares `x`, and the constants end up in the address's immediate offset.
    fn fast_address(&self, tensor: &Cv<'c>, offs: &[IntValue<'c>], c: &[IntValue<'c>], d: DType, unit: bool) -> Res<PointerValue<'c>> {
        let Cv::Tensor { ptr, strides, .. } = tensor else { return Err("window access on a non-tensor".into()) };
        let i64t = self.ctx.i64_type();
        let mut lin = i64t.const_zero();
        for i in 0..c.len() {
            let stride = if unit && i + 1 == c.len() { i64t.const_int(1, false) } else { strides[i] };
            let idx = self.add(offs[i], c[i])?;
            let (x, k) = match self.split_const(idx) {
                Some((x, k)) if (0..1 << 30).contains(&k) => (x, k),
                _ => (idx, 0),
            };
            let term = self.mul(self.sext(x, i64t)?, stride)?;
            let kterm = self.mul(i64t.const_int(k as u64, false), stride)?;
            lin = self.add(lin, self.add(term, kterm)?)?;
        }
        // SAFETY (of the LLVM IR): the window is inside the tensor on this path.
        unsafe { self.b.build_gep(mem_type(self.ctx, d), *ptr, &[lin], "p").ice() }
    }

    /// The chunks of the edge path, with their masks.
    /// `aligned`: `chunks_aligned` for the chunks of more than one element.
    fn window_chunks(
        &self,
        tensor: &Cv<'c>,
        offs: &[IntValue<'c>],
        t: &lir::Type,
        d: DType,
        aligned: Option<IntValue<'c>>,
    ) -> Res<Vec<Chunk<'c>>> {
        let Cv::Tensor { ptr, sizes, strides } = tensor else { return Err("window access on a non-tensor".into()) };
        let i64t = self.ctx.i64_type();
        let rank = sizes.len();
        let last = rank - 1;
        let mut out = vec![];
        for regs in self.chunks_of(t) {
            let n = regs.len() as i64;
            let c = self.coords(t, regs[0])?;
            let mut lead = self.ctx.bool_type().const_int(1, false);
            let mut lin = self.i64c(0);
            let mut idx_last = self.i32c(0);
            for i in 0..rank {
                let idx = self.add(offs[i], c[i])?;
                if i == last {
                    idx_last = idx;
                } else {
                    lead = self.and(lead, self.icmp(IntPredicate::ULT, idx, sizes[i])?)?;
                }
                lin = self.add(lin, self.mul(self.sext(idx, i64t)?, strides[i])?)?;
            }
            // SAFETY (of the LLVM IR): dereferenced only where in bounds (or clamped).
            let p = unsafe { self.b.build_gep(mem_type(self.ctx, d), *ptr, &[lin], "p").ice()? };
            let aligned = aligned.filter(|_| n > 1);
            out.push(Chunk { regs, ptr: p, lin, lead, idx: idx_last, size: sizes[last], aligned });
        }
        Ok(out)
    }

    /// A chunk's masks, built in LLVM IR.
    fn chunk_masks(&self, ch: &Chunk<'c>) -> Res<Masks<'c>> {
        let n = ch.regs.len();
        let mut inb = vec![];
        for e in 0..n {
            let ok = self.icmp(IntPredicate::ULT, self.addc(ch.idx, e as i64)?, ch.size)?;
            inb.push(self.and(ch.lead, ok)?);
        }
        let fast = match ch.aligned {
            Some(a) => self.and(self.and(inb[0], inb[n - 1])?, a)?,
            None => self.ctx.bool_type().const_zero(),
        };
        Ok(Masks { inb, fast })
    }

    /// A window load with padding (see the module comment).
    pub(crate) fn load_window(
        &mut self,
        tensor: &Cv<'c>,
        offs: &[Value],
        t: &lir::Type,
        pad: BasicValueEnum<'c>,
    ) -> Res<Vec<BasicValueEnum<'c>>> {
        let Cv::Tensor { ptr, sizes, strides } = tensor else { return Err("window load from a non-tensor".into()) };
        let d = t.dtype();
        let n = self.nregs(t);
        let offs = self.window_offsets(offs)?;
        let chunks = self.chunks_of(t);
        let k = chunks.iter().map(|c| c.len()).max().unwrap_or(1);
        if k == 1 {
            // Single elements: masked loads from clamped addresses, no branch. Uniform: a tensor
            // with no element has no valid address to clamp to.
            let mut nonempty = self.ctx.bool_type().const_int(1, false);
            for s in sizes {
                nonempty = self.and(nonempty, self.icmp(IntPredicate::SGT, *s, self.i32c(0))?)?;
            }
            let pre = self.b.get_insert_block().ok_or("no block")?;
            let body = self.block("ld.body");
            let join = self.block("ld.join");
            self.b.build_conditional_branch(nonempty, body, join).ice()?;
            self.b.position_at_end(body);
            let mut vals = vec![];
            for ch in self.window_chunks(tensor, &offs, t, d, None)? {
                vals.push(self.masked_scalar(*ptr, &ch, d, pad)?);
            }
            let bend = self.b.get_insert_block().ok_or("no block")?;
            self.b.build_unconditional_branch(join).ice()?;
            self.b.position_at_end(join);
            return self.phis(&[(vals, bend), (vec![pad; n], pre)]);
        }
        let aligned = self.chunks_aligned(tensor, &offs, k, d)?;
        let inside = self.and(self.window_in_range(tensor, &offs, t.shape())?, aligned)?;
        let fast = self.block("ld.fast");
        let edge = self.block("ld.edge");
        let merge = self.block("ld.merge");
        self.b.build_conditional_branch(inside, fast, edge).ice()?;

        self.b.position_at_end(fast);
        let mut fvals: Vec<Option<BasicValueEnum>> = vec![None; n];
        for regs in &chunks {
            let p = self.fast_address(tensor, &offs, &self.coords(t, regs[0])?, d, true)?;
            if regs.len() > 1 {
                let vt = mem_type(self.ctx, d).into_int_type_or_float(regs.len() as u32)?;
                let v = self.b.build_load(vt, p, "vld").ice()?;
                if let Some(inst) = v.as_instruction_value() {
                    inst.set_alignment((regs.len() * d.size()) as u32).ice()?;
                }
                for (e, &r) in regs.iter().enumerate() {
                    let x = self.b.build_extract_element(v.into_vector_value(), self.i32c(e as i64), "e").ice()?;
                    fvals[r] = Some(self.mem_to_reg(x, d)?);
                }
            } else {
                fvals[regs[0]] = Some(self.load_mem(p, d)?);
            }
        }
        let fvals = fvals.into_iter().map(|v| v.ok_or_else(|| "register without a value".to_string())).collect::<Res<Vec<_>>>()?;
        let fend = self.b.get_insert_block().ok_or("no block")?;
        self.b.build_unconditional_branch(merge).ice()?;

        // No clamped addresses here (every access is predicated), so no emptiness check either.
        self.b.position_at_end(edge);
        let strideb = self.mulc(strides[strides.len() - 1], d.size() as i64)?;
        let mut evals: Vec<Option<BasicValueEnum>> = vec![None; n];
        for ch in self.window_chunks(tensor, &offs, t, d, Some(aligned))? {
            let vals = self.masked_chunk_load(&ch, strideb, d, pad)?;
            for (&r, v) in ch.regs.iter().zip(vals) {
                evals[r] = Some(v);
            }
        }
        let evals = evals.into_iter().map(|v| v.ok_or_else(|| "register without a value".to_string())).collect::<Res<Vec<_>>>()?;
        let eend = self.b.get_insert_block().ok_or("no block")?;
        self.b.build_unconditional_branch(merge).ice()?;
        self.b.position_at_end(merge);
        self.phis(&[(fvals, fend), (evals, eend)])
    }

    /// One phi per register over the incoming `(values, block)`.
    fn phis(&self, incoming: &[(Vec<BasicValueEnum<'c>>, BasicBlock<'c>)]) -> Res<Vec<BasicValueEnum<'c>>> {
        let mut out = vec![];
        for i in 0..incoming[0].0.len() {
            let v = incoming[0].0[i];
            let phi = self.b.build_phi(v.get_type(), "v").ice()?;
            for (vals, blk) in incoming {
                phi.add_incoming(&[(&vals[i] as &dyn BasicValue, *blk)]);
            }
            out.push(phi.as_basic_value());
        }
        Ok(out)
    }

    /// The load of a single-element chunk from a clamped address, selecting the pad outside the
    /// tensor.
    fn masked_scalar(&self, base: PointerValue<'c>, ch: &Chunk<'c>, d: DType, pad: BasicValueEnum<'c>) -> Res<BasicValueEnum<'c>> {
        let inb = self.chunk_masks(ch)?.inb[0];
        let lin = self.select(inb, ch.lin, self.i64c(0))?;
        // SAFETY (of the LLVM IR): the offset is in range, or 0 (the tensor is not empty).
        let p = unsafe { self.b.build_gep(mem_type(self.ctx, d), base, &[lin], "pe").ice()? };
        let v = self.load_mem(p, d)?;
        self.b.build_select(inb, v, pad, "pv").ice()
    }

    /// The elements of an edge-path chunk: one predicated vector load where the chunk is
    /// `fast`, else predicated element loads (`strideb` bytes apart); the pad outside the
    /// tensor.
    fn masked_chunk_load(&self, ch: &Chunk<'c>, strideb: IntValue<'c>, d: DType, pad: BasicValueEnum<'c>) -> Res<Vec<BasicValueEnum<'c>>> {
        let k = ch.regs.len();
        if let (Some(shape), Some(aligned)) = (ChunkAsm::new(d.size(), k), ch.aligned) {
            // One inline-asm statement for the whole chunk, masks included (a few IR
            // instructions, not dozens).
            let et = self.ctx.custom_width_int_type(std::num::NonZero::new(shape.es as u32 * 8).ok_or("a zero-sized type")?).ice()?;
            let pad_bits = self.to_bits(self.reg_to_mem(pad, d)?, d)?;
            let addr = self.b.build_ptr_to_int(ch.ptr, self.ctx.i64_type(), "a").ice()?;
            let args: Vec<BasicValueEnum> =
                vec![ch.lead.into(), aligned.into(), ch.idx.into(), ch.size.into(), addr.into(), strideb.into(), pad_bits.into()];
            let ret = self.ctx.struct_type(&vec![et.into(); k], false);
            let s = self.asm(&shape.load_text(), &shape.load_constraints(), ret.into(), &args, true)?.into_struct_value();
            let mut out = vec![];
            for e in 0..k {
                let bits = self.b.build_extract_value(s, e as u32, "e").ice()?.into_int_value();
                out.push(self.mem_to_reg(self.join_parts(&[bits], mem_type(self.ctx, d), d.size())?, d)?);
            }
            return Ok(out);
        }
        let Masks { inb, fast } = self.chunk_masks(ch)?;
        let not_fast = self.b.build_not(fast, "nf").ice()?;
        let conds = inb.iter().map(|inb| self.and(*inb, not_fast)).collect::<Res<Vec<_>>>()?;
        let i64t = self.ctx.i64_type();
        let vt = mem_type(self.ctx, d).into_int_type_or_float(k as u32)?;
        let vector = match access(self.ctx, k * d.size()) {
            Some(_) if k > 1 => {
                let parts = self.pred_load(fast, ch.ptr, None, k * d.size())?;
                Some(self.join_parts(&parts, vt.into(), k * d.size())?.into_vector_value())
            }
            _ => None,
        };
        let mut out = vec![];
        for (e, inb) in inb.iter().enumerate() {
            let p = self.element_ptr(ch.ptr, e, strideb, i64t)?;
            let cond = if vector.is_some() { conds[e] } else { *inb };
            let x = self.load_if(cond, p, d, pad)?;
            let x = match vector {
                Some(v) => {
                    let ve = self.mem_to_reg(self.b.build_extract_element(v, self.i32c(e as i64), "ve").ice()?, d)?;
                    self.b.build_select(fast, ve, x, "v").ice()?
                }
                None => x,
            };
            out.push(x);
        }
        Ok(out)
    }

    /// Element `e` of a chunk starting at `p`, `strideb` bytes apart.
    fn element_ptr(&self, p: PointerValue<'c>, e: usize, strideb: IntValue<'c>, i64t: IntType<'c>) -> Res<PointerValue<'c>> {
        if e == 0 {
            return Ok(p);
        }
        let off = self.mul(strideb, i64t.const_int(e as u64, false))?;
        // SAFETY (of the LLVM IR): only dereferenced under the element's mask.
        unsafe { self.b.build_gep(self.ctx.i8_type(), p, &[off], "pe").ice() }
    }

    /// A window store that drops out-of-range elements; `owner` limits a replicated tile to one
    /// writer per element.
    pub(crate) fn store_window(
        &mut self,
        tensor: &Cv<'c>,
        offs: &[Value],
        t: &lir::Type,
        vals: &[BasicValueEnum<'c>],
        owner: Option<IntValue<'c>>,
    ) -> Res<()> {
        let Cv::Tensor { strides, .. } = tensor else { return Err("window store to a non-tensor".into()) };
        let d = t.dtype();
        let offs = self.window_offsets(offs)?;
        let chunks = self.chunks_of(t);
        let k = chunks.iter().map(|c| c.len()).max().unwrap_or(1);
        let i64t = self.ctx.i64_type();
        let strideb = self.mulc(strides[strides.len() - 1], d.size() as i64)?;
        if owner.is_some() || k == 1 {
            for ch in self.window_chunks(tensor, &offs, t, d, None)? {
                for (e, inb) in self.chunk_masks(&ch)?.inb.iter().enumerate() {
                    let cond = match owner {
                        Some(o) => self.and(*inb, o)?,
                        None => *inb,
                    };
                    self.store_if(cond, self.element_ptr(ch.ptr, e, strideb, i64t)?, vals[ch.regs[e]], d)?;
                }
            }
            return Ok(());
        }
        // The chunks as vectors, for both paths.
        let vecs = chunks.iter().map(|regs| self.mem_vector(regs.iter().map(|&r| vals[r]), regs.len(), d)).collect::<Res<Vec<_>>>()?;
        let aligned = self.chunks_aligned(tensor, &offs, k, d)?;
        let inside = self.and(self.window_in_range(tensor, &offs, t.shape())?, aligned)?;
        let fast = self.block("st.fast");
        let edge = self.block("st.edge");
        let done = self.block("st.done");
        self.b.build_conditional_branch(inside, fast, edge).ice()?;
        self.b.position_at_end(fast);
        for (regs, v) in chunks.iter().zip(&vecs) {
            let p = self.fast_address(tensor, &offs, &self.coords(t, regs[0])?, d, true)?;
            if regs.len() > 1 {
                let st = self.b.build_store(p, *v).ice()?;
                st.set_alignment((regs.len() * d.size()) as u32).ice()?;
            } else {
                self.store_mem(p, vals[regs[0]], d)?;
            }
        }
        self.b.build_unconditional_branch(done).ice()?;

        self.b.position_at_end(edge);
        for (ch, v) in self.window_chunks(tensor, &offs, t, d, Some(aligned))?.iter().zip(&vecs) {
            let n = ch.regs.len();
            let addr = self.b.build_ptr_to_int(ch.ptr, i64t, "a").ice()?;
            match (ChunkAsm::new(d.size(), n), ch.aligned) {
                (Some(shape), Some(aligned)) => {
                    // One inline-asm statement for the whole chunk, masks included (a few IR
                    // instructions, not dozens).
                    let mut args: Vec<BasicValueEnum> =
                        vec![ch.lead.into(), aligned.into(), ch.idx.into(), ch.size.into(), addr.into(), strideb.into()];
                    args.extend(self.split_parts(*v, n * d.size())?.into_iter().map(BasicValueEnum::from));
                    self.asm_void_args(&shape.store_text(), &shape.store_constraints(), &args)?;
                }
                _ => {
                    let Masks { inb, fast } = self.chunk_masks(ch)?;
                    let not_fast = self.b.build_not(fast, "nf").ice()?;
                    let conds = inb.iter().map(|inb| self.and(*inb, not_fast)).collect::<Res<Vec<_>>>()?;
                    let vector = n > 1 && access(self.ctx, n * d.size()).is_some();
                    if vector {
                        let parts = self.split_parts(*v, n * d.size())?;
                        self.pred_store(fast, ch.ptr, &parts, n * d.size())?;
                    }
                    for (e, inb) in inb.iter().enumerate() {
                        let c = if vector { conds[e] } else { *inb };
                        self.store_if(c, self.element_ptr(ch.ptr, e, strideb, i64t)?, vals[ch.regs[e]], d)?;
                    }
                }
            }
        }
        self.b.build_unconditional_branch(done).ice()?;
        self.b.position_at_end(done);
        Ok(())
    }

    /// A side-effecting inline-asm statement with no result.
    fn asm_void_args(&self, text: &str, constraints: &str, args: &[BasicValueEnum<'c>]) -> Res<()> {
        self.inline_asm(text, constraints, None, args, true).map(|_| ())
    }

    /// The registers of a chunk as a vector of their memory type.
    fn mem_vector(&self, regs: impl Iterator<Item = BasicValueEnum<'c>>, k: usize, d: DType) -> Res<BasicValueEnum<'c>> {
        let vt = mem_type(self.ctx, d).into_int_type_or_float(k as u32)?;
        let mut v = vt.get_undef();
        for (e, x) in regs.enumerate() {
            v = self.b.build_insert_element(v, self.reg_to_mem(x, d)?, self.i32c(e as i64), "ins").ice()?;
        }
        Ok(v.into())
    }

    /// The bits of a value of `d` in memory, as the integer a predicated access carries.
    fn to_bits(&self, v: BasicValueEnum<'c>, d: DType) -> Res<IntValue<'c>> {
        let (it, _, _, _) = access(self.ctx, d.size()).ok_or_else(|| format!("no predicated access of {d}"))?;
        let v = if d.is_float() {
            self.b
                .build_bit_cast(
                    v,
                    self.ctx.custom_width_int_type(std::num::NonZero::new((d.size() * 8) as u32).ok_or("a zero-sized type")?).ice()?,
                    "b",
                )
                .ice()?
                .into_int_value()
        } else {
            v.into_int_value()
        };
        Ok(if v.get_type().get_bit_width() < it.get_bit_width() { self.b.build_int_z_extend(v, it, "z").ice()? } else { v })
    }

    /// The parts of a predicated access of `bytes` bytes holding the vector `v`.
    fn split_parts(&self, v: BasicValueEnum<'c>, bytes: usize) -> Res<Vec<IntValue<'c>>> {
        let (it, n, _, _) = access(self.ctx, bytes).ok_or("no predicated access of this size")?;
        if n == 1 {
            return Ok(vec![self.b.build_bit_cast(v, it, "b").ice()?.into_int_value()]);
        }
        let pv = self.b.build_bit_cast(v, it.vec_type(n as u32), "b").ice()?.into_vector_value();
        (0..n).map(|i| Ok(self.b.build_extract_element(pv, self.i32c(i as i64), "p").ice()?.into_int_value())).collect()
    }

    /// The value of type `ty` (an element or a vector of the memory type) that the parts of a
    /// predicated access hold.
    fn join_parts(&self, parts: &[IntValue<'c>], ty: BasicTypeEnum<'c>, bytes: usize) -> Res<BasicValueEnum<'c>> {
        let bits = bytes as u32 * 8;
        if parts.len() == 1 {
            let p = parts[0];
            let p = if p.get_type().get_bit_width() > bits {
                self.b
                    .build_int_truncate(
                        p,
                        self.ctx.custom_width_int_type(std::num::NonZero::new(bits).ok_or("a zero-sized type")?).ice()?,
                        "t",
                    )
                    .ice()?
            } else {
                p
            };
            return self.b.build_bit_cast(p, ty, "f").ice();
        }
        let vt = parts[0].get_type().vec_type(parts.len() as u32);
        let mut v = vt.get_undef();
        for (i, p) in parts.iter().enumerate() {
            v = self.b.build_insert_element(v, *p, self.i32c(i as i64), "p").ice()?;
        }
        self.b.build_bit_cast(v, ty, "f").ice()
    }

    /// `if cond { *p = parts }` in global memory, without a branch: a predicated `st.global`.
    fn pred_store(&self, cond: IntValue<'c>, p: PointerValue<'c>, parts: &[IntValue<'c>], bytes: usize) -> Res<()> {
        let (_, n, sfx, reg) = access(self.ctx, bytes).ok_or("no predicated store of this size")?;
        let addr = self.b.build_ptr_to_int(p, self.ctx.i64_type(), "a").ice()?;
        let sfx = if sfx == "u8" { "b8" } else { sfx };
        let (text, cons) = if n == 1 {
            (format!("@$0 st.global.{sfx} [$1], $2;"), format!("b,l,{reg},~{{memory}}"))
        } else {
            (format!("@$0 st.global.v2.{sfx} [$1], {{$2, $3}};"), format!("b,l,{reg},{reg},~{{memory}}"))
        };
        let mut args: Vec<BasicValueEnum<'c>> = vec![cond.into(), addr.into()];
        args.extend(parts.iter().map(|&x| BasicValueEnum::from(x)));
        self.asm_void_args(&text, &cons, &args)
    }

    /// `cond ? *p : init` of `bytes` bytes in global memory, without a branch: a predicated
    /// `ld.global` (its destination starts as `init`, or 0).
    fn pred_load(&self, cond: IntValue<'c>, p: PointerValue<'c>, init: Option<IntValue<'c>>, bytes: usize) -> Res<Vec<IntValue<'c>>> {
        let (it, n, sfx, reg) = access(self.ctx, bytes).ok_or("no predicated load of this size")?;
        let addr = self.b.build_ptr_to_int(p, self.ctx.i64_type(), "a").ice()?;
        let init = match init {
            Some(v) if v.get_type() != it => self.b.build_int_z_extend(v, it, "z").ice()?,
            Some(v) => v,
            None => it.const_zero(),
        };
        // Side effects and a memory clobber: it stays in order with the stores around it.
        if n == 1 {
            let text = format!("@$1 ld.global.{sfx} $0, [$2];");
            let v = self.asm(&text, &format!("={reg},b,l,0,~{{memory}}"), it.into(), &[cond.into(), addr.into(), init.into()], true)?;
            return Ok(vec![v.into_int_value()]);
        }
        let text = format!("@$2 ld.global.v2.{sfx} {{$0, $1}}, [$3];");
        let ret = self.ctx.struct_type(&[it.into(), it.into()], false);
        let cons = format!("={reg},={reg},b,l,0,1,~{{memory}}");
        let s = self.asm(&text, &cons, ret.into(), &[cond.into(), addr.into(), init.into(), init.into()], true)?.into_struct_value();
        (0..2).map(|i| Ok(self.b.build_extract_value(s, i, "p").ice()?.into_int_value())).collect()
    }

    /// `cond ? *p : pad` for one element of `d` in global memory, without a branch.
    pub(crate) fn load_if(&self, cond: IntValue<'c>, p: PointerValue<'c>, d: DType, pad: BasicValueEnum<'c>) -> Res<BasicValueEnum<'c>> {
        let pad_bits = self.to_bits(self.reg_to_mem(pad, d)?, d)?;
        let bits = self.pred_load(cond, p, Some(pad_bits), d.size())?;
        self.mem_to_reg(self.join_parts(&bits, mem_type(self.ctx, d), d.size())?, d)
    }

    /// `if cond { *p = v }` for one element of `d` in global memory, without a branch.
    pub(crate) fn store_if(&self, cond: IntValue<'c>, p: PointerValue<'c>, v: BasicValueEnum<'c>, d: DType) -> Res<()> {
        let bits = self.to_bits(self.reg_to_mem(v, d)?, d)?;
        self.pred_store(cond, p, &[bits], d.size())
    }

    /// A register value as stored in memory (bool as a byte).
    fn reg_to_mem(&self, v: BasicValueEnum<'c>, d: DType) -> Res<BasicValueEnum<'c>> {
        if d == DType::Bool {
            return Ok(self.b.build_int_z_extend(v.into_int_value(), self.ctx.i8_type(), "b").ice()?.into());
        }
        Ok(v)
    }

    fn mem_to_reg(&self, v: BasicValueEnum<'c>, d: DType) -> Res<BasicValueEnum<'c>> {
        if d == DType::Bool {
            return Ok(self.b.build_int_compare(IntPredicate::NE, v.into_int_value(), self.ctx.i8_type().const_zero(), "b").ice()?.into());
        }
        Ok(v)
    }
}

/// The inline-asm form of an edge-path chunk access: `k` elements of `es` bytes (2, 4 or 8), 4,
/// 8 or 16 bytes in all, carried as `parts` registers of `part_bytes` bytes. Operands: the
/// chunk's predicate (`$0`), one predicate per element (`$1..=$k`), the address and the byte
/// stride of the elements, then the data (stores) or the pad (loads).
struct ChunkAsm {
    es: usize,
    k: usize,
    parts: usize,
    part_bytes: usize,
}

impl ChunkAsm {
    fn new(es: usize, k: usize) -> Option<ChunkAsm> {
        let bytes = es * k;
        if k < 2 || ![2, 4, 8].contains(&es) || ![4, 8, 16].contains(&bytes) {
            return None;
        }
        let part_bytes = bytes.min(8);
        Some(ChunkAsm { es, k, parts: bytes / part_bytes, part_bytes })
    }

    fn reg(bytes: usize) -> &'static str {
        match bytes {
            2 => "h",
            4 => "r",
            _ => "l",
        }
    }

    /// The element registers `%te0, …`, declared, and the element address register `%ta`.
    fn decls(&self) -> String {
        format!(".reg .b{} %te<{}>;\n.reg .b64 %ta;\n", self.es * 8, self.k)
    }

    /// `{%te0, …}` of part `j` (or `%tej` when a part is one element).
    fn part_elems(&self, j: usize) -> String {
        let per = self.part_bytes / self.es;
        if per == 1 {
            return format!("%te{j}");
        }
        let names: Vec<String> = (j * per..(j + 1) * per).map(|e| format!("%te{e}")).collect();
        format!("{{{}}}", names.join(", "))
    }

    /// The data of the whole chunk: one register, or `{a, b}` of the two halves.
    fn vector_data(&self, parts: &[String]) -> String {
        if self.parts == 1 { parts[0].clone() } else { format!("{{{}}}", parts.join(", ")) }
    }

    /// The PTX type of the whole-chunk access.
    fn vector_type(&self) -> String {
        if self.parts == 1 { format!("b{}", self.part_bytes * 8) } else { "v2.b64".into() }
    }

    /// The chunk's masks from operands `lead` (leading indices inside), `aligned`, `idx` (the
    /// first element's last index) and `size` (the last dimension): `%tf` the whole chunk as
    /// one vector access, `%tl` element by element otherwise; `%tq` is set per element by
    /// `element_mask`.
    fn masks_text(&self, lead: usize, aligned: usize, idx: usize, size: usize) -> String {
        let mut t = ".reg .pred %tf, %tl, %tq;\n.reg .b32 %tc;\n".to_string();
        t += &format!("add.s32 %tc, ${idx}, {};\n", self.k - 1);
        t += &format!("setp.lt.and.u32 %tf, %tc, ${size}, ${lead};\n");
        t += &format!("setp.lt.and.u32 %tf, ${idx}, ${size}, %tf;\n");
        t += &format!("and.pred %tf, %tf, ${aligned};\n");
        t += "not.pred %tl, %tf;\n";
        t += &format!("and.pred %tl, %tl, ${lead};\n");
        t
    }

    /// `%tq`: element `e` is inside and the chunk is not one vector access.
    fn element_mask(e: usize, idx: usize, size: usize) -> String {
        if e == 0 {
            format!("setp.lt.and.u32 %tq, ${idx}, ${size}, %tl;\n")
        } else {
            format!("add.s32 %tc, ${idx}, {e};\nsetp.lt.and.u32 %tq, %tc, ${size}, %tl;\n")
        }
    }

    /// Operands: `lead`, `aligned`, `idx`, `size`, the address, the byte stride, the data parts.
    fn store_text(&self) -> String {
        let (a, s, data) = (4, 5, 6);
        let parts: Vec<String> = (0..self.parts).map(|j| format!("${}", data + j)).collect();
        let mut t = format!("{{\n{}{}", self.decls(), self.masks_text(0, 1, 2, 3));
        t += &format!("@%tf st.global.{} [${a}], {};\n", self.vector_type(), self.vector_data(&parts));
        for (j, p) in parts.iter().enumerate() {
            t += &format!("mov.b{} {}, {p};\n", self.part_bytes * 8, self.part_elems(j));
        }
        t += &format!("mov.b64 %ta, ${a};\n");
        for e in 0..self.k {
            if e > 0 {
                t += &format!("add.s64 %ta, %ta, ${s};\n");
            }
            t += &ChunkAsm::element_mask(e, 2, 3);
            t += &format!("@%tq st.global.b{} [%ta], %te{e};\n", self.es * 8);
        }
        t + "}"
    }

    fn store_constraints(&self) -> String {
        let mut c = vec!["b", "b", "r", "r", "l", "l"];
        c.extend(vec![ChunkAsm::reg(self.part_bytes); self.parts]);
        c.push("~{memory}");
        c.join(",")
    }

    /// Outputs `$0..$k-1` (the elements); then `lead`, `aligned`, `idx`, `size`, the address,
    /// the byte stride and the pad.
    fn load_text(&self) -> String {
        let k = self.k;
        let (lead, aligned, idx, size, a, s, pad) = (k, k + 1, k + 2, k + 3, k + 4, k + 5, k + 6);
        let tmp: Vec<String> = (0..self.parts).map(|j| format!("%tp{j}")).collect();
        let mut t = format!("{{\n{}.reg .b{} %tp<{}>;\n", self.decls(), self.part_bytes * 8, self.parts);
        t += &self.masks_text(lead, aligned, idx, size);
        for e in 0..k {
            t += &format!("mov.b{} ${e}, ${pad};\n", self.es * 8);
        }
        t += &format!("@%tf ld.global.{} {}, [${a}];\n", self.vector_type(), self.vector_data(&tmp));
        for (j, p) in tmp.iter().enumerate() {
            t += &format!("@%tf mov.b{} {}, {p};\n", self.part_bytes * 8, self.part_elems(j));
        }
        for e in 0..k {
            t += &format!("@%tf mov.b{} ${e}, %te{e};\n", self.es * 8);
        }
        t += &format!("mov.b64 %ta, ${a};\n");
        for e in 0..k {
            if e > 0 {
                t += &format!("add.s64 %ta, %ta, ${s};\n");
            }
            t += &ChunkAsm::element_mask(e, idx, size);
            t += &format!("@%tq ld.global.b{} ${e}, [%ta];\n", self.es * 8);
        }
        t + "}"
    }

    fn load_constraints(&self) -> String {
        let r = ChunkAsm::reg(self.es);
        let out = format!("=&{r}");
        let mut c = vec![out.as_str(); self.k];
        c.extend(["b", "b", "r", "r", "l", "l", r]);
        c.push("~{memory}");
        c.join(",")
    }
}

/// Vector types of memory element types.
trait VecOf<'c> {
    fn into_int_type_or_float(self, n: u32) -> Res<inkwell::types::VectorType<'c>>;
}

impl<'c> VecOf<'c> for BasicTypeEnum<'c> {
    fn into_int_type_or_float(self, n: u32) -> Res<inkwell::types::VectorType<'c>> {
        match self {
            BasicTypeEnum::IntType(t) => Ok(t.vec_type(n)),
            BasicTypeEnum::FloatType(t) => Ok(t.vec_type(n)),
            other => Err(format!("no vector of {other:?}")),
        }
    }
}
