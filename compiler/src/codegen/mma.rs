//! Tensor-core code generation: coordinates of the MMA accumulator layout, swizzled
//! shared-memory offsets, and `ldmatrix` + `mma.sync.m16n8k16` (inline PTX).
//!
//! Fragment layouts (PTX ISA, `mma.m16n8k16` with `.row.col`): lane `l`, `g = l / 4`,
//! `t = l % 4`. A (16×16): registers hold (g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..).
//! B (16×8): (k = 2t..2t+1, n = g), (k = 2t+8.., n = g). C/D (16×8 f32): (g, 2t), (g, 2t+1),
//! (g+8, 2t), (g+8, 2t+1). `ldmatrix.x4` gives register `q` from the 8×8 matrix whose row
//! addresses come from lanes `8q..8q+7`; with `.trans` each lane gets the transposed element.
//!
//! 32-bit and 8-bit operands (`m16n8k8` on tf32, an f32 `dot` under `Options::tf32`, and
//! `m16n8k32` on s8, accumulating in s32): A is tf32 `(g, t)`, `(g+8, t)`, `(g, t+4)`,
//! `(g+8, t+4)`, or the four s8 bytes from column `4t` of the same rows and of column `16 + 4t`:
//! byte for byte the A fragment above over a 32-byte k-step, so the same `ldmatrix.x4` fetches
//! it. B is tf32 `(k = t, n = g)`, `(k = t+4, n = g)`, or the s8 bytes `k = 4t..4t+3` (and
//! `16 + 4t..`) of column `g`: a K-major B (`[n, k]`, read under `trans`) is again one
//! `ldmatrix`; a row-major `[k, n]` one is read element by element (no transposing `ldmatrix`
//! exists for 32-bit or 8-bit elements). C/D have the same layout, f32 or s32.

use super::{Cv, Gen, Res};
use crate::dtype::DType;
use crate::ir::Value;
use crate::lir::index::{self, SmemTile};
use crate::lir::{self, Layout};
use crate::mir::{Callee, Cmp, Inst, IntOp, MmaKind, SReg, Sym, Ty, V};

/// The shared-memory operands of a `local_mma`: byte offsets, and whether each is stored as its
/// transpose (`a` as `[k, m]`, `b` as `[n, k]`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tiles {
    pub a_off: u32,
    pub b_off: u32,
    pub a_trans: bool,
    pub b_trans: bool,
}

/// Which way `slow_copy` moves a window's elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Toward {
    /// From global memory into shared memory (zeros outside the tensor).
    Shared,
    /// From shared into global memory: stored, or with an op combined atomically (`red.global`).
    Global(Option<crate::tir::AtomicOp>),
}

