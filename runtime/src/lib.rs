//! The Tessera runtime: NumPy `.npy` files in and out of host tensors ([`npy`]), and loading and
//! launching compiled kernels on an NVIDIA GPU through cudarc ([`device`], with the parameter
//! packing in [`pack`]).

pub mod device;
pub mod exec;
pub mod npy;
pub mod pack;

#[cfg(all(test, feature = "gpu-tests"))]
mod gpu_tests;

pub use device::{DeviceArg, DeviceTensor, LoadedKernel, Runtime, RuntimeError};
pub use npy::{NpyError, read_npy, read_npy_as, write_npy};
