//! `sam-cobot params`: trainable parameter counts of a method on a model.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::adapter::trainable_counts;
use crate::checkpoint::load_state_dict;
use crate::nn::weights::Weights;
use crate::peft::PeftFlags;
use crate::sam::config::SamConfig;

#[derive(Args, Debug)]
pub struct ParamsArgs {
    /// tiny, mini, small, vit_b, vit_l or vit_h.
    #[arg(
        long,
        conflicts_with = "checkpoint",
        required_unless_present = "checkpoint"
    )]
    model: Option<String>,
    /// Read the model's configuration from a checkpoint instead.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    peft: PeftFlags,
    /// Print `{"encoder": N, "total": M}`.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ParamsArgs) -> Result<()> {
    let sam = match (&args.model, &args.checkpoint) {
        (Some(name), _) => super::init::model_config(name)?,
        (None, Some(path)) => {
            let dict = load_state_dict(path)?;
            let device = burn::tensor::Device::flex();
            let weights = Weights::new(dict, &device, crate::nn::params::Origin::Base);
            SamConfig::infer(&weights)
                .with_context(|| format!("{} is not a usable SAM checkpoint", path.display()))?
        }
        (None, None) => bail!("give --model or --checkpoint"),
    };
    let peft = args.peft.config().map_err(anyhow::Error::msg)?;
    peft.check_fits(sam.peft_encoder()?.embed_dim)
        .map_err(anyhow::Error::msg)?;
    let counts = trainable_counts(&sam, &peft);
    if args.json {
        println!("{}", serde_json::to_string(&counts)?);
    } else {
        println!("model {} with {}:", sam.variant(), peft.method);
        println!(
            "  trainable parameters added in the image encoder: {}",
            counts.encoder
        );
        println!(
            "  trainable parameters in total:                   {}",
            counts.total
        );
    }
    Ok(())
}
