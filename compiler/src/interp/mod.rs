//! The reference interpreter: executes a tile-IR kernel over its whole grid on host tensors.