impl Gen<'_> {
    /// `(warp_m, warp_n, g, t, lane)` of this thread for an MMA layout with `warps_m × warps_n`
    /// warps (`index::MmaThread`; built once per kernel).
    pub(crate) fn mma_ids(&self, warps_m: u32, warps_n: u32) -> Res<(V, V, V, V, V)> {
        let lane = self.lane()?;
        let warp = self.hoisted(("warp", vec![]), |g| g.lshr(g.tid, 5))?;
        // One warp column: the warp is its row (no arithmetic).
        let (wm, wn) = if warps_n <= 1 {
            (warp, self.i32c(0))
        } else {
            let wm_c = warps_m.max(1) as i64;
            let wm = self.hoisted(("wm", vec![wm_c]), |g| g.uremc(warp, wm_c))?;
            (wm, self.hoisted(("wn", vec![wm_c]), |g| g.udivc(warp, wm_c))?)
        };
        let g = self.hoisted(("g", vec![]), |g| g.lshr(lane, 2))?;
        let t = self.hoisted(("t", vec![]), |g| g.and(lane, g.i32c(3)))?;
        Ok((wm, wn, g, t, lane))
    }

    /// `tid % 32`, built once per kernel.
    pub(crate) fn lane(&self) -> Res<V> {
        self.hoisted(("lane", vec![]), |g| g.and(g.tid, g.i32c(31)))
    }

    /// The coordinates of register `r` of this thread in an MMA-layout tile of `shape`: `(row,
    /// col)`, the row split over the leading dimensions of an N-D tile (`Layout::Mma`).
    pub(crate) fn mma_coords(&self, shape: &[i64], warps_m: u32, warps_n: u32, r: usize) -> Res<Vec<V>> {
        let [row, col] = self.mma_row_col(shape, warps_m, warps_n, r)?;
        let lead = &shape[..shape.len().saturating_sub(1)];
        let mut out = vec![];
        let mut inner: i64 = lead.iter().product();
        for (i, &d) in lead.iter().enumerate() {
            inner /= d.max(1);
            let q = self.udivc(row, inner.max(1))?;
            out.push(if i == 0 { q } else { self.uremc(q, d)? });
        }
        out.push(col);
        Ok(out)
    }

    /// `(row, col)` of register `r` of this thread in an MMA-layout tile of `shape`, its leading
    /// dimensions flattened into rows (the map of `lir::index`).
    pub(crate) fn mma_row_col(&self, shape: &[i64], warps_m: u32, warps_n: u32, r: usize) -> Res<[V; 2]> {
        let bn = shape.last().copied().unwrap_or(1) / warps_n as i64;
        let (dr, dc) = Layout::Mma { warps_m, warps_n }.mma_reg_offset(shape, r).unwrap_or_default();
        // This thread's first row and column; a register adds a constant to them.
        let (wm, wn, g, t, _) = self.mma_ids(warps_m, warps_n)?;
        let row0 = self.hoisted(("mma.row0", vec![warps_m as i64, warps_n as i64]), |s| index::mma_row0(s, wm, g))?;
        let col0 = self.hoisted(("mma.col0", vec![bn, warps_m as i64, warps_n as i64]), |s| index::mma_col0(s, wn, t, bn))?;
        Ok([self.addc(row0, dr)?, self.addc(col0, dc)?])
    }

    /// Byte offset of element `(row, col)` of a tile in shared memory (`index::SmemTile`).
    pub(crate) fn smem_offset_2d(&self, row: V, col: V, tile: SmemTile) -> Res<V> {
        tile.offset(self, row, col)
    }

    /// `ldmatrix.x4` (or `.x2`) at a shared-memory byte offset; returns the 32-bit registers.
    pub(crate) fn ldmatrix(&self, byte_off: V, count: usize, trans: bool) -> Res<Vec<V>> {
        let addr = self.b.materialize(self.smem_addr32(byte_off)?);
        let dsts: Vec<V> = (0..count).map(|_| self.b.fresh(Ty::I32)).collect();
        self.b.push(Inst::LdMatrix { dsts: dsts.clone(), addr, trans });
        Ok(dsts)
    }

    /// One `mma.sync` over a 32-byte k-step: `m16n8k16` (f16/bf16), `m16n8k8` (f32 as tf32) or
    /// `m16n8k32` (i8, s32 accumulators). With `in_place`, accumulators of this loop iteration
    /// are updated in their own registers (the caller knows they are not read after); others
    /// are copied first.
    fn mma(&self, dtype: DType, a: &[V], b: &[V], c: &[V], in_place: bool) -> Res<Vec<V>> {
        let kind = match dtype {
            DType::BF16 => MmaKind::Bf16,
            DType::F16 => MmaKind::F16,
            DType::F32 => MmaKind::Tf32,
            DType::I8 => MmaKind::S8,
            other => return Err(format!("mma on {other}")),
        };
        let at = kind.acc();
        let mut acc: Vec<V> = c.iter().map(|_| self.b.fresh(at)).collect();
        let a = a.iter().map(|&x| self.b.materialize(x)).collect();
        let b = b.iter().map(|&x| self.b.materialize(x)).collect();
        for (out, &x) in acc.iter_mut().zip(c) {
            if in_place && x.imm().is_none() && self.b.depth_of(x) == Some(self.b.loop_level()) && x.ty.class_bits() == 32 {
                *out = x.retype(at);
            } else {
                self.b.mov(*out, self.b.materialize(x).retype(at));
            }
        }
        self.b.push(Inst::Mma { kind, acc: acc.clone(), a, b });
        Ok(acc)
    }

    /// tf32 operands are f32 bit patterns rounded to tf32 (`cvt.rna`); the others are used as
    /// loaded.
    fn to_operand(&self, regs: Vec<V>, dtype: DType) -> Res<Vec<V>> {
        if dtype != DType::F32 {
            return Ok(regs);
        }
        Ok(regs.into_iter().map(|r| self.b.to_tf32(r.retype(Ty::F32))).collect())
    }

    /// The byte offset of a pipelined operand's stage (`local_mma`'s optional base operand), 0
    /// without one.
    pub(crate) fn stage_base(&self, base: Option<Value>) -> Res<V> {
        match base {
            Some(v) => Ok(self.regs(v)?[0]),
            None => Ok(self.i32c(0)),
        }
    }

    /// `acc + a · b` on the tensor cores; `a`/`b` are swizzled row-major tiles in shared memory
    /// (`tiles`).
    pub(crate) fn local_mma(
        &mut self,
        t: &lir::Type,
        acc: Value,
        bases: [Option<Value>; 2],
        tiles: Tiles,
        k: i64,
        dtype: DType,
    ) -> Res<Vec<Cv>> {
        let Tiles { a_off, b_off, a_trans, b_trans } = tiles;
        if a_trans && dtype.size() != 2 {
            return Err(format!("local_mma: a transposed {dtype} `a` (no transposing ldmatrix)"));
        }
        let (a_base, b_base) = (self.stage_base(bases[0])?, self.stage_base(bases[1])?);
        let Some(Layout::Mma { warps_m, warps_n }) = t.layout() else { return Err("local_mma result is not in the MMA layout".into()) };
        let (m, n) = (t.shape()[0], t.shape()[1]);
        let (bm, bn) = (m / warps_m as i64, n / warps_n as i64);
        let (mt, nt) = ((bm / 16) as usize, (bn / 8) as usize);
        let esize = dtype.size() as i64;
        // One MMA takes 32 bytes of k; lane `l` addresses 16-byte chunk `l / 16` of them.
        let kstep = 32 / esize;
        let a_tile = if a_trans { SmemTile::new(k, m, esize, true) } else { SmemTile::new(m, k, esize, true) };
        let mut accs = self.regs(acc)?;
        // After the first k-step the accumulators are this op's own registers.
        let mut in_place = self.in_place_ok(acc, &accs);
        let (wm, _, _, _, _) = self.mma_ids(warps_m, warps_n)?;
        let lanes = self.lane_parts()?;
        let a_row0 = self.hoisted(("mma.arow0", vec![warps_m as i64, warps_n as i64]), |g| g.add(g.mulc(wm, 16)?, lanes.half))?;
        let hi = lanes.chunk_col(self, esize)?;
        for ks in 0..k / kstep {
            let mut afr = vec![];
            // The offsets depend only on the thread: built once (they are loop-invariant); the
            // m-tiles of one k-step are 16 rows apart, a whole swizzle period.
            let a0 = if a_trans {
                None
            } else {
                Some(self.hoisted(("mma.a", vec![m, bm, warps_n as i64, k, esize, ks]), |g| {
                    g.smem_offset_2d(a_row0, g.addc(hi, ks * kstep)?, a_tile)
                })?)
            };
            for mi in 0..mt {
                // Strips are `16 · warps_m` rows apart, whole swizzle periods.
                let dr = mi as i64 * 16 * warps_m as i64;
                let off = if a_trans {
                    // Stored `[k, m]`: matrix `q` of the `ldmatrix.x4.trans` is k-block `q / 2`
                    // (the stored rows) of m-block `q % 2` (8 stored columns).
                    let key = vec![m, bm, warps_n as i64, k, ks, dr];
                    self.hoisted(("mma.at", key), |g| {
                        let row = g.addc(g.add(hi, lanes.r8)?, ks * kstep)?;
                        let col = g.addc(g.add(g.mulc(wm, 16)?, g.mulc(lanes.q_lo, 8)?)?, dr)?;
                        g.smem_offset_2d(row, col, a_tile)
                    })?
                } else {
                    let a0 = a0.ok_or("local_mma: no A offset")?;
                    self.shifted_rows(a0, dr, a_tile, |g| g.smem_offset_2d(g.addc(a_row0, dr)?, g.addc(hi, ks * kstep)?, a_tile))?
                };
                let off = self.add(self.addc(off, a_off as i64)?, a_base)?;
                afr.push(self.to_operand(self.ldmatrix(off, 4, a_trans)?, dtype)?);
            }
            let bfr = self.b_fragments(ks, nt, n, k, Some((warps_m, warps_n, bn)), &lanes, b_off, b_base, b_trans, dtype)?;
            for (mi, a) in afr.iter().enumerate() {
                for (ni, bb) in bfr.iter().enumerate() {
                    let base = (mi * nt + ni) * 4;
                    let d = self.mma(dtype, a, bb, &accs[base..base + 4], in_place)?;
                    accs[base..base + 4].copy_from_slice(&d);
                }
            }
            in_place = true;
        }
        Ok(vec![Cv::Regs(accs)])
    }
}

