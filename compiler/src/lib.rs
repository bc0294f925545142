//! The Tessera compiler: `.tile` source to PTX, plus the reference interpreter.
//!
//! Pipeline (one folder per stage): `syntax` (text → AST) → `sema` (AST → tile IR, specialised on
//! `const` values) → `passes` (tile IR → tile IR) → `lower` (tile IR → thread IR) → `codegen`
//! (thread IR → PTX). `interp` executes the tile IR on the host. See
//! `docs/architecture.md`.

pub mod abi;
pub mod codegen;
pub mod diag;
pub mod dtype;
pub mod emit;
pub mod files;
pub mod host;
pub mod interp;
pub mod ir;
pub mod lir;
pub mod lower;
pub mod mir;
pub mod passes;
pub mod sema;
pub mod syntax;
pub mod tir;

pub use diag::{Diagnostic, Diagnostics, SourceMap, Span};
pub use dtype::DType;
pub use host::{AllocError, ArgInfo, BindError, Bound, HostTensor, Scalar};
pub use sema::modules::ImportedFile;
pub use tir::{ConstValue, TuneSpace};

/// The compiler's version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A fingerprint of this build of the compiler: the version and a hash of every source file of
/// the compiler and the standard library (computed by `build.rs`). Two builds with the same
/// fingerprint generate the same code, so compile caches key on it.
pub const BUILD_ID: &str = env!("TESSERA_BUILD_ID");

use serde::{Deserialize, Serialize};

/// The GPU architecture to generate code for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Target {
    /// Ampere (A100): `sm_80`.
    Sm80,
    /// Hopper (H100, H200): `sm_90a`.
    #[default]
    Sm90a,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Sm80 => "sm_80",
            Target::Sm90a => "sm_90a",
        }
    }

    /// The compute capability times ten (`80`, `90`): the value of `SM` in a kernel signature's
    /// constant expressions (`const BQ: i32 = (if SM >= 90 { 128 } else { 64 })`).
    pub fn sm(self) -> i64 {
        match self {
            Target::Sm80 => 80,
            Target::Sm90a => 90,
        }
    }

    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "sm_80" | "sm80" => Some(Target::Sm80),
            "sm_90a" | "sm90a" | "sm_90" => Some(Target::Sm90a),
            _ => None,
        }
    }
}

/// A source file to compile.
#[derive(Clone, Debug)]
pub struct Source {
    /// The name used in diagnostics (usually the path).
    pub name: String,
    pub text: String,
    /// Where the file is on disk: `use "other.tile"::{…}` imports are read relative to its
    /// directory. Without it, `name` is taken as the path.
    pub path: Option<std::path::PathBuf>,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Source {
        Source { name: name.into(), text: text.into(), path: None }
    }

    /// The same source, located at `path` on disk (for its imports).
    pub fn with_path(mut self, path: impl Into<std::path::PathBuf>) -> Source {
        self.path = Some(path.into());
        self
    }

    /// Reads the source file at `path`: a regular file (not a FIFO or a device) of at most
    /// [`files::MAX_SOURCE_BYTES`] of UTF-8 text. Its name in diagnostics is the path.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Source, files::FileError> {
        let path = path.as_ref();
        Ok(Source::new(path.display().to_string(), files::read_source_text(path)?).with_path(path))
    }

    /// Every file that compiling this source imports (`use "file.tile"`), directly or not, once
    /// each in the order the compiler loads them, with the text read now: with the source text,
    /// everything from disk that the compiler's output depends on. `None` when an import cannot
    /// be resolved, read or parsed (compiling then fails with the reason).
    pub fn imports(&self) -> Option<Vec<ImportedFile>> {
        let path = self.path.clone().unwrap_or_else(|| std::path::PathBuf::from(&self.name));
        sema::modules::import_closure(&self.text, &path)
    }
}

/// Which emitter turns the machine IR into PTX.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Codegen {
    /// Through LLVM 19's NVPTX back end (the default, when built with the `llvm` feature).
    Llvm,
    /// The machine IR printed as PTX directly (no LLVM; faster to compile).
    Ptx,
}

