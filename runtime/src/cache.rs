//! The compile cache: PTX and launch metadata keyed by everything that determines them, in memory
//! and on disk.
//!
//! The key ([`CacheKey::of`]) is a SHA3-256 over the source text, the embedded standard library,
//! the `const` values, the target, the kernel filter, the warps and stages overrides, and the
//! compiler's version and build fingerprint ([`tessera_compiler::BUILD_ID`], a hash of the
//! compiler's own sources), so a rebuilt compiler never reads an older compiler's code.
//!
//! On disk an entry is one file `DIR/KEY.tsc` (see [`Cache::from_env`] for `DIR`): a header line
//! with the format version and kind, the key, the payload's length and SHA3-256, then the JSON
//! payload. Writes go to a temporary file in the same folder, are flushed, and renamed over the
//! entry, so a reader sees a whole entry or none. A reader checks the header, the key, the length
//! and the checksum, then parses the payload; an entry that fails any check (truncated,
//! corrupted, from another format) is deleted and reported in a note, and the caller rebuilds.
//!
//! ```
//! use tessera_compiler::{Options, Source};
//! use tessera_runtime::cache::{Cache, Hit};
//!
//! let dir = std::env::temp_dir().join(format!("tessera-doc-cache-{}", std::process::id()));
//! let src = Source::new("add.tile", "use std::math::cdiv;
//!     #[grid(cdiv(N, 256))]
//!     kernel add(x: &f32[N], y: &mut f32[N]) {
//!         let i = program_id(0) * 256;
//!         y.store([i], x.load([i], [256]) + 1.0);
//!     }");
//! let cache = Cache::new(Some(dir.clone()));
//! let first = cache.get_or_compile(&src, &Options::default()).map_err(|d| d.render())?;
//! assert_eq!(first.hit, Hit::Miss);
//! // A second process (here: a fresh cache on the same folder) reads it from disk.
//! let again = Cache::new(Some(dir.clone())).get_or_compile(&src, &Options::default()).map_err(|d| d.render())?;
//! assert_eq!(again.hit, Hit::Disk);
//! assert_eq!(again.artifacts, first.artifacts);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::{Deserialize, Serialize};
use sha3::{Digest, Sha3_256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tessera_compiler::{Diagnostics, KernelMeta, Module, Options, Source};

/// The on-disk format version (the first line of every entry).
const FORMAT: &str = "tessera-cache 1";

/// One compiled kernel as the cache keeps it: what a loader needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub meta: KernelMeta,
    pub ptx: String,
}

/// The kernels of one compiled file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifacts {
    pub kernels: Vec<Artifact>,
}

impl Artifacts {
    /// The PTX and metadata of each kernel of a compiled module.
    pub fn from_module(m: &Module) -> Artifacts {
        Artifacts { kernels: m.kernels.iter().map(|k| Artifact { meta: k.meta.clone(), ptx: k.ptx.clone() }).collect() }
    }

    /// The kernel named `name`.
    pub fn kernel(&self, name: &str) -> Option<&Artifact> {
        self.kernels.iter().find(|k| k.meta.name == name)
    }

    /// Checks what JSON cannot: every kernel's PTX defines its entry point.
    fn validate(&self) -> Result<(), String> {
        for k in &self.kernels {
            if !k.ptx.contains(&format!(".entry {}(", k.meta.name)) {
                return Err(format!("the PTX of `{}` does not define its entry point", k.meta.name));
            }
        }
        Ok(())
    }
}

