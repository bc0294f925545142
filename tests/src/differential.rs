//! Interpreter results of every example against plain Rust references, on random inputs at sizes
//! that are not multiples of any tile. Tolerances are stated per test.

use crate::common::{compile_example, interp, opts, opts_with_bools, philox_ref, tensor, uniform_ref};
use tessera_compiler::interp::Arg;
use tessera_compiler::{DType, HostTensor, Scalar};
use tessera_runtime::exec::{Rng, random_tensor};

/// An output tensor filled with NaN (`-1` for integers), so that elements the kernel does not
/// write fail every comparison.
fn poisoned(dtype: DType, shape: &[usize]) -> HostTensor {
    let mut t = HostTensor::zeros(dtype, shape);
    for i in 0..t.numel() {
        if dtype.is_float() {
            t.set_f64(i, f64::NAN);
        } else {
            t.set_i64(i, -1);
        }
    }
    t
}

/// Random bf16 `q`, `k`, `v` of `shape` (from `seed`) and the interpreter's `o` from an
/// attention-shaped kernel `k(q, k, v, o, scale)` (`o` starts poisoned).
fn run_qkv(k: &tessera_compiler::CompiledKernel, shape: &[usize], seed: u64, scale: f64) -> [HostTensor; 4] {
    let mut rng = Rng::new(seed);
    let (q, kk, v) = (
        random_tensor(DType::BF16, shape, &mut rng),
        random_tensor(DType::BF16, shape, &mut rng),
        random_tensor(DType::BF16, shape, &mut rng),
    );
    let args = vec![
        Arg::Tensor(q.clone()),
        Arg::Tensor(kk.clone()),
        Arg::Tensor(v.clone()),
        Arg::Tensor(poisoned(DType::BF16, shape)),
        Arg::Scalar(Scalar::Float(scale)),
    ];
    let out = interp(k, args);
    [q, kk, v, tensor(&out[3]).clone()]
}

fn assert_close(name: &str, got: &HostTensor, want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.numel(), want.len(), "{name}: element count");
    let (mut max_abs, mut max_excess) = (0.0f64, 0.0f64);
    for (i, &w) in want.iter().enumerate() {
        let g = got.get_f64(i);
        assert!(!g.is_nan() && (g - w).abs() <= atol + rtol * w.abs(), "{name}: element {i}: got {g}, want {w}");
        max_abs = max_abs.max((g - w).abs());
        max_excess = max_excess.max((g - w).abs() / (atol + rtol * w.abs()).max(f64::MIN_POSITIVE));
    }
    // Shown with `--nocapture`: how much of the tolerance the worst element used.
    eprintln!("{name}: max abs err {max_abs:.2e}, {:.0}% of the tolerance", max_excess * 100.0);
}

/// `a · b` in f64 (`a` is `[m, k]`, `b` `[k, n]`, row-major).
fn gemm_f64(a: &HostTensor, b: &HostTensor, m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| a.get_f64(i * k + p) * b.get_f64(p * n + j)).sum();
        }
    }
    out
}

/// bf16 inputs, f32 accumulation, bf16 output: the reference accumulates the same bf16 inputs in
/// f64, so the only differences are the final rounding to bf16 (relative 2^-8) and summation order.
#[test]
fn matmul_matches_reference() {
    let k = &compile_example("matmul.tile", &opts(&[]))[0];
    for (m, n, kk) in [(257, 129, 95), (1, 1, 1), (130, 3, 200)] {
        let mut rng = Rng::new(7);
        let a = random_tensor(DType::BF16, &[m, kk], &mut rng);
        let b = random_tensor(DType::BF16, &[kk, n], &mut rng);
        let c = HostTensor::zeros(DType::BF16, &[m, n]);
        let out = interp(k, vec![Arg::Tensor(a.clone()), Arg::Tensor(b.clone()), Arg::Tensor(c)]);
        assert_close(&format!("matmul {m}x{n}x{kk}"), tensor(&out[2]), &gemm_f64(&a, &b, m, n, kk), 1e-2, 1e-3);
    }
}

/// Split-K: each slice's product added into `c` (which starts at random values) by window
/// reductions; against f64 sums of the same bf16 inputs. Partial tiles on every edge, K not a
/// multiple of a slice (the last slices empty at K 45).
#[test]
fn matmul_splitk_matches_reference() {
    let k = &compile_example("matmul_splitk.tile", &opts(&[]))[0];
    for (m, n, kk) in [(130, 67, 300), (1, 1, 1), (65, 129, 45)] {
        let mut rng = Rng::new(11);
        let a = random_tensor(DType::BF16, &[m, kk], &mut rng);
        let b = random_tensor(DType::BF16, &[kk, n], &mut rng);
        let c = random_tensor(DType::F32, &[m, n], &mut rng);
        let out = interp(k, vec![Arg::Tensor(a.clone()), Arg::Tensor(b.clone()), Arg::Tensor(c.clone())]);
        let want: Vec<f64> = gemm_f64(&a, &b, m, n, kk).iter().enumerate().map(|(i, p)| c.get_f64(i) + p).collect();
        assert_close(&format!("matmul_splitk {m}x{n}x{kk}"), tensor(&out[2]), &want, 1e-5, 1e-5);
    }
}

/// f32 softmax: exp2 with a rounded log2(e) and f32 sums; relative error under 1e-5.
#[test]
fn softmax_matches_reference() {
    let k = &compile_example("softmax.tile", &opts(&[]))[0];
    for (r, c) in [(37, 1000), (5, 1), (9, 1024), (1, 3)] {
        let mut rng = Rng::new(3);
        let x = random_tensor(DType::F32, &[r, c], &mut rng);
        let out = interp(k, vec![Arg::Tensor(x.clone()), Arg::Tensor(HostTensor::zeros(DType::F32, &[r, c]))]);
        let mut want = vec![0.0; r * c];
        for i in 0..r {
            let row: Vec<f64> = (0..c).map(|j| x.get_f64(i * c + j)).collect();
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
            for j in 0..c {
                want[i * c + j] = (row[j] - m).exp() / s;
            }
        }
        assert_close(&format!("softmax {r}x{c}"), tensor(&out[1]), &want, 1e-5, 1e-7);
    }
}

/// f32 addition is exact after rounding: the interpreter must agree bit for bit.
#[test]
fn vector_add_matches_reference() {
    let k = &compile_example("vector_add.tile", &opts(&[]))[0];
    for n in [5000, 1, 1024, 1025] {
        let mut rng = Rng::new(11);
        let x = random_tensor(DType::F32, &[n], &mut rng);
        let y = random_tensor(DType::F32, &[n], &mut rng);
        let out = interp(k, vec![Arg::Tensor(x.clone()), Arg::Tensor(y.clone()), Arg::Tensor(HostTensor::zeros(DType::F32, &[n]))]);
        let want: Vec<f64> = (0..n).map(|i| (x.get_f64(i) as f32 + y.get_f64(i) as f32) as f64).collect();
        assert_close(&format!("vector_add {n}"), tensor(&out[2]), &want, 0.0, 0.0);
    }
}

/// Dropout keeps element `i` exactly where Triton's `tl.rand(seed, i) > p` (the Philox
/// reference), scaled by `1 / (1 - p)` in f32, for 32- and 64-bit seeds and a partial block;
/// about `p` of the elements are dropped.
#[test]
fn dropout_matches_reference() {
    let k = &compile_example("dropout.tile", &opts(&[]))[0];
    for (n, p, seed) in [(5000usize, 0.3f32, 42i64), (1, 0.5, -1), (3000, 0.9, 0x7_0000_0001)] {
        let mut rng = Rng::new(5);
        let x = random_tensor(DType::F32, &[n], &mut rng);
        let out = interp(
            k,
            vec![
                Arg::Tensor(x.clone()),
                Arg::Tensor(poisoned(DType::F32, &[n])),
                Arg::Scalar(Scalar::Float(f64::from(p))),
                Arg::Scalar(Scalar::Int(seed)),
            ],
        );
        let key = [seed as u64 as u32, (seed as u64 >> 32) as u32];
        let keep: Vec<bool> = (0..n).map(|i| uniform_ref(philox_ref([i as u32, 0, 0, 0], key)[0]) > p).collect();
        let want: Vec<f64> = (0..n).map(|i| if keep[i] { f64::from(x.get_f64(i) as f32 / (1.0 - p)) } else { 0.0 }).collect();
        assert_close(&format!("dropout {n} p {p}"), tensor(&out[1]), &want, 0.0, 0.0);
        if n > 1000 {
            let dropped = keep.iter().filter(|&&k| !k).count() as f64 / n as f64;
            assert!((dropped - f64::from(p)).abs() < 0.05, "dropout {n}: {dropped} dropped for p {p}");
        }
    }
}

/// Launch-time argument checks name the argument and say why.
#[test]
fn bind_errors_name_the_argument() {
    let k = &compile_example("matmul.tile", &opts(&[]))[0];
    let t = |d: DType, s: &[usize]| tessera_compiler::ArgInfo::Tensor { dtype: d, shape: s.to_vec() };
    let cases = [
        (vec![t(DType::BF16, &[4, 8]), t(DType::BF16, &[8, 2])], "takes 3 arguments, got 2"),
        (vec![t(DType::F32, &[4, 8]), t(DType::BF16, &[8, 2]), t(DType::BF16, &[4, 2])], "argument `a`: expected dtype bf16, got f32"),
        (
            vec![t(DType::BF16, &[4, 8]), t(DType::BF16, &[9, 2]), t(DType::BF16, &[4, 2])],
            "dimension `K` disagrees: `a` has K = 8, but `b` has K = 9",
        ),
        (vec![t(DType::BF16, &[4, 8, 1]), t(DType::BF16, &[8, 2]), t(DType::BF16, &[4, 2])], "argument `a`: expected a tensor of rank 2"),
    ];
    for (args, want) in cases {
        let err = k.meta.bind(&args).expect_err(want).to_string();
        assert!(err.contains(want), "got `{err}`, want `{want}`");
    }
    let sm = &compile_example("softmax.tile", &opts(&[]))[0];
    let err = sm.meta.bind(&[t(DType::F32, &[2, 2000]), t(DType::F32, &[2, 2000])]).expect_err("require").to_string();
    assert!(err.contains("requirement `C <= BC` failed (C = 2000)"), "{err}");
}

/// Softmax-weighted sum of value rows: `Σ_j softmax(scale · q·k_j) v_j` over the key rows
/// `keys`, in f64. `q` is one row of `d` values; `k` and `v` are row-major with rows of `d`.
fn attend(q: &[f64], keys: &[usize], k: &[f64], v: &[f64], d: usize, scale: f64) -> Vec<f64> {
    let s: Vec<f64> = keys.iter().map(|&j| scale * (0..d).map(|c| q[c] * k[j * d + c]).sum::<f64>()).collect();
    let p = softmax(&s);
    (0..d).map(|c| keys.iter().zip(&p).map(|(&j, p)| p * v[j * d + c]).sum::<f64>()).collect()
}

