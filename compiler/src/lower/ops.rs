//! Lowering of `join`/`split`, scans, index reductions, the indexed-memory and debugging ops, and
//! `while`.
//!
//! - `join`, `split`, `scan` and `argmax`/`argmin` need other threads' elements: the operands go
//!   to shared memory at offset 0, a barrier, each thread reads what it needs (`local_load` with
//!   an affine map for `join`/`split`, a loop over the axis for the others), a barrier.
//! - `gather`, `scatter`, atomics, `print` and `assert` are per-thread but take several tiles
//!   whose register `r` must be the same element: every tile operand is brought to one layout
//!   (the result's for `gather`, the values' for writes, the first operand's otherwise).
//!   `assert` is dropped unless the build is checked (`Options::checked`).
//! - `while`: the loop values keep the layouts of the op's results in both regions; the
//!   condition region yields a scalar. No software pipelining inside (`loop_ctx` is cleared).

use super::{Cx, row_major};
use crate::diag::Diagnostic;
use crate::ir::{Block, Op, Value};
use crate::lir;
use crate::tir::OpKind;

impl Cx<'_> {
    /// `join`, `split`, `slice`, `scan.*`, `scan_fn`, `argmax`, `argmin`.
    pub(super) fn lower_staged(&mut self, op: Op, dst: Block, rtys: Vec<lir::Type>, span: crate::Span) -> Result<Vec<Value>, Diagnostic> {
        let d = self.src.op(op);
        let xt = self.src.ty(d.operands[0]).clone();
        let x = self.v(d.operands[0])?;
        let store = |cx: &mut Self, v: Value, offset: u32| {
            cx.emit(dst, lir::OpKind::LocalStore { offset, swizzled: false }, vec![v], vec![], span);
        };
        let bar = |cx: &mut Self| {
            cx.emit(dst, lir::OpKind::Barrier, vec![], vec![], span);
        };
        let results = match &d.kind {
            OpKind::Join => {
                // b right after a: element [c…, k] of the result is element Σc·rm + k·numel.
                let y = self.v(d.operands[1])?;
                let bytes = self.bytes(d.operands[0]);
                self.smem = self.smem.max(bytes.saturating_mul(2));
                store(self, x, 0);
                store(self, y, bytes);
                bar(self);
                let mut strides = row_major(xt.shape());
                strides.push(xt.numel());
                let r = self.emit(dst, lir::OpKind::LocalLoad { offset: 0, strides }, vec![], rtys, span);
                bar(self);
                r
            }
            OpKind::Split => {
                // Half k of element [c…] is element Σc·rm(x)[..r-1] + k of x.
                self.smem = self.smem.max(self.bytes(d.operands[0]));
                store(self, x, 0);
                bar(self);
                let rm = row_major(xt.shape());
                let strides = rm[..rm.len().saturating_sub(1)].to_vec();
                let size = xt.dtype().size() as u32;
                let mut out = vec![];
                for (k, t) in rtys.into_iter().enumerate() {
                    out.extend(self.emit(
                        dst,
                        lir::OpKind::LocalLoad { offset: k as u32 * size, strides: strides.clone() },
                        vec![],
                        vec![t],
                        span,
                    ));
                }
                bar(self);
                out
            }
            OpKind::Scan(_, axis) | OpKind::ArgReduce(_, axis) => {
                self.smem = self.smem.max(self.bytes(d.operands[0]));
                store(self, x, 0);
                bar(self);
                let (src_shape, dtype, axis) = (xt.shape().to_vec(), xt.dtype(), *axis);
                let kind = match &d.kind {
                    OpKind::ArgReduce(aop, _) => lir::OpKind::LocalArgReduce { offset: 0, op: *aop, axis, src_shape, dtype },
                    OpKind::Scan(sop, _) => lir::OpKind::LocalScan { offset: 0, op: *sop, axis, src_shape, dtype },
                    other => return Err(Diagnostic::ice("lower", format!("`{}` is not a staged op", other.mnemonic()))),
                };
                let r = self.emit(dst, kind, vec![], rtys, span);
                bar(self);
                r
            }
            OpKind::Slice(axis, start) => {
                // Element [c…] is element Σc·rm + start·rm[axis] of x.
                self.smem = self.smem.max(self.bytes(d.operands[0]));
                store(self, x, 0);
                bar(self);
                let strides = row_major(xt.shape());
                let at = (*start as u64).saturating_mul(strides[*axis as usize] as u64).saturating_mul(xt.dtype().size() as u64);
                let offset = u32::try_from(at).map_err(|_| Diagnostic::ice("lower", "a slice past shared memory"))?;
                let r = self.emit(dst, lir::OpKind::LocalLoad { offset, strides }, vec![], rtys, span);
                bar(self);
                r
            }
            OpKind::ScanFn(axis) => {
                // The combine function's scalar ops become the region of `local_scan_fn`, which
                // generates them for every element and step.
                let [f] = d.regions[..] else { return Err(Diagnostic::ice("lower", "`scan_fn` without its combine function")) };
                let args = self.src.block(f).args.clone();
                let arg_tys: Vec<lir::Type> = args.iter().map(|&a| self.vty(a)).collect();
                let nb = self.dst.new_block(&arg_tys);
                for (i, &a) in args.iter().enumerate() {
                    let na = self.dst.block(nb).args[i];
                    self.map.insert(a, na);
                }
                let elem = self.ty(&crate::tir::Type::scalar(xt.dtype()));
                self.block(f, nb, std::slice::from_ref(&elem))?;
                self.smem = self.smem.max(self.bytes(d.operands[0]));
                store(self, x, 0);
                bar(self);
                let kind = lir::OpKind::LocalScanFn { offset: 0, axis: *axis, src_shape: xt.shape().to_vec(), dtype: xt.dtype() };
                let r = self.dst.append(dst, kind, vec![], rtys, vec![nb], span);
                let r = self.dst.op(r).results.clone();
                bar(self);
                r
            }
            other => return Err(Diagnostic::ice("lower", format!("`{}` is not a staged op", other.mnemonic()))),
        };
        Ok(results)
    }

    /// `gather`, `scatter`, `atomic.*`, `print`, `assert`: tile operands in one layout.
    pub(super) fn lower_per_thread(
        &mut self,
        op: Op,
        dst: Block,
        rtys: Vec<lir::Type>,
        span: crate::Span,
        checked: bool,
    ) -> Result<Vec<Value>, Diagnostic> {
        let d = self.src.op(op);
        if matches!(d.kind, OpKind::Assert(_)) && !checked {
            return Ok(vec![]);
        }
        let n = d.operands.len();
        // The operand whose layout the others take.
        let anchor = match d.kind {
            OpKind::Gather => None,
            OpKind::Scatter | OpKind::Atomic(_) if n >= 2 => Some(d.operands[n - 2]),
            _ => d.operands.first().copied(),
        };
        let want = match anchor {
            Some(a) => self.dst.ty(self.v(a)?).layout(),
            None => rtys.first().and_then(|t| t.layout()),
        };
        let mut operands = vec![];
        for &o in &d.operands {
            // Scalars (pads, the tensors' offsets) stay as they are: a rank-0 value is the same in
            // every layout, and tensors have none.
            let t = self.src.ty(o);
            let layout = if t.is_tensor() || t.shape().is_empty() { None } else { want };
            operands.push(self.operand(o, layout, dst, span)?);
        }
        Ok(self.emit(dst, lir::OpKind::Tir(d.kind.clone()), operands, rtys, span))
    }

    /// `while`: the inits in the results' layouts, then the condition and body regions.
    pub(super) fn lower_while(&mut self, op: Op, dst: Block, rtys: Vec<lir::Type>, span: crate::Span) -> Result<Vec<Value>, Diagnostic> {
        let d = self.src.op(op);
        let mut operands = vec![];
        for (i, &o) in d.operands.iter().enumerate() {
            operands.push(self.operand(o, rtys.get(i).and_then(|t| t.layout()), dst, span)?);
        }
        let [cond, body] = d.regions[..] else { return Err(Diagnostic::ice("lower", "`while` without two regions")) };
        let cond_ty = self.ty(&crate::tir::Type::scalar(crate::DType::Bool));
        let saved = self.loop_ctx.take();
        let mut regions = vec![];
        for (r, yields) in [(cond, vec![cond_ty]), (body, rtys.clone())] {
            let nb = self.dst.new_block(&rtys);
            for (i, &a) in self.src.block(r).args.iter().enumerate() {
                let na = self.dst.block(nb).args[i];
                self.map.insert(a, na);
            }
            let saved_seq = self.group_seq.replace(0);
            self.loops_open += 1;
            let lowered = self.block(r, nb, &yields);
            self.loops_open -= 1;
            lowered?;
            self.group_seq = saved_seq;
            regions.push(nb);
        }
        self.loop_ctx = saved;
        let op = self.dst.append(dst, lir::OpKind::Tir(OpKind::While), operands, rtys, regions, span);
        // The regions may have committed copy groups: later waits cannot count on them.
        self.group_seq = None;
        Ok(self.dst.op(op).results.clone())
    }
}
