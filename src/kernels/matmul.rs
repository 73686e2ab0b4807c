//! A bounds-checked view of the `gemm` crate: the small per-head products of the attention
//! kernel, and the parallel products of [`super::linear`].

use rayon::prelude::*;

use super::SharedOut;

/// A strided `rows × cols` view of a slice.
#[derive(Clone, Copy)]
pub(super) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// Row-major `rows × cols` at the start of `data`.
    pub(super) fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        let view = Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        };
        view.check();
        view
    }

    /// The transposed view (no copy).
    pub(super) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Columns `range` of this view (no copy).
    fn columns(self, range: std::ops::Range<usize>) -> Self {
        assert!(range.end <= self.cols, "columns out of range");
        let view = Self {
            data: &self.data[(range.start * self.col_stride).min(self.data.len())..],
            cols: range.len(),
            ..self
        };
        view.check();
        view
    }

    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}

/// `out = alpha · a · b`, or `out += alpha · a · b` with `accumulate`; `out` is row-major
/// `a.rows × b.cols`. Runs on the calling thread: the kernels parallelise over heads.
pub(super) fn gemm(out: &mut [f32], a: Mat, b: Mat, alpha: f32, accumulate: bool) {
    assert!(out.len() >= a.rows * b.cols, "output too small");
    // SAFETY: `out` holds the m × n values and is borrowed mutably, so it overlaps neither view.
    unsafe { product_into(out.as_mut_ptr(), b.cols, a, b, alpha, accumulate) }
}

/// `out = a · b` (or `out += a · b` with `accumulate`) on rayon's worker threads; `out` is
/// row-major `a.rows × b.cols`. Each thread computes a block of output columns with gemm's
/// single-threaded kernel: gemm's own threading packs its left operand on the calling thread
/// while the others wait and meets the threads once per block of the inner dimension (measured
/// at 256 rows: 5–15% slower). Outputs too narrow to split by columns (LoRA's rank-wide
/// gradients) are split by rows.
///
/// The result is the same bits for any number of threads: gemm sums each output value in one
/// chain of FMAs per block of the inner dimension, wherever the value falls in the output, so a
/// block of columns or rows gives the values the whole product would, provided that every part
/// takes gemm's general kernel (see [`split`]) and that the inner dimension is cut into the same
/// blocks (see [`product_in_depth_blocks`]).
pub(super) fn gemm_parallel(out: &mut [f32], a: Mat, b: Mat, accumulate: bool) {
    let (m, n) = (a.rows, b.cols);
    let Some((axis, parts)) = split(m, n, a.cols, rayon::current_num_threads()) else {
        assert!(out.len() >= m * n, "output too small");
        // SAFETY: `out` holds the m × n values and is borrowed mutably, so it overlaps neither
        // view.
        return unsafe { product_in_depth_blocks(out.as_mut_ptr(), n, a, b, accumulate) };
    };
    assert!(out.len() >= m * n, "output too small");
    let out = SharedOut::new(out);
    (0..parts).into_par_iter().for_each(|part| {
        let block = |len: usize| len * part / parts..len * (part + 1) / parts;
        let (start, a, b) = match axis {
            Axis::Columns => {
                let columns = block(n);
                (columns.start, a, b.columns(columns))
            }
            Axis::Rows => {
                let rows = block(m);
                (rows.start * n, a.t().columns(rows).t(), b)
            }
        };
        // SAFETY: `out` holds the m × n result; each part writes (and with `accumulate` reads)
        // only its own block of columns or rows, so the parts' blocks are disjoint, and `out`
        // overlaps neither view (it was borrowed mutably).
        unsafe { product_in_depth_blocks(out.at(start), n, a, b, accumulate) }
    });
}