/// `exp(s_j) / Σ exp(s)`, in f64 (from the maximum, so nothing overflows).
fn softmax(s: &[f64]) -> Vec<f64> {
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|x| x / z).collect()
}

/// The gradients `(dq, dk, dv)` of `o_i = softmax_j(scale · q_i · k_j) · v` over the keys
/// `keys(i)` of each row `i` of one `[rows, d]` head, in f64, given the output gradient `g`.
fn attention_grads(q: &[f64], k: &[f64], v: &[f64], g: &[f64], d: usize, scale: f64, keys: impl Fn(usize) -> Vec<usize>) -> [Vec<f64>; 3] {
    let rows = q.len() / d;
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; q.len()], vec![0.0; q.len()]);
    let row = |x: &[f64], r: usize| x[r * d..(r + 1) * d].to_vec();
    for i in 0..rows {
        let keys = keys(i);
        let (qr, gr) = (row(q, i), row(g, i));
        let dotp = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let sc: Vec<f64> = keys.iter().map(|&j| scale * dotp(&row(k, j), &qr)).collect();
        let p = softmax(&sc);
        let dp: Vec<f64> = keys.iter().map(|&j| dotp(&row(v, j), &gr)).collect();
        let delta: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
        for (jj, &j) in keys.iter().enumerate() {
            let ds = p[jj] * (dp[jj] - delta);
            for c in 0..d {
                dq[i * d + c] += scale * ds * k[j * d + c];
                dk[j * d + c] += scale * ds * qr[c];
                dv[j * d + c] += p[jj] * gr[c];
            }
        }
    }
    [dq, dk, dv]
}

/// Bounds for bf16 attention-like outputs (a softmax-weighted average of bf16 values in [-1, 1)):
/// the kernel rounds the probabilities to bf16 before the `p · v` product (relative 2^-9 each, so
/// at most 2^-9 · max|v| ≈ 2e-3 absolute on the average) and rounds the output to bf16
/// (relative 2^-9 ≈ 2e-3); the rest (f32 sums, exp2 of a rounded log2 e) is far below.
const ATTN_RTOL: f64 = 4e-3;
const ATTN_ATOL: f64 = 2.5e-3;

/// Flash attention against plain `softmax(q·kᵀ·scale)·v` in f64, causal and not, D = 64 and 128,
/// with sequence lengths that are not multiples of the query or key block (and S = 1), and
/// block shapes where BK > BQ. Tolerances: `ATTN_RTOL`, `ATTN_ATOL` (bf16 rounding of p and o).
#[test]
fn attention_matches_reference() {
    // (B, H, S, D, BQ, BK)
    let cases = [(1, 2, 77, 64, 32, 16), (2, 1, 130, 128, 128, 64), (1, 1, 1, 64, 32, 16), (1, 2, 45, 128, 16, 32), (1, 1, 33, 64, 64, 64)];
    for (bsz, heads, s, d, bq, bk) in cases {
        for causal in [false, true] {
            let k =
                &compile_example("attention.tile", &opts_with_bools(&[("D", d as i64), ("BQ", bq), ("BK", bk)], &[("CAUSAL", causal)]))[0];
            let shape = [bsz, heads, s, d];
            let scale = 1.0 / (d as f64).sqrt();
            let [q, kk, v, o] = run_qkv(k, &shape, 5 + s as u64, scale);
            let (qf, kf, vf) = (q.to_f64_vec(), kk.to_f64_vec(), v.to_f64_vec());
            let mut want = vec![];
            for bh in 0..bsz * heads {
                let base = bh * s * d;
                let (kh, vh) = (&kf[base..base + s * d], &vf[base..base + s * d]);
                for i in 0..s {
                    let keys: Vec<usize> = (0..if causal { i + 1 } else { s }).collect();
                    want.extend(attend(&qf[base + i * d..base + (i + 1) * d], &keys, kh, vh, d, scale));
                }
            }
            let name = format!("attention B{bsz} H{heads} S{s} D{d} BQ{bq} BK{bk} causal={causal}");
            assert_close(&name, &o, &want, ATTN_RTOL, ATTN_ATOL);
        }
    }
}

/// NATTEN's window start (`get_window_start` of its reference kernels, neighborhood size
/// `ks / 2`, odd `ks`), written as NATTEN writes it rather than as the stdlib does.
fn natten_window_start(index: usize, length: usize, ks: usize, dil: usize) -> usize {
    let (i, n, ns) = (index as i64, length as i64, (ks / 2) as i64);
    let d = dil as i64;
    let start = if d <= 1 {
        (i - ns).max(0) + if i + ns >= n { n - i - ns - 1 } else { 0 }
    } else if i - ns * d < 0 {
        i % d
    } else if i + ns * d >= n {
        let imodd = i % d;
        let a = (n / d) * d;
        let b = n - a;
        if imodd < b { n - b + imodd - 2 * ns * d } else { a + imodd - ks as i64 * d }
    } else {
        i - ns * d
    };
    start as usize
}

/// The key positions of query `i` along one axis.
fn natten_window(i: usize, n: usize, ks: usize, dil: usize) -> Vec<usize> {
    let s = natten_window_start(i, n, ks, dil);
    (0..ks).map(|t| s + t * dil).collect()
}

#[test]
fn natten_window_is_inside_and_has_the_query() {
    for n in 1..40 {
        for ks in [1, 3, 5, 7] {
            for dil in 1..5 {
                if n < ks * dil {
                    continue;
                }
                for i in 0..n {
                    let w = natten_window(i, n, ks, dil);
                    assert!(w.iter().all(|&j| j < n && j % dil == i % dil) && w.contains(&i), "n={n} ks={ks} dil={dil} i={i}: {w:?}");
                }
            }
        }
    }
}

/// 1-D neighborhood attention against a loop over each query's NATTEN window, in f64; dilation
/// 1 to 3, sequence lengths that are not tile multiples and the smallest legal one (L = KS·DIL).
/// Tolerances as for attention (the same bf16 roundings).
#[test]
fn na1d_matches_reference() {
    // (B, H, L, D, KS, DIL, TQ, W)
    let cases = [
        (1, 2, 100, 64, 7, 1, 64, 128),
        (1, 1, 7, 64, 7, 1, 64, 128),
        (2, 1, 53, 64, 5, 2, 16, 32),
        (1, 1, 37, 128, 3, 3, 16, 32),
        (1, 1, 15, 64, 5, 3, 16, 32),
        (1, 1, 1, 64, 1, 1, 16, 16),
    ];
    for (bsz, heads, l, d, ks, dil, tq, w) in cases {
        let o = opts(&[("KS", ks as i64), ("DIL", dil as i64), ("TQ", tq), ("W", w), ("D", d as i64)]);
        let k = &compile_example("na1d.tile", &o)[0];
        let shape = [bsz, heads, l, d];
        let scale = 0.5;
        let [q, kk, v, o] = run_qkv(k, &shape, 17 + l as u64, scale);
        let (qf, kf, vf) = (q.to_f64_vec(), kk.to_f64_vec(), v.to_f64_vec());
        let mut want = vec![];
        for bh in 0..bsz * heads {
            let base = bh * l * d;
            for i in 0..l {
                let keys = natten_window(i, l, ks, dil);
                want.extend(attend(
                    &qf[base + i * d..base + (i + 1) * d],
                    &keys,
                    &kf[base..base + l * d],
                    &vf[base..base + l * d],
                    d,
                    scale,
                ));
            }
        }
        assert_close(&format!("na1d B{bsz} H{heads} L{l} D{d} KS{ks} DIL{dil}"), &o, &want, ATTN_RTOL, ATTN_ATOL);
    }
}

/// 2-D neighborhood attention against a loop over each query's KS×KS NATTEN window (the product
/// of the 1-D windows), in f64; non-square, non-tile-multiple extents, the smallest legal ones
/// (X = Y = KS), and dilation 2. Tolerances as for attention.
#[test]
fn na2d_matches_reference() {
    // (B, H, X, Y, D, KS, DIL, TX, TY, WX, WY)
    let cases = [
        (1, 2, 11, 20, 64, 7, 1, 8, 8, 16, 16),
        (1, 1, 7, 7, 64, 7, 1, 8, 8, 16, 16),
        (1, 1, 13, 10, 64, 5, 2, 8, 8, 16, 16),
        (2, 1, 5, 9, 32, 3, 1, 4, 8, 8, 16),
    ];
    for (bsz, heads, x, y, d, ks, dil, tx, ty, wx, wy) in cases {
        let o = opts(&[("KS", ks as i64), ("DIL", dil as i64), ("TX", tx), ("TY", ty), ("WX", wx), ("WY", wy), ("D", d as i64)]);
        let k = &compile_example("na2d.tile", &o)[0];
        let shape = [bsz, heads, x, y, d];
        let scale = 0.3;
        let [q, kk, v, o] = run_qkv(k, &shape, 23 + (x * y) as u64, scale);
        let (qf, kf, vf) = (q.to_f64_vec(), kk.to_f64_vec(), v.to_f64_vec());
        let n = x * y * d;
        let mut want = vec![];
        for bh in 0..bsz * heads {
            let base = bh * n;
            for i in 0..x {
                for j in 0..y {
                    let mut keys = vec![];
                    for ki in natten_window(i, x, ks, dil) {
                        for kj in natten_window(j, y, ks, dil) {
                            keys.push(ki * y + kj);
                        }
                    }
                    let qrow = &qf[base + (i * y + j) * d..base + (i * y + j + 1) * d];
                    want.extend(attend(qrow, &keys, &kf[base..base + n], &vf[base..base + n], d, scale));
                }
            }
        }
        assert_close(&format!("na2d B{bsz} H{heads} X{x} Y{y} D{d} KS{ks} DIL{dil}"), &o, &want, ATTN_RTOL, ATTN_ATOL);
    }
}

