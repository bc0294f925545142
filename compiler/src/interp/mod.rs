//! The reference interpreter: executes a tile-IR kernel over its whole grid on host tensors.
//!
//! This is the language's reference semantics; the GPU backend is tested against it. Programs
//! run one after another (grid axis x fastest, then y, then z), each executing the entry block
//! from scratch. Every float operation computes in f64 and rounds its result to the tile's dtype
//! (round to nearest even); integers wrap to their width. See `ops` for the per-operation rules
//! and `value` for representations and conversions.
//!
//! The interpreter never panics: IR that breaks the op conventions gives
//! `InterpError::Internal`.
//!
//! Two launch-wide checks ([`RunOptions`]): a budget of programs per launch (a larger grid is
//! refused before anything runs), and races between programs (`race`): running programs in
//! grid order would hide a kernel whose programs overlap in what they write, which the GPU runs
//! in any order.

mod indexed;
mod math;
mod ops;
mod race;
mod shape;
pub(crate) mod value;

pub use race::Access;

#[cfg(test)]
mod lang_tests;
#[cfg(test)]
mod race_tests;
#[cfg(test)]
mod tests;

use crate::dtype::DType;
use crate::host::{ArgInfo, BindError, HostTensor, Scalar, bind, fit_scalar};
use crate::ir::{Block, Op, Value};
use crate::tir::{self, OpKind, ParamKind, Type};
use std::rc::Rc;
use value::{Data, Elem, TensorRef, Tile, Val};

/// A launch argument.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Tensor(HostTensor),
    Scalar(Scalar),
}

/// Why a kernel could not run to completion.
#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    /// The arguments do not fit the kernel's signature, or a `#[require]` failed.
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("argument `{param}`: a {dtype} tensor of shape {shape:?} needs {expected} bytes, got {got}")]
    TensorBytes { param: String, dtype: DType, shape: Vec<usize>, expected: usize, got: usize },
    /// A `for` loop whose step is zero or negative (it would never end, or run backward).
    #[error("program {program:?}: `for` loop step must be positive, got {step}")]
    NonPositiveStep { program: [u32; 3], step: i64 },
    #[error("program {program:?}: store to read-only tensor parameter `{param}`")]
    ReadOnlyStore { program: [u32; 3], param: String },
    /// An `assert` whose condition is false (at `element` of a tile condition).
    #[error("program {program:?}: assertion failed{}: {message}", element.as_ref().map(|e| format!(" at element {e:?}")).unwrap_or_default())]
    Assert { program: [u32; 3], message: String, element: Option<Vec<i64>> },
    /// `print` could not write its output.
    #[error("program {program:?}: cannot write the output of `print`: {error}")]
    Output { program: [u32; 3], error: String },
    /// The grid has more programs than [`RunOptions::max_programs`]; nothing ran.
    #[error(
        "the grid {grid:?} has {programs} programs, more than the interpreter's budget of {max}; the interpreter runs programs one at a time, so this would take very long. Run a smaller problem, or lift the budget with `tessera run --interp-max-programs {programs}` (`RunOptions::max_programs`)"
    )]
    TooManyPrograms { grid: [u32; 3], programs: u64, max: u64 },
    /// Race checking was asked for a grid too large to track.
    #[error(
        "the grid {grid:?} has {programs} programs, more than race checking can track ({max}); turn it off with `tessera run --no-race-check` (`RunOptions::race_check`)"
    )]
    TooManyToCheck { grid: [u32; 3], programs: u64, max: u64 },
    /// Two programs of the launch access one element, and one of the accesses is a plain write
    /// (or one is a read and the other an atomic update): the GPU's result depends on the order
    /// in which it happens to run the programs.
    #[error(
        "data race on `{param}` at element {element:?}: program {} {} it and program {} {} it in the same launch; the GPU runs programs in no fixed order, so an element one program writes must not be read or written by another (only atomic updates may come from several programs)",
        pid(*other), other_access.past(), pid(*program), access.present()
    )]
    Race { param: String, element: Vec<usize>, program: [u32; 3], access: Access, other: [u32; 3], other_access: Access },
    /// The IR breaks an op convention (an interpreter or compiler bug, not a user error).
    #[error("internal error in the interpreter: {0}")]
    Internal(String),
}

fn pid([x, y, z]: [u32; 3]) -> String {
    format!("({x}, {y}, {z})")
}

