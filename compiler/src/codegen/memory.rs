//! Window loads and stores: vectorised where the elements a thread holds are contiguous in
//! memory, masks only where a chunk touches an edge.
//!
//! A thread's registers are grouped in chunks of elements consecutive along the last dimension
//! (a blocked layout's `vec`, an MMA accumulator's column pairs). For each chunk:
//! - fully inside the tensor, with a unit last stride and an address aligned to the chunk's
//!   size (all checked at run time): one vector access;
//! - otherwise element by element: loads read a clamped, always-valid address and select the
//!   pad (no branch), stores are predicated.
//!
//! A load from an empty tensor (a size of 0) reads nothing: one uniform branch skips the op.

use super::{Cv, Gen, Ice, Res, mem_type};
use crate::dtype::DType;
use crate::ir::Value;
use crate::lir::{self, Layout};
use inkwell::IntPredicate;
use inkwell::values::{BasicValue, BasicValueEnum, IntValue, PointerValue};

/// Where one chunk of a window access goes.
struct Chunk<'c> {
    /// The registers, consecutive along the last dimension.
    regs: Vec<usize>,
    /// The first element's address (valid only where `inb[0]`).
    ptr: PointerValue<'c>,
    /// Linear element offset of the first element.
    lin: IntValue<'c>,
    /// Per element: inside the tensor.
    inb: Vec<IntValue<'c>>,
    /// Every element inside, contiguous and aligned: one vector access.
    fast: IntValue<'c>,
}

