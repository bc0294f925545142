//! `tessera`: the command-line compiler and runner of `.tile` kernels.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tessera_compiler::interp::{Arg, RunOptions};
use tessera_compiler::tir::ParamKind;
use tessera_compiler::{ConstValue, Options, Source, Target};
use tessera_runtime::cache::{Artifacts, Cache};
use tessera_runtime::exec;
use tessera_runtime::{Runtime, npy};

#[derive(Parser)]
#[command(name = "tessera", version, about = "Compile and run .tile GPU kernels")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Emit {
    Tir,
    Lir,
    Mir,
    Llvm,
    Ptx,
    Meta,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Gpu,
    Interp,
    Auto,
}

#[derive(clap::Args)]
struct BuildOpts {
    /// Set a `const` parameter: `--const BM=64` (repeatable).
    #[arg(long = "const", value_name = "NAME=VALUE")]
    consts: Vec<String>,
    /// Target architecture: sm_90a (default) or sm_80.
    #[arg(long, default_value = "sm_90a")]
    target: String,
    /// Only this kernel of the file.
    #[arg(long)]
    kernel: Option<String>,
    /// Override `#[warps]`.
    #[arg(long)]
    warps: Option<u32>,
    /// Override `#[stages]` (the software-pipelining depth of loops feeding tensor cores).
    #[arg(long)]
    stages: Option<u32>,
    /// Override `#[blocks_per_sm]` (blocks that must fit on a multiprocessor together: caps the
    /// registers per thread)
    #[arg(long)]
    blocks_per_sm: Option<u32>,
    /// Override `#[warp_specialize]` (`true` or `false`: a producer warpgroup issues the main
    /// loop's bulk tensor copies, sm_90a)
    #[arg(long)]
    warp_specialize: Option<bool>,
    /// A checked build: `assert`s stay in the GPU code (the interpreter always checks them).
    #[arg(long)]
    checked: bool,
    /// Let f32 `dot`s run on the tensor cores as tf32 (about 1e-3 relative error).
    #[arg(long)]
    tf32: bool,
    /// The emitter: llvm (LLVM's NVPTX back end, the default) or ptx (the machine IR printed
    /// directly).
    #[arg(long, value_name = "llvm|ptx")]
    codegen: Option<String>,
    /// The LLVM pass pipeline of the llvm emitter (`opt -passes=` syntax; default: the one
    /// measured best, see docs/architecture.md).
    #[arg(long, value_name = "PIPELINE")]
    llvm_passes: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Parse and type-check a file; print its diagnostics.
    Check {
        file: PathBuf,
        #[command(flatten)]
        opts: BuildOpts,
    },
    /// Compile a file and print (or write) the tile IR, thread IR, PTX or metadata of each kernel.
    Build {
        file: PathBuf,
        /// What to emit: tir, lir, mir (the machine IR), llvm (the LLVM IR of the llvm emitter),
        /// ptx, meta (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "ptx")]
        emit: Vec<Emit>,
        /// Write `KERNEL.EXT` files into this directory instead of printing.
        #[arg(short = 'o', long)]
        out_dir: Option<PathBuf>,
        /// Print the IR after a stage to stderr: sema, a tile-IR pass (dce, …), lower, a
        /// thread-IR pass (order_memory, defer_wgmma_wait, hoist_loads, sink_wgmma_wait, drop_barriers, defer_bulk_wait), codegen (the machine IR), emit (the PTX)
        /// (repeatable, or comma-separated).
        #[arg(long, value_delimiter = ',', value_name = "STAGE")]
        dump_after: Vec<String>,
        /// Print the IR after every stage to stderr.
        #[arg(long)]
        dump_all: bool,
        /// Do not read or write the compile cache on disk.
        #[arg(long)]
        no_cache: bool,
        /// Print the build time and whether the compile cache was hit, to stderr.
        #[arg(long)]
        time: bool,
        /// Assemble each kernel with ptxas (`$TESSERA_PTXAS`, else `ptxas` on the PATH) and warn
        /// when its registers spill.
        #[arg(long)]
        spills: bool,
        #[command(flatten)]
        opts: BuildOpts,
    },
    /// Time a kernel on the GPU (CUDA events, warm-up, median; random inputs), optionally after
    /// autotuning it over its `#[tune]` space.
    Bench {
        #[command(flatten)]
        bench: tessera_runtime::bench::BenchArgs,
        #[command(flatten)]
        opts: BuildOpts,
    },
    /// Run a kernel on the GPU or the interpreter.
    Run {
        file: PathBuf,
        /// An argument: `NAME=FILE.npy`, `NAME=random`, `NAME=zeros`, or `NAME=SCALAR`.
        #[arg(long = "arg", value_name = "NAME=VALUE")]
        args: Vec<String>,
        /// Sizes of dimension symbols for `random`/`zeros` tensors: `M=257,N=129`.
        #[arg(long, value_delimiter = ',', value_name = "SYM=SIZE")]
        dims: Vec<String>,
        /// Write a tensor after the run: `NAME=FILE.npy` (repeatable).
        #[arg(long = "out", value_name = "NAME=FILE")]
        outs: Vec<String>,
        /// How `--out` writes a bf16 tensor: `f32` (`<f4`, exact) or `ml-dtypes` (`<V2`, the
        /// bits, as NumPy saves ml_dtypes' bfloat16).
        #[arg(long, value_enum, default_value = "f32")]
        bf16_npy: tessera_runtime::Bf16Npy,
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendArg,
        /// Run on both the GPU and the interpreter and compare every written tensor.
        #[arg(long)]
        check: bool,
        /// Seed of the random inputs.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The most programs the interpreter runs in one launch (a larger grid is refused).
        #[arg(long, value_name = "N", default_value_t = tessera_compiler::interp::DEFAULT_MAX_PROGRAMS)]
        interp_max_programs: u64,
        /// Do not check the interpreter's run for races between programs (faster).
        #[arg(long)]
        no_race_check: bool,
        #[command(flatten)]
        opts: BuildOpts,
    },
    /// Run every example kernel on the GPU and on the interpreter, on random inputs at awkward
    /// sizes, and compare (outputs poisoned first). Prints `N passed, N failed`.
    Selftest {
        /// Only the cases whose name contains this text.
        filter: Option<String>,
        /// Run the cases on the interpreter alone (no GPU): checks that every output is written.
        #[arg(long)]
        interp_only: bool,
        /// The emitter: llvm (the default), ptx, or both (every case through each).
        #[arg(long, value_name = "llvm|ptx|both")]
        codegen: Option<String>,
        /// The code's target: sm_90a or sm_80 (the best the GPU runs by default; sm_80 code also
        /// runs on a Hopper GPU, so its path can be checked there).
        #[arg(long, value_name = "sm_90a|sm_80")]
        target: Option<String>,
        /// Build every case with `--warp-specialize true` (a producer warpgroup where a kernel's
        /// loop allows one, sm_90a).
        #[arg(long)]
        warp_specialize: bool,
    },
}