/// How the interpreter runs a launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Report programs of the launch that race on an element of a tensor ([`InterpError::Race`]):
    /// see `race.rs` for the rules. On by default; it costs a shadow of 16 bytes per element of
    /// each `&mut` tensor the kernel touches, and a check per access of one.
    pub race_check: bool,
    /// The most programs a launch may have: a larger grid is refused before anything runs
    /// ([`InterpError::TooManyPrograms`]). Default [`DEFAULT_MAX_PROGRAMS`].
    pub max_programs: u64,
}

/// The default budget of programs per launch: 2^20. The interpreter runs a program in
/// microseconds to seconds, so a grid of millions of programs is a mistake or a job for the GPU.
pub const DEFAULT_MAX_PROGRAMS: u64 = 1 << 20;

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions { race_check: true, max_programs: DEFAULT_MAX_PROGRAMS }
    }
}

type Result<T> = std::result::Result<T, InterpError>;

/// Deeper region nesting than this is refused: well-formed IR nests a few levels, and malformed
/// IR whose regions form a cycle would otherwise recurse until the stack overflows.
const MAX_NESTING: usize = 256;

/// Runs `k` over its whole grid with the default [`RunOptions`] (races checked, at most
/// [`DEFAULT_MAX_PROGRAMS`] programs); tensors in `args` are read and written in place. `print`
/// writes to standard output.
pub fn run_kernel(k: &tir::Kernel, args: &mut [Arg]) -> std::result::Result<(), InterpError> {
    run_kernel_with(k, args, &RunOptions::default(), &mut std::io::stdout().lock())
}

/// `run_kernel`, with the output of `print` going to `out`.
pub fn run_kernel_with_output(k: &tir::Kernel, args: &mut [Arg], out: &mut dyn std::io::Write) -> std::result::Result<(), InterpError> {
    run_kernel_with(k, args, &RunOptions::default(), out)
}

/// `run_kernel` with options, the output of `print` going to `out`.
pub fn run_kernel_with(
    k: &tir::Kernel,
    args: &mut [Arg],
    opts: &RunOptions,
    out: &mut dyn std::io::Write,
) -> std::result::Result<(), InterpError> {
    let infos: Vec<ArgInfo> = args
        .iter()
        .map(|a| match a {
            Arg::Tensor(t) => ArgInfo::Tensor { dtype: t.dtype, shape: t.shape.clone() },
            Arg::Scalar(s) => ArgInfo::Scalar(*s),
        })
        .collect();
    let bound = bind(&k.name, &k.params, &k.grid, &k.requires, &infos)?;
    let grid = bound.grid;
    // At most 2^31 · 2^16 · 2^16 (`eval_grid`'s limits): no overflow.
    let programs = grid.iter().map(|&g| u64::from(g)).product::<u64>();
    if programs > opts.max_programs {
        return Err(InterpError::TooManyPrograms { grid, programs, max: opts.max_programs });
    }
    if opts.race_check && programs > race::MAX_CHECKED_PROGRAMS {
        return Err(InterpError::TooManyToCheck { grid, programs, max: race::MAX_CHECKED_PROGRAMS });
    }
    let entry = k.body.blocks.get(k.body.entry.index()).ok_or_else(|| internal("the entry block does not exist"))?;
    if entry.args.len() != k.params.len() {
        return Err(internal(format!("the entry block has {} arguments for {} parameters", entry.args.len(), k.params.len())));
    }
    // The parameters' values are the same in every program.
    let mut params = Vec::with_capacity(args.len());
    for (i, (p, a)) in k.params.iter().zip(args.iter()).enumerate() {
        params.push(match (&p.kind, a) {
            (ParamKind::Tensor { mutable, .. }, Arg::Tensor(t)) => {
                let expected = t.shape.iter().try_fold(t.dtype.size(), |n, &d| n.checked_mul(d));
                if expected != Some(t.bytes.len()) {
                    return Err(InterpError::TensorBytes {
                        param: p.name.clone(),
                        dtype: t.dtype,
                        shape: t.shape.clone(),
                        expected: expected.unwrap_or(usize::MAX),
                        got: t.bytes.len(),
                    });
                }
                let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
                Val::Tensor(Rc::new(TensorRef { arg: i, offset: 0, strides: t.strides(), shape, empty: false, mutable: *mutable }))
            }
            (ParamKind::Scalar { dtype }, Arg::Scalar(s)) => {
                // The value the GPU packer passes (`bind` has checked that it fits).
                let v = fit_scalar(*dtype, *s).map_err(|detail| BindError::Scalar { param: p.name.clone(), detail })?;
                let e = if dtype.is_float() { Elem::F(v.to_f64()) } else { Elem::I(value::wrap(*dtype, v.bits as i64)) };
                Val::Tile(Rc::new(Tile::filled(*dtype, &[], e)))
            }
            // `bind` has already checked that kinds agree.
            _ => return Err(internal(format!("argument `{}` does not match its parameter", p.name))),
        });
    }
    let races = opts.race_check.then(|| race::Races::new(k.params.iter().map(|p| p.name.clone()).collect(), grid));
    let mut it =
        Interp { k, args, vals: vec![None; k.body.values.len()], program: [0; 3], grid, depth: 0, out, returned: false, races, pid: 0 };
    let entry_args = entry.args.clone();
    for z in 0..bound.grid[2] {
        for y in 0..bound.grid[1] {
            for x in 0..bound.grid[0] {
                it.program = [x, y, z];
                it.pid = it.races.as_ref().map_or(0, |r| r.id([x, y, z]));
                it.returned = false;
                // Forget the previous program's values, so a use before definition is an error
                // rather than a read of stale data.
                it.vals.iter_mut().for_each(|v| *v = None);
                for (&a, v) in entry_args.iter().zip(&params) {
                    it.set(a, v.clone())?;
                }
                it.block(k.body.entry)?;
            }
        }
    }
    Ok(())
}

