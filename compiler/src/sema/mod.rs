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
pub use expr::MAX_KERNEL_OPS;
mod host;
mod indexed;
mod konst;
pub mod loop_exits;
pub(crate) mod modules;
mod scope;
mod shape;

use crate::diag::{Diagnostic, SourceMap, Span};
use crate::syntax::ast::{self, AttrArg, ExprKind, FuncDecl, Item, TypeKind};
use crate::tir::{self, ConstValue, Dim, Param, ParamKind};
use crate::{DType, Options};
use konst::{KTy, Konst};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The embedded standard library, by module path.
pub const STDLIB: &[(&str, &str)] = &[
    ("std::math", include_str!("../../../stdlib/math.tile")),
    ("std::nn", include_str!("../../../stdlib/nn.tile")),
    ("std::graph", include_str!("../../../stdlib/graph.tile")),
    ("std::sched", include_str!("../../../stdlib/sched.tile")),
    ("std::random", include_str!("../../../stdlib/random.tile")),
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
    check_overrides(opts, &mut diags);
    if !diags.is_empty() {
        return Err(diags);
    }
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
    let file_name = sources.name(main).to_string();
    let path = origin.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(&file_name));
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
    if kernels.is_empty() {
        // Nothing to build or run: say so rather than succeed with no output.
        diags.push(Diagnostic::error(format!("no kernels in `{file_name}`")).note(
            "a file to build, run or check defines at least one `kernel`; a file of `fn`s is imported with `use \"file.tile\"::{…}`",
        ));
    }
    // A set, not a list: a file may hold many kernels (the check stays linear).
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::with_capacity(kernels.len());
    for k in &kernels {
        if !seen.insert(&k.name.name) {
            diags
                .push(Diagnostic::error(format!("kernel `{}` is defined twice", k.name.name)).with_label(k.name.span, "second definition"));
        }
    }
    if let Some(want) = &opts.kernel
        && !kernels.iter().any(|k| &k.name.name == want)
    {
        let names: Vec<&str> = kernels.iter().map(|k| k.name.name.as_str()).collect();
        diags.push(Diagnostic::error(format!("no kernel named `{want}` in this file")).note(format!("kernels here: {}", names.join(", "))));
    }
    let selected: Vec<&FuncDecl> = kernels.iter().copied().filter(|k| opts.kernel.as_ref().is_none_or(|w| w == &k.name.name)).collect();
    check_const_overrides(opts, &selected, &mut diags);
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

/// The const parameters bound so far: their values (the kernel's `consts`) and declared types.
#[derive(Default)]
struct ConstEnv {
    values: Vec<(String, ConstValue)>,
    types: Vec<DType>,
    /// The target's `SM` (`Target::sm`), for a name no const declares.
    sm: i64,
}

