//! The launch path: argument checks, grid evaluation and parameter packing into a buffer made
//! once per kernel, so a launch allocates nothing after the first.
//!
//! When a kernel is loaded its metadata is turned into a [`Plan`]: every dimension symbol and
//! integer scalar parameter gets a slot, every PTX parameter a fixed offset in a parameter
//! buffer, and the driver's array of parameter addresses is built once, pointing into that
//! buffer. A launch then only walks the arguments: it checks each against its parameter (tensor
//! or scalar, dtype, rank, constant dimensions, dimension symbols that must agree, sizes that fit
//! in `i32`, the buffer large enough for the shape or view), writes the pointer, sizes, strides
//! and scalar values into the buffer in place, checks `#[require]`, evaluates the grid, and calls
//! `cuLaunchKernel`. The messages of failed checks are the interpreter's ([`BindError`]), and
//! nothing is launched.
//!
//! What a launch cannot be given, by construction: a null or freed buffer. A [`DeviceTensor`]
//! owns its allocation (a successful `cuMemAlloc` of at least one byte, never null) and frees it
//! when dropped, and a launch borrows every tensor it is given, so no tensor can be freed while
//! it is an argument; the buffer is released on the runtime's stream, ordered after the kernels
//! that used it.

use crate::device::{DeviceArg, DeviceTensor, RuntimeError};
use crate::pack::{KernelParam, param_of};
use std::ffi::c_void;
use tessera_compiler::host::{self, BindError, describe};
use tessera_compiler::tir::{Dim, ParamKind};
use tessera_compiler::{DType, KernelMeta, Scalar};

/// One argument as the plan sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ArgRef<'a> {
    Tensor {
        dtype: DType,
        shape: &'a [usize],
        /// `None`: dense row-major.
        strides: Option<&'a [i64]>,
        /// Device address of element 0.
        ptr: u64,
    },
    Scalar(Scalar),
}

#[derive(Debug)]
enum PlanParam {
    Tensor { dtype: DType, dims: Vec<PlanDim> },
    Scalar { dtype: DType, slot: Option<usize> },
}

#[derive(Debug)]
enum PlanDim {
    Const(i64),
    Slot(usize),
}

/// How to check and pack one kernel's arguments (built once, at load).
#[derive(Debug)]
pub(crate) struct Plan {
    /// Dimension symbols and integer/bool scalar parameters, by slot.
    slots: Vec<String>,
    params: Vec<PlanParam>,
    /// Byte offset of each PTX parameter in the buffer, in PTX order.
    offsets: Vec<usize>,
    /// Per tensor map: the offset of its bytes in the buffer (the `maps_ready` flag is before
    /// the first), and the dtype of its tensor.
    maps: Vec<(usize, DType)>,
    ready_at: usize,
    /// Buffer size in 8-byte words.
    words: usize,
}

/// The per-kernel state a launch writes into: slot values and the parameter buffer.
#[derive(Debug)]
pub(crate) struct Scratch {
    values: Vec<i64>,
    /// The parameter that bound each slot (`UNSET` before).
    first: Vec<usize>,
    buf: Vec<u64>,
    /// The address of each PTX parameter inside `buf` (what `cuLaunchKernel` takes).
    ptrs: Vec<*mut c_void>,
    /// Each parameter's tensor as this launch saw it, and the encoding each tensor map was last
    /// built from (not encoded again while it is the same).
    seen: Vec<crate::tma::Seen>,
    encoded: Vec<Option<crate::tma::Encoding>>,
}

// SAFETY: `ptrs` only ever point into `buf`, which the same `Scratch` owns and never resizes, so
// moving the `Scratch` to another thread moves what they point to with it.
unsafe impl Send for Scratch {}

const UNSET: usize = usize::MAX;