/// NA-1D and NA-2D with NATTEN's other window options against the f64 reference over the same
/// windows (`na3d_keys`, the 3-D product with axes of 1): a causal 1-D window with dilation 2,
/// and 2-D windows with a kernel size, a dilation and a causal flag per axis, through both
/// `na2d.tile` and `na2d_stream.tile`.
#[test]
fn na_causal_and_per_axis_windows_match_reference() {
    let run =
        |file: &str, ints: &[(&str, i64)], bools: &[(&str, bool)], dims: [usize; 3], ks: [usize; 3], dil: [usize; 3], causal: [bool; 3]| {
            let k = &compile_example(file, &opts_with_bools(ints, bools))[0];
            let [_, nx, ny] = dims;
            let (bsz, heads, d) = (1usize, 2usize, 64usize);
            let shape: Vec<usize> = if file == "na1d.tile" { vec![bsz, heads, ny, d] } else { vec![bsz, heads, nx, ny, d] };
            let scale = 0.3;
            let [q, kk, v, o] = run_qkv(k, &shape, 61 + (nx * ny) as u64, scale);
            let (qf, kf, vf) = (q.to_f64_vec(), kk.to_f64_vec(), v.to_f64_vec());
            let n = nx * ny * d;
            let mut want = vec![];
            for bh in 0..bsz * heads {
                let base = bh * n;
                for p in 0..nx * ny {
                    let qrow = &qf[base + p * d..base + (p + 1) * d];
                    want.extend(attend(qrow, &na3d_keys(p, dims, ks, dil, causal), &kf[base..base + n], &vf[base..base + n], d, scale));
                }
            }
            assert_close(&format!("{file} {dims:?} k{ks:?} dil{dil:?} causal{causal:?}"), &o, &want, ATTN_RTOL, ATTN_ATOL);
        };
    run(
        "na1d.tile",
        &[("KS", 5), ("DIL", 2), ("TQ", 16), ("W", 32)],
        &[("CAUSAL", true)],
        [1, 1, 53],
        [1, 1, 5],
        [1, 1, 2],
        [false, false, true],
    );
    run("na1d.tile", &[("KS", 7), ("TQ", 64), ("W", 128)], &[("CAUSAL", true)], [1, 1, 100], [1, 1, 7], [1, 1, 1], [false, false, true]);
    let per_axis = [("KX", 5), ("KY", 7), ("DX", 2), ("DY", 1), ("TX", 8), ("TY", 8), ("WX", 16), ("WY", 16)];
    run("na2d.tile", &per_axis, &[("CX", true)], [1, 13, 10], [1, 5, 7], [1, 2, 1], [false, true, false]);
    run("na2d.tile", &per_axis, &[("CY", true)], [1, 11, 20], [1, 5, 7], [1, 2, 1], [false, false, true]);
    let stream = [("KX", 7), ("KY", 5), ("DX", 1), ("DY", 2), ("WX", 16), ("RX", 4)];
    run("na2d_stream.tile", &stream, &[("CX", true), ("CY", true)], [1, 17, 30], [1, 7, 5], [1, 1, 2], [false, true, true]);
}

/// 1-D neighborhood attention training (`na1d_bwd.tile`: a forward saving the log-sum-exp,
/// `delta`, dQ over each query block's keys, dK and dV over each key block's queries) against
/// the f64 reference's output and gradients: a partial last block, the smallest legal length,
/// dilation 2, a kernel of 13 on narrow blocks (a key block's queries then span several query
/// blocks, more near the ends, where windows shift). Tolerances as for NA-2D training.
#[test]
fn na1d_backward_matches_reference() {
    // (B, H, L, D, KS, DIL, TQ, W, TK)
    let cases = [
        (1, 2, 100, 64, 7, 1, 32, 64, 64),
        (1, 1, 7, 32, 7, 1, 32, 64, 64),
        (2, 1, 53, 32, 5, 2, 16, 32, 16),
        (1, 1, 40, 32, 13, 1, 16, 32, 16),
    ];
    for (bsz, heads, l, d, ks, dil, tq, w, tk) in cases {
        let o = opts(&[("KS", ks as i64), ("DIL", dil as i64), ("TQ", tq), ("W", w), ("TK", tk), ("D", d as i64)]);
        let kernels = compile_example("na1d_bwd.tile", &o);
        let shape = [bsz, heads, l, d];
        let mut rng = Rng::new(43 + l as u64);
        let [q, k, v, dout] = std::array::from_fn(|_| random_tensor(DType::BF16, &shape, &mut rng));
        let scale = 0.3;
        let [out, _, dq, dk, dv] = na_training("na1d", &kernels, &q, &k, &v, &dout, scale);
        let (qf, kf, vf, gf) = (q.to_f64_vec(), k.to_f64_vec(), v.to_f64_vec(), dout.to_f64_vec());
        let n = l * d;
        let (mut want_o, mut want): (Vec<f64>, [Vec<f64>; 3]) = Default::default();
        for bh in 0..bsz * heads {
            let r = bh * n..(bh + 1) * n;
            for i in 0..l {
                let keys = natten_window(i, l, ks, dil);
                want_o.extend(attend(&qf[r.start + i * d..r.start + (i + 1) * d], &keys, &kf[r.clone()], &vf[r.clone()], d, scale));
            }
            let g = attention_grads(&qf[r.clone()], &kf[r.clone()], &vf[r.clone()], &gf[r], d, scale, |i| natten_window(i, l, ks, dil));
            for (wv, part) in want.iter_mut().zip(g) {
                wv.extend(part);
            }
        }
        let name = format!("na1d_bwd B{bsz} H{heads} L{l} D{d} KS{ks} DIL{dil}");
        assert_close(&format!("{name} o"), &out, &want_o, ATTN_RTOL, ATTN_ATOL);
        for (what, got, want) in [("dq", &dq, &want[0]), ("dk", &dk, &want[1]), ("dv", &dv, &want[2])] {
            let big = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            assert_close(&format!("{name} {what}"), got, want, 3e-2, 2e-2 * big);
        }
    }
}

/// A neighborhood-attention training file's kernels chained as training runs them
/// (`na1d_bwd.tile`, `na2d_bwd.tile`: `{na}_fwd`, `{na}_bwd_delta`, `{na}_bwd_dq`,
/// `{na}_bwd_dkdv`): the forward (`o`, `lse`), `delta`, then dQ and dK/dV. Returns
/// `[o, lse, dq, dk, dv]`.
fn na_training(
    na: &str,
    kernels: &[tessera_compiler::CompiledKernel],
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    dout: &HostTensor,
    scale: f64,
) -> [HostTensor; 5] {
    let kernel = |n: &str| {
        let n = format!("{na}_{n}");
        kernels.iter().find(|k| k.meta.name == n).unwrap_or_else(|| panic!("no kernel {n}"))
    };
    let shape = q.shape.clone();
    let rows = &shape[..shape.len() - 1];
    let t = |a: &HostTensor| Arg::Tensor(a.clone());
    let sc = Arg::Scalar(Scalar::Float(scale));
    let fwd = interp(kernel("fwd"), vec![t(q), t(k), t(v), t(&poisoned(DType::BF16, &shape)), t(&poisoned(DType::F32, rows)), sc.clone()]);
    let (o, lse) = (tensor(&fwd[3]).clone(), tensor(&fwd[4]).clone());
    let delta = tensor(&interp(kernel("bwd_delta"), vec![t(&o), t(dout), t(&poisoned(DType::F32, rows))])[2]).clone();
    let common = || vec![t(q), t(k), t(v), t(dout), t(&lse), t(&delta)];
    let mut args = common();
    args.extend([t(&poisoned(DType::BF16, &shape)), sc.clone()]);
    let dq = tensor(&interp(kernel("bwd_dq"), args)[6]).clone();
    let mut args = common();
    args.extend([t(&poisoned(DType::BF16, &shape)), t(&poisoned(DType::BF16, &shape)), sc]);
    let dkdv = interp(kernel("bwd_dkdv"), args);
    [o, lse, dq, tensor(&dkdv[6]).clone(), tensor(&dkdv[7]).clone()]
}

/// 2-D neighborhood attention training (`na2d_bwd.tile`: a forward saving the log-sum-exp,
/// `delta`, dQ over each query patch's keys, dK and dV over each key patch's queries) against
/// the f64 reference's output and gradients: partial patches on both axes, the smallest legal
/// extents, dilation 2, kernels of 7, 9 and 13, patches of keys near every edge (windows shift
/// there, so a key patch's queries span more than the interior's). The gradients: 3% relative
/// plus 2% of the largest magnitude (bf16 probabilities, dS and stored gradients).
#[test]
fn na2d_backward_matches_reference() {
    // (B, H, X, Y, D, KS, DIL, TX, TY, WX, WY)
    let cases = [
        (1, 2, 11, 20, 64, 7, 1, 4, 16, 10, 32),
        (1, 1, 7, 7, 32, 7, 1, 4, 16, 10, 32),
        (1, 1, 13, 10, 32, 3, 2, 4, 16, 8, 32),
        (1, 1, 14, 14, 32, 9, 1, 2, 16, 10, 32),
        (1, 1, 29, 35, 64, 13, 1, 4, 16, 16, 32),
    ];
    for (bsz, heads, x, y, d, ks, dil, tx, ty, wx, wy) in cases {
        let o = opts(&[("KS", ks as i64), ("DIL", dil as i64), ("TX", tx), ("TY", ty), ("WX", wx), ("WY", wy), ("D", d as i64)]);
        let kernels = compile_example("na2d_bwd.tile", &o);
        let shape = [bsz, heads, x, y, d];
        let mut rng = Rng::new(41 + (x * y) as u64);
        let [q, k, v, dout] = std::array::from_fn(|_| random_tensor(DType::BF16, &shape, &mut rng));
        let scale = 0.3;
        let [out, _, dq, dk, dv] = na_training("na2d", &kernels, &q, &k, &v, &dout, scale);
        let (qf, kf, vf, gf) = (q.to_f64_vec(), k.to_f64_vec(), v.to_f64_vec(), dout.to_f64_vec());
        let n = x * y * d;
        let keys = |me: usize| -> Vec<usize> {
            let (i, j) = (me / y, me % y);
            natten_window(i, x, ks, dil)
                .into_iter()
                .flat_map(|ki| natten_window(j, y, ks, dil).into_iter().map(move |kj| ki * y + kj))
                .collect()
        };
        let (mut want_o, mut want): (Vec<f64>, [Vec<f64>; 3]) = Default::default();
        for bh in 0..bsz * heads {
            let r = bh * n..(bh + 1) * n;
            for p in 0..x * y {
                want_o.extend(attend(&qf[r.start + p * d..r.start + (p + 1) * d], &keys(p), &kf[r.clone()], &vf[r.clone()], d, scale));
            }
            let g = attention_grads(&qf[r.clone()], &kf[r.clone()], &vf[r.clone()], &gf[r], d, scale, keys);
            for (w, part) in want.iter_mut().zip(g) {
                w.extend(part);
            }
        }
        let name = format!("na2d_bwd B{bsz} H{heads} X{x} Y{y} D{d} KS{ks} DIL{dil}");
        assert_close(&format!("{name} o"), &out, &want_o, ATTN_RTOL, ATTN_ATOL);
        for (what, got, want) in [("dq", &dq, &want[0]), ("dk", &dk, &want[1]), ("dv", &dv, &want[2])] {
            let big = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            assert_close(&format!("{name} {what}"), got, want, 3e-2, 2e-2 * big);
        }
    }
}

