//! SAM's prompt encoder (docs/sam.md#prompt-encoder): points and boxes → sparse embeddings, no mask → dense.

use std::f32::consts::PI;

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};

use super::config::PromptEncoderConfig;
use crate::nn::init::Init;
use crate::nn::layers::{Conv2d, LayerNorm};
use crate::nn::weights::{ModelLoadError, Weights};

/// Prompts for a batch of N masks, in the model's input frame (pixels of the S×S input).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompts {
    /// `[N][P]` points `(x, y)` with labels 1 (foreground) / 0 (background).
    pub points: Vec<Vec<(f32, f32, i32)>>,
    /// `N` boxes `(x1, y1, x2, y2)`, or empty.
    pub boxes: Vec<[f32; 4]>,
}

impl Prompts {
    /// How many masks these prompts ask for.
    pub fn batch(&self) -> usize {
        self.points.len().max(self.boxes.len()).max(1)
    }
}

#[derive(Module, Debug)]
pub struct PromptEncoder {
    /// `[2, E/2]` random Fourier feature matrix.
    pub pe_gaussian: Param<Tensor<2>>,
    /// Negative point, positive point, box corner 1, box corner 2: `[1, E]` each.
    pub point_embeddings: Vec<Param<Tensor<2>>>,
    pub not_a_point_embed: Param<Tensor<2>>,
    pub no_mask_embed: Param<Tensor<2>>,
    /// The mask-input branch (`mask_downscaling`): a previous low-resolution mask `[N, 1, 4g, 4g]`
    /// → `[N, E, g, g]`, used instead of `no_mask_embed`.
    pub mask_conv1: Conv2d,
    pub mask_norm1: LayerNorm,
    pub mask_conv2: Conv2d,
    pub mask_norm2: LayerNorm,
    pub mask_conv3: Conv2d,
    /// Input image side S and embedding grid side g = S/16.
    pub input_size: usize,
    pub grid: usize,
}