/// An error for the user: printed as is, exit code 1.
struct Fail(String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Fail {
        Fail(e.to_string())
    }
}

fn main() -> ExitCode {
    // Output piped into a reader that stops early (`tessera build … | head`) ends the process
    // quietly, as other command-line tools do, instead of a panic in `print!`.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE at the start of `main`, before any
    // thread exists, is what the C runtime does for every other program.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(msg)) => {
            if !msg.is_empty() {
                eprintln!("{}", msg.trim_end());
            }
            ExitCode::FAILURE
        }
    }
}

fn options(o: &BuildOpts) -> Result<Options, Fail> {
    let target = Target::parse(&o.target).ok_or_else(|| Fail(format!("error: unknown target `{}` (use sm_90a or sm_80)", o.target)))?;
    let mut consts = vec![];
    for c in &o.consts {
        let (n, v) = c.split_once('=').ok_or_else(|| Fail(format!("error: `--const {c}`: expected NAME=VALUE")))?;
        let v = match v.trim() {
            "true" => ConstValue::Bool(true),
            "false" => ConstValue::Bool(false),
            s => ConstValue::Int(s.parse().map_err(|_| Fail(format!("error: `--const {c}`: `{s}` is not an integer or bool")))?),
        };
        consts.push((n.trim().to_string(), v));
    }
    let codegen = match o.codegen.as_deref() {
        None => tessera_compiler::Codegen::default(),
        Some(s) => tessera_compiler::Codegen::parse(s).ok_or_else(|| Fail(format!("error: `--codegen {s}`: use llvm or ptx")))?,
    };
    if !codegen.available() {
        return Err(Fail(format!("error: `--codegen {}`: this build of tessera has no LLVM; use `--codegen ptx`", codegen.name())));
    }
    Ok(Options {
        consts,
        target,
        kernel: o.kernel.clone(),
        warps: o.warps,
        stages: o.stages,
        blocks_per_sm: o.blocks_per_sm,
        warp_specialize: o.warp_specialize,
        verify: cfg!(debug_assertions),
        checked: o.checked,
        tf32: o.tf32,
        codegen,
        keep_llvm_ir: false,
        llvm_passes: o.llvm_passes.clone(),
    })
}

