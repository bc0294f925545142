//! Index reductions (`argmax`, `argmin`), inclusive scans (`cumsum`, `cummax`) and `join`/`split`.
//!
//! Rules: `argmax`/`argmin` give the first index of the extreme value along the axis; NaNs are
//! skipped (an all-NaN line gives 0), matching `max`/`min`, which ignore NaN. `cumsum` keeps
//! its running sum in f64 (integers wrap) and rounds each output once; `cummax` ignores NaN
//! unless every element so far is NaN.

use super::ops::{same_dtype, same_shape};
use super::value::{Data, Tile, Val, int_value, numel, round_to, wrap};
use super::{Interp, Result, internal};
use crate::dtype::DType;
use crate::ir::OpData;
use crate::tir::{ArgOp, OpKind, ScanOp, Type};
use std::rc::Rc;

/// `x` viewed as `[outer, n, inner]` around `axis`.
fn split_axis(x: &Tile, axis: usize) -> Result<(usize, usize, usize)> {
    if axis >= x.shape.len() {
        return Err(internal(format!("axis {axis} of rank {}", x.shape.len())));
    }
    Ok((numel(&x.shape[..axis]), x.shape[axis].max(0) as usize, numel(&x.shape[axis + 1..])))
}

pub(super) fn arg_reduce(op: ArgOp, axis: usize, x: &Tile, dtype: DType, shape: &[i64]) -> Result<Tile> {
    let (outer, n, inner) = split_axis(x, axis)?;
    let mut want = x.shape.clone();
    want.remove(axis);
    if want != shape || dtype != DType::I32 {
        return Err(internal(format!("{} of {:?} over {axis} gives {dtype}{shape:?}", op.name(), x.shape)));
    }
    let at = |o: usize, j: usize, i: usize| (o * n + j) * inner + i;
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let mut best = 0usize;
            for j in 1..n {
                let better = match &x.data {
                    Data::F(v) => {
                        let (c, b) = (v[at(o, j, i)], v[at(o, best, i)]);
                        !c.is_nan() && (b.is_nan() || if op == ArgOp::Max { c > b } else { c < b })
                    }
                    Data::I(v) => {
                        let (c, b) = (int_value(x.dtype, v[at(o, j, i)]), int_value(x.dtype, v[at(o, best, i)]));
                        if op == ArgOp::Max { c > b } else { c < b }
                    }
                };
                if better {
                    best = j;
                }
            }
            out.push(best as i64);
        }
    }
    Ok(Tile { dtype, shape: shape.to_vec(), data: Data::I(out) })
}

pub(super) fn scan(op: ScanOp, axis: usize, x: &Tile, dtype: DType, shape: &[i64]) -> Result<Tile> {
    same_dtype(x, dtype)?;
    same_shape(x, shape)?;
    let (outer, n, inner) = split_axis(x, axis)?;
    let at = |o: usize, j: usize, i: usize| (o * n + j) * inner + i;
    let mut data = x.data.clone();
    for o in 0..outer {
        for i in 0..inner {
            match &mut data {
                Data::F(v) => {
                    // From each operation's identity; NaN for max/min, which f64::max/min drop
                    // (an all-NaN prefix stays NaN).
                    let mut acc = match op {
                        ScanOp::Sum => -0.0,
                        ScanOp::Prod => 1.0,
                        ScanOp::Max | ScanOp::Min => f64::NAN,
                    };
                    for j in 0..n {
                        let e = &mut v[at(o, j, i)];
                        acc = match op {
                            ScanOp::Sum => acc + *e,
                            ScanOp::Prod => acc * *e,
                            ScanOp::Max => acc.max(*e),
                            ScanOp::Min => acc.min(*e),
                        };
                        *e = round_to(dtype, acc);
                    }
                }
                Data::I(v) => {
                    let mut acc = v[at(o, 0, i)];
                    for j in 1..n {
                        let e = &mut v[at(o, j, i)];
                        acc = match op {
                            ScanOp::Sum => wrap(dtype, acc.wrapping_add(*e)),
                            ScanOp::Prod => wrap(dtype, acc.wrapping_mul(*e)),
                            ScanOp::Max if int_value(dtype, *e) > int_value(dtype, acc) => *e,
                            ScanOp::Min if int_value(dtype, *e) < int_value(dtype, acc) => *e,
                            ScanOp::Max | ScanOp::Min => acc,
                        };
                        *e = acc;
                    }
                }
            }
        }
    }
    Ok(Tile { dtype, shape: shape.to_vec(), data })
}

