//! The compile cache: PTX and launch metadata keyed by everything that determines them, in memory
//! and on disk.
//!
//! The key ([`CacheKey::of`]) is a SHA3-256 over the source text, the text of every file it
//! imports (directly or not; [`Source::imports`]), the embedded standard library, every field of
//! [`Options`] that changes the output, and the compiler's version and build fingerprint
//! ([`tessera_compiler::BUILD_ID`], a hash of the compiler's own sources), so a rebuilt compiler
//! never reads an older compiler's code and an edited import is a miss. The imported files are
//! read again at every lookup (the key is made from what they hold now), and again after a
//! compilation: if one changed meanwhile, what was compiled is not stored.
//!
//! On disk an entry is one file `DIR/KEY.tsc` (see [`Cache::from_env`] for `DIR`): a header line
//! with the format version and kind, the key, the payload's length and SHA3-256, then the JSON
//! payload. Writes go to a temporary file in the same folder, are flushed, and renamed over the
//! entry, so a reader sees a whole entry or none. A reader checks the header, the key, the length
//! and the checksum, then parses the payload and checks every kernel's metadata against its PTX
//! ([`crate::aot::check_pair`]) and that this build of the compiler made it; an entry that fails
//! any check (truncated, corrupted, from another format) is deleted and reported in a note, and
//! the caller rebuilds.
//!
//! A checksum only detects damage: anyone who can write an entry can also write its checksum.
//! What makes an entry trusted is who could have written it. On Unix the folder must belong to
//! the user and give no access to group or others (it is created `0700`; a folder of the user's
//! that others may read but not write is made private; any other folder is not used, with a
//! one-line warning, and builds compile without the disk cache), and each entry file must be a
//! regular file of the user's, writable by no one else (written `0600`), of at most
//! [`MAX_ENTRY_BYTES`].
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tessera_compiler::{Diagnostics, ImportedFile, KernelMeta, Module, Options, Source};

/// The on-disk format version (the first line of every entry).
const FORMAT: &str = "tessera-cache 2";

/// The largest entry file read.
pub const MAX_ENTRY_BYTES: u64 = 64 << 20;

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

    /// Checks what JSON cannot: every kernel's metadata describes its PTX (names are
    /// identifiers, the parameter lists agree, …), and this build of the compiler made it.
    fn validate(&self) -> Result<(), String> {
        let this = format!("{}+{}", tessera_compiler::VERSION, tessera_compiler::BUILD_ID);
        for k in &self.kernels {
            crate::aot::check_pair(&k.meta, &k.ptx).map_err(|e| format!("kernel `{}`: {e}", k.meta.name.escape_debug()))?;
            if k.meta.compiler != this {
                return Err(format!("kernel `{}` was made by another build of the compiler", k.meta.name));
            }
        }
        Ok(())
    }
}

/// A cache key: SHA3-256 of what determines the compiler's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// The key of compiling `src` with `opts` with this build of the compiler, reading the
    /// files it imports now. `None` when an import cannot be resolved, read or parsed (the
    /// compilation then fails, and nothing is cached).
    pub fn of(src: &Source, opts: &Options) -> Option<CacheKey> {
        Some(CacheKey::with_imports(src, &src.imports()?, opts))
    }

    /// The key of compiling `src`, which imports `imports` ([`Source::imports`]), with `opts`.
    /// The source's name and `Options::verify` do not change the output, so they are not part
    /// of it; every other field of [`Options`] is.
    pub fn with_imports(src: &Source, imports: &[ImportedFile], opts: &Options) -> CacheKey {
        let mut h = KeyHasher::new("compile");
        h.field(tessera_compiler::VERSION);
        h.field(tessera_compiler::BUILD_ID);
        h.field(&src.text);
        h.field(&imports.len().to_string());
        for f in imports {
            h.field(&f.written);
            h.field(&f.text);
        }
        for (name, text) in tessera_compiler::sema::STDLIB {
            h.field(name);
            h.field(text);
        }
        // Every field, by name: a field added to `Options` fails to compile here until it is
        // keyed (or, like `verify`, shown not to change the output).
        // `keep_llvm_ir` only keeps a by-product: the PTX is the same.
        let Options {
            consts,
            target,
            kernel,
            warps,
            stages,
            blocks_per_sm,
            warp_specialize,
            verify: _,
            checked,
            tf32,
            codegen,
            keep_llvm_ir: _,
            llvm_passes,
        } = opts;
        h.field(&consts.len().to_string());
        for (name, v) in consts {
            h.field(name);
            h.field(&v.to_string());
        }
        h.field(target.name());
        h.field(&format!("{kernel:?}"));
        h.field(&format!("{warps:?}/{stages:?}/{blocks_per_sm:?}/{warp_specialize:?}"));
        h.field(&format!("checked={checked} tf32={tf32}"));
        h.field(&format!("codegen={} passes={llvm_passes:?}", codegen.name()));
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
    /// The key it was looked up under (`None`: an import could not be read, so it was compiled
    /// without the cache).
    pub key: Option<CacheKey>,
    /// Warnings about the cache itself (a corrupt entry discarded, a write that failed, a
    /// folder not used); the build went on regardless.
    pub notes: Vec<String>,
    /// Time spent: compiling on a miss, reading and checking the entry on a hit.
    pub millis: f64,
}

