//! The built-ins beyond window memory (`tests/ops/*.tile`): indexed memory and atomics, scans and
//! index reductions, `join`/`split`, `while`/`return`, `print`/`assert`, and the conformance
//! programs that `tessera selftest` runs on the GPU against the interpreter (float and integer
//! arithmetic at their edges, every cast, window memory across every edge, masked gathers and
//! scatters, atomics with duplicates, `-inf` rows in softmax, NaN in index reductions and scans).
//! Each program runs on the interpreter against a plain Rust reference on the inputs the
//! self-test makes for it (or random ones, with out-of-range indices), and its PTX, checked
//! build or not, assembles with ptxas for both targets.

use crate::common::{philox_ref, ptxas, root, tensor, tile_files, uniform_ref};
use tessera_compiler::interp::{self, Arg};
use tessera_compiler::{CompiledKernel, DType, HostTensor, Options, Source, Target};
use tessera_runtime::exec::{Rng, random_tensor};

/// The first kernel of `tests/ops/NAME`.
fn compile_op_file(name: &str, o: &Options) -> CompiledKernel {
    compile_op_kernels(name, o).into_iter().next().unwrap_or_else(|| panic!("{name} has no kernel"))
}

/// Every kernel of `tests/ops/NAME`.
fn compile_op_kernels(name: &str, o: &Options) -> Vec<CompiledKernel> {
    let path = root().join("tests/ops").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match tessera_compiler::compile(&Source::new(format!("tests/ops/{name}"), text).with_path(&path), o) {
        Ok(m) => m.kernels,
        Err(d) => panic!("{name} does not compile:\n{}", d.render()),
    }
}

fn checked() -> Options {
    Options { verify: true, checked: true, ..Options::default() }
}

fn run(k: &CompiledKernel, mut args: Vec<Arg>) -> (Vec<Arg>, String) {
    let mut out = vec![];
    if let Err(e) = interp::run_kernel_with_output(&k.tir, &mut args, &mut out) {
        panic!("interpreter failed on {}: {e}", k.meta.name);
    }
    (args, String::from_utf8_lossy(&out).into_owned())
}

fn ints(dtype: DType, v: &[i64]) -> Arg {
    Arg::Tensor(HostTensor::from_i64(dtype, &[v.len()], v))
}

fn zeros(dtype: DType, shape: &[usize]) -> Arg {
    Arg::Tensor(HostTensor::zeros(dtype, shape))
}

/// Every target with every emitter (the `llvm` one where this build has it).
const TARGETS_AND_EMITTERS: [(Target, tessera_compiler::Codegen); 4] = [
    (Target::Sm90a, tessera_compiler::Codegen::Ptx),
    (Target::Sm80, tessera_compiler::Codegen::Ptx),
    (Target::Sm90a, tessera_compiler::Codegen::Llvm),
    (Target::Sm80, tessera_compiler::Codegen::Llvm),
];