impl Gen<'_> {
    /// `cp.async` of a window into (swizzled) shared memory; see `lir::OpKind::AsyncCopy`. An
    /// N-D window is copied as the 2-D tile `[product of the leading dims, last dim]`.
    /// `operands` are the op's `(base, t, o0, …)`.
    pub(crate) fn async_copy(&mut self, operands: &[crate::ir::Value], offset: u32, swizzled: bool, shape: &[i64]) -> Res<()> {
        use Cmp::{Eq as EQ, Sge as SGE, Sgt as SGT, Sle as SLE, Slt as SLT, Ult as ULT};
        let (&[base, tensor], offs) = (operands.get(..2).ok_or("async_copy without operands")?, &operands[2..]) else {
            return Err("async_copy without operands".into());
        };
        let base = self.regs(base)?[0];
        let Some(Cv::Tensor { ptr, sizes, strides }) = self.vals.get(&tensor).cloned() else {
            return Err("async_copy from a non-tensor".into());
        };
        let dtype = self.k.body.ty(tensor).dtype();
        let es = dtype.size() as i64;
        let offs: Vec<V> = offs.iter().map(|&o| self.regs(o).map(|r| r[0])).collect::<Res<_>>()?;
        let rank = shape.len();
        if rank < 2 || offs.len() != rank || sizes.len() != rank {
            return Err("async_copy window rank does not match its tensor".into());
        }
        let last = rank - 1;
        let lead = &shape[..last];
        let (rows, cols) = (lead.iter().product::<i64>(), shape[last]);
        let tile = SmemTile::new(rows, cols, es, swizzled);
        let vec = 16 / es;
        let i64t = Ty::I64;
        let eq0 = |g: &Self, x: V, mask: i64| -> Res<V> { g.icmp(EQ, g.and(x, V::int(x.ty, mask))?, V::int(x.ty, 0)) };
        // Uniform check: the window's 16-byte chunks are aligned and contiguous in memory.
        let mut ok = eq0(self, ptr, 15)?;
        ok = self.and(ok, self.icmp(EQ, strides[last], V::int(i64t, 1))?)?;
        for s in &strides[..last] {
            ok = self.and(ok, eq0(self, self.mulc(*s, es)?, 15)?)?;
        }
        ok = self.and(ok, eq0(self, offs[last], vec - 1)?)?;
        let fast = self.block("cp_fast");
        let slow = self.block("cp_slow");
        let done = self.block("cp_done");
        self.b.cond_br(ok, fast, slow);
        let chunks_per_row = cols / vec;
        let total = rows * chunks_per_row;
        let threads = self.k.threads as i64;
        let cp_async = |g: &Self, dst: V, src: V, bytes: Option<V>| -> Res<()> {
            let (dst, src, src_bytes) = (g.b.materialize(dst), g.b.materialize(src), bytes.map(|b| g.b.materialize(b)));
            g.b.push(Inst::CpAsync { dst, src, src_bytes });
            Ok(())
        };

        // Interior windows (the common case): every chunk is whole and in range, so there is no
        // mask at all.
        self.b.position(fast);
        let mut inside = V::int(Ty::Pred, 1);
        for i in 0..rank {
            let ge0 = self.icmp(SGE, offs[i], self.i32c(0))?;
            let fits = self.icmp(SLE, self.addc(offs[i], shape[i])?, sizes[i])?;
            inside = self.and(inside, self.and(ge0, fits)?)?;
        }

        // This thread's chunks. Where each is in the tile depends only on the thread index and
        // the tile's shape, so it is built once per kernel (copies of the same shape, as the
        // prologue and the loop of a pipeline make, share it); chunk `j` is usually `j ·
        // threads / chunks_per_row` rows below the first one, a constant away from it.
        let mut shape_key = vec![cols, vec, es, swizzled as i64];
        shape_key.extend(lead);
        let key = |what: &'static str, dq: i64, extra: &[i64]| -> crate::codegen::fold::HoistKey {
            let mut k = shape_key.clone();
            k.push(dq);
            k.extend(extra);
            (what, k)
        };
        struct Chunk {
            col: V,
            lead_idx: Vec<V>,
            smem: V,
            in_tile: Option<V>,
        }
        let row0 = self.hoisted(key("cp.row", 0, &[]), |g| g.udivc(g.tid, chunks_per_row))?;
        let col0 = self.hoisted(key("cp.col", 0, &[]), |g| g.mulc(g.uremc(g.tid, chunks_per_row)?, vec))?;
        let smem0 = self.hoisted(key("cp.smem", 0, &[]), |g| g.smem_offset_2d(row0, col0, tile))?;
        let mut chunks = vec![];
        for j in 0..(total + threads - 1) / threads {
            let dq = j * threads;
            let q = |g: &Self| g.hoisted(key("cp.q", dq, &[]), |g| g.addc(g.tid, dq));
            let aligned = dq % chunks_per_row == 0;
            let dr = dq / chunks_per_row;
            let col = if aligned { col0 } else { self.hoisted(key("cp.col", dq, &[]), |g| g.mulc(g.uremc(q(g)?, chunks_per_row)?, vec))? };
            let row =
                |g: &Self| g.hoisted(key("cp.row", dq, &[]), |g| if aligned { g.addc(row0, dr) } else { g.udivc(q(g)?, chunks_per_row) });
            let whole = total % threads == 0 || (j + 1) * threads <= total;
            let lead_idx = if last == 1 && whole {
                // A whole chunk's row is inside the tile.
                vec![if aligned { self.addc(row0, dr)? } else { row(self)? }]
            } else {
                let mut idx = vec![self.i32c(0); last];
                let mut rest = row(self)?;
                for i in (0..last).rev() {
                    let r = rest;
                    idx[i] = self.hoisted(key("cp.idx", dq, &[i as i64]), |g| g.uremc(r, lead[i]))?;
                    rest = self.hoisted(key("cp.rest", dq, &[i as i64]), |g| g.udivc(r, lead[i]))?;
                }
                idx
            };
            let smem_full = |g: &Self| g.hoisted(key("cp.smem", dq, &[]), |g| g.smem_offset_2d(row(g)?, col, tile));
            let smem = if aligned { self.shifted_rows(smem0, dr, tile, smem_full)? } else { smem_full(self)? };
            let in_tile = if whole { None } else { Some(self.hoisted(key("cp.in", dq, &[]), |g| g.icmp(ULT, q(g)?, g.i32c(total)))?) };
            chunks.push(Chunk { col, lead_idx, smem, in_tile });
        }
        let interior = self.block("cp_interior");
        let edge = self.block("cp_edge");
        self.b.cond_br(inside, interior, edge);
        for (blk, masked) in [(interior, false), (edge, true)] {
            self.b.position(blk);
            for ch in &chunks {
                // The element offset of the chunk (the fast path has a unit last stride).
                let gcol = self.add(offs[last], ch.col)?;
                // Inside the tensor (the interior path) an index `x + k` extends as `sext(x) + k`.
                let ext = |g: &Self, x: V| if masked { g.sext(x, i64t) } else { g.sext_in_range(x) };
                let mut lin = ext(self, gcol)?;
                let mut row_ok = V::int(Ty::Pred, 1);
                for i in (0..last).rev() {
                    let gi = self.add(offs[i], ch.lead_idx[i])?;
                    if masked {
                        row_ok = self.and(row_ok, self.icmp(ULT, gi, sizes[i])?)?;
                    }
                    lin = self.add(self.mul(ext(self, gi)?, strides[i])?, lin)?;
                }
                let bytes = if masked {
                    // A chunk past the end of a row reads a prefix (or nothing); cp.async zero-fills.
                    let left = self.sub(sizes[last], gcol)?;
                    let left = self.select(self.icmp(SLT, left, self.i32c(0))?, self.i32c(0), left)?;
                    let left = self.select(self.icmp(SGT, left, self.i32c(vec))?, self.i32c(vec), left)?;
                    let col_ok = self.icmp(SGE, gcol, self.i32c(0))?;
                    let valid = self.and(row_ok, col_ok)?;
                    let n = self.select(valid, left, self.i32c(0))?;
                    Some((valid, self.mulc(n, es)?))
                } else {
                    None
                };
                // An invalid chunk still needs a readable address: the tensor's first element.
                let lin = match bytes {
                    Some((valid, _)) => self.select(valid, lin, V::int(i64t, 0))?,
                    None => lin,
                };
                // Only bytes inside the tensor are read.
                let src = self.gep(ptr, lin, dtype)?.at;
                let off = self.add(self.addc(ch.smem, offset as i64)?, base)?;
                let dst = self.smem_addr32(off)?;
                match ch.in_tile {
                    Some(in_range) => {
                        let go = self.block("cp_go");
                        let next = self.block("cp_next");
                        self.b.cond_br(in_range, go, next);
                        self.b.position(go);
                        cp_async(self, dst, src, bytes.map(|b| b.1))?;
                        self.b.br(next);
                        self.b.position(next);
                    }
                    None => cp_async(self, dst, src, bytes.map(|b| b.1))?,
                }
            }
            self.b.br(done);
        }

        // Slow path: element by element (any strides and alignment), for tensors whose rows are
        // not 16-byte aligned: in a device function shared by every copy of this tile shape (it
        // rarely runs, and inlined it would be as much code as the fast path).
        self.b.position(slow);
        let dst = self.addc(base, offset as i64)?;
        self.call_slow_copy(dtype, shape, swizzled, Toward::Shared, (ptr, &sizes, &strides, &offs), dst)?;
        self.b.br(done);
        self.b.position(done);
        Ok(())
    }

    /// Calls the element-by-element copy of this dtype, shape and swizzle (`slow_copy_fn`)
    /// between the window `(ptr, sizes, strides, offs)` of a tensor and the tile at shared byte
    /// `smem`: into shared memory, or with `to_global` out of it.
    pub(crate) fn call_slow_copy(
        &mut self,
        dtype: DType,
        shape: &[i64],
        swizzled: bool,
        toward: Toward,
        window: (V, &[V], &[V], &[V]),
        smem: V,
    ) -> Res<()> {
        // A warp-specialised kernel's producer warpgroup copies inline, on its own thread
        // indices: ptxas cannot allocate the consumers' registers when a region whose registers
        // `setmaxnreg` lowered calls a device function (the persistent GEMM failed at 232).
        if let Some(ptid) = self.producer {
            let saved = std::mem::replace(&mut self.tid, ptid);
            let done = self.slow_copy(dtype, shape, swizzled, toward, window, smem, crate::lir::PRODUCER_THREADS);
            self.tid = saved;
            return done;
        }
        let f = self.slow_copy_fn(dtype, shape, swizzled, toward)?;
        let (ptr, sizes, strides, offs) = window;
        let mut args = vec![ptr];
        args.extend(sizes);
        args.extend(strides);
        args.extend(offs);
        args.push(smem);
        self.b.call(f, &args);
        Ok(())
    }

    /// The device function `(ptr, sizes: i32…, strides: i64…, offs: i32…, smem: i32)` that does
    /// `slow_copy` for this dtype, shape, swizzle and direction; built once.
    fn slow_copy_fn(&mut self, dtype: DType, shape: &[i64], swizzled: bool, toward: Toward) -> Res<Callee> {
        let key = (dtype, shape.to_vec(), swizzled, toward);
        if let Some(f) = self.slow_copies.get(&key) {
            return Ok(f.clone());
        }
        let rank = shape.len();
        let what = match toward {
            Toward::Shared => "copy",
            Toward::Global(None) => "store",
            Toward::Global(Some(_)) => "reduce",
        };
        let name = format!("tessera_{what}_slow_{}", self.slow_copies.len());
        let mut params = vec![Ty::I64];
        params.extend(vec![Ty::I32; rank]);
        params.extend(vec![Ty::I64; rank]);
        params.extend(vec![Ty::I32; rank + 1]);
        // Build it with this generator pointed at the function (its own registers and
        // value tables), then point it back.
        let outer = self.b.begin_func(&name);
        let vals: Vec<V> = params.iter().map(|&t| self.b.param(t)).collect();
        let saved = (
            self.tid,
            self.smem,
            self.cse.take(),
            self.plus_const.take(),
            self.hoist.take(),
            self.sregs.take(),
            self.loop_depth.replace(0),
            self.sums.take(),
            self.cmps.take(),
            self.facts.take(),
            self.sexts.take(),
        );
        self.tid = self.b.sreg(SReg::Tid);
        self.smem = self.b.sym_addr(Sym::Smem);
        self.note(self.tid, Some(super::fold::Facts { lo: 0, hi: self.k.threads as i64 - 1, align: 1 }));
        let threads = self.k.threads;
        let body = self.b.block("body");
        self.b.br(body);
        self.b.position(body);
        let (ptr, sizes, strides, offs, dst) =
            (vals[0], &vals[1..1 + rank], &vals[1 + rank..1 + 2 * rank], &vals[1 + 2 * rank..1 + 3 * rank], vals[1 + 3 * rank]);
        let built = self.slow_copy(dtype, shape, swizzled, toward, (ptr, sizes, strides, offs), dst, threads);
        self.b.ret();
        (self.tid, self.smem) = (saved.0, saved.1);
        self.cse.replace(saved.2);
        self.plus_const.replace(saved.3);
        self.hoist.replace(saved.4);
        self.sregs.replace(saved.5);
        self.loop_depth.set(saved.6);
        self.sums.replace(saved.7);
        self.cmps.replace(saved.8);
        self.facts.replace(saved.9);
        self.sexts.replace(saved.10);
        let f = self.b.end_func(outer);
        built?;
        self.slow_copies.insert(key, f.clone());
        Ok(f)
    }

    /// Copies the window of `shape` at `offs` element by element into shared memory at byte
    /// `dst` (row-major, swizzled if asked), zeros outside the tensor; toward global memory, the
    /// tile at `dst` into the window instead (stored, or combined atomically), dropping the
    /// elements outside the tensor.
    #[allow(clippy::too_many_arguments)]
    fn slow_copy(
        &mut self,
        dtype: DType,
        shape: &[i64],
        swizzled: bool,
        toward: Toward,
        src: (V, &[V], &[V], &[V]),
        dst: V,
        threads: u32,
    ) -> Res<()> {
        let (ptr, sizes, strides, offs) = src;
        let rank = shape.len();
        let last = rank - 1;
        let lead = &shape[..last];
        let (rows, cols) = (lead.iter().product::<i64>(), shape[last]);
        let es = dtype.size() as i64;
        let tile = SmemTile::new(rows, cols, es, swizzled);
        let threads = threads as i64;
        let total_el = rows * cols;
        let per = ((total_el + threads - 1) / threads).max(1);
        let zero = super::math::constant(self, crate::tir::Lit::Int(0), dtype)?;
        self.counted_loop(per, vec![], &mut |g, j, _| {
            let l = g.add(g.mulc(j, threads)?, g.tid)?;
            let row = g.udivc(l, cols)?;
            let col = g.uremc(l, cols)?;
            let mut row_ok = V::int(Ty::Pred, 1);
            let mut lin = V::int(Ty::I64, 0);
            let mut rest = row;
            for i in (0..last).rev() {
                let idx = g.uremc(rest, lead[i])?;
                rest = g.udivc(rest, lead[i])?;
                let gi = g.add(offs[i], idx)?;
                row_ok = g.and(row_ok, g.icmp(Cmp::Ult, gi, sizes[i])?)?;
                lin = g.add(lin, g.mul(g.sext(gi, Ty::I64)?, strides[i])?)?;
            }
            let gcol = g.add(offs[last], col)?;
            let c_ok = g.icmp(Cmp::Ult, gcol, sizes[last])?;
            let in_tile = g.icmp(Cmp::Ult, l, g.i32c(total_el))?;
            let inb = g.and(g.and(row_ok, c_ok)?, in_tile)?;
            let lin = g.add(lin, g.mul(g.sext(gcol, Ty::I64)?, strides[last])?)?;
            // Only accessed under `inb`.
            let p = g.gep(ptr, lin, dtype)?;
            if let Toward::Global(reduce) = toward {
                let off = g.add(g.smem_offset_2d(row, col, tile)?, dst)?;
                let v = g.load_if(in_tile, g.smem_ptr(off)?, dtype, zero)?;
                match reduce {
                    None => g.store_if(inb, p, v, dtype)?,
                    Some(a) => {
                        g.guarded(inb, &mut |g| g.atomic_rmw(a, p, v, dtype).map(|_| None), None)?;
                    }
                }
            } else {
                let v = g.load_if(inb, p, dtype, zero)?;
                let off = g.add(g.smem_offset_2d(row, col, tile)?, dst)?;
                g.guarded(in_tile, &mut |g| g.store_mem(g.smem_ptr(off)?, v, dtype).map(|_| None), None)?;
            }
            Ok(vec![])
        })?;
        Ok(())
    }

    pub(crate) fn async_commit(&self) -> Res<()> {
        self.b.push(Inst::CpAsyncCommit);
        Ok(())
    }

    pub(crate) fn async_wait(&self, pending: u32) -> Res<()> {
        self.b.push(Inst::CpAsyncWait(pending));
        Ok(())
    }
}

