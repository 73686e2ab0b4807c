//! Every key of an official SAM checkpoint and its shape, for a configuration: what a checkpoint
//! of that configuration must hold (docs/sam.md#checkpoint-keys), without reading one.

use super::config::SamConfig;
use crate::nn::layers::{LayerNorm, Linear};

/// `(key, shape)` of every tensor, the prompt encoder's PE buffer included.
pub fn checkpoint_shapes(cfg: &SamConfig) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let mut put = |key: String, shape: &[usize]| out.push((key, shape.to_vec()));

    cfg.encoder.tensor_shapes(&mut put);

    let pe = "prompt_encoder";
    let (d, m) = (cfg.prompt.embed_dim, cfg.prompt.mask_in_chans);
    put(
        format!("{pe}.pe_layer.positional_encoding_gaussian_matrix"),
        &[2, d / 2],
    );
    for i in 0..4 {
        put(format!("{pe}.point_embeddings.{i}.weight"), &[1, d]);
    }
    put(format!("{pe}.not_a_point_embed.weight"), &[1, d]);
    put(format!("{pe}.no_mask_embed.weight"), &[1, d]);
    let md = format!("{pe}.mask_downscaling");
    put(format!("{md}.0.weight"), &[m / 4, 1, 2, 2]);
    put(format!("{md}.0.bias"), &[m / 4]);
    LayerNorm::key_shapes(&mut put, &format!("{md}.1"), m / 4);
    put(format!("{md}.3.weight"), &[m, m / 4, 2, 2]);
    put(format!("{md}.3.bias"), &[m]);
    LayerNorm::key_shapes(&mut put, &format!("{md}.4"), m);
    put(format!("{md}.6.weight"), &[d, m, 1, 1]);
    put(format!("{md}.6.bias"), &[d]);

    let dc = &cfg.decoder;
    let (dim, x) = (dc.dim, dc.cross_attn_dim);
    put("mask_decoder.iou_token.weight".into(), &[1, dim]);
    put(
        "mask_decoder.mask_tokens.weight".into(),
        &[dc.num_mask_tokens, dim],
    );
    let attention = |put: &mut dyn FnMut(String, &[usize]), p: &str, inner: usize| {
        for proj in ["q_proj", "k_proj", "v_proj"] {
            Linear::key_shapes(put, &format!("{p}.{proj}"), dim, inner);
        }
        Linear::key_shapes(put, &format!("{p}.out_proj"), inner, dim);
    };
    let t = "mask_decoder.transformer";
    for l in 0..dc.depth {
        let b = format!("{t}.layers.{l}");
        attention(&mut put, &format!("{b}.self_attn"), dim);
        LayerNorm::key_shapes(&mut put, &format!("{b}.norm1"), dim);
        attention(&mut put, &format!("{b}.cross_attn_token_to_image"), x);
        LayerNorm::key_shapes(&mut put, &format!("{b}.norm2"), dim);
        Linear::key_shapes(&mut put, &format!("{b}.mlp.lin1"), dim, dc.mlp_dim);
        Linear::key_shapes(&mut put, &format!("{b}.mlp.lin2"), dc.mlp_dim, dim);
        LayerNorm::key_shapes(&mut put, &format!("{b}.norm3"), dim);
        LayerNorm::key_shapes(&mut put, &format!("{b}.norm4"), dim);
        attention(&mut put, &format!("{b}.cross_attn_image_to_token"), x);
    }
    attention(&mut put, &format!("{t}.final_attn_token_to_image"), x);
    LayerNorm::key_shapes(&mut put, &format!("{t}.norm_final_attn"), dim);
    let u = "mask_decoder.output_upscaling";
    put(format!("{u}.0.weight"), &[dim, dim / 4, 2, 2]);
    put(format!("{u}.0.bias"), &[dim / 4]);
    LayerNorm::key_shapes(&mut put, &format!("{u}.1"), dim / 4);
    put(format!("{u}.3.weight"), &[dim / 4, dim / 8, 2, 2]);
    put(format!("{u}.3.bias"), &[dim / 8]);
    for i in 0..dc.num_mask_tokens {
        let h = format!("mask_decoder.output_hypernetworks_mlps.{i}.layers");
        Linear::key_shapes(&mut put, &format!("{h}.0"), dim, dim);
        Linear::key_shapes(&mut put, &format!("{h}.1"), dim, dim);
        Linear::key_shapes(&mut put, &format!("{h}.2"), dim, dim / 8);
    }
    let depth = dc.iou_head_depth;
    for l in 0..depth {
        let d_in = if l == 0 { dim } else { dc.iou_head_hidden };
        let d_out = if l + 1 == depth {
            dc.num_mask_tokens
        } else {
            dc.iou_head_hidden
        };
        Linear::key_shapes(
            &mut put,
            &format!("mask_decoder.iou_prediction_head.layers.{l}"),
            d_in,
            d_out,
        );
    }
    out
}
