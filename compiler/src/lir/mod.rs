//! Level 2, the thread IR: the tile IR after layout assignment. Every tile type carries a layout
//! that says which thread holds which element; data that moves between threads goes either
//! through explicit shared-memory stores and loads separated by explicit barriers, or through
//! warp shuffles (`row_reduce`, `shuffle_reduce`, `shuffle_convert`).
//!
//! Blocked layouts: `Blocked { vec }` spreads the tile's elements, in row-major order, over the
//! block's `T` threads in chunks of `vec` contiguous elements: element `L` is held by thread
//! `(L / vec) % T`. A tile with fewer elements than threads is replicated: thread `t` holds
//! element `t % N`. Since the layout depends only on the flattened index, `reshape` never moves
//! data. The MMA layouts are described on [`Layout`].

pub mod index;
mod print;
pub mod shuffle;

use crate::dtype::DType;
use crate::ir::Body;
use crate::tir;
use std::fmt;

pub use print::print_kernel;

/// How a tile's elements are spread over the threads of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Row-major elements in chunks of `vec` over the threads (see the module comment).
    Blocked { vec: u32 },
    /// The accumulator of `mma.sync.m16n8k*`: the 2-D tile (or an N-D one whose leading
    /// dimensions, flattened, are the rows: a reshaped accumulator) is split into a `warps_m × warps_n`
    /// grid (warp `w` is at `(w % warps_m, w / warps_m)`: each warp column is consecutive warps, so
    /// with `warps_m` a multiple of 4 every warpgroup holds 64-row strips of its own columns, one
    /// `wgmma` tile) covered by 16×8 instruction tiles.
    /// Warp row `wm` holds the 16-row strips `wm, wm + warps_m, wm + 2·warps_m, …` (interleaved,
    /// so that each 64-row strip of 4 consecutive warps is one warpgroup's `wgmma` tile), warp
    /// column `wn` the `bn = n / warps_n` columns from `wn·bn`. In each instruction tile, lane `l`
    /// holds rows `l/4` and `l/4 + 8`, columns `2·(l%4)` and `2·(l%4) + 1`. Register `r` is
    /// element `r % 4` of the warp's instruction tile `(r / 4 / nt, r / 4 % nt)` (strip, column)
    /// where `nt = bn / 8`.
    Mma { warps_m: u32, warps_n: u32 },
    /// The rows of an `Mma { warps_m, warps_n: 1 }` tile, as left by a reduction along its
    /// columns: an `[m]` (or `[m, 1]`) tile where each lane holds, for each 16-row instruction
    /// tile `mi` of its warp, rows `l/4` and `l/4 + 8` (register `2·mi + h`), replicated over the
    /// 4 lanes of its quad. Broadcasting it back along the columns moves no data.
    MmaRows { warps_m: u32 },
    /// The columns of an `Mma { warps_m, warps_n }` tile, to be broadcast down its rows (a bias
    /// in a GEMM epilogue): an `[n]` (or `[1, n]`) tile where each lane holds, for each 8-column
    /// instruction tile `ni` of its warp column `wn`, columns `wn·bn + 8·ni + 2·(l%4) + c`
    /// (register `2·ni + c`), replicated over the lanes' rows and the warp rows. Broadcasting it
    /// down the rows moves no data.
    MmaCols { warps_m: u32, warps_n: u32 },
}

impl Layout {
    /// The blocked layout the lowering gives every tile of `numel` elements on `threads` threads.
    pub fn blocked_for(numel: i64, threads: u32) -> Layout {
        let per = (numel / threads as i64).max(1);
        Layout::Blocked { vec: per.min(4) as u32 }
    }

    /// Elements each thread holds.
    pub fn regs(self, shape: &[i64], threads: u32) -> usize {
        let numel: i64 = shape.iter().product();
        match self {
            Layout::Blocked { .. } => (numel / threads as i64).max(1) as usize,
            Layout::Mma { warps_m, warps_n } => (numel / (32 * warps_m as i64 * warps_n as i64)).max(1) as usize,
            Layout::MmaRows { warps_m } => (shape.first().copied().unwrap_or(1) / warps_m as i64 / 8).max(1) as usize,
            Layout::MmaCols { warps_n, .. } => (shape.last().copied().unwrap_or(1) / warps_n as i64 / 4).max(1) as usize,
        }
    }

    /// For a blocked layout, the row-major linear index of register `r` of thread `t` is
    /// `base(r) + t * tid_mul` (before the replication wrap when `numel < threads`).
    pub fn linear(self, numel: i64, threads: u32, r: usize) -> (i64, i64) {
        let vec = match self {
            Layout::Blocked { vec } => vec as i64,
            Layout::Mma { .. } | Layout::MmaRows { .. } | Layout::MmaCols { .. } => 1,
        };
        if numel < threads as i64 {
            return (0, 1);
        }
        let r = r as i64;
        ((r / vec) * threads as i64 * vec + r % vec, vec)
    }

    /// Whether an MMA accumulator layout with this warp grid covers a `[m, n]` tile exactly.
    pub fn mma_fits(shape: &[i64], warps_m: u32, warps_n: u32) -> bool {
        shape.len() == 2 && shape[0] % (16 * warps_m as i64) == 0 && shape[1] % (8 * warps_n as i64) == 0
    }

    /// Whether this layout can hold a tile of `shape` on `threads` threads.
    pub fn valid_for(self, shape: &[i64], threads: u32) -> bool {
        let numel: i64 = shape.iter().product();
        match self {
            Layout::Blocked { .. } => self == Layout::blocked_for(numel, threads),
            Layout::Mma { warps_m, warps_n } => {
                let rows: i64 = shape[..shape.len().saturating_sub(1)].iter().product();
                let last = shape.last().copied().unwrap_or(0);
                32 * warps_m * warps_n == threads && shape.len() >= 2 && Layout::mma_fits(&[rows, last], warps_m, warps_n)
            }
            Layout::MmaRows { warps_m } => {
                32 * warps_m == threads
                    && (shape.len() == 1 || (shape.len() == 2 && shape[1] == 1))
                    && shape[0] % (16 * warps_m as i64) == 0
            }
            Layout::MmaCols { warps_m, warps_n } => {
                32 * warps_m * warps_n == threads
                    && (shape.len() == 1 || (shape.len() == 2 && shape[0] == 1))
                    && shape.last().is_some_and(|n| n % (8 * warps_n as i64) == 0)
            }
        }
    }
}

