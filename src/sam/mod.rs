//! Segment Anything: the model, its configuration and loading.
//!
//! Layout follows the reference: [`image_encoder`] (ViT), [`prompt_encoder`], [`mask_decoder`]
//! (two-way transformer + heads); [`config`] reads the sizes off a checkpoint and [`crate::nn::weights`]
//! takes tensors out of it by their official names.

pub mod attention;
pub mod config;
pub mod deepen;
pub mod embeddings;
pub mod image_encoder;
pub mod mask_decoder;
pub mod mask_generator;
pub mod predictor;
pub mod prompt_encoder;
pub mod random;
pub mod transforms;
pub mod widen;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::checkpoint::StateDict;
use crate::kernels;
use crate::nn::init::Declared;
use crate::nn::params::{self, Origin, ParamNames};
pub use crate::nn::weights::ModelLoadError;
use crate::nn::weights::Weights;
use crate::peft::{PeftConfig, PeftModules};
pub use config::SamConfig;
use image_encoder::ImageEncoder;
use mask_decoder::MaskDecoder;
use prompt_encoder::PromptEncoder;
pub use prompt_encoder::Prompts;

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
    /// The official key of every parameter, base and PEFT.
    #[module(skip)]
    pub names: ParamNames,
    /// The PEFT modules attached, if any.
    #[module(skip)]
    pub peft: Option<PeftConfig>,
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
        let mut w = Weights::new(dict, device, Origin::Base);
        let config = SamConfig::infer(&w)?;
        let patch = config.encoder.patch_size();
        let image_size = image_size.unwrap_or(config.encoder.native_image_size());
        if image_size == 0 || !image_size.is_multiple_of(patch) {
            return Err(ModelLoadError::BadImageSize(image_size, patch));
        }
        let needs = config.encoder.min_memory_bytes(image_size);
        if let Some(memory) = physical_memory().filter(|&m| needs > m) {
            return Err(ModelLoadError::ImageSizeTooLarge {
                size: image_size,
                needs,
                memory,
                native: config.encoder.native_image_size(),
            });
        }
        let largest = config.encoder.largest_tensor_bytes(image_size);
        if let Some(limit) = kernels::max_buffer_bytes(device).filter(|&l| largest > l) {
            return Err(ModelLoadError::TensorOverBufferLimit {
                size: image_size,
                largest,
                limit,
                device: format!("{device:?}"),
                native: config.encoder.native_image_size(),
            });
        }
        let sam = Self::build(&mut w, config, image_size)?;
        Ok(Self {
            names: w.finish()?,
            ..sam
        })
    }

    /// SAM of `config` at `image_size`, its tensors declared on `w` in checkpoint order (random
    /// weights are drawn in it); the names are `w`'s to give.
    fn build(
        w: &mut Weights,
        config: SamConfig,
        image_size: usize,
    ) -> Result<Self, ModelLoadError> {
        let grid = image_size / config.encoder.patch_size();
        Ok(Self {
            image_encoder: ImageEncoder::load(w, &config.encoder)?,
            prompt_encoder: PromptEncoder::load(w, &config.prompt, image_size, grid)?,
            mask_decoder: MaskDecoder::load(w, &config.decoder)?,
            image_size,
            config,
            names: ParamNames::default(),
            peft: None,
        })
    }

    /// Every tensor of a `config` checkpoint (key, shape, initialiser), the prompt encoder's
    /// PE buffer included, in checkpoint order, without making any.
    pub fn declarations(config: &SamConfig) -> Vec<Declared> {
        let device = Device::flex();
        let mut w = Weights::declare(&device, Origin::Base);
        let size = config.encoder.native_image_size();
        Self::build(&mut w, config.clone(), size).expect("declaring loads nothing that can fail");
        w.declarations()
    }

    /// Inserts the PEFT modules of `cfg` into the image encoder, with the tensors of `state`
    /// (official PEFT key names, docs/methods.md#key-names; every key must be used).
    pub fn attach_peft(
        mut self,
        cfg: PeftConfig,
        state: StateDict,
    ) -> Result<Self, ModelLoadError> {
        cfg.validate().map_err(ModelLoadError::BadPeft)?;
        let vit = self.config.peft_encoder()?;
        let (c, depth) = (vit.embed_dim, vit.depth);
        cfg.check_fits(c).map_err(ModelLoadError::BadPeft)?;
        if self.peft.is_some() {
            return Err(ModelLoadError::BadPeft(
                "PEFT modules are already attached".into(),
            ));
        }
        let device = self.device();
        let mut w = Weights::new(state, &device, Origin::Peft);
        let modules = PeftModules::load(&mut w, &cfg, c, depth)?;
        self.names.extend(w.finish()?);
        let encoder = self
            .image_encoder
            .vit_mut()
            .expect("peft_encoder found a ViT");
        encoder.cobot = modules.shared;
        for (block, modules) in encoder.blocks.iter_mut().zip(modules.blocks) {
            block.peft = modules;
        }
        self.peft = Some(cfg);
        Ok(self)
    }

    /// Marks the tensors that train under the attached configuration (nothing without one).
    pub fn with_trainable_set(self) -> Self {
        let names = self.names.clone();
        let cfg = self.peft.clone();
        params::set_trainable(self, &names, |key, origin| {
            cfg.as_ref()
                .is_some_and(|c| c.is_trainable(key, origin == Origin::Peft))
        })
    }

    /// Every tensor under its official key (SAM's and the PEFT modules'), or the device's
    /// failure to read one.
    pub fn state_dict(&self) -> anyhow::Result<StateDict> {
        params::export(self, &self.names, |_, _| true)
    }

    /// [`Sam::state_dict`] as a checkpoint native at this model's input size holds it (the
    /// position embedding and global relative-position tables resized as the forward pass
    /// resizes them): the same outputs at that size, which its shapes then name as native.
    pub fn state_dict_at_input_size(&self) -> anyhow::Result<StateDict> {
        let mut dict = self.state_dict()?;
        let grid = self.image_size / self.config.encoder.patch_size();
        for (id, tensor) in self.image_encoder.tensors_for_grid(grid)? {
            let (key, _) = self.names.get(&id).expect("every parameter has its key");
            dict.insert(key, tensor);
        }
        Ok(dict)
    }

    pub fn device(&self) -> Device {
        self.prompt_encoder.no_mask_embed.device()
    }

    /// `[B, 3, S, S]` preprocessed images → `[B, E, S/16, S/16]` embeddings.
    pub fn embed_image(&self, input: Tensor<4>) -> Tensor<4> {
        self.image_encoder.forward(input)
    }

    /// How many images at input size `size` one encoder pass may take on `device`: any number
    /// on the CPU; on a GPU, whose buffers have a size limit, as many as keep the batch's
    /// largest tensor within one buffer (at least one: `from_state_dict` refuses a size where a
    /// single image passes the limit).
    pub fn images_per_encoder_pass(&self, size: usize, device: &Device) -> usize {
        kernels::items_per_buffer(device, self.config.encoder.largest_tensor_bytes(size))
    }

    /// The most prompts one call of [`Sam::predict_masks_with`] takes on this model's device:
    /// the masks of a call are one tensor, `[N, M, S/4, S/4]` f32 with all M of the decoder's
    /// outputs, and a GPU limits each buffer (any number on the CPU). 128 at 1024 px where a
    /// buffer holds 128 MiB.
    pub fn prompts_per_call(&self) -> usize {
        let g4 = self.image_size / 4;
        let per_prompt = 4 * self.config.decoder.num_mask_tokens * g4 * g4;
        kernels::items_per_buffer(&self.device(), per_prompt as u64)
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
        self.predict_masks_with(embedding, prompts, None, multimask)
    }

    /// [`Sam::predict_masks`] with mask prompts: low-resolution logits `[N or 1, 1, S/4, S/4]`
    /// of an earlier prediction (SAM's iterative refinement).
    pub fn predict_masks_with(
        &self,
        embedding: Tensor<4>,
        prompts: &Prompts,
        masks: Option<Tensor<4>>,
        multimask: bool,
    ) -> MaskPrediction {
        let (sparse, dense) = self.prompt_encoder.forward_with_masks(prompts, masks);
        let [_, e, g, _] = embedding.dims();
        // The decoder's largest tensor per prompt: the upscaled keys, [E/8, 4g, 4g] in f32.
        let per_prompt = kernels::items_per_buffer(&embedding.device(), 8 * (e * g * g) as u64);
        let (masks, iou) = self.decode_in_passes(embedding, sparse, dense, per_prompt);
        let [n, m, h, w] = masks.dims();
        let range = if multimask { 1..m } else { 0..1 };
        MaskPrediction {
            low_res_logits: masks.slice([0..n, range.clone(), 0..h, 0..w]),
            iou: iou.slice([0..n, range]),
        }
    }

    /// The mask decoder on `sparse` `[N, P, E]` and `dense` `[N or 1, E, g, g]` prompts, at most
    /// `prompts` of them per pass: a GPU limits each buffer, and the decoder's tensors grow with
    /// the prompts (a segment-everything batch of 64 on ViT-B at 1024 px upscales 537 MB).
    fn decode_in_passes(
        &self,
        embedding: Tensor<4>,
        sparse: Tensor<3>,
        dense: Tensor<4>,
        prompts: usize,
    ) -> (Tensor<4>, Tensor<2>) {
        let n = sparse.dims()[0];
        let decode = |sparse, dense| {
            let pe = self.prompt_encoder.dense_pe();
            self.mask_decoder
                .forward(embedding.clone(), pe, sparse, dense)
        };
        if n <= prompts {
            return decode(sparse, dense);
        }
        let sparse = sparse.split(prompts, 0);
        let dense = if dense.dims()[0] == n {
            dense.split(prompts, 0)
        } else {
            vec![dense; sparse.len()]
        };
        let (masks, iou): (Vec<_>, Vec<_>) = sparse
            .into_iter()
            .zip(dense)
            .map(|(sparse, dense)| decode(sparse, dense))
            .unzip();
        (Tensor::cat(masks, 0), Tensor::cat(iou, 0))
    }
}

