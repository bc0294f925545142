//! Indexed memory (`gather`, `scatter`, atomics) and the debugging ops (`print`, `assert`).
//!
//! Rules: an element whose mask is false, or one of whose indices is outside its dimension (or
//! whose tensor is an empty view), reads the pad and is never written. Scatters and atomics
//! apply their elements one at a time in row-major order, so with duplicate indices the last
//! scattered element wins and atomics see each other's results (the GPU's order is unspecified).
//! Atomic float adds round to the tensor's dtype after each element; `max`/`min` ignore NaN as
//! the elementwise `max`/`min` do.

use super::ops::{host_index, host_of, same_dtype};
use super::race::Access;
use super::value::{Data, TensorRef, Tile, int_value, is_unsigned, numel, round_to, wrap};
use super::{Arg, Interp, InterpError, Result, internal};
use crate::dtype::DType;
use crate::ir::Value;
use crate::tir::{AtomicOp, FormatPiece, OpKind, Type};
use std::rc::Rc;

impl Interp<'_> {
    /// The index tiles of an indexed access (one per dimension of `t`), checked against `shape`.
    fn index_tiles(&self, t: &TensorRef, ops: &[Value], shape: &[i64]) -> Result<Vec<Rc<Tile>>> {
        let idx = ops.iter().map(|&v| self.tile(v)).collect::<Result<Vec<_>>>()?;
        if idx.len() != t.shape.len() || idx.iter().any(|i| i.shape != shape || !matches!(i.data, Data::I(_))) {
            return Err(internal(format!("{} index tiles of shape {shape:?} expected for a rank-{} tensor", t.shape.len(), t.shape.len())));
        }
        Ok(idx)
    }

    /// The mask tile (bool of `shape`) as its elements.
    fn mask(&self, v: Value, shape: &[i64]) -> Result<Vec<i64>> {
        let m = self.tile(v)?;
        match &m.data {
            Data::I(d) if m.shape == shape && m.dtype == DType::Bool => Ok(d.clone()),
            _ => Err(internal(format!("the mask is {}{:?}, expected bool{shape:?}", m.dtype, m.shape))),
        }
    }

    /// `gather t, i0, …, mask, pad`.
    pub(super) fn gather(&mut self, ops: &[Value], dtype: DType, shape: &[i64]) -> Result<Tile> {
        let t = self.tensor(*ops.first().ok_or_else(|| internal("gather without a tensor"))?)?;
        let r = t.shape.len();
        if ops.len() != r + 3 {
            return Err(internal(format!("gather from a rank-{r} tensor with {} operands", ops.len())));
        }
        let idx = self.index_tiles(&t, &ops[1..=r], shape)?;
        let mask = self.mask(ops[r + 1], shape)?;
        let pad = self.tile(ops[r + 2])?;
        same_dtype(&pad, dtype)?;
        let pad = pad.elem().ok_or_else(|| internal("the pad is not a scalar"))?;
        let mut out = Tile::filled(dtype, shape, pad);
        let host = host_of(self.args, &t, dtype)?;
        let (mut races, pid) = (self.races.as_mut().filter(|_| t.mutable), self.pid);
        for (e, &m) in mask.iter().enumerate() {
            let Some(flat) = flat_index(&t, &idx, e).filter(|_| m != 0) else { continue };
            let i = host_index(host, flat)?;
            if let Some(r) = races.as_mut() {
                r.access(t.arg, &host.shape, i, pid, Access::Read)?;
            }
            match &mut out.data {
                Data::F(v) => v[e] = host.get_f64(i),
                Data::I(v) => v[e] = host.get_i64(i),
            }
        }
        Ok(out)
    }

    /// `scatter` and `atomic.*`: `t, i0, …, x, mask`.
    pub(super) fn scatter(&mut self, kind: &OpKind, ops: &[Value]) -> Result<()> {
        let tv = *ops.first().ok_or_else(|| internal("scatter without a tensor"))?;
        let t = self.tensor(tv)?;
        let r = t.shape.len();
        if ops.len() != r + 3 {
            return Err(internal(format!("{} to a rank-{r} tensor with {} operands", kind.mnemonic(), ops.len())));
        }
        if !matches!(self.ty(tv)?, Type::Tensor { mutable: true, .. }) || !t.mutable {
            let param = self.k.params.get(t.arg).map(|p| p.name.clone()).unwrap_or_default();
            return Err(InterpError::ReadOnlyStore { program: self.program, param });
        }
        let x = self.tile(ops[r + 1])?;
        let idx = self.index_tiles(&t, &ops[1..=r], &x.shape)?;
        let mask = self.mask(ops[r + 2], &x.shape)?;
        let dtype = x.dtype;
        self.host(&t, dtype)?;
        let Some(Arg::Tensor(host)) = self.args.get_mut(t.arg) else {
            return Err(internal("the scattered tensor is not an argument"));
        };
        let (mut races, pid) = (self.races.as_mut(), self.pid);
        let access = if matches!(kind, OpKind::Scatter) { Access::Write } else { Access::Atomic };
        for (e, &m) in mask.iter().enumerate() {
            let Some(flat) = flat_index(&t, &idx, e).filter(|_| m != 0) else { continue };
            let i = host_index(host, flat)?;
            if let Some(r) = races.as_mut() {
                r.access(t.arg, &host.shape, i, pid, access)?;
            }
            match (&x.data, kind) {
                (Data::F(v), OpKind::Scatter) => host.set_f64(i, v[e]),
                (Data::I(v), OpKind::Scatter) => host.set_i64(i, v[e]),
                (Data::F(v), OpKind::Atomic(a)) => {
                    let old = host.get_f64(i);
                    let new = match a {
                        AtomicOp::Add => round_to(dtype, old + v[e]),
                        AtomicOp::Max => old.max(v[e]),
                        AtomicOp::Min => old.min(v[e]),
                    };
                    host.set_f64(i, new);
                }
                (Data::I(v), OpKind::Atomic(a)) => {
                    let (old, val) = (host.get_i64(i), v[e]);
                    let key = |x: i64| int_value(dtype, x);
                    let new = match a {
                        AtomicOp::Add => wrap(dtype, old.wrapping_add(val)),
                        AtomicOp::Max if key(val) > key(old) => val,
                        AtomicOp::Min if key(val) < key(old) => val,
                        _ => old,
                    };
                    host.set_i64(i, new);
                }
                _ => return Err(internal(format!("`{}` is not an indexed write", kind.mnemonic()))),
            }
        }
        Ok(())
    }

    /// `print "fmt", x…`: one line (per element of the operands' common shape).
    pub(super) fn print(&mut self, fmt: &str, ops: &[Value]) -> Result<()> {
        let pieces = crate::tir::parse_format(fmt).map_err(internal)?;
        let vals = ops.iter().map(|&v| self.tile(v)).collect::<Result<Vec<_>>>()?;
        let shape = vals.first().map(|t| t.shape.clone()).unwrap_or_default();
        if vals.iter().any(|t| t.shape != shape) {
            return Err(internal("print operands of different shapes"));
        }
        let [x, y, z] = self.program;
        let mut text = String::new();
        for e in 0..numel(&shape) {
            text.push_str(&format!("program ({x}, {y}, {z})"));
            if !shape.is_empty() {
                let coords: Vec<String> = unravel(e, &shape).iter().map(|c| c.to_string()).collect();
                text.push_str(&format!(" [{}]", coords.join(", ")));
            }
            text.push_str(": ");
            let mut next = vals.iter();
            for p in &pieces {
                match p {
                    FormatPiece::Text(s) => text.push_str(s),
                    FormatPiece::Value => {
                        let t = next.next().ok_or_else(|| internal("fewer print operands than `{}`"))?;
                        text.push_str(&format_elem(t, e));
                    }
                }
            }
            text.push('\n');
        }
        self.out
            .write_all(text.as_bytes())
            .and_then(|_| self.out.flush())
            .map_err(|e| InterpError::Output { program: self.program, error: e.to_string() })
    }

    /// `assert "msg", c`: fails at the first false element (row-major).
    pub(super) fn assert(&self, message: &str, ops: &[Value]) -> Result<()> {
        let [c] = ops else { return Err(internal("assert takes one operand")) };
        let t = self.tile(*c)?;
        let Data::I(v) = &t.data else { return Err(internal("assert of a float tile")) };
        match v.iter().position(|&x| x == 0) {
            None => Ok(()),
            Some(e) => Err(InterpError::Assert {
                program: self.program,
                message: message.to_string(),
                element: if t.shape.is_empty() { None } else { Some(unravel(e, &t.shape)) },
            }),
        }
    }
}

