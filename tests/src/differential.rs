//! Interpreter results of every example against plain Rust references, on random inputs at sizes
//! that are not multiples of any tile. Tolerances are stated per test.

use crate::common::{compile_example, interp, opts, tensor};
use tessera_compiler::interp::Arg;
use tessera_compiler::{DType, HostTensor};
use tessera_runtime::exec::{Rng, random_tensor};

fn assert_close(name: &str, got: &HostTensor, want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.numel(), want.len(), "{name}: element count");
    for (i, &w) in want.iter().enumerate() {
        let g = got.get_f64(i);
        assert!(!g.is_nan() && (g - w).abs() <= atol + rtol * w.abs(), "{name}: element {i}: got {g}, want {w}");
    }
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
        let mut want = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..kk).map(|p| a.get_f64(i * kk + p) * b.get_f64(p * n + j)).sum();
            }
        }
        assert_close(&format!("matmul {m}x{n}x{kk}"), tensor(&out[2]), &want, 1e-2, 1e-3);
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
