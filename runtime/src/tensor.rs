//! Typed device tensors, strided views, and host-slice conveniences.
//!
//! [`DeviceTensor`] is the untyped owner of device memory (its dtype is a value); [`Tensor<T>`]
//! carries the element type in the Rust type, so uploads and downloads of `&[T]`/`Vec<T>` are
//! checked at compile time. [`TensorView`] is a strided window on a tensor (an offset, a shape,
//! non-negative strides), checked against the buffer when it is made: kernels take explicit
//! strides, so a transposed or sliced view launches like a whole tensor.
//!
//! ```
//! use tessera_runtime::{Runtime, Tensor};
//! # fn main() -> Result<(), tessera_runtime::RuntimeError> {
//! // Gated: on a machine without a GPU, `Runtime::new` says so and the example stops here.
//! let Ok(rt) = Runtime::new() else { return Ok(()) };
//! let x: Tensor<f32> = rt.tensor(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
//! let xt = x.view().transpose(0, 1)?; // [3, 2], strides [1, 3]
//! assert_eq!((xt.shape(), xt.strides(), xt.is_contiguous()), (&[3, 2][..], &[1, 3][..], false));
//! assert_eq!(x.to_vec(&rt)?, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
//! # Ok(()) }
//! ```

use crate::device::{DeviceArg, DeviceTensor, Runtime, RuntimeError};
use half::{bf16, f16};
use std::marker::PhantomData;
use tessera_compiler::{DType, HostTensor, Scalar};

/// The largest tensor rank a kernel parameter can have.
pub const MAX_RANK: usize = 8;

/// A Rust type that is the element type of a tensor.
pub trait Element: Copy + Send + Sync + 'static {
    /// The matching Tessera dtype.
    const DTYPE: DType;
    /// The value's bits, little-endian in the low `DTYPE.size()` bytes.
    fn to_bits(self) -> u64;
    /// The value from its bits (a bool is any nonzero byte).
    fn from_bits(bits: u64) -> Self;
}

macro_rules! element {
    ($($t:ty => $d:ident, |$v:ident| $to:expr, |$b:ident| $from:expr;)*) => {$(
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn to_bits(self) -> u64 {
                let $v = self;
                $to
            }
            fn from_bits(bits: u64) -> Self {
                let $b = bits;
                $from
            }
        }
    )*};
}

element! {
    f32 => F32, |v| v.to_bits() as u64, |b| f32::from_bits(b as u32);
    f64 => F64, |v| v.to_bits(), |b| f64::from_bits(b);
    f16 => F16, |v| v.to_bits() as u64, |b| f16::from_bits(b as u16);
    bf16 => BF16, |v| v.to_bits() as u64, |b| bf16::from_bits(b as u16);
    i8 => I8, |v| v as u8 as u64, |b| b as u8 as i8;
    i16 => I16, |v| v as u16 as u64, |b| b as u16 as i16;
    i32 => I32, |v| v as u32 as u64, |b| b as u32 as i32;
    i64 => I64, |v| v as u64, |b| b as i64;
    u8 => U8, |v| v as u64, |b| b as u8;
    u32 => U32, |v| v as u64, |b| b as u32;
    u64 => U64, |v| v, |b| b;
    bool => Bool, |v| v as u64, |b| b as u8 != 0;
}

/// The little-endian bytes of `data`.
pub fn to_bytes<T: Element>(data: &[T]) -> Vec<u8> {
    let n = T::DTYPE.size();
    let mut out = Vec::with_capacity(data.len() * n);
    for &v in data {
        out.extend_from_slice(&v.to_bits().to_le_bytes()[..n]);
    }
    out
}

/// The elements of little-endian `bytes` (a trailing partial element is ignored).
pub fn from_bytes<T: Element>(bytes: &[u8]) -> Vec<T> {
    let n = T::DTYPE.size();
    bytes
        .chunks_exact(n)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(c);
            T::from_bits(u64::from_le_bytes(b))
        })
        .collect()
}

