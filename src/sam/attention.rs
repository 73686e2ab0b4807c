//! SAM's attention with decomposed relative positions (docs/sam.md#attention-with-relative-positions), windowed or global, from
//! `qkv` to the output before the projection. On the CPU backend the fused kernel of
//! `crate::kernels` runs it; elsewhere (GPUs, other dtypes, `kernels::set_enabled(false)`) it is
//! composed from burn's ops here, and the tests check both against the reference.

use burn::tensor::Tensor;

use crate::kernels;

/// `qkv` `[B, H, W, 3C]` (channels `[3][heads][hd]`) → `[B, H, W, C]`, attended in windows of
/// the size of the relative-position tables (`rel_h` `[wh, wh, hd]`, `rel_w` `[ww, ww, hd]`;
/// the whole grid for global attention). The grid is padded to whole windows with `pad`
/// (`[3C]`, the qkv of a padding token): SAM pads its normed input with zeros before qkv, and
/// qkv of a zero row is the bias, so this is exact and skips the projections of the padding.
pub fn rel_pos_attention(
    qkv: Tensor<4>,
    pad: Tensor<1>,
    rel_h: Tensor<3>,
    rel_w: Tensor<3>,
    heads: usize,
) -> Tensor<4> {
    if kernels::takes_fused_path(&qkv) {
        return kernels::rel_pos_attention(qkv, pad, rel_h, rel_w, heads);
    }
    let [_, h, w, _] = qkv.dims();
    let window = (rel_h.dims()[0], rel_w.dims()[0]);
    if window == (h, w) {
        attend(qkv, (h, w), (rel_h, rel_w), heads)
    } else {
        windowed(qkv, pad, window, (rel_h, rel_w), heads)
    }
}

/// Windowed attention: SAM pads H and W to whole windows with `pad` rows, attends in every
/// window and crops. Padding tokens are keys here but never queries: their outputs would be
/// cropped. Windows fall into up to four bands (full, or with only the real rows / columns of
/// the last band as queries), each attended as one batch.
fn windowed(
    qkv: Tensor<4>,
    pad: Tensor<1>,
    (wh, ww): (usize, usize),
    tables: (Tensor<3>, Tensor<3>),
    heads: usize,
) -> Tensor<4> {
    let [b, h, w, c3] = qkv.dims();
    let padded = pad_to_windows(qkv, (wh, ww), pad);
    // (first window, windows, real rows or columns per window) along an axis of windows `ws`.
    let bands = |len: usize, ws: usize| {
        let mut out = Vec::new();
        if len / ws > 0 {
            out.push((0, len / ws, ws));
        }
        if !len.is_multiple_of(ws) {
            out.push((len / ws, 1, len % ws));
        }
        out
    };
    let rows = bands(h, wh)
        .into_iter()
        .map(|(y0, ny, qh)| {
            let cols = bands(w, ww)
                .into_iter()
                .map(|(x0, nx, qw)| {
                    let region = padded.clone().slice([
                        0..b,
                        y0 * wh..(y0 + ny) * wh,
                        x0 * ww..(x0 + nx) * ww,
                        0..c3,
                    ]);
                    let windows = region
                        .reshape([b, ny, wh, nx, ww, c3])
                        .permute([0, 1, 3, 2, 4, 5])
                        .reshape([b * ny * nx, wh, ww, c3]);
                    let out = attend(windows, (qh, qw), tables.clone(), heads); // [b·ny·nx, qh, qw, C]
                    let c = c3 / 3;
                    out.reshape([b, ny, nx, qh, qw, c])
                        .permute([0, 1, 3, 2, 4, 5])
                        .reshape([b, ny * qh, nx * qw, c])
                })
                .collect();
            Tensor::cat(cols, 2)
        })
        .collect();
    Tensor::cat(rows, 1)
}

