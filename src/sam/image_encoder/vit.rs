//! SAM's ViT image encoder (docs/sam.md#image-encoder): `[B, 3, S, S]` → `[B, out_chans, S/16, S/16]`;
//! its configuration, read off the checkpoint, and its checkpoint keys.

use burn::module::{Module, Param, ParamId};
use burn::tensor::{Int, Tensor, TensorData};

use crate::checkpoint::RawTensor;
use crate::kernels;
use crate::nn::init::Init;
use crate::nn::layers::{Conv2d, LayerNorm, Linear};
use crate::nn::to_raw;
use crate::nn::weights::{ModelLoadError, Weights};
use crate::peft::BlockModules;
use crate::peft::cobot::CobotShared;
use crate::sam::attention::rel_pos_attention;
use crate::sam::transforms::{linear_interpolation_matrix, resize_bilinear};

const EPS: f64 = 1e-6;

/// The ViT's sizes, read off a checkpoint by [`infer_config`].
#[derive(Debug, Clone, PartialEq)]
pub struct VitConfig {
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub patch_size: usize,
    /// The input size the checkpoint was made for (`pos_embed` grid × patch).
    pub native_image_size: usize,
    pub window_size: usize,
    pub global_attn_indexes: Vec<usize>,
    pub mlp_dim: usize,
    pub out_chans: usize,
}

impl VitConfig {
    /// A lower bound on the memory (bytes) one image needs in the encoder at input size `s`, in
    /// f32: the image as it is resized, normalised and padded (three `s × s × 3` copies), and a
    /// block's widest live activations per token (input, q/k/v, MLP hidden, output).
    pub fn min_memory_bytes(&self, s: usize) -> u64 {
        let (s, c) = (s as u128, self.embed_dim as u128);
        let tokens = (s / self.patch_size as u128).pow(2);
        let image = 3 * s * s * 3;
        let per_token = c + 3 * c + self.mlp_dim as u128 + c;
        u64::try_from(4 * (image + tokens * per_token)).unwrap_or(u64::MAX)
    }

