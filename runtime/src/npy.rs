//! NumPy `.npy` files in and out of [`HostTensor`]s: format versions 1.0, 2.0 and 3.0,
//! little-endian, C order.
//!
//! Supported dtypes: `<f2` (f16), `<f4` (f32), `<f8` (f64), `|i1`, `<i2`, `<i4`, `<i8`, `|u1`,
//! `<u4`, `<u8`, `|b1` (bool) and `<V2` (bf16). NumPy has no bf16 of its own: an array of
//! ml_dtypes' `bfloat16` is saved as the 2-byte void `<V2` (its bits, `np.load(f).view(bfloat16)`
//! reads it back), which is read as bf16. [`write_npy`] writes a bf16 tensor as `<f4` (exactly;
//! any NumPy reads it), or as `<V2` with [`Bf16Npy::MlDtypes`]; [`read_npy_as`] also reads a
//! `<f4` file into bf16 (rounding to nearest even) when bf16 is asked for. Fortran order and big-endian data are refused with an error; so is
//! anything malformed: reading never panics.
//!
//! A file is read header first: it must be a regular file (never a FIFO or a device), its header
//! at most [`MAX_HEADER_LEN`] bytes, and its length exactly the header plus the bytes its shape
//! and dtype need, all checked before the data is allocated (through
//! [`HostTensor::try_zeros`], so its size limits apply) and read.

use half::bf16;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use tessera_compiler::files::FileError;
use tessera_compiler::{AllocError, DType, HostTensor};

/// The magic string that starts every `.npy` file.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Headers (magic, version, length and dictionary) are padded to a multiple of this.
const HEADER_ALIGN: usize = 64;

/// Longest header dictionary accepted when reading (NumPy itself refuses more than 10 000
/// bytes by default; this is generous but bounded).
pub const MAX_HEADER_LEN: usize = 1 << 20;

/// Why a `.npy` file could not be read or written. Every variant names the file (`path`).
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file may not be read: missing, a folder, a FIFO or a device.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: FileError,
    },
    /// The tensor the file holds cannot be made (too large for the host).
    #[error("{}: {source}", path.display())]
    Alloc {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: AllocError,
    },
    /// The file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file ends before the part named in `what`.
    #[error("{}: truncated .npy file: {what}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// The file does not start with `\x93NUMPY`.
    #[error("{}: not a .npy file (bad magic string)", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// A format version other than 1.0, 2.0 or 3.0.
    #[error("{}: unsupported .npy format version {major}.{minor} (supported: 1.0, 2.0, 3.0)", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Major version byte.
        major: u8,
        /// Minor version byte.
        minor: u8,
    },
    /// The header dictionary could not be parsed or lacks a key.
    #[error("{}: malformed .npy header: {detail}", path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A dtype this reader does not handle (structured, complex, strings, u2, ...).
    #[error("{}: unsupported dtype `{descr}`{detail}", path.display())]
    UnsupportedDType {
        /// The file.
        path: PathBuf,
        /// The header's `descr`.
        descr: String,
        /// A parenthesised explanation (may be empty).
        detail: String,
    },
    /// Big-endian data.
    #[error("{}: big-endian dtype `{descr}` is not supported (save a little-endian array, e.g. `a.astype(a.dtype.newbyteorder('<'))`)", path.display())]
    BigEndian {
        /// The file.
        path: PathBuf,
        /// The header's `descr`.
        descr: String,
    },
    /// `fortran_order: True`.
    #[error("{}: Fortran-order arrays are not supported (save `np.ascontiguousarray(a)`)", path.display())]
    FortranOrder {
        /// The file.
        path: PathBuf,
    },
    /// The data after the header is longer than the shape and dtype call for (shorter is
    /// [`NpyError::Truncated`]).
    #[error("{}: shape {shape:?} of {dtype} needs {expected} bytes of data, the file has {got}", path.display())]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// The header's shape.
        shape: Vec<usize>,
        /// The header's dtype.
        dtype: DType,
        /// Bytes the shape needs.
        expected: u64,
        /// Bytes after the header.
        got: u64,
    },
    /// The number of bytes the shape needs overflows.
    #[error("{}: shape {shape:?} is too large", path.display())]
    ShapeTooLarge {
        /// The file.
        path: PathBuf,
        /// The header's shape.
        shape: Vec<usize>,
    },
    /// [`read_npy_as`] found another dtype than the one asked for.
    #[error("{}: expected an array of {expected}{hint}, the file holds `{descr}` ({found})", path.display())]
    DTypeMismatch {
        /// The file.
        path: PathBuf,
        /// The dtype asked for.
        expected: DType,
        /// The file's dtype.
        found: DType,
        /// The file's `descr`.
        descr: String,
        /// A parenthesised hint (may be empty).
        hint: String,
    },
    /// A tensor to write whose byte length does not match its shape and dtype.
    #[error("{}: cannot write tensor {dtype}{shape:?}: it has {got} bytes, its shape needs {expected}", path.display())]
    BadTensor {
        /// The file.
        path: PathBuf,
        /// The tensor's dtype.
        dtype: DType,
        /// The tensor's shape.
        shape: Vec<usize>,
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes the tensor has.
        got: usize,
    },
}

