//! Index maps written once for every evaluator: the shared-memory swizzle and the MMA layouts'
//! element↔register map. They are generic over [`IndexMath`], so that the host (plain integers:
//! the shuffle planner, tests) and the code generator (machine-IR values, folded as it builds)
//! run the same definition.

use super::Layout;
use std::convert::Infallible;

/// The integer operations the index maps use. Operands are non-negative (thread indices,
/// coordinates, offsets), so the divisions are unsigned.
pub trait IndexMath {
    type V: Copy;
    type Error;
    fn add(&self, a: Self::V, b: Self::V) -> Result<Self::V, Self::Error>;
    fn addc(&self, a: Self::V, k: i64) -> Result<Self::V, Self::Error>;
    fn mulc(&self, a: Self::V, k: i64) -> Result<Self::V, Self::Error>;
    fn udivc(&self, a: Self::V, k: i64) -> Result<Self::V, Self::Error>;
    fn uremc(&self, a: Self::V, k: i64) -> Result<Self::V, Self::Error>;
    fn xor(&self, a: Self::V, b: Self::V) -> Result<Self::V, Self::Error>;
}

/// The maps on plain integers.
pub struct Exact;

impl IndexMath for Exact {
    type V = i64;
    type Error = Infallible;
    fn add(&self, a: i64, b: i64) -> Result<i64, Infallible> {
        Ok(a.wrapping_add(b))
    }
    fn addc(&self, a: i64, k: i64) -> Result<i64, Infallible> {
        Ok(a.wrapping_add(k))
    }
    fn mulc(&self, a: i64, k: i64) -> Result<i64, Infallible> {
        Ok(a.wrapping_mul(k))
    }
    fn udivc(&self, a: i64, k: i64) -> Result<i64, Infallible> {
        Ok(a.checked_div(k).unwrap_or(0))
    }
    fn uremc(&self, a: i64, k: i64) -> Result<i64, Infallible> {
        Ok(a.checked_rem(k).unwrap_or(0))
    }
    fn xor(&self, a: i64, b: i64) -> Result<i64, Infallible> {
        Ok(a ^ b)
    }
}

/// Evaluates a map on plain integers.
pub fn exact<T>(r: Result<T, Infallible>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => match e {},
    }
}

/// `(rows per phase, phases)` of the swizzle for rows of `chunks` 16-byte chunks: 8 consecutive
/// rows put their chunk `c` in 8 different 16-byte bank groups (conflict-free `ldmatrix`). Rows
/// of a multiple of 8 chunks are 128-byte column blocks ([`SmemTile`]); other rows wider than
/// 8 chunks XOR within aligned groups of a power of two chunks, so that the permutation stays
/// inside the row.
pub fn swizzle_params(chunks: i64) -> (i64, i64) {
    match chunks {
        c if c >= 8 && c % 8 == 0 => (1, 8),
        c if c > 8 => (1, 1 << c.trailing_zeros().min(3)),
        4 => (2, 4),
        2 => (4, 2),
        _ => (1, 1),
    }
}

/// A row-major `[rows, cols]` tile of `esize`-byte elements in shared memory (a tile's leading
/// dimensions flattened into rows), its 16-byte chunks swizzled or not: the one definition of
/// where each element lives, used by every copy into shared memory (`cp.async`, the copy
/// engine's boxes, stores), every read (`ldmatrix`, element loads) and `wgmma`'s descriptors.
///
/// Swizzled, chunk `c` of row `r` goes to `c ⊕ ((r / per_phase) % phases)` (`swizzle_params`):
/// for rows of 32, 64 and 128 bytes these are the 32B, 64B and 128B swizzles of the copy engine
/// and of `wgmma`'s matrix descriptors (address bits 4.. XOR bits 7..). Rows of a multiple of
/// 128 bytes are split into 128-byte column blocks, block `b` holding all rows of its 64 columns
/// (`rows · 128` bytes) after blocks `0..b`, each block a stack of 8-row 128B-swizzled atoms:
/// one copy-engine box per block, and a `wgmma` descriptor walks one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmemTile {
    pub rows: i64,
    pub cols: i64,
    pub esize: i64,
    pub swizzled: bool,
}

impl SmemTile {
    pub fn new(rows: i64, cols: i64, esize: i64, swizzled: bool) -> SmemTile {
        SmemTile { rows, cols, esize, swizzled }
    }

    fn chunks(&self) -> i64 {
        self.cols * self.esize / 16
    }

