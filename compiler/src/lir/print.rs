//! The thread IR's text form: the tile IR's syntax with a layout on every tile type and the
//! shared-memory ops' offsets as attributes.

use super::{Kernel, OpKind};
use crate::ir::{Block, Numbering, Op};
use crate::tir::print::attr_text;
use std::fmt::Write;

/// Prints a kernel of the thread IR.
pub fn print_kernel(k: &Kernel) -> String {
    let mut out = String::new();
    let mut num = Numbering::default();
    let params: Vec<String> = k
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let v = k.body.block(k.body.entry).args[i];
            format!("{} = {}: {}", num.name(v), p.name, k.body.ty(v))
        })
        .collect();
    let _ = write!(out, "kernel @{}({})\n    threads({}) shared({})", k.name, params.join(", "), k.threads, k.shared_bytes);
    if let Some(n) = k.blocks_per_sm {
        let _ = write!(out, " blocks_per_sm({n})");
    }
    match k.ws {
        Some(ws) => {
            let regs = |r: Option<u32>| r.map_or("-".to_string(), |r| r.to_string());
            let _ =
                write!(out, " producer({} threads, regs {}/{})", super::PRODUCER_THREADS, regs(ws.producer_regs), regs(ws.consumer_regs));
            if ws.pingpong {
                out.push_str(" pingpong");
            }
        }
        None if k.warp_specialize => out.push_str(" warp_specialize"),
        None => {}
    }
    out.push('\n');
    for (i, m) in k.tensor_maps.iter().enumerate() {
        let name = k.params.get(m.param).map_or("?", |p| p.name.as_str());
        let boxes: Vec<String> = m.boxes.iter().map(|b| b.to_string()).collect();
        let _ = writeln!(out, "    tensor_map({i}: {name} box [{}] swizzle {})", boxes.join(", "), m.swizzle);
    }
    out.push_str("{\n");
    block(k, k.body.entry, 1, &mut num, &mut out);
    out.push_str("}\n");
    out
}

fn block(k: &Kernel, b: Block, depth: usize, num: &mut Numbering, out: &mut String) {
    for &op in &k.body.block(b).ops {
        print_op(k, op, depth, num, out);
    }
}

fn print_op(k: &Kernel, op: Op, depth: usize, num: &mut Numbering, out: &mut String) {
    let body = &k.body;
    let d = body.op(op);
    let ind = "  ".repeat(depth);
    out.push_str(&ind);
    if !d.results.is_empty() {
        let rs: Vec<String> = d.results.iter().map(|&r| num.name(r)).collect();
        let _ = write!(out, "{} = ", rs.join(", "));
    }
    out.push_str(&d.kind.mnemonic());
    let attr = match &d.kind {
        OpKind::Tir(t) => attr_text(t),
        OpKind::LocalStore { offset, swizzled } => Some(format!("@{offset}{}", if *swizzled { " swizzled" } else { "" })),
        OpKind::LocalLoad { offset, strides } => {
            Some(format!("@{offset} strides [{}]", strides.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")))
        }
        OpKind::ShuffleConvert { strides, .. } => {
            Some(format!("strides [{}]", strides.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")))
        }
        OpKind::LocalReduce { offset, axis, src_shape, dtype, .. }
        | OpKind::LocalScan { offset, axis, src_shape, dtype, .. }
        | OpKind::LocalScanFn { offset, axis, src_shape, dtype }
        | OpKind::LocalArgReduce { offset, axis, src_shape, dtype, .. } => {
            Some(format!("@{offset} {dtype}[{}] axis {axis}", src_shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")))
        }
        OpKind::LocalDot { a_offset, b_offset, k, dtype } => Some(format!("@{a_offset} @{b_offset} k {k} {dtype}")),
        OpKind::LocalMma { a_offset, b_offset, k, dtype, a_trans, b_trans, wgmma } => Some(format!(
            "@{a_offset}{} @{b_offset}{} k {k} {dtype}{}",
            if *a_trans { " trans" } else { "" },
            if *b_trans { " trans" } else { "" },
            if *wgmma { " wgmma" } else { "" }
        )),
        OpKind::AsyncCopy { offset, swizzled, shape } => Some(format!(
            "@{offset}{} [{}]",
            if *swizzled { " swizzled" } else { "" },
            shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
        )),
        OpKind::AsyncWait { pending } => Some(pending.to_string()),
        OpKind::TmaCopy { offset, shape, map, mbar, producer } => Some(format!(
            "@{offset} [{}] map {map} mbar @{mbar}{}",
            shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "),
            if *producer { " producer" } else { "" }
        )),
        OpKind::TmaStore { offset, shape, map, .. } => {
            Some(format!("@{offset} [{}] map {map}", shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")))
        }
        OpKind::BulkWaitRead { offset, bytes } => Some(format!("@{offset} {bytes} bytes")),
        OpKind::MbarInit { mbar, count } => Some(format!("@{mbar} x{count}")),
        OpKind::TmaArrive { mbar, bytes, producer } => Some(format!("@{mbar} {bytes} bytes{}", if *producer { " producer" } else { "" })),
        OpKind::TmaWait { mbar } | OpKind::MbarWait { mbar } | OpKind::MbarArrive { mbar } => Some(format!("@{mbar}")),
        OpKind::WsInit { full, empty, stages, consumers } => Some(format!("full @{full} empty @{empty} x{stages} consumers {consumers}")),
        OpKind::Coord { axis } => Some(axis.to_string()),
        OpKind::ShuffleReduce { offset, .. } => Some(format!("@{offset}")),
        OpKind::RegMma { b_offset, k, dtype, b_trans, wgmma } => {
            Some(format!("@{b_offset}{} k {k} {dtype}{}", if *b_trans { " trans" } else { "" }, if *wgmma { " wgmma" } else { "" }))
        }
        OpKind::WgmmaWait { pending } => (*pending > 0).then(|| pending.to_string()),
        OpKind::Reshape
        | OpKind::Barrier
        | OpKind::AsyncCommit
        | OpKind::RowReduce { .. }
        | OpKind::RowBroadcast
        | OpKind::WsSplit
        | OpKind::Turn(_) => None,
    };
    let mut parts: Vec<String> = attr.into_iter().collect();
    parts.extend(d.operands.iter().map(|&v| num.name(v)));
    if !parts.is_empty() {
        let _ = write!(out, " {}", parts.join(", "));
    }
    if !d.results.is_empty() {
        let ts: Vec<String> = d.results.iter().map(|&r| body.ty(r).to_string()).collect();
        let _ = write!(out, " : {}", ts.join(", "));
    }
    for &r in &d.regions {
        let args: Vec<String> = body.block(r).args.iter().map(|&a| format!("{}: {}", num.name(a), body.ty(a))).collect();
        let _ = write!(out, " {{\n{ind}^({}):\n", args.join(", "));
        block(k, r, depth + 1, num, out);
        let _ = write!(out, "{ind}}}");
    }
    out.push('\n');
}
