//! Tensor-core code generation: coordinates of the MMA accumulator layout, swizzled
//! shared-memory offsets, and `ldmatrix` + `mma.sync.m16n8k16` (inline PTX: LLVM's intrinsics
//! for them take types that differ between versions; the PTX text does not).
//!
//! Fragment layouts (PTX ISA, `mma.m16n8k16` with `.row.col`): lane `l`, `g = l / 4`,
//! `t = l % 4`. A (16×16): registers hold (g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..).
//! B (16×8): (k = 2t..2t+1, n = g), (k = 2t+8.., n = g). C/D (16×8 f32): (g, 2t), (g, 2t+1),
//! (g+8, 2t), (g+8, 2t+1). `ldmatrix.x4` gives register `q` from the 8×8 matrix whose row
//! addresses come from lanes `8q..8q+7`; with `.trans` each lane gets the transposed element.

use super::{Cv, Gen, Ice, Res};
use crate::dtype::DType;
use crate::ir::Value;
use crate::lir::{self, Layout};
use inkwell::types::{BasicType, BasicTypeEnum};
use inkwell::values::{BasicMetadataValueEnum, BasicValueEnum, IntValue};

impl<'c> Gen<'c, '_> {
    /// `(warp_m, warp_n, g, t, lane)` of this thread for an MMA layout.
    pub(crate) fn mma_ids(&self, warps_n: u32) -> Res<(IntValue<'c>, IntValue<'c>, IntValue<'c>, IntValue<'c>, IntValue<'c>)> {
        let b = &self.b;
        let lane = b.build_and(self.tid, self.i32c(31), "lane").ice()?;
        let warp = b.build_right_shift(self.tid, self.i32c(5), false, "warp").ice()?;
        let wm = b.build_int_unsigned_div(warp, self.i32c(warps_n as i64), "wm").ice()?;
        let wn = b.build_int_unsigned_rem(warp, self.i32c(warps_n as i64), "wn").ice()?;
        let g = b.build_right_shift(lane, self.i32c(2), false, "g").ice()?;
        let t = b.build_and(lane, self.i32c(3), "t").ice()?;
        Ok((wm, wn, g, t, lane))
    }

    /// `(row, col)` of register `r` of this thread in an MMA-layout tile of `shape`.
    pub(crate) fn mma_coords(&self, shape: &[i64], warps_m: u32, warps_n: u32, r: usize) -> Res<Vec<IntValue<'c>>> {
        let (wm, wn, g, t, _) = self.mma_ids(warps_n)?;
        let bn = shape[1] / warps_n as i64;
        let nt = (bn / 8) as usize;
        let (c, ni, mi) = (r % 4, (r / 4) % nt, r / 4 / nt);
        let b = &self.b;
        let row0 = self.i32c(mi as i64 * 16 * warps_m as i64 + 8 * (c as i64 / 2));
        let row = b.build_int_add(b.build_int_add(b.build_int_mul(wm, self.i32c(16), "r").ice()?, row0, "r").ice()?, g, "row").ice()?;
        let col0 = self.i32c(ni as i64 * 8 + (c as i64 % 2));
        let col = b.build_int_add(b.build_int_mul(wn, self.i32c(bn), "c").ice()?, col0, "c").ice()?;
        let col = b.build_int_add(col, b.build_int_mul(t, self.i32c(2), "c").ice()?, "col").ice()?;
        Ok(vec![row, col])
    }

    /// Byte offset of element `(row, col)` of a row-major `[rows, cols]` tile of `esize`-byte
    /// elements in shared memory, with the 16-byte chunks of each row swizzled if asked.
    pub(crate) fn smem_offset_2d(&self, row: IntValue<'c>, col: IntValue<'c>, cols: i64, esize: i64, swizzled: bool) -> Res<IntValue<'c>> {
        let b = &self.b;
        let row_bytes = b.build_int_mul(row, self.i32c(cols * esize), "rb").ice()?;
        let chunks = cols * esize / 16;
        let (per_phase, max_phase) = lir::swizzle_params(chunks);
        if !swizzled || max_phase == 1 {
            return b.build_int_add(row_bytes, b.build_int_mul(col, self.i32c(esize), "cb").ice()?, "off").ice();
        }
        let per_chunk = 16 / esize;
        let chunk = b.build_int_unsigned_div(col, self.i32c(per_chunk), "ch").ice()?;
        let within = b.build_int_unsigned_rem(col, self.i32c(per_chunk), "wi").ice()?;
        let within = b.build_int_mul(within, self.i32c(esize), "w").ice()?;
        let phase =
            b.build_int_unsigned_rem(b.build_int_unsigned_div(row, self.i32c(per_phase), "ph").ice()?, self.i32c(max_phase), "ph").ice()?;
        if chunks > 8 && chunks % 8 == 0 {
            // Rows wider than 128 bytes: 128-byte column blocks of 8 rows (1024-byte atoms, the
            // layout of wgmma's 128B swizzle), each 8-row group holding all its blocks in turn.
            let group =
                b.build_int_mul(b.build_int_unsigned_div(row, self.i32c(8), "rg").ice()?, self.i32c(8 * cols * esize), "rg").ice()?;
            let block = b.build_int_mul(b.build_int_unsigned_div(chunk, self.i32c(8), "cb").ice()?, self.i32c(1024), "cb").ice()?;
            let in_row = b.build_int_mul(phase, self.i32c(128), "ir").ice()?;
            let sw = b.build_xor(b.build_int_unsigned_rem(chunk, self.i32c(8), "c8").ice()?, phase, "sw").ice()?;
            let off = b.build_int_add(b.build_int_add(group, block, "off").ice()?, in_row, "off").ice()?;
            let off = b.build_int_add(off, b.build_int_mul(sw, self.i32c(16), "c16").ice()?, "off").ice()?;
            return b.build_int_add(off, within, "off").ice();
        }
        let chunk = b.build_xor(chunk, phase, "sw").ice()?;
        let off = b.build_int_add(row_bytes, b.build_int_mul(chunk, self.i32c(16), "c16").ice()?, "off").ice()?;
        b.build_int_add(off, within, "off").ice()
    }

    fn asm(
        &self,
        text: &str,
        constraints: &str,
        ret: BasicTypeEnum<'c>,
        args: &[BasicValueEnum<'c>],
        side_effects: bool,
    ) -> Res<BasicValueEnum<'c>> {
        let tys: Vec<inkwell::types::BasicMetadataTypeEnum> = args.iter().map(|a| a.get_type().into()).collect();
        let fty = ret.fn_type(&tys, false);
        let f = self.ctx.create_inline_asm(fty, text.to_string(), constraints.to_string(), side_effects, false, None, false);
        let margs: Vec<BasicMetadataValueEnum> = args.iter().map(|&a| a.into()).collect();
        self.b
            .build_indirect_call(fty, f, &margs, "asm")
            .ice()?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| "inline asm returned nothing".to_string())
    }

    /// `ldmatrix.x4` (or `.x2`) at a shared-memory byte offset; returns the 32-bit registers.
    pub(crate) fn ldmatrix(&self, byte_off: IntValue<'c>, count: usize, trans: bool) -> Res<Vec<IntValue<'c>>> {
        let p = self.smem_ptr(byte_off)?;
        let addr = self.b.build_ptr_to_int(p, self.ctx.i64_type(), "a").ice()?;
        let i32t = self.ctx.i32_type();
        let ret = self.ctx.struct_type(&vec![i32t.into(); count], false);
        let regs: Vec<String> = (0..count).map(|i| format!("${i}")).collect();
        let text = format!(
            "ldmatrix.sync.aligned.m8n8.x{count}{}.shared.b16 {{{}}}, [${count}];",
            if trans { ".trans" } else { "" },
            regs.join(", ")
        );
        let cons = format!("{},l,~{{memory}}", vec!["=r"; count].join(","));
        // Side effects: it must not move across the barriers that guard the shared buffer.
        let s = self.asm(&text, &cons, ret.into(), &[addr.into()], true)?.into_struct_value();
        (0..count as u32).map(|i| self.b.build_extract_value(s, i, "m").ice().map(|v| v.into_int_value())).collect()
    }

    fn mma(&self, dtype: DType, a: &[IntValue<'c>], b: &[IntValue<'c>], c: &[BasicValueEnum<'c>]) -> Res<Vec<BasicValueEnum<'c>>> {
        let ty = match dtype {
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            other => return Err(format!("mma on {other}")),
        };
        let text = format!(
            "mma.sync.aligned.m16n8k16.row.col.f32.{ty}.{ty}.f32 {{$0, $1, $2, $3}}, {{$4, $5, $6, $7}}, {{$8, $9}}, {{$10, $11, $12, $13}};"
        );
        let f32t = self.ctx.f32_type();
        let ret = self.ctx.struct_type(&[f32t.into(); 4], false);
        let mut args: Vec<BasicValueEnum> = a.iter().map(|&x| x.into()).collect();
        args.extend(b.iter().map(|&x| BasicValueEnum::from(x)));
        args.extend(c.iter().copied());
        let s = self.asm(&text, "=f,=f,=f,=f,r,r,r,r,r,r,0,1,2,3", ret.into(), &args, false)?.into_struct_value();
        (0..4).map(|i| self.b.build_extract_value(s, i, "d").ice()).collect()
    }

    /// `acc + a · b` on the tensor cores; `a`/`b` are swizzled row-major tiles in shared memory.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn local_mma(
        &mut self,
        t: &lir::Type,
        acc: Value,
        bases: [Option<Value>; 2],
        offs: (u32, u32, bool),
        k: i64,
        dtype: DType,
    ) -> Res<Vec<Cv<'c>>> {
        let (a_off, b_off, b_trans) = offs;
        let base = |g: &Self, v: Option<Value>| -> Res<IntValue<'c>> {
            match v {
                Some(v) => Ok(g.regs(v)?[0].into_int_value()),
                None => Ok(g.i32c(0)),
            }
        };
        let (a_base, b_base) = (base(self, bases[0])?, base(self, bases[1])?);
        let Some(Layout::Mma { warps_m, warps_n }) = t.layout() else { return Err("local_mma result is not in the MMA layout".into()) };
        let (m, n) = (t.shape()[0], t.shape()[1]);
        let (bm, bn) = (m / warps_m as i64, n / warps_n as i64);
        let (mt, nt) = ((bm / 16) as usize, (bn / 8) as usize);
        let esize = dtype.size() as i64;
        let mut accs = self.regs(acc)?;
        let (wm, wn, _, _, lane) = self.mma_ids(warps_n)?;
        let b = &self.b;
        let lanes = self.lane_parts(lane)?;
        let (half, hi8) = (lanes.half, lanes.hi8);
        let a_row0 = b.build_int_add(b.build_int_mul(wm, self.i32c(16), "ar").ice()?, half, "ar").ice()?;
        let b_col0 = b.build_int_mul(wn, self.i32c(bn), "bc").ice()?;
        for ks in 0..k / 16 {
            let mut afr = vec![];
            for mi in 0..mt {
                let row = self.b.build_int_add(a_row0, self.i32c(mi as i64 * 16 * warps_m as i64), "row").ice()?;
                let col = self.b.build_int_add(hi8, self.i32c(ks * 16), "col").ice()?;
                let off = self.smem_offset_2d(row, col, k, esize, true)?;
                let off = self.b.build_int_add(self.b.build_int_add(off, self.i32c(a_off as i64), "off").ice()?, a_base, "off").ice()?;
                afr.push(self.ldmatrix(off, 4, false)?);
            }
            let bfr = self.b_fragments(ks, nt, n, k, b_col0, &lanes, b_off, b_base, b_trans, esize)?;
            for (mi, a) in afr.iter().enumerate() {
                for (ni, bb) in bfr.iter().enumerate() {
                    let base = (mi * nt + ni) * 4;
                    let d = self.mma(dtype, a, bb, &accs[base..base + 4])?;
                    accs[base..base + 4].copy_from_slice(&d);
                }
            }
        }
        Ok(vec![Cv::Regs(accs)])
    }
}

