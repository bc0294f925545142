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
//!   are predicated PTX accesses (one statement per chunk, which also computes the chunk's masks
//!   from its indices), so the edge path has no branch either; a masked-off load gives the pad.
//!
//! Single elements (and replicated tiles, which their owner threads store) take the edge path
//! only: predicated stores, and loads from a clamped, always-valid address with the pad
//! selected outside the tensor. Such a load from an empty tensor (a size of 0), which has no
//! valid address, is skipped by one uniform branch.

use super::{Cv, Gen, Ptr, Res, mem_reg_type};
use crate::dtype::DType;
use crate::ir::Value;
use crate::lir::{self, Layout};
use crate::mir::{Blk, Cmp, IntOp, MemTy, Sem, Ty, V};

/// Where one chunk of a window access goes (the edge path). Its masks are built only where the
/// generated code needs them (`Gen::chunk_masks`); the chunk statements compute them in PTX
/// from `lead`, `idx` and `size`.
struct Chunk {
    /// The registers, consecutive along the last dimension.
    regs: Vec<usize>,
    /// The first element's address (valid only where its element is inside).
    ptr: Ptr,
    /// Linear element offset of the first element.
    lin: V,
    /// The leading indices are inside the tensor.
    lead: V,
    /// The first element's last-dimension index, and the tensor's size along it.
    idx: V,
    size: V,
    /// `chunks_aligned`, for chunks of several elements.
    aligned: Option<V>,
}

/// A chunk's masks.
struct Masks {
    /// Per element: inside the tensor.
    inb: Vec<V>,
    /// Every element inside, contiguous and aligned: one vector access.
    fast: V,
}

/// A predicated global access of `bytes` bytes: the type of one of its parts, the number of
/// parts (two 8-byte halves of a 16-byte access) and the PTX type of a part.
fn access(bytes: usize) -> Option<(Ty, usize, MemTy)> {
    match bytes {
        1 => Some((Ty::I16, 1, MemTy::U8)),
        2 => Some((Ty::I16, 1, MemTy::B16)),
        4 => Some((Ty::I32, 1, MemTy::B32)),
        8 => Some((Ty::I64, 1, MemTy::B64)),
        16 => Some((Ty::I64, 2, MemTy::B64)),
        _ => None,
    }
}

