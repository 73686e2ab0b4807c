//! `sam-cobot segment-everything`: every object in an image, as Meta's `scripts/amg.py` finds
//! them (see [`crate::sam::mask_generator`]), with amg.py's options and output layout.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use super::image_files::image_files;
use super::model_args::ModelArgs;
use crate::data::open_image;
use crate::files::guard::FileRoles;
use crate::output::automatic_masks::{write_coco_json, write_mask_folder, write_masks_overlay};
use crate::sam::mask_generator::{InvalidSetting, MaskGenerator, MaskGeneratorSettings};

#[derive(Args, Debug)]
pub struct SegmentEverythingArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// An image, or a folder of images (its image files, by name).
    #[arg(long, alias = "input")]
    image: PathBuf,
    /// Output folder: per image, `<stem>/` with `<i>.png` per mask and `metadata.csv`, or with
    /// --output-mode coco-rle the file `<stem>.json`; and `<stem>.overlay.png`.
    #[arg(long, alias = "output")]
    out: PathBuf,
    /// binary-mask: one PNG per mask and metadata.csv; coco-rle: a JSON list of masks as COCO
    /// RLE with their area, box, scores, point and crop.
    #[arg(long, value_enum, default_value_t = OutputMode::BinaryMask)]
    output_mode: OutputMode,
    /// amg.py's name for --output-mode coco-rle.
    #[arg(long, conflicts_with = "output_mode")]
    convert_to_rle: bool,
    /// Replace outputs that exist.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    generator: GeneratorArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputMode {
    BinaryMask,
    CocoRle,
}

/// The automatic mask generator's options, named and defaulted as in amg.py
/// ([`MaskGeneratorSettings::default`]).
#[derive(Args, Debug)]
#[command(next_help_heading = "Mask generator (Meta's SamAutomaticMaskGenerator)")]
struct GeneratorArgs {
    /// Points a side of the full image's prompt grid.
    #[arg(long, default_value_t = defaults().points_per_side)]
    points_per_side: usize,
    /// Points the decoder runs at once (memory against speed; the masks do not change).
    #[arg(long, default_value_t = defaults().points_per_batch)]
    points_per_batch: usize,
    /// Keep masks whose predicted IoU is above this (0 or less: keep all).
    #[arg(long, default_value_t = defaults().pred_iou_thresh)]
    pred_iou_thresh: f32,
    /// Keep masks whose stability score is at least this (0 or less: keep all).
    #[arg(long, default_value_t = defaults().stability_score_thresh)]
    stability_score_thresh: f32,
    /// Logit offset of the stability score's two thresholds.
    #[arg(long, default_value_t = defaults().stability_score_offset)]
    stability_score_offset: f32,
    /// Box IoU above which NMS drops the weaker of two masks within a crop.
    #[arg(long, default_value_t = defaults().box_nms_thresh)]
    box_nms_thresh: f64,
    /// Layers of crops beyond the whole image (layer i: 2^i x 2^i overlapping crops).
    #[arg(long, default_value_t = defaults().crop_n_layers)]
    crop_n_layers: usize,
    /// Box IoU above which NMS drops a duplicate between crops (smaller crops win).
    #[arg(long, default_value_t = defaults().crop_nms_thresh)]
    crop_nms_thresh: f64,
    /// Overlap of neighbouring crops, as a fraction of the image's short side.
    #[arg(long, default_value_t = defaults().crop_overlap_ratio)]
    crop_overlap_ratio: f64,
    /// Crop layer i's grid has points-per-side / factor^i points a side.
    #[arg(long, default_value_t = defaults().crop_n_points_downscale_factor)]
    crop_n_points_downscale_factor: usize,
    /// Fill holes and remove islands smaller than this many pixels, then NMS again (0: off).
    #[arg(long, default_value_t = defaults().min_mask_region_area)]
    min_mask_region_area: usize,
}

fn defaults() -> MaskGeneratorSettings {
    MaskGeneratorSettings::default()
}

