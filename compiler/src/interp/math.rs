//! Special functions the standard library lacks, accurate to a few ulps of f64 so that the
//! reference results do not depend on the approximation (the GPU is compared against them).

use std::f64::consts::{FRAC_2_SQRT_PI, PI};

/// The error function.
///
/// Below 2.5: `erf x = 2/√π · e^(-x²) · Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1))`, a series of positive
/// terms (no cancellation, unlike the Taylor series of `erf` itself). From 2.5: `1 - erfc x`
/// with erfc's continued fraction, which converges quickly there; from 6, erfc is below half an
/// ulp of 1.
pub(crate) fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let r = if ax < 2.5 {
        let x2 = ax * ax;
        let (mut term, mut sum) = (ax, ax);
        for n in 1..200 {
            term *= 2.0 * x2 / (2 * n + 1) as f64;
            sum += term;
            if term <= sum * 1e-17 {
                break;
            }
        }
        FRAC_2_SQRT_PI * exp_neg_square(ax) * sum
    } else if ax < 6.0 {
        // erfc x = e^(-x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))), evaluated backward.
        let mut t = ax;
        for n in (1..=60).rev() {
            t = ax + (n as f64 * 0.5) / t;
        }
        1.0 - exp_neg_square(ax) / (t * PI.sqrt())
    } else {
        1.0
    };
    r.copysign(x)
}

/// `e^(-x²)` without the error of rounding `x²` first: `x² = hi + lo` exactly (by an FMA), and
/// `e^(-lo) ≈ 1 - lo` since `lo` is below an ulp of `hi`.
fn exp_neg_square(x: f64) -> f64 {
    let hi = x * x;
    let lo = x.mul_add(x, -hi);
    (-hi).exp() * (1.0 - lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_reference_values() {
        // Values from mpmath at 30 digits, rounded to f64.
        let cases = [
            (0.0, 0.0),
            (1e-300, 1.1283791670955126e-300),
            (1e-8, 1.1283791670955126e-8),
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (1.5, 0.9661051464753108),
            (2.0, 0.9953222650189527),
            (2.4999, 0.9995928300996666),
            (2.5, 0.9995930479825550),
            (3.0, 0.9999779095030014),
            (4.0, 0.9999999845827421),
            (5.5, 0.9999999999999927),
            (6.5, 1.0),
            (f64::INFINITY, 1.0),
        ];
        for (x, want) in cases {
            let got = erf(x);
            assert!((got - want).abs() <= 2e-16 * want.abs().max(1e-300), "erf({x}) = {got:e}, want {want:e}");
            assert_eq!(erf(-x), -got);
        }
        assert!(erf(f64::NAN).is_nan());
        assert!(erf(-0.0).is_sign_negative());
    }
}
