//! Timing kernels on the GPU, and the `tessera bench` command.
//!
//! [`time_kernel`] follows `triton.testing.do_bench`, so that figures compare with the anchors:
//! it estimates the time of one launch from five, warms up for `warmup_ms`, then times
//! `rep_ms` worth of launches (at least [`TimingOptions::min_reps`]), each between its own pair
//! of CUDA events, with the L2 cache flushed (a 256 MiB buffer overwritten) before each, and
//! reports the median. [`launch_overhead`] measures the host side of a launch: `n` launches back
//! to back, then one wait, divided by `n` (the way the host anchors measured Triton).
//!
//! `tessera bench` never times on zeros: every input tensor it makes is random (uniform in
//! [-1, 1) for floats), outputs it makes start as NaN (all-ones bytes), and after the first launch
//! it counts the output elements still NaN. `--out` saves what that first launch wrote, so a
//! harness can check correctness on the same inputs it then times.

use crate::cache::{Cache, Cached};
use crate::device::{DeviceArg, DeviceTensor, LoadedKernel, Runtime, RuntimeError};
use crate::exec;
use crate::npy;
use crate::tune::{self, Progress, TuneRequest};
use cudarc::driver::sys::CUevent_flags;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;
use tessera_compiler::interp::Arg;
use tessera_compiler::tir::ParamKind;
use tessera_compiler::{DType, HostTensor, Options, Scalar, Source};

/// How to time a kernel (the defaults are `do_bench`'s).
#[derive(Clone, Debug)]
pub struct TimingOptions {
    /// Warm-up time (converted to a number of launches from the estimate).
    pub warmup_ms: f64,
    /// Measured time (converted to a number of launches from the estimate).
    pub rep_ms: f64,
    /// Fixed numbers of warm-up and measured launches, instead of the times.
    pub warmup: Option<usize>,
    pub reps: Option<usize>,
    pub min_reps: usize,
    pub max_reps: usize,
    /// Overwrite a 256 MiB buffer before each measured launch, so that no launch finds the
    /// previous one's data in L2.
    pub flush_l2: bool,
}

impl Default for TimingOptions {
    fn default() -> Self {
        TimingOptions { warmup_ms: 25.0, rep_ms: 100.0, warmup: None, reps: None, min_reps: 5, max_reps: 2000, flush_l2: true }
    }
}

/// Times of one kernel, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timing {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub reps: usize,
    pub warmup: usize,
}

/// Times `k` on `args` with CUDA events (see the module documentation).
pub fn time_kernel(rt: &Runtime, k: &LoadedKernel, args: &[DeviceArg<'_>], o: &TimingOptions) -> Result<Timing, RuntimeError> {
    let ctx = rt.context();
    let stream = rt.stream();
    let event = || crate::device::guarded(|| "creating a CUDA event".into(), || ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)));
    let record = |e: &cudarc::driver::CudaEvent| crate::device::guarded(|| "recording a CUDA event".into(), || e.record(stream));
    let elapsed = |a: &cudarc::driver::CudaEvent, b: &cudarc::driver::CudaEvent| {
        crate::device::guarded(|| "reading a CUDA event".into(), || a.elapsed_ms(b)).map(f64::from)
    };
    let mut flush = if o.flush_l2 { Some(rt.alloc_filled(DType::U8, &[256 << 20], 0)?) } else { None };
    let mut flush_l2 = |rt: &Runtime| match flush.as_mut() {
        Some(f) => rt.fill(f, 0),
        None => Ok(()),
    };
    // Estimate from five launches.
    let (s, e) = (event()?, event()?);
    record(&s)?;
    for _ in 0..5 {
        flush_l2(rt)?;
        rt.launch_async(k, args)?;
    }
    record(&e)?;
    rt.synchronize()?;
    let estimate = (elapsed(&s, &e)? / 5.0).max(1e-4);
    let warmup = o.warmup.unwrap_or_else(|| ((o.warmup_ms / estimate) as usize).max(1));
    let reps = o.reps.unwrap_or_else(|| ((o.rep_ms / estimate) as usize).clamp(o.min_reps.max(1), o.max_reps.max(1)));
    for _ in 0..warmup {
        rt.launch_async(k, args)?;
    }
    let mut marks = Vec::with_capacity(reps);
    for _ in 0..reps {
        let (s, e) = (event()?, event()?);
        flush_l2(rt)?;
        record(&s)?;
        rt.launch_async(k, args)?;
        record(&e)?;
        marks.push((s, e));
    }
    crate::device::guarded(|| format!("kernel `{}` failed", k.meta.name), || stream.synchronize())?;
    let mut times = marks.iter().map(|(s, e)| elapsed(s, e)).collect::<Result<Vec<f64>, _>>()?;
    times.sort_by(|a, b| a.total_cmp(b));
    let n = times.len();
    let median = if n % 2 == 1 { times[n / 2] } else { (times[n / 2 - 1] + times[n / 2]) / 2.0 };
    Ok(Timing { median_ms: median, min_ms: times[0], max_ms: times[n - 1], mean_ms: times.iter().sum::<f64>() / n as f64, reps: n, warmup })
}

