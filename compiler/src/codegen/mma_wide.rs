//! `mma.sync` for 32-bit and 8-bit operands: `m16n8k8` with tf32 (an f32 `dot` under
//! `Options::tf32`) and `m16n8k32` with s8 (an i8 `dot` accumulating in i32).
//!
//! Fragments (PTX ISA, `mma.m16n8k8` .tf32 and `mma.m16n8k32` .s8, `.row.col`): lane `l`,
//! `g = l / 4`, `t = l % 4`. A: tf32 `(g, t)`, `(g+8, t)`, `(g, t+4)`, `(g+8, t+4)`; s8 the four
//! bytes from column `4t` of the same rows and of column `16 + 4t`. Both are, byte for byte,
//! the A fragment of `m16n8k16` over a 32-byte k-step, so one non-transposed `ldmatrix.x4`
//! fetches them. B: tf32 `(k = t, n = g)`, `(k = t+4, n = g)`; s8 the four bytes `k = 4t..4t+3`
//! (and `16 + 4t..`) of column `g`: a K-major B (`[n, k]`, read under `trans`) is again one
//! `ldmatrix`; a row-major `[k, n]` B is read element by element (no transposing `ldmatrix`
//! exists for 32-bit or 8-bit elements). C/D: the `m16n8` layout of `#mma`, f32 or s32.

use super::{Cv, Gen, Ice, Res};
use crate::dtype::DType;
use crate::ir::Value;
use crate::lir::{self, Layout};
use inkwell::values::{BasicValueEnum, IntValue};