impl Gen<'_> {
    /// `[row]` (or `[row, 0]`) of register `r` in an `#mma_rows` tile.
    pub(crate) fn mma_row_coords(&self, shape: &[i64], warps_m: u32, r: usize) -> Res<Vec<V>> {
        let (wm, _, g, _, _) = self.mma_ids(warps_m, 1)?;
        let (dr, _) = Layout::MmaRows { warps_m }.mma_reg_offset(shape, r).unwrap_or_default();
        let row0 = self.hoisted(("mma.row0", vec![warps_m as i64, 1]), |s| index::mma_row0(s, wm, g))?;
        let row = self.addc(row0, dr)?;
        let mut out = vec![row];
        if shape.len() == 2 {
            out.push(self.i32c(0));
        }
        Ok(out)
    }

    /// `([0,] col)` of register `r` of this thread in an `#mma_cols` tile of `shape`.
    pub(crate) fn mma_col_coords(&self, shape: &[i64], warps_m: u32, warps_n: u32, r: usize) -> Res<Vec<V>> {
        let bn = shape.last().copied().unwrap_or(1) / warps_n as i64;
        let (_, wn, _, t, _) = self.mma_ids(warps_m, warps_n)?;
        let (_, dc) = Layout::MmaCols { warps_m, warps_n }.mma_reg_offset(shape, r).unwrap_or_default();
        let col0 = self.hoisted(("mma.col0", vec![bn, warps_m as i64, warps_n as i64]), |s| index::mma_col0(s, wn, t, bn))?;
        let col = self.addc(col0, dc)?;
        Ok(if shape.len() == 2 { vec![self.i32c(0), col] } else { vec![col] })
    }

    /// Reduces each row of an `#mma<w×1>` tile: over this lane's registers, then across the
    /// quad with butterfly shuffles.
    pub(crate) fn row_reduce(&mut self, x: Value, op: crate::tir::ReduceOp) -> Res<Vec<V>> {
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
                let mut acc: Option<V> = None;
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

    /// `shfl.sync.bfly` of a register across the full warp.
    pub(crate) fn shfl_xor(&self, v: V, lane_mask: i64) -> Res<V> {
        self.shfl(crate::mir::ShflMode::Bfly, v, self.i32c(lane_mask))
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
    ) -> Res<Vec<Cv>> {
        let (b_off, b_trans) = b_off;
        let Some(Layout::Mma { warps_m, warps_n: 1 }) = t.layout() else {
            return Err("reg_mma result is not in the MMA layout with one warp column".into());
        };
        let (m, n) = (t.shape()[0], t.shape()[1]);
        let mt = (m / warps_m as i64 / 16) as usize;
        let nt = (n / 8) as usize;
        let a_regs = self.regs(a)?;
        let knt = (k / 8) as usize;
        let mut accs = self.regs(acc)?;
        // After the first k-step the accumulators are this op's own registers.
        let mut in_place = self.in_place_ok(acc, &accs);
        let b_base = self.regs(b_base)?[0];
        let lanes = self.lane_parts()?;
        for ks in 0..(k / 16) as usize {
            let bfr = self.b_fragments(ks as i64, nt, n, k, None, &lanes, b_off, b_base, b_trans, dtype)?;
            for mi in 0..mt {
                let afr = self.a_fragment(&a_regs, mi, knt, ks, dtype)?;
                for (nj, bb) in bfr.iter().enumerate() {
                    let base = (mi * nt + nj) * 4;
                    let dd = self.mma(dtype, &afr, bb, &accs[base..base + 4], in_place)?;
                    accs[base..base + 4].copy_from_slice(&dd);
                }
            }
            in_place = true;
        }
        Ok(vec![Cv::Regs(accs)])
    }
}

