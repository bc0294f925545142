//! Integer arithmetic for index and address computations that folds identities (`x + 0`,
//! `x * 1`, `x / 1`, `true && x`, `(x + a) + b`), reuses an identical instruction already built
//! in the same block (or in the entry block), and builds the values that depend only on the
//! thread index that loops use once per kernel, in the entry block.
//!
//! Addresses, masks and coordinates are generated per register, so most of that code repeats;
//! building each value once keeps the LLVM IR small, and LLVM's compile time (most of Tessera's)
//! grows with the size of the IR. LLVM would remove the same redundancy, slowly.

use super::{Gen, Ice, Res};
use inkwell::IntPredicate;
use inkwell::basic_block::BasicBlock;
use inkwell::types::IntType;
use inkwell::values::{AsValueRef, IntValue};

/// The operations that are value-numbered within a block.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Tag {
    Add,
    Sub,
    Mul,
    UDiv,
    URem,
    SDiv,
    SRem,
    And,
    Or,
    Xor,
    Shl,
    LShr,
    AShr,
    Cmp(IntPredicate),
    SExt,
    Select,
}

/// `(block, operation, operands)` of an instruction built by these helpers.
pub(crate) type CseKey<'c> = (BasicBlock<'c>, Tag, [usize; 3]);

/// What a thread-index value is, for building it once: a name and the constants it depends on.
pub(crate) type HoistKey = (&'static str, Vec<i64>);

fn id(v: IntValue<'_>) -> usize {
    v.as_value_ref() as usize
}

impl<'c> Gen<'c, '_> {
    /// The constant value of `v`, if it is one.
    pub(crate) fn const_of(v: IntValue<'c>) -> Option<i64> {
        v.get_sign_extended_constant()
    }

    fn cst(t: IntType<'c>, v: i64) -> IntValue<'c> {
        t.const_int(v as u64, true)
    }

    /// The instruction `tag(ops)` of the current block if one was built, else `build()`.
    fn cse(&self, tag: Tag, ops: [usize; 3], build: impl FnOnce() -> Res<IntValue<'c>>) -> Res<IntValue<'c>> {
        let blk = self.b.get_insert_block().ok_or("no block")?;
        let key = (blk, tag, ops);
        // An instruction of the entry block dominates every block.
        for k in [key, (self.entry, tag, ops)] {
            let found = self.cse.borrow().get(&k).copied();
            if let Some(v) = found {
                return Ok(v);
            }
        }
        let v = build()?;
        // A constant (folded by LLVM's builder) needs no instruction and no entry.
        if !v.is_const() {
            self.cse.borrow_mut().insert(key, v);
        }
        Ok(v)
    }

    /// The `(x, k)` of `v = x + k` (constant `k`) if `v` was built that way here.
    pub(crate) fn split_const(&self, v: IntValue<'c>) -> Option<(IntValue<'c>, i64)> {
        self.plus_const.borrow().get(&id(v)).copied()
    }

    /// `a + b`. Constant terms move outwards (`(x + 1) + (y + 2)` is `(x + y) + 3`), so that the
    /// addresses of a thread's registers are one shared value plus a constant each.
    pub(crate) fn add(&self, a: IntValue<'c>, b: IntValue<'c>) -> Res<IntValue<'c>> {
        match (Self::const_of(a), Self::const_of(b)) {
            (Some(0), _) => return Ok(b),
            (_, Some(0)) => return Ok(a),
            (Some(_), None) => return self.add(b, a),
            (None, Some(k)) => {
                if let Some((x, k0)) = self.split_const(a) {
                    return self.add(x, Self::cst(a.get_type(), k0.wrapping_add(k)));
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
        let v = self.cse(Tag::Add, [id(x), id(y), 0], || self.b.build_int_add(a, b, "i").ice())?;
        if let (None, Some(k)) = (Self::const_of(a), Self::const_of(b)) {
            self.plus_const.borrow_mut().insert(id(v), (a, k));
        }
        Ok(v)
    }

    /// `a + k` in `a`'s type.
    pub(crate) fn addc(&self, a: IntValue<'c>, k: i64) -> Res<IntValue<'c>> {
        self.add(a, Self::cst(a.get_type(), k))
    }

    pub(crate) fn sub(&self, a: IntValue<'c>, b: IntValue<'c>) -> Res<IntValue<'c>> {
        if let Some(k) = Self::const_of(b) {
            return self.addc(a, k.wrapping_neg());
        }
        if a == b {
            return Ok(a.get_type().const_zero());
        }
        if let Some((x, k)) = self.split_const(a) {
            return self.addc(self.sub(x, b)?, k);
        }
        if let Some((y, k)) = self.split_const(b) {
            return self.addc(self.sub(a, y)?, k.wrapping_neg());
        }
        self.cse(Tag::Sub, [id(a), id(b), 0], || self.b.build_int_sub(a, b, "i").ice())
    }

    /// `a * b`; `(x + k) * c` is `x * c + k * c`.
    pub(crate) fn mul(&self, a: IntValue<'c>, b: IntValue<'c>) -> Res<IntValue<'c>> {
        match (Self::const_of(a), Self::const_of(b)) {
            (Some(1), _) => return Ok(b),
            (_, Some(1)) => return Ok(a),
            (Some(0), _) | (_, Some(0)) => return Ok(a.get_type().const_zero()),
            (Some(_), None) => return self.mul(b, a),
            (None, Some(c)) => {
                if let Some((x, k)) = self.split_const(a) {
                    return self.addc(self.mul(x, b)?, k.wrapping_mul(c));
                }
            }
            _ => {}
        }
        let (x, y) = if id(a) <= id(b) { (a, b) } else { (b, a) };
        self.cse(Tag::Mul, [id(x), id(y), 0], || self.b.build_int_mul(a, b, "i").ice())
    }

    /// `a * k` in `a`'s type.
    pub(crate) fn mulc(&self, a: IntValue<'c>, k: i64) -> Res<IntValue<'c>> {
        self.mul(a, Self::cst(a.get_type(), k))
    }

    /// `a / k` (unsigned, `k > 0`).
    pub(crate) fn udivc(&self, a: IntValue<'c>, k: i64) -> Res<IntValue<'c>> {
        if k <= 0 {
            return Err(format!("division by the constant {k}"));
        }
        if k == 1 {
            return Ok(a);
        }
        if k & (k - 1) == 0 {
            return self.lshr(a, k.trailing_zeros() as i64);
        }
        let kv = Self::cst(a.get_type(), k);
        self.cse(Tag::UDiv, [id(a), id(kv), 0], || self.b.build_int_unsigned_div(a, kv, "i").ice())
    }

    /// `a % k` (unsigned, `k > 0`).
    pub(crate) fn uremc(&self, a: IntValue<'c>, k: i64) -> Res<IntValue<'c>> {
        if k <= 0 {
            return Err(format!("remainder by the constant {k}"));
        }
        if k == 1 {
            return Ok(a.get_type().const_zero());
        }
        if k & (k - 1) == 0 {
            return self.and(a, Self::cst(a.get_type(), k - 1));
        }
        let kv = Self::cst(a.get_type(), k);
        self.cse(Tag::URem, [id(a), id(kv), 0], || self.b.build_int_unsigned_rem(a, kv, "i").ice())
    }

    /// `a >> k` (logical).
    pub(crate) fn lshr(&self, a: IntValue<'c>, k: i64) -> Res<IntValue<'c>> {
        if k == 0 {
            return Ok(a);
        }
        let kv = Self::cst(a.get_type(), k);
        self.cse(Tag::LShr, [id(a), id(kv), 0], || self.b.build_right_shift(a, kv, false, "i").ice())
    }

    /// Bitwise and (logical and of `i1`).
    pub(crate) fn and(&self, a: IntValue<'c>, b: IntValue<'c>) -> Res<IntValue<'c>> {
        let ones = |v: IntValue<'c>| v.get_zero_extended_constant() == Some(u64::MAX >> (64 - v.get_type().get_bit_width().min(64)));
        match (Self::const_of(a), Self::const_of(b)) {
            (Some(0), _) => return Ok(a),
            (_, Some(0)) => return Ok(b),
            _ if ones(a) => return Ok(b),
            _ if ones(b) => return Ok(a),
            _ if a == b => return Ok(a),
            _ => {}
        }
        let (x, y) = if id(a) <= id(b) { (a, b) } else { (b, a) };
        self.cse(Tag::And, [id(x), id(y), 0], || self.b.build_and(a, b, "i").ice())
    }

    /// Bitwise or (logical or of `i1`).
    pub(crate) fn or(&self, a: IntValue<'c>, b: IntValue<'c>) -> Res<IntValue<'c>> {
        match (Self::const_of(a), Self::const_of(b)) {
            (Some(0), _) => return Ok(b),
            (_, Some(0)) => return Ok(a),
            _ if a == b => return Ok(a),
            _ => {}
        }
        let (x, y) = if id(a) <= id(b) { (a, b) } else { (b, a) };
        self.cse(Tag::Or, [id(x), id(y), 0], || self.b.build_or(a, b, "i").ice())
    }

    pub(crate) fn xor(&self, a: IntValue<'c>, b: IntValue<'c>) -> Res<IntValue<'c>> {
        match (Self::const_of(a), Self::const_of(b)) {
            (Some(0), _) => return Ok(b),
            (_, Some(0)) => return Ok(a),
            _ => {}
        }
        let (x, y) = if id(a) <= id(b) { (a, b) } else { (b, a) };
        self.cse(Tag::Xor, [id(x), id(y), 0], || self.b.build_xor(a, b, "i").ice())
    }

    /// `a + b`, `a - b` or `a * b` with only the identities folded (`x + 0`, `x * 1`, `x * 0`).
    pub(crate) fn plain(&self, tag: Tag, a: IntValue<'c>, b: IntValue<'c>) -> Res<IntValue<'c>> {
        match (tag, Self::const_of(a), Self::const_of(b)) {
            (Tag::Add, Some(0), _) => Ok(b),
            (Tag::Add | Tag::Sub, _, Some(0)) => Ok(a),
            (Tag::Mul, Some(1), _) => Ok(b),
            (Tag::Mul, _, Some(1)) => Ok(a),
            (Tag::Mul, Some(0), _) | (Tag::Mul, _, Some(0)) => Ok(a.get_type().const_zero()),
            _ => self.bin(tag, a, b),
        }
    }

    /// `tag(a, b)` with no folding (divisions by a variable, shifts by a variable).
    pub(crate) fn bin(&self, tag: Tag, a: IntValue<'c>, b: IntValue<'c>) -> Res<IntValue<'c>> {
        let b_ = &self.b;
        self.cse(tag, [id(a), id(b), 0], || match tag {
            Tag::Add => b_.build_int_add(a, b, "i").ice(),
            Tag::Sub => b_.build_int_sub(a, b, "i").ice(),
            Tag::Mul => b_.build_int_mul(a, b, "i").ice(),
            Tag::UDiv => b_.build_int_unsigned_div(a, b, "i").ice(),
            Tag::URem => b_.build_int_unsigned_rem(a, b, "i").ice(),
            Tag::SDiv => b_.build_int_signed_div(a, b, "i").ice(),
            Tag::SRem => b_.build_int_signed_rem(a, b, "i").ice(),
            Tag::And => b_.build_and(a, b, "i").ice(),
            Tag::Or => b_.build_or(a, b, "i").ice(),
            Tag::Xor => b_.build_xor(a, b, "i").ice(),
            Tag::Shl => b_.build_left_shift(a, b, "i").ice(),
            Tag::LShr => b_.build_right_shift(a, b, false, "i").ice(),
            Tag::AShr => b_.build_right_shift(a, b, true, "i").ice(),
            Tag::Cmp(p) => b_.build_int_compare(p, a, b, "i").ice(),
            Tag::SExt | Tag::Select => Err("not a binary operation".into()),
        })
    }

    pub(crate) fn icmp(&self, p: IntPredicate, a: IntValue<'c>, b: IntValue<'c>) -> Res<IntValue<'c>> {
        self.cse(Tag::Cmp(p), [id(a), id(b), 0], || self.b.build_int_compare(p, a, b, "i").ice())
    }

    /// Sign extension to `t` (the value itself if it has that type).
    pub(crate) fn sext(&self, a: IntValue<'c>, t: IntType<'c>) -> Res<IntValue<'c>> {
        if a.get_type() == t {
            return Ok(a);
        }
        if let Some(k) = Self::const_of(a) {
            return Ok(Self::cst(t, k));
        }
        let tv = t.const_zero();
        self.cse(Tag::SExt, [id(a), id(tv), 0], || self.b.build_int_s_extend(a, t, "i").ice())
    }

    /// `c ? a : b` of integers.
    pub(crate) fn select(&self, c: IntValue<'c>, a: IntValue<'c>, b: IntValue<'c>) -> Res<IntValue<'c>> {
        match Self::const_of(c) {
            Some(0) => return Ok(b),
            Some(_) => return Ok(a),
            None if a == b => return Ok(a),
            None => {}
        }
        self.cse(Tag::Select, [id(c), id(a), id(b)], || Ok(self.b.build_select(c, a, b, "i").ice()?.into_int_value()))
    }

    /// A value that depends only on the thread index (and constants). Inside a loop it is built
    /// once per kernel in the entry block (so that it dominates every use, and is not recomputed
    /// per iteration); `key` names it.
    pub(crate) fn hoisted(&self, key: HoistKey, build: impl FnOnce(&Self) -> Res<IntValue<'c>>) -> Res<IntValue<'c>> {
        let found = self.hoist.borrow().get(&key).copied();
        if let Some(v) = found {
            return Ok(v);
        }
        let here = self.b.get_insert_block().ok_or("no block")?;
        if self.loop_depth.get() == 0 && here != self.entry {
            // Outside loops a value is used where it is built: building it in the entry block
            // would only keep it live (in a register) across everything in between.
            return build(self);
        }
        let v = if here == self.entry {
            // Already building in the entry block (a hoisted value built from another one).
            build(self)?
        } else {
            let term = self.entry.get_terminator().ok_or("the entry block has no terminator")?;
            self.b.position_before(&term);
            let v = build(self);
            self.b.position_at_end(here);
            v?
        };
        self.hoist.borrow_mut().insert(key, v);
        Ok(v)
    }
}
