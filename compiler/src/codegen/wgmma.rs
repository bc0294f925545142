//! Hopper's warpgroup MMA: `local_mma` as `wgmma.mma_async.m64nNk16` with both operands read by
//! the tensor cores from shared memory through matrix descriptors (`lir::wgmma_fits` says when).
//!
//! Descriptor (PTX ISA, "matrix descriptor"): bits 0–13 the start address >> 4, 16–29 the
//! leading-dimension byte offset >> 4, 32–45 the stride-dimension byte offset >> 4, 62–63 the
//! swizzle (1 = 128B, 2 = 64B). The tiles are in `lir::index::SmemTile`'s layout. `a: [m, k]` is
//! K-major: 8-row atoms of 64/128-byte rows, the stride between atoms (SBO) 8 rows of one column
//! block; LBO unused; a k-step past a block's 128 bytes moves to the next block. `b: [k, n]` is
//! N-major in 128-byte column blocks: LBO is the distance between 64-column blocks (`k · 128`
//! bytes), SBO between 8-row atoms (1024 bytes). A transposed `a` (stored `[k, m]`, loaded so
//! and used under `trans`) is M-major in the same way, read with `imm-trans-a` = 1; each
//! warpgroup's 64 rows are one of its column blocks.
//!
//! Strip `s` of warp `w`'s accumulator (`#mma<W×1>`) is rows `16·(w + s·W)..` in the `m16n8`
//! register order: in warpgroup `w / 4` that is the fragment of the 64-row `wgmma` tile at row
//! `64·(w / 4) + 16·W·s`.

use super::{Cv, Gen, Res};
use crate::dtype::DType;
use crate::ir::Value;
use crate::lir;
use crate::lir::index::SmemTile;
use crate::mir::{IntOp, Ty, V};
use std::collections::HashMap;

/// The descriptor fields that do not depend on the address: `(LBO, SBO, swizzle mode) << …`.
fn desc_bits(lbo: i64, sbo: i64, swizzle: u64) -> u64 {
    (((lbo as u64) >> 4) << 16) | (((sbo as u64) >> 4) << 32) | (swizzle << 62)
}

/// Descriptor fields of a K-major tile (rows of 64 bytes or of a multiple of 128): 64-byte rows
/// are 64B-swizzled 8-row atoms of 512 bytes; wider rows are 128-byte column blocks, each a stack
/// of 8-row 128B-swizzled atoms 1024 bytes apart (`SmemTile`). LBO is unused.
fn kmajor_bits(tile: SmemTile) -> u64 {
    let swizzle = if tile.row_pitch() == 64 { 2 } else { 1 };
    desc_bits(16, 8 * tile.row_pitch(), swizzle)
}

/// Byte offset of k-step `ks` (16 elements, 32 bytes) in a K-major tile's first row.
fn kmajor_step(tile: SmemTile, ks: i64) -> i64 {
    let byte = ks * 16 * tile.esize;
    if tile.blocked() { byte / 128 * tile.block_bytes() + byte % 128 } else { byte }
}

/// Descriptor fields of an N-major `[k, n]` tile (`n` a multiple of 64), or of an M-major A
/// stored `[k, m]`: LBO the distance between 64-column blocks, SBO between 8-row atoms
/// (`SmemTile`).
fn nmajor_bits(tile: SmemTile) -> u64 {
    desc_bits(tile.block_bytes(), 8 * tile.row_pitch(), 1)
}

/// Where the A operand of a `wgmma` comes from.
enum WgA<'r> {
    /// A swizzled K-major `[m, k]` tile at this shared byte offset.
    Smem(V),
    /// A swizzled M-major tile (`a`'s transpose `[k, m]`) at this shared byte offset.
    SmemT(V),
    /// The registers of an `#mma<w×1>` tile.
    Regs(&'r [V]),
}