/// NA-1D and NA-2D backward with causal and per-axis windows against f64 gradients over the same
/// windows (`na3d_keys` with axes of 1): a causal 1-D window with dilation 2, and a 2-D window
/// causal along X with kernel sizes 5 × 3 and a dilation of 2 along Y.
#[test]
fn na_backward_causal_and_per_axis_windows_match_reference() {
    let check =
        |file: &str, ints: &[(&str, i64)], bools: &[(&str, bool)], dims: [usize; 3], ks: [usize; 3], dil: [usize; 3], causal: [bool; 3]| {
            let kernels = compile_example(file, &opts_with_bools(ints, bools));
            let [_, nx, ny] = dims;
            let d = 32usize;
            let shape: Vec<usize> = if file == "na1d_bwd.tile" { vec![1, 1, ny, d] } else { vec![1, 1, nx, ny, d] };
            let mut rng = Rng::new(71 + (nx * ny) as u64);
            let [q, k, v, dout] = std::array::from_fn(|_| random_tensor(DType::BF16, &shape, &mut rng));
            let scale = 0.3;
            let na = file.trim_end_matches("_bwd.tile");
            let [_, _, dq, dk, dv] = na_training(na, &kernels, &q, &k, &v, &dout, scale);
            let got = [dq, dk, dv];
            let (qf, kf, vf, gf) = (q.to_f64_vec(), k.to_f64_vec(), v.to_f64_vec(), dout.to_f64_vec());
            let want = attention_grads(&qf, &kf, &vf, &gf, d, scale, |p| na3d_keys(p, dims, ks, dil, causal));
            let name = format!("{file} {dims:?} k{ks:?} dil{dil:?} causal{causal:?}");
            for ((what, got), want) in ["dq", "dk", "dv"].into_iter().zip(&got).zip(&want) {
                let big = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                assert_close(&format!("{name} {what}"), got, want, 3e-2, 2e-2 * big);
            }
        };
    check(
        "na1d_bwd.tile",
        &[("KS", 5), ("DIL", 2), ("TQ", 16), ("W", 32), ("TK", 16), ("D", 32)],
        &[("CAUSAL", true)],
        [1, 1, 53],
        [1, 1, 5],
        [1, 1, 2],
        [false, false, true],
    );
    let per_axis = [("KX", 5), ("KY", 3), ("DX", 1), ("DY", 2), ("TX", 4), ("TY", 16), ("WX", 8), ("WY", 32), ("D", 32)];
    check("na2d_bwd.tile", &per_axis, &[("CX", true)], [1, 11, 13], [1, 5, 3], [1, 1, 2], [false, true, false]);
}

/// f32 layer norm against a two-pass f64 reference. Relative 1e-5 with an absolute floor of
/// 1e-5: the output `x̂·w + b` can cancel to near zero, where f32 rounding of `x̂·w` (|x̂| up to
/// about √C) leaves an absolute error of a few 1e-6. C = 1 (variance 0, output = b) included.
#[test]
fn layernorm_matches_reference() {
    let k = &compile_example("layernorm.tile", &opts(&[]))[0];
    for (r, c) in [(37, 1000), (1, 1), (5, 1024), (6, 7)] {
        let mut rng = Rng::new(29 + c as u64);
        let x = random_tensor(DType::F32, &[r, c], &mut rng);
        let w = random_tensor(DType::F32, &[c], &mut rng);
        let b = random_tensor(DType::F32, &[c], &mut rng);
        let eps = 1e-5;
        let out = interp(
            k,
            vec![
                Arg::Tensor(x.clone()),
                Arg::Tensor(w.clone()),
                Arg::Tensor(b.clone()),
                Arg::Tensor(poisoned(DType::F32, &[r, c])),
                Arg::Scalar(Scalar::Float(eps)),
            ],
        );
        let mut want = vec![];
        for i in 0..r {
            let row: Vec<f64> = (0..c).map(|j| x.get_f64(i * c + j)).collect();
            let mean = row.iter().sum::<f64>() / c as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c as f64;
            let inv = 1.0 / (var + eps as f32 as f64).sqrt();
            want.extend((0..c).map(|j| (row[j] - mean) * inv * w.get_f64(j) + b.get_f64(j)));
        }
        assert_close(&format!("layernorm {r}x{c}"), tensor(&out[3]), &want, 1e-5, 1e-5);
    }
}

/// Attention training (forward with log-sum-exp, then delta, dK/dV and dQ) against an f64
/// reference of the gradients: partial blocks (S 77 over blocks of 64 or 128 keys and 32
/// queries: the fused kernel's two loops), causal and not. The gradients are bf16 and come out of
/// f32 sums of up to S products: 3% relative plus an absolute floor of 2% of the largest
/// magnitude.
#[test]
fn attention_backward_matches_reference() {
    let (bsz, heads, s, d) = (1usize, 2usize, 77usize, 64usize);
    for (causal, bk) in [(false, 64), (true, 64), (true, 128)] {
        let o = opts_with_bools(&[("D", d as i64), ("BQ", 32), ("BK", bk)], &[("CAUSAL", causal)]);
        let ks = compile_example("attention_bwd.tile", &o);
        let kernel = |n: &str| ks.iter().find(|k| k.meta.name == n).unwrap_or_else(|| panic!("no kernel {n}"));
        let mut rng = Rng::new(13 + causal as u64 + bk as u64);
        let shape = [bsz, heads, s, d];
        let rows = [bsz, heads, s];
        let (q, k, v, dout) = (
            random_tensor(DType::BF16, &shape, &mut rng),
            random_tensor(DType::BF16, &shape, &mut rng),
            random_tensor(DType::BF16, &shape, &mut rng),
            random_tensor(DType::BF16, &shape, &mut rng),
        );
        let scale = 1.0 / (d as f64).sqrt();
        let t = |x: &HostTensor| Arg::Tensor(x.clone());
        let fwd = interp(
            kernel("attention_fwd"),
            vec![
                t(&q),
                t(&k),
                t(&v),
                t(&poisoned(DType::BF16, &shape)),
                t(&poisoned(DType::F32, &rows)),
                Arg::Scalar(Scalar::Float(scale)),
            ],
        );
        let (o_t, lse) = (tensor(&fwd[3]).clone(), tensor(&fwd[4]).clone());
        let delta = tensor(&interp(kernel("attention_bwd_delta"), vec![t(&o_t), t(&dout), t(&poisoned(DType::F32, &rows))])[2]).clone();
        let grads = |name: &str, outs: usize| {
            let mut args = vec![t(&q), t(&k), t(&v), t(&dout), t(&lse), t(&delta)];
            args.extend((0..outs).map(|_| t(&poisoned(DType::BF16, &shape))));
            args.push(Arg::Scalar(Scalar::Float(scale)));
            interp(kernel(name), args)
        };
        let dkdv = grads("attention_bwd_dkdv", 2);
        let dq = grads("attention_bwd_dq", 1);
        // The reference: P = softmax(scale · q kᵀ) with the mask, in f64.
        let (qf, kf, vf, gf) = (q.to_f64_vec(), k.to_f64_vec(), v.to_f64_vec(), dout.to_f64_vec());
        let keys = |i: usize| (0..if causal { i + 1 } else { s }).collect::<Vec<usize>>();
        let (mut want_o, mut want): (Vec<f64>, [Vec<f64>; 3]) = Default::default();
        for bh in 0..bsz * heads {
            let r = bh * s * d..(bh + 1) * s * d;
            for i in 0..s {
                want_o.extend(attend(&qf[r.start + i * d..r.start + (i + 1) * d], &keys(i), &kf[r.clone()], &vf[r.clone()], d, scale));
            }
            let g = attention_grads(&qf[r.clone()], &kf[r.clone()], &vf[r.clone()], &gf[r], d, scale, keys);
            for (w, part) in want.iter_mut().zip(g) {
                w.extend(part);
            }
        }
        let [want_dq, want_dk, want_dv] = want;
        let check = |name: &str, got: &HostTensor, want: &[f64]| {
            let big = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            assert_close(&format!("{name} (causal {causal}, {bk} keys)"), got, want, 3e-2, 2e-2 * big);
        };
        check("o", &o_t, &want_o);
        check("dq", tensor(&dq[6]), &want_dq);
        check("dk", tensor(&dkdv[6]), &want_dk);
        check("dv", tensor(&dkdv[7]), &want_dv);
        // The one-pass backward: dQ summed by window reductions into a zeroed f32 buffer.
        let mut args = vec![t(&q), t(&k), t(&v), t(&dout), t(&lse), t(&delta)];
        args.extend([t(&poisoned(DType::BF16, &shape)), t(&poisoned(DType::BF16, &shape)), t(&HostTensor::zeros(DType::F32, &shape))]);
        args.push(Arg::Scalar(Scalar::Float(scale)));
        let fused = interp(kernel("attention_bwd_fused"), args);
        let dq_acc = tensor(&fused[8]).clone();
        let conv = interp(
            kernel("attention_bwd_dq_convert"),
            vec![t(&dq_acc), t(&poisoned(DType::BF16, &shape)), Arg::Scalar(Scalar::Float(scale))],
        );
        check("fused dq", tensor(&conv[1]), &want_dq);
        check("fused dk", tensor(&fused[6]), &want_dk);
        check("fused dv", tensor(&fused[7]), &want_dv);
    }
}

/// Linear + GELU for training against f64: the forward's `z` and `y`, then `dz = dy ∘ gelu'(z)`
/// (from the bf16 `z` the forward stored, as the kernels use it) with `dbias`, `dx` and `dw`, at
/// sizes that leave partial tiles on every edge.
#[test]
fn linear_backward_matches_reference() {
    let ks = compile_example("linear_bwd.tile", &opts(&[("BM", 64), ("BN", 64), ("BK", 64)]));
    let kernel = |n: &str| ks.iter().find(|k| k.meta.name == n).unwrap_or_else(|| panic!("no kernel {n}"));
    let (m, k, n) = (70usize, 48usize, 80usize);
    let mut rng = Rng::new(77);
    let x = random_tensor(DType::BF16, &[m, k], &mut rng);
    let w = random_tensor(DType::BF16, &[k, n], &mut rng);
    let bias = random_tensor(DType::F32, &[n], &mut rng);
    let dy = random_tensor(DType::BF16, &[m, n], &mut rng);
    let t = |a: &HostTensor| Arg::Tensor(a.clone());
    let fwd =
        interp(kernel("linear_fwd"), vec![t(&x), t(&w), t(&bias), t(&poisoned(DType::BF16, &[m, n])), t(&poisoned(DType::BF16, &[m, n]))]);
    let z = tensor(&fwd[4]).clone();
    let dzo =
        interp(kernel("linear_bwd_dz"), vec![t(&z), t(&dy), t(&poisoned(DType::BF16, &[m, n])), t(&HostTensor::zeros(DType::F32, &[n]))]);
    let dz_t = tensor(&dzo[2]).clone();
    let dx = interp(kernel("linear_bwd_dx"), vec![t(&w), t(&dz_t), t(&poisoned(DType::BF16, &[m, k]))]);
    let dw = interp(kernel("linear_bwd_dw"), vec![t(&x), t(&dz_t), t(&poisoned(DType::BF16, &[k, n]))]);
    let (xf, wf, zf, gf) = (x.to_f64_vec(), w.to_f64_vec(), z.to_f64_vec(), dy.to_f64_vec());
    let erf = |v: f64| {
        // Abramowitz & Stegun 7.1.26 is enough at these tolerances.
        let t = 1.0 / (1.0 + 0.3275911 * v.abs());
        let p = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
        (1.0 - p * (-v * v).exp()).copysign(v)
    };
    let phi = |v: f64| 0.5 * (1.0 + erf(v / 2f64.sqrt()));
    let gelu_grad = |v: f64| phi(v) + v * (-v * v / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let mut want_z = vec![0.0; m * n];
    let mut want_y = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let zz = (0..k).map(|c| xf[i * k + c] * wf[c * n + j]).sum::<f64>() + bias.get_f64(j);
            want_z[i * n + j] = zz;
            want_y[i * n + j] = zz * phi(zz);
        }
    }
    let dz: Vec<f64> = (0..m * n).map(|e| gf[e] * gelu_grad(zf[e])).collect();
    let want_dx: Vec<f64> = (0..m * k).map(|e| (0..n).map(|j| dz[(e / k) * n + j] * wf[(e % k) * n + j]).sum()).collect();
    let want_dw: Vec<f64> = (0..k * n).map(|e| (0..m).map(|i| xf[i * k + e / n] * dz[i * n + e % n]).sum()).collect();
    let want_db: Vec<f64> = (0..n).map(|j| (0..m).map(|i| dz[i * n + j]).sum()).collect();
    let big = |v: &[f64]| v.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    assert_close("linear_fwd z", &z, &want_z, 1e-2, 1e-2 * big(&want_z));
    assert_close("linear_fwd y", tensor(&fwd[3]), &want_y, 1e-2, 1e-2 * big(&want_y));
    assert_close("linear_bwd dz", &dz_t, &dz, 1e-2, 1e-2 * big(&dz));
    assert_close("linear_bwd dx", tensor(&dx[2]), &want_dx, 1e-2, 1e-2 * big(&want_dx));
    assert_close("linear_bwd dw", tensor(&dw[2]), &want_dw, 1e-2, 1e-2 * big(&want_dw));
    assert_close("linear_bwd dbias", tensor(&dzo[3]), &want_db, 1e-4, 1e-4 * big(&want_db));
}

