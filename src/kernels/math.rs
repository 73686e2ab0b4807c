//! exp, softmax and GELU over slices, written so that the compiler vectorises them, and run with
//! the widest vector instructions this CPU has (checked at run time, like the GEMM kernels).
//!
//! glibc's `expf` and libm's `erff` are scalar calls; on SAM's attention rows and MLP
//! activations they were a tenth of a training step. The polynomials below stay within a few
//! units in the last place of f32 (tests at the end).

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
    // 2ⁿ from the bits of `n + 127 + ROUND`, whose low mantissa bits hold n + 127 (an int
    // conversion would keep the loop scalar: `as` saturates).
    let biased = (n + (127.0 + ROUND)).to_bits() - ROUND.to_bits();
    p * f32::from_bits(biased << 23)
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
        let max = lanes(row, f32::NEG_INFINITY, f32::max, f32::max);
        for v in row.iter_mut() {
            *v = exp(*v - max);
        }
        let inv = 1.0 / sum(row);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// One query's relative-position inputs: its `q` (`hd` values) and the rows of the tables for
/// its window row and column, `h` `[wh, hd]` and `w` `[ww, hd]`.
pub(super) struct RelPos<'a> {
    pub q: &'a [f32],
    pub h: &'a [f32],
    pub w: &'a [f32],
}

/// Gradients into the same rows: of `q`, `h` and `w`.
pub(super) struct RelPosGrads<'a> {
    pub q: &'a mut [f32],
    pub h: &'a mut [f32],
    pub w: &'a mut [f32],
}

multiversion! {
    /// One query's scores `row` (`[wh·ww]`, key rows of `ww`) plus its relative-position terms
    /// `q·h[ky] + q·w[kx]`, then their softmax, in place. `terms_h`, `terms_w`: scratch of
    /// `wh` and `ww` values.
    fn rel_pos_softmax(
        row: &mut [f32],
        rel: &RelPos,
        terms_h: &mut [f32],
        terms_w: &mut [f32],
    ) {
        let hd = rel.q.len();
        for (t, table) in terms_h.iter_mut().zip(rel.h.chunks_exact(hd)) {
            *t = dot(rel.q, table);
        }
        for (t, table) in terms_w.iter_mut().zip(rel.w.chunks_exact(hd)) {
            *t = dot(rel.q, table);
        }
        for (keys, &h) in row.chunks_exact_mut(terms_w.len()).zip(terms_h.iter()) {
            for (s, &w) in keys.iter_mut().zip(terms_w.iter()) {
                *s += h + w;
            }
        }
        softmax(row);
    }
}

multiversion! {
    /// The backward pass of [`rel_pos_softmax`] for one query, given its probabilities `p`:
    /// `ds` goes from dL/dP to dL/dscores = `p ⊙ (ds − ds·p)`, and the terms' gradients are
    /// added: with `Sh[ky]`, `Sw[kx]` the sums of `ds` over each key row and key column,
    /// `dq += Σ Sh[ky]·h[ky] + Σ Sw[kx]·w[kx]`, `dh[ky] += Sh[ky]·q`, `dw[kx] += Sw[kx]·q`.
    /// `sums_h`, `sums_w`: scratch of `wh` and `ww` values.
    fn rel_pos_softmax_backward(
        ds: &mut [f32],
        p: &[f32],
        rel: &RelPos,
        grads: &mut RelPosGrads,
        sums_h: &mut [f32],
        sums_w: &mut [f32],
    ) {
        let weighted = dot(ds, p);
        for (d, &pr) in ds.iter_mut().zip(p) {
            *d = pr * (*d - weighted);
        }
        sums_w.fill(0.0);
        for (keys, s) in ds.chunks_exact(sums_w.len()).zip(sums_h.iter_mut()) {
            *s = sum(keys);
            for (w, &d) in sums_w.iter_mut().zip(keys) {
                *w += d;
            }
        }
        let hd = rel.q.len();
        let rows = [(&*sums_h, rel.h, &mut *grads.h), (&*sums_w, rel.w, &mut *grads.w)];
        for (sums, table, d_table) in rows {
            for ((&s, row), d_row) in sums
                .iter()
                .zip(table.chunks_exact(hd))
                .zip(d_table.chunks_exact_mut(hd))
            {
                for (((dq, &t), d), &q) in grads.q.iter_mut().zip(row).zip(d_row).zip(rel.q) {
                    *dq += s * t;
                    *d += s * q;
                }
            }
        }
    }
}

/// `Σ a·b`, in lanes like [`lanes`] (which folds one slice).
#[inline(always)]
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

