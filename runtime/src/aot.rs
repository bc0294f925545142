//! Ahead-of-time artifacts: the `KERNEL.ptx` and `KERNEL.json` pair that
//! `tessera build FILE --emit ptx,meta -o DIR` writes, read back and launched without the
//! compiler.
//!
//! The JSON is [`KernelMeta`]: the entry name, the parameters in order with their kinds, dtypes
//! and dimensions (constants or dimension symbols), the dimension symbols in binding order, the
//! flattened PTX parameter list, the grid expressions, threads per block, dynamic shared memory,
//! the `#[require]` conditions, the `const` values, and the compiler that made it. That is enough
//! for any loader: bind the symbols from the argument shapes, check the requirements, evaluate
//! the grid, pack the parameters in `ptx_params` order (each at its natural alignment) and call
//! `cuLaunchKernel` with `threads` threads and `shared_bytes` of dynamic shared memory.
//!
//! ```no_run
//! use tessera_runtime::{Runtime, aot::AotKernel};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let k = AotKernel::read("build".as_ref(), "vector_add")?; // build/vector_add.{ptx,json}
//! let rt = Runtime::new()?;
//! let kernel = k.load(&rt)?;
//! let x = rt.tensor(&[1.0f32; 1000], &[1000])?;
//! let y = rt.tensor(&[2.0f32; 1000], &[1000])?;
//! let z = rt.zeros::<f32>(&[1000])?;
//! rt.launch(&kernel, &[x.arg(), y.arg(), z.arg()])?;
//! assert_eq!(z.to_vec(&rt)?, [3.0f32; 1000]);
//! # Ok(()) }
//! ```

use crate::device::{LoadedKernel, Runtime, RuntimeError};
use std::path::{Path, PathBuf};
use tessera_compiler::{KernelMeta, PtxParam};

/// The largest `.ptx` file read (the examples' are under 200 KB).
pub const MAX_PTX_BYTES: u64 = 64 << 20;

/// The largest `.json` metadata file read.
pub const MAX_META_BYTES: u64 = 4 << 20;

/// Why an AOT artifact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AotError {
    #[error("cannot read `{path}`: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error("`{path}` is not kernel metadata: {msg}")]
    Json { path: PathBuf, msg: String },
    #[error("`{path}`: {msg}")]
    Mismatch { path: PathBuf, msg: String },
    #[error("`{0}` is not a kernel name (an identifier: letters, digits and `_`, not starting with a digit)")]
    BadName(String),
}

/// Whether `name` can name a kernel: an identifier (`[A-Za-z_][A-Za-z0-9_]*`). What the
/// language allows, and what keeps `DIR/NAME.ptx` inside `DIR`.
pub fn is_kernel_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_') && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// One kernel's PTX and launch metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct AotKernel {
    pub meta: KernelMeta,
    pub ptx: String,
}

impl AotKernel {
    /// Reads `DIR/KERNEL.json` and `DIR/KERNEL.ptx`.
    pub fn read(dir: &Path, kernel: &str) -> Result<AotKernel, AotError> {
        if !is_kernel_name(kernel) {
            return Err(AotError::BadName(kernel.into()));
        }
        Self::read_files(&dir.join(format!("{kernel}.ptx")), &dir.join(format!("{kernel}.json")))
    }

    /// Reads a PTX file and its metadata file, and checks that they belong together (see
    /// [`AotKernel::validate`]). Each must be a regular file, of at most [`MAX_PTX_BYTES`] and
    /// [`MAX_META_BYTES`].
    pub fn read_files(ptx_path: &Path, meta_path: &Path) -> Result<AotKernel, AotError> {
        let read = |p: &Path, limit: u64| {
            let bytes =
                tessera_compiler::files::read_limited(p, limit).map_err(|e| AotError::Io { path: p.to_path_buf(), msg: e.to_string() })?;
            String::from_utf8(bytes).map_err(|_| AotError::Io { path: p.to_path_buf(), msg: "it is not UTF-8 text".into() })
        };
        let json_err = |msg: String| AotError::Json { path: meta_path.to_path_buf(), msg };
        let value: serde_json::Value = serde_json::from_str(&read(meta_path, MAX_META_BYTES)?).map_err(|e| json_err(e.to_string()))?;
        // Fields that older metadata could omit are required here: without `ptx_params` the ABI
        // would go unchecked, without `compiler` the version.
        for key in ["ptx_params", "compiler"] {
            if value.get(key).is_none() {
                return Err(json_err(format!("the field `{key}` is missing")));
            }
        }
        let meta: KernelMeta = serde_json::from_value(value).map_err(|e| json_err(e.to_string()))?;
        let ptx = read(ptx_path, MAX_PTX_BYTES)?;
        let k = AotKernel { meta, ptx };
        k.validate().map_err(|msg| AotError::Mismatch { path: meta_path.to_path_buf(), msg })?;
        Ok(k)
    }