    /// Whether rows are split into 128-byte column blocks.
    pub fn blocked(&self) -> bool {
        self.swizzled && self.chunks() > 8 && self.chunks() % 8 == 0
    }

    /// Bytes from row `r` to row `r + 1` within a column (the row size, or 128 in a blocked
    /// tile).
    pub fn row_pitch(&self) -> i64 {
        if self.blocked() { 128 } else { self.cols * self.esize }
    }

    /// Bytes from one 128-byte column block to the next in a blocked tile (`rows · 128`).
    pub fn block_bytes(&self) -> i64 {
        self.rows * 128
    }

    /// Rows after which the swizzle repeats: rows that many apart are `row_pitch` bytes per row
    /// apart.
    pub fn period(&self) -> i64 {
        if !self.swizzled {
            return 1;
        }
        let (per_phase, phases) = swizzle_params(self.chunks());
        per_phase * phases
    }

    /// Byte offset of element `(row, col)`.
    pub fn offset<M: IndexMath>(&self, m: &M, row: M::V, col: M::V) -> Result<M::V, M::Error> {
        let esize = self.esize;
        let (per_phase, max_phase) = swizzle_params(self.chunks());
        let row_bytes = m.mulc(row, self.row_pitch())?;
        if !self.swizzled || max_phase == 1 {
            return m.add(row_bytes, m.mulc(col, esize)?);
        }
        let per_chunk = 16 / esize;
        let chunk = m.udivc(col, per_chunk)?;
        let within = m.mulc(m.uremc(col, per_chunk)?, esize)?;
        let phase = m.uremc(m.udivc(row, per_phase)?, max_phase)?;
        if self.blocked() {
            let block = m.mulc(m.udivc(chunk, 8)?, self.block_bytes())?;
            let sw = m.xor(m.uremc(chunk, 8)?, phase)?;
            let off = m.add(block, row_bytes)?;
            return m.add(m.add(off, m.mulc(sw, 16)?)?, within);
        }
        // Only the low bits of the chunk index change: the chunk stays in its row.
        let chunk = m.xor(chunk, phase)?;
        let off = m.add(row_bytes, m.mulc(chunk, 16)?)?;
        m.add(off, within)
    }
}

/// Where a thread sits in the MMA layouts' warp grid: its warp's row `wm` and column `wn` (warp
/// `w` is at `(w % warps_m, w / warps_m)`: a warp column is consecutive warps, so a `4 × n` grid
/// gives each warpgroup 64 rows of its own columns, as `wgmma` wants), its lane's group
/// `g = lane / 4` and its place in the group `t = lane % 4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmaThread<V> {
    pub wm: V,
    pub wn: V,
    pub g: V,
    pub t: V,
}

impl MmaThread<i64> {
    /// Thread `tid`'s place in a grid of `warps_m` warp rows.
    pub fn of(tid: u32, warps_m: u32) -> MmaThread<i64> {
        let (warp, lane) = ((tid / 32) as i64, (tid % 32) as i64);
        let wm = warps_m.max(1) as i64;
        MmaThread { wm: warp % wm, wn: warp / wm, g: lane / 4, t: lane % 4 }
    }
}

/// The row of a thread's first element in an MMA-family tile: `16 · wm + g`.
pub fn mma_row0<M: IndexMath>(m: &M, wm: M::V, g: M::V) -> Result<M::V, M::Error> {
    m.add(m.mulc(wm, 16)?, g)
}

/// The column of a thread's first element in an MMA-family tile whose warp columns are `bn`
/// wide: `bn · wn + 2 · t`.
pub fn mma_col0<M: IndexMath>(m: &M, wn: M::V, t: M::V, bn: i64) -> Result<M::V, M::Error> {
    m.add(m.mulc(wn, bn)?, m.mulc(t, 2)?)
}