fn internal(msg: impl Into<String>) -> InterpError {
    InterpError::Internal(msg.into())
}

struct Interp<'a> {
    k: &'a tir::Kernel,
    args: &'a mut [Arg],
    /// The current value of every SSA value (`None` until defined in this program).
    vals: Vec<Option<Val>>,
    program: [u32; 3],
    grid: [u32; 3],
    depth: usize,
    /// Where `print` writes.
    out: &'a mut dyn std::io::Write,
    /// Set by `return`: the rest of this program is skipped.
    returned: bool,
    /// The shadows of the race check, when it is on.
    races: Option<race::Races>,
    /// The current program's id in `races`.
    pid: u32,
}

impl Interp<'_> {
    fn set(&mut self, v: Value, x: Val) -> Result<()> {
        let slot = self.vals.get_mut(v.index()).ok_or_else(|| internal(format!("{v} is not in the value arena")))?;
        *slot = Some(x);
        Ok(())
    }

    fn val(&self, v: Value) -> Result<&Val> {
        self.vals.get(v.index()).and_then(Option::as_ref).ok_or_else(|| internal(format!("{v} is used before it is defined")))
    }

    fn tile(&self, v: Value) -> Result<Rc<Tile>> {
        match self.val(v)? {
            Val::Tile(t) => Ok(t.clone()),
            Val::Tensor(_) => Err(internal(format!("{v} is a tensor where a tile is expected"))),
        }
    }

    fn tensor(&self, v: Value) -> Result<Rc<TensorRef>> {
        match self.val(v)? {
            Val::Tensor(t) => Ok(t.clone()),
            Val::Tile(_) => Err(internal(format!("{v} is a tile where a tensor is expected"))),
        }
    }

    /// An integer scalar operand (an index, a loop bound, a condition), as its exact value.
    fn int_scalar(&self, v: Value) -> Result<i64> {
        let t = self.tile(v)?;
        match t.elem() {
            Some(Elem::I(i)) if t.shape.is_empty() => {
                let exact = value::int_value(t.dtype, i);
                i64::try_from(exact).map_err(|_| internal(format!("{v} = {exact} does not fit in i64")))
            }
            _ => Err(internal(format!("{v} is not an integer scalar (it is {}{:?})", t.dtype, t.shape))),
        }
    }

    fn ty(&self, v: Value) -> Result<&Type> {
        self.k.body.values.get(v.index()).map(|d| &d.ty).ok_or_else(|| internal(format!("{v} is not in the value arena")))
    }

    /// Runs the ops of `b` in order; returns the values of the `yield` that ends it, if any.
    fn block(&mut self, b: Block) -> Result<Option<Vec<Val>>> {
        let k = self.k;
        let data = k.body.blocks.get(b.index()).ok_or_else(|| internal(format!("{b} does not exist")))?;
        if self.depth >= MAX_NESTING {
            return Err(internal(format!("regions nested more than {MAX_NESTING} deep (a cycle?)")));
        }
        self.depth += 1;
        let mut out = Ok(None);
        for &op in &data.ops {
            match self.op(op) {
                Ok(None) if self.returned => break,
                Ok(None) => {}
                Ok(Some(y)) => {
                    out = Ok(Some(y));
                    break;
                }
                Err(e) => {
                    out = Err(e);
                    break;
                }
            }
        }
        self.depth -= 1;
        out
    }

    /// Runs one op; `Some` when it is a `yield`.
    fn op(&mut self, op: Op) -> Result<Option<Vec<Val>>> {
        let k = self.k;
        let data = k.body.ops.get(op.index()).ok_or_else(|| internal(format!("{op} does not exist")))?;
        match &data.kind {
            OpKind::Yield => {
                let vals = data.operands.iter().map(|&v| self.val(v).cloned()).collect::<Result<Vec<_>>>()?;
                return Ok(Some(vals));
            }
            OpKind::Return => self.returned = true,
            OpKind::ScanFn(axis) => {
                let r = self.scan_fn(op, data, *axis as usize)?;
                self.set_results(op, &data.results, vec![r])?;
            }
            OpKind::For | OpKind::If | OpKind::While => {
                let results = match data.kind {
                    OpKind::For => self.for_loop(op, data)?,
                    OpKind::While => self.while_loop(op, data)?,
                    _ => {
                        let [cond] = data.operands[..] else {
                            return Err(self.op_error(op, "`if` takes one operand"));
                        };
                        let c = self.int_scalar(cond)?;
                        let region =
                            *data.regions.get(if c != 0 { 0 } else { 1 }).ok_or_else(|| self.op_error(op, "`if` needs two regions"))?;
                        self.block(region)?.unwrap_or_default()
                    }
                };
                // After a `return` inside, the op has no results: nothing runs after it.
                if !self.returned {
                    self.set_results(op, &data.results, results)?;
                }
            }
            _ => {
                let r = self.compute(data).map_err(|e| match e {
                    InterpError::Internal(m) => self.op_error(op, &m),
                    e => e,
                })?;
                self.set_results(op, &data.results, r)?;
            }
        }
        Ok(None)
    }

    fn op_error(&self, op: Op, msg: &str) -> InterpError {
        let mn = self.k.body.ops.get(op.index()).map(|d| d.kind.mnemonic()).unwrap_or_default();
        internal(format!("program {:?}, {op} (`{mn}`): {msg}", self.program))
    }

    fn set_results(&mut self, op: Op, results: &[Value], vals: Vec<Val>) -> Result<()> {
        if vals.len() != results.len() {
            return Err(self.op_error(op, &format!("{} values for {} results", vals.len(), results.len())));
        }
        for (&r, v) in results.iter().zip(vals) {
            self.set(r, v)?;
        }
        Ok(())
    }

    /// `scan_fn axis, x { ^(acc, e): … }`: along each line of `axis`, `acc` starts as the first
    /// element and becomes `f(acc, e)` for each next element `e`, in order.
    fn scan_fn(&mut self, op: Op, data: &crate::ir::OpData<OpKind>, axis: usize) -> Result<Val> {
        let [x] = data.operands[..] else { return Err(self.op_error(op, "`scan_fn` takes one operand")) };
        let [f] = data.regions[..] else { return Err(self.op_error(op, "`scan_fn` needs one region")) };
        let args = self.k.body.blocks.get(f.index()).map(|b| b.args.clone()).unwrap_or_default();
        let [acc_arg, elem_arg] = args[..] else { return Err(self.op_error(op, "the combine function takes two arguments")) };
        let x = self.tile(x)?;
        if axis >= x.shape.len() {
            return Err(self.op_error(op, &format!("axis {axis} of rank {}", x.shape.len())));
        }
        let (outer, n, inner) = (value::numel(&x.shape[..axis]), x.shape[axis].max(0) as usize, value::numel(&x.shape[axis + 1..]));
        let at = |o: usize, j: usize, i: usize| (o * n + j) * inner + i;
        let elem = |t: &Tile, k: usize| match &t.data {
            Data::F(v) => v.get(k).map(|&f| Elem::F(f)),
            Data::I(v) => v.get(k).map(|&i| Elem::I(i)),
        };
        let mut out = (*x).clone();
        for o in 0..outer {
            for i in 0..inner {
                let Some(mut acc) = elem(&x, at(o, 0, i)) else { continue };
                for j in 1..n {
                    let e = elem(&x, at(o, j, i)).ok_or_else(|| internal("scan_fn read past its tile"))?;
                    self.set(acc_arg, Val::Tile(Rc::new(Tile::filled(x.dtype, &[], acc))))?;
                    self.set(elem_arg, Val::Tile(Rc::new(Tile::filled(x.dtype, &[], e))))?;
                    let y = self.block(f)?.ok_or_else(|| self.op_error(op, "the combine function does not end with `yield`"))?;
                    let [Val::Tile(y)] = &y[..] else { return Err(self.op_error(op, "the combine function yields one scalar")) };
                    acc = y.elem().ok_or_else(|| self.op_error(op, "the combine function yields one scalar"))?;
                    match (&mut out.data, acc) {
                        (Data::F(v), Elem::F(a)) => v[at(o, j, i)] = a,
                        (Data::I(v), Elem::I(a)) => v[at(o, j, i)] = a,
                        _ => return Err(self.op_error(op, "the combine function changes the element type")),
                    }
                }
            }
        }
        Ok(Val::Tile(Rc::new(out)))
    }

    /// `for lo, hi, step, inits…`: the body runs with `iv = lo, lo + step, …` while `iv < hi`.
    fn for_loop(&mut self, op: Op, data: &crate::ir::OpData<OpKind>) -> Result<Vec<Val>> {
        if data.operands.len() < 3 {
            return Err(self.op_error(op, "`for` takes lo, hi, step and the initial values"));
        }
        let (lo, hi, step) = (self.int_scalar(data.operands[0])?, self.int_scalar(data.operands[1])?, self.int_scalar(data.operands[2])?);
        if step <= 0 {
            return Err(InterpError::NonPositiveStep { program: self.program, step });
        }
        let mut iters = data.operands[3..].iter().map(|&v| self.val(v).cloned()).collect::<Result<Vec<_>>>()?;
        let [body] = data.regions[..] else {
            return Err(self.op_error(op, "`for` needs one region"));
        };
        let args = self.k.body.blocks.get(body.index()).map(|b| b.args.clone()).unwrap_or_default();
        if args.len() != iters.len() + 1 {
            return Err(self.op_error(op, &format!("the body takes {} arguments for {} loop-carried values", args.len(), iters.len())));
        }
        let iv_type = match self.ty(args[0])? {
            Type::Tile { dtype, shape } if shape.is_empty() && !dtype.is_float() => *dtype,
            t => return Err(self.op_error(op, &format!("the induction variable has type {t}"))),
        };
        let mut iv = lo;
        while iv < hi {
            self.set(args[0], Val::Tile(Rc::new(Tile::filled(iv_type, &[], Elem::I(value::wrap(iv_type, iv))))))?;
            for (&a, v) in args[1..].iter().zip(iters.drain(..)) {
                self.set(a, v)?;
            }
            let next = self.block(body)?;
            if self.returned {
                return Ok(vec![]);
            }
            iters = next.ok_or_else(|| self.op_error(op, "the loop body does not end with `yield`"))?;
            if iters.len() != args.len() - 1 {
                return Err(
                    self.op_error(op, &format!("the body yields {} values for {} loop-carried values", iters.len(), args.len() - 1))
                );
            }
            match iv.checked_add(step) {
                Some(n) => iv = n,
                None => break,
            }
        }
        Ok(iters)
    }

    /// `while init…`: runs the condition region on the loop values, then (while it yields true)
    /// the body, whose yield gives the next values.
    fn while_loop(&mut self, op: Op, data: &crate::ir::OpData<OpKind>) -> Result<Vec<Val>> {
        let [cond, body] = data.regions[..] else {
            return Err(self.op_error(op, "`while` needs two regions"));
        };
        let mut vals = data.operands.iter().map(|&v| self.val(v).cloned()).collect::<Result<Vec<_>>>()?;
        loop {
            for region in [cond, body] {
                let args = self.k.body.blocks.get(region.index()).map(|b| b.args.clone()).unwrap_or_default();
                if args.len() != vals.len() {
                    return Err(self.op_error(op, &format!("a region takes {} arguments for {} loop values", args.len(), vals.len())));
                }
                for (&a, v) in args.iter().zip(&vals) {
                    self.set(a, v.clone())?;
                }
                let y = self.block(region)?;
                if self.returned {
                    return Ok(vec![]);
                }
                let y = y.ok_or_else(|| self.op_error(op, "a region does not end with `yield`"))?;
                if region == cond {
                    let c = match y.first() {
                        Some(Val::Tile(t)) if y.len() == 1 && t.shape.is_empty() && t.dtype == DType::Bool => t.elem(),
                        _ => None,
                    };
                    match c {
                        Some(Elem::I(0)) => return Ok(vals),
                        Some(_) => {}
                        None => return Err(self.op_error(op, "the condition region does not yield one bool")),
                    }
                } else if y.len() != vals.len() {
                    return Err(self.op_error(op, &format!("the body yields {} values for {} loop values", y.len(), vals.len())));
                } else {
                    vals = y;
                }
            }
        }
    }
}
