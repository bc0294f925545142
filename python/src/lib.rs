//! `tessera._tessera`: the native half of the Python package. It compiles `.tile` sources with
//! the compiler crate and runs kernels on the reference interpreter over host tensors passed as
//! `(dtype, shape, bytes)`, or on a GPU (the runtime crate, in each device's primary context,
//! which PyTorch and CuPy share) over device tensors passed as `(address, dtype, shape, strides)` on a
//! stream given by its handle; the Python half (`py/tessera/__init__.py`) turns NumPy arrays and
//! torch/CuPy tensors into those. Errors are the package's exceptions, carrying the rendered
//! diagnostic.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyCapsule, PyDict, PyFloat, PyInt, PyList, PyTuple, PyType};
use std::sync::{Arc, OnceLock};
use tessera_compiler::interp::{self, Arg, RunOptions};
use tessera_compiler::tir::{ConstValue, ParamKind};
use tessera_compiler::{DType, HostTensor, KernelMeta, Options, Scalar, Source, Target, tir};
use tessera_runtime::bench::TimingOptions;
use tessera_runtime::cache::{Artifacts, Cache};
use tessera_runtime::tune::{self, TuneRequest};
use tessera_runtime::{DeviceArg, ExternalTensor, LoadedKernel, Runtime};

create_exception!(_tessera, TesseraError, PyException, "Any error of the Tessera package.");
create_exception!(_tessera, CompileError, TesseraError, "A `.tile` source failed to compile; the message is the rendered diagnostic.");
create_exception!(
    _tessera,
    LaunchError,
    TesseraError,
    "A kernel's arguments do not fit its signature, a `#[require]` failed, or the run failed."
);

/// The compiled kernels of one source.
#[pyclass(frozen, module = "tessera._tessera")]
struct Module {
    kernels: Vec<Arc<Entry>>,
    /// Where the build came from: the compile cache's `Hit::name` ("miss", "memory", "disk").
    hit: &'static str,
}

/// What a module was compiled from (for the interpreter's tile IR, made on demand, and for
/// tuning).
struct Build {
    src: Source,
    opts: Options,
}

/// A compiled kernel, as the compile cache keeps it, and what is made of it on demand.
struct Entry {
    /// `None` for a kernel loaded ahead of time (no source: it runs on the GPU only).
    build: Option<Arc<Build>>,
    meta: KernelMeta,
    ptx: String,
    /// The tile IR the interpreter runs: kept from a compile, or made by the frontend when the
    /// build came from the cache.
    tir: OnceLock<Result<tir::Kernel, String>>,
    /// The kernel loaded on each GPU (by ordinal), once it has run there.
    loaded: [OnceLock<Result<LoadedKernel, String>>; MAX_DEVICES],
}

impl Entry {
    /// What it was compiled from, or an error for a kernel loaded ahead of time.
    fn build(&self) -> PyResult<&Arc<Build>> {
        self.build.as_ref().ok_or_else(|| {
            LaunchError::new_err(format!(
                "kernel `{}` was loaded ahead of time, without its source: it runs on the GPU only, and cannot be tuned",
                self.meta.name
            ))
        })
    }

    fn tir(&self) -> PyResult<&tir::Kernel> {
        let build = self.build()?;
        let made = self.tir.get_or_init(|| {
            let kernels = tessera_compiler::frontend(&build.src, &build.opts).map_err(|d| d.render())?;
            kernels.into_iter().find(|k| k.name == self.meta.name).ok_or_else(|| format!("the source lost kernel `{}`", self.meta.name))
        });
        made.as_ref().map_err(|e| LaunchError::new_err(e.clone()))
    }

    fn loaded(&self, rt: &Runtime) -> PyResult<&LoadedKernel> {
        let slot = self
            .loaded
            .get(rt.ordinal())
            .ok_or_else(|| LaunchError::new_err(format!("GPU {} is past the {MAX_DEVICES} Tessera runs on", rt.ordinal())))?;
        let loaded = slot.get_or_init(|| rt.load(&self.ptx, &self.meta).map_err(|e| e.to_string()));
        loaded.as_ref().map_err(|e| LaunchError::new_err(e.clone()))
    }
}

