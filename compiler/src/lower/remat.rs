//! Rematerialisation: a value computed only from `arange`, constants and scalars (masks such as
//! `kpos[None, :] < S`) is rebuilt directly in the layout its user needs, each element from its
//! own coordinates, instead of being converted through shared memory.

use super::Cx;
use crate::diag::Span;
use crate::ir::{Block, Value, ValueDef};
use crate::lir::{self, Layout};
use crate::tir::{self, Lit, OpKind};
use std::collections::{HashMap, HashSet};

const MAX_DEPTH: u32 = 64;

fn cheap(kind: &OpKind) -> bool {
    matches!(
        kind,
        OpKind::Const(_)
            | OpKind::Arange(_)
            | OpKind::Splat
            | OpKind::ExpandDims(_)
            | OpKind::Broadcast
            | OpKind::Binary(_)
            | OpKind::Cmp(_)
            | OpKind::Select
            | OpKind::Fma
            | OpKind::Unary(_)
            | OpKind::Cast
    )
}

impl Cx<'_> {
    /// Tile values whose every use rebuilds them (an elementwise op or broadcast computing in a
    /// non-blocked layout, or another such value), so lowering them on their own would only
    /// produce dead shared-memory conversions.
    pub(super) fn find_remat_only(&self) -> HashSet<Value> {
        let (ops, users) = self.all_uses();
        let mut set: HashSet<Value> = ops
            .iter()
            .map(|&op| self.src.op(op))
            .filter(|d| cheap(&d.kind) && d.results.len() == 1 && !self.src.ty(d.results[0]).is_scalar())
            .map(|d| d.results[0])
            .filter(|&v| self.remat_ok(v, 0) && users.contains_key(&v))
            .collect();
        loop {
            let mut drop = vec![];
            for &v in &set {
                let ok = users.get(&v).into_iter().flatten().all(|&(u, _)| {
                    let d = self.src.op(u);
                    let r = d.results.first().copied();
                    let non_blocked = r.and_then(|r| self.layouts.get(&r)).is_some_and(|l| !matches!(l, Layout::Blocked { .. }));
                    match d.kind {
                        _ if r.is_some_and(|r| set.contains(&r)) => true,
                        OpKind::Binary(_) | OpKind::Cmp(_) | OpKind::Select | OpKind::Fma | OpKind::Unary(_) | OpKind::Cast => {
                            non_blocked && r.is_some_and(|r| self.src.ty(r).shape() == self.src.ty(v).shape())
                        }
                        OpKind::Broadcast => non_blocked && r.is_some_and(|r| self.remat_ok(r, 0)),
                        // A window reduction's index tiles and mask: the copy engine takes the
                        // window's offsets instead.
                        OpKind::Atomic(_) => {
                            let n = d.operands.len();
                            (d.operands[n - 1] == v || d.operands[1..n - 2].contains(&v)) && self.window_reduction(u).is_some()
                        }
                        _ => false,
                    }
                });
                if !ok {
                    drop.push(v);
                }
            }
            if drop.is_empty() {
                return set;
            }
            for v in drop {
                set.remove(&v);
            }
        }
    }

    /// `v` rebuilt in `layout` (with its own shape), if it is cheap to recompute.
    pub(super) fn remat(&mut self, v: Value, layout: Option<Layout>, blk: Block, span: Span) -> Option<Value> {
        let layout = layout?;
        let shape = self.src.ty(v).shape().to_vec();
        let dims: Vec<Option<usize>> = (0..shape.len()).map(Some).collect();
        if !self.remat_ok(v, 0) {
            return None;
        }
        self.remat_at(v, &shape, layout, &dims, blk, span, 0, &mut HashMap::new())
    }

    /// Whether `v` depends only on arange, constants, scalars and elementwise/shape ops.
    pub(super) fn remat_ok(&self, v: Value, depth: u32) -> bool {
        self.remat_ok_memo(v, depth, &mut HashMap::new())
    }

    fn remat_ok_memo(&self, v: Value, depth: u32, memo: &mut HashMap<Value, bool>) -> bool {
        if let Some(&ok) = memo.get(&v) {
            return ok;
        }
        if depth > MAX_DEPTH {
            return false;
        }
        // Scalars are lowered where they are defined, before any tile that uses them.
        if self.src.ty(v).is_scalar() {
            return true;
        }
        let ValueDef::Result(op, _) = self.src.values[v.index()].def else { return false };
        let d = self.src.op(op);
        match d.kind {
            OpKind::Const(_) | OpKind::Arange(_) => true,
            OpKind::Splat => true,
            OpKind::ExpandDims(_)
            | OpKind::Broadcast
            | OpKind::Binary(_)
            | OpKind::Cmp(_)
            | OpKind::Select
            | OpKind::Fma
            | OpKind::Unary(_)
            | OpKind::Cast => d.operands.iter().all(|&o| self.remat_ok(o, depth + 1)),
            _ => false,
        }
    }

    /// `v`, whose dimension `i` is the target's dimension `dims[i]` (`None`: a broadcast axis of
    /// size 1), computed in `layout` over `target` shape.
    #[allow(clippy::too_many_arguments)]
    fn remat_at(
        &mut self,
        v: Value,
        target: &[i64],
        layout: Layout,
        dims: &[Option<usize>],
        blk: Block,
        span: Span,
        depth: u32,
        memo: &mut HashMap<(Value, Vec<Option<usize>>), Value>,
    ) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        if let Some(&r) = memo.get(&(v, dims.to_vec())) {
            return Some(r);
        }
        let r = self.remat_step(v, target, layout, dims, blk, span, depth, memo)?;
        memo.insert((v, dims.to_vec()), r);
        Some(r)
    }

    #[allow(clippy::too_many_arguments)]
    fn remat_step(
        &mut self,
        v: Value,
        target: &[i64],
        layout: Layout,
        dims: &[Option<usize>],
        blk: Block,
        span: Span,
        depth: u32,
        memo: &mut HashMap<(Value, Vec<Option<usize>>), Value>,
    ) -> Option<Value> {
        let ty = |cx: &Self, d: crate::DType| cx.ty_in(&tir::Type::tile(d, target.to_vec()), Some(layout));
        let vt = self.src.ty(v).clone();
        if vt.is_scalar() {
            let x = *self.map.get(&v)?;
            return Some(self.emit(blk, lir::OpKind::Tir(OpKind::Splat), vec![x], vec![ty(self, vt.dtype())], span)[0]);
        }
        let ValueDef::Result(op, _) = self.src.values[v.index()].def else { return None };
        let d = self.src.op(op).clone();
        let rt = ty(self, vt.dtype());
        Some(match &d.kind {
            OpKind::Const(l) => self.emit(blk, lir::OpKind::Tir(OpKind::Const(*l)), vec![], vec![rt], span)[0],
            OpKind::Splat => {
                let x = *self.map.get(&d.operands[0])?;
                self.emit(blk, lir::OpKind::Tir(OpKind::Splat), vec![x], vec![rt], span)[0]
            }
            OpKind::Arange(_) => match dims.first().copied().flatten() {
                Some(axis) => self.emit(blk, lir::OpKind::Coord { axis: axis as u32 }, vec![], vec![rt], span)[0],
                None => self.emit(blk, lir::OpKind::Tir(OpKind::Const(Lit::Int(0))), vec![], vec![rt], span)[0],
            },
            OpKind::ExpandDims(axis) => {
                let mut inner = dims.to_vec();
                inner.remove(*axis as usize);
                self.remat_at(d.operands[0], target, layout, &inner, blk, span, depth + 1, memo)?
            }
            OpKind::Broadcast => {
                let xs = self.src.ty(d.operands[0]).shape().to_vec();
                let inner: Vec<Option<usize>> =
                    dims.iter().enumerate().map(|(i, &t)| if xs[i] == 1 && vt.shape()[i] != 1 { None } else { t }).collect();
                self.remat_at(d.operands[0], target, layout, &inner, blk, span, depth + 1, memo)?
            }
            kind @ (OpKind::Binary(_) | OpKind::Cmp(_) | OpKind::Select | OpKind::Fma | OpKind::Unary(_) | OpKind::Cast) => {
                let mut ops = vec![];
                for &o in &d.operands {
                    ops.push(self.remat_at(o, target, layout, dims, blk, span, depth + 1, memo)?);
                }
                self.emit(blk, lir::OpKind::Tir(kind.clone()), ops, vec![rt], span)[0]
            }
            _ => return None,
        })
    }
}