impl Layout {
    /// Whether a `reshape` from `from` to `to` leaves every element in its register in this
    /// layout (moves no data): both shapes fit it and, for `Mma`, keep the columns (the last
    /// dimension; the leading ones flatten to the rows either way).
    pub fn reshape_is_free(self, from: &[i64], to: &[i64], threads: u32) -> bool {
        self.valid_for(from, threads) && self.valid_for(to, threads) && (!matches!(self, Layout::Mma { .. }) || from.last() == to.last())
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layout::Blocked { vec } => write!(f, "#blocked<{vec}>"),
            Layout::Mma { warps_m, warps_n } => write!(f, "#mma<{warps_m}x{warps_n}>"),
            Layout::MmaRows { warps_m } => write!(f, "#mma_rows<{warps_m}>"),
            Layout::MmaCols { warps_m, warps_n } => write!(f, "#mma_cols<{warps_m}x{warps_n}>"),
        }
    }
}

/// The type of a thread-IR value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    Tile { dtype: DType, shape: Vec<i64>, layout: Layout },
    Tensor { dtype: DType, rank: usize, mutable: bool },
}

impl Type {
    pub fn dtype(&self) -> DType {
        match self {
            Type::Tile { dtype, .. } | Type::Tensor { dtype, .. } => *dtype,
        }
    }

    pub fn shape(&self) -> &[i64] {
        match self {
            Type::Tile { shape, .. } => shape,
            Type::Tensor { .. } => &[],
        }
    }

    pub fn numel(&self) -> i64 {
        self.shape().iter().product()
    }

    pub fn layout(&self) -> Option<Layout> {
        match self {
            Type::Tile { layout, .. } => Some(*layout),
            Type::Tensor { .. } => None,
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Tile { dtype, shape, layout } => {
                let t = tir::Type::tile(*dtype, shape.clone());
                write!(f, "{t} {layout}")
            }
            Type::Tensor { dtype, rank, mutable } => tir::Type::Tensor { dtype: *dtype, rank: *rank, mutable: *mutable }.fmt(f),
        }
    }
}

