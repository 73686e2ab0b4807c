//! A bounds-checked view of the `gemm` crate: the small per-head products of the attention
//! kernel, and the parallel products of [`super::linear`].

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
    product(
        out,
        Layout::RowMajor,
        a,
        b,
        alpha,
        accumulate,
        gemm::Parallelism::None,
    );
}

/// `out = a · b` (or `out += a · b` with `accumulate`) on rayon's worker threads, for products
/// large enough to split (gemm runs small ones on one thread); `out` is `a.rows × b.cols` in
/// `layout`.
pub(super) fn gemm_parallel(out: &mut [f32], layout: Layout, a: Mat, b: Mat, accumulate: bool) {
    product(
        out,
        layout,
        a,
        b,
        1.0,
        accumulate,
        gemm::Parallelism::Rayon(0),
    );
}

/// How a product's output is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    RowMajor,
    ColumnMajor,
}

fn product(
    out: &mut [f32],
    layout: Layout,
    a: Mat,
    b: Mat,
    alpha: f32,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert!(out.len() >= m * n, "output too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out[..m * n].fill(0.0);
        }
        return;
    }
    let (out_row_stride, out_col_stride) = match layout {
        Layout::RowMajor => (n, 1),
        Layout::ColumnMajor => (1, m),
    };
    // SAFETY: both views were bounds-checked when made (`Mat::rows`, kept by `t`), `out` holds
    // the m × n result in either layout, and none of the slices overlap `out` (it is borrowed
    // mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            out_col_stride as isize,
            out_row_stride as isize,
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
            parallelism,
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

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn a_view_larger_than_its_slice_is_refused() {
        Mat::rows(&[0.0; 5], 2, 3);
    }
}