/// A cache key: SHA3-256 of what determines the compiler's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key of compiling `src` with `opts` with this build of the compiler. The source's
    /// name and `Options::verify` do not change the output, so they are not part of it.
    pub fn of(src: &Source, opts: &Options) -> CacheKey {
        let mut h = KeyHasher::new("compile");
        h.field(tessera_compiler::VERSION);
        h.field(tessera_compiler::BUILD_ID);
        h.field(&src.text);
        for (name, text) in tessera_compiler::sema::STDLIB {
            h.field(name);
            h.field(text);
        }
        for (name, v) in &opts.consts {
            h.field(&format!("{name}={v}"));
        }
        h.field(opts.target.name());
        h.field(opts.kernel.as_deref().unwrap_or("*"));
        h.field(&format!("{:?}/{:?}", opts.warps, opts.stages));
        // A checked build keeps `assert`s in the PTX.
        if opts.checked {
            h.field("checked");
        }
        // f32 dots on the tensor cores.
        if opts.tf32 {
            h.field("tf32");
        }
        h.finish()
    }

    /// Lower-case hexadecimal.
    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

/// Builds keys from length-prefixed fields, so that no two field lists hash alike.
pub(crate) struct KeyHasher(Sha3_256);

impl KeyHasher {
    pub(crate) fn new(kind: &str) -> KeyHasher {
        let mut h = KeyHasher(Sha3_256::new());
        h.field(FORMAT);
        h.field(kind);
        h
    }

    pub(crate) fn field(&mut self, s: &str) {
        self.0.update((s.len() as u64).to_le_bytes());
        self.0.update(s.as_bytes());
    }

    pub(crate) fn finish(self) -> CacheKey {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finalize().as_slice());
        CacheKey(out)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha3_hex(bytes: &[u8]) -> String {
    hex(Sha3_256::digest(bytes).as_slice())
}

/// Where a lookup found its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hit {
    /// In this process's memory.
    Memory,
    /// In the cache folder.
    Disk,
    /// Not cached: compiled now (and stored).
    Miss,
}

impl Hit {
    pub fn name(self) -> &'static str {
        match self {
            Hit::Memory => "memory",
            Hit::Disk => "disk",
            Hit::Miss => "miss",
        }
    }
}

/// The result of [`Cache::get_or_compile`].
#[derive(Clone, Debug)]
pub struct Cached {
    pub artifacts: Arc<Artifacts>,
    pub hit: Hit,
    pub key: CacheKey,
    /// Warnings about the cache itself (a corrupt entry discarded, a write that failed); the
    /// build went on regardless.
    pub notes: Vec<String>,
    /// Time spent: compiling on a miss, reading and checking the entry on a hit.
    pub millis: f64,
}

/// The compile cache: a map in memory in front of a folder on disk (or memory alone).
#[derive(Debug)]
pub struct Cache {
    dir: Option<PathBuf>,
    mem: Mutex<HashMap<CacheKey, Arc<Artifacts>>>,
}

impl Cache {
    /// A cache over the folder `dir` (memory only when `None`). The folder is created when
    /// the first entry is written.
    pub fn new(dir: Option<PathBuf>) -> Cache {
        Cache { dir, mem: Mutex::new(HashMap::new()) }
    }

    /// A cache in memory only.
    pub fn in_memory() -> Cache {
        Cache::new(None)
    }

    /// The cache in the folder [`Cache::default_dir`] names.
    pub fn from_env() -> Cache {
        Cache::new(Cache::default_dir())
    }

