//! The text form of the machine IR (`tessera build --emit mir`): one line per instruction,
//! registers as `%N` (with `as TYPE` where an operand reads a register as another type of the
//! same width), constants as `VALUE:TYPE`.

use super::{Addr, Callee, Function, Inst, K, Module, Sym, Term, V};
use std::fmt::Write;

/// The module as text: the device functions, then the kernel.
pub fn print_module(m: &Module) -> String {
    let mut out = String::new();
    for (i, s) in m.strings.iter().enumerate() {
        writeln!(out, "string {i} = {s:?}").ok();
    }
    for f in &m.funcs {
        print_function(m, f, "func", &mut out);
        out.push('\n');
    }
    let bounds = m.blocks_per_sm.map(|n| format!(", at least {n} blocks per multiprocessor")).unwrap_or_default();
    writeln!(out, "// {} threads{bounds}, {}", m.threads, m.target.name()).ok();
    print_function(m, &m.kernel, "kernel", &mut out);
    out
}

fn v(f: &Function, x: V) -> String {
    match x.k {
        K::Reg(r) => match f.regs.get(r as usize) {
            Some(t) if *t == x.ty => format!("%{r}"),
            _ => format!("%{r} as {}", x.ty),
        },
        K::Imm(_) if x.ty.is_float() => format!("{}:{}", x.float_imm().unwrap_or(f64::NAN), x.ty),
        K::Imm(i) => format!("{i}:{}", x.ty),
    }
}

fn vs(f: &Function, xs: &[V]) -> String {
    xs.iter().map(|&x| v(f, x)).collect::<Vec<_>>().join(", ")
}

fn addr(f: &Function, a: &Addr) -> String {
    if a.offset == 0 { format!("[{}]", v(f, a.base)) } else { format!("[{} + {}]", v(f, a.base), a.offset) }
}

fn print_function(m: &Module, f: &Function, what: &str, out: &mut String) {
    let params: Vec<String> = f
        .params
        .iter()
        .map(|p| match (p.global_align, p.by_value) {
            (_, Some((bytes, align))) => format!("byval {bytes} align {align}"),
            (Some(a), None) => format!("{} global.align {a}", p.ty),
            (None, None) => p.ty.to_string(),
        })
        .collect();
    writeln!(out, "{what} @{}({}) {{", f.name, params.join(", ")).ok();
    if f.local_bytes > 0 {
        writeln!(out, "  local {} bytes, align {}", f.local_bytes, f.local_align).ok();
    }
    for (bi, b) in f.blocks.iter().enumerate() {
        if b.term.is_none() && b.insts.is_empty() && b.copies.is_empty() {
            continue;
        }
        writeln!(out, "bb{bi} ({}):", b.name).ok();
        for i in &b.insts {
            let defs = i.defs();
            let lhs = if defs.is_empty() {
                String::new()
            } else {
                let d: Vec<String> = defs.iter().map(|&d| format!("{}: {}", v(f, d), d.ty)).collect();
                format!("{} = ", d.join(", "))
            };
            writeln!(out, "  {lhs}{}", rhs(m, f, i)).ok();
        }
        if !b.copies.is_empty() {
            let c: Vec<String> = b.copies.iter().map(|&(d, s)| format!("{} <- {}", v(f, d), v(f, s))).collect();
            writeln!(out, "  copy {}", c.join(", ")).ok();
        }
        let t = match &b.term {
            Some(Term::Br(t)) => format!("br {t}"),
            Some(Term::CondBr(c, t, e)) => format!("br {} ? {t} : {e}", v(f, *c)),
            Some(Term::Ret) | None => "ret".into(),
            Some(Term::Trap) => "trap".into(),
        };
        writeln!(out, "  {t}").ok();
    }
    out.push_str("}\n");
}

