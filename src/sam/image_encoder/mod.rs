//! The image encoder seam: SAM's encoder families behind one model type and one configuration
//! type, as candle puts its ViT and TinyViT behind one enum. ViT (Meta's SAM, [`vit`]) is the
//! only family today. A second one is a file beside `vit.rs` (its module, its configuration read
//! off a checkpoint, its keys) and a variant in [`ImageEncoder`] and [`EncoderConfig`], with its
//! arm in the `match`es below (docs/extending.md#adding-an-image-encoder-family).

pub mod vit;

use burn::module::{Module, ParamId};
use burn::tensor::Tensor;

use crate::checkpoint::RawTensor;
use crate::nn::weights::{ModelLoadError, Weights};
use vit::{VitConfig, VitEncoder};

/// What an encoder family's configuration is, read off its checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum EncoderConfig {
    Vit(VitConfig),
}

impl EncoderConfig {
    /// The family whose tensors the checkpoint holds, with its sizes.
    pub fn infer(w: &Weights) -> Result<Self, ModelLoadError> {
        vit::infer_config(w).map(Self::Vit)
    }

    /// Inputs are square and a multiple of this.
    pub fn patch_size(&self) -> usize {
        match self {
            Self::Vit(c) => c.patch_size,
        }
    }

    /// The input size the checkpoint was made for.
    pub fn native_image_size(&self) -> usize {
        match self {
            Self::Vit(c) => c.native_image_size,
        }
    }

    /// Channels of the embedding `[B, out_chans, S/16, S/16]` the prompt encoder and decoder see.
    pub fn out_chans(&self) -> usize {
        match self {
            Self::Vit(c) => c.out_chans,
        }
    }

    /// A lower bound on the bytes one image needs in the encoder at input size `s`.
    pub fn min_memory_bytes(&self, s: usize) -> u64 {
        match self {
            Self::Vit(c) => c.min_memory_bytes(s),
        }
    }

    /// The bytes of the largest single tensor one image makes in the encoder at input size `s`.
    pub fn largest_tensor_bytes(&self, s: usize) -> u64 {
        match self {
            Self::Vit(c) => c.largest_tensor_bytes(s),
        }
    }

    /// The ViT's configuration: the PEFT methods wrap ViT blocks.
    pub fn vit(&self) -> Option<&VitConfig> {
        match self {
            Self::Vit(c) => Some(c),
        }
    }
}

/// `[B, 3, S, S]` preprocessed images → `[B, out_chans, S/16, S/16]` embeddings.
#[derive(Module, Debug)]
pub enum ImageEncoder {
    Vit(VitEncoder),
}

impl ImageEncoder {
    pub fn load(w: &mut Weights, cfg: &EncoderConfig) -> Result<Self, ModelLoadError> {
        match cfg {
            EncoderConfig::Vit(c) => VitEncoder::load(w, c).map(Self::Vit),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Self::Vit(e) => e.forward(x),
        }
    }

    /// The parameters whose shape follows the input size, with their values as a checkpoint
    /// native at a `g × g` token grid holds them.
    pub fn tensors_for_grid(&self, g: usize) -> anyhow::Result<Vec<(ParamId, RawTensor)>> {
        match self {
            Self::Vit(e) => e.tensors_for_grid(g),
        }
    }

    /// The ViT, whose blocks the PEFT methods wrap.
    pub fn vit(&self) -> Option<&VitEncoder> {
        match self {
            Self::Vit(e) => Some(e),
        }
    }

    pub fn vit_mut(&mut self) -> Option<&mut VitEncoder> {
        match self {
            Self::Vit(e) => Some(e),
        }
    }
}
