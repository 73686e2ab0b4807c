//! Evaluation with the paper's protocol: every object of a data set prompted by its box, scored
//! at the image's original resolution (SPEC §5.1–5.2, at the original resolution as the issue
//! decides), class means, reports.

pub mod metrics;
pub mod report;

use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData};

use crate::data::preprocess::{Preprocessing, preprocess_sample};
use crate::data::{Dataset, Sample};
use crate::output::overlay::{OverlayPrompts, write_overlay};
use crate::sam::{Prompts, Sam};
use metrics::{Scores, Summary, dice_iou};

/// What produces the masks.
pub enum Scorer<'a> {
    Model(&'a Sam),
    /// Every pixel of the box is the mask: the floor a model must beat.
    BoxFill,
}

pub struct EvalOptions {
    pub preprocessing: Preprocessing,
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
    let mut skipped = Vec::new();
    let mut images = 0;
    for &i in indices {
        let sample = match dataset.load(i) {
            Ok(sample) => sample,
            Err(e) if !opts.strict => {
                skipped.push(e.to_string());
                progress();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let masks = predict_masks(&sample, scorer, opts);
        for (object, mask) in sample.objects.iter().zip(&masks) {
            let (dice, iou) = dice_iou(
                mask.iter().map(|&v| v > 0.0),
                object.mask.as_raw().iter().map(|&v| v > 0),
            );
            scores.add(object.class, dice, iou);
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
    })
}

/// Logit-like planes at the original resolution (> 0 is the mask), one per object.
fn predict_masks(sample: &Sample, scorer: &Scorer, opts: &EvalOptions) -> Vec<Vec<f32>> {
    let (w, h) = sample.image.dimensions();
    let (w, h) = (w as usize, h as usize);
    match scorer {
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
                return Vec::new();
            }
            let s = opts.image_size;
            let input = preprocess_sample(sample, &opts.preprocessing, s);
            let device = sam.device();
            let image = Tensor::<4>::from_data(TensorData::new(input.image, [1, 3, s, s]), &device);
            let prompts = Prompts {
                points: Vec::new(),
                boxes: input.boxes,
            };
            let low_res = sam
                .predict_masks(sam.embed_image(image), &prompts, false)
                .low_res_logits;
            let side = low_res.dims()[3];
            let planes: Vec<f32> = low_res
                .into_data()
                .convert::<f32>()
                .try_into_vec()
                .expect("f32 logits");
            planes
                .chunks(side * side)
                .map(|plane| input.frame.to_original(plane, side))
                .collect()
        }
    }
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