fn rhs(m: &Module, f: &Function, i: &Inst) -> String {
    match i {
        Inst::Int { op, a, b, .. } => format!("{op:?} {}, {}", v(f, *a), v(f, *b)).to_lowercase(),
        Inst::MulWide { signed, a, b, .. } => format!("mul_wide.{} {}, {}", if *signed { "s" } else { "u" }, v(f, *a), v(f, *b)),
        Inst::Not { a, .. } => format!("not {}", v(f, *a)),
        Inst::Neg { a, .. } => format!("neg {}", v(f, *a)),
        Inst::Clz { a, .. } => format!("clz {}", v(f, *a)),
        Inst::ICmp { cmp, a, b, .. } => format!("icmp.{} {}, {}", format!("{cmp:?}").to_lowercase(), v(f, *a), v(f, *b)),
        Inst::FCmp { cmp, a, b, .. } => format!("fcmp.{} {}, {}", format!("{cmp:?}").to_lowercase(), v(f, *a), v(f, *b)),
        Inst::Select { c, a, b, .. } => format!("select {}, {}, {}", v(f, *c), v(f, *a), v(f, *b)),
        Inst::Float { op, a, b, .. } => format!("f{} {}, {}", format!("{op:?}").to_lowercase(), v(f, *a), v(f, *b)),
        Inst::Fma { a, b, c, .. } => format!("fma {}, {}, {}", v(f, *a), v(f, *b), v(f, *c)),
        Inst::FUnary { op, a, .. } => format!("{} {}", format!("{op:?}").to_lowercase(), v(f, *a)),
        Inst::Copysign { sign, mag, .. } => format!("copysign {}, {}", v(f, *sign), v(f, *mag)),
        Inst::Cvt { src, to, from, rnd, .. } => {
            let r = rnd.map(|r| format!(".{}", r.name())).unwrap_or_default();
            format!("cvt{r}.{}.{} {}", to.name(), from.name(), v(f, *src))
        }
        Inst::Mov { src, .. } => format!("mov {}", v(f, *src)),
        Inst::Pack { parts, .. } => format!("pack {}", vs(f, parts)),
        Inst::Unpack { src, .. } => format!("unpack {}", v(f, *src)),
        Inst::Load { space, sem, ty, addr: a, pred, dsts } => {
            let p = pred.map(|p| format!(" if {}", v(f, p))).unwrap_or_default();
            format!("load.{}{}.{}x{} {}{p}", space.name(), sem_name(*sem), ty.name(), dsts.len(), addr(f, a))
        }
        Inst::Store { space, sem, ty, vals, addr: a, pred } => {
            let p = pred.map(|p| format!(" if {}", v(f, p))).unwrap_or_default();
            format!("store.{}{}.{}x{} {}, {}{p}", space.name(), sem_name(*sem), ty.name(), vals.len(), addr(f, a), vs(f, vals))
        }
        Inst::Red { op, ty, addr: a, val } => {
            format!("red.{}.{} {}, {}", format!("{op:?}").to_lowercase(), ty.name(), addr(f, a), v(f, *val))
        }
        Inst::AtomCas { addr: a, cmp, new, .. } => format!("atom_cas {}, {}, {}", addr(f, a), v(f, *cmp), v(f, *new)),
        Inst::Shfl { mode, val, lane, clamp, .. } => format!("shfl.{} {}, {}, {clamp}", mode.name(), v(f, *val), v(f, *lane)),
        Inst::Barrier => "barrier".into(),
        Inst::SReg { reg, .. } => format!("sreg {}", reg.name()),
        Inst::SymAddr { sym, .. } => match sym {
            Sym::Smem => "addr smem".into(),
            Sym::Str(i) => format!("addr string {i}"),
            Sym::LocalDepot => "addr local".into(),
        },
        Inst::Cvta { src, space, .. } => format!("cvta.{} {}", space.name(), v(f, *src)),
        Inst::Param { index, .. } => format!("param {index}"),
        Inst::Call { callee, args } => {
            let name = match callee {
                Callee::Func(i) => m.funcs.get(*i).map_or("?".to_string(), |f| format!("@{}", f.name)),
                Callee::Vprintf => "vprintf".into(),
                Callee::AssertFail => "__assertfail".into(),
            };
            format!("call {name}({})", vs(f, args))
        }
        Inst::LdMatrix { addr, trans, dsts } => format!("ldmatrix.x{}{} [{}]", dsts.len(), if *trans { ".trans" } else { "" }, v(f, *addr)),
        Inst::Mma { kind, acc, a, b } => format!("mma.{} acc({}), a({}), b({})", kind.ptx(), vs(f, acc), vs(f, a), vs(f, b)),
        Inst::CpAsync { dst, src, src_bytes } => {
            let n = src_bytes.map(|b| format!(", {}", v(f, b))).unwrap_or_default();
            format!("cp_async [{}], [{}]{n}", v(f, *dst), v(f, *src))
        }
        Inst::CpAsyncCommit => "cp_async.commit".into(),
        Inst::CpAsyncWait(n) => format!("cp_async.wait {n}"),
        Inst::Asm { template, constraints, inputs, .. } => {
            format!("asm {:?} {:?} ({})", template.replace('\n', " "), constraints, vs(f, inputs))
        }
    }
}

fn sem_name(s: super::Sem) -> &'static str {
    match s {
        super::Sem::Weak => "",
        super::Sem::RelaxedGpu => ".relaxed",
    }
}