impl Gen<'_> {
    /// `fence.proxy.async.shared::cta`: this thread's shared-memory writes (st.shared and
    /// cp.async) become visible to the async proxy that `wgmma` reads through.
    pub(crate) fn proxy_fence(&self) -> Res<()> {
        self.wg_asm("fence.proxy.async.shared::cta;", &[], None, false)?;
        Ok(())
    }

    /// Inline PTX; with `acc`, the accumulators pass through it (in and out, so that nothing
    /// reads them early).
    fn wg_asm(&self, text: &str, args: &[V], acc: Option<&[V]>, in_place: bool) -> Res<Vec<V>> {
        self.wg_asm_n(text, args, acc, acc.map_or(0, |a| a.len()), in_place)
    }

    /// `wg_asm` with `n` f32 results; `acc` (tied to them) may be absent.
    fn wg_asm_n(&self, text: &str, args: &[V], acc: Option<&[V]>, n: usize, in_place: bool) -> Res<Vec<V>> {
        let mut cons: Vec<String> = vec!["=f".into(); n];
        cons.extend(args.iter().map(|a| if a.ty.class_bits() == 64 { "l".into() } else { "r".into() }));
        cons.extend((0..acc.map_or(0, |a| a.len())).map(|i| i.to_string()));
        let all: Vec<V> = args.iter().chain(acc.unwrap_or(&[])).copied().collect();
        self.inline_asm(text, &cons.join(","), &all, in_place)
    }

    /// The low half of the descriptor of the tile at shared byte offset `off`: the address
    /// field `(addr & 0x3ffff) >> 4` and the LBO of `bits`. Shared addresses are below 2¹⁸
    /// (228 KiB at most) and 16-byte aligned, so the mask is a no-op and the field is a sum
    /// (LBO starts at bit 16): a step of `b` bytes inside the tile is `+ b / 16`, one add
    /// (`desc_at`) instead of a shift, a mask and an or per k-step.
    fn desc_lo(&self, off: V, bits: u64) -> Res<V> {
        self.addc(self.lshr(self.smem_addr32(off)?, 4)?, (bits & 0xffff_ffff) as i64)
    }

    /// The descriptor `bytes` (a multiple of 16) past the one whose low half is `lo`; the high
    /// half (SBO, swizzle) is the constant of `bits`.
    fn desc_at(&self, lo: V, bytes: i64, bits: u64) -> Res<V> {
        debug_assert_eq!(bytes % 16, 0);
        let lo = self.b.int_cast(self.addc(lo, bytes >> 4)?, Ty::I64, false);
        Ok(self.b.int_bin(IntOp::Or, lo, V::int(Ty::I64, (bits & !0xffff_ffff) as i64)))
    }

    /// `acc + a · b` by the warpgroups, `a` and `b` swizzled tiles in shared memory at their
    /// offsets plus the bases, each stored transposed or not (`tiles`, `wgmma_issue`); `a · b`
    /// alone when `accumulate` is given and false.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn local_wgmma(
        &mut self,
        t: &lir::Type,
        acc: Value,
        bases: [Option<Value>; 2],
        accumulate: Option<Value>,
        tiles: super::mma::Tiles,
        k: i64,
        dtype: DType,
    ) -> Res<Vec<Cv>> {
        let (a0, b0) = (self.tile_base(bases[0], tiles.a_off)?, self.tile_base(bases[1], tiles.b_off)?);
        let accs = self.regs(acc)?;
        let in_place = self.in_place_ok(acc, &accs);
        let scale = match accumulate {
            Some(f) => Some(self.b.int_cast(self.regs(f)?[0], Ty::I32, false)),
            None => None,
        };
        let a = if tiles.a_trans { WgA::SmemT(a0) } else { WgA::Smem(a0) };
        Ok(vec![Cv::Regs(self.wgmma_issue(t, accs, in_place, scale, a, b0, tiles.b_trans, k, dtype)?)])
    }

    /// `acc + a · b` by the warpgroups with `a`'s fragments in registers (`#mma<w×1>`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn reg_wgmma(
        &mut self,
        t: &lir::Type,
        acc: Value,
        a: Value,
        b_base: Value,
        b_off: (u32, bool),
        k: i64,
        dtype: DType,
    ) -> Res<Vec<Cv>> {
        let b0 = self.tile_base(Some(b_base), b_off.0)?;
        let (accs, a_regs) = (self.regs(acc)?, self.regs(a)?);
        let in_place = self.in_place_ok(acc, &accs);
        Ok(vec![Cv::Regs(self.wgmma_issue(t, accs, in_place, None, WgA::Regs(&a_regs), b0, b_off.1, k, dtype)?)])
    }

    fn tile_base(&self, base: Option<Value>, off: u32) -> Res<V> {
        self.addc(self.stage_base(base)?, off as i64)
    }

    /// Issues one `wgmma` per 16 of `k` and 64-row strip, committed as one group and not
    /// waited for (a `wgmma_wait` follows before the accumulators are read or the buffers
    /// refilled). `b` is `[k, n]` N-major at byte `b0`, or `[n, k]` K-major with `b_trans`.
    /// `scale`, an i32, says at run time whether the first k-step reads the accumulators (not
    /// when 0: the product alone); without it, they are read unless they are all constant zeros.
    #[allow(clippy::too_many_arguments)]
    fn wgmma_issue(
        &self,
        t: &lir::Type,
        mut accs: Vec<V>,
        in_place: bool,
        scale: Option<V>,
        a: WgA<'_>,
        b0: V,
        b_trans: bool,
        k: i64,
        dtype: DType,
    ) -> Res<Vec<V>> {
        let ty = match dtype {
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            other => return Err(format!("wgmma on {other}")),
        };
        let Some(lir::Layout::Mma { warps_m, warps_n }) = t.layout() else {
            return Err("wgmma result is not in an MMA layout".into());
        };
        if warps_m % 4 != 0 || warps_n == 0 || warps_n > 1 && matches!(a, WgA::Regs(_)) {
            return Err(format!("wgmma on a {warps_m}×{warps_n} warp grid"));
        }
        let (m, n_all) = (t.shape()[0], t.shape()[1]);
        // Each warpgroup multiplies its warp column's `n` columns.
        let n = n_all / warps_n as i64;
        let strips = (m / 16 / warps_m as i64) as usize;
        let es = dtype.size() as i64;
        let per = (n / 2) as usize;
        if accs.len() != strips * per {
            return Err(format!("wgmma accumulator has {} registers per thread, not {}", accs.len(), strips * per));
        }
        let a_tile = if matches!(a, WgA::SmemT(_)) { SmemTile::new(k, m, es, true) } else { SmemTile::new(m, k, es, true) };
        let b_tile = if b_trans { SmemTile::new(n_all, k, es, true) } else { SmemTile::new(k, n_all, es, true) };
        // Warpgroup `g` holds warp rows `4·(g % (warps_m / 4))..` of warp column `g / (warps_m /
        // 4)` (`index::MmaThread`): its 64-row block of A, its columns of B.
        let groups_m = (warps_m / 4) as i64;
        let group = self.lshr(self.tid, 7)?;
        let (warpgroup, column) =
            if warps_n == 1 { (group, None) } else { (self.uremc(group, groups_m)?, Some(self.udivc(group, groups_m)?)) };
        let b0 = match column {
            None => b0,
            // Rows of a K-major `[n, k]` tile, 128-byte column blocks of an N-major `[k, n]` one.
            Some(c) if b_trans => self.add(b0, self.mulc(c, n * b_tile.row_pitch())?)?,
            Some(c) => self.add(b0, self.mulc(c, n * es / 128 * b_tile.block_bytes())?)?,
        };
        let regs: Vec<String> = (0..per).map(|i| format!("${i}")).collect();
        let mma = format!("wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ty}.{ty} {{{}}}", regs.join(", "));
        let p = per;
        let b_bits = if b_trans { kmajor_bits(b_tile) } else { nmajor_bits(b_tile) };
        let tn = if b_trans { 0 } else { 1 };
        // Register A fragments are all packed before the fence: a register written between two
        // wgmmas of a group makes ptxas serialise them (an arrive before each).
        let mut frags = HashMap::new();
        if let WgA::Regs(regs) = &a {
            for ks in 0..k / 16 {
                for s in 0..strips {
                    frags.insert((ks, s), self.a_fragment(regs, s, (k / 8) as usize, ks as usize, dtype)?);
                }
            }
        }
        self.wg_asm("wgmma.fence.sync.aligned;", &[], None, false)?;
        let steps = k / 16;
        let b_lo = self.desc_lo(b0, b_bits)?;
        let mut dbs = vec![];
        for ks in 0..steps {
            let b_step = if b_trans { kmajor_step(b_tile, ks) } else { ks * 16 * b_tile.row_pitch() };
            dbs.push(self.desc_at(b_lo, b_step, b_bits)?);
        }
        // One inline-asm statement per strip issues all its k-steps: the accumulators go in and
        // out once, not once per k-step.
        for s in 0..strips {
            let acc = &accs[s * per..(s + 1) * per];
            // A zero accumulator is not read (scale-d = 0 on the first k-step): no registers
            // are zeroed for it.
            let zero = acc.iter().all(|v| v.float_imm() == Some(0.0));
            let (acc, scale) = match scale {
                // The registers pass through even when not read: they may be in flight.
                Some(s) => (Some(acc), s),
                None if zero => (None, self.i32c(0)),
                None => (Some(acc), self.i32c(1)),
            };
            // Operands: the `per` results, then `scale`, then each k-step's A (a descriptor or
            // four fragment registers) and B descriptor, then the tied accumulators.
            let mut args: Vec<V> = vec![scale];
            let mut text = format!("{{\n.reg .pred p;\nsetp.ne.b32 p, ${p}, 0;\n");
            for ks in 0..steps {
                let scale_d = if ks == 0 { "p" } else { "1" };
                let db = dbs[ks as usize];
                match &a {
                    WgA::Smem(a0) => {
                        // Strip `s` of this warpgroup: rows `64·g + 16·warps_m·s`.
                        let row0 = self.mulc(warpgroup, 64 * a_tile.row_pitch())?;
                        let off = s as i64 * 16 * warps_m as i64 * a_tile.row_pitch() + kmajor_step(a_tile, ks);
                        let bits = kmajor_bits(a_tile);
                        let da = self.desc_at(self.desc_lo(self.add(*a0, row0)?, bits)?, off, bits)?;
                        let (ia, ib) = (p + args.len(), p + 1 + args.len());
                        args.extend([da, db]);
                        text += &format!("{mma}, ${ia}, ${ib}, {scale_d}, 1, 1, 0, {tn};\n");
                    }
                    WgA::SmemT(a0) => {
                        // Strip `s` of this warpgroup: rows `64·g + 16·warps_m·s` of `a`, the
                        // stored columns of one 64-column block (`wgmma_fits`).
                        let block = if a_tile.blocked() { a_tile.block_bytes() } else { 0 };
                        let col0 = self.mulc(warpgroup, block)?;
                        let off = (s as i64 * 16 * warps_m as i64 / 64) * block + ks * 16 * a_tile.row_pitch();
                        let bits = nmajor_bits(a_tile);
                        let da = self.desc_at(self.desc_lo(self.add(*a0, col0)?, bits)?, off, bits)?;
                        let (ia, ib) = (p + args.len(), p + 1 + args.len());
                        args.extend([da, db]);
                        text += &format!("{mma}, ${ia}, ${ib}, {scale_d}, 1, 1, 1, {tn};\n");
                    }
                    WgA::Regs(_) => {
                        let afr = frags.get(&(ks, s)).ok_or("wgmma A fragment missing")?;
                        let i0 = p + args.len();
                        args.extend(afr.iter().copied());
                        args.push(db);
                        text +=
                            &format!("{mma}, {{${}, ${}, ${}, ${}}}, ${}, {scale_d}, 1, 1, {tn};\n", i0, i0 + 1, i0 + 2, i0 + 3, i0 + 4);
                    }
                }
            }
            text += "}";
            let d = self.wg_asm_n(&text, &args, acc, per, in_place)?;
            accs[s * per..(s + 1) * per].copy_from_slice(&d);
        }
        self.wg_asm("wgmma.commit_group.sync.aligned;", &[], None, false)?;
        Ok(accs)
    }

    /// `wgmma.wait_group pending`, the accumulators passing through it: before it they are being
    /// written by the tensor cores and nothing may read them (after it too, with `pending` > 0,
    /// but for the next `wgmma`, which chains on them).
    pub(crate) fn wgmma_wait(&self, accs: &[V], in_place: bool, pending: u32) -> Res<Vec<V>> {
        self.wg_asm(&format!("wgmma.wait_group.sync.aligned {pending};"), &[], Some(accs), in_place)
    }
}