impl<'c> Gen<'c, '_> {
    /// `cp.async` of a window into (swizzled) shared memory; see `lir::OpKind::AsyncCopy`. An
    /// N-D window is copied as the 2-D tile `[product of the leading dims, last dim]`.
    pub(crate) fn async_copy(&mut self, op: crate::ir::Op, offset: u32, swizzled: bool, shape: &[i64]) -> Res<()> {
        let d = self.k.body.op(op).clone();
        let base = self.regs(d.operands[0])?[0].into_int_value();
        let Some(Cv::Tensor { ptr, sizes, strides }) = self.vals.get(&d.operands[1]).cloned() else {
            return Err("async_copy from a non-tensor".into());
        };
        let dtype = self.k.body.ty(d.operands[1]).dtype();
        let es = dtype.size() as i64;
        let offs: Vec<IntValue> = d.operands[2..].iter().map(|&o| self.regs(o).map(|r| r[0].into_int_value())).collect::<Res<_>>()?;
        let rank = shape.len();
        if rank < 2 || offs.len() != rank || sizes.len() != rank {
            return Err("async_copy window rank does not match its tensor".into());
        }
        let last = rank - 1;
        let lead = &shape[..last];
        let (rows, cols) = (lead.iter().product::<i64>(), shape[last]);
        let vec = 16 / es;
        let i64t = self.ctx.i64_type();
        let eq0 = |g: &Self, x: IntValue<'c>, mask: u64| -> Res<IntValue<'c>> {
            let t = x.get_type();
            g.b.build_int_compare(inkwell::IntPredicate::EQ, g.b.build_and(x, t.const_int(mask, false), "a").ice()?, t.const_zero(), "al")
                .ice()
        };
        // Uniform check: the window's 16-byte chunks are aligned and contiguous in memory.
        let addr = self.b.build_ptr_to_int(ptr, i64t, "pa").ice()?;
        let mut ok = eq0(self, addr, 15)?;
        ok = self
            .b
            .build_and(
                ok,
                self.b.build_int_compare(inkwell::IntPredicate::EQ, strides[last], i64t.const_int(1, false), "unit").ice()?,
                "ok",
            )
            .ice()?;
        for s in &strides[..last] {
            let bytes = self.b.build_int_mul(*s, i64t.const_int(es as u64, false), "rs").ice()?;
            ok = self.b.build_and(ok, eq0(self, bytes, 15)?, "ok").ice()?;
        }
        ok = self.b.build_and(ok, eq0(self, offs[last], (vec - 1) as u64)?, "ok").ice()?;
        let fast = self.block("cp.fast");
        let slow = self.block("cp.slow");
        let done = self.block("cp.done");
        self.b.build_conditional_branch(ok, fast, slow).ice()?;
        let chunks_per_row = cols / vec;
        let total = rows * chunks_per_row;
        let threads = self.k.threads as i64;
        // Row `r` of the 2-D view: (all its leading indices in range, element offset of its start).
        let row_at = |g: &Self, r: IntValue<'c>| -> Res<(IntValue<'c>, IntValue<'c>)> {
            let mut ok = g.ctx.bool_type().const_int(1, false);
            let mut lin = i64t.const_zero();
            let mut rest = r;
            for i in (0..last).rev() {
                let idx = g.b.build_int_unsigned_rem(rest, g.i32c(lead[i]), "li").ice()?;
                rest = g.b.build_int_unsigned_div(rest, g.i32c(lead[i]), "lr").ice()?;
                let gi = g.b.build_int_add(offs[i], idx, "gi").ice()?;
                ok = g.b.build_and(ok, g.b.build_int_compare(inkwell::IntPredicate::ULT, gi, sizes[i], "ri").ice()?, "rok").ice()?;
                let w = g.b.build_int_s_extend(gi, i64t, "w").ice()?;
                lin = g.b.build_int_add(lin, g.b.build_int_mul(w, strides[i], "rl").ice()?, "lin").ice()?;
            }
            Ok((ok, lin))
        };
        let cp_async = |g: &Self, dst: IntValue<'c>, src: IntValue<'c>, bytes: Option<IntValue<'c>>| -> Res<()> {
            let mut tys: Vec<inkwell::types::BasicMetadataTypeEnum> = vec![i64t.into(), i64t.into()];
            let mut args: Vec<BasicMetadataValueEnum> = vec![dst.into(), src.into()];
            let (text, cons) = match bytes {
                Some(b) => {
                    tys.push(g.ctx.i32_type().into());
                    args.push(b.into());
                    ("cp.async.cg.shared.global [$0], [$1], 16, $2;", "l,l,r,~{memory}")
                }
                None => ("cp.async.cg.shared.global [$0], [$1], 16;", "l,l,~{memory}"),
            };
            let fty = g.ctx.void_type().fn_type(&tys, false);
            let f = g.ctx.create_inline_asm(fty, text.into(), cons.into(), true, false, None, false);
            g.b.build_indirect_call(fty, f, &args, "").ice()?;
            Ok(())
        };

        // Interior windows (the common case): every chunk is whole and in range, so there is no
        // mask at all; the per-chunk offsets are loop-invariant and hoisted by LLVM.
        self.b.position_at_end(fast);
        let mut inside = self.ctx.bool_type().const_int(1, false);
        for i in 0..rank {
            let b = &self.b;
            let ge0 = b.build_int_compare(inkwell::IntPredicate::SGE, offs[i], self.i32c(0), "ge0").ice()?;
            let end = b.build_int_add(offs[i], self.i32c(shape[i]), "end").ice()?;
            let fits = b.build_int_compare(inkwell::IntPredicate::SLE, end, sizes[i], "fits").ice()?;
            inside = b.build_and(inside, b.build_and(ge0, fits, "in").ice()?, "inside").ice()?;
        }
        let interior = self.block("cp.interior");
        let edge = self.block("cp.edge");
        self.b.build_conditional_branch(inside, interior, edge).ice()?;
        for (blk, masked) in [(interior, false), (edge, true)] {
            self.b.position_at_end(blk);
            for j in 0..(total + threads - 1) / threads {
                let b = &self.b;
                let q = b.build_int_add(self.tid, self.i32c(j * threads), "q").ice()?;
                let row = b.build_int_unsigned_div(q, self.i32c(chunks_per_row), "row").ice()?;
                let col =
                    b.build_int_mul(b.build_int_unsigned_rem(q, self.i32c(chunks_per_row), "cc").ice()?, self.i32c(vec), "col").ice()?;
                let (row_ok, row_lin) = row_at(self, row)?;
                let b = &self.b;
                let gcol = b.build_int_add(offs[last], col, "gc").ice()?;
                let lin = b.build_int_add(row_lin, b.build_int_s_extend(gcol, i64t, "w").ice()?, "lin").ice()?;
                let bytes = if masked {
                    // A chunk past the end of a row reads a prefix (or nothing); cp.async zero-fills.
                    let left = b.build_int_sub(sizes[last], gcol, "left").ice()?;
                    let left = b
                        .build_select(
                            b.build_int_compare(inkwell::IntPredicate::SLT, left, self.i32c(0), "neg").ice()?,
                            self.i32c(0),
                            left,
                            "l",
                        )
                        .ice()?
                        .into_int_value();
                    let left = b
                        .build_select(
                            b.build_int_compare(inkwell::IntPredicate::SGT, left, self.i32c(vec), "big").ice()?,
                            self.i32c(vec),
                            left,
                            "l",
                        )
                        .ice()?
                        .into_int_value();
                    let col_ok = b.build_int_compare(inkwell::IntPredicate::SGE, gcol, self.i32c(0), "cok").ice()?;
                    let valid = b.build_and(row_ok, col_ok, "v").ice()?;
                    let n = b.build_select(valid, left, self.i32c(0), "n").ice()?.into_int_value();
                    Some((valid, b.build_int_mul(n, self.i32c(es), "bytes").ice()?))
                } else {
                    None
                };
                // An invalid chunk still needs a readable address: the tensor's first element.
                let lin = match bytes {
                    Some((valid, _)) => self.b.build_select(valid, lin, i64t.const_zero(), "lin").ice()?.into_int_value(),
                    None => lin,
                };
                // SAFETY (of the LLVM IR): only bytes inside the tensor are read.
                let src = unsafe { self.b.build_gep(super::mem_type(self.ctx, dtype), ptr, &[lin], "src").ice()? };
                let src = self.b.build_ptr_to_int(src, i64t, "s").ice()?;
                let off = self.smem_offset_2d(row, col, cols, es, swizzled)?;
                let off = self.b.build_int_add(self.b.build_int_add(off, self.i32c(offset as i64), "o").ice()?, base, "o").ice()?;
                let dst = self.b.build_ptr_to_int(self.smem_ptr(off)?, i64t, "d").ice()?;
                let whole = total % threads == 0 || (j + 1) * threads <= total;
                let next = self.block("cp.next");
                if !whole {
                    let go = self.block("cp.go");
                    let in_range = self.b.build_int_compare(inkwell::IntPredicate::ULT, q, self.i32c(total), "qok").ice()?;
                    self.b.build_conditional_branch(in_range, go, next).ice()?;
                    self.b.position_at_end(go);
                }
                cp_async(self, dst, src, bytes.map(|b| b.1))?;
                self.b.build_unconditional_branch(next).ice()?;
                self.b.position_at_end(next);
            }
            self.b.build_unconditional_branch(done).ice()?;
        }

        // Slow path: element by element (any strides and alignment), as a loop so that it adds
        // almost no register pressure to the fast path around it.
        self.b.position_at_end(slow);
        let total_el = rows * cols;
        let per = ((total_el + threads - 1) / threads).max(1);
        let zero = super::math::constant(self, crate::tir::Lit::Int(0), dtype)?;
        let mem_ty = super::mem_type(self.ctx, dtype);
        self.counted_loop(per, vec![], &mut |g, j, _| {
            let b = &g.b;
            let l = b.build_int_add(b.build_int_mul(j, g.i32c(threads), "l").ice()?, g.tid, "l").ice()?;
            let row = b.build_int_unsigned_div(l, g.i32c(cols), "row").ice()?;
            let col = b.build_int_unsigned_rem(l, g.i32c(cols), "col").ice()?;
            let (row_ok, row_lin) = row_at(g, row)?;
            let b = &g.b;
            let gcol = b.build_int_add(offs[last], col, "gc").ice()?;
            let c_ok = b.build_int_compare(inkwell::IntPredicate::ULT, gcol, sizes[last], "c").ice()?;
            let l_ok = b.build_int_compare(inkwell::IntPredicate::ULT, l, g.i32c(total_el), "l").ice()?;
            let inb = b.build_and(b.build_and(row_ok, c_ok, "i").ice()?, l_ok, "inb").ice()?;
            let lin = b
                .build_int_add(row_lin, b.build_int_mul(b.build_int_s_extend(gcol, i64t, "w").ice()?, strides[last], "b").ice()?, "lin")
                .ice()?;
            // SAFETY (of the LLVM IR): only dereferenced under `inb`.
            let p = unsafe { b.build_gep(mem_ty, ptr, &[lin], "p").ice()? };
            let v = g.guarded(inb, &mut |g| Ok(Some(g.load_mem(p, dtype)?)), Some(zero))?.ok_or("load")?;
            let off = g.smem_offset_2d(row, col, cols, es, swizzled)?;
            let off = g.b.build_int_add(g.b.build_int_add(off, g.i32c(offset as i64), "o").ice()?, base, "o").ice()?;
            let in_tile = g.b.build_int_compare(inkwell::IntPredicate::ULT, l, g.i32c(total_el), "t").ice()?;
            g.guarded(in_tile, &mut |g| g.store_mem(g.smem_ptr(off)?, v, dtype).map(|_| None), None)?;
            Ok(vec![])
        })?;
        self.b.build_unconditional_branch(done).ice()?;
        self.b.position_at_end(done);
        Ok(())
    }

    pub(crate) fn async_commit(&self) -> Res<()> {
        self.asm_void("cp.async.commit_group;")
    }

    pub(crate) fn async_wait(&self, pending: u32) -> Res<()> {
        self.asm_void(&format!("cp.async.wait_group {pending};"))
    }

    fn asm_void(&self, text: &str) -> Res<()> {
        let fty = self.ctx.void_type().fn_type(&[], false);
        let f = self.ctx.create_inline_asm(fty, text.to_string(), "~{memory}".into(), true, false, None, false);
        self.b.build_indirect_call(fty, f, &[], "").ice()?;
        Ok(())
    }
}

