//! A SAM-shaped model with random weights, built in code: the start of pretraining, and a model
//! for tests and benchmarks without a download.

use super::Sam;
use super::config::SamConfig;
use crate::checkpoint::StateDict;
use crate::nn::init::draw_all;

/// Every tensor of `cfg`'s checkpoint, initialised as Meta's PyTorch modules initialise them
/// (each module declares its initialisers: linear and convolution layers PyTorch's default,
/// norms 1 and 0, embedding tables and the Fourier matrix N(0, 1), position tables 0), drawn
/// from `seed` in checkpoint order.
pub fn random_state_dict(cfg: &SamConfig, seed: u64) -> StateDict {
    draw_all(&Sam::declarations(cfg), seed)
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
