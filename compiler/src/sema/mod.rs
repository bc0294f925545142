//! Semantic analysis: name resolution, types and shapes, constant evaluation; AST → tile IR.
//!
//! Each kernel is instantiated once with its `const` values (defaults, overridden by
//! `Options::consts`), so every tile shape is a constant by the time the tile IR exists. `fn`
//! helpers are inlined at every call and checked per instantiation. Compile-time values (literals,
//! `const` parameters, arithmetic on them) are folded here; literals stay "weak" until they meet a
//! typed value, whose dtype they take.
//!
//! Errors are collected, not thrown: a failing statement is reported and skipped, and the names
//! it would have bound become poison so that one mistake gives one message.

mod builtins;
mod debug;
mod expr;
mod host;
mod indexed;
pub(crate) mod modules;
mod scope;
mod shape;

use crate::diag::{Diagnostic, SourceMap, Span};
use crate::syntax::ast::{self, AttrArg, ExprKind, FuncDecl, Item, TypeKind};
use crate::tir::{self, ConstValue, Dim, Param, ParamKind};
use crate::{DType, Options};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The embedded standard library, by module path.
pub const STDLIB: &[(&str, &str)] = &[
    ("std::math", include_str!("../../../stdlib/math.tile")),
    ("std::nn", include_str!("../../../stdlib/nn.tile")),
    ("std::sched", include_str!("../../../stdlib/sched.tile")),
];

/// Checks a parsed file and produces the tile IR of each kernel, specialised on its consts.
/// `origin` is where the file is on disk (its directory is the base of `use "file.tile"`
/// imports); without it, the file's name in `sources` is taken as its path.
pub fn check_file(
    file: &ast::File,
    sources: &mut SourceMap,
    opts: &Options,
    origin: Option<&Path>,
) -> Result<Vec<tir::Kernel>, Vec<Diagnostic>> {
    let mut diags = vec![];
    let mut fns: HashMap<String, FuncDecl> = HashMap::new();
    let mut kernels = vec![];
    let mut imported: Vec<(String, String, Span)> = vec![];
    let mut import_diags = vec![];
    let main = file
        .items
        .first()
        .map(|i| match i {
            Item::Use(u) => u.span.file,
            Item::Func(f) => f.span.file,
        })
        .unwrap_or_default();
    let path = origin.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(sources.name(main)));
    let mut modules = modules::Modules::new(sources, &mut import_diags, main, path);
    for item in &file.items {
        match item {
            Item::Use(u) => {
                let mut names = HashMap::new();
                modules.import(u, &mut names);
                for n in &u.names {
                    if let Some(k) = names.get(&n.name) {
                        imported.push((n.name.clone(), k.clone(), n.span));
                    }
                }
            }
            Item::Func(f) if f.is_kernel => kernels.push(f),
            Item::Func(f) => {
                if fns.contains_key(&f.name.name) {
                    diags.push(
                        Diagnostic::error(format!("`{}` is defined twice", f.name.name)).with_label(f.name.span, "second definition"),
                    );
                }
                fns.insert(f.name.name.clone(), f.clone());
            }
        }
    }
    let library = std::mem::take(&mut modules.fns);
    drop(modules);
    for (name, key, span) in imported {
        if let Some(own) = fns.get(&name) {
            if key == modules::UNRESOLVED {
                // The import failed (reported); the file's own definition stands.
                continue;
            }
            diags.push(
                Diagnostic::error(format!("`{name}` is defined twice"))
                    .with_label(own.name.span, "defined here")
                    .with_secondary(span, "and imported here"),
            );
            continue;
        }
        if let Some(f) = library.get(&key) {
            fns.insert(name, f.clone());
        }
    }
    fns.extend(library);
    diags.splice(0..0, import_diags);
    let mut seen: Vec<&str> = vec![];
    for k in &kernels {
        if seen.contains(&k.name.name.as_str()) {
            diags
                .push(Diagnostic::error(format!("kernel `{}` is defined twice", k.name.name)).with_label(k.name.span, "second definition"));
        }
        seen.push(&k.name.name);
    }
    if let Some(want) = &opts.kernel
        && !kernels.iter().any(|k| &k.name.name == want)
    {
        let names: Vec<&str> = kernels.iter().map(|k| k.name.name.as_str()).collect();
        diags.push(Diagnostic::error(format!("no kernel named `{want}` in this file")).note(format!("kernels here: {}", names.join(", "))));
    }
    let mut out = vec![];
    for k in kernels {
        if opts.kernel.as_ref().is_some_and(|w| w != &k.name.name) {
            continue;
        }
        if let Some(tk) = instantiate(k, &fns, opts, &mut diags) {
            out.push(tk);
        }
    }
    if diags.iter().any(|d| d.severity == crate::diag::Severity::Error) { Err(diags) } else { Ok(out) }
}

