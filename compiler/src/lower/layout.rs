//! Layout assignment on the tile IR, before lowering.
//!
//! Algorithm (anchor, propagate, resolve — as Triton's layout passes do):
//! 1. anchors: the result of every `dot` that the tensor cores can run (f16/bf16 operands, K a
//!    multiple of 16, an `[m, n]` result that a warp grid of m16n8 tiles covers) gets the MMA
//!    accumulator layout, with the warp grid that needs the fewest operand loads per MMA;
//! 2. propagation to a fixed point: an elementwise op with an MMA operand of its own shape
//!    computes in that layout; loop-carried values and `if` results take the layout of what is
//!    yielded into them, so an accumulator stays in registers across iterations;
//! 3. everything else keeps the default blocked layout. The lowering converts an operand whose
//!    layout differs from what its user needs (constants and splats are rematerialised in the
//!    wanted layout instead of converted).

use crate::dtype::DType;
use crate::ir::{Block, Value};
use crate::lir::Layout;
use crate::tir::{Kernel, OpKind, TirBody};
use std::collections::HashMap;

/// The warp grid for an MMA accumulator of `shape` on `warps` warps, if one fits.
pub fn mma_warp_grid(shape: &[i64], warps: u32) -> Option<(u32, u32)> {
    let mut best: Option<((u32, u32), i64)> = None;
    let mut wm = 1;
    while wm <= warps {
        let wn = warps / wm;
        if Layout::mma_fits(shape, wm, wn) {
            let (mt, nt) = (shape[0] / wm as i64 / 16, shape[1] / wn as i64 / 8);
            // ldmatrix.x4 loads per k-step: one per 16-row A tile, one per two 8-column B tiles.
            let cost = mt + (nt + 1) / 2;
            if best.is_none_or(|(_, c)| cost < c || (cost == c && wm > best.map_or(0, |b| b.0.0))) {
                best = Some(((wm, wn), cost));
            }
        }
        wm *= 2;
    }
    best.map(|b| b.0)
}

/// Whether a `dot` with these operand types runs on the tensor cores.
pub fn dot_uses_mma(body: &TirBody, a: Value, b: Value, result: Value, warps: u32, tf32: bool) -> Option<(u32, u32)> {
    let (at, bt) = (body.ty(a), body.ty(b));
    let d = at.dtype();
    // f16/bf16 (m16n8k16) and, with `tf32`, f32 (m16n8k8) accumulate in f32; i8 (m16n8k32) in
    // i32. One MMA's k-step is 32 bytes of a row of A.
    let acc = match d {
        DType::BF16 | DType::F16 => DType::F32,
        DType::F32 if tf32 => DType::F32,
        DType::I8 => DType::I32,
        _ => return None,
    };
    if bt.dtype() != d || (at.shape()[1] * d.size() as i64) % 32 != 0 || body.ty(result).dtype() != acc {
        return None;
    }
    // ldmatrix reads 16-byte rows: B's rows (n elements) must hold whole 8-element chunks.
    if bt.shape()[1] % 8 != 0 {
        return None;
    }
    mma_warp_grid(body.ty(result).shape(), warps)
}

/// Whether a tensor-core dot of result `shape` could run as Hopper's `wgmma` on a `warps_m ×
/// warps_n` warp grid (`lir::wgmma_fits` decides at lowering, once the shared-memory tiles are
/// placed): the `w × 1` grid, each warpgroup running `wgmma`s of 64 rows, or, where the rows are
/// too few for that, warpgroups side by side, each on its own columns.
fn wgmma_shape(body: &TirBody, a: Value, shape: &[i64], warps_m: u32, warps_n: u32) -> bool {
    let at = body.ty(a);
    let rows = Some(Layout::Mma { warps_m, warps_n });
    // How the operands are stored is decided at lowering: any way may fit.
    let a_ways = [crate::lir::MmaA::KMajor, crate::lir::MmaA::MMajor];
    a_ways.into_iter().any(|a| {
        [false, true]
            .into_iter()
            .any(|b_trans| crate::lir::wgmma_fits(shape[0], shape[1], rows, at.shape()[1], at.dtype(), a, b_trans, &[]))
    })
}