impl Plan {
    pub(crate) fn new(meta: &KernelMeta) -> Plan {
        let mut slots: Vec<String> = vec![];
        let slot = |name: &str, slots: &mut Vec<String>| match slots.iter().position(|s| s == name) {
            Some(i) => i,
            None => {
                slots.push(name.to_string());
                slots.len() - 1
            }
        };
        let mut params = vec![];
        for p in &meta.params {
            match &p.kind {
                ParamKind::Tensor { dtype, dims, .. } => {
                    let dims = dims
                        .iter()
                        .map(|d| match d {
                            Dim::Const(c) => PlanDim::Const(*c),
                            Dim::Sym(s) => PlanDim::Slot(slot(s, &mut slots)),
                        })
                        .collect::<Vec<_>>();
                    params.push(PlanParam::Tensor { dtype: *dtype, dims });
                }
                ParamKind::Scalar { dtype } => {
                    let s = (dtype.is_int() || *dtype == DType::Bool).then(|| slot(&p.name, &mut slots));
                    params.push(PlanParam::Scalar { dtype: *dtype, slot: s });
                }
            }
        }
        // Each PTX parameter at its alignment, in the order of the one ABI description.
        let mut offsets = vec![];
        let mut maps = vec![];
        let mut ready_at = 0;
        let mut end = 0usize;
        for slot in meta.slots() {
            let (s, a) = (slot.bytes() as usize, slot.align() as usize);
            let at = end.div_ceil(a) * a;
            match slot {
                tessera_compiler::abi::Slot::MapsReady => ready_at = at,
                tessera_compiler::abi::Slot::TensorMap { param, .. } => {
                    let dtype = match meta.params.get(param).map(|p| &p.kind) {
                        Some(ParamKind::Tensor { dtype, .. }) => *dtype,
                        _ => DType::U8,
                    };
                    maps.push((at, dtype));
                }
                _ => {}
            }
            offsets.push(at);
            end = at + s;
        }
        Plan { slots, params, offsets, maps, ready_at, words: end.div_ceil(8).max(1) }
    }

    pub(crate) fn scratch(&self) -> Scratch {
        let mut buf = vec![0u64; self.words];
        let base = buf.as_mut_ptr().cast::<u8>();
        // `wrapping_add` keeps this safe code; every offset is inside `buf` by construction.
        let ptrs = self.offsets.iter().map(|&o| base.wrapping_add(o).cast::<c_void>()).collect();
        Scratch {
            values: vec![0; self.slots.len()],
            first: vec![UNSET; self.slots.len()],
            buf,
            ptrs,
            seen: vec![crate::tma::Seen::default(); self.params.len()],
            encoded: vec![None; self.maps.len()],
        }
    }