/// Evaluates a const parameter's value expression: literals and arithmetic on earlier consts.
fn const_value(e: &ast::Expr, consts: &[(String, ConstValue)]) -> Option<ConstValue> {
    Some(match &e.kind {
        ExprKind::Int(v, _) => ConstValue::Int(*v),
        ExprKind::Bool(b) => ConstValue::Bool(*b),
        ExprKind::Paren(e) => const_value(e, consts)?,
        ExprKind::Name(n) => consts.iter().find(|(c, _)| c == &n.name)?.1,
        ExprKind::Unary(ast::UnOp::Neg, e) => match const_value(e, consts)? {
            ConstValue::Int(v) => ConstValue::Int(v.checked_neg()?),
            ConstValue::Bool(_) => return None,
        },
        ExprKind::Binary(op, a, b) => match (const_value(a, consts)?, const_value(b, consts)?) {
            (ConstValue::Int(a), ConstValue::Int(b)) => ConstValue::Int(match op {
                ast::BinOp::Add => a.checked_add(b)?,
                ast::BinOp::Sub => a.checked_sub(b)?,
                ast::BinOp::Mul => a.checked_mul(b)?,
                ast::BinOp::Div => a.checked_div(b)?,
                ast::BinOp::Rem => a.checked_rem(b)?,
                _ => return None,
            }),
            _ => return None,
        },
        _ => return None,
    })
}

fn attr_int(a: &ast::Attr, diags: &mut Vec<Diagnostic>, consts: &[(String, ConstValue)]) -> Option<u32> {
    match a.args.as_slice() {
        [AttrArg::Expr(e)] => match const_value(e, consts) {
            Some(ConstValue::Int(v)) if v > 0 && v <= 1024 => Some(v as u32),
            _ => {
                diags.push(
                    Diagnostic::error(format!("`#[{}]` takes one positive integer", a.name.name)).with_label(e.span, "expected an integer"),
                );
                None
            }
        },
        _ => {
            diags.push(
                Diagnostic::error(format!("`#[{}]` takes one positive integer", a.name.name)).with_label(a.span, "expected one argument"),
            );
            None
        }
    }
}

