//! The GPU runtime over cudarc's driver API: a [`Runtime`] on one device (device 0 unless
//! [`Runtime::on_device`] names another), PTX loading, device
//! tensors, streams, and checked kernel launches (the launch path itself is in `launch.rs`).
//!
//! The CUDA driver library (`libcuda.so`) is loaded when [`Runtime::new`] runs; on a machine
//! without one that returns [`RuntimeError::NoDriver`] instead of panicking. Every call into the
//! driver is guarded so that a panic inside cudarc (a missing driver symbol, say) becomes an
//! error too.
//!
//! ```no_run
//! use tessera_runtime::{DeviceArg, Runtime};
//! # fn demo(ptx: &str, meta: &tessera_compiler::KernelMeta, x: &tessera_compiler::HostTensor)
//! #     -> Result<(), tessera_runtime::RuntimeError> {
//! let rt = Runtime::new()?;
//! let kernel = rt.load(ptx, meta)?;
//! let x = rt.upload(x)?;
//! let y = rt.alloc_filled(x.dtype, &x.shape, 0xff)?; // poisoned: NaN until written
//! rt.launch(&kernel, &[DeviceArg::Tensor(&x), DeviceArg::Tensor(&y)])?;
//! let y = rt.download(&y)?;
//! # Ok(()) }
//! ```
//!
//! Streams: the runtime's own stream is the legacy default stream; [`Runtime::new_stream`] makes
//! blocking streams, which the default stream orders against: an upload, a download or the
//! freeing of a tensor (all on the default stream) waits for the kernels queued on every stream
//! before it, and work queued on a stream after it waits for it. Kernels on two streams run
//! concurrently; ordering between them is the caller's, as in CUDA.

use crate::launch::{Plan, Scratch};
use crate::tensor::TensorView;
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute, CUjit_option};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtrMut, DriverError};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use tessera_compiler::{DType, HostTensor, KernelMeta, Scalar, Target};

/// Dynamic shared memory a kernel may use without opting in.
const DEFAULT_SHARED_LIMIT: u32 = 48 * 1024;

/// What can go wrong on the GPU side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// No usable CUDA driver or device on this machine (the library is missing, `cuInit`
    /// failed, or there is no device). The message suggests the interpreter backend.
    #[error("{0}")]
    NoDriver(String),
    /// A CUDA driver call failed; the message says which operation (and kernel).
    #[error("{0}")]
    Cuda(String),
    /// The launch arguments do not fit the kernel's signature.
    #[error("{0}")]
    Bind(String),
    /// The kernel was compiled for another GPU architecture than this device's.
    #[error("{0}")]
    WrongTarget(String),
    /// The kernel needs more of a resource (shared memory, threads) than the device gives.
    #[error("{0}")]
    Resources(String),
    /// A tensor whose bytes do not match its dtype and shape.
    #[error("{0}")]
    BadTensor(String),
    /// PTX and metadata that do not describe the same kernel ([`crate::aot::check_pair`]).
    #[error("{0}")]
    Mismatch(String),
}

/// The message of [`RuntimeError::NoDriver`] when the library cannot be loaded.
const NO_DRIVER: &str = "no CUDA driver found (libcuda.so could not be loaded: is the NVIDIA driver installed and on \
     the library path?); GPU execution is unavailable on this machine, use --backend interp";

/// Runs a driver operation, turning both its error and any panic inside cudarc into a
/// [`RuntimeError::Cuda`] that starts with `what`.
pub(crate) fn guarded<T>(what: impl FnOnce() -> String, f: impl FnOnce() -> Result<T, DriverError>) -> Result<T, RuntimeError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(RuntimeError::Cuda(format!("{}: {}", what(), describe(e)))),
        Err(p) => Err(RuntimeError::Cuda(format!("{}: the CUDA driver wrapper panicked: {}", what(), panic_message(p.as_ref())))),
    }
}

/// `CUDA_ERROR_X (description)` for a driver error.
fn describe(e: DriverError) -> String {
    let name = e.error_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|_| format!("{:?}", e.0));
    match e.error_string() {
        Ok(s) => format!("{name} ({})", s.to_string_lossy()),
        Err(_) => name,
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Whether the CUDA driver library can be loaded (without panicking when it cannot).
pub fn driver_library_present() -> bool {
    // SAFETY: loading the driver library runs its initialisers, which is what every CUDA
    // program does; the library is closed again at once.
    catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() }).unwrap_or(false)
}

