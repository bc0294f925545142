//! The tile-IR verifier: operands defined before use (in scope of their region), operand counts
//! and types per op, region terminators, and tile shapes within the language's limits. Run after
//! every pass in tests and debug builds; a failure is an internal compiler error.

use super::{AtomicOp, Kernel, OpKind, Type};
use crate::DType;
use crate::ir::{Block, Op};

/// Checks the invariants of the tile IR.
pub fn verify_kernel(k: &Kernel) -> Result<(), String> {
    let b = &k.body;
    if b.block(b.entry).args.len() != k.params.len() {
        return Err(format!("entry block has {} arguments for {} parameters", b.block(b.entry).args.len(), k.params.len()));
    }
    for (i, p) in k.params.iter().enumerate() {
        if b.ty(k.param_value(i)) != &p.ty() {
            return Err(format!("parameter `{}` has type {}, its entry argument {}", p.name, p.ty(), b.ty(k.param_value(i))));
        }
    }
    super::check_warps(k.warps.into()).map_err(|e| format!("warps({}): {e}", k.warps))?;
    super::check_stages(k.stages.into()).map_err(|e| format!("stages({}): {e}", k.stages))?;
    if let Some(n) = k.blocks_per_sm {
        super::check_blocks_per_sm(n.into(), k.warps).map_err(|e| format!("blocks_per_sm({n}): {e}"))?;
    }
    for p in &k.params {
        if let super::ParamKind::Tensor { dims, .. } = &p.kind
            && let Some(d) = dims.iter().find(|d| matches!(d, super::Dim::Const(v) if i32::try_from(*v).is_err() || *v < 0))
        {
            return Err(format!("parameter `{}` has dimension {d:?}, outside the i32 sizes of the parameter ABI", p.name));
        }
    }
    if k.grid.is_empty() || k.grid.len() > 3 {
        return Err(format!("grid has {} axes", k.grid.len()));
    }
    let mut defined = vec![false; b.values.len()];
    let mut placed = vec![false; b.ops.len()];
    block(k, b.entry, &mut defined, &mut placed, None)
}

fn block(k: &Kernel, blk: Block, defined: &mut Vec<bool>, placed: &mut Vec<bool>, want_yield: Option<&[Type]>) -> Result<(), String> {
    let b = &k.body;
    for &a in &b.block(blk).args {
        defined[a.index()] = true;
    }
    let ops = &b.block(blk).ops;
    for (i, &op) in ops.iter().enumerate() {
        if std::mem::replace(&mut placed[op.index()], true) {
            return Err(format!("{op} is placed in two blocks"));
        }
        let d = b.op(op);
        for &o in &d.operands {
            if !defined.get(o.index()).copied().unwrap_or(false) {
                return Err(format!("`{}` uses a value before its definition or outside its scope", d.kind.mnemonic()));
            }
        }
        let last = i + 1 == ops.len();
        match (&d.kind, want_yield) {
            (OpKind::Yield, Some(tys)) if last => {
                let got: Vec<&Type> = d.operands.iter().map(|&o| b.ty(o)).collect();
                if got.len() != tys.len() || got.iter().zip(tys).any(|(g, w)| *g != w) {
                    return Err(format!("yield of {} values does not match the parent's {} results", got.len(), tys.len()));
                }
            }
            (OpKind::Yield, _) => return Err("`yield` outside the end of a region".into()),
            _ => check_op(k, op).map_err(|e| format!("`{}`: {e}", d.kind.mnemonic()))?,
        }
        let saved = defined.clone();
        match &d.kind {
            OpKind::For => {
                let r = *d.regions.first().ok_or("for without a body")?;
                let tys: Vec<Type> = d.results.iter().map(|&r| b.ty(r).clone()).collect();
                block(k, r, defined, placed, Some(&tys))?;
            }
            OpKind::If => {
                let tys: Vec<Type> = d.results.iter().map(|&r| b.ty(r).clone()).collect();
                for &r in &d.regions {
                    block(k, r, defined, placed, Some(&tys))?;
                    *defined = saved.clone();
                }
            }
            OpKind::While => {
                // The condition region yields the bool; the body yields the next values.
                let tys: Vec<Type> = d.results.iter().map(|&r| b.ty(r).clone()).collect();
                let [cond, body] = d.regions[..] else { return Err("`while` needs two regions".into()) };
                block(k, cond, defined, placed, Some(&[Type::scalar(DType::Bool)]))?;
                *defined = saved.clone();
                block(k, body, defined, placed, Some(&tys))?;
            }
            OpKind::ScanFn(_) => {
                // The combine function sees its two arguments and nothing else.
                let [r] = d.regions[..] else { return Err("`scan_fn` needs one region".into()) };
                let elem = Type::scalar(b.ty(d.operands[0]).dtype());
                let mut own = vec![false; defined.len()];
                block(k, r, &mut own, placed, Some(std::slice::from_ref(&elem)))?;
            }
            _ => {}
        }
        // Values of a region are not visible after it.
        *defined = saved;
        for &r in &d.results {
            defined[r.index()] = true;
        }
    }
    if want_yield.is_some() && !ops.last().is_some_and(|&o| b.op(o).kind == OpKind::Yield) {
        return Err("a region does not end with `yield`".into());
    }
    Ok(())
}

