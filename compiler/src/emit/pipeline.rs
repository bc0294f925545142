//! The LLVM pass pipelines a user may ask for (`--llvm-passes`, `Options::llvm_passes`):
//! `opt -passes=` syntax over an allow-list of optimisation passes. LLVM ends the process on some
//! pipelines instead of returning an error (InstCombine's fixpoint check, `report_fatal_error` in
//! passes run where they do not belong), and some passes write files (`dot-cfg`) or print: the
//! text is checked here, before LLVM sees it, and InstCombine always runs without the check.

/// The optimisation pipeline. The machine IR is already folded, numbered and hoisted, and
/// ptxas optimises the PTX heavily, so a short function pipeline suffices: `mem2reg` (the
/// registers written more than once), one round of CSE and InstCombine (the guards this
/// emitter adds, the bit casts), and a final CFG cleanup. Measured against `default<O2>` on the
/// examples (`docs/benchmarks.md`).
pub const DEFAULT: &str = "function(mem2reg,early-cse,instcombine<max-iterations=1;no-verify-fixpoint>,simplifycfg<keep-loops>)";

/// Longest pipeline text accepted.
const MAX_LEN: usize = 4096;
/// Deepest nesting of adaptors accepted.
const MAX_DEPTH: usize = 8;

/// Pass managers a pipeline may nest: `function(...)` and so on.
const ADAPTORS: &[&str] = &["module", "cgscc", "function", "loop", "loop-mssa"];

/// The passes a pipeline may name: scalar, loop and inlining optimisations that only rewrite IR.
const PASSES: &[&str] = &[
    "adce",
    "aggressive-instcombine",
    "always-inline",
    "bdce",
    "constraint-elimination",
    "correlated-propagation",
    "dce",
    "div-rem-pairs",
    "dse",
    "early-cse",
    "float2int",
    "globaldce",
    "globalopt",
    "gvn",
    "gvn-hoist",
    "gvn-sink",
    "indvars",
    "infer-address-spaces",
    "inline",
    "instcombine",
    "instsimplify",
    "jump-threading",
    "lcssa",
    "licm",
    "load-store-vectorizer",
    "loop-deletion",
    "loop-instsimplify",
    "loop-rotate",
    "loop-simplify",
    "loop-simplifycfg",
    "loop-sink",
    "loop-unroll",
    "lower-expect",
    "mem2reg",
    "memcpyopt",
    "mldst-motion",
    "nary-reassociate",
    "newgvn",
    "reassociate",
    "sccp",
    "separate-const-offset-from-gep",
    "simplifycfg",
    "sink",
    "slp-vectorizer",
    "slsr",
    "speculative-execution",
    "sroa",
    "tailcallelim",
    "verify",
];

