//! A SAM-shaped model with random weights, built in code: the start of pretraining, and a model
//! for tests and benchmarks without a download.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use super::config::SamConfig;
use super::shapes::checkpoint_shapes;
use crate::checkpoint::{RawTensor, StateDict};

/// SAM's `nn.Embedding` tables and its Fourier matrix (N(0, 1)). Matched by module name: a
/// looser rule (any key with "token" in it) once caught the decoder's `*_token_to_image`
/// attention projections, whose N(0, 1) weights saturated its softmax and kept a pretraining run
/// on the background plateau.
fn is_embedding(key: &str) -> bool {
    const TABLES: [&str; 6] = [
        "prompt_encoder.point_embeddings.",
        "prompt_encoder.not_a_point_embed.",
        "prompt_encoder.no_mask_embed.",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        "mask_decoder.iou_token.",
        "mask_decoder.mask_tokens.",
    ];
    TABLES.iter().any(|t| key.starts_with(t))
}

/// Every tensor of `cfg`'s checkpoint, initialised as Meta's PyTorch modules initialise them:
/// linear and convolution weights and their biases uniform in ±1/√fan_in (PyTorch's default,
/// fan_in = the weight's size over its first axis), norms at 1/0, embeddings, tokens and the
/// Fourier matrix N(0, 1), the position embedding and the relative-position tables 0.
pub fn random_state_dict(cfg: &SamConfig, seed: u64) -> StateDict {
    let mut rng = StdRng::seed_from_u64(seed);
    let shapes: BTreeMap<String, Vec<usize>> = checkpoint_shapes(cfg).into_iter().collect();
    let fan_in = |weight: &[usize]| weight[1..].iter().product::<usize>() as f32;
    let mut dict = StateDict::new();
    for (key, shape) in checkpoint_shapes(cfg) {
        let n: usize = shape.iter().product();
        let weight_of_bias = key
            .strip_suffix(".bias")
            .and_then(|stem| shapes.get(&format!("{stem}.weight")))
            .filter(|w| w.len() > 1);
        let data: Vec<f32> = if key.ends_with("pos_embed") || key.contains("rel_pos") {
            vec![0.0; n]
        } else if let Some(weight) = weight_of_bias {
            let bound = 1.0 / fan_in(weight).sqrt();
            (0..n).map(|_| rng.random_range(-bound..=bound)).collect()
        } else if shape.len() == 1 {
            // Every other 1-D tensor in SAM is a norm's scale or shift.
            vec![if key.ends_with(".weight") { 1.0 } else { 0.0 }; n]
        } else if is_embedding(&key) {
            let normal = Normal::new(0.0f32, 1.0).expect("finite std");
            (0..n).map(|_| normal.sample(&mut rng)).collect()
        } else {
            let bound = 1.0 / fan_in(&shape).sqrt();
            (0..n).map(|_| rng.random_range(-bound..=bound)).collect()
        };
        dict.insert(key, RawTensor::new(shape, data));
    }
    dict
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each linear weight lies within PyTorch's ±1/√fan_in, whatever its name says.
    #[test]
    fn linear_weights_keep_pytorchs_bound() {
        let dict = random_state_dict(&SamConfig::named("mini").unwrap(), 3);
        for key in [
            "mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight",
            "mask_decoder.transformer.final_attn_token_to_image.v_proj.weight",
            "image_encoder.patch_embed.proj.weight",
        ] {
            let t = dict.get(key).unwrap();
            let bound = 1.0 / (t.shape[1..].iter().product::<usize>() as f32).sqrt();
            assert!(t.data.iter().all(|v| v.abs() <= bound), "{key}");
        }
        let tokens = dict.get("mask_decoder.mask_tokens.weight").unwrap();
        assert!(
            tokens.data.iter().any(|v| v.abs() > 1.0),
            "embeddings are N(0, 1)"
        );
        assert!(
            dict.get("image_encoder.pos_embed")
                .unwrap()
                .data
                .iter()
                .all(|&v| v == 0.0)
        );
    }
}
