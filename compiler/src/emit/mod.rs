//! Machine IR → PTX text: the last stage. Two emitters read the same machine IR: `ptx` prints
//! it directly (fast), and `llvm` (the cargo feature of that name) translates it to LLVM IR and
//! lets LLVM's NVPTX back end write the PTX.

#[cfg(feature = "llvm")]
pub mod llvm;
pub mod pipeline;
pub mod ptx;
