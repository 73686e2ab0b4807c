//! SAM's mask decoder (docs/sam.md#mask-decoder): a two-way transformer between prompt tokens and the image
//! embedding, then upscaling and hypernetwork heads → low-resolution mask logits and IoU scores.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::activation::{relu, softmax};
use burn::tensor::ops::ConvTransposeOptions;

use super::config::{DECODER_HEADS, MaskDecoderConfig};
use crate::kernels;
use crate::nn::init::Init;
use crate::nn::layers::{LayerNorm, Linear, Mlp};
use crate::nn::weights::{ModelLoadError, Weights};

const EPS: f64 = 1e-5;
const PREFIX: &str = "mask_decoder";

/// Attention with down-projected q/k/v and a separate output projection.
#[derive(Module, Debug)]
pub struct DecoderAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
}

impl DecoderAttention {
    fn load(
        w: &mut Weights,
        prefix: &str,
        dim: usize,
        inner: usize,
    ) -> Result<Self, ModelLoadError> {
        let lin = |w: &mut Weights, name: &str, a, b| {
            Linear::load(w, &format!("{prefix}.{name}"), a, b, true)
        };
        Ok(Self {
            q_proj: lin(w, "q_proj", dim, inner)?,
            k_proj: lin(w, "k_proj", dim, inner)?,
            v_proj: lin(w, "v_proj", dim, inner)?,
            out_proj: lin(w, "out_proj", inner, dim)?,
        })
    }

    /// `q`: `[N, Lq, E]`, `k`, `v`: `[N, Lk, E]` → `[N, Lq, E]`.
    pub fn forward(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let heads = |x: Tensor<3>| {
            let [n, l, c] = x.dims();
            x.reshape([n, l, DECODER_HEADS, c / DECODER_HEADS])
                .swap_dims(1, 2)
        };
        let q = heads(self.q_proj.forward(q));
        let k = heads(self.k_proj.forward(k));
        let v = heads(self.v_proj.forward(v));
        let hd = q.dims()[3];
        let attn = kernels::product(q, k.swap_dims(2, 3)) / (hd as f64).sqrt();
        // The batch is the larger of q's and k's: one of them may be a broadcast image.
        let out = kernels::product(softmax(attn, 3), v);
        let [n, h, lq, _] = out.dims();
        self.out_proj
            .forward(out.swap_dims(1, 2).reshape([n, lq, h * hd]))
    }
}

#[derive(Module, Debug)]
pub struct TwoWayBlock {
    pub self_attn: DecoderAttention,
    pub norm1: LayerNorm,
    pub cross_attn_token_to_image: DecoderAttention,
    pub norm2: LayerNorm,
    pub mlp_lin1: Linear,
    pub mlp_lin2: Linear,
    pub norm3: LayerNorm,
    pub norm4: LayerNorm,
    pub cross_attn_image_to_token: DecoderAttention,
    pub skip_first_layer_pe: bool,
}

impl TwoWayBlock {
    fn load(
        w: &mut Weights,
        prefix: &str,
        cfg: &MaskDecoderConfig,
        first: bool,
    ) -> Result<Self, ModelLoadError> {
        let (d, x) = (cfg.dim, cfg.cross_attn_dim);
        let norm =
            |w: &mut Weights, name: &str| LayerNorm::load(w, &format!("{prefix}.{name}"), d, EPS);
        Ok(Self {
            self_attn: DecoderAttention::load(w, &format!("{prefix}.self_attn"), d, d)?,
            norm1: norm(w, "norm1")?,
            cross_attn_token_to_image: DecoderAttention::load(
                w,
                &format!("{prefix}.cross_attn_token_to_image"),
                d,
                x,
            )?,
            norm2: norm(w, "norm2")?,
            mlp_lin1: Linear::load(w, &format!("{prefix}.mlp.lin1"), d, cfg.mlp_dim, true)?,
            mlp_lin2: Linear::load(w, &format!("{prefix}.mlp.lin2"), cfg.mlp_dim, d, true)?,
            norm3: norm(w, "norm3")?,
            norm4: norm(w, "norm4")?,
            cross_attn_image_to_token: DecoderAttention::load(
                w,
                &format!("{prefix}.cross_attn_image_to_token"),
                d,
                x,
            )?,
            skip_first_layer_pe: first,
        })
    }