/// Compiles `build` through the compile cache the CLI uses (`TESSERA_CACHE_DIR`).
fn compile_build(py: Python<'_>, build: Build) -> PyResult<Module> {
    let build = Arc::new(build);
    let (b, mut kept) = (build.clone(), None);
    // Compiling is pure CPU work that may take a while: other Python threads run meanwhile.
    let cached = py.allow_threads(|| {
        Cache::global().get_or_compile_with(&b.src, &b.opts, || {
            let m = tessera_compiler::compile(&b.src, &b.opts)?;
            let artifacts = Artifacts::from_module(&m);
            kept = Some(m.kernels);
            Ok(artifacts)
        })
    });
    let cached = cached.map_err(|d| CompileError::new_err(d.render()))?;
    let mut kept = kept.unwrap_or_default();
    let kernels = cached
        .artifacts
        .kernels
        .iter()
        .map(|a| {
            let tir = OnceLock::new();
            if let Some(at) = kept.iter().position(|k| k.meta.name == a.meta.name) {
                let _ = tir.set(Ok(kept.swap_remove(at).tir));
            }
            Arc::new(Entry { build: Some(build.clone()), meta: a.meta.clone(), ptx: a.ptx.clone(), tir, loaded: not_loaded() })
        })
        .collect();
    Ok(Module { kernels, hit: cached.hit.name() })
}

/// One compiled kernel.
#[pyclass(frozen, module = "tessera._tessera")]
struct Kernel {
    e: Arc<Entry>,
}

/// GPUs a process may launch on (ordinals 0 to this, less one).
const MAX_DEVICES: usize = 64;

fn not_loaded() -> [OnceLock<Result<LoadedKernel, String>>; MAX_DEVICES] {
    std::array::from_fn(|_| OnceLock::new())
}

/// The GPU runtime of the process on device `device` (its primary context), made on first use
/// (or why there is none).
fn runtime(device: usize) -> Result<&'static Runtime, String> {
    static RT: [OnceLock<Result<Runtime, String>>; MAX_DEVICES] = [const { OnceLock::new() }; MAX_DEVICES];
    let slot = RT.get(device).ok_or_else(|| format!("GPU {device} is past the {MAX_DEVICES} Tessera runs on"))?;
    slot.get_or_init(|| Runtime::on_device(device).map_err(|e| e.to_string())).as_ref().map_err(Clone::clone)
}

/// `(address, dtype code, shape, strides)` as an external tensor (see `Kernel::launch_gpu`).
fn device_tensor(t: &Bound<'_, PyTuple>) -> Result<ExternalTensor, String> {
    let bad = || "not a device tensor (address, dtype, shape, strides)".to_string();
    if t.len() != 4 {
        return Err(bad());
    }
    let item = |i: usize| t.get_borrowed_item(i).map_err(|_| bad());
    let ptr = item(0)?.extract::<u64>().map_err(|_| bad())?;
    let code = item(1)?.extract::<usize>().map_err(|_| bad())?;
    let dtype = *DType::ALL.get(code).ok_or_else(bad)?;
    let (shape, strides) = (item(2)?, item(3)?);
    let (shape, strides) = (shape.downcast::<PyTuple>().map_err(|_| bad())?, strides.downcast::<PyTuple>().map_err(|_| bad())?);
    external_tensor(ptr, dtype, shape, strides)
}

/// A device tensor from its address, dtype and the tuples of its shape and element strides.
fn external_tensor(ptr: u64, dtype: DType, shape: &Bound<'_, PyTuple>, strides: &Bound<'_, PyTuple>) -> Result<ExternalTensor, String> {
    const MAX: usize = tessera_runtime::tensor::MAX_RANK;
    let rank = shape.len();
    if rank > MAX || strides.len() != rank {
        return Err(format!("shape {shape} and strides {strides} of a tensor of rank at most {MAX}"));
    }
    let bad = || format!("shape {shape} and strides {strides} are not tuples of integers");
    let (mut sh, mut st) = ([0usize; MAX], [0i64; MAX]);
    for d in 0..rank {
        sh[d] = shape.get_borrowed_item(d).and_then(|x| x.extract()).map_err(|_| bad())?;
        st[d] = strides.get_borrowed_item(d).and_then(|x| x.extract()).map_err(|_| bad())?;
    }
    // SAFETY: the caller's promise on `Kernel::launch_gpu` and `Launcher::__call__` (the Python
    // half passes only tensors it found on the launch's GPU, kept alive by the caller's references
    // during the call, and stream-ordered after it as PyTorch's and CuPy's allocators are).
    unsafe { ExternalTensor::new(ptr, dtype, &sh[..rank], &st[..rank]) }.map_err(|e| e.to_string())
}

/// The C structs of a DLPack capsule (`dlpack.h`, version 0.x: what `__dlpack__()` returns
/// unless asked for a versioned one).
mod dl {
    #[repr(C)]
    pub struct Device {
        pub device_type: i32,
        pub device_id: i32,
    }

    #[repr(C)]
    pub struct DataType {
        pub code: u8,
        pub bits: u8,
        pub lanes: u16,
    }