/// Evaluates a constant expression of a kernel's signature (a const default, a tensor dimension,
/// an attribute argument): literals, earlier consts, negation, arithmetic, comparisons, casts and
/// `if c { a } else { b }` of constants, folded by the rules of `konst` (so an overflow is the
/// error it is in the body). `Ok(None)`: not such an expression; an error: the message for an
/// overflow or a literal out of range.
fn const_value(e: &ast::Expr, env: &ConstEnv) -> Result<Option<(Konst, KTy)>, String> {
    let literal = |v: i64, suffix: &Option<String>| match suffix.as_deref().map(DType::parse) {
        None => Ok(Some((Konst::Int(v), KTy::Weak(konst::Need::of(v))))),
        Some(Some(d)) if konst::fits(v.into(), d) => Ok(Some((Konst::Int(v), KTy::Of(d)))),
        Some(Some(d)) => Err(format!("literal {v} does not fit in {d} ({})", konst::int_range(d))),
        Some(None) => Ok(None),
    };
    Ok(match &e.kind {
        ExprKind::Int(v, suffix) => literal(*v, suffix)?,
        ExprKind::Bool(b) => Some((Konst::Bool(*b), KTy::Of(DType::Bool))),
        ExprKind::Paren(e) => const_value(e, env)?,
        ExprKind::Name(n) => match env.values.iter().position(|(c, _)| c == &n.name) {
            Some(i) => Some(match env.values[i].1 {
                ConstValue::Int(v) => (Konst::Int(v), KTy::Of(env.types[i])),
                ConstValue::Bool(b) => (Konst::Bool(b), KTy::Of(DType::Bool)),
            }),
            // The target, for defaults that differ by architecture (a const declares over it).
            None if n.name == "SM" => Some((Konst::Int(env.sm), KTy::Of(DType::I32))),
            None => None,
        },
        ExprKind::Unary(ast::UnOp::Neg, x) => match &x.kind {
            ExprKind::Int(v, suffix) => literal(-*v, suffix)?,
            _ => match const_value(x, env)? {
                Some((k, t)) => konst::neg(k, t)?,
                None => None,
            },
        },
        ExprKind::Binary(op, a, b) => match (const_value(a, env)?, const_value(b, env)?) {
            (Some(a), Some(b)) => konst::binary(*op, a, b)?,
            _ => None,
        },
        // `(D > 64) as i32`: folded only where exact, as in the body.
        ExprKind::Cast(x, ty) => match (&ty.kind, const_value(x, env)?) {
            (TypeKind::Scalar(t), Some((k, kt))) => match DType::parse(&t.name) {
                Some(d) => konst::cast(k, kt, d)?,
                None => None,
            },
            _ => None,
        },
        // `if D > 64 { 128 } else { 64 }`: a constant condition picks a branch that is one
        // constant expression (a default that depends on another const, as Triton's heuristics).
        ExprKind::If(c, then, Some(other)) => match const_value(c, env)? {
            Some((Konst::Bool(b), _)) => {
                let branch = if b { then } else { other };
                match (&branch.stmts[..], &branch.tail) {
                    ([], Some(tail)) => const_value(tail, env)?,
                    _ => None,
                }
            }
            _ => None,
        },
        _ => None,
    })
}

/// A constant integer of the signature, exact (an untyped one is checked where it is used).
fn const_int(e: &ast::Expr, env: &ConstEnv) -> Result<Option<i64>, Diagnostic> {
    match const_value(e, env) {
        Ok(Some((Konst::Int(v), KTy::Weak(_)))) => Ok(Some(v)),
        Ok(Some((Konst::Int(v), KTy::Of(d)))) if d != DType::U64 || v >= 0 => Ok(Some(v)),
        Ok(_) => Ok(None),
        Err(m) => Err(Diagnostic::error(m).with_label(e.span, "in this constant expression")),
    }
}

/// The value of `#[warps(n)]` or `#[stages(n)]`, checked by `rule` (the one the overrides use).
fn attr_int(a: &ast::Attr, diags: &mut Vec<Diagnostic>, env: &ConstEnv, rule: fn(i64) -> Result<u32, String>) -> Option<u32> {
    let name = &a.name.name;
    let [AttrArg::Expr(e)] = a.args.as_slice() else {
        diags.push(Diagnostic::error(format!("`#[{name}]` takes one positive integer")).with_label(a.span, "expected one argument"));
        return None;
    };
    let v = match const_int(e, env) {
        Ok(Some(v)) => v,
        Ok(None) => {
            diags.push(Diagnostic::error(format!("`#[{name}]` takes one positive integer")).with_label(e.span, "expected an integer"));
            return None;
        }
        Err(d) => {
            diags.push(d);
            return None;
        }
    };
    match rule(v) {
        Ok(n) => Some(n),
        Err(why) => {
            diags.push(Diagnostic::error(format!("`#[{name}({v})]`: {why}")).with_label(e.span, "out of range"));
            None
        }
    }
}