    /// The bytes of the largest single tensor one image makes in the encoder at input size `s`
    /// (f32; attention's scores aside, which run in bands under a size of their own): the image,
    /// the windowed blocks' q/k/v over the padded windows, a global block's q/k/v, or the MLP's
    /// hidden layer. A GPU allocates each tensor as one buffer, whose size it limits.
    pub fn largest_tensor_bytes(&self, s: usize) -> u64 {
        let (s, c) = (s as u128, self.embed_dim as u128);
        let grid = s / self.patch_size as u128;
        let tokens = grid * grid;
        let windowed_tokens = if self.window_size > 0 && self.global_attn_indexes.len() < self.depth
        {
            let window = self.window_size as u128;
            grid.div_ceil(window).pow(2) * window * window
        } else {
            0
        };
        let largest = [
            3 * s * s,
            3 * c * windowed_tokens.max(tokens),
            self.mlp_dim as u128 * tokens,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        u64::try_from(4 * largest).unwrap_or(u64::MAX)
    }
}

/// The ViT's sizes from its tensors' shapes (docs/sam.md#configuration-from-tensor-shapes).
pub fn infer_config(w: &Weights) -> Result<VitConfig, ModelLoadError> {
    let patch = w.shape("image_encoder.patch_embed.proj.weight")?;
    let [embed_dim, 3, patch_size, patch_w] = *patch else {
        return Err(ModelLoadError::WrongShape {
            key: "image_encoder.patch_embed.proj.weight".into(),
            found: patch.to_vec(),
            expected: "[C, 3, p, p]".into(),
        });
    };
    if patch_size != patch_w || patch_size == 0 {
        return Err(ModelLoadError::NotSam(format!(
            "patch embedding kernel {patch_size}x{patch_w} is not square"
        )));
    }
    let pos = w.shape("image_encoder.pos_embed")?;
    let grid = match *pos {
        [1, gh, gw, c] if gh == gw && c == embed_dim && gh > 0 => gh,
        _ => {
            return Err(ModelLoadError::WrongShape {
                key: "image_encoder.pos_embed".into(),
                found: pos.to_vec(),
                expected: format!("[1, g, g, {embed_dim}]"),
            });
        }
    };
    let depth = w.count_indexed("image_encoder.blocks.", ".norm1.weight");
    if depth == 0 {
        return Err(ModelLoadError::MissingKey(
            "image_encoder.blocks.0.norm1.weight".into(),
        ));
    }
    let head_dim = w.shape("image_encoder.blocks.0.attn.rel_pos_h")?[1];
    if head_dim == 0 || !embed_dim.is_multiple_of(head_dim) {
        return Err(ModelLoadError::NotSam(format!(
            "relative-position width {head_dim} does not divide the embedding width {embed_dim}"
        )));
    }
    // Global blocks have tables for the whole grid (2g−1 rows); windowed ones for a window.
    let mut global_attn_indexes = Vec::new();
    let mut window_size = None;
    for i in 0..depth {
        let rows = w.shape(&format!("image_encoder.blocks.{i}.attn.rel_pos_h"))?[0];
        if rows == 2 * grid - 1 {
            global_attn_indexes.push(i);
        } else if rows % 2 == 1 {
            let ws = rows.div_ceil(2);
            if window_size.is_some_and(|s| s != ws) {
                return Err(ModelLoadError::NotSam(format!(
                    "block {i} has a {rows}-row relative-position table, unlike the other windowed blocks"
                )));
            }
            window_size = Some(ws);
        } else {
            return Err(ModelLoadError::NotSam(format!(
                "block {i}'s relative-position table has an even number of rows ({rows})"
            )));
        }
    }
    Ok(VitConfig {
        embed_dim,
        depth,
        num_heads: embed_dim / head_dim,
        patch_size,
        native_image_size: grid * patch_size,
        window_size: window_size.unwrap_or(0),
        global_attn_indexes,
        mlp_dim: w.shape("image_encoder.blocks.0.mlp.lin1.weight")?[0],
        out_chans: w.shape("image_encoder.neck.0.weight")?[0],
    })
}

#[derive(Module, Debug)]
pub struct VitEncoder {
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

impl VitEncoder {
    /// Declared in checkpoint order: random weights are drawn in it.
    pub fn load(w: &mut Weights, cfg: &VitConfig) -> Result<Self, ModelLoadError> {
        let c = cfg.embed_dim;
        let p = cfg.patch_size;
        let grid = cfg.native_image_size / p;
        let pos_embed = w.param(
            "image_encoder.pos_embed",
            [1, grid, grid, c],
            Init::Constant(0.0),
        )?;
        let patch_embed = Conv2d::load(w, "image_encoder.patch_embed.proj", [c, 3, p], p, 0, true)?;
        let blocks = (0..cfg.depth)
            .map(|i| {
                let global = cfg.global_attn_indexes.contains(&i);
                Block::load(w, &format!("image_encoder.blocks.{i}"), cfg, global)
            })
            .collect::<Result<_, _>>()?;
        let out = cfg.out_chans;
        Ok(Self {
            patch_embed,
            pos_embed,
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
        // The 1×1 convolution and its LayerNorm2d run channels-last, as a linear layer and a
        // LayerNorm over the last axis.
        let x = self
            .neck_norm1
            .forward(self.neck_conv1.forward_pointwise(x));
        let x = x.permute([0, 3, 1, 2]); // [B, out_chans, g, g]
        self.neck_norm2
            .forward_channels_first(self.neck_conv2.forward(x))
    }

    fn pos_embed_for_grid(&self, g: usize) -> Tensor<4> {
        resize_pos_embed(self.pos_embed.val(), g)
    }

    /// The parameters whose shape follows the input size, with their values as a checkpoint
    /// native at a `g × g` token grid holds them: the position embedding and the global blocks'
    /// relative-position tables, each resized exactly as the forward pass resizes it at that
    /// grid. A checkpoint written with them computes the same there and is read back as native
    /// there, so Meta's `Sam` built at that size loads it (docs/sam.md#other-input-sizes).
    pub fn tensors_for_grid(&self, g: usize) -> anyhow::Result<Vec<(ParamId, RawTensor)>> {
        let mut tensors = vec![(self.pos_embed.id, to_raw(self.pos_embed_for_grid(g))?)];
        for block in self.blocks.iter().filter(|b| b.window_size == 0) {
            for table in [&block.attn.rel_pos_h, &block.attn.rel_pos_w] {
                tensors.push((table.id, to_raw(rel_pos_rows(table.val(), 2 * g - 1))?));
            }
        }
        Ok(tensors)
    }
}

/// A `[1, G, G, C]` position embedding bilinearly resized to a `g × g` grid
/// (`align_corners = false`, no antialias; docs/sam.md#other-input-sizes).
pub fn resize_pos_embed(pos: Tensor<4>, g: usize) -> Tensor<4> {
    if pos.dims()[1] == g {
        return pos;
    }
    resize_bilinear(pos.permute([0, 3, 1, 2]), [g, g], false).permute([0, 2, 3, 1])
}

/// A pre-norm transformer block, windowed (`window_size > 0`) or global.
#[derive(Module, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub lin1: Linear,
    pub lin2: Linear,
    /// The PEFT modules of this block, when attached; called at the qkv projection and the MLP.
    pub peft: Option<BlockModules>,
    pub window_size: usize,
}

impl Block {
    /// `global`: the block attends over the whole grid, not within windows.
    fn load(
        w: &mut Weights,
        prefix: &str,
        cfg: &VitConfig,
        global: bool,
    ) -> Result<Self, ModelLoadError> {
        let c = cfg.embed_dim;
        let side = if global {
            cfg.native_image_size / cfg.patch_size
        } else {
            cfg.window_size
        };
        Ok(Self {
            norm1: LayerNorm::load(w, &format!("{prefix}.norm1"), c, EPS)?,
            attn: Attention::load(w, &format!("{prefix}.attn"), cfg, side)?,
            norm2: LayerNorm::load(w, &format!("{prefix}.norm2"), c, EPS)?,
            lin1: Linear::load(w, &format!("{prefix}.mlp.lin1"), c, cfg.mlp_dim, true)?,
            lin2: Linear::load(w, &format!("{prefix}.mlp.lin2"), cfg.mlp_dim, c, true)?,
            peft: None,
            window_size: if global { 0 } else { cfg.window_size },
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
        let shortcut = x.clone();
        let [b, h, w, c] = x.dims();
        let rows = self.norm1.forward(x).reshape([b * h * w, c]);
        let addend = self
            .peft
            .as_ref()
            .and_then(|p| p.qkv_addend(&rows, index, cross_block));
        let qkv = self.attn.qkv(rows, addend).reshape([b, h, w, 3 * c]);
        // The qkv of a padding token: SAM's zero rows projected give the bias.
        let pad = match &self.attn.qkv.bias {
            Some(bias) => bias.val(),
            None => Tensor::zeros([3 * c], &qkv.device()),
        };
        let (wh, ww) = match self.window_size {
            0 => (h, w),
            ws => (ws, ws),
        };
        let (rel_h, rel_w) = self.attn.rel_pos_tables(wh, ww);
        let attended = rel_pos_attention(qkv, pad, rel_h, rel_w, self.attn.num_heads);
        // The output projection runs on real tokens only, after the padding is cropped.
        let x = shortcut + self.attn.proj.forward(attended.reshape([b, h, w, c]));
        let n = self.norm2.forward(x.clone());
        let mut mlp = self
            .lin2
            .forward(kernels::gelu(self.lin1.forward(n.clone())));
        let dims = n.dims();
        let addend = self
            .peft
            .as_ref()
            .and_then(|p| p.mlp_addend(&n.flatten::<2>(0, 2), index, cross_block));
        if let Some(delta) = addend {
            mlp = mlp + delta.reshape(dims);
        }
        x + mlp
    }
}

/// Multi-head self-attention with decomposed relative positions.
#[derive(Module, Debug)]
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    /// `[2·S−1, head_dim]` tables along height and width.
    pub rel_pos_h: Param<Tensor<2>>,
    pub rel_pos_w: Param<Tensor<2>>,
    pub num_heads: usize,
}

impl Attention {
    /// `side`: the grid side attended over, whose relative positions the tables hold.
    fn load(
        w: &mut Weights,
        prefix: &str,
        cfg: &VitConfig,
        side: usize,
    ) -> Result<Self, ModelLoadError> {
        let c = cfg.embed_dim;
        let table = [2 * side - 1, c / cfg.num_heads];
        Ok(Self {
            qkv: Linear::load(w, &format!("{prefix}.qkv"), c, 3 * c, true)?,
            proj: Linear::load(w, &format!("{prefix}.proj"), c, c, true)?,
            rel_pos_h: w.param(&format!("{prefix}.rel_pos_h"), table, Init::Constant(0.0))?,
            rel_pos_w: w.param(&format!("{prefix}.rel_pos_w"), table, Init::Constant(0.0))?,
            num_heads: cfg.num_heads,
        })
    }