    #[repr(C)]
    pub struct Tensor {
        pub data: *mut std::ffi::c_void,
        pub device: Device,
        pub ndim: i32,
        pub dtype: DataType,
        pub shape: *const i64,
        pub strides: *const i64,
        pub byte_offset: u64,
    }
}

/// `dlpack_tensor`'s answer.
type DlInfo = (u64, (i32, i32), usize, Vec<usize>, Vec<i64>);

/// What a DLPack capsule (`__dlpack__()`, not yet consumed) describes: `(address of element 0,
/// (device type, device id), dtype code, shape, element strides)`. The capsule is only read: it
/// stays the producer's (its destructor frees it), so the array must outlive the launch, as the
/// caller's reference makes it.
#[pyfunction]
fn dlpack_tensor(capsule: &Bound<'_, PyCapsule>) -> PyResult<DlInfo> {
    let v = dl_view(capsule).map_err(LaunchError::new_err)?;
    let code = DType::ALL.iter().position(|&d| d == v.dtype).unwrap_or_default();
    let shape = v.shape[..v.rank].to_vec();
    Ok((v.ptr, v.device, code, shape, v.strides[..v.rank].to_vec()))
}

/// What a DLPack capsule describes (see `dlpack_tensor`), without allocating.
struct DlView {
    ptr: u64,
    device: (i32, i32),
    dtype: DType,
    rank: usize,
    shape: [usize; tessera_runtime::tensor::MAX_RANK],
    strides: [i64; tessera_runtime::tensor::MAX_RANK],
}

/// Reads a DLPack capsule (`__dlpack__()` or `torch._C._to_dlpack`, not yet consumed).
fn dl_view(capsule: &Bound<'_, PyCapsule>) -> Result<DlView, String> {
    const MAX: usize = tessera_runtime::tensor::MAX_RANK;
    let bad = |why: &str| format!("not a DLPack tensor capsule: {why}");
    if capsule.name().ok().flatten().map(|n| n.to_bytes()) != Some(b"dltensor".as_slice()) {
        return Err(bad("its name is not `dltensor` (used already, or a versioned capsule)"));
    }
    let t = capsule.pointer().cast::<dl::Tensor>();
    if t.is_null() {
        return Err(bad("a null pointer"));
    }
    // SAFETY: a capsule named "dltensor" holds a `DLManagedTensor` (the protocol), whose first
    // field is the `DLTensor`; the capsule (and so the tensor) lives while `capsule` is borrowed.
    let t = unsafe { &*t };
    let rank = usize::try_from(t.ndim).ok().filter(|&r| r <= MAX).ok_or_else(|| bad("a rank above 8"))?;
    let (code, bits, lanes) = (t.dtype.code, t.dtype.bits, t.dtype.lanes);
    let dtype = match (code, bits, lanes) {
        (0, 8, 1) => DType::I8,
        (0, 16, 1) => DType::I16,
        (0, 32, 1) => DType::I32,
        (0, 64, 1) => DType::I64,
        (1, 8, 1) => DType::U8,
        (1, 32, 1) => DType::U32,
        (1, 64, 1) => DType::U64,
        (2, 16, 1) => DType::F16,
        (2, 32, 1) => DType::F32,
        (2, 64, 1) => DType::F64,
        (4, 16, 1) => DType::BF16,
        (6, 8, 1) => DType::Bool,
        _ => return Err(format!("DLPack dtype (code {code}, {bits} bits, {lanes} lanes) has no Tessera dtype")),
    };
    if rank > 0 && t.shape.is_null() {
        return Err(bad("no shape"));
    }
    let (mut shape, mut strides) = ([0usize; MAX], [0i64; MAX]);
    for (k, n) in shape.iter_mut().enumerate().take(rank) {
        // SAFETY: the protocol's `shape` (and, when not null, `strides`) hold `ndim` values.
        *n = usize::try_from(unsafe { *t.shape.add(k) }).map_err(|_| bad("a negative size"))?;
    }
    if t.strides.is_null() {
        // Compact row-major.
        let mut acc = 1i64;
        for k in (0..rank).rev() {
            strides[k] = acc;
            acc = acc.saturating_mul(shape[k] as i64);
        }
    } else {
        for (k, s) in strides.iter_mut().enumerate().take(rank) {
            // SAFETY: as above.
            *s = unsafe { *t.strides.add(k) };
        }
    }
    let ptr = (t.data as u64).checked_add(t.byte_offset).ok_or_else(|| bad("its address overflows"))?;
    Ok(DlView { ptr, device: (t.device.device_type, t.device.device_id), dtype, rank, shape, strides })
}

