//! Race detection between the programs of one launch.
//!
//! The interpreter runs programs one after another, but the GPU runs them in no fixed order and
//! concurrently, and a launch has no synchronisation between programs. So within one launch an
//! element of a tensor may be accessed by several programs only if every access is a read, or
//! every access is an atomic update. Two different programs racing on one element are reported:
//! a plain write and any other access (read, write or atomic), an atomic update and a read.
//! Accesses of one program to one element never race with each other (a program is sequential).
//!
//! Only `&mut` parameters are tracked (the others cannot be written). Each tracked tensor gets,
//! lazily at its first access, a shadow cell per element holding up to two writers and two
//! readers: the first program that accessed the element that way and one other. That is enough
//! to name, for any later access, a different program it conflicts with. Program ids are the
//! linear grid index plus one (0 is "none"); the top bit of the first writer says whether that
//! program wrote plainly (rather than only atomically).

use super::InterpError;
use std::collections::HashMap;

/// How a program accesses an element of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Atomic,
}

impl Access {
    /// "reads", "writes", "atomically updates".
    pub fn present(self) -> &'static str {
        match self {
            Access::Read => "reads",
            Access::Write => "writes",
            Access::Atomic => "atomically updates",
        }
    }

    /// "read", "wrote", "atomically updated".
    pub fn past(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "wrote",
            Access::Atomic => "atomically updated",
        }
    }
}

/// The most programs whose ids fit a shadow cell (the top bit of a writer is a flag).
pub(super) const MAX_CHECKED_PROGRAMS: u64 = (1 << 31) - 2;

/// Tensors with more elements than this get a sparse shadow (a hash map of the touched
/// elements) instead of a dense one: 16 bytes per element stays at most 64 MiB.
const DENSE_MAX: usize = 1 << 22;

const PLAIN: u32 = 1 << 31;
const ID: u32 = PLAIN - 1;

#[derive(Clone, Copy, Debug, Default)]
struct Cell {
    /// The first program that wrote (plainly or atomically) the element, `PLAIN` set if it wrote
    /// plainly; 0 if none.
    w1: u32,
    /// Another program that updated the element (atomically: a second plain writer is a race).
    w2: u32,
    /// The first program that read the element, and another one.
    r1: u32,
    r2: u32,
}

enum Cells {
    Dense(Vec<Cell>),
    Sparse(HashMap<usize, Cell>),
}

/// A conflict: `other` accessed the element as `other_access` before the current program's
/// access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Conflict {
    pub other: u32,
    pub other_access: Access,
}

/// The shadows of one launch, by argument index.
pub(super) struct Races {
    shadows: Vec<Option<Cells>>,
    /// The parameter names, for messages.
    names: Vec<String>,
    grid: [u32; 3],
}

impl Races {
    pub(super) fn new(names: Vec<String>, grid: [u32; 3]) -> Races {
        Races { shadows: names.iter().map(|_| None).collect(), names, grid }
    }

    /// The 1-based id of program `[x, y, z]` (fits: the grid has at most
    /// `MAX_CHECKED_PROGRAMS` programs when races are checked).
    pub(super) fn id(&self, [x, y, z]: [u32; 3]) -> u32 {
        let [gx, gy, _] = self.grid.map(u64::from);
        (x as u64 + gx * (y as u64 + gy * z as u64) + 1) as u32
    }

    fn program(&self, id: u32) -> [u32; 3] {
        let [gx, gy, _] = self.grid.map(u64::from);
        let l = u64::from(id).saturating_sub(1);
        let (x, yz) = (l % gx.max(1), l / gx.max(1));
        [x as u32, (yz % gy.max(1)) as u32, (yz / gy.max(1)) as u32]
    }

    /// Records that program `p` (see [`Races::id`]) accesses element `i` (row-major) of
    /// argument `arg`, a tensor of `shape`; an error if it races with another program's access.
    pub(super) fn access(&mut self, arg: usize, shape: &[usize], i: usize, p: u32, a: Access) -> Result<(), InterpError> {
        let Some(slot) = self.shadows.get_mut(arg) else { return Ok(()) };
        let cells = slot.get_or_insert_with(|| {
            let numel = shape.iter().product::<usize>();
            if numel <= DENSE_MAX { Cells::Dense(vec![Cell::default(); numel]) } else { Cells::Sparse(HashMap::new()) }
        });
        let cell = match cells {
            Cells::Dense(v) => match v.get_mut(i) {
                Some(c) => c,
                None => return Ok(()),
            },
            Cells::Sparse(m) => m.entry(i).or_default(),
        };
        check(cell, p, a).map_err(|c| InterpError::Race {
            param: self.names.get(arg).cloned().unwrap_or_default(),
            element: crate::host::unravel(shape, i),
            program: self.program(p),
            access: a,
            other: self.program(c.other),
            other_access: c.other_access,
        })
    }
}

