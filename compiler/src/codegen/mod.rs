//! Thread IR → LLVM IR (through inkwell, LLVM 19's NVPTX back end) → PTX.
//!
//! Each thread-IR tile becomes, per thread, the list of LLVM values of the elements that thread
//! holds (its "registers", in the layout's order); tensors become a pointer with i32 sizes and
//! i64 strides. Structured control flow becomes loops and diamonds with phis. Element addresses,
//! bounds masks and shared-memory offsets are computed from the layout, per register, through
//! `fold` (which builds each distinct value once).

mod control;
mod fold;
mod indexed;
mod math;
mod memory;
mod mma;
mod reduce;
mod scan;
mod shuffle;
mod wgmma;

use crate::Target;
use crate::diag::Diagnostic;
use crate::dtype::DType;
use crate::ir::{Block, Value};
use crate::lir::{self, Layout, OpKind};
use crate::tir::{self, BinaryOp, CmpOp, ParamKind, ReduceOp, row_major};
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target as LlvmTarget, TargetMachine, TargetTriple};
use inkwell::types::{BasicMetadataTypeEnum, BasicType, BasicTypeEnum};
use inkwell::values::{BasicMetadataValueEnum, BasicValue, BasicValueEnum, FunctionValue, IntValue, PointerValue};
use inkwell::{AddressSpace, FloatPredicate, IntPredicate, OptimizationLevel};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Once;

type Res<T> = Result<T, String>;

/// The body of a counted loop: (generator, induction variable, carried values) → next values.
type LoopBody<'a, 'c, 'm> = &'a mut dyn FnMut(&mut Gen<'c, 'm>, IntValue<'c>, &[BasicValueEnum<'c>]) -> Res<Vec<BasicValueEnum<'c>>>;

/// Turns inkwell's builder errors into this module's error strings.
trait Ice<T> {
    fn ice(self) -> Res<T>;
}

impl<T, E: std::fmt::Display> Ice<T> for Result<T, E> {
    fn ice(self) -> Res<T> {
        self.map_err(|e| e.to_string())
    }
}

static INIT: Once = Once::new();

fn target_machine(target: Target) -> Res<TargetMachine> {
    INIT.call_once(|| LlvmTarget::initialize_nvptx(&InitializationConfig::default()));
    let triple = TargetTriple::create("nvptx64-nvidia-cuda");
    let t = LlvmTarget::from_triple(&triple).ice()?;
    let (cpu, features) = match target {
        Target::Sm80 => ("sm_80", "+ptx70"),
        Target::Sm90a => ("sm_90a", "+ptx80"),
    };
    // `Default` (-O2) code generation: `Aggressive` only swaps an EarlyCSE of the NVPTX IR
    // passes for a GVN, slower and no better once ptxas has optimised the PTX.
    t.create_target_machine(&triple, cpu, features, OptimizationLevel::Default, RelocMode::Default, CodeModel::Default)
        .ok_or_else(|| format!("LLVM has no NVPTX target machine for {cpu}"))
}

/// The optimisation pipeline. The generated IR is already free of most redundancy (`fold`:
/// identities folded, values built once), and ptxas optimises the PTX heavily, so a short
/// function pipeline does what `default<O3>` did for the SASS at a fraction of its time (O3's
/// InstCombine alone took longer): `nvvm-intr-range` (the range of `tid.x`, which lets
/// InstCombine prove index arithmetic non-negative and disjoint), one round of CSE and
/// InstCombine, reassociation (register pressure of the attention loop), loop-invariant code
/// motion around the rotated loops, induction variables, and a final InstCombine and CFG
/// cleanup. InstCombine runs one iteration each time (no fixpoint).
const PIPELINE: &str = "function(nvvm-intr-range,early-cse,\
    instcombine<max-iterations=1;no-verify-fixpoint>,simplifycfg<keep-loops>,reassociate,\
    loop-mssa(licm<no-allowspeculation>,loop-rotate,licm<allowspeculation>),simplifycfg<keep-loops>,\
    loop(indvars,loop-deletion),instcombine<max-iterations=1;no-verify-fixpoint>,simplifycfg<keep-loops>)";

/// What [`emit`] made of one kernel.
pub struct Emitted {
    /// The LLVM IR after optimisation, if asked for.
    pub llvm_ir: Option<String>,
    pub ptx: String,
    /// Milliseconds spent building the LLVM IR, optimising it, and generating PTX from it.
    pub ms: [f64; 3],
}

/// Generates the PTX of one kernel, and its LLVM IR after optimisation if `keep_ir`.
pub fn emit(k: &lir::Kernel, target: Target, keep_ir: bool) -> Result<Emitted, Diagnostic> {
    emit_inner(k, target, keep_ir).map_err(|e| Diagnostic::ice("codegen", e))
}

fn emit_inner(k: &lir::Kernel, target: Target, keep_ir: bool) -> Res<Emitted> {
    let clock = std::time::Instant::now();
    let lap = || clock.elapsed().as_secs_f64() * 1e3;
    let tm = target_machine(target)?;
    let ctx = Context::create();
    let module = ctx.create_module(&k.name);
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    let mut g = Gen::new(&ctx, &module, k)?;
    g.kernel()?;
    module.verify().map_err(|e| format!("LLVM rejected the generated module: {e}"))?;
    let built = lap();
    module.run_passes(PIPELINE, &tm, PassBuilderOptions::create()).ice()?;
    let optimised = lap();
    // Printing the IR costs a few milliseconds: only when asked for.
    let llvm_ir = keep_ir.then(|| module.print_to_string().to_string());
    let printed = lap();
    let buf = tm.write_to_memory_buffer(&module, FileType::Assembly).ice()?;
    let ptx = deterministic(String::from_utf8_lossy(buf.as_slice()).trim_end_matches('\0'));
    let done = lap();
    Ok(Emitted { llvm_ir, ptx, ms: [built, optimised - built, done - printed] })
}

/// The PTX without the sequence numbers LLVM writes in comments of device-function calls
/// (`// callseq 13`): a counter shared by every compilation in the process, so the same kernel
/// would otherwise print differently depending on what was compiled before it.
fn deterministic(ptx: &str) -> String {
    let mut out = String::with_capacity(ptx.len());
    for line in ptx.split_inclusive('\n') {
        match line.find("// callseq ") {
            Some(at) => {
                out.push_str(line[..at].trim_end());
                out.push('\n');
            }
            None => out.push_str(line),
        }
    }
    out
}