/// The file given on the command line: a regular file (not a FIFO or a device) of at most
/// `MAX_SOURCE_BYTES` of UTF-8 text.
fn read_source(path: &Path) -> Result<Source, Fail> {
    Source::from_file(path).map_err(|e| Fail(format!("error: cannot read `{}`: {e}", path.display())))
}

fn real_main(cli: Cli) -> Result<(), Fail> {
    match cli.cmd {
        Cmd::Check { file, opts } => {
            let src = read_source(&file)?;
            let kernels = tessera_compiler::frontend(&src, &options(&opts)?).map_err(|d| Fail(d.render()))?;
            for k in &kernels {
                println!("ok: kernel `{}` ({} parameters)", k.name, k.params.len());
            }
            Ok(())
        }
        Cmd::Build { file, emit, out_dir, dump_after, dump_all, no_cache, time, spills, opts } => {
            build(&file, &emit, out_dir.as_deref(), &dump_after, dump_all, no_cache, (time, spills), &opts)
        }
        Cmd::Bench { bench, opts } => tessera_runtime::bench::run(&bench, options(&opts)?).map_err(Fail),
        Cmd::Run { file, args, dims, outs, bf16_npy, backend, check, seed, interp_max_programs, no_race_check, opts } => {
            let interp = RunOptions { race_check: !no_race_check, max_programs: interp_max_programs };
            run(&file, &args, &dims, (&outs, bf16_npy), backend, check, seed, &interp, &opts)
        }
        Cmd::Selftest { filter, interp_only, codegen, target, warp_specialize } => {
            let target = match target.as_deref() {
                None => None,
                Some(t) => Some(Target::parse(t).ok_or_else(|| Fail(format!("error: unknown target `{t}` (use sm_90a or sm_80)")))?),
            };
            let codegens = match codegen.as_deref() {
                None => vec![tessera_compiler::Codegen::default()],
                Some("both") => vec![tessera_compiler::Codegen::Llvm, tessera_compiler::Codegen::Ptx],
                Some(s) => vec![
                    tessera_compiler::Codegen::parse(s).ok_or_else(|| Fail(format!("error: `--codegen {s}`: use llvm, ptx or both")))?,
                ],
            };
            if let Some(c) = codegens.iter().find(|c| !c.available()) {
                return Err(Fail(format!("error: `--codegen {}`: this build of tessera has no LLVM", c.name())));
            }
            selftest_result(tessera_runtime::selftest::run(filter.as_deref(), interp_only, &codegens, target, warp_specialize))
        }
    }
}