/// The compile cache: a map in memory in front of a folder on disk (or memory alone).
#[derive(Debug)]
pub struct Cache {
    dir: Option<PathBuf>,
    mem: Mutex<HashMap<CacheKey, Arc<Artifacts>>>,
    /// Whether the warning about an untrusted folder was given (once per cache).
    warned: AtomicBool,
}

impl Cache {
    /// A cache over the folder `dir` (memory only when `None`). The folder is created (private
    /// to the user) when the first entry is written; it is checked at every use (see the module
    /// documentation).
    pub fn new(dir: Option<PathBuf>) -> Cache {
        Cache { dir, mem: Mutex::new(HashMap::new()), warned: AtomicBool::new(false) }
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

    /// The cache folder, if entries go to disk (whether it can be trusted is checked at use).
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

    /// The folder, if it may be used: absent (and `create` not asked) is `None` silently; one
    /// that is not private to the user is `None` with a warning (once).
    fn disk(&self, create: bool, notes: &mut Vec<String>) -> Option<&Path> {
        let dir = self.dir.as_deref()?;
        match private_dir(dir, create) {
            Ok(true) => Some(dir),
            Ok(false) => None,
            Err(why) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    notes.push(format!(
                        "warning: not using the compile cache folder `{}`: {why}; compiling without the disk cache",
                        dir.display()
                    ));
                }
                None
            }
        }
    }

    /// Reads and checks the entry file `name` of `kind` for `key` from the folder. `None` when
    /// absent, untrusted or bad (a bad file is deleted, with a note).
    pub(crate) fn read_file(&self, name: &str, kind: &str, key: &CacheKey, notes: &mut Vec<String>) -> Option<Vec<u8>> {
        let path = self.disk(false, notes)?.join(name);
        read_entry(&path, kind, &key.hex(), notes)
    }

    /// Writes the entry file `name` (atomically, private to the user). A failure is a note.
    pub(crate) fn write_file(&self, name: &str, kind: &str, key: &CacheKey, payload: &[u8], notes: &mut Vec<String>) {
        let Some(dir) = self.disk(true, notes) else { return };
        let path = dir.join(name);
        if let Err(e) = write_atomic(&path, &encode_entry(kind, &key.hex(), payload)) {
            notes.push(format!("warning: could not write the cache entry `{}`: {e}", path.display()));
        }
    }

    /// Looks `key` up in memory, then on disk. A bad disk entry is deleted and explained in a
    /// note; the lookup is then a miss.
    pub fn lookup(&self, key: &CacheKey, notes: &mut Vec<String>) -> Option<(Arc<Artifacts>, Hit)> {
        if let Some(a) = self.mem.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
            return Some((a.clone(), Hit::Memory));
        }
        let name = format!("{}.tsc", key.hex());
        let payload = self.read_file(&name, "compile", key, notes)?;
        let artifacts = match serde_json::from_slice::<Artifacts>(&payload).map_err(|e| e.to_string()).and_then(|a| {
            a.validate()?;
            Ok(a)
        }) {
            Ok(a) => Arc::new(a),
            Err(e) => {
                if let Some(path) = self.entry_path(key) {
                    discard(&path, &format!("its contents are not what this compiler writes: {e}"), notes);
                }
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
        if self.dir.is_some() {
            match serde_json::to_vec(&*artifacts) {
                Ok(payload) => self.write_file(&format!("{}.tsc", key.hex()), "compile", key, &payload, notes),
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
        let mut notes = vec![];
        let imports = src.imports();
        let key = imports.as_ref().map(|i| CacheKey::with_imports(src, i, opts));
        if let Some(key) = &key
            && let Some((artifacts, hit)) = self.lookup(key, &mut notes)
        {
            return Ok(Cached { artifacts, hit, key: Some(*key), notes, millis: start.elapsed().as_secs_f64() * 1e3 });
        }
        let artifacts = compile()?;
        let millis = start.elapsed().as_secs_f64() * 1e3;
        // Stored only if the imports still hold what the key was made from: the compiler read
        // them in between.
        let artifacts = match (&key, &imports) {
            (Some(key), Some(before)) if src.imports().as_ref() == Some(before) => self.insert(key, artifacts, &mut notes),
            (Some(_), _) => {
                notes.push("note: a file imported by this source changed during the build; the result is not cached".into());
                Arc::new(artifacts)
            }
            (None, _) => Arc::new(artifacts),
        };
        Ok(Cached { artifacts, hit: Hit::Miss, key, notes, millis })
    }
}

/// The current user (Unix).
#[cfg(unix)]
fn current_uid() -> u32 {
    // SAFETY: `geteuid` takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Whether `dir` is a folder private to the user (creating it `0700` if `create`): `Ok(false)`
/// if it does not exist (and was not to be created), `Err(why)` if it may not be trusted.
fn private_dir(dir: &Path, create: bool) -> Result<bool, String> {
    let md = match std::fs::metadata(dir) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            // A failure to create it is reported when the entry cannot be written.
            if b.create(dir).is_err() {
                return Ok(true);
            }
            std::fs::metadata(dir).map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    if !md.is_dir() {
        return Err("it is not a folder".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let me = current_uid();
        if md.uid() != me {
            return Err(format!("it belongs to another user (uid {}, you are {me}), who could plant compiled code in it", md.uid()));
        }
        let mode = md.mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(format!(
                "group or others may write to it (mode {mode:03o}), so its entries could be planted; delete it, or \
                 `chmod 700` it if only you wrote to it"
            ));
        }
        if mode & 0o077 != 0 {
            // Readable by others but writable only by the user: nothing in it can be planted;
            // made private, as a new folder is.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| format!("cannot make it private: {e}"))?;
        }
    }
    Ok(true)
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
        return Err(format!("its header is `{}`, expected `{FORMAT} {kind}`", header.chars().take(40).collect::<String>().escape_debug()));
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

/// Reads and checks an entry file. `None` when absent, untrusted or bad (a bad file is deleted,
/// with a note).
fn read_entry(path: &Path, kind: &str, key: &str, notes: &mut Vec<String>) -> Option<Vec<u8>> {
    use tessera_compiler::files::{FileError, open_regular, read_handle};
    let bytes = match open_regular(path) {
        Ok((f, md)) => {
            if let Err(why) = trusted_file(&md) {
                notes.push(format!("warning: ignoring the cache entry `{}`: {why}", path.display()));
                return None;
            }
            read_handle(f, md.len(), MAX_ENTRY_BYTES)
        }
        Err(e) => Err(e),
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(FileError::NotFound) => return None,
        Err(e) => {
            discard(path, &e.to_string(), notes);
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

/// Whether an entry file (its metadata, from the open handle) may be trusted: the user's, and
/// writable by no one else.
fn trusted_file(md: &std::fs::Metadata) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = current_uid();
        if md.uid() != me {
            return Err(format!("it belongs to another user (uid {}, you are {me})", md.uid()));
        }
        if md.mode() & 0o022 != 0 {
            return Err(format!("group or others may write to it (mode {:03o})", md.mode() & 0o777));
        }
    }
    #[cfg(not(unix))]
    let _ = md;
    Ok(())
}

fn discard(path: &Path, why: &str, notes: &mut Vec<String>) {
    let removed = match std::fs::remove_file(path) {
        Ok(()) => "discarded it".to_string(),
        Err(e) => format!("could not delete it ({e})"),
    };
    notes.push(format!("note: the cache entry `{}` is damaged ({why}); {removed} and rebuilt", path.display()));
}

/// Writes `bytes` to `path` atomically: a new temporary file in the same folder (readable and
/// writable by the user alone), flushed to disk, then renamed over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other("the cache path has no folder"))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let result = (|| {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let mut f = o.open(&tmp)?;
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

    fn key(src: &Source, o: &Options) -> CacheKey {
        CacheKey::of(src, o).expect("no imports to read")
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).expect("dir").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[cfg(unix)]
    fn chmod(p: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).expect("stat").mode() & 0o777
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
        let base = key(&src, &Options::default());
        assert_eq!(base, key(&Source::new("elsewhere/b.tile", SRC), &Options { verify: true, ..Options::default() }));
        let changed = [
            key(&Source::new("a.tile", format!("{SRC}\n")), &Options::default()),
            key(&src, &Options { consts: vec![("B".into(), tessera_compiler::ConstValue::Int(1))], ..Options::default() }),
            key(&src, &Options { target: tessera_compiler::Target::Sm80, ..Options::default() }),
            key(&src, &Options { kernel: Some("inc".into()), ..Options::default() }),
            key(&src, &Options { warps: Some(8), ..Options::default() }),
            key(&src, &Options { stages: Some(2), ..Options::default() }),
            key(&src, &Options { warp_specialize: Some(true), ..Options::default() }),
            key(&src, &Options { checked: true, ..Options::default() }),
            key(&src, &Options { tf32: true, ..Options::default() }),
        ];
        for (i, k) in changed.iter().enumerate() {
            assert_ne!(*k, base, "change {i} kept the key");
        }
        assert_eq!(base.hex().len(), 64);
    }

    /// Editing an imported file is a miss that compiles the new code (it used to be a hit that
    /// returned the PTX of the old helper).
    #[test]
    fn imported_files_are_part_of_the_key() {
        let dir = tmpdir("imports");
        std::fs::create_dir_all(dir.join("lib")).expect("dir");
        let helper = |k: &str| std::fs::write(dir.join("lib/h.tile"), format!("fn bump(x) {{ x + {k} }}\n")).expect("write");
        helper("1.0");
        let main = "use \"lib/h.tile\"::{bump};
            #[grid(1)]
            kernel k(x: &f32[N], y: &mut f32[N]) {
                y.store([0], bump(x.load([0], [128])));
            }";
        std::fs::write(dir.join("main.tile"), main).expect("write");
        let src = Source::from_file(dir.join("main.tile")).expect("reads");
        let cache = Cache::new(Some(dir.join("cache")));
        let first = cache.get_or_compile(&src, &Options::default()).map_err(|d| d.render()).expect("compiles");
        assert_eq!(first.hit, Hit::Miss);
        assert_eq!(cache.get_or_compile(&src, &Options::default()).expect("cached").hit, Hit::Memory);
        helper("2.0");
        let second = cache.get_or_compile(&src, &Options::default()).expect("compiles");
        assert_eq!(second.hit, Hit::Miss, "an edited import must not hit");
        assert_ne!(second.artifacts.kernels[0].ptx, first.artifacts.kernels[0].ptx);
        // The key covers the import's text; the file's name or place does not matter.
        let imports = src.imports().expect("readable");
        assert_eq!(imports.len(), 1);
        assert_eq!((imports[0].written.as_str(), imports[0].text.as_str()), ("lib/h.tile", "fn bump(x) { x + 2.0 }\n"));
        assert_ne!(CacheKey::with_imports(&src, &[], &Options::default()), second.key.expect("keyed"));
        // An import that cannot be read: compiled without the cache, and the error is the
        // compiler's.
        std::fs::remove_file(dir.join("lib/h.tile")).expect("rm");
        assert!(CacheKey::of(&src, &Options::default()).is_none());
        let e = cache.get_or_compile(&src, &Options::default()).unwrap_err().render();
        assert!(e.contains("cannot import \"lib/h.tile\": no such file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
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

        let key = first.key.expect("keyed");
        let path = cache.entry_path(&key).expect("disk cache");
        let whole = std::fs::read(&path).expect("entry written");
        // Truncated, a flipped byte in the payload, garbage, and a well-formed entry whose JSON
        // is not what the cache stores: each is discarded with a note, and the build succeeds.
        let mut flipped = whole.clone();
        let i = whole.len() - 10;
        flipped[i] = flipped[i].wrapping_add(1);
        let bad_json = encode_entry("compile", &key.hex(), b"{\"kernels\": 3}");
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
        assert_eq!(files(&dir), [format!("{}.tsc", key.hex())]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Entries with a valid checksum but contents no compile of this build writes (anyone can
    /// recompute a checksum) are discarded: a kernel name that would escape `-o DIR`, metadata
    /// that disagrees with its PTX, another build's output.
    #[test]
    fn planted_entries_are_refused() {
        let dir = tmpdir("planted");
        let src = Source::new("inc.tile", SRC);
        let opts = Options::default();
        let good = Cache::new(Some(dir.clone())).get_or_compile(&src, &opts).expect("compiles");
        let key = good.key.expect("keyed");
        let path = dir.join(format!("{}.tsc", key.hex()));
        let real = good.artifacts.kernels[0].clone();
        let plant = |edit: &dyn Fn(&mut Artifact)| {
            let mut a = real.clone();
            edit(&mut a);
            let payload = serde_json::to_vec(&Artifacts { kernels: vec![a] }).expect("json");
            std::fs::write(&path, encode_entry("compile", &key.hex(), &payload)).expect("plant");
        };
        type Edit<'a> = &'a dyn Fn(&mut Artifact);
        let cases: [(&str, Edit, &str); 4] = [
            (
                "escaping name",
                &|a| {
                    a.meta.name = "../../../x".into();
                    a.ptx = a.ptx.replace(".entry inc(", ".entry ../../../x(");
                },
                "not an identifier",
            ),
            ("threads", &|a| a.meta.threads = 1024, "threads per block"),
            (
                "dtype",
                &|a| {
                    a.meta.params[1].kind = tessera_compiler::tir::ParamKind::Tensor {
                        dtype: tessera_compiler::DType::U8,
                        dims: vec![tessera_compiler::tir::Dim::Sym("N".into())],
                        mutable: true,
                    }
                },
                "1-byte elements",
            ),
            ("other build", &|a| a.meta.compiler = format!("{}+0000", tessera_compiler::VERSION), "another build"),
        ];
        for (what, edit, want) in cases {
            plant(edit);
            let r = Cache::new(Some(dir.clone())).get_or_compile(&src, &opts).expect("rebuilds");
            assert_eq!(r.hit, Hit::Miss, "{what}");
            assert_eq!(r.artifacts, good.artifacts, "{what}");
            assert!(r.notes.iter().any(|n| n.contains("damaged") && n.contains(want)), "{what}: {:?}", r.notes);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A folder others may write to is not used (its entries could be planted); one they may
    /// only read is made private; a new one is created private.
    #[cfg(unix)]
    #[test]
    fn the_folder_must_be_private() {
        let dir = tmpdir("shared");
        let src = Source::new("inc.tile", SRC);
        let r = Cache::new(Some(dir.join("new"))).get_or_compile(&src, &Options::default()).expect("compiles");
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        assert_eq!(mode(&dir.join("new")), 0o700);
        std::fs::create_dir_all(dir.join("open")).expect("dir");
        chmod(&dir.join("open"), 0o777);
        let cache = Cache::new(Some(dir.join("open")));
        let r = cache.get_or_compile(&src, &Options::default()).expect("compiles");
        assert_eq!(r.hit, Hit::Miss);
        assert!(
            r.notes.iter().any(|n| n.contains("not using the compile cache folder") && n.contains("may write to it (mode 777)")),
            "{:?}",
            r.notes
        );
        assert!(files(&dir.join("open")).is_empty(), "wrote into a shared folder");
        // One warning per cache, not one per lookup.
        cache.clear_memory();
        assert!(cache.get_or_compile(&src, &Options::default()).expect("compiles").notes.is_empty());
        // Readable by others: tightened to 0700 and used.
        std::fs::create_dir_all(dir.join("readable")).expect("dir");
        chmod(&dir.join("readable"), 0o755);
        let r = Cache::new(Some(dir.join("readable"))).get_or_compile(&src, &Options::default()).expect("compiles");
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        assert_eq!(mode(&dir.join("readable")), 0o700);
        assert_eq!(files(&dir.join("readable")).len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An entry file that someone else could have written is ignored (and replaced); entry files
    /// are written readable by the user alone.
    #[cfg(unix)]
    #[test]
    fn entry_files_must_be_the_users() {
        use std::os::unix::fs::MetadataExt;
        let dir = tmpdir("owner");
        let src = Source::new("inc.tile", SRC);
        let first = Cache::new(Some(dir.clone())).get_or_compile(&src, &Options::default()).expect("compiles");
        let path = dir.join(format!("{}.tsc", first.key.expect("keyed").hex()));
        assert_eq!(mode(&path), 0o600);
        chmod(&path, 0o666);
        let r = Cache::new(Some(dir.clone())).get_or_compile(&src, &Options::default()).expect("compiles");
        assert_eq!(r.hit, Hit::Miss);
        assert!(r.notes.iter().any(|n| n.contains("ignoring the cache entry") && n.contains("mode 666")), "{:?}", r.notes);
        assert_eq!(mode(&path), 0o600, "replaced by a private entry");
        // Another user's entry (and folder): only root can make one here.
        if current_uid() == 0 {
            let chown = |p: &Path| std::os::unix::fs::chown(p, Some(65534), None).expect("chown");
            chown(&path);
            let r = Cache::new(Some(dir.clone())).get_or_compile(&src, &Options::default()).expect("compiles");
            assert_eq!(r.hit, Hit::Miss);
            assert!(r.notes.iter().any(|n| n.contains("belongs to another user (uid 65534")), "{:?}", r.notes);
            assert_eq!(std::fs::metadata(&path).expect("stat").uid(), 0, "replaced by the user's own");
            chown(&dir);
            let r = Cache::new(Some(dir.clone())).get_or_compile(&src, &Options::default()).expect("compiles");
            assert!(
                r.notes.iter().any(|n| n.contains("not using the compile cache folder") && n.contains("another user")),
                "{:?}",
                r.notes
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A FIFO or an oversized file in place of an entry is discarded without blocking or
    /// reading it.
    #[cfg(unix)]
    #[test]
    fn special_and_huge_entries_are_not_read() {
        let dir = tmpdir("special");
        let src = Source::new("inc.tile", SRC);
        let first = Cache::new(Some(dir.clone())).get_or_compile(&src, &Options::default()).expect("compiles");
        let path = dir.join(format!("{}.tsc", first.key.expect("keyed").hex()));
        std::fs::remove_file(&path).expect("rm");
        assert!(std::process::Command::new("mkfifo").arg(&path).status().expect("mkfifo").success());
        let r = Cache::new(Some(dir.clone())).get_or_compile(&src, &Options::default()).expect("compiles");
        assert_eq!(r.hit, Hit::Miss);
        assert!(r.notes.iter().any(|n| n.contains("it is a FIFO")), "{:?}", r.notes);
        let f = std::fs::File::create(&path).expect("create");
        f.set_len(MAX_ENTRY_BYTES + 1).expect("sparse file");
        drop(f);
        chmod(&path, 0o600);
        let r = Cache::new(Some(dir.clone())).get_or_compile(&src, &Options::default()).expect("compiles");
        assert!(r.notes.iter().any(|n| n.contains("more than the limit of 67108864 bytes")), "{:?}", r.notes);
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
    fn an_unusable_folder_is_a_note() {
        let file = tmpdir("notadir");
        std::fs::write(&file, b"x").expect("file");
        let cache = Cache::new(Some(file.join("sub")));
        let r = cache.get_or_compile(&Source::new("inc.tile", SRC), &Options::default()).expect("compiles anyway");
        assert_eq!(r.hit, Hit::Miss);
        assert!(r.notes.iter().any(|n| n.contains("not using the compile cache folder")), "{:?}", r.notes);
        let _ = std::fs::remove_file(&file);
    }
}
