//! The `llvm` emitter: machine IR → LLVM IR (inkwell, LLVM 19) → LLVM's optimisation pipeline →
//! the NVPTX back end → PTX.
//!
//! Ordinary instructions become LLVM instructions; addresses become pointers in their address
//! spaces (global 1, shared 3, whose pointers are 32-bit as the machine IR's shared addresses
//! are); special registers, the barrier, shuffles, `ldmatrix`, `mma.sync`, the `cp.async` groups
//! and the approximate math become NVVM intrinsics; `wgmma`, fences, `cp.async` itself (whose
//! intrinsics LLVM 19 cannot select with 32-bit shared pointers) and the few conversions LLVM 19
//! would not round as PTX does stay inline PTX (`asm sideeffect`), which passes through
//! unchanged.
//!
//! Registers: one written once (its definition dominates its uses, which the machine IR's
//! definite-assignment rule guarantees) is an SSA value; one written more than once (a phi,
//! a predicated load, an accumulator updated in place) is an `alloca` that the pipeline's
//! `mem2reg` turns back into SSA. Blocks are translated in reverse post-order, so definitions
//! come before their uses. An operand reading a register as another type of the same width is a
//! `bitcast`. Operations whose LLVM form is undefined where PTX's is not (shifts by the width or
//! more, division by zero, `MIN / -1`) are guarded so that LLVM can assume nothing false.

use crate::Target;
use crate::mir::{
    Addr, AtomTy, Blk, Callee, Cmp, FCmp, FOp, FUn, Function, Inst, IntOp, K, MemTy, MmaKind, Module, NumTy, RedOp, Rnd, SReg, Sem,
    ShflMode, Space, Sym, Term, Ty, V,
};
use inkwell::basic_block::BasicBlock;
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::module::{Linkage, Module as LlvmModule};
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target as LlvmTarget, TargetMachine, TargetTriple};
use inkwell::types::{BasicMetadataTypeEnum, BasicType, BasicTypeEnum, FunctionType};
use inkwell::values::{BasicMetadataValueEnum, BasicValue, BasicValueEnum, FunctionValue, IntValue, PointerValue};
use inkwell::{AddressSpace, AtomicOrdering, AtomicRMWBinOp, FloatPredicate, IntPredicate, OptimizationLevel};
use std::collections::HashMap;
use std::sync::Once;

type Res<T> = Result<T, String>;

trait Ice<T> {
    fn ice(self) -> Res<T>;
}

impl<T, E: std::fmt::Display> Ice<T> for Result<T, E> {
    fn ice(self) -> Res<T> {
        self.map_err(|e| format!("LLVM: {e}"))
    }
}

/// The optimisation pipeline (see [`super::pipeline::DEFAULT`]).
pub const PIPELINE: &str = super::pipeline::DEFAULT;

/// What the emitter made: the PTX, and the LLVM IR after optimisation when asked for.
pub struct Output {
    pub ptx: String,
    pub llvm_ir: Option<String>,
}

static INIT: Once = Once::new();

fn target_machine(target: Target) -> Res<TargetMachine> {
    INIT.call_once(|| {
        LlvmTarget::initialize_nvptx(&InitializationConfig::default());
        // 32-bit shared-memory pointers, as the machine IR's shared addresses are: without this
        // every shared access converts its address to 64 bits and cannot fold an offset.
        // No CodeGenPrepare: the machine IR's addresses are already shaped (the builder folds and
        // hoists them), and on attention it took 47 of 90 ms (superlinear in the blocks of the
        // copy paths) for the same registers.
        // No early tail duplication: copying small blocks into their predecessors before
        // register allocation lengthened live ranges: the fused attention backward, bounded to
        // 168 registers by `#[blocks_per_sm(3)]`, spilled 36 bytes with it and none without
        // (every other example's PTX is the same but na3d's kernels, up to 2 registers fewer).
        let args: Vec<std::ffi::CString> = ["tessera", "-nvptx-short-ptr", "-disable-cgp", "-disable-early-taildup"]
            .iter()
            .filter_map(|a| std::ffi::CString::new(*a).ok())
            .collect();
        let ptrs: Vec<*const std::ffi::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        // SAFETY: the arguments are NUL-terminated strings that outlive the call, and the call
        // happens once, before any target machine is made.
        unsafe { inkwell::llvm_sys::support::LLVMParseCommandLineOptions(ptrs.len() as i32, ptrs.as_ptr(), std::ptr::null()) };
    });
    let triple = TargetTriple::create("nvptx64-nvidia-cuda");
    let t = LlvmTarget::from_triple(&triple).ice()?;
    let (cpu, features) = match target {
        Target::Sm80 => ("sm_80", "+ptx70"),
        Target::Sm90a => ("sm_90a", "+ptx80"),
    };
    // Code generation at -O2 (-O1 and -O3 gave the same PTX). -O0 compiles 25% faster but its
    // PTX made the 4096³ GEMM 1.36× slower on an H100 (docs/benchmarks.md, 2026-12-06).
    t.create_target_machine(&triple, cpu, features, OptimizationLevel::Default, RelocMode::Default, CodeModel::Default)
        .ok_or_else(|| format!("LLVM has no NVPTX target machine for {cpu}"))
}

/// Why the emitter failed.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// LLVM refused the pass pipeline it was given (a user's `--llvm-passes`).
    #[error("LLVM cannot run the pass pipeline `{pipeline}`: {message}")]
    Pipeline { pipeline: String, message: String },
    /// A bug: the machine IR translated to something LLVM rejects.
    #[error("{0}")]
    Internal(String),
}

/// Emits the PTX of `m` through LLVM (`pipeline`: the passes to run; `keep_ir`: also return the
/// optimised LLVM IR).
pub fn emit(m: &Module, pipeline: &str, keep_ir: bool) -> Result<Output, EmitError> {
    let checked = super::pipeline::check(pipeline).map_err(|message| EmitError::Pipeline { pipeline: pipeline.to_string(), message })?;
    emit_inner(m, &checked, keep_ir).map_err(|e| match e {
        Failure::Pipeline(message) => EmitError::Pipeline { pipeline: pipeline.to_string(), message },
        Failure::Internal(s) => EmitError::Internal(s),
    })
}

/// What `emit_inner` failed on: the pipeline (a user's) or anything else (a bug).
enum Failure {
    Pipeline(String),
    Internal(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure::Internal(s)
    }
}

fn emit_inner(m: &Module, pipeline: &str, keep_ir: bool) -> Result<Output, Failure> {
    let tm = target_machine(m.target)?;
    let ctx = Context::create();
    let module = ctx.create_module(&m.kernel.name);
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    let mut e = Emitter::new(&ctx, &module, m)?;
    let mut funcs = vec![];
    for f in &m.funcs {
        let fty = e.fn_type(f);
        let v = module.add_function(&f.name, fty, Some(Linkage::Internal));
        funcs.push(v);
    }
    e.funcs = funcs.clone();
    let kty = e.fn_type(&m.kernel);
    let kernel = module.add_function(&m.kernel.name, kty, None);
    // PTX_Kernel calling convention: an `.entry`, not a `.func`.
    kernel.set_call_conventions(71);
    let md = ctx.metadata_node(&[
        kernel.as_global_value().as_pointer_value().into(),
        ctx.metadata_string("maxntidx").into(),
        ctx.i32_type().const_int(m.threads as u64, false).into(),
    ]);
    module.add_global_metadata("nvvm.annotations", &md).ice()?;
    if let Some(n) = m.blocks_per_sm {
        let md = ctx.metadata_node(&[
            kernel.as_global_value().as_pointer_value().into(),
            ctx.metadata_string("minctasm").into(),
            ctx.i32_type().const_int(n.into(), false).into(),
        ]);
        module.add_global_metadata("nvvm.annotations", &md).ice()?;
    }
    for (f, v) in m.funcs.iter().zip(&funcs) {
        e.function(f, *v)?;
    }
    // By-value parameters: `byval([N x i8]) align A`, which NVPTX declares `.param .align A .b8
    // x[N]`.
    for (i, p) in m.kernel.params.iter().enumerate() {
        if let Some((bytes, align)) = p.by_value {
            let ty = ctx.i8_type().array_type(bytes);
            let byval = ctx.create_type_attribute(inkwell::attributes::Attribute::get_named_enum_kind_id("byval"), ty.into());
            kernel.add_attribute(inkwell::attributes::AttributeLoc::Param(i as u32), byval);
            let attr = ctx.create_enum_attribute(inkwell::attributes::Attribute::get_named_enum_kind_id("align"), align as u64);
            kernel.add_attribute(inkwell::attributes::AttributeLoc::Param(i as u32), attr);
        }
    }
    // The alignment of each global pointer's pointee (`.ptr .global .align N`).
    for (i, p) in m.kernel.params.iter().enumerate() {
        if let Some(a) = p.global_align {
            let attr = ctx.create_enum_attribute(inkwell::attributes::Attribute::get_named_enum_kind_id("align"), a as u64);
            kernel.add_attribute(inkwell::attributes::AttributeLoc::Param(i as u32), attr);
        }
    }
    e.function(&m.kernel, kernel)?;
    module.verify().map_err(|err| {
        // The verifier repeats itself per offending instruction: the first lines say it.
        let text = err.to_string();
        let head: Vec<&str> = text.lines().take(4).collect();
        format!("LLVM rejected the module emitted from the machine IR: {}", head.join(" | "))
    })?;
    module.run_passes(pipeline, &tm, PassBuilderOptions::create()).map_err(|e| Failure::Pipeline(e.to_string()))?;
    let llvm_ir = keep_ir.then(|| module.print_to_string().to_string());
    let buf = tm.write_to_memory_buffer(&module, FileType::Assembly).map_err(|e| Failure::Internal(format!("LLVM: {e}")))?;
    let ptx = deterministic(String::from_utf8_lossy(buf.as_slice()).trim_end_matches('\0'));
    let ptx = annotate_pointers(&ptx, &m.kernel)?;
    Ok(Output { ptx, llvm_ir })
}

