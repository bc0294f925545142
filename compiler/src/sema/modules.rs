//! Imports: `use std::MODULE::{names}` from the embedded standard library and
//! `use "relative/path.tile"::{names}` from other files, relative to the importing file.
//!
//! Every module (a stdlib module or a file) is parsed once per compilation. Its `fn`s go into
//! the one table that inlining looks names up in, under a key no user can write
//! (`std::math::cdiv`, `#2::helper`); calls inside their bodies are renamed to the keys of what
//! they meant in their own module (its own `fn`s and its imports), so an imported helper keeps
//! calling its own helpers whatever the importer names its own. The importing file sees each
//! imported name as a plain `fn`. Only the `fn`s a module defines can be imported from it (not
//! what it imports itself, nor its kernels). A file that imports, directly or not, a file that
//! is still being loaded is an import cycle; a file that cannot be read is an error at its
//! name in the `use`.
//!
//! What may be imported (the rule, in `resolve` and `read_import`): a relative path, from the
//! importing file's directory, to a `.tile` file that is a regular file of at most
//! [`crate::files::MAX_SOURCE_BYTES`] of UTF-8 text. A file's text is quoted in diagnostics only once it
//! parsed as tile source.

use crate::diag::{Diagnostic, FileId, SourceMap, Span};
use crate::syntax::ast::{self, Block, ExprKind, FuncDecl, IndexArg, Item, StmtKind, UseDecl, UseSource};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The key of an imported name whose import failed (and was reported): calls to it fail
/// silently instead of adding "unknown name" errors.
pub(super) const UNRESOLVED: &str = "\u{0}unresolved";

/// The stand-in `fn` of a name whose import failed (see `UNRESOLVED`).
pub(super) fn unresolved(span: Span) -> FuncDecl {
    FuncDecl {
        doc: None,
        attrs: vec![],
        is_kernel: false,
        name: ast::Ident { name: UNRESOLVED.into(), span },
        consts: vec![],
        params: vec![],
        ret: None,
        body: Block { stmts: vec![], tail: None, span },
        span,
    }
}

/// Nested imports deeper than this are refused (a guard; cycles are caught before).
const MAX_IMPORT_DEPTH: usize = 64;

/// The loader of one compilation's modules.
pub(super) struct Modules<'a> {
    sources: &'a mut SourceMap,
    diags: &'a mut Vec<Diagnostic>,
    /// Every imported `fn`, by its key.
    pub fns: HashMap<String, FuncDecl>,
    /// The location on disk of each file (its directory is the base of its imports).
    paths: HashMap<FileId, PathBuf>,
    /// Loaded modules by key (canonical path, or `std::…`): the `fn`s they define, by name → key.
    /// `None` while a module is being loaded (so meeting it again is a cycle) or if it failed.
    loaded: HashMap<String, Option<Vec<(String, String)>>>,
    /// The files being loaded, outermost (the file being compiled) first: key, display name, and
    /// the `use` that loaded it.
    stack: Vec<(String, String, Option<Span>)>,
}