/// Reads a `.npy` file into a tensor of the file's dtype (see the module documentation for the
/// checks made before the data is read).
pub fn read_npy(path: impl AsRef<Path>) -> Result<HostTensor, NpyError> {
    let path = path.as_ref();
    let (f, md) = tessera_compiler::files::open_regular(path).map_err(|source| NpyError::File { path: path.to_path_buf(), source })?;
    read_from(f, md.len(), path)
}

/// Reads a `.npy` file that must hold an array of dtype `want`. A `<f4` file is converted to
/// bf16 (round to nearest even) when `want` is [`DType::BF16`]; any other difference is an error.
pub fn read_npy_as(path: impl AsRef<Path>, want: DType) -> Result<HostTensor, NpyError> {
    let path = path.as_ref();
    let t = read_npy(path)?;
    convert_to(t, want, path)
}

/// How a bf16 tensor is written: as `<f4` (exact, read by any NumPy) or as ml_dtypes' `<V2`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Bf16Npy {
    #[default]
    F32,
    MlDtypes,
}

/// Writes a tensor as a `.npy` file (format 1.0, or 2.0 for huge headers). A bf16 tensor is
/// written as `<f4`.
pub fn write_npy(path: impl AsRef<Path>, t: &HostTensor) -> Result<(), NpyError> {
    write_npy_with(path, t, Bf16Npy::F32)
}

/// [`write_npy`], writing a bf16 tensor as `bf16` says.
pub fn write_npy_with(path: impl AsRef<Path>, t: &HostTensor, bf16: Bf16Npy) -> Result<(), NpyError> {
    let path = path.as_ref();
    let bytes = encode_npy_with(t, path, bf16)?;
    std::fs::write(path, bytes).map_err(|source| NpyError::Io { path: path.to_path_buf(), source })
}

/// The `descr` NumPy uses for a dtype (`None` for bf16, which has none).
pub fn npy_descr(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::Bool => "|b1",
        DType::I8 => "|i1",
        DType::I16 => "<i2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::U8 => "|u1",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::F16 => "<f2",
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::BF16 => return None,
    })
}

/// Converts a tensor just read from `path` to `want` (only f32 → bf16 converts).
fn convert_to(t: HostTensor, want: DType, path: &Path) -> Result<HostTensor, NpyError> {
    if t.dtype == want {
        return Ok(t);
    }
    if t.dtype == DType::F32 && want == DType::BF16 {
        let bytes = t
            .bytes
            .chunks_exact(4)
            .flat_map(|c| {
                let f = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                bf16::from_f32(f).to_bits().to_le_bytes()
            })
            .collect();
        return Ok(HostTensor { dtype: DType::BF16, shape: t.shape, bytes });
    }
    let hint =
        if want == DType::BF16 { " (bf16 is read from a `<V2` (ml_dtypes' bfloat16) or `<f4` file)".to_string() } else { String::new() };
    Err(NpyError::DTypeMismatch {
        path: path.to_path_buf(),
        expected: want,
        found: t.dtype,
        descr: npy_descr(t.dtype).unwrap_or("<V2").to_string(),
        hint,
    })
}

/// Decodes the bytes of a `.npy` file; `path` only names the file in errors.
pub fn decode_npy(bytes: &[u8], path: &Path) -> Result<HostTensor, NpyError> {
    read_from(bytes, bytes.len() as u64, path)
}