impl PromptEncoder {
    pub fn load(
        w: &mut Weights,
        cfg: &PromptEncoderConfig,
        input_size: usize,
        grid: usize,
    ) -> Result<Self, ModelLoadError> {
        let e = cfg.embed_dim;
        let m = cfg.mask_in_chans;
        let p = "prompt_encoder";
        // The Fourier matrix and `nn.Embedding` tables start N(0, 1), as in PyTorch; declared
        // in checkpoint order, as random weights are drawn in it.
        let normal = Init::Normal(1.0);
        let pe_gaussian = w.param(
            &format!("{p}.pe_layer.positional_encoding_gaussian_matrix"),
            [2, e / 2],
            normal,
        )?;
        let point_embeddings = (0..4)
            .map(|i| w.param(&format!("{p}.point_embeddings.{i}.weight"), [1, e], normal))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            pe_gaussian,
            point_embeddings,
            not_a_point_embed: w.param(&format!("{p}.not_a_point_embed.weight"), [1, e], normal)?,
            no_mask_embed: w.param(&format!("{p}.no_mask_embed.weight"), [1, e], normal)?,
            mask_conv1: Conv2d::load(
                w,
                &format!("{p}.mask_downscaling.0"),
                [m / 4, 1, 2],
                2,
                0,
                true,
            )?,
            mask_norm1: LayerNorm::load(w, &format!("{p}.mask_downscaling.1"), m / 4, 1e-6)?,
            mask_conv2: Conv2d::load(
                w,
                &format!("{p}.mask_downscaling.3"),
                [m, m / 4, 2],
                2,
                0,
                true,
            )?,
            mask_norm2: LayerNorm::load(w, &format!("{p}.mask_downscaling.4"), m, 1e-6)?,
            mask_conv3: Conv2d::load(w, &format!("{p}.mask_downscaling.6"), [e, m, 1], 1, 0, true)?,
            input_size,
            grid,
        })
    }

    fn embed_dim(&self) -> usize {
        self.no_mask_embed.dims()[1]
    }

    /// Random Fourier features of coordinates normalised to [0, 1]: `[..., 2]` → `[..., E]`.
    fn pe_encoding<const D: usize>(&self, coords: Tensor<D>) -> Tensor<D> {
        let z = (coords * 2.0 - 1.0).matmul(self.pe_gaussian.val().unsqueeze()) * (2.0 * PI);
        Tensor::cat(vec![z.clone().sin(), z.cos()], D - 1)
    }

    /// Dense positional encoding of the embedding grid: `[1, E, g, g]`.
    pub fn dense_pe(&self) -> Tensor<4> {
        let g = self.grid;
        let cells: Vec<f32> = (0..g)
            .flat_map(|i| {
                (0..g).flat_map(move |j| [(j as f32 + 0.5) / g as f32, (i as f32 + 0.5) / g as f32])
            })
            .collect();
        let device = self.no_mask_embed.device();
        let coords = Tensor::<3>::from_data(TensorData::new(cells, [g, g, 2]), &device);
        self.pe_encoding(coords).permute([2, 0, 1]).unsqueeze()
    }

    /// The dense embedding of mask prompts `[M, 1, 4g, 4g]` (logits, as the decoder outputs them):
    /// conv 2×2/2, LayerNorm2d, GELU, conv 2×2/2, LayerNorm2d, GELU, conv 1×1 → `[M, E, g, g]`.
    pub fn embed_masks(&self, masks: Tensor<4>) -> Tensor<4> {
        let x = self.mask_conv1.forward(masks);
        let x = burn::tensor::activation::gelu(self.mask_norm1.forward_channels_first(x));
        let x = self.mask_conv2.forward(x);
        let x = burn::tensor::activation::gelu(self.mask_norm2.forward_channels_first(x));
        self.mask_conv3.forward(x)
    }

    /// Sparse `[N, P(+1) + 2·box, E]` and dense `[1 or N, E, g, g]` embeddings, the dense one
    /// from `masks` (`[N or 1, 1, 4g, 4g]`) when given. The dense batch is 1 when every prompt
    /// shares it (no mask, or one mask for all): the decoder broadcasts it, as Meta's does.
    pub fn forward_with_masks(
        &self,
        prompts: &Prompts,
        masks: Option<Tensor<4>>,
    ) -> (Tensor<3>, Tensor<4>) {
        let sparse = self.embed_sparse(prompts);
        let dense = match masks {
            Some(masks) => self.embed_masks(masks),
            None => {
                let (e, g) = (self.embed_dim(), self.grid);
                self.no_mask_embed
                    .val()
                    .reshape([1, e, 1, 1])
                    .expand([1, e, g, g])
            }
        };
        (sparse, dense)
    }

    /// Sparse `[N, P(+1) + 2·box, E]` and dense `[N, E, g, g]` embeddings, shaped as Meta's
    /// prompt encoder returns them.
    pub fn forward(&self, prompts: &Prompts) -> (Tensor<3>, Tensor<4>) {
        let (sparse, dense) = self.forward_with_masks(prompts, None);
        let [_, e, g, _] = dense.dims();
        let n = sparse.dims()[0];
        (sparse, dense.expand([n, e, g, g]))
    }

    /// `[N, P(+1) + 2·box, E]`: the points' and the boxes' embeddings.
    fn embed_sparse(&self, prompts: &Prompts) -> Tensor<3> {
        let n = prompts.batch();
        let device = self.no_mask_embed.device();
        let e = self.embed_dim();
        let mut parts = Vec::new();
        if prompts.points.first().is_some_and(|p| !p.is_empty()) {
            parts.push(self.embed_points(&prompts.points, prompts.boxes.is_empty(), &device));
        }
        if !prompts.boxes.is_empty() {
            parts.push(self.embed_boxes(&prompts.boxes, &device));
        }
        if parts.is_empty() {
            Tensor::zeros([n, 0, e], &device)
        } else {
            Tensor::cat(parts, 1)
        }
    }

    fn embed_points(
        &self,
        points: &[Vec<(f32, f32, i32)>],
        pad: bool,
        device: &Device,
    ) -> Tensor<3> {
        let n = points.len();
        let p = points[0].len() + usize::from(pad);
        let s = self.input_size as f32;
        let mut coords = Vec::with_capacity(n * p * 2);
        let mut labels = Vec::with_capacity(n * p);
        for row in points {
            assert_eq!(
                row.len() + usize::from(pad),
                p,
                "every prompt needs the same number of points"
            );
            for &(x, y, label) in row {
                coords.extend([(x + 0.5) / s, (y + 0.5) / s]);
                labels.push(label);
            }
            if pad {
                // SAM's padding point: (0, 0) with label −1, appended after the +0.5 shift.
                coords.extend([0.0, 0.0]);
                labels.push(-1);
            }
        }
        let coords = Tensor::<3>::from_data(TensorData::new(coords, [n, p, 2]), device);
        let pe = self.pe_encoding(coords);
        // Per-label indicator columns select which learned embedding each row gets.
        let indicator = |want: i32| {
            let mask: Vec<f32> = labels
                .iter()
                .map(|&l| f32::from(u8::from(l == want)))
                .collect();
            Tensor::<3>::from_data(TensorData::new(mask, [n, p, 1]), device)
        };
        let is_pad = indicator(-1);
        let row_embed = |param: &Param<Tensor<2>>| param.val().unsqueeze::<3>();
        pe * (is_pad.clone() * -1.0 + 1.0)
            + is_pad * row_embed(&self.not_a_point_embed)
            + indicator(0) * row_embed(&self.point_embeddings[0])
            + indicator(1) * row_embed(&self.point_embeddings[1])
    }

    fn embed_boxes(&self, boxes: &[[f32; 4]], device: &Device) -> Tensor<3> {
        let n = boxes.len();
        let s = self.input_size as f32;
        let coords: Vec<f32> = boxes.iter().flatten().map(|&v| (v + 0.5) / s).collect();
        let coords = Tensor::<3>::from_data(TensorData::new(coords, [n, 2, 2]), device);
        let pe = self.pe_encoding(coords);
        let corners = Tensor::cat(
            vec![
                self.point_embeddings[2].val(),
                self.point_embeddings[3].val(),
            ],
            0,
        ); // [2, E]
        pe + corners.unsqueeze()
    }
}
