//! The semantics of each non-control-flow op of the tile IR.
//!
//! Rules (the language's reference semantics):
//! - float arithmetic computes in f64 and rounds to the result dtype once per op;
//! - integer arithmetic wraps to the width; division and remainder truncate toward zero (as in C
//!   and PTX) and **division or remainder by zero gives 0** (the GPU's result for it is
//!   unspecified, so the reference picks a value instead of trapping); shift amounts are taken
//!   modulo the bit width; `shr` is arithmetic on signed types, logical on unsigned ones;
//! - float `min`/`max` ignore a NaN operand (IEEE maxNum, `f64::max`); comparisons with NaN are
//!   false except `ne`;
//! - reductions sum in f64 (in index order) and round once; `max`/`min` ignore NaN unless every
//!   element is NaN;
//! - `dot` computes `acc + Σ a·b` per output element in f64 (in `k` order) and rounds once to
//!   the accumulator's dtype; integer dots wrap;
//! - loads read `pad` outside the tensor (or from an empty view), stores drop those elements.

use super::race::Access;
use super::value::{self, Data, Elem, TensorRef, Tile, Val, cast_elem, is_unsigned, numel, round_to, wrap};
use super::{Arg, Interp, InterpError, Result, internal, math};
use crate::dtype::DType;
use crate::ir::OpData;
use crate::tir::{BinaryOp, CmpOp, Lit, OpKind, ReduceOp, Type, UnaryOp};
use std::rc::Rc;

/// Tiles larger than this are refused (as malformed IR) instead of exhausting memory: real
/// tiles have at most a few hundred thousand elements.
const MAX_TILE_ELEMENTS: usize = 1 << 26;

