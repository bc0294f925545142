//! Inputs of the conformance programs (`tests/ops/*.tile`) in the self-test: special values
//! (NaN, ±inf, ±0, subnormals, rounding ties, saturation and wrap-around edges), indices out of
//! range in both directions, masks, duplicates, ties. Each generator makes the tensors whose
//! values matter; the others are random. Sizes come from the generated tensors (their dimension
//! symbols), so the cases give few `dims`.

use super::{Sizes, below, size};
use crate::exec::Rng;
use tessera_compiler::{DType, HostTensor};

type Inputs = Result<Vec<(&'static str, HostTensor)>, String>;

fn t1(dtype: DType, v: &[f64]) -> HostTensor {
    HostTensor::from_f64(dtype, &[v.len()], v)
}

fn i1(dtype: DType, v: &[i64]) -> HostTensor {
    HostTensor::from_i64(dtype, &[v.len()], v)
}

/// Uniform in `[-1, 1)` times a random power of two in `2^-lo ..= 2^hi`.
fn scaled(rng: &mut Rng, lo: i32, hi: i32) -> f64 {
    let e = below(rng, (lo + hi + 1) as usize) as i32 - lo;
    rng.uniform() * 2f64.powi(e)
}

/// A random i32: small, large or any bit pattern.
fn any_i32(rng: &mut Rng) -> i64 {
    match below(rng, 3) {
        0 => below(rng, 200) as i64 - 100,
        1 => (rng.next_u64() as u32 as i32 >> below(rng, 31)) as i64,
        _ => rng.next_u64() as u32 as i32 as i64,
    }
}

/// `math.tile`: `x` uniform in [-1, 1) after some exact edges (0, -0, multiples of 1/8 so
/// that `floor`/`ceil` meet integers), `pos` positive from 2^-30 to 2^30 after 1, its
/// neighbours, powers of two and a subnormal.
pub fn math(sizes: &Sizes, rng: &mut Rng) -> Inputs {
    let n = size(sizes, "N")?;
    let ulp = f32::EPSILON as f64;
    let xs = [0.0, -0.0, 0.5, -0.5, 0.125, -0.125, 0.375, 1.0 - ulp / 2.0, -1.0, 1e-30, -1e-7, 0.0625];
    let ps = [1.0, 1.0 + ulp, 1.0 - ulp / 2.0, 2.0, 0.5, 4.0, 1e-9, 1e9, 3.0, 1e-40, f32::MIN_POSITIVE as f64, 0.75];
    let x: Vec<f64> = (0..n).map(|i| xs.get(i).copied().unwrap_or_else(|| rng.uniform())).collect();
    let pos: Vec<f64> = (0..n).map(|i| ps.get(i).copied().unwrap_or_else(|| 2f64.powf(rng.uniform() * 30.0))).collect();
    Ok(vec![("x", t1(DType::F32, &x)), ("pos", t1(DType::F32, &pos))])
}

/// Special f32 values for the binary float ops.
fn float_specials() -> Vec<f64> {
    let e = |k: i32| 2f64.powi(k);
    vec![
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        3.0,
        -2.5,
        e(-149),
        1e-40,
        -1e-39,
        f32::MAX as f64,
        -(f32::MAX as f64),
        f32::MIN_POSITIVE as f64,
        1.0 + e(-8),
        1.0 + e(-8) + e(-20),
        1.0 + e(-11),
        65504.0,
        65520.0,
        1e-8,
        7.0,
        0.1,
    ]
}

/// `arith.tile`: every pair of special values (a, b), then random pairs over many binades; `c`
/// random, except where `fma` tells one rounding from two (`(1 + 2^-12)² - 1`).
pub fn arith(sizes: &Sizes, rng: &mut Rng) -> Inputs {
    let n = size(sizes, "N")?;
    let s = float_specials();
    let (mut a, mut b, mut c) = (vec![], vec![], vec![]);
    for &x in &s {
        for &y in &s {
            a.push(x);
            b.push(y);
        }
    }
    let q = 1.0 + 2f64.powi(-12);
    for (x, y, z) in [(q, q, -1.0), (q, -q, 1.0), (q, q, 2f64.powi(-70)), (3.0, 1.0 / 3.0, -1.0)] {
        a.push(x);
        b.push(y);
        c.push(z);
    }
    while a.len() < n {
        a.push(scaled(rng, 10, 10));
        b.push(if below(rng, 8) == 0 { a[a.len() - 1] } else { scaled(rng, 10, 10) });
    }
    let pairs = s.len() * s.len();
    let mut cv: Vec<f64> = (0..n).map(|_| scaled(rng, 10, 10)).collect();
    cv[pairs..pairs + c.len()].copy_from_slice(&c);
    a.truncate(n);
    b.truncate(n);
    Ok(vec![("a", t1(DType::F32, &a)), ("b", t1(DType::F32, &b)), ("c", t1(DType::F32, &cv))])
}

/// `intops.tile`: every pair of special i32 values (zero, ±1, shift widths, i8/u8 edges, MIN,
/// MAX), then random pairs (small, large and any bits; shift amounts of every size and sign).
pub fn intops(sizes: &Sizes, rng: &mut Rng) -> Inputs {
    let n = size(sizes, "N")?;
    let s: Vec<i64> = vec![
        0,
        1,
        -1,
        2,
        -2,
        3,
        -3,
        7,
        -7,
        8,
        31,
        32,
        33,
        -31,
        -32,
        63,
        64,
        100,
        -100,
        127,
        128,
        -128,
        -129,
        255,
        256,
        i32::MIN as i64,
        i32::MAX as i64,
        i32::MIN as i64 + 1,
        0x4000_0000,
        0x7fff,
        -0x8000,
    ];
    let (mut a, mut b) = (vec![], vec![]);
    for &x in &s {
        for &y in &s {
            a.push(x);
            b.push(y);
        }
    }
    while a.len() < n {
        a.push(any_i32(rng));
        b.push(if below(rng, 2) == 0 { below(rng, 80) as i64 - 40 } else { any_i32(rng) });
    }
    a.truncate(n);
    b.truncate(n);
    Ok(vec![("a", i1(DType::I32, &a)), ("b", i1(DType::I32, &b))])
}

/// `casts.tile`: per source dtype, the values where casts round, saturate, wrap or overflow
/// (NaN, ±inf, ±0, halves, 127/128/255/256 edges, i32 limits, f16 and bf16 overflow and
/// ties, integers that f32 or bf16 round, subnormals), then random ones.
pub fn casts(sizes: &Sizes, rng: &mut Rng) -> Inputs {
    let n = size(sizes, "N")?;
    let e = |k: i32| 2f64.powi(k);
    let nan = f64::NAN;
    let inf = f64::INFINITY;
    let f32s = [
        nan,
        inf,
        -inf,
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.5,
        -1.5,
        2.5,
        -2.5,
        0.99,
        -0.99,
        127.5,
        128.0,
        -128.5,
        -129.0,
        255.5,
        256.0,
        300.0,
        -300.0,
        2147483520.0,
        2147483648.0,
        -2147483648.0,
        -2147483904.0,
        3e9,
        -3e9,
        1e10,
        f32::MAX as f64,
        -(f32::MAX as f64),
        65504.0,
        65519.0,
        65520.0,
        1.0 + e(-8),
        1.0 + e(-8) + e(-23),
        1.0 + 3.0 * e(-8),
        1.0 + e(-11),
        1.0 + e(-11) + e(-23),
        e(-25),
        e(-25) * (1.0 + e(-23)),
        e(-24),
        1e-40,
        -e(-149),
        6e-8,
        3.3961e38,
    ];
    let bf16s = [
        nan,
        inf,
        -inf,
        0.0,
        -0.0,
        0.5,
        1.5,
        -2.5,
        127.0,
        128.0,
        255.0,
        256.0,
        -129.0,
        3e38,
        -3e38,
        1e10,
        65536.0,
        65280.0,
        1.0078125,
        e(-24),
        1e-39,
        -0.75,
        2.5e9,
        -2.5e9,
    ];
    let f16s = [
        nan,
        inf,
        -inf,
        0.0,
        -0.0,
        65504.0,
        -65504.0,
        0.5,
        -0.5,
        1.5,
        2.5,
        127.5,
        255.5,
        256.0,
        -129.0,
        e(-24),
        1.0 + e(-10),
        1.0 + e(-8),
        1.0 + 3.0 * e(-8),
        -3.5,
    ];
    let i32s: [i64; 26] = [
        0,
        1,
        -1,
        127,
        128,
        -128,
        -129,
        255,
        256,
        65504,
        65519,
        65520,
        70000,
        -70000,
        (1 << 24) + 1,
        (1 << 24) + 3,
        (1 << 24) + (1 << 16) + 1,
        -((1 << 24) + (1 << 16) + 1),
        (1 << 25) + 3,
        i32::MAX as i64,
        i32::MIN as i64,
        0x7f7f_7f7f,
        0x0100_8001,
        2049,
        2051,
        -4097,
    ];
    let pick = |v: &[f64], i: usize, rng: &mut Rng, scale: f64| v.get(i).copied().unwrap_or_else(|| rng.uniform() * scale);
    let xf: Vec<f64> = (0..n).map(|i| pick(&f32s, i, rng, 300.0)).collect();
    let xb: Vec<f64> = (0..n).map(|i| pick(&bf16s, i, rng, 600.0)).collect();
    let xh: Vec<f64> = (0..n).map(|i| pick(&f16s, i, rng, 300.0)).collect();
    let xi: Vec<i64> = (0..n).map(|i| i32s.get(i).copied().unwrap_or_else(|| any_i32(rng))).collect();
    let x8: Vec<i64> = (0..n).map(|i| (i as i64 * 37 + 128) % 256 - 128).collect();
    let xu: Vec<i64> = (0..n).map(|i| (i as i64 * 53 + 255) % 256).collect();
    let xz: Vec<i64> = (0..n).map(|i| (i % 3 == 1) as i64).collect();
    Ok(vec![
        ("xf", t1(DType::F32, &xf)),
        ("xb", t1(DType::BF16, &xb)),
        ("xh", t1(DType::F16, &xh)),
        ("xi", i1(DType::I32, &xi)),
        ("x8", i1(DType::I8, &x8)),
        ("xu", i1(DType::U8, &xu)),
        ("xz", i1(DType::Bool, &xz)),
    ])
}

/// `window.tile`: one program per pair of offsets, rows and columns each taken from: wholly
/// before, across the start, at 0, inside, flush with the end, across the end, at the end,
/// wholly past it (`BR` × `BC` windows over `[R, C]`).
pub fn window(sizes: &Sizes, _rng: &mut Rng) -> Inputs {
    let (r, c) = (size(sizes, "R")? as i64, size(sizes, "C")? as i64);
    let (br, bc) = (size(sizes, "BR")? as i64, size(sizes, "BC")? as i64);
    let along = |n: i64, b: i64| vec![-b, -b - 3, -2, 0, n / 2, n - b, n - 3, n, n + 5];
    let mut offs = vec![];
    for &o0 in &along(r, br) {
        for &o1 in &along(c, bc) {
            offs.extend([o0, o1]);
        }
    }
    let p = offs.len() / 2;
    Ok(vec![("offs", HostTensor::from_i64(DType::I32, &[p, 2], &offs))])
}

/// `gather_scatter.tile`: row, column and destination indices from 2 before to 2 past each
/// end, a mask three quarters true; among the selected (mask on, indices in range) elements,
/// the `(row, column)` pairs and the destinations are unique (a repeat is masked off instead).
pub fn gather_scatter(sizes: &Sizes, rng: &mut Rng) -> Inputs {
    let (r, c, n, m) = (size(sizes, "R")?, size(sizes, "C")?, size(sizes, "N")?, size(sizes, "M")?);
    let idx = |rng: &mut Rng, len: usize| below(rng, len + 4) as i64 - 2;
    let (mut ri, mut ci, mut mk, mut dst) = (vec![], vec![], vec![], vec![]);
    let (mut used_rc, mut used_d) = (vec![false; r * c], vec![false; m]);
    for _ in 0..n {
        let (a, b, d) = (idx(rng, r), idx(rng, c), idx(rng, m));
        let mut on = below(rng, 4) != 0;
        let rc = (a >= 0 && (a as usize) < r && b >= 0 && (b as usize) < c).then(|| a as usize * c + b as usize);
        let dd = (d >= 0 && (d as usize) < m).then_some(d as usize);
        if rc.is_some_and(|k| used_rc[k]) || dd.is_some_and(|k| used_d[k]) {
            on = false;
        }
        if on {
            if let Some(k) = rc {
                used_rc[k] = true;
            }
            if let Some(k) = dd {
                used_d[k] = true;
            }
        }
        ri.push(a);
        ci.push(b);
        mk.push(on as i64);
        dst.push(d);
    }
    Ok(vec![("ri", i1(DType::I32, &ri)), ("ci", i1(DType::I32, &ci)), ("m", i1(DType::Bool, &mk)), ("dst", i1(DType::I32, &dst))])
}

/// `atomics.tile`: bins from 2 before to 2 past `M` (so most elements collide), values small and
/// large (the i32 sums wrap, the u32 casts of negatives are large), about 1 in 10 float values
/// NaN, a mask four fifths true.
pub fn atomics(sizes: &Sizes, rng: &mut Rng) -> Inputs {
    let (n, m) = (size(sizes, "N")?, size(sizes, "M")?);
    let idx: Vec<i64> = (0..n).map(|_| below(rng, m + 4) as i64 - 2).collect();
    let vi: Vec<i64> = (0..n).map(|_| any_i32(rng)).collect();
    let vf: Vec<f64> = (0..n).map(|_| if below(rng, 10) == 0 { f64::NAN } else { rng.uniform() }).collect();
    let mk: Vec<i64> = (0..n).map(|_| (below(rng, 5) != 0) as i64).collect();
    Ok(vec![("idx", i1(DType::I32, &idx)), ("vi", i1(DType::I32, &vi)), ("vf", t1(DType::F32, &vf)), ("m", i1(DType::Bool, &mk))])
}

/// `masked_softmax.tile`: scores in [-8, 8), masks by row: all masked, the first block of 16
/// columns masked, a single live entry, the second block masked, random.
pub fn masked_softmax(sizes: &Sizes, rng: &mut Rng) -> Inputs {
    let (r, c) = (size(sizes, "R")?, size(sizes, "C")?);
    let bc = size(sizes, "BC")?;
    let s: Vec<f64> = (0..r * c).map(|_| rng.uniform() * 8.0).collect();
    let mut keep = vec![0i64; r * c];
    for i in 0..r {
        let one = below(rng, c);
        for j in 0..c {
            keep[i * c + j] = match i % 5 {
                0 => false,
                1 => j >= bc,
                2 => j == one,
                3 => j < bc,
                _ => below(rng, 2) == 0,
            } as i64;
        }
    }
    Ok(vec![("s", HostTensor::from_f64(DType::F32, &[r, c], &s)), ("keep", HostTensor::from_i64(DType::Bool, &[r, c], &keep))])
}

/// `argscan.tile`: f32 values that tie (multiples of 1/4) with NaNs by row (all NaN, a NaN
/// prefix, scattered), i32 values that tie and, every few rows, large ones whose running sums
/// wrap.
pub fn argscan(sizes: &Sizes, rng: &mut Rng) -> Inputs {
    let (r, c) = (size(sizes, "R")?, size(sizes, "C")?);
    let mut x = vec![0.0; r * c];
    let mut xi = vec![0i64; r * c];
    for i in 0..r {
        for j in 0..c {
            let v = (rng.uniform() * 8.0).round() / 4.0;
            x[i * c + j] = match i % 6 {
                0 => f64::NAN,
                1 if j < 3 => f64::NAN,
                2 if below(rng, 3) == 0 => f64::NAN,
                _ => v,
            };
            xi[i * c + j] = if i % 4 == 3 { any_i32(rng) } else { below(rng, 7) as i64 - 3 };
        }
    }
    Ok(vec![("x", HostTensor::from_f64(DType::F32, &[r, c], &x)), ("xi", HostTensor::from_i64(DType::I32, &[r, c], &xi))])
}

/// `scan.tile`: random values, every third one rounded to a multiple of 1/4 so that ties occur.
pub fn scan_ties(sizes: &Sizes, rng: &mut Rng) -> Inputs {
    let (r, c) = (size(sizes, "R")?, size(sizes, "C")?);
    let x: Vec<f64> = (0..r * c).map(|i| if i % 3 == 0 { (rng.uniform() * 4.0).round() / 4.0 } else { rng.uniform() }).collect();
    Ok(vec![("x", HostTensor::from_f64(DType::F32, &[r, c], &x))])
}

/// `loops.tile`: trip counts that end each loop in each way (negative, zero, small, past the
/// `for` loop's early return, Collatz runs cut at 60 steps).
pub fn loops(_sizes: &Sizes, _rng: &mut Rng) -> Inputs {
    let n = [-5, 0, 1, 2, 3, 7, 27, 97, 12, 40, 100, 31, 33, -1, 5, 6, 9, 11, 18, 25, 28, 29, 30, 13, 14, 15, 16, 17, 19, 20, 21, 22];
    Ok(vec![("n", i1(DType::I32, &n))])
}

/// `control.tile`: step counts that return early (negative), run zero times, and pass the
/// 100-step early exit.
pub fn control(_sizes: &Sizes, _rng: &mut Rng) -> Inputs {
    Ok(vec![("steps", i1(DType::I32, &[3, -1, 0, 250, 7, 100, 101, 1]))])
}

/// `indexed.tile`: `N` rows of `F` columns, `E` elements with row indices from 2 before to 2
/// past the rows and column indices from 1 before to 1 past; `sel[0]` picks a valid row of
/// `table` (or, with `oob_view`, one past the end: an empty view).
fn indexed_inputs(sizes: &Sizes, rng: &mut Rng, oob_view: bool) -> Inputs {
    let (n, f, e, t) = (size(sizes, "N")?, size(sizes, "F")?, size(sizes, "E")?, size(sizes, "T")?);
    let rows: Vec<i64> = (0..e).map(|_| below(rng, n + 4) as i64 - 2).collect();
    let cols: Vec<i64> = (0..e).map(|_| below(rng, f + 2) as i64 - 1).collect();
    let sel: Vec<i64> = (0..t).map(|i| if oob_view { t as i64 } else { ((i + 1) % t) as i64 }).collect();
    Ok(vec![("rows", i1(DType::I32, &rows)), ("cols", i1(DType::I32, &cols)), ("sel", i1(DType::I32, &sel))])
}

pub fn indexed(sizes: &Sizes, rng: &mut Rng) -> Inputs {
    indexed_inputs(sizes, rng, false)
}

pub fn indexed_oob_view(sizes: &Sizes, rng: &mut Rng) -> Inputs {
    indexed_inputs(sizes, rng, true)
}