/// The host cost of a launch.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LaunchOverhead {
    pub launches: usize,
    /// Wall time of `launches` launches and one final wait, per launch (µs).
    pub per_launch_us: f64,
    /// Wall time of the launch calls alone, per launch (µs).
    pub submit_us: f64,
    /// The same launches straight through `cuLaunchKernel` with the arguments packed once, then
    /// one wait, per launch (µs): the driver's floor, for comparison.
    pub driver_us: f64,
}

/// Launches `k` `n` times back to back (after 100 warm-up launches) and reports the time per
/// launch; every launch goes through the full checked path. Then the same through the bare
/// driver call, for the floor.
pub fn launch_overhead(rt: &Runtime, k: &LoadedKernel, args: &[DeviceArg<'_>], n: usize) -> Result<LaunchOverhead, RuntimeError> {
    for _ in 0..100 {
        rt.launch_async(k, args)?;
    }
    rt.synchronize()?;
    let n = n.max(1);
    let t0 = Instant::now();
    for _ in 0..n {
        rt.launch_async(k, args)?;
    }
    let submit = t0.elapsed();
    rt.synchronize()?;
    let total = t0.elapsed();
    let (_, driver) = rt.driver_launch_floor(k, args, n)?;
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
    Ok(LaunchOverhead { launches: n, per_launch_us: per(total), submit_us: per(submit), driver_us: per(driver) })
}

/// The arguments of `tessera bench` besides the build options.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// The `.tile` file.
    pub file: PathBuf,
    /// An argument: `NAME=FILE.npy`, `NAME=random`, or `NAME=SCALAR`. Tensors not given are
    /// random (inputs) or NaN-poisoned (outputs); scalars must be given.
    #[arg(long = "arg", value_name = "NAME=VALUE")]
    pub args: Vec<String>,
    /// Sizes of dimension symbols: `M=4096,N=4096,K=4096`.
    #[arg(long, value_delimiter = ',', value_name = "SYM=SIZE")]
    pub dims: Vec<String>,
    /// Save a tensor after the first launch: `NAME=FILE.npy` (repeatable).
    #[arg(long = "out", value_name = "NAME=FILE")]
    pub outs: Vec<String>,
    /// How `--out` writes a bf16 tensor: `f32` (`<f4`, exact) or `ml-dtypes` (`<V2`, the bits, as
    /// NumPy saves ml_dtypes' bfloat16).
    #[arg(long, value_enum, default_value = "f32")]
    pub bf16_npy: npy::Bf16Npy,
    /// Autotune over the kernel's `#[tune]` space first (the winner is cached) and print the
    /// table of configurations tried.
    #[arg(long)]
    pub tune: bool,
    /// With `--tune`: tune again even if a winner is cached.
    #[arg(long)]
    pub retune: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Warm-up time in ms.
    #[arg(long, default_value_t = 25.0)]
    pub warmup_ms: f64,
    /// Measured time in ms.
    #[arg(long, default_value_t = 100.0)]
    pub rep_ms: f64,
    /// A fixed number of measured launches (instead of `--rep-ms`).
    #[arg(long)]
    pub reps: Option<usize>,
    /// Do not flush L2 between measured launches.
    #[arg(long)]
    pub no_flush: bool,
    /// Also measure the launch overhead: this many launches back to back.
    #[arg(long, value_name = "N")]
    pub launches: Option<usize>,
    /// Also run the interpreter on the same inputs and compare the outputs (small sizes only).
    #[arg(long)]
    pub check: bool,
    /// Do not read or write the compile cache on disk.
    #[arg(long)]
    pub no_cache: bool,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Everything `tessera bench --json` prints.
#[derive(Debug, Serialize)]
struct Report {
    file: String,
    kernel: String,
    device: String,
    compute_capability: String,
    dims: Vec<(String, i64)>,
    consts: Vec<(String, String)>,
    config: Option<String>,
    grid: [u32; 3],
    threads: u32,
    shared_bytes: u32,
    registers: i32,
    local_bytes: i32,
    cache: String,
    compile_ms: f64,
    timing: Timing,
    l2_flushed: bool,
    min_bytes: u64,
    gbps: f64,
    unwritten: Vec<(String, usize)>,
    launch_overhead: Option<LaunchOverhead>,
    tune: Option<tune::Tuned>,
    check: Option<Vec<(String, bool, f64)>>,
}

/// `tessera bench`: compiles (through the cache), optionally tunes, checks one launch, times.
pub fn run(a: &BenchArgs, opts: Options) -> Result<(), String> {
    let src = Source::from_file(&a.file).map_err(|e| format!("error: cannot read `{}`: {e}", a.file.display()))?;
    let cache = if a.no_cache { Cache::in_memory() } else { Cache::from_env() };
    let built = cache.get_or_compile(&src, &opts).map_err(|d| d.render())?;
    for n in &built.notes {
        eprintln!("{n}");
    }
    let art = match (&opts.kernel, built.artifacts.kernels.as_slice()) {
        (_, [k]) => k.clone(),
        (Some(name), ks) => ks.iter().find(|k| &k.meta.name == name).cloned().ok_or_else(|| format!("error: no kernel `{name}`"))?,
        (None, ks) => {
            let names: Vec<&str> = ks.iter().map(|k| k.meta.name.as_str()).collect();
            return Err(format!(
                "error: `{}` has {} kernels; choose one with `--kernel` ({})",
                a.file.display(),
                ks.len(),
                names.join(", ")
            ));
        }
    };
    let outs = exec::out_files(&art.meta, &a.outs)?;
    let flags = exec::ArgFlags { args: &a.args, dims: &a.dims, seed: a.seed };
    let (host, fresh) = exec::host_args(&art.meta, &flags, exec::Inputs::Bench)?;
    let rt = Runtime::new().map_err(|e| format!("error: `tessera bench` needs a GPU: {e}"))?;
    let mut dev: Vec<Option<DeviceTensor>> = vec![];
    for (arg, &f) in host.iter().zip(&fresh) {
        dev.push(match arg {
            Arg::Tensor(t) if f => Some(rt.alloc_filled(t.dtype, &t.shape, 0xff).map_err(|e| format!("error: {e}"))?),
            Arg::Tensor(t) => Some(rt.upload(t).map_err(|e| format!("error: {e}"))?),
            Arg::Scalar(_) => None,
        });
    }
    fn device_args<'a>(host: &[Arg], dev: &'a [Option<DeviceTensor>]) -> Vec<DeviceArg<'a>> {
        host.iter()
            .zip(dev)
            .map(|(h, d)| match (h, d) {
                (_, Some(t)) => DeviceArg::Tensor(t),
                (Arg::Scalar(s), None) => DeviceArg::Scalar(*s),
                (Arg::Tensor(_), None) => DeviceArg::Scalar(Scalar::Int(0)),
            })
            .collect()
    }
    let kernel_name = art.meta.name.clone();
    let timing_opts =
        TimingOptions { warmup_ms: a.warmup_ms, rep_ms: a.rep_ms, reps: a.reps, flush_l2: !a.no_flush, ..TimingOptions::default() };

    // Tuning picks the build to time.
    let mut tuned = None;
    let (art, cache_state, compile_ms) = if a.tune {
        let base = Options { kernel: Some(kernel_name.clone()), ..opts.clone() };
        let req = TuneRequest {
            src: &src,
            opts: &base,
            kernel: &kernel_name,
            meta: &art.meta,
            timing: TimingOptions { warmup_ms: 10.0, rep_ms: 40.0, min_reps: 3, flush_l2: !a.no_flush, ..TimingOptions::default() },
            retune: a.retune,
        };
        let mut notes = vec![];
        let t = {
            let args = device_args(&host, &dev);
            tune::tune(&rt, &cache, &req, &args, &mut notes, &mut progress_line).map_err(|e| format!("error: {e}"))?
        };
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
        for n in &notes {
            eprintln!("{n}");
        }
        if !a.json {
            print!("{}", t.table());
        }
        let best = t.best().config.apply(&base);
        let c: Cached = cache.get_or_compile(&src, &best).map_err(|d| d.render())?;
        let art = c.artifacts.kernel(&kernel_name).cloned().ok_or_else(|| format!("error: the tuned build lost kernel `{kernel_name}`"))?;
        tuned = Some(t);
        (art, c.hit.name().to_string(), c.millis)
    } else {
        (art, built.hit.name().to_string(), built.millis)
    };

    let k = rt.load(&art.ptx, &art.meta).map_err(|e| format!("error: {e}"))?;
    // Outputs start poisoned (again, if tuning ran on them), the first launch is checked.
    for (d, &f) in dev.iter_mut().zip(&fresh) {
        if let (Some(t), true) = (d.as_mut(), f) {
            rt.fill(t, 0xff).map_err(|e| format!("error: {e}"))?;
        }
    }
    let args = device_args(&host, &dev);
    let grid = {
        let infos: Vec<tessera_compiler::ArgInfo> = host
            .iter()
            .map(|h| match h {
                Arg::Tensor(t) => tessera_compiler::ArgInfo::Tensor { dtype: t.dtype, shape: t.shape.clone() },
                Arg::Scalar(s) => tessera_compiler::ArgInfo::Scalar(*s),
            })
            .collect();
        art.meta.bind(&infos).map_err(|e| format!("error: cannot launch `{kernel_name}`: {e}"))?
    };
    rt.launch(&k, &args).map_err(|e| format!("error: {e}"))?;

    // Every output element written? Save what was asked for.
    let mut unwritten = vec![];
    let mut outputs: Vec<Option<HostTensor>> = vec![None; host.len()];
    for (i, p) in art.meta.params.iter().enumerate() {
        let wanted = outs.iter().any(|(j, _)| *j == i);
        if let (ParamKind::Tensor { mutable: true, dtype, .. }, Some(d)) = (&p.kind, &dev[i])
            && (fresh[i] || wanted || a.check)
        {
            let t = rt.download(d).map_err(|e| format!("error: {e}"))?;
            if fresh[i] && dtype.is_float() {
                let nan = (0..t.numel()).filter(|&j| t.get_f64(j).is_nan()).count();
                if nan > 0 {
                    unwritten.push((p.name.clone(), nan));
                }
            }
            outputs[i] = Some(t);
        } else if wanted && let Some(d) = &dev[i] {
            outputs[i] = Some(rt.download(d).map_err(|e| format!("error: {e}"))?);
        }
    }
    for (i, path) in outs {
        if let Some(t) = &outputs[i] {
            npy::write_npy_with(path, t, a.bf16_npy).map_err(|e| format!("error: {e}"))?;
        }
    }
    for (n, c) in &unwritten {
        eprintln!("warning: {c} elements of `{n}` are still NaN after the first launch (not written, or NaN results)");
    }
    let check = if a.check { Some(check_against_interpreter(&src, &opts, &tuned, &kernel_name, &host, &outputs)?) } else { None };

    let timing = time_kernel(&rt, &k, &args, &timing_opts).map_err(|e| format!("error: {e}"))?;
    let overhead = match a.launches {
        Some(n) => Some(launch_overhead(&rt, &k, &args, n).map_err(|e| format!("error: {e}"))?),
        None => None,
    };
    let min_bytes: u64 = host
        .iter()
        .map(|h| match h {
            Arg::Tensor(t) => t.bytes.len() as u64,
            Arg::Scalar(_) => 0,
        })
        .sum();
    let report = Report {
        file: a.file.display().to_string(),
        kernel: kernel_name.clone(),
        device: rt.device_name().to_string(),
        compute_capability: format!("{}.{}", rt.compute_capability().0, rt.compute_capability().1),
        dims: art.meta.dims.iter().filter_map(|d| grid.lookup(d).map(|v| (d.clone(), v))).collect(),
        consts: art.meta.consts.iter().map(|(n, v)| (n.clone(), v.to_string())).collect(),
        config: tuned.as_ref().map(|t| t.best().config.to_string()),
        grid: grid.grid,
        threads: art.meta.threads,
        shared_bytes: art.meta.shared_bytes,
        registers: k.registers(),
        local_bytes: k.local_bytes(),
        cache: cache_state,
        compile_ms,
        gbps: min_bytes as f64 / (timing.median_ms * 1e6),
        timing,
        l2_flushed: !a.no_flush,
        min_bytes,
        unwritten,
        launch_overhead: overhead,
        tune: tuned,
        check,
    };
    if let Some(w) = k.spill_warning() {
        eprintln!("{w}");
    }
    if a.json {
        println!("{}", serde_json::to_string(&report).map_err(|e| format!("error: {e}"))?);
    } else {
        print_report(&report);
    }
    if report.check.as_ref().is_some_and(|c| c.iter().any(|(_, ok, _)| !ok)) {
        return Err(format!("error: `{kernel_name}` differs between the GPU and the interpreter"));
    }
    Ok(())
}