impl Interp<'_> {
    /// Computes the results of `op` (none for `store`, one for every other op).
    pub(super) fn compute(&mut self, data: &OpData<OpKind>) -> Result<Vec<Val>> {
        match &data.kind {
            OpKind::Store | OpKind::Scatter | OpKind::Atomic(_) | OpKind::Print(_) | OpKind::Assert(_) => {
                if !data.results.is_empty() {
                    return Err(internal(format!("{} has results", data.kind.mnemonic())));
                }
                match &data.kind {
                    OpKind::Store => self.store(&data.operands)?,
                    OpKind::Print(f) => self.print(f, &data.operands)?,
                    OpKind::Assert(m) => self.assert(m, &data.operands)?,
                    kind => self.scatter(kind, &data.operands)?,
                }
                return Ok(vec![]);
            }
            OpKind::Split => return self.split(data),
            _ => {}
        }
        let [res] = data.results[..] else {
            return Err(internal(format!("expected one result, found {}", data.results.len())));
        };
        let rty = self.ty(res)?.clone();
        let (dtype, shape) = match rty {
            Type::Tensor { rank, .. } => {
                return match data.kind {
                    OpKind::View => Ok(vec![self.view(&data.operands, rank)?]),
                    _ => Err(internal(format!("result type {rty} is not a tile"))),
                };
            }
            Type::Tile { dtype, shape } => (dtype, shape),
        };
        if numel(&shape) > MAX_TILE_ELEMENTS {
            return Err(internal(format!("a tile of shape {shape:?} is too large to interpret")));
        }
        let ops = &data.operands;
        let n_operands = |n: usize| -> Result<()> {
            if ops.len() == n { Ok(()) } else { Err(internal(format!("expected {n} operands, found {}", ops.len()))) }
        };
        let tile = match &data.kind {
            OpKind::Const(l) => {
                n_operands(0)?;
                let e = match *l {
                    Lit::Int(v) => cast_elem(DType::I64, dtype, Elem::I(v)),
                    Lit::Float(f) => cast_elem(DType::F64, dtype, Elem::F(f)),
                    Lit::Bool(b) => cast_elem(DType::Bool, dtype, Elem::I(b as i64)),
                };
                Tile::filled(dtype, &shape, e)
            }
            OpKind::ProgramId(axis) | OpKind::NumPrograms(axis) => {
                n_operands(0)?;
                let a = *axis as usize;
                let src = if matches!(data.kind, OpKind::ProgramId(_)) { self.program } else { self.grid };
                let v = *src.get(a).ok_or_else(|| internal(format!("grid axis {a} out of range")))?;
                int_tile(dtype, &shape, |_| v as i64)?
            }
            OpKind::Arange(n) => {
                n_operands(0)?;
                if shape != [*n] {
                    return Err(internal(format!("arange {n} has shape {shape:?}")));
                }
                int_tile(dtype, &shape, |i| i as i64)?
            }
            OpKind::Dim(axis) => {
                n_operands(1)?;
                let t = self.tensor(ops[0])?;
                let d = *t.shape.get(*axis as usize).ok_or_else(|| internal(format!("axis {axis} of a rank-{} tensor", t.shape.len())))?;
                let d = if t.empty { 0 } else { d };
                int_tile(dtype, &shape, |_| d)?
            }
            OpKind::Splat => {
                n_operands(1)?;
                let s = self.tile(ops[0])?;
                same_dtype(&s, dtype)?;
                let e = s.elem().filter(|_| s.shape.is_empty()).ok_or_else(|| internal("splat of a non-scalar"))?;
                Tile::filled(dtype, &shape, e)
            }
            OpKind::Broadcast => {
                n_operands(1)?;
                broadcast(&*self.tile(ops[0])?, dtype, &shape)?
            }
            OpKind::ExpandDims(axis) => {
                n_operands(1)?;
                let x = self.tile(ops[0])?;
                let mut want = x.shape.clone();
                if *axis as usize > want.len() {
                    return Err(internal(format!("expand_dims axis {axis} of rank {}", want.len())));
                }
                want.insert(*axis as usize, 1);
                if want != shape {
                    return Err(internal(format!("expand_dims of {:?} at {axis} has shape {shape:?}", x.shape)));
                }
                same_dtype(&x, dtype)?;
                Tile { dtype, shape, data: x.data.clone() }
            }
            OpKind::Reshape => {
                n_operands(1)?;
                let x = self.tile(ops[0])?;
                same_dtype(&x, dtype)?;
                if numel(&x.shape) != numel(&shape) {
                    return Err(internal(format!("reshape of {:?} to {shape:?}", x.shape)));
                }
                Tile { dtype, shape, data: x.data.clone() }
            }
            OpKind::Permute(perm) => {
                n_operands(1)?;
                permute(&*self.tile(ops[0])?, perm, dtype, &shape)?
            }
            OpKind::Binary(b) => {
                n_operands(2)?;
                let (x, y) = (self.tile(ops[0])?, self.tile(ops[1])?);
                binary(*b, &x, &y, dtype, &shape)?
            }
            OpKind::Cmp(c) => {
                n_operands(2)?;
                let (x, y) = (self.tile(ops[0])?, self.tile(ops[1])?);
                compare(*c, &x, &y, dtype, &shape)?
            }
            OpKind::Unary(u) => {
                n_operands(1)?;
                unary(*u, &*self.tile(ops[0])?, dtype, &shape)?
            }
            OpKind::Select => {
                n_operands(3)?;
                let (c, a, b) = (self.tile(ops[0])?, self.tile(ops[1])?, self.tile(ops[2])?);
                select(&c, &a, &b, dtype, &shape)?
            }
            OpKind::Fma => {
                n_operands(3)?;
                let (a, b, c) = (self.tile(ops[0])?, self.tile(ops[1])?, self.tile(ops[2])?);
                fma(&a, &b, &c, dtype, &shape)?
            }
            OpKind::Cast => {
                n_operands(1)?;
                let x = self.tile(ops[0])?;
                if x.shape != shape {
                    return Err(internal(format!("cast of {:?} to {shape:?}", x.shape)));
                }
                let from = x.dtype;
                let data = match (&x.data, dtype.is_float()) {
                    (Data::F(v), true) => Data::F(v.iter().map(|&f| round_to(dtype, f)).collect()),
                    (Data::F(v), false) => Data::I(v.iter().map(|&f| value::float_to_int(dtype, f)).collect()),
                    (Data::I(v), true) => Data::F(v.iter().map(|&i| value::int_to_float(from, dtype, i)).collect()),
                    (Data::I(v), false) => Data::I(v.iter().map(|&i| value::int_to_int(dtype, i)).collect()),
                };
                Tile { dtype, shape, data }
            }
            OpKind::Reduce(r, axis) => {
                n_operands(1)?;
                reduce(*r, *axis as usize, &*self.tile(ops[0])?, dtype, &shape)?
            }
            OpKind::Dot => {
                n_operands(3)?;
                let (a, b, acc) = (self.tile(ops[0])?, self.tile(ops[1])?, self.tile(ops[2])?);
                dot(&a, &b, &acc, dtype, &shape)?
            }
            OpKind::Load => self.load(ops, dtype, &shape)?,
            OpKind::Gather => self.gather(ops, dtype, &shape)?,
            OpKind::ArgReduce(a, axis) => {
                n_operands(1)?;
                super::shape::arg_reduce(*a, *axis as usize, &*self.tile(ops[0])?, dtype, &shape)?
            }
            OpKind::Scan(sc, axis) => {
                n_operands(1)?;
                super::shape::scan(*sc, *axis as usize, &*self.tile(ops[0])?, dtype, &shape)?
            }
            OpKind::Slice(axis, start) => {
                n_operands(1)?;
                super::shape::slice(*axis as usize, *start as usize, &*self.tile(ops[0])?, dtype, &shape)?
            }
            OpKind::Join => {
                n_operands(2)?;
                super::shape::join(&*self.tile(ops[0])?, &*self.tile(ops[1])?, dtype, &shape)?
            }
            OpKind::View => return Err(internal("view with a tile result")),
            OpKind::Store
            | OpKind::Scatter
            | OpKind::Atomic(_)
            | OpKind::Print(_)
            | OpKind::Assert(_)
            | OpKind::Split
            | OpKind::For
            | OpKind::ScanFn(_)
            | OpKind::If
            | OpKind::While
            | OpKind::Return
            | OpKind::Yield => return Err(internal("unexpected control op")),
        };
        Ok(vec![Val::Tile(Rc::new(tile))])
    }

    /// `view t, i0, …`: fixes the leading indices. An index out of range gives an empty view.
    fn view(&self, ops: &[crate::ir::Value], rank: usize) -> Result<Val> {
        let (&t, idx) = ops.split_first().ok_or_else(|| internal("view without a tensor"))?;
        let t = self.tensor(t)?;
        if idx.len() > t.shape.len() || t.shape.len() - idx.len() != rank {
            return Err(internal(format!("view of a rank-{} tensor at {} indices has rank {rank}", t.shape.len(), idx.len())));
        }
        let mut v = (*t).clone();
        for (j, &i) in idx.iter().enumerate() {
            let i = self.int_scalar(i)?;
            if !(0..t.shape[j]).contains(&i) {
                v.empty = true;
            }
            v.offset = v.offset.wrapping_add(i.wrapping_mul(t.strides[j]));
        }
        v.shape.drain(..idx.len());
        v.strides.drain(..idx.len());
        Ok(Val::Tensor(Rc::new(v)))
    }

    /// `load t, o0, …, pad`: element `c` of the result is `t[o + c]`, or `pad` out of range.
    fn load(&mut self, ops: &[crate::ir::Value], dtype: DType, shape: &[i64]) -> Result<Tile> {
        let t = self.tensor(*ops.first().ok_or_else(|| internal("load without a tensor"))?)?;
        let r = t.shape.len();
        if ops.len() != r + 2 || shape.len() != r {
            return Err(internal(format!("load from a rank-{r} tensor with {} operands into shape {shape:?}", ops.len())));
        }
        let offsets = ops[1..=r].iter().map(|&v| self.int_scalar(v)).collect::<Result<Vec<_>>>()?;
        let pad = self.tile(ops[r + 1])?;
        same_dtype(&pad, dtype)?;
        let pad = pad.elem().ok_or_else(|| internal("the pad is not a scalar"))?;
        let mut out = Tile::filled(dtype, shape, pad);
        let host = host_of(self.args, &t, dtype)?;
        let (mut races, pid) = (self.races.as_mut().filter(|_| t.mutable), self.pid);
        for_each_in_range(&t, &offsets, shape, |flat, dst| {
            let i = host_index(host, flat)?;
            if let Some(r) = races.as_mut() {
                r.access(t.arg, &host.shape, i, pid, Access::Read)?;
            }
            match &mut out.data {
                Data::F(v) => v[dst] = host.get_f64(i),
                Data::I(v) => v[dst] = host.get_i64(i),
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// `store t, o0, …, x`: writes the in-range elements of `x` at `t[o + c]`.
    fn store(&mut self, ops: &[crate::ir::Value]) -> Result<()> {
        let tv = *ops.first().ok_or_else(|| internal("store without a tensor"))?;
        let t = self.tensor(tv)?;
        let r = t.shape.len();
        if ops.len() != r + 2 {
            return Err(internal(format!("store to a rank-{r} tensor with {} operands", ops.len())));
        }
        let typed_mut = matches!(self.ty(tv)?, Type::Tensor { mutable: true, .. });
        if !typed_mut || !t.mutable {
            let param = self.k.params.get(t.arg).map(|p| p.name.clone()).unwrap_or_default();
            return Err(InterpError::ReadOnlyStore { program: self.program, param });
        }
        let offsets = ops[1..=r].iter().map(|&v| self.int_scalar(v)).collect::<Result<Vec<_>>>()?;
        let x = self.tile(ops[r + 1])?;
        if x.shape.len() != r {
            return Err(internal(format!("store of shape {:?} to a rank-{r} tensor", x.shape)));
        }
        self.host(&t, x.dtype)?;
        let Some(Arg::Tensor(host)) = self.args.get_mut(t.arg) else {
            return Err(internal("the stored tensor is not an argument"));
        };
        let (mut races, pid) = (self.races.as_mut(), self.pid);
        for_each_in_range(&t, &offsets, &x.shape, |flat, src| {
            let i = host_index(host, flat)?;
            if let Some(r) = races.as_mut() {
                r.access(t.arg, &host.shape, i, pid, Access::Write)?;
            }
            match &x.data {
                Data::F(v) => host.set_f64(i, v[src]),
                Data::I(v) => host.set_i64(i, v[src]),
            }
            Ok(())
        })
    }

    /// The host tensor behind `t`, checked to hold `dtype`.
    pub(super) fn host(&self, t: &TensorRef, dtype: DType) -> Result<&crate::host::HostTensor> {
        host_of(self.args, t, dtype)
    }
}

/// The host tensor behind `t` among `args`, checked to hold `dtype` (a function of the field, so
/// that the race shadows can be borrowed beside it).
pub(super) fn host_of<'h>(args: &'h [Arg], t: &TensorRef, dtype: DType) -> Result<&'h crate::host::HostTensor> {
    match args.get(t.arg) {
        Some(Arg::Tensor(h)) if h.dtype == dtype => Ok(h),
        Some(Arg::Tensor(h)) => Err(internal(format!("a {} tile with a {} tensor", dtype, h.dtype))),
        _ => Err(internal("the tensor is not an argument")),
    }
}

pub(super) fn host_index(h: &crate::host::HostTensor, flat: i64) -> Result<usize> {
    usize::try_from(flat).ok().filter(|&i| i < h.numel()).ok_or_else(|| internal(format!("element {flat} outside the tensor")))
}

/// Calls `f(flat tensor index, row-major tile index)` for each element of a tile of `shape`
/// placed at `offsets` in `t` that falls inside `t`. Only the in-range box is visited.
fn for_each_in_range(t: &TensorRef, offsets: &[i64], shape: &[i64], mut f: impl FnMut(i64, usize) -> Result<()>) -> Result<()> {
    if t.empty || numel(shape) == 0 {
        return Ok(());
    }
    let r = shape.len();
    // Per dimension, the tile coordinates whose tensor index lies in [0, size).
    let mut lo = vec![0i64; r];
    let mut hi = vec![0i64; r];
    for j in 0..r {
        lo[j] = offsets[j].saturating_neg().clamp(0, shape[j]);
        hi[j] = t.shape[j].saturating_sub(offsets[j]).clamp(lo[j], shape[j]);
        if lo[j] == hi[j] {
            return Ok(());
        }
    }
    let tile_strides = crate::tir::row_major(shape);
    let mut c = lo.clone();
    loop {
        let mut flat = t.offset;
        let mut dst = 0i64;
        for j in 0..r {
            flat += (offsets[j] + c[j]) * t.strides[j];
            dst += c[j] * tile_strides[j];
        }
        f(flat, dst as usize)?;
        // Advance the coordinate within the box, last dimension fastest.
        let mut j = r;
        loop {
            if j == 0 {
                return Ok(());
            }
            j -= 1;
            c[j] += 1;
            if c[j] < hi[j] {
                break;
            }
            c[j] = lo[j];
        }
    }
}

pub(super) fn same_dtype(t: &Tile, dtype: DType) -> Result<()> {
    if t.dtype == dtype { Ok(()) } else { Err(internal(format!("operand is {}, result is {dtype}", t.dtype))) }
}

pub(super) fn same_shape(t: &Tile, shape: &[i64]) -> Result<()> {
    if t.shape == shape { Ok(()) } else { Err(internal(format!("operand shape {:?}, result shape {shape:?}", t.shape))) }
}

/// An integer tile whose element `i` is `f(i)` wrapped to `dtype`.
fn int_tile(dtype: DType, shape: &[i64], f: impl Fn(usize) -> i64) -> Result<Tile> {
    if dtype.is_float() {
        return Err(internal(format!("{dtype} result for an integer op")));
    }
    let data = Data::I((0..numel(shape)).map(|i| wrap(dtype, f(i))).collect());
    Ok(Tile { dtype, shape: shape.to_vec(), data })
}

/// Gathers `src` into a tile of `shape`, element `c` read at `Σ c·strides` (strides may be 0 to
/// repeat, or permuted).
fn gather<T: Copy>(src: &[T], shape: &[i64], strides: &[i64]) -> Result<Vec<T>> {
    let n = numel(shape);
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Ok(out);
    }
    let r = shape.len();
    let mut c = vec![0i64; r];
    let mut off = 0i64;
    let get = |o: i64| usize::try_from(o).ok().and_then(|o| src.get(o).copied()).ok_or_else(|| internal("gather out of bounds"));
    if r == 0 {
        out.push(get(0)?);
        return Ok(out);
    }
    let (len, step) = (shape[r - 1], strides[r - 1]);
    loop {
        let mut o = off;
        for _ in 0..len {
            out.push(get(o)?);
            o += step;
        }
        let mut d = r - 1;
        loop {
            if d == 0 {
                return Ok(out);
            }
            d -= 1;
            c[d] += 1;
            off += strides[d];
            if c[d] < shape[d] {
                break;
            }
            off -= strides[d] * shape[d];
            c[d] = 0;
        }
    }
}