/// `(key, shape)` of every tensor a checkpoint of `config` holds (docs/sam.md#checkpoint-keys),
/// in checkpoint order, without reading one.
pub fn checkpoint_shapes(config: &SamConfig) -> Vec<(String, Vec<usize>)> {
    Sam::declarations(config)
        .into_iter()
        .map(|d| (d.key, d.shape))
        .collect()
}

/// The machine's physical memory in bytes (Linux: `MemTotal` of /proc/meminfo); `None` where it
/// cannot be read, and then no size is refused for memory.
fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, Tensor};

    use super::*;
    use crate::nn::F32Values;

    /// Prompts split across decoder passes (as on a GPU whose buffer limit they would pass) give
    /// the masks and IoU scores of one pass, with one dense embedding for all and with one each.
    #[test]
    fn decoder_passes_split_the_prompts_without_changing_them() {
        let device = Device::flex();
        let dict = random::random_state_dict(&SamConfig::named("tiny").unwrap(), 7);
        let sam = Sam::from_state_dict(dict, Some(64), &device).unwrap();
        let e = sam.config.encoder.out_chans();
        let embedding = Tensor::<4>::random([1, e, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let prompts = Prompts {
            points: Vec::new(),
            boxes: (0..5)
                .map(|i| [i as f32, 2.0, 30.0 + i as f32, 40.0])
                .collect(),
        };
        let mask_input = Tensor::<4>::random([5, 1, 16, 16], Distribution::Default, &device);
        for masks in [None, Some(mask_input)] {
            let (sparse, dense) = sam.prompt_encoder.forward_with_masks(&prompts, masks);
            let run = |per_pass| {
                let (m, iou) = sam.decode_in_passes(
                    embedding.clone(),
                    sparse.clone(),
                    dense.clone(),
                    per_pass,
                );
                assert_eq!(m.dims()[0], 5);
                [m.f32_values(), iou.f32_values()].concat()
            };
            let whole = run(5);
            for per_pass in [1, 2] {
                for (a, b) in whole.iter().zip(run(per_pass)) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                        "{per_pass}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
