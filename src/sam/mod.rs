//! Segment Anything: the model, its configuration and loading.
//!
//! Layout follows the reference: [`image_encoder`] (ViT), [`prompt_encoder`], [`mask_decoder`]
//! (two-way transformer + heads); [`config`] reads the sizes off a checkpoint and [`weights`]
//! takes tensors out of it by their official names.

pub mod config;
pub mod image_encoder;
pub mod layers;
pub mod mask_decoder;
pub mod predictor;
pub mod prompt_encoder;
pub mod transforms;
pub mod weights;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::checkpoint::StateDict;
pub use config::SamConfig;
use image_encoder::ImageEncoder;
use mask_decoder::MaskDecoder;
use prompt_encoder::PromptEncoder;
pub use prompt_encoder::Prompts;
pub use weights::ModelLoadError;
use weights::Weights;

/// The whole model, set up for one input size S.
#[derive(Module, Debug)]
pub struct Sam {
    pub image_encoder: ImageEncoder,
    pub prompt_encoder: PromptEncoder,
    pub mask_decoder: MaskDecoder,
    #[module(skip)]
    pub config: SamConfig,
    /// Input side S the model runs at (a multiple of the patch size).
    pub image_size: usize,
}

/// What the decoder predicts for a batch of N prompts.
pub struct MaskPrediction {
    /// `[N, K, S/4, S/4]` mask logits (K = 1, or the multimask outputs).
    pub low_res_logits: Tensor<4>,
    /// `[N, K]` predicted IoU.
    pub iou: Tensor<2>,
}

impl Sam {
    /// Builds SAM from a state dict with official key names, to run at `image_size`
    /// (default: the size the checkpoint was made for). Every key must be used.
    pub fn from_state_dict(
        dict: StateDict,
        image_size: Option<usize>,
        device: &Device,
    ) -> Result<Self, ModelLoadError> {
        let mut w = Weights::new(dict, device);
        let config = SamConfig::infer(&w)?;
        let patch = config.encoder.patch_size;
        let image_size = image_size.unwrap_or(config.encoder.native_image_size);
        if image_size == 0 || !image_size.is_multiple_of(patch) {
            return Err(ModelLoadError::BadImageSize(image_size, patch));
        }
        let grid = image_size / patch;
        let sam = Self {
            image_encoder: ImageEncoder::load(&mut w, &config.encoder)?,
            prompt_encoder: PromptEncoder::load(&mut w, &config.prompt, image_size, grid)?,
            mask_decoder: MaskDecoder::load(&mut w, &config.decoder)?,
            config,
            image_size,
        };
        w.finish()?;
        Ok(sam)
    }

    /// `[B, 3, S, S]` preprocessed images → `[B, E, S/16, S/16]` embeddings.
    pub fn embed_image(&self, input: Tensor<4>) -> Tensor<4> {
        self.image_encoder.forward(input)
    }

    /// Masks for `prompts` (in the S×S input frame) on one image embedding `[1, E, g, g]`.
    ///
    /// `multimask`: the K = M−1 ambiguity outputs instead of the single first mask.
    pub fn predict_masks(
        &self,
        embedding: Tensor<4>,
        prompts: &Prompts,
        multimask: bool,
    ) -> MaskPrediction {
        let (sparse, dense) = self.prompt_encoder.forward(prompts);
        let (masks, iou) =
            self.mask_decoder
                .forward(embedding, self.prompt_encoder.dense_pe(), sparse, dense);
        let [n, m, h, w] = masks.dims();
        let range = if multimask { 1..m } else { 0..1 };
        MaskPrediction {
            low_res_logits: masks.slice([0..n, range.clone(), 0..h, 0..w]),
            iou: iou.slice([0..n, range]),
        }
    }
}