fn gather_data(d: &Data, shape: &[i64], strides: &[i64]) -> Result<Data> {
    Ok(match d {
        Data::F(v) => Data::F(gather(v, shape, strides)?),
        Data::I(v) => Data::I(gather(v, shape, strides)?),
    })
}

/// Numpy broadcasting: dimensions of 1 stretch (a lower-rank operand gains leading 1s).
fn broadcast(x: &Tile, dtype: DType, shape: &[i64]) -> Result<Tile> {
    same_dtype(x, dtype)?;
    if x.shape.len() > shape.len() {
        return Err(internal(format!("broadcast of {:?} to {shape:?}", x.shape)));
    }
    let lead = shape.len() - x.shape.len();
    let src_strides = crate::tir::row_major(&x.shape);
    let mut strides = vec![0i64; shape.len()];
    for (j, (&d, &s)) in x.shape.iter().zip(&src_strides).enumerate() {
        let want = shape[lead + j];
        if d == want {
            strides[lead + j] = s;
        } else if d != 1 {
            return Err(internal(format!("broadcast of {:?} to {shape:?}", x.shape)));
        }
    }
    Ok(Tile { dtype, shape: shape.to_vec(), data: gather_data(&x.data, shape, &strides)? })
}

/// Result dimension `i` is operand dimension `perm[i]`.
fn permute(x: &Tile, perm: &[u32], dtype: DType, shape: &[i64]) -> Result<Tile> {
    same_dtype(x, dtype)?;
    let r = x.shape.len();
    let mut seen = vec![false; r];
    for &p in perm {
        match seen.get_mut(p as usize) {
            Some(s) if !*s => *s = true,
            _ => return Err(internal(format!("{perm:?} is not a permutation of {r} axes"))),
        }
    }
    if perm.len() != r {
        return Err(internal(format!("{perm:?} is not a permutation of {r} axes")));
    }
    let want: Vec<i64> = perm.iter().map(|&p| x.shape[p as usize]).collect();
    if want != shape {
        return Err(internal(format!("permute {perm:?} of {:?} has shape {shape:?}", x.shape)));
    }
    let src_strides = crate::tir::row_major(&x.shape);
    let strides: Vec<i64> = perm.iter().map(|&p| src_strides[p as usize]).collect();
    Ok(Tile { dtype, shape: shape.to_vec(), data: gather_data(&x.data, shape, &strides)? })
}

