//! The Tessera runtime: loading and launching compiled kernels on an NVIDIA GPU through cudarc
//! ([`device`], with typed tensors and views in [`tensor`], the launch path in `launch`, the
//! parameter ABI in [`pack`]), compiling source through the compile cache ([`cache`],
//! [`Runtime::compile`]), AOT artifacts ([`aot`]), timing and the autotuner ([`bench`],
//! [`tune`]), and NumPy `.npy` files in and out of host tensors ([`npy`]).
//!
//! Embedding the compiler and the runtime in a Rust program:
//!
//! ```
//! use tessera_compiler::{Options, Source};
//! use tessera_runtime::{Runtime, Tensor};
//!
//! # fn main() -> Result<(), tessera_runtime::Error> {
//! let src = Source::new("relu.tile", "use std::math::cdiv;
//!     #[grid(cdiv(N, 512))]
//!     kernel relu(x: &f32[N], y: &mut f32[N]) {
//!         let i = program_id(0) * 512;
//!         y.store([i], max(x.load([i], [512]), 0.0));
//!     }");
//! // Gated: on a machine without a GPU this example stops here.
//! let Ok(rt) = Runtime::new() else { return Ok(()) };
//! let program = rt.compile(&src, &Options::default())?; // cached in memory and on disk
//! let x: Tensor<f32> = rt.tensor(&[-1.0, 2.0, -3.0, 4.0], &[4])?;
//! let y = rt.zeros::<f32>(&[4])?;
//! let stream = rt.new_stream()?;
//! rt.launch_on(&stream, program.kernel("relu")?, &[x.arg(), y.arg()])?;
//! stream.synchronize()?;
//! assert_eq!(y.to_vec(&rt)?, [0.0, 2.0, 0.0, 4.0]);
//! # Ok(()) }
//! ```

pub mod aot;
pub mod bench;
pub mod cache;
pub mod device;
pub mod exec;
mod launch;
pub mod npy;
pub mod pack;
mod program;
pub mod ptxas;
pub mod selftest;
pub mod tensor;
mod tma;
pub mod tune;

#[cfg(all(test, feature = "gpu-tests"))]
mod gpu_tests;

pub use device::{DeviceArg, DeviceLimits, DeviceTensor, ExternalTensor, LoadedKernel, Runtime, RuntimeError, Stream};
pub use npy::{Bf16Npy, NpyError, read_npy, read_npy_as, write_npy, write_npy_with};
pub use program::{Error, Program};
pub use tensor::{Element, Tensor, TensorView};
