//! SAM's predictor path: an image and prompts in its own pixel coordinates in, mask logits at
//! the image's resolution out (docs/sam.md#preprocessing-and-postprocessing).

use burn::tensor::{Tensor, TensorData};
use image::RgbImage;

use super::transforms::{Normalization, ResizeLongestSide, postprocess_logits, preprocess};
use super::{MaskPrediction, Prompts, Sam};
use crate::nn::F32Values;

/// An image after the encoder, with the sizes needed to map prompts and masks.
pub struct ImageEmbedding {
    /// `[1, E, g, g]`.
    pub embedding: Tensor<4>,
    /// Original `(h, w)`.
    pub original_size: (usize, usize),
}

/// Masks for N prompts.
pub struct Prediction {
    /// `[N, K, S/4, S/4]` low-resolution logits.
    pub low_res_logits: Tensor<4>,
    /// `N × K` predicted IoU, row-major.
    pub iou: Vec<f32>,
    /// `N × K` logit planes at the original resolution (`h·w` values each), row-major.
    pub masks: Vec<Vec<f32>>,
}

impl Prediction {
    /// Masks per prompt (K): 1, or SAM's 3 multimask outputs.
    pub fn per_prompt(&self) -> usize {
        self.low_res_logits.dims()[1]
    }

    /// Of each prompt's K masks, the one with the highest predicted IoU (what `SamPredictor`
    /// users do with `multimask_output=True`): K becomes 1.
    pub fn keep_best(self) -> Prediction {
        let k = self.per_prompt();
        let [n, _, h, w] = self.low_res_logits.dims();
        let best: Vec<usize> = self.iou.chunks(k).map(best_index).collect();
        let low_res = Tensor::cat(
            best.iter()
                .enumerate()
                .map(|(i, &b)| {
                    self.low_res_logits
                        .clone()
                        .slice([i..i + 1, b..b + 1, 0..h, 0..w])
                })
                .collect(),
            0,
        );
        debug_assert_eq!(low_res.dims(), [n, 1, h, w]);
        let mut masks = self.masks;
        Prediction {
            low_res_logits: low_res,
            iou: best
                .iter()
                .enumerate()
                .map(|(i, &b)| self.iou[i * k + b])
                .collect(),
            masks: best
                .iter()
                .enumerate()
                .map(|(i, &b)| std::mem::take(&mut masks[i * k + b]))
                .collect(),
        }
    }
}

/// The index of the highest predicted IoU (the first among equals).
pub fn best_index(iou: &[f32]) -> usize {
    (0..iou.len()).fold(0, |b, j| if iou[j] > iou[b] { j } else { b })
}

/// User prompts in original image pixels: each box is one mask, and the points join every box
/// (all points form a single mask when there is no box).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserPrompts {
    pub boxes: Vec<[f32; 4]>,
    pub points: Vec<(f32, f32, i32)>,
}

impl UserPrompts {
    /// Refuses a box entirely outside a `w × h` image or a point outside it, naming it
    /// ("box 1,2,3,4 lies outside the 300x200 image"): SAM accepts anything, but a prompt off
    /// the image is a typo.
    pub fn check_inside(&self, w: usize, h: usize) -> Result<(), String> {
        let (w, h) = (w as f32, h as f32);
        for &[x1, y1, x2, y2] in &self.boxes {
            if x2 <= 0.0 || y2 <= 0.0 || x1 >= w || y1 >= h {
                return Err(format!(
                    "box {x1},{y1},{x2},{y2} lies outside the {w}x{h} image"
                ));
            }
        }
        for &(x, y, _) in &self.points {
            if !(0.0..=w).contains(&x) || !(0.0..=h).contains(&y) {
                return Err(format!("point {x},{y} lies outside the {w}x{h} image"));
            }
        }
        Ok(())
    }
}

pub struct Predictor<'a> {
    sam: &'a Sam,
    normalization: Normalization,
    resize: ResizeLongestSide,
}

impl<'a> Predictor<'a> {
    pub fn new(sam: &'a Sam) -> Self {
        Self {
            sam,
            normalization: Normalization::SAM,
            resize: ResizeLongestSide::new(sam.image_size),
        }
    }

    /// The preprocessed `[1, 3, S, S]` input tensor.
    pub fn input_tensor(&self, image: &RgbImage) -> Tensor<4> {
        let (h, w) = (image.height() as usize, image.width() as usize);
        let s = self.sam.image_size;
        let data = preprocess(image.as_raw(), h, w, s, &self.normalization);
        let device = self.sam.prompt_encoder.no_mask_embed.device();
        Tensor::from_data(TensorData::new(data, [1, 3, s, s]), &device)
    }

