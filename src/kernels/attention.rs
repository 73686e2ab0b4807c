//! SAM's attention with decomposed relative positions, fused: windows, padding, heads, the
//! relative-position terms, softmax and both products in one pass per (image, window, head),
//! in parallel. Queries go in tiles whose scores stay in cache, and the probabilities are never
//! stored: the backward pass recomputes them tile by tile, so memory stays at one tile of scores
//! per thread (flash-attention style, without the online softmax: a tile holds whole rows).

use std::ops::Range;

use rayon::prelude::*;

use super::math::{self, RelPos, RelPosGrads};
use super::matmul::{Mat, gemm};
use super::{SharedOut, zeros};

/// The geometry of one call: `qkv` is `[b, h, w, 3·heads·hd]` (channels `[3][heads][hd]`),
/// attended in windows of `wh × ww` (the whole grid for global attention). The grid is padded to
/// whole windows with `pad` tokens, which are keys but never queries.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    pub b: usize,
    pub h: usize,
    pub w: usize,
    pub heads: usize,
    pub hd: usize,
    pub wh: usize,
    pub ww: usize,
}

/// One (image, window, head): its window origin and real query rows / columns.
#[derive(Clone, Copy)]
struct Task {
    b: usize,
    y0: usize,
    x0: usize,
    head: usize,
    qh: usize,
    qw: usize,
}

/// A task's gathered inputs: `q` `[nq, hd]` (real queries, row-major over `qh × qw`), `k` and
/// `v` `[nk, hd]` (every window position, padding included).
struct Gathered {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

/// Gradients of one task that other tasks share, summed by [`backward`] (its q, k and v
/// gradients of real tokens are its own, and written by the task).
struct TaskGrads {
    /// `[hd]` each: the k and v gradients of the padding keys, summed.
    pad_k: Vec<f32>,
    pad_v: Vec<f32>,
    d_rel_h: Vec<f32>,
    d_rel_w: Vec<f32>,
}

/// Inputs shared by the forward and backward passes.
pub(super) struct Inputs<'a> {
    pub qkv: &'a [f32],
    /// `[3C]`: the qkv row of a padding token (only its k and v parts are used).
    pub pad: &'a [f32],
    /// `[wh, wh, hd]`: relative embeddings by (query row, key row) within a window.
    pub rel_h: &'a [f32],
    /// `[ww, ww, hd]`: by (query column, key column).
    pub rel_w: &'a [f32],
}

/// Gradients with respect to each of [`Inputs`].
pub(super) struct Grads {
    pub qkv: Vec<f32>,
    pub pad: Vec<f32>,
    pub rel_h: Vec<f32>,
    pub rel_w: Vec<f32>,
}

impl Geometry {
    fn channels(&self) -> usize {
        self.heads * self.hd
    }

    fn keys(&self) -> usize {
        self.wh * self.ww
    }

    /// Every (image, window, head). Windows of the last band have fewer queries, so the
    /// tasks' costs differ: they run with `with_max_len(1)`, which lets idle threads steal single
    /// tasks. rayon's default split gives each thread a fixed quarter of the list at 2 threads,
    /// and at 256 px one thread got the 12 heads of the only full window (77% of the work).
    fn tasks(&self) -> Vec<Task> {
        let mut tasks = Vec::new();
        for b in 0..self.b {
            for y0 in (0..self.h).step_by(self.wh) {
                for x0 in (0..self.w).step_by(self.ww) {
                    for head in 0..self.heads {
                        tasks.push(Task {
                            b,
                            y0,
                            x0,
                            head,
                            qh: self.wh.min(self.h - y0),
                            qw: self.ww.min(self.w - x0),
                        });
                    }
                }
            }
        }
        tasks
    }

    /// Offset of token (y, x) of image b in a `[b, h, w, channels]` buffer.
    fn token(&self, b: usize, y: usize, x: usize, channels: usize) -> usize {
        ((b * self.h + y) * self.w + x) * channels
    }

    /// Offset of the head slice of task `t`'s query `i` in a `[b, h, w, channels]` buffer.
    fn query(&self, t: Task, i: usize, channels: usize) -> usize {
        self.token(t.b, t.y0 + i / t.qw, t.x0 + i % t.qw, channels) + t.head * self.hd
    }

