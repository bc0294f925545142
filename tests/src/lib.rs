//! Cross-crate tests of Tessera, all in this one test binary (each binary links LLVM):
//! golden snapshots of every example's IR and PTX, tile-IR round trips, ptxas on every PTX,
//! diagnostics of the `tests/ui` files, interpreter results against plain Rust references, and
//! property tests (the front end never panics; tile-IR text round-trips).

#[cfg(test)]
mod common;
#[cfg(test)]
mod differential;
#[cfg(test)]
mod golden;
#[cfg(test)]
mod ops;
#[cfg(test)]
mod props;
#[cfg(test)]
mod ui;
