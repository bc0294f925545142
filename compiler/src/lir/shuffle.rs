//! Layout conversions by warp shuffles: where each destination register of a `shuffle_convert`
//! comes from (a register of the same thread, one register of another lane of the same warp read
//! with `shfl.sync.idx`, or a gather of a few such shuffles when a lane must send different
//! registers to different readers), and whether that is cheaper than the round trip through
//! shared memory (`local_store`, barrier, `local_load`, barrier) that converts any layout.
//!
//! The plan is found by enumeration over the block's threads, then checked to have the closed
//! form the code generator can build: for destination register `r`, the lane read is `xor ⊕ (⊕
//! over the set bits i of tid: bits[i])` (an affine map over GF(2) of the thread index; the
//! blocked and MMA layouts of power-of-two tiles all give one), and so is the index of the
//! register a gather keeps. The lowering computes the plan (to choose) and the `shuffle_convert`
//! op carries it to codegen; the thread-IR verifier checks that it is the plan of the op's types.

use super::index::{Exact, MmaThread, exact, mma_col0, mma_row0};
use super::{Layout, Type};
use crate::tir::row_major;

/// The row-major linear index of register `r` of thread `t` in a tile of `shape` held in
/// `layout` by `threads` threads (the layouts' definitions in [`Layout`]).
pub fn element_of(layout: Layout, shape: &[i64], threads: u32, t: u32, r: usize) -> i64 {
    let numel: i64 = shape.iter().product();
    match layout {
        Layout::Blocked { .. } => {
            if numel < threads as i64 {
                return t as i64 % numel.max(1);
            }
            let (base, mul) = layout.linear(numel, threads, r);
            base + t as i64 * mul
        }
        Layout::Mma { .. } | Layout::MmaRows { .. } | Layout::MmaCols { .. } => {
            let (warps_m, warps_n) = match layout {
                Layout::Mma { warps_m, warps_n } | Layout::MmaCols { warps_m, warps_n } => (warps_m, warps_n),
                Layout::MmaRows { warps_m } => (warps_m, 1),
                _ => (1, 1),
            };
            let n = shape.last().copied().unwrap_or(1);
            let (dr, dc) = layout.mma_reg_offset(shape, r).unwrap_or_default();
            let th = MmaThread::of(t, warps_m);
            let row = exact(mma_row0(&Exact, th.wm, th.g)) + dr;
            let col = exact(mma_col0(&Exact, th.wn, th.t, n / warps_n.max(1) as i64)) + dc;
            match layout {
                Layout::MmaRows { .. } => row,
                Layout::MmaCols { .. } => col,
                _ => row * n + col,
            }
        }
    }
}

/// A lane index as an affine function of the thread index over GF(2): `xor` XOR the `mask` of
/// each `(bit, mask)` whose `bit` is set in `tid`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LaneMap {
    pub xor: u32,
    pub bits: Vec<(u32, u32)>,
}

/// Where one destination register comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Register `reg` of the same thread.
    Own(usize),
    /// Register `reg` of lane `lane(tid)` of the same warp.
    Shuffle { reg: usize, lane: LaneMap },
    /// One shuffle per register of `regs` (every lane sending its own `regs[j]`) from lane
    /// `lane(tid)`, of which the thread keeps number `pick(tid)`: for conversions where a lane
    /// must send different registers to different readers.
    Gather { regs: Vec<usize>, lane: LaneMap, pick: LaneMap },
}

/// The sources of every destination register, in register order.
#[derive(Clone, Debug, PartialEq)]
pub struct ShufflePlan {
    pub sources: Vec<Source>,
}

impl ShufflePlan {
    /// The shuffles the conversion issues (equal sources are read once).
    pub fn shuffles(&self) -> usize {
        let distinct: std::collections::HashSet<&Source> = self.sources.iter().collect();
        distinct
            .iter()
            .map(|s| match s {
                Source::Own(_) => 0,
                Source::Shuffle { .. } => 1,
                Source::Gather { regs, .. } => regs.len(),
            })
            .sum()
    }

    /// The selects that choose among a gather's shuffles.
    pub fn selects(&self) -> usize {
        let distinct: std::collections::HashSet<&Source> = self.sources.iter().collect();
        distinct.iter().map(|s| if let Source::Gather { regs, .. } = s { regs.len() - 1 } else { 0 }).sum()
    }
}