    /// Updates (queries `[N, T, E]`, keys `[N, HW, E]`).
    fn forward(
        &self,
        queries: Tensor<3>,
        keys: Tensor<3>,
        query_pe: Tensor<3>,
        key_pe: Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let queries = if self.skip_first_layer_pe {
            self.self_attn
                .forward(queries.clone(), queries.clone(), queries)
        } else {
            let q = queries.clone() + query_pe.clone();
            queries.clone() + self.self_attn.forward(q.clone(), q, queries)
        };
        let queries = self.norm1.forward(queries);

        let q = queries.clone() + query_pe.clone();
        let k = keys.clone() + key_pe.clone();
        let queries = self
            .norm2
            .forward(queries + self.cross_attn_token_to_image.forward(q, k, keys.clone()));

        let mlp = self
            .mlp_lin2
            .forward(relu(self.mlp_lin1.forward(queries.clone())));
        let queries = self.norm3.forward(queries + mlp);

        let q = queries.clone() + query_pe;
        let k = keys.clone() + key_pe;
        let keys = self.norm4.forward(
            keys + self
                .cross_attn_image_to_token
                .forward(k, q, queries.clone()),
        );
        (queries, keys)
    }
}

#[derive(Module, Debug)]
pub struct MaskDecoder {
    pub iou_token: Param<Tensor<2>>,
    pub mask_tokens: Param<Tensor<2>>,
    pub layers: Vec<TwoWayBlock>,
    pub final_attn_token_to_image: DecoderAttention,
    pub norm_final_attn: LayerNorm,
    /// ConvTranspose weights `[in, out, 2, 2]` and biases.
    pub upscale1_weight: Param<Tensor<4>>,
    pub upscale1_bias: Param<Tensor<1>>,
    pub upscale_norm: LayerNorm,
    pub upscale2_weight: Param<Tensor<4>>,
    pub upscale2_bias: Param<Tensor<1>>,
    pub hypernetworks: Vec<Mlp>,
    pub iou_head: Mlp,
}

impl MaskDecoder {
    /// Declared in checkpoint order: random weights are drawn in it.
    pub fn load(w: &mut Weights, cfg: &MaskDecoderConfig) -> Result<Self, ModelLoadError> {
        let d = cfg.dim;
        // `nn.Embedding` tables: N(0, 1), as in PyTorch.
        let iou_token = w.param(
            &format!("{PREFIX}.iou_token.weight"),
            [1, d],
            Init::Normal(1.0),
        )?;
        let mask_tokens = w.param(
            &format!("{PREFIX}.mask_tokens.weight"),
            [cfg.num_mask_tokens, d],
            Init::Normal(1.0),
        )?;
        let t = format!("{PREFIX}.transformer");
        let layers = (0..cfg.depth)
            .map(|l| TwoWayBlock::load(w, &format!("{t}.layers.{l}"), cfg, l == 0))
            .collect::<Result<_, _>>()?;
        let final_attn_token_to_image = DecoderAttention::load(
            w,
            &format!("{t}.final_attn_token_to_image"),
            d,
            cfg.cross_attn_dim,
        )?;
        let norm_final_attn = LayerNorm::load(w, &format!("{t}.norm_final_attn"), d, EPS)?;
        // ConvTranspose weights `[in, out, 2, 2]`: PyTorch's fan_in is `out·2·2`.
        let u = format!("{PREFIX}.output_upscaling");
        let upscale = |w: &mut Weights, i: usize, [c_in, c_out]: [usize; 2]| {
            let shape = [c_in, c_out, 2, 2];
            let init = Init::fan_in_uniform(&shape);
            Ok::<_, ModelLoadError>((
                w.param(&format!("{u}.{i}.weight"), shape, init)?,
                w.param(&format!("{u}.{i}.bias"), [c_out], init)?,
            ))
        };
        let (upscale1_weight, upscale1_bias) = upscale(w, 0, [d, d / 4])?;
        let upscale_norm = LayerNorm::load(w, &format!("{u}.1"), d / 4, 1e-6)?;
        let (upscale2_weight, upscale2_bias) = upscale(w, 3, [d / 4, d / 8])?;
        let hypernetworks = (0..cfg.num_mask_tokens)
            .map(|i| {
                let prefix = format!("{PREFIX}.output_hypernetworks_mlps.{i}");
                Mlp::load(w, &prefix, 3, [d, d, d / 8])
            })
            .collect::<Result<_, _>>()?;
        let iou_head = Mlp::load(
            w,
            &format!("{PREFIX}.iou_prediction_head"),
            cfg.iou_head_depth,
            [d, cfg.iou_head_hidden, cfg.num_mask_tokens],
        )?;
        Ok(Self {
            iou_token,
            mask_tokens,
            layers,
            final_attn_token_to_image,
            norm_final_attn,
            upscale1_weight,
            upscale1_bias,
            upscale_norm,
            upscale2_weight,
            upscale2_bias,
            hypernetworks,
            iou_head,
        })
    }

