//! The autotuner: every configuration of a kernel's `#[tune]` space compiled in parallel, the
//! ones the device cannot run dropped before launch, the rest timed on the caller's arguments,
//! and the winner cached per kernel, shape bucket and device.
//!
//! A configuration sets the tuned `const` parameters, the warps and the stages
//! ([`TuneConfig::apply`]); each is an ordinary build through the compile cache, so a second
//! tuning run compiles nothing. Before a configuration is launched its dynamic shared memory is
//! checked against the device's opt-in limit and, once loaded, its registers per block against
//! the device's; a configuration over either is dropped with the reason. The others run once
//! (checked), then are timed with CUDA events ([`crate::bench::time_kernel`]). The winner (lowest
//! median) is stored, with the table of every trial, in memory and in the cache folder
//! (`tune-KEY.tsc`, the same checked format as the compile cache), keyed by the source, the base
//! options, the kernel, the shape bucket (each dimension symbol rounded up to a power of two) and
//! the device's name and compute capability.

use crate::bench::{TimingOptions, time_kernel};
use crate::cache::{Cache, CacheKey, KeyHasher};
use crate::device::{DeviceArg, Runtime, RuntimeError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use tessera_compiler::{ArgInfo, ConstValue, KernelMeta, Options, Source, TuneSpace};

/// The most configurations one tuning run tries.
pub const MAX_CONFIGS: usize = 4096;

/// One point of a tuning space.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TuneConfig {
    /// Tuned `const` parameters and their values.
    pub consts: Vec<(String, i64)>,
    pub warps: Option<u32>,
    pub stages: Option<u32>,
    #[serde(default)]
    pub blocks_per_sm: Option<u32>,
    #[serde(default)]
    pub warp_specialize: Option<bool>,
}

impl TuneConfig {
    /// The build options of this configuration: `base` with the tuned consts, warps and stages
    /// replaced.
    pub fn apply(&self, base: &Options) -> Options {
        let mut o = base.clone();
        o.consts.retain(|(n, _)| !self.consts.iter().any(|(c, _)| c == n));
        o.consts.extend(self.consts.iter().map(|(n, v)| (n.clone(), ConstValue::Int(*v))));
        if self.warps.is_some() {
            o.warps = self.warps;
        }
        if self.stages.is_some() {
            o.stages = self.stages;
        }
        if self.blocks_per_sm.is_some() {
            o.blocks_per_sm = self.blocks_per_sm;
        }
        if self.warp_specialize.is_some() {
            o.warp_specialize = self.warp_specialize;
        }
        o
    }
}

impl fmt::Display for TuneConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self.consts.iter().map(|(n, v)| format!("{n}={v}")).collect();
        if let Some(w) = self.warps {
            parts.push(format!("warps={w}"));
        }
        if let Some(s) = self.stages {
            parts.push(format!("stages={s}"));
        }
        if let Some(n) = self.blocks_per_sm {
            parts.push(format!("blocks_per_sm={n}"));
        }
        if let Some(w) = self.warp_specialize {
            parts.push(format!("warp_specialize={w}"));
        }
        f.write_str(&if parts.is_empty() { "default".into() } else { parts.join(" ") })
    }
}