impl<'a> Modules<'a> {
    pub fn new(sources: &'a mut SourceMap, diags: &'a mut Vec<Diagnostic>, main: FileId, main_path: PathBuf) -> Modules<'a> {
        let mut paths = HashMap::new();
        paths.insert(main, main_path.clone());
        let stack = vec![(canonical(&main_path), sources.name(main).to_string(), None)];
        Modules { sources, diags, fns: HashMap::new(), paths, loaded: HashMap::new(), stack }
    }

    /// Resolves `u`: adds each imported name → key to `into` (or reports why it cannot).
    pub fn import(&mut self, u: &UseDecl, into: &mut HashMap<String, String>) {
        let (exports, module) = match &u.source {
            UseSource::Path(p) => {
                let path = p.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join("::");
                (self.load_std(&path, u.span), format!("`{path}`"))
            }
            UseSource::File(rel, span) => (self.load_file(rel, *span), format!("\"{rel}\"")),
        };
        let Some(exports) = exports else {
            for name in &u.names {
                into.insert(name.name.clone(), UNRESOLVED.into());
            }
            self.fns.entry(UNRESOLVED.into()).or_insert_with(|| unresolved(u.span));
            return;
        };
        for name in &u.names {
            match exports.iter().find(|(n, _)| n == &name.name) {
                Some((_, key)) => {
                    into.insert(name.name.clone(), key.clone());
                }
                None => {
                    into.insert(name.name.clone(), UNRESOLVED.into());
                    self.fns.entry(UNRESOLVED.into()).or_insert_with(|| unresolved(name.span));
                    let avail: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
                    let mut d = Diagnostic::error(format!("`{}` is not in {module}", name.name)).with_label(name.span, "not found");
                    if let Some(s) = super::expr::did_you_mean(&name.name, avail.iter().copied()) {
                        d = d.note(format!("did you mean `{s}`?"));
                    }
                    let list = if avail.is_empty() { "no functions".to_string() } else { avail.join(", ") };
                    self.diags.push(d.note(format!("{module} defines: {list}")));
                }
            }
        }
    }

    fn load_std(&mut self, path: &str, span: Span) -> Option<Vec<(String, String)>> {
        if let Some(done) = self.loaded.get(path) {
            return done.clone();
        }
        let Some((_, text)) = super::STDLIB.iter().find(|(name, _)| *name == path) else {
            let known: Vec<&str> = super::STDLIB.iter().map(|(n, _)| *n).collect();
            let mut d = Diagnostic::error(format!("unknown module `{path}`")).with_label(span, "not found");
            if let Some(s) = super::expr::did_you_mean(path, known.iter().copied()) {
                d = d.note(format!("did you mean `{s}`?"));
            }
            self.diags.push(d.note(format!("modules: {}", known.join(", "))));
            return None;
        };
        let id = self.sources.add(format!("<{path}>"), *text);
        let (file, errs) = crate::syntax::parse_file(id, text);
        if !errs.is_empty() {
            self.diags.extend(errs.into_iter().map(|d| Diagnostic::ice("stdlib", d.message)));
            self.loaded.insert(path.to_string(), None);
            return None;
        }
        self.module(path.to_string(), path, &file)
    }

    fn load_file(&mut self, rel: &str, span: Span) -> Option<Vec<(String, String)>> {
        let importer = span.file;
        // Shown in messages: the importer's name with its last component replaced.
        let shown = Path::new(self.sources.name(importer)).parent().map(|p| p.join(rel)).unwrap_or_else(|| PathBuf::from(rel));
        let shown = shown.display().to_string();
        let disk = match self.paths.get(&importer).map(|p| resolve(p, rel)) {
            Some(Ok(d)) => d,
            Some(Err(why)) => {
                self.diags.push(Diagnostic::error(format!("cannot import \"{rel}\": {why}")).with_label(span, "here"));
                return None;
            }
            None => {
                self.diags.push(Diagnostic::ice("sema", format!("the file that imports \"{rel}\" has no path")));
                return None;
            }
        };
        let key = canonical(&disk);
        if let Some(pos) = self.stack.iter().position(|(k, ..)| *k == key) {
            let mut chain: Vec<&str> = self.stack[pos..].iter().map(|(_, s, _)| s.as_str()).collect();
            chain.push(&shown);
            // Located at the import in the file being compiled that leads into the cycle; the
            // import that closes it is shown too.
            let d = Diagnostic::error(format!("import cycle: {}", chain.join(" → ")));
            let d = match self.stack.get(1).and_then(|e| e.2) {
                Some(outer) => d.with_label(outer, "this import leads into the cycle").with_secondary(span, "this import closes it"),
                None => d.with_label(span, "imports a file that is still being imported"),
            };
            self.diags.push(d.note("files may not import each other, directly or through others; move the shared `fn`s into a third file"));
            return None;
        }
        if let Some(done) = self.loaded.get(&key) {
            return done.clone();
        }
        if self.stack.len() > MAX_IMPORT_DEPTH {
            self.diags.push(Diagnostic::error(format!("imports nest more than {MAX_IMPORT_DEPTH} files deep")).with_label(span, "here"));
            return None;
        }
        let text = match read_import(&disk) {
            Ok(t) => t,
            Err(why) => {
                self.diags.push(
                    Diagnostic::error(format!("cannot import \"{rel}\": {why}"))
                        .with_label(span, format!("looked for {shown}"))
                        .note("a file import is relative to the importing file's directory"),
                );
                self.loaded.insert(key, None);
                return None;
            }
        };
        // The file's text is quoted in diagnostics only once it parsed as tile source: a file
        // that does not parse may be anything (a link to a secret), so its syntax errors are
        // reported at the `use`, by position alone.
        if let Some(d) = crate::syntax::parse_file(FileId(u32::MAX), &text).1.first() {
            let (line, col) = d.span().map(|s| line_col(&text, s.start as usize)).unwrap_or((1, 1));
            self.diags.push(
                Diagnostic::error(format!("cannot import \"{rel}\": it does not parse (a syntax error at line {line}, column {col})"))
                    .with_label(span, format!("imports {shown}"))
                    .note(format!("run `tessera check {shown}` to see the error")),
            );
            self.loaded.insert(key, None);
            return None;
        }
        let id = self.sources.add(shown.clone(), text);
        self.paths.insert(id, disk);
        let (file, _) = crate::syntax::parse_file(id, self.sources.text(id));
        self.stack.push((key.clone(), shown.clone(), Some(span)));
        let r = self.module(key, &format!("#{}", id.0), &file);
        self.stack.pop();
        r
    }

    /// Registers the `fn`s of a parsed module under `prefix::name` and returns them.
    fn module(&mut self, key: String, prefix: &str, file: &ast::File) -> Option<Vec<(String, String)>> {
        self.loaded.insert(key.clone(), None);
        let mut scope: HashMap<String, String> = HashMap::new();
        for item in &file.items {
            if let Item::Use(u) = item {
                self.import(u, &mut scope);
            }
        }
        let mut exports = vec![];
        for item in &file.items {
            if let Item::Func(f) = item
                && !f.is_kernel
            {
                if exports.iter().any(|(n, _): &(String, String)| n == &f.name.name) || scope.contains_key(&f.name.name) {
                    self.diags.push(
                        Diagnostic::error(format!("`{}` is defined twice", f.name.name)).with_label(f.name.span, "second definition"),
                    );
                    continue;
                }
                let k = format!("{prefix}::{}", f.name.name);
                scope.insert(f.name.name.clone(), k.clone());
                exports.push((f.name.name.clone(), k));
            }
        }
        for item in &file.items {
            if let Item::Func(f) = item
                && !f.is_kernel
                && let Some((_, k)) = exports.iter().find(|(n, _)| n == &f.name.name)
            {
                let mut f = f.clone();
                rename_calls(&mut f.body, &scope, prefix);
                self.fns.insert(k.clone(), f);
            }
        }
        self.loaded.insert(key, Some(exports.clone()));
        Some(exports)
    }
}