impl<'c> Gen<'c, '_> {
    /// `[row]` (or `[row, 0]`) of register `r` in an `#mma_rows` tile.
    pub(crate) fn mma_row_coords(&self, shape: &[i64], warps_m: u32, r: usize) -> Res<Vec<IntValue<'c>>> {
        let (wm, _, g, _, _) = self.mma_ids(1)?;
        let (mi, h) = ((r / 2) as i64, (r % 2) as i64);
        let b = &self.b;
        let row =
            b.build_int_add(b.build_int_mul(wm, self.i32c(16), "r").ice()?, self.i32c(mi * 16 * warps_m as i64 + 8 * h), "r").ice()?;
        let row = b.build_int_add(row, g, "row").ice()?;
        let mut out = vec![row];
        if shape.len() == 2 {
            out.push(self.i32c(0));
        }
        Ok(out)
    }

    /// Reduces each row of an `#mma<w×1>` tile: over this lane's registers, then across the
    /// quad with butterfly shuffles.
    pub(crate) fn row_reduce(&mut self, x: Value, op: crate::tir::ReduceOp) -> Res<Vec<BasicValueEnum<'c>>> {
        let t = self.k.body.ty(x).clone();
        let regs = self.regs(x)?;
        let d = t.dtype();
        let acc_d = if matches!(d, DType::F16 | DType::BF16) { DType::F32 } else { d };
        let bop = match op {
            crate::tir::ReduceOp::Sum => crate::tir::BinaryOp::Add,
            crate::tir::ReduceOp::Max => crate::tir::BinaryOp::Max,
            crate::tir::ReduceOp::Min => crate::tir::BinaryOp::Min,
        };
        let Some(Layout::Mma { warps_m, .. }) = t.layout() else { return Err("row_reduce of a tile not in the MMA layout".into()) };
        let mt = (t.shape()[0] / warps_m as i64 / 16) as usize;
        let nt = regs.len() / 4 / mt.max(1);
        let mut out = vec![];
        for mi in 0..mt {
            for h in 0..2 {
                let mut acc: Option<BasicValueEnum> = None;
                for ni in 0..nt {
                    for c in [2 * h, 2 * h + 1] {
                        let v = super::math::convert(self, regs[(mi * nt + ni) * 4 + c], d, acc_d)?;
                        acc = Some(match acc {
                            None => v,
                            Some(a) => super::math::binary(self, bop, a, v, acc_d)?,
                        });
                    }
                }
                let mut v = acc.ok_or("empty row")?;
                for lane_mask in [1, 2] {
                    let o = self.shfl_xor(v, lane_mask)?;
                    v = super::math::binary(self, bop, v, o, acc_d)?;
                }
                out.push(super::math::convert(self, v, acc_d, d)?);
            }
        }
        Ok(out)
    }

    /// `shfl.sync.bfly` of a 32-bit register (floats and ints) across the full warp.
    pub(crate) fn shfl_xor(&self, v: BasicValueEnum<'c>, lane_mask: i64) -> Res<BasicValueEnum<'c>> {
        let i32t = self.ctx.i32_type();
        let bits = if v.get_type().is_float_type() {
            if v.get_type() != self.ctx.f32_type().into() {
                return Err("shuffle of a float that is not f32".into());
            }
            self.b.build_bit_cast(v, i32t, "b").ice()?.into_int_value()
        } else {
            let iv = v.into_int_value();
            if iv.get_type().get_bit_width() > 32 {
                return Err("shuffle of a 64-bit integer".into());
            }
            self.b.build_int_z_extend(iv, i32t, "z").ice()?
        };
        let r = self.call(
            "llvm.nvvm.shfl.sync.bfly.i32",
            &[i32t.const_all_ones().into(), bits.into(), self.i32c(lane_mask).into(), self.i32c(31).into()],
            i32t.into(),
        )?;
        let r = r.into_int_value();
        Ok(if v.get_type().is_float_type() {
            self.b.build_bit_cast(r, v.get_type(), "f").ice()?
        } else {
            self.b.build_int_truncate(r, v.into_int_value().get_type(), "t").ice()?.into()
        })
    }

    /// `acc + a · b` with `a` in registers (`#mma<w×1>`, 16-bit floats) and `b` swizzled in
    /// shared memory: the C fragments of n-tiles `2j` and `2j+1` are the A fragment of k-block `j`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn reg_mma(
        &mut self,
        t: &lir::Type,
        acc: Value,
        a: Value,
        b_base: Value,
        b_off: (u32, bool),
        k: i64,
        dtype: DType,
    ) -> Res<Vec<Cv<'c>>> {
        let (b_off, b_trans) = b_off;
        let Some(Layout::Mma { warps_m, warps_n: 1 }) = t.layout() else {
            return Err("reg_mma result is not in the MMA layout with one warp column".into());
        };
        let (m, n) = (t.shape()[0], t.shape()[1]);
        let mt = (m / warps_m as i64 / 16) as usize;
        let nt = (n / 8) as usize;
        let a_regs = self.regs(a)?;
        let knt = (k / 8) as usize;
        let esize = dtype.size() as i64;
        let mut accs = self.regs(acc)?;
        let b_base = self.regs(b_base)?[0].into_int_value();
        let (_, _, _, _, lane) = self.mma_ids(1)?;
        let lanes = self.lane_parts(lane)?;
        for ks in 0..(k / 16) as usize {
            let bfr = self.b_fragments(ks as i64, nt, n, k, self.i32c(0), &lanes, b_off, b_base, b_trans, esize)?;
            for mi in 0..mt {
                let afr = self.a_fragment(&a_regs, mi, knt, ks, dtype)?;
                for (nj, bb) in bfr.iter().enumerate() {
                    let base = (mi * nt + nj) * 4;
                    let dd = self.mma(dtype, &afr, bb, &accs[base..base + 4])?;
                    accs[base..base + 4].copy_from_slice(&dd);
                }
            }
        }
        Ok(vec![Cv::Regs(accs)])
    }
}

