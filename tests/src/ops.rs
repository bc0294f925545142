//! The built-ins beyond window memory (`tests/ops/*.tile`): indexed memory and atomics, scans and
//! index reductions, `join`/`split`, `while`/`return`, `print`/`assert`. Each program runs on the
//! interpreter against a plain Rust reference on random inputs (with out-of-range indices), and
//! its PTX, checked build or not, assembles with ptxas for both targets.

use crate::common::{ptxas, root, tensor, tile_files};
use tessera_compiler::interp::{self, Arg};
use tessera_compiler::{CompiledKernel, DType, HostTensor, Options, Source, Target};
use tessera_runtime::exec::{Rng, random_tensor};

fn compile_op_file(name: &str, o: &Options) -> CompiledKernel {
    let path = root().join("tests/ops").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match tessera_compiler::compile(&Source::new(format!("tests/ops/{name}"), text).with_path(&path), o) {
        Ok(m) => m.kernels.into_iter().next().unwrap_or_else(|| panic!("{name} has no kernel")),
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

#[test]
fn ops_assemble_with_ptxas() {
    let Some(ptxas) = ptxas() else { return };
    let dir = std::env::temp_dir().join(format!("tessera-ops-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let files = tile_files("tests/ops");
    assert!(files.len() >= 3, "tests/ops is missing programs");
    for f in files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        for target in [Target::Sm90a, Target::Sm80] {
            for checked in [true, false] {
                let k = compile_op_file(&name, &Options { target, checked, verify: true, ..Options::default() });
                let ptx = dir.join(format!("{}.{}.{checked}.ptx", k.meta.name, target.name()));
                std::fs::write(&ptx, &k.ptx).expect("write ptx");
                let out = std::process::Command::new(&ptxas)
                    .args([&format!("-arch={}", target.name()), "-o"])
                    .arg(dir.join("out.cubin"))
                    .arg(&ptx)
                    .output()
                    .expect("run ptxas");
                let log = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "ptxas rejected {name} for {} (checked: {checked}):\n{log}", target.name());
                // Asserts exist in the GPU code of checked builds only.
                assert_eq!(k.ptx.contains("__assertfail"), checked && name == "control.tile", "{name}");
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
        ];
        let (out, _) = run(&k, args);
        let at = |i: usize, j: usize| x.get_f64(i * c + j);
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