    /// Rows `x` `[n, C]` → `[n, 3C]`, plus a PEFT method's low-rank addend `(z, up)` (`z·upᵀ`,
    /// added as the output is written).
    pub fn qkv(&self, x: Tensor<2>, addend: Option<(Tensor<2>, Tensor<2>)>) -> Tensor<2> {
        match addend {
            Some((z, up)) => self.qkv.forward_low_rank(x, z, up),
            None => self.qkv.forward(x),
        }
    }

    /// SAM's relative-position tables for an `h × w` grid: `([h, h, hd], [w, w, hd])`.
    pub fn rel_pos_tables(&self, h: usize, w: usize) -> (Tensor<3>, Tensor<3>) {
        (
            rel_pos_for(self.rel_pos_h.val(), h, h),
            rel_pos_for(self.rel_pos_w.val(), w, w),
        )
    }
}

/// A relative-position table resized linearly to `rows` rows, as SAM's `get_rel_pos` does when
/// its length is not the one the grid needs.
fn rel_pos_rows(table: Tensor<2>, rows: usize) -> Tensor<2> {
    let stored = table.dims()[0];
    if stored == rows {
        return table;
    }
    linear_interpolation_matrix(stored, rows, false, &table.device()).matmul(table)
}

/// SAM's `get_rel_pos`: the `[q, k, hd]` table of relative embeddings for query/key sizes
/// `q` and `k`, linearly resizing the stored table when its length is not `2·max(q,k)−1`.
pub fn rel_pos_for(table: Tensor<2>, q: usize, k: usize) -> Tensor<3> {
    let hd = table.dims()[1];
    let device = table.device();
    let table = rel_pos_rows(table, 2 * q.max(k) - 1);
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

#[cfg(test)]
mod tests {
    use crate::sam::SamConfig;
    use crate::sam::image_encoder::EncoderConfig;

    /// ViT-B: at 1024 px the MLP's hidden layer (4096 tokens × 3072) is the largest tensor; at
    /// 256 px the windowed q/k/v, over 4 windows of 14 × 14 padded from the 16 × 16 grid.
    #[test]
    fn largest_tensor_is_the_mlp_or_the_padded_windows() {
        let EncoderConfig::Vit(vit_b) = SamConfig::named("vit_b").unwrap().encoder;
        assert_eq!(vit_b.largest_tensor_bytes(1024), 4 * 4096 * 3072);
        assert_eq!(vit_b.largest_tensor_bytes(256), 4 * 4 * 196 * 3 * 768);
    }
}