/// Reads a `.npy` file from `r`, which holds `len` bytes: the header first, then, once the
/// length is known to be exactly what the header calls for, the data.
fn read_from(mut r: impl Read, len: u64, path: &Path) -> Result<HostTensor, NpyError> {
    let p = || path.to_path_buf();
    let truncated = |what: &str| NpyError::Truncated { path: p(), what: what.to_string() };
    let io = |source: std::io::Error| NpyError::Io { path: p(), source };
    // Reads `n` bytes that `len` says are there.
    let mut take = |n: usize| -> Result<Vec<u8>, NpyError> {
        let mut buf = vec![0; n];
        r.read_exact(&mut buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => NpyError::Truncated { path: p(), what: "the file shrank while it was read".into() },
            _ => io(e),
        })?;
        Ok(buf)
    };
    if len < MAGIC.len() as u64 {
        let start = take(len as usize)?;
        return if MAGIC.starts_with(&start) { Err(truncated("no magic string")) } else { Err(NpyError::BadMagic { path: p() }) };
    }
    if take(MAGIC.len())? != MAGIC {
        return Err(NpyError::BadMagic { path: p() });
    }
    if len < 8 {
        return Err(truncated("no format version"));
    }
    let v = take(2)?;
    let (major, minor) = (v[0], v[1]);
    let (len_size, utf8) = match (major, minor) {
        (1, 0) => (2, false),
        (2, 0) => (4, false),
        (3, 0) => (4, true),
        _ => return Err(NpyError::UnsupportedVersion { path: p(), major, minor }),
    };
    let start = 8 + len_size as u64;
    if len < start {
        return Err(truncated("no header length"));
    }
    let header_len = take(len_size)?.iter().rev().fold(0usize, |acc, &b| (acc << 8) | b as usize);
    if header_len > MAX_HEADER_LEN {
        return Err(NpyError::BadHeader { path: p(), detail: format!("header length {header_len} is implausibly large") });
    }
    if len - start < header_len as u64 {
        return Err(truncated(&format!("header of {header_len} bytes, {} present", len - start)));
    }
    let header = take(header_len)?;
    let header: String = if utf8 {
        String::from_utf8(header).map_err(|e| NpyError::BadHeader { path: p(), detail: format!("header is not UTF-8: {e}") })?
    } else {
        // Latin-1: every byte is the code point of the same value.
        header.iter().map(|&b| b as char).collect()
    };
    let h = parse_header(&header).map_err(|detail| NpyError::BadHeader { path: p(), detail })?;
    if h.fortran_order {
        return Err(NpyError::FortranOrder { path: p() });
    }
    let dtype = parse_descr(&h.descr, path)?;
    let numel = HostTensor::byte_len(dtype, &h.shape).ok_or_else(|| NpyError::ShapeTooLarge { path: p(), shape: h.shape.clone() })?;
    let data = len - start - header_len as u64;
    if data < numel as u64 {
        return Err(NpyError::Truncated {
            path: p(),
            what: format!("shape {:?} of {dtype} needs {numel} bytes of data, the file has {data}", h.shape),
        });
    }
    if data != numel as u64 {
        return Err(NpyError::SizeMismatch { path: p(), shape: h.shape, dtype, expected: numel as u64, got: data });
    }
    let mut t = HostTensor::try_zeros(dtype, &h.shape).map_err(|source| NpyError::Alloc { path: p(), source })?;
    r.read_exact(&mut t.bytes).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => truncated("the file shrank while it was read"),
        _ => io(e),
    })?;
    if r.read(&mut [0u8]).map_err(io)? != 0 {
        return Err(NpyError::SizeMismatch { path: p(), shape: t.shape, dtype, expected: numel as u64, got: numel as u64 + 1 });
    }
    if dtype == DType::Bool {
        // NumPy bools are 0 or 1; normalise anything else to 1 so every reader agrees.
        for b in &mut t.bytes {
            *b = (*b != 0) as u8;
        }
    }
    Ok(t)
}

/// Encodes a tensor as the bytes of a `.npy` file (bf16 as `<f4`); `path` only names the file
/// in errors.
pub fn encode_npy(t: &HostTensor, path: &Path) -> Result<Vec<u8>, NpyError> {
    encode_npy_with(t, path, Bf16Npy::F32)
}

