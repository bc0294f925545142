//! Integer arithmetic for index and address computations that folds identities (`x + 0`,
//! `x * 1`, `x / 1`, `true && x`, `(x + a) + b`), reuses an identical instruction already built
//! in the same block (or in the entry block), and builds the values that depend only on the
//! thread index that loops use once per kernel, in the entry block.
//!
//! Addresses, masks and coordinates are generated per register, so most of that code repeats;
//! building each value once keeps the PTX small (ptxas's time grows with it) and the registers
//! few. A value numbered here is placed where the builder puts it (the preheader of the loops it
//! does not vary in), so the numbering is by that block.

use super::{Gen, Res};
use crate::mir::{Blk, Cmp, IntOp, Ty, V};

/// The operations that are value-numbered within a block.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Tag {
    Int(IntOp),
    Cmp(Cmp),
    SExt,
    Select,
    MulWide,
}

/// `(block, operation, operands)` of an instruction built by these helpers.
pub(crate) type CseKey = (Blk, Tag, [u128; 3]);

/// What is known of a non-negative i32 index value: `lo <= v <= hi` and `v` a multiple of
/// `align` (0 for the constant 0). Built from the thread index, block indices and constants;
/// it lets divisions and remainders of `x + k` split into `x / d + …` (registers then share
/// `x / d`) and signed divisions of non-negative values become shifts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Facts {
    pub(crate) lo: i64,
    pub(crate) hi: i64,
    pub(crate) align: i64,
}

const LIMIT: i64 = i32::MAX as i64;

/// The constant an index value must be, if its facts leave one value.
fn known(f: Option<Facts>) -> Option<V> {
    f.filter(|f| f.lo == f.hi).map(|f| V::int(Ty::I32, f.lo))
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.abs() } else { gcd(b, a % b) }
}