/// Thread-IR operations: the per-thread forms of the tile-IR elementwise and memory ops, plus
/// explicit shared memory and barriers. Shared-memory operands are byte offsets into the
/// kernel's dynamic shared memory.
#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    /// Elementwise and scalar ops with the tile IR's meaning, computed on each thread's own
    /// elements (operands and result share one layout): Const, ProgramId, NumPrograms, Arange,
    /// Splat, Binary, Cmp, Unary, Select, Cast, Dim, View, Load, Store, For, If, Yield.
    Tir(tir::OpKind),
    /// `(x) -> T`: same elements, new shape; the layouts map each linear index to the same
    /// thread and register, so no data moves.
    Reshape,
    /// `(x) -> ()`: each thread writes its elements at `offset + linear_index * size`; with
    /// `swizzled`, a 2-D tile's 16-byte chunks are permuted within each row (see
    /// `index::SmemTile`) so that `ldmatrix` reads of 8 rows hit distinct banks.
    LocalStore { offset: u32, swizzled: bool },
    /// `() -> T`: each thread reads element `c` from `offset + (Σ c_i · strides_i) * size`.
    LocalLoad { offset: u32, strides: Vec<i64> },
    /// `() -> T`: reduces a row-major `src_shape` tile at `offset` along `axis`.
    LocalReduce { offset: u32, op: tir::ReduceOp, axis: u32, src_shape: Vec<i64>, dtype: DType },
    /// `(acc) -> acc'`: `acc + a · b` with row-major `a: [m, k]` at `a_offset` and `b: [k, n]` at
    /// `b_offset`, multiplied with fused multiply-adds.
    LocalDot { a_offset: u32, b_offset: u32, k: i64, dtype: DType },
    /// `(acc[, base]) -> acc'`: `acc + a · b` on the tensor cores (`ldmatrix` +
    /// `mma.sync.m16n8k16`), with swizzled row-major `a: [m, k]` at `a_offset` and `b: [k, n]` at
    /// `b_offset` (plus the i32 byte offset `base` when given: the stage of a pipelined loop); the
    /// accumulator has the `Mma` layout.
    /// With `b_trans`, `b` is stored as its transpose `[n, k]` (a loaded `k` tile under `trans`);
    /// with `a_trans`, `a` as its transpose `[k, m]` (16-bit elements only).
    /// With `wgmma` (Hopper, see `wgmma_fits`), each warpgroup multiplies its 64 rows with
    /// `wgmma.mma_async` straight from shared memory instead: no `ldmatrix`, no operand registers.
    /// A wgmma may take a fourth operand after both bases, `accumulate: bool`: when false, the
    /// result is `a · b` alone (`scale-d` 0; `defer_wgmma_wait`'s restart of a tile).
    LocalMma { a_offset: u32, b_offset: u32, k: i64, dtype: DType, a_trans: bool, b_trans: bool, wgmma: bool },
    /// `(base: i32, t: tensor, o0: i32, o1: i32) -> ()`: starts an asynchronous copy of the 2-D
    /// window `t[o0.., o1..]` of `shape` into shared memory at `offset + base` (row-major,
    /// swizzled if asked); out-of-range elements become 0. When the tensor's rows are contiguous
    /// and 16-byte aligned (checked at run time, uniformly), it issues 16-byte `cp.async`s;
    /// otherwise it copies element by element, synchronously.
    AsyncCopy { offset: u32, swizzled: bool, shape: Vec<i64> },
    /// `(base: i32, t: tensor, o0: i32, …, stage: i32, valid: bool) -> ()`: `async_copy`'s
    /// window through the copy engine (sm_90a): when the kernel's tensor maps are ready, thread
    /// 0 starts, if `valid`, bulk tensor copies of the window through tensor map `map` (of the
    /// parameter `t` is a view of; boxes in `index::SmemTile`'s layout) into shared memory at
    /// `offset + base`, completing on the mbarrier at `mbar + 8 · stage`; otherwise every
    /// thread runs `async_copy`.
    /// With `producer` (a warp-specialised kernel's producer warpgroup, `WsSplit`): the
    /// warpgroup's first thread issues the copies; without maps the warpgroup copies the window
    /// and fences it for the async proxy.
    TmaCopy { offset: u32, shape: Vec<i64>, map: u32, mbar: u32, producer: bool },
    /// `(t: tensor, o0: i32, …) -> ()`: stores the tile of `shape` at `offset` (in
    /// `index::SmemTile`'s swizzled layout, written by a `local_store`) into the window
    /// `t[o0.., …]` (sm_90a). When the kernel's tensor maps are ready, thread 0 starts bulk
    /// tensor stores through tensor map `map` (one per box; the copy engine drops the elements
    /// outside the tensor) and returns while they still read shared memory (a `bulk_wait_read`
    /// follows); otherwise every thread copies elements from shared memory, dropping those
    /// outside the tensor. The lowering puts barriers before (after the `local_store`, with the
    /// async-proxy fence) and after it.
    /// With `reduce`, the tile is combined into the window atomically instead (the copy engine's
    /// bulk reduction, or element by element with `red.global`).
    TmaStore { offset: u32, shape: Vec<i64>, map: u32, reduce: Option<tir::AtomicOp> },
    /// `() -> ()`: waits until this thread's bulk stores (`tma_store`) have read shared memory
    /// (`cp.async.bulk.wait_group.read 0`; at once for a thread that issued none). It guards
    /// the `bytes` staged at `offset`: before anything writes there again, thread 0 must have
    /// passed it and a barrier must follow (`defer_bulk_wait` moves it as late as that allows).
    BulkWaitRead { offset: u32, bytes: u32 },
    /// `() -> ()`: when the tensor maps are ready, thread 0 initialises `count` mbarriers at
    /// `mbar`, 8 bytes apart, each for one arrival; then the block synchronises.
    MbarInit { mbar: u32, count: u32 },
    /// `(stage: i32, valid: bool) -> ()`: when the tensor maps are ready and `valid`, thread 0
    /// arrives on the mbarrier at `mbar + 8 · stage`, expecting `bytes` from the copy engine.
    /// With `producer`: the producer warpgroup's first thread, always (without maps, after the
    /// warpgroup's copies, a plain arrival: the copies it made are complete).
    TmaArrive { mbar: u32, bytes: u32, producer: bool },
    /// `(stage: i32, parity: i32) -> ()`: when the tensor maps are ready, waits until the phase
    /// of the mbarrier at `mbar + 8 · stage` with this parity has completed (its copies landed).
    TmaWait { mbar: u32 },
    /// Closes the group of asynchronous copies issued since the last commit.
    AsyncCommit,
    /// Waits until at most `pending` committed groups are still in flight (this thread's).
    AsyncWait { pending: u32 },
    /// `() -> T`: the inclusive scan along `axis` of a row-major `src_shape` tile at `offset`
    /// (the result has `src_shape`).
    LocalScan { offset: u32, op: tir::ScanOp, axis: u32, src_shape: Vec<i64>, dtype: DType },
    /// `() -> T`: the same with a combine function, the op's one region `^(acc, x)` of scalar
    /// ops yielding the next scalar (`tir::OpKind::ScanFn`), applied in order along each line.
    LocalScanFn { offset: u32, axis: u32, src_shape: Vec<i64>, dtype: DType },
    /// `() -> i32[…]`: the index of the largest (smallest) element along `axis` of a row-major
    /// `src_shape` tile at `offset` (`tir::OpKind::ArgReduce`'s rules).
    LocalArgReduce { offset: u32, op: tir::ArgOp, axis: u32, src_shape: Vec<i64>, dtype: DType },
    /// `(x: [m, n] #mma<w×1>) -> [m] #mma_rows<w>`: reduces each row within its warp (registers,
    /// then two butterfly shuffles across the quad).
    RowReduce { op: tir::ReduceOp },
    /// `(x) -> y`: reduces a blocked tile along its last axis without walking rows serially:
    /// each thread combines its own elements of a row, butterfly shuffles combine the lanes that
    /// share the row, one lane per warp writes the warp's partial to shared memory at `offset`,
    /// a barrier, then each thread combines the partials of the rows it holds in `y`, and a
    /// final barrier releases the scratch region.
    ShuffleReduce { op: tir::ReduceOp, offset: u32 },
    /// `(x: [m, 1] #mma_rows<w>) -> [m, n] #mma<w×1>`: copies each row's value to its columns.
    RowBroadcast,
    /// `(x) -> T`: a layout conversion (and broadcast or permutation) in registers: element `c`
    /// of the result is `x`'s element at linear index `Σ c_i · strides_i`, taken from this
    /// thread's registers or read from other lanes of the warp with `shfl.sync.idx`, as `plan`
    /// (what `shuffle::plan` found for these types and strides; the lowering emits the op only
    /// where a plan exists and is cheaper than shared memory) says.
    ShuffleConvert { strides: Vec<i64>, plan: shuffle::ShufflePlan },
    /// `() -> i32[shape]`: each element's coordinate along `axis` (rebuilds `arange`-derived
    /// masks directly in a consumer's layout).
    Coord { axis: u32 },
    /// `(acc, a, b_base) -> acc'`: `acc + a · b` with `a: [m, k]` taken from registers in the
    /// `#mma<w×1>` layout (an accumulator's C fragments are an A fragment of the next MMA) and
    /// `b: [k, n]` swizzled in shared memory at `b_offset + b_base`.
    /// With `wgmma`, each warpgroup runs `wgmma.mma_async` with its A fragments from registers.
    RegMma { b_offset: u32, k: i64, dtype: DType, b_trans: bool, wgmma: bool },
    /// `(acc) -> acc'`: waits until at most `pending` of this warpgroup's groups of `wgmma`s (a
    /// `local_mma` with `wgmma` returns before the tensor cores finish) are still in flight.
    /// With 0, `acc` is written; with more, the newest groups may still be writing it, and only
    /// a later `wgmma` (which chains on it) or `wgmma_wait 0` may read it.
    WgmmaWait { pending: u32 },
    /// Every thread of the block waits here (`bar.sync 0`; in a warp-specialised kernel's
    /// consumer code, a named barrier of the consumer threads).
    Barrier,
    /// `() -> ()`: thread 0 initialises the `stages` "full" mbarriers at `full` (one arrival
    /// each: the producer's) and the `stages` "empty" ones at `empty` (`consumers` arrivals:
    /// every consumer thread), whether or not the tensor maps are ready; then every thread of
    /// the block synchronises.
    WsInit { full: u32, empty: u32, stages: u32, consumers: u32 },
    /// `() -> ()`, one region: the threads from `Kernel::threads` on (the producer warpgroup of
    /// `Kernel::ws`) run the region and leave the kernel; the others (the consumers) go on. Each
    /// side first sets its register budget (`setmaxnreg`).
    WsSplit,
    /// `(stage: i32, parity: i32, pred: bool) -> ()`: when `pred`, waits until the phase with
    /// this parity of the mbarrier at `mbar + 8 · stage` has completed (maps ready or not).
    MbarWait { mbar: u32 },
    /// `(stage: i32, pred: bool) -> ()`: when `pred`, every thread arrives on the mbarrier at
    /// `mbar + 8 · stage` (a consumer releasing a stage's buffers to the producer).
    MbarArrive { mbar: u32 },
    /// `() -> ()`: two consumer warpgroups take turns issuing tensor-core work (FlashAttention-3's
    /// ping-pong): see [`TurnStep`].
    Turn(TurnStep),
}