/// [`encode_npy`], writing a bf16 tensor as `bf16` says.
pub fn encode_npy_with(t: &HostTensor, path: &Path, bf16: Bf16Npy) -> Result<Vec<u8>, NpyError> {
    let expected = t.shape.iter().try_fold(t.dtype.size(), |acc, &d| acc.checked_mul(d));
    if expected != Some(t.bytes.len()) {
        return Err(NpyError::BadTensor {
            path: path.to_path_buf(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            expected: expected.unwrap_or(usize::MAX),
            got: t.bytes.len(),
        });
    }
    let (descr, data): (&str, std::borrow::Cow<'_, [u8]>) = match npy_descr(t.dtype) {
        Some(d) => (d, t.bytes.as_slice().into()),
        None if bf16 == Bf16Npy::MlDtypes => ("<V2", t.bytes.as_slice().into()),
        None => {
            // bf16 → f32 is exact.
            let data: Vec<u8> =
                t.bytes.chunks_exact(2).flat_map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32().to_le_bytes()).collect();
            ("<f4", data.into())
        }
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (");
    for (i, d) in t.shape.iter().enumerate() {
        if i > 0 {
            dict.push_str(", ");
        }
        let _ = write!(dict, "{d}");
    }
    if t.shape.len() == 1 {
        dict.push(',');
    }
    dict.push_str("), }");
    // Version 1.0 unless the header length does not fit in u16.
    let padded = |prefix: usize| (prefix + dict.len() + 1).div_ceil(HEADER_ALIGN) * HEADER_ALIGN - prefix;
    let (version, len_size) = if padded(10) <= u16::MAX as usize { (1u8, 2) } else { (2u8, 4) };
    let header_len = padded(8 + len_size);
    let mut out = Vec::with_capacity(8 + len_size + header_len + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if len_size == 2 {
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(8 + len_size + header_len - 1, b' ');
    out.push(b'\n');
    out.extend_from_slice(&data);
    Ok(out)
}

/// Maps a NumPy `descr` string to a dtype.
fn parse_descr(descr: &str, path: &Path) -> Result<DType, NpyError> {
    let unsupported =
        |detail: &str| NpyError::UnsupportedDType { path: path.to_path_buf(), descr: descr.to_string(), detail: detail.to_string() };
    let mut chars = descr.chars();
    let order = chars.next().ok_or_else(|| unsupported(" (empty)"))?;
    let code = chars.as_str();
    let dtype = match code {
        "b1" => DType::Bool,
        "i1" => DType::I8,
        "i2" => DType::I16,
        "i4" => DType::I32,
        "i8" => DType::I64,
        "u1" => DType::U8,
        "u4" => DType::U32,
        "u8" => DType::U64,
        "f2" => DType::F16,
        "f4" => DType::F32,
        "f8" => DType::F64,
        // ml_dtypes' bfloat16, which NumPy saves as a 2-byte void.
        "V2" => DType::BF16,
        _ => {
            return Err(unsupported(" (supported: <f2, <f4, <f8, |i1, <i2, <i4, <i8, |u1, <u4, <u8, |b1, and <V2 or <f4 for bf16)"));
        }
    };
    if code == "V2" {
        // A void has no byte order of its own (`|V2`); ml_dtypes writes `<V2`, its bits little-endian.
        return match order {
            '<' | '|' => Ok(dtype),
            '=' if cfg!(target_endian = "little") => Ok(dtype),
            _ => Err(NpyError::BigEndian { path: path.to_path_buf(), descr: descr.to_string() }),
        };
    }
    let one_byte = dtype.size() == 1;
    match order {
        '<' => Ok(dtype),
        '|' if one_byte => Ok(dtype),
        '=' if one_byte || cfg!(target_endian = "little") => Ok(dtype),
        '>' if one_byte => Ok(dtype),
        '>' | '=' => Err(NpyError::BigEndian { path: path.to_path_buf(), descr: descr.to_string() }),
        _ => Err(unsupported(" (bad byte-order character)")),
    }
}

/// The three keys of a `.npy` header.
#[derive(Debug, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A value of the Python-literal subset that headers use.
#[derive(Debug)]
enum PyValue {
    Str(String),
    Bool(bool),
    Int(u64),
    Tuple(Vec<PyValue>),
    /// A list (structured dtypes put one in `descr`); kept only to report it.
    List,
}

/// Parses the header dictionary, e.g. `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_header(text: &str) -> Result<Header, String> {
    let mut p = Parser { s: text.as_bytes(), i: 0 };
    p.ws();
    p.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = match p.value(0)? {
            PyValue::Str(s) => s,
            v => return Err(format!("expected a string key, found {v:?}")),
        };
        p.ws();
        p.expect(b':')?;
        p.ws();
        let v = p.value(0)?;
        match (key.as_str(), v) {
            ("descr", PyValue::Str(s)) => descr = Some(s),
            ("descr", PyValue::List) => return Err("structured dtypes (a list in `descr`) are not supported".into()),
            ("fortran_order", PyValue::Bool(b)) => fortran = Some(b),
            ("shape", PyValue::Tuple(items)) => {
                let mut dims = vec![];
                for it in items {
                    match it {
                        PyValue::Int(n) => dims.push(usize::try_from(n).map_err(|_| format!("dimension {n} is too large"))?),
                        other => return Err(format!("shape holds a non-integer: {other:?}")),
                    }
                }
                shape = Some(dims);
            }
            ("descr" | "fortran_order" | "shape", v) => return Err(format!("key `{key}` has an unexpected value {v:?}")),
            _ => {} // Unknown keys are ignored, as NumPy's writer may add some one day.
        }
        p.ws();
        if p.eat(b',') {
            continue;
        }
        p.ws();
        p.expect(b'}')?;
        break;
    }
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("unexpected text after the dictionary at byte {}", p.i));
    }
    Ok(Header {
        descr: descr.ok_or("missing key `descr`")?,
        fortran_order: fortran.ok_or("missing key `fortran_order`")?,
        shape: shape.ok_or("missing key `shape`")?,
    })
}