/// Every configuration of `space` (the cartesian product, consts in attribute order, then warps,
/// then stages, then blocks per multiprocessor, then warp specialisation), at most
/// [`MAX_CONFIGS`].
pub fn configs(space: &TuneSpace) -> Vec<TuneConfig> {
    let mut out = vec![TuneConfig::default()];
    let expand = |out: &mut Vec<TuneConfig>, n: usize, set: &dyn Fn(&mut TuneConfig, usize)| {
        if n == 0 {
            return;
        }
        let mut next = Vec::with_capacity(out.len() * n);
        for c in out.iter() {
            for i in 0..n {
                let mut c = c.clone();
                set(&mut c, i);
                next.push(c);
                if next.len() >= MAX_CONFIGS {
                    break;
                }
            }
        }
        *out = next;
    };
    for (name, values) in &space.consts {
        expand(&mut out, values.len(), &|c, i| c.consts.push((name.clone(), values[i])));
    }
    expand(&mut out, space.warps.len(), &|c, i| c.warps = Some(space.warps[i]));
    expand(&mut out, space.stages.len(), &|c, i| c.stages = Some(space.stages[i]));
    expand(&mut out, space.blocks_per_sm.len(), &|c, i| c.blocks_per_sm = Some(space.blocks_per_sm[i]));
    expand(&mut out, space.warp_specialize.len(), &|c, i| c.warp_specialize = Some(space.warp_specialize[i]));
    out.truncate(MAX_CONFIGS);
    out
}

/// What happened to one configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    /// Ran and was timed.
    Timed { median_ms: f64, min_ms: f64 },
    /// Dropped before launch: over the device's shared memory, registers or threads.
    Dropped { reason: String },
    /// Did not compile, load or launch.
    Failed { reason: String },
}

/// One configuration tried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub config: TuneConfig,
    pub compile_ms: f64,
    pub threads: u32,
    pub shared_bytes: u32,
    pub registers: Option<i32>,
    /// Local memory per thread (register spills), when it loaded.
    #[serde(default)]
    pub local_bytes: Option<i32>,
    pub outcome: Outcome,
}

/// The result of tuning a kernel for a shape bucket on a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tuned {
    pub kernel: String,
    pub device: String,
    pub bucket: String,
    pub trials: Vec<Trial>,
    /// Index of the winner in `trials`.
    pub best: usize,
    /// Whether this came from the tuning cache (nothing was run).
    #[serde(skip)]
    pub from_cache: bool,
}

impl Tuned {
    pub fn best(&self) -> &Trial {
        &self.trials[self.best]
    }

    /// The table of every configuration tried, fastest first, then dropped and failed ones.
    pub fn table(&self) -> String {
        let mut order: Vec<usize> = (0..self.trials.len()).collect();
        let key = |t: &Trial| match t.outcome {
            Outcome::Timed { median_ms, .. } => (0, median_ms),
            Outcome::Dropped { .. } => (1, 0.0),
            Outcome::Failed { .. } => (2, 0.0),
        };
        order.sort_by(|&a, &b| key(&self.trials[a]).partial_cmp(&key(&self.trials[b])).unwrap_or(std::cmp::Ordering::Equal));
        let best = match self.best().outcome {
            Outcome::Timed { median_ms, .. } => median_ms,
            _ => f64::NAN,
        };
        let mut s = format!(
            "tuning `{}` for {} on {}: {} configurations{}\n",
            self.kernel,
            self.bucket,
            self.device,
            self.trials.len(),
            if self.from_cache { " (from the tuning cache)" } else { "" }
        );
        s += &format!(
            "  {:<44} {:>8} {:>7} {:>5} {:>10} {:>11} {:>7}  note\n",
            "config", "threads", "shared", "regs", "compile", "median", "vs best"
        );
        for i in order {
            let t = &self.trials[i];
            let regs = t.registers.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
            let (time, ratio, note) = match &t.outcome {
                Outcome::Timed { median_ms, .. } => (
                    format!("{median_ms:.4} ms"),
                    format!("{:.2}x", median_ms / best),
                    [(i == self.best).then(|| "best".to_string()), spills(t.local_bytes)]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                Outcome::Dropped { reason } => ("-".into(), "-".into(), format!("dropped: {reason}")),
                Outcome::Failed { reason } => ("-".into(), "-".into(), format!("failed: {}", reason.lines().next().unwrap_or(""))),
            };
            s += &format!(
                "  {:<44} {:>8} {:>7} {:>5} {:>7.1} ms {:>11} {:>7}  {note}\n",
                t.config.to_string(),
                t.threads,
                t.shared_bytes,
                regs,
                t.compile_ms,
                time,
                ratio
            );
        }
        s
    }
}

/// The tuner's note for a configuration whose registers spilled.
fn spills(local_bytes: Option<i32>) -> Option<String> {
    local_bytes.filter(|&b| b > 0).map(|b| format!("spills {b} bytes/thread"))
}

/// Why tuning could not pick a configuration.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error("kernel `{0}` has no `#[tune(...)]` space")]
    NoSpace(String),
    #[error("{0}")]
    Compile(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("no configuration of `{kernel}` ran:\n{table}")]
    NoneRan { kernel: String, table: String },
}