/// The keys (flat `(z · X + x) · Y + y` positions) of the query at flat position `p` of a
/// `dims` = `[Z, X, Y]` volume in 3-D neighborhood attention: the product of the per-axis
/// windows, NATTEN's (`natten_window`) or, on a causal axis, the query and the `ks - 1`
/// positions `dil` apart before it.
fn na3d_keys(p: usize, dims: [usize; 3], ks: [usize; 3], dil: [usize; 3], causal: [bool; 3]) -> Vec<usize> {
    let [_, nx, ny] = dims;
    let at = [p / (nx * ny), p / ny % nx, p % ny];
    let w: Vec<Vec<usize>> = (0..3)
        .map(|a| {
            if causal[a] {
                (0..ks[a]).filter_map(|t| at[a].checked_sub(t * dil[a])).collect()
            } else {
                natten_window(at[a], dims[a], ks[a], dil[a])
            }
        })
        .collect();
    let mut keys = vec![];
    for &z in &w[0] {
        for &x in &w[1] {
            for &y in &w[2] {
                keys.push((z * nx + x) * ny + y);
            }
        }
    }
    keys
}

/// NA-3D against an f64 reference of NATTEN's windows: clamped windows per axis, and a case
/// with a dilation and causal axes; patches partial on every edge.
#[test]
fn na3d_matches_reference() {
    // (Z, X, Y), kernel sizes, dilations, causal axes, WX.
    type Case = ([usize; 3], [usize; 3], [usize; 3], [bool; 3], i64);
    let cases: [Case; 2] = [([5, 9, 12], [3, 5, 7], [1, 1, 1], [false; 3], 8), ([4, 11, 9], [3, 5, 3], [1, 2, 1], [true, false, true], 12)];
    for ([nz, nx, ny], ks, dil, causal, wx) in cases {
        let consts = [
            ("KZ", ks[0] as i64),
            ("KX", ks[1] as i64),
            ("KY", ks[2] as i64),
            ("DZ", dil[0] as i64),
            ("DX", dil[1] as i64),
            ("DY", dil[2] as i64),
            ("WX", wx),
        ];
        let k = &compile_example("na3d.tile", &opts_with_bools(&consts, &[("CZ", causal[0]), ("CX", causal[1]), ("CY", causal[2])]))[0];
        let (bsz, heads, d) = (1usize, 2usize, 64usize);
        let shape = [bsz, heads, nz, nx, ny, d];
        let scale = 0.125;
        let [q, kk, v, o] = run_qkv(k, &shape, 3 + nx as u64, scale);
        let (qf, kf, vf) = (q.to_f64_vec(), kk.to_f64_vec(), v.to_f64_vec());
        let n = nz * nx * ny;
        let mut want = vec![];
        for bh in 0..bsz * heads {
            let base = bh * n * d;
            for p in 0..n {
                want.extend(attend(
                    &qf[base + p * d..base + (p + 1) * d],
                    &na3d_keys(p, [nz, nx, ny], ks, dil, causal),
                    &kf[base..base + n * d],
                    &vf[base..base + n * d],
                    d,
                    scale,
                ));
            }
        }
        assert_close(&format!("na3d {nz}x{nx}x{ny} k{ks:?} dil{dil:?} causal{causal:?}"), &o, &want, 2e-2, 2e-2);
    }
}

/// NA-3D training (`na3d_bwd.tile`: the forward with log-sum-exp, delta, dQ stored, dK and dV
/// added atomically into f32) against f64 over the 3-D windows: partial patches on every axis,
/// a causal axis with dilation 2, and kernels of 3 × 5 × 7 and 3 × 3 × 3. Tolerances as for
/// attention training (bf16 probabilities and dS feeding the products).
#[test]
fn na3d_backward_matches_reference() {
    // (Z, X, Y), kernel sizes, dilations, causal axes, WX.
    type Case = ([usize; 3], [usize; 3], [usize; 3], [bool; 3], i64);
    let cases: [Case; 2] = [([4, 9, 12], [3, 5, 7], [1, 1, 1], [false; 3], 8), ([3, 11, 9], [3, 3, 3], [1, 2, 1], [true, false, true], 10)];
    for ([nz, nx, ny], ks, dil, causal, wx) in cases {
        let consts = [
            ("KZ", ks[0] as i64),
            ("KX", ks[1] as i64),
            ("KY", ks[2] as i64),
            ("DZ", dil[0] as i64),
            ("DX", dil[1] as i64),
            ("DY", dil[2] as i64),
            ("WX", wx),
        ];
        let ks_ = compile_example("na3d_bwd.tile", &opts_with_bools(&consts, &[("CZ", causal[0]), ("CX", causal[1]), ("CY", causal[2])]));
        let kernel = |n: &str| ks_.iter().find(|k| k.meta.name == n).unwrap_or_else(|| panic!("no kernel {n}"));
        let (bsz, heads, d) = (1usize, 2usize, 64usize);
        let shape = [bsz, heads, nz, nx, ny, d];
        let rows = [bsz, heads, nz, nx, ny];
        let mut rng = Rng::new(47 + nx as u64);
        let [q, k, v, dout] = std::array::from_fn(|_| random_tensor(DType::BF16, &shape, &mut rng));
        let scale = 0.125;
        let t = |a: &HostTensor| Arg::Tensor(a.clone());
        let sc = Arg::Scalar(Scalar::Float(scale));
        let fwd = interp(
            kernel("na3d_fwd"),
            vec![t(&q), t(&k), t(&v), t(&poisoned(DType::BF16, &shape)), t(&poisoned(DType::F32, &rows)), sc.clone()],
        );
        let (o, lse) = (tensor(&fwd[3]).clone(), tensor(&fwd[4]).clone());
        let delta = tensor(&interp(kernel("na3d_bwd_delta"), vec![t(&o), t(&dout), t(&poisoned(DType::F32, &rows))])[2]).clone();
        let common = || vec![t(&q), t(&k), t(&v), t(&dout), t(&lse), t(&delta)];
        let mut args = common();
        args.extend([t(&poisoned(DType::BF16, &shape)), sc.clone()]);
        let dq = interp(kernel("na3d_bwd_dq"), args);
        let mut args = common();
        args.extend([t(&poisoned(DType::BF16, &shape)), t(&poisoned(DType::BF16, &shape)), sc]);
        let dkdv = interp(kernel("na3d_bwd_dkdv"), args);
        let (qf, kf, vf, gf) = (q.to_f64_vec(), k.to_f64_vec(), v.to_f64_vec(), dout.to_f64_vec());
        let n = nz * nx * ny;
        let keys = |p: usize| na3d_keys(p, [nz, nx, ny], ks, dil, causal);
        let (mut want_o, mut want_lse, mut want): (Vec<f64>, Vec<f64>, [Vec<f64>; 3]) = Default::default();
        for bh in 0..bsz * heads {
            let r = bh * n * d..(bh + 1) * n * d;
            for p in 0..n {
                let qr = &qf[r.start + p * d..r.start + (p + 1) * d];
                want_o.extend(attend(qr, &keys(p), &kf[r.clone()], &vf[r.clone()], d, scale));
                // log2 Σ exp2 of the log2-domain scores.
                let s2: Vec<f64> = keys(p)
                    .iter()
                    .map(|&j| {
                        scale
                            * std::f64::consts::LOG2_E
                            * qr.iter().zip(&kf[r.start + j * d..r.start + (j + 1) * d]).map(|(a, b)| a * b).sum::<f64>()
                    })
                    .collect();
                let m = s2.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                want_lse.push(m + s2.iter().map(|x| (x - m).exp2()).sum::<f64>().log2());
            }
            let g = attention_grads(&qf[r.clone()], &kf[r.clone()], &vf[r.clone()], &gf[r], d, scale, keys);
            for (w, part) in want.iter_mut().zip(g) {
                w.extend(part);
            }
        }
        let name = format!("na3d_bwd {nz}x{nx}x{ny} k{ks:?} dil{dil:?} causal{causal:?}");
        assert_close(&format!("{name} o"), &o, &want_o, ATTN_RTOL, ATTN_ATOL);
        assert_close(&format!("{name} lse"), &lse, &want_lse, 1e-5, 1e-4);
        for (what, got, want) in [("dq", tensor(&dq[6]), &want[0]), ("dk", tensor(&dkdv[6]), &want[1]), ("dv", tensor(&dkdv[7]), &want[2])]
        {
            let big = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            assert_close(&format!("{name} {what}"), got, want, 3e-2, 2e-2 * big);
        }
    }
}

/// A random graph as CSR by destination: `n` destinations with no, one or 19 incoming edges (every
/// seventh node each) or up to 5, their sources among `sources` rows.
fn random_csr(n: usize, sources: usize, rng: &mut Rng) -> (Vec<i64>, Vec<i64>) {
    let mut row_ptr = vec![0i64];
    let mut col_idx = vec![];
    for i in 0..n {
        let deg = match i % 7 {
            0 => 0,
            1 => 1,
            2 => 19,
            _ => (rng.next_u64() % 6) as usize,
        };
        col_idx.extend((0..deg).map(|_| (rng.next_u64() % sources as u64) as i64));
        row_ptr.push(col_idx.len() as i64);
    }
    (row_ptr, col_idx)
}

