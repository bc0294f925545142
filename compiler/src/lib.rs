//! The Tessera compiler: `.tile` source to PTX, plus the reference interpreter.
//!
//! Pipeline (one folder per stage): `syntax` (text → AST) → `sema` (AST → tile IR, specialised on
//! `const` values) → `passes` (tile IR → tile IR) → `lower` (tile IR → thread IR) → `codegen`
//! (thread IR → LLVM IR → PTX). `interp` executes the tile IR on the host. See
//! `docs/architecture.md`.

pub mod codegen;
pub mod diag;
pub mod dtype;
pub mod host;
pub mod interp;
pub mod ir;
pub mod lir;
pub mod lower;
pub mod passes;
pub mod sema;
pub mod syntax;
pub mod tir;

pub use diag::{Diagnostic, Diagnostics, SourceMap, Span};
pub use dtype::DType;
pub use host::{ArgInfo, BindError, Bound, HostTensor, Scalar};
pub use tir::ConstValue;

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
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Source {
        Source { name: name.into(), text: text.into() }
    }
}

/// How to compile.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `const` parameter values overriding the defaults (`--const BM=64`).
    pub consts: Vec<(String, ConstValue)>,
    pub target: Target,
    /// Compile only this kernel (all kernels when `None`).
    pub kernel: Option<String>,
    /// Override `#[warps]`.
    pub warps: Option<u32>,
    /// Run the IR verifiers after every pass (on in tests and debug builds).
    pub verify: bool,
}

/// What a loader needs to launch a kernel: enough for an AOT build to be launched without the
/// compiler. The PTX entry point is named `name`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelMeta {
    pub name: String,
    pub target: Target,
    /// Parameters in order. The PTX parameters are, for each tensor: a pointer, one i32 size per
    /// dimension, one i64 stride (in elements) per dimension; for each scalar: its value.
    pub params: Vec<tir::Param>,
    pub consts: Vec<(String, ConstValue)>,
    pub grid: Vec<tir::HostExpr>,
    pub threads: u32,
    /// Dynamic shared memory in bytes.
    pub shared_bytes: u32,
    pub requires: Vec<tir::Require>,
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
    pub llvm_ir: String,
    pub ptx: String,
}

/// The result of compiling a file.
#[derive(Clone, Debug)]
pub struct Module {
    pub kernels: Vec<CompiledKernel>,
    /// Warnings and notes (errors make `compile` fail instead).
    pub warnings: Diagnostics,
}

impl Module {
    pub fn kernel(&self, name: &str) -> Option<&CompiledKernel> {
        self.kernels.iter().find(|k| k.meta.name == name)
    }
}

/// Parses and checks a file and produces the tile IR of each kernel, after the tile-IR passes.
/// This is what the interpreter runs.
pub fn frontend(src: &Source, opts: &Options) -> Result<Vec<tir::Kernel>, Diagnostics> {
    let mut sources = SourceMap::new();
    let file = sources.add(src.name.clone(), src.text.clone());
    let (ast, mut diags) = syntax::parse_file(file, &src.text);
    let fail = |sources: SourceMap, items: Vec<Diagnostic>| Diagnostics { items, sources };
    if diags.iter().any(|d| d.severity == diag::Severity::Error) {
        return Err(fail(sources, diags));
    }
    let kernels = match sema::check_file(&ast, &mut sources, opts) {
        Ok(k) => k,
        Err(mut e) => {
            diags.append(&mut e);
            return Err(fail(sources, diags));
        }
    };
    let mut out = vec![];
    for mut k in kernels {
        if let Err(d) = passes::run_pipeline(&mut k, opts) {
            diags.push(d);
            return Err(fail(sources, diags));
        }
        out.push(k);
    }
    Ok(out)
}

/// Compiles a source file to PTX and kernel metadata.
pub fn compile(src: &Source, opts: &Options) -> Result<Module, Diagnostics> {
    let kernels = frontend(src, opts)?;
    let mut out = vec![];
    let ice = |d: Diagnostic| {
        let mut sources = SourceMap::new();
        sources.add(src.name.clone(), src.text.clone());
        Diagnostics { items: vec![d], sources }
    };
    for k in kernels {
        let lk = lower::lower_kernel(&k, opts).map_err(ice)?;
        if opts.verify {
            lir::verify_kernel(&lk).map_err(|e| ice(Diagnostic::ice("lower", e)))?;
        }
        let (llvm_ir, ptx) = codegen::emit(&lk, opts.target).map_err(ice)?;
        let meta = KernelMeta {
            name: k.name.clone(),
            target: opts.target,
            params: k.params.clone(),
            consts: k.consts.clone(),
            grid: k.grid.clone(),
            threads: lk.threads,
            shared_bytes: lk.shared_bytes,
            requires: k.requires.clone(),
        };
        out.push(CompiledKernel { meta, tir: k, lir: lk, llvm_ir, ptx });
    }
    Ok(Module { kernels: out, warnings: Diagnostics::default() })
}
