//! ptxas's resource report for a kernel's PTX, without a GPU (`tessera build --spills`): the
//! entry's registers and the bytes it spills, from `ptxas -v`.

use std::path::{Path, PathBuf};
use tessera_compiler::{KernelMeta, Target};

/// What ptxas reported for a kernel's entry function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resources {
    pub registers: i32,
    /// Bytes of spill stores per thread.
    pub spill_bytes: i32,
}

/// The ptxas to run: `$TESSERA_PTXAS`, else `ptxas` on the `PATH`.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TESSERA_PTXAS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("ptxas")).find(|p| p.is_file())
}

/// Assembles `ptx` (the PTX of kernel `meta`) with `ptxas` for its target and returns the entry's
/// resources.
pub fn resources(ptxas: &Path, ptx: &str, meta: &KernelMeta) -> Result<Resources, String> {
    let dir = std::env::temp_dir().join(format!("tessera-ptxas-{}-{}", std::process::id(), meta.name));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let src = dir.join("k.ptx");
    let run = || -> Result<String, String> {
        std::fs::write(&src, ptx).map_err(|e| format!("cannot write `{}`: {e}", src.display()))?;
        let arch = match meta.target {
            Target::Sm80 => "sm_80",
            Target::Sm90a => "sm_90a",
        };
        let out = std::process::Command::new(ptxas)
            .args([&format!("-arch={arch}"), "-v", "-o"])
            .arg(dir.join("k.cubin"))
            .arg(&src)
            .output()
            .map_err(|e| format!("cannot run `{}`: {e}", ptxas.display()))?;
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(format!("ptxas rejected the PTX of `{}`:\n{log}", meta.name));
        }
        Ok(log)
    };
    let log = run();
    let _ = std::fs::remove_dir_all(&dir);
    parse(&log?, &meta.name).ok_or_else(|| format!("no resource report for `{}` in ptxas's output", meta.name))
}

/// The entry `name`'s registers and spill stores in a `ptxas -v` log.
fn parse(log: &str, name: &str) -> Option<Resources> {
    let number_before = |line: &str, what: &str| -> Option<i32> {
        let at = line.find(what)?;
        line[..at].split_whitespace().last()?.parse().ok()
    };
    let lines: Vec<&str> = log.lines().collect();
    let props = lines.iter().position(|l| l.trim_end().ends_with(&format!("Function properties for {name}")))?;
    let spill_bytes = number_before(lines.get(props + 1)?, " bytes spill stores")?;
    let entry = lines.iter().position(|l| l.contains(&format!("entry function '{name}'")))?;
    let registers = lines[entry..].iter().find_map(|l| number_before(l, " registers"))?;
    Some(Resources { registers, spill_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_report_is_read() {
        let log = "ptxas info    : 0 bytes gmem\n\
            ptxas info    : Function properties for tessera_copy_slow_0\n    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n\
            ptxas info    : Compiling entry function 'linear' for 'sm_90a'\n\
            ptxas info    : Function properties for linear\n    56 bytes stack frame, 56 bytes spill stores, 56 bytes spill loads\n\
            ptxas info    : Used 255 registers, used 1 barriers, 56 bytes cumulative stack size\n";
        assert_eq!(parse(log, "linear"), Some(Resources { registers: 255, spill_bytes: 56 }));
        assert_eq!(parse(log, "matmul"), None);
    }
}