/// A path's identity for cycle detection: canonical when it exists, as written otherwise.
fn canonical(p: &Path) -> String {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string()
}

/// Where `use "rel"` in the file at `importer` points, or why it may not: an import is a
/// relative path (from the importing file's directory; `..` may leave it) to a `.tile` file.
fn resolve(importer: &Path, rel: &str) -> Result<PathBuf, String> {
    let r = Path::new(rel);
    if r.has_root() {
        return Err("an import path must be relative (to the importing file's directory)".into());
    }
    if r.extension().is_none_or(|e| e != "tile") {
        return Err("only `.tile` files can be imported".into());
    }
    Ok(importer.parent().unwrap_or(Path::new("")).join(r))
}

/// The text of an imported file: a regular file of at most [`crate::files::MAX_SOURCE_BYTES`] of UTF-8 (see
/// `crate::files`). The error completes "cannot import …: ".
fn read_import(disk: &Path) -> Result<String, String> {
    crate::files::read_source_text(disk).map_err(|e| e.to_string())
}

/// 1-based line and column of byte `at` of `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    (before.matches('\n').count() + 1, before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1)
}

/// One file a compilation imports (see [`import_closure`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedFile {
    /// The path as the `use` wrote it.
    pub written: String,
    /// Where it was read (the importing file's directory joined with `written`).
    pub path: PathBuf,
    pub text: String,
}