impl<'c> Gen<'c, '_> {
    /// The A fragment (4 × 2 packed 16-bit values) of k-step `ks` of strip `mi` from registers
    /// of an `#mma<w×1>` tile with `knt` 8-column tiles: C fragments of n-tiles `2·ks` and
    /// `2·ks + 1` are the A fragment of k-step `ks` (the same for `mma.sync` and `wgmma`).
    pub(crate) fn a_fragment(
        &self,
        a_regs: &[BasicValueEnum<'c>],
        mi: usize,
        knt: usize,
        ks: usize,
        dtype: DType,
    ) -> Res<[IntValue<'c>; 4]> {
        let vec2 = super::reg_type(self.ctx, dtype).into_float_type().vec_type(2);
        let pack = |lo: BasicValueEnum<'c>, hi: BasicValueEnum<'c>| -> Res<IntValue<'c>> {
            let v = vec2.get_undef();
            let v = self.b.build_insert_element(v, lo.into_float_value(), self.i32c(0), "p").ice()?;
            let v = self.b.build_insert_element(v, hi.into_float_value(), self.i32c(1), "p").ice()?;
            Ok(self.b.build_bit_cast(v, self.ctx.i32_type(), "pk").ice()?.into_int_value())
        };
        let c = |j: usize, e: usize| a_regs[(mi * knt + j) * 4 + e];
        let (j0, j1) = (2 * ks, 2 * ks + 1);
        Ok([pack(c(j0, 0), c(j0, 1))?, pack(c(j0, 2), c(j0, 3))?, pack(c(j1, 0), c(j1, 1))?, pack(c(j1, 2), c(j1, 3))?])
    }
}