/// A CUDA context (the device's primary context, which PyTorch and CuPy use too) and its default
/// stream.
pub struct Runtime {
    ctx: Arc<CudaContext>,
    ordinal: usize,
    stream: Arc<CudaStream>,
    name: String,
    cc: (u32, u32),
    limits: DeviceLimits,
}

/// What a block may use on this device (the autotuner drops configurations over these before
/// launching them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Shared memory per block with the opt-in (bytes).
    pub shared_per_block: u32,
    /// 32-bit registers per block.
    pub registers_per_block: u32,
    pub threads_per_block: u32,
    pub multiprocessors: u32,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Runtime({}, sm_{}{})", self.name, self.cc.0, self.cc.1)
    }
}

/// A kernel loaded into the context, ready to launch.
pub struct LoadedKernel {
    /// What the compiler said about the kernel: parameters, grid, threads, shared memory.
    pub meta: KernelMeta,
    func: CudaFunction,
    regs: i32,
    local_bytes: i32,
    plan: Plan,
    /// The parameter buffer launches write into (one launch at a time per kernel).
    scratch: Mutex<Scratch>,
}

impl std::fmt::Debug for LoadedKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoadedKernel({}, {} registers)", self.meta.name, self.regs)
    }
}

impl LoadedKernel {
    /// Registers per thread, as the driver's JIT assigned them.
    pub fn registers(&self) -> i32 {
        self.regs
    }

    /// Local memory per thread in bytes (register spills and local arrays).
    pub fn local_bytes(&self) -> i32 {
        self.local_bytes
    }

    /// A warning when the driver's JIT (ptxas) spilled registers to local memory: the kernel,
    /// its `const` values, registers and spilled bytes per thread (`run`, `bench` and the
    /// tuner's log print it).
    pub fn spill_warning(&self) -> Option<String> {
        spill_warning(&self.meta, self.regs, self.local_bytes)
    }

    /// The underlying cudarc function, for callers that launch it themselves.
    pub fn function(&self) -> &CudaFunction {
        &self.func
    }
}

/// A dense, row-major array in device memory.
///
/// `buf` holds at least `nbytes()` bytes (one byte for an empty tensor, since the driver does
/// not allocate zero bytes).
#[derive(Debug)]
pub struct DeviceTensor {
    /// Element type.
    pub dtype: DType,
    /// Shape, row-major.
    pub shape: Vec<usize>,
    /// The device memory (little-endian elements, like [`HostTensor::bytes`]).
    pub buf: CudaSlice<u8>,
}

impl DeviceTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of the data in bytes.
    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    /// The whole tensor as a view (to slice or transpose).
    pub fn view(&self) -> TensorView<'_> {
        TensorView::whole(self)
    }

    /// Checks that `buf` is large enough for the shape (a launch checks this for every tensor:
    /// the fields are public, so a shape can outgrow its buffer).
    pub(crate) fn check(&self) -> Result<usize, RuntimeError> {
        let n = checked_nbytes(self.dtype, &self.shape)?;
        if self.buf.len() < n {
            return Err(RuntimeError::BadTensor(format!(
                "device tensor {}{:?} needs {n} bytes, its buffer has {}",
                self.dtype,
                self.shape,
                self.buf.len()
            )));
        }
        Ok(n)
    }
}

/// A tensor in device memory this runtime does not own (a PyTorch or CuPy tensor): its address,
/// dtype, shape and element strides. Made only through the `unsafe` [`ExternalTensor::new`],
/// whose caller vouches for the memory.
#[derive(Debug, Clone, Copy)]
pub struct ExternalTensor {
    ptr: u64,
    dtype: DType,
    rank: usize,
    shape: [usize; crate::tensor::MAX_RANK],
    strides: [i64; crate::tensor::MAX_RANK],
}

impl ExternalTensor {
    /// Describes the tensor at device address `ptr` (element 0) with this shape and these
    /// element strides. Checks what can be checked: the rank, strides not negative, `ptr`
    /// aligned to the element, and the extent (the byte after the last element) within the
    /// address space.
    ///
    /// # Safety
    ///
    /// `ptr` must be an address in the runtime's context (device 0's primary context, which
    /// PyTorch and CuPy share) of memory valid for every element the shape and strides reach,
    /// for as long as a launch that uses the tensor may run.
    pub unsafe fn new(ptr: u64, dtype: DType, shape: &[usize], strides: &[i64]) -> Result<ExternalTensor, RuntimeError> {
        let (sh, st) = crate::tensor::checked_layout("a tensor", shape, strides)?;
        let es = dtype.size() as u64;
        if !ptr.is_multiple_of(es) {
            return Err(RuntimeError::BadTensor(format!("a {dtype} tensor at address {ptr:#x}, not a multiple of {es}")));
        }
        let end = crate::tensor::extent_bytes(0, shape, strides, dtype.size()).and_then(|n| n.checked_add(ptr as u128));
        if end.is_none_or(|e| e > u64::MAX as u128) {
            return Err(RuntimeError::BadTensor(format!("tensor {dtype}{shape:?} with strides {strides:?} is too large")));
        }
        Ok(ExternalTensor { ptr, dtype, rank: shape.len(), shape: sh, strides: st })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape[..self.rank]
    }