impl Gen<'_> {
    /// The A fragment (4 × 2 packed 16-bit values) of k-step `ks` of strip `mi` from registers
    /// of an `#mma<w×1>` tile with `knt` 8-column tiles: C fragments of n-tiles `2·ks` and
    /// `2·ks + 1` are the A fragment of k-step `ks` (the same for `mma.sync` and `wgmma`).
    pub(crate) fn a_fragment(&self, a_regs: &[V], mi: usize, knt: usize, ks: usize, dtype: DType) -> Res<[V; 4]> {
        let _ = dtype;
        let pack = |lo: V, hi: V| -> Res<V> { Ok(self.b.pack(&[lo, hi], Ty::I32)) };
        let c = |j: usize, e: usize| a_regs[(mi * knt + j) * 4 + e];
        let (j0, j1) = (2 * ks, 2 * ks + 1);
        Ok([pack(c(j0, 0), c(j0, 1))?, pack(c(j0, 2), c(j0, 3))?, pack(c(j1, 0), c(j1, 1))?, pack(c(j1, 2), c(j1, 3))?])
    }
}

/// Per-lane parts of `ldmatrix` row addresses: lane `l` gives row `l % 8` (`r8`) of matrix
/// `q = l / 8`; `q_lo = q % 2`, `half = r8 + 8·q_lo`, `hi8 = 8·(q / 2)`.
#[derive(Clone, Copy)]
pub(crate) struct LaneParts {
    pub(crate) half: V,
    pub(crate) hi8: V,
    pub(crate) r8: V,
    pub(crate) q_lo: V,
}