/// The access rules on one cell (see the module documentation).
fn check(c: &mut Cell, p: u32, a: Access) -> Result<(), Conflict> {
    let w1 = c.w1 & ID;
    let w1_plain = c.w1 & PLAIN != 0;
    let other_writer = if w1 != 0 && w1 != p {
        Some(Conflict { other: w1, other_access: if w1_plain { Access::Write } else { Access::Atomic } })
    } else if c.w2 != 0 && c.w2 != p {
        Some(Conflict { other: c.w2, other_access: Access::Atomic })
    } else {
        None
    };
    let other_reader = [c.r1, c.r2].into_iter().find(|&r| r != 0 && r != p).map(|r| Conflict { other: r, other_access: Access::Read });
    match a {
        Access::Read => {
            if let Some(w) = other_writer {
                return Err(w);
            }
            if c.r1 == 0 {
                c.r1 = p;
            } else if c.r1 != p && c.r2 == 0 {
                c.r2 = p;
            }
        }
        Access::Write => {
            if let Some(x) = other_writer.or(other_reader) {
                return Err(x);
            }
            // Every earlier writer is `p` itself.
            c.w1 = p | PLAIN;
            c.w2 = 0;
        }
        Access::Atomic => {
            match other_writer {
                Some(w) if w.other_access == Access::Write => return Err(w),
                _ => {}
            }
            if let Some(r) = other_reader {
                return Err(r);
            }
            if w1 == 0 {
                c.w1 = p;
            } else if w1 != p && c.w2 == 0 {
                c.w2 = p;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Access::*;

    fn run(accesses: &[(u32, Access)]) -> Result<(), (usize, Conflict)> {
        let mut c = Cell::default();
        for (k, &(p, a)) in accesses.iter().enumerate() {
            check(&mut c, p, a).map_err(|e| (k, e))?;
        }
        Ok(())
    }

    #[test]
    fn one_program_never_races_with_itself() {
        assert_eq!(run(&[(1, Read), (1, Write), (1, Atomic), (1, Read), (1, Write)]), Ok(()));
    }

    #[test]
    fn reads_and_atomics_of_many_programs_are_fine() {
        assert_eq!(run(&[(1, Read), (2, Read), (3, Read), (2, Read)]), Ok(()));
        assert_eq!(run(&[(1, Atomic), (2, Atomic), (3, Atomic), (1, Atomic)]), Ok(()));
    }

    #[test]
    fn every_mixed_pair_of_programs_races() {
        let c = |other, other_access| Conflict { other, other_access };
        assert_eq!(run(&[(1, Write), (2, Write)]), Err((1, c(1, Write))));
        assert_eq!(run(&[(1, Write), (2, Read)]), Err((1, c(1, Write))));
        assert_eq!(run(&[(1, Read), (2, Write)]), Err((1, c(1, Read))));
        assert_eq!(run(&[(1, Write), (2, Atomic)]), Err((1, c(1, Write))));
        assert_eq!(run(&[(1, Atomic), (2, Write)]), Err((1, c(1, Atomic))));
        assert_eq!(run(&[(1, Atomic), (2, Read)]), Err((1, c(1, Atomic))));
        assert_eq!(run(&[(1, Read), (2, Atomic)]), Err((1, c(1, Read))));
        // The second writer or reader is remembered: program 1 conflicts with program 2 later.
        assert_eq!(run(&[(1, Atomic), (2, Atomic), (1, Write)]), Err((2, c(2, Atomic))));
        assert_eq!(run(&[(1, Read), (2, Read), (1, Write)]), Err((2, c(2, Read))));
        // A program that wrote plainly and then atomically still counts as a plain writer.
        assert_eq!(run(&[(1, Write), (1, Atomic), (2, Atomic)]), Err((2, c(1, Write))));
    }
}