impl<'c> Gen<'c, '_> {
    /// Registers grouped by contiguity along the last dimension.
    fn chunks_of(&self, t: &lir::Type) -> Vec<Vec<usize>> {
        let n = self.nregs(t);
        let last = t.shape().last().copied().unwrap_or(1);
        let group = match t.layout() {
            Some(Layout::Blocked { vec }) if t.numel() >= self.k.threads as i64 && last % vec as i64 == 0 => vec as usize,
            Some(Layout::Mma { .. }) => 2,
            _ => 1,
        };
        (0..n).step_by(group.max(1)).map(|r| (r..(r + group).min(n)).collect()).collect()
    }

    fn window_chunks(&self, tensor: &Cv<'c>, offs: &[Value], t: &lir::Type, d: DType) -> Res<Vec<Chunk<'c>>> {
        let Cv::Tensor { ptr, sizes, strides } = tensor else { return Err("window access on a non-tensor".into()) };
        let offs: Vec<IntValue> = offs.iter().map(|&o| self.regs(o).map(|r| r[0].into_int_value())).collect::<Res<_>>()?;
        let i64t = self.ctx.i64_type();
        let b = &self.b;
        let rank = sizes.len();
        let last = rank - 1;
        let unit = b.build_int_compare(IntPredicate::EQ, strides[last], i64t.const_int(1, false), "unit").ice()?;
        let mut out = vec![];
        for regs in self.chunks_of(t) {
            let n = regs.len() as i64;
            let c = self.coords(t, regs[0])?;
            let b = &self.b;
            let mut lead = self.ctx.bool_type().const_int(1, false);
            let mut lin = self.i64c(0);
            let mut idx_last = self.i32c(0);
            for i in 0..rank {
                let idx = b.build_int_add(offs[i], c[i], "x").ice()?;
                if i == last {
                    idx_last = idx;
                } else {
                    let ok = b.build_int_compare(IntPredicate::ULT, idx, sizes[i], "ok").ice()?;
                    lead = b.build_and(lead, ok, "lead").ice()?;
                }
                let wide = b.build_int_s_extend(idx, i64t, "w").ice()?;
                lin = b.build_int_add(lin, b.build_int_mul(wide, strides[i], "s").ice()?, "lin").ice()?;
            }
            let mut inb = vec![];
            for e in 0..n {
                let ie = b.build_int_add(idx_last, self.i32c(e), "xe").ice()?;
                let ok = b.build_int_compare(IntPredicate::ULT, ie, sizes[last], "oke").ice()?;
                inb.push(b.build_and(lead, ok, "inb").ice()?);
            }
            // SAFETY (of the LLVM IR): dereferenced only where in bounds (or clamped).
            let p = unsafe { b.build_gep(mem_type(self.ctx, d), *ptr, &[lin], "p").ice()? };
            let fast = if n > 1 {
                let bytes = n * d.size() as i64;
                let a = b.build_ptr_to_int(p, i64t, "pa").ice()?;
                let aligned = b
                    .build_int_compare(
                        IntPredicate::EQ,
                        b.build_and(a, i64t.const_int(bytes as u64 - 1, false), "al").ice()?,
                        i64t.const_zero(),
                        "al",
                    )
                    .ice()?;
                let all = b.build_and(inb[0], inb[n as usize - 1], "all").ice()?;
                b.build_and(b.build_and(all, unit, "f").ice()?, aligned, "fast").ice()?
            } else {
                self.ctx.bool_type().const_zero()
            };
            out.push(Chunk { regs, ptr: p, lin, inb, fast });
        }
        Ok(out)
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
        // Uniform: a tensor with no element has no valid address to clamp to.
        let mut nonempty = self.ctx.bool_type().const_int(1, false);
        for s in sizes {
            let ok = self.b.build_int_compare(IntPredicate::SGT, *s, self.i32c(0), "ne").ice()?;
            nonempty = self.b.build_and(nonempty, ok, "ne").ice()?;
        }
        let pre = self.b.get_insert_block().ok_or("no block")?;
        let body = self.block("ld.body");
        let join = self.block("ld.join");
        self.b.build_conditional_branch(nonempty, body, join).ice()?;
        self.b.position_at_end(body);
        let chunks = self.window_chunks(tensor, offs, t, d)?;
        let last_stride = strides[strides.len() - 1];
        let mut vals: Vec<Option<BasicValueEnum>> = vec![None; n];
        for ch in chunks {
            let k = ch.regs.len();
            if k > 1 {
                let vb = self.block("ld.vec");
                let sb = self.block("ld.scalar");
                let jb = self.block("ld.chunk");
                self.b.build_conditional_branch(ch.fast, vb, sb).ice()?;
                self.b.position_at_end(vb);
                let vt = mem_type(self.ctx, d).into_int_type_or_float(k as u32)?;
                let v = self.b.build_load(vt, ch.ptr, "vld").ice()?;
                if let Some(inst) = v.as_instruction_value() {
                    inst.set_alignment((k * d.size()) as u32).ice()?;
                }
                let mut vvals = vec![];
                for e in 0..k {
                    let x = self.b.build_extract_element(v.into_vector_value(), self.i32c(e as i64), "e").ice()?;
                    vvals.push(self.mem_to_reg(x, d)?);
                }
                let vend = self.b.get_insert_block().ok_or("no block")?;
                self.b.build_unconditional_branch(jb).ice()?;
                self.b.position_at_end(sb);
                let svals = self.masked_scalars(*ptr, &ch, last_stride, d, pad)?;
                let send = self.b.get_insert_block().ok_or("no block")?;
                self.b.build_unconditional_branch(jb).ice()?;
                self.b.position_at_end(jb);
                for e in 0..k {
                    let phi = self.b.build_phi(vvals[e].get_type(), "v").ice()?;
                    phi.add_incoming(&[(&vvals[e] as &dyn BasicValue, vend), (&svals[e] as &dyn BasicValue, send)]);
                    vals[ch.regs[e]] = Some(phi.as_basic_value());
                }
            } else {
                let svals = self.masked_scalars(*ptr, &ch, last_stride, d, pad)?;
                vals[ch.regs[0]] = Some(svals[0]);
            }
        }
        let bend = self.b.get_insert_block().ok_or("no block")?;
        self.b.build_unconditional_branch(join).ice()?;
        self.b.position_at_end(join);
        let mut out = vec![];
        for v in vals {
            let v = v.ok_or("register without a value")?;
            let phi = self.b.build_phi(v.get_type(), "lv").ice()?;
            phi.add_incoming(&[(&v as &dyn BasicValue, bend), (&pad as &dyn BasicValue, pre)]);
            out.push(phi.as_basic_value());
        }
        Ok(out)
    }

    /// Element loads of a chunk from clamped addresses, selecting the pad outside the tensor.
    fn masked_scalars(
        &self,
        base: PointerValue<'c>,
        ch: &Chunk<'c>,
        last_stride: IntValue<'c>,
        d: DType,
        pad: BasicValueEnum<'c>,
    ) -> Res<Vec<BasicValueEnum<'c>>> {
        let i64t = self.ctx.i64_type();
        let mut out = vec![];
        for (e, inb) in ch.inb.iter().enumerate() {
            let b = &self.b;
            let lin = b.build_int_add(ch.lin, b.build_int_mul(last_stride, i64t.const_int(e as u64, false), "o").ice()?, "le").ice()?;
            let lin = b.build_select(*inb, lin, i64t.const_zero(), "cl").ice()?.into_int_value();
            // SAFETY (of the LLVM IR): the offset is in range, or 0 (the tensor is not empty).
            let p = unsafe { b.build_gep(mem_type(self.ctx, d), base, &[lin], "pe").ice()? };
            let v = self.load_mem(p, d)?;
            out.push(self.b.build_select(*inb, v, pad, "pv").ice()?);
        }
        Ok(out)
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
        let last_stride = strides[strides.len() - 1];
        let i64t = self.ctx.i64_type();
        for ch in self.window_chunks(tensor, offs, t, d)? {
            let k = ch.regs.len();
            let scalar = |g: &mut Self, ch: &Chunk<'c>| -> Res<()> {
                for (e, inb) in ch.inb.iter().enumerate() {
                    let cond = match owner {
                        Some(o) => g.b.build_and(*inb, o, "st").ice()?,
                        None => *inb,
                    };
                    let v = vals[ch.regs[e]];
                    let lin = g.b.build_int_mul(last_stride, i64t.const_int(e as u64, false), "o").ice()?;
                    // SAFETY (of the LLVM IR): only written under `cond`.
                    let p = unsafe { g.b.build_gep(mem_type(g.ctx, d), ch.ptr, &[lin], "pe").ice()? };
                    g.guarded(cond, &mut |g| g.store_mem(p, v, d).map(|_| None), None)?;
                }
                Ok(())
            };
            if k > 1 && owner.is_none() {
                let vb = self.block("st.vec");
                let sb = self.block("st.scalar");
                let jb = self.block("st.chunk");
                self.b.build_conditional_branch(ch.fast, vb, sb).ice()?;
                self.b.position_at_end(vb);
                let vt = mem_type(self.ctx, d).into_int_type_or_float(k as u32)?;
                let mut v = vt.get_undef();
                for e in 0..k {
                    let x = self.reg_to_mem(vals[ch.regs[e]], d)?;
                    v = self.b.build_insert_element(v, x, self.i32c(e as i64), "ins").ice()?;
                }
                let st = self.b.build_store(ch.ptr, v).ice()?;
                st.set_alignment((k * d.size()) as u32).ice()?;
                self.b.build_unconditional_branch(jb).ice()?;
                self.b.position_at_end(sb);
                scalar(self, &ch)?;
                self.b.build_unconditional_branch(jb).ice()?;
                self.b.position_at_end(jb);
            } else {
                scalar(self, &ch)?;
            }
        }
        Ok(())
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

/// Vector types of memory element types.
trait VecOf<'c> {
    fn into_int_type_or_float(self, n: u32) -> Res<inkwell::types::VectorType<'c>>;
}

impl<'c> VecOf<'c> for inkwell::types::BasicTypeEnum<'c> {
    fn into_int_type_or_float(self, n: u32) -> Res<inkwell::types::VectorType<'c>> {
        match self {
            inkwell::types::BasicTypeEnum::IntType(t) => Ok(t.vec_type(n)),
            inkwell::types::BasicTypeEnum::FloatType(t) => Ok(t.vec_type(n)),
            other => Err(format!("no vector of {other:?}")),
        }
    }
}