    pub fn set_image(&self, image: &RgbImage) -> ImageEmbedding {
        ImageEmbedding {
            embedding: self.sam.embed_image(self.input_tensor(image)),
            original_size: (image.height() as usize, image.width() as usize),
        }
    }

    /// The prompts mapped into the model's S×S input frame.
    pub fn model_prompts(&self, prompts: &UserPrompts, original_size: (usize, usize)) -> Prompts {
        let to_f64 = |b: &[f32; 4]| b.map(f64::from);
        let boxes: Vec<[f32; 4]> = prompts
            .boxes
            .iter()
            .map(|b| self.resize.apply_box(to_f64(b), original_size))
            .collect();
        let points: Vec<(f32, f32, i32)> = prompts
            .points
            .iter()
            .map(|&(x, y, label)| {
                let (x, y) = self
                    .resize
                    .apply_coords(f64::from(x), f64::from(y), original_size);
                (x, y, label)
            })
            .collect();
        let points = if points.is_empty() {
            Vec::new()
        } else {
            vec![points; boxes.len().max(1)]
        };
        Prompts { points, boxes }
    }

    pub fn predict(
        &self,
        image: &ImageEmbedding,
        prompts: &UserPrompts,
        multimask: bool,
    ) -> anyhow::Result<Prediction> {
        self.predict_with_mask(image, prompts, None, multimask)
    }

    /// [`Predictor::predict`] with a mask prompt: `[N or 1, 1, S/4, S/4]` low-resolution logits
    /// of an earlier prediction, as `SamPredictor.predict(mask_input=...)` takes them. An error
    /// is the device's failure to compute or give back the masks.
    pub fn predict_with_mask(
        &self,
        image: &ImageEmbedding,
        prompts: &UserPrompts,
        mask_input: Option<Tensor<4>>,
        multimask: bool,
    ) -> anyhow::Result<Prediction> {
        self.check_prompts_per_call(prompts)?;
        let prompts = self.model_prompts(prompts, image.original_size);
        let out =
            self.sam
                .predict_masks_with(image.embedding.clone(), &prompts, mask_input, multimask);
        let low_res: Vec<f32> = out.low_res_logits.clone().try_f32_values()?;
        let [_, _, g4, _] = out.low_res_logits.dims();
        let masks = low_res
            .chunks(g4 * g4)
            .map(|plane| self.upscale(plane, image.original_size))
            .collect();
        Ok(Prediction {
            low_res_logits: out.low_res_logits,
            iou: out.iou.try_f32_values()?,
            masks,
        })
    }

    /// Refuses more prompts than one call can take on the model's device
    /// ([`Sam::prompts_per_call`]), with the number it can take: each box is a prompt (the
    /// points go with every box), or the points are one. Callers check before they encode.
    pub fn check_prompts_per_call(&self, prompts: &UserPrompts) -> anyhow::Result<()> {
        let prompts = prompts.boxes.len().max(1);
        let most = self.sam.prompts_per_call();
        if prompts > most {
            anyhow::bail!(
                "{prompts} prompts: their masks at {} px are one tensor, larger than the device \
                 {:?} allows in one buffer; give at most {most} prompts per call",
                self.sam.image_size,
                self.sam.device()
            );
        }
        Ok(())
    }

    /// Masks for single positive points (original pixels), each point its own prompt: the
    /// automatic mask generator's query ([`MaskGenerator`](super::mask_generator::MaskGenerator)
    /// keeps its batches within [`Sam::prompts_per_call`]).
    pub fn predict_points(
        &self,
        image: &ImageEmbedding,
        points: &[(f64, f64)],
        multimask: bool,
    ) -> MaskPrediction {
        let points = points
            .iter()
            .map(|&(x, y)| {
                let (x, y) = self.resize.apply_coords(x, y, image.original_size);
                vec![(x, y, 1)]
            })
            .collect();
        let prompts = Prompts {
            points,
            boxes: Vec::new(),
        };
        self.sam
            .predict_masks(image.embedding.clone(), &prompts, multimask)
    }

    /// One `S/4 × S/4` low-resolution logit plane at the image's resolution (`h·w` logits), as
    /// `Sam.postprocess_masks` upsamples it.
    pub fn upscale(&self, plane: &[f32], original_size: (usize, usize)) -> Vec<f32> {
        let g4 = self.sam.image_size / 4;
        let (h, w) = original_size;
        let new_size = self.resize.new_size(h, w);
        postprocess_logits(plane, g4, self.sam.image_size, new_size, (h, w))
    }
}