/// The fused GAT layer against f64: a random graph with nodes of no, one and many incoming edges
/// (more than a block of them), heads and features fewer than the tile's.
#[test]
fn gat_matches_reference() {
    let k = &compile_example("gat.tile", &opts(&[]))[0];
    let (n, h, f) = (50usize, 3usize, 10usize);
    let mut rng = Rng::new(101);
    let (row_ptr, col_idx) = random_csr(n, n, &mut rng);
    let e = col_idx.len();
    let feat = random_tensor(DType::F32, &[n, h, f], &mut rng);
    let el = random_tensor(DType::F32, &[n, h], &mut rng);
    let er = random_tensor(DType::F32, &[n, h], &mut rng);
    let slope = 0.2;
    let out = interp(
        k,
        vec![
            Arg::Tensor(HostTensor::from_i64(DType::I32, &[n + 1], &row_ptr)),
            Arg::Tensor(HostTensor::from_i64(DType::I32, &[e], &col_idx)),
            Arg::Tensor(feat.clone()),
            Arg::Tensor(el.clone()),
            Arg::Tensor(er.clone()),
            Arg::Tensor(poisoned(DType::F32, &[n, h, f])),
            Arg::Scalar(Scalar::Float(slope)),
        ],
    );
    let mut want = vec![0.0; n * h * f];
    for i in 0..n {
        let edges = &col_idx[row_ptr[i] as usize..row_ptr[i + 1] as usize];
        for hd in 0..h {
            let s: Vec<f64> = edges
                .iter()
                .map(|&j| {
                    let x = el.get_f64(j as usize * h + hd) + er.get_f64(i * h + hd);
                    if x >= 0.0 { x } else { slope * x }
                })
                .collect();
            for (&j, &a) in edges.iter().zip(&softmax(&s)) {
                for c in 0..f {
                    want[(i * h + hd) * f + c] += a * feat.get_f64((j as usize * h + hd) * f + c);
                }
            }
        }
    }
    assert_close("gat", tensor(&out[5]), &want, 1e-5, 1e-5);
}

/// The GAT layer's backward pass (`gat_bwd.tile`) against f64 gradients of the same layer: nodes
/// with no edges, one and many, repeated sources (several edges add into one row), the forward's
/// output from `gat.tile` on the interpreter.
#[test]
fn gat_backward_matches_reference() {
    let fwd = &compile_example("gat.tile", &opts(&[]))[0];
    let bwd = &compile_example("gat_bwd.tile", &opts(&[]))[0];
    let (n, h, f) = (40usize, 3usize, 10usize);
    let mut rng = Rng::new(109);
    let (row_ptr, col_idx) = random_csr(n, n, &mut rng);
    let e = col_idx.len();
    let [feat, dout] = std::array::from_fn(|_| random_tensor(DType::F32, &[n, h, f], &mut rng));
    let [el, er] = std::array::from_fn(|_| random_tensor(DType::F32, &[n, h], &mut rng));
    let slope = 0.2;
    let t = |x: &HostTensor| Arg::Tensor(x.clone());
    let (rp, ci) = (HostTensor::from_i64(DType::I32, &[n + 1], &row_ptr), HostTensor::from_i64(DType::I32, &[e], &col_idx));
    let o = interp(
        fwd,
        vec![t(&rp), t(&ci), t(&feat), t(&el), t(&er), Arg::Tensor(poisoned(DType::F32, &[n, h, f])), Arg::Scalar(Scalar::Float(slope))],
    );
    let out = tensor(&o[5]).clone();
    let g = interp(
        bwd,
        vec![
            t(&rp),
            t(&ci),
            t(&feat),
            t(&el),
            t(&er),
            t(&out),
            t(&dout),
            Arg::Tensor(HostTensor::zeros(DType::F32, &[n, h, f])),
            Arg::Tensor(HostTensor::zeros(DType::F32, &[n, h])),
            Arg::Tensor(poisoned(DType::F32, &[n, h])),
            Arg::Scalar(Scalar::Float(slope)),
        ],
    );
    let (mut dfeat, mut del, mut der) = (vec![0.0; n * h * f], vec![0.0; n * h], vec![0.0; n * h]);
    for i in 0..n {
        let edges = &col_idx[row_ptr[i] as usize..row_ptr[i + 1] as usize];
        for hd in 0..h {
            let z: Vec<f64> = edges.iter().map(|&j| el.get_f64(j as usize * h + hd) + er.get_f64(i * h + hd)).collect();
            let s: Vec<f64> = z.iter().map(|&x| if x >= 0.0 { x } else { slope * x }).collect();
            let a = softmax(&s);
            let gi = |c: usize| dout.get_f64((i * h + hd) * f + c);
            let da: Vec<f64> = edges.iter().map(|&j| (0..f).map(|c| gi(c) * feat.get_f64((j as usize * h + hd) * f + c)).sum()).collect();
            let sum: f64 = a.iter().zip(&da).map(|(x, y)| x * y).sum();
            for (q, &j) in edges.iter().enumerate() {
                let j = j as usize;
                let dz = a[q] * (da[q] - sum) * if z[q] >= 0.0 { 1.0 } else { slope };
                der[i * h + hd] += dz;
                del[j * h + hd] += dz;
                for c in 0..f {
                    dfeat[(j * h + hd) * f + c] += a[q] * gi(c);
                }
            }
        }
    }
    assert_close("gat_bwd dfeat", tensor(&g[7]), &dfeat, 1e-5, 1e-5);
    assert_close("gat_bwd del", tensor(&g[8]), &del, 1e-5, 1e-5);
    assert_close("gat_bwd der", tensor(&g[9]), &der, 1e-5, 1e-5);
}

/// The RGAT layer (`rgat.tile`) against an f64 loop over each node's incoming edges: nodes with
/// no edges, one edge and many, three relations (one with no edges), an out-of-range relation
/// id (its edge is dropped), softmax across relations.
#[test]
fn rgat_matches_reference() {
    let k = &compile_example("rgat.tile", &opts(&[]))[0];
    let (n, r, h, f) = (40usize, 3usize, 3usize, 10usize);
    let mut rng = Rng::new(103);
    let (row_ptr, col_idx) = random_csr(n, n, &mut rng);
    // Relations 0 and 1; relation 2 has no edges; now and then a bad id.
    let etype: Vec<i64> =
        (0..col_idx.len()).map(|_| if rng.next_u64().is_multiple_of(23) { r as i64 } else { (rng.next_u64() % 2) as i64 }).collect();
    let e = col_idx.len();
    let feat = random_tensor(DType::F32, &[r, n, h, f], &mut rng);
    let qd = random_tensor(DType::F32, &[n, r, h], &mut rng);
    let ks = random_tensor(DType::F32, &[n, r, h], &mut rng);
    let slope = 0.2;
    let t = |x: &HostTensor| Arg::Tensor(x.clone());
    let out = interp(
        k,
        vec![
            Arg::Tensor(HostTensor::from_i64(DType::I32, &[n + 1], &row_ptr)),
            Arg::Tensor(HostTensor::from_i64(DType::I32, &[e], &col_idx)),
            Arg::Tensor(HostTensor::from_i64(DType::I32, &[e], &etype)),
            t(&feat),
            t(&qd),
            t(&ks),
            Arg::Tensor(poisoned(DType::F32, &[n, h, f])),
            Arg::Scalar(Scalar::Float(slope)),
        ],
    );
    let mut want = vec![0.0; n * h * f];
    for i in 0..n {
        let edges: Vec<(usize, usize)> = (row_ptr[i] as usize..row_ptr[i + 1] as usize)
            .filter(|&q| (etype[q] as usize) < r)
            .map(|q| (col_idx[q] as usize, etype[q] as usize))
            .collect();
        for hd in 0..h {
            let s: Vec<f64> = edges
                .iter()
                .map(|&(j, rel)| {
                    let x = qd.get_f64((i * r + rel) * h + hd) + ks.get_f64((j * r + rel) * h + hd);
                    if x >= 0.0 { x } else { slope * x }
                })
                .collect();
            for (&(j, rel), &a) in edges.iter().zip(&softmax(&s)) {
                for c in 0..f {
                    want[(i * h + hd) * f + c] += a * feat.get_f64(((rel * n + j) * h + hd) * f + c);
                }
            }
        }
    }
    assert_close("rgat", tensor(&out[6]), &want, 1e-5, 1e-5);
}

/// The RGAT layer's backward pass (`rgat_bwd.tile`, on the output of `rgat.tile`) against f64
/// gradients: nodes with no edges, one and many, a relation with no edges, out-of-range relation
/// ids (dropped), several edges of one relation into a node (their `dqd` parts add up).
#[test]
fn rgat_backward_matches_reference() {
    let fwd = &compile_example("rgat.tile", &opts(&[]))[0];
    let bwd = &compile_example("rgat_bwd.tile", &opts(&[]))[0];
    let (n, r, h, f) = (40usize, 3usize, 3usize, 10usize);
    let mut rng = Rng::new(113);
    let (row_ptr, col_idx) = random_csr(n, n, &mut rng);
    let etype: Vec<i64> =
        (0..col_idx.len()).map(|_| if rng.next_u64().is_multiple_of(23) { r as i64 } else { (rng.next_u64() % 2) as i64 }).collect();
    let e = col_idx.len();
    let feat = random_tensor(DType::F32, &[r, n, h, f], &mut rng);
    let [qd, ks] = std::array::from_fn(|_| random_tensor(DType::F32, &[n, r, h], &mut rng));
    let dout = random_tensor(DType::F32, &[n, h, f], &mut rng);
    let slope = 0.2;
    let t = |x: &HostTensor| Arg::Tensor(x.clone());
    let graph = [
        Arg::Tensor(HostTensor::from_i64(DType::I32, &[n + 1], &row_ptr)),
        Arg::Tensor(HostTensor::from_i64(DType::I32, &[e], &col_idx)),
        Arg::Tensor(HostTensor::from_i64(DType::I32, &[e], &etype)),
    ];
    let mut args = graph.to_vec();
    args.extend([t(&feat), t(&qd), t(&ks), Arg::Tensor(poisoned(DType::F32, &[n, h, f])), Arg::Scalar(Scalar::Float(slope))]);
    let out = tensor(&interp(fwd, args)[6]).clone();
    let mut args = graph.to_vec();
    args.extend([
        t(&feat),
        t(&qd),
        t(&ks),
        t(&out),
        t(&dout),
        Arg::Tensor(HostTensor::zeros(DType::F32, &[r, n, h, f])),
        Arg::Tensor(HostTensor::zeros(DType::F32, &[n, r, h])),
        Arg::Tensor(HostTensor::zeros(DType::F32, &[n, r, h])),
        Arg::Scalar(Scalar::Float(slope)),
    ]);
    let g = interp(bwd, args);
    let (mut dfeat, mut dqd, mut dks) = (vec![0.0; r * n * h * f], vec![0.0; n * r * h], vec![0.0; n * r * h]);
    for i in 0..n {
        let edges: Vec<(usize, usize)> = (row_ptr[i] as usize..row_ptr[i + 1] as usize)
            .filter(|&q| (etype[q] as usize) < r)
            .map(|q| (col_idx[q] as usize, etype[q] as usize))
            .collect();
        for hd in 0..h {
            let z: Vec<f64> =
                edges.iter().map(|&(j, rel)| qd.get_f64((i * r + rel) * h + hd) + ks.get_f64((j * r + rel) * h + hd)).collect();
            let a = softmax(&z.iter().map(|&x| if x >= 0.0 { x } else { slope * x }).collect::<Vec<_>>());
            let gi = |c: usize| dout.get_f64((i * h + hd) * f + c);
            let fj = |j: usize, rel: usize, c: usize| feat.get_f64(((rel * n + j) * h + hd) * f + c);
            let da: Vec<f64> = edges.iter().map(|&(j, rel)| (0..f).map(|c| gi(c) * fj(j, rel, c)).sum()).collect();
            let sum: f64 = a.iter().zip(&da).map(|(x, y)| x * y).sum();
            for (q, &(j, rel)) in edges.iter().enumerate() {
                let dz = a[q] * (da[q] - sum) * if z[q] >= 0.0 { 1.0 } else { slope };
                dqd[(i * r + rel) * h + hd] += dz;
                dks[(j * r + rel) * h + hd] += dz;
                for c in 0..f {
                    dfeat[((rel * n + j) * h + hd) * f + c] += a[q] * gi(c);
                }
            }
        }
    }
    assert_close("rgat_bwd dfeat", tensor(&g[8]), &dfeat, 1e-5, 1e-5);
    assert_close("rgat_bwd dqd", tensor(&g[9]), &dqd, 1e-5, 1e-5);
    assert_close("rgat_bwd dks", tensor(&g[10]), &dks, 1e-5, 1e-5);
}