impl<'c> Gen<'c, '_> {
    /// `acc + a · b` on the tensor cores for f32 (as tf32) or i8 operands; `a: [m, k]` and `b`
    /// (`[k, n]`, or `[n, k]` when `b_trans`) are swizzled tiles in shared memory.
    pub(crate) fn local_mma_wide(
        &mut self,
        t: &lir::Type,
        acc: Value,
        bases: [Option<Value>; 2],
        offs: (u32, u32, bool),
        k: i64,
        dtype: DType,
    ) -> Res<Vec<Cv<'c>>> {
        let (a_off, b_off, b_trans) = offs;
        let Some(Layout::Mma { warps_m, warps_n }) = t.layout() else { return Err("local_mma result is not in the MMA layout".into()) };
        let (m, n) = (t.shape()[0], t.shape()[1]);
        let (mt, nt) = ((m / warps_m as i64 / 16) as usize, (n / warps_n as i64 / 8) as usize);
        let es = dtype.size() as i64;
        let (kstep, chunk) = (32 / es, 16 / es);
        let base = |g: &Self, v: Option<Value>, off: u32| -> Res<IntValue<'c>> {
            let o = g.i32c(off as i64);
            match v {
                Some(v) => g.b.build_int_add(g.regs(v)?[0].into_int_value(), o, "mb").ice(),
                None => Ok(o),
            }
        };
        let (a0, b0) = (base(self, bases[0], a_off)?, base(self, bases[1], b_off)?);
        let mut accs = self.regs(acc)?;
        let (wm, wn, g, tq, _) = self.mma_ids(warps_n)?;
        let lanes = self.lane_parts()?;
        let b = &self.b;
        // Lane `l` addresses row `l % 8 (+ 8)` of 16-byte chunk `l / 16` of the k-step.
        let hi = b.build_int_mul(b.build_right_shift(lanes.hi8, self.i32c(3), false, "qh").ice()?, self.i32c(chunk), "hi").ice()?;
        let a_row0 = b.build_int_add(b.build_int_mul(wm, self.i32c(16), "ar").ice()?, lanes.half, "ar").ice()?;
        let col0 = b.build_int_mul(wn, self.i32c(n / warps_n as i64), "bc").ice()?;
        let at = |g: &Self, off: IntValue<'c>, base: IntValue<'c>| g.b.build_int_add(off, base, "o").ice();
        for ks in 0..k / kstep {
            let mut afr = vec![];
            for mi in 0..mt {
                let row = self.b.build_int_add(a_row0, self.i32c(mi as i64 * 16 * warps_m as i64), "row").ice()?;
                let col = self.b.build_int_add(hi, self.i32c(ks * kstep), "col").ice()?;
                let off = at(self, self.smem_offset_2d(row, col, k, es, true)?, a0)?;
                afr.push(self.to_operand(self.ldmatrix(off, 4, false)?, dtype)?);
            }
            let mut bfr = vec![];
            let mut ni = 0;
            while ni < nt {
                if b_trans {
                    // Two n-tiles per `ldmatrix.x4`: lanes 0–15 the first, 16–31 the second.
                    let two = ni + 1 < nt;
                    let row = self.b.build_int_add(col0, lanes.hi8, "r").ice()?;
                    let row =
                        self.b.build_int_add(row, self.b.build_int_add(lanes.r8, self.i32c(ni as i64 * 8), "r").ice()?, "row").ice()?;
                    let col = self
                        .b
                        .build_int_add(self.b.build_int_mul(lanes.q_lo, self.i32c(chunk), "c").ice()?, self.i32c(ks * kstep), "c")
                        .ice()?;
                    let off = at(self, self.smem_offset_2d(row, col, k, es, true)?, b0)?;
                    let regs = self.to_operand(self.ldmatrix(off, if two { 4 } else { 2 }, false)?, dtype)?;
                    bfr.push(regs[0..2].to_vec());
                    if two {
                        bfr.push(regs[2..4].to_vec());
                    }
                    ni += 2;
                } else {
                    let ncol = self.b.build_int_add(self.b.build_int_add(col0, g, "n").ice()?, self.i32c(ni as i64 * 8), "n").ice()?;
                    let mut regs = vec![];
                    for half in 0..2 {
                        regs.push(self.b_elements(ks * kstep + half * (kstep / 2), tq, ncol, n, b0, dtype)?);
                    }
                    bfr.push(self.to_operand(regs, dtype)?);
                    ni += 1;
                }
            }
            for (mi, a) in afr.iter().enumerate() {
                for (nj, bb) in bfr.iter().enumerate() {
                    let at = (mi * nt + nj) * 4;
                    let d = self.mma_wide(dtype, a, bb, &accs[at..at + 4])?;
                    accs[at..at + 4].copy_from_slice(&d);
                }
            }
        }
        Ok(vec![Cv::Regs(accs)])
    }

    /// One 32-bit B register of a row-major `[k, n]` tile: tf32 element `(k0 + t, col)`, or the
    /// four s8 elements `(k0 + 4t + j, col)`, `j = 0..3`, low byte first.
    fn b_elements(&self, k0: i64, tq: IntValue<'c>, col: IntValue<'c>, n: i64, b0: IntValue<'c>, dtype: DType) -> Res<IntValue<'c>> {
        let i32t = self.ctx.i32_type();
        let es = dtype.size() as i64;
        let per = 4 / es;
        let mut word = i32t.const_zero();
        for j in 0..per {
            let krow = self.b.build_int_add(self.b.build_int_mul(tq, self.i32c(per), "kt").ice()?, self.i32c(k0 + j), "kr").ice()?;
            let off = self.b.build_int_add(self.smem_offset_2d(krow, col, n, es, true)?, b0, "o").ice()?;
            let p = self.smem_ptr(off)?;
            let v = self.b.build_load(if es == 4 { i32t } else { self.ctx.i8_type() }, p, "be").ice()?.into_int_value();
            let v = if es == 4 { v } else { self.b.build_int_z_extend(v, i32t, "bz").ice()? };
            let v = self.b.build_left_shift(v, i32t.const_int((8 * es * j) as u64, false), "bs").ice()?;
            word = self.b.build_or(word, v, "bw").ice()?;
        }
        Ok(word)
    }

    /// tf32 operands are f32 bit patterns rounded to tf32 (`cvt.rna`); s8 ones are used as loaded.
    fn to_operand(&self, regs: Vec<IntValue<'c>>, dtype: DType) -> Res<Vec<IntValue<'c>>> {
        if dtype != DType::F32 {
            return Ok(regs);
        }
        let (f32t, i32t) = (self.ctx.f32_type(), self.ctx.i32_type());
        let fty = i32t.fn_type(&[f32t.into()], false);
        let cvt = self.ctx.create_inline_asm(fty, "cvt.rna.tf32.f32 $0, $1;".into(), "=r,f".into(), false, false, None, false);
        regs.into_iter()
            .map(|r| {
                let f = self.b.build_bit_cast(r, f32t, "f").ice()?;
                let c = self.b.build_indirect_call(fty, cvt, &[f.into()], "tf").ice()?;
                Ok(c.try_as_basic_value().basic().ok_or("cvt returned nothing")?.into_int_value())
            })
            .collect()
    }

    fn mma_wide(&self, dtype: DType, a: &[IntValue<'c>], b: &[IntValue<'c>], c: &[BasicValueEnum<'c>]) -> Res<Vec<BasicValueEnum<'c>>> {
        let (shape, acc_ty, cons) = match dtype {
            DType::F32 => ("m16n8k8.row.col.f32.tf32.tf32.f32", self.ctx.f32_type().into(), "=f,=f,=f,=f,r,r,r,r,r,r,0,1,2,3"),
            DType::I8 => ("m16n8k32.row.col.s32.s8.s8.s32", self.ctx.i32_type().into(), "=r,=r,=r,=r,r,r,r,r,r,r,0,1,2,3"),
            other => return Err(format!("mma on {other}")),
        };
        let text = format!("mma.sync.aligned.{shape} {{$0, $1, $2, $3}}, {{$4, $5, $6, $7}}, {{$8, $9}}, {{$10, $11, $12, $13}};");
        let ret = self.ctx.struct_type(&[acc_ty; 4], false);
        let mut args: Vec<BasicValueEnum> = a.iter().map(|&x| x.into()).collect();
        args.extend(b.iter().map(|&x| BasicValueEnum::from(x)));
        args.extend(c.iter().copied());
        let fty = ret.fn_type(&args.iter().map(|a| a.get_type().into()).collect::<Vec<_>>(), false);
        let f = self.ctx.create_inline_asm(fty, text, cons.into(), false, false, None, false);
        let margs: Vec<inkwell::values::BasicMetadataValueEnum> = args.iter().map(|&a| a.into()).collect();
        let s = self.b.build_indirect_call(fty, f, &margs, "mw").ice()?.try_as_basic_value().basic().ok_or("mma returned nothing")?;
        (0..4).map(|i| self.b.build_extract_value(s.into_struct_value(), i, "d").ice()).collect()
    }
}