    /// Checks what the JSON schema cannot: the metadata describes the PTX ([`check_pair`]) and
    /// was written by this version of Tessera.
    pub fn validate(&self) -> Result<(), String> {
        check_pair(&self.meta, &self.ptx)?;
        let version = self.meta.compiler.split('+').next().unwrap_or_default();
        if version != tessera_compiler::VERSION {
            return Err(format!(
                "it was built by Tessera `{}`, this is {}; rebuild it with this version",
                self.meta.compiler.escape_debug(),
                tessera_compiler::VERSION
            ));
        }
        Ok(())
    }

    /// Writes `DIR/KERNEL.ptx` and `DIR/KERNEL.json` (what `tessera build --emit ptx,meta` does).
    pub fn write(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        if !is_kernel_name(&self.meta.name) {
            return Err(std::io::Error::other(AotError::BadName(self.meta.name.clone())));
        }
        std::fs::create_dir_all(dir)?;
        let ptx = dir.join(format!("{}.ptx", self.meta.name));
        let json = dir.join(format!("{}.json", self.meta.name));
        std::fs::write(&ptx, &self.ptx)?;
        std::fs::write(&json, serde_json::to_string_pretty(&self.meta).map_err(std::io::Error::other)? + "\n")?;
        Ok((ptx, json))
    }

    /// Loads the kernel into the runtime's context.
    pub fn load(&self, rt: &Runtime) -> Result<LoadedKernel, RuntimeError> {
        rt.load(&self.ptx, &self.meta)
    }
}