    /// Checks the arguments, packs them into `s.buf`, checks `#[require]` and evaluates the grid.
    /// `arg(i)` gives argument `i` (it may fail, e.g. for a tensor whose buffer is too small).
    /// Allocates only to report an error.
    pub(crate) fn bind<'a>(
        &self,
        meta: &KernelMeta,
        s: &mut Scratch,
        n_args: usize,
        arg: &mut dyn FnMut(usize) -> Result<ArgRef<'a>, RuntimeError>,
    ) -> Result<[u32; 3], RuntimeError> {
        let kernel = &meta.name;
        let fail = |e: BindError| RuntimeError::Bind(format!("kernel `{kernel}`: {e}"));
        if n_args != self.params.len() || meta.params.len() != self.params.len() {
            return Err(fail(BindError::ArgCount { kernel: kernel.clone(), expected: self.params.len(), got: n_args }));
        }
        s.first.fill(UNSET);
        let Scratch { values, first, buf, seen, encoded, .. } = s;
        let bytes = as_bytes_mut(buf);
        let mut j = 0;
        for (i, (pp, decl)) in self.params.iter().zip(&meta.params).enumerate() {
            let name = &decl.name;
            match (pp, arg(i)?) {
                (PlanParam::Tensor { dtype, dims }, ArgRef::Tensor { dtype: got, shape, strides, ptr }) => {
                    if got != *dtype {
                        return Err(fail(BindError::DType { param: name.clone(), expected: *dtype, got }));
                    }
                    if shape.len() != dims.len() {
                        return Err(fail(BindError::Rank {
                            param: name.clone(),
                            expected: dims.len(),
                            decl: describe(&decl.kind),
                            got: shape.to_vec(),
                        }));
                    }
                    for (axis, (d, &n)) in dims.iter().zip(shape).enumerate() {
                        match d {
                            PlanDim::Const(_) if n > i32::MAX as usize => {
                                return Err(fail(BindError::DimTooLarge { param: name.clone(), axis, val: n as u64 }));
                            }
                            PlanDim::Const(c) if i64::try_from(n) != Ok(*c) => {
                                return Err(fail(BindError::ConstDim { param: name.clone(), axis, expected: *c, got: n }));
                            }
                            PlanDim::Const(_) => {}
                            PlanDim::Slot(k) => {
                                if n > i32::MAX as usize {
                                    return Err(fail(BindError::TooLarge { sym: self.slots[*k].clone(), val: n as u64 }));
                                }
                                if first[*k] == UNSET {
                                    first[*k] = i;
                                    values[*k] = n as i64;
                                } else if values[*k] != n as i64 {
                                    return Err(fail(BindError::SymMismatch {
                                        sym: self.slots[*k].clone(),
                                        first: meta.params[first[*k]].name.clone(),
                                        first_val: values[*k],
                                        param: name.clone(),
                                        val: n as i64,
                                    }));
                                }
                            }
                        }
                    }
                    let rank = shape.len();
                    seen[i] = crate::tma::Seen { ptr, rank, ..Default::default() };
                    put(bytes, self.offsets[j], &ptr.to_le_bytes());
                    for (k, &n) in shape.iter().enumerate() {
                        // Fits: checked against i32::MAX above.
                        put(bytes, self.offsets[j + 1 + k], &(n as i32).to_le_bytes());
                    }
                    let mut stride = 1i64;
                    for k in (0..rank).rev() {
                        let v = match strides {
                            Some(st) => st[k],
                            None => {
                                let v = stride;
                                stride = stride.saturating_mul(i64::try_from(shape[k]).unwrap_or(i64::MAX));
                                v
                            }
                        };
                        put(bytes, self.offsets[j + 1 + rank + k], &v.to_le_bytes());
                        if k < crate::tma::SEEN_RANK {
                            seen[i].sizes[k] = shape[k] as u64;
                            seen[i].strides[k] = v;
                        }
                    }
                    j += 1 + 2 * rank;
                }
                (PlanParam::Scalar { dtype, slot }, ArgRef::Scalar(v)) => {
                    let fitted = host::fit_scalar(*dtype, v).map_err(|detail| fail(BindError::Scalar { param: name.clone(), detail }))?;
                    write_param(bytes, self.offsets[j], param_of(fitted));
                    j += 1;
                    if let Some(k) = slot
                        && first[*k] == UNSET
                        && let Some(x) = host::scalar_sym(name, fitted, &meta.grid, &meta.requires).map_err(fail)?
                    {
                        first[*k] = i;
                        values[*k] = x;
                    }
                }
                (PlanParam::Tensor { .. }, ArgRef::Scalar(_)) => {
                    return Err(fail(BindError::NotTensor { param: name.clone(), expected: describe(&decl.kind) }));
                }
                (PlanParam::Scalar { .. }, ArgRef::Tensor { .. }) => {
                    return Err(fail(BindError::NotScalar { param: name.clone(), expected: describe(&decl.kind) }));
                }
            }
        }
        if !self.maps.is_empty() {
            // The copy engine's maps when every tensor allows one (else the kernel's `cp.async`).
            let mut ready = 1u32;
            for (m, ((at, dtype), enc)) in meta.tensor_maps.iter().zip(self.maps.iter().zip(encoded.iter_mut())) {
                let e = seen.get(m.param).and_then(|t| crate::tma::encoding(m, *dtype, t));
                if e.is_none() {
                    ready = 0;
                } else if *enc != e {
                    match e.as_ref().and_then(|e| crate::tma::encode(e, *dtype)) {
                        Some(map) => {
                            put(bytes, *at, &map);
                            *enc = e;
                        }
                        None => {
                            ready = 0;
                            *enc = None;
                        }
                    }
                }
            }
            put(bytes, self.ready_at, &ready.to_le_bytes());
        }
        let lookup = |name: &str| {
            let k = self.slots.iter().position(|s| s == name)?;
            (first[k] != UNSET).then_some(values[k])
        };
        host::check_requires(&meta.requires, &lookup).map_err(fail)?;
        let grid = host::eval_grid(&meta.grid, &lookup).map_err(fail)?;
        Ok(grid)
    }
}

