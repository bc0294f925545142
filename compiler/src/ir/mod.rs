//! Shared infrastructure of both IR levels: typed-index arenas of values, operations and blocks,
//! with structured control flow as regions (blocks owned by an operation).
//!
//! The tile IR (`tir`) and the thread IR (`lir`) are each a `Body<Kind, Type>` with their own
//! operation kinds and types. Program order lives in `BlockData::ops`; data flow in operands.
//! Side tables (spans, analyses) are vectors indexed by the same ids.

use crate::diag::Span;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// A hash map with a fast, non-cryptographic hash (the multiply-rotate of rustc's `FxHasher`):
/// for the compiler's own tables keyed by ids and small tuples, which the default SipHash made a
/// tenth of code generation. Not for keys a user controls the distribution of.
pub type FastMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// See [`FastMap`].
#[derive(Clone, Copy, Debug, Default)]
pub struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }

    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

macro_rules! entity {
    ($name:ident, $prefix:literal) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);

        impl $name {
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

entity!(Value, "%");
entity!(Op, "op");
entity!(Block, "bb");

/// Where a value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueDef {
    /// The `n`-th result of an operation.
    Result(Op, u32),
    /// The `n`-th argument of a block.
    Arg(Block, u32),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValueData<T> {
    pub ty: T,
    pub def: ValueDef,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OpData<K> {
    pub kind: K,
    pub operands: Vec<Value>,
    pub results: Vec<Value>,
    /// Nested blocks (loop bodies, branches), owned by this operation.
    pub regions: Vec<Block>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct BlockData {
    pub args: Vec<Value>,
    pub ops: Vec<Op>,
}

/// A function body: arenas of values, operations and blocks, plus the entry block.
#[derive(Clone, Debug, PartialEq)]
pub struct Body<K, T> {
    pub values: Vec<ValueData<T>>,
    pub ops: Vec<OpData<K>>,
    pub blocks: Vec<BlockData>,
    /// Source location of each operation (side table, same index as `ops`).
    pub spans: Vec<Span>,
    pub entry: Block,
}

impl<K, T: Clone> Default for Body<K, T> {
    fn default() -> Self {
        Body::new()
    }
}

impl<K, T: Clone> Body<K, T> {
    /// An empty body with an entry block of no arguments.
    pub fn new() -> Self {
        Body { values: vec![], ops: vec![], blocks: vec![BlockData::default()], spans: vec![], entry: Block(0) }
    }

    pub fn ty(&self, v: Value) -> &T {
        &self.values[v.index()].ty
    }

    pub fn op(&self, op: Op) -> &OpData<K> {
        &self.ops[op.index()]
    }

    pub fn op_mut(&mut self, op: Op) -> &mut OpData<K> {
        &mut self.ops[op.index()]
    }

    pub fn block(&self, b: Block) -> &BlockData {
        &self.blocks[b.index()]
    }

    pub fn span(&self, op: Op) -> Span {
        self.spans.get(op.index()).copied().unwrap_or_default()
    }

    /// A new, detached block with arguments of the given types.
    pub fn new_block(&mut self, arg_types: &[T]) -> Block {
        let b = Block(self.blocks.len() as u32);
        self.blocks.push(BlockData::default());
        for (i, t) in arg_types.iter().enumerate() {
            let v = Value(self.values.len() as u32);
            self.values.push(ValueData { ty: t.clone(), def: ValueDef::Arg(b, i as u32) });
            self.blocks[b.index()].args.push(v);
        }
        b
    }

    /// Adds an argument to an existing block.
    pub fn add_block_arg(&mut self, b: Block, ty: T) -> Value {
        let i = self.blocks[b.index()].args.len() as u32;
        let v = Value(self.values.len() as u32);
        self.values.push(ValueData { ty, def: ValueDef::Arg(b, i) });
        self.blocks[b.index()].args.push(v);
        v
    }

    /// Adds a result of type `ty` to an existing operation.
    pub fn add_result(&mut self, op: Op, ty: T) -> Value {
        let v = Value(self.values.len() as u32);
        let index = self.ops[op.index()].results.len() as u32;
        self.values.push(ValueData { ty, def: ValueDef::Result(op, index) });
        self.ops[op.index()].results.push(v);
        v
    }

    /// Removes result `index` of `op`, which nothing may read; the later results move up.
    pub fn remove_result(&mut self, op: Op, index: usize) {
        self.ops[op.index()].results.remove(index);
        for (i, v) in self.ops[op.index()].results.clone().into_iter().enumerate() {
            self.values[v.index()].def = ValueDef::Result(op, i as u32);
        }
    }

    /// How many times `v` is an operand of `op` or of an operation nested in its regions.
    pub fn uses_in(&self, op: Op, v: Value) -> usize {
        let own = self.ops[op.index()].operands.iter().filter(|&&x| x == v).count();
        let nested = self.ops[op.index()].regions.iter().flat_map(|&r| self.blocks[r.index()].ops.iter());
        own + nested.map(|&o| self.uses_in(o, v)).sum::<usize>()
    }

    /// Creates an operation (not yet placed in any block).
    pub fn create_op(&mut self, kind: K, operands: Vec<Value>, result_types: Vec<T>, regions: Vec<Block>, span: Span) -> Op {
        let op = Op(self.ops.len() as u32);
        let mut results = Vec::with_capacity(result_types.len());
        for (i, t) in result_types.into_iter().enumerate() {
            let v = Value(self.values.len() as u32);
            self.values.push(ValueData { ty: t, def: ValueDef::Result(op, i as u32) });
            results.push(v);
        }
        self.ops.push(OpData { kind, operands, results, regions });
        self.spans.push(span);
        op
    }

    /// Creates an operation and appends it to `block`.
    pub fn append(&mut self, block: Block, kind: K, operands: Vec<Value>, result_types: Vec<T>, regions: Vec<Block>, span: Span) -> Op {
        let op = self.create_op(kind, operands, result_types, regions, span);
        self.blocks[block.index()].ops.push(op);
        op
    }

    /// The operation that defines `v` (`None` for a block argument).
    pub fn producer(&self, v: Value) -> Option<Op> {
        match self.values[v.index()].def {
            ValueDef::Result(op, _) => Some(op),
            ValueDef::Arg(..) => None,
        }
    }

    /// The single result of `op` (the first, if several).
    pub fn result(&self, op: Op) -> Value {
        self.ops[op.index()].results[0]
    }

    /// Replaces `from` by `to` in the operands of `op` and of every op nested in its regions.
    pub fn replace_uses_in(&mut self, op: Op, from: Value, to: Value) {
        for o in self.ops[op.index()].operands.iter_mut() {
            if *o == from {
                *o = to;
            }
        }
        for r in self.ops[op.index()].regions.clone() {
            for inner in self.blocks[r.index()].ops.clone() {
                self.replace_uses_in(inner, from, to);
            }
        }
    }

    /// The entry block and every nested region reachable from it, parents before their regions.
    pub fn blocks(&self) -> Vec<Block> {
        let mut blocks = vec![self.entry];
        self.walk(self.entry, &mut |op| blocks.extend(self.ops[op.index()].regions.iter().copied()));
        blocks
    }

    /// Visits every operation reachable from `block`, in program order, nested regions first
    /// after their parent op.
    pub fn walk(&self, block: Block, f: &mut impl FnMut(Op)) {
        for &op in &self.blocks[block.index()].ops {
            f(op);
            for &r in &self.ops[op.index()].regions {
                self.walk(r, f);
            }
        }
    }
}

/// Assigns printing numbers to values in definition order, so that printed IR does not depend on
/// arena order (canonical numbering: unrelated changes do not renumber snapshots).
#[derive(Clone, Debug, Default)]
pub struct Numbering {
    map: std::collections::HashMap<Value, u32>,
}

impl Numbering {
    pub fn get(&mut self, v: Value) -> u32 {
        let next = self.map.len() as u32;
        *self.map.entry(v).or_insert(next)
    }

    pub fn name(&mut self, v: Value) -> String {
        format!("%{}", self.get(v))
    }
}
