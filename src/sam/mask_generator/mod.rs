//! Segment everything: SAM prompted with a grid of single points over the image (and over crops
//! of it), the masks filtered by predicted IoU, stability and crop edges, deduplicated with box
//! NMS and encoded as RLE, as Meta's `SamAutomaticMaskGenerator` does
//! (docs/sam.md#segment-everything).
//!
//! Unlike Meta's, which upsamples every candidate before filtering, a candidate is brought to
//! full resolution only once its predicted IoU passes, and each is reduced to its RLE at once, so
//! memory holds one full-size mask at a time rather than a batch of them.

pub mod grid;
pub mod nms;
pub mod regions;

use std::time::{Duration, Instant};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::Sam;
use super::predictor::{ImageEmbedding, Predictor};
use crate::nn::F32Values;
use crate::rle::Rle;
use grid::{CropBox, crop_boxes, layer_grids, layer_points_per_side};
use nms::nms;
use regions::{Regions, remove_small_regions};

/// Meta's options, under their names and with their defaults (a JSON or TOML table of them
/// reads with the missing ones defaulted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskGeneratorSettings {
    /// Points a side of the full image's grid.
    pub points_per_side: usize,
    /// Points the decoder runs at once (memory against speed; the masks do not change).
    pub points_per_batch: usize,
    /// Keep masks whose predicted IoU is above this (0 or less: no filter).
    pub pred_iou_thresh: f32,
    /// Keep masks whose stability score is at least this (0 or less: no filter).
    pub stability_score_thresh: f32,
    /// The logit offset of the stability score's two thresholds.
    pub stability_score_offset: f32,
    /// IoU above which NMS drops the lower-scoring of two boxes within a crop.
    pub box_nms_thresh: f64,
    /// Layers of crops beyond the full image (layer i: 2^i × 2^i crops).
    pub crop_n_layers: usize,
    /// IoU above which NMS drops a duplicate between crops (smaller crops win).
    pub crop_nms_thresh: f64,
    /// Overlap of neighbouring crops, as a fraction of the short side (halved each layer).
    pub crop_overlap_ratio: f64,
    /// Crop layer i's grid has points_per_side / factor^i points a side.
    pub crop_n_points_downscale_factor: usize,
    /// Fill holes and drop islands smaller than this many pixels, then NMS again (0: off).
    pub min_mask_region_area: usize,
}

impl Default for MaskGeneratorSettings {
    fn default() -> Self {
        Self {
            points_per_side: 32,
            points_per_batch: 64,
            pred_iou_thresh: 0.88,
            stability_score_thresh: 0.95,
            stability_score_offset: 1.0,
            box_nms_thresh: 0.7,
            crop_n_layers: 0,
            crop_nms_thresh: 0.7,
            crop_overlap_ratio: 512.0 / 1500.0,
            crop_n_points_downscale_factor: 1,
            min_mask_region_area: 0,
        }
    }
}

/// Crop layers beyond this would ask for more than 65,536 crops.
pub const MAX_CROP_LAYERS: usize = 8;

/// A setting the generator cannot run with, by its name in Meta's code.
#[derive(Debug, thiserror::Error)]
#[error("{name} {value}: {why}")]
pub struct InvalidSetting {
    pub name: &'static str,
    pub value: String,
    pub why: String,
}