/// Where a tuning run is (for a progress line).
#[derive(Clone, Debug)]
pub struct Progress {
    pub total: usize,
    pub compiled: usize,
    pub timed: usize,
    /// The fastest so far: its median and configuration.
    pub best: Option<(f64, String)>,
}

/// What to tune.
#[derive(Clone, Debug)]
pub struct TuneRequest<'a> {
    pub src: &'a Source,
    /// The base options (`kernel` names the kernel to tune).
    pub opts: &'a Options,
    pub kernel: &'a str,
    /// The kernel's metadata with the base options (its `tune` space, its parameters).
    pub meta: &'a KernelMeta,
    pub timing: TimingOptions,
    /// Tune again even when the tuning cache has a winner.
    pub retune: bool,
}

/// The shape bucket of a launch: each dimension symbol rounded up to a power of two.
pub fn bucket(meta: &KernelMeta, args: &[DeviceArg<'_>]) -> Result<String, RuntimeError> {
    let infos: Vec<ArgInfo> = args
        .iter()
        .map(|a| match a {
            DeviceArg::Tensor(t) => ArgInfo::Tensor { dtype: t.dtype, shape: t.shape.clone() },
            DeviceArg::View(v) => ArgInfo::Tensor { dtype: v.dtype(), shape: v.shape().to_vec() },
            DeviceArg::External(t) => ArgInfo::Tensor { dtype: t.dtype(), shape: t.shape().to_vec() },
            DeviceArg::Scalar(s) => ArgInfo::Scalar(*s),
        })
        .collect();
    let bound = meta.bind(&infos).map_err(|e| RuntimeError::Bind(format!("kernel `{}`: {e}", meta.name)))?;
    let dims = KernelMeta::dims_of(&meta.params);
    let parts: Vec<String> =
        dims.iter().map(|d| format!("{d}<={}", bound.lookup(d).unwrap_or(0).max(1).unsigned_abs().next_power_of_two())).collect();
    Ok(if parts.is_empty() { "any shape".into() } else { parts.join(",") })
}

/// The key of a tuning result (`None` when the source's imports cannot be read: not cached).
fn tune_key(req: &TuneRequest<'_>, bucket: &str, rt: &Runtime) -> Option<CacheKey> {
    let mut h = KeyHasher::new("tune");
    h.field(&CacheKey::of(req.src, req.opts)?.hex());
    h.field(req.kernel);
    h.field(bucket);
    h.field(rt.device_name());
    h.field(&format!("{:?}", rt.compute_capability()));
    Some(h.finish())
}

fn memory() -> &'static Mutex<HashMap<CacheKey, Tuned>> {
    static MEM: OnceLock<Mutex<HashMap<CacheKey, Tuned>>> = OnceLock::new();
    MEM.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Tunes `req.kernel` on `args` (or returns the cached winner). `notes` collects the cache's
/// notes and one line per configuration dropped before launch; `progress` is called as
/// configurations compile and run.
pub fn tune(
    rt: &Runtime,
    cache: &Cache,
    req: &TuneRequest<'_>,
    args: &[DeviceArg<'_>],
    notes: &mut Vec<String>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Tuned, TuneError> {
    let space = &req.meta.tune;
    if space.is_empty() {
        return Err(TuneError::NoSpace(req.kernel.into()));
    }
    let bucket = bucket(req.meta, args)?;
    let key = tune_key(req, &bucket, rt);
    let name = key.map(|k| format!("tune-{}.tsc", k.hex()));
    if !req.retune
        && let (Some(key), Some(name)) = (&key, &name)
    {
        if let Some(t) = memory().lock().unwrap_or_else(|e| e.into_inner()).get(key) {
            return Ok(Tuned { from_cache: true, ..t.clone() });
        }
        if let Some(payload) = cache.read_file(name, "tune", key, notes) {
            match serde_json::from_slice::<Tuned>(&payload) {
                Ok(t) if t.best < t.trials.len() => return Ok(Tuned { from_cache: true, ..t }),
                _ => notes.push(format!("note: the tuning cache entry `{name}` does not parse; tuning again")),
            }
        }
    }

    let configs = configs(space);
    if space.len() > configs.len() {
        notes.push(format!("note: the space has {} configurations; trying the first {MAX_CONFIGS}", space.len()));
    }
    let total = configs.len();
    let mut state = Progress { total, compiled: 0, timed: 0, best: None };
    progress(&state);

    // Compile every configuration in parallel, through the compile cache.
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    type Built = Option<Result<(crate::cache::Cached, f64), String>>;
    let results: Mutex<Vec<Built>> = Mutex::new(vec![None; total]);
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(total).max(1);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let opts = configs[i].apply(req.opts);
                    let start = std::time::Instant::now();
                    let r = cache
                        .get_or_compile(req.src, &opts)
                        .map(|c| (c, start.elapsed().as_secs_f64() * 1e3))
                        .map_err(|d| d.render().trim_end().to_string());
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // The progress line while the workers compile.
        let mut shown = 0;
        while shown < total {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let d = done.load(Ordering::Relaxed);
            if d != shown {
                shown = d;
                state.compiled = d;
                progress(&state);
            }
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());

    let limits = rt.limits();
    let mut trials = vec![];
    for (config, built) in configs.into_iter().zip(results) {
        let mut trial = Trial {
            config,
            compile_ms: 0.0,
            threads: 0,
            shared_bytes: 0,
            registers: None,
            local_bytes: None,
            outcome: Outcome::Failed { reason: String::new() },
        };
        let (cached, ms) = match built {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                trial.outcome = Outcome::Failed { reason: format!("does not compile: {e}") };
                trials.push(trial);
                continue;
            }
            None => {
                trial.outcome = Outcome::Failed { reason: "was not compiled".into() };
                trials.push(trial);
                continue;
            }
        };
        notes.extend(cached.notes);
        trial.compile_ms = ms;
        let Some(art) = cached.artifacts.kernel(req.kernel) else {
            trial.outcome = Outcome::Failed { reason: format!("the build has no kernel `{}`", req.kernel) };
            trials.push(trial);
            continue;
        };
        trial.threads = art.meta.threads;
        trial.shared_bytes = art.meta.shared_bytes;
        trial.outcome = run_trial(rt, art, args, &req.timing, &mut trial, limits);
        if let Outcome::Dropped { reason } = &trial.outcome {
            notes.push(format!("note: `{}` {}: dropped before launch: {reason}", req.kernel, trial.config));
        }
        if let Outcome::Timed { median_ms, .. } = trial.outcome
            && state.best.as_ref().is_none_or(|(b, _)| median_ms < *b)
        {
            state.best = Some((median_ms, trial.config.to_string()));
        }
        state.timed += 1;
        progress(&state);
        trials.push(trial);
    }

    let best = trials
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match t.outcome {
            Outcome::Timed { median_ms, .. } => Some((i, median_ms)),
            _ => None,
        })
        .min_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal))
        .map(|(i, _)| i);
    let mut tuned =
        Tuned { kernel: req.kernel.into(), device: rt.device_name().into(), bucket, trials, best: best.unwrap_or(0), from_cache: false };
    if best.is_none() {
        return Err(TuneError::NoneRan { kernel: req.kernel.into(), table: tuned.table() });
    }
    if let (Some(key), Some(name)) = (&key, &name) {
        memory().lock().unwrap_or_else(|e| e.into_inner()).insert(*key, tuned.clone());
        match serde_json::to_vec(&tuned) {
            Ok(payload) => cache.write_file(name, "tune", key, &payload, notes),
            Err(e) => notes.push(format!("warning: could not encode the tuning result: {e}")),
        }
    }
    tuned.from_cache = false;
    Ok(tuned)
}