    pub fn strides(&self) -> &[i64] {
        &self.strides[..self.rank]
    }

    /// The device address of element 0.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
}

/// One launch argument (`From` conversions exist for tensors, views and Rust scalars).
#[derive(Debug, Clone, Copy)]
pub enum DeviceArg<'a> {
    /// A tensor in device memory (written in place by `&mut` parameters).
    Tensor(&'a DeviceTensor),
    /// A strided view of one (kernels take explicit strides, so any view launches).
    View(TensorView<'a>),
    /// A tensor in memory the runtime does not own.
    External(ExternalTensor),
    /// A scalar, converted to the parameter's dtype.
    Scalar(Scalar),
}

/// A CUDA stream of the runtime's context, ordered against its default stream (see the module
/// documentation). Dropping it waits for its work.
pub struct Stream {
    cuda: Arc<CudaStream>,
    raw: cudarc::driver::sys::CUstream,
}

// SAFETY: a CUstream handle may be used from any thread of the process (the driver API is
// thread-safe); the wrapper holds no thread-bound state.
unsafe impl Send for Stream {}
unsafe impl Sync for Stream {}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stream({:p})", self.raw)
    }
}

impl Stream {
    /// Waits for the work queued on the stream.
    pub fn synchronize(&self) -> Result<(), RuntimeError> {
        guarded(|| "synchronizing a stream".into(), || self.cuda.synchronize())
    }

    /// The cudarc stream (for events and copies of the caller's own).
    pub fn cuda(&self) -> &CudaStream {
        &self.cuda
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let ctx = self.cuda.context();
        ctx.record_err(self.cuda.synchronize());
        // SAFETY: `raw` was made by `cuStreamCreate` in `Runtime::new_stream` and is destroyed
        // only here; the wrapper `cuda` does not own it, and its work has finished.
        ctx.record_err(unsafe { cudarc::driver::result::stream::destroy(self.raw) });
    }
}

fn checked_nbytes(dtype: DType, shape: &[usize]) -> Result<usize, RuntimeError> {
    shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| RuntimeError::BadTensor(format!("tensor {dtype}{shape:?} is too large")))
}

impl Runtime {
    /// Loads the CUDA driver and creates a context on device 0.
    ///
    /// Returns [`RuntimeError::NoDriver`] when the driver library is missing, `cuInit` fails or
    /// there is no device; never panics.
    pub fn new() -> Result<Runtime, RuntimeError> {
        Runtime::on_device(0)
    }