/// A host tensor holding `data` with `shape` (row-major).
pub fn host_tensor<T: Element>(data: &[T], shape: &[usize]) -> Result<HostTensor, RuntimeError> {
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n != Some(data.len()) {
        return Err(RuntimeError::BadTensor(format!("{} elements do not fill a tensor of shape {shape:?}", data.len())));
    }
    Ok(HostTensor { dtype: T::DTYPE, shape: shape.to_vec(), bytes: to_bytes(data) })
}

/// A device tensor whose element type is `T`.
#[derive(Debug)]
pub struct Tensor<T: Element> {
    inner: DeviceTensor,
    _elem: PhantomData<T>,
}

impl<T: Element> Tensor<T> {
    /// Types an untyped tensor; gives it back when its dtype is not `T`'s.
    pub fn try_from_untyped(t: DeviceTensor) -> Result<Tensor<T>, DeviceTensor> {
        if t.dtype == T::DTYPE { Ok(Tensor { inner: t, _elem: PhantomData }) } else { Err(t) }
    }

    pub fn shape(&self) -> &[usize] {
        &self.inner.shape
    }

    pub fn untyped(&self) -> &DeviceTensor {
        &self.inner
    }

    pub fn into_untyped(self) -> DeviceTensor {
        self.inner
    }

    /// The tensor as a launch argument.
    pub fn arg(&self) -> DeviceArg<'_> {
        DeviceArg::Tensor(&self.inner)
    }

    /// The whole tensor as a (contiguous) view, to slice or transpose.
    pub fn view(&self) -> TensorView<'_> {
        TensorView::whole(&self.inner)
    }

    /// Copies the tensor to the host (waiting for the work queued before it).
    pub fn to_vec(&self, rt: &Runtime) -> Result<Vec<T>, RuntimeError> {
        rt.download_vec(&self.inner)
    }
}

impl<T: Element> std::ops::Deref for Tensor<T> {
    type Target = DeviceTensor;
    fn deref(&self) -> &DeviceTensor {
        &self.inner
    }
}

impl<'a, T: Element> From<&'a Tensor<T>> for DeviceArg<'a> {
    fn from(t: &'a Tensor<T>) -> DeviceArg<'a> {
        t.arg()
    }
}

impl<'a> From<&'a DeviceTensor> for DeviceArg<'a> {
    fn from(t: &'a DeviceTensor) -> DeviceArg<'a> {
        DeviceArg::Tensor(t)
    }
}

impl<'a> From<TensorView<'a>> for DeviceArg<'a> {
    fn from(v: TensorView<'a>) -> DeviceArg<'a> {
        DeviceArg::View(v)
    }
}

impl From<Scalar> for DeviceArg<'_> {
    fn from(s: Scalar) -> Self {
        DeviceArg::Scalar(s)
    }
}

macro_rules! scalar_arg {
    ($($t:ty => $v:ident: $e:expr),*) => {$(
        impl From<$t> for DeviceArg<'_> {
            fn from($v: $t) -> Self {
                DeviceArg::Scalar($e)
            }
        }
    )*};
}

scalar_arg!(f32 => v: Scalar::Float(v as f64), f64 => v: Scalar::Float(v), i32 => v: Scalar::Int(v as i64), i64 => v: Scalar::Int(v), u32 => v: Scalar::Int(v as i64), bool => v: Scalar::Bool(v));

/// A strided window on a device tensor: element `[i0, i1, …]` is element
/// `offset + Σ ik · strides[k]` of the tensor's buffer. Strides are in elements and never
/// negative; every element the view can address lies inside the buffer (checked when it is made).
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    tensor: &'a DeviceTensor,
    offset: usize,
    rank: usize,
    shape: [usize; MAX_RANK],
    strides: [i64; MAX_RANK],
}

