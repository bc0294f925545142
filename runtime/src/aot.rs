//! Ahead-of-time artifacts: the `KERNEL.ptx` and `KERNEL.json` pair that
//! `tessera build FILE --emit ptx,meta -o DIR` writes, read back and launched without the
//! compiler.
//!
//! The JSON is [`KernelMeta`]: the entry name, the parameters in order with their kinds, dtypes
//! and dimensions (constants or dimension symbols), the dimension symbols in binding order, the
//! flattened PTX parameter list, the grid expressions, threads per block, dynamic shared memory,
//! the `#[require]` conditions, the `const` values, and the compiler that made it. That is enough
//! for any loader: bind the symbols from the argument shapes, check the requirements, evaluate
//! the grid, pack the parameters in `ptx_params` order (each at its natural alignment) and call
//! `cuLaunchKernel` with `threads` threads and `shared_bytes` of dynamic shared memory.
//!
//! ```no_run
//! use tessera_runtime::{Runtime, aot::AotKernel};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let k = AotKernel::read("build".as_ref(), "vector_add")?; // build/vector_add.{ptx,json}
//! let rt = Runtime::new()?;
//! let kernel = k.load(&rt)?;
//! let x = rt.tensor(&[1.0f32; 1000], &[1000])?;
//! let y = rt.tensor(&[2.0f32; 1000], &[1000])?;
//! let z = rt.zeros::<f32>(&[1000])?;
//! rt.launch(&kernel, &[x.arg(), y.arg(), z.arg()])?;
//! assert_eq!(z.to_vec(&rt)?, [3.0f32; 1000]);
//! # Ok(()) }
//! ```

use crate::device::{LoadedKernel, Runtime, RuntimeError};
use std::path::{Path, PathBuf};
use tessera_compiler::KernelMeta;

/// Why an AOT artifact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AotError {
    #[error("cannot read `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("`{path}` is not kernel metadata: {msg}")]
    Json { path: PathBuf, msg: String },
    #[error("`{path}`: {msg}")]
    Mismatch { path: PathBuf, msg: String },
}

/// One kernel's PTX and launch metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct AotKernel {
    pub meta: KernelMeta,
    pub ptx: String,
}

impl AotKernel {
    /// Reads `DIR/KERNEL.json` and `DIR/KERNEL.ptx`.
    pub fn read(dir: &Path, kernel: &str) -> Result<AotKernel, AotError> {
        Self::read_files(&dir.join(format!("{kernel}.ptx")), &dir.join(format!("{kernel}.json")))
    }

    /// Reads a PTX file and its metadata file, and checks that they belong together.
    pub fn read_files(ptx_path: &Path, meta_path: &Path) -> Result<AotKernel, AotError> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|source| AotError::Io { path: p.to_path_buf(), source });
        let meta_text = read(meta_path)?;
        let meta: KernelMeta =
            serde_json::from_str(&meta_text).map_err(|e| AotError::Json { path: meta_path.to_path_buf(), msg: e.to_string() })?;
        let ptx = read(ptx_path)?;
        let k = AotKernel { meta, ptx };
        k.validate().map_err(|msg| AotError::Mismatch { path: meta_path.to_path_buf(), msg })?;
        Ok(k)
    }

    /// Checks what the JSON schema cannot: the PTX defines the entry point, the parameter list
    /// is the ABI's, and the launch shape is sane.
    pub fn validate(&self) -> Result<(), String> {
        let m = &self.meta;
        if !self.ptx.contains(&format!(".entry {}(", m.name)) {
            return Err(format!("the PTX does not define the entry point `{}`", m.name));
        }
        if !m.ptx_params.is_empty() && m.ptx_params != KernelMeta::abi_of(&m.params) {
            return Err("`ptx_params` does not match `params` under the kernel parameter ABI".into());
        }
        if m.threads == 0 || m.threads > 1024 {
            return Err(format!("{} threads per block is not a valid launch", m.threads));
        }
        if m.grid.is_empty() || m.grid.len() > 3 {
            return Err(format!("the grid has {} axes (1 to 3 expected)", m.grid.len()));
        }
        Ok(())
    }

    /// Writes `DIR/KERNEL.ptx` and `DIR/KERNEL.json` (what `tessera build --emit ptx,meta` does).
    pub fn write(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let ptx = dir.join(format!("{}.ptx", self.meta.name));
        let json = dir.join(format!("{}.json", self.meta.name));
        std::fs::write(&ptx, &self.ptx)?;
        std::fs::write(&json, serde_json::to_string_pretty(&self.meta).map_err(std::io::Error::other)? + "\n")?;
        Ok((ptx, json))
    }

    /// Loads the kernel into the runtime's context.
    pub fn load(&self, rt: &Runtime) -> Result<LoadedKernel, RuntimeError> {
        rt.load(&self.ptx, &self.meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_compiler::{Options, Source};

    #[test]
    fn write_read_round_trip_and_mismatches() {
        let src = Source::new(
            "t.tile",
            "use std::math::cdiv;
             #[grid(cdiv(N, 128))]
             kernel twice(x: &f32[N], y: &mut f32[N], s: i32) {
                 let i = program_id(0) * 128;
                 y.store([i], x.load([i], [128]) * 2.0);
             }",
        );
        let m = tessera_compiler::compile(&src, &Options::default()).map_err(|d| d.render()).expect("compiles");
        let k = &m.kernels[0];
        let aot = AotKernel { meta: k.meta.clone(), ptx: k.ptx.clone() };
        let dir = std::env::temp_dir().join(format!("tessera-aot-test-{}", std::process::id()));
        aot.write(&dir).expect("writes");
        let back = AotKernel::read(&dir, "twice").expect("reads");
        assert_eq!(back, aot);
        assert_eq!(back.meta.dims, ["N"]);
        let names: Vec<&str> = back.meta.ptx_params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["x.ptr", "x.size0", "x.stride0", "y.ptr", "y.size0", "y.stride0", "s"]);

        let e = AotKernel::read(&dir, "nope").unwrap_err();
        assert!(matches!(e, AotError::Io { .. }) && e.to_string().contains("nope.json"), "{e}");
        std::fs::write(dir.join("twice.json"), "{\"name\": 3}").expect("write");
        assert!(matches!(AotKernel::read(&dir, "twice"), Err(AotError::Json { .. })));
        let mut other = aot.clone();
        other.meta.name = "thrice".into();
        other.write(&dir).expect("writes");
        std::fs::copy(dir.join("twice.ptx"), dir.join("thrice.ptx")).expect("copy");
        let e = AotKernel::read(&dir, "thrice").unwrap_err();
        assert!(e.to_string().contains("entry point `thrice`"), "{e}");
        let mut wrong_abi = aot.clone();
        wrong_abi.meta.ptx_params.pop();
        assert!(wrong_abi.validate().unwrap_err().contains("ABI"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