/// What a thread-index value is, for building it once: a name and the constants it depends on.
pub(crate) type HoistKey = (&'static str, Vec<i64>);

fn id(v: V) -> u128 {
    v.id()
}

impl Gen<'_> {
    /// What is known of `v` (see `Facts`).
    pub(crate) fn facts(&self, v: V) -> Option<Facts> {
        if v.ty != Ty::I32 {
            return None;
        }
        match v.imm() {
            Some(c) if (0..=LIMIT).contains(&c) => Some(Facts { lo: c, hi: c, align: c }),
            Some(_) => None,
            None => self.facts.borrow().get(&id(v)).copied(),
        }
    }

    /// Records what is known of a register `v`.
    pub(crate) fn note(&self, v: V, f: Option<Facts>) {
        if let (Some(f), None, Ty::I32) = (f, v.imm(), v.ty)
            && 0 <= f.lo
            && f.lo <= f.hi
            && f.hi <= LIMIT
        {
            self.facts.borrow_mut().insert(id(v), f);
        }
    }

    /// The facts of `tag(a, b)` from those of `a` and `b`.
    fn facts_of(&self, tag: Tag, a: V, b: V) -> Option<Facts> {
        let (fa, fb) = (self.facts(a)?, self.facts(b)?);
        let r = match tag {
            Tag::Int(IntOp::Add) => Facts { lo: fa.lo + fb.lo, hi: fa.hi + fb.hi, align: gcd(fa.align, fb.align) },
            Tag::Int(IntOp::Mul) => Facts { lo: fa.lo * fb.lo, hi: fa.hi.checked_mul(fb.hi)?, align: fa.align.checked_mul(fb.align)? },
            Tag::Int(IntOp::Sub) if fa.lo >= fb.hi => Facts { lo: fa.lo - fb.hi, hi: fa.hi - fb.lo, align: gcd(fa.align, fb.align) },
            Tag::Int(IntOp::LShr) if fb.lo == fb.hi && fb.lo < 31 => {
                let k = 1i64 << fb.lo;
                Facts { lo: fa.lo >> fb.lo, hi: fa.hi >> fb.lo, align: if fa.align % k == 0 { fa.align / k } else { 1 } }
            }
            Tag::Int(IntOp::And) if fb.lo == fb.hi && (fb.lo + 1) & fb.lo == 0 => {
                // `x & (2^n - 1)` is `x mod 2^n`.
                let m = fb.lo + 1;
                let hi = if fa.hi < m { fa.hi } else { fb.lo };
                Facts { lo: if fa.hi < m { fa.lo } else { 0 }, hi, align: gcd(fa.align, m) }
            }
            Tag::Int(IntOp::And) => Facts { lo: 0, hi: fa.hi.min(fb.hi), align: 1 },
            Tag::Int(IntOp::UDiv) if fb.lo == fb.hi && fb.lo > 0 => {
                let d = fb.lo;
                Facts { lo: fa.lo / d, hi: fa.hi / d, align: if fa.align % d == 0 { fa.align / d } else { 1 } }
            }
            Tag::Int(IntOp::URem) if fb.lo == fb.hi && fb.lo > 0 => {
                let d = fb.lo;
                if fa.hi < d { fa } else { Facts { lo: 0, hi: d - 1, align: gcd(fa.align, d) } }
            }
            _ => return None,
        };
        Some(r)
    }

    /// `x / d` or `x % d` of `a` (`d > 1`) split over a sum when that is exact: `(x + k) / d`
    /// is `x / d + k / d` when no remainder of `x` plus `k % d` reaches `d`, and `(p + q) / d` is
    /// `p / d + q / d` when `p` is a multiple of `d` (all non-negative, no overflow).
    fn split_division(&self, a: V, d: i64, rem: bool) -> Res<Option<V>> {
        if let Some((x, c)) = self.split_const(a)
            && c >= 0
            && let Some(fx) = self.facts(x)
            && fx.hi + c <= LIMIT
        {
            let max_rem = if fx.hi < d { fx.hi } else { d - gcd(fx.align, d) };
            if max_rem + c % d < d {
                return Ok(Some(if rem { self.addc(self.uremc(x, d)?, c % d)? } else { self.addc(self.udivc(x, d)?, c / d)? }));
            }
        }
        if let Some((p, q)) = self.sum_of(a) {
            for (p, q) in [(p, q), (q, p)] {
                if let (Some(fp), Some(fq)) = (self.facts(p), self.facts(q))
                    && fp.align % d == 0
                    && fp.hi + fq.hi <= LIMIT
                {
                    return Ok(Some(if rem { self.uremc(q, d)? } else { self.add(self.udivc(p, d)?, self.udivc(q, d)?)? }));
                }
            }
        }
        Ok(None)
    }

    /// The constant value of `v`, if it is one.
    pub(crate) fn const_of(v: V) -> Option<i64> {
        v.imm()
    }

    fn cst(t: Ty, v: i64) -> V {
        V::int(t, v)
    }

    /// `op(a, b)`: the constant its facts `f` fix, else the instruction built once (numbered by
    /// `key`, the operands in canonical order for commutative ops) with `f` recorded.
    fn numbered(&self, op: IntOp, a: V, b: V, key: [V; 2], f: Option<Facts>) -> Res<V> {
        if let Some(c) = known(f) {
            return Ok(c);
        }
        let v = self.cse(Tag::Int(op), &key, || self.b.int_bin(op, a, b))?;
        self.note(v, f);
        Ok(v)
    }

    /// The instruction `tag(srcs)` of the block it goes to if one was built, else `build()`.
    fn cse(&self, tag: Tag, srcs: &[V], build: impl FnOnce() -> V) -> Res<V> {
        let (blk, _) = self.b.placement(srcs);
        let mut ops = [0; 3];
        for (o, s) in ops.iter_mut().zip(srcs) {
            *o = id(*s);
        }
        let key = (blk, tag, ops);
        // An instruction of the entry block dominates every block.
        for k in [key, (self.b.entry(), tag, ops)] {
            let found = self.cse.borrow().get(&k).copied();
            if let Some(v) = found {
                return Ok(v);
            }
        }
        let v = build();
        // A constant (folded by the builder) needs no instruction and no entry.
        if v.imm().is_none() {
            self.cse.borrow_mut().insert(key, v);
        }
        Ok(v)
    }

    /// The `(x, k)` of `v = x + k` (constant `k`) if `v` was built that way here.
    pub(crate) fn split_const(&self, v: V) -> Option<(V, i64)> {
        self.plus_const.borrow().get(&id(v)).copied()
    }

    /// `sext(x) · k` (i32 `x`, constant `k`) in one `mul.wide.s32` where `v` was built as
    /// `sext(x)`.
    pub(crate) fn mul_wide(&self, v: V, k: i64) -> Res<V> {
        let x = self.sexts.borrow().get(&id(v)).copied();
        match x {
            Some(x) if k != 1 && (i32::MIN as i64..=i32::MAX as i64).contains(&k) => {
                let kv = V::int(Ty::I32, k);
                self.cse(Tag::MulWide, &[x, kv], || self.b.mul_wide(true, x, kv))
            }
            _ => self.mulc(v, k),
        }
    }

    /// The `(x, y)` of `v = x + y` (two variables) if `v` was built that way here.
    pub(crate) fn sum_of(&self, v: V) -> Option<(V, V)> {
        self.sums.borrow().get(&id(v)).copied()
    }

    /// `a + b`. Constant terms move outwards (`(x + 1) + (y + 2)` is `(x + y) + 3`), so that the
    /// addresses of a thread's registers are one shared value plus a constant each.
    pub(crate) fn add(&self, a: V, b: V) -> Res<V> {
        match (Self::const_of(a), Self::const_of(b)) {
            (Some(0), _) => return Ok(b),
            (_, Some(0)) => return Ok(a),
            (Some(_), None) => return self.add(b, a),
            (None, Some(k)) => {
                if let Some((x, k0)) = self.split_const(a) {
                    return self.add(x, Self::cst(a.ty, k0.wrapping_add(k)));
                }
            }
            (None, None) => {
                if let Some((x, k)) = self.split_const(a) {
                    return self.addc(self.add(x, b)?, k);
                }
                if let Some((y, k)) = self.split_const(b) {
                    return self.addc(self.add(a, y)?, k);
                }
            }
            (Some(_), Some(_)) => {}
        }
        let (x, y) = if id(a) <= id(b) { (a, b) } else { (b, a) };
        let f = self.facts_of(Tag::Int(IntOp::Add), a, b);
        let v = self.numbered(IntOp::Add, a, b, [x, y], f)?;
        if Self::const_of(v).is_some() {
            return Ok(v);
        }
        match (Self::const_of(a), Self::const_of(b)) {
            (None, Some(k)) => {
                self.plus_const.borrow_mut().insert(id(v), (a, k));
            }
            (None, None) => {
                self.sums.borrow_mut().insert(id(v), (a, b));
            }
            _ => {}
        }
        Ok(v)
    }

    /// `a + k` in `a`'s type.
    pub(crate) fn addc(&self, a: V, k: i64) -> Res<V> {
        self.add(a, Self::cst(a.ty, k))
    }

    pub(crate) fn sub(&self, a: V, b: V) -> Res<V> {
        if let Some(k) = Self::const_of(b) {
            return self.addc(a, k.wrapping_neg());
        }
        if a == b {
            return Ok(V::int(a.ty, 0));
        }
        if let Some((x, k)) = self.split_const(a) {
            return self.addc(self.sub(x, b)?, k);
        }
        if let Some((y, k)) = self.split_const(b) {
            return self.addc(self.sub(a, y)?, k.wrapping_neg());
        }
        let f = self.facts_of(Tag::Int(IntOp::Sub), a, b);
        self.numbered(IntOp::Sub, a, b, [a, b], f)
    }

    /// `a * b`; `(x + k) * c` is `x * c + k * c`.
    pub(crate) fn mul(&self, a: V, b: V) -> Res<V> {
        match (Self::const_of(a), Self::const_of(b)) {
            (Some(1), _) => return Ok(b),
            (_, Some(1)) => return Ok(a),
            (Some(0), _) | (_, Some(0)) => return Ok(V::int(a.ty, 0)),
            (Some(_), None) => return self.mul(b, a),
            (None, Some(c)) => {
                if let Some((x, k)) = self.split_const(a) {
                    return self.addc(self.mul(x, b)?, k.wrapping_mul(c));
                }
            }
            (None, None) => {
                // `(x + k) · y` is `x · y + k · y`: registers that differ by a constant share
                // `x · y`, and `k · y` of a uniform `y` is uniform.
                for (p, q) in [(a, b), (b, a)] {
                    if let Some((x, k)) = self.split_const(p) {
                        return self.add(self.mul(x, q)?, self.mulc(q, k)?);
                    }
                }
            }
            _ => {}
        }
        let (x, y) = if id(a) <= id(b) { (a, b) } else { (b, a) };
        let f = self.facts_of(Tag::Int(IntOp::Mul), a, b);
        self.numbered(IntOp::Mul, a, b, [x, y], f)
    }

    /// `a * k` in `a`'s type.
    pub(crate) fn mulc(&self, a: V, k: i64) -> Res<V> {
        self.mul(a, Self::cst(a.ty, k))
    }

    /// `a / k` (unsigned, `k > 0`).
    pub(crate) fn udivc(&self, a: V, k: i64) -> Res<V> {
        if k <= 0 {
            return Err(format!("division by the constant {k}"));
        }
        if k == 1 {
            return Ok(a);
        }
        if let Some(v) = self.split_division(a, k, false)? {
            return Ok(v);
        }
        if k & (k - 1) == 0 {
            return self.lshr(a, k.trailing_zeros() as i64);
        }
        let kv = Self::cst(a.ty, k);
        let f = self.facts_of(Tag::Int(IntOp::UDiv), a, kv);
        self.numbered(IntOp::UDiv, a, kv, [a, kv], f)
    }

    /// `a % k` (unsigned, `k > 0`).
    pub(crate) fn uremc(&self, a: V, k: i64) -> Res<V> {
        if k <= 0 {
            return Err(format!("remainder by the constant {k}"));
        }
        if k == 1 {
            return Ok(V::int(a.ty, 0));
        }
        if let Some(f) = self.facts(a)
            && f.hi < k
        {
            return Ok(a);
        }
        if let Some(v) = self.split_division(a, k, true)? {
            return Ok(v);
        }
        if k & (k - 1) == 0 {
            return self.and(a, Self::cst(a.ty, k - 1));
        }
        let kv = Self::cst(a.ty, k);
        let f = self.facts_of(Tag::Int(IntOp::URem), a, kv);
        self.numbered(IntOp::URem, a, kv, [a, kv], f)
    }

    /// `a >> k` (logical).
    pub(crate) fn lshr(&self, a: V, k: i64) -> Res<V> {
        if k == 0 {
            return Ok(a);
        }
        let kv = Self::cst(a.ty, k);
        let f = self.facts_of(Tag::Int(IntOp::LShr), a, kv);
        self.numbered(IntOp::LShr, a, kv, [a, kv], f)
    }

    /// Bitwise and (logical and of `i1`).
    pub(crate) fn and(&self, a: V, b: V) -> Res<V> {
        let ones = |v: V| v.imm() == Some(if v.ty == Ty::Pred { 1 } else { -1 });
        match (Self::const_of(a), Self::const_of(b)) {
            (Some(0), _) => return Ok(a),
            (_, Some(0)) => return Ok(b),
            _ if ones(a) => return Ok(b),
            _ if ones(b) => return Ok(a),
            _ if a == b => return Ok(a),
            _ => {}
        }
        if a.ty == Ty::Pred
            && let Some(v) = self.range_check(a, b)?
        {
            return Ok(v);
        }
        let (x, y) = if id(a) <= id(b) { (a, b) } else { (b, a) };
        let f = self.facts_of(Tag::Int(IntOp::And), x, y).or_else(|| self.facts_of(Tag::Int(IntOp::And), y, x));
        self.numbered(IntOp::And, a, b, [x, y], f)
    }

    /// Bitwise or (logical or of `i1`).
    pub(crate) fn or(&self, a: V, b: V) -> Res<V> {
        match (Self::const_of(a), Self::const_of(b)) {
            (Some(0), _) => return Ok(b),
            (_, Some(0)) => return Ok(a),
            _ if a == b => return Ok(a),
            _ => {}
        }
        let (x, y) = if id(a) <= id(b) { (a, b) } else { (b, a) };
        self.cse(Tag::Int(IntOp::Or), &[x, y], || self.b.int_bin(IntOp::Or, a, b))
    }

    pub(crate) fn xor(&self, a: V, b: V) -> Res<V> {
        match (Self::const_of(a), Self::const_of(b)) {
            (Some(0), _) => return Ok(b),
            (_, Some(0)) => return Ok(a),
            _ => {}
        }
        let (x, y) = if id(a) <= id(b) { (a, b) } else { (b, a) };
        self.cse(Tag::Int(IntOp::Xor), &[x, y], || self.b.int_bin(IntOp::Xor, a, b))
    }

    /// `tag(a, b)` with no folding (divisions by a variable, shifts by a variable).
    pub(crate) fn bin(&self, tag: Tag, a: V, b: V) -> Res<V> {
        let op = match tag {
            Tag::Int(op) => op,
            Tag::Cmp(p) => return self.icmp(p, a, b),
            Tag::SExt | Tag::Select | Tag::MulWide => return Err("not a binary operation".into()),
        };
        self.cse(tag, &[a, b], || self.b.int_bin(op, a, b))
    }

    pub(crate) fn icmp(&self, p: Cmp, a: V, b: V) -> Res<V> {
        let v = self.cse(Tag::Cmp(p), &[a, b], || self.b.icmp(p, a, b))?;
        if v.imm().is_none() {
            self.cmps.borrow_mut().insert(id(v), (p, a, b));
        }
        Ok(v)
    }

    /// `x >= 0 && x <= c` (or `< c`, either order) of a constant `c >= 0` as one unsigned
    /// compare, `x <=u c`.
    fn range_check(&self, a: V, b: V) -> Res<Option<V>> {
        let (Some(ca), Some(cb)) = (self.cmps.borrow().get(&id(a)).copied(), self.cmps.borrow().get(&id(b)).copied()) else {
            return Ok(None);
        };
        for ((p0, x0, z), (p1, x1, c)) in [(ca, cb), (cb, ca)] {
            let lower = matches!((p0, z.imm()), (Cmp::Sge, Some(0)) | (Cmp::Sgt, Some(-1)));
            let upper = match (p1, c.imm()) {
                (Cmp::Sle, Some(k)) if k >= 0 => Some(Cmp::Ule),
                (Cmp::Slt, Some(k)) if k >= 0 => Some(Cmp::Ult),
                _ => None,
            };
            if let (true, Some(u), true) = (lower, upper, x0 == x1) {
                return Ok(Some(self.icmp(u, x0, c)?));
            }
        }
        Ok(None)
    }

    /// Sign extension to `t` (the value itself if it has that type).
    pub(crate) fn sext(&self, a: V, t: Ty) -> Res<V> {
        if a.ty == t {
            return Ok(a);
        }
        if let Some(k) = Self::const_of(a) {
            return Ok(Self::cst(t, k));
        }
        let tv = V::int(t, 0);
        let v = self.cse(Tag::SExt, &[a, tv], || self.b.int_cast(a, t, true))?;
        if a.ty == Ty::I32 && t == Ty::I64 {
            self.sexts.borrow_mut().insert(id(v), a);
        }
        Ok(v)
    }

    /// `c ? a : b` of integers.
    pub(crate) fn select(&self, c: V, a: V, b: V) -> Res<V> {
        match Self::const_of(c) {
            Some(0) => return Ok(b),
            Some(_) => return Ok(a),
            None if a == b => return Ok(a),
            None => {}
        }
        self.cse(Tag::Select, &[c, a, b], || self.b.select(c, a, b))
    }

    /// A value that depends only on the thread index (and constants). Inside a loop it is built
    /// once per kernel in the entry block (so that it dominates every use, and is not recomputed
    /// per iteration); `key` names it.
    pub(crate) fn hoisted(&self, key: HoistKey, build: impl FnOnce(&Self) -> Res<V>) -> Res<V> {
        let found = self.hoist.borrow().get(&key).copied();
        if let Some(v) = found {
            return Ok(v);
        }
        let here = self.b.current();
        if self.loop_depth.get() == 0 && here != self.b.entry() {
            // Outside loops a value is used where it is built: building it in the entry block
            // would only keep it live (in a register) across everything in between.
            return build(self);
        }
        let v = if here == self.b.entry() {
            // Already building in the entry block (a hoisted value built from another one).
            build(self)?
        } else {
            self.b.at_entry(|| build(self))?
        };
        self.hoist.borrow_mut().insert(key, v);
        Ok(v)
    }
}

