//! `sam-cobot scenes`: generated scenes (the pretraining distribution) as a COCO data set, to
//! score a model on scenes it never trained on.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::data::scenes::write_coco;

#[derive(Args, Debug)]
pub struct ScenesArgs {
    /// Folder: images/*.png and annotations.json (COCO, one RLE mask per object).
    #[arg(long)]
    out: PathBuf,
    /// Number of scenes.
    #[arg(long, default_value_t = 40, value_parser = super::at_least_one)]
    count: usize,
    /// Seed of the first scene (the others follow); pretraining never uses seeds below 2^63.
    #[arg(long, default_value_t = 2_000_000)]
    seed: u64,
    /// Side of the square scenes in pixels.
    #[arg(long, default_value_t = 256, value_parser = super::at_least_one)]
    size: usize,
    /// Objects per scene, at most.
    #[arg(long, default_value_t = 8, value_parser = super::at_least_one)]
    max_objects: usize,
}

pub fn run(args: ScenesArgs) -> Result<()> {
    if args.size < 16 {
        bail!(
            "--size {}: scenes need at least 16 pixels a side",
            args.size
        );
    }
    write_coco(
        &args.out,
        args.count,
        args.seed,
        args.size as u32,
        args.max_objects,
    )?;
    println!(
        "{} scenes -> {}",
        args.count,
        args.out.join("annotations.json").display()
    );
    Ok(())
}
