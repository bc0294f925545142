//! Dead-code elimination: removes operations without side effects whose results are unused,
//! iterating to a fixed point (a removed op can make its operands dead). Side effects: `store`,
//! `scatter`, atomics, `print`, `assert`, `return`, `yield`, and `for`/`if`/`while` whose regions
//! contain them.

use crate::ir::{Block, Op};
use crate::tir::{Kernel, OpKind};

pub fn run(k: &mut Kernel) {
    loop {
        let (live_ops, uses) = super::live_ops_and_uses(k);
        let blocks: Vec<Block> = (0..k.body.blocks.len() as u32).map(Block).collect();
        for b in blocks {
            let ops = std::mem::take(&mut k.body.blocks[b.index()].ops);
            let kept: Vec<Op> =
                ops.into_iter().filter(|&op| has_effect(k, op) || k.body.op(op).results.iter().any(|r| uses[r.index()] > 0)).collect();
            k.body.blocks[b.index()].ops = kept;
        }
        let mut after = 0;
        k.body.walk(k.body.entry, &mut |_| after += 1);
        if after == live_ops.len() {
            break;
        }
    }
}

fn has_effect(k: &Kernel, op: Op) -> bool {
    let d = k.body.op(op);
    match d.kind {
        OpKind::Store | OpKind::Scatter | OpKind::Atomic(_) | OpKind::Print(_) | OpKind::Assert(_) | OpKind::Return | OpKind::Yield => true,
        OpKind::For | OpKind::If | OpKind::While => {
            d.regions.iter().any(|&r| k.body.block(r).ops.iter().any(|&o| has_effect(k, o) && k.body.op(o).kind != OpKind::Yield))
        }
        _ => false,
    }
}