/// Per-lane parts of `ldmatrix` row addresses: lane `l` gives row `l % 8` (`r8`) of matrix
/// `q = l / 8`; `q_lo = q % 2`, `half = r8 + 8·q_lo`, `hi8 = 8·(q / 2)`.
pub(crate) struct LaneParts<'c> {
    pub(crate) half: IntValue<'c>,
    pub(crate) hi8: IntValue<'c>,
    pub(crate) r8: IntValue<'c>,
    pub(crate) q_lo: IntValue<'c>,
}

impl<'c> Gen<'c, '_> {
    /// The per-lane parts of `ldmatrix` row addresses (see `LaneParts`).
    pub(crate) fn lane_parts(&self, lane: IntValue<'c>) -> Res<LaneParts<'c>> {
        let b = &self.b;
        let q = b.build_right_shift(lane, self.i32c(3), false, "q").ice()?;
        let r8 = b.build_and(lane, self.i32c(7), "r8").ice()?;
        let q_lo = b.build_and(q, self.i32c(1), "qlo").ice()?;
        let q_hi = b.build_right_shift(q, self.i32c(1), false, "qhi").ice()?;
        let half = b.build_int_add(r8, b.build_int_mul(q_lo, self.i32c(8), "h").ice()?, "half").ice()?;
        let hi8 = b.build_int_mul(q_hi, self.i32c(8), "hi8").ice()?;
        Ok(LaneParts { half, hi8, r8, q_lo })
    }

    /// The B fragments of k-step `ks` for `nt` 8-column tiles starting at column `col0`: from
    /// `b: [k, n]` with `ldmatrix.trans`, or from its transpose stored `[n, k]` with a plain
    /// `ldmatrix` (the row of the stored matrix is the fragment's column).
    #[allow(clippy::too_many_arguments)]
    fn b_fragments(
        &self,
        ks: i64,
        nt: usize,
        n: i64,
        k: i64,
        col0: IntValue<'c>,
        l: &LaneParts<'c>,
        b_off: u32,
        b_base: IntValue<'c>,
        trans: bool,
        esize: i64,
    ) -> Res<Vec<Vec<IntValue<'c>>>> {
        let mut out = vec![];
        let mut ni = 0;
        while ni < nt {
            let two = ni + 1 < nt;
            let b = &self.b;
            let off = if trans {
                let row = b
                    .build_int_add(
                        b.build_int_add(col0, l.hi8, "r").ice()?,
                        b.build_int_add(l.r8, self.i32c(ni as i64 * 8), "r").ice()?,
                        "row",
                    )
                    .ice()?;
                let col = b.build_int_add(b.build_int_mul(l.q_lo, self.i32c(8), "c").ice()?, self.i32c(ks * 16), "col").ice()?;
                self.smem_offset_2d(row, col, k, esize, true)?
            } else {
                let krow = b.build_int_add(l.half, self.i32c(ks * 16), "kr").ice()?;
                let col = b.build_int_add(b.build_int_add(col0, l.hi8, "c").ice()?, self.i32c(ni as i64 * 8), "nc").ice()?;
                self.smem_offset_2d(krow, col, n, esize, true)?
            };
            let off = self.b.build_int_add(self.b.build_int_add(off, self.i32c(b_off as i64), "off").ice()?, b_base, "off").ice()?;
            let regs = self.ldmatrix(off, if two { 4 } else { 2 }, !trans)?;
            out.push(regs[0..2].to_vec());
            if two {
                out.push(regs[2..4].to_vec());
            }
            ni += 2;
        }
        Ok(out)
    }
}
