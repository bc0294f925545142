//! Per-thread code of `while` and `return`.
//!
//! `while` is a loop whose header holds the phis of the loop values and the condition region;
//! the body region branches back to it. `return` leaves the kernel (every thread together: the
//! conditions that lead to it are scalars, the same in every thread); the code after it in its
//! region goes to a block that nothing branches to.

use super::{Cv, Gen, Res};
use crate::ir::Op;
use crate::lir;
use crate::mir::{Blk, V};

impl Gen<'_> {
    pub(crate) fn while_loop(&mut self, op: Op) -> Res<Vec<Cv>> {
        let d = self.k.body.op(op).clone();
        let [cond, body] = d.regions[..] else { return Err("`while` needs two regions".into()) };
        let inits: Vec<Cv> =
            d.operands.iter().map(|o| self.vals.get(o).cloned().ok_or("undefined loop value")).collect::<Result<_, _>>()?;
        let flat_init = Self::flatten(&inits)?;
        let types: Vec<lir::Type> = d.results.iter().map(|&r| self.ty(r).clone()).collect();
        let pre = self.b.current();
        let header = self.block("while_cond");
        let body_bb = self.block("while_body");
        let exit = self.block("while_end");
        self.b.br(header);
        self.b.enter_loop();
        self.b.position(header);
        let phis: Vec<V> = flat_init.iter().map(|v| self.b.phi(v.ty)).collect();
        for (p, init) in phis.iter().zip(&flat_init) {
            self.b.incoming(*p, *init, pre);
        }
        for region in [cond, body] {
            let args = self.k.body.block(region).args.clone();
            for (a, v) in args.iter().zip(self.unflatten(&phis, &types)) {
                self.vals.insert(*a, v);
            }
        }
        self.loop_depth.set(self.loop_depth.get() + 1);
        let regions = self.while_regions(cond, body, body_bb, exit);
        self.loop_depth.set(self.loop_depth.get() - 1);
        let next = regions?;
        if next.len() != phis.len() {
            return Err(format!("the body yields {} registers for {} loop registers", next.len(), phis.len()));
        }
        let latch = self.b.current();
        for (p, nx) in phis.iter().zip(&next) {
            self.b.incoming(*p, *nx, latch);
        }
        self.b.br(header);
        self.b.exit_loop();
        self.b.position(exit);
        Ok(self.unflatten(&phis, &types))
    }

    /// The condition (branching to `body_bb` or `exit`) and the body of a `while`; the body's
    /// next loop values.
    fn while_regions(&mut self, cond: crate::ir::Block, body: crate::ir::Block, body_bb: Blk, exit: Blk) -> Res<Vec<V>> {
        let c = Self::flatten(&self.region(cond)?)?;
        let c = *c.first().ok_or("the condition region yields nothing")?;
        self.b.cond_br(c, body_bb, exit);
        self.b.position(body_bb);
        Self::flatten(&self.region(body)?)
    }

    /// `return`.
    pub(crate) fn return_op(&mut self) -> Res<Vec<Cv>> {
        self.b.ret();
        let dead = self.block("after_return");
        self.b.position(dead);
        Ok(vec![])
    }
}