#[derive(Clone)]
pub(crate) enum Cv<'c> {
    /// The elements this thread holds, in register order.
    Regs(Vec<BasicValueEnum<'c>>),
    Tensor {
        ptr: PointerValue<'c>,
        sizes: Vec<IntValue<'c>>,
        strides: Vec<IntValue<'c>>,
    },
}

pub(crate) struct Gen<'c, 'm> {
    pub(crate) ctx: &'c Context,
    module: &'m Module<'c>,
    pub(crate) b: Builder<'c>,
    pub(crate) k: &'m lir::Kernel,
    func: FunctionValue<'c>,
    pub(crate) vals: HashMap<Value, Cv<'c>>,
    pub(crate) tid: IntValue<'c>,
    smem: PointerValue<'c>,
    /// Whether some `local_mma` runs as `wgmma` (its shared-memory reads go through the async
    /// proxy, so barriers that publish shared-memory writes also fence the proxies).
    uses_wgmma: bool,
    /// The entry block: it computes the thread-index values (`fold::hoisted`) and branches to
    /// the body.
    entry: inkwell::basic_block::BasicBlock<'c>,
    /// Integer instructions built by the `fold` helpers, by block, operation and operands.
    cse: RefCell<HashMap<fold::CseKey<'c>, IntValue<'c>>>,
    /// `v → (x, k)` for each `v = x + k` (constant `k`) built by `fold::add`.
    plus_const: RefCell<HashMap<usize, (IntValue<'c>, i64)>>,
    /// The values built once in the entry block (`fold::hoisted`).
    hoist: RefCell<HashMap<fold::HoistKey, IntValue<'c>>>,
    /// How many loops enclose the code being built.
    loop_depth: std::cell::Cell<u32>,
    /// The device functions of the element-by-element window copies, by dtype, shape and
    /// swizzle (`async_copy`'s slow path).
    slow_copies: HashMap<(DType, Vec<i64>, bool), FunctionValue<'c>>,
}

impl<'c, 'm> Gen<'c, 'm> {
    fn new(ctx: &'c Context, module: &'m Module<'c>, k: &'m lir::Kernel) -> Res<Gen<'c, 'm>> {
        let mut ptys: Vec<BasicMetadataTypeEnum> = vec![];
        for p in &k.params {
            match &p.kind {
                ParamKind::Tensor { dims, .. } => {
                    ptys.push(ctx.ptr_type(AddressSpace::from(1u16)).into());
                    ptys.extend(dims.iter().map(|_| BasicMetadataTypeEnum::from(ctx.i32_type())));
                    ptys.extend(dims.iter().map(|_| BasicMetadataTypeEnum::from(ctx.i64_type())));
                }
                ParamKind::Scalar { dtype } => ptys.push(mem_type(ctx, *dtype).into()),
            }
        }
        let fty = ctx.void_type().fn_type(&ptys, false);
        let func = module.add_function(&k.name, fty, None);
        // PTX_Kernel calling convention: an `.entry`, not a `.func`.
        func.set_call_conventions(71);
        let md = ctx.metadata_node(&[
            func.as_global_value().as_pointer_value().into(),
            ctx.metadata_string("maxntidx").into(),
            ctx.i32_type().const_int(k.threads as u64, false).into(),
        ]);
        module.add_global_metadata("nvvm.annotations", &md).ice()?;
        let smem_g = module.add_global(ctx.i8_type().array_type(0), Some(AddressSpace::from(3u16)), "tessera_smem");
        smem_g.set_linkage(Linkage::External);
        // wgmma's 128-byte swizzle atoms are 1024-byte aligned (relative offsets are planned so).
        smem_g.set_alignment(1024);
        let b = ctx.create_builder();
        let entry = ctx.append_basic_block(func, "entry");
        b.position_at_end(entry);
        let tid_f = declare(module, "llvm.nvvm.read.ptx.sreg.tid.x", ctx.i32_type().fn_type(&[], false));
        let tid = b.build_call(tid_f, &[], "tid").ice()?.try_as_basic_value().basic().ok_or("tid")?.into_int_value();
        let mut uses_wgmma = false;
        k.body.walk(k.body.entry, &mut |op| {
            uses_wgmma |= matches!(k.body.op(op).kind, OpKind::LocalMma { wgmma: true, .. } | OpKind::RegMma { wgmma: true, .. })
        });
        let body = ctx.append_basic_block(func, "body");
        b.build_unconditional_branch(body).ice()?;
        b.position_at_end(body);
        Ok(Gen {
            ctx,
            module,
            b,
            k,
            func,
            vals: HashMap::new(),
            tid,
            smem: smem_g.as_pointer_value(),
            uses_wgmma,
            entry,
            cse: RefCell::default(),
            plus_const: RefCell::default(),
            hoist: RefCell::default(),
            loop_depth: Default::default(),
            slow_copies: HashMap::new(),
        })
    }

    fn kernel(&mut self) -> Res<()> {
        let entry = self.k.body.entry;
        let mut pi = 0;
        for (i, p) in self.k.params.iter().enumerate() {
            let v = self.k.body.block(entry).args[i];
            let param = |j: u32| self.func.get_nth_param(j).ok_or_else(|| format!("missing parameter {j}"));
            match &p.kind {
                ParamKind::Tensor { dims, .. } => {
                    let ptr = param(pi)?.into_pointer_value();
                    let r = dims.len() as u32;
                    let sizes = (0..r).map(|j| param(pi + 1 + j).map(|x| x.into_int_value())).collect::<Res<Vec<_>>>()?;
                    let strides = (0..r).map(|j| param(pi + 1 + r + j).map(|x| x.into_int_value())).collect::<Res<Vec<_>>>()?;
                    pi += 1 + 2 * r;
                    self.vals.insert(v, Cv::Tensor { ptr, sizes, strides });
                }
                ParamKind::Scalar { dtype } => {
                    let x = param(pi)?;
                    pi += 1;
                    let x = if *dtype == DType::Bool {
                        self.b.build_int_compare(IntPredicate::NE, x.into_int_value(), self.ctx.i8_type().const_zero(), "b").ice()?.into()
                    } else {
                        x
                    };
                    self.vals.insert(v, Cv::Regs(vec![x]));
                }
            }
        }
        self.region(entry)?;
        self.b.build_return(None).ice()?;
        Ok(())
    }

