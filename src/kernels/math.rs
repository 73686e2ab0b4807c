//! exp, softmax and GELU over slices, written so that the compiler vectorises them, and run with
//! the widest vector instructions this CPU has (checked at run time, like the GEMM kernels).
//!
//! glibc's `expf` and libm's `erff` are scalar calls; on SAM's attention rows and MLP
//! activations they were a tenth of a training step. The polynomials below stay within a few
//! units in the last place of f32 (tests at the end).

/// Defines `pub(super) fn NAME` that runs its body compiled for AVX-512 or AVX2 + FMA when the
/// CPU has them (the body is an `#[inline(always)]` function inlined into copies with those
/// target features), else for the baseline.
macro_rules! multiversion {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$doc])*
        pub(super) fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            fn avx512($($arg: $ty),*) {
                body($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) {
                body($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features `avx512` was compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// `e^x` for f32: `2^n · e^r` with `n = round(x·log2 e)`, `r = x − n·ln 2` (ln 2 in two parts,
/// so `r` is exact enough) and a degree-7 Taylor polynomial of `e^r` on `|r| ≤ ½ ln 2`. Inputs
/// are clamped to [-87, 88], so tiny results stay ~1e-38 instead of 0 and nothing overflows.
#[inline(always)]
fn exp(x: f32) -> f32 {
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer without a call.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    for c in [720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0] {
        p = p * r + 1.0 / c;
    }
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `erf(x)` by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7, ≤ 6e-7 in f32).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

multiversion! {
    /// Softmax of a row, in place.
    fn softmax(row: &mut [f32]) {
        let max = lanes(row, f32::NEG_INFINITY, f32::max);
        for v in row.iter_mut() {
            *v = exp(*v - max);
        }
        let inv = 1.0 / lanes(row, 0.0, |a, b| a + b);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// `Σ a·b`, in lanes like [`lanes`].
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (a, b) in a_chunks.zip(b_chunks) {
        for lane in 0..LANES {
            acc[lane] += a[lane] * b[lane];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Reduces `values` with `op` in 16 independent lanes: a single running value would chain
/// every step on the previous one and keep the loop scalar.
#[inline(always)]
fn lanes(values: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    const LANES: usize = 16;
    let mut acc = [init; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(init, |a, &b| op(a, b));
    for chunk in chunks {
        for lane in 0..LANES {
            acc[lane] = op(acc[lane], chunk[lane]);
        }
    }
    acc.iter().fold(tail, |a, &b| op(a, b))
}

multiversion! {
    /// `out = GELU(x)`, exact (erf) form.
    fn gelu(x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

multiversion! {
    /// `out = grad · GELU'(x)` = `grad · (Φ(x) + x·φ(x))`.
    fn gelu_backward(x: &[f32], grad: &[f32], out: &mut [f32]) {
        let inv_sqrt_2pi = 0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2;
        for ((o, &v), &g) in out.iter_mut().zip(x).zip(grad) {
            let cdf = 0.5 * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
            *o = g * (cdf + v * inv_sqrt_2pi * exp(-0.5 * v * v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sweeps [-20, 20] (and the softmax range below 0) against f64.
    #[test]
    fn exp_and_erf_match_f64() {
        let mut worst_exp: f64 = 0.0;
        let mut worst_erf: f64 = 0.0;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            let want = (x as f64).exp();
            worst_exp = worst_exp.max(((exp(x) as f64) - want).abs() / want);
            worst_erf = worst_erf.max(((erf(x) as f64) - libm::erf(x as f64)).abs());
        }
        assert!(worst_exp < 3e-7, "exp: relative error {worst_exp:e}");
        // The formula's own 1.5e-7, plus f32 rounding.
        assert!(worst_erf < 6e-7, "erf: absolute error {worst_erf:e}");
        assert_eq!(exp(-1000.0).min(1e-37), exp(-1000.0));
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn gelu_and_softmax_match_f64() {
        let x: Vec<f32> = (-600..600).map(|i| i as f32 * 0.01).collect();
        let (mut y, mut dy) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        gelu(&x, &mut y);
        gelu_backward(&x, &vec![1.0; x.len()], &mut dy);
        for ((&x, &y), &dy) in x.iter().zip(&y).zip(&dy) {
            let x = x as f64;
            let cdf = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            assert!((y as f64 - x * cdf).abs() < 1e-6, "gelu({x})");
            assert!((dy as f64 - (cdf + x * pdf)).abs() < 1e-6, "gelu'({x})");
        }
        let mut row: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin() * 30.0).collect();
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let total: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        let want: Vec<f64> = row
            .iter()
            .map(|&v| (v as f64 - max).exp() / total)
            .collect();
        softmax(&mut row);
        for (got, want) in row.iter().zip(want) {
            assert!((*got as f64 - want).abs() < 1e-7, "{got} vs {want}");
        }
    }
}
