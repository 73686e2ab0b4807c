//! Evaluation with the paper's protocol: every object of a data set prompted by its box, scored
//! at the image's original resolution (docs/methods.md#metrics, at the original resolution as the issue
//! decides), class means, reports.

pub mod metrics;
pub mod report;

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::{Tensor, TensorData};

use crate::data::preprocess::{Preprocessing, preprocess_sample};
use crate::data::{Dataset, Sample};
use crate::nn::F32Values;
use crate::output::overlay::{OverlayPrompts, write_overlay};
use crate::sam::predictor::best_index;
use crate::sam::{Prompts, Sam};
use metrics::{Scores, Summary, dice_iou};

/// What produces the masks.
pub enum Scorer<'a> {
    Model(&'a Sam),
    /// Every pixel of the box is the mask: the floor a model must beat.
    BoxFill,
}

/// How each object is prompted.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum PromptKind {
    /// Its box (the paper's protocol).
    #[default]
    Box,
    /// One positive point, the object pixel farthest from its boundary (SAM's evaluation
    /// point); SAM's three masks, of which the one with the highest predicted IoU is kept, as
    /// `SamPredictor` users do.
    Point,
}

pub struct EvalOptions {
    pub preprocessing: Preprocessing,
    pub prompt: PromptKind,
    pub image_size: usize,
    /// Write one overlay PNG per image into this folder.
    pub overlays: Option<PathBuf>,
    /// Stop at the first broken item instead of skipping it.
    pub strict: bool,
}

pub struct EvalOutcome {
    pub summary: Summary,
    pub images: usize,
    /// One message per item that could not be read (skipped).
    pub skipped: Vec<String>,
    /// One message per annotation left out of an item that was scored (the rest of it was).
    pub dropped: Vec<String>,
    /// Every object's own score, in data set order: where a model fails.
    pub objects: Vec<ObjectScore>,
}

/// One object's score (fractions, not percentages).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectScore {
    /// The item's name.
    pub image: String,
    /// The object's index within its item.
    pub index: usize,
    pub class: usize,
    /// Its pixels in the target mask.
    pub area: u64,
    pub bbox: [u32; 4],
    pub dice: f64,
    pub iou: f64,
}

