//! Machine-IR pass `dce`: removes the pure instructions and phi copies whose registers nothing
//! reads.
//!
//! The builder creates values eagerly and folds their uses afterwards: an address becomes an
//! immediate offset of the access that reads it (`[r + 16]`), a range check's two signed
//! compares become one unsigned compare, an element offset is rebuilt from a shared base. What
//! was built and then not used would reach both emitters: ptxas drops it, but LLVM builds, checks
//! and selects instructions for every one of them first (its time grows with the instructions),
//! and the PTX is larger to read and to load.
//!
//! Liveness here is by register, over the whole function (a register is live if any
//! instruction, copy or branch reads it): registers may be written more than once (phis, in-place
//! updates), so only a register never read is dead, and removing its writers is safe wherever
//! they are. Instructions with effects (memory, barriers, calls, inline asm) always stay.

use super::{Function, Module, Term};

/// Runs the pass on every function of `m`; returns the number of instructions and copies
/// removed.
pub fn run(m: &mut Module) -> usize {
    let mut removed = dce(&mut m.kernel);
    for f in &mut m.funcs {
        removed += dce(f);
    }
    removed
}

/// One function: removes dead instructions until none is left (a removal can make the
/// operands' writers dead in turn).
pub fn dce(f: &mut Function) -> usize {
    let mut removed = 0;
    loop {
        let read = read_registers(f);
        let is_read = |r: Option<u32>| r.is_none_or(|r| read.get(r as usize).copied().unwrap_or(true));
        let mut now = 0;
        for b in &mut f.blocks {
            let before = b.insts.len() + b.copies.len();
            b.insts.retain(|i| !i.is_pure() || i.defs().iter().any(|d| is_read(d.reg())));
            b.copies.retain(|(phi, _)| is_read(phi.reg()));
            now += before - b.insts.len() - b.copies.len();
        }
        if now == 0 {
            return removed;
        }
        removed += now;
    }
}

/// Which registers something reads (by register number).
fn read_registers(f: &Function) -> Vec<bool> {
    let mut read = vec![false; f.regs.len()];
    let mut mark = |v: super::V| {
        if let Some(r) = v.reg() {
            match read.get_mut(r as usize) {
                Some(x) => *x = true,
                // A register the function never created: the verifier's to report; kept.
                None => read.resize(r as usize + 1, true),
            }
        }
    };
    for b in &f.blocks {
        for i in &b.insts {
            i.uses().into_iter().for_each(&mut mark);
        }
        for &(_, v) in &b.copies {
            mark(v);
        }
        if let Some(Term::CondBr(c, _, _)) = &b.term {
            mark(*c);
        }
    }
    read
}