/// Checks an elementwise op's operands against its result and returns their data.
fn elementwise<'t>(x: &'t Tile, y: &'t Tile, shape: &[i64]) -> Result<(&'t Data, &'t Data)> {
    same_shape(x, shape)?;
    same_shape(y, shape)?;
    if x.dtype != y.dtype {
        return Err(internal(format!("operands of different dtypes {} and {}", x.dtype, y.dtype)));
    }
    Ok((&x.data, &y.data))
}

fn zip_f(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
}

fn zip_i(a: &[i64], b: &[i64], f: impl Fn(i64, i64) -> i64) -> Vec<i64> {
    a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
}

fn binary(op: BinaryOp, x: &Tile, y: &Tile, dtype: DType, shape: &[i64]) -> Result<Tile> {
    same_dtype(x, dtype)?;
    let data = match elementwise(x, y, shape)? {
        (Data::F(a), Data::F(b)) => {
            let r = |v: f64| round_to(dtype, v);
            Data::F(match op {
                BinaryOp::Add => zip_f(a, b, |x, y| r(x + y)),
                BinaryOp::Sub => zip_f(a, b, |x, y| r(x - y)),
                BinaryOp::Mul => zip_f(a, b, |x, y| r(x * y)),
                BinaryOp::Div => zip_f(a, b, |x, y| r(x / y)),
                // C's fmod: truncated, with the sign of the dividend (exact, so no rounding).
                BinaryOp::Rem => zip_f(a, b, |x, y| r(x % y)),
                BinaryOp::Min => zip_f(a, b, f64::min),
                BinaryOp::Max => zip_f(a, b, f64::max),
                _ => return Err(internal(format!("`{}` on floats", op.name()))),
            })
        }
        (Data::I(a), Data::I(b)) => {
            let w = |v: i64| wrap(dtype, v);
            let uns = is_unsigned(dtype);
            let mask = dtype.bits() as i64 - 1;
            Data::I(match op {
                BinaryOp::Add => zip_i(a, b, |x, y| w(x.wrapping_add(y))),
                BinaryOp::Sub => zip_i(a, b, |x, y| w(x.wrapping_sub(y))),
                BinaryOp::Mul => zip_i(a, b, |x, y| w(x.wrapping_mul(y))),
                BinaryOp::Div => zip_i(a, b, |x, y| match (y, uns) {
                    (0, _) => 0,
                    (_, true) => w(((x as u64) / (y as u64)) as i64),
                    (_, false) => w(x.wrapping_div(y)),
                }),
                BinaryOp::Rem => zip_i(a, b, |x, y| match (y, uns) {
                    (0, _) => 0,
                    (_, true) => w(((x as u64) % (y as u64)) as i64),
                    (_, false) => w(x.wrapping_rem(y)),
                }),
                BinaryOp::Min if uns => zip_i(a, b, |x, y| (x as u64).min(y as u64) as i64),
                BinaryOp::Max if uns => zip_i(a, b, |x, y| (x as u64).max(y as u64) as i64),
                BinaryOp::Min => zip_i(a, b, i64::min),
                BinaryOp::Max => zip_i(a, b, i64::max),
                BinaryOp::And => zip_i(a, b, |x, y| x & y),
                BinaryOp::Or => zip_i(a, b, |x, y| x | y),
                BinaryOp::Xor => zip_i(a, b, |x, y| w(x ^ y)),
                BinaryOp::Shl => zip_i(a, b, |x, y| w(x.wrapping_shl((y & mask) as u32))),
                // Unsigned values are stored zero-extended (u64 as its bits), signed ones
                // sign-extended: a logical or arithmetic shift of the i64 is the dtype's shift.
                BinaryOp::Shr if uns => zip_i(a, b, |x, y| w(((x as u64) >> (y & mask)) as i64)),
                BinaryOp::Shr => zip_i(a, b, |x, y| x >> (y & mask)),
            })
        }
        _ => return Err(internal("operand data does not match its dtype")),
    };
    Ok(Tile { dtype, shape: shape.to_vec(), data })
}

