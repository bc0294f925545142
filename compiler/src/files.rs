//! Reading files a user names: checked before they are read whole.
//!
//! Every file the compiler or the runtime reads on a user's behalf (a source file, an imported
//! file, a `.npy` input, a cache entry, an AOT pair) is opened here: it must be a regular file
//! (never a FIFO, a device or a socket: `/dev/zero` would never end, a FIFO would block), it is
//! opened without blocking (so a file swapped for a FIFO after the check cannot hang the open),
//! the opened handle is checked again, and its length is compared with a limit before anything
//! is read. A file that grows while it is read is cut at the limit and refused.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

/// The largest source file (a `.tile` file given on the command line or imported) read: 4 MiB.
pub const MAX_SOURCE_BYTES: u64 = 4 << 20;

/// Why a file could not be read. The messages complete "cannot read `PATH`: …".
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("no such file")]
    NotFound,
    #[error("it is a folder, not a file")]
    Folder,
    #[error("it is a {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("it is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("it is not UTF-8 text")]
    NotUtf8,
    #[error("it changed while it was opened")]
    Changed,
    #[error("{0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for FileError {
    fn from(e: std::io::Error) -> FileError {
        match e.kind() {
            std::io::ErrorKind::NotFound => FileError::NotFound,
            _ => FileError::Io(e),
        }
    }
}

/// What kind of file `md` describes, when it is not a regular file.
fn not_regular(md: &Metadata) -> Option<FileError> {
    let t = md.file_type();
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some(FileError::Folder);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some(FileError::NotRegular("FIFO"));
        }
        if t.is_char_device() || t.is_block_device() {
            return Some(FileError::NotRegular("device"));
        }
        if t.is_socket() {
            return Some(FileError::NotRegular("socket"));
        }
    }
    Some(FileError::NotRegular("special file"))
}

/// Opens `path` for reading if it is a regular file (symbolic links are followed); returns the
/// handle and its metadata (read from the handle itself).
pub fn open_regular(path: &Path) -> Result<(File, Metadata), FileError> {
    let before = std::fs::metadata(path)?;
    if let Some(e) = not_regular(&before) {
        return Err(e);
    }
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Opening a FIFO for reading blocks until a writer comes; non-blocking, it returns at
        // once (and the check below refuses it).
        o.custom_flags(libc::O_NONBLOCK);
    }
    let f = o.open(path)?;
    let md = f.metadata()?;
    if let Some(e) = not_regular(&md) {
        return Err(e);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if (md.dev(), md.ino()) != (before.dev(), before.ino()) {
            return Err(FileError::Changed);
        }
    }
    Ok((f, md))
}

/// Reads the whole of `path`, a regular file of at most `limit` bytes.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let (f, md) = open_regular(path)?;
    read_handle(f, md.len(), limit)
}

/// Reads what is left of `f` (whose length the caller checked: `len`), refusing more than
/// `limit` bytes even if the file grows meanwhile.
pub fn read_handle(f: File, len: u64, limit: u64) -> Result<Vec<u8>, FileError> {
    if len > limit {
        return Err(FileError::TooLarge { size: len, limit });
    }
    let mut out = Vec::new();
    out.try_reserve_exact(len as usize).map_err(|_| FileError::TooLarge { size: len, limit })?;
    f.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(FileError::TooLarge { size: out.len() as u64, limit });
    }
    Ok(out)
}

/// Reads a UTF-8 source file of at most [`MAX_SOURCE_BYTES`].
pub fn read_source_text(path: &Path) -> Result<String, FileError> {
    String::from_utf8(read_limited(path, MAX_SOURCE_BYTES)?).map_err(|_| FileError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tessera-files-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d.join(name)
    }

    #[test]
    fn regular_files_within_the_limit_are_read() {
        let p = tmp("ok.txt");
        std::fs::write(&p, b"hello").expect("write");
        assert_eq!(read_limited(&p, 5).expect("reads"), b"hello");
        assert!(matches!(read_limited(&p, 4), Err(FileError::TooLarge { size: 5, limit: 4 })));
        assert!(matches!(read_limited(&tmp("missing"), 4), Err(FileError::NotFound)));
        assert!(matches!(read_limited(p.parent().expect("dir"), 4), Err(FileError::Folder)));
        std::fs::write(&p, [0xff, 0xfe]).expect("write");
        assert!(matches!(read_source_text(&p), Err(FileError::NotUtf8)));
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_fifos_are_refused_without_blocking() {
        let e = read_limited(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "it is a device, not a regular file");
        let fifo = tmp("fifo");
        let _ = std::fs::remove_file(&fifo);
        let ok = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs").success();
        assert!(ok, "mkfifo failed");
        // With no writer, a blocking open would never return.
        let e = read_limited(&fifo, 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "it is a FIFO, not a regular file");
        let _ = std::fs::remove_file(&fifo);
    }
}