    /// One cache per process, over [`Cache::default_dir`].
    pub fn global() -> &'static Cache {
        static GLOBAL: OnceLock<Cache> = OnceLock::new();
        GLOBAL.get_or_init(Cache::from_env)
    }

    /// The cache folder: `$TESSERA_CACHE_DIR` when set (`off` or empty: no disk cache), else the
    /// user's cache folder (`$XDG_CACHE_HOME/tessera`, `~/.cache/tessera`; `~/Library/Caches/tessera`
    /// on macOS; `%LOCALAPPDATA%\tessera` on Windows).
    pub fn default_dir() -> Option<PathBuf> {
        let var = |n: &str| std::env::var_os(n).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(v) = std::env::var_os("TESSERA_CACHE_DIR") {
            return (!v.is_empty() && v != "off").then(|| PathBuf::from(v));
        }
        if cfg!(windows) {
            return var("LOCALAPPDATA").map(|d| d.join("tessera"));
        }
        if cfg!(target_os = "macos") {
            return var("HOME").map(|h| h.join("Library/Caches/tessera"));
        }
        var("XDG_CACHE_HOME").map(|d| d.join("tessera")).or_else(|| var("HOME").map(|h| h.join(".cache/tessera")))
    }

    /// The cache folder, if entries go to disk.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The file of the entry `key`.
    pub fn entry_path(&self, key: &CacheKey) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{}.tsc", key.hex())))
    }

    /// Forgets the entries held in memory (the disk is untouched).
    pub fn clear_memory(&self) {
        self.mem.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Looks `key` up in memory, then on disk. A bad disk entry is deleted and explained in a
    /// note; the lookup is then a miss.
    pub fn lookup(&self, key: &CacheKey, notes: &mut Vec<String>) -> Option<(Arc<Artifacts>, Hit)> {
        if let Some(a) = self.mem.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
            return Some((a.clone(), Hit::Memory));
        }
        let path = self.entry_path(key)?;
        let payload = read_entry(&path, "compile", &key.hex(), notes)?;
        let artifacts = match serde_json::from_slice::<Artifacts>(&payload).map_err(|e| e.to_string()).and_then(|a| {
            a.validate()?;
            Ok(a)
        }) {
            Ok(a) => Arc::new(a),
            Err(e) => {
                discard(&path, &format!("its contents do not parse: {e}"), notes);
                return None;
            }
        };
        self.mem.lock().unwrap_or_else(|e| e.into_inner()).insert(*key, artifacts.clone());
        Some((artifacts, Hit::Disk))
    }

    /// Stores an entry in memory and on disk. A failed disk write is a note, not an error.
    pub fn insert(&self, key: &CacheKey, artifacts: Artifacts, notes: &mut Vec<String>) -> Arc<Artifacts> {
        let artifacts = Arc::new(artifacts);
        self.mem.lock().unwrap_or_else(|e| e.into_inner()).insert(*key, artifacts.clone());
        if let Some(path) = self.entry_path(key) {
            match serde_json::to_vec(&*artifacts) {
                Ok(payload) => {
                    if let Err(e) = write_atomic(&path, &encode_entry("compile", &key.hex(), &payload)) {
                        notes.push(format!("warning: could not write the compile cache entry `{}`: {e}", path.display()));
                    }
                }
                Err(e) => notes.push(format!("warning: could not encode a compile cache entry: {e}")),
            }
        }
        artifacts
    }

    /// The PTX and metadata of `src` compiled with `opts`: from the cache when present,
    /// otherwise compiled (with [`tessera_compiler::compile`]) and stored.
    pub fn get_or_compile(&self, src: &Source, opts: &Options) -> Result<Cached, Diagnostics> {
        self.get_or_compile_with(src, opts, || tessera_compiler::compile(src, opts).map(|m| Artifacts::from_module(&m)))
    }

    /// Like [`Cache::get_or_compile`] with the compiler call supplied by the caller (which may
    /// keep the module it compiled).
    pub fn get_or_compile_with(
        &self,
        src: &Source,
        opts: &Options,
        compile: impl FnOnce() -> Result<Artifacts, Diagnostics>,
    ) -> Result<Cached, Diagnostics> {
        let start = Instant::now();
        let key = CacheKey::of(src, opts);
        let mut notes = vec![];
        if let Some((artifacts, hit)) = self.lookup(&key, &mut notes) {
            return Ok(Cached { artifacts, hit, key, notes, millis: start.elapsed().as_secs_f64() * 1e3 });
        }
        let artifacts = compile()?;
        let millis = start.elapsed().as_secs_f64() * 1e3;
        let artifacts = self.insert(&key, artifacts, &mut notes);
        Ok(Cached { artifacts, hit: Hit::Miss, key, notes, millis })
    }
}

