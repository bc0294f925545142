//! Tile IR → thread IR: layout assignment and shared-memory planning.
//!
//! Algorithm (the first, simple and obviously right strategy of the design):
//! 1. every tile gets the blocked layout for its element count (`Layout::blocked_for`), so
//!    elementwise operands always agree and `reshape`/`expand_dims` move no data;
//! 2. every op that needs other threads' elements (`broadcast`, `permute`, `reduce`, `dot`)
//!    becomes: each thread stores its elements to shared memory, a barrier, each thread reads the
//!    elements it needs (an affine map, a loop over the reduced axis, or a k-loop of FMAs), and a
//!    barrier so that the next such op may reuse the buffer;
//! 3. all such ops share one scratch region at offset 0 (the barriers order them), so the kernel's
//!    shared memory is the largest single need.
//!
//! Later strategies (MMA layouts, swizzled shared memory, pipelining) replace steps of this one
//! and are checked against it.

use crate::Options;
use crate::diag::Diagnostic;
use crate::ir::{Block, Value};
use crate::lir::{self, Layout, LirBody};
use crate::tir::{self, OpKind};
use std::collections::HashMap;

/// Shared memory available to one block on the targets (227 KiB on sm_90, 163 KiB on sm_80).
pub fn max_shared_bytes(target: crate::Target) -> u32 {
    match target {
        crate::Target::Sm80 => 163 * 1024,
        crate::Target::Sm90a => 227 * 1024,
    }
}

/// Lowers one kernel to the thread IR.
pub fn lower_kernel(k: &tir::Kernel, opts: &Options) -> Result<lir::Kernel, Diagnostic> {
    let threads = opts.warps.unwrap_or(k.warps) * 32;
    let mut cx = Cx { src: &k.body, dst: LirBody::new(), map: HashMap::new(), threads, smem: 0 };
    let entry = cx.dst.entry;
    for (i, p) in k.params.iter().enumerate() {
        let v = cx.dst.add_block_arg(entry, cx.ty(&p.ty()));
        cx.map.insert(k.param_value(i), v);
    }
    cx.block(k.body.entry, entry)?;
    let shared_bytes = cx.smem;
    let limit = max_shared_bytes(opts.target);
    if shared_bytes > limit {
        return Err(Diagnostic::error(format!(
            "kernel `{}` needs {shared_bytes} bytes of shared memory, but {} allows {limit}",
            k.name,
            opts.target.name()
        ))
        .note("use smaller tiles (a smaller const parameter, e.g. `--const BK=32`)"));
    }
    Ok(lir::Kernel { name: k.name.clone(), params: k.params.clone(), threads, shared_bytes, body: cx.dst })
}

struct Cx<'a> {
    src: &'a tir::TirBody,
    dst: LirBody,
    map: HashMap<Value, Value>,
    threads: u32,
    smem: u32,
}

fn row_major(shape: &[i64]) -> Vec<i64> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn align16(x: u32) -> u32 {
    x.div_ceil(16) * 16
}