/// Checks that `meta` describes the kernel of `ptx`, so that a launch packs what the kernel
/// reads: the name is an identifier; `ptx_params` is the kernel parameter ABI of `params`
/// ([`KernelMeta::abi_of`]) and `dims` their symbols; the PTX defines exactly one `.entry` of that
/// name (comments do not count), whose parameters agree with `ptx_params` in number, order, size
/// and kind (float or not); its `.maxntid` (or `.reqntid`) is `threads` threads; its `.target` is
/// `target`; the launch shape is sane. Every path that loads a kernel checks this: AOT files,
/// compile cache entries, [`Runtime::load`].
pub fn check_pair(meta: &KernelMeta, ptx: &str) -> Result<(), String> {
    let name = &meta.name;
    if !is_kernel_name(name) {
        return Err(format!("the kernel name `{}` is not an identifier", name.escape_debug()));
    }
    let abi = KernelMeta::abi_of(&meta.params, &meta.tensor_maps);
    if meta.ptx_params != abi {
        return Err("`ptx_params` does not match `params` under the kernel parameter ABI".into());
    }
    if meta.dims != KernelMeta::dims_of(&meta.params) {
        return Err("`dims` does not match the dimension symbols of `params`".into());
    }
    if meta.threads == 0 || meta.threads > 1024 {
        return Err(format!("{} threads per block is not a valid launch", meta.threads));
    }
    if meta.grid.is_empty() || meta.grid.len() > 3 {
        return Err(format!("the grid has {} axes (1 to 3 expected)", meta.grid.len()));
    }
    let module = parse_ptx(ptx).map_err(|e| format!("the PTX does not parse: {e}"))?;
    if module.target.as_deref() != Some(meta.target.name()) {
        return Err(format!(
            "the PTX is for `{}`, the metadata says `{}`",
            module.target.as_deref().unwrap_or("no .target"),
            meta.target.name()
        ));
    }
    let mut entries = module.entries.iter().filter(|e| &e.name == name);
    let entry = entries.next().ok_or_else(|| format!("the PTX does not define the entry point `{name}`"))?;
    if entries.next().is_some() {
        return Err(format!("the PTX defines the entry point `{name}` more than once"));
    }
    if entry.params.len() != abi.len() {
        return Err(format!("the PTX entry `{name}` takes {} parameters, the metadata describes {}", entry.params.len(), abi.len()));
    }
    for (i, (p, a)) in entry.params.iter().zip(&abi).enumerate() {
        if !param_agrees(p, a) {
            return Err(format!(
                "parameter {i} of the PTX entry `{name}` is `.{} {}` ({} bytes), the metadata says `{}` is {} ({} bytes)",
                p.ty, p.name, p.bytes, a.name, a.ty, a.bytes
            ));
        }
    }
    // The one fact about a tensor the parameter list would not show: its element size (a buffer
    // checked for N bytes must not reach a kernel that writes 4N).
    for (j, slot) in meta.slots().into_iter().enumerate() {
        if let tessera_compiler::abi::Slot::Ptr { param, elem_bytes } = slot {
            let got = entry.params.get(j).and_then(|p| p.pointee_align);
            if got != Some(elem_bytes) {
                let got = got.map_or("does not say".into(), |a| format!("says {a}"));
                let (pname, dtype) = match meta.params.get(param) {
                    Some(p @ tessera_compiler::tir::Param { kind: tessera_compiler::tir::ParamKind::Tensor { dtype, .. }, .. }) => {
                        (p.name.as_str(), dtype.to_string())
                    }
                    _ => ("?", "?".into()),
                };
                return Err(format!(
                    "`{pname}` is {dtype} ({elem_bytes}-byte elements), but the PTX entry `{name}` {got} (`.ptr.global.align` of parameter {j})"
                ));
            }
        }
    }
    // The boxes and swizzles the kernel's copies were compiled for.
    let maps = tessera_compiler::abi::tensor_maps_in_ptx(ptx)?;
    if maps != meta.tensor_maps {
        return Err(format!("the PTX copies through the tensor maps {maps:?}, the metadata says {:?}", meta.tensor_maps));
    }
    let threads = entry.maxntid.as_ref().ok_or_else(|| format!("the PTX entry `{name}` declares no `.maxntid`"))?;
    let product = threads.iter().try_fold(1u64, |acc, &t| acc.checked_mul(t as u64));
    if product != Some(meta.threads as u64) {
        return Err(format!("the PTX entry `{name}` is for {threads:?} threads per block, the metadata says {}", meta.threads));
    }
    Ok(())
}

/// Whether PTX parameter `p` holds ABI parameter `a`: the same size, and a float type in the PTX
/// only for a float in the ABI (16-bit floats travel as `.b16`).
fn param_agrees(p: &PtxParamDecl, a: &PtxParam) -> bool {
    let ptx_float = p.ty.starts_with('f');
    let abi_float = matches!(a.ty.as_str(), "f16" | "bf16" | "f32" | "f64");
    let abi_wide_float = matches!(a.ty.as_str(), "f32" | "f64");
    p.bytes == a.bytes && (!ptx_float || abi_float) && (!abi_wide_float || ptx_float || p.ty.starts_with('b'))
}

/// What a loader checks of a PTX module (see [`parse_ptx`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PtxModule {
    /// The first target of `.target` (`sm_90a`).
    pub target: Option<String>,
    pub entries: Vec<PtxEntry>,
}

/// One `.entry` of a PTX module.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PtxEntry {
    pub name: String,
    pub params: Vec<PtxParamDecl>,
    /// `.maxntid` (or, without it, `.reqntid`): up to three extents.
    pub maxntid: Option<Vec<u32>>,
}

/// One `.param` of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtxParamDecl {
    pub name: String,
    /// The type without its dot: `u32`, `b16`, `f32`, …
    pub ty: String,
    /// Size in bytes (times the element count of an array parameter).
    pub bytes: u32,
    /// For a pointer declared `.ptr … .align N`: `N`, the alignment of what it points to (the
    /// element size of a Tessera tensor).
    pub pointee_align: Option<u32>,
}