/// How [`gemm_parallel`] splits an `m × n` output of inner dimension `k` on `threads` threads:
/// the axis and the number of parts, or `None` for one product on the calling thread.
///
/// gemm leaves its general kernel for products with at most 2 inner values, with one row or
/// column (matrix-vector kernels) or with at most 16 × 16 outputs (dot-product kernels), and
/// those sum in other orders. A part keeps the whole product's inner dimension and one of its
/// sides, so it only needs more than [`SMALL_OUTPUT`] values to take the kernel the whole
/// product takes. Products that would need smaller parts, or take those kernels whole, run on
/// one thread: with m·n·k ≥ [`SPLIT_MIN_WORK`] they are rare in SAM.
fn split(m: usize, n: usize, k: usize, threads: usize) -> Option<(Axis, usize)> {
    if m * n * k < SPLIT_MIN_WORK || threads == 1 || k <= 2 || m <= 1 || n <= 1 {
        return None;
    }
    let (axis, len, other, min) = if n >= 2 * SPLIT_MIN_COLUMNS {
        (Axis::Columns, n, m, SPLIT_MIN_COLUMNS)
    } else if m >= 2 * SPLIT_MIN_ROWS {
        (Axis::Rows, m, n, SPLIT_MIN_ROWS)
    } else {
        return None;
    };
    // The smallest part has `len / parts` of the split side.
    let parts = (1..=threads.min(len / min))
        .rev()
        .find(|&parts| (len / parts) * other > SMALL_OUTPUT)?;
    (parts > 1).then_some((axis, parts))
}

/// Outputs of at most this many values take gemm's dot-product kernels.
const SMALL_OUTPUT: usize = 16 * 16;

/// `out = a · b` (or `+=` with `accumulate`) as [`product_into`] does, with the inner dimension
/// cut into blocks of at most [`DEPTH_BLOCK`] that depend on its length alone. gemm cuts it
/// itself, by its cache sizes for most shapes but into 512 for products of at most 64 × 64
/// outputs, so a part of 64 columns of a larger product summed in other blocks than the whole
/// (a depth of 768: 512 + 256 against 384 + 384); given blocks this short, gemm takes each
/// whole. The cut is the one gemm's `kernel_params` makes for L1 caches of 32 to 48 KiB
/// (⌈k / ⌈k / 512⌉⌉), so on those machines the values are those of one gemm call as before.
///
/// # Safety
/// As [`product_into`].
unsafe fn product_in_depth_blocks(
    out: *mut f32,
    row_stride: usize,
    a: Mat,
    b: Mat,
    accumulate: bool,
) {
    let k = a.cols;
    let blocks = k.div_ceil(DEPTH_BLOCK).max(1);
    let depth = k.div_ceil(blocks);
    for (i, start) in (0..k.max(1)).step_by(depth.max(1)).enumerate() {
        let range = start..(start + depth).min(k);
        let (a, b) = (a.columns(range.clone()), b.t().columns(range).t());
        // SAFETY: as the caller vouches; the blocks after the first add to the first's sums.
        unsafe { product_into(out, row_stride, a, b, 1.0, accumulate || i > 0) }
    }
}

/// The longest block of the inner dimension of one gemm call in [`gemm_parallel`].
const DEPTH_BLOCK: usize = 512;

/// How [`gemm_parallel`] splits the output.
#[derive(Clone, Copy)]
enum Axis {
    Columns,
    Rows,
}

/// `a · b` in a fresh row-major vector, by [`gemm_parallel`].
pub(super) fn parallel_product(a: Mat, b: Mat) -> Vec<f32> {
    let mut out = super::zeros(a.rows * b.cols);
    gemm_parallel(&mut out, a, b, false);
    out
}

/// Products smaller than this (m·n·k) run on one thread.
const SPLIT_MIN_WORK: usize = 1 << 20;
/// Output columns per thread at least.
const SPLIT_MIN_COLUMNS: usize = 32;
/// Output rows per thread at least, when the columns are too few to split.
const SPLIT_MIN_ROWS: usize = 64;