/// Every conformance program, checked build or not, assembles for both targets from both
/// emitters.
#[test]
fn ops_assemble_with_ptxas() {
    let Some(ptxas) = ptxas() else { return };
    let dir = std::env::temp_dir().join(format!("tessera-ops-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let files = tile_files("tests/ops");
    assert!(files.len() >= 3, "tests/ops is missing programs");
    for f in files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        for (target, codegen) in TARGETS_AND_EMITTERS {
            for checked in [true, false] {
                for k in compile_op_kernels(&name, &Options { target, checked, verify: true, codegen, ..Options::default() }) {
                    let ptx = dir.join(format!("{}.{}.{}.{checked}.ptx", k.meta.name, target.name(), codegen.name()));
                    std::fs::write(&ptx, &k.ptx).expect("write ptx");
                    let out = std::process::Command::new(&ptxas)
                        .args([&format!("-arch={}", target.name()), "-o"])
                        .arg(dir.join("out.cubin"))
                        .arg(&ptx)
                        .output()
                        .expect("run ptxas");
                    let log = String::from_utf8_lossy(&out.stderr);
                    assert!(
                        out.status.success(),
                        "ptxas rejected {name} for {} from the {} emitter (checked: {checked}):\n{log}",
                        target.name(),
                        codegen.name()
                    );
                    // Asserts exist in the GPU code of checked builds only.
                    assert_eq!(k.ptx.contains("__assertfail"), checked && name == "control.tile", "{name}");
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn indexed_matches_reference() {
    let k = compile_op_file("indexed.tile", &checked());
    let (n, f, e, t) = (7usize, 5usize, 150usize, 3usize);
    let mut rng = Rng::new(5);
    let x = random_tensor(DType::F32, &[n, f], &mut rng);
    let table = random_tensor(DType::F32, &[t, f], &mut rng);
    // Indices in [-2, n + 1] and [-1, f]: some fall outside, and those elements read the pad.
    let rows: Vec<i64> = (0..e).map(|_| (rng.next_u64() % (n as u64 + 4)) as i64 - 2).collect();
    let cols: Vec<i64> = (0..e).map(|_| (rng.next_u64() % (f as u64 + 2)) as i64 - 1).collect();
    let args = vec![
        Arg::Tensor(x.clone()),
        ints(DType::I32, &rows),
        ints(DType::I32, &cols),
        ints(DType::I32, &[2, 0, 1]),
        Arg::Tensor(table.clone()),
        zeros(DType::F32, &[e]),
        zeros(DType::I32, &[n]),
        zeros(DType::F32, &[n]),
        zeros(DType::I64, &[n]),
        Arg::Tensor(HostTensor::from_f64(DType::F32, &[n], &vec![-1e30; n])),
        ints(DType::U32, &vec![u32::MAX as i64; n]),
        zeros(DType::F64, &[n]),
    ];
    let (out, _) = run(&k, args);
    let xv = |r: i64, c: i64| {
        if (0..n as i64).contains(&r) && (0..f as i64).contains(&c) { x.get_f64(r as usize * f + c as usize) } else { 0.5 }
    };
    let (t0, x00) = (table.get_f64(2 * f) as f32, x.get_f64(0) as f32);
    let mut hist = vec![0i64; n];
    let mut fsum = vec![0f64; n];
    let mut fmax = vec![-1e30f64; n];
    let mut umin = vec![u32::MAX as i64; n];
    for i in 0..e {
        let v = xv(rows[i], cols[i]);
        let want = (v as f32 + t0 + x00) as f64;
        assert_eq!(tensor(&out[5]).get_f64(i), want, "out[{i}]");
        if let Ok(r) = usize::try_from(rows[i])
            && r < n
        {
            hist[r] += 1;
            fsum[r] += v;
            fmax[r] = fmax[r].max(v);
            umin[r] = umin[r].min(i as i64);
        }
    }
    for r in 0..n {
        assert_eq!(tensor(&out[6]).get_i64(r), hist[r], "hist[{r}]");
        assert!((tensor(&out[7]).get_f64(r) - fsum[r]).abs() < 1e-4, "fsum[{r}]");
        assert_eq!(tensor(&out[8]).get_i64(r), hist[r] << 33, "big[{r}]");
        assert_eq!(tensor(&out[9]).get_f64(r), fmax[r], "fmax[{r}]");
        assert_eq!(tensor(&out[10]).get_i64(r), umin[r], "umin[{r}]");
        assert!((tensor(&out[11]).get_f64(r) - fsum[r]).abs() < 1e-9, "dsum[{r}]");
    }
}

#[test]
fn scans_match_reference() {
    let k = compile_op_file("scan.tile", &checked());
    for (r, c) in [(37usize, 50usize), (16, 64), (1, 1)] {
        let mut rng = Rng::new(9);
        let mut x = random_tensor(DType::F32, &[r, c], &mut rng);
        // Ties: repeat some values so that the first index must win.
        for i in (0..r * c).step_by(3) {
            x.set_f64(i, (x.get_f64(i) * 4.0).round());
        }
        let args = vec![
            Arg::Tensor(x.clone()),
            zeros(DType::F32, &[r, c]),
            zeros(DType::F32, &[r, c]),
            zeros(DType::I32, &[r]),
            zeros(DType::I32, &[r]),
            zeros(DType::I32, &[64]),
            zeros(DType::F32, &[r, c]),
            zeros(DType::F32, &[r, c]),
            zeros(DType::F32, &[r, c]),
            zeros(DType::F32, &[r, c]),
            zeros(DType::I32, &[r, 1]),
        ];
        let (out, _) = run(&k, args);
        let at = |i: usize, j: usize| x.get_f64(i * c + j);
        for i in 0..r {
            let (mut p, mut n) = (1.0f64, f64::INFINITY);
            let row_max = (0..c).map(|j| at(i, j)).fold(f64::NEG_INFINITY, f64::max);
            let row_min = (0..c).map(|j| at(i, j)).fold(f64::INFINITY, f64::min);
            for j in 0..c {
                p *= at(i, j) + 0.5;
                n = n.min(at(i, j));
                let got = tensor(&out[7]).get_f64(i * c + j);
                assert!((got - p).abs() <= 1e-6 * p.abs(), "cumprod[{i}, {j}] ({r}x{c}): {got} against {p}");
                assert_eq!(tensor(&out[8]).get_f64(i * c + j), n, "cummin[{i}, {j}]");
                assert_eq!(tensor(&out[9]).get_f64(i * c + j), (at(i, j) as f32 - row_max as f32) as f64, "keepdim max[{i}, {j}]");
            }
            // Columns past C are -inf: they win the argmin when there are any.
            let want = if c < 64 { c } else { (0..c).position(|j| at(i, j) == row_min).unwrap_or(0) };
            assert_eq!(tensor(&out[10]).get_i64(i), want as i64, "keepdim argmin[{i}]");
        }
        for i in 0..r {
            let (mut s, mut m) = (0.0, f64::NEG_INFINITY);
            let (mut amax, mut amin) = (0, 0);
            for j in 0..c {
                s += at(i, j);
                m = m.max(at(i, j));
                assert!((tensor(&out[1]).get_f64(i * c + j) - s).abs() < 1e-5, "cumsum[{i}, {j}] ({r}x{c})");
                assert_eq!(tensor(&out[2]).get_f64(i * c + j), m, "cummax[{i}, {j}]");
                assert_eq!(tensor(&out[6]).get_f64(i * c + j), (at(i, j) as f32 * 3.0) as f64, "pair[{i}, {j}]");
                if at(i, j) > at(i, amax) {
                    amax = j;
                }
                if at(i, j) < at(i, amin) {
                    amin = j;
                }
            }
            // Columns past C load as -inf: they never win an argmax, and win no argmin tie.
            assert_eq!(tensor(&out[3]).get_i64(i), amax as i64, "argmax[{i}]");
            let want_min = if c < 64 { c as i64 } else { amin as i64 };
            assert_eq!(tensor(&out[4]).get_i64(i), want_min, "argmin[{i}] is a padded -inf column when C < 64");
        }
        // Argmax down the columns of program 0's 16 rows (padding rows are -inf).
        for j in 0..c.min(64) {
            let mut best = 0;
            for i in 0..r.min(16) {
                if at(i, j) > at(best, j) {
                    best = i;
                }
            }
            assert_eq!(tensor(&out[5]).get_i64(j), best as i64, "col_arg[{j}]");
        }
    }
}

/// Scans with combine functions (`scan_fn.tile`) against left folds in Rust, each step rounded
/// to the element type: a decaying f32 sum along the rows, a wrapping i32 combine down the
/// columns of each program's 16 rows, the larger bf16 magnitude, and `first`.
#[test]
fn scans_with_combine_functions_match_reference() {
    let k = compile_op_file("scan_fn.tile", &checked());
    for (r, c) in [(37usize, 50usize), (16, 64), (1, 1)] {
        let mut rng = Rng::new(31);
        let x = random_tensor(DType::F32, &[r, c], &mut rng);
        let n = random_tensor(DType::I32, &[r, c], &mut rng);
        let h = random_tensor(DType::BF16, &[r, c], &mut rng);
        let args = vec![
            Arg::Tensor(x.clone()),
            Arg::Tensor(n.clone()),
            Arg::Tensor(h.clone()),
            zeros(DType::F32, &[r, c]),
            zeros(DType::I32, &[r, c]),
            zeros(DType::BF16, &[r, c]),
            zeros(DType::F32, &[r, c]),
        ];
        let (out, _) = run(&k, args);
        for i in 0..r {
            let (mut acc, mut big) = (0.0f32, 0.0f64);
            for j in 0..c {
                let (xv, hv) = (x.get_f64(i * c + j) as f32, h.get_f64(i * c + j));
                acc = if j == 0 { xv } else { acc * 0.9f32 + xv };
                big = if j == 0 || hv.abs() > big.abs() { hv } else { big };
                assert_eq!(tensor(&out[3]).get_f64(i * c + j), acc as f64, "decay[{i}, {j}] ({r}x{c})");
                assert_eq!(tensor(&out[5]).get_f64(i * c + j), big, "larger[{i}, {j}]");
                assert_eq!(tensor(&out[6]).get_f64(i * c + j), x.get_f64(i * c), "first[{i}, {j}]");
            }
        }
        for j in 0..c {
            let mut acc = 0i32;
            for i in 0..r {
                let v = n.get_i64(i * c + j) as i32;
                acc = if i % 16 == 0 { v } else { (acc ^ v).wrapping_mul(3).wrapping_add(acc & 7) };
                assert_eq!(tensor(&out[4]).get_i64(i * c + j), acc as i64, "mix[{i}, {j}] ({r}x{c})");
            }
        }
    }
}

#[test]
fn control_flow_and_debug_output_match_reference() {
    let k = compile_op_file("control.tile", &checked());
    let steps = [3i64, -1, 0, 250, 7];
    let (out, printed) = run(&k, vec![ints(DType::I32, &steps), ints(DType::I32, &[9; 5]), zeros(DType::F32, &[5, 16])]);
    let got: Vec<i64> = (0..5).map(|i| tensor(&out[1]).get_i64(i)).collect();
    assert_eq!(got, [3, 9, 0, -101, 7]);
    for (p, &n) in steps.iter().enumerate() {
        let want = if (0..=100).contains(&n) { n as f64 * 0.5 } else { 0.0 };
        assert_eq!(tensor(&out[2]).get_f64(p * 16), want, "acc[{p}]");
    }
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 16, "{printed}");
    assert_eq!(lines[0], "program (0, 0, 0) [0]: program 0 ran 3 steps, v = 1.5");
    assert_eq!(lines[15], "program (0, 0, 0) [15]: program 0 ran 3 steps, v = 1.5");
}

// The conformance programs of `tessera selftest` (`tests/ops/*.tile` beyond the three above), on
// the inputs the self-test makes for them, against plain Rust: the interpreter is the reference
// the GPU is held to, so its edge semantics are pinned here independently.

/// The inputs a self-test generator makes for `sizes`, by name.
fn generated(g: tessera_runtime::selftest::Generator, sizes: &[(&str, usize)]) -> Vec<(&'static str, HostTensor)> {
    let sizes: Vec<(String, usize)> = sizes.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    g(&sizes, &mut Rng::new(11)).expect("inputs")
}

fn input(inputs: &[(&'static str, HostTensor)], name: &str) -> HostTensor {
    inputs.iter().find(|(n, _)| *n == name).map(|(_, t)| t.clone()).unwrap_or_else(|| panic!("no input `{name}`"))
}

/// `x` rounded to nearest even to a float format with `frac` fraction bits, normal exponents
/// from `min_exp` to `max_exp` (below: subnormal steps; above: infinity). `x` must be exact
/// in f64.
fn round_float(x: f64, frac: i32, min_exp: i32, max_exp: i32) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let r = if x.abs() < 2f64.powi(min_exp) {
        let step = 2f64.powi(min_exp - frac);
        (x / step).round_ties_even() * step
    } else {
        let drop = 52 - frac as u64;
        let b = x.to_bits();
        let (low, half) = (b & ((1 << drop) - 1), 1u64 << (drop - 1));
        let mut hi = b & !((1 << drop) - 1);
        if low > half || (low == half && (hi >> drop) & 1 == 1) {
            hi += 1 << drop;
        }
        f64::from_bits(hi)
    };
    if r.abs() >= 2f64.powi(max_exp + 1) { f64::INFINITY.copysign(x) } else { r }
}

fn to_bf16(x: f64) -> f64 {
    round_float(x, 7, -126, 127)
}

fn to_f16(x: f64) -> f64 {
    round_float(x, 10, -14, 15)
}

/// Checks row `row` of a float output and of its NaN flags against `want` (NaN: flag set, value
/// 0); values compare exactly.
fn check_float_row(name: &str, out: &HostTensor, flags: &HostTensor, row: usize, frow: usize, want: &[f64]) {
    let n = want.len();
    for (i, &w) in want.iter().enumerate() {
        let (v, f) = (out.get_f64(row * n + i), flags.get_i64(frow * n + i));
        if w.is_nan() {
            assert!(f == 1 && v == 0.0, "{name}[{i}]: want NaN, got {v} (flag {f})");
        } else {
            assert!(f == 0 && v == w, "{name}[{i}]: want {w:e}, got {v:e} (flag {f})");
        }
    }
}

#[test]
fn intops_match_reference() {
    let k = compile_op_file("intops.tile", &checked());
    let n = 1100;
    let inp = generated(tessera_runtime::selftest::inputs::intops, &[("N", n)]);
    let (a, b) = (input(&inp, "a"), input(&inp, "b"));
    let args = vec![
        Arg::Tensor(a.clone()),
        Arg::Tensor(b.clone()),
        zeros(DType::I32, &[13, n]),
        zeros(DType::U32, &[6, n]),
        zeros(DType::I8, &[8, n]),
        zeros(DType::U8, &[6, n]),
        zeros(DType::Bool, &[10, n]),
        zeros(DType::I64, &[2, n]),
    ];
    let (out, _) = run(&k, args);
    for i in 0..n {
        let (x, y) = (a.get_i64(i) as i32, b.get_i64(i) as i32);
        let at = |o: usize, row: usize| tensor(&out[o]).get_i64(row * n + i);
        let w32 = [
            if y == 0 { 0 } else { x.wrapping_div(y) },
            if y == 0 { 0 } else { x.wrapping_rem(y) },
            x.wrapping_shl(y as u32),
            x.wrapping_shr(y as u32),
            x.min(y),
            x.max(y),
            x.wrapping_abs(),
            x.wrapping_neg(),
            x.wrapping_mul(y),
            x.wrapping_add(y),
            x & y,
            x | y,
            x ^ y,
        ];
        for (row, w) in w32.iter().enumerate() {
            assert_eq!(at(2, row), *w as i64, "i32 row {row}: {x}, {y}");
        }
        let (ux, uy) = (x as u32, y as u32);
        let wu32 = [
            ux.checked_div(uy).unwrap_or(0),
            ux.checked_rem(uy).unwrap_or(0),
            ux.wrapping_shl(uy),
            ux.wrapping_shr(uy),
            ux.min(uy),
            ux.max(uy),
        ];
        for (row, w) in wu32.iter().enumerate() {
            assert_eq!(at(3, row), *w as i64, "u32 row {row}: {ux}, {uy}");
        }
        let (x8, y8) = (x as i8, y as i8);
        let w8 = [
            if y8 == 0 { 0 } else { x8.wrapping_div(y8) },
            if y8 == 0 { 0 } else { x8.wrapping_rem(y8) },
            x8.wrapping_shl(y8 as u32),
            x8.wrapping_shr(y8 as u32),
            x8.min(y8),
            x8.max(y8),
            x8.wrapping_abs(),
            x8.wrapping_mul(y8).wrapping_add(x8),
        ];
        for (row, w) in w8.iter().enumerate() {
            assert_eq!(at(4, row), *w as i64, "i8 row {row}: {x8}, {y8}");
        }
        let (xu, yu) = (x as u8, y as u8);
        let wu8 = [
            xu.checked_div(yu).unwrap_or(0),
            xu.checked_rem(yu).unwrap_or(0),
            xu.wrapping_shl(yu as u32),
            xu.wrapping_shr(yu as u32),
            xu.min(yu),
            xu.max(yu),
        ];
        for (row, w) in wu8.iter().enumerate() {
            assert_eq!(at(5, row), *w as i64, "u8 row {row}: {xu}, {yu}");
        }
        // Bools as 0 and 1: false < true.
        let (px, py) = ((x < 0) as u8, (y < 0) as u8);
        let lt = [x < y, ux < uy, x8 < y8, xu < yu, px < py, px <= py, px > py, px >= py, (x as i16) < 5, (x as i8) < 5];
        for (row, w) in lt.iter().enumerate() {
            assert_eq!(at(6, row), *w as i64, "lt row {row}: {x}, {y}");
        }
        assert_eq!((at(7, 0), at(7, 1)), (x.max(y) as i64, x.min(y) as i64), "i64 max/min: {x}, {y}");
    }
}

#[test]
fn casts_match_reference() {
    let k = compile_op_file("casts.tile", &checked());
    let n = 150;
    let inp = generated(tessera_runtime::selftest::inputs::casts, &[("N", n)]);
    let names = ["xf", "xb", "xh", "xi", "x8", "xu", "xz"];
    let mut args: Vec<Arg> = names.iter().map(|s| Arg::Tensor(input(&inp, s))).collect();
    for d in [DType::F32, DType::BF16, DType::F16, DType::I32, DType::I8, DType::U8, DType::Bool] {
        args.push(zeros(d, &[7, n]));
    }
    args.push(zeros(DType::Bool, &[3, 7, n]));
    let (out, _) = run(&k, args);
    let nan = tensor(&out[14]);
    for (s, name) in names.iter().enumerate() {
        let src = input(&inp, name);
        let vals: Vec<f64> = (0..n).map(|i| src.get_f64(i)).collect();
        // Every source value is exact in f64; casts to floats round once from it.
        let fl = |f: fn(f64) -> f64| vals.iter().map(|&v| f(v)).collect::<Vec<_>>();
        check_float_row(&format!("{name} as f32"), tensor(&out[7]), nan, s, s, &fl(|v| round_float(v, 23, -126, 127)));
        check_float_row(&format!("{name} as bf16"), tensor(&out[8]), nan, s, 7 + s, &fl(to_bf16));
        check_float_row(&format!("{name} as f16"), tensor(&out[9]), nan, s, 14 + s, &fl(to_f16));
        let float_src = s < 3;
        for (i, &v) in vals.iter().enumerate() {
            let iv = src.get_i64(i);
            let (w32, w8, wu8) = if float_src {
                (v as i32 as i64, v as i8 as i64, v as u8 as i64)
            } else {
                (iv as i32 as i64, iv as i8 as i64, iv as u8 as i64)
            };
            assert_eq!(tensor(&out[10]).get_i64(s * n + i), w32, "{name}[{i}] = {v} as i32");
            assert_eq!(tensor(&out[11]).get_i64(s * n + i), w8, "{name}[{i}] = {v} as i8");
            assert_eq!(tensor(&out[12]).get_i64(s * n + i), wu8, "{name}[{i}] = {v} as u8");
            assert_eq!(tensor(&out[13]).get_i64(s * n + i), (v != 0.0) as i64, "{name}[{i}] = {v} as bool");
        }
    }
    // The traps: NaN → 0, saturation, f16 overflow, an integer that rounds twice through f32.
    assert_eq!(tensor(&out[10]).get_i64(0), 0, "NaN as i32");
    assert_eq!(tensor(&out[10]).get_i64(22), i32::MAX as i64, "2^31 as i32 saturates");
    assert_eq!(tensor(&out[8]).get_f64(3 * n + 16), 2f64.powi(24) + 2f64.powi(17), "2^24 + 2^16 + 1 as bf16 rounds up once");
    assert_eq!(tensor(&out[9]).get_f64(3 * n + 11), f64::INFINITY, "65520 as f16");
}

#[test]
fn float_arithmetic_matches_reference() {
    let k = compile_op_file("arith.tile", &checked());
    let n = 700;
    let inp = generated(tessera_runtime::selftest::inputs::arith, &[("N", n)]);
    let (a, b, c) = (input(&inp, "a"), input(&inp, "b"), input(&inp, "c"));
    let args = vec![
        Arg::Tensor(a.clone()),
        Arg::Tensor(b.clone()),
        Arg::Tensor(c.clone()),
        zeros(DType::Bool, &[6, n]),
        zeros(DType::F32, &[10, n]),
        zeros(DType::BF16, &[5, n]),
        zeros(DType::F16, &[5, n]),
        zeros(DType::Bool, &[20, n]),
    ];
    let (out, _) = run(&k, args);
    let get = |t: &HostTensor| (0..n).map(|i| t.get_f64(i) as f32).collect::<Vec<f32>>();
    let (x, y, z) = (get(&a), get(&b), get(&c));
    let (f, hb, hf, nan) = (tensor(&out[4]), tensor(&out[5]), tensor(&out[6]), tensor(&out[7]));
    let row = |g: &dyn Fn(f32, f32, f32) -> f32| (0..n).map(|i| g(x[i], y[i], z[i]) as f64).collect::<Vec<f64>>();
    check_float_row("min", f, nan, 0, 0, &row(&|p, q, _| p.min(q)));
    check_float_row("max", f, nan, 1, 1, &row(&|p, q, _| p.max(q)));
    check_float_row("clamp", f, nan, 2, 2, &row(&|p, q, _| p.max(-0.5).min(q)));
    check_float_row("add", f, nan, 3, 3, &row(&|p, q, _| p + q));
    check_float_row("sub", f, nan, 4, 4, &row(&|p, q, _| p - q));
    check_float_row("mul", f, nan, 5, 5, &row(&|p, q, _| p * q));
    check_float_row("div", f, nan, 6, 6, &row(&|p, q, _| p / q));
    // `fma` is rounded once (C's `fmaf`): the GPU's `fma.rn.f32`, the interpreter's `mul_add`.
    check_float_row("fma", f, nan, 7, 7, &row(&|p, q, r| p.mul_add(q, r)));
    check_float_row("neg", f, nan, 8, 8, &row(&|p, _, _| -p));
    check_float_row("rem", f, nan, 9, 19, &row(&|p, q, _| p % q));
    // 16-bit floats: operands rounded, computed in f32 (exact enough: one rounding), rounded.
    type Op = fn(f64, f64) -> f64;
    let ops: [Op; 5] = [|p, q| p + q, |p, q| p * q, |p, q| p / q, f64::max, |p, _| p.abs().sqrt()];
    for (j, op) in ops.iter().enumerate() {
        let wb: Vec<f64> = (0..n).map(|i| to_bf16(op(to_bf16(x[i] as f64), to_bf16(y[i] as f64)) as f32 as f64)).collect();
        check_float_row(&format!("bf16 op {j}"), hb, nan, j, 9 + j, &wb);
        let op16: Op = if j == 3 { f64::min } else { *op };
        let wh: Vec<f64> = (0..n).map(|i| to_f16(op16(to_f16(x[i] as f64), to_f16(y[i] as f64)) as f32 as f64)).collect();
        check_float_row(&format!("f16 op {j}"), hf, nan, j, 14 + j, &wh);
    }
    let cmp = tensor(&out[3]);
    for i in 0..n {
        let want = [x[i] == y[i], x[i] != y[i], x[i] < y[i], x[i] <= y[i], x[i] > y[i], x[i] >= y[i]];
        for (r, w) in want.iter().enumerate() {
            assert_eq!(cmp.get_i64(r * n + i), *w as i64, "comparison {r} of {} and {}", x[i], y[i]);
        }
    }
}

#[test]
fn window_edges_match_reference() {
    let k = compile_op_file("window.tile", &checked());
    for (r, c) in [(37usize, 50usize), (5, 13)] {
        let (br, bc) = (8i64, 16i64);
        let inp = generated(tessera_runtime::selftest::inputs::window, &[("R", r), ("C", c), ("BR", 8), ("BC", 16)]);
        let offs = input(&inp, "offs");
        let p = offs.shape[0];
        let mut rng = Rng::new(3);
        let x = random_tensor(DType::F32, &[r, c], &mut rng);
        let v = random_tensor(DType::I8, &[c], &mut rng);
        let poison = |shape: &[usize]| Arg::Tensor(HostTensor::from_i64(DType::I32, shape, &vec![-1; shape.iter().product()]));
        let args = vec![
            Arg::Tensor(x.clone()),
            Arg::Tensor(v.clone()),
            Arg::Tensor(offs.clone()),
            zeros(DType::F32, &[p, 8, 16]),
            poison(&[p, r, c]),
            poison(&[p, r, c]),
            zeros(DType::F32, &[p, 16]),
            zeros(DType::I8, &[p, 16]),
            zeros(DType::F32, &[p, 4]),
        ];
        let (out, _) = run(&k, args);
        let (ri, ci) = (r as i64, c as i64);
        let xv = |i: i64, j: i64| if (0..ri).contains(&i) && (0..ci).contains(&j) { Some(x.get_f64((i * ci + j) as usize)) } else { None };
        let vv = |j: i64| (0..ci).contains(&j).then(|| v.get_i64(j as usize));
        for q in 0..p {
            let (r0, c0) = (offs.get_i64(2 * q), offs.get_i64(2 * q + 1));
            for i in 0..br {
                for j in 0..bc {
                    let got = tensor(&out[3]).get_f64(q * 128 + (i * bc + j) as usize);
                    assert_eq!(got, xv(r0 + i, c0 + j).unwrap_or(-7.5), "load at ({r0}, {c0}) [{i}, {j}] of {r}x{c}");
                }
            }
            for i in 0..ri {
                for j in 0..ci {
                    let (di, dj) = (i - r0, j - c0);
                    let inside = (0..br).contains(&di) && (0..bc).contains(&dj);
                    let want = if inside { q as i64 * 10000 + di * 100 + dj } else { -1 };
                    let e = q * r * c + (i * ci + j) as usize;
                    assert_eq!(tensor(&out[4]).get_i64(e), want, "store at ({r0}, {c0}): element [{i}, {j}] of {r}x{c}");
                    let want1 = if di == 0 && (0..bc).contains(&dj) && dj % 3 != 1 { q as i64 * 100 + dj } else { -1 };
                    assert_eq!(tensor(&out[5]).get_i64(e), want1, "masked 1-D store at ({r0}, {c0}): element [{i}, {j}]");
                }
            }
            for j in 0..bc {
                let e = q * 16 + j as usize;
                assert_eq!(tensor(&out[6]).get_f64(e), xv(r0, c0 + j).unwrap_or(2.0), "row view {r0} at {}", c0 + j);
                assert_eq!(tensor(&out[7]).get_i64(e), vv(c0 + j).unwrap_or(-3), "i8 load at {}", c0 + j);
            }
            let z = |o: Option<f64>| o.unwrap_or(0.0);
            let sc = [
                z(xv(r0, c0)),
                z(xv(r0 + br - 1, c0 + bc - 1)),
                (z(xv(r0, c0 + bc)) as f32 + z(xv(ri - 1, ci - 1)) as f32) as f64,
                vv(c0).unwrap_or(0) as f64,
            ];
            for (j, w) in sc.iter().enumerate() {
                assert_eq!(tensor(&out[8]).get_f64(q * 4 + j), *w, "scalar read {j} at ({r0}, {c0})");
            }
        }
    }
}

#[test]
fn gathers_and_masked_scatters_match_reference() {
    let k = compile_op_file("gather_scatter.tile", &checked());
    let (r, c, n, m) = (13usize, 9usize, 300usize, 200usize);
    let inp = generated(tessera_runtime::selftest::inputs::gather_scatter, &[("R", r), ("C", c), ("N", n), ("M", m)]);
    let (ri, ci, mk, dst) = (input(&inp, "ri"), input(&inp, "ci"), input(&inp, "m"), input(&inp, "dst"));
    let mut rng = Rng::new(4);
    let x = random_tensor(DType::F32, &[r, c], &mut rng);
    let xi = random_tensor(DType::I8, &[r, c], &mut rng);
    let s1 = random_tensor(DType::F32, &[m], &mut rng);
    let s2 = random_tensor(DType::I32, &[r, c], &mut rng);
    let s3 = random_tensor(DType::I32, &[m], &mut rng);
    let args = vec![
        Arg::Tensor(x.clone()),
        Arg::Tensor(xi.clone()),
        Arg::Tensor(ri.clone()),
        Arg::Tensor(ci.clone()),
        Arg::Tensor(mk.clone()),
        Arg::Tensor(dst.clone()),
        zeros(DType::F32, &[n]),
        zeros(DType::F32, &[n, 4]),
        zeros(DType::I8, &[n]),
        Arg::Tensor(s1.clone()),
        Arg::Tensor(s2.clone()),
        Arg::Tensor(s3.clone()),
    ];
    let (out, _) = run(&k, args);
    let at = |i: i64, j: i64| ((0..r as i64).contains(&i) && (0..c as i64).contains(&j)).then(|| i as usize * c + j as usize);
    let (mut w1, mut w2, mut w3) = (s1.to_f64_vec(), s2.to_f64_vec(), s3.to_f64_vec());
    for e in 0..n {
        let (i, j, on, d) = (ri.get_i64(e), ci.get_i64(e), mk.get_i64(e) == 1, dst.get_i64(e));
        let g = |t: &HostTensor, i: i64, j: i64, pad: f64| at(i, j).filter(|_| on).map_or(pad, |k| t.get_f64(k));
        assert_eq!(tensor(&out[6]).get_f64(e), g(&x, i, j, -3.0), "g1[{e}]");
        for q in 0..4 {
            assert_eq!(tensor(&out[7]).get_f64(e * 4 + q), g(&x, i, j + q as i64 - 1, 0.0), "g2[{e}, {q}]");
        }
        assert_eq!(tensor(&out[8]).get_f64(e), g(&xi, i, j, 9.0), "g3[{e}]");
        let in_d = (0..m as i64).contains(&d);
        if on && in_d {
            w1[d as usize] = (at(i, j).map_or(0.25, |k| x.get_f64(k)) as f32 * 2.0) as f64;
            if e % 3 == 0 {
                w3[d as usize] = 7.0;
            }
        }
        if let Some(k) = at(i, j).filter(|_| on) {
            w2[k] = e as f64;
        }
    }
    assert_eq!(tensor(&out[9]).to_f64_vec(), w1, "s1");
    assert_eq!(tensor(&out[10]).to_f64_vec(), w2, "s2");
    assert_eq!(tensor(&out[11]).to_f64_vec(), w3, "s3");
}

#[test]
fn atomics_with_duplicates_match_reference() {
    let k = compile_op_file("atomics.tile", &checked());
    let (n, m) = (1000usize, 5usize);
    let inp = generated(tessera_runtime::selftest::inputs::atomics, &[("N", n), ("M", m)]);
    let (idx, vi, vf, mk) = (input(&inp, "idx"), input(&inp, "vi"), input(&inp, "vf"), input(&inp, "m"));
    let mut args = vec![Arg::Tensor(idx.clone()), Arg::Tensor(vi.clone()), Arg::Tensor(vf.clone()), Arg::Tensor(mk.clone())];
    for d in [DType::I32, DType::I32, DType::I32, DType::U32, DType::U32, DType::I64, DType::F32, DType::F32, DType::F32] {
        args.push(zeros(d, &[m]));
    }
    args.push(zeros(DType::I32, &[2]));
    let (out, _) = run(&k, args);
    let (mut ia, mut imx, mut imn, mut umx, mut umn, mut la) = ([0i32; 5], [0i32; 5], [0i32; 5], [0u32; 5], [0u32; 5], [0i64; 5]);
    let (mut fa, mut fmx, mut fmn) = ([0f64; 5], [0f32; 5], [0f32; 5]);
    for e in 0..n {
        let (b, on) = (idx.get_i64(e), mk.get_i64(e) == 1);
        if !on || !(0..m as i64).contains(&b) {
            continue;
        }
        let (b, v, f) = (b as usize, vi.get_i64(e) as i32, vf.get_f64(e) as f32);
        ia[b] = ia[b].wrapping_add(v);
        imx[b] = imx[b].max(v);
        imn[b] = imn[b].min(v);
        umx[b] = umx[b].max(v as u32);
        umn[b] = umn[b].min(v as u32);
        la[b] = la[b].wrapping_add((v as i64) << 31);
        if !f.is_nan() {
            fa[b] += f as f64;
        }
        fmx[b] = fmx[b].max(f);
        fmn[b] = fmn[b].min(f);
    }
    for b in 0..m {
        let g = |o: usize| tensor(&out[o]).get_i64(b);
        assert_eq!([g(4), g(5), g(6), g(7), g(8), g(9)], [ia[b] as i64, imx[b] as i64, imn[b] as i64, umx[b] as i64, umn[b] as i64, la[b]]);
        assert!((tensor(&out[10]).get_f64(b) - fa[b]).abs() < 1e-4, "fa[{b}]");
        assert_eq!(tensor(&out[11]).get_f64(b), fmx[b] as f64, "fmax[{b}] ignores NaN");
        assert_eq!(tensor(&out[12]).get_f64(b), fmn[b] as f64, "fmin[{b}] ignores NaN");
    }
    assert_eq!(tensor(&out[13]).get_i64(0), n.div_ceil(32) as i64, "one scalar atomic per program");
    assert_eq!(tensor(&out[13]).get_i64(1), n as i64, "one atomic per live element of a replicated tile");
}

#[test]
fn program_order_of_own_memory_matches_reference() {
    for b in [1024usize, 256] {
        let k = compile_op_file(
            "order.tile",
            &Options { consts: vec![("B".into(), tessera_compiler::ConstValue::Int(b as i64))], ..checked() },
        );
        let p = 3;
        let mut rng = Rng::new(7);
        let x = random_tensor(DType::F32, &[p, b], &mut rng);
        let a0 = random_tensor(DType::F32, &[p, b], &mut rng);
        let nan = |shape: &[usize]| Arg::Tensor(HostTensor::from_f64(DType::F32, shape, &vec![f64::NAN; shape.iter().product()]));
        let args = vec![Arg::Tensor(x.clone()), nan(&[p, b]), nan(&[p, b]), Arg::Tensor(a0.clone()), nan(&[p, b])];
        let (out, _) = run(&k, args);
        let get = |i: usize| match &out[i] {
            Arg::Tensor(t) => t.to_f64_vec(),
            Arg::Scalar(_) => unreachable!(),
        };
        let (y, w, a, s) = (get(1), get(2), get(3), get(4));
        let f = |v: f64| v as f32 as f64;
        for q in 0..p {
            let xv: Vec<f64> = (0..b).map(|i| x.get_f64(q * b + i)).collect();
            let mut yv = xv.clone();
            for it in 0..16 {
                let g: Vec<f64> = (0..b).map(|i| yv[b - 1 - i]).collect();
                yv = g.iter().map(|&g| f(f(g * 0.5) + it as f64)).collect();
            }
            let mut wv: Vec<f64> = yv.iter().map(|&v| f(v * 2.0)).collect();
            for i in 0..b / 2 {
                wv[i] = f(xv[i] - 1.0);
            }
            let mut av: Vec<f64> = (0..b).map(|i| a0.get_f64(q * b + i)).collect();
            for i in 0..b {
                av[i] = f(av[i] + xv[i]);
            }
            for i in 0..b {
                av[b - 1 - i] = f(av[b - 1 - i] + xv[i]);
            }
            for i in 0..b {
                assert_eq!(y[q * b + i], yv[i], "y[{q}, {i}] (B = {b})");
                assert_eq!(w[q * b + i], wv[i], "w[{q}, {i}] (B = {b})");
                assert_eq!(a[q * b + i], av[i], "a[{q}, {i}] (B = {b})");
                assert_eq!(s[q * b + i], av[(i * 7) % b], "s[{q}, {i}] (B = {b})");
            }
        }
    }
}

#[test]
fn loops_and_returns_match_reference() {
    let k = compile_op_file("loops.tile", &checked());
    let inp = generated(tessera_runtime::selftest::inputs::loops, &[]);
    let n = input(&inp, "n");
    let p = n.numel();
    let poison = |shape: &[usize]| Arg::Tensor(HostTensor::from_i64(DType::I32, shape, &vec![-1; shape.iter().product()]));
    let (out, _) = run(&k, vec![Arg::Tensor(n.clone()), poison(&[p, 4]), poison(&[p, 16])]);
    for q in 0..p {
        let k = n.get_i64(q);
        let mut want = [-1i64; 4];
        let mut t = [-1i64; 16];
        let (mut v, mut steps) = (k, 0);
        while v > 1 && steps < 60 {
            v = if v % 2 == 0 { v / 2 } else { 3 * v + 1 };
            steps += 1;
        }
        want[0] = steps;
        'program: {
            if k < 0 {
                break 'program;
            }
            let mut s = [0i64; 16];
            for i in (0..k).step_by(3) {
                s.iter_mut().enumerate().for_each(|(j, e)| *e += j as i64 * i);
                if i >= 30 {
                    want[1] = i;
                    break 'program;
                }
            }
            t = s;
            let (mut j, mut w) = (0, k);
            while j < 20 {
                j += 1;
                w = w * 7 % 101;
                if w % 5 == 0 {
                    want[2] = j;
                    break 'program;
                }
            }
            want[3] = w;
        }
        let got: Vec<i64> = (0..4).map(|j| tensor(&out[1]).get_i64(q * 4 + j)).collect();
        assert_eq!(got, want, "program {q} (n = {k})");
        let got_t: Vec<i64> = (0..16).map(|j| tensor(&out[2]).get_i64(q * 16 + j)).collect();
        assert_eq!(got_t, t, "program {q} (n = {k})");
    }
}

#[test]
fn index_reductions_and_scans_with_nan_match_reference() {
    let k = compile_op_file("argscan.tile", &checked());
    let (r, c, p) = (37usize, 29usize, 5usize);
    let inp = generated(tessera_runtime::selftest::inputs::argscan, &[("R", r), ("C", c)]);
    let (x, xi) = (input(&inp, "x"), input(&inp, "xi"));
    let xb = random_tensor(DType::BF16, &[r, c], &mut Rng::new(2));
    let mut args = vec![Arg::Tensor(x.clone()), Arg::Tensor(xi.clone()), Arg::Tensor(xb)];
    args.extend([zeros(DType::I32, &[r]), zeros(DType::I32, &[r]), zeros(DType::I32, &[p, 2, 32])]);
    args.extend([zeros(DType::F32, &[r, c]), zeros(DType::Bool, &[r, c]), zeros(DType::I32, &[r]), zeros(DType::I32, &[r])]);
    args.extend([zeros(DType::I32, &[r, c]), zeros(DType::I32, &[r, c]), zeros(DType::U8, &[r, c]), zeros(DType::BF16, &[r, c])]);
    args.extend([zeros(DType::I8, &[r, c, 2]), zeros(DType::I8, &[r, c])]);
    let (out, _) = run(&k, args);
    // Columns past C load as -inf: they are numbers, so they take part.
    let at = |i: usize, j: usize| if j < c { x.get_f64(i * c + j) } else { f64::NEG_INFINITY };
    for i in 0..r {
        let (mut am, mut an) = (None::<usize>, None::<usize>);
        for j in 0..32 {
            let v = at(i, j);
            if v.is_nan() {
                continue;
            }
            if am.is_none_or(|b| v > at(i, b)) {
                am = Some(j);
            }
            if an.is_none_or(|b| v < at(i, b)) {
                an = Some(j);
            }
        }
        assert_eq!(tensor(&out[3]).get_i64(i), am.unwrap_or(0) as i64, "argmax row {i}");
        assert_eq!(tensor(&out[4]).get_i64(i), an.unwrap_or(0) as i64, "argmin row {i}");
        let (mut m, mut s, mut im) = (f64::NAN, 0i32, i32::MIN);
        for j in 0..c {
            m = m.max(at(i, j));
            let e = i * c + j;
            assert_eq!(tensor(&out[7]).get_i64(e), m.is_nan() as i64, "cummax NaN flag [{i}, {j}]");
            assert_eq!(tensor(&out[6]).get_f64(e), if m.is_nan() { 0.0 } else { m }, "cummax [{i}, {j}]");
            let v = xi.get_i64(e) as i32;
            s = s.wrapping_add(v);
            im = im.max(v);
            assert_eq!(tensor(&out[10]).get_i64(e), s as i64, "i32 cumsum wraps [{i}, {j}]");
            assert_eq!(tensor(&out[11]).get_i64(e), im as i64, "i32 cummax [{i}, {j}]");
            let t8 = v as i8;
            assert_eq!([tensor(&out[14]).get_i64(2 * e), tensor(&out[14]).get_i64(2 * e + 1)], [t8 as i64, t8.wrapping_neg() as i64]);
            assert_eq!(tensor(&out[15]).get_i64(e), t8.wrapping_sub(t8 >> 1) as i64, "split(join(…)) [{i}, {j}]");
        }
    }
}

#[test]
fn masked_softmax_rows_never_give_nan() {
    let k = compile_op_file("masked_softmax.tile", &checked());
    let (r, c) = (37usize, 29usize);
    let inp = generated(tessera_runtime::selftest::inputs::masked_softmax, &[("R", r), ("C", c), ("BC", 16)]);
    let (s, keep) = (input(&inp, "s"), input(&inp, "keep"));
    let w = random_tensor(DType::F32, &[c], &mut Rng::new(8));
    let args = vec![
        Arg::Tensor(s.clone()),
        Arg::Tensor(keep.clone()),
        Arg::Tensor(w.clone()),
        zeros(DType::F32, &[r, c]),
        zeros(DType::F32, &[r]),
        zeros(DType::F32, &[r]),
        zeros(DType::F32, &[r]),
        zeros(DType::F32, &[r, c]),
    ];
    let (out, _) = run(&k, args);
    for i in 0..r {
        let live: Vec<usize> = (0..c).filter(|&j| keep.get_i64(i * c + j) == 1).collect();
        let m = live.iter().map(|&j| s.get_f64(i * c + j)).fold(f64::NEG_INFINITY, f64::max);
        let e = |j: usize| if live.contains(&j) { (s.get_f64(i * c + j) - m).exp2() } else { 0.0 };
        let l: f64 = (0..c).map(e).sum();
        // `softmax_rows` takes natural-log scores (`exp`), the others log2-domain ones (`exp2`).
        let en = |j: usize| if live.contains(&j) { (s.get_f64(i * c + j) - m).exp() } else { 0.0 };
        let ln: f64 = (0..c).map(en).sum();
        let o = if l > 0.0 { (0..c).map(|j| e(j) * w.get_f64(j)).sum::<f64>() / l } else { 0.0 };
        let close =
            |name: &str, got: f64, want: f64| assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "{name} row {i}: {got} vs {want}");
        close("l", tensor(&out[4]).get_f64(i), l);
        assert_eq!(tensor(&out[5]).get_f64(i), m, "m row {i}");
        close("o", tensor(&out[6]).get_f64(i), o);
        for j in 0..c {
            close("p", tensor(&out[3]).get_f64(i * c + j), e(j));
            close("sm", tensor(&out[7]).get_f64(i * c + j), if ln > 0.0 { en(j) / ln } else { 0.0 });
        }
    }
}

/// `pick.tile` against plain indexing: columns, a run-time row and element, a bool column, with a
/// last window that runs past the tensor (its padding, 7, is what gets picked there).
#[test]
fn picking_by_index_matches_reference() {
    let k = compile_op_file("pick.tile", &checked());
    let (r, c, p, j) = (37usize, 29usize, 5usize, 3usize);
    let inp = generated(tessera_runtime::selftest::inputs::scan_ties, &[("R", r), ("C", c)]);
    let x = input(&inp, "x");
    let args = vec![
        Arg::Tensor(x.clone()),
        Arg::Scalar(tessera_compiler::Scalar::Int(j as i64)),
        zeros(DType::F32, &[r]),
        zeros(DType::F32, &[r]),
        zeros(DType::F32, &[p, 32]),
        zeros(DType::F32, &[p]),
        zeros(DType::Bool, &[r]),
    ];
    let (out, _) = run(&k, args);
    let at = |i: usize, jj: usize| if i < r && jj < c { x.get_f64(i * c + jj) } else { 7.0 };
    for i in 0..r {
        assert_eq!(tensor(&out[2]).get_f64(i), at(i, 0), "first [{i}]");
        assert_eq!(tensor(&out[3]).get_f64(i), at(i, 31), "last [{i}]");
        assert_eq!(tensor(&out[6]).get_i64(i), i64::from(at(i, 1) > 0.5), "big [{i}]");
    }
    for q in 0..p {
        for jj in 0..32 {
            assert_eq!(tensor(&out[4]).get_f64(q * 32 + jj), at(q * 8 + j, jj), "row [{q}, {jj}]");
        }
        assert_eq!(tensor(&out[5]).get_f64(q), at(q * 8 + j, j + 1), "el [{q}]");
    }
}

/// `pick.tile`'s `slices` (`t[2:6]`, `t[:, -16:]`, `t[j, 8:16]`, a bool corner) against plain
/// indexing, with a last window past the tensor (padding 7).
#[test]
fn slicing_matches_reference() {
    let k = compile_op_kernels("pick.tile", &checked()).into_iter().find(|k| k.meta.name == "slices").expect("the slices kernel");
    let (r, c, p, j) = (37usize, 29usize, 5usize, 3usize);
    let inp = generated(tessera_runtime::selftest::inputs::scan_ties, &[("R", r), ("C", c)]);
    let x = input(&inp, "x");
    let args = vec![
        Arg::Tensor(x.clone()),
        Arg::Scalar(tessera_compiler::Scalar::Int(j as i64)),
        zeros(DType::F32, &[p, 4, 32]),
        zeros(DType::F32, &[r, 16]),
        zeros(DType::F32, &[p, 8]),
        zeros(DType::Bool, &[p, 4, 4]),
    ];
    let (out, _) = run(&k, args);
    let at = |i: usize, jj: usize| if i < r && jj < c { x.get_f64(i * c + jj) } else { 7.0 };
    for q in 0..p {
        for i in 0..4 {
            for jj in 0..32 {
                assert_eq!(tensor(&out[2]).get_f64((q * 4 + i) * 32 + jj), at(q * 8 + 2 + i, jj), "mid [{q}, {i}, {jj}]");
            }
            for jj in 0..4 {
                assert_eq!(tensor(&out[5]).get_i64((q * 4 + i) * 4 + jj), i64::from(at(q * 8 + i, jj) > 0.5), "corner [{q}, {i}, {jj}]");
            }
        }
        for jj in 0..8 {
            assert_eq!(tensor(&out[4]).get_f64(q * 8 + jj), at(q * 8 + j, 8 + jj), "part [{q}, {jj}]");
        }
    }
    for i in 0..r {
        for jj in 0..16 {
            assert_eq!(tensor(&out[3]).get_f64(i * 16 + jj), at(i, 16 + jj), "tail [{i}, {jj}]");
        }
    }
}

/// `std::graph`'s segment reductions (`segment.tile`) against per-node loops over a CSR list:
/// nodes without edges (sum and mean 0, maximum `-inf`), fewer edges than a block, several blocks.
#[test]
fn segment_reductions_match_reference() {
    let k = compile_op_file("segment.tile", &checked());
    let (n, e, f) = (40usize, 300usize, 5usize);
    let inp = generated(tessera_runtime::selftest::gen_segment, &[("N", n), ("E", e)]);
    let rp = input(&inp, "row_ptr");
    let x = random_tensor(DType::F32, &[e, f], &mut Rng::new(37));
    let (out, _) = run(
        &k,
        vec![
            Arg::Tensor(rp.clone()),
            Arg::Tensor(x.clone()),
            zeros(DType::F32, &[n, f]),
            zeros(DType::F32, &[n, f]),
            zeros(DType::F32, &[n, f]),
        ],
    );
    let mut empty = 0;
    for i in 0..n {
        let (a, b) = (rp.get_i64(i) as usize, rp.get_i64(i + 1) as usize);
        empty += usize::from(a == b);
        for c in 0..f {
            let vals: Vec<f64> = (a..b).map(|q| x.get_f64(q * f + c)).collect();
            let sum: f64 = vals.iter().sum();
            let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mean = if vals.is_empty() { 0.0 } else { sum / vals.len() as f64 };
            let at = i * f + c;
            assert!((tensor(&out[2]).get_f64(at) - sum).abs() <= 1e-5 * (1.0 + sum.abs()), "sum [{i}, {c}]");
            assert_eq!(tensor(&out[3]).get_f64(at), max, "max [{i}, {c}]");
            assert!((tensor(&out[4]).get_f64(at) - mean).abs() <= 1e-5 * (1.0 + mean.abs()), "mean [{i}, {c}]");
        }
    }
    assert!(empty > 0 && rp.get_i64(n) as usize == e, "the graph has nodes without edges and all {e} edges");
}

/// `exits.tile` (`break`, `continue`, `loop`) against the same loops in Rust.
#[test]
fn loop_exits_match_reference() {
    let k = compile_op_file("exits.tile", &checked());
    let inp = generated(tessera_runtime::selftest::inputs::loops, &[]);
    let n = input(&inp, "n");
    let p = n.numel();
    let (out, _) = run(&k, vec![Arg::Tensor(n.clone()), zeros(DType::I32, &[p, 4])]);
    for q in 0..p {
        let k = n.get_i64(q);
        let first = (0..k).find(|i| i * 7 % 11 == 10).unwrap_or(-1);
        let mut s = 0;
        for i in (0..k.max(0)).step_by(2) {
            if i % 3 == 0 {
                continue;
            }
            if i > 50 {
                break;
            }
            s += i;
        }
        let (mut v, mut steps) = (k, 0);
        while v > 1 && steps != 40 {
            v = if v % 2 == 0 { v / 2 } else { 3 * v + 1 };
            steps += 1;
        }
        let mut pairs = 0;
        for a in 0..k.min(12) {
            for b in 0..a {
                if (a + b) % 5 == 4 {
                    break;
                }
                pairs += 1;
            }
        }
        let got: Vec<i64> = (0..4).map(|j| tensor(&out[1]).get_i64(q * 4 + j)).collect();
        assert_eq!(got, vec![first, s, steps, pairs], "program {q} (k = {k})");
    }
}

/// `dot_trans.tile`'s kernels (`a` the transpose of a loaded window) against an f64 `atᵀ · b`:
/// every kernel compiles for both targets with `a` read transposed from shared memory (no
/// register transpose), and the interpreter's results are the reference's, rounded.
#[test]
fn transposed_a_dots_match_reference() {
    let (m, n, kk) = (150usize, 100usize, 77usize);
    let mut rng = Rng::new(17);
    for target in [Target::Sm90a, Target::Sm80] {
        let o = Options { target, verify: true, ..Options::default() };
        for k in compile_op_kernels("dot_trans.tile", &o) {
            let lir = tessera_compiler::lir::print_kernel(&k.lir);
            let mma: Vec<&str> = lir.lines().filter(|l| l.contains("local_mma")).map(str::trim).collect();
            assert!(!mma.is_empty() && mma.iter().all(|l| l.contains(" trans @")), "{} on {}: {mma:?}", k.meta.name, target.name());
            let wgmma = target == Target::Sm90a && k.meta.name != "dot_trans_small";
            assert_eq!(mma.iter().all(|l| l.contains(" wgmma")), wgmma, "{}: {mma:?}", k.meta.name);
        }
    }
    let ks = compile_op_kernels("dot_trans.tile", &checked());
    for k in &ks {
        let small = k.meta.name == "dot_trans_small";
        let dt = if small { DType::F16 } else { DType::BF16 };
        let at = random_tensor(dt, &[kk, m], &mut rng);
        let b = random_tensor(dt, &[kk, n], &mut rng);
        let bt = random_tensor(dt, &[n, kk], &mut rng);
        let out = if small { DType::F32 } else { DType::BF16 };
        let mut args = vec![Arg::Tensor(at.clone()), Arg::Tensor(b.clone())];
        if k.meta.name == "dot_trans" {
            args.push(Arg::Tensor(bt.clone()));
            args.push(zeros(out, &[m, n]));
        }
        args.push(zeros(out, &[m, n]));
        let (res, _) = run(k, args);
        let cs: Vec<(usize, bool)> = if k.meta.name == "dot_trans" { vec![(3, false), (4, true)] } else { vec![(2, false)] };
        for (slot, tb) in cs {
            let c = tensor(&res[slot]);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 =
                        (0..kk).map(|q| at.get_f64(q * m + i) * if tb { bt.get_f64(j * kk + q) } else { b.get_f64(q * n + j) }).sum();
                    let got = c.get_f64(i * n + j);
                    let tol = if small { 1e-4 } else { 1e-2 } * (1.0 + want.abs());
                    assert!((got - want).abs() <= tol, "{} [{slot}] ({i}, {j}): {got} vs {want}", k.meta.name);
                }
            }
        }
    }
}

/// `std::random` on the interpreter: Philox gives the Random123 known-answer vectors (the
/// first three elements) and the plain reference's words for random counters and keys; `randint`
/// and `rand` give Triton's values at every index for seeds of 64 bits, negative ones included;
/// `randn` is Box–Muller of the first two words, and its values look normal.
#[test]
fn random_matches_philox_reference() {
    let k = compile_op_file("random.tile", &checked());
    let n = 700;
    let mut rng = Rng::new(7);
    let mut c: Vec<i64> = (0..n).map(|_| (rng.next_u64() >> 32) as i64).collect();
    let mut k0: Vec<i64> = (0..n).map(|_| (rng.next_u64() >> 32) as i64).collect();
    let mut k1: Vec<i64> = (0..n).map(|_| (rng.next_u64() >> 32) as i64).collect();
    // Random123's kat_vectors: counters (c, c ^ 1, c ^ 2, c ^ 3) are (0, 1, 2, 3) here, so the
    // known answers are checked through the reference, which is checked against them below.
    for (i, (ci, a, b)) in
        [(0u32, 0u32, 0u32), (u32::MAX, u32::MAX, u32::MAX), (0x243f_6a88, 0xa409_3822, 0x299f_31d0)].into_iter().enumerate()
    {
        (c[i], k0[i], k1[i]) = (i64::from(ci), i64::from(a), i64::from(b));
    }
    assert_eq!(philox_ref([0; 4], [0; 2]), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
    assert_eq!(philox_ref([u32::MAX; 4], [u32::MAX; 2]), [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]);
    assert_eq!(
        philox_ref([0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344], [0xa409_3822, 0x299f_31d0]),
        [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
    );
    for seed in [0i64, 12345, -1, 0x1234_5678_9abc_def0, i64::MIN] {
        let args = vec![
            ints(DType::U32, &c),
            ints(DType::U32, &k0),
            ints(DType::U32, &k1),
            zeros(DType::U32, &[4, n]),
            zeros(DType::U32, &[n]),
            zeros(DType::F32, &[n]),
            zeros(DType::F32, &[n]),
            zeros(DType::F32, &[n]),
            Arg::Scalar(tessera_compiler::Scalar::Int(seed)),
        ];
        let (out, _) = run(&k, args);
        let key = [seed as u64 as u32, (seed as u64 >> 32) as u32];
        let (mut sum, mut sq) = (0.0f64, 0.0f64);
        for i in 0..n {
            let x = c[i] as u32;
            let want = philox_ref([x, x ^ 1, x ^ 2, x ^ 3], [k0[i] as u32, k1[i] as u32]);
            for (row, w) in want.iter().enumerate() {
                assert_eq!(tensor(&out[3]).get_i64(row * n + i) as u32, *w, "philox word {row} of element {i}");
            }
            let r = philox_ref([i as u32, 0, 0, 0], key);
            assert_eq!(tensor(&out[4]).get_i64(i) as u32, r[0], "randint({seed}, {i})");
            assert_eq!(tensor(&out[5]).get_f64(i) as f32, uniform_ref(r[0]), "rand({seed}, {i})");
            assert_eq!(tensor(&out[7]).get_f64(i) as f32, uniform_ref(r[3]), "rand4x({seed}, {i}).3");
            let (u1, u2) = (f64::from(uniform_ref(r[0])).max(1e-7), f64::from(uniform_ref(r[1])));
            let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            let got = tensor(&out[6]).get_f64(i);
            assert!((got - normal).abs() < 1e-4 * (1.0 + normal.abs()), "randn({seed}, {i}) = {got}, want {normal}");
            sum += got;
            sq += got * got;
        }
        let mean = sum / n as f64;
        let var = sq / n as f64 - mean * mean;
        assert!(mean.abs() < 0.15 && (var - 1.0).abs() < 0.2, "randn({seed}): mean {mean}, variance {var}");
    }
}