/// The shared index maps (`lir::index`) build machine IR through the folding operations.
impl crate::lir::index::IndexMath for Gen<'_> {
    type V = V;
    type Error = String;
    fn add(&self, a: V, b: V) -> Res<V> {
        Gen::add(self, a, b)
    }
    fn addc(&self, a: V, k: i64) -> Res<V> {
        Gen::addc(self, a, k)
    }
    fn mulc(&self, a: V, k: i64) -> Res<V> {
        Gen::mulc(self, a, k)
    }
    fn udivc(&self, a: V, k: i64) -> Res<V> {
        Gen::udivc(self, a, k)
    }
    fn uremc(&self, a: V, k: i64) -> Res<V> {
        Gen::uremc(self, a, k)
    }
    fn xor(&self, a: V, b: V) -> Res<V> {
        Gen::xor(self, a, b)
    }
}

#[cfg(test)]
mod tests {
    //! The index arithmetic is checked by running what it builds (the machine-IR evaluator) on
    //! every thread index and edge values of the parameters, against plain arithmetic.
    use super::Facts;
    use crate::codegen::Gen;
    use crate::ir::Body;
    use crate::lir;
    use crate::mir::eval::{Env, run};
    use crate::mir::{Addr, Cmp, Inst, IntOp, MemTy, Space, Ty, V, verify_module};