/// Whether `v` is computed, through elementwise ops only, from the result of a tensor-core dot.
fn from_dot(body: &TirBody, v: Value, warps: u32, depth: u32, tf32: bool) -> bool {
    let crate::ir::ValueDef::Result(op, index) = body.values[v.index()].def else { return false };
    let d = body.op(op);
    match d.kind {
        OpKind::Dot => dot_uses_mma(body, d.operands[0], d.operands[1], d.results[0], warps, tf32).is_some(),
        // A branch's result (`uniform_mask`'s `if all(mask) { s } else { where(mask, s, -inf) }`)
        // when a branch yields one.
        OpKind::If if depth < 16 => d.regions.iter().any(|&r| {
            let yielded = body.block(r).ops.last().and_then(|&y| body.op(y).operands.get(index as usize).copied());
            yielded.is_some_and(|y| from_dot(body, y, warps, depth + 1, tf32))
        }),
        OpKind::Cast | OpKind::Unary(_) | OpKind::Binary(_) | OpKind::Select | OpKind::Fma if depth < 16 => {
            d.operands.iter().any(|&o| body.ty(o).shape() == body.ty(v).shape() && from_dot(body, o, warps, depth + 1, tf32))
        }
        _ => false,
    }
}

/// The layout of every tile-IR value that does not take the default blocked layout.
pub fn assign(k: &Kernel, warps: u32, target: crate::Target, tf32: bool) -> HashMap<Value, Layout> {
    let body = &k.body;
    let mut out: HashMap<Value, Layout> = HashMap::new();
    let mut ops = vec![];
    body.walk(body.entry, &mut |op| ops.push(op));
    let mut uses = vec![0u32; body.values.len()];
    for &op in &ops {
        for &o in &body.op(op).operands {
            uses[o.index()] += 1;
        }
    }
    // Chained dots (attention's `dot(p, v)` with `p` computed from `dot(q, kᵀ)`): every warp owns
    // whole rows (a `w × 1` grid), so `p`'s accumulator registers are the next MMA's A operand
    // and row reductions stay inside a warp.
    let chained = ops.iter().any(|&op| {
        let d = body.op(op);
        d.kind == OpKind::Dot
            && dot_uses_mma(body, d.operands[0], d.operands[1], d.results[0], warps, tf32).is_some()
            && from_dot(body, d.operands[0], warps, 0, tf32)
    });
    for &op in &ops {
        let d = body.op(op);
        if d.kind == OpKind::Dot
            && let Some((wm, wn)) = dot_uses_mma(body, d.operands[0], d.operands[1], d.results[0], warps, tf32)
        {
            let shape = body.ty(d.results[0]).shape();
            let hopper = target == crate::Target::Sm90a;
            let (wm, wn) = if (chained || hopper && wgmma_shape(body, d.operands[0], shape, warps, 1)) && Layout::mma_fits(shape, warps, 1)
            {
                (warps, 1)
            } else if hopper
                && warps > 4
                && warps.is_multiple_of(4)
                && Layout::mma_fits(shape, 4, warps / 4)
                && wgmma_shape(body, d.operands[0], shape, 4, warps / 4)
            {
                (4, warps / 4)
            } else {
                (wm, wn)
            };
            out.insert(d.results[0], Layout::Mma { warps_m: wm, warps_n: wn });
        }
    }
    loop {
        let mut changed = false;
        for &op in &ops {
            let d = body.op(op);
            match &d.kind {
                OpKind::Binary(_) | OpKind::Cmp(_) | OpKind::Unary(_) | OpKind::Select | OpKind::Fma | OpKind::Cast => {
                    let r = d.results[0];
                    let shape = body.ty(r).shape();
                    if let Some(&l @ Layout::Mma { warps_m, warps_n }) = out.get(&r) {
                        changed |= columns_from_registers(body, &uses, &d.operands, shape, warps_m, warps_n, &mut out);
                        if warps_n == 1 {
                            changed |= rows_from_registers(body, &uses, &d.operands, shape, warps_m, &mut out);
                        }
                        changed |= loads_in_registers(body, &uses, &d.operands, shape, l, &mut out);
                    }
                    if out.contains_key(&r) {
                        continue;
                    }
                    if let Some(l) = d.operands.iter().find_map(|o| out.get(o).filter(|_| body.ty(*o).shape() == shape)) {
                        out.insert(r, *l);
                        changed = true;
                    }
                }
                // A row reduction of a tile whose warps own whole rows stays in registers.
                OpKind::Reduce(_, 1) if !out.contains_key(&d.results[0]) && body.ty(d.operands[0]).shape().len() == 2 => {
                    if let Some(Layout::Mma { warps_m, warps_n: 1 }) = out.get(&d.operands[0]) {
                        out.insert(d.results[0], Layout::MmaRows { warps_m: *warps_m });
                        changed = true;
                    }
                }
                // Splitting an accumulator's rows over leading dimensions (`reshape(acc, [TX,
                // TY, D])` before a store) keeps its layout: no data moves.
                OpKind::Reshape if !out.contains_key(&d.results[0]) => {
                    let (from, to) = (body.ty(d.operands[0]).shape(), body.ty(d.results[0]).shape());
                    if let Some(&l @ Layout::Mma { .. }) = out.get(&d.operands[0])
                        && from.len() == 2
                        && to.len() >= 2
                        && to.last() == from.last()
                        && to[..to.len() - 1].iter().product::<i64>() == from[0]
                    {
                        out.insert(d.results[0], l);
                        changed = true;
                    }
                }
                OpKind::ExpandDims(1) if !out.contains_key(&d.results[0]) => {
                    if let Some(l @ Layout::MmaRows { .. }) = out.get(&d.operands[0]) {
                        out.insert(d.results[0], *l);
                        changed = true;
                    }
                }
                OpKind::Broadcast if !out.contains_key(&d.results[0]) => {
                    let shape = body.ty(d.results[0]).shape();
                    if let Some(Layout::MmaRows { warps_m }) = out.get(&d.operands[0])
                        && Layout::mma_fits(shape, *warps_m, 1)
                    {
                        out.insert(d.results[0], Layout::Mma { warps_m: *warps_m, warps_n: 1 });
                        changed = true;
                    }
                }
                OpKind::For => {
                    let region = d.regions[0];
                    let yields = yield_operands(body, region);
                    let args = &body.block(region).args;
                    for (i, &res) in d.results.iter().enumerate() {
                        let l = yields.get(i).and_then(|y| out.get(y)).or_else(|| out.get(&res)).copied();
                        if let Some(l) = l {
                            for v in [res, args[i + 1]] {
                                if out.insert(v, l) != Some(l) {
                                    changed = true;
                                }
                            }
                        }
                    }
                }
                OpKind::If => {
                    for &region in &d.regions {
                        let yields = yield_operands(body, region);
                        for (i, &res) in d.results.iter().enumerate() {
                            if let Some(&l) = yields.get(i).and_then(|y| out.get(y))
                                && !out.contains_key(&res)
                            {
                                out.insert(res, l);
                                changed = true;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if !changed {
            return out;
        }
    }
}

/// A row vector broadcast down the rows of an elementwise op computing in `#mma<wm×wn>` (a
/// bias in a GEMM epilogue): the broadcast gets the MMA layout and the `[1, n]` row (and the
/// `[n]` vector it expands, when used only there) `#mma_cols`, so each thread holds the columns
/// it needs (loaded directly if the vector is a load) and the broadcast moves no data.
fn columns_from_registers(
    body: &TirBody,
    uses: &[u32],
    operands: &[Value],
    shape: &[i64],
    warps_m: u32,
    warps_n: u32,
    out: &mut HashMap<Value, Layout>,
) -> bool {
    let def = |v: Value| body.producer(v).map(|op| body.op(op));
    let cols = Layout::MmaCols { warps_m, warps_n };
    let mut changed = false;
    let [_, n] = shape else { return false };
    for &o in operands {
        let Some(b) = def(o).filter(|d| d.kind == OpKind::Broadcast) else { continue };
        let row = b.operands[0];
        if out.contains_key(&o) || body.ty(o).shape() != shape || body.ty(row).shape() != [1, *n] || out.contains_key(&row) {
            continue;
        }
        if !cols.valid_for(body.ty(row).shape(), 32 * warps_m * warps_n) {
            continue;
        }
        out.insert(o, Layout::Mma { warps_m, warps_n });
        out.insert(row, cols);
        changed = true;
        // The vector the row expands, if this is its only use.
        expanded_vector(body, uses, row, 0, *n, cols, out);
    }
    changed
}

/// A column vector broadcast across the columns of an elementwise op computing in `#mma<wm×1>`
/// (a row statistic such as the log-sum-exp a backward kernel loads before its loop): the
/// broadcast gets the MMA layout and the `[m, 1]` column (and the `[m]` vector it expands, when
/// used only there) `#mma_rows`, so each thread holds its rows' values (loaded directly if the
/// vector is a load, once, wherever it is) and the broadcast moves no data.
fn rows_from_registers(
    body: &TirBody,
    uses: &[u32],
    operands: &[Value],
    shape: &[i64],
    warps_m: u32,
    out: &mut HashMap<Value, Layout>,
) -> bool {
    let def = |v: Value| body.producer(v).map(|op| body.op(op));
    let rows = Layout::MmaRows { warps_m };
    let mut changed = false;
    let [m, _] = shape else { return false };
    for &o in operands {
        let Some(b) = def(o).filter(|d| d.kind == OpKind::Broadcast) else { continue };
        let col = b.operands[0];
        if out.contains_key(&o) || body.ty(o).shape() != shape || body.ty(col).shape() != [*m, 1] || out.contains_key(&col) {
            continue;
        }
        if !Layout::mma_fits(shape, warps_m, 1) || !rows.valid_for(body.ty(col).shape(), 32 * warps_m) {
            continue;
        }
        out.insert(o, Layout::Mma { warps_m, warps_n: 1 });
        out.insert(col, rows);
        changed = true;
        expanded_vector(body, uses, col, 1, *m, rows, out);
    }
    changed
}

/// A window load of the accumulator's shape used only by an elementwise op computing in the
/// MMA layout (`acc + c.load(…)`, a GEMM's `C` input or a residual) is loaded in that layout:
/// each thread reads the elements of its own accumulator registers, nothing is converted.
fn loads_in_registers(
    body: &TirBody,
    uses: &[u32],
    operands: &[Value],
    shape: &[i64],
    l: Layout,
    out: &mut HashMap<Value, Layout>,
) -> bool {
    let mut changed = false;
    for &o in operands {
        let is_load = body.producer(o).is_some_and(|op| body.op(op).kind == OpKind::Load);
        if is_load && !out.contains_key(&o) && body.ty(o).shape() == shape && uses[o.index()] == 1 {
            out.insert(o, l);
            changed = true;
        }
    }
    changed
}

fn yield_operands(body: &TirBody, b: Block) -> Vec<Value> {
    body.block(b).ops.last().map(|&o| body.op(o)).filter(|d| d.kind == OpKind::Yield).map(|d| d.operands.clone()).unwrap_or_default()
}

/// The `[n]` vector that `x` (`[1, n]` or `[n, 1]`) expands along `axis` (or reshapes), given
/// `layout` too when `x` is its only use and it has none yet: the vector then lands where the
/// expanded value's layout needs it, with no conversion.
fn expanded_vector(body: &TirBody, uses: &[u32], x: Value, axis: u32, n: i64, layout: Layout, out: &mut HashMap<Value, Layout>) {
    let Some(d) = body.producer(x).map(|op| body.op(op)) else { return };
    if !matches!(d.kind, OpKind::ExpandDims(a) if a == axis) && d.kind != OpKind::Reshape {
        return;
    }
    let v = d.operands[0];
    if body.ty(v).shape() == [n] && !out.contains_key(&v) && uses[v.index()] == 1 {
        out.insert(v, layout);
    }
}