/// `join(a, b)`: element `[c…, k]` is `a[c…]` for `k = 0`, `b[c…]` for `k = 1`.
/// `slice axis, start`: the elements `start..start + shape[axis]` along `axis`.
pub(super) fn slice(axis: usize, start: usize, x: &Tile, dtype: DType, shape: &[i64]) -> Result<Tile> {
    same_dtype(x, dtype)?;
    let (outer, n, inner) = split_axis(x, axis)?;
    let len = shape.get(axis).copied().unwrap_or(0).max(0) as usize;
    let mut want = x.shape.clone();
    want[axis] = len as i64;
    if want != shape || start.checked_add(len).is_none_or(|end| end > n) {
        return Err(internal(format!("slice {start}.. of axis {axis} of {:?} into {shape:?}", x.shape)));
    }
    fn pick<T: Copy>(v: &[T], outer: usize, n: usize, inner: usize, start: usize, len: usize) -> Vec<T> {
        (0..outer).flat_map(|o| v[(o * n + start) * inner..(o * n + start + len) * inner].iter().copied()).collect()
    }
    let data = match &x.data {
        Data::F(v) => Data::F(pick(v, outer, n, inner, start, len)),
        Data::I(v) => Data::I(pick(v, outer, n, inner, start, len)),
    };
    Ok(Tile { dtype, shape: shape.to_vec(), data })
}

pub(super) fn join(a: &Tile, b: &Tile, dtype: DType, shape: &[i64]) -> Result<Tile> {
    same_dtype(a, dtype)?;
    same_dtype(b, dtype)?;
    let mut want = a.shape.clone();
    want.push(2);
    if a.shape != b.shape || want != shape {
        return Err(internal(format!("join of {:?} and {:?} into {shape:?}", a.shape, b.shape)));
    }
    fn interleave<T: Copy>(x: &[T], y: &[T]) -> Vec<T> {
        x.iter().zip(y).flat_map(|(&p, &q)| [p, q]).collect()
    }
    let data = match (&a.data, &b.data) {
        (Data::F(x), Data::F(y)) => Data::F(interleave(x, y)),
        (Data::I(x), Data::I(y)) => Data::I(interleave(x, y)),
        _ => return Err(internal("operand data does not match its dtype")),
    };
    Ok(Tile { dtype, shape: shape.to_vec(), data })
}

impl Interp<'_> {
    /// `split x`: the elements with last index 0, then those with last index 1.
    pub(super) fn split(&self, data: &OpData<OpKind>) -> Result<Vec<Val>> {
        let [x] = data.operands[..] else { return Err(internal("split takes one operand")) };
        let x = self.tile(x)?;
        let [r0, r1] = data.results[..] else { return Err(internal("split has two results")) };
        let (t0, t1) = (self.ty(r0)?.clone(), self.ty(r1)?.clone());
        let Type::Tile { dtype, shape } = t0.clone() else { return Err(internal("split into a tensor")) };
        let mut want = shape.clone();
        want.push(2);
        if t0 != t1 || x.shape != want {
            return Err(internal(format!("split of {:?} into {t0} and {t1}", x.shape)));
        }
        same_dtype(&x, dtype)?;
        let half = |k: usize| match &x.data {
            Data::F(v) => Data::F(v.iter().skip(k).step_by(2).copied().collect()),
            Data::I(v) => Data::I(v.iter().skip(k).step_by(2).copied().collect()),
        };
        Ok((0..2).map(|k| Val::Tile(Rc::new(Tile { dtype, shape: shape.clone(), data: half(k) }))).collect())
    }
}
