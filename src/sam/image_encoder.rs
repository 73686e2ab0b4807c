//! SAM's ViT image encoder (SPEC §1.2): `[B, 3, S, S]` → `[B, out_chans, S/16, S/16]`.

use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Int, Tensor, TensorData};

use super::config::ImageEncoderConfig;
use super::layers::{Conv2d, LayerNorm, Linear};
use super::transforms::linear_interpolation_matrix;
use super::weights::{ModelLoadError, Weights};
use crate::kernels;
use crate::peft::adapter::Adapter;
use crate::peft::cobot::{CobotShared, lora_columns, module_column};
use crate::peft::lora::LoraQv;

const EPS: f64 = 1e-6;

#[derive(Module, Debug)]
pub struct ImageEncoder {
    pub patch_embed: Conv2d,
    /// `[1, G, G, C]` for the checkpoint's native grid G; resized on the fly for other sizes.
    pub pos_embed: Param<Tensor<4>>,
    pub blocks: Vec<Block>,
    pub neck_conv1: Conv2d,
    pub neck_norm1: LayerNorm,
    pub neck_conv2: Conv2d,
    pub neck_norm2: LayerNorm,
    /// COBOT's tensors shared by all blocks, when attached.
    pub cobot: Option<CobotShared>,
}

impl ImageEncoder {
    pub fn load(w: &mut Weights, cfg: &ImageEncoderConfig) -> Result<Self, ModelLoadError> {
        let c = cfg.embed_dim;
        let p = cfg.patch_size;
        let grid = cfg.native_image_size / p;
        let blocks = (0..cfg.depth)
            .map(|i| {
                let window = if cfg.global_attn_indexes.contains(&i) {
                    0
                } else {
                    cfg.window_size
                };
                Block::load(w, &format!("image_encoder.blocks.{i}"), cfg, window)
            })
            .collect::<Result<_, _>>()?;
        let out = cfg.out_chans;
        Ok(Self {
            patch_embed: Conv2d::load(w, "image_encoder.patch_embed.proj", [c, 3, p], p, 0, true)?,
            pos_embed: w.param("image_encoder.pos_embed", [1, grid, grid, c])?,
            blocks,
            neck_conv1: Conv2d::load(w, "image_encoder.neck.0", [out, c, 1], 1, 0, false)?,
            neck_norm1: LayerNorm::load(w, "image_encoder.neck.1", out, EPS)?,
            neck_conv2: Conv2d::load(w, "image_encoder.neck.2", [out, out, 3], 1, 1, false)?,
            neck_norm2: LayerNorm::load(w, "image_encoder.neck.3", out, EPS)?,
            cobot: None,
        })
    }

    /// `x`: `[B, 3, S, S]`, S a multiple of the patch size.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.patch_embed.forward(x).permute([0, 2, 3, 1]); // [B, g, g, C]
        let [_, g, _, _] = x.dims();
        let mut x = x + self.pos_embed_for_grid(g);
        // [k, T]: one column of cross-block coefficients per COBOT module.
        let cross_block = self.cobot.as_ref().map(CobotShared::module_coefficients);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(x, i, cross_block.as_ref());
        }
        let x = x.permute([0, 3, 1, 2]); // [B, C, g, g]
        let x = self
            .neck_norm1
            .forward_channels_first(self.neck_conv1.forward(x));
        self.neck_norm2
            .forward_channels_first(self.neck_conv2.forward(x))
    }

    fn pos_embed_for_grid(&self, g: usize) -> Tensor<4> {
        resize_pos_embed(self.pos_embed.val(), g)
    }
}

/// A `[1, G, G, C]` position embedding bilinearly resized to a `g × g` grid
/// (`align_corners = false`, no antialias; SPEC §1.9).
pub fn resize_pos_embed(pos: Tensor<4>, g: usize) -> Tensor<4> {
    if pos.dims()[1] == g {
        return pos;
    }
    let resized = interpolate(
        pos.permute([0, 3, 1, 2]),
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([g, g]),
    );
    resized.permute([0, 2, 3, 1])
}