    // ---- helpers -----------------------------------------------------------------------------

    pub(crate) fn i32c(&self, v: i64) -> IntValue<'c> {
        self.ctx.i32_type().const_int(v as u64, true)
    }

    fn i64c(&self, v: i64) -> IntValue<'c> {
        self.ctx.i64_type().const_int(v as u64, true)
    }

    pub(crate) fn call(&self, name: &str, args: &[BasicValueEnum<'c>], ret: BasicTypeEnum<'c>) -> Res<BasicValueEnum<'c>> {
        let tys: Vec<BasicMetadataTypeEnum> = args.iter().map(|a| a.get_type().into()).collect();
        let f = declare(self.module, name, ret.fn_type(&tys, false));
        let margs: Vec<BasicMetadataValueEnum> = args.iter().map(|&a| a.into()).collect();
        self.b.build_call(f, &margs, "").ice()?.try_as_basic_value().basic().ok_or_else(|| format!("{name} returned nothing"))
    }

    /// Inline PTX: `ret` (a struct for several results) or nothing, from `args` under
    /// `constraints`. Everything the codegen writes in PTX itself goes through here.
    pub(crate) fn inline_asm(
        &self,
        text: &str,
        constraints: &str,
        ret: Option<inkwell::types::BasicTypeEnum<'c>>,
        args: &[BasicValueEnum<'c>],
        side_effects: bool,
    ) -> Res<Option<BasicValueEnum<'c>>> {
        let tys: Vec<BasicMetadataTypeEnum> = args.iter().map(|a| a.get_type().into()).collect();
        let fty = match ret {
            Some(r) => r.fn_type(&tys, false),
            None => self.ctx.void_type().fn_type(&tys, false),
        };
        let f = self.ctx.create_inline_asm(fty, text.to_string(), constraints.to_string(), side_effects, false, None, false);
        let margs: Vec<BasicMetadataValueEnum> = args.iter().map(|&a| a.into()).collect();
        let call = self.b.build_indirect_call(fty, f, &margs, "").ice()?;
        match ret {
            Some(_) => Ok(Some(call.try_as_basic_value().basic().ok_or("inline asm returned nothing")?)),
            None => Ok(None),
        }
    }

    pub(crate) fn call_void(&self, name: &str) -> Res<()> {
        let f = declare(self.module, name, self.ctx.void_type().fn_type(&[], false));
        self.b.build_call(f, &[], "").ice()?;
        Ok(())
    }

    pub(crate) fn regs(&self, v: Value) -> Res<Vec<BasicValueEnum<'c>>> {
        match self.vals.get(&v) {
            Some(Cv::Regs(r)) => Ok(r.clone()),
            Some(Cv::Tensor { .. }) => Err(format!("{v} is a tensor, expected a tile")),
            None => Err(format!("{v} has no value")),
        }
    }

    fn ty(&self, v: Value) -> &lir::Type {
        self.k.body.ty(v)
    }

    fn nregs(&self, t: &lir::Type) -> usize {
        match t.layout() {
            Some(l) => l.regs(t.shape(), self.k.threads),
            None => 0,
        }
    }

    /// The row-major linear index of register `r` of this thread in a tile of type `t`.
    pub(crate) fn linear(&self, t: &lir::Type, r: usize) -> Res<IntValue<'c>> {
        let n = t.numel();
        match t.layout() {
            Some(layout @ Layout::Blocked { .. }) => {
                if n < self.k.threads as i64 {
                    return self.hoisted(("blocked.rep", vec![n]), |g| g.and(g.tid, g.i32c(n - 1)));
                }
                let (base, mul) = layout.linear(n, self.k.threads, r);
                let t0 = self.hoisted(("blocked.t", vec![mul]), |g| g.mulc(g.tid, mul))?;
                self.addc(t0, base)
            }
            Some(Layout::Mma { warps_m, warps_n }) => {
                let [row, col] = self.mma_row_col(t.shape(), warps_m, warps_n, r)?;
                self.add(self.mulc(row, t.shape().last().copied().unwrap_or(1))?, col)
            }
            // `[m]` or `[m, 1]`: the linear index is the row.
            Some(Layout::MmaRows { .. }) => Ok(self.coords(t, r)?[0]),
            // `[n]` or `[1, n]`: the linear index is the column.
            Some(Layout::MmaCols { .. }) => self.coords(t, r)?.last().copied().ok_or_else(|| "a scalar in #mma_cols".into()),
            None => Err("linear index of a tensor".into()),
        }
    }

    /// The coordinates of register `r` of this thread.
    pub(crate) fn coords(&self, t: &lir::Type, r: usize) -> Res<Vec<IntValue<'c>>> {
        match t.layout() {
            Some(Layout::Mma { warps_m, warps_n }) => return self.mma_coords(t.shape(), warps_m, warps_n, r),
            Some(Layout::MmaRows { warps_m }) => return self.mma_row_coords(t.shape(), warps_m, r),
            Some(Layout::MmaCols { warps_n, .. }) => return self.mma_col_coords(t.shape(), warps_n, r),
            _ => {}
        }
        let shape = t.shape();
        let strides = row_major(shape);
        if let Some(layout @ Layout::Blocked { .. }) = t.layout()
            && t.numel() >= self.k.threads as i64
        {
            // Register `r` is at `tid · vec + k + e` (`k` a multiple of `threads · vec`, `e <
            // vec`): where no carry crosses a coordinate, each coordinate is the thread's own
            // (built once) plus a constant.
            let (base, vec) = layout.linear(t.numel(), self.k.threads, r);
            let (k, e) = (base - base % vec, base % vec);
            let mut out = vec![];
            for (i, (&d, &s)) in shape.iter().zip(&strides).enumerate() {
                match self.blocked_coord(vec, k, e, s, if i == 0 { None } else { Some(d) })? {
                    Some(c) => out.push(c),
                    None => break,
                }
            }
            if out.len() == shape.len() {
                return Ok(out);
            }
        }
        let l = self.linear(t, r)?;
        let mut out = vec![];
        for (i, &d) in shape.iter().enumerate() {
            let q = self.udivc(l, strides[i])?;
            out.push(if i == 0 { q } else { self.uremc(q, d)? });
        }
        Ok(out)
    }

    /// `((tid · vec + k + e) / s) % d` (no `% d` for `None`) when it is a thread value plus a
    /// constant (see `coords`), else `None`.
    fn blocked_coord(&self, vec: i64, k: i64, e: i64, s: i64, d: Option<i64>) -> Res<Option<IntValue<'c>>> {
        let t0 = self.hoisted(("blocked.t", vec![vec]), |g| g.mulc(g.tid, vec))?;
        if s == 1 {
            return match d {
                None => Ok(Some(self.addc(t0, k + e)?)),
                // `tid · vec % d` is a multiple of `vec` below `d`: adding `e` does not wrap.
                Some(d) if k % d == 0 && d % vec == 0 => {
                    let m = self.hoisted(("blocked.mod", vec![vec, 1, d]), |g| g.uremc(t0, d))?;
                    Ok(Some(self.addc(m, e)?))
                }
                Some(_) => Ok(None),
            };
        }
        if s % vec != 0 || k % s != 0 {
            return Ok(None);
        }
        // `(tid · vec) % s` is a multiple of `vec` below `s`: adding `e` does not carry.
        let q = self.hoisted(("blocked.div", vec![vec, s]), |g| g.udivc(t0, s))?;
        match d {
            None => Ok(Some(self.addc(q, k / s)?)),
            Some(d) if (k / s) % d == 0 => Ok(Some(self.hoisted(("blocked.mod", vec![vec, s, d]), |g| g.uremc(q, d))?)),
            Some(_) => Ok(None),
        }
    }

    /// The 32-bit shared-memory address of a byte offset, for inline asm (`ldmatrix`,
    /// `cp.async`): shared addresses fit in 32 bits, and one add is all it takes.
    pub(crate) fn smem_addr32(&self, byte_offset: IntValue<'c>) -> Res<IntValue<'c>> {
        self.add(self.smem.const_to_int(self.ctx.i32_type()), byte_offset)
    }

    pub(crate) fn smem_ptr(&self, byte_offset: IntValue<'c>) -> Res<PointerValue<'c>> {
        // SAFETY (of the LLVM IR, not Rust): offsets stay inside the planned shared memory.
        unsafe { self.b.build_gep(self.ctx.i8_type(), self.smem, &[byte_offset], "sp").ice() }
    }

    pub(crate) fn load_mem(&self, ptr: PointerValue<'c>, d: DType) -> Res<BasicValueEnum<'c>> {
        let v = self.b.build_load(mem_type(self.ctx, d), ptr, "ld").ice()?;
        if d == DType::Bool {
            return Ok(self.b.build_int_compare(IntPredicate::NE, v.into_int_value(), self.ctx.i8_type().const_zero(), "b").ice()?.into());
        }
        Ok(v)
    }

    pub(crate) fn store_mem(&self, ptr: PointerValue<'c>, v: BasicValueEnum<'c>, d: DType) -> Res<()> {
        let v: BasicValueEnum =
            if d == DType::Bool { self.b.build_int_z_extend(v.into_int_value(), self.ctx.i8_type(), "b").ice()?.into() } else { v };
        self.b.build_store(ptr, v).ice()?;
        Ok(())
    }

    pub(crate) fn block(&self, name: &str) -> inkwell::basic_block::BasicBlock<'c> {
        self.ctx.append_basic_block(self.func, name)
    }

    /// A do-while loop `for j in 0..n` (n ≥ 1) carrying `inits`; `body` gives the next values.
    pub(crate) fn counted_loop(
        &mut self,
        n: i64,
        inits: Vec<BasicValueEnum<'c>>,
        body: LoopBody<'_, 'c, 'm>,
    ) -> Res<Vec<BasicValueEnum<'c>>> {
        let pre = self.b.get_insert_block().ok_or("no block")?;
        let lp = self.block("loop");
        let exit = self.block("loop.end");
        self.b.build_unconditional_branch(lp).ice()?;
        self.b.position_at_end(lp);
        let j = self.b.build_phi(self.ctx.i32_type(), "j").ice()?;
        let phis = inits.iter().map(|v| self.b.build_phi(v.get_type(), "acc")).collect::<Result<Vec<_>, _>>().ice()?;
        let accs: Vec<BasicValueEnum> = phis.iter().map(|p| p.as_basic_value()).collect();
        let jv = j.as_basic_value().into_int_value();
        self.loop_depth.set(self.loop_depth.get() + 1);
        let next = body(self, jv, &accs);
        self.loop_depth.set(self.loop_depth.get() - 1);
        let next = next?;
        let j1 = self.b.build_int_add(jv, self.i32c(1), "j1").ice()?;
        let cont = self.b.build_int_compare(IntPredicate::SLT, j1, self.i32c(n), "cont").ice()?;
        let end = self.b.get_insert_block().ok_or("no block")?;
        self.b.build_conditional_branch(cont, lp, exit).ice()?;
        j.add_incoming(&[(&self.i32c(0), pre), (&j1, end)]);
        for ((p, init), nx) in phis.iter().zip(&inits).zip(&next) {
            p.add_incoming(&[(init as &dyn BasicValue, pre), (nx as &dyn BasicValue, end)]);
        }
        self.b.position_at_end(exit);
        Ok(next)
    }

    // ---- ops ---------------------------------------------------------------------------------

    /// Lowers a block's ops; returns the operands of its `yield`, if any.
    fn region(&mut self, blk: Block) -> Res<Vec<Cv<'c>>> {
        let body = &self.k.body;
        for &op in &body.block(blk).ops {
            let d = body.op(op);
            if let OpKind::Tir(tir::OpKind::Yield) = d.kind {
                return d.operands.iter().map(|o| self.vals.get(o).cloned().ok_or_else(|| format!("{o} has no value"))).collect();
            }
            let results = self.op(op)?;
            for (&r, v) in d.results.iter().zip(results) {
                self.vals.insert(r, v);
            }
        }
        Ok(vec![])
    }

    fn op(&mut self, op: crate::ir::Op) -> Res<Vec<Cv<'c>>> {
        let body = &self.k.body;
        let d = body.op(op);
        let rt = d.results.first().map(|&r| body.ty(r).clone());
        let one = |regs: Vec<BasicValueEnum<'c>>| Ok(vec![Cv::Regs(regs)]);
        match &d.kind {
            OpKind::WgmmaWait => {
                let accs = self.regs(d.operands[0])?;
                Ok(vec![Cv::Regs(self.wgmma_wait(&accs)?)])
            }
            OpKind::Barrier => {
                if self.uses_wgmma {
                    self.proxy_fence()?;
                }
                self.call_void("llvm.nvvm.barrier0")?;
                Ok(vec![])
            }
            OpKind::Reshape => {
                let v = self.vals.get(&d.operands[0]).cloned().ok_or("reshape of an undefined value")?;
                Ok(vec![v])
            }
            OpKind::LocalStore { offset, swizzled } => {
                let x = d.operands[0];
                let t = self.ty(x).clone();
                let regs = self.regs(x)?;
                let size = t.dtype().size() as i64;
                for (r, v) in regs.into_iter().enumerate() {
                    let off = if *swizzled && t.shape().len() == 2 {
                        let c = self.coords(&t, r)?;
                        self.smem_offset_2d(c[0], c[1], t.shape()[1], size, true)?
                    } else {
                        self.mulc(self.linear(&t, r)?, size)?
                    };
                    let off = self.addc(off, *offset as i64)?;
                    let p = self.smem_ptr(off)?;
                    self.store_mem(p, v, t.dtype())?;
                }
                Ok(vec![])
            }
            OpKind::LocalLoad { offset, strides } => {
                let t = rt.ok_or("local_load without result")?;
                let size = t.dtype().size() as i64;
                let mut out = vec![];
                for r in 0..self.nregs(&t) {
                    let c = self.coords(&t, r)?;
                    let mut idx = self.i32c(0);
                    for (ci, &s) in c.iter().zip(strides) {
                        idx = self.add(idx, self.mulc(*ci, s)?)?;
                    }
                    let off = self.addc(self.mulc(idx, size)?, *offset as i64)?;
                    let p = self.smem_ptr(off)?;
                    out.push(self.load_mem(p, t.dtype())?);
                }
                one(out)
            }
            OpKind::LocalReduce { offset, op: rop, axis, src_shape, dtype } => {
                self.local_reduce(rt.ok_or("reduce without result")?, *offset, *rop, *axis as usize, src_shape, *dtype)
            }
            OpKind::LocalDot { a_offset, b_offset, k, dtype } => {
                let acc = d.operands[0];
                self.local_dot(rt.ok_or("dot without result")?, acc, *a_offset, *b_offset, *k, *dtype)
            }
            OpKind::LocalMma { a_offset, b_offset, k, dtype, b_trans, wgmma: true } => {
                let (acc, a_base, b_base) = (d.operands[0], d.operands.get(1).copied(), d.operands.get(2).copied());
                self.local_wgmma(&rt.ok_or("mma without result")?, acc, [a_base, b_base], (*a_offset, *b_offset, *b_trans), *k, *dtype)
            }
            OpKind::LocalMma { a_offset, b_offset, k, dtype, b_trans, wgmma: false } => {
                let (acc, a_base, b_base) = (d.operands[0], d.operands.get(1).copied(), d.operands.get(2).copied());
                self.local_mma(&rt.ok_or("mma without result")?, acc, [a_base, b_base], (*a_offset, *b_offset, *b_trans), *k, *dtype)
            }
            OpKind::AsyncCopy { offset, swizzled, shape } => {
                self.async_copy(op, *offset, *swizzled, shape)?;
                Ok(vec![])
            }
            OpKind::RowReduce { op: rop } => {
                let x = d.operands[0];
                self.row_reduce(x, *rop).map(|r| vec![Cv::Regs(r)])
            }
            OpKind::ShuffleReduce { op: rop, offset } => {
                let t = rt.ok_or("shuffle_reduce without result")?;
                self.shuffle_reduce(d.operands[0], &t, *rop, *offset).map(|r| vec![Cv::Regs(r)])
            }
            OpKind::ShuffleConvert { plan, .. } => self.shuffle_convert(d.operands[0], plan).map(|r| vec![Cv::Regs(r)]),
            OpKind::RowBroadcast => {
                let t = rt.ok_or("row_broadcast without result")?;
                let src = self.regs(d.operands[0])?;
                let n = self.nregs(&t);
                // Register (mi, ni, c) of the accumulator is row value (mi, c / 2).
                let nt = n / 4 / src.len().div_ceil(2).max(1);
                let regs = (0..n).map(|r| src[(r / 4 / nt) * 2 + (r % 4) / 2]).collect();
                Ok(vec![Cv::Regs(regs)])
            }
            OpKind::Coord { axis } => {
                let t = rt.ok_or("coord without result")?;
                let regs = (0..self.nregs(&t)).map(|r| self.coords(&t, r).map(|c| c[*axis as usize].into())).collect::<Res<Vec<_>>>()?;
                Ok(vec![Cv::Regs(regs)])
            }
            OpKind::RegMma { b_offset, k, dtype, b_trans, wgmma: true } => {
                let t = rt.ok_or("reg_mma without result")?;
                self.reg_wgmma(&t, d.operands[0], d.operands[1], d.operands[2], (*b_offset, *b_trans), *k, *dtype)
            }
            OpKind::RegMma { b_offset, k, dtype, b_trans, wgmma: false } => {
                let t = rt.ok_or("reg_mma without result")?;
                self.reg_mma(&t, d.operands[0], d.operands[1], d.operands[2], (*b_offset, *b_trans), *k, *dtype)
            }
            OpKind::AsyncCommit => {
                self.async_commit()?;
                Ok(vec![])
            }
            OpKind::AsyncWait { pending } => {
                self.async_wait(*pending)?;
                Ok(vec![])
            }
            OpKind::LocalScan { offset, op: sop, axis, src_shape, dtype } => {
                self.local_scan(rt.ok_or("scan without result")?, *offset, *sop, *axis as usize, src_shape, *dtype)
            }
            OpKind::LocalArgReduce { offset, op: aop, axis, src_shape, dtype } => {
                self.local_arg_reduce(rt.ok_or("argmax without result")?, *offset, *aop, *axis as usize, src_shape, *dtype)
            }
            OpKind::Tir(kind) => self.tir_op(op, kind, rt),
        }
    }

    fn local_reduce(&mut self, t: lir::Type, offset: u32, rop: ReduceOp, axis: usize, src_shape: &[i64], dtype: DType) -> Res<Vec<Cv<'c>>> {
        let src_strides = row_major(src_shape);
        let size = dtype.size() as i64;
        let n = src_shape[axis];
        let acc_d = if matches!(dtype, DType::F16 | DType::BF16) { DType::F32 } else { dtype };
        let mut bases = vec![];
        for r in 0..self.nregs(&t) {
            let c = if t.shape().is_empty() { vec![] } else { self.coords(&t, r)? };
            let mut base = self.i32c(0);
            let mut ci = 0;
            for (i, &s) in src_strides.iter().enumerate() {
                if i == axis {
                    continue;
                }
                base = self.add(base, self.mulc(c[ci], s)?)?;
                ci += 1;
            }
            bases.push(base);
        }
        let ident = math::reduce_identity(self, rop, acc_d)?;
        let inits = vec![ident; bases.len()];
        let stride = src_strides[axis];
        let res = self.counted_loop(n, inits, &mut |g, j, accs| {
            let mut next = vec![];
            for (bi, base) in bases.iter().enumerate() {
                let idx = g.add(*base, g.mulc(j, stride)?)?;
                let off = g.addc(g.mulc(idx, size)?, offset as i64)?;
                let p = g.smem_ptr(off)?;
                let v = g.load_mem(p, dtype)?;
                let v = math::convert(g, v, dtype, acc_d)?;
                let op = match rop {
                    ReduceOp::Sum => BinaryOp::Add,
                    ReduceOp::Max => BinaryOp::Max,
                    ReduceOp::Min => BinaryOp::Min,
                };
                next.push(math::binary(g, op, accs[bi], v, acc_d)?);
            }
            Ok(next)
        })?;
        let out = res.into_iter().map(|v| math::convert(self, v, acc_d, dtype)).collect::<Res<Vec<_>>>()?;
        Ok(vec![Cv::Regs(out)])
    }

    fn local_dot(&mut self, t: lir::Type, acc: Value, a_off: u32, b_off: u32, k: i64, dtype: DType) -> Res<Vec<Cv<'c>>> {
        let n = t.shape()[1];
        let acc_d = t.dtype();
        let size = dtype.size() as i64;
        let mut rows = vec![];
        let mut cols = vec![];
        for r in 0..self.nregs(&t) {
            let c = self.coords(&t, r)?;
            // Byte offsets of a[i, 0] and b[0, j].
            rows.push(self.addc(self.mulc(c[0], k * size)?, a_off as i64)?);
            cols.push(self.addc(self.mulc(c[1], size)?, b_off as i64)?);
        }
        let inits = self.regs(acc)?;
        let res = self.counted_loop(k, inits, &mut |g, kk, accs| {
            let a_step = g.mulc(kk, size)?;
            let b_step = g.mulc(kk, n * size)?;
            let mut next = vec![];
            for (ri, acc) in accs.iter().enumerate() {
                let pa = g.smem_ptr(g.add(rows[ri], a_step)?)?;
                let pb = g.smem_ptr(g.add(cols[ri], b_step)?)?;
                let a = g.load_mem(pa, dtype)?;
                let b = g.load_mem(pb, dtype)?;
                let a = math::convert(g, a, dtype, acc_d)?;
                let b = math::convert(g, b, dtype, acc_d)?;
                next.push(math::fma(g, a, b, *acc, acc_d)?);
            }
            Ok(next)
        })?;
        Ok(vec![Cv::Regs(res)])
    }

    /// `if cond { then() }` returning the value of `then` or `otherwise`.
    pub(crate) fn guarded(
        &mut self,
        cond: IntValue<'c>,
        then: &mut dyn FnMut(&mut Self) -> Res<Option<BasicValueEnum<'c>>>,
        otherwise: Option<BasicValueEnum<'c>>,
    ) -> Res<Option<BasicValueEnum<'c>>> {
        let pre = self.b.get_insert_block().ok_or("no block")?;
        let tb = self.block("in");
        let mb = self.block("join");
        self.b.build_conditional_branch(cond, tb, mb).ice()?;
        self.b.position_at_end(tb);
        let v = then(self)?;
        let tend = self.b.get_insert_block().ok_or("no block")?;
        self.b.build_unconditional_branch(mb).ice()?;
        self.b.position_at_end(mb);
        match (v, otherwise) {
            (Some(v), Some(o)) => {
                let phi = self.b.build_phi(v.get_type(), "v").ice()?;
                phi.add_incoming(&[(&v as &dyn BasicValue, tend), (&o as &dyn BasicValue, pre)]);
                Ok(Some(phi.as_basic_value()))
            }
            _ => Ok(None),
        }
    }

    fn tir_op(&mut self, op: crate::ir::Op, kind: &tir::OpKind, rt: Option<lir::Type>) -> Res<Vec<Cv<'c>>> {
        let d = self.k.body.op(op);
        let operands = d.operands.clone();
        let rt_ok = || rt.clone().ok_or_else(|| format!("{} without a result", kind.mnemonic()));
        let one = |regs: Vec<BasicValueEnum<'c>>| Ok(vec![Cv::Regs(regs)]);
        match kind {
            tir::OpKind::Const(l) => {
                let t = rt_ok()?;
                let c = math::constant(self, *l, t.dtype())?;
                one(vec![c; self.nregs(&t)])
            }
            tir::OpKind::ProgramId(a) | tir::OpKind::NumPrograms(a) => {
                let axis = ["x", "y", "z"].get(*a as usize).ok_or("axis > 2")?;
                let reg = if matches!(kind, tir::OpKind::ProgramId(_)) { "ctaid" } else { "nctaid" };
                let v = self.call(&format!("llvm.nvvm.read.ptx.sreg.{reg}.{axis}"), &[], self.ctx.i32_type().into())?;
                one(vec![v])
            }
            tir::OpKind::Arange(_) => {
                let t = rt_ok()?;
                let regs = (0..self.nregs(&t)).map(|r| self.linear(&t, r).map(|v| v.into())).collect::<Res<Vec<_>>>()?;
                one(regs)
            }
            tir::OpKind::Splat => {
                let t = rt_ok()?;
                let x = self.regs(operands[0])?[0];
                one(vec![x; self.nregs(&t)])
            }
            tir::OpKind::Binary(b) => {
                let (x, y) = (self.regs(operands[0])?, self.regs(operands[1])?);
                let dt = self.ty(operands[0]).dtype();
                let regs = x.iter().zip(&y).map(|(a, c)| math::binary(self, *b, *a, *c, dt)).collect::<Res<Vec<_>>>()?;
                one(regs)
            }
            tir::OpKind::Cmp(c) => {
                let (x, y) = (self.regs(operands[0])?, self.regs(operands[1])?);
                let dt = self.ty(operands[0]).dtype();
                let regs = x.iter().zip(&y).map(|(a, b)| self.compare(*c, *a, *b, dt)).collect::<Res<Vec<_>>>()?;
                one(regs)
            }
            tir::OpKind::Unary(u) => {
                let x = self.regs(operands[0])?;
                let dt = self.ty(operands[0]).dtype();
                let regs = x.iter().map(|a| math::unary(self, *u, *a, dt)).collect::<Res<Vec<_>>>()?;
                one(regs)
            }
            tir::OpKind::Select => {
                let (c, x, y) = (self.regs(operands[0])?, self.regs(operands[1])?, self.regs(operands[2])?);
                let mut regs = vec![];
                for i in 0..x.len() {
                    let c = c[i].into_int_value();
                    regs.push(match (x[i], y[i]) {
                        (BasicValueEnum::IntValue(a), BasicValueEnum::IntValue(b)) => self.select(c, a, b)?.into(),
                        (a, b) => self.b.build_select(c, a, b, "sel").ice()?,
                    });
                }
                one(regs)
            }
            tir::OpKind::Cast => {
                let x = self.regs(operands[0])?;
                let (from, to) = (self.ty(operands[0]).dtype(), rt_ok()?.dtype());
                let regs = x.iter().map(|a| math::convert(self, *a, from, to)).collect::<Res<Vec<_>>>()?;
                one(regs)
            }
            tir::OpKind::Dim(axis) => match self.vals.get(&operands[0]) {
                Some(Cv::Tensor { sizes, .. }) => {
                    one(vec![sizes.get(*axis as usize).ok_or("dim axis out of range")?.as_basic_value_enum()])
                }
                _ => Err("dim of a non-tensor".into()),
            },
            tir::OpKind::View => {
                let Some(Cv::Tensor { ptr, sizes, strides }) = self.vals.get(&operands[0]).cloned() else {
                    return Err("view of a non-tensor".into());
                };
                let k = operands.len() - 1;
                let mut valid = self.ctx.bool_type().const_int(1, false);
                let mut lin = self.i64c(0);
                for i in 0..k {
                    let idx = self.regs(operands[i + 1])?[0].into_int_value();
                    valid = self.and(valid, self.icmp(IntPredicate::ULT, idx, sizes[i])?)?;
                    lin = self.add(lin, self.mul(self.sext(idx, self.ctx.i64_type())?, strides[i])?)?;
                }
                let dt = self.ty(operands[0]).dtype();
                // SAFETY (of the LLVM IR): an out-of-range view gets sizes 0, so it is never read.
                let p = unsafe { self.b.build_gep(mem_type(self.ctx, dt), ptr, &[lin], "view").ice()? };
                let mut nsizes = vec![];
                for s in &sizes[k..] {
                    nsizes.push(self.select(valid, *s, self.i32c(0))?);
                }
                Ok(vec![Cv::Tensor { ptr: p, sizes: nsizes, strides: strides[k..].to_vec() }])
            }
            tir::OpKind::Load => {
                let t = rt_ok()?;
                let tensor = self.vals.get(&operands[0]).cloned().ok_or("load from undefined tensor")?;
                let n = operands.len();
                let pad = self.regs(operands[n - 1])?[0];
                let regs = self.load_window(&tensor, &operands[1..n - 1], &t, pad)?;
                one(regs)
            }
            tir::OpKind::Store => {
                let tensor = self.vals.get(&operands[0]).cloned().ok_or("store to undefined tensor")?;
                let n = operands.len();
                let x = operands[n - 1];
                let t = self.ty(x).clone();
                let vals = self.regs(x)?;
                // A replicated tile is stored by one thread per element.
                let owner = self.owner(&t)?;
                self.store_window(&tensor, &operands[1..n - 1], &t, &vals, owner)?;
                Ok(vec![])
            }
            tir::OpKind::Gather => self.gather(op),
            tir::OpKind::Scatter => self.indexed_write(op, None),
            tir::OpKind::Atomic(a) => self.indexed_write(op, Some(*a)),
            tir::OpKind::Print(f) => self.print(op, f),
            tir::OpKind::Assert(m) => self.assert(op, m),
            tir::OpKind::Return => self.return_op(),
            tir::OpKind::While => self.while_loop(op),
            tir::OpKind::For => self.for_loop(op),
            tir::OpKind::If => self.if_op(op),
            other => Err(format!("`{}` reached code generation; the lowering should have replaced it", other.mnemonic())),
        }
    }

    fn compare(&self, c: CmpOp, a: BasicValueEnum<'c>, b: BasicValueEnum<'c>, d: DType) -> Res<BasicValueEnum<'c>> {
        if d.is_float() {
            let p = match c {
                CmpOp::Eq => FloatPredicate::OEQ,
                CmpOp::Ne => FloatPredicate::UNE,
                CmpOp::Lt => FloatPredicate::OLT,
                CmpOp::Le => FloatPredicate::OLE,
                CmpOp::Gt => FloatPredicate::OGT,
                CmpOp::Ge => FloatPredicate::OGE,
            };
            return Ok(self.b.build_float_compare(p, a.into_float_value(), b.into_float_value(), "cmp").ice()?.into());
        }
        let s = d.is_signed();
        let p = match c {
            CmpOp::Eq => IntPredicate::EQ,
            CmpOp::Ne => IntPredicate::NE,
            CmpOp::Lt if s => IntPredicate::SLT,
            CmpOp::Le if s => IntPredicate::SLE,
            CmpOp::Gt if s => IntPredicate::SGT,
            CmpOp::Ge if s => IntPredicate::SGE,
            CmpOp::Lt => IntPredicate::ULT,
            CmpOp::Le => IntPredicate::ULE,
            CmpOp::Gt => IntPredicate::UGT,
            CmpOp::Ge => IntPredicate::UGE,
        };
        Ok(self.icmp(p, a.into_int_value(), b.into_int_value())?.into())
    }

    fn flatten(vals: &[Cv<'c>]) -> Res<Vec<BasicValueEnum<'c>>> {
        let mut out = vec![];
        for v in vals {
            match v {
                Cv::Regs(r) => out.extend(r),
                Cv::Tensor { .. } => return Err("a tensor cannot be carried through control flow".into()),
            }
        }
        Ok(out)
    }

    /// Splits flat registers back into per-value groups following `types`.
    fn unflatten(&self, flat: &[BasicValueEnum<'c>], types: &[lir::Type]) -> Vec<Cv<'c>> {
        let mut out = vec![];
        let mut i = 0;
        for t in types {
            let n = self.nregs(t);
            out.push(Cv::Regs(flat[i..i + n].to_vec()));
            i += n;
        }
        out
    }

    fn for_loop(&mut self, op: crate::ir::Op) -> Res<Vec<Cv<'c>>> {
        let d = self.k.body.op(op).clone();
        let lo = self.regs(d.operands[0])?[0].into_int_value();
        let hi = self.regs(d.operands[1])?[0].into_int_value();
        let step = self.regs(d.operands[2])?[0].into_int_value();
        let inits: Vec<Cv> =
            d.operands[3..].iter().map(|o| self.vals.get(o).cloned().ok_or("undefined loop init")).collect::<Result<_, _>>()?;
        let flat_init = Self::flatten(&inits)?;
        let types: Vec<lir::Type> = d.results.iter().map(|&r| self.ty(r).clone()).collect();
        let pre = self.b.get_insert_block().ok_or("no block")?;
        let header = self.block("for.head");
        let body_bb = self.block("for.body");
        let exit = self.block("for.end");
        self.b.build_unconditional_branch(header).ice()?;
        self.b.position_at_end(header);
        let iv = self.b.build_phi(self.ctx.i32_type(), "iv").ice()?;
        let phis = flat_init.iter().map(|v| self.b.build_phi(v.get_type(), "it")).collect::<Result<Vec<_>, _>>().ice()?;
        let ivv = iv.as_basic_value().into_int_value();
        let cond = self.b.build_int_compare(IntPredicate::SLT, ivv, hi, "cond").ice()?;
        self.b.build_conditional_branch(cond, body_bb, exit).ice()?;
        self.b.position_at_end(body_bb);
        let region = d.regions[0];
        let args = self.k.body.block(region).args.clone();
        self.vals.insert(args[0], Cv::Regs(vec![ivv.into()]));
        let cur: Vec<BasicValueEnum> = phis.iter().map(|p| p.as_basic_value()).collect();
        for (a, v) in args[1..].iter().zip(self.unflatten(&cur, &types)) {
            self.vals.insert(*a, v);
        }
        self.loop_depth.set(self.loop_depth.get() + 1);
        let yields = self.region(region);
        self.loop_depth.set(self.loop_depth.get() - 1);
        let flat_next = Self::flatten(&yields?)?;
        let next_iv = self.b.build_int_add(ivv, step, "iv.next").ice()?;
        let latch = self.b.get_insert_block().ok_or("no block")?;
        self.b.build_unconditional_branch(header).ice()?;
        iv.add_incoming(&[(&lo, pre), (&next_iv, latch)]);
        for ((p, init), nx) in phis.iter().zip(&flat_init).zip(&flat_next) {
            p.add_incoming(&[(init as &dyn BasicValue, pre), (nx as &dyn BasicValue, latch)]);
        }
        self.b.position_at_end(exit);
        Ok(self.unflatten(&cur, &types))
    }

    fn if_op(&mut self, op: crate::ir::Op) -> Res<Vec<Cv<'c>>> {
        let d = self.k.body.op(op).clone();
        let cond = self.regs(d.operands[0])?[0].into_int_value();
        let types: Vec<lir::Type> = d.results.iter().map(|&r| self.ty(r).clone()).collect();
        let tb = self.block("if.then");
        let eb = self.block("if.else");
        let mb = self.block("if.end");
        self.b.build_conditional_branch(cond, tb, eb).ice()?;
        let mut incoming = vec![];
        for (bb, region) in [(tb, d.regions[0]), (eb, d.regions[1])] {
            self.b.position_at_end(bb);
            let ys = self.region(region)?;
            let flat = Self::flatten(&ys)?;
            let end = self.b.get_insert_block().ok_or("no block")?;
            self.b.build_unconditional_branch(mb).ice()?;
            incoming.push((flat, end));
        }
        self.b.position_at_end(mb);
        let mut flat = vec![];
        for i in 0..incoming[0].0.len() {
            let phi = self.b.build_phi(incoming[0].0[i].get_type(), "ifv").ice()?;
            phi.add_incoming(&[
                (&incoming[0].0[i] as &dyn BasicValue, incoming[0].1),
                (&incoming[1].0[i] as &dyn BasicValue, incoming[1].1),
            ]);
            flat.push(phi.as_basic_value());
        }
        Ok(self.unflatten(&flat, &types))
    }
}

fn declare<'c>(module: &Module<'c>, name: &str, ty: inkwell::types::FunctionType<'c>) -> FunctionValue<'c> {
    module.get_function(name).unwrap_or_else(|| module.add_function(name, ty, None))
}

/// The LLVM type of a register holding `d`.
pub(crate) fn reg_type(ctx: &Context, d: DType) -> BasicTypeEnum<'_> {
    match d {
        DType::Bool => ctx.bool_type().into(),
        DType::I8 | DType::U8 => ctx.i8_type().into(),
        DType::I16 => ctx.i16_type().into(),
        DType::I32 | DType::U32 => ctx.i32_type().into(),
        DType::I64 | DType::U64 => ctx.i64_type().into(),
        DType::F16 => ctx.f16_type().into(),
        DType::BF16 => ctx.bf16_type().into(),
        DType::F32 => ctx.f32_type().into(),
        DType::F64 => ctx.f64_type().into(),
    }
}

/// The LLVM type of `d` in memory (bool is a byte).
pub(crate) fn mem_type(ctx: &Context, d: DType) -> BasicTypeEnum<'_> {
    if d == DType::Bool { ctx.i8_type().into() } else { reg_type(ctx, d) }
}
