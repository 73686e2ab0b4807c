//! `sam-cobot scenes`: generated scenes (the pretraining distribution) as a COCO data set, to
//! score a model on scenes it never trained on.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;

use crate::data::scenes::write_coco;
use crate::files::guard::{claim_output_dir, remove_for_force};

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
    /// Write into an --out that is not empty, replacing the scenes written there before
    /// (annotations.json and images/scene_*.png; other files are kept).
    #[arg(long)]
    force: bool,
}

/// The annotations file `scenes` writes at the top of --out (its images go under `images/`).
const ANNOTATIONS: &str = "annotations.json";

pub fn run(args: ScenesArgs) -> Result<()> {
    if args.size < 16 {
        bail!(
            "--size {}: scenes need at least 16 pixels a side",
            args.size
        );
    }
    claim_output_dir("--out", &args.out, args.force, &[ANNOTATIONS])?;
    remove_earlier_scenes(&args.out.join("images"))?;
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
        args.out.join(ANNOTATIONS).display()
    );
    Ok(())
}

/// Removes the images an earlier `scenes` wrote (`scene_<seed>.png`), so that the folder holds
/// only the scenes its annotations list; other files are the user's and stay.
fn remove_earlier_scenes(images: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(images) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_scene = name
            .strip_prefix("scene_")
            .and_then(|rest| rest.strip_suffix(".png"))
            .is_some_and(|seed| !seed.is_empty() && seed.bytes().all(|b| b.is_ascii_digit()));
        if is_scene {
            remove_for_force(&entry.path())?;
        }
    }
    Ok(())
}