impl Cx<'_> {
    fn ty(&self, t: &tir::Type) -> lir::Type {
        match t {
            tir::Type::Tile { dtype, shape } => {
                let n: i64 = shape.iter().product();
                lir::Type::Tile { dtype: *dtype, shape: shape.clone(), layout: Layout::blocked_for(n, self.threads) }
            }
            tir::Type::Tensor { dtype, rank, mutable } => lir::Type::Tensor { dtype: *dtype, rank: *rank, mutable: *mutable },
        }
    }

    fn v(&self, v: Value) -> Result<Value, Diagnostic> {
        self.map.get(&v).copied().ok_or_else(|| Diagnostic::ice("lower", format!("{v} used before its definition")))
    }

    fn bytes(&self, v: Value) -> u32 {
        let t = self.src.ty(v);
        (t.numel() as u64 * t.dtype().size() as u64).min(u32::MAX as u64) as u32
    }

    fn emit(&mut self, blk: Block, kind: lir::OpKind, operands: Vec<Value>, results: Vec<lir::Type>, span: crate::Span) -> Vec<Value> {
        let op = self.dst.append(blk, kind, operands, results, vec![], span);
        self.dst.op(op).results.clone()
    }

    fn block(&mut self, src: Block, dst: Block) -> Result<(), Diagnostic> {
        for &op in &self.src.block(src).ops {
            let d = self.src.op(op);
            let span = self.src.span(op);
            let operands: Vec<Value> = d.operands.iter().map(|&o| self.v(o)).collect::<Result<_, _>>()?;
            let rtys: Vec<lir::Type> = d.results.iter().map(|&r| self.ty(self.src.ty(r))).collect();
            let results: Vec<Value> = match &d.kind {
                OpKind::ExpandDims(_) | OpKind::Reshape => self.emit(dst, lir::OpKind::Reshape, operands, rtys, span),
                OpKind::Broadcast | OpKind::Permute(_) => {
                    let src_shape = self.src.ty(d.operands[0]).shape().to_vec();
                    let dst_shape = self.src.ty(d.results[0]).shape().to_vec();
                    let rm = row_major(&src_shape);
                    let strides = match &d.kind {
                        OpKind::Permute(p) => p.iter().map(|&i| rm[i as usize]).collect(),
                        _ => (0..dst_shape.len()).map(|i| if src_shape[i] == 1 && dst_shape[i] != 1 { 0 } else { rm[i] }).collect(),
                    };
                    self.smem = self.smem.max(self.bytes(d.operands[0]));
                    self.emit(dst, lir::OpKind::LocalStore { offset: 0 }, operands, vec![], span);
                    self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
                    let r = self.emit(dst, lir::OpKind::LocalLoad { offset: 0, strides }, vec![], rtys, span);
                    self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
                    r
                }
                OpKind::Reduce(rop, axis) => {
                    let st = self.src.ty(d.operands[0]).clone();
                    self.smem = self.smem.max(self.bytes(d.operands[0]));
                    self.emit(dst, lir::OpKind::LocalStore { offset: 0 }, operands, vec![], span);
                    self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
                    let kind =
                        lir::OpKind::LocalReduce { offset: 0, op: *rop, axis: *axis, src_shape: st.shape().to_vec(), dtype: st.dtype() };
                    let r = self.emit(dst, kind, vec![], rtys, span);
                    self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
                    r
                }
                OpKind::Dot => {
                    let at = self.src.ty(d.operands[0]).clone();
                    let a_bytes = align16(self.bytes(d.operands[0]));
                    let b_bytes = self.bytes(d.operands[1]);
                    self.smem = self.smem.max(a_bytes.saturating_add(b_bytes));
                    self.emit(dst, lir::OpKind::LocalStore { offset: 0 }, vec![operands[0]], vec![], span);
                    self.emit(dst, lir::OpKind::LocalStore { offset: a_bytes }, vec![operands[1]], vec![], span);
                    self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
                    let kind = lir::OpKind::LocalDot { a_offset: 0, b_offset: a_bytes, k: at.shape()[1], dtype: at.dtype() };
                    let r = self.emit(dst, kind, vec![operands[2]], rtys, span);
                    self.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
                    r
                }
                OpKind::For | OpKind::If => {
                    let mut regions = vec![];
                    for &r in &d.regions {
                        let arg_tys: Vec<lir::Type> = self.src.block(r).args.iter().map(|&a| self.ty(self.src.ty(a))).collect();
                        let nb = self.dst.new_block(&arg_tys);
                        for (i, &a) in self.src.block(r).args.iter().enumerate() {
                            let na = self.dst.block(nb).args[i];
                            self.map.insert(a, na);
                        }
                        self.block(r, nb)?;
                        regions.push(nb);
                    }
                    let op = self.dst.append(dst, lir::OpKind::Tir(d.kind.clone()), operands, rtys, regions, span);
                    self.dst.op(op).results.clone()
                }
                kind => self.emit(dst, lir::OpKind::Tir(kind.clone()), operands, rtys, span),
            };
            for (&s, &n) in d.results.iter().zip(&results) {
                self.map.insert(s, n);
            }
        }
        Ok(())
    }
}
