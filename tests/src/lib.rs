//! Cross-crate tests of Tessera, all in this one test binary (each binary links the compiler):
//! golden snapshots of every example's IR and PTX, tile-IR round trips, ptxas on every PTX,
//! the matrix instructions and spill counts of the tensor-core examples, diagnostics of the
//! `tests/ui` files, the IR before and after each stage of the `tests/passes` programs,
//! interpreter results against plain Rust references, races between programs that the
//! interpreter must report (`tests/races`), and property tests (the front end never panics;
//! tile-IR text round-trips; the launch binder).

#[cfg(test)]
mod common;
#[cfg(test)]
mod differential;
#[cfg(test)]
mod golden;
#[cfg(test)]
mod ops;
#[cfg(test)]
mod passes;
#[cfg(test)]
mod props;
#[cfg(test)]
mod races;
#[cfg(test)]
mod ui;