impl LaneParts {
    /// The first element of this lane's 16-byte chunk of a 32-byte A k-step (`hi8` for 16-bit
    /// elements: the chunk index times the elements per chunk).
    fn chunk_col(&self, g: &Gen<'_>, esize: i64) -> Res<V> {
        // Built once like the other lane parts: the hoisted offsets below use it.
        match esize {
            2 => Ok(self.hi8),
            4 => g.hoisted(("lane.chunk", vec![4]), |g| g.lshr(self.hi8, 1)),
            _ => g.hoisted(("lane.chunk", vec![esize]), |g| g.mulc(self.hi8, 2)),
        }
    }
}

impl Gen<'_> {
    /// The per-lane parts of `ldmatrix` row addresses (see `LaneParts`), built once per kernel.
    pub(crate) fn lane_parts(&self) -> Res<LaneParts> {
        let lane = self.lane()?;
        let q = self.hoisted(("lane.q", vec![]), |g| g.lshr(lane, 3))?;
        let r8 = self.hoisted(("lane.r8", vec![]), |g| g.and(lane, g.i32c(7)))?;
        let q_lo = self.hoisted(("lane.qlo", vec![]), |g| g.and(q, g.i32c(1)))?;
        let half = self.hoisted(("lane.half", vec![]), |g| g.add(r8, g.mulc(q_lo, 8)?))?;
        let hi8 = self.hoisted(("lane.hi8", vec![]), |g| g.mulc(g.lshr(q, 1)?, 8))?;
        Ok(LaneParts { half, hi8, r8, q_lo })
    }

    /// The byte offset of `(row + dr, col)` given `at_row`, that of `(row, col)`: a constant away
    /// when `dr` is a multiple of the swizzle period, else `full()`.
    pub(crate) fn shifted_rows(&self, at_row: V, dr: i64, tile: SmemTile, full: impl FnOnce(&Self) -> Res<V>) -> Res<V> {
        if dr % tile.period() == 0 { self.addc(at_row, dr * tile.row_pitch()) } else { full(self) }
    }

    /// The B fragments of k-step `ks` for `nt` 8-column tiles starting at column `wn · bn` for
    /// `col0 = Some((warps_m, warps_n, bn))` (0 for `None`): from `b: [k, n]` with `ldmatrix.trans`, or
    /// from its transpose stored `[n, k]` with a plain `ldmatrix` (the row of the stored matrix is
    /// the fragment's column).
    #[allow(clippy::too_many_arguments)]
    fn b_fragments(
        &self,
        ks: i64,
        nt: usize,
        n: i64,
        k: i64,
        col0: Option<(u32, u32, i64)>,
        l: &LaneParts,
        b_off: u32,
        b_base: V,
        trans: bool,
        dtype: DType,
    ) -> Res<Vec<Vec<V>>> {
        let esize = dtype.size() as i64;
        let (kstep, chunk) = (32 / esize, 16 / esize);
        let (warps_m, warps_n, bn) = col0.unwrap_or((1, 1, 0));
        let col0 = match col0 {
            Some((warps_m, warps_n, bn)) => {
                let (_, wn, _, _, _) = self.mma_ids(warps_m, warps_n)?;
                self.hoisted(("mma.bcol0", vec![bn, warps_m as i64, warps_n as i64]), |g| g.mulc(wn, bn))?
            }
            None => self.i32c(0),
        };
        let key = |what: i64| vec![bn, warps_m as i64, warps_n as i64, n, k, esize, trans as i64, what];
        let mut out = vec![];
        let mut ni = 0;
        while ni < nt {
            let nc = ni as i64 * 8;
            if !trans && esize != 2 {
                // No transposing `ldmatrix` for 32-bit or 8-bit elements: one n-tile at a time,
                // element by element.
                let (_, _, g, t, _) = self.mma_ids(1, 1)?;
                let col = self.addc(self.add(col0, g)?, nc)?;
                let base = self.addc(b_base, b_off as i64)?;
                let tile = SmemTile::new(k, n, esize, true);
                let regs = (0..2).map(|h| self.b_elements(ks * kstep + h * kstep / 2, t, col, tile, base)).collect::<Res<Vec<_>>>()?;
                out.push(self.to_operand(regs, dtype)?);
                ni += 1;
                continue;
            }
            let two = ni + 1 < nt;
            // The offsets depend only on the thread: built once (they are loop-invariant), the
            // ones a whole swizzle period apart as a constant difference.
            let off = if trans {
                let row0 = self.hoisted(("mma.brow", key(-1)), |g| g.add(g.add(col0, l.hi8)?, l.r8))?;
                let col = |g: &Self| g.addc(g.mulc(l.q_lo, chunk)?, ks * kstep);
                let tile = SmemTile::new(n, k, esize, true);
                let at0 = self.hoisted(("mma.bt", key(ks)), |g| g.smem_offset_2d(row0, col(g)?, tile))?;
                self.shifted_rows(at0, nc, tile, |g| g.smem_offset_2d(g.addc(row0, nc)?, col(g)?, tile))?
            } else {
                let col = self.hoisted(("mma.bcol", key(nc)), |g| g.addc(g.add(col0, l.hi8)?, nc))?;
                let tile = SmemTile::new(k, n, esize, true);
                let at0 = self.hoisted(("mma.bn", key(nc)), |g| g.smem_offset_2d(l.half, col, tile))?;
                self.shifted_rows(at0, ks * 16, tile, |g| g.smem_offset_2d(g.addc(l.half, ks * 16)?, col, tile))?
            };
            let off = self.add(self.addc(off, b_off as i64)?, b_base)?;
            let regs = self.to_operand(self.ldmatrix(off, if two { 4 } else { 2 }, !trans)?, dtype)?;
            out.push(regs[0..2].to_vec());
            if two {
                out.push(regs[2..4].to_vec());
            }
            ni += 2;
        }
        Ok(out)
    }

    /// One 32-bit B register of a row-major `[k, n]` tile at byte `b0`: tf32 element
    /// `(k0 + t, col)`, or the four s8 elements `(k0 + 4t + j, col)`, `j = 0..3`, low byte first.
    fn b_elements(&self, k0: i64, t: V, col: V, tile: SmemTile, b0: V) -> Res<V> {
        let esize = tile.esize;
        let per = 4 / esize;
        let mut word = V::int(Ty::I32, 0);
        for j in 0..per {
            let krow = self.addc(self.mulc(t, per)?, k0 + j)?;
            let p = self.smem_ptr(self.add(self.smem_offset_2d(krow, col, tile)?, b0)?)?;
            let v = self.load_mem(p, if esize == 4 { DType::I32 } else { DType::U8 })?;
            let v = if esize == 4 { v } else { self.b.int_cast(v, Ty::I32, false) };
            let v = self.b.int_bin(IntOp::Shl, v, V::int(Ty::I32, 8 * esize * j));
            word = self.b.int_bin(IntOp::Or, word, v);
        }
        Ok(word)
    }
}