/// `[B, H, W, C]` → `[B, Hp, Wp, C]`, H and W padded at the end to multiples of the window with
/// rows equal to `pad` (`[C]`).
fn pad_to_windows(x: Tensor<4>, (wh, ww): (usize, usize), pad: Tensor<1>) -> Tensor<4> {
    let [b, h, w, c] = x.dims();
    let (hp, wp) = (h.next_multiple_of(wh), w.next_multiple_of(ww));
    let pad = pad.reshape([1, 1, 1, c]);
    let mut x = x;
    if hp > h {
        x = Tensor::cat(vec![x, pad.clone().expand([b, hp - h, w, c])], 1);
    }
    if wp > w {
        x = Tensor::cat(vec![x, pad.expand([b, hp, wp - w, c])], 2);
    }
    x
}

/// `qkv`: `[B, h, w, 3C]` → attention output for the queries of the top-left `qh × qw` tokens,
/// `[B, qh, qw, C]`; every token is a key. `tables`: the relative-position tables of the
/// `h × w` key grid.
fn attend(
    qkv: Tensor<4>,
    (qh, qw): (usize, usize),
    tables: (Tensor<3>, Tensor<3>),
    heads: usize,
) -> Tensor<4> {
    let [b, h, w, c3] = qkv.dims();
    let (c, nh) = (c3 / 3, heads);
    let hd = c / nh;
    // Channels of qkv are laid out [3][heads][head_dim].
    let qkv = qkv.reshape([b, h, w, 3, nh, hd]);
    // [b, rows, cols, heads, hd] of part i → [b·heads, rows·cols, hd].
    let part = |i: usize, rows: usize, cols: usize| {
        qkv.clone()
            .slice([0..b, 0..rows, 0..cols, i..i + 1, 0..nh, 0..hd])
            .reshape([b, rows * cols, nh, hd])
            .swap_dims(1, 2)
            .reshape([b * nh, rows * cols, hd])
    };
    let (q, k, v) = (part(0, qh, qw), part(1, h, w), part(2, h, w));
    let (rel_h, rel_w) = rel_pos_terms(q.clone(), (qh, qw), tables);
    kernels::banded_attention(q, k, v, rel_h, rel_w) // [b·heads, qh·qw, hd]
        .reshape([b, nh, qh, qw, hd])
        .permute([0, 2, 3, 1, 4])
        .reshape([b, qh, qw, c])
}

/// SAM's relative-position terms of the scores, `rel_h[b, (y,x), ky] = q[b, (y,x)]·R_h[y,ky]`
/// `[bn, qh·qw, h]` and `rel_w[b, (y,x), kx] = q[b, (y,x)]·R_w[x,kx]` `[bn, qh·qw, w]`, with the
/// unscaled `q` of the top-left `qh × qw` queries and the tables of the `h × w` key grid. In f32
/// at any precision: `(h + w)/(h·w)` of the scores' work.
fn rel_pos_terms(
    q: Tensor<3>,
    (qh, qw): (usize, usize),
    (r_h, r_w): (Tensor<3>, Tensor<3>),
) -> (Tensor<3>, Tensor<3>) {
    let [bn, _, hd] = q.dims();
    let [h, w] = [r_h.dims()[0], r_w.dims()[0]];
    let r_h = r_h.slice([0..qh, 0..h, 0..hd]); // [qh, h, hd]
    let r_w = r_w.slice([0..qw, 0..w, 0..hd]); // [qw, w, hd]
    let r_q = q.reshape([bn, qh, qw, hd]);
    // A batched matmul over y.
    let rel_h = r_q
        .clone()
        .permute([1, 0, 2, 3])
        .reshape([qh, bn * qw, hd])
        .matmul(r_h.swap_dims(1, 2))
        .reshape([qh, bn, qw, h])
        .permute([1, 0, 2, 3]);
    // A batched matmul over x.
    let rel_w = r_q
        .permute([2, 0, 1, 3])
        .reshape([qw, bn * qh, hd])
        .matmul(r_w.swap_dims(1, 2))
        .reshape([qw, bn, qh, w])
        .permute([1, 2, 0, 3]);
    (
        rel_h.reshape([bn, qh * qw, h]),
        rel_w.reshape([bn, qh * qw, w]),
    )
}