    /// [`Runtime::new`] on device `ordinal` (as CUDA numbers them, after
    /// `CUDA_VISIBLE_DEVICES`); a [`RuntimeError::NoDriver`] names the device count when the
    /// machine has no such device.
    pub fn on_device(ordinal: usize) -> Result<Runtime, RuntimeError> {
        if !driver_library_present() {
            return Err(RuntimeError::NoDriver(NO_DRIVER.into()));
        }
        let no_driver = |e: RuntimeError| {
            RuntimeError::NoDriver(format!(
                "the CUDA driver (libcuda.so) is present but unusable: {e}; GPU execution is unavailable on this \
                 machine, use --backend interp"
            ))
        };
        guarded(|| "cuInit".into(), cudarc::driver::result::init).map_err(no_driver)?;
        let count = guarded(|| "counting CUDA devices".into(), CudaContext::device_count).map_err(no_driver)?;
        if count < 1 {
            return Err(RuntimeError::NoDriver("the CUDA driver found no GPU on this machine; use --backend interp".into()));
        }
        if ordinal >= count as usize {
            return Err(RuntimeError::NoDriver(format!("there is no GPU {ordinal}: the CUDA driver sees {count}")));
        }
        let ctx = guarded(|| format!("creating a CUDA context on device {ordinal}"), || CudaContext::new(ordinal))?;
        let name = guarded(|| "querying the device name".into(), || ctx.name())?;
        let (major, minor) = guarded(|| "querying the compute capability".into(), || ctx.compute_capability())?;
        // SAFETY: no slice exists yet. Without event tracking cudarc adds no events to tensors;
        // ordering across streams comes from the streams themselves: every allocation, copy and
        // free of this runtime is on the legacy default stream, and `new_stream` makes blocking
        // streams, which the default stream is ordered against.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let attr = |a: CUdevice_attribute, what: &str| {
            guarded(|| format!("querying the device's {what}"), || ctx.attribute(a)).map(|v| v.max(0) as u32)
        };
        let limits = DeviceLimits {
            shared_per_block: attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, "shared memory")?,
            registers_per_block: attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK, "registers")?,
            threads_per_block: attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, "thread limit")?,
            multiprocessors: attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "multiprocessor count")?,
        };
        Ok(Runtime { ctx, ordinal, stream, name, cc: (major.max(0) as u32, minor.max(0) as u32), limits })
    }

    /// What a block may use on this device.
    pub fn limits(&self) -> DeviceLimits {
        self.limits
    }

    /// A new stream, ordered against the runtime's default stream (see the module docs).
    pub fn new_stream(&self) -> Result<Stream, RuntimeError> {
        let raw = guarded(
            || "creating a stream".into(),
            || {
                self.ctx.bind_to_thread()?;
                cudarc::driver::result::stream::create(cudarc::driver::result::stream::StreamKind::Default)
            },
        )?;
        // SAFETY: `raw` is a stream of this context, and the returned `Stream` keeps it alive for
        // as long as the wrapper (which it never hands out by value) exists.
        let cuda = unsafe { self.ctx.wrap_borrowed_stream(raw) };
        Ok(Stream { cuda, raw })
    }

    /// The ordinal of the device whose memory `address` is in (a pointer another library
    /// allocated, through its `__cuda_array_interface__`, say); an error when the driver does not
    /// know the address as device memory.
    pub fn device_of(&self, address: u64) -> Result<usize, RuntimeError> {
        let mut ordinal: i32 = -1;
        let r = guarded(
            || format!("asking the driver which device holds address {address:#x}"),
            || {
                self.ctx.bind_to_thread()?;
                // SAFETY: the attribute is an `int` written into `ordinal`; any address may be
                // asked about (an unknown one is an error, not a fault).
                let r = unsafe {
                    cudarc::driver::sys::cuPointerGetAttribute(
                        (&mut ordinal as *mut i32).cast(),
                        cudarc::driver::sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                        address,
                    )
                };
                r.result()
            },
        );
        r?;
        usize::try_from(ordinal).map_err(|_| RuntimeError::Cuda(format!("address {address:#x} is not device memory")))
    }

    /// The device's ordinal (0 for [`Runtime::new`]).
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// The device's compute capability `(major, minor)`, e.g. `(9, 0)`.
    pub fn compute_capability(&self) -> (u32, u32) {
        self.cc
    }

    /// The cudarc context, for callers that need the driver directly. Streams made through it
    /// are not ordered against this runtime's tensors: use [`Runtime::new_stream`].
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every operation of this runtime runs on (the default stream).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Whether code for `target` runs on this device.
    pub fn supports(&self, target: Target) -> bool {
        match target {
            Target::Sm80 => self.cc.0 >= 8,
            // `sm_90a` code uses architecture-specific features: it runs on 9.0 alone.
            Target::Sm90a => self.cc == (9, 0),
        }
    }

    /// Loads a PTX module and its kernel `meta.name`, and checks the kernel's resources against
    /// the device: dynamic shared memory over 48 KiB is opted into
    /// (`CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`) when the device allows it.
    pub fn load(&self, ptx: &str, meta: &KernelMeta) -> Result<LoadedKernel, RuntimeError> {
        let kernel = &meta.name;
        // What a launch packs must be what the kernel reads, whoever made the pair.
        crate::aot::check_pair(meta, ptx).map_err(|e| RuntimeError::Mismatch(format!("kernel `{}`: {e}", kernel.escape_debug())))?;
        if !self.supports(meta.target) {
            let fix = if self.supports(Target::Sm90a) {
                "rebuild it with --target sm_90a"
            } else if self.supports(Target::Sm80) {
                "rebuild it with --target sm_80"
            } else {
                "Tessera needs sm_80 or newer"
            };
            return Err(RuntimeError::WrongTarget(format!(
                "kernel `{kernel}` was compiled for {}, but device 0 ({}) is sm_{}{}; {fix}",
                meta.target.name(),
                self.name,
                self.cc.0,
                self.cc.1,
            )));
        }
        if ptx.contains('\0') || kernel.contains('\0') {
            return Err(RuntimeError::Cuda(format!("kernel `{kernel}`: the PTX or the kernel name contains a NUL byte")));
        }
        let module =
            match guarded(|| format!("loading the PTX of kernel `{kernel}`"), || self.ctx.load_module(cudarc::nvrtc::Ptx::from_src(ptx))) {
                Ok(m) => m,
                Err(RuntimeError::Cuda(msg)) => {
                    let log = self.jit_error_log(ptx).map(|l| format!("\n{l}")).unwrap_or_default();
                    return Err(RuntimeError::Cuda(format!("{msg}{log}")));
                }
                Err(e) => return Err(e),
            };
        let func = guarded(|| format!("the PTX module has no kernel `{kernel}`"), || module.load_function(kernel))?;
        let attr =
            |a: CUfunction_attribute, what: &str| guarded(|| format!("kernel `{kernel}`: querying {what}"), || func.get_attribute(a));
        let regs = attr(CUfunction_attribute::CU_FUNC_ATTRIBUTE_NUM_REGS, "registers")?;
        let local_bytes = attr(CUfunction_attribute::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, "local memory")?;
        let max_threads = attr(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, "the thread limit")?;
        let static_shared = attr(CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, "static shared memory")?;
        if meta.threads == 0 || meta.threads as i64 > max_threads as i64 {
            return Err(RuntimeError::Resources(format!(
                "kernel `{kernel}` needs {} threads per block, but with {regs} registers per thread device 0 ({}) \
                 allows at most {max_threads}; use fewer warps",
                meta.threads, self.name
            )));
        }
        let optin = guarded(
            || "querying the shared-memory limit".into(),
            || self.ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
        )?;
        let total = meta.shared_bytes as i64 + static_shared.max(0) as i64;
        if total > optin as i64 {
            return Err(RuntimeError::Resources(format!(
                "kernel `{kernel}` needs {total} bytes of shared memory per block, but device 0 ({}) allows at most \
                 {optin}; use smaller tiles or fewer pipeline stages",
                self.name
            )));
        }
        if meta.shared_bytes > DEFAULT_SHARED_LIMIT {
            let bytes = i32::try_from(meta.shared_bytes).unwrap_or(i32::MAX);
            guarded(
                || format!("kernel `{kernel}`: allowing {bytes} bytes of dynamic shared memory"),
                || func.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes),
            )?;
        }
        let plan = Plan::new(meta);
        let scratch = Mutex::new(plan.scratch());
        Ok(LoadedKernel { meta: meta.clone(), func, regs, local_bytes, plan, scratch })
    }

    /// Loads `ptx` again with the JIT's error log switched on and returns the log (only used
    /// after a load failed, to explain why).
    fn jit_error_log(&self, ptx: &str) -> Option<String> {
        let src = std::ffi::CString::new(ptx).ok()?;
        let mut log = vec![0u8; 16 * 1024];
        let run = || -> Result<(), DriverError> {
            self.ctx.bind_to_thread()?;
            let mut options = [CUjit_option::CU_JIT_ERROR_LOG_BUFFER, CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES];
            let mut values = [log.as_mut_ptr() as *mut std::ffi::c_void, log.len() as *mut std::ffi::c_void];
            let mut module = std::mem::MaybeUninit::uninit();
            // SAFETY: `src` is a NUL-terminated image, the option arrays have the same length,
            // the log buffer outlives the call and its size is the one passed.
            let r = unsafe {
                cudarc::driver::sys::cuModuleLoadDataEx(
                    module.as_mut_ptr(),
                    src.as_ptr() as *const _,
                    options.len() as u32,
                    options.as_mut_ptr(),
                    values.as_mut_ptr(),
                )
            };
            if r == cudarc::driver::sys::CUresult::CUDA_SUCCESS {
                // SAFETY: the load succeeded, so `module` was written; unload what we loaded.
                unsafe { cudarc::driver::result::module::unload(module.assume_init()) }?;
            }
            Ok(())
        };
        catch_unwind(AssertUnwindSafe(run)).ok()?.ok()?;
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(&log[..end]).trim().to_string();
        (!text.is_empty()).then_some(text)
    }

    /// Allocates `nbytes` (at least one byte).
    fn alloc_bytes(&self, nbytes: usize) -> Result<CudaSlice<u8>, RuntimeError> {
        // SAFETY: the memory is uninitialised bytes; every caller fills it before use (or the
        // kernel writes it), and any bit pattern is a valid u8.
        guarded(|| format!("allocating {nbytes} bytes of device memory"), || unsafe { self.stream.alloc::<u8>(nbytes.max(1)) })
    }

    /// Copies a host tensor to the device.
    pub fn upload(&self, t: &HostTensor) -> Result<DeviceTensor, RuntimeError> {
        let n = checked_nbytes(t.dtype, &t.shape)?;
        if t.bytes.len() != n {
            return Err(RuntimeError::BadTensor(format!(
                "host tensor {}{:?} has {} bytes, its shape needs {n}",
                t.dtype,
                t.shape,
                t.bytes.len()
            )));
        }
        let mut buf = self.alloc_bytes(n)?;
        if n > 0 {
            guarded(|| format!("copying {n} bytes to the device"), || self.stream.memcpy_htod(&t.bytes, &mut buf))?;
        }
        Ok(DeviceTensor { dtype: t.dtype, shape: t.shape.clone(), buf })
    }

    /// Allocates a device tensor with every byte set to `byte_pattern` (0xFF makes every float
    /// a NaN, so outputs a kernel forgets to write stand out).
    pub fn alloc_filled(&self, dtype: DType, shape: &[usize], byte_pattern: u8) -> Result<DeviceTensor, RuntimeError> {
        let n = checked_nbytes(dtype, shape)?;
        let mut buf = self.alloc_bytes(n)?;
        guarded(
            || format!("filling {n} bytes of device memory"),
            || {
                let len = buf.len();
                let (ptr, _record) = buf.device_ptr_mut(&self.stream);
                // SAFETY: `ptr` addresses `len` bytes owned by `buf`, on this runtime's stream.
                unsafe { cudarc::driver::result::memset_d8_async(ptr, byte_pattern, len, self.stream.cu_stream()) }
            },
        )?;
        Ok(DeviceTensor { dtype, shape: shape.to_vec(), buf })
    }

    /// Sets every byte of `t`'s buffer to `byte` (queued on the default stream).
    pub fn fill(&self, t: &mut DeviceTensor, byte: u8) -> Result<(), RuntimeError> {
        let len = t.buf.len();
        guarded(
            || format!("filling {len} bytes of device memory"),
            || {
                let (ptr, _record) = t.buf.device_ptr_mut(&self.stream);
                // SAFETY: `ptr` addresses `len` bytes owned by `t.buf`, on this runtime's stream.
                unsafe { cudarc::driver::result::memset_d8_async(ptr, byte, len, self.stream.cu_stream()) }
            },
        )
    }

    /// Copies a device tensor back to the host (waiting for the work queued before it).
    pub fn download(&self, t: &DeviceTensor) -> Result<HostTensor, RuntimeError> {
        let n = t.check()?;
        // The host side may have less memory than the device: an error, not an abort.
        let mut host = HostTensor::try_zeros(t.dtype, &t.shape).map_err(|e| RuntimeError::BadTensor(e.to_string()))?;
        if n > 0 {
            let view =
                t.buf.try_slice(0..n).ok_or_else(|| RuntimeError::BadTensor(format!("device tensor buffer shorter than {n} bytes")))?;
            guarded(|| format!("copying {n} bytes from the device"), || self.stream.memcpy_dtoh(&view, &mut host.bytes))?;
        }
        self.synchronize()?;
        Ok(host)
    }

    /// Waits for all work queued on the stream.
    pub fn synchronize(&self) -> Result<(), RuntimeError> {
        guarded(|| "synchronizing the device".into(), || self.stream.synchronize())
    }

    /// Checks the arguments against the kernel (dtypes, shapes, dimension symbols,
    /// `#[require]`, buffers large enough), evaluates the grid, packs the parameters, launches
    /// the kernel on the default stream and waits for it. A grid with a zero axis launches
    /// nothing. Bad arguments are an error and launch nothing.
    pub fn launch(&self, k: &LoadedKernel, args: &[DeviceArg<'_>]) -> Result<(), RuntimeError> {
        self.enqueue(&self.stream, k, args)?;
        guarded(|| format!("kernel `{}` failed", k.meta.name), || self.stream.synchronize())
    }

    /// [`Runtime::launch`] without the wait: the kernel is queued on the default stream. Its
    /// faults show at the next synchronising call.
    pub fn launch_async(&self, k: &LoadedKernel, args: &[DeviceArg<'_>]) -> Result<(), RuntimeError> {
        self.enqueue(&self.stream, k, args)
    }

    /// [`Runtime::launch_async`] on another stream of this runtime.
    pub fn launch_on(&self, stream: &Stream, k: &LoadedKernel, args: &[DeviceArg<'_>]) -> Result<(), RuntimeError> {
        self.enqueue(&stream.cuda, k, args)
    }

    /// [`Runtime::launch_async`] on a stream made by other code in the same context (PyTorch's
    /// current stream, a CuPy stream), given by its `CUstream` handle (0: the legacy default
    /// stream). Captured into a CUDA graph when that stream is capturing.
    ///
    /// # Safety
    ///
    /// `stream` must be 0 or a live stream of the runtime's context (its device's primary
    /// context).
    pub unsafe fn launch_on_handle(&self, stream: u64, k: &LoadedKernel, args: &[DeviceArg<'_>]) -> Result<(), RuntimeError> {
        self.enqueue_raw(stream as cudarc::driver::sys::CUstream, k, args)
    }

    /// The floor of any launch path on this driver: `n` calls of `cuLaunchKernel` with the
    /// arguments checked and packed once, then one wait. Returns the time of the `n` calls alone
    /// and the time including the wait (what [`crate::bench::launch_overhead`] compares with).
    pub fn driver_launch_floor(
        &self,
        k: &LoadedKernel,
        args: &[DeviceArg<'_>],
        n: usize,
    ) -> Result<(std::time::Duration, std::time::Duration), RuntimeError> {
        let mut scratch = k.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let stream = &self.stream;
        let grid = k.plan.bind(&k.meta, &mut scratch, args.len(), &mut |i| crate::launch::arg_ref(&args[i], stream))?;
        let start = std::time::Instant::now();
        guarded(
            || format!("launching kernel `{}`", k.meta.name),
            || {
                self.ctx.bind_to_thread()?;
                for _ in 0..n {
                    // SAFETY: as in `enqueue`: the buffer was packed for this kernel by
                    // `Plan::bind` just now and stays locked, and every tensor is borrowed.
                    unsafe {
                        cudarc::driver::result::launch_kernel(
                            k.func.cu_function(),
                            (grid[0], grid[1], grid[2]),
                            (k.meta.threads, 1, 1),
                            k.meta.shared_bytes,
                            stream.cu_stream(),
                            scratch.params(),
                        )?
                    };
                }
                Ok(())
            },
        )?;
        let submit = start.elapsed();
        self.synchronize()?;
        Ok((submit, start.elapsed()))
    }

    fn enqueue(&self, stream: &CudaStream, k: &LoadedKernel, args: &[DeviceArg<'_>]) -> Result<(), RuntimeError> {
        self.enqueue_raw(stream.cu_stream(), k, args)
    }

    fn enqueue_raw(&self, stream: cudarc::driver::sys::CUstream, k: &LoadedKernel, args: &[DeviceArg<'_>]) -> Result<(), RuntimeError> {
        let mut scratch = k.scratch.lock().unwrap_or_else(|e| e.into_inner());
        // Buffers of this runtime are addressed through its default stream (event tracking is
        // off: nothing is recorded on it).
        let own = &self.stream;
        let grid = k.plan.bind(&k.meta, &mut scratch, args.len(), &mut |i| crate::launch::arg_ref(&args[i], own))?;
        let [gx, gy, gz] = grid;
        if gx == 0 || gy == 0 || gz == 0 {
            return Ok(());
        }
        let kernel = &k.meta.name;
        guarded(
            || format!("launching kernel `{kernel}` (grid {grid:?}, {} threads, {} bytes shared)", k.meta.threads, k.meta.shared_bytes),
            || {
                self.ctx.bind_to_thread()?;
                // SAFETY: the parameter addresses point into the scratch buffer, which holds one
                // value per PTX parameter of the kernel in the ABI of `KernelMeta::params`
                // (checked by `Plan::bind` just now) and stays locked until the call returns;
                // every tensor pointer addresses a live buffer at least as large as its shape or
                // view, borrowed for the duration of this call, and freed only on the default
                // stream, after this kernel.
                unsafe {
                    cudarc::driver::result::launch_kernel(
                        k.func.cu_function(),
                        (gx, gy, gz),
                        (k.meta.threads, 1, 1),
                        k.meta.shared_bytes,
                        stream,
                        scratch.params(),
                    )
                }
            },
        )
    }
}

/// The text of [`LoadedKernel::spill_warning`] for `meta` with `regs` registers and
/// `local_bytes` bytes of local memory per thread (`None` without local memory).
pub fn spill_warning(meta: &KernelMeta, regs: i32, local_bytes: i32) -> Option<String> {
    if local_bytes <= 0 {
        return None;
    }
    let consts: Vec<String> = meta.consts.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let config = if consts.is_empty() { String::new() } else { format!(" ({})", consts.join(", ")) };
    Some(format!(
        "warning: kernel `{}`{config} spills registers: {regs} registers and {local_bytes} bytes of local memory per \
         thread ({} threads); it runs slower than it could: try smaller tiles or another configuration (`--tune`)",
        meta.name, meta.threads
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel that spilled is named with its `const` values, registers and bytes; one that
    /// did not gets no warning.
    #[test]
    fn spills_are_reported_with_the_config() {
        let src = tessera_compiler::Source::new(
            "k.tile",
            "#[grid(1)]\nkernel k<const B: i32 = 64>(x: &mut f32[N]) { x.store([0], full([B], 0.0)); }",
        );
        let m = tessera_compiler::compile(&src, &tessera_compiler::Options::default()).unwrap_or_else(|d| panic!("{}", d.render()));
        let meta = &m.kernels[0].meta;
        assert_eq!(spill_warning(meta, 40, 0), None);
        let w = spill_warning(meta, 255, 56).unwrap_or_default();
        assert!(w.starts_with("warning: kernel `k` (B=64) spills registers: 255 registers and 56 bytes"), "{w}");
    }

    #[test]
    fn new_reports_a_missing_driver_without_panicking() {
        let present = driver_library_present();
        match Runtime::new() {
            Ok(rt) => {
                assert!(present);
                assert!(!rt.device_name().is_empty());
                assert!(rt.compute_capability().0 >= 1);
            }
            Err(RuntimeError::NoDriver(msg)) => {
                assert!(msg.contains("--backend interp"), "{msg}");
                if !present {
                    assert!(msg.starts_with("no CUDA driver found (libcuda.so"), "{msg}");
                }
            }
            Err(e) => panic!("expected NoDriver or a runtime, got {e:?}"),
        }
        // A second attempt behaves the same (nothing half-initialised is left behind).
        if !present {
            assert!(matches!(Runtime::new(), Err(RuntimeError::NoDriver(_))));
        }
    }

    #[test]
    fn guarded_turns_panics_into_errors() {
        let r: Result<(), _> = guarded(|| "doing a thing".into(), || panic!("Missing symbol cuFoo"));
        match r {
            Err(RuntimeError::Cuda(m)) => assert!(m.starts_with("doing a thing: ") && m.contains("Missing symbol cuFoo"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn external_tensors_are_checked() {
        // SAFETY (all): the tensors are never launched; only the checks run.
        let ok = unsafe { ExternalTensor::new(0x1000, DType::BF16, &[3, 5], &[1, 3]) }.expect("a transposed view");
        assert_eq!((ok.shape(), ok.strides(), ok.ptr()), (&[3, 5][..], &[1, 3][..], 0x1000));
        let err = |r: Result<ExternalTensor, RuntimeError>| match r {
            Err(RuntimeError::BadTensor(m)) => m,
            other => panic!("expected BadTensor, got {other:?}"),
        };
        assert!(err(unsafe { ExternalTensor::new(0x1001, DType::F32, &[4], &[1]) }).contains("not a multiple of 4"));
        assert!(err(unsafe { ExternalTensor::new(0x1000, DType::F32, &[4], &[-1]) }).contains("negative"));
        assert!(err(unsafe { ExternalTensor::new(0x1000, DType::F32, &[4, 4], &[1]) }).contains("one stride per dimension"));
        assert!(err(unsafe { ExternalTensor::new(0x1000, DType::F32, &[9; 9], &[1; 9]) }).contains("rank at most 8"));
        assert!(err(unsafe { ExternalTensor::new(u64::MAX - 7, DType::F32, &[4], &[1]) }).contains("too large"));
        assert!(err(unsafe { ExternalTensor::new(0, DType::F32, &[usize::MAX, 2], &[1 << 40, 1]) }).contains("too large"));
        // An empty dimension reaches no element: any strides.
        assert!(unsafe { ExternalTensor::new(0x1000, DType::F32, &[0, 7], &[1 << 60, 1]) }.is_ok());
    }

    #[test]
    fn nbytes_overflow_is_an_error() {
        assert!(matches!(checked_nbytes(DType::F64, &[usize::MAX, 2]), Err(RuntimeError::BadTensor(_))));
        assert_eq!(checked_nbytes(DType::F16, &[3, 0]).ok(), Some(0));
        assert_eq!(checked_nbytes(DType::F32, &[]).ok(), Some(4));
    }
}