    fn check(&self, inputs: &Inputs) {
        let c = self.channels();
        assert_eq!(inputs.qkv.len(), self.b * self.h * self.w * 3 * c, "qkv");
        assert_eq!(inputs.pad.len(), 3 * c, "pad");
        assert_eq!(inputs.rel_h.len(), self.wh * self.wh * self.hd, "rel_h");
        assert_eq!(inputs.rel_w.len(), self.ww * self.ww * self.hd, "rel_w");
    }

    fn gather(&self, inputs: &Inputs, t: Task) -> Gathered {
        let (c, hd) = (self.channels(), self.hd);
        let head = t.head * hd;
        let mut q = Vec::with_capacity(t.qh * t.qw * hd);
        for i in 0..t.qh * t.qw {
            let at = self.query(t, i, 3 * c);
            q.extend_from_slice(&inputs.qkv[at..at + hd]);
        }
        let mut k = Vec::with_capacity(self.keys() * hd);
        let mut v = Vec::with_capacity(self.keys() * hd);
        for ky in 0..self.wh {
            for kx in 0..self.ww {
                let (y, x) = (t.y0 + ky, t.x0 + kx);
                let (row, at) = if y < self.h && x < self.w {
                    (inputs.qkv, self.token(t.b, y, x, 3 * c))
                } else {
                    (inputs.pad, 0)
                };
                k.extend_from_slice(&row[at + c + head..at + c + head + hd]);
                v.extend_from_slice(&row[at + 2 * c + head..at + 2 * c + head + hd]);
            }
        }
        Gathered { q, k, v }
    }

    /// Softmax probabilities of the queries `rows` into `p` (`[rows.len(), nk]`):
    /// `softmax(scale·q·kᵀ + rel_h + rel_w)`.
    fn probabilities(
        &self,
        inputs: &Inputs,
        t: Task,
        g: &Gathered,
        rows: Range<usize>,
        p: &mut [f32],
    ) {
        let (hd, nk) = (self.hd, self.keys());
        let scale = (hd as f32).powf(-0.5);
        let q = &g.q[rows.start * hd..rows.end * hd];
        gemm(
            p,
            Mat::rows(q, rows.len(), hd),
            Mat::rows(&g.k, nk, hd).t(),
            scale,
            false,
        );
        let (mut terms_h, mut terms_w) = (vec![0.0; self.wh], vec![0.0; self.ww]);
        for ((i, row), q) in rows.zip(p.chunks_exact_mut(nk)).zip(q.chunks_exact(hd)) {
            let rel = self.rel_pos(inputs, t, i, q);
            math::rel_pos_softmax(row, &rel, &mut terms_h, &mut terms_w);
        }
    }

    /// Query `i` of task `t` (values `q`) and its rows of the relative-position tables.
    fn rel_pos<'a>(&self, inputs: &Inputs<'a>, t: Task, i: usize, q: &'a [f32]) -> RelPos<'a> {
        let (y, x) = (i / t.qw, i % t.qw);
        let (h, w) = (self.wh * self.hd, self.ww * self.hd);
        RelPos {
            q,
            h: &inputs.rel_h[y * h..(y + 1) * h],
            w: &inputs.rel_w[x * w..(x + 1) * w],
        }
    }

    /// The task's queries in tiles whose `tile × keys` scores stay in cache (global attention
    /// at 1024 px has 4096 × 4096 per head).
    fn query_tiles(&self, t: Task) -> impl Iterator<Item = Range<usize>> {
        let nq = t.qh * t.qw;
        let tile = (TILE_SCORES / self.keys()).max(8);
        (0..nq)
            .step_by(tile)
            .map(move |start| start..(start + tile).min(nq))
    }
}

/// Scores per query tile: 256 KiB of f32, which stays in L2.
const TILE_SCORES: usize = 1 << 16;