impl Layout {
    /// Register `r`'s `(row, column)` relative to its thread's first element (`mma_row0`,
    /// `mma_col0`) in an MMA-family tile of `shape` (the definitions on [`Layout`]); `None` for
    /// the blocked layouts. `#mma_rows` tiles have no column, `#mma_cols` tiles no row (0).
    pub fn mma_reg_offset(self, shape: &[i64], r: usize) -> Option<(i64, i64)> {
        let r = r as i64;
        match self {
            Layout::Blocked { .. } => None,
            Layout::Mma { warps_m, warps_n } => {
                let bn = shape.last().copied().unwrap_or(1) / warps_n.max(1) as i64;
                let nt = (bn / 8).max(1);
                let (c, ni, mi) = (r % 4, (r / 4) % nt, r / 4 / nt);
                Some((mi * 16 * warps_m as i64 + 8 * (c / 2), ni * 8 + c % 2))
            }
            Layout::MmaRows { warps_m } => Some(((r / 2) * 16 * warps_m as i64 + 8 * (r % 2), 0)),
            Layout::MmaCols { .. } => Some((0, 8 * (r / 2) + r % 2)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The swizzle is the hardware's: within each 1024-byte atom of 8 rows, address bits 4..
    /// XOR bits 7.. (CUTLASS's `Swizzle<3,4,3>` for 128-byte rows, `<2,4,3>` for 64, `<1,4,3>`
    /// for 32); rows of a multiple of 128 bytes are column blocks of `rows · 128` bytes, each a
    /// stack of such atoms; and every tile's layout is a permutation of its bytes, for any row
    /// size (16-byte chunks stay within their row).
    #[test]
    fn swizzle_is_the_wgmma_swizzle_and_a_permutation() {
        for esize in [1i64, 2, 4, 8] {
            for row_bytes in (16i64..=512).step_by(16) {
                let cols = row_bytes / esize;
                for rows in [8i64, 24, 32] {
                    let tile = SmemTile::new(rows, cols, esize, true);
                    let mut seen = std::collections::HashSet::new();
                    for row in 0..rows {
                        for col in 0..cols {
                            let got = exact(tile.offset(&Exact, row, col));
                            let bits = match row_bytes {
                                32 => Some(1),
                                64 => Some(2),
                                128 => Some(3),
                                b if b % 128 == 0 => Some(3),
                                _ => None,
                            };
                            if let Some(bits) = bits {
                                let (block, in_block) = if row_bytes > 128 {
                                    ((col * esize / 128) * rows * 128, row * 128 + (col * esize) % 128)
                                } else {
                                    (0, row * row_bytes + col * esize)
                                };
                                let mask = (1 << bits) - 1;
                                let want = block + (in_block ^ (((in_block >> 7) & mask) << 4));
                                assert_eq!(got, want, "esize {esize} row bytes {row_bytes} ({row}, {col})");
                            } else {
                                // Within the row, the element's 16-byte chunk kept in place or moved whole.
                                assert_eq!(got / row_bytes, row, "esize {esize} row bytes {row_bytes} ({row}, {col})");
                                assert_eq!(got % 16, (col * esize) % 16);
                            }
                            assert!(seen.insert(got), "row bytes {row_bytes} rows {rows}: offset {got} twice");
                            let plain = SmemTile::new(rows, cols, esize, false);
                            assert_eq!(exact(plain.offset(&Exact, row, col)), row * row_bytes + col * esize);
                        }
                    }
                    assert!(seen.iter().all(|&o| (0..rows * row_bytes).contains(&o)), "row bytes {row_bytes}");
                    // Rows a period apart are `row_pitch` bytes per row apart.
                    for row in 0..rows - tile.period() {
                        for col in 0..cols {
                            let (a, b) = (exact(tile.offset(&Exact, row, col)), exact(tile.offset(&Exact, row + tile.period(), col)));
                            assert_eq!(b - a, tile.period() * tile.row_pitch(), "row bytes {row_bytes}");
                        }
                    }
                }
            }
        }
    }

    /// The register offsets give each `(row, col)` of an MMA tile to exactly one register of one
    /// thread.
    #[test]
    fn mma_layout_covers_each_element_once() {
        for (warps_m, warps_n, m, n) in [(4u32, 1u32, 64i64, 64i64), (4, 1, 128, 16), (2, 2, 64, 32), (8, 1, 128, 128), (1, 4, 16, 64)] {
            let layout = Layout::Mma { warps_m, warps_n };
            let threads = 32 * warps_m * warps_n;
            let regs = layout.regs(&[m, n], threads);
            let mut seen = vec![0u8; (m * n) as usize];
            for tid in 0..threads {
                let th = MmaThread::of(tid, warps_m);
                let (r0, c0) = (exact(mma_row0(&Exact, th.wm, th.g)), exact(mma_col0(&Exact, th.wn, th.t, n / warps_n as i64)));
                for r in 0..regs {
                    let (dr, dc) = layout.mma_reg_offset(&[m, n], r).unwrap_or_default();
                    let (row, col) = (r0 + dr, c0 + dc);
                    assert!(row < m && col < n, "{layout:?} tid {tid} reg {r}: ({row}, {col})");
                    seen[(row * n + col) as usize] += 1;
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "{layout:?} {m}x{n}");
        }
    }
}