impl GeneratorArgs {
    fn settings(&self) -> MaskGeneratorSettings {
        MaskGeneratorSettings {
            points_per_side: self.points_per_side,
            points_per_batch: self.points_per_batch,
            pred_iou_thresh: self.pred_iou_thresh,
            stability_score_thresh: self.stability_score_thresh,
            stability_score_offset: self.stability_score_offset,
            box_nms_thresh: self.box_nms_thresh,
            crop_n_layers: self.crop_n_layers,
            crop_nms_thresh: self.crop_nms_thresh,
            crop_overlap_ratio: self.crop_overlap_ratio,
            crop_n_points_downscale_factor: self.crop_n_points_downscale_factor,
            min_mask_region_area: self.min_mask_region_area,
        }
    }
}

/// A setting's error under its flag's name.
fn flag_error(e: InvalidSetting) -> anyhow::Error {
    anyhow::anyhow!("--{} {}: {}", e.name.replace('_', "-"), e.value, e.why)
}

/// What one image is written as.
struct Outputs {
    image: PathBuf,
    masks: PathBuf,
    overlay: PathBuf,
}

pub fn run(args: SegmentEverythingArgs) -> Result<()> {
    let settings = args.generator.settings();
    settings.validate().map_err(flag_error)?;
    let mode = if args.convert_to_rle {
        OutputMode::CocoRle
    } else {
        args.output_mode
    };
    let images = image_files("--image", std::slice::from_ref(&args.image))?;
    let mut roles = FileRoles::new();
    args.model.declare_inputs(&mut roles);
    roles.input("--image", &args.image);
    roles.output_dir("--out", &args.out)?;
    let outputs = plan_outputs(&images, &args.out, mode, args.force)?;

    let sam = args.model.load()?;
    let generator = MaskGenerator::new(&sam, settings).map_err(flag_error)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for (i, out) in outputs.iter().enumerate() {
        let image = open_image(&out.image)?.to_rgb8();
        let batches = generator.batches(image.height() as usize, image.width() as usize);
        let bar = ProgressBar::new(batches as u64).with_style(
            ProgressStyle::with_template(&format!(
                "image {}/{} {{bar:30}} {{pos}}/{{len}} point batches  eta {{eta}}",
                i + 1,
                outputs.len()
            ))
            .expect("valid template"),
        );
        let started = Instant::now();
        let (masks, timing) = generator
            .generate(&image, &mut || bar.inc(1))
            .with_context(|| format!("segmenting {}", out.image.display()))?;
        bar.finish_and_clear();
        match mode {
            OutputMode::BinaryMask => write_mask_folder(&out.masks, &masks)?,
            OutputMode::CocoRle => write_coco_json(&out.masks, &masks)?,
        }
        write_masks_overlay(&out.overlay, &image, &masks)?;
        let per_batch = timing.decoder.as_secs_f64() / timing.batches.max(1) as f64;
        println!(
            "{}: {} masks in {:.2}s (encoder {:.2}s over {} crop(s), decoder {:.1} ms per batch \
             of {} points, filtering {:.2}s) -> {}",
            out.image.display(),
            masks.len(),
            started.elapsed().as_secs_f64(),
            timing.encoder.as_secs_f64(),
            generator
                .crops(image.height() as usize, image.width() as usize)
                .len(),
            per_batch * 1e3,
            generator.settings().points_per_batch,
            timing.postprocess.as_secs_f64(),
            out.masks.display()
        );
    }
    Ok(())
}

/// Each image's output paths, checked before anything runs: stems unique, nothing replaced
/// without --force.
fn plan_outputs(
    images: &[PathBuf],
    out: &Path,
    mode: OutputMode,
    force: bool,
) -> Result<Vec<Outputs>> {
    let mut plans: Vec<Outputs> = Vec::new();
    for image in images {
        let stem = image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(other) = plans
            .iter()
            .find(|p| p.image.file_stem() == image.file_stem())
        {
            bail!(
                "--image: {} and {} have the same stem '{stem}': outputs are named by it",
                other.image.display(),
                image.display()
            );
        }
        let masks = match mode {
            OutputMode::BinaryMask => out.join(&stem),
            OutputMode::CocoRle => out.join(format!("{stem}.json")),
        };
        let overlay = out.join(format!("{stem}.overlay.png"));
        for path in [&masks, &overlay] {
            if path.exists() && !force {
                bail!("--out: {} exists; --force replaces it", path.display());
            }
        }
        plans.push(Outputs {
            image: image.clone(),
            masks,
            overlay,
        });
    }
    Ok(plans)
}
