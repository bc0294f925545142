//! End-to-end tests of the language's built-ins: source → sema → interpreter (against plain Rust),
//! and source → PTX (every kernel here also goes through lowering and code generation, and its
//! tile IR round-trips through the text form).

use super::{Arg, InterpError, run_kernel, run_kernel_with_output};
use crate::dtype::DType;
use crate::host::{HostTensor, Scalar};
use crate::{Options, Source};

/// Compiles `src` all the way to PTX (verifiers on) and returns the tile IR of kernel `name`.
pub(super) fn compile(src: &str, name: &str) -> crate::tir::Kernel {
    let o = Options { verify: true, checked: true, ..Options::default() };
    let m = crate::compile(&Source::new("test.tile", src), &o).unwrap_or_else(|d| panic!("{}", d.render()));
    let k = m.kernels.into_iter().find(|k| k.meta.name == name).unwrap_or_else(|| panic!("no kernel {name}"));
    if let Ok(dir) = std::env::var("TESSERA_DUMP_PTX") {
        let _ = std::fs::write(format!("{dir}/{name}.ptx"), &k.ptx);
    }
    // Every op here prints to the text form and parses back to the same text.
    let text = crate::tir::print_kernel(&k.tir);
    let again = crate::tir::parse_kernel(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(crate::tir::print_kernel(&again), text);
    crate::tir::verify_kernel(&again).unwrap_or_else(|e| panic!("{e}\n{text}"));
    k.tir
}

pub(super) fn run(k: &crate::tir::Kernel, mut args: Vec<Arg>) -> Vec<Arg> {
    run_kernel(k, &mut args).unwrap_or_else(|e| panic!("{e}"));
    args
}

pub(super) fn t(a: &Arg) -> &HostTensor {
    match a {
        Arg::Tensor(t) => t,
        Arg::Scalar(_) => panic!("a scalar"),
    }
}

pub(super) fn ints(v: &[i64]) -> Arg {
    Arg::Tensor(HostTensor::from_i64(DType::I32, &[v.len()], v))
}

pub(super) fn floats(shape: &[usize], v: &[f64]) -> Arg {
    Arg::Tensor(HostTensor::from_f64(DType::F32, shape, v))
}

pub(super) fn as_i64(a: &Arg) -> Vec<i64> {
    (0..t(a).numel()).map(|i| t(a).get_i64(i)).collect()
}

const SPMM: &str = "
fn cdiv(a, b) { (a + b - 1) / b }
#[grid(R, cdiv(F, BF))]
#[require(R1 == R + 1)]
kernel spmm<const BF: i32 = 64, const BE: i32 = 32>(
    row_ptr: &i32[R1], col_idx: &i32[E], vals: &f32[E],
    x: &f32[N, F], y: &mut f32[R, F], cnt: &mut i32[R],
) {
    let row = program_id(0);
    let f = program_id(1) * BF + arange(BF);
    let (start, end) = (row_ptr[row], row_ptr[row + 1]);
    let mut acc: f32[BF] = 0.0;
    for e0 in (start..end).step_by(BE) {
        let e = e0 + arange(BE);
        let live = e < end;
        let cols = col_idx.gather([e], live, 0);
        let w = vals.gather([e], live, 0.0);
        acc += (x.gather([cols[:, None], f[None, :]], live[:, None], 0.0) * w[:, None]).sum(0);
    }
    y.scatter([row, f], acc, f < F);
    cnt.atomic_add([row], end - start);
    cnt.atomic_add([row], 1);
}
";

#[test]
fn spmm_with_gather_scalar_reads_scatter_and_atomics() {
    let k = compile(SPMM, "spmm");
    // 3 rows, N = 5, F = 3: row 0 has 2 entries, row 1 none, row 2 has 40 (two BE blocks).
    let (n, f) = (5usize, 3usize);
    let mut row_ptr = vec![0i64, 2, 2];
    row_ptr.push(42);
    let cols: Vec<i64> = (0..42).map(|i| (i * 7 + 1) % n as i64).collect();
    let vals: Vec<f64> = (0..42).map(|i| (i % 5) as f64 - 1.5).collect();
    let x: Vec<f64> = (0..n * f).map(|i| i as f64 * 0.25).collect();
    let args =
        vec![ints(&row_ptr), ints(&cols), floats(&[42], &vals), floats(&[n, f], &x), floats(&[3, f], &[0.0; 9]), ints(&[100, 200, 300])];
    let out = run(&k, args);
    for r in 0..3 {
        for j in 0..f {
            let want: f64 = (row_ptr[r]..row_ptr[r + 1]).map(|e| vals[e as usize] * x[cols[e as usize] as usize * f + j]).sum();
            assert!((t(&out[4]).get_f64(r * f + j) - want).abs() < 1e-4, "y[{r}, {j}]");
        }
    }
    assert_eq!(as_i64(&out[5]), [100 + 3, 200 + 1, 300 + 41]);
}

#[test]
fn gather_pads_masked_and_out_of_range_elements() {
    let src = "
#[grid(1)]
kernel g(x: &f32[N, M], i: &i32[8], j: &i32[8], y: &mut f32[8], s: &mut f32[4]) {
    let ii = i.load([0], [8]);
    let jj = j.load([0], [8]);
    y.store([0], x.gather([ii, jj], arange(8) != 3, -1.0));
    // Scalar reads: in range, and out of range (reads 0).
    s.store([0], full([4], x[1, 1] + x[N, 0] + x[0, -1] + x[i[2], j[2]]));
}";
    let k = compile(src, "g");
    let x: Vec<f64> = (0..6).map(|v| v as f64 + 1.0).collect();
    let args = vec![
        floats(&[2, 3], &x),
        ints(&[0, 1, -1, 1, 2, 0, 1, 0]),
        ints(&[0, 2, 0, 1, 0, 3, 1, -5]),
        floats(&[8], &[0.0; 8]),
        floats(&[4], &[0.0; 4]),
    ];
    let out = run(&k, args);
    assert_eq!(t(&out[3]).to_f64_vec(), [1.0, 6.0, -1.0, -1.0, -1.0, -1.0, 5.0, -1.0]);
    // x[1, 1] = 5, x[N, 0] and x[0, -1] are 0, x[i[2], j[2]] = x[-1, 0] = 0.
    assert_eq!(t(&out[4]).to_f64_vec(), [5.0; 4]);
}

#[test]
fn scatter_duplicates_keep_the_last_and_atomics_accumulate() {
    let src = "
#[grid(2)]
kernel s(y: &mut i32[4], z: &mut f32[4], m: &mut i32[4], u: &mut u32[2]) {
    let idx = arange(8) % 4;
    // Program 0 alone scatters (two programs writing `y` would race).
    y.scatter([idx], arange(8), arange(8) + 8 * program_id(0) < 7);
    z.atomic_add([idx / 2], 0.5);
    z.atomic_max([idx / 2 + 2], arange(8) as f32);
    z.atomic_min([idx / 2 + 2], 100.0);
    m.atomic_max([idx], arange(8) * (program_id(0) * 2 - 1));
    m.atomic_min([3 + 0 * idx], -arange(8));
    u.atomic_max([arange(2)], (arange(2) - 1) as u32);
}";
    let k = compile(src, "s");
    let args = vec![ints(&[9; 4]), floats(&[4], &[0.0; 4]), ints(&[0; 4]), Arg::Tensor(HostTensor::zeros(DType::U32, &[2]))];
    let out = run(&k, args);
    assert_eq!(as_i64(&out[0]), [4, 5, 6, 3]);
    assert_eq!(t(&out[1]).to_f64_vec(), [4.0, 4.0, 5.0, 7.0]);
    assert_eq!(as_i64(&out[2]), [4, 5, 6, -7]);
    assert_eq!(as_i64(&out[3]), [u32::MAX as i64, 0]);
}

#[test]
fn views_with_dynamic_indices() {
    let src = "
#[grid(T)]
kernel v(w: &f32[RELS, 2, 4], rel: &i32[T], y: &mut f32[T, 2, 4]) {
    let t = program_id(0);
    y[t].store([0, 0], w[rel[t]].load([0, 0], [2, 4]));
}";
    let k = compile(src, "v");
    let w: Vec<f64> = (0..24).map(|v| v as f64).collect();
    let out = run(&k, vec![floats(&[3, 2, 4], &w), ints(&[2, 0, 7]), floats(&[3, 2, 4], &[1.0; 24])]);
    let y = t(&out[2]).to_f64_vec();
    assert_eq!(&y[..8], &w[16..24]);
    assert_eq!(&y[8..16], &w[..8]);
    assert_eq!(&y[16..], &[0.0; 8], "an out-of-range view loads the pad");
}

#[test]
fn print_writes_the_program_and_each_element() {
    let src = "
#[grid(2)]
kernel p(x: &f32[4]) {
    let v = reshape(x.load([0], [4]), [2, 2]);
    print(\"pid={} {{}}\", program_id(0));
    print(\"v={} big={}\", v, v > 1.5);
}";
    let k = compile(src, "p");
    let mut args = vec![floats(&[4], &[0.5, 1e-7, 2.0, -3e20])];
    let mut out = vec![];
    run_kernel_with_output(&k, &mut args, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let want = "program (0, 0, 0): pid=0 {}
program (0, 0, 0) [0, 0]: v=0.5 big=false
program (0, 0, 0) [0, 1]: v=1e-07 big=false
program (0, 0, 0) [1, 0]: v=2 big=true
program (0, 0, 0) [1, 1]: v=-3e+20 big=false
program (1, 0, 0): pid=1 {}
";
    assert!(text.starts_with(want), "{text}");
}

#[test]
fn assert_failures_name_the_program_and_element() {
    let src = "
#[grid(3)]
kernel a(x: &i32[N]) {
    assert(program_id(0) < 2, \"pid too large\");
    assert(x.load([0], [4]) >= 0, \"negative\");
}";
    let k = compile(src, "a");
    let mut args = vec![ints(&[1, 2, 3, 4])];
    match run_kernel(&k, &mut args) {
        Err(e @ InterpError::Assert { .. }) => assert_eq!(e.to_string(), "program [2, 0, 0]: assertion failed: pid too large"),
        r => panic!("{r:?}"),
    }
    let mut args = vec![ints(&[1, 2, -3, 4])];
    match run_kernel(&k, &mut args) {
        Err(e) => assert_eq!(e.to_string(), "program [0, 0, 0]: assertion failed at element [2]: negative"),
        r => panic!("{r:?}"),
    }
    let _ = Scalar::Int(0);
}

#[test]
fn while_loops_and_return() {
    let src = "
#[grid(4)]
kernel w(n: &i32[4], y: &mut i32[4], z: &mut f32[4, 8]) {
    let p = program_id(0);
    if p == 3 {
        return;
    }
    let mut i = 0;
    let mut acc: f32[8] = 0.0;
    let limit = n[p];
    while i < limit {
        acc += 1.0;
        i += 1;
        if i == 5 {
            y.store([p], full([1], 100 + i));
            return;
        }
    }
    while false {
        i = 1000;
    }
    y.store([p], full([1], i));
    z.store([p, 0], acc);
}";
    let k = compile(src, "w");
    let out = run(&k, vec![ints(&[2, 9, 0, 1]), ints(&[-1; 4]), floats(&[4, 8], &[-1.0; 32])]);
    assert_eq!(as_i64(&out[1]), [2, 105, 0, -1]);
    let z = t(&out[2]).to_f64_vec();
    assert_eq!(&z[..8], &[2.0; 8]);
    assert_eq!(&z[8..16], &[-1.0; 8], "program 1 returned before storing");
    assert_eq!(&z[16..24], &[0.0; 8]);
    assert_eq!(&z[24..], &[-1.0; 8]);
}

#[test]
fn arg_reductions_and_scans() {
    let src = "
#[grid(1)]
kernel s(x: &f32[4, 8], am: &mut i32[4], an: &mut i32[8], cs: &mut f32[4, 8], cm: &mut f32[4, 8], ci: &mut i32[4, 8]) {
    let t = x.load([0, 0], [4, 8]);
    am.store([0], t.argmax(1));
    an.store([0], t.argmin(0));
    cs.store([0, 0], t.cumsum(1));
    cm.store([0, 0], t.cummax(1));
    ci.store([0, 0], (t as i32).cumsum(0));
}";
    let k = compile(src, "s");
    let nan = f64::NAN;
    #[rustfmt::skip]
    let x = [
        1.0, 3.0, 3.0, -2.0, 0.0, 0.5, 2.0, 3.0,
        nan, nan, nan, nan, nan, nan, nan, nan,
        nan, -1.0, nan, 4.0, 4.0, nan, -7.0, 1.0,
        -5.0, -5.0, -6.0, -6.0, 9.0, 2.0, 2.0, 2.0,
    ];
    let z = |n| floats(&[4, 8], &vec![0.0; n]);
    let out =
        run(&k, vec![floats(&[4, 8], &x), ints(&[0; 4]), ints(&[0; 8]), z(32), z(32), Arg::Tensor(HostTensor::zeros(DType::I32, &[4, 8]))]);
    assert_eq!(as_i64(&out[1]), [1, 0, 3, 4]);
    // Column minima, NaNs skipped: [-5, -5, -6, -6, 0, 0.5, -7, 1].
    assert_eq!(as_i64(&out[2]), [3, 3, 3, 3, 0, 0, 2, 2]);
    let cs = t(&out[3]).to_f64_vec();
    assert_eq!(&cs[..8], &[1.0, 4.0, 7.0, 5.0, 5.0, 5.5, 7.5, 10.5]);
    assert!(cs[8..16].iter().all(|v| v.is_nan()));
    let cm = t(&out[4]).to_f64_vec();
    assert_eq!(&cm[..8], &[1.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]);
    assert!(cm[8..16].iter().all(|v| v.is_nan()));
    assert!(cm[16].is_nan());
    assert_eq!(&cm[17..24], &[-1.0, -1.0, 4.0, 4.0, 4.0, 4.0, 4.0]);
    assert_eq!(&cm[24..], &[-5.0, -5.0, -5.0, -5.0, 9.0, 9.0, 9.0, 9.0]);
    // NaN casts to 0.
    let ci = as_i64(&out[5]);
    assert_eq!(&ci[..8], &[1, 3, 3, -2, 0, 0, 2, 3]);
    assert_eq!(&ci[24..], &[-4, -3, -3, -4, 13, 2, -3, 6]);
}

#[test]
fn join_and_split() {
    let src = "
#[grid(1)]
kernel j(x: &i32[8], y: &mut i32[8, 2], a: &mut i32[8], b: &mut i32[8], s: &mut i32[2]) {
    let t = x.load([0], [8]);
    let p = join(t, t * 10);
    y.store([0, 0], p);
    let (u, v) = split(p + 1);
    a.store([0], u);
    b.store([0], v);
    let (c, d) = split(join(5, 7));
    s.store([0], full([1], c * 100 + d));
}";
    let k = compile(src, "j");
    let xs: Vec<i64> = (0..8).collect();
    let out = run(&k, vec![ints(&xs), Arg::Tensor(HostTensor::zeros(DType::I32, &[8, 2])), ints(&[0; 8]), ints(&[0; 8]), ints(&[0; 2])]);
    let y = as_i64(&out[1]);
    assert_eq!(y, (0..16).map(|i| if i % 2 == 0 { i / 2 } else { i / 2 * 10 }).collect::<Vec<_>>());
    assert_eq!(as_i64(&out[2]), (1..9).collect::<Vec<_>>());
    assert_eq!(as_i64(&out[3]), (0..8).map(|i| i * 10 + 1).collect::<Vec<_>>());
    assert_eq!(as_i64(&out[4]), [507, 0]);
}

#[test]
fn file_imports_resolve_relative_to_the_importer_and_keep_their_own_helpers() {
    let dir = std::env::temp_dir().join(format!("tessera-imports-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("lib/inner")).unwrap();
    std::fs::write(
        dir.join("lib/ops.tile"),
        "use \"inner/scale.tile\"::{scale};\nuse std::math::cdiv;\nfn double(x) { scale(x, 2.0) }\nfn blocks(n) { cdiv(n, 4) }\n",
    )
    .unwrap();
    std::fs::write(dir.join("lib/inner/scale.tile"), "fn scale(x, k) { x * k }\n").unwrap();
    // The importer has its own `scale`, which the imported `double` must not call.
    let main = "use \"lib/ops.tile\"::{double, blocks};
fn scale(x, k) { x - k }
#[grid(blocks(N))]
kernel m(y: &mut f32[N]) {
    let i = program_id(0) * 4 + arange(4);
    y.scatter([i], double(scale(3.0, 1.0)) + 0.0 * (i as f32));
}";
    let path = dir.join("main.tile");
    std::fs::write(&path, main).unwrap();
    let o = Options { verify: true, ..Options::default() };
    // Named differently from its path: the path decides where imports are read.
    let m = crate::compile(&Source::new("main (in memory)", main).with_path(&path), &o).unwrap_or_else(|d| panic!("{}", d.render()));
    let out = run(&m.kernels[0].tir, vec![floats(&[6], &[0.0; 6])]);
    assert_eq!(t(&out[0]).to_f64_vec(), [4.0; 6]);
    // Without the path, the name is taken as the path: nothing is found next to it.
    let err = crate::compile(&Source::new("nowhere/main.tile", main), &o).unwrap_err().render();
    assert!(err.contains("cannot import \"lib/ops.tile\": no such file"), "{err}");
    assert!(err.contains("nowhere/lib/ops.tile"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scalar_parameters_of_every_type_and_const_bools_in_conditions() {
    let src = "
#[grid(1)]
kernel params<const CAUSAL: bool = true, const OFF: bool = false>(
    a: i8, b: i16, c: i32, d: i64, e: u8, f: u32, g: u64, h: f16, i: bf16, j: f32, k: f64, flag: bool,
    out: &mut f64[16],
) {
    let mut v: f64[16] = 0.0;
    if CAUSAL {
        v = v + 1.0;
    }
    if OFF {
        v = v + 1000.0;
    }
    if flag {
        v = v + 2.0;
    }
    if CAUSAL && !flag {
        v = v + 10000.0;
    }
    if a < 0 && e > 200 && g > 1u64 << 40 {
        v = v + 4.0;
    }
    let s = (a as f64) + (b as f64) + (c as f64) + (d as f64) + (e as f64) + (f as f64) + (g as f64)
        + (h as f64) + (i as f64) + (j as f64) + k;
    out.store([0], v + s);
}";
    let kern = compile(src, "params");
    let args = vec![
        Arg::Scalar(Scalar::Int(-3)),
        Arg::Scalar(Scalar::Int(-300)),
        Arg::Scalar(Scalar::Int(70000)),
        Arg::Scalar(Scalar::Int(-(1 << 40))),
        Arg::Scalar(Scalar::Int(250)),
        Arg::Scalar(Scalar::Int(4_000_000_000)),
        Arg::Scalar(Scalar::Int(1 << 41)),
        Arg::Scalar(Scalar::Float(0.5)),
        Arg::Scalar(Scalar::Float(-2.0)),
        Arg::Scalar(Scalar::Float(0.25)),
        Arg::Scalar(Scalar::Float(1e-3)),
        Arg::Scalar(Scalar::Bool(true)),
        Arg::Tensor(HostTensor::zeros(DType::F64, &[16])),
    ];
    let out = run(&kern, args);
    let s = -3.0 - 300.0 + 70000.0 - 2f64.powi(40) + 250.0 + 4e9 + 2f64.powi(41) + 0.5 - 2.0 + 0.25 + 1e-3;
    assert_eq!(t(&out[12]).get_f64(5), 1.0 + 2.0 + 4.0 + s);
}

/// The launch error of running `k` on `args`, as its message.
fn launch_error(k: &crate::tir::Kernel, mut args: Vec<Arg>) -> String {
    match run_kernel(k, &mut args) {
        Err(e) => e.to_string(),
        Ok(()) => panic!("kernel `{}` ran", k.name),
    }
}

#[test]
fn scalar_arguments_must_fit_their_type() {
    // Before the binder checked it, `s = 300` ran a grid of 300 programs that each saw s = 44;
    // the GPU packer refused it.
    let k = compile("#[grid(s)]\nkernel k(s: i8, y: &mut i32[300]) { y.store([program_id(0)], full([1], s as i32)); }", "k");
    let y = || Arg::Tensor(HostTensor::zeros(DType::I32, &[300]));
    assert_eq!(
        launch_error(&k, vec![Arg::Scalar(Scalar::Int(300)), y()]),
        "argument `s`: 300 does not fit in i8 (its range is -128..=127)"
    );
    assert_eq!(launch_error(&k, vec![Arg::Scalar(Scalar::Float(2.5)), y()]), "argument `s`: expected an integer (i8), got 2.5");
    let out = run(&k, vec![Arg::Scalar(Scalar::Int(127)), y()]);
    assert_eq!(as_i64(&out[1])[..128], [[127; 127].as_slice(), &[0]].concat());
    // Floats: a finite value that rounds to infinity does not fit; one that rounds does.
    let k = compile("kernel h(s: f16, y: &mut f32[1]) { y.store([0], full([1], s as f32)); }", "h");
    let y = || Arg::Tensor(HostTensor::zeros(DType::F32, &[1]));
    assert!(launch_error(&k, vec![Arg::Scalar(Scalar::Float(1e6)), y()]).starts_with("argument `s`: 1000000 does not fit in f16"));
    let out = run(&k, vec![Arg::Scalar(Scalar::Float(65519.0)), y()]);
    assert_eq!(t(&out[1]).to_f64_vec(), [65504.0]);
    // Rounded once and correctly (as the GPU packer does): just above a tie rounds up.
    let out = run(&k, vec![Arg::Scalar(Scalar::Float(1.0 + 2f64.powi(-11) + 2f64.powi(-40))), y()]);
    assert_eq!(t(&out[1]).to_f64_vec(), [1.0 + 2f64.powi(-10)]);
}

#[test]
fn launch_expressions_do_not_wrap() {
    // `s * s + 1` with s = 2^32 wrapped to a grid of 1.
    let k = compile("#[grid(s * s + 1)]\nkernel k(s: i64, y: &mut i32[1]) { y.store([0], full([1], 1)); }", "k");
    let y = || Arg::Tensor(HostTensor::zeros(DType::I32, &[1]));
    assert_eq!(
        launch_error(&k, vec![Arg::Scalar(Scalar::Int(1 << 32)), y()]),
        "grid axis 0 = ((s * s) + 1): `(s * s)` overflows i64 with s = 4294967296"
    );
    // A requirement that overflows cannot be evaluated (it wrapped to `0 >= 0`, true).
    let k = compile("#[require(s * s >= 0)]\nkernel r(s: i64, y: &mut i32[1]) { y.store([0], full([1], 1)); }", "r");
    assert_eq!(
        launch_error(&k, vec![Arg::Scalar(Scalar::Int(1 << 32)), y()]),
        "requirement `s * s >= 0` cannot be evaluated: `(s * s)` overflows i64 with s = 4294967296"
    );
    // Division by zero, and the grid limits of CUDA.
    let k = compile("#[grid(64 / s, t)]\nkernel d(s: i32, t: i32, y: &mut i32[1]) { y.store([0], full([1], 1)); }", "d");
    let args = |s: i64, t: i64| vec![Arg::Scalar(Scalar::Int(s)), Arg::Scalar(Scalar::Int(t)), y()];
    assert_eq!(launch_error(&k, args(0, 1)), "grid axis 0 = (64 / s): `(64 / s)` divides by zero with s = 0");
    assert_eq!(launch_error(&k, args(1, 65536)), "grid axis 1 = t: 65536 programs is more than CUDA launches along y (65535)");
    assert_eq!(launch_error(&k, args(-1, 1)), "grid axis 0 = (64 / s): -64 programs is negative");
    // An axis of zero programs runs nothing (as on the GPU).
    let out = run(&k, args(1, 0));
    assert_eq!(as_i64(&out[2]), [0]);
}

/// `x.sum()`, `.max()`, `.min()` without an axis reduce every element to a scalar; negative axes
/// count from the end (`-1` is the last), for reductions, index reductions and scans alike.
#[test]
fn full_reductions_and_negative_axes() {
    let src = "
#[grid(1)]
kernel k(x: &f32[M, N], s: &mut f32[4], rows: &mut f32[M], am: &mut i32[M], cs: &mut f32[M, N]) {
    let t = x.load([0, 0], [4, 8]);
    s.store([0], t.sum()[None]);
    s.store([1], t.max()[None]);
    s.store([2], t.min()[None]);
    s.store([3], t.sum(-1).sum(-1)[None]);
    rows.store([0], t.max(-1));
    am.store([0], t.argmax(-1));
    cs.store([0, 0], t.cumsum(-1));
}";
    let k = compile(src, "k");
    let v: Vec<f64> = (0..32).map(|i| ((i * 7 % 11) as f64) - 5.0 + 0.25 * i as f64).collect();
    let out =
        run(&k, vec![floats(&[4, 8], &v), floats(&[4], &[0.0; 4]), floats(&[4], &[0.0; 4]), ints(&[0; 4]), floats(&[4, 8], &[0.0; 32])]);
    let total: f64 = v.iter().sum();
    let (mx, mn) = (v.iter().cloned().fold(f64::MIN, f64::max), v.iter().cloned().fold(f64::MAX, f64::min));
    let s: Vec<f64> = (0..4).map(|i| t(&out[1]).get_f64(i)).collect();
    assert!((s[0] - total).abs() < 1e-4 && (s[3] - total).abs() < 1e-4, "{s:?} against {total}");
    assert_eq!((s[1], s[2]), (mx, mn));
    for r in 0..4 {
        let row = &v[r * 8..r * 8 + 8];
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        assert_eq!(t(&out[2]).get_f64(r), m, "row {r} max");
        assert_eq!(t(&out[3]).get_i64(r), row.iter().position(|&x| x == m).unwrap_or(9) as i64, "row {r} argmax");
        let mut acc = 0.0;
        for (j, &x) in row.iter().enumerate() {
            acc += x;
            assert!((t(&out[4]).get_f64(r * 8 + j) - acc).abs() < 1e-4, "cumsum [{r}, {j}]");
        }
    }
}

/// `std::math::pow` follows C's `pow` at its edges (negative bases with integer exponents,
/// zeros, ones, NaN) and is close to it elsewhere.
#[test]
fn pow_follows_c_pow() {
    let src = "
use std::math::pow;
#[grid(1)]
kernel k(x: &f32[N], y: &f32[N], o: &mut f32[N]) {
    o.store([0], pow(x.load([0], [16]), y.load([0], [16])));
}";
    let k = compile(src, "k");
    let cases: [(f64, f64); 13] = [
        (2.0, 3.0),
        (-2.0, 3.0),
        (-2.0, 2.0),
        (-2.0, 0.5),
        (0.0, 2.0),
        (0.0, -1.0),
        (1.0, f64::NAN),
        (f64::NAN, 0.0),
        (0.5, -2.0),
        (3.0, 0.5),
        (-3.0, -3.0),
        (10.0, 1.5),
        (-0.5, 4.0),
    ];
    let n = cases.len();
    let (xs, ys): (Vec<f64>, Vec<f64>) = cases.iter().copied().unzip();
    let out = run(&k, vec![floats(&[n], &xs), floats(&[n], &ys), floats(&[n], &vec![0.0; n])]);
    for (i, &(x, y)) in cases.iter().enumerate() {
        let want = (x as f32).powf(y as f32) as f64;
        let got = t(&out[2]).get_f64(i);
        let ok = if want.is_nan() { got.is_nan() } else { got == want || (got - want).abs() <= 1e-6 * want.abs() };
        assert!(ok, "pow({x}, {y}) = {got}, C's pow gives {want}");
    }
}

/// A `fn` with a declared tuple return type returns several values.
#[test]
fn fn_returns_a_typed_tuple() {
    let src = "
fn sum_diff(x: f32[_], y: f32[_]) -> (f32[_], f32[_]) {
    (x + y, x - y)
}
#[grid(1)]
kernel k(a: &f32[N], b: &f32[N], s: &mut f32[N], d: &mut f32[N]) {
    let (p, q) = sum_diff(a.load([0], [4]), b.load([0], [4]));
    s.store([0], p);
    d.store([0], q);
}";
    let k = compile(src, "k");
    let out = run(
        &k,
        vec![floats(&[4], &[1.0, 2.0, 3.0, 4.0]), floats(&[4], &[0.5, 0.5, 1.0, 8.0]), floats(&[4], &[0.0; 4]), floats(&[4], &[0.0; 4])],
    );
    assert_eq!((0..4).map(|i| t(&out[2]).get_f64(i)).collect::<Vec<_>>(), [1.5, 2.5, 4.0, 12.0]);
    assert_eq!((0..4).map(|i| t(&out[3]).get_f64(i)).collect::<Vec<_>>(), [0.5, 1.5, 2.0, -4.0]);
}

/// `t.store(offsets, x, mask)` writes only where the mask holds (the other elements keep their
/// values) and, like `store`, drops what falls outside the tensor.
#[test]
fn masked_store_writes_only_under_its_mask() {
    let src = "
#[grid(1)]
kernel k(x: &f32[M, N], y: &mut f32[M, N], z: &mut f32[N]) {
    let t = x.load([0, 0], [4, 8]);
    y.store([1, 2], t, t > 0.0);
    z.store([3], t.sum(0), arange(8) % 2 == 0);
}";
    let k = compile(src, "k");
    let (m, n) = (3usize, 6usize);
    let v: Vec<f64> = (0..m * n).map(|i| if i % 3 == 0 { -1.0 } else { i as f64 }).collect();
    let out = run(&k, vec![floats(&[m, n], &v), floats(&[m, n], &vec![100.0; m * n]), floats(&[n], &[100.0; 6])]);
    let at = |r: usize, c: usize| if r < m && c < n { v[r * n + c] } else { 0.0 };
    for r in 0..m {
        for c in 0..n {
            // y[r, c] gets t[r - 1, c - 2] where that is positive.
            let src = (r >= 1 && c >= 2).then(|| at(r - 1, c - 2)).filter(|&x| x > 0.0);
            assert_eq!(t(&out[1]).get_f64(r * n + c), src.unwrap_or(100.0), "y[{r}, {c}]");
        }
    }
    for c in 0..n {
        let j = c as i64 - 3;
        let want = if j >= 0 && j % 2 == 0 { (0..4).map(|r| at(r, j as usize)).sum::<f64>() } else { 100.0 };
        assert_eq!(t(&out[2]).get_f64(c), want, "z[{c}]");
    }
}

/// Indexing a tile picks elements as NumPy does: `t[:, 3]` a column, `t[j]` a row (trailing `:`
/// implied), `t[:, -1]` the last column, `t[2, j]` one element, `t[5, None]` a row as [1, n];
/// the picked value comes out bit for bit (-0.0, NaN, inf), bool tiles too, and a computed index
/// outside the axis gives zero.
#[test]
fn tile_indexing_picks_elements() {
    let src = "
#[grid(1)]
kernel k(x: &f32[8, 16], m: &i32[16], j: i32, col: &mut f32[8], row: &mut f32[16], last: &mut f32[8], el: &mut f32[2],
         r: &mut f32[1, 16], b: &mut i32[2]) {
    let t = x.load([0, 0], [8, 16]);
    col.store([0], t[:, 3]);
    row.store([0], t[j]);
    last.store([0], t[:, -1]);
    el.store([0], full([1], t[2, j]));
    el.store([1], full([1], t[2, j + 100]));
    r.store([0, 0], t[5, None]);
    let mm = m.load([0], [16]) != 0;
    b.store([0], full([1], mm[j] as i32));
    b.store([1], full([1], mm[j + 1] as i32));
}";
    let k = compile(src, "k");
    let mut v: Vec<f64> = (0..128).map(|i| ((i * 37 % 23) as f64) - 11.5).collect();
    v[2 * 16 + 7] = -0.0;
    v[3 * 16 + 3] = f64::NAN;
    v[4 * 16 + 15] = f64::NEG_INFINITY;
    let mask: Vec<i64> = (0..16).map(|i| i64::from(i % 3 == 1)).collect();
    let out = run(
        &k,
        vec![
            floats(&[8, 16], &v),
            ints(&mask),
            Arg::Scalar(Scalar::Int(7)),
            floats(&[8], &[1.0; 8]),
            floats(&[16], &[1.0; 16]),
            floats(&[8], &[1.0; 8]),
            floats(&[2], &[1.0; 2]),
            floats(&[1, 16], &[1.0; 16]),
            ints(&[5, 5]),
        ],
    );
    let same = |a: f64, b: f64| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    for i in 0..8 {
        assert!(same(t(&out[3]).get_f64(i), v[i * 16 + 3]), "col {i}");
        assert!(same(t(&out[5]).get_f64(i), v[i * 16 + 15]), "last {i}");
    }
    for c in 0..16 {
        assert!(same(t(&out[4]).get_f64(c), v[7 * 16 + c]), "row {c}");
        assert!(same(t(&out[7]).get_f64(c), v[5 * 16 + c]), "t[5, None] {c}");
    }
    assert!(same(t(&out[6]).get_f64(0), -0.0), "t[2, 7] is -0.0, got {}", t(&out[6]).get_f64(0));
    assert_eq!(t(&out[6]).get_f64(1), 0.0, "an index outside the axis picks nothing");
    assert_eq!(as_i64(&out[8]), vec![mask[7], mask[8]]);
}

/// `cumprod` and `cummin`: integer products wrap, `cummin` skips NaN unless every element so far
/// is NaN; `keepdim` (`x.sum(1, true)`, `x.argmax(1, true)`) keeps the reduced axis as 1.
#[test]
fn cumprod_cummin_and_keepdim() {
    let src = "
#[grid(1)]
kernel k(x: &f32[2, 4], xi: &i32[2, 4], cp: &mut i32[2, 4], cn: &mut f32[2, 4], nan: &mut bool[2, 4], s: &mut f32[2, 4],
         am: &mut i32[2, 1]) {
    let t = x.load([0, 0], [2, 4]);
    cp.store([0, 0], xi.load([0, 0], [2, 4]).cumprod(1));
    let c = t.cummin(-1);
    cn.store([0, 0], where(c != c, 0.0, c));
    nan.store([0, 0], c != c);
    s.store([0, 0], t / t.sum(1, true));
    am.store([0, 0], t.argmax(1, true));
}";
    let k = compile(src, "k");
    let nan = f64::NAN;
    let x = [nan, 3.0, 1.0, 2.0, 4.0, nan, 5.0, 0.5];
    let xi = [65536, 65536, 3, -1, 7, -2, 0, 9];
    let out = run(
        &k,
        vec![
            floats(&[2, 4], &x),
            Arg::Tensor(HostTensor::from_i64(DType::I32, &[2, 4], &xi)),
            Arg::Tensor(HostTensor::zeros(DType::I32, &[2, 4])),
            floats(&[2, 4], &[0.0; 8]),
            Arg::Tensor(HostTensor::zeros(DType::Bool, &[2, 4])),
            floats(&[2, 4], &[0.0; 8]),
            Arg::Tensor(HostTensor::zeros(DType::I32, &[2, 1])),
        ],
    );
    // 65536 · 65536 wraps to 0 in i32.
    assert_eq!(as_i64(&out[2]), vec![65536, 0, 0, 0, 7, -14, 0, 0]);
    let cn: Vec<f64> = (0..8).map(|i| t(&out[3]).get_f64(i)).collect();
    assert_eq!(cn, vec![0.0, 3.0, 1.0, 1.0, 4.0, 4.0, 4.0, 0.5]);
    assert_eq!(as_i64(&out[4]), vec![1, 0, 0, 0, 0, 0, 0, 0]);
    assert!(t(&out[5]).get_f64(0).is_nan() && (t(&out[5]).get_f64(4) - 4.0 / (9.0 + nan)).is_nan());
    assert_eq!(as_i64(&out[6]), vec![1, 2]);
}

/// `break`, `continue` and `loop`: a search that breaks, a `continue` in a stepped `for`, `loop`
/// with a break, a nested loop whose inner `break` leaves only the inner loop, and a `while` with
/// both in an `else if`.
#[test]
fn break_continue_and_loop() {
    let src = "
#[grid(1)]
kernel k(n: &i32[8], o: &mut i32[8]) {
    // first index of a value > 5 (a search that breaks)
    let mut first = -1;
    for i in 0..8 {
        if n[i] > 5 { first = i; break; }
    }
    // sum of the odd values (continue)
    let mut s = 0;
    for i in (0..8).step_by(1) {
        if n[i] % 2 == 0 { continue; }
        s += n[i];
    }
    // loop with break after the condition
    let mut j = 0;
    loop {
        j += 1;
        if j * j > 50 { break; }
    }
    // nested: count pairs (a, b), a < b, stopping the inner loop at the first b with n[b] == 0
    let mut pairs = 0;
    for a in 0..8 {
        for b in (a + 1)..8 {
            if n[b] == 0 { break; }
            pairs += 1;
        }
        if a == 5 { break; }
    }
    // while with both
    let mut w = 0;
    let mut t = 0;
    while w < 100 {
        w += 1;
        if w % 3 == 0 { continue; } else if w > 20 { break; }
        t += w;
    }
    o.store([0], full([1], first));
    o.store([1], full([1], s));
    o.store([2], full([1], j));
    o.store([3], full([1], pairs));
    o.store([4], full([1], t));
    o.store([5], full([1], w));
}
";
    let k = compile(src, "k");
    let out = run(&k, vec![ints(&[3, 8, 0, 7, 2, 9, 4, 1]), ints(&[0; 8])]);
    assert_eq!(as_i64(&out[1]), vec![1, 20, 8, 15, 147, 22, 0, 0]);
}