/// `[b, h, w, C]`: the attention output of every real token, before the projection.
pub(super) fn forward(geo: Geometry, inputs: &Inputs) -> Vec<f32> {
    geo.check(inputs);
    let (c, hd) = (geo.channels(), geo.hd);
    let mut out = zeros(geo.b * geo.h * geo.w * c);
    let shared = SharedOut::new(&mut out);
    geo.tasks().par_iter().with_max_len(1).for_each(|&t| {
        let g = geo.gather(inputs, t);
        let mut o = vec![0.0; t.qh * t.qw * hd];
        let mut p = Vec::new();
        for rows in geo.query_tiles(t) {
            p.resize(rows.len() * geo.keys(), 0.0);
            geo.probabilities(inputs, t, &g, rows.clone(), &mut p);
            gemm(
                &mut o[rows.start * hd..rows.end * hd],
                Mat::rows(&p, rows.len(), geo.keys()),
                Mat::rows(&g.v, geo.keys(), hd),
                1.0,
                false,
            );
        }
        for (i, row) in o.chunks_exact(hd).enumerate() {
            // SAFETY: every real token is a query of exactly one window, and this task writes
            // only its head's columns of its window's tokens.
            unsafe { shared.write(geo.query(t, i, c), row) };
        }
    });
    out
}

/// Gradients of every input, given `grad` `[b, h, w, C]` of the output.
pub(super) fn backward(geo: Geometry, inputs: &Inputs, grad: &[f32]) -> Grads {
    geo.check(inputs);
    let (c, hd, nk) = (geo.channels(), geo.hd, geo.keys());
    assert_eq!(grad.len(), geo.b * geo.h * geo.w * c, "output gradient");
    let scale = (hd as f32).powf(-0.5);
    let tasks = geo.tasks();
    let mut qkv_grad = zeros(inputs.qkv.len());
    let shared = SharedOut::new(&mut qkv_grad);
    let task_grads: Vec<TaskGrads> = tasks
        .par_iter()
        .with_max_len(1)
        .map(|&t| {
            let g = geo.gather(inputs, t);
            let nq = t.qh * t.qw;
            let mut d_out = Vec::with_capacity(nq * hd);
            for i in 0..nq {
                let at = geo.query(t, i, c);
                d_out.extend_from_slice(&grad[at..at + hd]);
            }
            let (mut d_rel_h, mut d_rel_w) = (
                vec![0.0; geo.wh * geo.wh * hd],
                vec![0.0; geo.ww * geo.ww * hd],
            );
            let (mut dq, mut dk, mut dv) =
                (vec![0.0; nq * hd], vec![0.0; nk * hd], vec![0.0; nk * hd]);
            let (mut p, mut ds) = (Vec::new(), Vec::new());
            let (mut sums_h, mut sums_w) = (vec![0.0; geo.wh], vec![0.0; geo.ww]);
            let (rows_h, rows_w) = (geo.wh * hd, geo.ww * hd);
            for rows in geo.query_tiles(t) {
                let n = rows.len();
                p.resize(n * nk, 0.0);
                ds.resize(n * nk, 0.0);
                geo.probabilities(inputs, t, &g, rows.clone(), &mut p);
                let d_out = &d_out[rows.start * hd..rows.end * hd];
                let q = &g.q[rows.start * hd..rows.end * hd];
                // dV += Pᵀ·dO; dP = dO·Vᵀ.
                let first = rows.start == 0;
                gemm(
                    &mut dv,
                    Mat::rows(&p, n, nk).t(),
                    Mat::rows(d_out, n, hd),
                    1.0,
                    !first,
                );
                gemm(
                    &mut ds,
                    Mat::rows(d_out, n, hd),
                    Mat::rows(&g.v, nk, hd).t(),
                    1.0,
                    false,
                );
                // Softmax backward, row by row, with the relative-position terms' gradients.
                let dq = &mut dq[rows.start * hd..rows.end * hd];
                for (i, ((ds_row, p_row), (q, dq_row))) in rows.clone().zip(
                    ds.chunks_exact_mut(nk)
                        .zip(p.chunks_exact(nk))
                        .zip(q.chunks_exact(hd).zip(dq.chunks_exact_mut(hd))),
                ) {
                    let rel = geo.rel_pos(inputs, t, i, q);
                    let (y, x) = (i / t.qw, i % t.qw);
                    let mut grads = RelPosGrads {
                        q: dq_row,
                        h: &mut d_rel_h[y * rows_h..(y + 1) * rows_h],
                        w: &mut d_rel_w[x * rows_w..(x + 1) * rows_w],
                    };
                    math::rel_pos_softmax_backward(
                        ds_row,
                        p_row,
                        &rel,
                        &mut grads,
                        &mut sums_h,
                        &mut sums_w,
                    );
                }
                // dQ += scale·dS·K; dK += scale·dSᵀ·Q.
                gemm(
                    dq,
                    Mat::rows(&ds, n, nk),
                    Mat::rows(&g.k, nk, hd),
                    scale,
                    true,
                );
                gemm(
                    &mut dk,
                    Mat::rows(&ds, n, nk).t(),
                    Mat::rows(q, n, hd),
                    scale,
                    !first,
                );
            }
            let (mut pad_k, mut pad_v) = (vec![0.0; hd], vec![0.0; hd]);
            // SAFETY (the writes): every real token is a query and a key of exactly one window,
            // and this task writes only its head's q, k and v columns of its window's tokens,
            // so no other task touches them.
            for (i, row) in dq.chunks_exact(hd).enumerate() {
                unsafe { shared.write(geo.query(t, i, 3 * c), row) };
            }
            for (j, (dk, dv)) in dk.chunks_exact(hd).zip(dv.chunks_exact(hd)).enumerate() {
                let (y, x) = (t.y0 + j / geo.ww, t.x0 + j % geo.ww);
                if y < geo.h && x < geo.w {
                    let at = geo.token(t.b, y, x, 3 * c) + t.head * hd;
                    unsafe { shared.write(at + c, dk) };
                    unsafe { shared.write(at + 2 * c, dv) };
                } else {
                    axpy(&mut pad_k, 1.0, dk);
                    axpy(&mut pad_v, 1.0, dv);
                }
            }
            TaskGrads {
                pad_k,
                pad_v,
                d_rel_h,
                d_rel_w,
            }
        })
        .collect();

    let mut pad = vec![0.0; 3 * c];
    for (t, tg) in tasks.iter().zip(&task_grads) {
        let head = t.head * hd;
        axpy(&mut pad[c + head..c + head + hd], 1.0, &tg.pad_k);
        axpy(&mut pad[2 * c + head..2 * c + head + hd], 1.0, &tg.pad_v);
    }
    Grads {
        qkv: qkv_grad,
        pad,
        rel_h: sum_tasks(inputs.rel_h.len(), &task_grads, |tg| &tg.d_rel_h),
        rel_w: sum_tasks(inputs.rel_w.len(), &task_grads, |tg| &tg.d_rel_w),
    }
}

