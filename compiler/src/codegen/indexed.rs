//! Per-thread code of the indexed and debugging ops: `gather`, `scatter`, the atomics, `print`
//! and `assert`.
//!
//! Each thread handles the elements it holds (the operands of one op share a layout, so register
//! `r` of every operand is the same element). An element's address is the tensor's base plus
//! `Σ index · stride`, and it is touched only when its mask holds and every index is inside its
//! dimension (unsigned compare, so negatives fail too). A tile with fewer elements than threads
//! is replicated, so writes, atomics and prints of it are done by its owner thread only (as
//! `store` does); reads and asserts need no owner.

use super::{Cv, Gen, Ptr, Res};
use crate::dtype::DType;
use crate::ir::{Op, Value};
use crate::lir::{self, Layout};
use crate::mir::{Addr, AtomTy, Callee, Cmp, Inst, IntOp, MemTy, RedOp, SReg, Space, Sym, Ty, V};
use crate::tir::{self, AtomicOp, FormatPiece};

impl Gen<'_> {
    /// `tid < numel` for a replicated tile (one thread per element), `None` when every element
    /// has exactly one holder.
    pub(crate) fn owner(&self, t: &lir::Type) -> Res<Option<V>> {
        match t.layout() {
            Some(Layout::Blocked { .. }) if t.numel() < self.k.threads as i64 => {
                Ok(Some(self.icmp(Cmp::Ult, self.tid, self.i32c(t.numel()))?))
            }
            // Each row value is held by the 4 lanes of a quad: the first one owns it.
            Some(Layout::MmaRows { .. }) => Ok(Some(self.icmp(Cmp::Eq, self.and(self.tid, self.i32c(3))?, self.i32c(0))?)),
            // Each column is held by the lanes of every row: lane `l < 4` of the first warp row.
            Some(Layout::MmaCols { warps_n, .. }) => {
                let first_rows = self.icmp(Cmp::Ult, self.tid, self.i32c(32 * warps_n as i64))?;
                let lane = self.and(self.tid, self.i32c(31))?;
                Ok(Some(self.and(first_rows, self.icmp(Cmp::Ult, lane, self.i32c(4))?)?))
            }
            Some(Layout::Blocked { .. } | Layout::Mma { .. }) | None => Ok(None),
        }
    }

    /// Address and "selected and in range" flag of each register of an indexed access.
    fn indexed_addrs(&self, tensor: &Cv, idx: &[Value], mask: Value, t: &lir::Type) -> Res<Vec<(Ptr, V)>> {
        let Cv::Tensor { ptr, sizes, strides } = tensor else { return Err("indexed access to a non-tensor".into()) };
        if idx.len() != sizes.len() {
            return Err(format!("{} indices for a rank-{} tensor", idx.len(), sizes.len()));
        }
        let idx: Vec<Vec<V>> = idx.iter().map(|&v| self.regs(v)).collect::<Res<_>>()?;
        let mask = self.regs(mask)?;
        let mut out = vec![];
        for (r, m) in mask.iter().enumerate() {
            let mut ok = *m;
            let mut lin = self.i64c(0);
            for (j, regs) in idx.iter().enumerate() {
                let i = *regs.get(r).ok_or("index registers do not match the mask")?;
                ok = self.and(ok, self.icmp(Cmp::Ult, i, sizes[j])?)?;
                lin = self.add(lin, self.mul(self.sext(i, Ty::I64)?, strides[j])?)?;
            }
            // Only dereferenced under `ok`.
            let p = self.gep(*ptr, lin, t.dtype())?;
            out.push((p, ok));
        }
        Ok(out)
    }

    /// `gather t, i0, …, mask, pad`.
    pub(crate) fn gather(&mut self, op: Op) -> Res<Vec<Cv>> {
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
    pub(crate) fn indexed_write(&mut self, op: Op, atomic: Option<AtomicOp>) -> Res<Vec<Cv>> {
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

    /// One relaxed, device-wide read-modify-write of `v` at `p` (`red.global`; float max and
    /// min, which PTX has no reduction for, as a compare-and-swap loop with `max`/`min`'s NaN
    /// rule).
    pub(super) fn atomic_rmw(&mut self, a: AtomicOp, p: Ptr, v: V, d: DType) -> Res<()> {
        if !tir::verify::atomic_dtype_ok(a, d) {
            return Err(format!("atomic {} on {d}", a.name()));
        }
        let addr = self.address(p.at);
        let v = self.b.materialize(v);
        let wide = v.ty.class_bits() == 64;
        let ty = match (a, d.is_float(), d.is_signed(), wide) {
            (AtomicOp::Add, true, _, false) => AtomTy::F32,
            (AtomicOp::Add, true, _, true) => AtomTy::F64,
            // Two's-complement addition is the same signed or not (PTX has no `red.add.s64`).
            (AtomicOp::Add, false, _, false) => AtomTy::U32,
            (AtomicOp::Add, false, _, true) => AtomTy::U64,
            (_, false, true, false) => AtomTy::S32,
            (_, false, true, true) => AtomTy::S64,
            (_, false, false, false) => AtomTy::U32,
            (_, false, false, true) => AtomTy::U64,
            (_, true, _, _) => {
                return self.float_minmax_cas(a, p, v);
            }
        };
        let op = match a {
            AtomicOp::Add => RedOp::Add,
            AtomicOp::Max => RedOp::Max,
            AtomicOp::Min => RedOp::Min,
        };
        self.b.red(op, ty, addr, v);
        Ok(())
    }

    /// `*p = max(*p, v)` (or min) of floats, atomically: a CAS loop on the bits.
    fn float_minmax_cas(&mut self, a: AtomicOp, p: Ptr, v: V) -> Res<()> {
        let ft = v.ty;
        let it = Ty::int_of_bits(ft.class_bits());
        let addr = self.address(p.at);
        let old = self.b.load_relaxed(it, addr);
        let pre = self.b.current();
        let lp = self.block("cas");
        let done = self.block("cas_done");
        self.b.br(lp);
        self.b.position(lp);
        let cur = self.b.phi(it);
        self.b.incoming(cur, old, pre);
        let op = if a == AtomicOp::Max { crate::mir::FOp::Max } else { crate::mir::FOp::Min };
        let new = self.b.fbin(op, cur.retype(ft), v).retype(it);
        let got = self.b.atom_cas(it, addr, cur, new);
        let again = self.b.icmp(Cmp::Ne, got, cur);
        let end = self.b.current();
        self.b.incoming(cur, got, end);
        self.b.cond_br(again, lp, done);
        self.b.position(done);
        Ok(())
    }

    /// A private constant string in global memory, as a generic address (what `vprintf` and
    /// `__assertfail` take).
    fn global_string(&self, s: &str) -> V {
        let sym = self.b.global_string(s);
        self.b.at_entry(|| {
            let g = self.b.sym_addr(sym);
            self.b.cvta(Space::Global, g)
        })
    }

    /// `print "fmt", x…`: one `vprintf` per element this thread owns.
    pub(crate) fn print(&mut self, op: Op, fmt: &str) -> Res<Vec<Cv>> {
        let operands = self.k.body.op(op).operands.clone();
        let pieces = tir::parse_format(fmt)?;
        let t = match operands.first() {
            Some(&v) => self.ty(v).clone(),
            None => lir::Type::Tile { dtype: DType::I32, shape: vec![], layout: Layout::blocked_for(1, self.k.threads) },
        };
        let dtypes: Vec<DType> = operands.iter().map(|&v| self.ty(v).dtype()).collect();
        let regs: Vec<Vec<V>> = operands.iter().map(|&v| self.regs(v)).collect::<Res<_>>()?;
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
        let fmt_ptr = self.global_string(&c_fmt);
        let pids: Vec<V> = (0..3).map(|a| self.sreg(SReg::CtaId(a))).collect();
        let owner = self.owner(&t)?;
        let (t_str, f_str) = if dtypes.contains(&DType::Bool) {
            (Some(self.global_string("true")), Some(self.global_string("false")))
        } else {
            (None, None)
        };
        for r in 0..self.nregs(&t).max(1) {
            let mut args: Vec<V> = pids.clone();
            if rank > 0 {
                args.extend(self.coords(&t, r)?);
            }
            for (i, &d) in dtypes.iter().enumerate() {
                let v = *regs[i].get(r).ok_or("print operands have different register counts")?;
                args.push(match (d, t_str, f_str) {
                    (DType::Bool, Some(ts), Some(fs)) => self.b.select(v, ts, fs),
                    _ => self.vararg(v, d),
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
    fn vararg(&self, v: V, d: DType) -> V {
        match d {
            d if d.is_float() && d != DType::F64 => self.b.fcast(v, Ty::F64),
            DType::I8 | DType::I16 => self.b.int_cast(v, Ty::I32, true),
            DType::U8 => self.b.int_cast(v, Ty::I32, false),
            _ => v,
        }
    }

    /// `vprintf(fmt, &args)`: the arguments are packed, naturally aligned, into this thread's
    /// local buffer.
    fn vprintf(&self, fmt: V, args: &[V]) -> Res<()> {
        let mut off = 0u32;
        let mut fields = vec![];
        for a in args {
            let size = a.ty.class_bits() / 8;
            off = off.div_ceil(size) * size;
            fields.push((off, *a));
            off += size;
        }
        let base = self.b.local(off.max(8), 8);
        let depot = self.b.sym_addr(Sym::LocalDepot);
        // Not hoisted: the local buffer is per call site.
        let buf = self.b.fresh(Ty::I64);
        self.b.push(Inst::Int { op: IntOp::Add, dst: buf, a: depot, b: V::int(Ty::I64, base as i64) });
        for (o, a) in &fields {
            let a = self.b.materialize(*a);
            let ty = match a.ty.class_bits() {
                16 => MemTy::B16,
                32 => MemTy::B32,
                _ => MemTy::B64,
            };
            self.b.store(Space::Local, ty, &[a], Addr { base: buf, offset: *o as i64 }, None);
        }
        let gbuf = self.b.cvta(Space::Local, buf);
        self.b.call(Callee::Vprintf, &[fmt, gbuf]);
        Ok(())
    }

    /// `assert "msg", c`: a thread holding a false element calls `__assertfail` (the CUDA
    /// runtime prints the message with the block and thread and stops the kernel) and traps.
    pub(crate) fn assert(&mut self, op: Op, message: &str) -> Res<Vec<Cv>> {
        let c = *self.k.body.op(op).operands.first().ok_or("assert without a condition")?;
        let regs = self.regs(c)?;
        let mut all = V::int(Ty::Pred, 1);
        for v in regs {
            all = self.b.int_bin(IntOp::And, all, v);
        }
        let fail = self.block("assert_fail");
        let ok = self.block("assert_ok");
        self.b.cond_br(all, ok, fail);
        self.b.position(fail);
        let msg = self.global_string(message);
        let file = self.global_string(&format!("{}.tile", self.k.name));
        let func = self.global_string(&self.k.name);
        self.b.call(Callee::AssertFail, &[msg, file, V::int(Ty::I32, 0), func, V::int(Ty::I64, 1)]);
        self.b.trap();
        self.b.position(ok);
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
