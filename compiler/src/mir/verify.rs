//! The machine IR's verifier: operand types agree with their registers and instructions, branch
//! targets exist, every block reachable ends in a terminator (or returns by falling off the end
//! of its function), and every register is assigned on every path before it is read.

use super::{Callee, Function, Inst, IntOp, K, Module, NumTy, Term, Ty, V};

type Res = Result<(), String>;

/// Checks every function of `m`.
pub fn verify_module(m: &Module) -> Res {
    for f in std::iter::once(&m.kernel).chain(&m.funcs) {
        verify_function(m, f).map_err(|e| format!("machine IR of `{}`: {e}", f.name))?;
    }
    Ok(())
}

fn class_of(n: NumTy) -> usize {
    match n.bits() {
        8 | 16 => 1,
        32 => 2,
        _ => 3,
    }
}

fn verify_function(m: &Module, f: &Function) -> Res {
    let reg = |x: V| -> Res {
        if let K::Reg(r) = x.k {
            let t = f.regs.get(r as usize).ok_or_else(|| format!("%{r} is not a register"))?;
            if t.class() != x.ty.class() {
                return Err(format!("%{r} ({t}) read as {}", x.ty));
            }
        }
        Ok(())
    };
    let same = |what: &str, xs: &[V]| -> Res {
        if xs.windows(2).any(|w| w[0].ty.class() != w[1].ty.class()) {
            return Err(format!("{what}: operands of different widths {:?}", xs.iter().map(|x| x.ty).collect::<Vec<_>>()));
        }
        Ok(())
    };
    let is = |what: &str, x: V, t: Ty| -> Res {
        if x.ty != t {
            return Err(format!("{what}: a {} where {t} is wanted", x.ty));
        }
        Ok(())
    };
    let float = |what: &str, xs: &[V]| -> Res {
        if xs.iter().any(|x| !x.ty.is_float() || x.ty != xs[0].ty) {
            return Err(format!("{what}: wants floats of one type, got {:?}", xs.iter().map(|x| x.ty).collect::<Vec<_>>()));
        }
        Ok(())
    };
    for (bi, b) in f.blocks.iter().enumerate() {
        let at = |e: String| format!("bb{bi}: {e}");
        for i in &b.insts {
            for x in i.uses().into_iter().chain(i.defs()) {
                reg(x).map_err(at)?;
            }
            for d in i.defs() {
                if d.imm().is_some() {
                    return Err(at("a constant as a destination".into()));
                }
            }
            match i {
                Inst::Int { op, dst, a, b } => {
                    if dst.ty == Ty::Pred && !matches!(op, IntOp::And | IntOp::Or | IntOp::Xor) {
                        return Err(at(format!("{op:?} of predicates")));
                    }
                    match op {
                        IntOp::Shl | IntOp::LShr | IntOp::AShr => {
                            same("shift", &[*dst, *a]).map_err(at)?;
                            is("shift amount", *b, Ty::I32).map_err(at)?;
                        }
                        _ => same("integer op", &[*dst, *a, *b]).map_err(at)?,
                    }
                }
                Inst::MulWide { dst, a, b, .. } => {
                    is("mul_wide", *dst, Ty::I64).map_err(at)?;
                    same("mul_wide", &[*a, *b, V::int(Ty::I32, 0)]).map_err(at)?;
                }
                Inst::Not { dst, a } | Inst::Neg { dst, a } => same("not/neg", &[*dst, *a]).map_err(at)?,
                Inst::Clz { dst, a } => {
                    is("clz", *dst, Ty::I32).map_err(at)?;
                    same("clz", &[*a, V::int(Ty::I32, 0)]).map_err(at)?;
                }
                Inst::ICmp { dst, a, b, .. } => {
                    is("icmp", *dst, Ty::Pred).map_err(at)?;
                    same("icmp", &[*a, *b]).map_err(at)?;
                }
                Inst::FCmp { dst, a, b, .. } => {
                    is("fcmp", *dst, Ty::Pred).map_err(at)?;
                    float("fcmp", &[*a, *b]).map_err(at)?;
                }
                Inst::Select { dst, c, a, b } => {
                    is("select condition", *c, Ty::Pred).map_err(at)?;
                    same("select", &[*dst, *a, *b]).map_err(at)?;
                }
                Inst::Float { dst, a, b, .. } => float("float op", &[*dst, *a, *b]).map_err(at)?,
                Inst::Fma { dst, a, b, c } => float("fma", &[*dst, *a, *b, *c]).map_err(at)?,
                Inst::FUnary { dst, a, .. } => float("float op", &[*dst, *a]).map_err(at)?,
                Inst::Copysign { dst, sign, mag } => float("copysign", &[*dst, *sign, *mag]).map_err(at)?,
                Inst::Cvt { dst, src, to, from, .. } => {
                    if dst.ty.class() != class_of(*to) || src.ty.class() != class_of(*from) {
                        return Err(at(format!("cvt.{}.{} from a {} to a {}", to.name(), from.name(), src.ty, dst.ty)));
                    }
                }
                Inst::Mov { dst, src } => same("mov", &[*dst, *src]).map_err(at)?,
                Inst::Pack { dst, parts } | Inst::Unpack { src: dst, dsts: parts } => {
                    let bits: u32 = parts.iter().map(|p| p.ty.class_bits()).sum();
                    let even = parts.windows(2).all(|w| w[0].ty.class_bits() == w[1].ty.class_bits());
                    if bits != dst.ty.class_bits() || parts.is_empty() || !even {
                        return Err(at(format!("pack/unpack of {} bits in parts of unequal widths into a {}", bits, dst.ty)));
                    }
                }
                Inst::Load { space, ty, dsts, addr, pred, .. } | Inst::Store { space, ty, vals: dsts, addr, pred, .. } => {
                    is("address", addr.base, space.addr_ty()).map_err(at)?;
                    if let Some(p) = pred {
                        is("predicate", *p, Ty::Pred).map_err(at)?;
                    }
                    if ![1, 2, 4].contains(&dsts.len()) || dsts.iter().any(|d| d.ty.class_bits() < 8 * ty.bytes() || d.ty == Ty::Pred) {
                        return Err(at(format!(
                            "a {}-element access of {} in {:?}",
                            dsts.len(),
                            ty.name(),
                            dsts.iter().map(|d| d.ty).collect::<Vec<_>>()
                        )));
                    }
                }
                Inst::Red { addr, .. } | Inst::AtomCas { addr, .. } => is("address", addr.base, Ty::I64).map_err(at)?,
                Inst::Shfl { dst, val, lane, .. } => {
                    for x in [dst, val, lane] {
                        is("shfl", *x, Ty::I32).map_err(at)?;
                    }
                }
                Inst::SReg { dst, .. } => is("special register", *dst, Ty::I32).map_err(at)?,
                Inst::Cvta { dst, src, .. } => same("cvta", &[*dst, *src, V::int(Ty::I64, 0)]).map_err(at)?,
                Inst::Param { dst, index } => {
                    let t = &f.params.get(*index).ok_or_else(|| at(format!("parameter {index} of {}", f.params.len())))?.ty;
                    let want = if *t == Ty::Pred { Ty::I8 } else { *t };
                    is("parameter", *dst, want).map_err(at)?;
                }
                Inst::Call { callee, args } => {
                    let n = match callee {
                        Callee::Func(i) => {
                            m.funcs.get(*i).map(|g| g.params.len()).ok_or_else(|| at("a call of a missing function".into()))?
                        }
                        Callee::Vprintf => 2,
                        Callee::AssertFail => 5,
                    };
                    if n != args.len() {
                        return Err(at(format!("a call with {} arguments for {n}", args.len())));
                    }
                }
                Inst::LdMatrix { dsts, addr, .. } => {
                    is("ldmatrix address", *addr, Ty::I32).map_err(at)?;
                    if ![1, 2, 4].contains(&dsts.len()) || dsts.iter().any(|d| d.ty != Ty::I32) {
                        return Err(at("ldmatrix of 1, 2 or 4 i32 registers".into()));
                    }
                }
                Inst::Mma { kind, acc, a, b } => {
                    if acc.len() != 4
                        || a.len() != 4
                        || b.len() != 2
                        || acc.iter().any(|x| x.ty != kind.acc())
                        || a.iter().chain(b).any(|x| x.ty != Ty::I32)
                    {
                        return Err(at(format!("mma {:?}: 4 accumulators of {}, 4 + 2 i32 fragments", kind, kind.acc())));
                    }
                }
                Inst::CpAsync { dst, src, src_bytes } => {
                    is("cp.async destination", *dst, Ty::I32).map_err(at)?;
                    is("cp.async source", *src, Ty::I64).map_err(at)?;
                    if let Some(n) = src_bytes {
                        is("cp.async size", *n, Ty::I32).map_err(at)?;
                    }
                }
                Inst::Asm { .. } | Inst::Barrier | Inst::SymAddr { .. } | Inst::CpAsyncCommit | Inst::CpAsyncWait(_) => {}
            }
        }
        for &(d, s) in &b.copies {
            reg(d).map_err(at)?;
            reg(s).map_err(at)?;
            same("phi copy", &[d, s]).map_err(at)?;
            if d.imm().is_some() {
                return Err(at("a constant as a phi".into()));
            }
        }
        match &b.term {
            Some(Term::CondBr(c, t, e)) => {
                is("branch condition", *c, Ty::Pred).map_err(at)?;
                reg(*c).map_err(at)?;
                for x in [t, e] {
                    if x.0 >= f.blocks.len() {
                        return Err(at(format!("a branch to missing {x}")));
                    }
                }
            }
            Some(Term::Br(t)) if t.0 >= f.blocks.len() => return Err(at(format!("a branch to missing {t}"))),
            _ => {}
        }
    }
    definitely_assigned(f)
}