/// Checks the build's const values (`--const NAME=VALUE`, `Options::consts`): each name given
/// once, and a const parameter of at least one of the kernels compiled (a typo would otherwise
/// build with the default). Their types are checked per kernel (`const_given`).
fn check_const_overrides(opts: &Options, kernels: &[&FuncDecl], diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, ConstValue> = HashMap::new();
    for (name, v) in &opts.consts {
        if let Some(first) = seen.insert(name, *v) {
            diags.push(Diagnostic::error(format!("`--const {name}` is given twice ({first} and {v})")).note("give each const once"));
            continue;
        }
        if kernels.is_empty() || kernels.iter().any(|k| k.consts.iter().any(|c| &c.name.name == name)) {
            continue;
        }
        let mut d = Diagnostic::error(format!("`--const {name}={v}`: no kernel here has a const parameter `{name}`"));
        let all: Vec<&str> = kernels.iter().flat_map(|k| k.consts.iter().map(|c| c.name.name.as_str())).collect();
        if let Some(s) = expr::did_you_mean(name, all.iter().copied()) {
            d = d.note(format!("did you mean `{s}`?"));
        }
        // A file may hold many kernels: name a few.
        const SHOWN: usize = 8;
        for k in kernels.iter().take(SHOWN) {
            let cs: Vec<&str> = k.consts.iter().map(|c| c.name.name.as_str()).collect();
            d = d.note(if cs.is_empty() {
                format!("kernel `{}` has no const parameters", k.name.name)
            } else {
                format!("const parameters of kernel `{}`: {}", k.name.name, cs.join(", "))
            });
        }
        if kernels.len() > SHOWN {
            d = d.note(format!("and {} more kernels", kernels.len() - SHOWN));
        }
        diags.push(d);
    }
}

/// Checks the build's overrides of `#[warps]`, `#[stages]` and `#[blocks_per_sm]` by the
/// attributes' rules (the last one's threads per multiprocessor once the warps are known); the
/// error names the flag that sets them (`Options::warps`, `Options::stages`,
/// `Options::blocks_per_sm`).
fn check_overrides(opts: &Options, diags: &mut Vec<Diagnostic>) {
    let overrides = [
        ("--warps", opts.warps, tir::check_warps as fn(i64) -> Result<u32, String>),
        ("--stages", opts.stages, tir::check_stages),
        ("--blocks-per-sm", opts.blocks_per_sm, |v| tir::check_blocks_per_sm(v, 1)),
    ];
    for (flag, value, rule) in overrides {
        if let Some(v) = value
            && let Err(why) = rule(v.into())
        {
            diags.push(Diagnostic::error(format!("`{flag} {v}`: {why}")));
        }
    }
}

/// A const parameter's value given by the build (`--const NAME=VALUE`), checked against its type.
fn const_given(c: &ast::ConstParam, v: ConstValue, want: DType) -> Result<ConstValue, Diagnostic> {
    let name = &c.name.name;
    match v {
        ConstValue::Int(i) if want.is_int() && !konst::fits(i.into(), want) => {
            Err(Diagnostic::error(format!("`--const {name}={i}`: {i} does not fit in {want}"))
                .with_label(c.span, format!("declared `{want}`"))
                .note(format!("{want} holds {}", konst::int_range(want))))
        }
        ConstValue::Int(_) if want.is_int() => Ok(v),
        ConstValue::Bool(_) if want == DType::Bool => Ok(v),
        v => Err(Diagnostic::error(format!(
            "`--const {name}={v}`: const `{name}` is `{want}`, not {}",
            if want == DType::Bool { "an integer" } else { "a bool" }
        ))
        .with_label(c.span, "declared here")),
    }
}

/// A const parameter's default, evaluated over the consts before it and checked against its type.
fn const_default(c: &ast::ConstParam, d: &ast::Expr, want: DType, env: &ConstEnv) -> Result<ConstValue, Diagnostic> {
    let (k, t) = match const_value(d, env) {
        Ok(Some(v)) => v,
        Ok(None) => return Err(Diagnostic::error("a `const` default must be a constant expression").with_label(d.span, "not a constant")),
        Err(m) => return Err(Diagnostic::error(m).with_label(d.span, "in this constant expression")),
    };
    let mismatch = || {
        Diagnostic::error(format!("const `{}` is `{want}`, but its default is not", c.name.name))
            .with_label(d.span, format!("not {want}"))
            .with_secondary(c.ty.span, "declared here")
    };
    match (k, t) {
        (Konst::Bool(b), _) if want == DType::Bool => Ok(ConstValue::Bool(b)),
        (Konst::Int(v), KTy::Of(dt)) if dt == want => Ok(ConstValue::Int(v)),
        (Konst::Int(v), KTy::Weak(n)) if want.is_int() => konst::settle(v, n, want).map(ConstValue::Int).map_err(|m| {
            Diagnostic::error(format!("the default of const `{}`: {m}", c.name.name)).with_label(d.span, format!("declared `{want}`"))
        }),
        _ => Err(mismatch()),
    }
}