    /// Mask logits `[N, M, 4g, 4g]` and IoU predictions `[N, M]` for every mask token.
    ///
    /// `image_embedding`: `[1, E, g, g]`, shared by the N prompts; `dense_pe`: `[1, E, g, g]`;
    /// `sparse`: `[N, P, E]`; `dense`: `[N, E, g, g]`, or `[1, E, g, g]` when every prompt has
    /// the same (no mask prompt).
    pub fn forward(
        &self,
        image_embedding: Tensor<4>,
        dense_pe: Tensor<4>,
        sparse: Tensor<3>,
        dense: Tensor<4>,
    ) -> (Tensor<4>, Tensor<2>) {
        let [n, _, _] = sparse.dims();
        let [_, e, g, _] = image_embedding.dims();
        let m = self.mask_tokens.dims()[0];
        let output_tokens = Tensor::cat(vec![self.iou_token.val(), self.mask_tokens.val()], 0)
            .unsqueeze::<3>()
            .expand([n, 1 + m, e]);
        let tokens = Tensor::cat(vec![output_tokens, sparse], 1);
        // With one dense embedding for all prompts (no mask prompts) the keys start as one
        // image's, [1, g², E], and broadcast against the N prompts' tokens: the first layer's
        // projections of the image run once instead of N times (exact: every row is the same).
        let keys = (image_embedding + dense).flatten::<3>(2, 3).swap_dims(1, 2); // [1 or N, g², E]
        let key_pe = dense_pe.flatten::<3>(2, 3).swap_dims(1, 2); // [1, g², E]

        let mut queries = tokens.clone();
        let mut keys = keys;
        for layer in &self.layers {
            (queries, keys) = layer.forward(queries, keys, tokens.clone(), key_pe.clone());
        }
        let q = queries.clone() + tokens;
        let k = keys.clone() + key_pe;
        let queries = self
            .norm_final_attn
            .forward(queries + self.final_attn_token_to_image.forward(q, k, keys.clone()));

        let iou_token_out = queries.clone().slice([0..n, 0..1, 0..e]).reshape([n, e]);
        let batch = keys.dims()[0];
        let keys = keys.swap_dims(1, 2).reshape([batch, e, g, g]);
        let upscaled = self.upscale(keys.expand([n, e, g, g])); // [N, E/8, 4g, 4g]
        let [_, c8, h4, w4] = upscaled.dims();
        let hyper_in = Tensor::cat(
            self.hypernetworks
                .iter()
                .enumerate()
                .map(|(i, mlp)| mlp.forward(queries.clone().slice([0..n, 1 + i..2 + i, 0..e])))
                .collect(),
            1,
        ); // [N, M, E/8]
        let masks =
            kernels::product(hyper_in, upscaled.reshape([n, c8, h4 * w4])).reshape([n, m, h4, w4]);
        (masks, self.iou_head.forward(iou_token_out))
    }

    fn upscale(&self, x: Tensor<4>) -> Tensor<4> {
        let opts = ConvTransposeOptions::new([2, 2], [0, 0], [0, 0], [1, 1], 1);
        let x = kernels::conv_transpose2d_in_precision(
            x,
            self.upscale1_weight.val(),
            Some(self.upscale1_bias.val()),
            opts.clone(),
        );
        let x = kernels::gelu(self.upscale_norm.forward_channels_first(x));
        kernels::gelu(kernels::conv_transpose2d_in_precision(
            x,
            self.upscale2_weight.val(),
            Some(self.upscale2_bias.val()),
            opts,
        ))
    }
}
