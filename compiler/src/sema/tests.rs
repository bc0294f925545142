//! Regression tests of sema's limits and checks: the build's overrides (`Options::warps`,
//! `stages`, `consts`, and a tile-IR kernel's own warps reaching the lowering), files without
//! kernels, the inlining and launch-expression budgets, and constant folding against the
//! interpreter's run-time arithmetic.

use crate::interp::{Arg, run_kernel};
use crate::tir::ConstValue;
use crate::{DType, HostTensor, Options, Scalar, Source};

const K: &str = "kernel k<const BM: i32 = 64>(x: &mut f32[N]) {\n    x.store([0], x.load([0], [BM]) + 1.0);\n}\n";

/// The rendered errors of compiling `text` with `opts` (empty when it compiles).
fn errors(text: &str, opts: &Options) -> String {
    match crate::compile(&Source::new("t.tile", text), opts) {
        Ok(_) => String::new(),
        Err(d) => d.render(),
    }
}

#[test]
fn warps_and_stages_overrides_follow_the_attribute_rules() {
    for (warps, ok) in [(0, false), (1, true), (3, false), (16, true), (32, true), (64, false), (u32::MAX, false)] {
        let e = errors(K, &Options { warps: Some(warps), ..Options::default() });
        assert_eq!(e.is_empty(), ok, "--warps {warps}: {e}");
        if !ok {
            assert!(e.contains(&format!("`--warps {warps}`: warps must be a power of two from 1 to 32")), "{e}");
        }
    }
    for (stages, ok) in [(0, false), (1, true), (16, true), (17, false), (u32::MAX, false)] {
        let e = errors(K, &Options { stages: Some(stages), ..Options::default() });
        assert_eq!(e.is_empty(), ok, "--stages {stages}: {e}");
        if !ok {
            assert!(e.contains(&format!("`--stages {stages}`: stages must be from 1 to 16")), "{e}");
        }
    }
    for (n, ok) in [(0, false), (1, true), (16, true), (17, false), (33, false)] {
        // 4 warps: 16 blocks are 2048 threads, 17 too many; 33 is out of range at any size.
        let e = errors(K, &Options { blocks_per_sm: Some(n), ..Options::default() });
        assert_eq!(e.is_empty(), ok, "--blocks-per-sm {n}: {e}");
        if !ok {
            assert!(e.contains(&format!("`--blocks-per-sm {n}`")), "{e}");
        }
    }
    // The attributes themselves, by the same rules.
    for (attr, want) in [("#[warps(0)]", "`#[warps(0)]`: warps must be"), ("#[stages(17)]", "`#[stages(17)]`: stages must be")] {
        let e = errors(&format!("{attr}\n{K}"), &Options::default());
        assert!(e.contains(want), "{attr}: {e}");
    }
}

#[test]
fn a_tile_ir_kernel_with_bad_warps_is_refused_not_lowered() {
    for (w, s) in [(0, 3), (3, 3), (64, 3), (4, 0), (4, 4096)] {
        let text = format!("kernel @k() grid(1) warps({w}) stages({s}) {{\n}}\n");
        let k = crate::tir::parse_kernel(&text).unwrap_or_else(|e| panic!("{e}"));
        assert!(crate::tir::verify_kernel(&k).is_err(), "{text}");
        let e = crate::lower::lower_kernel(&k, &Options::default()).map(|_| ()).unwrap_err();
        assert!(e.message.contains("must be"), "{text}: {}", e.message);
    }
}