fn compare(op: CmpOp, x: &Tile, y: &Tile, dtype: DType, shape: &[i64]) -> Result<Tile> {
    if dtype != DType::Bool {
        return Err(internal(format!("comparison with a {dtype} result")));
    }
    let test = |o: std::cmp::Ordering| match op {
        CmpOp::Eq => o.is_eq(),
        CmpOp::Ne => o.is_ne(),
        CmpOp::Lt => o.is_lt(),
        CmpOp::Le => o.is_le(),
        CmpOp::Gt => o.is_gt(),
        CmpOp::Ge => o.is_ge(),
    };
    let uns = is_unsigned(x.dtype);
    let data: Vec<i64> = match elementwise(x, y, shape)? {
        // Unordered (NaN) compares false, except `ne`.
        (Data::F(a), Data::F(b)) => a.iter().zip(b).map(|(p, q)| p.partial_cmp(q).map_or(op == CmpOp::Ne, test) as i64).collect(),
        (Data::I(a), Data::I(b)) if uns => a.iter().zip(b).map(|(&p, &q)| test((p as u64).cmp(&(q as u64))) as i64).collect(),
        (Data::I(a), Data::I(b)) => a.iter().zip(b).map(|(p, q)| test(p.cmp(q)) as i64).collect(),
        _ => return Err(internal("operand data does not match its dtype")),
    };
    Ok(Tile { dtype, shape: shape.to_vec(), data: Data::I(data) })
}

