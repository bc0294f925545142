//! The tile IR's text form. Values are renumbered in definition order so that the text does not
//! depend on arena order; `parse` reads this form back.
//!
//! ```text
//! kernel @vadd(%0 = x: &f32[N], %1 = y: &f32[N], %2 = z: &mut f32[N])
//!     grid(((N + 1023) / 1024)) warps(4) stages(3)
//! {
//!   %3 = program_id 0 : i32
//!   %4 = const 1024 : i32
//!   %5 = mul %3, %4 : i32
//!   %6 = for %a, %b, %c, %init : f32[4] {
//!   ^(%7: i32, %8: f32[4]):
//!     yield %8
//!   }
//! }
//! ```

use super::{Kernel, Lit, OpKind, ParamKind};
use crate::ir::{Block, Numbering};
use std::fmt::Write;

/// Prints a kernel in the text form.
pub fn print_kernel(k: &Kernel) -> String {
    let mut p = Printer { k, out: String::new(), num: Numbering::default() };
    p.kernel();
    p.out
}

struct Printer<'a> {
    k: &'a Kernel,
    out: String,
    num: Numbering,
}

/// The attribute printed between an op's mnemonic and its operands (`program_id 0`).
pub fn attr_text(kind: &OpKind) -> Option<String> {
    match kind {
        OpKind::Const(l) => Some(format_lit(l)),
        OpKind::ProgramId(a) | OpKind::NumPrograms(a) | OpKind::ExpandDims(a) | OpKind::Dim(a) => Some(a.to_string()),
        OpKind::Reduce(_, a) | OpKind::ArgReduce(_, a) | OpKind::Scan(_, a) | OpKind::ScanFn(a) => Some(a.to_string()),
        OpKind::Print(s) | OpKind::Assert(s) => Some(format!("{s:?}")),
        OpKind::Arange(n) => Some(n.to_string()),
        OpKind::Slice(axis, start) => Some(format!("{axis} {start}")),
        OpKind::Permute(p) => Some(format!("[{}]", p.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "))),
        _ => None,
    }
}

/// Formats a literal so that the parser can tell floats from integers.
pub fn format_lit(l: &Lit) -> String {
    match l {
        Lit::Int(v) => v.to_string(),
        Lit::Bool(b) => b.to_string(),
        Lit::Float(f) if f.is_nan() => "nan".into(),
        Lit::Float(f) if f.is_infinite() => {
            if *f > 0.0 {
                "inf".into()
            } else {
                "-inf".into()
            }
        }
        Lit::Float(f) => format!("{f:?}"),
    }
}

impl Printer<'_> {
    fn kernel(&mut self) {
        let k = self.k;
        if let Some(doc) = &k.doc {
            for line in doc.lines() {
                let _ = writeln!(self.out, "///{}", if line.is_empty() { String::new() } else { format!(" {line}") });
            }
        }
        let _ = write!(self.out, "kernel @{}(", k.name);
        for (i, p) in k.params.iter().enumerate() {
            if i > 0 {
                self.out.push_str(", ");
            }
            let v = self.num.name(k.param_value(i));
            match &p.kind {
                ParamKind::Tensor { dtype, dims, mutable } => {
                    let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
                    let _ = write!(self.out, "{v} = {}: &{}{dtype}[{}]", p.name, if *mutable { "mut " } else { "" }, dims.join(", "));
                }
                ParamKind::Scalar { dtype } => {
                    let _ = write!(self.out, "{v} = {}: {dtype}", p.name);
                }
            }
        }
        self.out.push_str(")\n   ");
        if !k.consts.is_empty() {
            let cs: Vec<String> = k.consts.iter().map(|(n, v)| format!("{n} = {v}")).collect();
            let _ = write!(self.out, " consts({})", cs.join(", "));
        }
        let grid: Vec<String> = k.grid.iter().map(|g| g.to_string()).collect();
        let _ = write!(self.out, " grid({}) warps({}) stages({})", grid.join(", "), k.warps, k.stages);
        if let Some(n) = k.blocks_per_sm {
            let _ = write!(self.out, " blocks_per_sm({n})");
        }
        if k.warp_specialize {
            self.out.push_str(" warp_specialize");
        }
        for r in &k.requires {
            let _ = write!(self.out, "\n    require({}, {:?})", r.cond, r.text);
        }
        self.out.push_str("\n{\n");
        self.block_ops(k.body.entry, 1);
        self.out.push_str("}\n");
    }

    fn block_ops(&mut self, b: Block, depth: usize) {
        for &op in &self.k.body.block(b).ops.clone() {
            self.op(op, depth);
        }
    }

    fn op(&mut self, op: crate::ir::Op, depth: usize) {
        let body = &self.k.body;
        let data = body.op(op);
        let ind = "  ".repeat(depth);
        self.out.push_str(&ind);
        if !data.results.is_empty() {
            let rs: Vec<String> = data.results.iter().map(|&r| self.num.name(r)).collect();
            let _ = write!(self.out, "{} = ", rs.join(", "));
        }
        self.out.push_str(&data.kind.mnemonic());
        let attr = attr_text(&data.kind);
        let operands: Vec<String> = data.operands.iter().map(|&v| self.num.name(v)).collect();
        let mut parts = vec![];
        if let Some(a) = attr {
            parts.push(a);
        }
        parts.extend(operands);
        if !parts.is_empty() {
            let _ = write!(self.out, " {}", parts.join(", "));
        }
        if !data.results.is_empty() {
            let ts: Vec<String> = data.results.iter().map(|&r| body.ty(r).to_string()).collect();
            let _ = write!(self.out, " : {}", ts.join(", "));
        }
        for &r in &data.regions.clone() {
            let args: Vec<String> =
                self.k.body.block(r).args.clone().iter().map(|&a| format!("{}: {}", self.num.name(a), self.k.body.ty(a))).collect();
            let _ = write!(self.out, " {{\n{ind}^({}):\n", args.join(", "));
            self.block_ops(r, depth + 1);
            let _ = write!(self.out, "{ind}}}");
        }
        self.out.push('\n');
    }
}