fn check_op(k: &Kernel, op: Op) -> Result<(), String> {
    let b = &k.body;
    let d = b.op(op);
    let ty = |i: usize| d.operands.get(i).map(|&v| b.ty(v)).ok_or_else(|| format!("missing operand {i}"));
    let res = |i: usize| d.results.get(i).map(|&v| b.ty(v)).ok_or_else(|| format!("missing result {i}"));
    let n = |want: usize| if d.operands.len() == want { Ok(()) } else { Err(format!("{} operands, expected {want}", d.operands.len())) };
    let i32s = Type::scalar(DType::I32);
    for &r in &d.results {
        let t = b.ty(r);
        if let Type::Tile { shape, .. } = t
            && (shape.len() > 4 || shape.iter().any(|&s| s <= 0 || (s as u64).count_ones() != 1))
        {
            return Err(format!("result type {t} is not a tile of rank ≤ 4 with power-of-two dimensions"));
        }
        if !t.is_tensor() && t.numel() > super::MAX_TILE_ELEMS {
            return Err(format!("result type {t} has more than {} elements", super::MAX_TILE_ELEMS));
        }
    }
    match &d.kind {
        OpKind::Const(_) | OpKind::ProgramId(_) | OpKind::NumPrograms(_) | OpKind::Arange(_) => n(0),
        OpKind::Splat => {
            n(1)?;
            if !ty(0)?.is_scalar() || ty(0)?.dtype() != res(0)?.dtype() {
                return Err("splat takes a scalar of the result's dtype".into());
            }
            Ok(())
        }
        OpKind::Broadcast | OpKind::ExpandDims(_) | OpKind::Reshape | OpKind::Permute(_) => {
            n(1)?;
            let (s, r) = (ty(0)?, res(0)?);
            if s.dtype() != r.dtype() {
                return Err("changes the dtype".into());
            }
            match &d.kind {
                OpKind::Reshape | OpKind::ExpandDims(_) | OpKind::Permute(_) if s.numel() != r.numel() => {
                    Err(format!("{s} → {r} changes the element count"))
                }
                OpKind::Broadcast
                    if s.shape().len() != r.shape().len() || s.shape().iter().zip(r.shape()).any(|(a, c)| a != c && *a != 1) =>
                {
                    Err(format!("cannot broadcast {s} to {r}"))
                }
                _ => Ok(()),
            }
        }
        OpKind::Binary(_) | OpKind::Cmp(_) => {
            n(2)?;
            if ty(0)? != ty(1)? {
                return Err(format!("operands {} and {} differ", ty(0)?, ty(1)?));
            }
            let want = if matches!(d.kind, OpKind::Cmp(_)) { ty(0)?.with_dtype(DType::Bool) } else { ty(0)?.clone() };
            if res(0)? != &want { Err(format!("result {} should be {want}", res(0)?)) } else { Ok(()) }
        }
        OpKind::Unary(_) => {
            n(1)?;
            if res(0)? != ty(0)? { Err("result type differs from the operand".into()) } else { Ok(()) }
        }
        OpKind::Select => {
            n(3)?;
            if ty(0)? != &ty(1)?.with_dtype(DType::Bool) || ty(1)? != ty(2)? || res(0)? != ty(1)? {
                return Err("select(c: bool[s], a: T[s], b: T[s]) -> T[s]".into());
            }
            Ok(())
        }
        OpKind::Fma => {
            n(3)?;
            if ty(0)? != ty(1)? || ty(1)? != ty(2)? || res(0)? != ty(0)? || !ty(0)?.dtype().is_float() {
                return Err("fma(a: T[s], b: T[s], c: T[s]) -> T[s], T a float".into());
            }
            Ok(())
        }
        OpKind::Cast => {
            n(1)?;
            if ty(0)?.shape() != res(0)?.shape() { Err("cast changes the shape".into()) } else { Ok(()) }
        }
        OpKind::Reduce(_, axis) => {
            n(1)?;
            let mut s = ty(0)?.shape().to_vec();
            if *axis as usize >= s.len() {
                return Err(format!("axis {axis} out of range"));
            }
            s.remove(*axis as usize);
            if res(0)? != &Type::tile(ty(0)?.dtype(), s) { Err("result shape".into()) } else { Ok(()) }
        }
        OpKind::Dot => {
            n(3)?;
            let (a, c, acc) = (ty(0)?.shape(), ty(1)?.shape(), ty(2)?.shape());
            if a.len() != 2 || c.len() != 2 || a[1] != c[0] || acc != [a[0], c[1]] || res(0)? != ty(2)? {
                return Err(format!("{} · {} + {}", ty(0)?, ty(1)?, ty(2)?));
            }
            Ok(())
        }
        OpKind::Dim(axis) => match ty(0)? {
            Type::Tensor { rank, .. } if (*axis as usize) < *rank => Ok(()),
            t => Err(format!("dim {axis} of {t}")),
        },
        OpKind::View => match (ty(0)?, res(0)?) {
            (Type::Tensor { rank, dtype, .. }, Type::Tensor { rank: r2, dtype: d2, .. })
                if rank - (d.operands.len() - 1) == *r2 && dtype == d2 && *r2 > 0 =>
            {
                Ok(())
            }
            _ => Err("view(t, i…) fixes leading dimensions of a tensor".into()),
        },
        OpKind::Load | OpKind::Store => {
            let Type::Tensor { rank, dtype, mutable } = ty(0)? else { return Err("the first operand is not a tensor".into()) };
            if d.operands.len() != rank + 2 {
                return Err(format!("{} operands for a rank-{rank} tensor", d.operands.len()));
            }
            for i in 1..=*rank {
                if ty(i)? != &i32s {
                    return Err("offsets are i32 scalars".into());
                }
            }
            let tile = if d.kind == OpKind::Load { res(0)? } else { ty(rank + 1)? };
            if tile.dtype() != *dtype || tile.shape().len() != *rank {
                return Err(format!("tile {tile} does not match the tensor"));
            }
            if d.kind == OpKind::Load && ty(rank + 1)? != &Type::scalar(*dtype) {
                return Err("the pad is a scalar of the tensor's dtype".into());
            }
            if d.kind == OpKind::Store && !mutable {
                return Err("store to a read-only tensor".into());
            }
            Ok(())
        }
        OpKind::For => {
            if d.operands.len() < 3 || (0..3).any(|i| ty(i).ok() != Some(&i32s)) {
                return Err("for(lo: i32, hi: i32, step: i32, init…)".into());
            }
            let r = *d.regions.first().ok_or("no body")?;
            let args = &b.block(r).args;
            if args.len() != d.results.len() + 1 || d.operands.len() != d.results.len() + 3 {
                return Err("iteration values do not match the body's arguments".into());
            }
            for (i, &res_v) in d.results.iter().enumerate() {
                if b.ty(d.operands[i + 3]) != b.ty(res_v) || b.ty(args[i + 1]) != b.ty(res_v) {
                    return Err(format!("iteration value {i} changes type"));
                }
            }
            Ok(())
        }
        OpKind::If => {
            n(1)?;
            if ty(0)? != &Type::scalar(DType::Bool) || d.regions.len() != 2 {
                return Err("if(cond: bool) with two regions".into());
            }
            Ok(())
        }
        OpKind::Gather | OpKind::Scatter | OpKind::Atomic(_) => indexed(k, op),
        OpKind::Slice(axis, start) => {
            n(1)?;
            let (t, r) = (ty(0)?, res(0)?);
            let a = *axis as usize;
            let ok = !t.is_tensor()
                && a < t.shape().len()
                && r.dtype() == t.dtype()
                && r.shape().len() == t.shape().len()
                && r.shape()
                    .iter()
                    .zip(t.shape())
                    .enumerate()
                    .all(|(i, (&rs, &ts))| if i == a { *start as i64 + rs <= ts } else { rs == ts });
            if ok { Ok(()) } else { Err(format!("{r} is not elements {start}.. of axis {axis} of {t}")) }
        }
        OpKind::ScanFn(axis) => {
            n(1)?;
            let t = ty(0)?;
            if t.is_tensor() || *axis as usize >= t.shape().len() || t.dtype() == DType::Bool {
                return Err(format!("axis {axis} of {t}"));
            }
            if res(0)? != t {
                return Err(format!("result {} should be {t}", res(0)?));
            }
            let [r] = d.regions[..] else { return Err("one region, the combine function".into()) };
            let elem = Type::scalar(t.dtype());
            if b.block(r).args.iter().map(|&a| b.ty(a)).ne([&elem, &elem]) {
                return Err(format!("the combine function takes two {elem}"));
            }
            for &o in &b.block(r).ops {
                let kind = &b.op(o).kind;
                let scalar_only = b.op(o).results.iter().all(|&v| b.ty(v).is_scalar());
                if !scalar_only || !kind.is_elementwise() && *kind != OpKind::Yield {
                    return Err(format!("`{}` in the combine function (elementwise scalar ops only)", kind.mnemonic()));
                }
            }
            Ok(())
        }
        OpKind::ArgReduce(_, axis) | OpKind::Scan(_, axis) => {
            n(1)?;
            let t = ty(0)?;
            if t.is_tensor() || *axis as usize >= t.shape().len() || t.dtype() == DType::Bool {
                return Err(format!("axis {axis} of {t}"));
            }
            let want = match d.kind {
                OpKind::Scan(..) => t.clone(),
                _ => {
                    let mut s = t.shape().to_vec();
                    s.remove(*axis as usize);
                    Type::tile(DType::I32, s)
                }
            };
            if res(0)? != &want { Err(format!("result {} should be {want}", res(0)?)) } else { Ok(()) }
        }
        OpKind::Join => {
            n(2)?;
            let (a, c) = (ty(0)?, ty(1)?);
            let mut s = a.shape().to_vec();
            s.push(2);
            if a.is_tensor() || a != c || res(0)? != &Type::tile(a.dtype(), s) {
                return Err(format!("join({a}, {c}) -> {}", res(0)?));
            }
            Ok(())
        }
        OpKind::Split => {
            n(1)?;
            let x = ty(0)?;
            let s = x.shape();
            let half = Type::tile(x.dtype(), s[..s.len().saturating_sub(1)].to_vec());
            if x.is_tensor() || s.last() != Some(&2) || d.results.len() != 2 || res(0)? != &half || res(1)? != &half {
                return Err(format!("split of {x}"));
            }
            Ok(())
        }
        OpKind::Print(_) | OpKind::Assert(_) => {
            if !d.results.is_empty() {
                return Err("has results".into());
            }
            let shape = d.operands.first().map(|&o| b.ty(o).shape().to_vec()).unwrap_or_default();
            for &o in &d.operands {
                let t = b.ty(o);
                if t.is_tensor() || t.shape() != shape {
                    return Err(format!("operand {t} is not a tile of shape {shape:?}"));
                }
            }
            if matches!(d.kind, OpKind::Assert(_)) && (d.operands.len() != 1 || ty(0)?.dtype() != DType::Bool) {
                return Err("assert takes one bool tile".into());
            }
            Ok(())
        }
        OpKind::While => {
            if d.regions.len() != 2 || d.operands.len() != d.results.len() {
                return Err("while(init…) -> (T…) with a condition and a body".into());
            }
            for (i, (&o, &r)) in d.operands.iter().zip(&d.results).enumerate() {
                if b.ty(o) != b.ty(r) {
                    return Err(format!("loop value {i} changes type"));
                }
            }
            for &region in &d.regions {
                let args = &b.block(region).args;
                if args.len() != d.results.len() || args.iter().zip(&d.results).any(|(&a, &r)| b.ty(a) != b.ty(r)) {
                    return Err("the regions' arguments do not match the loop values".into());
                }
            }
            Ok(())
        }
        OpKind::Return => {
            n(0)?;
            if d.results.is_empty() && d.regions.is_empty() { Ok(()) } else { Err("return has results or regions".into()) }
        }
        OpKind::Yield => Ok(()),
    }
}

