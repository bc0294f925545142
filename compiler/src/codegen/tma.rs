//! Hopper's copy engine: `tma_copy` as bulk tensor copies (`cp.async.bulk.tensor`) completing
//! on mbarriers, the mbarrier ops of a pipelined loop (`mbar_init`, `tma_arrive`, `tma_wait`),
//! and `tma_store`, bulk tensor stores out of shared memory in a bulk group. Every op checks the kernel's `maps_ready` flag: when the runtime could not
//! encode the tensor maps, `tma_copy` copies element by element (`async_copy`'s slow path, a
//! shared device function: a tensor the copy engine cannot take has rows that are not 16-byte
//! aligned, which `cp.async` cannot take either) and the mbarrier ops do nothing.
//!
//! A tensor map's box lands in shared memory row-major, its 16-byte chunks swizzled by the
//! address bits of the row within a 1024-byte atom: `lir::index::SmemTile`'s layout. A window of
//! rows wider than 128 bytes is one box per 128-byte column block, each landing on its block.

use super::mma::Toward;
use super::{Gen, Res};
use crate::ir::Value;
use crate::lir::index::SmemTile;
use crate::mir::{Cmp, V};
use crate::tir::AtomicOp;

impl Gen<'_> {
    /// The `maps_ready` flag (a predicate), or an error in a kernel without tensor maps.
    fn ready(&self) -> Res<V> {
        self.maps_ready.ok_or_else(|| "an mbarrier op in a kernel without tensor maps".into())
    }

    /// Runs `then` in a block entered when `c` holds; continues after it.
    fn when(&mut self, c: V, name: &str, then: impl FnOnce(&mut Self) -> Res<()>) -> Res<()> {
        let yes = self.block(name);
        let done = self.block("tma_join");
        self.b.cond_br(c, yes, done);
        self.b.position(yes);
        then(self)?;
        self.b.br(done);
        self.b.position(done);
        Ok(())
    }

    /// Thread 0 (the one that issues copies and arrivals), when the maps are ready.
    fn leader(&self) -> Res<V> {
        let first = self.icmp(Cmp::Eq, self.tid, self.i32c(0))?;
        self.and(self.ready()?, first)
    }

    /// The shared address of the mbarrier of `stage` (an `i32` value) at byte `mbar`.
    fn mbar_addr(&self, mbar: u32, stage: Value) -> Res<V> {
        let stage = self.regs(stage)?[0];
        self.smem_addr32(self.add(self.mulc(stage, 8)?, self.i32c(mbar as i64))?)
    }

    pub(crate) fn mbar_init(&mut self, mbar: u32, count: u32) -> Res<()> {
        let leader = self.leader()?;
        self.when(leader, "mbar_init", |g| {
            for s in 0..count {
                let at = g.smem_addr32(g.i32c(mbar as i64 + 8 * s as i64))?;
                g.inline_asm("mbarrier.init.shared::cta.b64 [$0], 1;", "r,~{memory}", &[at], false)?;
            }
            // The initialisation is visible to the copy engine's arrivals.
            g.inline_asm("fence.mbarrier_init.release.cluster;", "~{memory}", &[], false)?;
            Ok(())
        })?;
        self.barrier();
        Ok(())
    }

    /// `operands`: `(stage, valid)`.
    pub(crate) fn tma_arrive(&mut self, operands: &[Value], mbar: u32, bytes: u32) -> Res<()> {
        let [stage, valid] = operands[..] else { return Err("tma_arrive takes (stage, valid)".into()) };
        let go = self.and(self.leader()?, self.regs(valid)?[0])?;
        let at = self.mbar_addr(mbar, stage)?;
        self.when(go, "tma_arrive", |g| {
            let text = format!("mbarrier.arrive.expect_tx.shared::cta.b64 _, [$0], {bytes};");
            g.inline_asm(&text, "r,~{memory}", &[at], false)?;
            Ok(())
        })
    }

    /// `operands`: `(stage, parity)`.
    pub(crate) fn tma_wait(&mut self, operands: &[Value], mbar: u32) -> Res<()> {
        let [stage, parity] = operands[..] else { return Err("tma_wait takes (stage, parity)".into()) };
        let ready = self.ready()?;
        let at = self.mbar_addr(mbar, stage)?;
        let parity = self.regs(parity)?[0];
        self.when(ready, "tma_wait", |g| {
            // The loop's label is local to its braces: the statement may appear many times.
            let text =
                "{\n.reg .pred P1;\nTESSERA_WAIT:\nmbarrier.try_wait.parity.shared::cta.b64 P1, [$0], $1;\n@!P1 bra TESSERA_WAIT;\n}";
            g.inline_asm(text, "r,r,~{memory}", &[at, parity], false)?;
            Ok(())
        })
    }

    /// `operands`: `(base, t, o0, …, stage, valid)` (`lir::OpKind::TmaCopy`).
    pub(crate) fn tma_copy(&mut self, operands: &[Value], offset: u32, shape: &[i64], map: u32, mbar: u32) -> Res<()> {
        let n = operands.len();
        if n < 4 + shape.len() {
            return Err("tma_copy takes (base, t, offsets…, stage, valid)".into());
        }
        let (window, stage, valid) = (&operands[..n - 2], operands[n - 2], operands[n - 1]);
        self.copy_engine_or_fallback(
            "tma",
            |g| g.fallback_copy(window, offset, shape),
            |g| Ok((g.and(g.leader()?, g.regs(valid)?[0])?, g.mbar_addr(mbar, stage)?)),
            |g, at| {
                let dst = g.add(g.regs(window[0])?[0], g.i32c(offset as i64))?;
                g.tma_boxes(window[1], &window[2..], dst, shape, map, Bulk::Load(at))
            },
        )
    }

    /// Branches on `maps_ready`: without maps every thread runs `fallback`; with them `issuer`
    /// gives the condition of the thread(s) that issue (and a value for `issue`), which run
    /// `issue`. Blocks `NAME`, `NAME_fallback`, `NAME_done`, `NAME_issue`; continues after.
    fn copy_engine_or_fallback<T>(
        &mut self,
        name: &str,
        fallback: impl FnOnce(&mut Self) -> Res<()>,
        issuer: impl FnOnce(&mut Self) -> Res<(V, T)>,
        issue: impl FnOnce(&mut Self, T) -> Res<()>,
    ) -> Res<()> {
        let ready = self.ready()?;
        let yes = self.block(name);
        let no = self.block(&format!("{name}_fallback"));
        let done = self.block(&format!("{name}_done"));
        self.b.cond_br(ready, yes, no);
        self.b.position(no);
        fallback(self)?;
        self.b.br(done);
        self.b.position(yes);
        let (go, x) = issuer(self)?;
        let at = self.block(&format!("{name}_issue"));
        self.b.cond_br(go, at, done);
        self.b.position(at);
        issue(self, x)?;
        self.b.br(done);
        self.b.position(done);
        Ok(())
    }

    /// The window copied element by element into the buffer (`maps_ready` is 0).
    fn fallback_copy(&mut self, window: &[Value], offset: u32, shape: &[i64]) -> Res<()> {
        let base = self.regs(window[0])?[0];
        let dst = self.addc(base, offset as i64)?;
        self.slow_window_copy(window[1], &window[2..], shape, Toward::Shared, dst)
    }

    /// `async_copy`'s (or, toward global memory, `tma_store`'s) element-by-element copy between
    /// the window of tensor `t` at `offs` and the tile at shared byte `smem`.
    fn slow_window_copy(&mut self, t: Value, offs: &[Value], shape: &[i64], toward: Toward, smem: V) -> Res<()> {
        let Some(super::Cv::Tensor { ptr, sizes, strides }) = self.vals.get(&t).cloned() else {
            return Err("a window copy of a non-tensor".into());
        };
        let dtype = self.k.body.ty(t).dtype();
        let offs: Vec<V> = offs.iter().map(|&o| self.regs(o).map(|r| r[0])).collect::<Res<_>>()?;
        self.call_slow_copy(dtype, shape, true, toward, (ptr, &sizes, &strides, &offs), smem)
    }

    /// `operands`: `(t, o0, …)` (`lir::OpKind::TmaStore`).
    pub(crate) fn tma_store(&mut self, operands: &[Value], offset: u32, shape: &[i64], map: u32, reduce: Option<AtomicOp>) -> Res<()> {
        let (&t, offs) = operands.split_first().ok_or("tma_store takes (t, offsets…)")?;
        self.copy_engine_or_fallback(
            "tma_store",
            |g| g.slow_window_copy(t, offs, shape, Toward::Global(reduce), g.i32c(offset as i64)),
            |g| Ok((g.icmp(Cmp::Eq, g.tid, g.i32c(0))?, ())),
            |g, ()| {
                // An earlier bulk store (a previous iteration's) has written global memory, so
                // that stores to overlapping windows land in program order; reductions commute.
                if reduce.is_none() {
                    g.inline_asm("cp.async.bulk.wait_group 0;", "~{memory}", &[], false)?;
                }
                g.tma_boxes(t, offs, g.i32c(offset as i64), shape, map, Bulk::Store(reduce))?;
                // The lowering's `bulk_wait_read` waits for the copy engine's reads.
                g.inline_asm("cp.async.bulk.commit_group;", "~{memory}", &[], false)?;
                Ok(())
            },
        )
    }

    /// The bulk tensor copies of one window of tensor `t` at `offs` (one box, or one per
    /// 128-byte column block of a blocked tile) and the tile at shared byte `at`: into shared
    /// memory on an mbarrier, or out of shared memory (stored or reduced into the window).
    fn tma_boxes(&mut self, t: Value, offs: &[Value], at: V, shape: &[i64], map: u32, bulk: Bulk) -> Res<()> {
        let bar = match bulk {
            Bulk::Load(bar) => Some(bar),
            Bulk::Store(_) => None,
        };
        let tm = self.k.tensor_maps.get(map as usize).ok_or("a tensor map out of range")?.clone();
        let param = *self.tensor_map_params.get(map as usize).ok_or("a tensor map without its parameter")?;
        let addr = self.b.param_address(param);
        let (param, fixed) = self.roots.get(&t).cloned().ok_or("a bulk tensor copy of a tensor that is not a parameter's view")?;
        if param != tm.param {
            return Err("a bulk tensor copy through the map of another tensor".into());
        }
        let offs: Vec<V> = offs.iter().map(|&o| self.regs(o).map(|r| r[0])).collect::<Res<_>>()?;
        let (rank, folded) = (tm.map_rank(), tm.folded());
        if fixed.len() + offs.len() != tm.boxes.len() || offs.len() != shape.len() || shape.is_empty() || fixed.len() < folded {
            return Err("a bulk tensor copy whose window does not match its tensor map".into());
        }
        let boxes: Vec<i64> = tm.boxes[fixed.len()..].iter().map(|&b| b as i64).collect();
        let last = shape.len() - 1;
        let es = self.k.body.ty(t).dtype().size() as i64;
        let tile = SmemTile::new(shape[..last].iter().product(), shape[last], es, true);
        let blocks = if boxes == shape {
            1
        } else if boxes[..last] == shape[..last] && tile.blocked() && boxes[last] * es == 128 {
            shape[last] / boxes[last]
        } else {
            return Err("a bulk tensor copy of a window that is not its tensor map's box".into());
        };
        let outer = self.fold_coordinates(param, &fixed, folded)?;
        // Operands: the shared address, the map, then the coordinates (and the mbarrier).
        let list: Vec<String> = (0..rank).map(|i| format!("${}", i + 2)).collect();
        let text = match bar {
            Some(_) => format!(
                "cp.async.bulk.tensor.{rank}d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [$0], [$1, {{{}}}], [${}];",
                list.join(", "),
                rank + 2
            ),
            None => {
                let op = match bulk {
                    Bulk::Store(Some(a)) => format!("reduce.async.bulk.tensor.{rank}d.global.shared::cta.{}", a.name()),
                    _ => format!("async.bulk.tensor.{rank}d.global.shared::cta"),
                };
                format!("cp.{op}.tile.bulk_group [$1, {{{}}}], [$0];", list.join(", "))
            }
        };
        let mut cons = vec!["r", "l"];
        cons.extend(std::iter::repeat_n("r", rank + usize::from(bar.is_some())));
        cons.push("~{memory}");
        for b in 0..blocks {
            // Innermost first, then the indices the views fixed.
            let mut c: Vec<V> = offs.iter().rev().copied().collect();
            c[0] = self.addc(c[0], b * boxes[last])?;
            c.extend(outer.iter().rev());
            let smem = self.smem_addr32(self.addc(at, b * tile.block_bytes())?)?;
            let mut args = vec![smem, addr];
            args.extend(c);
            args.extend(bar);
            self.inline_asm(&text, &cons.join(","), &args, false)?;
        }
        Ok(())
    }
}