/// Every read of a register is preceded, on every path from the entry, by a write of it.
fn definitely_assigned(f: &Function) -> Res {
    let n = f.regs.len();
    let words = n.div_ceil(64);
    let nb = f.blocks.len();
    let mut preds: Vec<Vec<usize>> = vec![vec![]; nb];
    for b in 0..nb {
        for s in f.successors(super::Blk(b)) {
            if let Some(p) = preds.get_mut(s.0) {
                p.push(b);
            }
        }
    }
    // Reachable blocks, from the entry.
    let mut reach = vec![false; nb];
    let mut stack = vec![0usize];
    while let Some(b) = stack.pop() {
        if b >= nb || reach[b] {
            continue;
        }
        reach[b] = true;
        stack.extend(f.successors(super::Blk(b)).into_iter().map(|s| s.0));
    }
    let set = |bits: &mut [u64], r: u32| {
        if let Some(w) = bits.get_mut(r as usize / 64) {
            *w |= 1 << (r % 64);
        }
    };
    let has = |bits: &[u64], r: u32| bits.get(r as usize / 64).is_some_and(|w| w >> (r % 64) & 1 == 1);
    let transfer = |b: usize, mut bits: Vec<u64>| -> Vec<u64> {
        for i in &f.blocks[b].insts {
            for d in i.defs() {
                if let Some(r) = d.reg() {
                    set(&mut bits, r);
                }
            }
        }
        for (d, _) in &f.blocks[b].copies {
            if let Some(r) = d.reg() {
                set(&mut bits, r);
            }
        }
        bits
    };
    let full = vec![u64::MAX; words];
    let mut out: Vec<Vec<u64>> = (0..nb).map(|_| full.clone()).collect();
    let mut input: Vec<Vec<u64>> = (0..nb).map(|_| full.clone()).collect();
    // Sets only shrink from `full`, so this ends.
    let mut changed = true;
    while changed {
        changed = false;
        for b in 0..nb {
            if !reach[b] {
                continue;
            }
            let mut inb = if b == 0 { vec![0u64; words] } else { full.clone() };
            for &p in &preds[b] {
                if reach[p] {
                    for (w, o) in inb.iter_mut().zip(&out[p]) {
                        *w &= o;
                    }
                }
            }
            let o = transfer(b, inb.clone());
            input[b] = inb;
            if o != out[b] {
                out[b] = o;
                changed = true;
            }
        }
    }
    for b in 0..nb {
        if !reach[b] {
            continue;
        }
        let mut bits = input[b].clone();
        let check = |bits: &[u64], x: V, what: &str| -> Res {
            match x.reg() {
                Some(r) if !has(bits, r) => Err(format!("bb{b}: %{r} is read by {what} before it is written on some path")),
                _ => Ok(()),
            }
        };
        for i in &f.blocks[b].insts {
            for u in i.uses() {
                check(&bits, u, "an instruction")?;
            }
            for d in i.defs() {
                if let Some(r) = d.reg() {
                    set(&mut bits, r);
                }
            }
        }
        for (_, s) in &f.blocks[b].copies {
            check(&bits, *s, "a phi copy")?;
        }
        if let Some(Term::CondBr(c, _, _)) = &f.blocks[b].term {
            check(&bits, *c, "a branch")?;
        }
    }
    Ok(())
}