/// A cursor over the header text.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            match self.peek() {
                Some(f) => Err(format!("expected `{}` at byte {}, found `{}`", c as char, self.i, f as char)),
                None => Err(format!("expected `{}`, found the end of the header", c as char)),
            }
        }
    }

    /// One literal: a quoted string, `True`/`False`, a non-negative integer (an `L` suffix is
    /// accepted, as Python 2 wrote), a tuple or a list (skipped).
    fn value(&mut self, depth: usize) -> Result<PyValue, String> {
        if depth > 8 {
            return Err("nesting too deep".into());
        }
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => {
                self.i += 1;
                let start = self.i;
                while self.peek().is_some_and(|c| c != q) {
                    if self.peek() == Some(b'\\') {
                        return Err("escape sequences in strings are not supported".into());
                    }
                    self.i += 1;
                }
                let s = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.expect(q)?;
                Ok(PyValue::Str(s))
            }
            Some(b'0'..=b'9') => {
                let mut n: u64 = 0;
                while let Some(c @ b'0'..=b'9') = self.peek() {
                    n = n.checked_mul(10).and_then(|n| n.checked_add((c - b'0') as u64)).ok_or("integer too large")?;
                    self.i += 1;
                }
                let _ = self.eat(b'L');
                Ok(PyValue::Int(n))
            }
            Some(b'(') => {
                self.i += 1;
                let mut items = vec![];
                loop {
                    self.ws();
                    if self.eat(b')') {
                        break;
                    }
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    if !self.eat(b',') {
                        self.ws();
                        self.expect(b')')?;
                        break;
                    }
                }
                Ok(PyValue::Tuple(items))
            }
            Some(b'[') => {
                self.i += 1;
                loop {
                    self.ws();
                    if self.eat(b']') {
                        break;
                    }
                    self.value(depth + 1)?;
                    self.ws();
                    if !self.eat(b',') {
                        self.ws();
                        self.expect(b']')?;
                        break;
                    }
                }
                Ok(PyValue::List)
            }
            Some(b'T') if self.s[self.i..].starts_with(b"True") => {
                self.i += 4;
                Ok(PyValue::Bool(true))
            }
            Some(b'F') if self.s[self.i..].starts_with(b"False") => {
                self.i += 5;
                Ok(PyValue::Bool(false))
            }
            Some(b'-') => Err("negative numbers are not valid here".into()),
            Some(c) => Err(format!("unexpected `{}` at byte {}", c as char, self.i)),
            None => Err("unexpected end of the header".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("t.npy")
    }

    fn sample(dtype: DType, shape: &[usize]) -> HostTensor {
        let n: usize = shape.iter().product();
        let vals: Vec<f64> = (0..n).map(|i| if dtype == DType::Bool { (i % 3 == 0) as u8 as f64 } else { i as f64 * 1.5 - 3.0 }).collect();
        HostTensor::from_f64(dtype, shape, &vals)
    }

    /// Builds a file by hand with the given version and header text.
    fn raw(major: u8, header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&[major, 0]);
        if major == 1 {
            v.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            v.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn round_trip_every_dtype() {
        for dtype in DType::ALL {
            for shape in [vec![], vec![0], vec![5], vec![3, 4], vec![2, 0, 3], vec![2, 3, 4]] {
                let t = sample(dtype, &shape);
                let bytes = encode_npy(&t, p()).unwrap();
                assert_eq!((bytes.len() - t.numel() * if dtype == DType::BF16 { 4 } else { dtype.size() }) % HEADER_ALIGN, 0);
                let back = decode_npy(&bytes, p()).unwrap();
                if dtype == DType::BF16 {
                    assert_eq!(back.dtype, DType::F32);
                    let again = convert_to(back, DType::BF16, p()).unwrap();
                    assert_eq!(again, t, "{dtype} {shape:?}");
                } else {
                    assert_eq!(back, t, "{dtype} {shape:?}");
                }
            }
        }
    }

    #[test]
    fn round_trip_through_files() {
        let dir = std::env::temp_dir().join(format!("tessera-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for dtype in DType::ALL {
            let path = dir.join(format!("{dtype}.npy"));
            let t = sample(dtype, &[3, 5]);
            write_npy(&path, &t).unwrap();
            assert_eq!(read_npy_as(&path, dtype).unwrap(), t);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn header_layout_matches_numpy() {
        // What `np.save` writes for np.zeros((3, 4), np.float32).
        let t = HostTensor::zeros(DType::F32, &[3, 4]);
        let bytes = encode_npy(&t, p()).unwrap();
        assert_eq!(&bytes[..10], b"\x93NUMPY\x01\x00\x76\x00");
        let header = std::str::from_utf8(&bytes[10..128]).unwrap();
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"));
        assert!(header.ends_with(" \n"));
        assert_eq!(bytes.len(), 128 + 48);
        // 1-d and 0-d shapes use Python tuple syntax.
        let b = encode_npy(&HostTensor::zeros(DType::U8, &[7]), p()).unwrap();
        assert!(String::from_utf8_lossy(&b).contains("'descr': '|u1'") && String::from_utf8_lossy(&b).contains("(7,)"));
        let b = encode_npy(&HostTensor::zeros(DType::F64, &[]), p()).unwrap();
        assert!(String::from_utf8_lossy(&b).contains("'shape': ()"));
    }

    #[test]
    fn parses_header_variants() {
        let h = parse_header("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }     \n").unwrap();
        assert_eq!(h, Header { descr: "<f4".into(), fortran_order: false, shape: vec![3, 4] });
        let h = parse_header("{\"shape\":(5,),\"fortran_order\":True,\"descr\":\"|b1\"}").unwrap();
        assert_eq!(h, Header { descr: "|b1".into(), fortran_order: true, shape: vec![5] });
        let h = parse_header("{'descr': '<i8', 'fortran_order': False, 'shape': (2L, 3L), 'extra': [1, 2]}").unwrap();
        assert_eq!(h.shape, vec![2, 3]);
        assert_eq!(parse_header("{'descr': '<f8', 'fortran_order': False, 'shape': ()}").unwrap().shape, Vec::<usize>::new());
        for bad in [
            "",
            "{",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} junk",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}",
            "{'descr: '<f4'}",
            "((((((((((((((((((((",
        ] {
            assert!(parse_header(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_versions_2_and_3() {
        let data = 7i32.to_le_bytes();
        for major in [2, 3] {
            let f = raw(major, "{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }\n", &data);
            let t = decode_npy(&f, p()).unwrap();
            assert_eq!((t.dtype, t.shape.clone(), t.get_i64(0)), (DType::I32, vec![1], 7));
        }
        let f = raw(1, "{'descr': '=i4', 'fortran_order': False, 'shape': (1,), }\n", &data);
        assert_eq!(decode_npy(&f, p()).unwrap().get_i64(0), 7);
    }

    #[test]
    fn bf16_conversion_rounds_to_nearest_even() {
        // 1 + 2^-8 is halfway between two bf16 values: it rounds to the even one, 1.0.
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): it rounds up.
        let vals = [1.0f32 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -2.5, f32::INFINITY];
        let t = HostTensor { dtype: DType::F32, shape: vec![4], bytes: vals.iter().flat_map(|v| v.to_le_bytes()).collect() };
        let b = convert_to(t, DType::BF16, p()).unwrap();
        assert_eq!(b.to_f64_vec(), vec![1.0, 1.015625, -2.5, f64::INFINITY]);
    }

    #[test]
    fn dtype_mismatch_is_an_error() {
        let t = HostTensor::zeros(DType::F64, &[2]);
        let e = convert_to(t.clone(), DType::F32, p()).unwrap_err();
        assert!(matches!(e, NpyError::DTypeMismatch { expected: DType::F32, found: DType::F64, .. }), "{e}");
        let e = convert_to(t, DType::BF16, p()).unwrap_err();
        assert!(e.to_string().contains("bf16 is read from a `<V2` (ml_dtypes' bfloat16) or `<f4` file"), "{e}");
    }

    /// ml_dtypes' bfloat16 as NumPy saves it (`np.save(f, np.arange(4, dtype=np.float32)
    /// .astype(ml_dtypes.bfloat16))`, NumPy 2, ml_dtypes 0.7: these bytes) is read as bf16, and
    /// written back the same way with `Bf16Npy::MlDtypes`; a big-endian `>V2` is refused.
    #[test]
    fn ml_dtypes_bfloat16_files() {
        let dict = "{'descr': '<V2', 'fortran_order': False, 'shape': (4,), }";
        let header = format!("{dict}{}\n", " ".repeat(118 - dict.len() - 1));
        let data = [0x00, 0x00, 0x80, 0x3f, 0x00, 0x40, 0x40, 0x40];
        let file = raw(1, &header, &data);
        assert_eq!(file.len(), 136);
        let t = decode_npy(&file, p()).unwrap();
        assert_eq!((t.dtype, t.shape.clone(), t.to_f64_vec()), (DType::BF16, vec![4], vec![0.0, 1.0, 2.0, 3.0]));
        assert_eq!(encode_npy_with(&t, p(), Bf16Npy::MlDtypes).unwrap(), file, "written as NumPy writes it");
        // The default writes `<f4`, which reads back as the same bf16 values.
        let f32_file = encode_npy(&t, p()).unwrap();
        assert_eq!(convert_to(decode_npy(&f32_file, p()).unwrap(), DType::BF16, p()).unwrap(), t);
        for (descr, ok) in [("|V2", true), ("=V2", cfg!(target_endian = "little")), (">V2", false), ("<V4", false)] {
            let h = header.replace("<V2", descr);
            assert_eq!(decode_npy(&raw(1, &h, &data), p()).is_ok(), ok, "{descr}");
        }
    }

    #[test]
    fn malformed_files_are_errors() {
        let ok = encode_npy(&sample(DType::F32, &[2, 3]), p()).unwrap();
        // Every truncation of a good file is an error, never a panic.
        for n in 0..ok.len() {
            let e = decode_npy(&ok[..n], p()).unwrap_err();
            assert!(matches!(e, NpyError::Truncated { .. }), "{n}: {e}");
            assert!(e.to_string().starts_with("t.npy: truncated"), "{e}");
        }
        let mut long = ok.clone();
        long.push(0);
        assert!(matches!(decode_npy(&long, p()), Err(NpyError::SizeMismatch { expected: 24, got: 25, .. })));

        let mut bad = ok.clone();
        bad[1] = b'X';
        assert!(matches!(decode_npy(&bad, p()), Err(NpyError::BadMagic { .. })));
        assert!(matches!(decode_npy(b"hello world, not npy", p()), Err(NpyError::BadMagic { .. })));
        let mut v = ok.clone();
        v[6] = 4;
        assert!(matches!(decode_npy(&v, p()), Err(NpyError::UnsupportedVersion { major: 4, .. })));

        let hdr =
            |descr: &str, fortran: &str| raw(1, &format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': (1,), }}\n"), &[0; 8]);
        assert!(matches!(decode_npy(&hdr(">f8", "False"), p()), Err(NpyError::BigEndian { .. })));
        assert!(matches!(decode_npy(&hdr("<f8", "True"), p()), Err(NpyError::FortranOrder { .. })));
        for d in ["<c8", "<u2", "<U1", "|V8", "<f16", "", "xf8", "<M8[ns]"] {
            let e = decode_npy(&hdr(d, "False"), p()).unwrap_err();
            assert!(matches!(e, NpyError::UnsupportedDType { .. }), "{d}: {e}");
        }
        let e = decode_npy(&raw(1, "{'descr': '<f4', 'shape': (1,)}", &[0; 4]), p()).unwrap_err();
        assert!(e.to_string().contains("missing key `fortran_order`"), "{e}");
        // A huge shape overflows instead of allocating.
        let e =
            decode_npy(&raw(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16)}", &[]), p()).unwrap_err();
        assert!(matches!(e, NpyError::ShapeTooLarge { .. }), "{e}");
        // Bad UTF-8 in a version 3 header.
        let mut v3 = raw(3, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", &[0; 4]);
        v3[13] = 0xff;
        assert!(matches!(decode_npy(&v3, p()), Err(NpyError::BadHeader { .. })));
        // A header length past the end of the file.
        let mut v = ok.clone();
        v[8] = 0xff;
        v[9] = 0x7f;
        assert!(matches!(decode_npy(&v, p()), Err(NpyError::Truncated { .. })));
    }

    #[test]
    fn bools_are_normalised() {
        let f = raw(1, "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }\n", &[0, 1, 7]);
        assert_eq!(decode_npy(&f, p()).unwrap().bytes, vec![0, 1, 1]);
    }

    #[test]
    fn io_errors_name_the_file() {
        let e = read_npy("/nonexistent/dir/x.npy").unwrap_err();
        assert!(matches!(e, NpyError::File { source: FileError::NotFound, .. }));
        assert!(e.to_string().starts_with("/nonexistent/dir/x.npy: "), "{e}");
        let e = write_npy("/nonexistent/dir/x.npy", &HostTensor::zeros(DType::F32, &[1])).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dir/x.npy"), "{e}");
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tessera-npy-checks-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d.join(name)
    }

    /// A file far longer than its header says is refused from its length alone: nothing is
    /// read past the header (this one is a sparse 1 TiB file; reading it whole would abort).
    #[test]
    fn the_length_is_checked_before_the_data_is_read() {
        let path = tmp("long.npy");
        let head = raw(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n", &[]);
        std::fs::write(&path, &head).expect("write");
        let f = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(1 << 40).expect("sparse file");
        drop(f);
        let e = read_npy(&path).unwrap_err();
        assert!(matches!(e, NpyError::SizeMismatch { expected: 16, .. }), "{e}");
        // A header whose shape matches such a length: refused by the host tensor limit, before
        // any allocation.
        let head = raw(1, "{'descr': '|u1', 'fortran_order': False, 'shape': (1099511627776,), }\n", &[]);
        std::fs::write(&path, &head).expect("write");
        let f = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(head.len() as u64 + (1 << 40)).expect("sparse file");
        drop(f);
        let e = read_npy(&path).unwrap_err();
        assert!(matches!(e, NpyError::Alloc { source: AllocError::TooLarge { .. }, .. }), "{e}");
        let _ = std::fs::remove_file(&path);
    }

    #[cfg(unix)]
    #[test]
    fn fifos_and_devices_are_refused() {
        let fifo = tmp("fifo.npy");
        let _ = std::fs::remove_file(&fifo);
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
        let e = read_npy(&fifo).unwrap_err();
        assert_eq!(e.to_string(), format!("{}: it is a FIFO, not a regular file", fifo.display()));
        let e = read_npy("/dev/zero").unwrap_err();
        assert_eq!(e.to_string(), "/dev/zero: it is a device, not a regular file");
        let _ = std::fs::remove_file(&fifo);
    }

    #[test]
    fn inconsistent_tensor_is_not_written() {
        let t = HostTensor { dtype: DType::F32, shape: vec![2, 2], bytes: vec![0; 15] };
        assert!(matches!(encode_npy(&t, p()), Err(NpyError::BadTensor { expected: 16, got: 15, .. })));
    }

    #[test]
    fn f16_values_survive() {
        let t = HostTensor::from_f64(DType::F16, &[3], &[0.5, -1.25, 65504.0]);
        let back = decode_npy(&encode_npy(&t, p()).unwrap(), p()).unwrap();
        assert_eq!(back.to_f64_vec(), vec![0.5, -1.25, 65504.0]);
        assert_eq!(u16::from_le_bytes([back.bytes[0], back.bytes[1]]), half::f16::from_f32(0.5).to_bits());
    }
}