impl Scratch {
    /// The driver's parameter-address array (valid while `self` is borrowed).
    pub(crate) fn params(&mut self) -> &mut [*mut c_void] {
        &mut self.ptrs
    }

    /// The packed parameter bytes (for tests and inspection).
    #[cfg(test)]
    fn bytes(&mut self) -> &[u8] {
        as_bytes_mut(&mut self.buf)
    }
}

/// The argument `a` as the plan sees it, after checking that a tensor's buffer holds its shape
/// (or, for a view, every element the view addresses).
pub(crate) fn arg_ref<'b>(a: &'b DeviceArg<'_>, stream: &cudarc::driver::CudaStream) -> Result<ArgRef<'b>, RuntimeError> {
    use cudarc::driver::DevicePtr;
    let ptr = |t: &DeviceTensor| {
        // With event tracking off (see `Runtime::new`) the record is empty: nothing to keep.
        let (p, _record) = t.buf.device_ptr(stream);
        p
    };
    Ok(match a {
        DeviceArg::Tensor(t) => {
            t.check()?;
            ArgRef::Tensor { dtype: t.dtype, shape: &t.shape, strides: None, ptr: ptr(t) }
        }
        DeviceArg::View(v) => {
            v.check()?;
            let byte_offset = v.offset() as u64 * v.dtype().size() as u64;
            ArgRef::Tensor { dtype: v.dtype(), shape: v.shape(), strides: Some(v.strides()), ptr: ptr(v.tensor()) + byte_offset }
        }
        DeviceArg::External(t) => ArgRef::Tensor { dtype: t.dtype(), shape: t.shape(), strides: Some(t.strides()), ptr: t.ptr() },
        DeviceArg::Scalar(s) => ArgRef::Scalar(*s),
    })
}

fn as_bytes_mut(buf: &mut [u64]) -> &mut [u8] {
    // SAFETY: the u8 slice covers exactly the memory of `buf`, u8 has alignment 1 and every bit
    // pattern is a valid u8 and a valid u64, and the borrow of `buf` lasts as long as the result.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(buf)) }
}

fn put(bytes: &mut [u8], at: usize, v: &[u8]) {
    bytes[at..at + v.len()].copy_from_slice(v);
}

