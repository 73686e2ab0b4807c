//! `sam-cobot merge`: a base checkpoint plus an adapter → a stock SAM checkpoint.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::checkpoint::CheckpointFormat;
use crate::checkpoint::adapter::open_adapter;
use crate::output::guard::{FileRoles, refuse_existing};
use crate::peft::merge::merge;
use crate::sam::Sam;

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The base SAM checkpoint the adapter was trained on (.pth or .safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The adapter file (.safetensors written by training).
    #[arg(long)]
    adapter: PathBuf,
    /// Output checkpoint with official SAM keys only: `.pth` (loadable by Meta's
    /// `sam_model_registry`) or `.safetensors`.
    #[arg(long)]
    out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
}

pub fn run(args: MergeArgs) -> Result<()> {
    let format = CheckpointFormat::of_output("--out", &args.out)?;
    FileRoles::new()
        .input("--checkpoint", &args.checkpoint)
        .input("--adapter", &args.adapter)
        .output("--out", &args.out)?;
    refuse_existing("--out", &args.out, args.force)?;
    let started = Instant::now();
    let parts = open_adapter(&args.checkpoint, &args.adapter)?;
    let method = parts.info.peft.method;
    if !method.foldable() {
        // Fail before building the model; the message is the library's.
        bail!(crate::peft::merge::MergeError::NotFoldable(method));
    }
    let device = super::device::parse("cpu")?;
    let context = || {
        format!(
            "{} does not fit {}",
            args.adapter.display(),
            args.checkpoint.display()
        )
    };
    let sam = Sam::from_state_dict(parts.base, None, &device)
        .with_context(context)?
        .attach_peft(parts.info.peft.clone(), parts.peft)
        .with_context(context)?;
    let dict = merge(&sam)?;
    format.write(&args.out, &dict)?;
    println!(
        "merged {} ({method}) into {} ({}, {} tensors) -> {} in {:.1}s",
        args.adapter.display(),
        args.checkpoint.display(),
        sam.config.variant(),
        dict.len(),
        args.out.display(),
        started.elapsed().as_secs_f32()
    );
    Ok(())
}