/// Enumeration bound (threads × registers): bigger conversions go through shared memory.
const MAX_ELEMENTS: usize = 1 << 16;

/// At most this many shuffles for one destination register (a gather).
const MAX_ROUNDS: usize = 4;

/// How a destination thread picks among the holders of an element in its warp.
#[derive(Clone, Copy)]
enum Policy {
    /// Its own register when it holds the element (no shuffle at all), else the lowest lane.
    OwnFirst,
    /// The lowest lane (one lane serves all, e.g. a value replicated across a quad).
    LowestLane,
    /// The holder whose lane differs from the reader's in the fewest low bits (replicas read
    /// "straight across").
    Nearest,
}

/// The plan that gives each thread, for each register of `dst`, the element of `src` at linear
/// index `Σ c_i · strides_i` where `c` is the destination element's coordinate (row-major
/// `strides` of `src` for a plain conversion, zeros for broadcast axes, permuted for a
/// permutation). `None` when some element is only in another warp, a register would need more
/// than `MAX_ROUNDS` shuffles, or the lanes or registers read have no affine form.
pub fn plan(src: &Type, dst: &Type, strides: &[i64], threads: u32) -> Option<ShufflePlan> {
    let (Some(sl), Some(dl)) = (src.layout(), dst.layout()) else { return None };
    let (ss, ds) = (src.shape(), dst.shape());
    if strides.len() != ds.len() || src.dtype() != dst.dtype() || threads == 0 || !threads.is_multiple_of(32) {
        return None;
    }
    let (s_regs, d_regs) = (sl.regs(ss, threads), dl.regs(ds, threads));
    let s_numel: i64 = ss.iter().product();
    if threads as usize * s_regs.max(d_regs) > MAX_ELEMENTS || s_numel <= 0 {
        return None;
    }
    // Who holds each source element: (thread, register), in thread order, element by element
    // in one flat array (a counting sort).
    let mut elems = Vec::with_capacity(threads as usize * s_regs);
    let mut start = vec![0usize; s_numel as usize + 1];
    for t in 0..threads {
        for r in 0..s_regs {
            let e = usize::try_from(element_of(sl, ss, threads, t, r)).ok().filter(|&e| e < s_numel as usize)?;
            start[e + 1] += 1;
            elems.push((e, t, r));
        }
    }
    for e in 0..s_numel as usize {
        start[e + 1] += start[e];
    }
    let mut flat = vec![(0u32, 0usize); elems.len()];
    let mut next = start.clone();
    for &(e, t, r) in &elems {
        flat[next[e]] = (t, r);
        next[e] += 1;
    }
    let holders = Holders { start, flat };
    let rm = row_major(ds);
    let mut sources = Vec::with_capacity(d_regs);
    for r in 0..d_regs {
        // The source element each thread needs for this register.
        let mut wanted = Vec::with_capacity(threads as usize);
        for t in 0..threads {
            let l = element_of(dl, ds, threads, t, r);
            let e: i64 = ds.iter().zip(&rm).zip(strides).map(|((&d, &m), &s)| (l / m) % d * s).sum();
            wanted.push(usize::try_from(e).ok().filter(|&e| e < s_numel as usize)?);
        }
        let source =
            [Policy::OwnFirst, Policy::LowestLane, Policy::Nearest].into_iter().find_map(|p| source_for(&holders, &wanted, threads, p))?;
        sources.push(source);
    }
    Some(ShufflePlan { sources })
}

/// The holders of each source element, `flat[start[e]..start[e + 1]]`.
struct Holders {
    start: Vec<usize>,
    flat: Vec<(u32, usize)>,
}

impl Holders {
    fn of(&self, e: usize) -> &[(u32, usize)] {
        &self.flat[self.start[e]..self.start[e + 1]]
    }
}