/// The steps of the consumer warpgroups' turns (named barriers 3 and 4, one per warpgroup, each
/// met by both): warpgroup `g` waits on its own before each `wgmma` issue and arrives on the
/// other's after it, so the two alternate and one's softmax runs while the other's products do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnStep {
    /// Before the loop: warpgroup 1 arrives on warpgroup 0's barrier (0 goes first).
    Start,
    /// Wait for this warpgroup's turn.
    Wait,
    /// Give the turn to the other warpgroup.
    Pass,
    /// After the loop: warpgroup 0 takes the turn 1 passed last (every arrival met).
    End,
}

impl TurnStep {
    pub fn name(self) -> &'static str {
        match self {
            TurnStep::Start => "start",
            TurnStep::Wait => "wait",
            TurnStep::Pass => "pass",
            TurnStep::End => "end",
        }
    }
}

impl OpKind {
    /// Ops that compute a value from their operands alone, with no effect (free to move or to
    /// recompute elsewhere).
    pub fn is_pure(&self) -> bool {
        match self {
            OpKind::Tir(k) => {
                k.is_elementwise()
                    || matches!(
                        k,
                        tir::OpKind::View
                            | tir::OpKind::Dim(_)
                            | tir::OpKind::Splat
                            | tir::OpKind::Arange(_)
                            | tir::OpKind::ProgramId(_)
                            | tir::OpKind::NumPrograms(_)
                    )
            }
            OpKind::Reshape => true,
            _ => false,
        }
    }

    /// Whether the op issues a group of `wgmma`s (which a `wgmma_wait` later retires).
    pub fn is_wgmma(&self) -> bool {
        matches!(self, OpKind::LocalMma { wgmma: true, .. } | OpKind::RegMma { wgmma: true, .. })
    }

    pub fn mnemonic(&self) -> String {
        match self {
            OpKind::Tir(k) => k.mnemonic(),
            OpKind::Reshape => "reshape".into(),
            OpKind::LocalStore { .. } => "local_store".into(),
            OpKind::LocalLoad { .. } => "local_load".into(),
            OpKind::LocalReduce { op, .. } => format!("local_reduce.{}", op.name()),
            OpKind::LocalDot { .. } => "local_dot".into(),
            OpKind::LocalMma { .. } => "local_mma".into(),
            OpKind::AsyncCopy { .. } => "async_copy".into(),
            OpKind::AsyncCommit => "async_commit".into(),
            OpKind::TmaCopy { .. } => "tma_copy".into(),
            OpKind::TmaStore { reduce: None, .. } => "tma_store".into(),
            OpKind::TmaStore { reduce: Some(a), .. } => format!("tma_reduce.{}", a.name()),
            OpKind::BulkWaitRead { .. } => "bulk_wait_read".into(),
            OpKind::MbarInit { .. } => "mbar_init".into(),
            OpKind::TmaArrive { .. } => "tma_arrive".into(),
            OpKind::TmaWait { .. } => "tma_wait".into(),
            OpKind::RowReduce { op } => format!("row_reduce.{}", op.name()),
            OpKind::RowBroadcast => "row_broadcast".into(),
            OpKind::ShuffleConvert { .. } => "shuffle_convert".into(),
            OpKind::ShuffleReduce { op, .. } => format!("shuffle_reduce.{}", op.name()),
            OpKind::Coord { .. } => "coord".into(),
            OpKind::RegMma { .. } => "reg_mma".into(),
            OpKind::AsyncWait { .. } => "async_wait".into(),
            OpKind::LocalScan { op, .. } => format!("local_scan.{}", op.name()),
            OpKind::LocalScanFn { .. } => "local_scan_fn".into(),
            OpKind::LocalArgReduce { op, .. } => format!("local_{}", op.name()),
            OpKind::WgmmaWait { .. } => "wgmma_wait".into(),
            OpKind::Barrier => "barrier".into(),
            OpKind::WsInit { .. } => "ws_init".into(),
            OpKind::WsSplit => "ws_split".into(),
            OpKind::MbarWait { .. } => "mbar_wait".into(),
            OpKind::MbarArrive { .. } => "mbar_arrive".into(),
            OpKind::Turn(step) => format!("turn.{}", step.name()),
        }
    }
}