impl Gen<'_> {
    /// The indices a tensor's views fixed, outermost first, with the first `folded` of them
    /// replaced by their row-major linear index (`abi::TensorMap::folded`): past the last valid
    /// one when any is out of range, so that the copy engine reads zeros there as it would on
    /// unfolded axes.
    fn fold_coordinates(&mut self, param: usize, fixed: &[V], folded: usize) -> Res<Vec<V>> {
        if folded == 0 {
            return Ok(fixed.to_vec());
        }
        let root = self.k.body.block(self.k.body.entry).args[param];
        let Some(super::Cv::Tensor { sizes, .. }) = self.vals.get(&root).cloned() else {
            return Err("a folded tensor map over a parameter that is not a tensor".into());
        };
        let (mut lin, mut total, mut valid) = (self.i32c(0), self.i32c(1), V::int(crate::mir::Ty::Pred, 1));
        for (&i, &n) in fixed[..folded].iter().zip(&sizes) {
            // Wrapping is harmless: the runtime encodes no map whose folded axis passes i32.
            lin = self.add(self.mul(lin, n)?, i)?;
            total = self.mul(total, n)?;
            valid = self.and(valid, self.icmp(Cmp::Ult, i, n)?)?;
        }
        let mut out = vec![self.select(valid, lin, total)?];
        out.extend_from_slice(&fixed[folded..]);
        Ok(out)
    }
}

/// What `tma_boxes` copies: into shared memory, completing on the mbarrier at this shared
/// address, or out of it into global memory (stored, or combined with the op: the copy engine's
/// bulk reduction, each element's update atomic).
#[derive(Clone, Copy, Debug)]
enum Bulk {
    Load(V),
    Store(Option<AtomicOp>),
}
