//! `sam-cobot eval`: the paper's per-object metrics on a data set, as JSON and Markdown reports.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use super::data_args::{DataArgs, PreprocessFlags};
use super::model_args::load_model;
use crate::eval::report::{REPORT_FILES, write_object_scores, write_reports};
use crate::eval::{EvalOptions, PromptKind, Scorer, evaluate};
use crate::files::guard::{FileRoles, claim_output_dir};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Baseline {
    /// Each box itself as the mask.
    Boxfill,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    preprocess: PreprocessFlags,
    /// SAM checkpoint (not needed with --baseline).
    #[arg(long, required_unless_present = "baseline")]
    checkpoint: Option<PathBuf>,
    /// Adapter file trained on the checkpoint.
    #[arg(long, requires = "checkpoint")]
    adapter: Option<PathBuf>,
    /// Input size S (default: the adapter's, else the checkpoint's).
    #[arg(long)]
    image_size: Option<usize>,
    /// Score a baseline instead of a model.
    #[arg(long, value_enum, conflicts_with = "checkpoint")]
    baseline: Option<Baseline>,
    /// Report folder: metrics.json, metrics.md, objects.csv (each object's score) and, with
    /// --overlays, overlays.
    #[arg(long)]
    out: PathBuf,
    /// Write into an --out that is not empty, replacing an earlier report (and overlays of the
    /// same names); other files are kept.
    #[arg(long)]
    force: bool,
    /// How each object is prompted: its box, or one point (SAM's three masks, the one with the
    /// highest predicted IoU kept).
    #[arg(long, value_enum, default_value_t = PromptKind::Box, conflicts_with = "baseline")]
    prompt: PromptKind,
    /// Write an overlay PNG per image into the report folder.
    #[arg(long)]
    overlays: bool,
    #[command(flatten)]
    device: super::device::DeviceArg,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let dataset = args.data.open()?;
    if dataset.is_empty() {
        bail!("{}: no images to evaluate", args.data.data.display());
    }
    let mut roles = FileRoles::new();
    for source in dataset.sources() {
        roles.input("--data", &source);
    }
    for (flag, path) in [
        ("--checkpoint", &args.checkpoint),
        ("--adapter", &args.adapter),
    ] {
        if let Some(path) = path {
            roles.input(flag, path);
        }
    }
    roles.output_dir("--out", &args.out)?;
    if let Some(line) = dataset.split_report() {
        eprintln!("{line}");
    }
    for warning in dataset.warnings() {
        eprintln!("{warning}");
    }
    let device = args.device.device()?;
    let sam = match &args.checkpoint {
        Some(c) => Some(load_model(
            c,
            args.adapter.as_deref(),
            args.image_size,
            &device,
        )?),
        None => None,
    };
    claim_output_dir("--out", &args.out, args.force, &REPORT_FILES)?;
    let scorer = match &sam {
        Some(sam) => Scorer::Model(sam),
        None => Scorer::BoxFill,
    };
    let opts = EvalOptions {
        preprocessing: args.preprocess.preprocessing()?,
        prompt: args.prompt,
        image_size: sam.as_ref().map_or(1024, |s| s.image_size),
        overlays: args.overlays.then(|| args.out.clone()),
        strict: args.data.strict,
    };
    let indices: Vec<usize> = (0..dataset.len()).collect();
    let bar = ProgressBar::new(indices.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} images  {per_sec}  eta {eta}")
            .expect("valid template"),
    );
    let outcome = evaluate(&dataset, &indices, &scorer, &opts, || bar.inc(1))?;
    bar.finish_and_clear();
    let what = match &args.checkpoint {
        Some(c) => c.display().to_string(),
        None => "box-filled baseline".to_string(),
    };
    let title = format!("{} on {}", what, args.data.data.display());
    write_reports(&args.out, &outcome.summary, &title)?;
    write_object_scores(&args.out, &outcome.objects, &dataset.classes)?;
    println!(
        "{} images, {} objects: mean Dice {:.2}%, mean IoU {:.2}% (object classes present)",
        outcome.images,
        outcome.summary.objects,
        outcome.summary.mean_dice,
        outcome.summary.mean_iou
    );
    for message in &outcome.dropped {
        eprintln!("dropped: {message}");
    }
    for message in &outcome.skipped {
        eprintln!("skipped: {message}");
    }
    if !outcome.skipped.is_empty() {
        eprintln!(
            "{} item(s) skipped (use --strict to stop at the first)",
            outcome.skipped.len()
        );
    }
    println!("report -> {}", args.out.join("metrics.md").display());
    Ok(())
}