impl Gen<'_> {
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

    fn window_offsets(&self, offs: &[Value]) -> Res<Vec<V>> {
        offs.iter().map(|&o| self.regs(o).map(|r| r[0])).collect()
    }

    /// Whether the window at `offs` is inside the tensor (uniform).
    fn window_in_range(&self, tensor: &Cv, offs: &[V], shape: &[i64]) -> Res<V> {
        let Cv::Tensor { sizes, .. } = tensor else { return Err("window access on a non-tensor".into()) };
        let mut ok = V::int(Ty::Pred, 1);
        for i in 0..sizes.len() {
            // `offs + shape <= size` as `offs <= size - shape`, which cannot overflow.
            let ge0 = self.icmp(Cmp::Sge, offs[i], self.i32c(0))?;
            let fits = self.icmp(Cmp::Sle, offs[i], self.sub(sizes[i], self.i32c(shape[i]))?)?;
            ok = self.and(ok, self.and(ge0, fits)?)?;
        }
        Ok(ok)
    }

    /// Whether chunks of `k` elements of `d` are contiguous and aligned to their size wherever
    /// they are (uniform): a unit last stride, an aligned base, aligned row strides and a last
    /// offset that is a multiple of `k` (a chunk starts at a multiple of `k` in the tile).
    fn chunks_aligned(&self, tensor: &Cv, offs: &[V], k: usize, d: DType) -> Res<V> {
        let Cv::Tensor { ptr, strides, .. } = tensor else { return Err("window access on a non-tensor".into()) };
        let last = strides.len() - 1;
        let bytes = (k * d.size()) as i64;
        let eq0 = |x: V, mask: i64| -> Res<V> { self.icmp(Cmp::Eq, self.and(x, V::int(x.ty, mask))?, V::int(x.ty, 0)) };
        let mut ok = self.icmp(Cmp::Eq, strides[last], V::int(Ty::I64, 1))?;
        ok = self.and(ok, eq0(*ptr, bytes - 1)?)?;
        for s in &strides[..last] {
            ok = self.and(ok, eq0(self.mulc(*s, d.size() as i64)?, bytes - 1)?)?;
        }
        self.and(ok, eq0(offs[last], k as i64 - 1)?)
    }

    /// The address of the element at coordinates `c` of the window at `offs`, on the fast path
    /// (the window inside the tensor; `unit`: with a unit last stride). Each index `offs + c` is
    /// in range there, so it is sign-extended as `sext(x) + k` where it was built as `x + k`:
    /// every register shares `x`, and the constants end up in the address's immediate offset.
    fn fast_address(&self, tensor: &Cv, offs: &[V], c: &[V], d: DType, unit: bool) -> Res<Ptr> {
        let Cv::Tensor { ptr, strides, .. } = tensor else { return Err("window access on a non-tensor".into()) };
        let mut lin = V::int(Ty::I64, 0);
        for i in 0..c.len() {
            let stride = if unit && i + 1 == c.len() { V::int(Ty::I64, 1) } else { strides[i] };
            let idx = self.add(offs[i], c[i])?;
            let (x, k) = match self.split_const(idx) {
                Some((x, k)) if (0..1 << 30).contains(&k) => (x, k),
                _ => (idx, 0),
            };
            let term = self.mul(self.sext(x, Ty::I64)?, stride)?;
            let kterm = self.mul(V::int(Ty::I64, k), stride)?;
            lin = self.add(lin, self.add(term, kterm)?)?;
        }
        self.gep(*ptr, lin, d)
    }

    /// The chunk of the edge path made of registers `regs` (consecutive along the last
    /// dimension). Built where it is used, one chunk at a time, so that each chunk's address
    /// and masks are live only while its access is made.
    /// `aligned`: `chunks_aligned` for the chunks of more than one element.
    fn window_chunk(&self, tensor: &Cv, offs: &[V], t: &lir::Type, d: DType, aligned: Option<V>, regs: Vec<usize>) -> Res<Chunk> {
        let Cv::Tensor { ptr, sizes, strides } = tensor else { return Err("window access on a non-tensor".into()) };
        let rank = sizes.len();
        let last = rank - 1;
        let n = regs.len() as i64;
        let c = self.coords(t, regs[0])?;
        let mut lead = V::int(Ty::Pred, 1);
        let mut lin = self.i64c(0);
        let mut idx_last = self.i32c(0);
        for i in 0..rank {
            let idx = self.add(offs[i], c[i])?;
            if i == last {
                idx_last = idx;
            } else {
                lead = self.and(lead, self.icmp(Cmp::Ult, idx, sizes[i])?)?;
            }
            lin = self.add(lin, self.mul(self.sext(idx, Ty::I64)?, strides[i])?)?;
        }
        // Dereferenced only where in bounds (or clamped).
        let p = self.gep(*ptr, lin, d)?;
        let aligned = aligned.filter(|_| n > 1);
        Ok(Chunk { regs, ptr: p, lin, lead, idx: idx_last, size: sizes[last], aligned })
    }

    /// A chunk's masks.
    fn chunk_masks(&self, ch: &Chunk) -> Res<Masks> {
        let n = ch.regs.len();
        let mut inb = vec![];
        for e in 0..n {
            let ok = self.icmp(Cmp::Ult, self.addc(ch.idx, e as i64)?, ch.size)?;
            inb.push(self.and(ch.lead, ok)?);
        }
        let fast = match ch.aligned {
            Some(a) => self.and(self.and(inb[0], inb[n - 1])?, a)?,
            None => V::int(Ty::Pred, 0),
        };
        Ok(Masks { inb, fast })
    }

    /// A window load with padding (see the module comment).
    pub(crate) fn load_window(&mut self, tensor: &Cv, offs: &[Value], t: &lir::Type, pad: V) -> Res<Vec<V>> {
        let Cv::Tensor { ptr, sizes, strides } = tensor else { return Err("window load from a non-tensor".into()) };
        let d = t.dtype();
        let n = self.nregs(t);
        let offs = self.window_offsets(offs)?;
        let chunks = self.chunks_of(t);
        let k = chunks.iter().map(|c| c.len()).max().unwrap_or(1);
        if k == 1 {
            // Single elements: masked loads from clamped addresses, no branch. Uniform: a tensor
            // with no element has no valid address to clamp to.
            let mut nonempty = V::int(Ty::Pred, 1);
            for s in sizes {
                nonempty = self.and(nonempty, self.icmp(Cmp::Sgt, *s, self.i32c(0))?)?;
            }
            let pre = self.b.current();
            let body = self.block("ld_body");
            let join = self.block("ld_join");
            self.b.cond_br(nonempty, body, join);
            self.b.position(body);
            let mut vals = vec![];
            for regs in self.chunks_of(t) {
                let ch = self.window_chunk(tensor, &offs, t, d, None, regs)?;
                vals.push(self.masked_scalar(*ptr, &ch, d, pad)?);
            }
            let bend = self.b.current();
            self.b.br(join);
            self.b.position(join);
            return Ok(self.phis(&[(vals, bend), (vec![pad; n], pre)]));
        }
        let aligned = self.chunks_aligned(tensor, &offs, k, d)?;
        let inside = self.and(self.window_in_range(tensor, &offs, t.shape())?, aligned)?;
        let fast = self.block("ld_fast");
        let edge = self.block("ld_edge");
        let merge = self.block("ld_merge");
        self.b.cond_br(inside, fast, edge);

        self.b.position(fast);
        let mut fvals: Vec<Option<V>> = vec![None; n];
        for regs in &chunks {
            let p = self.fast_address(tensor, &offs, &self.coords(t, regs[0])?, d, true)?;
            if regs.len() > 1 {
                let vs = self.vector_load(p, regs.len(), d)?;
                for (&r, v) in regs.iter().zip(vs) {
                    fvals[r] = Some(self.mem_to_reg(v, d));
                }
            } else {
                fvals[regs[0]] = Some(self.load_mem(p, d)?);
            }
        }
        let fvals = fvals.into_iter().map(|v| v.ok_or_else(|| "register without a value".to_string())).collect::<Res<Vec<_>>>()?;
        let fend = self.b.current();
        self.b.br(merge);

        // No clamped addresses here (every access is predicated), so no emptiness check either.
        self.b.position(edge);
        let strideb = self.mulc(strides[strides.len() - 1], d.size() as i64)?;
        let mut evals: Vec<Option<V>> = vec![None; n];
        for regs in self.chunks_of(t) {
            let ch = self.window_chunk(tensor, &offs, t, d, Some(aligned), regs)?;
            let vals = self.masked_chunk_load(&ch, strideb, d, pad)?;
            for (&r, v) in ch.regs.iter().zip(vals) {
                evals[r] = Some(v);
            }
        }
        let evals = evals.into_iter().map(|v| v.ok_or_else(|| "register without a value".to_string())).collect::<Res<Vec<_>>>()?;
        let eend = self.b.current();
        self.b.br(merge);
        self.b.position(merge);
        Ok(self.phis(&[(fvals, fend), (evals, eend)]))
    }

    /// One vector access's PTX type and element count for `k` elements of `d` (16-bit and
    /// smaller elements travel packed in 32-bit words).
    fn vector_shape(k: usize, d: DType) -> Res<(Ty, usize)> {
        let bytes = k * d.size();
        match (d.size(), bytes) {
            (4 | 8, _) if k <= 4 && bytes <= 16 => Ok((Ty::int_of_bits(8 * d.size() as u32), k)),
            (1 | 2, 2) => Ok((Ty::I16, 1)),
            (1 | 2, 4 | 8 | 16) => Ok((Ty::I32, bytes / 4)),
            _ => Err(format!("no vector access of {k} × {d}")),
        }
    }

    /// `k` consecutive elements of `d` at an address aligned to their size (memory types).
    fn vector_load(&self, p: Ptr, k: usize, d: DType) -> Res<Vec<V>> {
        if k * d.size() > 16 {
            // Wider than one access: 16-byte pieces (each aligned, the whole chunk is).
            let per = 16 / d.size();
            let mut out = vec![];
            for i in (0..k).step_by(per) {
                out.extend(self.vector_load(self.ptr_addc(p, (i * d.size()) as i64)?, per.min(k - i), d)?);
            }
            return Ok(out);
        }
        let (wt, n) = Self::vector_shape(k, d)?;
        let words = self.b.load(p.space, Sem::Weak, MemTy::of(wt), wt, n, self.address(p.at));
        self.words_to_elems(&words, k, d)
    }

    /// Elements (memory types) from the words of a vector access.
    fn words_to_elems(&self, words: &[V], k: usize, d: DType) -> Res<Vec<V>> {
        let et = mem_reg_type(d);
        if words.len() == k && words[0].ty.class_bits() == et.class_bits() {
            return Ok(words.iter().map(|w| w.retype(et)).collect());
        }
        let per = k / words.len();
        let mut out = vec![];
        for &w in words {
            out.extend(self.b.unpack(w, per, if d.size() == 1 { Ty::I8 } else { Ty::I16 }).into_iter().map(|e| e.retype(et)));
        }
        Ok(out)
    }

    /// The words of a vector access holding elements `vals` (memory types).
    fn to_words(&self, vals: &[V], d: DType) -> Res<Vec<V>> {
        let (wt, n) = Self::vector_shape(vals.len(), d)?;
        if n == vals.len() {
            return Ok(vals.iter().map(|&v| self.b.materialize(v).retype(wt)).collect());
        }
        let per = vals.len() / n;
        let mut out = vec![];
        for c in vals.chunks(per) {
            if d.size() == 1 {
                // Bytes: or-ed together at their shifts.
                let mut w = V::int(wt, 0);
                for (i, &b) in c.iter().enumerate() {
                    let b = self.b.int_bin(IntOp::And, self.b.int_cast(b.retype(Ty::I16), wt, false), V::int(wt, 255));
                    w = self.b.int_bin(IntOp::Or, w, self.b.int_bin(IntOp::Shl, b, V::int(wt, 8 * i as i64)));
                }
                out.push(w);
            } else {
                out.push(self.b.pack(c, wt));
            }
        }
        Ok(out)
    }

    pub(crate) fn vector_store(&self, p: Ptr, vals: &[V], d: DType) -> Res<()> {
        if vals.len() * d.size() > 16 {
            let per = 16 / d.size();
            for (i, c) in vals.chunks(per).enumerate() {
                self.vector_store(self.ptr_addc(p, (i * per * d.size()) as i64)?, c, d)?;
            }
            return Ok(());
        }
        let words: Vec<V> = self.to_words(vals, d)?.into_iter().map(|w| self.b.materialize(w)).collect();
        let ty = MemTy::of(Ty::int_of_bits(words[0].ty.class_bits()));
        self.b.store(p.space, ty, &words, self.address(p.at), None);
        Ok(())
    }

    /// One phi per register over the incoming `(values, block)`.
    fn phis(&self, incoming: &[(Vec<V>, Blk)]) -> Vec<V> {
        let mut out = vec![];
        for i in 0..incoming[0].0.len() {
            let phi = self.b.phi(incoming[0].0[i].ty);
            for (vals, blk) in incoming {
                self.b.incoming(phi, vals[i], *blk);
            }
            out.push(phi);
        }
        out
    }

    /// The load of a single-element chunk from a clamped address, selecting the pad outside the
    /// tensor.
    fn masked_scalar(&self, base: V, ch: &Chunk, d: DType, pad: V) -> Res<V> {
        let inb = self.chunk_masks(ch)?.inb[0];
        let lin = self.select(inb, ch.lin, self.i64c(0))?;
        // The offset is in range, or 0 (the tensor is not empty).
        let p = self.gep(base, lin, d)?;
        let v = self.load_mem(p, d)?;
        Ok(self.b.select(inb, v, pad))
    }

    /// The elements of an edge-path chunk: one predicated vector load where the chunk is
    /// `fast`, else predicated element loads (`strideb` bytes apart); the pad outside the
    /// tensor.
    fn masked_chunk_load(&self, ch: &Chunk, strideb: V, d: DType, pad: V) -> Res<Vec<V>> {
        let k = ch.regs.len();
        let Masks { inb, fast } = self.chunk_masks(ch)?;
        let not_fast = self.b.not(fast);
        let conds = inb.iter().map(|inb| self.and(*inb, not_fast)).collect::<Res<Vec<_>>>()?;
        let vector = match access(k * d.size()) {
            Some(_) if k > 1 => {
                let parts = self.pred_load(fast, ch.ptr, None, k * d.size())?;
                Some(self.words_to_elems(&self.parts_to_words(&parts, k, d)?, k, d)?)
            }
            _ => None,
        };
        let mut out = vec![];
        for (e, inb) in inb.iter().enumerate() {
            let p = self.element_ptr(ch.ptr, e, strideb)?;
            let cond = if vector.is_some() { conds[e] } else { *inb };
            let x = self.load_if(cond, p, d, pad)?;
            let x = match &vector {
                Some(v) => self.b.select(fast, self.mem_to_reg(v[e], d), x),
                None => x,
            };
            out.push(x);
        }
        Ok(out)
    }

    /// The words of a vector access from the parts of a predicated one (the same bits).
    fn parts_to_words(&self, parts: &[V], k: usize, d: DType) -> Res<Vec<V>> {
        let (wt, n) = Self::vector_shape(k, d)?;
        if parts.len() == n && parts[0].ty.class_bits() == wt.class_bits() {
            return Ok(parts.iter().map(|p| p.retype(wt)).collect());
        }
        let mut out = vec![];
        for &p in parts {
            let per = n / parts.len();
            if per == 1 {
                // A part wider than its word (a byte pair in a 16-bit part): the low bits.
                out.push(self.b.int_cast(p, wt, false));
            } else {
                out.extend(self.b.unpack(p, per, wt));
            }
        }
        Ok(out)
    }

    /// Element `e` of a chunk starting at `p`, `strideb` bytes apart.
    fn element_ptr(&self, p: Ptr, e: usize, strideb: V) -> Res<Ptr> {
        if e == 0 {
            return Ok(p);
        }
        let off = self.mul(strideb, V::int(Ty::I64, e as i64))?;
        // Only dereferenced under the element's mask.
        self.ptr_add(p, off)
    }

    /// A window store that drops out-of-range elements; `owner` limits a replicated tile to one
    /// writer per element.
    pub(crate) fn store_window(&mut self, tensor: &Cv, offs: &[Value], t: &lir::Type, vals: &[V], owner: Option<V>) -> Res<()> {
        let Cv::Tensor { strides, .. } = tensor else { return Err("window store to a non-tensor".into()) };
        let d = t.dtype();
        let offs = self.window_offsets(offs)?;
        let chunks = self.chunks_of(t);
        let k = chunks.iter().map(|c| c.len()).max().unwrap_or(1);
        let strideb = self.mulc(strides[strides.len() - 1], d.size() as i64)?;
        if owner.is_some() || k == 1 {
            for regs in chunks.iter() {
                let ch = self.window_chunk(tensor, &offs, t, d, None, regs.clone())?;
                for (e, inb) in self.chunk_masks(&ch)?.inb.iter().enumerate() {
                    let cond = match owner {
                        Some(o) => self.and(*inb, o)?,
                        None => *inb,
                    };
                    self.store_if(cond, self.element_ptr(ch.ptr, e, strideb)?, vals[ch.regs[e]], d)?;
                }
            }
            return Ok(());
        }
        // The chunks in their memory types, for both paths.
        let mems: Vec<Vec<V>> = chunks.iter().map(|regs| regs.iter().map(|&r| self.reg_to_mem(vals[r], d)).collect()).collect();
        let aligned = self.chunks_aligned(tensor, &offs, k, d)?;
        let inside = self.and(self.window_in_range(tensor, &offs, t.shape())?, aligned)?;
        let fast = self.block("st_fast");
        let edge = self.block("st_edge");
        let done = self.block("st_done");
        self.b.cond_br(inside, fast, edge);
        self.b.position(fast);
        for (regs, m) in chunks.iter().zip(&mems) {
            let p = self.fast_address(tensor, &offs, &self.coords(t, regs[0])?, d, true)?;
            if regs.len() > 1 {
                self.vector_store(p, m, d)?;
            } else {
                self.store_mem(p, vals[regs[0]], d)?;
            }
        }
        self.b.br(done);

        self.b.position(edge);
        for (regs, m) in chunks.iter().zip(&mems) {
            let ch = &self.window_chunk(tensor, &offs, t, d, Some(aligned), regs.clone())?;
            let n = ch.regs.len();
            let Masks { inb, fast } = self.chunk_masks(ch)?;
            let not_fast = self.b.not(fast);
            let conds = inb.iter().map(|inb| self.and(*inb, not_fast)).collect::<Res<Vec<_>>>()?;
            let vector = n > 1 && access(n * d.size()).is_some();
            if vector {
                let parts = self.words_to_parts(&self.to_words(m, d)?, n * d.size())?;
                self.pred_store(fast, ch.ptr, &parts, n * d.size())?;
            }
            for (e, inb) in inb.iter().enumerate() {
                let c = if vector { conds[e] } else { *inb };
                self.store_if(c, self.element_ptr(ch.ptr, e, strideb)?, vals[ch.regs[e]], d)?;
            }
        }
        self.b.br(done);
        self.b.position(done);
        Ok(())
    }

    /// The parts of a predicated access of `bytes` bytes from the words of a vector access.
    fn words_to_parts(&self, words: &[V], bytes: usize) -> Res<Vec<V>> {
        let (pt, n, _) = access(bytes).ok_or("no predicated access of this size")?;
        if words.len() == n && words[0].ty.class_bits() == pt.class_bits() {
            return Ok(words.iter().map(|w| w.retype(pt)).collect());
        }
        let per = words.len() / n;
        if per == 0 {
            return Ok(words.iter().map(|w| self.b.int_cast(*w, pt, false)).collect());
        }
        Ok(words.chunks(per).map(|c| self.b.pack(c, pt)).collect())
    }

    /// The bits of a value of `d` in memory, as the integer a predicated access carries.
    fn to_bits(&self, v: V, d: DType) -> Res<V> {
        let (it, _, _) = access(d.size()).ok_or_else(|| format!("no predicated access of {d}"))?;
        let v = self.b.materialize(v);
        Ok(if v.ty.class_bits() == it.class_bits() {
            v.retype(it)
        } else {
            self.b.int_cast(v.retype(Ty::int_of_bits(v.ty.class_bits())), it, false)
        })
    }

    /// A value of memory type `et` from the bits of a predicated access.
    fn bits_to_value(&self, bits: V, et: Ty) -> V {
        if bits.ty.class_bits() == et.class_bits() {
            bits.retype(et)
        } else {
            self.b.int_cast(bits, Ty::int_of_bits(et.class_bits()), false).retype(et)
        }
    }

    /// `if cond { *p = parts }` in global memory, without a branch: a predicated `st.global`.
    fn pred_store(&self, cond: V, p: Ptr, parts: &[V], bytes: usize) -> Res<()> {
        let (_, _, ty) = access(bytes).ok_or("no predicated store of this size")?;
        let ty = if ty == MemTy::U8 { MemTy::B8 } else { ty };
        let cond = self.b.materialize(cond);
        let parts: Vec<V> = parts.iter().map(|&x| self.b.materialize(x)).collect();
        if cond.imm() == Some(0) {
            return Ok(());
        }
        self.b.store(p.space, ty, &parts, self.address(p.at), Some(cond));
        Ok(())
    }

    /// `cond ? *p : init` of `bytes` bytes in global memory, without a branch: a predicated
    /// `ld.global` (its destination starts as `init`, or 0).
    fn pred_load(&self, cond: V, p: Ptr, init: Option<V>, bytes: usize) -> Res<Vec<V>> {
        let (it, n, ty) = access(bytes).ok_or("no predicated load of this size")?;
        let init = match init {
            Some(v) => self.b.int_cast(v.retype(Ty::int_of_bits(v.ty.class_bits())), it, false),
            None => V::int(it, 0),
        };
        let outs: Vec<V> = (0..n).map(|_| self.b.fresh(it)).collect();
        let init = self.b.materialize(init);
        for o in &outs {
            self.b.mov(*o, init);
        }
        if cond.imm() == Some(0) {
            return Ok(outs);
        }
        let cond = self.b.materialize(cond);
        self.b.load_pred(p.space, ty, &outs, self.address(p.at), cond);
        Ok(outs)
    }

    /// `cond ? *p : pad` for one element of `d` in global memory, without a branch.
    pub(crate) fn load_if(&self, cond: V, p: Ptr, d: DType, pad: V) -> Res<V> {
        let pad_bits = self.to_bits(self.reg_to_mem(pad, d), d)?;
        let bits = self.pred_load(cond, p, Some(pad_bits), d.size())?;
        Ok(self.mem_to_reg(self.bits_to_value(bits[0], mem_reg_type(d)), d))
    }

    /// `if cond { *p = v }` for one element of `d` in global memory, without a branch.
    pub(crate) fn store_if(&self, cond: V, p: Ptr, v: V, d: DType) -> Res<()> {
        let bits = self.to_bits(self.reg_to_mem(v, d), d)?;
        self.pred_store(cond, p, &[bits], d.size())
    }

    /// A register value as stored in memory (bool as a byte).
    fn reg_to_mem(&self, v: V, d: DType) -> V {
        if d == DType::Bool {
            return self.b.int_cast(v, Ty::I8, false);
        }
        v
    }

    fn mem_to_reg(&self, v: V, d: DType) -> V {
        if d == DType::Bool {
            return self.b.icmp(Cmp::Ne, v.retype(Ty::I8), V::int(Ty::I8, 0));
        }
        v
    }
}