/// `gather`, `scatter` and `atomic`: a tensor, one i32 index tile per dimension, then the values
/// (not for `gather`), the mask and the pad (only for `gather`), all tiles of one shape.
fn indexed(k: &Kernel, op: Op) -> Result<(), String> {
    let b = &k.body;
    let d = b.op(op);
    let ty = |i: usize| d.operands.get(i).map(|&v| b.ty(v)).ok_or_else(|| format!("missing operand {i}"));
    let Type::Tensor { rank, dtype, mutable } = ty(0)? else { return Err("the first operand is not a tensor".into()) };
    let (rank, dtype) = (*rank, *dtype);
    if d.operands.len() != rank + 3 {
        return Err(format!("{} operands for a rank-{rank} tensor", d.operands.len()));
    }
    let gather = d.kind == OpKind::Gather;
    let data = if gather { d.results.first().map(|&r| b.ty(r)).ok_or("no result")? } else { ty(rank + 1)? };
    let shape = data.shape().to_vec();
    if data != &Type::tile(dtype, shape.clone()) {
        return Err(format!("{data} does not match the tensor's dtype {dtype}"));
    }
    for i in 1..=rank {
        if ty(i)? != &Type::tile(DType::I32, shape.clone()) {
            return Err(format!("index {} is {}, expected i32 of shape {shape:?}", i - 1, ty(i)?));
        }
    }
    let mask = if gather { rank + 1 } else { rank + 2 };
    if ty(mask)? != &Type::tile(DType::Bool, shape.clone()) {
        return Err(format!("the mask is {}, expected bool of shape {shape:?}", ty(mask)?));
    }
    if gather {
        if ty(rank + 2)? != &Type::scalar(dtype) {
            return Err("the pad is a scalar of the tensor's dtype".into());
        }
        return Ok(());
    }
    if !mutable {
        return Err("writes a read-only tensor".into());
    }
    if !d.results.is_empty() {
        return Err("has results".into());
    }
    if let OpKind::Atomic(a) = d.kind
        && !atomic_dtype_ok(a, dtype)
    {
        return Err(format!("atomic {} on {dtype}", a.name()));
    }
    Ok(())
}

/// The element types each atomic supports (sema reports the others to the user).
pub fn atomic_dtype_ok(op: AtomicOp, d: DType) -> bool {
    let _ = op;
    matches!(d, DType::I32 | DType::U32 | DType::I64 | DType::U64 | DType::F32 | DType::F64)
}
