//! `sam-cobot stats`: mean and standard deviation of a data set's images on the 0–1 scale, per
//! channel and pooled (the pooled pair is what `--preprocessing sonar` takes as `--mean` /
//! `--std`).

use anyhow::{Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::data_args::DataArgs;
use crate::data::DataError;
use crate::data::stats::image_stats;

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Print the statistics as JSON (one object on standard output).
    #[arg(long)]
    json: bool,
}

/// The JSON report.
#[derive(Debug, Serialize)]
struct Report {
    /// Images read.
    images: usize,
    /// Items skipped as unreadable.
    skipped: usize,
    /// Pixels per channel.
    pixels: u64,
    /// Per channel (R, G, B), 0–1 scale.
    mean: [f64; 3],
    std: [f64; 3],
    /// All channels pooled: `--mean` / `--std` for `--preprocessing sonar`.
    grey_mean: f64,
    grey_std: f64,
}

pub fn run(args: StatsArgs) -> Result<()> {
    let dataset = args.data.open()?;
    if dataset.is_empty() {
        bail!("{}: no images", args.data.data.display());
    }
    let bar = ProgressBar::new(dataset.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} images  {per_sec}  eta {eta}")
            .expect("valid template"),
    );
    let mut skipped: Vec<String> = Vec::new();
    let mut fatal: Option<DataError> = None;
    let mut images = 0usize;
    let strict = args.data.strict;
    let loaded = (0..dataset.len()).map_while(|i| {
        let result = dataset.load(i);
        bar.inc(1);
        match result {
            Ok(sample) => {
                images += 1;
                Some(Some(sample.image))
            }
            Err(e) if strict => {
                fatal = Some(e);
                None
            }
            Err(e) => {
                skipped.push(e.to_string());
                Some(None)
            }
        }
    });
    let stats = image_stats(loaded.flatten());
    bar.finish_and_clear();
    if let Some(e) = fatal {
        return Err(e.into());
    }
    for message in &skipped {
        eprintln!("skipped: {message}");
    }
    if !skipped.is_empty() {
        eprintln!(
            "{} item(s) skipped (use --strict to stop at the first)",
            skipped.len()
        );
    }
    if images == 0 {
        bail!("{}: no readable images", args.data.data.display());
    }
    let report = Report {
        images,
        skipped: skipped.len(),
        pixels: stats.pixels,
        mean: stats.mean,
        std: stats.std,
        grey_mean: stats.grey_mean,
        grey_std: stats.grey_std,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} images, {} pixels each channel (0–1 scale, population std)",
        report.images, report.pixels
    );
    for (c, name) in ["R", "G", "B"].iter().enumerate() {
        println!(
            "  {name}: mean {:.4}  std {:.4}",
            report.mean[c], report.std[c]
        );
    }
    println!(
        "  pooled: mean {:.4}  std {:.4}",
        report.grey_mean, report.grey_std
    );
    println!(
        "sonar preprocessing: --preprocessing sonar --mean {:.4} --std {:.4}",
        report.grey_mean, report.grey_std
    );
    Ok(())
}