#[test]
fn const_overrides_are_checked() {
    let with = |consts: &[(&str, ConstValue)]| {
        let consts = consts.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        errors(K, &Options { consts, ..Options::default() })
    };
    assert_eq!(with(&[("BM", ConstValue::Int(128))]), "");
    let e = with(&[("BM", ConstValue::Int(64)), ("BM", ConstValue::Int(128))]);
    assert!(e.contains("`--const BM` is given twice (64 and 128)"), "{e}");
    let e = with(&[("BN", ConstValue::Int(64))]);
    assert!(e.contains("no kernel here has a const parameter `BN`") && e.contains("did you mean `BM`?"), "{e}");
    assert!(e.contains("const parameters of kernel `k`: BM"), "{e}");
    let e = with(&[("BM", ConstValue::Int(1 << 32))]);
    assert!(e.contains("`--const BM=4294967296`: 4294967296 does not fit in i32"), "{e}");
    let e = with(&[("BM", ConstValue::Bool(true))]);
    assert!(e.contains("const `BM` is `i32`, not a bool"), "{e}");
    // With several kernels, a const of any one of them is known; one of none is an error.
    let two = format!("{K}kernel j<const BN: i32 = 4>(y: &mut f32[N]) {{\n    y.store([0], y.load([0], [BN]));\n}}\n");
    let opts = |n: &str| Options { consts: vec![(n.into(), ConstValue::Int(8))], ..Options::default() };
    assert_eq!(errors(&two, &opts("BN")), "");
    let e = errors(&two, &opts("BK"));
    assert!(e.contains("const parameters of kernel `k`: BM") && e.contains("const parameters of kernel `j`: BN"), "{e}");
    // `--kernel k` compiles only `k`: a const of `j` is unknown to it.
    let e = errors(&two, &Options { kernel: Some("k".into()), ..opts("BN") });
    assert!(e.contains("no kernel here has a const parameter `BN`"), "{e}");
    // Defaults must fit too, and `i64` consts hold i64 values.
    let e = errors("kernel k<const BM: i32 = 3000000000>(x: &mut f32[N]) {}\n", &Options::default());
    assert!(e.contains("the default of const `BM`: 3000000000 does not fit in i32"), "{e}");
    let big = "kernel k<const BIG: i64 = 3000000000>(x: &mut i64[N]) {\n    x.store([0], full([1], BIG + x[0]));\n}\n";
    assert_eq!(errors(big, &Options::default()), "");
}

#[test]
fn a_file_without_kernels_is_an_error() {
    for text in ["", "// nothing\n", "fn f(x) { x + 1 }\n", "use std::math::cdiv;\n"] {
        let e = errors(text, &Options::default());
        assert!(e.contains("no kernels in `t.tile`"), "{text:?}: {e}");
        let e = crate::frontend(&Source::new("t.tile", text), &Options::default()).map(|_| ()).unwrap_err().render();
        assert!(e.contains("no kernels in `t.tile`"), "{text:?}: {e}");
    }
}

#[test]
fn tile_shapes_never_wrap() {
    for (body, want) in [
        ("let a = full([4294967296, 4294967296], 1.0);", "more elements than can be counted"),
        ("let a = full([65536, 65536], 1.0);", "has 4294967296 elements"),
        // Each operand is small; the broadcast is not.
        ("let a = full([1024, 1], 1.0) + full([1, 1024], 1.0);", "has 1048576 elements"),
        ("let a = full([1024, 1, 1], 1.0) + full([1, 1024, 1024], 1.0);", "has 1073741824 elements"),
        ("let a = arange(4294967296);", "has 4294967296 elements"),
    ] {
        let e = errors(&format!("kernel k(x: &mut f32[N, M]) {{\n    {body}\n}}\n"), &Options::default());
        assert!(e.contains(want) || e.contains("too large"), "{body}: {e}");
    }
    for (dim, ok) in [("2147483647", true), ("2147483648", false), ("9223372036854775807", false), ("-1", false)] {
        let e = errors(&format!("kernel k(x: &mut f32[{dim}]) {{}}\n"), &Options::default());
        assert_eq!(e.is_empty(), ok, "{dim}: {e}");
        if !ok {
            assert!(e.contains("out of range") || e.contains("is a literal"), "{dim}: {e}");
        }
    }
    let e = errors("kernel k<const D: i32 = 65536>(x: &mut f32[D * D]) {}\n", &Options::default());
    assert!(e.contains("overflows i32"), "{e}");
}