impl MaskGeneratorSettings {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let invalid = |name, value: &dyn ToString, why: &str| {
            Err(InvalidSetting {
                name,
                value: value.to_string(),
                why: why.to_string(),
            })
        };
        let finite = [
            ("pred_iou_thresh", f64::from(self.pred_iou_thresh)),
            (
                "stability_score_thresh",
                f64::from(self.stability_score_thresh),
            ),
            (
                "stability_score_offset",
                f64::from(self.stability_score_offset),
            ),
            ("box_nms_thresh", self.box_nms_thresh),
            ("crop_nms_thresh", self.crop_nms_thresh),
            ("crop_overlap_ratio", self.crop_overlap_ratio),
        ];
        for (name, value) in finite {
            if !value.is_finite() {
                return invalid(name, &value, "must be a finite number");
            }
        }
        if !(0.0..1.0).contains(&self.crop_overlap_ratio) {
            return invalid(
                "crop_overlap_ratio",
                &self.crop_overlap_ratio,
                "must be at least 0 and below 1",
            );
        }
        if self.points_per_batch == 0 {
            return invalid("points_per_batch", &0, "must be at least 1");
        }
        if self.crop_n_points_downscale_factor == 0 {
            return invalid("crop_n_points_downscale_factor", &0, "must be at least 1");
        }
        if self.crop_n_layers > MAX_CROP_LAYERS {
            return invalid(
                "crop_n_layers",
                &self.crop_n_layers,
                &format!("at most {MAX_CROP_LAYERS}"),
            );
        }
        for layer in 0..=self.crop_n_layers {
            let n = layer_points_per_side(
                self.points_per_side,
                layer,
                self.crop_n_points_downscale_factor,
            );
            if n == 0 {
                let why = if layer == 0 {
                    "a grid of zero points prompts nothing: must be at least 1".to_string()
                } else {
                    format!(
                        "crop layer {layer}'s grid would have zero points ({} / {}^{layer} is \
                         below 1 a side): fewer crop layers or a smaller downscale factor",
                        self.points_per_side, self.crop_n_points_downscale_factor
                    )
                };
                return invalid("points_per_side", &self.points_per_side, &why);
            }
        }
        Ok(())
    }
}

/// One mask, in the whole image's frame.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedMask {
    pub rle: Rle,
    /// `[x0, y0, x1, y1]`, inclusive pixel bounds (`[0, 0, 0, 0]` for an empty mask).
    pub bbox: [i64; 4],
    pub predicted_iou: f32,
    /// The grid point that prompted it, in image pixels.
    pub point: (f64, f64),
    /// IoU of the mask thresholded at ±offset; NaN when both are empty (0/0), as in Meta's code.
    pub stability_score: f32,
    pub crop_box: CropBox,
}

impl GeneratedMask {
    pub fn area(&self) -> u64 {
        self.rle.area()
    }
}

/// Where the time went.
#[derive(Debug, Clone, Default)]
pub struct Timing {
    /// Image encoder, over all crops.
    pub encoder: Duration,
    /// Prompt encoder and mask decoder, over all point batches.
    pub decoder: Duration,
    /// Upsampling, scores, boxes and RLE of the candidates, and the NMS.
    pub postprocess: Duration,
    pub batches: usize,
}

pub struct MaskGenerator<'a> {
    predictor: Predictor<'a>,
    settings: MaskGeneratorSettings,
    grids: Vec<Vec<(f64, f64)>>,
}

impl<'a> MaskGenerator<'a> {
    pub fn new(sam: &'a Sam, settings: MaskGeneratorSettings) -> Result<Self, InvalidSetting> {
        settings.validate()?;
        let most = sam.prompts_per_call();
        if settings.points_per_batch > most {
            return Err(InvalidSetting {
                name: "points_per_batch",
                value: settings.points_per_batch.to_string(),
                why: format!(
                    "a batch's masks at {} px are one tensor, and the device {:?} holds those \
                     of at most {most} points in one buffer",
                    sam.image_size,
                    sam.device()
                ),
            });
        }
        let grids = layer_grids(
            settings.points_per_side,
            settings.crop_n_layers,
            settings.crop_n_points_downscale_factor,
        );
        Ok(Self {
            predictor: Predictor::new(sam),
            settings,
            grids,
        })
    }

    pub fn settings(&self) -> &MaskGeneratorSettings {
        &self.settings
    }

    /// The crops of a `height × width` image, with their layer.
    pub fn crops(&self, height: usize, width: usize) -> Vec<(CropBox, usize)> {
        let s = &self.settings;
        crop_boxes(height, width, s.crop_n_layers, s.crop_overlap_ratio)
    }

    /// Point batches the decoder runs for a `height × width` image (for progress bars).
    pub fn batches(&self, height: usize, width: usize) -> usize {
        self.crops(height, width)
            .iter()
            .map(|&(_, layer)| {
                self.grids[layer]
                    .len()
                    .div_ceil(self.settings.points_per_batch)
            })
            .sum()
    }