/// A pre-norm transformer block, windowed (`window_size > 0`) or global.
#[derive(Module, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub lin1: Linear,
    pub lin2: Linear,
    /// AdaptFormer branch beside the MLP, when attached.
    pub adapter: Option<Adapter>,
    pub window_size: usize,
}

impl Block {
    fn load(
        w: &mut Weights,
        prefix: &str,
        cfg: &ImageEncoderConfig,
        window_size: usize,
    ) -> Result<Self, ModelLoadError> {
        let c = cfg.embed_dim;
        Ok(Self {
            norm1: LayerNorm::load(w, &format!("{prefix}.norm1"), c, EPS)?,
            attn: Attention::load(w, &format!("{prefix}.attn"), cfg)?,
            norm2: LayerNorm::load(w, &format!("{prefix}.norm2"), c, EPS)?,
            lin1: Linear::load(w, &format!("{prefix}.mlp.lin1"), c, cfg.mlp_dim, true)?,
            lin2: Linear::load(w, &format!("{prefix}.mlp.lin2"), cfg.mlp_dim, c, true)?,
            adapter: None,
            window_size,
        })
    }

    /// `x`: `[B, H, W, C]`; `index`: this block's position; `cross_block`: COBOT's `[k, T]`
    /// coefficients, one column per module.
    pub fn forward(
        &self,
        x: Tensor<4>,
        index: usize,
        cross_block: Option<&Tensor<2>>,
    ) -> Tensor<4> {
        // LoRA block i owns modules 2i (q) and 2i + 1 (v); an adapter block i owns module i.
        let qv_columns = match (&self.attn.lora, cross_block) {
            (Some(_), Some(m)) => Some(lora_columns(m, index)),
            _ => None,
        };

        let shortcut = x.clone();
        let [b, h, w, c] = x.dims();
        let qkv = self.attn.qkv(self.norm1.forward(x), qv_columns); // [B, H, W, 3C]
        // SAM pads the normed input with zeros before qkv; qkv of a zero row is the bias, so
        // padding qkv with its bias is exact and saves the projections of the padding.
        let device = qkv.device();
        let pad = || match &self.attn.qkv.bias {
            Some(bias) => bias.val(),
            None => Tensor::zeros([3 * c], &device),
        };
        let attended = if kernels::fused(&qkv) {
            let (wh, ww) = match self.window_size {
                0 => (h, w),
                ws => (ws, ws),
            };
            let (rel_h, rel_w) = self.attn.rel_pos_tables(wh, ww);
            kernels::rel_pos_attention(qkv, pad(), rel_h, rel_w, self.attn.num_heads)
        } else if self.window_size > 0 {
            self.windowed_attention(qkv, pad())
        } else {
            self.attn
                .attend(qkv, (h, w), self.attn.rel_pos_tables(h, w))
        };
        // The output projection runs on real tokens only, after the padding is cropped.
        let x = shortcut + self.attn.proj.forward(attended.reshape([b, h, w, c]));
        let n = self.norm2.forward(x.clone());
        let mut mlp = self
            .lin2
            .forward(kernels::gelu(self.lin1.forward(n.clone())));
        if let Some(adapter) = &self.adapter {
            let dims = n.dims();
            let column = cross_block.map(|m| module_column(m, index));
            let delta = adapter.forward(n.flatten::<2>(0, 2), column);
            mlp = mlp + delta.reshape(dims);
        }
        x + mlp
    }