/// The PTX without the sequence numbers LLVM writes in comments of calls (`// callseq 13`): a
/// counter shared by every compilation in the process.
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

/// The kernel's global-pointer parameters declared `.ptr.global.align N`, as the `ptx` emitter
/// declares them (what a loader checks a tensor's dtype against): LLVM's NVPTX back end writes
/// that attribute for OpenCL only.
fn annotate_pointers(ptx: &str, k: &Function) -> Res<String> {
    let mut out = ptx.to_string();
    for (i, p) in k.params.iter().enumerate() {
        if let Some(a) = p.global_align {
            let plain = format!(".param .u64 {}_param_{i}", k.name);
            let at = out
                .find(&format!("{plain},"))
                .or_else(|| out.find(&format!("{plain}\n")))
                .ok_or_else(|| format!("LLVM's PTX does not declare `{plain}`"))?;
            out.replace_range(at..at + plain.len(), &format!(".param .u64 .ptr.global.align {a} {}_param_{i}", k.name));
        }
    }
    Ok(out)
}

/// Where a machine-IR register lives.
#[derive(Clone, Copy)]
enum Slot<'c> {
    /// Written once: its value (once built).
    Ssa(Option<BasicValueEnum<'c>>),
    /// Written more than once: a stack slot of the register's type.
    Var(PointerValue<'c>),
}

struct Emitter<'c, 'm> {
    ctx: &'c Context,
    module: &'m LlvmModule<'c>,
    b: Builder<'c>,
    m: &'m Module,
    funcs: Vec<FunctionValue<'c>>,
    smem: PointerValue<'c>,
    strings: Vec<PointerValue<'c>>,
    // Per function being translated:
    slots: std::cell::RefCell<Vec<Slot<'c>>>,
    regs: Vec<Ty>,
    blocks: HashMap<usize, BasicBlock<'c>>,
    func: Option<FunctionValue<'c>>,
    depot: Option<PointerValue<'c>>,
    alloca_block: Option<BasicBlock<'c>>,
}

impl<'c, 'm> Emitter<'c, 'm> {
    fn new(ctx: &'c Context, module: &'m LlvmModule<'c>, m: &'m Module) -> Res<Emitter<'c, 'm>> {
        let smem = module.add_global(ctx.i8_type().array_type(0), Some(AddressSpace::from(3u16)), "tessera_smem");
        smem.set_linkage(Linkage::External);
        // wgmma's 128-byte swizzle atoms are 1024-byte aligned (relative offsets are planned so).
        smem.set_alignment(1024);
        let mut strings = vec![];
        for (i, s) in m.strings.iter().enumerate() {
            let bytes: Vec<_> = s.bytes().chain([0]).map(|b| ctx.i8_type().const_int(b as u64, false)).collect();
            let arr = ctx.i8_type().const_array(&bytes);
            let g = module.add_global(arr.get_type(), Some(AddressSpace::from(1u16)), &format!("tessera_str{i}"));
            g.set_initializer(&arr);
            g.set_constant(true);
            g.set_linkage(Linkage::Internal);
            strings.push(g.as_pointer_value());
        }
        Ok(Emitter {
            ctx,
            module,
            b: ctx.create_builder(),
            m,
            funcs: vec![],
            smem: smem.as_pointer_value(),
            strings,
            slots: Default::default(),
            regs: vec![],
            blocks: HashMap::new(),
            func: None,
            depot: None,
            alloca_block: None,
        })
    }

    fn ty(&self, t: Ty) -> BasicTypeEnum<'c> {
        match t {
            Ty::Pred => self.ctx.bool_type().into(),
            Ty::I8 | Ty::I16 => self.ctx.i16_type().into(),
            Ty::I32 => self.ctx.i32_type().into(),
            Ty::I64 => self.ctx.i64_type().into(),
            Ty::F16 => self.ctx.f16_type().into(),
            Ty::BF16 => self.ctx.bf16_type().into(),
            Ty::F32 => self.ctx.f32_type().into(),
            Ty::F64 => self.ctx.f64_type().into(),
        }
    }

    /// The LLVM type of a parameter (a `Pred` or `I8` is passed as a byte).
    fn param_ty(&self, t: Ty) -> BasicTypeEnum<'c> {
        match t {
            Ty::Pred | Ty::I8 => self.ctx.i8_type().into(),
            t => self.ty(t),
        }
    }

    fn fn_type(&self, f: &Function) -> FunctionType<'c> {
        let ps: Vec<BasicMetadataTypeEnum> = f
            .params
            .iter()
            .map(|p| match (p.global_align, p.by_value) {
                // By value: a `byval` pointer (`kernel_params` gives it the type and alignment).
                (_, Some(_)) => self.ctx.ptr_type(AddressSpace::default()).into(),
                // A global pointer: NVPTX declares it `.ptr .global .align N`.
                (Some(_), None) => self.ctx.ptr_type(AddressSpace::from(1u16)).into(),
                (None, None) => self.param_ty(p.ty).into(),
            })
            .collect();
        self.ctx.void_type().fn_type(&ps, false)
    }

    /// The integer type of `bits` bits (1, 8, 16, 32, 64 or 128).
    fn int_t(&self, bits: u32) -> inkwell::types::IntType<'c> {
        match bits {
            1 => self.ctx.bool_type(),
            8 => self.ctx.i8_type(),
            16 => self.ctx.i16_type(),
            32 => self.ctx.i32_type(),
            64 => self.ctx.i64_type(),
            _ => self.ctx.i128_type(),
        }
    }

    fn i32c(&self, v: i64) -> IntValue<'c> {
        self.ctx.i32_type().const_int(v as u64, true)
    }

    fn intrinsic(&self, name: &str, ret: Option<BasicTypeEnum<'c>>, args: &[BasicTypeEnum<'c>]) -> FunctionValue<'c> {
        if let Some(f) = self.module.get_function(name) {
            return f;
        }
        let ps: Vec<BasicMetadataTypeEnum> = args.iter().map(|&t| t.into()).collect();
        let fty = match ret {
            Some(r) => r.fn_type(&ps, false),
            None => self.ctx.void_type().fn_type(&ps, false),
        };
        self.module.add_function(name, fty, None)
    }

    /// Calls intrinsic `name` (declared from the arguments' types and `ret`).
    fn call(&self, name: &str, ret: Option<BasicTypeEnum<'c>>, args: &[BasicValueEnum<'c>]) -> Res<Option<BasicValueEnum<'c>>> {
        let tys: Vec<BasicTypeEnum> = args.iter().map(|a| a.get_type()).collect();
        let f = self.intrinsic(name, ret, &tys);
        let margs: Vec<BasicMetadataValueEnum> = args.iter().map(|&a| a.into()).collect();
        Ok(self.b.build_call(f, &margs, "").ice()?.try_as_basic_value().basic())
    }

    fn call1(&self, name: &str, ret: BasicTypeEnum<'c>, args: &[BasicValueEnum<'c>]) -> Res<BasicValueEnum<'c>> {
        self.call(name, Some(ret), args)?.ok_or_else(|| format!("{name} returned nothing"))
    }

    /// `select c, x, y`. NVPTX's instruction selection turns `select (and a, b), x, y` into two
    /// `selp`s (select a, (select b, x, y), y): a mask of two conditions on every element of a
    /// tile (attention's causal mask) then costs a second select per element, where ptxas would
    /// have folded the `and` into a comparison. An f32 select on an `and` of two conditions is
    /// therefore one inline `and.pred` + `selp.f32` (the conditions stay where they are computed,
    /// so no combined predicate lives longer than its select).
    fn select(&self, c: V, x: BasicValueEnum<'c>, y: BasicValueEnum<'c>) -> Res<BasicValueEnum<'c>> {
        let cond = self.int(c)?;
        let anded = (cond.get_type().get_bit_width() == 1 && x.get_type() == self.ctx.f32_type().into())
            .then(|| cond.as_instruction())
            .flatten()
            .filter(|i| i.get_opcode() == inkwell::values::InstructionOpcode::And)
            .and_then(|i| Some((i.get_operand(0)?.value()?, i.get_operand(1)?.value()?)));
        let Some((p, q)) = anded else { return self.b.build_select(cond, x, y, "").ice() };
        let text = "{\n.reg .pred p;\nand.pred p, $1, $2;\nselp.f32 $0, $3, $4, p;\n}";
        let f32t = self.ctx.f32_type();
        let bool_ty = self.ctx.bool_type();
        let fty = f32t.fn_type(&[bool_ty.into(), bool_ty.into(), f32t.into(), f32t.into()], false);
        let f = self.ctx.create_inline_asm(fty, text.to_string(), "=f,b,b,f,f".to_string(), false, false, None, false);
        let call = self.b.build_indirect_call(fty, f, &[p.into(), q.into(), x.into(), y.into()], "").ice()?;
        call.try_as_basic_value().basic().ok_or_else(|| "inline asm returned nothing".to_string())
    }

    /// Inline PTX with LLVM constraints, kept where it is and in order with other side effects;
    /// returns the outputs.
    fn asm(&self, text: &str, constraints: &str, outs: &[BasicTypeEnum<'c>], args: &[BasicValueEnum<'c>]) -> Res<Vec<BasicValueEnum<'c>>> {
        self.asm_with(text, constraints, outs, args, true)
    }

    /// Inline PTX that computes its outputs from its inputs alone (an arithmetic instruction
    /// LLVM lacks): free to be scheduled, merged or removed like an ordinary instruction.
    fn pure_asm(
        &self,
        text: &str,
        constraints: &str,
        outs: &[BasicTypeEnum<'c>],
        args: &[BasicValueEnum<'c>],
    ) -> Res<Vec<BasicValueEnum<'c>>> {
        self.asm_with(text, constraints, outs, args, false)
    }

    fn asm_with(
        &self,
        text: &str,
        constraints: &str,
        outs: &[BasicTypeEnum<'c>],
        args: &[BasicValueEnum<'c>],
        side_effects: bool,
    ) -> Res<Vec<BasicValueEnum<'c>>> {
        let tys: Vec<BasicMetadataTypeEnum> = args.iter().map(|a| a.get_type().into()).collect();
        let fty = match outs {
            [] => self.ctx.void_type().fn_type(&tys, false),
            [one] => one.fn_type(&tys, false),
            many => self.ctx.struct_type(many, false).fn_type(&tys, false),
        };
        let f = self.ctx.create_inline_asm(fty, text.to_string(), constraints.to_string(), side_effects, false, None, false);
        let margs: Vec<BasicMetadataValueEnum> = args.iter().map(|&a| a.into()).collect();
        let call = self.b.build_indirect_call(fty, f, &margs, "").ice()?;
        match outs.len() {
            0 => Ok(vec![]),
            1 => Ok(vec![call.try_as_basic_value().basic().ok_or("inline asm returned nothing")?]),
            n => {
                let s = call.try_as_basic_value().basic().ok_or("inline asm returned nothing")?.into_struct_value();
                (0..n).map(|i| self.b.build_extract_value(s, i as u32, "").ice()).collect()
            }
        }
    }

    // ---- functions, blocks, registers ---------------------------------------------------------

    fn function(&mut self, f: &Function, func: FunctionValue<'c>) -> Res<()> {
        self.func = Some(func);
        self.regs = f.regs.clone();
        self.blocks.clear();
        self.depot = None;
        // Registers written more than once live in stack slots.
        let mut defs = vec![0u32; f.regs.len()];
        for b in &f.blocks {
            for i in &b.insts {
                let extra = matches!(i, Inst::Load { pred: Some(_), .. }) as u32;
                for d in i.defs() {
                    if let Some(r) = d.reg()
                        && let Some(n) = defs.get_mut(r as usize)
                    {
                        *n += 1 + extra;
                    }
                }
            }
            for (d, _) in &b.copies {
                if let Some(r) = d.reg()
                    && let Some(n) = defs.get_mut(r as usize)
                {
                    *n += 1;
                }
            }
        }
        let allocas = self.ctx.append_basic_block(func, "allocas");
        self.alloca_block = Some(allocas);
        self.b.position_at_end(allocas);
        let mut slots = Vec::with_capacity(f.regs.len());
        for (r, &t) in f.regs.iter().enumerate() {
            slots.push(if defs[r] == 1 { Slot::Ssa(None) } else { Slot::Var(self.b.build_alloca(self.ty(t), "").ice()?) });
        }
        self.slots.replace(slots);
        if f.local_bytes > 0 {
            let d = self.b.build_alloca(self.ctx.i8_type().array_type(f.local_bytes), "depot").ice()?;
            if let Some(i) = d.as_instruction() {
                i.set_alignment(f.local_align.max(1)).ice()?;
            }
            self.depot = Some(d);
        }
        let order = rpo(f);
        for &b in &order {
            let bb = self.ctx.append_basic_block(func, &format!("{}_{b}", f.blocks[b].name));
            self.blocks.insert(b, bb);
        }
        let first = *self.blocks.get(&0).ok_or("no entry block")?;
        self.b.build_unconditional_branch(first).ice()?;
        for &b in &order {
            let bb = self.blocks[&b];
            self.b.position_at_end(bb);
            let data = &f.blocks[b];
            for i in &data.insts {
                self.inst(f, func, i)?;
            }
            // Phi copies: every source is read before any destination is written.
            let vals = data.copies.iter().map(|&(d, s)| self.get(s).map(|v| (d, v))).collect::<Res<Vec<_>>>()?;
            for (d, v) in vals {
                self.set(d, v)?;
            }
            match &data.term {
                Some(Term::Br(t)) => {
                    self.b.build_unconditional_branch(self.block(*t)?).ice()?;
                }
                Some(Term::CondBr(c, t, e)) => {
                    let c = self.get(*c)?.into_int_value();
                    self.b.build_conditional_branch(c, self.block(*t)?, self.block(*e)?).ice()?;
                }
                Some(Term::Trap) => {
                    self.call("llvm.trap", None, &[])?;
                    self.b.build_unreachable().ice()?;
                }
                Some(Term::Ret) | None => {
                    self.b.build_return(None).ice()?;
                }
            }
        }
        Ok(())
    }

    fn block(&self, b: Blk) -> Res<BasicBlock<'c>> {
        self.blocks.get(&b.0).copied().ok_or_else(|| format!("a branch to {b}, which is unreachable"))
    }

    /// The value of an operand, in the LLVM type of its own type.
    fn get(&self, v: V) -> Res<BasicValueEnum<'c>> {
        let t = self.ty(v.ty);
        match v.k {
            K::Imm(i) => Ok(match v.ty {
                Ty::Pred => self.ctx.bool_type().const_int((i != 0) as u64, false).into(),
                Ty::F16 | Ty::BF16 | Ty::F32 | Ty::F64 => t.into_float_type().const_float(v.float_imm().unwrap_or(0.0)).into(),
                _ => t.into_int_type().const_int(v.imm_bits().unwrap_or(0), false).into(),
            }),
            K::Reg(r) => {
                let rt = *self.regs.get(r as usize).ok_or_else(|| format!("%{r} is not a register"))?;
                let slot = self.slots.borrow().get(r as usize).copied();
                let x = match slot {
                    Some(Slot::Ssa(Some(x))) => x,
                    Some(Slot::Var(p)) => self.b.build_load(self.ty(rt), p, "").ice()?,
                    _ => return Err(format!("%{r} is read before it is defined")),
                };
                self.cast_to(x, t)
            }
        }
    }

    fn int(&self, v: V) -> Res<IntValue<'c>> {
        Ok(self.get(v)?.into_int_value())
    }

    /// `x` as `t`, a type of the same width (a bit cast; nothing if it already is).
    fn cast_to(&self, x: BasicValueEnum<'c>, t: BasicTypeEnum<'c>) -> Res<BasicValueEnum<'c>> {
        if x.get_type() == t { Ok(x) } else { self.b.build_bit_cast(x, t, "").ice() }
    }

    /// Writes register `d` (the value in the LLVM type of `d.ty`).
    fn set(&self, d: V, x: BasicValueEnum<'c>) -> Res<()> {
        let r = d.reg().ok_or("a constant destination")? as usize;
        let rt = self.ty(*self.regs.get(r).ok_or("a destination out of range")?);
        let x = self.cast_to(x, rt)?;
        let slot = self.slots.borrow().get(r).copied();
        match slot {
            Some(Slot::Ssa(_)) => {
                if let Some(s) = self.slots.borrow_mut().get_mut(r) {
                    *s = Slot::Ssa(Some(x));
                }
            }
            Some(Slot::Var(p)) => {
                self.b.build_store(p, x).ice()?;
            }
            None => return Err(format!("%{r} is not a register")),
        }
        Ok(())
    }

    /// The pointer of an address in `space`.
    fn ptr(&self, space: Space, a: &Addr) -> Res<PointerValue<'c>> {
        let base = self.int(a.base)?;
        let aspace = match space {
            Space::Global => AddressSpace::from(1u16),
            Space::Shared => AddressSpace::from(3u16),
            // Local addresses are the generic addresses of the depot (see `SymAddr`).
            Space::Local => AddressSpace::default(),
        };
        let p = self.b.build_int_to_ptr(base, self.ctx.ptr_type(aspace), "").ice()?;
        if a.offset == 0 {
            return Ok(p);
        }
        let off = self.ctx.i64_type().const_int(a.offset as u64, true);
        // SAFETY: an i8 GEP by a constant byte offset (the address the machine IR computes).
        unsafe { self.b.build_gep(self.ctx.i8_type(), p, &[off], "") }.ice()
    }

    fn generic(&self, v: V, from: u16) -> Res<PointerValue<'c>> {
        let p = self.b.build_int_to_ptr(self.int(v)?, self.ctx.ptr_type(AddressSpace::from(from)), "").ice()?;
        if from == 0 { Ok(p) } else { self.b.build_address_space_cast(p, self.ctx.ptr_type(AddressSpace::default()), "").ice() }
    }

    // ---- instructions -------------------------------------------------------------------------

    fn inst(&self, f: &Function, func: FunctionValue<'c>, i: &Inst) -> Res<()> {
        let b = &self.b;
        match i {
            Inst::Int { op, dst, a, b: y } => {
                let v = self.int_op(*op, *a, *y)?;
                self.set(*dst, v)?;
            }
            Inst::MulWide { signed, dst, a, b: y } => {
                let t = self.ctx.i64_type();
                let (x, y) = (self.int(*a)?, self.int(*y)?);
                let (x, y) = if *signed {
                    (b.build_int_s_extend(x, t, "").ice()?, b.build_int_s_extend(y, t, "").ice()?)
                } else {
                    (b.build_int_z_extend(x, t, "").ice()?, b.build_int_z_extend(y, t, "").ice()?)
                };
                let v = b.build_int_mul(x, y, "").ice()?;
                self.set(*dst, v.into())?;
            }
            Inst::Not { dst, a } => {
                let v = b.build_not(self.int(*a)?, "").ice()?;
                self.set(*dst, v.into())?;
            }
            Inst::Clz { dst, a } => {
                // Defined at 0 (`false`: zero is not poison), as PTX's `clz` is.
                let i32t = self.ctx.i32_type();
                let v = self.call1("llvm.ctlz.i32", i32t.into(), &[self.int(*a)?.into(), self.ctx.bool_type().const_zero().into()])?;
                self.set(*dst, v)?;
            }
            Inst::Neg { dst, a } => {
                let v: BasicValueEnum = if dst.ty.is_float() {
                    b.build_float_neg(self.get(*a)?.into_float_value(), "").ice()?.into()
                } else {
                    b.build_int_neg(self.int(*a)?, "").ice()?.into()
                };
                self.set(*dst, v)?;
            }
            Inst::ICmp { cmp, dst, a, b: y } => {
                let p = match cmp {
                    Cmp::Eq => IntPredicate::EQ,
                    Cmp::Ne => IntPredicate::NE,
                    Cmp::Slt => IntPredicate::SLT,
                    Cmp::Sle => IntPredicate::SLE,
                    Cmp::Sgt => IntPredicate::SGT,
                    Cmp::Sge => IntPredicate::SGE,
                    Cmp::Ult => IntPredicate::ULT,
                    Cmp::Ule => IntPredicate::ULE,
                    Cmp::Ugt => IntPredicate::UGT,
                    Cmp::Uge => IntPredicate::UGE,
                };
                let v = b.build_int_compare(p, self.int(*a)?, self.int(*y)?, "").ice()?;
                self.set(*dst, v.into())?;
            }
            Inst::FCmp { cmp, dst, a, b: y } => {
                let p = match cmp {
                    FCmp::Oeq => FloatPredicate::OEQ,
                    FCmp::Une => FloatPredicate::UNE,
                    FCmp::Olt => FloatPredicate::OLT,
                    FCmp::Ole => FloatPredicate::OLE,
                    FCmp::Ogt => FloatPredicate::OGT,
                    FCmp::Oge => FloatPredicate::OGE,
                    FCmp::Uno => FloatPredicate::UNO,
                    FCmp::Ord => FloatPredicate::ORD,
                };
                let v = b.build_float_compare(p, self.get(*a)?.into_float_value(), self.get(*y)?.into_float_value(), "").ice()?;
                self.set(*dst, v.into())?;
            }
            Inst::Select { dst, c, a, b: y } => {
                let v = self.select(*c, self.get(*a)?, self.get(*y)?)?;
                self.set(*dst, v)?;
            }
            Inst::Float { op, dst, a, b: y } => {
                let (x, y) = (self.get(*a)?.into_float_value(), self.get(*y)?.into_float_value());
                let v: BasicValueEnum = match op {
                    FOp::Add => b.build_float_add(x, y, "").ice()?.into(),
                    FOp::Sub => b.build_float_sub(x, y, "").ice()?.into(),
                    FOp::Mul => b.build_float_mul(x, y, "").ice()?.into(),
                    FOp::Div => b.build_float_div(x, y, "").ice()?.into(),
                    FOp::Min => self.call1(&format!("llvm.minnum.{}", fsuffix(dst.ty)), self.ty(dst.ty), &[x.into(), y.into()])?,
                    FOp::Max => self.call1(&format!("llvm.maxnum.{}", fsuffix(dst.ty)), self.ty(dst.ty), &[x.into(), y.into()])?,
                };
                self.set(*dst, v)?;
            }
            Inst::Fma { dst, a, b: y, c } => {
                let v =
                    self.call1(&format!("llvm.fma.{}", fsuffix(dst.ty)), self.ty(dst.ty), &[self.get(*a)?, self.get(*y)?, self.get(*c)?])?;
                self.set(*dst, v)?;
            }
            Inst::FUnary { op, dst, a } => {
                let v = self.funary(*op, dst.ty, *a)?;
                self.set(*dst, v)?;
            }
            Inst::Copysign { dst, sign, mag } => {
                // NVPTX expands `llvm.copysign` into seven instructions and a predicate (an
                // epilogue of `erf`s spills for it); PTX has the instruction.
                let v = match dst.ty {
                    Ty::F32 | Ty::F64 => {
                        let c = constraint(dst.ty);
                        let text = format!("copysign.{} $0, $1, $2;", dst.ty.f());
                        let r = self.pure_asm(&text, &format!("={c},{c},{c}"), &[self.ty(dst.ty)], &[self.get(*sign)?, self.get(*mag)?])?;
                        r.into_iter().next().ok_or("inline asm returned nothing")?
                    }
                    _ => {
                        self.call1(&format!("llvm.copysign.{}", fsuffix(dst.ty)), self.ty(dst.ty), &[self.get(*mag)?, self.get(*sign)?])?
                    }
                };
                self.set(*dst, v)?;
            }
            Inst::Cvt { dst, src, to, from, rnd } => {
                let v = self.cvt(dst.ty, *src, *to, *from, *rnd)?;
                self.set(*dst, v)?;
            }
            Inst::Mov { dst, src } => {
                let v = self.get(*src)?;
                self.set(*dst, self.cast_to(v, self.ty(dst.ty))?)?;
            }
            // Parts of one width (the verifier's rule) as a vector bit-cast to the wide integer:
            // NVPTX prints it as one `mov.b32 %r, {%a, %b}` (and the reverse for `Unpack`), not
            // as extensions, shifts and ors.
            Inst::Pack { dst, parts } => {
                let wide = self.ty(Ty::int_of_bits(dst.ty.class_bits())).into_int_type();
                let bits = parts.first().map_or(0, |p| p.ty.class_bits());
                let elem = self.ty(Ty::int_of_bits(bits)).into_int_type();
                let mut v = elem.vec_type(parts.len() as u32).get_undef();
                for (i, p) in parts.iter().enumerate() {
                    let x = self.cast_to(self.get(*p)?, elem.into())?.into_int_value();
                    v = b.build_insert_element(v, x, self.ctx.i32_type().const_int(i as u64, false), "").ice()?;
                }
                let acc = b.build_bit_cast(v, wide, "").ice()?;
                self.set(*dst, acc)?;
            }
            Inst::Unpack { dsts, src } => {
                let bits = dsts.first().map_or(0, |d| d.ty.class_bits());
                let elem = self.ty(Ty::int_of_bits(bits)).into_int_type();
                let x = self.cast_to(self.get(*src)?, self.ty(Ty::int_of_bits(src.ty.class_bits())))?;
                let v = b.build_bit_cast(x, elem.vec_type(dsts.len() as u32), "").ice()?.into_vector_value();
                for (i, d) in dsts.iter().enumerate() {
                    let part = b.build_extract_element(v, self.ctx.i32_type().const_int(i as u64, false), "").ice()?;
                    self.set(*d, part)?;
                }
            }
            Inst::Load { space, sem, ty, dsts, addr, pred } => self.load(*space, *sem, *ty, dsts, addr, *pred)?,
            Inst::Store { space, ty, vals, addr, pred, .. } => self.store(*space, *ty, vals, addr, *pred)?,
            Inst::Red { op, ty, addr, val } => {
                let p = self.ptr(Space::Global, addr)?;
                let vt = match ty {
                    AtomTy::F32 => Ty::F32,
                    AtomTy::F64 => Ty::F64,
                    AtomTy::U32 | AtomTy::S32 => Ty::I32,
                    AtomTy::U64 | AtomTy::S64 => Ty::I64,
                };
                let x = self.cast_to(self.get(*val)?, self.ty(vt))?;
                match (op, ty) {
                    (RedOp::Add, AtomTy::F32 | AtomTy::F64) => {
                        // inkwell 0.11 builds integer atomicrmw only: fadd through the C API.
                        self.atomic_fadd(p, x)?;
                    }
                    _ => {
                        let signed = matches!(ty, AtomTy::S32 | AtomTy::S64);
                        let bop = match (op, signed) {
                            (RedOp::Add, _) => AtomicRMWBinOp::Add,
                            (RedOp::Max, true) => AtomicRMWBinOp::Max,
                            (RedOp::Max, false) => AtomicRMWBinOp::UMax,
                            (RedOp::Min, true) => AtomicRMWBinOp::Min,
                            (RedOp::Min, false) => AtomicRMWBinOp::UMin,
                        };
                        b.build_atomicrmw(bop, p, x.into_int_value(), AtomicOrdering::Monotonic).ice()?;
                    }
                }
            }
            Inst::AtomCas { dst, addr, cmp, new } => {
                let p = self.ptr(Space::Global, addr)?;
                let it = self.ty(Ty::int_of_bits(dst.ty.class_bits()));
                let (c, n) = (self.cast_to(self.get(*cmp)?, it)?, self.cast_to(self.get(*new)?, it)?);
                let r = b
                    .build_cmpxchg(p, c.into_int_value(), n.into_int_value(), AtomicOrdering::Monotonic, AtomicOrdering::Monotonic)
                    .ice()?;
                let v = b.build_extract_value(r, 0, "").ice()?;
                self.set(*dst, v)?;
            }
            Inst::Shfl { mode, dst, val, lane, clamp } => {
                let name = match mode {
                    ShflMode::Idx => "llvm.nvvm.shfl.sync.idx.i32",
                    ShflMode::Bfly => "llvm.nvvm.shfl.sync.bfly.i32",
                    ShflMode::Down => "llvm.nvvm.shfl.sync.down.i32",
                    ShflMode::Up => "llvm.nvvm.shfl.sync.up.i32",
                };
                let args = [self.i32c(-1).into(), self.get(*val)?, self.get(*lane)?, self.i32c(*clamp as i64).into()];
                let v = self.call1(name, self.ctx.i32_type().into(), &args)?;
                self.set(*dst, v)?;
            }
            Inst::Barrier => {
                self.call("llvm.nvvm.barrier0", None, &[])?;
            }
            Inst::SReg { dst, reg } => {
                let name = format!("llvm.nvvm.read.ptx.sreg.{}", reg_name(*reg));
                let v = self.call1(&name, self.ctx.i32_type().into(), &[])?;
                self.set(*dst, v)?;
            }
            Inst::SymAddr { dst, sym } => {
                let v = match sym {
                    Sym::Smem => b.build_ptr_to_int(self.smem, self.ctx.i32_type(), "").ice()?,
                    Sym::Str(i) => b.build_ptr_to_int(*self.strings.get(*i).ok_or("a missing string")?, self.ctx.i64_type(), "").ice()?,
                    Sym::LocalDepot => b.build_ptr_to_int(self.depot.ok_or("no local buffer")?, self.ctx.i64_type(), "").ice()?,
                };
                self.set(*dst, v.into())?;
            }
            Inst::Cvta { dst, src, space } => {
                let v: BasicValueEnum = match space {
                    Space::Global => {
                        let p = self.generic(*src, 1)?;
                        b.build_ptr_to_int(p, self.ctx.i64_type(), "").ice()?.into()
                    }
                    Space::Shared => {
                        let p = self.generic(*src, 3)?;
                        b.build_ptr_to_int(p, self.ctx.i64_type(), "").ice()?.into()
                    }
                    // The depot's addresses are generic already.
                    Space::Local => self.get(*src)?,
                };
                self.set(*dst, v)?;
            }
            Inst::Param { dst, index } if f.params.get(*index).is_some_and(|p| p.by_value.is_some()) => {
                // NVPTX names kernel parameters `<kernel>_param_<i>`; the generic address of one
                // passed by value, as the copy engine wants it.
                let text = format!("mov.b64 $0, {}_param_{index};\n\tcvta.param.u64 $0, $0;", f.name);
                let vals = self.asm(&text, "=l", &[self.ctx.i64_type().into()], &[])?;
                self.set(*dst, *vals.first().ok_or("inline asm without its result")?)?;
            }
            Inst::Param { dst, index } => {
                let p = func.get_nth_param(*index as u32).ok_or("a missing parameter")?;
                let v: BasicValueEnum = match f.params.get(*index) {
                    Some(crate::mir::Param { global_align: Some(_), .. }) => {
                        b.build_ptr_to_int(p.into_pointer_value(), self.ctx.i64_type(), "").ice()?.into()
                    }
                    Some(crate::mir::Param { ty: Ty::Pred | Ty::I8, .. }) => {
                        b.build_int_z_extend(p.into_int_value(), self.ctx.i16_type(), "").ice()?.into()
                    }
                    _ => p,
                };
                self.set(*dst, v)?;
            }
            Inst::Call { callee, args } => {
                let vals = args.iter().map(|&a| self.get(a)).collect::<Res<Vec<_>>>()?;
                match callee {
                    Callee::Func(i) => {
                        let g = *self.funcs.get(*i).ok_or("a call of a missing function")?;
                        let params = &self.m.funcs.get(*i).ok_or("a call of a missing function")?.params;
                        let mut margs: Vec<BasicMetadataValueEnum> = vec![];
                        for (v, p) in vals.iter().zip(params) {
                            let pt = self.param_ty(p.ty);
                            let v = if v.get_type() != pt {
                                b.build_int_truncate(v.into_int_value(), pt.into_int_type(), "").ice()?.into()
                            } else {
                                *v
                            };
                            margs.push(v.into());
                        }
                        b.build_call(g, &margs, "").ice()?;
                    }
                    Callee::Vprintf | Callee::AssertFail => {
                        let gp = self.ctx.ptr_type(AddressSpace::default());
                        let ptr = |v: &BasicValueEnum<'c>| b.build_int_to_ptr(v.into_int_value(), gp, "").ice();
                        if *callee == Callee::Vprintf {
                            let [fmt, buf] = vals.as_slice() else { return Err("vprintf takes two arguments".into()) };
                            let args = [ptr(fmt)?.into(), ptr(buf)?.into()];
                            self.call("vprintf", Some(self.ctx.i32_type().into()), &args)?;
                        } else {
                            let [msg, file, line, fun, size] = vals.as_slice() else {
                                return Err("__assertfail takes five arguments".into());
                            };
                            let args = [ptr(msg)?.into(), ptr(file)?.into(), *line, ptr(fun)?.into(), *size];
                            self.call("__assertfail", None, &args)?;
                        }
                    }
                }
            }
            Inst::LdMatrix { dsts, addr, trans } => {
                let p = self.b.build_int_to_ptr(self.int(*addr)?, self.ctx.ptr_type(AddressSpace::from(3u16)), "").ice()?;
                let name = format!("llvm.nvvm.ldmatrix.sync.aligned.m8n8.x{}{}.b16.p3", dsts.len(), if *trans { ".trans" } else { "" });
                let i32t: BasicTypeEnum = self.ctx.i32_type().into();
                let ret: BasicTypeEnum = if dsts.len() == 1 { i32t } else { self.ctx.struct_type(&vec![i32t; dsts.len()], false).into() };
                let r = self.call1(&name, ret, &[p.into()])?;
                self.set_results(dsts, r)?;
            }
            Inst::Mma { kind, acc, a, b: bb } => {
                let (name, frag): (&str, Option<BasicTypeEnum>) = match kind {
                    MmaKind::Bf16 => ("llvm.nvvm.mma.m16n8k16.row.col.bf16", None),
                    MmaKind::F16 => ("llvm.nvvm.mma.m16n8k16.row.col.f32.f32", Some(self.ctx.f16_type().vec_type(2).into())),
                    MmaKind::Tf32 => ("llvm.nvvm.mma.m16n8k8.row.col.tf32", None),
                    MmaKind::S8 => ("llvm.nvvm.mma.m16n8k32.row.col.s8", None),
                };
                let mut args = vec![];
                for &x in a.iter().chain(bb) {
                    let v = self.get(x)?;
                    args.push(match frag {
                        Some(t) => self.cast_to(v, t)?,
                        None => v,
                    });
                }
                for &x in acc {
                    args.push(self.get(x)?);
                }
                let at = self.ty(kind.acc());
                let r = self.call1(name, self.ctx.struct_type(&[at; 4], false).into(), &args)?;
                self.set_results(acc, r)?;
            }
            Inst::CpAsync { dst, src, src_bytes } => {
                // Inline PTX: LLVM 19 has the intrinsics, but cannot select them with the 32-bit
                // shared pointers this emitter uses (`-nvptx-short-ptr`).
                let (d, s) = (self.get(*dst)?, self.get(*src)?);
                match src_bytes {
                    Some(n) => {
                        let n = self.get(*n)?;
                        self.asm("cp.async.cg.shared.global [$0], [$1], 16, $2;", "r,l,r,~{memory}", &[], &[d, s, n])?;
                    }
                    None => {
                        self.asm("cp.async.cg.shared.global [$0], [$1], 16;", "r,l,~{memory}", &[], &[d, s])?;
                    }
                }
            }
            Inst::CpAsyncCommit => {
                self.call("llvm.nvvm.cp.async.commit.group", None, &[])?;
            }
            Inst::CpAsyncWait(n) => {
                self.call("llvm.nvvm.cp.async.wait.group", None, &[self.i32c(*n as i64).into()])?;
            }
            Inst::Asm { template, constraints, outputs, inputs } => self.inline(template, constraints, outputs, inputs)?,
        }
        Ok(())
    }

    /// Registers `dsts` from a struct of as many fields (or the one value).
    fn set_results(&self, dsts: &[V], r: BasicValueEnum<'c>) -> Res<()> {
        if dsts.len() == 1 {
            return self.set(dsts[0], r);
        }
        let s = r.into_struct_value();
        for (k, d) in dsts.iter().enumerate() {
            let v = self.b.build_extract_value(s, k as u32, "").ice()?;
            self.set(*d, v)?;
        }
        Ok(())
    }

    fn atomic_fadd(&self, p: PointerValue<'c>, x: BasicValueEnum<'c>) -> Res<()> {
        use inkwell::llvm_sys::LLVMAtomicOrdering;
        use inkwell::llvm_sys::LLVMAtomicRMWBinOp;
        use inkwell::llvm_sys::core::LLVMBuildAtomicRMW;
        use inkwell::values::AsValueRef;
        // SAFETY: the builder is positioned (we are translating a block), the pointer and the
        // float value are live values of this context, and the ordering is valid for atomicrmw.
        unsafe {
            LLVMBuildAtomicRMW(
                self.b.as_mut_ptr(),
                LLVMAtomicRMWBinOp::LLVMAtomicRMWBinOpFAdd,
                p.as_value_ref(),
                x.as_value_ref(),
                LLVMAtomicOrdering::LLVMAtomicOrderingMonotonic,
                0,
            );
        }
        Ok(())
    }

    /// An integer operation with PTX's meaning where LLVM's would be undefined.
    fn int_op(&self, op: IntOp, a: V, y: V) -> Res<BasicValueEnum<'c>> {
        let b = &self.b;
        let (x, yv) = (self.int(a)?, self.int(y)?);
        let t = x.get_type();
        let w = t.get_bit_width() as u64;
        let v = match op {
            IntOp::Add => b.build_int_add(x, yv, "").ice()?,
            IntOp::Sub => b.build_int_sub(x, yv, "").ice()?,
            IntOp::Mul => b.build_int_mul(x, yv, "").ice()?,
            IntOp::And => b.build_and(x, yv, "").ice()?,
            IntOp::Or => b.build_or(x, yv, "").ice()?,
            IntOp::Xor => b.build_xor(x, yv, "").ice()?,
            IntOp::UDiv | IntOp::URem | IntOp::SDiv | IntOp::SRem => {
                // PTX gives some value for a zero divisor and wraps `MIN / -1`; LLVM would assume
                // neither happens.
                let zero = b.build_int_compare(IntPredicate::EQ, yv, t.const_zero(), "").ice()?;
                let safe = if y.imm().is_some_and(|c| c != 0) {
                    yv
                } else {
                    b.build_select(zero, t.const_int(1, false), yv, "").ice()?.into_int_value()
                };
                let signed = matches!(op, IntOp::SDiv | IntOp::SRem);
                let safe = if signed && y.imm().is_none_or(|c| c == -1) {
                    // `x / -1` as `-x` (wrapping), `x % -1` as 0.
                    let m1 = b.build_int_compare(IntPredicate::EQ, safe, t.const_all_ones(), "").ice()?;
                    b.build_select(m1, t.const_int(1, false), safe, "").ice()?.into_int_value()
                } else {
                    safe
                };
                let q = match op {
                    IntOp::UDiv => b.build_int_unsigned_div(x, safe, "").ice()?,
                    IntOp::URem => b.build_int_unsigned_rem(x, safe, "").ice()?,
                    IntOp::SDiv => b.build_int_signed_div(x, safe, "").ice()?,
                    _ => b.build_int_signed_rem(x, safe, "").ice()?,
                };
                if signed && y.imm().is_none_or(|c| c == -1) {
                    let m1 = b.build_int_compare(IntPredicate::EQ, yv, t.const_all_ones(), "").ice()?;
                    let alt = if op == IntOp::SDiv { b.build_int_neg(x, "").ice()? } else { t.const_zero() };
                    b.build_select(m1, alt, q, "").ice()?.into_int_value()
                } else {
                    q
                }
            }
            IntOp::Shl | IntOp::LShr | IntOp::AShr if y.imm().is_some_and(|k| (0..w as i64).contains(&k)) => {
                // A constant amount inside the width: the plain shift.
                let k = t.const_int(y.imm().unwrap_or(0) as u64, false);
                match op {
                    IntOp::Shl => b.build_left_shift(x, k, "").ice()?,
                    IntOp::LShr => b.build_right_shift(x, k, false, "").ice()?,
                    _ => b.build_right_shift(x, k, true, "").ice()?,
                }
            }
            IntOp::Shl | IntOp::LShr | IntOp::AShr => {
                // The amount is an i32; PTX clamps amounts of the width or more.
                let amt = if t.get_bit_width() == 32 {
                    yv
                } else if t.get_bit_width() > 32 {
                    b.build_int_z_extend(yv, t, "").ice()?
                } else {
                    let big = b.build_int_compare(IntPredicate::UGE, yv, self.i32c(w as i64), "").ice()?;
                    let c = b.build_select(big, self.i32c(w as i64), yv, "").ice()?.into_int_value();
                    b.build_int_truncate(c, t, "").ice()?
                };
                let over = b.build_int_compare(IntPredicate::UGE, amt, t.const_int(w, false), "").ice()?;
                let m = b.build_and(amt, t.const_int(w - 1, false), "").ice()?;
                let s = match op {
                    IntOp::Shl => b.build_left_shift(x, m, "").ice()?,
                    IntOp::LShr => b.build_right_shift(x, m, false, "").ice()?,
                    _ => b.build_right_shift(x, m, true, "").ice()?,
                };
                let sat = match op {
                    IntOp::AShr => b.build_right_shift(x, t.const_int(w - 1, false), true, "").ice()?,
                    _ => t.const_zero(),
                };
                b.build_select(over, sat, s, "").ice()?.into_int_value()
            }
            IntOp::MulHiS | IntOp::MulHiU => {
                let wide = self.int_t(2 * w as u32);
                let (xa, ya) = if op == IntOp::MulHiS {
                    (b.build_int_s_extend(x, wide, "").ice()?, b.build_int_s_extend(yv, wide, "").ice()?)
                } else {
                    (b.build_int_z_extend(x, wide, "").ice()?, b.build_int_z_extend(yv, wide, "").ice()?)
                };
                let p = b.build_int_mul(xa, ya, "").ice()?;
                let hi = b.build_right_shift(p, wide.const_int(w, false), false, "").ice()?;
                b.build_int_truncate(hi, t, "").ice()?
            }
        };
        Ok(v.into())
    }

    fn funary(&self, op: FUn, ty: Ty, a: V) -> Res<BasicValueEnum<'c>> {
        let x = self.get(a)?;
        let t = self.ty(ty);
        let s = fsuffix(ty);
        let approx = |base: &str| -> Res<BasicValueEnum<'c>> {
            match ty {
                Ty::F32 => self.call1(&format!("llvm.nvvm.{base}.approx.f"), t, &[x]),
                Ty::F64 if base != "sin" && base != "cos" => self.call1(&format!("llvm.nvvm.{base}.approx.d"), t, &[x]),
                _ => {
                    let c = constraint(ty);
                    let r = self.pure_asm(&format!("{base}.approx.{} $0, $1;", ty.f()), &format!("={c},{c}"), &[t], &[x])?;
                    r.into_iter().next().ok_or_else(|| "inline asm".to_string())
                }
            }
        };
        match op {
            FUn::Abs => self.call1(&format!("llvm.fabs.{s}"), t, &[x]),
            FUn::Sqrt => self.call1(&format!("llvm.sqrt.{s}"), t, &[x]),
            FUn::Floor => self.call1(&format!("llvm.floor.{s}"), t, &[x]),
            FUn::Ceil => self.call1(&format!("llvm.ceil.{s}"), t, &[x]),
            FUn::Trunc => self.call1(&format!("llvm.trunc.{s}"), t, &[x]),
            FUn::Ex2Approx if ty == Ty::F32 => self.call1("llvm.nvvm.ex2.approx.ftz.f", t, &[x]),
            FUn::Ex2Approx => approx("ex2"),
            FUn::Lg2Approx => approx("lg2"),
            FUn::RsqrtApprox => approx("rsqrt"),
            FUn::RcpApprox => match ty {
                Ty::F32 => self.call1("llvm.nvvm.rcp.approx.ftz.f", t, &[x]),
                _ => self.call1("llvm.nvvm.rcp.approx.ftz.d", t, &[x]),
            },
            FUn::SinApprox => approx("sin"),
            FUn::CosApprox => approx("cos"),
        }
    }

    /// A conversion with PTX's rounding: LLVM instructions where they round the same way,
    /// NVVM intrinsics for the directed roundings, the PTX instruction itself for the rest.
    fn cvt(&self, dst: Ty, src: V, to: NumTy, from: NumTy, rnd: Option<Rnd>) -> Res<BasicValueEnum<'c>> {
        let b = &self.b;
        let x = self.get(src)?;
        let dt = self.ty(dst);
        let fallback = || -> Res<BasicValueEnum<'c>> {
            let r = rnd.map(|r| format!(".{}", r.name())).unwrap_or_default();
            let (cd, cs) = (constraint(dst), constraint(src.ty));
            let outs = [self.ty(asm_ty(dst))];
            let v = self.pure_asm(
                &format!("cvt{r}.{}.{} $0, $1;", to.name(), from.name()),
                &format!("={cd},{cs}"),
                &outs,
                &[self.cast_to(x, self.ty(asm_ty(src.ty)))?],
            )?;
            self.cast_to(v.into_iter().next().ok_or("inline asm")?, dt)
        };
        match (from.is_float(), to.is_float()) {
            (false, false) => {
                // Integers: the source's bits of `from` (an 8-bit one in a 16-bit register),
                // extended or truncated to `to`, in the destination register.
                let xi = x.into_int_value();
                let fb = from.bits();
                let src_bits = if fb == 8 { b.build_int_truncate(xi, self.ctx.i8_type(), "").ice()? } else { xi };
                let tb = to.bits().max(16);
                let tt = self.int_t(tb);
                let v = if src_bits.get_type().get_bit_width() == tb {
                    src_bits
                } else if src_bits.get_type().get_bit_width() > tb {
                    b.build_int_truncate(src_bits, tt, "").ice()?
                } else if from.is_signed() {
                    b.build_int_s_extend(src_bits, tt, "").ice()?
                } else {
                    b.build_int_z_extend(src_bits, tt, "").ice()?
                };
                // An 8-bit destination keeps its value extended in the 16-bit register.
                let v = if to.bits() == 8 {
                    let t8 = b.build_int_truncate(v, self.ctx.i8_type(), "").ice()?;
                    if to.is_signed() {
                        b.build_int_s_extend(t8, self.ctx.i16_type(), "").ice()?
                    } else {
                        b.build_int_z_extend(t8, self.ctx.i16_type(), "").ice()?
                    }
                } else {
                    v
                };
                self.cast_to(v.into(), dt)
            }
            (false, true) => {
                let xi = x.into_int_value();
                let xi = if from.bits() == 8 { b.build_int_truncate(xi, self.ctx.i8_type(), "").ice()? } else { xi };
                match (to, rnd) {
                    (NumTy::F32 | NumTy::F64, Some(Rnd::Rn) | None) => Ok(if from.is_signed() {
                        b.build_signed_int_to_float(xi, dt.into_float_type(), "").ice()?.into()
                    } else {
                        b.build_unsigned_int_to_float(xi, dt.into_float_type(), "").ice()?.into()
                    }),
                    (NumTy::F32, Some(Rnd::Rz)) if matches!(from.bits(), 32 | 64) => {
                        let name = match (from.is_signed(), from.bits()) {
                            (true, 32) => "llvm.nvvm.i2f.rz",
                            (false, 32) => "llvm.nvvm.ui2f.rz",
                            (true, _) => "llvm.nvvm.ll2f.rz",
                            (false, _) => "llvm.nvvm.ull2f.rz",
                        };
                        self.call1(name, dt, &[xi.into()])
                    }
                    _ => fallback(),
                }
            }
            (true, false) => {
                if to == NumTy::TF32 {
                    return fallback();
                }
                match rnd {
                    Some(Rnd::Rzi) => {
                        // PTX's cvt.rzi saturates (NaN gives 0): llvm.fpto[su]i.sat.
                        let tb = to.bits();
                        let it = self.int_t(tb);
                        let name = format!("llvm.fpto{}i.sat.i{tb}.{}", if to.is_signed() { "s" } else { "u" }, fsuffix(src.ty));
                        let v = self.call1(&name, it.into(), &[x])?.into_int_value();
                        let v = if tb == 8 {
                            if to.is_signed() {
                                b.build_int_s_extend(v, self.ctx.i16_type(), "").ice()?
                            } else {
                                b.build_int_z_extend(v, self.ctx.i16_type(), "").ice()?
                            }
                        } else {
                            v
                        };
                        self.cast_to(v.into(), dt)
                    }
                    _ => fallback(),
                }
            }
            (true, true) => {
                if to == NumTy::TF32 {
                    let v = self.call1("llvm.nvvm.f2tf32.rna", self.ctx.i32_type().into(), &[x])?;
                    return self.cast_to(v, dt);
                }
                let (fb, tb) = (from.bits(), to.bits());
                match rnd {
                    Some(Rnd::Rzi) => self.call1(&format!("llvm.trunc.{}", fsuffix(dst)), dt, &[x]),
                    Some(Rnd::Rmi) => self.call1(&format!("llvm.floor.{}", fsuffix(dst)), dt, &[x]),
                    Some(Rnd::Rpi) => self.call1(&format!("llvm.ceil.{}", fsuffix(dst)), dt, &[x]),
                    Some(Rnd::Rz) if from == NumTy::F64 && to == NumTy::F32 => self.call1("llvm.nvvm.d2f.rz", dt, &[x]),
                    // Widening is exact.
                    None if tb > fb => Ok(b.build_float_ext(x.into_float_value(), dt.into_float_type(), "").ice()?.into()),
                    // f32 → f16/bf16 and f64 → f32 round to nearest even natively.
                    Some(Rnd::Rn) if (fb == 32 && tb == 16) || (fb == 64 && tb == 32) => {
                        Ok(b.build_float_trunc(x.into_float_value(), dt.into_float_type(), "").ice()?.into())
                    }
                    _ => fallback(),
                }
            }
        }
    }

    fn load(&self, space: Space, sem: Sem, ty: MemTy, dsts: &[V], addr: &Addr, pred: Option<V>) -> Res<()> {
        if let Some(p) = pred {
            return self.predicated(p, space, ty, dsts, addr, true);
        }
        if sem == Sem::RelaxedGpu {
            // A relaxed atomic load at device scope, as PTX spells it.
            let d = *dsts.first().ok_or("a load without destinations")?;
            let base = self.get(addr.base)?;
            let c = constraint(d.ty);
            let text = format!("ld.relaxed.gpu.{}.{} $0, [$1+{}];", space.name(), ty.name(), addr.offset);
            let v = self.asm(&text, &format!("={c},l,~{{memory}}"), &[self.ty(asm_ty(d.ty))], &[base])?;
            self.set(d, v.into_iter().next().ok_or("inline asm")?)?;
        } else {
            let p = self.ptr(space, addr)?;
            let et = self.int_t(8 * ty.bytes());
            let n = dsts.len() as u32;
            let lt: BasicTypeEnum = if n == 1 { et.into() } else { et.vec_type(n).into() };
            let v = self.b.build_load(lt, p, "").ice()?;
            if let Some(i) = v.as_instruction_value() {
                i.set_alignment(n * ty.bytes()).ice()?;
            }
            for (k, d) in dsts.iter().enumerate() {
                let e = if n == 1 {
                    v.into_int_value()
                } else {
                    self.b.build_extract_element(v.into_vector_value(), self.i32c(k as i64), "").ice()?.into_int_value()
                };
                let rt = self.ty(Ty::int_of_bits(d.ty.class_bits())).into_int_type();
                let e = if e.get_type().get_bit_width() < rt.get_bit_width() { self.b.build_int_z_extend(e, rt, "").ice()? } else { e };
                self.set(*d, e.into())?;
            }
        }
        Ok(())
    }

    fn store(&self, space: Space, ty: MemTy, vals: &[V], addr: &Addr, pred: Option<V>) -> Res<()> {
        if let Some(p) = pred {
            return self.predicated(p, space, ty, vals, addr, false);
        }
        let p = self.ptr(space, addr)?;
        let et = self.int_t(8 * ty.bytes());
        let n = vals.len() as u32;
        let mut elems = vec![];
        for v in vals {
            let x = self.cast_to(self.get(*v)?, self.ty(Ty::int_of_bits(v.ty.class_bits())))?.into_int_value();
            let x = if x.get_type().get_bit_width() > et.get_bit_width() { self.b.build_int_truncate(x, et, "").ice()? } else { x };
            elems.push(x);
        }
        let value: BasicValueEnum = if n == 1 {
            elems[0].into()
        } else {
            let mut vec = et.vec_type(n).get_undef();
            for (k, e) in elems.iter().enumerate() {
                vec = self.b.build_insert_element(vec, *e, self.i32c(k as i64), "").ice()?;
            }
            vec.into()
        };
        let st = self.b.build_store(p, value).ice()?;
        st.set_alignment(n * ty.bytes()).ice()?;
        Ok(())
    }

    /// A predicated access as the PTX instruction itself (`@p ld`/`@p st`): LLVM has no
    /// predicated load or store, and a branch around each one (a block per element on an edge
    /// path) costs the straight-line scheduling ptxas gives predicated code. A load's
    /// destinations are tied to their old values, which they keep where `p` is false.
    fn predicated(&self, p: V, space: Space, ty: MemTy, regs: &[V], addr: &Addr, load: bool) -> Res<()> {
        let n = regs.len();
        let a = if space == Space::Shared { "r" } else { "l" };
        let c = match ty.bytes() {
            1 | 2 => "h",
            4 => "r",
            _ => "l",
        };
        let vt = self.ty(match c {
            "h" => Ty::I16,
            "r" => Ty::I32,
            _ => Ty::I64,
        });
        let v = if n > 1 { format!(".v{n}") } else { String::new() };
        let names = |first: usize| -> String {
            let l: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
            if n == 1 { l[0].clone() } else { format!("{{{}}}", l.join(", ")) }
        };
        let off = if addr.offset == 0 { String::new() } else { format!("+{}", addr.offset) };
        let base = self.get(addr.base)?;
        let pred = self.get(p)?;
        if load {
            let text = format!("@${} ld.{}{v}.{} {}, [${}{off}];", n, space.name(), ty.name(), names(0), n + 1);
            let mut cons: Vec<String> = vec![format!("={c}"); n];
            cons.push("b".into());
            cons.push(a.into());
            cons.extend((0..n).map(|i| i.to_string()));
            cons.push("~{memory}".into());
            let mut args = vec![pred, base];
            for r in regs {
                args.push(self.cast_to(self.get(*r)?, self.ty(Ty::int_of_bits(r.ty.class_bits())))?);
            }
            let args =
                args.into_iter().enumerate().map(|(i, x)| if i >= 2 { self.int_to(x, vt) } else { Ok(x) }).collect::<Res<Vec<_>>>()?;
            let outs = self.asm(&text, &cons.join(","), &vec![vt; n], &args)?;
            for (r, o) in regs.iter().zip(outs) {
                let rt = self.ty(Ty::int_of_bits(r.ty.class_bits()));
                self.set(*r, self.int_to(o, rt)?)?;
            }
        } else {
            let ty = if ty == MemTy::U8 { MemTy::B8 } else { ty };
            let text = format!("@$0 st.{}{v}.{} [$1{off}], {};", space.name(), ty.name(), names(2));
            let mut cons = vec!["b".to_string(), a.to_string()];
            cons.extend(std::iter::repeat_n(c.to_string(), n));
            cons.push("~{memory}".into());
            let mut args = vec![pred, base];
            for r in regs {
                let x = self.cast_to(self.get(*r)?, self.ty(Ty::int_of_bits(r.ty.class_bits())))?;
                args.push(self.int_to(x, vt)?);
            }
            self.asm(&text, &cons.join(","), &[], &args)?;
        }
        Ok(())
    }

    /// An integer value truncated or zero-extended to integer type `t`.
    fn int_to(&self, x: BasicValueEnum<'c>, t: BasicTypeEnum<'c>) -> Res<BasicValueEnum<'c>> {
        let (x, t) = (x.into_int_value(), t.into_int_type());
        let (w, tw) = (x.get_type().get_bit_width(), t.get_bit_width());
        Ok(match w.cmp(&tw) {
            std::cmp::Ordering::Equal => x.into(),
            std::cmp::Ordering::Greater => self.b.build_int_truncate(x, t, "").ice()?.into(),
            std::cmp::Ordering::Less => self.b.build_int_z_extend(x, t, "").ice()?.into(),
        })
    }

    /// A machine-IR `Asm`: the inputs in the types their constraints name, the outputs written
    /// to their registers.
    fn inline(&self, template: &str, constraints: &str, outputs: &[V], inputs: &[V]) -> Res<()> {
        let mut out_tys = vec![];
        let mut args = vec![];
        let mut ii = 0;
        for c in constraints.split(',').map(str::trim) {
            if c.is_empty() || c.starts_with('~') {
                continue;
            }
            if let Some(o) = c.strip_prefix('=') {
                out_tys.push(self.letter_ty(o.trim_start_matches('&'))?);
                continue;
            }
            let v = *inputs.get(ii).ok_or("inline asm with fewer inputs than constraints")?;
            ii += 1;
            let t = match c.parse::<usize>() {
                Ok(k) => *out_tys.get(k).ok_or("inline asm tied to a missing output")?,
                Err(_) => self.letter_ty(c)?,
            };
            args.push(self.cast_to(self.get(v)?, t)?);
        }
        let template = template.replace("$$", "$$$$");
        let vals = self.asm(&template, constraints, &out_tys, &args)?;
        for (d, v) in outputs.iter().zip(vals) {
            self.set(*d, v)?;
        }
        Ok(())
    }

    fn letter_ty(&self, c: &str) -> Res<BasicTypeEnum<'c>> {
        Ok(match c {
            "r" => self.ctx.i32_type().into(),
            "l" => self.ctx.i64_type().into(),
            "h" => self.ctx.i16_type().into(),
            "f" => self.ctx.f32_type().into(),
            "d" => self.ctx.f64_type().into(),
            other => return Err(format!("inline asm constraint `{other}`")),
        })
    }
}