    /// Every mask found in `image`, in Meta's order; `on_batch` is called after each point batch.
    /// An error is the device's failure to compute or give back a batch's masks.
    pub fn generate(
        &self,
        image: &RgbImage,
        on_batch: &mut dyn FnMut(),
    ) -> anyhow::Result<(Vec<GeneratedMask>, Timing)> {
        self.generate_with(image, None, on_batch)
    }

    /// [`MaskGenerator::generate`] with the whole image's embedding already computed (by this
    /// generator's model: a server's cache), so that only the crops run the encoder.
    pub fn generate_with(
        &self,
        image: &RgbImage,
        whole_image: Option<&ImageEmbedding>,
        on_batch: &mut dyn FnMut(),
    ) -> anyhow::Result<(Vec<GeneratedMask>, Timing)> {
        let (h, w) = (image.height() as usize, image.width() as usize);
        let crops = self.crops(h, w);
        let mut timing = Timing::default();
        let mut masks = Vec::new();
        for &(crop, layer) in &crops {
            let known = whole_image.filter(|_| crop == [0, 0, w, h]);
            masks.extend(self.process_crop(image, crop, layer, known, &mut timing, on_batch)?);
        }
        let started = Instant::now();
        if crops.len() > 1 {
            // Prefer masks from smaller crops.
            let scores: Vec<f32> = masks.iter().map(|m| 1.0 / crop_area(&m.crop_box)).collect();
            let boxes: Vec<[f32; 4]> = masks.iter().map(|m| m.bbox.map(|v| v as f32)).collect();
            masks = take(masks, &nms(&boxes, &scores, self.settings.crop_nms_thresh));
        }
        if self.settings.min_mask_region_area > 0 {
            masks = self.remove_small_regions(masks);
        }
        timing.postprocess += started.elapsed();
        Ok((masks, timing))
    }

    fn process_crop(
        &self,
        image: &RgbImage,
        crop: CropBox,
        layer: usize,
        known: Option<&ImageEmbedding>,
        timing: &mut Timing,
        on_batch: &mut dyn FnMut(),
    ) -> anyhow::Result<Vec<GeneratedMask>> {
        let [x0, y0, x1, y1] = crop;
        let (cw, ch) = (x1 - x0, y1 - y0);
        let computed;
        let embedded = match known {
            Some(embedded) => embedded,
            None => {
                let view =
                    image::imageops::crop_imm(image, x0 as u32, y0 as u32, cw as u32, ch as u32);
                let started = Instant::now();
                computed = self.predictor.set_image(&view.to_image());
                timing.encoder += started.elapsed();
                &computed
            }
        };
        let points: Vec<(f64, f64)> = self.grids[layer]
            .iter()
            .map(|&(x, y)| (x * cw as f64, y * ch as f64))
            .collect();
        let mut found = Vec::new();
        for batch in points.chunks(self.settings.points_per_batch) {
            found.extend(self.process_batch(embedded, batch, crop, image, timing)?);
            on_batch();
        }
        let started = Instant::now();
        let boxes: Vec<[f32; 4]> = found.iter().map(|m| m.bbox.map(|v| v as f32)).collect();
        let scores: Vec<f32> = found.iter().map(|m| m.predicted_iou).collect();
        let keep = nms(&boxes, &scores, self.settings.box_nms_thresh);
        let (dx, dy) = (x0 as i64, y0 as i64);
        let masks = take(found, &keep)
            .into_iter()
            .map(|mut m| {
                let [bx0, by0, bx1, by1] = m.bbox;
                m.bbox = [bx0 + dx, by0 + dy, bx1 + dx, by1 + dy];
                m.point = (m.point.0 + x0 as f64, m.point.1 + y0 as f64);
                m
            })
            .collect();
        timing.postprocess += started.elapsed();
        Ok(masks)
    }