/// The dtype codes of `Kernel::launch_gpu`: each dtype's name and index.
#[pyfunction]
fn dtype_codes() -> Vec<(String, usize)> {
    DType::ALL.iter().enumerate().map(|(i, d)| (d.to_string(), i)).collect()
}

/// The ordinal of the GPU whose memory `address` is in (for `__cuda_array_interface__` arrays,
/// which do not say).
#[pyfunction]
fn device_of(address: u64) -> PyResult<usize> {
    let rt = runtime(0).map_err(LaunchError::new_err)?;
    rt.device_of(address).map_err(|e| LaunchError::new_err(e.to_string()))
}

/// Whether a GPU can run kernels here; else why not.
#[pyfunction]
fn gpu_status() -> (bool, String) {
    match runtime(0) {
        Ok(rt) => (true, rt.device_name().to_string()),
        Err(e) => (false, e),
    }
}

fn target_of(name: Option<&str>) -> PyResult<Target> {
    match name {
        None | Some("sm_90a") => Ok(Target::Sm90a),
        Some("sm_80") => Ok(Target::Sm80),
        Some(other) => Err(CompileError::new_err(format!("unknown target `{other}` (sm_90a or sm_80)"))),
    }
}

/// Compiles `text` (named `name` in diagnostics; `path`, when given, is where its imports are
/// read from) with the const overrides `consts`.
#[pyfunction]
#[pyo3(signature = (name, text, path=None, consts=Vec::new(), target=None))]
fn compile(
    py: Python<'_>,
    name: &str,
    text: &str,
    path: Option<&str>,
    consts: Vec<(String, Bound<'_, PyAny>)>,
    target: Option<&str>,
) -> PyResult<Module> {
    let mut src = Source::new(name, text);
    if let Some(p) = path {
        src = src.with_path(p);
    }
    let mut values = vec![];
    for (k, v) in consts {
        // `bool` first: Python's `True` is also an `int`.
        let value = if let Ok(b) = v.extract::<bool>() {
            ConstValue::Bool(b)
        } else if let Ok(i) = v.extract::<i64>() {
            ConstValue::Int(i)
        } else if v.is_instance_of::<PyInt>() {
            return Err(CompileError::new_err(format!("const `{k}` = {v} does not fit 64 bits")));
        } else {
            return Err(CompileError::new_err(format!("const `{k}` must be an int or a bool")));
        };
        values.push((k, value));
    }
    let opts = Options { consts: values, target: target_of(target)?, ..Options::default() };
    compile_build(py, Build { src, opts })
}

/// The most kernels `load_aot` reads from one folder.
const MAX_AOT_KERNELS: usize = 4096;

/// Loads the ahead-of-time kernels in `dir`: every `KERNEL.json` with its `KERNEL.ptx`, as
/// `tessera build FILE --emit ptx,meta -o DIR` writes them (each pair checked: the metadata
/// describes the PTX and this version of Tessera wrote it). They run on the GPU only.
#[pyfunction]
fn load_aot(py: Python<'_>, dir: &str) -> PyResult<Module> {
    let path = std::path::Path::new(dir);
    let entries = std::fs::read_dir(path).map_err(|e| LaunchError::new_err(format!("`{dir}`: {e}")))?;
    let mut names = vec![];
    for entry in entries {
        let entry = entry.map_err(|e| LaunchError::new_err(format!("`{dir}`: {e}")))?;
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
        if tessera_runtime::aot::is_kernel_name(name) && path.join(format!("{name}.ptx")).is_file() {
            names.push(name.to_string());
        }
        if names.len() > MAX_AOT_KERNELS {
            return Err(LaunchError::new_err(format!("`{dir}` holds more than {MAX_AOT_KERNELS} kernels")));
        }
    }
    if names.is_empty() {
        return Err(LaunchError::new_err(format!("`{dir}` holds no kernel (KERNEL.json with KERNEL.ptx)")));
    }
    names.sort();
    let read = py.allow_threads(|| {
        names.iter().map(|n| tessera_runtime::aot::AotKernel::read(path, n).map_err(|e| e.to_string())).collect::<Result<Vec<_>, _>>()
    });
    let kernels = read.map_err(LaunchError::new_err)?;
    let kernels = kernels
        .into_iter()
        .map(|k| Arc::new(Entry { build: None, meta: k.meta, ptx: k.ptx, tir: OnceLock::new(), loaded: not_loaded() }))
        .collect();
    Ok(Module { kernels, hit: "aot" })
}

/// Reads and compiles the `.tile` file at `path` (checked before it is read whole).
#[pyfunction]
#[pyo3(signature = (path, consts=Vec::new(), target=None))]
fn compile_file(py: Python<'_>, path: &str, consts: Vec<(String, Bound<'_, PyAny>)>, target: Option<&str>) -> PyResult<Module> {
    let src = Source::from_file(path).map_err(|e| {
        // `compile` takes a string without a newline as a path: say so when it names nothing.
        let hint = if matches!(e, tessera_compiler::files::FileError::NotFound) {
            " (`tessera.compile` reads a string as source text only when it has a newline)"
        } else {
            ""
        };
        CompileError::new_err(format!("cannot read `{path}`: {e}{hint}"))
    })?;
    let path_str = src.path.as_ref().map(|p| p.display().to_string());
    compile(py, &src.name, &src.text, path_str.as_deref(), consts, target)
}

