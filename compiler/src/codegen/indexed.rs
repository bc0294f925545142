//! Per-thread code of the indexed and debugging ops: `gather`, `scatter`, the atomics, `print`
//! and `assert`.
//!
//! Each thread handles the elements it holds (the operands of one op share a layout, so register
//! `r` of every operand is the same element). An element's address is the tensor's base plus
//! `Σ index · stride`, and it is touched only when its mask holds and every index is inside its
//! dimension (unsigned compare, so negatives fail too). A tile with fewer elements than threads
//! is replicated, so writes, atomics and prints of it are done by its owner thread only (as
//! `store` does); reads and asserts need no owner.

use super::{Cv, Gen, Ice, Res, declare, mem_type};
use crate::dtype::DType;
use crate::ir::{Op, Value};
use crate::lir::{self, Layout};
use crate::tir::{self, AtomicOp, FormatPiece};
use inkwell::AddressSpace;
use inkwell::IntPredicate;
use inkwell::module::Linkage;
use inkwell::types::{BasicMetadataTypeEnum, BasicType, BasicTypeEnum};
use inkwell::values::{AsValueRef, BasicMetadataValueEnum, BasicValueEnum, IntValue, PointerValue};

impl<'c> Gen<'c, '_> {
    /// `tid < numel` for a replicated tile (one thread per element), `None` when every element
    /// has exactly one holder.
    pub(crate) fn owner(&self, t: &lir::Type) -> Res<Option<IntValue<'c>>> {
        match t.layout() {
            Some(Layout::Blocked { .. }) if t.numel() < self.k.threads as i64 => {
                Ok(Some(self.icmp(IntPredicate::ULT, self.tid, self.i32c(t.numel()))?))
            }
            // Each row value is held by the 4 lanes of a quad: the first one owns it.
            Some(Layout::MmaRows { .. }) => Ok(Some(self.icmp(IntPredicate::EQ, self.and(self.tid, self.i32c(3))?, self.i32c(0))?)),
            // Each column is held by the lanes of every row: lane `l < 4` of the first warp row.
            Some(Layout::MmaCols { warps_n, .. }) => {
                let first_rows = self.icmp(IntPredicate::ULT, self.tid, self.i32c(32 * warps_n as i64))?;
                let lane = self.and(self.tid, self.i32c(31))?;
                Ok(Some(self.and(first_rows, self.icmp(IntPredicate::ULT, lane, self.i32c(4))?)?))
            }
            Some(Layout::Blocked { .. } | Layout::Mma { .. }) | None => Ok(None),
        }
    }

    /// Address and "selected and in range" flag of each register of an indexed access.
    fn indexed_addrs(&self, tensor: &Cv<'c>, idx: &[Value], mask: Value, t: &lir::Type) -> Res<Vec<(PointerValue<'c>, IntValue<'c>)>> {
        let Cv::Tensor { ptr, sizes, strides } = tensor else { return Err("indexed access to a non-tensor".into()) };
        if idx.len() != sizes.len() {
            return Err(format!("{} indices for a rank-{} tensor", idx.len(), sizes.len()));
        }
        let idx: Vec<Vec<BasicValueEnum>> = idx.iter().map(|&v| self.regs(v)).collect::<Res<_>>()?;
        let mask = self.regs(mask)?;
        let mut out = vec![];
        for (r, m) in mask.iter().enumerate() {
            let mut ok = m.into_int_value();
            let mut lin = self.i64c(0);
            for (j, regs) in idx.iter().enumerate() {
                let i = regs.get(r).ok_or("index registers do not match the mask")?.into_int_value();
                ok = self.and(ok, self.icmp(IntPredicate::ULT, i, sizes[j])?)?;
                lin = self.add(lin, self.mul(self.sext(i, self.ctx.i64_type())?, strides[j])?)?;
            }
            // SAFETY (of the LLVM IR): only dereferenced under `ok`.
            let p = unsafe { self.b.build_gep(mem_type(self.ctx, t.dtype()), *ptr, &[lin], "p").ice()? };
            out.push((p, ok));
        }
        Ok(out)
    }

    /// `gather t, i0, …, mask, pad`.
    pub(crate) fn gather(&mut self, op: Op) -> Res<Vec<Cv<'c>>> {
        let d = self.k.body.op(op);
        let (operands, res) = (d.operands.clone(), *d.results.first().ok_or("gather without a result")?);
        let t = self.ty(res).clone();
        let n = operands.len();
        let tensor = self.vals.get(&operands[0]).cloned().ok_or("gather from an undefined tensor")?;
        let pad = self.regs(operands[n - 1])?[0];
        let addrs = self.indexed_addrs(&tensor, &operands[1..n - 2], operands[n - 2], &t)?;
        let dt = t.dtype();
        let mut regs = vec![];
        for (p, ok) in addrs {
            regs.push(self.load_if(ok, p, dt, pad)?);
        }
        Ok(vec![Cv::Regs(regs)])
    }

    /// `scatter` (`atomic: None`) and `atomic.*`: `t, i0, …, x, mask`.
    pub(crate) fn indexed_write(&mut self, op: Op, atomic: Option<AtomicOp>) -> Res<Vec<Cv<'c>>> {
        let operands = self.k.body.op(op).operands.clone();
        let n = operands.len();
        if n < 4 {
            return Err("an indexed write needs a tensor, indices, values and a mask".into());
        }
        let tensor = self.vals.get(&operands[0]).cloned().ok_or("scatter to an undefined tensor")?;
        let x = operands[n - 2];
        let t = self.ty(x).clone();
        let vals = self.regs(x)?;
        let addrs = self.indexed_addrs(&tensor, &operands[1..n - 2], operands[n - 1], &t)?;
        let owner = self.owner(&t)?;
        let dt = t.dtype();
        for ((p, ok), v) in addrs.into_iter().zip(vals) {
            let cond = match owner {
                Some(o) => self.and(ok, o)?,
                None => ok,
            };
            if atomic.is_none() {
                self.store_if(cond, p, v, dt)?;
                continue;
            }
            self.guarded(
                cond,
                &mut |g| {
                    match atomic {
                        None => g.store_mem(p, v, dt)?,
                        Some(a) => g.atomic_rmw(a, p, v, dt)?,
                    }
                    Ok(None)
                },
                None,
            )?;
        }
        Ok(vec![])
    }

    /// One relaxed (monotonic), device-wide read-modify-write of `v` at `p`.
    fn atomic_rmw(&self, a: AtomicOp, p: PointerValue<'c>, v: BasicValueEnum<'c>, d: DType) -> Res<()> {
        use inkwell::llvm_sys::LLVMAtomicOrdering::LLVMAtomicOrderingMonotonic;
        use inkwell::llvm_sys::LLVMAtomicRMWBinOp as Rmw;
        let op = match (a, d.is_float(), d.is_signed()) {
            (AtomicOp::Add, true, _) => Rmw::LLVMAtomicRMWBinOpFAdd,
            (AtomicOp::Max, true, _) => Rmw::LLVMAtomicRMWBinOpFMax,
            (AtomicOp::Min, true, _) => Rmw::LLVMAtomicRMWBinOpFMin,
            (AtomicOp::Add, false, _) => Rmw::LLVMAtomicRMWBinOpAdd,
            (AtomicOp::Max, false, true) => Rmw::LLVMAtomicRMWBinOpMax,
            (AtomicOp::Min, false, true) => Rmw::LLVMAtomicRMWBinOpMin,
            (AtomicOp::Max, false, false) => Rmw::LLVMAtomicRMWBinOpUMax,
            (AtomicOp::Min, false, false) => Rmw::LLVMAtomicRMWBinOpUMin,
        };
        if !tir::verify::atomic_dtype_ok(a, d) {
            return Err(format!("atomic {} on {d}", a.name()));
        }
        // inkwell's `build_atomicrmw` takes integers only; the C API takes any of the types the
        // verifier allows (i32, i64, f32, f64). SAFETY: the builder is positioned inside the
        // function, `p` points to global memory of `d`, and `v` has type `d`.
        let r = unsafe {
            inkwell::llvm_sys::core::LLVMBuildAtomicRMW(
                self.b.as_mut_ptr(),
                op,
                p.as_value_ref(),
                v.as_value_ref(),
                LLVMAtomicOrderingMonotonic,
                0,
            )
        };
        if r.is_null() { Err("LLVM could not build an atomic".into()) } else { Ok(()) }
    }

    /// A private constant string in global memory, as a generic pointer (what `vprintf` and
    /// `__assertfail` take).
    fn global_string(&self, s: &str) -> Res<PointerValue<'c>> {
        let bytes = self.ctx.const_string(s.as_bytes(), true);
        let g = self.module.add_global(bytes.get_type(), Some(AddressSpace::from(1u16)), "str");
        g.set_initializer(&bytes);
        g.set_constant(true);
        g.set_linkage(Linkage::Private);
        self.b.build_address_space_cast(g.as_pointer_value(), self.ctx.ptr_type(AddressSpace::default()), "s").ice()
    }

    /// `print "fmt", x…`: one `vprintf` per element this thread owns.
    pub(crate) fn print(&mut self, op: Op, fmt: &str) -> Res<Vec<Cv<'c>>> {
        let operands = self.k.body.op(op).operands.clone();
        let pieces = tir::parse_format(fmt)?;
        let t = match operands.first() {
            Some(&v) => self.ty(v).clone(),
            None => lir::Type::Tile { dtype: DType::I32, shape: vec![], layout: Layout::blocked_for(1, self.k.threads) },
        };
        let dtypes: Vec<DType> = operands.iter().map(|&v| self.ty(v).dtype()).collect();
        let regs: Vec<Vec<BasicValueEnum>> = operands.iter().map(|&v| self.regs(v)).collect::<Res<_>>()?;
        let rank = t.shape().len();
        // The printf format: the program id, the element index for tiles, then the text.
        let mut c_fmt = String::from("program (%d, %d, %d)");
        if rank > 0 {
            c_fmt.push_str(&format!(" [{}]", vec!["%d"; rank].join(", ")));
        }
        c_fmt.push_str(": ");
        let mut next = dtypes.iter();
        for p in &pieces {
            match p {
                FormatPiece::Text(s) => c_fmt.push_str(&s.replace('%', "%%")),
                FormatPiece::Value => c_fmt.push_str(printf_spec(*next.next().ok_or("fewer operands than `{}`")?)),
            }
        }
        c_fmt.push('\n');
        let fmt_ptr = self.global_string(&c_fmt)?;
        let pids = ["x", "y", "z"]
            .iter()
            .map(|a| self.call(&format!("llvm.nvvm.read.ptx.sreg.ctaid.{a}"), &[], self.ctx.i32_type().into()))
            .collect::<Res<Vec<_>>>()?;
        let owner = self.owner(&t)?;
        let (t_str, f_str) = if dtypes.contains(&DType::Bool) {
            (Some(self.global_string("true")?), Some(self.global_string("false")?))
        } else {
            (None, None)
        };
        for r in 0..self.nregs(&t).max(1) {
            let mut args: Vec<BasicValueEnum> = pids.clone();
            if rank > 0 {
                args.extend(self.coords(&t, r)?.into_iter().map(BasicValueEnum::from));
            }
            for (i, &d) in dtypes.iter().enumerate() {
                let v = *regs[i].get(r).ok_or("print operands have different register counts")?;
                args.push(match (d, t_str, f_str) {
                    (DType::Bool, Some(ts), Some(fs)) => self.b.build_select(v.into_int_value(), ts, fs, "b").ice()?,
                    _ => self.vararg(v, d)?,
                });
            }
            match owner {
                Some(o) => {
                    self.guarded(o, &mut |g| g.vprintf(fmt_ptr, &args).map(|_| None), None)?;
                }
                None => self.vprintf(fmt_ptr, &args)?,
            }
        }
        Ok(vec![])
    }

    /// A value promoted as C promotes variadic arguments: floats to double, small integers to
    /// 32 bits.
    fn vararg(&self, v: BasicValueEnum<'c>, d: DType) -> Res<BasicValueEnum<'c>> {
        let b = &self.b;
        Ok(match d {
            d if d.is_float() && d != DType::F64 => b.build_float_ext(v.into_float_value(), self.ctx.f64_type(), "pf").ice()?.into(),
            DType::I8 | DType::I16 => b.build_int_s_extend(v.into_int_value(), self.ctx.i32_type(), "pi").ice()?.into(),
            DType::U8 => b.build_int_z_extend(v.into_int_value(), self.ctx.i32_type(), "pi").ice()?.into(),
            _ => v,
        })
    }

    /// `vprintf(fmt, &args)`: the arguments are packed into a naturally aligned struct on the
    /// stack (allocated once, in the entry block).
    fn vprintf(&self, fmt: PointerValue<'c>, args: &[BasicValueEnum<'c>]) -> Res<()> {
        let tys: Vec<BasicTypeEnum> = args.iter().map(|a| a.get_type()).collect();
        let st = self.ctx.struct_type(&tys, false);
        let buf = self.entry_alloca(st.as_basic_type_enum())?;
        for (i, a) in args.iter().enumerate() {
            let p = self.b.build_struct_gep(st, buf, i as u32, "arg").ice()?;
            self.b.build_store(p, *a).ice()?;
        }
        let ptr = self.ctx.ptr_type(AddressSpace::default());
        let f = declare(self.module, "vprintf", self.ctx.i32_type().fn_type(&[ptr.into(), ptr.into()], false));
        self.b.build_call(f, &[fmt.into(), buf.into()], "").ice()?;
        Ok(())
    }

    /// An `alloca` at the start of the function, so that a loop does not grow the stack.
    fn entry_alloca(&self, ty: BasicTypeEnum<'c>) -> Res<PointerValue<'c>> {
        let entry = self.func.get_first_basic_block().ok_or("no entry block")?;
        let b = self.ctx.create_builder();
        match entry.get_first_instruction() {
            Some(i) => b.position_before(&i),
            None => b.position_at_end(entry),
        }
        b.build_alloca(ty, "buf").ice()
    }

    /// `assert "msg", c`: a thread holding a false element calls `__assertfail` (the CUDA
    /// runtime prints the message with the block and thread and stops the kernel) and traps.
    pub(crate) fn assert(&mut self, op: Op, message: &str) -> Res<Vec<Cv<'c>>> {
        let c = *self.k.body.op(op).operands.first().ok_or("assert without a condition")?;
        let regs = self.regs(c)?;
        let mut all = self.ctx.bool_type().const_int(1, false);
        for v in regs {
            all = self.b.build_and(all, v.into_int_value(), "all").ice()?;
        }
        let fail = self.block("assert.fail");
        let ok = self.block("assert.ok");
        self.b.build_conditional_branch(all, ok, fail).ice()?;
        self.b.position_at_end(fail);
        let msg = self.global_string(message)?;
        let file = self.global_string(&format!("{}.tile", self.k.name))?;
        let func = self.global_string(&self.k.name)?;
        let ptr = self.ctx.ptr_type(AddressSpace::default());
        let params: Vec<BasicMetadataTypeEnum> =
            vec![ptr.into(), ptr.into(), self.ctx.i32_type().into(), ptr.into(), self.ctx.i64_type().into()];
        let f = declare(self.module, "__assertfail", self.ctx.void_type().fn_type(&params, false));
        let args: Vec<BasicMetadataValueEnum> =
            vec![msg.into(), file.into(), self.i32c(0).into(), func.into(), self.ctx.i64_type().const_int(1, false).into()];
        self.b.build_call(f, &args, "").ice()?;
        self.call_void("llvm.trap")?;
        self.b.build_unreachable().ice()?;
        self.b.position_at_end(ok);
        Ok(vec![])
    }
}

/// The `printf` conversion of a dtype after `vararg`'s promotion.
fn printf_spec(d: DType) -> &'static str {
    match d {
        DType::Bool => "%s",
        DType::I8 | DType::I16 | DType::I32 => "%d",
        DType::U8 | DType::U32 => "%u",
        DType::I64 => "%lld",
        DType::U64 => "%llu",
        DType::F16 | DType::BF16 | DType::F32 | DType::F64 => "%g",
    }
}