fn unary(op: UnaryOp, x: &Tile, dtype: DType, shape: &[i64]) -> Result<Tile> {
    same_dtype(x, dtype)?;
    same_shape(x, shape)?;
    let data = match &x.data {
        Data::F(a) => {
            let f: fn(f64) -> f64 = match op {
                UnaryOp::Neg => |v| -v,
                UnaryOp::Abs => f64::abs,
                UnaryOp::Exp => f64::exp,
                UnaryOp::Exp2 => f64::exp2,
                UnaryOp::Log => f64::ln,
                UnaryOp::Log2 => f64::log2,
                UnaryOp::Sqrt => f64::sqrt,
                UnaryOp::Rsqrt => |v| 1.0 / v.sqrt(),
                UnaryOp::Sin => f64::sin,
                UnaryOp::Cos => f64::cos,
                UnaryOp::Tanh => f64::tanh,
                UnaryOp::Sigmoid => |v| 1.0 / (1.0 + (-v).exp()),
                UnaryOp::Erf => math::erf,
                UnaryOp::Floor => f64::floor,
                UnaryOp::Ceil => f64::ceil,
                UnaryOp::Not => return Err(internal("`not` on floats")),
            };
            // `exp` and `exp2` are the GPU's `ex2.approx.ftz`: subnormal results flush to 0.
            let flush = matches!(op, UnaryOp::Exp | UnaryOp::Exp2);
            let f = |v: f64| if flush { crate::dtype::flush_exp_result(dtype, f(v)) } else { f(v) };
            Data::F(a.iter().map(|&v| round_to(dtype, f(v))).collect())
        }
        Data::I(a) => {
            let w = |v: i64| wrap(dtype, v);
            Data::I(match op {
                UnaryOp::Neg => a.iter().map(|&v| w(v.wrapping_neg())).collect(),
                UnaryOp::Not if dtype == DType::Bool => a.iter().map(|&v| (v == 0) as i64).collect(),
                UnaryOp::Not => a.iter().map(|&v| w(!v)).collect(),
                UnaryOp::Abs if is_unsigned(dtype) => a.clone(),
                UnaryOp::Abs => a.iter().map(|&v| w(v.wrapping_abs())).collect(),
                UnaryOp::Floor | UnaryOp::Ceil => a.clone(),
                _ => return Err(internal(format!("`{}` on integers", op.name()))),
            })
        }
    };
    Ok(Tile { dtype, shape: shape.to_vec(), data })
}