impl Codegen {
    pub fn name(self) -> &'static str {
        match self {
            Codegen::Llvm => "llvm",
            Codegen::Ptx => "ptx",
        }
    }

    pub fn parse(s: &str) -> Option<Codegen> {
        match s {
            "llvm" => Some(Codegen::Llvm),
            "ptx" => Some(Codegen::Ptx),
            _ => None,
        }
    }

    /// Whether this build of the compiler has the emitter.
    pub fn available(self) -> bool {
        self == Codegen::Ptx || cfg!(feature = "llvm")
    }
}

impl Default for Codegen {
    fn default() -> Codegen {
        if cfg!(feature = "llvm") { Codegen::Llvm } else { Codegen::Ptx }
    }
}

/// How to compile.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `const` parameter values overriding the defaults (`--const BM=64`). Each name once, a
    /// const parameter of at least one kernel compiled, with a value of its type; anything else
    /// is an error (`compile` returns it; the message names `--const`).
    pub consts: Vec<(String, ConstValue)>,
    pub target: Target,
    /// Compile only this kernel (all kernels when `None`).
    pub kernel: Option<String>,
    /// Override `#[warps]`: a power of two from 1 to 32 (`tir::check_warps`, the attribute's
    /// rule); another value is an error that names `--warps`.
    pub warps: Option<u32>,
    /// Override `#[stages]` (the software-pipelining depth; the autotuner sets it): 1 to 16
    /// (`tir::check_stages`); another value is an error that names `--stages`.
    pub stages: Option<u32>,
    /// Override `#[blocks_per_sm]` (the autotuner sets it): 1 to 32, its blocks' threads at most
    /// 2048 (`tir::check_blocks_per_sm`); another value is an error that names `--blocks-per-sm`.
    pub blocks_per_sm: Option<u32>,
    /// Override `#[warp_specialize]` (the autotuner sets it): on sm_90a, a producer warpgroup
    /// issues the main loop's bulk tensor copies (`lower::warp_specialize`).
    pub warp_specialize: Option<bool>,
    /// Run the IR verifiers after every pass (on in tests and debug builds).
    pub verify: bool,
    /// A checked build: `assert`s are compiled into the GPU code (a failing one reports its
    /// message through `__assertfail` and stops the kernel). Without it they are dropped from
    /// the GPU code; the interpreter always checks them.
    pub checked: bool,
    /// f32 `dot`s may run on the tensor cores as tf32 (10-bit mantissa operands, f32
    /// accumulation: about 1e-3 relative error); without it they are exact f32 FMAs.
    pub tf32: bool,
    /// The emitter (machine IR → PTX).
    pub codegen: Codegen,
    /// Keep the LLVM IR of the `llvm` emitter (`CompiledKernel::llvm_ir`, `--emit llvm`).
    pub keep_llvm_ir: bool,
    /// The LLVM pass pipeline of the `llvm` emitter, in `opt -passes=` syntax (`--llvm-passes`);
    /// `None`: the default one (`emit::llvm::PIPELINE`).
    pub llvm_passes: Option<String>,
}

/// What a loader needs to launch a kernel: enough for an AOT build to be launched without the
/// compiler (`tessera build --emit ptx,meta` writes it as JSON beside the PTX). The PTX entry
/// point is named `name`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelMeta {
    pub name: String,
    pub target: Target,
    /// Parameters in order. The PTX parameters are, for each tensor: a pointer, one i32 size per
    /// dimension, one i64 stride (in elements) per dimension; for each scalar: its value.
    pub params: Vec<tir::Param>,
    pub consts: Vec<(String, ConstValue)>,
    /// Grid size in programs per axis, over the dimension symbols and integer scalar parameters.
    pub grid: Vec<tir::HostExpr>,
    /// Threads per block.
    pub threads: u32,
    /// Dynamic shared memory in bytes.
    pub shared_bytes: u32,
    pub requires: Vec<tir::Require>,
    /// The dimension symbols, in the order the parameters bind them (the first tensor that
    /// names a symbol binds it; every later one must agree).
    #[serde(default)]
    pub dims: Vec<String>,
    /// The PTX parameter list the ABI above produces, flattened: what a loader packs.
    #[serde(default)]
    pub ptx_params: Vec<PtxParam>,
    /// The tensor maps the runtime encodes for a launch, passed after the parameters above
    /// (`abi::slots`): one per tensor and box the kernel's bulk tensor copies read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tensor_maps: Vec<abi::TensorMap>,
    /// The `#[tune]` space of the kernel (empty without one).
    #[serde(default, skip_serializing_if = "TuneSpace::is_empty")]
    pub tune: TuneSpace,
    /// The compiler that produced it: `VERSION+BUILD_ID`.
    #[serde(default)]
    pub compiler: String,
}