/// `f{n}` calls `f{n-1}` twice: 2^n copies of `f0` when inlined.
fn doubling(n: usize) -> String {
    let mut s = String::from("fn f0(x) { x * 2.0 + 1.0 }\n");
    for i in 1..=n {
        s += &format!("fn f{i}(x) {{ f{}(x) + f{}(x) }}\n", i - 1, i - 1);
    }
    s + &format!("kernel k(x: &mut f32[N]) {{\n    x.store([0], f{n}(x.load([0], [16])));\n}}\n")
}

#[test]
fn inlining_is_budgeted() {
    assert_eq!(errors(&doubling(8), &Options::default()), "");
    let e = errors(&doubling(30), &Options::default());
    assert!(e.contains(&format!("more than {} operations", super::MAX_KERNEL_OPS)), "{e}");
    assert!(e.contains("call chain: f30 → f29 → f28"), "{e}");
    assert!(e.contains("t.tile:33:18"), "located at the kernel's call: {e}");
    assert_eq!(e.matches("error:").count(), 1, "{e}");
    // Launch-time expressions inline `fn`s too.
    let mut host = String::from("fn g0(n) { n + 1 }\n");
    for i in 1..=14 {
        host += &format!("fn g{i}(n) {{ g{}(n) + g{}(n) }}\n", i - 1, i - 1);
    }
    let e = errors(&format!("{host}#[grid(g14(N))]\nkernel k(x: &mut f32[N]) {{}}\n"), &Options::default());
    assert!(e.contains("this launch-time expression has more than 4096 operations"), "{e}");
    let deep: String = (0..60).map(|i| format!(" + {i}")).collect();
    let e = errors(&format!("#[grid(N{deep})]\nkernel k(x: &mut f32[N]) {{}}\n"), &Options::default());
    assert!(e.contains("nests more than 48 operations deep"), "{e}");
}

/// Runs kernel `k` of `text` on the interpreter with `args` and returns its first tensor argument.
fn run(text: &str, mut args: Vec<Arg>) -> Result<HostTensor, String> {
    let ks = crate::frontend(&Source::new("t.tile", text), &Options { verify: true, ..Options::default() }).map_err(|d| d.render())?;
    run_kernel(&ks[0], &mut args).map_err(|e| e.to_string())?;
    args.into_iter()
        .find_map(|a| match a {
            Arg::Tensor(t) => Some(t),
            Arg::Scalar(_) => None,
        })
        .ok_or_else(|| "no tensor".into())
}