/// The flat element index of element `e` of an indexed access, or `None` when an index is out
/// of range (or the tensor is an empty view).
fn flat_index(t: &TensorRef, idx: &[Rc<Tile>], e: usize) -> Option<i64> {
    if t.empty {
        return None;
    }
    let mut flat = t.offset;
    for (j, tile) in idx.iter().enumerate() {
        let Data::I(v) = &tile.data else { return None };
        let i = *v.get(e)?;
        if !(0..t.shape[j]).contains(&i) {
            return None;
        }
        flat = flat.wrapping_add(i.wrapping_mul(t.strides[j]));
    }
    Some(flat)
}

/// The coordinates of row-major element `e` of `shape`.
pub(super) fn unravel(mut e: usize, shape: &[i64]) -> Vec<i64> {
    let mut c = vec![0; shape.len()];
    for j in (0..shape.len()).rev() {
        let d = shape[j].max(1) as usize;
        c[j] = (e % d) as i64;
        e /= d;
    }
    c
}

/// Element `e` of `t` as `print` shows it: integers in decimal, bools as `true`/`false`, floats
/// as C's `%g` (6 significant digits), which is what the GPU's `printf` writes.
fn format_elem(t: &Tile, e: usize) -> String {
    match (&t.data, t.dtype) {
        (Data::I(v), DType::Bool) => (v.get(e).copied().unwrap_or(0) != 0).to_string(),
        (Data::I(v), d) => {
            let x = v.get(e).copied().unwrap_or(0);
            if is_unsigned(d) { int_value(d, x).to_string() } else { x.to_string() }
        }
        (Data::F(v), _) => format_g(v.get(e).copied().unwrap_or(0.0)),
    }
}