#[cfg(test)]
mod tests {
    //! The descriptors, run through the machine-IR evaluator, against the PTX ISA's encoding.
    use crate::codegen::Gen;
    use crate::ir::Body;
    use crate::lir;
    use crate::lir::index::SmemTile;
    use crate::mir::eval::{Env, run};
    use crate::mir::{Addr, MemTy, Space, Ty, verify_module};

    /// `desc_at(desc_lo(off), step)` is the ISA's `((addr & 0x3ffff) >> 4) | LBO | SBO |
    /// swizzle` of `off + step` for every 16-byte-aligned shared offset of the largest block,
    /// K-major and N-major, 64- and 128-byte rows.
    #[test]
    fn descriptors_match_the_isa_encoding() {
        let k = lir::Kernel {
            name: "t".into(),
            params: vec![],
            threads: 128,
            shared_bytes: 0,
            blocks_per_sm: None,
            tensor_maps: vec![],
            warp_specialize: false,
            ws: None,
            body: Body::new(),
        };
        let g = Gen::new(&k, crate::Target::Sm90a);
        let x = g.b.param(Ty::I32);
        let out = g.b.param(Ty::I64);
        let tiles = [SmemTile::new(64, 32, 2, true), SmemTile::new(64, 64, 2, true), SmemTile::new(64, 128, 2, true)];
        let bits: Vec<u64> = tiles.iter().flat_map(|&t| [super::kmajor_bits(t), super::nmajor_bits(t)]).collect();
        let steps = [0i64, 32, 96, 1024, 8192];
        let mut want_of = vec![];
        let mut i = 0i64;
        for &b in &bits {
            let lo = g.desc_lo(x, b).unwrap_or_else(|e| panic!("{e}"));
            for &s in &steps {
                let d = g.b.materialize(g.desc_at(lo, s, b).unwrap_or_else(|e| panic!("{e}")));
                g.b.store(Space::Global, MemTy::of(Ty::I64), &[d], Addr { base: out, offset: 8 * i }, None);
                want_of.push((b, s));
                i += 1;
            }
        }
        g.b.ret();
        let m = g.b.finish("t", 128, None);
        verify_module(&m).unwrap_or_else(|e| panic!("{e}"));
        for off in (0..232_448 - 8192).step_by(16 * 97).chain([0, 16, 232_448 - 8192 - 16]) {
            let mut env = Env::default();
            run(&m, &m.kernel, &[off, 0x1000], &mut env).unwrap_or_else(|e| panic!("{e}"));
            for (j, &(b, s)) in want_of.iter().enumerate() {
                let got = u64::from_le_bytes(env.read(Space::Global, 0x1000 + 8 * j as u64, 8).try_into().unwrap_or_default());
                let want = (((off + s as u64) & 0x3ffff) >> 4) | b;
                assert_eq!(got, want, "offset {off} step {s} bits {b:#x}");
            }
        }
    }
}