/// Every file that compiling `text` (the file at `path`) imports, directly or not, each once, in
/// the order a compilation loads them, with its text: what a compile cache must key on besides
/// the source itself. `None` if an import cannot be resolved, read or parsed (the compilation
/// then fails and says why).
pub fn import_closure(text: &str, path: &Path) -> Option<Vec<ImportedFile>> {
    fn walk(text: &str, path: &Path, depth: usize, seen: &mut Vec<String>, out: &mut Vec<ImportedFile>) -> Option<()> {
        let (file, errs) = crate::syntax::parse_file(FileId(u32::MAX), text);
        if !errs.is_empty() || depth > MAX_IMPORT_DEPTH {
            return None;
        }
        for item in &file.items {
            if let Item::Use(UseDecl { source: UseSource::File(rel, _), .. }) = item {
                let disk = resolve(path, rel).ok()?;
                let key = canonical(&disk);
                if seen.contains(&key) {
                    continue;
                }
                seen.push(key);
                let text = read_import(&disk).ok()?;
                out.push(ImportedFile { written: rel.clone(), path: disk.clone(), text: text.clone() });
                walk(&text, &disk, depth + 1, seen, out)?;
            }
        }
        Some(())
    }
    let mut out = vec![];
    walk(text, path, 0, &mut vec![canonical(path)], &mut out)?;
    Some(out)
}

/// Renames the callee of every call in `b` to the key of what it names in its module (`names`).
/// A name the module does not know (and no built-in has) becomes `prefix::name`, which names
/// nothing: a module never sees the importer's `fn`s, and the error says `name` is unknown.
fn rename_calls(b: &mut Block, names: &HashMap<String, String>, prefix: &str) {
    for s in &mut b.stmts {
        match &mut s.kind {
            StmtKind::Let { init: e, .. } | StmtKind::Assign { value: e, .. } | StmtKind::Expr(e) => rename_expr(e, names, prefix),
            StmtKind::For { iter, body, .. } => {
                rename_expr(iter, names, prefix);
                rename_calls(body, names, prefix);
            }
            StmtKind::While { cond, body } => {
                rename_expr(cond, names, prefix);
                rename_calls(body, names, prefix);
            }
            StmtKind::Return | StmtKind::Break | StmtKind::Continue => {}
        }
    }
    if let Some(t) = &mut b.tail {
        rename_expr(t, names, prefix);
    }
}

fn rename_expr(e: &mut ast::Expr, names: &HashMap<String, String>, prefix: &str) {
    match &mut e.kind {
        ExprKind::Call(f, args) => {
            if let Some(k) = names.get(&f.name) {
                f.name = k.clone();
            } else if !super::builtins::BUILTINS.contains(&f.name.as_str()) {
                f.name = format!("{prefix}::{}", f.name);
            }
            args.iter_mut().for_each(|a| rename_expr(a, names, prefix));
        }
        ExprKind::Method(r, _, args) => {
            rename_expr(r, names, prefix);
            args.iter_mut().for_each(|a| rename_expr(a, names, prefix));
        }
        ExprKind::Unary(_, x) | ExprKind::Paren(x) | ExprKind::Cast(x, _) => rename_expr(x, names, prefix),
        ExprKind::Binary(_, a, b) | ExprKind::Range(a, b) => {
            rename_expr(a, names, prefix);
            rename_expr(b, names, prefix);
        }
        ExprKind::Index(b, idx) => {
            rename_expr(b, names, prefix);
            for i in idx {
                match i {
                    IndexArg::Expr(x) => rename_expr(x, names, prefix),
                    IndexArg::Range(a, b, _) => a.iter_mut().chain(b.iter_mut()).for_each(|x| rename_expr(x, names, prefix)),
                    _ => {}
                }
            }
        }
        ExprKind::If(c, t, f) => {
            rename_expr(c, names, prefix);
            rename_calls(t, names, prefix);
            if let Some(f) = f {
                rename_calls(f, names, prefix);
            }
        }
        ExprKind::Tuple(xs) | ExprKind::List(xs) => xs.iter_mut().for_each(|x| rename_expr(x, names, prefix)),
        ExprKind::Int(..)
        | ExprKind::Float(..)
        | ExprKind::Bool(_)
        | ExprKind::Inf
        | ExprKind::Str(_)
        | ExprKind::Wildcard
        | ExprKind::Name(_) => {}
    }
}
