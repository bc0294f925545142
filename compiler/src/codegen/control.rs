//! Per-thread code of `while` and `return`.
//!
//! `while` is a loop whose header holds the phis of the loop values and the condition region;
//! the body region branches back to it. `return` leaves the kernel (every thread together: the
//! conditions that lead to it are scalars, the same in every thread); the code after it in its
//! region goes to a block that nothing branches to.

use super::{Cv, Gen, Ice, Res};
use crate::ir::Op;
use crate::lir;
use inkwell::values::{BasicValue, BasicValueEnum};

impl<'c> Gen<'c, '_> {
    pub(crate) fn while_loop(&mut self, op: Op) -> Res<Vec<Cv<'c>>> {
        let d = self.k.body.op(op).clone();
        let [cond, body] = d.regions[..] else { return Err("`while` needs two regions".into()) };
        let inits: Vec<Cv> =
            d.operands.iter().map(|o| self.vals.get(o).cloned().ok_or("undefined loop value")).collect::<Result<_, _>>()?;
        let flat_init = Self::flatten(&inits)?;
        let types: Vec<lir::Type> = d.results.iter().map(|&r| self.ty(r).clone()).collect();
        let pre = self.b.get_insert_block().ok_or("no block")?;
        let header = self.block("while.cond");
        let body_bb = self.block("while.body");
        let exit = self.block("while.end");
        self.b.build_unconditional_branch(header).ice()?;
        self.b.position_at_end(header);
        let phis = flat_init.iter().map(|v| self.b.build_phi(v.get_type(), "wv")).collect::<Result<Vec<_>, _>>().ice()?;
        let cur: Vec<BasicValueEnum> = phis.iter().map(|p| p.as_basic_value()).collect();
        for region in [cond, body] {
            let args = self.k.body.block(region).args.clone();
            for (a, v) in args.iter().zip(self.unflatten(&cur, &types)) {
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
        let latch = self.b.get_insert_block().ok_or("no block")?;
        self.b.build_unconditional_branch(header).ice()?;
        for ((p, init), nx) in phis.iter().zip(&flat_init).zip(&next) {
            p.add_incoming(&[(init as &dyn BasicValue, pre), (nx as &dyn BasicValue, latch)]);
        }
        self.b.position_at_end(exit);
        Ok(self.unflatten(&cur, &types))
    }

    /// The condition (branching to `body_bb` or `exit`) and the body of a `while`; the body's
    /// next loop values.
    fn while_regions(
        &mut self,
        cond: crate::ir::Block,
        body: crate::ir::Block,
        body_bb: inkwell::basic_block::BasicBlock<'c>,
        exit: inkwell::basic_block::BasicBlock<'c>,
    ) -> Res<Vec<BasicValueEnum<'c>>> {
        let c = Self::flatten(&self.region(cond)?)?;
        let c = c.first().ok_or("the condition region yields nothing")?.into_int_value();
        self.b.build_conditional_branch(c, body_bb, exit).ice()?;
        self.b.position_at_end(body_bb);
        Self::flatten(&self.region(body)?)
    }

    /// `return`.
    pub(crate) fn return_op(&mut self) -> Res<Vec<Cv<'c>>> {
        self.b.build_return(None).ice()?;
        let dead = self.block("after.return");
        self.b.position_at_end(dead);
        Ok(vec![])
    }
}