/// The bytes of an entry: header, key, length and checksum lines, then the payload.
pub(crate) fn encode_entry(kind: &str, key: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{FORMAT} {kind}\n{key}\n{} {}\n", payload.len(), sha3_hex(payload)).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The payload of an entry, or why it is not a valid entry of `kind` for `key`.
pub(crate) fn decode_entry(kind: &str, key: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut rest = bytes;
    let mut line = |what: &str| -> Result<String, String> {
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| format!("it ends inside its {what} (truncated)"))?;
        let l = std::str::from_utf8(&rest[..end]).map_err(|_| format!("its {what} is not text"))?.to_string();
        rest = &rest[end + 1..];
        Ok(l)
    };
    let header = line("header")?;
    if header != format!("{FORMAT} {kind}") {
        return Err(format!("its header is `{}`, expected `{FORMAT} {kind}`", header.chars().take(40).collect::<String>()));
    }
    if line("key")? != key {
        return Err("it holds another key".into());
    }
    let sums = line("checksum line")?;
    let (len, sum) = sums.split_once(' ').ok_or("its checksum line is malformed")?;
    let len: usize = len.parse().map_err(|_| "its length is not a number")?;
    if rest.len() != len {
        return Err(format!("it holds {} bytes of payload, its header says {len} (truncated or extended)", rest.len()));
    }
    if sha3_hex(rest) != sum {
        return Err("its checksum does not match (corrupted)".into());
    }
    Ok(rest.to_vec())
}

/// Reads and checks an entry file. `None` when absent or bad (a bad file is deleted, with a note).
pub(crate) fn read_entry(path: &Path, kind: &str, key: &str, notes: &mut Vec<String>) -> Option<Vec<u8>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            notes.push(format!("warning: could not read the cache entry `{}`: {e}; rebuilding", path.display()));
            return None;
        }
    };
    match decode_entry(kind, key, &bytes) {
        Ok(p) => Some(p),
        Err(why) => {
            discard(path, &why, notes);
            None
        }
    }
}