/// C's `printf("%g", v)`: 6 significant digits, `%e` style below 1e-4 or from 1e6, trailing zeros
/// removed.
pub(crate) fn format_g(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    // The decimal exponent after rounding to 6 significant digits decides the style.
    let e_form = format!("{v:.5e}");
    let (mant, exp) = e_form.split_once('e').unwrap_or((&e_form, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim =
        |s: &str| -> String { if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s.to_string() } };
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mant), exp.abs())
    } else {
        let prec = (5 - exp) as usize;
        trim(&format!("{v:.prec$}"))
    }
}

#[cfg(test)]
mod tests {
    use super::format_g;

    #[test]
    fn floats_print_as_c_percent_g() {
        // Expected values from C's printf("%g") (glibc, via Python's `%g`).
        let cases = [
            (0.5, "0.5"),
            (1e-7, "1e-07"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (123456789.0, "1.23457e+08"),
            (0.0001, "0.0001"),
            (0.00001234, "1.234e-05"),
            (-3e20, "-3e+20"),
            (1.0 / 3.0, "0.333333"),
            (999999.5, "1e+06"),
            (0.1 + 0.2, "0.3"),
            (-0.0, "-0"),
            (65504.0, "65504"),
            (1.5e-45, "1.5e-45"),
            (3.4028234663852886e38, "3.40282e+38"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ];
        for (v, want) in cases {
            assert_eq!(format_g(v), want, "{v:e}");
        }
    }
}
