//! SAM's configuration, read off a checkpoint's tensor shapes (docs/sam.md#configuration-from-tensor-shapes).
//!
//! Nothing is assumed about the variant: vit_b/l/h, a small test model or a distilled one all
//! describe themselves through their shapes. Only the decoder's head count (8) is fixed, as in SAM,
//! because no tensor shape encodes it.

pub use super::image_encoder::EncoderConfig;
pub use super::image_encoder::vit::VitConfig;
use crate::nn::weights::{ModelLoadError, Weights};

/// Attention heads in the mask decoder's two-way transformer (not recoverable from shapes).
pub const DECODER_HEADS: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct PromptEncoderConfig {
    pub embed_dim: usize,
    pub mask_in_chans: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MaskDecoderConfig {
    pub dim: usize,
    pub depth: usize,
    pub mlp_dim: usize,
    /// Width of the cross-attentions (`dim / attention_downsample_rate`).
    pub cross_attn_dim: usize,
    pub num_mask_tokens: usize,
    pub iou_head_depth: usize,
    pub iou_head_hidden: usize,
}

impl MaskDecoderConfig {
    /// SAM's decoder (every official variant has the same one).
    fn sam() -> Self {
        Self {
            dim: 256,
            depth: 2,
            mlp_dim: 2048,
            cross_attn_dim: 128,
            num_mask_tokens: 4,
            iou_head_depth: 3,
            iou_head_hidden: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SamConfig {
    pub encoder: EncoderConfig,
    pub prompt: PromptEncoderConfig,
    pub decoder: MaskDecoderConfig,
}

impl SamConfig {
    /// The names [`SamConfig::named`] knows.
    pub const NAMES: [&str; 6] = ["tiny", "mini", "small", "vit_b", "vit_l", "vit_h"];

    /// A configuration by name: the official variants `vit_b`, `vit_l`, `vit_h` (docs/sam.md#variants), and
    /// three SAM-shaped models for training from scratch on a CPU: `small` (embed 256, depth 6,
    /// 256 px, SAM's full decoder), `mini` (embed 128, depth 4, 256 px, decoder width 64: the
    /// shipped base model's) and `tiny` (embed 64, depth 4, 256 px, decoder width 32).
    pub fn named(name: &str) -> Option<Self> {
        let (embed_dim, depth, num_heads, global_attn_indexes) = match name {
            "tiny" => return Some(Self::tiny()),
            "small" => return Some(Self::small()),
            "mini" => return Some(Self::mini()),
            "vit_b" => (768, 12, 12, vec![2, 5, 8, 11]),
            "vit_l" => (1024, 24, 16, vec![5, 11, 17, 23]),
            "vit_h" => (1280, 32, 16, vec![7, 15, 23, 31]),
            _ => return None,
        };
        Some(Self {
            encoder: EncoderConfig::Vit(VitConfig {
                embed_dim,
                depth,
                num_heads,
                patch_size: 16,
                native_image_size: 1024,
                window_size: 14,
                global_attn_indexes,
                mlp_dim: 4 * embed_dim,
                out_chans: 256,
            }),
            prompt: PromptEncoderConfig {
                embed_dim: 256,
                mask_in_chans: 16,
            },
            decoder: MaskDecoderConfig::sam(),
        })
    }

    /// Embed 256, depth 6, 8 heads, native 256 px with 8×8 windows (the 16×16 grid splits into
    /// four without padding), and SAM's own prompt encoder and decoder.
    fn small() -> Self {
        Self {
            encoder: EncoderConfig::Vit(VitConfig {
                embed_dim: 256,
                depth: 6,
                num_heads: 8,
                patch_size: 16,
                native_image_size: 256,
                window_size: 8,
                global_attn_indexes: vec![2, 5],
                mlp_dim: 1024,
                out_chans: 256,
            }),
            prompt: PromptEncoderConfig {
                embed_dim: 256,
                mask_in_chans: 16,
            },
            decoder: MaskDecoderConfig::sam(),
        }
    }

    /// Embed 128, depth 4, 4 heads, native 256 px with 8×8 windows, decoder width 64 (1.2 M
    /// parameters): small enough to pretrain from random weights on two CPU cores.
    fn mini() -> Self {
        Self {
            encoder: EncoderConfig::Vit(VitConfig {
                embed_dim: 128,
                depth: 4,
                num_heads: 4,
                patch_size: 16,
                native_image_size: 256,
                window_size: 8,
                global_attn_indexes: vec![1, 3],
                mlp_dim: 512,
                out_chans: 64,
            }),
            prompt: PromptEncoderConfig {
                embed_dim: 64,
                mask_in_chans: 16,
            },
            decoder: MaskDecoderConfig {
                dim: 64,
                depth: 2,
                mlp_dim: 256,
                cross_attn_dim: 32,
                num_mask_tokens: 4,
                iou_head_depth: 3,
                iou_head_hidden: 64,
            },
        }
    }

    /// Embed 64, depth 4, 256 px, decoder width 32: runs in a fraction of a second on a CPU.
    pub fn tiny() -> Self {
        Self {
            encoder: EncoderConfig::Vit(VitConfig {
                embed_dim: 64,
                depth: 4,
                num_heads: 2,
                patch_size: 16,
                native_image_size: 256,
                window_size: 14,
                global_attn_indexes: vec![1, 3],
                mlp_dim: 256,
                out_chans: 32,
            }),
            prompt: PromptEncoderConfig {
                embed_dim: 32,
                mask_in_chans: 16,
            },
            decoder: MaskDecoderConfig {
                dim: 32,
                depth: 2,
                mlp_dim: 64,
                cross_attn_dim: 16,
                num_mask_tokens: 4,
                iou_head_depth: 3,
                iou_head_hidden: 32,
            },
        }
    }

    pub fn infer(w: &Weights) -> Result<Self, ModelLoadError> {
        let encoder = EncoderConfig::infer(w)?;
        let prompt_dim = w.shape("prompt_encoder.no_mask_embed.weight")?[1];
        let prompt = PromptEncoderConfig {
            embed_dim: prompt_dim,
            mask_in_chans: w.shape("prompt_encoder.mask_downscaling.3.weight")?[0],
        };
        if prompt_dim != encoder.out_chans() {
            return Err(ModelLoadError::NotSam(format!(
                "prompt embedding width {prompt_dim} differs from the image encoder's output {}",
                encoder.out_chans()
            )));
        }
        let t = "mask_decoder.transformer";
        let decoder = MaskDecoderConfig {
            dim: prompt_dim,
            depth: w.count_indexed(&format!("{t}.layers."), ".norm1.weight"),
            mlp_dim: w.shape(&format!("{t}.layers.0.mlp.lin1.weight"))?[0],
            cross_attn_dim: w.shape(&format!("{t}.final_attn_token_to_image.q_proj.weight"))?[0],
            num_mask_tokens: w.shape("mask_decoder.mask_tokens.weight")?[0],
            iou_head_depth: w.count_indexed("mask_decoder.iou_prediction_head.layers.", ".weight"),
            iou_head_hidden: w.shape("mask_decoder.iou_prediction_head.layers.0.weight")?[0],
        };
        if decoder.depth == 0 || decoder.iou_head_depth == 0 {
            return Err(ModelLoadError::NotSam(
                "the mask decoder has no transformer layers or no IoU head".into(),
            ));
        }
        if !decoder.cross_attn_dim.is_multiple_of(DECODER_HEADS)
            || !decoder.dim.is_multiple_of(DECODER_HEADS)
        {
            return Err(ModelLoadError::NotSam(format!(
                "decoder attention widths {} / {} are not divisible by {DECODER_HEADS} heads",
                decoder.dim, decoder.cross_attn_dim
            )));
        }
        Ok(Self {
            encoder,
            prompt,
            decoder,
        })
    }

    /// The ViT encoder's sizes, which the PEFT methods need: they wrap its blocks.
    pub fn peft_encoder(&self) -> Result<&VitConfig, ModelLoadError> {
        self.encoder.vit().ok_or_else(|| {
            ModelLoadError::BadPeft(
                "the PEFT methods wrap ViT blocks, and this image encoder is not a ViT".into(),
            )
        })
    }

    /// The official variant this configuration is, if any.
    pub fn variant(&self) -> &'static str {
        let EncoderConfig::Vit(e) = &self.encoder;
        match (e.embed_dim, e.depth, e.num_heads) {
            (768, 12, 12) => "vit_b",
            (1024, 24, 16) => "vit_l",
            (1280, 32, 16) => "vit_h",
            _ => "custom",
        }
    }
}
