//! `y = x·Wᵀ + b` and its gradients on the gemm crate directly, for `x` `[m, k]`, `W` `[n, k]`
//! (PyTorch's layout) and `b` `[n]`.
//!
//! burn's `linear` zeroes each output and adds the bias in passes of its own on one thread, and
//! its product leaves gemm's threading to pack the weight on the calling thread while the
//! others wait; [`super::matmul::gemm_parallel`] splits the output columns across the threads
//! instead, and the output starts as the bias, written by the threads.

use rayon::prelude::*;

use super::matmul::{Mat, gemm_parallel, parallel_product};
use super::repeat_rows;

/// Columns per parallel task of the bias gradient.
const TILE: usize = 32;

/// `x·Wᵀ + b`, row-major `[m, n]`.
pub(super) fn forward(x: &[f32], w: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(b.len(), n, "bias length");
    let mut out = repeat_rows(b, m);
    accumulate(&mut out, x, w, m, k, n);
    out
}

/// `out += x·Wᵀ`, `out` `[m, n]`: also a low-rank addend `z·upᵀ` (`z` `[m, r]`, `up` `[n, r]`).
pub(super) fn accumulate(out: &mut [f32], x: &[f32], w: &[f32], m: usize, k: usize, n: usize) {
    gemm_parallel(out, Mat::rows(x, m, k), Mat::rows(w, n, k).t(), true);
}

/// `x·Wᵀ` without a bias, `[m, n]`.
pub(super) fn product(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    parallel_product(Mat::rows(x, m, k), Mat::rows(w, n, k).t())
}

/// `dL/dx = grad · W`, `[m, k]`, for `grad` `[m, n]`.
pub(super) fn input_grad(grad: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    parallel_product(Mat::rows(grad, m, n), Mat::rows(w, n, k))
}

/// `dL/dW = gradᵀ · x`, `[n, k]`.
pub(super) fn weight_grad(grad: &[f32], x: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    parallel_product(Mat::rows(grad, m, n).t(), Mat::rows(x, m, k))
}

/// `dL/db`: the column sums of `grad` `[m, n]`, in parallel over column tiles.
pub(super) fn bias_grad(grad: &[f32], m: usize, n: usize) -> Vec<f32> {
    assert_eq!(grad.len(), m * n, "gradient shape");
    let mut out = vec![0.0; n];
    out.par_chunks_mut(TILE).enumerate().for_each(|(t, sums)| {
        let c0 = t * TILE;
        for row in grad.chunks_exact(n) {
            for (s, v) in sums.iter_mut().zip(&row[c0..]) {
                *s += v;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * seed).sin()).collect()
    }

    /// The forward product (with and without the bias) and every gradient against plain loops.
    #[test]
    fn products_match_loops() {
        let (k, n) = (7, 5);
        for m in [3, 70] {
            let (x, w, b, g) = (
                values(m * k, 0.7),
                values(n * k, 1.3),
                values(n, 2.1),
                values(m * n, 0.3),
            );
            let y = forward(&x, &w, &b, m, k, n);
            let unbiased = product(&x, &w, m, k, n);
            let dx = input_grad(&g, &w, m, k, n);
            let dw = weight_grad(&g, &x, m, k, n);
            let db = bias_grad(&g, m, n);
            let close = |got: f32, want: f32| assert!((got - want).abs() < 1e-4, "{got} {want}");
            for i in 0..m {
                for j in 0..n {
                    let dot: f32 = (0..k).map(|c| x[i * k + c] * w[j * k + c]).sum();
                    close(y[i * n + j], dot + b[j]);
                    close(unbiased[i * n + j], dot);
                }
                for c in 0..k {
                    close(
                        dx[i * k + c],
                        (0..n).map(|j| g[i * n + j] * w[j * k + c]).sum(),
                    );
                }
            }
            for j in 0..n {
                close(db[j], (0..m).map(|i| g[i * n + j]).sum());
                for c in 0..k {
                    close(
                        dw[j * k + c],
                        (0..m).map(|i| g[i * n + j] * x[i * k + c]).sum(),
                    );
                }
            }
        }
    }
}