/// Builds the tile IR of one kernel, specialised on its const values.
fn instantiate(k: &FuncDecl, fns: &HashMap<String, FuncDecl>, opts: &Options, diags: &mut Vec<Diagnostic>) -> Option<tir::Kernel> {
    let n_errors = diags.len();
    // Const parameters: the build's value, else the default.
    let mut consts: Vec<(String, ConstValue)> = vec![];
    for c in &k.consts {
        let want = match &c.ty.kind {
            TypeKind::Scalar(t) if t.name == "i32" || t.name == "i64" => DType::I32,
            TypeKind::Scalar(t) if t.name == "bool" => DType::Bool,
            _ => {
                diags
                    .push(Diagnostic::error("a `const` parameter must be `i32` or `bool`").with_label(c.ty.span, "unsupported const type"));
                continue;
            }
        };
        let given = opts.consts.iter().find(|(n, _)| n == &c.name.name).map(|(_, v)| *v);
        let value = match (given, &c.default) {
            (Some(v), _) => Some(v),
            (None, Some(d)) => match const_value(d, &consts) {
                Some(v) => Some(v),
                None => {
                    diags.push(Diagnostic::error("a `const` default must be a constant expression").with_label(d.span, "not a constant"));
                    continue;
                }
            },
            (None, None) => None,
        };
        match value {
            Some(v @ ConstValue::Int(_)) if want == DType::I32 => consts.push((c.name.name.clone(), v)),
            Some(v @ ConstValue::Bool(_)) if want == DType::Bool => consts.push((c.name.name.clone(), v)),
            Some(v) => diags.push(
                Diagnostic::error(format!("const `{}` is `{}` but was given `{v}`", c.name.name, want)).with_label(c.span, "declared here"),
            ),
            None => diags.push(
                Diagnostic::error(format!("const parameter `{}` has no value", c.name.name)).with_label(c.name.span, "no default").note(
                    format!(
                        "give it a default (`const {}: i32 = 64`) or a value at build time (`--const {}=64`)",
                        c.name.name, c.name.name
                    ),
                ),
            ),
        }
    }
    // Parameters: tensors with dimension symbols, and scalars.
    let mut params = vec![];
    for p in &k.params {
        let Some(ty) = &p.ty else {
            diags.push(Diagnostic::error(format!("kernel parameter `{}` needs a type", p.name.name)).with_label(p.name.span, "no type"));
            continue;
        };
        let kind = match &ty.kind {
            TypeKind::Scalar(t) => match DType::parse(&t.name) {
                Some(dtype) => ParamKind::Scalar { dtype },
                None => {
                    diags.push(expr::unknown_type(&t.name, t.span));
                    continue;
                }
            },
            TypeKind::Tensor { mutable, elem, dims } => {
                let Some(dtype) = DType::parse(&elem.name) else {
                    diags.push(expr::unknown_type(&elem.name, elem.span));
                    continue;
                };
                let mut ds = vec![];
                for d in dims {
                    match &d.kind {
                        ExprKind::Name(n) if consts.iter().any(|(c, _)| c == &n.name) => match const_value(d, &consts) {
                            Some(ConstValue::Int(v)) => ds.push(Dim::Const(v)),
                            _ => {
                                diags.push(Diagnostic::error("a tensor dimension must be an integer").with_label(d.span, "not an integer"))
                            }
                        },
                        ExprKind::Name(n) => ds.push(Dim::Sym(n.name.clone())),
                        _ => match const_value(d, &consts) {
                            Some(ConstValue::Int(v)) if v >= 0 => ds.push(Dim::Const(v)),
                            _ => diags.push(
                                Diagnostic::error("a tensor dimension is a literal, a const, or a dimension symbol")
                                    .with_label(d.span, "not allowed here"),
                            ),
                        },
                    }
                }
                if ds.is_empty() || ds.len() > 8 {
                    diags.push(Diagnostic::error("a tensor has rank 1 to 8").with_label(ty.span, "bad rank"));
                    continue;
                }
                ParamKind::Tensor { dtype, dims: ds, mutable: *mutable }
            }
            TypeKind::Tile { .. } => {
                diags.push(
                    Diagnostic::error("a kernel parameter is a tensor (`&T[..]`) or a scalar, not a tile")
                        .with_label(ty.span, "tile type")
                        .note("write `&f32[N]` to pass an array"),
                );
                continue;
            }
        };
        if params.iter().any(|q: &Param| q.name == p.name.name) {
            diags.push(Diagnostic::error(format!("parameter `{}` is declared twice", p.name.name)).with_label(p.name.span, "again here"));
        }
        params.push(Param { name: p.name.name.clone(), kind });
    }
    if diags.len() > n_errors {
        return None;
    }
    let mut grid = vec![];
    let mut warps = 4;
    let mut stages = 3;
    let mut tune = tir::TuneSpace::default();
    let mut requires = vec![];
    let hctx = host::HostCtx { consts: &consts, params: &params, fns };
    for a in &k.attrs {
        match a.name.name.as_str() {
            "grid" => {
                if a.args.is_empty() || a.args.len() > 3 {
                    diags.push(Diagnostic::error("`#[grid]` takes 1 to 3 sizes").with_label(a.span, "here"));
                }
                for arg in &a.args {
                    match arg {
                        AttrArg::Expr(e) => match hctx.lower(e, 0) {
                            Ok(h) => grid.push(h),
                            Err(d) if d.message == expr::POISON => {}
                            Err(d) => diags.push(d),
                        },
                        AttrArg::Named(n, _) => {
                            diags.push(Diagnostic::error("`#[grid]` takes expressions, not named values").with_label(n.span, "here"))
                        }
                    }
                }
            }
            "warps" => {
                if let Some(w) = attr_int(a, diags, &consts) {
                    if !w.is_power_of_two() || w > 32 {
                        diags.push(Diagnostic::error("`#[warps]` must be a power of two from 1 to 32").with_label(a.span, "here"));
                    }
                    warps = w;
                }
            }
            "stages" => {
                if let Some(s) = attr_int(a, diags, &consts) {
                    stages = s;
                }
            }
            "require" => {
                for arg in &a.args {
                    match arg {
                        AttrArg::Expr(e) => match hctx.lower(e, 0) {
                            Ok(cond) => requires.push(tir::Require { cond, text: host::render(e) }),
                            Err(d) if d.message == expr::POISON => {}
                            Err(d) => diags.push(d),
                        },
                        AttrArg::Named(n, _) => diags.push(Diagnostic::error("`#[require]` takes conditions").with_label(n.span, "here")),
                    }
                }
            }
            // The autotuner's search space: kept for the tuner, not used by code generation.
            "tune" => tune = tune_space(a, k, diags),
            other => diags.push(
                Diagnostic::error(format!("unknown attribute `#[{other}]`"))
                    .with_label(a.name.span, "unknown")
                    .note("kernel attributes: grid, warps, stages, tune, require"),
            ),
        }
    }
    if grid.is_empty() {
        grid.push(tir::HostExpr::Int(1));
    }
    if let Some(w) = opts.warps {
        warps = w;
    }
    if let Some(s) = opts.stages {
        stages = s;
    }
    let mut body = tir::TirBody::new();
    let entry = body.entry;
    let mut args = vec![];
    for p in &params {
        args.push(body.add_block_arg(entry, p.ty()));
    }
    let mut lw = expr::Lowerer::new(body, fns, diags);
    lw.limits =
        Some(expr::Limits { threads: warps * 32, shared_bytes: crate::lower::max_shared_bytes(opts.target), target: opts.target.name() });
    lw.bind_kernel(&params, &args, &consts);
    lw.lower_block_stmts(&k.body, entry);
    let (body, ok) = lw.finish();
    if !ok {
        return None;
    }
    Some(tir::Kernel { name: k.name.name.clone(), doc: k.doc.clone(), params, consts, grid, warps, stages, requires, tune, body })
}