/// Checks one configuration against the device, loads it, runs it once and times it.
fn run_trial(
    rt: &Runtime,
    art: &crate::cache::Artifact,
    args: &[DeviceArg<'_>],
    timing: &TimingOptions,
    trial: &mut Trial,
    limits: crate::device::DeviceLimits,
) -> Outcome {
    let m = &art.meta;
    if m.shared_bytes > limits.shared_per_block {
        return Outcome::Dropped {
            reason: format!("needs {} bytes of shared memory per block, the device allows {}", m.shared_bytes, limits.shared_per_block),
        };
    }
    if m.threads > limits.threads_per_block {
        return Outcome::Dropped {
            reason: format!("needs {} threads per block, the device allows {}", m.threads, limits.threads_per_block),
        };
    }
    let k = match rt.load(&art.ptx, m) {
        Ok(k) => k,
        Err(RuntimeError::Resources(msg)) => return Outcome::Dropped { reason: msg },
        Err(e) => return Outcome::Failed { reason: e.to_string() },
    };
    (trial.registers, trial.local_bytes) = (Some(k.registers()), Some(k.local_bytes()));
    let per_block = k.registers().max(0) as u64 * m.threads as u64;
    if per_block > limits.registers_per_block as u64 {
        return Outcome::Dropped {
            reason: format!(
                "needs {per_block} registers per block ({} per thread), the device allows {}",
                k.registers(),
                limits.registers_per_block
            ),
        };
    }
    if let Err(e) = rt.launch(&k, args) {
        return Outcome::Failed { reason: e.to_string() };
    }
    match time_kernel(rt, &k, args, timing) {
        Ok(t) => Outcome::Timed { median_ms: t.median_ms, min_ms: t.min_ms },
        Err(e) => Outcome::Failed { reason: e.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_space_is_a_cartesian_product() {
        let space = TuneSpace {
            consts: vec![("BM".into(), vec![64, 128]), ("BK".into(), vec![32])],
            warps: vec![4, 8],
            stages: vec![],
            blocks_per_sm: vec![],
            warp_specialize: vec![],
        };
        let c = configs(&space);
        assert_eq!(c.len(), space.len());
        let labels: Vec<String> = c.iter().map(|c| c.to_string()).collect();
        assert_eq!(labels, ["BM=64 BK=32 warps=4", "BM=64 BK=32 warps=8", "BM=128 BK=32 warps=4", "BM=128 BK=32 warps=8"]);
        assert_eq!(configs(&TuneSpace::default()), [TuneConfig::default()]);
        let huge = TuneSpace { consts: (0..20).map(|i| (format!("C{i}"), vec![1, 2])).collect(), ..TuneSpace::default() };
        assert_eq!(configs(&huge).len(), MAX_CONFIGS);
        let occupancy = TuneSpace { stages: vec![2, 3], blocks_per_sm: vec![1, 3], ..TuneSpace::default() };
        let labels: Vec<String> = configs(&occupancy).iter().map(|c| c.to_string()).collect();
        assert_eq!(
            labels,
            ["stages=2 blocks_per_sm=1", "stages=2 blocks_per_sm=3", "stages=3 blocks_per_sm=1", "stages=3 blocks_per_sm=3"]
        );
        let ws = TuneSpace { warps: vec![4, 8], warp_specialize: vec![false, true], ..TuneSpace::default() };
        let labels: Vec<String> = configs(&ws).iter().map(|c| c.to_string()).collect();
        assert_eq!(
            labels,
            [
                "warps=4 warp_specialize=false",
                "warps=4 warp_specialize=true",
                "warps=8 warp_specialize=false",
                "warps=8 warp_specialize=true"
            ]
        );
    }

    /// The log names the configurations whose registers spilled, and tuning caches written
    /// before `local_bytes` existed still read.
    #[test]
    fn the_table_notes_spills() {
        let trial = |local_bytes, ms| Trial {
            config: TuneConfig::default(),
            compile_ms: 1.0,
            threads: 256,
            shared_bytes: 0,
            registers: Some(255),
            local_bytes,
            outcome: Outcome::Timed { median_ms: ms, min_ms: ms },
        };
        let tuned = Tuned {
            kernel: "k".into(),
            device: "d".into(),
            bucket: "b".into(),
            trials: vec![trial(Some(56), 1.0), trial(Some(0), 2.0)],
            best: 0,
            from_cache: false,
        };
        let table = tuned.table();
        assert!(table.contains("best, spills 56 bytes/thread"), "{table}");
        assert_eq!(table.matches("spills").count(), 1, "{table}");
        let json = serde_json::to_string(&tuned.trials[1]).unwrap_or_default().replace(",\"local_bytes\":0", "");
        let old: Trial = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert_eq!(old.local_bytes, None);
    }

    #[test]
    fn a_config_overrides_the_base_options() {
        let base = Options {
            consts: vec![("BM".into(), ConstValue::Int(32)), ("X".into(), ConstValue::Bool(true))],
            warps: Some(2),
            ..Options::default()
        };
        let c = TuneConfig {
            consts: vec![("BM".into(), 128)],
            warps: None,
            stages: Some(4),
            blocks_per_sm: Some(2),
            warp_specialize: Some(true),
        };
        let o = c.apply(&base);
        assert_eq!(o.consts, vec![("X".into(), ConstValue::Bool(true)), ("BM".into(), ConstValue::Int(128))]);
        assert_eq!((o.warps, o.stages, o.blocks_per_sm, o.warp_specialize), (Some(2), Some(4), Some(2), Some(true)));
        // A tuning cache written before `blocks_per_sm` existed still reads.
        let old: TuneConfig = serde_json::from_str(r#"{"consts":[],"warps":4,"stages":null}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old.blocks_per_sm, None);
    }

    /// The matmul example's space compiles in parallel through the cache, with one build per
    /// configuration, and the configurations differ where they should.
    #[test]
    fn the_matmul_space_compiles_in_parallel() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/matmul.tile")).expect("example");
        let src = Source::new("matmul.tile", text);
        let m = tessera_compiler::compile(&src, &Options::default()).map_err(|d| d.render()).expect("compiles");
        let space = &m.kernels[0].meta.tune;
        assert_eq!(space.consts.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["BM", "BN", "BK"]);
        assert_eq!((space.warps.as_slice(), space.stages.as_slice()), (&[4, 8][..], &[3, 4][..]));
        let all = configs(space);
        assert_eq!(all.len(), 32);
        // Build a few of them concurrently, as the tuner does, and check each one's consts.
        let cache = Cache::in_memory();
        let picked: Vec<&TuneConfig> = all.iter().step_by(11).collect();
        std::thread::scope(|s| {
            for c in &picked {
                let (cache, src) = (&cache, &src);
                s.spawn(move || {
                    let built = cache.get_or_compile(src, &c.apply(&Options::default())).map_err(|d| d.render()).expect("compiles");
                    let meta = &built.artifacts.kernels[0].meta;
                    for (n, v) in &c.consts {
                        assert!(meta.consts.contains(&(n.clone(), ConstValue::Int(*v))), "{c}: {:?}", meta.consts);
                    }
                    assert_eq!(meta.threads, c.warps.unwrap_or(4) * 32, "{c}");
                });
            }
        });
    }
}