fn source_for(holders: &Holders, wanted: &[usize], threads: u32, policy: Policy) -> Option<Source> {
    let mut picks = Vec::with_capacity(wanted.len());
    for (t, &e) in wanted.iter().enumerate() {
        let t = t as u32;
        let same_warp = holders.of(e).iter().filter(|(h, _)| h / 32 == t / 32);
        let pick = match policy {
            Policy::OwnFirst => holders.of(e).iter().find(|(h, _)| *h == t).or_else(|| same_warp.clone().next()),
            Policy::LowestLane => same_warp.clone().next(),
            Policy::Nearest => same_warp.clone().min_by_key(|(h, _)| ((h ^ t) & 31, *h)),
        };
        picks.push(*pick?);
    }
    let reg = picks[0].1;
    let uniform = picks.iter().all(|&(_, r)| r == reg);
    if uniform && picks.iter().enumerate().all(|(t, &(h, _))| h == t as u32) {
        return Some(Source::Own(reg));
    }
    let lane = fit(picks.len(), threads, |t| picks[t].0 % 32)?;
    if uniform {
        return Some(Source::Shuffle { reg, lane });
    }
    // Different readers want different registers of their lanes: one shuffle per register.
    let mut regs: Vec<usize> = picks.iter().map(|&(_, r)| r).collect();
    regs.sort_unstable();
    regs.dedup();
    if regs.len() > MAX_ROUNDS {
        return None;
    }
    let pick = fit(picks.len(), threads, |t| regs.iter().position(|&r| r == picks[t].1).unwrap_or(0) as u32)?;
    Some(Source::Gather { regs, lane, pick })
}

/// The affine GF(2) map of the thread index `f(t) = f(0) ⊕ (⊕ over the set bits i of t:
/// f(2^i) ⊕ f(0))`, if it gives `f` for all `n` threads.
fn fit(n: usize, threads: u32, f: impl Fn(usize) -> u32) -> Option<LaneMap> {
    let xor = f(0);
    let mut bits = vec![];
    let mut bit = 0;
    while (1usize << bit) < (threads as usize).min(n) {
        let m = f(1 << bit) ^ xor;
        if m != 0 {
            bits.push((bit, m));
        }
        bit += 1;
    }
    let map = LaneMap { xor, bits };
    (0..n).all(|t| map.eval(t as u32) == f(t)).then_some(map)
}

impl LaneMap {
    /// The lane this map gives thread `tid`.
    pub fn eval(&self, tid: u32) -> u32 {
        self.bits.iter().filter(|(b, _)| tid >> b & 1 == 1).fold(self.xor, |acc, (_, m)| acc ^ m)
    }
}

/// A block-wide barrier costs about as much as this many independent instructions (it waits for
/// the slowest warp, and the store-then-load through shared memory adds its latency).
const BARRIER_COST: usize = 16;