#[pymethods]
impl Module {
    /// The kernels' names, in source order.
    fn names(&self) -> Vec<String> {
        self.kernels.iter().map(|e| e.meta.name.clone()).collect()
    }

    /// Where the build came from: the compile cache's "miss", "memory" or "disk".
    #[getter]
    fn cache(&self) -> &'static str {
        self.hit
    }

    /// The kernel called `name`.
    fn kernel(&self, name: &str) -> PyResult<Kernel> {
        match self.kernels.iter().find(|e| e.meta.name == name) {
            Some(e) => Ok(Kernel { e: e.clone() }),
            None => Err(LaunchError::new_err(format!("no kernel `{name}` (kernels: {})", self.names().join(", ")))),
        }
    }
}

fn dtype_of(name: &str) -> PyResult<DType> {
    DType::parse(name).ok_or_else(|| LaunchError::new_err(format!("Tessera has no dtype `{name}`")))
}

#[pymethods]
impl Kernel {
    #[getter]
    fn name(&self) -> String {
        self.e.meta.name.clone()
    }

    /// The parameters: `(name, kind, dtype, rank, writable)` with kind `"tensor"` or
    /// `"scalar"` (rank 0 for scalars).
    fn params(&self) -> Vec<(String, &'static str, String, usize, bool)> {
        self.e
            .meta
            .params
            .iter()
            .map(|p| match &p.kind {
                ParamKind::Tensor { dtype, dims, mutable } => (p.name.clone(), "tensor", dtype.to_string(), dims.len(), *mutable),
                ParamKind::Scalar { dtype } => (p.name.clone(), "scalar", dtype.to_string(), 0, false),
            })
            .collect()
    }

    /// Writes the kernel's ahead-of-time pair, `DIR/NAME.ptx` and `DIR/NAME.json` (what
    /// `tessera build --emit ptx,meta -o DIR` writes; `load_aot` reads it back).
    fn save_aot(&self, dir: &str) -> PyResult<()> {
        let k = tessera_runtime::aot::AotKernel { meta: self.e.meta.clone(), ptx: self.e.ptx.clone() };
        k.write(std::path::Path::new(dir)).map(|_| ()).map_err(|e| LaunchError::new_err(format!("writing the kernel to `{dir}`: {e}")))
    }

    /// The PTX of the kernel.
    #[getter]
    fn ptx(&self) -> String {
        self.e.ptx.clone()
    }