/// The HGT layer's attention (`hgt.tile`) against an f64 loop: destinations with no edges, one
/// and many, more source rows than destinations (one per edge type and source), per-edge priors.
#[test]
fn hgt_matches_reference() {
    let k = &compile_example("hgt.tile", &opts(&[]))[0];
    let (n, rows, h, d) = (30usize, 70usize, 3usize, 10usize);
    let mut rng = Rng::new(107);
    let (row_ptr, col_idx) = random_csr(n, rows, &mut rng);
    let e = col_idx.len();
    let prior = random_tensor(DType::F32, &[e, h], &mut rng);
    let q = random_tensor(DType::F32, &[n, h, d], &mut rng);
    let kk = random_tensor(DType::F32, &[rows, h, d], &mut rng);
    let v = random_tensor(DType::F32, &[rows, h, d], &mut rng);
    let scale = 1.0 / (d as f64).sqrt();
    let t = |x: &HostTensor| Arg::Tensor(x.clone());
    let out = interp(
        k,
        vec![
            Arg::Tensor(HostTensor::from_i64(DType::I32, &[n + 1], &row_ptr)),
            Arg::Tensor(HostTensor::from_i64(DType::I32, &[e], &col_idx)),
            t(&prior),
            t(&q),
            t(&kk),
            t(&v),
            Arg::Tensor(poisoned(DType::F32, &[n, h, d])),
            Arg::Scalar(Scalar::Float(scale)),
        ],
    );
    let mut want = vec![0.0; n * h * d];
    for i in 0..n {
        let edges = row_ptr[i] as usize..row_ptr[i + 1] as usize;
        for hd in 0..h {
            let s: Vec<f64> = edges
                .clone()
                .map(|q_e| {
                    let j = col_idx[q_e] as usize;
                    let dotp: f64 = (0..d).map(|c| q.get_f64((i * h + hd) * d + c) * kk.get_f64((j * h + hd) * d + c)).sum();
                    dotp * prior.get_f64(q_e * h + hd) * scale
                })
                .collect();
            for (q_e, &a) in edges.clone().zip(&softmax(&s)) {
                let j = col_idx[q_e] as usize;
                for c in 0..d {
                    want[(i * h + hd) * d + c] += a * v.get_f64((j * h + hd) * d + c);
                }
            }
        }
    }
    assert_close("hgt", tensor(&out[6]), &want, 1e-5, 1e-5);
}

/// The HGT layer's backward pass (`hgt_bwd.tile`, on the output of `hgt.tile`) against f64
/// gradients: destinations with no edges, one and many, more source rows than destinations,
/// per-edge priors (their gradient stored per edge).
#[test]
fn hgt_backward_matches_reference() {
    let fwd = &compile_example("hgt.tile", &opts(&[]))[0];
    let bwd = &compile_example("hgt_bwd.tile", &opts(&[]))[0];
    let (n, rows, h, d) = (30usize, 70usize, 3usize, 10usize);
    let mut rng = Rng::new(127);
    let (row_ptr, col_idx) = random_csr(n, rows, &mut rng);
    let e = col_idx.len();
    let prior = random_tensor(DType::F32, &[e, h], &mut rng);
    let [q, dout] = std::array::from_fn(|_| random_tensor(DType::F32, &[n, h, d], &mut rng));
    let [kk, v] = std::array::from_fn(|_| random_tensor(DType::F32, &[rows, h, d], &mut rng));
    let scale = 1.0 / (d as f64).sqrt();
    let t = |x: &HostTensor| Arg::Tensor(x.clone());
    let graph =
        [Arg::Tensor(HostTensor::from_i64(DType::I32, &[n + 1], &row_ptr)), Arg::Tensor(HostTensor::from_i64(DType::I32, &[e], &col_idx))];
    let mut args = graph.to_vec();
    args.extend([t(&prior), t(&q), t(&kk), t(&v), Arg::Tensor(poisoned(DType::F32, &[n, h, d])), Arg::Scalar(Scalar::Float(scale))]);
    let out = tensor(&interp(fwd, args)[6]).clone();
    let mut args = graph.to_vec();
    args.extend([
        t(&prior),
        t(&q),
        t(&kk),
        t(&v),
        t(&out),
        t(&dout),
        Arg::Tensor(poisoned(DType::F32, &[n, h, d])),
        Arg::Tensor(HostTensor::zeros(DType::F32, &[rows, h, d])),
        Arg::Tensor(HostTensor::zeros(DType::F32, &[rows, h, d])),
        Arg::Tensor(poisoned(DType::F32, &[e, h])),
        Arg::Scalar(Scalar::Float(scale)),
    ]);
    let g = interp(bwd, args);
    let (mut dq, mut dk, mut dv, mut dprior) = (vec![0.0; n * h * d], vec![0.0; rows * h * d], vec![0.0; rows * h * d], vec![0.0; e * h]);
    for i in 0..n {
        let edges: Vec<usize> = (row_ptr[i] as usize..row_ptr[i + 1] as usize).collect();
        for hd in 0..h {
            let qi = |c: usize| q.get_f64((i * h + hd) * d + c);
            let gi = |c: usize| dout.get_f64((i * h + hd) * d + c);
            let row = |x: &HostTensor, j: usize, c: usize| x.get_f64((j * h + hd) * d + c);
            let tt: Vec<f64> = edges.iter().map(|&q_e| (0..d).map(|c| qi(c) * row(&kk, col_idx[q_e] as usize, c)).sum()).collect();
            let pe: Vec<f64> = edges.iter().map(|&q_e| prior.get_f64(q_e * h + hd) * scale).collect();
            let a = softmax(&tt.iter().zip(&pe).map(|(x, p)| x * p).collect::<Vec<_>>());
            let da: Vec<f64> = edges.iter().map(|&q_e| (0..d).map(|c| gi(c) * row(&v, col_idx[q_e] as usize, c)).sum()).collect();
            let sum: f64 = a.iter().zip(&da).map(|(x, y)| x * y).sum();
            for (k_e, &q_e) in edges.iter().enumerate() {
                let j = col_idx[q_e] as usize;
                let ds = a[k_e] * (da[k_e] - sum);
                dprior[q_e * h + hd] = ds * tt[k_e] * scale;
                for c in 0..d {
                    dq[(i * h + hd) * d + c] += ds * pe[k_e] * row(&kk, j, c);
                    dk[(j * h + hd) * d + c] += ds * pe[k_e] * qi(c);
                    dv[(j * h + hd) * d + c] += a[k_e] * gi(c);
                }
            }
        }
    }
    assert_close("hgt_bwd dq", tensor(&g[8]), &dq, 1e-5, 1e-5);
    assert_close("hgt_bwd dk", tensor(&g[9]), &dk, 1e-5, 1e-5);
    assert_close("hgt_bwd dv", tensor(&g[10]), &dv, 1e-5, 1e-5);
    assert_close("hgt_bwd dprior", tensor(&g[11]), &dprior, 1e-5, 1e-5);
}

/// The layer-norm backward pass against an f64 reference: `dx` per row, `dw`/`db` summed over
/// rows by several programs' atomics (R = 37 with 4 rows per block and 2 blocks per program: the
/// last program stops early), at widths below and at the tile's.
#[test]
fn layernorm_backward_matches_reference() {
    let k = &compile_example("layernorm_bwd.tile", &opts(&[("RPP", 2)]))[0];
    for (r, c) in [(37, 1000), (1, 1), (9, 1024)] {
        let mut rng = Rng::new(41 + c as u64);
        let x = random_tensor(DType::F32, &[r, c], &mut rng);
        let w = random_tensor(DType::F32, &[c], &mut rng);
        let dy = random_tensor(DType::F32, &[r, c], &mut rng);
        let eps = 1e-5;
        let out = interp(
            k,
            vec![
                Arg::Tensor(x.clone()),
                Arg::Tensor(w.clone()),
                Arg::Tensor(dy.clone()),
                Arg::Tensor(poisoned(DType::F32, &[r, c])),
                Arg::Tensor(HostTensor::zeros(DType::F32, &[c])),
                Arg::Tensor(HostTensor::zeros(DType::F32, &[c])),
                Arg::Scalar(Scalar::Float(eps)),
            ],
        );
        let (mut dx, mut dw, mut db) = (vec![], vec![0.0; c], vec![0.0; c]);
        for i in 0..r {
            let row: Vec<f64> = (0..c).map(|j| x.get_f64(i * c + j)).collect();
            let mean = row.iter().sum::<f64>() / c as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c as f64;
            let rstd = 1.0 / (var + eps as f32 as f64).sqrt();
            let xhat: Vec<f64> = row.iter().map(|v| (v - mean) * rstd).collect();
            let g: Vec<f64> = (0..c).map(|j| dy.get_f64(i * c + j) * w.get_f64(j)).collect();
            let c1 = (0..c).map(|j| g[j] * xhat[j]).sum::<f64>() / c as f64;
            let c2 = g.iter().sum::<f64>() / c as f64;
            dx.extend((0..c).map(|j| rstd * (g[j] - c2 - xhat[j] * c1)));
            for j in 0..c {
                dw[j] += dy.get_f64(i * c + j) * xhat[j];
                db[j] += dy.get_f64(i * c + j);
            }
        }
        assert_close(&format!("layernorm_bwd dx {r}x{c}"), tensor(&out[3]), &dx, 1e-4, 1e-4);
        assert_close(&format!("layernorm_bwd dw {r}x{c}"), tensor(&out[4]), &dw, 1e-4, 1e-4);
        assert_close(&format!("layernorm_bwd db {r}x{c}"), tensor(&out[5]), &db, 1e-5, 1e-5);
    }
}

