//! Exact (erf) GELU and its derivative, split across the worker threads.

use rayon::prelude::*;

/// Elements per parallel task: large enough to amortise scheduling.
const CHUNK: usize = 1 << 14;

/// `0.5·x·(1 + erf(x/√2))`, as PyTorch's `nn.GELU()`.
pub(super) fn forward(x: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(out, x)| {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = 0.5 * v * (1.0 + libm::erff(v * std::f32::consts::FRAC_1_SQRT_2));
            }
        });
    out
}

/// `grad · d/dx GELU(x)` = `grad · (Φ(x) + x·φ(x))`.
pub(super) fn backward(x: &[f32], grad: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), grad.len());
    let inv_sqrt_2pi = 0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2;
    let mut out = vec![0.0; x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK)))
        .for_each(|(out, (x, grad))| {
            for ((o, &v), &g) in out.iter_mut().zip(x).zip(grad) {
                let cdf = 0.5 * (1.0 + libm::erff(v * std::f32::consts::FRAC_1_SQRT_2));
                let pdf = inv_sqrt_2pi * (-0.5 * v * v).exp();
                *o = g * (cdf + v * pdf);
            }
        });
    out
}
