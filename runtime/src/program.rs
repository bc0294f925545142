//! Compiling source and loading every kernel of it in one call, through the compile cache.
//!
//! ```
//! use tessera_compiler::{Options, Source};
//! use tessera_runtime::Runtime;
//!
//! const SRC: &str = "use std::math::cdiv;
//! #[grid(cdiv(N, 256))]
//! kernel axpy(x: &f32[N], y: &f32[N], out: &mut f32[N], a: f32) {
//!     let i = program_id(0) * 256;
//!     out.store([i], x.load([i], [256]) * a + y.load([i], [256]));
//! }";
//!
//! # fn main() -> Result<(), tessera_runtime::Error> {
//! // Gated: without a GPU, `Runtime::new` says so and the example stops here.
//! let Ok(rt) = Runtime::new() else { return Ok(()) };
//! let program = rt.compile(&Source::new("axpy.tile", SRC), &Options::default())?;
//! let axpy = program.kernel("axpy")?;
//! let x = rt.tensor(&[1.0f32, 2.0, 3.0], &[3])?;
//! let y = rt.tensor(&[10.0f32, 20.0, 30.0], &[3])?;
//! let out = rt.zeros::<f32>(&[3])?;
//! rt.launch(axpy, &[x.arg(), y.arg(), out.arg(), 2.0f32.into()])?;
//! assert_eq!(out.to_vec(&rt)?, [12.0, 24.0, 36.0]);
//! // A wrong argument is an error, and nothing is launched.
//! let short = rt.zeros::<f32>(&[2])?;
//! let err = rt.launch(axpy, &[x.arg(), short.arg(), out.arg(), 2.0f32.into()]).unwrap_err();
//! assert!(err.to_string().contains("dimension `N` disagrees"));
//! # Ok(()) }
//! ```

use crate::cache::{Cache, Hit};
use crate::device::{LoadedKernel, Runtime, RuntimeError};
use tessera_compiler::{Options, Source};

/// What can go wrong between source text and a launch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The source does not compile: the rendered diagnostics.
    #[error("{0}")]
    Compile(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// No kernel of that name in the program.
    #[error("no kernel `{name}` (kernels: {available})")]
    NoKernel { name: String, available: String },
}

/// Every kernel of a source file, loaded.
#[derive(Debug)]
pub struct Program {
    kernels: Vec<LoadedKernel>,
    /// Where the compiled code came from.
    pub hit: Hit,
    /// The cache's notes (a damaged entry rebuilt, a failed write).
    pub notes: Vec<String>,
}

impl Program {
    /// The kernel named `name`.
    pub fn kernel(&self, name: &str) -> Result<&LoadedKernel, Error> {
        self.kernels.iter().find(|k| k.meta.name == name).ok_or_else(|| Error::NoKernel {
            name: name.into(),
            available: self.kernels.iter().map(|k| k.meta.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    }

    pub fn kernels(&self) -> &[LoadedKernel] {
        &self.kernels
    }
}

impl Runtime {
    /// Compiles `src` (or takes it from the process-wide cache, [`Cache::global`]) and loads
    /// every kernel.
    pub fn compile(&self, src: &Source, opts: &Options) -> Result<Program, Error> {
        self.compile_cached(Cache::global(), src, opts)
    }

    /// [`Runtime::compile`] through the given cache.
    pub fn compile_cached(&self, cache: &Cache, src: &Source, opts: &Options) -> Result<Program, Error> {
        let c = cache.get_or_compile(src, opts).map_err(|d| Error::Compile(d.render()))?;
        let kernels = c.artifacts.kernels.iter().map(|a| self.load(&a.ptx, &a.meta)).collect::<Result<Vec<_>, _>>()?;
        Ok(Program { kernels, hit: c.hit, notes: c.notes })
    }
}