/// erf to about 1e-7 absolute (Abramowitz & Stegun 7.1.26), plenty for bf16 GELU outputs.
fn erf_approx(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.3275911 * x.abs());
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * (-x * x).exp();
    y.copysign(x)
}

/// The GEMM with a fused bias and activation epilogue, on a 1-D swizzled grid (an unwritten or
/// twice-computed tile would show as NaN or a mismatch): identity, GELU and SiLU, odd sizes, a
/// group that does not divide the tile rows, and the 1×1×1 edge. bf16 output: relative 2^-8
/// plus 1e-5 absolute for the f32 accumulation of K bf16 products.
#[test]
fn linear_matches_reference() {
    for act in [0, 1, 2] {
        let k = &compile_example("linear.tile", &opts(&[("ACT", act), ("BM", 32), ("BN", 32), ("BK", 16), ("GROUP", 3)]))[0];
        for (m, n, kk) in [(130, 77, 45), (1, 1, 1), (200, 33, 64)] {
            let mut rng = Rng::new(31 + m as u64);
            let a = random_tensor(DType::BF16, &[m, kk], &mut rng);
            let b = random_tensor(DType::BF16, &[kk, n], &mut rng);
            let bias = random_tensor(DType::F32, &[n], &mut rng);
            let out = interp(
                k,
                vec![
                    Arg::Tensor(a.clone()),
                    Arg::Tensor(b.clone()),
                    Arg::Tensor(bias.clone()),
                    Arg::Tensor(poisoned(DType::BF16, &[m, n])),
                ],
            );
            let mut want = vec![0.0; m * n];
            for i in 0..m {
                for j in 0..n {
                    let z = (0..kk).map(|p| a.get_f64(i * kk + p) * b.get_f64(p * n + j)).sum::<f64>() + bias.get_f64(j);
                    want[i * n + j] = match act {
                        1 => 0.5 * z * (1.0 + erf_approx(z / 2f64.sqrt())),
                        2 => z / (1.0 + (-z).exp()),
                        _ => z,
                    };
                }
            }
            assert_close(&format!("linear act={act} {m}x{n}x{kk}"), tensor(&out[3]), &want, 4e-3, 1e-5);
        }
    }
}

/// Every case of `tessera selftest`'s table builds its inputs and runs on the interpreter, and
/// writes every element of its poisoned outputs (the GPU half of the self-test needs a GPU).
#[test]
fn selftest_cases_run_on_the_interpreter() {
    use tessera_runtime::selftest::{CASES, run_case};
    for (n, case) in CASES.iter().enumerate() {
        let r = run_case(case, None, tessera_compiler::Target::Sm90a, tessera_compiler::Codegen::Ptx, n as u64);
        assert!(r.passed, "self-test case `{}`: {}", case.name, r.detail);
    }
}

/// Asserts `|got - want| <= tol` element by element (NaN fails).
fn assert_within(name: &str, got: &HostTensor, want: &[f64], tol: &[f64]) {
    assert_eq!(got.numel(), want.len(), "{name}: element count");
    let mut worst = 0.0f64;
    for (i, (&w, &t)) in want.iter().zip(tol).enumerate() {
        let g = got.get_f64(i);
        assert!(!g.is_nan() && (g - w).abs() <= t, "{name}: element {i}: got {g}, want {w} (tolerance {t:e})");
        worst = worst.max((g - w).abs() / t.max(f64::MIN_POSITIVE));
    }
    eprintln!("{name}: {:.0}% of the tolerance", worst * 100.0);
}

/// f32 sums in another order than the reference's: each output may be off by a few f32 roundings
/// of the partial sums, bounded by `1e-6 · Σ|term|` (2^-24 ≈ 6e-8 per addition, for up to ~16
/// additions in a chain) plus the same of the starting value.
const SUM_RTOL: f64 = 1e-6;

/// SpMM over random valid CSR structures (skewed row lengths: empty rows and rows longer than
/// one edge block), F not a multiple of BF, and one-row / one-entry edges, against
/// `y[r, f] = Σ_e vals[e]·x[col_idx[e], f]` in f64. Tolerance: `SUM_RTOL · Σ|term|`.
#[test]
fn spmm_csr_matches_reference() {
    use tessera_runtime::selftest::csr;
    let k = &compile_example("spmm_csr.tile", &opts(&[]))[0];
    // (R, N, E, F)
    for (r, n, e, f) in [(37, 50, 600, 70), (1, 1, 1, 1), (5, 3, 9, 64), (64, 100, 1000, 129)] {
        let mut rng = Rng::new(41 + e as u64);
        let (row_ptr, col_idx) = csr(r, n, e, &mut rng);
        let vals = random_tensor(DType::F32, &[e], &mut rng);
        let x = random_tensor(DType::F32, &[n, f], &mut rng);
        let out = interp(
            k,
            vec![
                Arg::Tensor(row_ptr.clone()),
                Arg::Tensor(col_idx.clone()),
                Arg::Tensor(vals.clone()),
                Arg::Tensor(x.clone()),
                Arg::Tensor(poisoned(DType::F32, &[r, f])),
            ],
        );
        let (mut want, mut tol) = (vec![0.0; r * f], vec![0.0; r * f]);
        for row in 0..r {
            for ed in row_ptr.get_i64(row) as usize..row_ptr.get_i64(row + 1) as usize {
                let c = col_idx.get_i64(ed) as usize;
                for j in 0..f {
                    let term = vals.get_f64(ed) * x.get_f64(c * f + j);
                    want[row * f + j] += term;
                    tol[row * f + j] += SUM_RTOL * term.abs();
                }
            }
        }
        assert_within(&format!("spmm_csr R{r} N{n} E{e} F{f}"), tensor(&out[4]), &want, &tol);
    }
}

/// An RGCN layer on random graphs (edges sorted by relation, one relation without edges,
/// skewed destinations so atomics collide, relation edge counts not multiples of BE), split into
/// edge tiles on the host as the brief describes, against
/// `out[dst[e]] += norm[e]·(x[src[e]]·w[rel(e)])` in f64 from a random starting `out`.
/// Tolerance: `SUM_RTOL · (|out₀| + Σ_e Σ_k |norm·x·w|)`.
#[test]
fn rgcn_matches_reference() {
    use tessera_runtime::selftest::rgcn_graph;
    for (fi, be, bn) in [(128, 64, 64), (32, 16, 32)] {
        let k = &compile_example("rgcn.tile", &opts(&[("FI", fi as i64), ("BE", be as i64), ("BN", bn)]))[0];
        // (N, RELS, E, FO)
        for (n, rels, e, fo) in [(40, 4, 300, 70), (1, 2, 1, 1), (9, 3, 17, 33)] {
            let mut rng = Rng::new(43 + e as u64);
            let [src, dst, tile_rel, tile_start, tile_end] = rgcn_graph(n, rels, e, be, &mut rng);
            let rel_of = |ed: usize| -> usize {
                (0..tile_rel.numel())
                    .find(|&t| (tile_start.get_i64(t)..tile_end.get_i64(t)).contains(&(ed as i64)))
                    .map(|t| tile_rel.get_i64(t) as usize)
                    .expect("every edge is in a tile")
            };
            let x = random_tensor(DType::F32, &[n, fi], &mut rng);
            let w = random_tensor(DType::F32, &[rels, fi, fo], &mut rng);
            let norm = random_tensor(DType::F32, &[e], &mut rng);
            let out0 = random_tensor(DType::F32, &[n, fo], &mut rng);
            let out = interp(
                k,
                vec![
                    Arg::Tensor(x.clone()),
                    Arg::Tensor(w.clone()),
                    Arg::Tensor(src.clone()),
                    Arg::Tensor(dst.clone()),
                    Arg::Tensor(norm.clone()),
                    Arg::Tensor(tile_rel.clone()),
                    Arg::Tensor(tile_start.clone()),
                    Arg::Tensor(tile_end.clone()),
                    Arg::Tensor(out0.clone()),
                ],
            );
            let mut want = out0.to_f64_vec();
            let mut tol: Vec<f64> = want.iter().map(|v| SUM_RTOL * v.abs()).collect();
            for ed in 0..e {
                let (s, d, r) = (src.get_i64(ed) as usize, dst.get_i64(ed) as usize, rel_of(ed));
                for j in 0..fo {
                    let terms = (0..fi).map(|c| norm.get_f64(ed) * x.get_f64(s * fi + c) * w.get_f64((r * fi + c) * fo + j));
                    let (sum, mag) = terms.fold((0.0, 0.0), |(a, m), t: f64| (a + t, m + t.abs()));
                    want[d * fo + j] += sum;
                    tol[d * fo + j] += SUM_RTOL * mag;
                }
            }
            assert_within(&format!("rgcn FI{fi} BE{be} N{n} RELS{rels} E{e} FO{fo}"), tensor(&out[8]), &want, &tol);
        }
    }
}

/// The embedding-bag backward scatter: repeated indices (their rows add up), a starting
/// gradient that must be kept, F not a multiple of BF, out-of-range indices (-1 and V, which
/// must be dropped), and the one-lookup edge; against the f64 sum. Tolerance: `SUM_RTOL ·
/// (|g₀| + Σ|added|)`.
#[test]
fn embedding_bag_bwd_matches_reference() {
    use tessera_runtime::selftest::embedding_bag;
    let k = &compile_example("embedding_bag_bwd.tile", &opts(&[]))[0];
    // (I, V, NB, F, out of range)
    for (i, v, nb, f, oob) in [(100, 10, 7, 70, false), (100, 10, 7, 70, true), (1, 1, 1, 1, false), (33, 50, 33, 65, true)] {
        let mut rng = Rng::new(47 + i as u64);
        let (idx, bag) = embedding_bag(i, v, nb, oob, &mut rng);
        let grad_out = random_tensor(DType::F32, &[nb, f], &mut rng);
        let gw0 = random_tensor(DType::F32, &[v, f], &mut rng);
        let out =
            interp(k, vec![Arg::Tensor(idx.clone()), Arg::Tensor(bag.clone()), Arg::Tensor(grad_out.clone()), Arg::Tensor(gw0.clone())]);
        let mut want = gw0.to_f64_vec();
        let mut tol: Vec<f64> = want.iter().map(|x| SUM_RTOL * x.abs()).collect();
        for p in 0..i {
            let (row, b) = (idx.get_i64(p), bag.get_i64(p) as usize);
            if row < 0 || row >= v as i64 {
                continue;
            }
            for j in 0..f {
                let g = grad_out.get_f64(b * f + j);
                want[row as usize * f + j] += g;
                tol[row as usize * f + j] += SUM_RTOL * g.abs();
            }
        }
        assert_within(&format!("embedding_bag_bwd I{i} V{v} NB{nb} F{f} oob={oob}"), tensor(&out[3]), &want, &tol);
    }
}