/// `a · b + c` rounded once: in f64 for f64, else in f32 (the GPU's `fma.rn.f32`), then
/// rounded to the type.
fn fma(a: &Tile, b: &Tile, c: &Tile, dtype: DType, shape: &[i64]) -> Result<Tile> {
    same_dtype(a, dtype)?;
    same_shape(c, shape)?;
    let (Data::F(x), Data::F(y)) = elementwise(a, b, shape)? else { return Err(internal("fma of non-floats")) };
    let Data::F(z) = &c.data else { return Err(internal("fma of non-floats")) };
    let one = |p: f64, q: f64, r: f64| match dtype {
        DType::F64 => p.mul_add(q, r),
        _ => round_to(dtype, f64::from((p as f32).mul_add(q as f32, r as f32))),
    };
    let data = x.iter().zip(y).zip(z).map(|((&p, &q), &r)| one(p, q, r)).collect();
    Ok(Tile { dtype, shape: shape.to_vec(), data: Data::F(data) })
}

fn select(c: &Tile, a: &Tile, b: &Tile, dtype: DType, shape: &[i64]) -> Result<Tile> {
    same_dtype(a, dtype)?;
    same_shape(c, shape)?;
    let Data::I(cv) = &c.data else {
        return Err(internal("select condition is not bool"));
    };
    let data = match elementwise(a, b, shape)? {
        (Data::F(x), Data::F(y)) => Data::F(cv.iter().zip(x.iter().zip(y)).map(|(&c, (&p, &q))| if c != 0 { p } else { q }).collect()),
        (Data::I(x), Data::I(y)) => Data::I(cv.iter().zip(x.iter().zip(y)).map(|(&c, (&p, &q))| if c != 0 { p } else { q }).collect()),
        _ => return Err(internal("operand data does not match its dtype")),
    };
    Ok(Tile { dtype, shape: shape.to_vec(), data })
}

fn reduce(op: ReduceOp, axis: usize, x: &Tile, dtype: DType, shape: &[i64]) -> Result<Tile> {
    same_dtype(x, dtype)?;
    if axis >= x.shape.len() {
        return Err(internal(format!("reduce axis {axis} of rank {}", x.shape.len())));
    }
    let mut want = x.shape.clone();
    let n = want.remove(axis).max(0) as usize;
    if want != shape {
        return Err(internal(format!("reduce of {:?} over {axis} has shape {shape:?}", x.shape)));
    }
    let outer = numel(&x.shape[..axis]);
    let inner = numel(&x.shape[axis + 1..]);
    // Element (o, j, i) of the operand, viewed as [outer, n, inner].
    let at = |o: usize, j: usize, i: usize| (o * n + j) * inner + i;
    let data = match &x.data {
        Data::F(v) => {
            let mut out = Vec::with_capacity(outer * inner);
            for o in 0..outer {
                for i in 0..inner {
                    let r = match op {
                        // From -0.0, the additive identity: a sum of -0.0s is -0.0, as on the GPU
                        // (which starts from the first element).
                        ReduceOp::Sum => (0..n).fold(-0.0, |s, j| s + v[at(o, j, i)]),
                        // Folding from NaN with maxNum ignores NaNs and gives NaN only if all are.
                        _ if n == 0 => {
                            if op == ReduceOp::Max {
                                f64::NEG_INFINITY
                            } else {
                                f64::INFINITY
                            }
                        }
                        ReduceOp::Max => (0..n).fold(f64::NAN, |s, j| s.max(v[at(o, j, i)])),
                        ReduceOp::Min => (0..n).fold(f64::NAN, |s, j| s.min(v[at(o, j, i)])),
                    };
                    out.push(round_to(dtype, r));
                }
            }
            Data::F(out)
        }
        Data::I(v) => {
            let uns = is_unsigned(dtype);
            let key = |e: i64| if uns { e as u64 as i128 } else { e as i128 };
            let mut out = Vec::with_capacity(outer * inner);
            for o in 0..outer {
                for i in 0..inner {
                    let elems = (0..n).map(|j| v[at(o, j, i)]);
                    let r = match op {
                        ReduceOp::Sum => wrap(dtype, elems.fold(0i64, i64::wrapping_add)),
                        ReduceOp::Max => elems.max_by_key(|&e| key(e)).unwrap_or(0),
                        ReduceOp::Min => elems.min_by_key(|&e| key(e)).unwrap_or(0),
                    };
                    out.push(r);
                }
            }
            Data::I(out)
        }
    };
    Ok(Tile { dtype, shape: shape.to_vec(), data })
}