/// One entry of the PTX parameter list (see [`KernelMeta::ptx_params`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtxParam {
    /// `x` for a scalar; `x.ptr`, `x.size0`, `x.stride0`, … for the parts of tensor `x`.
    pub name: String,
    /// `ptr` (a 64-bit device address), `i32` (a size), `i64` (a stride), or the scalar's dtype
    /// (`bool` is one byte; `f16` and `bf16` are their 16-bit patterns).
    pub ty: String,
    /// Size and alignment in bytes.
    pub bytes: u32,
}

impl KernelMeta {
    /// The PTX parameter list of a kernel with parameters `params` and tensor maps `maps` under
    /// the kernel parameter ABI.
    pub fn abi_of(params: &[tir::Param], maps: &[abi::TensorMap]) -> Vec<PtxParam> {
        abi::slots(params, maps).into_iter().map(|s| PtxParam { name: s.name(params), ty: s.type_name(), bytes: s.bytes() }).collect()
    }

    /// The machine parameters of this kernel, in order (`abi::slots`).
    pub fn slots(&self) -> Vec<abi::Slot> {
        abi::slots(&self.params, &self.tensor_maps)
    }

    /// The dimension symbols of `params` in binding order.
    pub fn dims_of(params: &[tir::Param]) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        for p in params {
            if let tir::ParamKind::Tensor { dims, .. } = &p.kind {
                for d in dims {
                    if let tir::Dim::Sym(s) = d
                        && !out.contains(s)
                    {
                        out.push(s.clone());
                    }
                }
            }
        }
        out
    }
}

impl KernelMeta {
    /// Binds launch arguments: checks them and evaluates the grid.
    pub fn bind(&self, args: &[ArgInfo]) -> Result<Bound, BindError> {
        host::bind(&self.name, &self.params, &self.grid, &self.requires, args)
    }
}

/// One compiled kernel with every intermediate form.
#[derive(Clone, Debug)]
pub struct CompiledKernel {
    pub meta: KernelMeta,
    pub tir: tir::Kernel,
    pub lir: lir::Kernel,
    /// The machine IR the PTX was emitted from.
    pub mir: mir::Module,
    /// The LLVM IR after optimisation (the `llvm` emitter with `Options::keep_llvm_ir`).
    pub llvm_ir: Option<String>,
    pub ptx: String,
}

/// The result of compiling a file.
#[derive(Clone, Debug)]
pub struct Module {
    pub kernels: Vec<CompiledKernel>,
    /// Warnings and notes (errors make `compile` fail instead).
    pub warnings: Diagnostics,
    /// Wall time of each stage over the whole file, in milliseconds: `frontend` (parse, sema,
    /// tile-IR passes), `lower` (to the thread IR) and `codegen` (PTX emission).
    pub stage_ms: Vec<(&'static str, f64)>,
    /// Kernel name → index in `kernels`, so that looking every kernel up stays linear in their
    /// number (a file may hold many).
    index: std::collections::HashMap<String, usize>,
}

impl Module {
    /// The kernel named `name`.
    pub fn kernel(&self, name: &str) -> Option<&CompiledKernel> {
        match self.index.get(name).and_then(|&i| self.kernels.get(i)) {
            Some(k) if k.meta.name == name => Some(k),
            // `kernels` was changed after compiling: search it.
            _ => self.kernels.iter().find(|k| k.meta.name == name),
        }
    }
}

/// Receives the IR of each kernel after the stages it asks for (`tessera build --dump-after`).
pub trait DumpSink {
    /// Whether to print the IR after `stage` (one of [`dump_stages`]).
    fn wants(&self, stage: &str) -> bool;
    /// The IR of `kernel` after `stage`, printed.
    fn dump(&mut self, kernel: &str, stage: &str, ir: &str);
}

/// A [`DumpSink`] that wants nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDumps;

impl DumpSink for NoDumps {
    fn wants(&self, _: &str) -> bool {
        false
    }
    fn dump(&mut self, _: &str, _: &str, _: &str) {}
}

/// The stages after which the IR can be dumped, in pipeline order: `sema` (tile IR as sema made
/// it), each tile-IR pass of [`passes::PIPELINE`], `lower` (the thread IR), each thread-IR pass
/// of [`lower::LIR_PIPELINE`], `codegen` (the machine IR), `emit` (the PTX).
pub fn dump_stages() -> Vec<&'static str> {
    let mut v = vec!["sema"];
    v.extend(passes::PIPELINE.iter().map(|p| p.name));
    v.push("lower");
    v.extend(lower::LIR_PIPELINE.iter().map(|p| p.name));
    v.push("codegen");
    v.extend(mir::MIR_PIPELINE.iter().map(|p| p.name));
    v.push("emit");
    v
}