fn check_against_interpreter(
    src: &Source,
    opts: &Options,
    tuned: &Option<tune::Tuned>,
    kernel: &str,
    host: &[Arg],
    outputs: &[Option<HostTensor>],
) -> Result<Vec<(String, bool, f64)>, String> {
    let o = match tuned {
        Some(t) => t.best().config.apply(&Options { kernel: Some(kernel.into()), ..opts.clone() }),
        None => Options { kernel: Some(kernel.into()), ..opts.clone() },
    };
    let m = tessera_compiler::compile(src, &o).map_err(|d| d.render())?;
    let ck = m.kernel(kernel).ok_or_else(|| format!("error: no kernel `{kernel}`"))?;
    let mut args = host.to_vec();
    exec::run_interp(ck, &mut args).map_err(|e| format!("error: the interpreter failed: {e}"))?;
    let mut out = vec![];
    for (i, p) in ck.meta.params.iter().enumerate() {
        if let (ParamKind::Tensor { mutable: true, .. }, Arg::Tensor(want), Some(got)) = (&p.kind, &args[i], &outputs[i]) {
            let c = exec::compare(got, want);
            out.push((p.name.clone(), c.ok(), c.max_abs));
        }
    }
    Ok(out)
}

fn print_report(r: &Report) {
    let dims: Vec<String> = r.dims.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let consts: Vec<String> = r.consts.iter().map(|(n, v)| format!("{n}={v}")).collect();
    println!("bench `{}` ({}) on {} (sm_{})", r.kernel, r.file, r.device, r.compute_capability.replace('.', ""));
    println!(
        "  dims {}; consts {}; grid {:?}, {} threads, {} bytes shared, {} registers{}",
        if dims.is_empty() { "-".into() } else { dims.join(" ") },
        if consts.is_empty() { "-".into() } else { consts.join(" ") },
        r.grid,
        r.threads,
        r.shared_bytes,
        r.registers,
        if r.local_bytes > 0 { format!(", {} bytes local (spills)", r.local_bytes) } else { String::new() }
    );
    println!("  build: {:.1} ms (cache {})", r.compile_ms, r.cache);
    let t = &r.timing;
    println!(
        "  time: median {:.4} ms (min {:.4}, max {:.4}, mean {:.4}) over {} launches after {} warm-up; CUDA events{}",
        t.median_ms,
        t.min_ms,
        t.max_ms,
        t.mean_ms,
        t.reps,
        t.warmup,
        if r.l2_flushed { ", L2 flushed before each" } else { "" }
    );
    println!("  tensors: {:.1} MB in and out once → {:.1} GB/s", r.min_bytes as f64 / 1e6, r.gbps);
    if let Some(o) = &r.launch_overhead {
        println!(
            "  launch: {} launches, {:.2} µs per launch ({:.2} µs to submit; bare cuLaunchKernel {:.2} µs)",
            o.launches, o.per_launch_us, o.submit_us, o.driver_us
        );
    }
    if let Some(c) = &r.check {
        for (n, ok, err) in c {
            println!("  check {n}: {} (max abs err {err:.3e})", if *ok { "ok" } else { "MISMATCH" });
        }
    }
}

/// The tuning progress line on stderr (rewritten in place on a terminal, one line per step
/// otherwise).
fn progress_line(p: &Progress) {
    let best = p.best.as_ref().map(|(ms, c)| format!(", best {ms:.4} ms ({c})")).unwrap_or_default();
    let line = format!("tuning: compiled {}/{}, timed {}/{}{best}", p.compiled, p.total, p.timed, p.total);
    let mut err = std::io::stderr();
    if err.is_terminal() {
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    } else {
        let _ = writeln!(err, "{line}");
    }
}