/// PTX text as tokens: comments (`//` to the end of the line, `/* … */`) removed, quoted strings
/// kept whole, names and directives (`.entry`, `%r1`, `$L__x`) as words, punctuation alone.
fn ptx_tokens(ptx: &str) -> Result<Vec<&str>, String> {
    let b = ptx.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    let word = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'%' | b'.');
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if b[i..].starts_with(b"//") {
            i = b[i..].iter().position(|&x| x == b'\n').map_or(b.len(), |n| i + n);
        } else if b[i..].starts_with(b"/*") {
            let end = ptx[i + 2..].find("*/").ok_or("a `/*` comment is not closed")?;
            i += 2 + end + 2;
        } else if c == b'"' {
            let end = ptx[i + 1..].find('"').ok_or("a string is not closed")?;
            out.push(&ptx[i..i + end + 2]);
            i += end + 2;
        } else if word(c) {
            let start = i;
            // A directive is one word (`.param`); a dot inside a word splits modifiers
            // (`.ptr.global`) only where a word starts with it.
            i += 1;
            while i < b.len() && word(b[i]) && b[i] != b'.' {
                i += 1;
            }
            out.push(&ptx[start..i]);
        } else {
            // Punctuation, or a byte outside ASCII (one char).
            let len = ptx[i..].chars().next().map_or(1, char::len_utf8);
            out.push(&ptx[i..i + len]);
            i += len;
        }
    }
    Ok(out)
}

/// The size in bytes of a PTX fundamental type (`u32` → 4), if it is one.
fn ptx_type_bytes(ty: &str) -> Option<u32> {
    let (kind, bits) = ty.split_at(1);
    if !matches!(kind, "u" | "s" | "b" | "f") {
        return None;
    }
    match bits {
        "8" if kind != "f" => Some(1),
        "16" => Some(2),
        "32" => Some(4),
        "64" => Some(8),
        "128" if kind == "b" => Some(16),
        _ => None,
    }
}

