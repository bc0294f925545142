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

    /// The producer warpgroup's first thread (in a warp-specialised kernel's producer region).
    fn producer_leader(&self) -> Res<V> {
        let ptid = self.producer.ok_or("a producer op outside the producer region")?;
        self.icmp(Cmp::Eq, ptid, self.i32c(0))
    }

    /// `operands`: `(stage, valid)`.
    pub(crate) fn tma_arrive(&mut self, operands: &[Value], mbar: u32, bytes: u32, producer: bool) -> Res<()> {
        let [stage, valid] = operands[..] else { return Err("tma_arrive takes (stage, valid)".into()) };
        if producer {
            // Without maps the warpgroup copied the stage itself: once all of it is done, a
            // plain arrival completes the phase (no bytes to expect).
            let go = self.and(self.producer_leader()?, self.regs(valid)?[0])?;
            let at = self.mbar_addr(mbar, stage)?;
            let ready = self.ready()?;
            let yes = self.block("ws_arrive_tx");
            let no = self.block("ws_arrive_fallback");
            let done = self.block("ws_arrive_done");
            self.b.cond_br(ready, yes, no);
            self.b.position(no);
            self.inline_asm(&format!("bar.sync {}, {};", super::PRODUCER_BARRIER, crate::lir::PRODUCER_THREADS), "~{memory}", &[], false)?;
            self.when(go, "ws_arrive", |g| g.arrive(at))?;
            self.b.br(done);
            self.b.position(yes);
            self.when(go, "ws_expect", |g| {
                let text = format!("mbarrier.arrive.expect_tx.shared::cta.b64 _, [$0], {bytes};");
                g.inline_asm(&text, "r,~{memory}", &[at], false)?;
                Ok(())
            })?;
            self.b.br(done);
            self.b.position(done);
            return Ok(());
        }
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
        self.when(ready, "tma_wait", |g| g.try_wait(at, parity))
    }

    /// Spins until the phase with `parity` of the mbarrier at shared address `at` completes.
    fn try_wait(&self, at: V, parity: V) -> Res<()> {
        // The loop's label is local to its braces: the statement may appear many times.
        let text = "{\n.reg .pred P1;\nTESSERA_WAIT:\nmbarrier.try_wait.parity.shared::cta.b64 P1, [$0], $1;\n@!P1 bra TESSERA_WAIT;\n}";
        self.inline_asm(text, "r,r,~{memory}", &[at, parity], false)?;
        Ok(())
    }

    /// `operands`: `(base, t, o0, …, stage, valid)` (`lir::OpKind::TmaCopy`).
    pub(crate) fn tma_copy(&mut self, operands: &[Value], offset: u32, shape: &[i64], map: u32, mbar: u32, producer: bool) -> Res<()> {
        let n = operands.len();
        if n < 4 + shape.len() {
            return Err("tma_copy takes (base, t, offsets…, stage, valid)".into());
        }
        let (window, stage, valid) = (&operands[..n - 2], operands[n - 2], operands[n - 1]);
        self.copy_engine_or_fallback(
            "tma",
            |g| {
                g.fallback_copy(window, offset, shape)?;
                // The consumers read it with `wgmma` (the async proxy) after the mbarrier.
                if producer {
                    g.proxy_fence()?;
                }
                Ok(())
            },
            |g| {
                let lead = if producer { g.producer_leader()? } else { g.leader()? };
                Ok((g.and(lead, g.regs(valid)?[0])?, g.mbar_addr(mbar, stage)?))
            },
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

/// A warp-specialised kernel (`lower::warp_specialize`): its mbarriers, the split into producer
/// and consumers, and the consumers' waits and releases.
impl Gen<'_> {
    pub(crate) fn ws_init(&mut self, full: u32, empty: u32, stages: u32, consumers: u32) -> Res<()> {
        let first = self.icmp(Cmp::Eq, self.tid, self.i32c(0))?;
        self.when(first, "ws_init", |g| {
            for s in 0..stages {
                for (base, count) in [(full, 1), (empty, consumers)] {
                    let at = g.smem_addr32(g.i32c(base as i64 + 8 * s as i64))?;
                    g.inline_asm(&format!("mbarrier.init.shared::cta.b64 [$0], {count};"), "r,~{memory}", &[at], false)?;
                }
            }
            g.inline_asm("fence.mbarrier_init.release.cluster;", "~{memory}", &[], false)?;
            Ok(())
        })?;
        self.barrier();
        Ok(())
    }

    /// The threads from `Kernel::threads` on run the region (the producer) and leave the
    /// kernel; the others go on as consumers, whose barriers are named from here on.
    pub(crate) fn ws_split(&mut self, op: crate::ir::Op) -> Res<()> {
        let ws = self.k.ws.ok_or("ws_split in a kernel that is not warp-specialised")?;
        let region = *self.k.body.op(op).regions.first().ok_or("ws_split without its region")?;
        let c = self.k.threads;
        // The thread index read afresh: `self.tid`'s facts bound it by the consumers' count.
        let raw = self.inline_asm("mov.u32 $0, %tid.x;", "=r", &[], false)?[0];
        let is_producer = self.icmp(Cmp::Uge, raw, self.i32c(c as i64))?;
        let producer = self.block("ws_producer");
        let consumer = self.block("ws_consumer");
        self.b.cond_br(is_producer, producer, consumer);
        self.b.position(producer);
        if let Some(r) = ws.producer_regs {
            self.inline_asm(&format!("setmaxnreg.dec.sync.aligned.u32 {r};"), "~{memory}", &[], false)?;
        }
        // Values built in the producer's blocks must not be reused by the consumers' code.
        let saved = (self.cse.take(), self.plus_const.take(), self.sums.take(), self.cmps.take(), self.sexts.take());
        let ptid = self.b.int_bin(crate::mir::IntOp::Sub, raw, self.i32c(c as i64));
        self.note(ptid, Some(super::fold::Facts { lo: 0, hi: crate::lir::PRODUCER_THREADS as i64 - 1, align: 1 }));
        // With tensor maps one thread issues everything: the warpgroup's other warps leave (the
        // whole warpgroup copies only without maps).
        let idle = self.and(self.ready()?, self.icmp(Cmp::Uge, ptid, self.i32c(32))?)?;
        let leave = self.block("ws_idle");
        let work = self.block("ws_produce");
        self.b.cond_br(idle, leave, work);
        self.b.position(leave);
        self.b.ret();
        self.b.position(work);
        self.producer = Some(ptid);
        let built = self.region(region);
        self.producer = None;
        self.cse.replace(saved.0);
        self.plus_const.replace(saved.1);
        self.sums.replace(saved.2);
        self.cmps.replace(saved.3);
        self.sexts.replace(saved.4);
        built?;
        self.b.ret();
        self.b.position(consumer);
        if let Some(r) = ws.consumer_regs {
            self.inline_asm(&format!("setmaxnreg.inc.sync.aligned.u32 {r};"), "~{memory}", &[], false)?;
        }
        self.consumers = Some(c);
        Ok(())
    }

    /// `operands`: `(stage, parity, pred)`.
    pub(crate) fn mbar_wait(&mut self, operands: &[Value], mbar: u32) -> Res<()> {
        let [stage, parity, pred] = operands[..] else { return Err("mbar_wait takes (stage, parity, pred)".into()) };
        let at = self.mbar_addr(mbar, stage)?;
        let parity = self.regs(parity)?[0];
        let pred = self.regs(pred)?[0];
        self.when(pred, "mbar_wait", |g| g.try_wait(at, parity))
    }

    /// A step of the two consumer warpgroups' turns (`lir::TurnStep`): warpgroup `g` waits on
    /// named barrier `TURN_BARRIER + g` and arrives on the other's, each met by both (256 threads).
    pub(crate) fn turn(&mut self, step: crate::lir::TurnStep) -> Res<()> {
        use crate::lir::TurnStep;
        let c = self.consumers.ok_or("a turn outside a warp-specialised kernel's consumers")?;
        let base = super::TURN_BARRIER as i64;
        let wg = self.b.int_bin(crate::mir::IntOp::LShr, self.tid, self.i32c(7));
        match step {
            TurnStep::Start => {
                let second = self.icmp(Cmp::Ne, wg, self.i32c(0))?;
                self.when(second, "turn_start", |g| {
                    g.inline_asm(&format!("bar.arrive {base}, {c};"), "~{memory}", &[], false)?;
                    Ok(())
                })
            }
            TurnStep::Wait => {
                let mine = self.add(wg, self.i32c(base))?;
                self.inline_asm(&format!("bar.sync $0, {c};"), "r,~{memory}", &[mine], false)?;
                Ok(())
            }
            TurnStep::Pass => {
                let other = self.b.int_bin(crate::mir::IntOp::Sub, self.i32c(base + 1), wg);
                self.inline_asm(&format!("bar.arrive $0, {c};"), "r,~{memory}", &[other], false)?;
                Ok(())
            }
            TurnStep::End => {
                let first = self.icmp(Cmp::Eq, wg, self.i32c(0))?;
                self.when(first, "turn_end", |g| {
                    g.inline_asm(&format!("bar.sync {base}, {c};"), "~{memory}", &[], false)?;
                    Ok(())
                })
            }
        }
    }

    /// `operands`: `(stage, pred)`.
    pub(crate) fn mbar_arrive(&mut self, operands: &[Value], mbar: u32) -> Res<()> {
        let [stage, pred] = operands[..] else { return Err("mbar_arrive takes (stage, pred)".into()) };
        let at = self.mbar_addr(mbar, stage)?;
        let pred = self.regs(pred)?[0];
        self.when(pred, "mbar_arrive", |g| g.arrive(at))
    }

    /// This thread's plain arrival on the mbarrier at shared address `at`.
    fn arrive(&self, at: V) -> Res<()> {
        self.inline_asm("mbarrier.arrive.shared::cta.b64 _, [$0];", "r,~{memory}", &[at], false)?;
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