/// The brief's cases: each constant expression either agrees with the same expression computed
/// at run time from scalar parameters, or is a compile-time error.
#[test]
fn folded_constants_agree_with_the_run_time() {
    // (constant expression, its result type, run-time expression over `a` and `b`, a, b)
    let cases: &[(&str, &str, &str, i64, i64)] = &[
        ("(2147483647 + 1) as f32", "f32", "(a + b) as f32", i32::MAX as i64, 1),
        ("(2147483647 + 1) / 2", "i32", "(a + b) / 2", i32::MAX as i64, 1),
        ("65536 * 65536", "i32", "a * b", 65536, 65536),
        ("1 << 40", "i32", "a << b", 1, 40),
        ("-2147483648 / -1", "i32", "a / b", i32::MIN as i64, -1),
        ("-(-2147483648)", "i32", "-a", i32::MIN as i64, 0),
        ("2147483648", "i32", "a", 1 << 31, 0),
        ("5 >> 33", "i32", "a >> b", 5, 33),
        ("7 / 0", "i32", "a / b", 7, 0),
        ("100i8 + 100i8", "i8", "a + b", 100, 100),
        ("(0 - 1) / 2", "u32", "(a - b) / 2", 0, 1),
        ("-2147483648", "i32", "a", i32::MIN as i64, 0),
        ("(65536 * 65536) / 3", "i64", "(a * b) / 3", 65536, 65536),
        ("-7 / 2", "i32", "a / b", -7, 2),
        ("-7 % 2", "i32", "a % b", -7, 2),
        ("(3 as f32) / 2.0", "f32", "(a as f32) / 2.0", 3, 0),
    ];
    for &(folded, ty, runtime, a, b) in cases {
        let src = format!("kernel k(o: &mut {ty}[1]) {{\n    let r: {ty} = {folded};\n    o.store([0], full([1], r));\n}}\n");
        let operand = if ty == "f32" { "i32" } else { ty };
        let rt = format!(
            "kernel k(o: &mut {ty}[1], a: {operand}, b: {operand}) {{\n    let r: {ty} = {runtime};\n    o.store([0], full([1], r));\n}}\n"
        );
        let dtype = DType::parse(ty).unwrap();
        let out = || Arg::Tensor(HostTensor::zeros(dtype, &[1]));
        // Scalar arguments must fit their type: pass the run time's bits (what a literal out of
        // range would wrap to), which the folded side refuses.
        let wrap = |v: i64| crate::interp::value::wrap(DType::parse(operand).unwrap(), v);
        let want = run(&rt, vec![out(), Arg::Scalar(Scalar::Int(wrap(a))), Arg::Scalar(Scalar::Int(wrap(b)))])
            .unwrap_or_else(|e| panic!("{rt}: {e}"));
        match run(&src, vec![out()]) {
            Ok(got) => assert_eq!(got.get_f64(0), want.get_f64(0), "{folded} as {ty}"),
            Err(e) => assert!(
                ["constant expression", "does not fit", "by zero", "shift amount"].iter().any(|w| e.contains(w)),
                "{folded} as {ty}: {e}"
            ),
        }
    }
    // The ones that must fold, and to what.
    for (folded, ty, want) in
        [("-2147483648", "i32", i32::MIN as f64), ("(65536 * 65536) / 3", "i64", 1431655765.0), ("-7 % 2", "i32", -1.0)]
    {
        let src = format!("kernel k(o: &mut {ty}[1]) {{\n    let r: {ty} = {folded};\n    o.store([0], full([1], r));\n}}\n");
        let got = run(&src, vec![Arg::Tensor(HostTensor::zeros(DType::parse(ty).unwrap(), &[1]))]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.get_f64(0), want, "{folded}");
    }
    // And the ones that must be errors, with what they say.
    for (folded, ty, msg) in [
        ("(2147483647 + 1) as f32", "f32", "2147483648 does not fit in i32"),
        ("(2147483647 + 1) / 2", "i32", "computes 2147483648, which does not fit in i32"),
        ("65536 * 65536", "i32", "4294967296 does not fit in i32"),
        ("1 << 40", "i32", "1099511627776 does not fit in i32"),
        ("-2147483648 / -1", "i32", "2147483648 does not fit in i32"),
        ("2147483648", "i32", "2147483648 does not fit in i32"),
        ("7 / 0", "i32", "division by zero in a constant expression"),
        ("100i8 + 100i8", "i8", "overflows i8: 100 + 100"),
        ("-(-128i8)", "i8", "overflows i8: -(-128)"),
        ("1i32 << 32", "i32", "shift amount 32 is out of range for i32"),
    ] {
        let src = format!("kernel k(o: &mut {ty}[1]) {{\n    let r: {ty} = {folded};\n    o.store([0], full([1], r));\n}}\n");
        let e = errors(&src, &Options::default());
        assert!(e.contains(msg), "{folded}: {e}");
    }
}

/// A const argument keeps its constness through a typed `fn` parameter as through an untyped one:
/// the `if` on it is decided at compile time, so the tile IR has no `if` and one branch's ops.
#[test]
fn constant_arguments_to_typed_parameters_stay_constant() {
    let text = "fn pick(c: bool, a, b) { if c { a * 2.0 } else { b - 1.0 } }\nfn pick_untyped(c, a, b) { if c { a * 2.0 } else { b - 1.0 } }\nkernel k<const C: bool = true>(x: &mut f32[N]) {\n    let t = x.load([0], [64]);\n    x.store([0], pick(C, t, t) + pick_untyped(!C, t, t));\n}\n";
    let m = crate::compile(&Source::new("t.tile", text), &Options::default()).unwrap_or_else(|d| panic!("{}", d.render()));
    let tir = crate::tir::print_kernel(&m.kernels[0].tir);
    assert!(!tir.contains(" if "), "{tir}");
    assert!(tir.contains("mul") && tir.contains("sub"), "{tir}");
}