/// The element type named by `t`, or a diagnostic.
pub(crate) fn dtype_of(t: &ast::Ident) -> Result<DType, Diagnostic> {
    DType::parse(&t.name).ok_or_else(|| expr::unknown_type(&t.name, t.span))
}

/// Reads `#[tune(BM = [64, 128], warps = [4, 8], stages = [3, 4])]`: each name is an `i32` const
/// parameter of the kernel, `warps` or `stages`; each value list holds distinct integers (a single
/// integer is a list of one).
fn tune_space(a: &ast::Attr, k: &FuncDecl, diags: &mut Vec<Diagnostic>) -> tir::TuneSpace {
    let mut space = tir::TuneSpace::default();
    let mut seen: Vec<&str> = vec![];
    for arg in &a.args {
        let AttrArg::Named(name, value) = arg else {
            let span = match arg {
                AttrArg::Expr(e) => e.span,
                AttrArg::Named(n, _) => n.span,
            };
            diags.push(
                Diagnostic::error("`#[tune]` takes named value lists")
                    .with_label(span, "expected `NAME = [v, ...]`")
                    .note("for example `#[tune(BM = [64, 128], warps = [4, 8])]`"),
            );
            continue;
        };
        let n = name.name.as_str();
        if seen.contains(&n) {
            diags.push(Diagnostic::error(format!("`{n}` appears twice in `#[tune]`")).with_label(name.span, "again here"));
            continue;
        }
        seen.push(n);
        let is_int_const =
            k.consts.iter().any(|c| c.name.name == n && matches!(&c.ty.kind, TypeKind::Scalar(t) if t.name == "i32" || t.name == "i64"));
        if n != "warps" && n != "stages" && !is_int_const {
            let consts: Vec<&str> = k.consts.iter().map(|c| c.name.name.as_str()).collect();
            diags.push(
                Diagnostic::error(format!("`#[tune]` names `{n}`, which is not an integer `const` parameter of `{}`", k.name.name))
                    .with_label(name.span, "not a const parameter")
                    .note(format!("tunable: warps, stages{}{}", if consts.is_empty() { "" } else { ", " }, consts.join(", "))),
            );
            continue;
        }
        let items: &[ast::Expr] = match &value.kind {
            ExprKind::List(items) => items,
            _ => std::slice::from_ref(value),
        };
        let mut values = vec![];
        for e in items {
            match const_value(e, &[]) {
                Some(ConstValue::Int(v)) if v > 0 && !values.contains(&v) => values.push(v),
                Some(ConstValue::Int(v)) if v > 0 => {
                    diags.push(Diagnostic::error(format!("`{n}` lists {v} twice in `#[tune]`")).with_label(e.span, "again here"))
                }
                _ => diags.push(
                    Diagnostic::error(format!("`#[tune]` values of `{n}` must be positive integers"))
                        .with_label(e.span, "not a positive integer"),
                ),
            }
        }
        if values.is_empty() {
            diags.push(Diagnostic::error(format!("`{n}` has no values in `#[tune]`")).with_label(value.span, "empty"));
            continue;
        }
        let small = |what: &str, ok: fn(i64) -> bool, diags: &mut Vec<Diagnostic>| -> Vec<u32> {
            let bad = values.iter().find(|&&v| !ok(v));
            if let Some(v) = bad {
                diags.push(Diagnostic::error(format!("`#[tune]` {what}: {v} is out of range")).with_label(value.span, "here"));
                return vec![];
            }
            values.iter().map(|&v| v as u32).collect()
        };
        match n {
            "warps" => space.warps = small("warps must be powers of two from 1 to 32", |v| v <= 32 && (v as u64).is_power_of_two(), diags),
            "stages" => space.stages = small("stages must be from 1 to 16", |v| v <= 16, diags),
            _ => space.consts.push((n.to_string(), values)),
        }
    }
    space
}