    /// SAM's windowed attention on `qkv` `[B, H, W, 3C]` → `[B, H, W, C]` (before the
    /// projection). SAM pads H and W to multiples of the window with `pad` rows and attends in
    /// every window, then crops. Padding tokens are keys here but never queries: their outputs
    /// are cropped anyway. Windows fall into up to four bands (full, or with only the real rows
    /// / columns of the last band as queries), each attended as one batch.
    fn windowed_attention(&self, qkv: Tensor<4>, pad: Tensor<1>) -> Tensor<4> {
        let ws = self.window_size;
        let [b, h, w, c3] = qkv.dims();
        let padded = pad_to_windows(qkv, ws, pad);
        // Every window has the same key grid, so the same relative-position tables.
        let tables = self.attn.rel_pos_tables(ws, ws);
        // (first window, windows, real rows or columns per window) along one axis.
        let bands = |len: usize| {
            let mut out = Vec::new();
            if len / ws > 0 {
                out.push((0, len / ws, ws));
            }
            if !len.is_multiple_of(ws) {
                out.push((len / ws, 1, len % ws));
            }
            out
        };
        let rows = bands(h)
            .into_iter()
            .map(|(y0, ny, qh)| {
                let cols = bands(w)
                    .into_iter()
                    .map(|(x0, nx, qw)| {
                        let region = padded.clone().slice([
                            0..b,
                            y0 * ws..(y0 + ny) * ws,
                            x0 * ws..(x0 + nx) * ws,
                            0..c3,
                        ]);
                        let windows = region
                            .reshape([b, ny, ws, nx, ws, c3])
                            .permute([0, 1, 3, 2, 4, 5])
                            .reshape([b * ny * nx, ws, ws, c3]);
                        let out = self.attn.attend(windows, (qh, qw), tables.clone()); // [b·ny·nx, qh, qw, C]
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
}

/// `[B, H, W, C]` → `[B, Hp, Wp, C]`, H and W padded at the end to multiples of `ws` with rows
/// equal to `pad` (`[C]`).
fn pad_to_windows(x: Tensor<4>, ws: usize, pad: Tensor<1>) -> Tensor<4> {
    let [b, h, w, c] = x.dims();
    let (hp, wp) = (h.next_multiple_of(ws), w.next_multiple_of(ws));
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

/// Multi-head self-attention with decomposed relative positions.
#[derive(Module, Debug)]
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    /// `[2·S−1, head_dim]` tables along height and width.
    pub rel_pos_h: Param<Tensor<2>>,
    pub rel_pos_w: Param<Tensor<2>>,
    /// LoRA on q and v, when attached.
    pub lora: Option<LoraQv>,
    pub num_heads: usize,
}

impl Attention {
    fn load(
        w: &mut Weights,
        prefix: &str,
        cfg: &ImageEncoderConfig,
    ) -> Result<Self, ModelLoadError> {
        let c = cfg.embed_dim;
        let head_dim = c / cfg.num_heads;
        let mut table = |axis: &str| -> Result<Param<Tensor<2>>, ModelLoadError> {
            let key = format!("{prefix}.rel_pos_{axis}");
            let rows = w.shape(&key)?[0];
            w.param(&key, [rows, head_dim])
        };
        let rel_pos_h = table("h")?;
        let rel_pos_w = table("w")?;
        Ok(Self {
            qkv: Linear::load(w, &format!("{prefix}.qkv"), c, 3 * c, true)?,
            proj: Linear::load(w, &format!("{prefix}.proj"), c, c, true)?,
            rel_pos_h,
            rel_pos_w,
            lora: None,
            num_heads: cfg.num_heads,
        })
    }

    /// `x`: `[B, h, w, C]` → `[B, h, w, 3C]`, with the LoRA deltas on q and v when attached.
    /// `lora_columns`: COBOT's (q, v) coefficient columns.
    pub fn qkv(&self, x: Tensor<4>, lora_columns: Option<(Tensor<1>, Tensor<1>)>) -> Tensor<4> {
        let [b, h, w, c] = x.dims();
        let x = x.reshape([b * h * w, c]);
        let mut qkv = self.qkv.forward(x.clone()); // [n, 3C]
        if let Some(lora) = &self.lora {
            let (dq, dv) = lora.deltas(x, lora_columns);
            let dk = dq.zeros_like();
            qkv = qkv + Tensor::cat(vec![dq, dk, dv], 1);
        }
        qkv.reshape([b, h, w, 3 * c])
    }

    /// `qkv`: `[B, h, w, 3C]` → attention output before the projection for the queries of the
    /// top-left `qh × qw` tokens, `[B, qh, qw, C]`; every token is a key.
    /// `tables`: [`Attention::rel_pos_tables`] for the `h × w` key grid.
    pub fn attend(
        &self,
        qkv: Tensor<4>,
        (qh, qw): (usize, usize),
        tables: (Tensor<3>, Tensor<3>),
    ) -> Tensor<4> {
        let [b, h, w, c3] = qkv.dims();
        let (c, nh) = (c3 / 3, self.num_heads);
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
        let scale = (hd as f64).powf(-0.5);
        let attn = (q.clone() * scale).matmul(k.swap_dims(1, 2));
        let attn = add_rel_pos(attn, q, (qh, qw), tables);
        softmax(attn, 2)
            .matmul(v)
            .reshape([b, nh, qh, qw, hd])
            .permute([0, 2, 3, 1, 4])
            .reshape([b, qh, qw, c])
    }

    /// SAM's relative-position tables for an `h × w` grid: `([h, h, hd], [w, w, hd])`.
    pub fn rel_pos_tables(&self, h: usize, w: usize) -> (Tensor<3>, Tensor<3>) {
        (
            rel_pos_for(self.rel_pos_h.val(), h, h),
            rel_pos_for(self.rel_pos_w.val(), w, w),
        )
    }
}

/// `attn[b, (y,x), (ky,kx)] += q·R_h[y,ky] + q·R_w[x,kx]`, with the unscaled `q` of the
/// top-left `qh × qw` queries of the grid of `tables` (their first rows).
fn add_rel_pos(
    attn: Tensor<3>,
    q: Tensor<3>,
    (qh, qw): (usize, usize),
    (r_h, r_w): (Tensor<3>, Tensor<3>),
) -> Tensor<3> {
    let [bn, _, hd] = q.dims();
    let [h, w] = [r_h.dims()[0], r_w.dims()[0]];
    let r_h = r_h.slice([0..qh, 0..h, 0..hd]); // [qh, h, hd]
    let r_w = r_w.slice([0..qw, 0..w, 0..hd]); // [qw, w, hd]
    let r_q = q.reshape([bn, qh, qw, hd]);
    // rel_h[b, y, x, ky] = Σ_c r_q[b, y, x, c] · r_h[y, ky, c]: a batched matmul over y.
    let rel_h = r_q
        .clone()
        .permute([1, 0, 2, 3])
        .reshape([qh, bn * qw, hd])
        .matmul(r_h.swap_dims(1, 2))
        .reshape([qh, bn, qw, h])
        .permute([1, 0, 2, 3]);
    // rel_w[b, y, x, kx] = Σ_c r_q[b, y, x, c] · r_w[x, kx, c]: a batched matmul over x.
    let rel_w = r_q
        .permute([2, 0, 1, 3])
        .reshape([qw, bn * qh, hd])
        .matmul(r_w.swap_dims(1, 2))
        .reshape([qw, bn, qh, w])
        .permute([1, 2, 0, 3]);
    let attn = attn.reshape([bn, qh, qw, h, w])
        + rel_h.reshape([bn, qh, qw, h, 1])
        + rel_w.reshape([bn, qh, qw, 1, w]);
    attn.reshape([bn, qh * qw, h * w])
}

/// SAM's `get_rel_pos`: the `[q, k, hd]` table of relative embeddings for query/key sizes
/// `q` and `k`, linearly resizing the stored table when its length is not `2·max(q,k)−1`.
pub fn rel_pos_for(table: Tensor<2>, q: usize, k: usize) -> Tensor<3> {
    let [rows, hd] = table.dims();
    let needed = 2 * q.max(k) - 1;
    let device = table.device();
    let table = if rows == needed {
        table
    } else {
        let m = linear_interpolation_matrix(rows, needed);
        Tensor::<2>::from_data(TensorData::new(m, [needed, rows]), &device).matmul(table)
    };
    // Computed in f32 like the reference, then truncated.
    let q_scale = (k as f32 / q as f32).max(1.0);
    let k_scale = (q as f32 / k as f32).max(1.0);
    let index: Vec<i64> = (0..q)
        .flat_map(|a| {
            (0..k).map(move |b| {
                (a as f32 * q_scale - b as f32 * k_scale + (k as f32 - 1.0) * k_scale) as i64
            })
        })
        .collect();
    let index = Tensor::<1, Int>::from_data(TensorData::new(index, [q * k]), &device);
    table.select(0, index).reshape([q, k, hd])
}