/// `acc + a · b`, per output element in f64 (integers: wrapping i64), rounded once.
fn dot(a: &Tile, b: &Tile, acc: &Tile, dtype: DType, shape: &[i64]) -> Result<Tile> {
    same_dtype(acc, dtype)?;
    same_shape(acc, shape)?;
    let (&[m, k], &[k2, n]) = (&a.shape[..], &b.shape[..]) else {
        return Err(internal(format!("dot of shapes {:?} and {:?}", a.shape, b.shape)));
    };
    if k != k2 || shape != [m, n] || a.dtype != b.dtype {
        return Err(internal(format!("dot of {}{:?} and {}{:?} into {dtype}{shape:?}", a.dtype, a.shape, b.dtype, b.shape)));
    }
    if m < 0 || k < 0 || n < 0 {
        return Err(internal(format!("dot of negative shape {m}x{k}x{n}")));
    }
    let (m, k, n) = (m as usize, k as usize, n as usize);
    let data = match &acc.data {
        Data::F(c) => {
            let to_f = |d: &Data| -> Vec<f64> {
                match d {
                    Data::F(v) => v.clone(),
                    Data::I(v) => v.iter().map(|&i| value::int_value(a.dtype, i) as f64).collect(),
                }
            };
            let (av, bv) = (to_f(&a.data), to_f(&b.data));
            let mut out = c.clone();
            // i-k-j order keeps each output element's sum in k order while reading rows of b.
            for (i, row) in out.chunks_exact_mut(n.max(1)).enumerate().take(m) {
                for (kk, &x) in av[i * k..(i + 1) * k].iter().enumerate() {
                    for (o, &y) in row.iter_mut().zip(&bv[kk * n..(kk + 1) * n]) {
                        *o += x * y;
                    }
                }
            }
            out.iter_mut().for_each(|v| *v = round_to(dtype, *v));
            Data::F(out)
        }
        Data::I(c) => {
            let (Data::I(av), Data::I(bv)) = (&a.data, &b.data) else {
                return Err(internal("a float dot into an integer accumulator"));
            };
            let mut out = c.clone();
            for (i, row) in out.chunks_exact_mut(n.max(1)).enumerate().take(m) {
                for (kk, &x) in av[i * k..(i + 1) * k].iter().enumerate() {
                    for (o, &y) in row.iter_mut().zip(&bv[kk * n..(kk + 1) * n]) {
                        *o = o.wrapping_add(x.wrapping_mul(y));
                    }
                }
            }
            out.iter_mut().for_each(|v| *v = wrap(dtype, *v));
            Data::I(out)
        }
    };
    Ok(Tile { dtype, shape: shape.to_vec(), data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(op: UnaryOp, dtype: DType, xs: &[f64]) -> Vec<f64> {
        let x = Tile { dtype, shape: vec![xs.len() as i64], data: Data::F(xs.to_vec()) };
        match unary(op, &x, dtype, &x.shape).map(|t| t.data) {
            Ok(Data::F(v)) => v,
            other => panic!("{other:?}"),
        }
    }

    /// `exp` and `exp2` below f64 are the GPU's `ex2.approx.ftz`: results under 2^-126 are 0.
    #[test]
    fn exp_results_below_f32_normals_flush_to_zero() {
        let tiny = 2f64.powi(-126);
        assert_eq!(apply(UnaryOp::Exp2, DType::F32, &[-130.0, -126.0, 0.0, -149.0]), [0.0, tiny, 1.0, 0.0]);
        assert_eq!(apply(UnaryOp::Exp2, DType::BF16, &[-127.0]), [0.0]);
        assert_eq!(apply(UnaryOp::Exp, DType::F32, &[-100.0, -87.0]), [0.0, round_to(DType::F32, (-87f64).exp())]);
        assert_eq!(apply(UnaryOp::Exp2, DType::F64, &[-130.0]), [2f64.powi(-130)]);
        assert_eq!(apply(UnaryOp::Log2, DType::F32, &[2f64.powi(-140)]), [-140.0]);
    }
}