fn discard(path: &Path, why: &str, notes: &mut Vec<String>) {
    let removed = match std::fs::remove_file(path) {
        Ok(()) => "discarded it".to_string(),
        Err(e) => format!("could not delete it ({e})"),
    };
    notes.push(format!("note: the cache entry `{}` is damaged ({why}); {removed} and rebuilt", path.display()));
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed to disk,
/// then renamed over `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other("the cache path has no folder"))?;
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "use std::math::cdiv;
        #[grid(cdiv(N, 128))]
        kernel inc(x: &f32[N], y: &mut f32[N]) {
            let i = program_id(0) * 128;
            y.store([i], x.load([i], [128]) + 1.0);
        }";

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tessera-cache-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn entries_round_trip_and_reject_damage() {
        let payload = br#"{"kernels":[]}"#;
        let e = encode_entry("compile", "abc", payload);
        assert_eq!(decode_entry("compile", "abc", &e).as_deref(), Ok(&payload[..]));
        assert!(decode_entry("compile", "abd", &e).unwrap_err().contains("another key"));
        assert!(decode_entry("tune", "abc", &e).unwrap_err().contains("header"));
        for cut in [0, 5, 20, e.len() - 1] {
            assert!(decode_entry("compile", "abc", &e[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = e.clone();
        longer.push(b' ');
        assert!(decode_entry("compile", "abc", &longer).unwrap_err().contains("truncated or extended"));
        let mut flipped = e.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x20;
        assert!(decode_entry("compile", "abc", &flipped).unwrap_err().contains("checksum"));
    }

    #[test]
    fn keys_depend_on_what_changes_the_output() {
        let src = Source::new("a.tile", SRC);
        let base = CacheKey::of(&src, &Options::default());
        assert_eq!(base, CacheKey::of(&Source::new("elsewhere/b.tile", SRC), &Options { verify: true, ..Options::default() }));
        let changed = [
            CacheKey::of(&Source::new("a.tile", format!("{SRC}\n")), &Options::default()),
            CacheKey::of(&src, &Options { consts: vec![("B".into(), tessera_compiler::ConstValue::Int(1))], ..Options::default() }),
            CacheKey::of(&src, &Options { target: tessera_compiler::Target::Sm80, ..Options::default() }),
            CacheKey::of(&src, &Options { kernel: Some("inc".into()), ..Options::default() }),
            CacheKey::of(&src, &Options { warps: Some(8), ..Options::default() }),
            CacheKey::of(&src, &Options { stages: Some(2), ..Options::default() }),
        ];
        for (i, k) in changed.iter().enumerate() {
            assert_ne!(*k, base, "change {i} kept the key");
        }
        assert_eq!(base.hex().len(), 64);
    }

    #[test]
    fn disk_hits_and_corrupt_entries_are_rebuilt() {
        let dir = tmpdir("corrupt");
        let src = Source::new("inc.tile", SRC);
        let opts = Options::default();
        let first = Cache::new(Some(dir.clone())).get_or_compile(&src, &opts).expect("compiles");
        assert_eq!(first.hit, Hit::Miss);
        assert!(first.notes.is_empty(), "{:?}", first.notes);
        let cache = Cache::new(Some(dir.clone()));
        let second = cache.get_or_compile(&src, &opts).expect("cached");
        assert_eq!(second.hit, Hit::Disk);
        assert_eq!(second.artifacts, first.artifacts);
        assert_eq!(cache.get_or_compile(&src, &opts).expect("cached").hit, Hit::Memory);

        let path = cache.entry_path(&first.key).expect("disk cache");
        let whole = std::fs::read(&path).expect("entry written");
        // Truncated, a flipped byte in the payload, garbage, and a well-formed entry whose JSON
        // is not what the cache stores: each is discarded with a note, and the build succeeds.
        let mut flipped = whole.clone();
        let i = whole.len() - 10;
        flipped[i] = flipped[i].wrapping_add(1);
        let bad_json = encode_entry("compile", &first.key.hex(), b"{\"kernels\": 3}");
        for (what, bytes) in
            [("truncated", whole[..whole.len() / 2].to_vec()), ("flipped", flipped), ("garbage", vec![0xff; 64]), ("json", bad_json)]
        {
            std::fs::write(&path, &bytes).expect("damage the entry");
            let fresh = Cache::new(Some(dir.clone()));
            let r = fresh.get_or_compile(&src, &opts).expect("rebuilds");
            assert_eq!(r.hit, Hit::Miss, "{what}");
            assert_eq!(r.artifacts, first.artifacts, "{what}");
            assert!(r.notes.iter().any(|n| n.contains("damaged") && n.contains("rebuilt")), "{what}: {:?}", r.notes);
            // The rebuilt entry is whole again.
            assert_eq!(std::fs::read(&path).expect("rewritten"), whole, "{what}");
        }
        // No temporary files are left behind.
        let names: Vec<String> =
            std::fs::read_dir(&dir).expect("dir").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, [format!("{}.tsc", first.key.hex())]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn compile_errors_are_not_cached() {
        let cache = Cache::in_memory();
        let src = Source::new("bad.tile", "kernel k() { let x = ; }");
        assert!(cache.get_or_compile(&src, &Options::default()).is_err());
        assert!(cache.mem.lock().expect("lock").is_empty());
    }

    #[test]
    fn an_unwritable_folder_is_a_note() {
        let file = tmpdir("notadir");
        std::fs::write(&file, b"x").expect("file");
        let cache = Cache::new(Some(file.join("sub")));
        let r = cache.get_or_compile(&Source::new("inc.tile", SRC), &Options::default()).expect("compiles anyway");
        assert_eq!(r.hit, Hit::Miss);
        assert!(r.notes.iter().any(|n| n.contains("could not write")), "{:?}", r.notes);
        let _ = std::fs::remove_file(&file);
    }
}
