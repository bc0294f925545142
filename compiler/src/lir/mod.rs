//! Level 2, the thread IR.

/// A kernel in the thread IR.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub name: String,
    pub threads: u32,
    pub shared_bytes: u32,
}

pub fn verify_kernel(_k: &Kernel) -> Result<(), String> {
    Ok(())
}