    /// Runs the kernel on the interpreter. `args`: per parameter, `(dtype, shape, bytes)` for a
    /// tensor (row-major, little-endian) or a Python `int`/`float`/`bool` for a scalar. Returns
    /// the bytes of every writable tensor after the run (`None` for the other parameters) and
    /// what the kernel printed.
    fn run_interp<'py>(&self, py: Python<'py>, args: Vec<Bound<'py, PyAny>>) -> PyResult<(Vec<Option<Bound<'py, PyBytes>>>, String)> {
        let mut host = Vec::with_capacity(args.len());
        for a in &args {
            if let Ok((dtype, shape, bytes)) = a.extract::<(String, Vec<usize>, Vec<u8>)>() {
                let dtype = dtype_of(&dtype)?;
                // The bytes must be exactly the tensor's (the interpreter indexes them by shape).
                if HostTensor::byte_len(dtype, &shape) != Some(bytes.len()) {
                    return Err(LaunchError::new_err(format!(
                        "argument {}: {} bytes are not a {dtype}{shape:?} tensor",
                        host.len(),
                        bytes.len()
                    )));
                }
                host.push(Arg::Tensor(HostTensor { dtype, shape, bytes }));
            } else if let Ok(b) = a.extract::<bool>() {
                host.push(Arg::Scalar(Scalar::Bool(b)));
            } else if let Ok(i) = a.extract::<i64>() {
                host.push(Arg::Scalar(Scalar::Int(i)));
            } else if let Ok(f) = a.extract::<f64>() {
                host.push(Arg::Scalar(Scalar::Float(f)));
            } else {
                return Err(LaunchError::new_err(format!("argument {} is neither a tensor nor an int, float or bool", host.len())));
            }
        }
        let tir = self.e.tir()?;
        let (result, printed) = py.allow_threads(|| {
            let mut out = Vec::new();
            let r = interp::run_kernel_with(tir, &mut host, &RunOptions::default(), &mut out);
            (r.map(|()| host), out)
        });
        let host = result.map_err(|e| LaunchError::new_err(e.to_string()))?;
        let writable: Vec<bool> = self.e.meta.params.iter().map(|p| matches!(p.kind, ParamKind::Tensor { mutable: true, .. })).collect();
        let outs = host
            .iter()
            .zip(writable.iter().chain(std::iter::repeat(&false)))
            .map(|(a, &w)| match a {
                Arg::Tensor(t) if w => Some(PyBytes::new(py, &t.bytes)),
                _ => None,
            })
            .collect();
        Ok((outs, String::from_utf8_lossy(&printed).into_owned()))
    }

    /// Launches the kernel on the GPU on the stream with handle `stream` (0: the legacy default
    /// stream), without waiting. `args`: per parameter, `(address, dtype, shape, strides)` for a
    /// tensor in device memory (`dtype` its index in `dtype_codes()`, `shape` and element
    /// `strides` tuples) or a Python `int`/`float`/`bool` for a scalar. Every check (dtypes,
    /// ranks, shapes, `#[require]`) happens before the launch.
    ///
    /// The caller (the Python half) vouches that each address is memory of GPU `device`
    /// covering the shape and strides, alive until the kernel has run, and that `stream` is a
    /// stream of that device's primary context.
    #[pyo3(signature = (args, stream, device=0))]
    fn launch_gpu(&self, args: &Bound<'_, PyList>, stream: u64, device: usize) -> PyResult<()> {
        let rt = runtime(device).map_err(LaunchError::new_err)?;
        let loaded = self.e.loaded(rt)?;
        let dev = device_args(args)?;
        // SAFETY: as above, for the stream.
        unsafe { rt.launch_on_handle(stream, loaded, &dev) }.map_err(|e| LaunchError::new_err(e.to_string()))
    }

    /// Autotunes the kernel over its `#[tune]` space on `args` (as for `launch_gpu`; the
    /// kernel's outputs are overwritten by every configuration tried) or takes the winner the
    /// tuning cache has for this shape bucket and device (unless `retune`). `progress`, when
    /// given, is called as `progress(compiled, timed, total, best)` with `best` the fastest
    /// `(ms, configuration)` so far or `None`. Returns the winner's kernel (compiled through the
    /// cache), the table of configurations tried (with the tuner's notes) and whether the
    /// winner came from the tuning cache.
    #[pyo3(signature = (args, retune=false, progress=None, device=0))]
    fn tune(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyList>,
        retune: bool,
        progress: Option<Bound<'_, PyAny>>,
        device: usize,
    ) -> PyResult<(Kernel, String, bool)> {
        let rt = runtime(device).map_err(LaunchError::new_err)?;
        let dev = device_args(args)?;
        let build = self.e.build()?;
        let name = self.e.meta.name.clone();
        let base = Options { kernel: Some(name.clone()), ..build.opts.clone() };
        let req = TuneRequest {
            src: &build.src,
            opts: &base,
            kernel: &name,
            meta: &self.e.meta,
            timing: TimingOptions { warmup_ms: 10.0, rep_ms: 40.0, min_reps: 3, ..TimingOptions::default() },
            retune,
        };
        let mut notes = vec![];
        let mut failed: Option<PyErr> = None;
        let tuned = tune::tune(rt, Cache::global(), &req, &dev, &mut notes, &mut |p| {
            if let (Some(cb), None) = (&progress, &failed) {
                let best = p.best.as_ref().map(|(ms, c)| (*ms, c.clone()));
                if let Err(e) = cb.call1((p.compiled, p.timed, p.total, best)) {
                    failed = Some(e);
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        let tuned = tuned.map_err(|e| LaunchError::new_err(e.to_string()))?;
        let opts = tuned.best().config.apply(&base);
        let module = compile_build(py, Build { src: build.src.clone(), opts })?;
        let e = module
            .kernels
            .into_iter()
            .find(|e| e.meta.name == name)
            .ok_or_else(|| LaunchError::new_err(format!("the tuned build lost kernel `{name}`")))?;
        let mut table = tuned.table();
        for n in notes {
            table.push_str(&n);
            table.push('\n');
        }
        Ok((Kernel { e }, table, tuned.from_cache))
    }
}

/// The device arguments of `Kernel::launch_gpu` and `Kernel::tune`.
fn device_args(args: &Bound<'_, PyList>) -> PyResult<Vec<DeviceArg<'static>>> {
    let mut dev = Vec::with_capacity(args.len());
    for (i, a) in args.iter().enumerate() {
        // Type checks before extractions (a failed extraction builds an exception, which costs
        // more than the launch), and no allocation per tensor: this is the launch overhead
        // Python users see.
        if let Ok(t) = a.downcast::<PyTuple>() {
            let t = device_tensor(t).map_err(|e| LaunchError::new_err(format!("argument {i}: {e}")))?;
            dev.push(DeviceArg::External(t));
        } else if let Some(s) = scalar_arg(i, &a) {
            dev.push(s?);
        } else {
            return Err(LaunchError::new_err(format!("argument {i} is neither a device tensor nor an int, float or bool")));
        }
    }
    Ok(dev)
}

/// A Python `bool`, `int` or `float` as a scalar argument; `None` for anything else.
fn scalar_arg(i: usize, a: &Bound<'_, PyAny>) -> Option<PyResult<DeviceArg<'static>>> {
    if let Ok(b) = a.downcast::<PyBool>() {
        Some(Ok(DeviceArg::Scalar(Scalar::Bool(b.is_true()))))
    } else if let Ok(v) = a.downcast::<PyInt>() {
        let v = v.extract::<i64>().map_err(|_| LaunchError::new_err(format!("argument {i}: {v} does not fit 64 bits")));
        Some(v.map(|v| DeviceArg::Scalar(Scalar::Int(v))))
    } else {
        a.downcast::<PyFloat>().ok().map(|f| Ok(DeviceArg::Scalar(Scalar::Float(f.value()))))
    }
}

/// What the launch fast path knows of PyTorch: its tensor class, its current-stream getter
/// (`torch._C._cuda_getCurrentRawStream`) and its dtypes with their Tessera dtypes. Set by the
/// Python half (`set_torch`) when it first meets a torch CUDA tensor, so that the package never
/// imports torch itself.
struct Torch {
    tensor: Py<PyType>,
    stream: Py<PyAny>,
    dtypes: Vec<(Py<PyAny>, DType)>,
    /// `torch._C._to_dlpack`: one call describes a tensor (address, device, dtype, shape,
    /// strides) where reading them one by one takes five.
    to_dlpack: Option<Py<PyAny>>,
}

static TORCH: OnceLock<Torch> = OnceLock::new();

/// Tells the launch fast path about PyTorch (see `Torch`); `dtypes` pairs torch dtypes with
/// Tessera dtype codes (`dtype_codes()`). Later calls change nothing.
#[pyfunction]
#[pyo3(signature = (tensor, stream, dtypes, to_dlpack=None))]
fn set_torch(
    tensor: Bound<'_, PyType>,
    stream: Bound<'_, PyAny>,
    dtypes: Vec<(Bound<'_, PyAny>, usize)>,
    to_dlpack: Option<Bound<'_, PyAny>>,
) -> PyResult<()> {
    let dtypes = dtypes
        .into_iter()
        .map(|(t, code)| {
            DType::ALL.get(code).map(|&d| (t.unbind(), d)).ok_or_else(|| LaunchError::new_err(format!("no dtype code {code}")))
        })
        .collect::<PyResult<_>>()?;
    let _ = TORCH.set(Torch { tensor: tensor.unbind(), stream: stream.unbind(), dtypes, to_dlpack: to_dlpack.map(Bound::unbind) });
    Ok(())
}

/// The device arguments of a call whose tensors are all plain torch tensors on one GPU of a
/// Tessera dtype and whose scalars are Python numbers, read without running Python code, with
/// the GPU's ordinal; `None` for any other call (the Python half takes it, and explains what is
/// wrong).
fn torch_args(py: Python<'_>, torch: &Torch, args: &Bound<'_, PyTuple>) -> PyResult<Option<(Vec<DeviceArg<'static>>, usize)>> {
    let tensor = torch.tensor.bind(py);
    let mut dev = Vec::with_capacity(args.len());
    let mut device: Option<i64> = None;
    for (i, a) in args.iter().enumerate() {
        if !a.get_type().is(tensor) {
            match scalar_arg(i, &a) {
                Some(s) => dev.push(s?),
                None => return Ok(None),
            }
            continue;
        }
        // A tensor `_to_dlpack` refuses (one that requires grad, a conjugate view) is read
        // attribute by attribute below.
        let view = torch.to_dlpack.as_ref().and_then(|f| {
            let cap = f.bind(py).call1((&a,)).ok()?;
            dl_view(cap.downcast::<PyCapsule>().ok()?).ok()
        });
        if let Some(v) = view {
            // kDLCUDA only (not the host, nor managed memory).
            if v.device.0 != 2 || device.is_some_and(|e| e != i64::from(v.device.1)) {
                return Ok(None);
            }
            device = Some(i64::from(v.device.1));
            // SAFETY: as for `external_tensor`.
            let t = unsafe { ExternalTensor::new(v.ptr, v.dtype, &v.shape[..v.rank], &v.strides[..v.rank]) }
                .map_err(|e| LaunchError::new_err(format!("argument {i}: {e}")))?;
            dev.push(DeviceArg::External(t));
            continue;
        }
        // `get_device()` is -1 on the CPU.
        let d = a.call_method0(intern!(py, "get_device"))?.extract::<i64>()?;
        if d < 0 || device.is_some_and(|e| e != d) {
            return Ok(None);
        }
        device = Some(d);
        let dtype = a.getattr(intern!(py, "dtype"))?;
        let Some(&(_, dtype)) = torch.dtypes.iter().find(|(t, _)| t.bind(py).is(&dtype)) else {
            return Ok(None);
        };
        let ptr = a.call_method0(intern!(py, "data_ptr"))?.extract::<u64>()?;
        let shape = a.getattr(intern!(py, "shape"))?;
        let strides = a.call_method0(intern!(py, "stride"))?;
        let (Ok(shape), Ok(strides)) = (shape.downcast::<PyTuple>(), strides.downcast::<PyTuple>()) else {
            return Ok(None);
        };
        let t = external_tensor(ptr, dtype, shape, strides).map_err(|e| LaunchError::new_err(format!("argument {i}: {e}")))?;
        dev.push(DeviceArg::External(t));
    }
    // A call without tensors runs on GPU 0.
    Ok(usize::try_from(device.unwrap_or(0)).ok().map(|d| (dev, d)))
}

/// The base class of the package's `Kernel`: calling it launches a call on plain torch CUDA
/// tensors (see `torch_args`) on torch's current stream without running Python code (the launch
/// overhead Python users see); any other call goes to the subclass's `_call`.
#[pyclass(subclass, frozen, module = "tessera._tessera")]
struct Launcher {
    e: Arc<Entry>,
}

#[pymethods]
impl Launcher {
    #[new]
    fn new(native: &Bound<'_, Kernel>) -> Self {
        Launcher { e: native.get().e.clone() }
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(slf: &Bound<'_, Self>, args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<PyObject> {
        let py = slf.py();
        let me = slf.get();
        if let (Some(torch), true) = (TORCH.get(), kwargs.is_none_or(|k| k.is_empty()) && args.len() == me.e.meta.params.len()) {
            if let Some((dev, device)) = torch_args(py, torch, args)? {
                let rt = runtime(device).map_err(LaunchError::new_err)?;
                let loaded = me.e.loaded(rt)?;
                let stream = torch.stream.bind(py).call1((device,))?.extract::<u64>()?;
                // SAFETY: `torch_args` took only tensors on GPU `device`, alive through `args`
                // during the call and stream-ordered by PyTorch's allocator; the stream is torch's
                // current stream of that device, in the primary context the runtime uses.
                unsafe { rt.launch_on_handle(stream, loaded, &dev) }.map_err(|e| LaunchError::new_err(e.to_string()))?;
                return Ok(py.None());
            }
        }
        slf.call_method(intern!(py, "_call"), args.clone(), kwargs).map(Bound::unbind)
    }
}

#[pymodule]
fn _tessera(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(compile_file, m)?)?;
    m.add_function(wrap_pyfunction!(gpu_status, m)?)?;
    m.add_function(wrap_pyfunction!(dtype_codes, m)?)?;
    m.add_function(wrap_pyfunction!(load_aot, m)?)?;
    m.add_function(wrap_pyfunction!(dlpack_tensor, m)?)?;
    m.add_function(wrap_pyfunction!(set_torch, m)?)?;
    m.add_function(wrap_pyfunction!(device_of, m)?)?;
    m.add_class::<Module>()?;
    m.add_class::<Kernel>()?;
    m.add_class::<Launcher>()?;
    m.add("TesseraError", m.py().get_type::<TesseraError>())?;
    m.add("CompileError", m.py().get_type::<CompileError>())?;
    m.add("LaunchError", m.py().get_type::<LaunchError>())?;
    Ok(())
}
