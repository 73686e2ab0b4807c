//! `sam-cobot merge`: a base checkpoint plus an adapter → a stock SAM checkpoint.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::checkpoint::adapter::open_adapter;
use crate::checkpoint::{write_pth, write_safetensors};
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
}

#[derive(Debug, Clone, Copy)]
enum OutFormat {
    Pth,
    Safetensors,
}

fn out_format(path: &Path) -> Result<OutFormat> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("pth") || e.eq_ignore_ascii_case("pt") => {
            Ok(OutFormat::Pth)
        }
        Some(e) if e.eq_ignore_ascii_case("safetensors") => Ok(OutFormat::Safetensors),
        _ => bail!(
            "--out {}: the output format follows the extension: .pth or .safetensors",
            path.display()
        ),
    }
}

pub fn run(args: MergeArgs) -> Result<()> {
    let format = out_format(&args.out)?;
    let started = Instant::now();
    let parts = open_adapter(&args.checkpoint, &args.adapter)?;
    let method = parts.info.peft.method;
    if method.adapter() {
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
    match format {
        OutFormat::Pth => write_pth(&args.out, &dict)?,
        OutFormat::Safetensors => write_safetensors(&args.out, &dict, &Default::default())?,
    }
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