/// Parses and checks a file and produces the tile IR of each kernel, after the tile-IR passes.
/// This is what the interpreter runs.
pub fn frontend(src: &Source, opts: &Options) -> Result<Vec<tir::Kernel>, Diagnostics> {
    frontend_with(src, opts, &mut NoDumps)
}

/// [`frontend`], showing the IR to `sink` after the stages it wants.
pub fn frontend_with(src: &Source, opts: &Options, sink: &mut dyn DumpSink) -> Result<Vec<tir::Kernel>, Diagnostics> {
    let mut sources = SourceMap::new();
    let file = sources.add(src.name.clone(), src.text.clone());
    let (ast, mut diags) = syntax::parse_file(file, &src.text);
    let fail = |sources: SourceMap, items: Vec<Diagnostic>| Diagnostics { items, sources };
    if diags.iter().any(|d| d.severity == diag::Severity::Error) {
        return Err(fail(sources, diags));
    }
    let kernels = match sema::check_file(&ast, &mut sources, opts, src.path.as_deref()) {
        Ok(k) => k,
        Err(mut e) => {
            diags.append(&mut e);
            return Err(fail(sources, diags));
        }
    };
    let mut out = vec![];
    for mut k in kernels {
        let mut after = |stage: &'static str, k: &tir::Kernel| {
            if sink.wants(stage) {
                sink.dump(&k.name, stage, &tir::print_kernel(k));
            }
        };
        if let Err(d) = passes::run_pipeline_observed(&mut k, opts, &mut after) {
            diags.push(d);
            return Err(fail(sources, diags));
        }
        out.push(k);
    }
    Ok(out)
}

/// The PTX of `mir` from the emitter `opts` asks for, and the LLVM IR if it is kept.
fn emit_ptx(mir: &mir::Module, opts: &Options) -> Result<(String, Option<String>), Diagnostic> {
    match opts.codegen {
        Codegen::Ptx => Ok((emit::ptx::print(mir).map_err(|e| Diagnostic::ice("emit", e))?, None)),
        #[cfg(feature = "llvm")]
        Codegen::Llvm => {
            let passes = opts.llvm_passes.as_deref().unwrap_or(emit::llvm::PIPELINE);
            let o = emit::llvm::emit(mir, passes, opts.keep_llvm_ir).map_err(|e| match e {
                emit::llvm::EmitError::Pipeline { .. } => {
                    Diagnostic::error(e.to_string()).note("the `--llvm-passes` (`Options::llvm_passes`) given")
                }
                emit::llvm::EmitError::Internal(s) => Diagnostic::ice("emit", s),
            })?;
            Ok((o.ptx, o.llvm_ir))
        }
        #[cfg(not(feature = "llvm"))]
        Codegen::Llvm => Err(Diagnostic::error("this build of tessera has no LLVM (built without the `llvm` feature)")
            .note("use the `ptx` emitter (`--codegen ptx`, `Options::codegen`)")),
    }
}