/// `Σ_tasks part(task)` (`len` values), in parallel over chunks of the sum: a table per task,
/// at 512 px tens of millions of additions.
fn sum_tasks(
    len: usize,
    task_grads: &[TaskGrads],
    part: impl Fn(&TaskGrads) -> &[f32] + Sync,
) -> Vec<f32> {
    let mut sum = zeros(len);
    sum.par_chunks_mut(SUM_CHUNK)
        .enumerate()
        .for_each(|(i, chunk)| {
            for tg in task_grads {
                axpy(chunk, 1.0, &part(tg)[i * SUM_CHUNK..]);
            }
        });
    sum
}

/// Values per parallel chunk of [`sum_tasks`].
const SUM_CHUNK: usize = 4096;

/// `y += a·x`.
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * seed).sin()).collect()
    }

    /// The backward pass sums the padding keys' and the relative-position tables' gradients
    /// over every (image, window, head) task: in task order, whichever thread ran which task,
    /// so the gradients are the same bits on any number of threads. Windowed (padded on both
    /// axes) and global attention.
    #[test]
    fn gradients_do_not_depend_on_the_threads() {
        for (wh, ww) in [(4, 3), (7, 8)] {
            let geo = Geometry {
                b: 2,
                h: 7,
                w: 8,
                heads: 3,
                hd: 8,
                wh,
                ww,
            };
            let c = geo.channels();
            let qkv = values(geo.b * geo.h * geo.w * 3 * c, 0.37);
            let pad = values(3 * c, 0.7);
            let rel_h = values(wh * wh * geo.hd, 1.3);
            let rel_w = values(ww * ww * geo.hd, 0.9);
            let grad = values(geo.b * geo.h * geo.w * c, 0.11);
            let inputs = Inputs {
                qkv: &qkv,
                pad: &pad,
                rel_h: &rel_h,
                rel_w: &rel_w,
            };
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let g = pool.install(|| backward(geo, &inputs, &grad));
                [g.qkv, g.pad, g.rel_h, g.rel_w]
                    .map(|v| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            };
            let one = run(1);
            for threads in [2, 3, 4, 2, 2] {
                assert!(run(threads) == one, "{wh}×{ww}: {threads} threads");
            }
        }
    }
}