fn write_param(bytes: &mut [u8], at: usize, p: KernelParam) {
    match p {
        KernelParam::U8(v) => put(bytes, at, &[v]),
        KernelParam::I8(v) => put(bytes, at, &v.to_le_bytes()),
        KernelParam::I16(v) => put(bytes, at, &v.to_le_bytes()),
        KernelParam::U16(v) => put(bytes, at, &v.to_le_bytes()),
        KernelParam::I32(v) => put(bytes, at, &v.to_le_bytes()),
        KernelParam::U32(v) => put(bytes, at, &v.to_le_bytes()),
        KernelParam::I64(v) => put(bytes, at, &v.to_le_bytes()),
        KernelParam::U64(v) => put(bytes, at, &v.to_le_bytes()),
        KernelParam::F32(v) => put(bytes, at, &v.to_le_bytes()),
        KernelParam::F64(v) => put(bytes, at, &v.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{PackArg, pack_params, param_buffer};
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use tessera_compiler::tir::{HostExpr, HostOp, Param, Require};
    use tessera_compiler::{ArgInfo, host};

    /// Counts this thread's allocations, to show that a launch after the first allocates nothing.
    struct Counting;

    thread_local! {
        static ALLOCS: Cell<usize> = const { Cell::new(0) };
    }

    // SAFETY: forwards to the system allocator; the counter is a const-initialised thread-local
    // without a destructor, so touching it never allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
            // SAFETY: the caller's contract is the system allocator's.
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: as above.
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
            // SAFETY: as above.
            unsafe { System.realloc(p, l, n) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    fn allocs() -> usize {
        ALLOCS.with(|c| c.get())
    }

    fn sym(s: &str) -> Dim {
        Dim::Sym(s.into())
    }

    fn bin(op: HostOp, a: HostExpr, b: HostExpr) -> HostExpr {
        HostExpr::Bin(op, Box::new(a), Box::new(b))
    }

    /// `k(a: &bf16[M, K], b: &bf16[K, N], c: &mut f32[M, 4], scale: f32, n: i32)` with
    /// `#[grid(cdiv(M, 64), N)]` and `#[require(K % 2 == 0, n > 0)]`.
    fn meta() -> KernelMeta {
        let t = |name: &str, dtype, dims, mutable| Param { name: name.into(), kind: ParamKind::Tensor { dtype, dims, mutable } };
        let params = vec![
            t("a", DType::BF16, vec![sym("M"), sym("K")], false),
            t("b", DType::BF16, vec![sym("K"), sym("N")], false),
            t("c", DType::F32, vec![sym("M"), Dim::Const(4)], true),
            Param { name: "scale".into(), kind: ParamKind::Scalar { dtype: DType::F32 } },
            Param { name: "n".into(), kind: ParamKind::Scalar { dtype: DType::I32 } },
        ];
        let sy = |s: &str| HostExpr::Sym(s.into());
        let cdiv = bin(HostOp::Div, bin(HostOp::Add, sy("M"), HostExpr::Int(63)), HostExpr::Int(64));
        KernelMeta {
            name: "k".into(),
            grid: vec![cdiv, sy("N")],
            requires: vec![
                Require { cond: bin(HostOp::Eq, bin(HostOp::Rem, sy("K"), HostExpr::Int(2)), HostExpr::Int(0)), text: "K % 2 == 0".into() },
                Require { cond: bin(HostOp::Gt, sy("n"), HostExpr::Int(0)), text: "n > 0".into() },
            ],
            threads: 128,
            ..KernelMeta { params, ..KernelMeta::default() }
        }
    }

    fn tensor<'a>(dtype: DType, shape: &'a [usize], ptr: u64) -> ArgRef<'a> {
        ArgRef::Tensor { dtype, shape, strides: None, ptr }
    }

    fn bind(plan: &Plan, m: &KernelMeta, s: &mut Scratch, args: &[ArgRef<'_>]) -> Result<[u32; 3], RuntimeError> {
        plan.bind(m, s, args.len(), &mut |i| Ok(args[i]))
    }

    #[test]
    fn packs_like_the_reference_packer_and_allocates_nothing_after_the_first_launch() {
        let m = meta();
        let plan = Plan::new(&m);
        let mut s = plan.scratch();
        let args = [
            tensor(DType::BF16, &[100, 6], 0x1000),
            tensor(DType::BF16, &[6, 3], 0x2000),
            tensor(DType::F32, &[100, 4], 0x3000),
            ArgRef::Scalar(Scalar::Float(0.5)),
            ArgRef::Scalar(Scalar::Int(7)),
        ];
        assert_eq!(bind(&plan, &m, &mut s, &args).expect("binds"), [2, 3, 1]);
        let pack = [
            PackArg::Tensor { ptr: 0x1000, shape: &[100, 6] },
            PackArg::Tensor { ptr: 0x2000, shape: &[6, 3] },
            PackArg::Tensor { ptr: 0x3000, shape: &[100, 4] },
            PackArg::Scalar(Scalar::Float(0.5)),
            PackArg::Scalar(Scalar::Int(7)),
        ];
        let want = param_buffer(&pack_params(&m.params, &pack).expect("packs"));
        assert_eq!(&s.bytes()[..want.len()], &want[..]);
        assert_eq!(s.params().len(), 17);
        // The same binding agrees with the interpreter's binder.
        let infos: Vec<ArgInfo> = vec![
            ArgInfo::Tensor { dtype: DType::BF16, shape: vec![100, 6] },
            ArgInfo::Tensor { dtype: DType::BF16, shape: vec![6, 3] },
            ArgInfo::Tensor { dtype: DType::F32, shape: vec![100, 4] },
            ArgInfo::Scalar(Scalar::Float(0.5)),
            ArgInfo::Scalar(Scalar::Int(7)),
        ];
        assert_eq!(host::bind("k", &m.params, &m.grid, &m.requires, &infos).expect("binds").grid, [2, 3, 1]);

        let before = allocs();
        for i in 0..1000u64 {
            let args = [
                tensor(DType::BF16, &[100, 6], 0x1000 + i),
                tensor(DType::BF16, &[6, 3], 0x2000),
                tensor(DType::F32, &[100, 4], 0x3000),
                ArgRef::Scalar(Scalar::Float(0.5)),
                ArgRef::Scalar(Scalar::Int(7)),
            ];
            bind(&plan, &m, &mut s, &args).expect("binds");
        }
        assert_eq!(allocs() - before, 0, "the launch path allocated");
    }

    #[test]
    fn strided_views_pass_their_strides() {
        let m = meta();
        let plan = Plan::new(&m);
        let mut s = plan.scratch();
        let args = [
            ArgRef::Tensor { dtype: DType::BF16, shape: &[100, 6], strides: Some(&[1, 100]), ptr: 0x1000 },
            tensor(DType::BF16, &[6, 3], 0x2000),
            tensor(DType::F32, &[100, 4], 0x3000),
            ArgRef::Scalar(Scalar::Float(0.5)),
            ArgRef::Scalar(Scalar::Int(7)),
        ];
        bind(&plan, &m, &mut s, &args).expect("binds");
        let b = s.bytes();
        // a: ptr at 0, sizes at 8 and 12, strides at 16 and 24.
        assert_eq!(b[16..24], 1i64.to_le_bytes());
        assert_eq!(b[24..32], 100i64.to_le_bytes());
    }

    /// Every kind of bad argument is reported with the interpreter's message.
    #[test]
    fn bad_arguments_are_explained() {
        let m = meta();
        let plan = Plan::new(&m);
        let mut s = plan.scratch();
        let good = || {
            [
                tensor(DType::BF16, &[100, 6], 0x1000),
                tensor(DType::BF16, &[6, 3], 0x2000),
                tensor(DType::F32, &[100, 4], 0x3000),
                ArgRef::Scalar(Scalar::Float(0.5)),
                ArgRef::Scalar(Scalar::Int(7)),
            ]
        };
        let err = |args: &[ArgRef<'_>], s: &mut Scratch| match bind(&plan, &m, s, args) {
            Err(RuntimeError::Bind(msg)) => msg,
            other => panic!("expected a bind error, got {other:?}"),
        };
        assert_eq!(err(&good()[..4], &mut s), "kernel `k`: kernel `k` takes 5 arguments, got 4");
        let mut a = good();
        a[0] = tensor(DType::F32, &[100, 6], 0x1000);
        assert_eq!(err(&a, &mut s), "kernel `k`: argument `a`: expected dtype bf16, got f32");
        let mut a = good();
        a[1] = tensor(DType::BF16, &[6, 3, 1], 0x2000);
        assert_eq!(err(&a, &mut s), "kernel `k`: argument `b`: expected a tensor of rank 2 (&bf16[K, N]), got shape [6, 3, 1]");
        let mut a = good();
        a[1] = tensor(DType::BF16, &[8, 3], 0x2000);
        assert_eq!(err(&a, &mut s), "kernel `k`: dimension `K` disagrees: `a` has K = 6, but `b` has K = 8");
        let mut a = good();
        a[2] = tensor(DType::F32, &[100, 5], 0x3000);
        assert_eq!(err(&a, &mut s), "kernel `k`: argument `c`: dimension 1 must be 4, got 5");
        let mut a = good();
        a[0] = tensor(DType::BF16, &[100, 5], 0x1000);
        a[1] = tensor(DType::BF16, &[5, 3], 0x2000);
        assert_eq!(err(&a, &mut s), "kernel `k`: requirement `K % 2 == 0` failed (K = 5)");
        let mut a = good();
        a[4] = ArgRef::Scalar(Scalar::Int(0));
        assert_eq!(err(&a, &mut s), "kernel `k`: requirement `n > 0` failed (n = 0)");
        let mut a = good();
        a[3] = tensor(DType::F32, &[1], 0x10);
        assert_eq!(err(&a, &mut s), "kernel `k`: argument `scale`: expected a scalar f32, got a tensor");
        let mut a = good();
        a[0] = ArgRef::Scalar(Scalar::Int(1));
        assert_eq!(err(&a, &mut s), "kernel `k`: argument `a`: expected a tensor &bf16[M, K], got a scalar");
        let mut a = good();
        a[4] = ArgRef::Scalar(Scalar::Float(1.5));
        assert_eq!(err(&a, &mut s), "kernel `k`: argument `n`: expected an integer (i32), got 1.5");
        let mut a = good();
        a[1] = tensor(DType::BF16, &[6, 70000], 0x2000);
        assert_eq!(err(&a, &mut s), "kernel `k`: grid axis 1 = N: 70000 programs is more than CUDA launches along y (65535)");
        let mut a = good();
        a[0] = tensor(DType::BF16, &[1 << 31, 6], 0x2000);
        assert_eq!(err(&a, &mut s), "kernel `k`: dimension `M` = 2147483648 does not fit in i32");
        // A failed argument from the device layer (a buffer too small) stops the launch too.
        let r = plan.bind(&m, &mut s, 5, &mut |i| {
            if i == 2 {
                Err(RuntimeError::BadTensor("device tensor f32[100, 4] needs 1600 bytes, its buffer has 4".into()))
            } else {
                Ok(good()[i])
            }
        });
        assert!(matches!(r, Err(RuntimeError::BadTensor(m)) if m.contains("needs 1600 bytes")));
        // And a good launch after all those failures still binds.
        assert_eq!(bind(&plan, &m, &mut s, &good()).expect("binds"), [2, 3, 1]);
    }

    /// The GPU's binder and the interpreter's (`host::bind`) accept the same arguments, with the
    /// same grid, and refuse the same ones with the same message: random signatures (dimension
    /// symbols shared between tensors, constant dimensions, integer, bool and float scalars read
    /// by the grid and a requirement) against random arguments (ranks and dimensions off by one,
    /// 0 and past i32, scalars at and past their dtype's edges, tensors for scalars).
    #[test]
    fn agrees_with_the_interpreters_binder() {
        use crate::exec::Rng;
        let mut rng = Rng::new(7);
        let pick = |rng: &mut Rng, n: usize| (rng.next_u64() % n as u64) as usize;
        let scalar_types =
            [DType::Bool, DType::I8, DType::I16, DType::I32, DType::I64, DType::U8, DType::U32, DType::U64, DType::F16, DType::F32];
        let edges: [i64; 12] = [0, 1, -1, 127, 128, -129, 255, 256, 65535, 1 << 31, -(1 << 31) - 1, i64::MAX];
        let sy = |s: &str| HostExpr::Sym(s.into());
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..3000 {
            let mut params = vec![];
            for i in 0..1 + pick(&mut rng, 3) {
                let dims: Vec<Dim> =
                    (0..1 + pick(&mut rng, 3))
                        .map(|_| {
                            if pick(&mut rng, 4) == 0 {
                                Dim::Const(pick(&mut rng, 3) as i64 + 1)
                            } else {
                                sym(["M", "N"][pick(&mut rng, 2)])
                            }
                        })
                        .collect();
                params.push(Param { name: format!("t{i}"), kind: ParamKind::Tensor { dtype: DType::F32, dims, mutable: i == 0 } });
            }
            let dtype = scalar_types[pick(&mut rng, scalar_types.len())];
            params.push(Param { name: "s".into(), kind: ParamKind::Scalar { dtype } });
            let reads_s = !dtype.is_float() && pick(&mut rng, 2) == 0;
            let grid = vec![
                if reads_s { bin(HostOp::Mul, sy("s"), sy("s")) } else { HostExpr::Int(3) },
                if pick(&mut rng, 2) == 0 { sy("M") } else { HostExpr::Int(1) },
            ];
            let requires = vec![Require {
                cond: bin(HostOp::Ge, bin(HostOp::Add, sy("M"), HostExpr::Int(1)), HostExpr::Int(1)),
                text: "M + 1 >= 1".into(),
            }];
            let m = KernelMeta { name: "k".into(), grid, requires, ..KernelMeta { params: params.clone(), ..KernelMeta::default() } };
            let sizes = [0usize, 1, 2, 3, 70000, 1 << 31];
            let (big_m, big_n) = (sizes[pick(&mut rng, sizes.len())], sizes[pick(&mut rng, 4)]);
            let shapes: Vec<Vec<usize>> = params
                .iter()
                .filter_map(|p| match &p.kind {
                    ParamKind::Tensor { dims, .. } => {
                        let mut sh: Vec<usize> = dims
                            .iter()
                            .map(|d| match d {
                                Dim::Const(c) => *c as usize,
                                Dim::Sym(s) if s == "M" => big_m,
                                Dim::Sym(_) => big_n,
                            })
                            .collect();
                        match pick(&mut rng, 8) {
                            0 => sh.push(1),
                            1 => sh[0] += 1,
                            _ => {}
                        }
                        Some(sh)
                    }
                    ParamKind::Scalar { .. } => None,
                })
                .collect();
            let v = match pick(&mut rng, 4) {
                0 => Scalar::Float([0.5, 3.0, 1e6, 65520.0, f64::INFINITY, 1e19][pick(&mut rng, 6)]),
                1 => Scalar::Bool(pick(&mut rng, 2) == 0),
                _ => Scalar::Int(edges[pick(&mut rng, edges.len())]),
            };
            let scalar_as_tensor = pick(&mut rng, 20) == 0;
            let mut refs: Vec<ArgRef<'_>> = shapes.iter().map(|sh| tensor(DType::F32, sh, 0x1000)).collect();
            let mut infos: Vec<ArgInfo> = shapes.iter().map(|sh| ArgInfo::Tensor { dtype: DType::F32, shape: sh.clone() }).collect();
            if scalar_as_tensor {
                refs.push(tensor(DType::F32, &shapes[0], 0x2000));
                infos.push(ArgInfo::Tensor { dtype: DType::F32, shape: shapes[0].clone() });
            } else {
                refs.push(ArgRef::Scalar(v));
                infos.push(ArgInfo::Scalar(v));
            }
            let plan = Plan::new(&m);
            let mut scratch = plan.scratch();
            let gpu = match bind(&plan, &m, &mut scratch, &refs) {
                Ok(g) => Ok(g),
                Err(RuntimeError::Bind(msg)) => Err(msg),
                Err(e) => panic!("{e}"),
            };
            let interp = host::bind("k", &m.params, &m.grid, &m.requires, &infos).map(|b| b.grid).map_err(|e| format!("kernel `k`: {e}"));
            assert_eq!(gpu, interp, "{params:?} grid {:?} args {infos:?}", m.grid);
            if gpu.is_ok() { accepted += 1 } else { refused += 1 }
        }
        assert!(accepted > 300 && refused > 300, "{accepted} accepted, {refused} refused: the cases are too one-sided");
    }
}
