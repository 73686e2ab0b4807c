//! `sam-cobot init`: a SAM checkpoint with random weights, to train from scratch with `--method full`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::checkpoint::CheckpointFormat;
use crate::files::guard::refuse_existing;
use crate::sam::config::SamConfig;
use crate::sam::random::random_state_dict;

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Configuration: tiny, mini (the shipped base's: embed 128, depth 4, 256 px), small (embed
    /// 256, depth 6, 256 px), vit_b, vit_l or vit_h.
    #[arg(long)]
    model: String,
    /// Output checkpoint with Meta's key names: `.safetensors` or `.pth` (the extension decides).
    #[arg(long)]
    out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: InitArgs) -> Result<()> {
    let cfg = model_config(&args.model)?;
    let format = CheckpointFormat::of_output("--out", &args.out)?;
    refuse_existing("--out", &args.out, args.force)?;
    format.write(&args.out, &random_state_dict(&cfg, args.seed))?;
    println!(
        "{} with random weights (seed {}) -> {}",
        args.model,
        args.seed,
        args.out.display()
    );
    Ok(())
}

/// The configuration `--model NAME` names, or an error listing the known names.
pub(super) fn model_config(name: &str) -> Result<SamConfig> {
    match SamConfig::named(name) {
        Some(cfg) => Ok(cfg),
        None => bail!(
            "--model {name}: unknown model (expected one of {})",
            SamConfig::NAMES.join(", ")
        ),
    }
}