/// `SM` in a signature's constant expressions is the target's compute capability times ten, so
/// defaults can differ by architecture; a const named `SM` takes its place; in the body `SM` is
/// no constant.
#[test]
fn sm_names_the_target_in_signatures() {
    let text = "#[warps(if SM >= 90 { 8 } else { 4 })]\n\
                kernel k<const BQ: i32 = (if SM >= 90 { 128 } else { 64 })>(x: &mut f32[N]) {\n    x.store([0], x.load([0], [BQ]) + 1.0);\n}\n";
    for (target, bq, warps) in [(crate::Target::Sm90a, 128, 8), (crate::Target::Sm80, 64, 4)] {
        let opts = Options { target, ..Options::default() };
        let m = crate::compile(&Source::new("t.tile", text), &opts).unwrap_or_else(|e| panic!("{}: {}", target.name(), e.render()));
        let k = &m.kernels[0].tir;
        assert_eq!((k.consts.clone(), k.warps), (vec![("BQ".to_string(), ConstValue::Int(bq))], warps), "{}", target.name());
    }
    let shadowed = "kernel k<const SM: i32 = 70, const BQ: i32 = (if SM >= 90 { 128 } else { 64 })>(x: &mut f32[N]) {\n    x.store([0], x.load([0], [BQ]) + 1.0);\n}\n";
    let m = crate::compile(&Source::new("t.tile", shadowed), &Options::default()).unwrap_or_else(|e| panic!("{}", e.render()));
    assert!(m.kernels[0].tir.consts.contains(&("BQ".to_string(), ConstValue::Int(64))));
    let e = errors("kernel k(x: &mut f32[N]) {\n    x.store([0], x.load([0], [16]) + (SM as f32));\n}\n", &Options::default());
    assert!(e.contains("SM"), "{e}");
}

/// A const default and `#[warps]` may depend on earlier consts through comparisons, casts and
/// `if` (a block with only a value): each build picks its own; a non-constant branch or a cast
/// that does not fold is still refused.
#[test]
fn const_defaults_and_attributes_follow_other_consts() {
    let text = "#[warps(if D > 64 { 8 } else { 4 })]\n#[stages(2 + (D > 64) as i32)]\n\
                kernel k<const D: i32 = 64, const BK: i32 = (if D > 64 { 128 } else { 64 }), const W: i32 = (4 * (1 + (D > 64) as i32))>(x: &mut f32[N]) {\n    x.store([0], x.load([0], [BK]) + 1.0);\n}\n";
    for (d, bk, w, warps, stages) in [(64, 64, 4, 4, 2), (128, 128, 8, 8, 3)] {
        let opts = Options { consts: vec![("D".into(), ConstValue::Int(d))], ..Options::default() };
        let m = crate::compile(&Source::new("t.tile", text), &opts).unwrap_or_else(|e| panic!("D {d}: {}", e.render()));
        let k = &m.kernels[0].tir;
        let got = |n: &str| k.consts.iter().find(|(c, _)| c == n).map(|(_, v)| *v);
        assert_eq!((got("BK"), got("W")), (Some(ConstValue::Int(bk)), Some(ConstValue::Int(w))), "D {d}");
        assert_eq!((k.warps, k.stages), (warps, stages), "D {d}");
    }
    for (default, want) in
        [("(if D > 64 { 128 } else { let a = 1; a })", "must be a constant expression"), ("(if D { 1 } else { 2 })", "constant expression")]
    {
        let e = errors(&format!("kernel k<const D: i32 = 64, const BK: i32 = {default}>(x: &mut f32[N]) {{\n}}\n"), &Options::default());
        assert!(e.contains(want), "{default}: {e}");
    }
}