/// Whether the shuffles of `plan` cost less than converting through shared memory: the shared
/// path is one store per source register, one load per destination register and two barriers;
/// a shuffle issues like two ordinary instructions (a 64-bit element needs two), a gather's
/// choice a compare and a select per extra shuffle, register copies are free.
pub fn shuffle_is_cheaper(plan: &ShufflePlan, src: &Type, dst: &Type, threads: u32) -> bool {
    let regs = |t: &Type| t.layout().map_or(0, |l| l.regs(t.shape(), threads));
    let smem = regs(src) + regs(dst) + 2 * BARRIER_COST;
    let per = if src.dtype().size() == 8 { 2 } else { 1 };
    2 * per * plan.shuffles() + 2 * plan.selects() <= smem
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn tile(shape: &[i64], layout: Layout) -> Type {
        Type::Tile { dtype: DType::F32, shape: shape.to_vec(), layout }
    }

    /// Simulates the plan: every destination register must receive exactly the element the
    /// index map asks for.
    fn check(src: &Type, dst: &Type, strides: &[i64], threads: u32) -> ShufflePlan {
        let p = plan(src, dst, strides, threads).expect("a shuffle plan");
        let (sl, dl) = (src.layout().unwrap(), dst.layout().unwrap());
        let rm = row_major(dst.shape());
        for t in 0..threads {
            for (r, s) in p.sources.iter().enumerate() {
                let l = element_of(dl, dst.shape(), threads, t, r);
                let want: i64 = dst.shape().iter().zip(&rm).zip(strides).map(|((&d, &m), &s)| (l / m) % d * s).sum();
                let got = match s {
                    Source::Own(reg) => element_of(sl, src.shape(), threads, t, *reg),
                    Source::Shuffle { reg, lane } => {
                        let from = t / 32 * 32 + lane.eval(t);
                        element_of(sl, src.shape(), threads, from, *reg)
                    }
                    Source::Gather { regs, lane, pick } => {
                        let from = t / 32 * 32 + lane.eval(t);
                        element_of(sl, src.shape(), threads, from, regs[pick.eval(t) as usize])
                    }
                };
                assert_eq!(got, want, "thread {t} register {r}");
            }
        }
        p
    }

    #[test]
    fn row_broadcast_of_a_reduction_is_shuffles() {
        // softmax: f32[4] replicated on 128 threads, broadcast to [4, 1024] #blocked<4>.
        let (src, dst) = (tile(&[4, 1], Layout::Blocked { vec: 1 }), tile(&[4, 1024], Layout::Blocked { vec: 4 }));
        let p = check(&src, &dst, &[1, 0], 128);
        assert_eq!(p.shuffles(), 4);
        assert!(shuffle_is_cheaper(&p, &src, &dst, 128));
    }

    #[test]
    fn mma_accumulator_to_its_rows_and_back() {
        let acc = tile(&[64, 64], Layout::Mma { warps_m: 4, warps_n: 1 });
        let rows = tile(&[64, 1], Layout::MmaRows { warps_m: 4 });
        // An accumulator column (a slice) read as rows: within the quad.
        let p = check(&acc, &rows, &[64, 0], 128);
        assert!(p.shuffles() > 0);
        // Rows broadcast back along the columns: registers of the same thread.
        let p = check(&rows, &acc, &[1, 0], 128);
        assert_eq!(p.shuffles(), 0);
        // Columns broadcast down the rows (a bias), on a 2×2 warp grid: registers too.
        let cols = tile(&[1, 64], Layout::MmaCols { warps_m: 2, warps_n: 2 });
        let acc22 = tile(&[64, 64], Layout::Mma { warps_m: 2, warps_n: 2 });
        let p = check(&cols, &acc22, &[0, 1], 128);
        assert_eq!(p.shuffles(), 0);
    }

    #[test]
    fn broadcast_of_a_row_vector_stays_in_registers() {
        // layernorm: a [1, 1024] row broadcast to [4, 1024] (#blocked<4>, 128 threads): each
        // thread already holds the columns it needs.
        let (src, dst) = (tile(&[1, 1024], Layout::Blocked { vec: 4 }), tile(&[4, 1024], Layout::Blocked { vec: 4 }));
        let p = check(&src, &dst, &[0, 1], 128);
        assert_eq!(p.shuffles(), 0);
    }

    #[test]
    fn senders_asked_for_two_registers_at_once_gather() {
        // blocked<4> → m16n8 on one warp: a lane must send two different registers to two
        // readers, so each destination register takes two shuffles and a select.
        let (src, dst) = (tile(&[16, 8], Layout::Blocked { vec: 4 }), tile(&[16, 8], Layout::Mma { warps_m: 1, warps_n: 1 }));
        let p = check(&src, &dst, &[8, 1], 32);
        assert!(p.sources.iter().all(|s| matches!(s, Source::Gather { regs, .. } if regs.len() == 2)), "{p:?}");
        assert_eq!((p.shuffles(), p.selects()), (8, 4));
        assert!(shuffle_is_cheaper(&p, &src, &dst, 32));
        // And back.
        check(&dst, &src, &[8, 1], 32);
    }

    #[test]
    fn elements_in_other_warps_go_through_shared_memory() {
        // A transpose of a blocked [64, 64] on 128 threads needs other warps' elements.
        let (src, dst) = (tile(&[64, 64], Layout::Blocked { vec: 4 }), tile(&[64, 64], Layout::Blocked { vec: 4 }));
        assert!(plan(&src, &dst, &[1, 64], 128).is_none());
        // Mma over 4 warps → blocked: the rows of a warp are held by several warps.
        let acc = tile(&[64, 64], Layout::Mma { warps_m: 4, warps_n: 1 });
        assert!(plan(&acc, &src, &[64, 1], 128).is_none());
    }

    #[test]
    fn identity_is_own_registers() {
        let t = tile(&[32, 32], Layout::Blocked { vec: 4 });
        let p = check(&t, &t, &[32, 1], 64);
        assert!(p.sources.iter().all(|s| matches!(s, Source::Own(_))));
    }
}