/// `out = alpha · a · b` (or `+=` with `accumulate`) for a row-major output whose rows are
/// `row_stride` apart.
///
/// # Safety
/// `out` must be valid for reads and writes of the `a.rows × b.cols` values at that stride, and
/// overlap neither view.
unsafe fn product_into(
    out: *mut f32,
    row_stride: usize,
    a: Mat,
    b: Mat,
    alpha: f32,
    accumulate: bool,
) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let (m, n, k) = (a.rows, b.cols, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                // SAFETY: row i of the output, as the caller vouches.
                unsafe { std::slice::from_raw_parts_mut(out.add(i * row_stride), n).fill(0.0) };
            }
        }
        return;
    }
    // SAFETY: both views were bounds-checked when made (`Mat::rows`, kept by `t` and
    // `columns`); the caller vouches for `out`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out,
            1,
            row_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            // Single-threaded: the callers split the work themselves (see `gemm_parallel`).
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_with_transposed_views_match_loops() {
        let a: Vec<f32> = (0..6).map(|v| v as f32 - 2.0).collect(); // 2 × 3
        let b: Vec<f32> = (0..12).map(|v| (v as f32).sin()).collect(); // 4 × 3
        let mut out = vec![1.0; 8];
        gemm(
            &mut out,
            Mat::rows(&a, 2, 3),
            Mat::rows(&b, 4, 3).t(),
            0.5,
            true,
        );
        for i in 0..2 {
            for j in 0..4 {
                let dot: f32 = (0..3).map(|c| a[i * 3 + c] * b[j * 3 + c]).sum();
                assert!((out[i * 4 + j] - (1.0 + 0.5 * dot)).abs() < 1e-6);
            }
        }
    }

    /// Large enough to be split across threads, by columns and (a narrow output) by rows,
    /// overwriting and accumulating, against plain loops.
    #[test]
    fn parallel_products_match_loops() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for (m, k, n) in [(33, 130, 260), (600, 300, 8)] {
            assert!(m * n * k >= SPLIT_MIN_WORK);
            assert!(n >= 2 * SPLIT_MIN_COLUMNS || m >= 2 * SPLIT_MIN_ROWS);
            let a: Vec<f32> = (0..m * k).map(|v| (v as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n * k).map(|v| (v as f32 * 0.11).cos()).collect(); // n × k
            for accumulate in [false, true] {
                let mut out = vec![0.5; m * n];
                let (a, b) = (Mat::rows(&a, m, k), Mat::rows(&b, n, k).t());
                pool.install(|| gemm_parallel(&mut out, a, b, accumulate));
                for i in 0..m {
                    for j in 0..n {
                        let dot: f32 = (0..k).map(|c| a.data[i * k + c] * b.data[j * k + c]).sum();
                        let want = dot + if accumulate { 0.5 } else { 0.0 };
                        let got = out[i * n + j];
                        assert!(
                            (got - want).abs() < 1e-3,
                            "{m}×{n} {accumulate}: {got} {want}"
                        );
                    }
                }
            }
        }
    }

    /// `a · b` by [`gemm_parallel`] on `threads` threads, as bits.
    fn product_bits(threads: usize, a: Mat, b: Mat, accumulate: bool) -> Vec<u32> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut out: Vec<f32> = (0..a.rows * b.cols).map(|v| (v as f32).cos()).collect();
        pool.install(|| gemm_parallel(&mut out, a, b, accumulate));
        out.iter().map(|v| v.to_bits()).collect()
    }

    /// Split by columns or rows into any number of parts, a product is the same bits as on one
    /// thread, for operands in either layout: shapes whose parts would have summed their inner
    /// dimension in other blocks (LoRA's gradients, 64 × 8 parts of depth 768 at 3 threads) or
    /// taken gemm's dot-product kernels (7 × 32 parts at 8 threads) among them.
    #[test]
    fn split_products_are_the_same_bits_on_any_thread_count() {
        for (m, k, n) in [
            (192, 768, 8),
            (7, 2048, 256),
            (8, 1024, 768),
            (300, 1100, 40),
            (768, 96, 288),
            (2, 4096, 200),
            (1, 20000, 100),
            (130, 65, 2000),
        ] {
            assert!(m * n * k >= SPLIT_MIN_WORK);
            let a: Vec<f32> = (0..m * k).map(|v| (v as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n * k).map(|v| (v as f32 * 0.11).cos()).collect();
            for layout in 0..4 {
                let a = match layout & 1 {
                    0 => Mat::rows(&a, m, k),
                    _ => Mat::rows(&a, k, m).t(),
                };
                let b = match layout & 2 {
                    0 => Mat::rows(&b, k, n),
                    _ => Mat::rows(&b, n, k).t(),
                };
                for accumulate in [false, true] {
                    let one = product_bits(1, a, b, accumulate);
                    for threads in [2, 3, 4, 5, 8, 16] {
                        assert!(
                            product_bits(threads, a, b, accumulate) == one,
                            "{m}×{k}×{n}, layout {layout}, {accumulate}: {threads} threads"
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn a_view_larger_than_its_slice_is_refused() {
        Mat::rows(&[0.0; 5], 2, 3);
    }
}