/// Compiles a source file to PTX and kernel metadata.
///
/// ```
/// use tessera_compiler::{Options, Source, compile};
///
/// let src = Source::new(
///     "scale.tile",
///     "use std::math::cdiv;
///      #[grid(cdiv(N, 256))]
///      kernel scale(x: &f32[N], y: &mut f32[N], s: f32) {
///          let i = program_id(0) * 256;
///          y.store([i], x.load([i], [256]) * s);
///      }",
/// );
/// let module = compile(&src, &Options::default()).map_err(|d| d.render())?;
/// let k = module.kernel("scale").ok_or("no kernel")?;
/// assert!(k.ptx.contains(".entry scale"));
/// assert_eq!(k.meta.dims, ["N"]);
/// assert_eq!(k.meta.ptx_params.len(), 7); // x: ptr, size, stride; y: the same; s
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn compile(src: &Source, opts: &Options) -> Result<Module, Diagnostics> {
    compile_with(src, opts, &mut NoDumps)
}

/// [`compile`], showing the IR to `sink` after the stages it wants (see [`dump_stages`]).
///
/// The kernels of a file go through the back end (lowering, code generation, the emitter) on
/// worker threads, one kernel at a time each: a file of several kernels costs about its slowest
/// kernel rather than their sum. Dumps and errors come out in the kernels' order.
pub fn compile_with(src: &Source, opts: &Options, sink: &mut dyn DumpSink) -> Result<Module, Diagnostics> {
    let clock = std::time::Instant::now();
    let kernels = frontend_with(src, opts, sink)?;
    let frontend_ms = clock.elapsed().as_secs_f64() * 1e3;
    let ice = |d: Diagnostic| {
        let mut sources = SourceMap::new();
        sources.add(src.name.clone(), src.text.clone());
        Diagnostics { items: vec![d], sources }
    };
    let wanted: Vec<&'static str> = back_end_stages().filter(|s| sink.wants(s)).collect();
    let names: Vec<String> = kernels.iter().map(|k| k.name.clone()).collect();
    let results = parallel_map(kernels, |k| {
        let mut dumps = vec![];
        let r = back_end(k, opts, &wanted, &mut dumps);
        Ok((dumps, r))
    });
    let (mut lower_ms, mut codegen_ms) = (0.0, 0.0);
    let mut out = vec![];
    for (r, name) in results.into_iter().zip(&names) {
        // The IR of the stages before a failing one is printed too: it is what shows the bug.
        let (dumps, r) = r.map_err(ice)?;
        for (stage, ir) in &dumps {
            sink.dump(name, stage, ir);
        }
        let done = r.map_err(ice)?;
        lower_ms += done.lower_ms;
        codegen_ms += done.codegen_ms;
        out.push(done.kernel);
    }
    let stage_ms = vec![("frontend", frontend_ms), ("lower", lower_ms), ("codegen", codegen_ms)];
    let index = out.iter().enumerate().map(|(i, k)| (k.meta.name.clone(), i)).collect();
    Ok(Module { kernels: out, warnings: Diagnostics::default(), stage_ms, index })
}

/// The stages after the tile IR that a [`DumpSink`] may ask for, in order: `dump_stages` from
/// `lower` on.
fn back_end_stages() -> impl Iterator<Item = &'static str> {
    dump_stages().into_iter().skip_while(|s| *s != "lower")
}

/// One kernel through the back end: what it produced and the time spent.
struct BackEnd {
    kernel: CompiledKernel,
    lower_ms: f64,
    codegen_ms: f64,
}