    /// The masks of one batch of grid points (crop pixels) that pass the filters, with boxes
    /// and points still in the crop's frame.
    fn process_batch(
        &self,
        embedded: &ImageEmbedding,
        points: &[(f64, f64)],
        crop: CropBox,
        image: &RgbImage,
        timing: &mut Timing,
    ) -> anyhow::Result<Vec<GeneratedMask>> {
        let s = &self.settings;
        let started = Instant::now();
        let out = self.predictor.predict_points(embedded, points, true);
        let [_, k, g4, _] = out.low_res_logits.dims();
        let iou: Vec<f32> = out.iou.try_f32_values()?;
        let low_res: Vec<f32> = out.low_res_logits.try_f32_values()?;
        timing.decoder += started.elapsed();
        timing.batches += 1;

        let started = Instant::now();
        let (ch, cw) = embedded.original_size;
        let (h, w) = (image.height() as usize, image.width() as usize);
        let [x0, y0, x1, y1] = crop;
        let mut found = Vec::new();
        for (i, plane) in low_res.chunks(g4 * g4).enumerate() {
            let predicted_iou = iou[i];
            // Meta filters only with a positive threshold, which a NaN score then fails.
            let iou_passes = s.pred_iou_thresh <= 0.0 || predicted_iou > s.pred_iou_thresh;
            if !iou_passes {
                continue;
            }
            let logits = self.predictor.upscale(plane, embedded.original_size);
            let stability_score = stability_score(&logits, s.stability_score_offset);
            let stable =
                s.stability_score_thresh <= 0.0 || stability_score >= s.stability_score_thresh;
            if !stable {
                continue;
            }
            let mask: Vec<bool> = logits.iter().map(|&v| v > 0.0).collect();
            drop(logits);
            let bbox = mask_box(&mask, ch, cw);
            if is_near_crop_edge(&bbox, &crop, (h, w)) {
                continue;
            }
            let rle = Rle::encode(h as u32, w as u32, |y, x| {
                (x0..x1).contains(&x) && (y0..y1).contains(&y) && mask[(y - y0) * cw + (x - x0)]
            });
            found.push(GeneratedMask {
                rle,
                bbox,
                predicted_iou,
                point: points[i / k],
                stability_score,
                crop_box: crop,
            });
        }
        timing.postprocess += started.elapsed();
        Ok(found)
    }

    /// Meta's `postprocess_small_regions`: holes and islands below the minimum area removed from
    /// each mask, then NMS again on the new boxes, preferring masks that did not change.
    fn remove_small_regions(&self, masks: Vec<GeneratedMask>) -> Vec<GeneratedMask> {
        let s = &self.settings;
        let mut boxes = Vec::with_capacity(masks.len());
        let mut scores = Vec::with_capacity(masks.len());
        let mut changed_to = Vec::with_capacity(masks.len());
        for m in &masks {
            let (h, w) = (m.rle.h as usize, m.rle.w as usize);
            let mut mask = m
                .rle
                .decode_row_major()
                .expect("a generated RLE covers the image");
            let min = s.min_mask_region_area;
            let holes = remove_small_regions(&mut mask, h, w, min, Regions::Holes);
            let islands = remove_small_regions(&mut mask, h, w, min, Regions::Islands);
            let bbox = mask_box(&mask, h, w);
            boxes.push(bbox.map(|v| v as f32));
            let changed = holes || islands;
            scores.push(if changed { 0.0 } else { 1.0 });
            changed_to.push(
                changed.then(|| (Rle::encode(m.rle.h, m.rle.w, |y, x| mask[y * w + x]), bbox)),
            );
        }
        let keep = nms(&boxes, &scores, s.box_nms_thresh.max(s.crop_nms_thresh));
        let masks = masks
            .into_iter()
            .zip(changed_to)
            .map(|(mut m, changed)| {
                if let Some((rle, bbox)) = changed {
                    m.rle = rle;
                    m.bbox = bbox;
                }
                m
            })
            .collect();
        take(masks, &keep)
    }
}

/// IoU of the mask at `+offset` and at `−offset` (the first lies inside the second).
fn stability_score(logits: &[f32], offset: f32) -> f32 {
    let (mut inner, mut outer) = (0u32, 0u32);
    for &v in logits {
        inner += u32::from(v > offset);
        outer += u32::from(v > -offset);
    }
    inner as f32 / outer as f32
}

