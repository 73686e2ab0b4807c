//! `y = x·Wᵀ + b` and its gradients on the gemm crate directly, for `x` `[m, k]`, `W` `[n, k]`
//! (PyTorch's layout) and `b` `[n]`.
//!
//! burn's `linear` zeroes each output, adds the bias in a pass of its own on one thread, and
//! leaves gemm to re-pack the whole weight on every call. With few rows (SAM's encoder at
//! 256 px runs 256 tokens) that packing is not amortised: a column-major product, transposed
//! afterwards, packs the small `x` instead and was 1.2–1.4× faster at `256 × 768 → 768 / 3072`
//! on two threads. With many rows the row-major product is faster, so that is kept there.

use rayon::prelude::*;

use super::matmul::{Layout, Mat, gemm_parallel};
use super::zeros;

/// Up to this many rows the product is computed column-major and transposed (measured with the
/// gemm crate at 2 threads: faster at 256 rows for every ViT shape, slower at 1024).
const COLUMN_MAJOR_MAX_ROWS: usize = 512;

/// Rows or columns per parallel task of the elementwise passes.
const TILE: usize = 32;

/// `x·Wᵀ + b`, row-major `[m, n]`.
pub(super) fn forward(x: &[f32], w: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(b.len(), n, "bias length");
    let (x, w) = (Mat::rows(x, m, k), Mat::rows(w, n, k).t());
    if m <= COLUMN_MAJOR_MAX_ROWS {
        let mut columns = zeros(m * n);
        gemm_parallel(&mut columns, Layout::ColumnMajor, x, w, false);
        transpose_adding(&columns, n, m, b)
    } else {
        let mut out = zeros(m * n);
        out.par_chunks_mut(n).for_each(|row| row.copy_from_slice(b));
        gemm_parallel(&mut out, Layout::RowMajor, x, w, true);
        out
    }
}

/// `dL/dx = grad · W`, `[m, k]`, for `grad` `[m, n]`.
pub(super) fn input_grad(grad: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = zeros(m * k);
    gemm_parallel(
        &mut out,
        Layout::RowMajor,
        Mat::rows(grad, m, n),
        Mat::rows(w, n, k),
        false,
    );
    out
}

/// `dL/dW = gradᵀ · x`, `[n, k]`.
pub(super) fn weight_grad(grad: &[f32], x: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = zeros(n * k);
    gemm_parallel(
        &mut out,
        Layout::RowMajor,
        Mat::rows(grad, m, n).t(),
        Mat::rows(x, m, k),
        false,
    );
    out
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

/// The row-major `[cols, rows]` transpose of row-major `[rows, cols]` `src`, plus `row_values`
/// (`[rows]`) along each output row, in parallel over tiles of output rows.
fn transpose_adding(src: &[f32], rows: usize, cols: usize, row_values: &[f32]) -> Vec<f32> {
    assert_eq!(src.len(), rows * cols);
    assert_eq!(row_values.len(), rows);
    let mut out = zeros(rows * cols);
    out.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(t, block)| {
            let c0 = t * TILE;
            let block_cols = block.len() / rows;
            for r0 in (0..rows).step_by(TILE) {
                let r1 = rows.min(r0 + TILE);
                for c in 0..block_cols {
                    let dst = &mut block[c * rows..][r0..r1];
                    for ((d, r), add) in dst.iter_mut().zip(r0..).zip(&row_values[r0..r1]) {
                        *d = src[r * cols + c0 + c] + add;
                    }
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

    /// Both orientations of the forward product, and every gradient, against plain loops.
    #[test]
    fn products_match_loops() {
        let (k, n) = (7, 5);
        for m in [3, COLUMN_MAJOR_MAX_ROWS + 2] {
            let (x, w, b, g) = (
                values(m * k, 0.7),
                values(n * k, 1.3),
                values(n, 2.1),
                values(m * n, 0.3),
            );
            let y = forward(&x, &w, &b, m, k, n);
            let dx = input_grad(&g, &w, m, k, n);
            let dw = weight_grad(&g, &x, m, k, n);
            let db = bias_grad(&g, m, n);
            let close = |got: f32, want: f32| assert!((got - want).abs() < 1e-4, "{got} {want}");
            for i in 0..m {
                for j in 0..n {
                    let dot: f32 = (0..k).map(|c| x[i * k + c] * w[j * k + c]).sum();
                    close(y[i * n + j], dot + b[j]);
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

    #[test]
    fn transpose_crosses_tiles() {
        let (rows, cols) = (TILE + 3, 2 * TILE + 1);
        let (src, add) = (values(rows * cols, 0.9), values(rows, 0.4));
        let t = transpose_adding(&src, rows, cols, &add);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(t[c * rows + r], src[r * cols + c] + add[r]);
            }
        }
    }
}