/// The pipeline `text` as LLVM is to run it, or why it is refused.
pub fn check(text: &str) -> Result<String, String> {
    if text.len() > MAX_LEN {
        return Err(format!("the pipeline is {} bytes long (at most {MAX_LEN})", text.len()));
    }
    let mut p = Parser { s: text.as_bytes(), at: 0, out: String::new(), within: vec![] };
    p.list(0)?;
    if p.at != p.s.len() {
        return Err(format!("unexpected `{}` at byte {}", p.s[p.at] as char, p.at));
    }
    if p.out.is_empty() {
        return Err("the pipeline is empty".into());
    }
    Ok(p.out)
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
    out: String,
    /// The adaptors around the current element, innermost last.
    within: Vec<String>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    /// `elem (',' elem)*`
    fn list(&mut self, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("the pipeline nests more than {MAX_DEPTH} deep"));
        }
        self.elem(depth)?;
        while self.peek() == Some(b',') {
            self.at += 1;
            self.out.push(',');
            self.elem(depth)?;
        }
        Ok(())
    }

    /// `name ('<' params '>')? ('(' list ')')?`
    fn elem(&mut self, depth: usize) -> Result<(), String> {
        let start = self.at;
        while matches!(self.peek(), Some(b'a'..=b'z' | b'0'..=b'9' | b'-')) {
            self.at += 1;
        }
        let name = std::str::from_utf8(&self.s[start..self.at]).unwrap_or_default().to_string();
        if name.is_empty() {
            return Err(match self.peek() {
                Some(c) => format!("expected a pass name at byte {}, found `{}`", self.at, c as char),
                None => "expected a pass name at the end".into(),
            });
        }
        let params = if self.peek() == Some(b'<') {
            let open = self.at;
            self.at += 1;
            while matches!(self.peek(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'=' | b';')) {
                self.at += 1;
            }
            if self.peek() != Some(b'>') {
                return Err(format!("unclosed `<` at byte {open}"));
            }
            self.at += 1;
            Some(std::str::from_utf8(&self.s[open + 1..self.at - 1]).unwrap_or_default().to_string())
        } else {
            None
        };
        self.out.push_str(&name);
        if ADAPTORS.contains(&name.as_str()) {
            if params.is_some() {
                return Err(format!("`{name}` takes no parameters here"));
            }
            if self.peek() != Some(b'(') {
                return Err(format!("`{name}` needs a nested pipeline: `{name}(...)`"));
            }
            self.at += 1;
            self.out.push('(');
            self.within.push(name.clone());
            self.list(depth + 1)?;
            self.within.pop();
            if self.peek() != Some(b')') {
                return Err(format!("expected `)` at byte {}", self.at));
            }
            self.at += 1;
            self.out.push(')');
            return Ok(());
        }
        let params = match (name.as_str(), params.as_deref()) {
            ("default", Some(o @ ("O0" | "O1" | "O2" | "O3" | "Os" | "Oz"))) => Some(o.to_string()),
            ("default", _) => return Err("`default` takes one of O0, O1, O2, O3, Os, Oz: `default<O2>`".into()),
            // Never InstCombine's fixpoint check: it aborts the process when it fails.
            ("instcombine", p) => {
                let mut out = vec!["no-verify-fixpoint".to_string()];
                for part in p.unwrap_or_default().split(';').filter(|x| !x.is_empty()) {
                    match part.strip_prefix("max-iterations=").map(str::parse::<u32>) {
                        Some(Ok(n)) if n <= 1000 => out.insert(0, part.to_string()),
                        _ if part == "no-verify-fixpoint" || part == "verify-fixpoint" => {}
                        _ => return Err(format!("`instcombine` takes `max-iterations=N` (N ≤ 1000), not `{part}`")),
                    }
                }
                Some(out.join(";"))
            }
            ("simplifycfg", Some(p)) => {
                const OK: &[&str] = &[
                    "keep-loops",
                    "no-keep-loops",
                    "hoist-common-insts",
                    "no-hoist-common-insts",
                    "sink-common-insts",
                    "no-sink-common-insts",
                    "speculate-blocks",
                    "no-speculate-blocks",
                ];
                match p.split(';').find(|x| !OK.contains(x)) {
                    Some(bad) => return Err(format!("`simplifycfg` does not take `{bad}` here")),
                    None => Some(p.to_string()),
                }
            }
            (n, _) if !PASSES.contains(&n) => return Err(format!("`{n}` is not a pass a pipeline may name here")),
            // LLVM aborts on LICM without MemorySSA.
            ("licm", _) if self.within.last().map(String::as_str) != Some("loop-mssa") => {
                return Err("`licm` runs only inside `loop-mssa(...)`: `function(loop-mssa(licm))`".into());
            }
            (n, Some(_)) => return Err(format!("`{n}` takes no parameters here")),
            (_, None) => None,
        };
        if let Some(p) = params {
            self.out.push('<');
            self.out.push_str(&p);
            self.out.push('>');
        }
        if self.peek() == Some(b'(') {
            return Err(format!("`{name}` is a pass, not a pass manager: it takes no nested pipeline"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn pipelines_are_checked_and_instcombine_never_verifies_its_fixpoint() {
        assert_eq!(check("default<O2>").as_deref(), Ok("default<O2>"));
        assert_eq!(check("function(mem2reg,instcombine)").as_deref(), Ok("function(mem2reg,instcombine<no-verify-fixpoint>)"));
        assert_eq!(
            check("function(instcombine<max-iterations=1;verify-fixpoint>)").as_deref(),
            Ok("function(instcombine<max-iterations=1;no-verify-fixpoint>)")
        );
        assert_eq!(check(super::DEFAULT).as_deref(), Ok(super::DEFAULT));
        assert_eq!(check("function(loop-mssa(licm))").as_deref(), Ok("function(loop-mssa(licm))"));
        for bad in [
            "",
            "dot-cfg",
            "function(print<domtree>)",
            "default<O9>",
            "function(",
            "function(mem2reg))",
            "mem2reg(sroa)",
            "function(mem2reg,,sroa)",
            "instcombine<max-iterations=99999999999>",
            "simplifycfg<bonus-inst-threshold=1000000>",
            "\u{0}",
            "licm",
            "function(licm)",
            "function(loop(licm))",
        ] {
            assert!(check(bad).is_err(), "{bad:?} accepted");
        }
        let deep = format!("{}mem2reg{}", "function(".repeat(20), ")".repeat(20));
        assert!(check(&deep).is_err());
        assert!(check(&"mem2reg,".repeat(1000)).is_err());
    }
}