    const THREADS: u32 = 128;
    const OUT: u64 = 0x1000;

    fn kernel() -> lir::Kernel {
        lir::Kernel {
            name: "t".into(),
            params: vec![],
            threads: THREADS,
            shared_bytes: 0,
            blocks_per_sm: None,
            tensor_maps: vec![],
            warp_specialize: false,
            ws: None,
            body: Body::new(),
        }
    }

    /// Builds, with a generator whose thread index has its facts, the values `body` computes
    /// from one i32 parameter; runs them for every thread index and each `xs`; checks each
    /// against `want(tid, x)`. Returns the machine IR.
    fn check(xs: &[i64], body: impl FnOnce(&Gen<'_>, V) -> Vec<V>, want: impl Fn(i64, i64) -> Vec<i64>) -> crate::mir::Module {
        let k = kernel();
        let g = Gen::new(&k, crate::Target::Sm90a);
        g.note(g.tid, Some(Facts { lo: 0, hi: THREADS as i64 - 1, align: 1 }));
        let x = g.b.param(Ty::I32);
        let out = g.b.param(Ty::I64);
        let vals = body(&g, x);
        for (i, v) in vals.iter().enumerate() {
            let v = g.b.materialize(*v);
            let v = if v.ty == Ty::Pred { g.b.int_cast(v, Ty::I32, false) } else { v };
            g.b.store(Space::Global, MemTy::of(v.ty), &[v], Addr { base: out, offset: 8 * i as i64 }, None);
        }
        g.b.ret();
        let m = g.b.finish("t", THREADS, None);
        verify_module(&m).unwrap_or_else(|e| panic!("{e}"));
        for tid in 0..THREADS as i64 {
            for &x in xs {
                let mut env = Env { tid: tid as u32, ..Env::default() };
                run(&m, &m.kernel, &[x as u32 as u64, OUT], &mut env).unwrap_or_else(|e| panic!("{e}"));
                let w = want(tid, x);
                for (i, w) in w.iter().enumerate() {
                    let got = u64::from_le_bytes(env.read(Space::Global, OUT + 8 * i as u64, 8).try_into().unwrap_or_default());
                    assert_eq!(
                        got & 0xffff_ffff,
                        *w as u64 & 0xffff_ffff,
                        "value {i} at tid {tid}, x {x}:\n{}",
                        crate::mir::print_module(&m)
                    );
                }
            }
        }
        m
    }

    fn count(m: &crate::mir::Module, f: impl Fn(&Inst) -> bool) -> usize {
        m.kernel.blocks.iter().flat_map(|b| &b.insts).filter(|i| f(i)).count()
    }

    /// Sums reassociate (constants outwards), and a remainder and quotient of `tid · 8 + k` by 8
    /// split over the sum (`tid + k / 8`, `k % 8`): exact for every thread, with no division.
    #[test]
    fn sums_reassociate_and_divisions_split() {
        let m = check(
            &[0, 5, 1000, i32::MAX as i64 - 300],
            |g, x| {
                let t8 = g.mulc(g.tid, 8).unwrap_or_else(|e| panic!("{e}"));
                let a = g.addc(t8, 13).unwrap_or_else(|e| panic!("{e}"));
                let s = g
                    .add(g.addc(x, 5).unwrap_or_else(|e| panic!("{e}")), g.addc(g.tid, 3).unwrap_or_else(|e| panic!("{e}")))
                    .unwrap_or_else(|e| panic!("{e}"));
                vec![
                    s,
                    g.udivc(a, 8).unwrap_or_else(|e| panic!("{e}")),
                    g.uremc(a, 8).unwrap_or_else(|e| panic!("{e}")),
                    g.udivc(a, 24).unwrap_or_else(|e| panic!("{e}")),
                ]
            },
            |t, x| {
                vec![(x as i32).wrapping_add(5).wrapping_add(t as i32 + 3) as i64, (8 * t + 13) / 8, (8 * t + 13) % 8, (8 * t + 13) / 24]
            },
        );
        assert_eq!(count(&m, |i| matches!(i, Inst::Int { op: IntOp::UDiv | IntOp::URem, .. })), 0, "{}", crate::mir::print_module(&m));
    }

    /// `x >= 0 && x < c` is one unsigned compare, true exactly in range, at the edges.
    #[test]
    fn range_checks_are_one_unsigned_compare() {
        let m = check(
            &[-1, 0, 1, 99, 100, 101, i32::MIN as i64, i32::MAX as i64],
            |g, x| {
                let lo = g.icmp(Cmp::Sge, x, V::int(Ty::I32, 0)).unwrap_or_else(|e| panic!("{e}"));
                let hi = g.icmp(Cmp::Slt, x, V::int(Ty::I32, 100)).unwrap_or_else(|e| panic!("{e}"));
                vec![g.and(lo, hi).unwrap_or_else(|e| panic!("{e}"))]
            },
            |_, x| vec![(0..100).contains(&x) as i64],
        );
        assert_eq!(count(&m, |i| matches!(i, Inst::ICmp { cmp: Cmp::Ult, .. })), 1, "{}", crate::mir::print_module(&m));
    }

    /// Value numbering: the same sum built twice is one instruction.
    #[test]
    fn identical_values_are_built_once() {
        let m = check(
            &[3, -9],
            |g, x| {
                let a = g.add(x, g.tid).unwrap_or_else(|e| panic!("{e}"));
                let b = g.add(g.tid, x).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(a, b);
                vec![a, b]
            },
            |t, x| vec![x + t, x + t],
        );
        assert_eq!(count(&m, |i| matches!(i, Inst::Int { op: IntOp::Add, .. })), 1);
    }

    /// A sign-extended i32 times a constant (an element offset times its size) is one
    /// `mul.wide.s32`, right for negative values too.
    #[test]
    fn sign_extended_products_are_one_wide_multiply() {
        let k = kernel();
        let g = Gen::new(&k, crate::Target::Sm90a);
        let x = g.b.param(Ty::I32);
        let out = g.b.param(Ty::I64);
        let w = g.mul_wide(g.sext(x, Ty::I64).unwrap_or_else(|e| panic!("{e}")), 12).unwrap_or_else(|e| panic!("{e}"));
        g.b.store(Space::Global, MemTy::B64, &[w], Addr { base: out, offset: 0 }, None);
        g.b.ret();
        let m = g.b.finish("t", THREADS, None);
        assert_eq!(count(&m, |i| matches!(i, Inst::MulWide { signed: true, .. })), 1);
        for x in [-5i64, 0, 7, i32::MIN as i64, i32::MAX as i64] {
            let mut env = Env::default();
            run(&m, &m.kernel, &[x as u32 as u64, OUT], &mut env).unwrap_or_else(|e| panic!("{e}"));
            let got = i64::from_le_bytes(env.read(Space::Global, OUT, 8).try_into().unwrap_or_default());
            assert_eq!(got, x * 12);
        }
    }

    /// The code generator's coordinates of every register, in every layout of a 4-warp block
    /// (2-D and reshaped 3-D MMA tiles), are the element the layout definitions give
    /// (`lir::shuffle::element_of`, the planner's map) on every thread.
    #[test]
    fn register_coordinates_are_the_layout_map() {
        use lir::{Layout, Type};
        let cases: [(Layout, &[i64]); 14] = [
            (Layout::Blocked { vec: 1 }, &[8, 32]),
            // Fewer elements than threads: replicated across the block.
            (Layout::Blocked { vec: 1 }, &[8, 8]),
            (Layout::Blocked { vec: 1 }, &[2, 16]),
            (Layout::Blocked { vec: 4 }, &[4, 16]),
            (Layout::Blocked { vec: 1 }, &[2, 2, 16]),
            (Layout::Blocked { vec: 4 }, &[16, 64]),
            (Layout::Blocked { vec: 2 }, &[3, 8, 64]),
            (Layout::Mma { warps_m: 4, warps_n: 1 }, &[64, 32]),
            (Layout::Mma { warps_m: 4, warps_n: 1 }, &[2, 64, 16]),
            (Layout::Mma { warps_m: 2, warps_n: 2 }, &[64, 32]),
            (Layout::Mma { warps_m: 1, warps_n: 4 }, &[32, 64]),
            (Layout::MmaRows { warps_m: 4 }, &[128]),
            (Layout::MmaRows { warps_m: 4 }, &[64, 1]),
            (Layout::MmaCols { warps_m: 2, warps_n: 2 }, &[1, 32]),
        ];
        for (layout, shape) in cases {
            let t = Type::Tile { dtype: crate::dtype::DType::F32, shape: shape.to_vec(), layout };
            let regs = layout.regs(shape, THREADS);
            let strides = crate::tir::row_major(shape);
            check(
                &[0],
                |g, _| {
                    (0..regs)
                        .map(|r| {
                            let cs = g.coords(&t, r).unwrap_or_else(|e| panic!("{e}"));
                            cs.iter().zip(&strides).fold(g.i32c(0), |acc, (&c, &s)| {
                                g.add(acc, g.mulc(c, s).unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"))
                            })
                        })
                        .collect()
                },
                |tid, _| (0..regs).map(|r| lir::shuffle::element_of(layout, shape, THREADS, tid as u32, r)).collect(),
            );
        }
    }

    /// The swizzled shared-memory offsets built as machine IR are the shared map's on plain
    /// integers, for every thread's `(row, col)`.
    #[test]
    fn swizzled_offsets_build_the_shared_map() {
        use lir::index::{Exact, SmemTile, exact};
        for (cols, esize) in [(64i64, 2i64), (32, 2), (16, 2), (128, 2), (256, 1), (8, 4), (80, 2), (96, 2)] {
            let tile = SmemTile::new(64, cols, esize, true);
            let rc = |tid: i64, x: i64| ((tid + x) / cols % 64, (tid * 7 + x) % cols);
            check(
                &[0, 5, 300],
                |g, x| {
                    let s = g.add(g.tid, x).unwrap_or_else(|e| panic!("{e}"));
                    let row = g.uremc(g.udivc(s, cols).unwrap_or_else(|e| panic!("{e}")), 64).unwrap_or_else(|e| panic!("{e}"));
                    let col = g.uremc(g.add(g.mulc(g.tid, 7).unwrap_or_else(|e| panic!("{e}")), x).unwrap_or_else(|e| panic!("{e}")), cols);
                    vec![g.smem_offset_2d(row, col.unwrap_or_else(|e| panic!("{e}")), tile).unwrap_or_else(|e| panic!("{e}"))]
                },
                |tid, x| {
                    let (row, col) = rc(tid, x);
                    vec![exact(tile.offset(&Exact, row, col))]
                },
            );
        }
    }
}