pub type LirBody = Body<OpKind, Type>;

/// Bytes `[start, end)` of shared memory; `end` `None`: to the end (an offset plus a stage
/// chosen at run time, or a footprint not worked out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmemRange {
    pub start: u32,
    pub end: Option<u32>,
}

impl SmemRange {
    pub fn new(start: u32, bytes: i64) -> SmemRange {
        SmemRange { start, end: u32::try_from(start as i64 + bytes).ok() }
    }

    pub fn to_end(start: u32) -> SmemRange {
        SmemRange { start, end: None }
    }

    pub fn overlaps(self, o: SmemRange) -> bool {
        let empty = |r: SmemRange| r.end.is_some_and(|e| e <= r.start);
        !empty(self) && !empty(o) && self.end.is_none_or(|e| o.start < e) && o.end.is_none_or(|e| self.start < e)
    }
}

/// Bounds `[lo, hi]` (`hi` `None`: unbounded above) of an i32 scalar that is never negative, as
/// the pipelines compute stage bases: `(iv - start) / step % stages * bytes` of a `for` loop's
/// induction variable (which starts at `start` and grows by a positive step). `None`: not known
/// to be non-negative.
pub fn stage_bounds(b: &LirBody, v: crate::ir::Value) -> Option<(i64, Option<i64>)> {
    stage_bounds_at(b, v, 8)
}