/// A strided layout (element strides), checked: one stride per dimension, none negative, rank at
/// most [`MAX_RANK`]; `what` names the tensor in the error. Returns it in fixed arrays.
pub(crate) fn checked_layout(what: &str, shape: &[usize], strides: &[i64]) -> Result<([usize; MAX_RANK], [i64; MAX_RANK]), RuntimeError> {
    if shape.len() != strides.len() || shape.len() > MAX_RANK {
        return Err(RuntimeError::BadTensor(format!(
            "{what} needs one stride per dimension and rank at most {MAX_RANK}: shape {shape:?}, strides {strides:?}"
        )));
    }
    if let Some(s) = strides.iter().find(|&&s| s < 0) {
        return Err(RuntimeError::BadTensor(format!("{what}'s strides must not be negative, got {s}")));
    }
    let (mut sh, mut st) = ([0; MAX_RANK], [0; MAX_RANK]);
    sh[..shape.len()].copy_from_slice(shape);
    st[..strides.len()].copy_from_slice(strides);
    Ok((sh, st))
}

/// The bytes a layout reaches from element `offset`: one past its last element's last byte (0
/// when a dimension is 0); `None` past `u128`. Strides are not negative (`checked_layout`).
pub(crate) fn extent_bytes(offset: u128, shape: &[usize], strides: &[i64], elem_bytes: usize) -> Option<u128> {
    if shape.contains(&0) {
        return Some(0);
    }
    let last = shape.iter().zip(strides).try_fold(offset, |acc, (&n, &s)| acc.checked_add((n as u128 - 1).checked_mul(s as u128)?))?;
    (last + 1).checked_mul(elem_bytes as u128)
}

impl<'a> TensorView<'a> {
    /// A view of `t` with the given offset (in elements), shape and strides.
    pub fn new(t: &'a DeviceTensor, offset: usize, shape: &[usize], strides: &[i64]) -> Result<TensorView<'a>, RuntimeError> {
        let (sh, st) = checked_layout("a view", shape, strides)?;
        let v = TensorView { tensor: t, offset, rank: shape.len(), shape: sh, strides: st };
        v.check()?;
        Ok(v)
    }

    /// The whole tensor, row-major. A tensor of rank over [`MAX_RANK`] gives an empty-rank view
    /// that no kernel parameter accepts (the launch reports the rank).
    pub fn whole(t: &'a DeviceTensor) -> TensorView<'a> {
        let rank = if t.shape.len() <= MAX_RANK { t.shape.len() } else { 0 };
        let mut v = TensorView { tensor: t, offset: 0, rank, shape: [0; MAX_RANK], strides: [0; MAX_RANK] };
        v.shape[..rank].copy_from_slice(&t.shape[..rank]);
        let mut s = 1i64;
        for k in (0..rank).rev() {
            v.strides[k] = s;
            s = s.saturating_mul(i64::try_from(t.shape[k]).unwrap_or(i64::MAX));
        }
        v
    }

    pub fn tensor(&self) -> &'a DeviceTensor {
        self.tensor
    }

    pub fn dtype(&self) -> DType {
        self.tensor.dtype
    }

    /// Offset of element 0, in elements.
    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape[..self.rank]
    }

    pub fn strides(&self) -> &[i64] {
        &self.strides[..self.rank]
    }

    pub fn numel(&self) -> usize {
        self.shape().iter().product()
    }