/// The LLVM intrinsic suffix of a float type.
fn fsuffix(t: Ty) -> &'static str {
    match t {
        Ty::F16 => "f16",
        Ty::BF16 => "bf16",
        Ty::F64 => "f64",
        _ => "f32",
    }
}

/// The inline-asm constraint letter of a register type.
fn constraint(t: Ty) -> &'static str {
    match t {
        Ty::F32 => "f",
        Ty::F64 => "d",
        t => match t.class_bits() {
            16 => "h",
            32 => "r",
            _ => "l",
        },
    }
}

/// The type an inline-asm operand of a register type is passed as (16-bit floats as `i16`).
fn asm_ty(t: Ty) -> Ty {
    match t {
        Ty::F16 | Ty::BF16 | Ty::I8 => Ty::I16,
        t => t,
    }
}

fn reg_name(r: SReg) -> String {
    r.name()
}

/// The reachable blocks of `f` in reverse post-order.
fn rpo(f: &Function) -> Vec<usize> {
    let n = f.blocks.len();
    let mut seen = vec![false; n];
    let mut post = vec![];
    // Iterative DFS: (block, next successor to visit).
    let mut stack = vec![(0usize, 0usize)];
    if n == 0 {
        return vec![];
    }
    seen[0] = true;
    while let Some((b, k)) = stack.pop() {
        let succ = f.successors(Blk(b));
        if k < succ.len() {
            stack.push((b, k + 1));
            let s = succ[k].0;
            if s < n && !seen[s] {
                seen[s] = true;
                stack.push((s, 0));
            }
        } else {
            post.push(b);
        }
    }
    post.reverse();
    post
}