#[cfg(test)]
mod tune_tests {
    use crate::{Options, Source, TuneSpace};

    fn space(attr: &str) -> Result<TuneSpace, String> {
        let text =
            format!("{attr}\nkernel k<const BM: i32 = 64, const FLAG: bool = true>(x: &f32[N]) {{\n    let a = x.load([0], [BM]);\n}}\n");
        match crate::frontend(&Source::new("t.tile", text), &Options::default()) {
            Ok(ks) => Ok(ks[0].tune.clone()),
            Err(d) => Err(d.render()),
        }
    }

    #[test]
    fn the_tune_attribute_is_kept() {
        let s = space("#[tune(BM = [32, 64, 128], warps = [4, 8], stages = 2)]").expect("valid");
        assert_eq!(s.consts, vec![("BM".to_string(), vec![32, 64, 128])]);
        assert_eq!((s.warps.as_slice(), s.stages.as_slice()), (&[4, 8][..], &[2][..]));
        assert_eq!(s.len(), 6);
        assert!(space("").expect("valid").is_empty());
    }

    #[test]
    fn bad_tune_attributes_are_errors() {
        for (attr, want) in [
            ("#[tune(BN = [64])]", "not an integer `const` parameter of `k`"),
            ("#[tune(FLAG = [1])]", "not an integer `const` parameter"),
            ("#[tune(BM = [64, 0])]", "must be positive integers"),
            ("#[tune(BM = [64, 64])]", "lists 64 twice"),
            ("#[tune(BM = [64], BM = [32])]", "appears twice"),
            ("#[tune(warps = [3])]", "powers of two from 1 to 32"),
            ("#[tune(BM = [])]", "has no values"),
            ("#[tune(64)]", "takes named value lists"),
        ] {
            let e = space(attr).expect_err(attr);
            assert!(e.contains(want), "{attr}: {e}");
        }
    }
}