/// A box (crop frame) within 20 px of a crop edge that is not also an edge of the image: the
/// object most likely goes on beyond the crop.
fn is_near_crop_edge(bbox: &[i64; 4], crop: &CropBox, (h, w): (usize, usize)) -> bool {
    let shift = [crop[0], crop[1], crop[0], crop[1]];
    let image = [0, 0, w, h];
    (0..4).any(|k| {
        let b = (bbox[k] + shift[k] as i64) as f32;
        let near = |edge: usize| (b - edge as f32).abs() <= 20.0;
        near(crop[k]) && !near(image[k])
    })
}

/// The inclusive box `[x0, y0, x1, y1]` around a row-major `height × width` mask; `[0, 0, 0, 0]`
/// when the mask is empty, as Meta's `batched_mask_to_box` gives it.
pub fn mask_box(mask: &[bool], height: usize, width: usize) -> [i64; 4] {
    let mut b: Option<[usize; 4]> = None;
    for y in 0..height {
        let row = &mask[y * width..(y + 1) * width];
        let (Some(first), Some(last)) = (row.iter().position(|&v| v), row.iter().rposition(|&v| v))
        else {
            continue;
        };
        b = Some(match b {
            None => [first, y, last, y],
            Some([x0, y0, x1, _]) => [x0.min(first), y0, x1.max(last), y],
        });
    }
    b.map_or([0; 4], |b| b.map(|v| v as i64))
}

fn crop_area(crop: &CropBox) -> f32 {
    ((crop[2] - crop[0]) * (crop[3] - crop[1])) as f32
}

/// The items at `keep`, in that order.
fn take<T>(items: Vec<T>, keep: &[usize]) -> Vec<T> {
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    keep.iter()
        .map(|&i| slots[i].take().expect("each index kept once"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stability_is_the_iou_of_the_two_thresholds_and_nan_when_both_are_empty() {
        assert_eq!(stability_score(&[2.0, 0.5, -0.5, -3.0], 1.0), 1.0 / 3.0);
        assert!(stability_score(&[-2.0, -5.0], 1.0).is_nan());
    }

    #[test]
    fn box_is_inclusive_and_empty_is_zero() {
        let mut mask = vec![false; 5 * 6];
        mask[6 + 2] = true;
        mask[3 * 6 + 4] = true;
        assert_eq!(mask_box(&mask, 5, 6), [2, 1, 4, 3]);
        assert_eq!(mask_box(&[false; 4], 2, 2), [0; 4]);
    }

    #[test]
    fn boxes_near_an_inner_crop_edge_are_dropped_but_not_at_the_image_edge() {
        let crop = [100, 0, 200, 100];
        // Box in crop frame; 15 px from the crop's left edge (x = 100), not the image's.
        assert!(is_near_crop_edge(&[15, 40, 60, 60], &crop, (100, 300)));
        // Touching the crop's top edge, which is also the image's.
        assert!(!is_near_crop_edge(&[30, 0, 60, 60], &crop, (100, 300)));
        assert!(!is_near_crop_edge(&[30, 30, 60, 60], &crop, (100, 300)));
    }

    #[test]
    fn unusable_settings_are_named() {
        let bad = |s: MaskGeneratorSettings| s.validate().unwrap_err().to_string();
        let d = MaskGeneratorSettings::default;
        let e = bad(MaskGeneratorSettings {
            points_per_side: 0,
            ..d()
        });
        assert!(
            e.starts_with("points_per_side 0: a grid of zero points"),
            "{e}"
        );
        let e = bad(MaskGeneratorSettings {
            pred_iou_thresh: f32::NAN,
            ..d()
        });
        assert_eq!(e, "pred_iou_thresh NaN: must be a finite number");
        let e = bad(MaskGeneratorSettings {
            points_per_side: 4,
            crop_n_layers: 2,
            crop_n_points_downscale_factor: 4,
            ..d()
        });
        assert!(
            e.contains("crop layer 2's grid would have zero points"),
            "{e}"
        );
        let e = bad(MaskGeneratorSettings {
            crop_overlap_ratio: 1.0,
            ..d()
        });
        assert!(e.starts_with("crop_overlap_ratio 1: must be"), "{e}");
        assert!(d().validate().is_ok());
    }
}