/// Folds `values` into 16 independent lanes with `step`, then merges the lanes with `merge`: a
/// single running value would chain every step on the previous one and keep the loop scalar.
#[inline(always)]
fn lanes<A: Copy>(
    values: &[f32],
    init: A,
    step: impl Fn(A, f32) -> A,
    merge: impl Fn(A, A) -> A,
) -> A {
    const LANES: usize = 16;
    let mut acc = [init; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(init, |a, &v| step(a, v));
    for chunk in chunks {
        for lane in 0..LANES {
            acc[lane] = step(acc[lane], chunk[lane]);
        }
    }
    acc.iter().fold(tail, |a, &b| merge(a, b))
}

/// `Σ values`, in lanes.
#[inline(always)]
fn sum(values: &[f32]) -> f32 {
    lanes(values, 0.0, |a, v| a + v, |a, b| a + b)
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

multiversion! {
    /// LayerNorm of whole rows of `x` (`[rows, c]`, `c = gamma.len()`) into `out`:
    /// `(x − mean) / √(var + eps) · gamma + beta`, with the biased variance, in two passes.
    fn layer_norm_rows(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
        let c = gamma.len();
        for (x, out) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
            let (mean, rstd) = moments(x, eps);
            for (((o, &v), &g), &b) in out.iter_mut().zip(x).zip(gamma).zip(beta) {
                *o = (v - mean) * rstd * g + b;
            }
        }
    }
}

multiversion! {
    /// LayerNorm backward for whole rows: writes `dx` and adds each row's share to `d_gamma`
    /// and `d_beta`. With x̂ the normalised row and g = grad·gamma,
    /// `dx = rstd · (g − mean(g) − x̂ · mean(g·x̂))`.
    fn layer_norm_rows_backward(
        x: &[f32],
        gamma: &[f32],
        grad: &[f32],
        eps: f32,
        dx: &mut [f32],
        d_gamma: &mut [f32],
        d_beta: &mut [f32]
    ) {
        let c = gamma.len();
        let mut xhat = vec![0.0; c];
        let mut g = vec![0.0; c];
        for ((x, grad), dx) in x.chunks_exact(c).zip(grad.chunks_exact(c)).zip(dx.chunks_exact_mut(c)) {
            let (mean, rstd) = moments(x, eps);
            for ((((xh, gg), &v), &dy), &gm) in xhat.iter_mut().zip(g.iter_mut()).zip(x).zip(grad).zip(gamma) {
                *xh = (v - mean) * rstd;
                *gg = dy * gm;
            }
            let mean_g = sum(&g) / c as f32;
            let mean_gx = dot(&g, &xhat) / c as f32;
            for (((d, &gg), &xh), ((dg, db), &dy)) in dx.iter_mut().zip(&g).zip(&xhat).zip(d_gamma.iter_mut().zip(d_beta.iter_mut()).zip(grad)) {
                *d = rstd * (gg - mean_g - xh * mean_gx);
                *dg += dy * xh;
                *db += dy;
            }
        }
    }
}

/// Mean and `1/√(var + eps)` of a row (biased variance, two passes), accumulated in f64: with
/// f32 sums the gradients of COBOT's factors, which are sensitive to them, moved 2-4× further
/// from the reference (tests/peft_gradients.rs).
#[inline(always)]
fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f64;
    let add = |a: f64, b: f64| a + b;
    let mean = lanes(x, 0.0, |a, v| a + v as f64, add) / n;
    let var = lanes(x, 0.0, |a, v| a + (v as f64 - mean).powi(2), add) / n;
    (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
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

    /// Forward and backward of rows with an offset mean, against the formulas in f64.
    #[test]
    fn layer_norm_rows_match_f64() {
        let (rows, c, eps) = (5, 67, 1e-6f32);
        let value = |i: usize, salt: f32| ((i as f32 * 0.731 + salt).sin() * 3.0) + 10.0;
        let x: Vec<f32> = (0..rows * c).map(|i| value(i, 0.0)).collect();
        let grad: Vec<f32> = (0..rows * c).map(|i| value(i, 1.0) - 10.0).collect();
        let gamma: Vec<f32> = (0..c).map(|i| 1.0 + 0.01 * i as f32).collect();
        let beta: Vec<f32> = (0..c).map(|i| 0.1 * i as f32).collect();
        let mut y = vec![0.0; rows * c];
        layer_norm_rows(&x, &gamma, &beta, eps, &mut y);
        let (mut dx, mut dg, mut db) = (vec![0.0; rows * c], vec![0.0; c], vec![0.0; c]);
        layer_norm_rows_backward(&x, &gamma, &grad, eps, &mut dx, &mut dg, &mut db);
        let (mut want_dg, mut want_db) = (vec![0.0f64; c], vec![0.0f64; c]);
        for r in 0..rows {
            let row: Vec<f64> = x[r * c..(r + 1) * c].iter().map(|&v| v as f64).collect();
            let mean = row.iter().sum::<f64>() / c as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / c as f64;
            let rstd = 1.0 / (var + eps as f64).sqrt();
            let xhat: Vec<f64> = row.iter().map(|v| (v - mean) * rstd).collect();
            let g: Vec<f64> = (0..c)
                .map(|j| grad[r * c + j] as f64 * gamma[j] as f64)
                .collect();
            let mean_g = g.iter().sum::<f64>() / c as f64;
            let mean_gx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / c as f64;
            for j in 0..c {
                let want_y = xhat[j] * gamma[j] as f64 + beta[j] as f64;
                assert!((y[r * c + j] as f64 - want_y).abs() < 1e-5, "y[{r},{j}]");
                let want_dx = rstd * (g[j] - mean_g - xhat[j] * mean_gx);
                assert!((dx[r * c + j] as f64 - want_dx).abs() < 1e-5, "dx[{r},{j}]");
                want_dg[j] += grad[r * c + j] as f64 * xhat[j];
                want_db[j] += grad[r * c + j] as f64;
            }
        }
        for j in 0..c {
            assert!((dg[j] as f64 - want_dg[j]).abs() < 1e-4, "d_gamma[{j}]");
            assert!((db[j] as f64 - want_db[j]).abs() < 1e-4, "d_beta[{j}]");
        }
    }
}