/// Lowers one kernel's tile IR to the thread IR, the machine IR and PTX (`wanted`: the stages
/// whose IR to keep in `dumps` for the dump sink, also when a later stage fails).
fn back_end(
    k: tir::Kernel,
    opts: &Options,
    wanted: &[&'static str],
    dumps: &mut Vec<(&'static str, String)>,
) -> Result<BackEnd, Diagnostic> {
    let mut dump = |stage: &'static str, ir: &dyn Fn() -> String| {
        if wanted.contains(&stage) {
            dumps.push((stage, ir()));
        }
    };
    let clock = std::time::Instant::now();
    let mut lk = lower::lower_kernel(&k, opts)?;
    dump("lower", &|| lir::print_kernel(&lk));
    if opts.verify {
        lir::verify_kernel(&lk).map_err(|e| Diagnostic::ice("lower", e))?;
    }
    for p in lower::LIR_PIPELINE {
        (p.run)(&mut lk);
        dump(p.name, &|| lir::print_kernel(&lk));
        if opts.verify {
            lir::verify_kernel(&lk).map_err(|e| Diagnostic::ice(p.name, e))?;
        }
    }
    let lower_ms = clock.elapsed().as_secs_f64() * 1e3;
    let clock = std::time::Instant::now();
    let mut mir = codegen::codegen(&lk, opts.target)?;
    dump("codegen", &|| mir::print_module(&mir));
    if opts.verify {
        mir::verify_module(&mir).map_err(|e| Diagnostic::ice("codegen", e))?;
    }
    for p in mir::MIR_PIPELINE {
        (p.run)(&mut mir);
        dump(p.name, &|| mir::print_module(&mir));
        if opts.verify {
            mir::verify_module(&mir).map_err(|e| Diagnostic::ice(p.name, e))?;
        }
    }
    let (ptx, llvm_ir) = emit_ptx(&mir, opts)?;
    // The tensor maps, recorded where a loader of the PTX alone can check them.
    let ptx = if lk.tensor_maps.is_empty() { ptx } else { format!("{}{ptx}", abi::tensor_map_lines(&lk.tensor_maps)) };
    dump("emit", &|| ptx.clone());
    let codegen_ms = clock.elapsed().as_secs_f64() * 1e3;
    let meta = KernelMeta {
        name: k.name.clone(),
        target: opts.target,
        params: k.params.clone(),
        consts: k.consts.clone(),
        grid: k.grid.clone(),
        threads: lk.launch_threads(),
        shared_bytes: lk.shared_bytes,
        requires: k.requires.clone(),
        dims: KernelMeta::dims_of(&k.params),
        ptx_params: KernelMeta::abi_of(&k.params, &lk.tensor_maps),
        tensor_maps: lk.tensor_maps.clone(),
        tune: k.tune.clone(),
        compiler: format!("{VERSION}+{BUILD_ID}"),
    };
    Ok(BackEnd { kernel: CompiledKernel { meta, tir: k, lir: lk, mir, llvm_ir, ptx }, lower_ms, codegen_ms })
}

/// `f` over `items` on up to as many threads as the host has cores, the calling thread among
/// them, the results in the items' order. A worker that cannot be started leaves its share to
/// the others; one that panics (a bug) gives an internal compiler error for each item it took.
fn parallel_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> Result<R, Diagnostic> + Sync) -> Vec<Result<R, Diagnostic>> {
    let n = items.len();
    let workers = std::thread::available_parallelism().map_or(1, |p| p.get()).min(n);
    if workers <= 1 {
        return items.into_iter().map(f).collect();
    }
    let queue = std::sync::Mutex::new(items.into_iter().enumerate());
    let work = || {
        let mut done = vec![];
        loop {
            // The lock guards only taking the next item; a poisoned lock (a panic elsewhere)
            // still hands out the rest.
            let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
            let Some((i, item)) = next else { break };
            done.push((i, f(item)));
        }
        done
    };
    let mut slots: Vec<Option<Result<R, Diagnostic>>> = (0..n).map(|_| None).collect();
    std::thread::scope(|scope| {
        // LLVM's instruction selection recurses on large blocks: the workers get the stack a
        // main thread has.
        let handles: Vec<_> =
            (1..workers).filter_map(|_| std::thread::Builder::new().stack_size(8 << 20).spawn_scoped(scope, work).ok()).collect();
        for (i, r) in work() {
            slots[i] = Some(r);
        }
        for h in handles {
            if let Ok(done) = h.join() {
                for (i, r) in done {
                    slots[i] = Some(r);
                }
            }
        }
    });
    slots.into_iter().map(|r| r.unwrap_or_else(|| Err(Diagnostic::ice("back end", "a compiler thread stopped")))).collect()
}