/// Reads the `.target` and every `.entry` (name, parameters, `.maxntid`) of a PTX module. Only
/// the top level is read: function bodies (and the `.param`s of calls inside them) are skipped.
pub fn parse_ptx(ptx: &str) -> Result<PtxModule, String> {
    let toks = ptx_tokens(ptx)?;
    let mut m = PtxModule::default();
    let mut i = 0;
    let mut depth = 0usize;
    let at = |i: usize| toks.get(i).copied().unwrap_or("");
    let number = |t: &str| t.parse::<u32>().map_err(|_| format!("expected a number, found `{t}`"));
    while i < toks.len() {
        match toks[i] {
            "{" => depth += 1,
            "}" => depth = depth.checked_sub(1).ok_or("an unmatched `}`")?,
            ".target" if depth == 0 && m.target.is_none() => m.target = Some(at(i + 1).to_string()),
            ".entry" if depth == 0 => {
                let mut e = PtxEntry { name: at(i + 1).to_string(), ..PtxEntry::default() };
                if e.name.is_empty() || !e.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
                    return Err(format!("`.entry` is followed by `{}`, not a name", e.name));
                }
                i += 2;
                if at(i) == "(" {
                    i += 1;
                    while at(i) != ")" {
                        if at(i) != ".param" {
                            return Err(format!("expected `.param` in the parameters of `{}`, found `{}`", e.name, at(i)));
                        }
                        i += 1;
                        let (mut ty, mut ptr, mut pointee_align) = (None, false, None);
                        // Qualifiers up to the name: `.align N` (of the parameter, or after
                        // `.ptr` of what it points to), the type, `.ptr`, state spaces.
                        while at(i).starts_with('.') {
                            if at(i) == ".align" {
                                let n = number(at(i + 1))?;
                                if ptr {
                                    pointee_align = Some(n);
                                }
                                i += 1;
                            } else if at(i) == ".ptr" {
                                ptr = true;
                            } else if let Some(n) = ptx_type_bytes(&at(i)[1..]) {
                                ty = Some((at(i)[1..].to_string(), n));
                            }
                            i += 1;
                        }
                        let (ty, mut bytes) = ty.ok_or_else(|| format!("a parameter of `{}` has no type", e.name))?;
                        let name = at(i).to_string();
                        if name.is_empty() || matches!(name.as_str(), "," | ")" | "[") {
                            return Err(format!("a parameter of `{}` has no name", e.name));
                        }
                        i += 1;
                        if at(i) == "[" {
                            bytes = bytes.checked_mul(number(at(i + 1))?).ok_or("an array parameter is too large")?;
                            if at(i + 2) != "]" {
                                return Err(format!("expected `]` after the size of `{name}`"));
                            }
                            i += 3;
                        }
                        e.params.push(PtxParamDecl { name, ty, bytes, pointee_align });
                        match at(i) {
                            "," => i += 1,
                            ")" => {}
                            t => return Err(format!("expected `,` or `)` in the parameters of `{}`, found `{t}`", e.name)),
                        }
                    }
                    i += 1;
                }
                // Performance directives up to the body.
                let mut reqntid = None;
                while at(i) != "{" {
                    let list = |i: &mut usize| -> Result<Vec<u32>, String> {
                        let mut v = vec![number(at(*i + 1))?];
                        *i += 2;
                        while at(*i) == "," && v.len() < 3 {
                            v.push(number(at(*i + 1))?);
                            *i += 2;
                        }
                        Ok(v)
                    };
                    match at(i) {
                        ".maxntid" => e.maxntid = Some(list(&mut i)?),
                        ".reqntid" => reqntid = Some(list(&mut i)?),
                        "" => return Err(format!("the entry `{}` has no body", e.name)),
                        _ => i += 1,
                    }
                }
                e.maxntid = e.maxntid.or(reqntid);
                m.entries.push(e);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return Err("a `{` is not closed".into());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_compiler::{DType, Options, Source, Target};

    const TWICE: &str = "use std::math::cdiv;
         #[grid(cdiv(N, 128))]
         kernel twice(x: &f32[N], y: &mut f32[N], s: i32) {
             let i = program_id(0) * 128;
             y.store([i], x.load([i], [128]) * 2.0);
         }";

    fn twice() -> AotKernel {
        let m = tessera_compiler::compile(&Source::new("t.tile", TWICE), &Options::default()).map_err(|d| d.render()).expect("compiles");
        AotKernel { meta: m.kernels[0].meta.clone(), ptx: m.kernels[0].ptx.clone() }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tessera-aot-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn write_read_round_trip_and_mismatches() {
        let aot = twice();
        let dir = tmpdir("rt");
        aot.write(&dir).expect("writes");
        let back = AotKernel::read(&dir, "twice").expect("reads");
        assert_eq!(back, aot);
        assert_eq!(back.meta.dims, ["N"]);
        let names: Vec<&str> = back.meta.ptx_params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["x.ptr", "x.size0", "x.stride0", "y.ptr", "y.size0", "y.stride0", "s"]);

        let e = AotKernel::read(&dir, "nope").unwrap_err();
        assert!(matches!(e, AotError::Io { .. }) && e.to_string().contains("nope.json"), "{e}");
        std::fs::write(dir.join("twice.json"), "{\"name\": 3}").expect("write");
        assert!(matches!(AotKernel::read(&dir, "twice"), Err(AotError::Json { .. })));
        let mut other = aot.clone();
        other.meta.name = "thrice".into();
        other.write(&dir).expect("writes");
        std::fs::copy(dir.join("twice.ptx"), dir.join("thrice.ptx")).expect("copy");
        let e = AotKernel::read(&dir, "thrice").unwrap_err();
        assert!(e.to_string().contains("entry point `thrice`"), "{e}");
        let mut wrong_abi = aot.clone();
        wrong_abi.meta.ptx_params.pop();
        assert!(wrong_abi.validate().unwrap_err().contains("ABI"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Each edit of the metadata that the PTX contradicts is refused (each was accepted before).
    #[test]
    fn metadata_that_disagrees_with_the_ptx_is_refused() {
        let aot = twice();
        aot.validate().expect("the compiler's pair is valid");
        let refused = |what: &str, k: AotKernel, want: &str| {
            let e = k.validate().expect_err(what);
            assert!(e.contains(want), "{what}: {e}");
        };
        // A parameter list shorter or longer than the PTX entry's (`ptx_params` kept in step).
        let mut k = aot.clone();
        k.meta.params.pop();
        k.meta.ptx_params = KernelMeta::abi_of(&k.meta.params, &k.meta.tensor_maps);
        refused("shorter", k, "takes 7 parameters, the metadata describes 6");
        let mut k = aot.clone();
        let extra = k.meta.params[2].clone();
        k.meta.params.push(tessera_compiler::tir::Param { name: "t".into(), ..extra });
        k.meta.ptx_params = KernelMeta::abi_of(&k.meta.params, &k.meta.tensor_maps);
        refused("longer", k, "takes 7 parameters, the metadata describes 8");
        // Without `ptx_params` (an empty list): the ABI is checked all the same.
        let mut k = aot.clone();
        k.meta.ptx_params.clear();
        refused("empty ptx_params", k, "ABI");
        // A tensor's dtype changed to u8: the PTX says 4-byte elements.
        let mut k = aot.clone();
        if let tessera_compiler::tir::ParamKind::Tensor { dtype, .. } = &mut k.meta.params[1].kind {
            *dtype = DType::U8;
        }
        refused("dtype", k, "`y` is u8 (1-byte elements), but the PTX entry `twice` says 4");
        // A scalar's type changed to one of another size.
        let mut k = aot.clone();
        k.meta.params[2].kind = tessera_compiler::tir::ParamKind::Scalar { dtype: DType::I64 };
        k.meta.ptx_params = KernelMeta::abi_of(&k.meta.params, &k.meta.tensor_maps);
        refused("scalar", k, "parameter 6 of the PTX entry `twice` is `.u32 twice_param_6` (4 bytes)");
        let mut k = aot.clone();
        k.meta.threads = 256;
        refused("threads", k, "is for [128, 1, 1] threads per block, the metadata says 256");
        let mut k = aot.clone();
        k.meta.target = Target::Sm80;
        refused("target", k, "the PTX is for `sm_90a`, the metadata says `sm_80`");
        let mut k = aot.clone();
        k.meta.compiler = "0.0.1+abc".into();
        refused("version", k, "built by Tessera `0.0.1+abc`");
        let mut k = aot.clone();
        k.meta.compiler.clear();
        refused("no version", k, "built by Tessera ``");
        let mut k = aot.clone();
        k.meta.dims = vec!["M".into()];
        refused("dims", k, "`dims`");
        // The entry only in a comment.
        let mut k = aot.clone();
        k.ptx = k.ptx.replace(".visible .entry twice(", "// .entry twice(\n.visible .entry other(");
        refused("comment", k, "does not define the entry point `twice`");
        let mut k = aot.clone();
        k.ptx = k.ptx.replace(".visible .entry twice(", "/* .entry twice( */ .visible .entry other(");
        refused("block comment", k, "does not define the entry point `twice`");
        // A name that would leave the output folder.
        let mut k = aot.clone();
        k.meta.name = "../../x".into();
        refused("name", k, "not an identifier");
        assert!(matches!(AotKernel::read(Path::new("."), "../x"), Err(AotError::BadName(_))));
        assert!(AotKernel { meta: KernelMeta { name: "/abs".into(), ..aot.meta.clone() }, ..aot }.write(Path::new(".")).is_err());
    }

    /// The JSON must carry `ptx_params` and `compiler` (serde would default them).
    #[test]
    fn required_fields() {
        let aot = twice();
        let dir = tmpdir("fields");
        for key in ["ptx_params", "compiler"] {
            aot.write(&dir).expect("writes");
            let mut v: serde_json::Value = serde_json::to_value(&aot.meta).expect("json");
            v.as_object_mut().expect("object").remove(key);
            std::fs::write(dir.join("twice.json"), v.to_string()).expect("write");
            let e = AotKernel::read(&dir, "twice").unwrap_err();
            assert!(e.to_string().contains(&format!("the field `{key}` is missing")), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parses_entries_params_and_directives() {
        let ptx = "// .entry fake(.param .u8 a)\n.version 8.0\n.target sm_80, texmode_independent /* .target sm_90a */\n\
                   .func helper(.param .u64 p) { .param .b32 inner; }\n\
                   .visible .entry k(\n\t.param .u64 .ptr.global.align 4 k_param_0,\n\t.param .align 8 .b8 k_param_1[16],\n\
                   \t.param .f32 k_param_2 // trailing\n)\n.reqntid 32, 2\n{\n\tret;\n}\n.entry bare { }";
        let m = parse_ptx(ptx).expect("parses");
        assert_eq!(m.target.as_deref(), Some("sm_80"));
        assert_eq!(m.entries.len(), 2);
        let k = &m.entries[0];
        assert_eq!(k.name, "k");
        assert_eq!(k.maxntid, Some(vec![32, 2]));
        let got: Vec<(&str, &str, u32, Option<u32>)> =
            k.params.iter().map(|p| (p.name.as_str(), p.ty.as_str(), p.bytes, p.pointee_align)).collect();
        assert_eq!(got, [("k_param_0", "u64", 8, Some(4)), ("k_param_1", "b8", 16, None), ("k_param_2", "f32", 4, None)]);
        assert_eq!((m.entries[1].name.as_str(), m.entries[1].params.len(), &m.entries[1].maxntid), ("bare", 0, &None));
        for bad in [
            ".entry k(.param .u32 a",
            ".entry k(.param a) {}",
            ".entry k(.param .u32) {}",
            ".entry k(.param .u32 a b) {}",
            ".entry k(.param .u32 a) .maxntid x {}",
            ".entry k(.param .u32 a[) {}",
            ".entry k(.param .u32 a)",
            "/* open",
            "{ {",
            "}",
            ".entry ( {}",
        ] {
            assert!(parse_ptx(bad).is_err(), "{bad}");
        }
    }

    /// The tensor maps of a kernel's bulk tensor copies are recorded in its PTX: metadata that
    /// names other boxes (the kernel would wait for other byte counts) is refused.
    #[test]
    fn tensor_maps_must_be_the_ptx_ones() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/linear.tile");
        let src = Source::from_file(&path).expect("reads");
        let m = tessera_compiler::compile(&src, &Options { target: Target::Sm90a, ..Options::default() })
            .unwrap_or_else(|d| panic!("{}", d.render()));
        let aot = AotKernel { meta: m.kernels[0].meta.clone(), ptx: m.kernels[0].ptx.clone() };
        assert!(!aot.meta.tensor_maps.is_empty(), "linear copies through tensor maps on sm_90a");
        aot.validate().expect("the compiler's pair is valid");
        let mut k = aot.clone();
        k.meta.tensor_maps[0].boxes[1] *= 2;
        let e = k.validate().expect_err("a bigger box");
        assert!(e.contains("the PTX copies through the tensor maps"), "{e}");
        let mut k = aot;
        k.meta.tensor_maps[0].swizzle = 0;
        assert!(k.validate().is_err(), "another swizzle");
    }

    /// The parser and the pair check accept every kernel the compiler writes.
    #[test]
    fn every_example_kernel_passes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut n = 0;
        for f in std::fs::read_dir(&dir).expect("examples").flatten().map(|e| e.path()) {
            if f.extension().is_none_or(|e| e != "tile") {
                continue;
            }
            let src = Source::from_file(&f).expect("reads");
            for target in [Target::Sm90a, Target::Sm80] {
                let m =
                    tessera_compiler::compile(&src, &Options { target, ..Options::default() }).unwrap_or_else(|d| panic!("{}", d.render()));
                for k in &m.kernels {
                    let aot = AotKernel { meta: k.meta.clone(), ptx: k.ptx.clone() };
                    aot.validate().unwrap_or_else(|e| panic!("{} ({target:?}): {e}", f.display()));
                    n += 1;
                }
            }
        }
        assert!(n >= 20, "only {n} kernels checked");
    }
}
