//! `sam-cobot merge`: a base checkpoint plus an adapter → a stock SAM checkpoint.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use burn::tensor::Device;

use crate::adapter::{MergeError, merge, open_adapter};
use crate::checkpoint::{CheckpointFormat, StateDict, load_state_dict};
use crate::files::guard::{FileRoles, refuse_existing};
use crate::sam::Sam;

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The base SAM checkpoint the adapter was trained on (.pth or .safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The adapter file (.safetensors written by training).
    #[arg(long, required_unless_present = "image_size")]
    adapter: Option<PathBuf>,
    /// Write the checkpoint native at this input size (a multiple of the patch size): the
    /// position embedding and the global attention's relative-position tables resized as SAM
    /// resizes them when it runs at that size, so the outputs there are the same and Meta's
    /// `Sam` built at that size loads it. For a model trained at a size other than its
    /// checkpoint's; without --adapter, the checkpoint alone is converted.
    #[arg(long)]
    image_size: Option<usize>,
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
    let mut roles = FileRoles::new();
    roles.input("--checkpoint", &args.checkpoint);
    if let Some(adapter) = &args.adapter {
        roles.input("--adapter", adapter);
    }
    roles.output("--out", &args.out)?;
    refuse_existing("--out", &args.out, args.force)?;
    let started = Instant::now();
    let device = super::device::parse("cpu")?;
    let (mut dict, what) = match &args.adapter {
        Some(adapter) => merged(&args.checkpoint, adapter, &device)?,
        None => (
            load_state_dict(&args.checkpoint)?,
            format!("converted {}", args.checkpoint.display()),
        ),
    };
    if let Some(size) = args.image_size {
        let sam = Sam::from_state_dict(dict, Some(size), &device)
            .with_context(|| format!("--image-size {size}"))?;
        dict = sam.state_dict_at_input_size()?;
    }
    format.write(&args.out, &dict)?;
    println!(
        "{what} ({} tensors{}) -> {} in {:.1}s",
        dict.len(),
        args.image_size
            .map_or(String::new(), |s| format!(", native at {s} px")),
        args.out.display(),
        started.elapsed().as_secs_f32()
    );
    Ok(())
}

/// `adapter` folded into `checkpoint`, and what was done, for the report.
fn merged(checkpoint: &Path, adapter: &Path, device: &Device) -> Result<(StateDict, String)> {
    let parts = open_adapter(checkpoint, adapter)?;
    let method = parts.info.peft.method;
    if !method.foldable() {
        // Fail before building the model; the message is the library's.
        bail!(MergeError::NotFoldable(method));
    }
    let context = || {
        format!(
            "{} does not fit {}",
            adapter.display(),
            checkpoint.display()
        )
    };
    let sam = Sam::from_state_dict(parts.base, None, device)
        .with_context(context)?
        .attach_peft(parts.info.peft.clone(), parts.peft)
        .with_context(context)?;
    let dict = merge(&sam)?;
    let what = format!(
        "merged {} ({method}) into {} ({})",
        adapter.display(),
        checkpoint.display(),
        sam.config.variant()
    );
    Ok((dict, what))
}