/// The self-test's exit: its report (ending `N passed, N failed`) is printed; a failed case
/// exits 1 silently.
fn selftest_result(r: Result<bool, String>) -> Result<(), Fail> {
    match r {
        Ok(true) => Ok(()),
        Ok(false) => Err(Fail(String::new())),
        Err(msg) => Err(Fail(msg)),
    }
}

/// Prints the IR after the stages asked for, to stderr.
struct Dumper<'a> {
    after: &'a [String],
    all: bool,
}

impl tessera_compiler::DumpSink for Dumper<'_> {
    fn wants(&self, stage: &str) -> bool {
        self.all || self.after.iter().any(|s| s == stage)
    }

    fn dump(&mut self, kernel: &str, stage: &str, ir: &str) {
        eprintln!("// ----- IR after `{stage}`, kernel `{kernel}` -----\n{}", ir.trim_end());
    }
}

/// `tessera build`: PTX and metadata come from the compile cache; the IR forms and dumps need a
/// compilation (whose PTX and metadata then go into the cache).
#[allow(clippy::too_many_arguments)]
fn build(
    file: &Path,
    emit: &[Emit],
    out_dir: Option<&Path>,
    dump_after: &[String],
    dump_all: bool,
    no_cache: bool,
    (time, spills): (bool, bool),
    opts: &BuildOpts,
) -> Result<(), Fail> {
    let stages = tessera_compiler::dump_stages();
    let ptxas = match spills {
        true => Some(
            tessera_runtime::ptxas::find()
                .ok_or_else(|| Fail("error: `--spills` needs ptxas: set TESSERA_PTXAS or put it on the PATH".into()))?,
        ),
        false => None,
    };
    if let Some(bad) = dump_after.iter().find(|s| !stages.contains(&s.as_str())) {
        return Err(Fail(format!("error: `--dump-after {bad}`: no such stage (stages: {})", stages.join(", "))));
    }
    let src = read_source(file)?;
    let mut o = options(opts)?;
    o.keep_llvm_ir = emit.contains(&Emit::Llvm);
    let cache = if no_cache { Cache::in_memory() } else { Cache::from_env() };
    let needs_ir = dump_all || !dump_after.is_empty() || emit.iter().any(|e| matches!(e, Emit::Tir | Emit::Lir | Emit::Mir | Emit::Llvm));
    let mut module = None;
    let mut sink = Dumper { after: dump_after, all: dump_all };
    let cached = cache
        .get_or_compile_with(&src, &o, || {
            let m = tessera_compiler::compile_with(&src, &o, &mut sink)?;
            let a = Artifacts::from_module(&m);
            module = Some(m);
            Ok(a)
        })
        .map_err(|d| Fail(d.render()))?;
    let stages: Vec<String> = module.iter().flat_map(|m| &m.stage_ms).map(|(s, ms)| format!("{s} {ms:.1} ms")).collect();
    // A cache hit with IR wanted: compile for the IR (the cached PTX is the same).
    if needs_ir && module.is_none() {
        module =
            Some(tessera_compiler::compile_with(&src, &o, &mut Dumper { after: dump_after, all: dump_all }).map_err(|d| Fail(d.render()))?);
    }
    for n in &cached.notes {
        eprintln!("{n}");
    }
    if time {
        eprintln!(
            "built `{}`: {} kernel{} in {:.1} ms (cache {}){}",
            file.display(),
            cached.artifacts.kernels.len(),
            if cached.artifacts.kernels.len() == 1 { "" } else { "s" },
            cached.millis,
            cached.hit.name(),
            if stages.is_empty() { String::new() } else { format!(": {}", stages.join(", ")) }
        );
    }
    if let Some(dir) = out_dir {
        make_out_dir(dir)?;
    }
    for k in &cached.artifacts.kernels {
        if let Some(p) = &ptxas {
            let r = tessera_runtime::ptxas::resources(p, &k.ptx, &k.meta).map_err(|e| Fail(format!("error: {e}")))?;
            match tessera_runtime::device::spill_warning(&k.meta, r.registers, r.spill_bytes) {
                Some(w) => eprintln!("{w}"),
                None => eprintln!("kernel `{}`: {} registers, no spills (ptxas)", k.meta.name, r.registers),
            }
        }
        let compiled = module.as_ref().and_then(|m| m.kernel(&k.meta.name));
        for e in emit {
            let (ext, text) = match (e, compiled) {
                (Emit::Tir, Some(c)) => ("tir", tessera_compiler::tir::print_kernel(&c.tir)),
                (Emit::Lir, Some(c)) => ("lir", tessera_compiler::lir::print_kernel(&c.lir)),
                (Emit::Mir, Some(c)) => ("mir", tessera_compiler::mir::print_module(&c.mir)),
                (Emit::Llvm, Some(c)) => match &c.llvm_ir {
                    Some(ir) => ("ll", ir.clone()),
                    None => return Err(Fail("error: `--emit llvm` needs the llvm emitter (`--codegen llvm`)".into())),
                },
                (Emit::Ptx, _) => ("ptx", k.ptx.clone()),
                (Emit::Meta, _) => ("json", serde_json::to_string_pretty(&k.meta)? + "\n"),
                (_, None) => return Err(Fail(format!("error: internal: no IR for kernel `{}`", k.meta.name))),
            };
            match out_dir {
                Some(dir) => {
                    // Checked for every entry, wherever it came from: a name that is not an
                    // identifier (`../x`, `/abs`) would write outside `dir`.
                    if !tessera_runtime::aot::is_kernel_name(&k.meta.name) {
                        return Err(Fail(format!(
                            "error: refusing to write kernel `{}` into `{}`: its name is not an identifier",
                            k.meta.name.escape_debug(),
                            dir.display()
                        )));
                    }
                    let path = dir.join(format!("{}.{ext}", k.meta.name));
                    std::fs::write(&path, text).map_err(|e| Fail(format!("error: cannot write `{}`: {e}", path.display())))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{text}"),
            }
        }
    }
    Ok(())
}

/// Creates the `-o DIR` folder (and its parents), or says which path is in the way and why.
fn make_out_dir(dir: &Path) -> Result<(), Fail> {
    let why = match std::fs::metadata(dir) {
        Ok(md) if md.is_dir() => return Ok(()),
        Ok(_) => "it exists and is not a folder".to_string(),
        Err(_) => match std::fs::create_dir_all(dir) {
            Ok(()) => return Ok(()),
            // Name the component that is in the way (a file where a folder is needed).
            Err(e) => match dir.ancestors().skip(1).find(|a| std::fs::metadata(a).is_ok_and(|m| !m.is_dir())) {
                Some(file) => format!("`{}` is a file, not a folder", file.display()),
                None => e.to_string(),
            },
        },
    };
    Err(Fail(format!("error: `-o {}`: cannot create the output folder: {why}", dir.display())))
}

#[allow(clippy::too_many_arguments)]
fn run(
    file: &Path,
    args: &[String],
    dims: &[String],
    (outs, bf16_npy): (&[String], tessera_runtime::Bf16Npy),
    backend: BackendArg,
    check: bool,
    seed: u64,
    interp: &RunOptions,
    opts: &BuildOpts,
) -> Result<(), Fail> {
    let src = read_source(file)?;
    let mut o = options(opts)?;
    let module = tessera_compiler::compile(&src, &o).map_err(|d| Fail(d.render()))?;
    let k = match (&o.kernel, module.kernels.as_slice()) {
        (_, [k]) => k,
        (None, ks) => {
            let names: Vec<&str> = ks.iter().map(|k| k.meta.name.as_str()).collect();
            return Err(Fail(format!(
                "error: `{}` has {} kernels; choose one with `--kernel` ({})",
                file.display(),
                ks.len(),
                names.join(", ")
            )));
        }
        (Some(name), ks) => ks.iter().find(|k| &k.meta.name == name).ok_or_else(|| Fail(format!("error: no kernel `{name}`")))?,
    };
    o.kernel = Some(k.meta.name.clone());
    let outs = exec::out_files(&k.meta, outs)?;
    let (mut host_args, fresh) = exec::host_args(&k.meta, &exec::ArgFlags { args, dims, seed }, exec::Inputs::Run)?;
    let infos: Vec<tessera_compiler::ArgInfo> = host_args
        .iter()
        .map(|a| match a {
            Arg::Tensor(t) => tessera_compiler::ArgInfo::Tensor { dtype: t.dtype, shape: t.shape.clone() },
            Arg::Scalar(s) => tessera_compiler::ArgInfo::Scalar(*s),
        })
        .collect();
    let bound = k.meta.bind(&infos).map_err(|e| Fail(format!("error: cannot launch `{}`: {e}", k.meta.name)))?;
    let want_gpu = check || backend != BackendArg::Interp;
    let rt = if want_gpu {
        match Runtime::new() {
            Ok(rt) => Some(rt),
            Err(e) if backend == BackendArg::Auto && !check => {
                eprintln!("note: no GPU ({e}); running on the interpreter");
                None
            }
            Err(e) => return Err(Fail(format!("error: {e}"))),
        }
    } else {
        None
    };
    let grid = bound.grid;
    let start = std::time::Instant::now();
    let result = if check {
        let rt = rt.as_ref().ok_or_else(|| Fail("error: --check needs a GPU".into()))?;
        let mut gpu_args = host_args.clone();
        if let Some(w) = exec::run_gpu(rt, k, &mut gpu_args, &fresh)? {
            eprintln!("{w}");
        }
        exec::run_interp_with(k, &mut host_args, interp)?;
        let mut failed = false;
        for (i, p) in k.meta.params.iter().enumerate() {
            if let (ParamKind::Tensor { mutable: true, .. }, Arg::Tensor(g), Arg::Tensor(w)) = (&p.kind, &gpu_args[i], &host_args[i]) {
                let c = exec::compare(g, w);
                let status = if c.ok() { "ok" } else { "MISMATCH" };
                println!(
                    "check {}: {status}: {} elements, max abs err {:.3e}, max rel err {:.3e} (tolerance {:.0e} + {:.0e}·|x|)",
                    p.name, c.n, c.max_abs, c.max_rel, c.atol, c.rtol
                );
                if let Some((idx, gv, wv)) = c.first_bad {
                    println!("  {} bad elements; first at {:?}: gpu {gv}, interpreter {wv}", c.bad, exec::unravel(&g.shape, idx));
                    failed = true;
                }
            }
        }
        if failed {
            return Err(Fail(format!("error: `{}` differs between the GPU and the interpreter", k.meta.name)));
        }
        "gpu and interpreter"
    } else if let Some(rt) = &rt {
        if let Some(w) = exec::run_gpu(rt, k, &mut host_args, &fresh)? {
            eprintln!("{w}");
        }
        "gpu"
    } else {
        exec::run_interp_with(k, &mut host_args, interp)?;
        "interpreter"
    };
    println!(
        "ran `{}` on the {result}: grid {:?}, {} threads, {:.1} ms",
        k.meta.name,
        grid,
        k.meta.threads,
        start.elapsed().as_secs_f64() * 1e3
    );
    for (i, path) in outs {
        if let Arg::Tensor(t) = &host_args[i] {
            npy::write_npy_with(path, t, bf16_npy).map_err(|e| Fail(format!("error: {e}")))?;
            println!("wrote {} to {path}", k.meta.params[i].name);
        }
    }
    Ok(())
}
