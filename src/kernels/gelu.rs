//! Exact (erf) GELU and its derivative, split across the worker threads.

use rayon::prelude::*;

use super::{math, zeros};

/// Elements per parallel task: large enough to amortise scheduling.
const CHUNK: usize = 1 << 14;

/// `0.5·x·(1 + erf(x/√2))`, as PyTorch's `nn.GELU()`.
pub(super) fn forward(x: &[f32]) -> Vec<f32> {
    let mut out = zeros(x.len());
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(out, x)| math::gelu(x, out));
    out
}

/// `grad · d/dx GELU(x)`.
pub(super) fn backward(x: &[f32], grad: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), grad.len());
    let mut out = zeros(x.len());
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK)))
        .for_each(|(out, (x, grad))| math::gelu_backward(x, grad, out));
    out
}