fn stage_bounds_at(b: &LirBody, v: crate::ir::Value, depth: u32) -> Option<(i64, Option<i64>)> {
    use crate::tir::BinaryOp;
    let depth = depth.checked_sub(1)?;
    let op = b.producer(v)?;
    let d = b.op(op);
    let konst = |x: crate::ir::Value| match b.producer(x).map(|o| &b.op(o).kind) {
        Some(OpKind::Tir(tir::OpKind::Const(tir::Lit::Int(c)))) => Some(*c),
        _ => None,
    };
    match &d.kind {
        OpKind::Tir(tir::OpKind::Const(tir::Lit::Int(c))) if *c >= 0 => Some((*c, Some(*c))),
        OpKind::Tir(tir::OpKind::Binary(op)) => {
            let (&x, &y) = (d.operands.first()?, d.operands.get(1)?);
            match op {
                // A `for` body's induction variable minus the loop's start.
                BinaryOp::Sub => {
                    let crate::ir::ValueDef::Arg(body, 0) = b.values[x.index()].def else { return None };
                    let lp = b.ops.iter().find(|o| o.regions.first() == Some(&body) && matches!(o.kind, OpKind::Tir(tir::OpKind::For)))?;
                    (lp.operands.first() == Some(&y)).then_some((0, None))
                }
                BinaryOp::Div => {
                    let (lo, hi) = stage_bounds_at(b, x, depth)?;
                    match konst(y) {
                        Some(c) if c > 0 => Some((lo / c, hi.map(|h| h / c))),
                        // The loop's step, positive.
                        _ if b.ops.iter().any(|o| matches!(o.kind, OpKind::Tir(tir::OpKind::For)) && o.operands.get(2) == Some(&y)) => {
                            Some((0, hi))
                        }
                        _ => None,
                    }
                }
                BinaryOp::Rem => {
                    let (_, hi) = stage_bounds_at(b, x, depth)?;
                    let c = konst(y).filter(|&c| c > 0)?;
                    Some((0, Some(hi.map_or(c - 1, |h| h.min(c - 1)))))
                }
                BinaryOp::Mul | BinaryOp::Add => {
                    let ((a, ah), (c, ch)) = (stage_bounds_at(b, x, depth)?, stage_bounds_at(b, y, depth)?);
                    let f = |p: i64, q: i64| if *op == BinaryOp::Mul { p.checked_mul(q) } else { p.checked_add(q) };
                    Some((f(a, c)?, ah.zip(ch).and_then(|(p, q)| f(p, q))))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A tile of `bytes` at `offset` plus the stage base `base` (when there is one).
fn staged(b: &LirBody, offset: u32, base: Option<&crate::ir::Value>, bytes: i64) -> SmemRange {
    let Some(&base) = base else { return SmemRange::new(offset, bytes) };
    match stage_bounds(b, base) {
        Some((lo, Some(hi))) => match (u32::try_from(offset as i64 + lo), hi.checked_add(bytes)) {
            (Ok(start), Some(end)) => SmemRange::new(start, end - lo),
            _ => SmemRange::to_end(offset),
        },
        Some((lo, None)) => SmemRange::to_end(u32::try_from(offset as i64 + lo).unwrap_or(offset)),
        None => SmemRange { start: 0, end: None },
    }
}

/// What op `op` itself writes in shared memory, by any thread or the copy engine (`None`:
/// nothing). The ops of its regions are not included; `wgmma_reads` gives what a `wgmma` in
/// flight reads.
pub fn shared_writes(b: &LirBody, op: crate::ir::Op) -> Option<SmemRange> {
    let d = b.op(op);
    match &d.kind {
        OpKind::LocalStore { offset, .. } => {
            let t = b.ty(*d.operands.first()?);
            Some(SmemRange::new(*offset, t.numel() * t.dtype().size() as i64))
        }
        // (base, t, …): at a stage base chosen at run time.
        OpKind::AsyncCopy { offset, shape, .. } | OpKind::TmaCopy { offset, shape, .. } => {
            let es = b.ty(*d.operands.get(1)?).dtype().size() as i64;
            Some(staged(b, *offset, d.operands.first(), shape.iter().product::<i64>() * es))
        }
        OpKind::ShuffleReduce { offset, .. } => Some(SmemRange::to_end(*offset)),
        OpKind::MbarInit { mbar, count } => Some(SmemRange::new(*mbar, 8 * *count as i64)),
        OpKind::TmaArrive { mbar, .. } | OpKind::MbarArrive { mbar } => Some(SmemRange::to_end(*mbar)),
        // The two sets of mbarriers (a range over both: they are initialised together).
        OpKind::WsInit { full, empty, stages, .. } => {
            let (lo, hi) = ((*full).min(*empty), (*full).max(*empty));
            Some(SmemRange::new(lo, i64::from(hi - lo) + 8 * *stages as i64))
        }
        OpKind::Tir(_)
        | OpKind::Reshape
        | OpKind::LocalLoad { .. }
        | OpKind::LocalReduce { .. }
        | OpKind::LocalDot { .. }
        | OpKind::LocalMma { .. }
        | OpKind::TmaStore { .. }
        | OpKind::BulkWaitRead { .. }
        | OpKind::TmaWait { .. }
        | OpKind::AsyncCommit
        | OpKind::AsyncWait { .. }
        | OpKind::LocalScan { .. }
        | OpKind::LocalScanFn { .. }
        | OpKind::LocalArgReduce { .. }
        | OpKind::RowReduce { .. }
        | OpKind::RowBroadcast
        | OpKind::ShuffleConvert { .. }
        | OpKind::Coord { .. }
        | OpKind::RegMma { .. }
        | OpKind::WgmmaWait { .. }
        | OpKind::Barrier
        | OpKind::WsSplit
        | OpKind::MbarWait { .. }
        | OpKind::Turn(_) => None,
    }
}

/// The shared memory a `wgmma` op reads while it runs (until its `wgmma_wait`): its operand
/// tiles, each at its offset plus the stage bases it may have (`stage_bounds`).
pub fn wgmma_reads(b: &LirBody, op: crate::ir::Op) -> Vec<SmemRange> {
    let d = b.op(op);
    let Some(n) = d.results.first().and_then(|&r| b.ty(r).shape().get(1).copied()) else { return vec![] };
    let m = d.results.first().and_then(|&r| b.ty(r).shape().first().copied()).unwrap_or(0);
    match &d.kind {
        OpKind::LocalMma { a_offset, b_offset, k, dtype, wgmma: true, .. } => {
            // (acc[, a_base, b_base[, accumulate]]): a tile moved by a base is read from its
            // offset on.
            let es = dtype.size() as i64;
            vec![staged(b, *a_offset, d.operands.get(1), m * k * es), staged(b, *b_offset, d.operands.get(2), k * n * es)]
        }
        // (acc, a, b_base)
        OpKind::RegMma { b_offset, k, dtype, wgmma: true, .. } => {
            vec![staged(b, *b_offset, d.operands.get(2), k * n * dtype.size() as i64)]
        }
        _ => vec![],
    }
}

/// Where the A operand of a tensor-core `dot` is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmaA {
    /// A swizzled K-major `[m, k]` tile in shared memory.
    KMajor,
    /// A swizzled M-major tile in shared memory: `a`'s transpose `[k, m]` as loaded.
    MMajor,
    /// Registers in the accumulator's layout (`reg_mma`).
    Regs,
}

/// Whether a `local_mma` (or, with `MmaA::Regs`, a `reg_mma`) can run as Hopper's
/// `wgmma.mma_async.m64nNk16`, the tensor cores reading the shared-memory operands through
/// matrix descriptors:
/// - the accumulator is `#mma<w×c>` with `w` a multiple of 4: each 16-row strip `s` of warp row
///   `r` is rows `16·(r + s·warps_m)..`, so each strip of a warpgroup (4 consecutive warps of
///   one warp column) is one 64-row `wgmma` tile of that column's `n / c` columns whose `m16n8`
///   register order is wgmma's; A fragments in registers need whole rows (`c` = 1);
/// - K-major tiles (`a: [m, k]`, and `b` stored as `[n, k]` when `b_trans`) have rows of 64
///   bytes (wgmma's 64B swizzle atoms are `index::SmemTile`'s swizzle) or of a multiple of 128
///   bytes in a multiple of 8 rows (its 128-byte column blocks are stacks of 128B swizzle atoms,
///   each block starting on a 1024-byte boundary);
/// - an N-major `b: [k, n]` has each warp column's `n / c` a multiple of 64 (whole 128-byte
///   column blocks), and so has an M-major `a` (stored `[k, m]`) its `m`: each warpgroup's 64
///   rows are one column block;
/// - `n` is at most 256 and every tile starts on a 1024-byte boundary (descriptor base offset 0).
#[allow(clippy::too_many_arguments)]
pub fn wgmma_fits(m: i64, n: i64, layout: Option<Layout>, k: i64, dtype: DType, a: MmaA, b_trans: bool, offsets: &[u32]) -> bool {
    let Some(Layout::Mma { warps_m, warps_n }) = layout else { return false };
    if warps_n == 0 || n % warps_n as i64 != 0 || warps_n > 1 && a == MmaA::Regs {
        return false;
    }
    // Each warpgroup's columns: one instruction's `n`.
    let n = n / warps_n as i64;
    let es = dtype.size() as i64;
    let k_major_ok = |rows: i64| matches!(k * es, 64) || (k * es) % 128 == 0 && rows % 8 == 0;
    let mn_major_ok = |cols: i64| cols % 64 == 0 && k % 8 == 0;
    let b_ok = if b_trans { n % 8 == 0 && k_major_ok(n) } else { mn_major_ok(n) };
    let a_ok = match a {
        MmaA::KMajor => k_major_ok(m),
        MmaA::MMajor => mn_major_ok(m),
        MmaA::Regs => true,
    };
    matches!(dtype, DType::BF16 | DType::F16)
        && warps_m.is_multiple_of(4)
        && m % (16 * warps_m as i64) == 0
        && k % 16 == 0
        && n <= 256
        && b_ok
        && a_ok
        && offsets.iter().all(|o| o % 1024 == 0)
}

/// A kernel in the thread IR.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<tir::Param>,
    /// Threads per block (`32 * warps`).
    pub threads: u32,
    /// Dynamic shared memory in bytes.
    pub shared_bytes: u32,
    /// Blocks that must fit on one multiprocessor together (`tir::Kernel::blocks_per_sm`).
    pub blocks_per_sm: Option<u32>,
    /// The tensor maps `tma_copy`s read through (parameters after the tile parameters').
    pub tensor_maps: Vec<crate::abi::TensorMap>,
    /// `#[warp_specialize]` was asked for (`tir::Kernel::warp_specialize`).
    pub warp_specialize: bool,
    /// Set by the `warp_specialize` pass where it applied: the producer warpgroup after the
    /// `threads` consumer threads, and each side's registers.
    pub ws: Option<WarpSpec>,
    pub body: LirBody,
}

/// A warp-specialised kernel's thread roles (`lower::warp_specialize`): `Kernel::threads`
/// consumer threads (the layouts' threads) and one producer warpgroup after them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarpSpec {
    /// Registers per thread each side asks for with `setmaxnreg` (`None`: the launch's).
    pub producer_regs: Option<u32>,
    pub consumer_regs: Option<u32>,
    /// The two consumer warpgroups take turns issuing the loop's products (`OpKind::Turn`).
    pub pingpong: bool,
}

/// Threads of a warp-specialised kernel's producer warpgroup.
pub const PRODUCER_THREADS: u32 = 128;

impl Kernel {
    /// Threads per block at launch: the consumers, plus the producer warpgroup when there is one.
    pub fn launch_threads(&self) -> u32 {
        self.threads + if self.ws.is_some() { PRODUCER_THREADS } else { 0 }
    }
}

/// Checks the thread IR's invariants: operands defined before use, layouts consistent with the
/// thread count, elementwise operands in one layout, shared-memory accesses inside the plan.
pub fn verify_kernel(k: &Kernel) -> Result<(), String> {
    let b = &k.body;
    let mut defined = vec![false; b.values.len()];
    for &a in &b.block(b.entry).args {
        defined[a.index()] = true;
    }
    verify_block(k, b.entry, &mut defined)?;
    verify_roles(k)
}

/// A warp-specialised kernel's thread roles: one `ws_split`, in the entry block, exactly when
/// `Kernel::ws` is set; the producer's copies only in its region, which has no barrier of the
/// consumers and no tensor-core work; turns only in the consumers' code of a ping-pong kernel.
fn verify_roles(k: &Kernel) -> Result<(), String> {
    let b = &k.body;
    let splits: Vec<crate::ir::Op> = b.block(b.entry).ops.iter().copied().filter(|&o| b.op(o).kind == OpKind::WsSplit).collect();
    let mut all_splits = 0;
    b.walk(b.entry, &mut |o| all_splits += usize::from(b.op(o).kind == OpKind::WsSplit));
    match (k.ws, splits.as_slice()) {
        (None, []) if all_splits == 0 => {}
        (Some(_), [_]) if all_splits == 1 => {}
        _ => return Err(format!("{all_splits} `ws_split` ops ({} in the entry block) in a kernel with ws {:?}", splits.len(), k.ws)),
    }
    let mut in_producer = std::collections::HashSet::new();
    for &s in &splits {
        for &r in &b.op(s).regions {
            b.walk(r, &mut |o| {
                in_producer.insert(o);
            });
        }
    }
    let pingpong = k.ws.is_some_and(|w| w.pingpong);
    let mut err = None;
    b.walk(b.entry, &mut |o| {
        let d = b.op(o);
        let producer_op = matches!(d.kind, OpKind::TmaCopy { producer: true, .. } | OpKind::TmaArrive { producer: true, .. });
        let here = in_producer.contains(&o);
        let wrong = if here {
            matches!(d.kind, OpKind::Barrier | OpKind::Turn(_) | OpKind::WsInit { .. } | OpKind::MbarArrive { .. }) || d.kind.is_wgmma()
        } else {
            producer_op || matches!(d.kind, OpKind::Turn(_)) && !pingpong
        };
        if wrong && err.is_none() {
            let side = if here { "the producer's region" } else { "the consumers' code" };
            err = Some(format!("`{}` in {side}", d.kind.mnemonic()));
        }
    });
    err.map_or(Ok(()), Err)
}

/// A loop's or branch's regions end in a `yield` of one value per result, each of its type; a
/// loop's body has the induction variable and one argument per result.
fn verify_regions(b: &LirBody, op: crate::ir::Op) -> Result<(), String> {
    let d = b.op(op);
    if let OpKind::LocalScanFn { dtype, .. } = d.kind {
        let [r] = d.regions[..] else { return Err("`local_scan_fn` needs one region, the combine function".into()) };
        let y = b.block(r).ops.last().map(|&y| b.op(y)).filter(|y| matches!(y.kind, OpKind::Tir(tir::OpKind::Yield)));
        let scalar = |v: &crate::ir::Value| b.ty(*v).shape().is_empty() && b.ty(*v).dtype() == dtype;
        if b.block(r).args.len() != 2
            || !b.block(r).args.iter().all(scalar)
            || !y.is_some_and(|y| y.operands.len() == 1 && scalar(&y.operands[0]))
        {
            return Err(format!("the combine function of `local_scan_fn` maps two {dtype} scalars to one"));
        }
        return Ok(());
    }
    let (is_for, is_if) = (matches!(d.kind, OpKind::Tir(tir::OpKind::For)), matches!(d.kind, OpKind::Tir(tir::OpKind::If)));
    if !is_for && !is_if {
        return Ok(());
    }
    let what = d.kind.mnemonic();
    for &r in &d.regions {
        let y = b.block(r).ops.last().map(|&y| b.op(y));
        let Some(y) = y.filter(|y| matches!(y.kind, OpKind::Tir(tir::OpKind::Yield))) else {
            return Err(format!("a region of `{what}` does not end in `yield`"));
        };
        if y.operands.len() != d.results.len() || y.operands.iter().zip(&d.results).any(|(&v, &res)| b.ty(v) != b.ty(res)) {
            return Err(format!("`{what}` has {} results, its region yields {} values or other types", d.results.len(), y.operands.len()));
        }
        if is_for && b.block(r).args.len() != d.results.len() + 1 {
            return Err(format!("`for` has {} results and {} body arguments", d.results.len(), b.block(r).args.len()));
        }
    }
    Ok(())
}

fn verify_block(k: &Kernel, blk: crate::ir::Block, defined: &mut Vec<bool>) -> Result<(), String> {
    let b = &k.body;
    for &a in &b.block(blk).args {
        defined[a.index()] = true;
    }
    for &op in &b.block(blk).ops {
        let d = b.op(op);
        for &o in &d.operands {
            if !defined.get(o.index()).copied().unwrap_or(false) {
                return Err(format!("{} uses {o} before its definition", d.kind.mnemonic()));
            }
        }
        for &r in &d.regions {
            verify_block(k, r, defined)?;
        }
        verify_regions(b, op)?;
        for &r in &d.results {
            defined[r.index()] = true;
            if let Type::Tile { shape, layout, .. } = b.ty(r)
                && !layout.valid_for(shape, k.threads)
            {
                return Err(format!(
                    "{} result has layout {layout}, which cannot hold {shape:?} on {} threads",
                    d.kind.mnemonic(),
                    k.threads
                ));
            }
        }
        if let OpKind::ShuffleConvert { strides, plan } = &d.kind {
            let (Some(&x), Some(&r)) = (d.operands.first(), d.results.first()) else {
                return Err("shuffle_convert takes one operand and has one result".into());
            };
            if shuffle::plan(b.ty(x), b.ty(r), strides, k.threads).as_ref() != Some(plan) {
                return Err(format!("shuffle_convert from {} to {} does not carry the shuffle plan of its types", b.ty(x), b.ty(r)));
            }
        }
        let end = match &d.kind {
            OpKind::LocalStore { offset, .. } => {
                d.operands.first().map(|&x| *offset as i64 + b.ty(x).numel() * b.ty(x).dtype().size() as i64)
            }
            OpKind::LocalDot { b_offset, k: kk, dtype, .. } | OpKind::LocalMma { b_offset, k: kk, dtype, .. } => {
                d.results.first().map(|&r| *b_offset as i64 + kk * b.ty(r).shape().get(1).copied().unwrap_or(1) * dtype.size() as i64)
            }
            OpKind::MbarInit { mbar, count } => Some(*mbar as i64 + 8 * *count as i64),
            OpKind::WsInit { full, empty, stages, .. } => Some((*full).max(*empty) as i64 + 8 * *stages as i64),
            OpKind::TmaCopy { map, .. } if k.tensor_maps.get(*map as usize).is_none() => {
                return Err(format!("tma_copy through tensor map {map} of {}", k.tensor_maps.len()));
            }
            OpKind::TmaCopy { offset, mbar, .. } if offset % 1024 != 0 || mbar % 8 != 0 => {
                return Err(format!("tma_copy to byte {offset} (a multiple of 1024) on the mbarrier at {mbar} (of 8)"));
            }
            OpKind::TmaStore { map, .. } if k.tensor_maps.get(*map as usize).is_none() => {
                return Err(format!("tma_store through tensor map {map} of {}", k.tensor_maps.len()));
            }
            OpKind::TmaStore { offset, .. } if offset % 1024 != 0 => {
                return Err(format!("tma_store from byte {offset} (a multiple of 1024)"));
            }
            OpKind::TmaStore { offset, shape, map, .. } => {
                let es = k.params.get(k.tensor_maps[*map as usize].param).map_or(1, |p| p.ty().dtype().size() as i64);
                Some(*offset as i64 + shape.iter().product::<i64>() * es)
            }
            _ => None,
        };
        if let Some(end) = end
            && end > k.shared_bytes as i64
        {
            return Err(format!("{} writes shared memory up to byte {end}, beyond the {} planned", d.kind.mnemonic(), k.shared_bytes));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Layout, SmemRange};

    /// Ranges meet when they share a byte; an open end reaches everything after its start.
    #[test]
    fn shared_ranges_overlap_where_they_share_bytes() {
        let a = SmemRange::new(0, 1024);
        assert!(a.overlaps(SmemRange::new(1023, 1)) && !a.overlaps(SmemRange::new(1024, 8)));
        assert!(SmemRange::to_end(512).overlaps(a) && !SmemRange::to_end(1024).overlaps(a));
        assert!(SmemRange::to_end(0).overlaps(SmemRange::to_end(1 << 20)));
        assert!(!SmemRange::new(64, 0).overlaps(SmemRange::new(0, 1024)), "an empty range meets nothing");
    }

    /// A reshape moves no data only where both shapes fit the layout the same way.
    #[test]
    fn reshape_is_free_only_within_a_layouts_shapes() {
        let cols = Layout::MmaCols { warps_m: 4, warps_n: 1 };
        assert!(cols.reshape_is_free(&[64], &[1, 64], 128));
        assert!(!cols.reshape_is_free(&[4, 16], &[64], 128), "a [4, 16] tile is not a column vector");
        let rows = Layout::MmaRows { warps_m: 4 };
        assert!(rows.reshape_is_free(&[64], &[64, 1], 128));
        assert!(!rows.reshape_is_free(&[4, 16], &[64], 128));
        let acc = Layout::Mma { warps_m: 4, warps_n: 1 };
        assert!(acc.reshape_is_free(&[64, 64], &[4, 16, 64], 128), "rows split over leading dimensions");
        assert!(!acc.reshape_is_free(&[64, 64], &[128, 32], 128), "columns changed");
        let blocked = Layout::blocked_for(64 * 64, 128);
        assert!(blocked.reshape_is_free(&[64, 64], &[4096], 128));
    }
}