/// Builds the tile IR of one kernel, specialised on its const values.
fn instantiate(k: &FuncDecl, fns: &HashMap<String, FuncDecl>, opts: &Options, diags: &mut Vec<Diagnostic>) -> Option<tir::Kernel> {
    let n_errors = diags.len();
    // Const parameters: the build's value, else the default.
    let mut env = ConstEnv { sm: opts.target.sm(), ..ConstEnv::default() };
    for c in &k.consts {
        let want = match &c.ty.kind {
            TypeKind::Scalar(t) if t.name == "i32" => DType::I32,
            TypeKind::Scalar(t) if t.name == "i64" => DType::I64,
            TypeKind::Scalar(t) if t.name == "bool" => DType::Bool,
            _ => {
                diags.push(
                    Diagnostic::error("a `const` parameter must be `i32`, `i64` or `bool`").with_label(c.ty.span, "unsupported const type"),
                );
                continue;
            }
        };
        let given = opts.consts.iter().find(|(n, _)| n == &c.name.name).map(|(_, v)| *v);
        let value = match (given, &c.default) {
            (Some(v), _) => const_given(c, v, want),
            (None, Some(d)) => const_default(c, d, want, &env),
            (None, None) => Err(Diagnostic::error(format!("const parameter `{}` has no value", c.name.name))
                .with_label(c.name.span, "no default")
                .note(format!(
                    "give it a default (`const {}: i32 = 64`) or a value at build time (`--const {}=64`)",
                    c.name.name, c.name.name
                ))),
        };
        match value {
            Ok(v) => {
                env.values.push((c.name.name.clone(), v));
                env.types.push(want);
            }
            Err(d) => diags.push(d),
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
                let n_errors = diags.len();
                for d in dims {
                    match &d.kind {
                        ExprKind::Name(n) if !env.values.iter().any(|(c, _)| c == &n.name) => ds.push(Dim::Sym(n.name.clone())),
                        _ => match const_int(d, &env) {
                            // Sizes are passed to the kernel as i32 (the parameter ABI).
                            Ok(Some(v)) if (0..=i64::from(i32::MAX)).contains(&v) => ds.push(Dim::Const(v)),
                            Ok(Some(v)) => diags.push(
                                Diagnostic::error(format!("tensor dimension {v} is out of range"))
                                    .with_label(d.span, format!("{v} is not in 0 to {}", i32::MAX))
                                    .note("tensor sizes are passed to the kernel as i32"),
                            ),
                            Ok(None) if matches!(d.kind, ExprKind::Name(_)) => {
                                diags.push(Diagnostic::error("a tensor dimension must be an integer").with_label(d.span, "not an integer"))
                            }
                            Ok(None) => diags.push(
                                Diagnostic::error("a tensor dimension is a literal, a const, or a dimension symbol")
                                    .with_label(d.span, "not allowed here"),
                            ),
                            Err(e) => diags.push(e),
                        },
                    }
                }
                if diags.len() > n_errors {
                    continue;
                }
                if ds.is_empty() || ds.len() > 8 {
                    diags.push(Diagnostic::error("a tensor has rank 1 to 8").with_label(ty.span, "bad rank"));
                    continue;
                }
                ParamKind::Tensor { dtype, dims: ds, mutable: *mutable }
            }
            TypeKind::Tuple(_) => {
                diags.push(
                    Diagnostic::error("a kernel parameter is a tensor (`&T[..]`) or a scalar, not a tuple")
                        .with_label(ty.span, "tuple type"),
                );
                continue;
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
    let mut blocks_per_sm: Option<(u32, Span)> = None;
    let mut warp_specialize = false;
    let mut tune = tir::TuneSpace::default();
    let mut requires = vec![];
    let hctx = host::HostCtx { consts: &env.values, params: &params, fns, nodes: std::cell::Cell::new(0) };
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
                if let Some(w) = attr_int(a, diags, &env, tir::check_warps) {
                    warps = w;
                }
            }
            "stages" => {
                if let Some(s) = attr_int(a, diags, &env, tir::check_stages) {
                    stages = s;
                }
            }
            "blocks_per_sm" => {
                // The range here; whether that many blocks' threads fit once the warps are known.
                if let Some(n) = attr_int(a, diags, &env, |v| tir::check_blocks_per_sm(v, 1)) {
                    blocks_per_sm = Some((n, a.span));
                }
            }
            "warp_specialize" => {
                if a.args.is_empty() {
                    warp_specialize = true;
                } else {
                    diags.push(Diagnostic::error("`#[warp_specialize]` takes no arguments").with_label(a.span, "here"));
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
                    .note("kernel attributes: grid, warps, stages, blocks_per_sm, warp_specialize, tune, require"),
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
    if let Some(w) = opts.warp_specialize {
        warp_specialize = w;
    }
    // The override (its range checked by `check_overrides`) or the attribute, against the
    // warps now known.
    let given = match (opts.blocks_per_sm, blocks_per_sm) {
        (Some(n), _) => Some((n, format!("`--blocks-per-sm {n}` with {warps} warps (kernel `{}`)", k.name.name), None)),
        (None, Some((n, span))) => Some((n, format!("`#[blocks_per_sm({n})]` with {warps} warps"), Some(span))),
        (None, None) => None,
    };
    let blocks_per_sm = match given {
        Some((n, what, span)) => match tir::check_blocks_per_sm(n.into(), warps) {
            Ok(n) => Some(n),
            Err(why) => {
                let d = Diagnostic::error(format!("{what}: {why}"));
                diags.push(match span {
                    Some(s) => d.with_label(s, "too many"),
                    None => d,
                });
                return None;
            }
        },
        None => None,
    };
    let mut body = tir::TirBody::new();
    let entry = body.entry;
    let mut args = vec![];
    for p in &params {
        args.push(body.add_block_arg(entry, p.ty()));
    }
    let mut lw = expr::Lowerer::new(body, fns, diags);
    lw.limits =
        Some(expr::Limits { threads: warps * 32, shared_bytes: crate::lower::max_shared_bytes(opts.target), target: opts.target.name() });
    lw.bind_kernel(&params, &args, &env.values, &env.types);
    lw.lower_block_stmts(&k.body, entry);
    let (body, ok) = lw.finish();
    if !ok {
        return None;
    }
    Some(tir::Kernel {
        name: k.name.name.clone(),
        doc: k.doc.clone(),
        params,
        consts: env.values,
        grid,
        warps,
        stages,
        blocks_per_sm,
        warp_specialize,
        requires,
        tune,
        body,
    })
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
        if n == "warp_specialize" {
            space.warp_specialize = tune_bools(n, value, diags);
            continue;
        }
        let is_int_const =
            k.consts.iter().any(|c| c.name.name == n && matches!(&c.ty.kind, TypeKind::Scalar(t) if t.name == "i32" || t.name == "i64"));
        if n != "warps" && n != "stages" && n != "blocks_per_sm" && !is_int_const {
            let consts: Vec<&str> = k.consts.iter().map(|c| c.name.name.as_str()).collect();
            diags.push(
                Diagnostic::error(format!("`#[tune]` names `{n}`, which is not an integer `const` parameter of `{}`", k.name.name))
                    .with_label(name.span, "not a const parameter")
                    .note(format!(
                        "tunable: warps, stages, blocks_per_sm, warp_specialize{}{}",
                        if consts.is_empty() { "" } else { ", " },
                        consts.join(", ")
                    )),
            );
            continue;
        }
        let items: &[ast::Expr] = match &value.kind {
            ExprKind::List(items) => items,
            _ => std::slice::from_ref(value),
        };
        let mut values = vec![];
        for e in items {
            match const_int(e, &ConstEnv::default()).ok().flatten() {
                Some(v) if v > 0 && !values.contains(&v) => values.push(v),
                Some(v) if v > 0 => {
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
        // Warps and stages follow the attributes' rules (the tuner passes them as overrides).
        let small = |rule: fn(i64) -> Result<u32, String>, diags: &mut Vec<Diagnostic>| -> Vec<u32> {
            match values.iter().map(|&v| rule(v).map_err(|why| (v, why))).collect() {
                Ok(vs) => vs,
                Err((v, why)) => {
                    diags.push(Diagnostic::error(format!("`#[tune]` lists {n} = {v}: {why}")).with_label(value.span, "out of range"));
                    vec![]
                }
            }
        };
        match n {
            "warps" => space.warps = small(tir::check_warps, diags),
            "stages" => space.stages = small(tir::check_stages, diags),
            // The range here; each point's warps are checked when it is built.
            "blocks_per_sm" => space.blocks_per_sm = small(|v| tir::check_blocks_per_sm(v, 1), diags),
            _ => space.consts.push((n.to_string(), values)),
        }
    }
    space
}

/// The values of a boolean `#[tune]` knob (`warp_specialize = [false, true]`): `true`/`false`
/// literals, each once.
fn tune_bools(n: &str, value: &ast::Expr, diags: &mut Vec<Diagnostic>) -> Vec<bool> {
    let items: &[ast::Expr] = match &value.kind {
        ExprKind::List(items) => items,
        _ => std::slice::from_ref(value),
    };
    let mut values = vec![];
    for e in items {
        match &e.kind {
            ExprKind::Bool(b) if !values.contains(b) => values.push(*b),
            ExprKind::Bool(b) => {
                diags.push(Diagnostic::error(format!("`{n}` lists {b} twice in `#[tune]`")).with_label(e.span, "again here"))
            }
            _ => diags.push(Diagnostic::error(format!("`#[tune]` values of `{n}` are `true` or `false`")).with_label(e.span, "not a bool")),
        }
    }
    if values.is_empty() && items.is_empty() {
        diags.push(Diagnostic::error(format!("`{n}` has no values in `#[tune]`")).with_label(value.span, "empty"));
    }
    values
}

#[cfg(test)]
mod tests;

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
        let s = space("#[tune(blocks_per_sm = [1, 2])]").expect("valid");
        assert_eq!((s.blocks_per_sm.as_slice(), s.len()), (&[1, 2][..], 2));
        let s = space("#[tune(warp_specialize = [false, true], warps = [4, 8])]").expect("valid");
        assert_eq!((s.warp_specialize.as_slice(), s.len()), (&[false, true][..], 4));
    }

    #[test]
    fn bad_tune_attributes_are_errors() {
        for (attr, want) in [
            ("#[tune(BN = [64])]", "not an integer `const` parameter of `k`"),
            ("#[tune(FLAG = [1])]", "not an integer `const` parameter"),
            ("#[tune(BM = [64, 0])]", "must be positive integers"),
            ("#[tune(BM = [64, 64])]", "lists 64 twice"),
            ("#[tune(BM = [64], BM = [32])]", "appears twice"),
            ("#[tune(warps = [3])]", "lists warps = 3: warps must be a power of two from 1 to 32"),
            ("#[tune(stages = [17])]", "lists stages = 17: stages must be from 1 to 16"),
            ("#[tune(blocks_per_sm = [33])]", "lists blocks_per_sm = 33: blocks_per_sm must be from 1 to 32"),
            ("#[tune(BM = [])]", "has no values"),
            ("#[tune(warp_specialize = [1])]", "values of `warp_specialize` are `true` or `false`"),
            ("#[tune(warp_specialize = [true, true])]", "lists true twice"),
            ("#[tune(warp_specialize = [])]", "has no values"),
            ("#[tune(64)]", "takes named value lists"),
        ] {
            let e = space(attr).expect_err(attr);
            assert!(e.contains(want), "{attr}: {e}");
        }
    }
}