    /// Whether the view is dense and row-major (dimensions of size 1 may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut want = 1i64;
        for k in (0..self.rank).rev() {
            if self.shape[k] != 1 && self.strides[k] != want {
                return false;
            }
            want = want.saturating_mul(self.shape[k] as i64);
        }
        true
    }

    /// The sub-view of `len` indices from `start` along `axis`.
    pub fn narrow(self, axis: usize, start: usize, len: usize) -> Result<TensorView<'a>, RuntimeError> {
        if axis >= self.rank || start.checked_add(len).is_none_or(|e| e > self.shape[axis]) {
            return Err(RuntimeError::BadTensor(format!(
                "cannot narrow axis {axis} of a view of shape {:?} to {start}..{}",
                self.shape(),
                start.saturating_add(len)
            )));
        }
        let delta = i64::try_from(start).ok().and_then(|s| s.checked_mul(self.strides[axis]));
        let offset = delta
            .and_then(|d| i64::try_from(self.offset).ok()?.checked_add(d))
            .and_then(|o| usize::try_from(o).ok())
            .ok_or_else(|| RuntimeError::BadTensor("the view's offset overflows".into()))?;
        let mut v = self;
        v.offset = offset;
        v.shape[axis] = len;
        v.check()?;
        Ok(v)
    }

    /// The view with axes `a` and `b` swapped (a transpose for rank 2).
    pub fn transpose(self, a: usize, b: usize) -> Result<TensorView<'a>, RuntimeError> {
        if a >= self.rank || b >= self.rank {
            return Err(RuntimeError::BadTensor(format!("cannot swap axes {a} and {b} of a view of rank {}", self.rank)));
        }
        let mut v = self;
        v.shape.swap(a, b);
        v.strides.swap(a, b);
        Ok(v)
    }

    /// Checks that every element the view addresses lies inside the tensor's buffer.
    pub(crate) fn check(&self) -> Result<(), RuntimeError> {
        let need = extent_bytes(self.offset as u128, self.shape(), self.strides(), self.tensor.dtype.size()).unwrap_or(u128::MAX);
        if need > self.tensor.buf.len() as u128 {
            return Err(RuntimeError::BadTensor(format!(
                "a view (offset {}, shape {:?}, strides {:?}) of a {} tensor reaches byte {need}, past its {}-byte buffer",
                self.offset,
                self.shape(),
                self.strides(),
                self.tensor.dtype,
                self.tensor.buf.len()
            )));
        }
        Ok(())
    }
}

impl Runtime {
    /// Copies a host slice to a new device tensor of the given shape.
    pub fn upload_slice<T: Element>(&self, data: &[T], shape: &[usize]) -> Result<DeviceTensor, RuntimeError> {
        self.upload(&host_tensor(data, shape)?)
    }

    /// Copies a device tensor to a `Vec` (waiting for the work queued before it); its dtype must
    /// be `T`'s.
    pub fn download_vec<T: Element>(&self, t: &DeviceTensor) -> Result<Vec<T>, RuntimeError> {
        if t.dtype != T::DTYPE {
            return Err(RuntimeError::BadTensor(format!("cannot download a {} tensor as {}", t.dtype, T::DTYPE)));
        }
        Ok(from_bytes(&self.download(t)?.bytes))
    }

    /// A typed device tensor holding `data` with `shape`.
    pub fn tensor<T: Element>(&self, data: &[T], shape: &[usize]) -> Result<Tensor<T>, RuntimeError> {
        Ok(Tensor { inner: self.upload_slice(data, shape)?, _elem: PhantomData })
    }

    /// A typed device tensor of zeros.
    pub fn zeros<T: Element>(&self, shape: &[usize]) -> Result<Tensor<T>, RuntimeError> {
        Ok(Tensor { inner: self.alloc_filled(T::DTYPE, shape, 0)?, _elem: PhantomData })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_bytes_round_trip() {
        let f = [1.5f32, -0.0, f32::INFINITY];
        assert_eq!(from_bytes::<f32>(&to_bytes(&f)), f);
        let i = [i64::MIN, -1, 7];
        assert_eq!(from_bytes::<i64>(&to_bytes(&i)), i);
        let h = [bf16::from_f32(1.0), bf16::from_f32(-2.5)];
        assert_eq!(to_bytes(&h), [0x80, 0x3f, 0x20, 0xc0]);
        assert_eq!(from_bytes::<bool>(&[0, 1, 2]), [false, true, true]);
        assert_eq!(to_bytes(&[-1i8, 2]), [0xff, 2]);
        let t = host_tensor(&[1u32, 2, 3, 4, 5, 6], &[2, 3]).expect("fits");
        assert_eq!((t.dtype, t.numel(), t.get_i64(5)), (DType::U32, 6, 6));
        assert!(host_tensor(&[1u8, 2, 3], &[2, 2]).unwrap_err().to_string().contains("3 elements"));
        assert!(host_tensor(&[1u8], &[usize::MAX, 2]).is_err());
    }
}
