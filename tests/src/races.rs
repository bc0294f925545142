//! Races between the programs of a launch (`tests/races/*.tile`): the interpreter runs programs
//! in grid order, so a kernel whose programs overlap in what they write gives the "right" answer
//! there and a different one on the GPU whenever it happens to run them in another order. The
//! race check reports the overlap instead.

use crate::common::{opts_with_bools, root, tensor};
use tessera_compiler::interp::{self, Access, Arg, InterpError, RunOptions};
use tessera_compiler::{CompiledKernel, DType, HostTensor, Scalar, Source};
use tessera_runtime::exec::{Rng, random_tensor};

fn compile(file: &str, kernel: &str, reversed: bool) -> CompiledKernel {
    let path = root().join("tests/races").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let o = tessera_compiler::Options { kernel: Some(kernel.into()), ..opts_with_bools(&[], &[("REVERSED", reversed)]) };
    match tessera_compiler::compile(&Source::new(format!("tests/races/{file}"), text).with_path(&path), &o) {
        Ok(m) => m.kernels.into_iter().find(|k| k.meta.name == kernel).unwrap_or_else(|| panic!("no kernel {kernel}")),
        Err(d) => panic!("{file} does not compile:\n{}", d.render()),
    }
}

/// GroupNorm of each row over groups of 24 columns, in f64.
fn groupnorm_reference(x: &HostTensor, eps: f64) -> Vec<f64> {
    let (n, c) = (x.shape[0], x.shape[1]);
    let mut out = vec![0.0; n * c];
    for r in 0..n {
        for g in 0..c / 24 {
            let v: Vec<f64> = (0..24).map(|j| x.get_f64(r * c + g * 24 + j)).collect();
            let mean = v.iter().sum::<f64>() / 24.0;
            let var = v.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / 24.0;
            for j in 0..24 {
                out[r * c + g * 24 + j] = (v[j] - mean) / (var + eps).sqrt();
            }
        }
    }
    out
}

/// The largest error relative to the largest reference value (0.56 for the reversed overlap).
fn rel_error(got: &HostTensor, want: &[f64]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    (0..want.len()).map(|i| (got.get_f64(i) - want[i]).abs()).fold(0.0, f64::max) / scale
}

fn run(k: &CompiledKernel, x: &HostTensor, race_check: bool) -> Result<HostTensor, InterpError> {
    let (n, c) = (x.shape[0], x.shape[1]);
    let mut args = vec![Arg::Tensor(x.clone()), Arg::Tensor(HostTensor::zeros(DType::F32, &[n, c])), Arg::Scalar(Scalar::Float(1e-5))];
    interp::run_kernel_with(&k.tir, &mut args, &RunOptions { race_check, ..RunOptions::default() }, &mut std::io::sink())?;
    Ok(tensor(&args[1]).clone())
}

/// The GroupNorm a new user writes first: a 32-wide window store per 24-channel group. Without
/// the race check it passes on the interpreter and fails once the programs run in another order
/// (as they may on the GPU); with it, the overlap is reported.
#[test]
fn groupnorm_with_overlapping_stores_is_a_race() {
    let (n, c) = (5, 72);
    let x = random_tensor(DType::F32, &[n, c], &mut Rng::new(3));
    let want = groupnorm_reference(&x, 1e-5);
    for reversed in [false, true] {
        let k = compile("groupnorm.tile", "groupnorm_overlap", reversed);
        let got = run(&k, &x, false).expect("runs without the race check");
        let err = rel_error(&got, &want);
        eprintln!("groupnorm_overlap, reversed {reversed}: relative error {err:.2}");
        if reversed {
            assert!(err > 0.3, "the reversed order should show the overlap: relative error {err}");
        } else {
            assert!(err < 1e-5, "grid order hides the overlap: relative error {err}");
        }
        match run(&k, &x, true) {
            Err(InterpError::Race { param, element, program, access, other, other_access }) => {
                // The first overlap, between the first two programs: in grid order program 0
                // (group 0) writes its padded columns 24..32, group 1's first ones, which program
                // 1 then writes; reversed, program 0 (group 2) writes 48..72 and program 1
                // (group 1) pads into 48..56.
                let col = if reversed { 48 } else { 24 };
                let got = (param.as_str(), element, other, other_access, program, access);
                assert_eq!(got, ("y", vec![0, col], [0, 0, 0], Access::Write, [0, 1, 0], Access::Write));
            }
            other => panic!("expected a race, got {other:?}"),
        }
    }
}

/// The fix, writing only the group's 24 columns (a masked scatter), is race-free and right in
/// either order.
#[test]
fn groupnorm_with_masked_stores_is_race_free() {
    for (n, c) in [(5, 72), (1, 24), (9, 48)] {
        let x = random_tensor(DType::F32, &[n, c], &mut Rng::new(4));
        let want = groupnorm_reference(&x, 1e-5);
        for reversed in [false, true] {
            let got = run(&compile("groupnorm.tile", "groupnorm", reversed), &x, true).expect("race-free");
            let err = rel_error(&got, &want);
            assert!(err < 1e-5, "{n}x{c} reversed {reversed}: relative error {err}");
        }
    }
}