/// Scores `indices` of `dataset`; `progress` is called after each image.
pub fn evaluate(
    dataset: &Dataset,
    indices: &[usize],
    scorer: &Scorer,
    opts: &EvalOptions,
    mut progress: impl FnMut(),
) -> anyhow::Result<EvalOutcome> {
    let mut scores = Scores::default();
    let (mut skipped, mut dropped, mut objects) = (Vec::new(), Vec::new(), Vec::new());
    let mut images = 0;
    for &i in indices {
        // Strict: a broken annotation stops the run; otherwise only that annotation is left out.
        let loaded = if opts.strict {
            dataset.load(i).map(|sample| (sample, Vec::new()))
        } else {
            dataset.load_lenient(i).map(|l| (l.sample, l.dropped))
        };
        let sample = match loaded {
            Ok((sample, left_out)) => {
                dropped.extend(left_out.iter().map(ToString::to_string));
                sample
            }
            Err(e) if !opts.strict => {
                skipped.push(e.to_string());
                progress();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let masks = predict_masks(&sample, scorer, opts)
            .with_context(|| format!("scoring {}", sample.name))?;
        for (index, (object, mask)) in sample.objects.iter().zip(&masks).enumerate() {
            let (dice, iou) = dice_iou(
                mask.iter().map(|&v| v > 0.0),
                object.mask.as_raw().iter().map(|&v| v > 0),
            );
            scores.add(object.class, dice, iou);
            objects.push(ObjectScore {
                image: sample.name.clone(),
                index,
                class: object.class,
                area: object.mask.as_raw().iter().filter(|&&v| v > 0).count() as u64,
                bbox: object.bbox,
                dice,
                iou,
            });
        }
        if let Some(dir) = &opts.overlays {
            write_sample_overlay(dir, &sample, &masks)?;
        }
        images += 1;
        progress();
    }
    Ok(EvalOutcome {
        summary: scores.summary(&dataset.classes),
        images,
        skipped,
        dropped,
        objects,
    })
}

/// Logit-like planes at the original resolution (> 0 is the mask), one per object, or the
/// device's failure to compute them.
fn predict_masks(
    sample: &Sample,
    scorer: &Scorer,
    opts: &EvalOptions,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let (w, h) = sample.image.dimensions();
    let (w, h) = (w as usize, h as usize);
    Ok(match scorer {
        Scorer::BoxFill => sample
            .objects
            .iter()
            .map(|o| {
                let [x1, y1, x2, y2] = o.bbox.map(|v| v as usize);
                let mut plane = vec![-1.0f32; w * h];
                for row in plane.chunks_mut(w).take(y2).skip(y1) {
                    row[x1..x2].fill(1.0);
                }
                plane
            })
            .collect(),
        Scorer::Model(sam) => {
            if sample.objects.is_empty() {
                return Ok(Vec::new());
            }
            let s = opts.image_size;
            let input = preprocess_sample(sample, &opts.preprocessing, s);
            let device = sam.device();
            let image = Tensor::<4>::from_data(TensorData::new(input.image, [1, 3, s, s]), &device);
            let (prompts, multimask) = match opts.prompt {
                PromptKind::Box => (
                    Prompts {
                        points: Vec::new(),
                        boxes: input.boxes,
                    },
                    false,
                ),
                PromptKind::Point => {
                    let points = sample
                        .objects
                        .iter()
                        .map(|o| {
                            let (x, y) = deepest_pixel(&o.mask);
                            let (x, y) = input.frame.to_frame(x as f64 + 0.5, y as f64 + 0.5);
                            // The prompt encoder adds the half pixel back.
                            vec![(x as f32 - 0.5, y as f32 - 0.5, 1)]
                        })
                        .collect();
                    let boxes = Vec::new();
                    (Prompts { points, boxes }, true)
                }
            };
            let out = sam.predict_masks(sam.embed_image(image), &prompts, multimask);
            let [_, k, side, _] = out.low_res_logits.dims();
            let planes: Vec<f32> = out.low_res_logits.try_f32_values()?;
            let iou: Vec<f32> = out.iou.try_f32_values()?;
            planes
                .chunks(k * side * side)
                .zip(iou.chunks(k))
                .map(|(masks, iou)| {
                    let best = best_index(iou);
                    input
                        .frame
                        .to_original(&masks[best * side * side..][..side * side], side)
                })
                .collect()
        }
    })
}

/// The mask pixel `(x, y)` farthest (in city-block distance) from every pixel outside the mask
/// and from the image border; the first in raster order among equals.
pub fn deepest_pixel(mask: &image::GrayImage) -> (u32, u32) {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let inside = |i: usize| mask.as_raw()[i] > 0;
    let mut d: Vec<u32> = (0..w * h)
        .map(|i| u32::from(inside(i)) * u32::MAX / 2)
        .collect();
    for i in 0..w * h {
        let (x, y) = (i % w, i / w);
        let up = if y > 0 { d[i - w] } else { 0 };
        let left = if x > 0 { d[i - 1] } else { 0 };
        d[i] = d[i].min(up.min(left) + 1);
    }
    for i in (0..w * h).rev() {
        let (x, y) = (i % w, i / w);
        let down = if y + 1 < h { d[i + w] } else { 0 };
        let right = if x + 1 < w { d[i + 1] } else { 0 };
        d[i] = d[i].min(down.min(right) + 1);
    }
    let best = (0..w * h).fold(0, |b, i| if d[i] > d[b] { i } else { b });
    ((best % w) as u32, (best / w) as u32)
}

fn write_sample_overlay(
    dir: &std::path::Path,
    sample: &Sample,
    masks: &[Vec<f32>],
) -> anyhow::Result<()> {
    let refs: Vec<&[f32]> = masks.iter().map(Vec::as_slice).collect();
    let prompts = OverlayPrompts {
        boxes: sample
            .objects
            .iter()
            .map(|o| o.bbox.map(|v| v as f32))
            .collect(),
        points: Vec::new(),
    };
    let stem = std::path::Path::new(&sample.name)
        .file_stem()
        .map_or_else(|| sample.name.clone(), |s| s.to_string_lossy().into_owned());
    write_overlay(
        &dir.join(format!("{stem}.png")),
        &sample.image,
        &refs,
        &prompts,
    )
}
