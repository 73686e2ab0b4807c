//! `sam-cobot pretrain`: SAM from random weights on generated scenes (see
//! [`crate::train::pretrain`]). Settings come from a TOML file (`--config`, e.g.
//! `presets/pretrain-base.toml`) with the flags' names, and any flag given overrides the file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use crate::train::pretrain::{MODEL_FILE, PretrainSettings, Pretrainer};
use crate::train::run_dir::claim_run_dir;

#[derive(Args, Debug)]
#[command(args_override_self = true)]
pub struct PretrainArgs {
    /// Settings file (TOML, with the names of the flags below); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run folder: best/ and last/ (model.safetensors, optimiser moments, run state and
    /// settings), training.png and the validation scenes val/.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint, with its saved settings (only a
    /// larger --steps may be given).
    #[arg(long)]
    resume: bool,
    /// Start over in an --out that is not empty (the files a run writes are removed, others
    /// kept).
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// cpu, vulkan[:N] or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    settings: SettingFlags,
}

/// The settings as flags: each one given replaces the file's (or the default) value.
#[derive(Args, Debug, Default, Serialize)]
struct SettingFlags {
    /// Architecture from random weights: tiny, mini, small, vit_b, vit_l, vit_h.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    /// Start from this checkpoint's weights instead of random ones.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    init: Option<PathBuf>,
    /// Input size S of the scenes and the model, a multiple of 16.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    image_size: Option<usize>,
    /// Optimiser steps in all.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<usize>,
    /// Steps between validations and checkpoints.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch_steps: Option<usize>,
    /// Linear warm-up steps.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    warmup_steps: Option<usize>,
    /// Peak learning rate of AdamW.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    lr: Option<f64>,
    /// Learning rate the cosine decay ends at.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    final_lr: Option<f64>,
    /// AdamW's decoupled weight decay.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    weight_decay: Option<f64>,
    /// Scenes per step.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<usize>,
    /// Objects per scene, at most.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_objects: Option<usize>,
    /// Objects prompted per scene and prompt kind, at most.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_prompts: Option<usize>,
    /// Losses at S / this: 1, 2 or 4 (the decoder's own resolution).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    loss_downscale: Option<usize>,
    /// Box noise: standard deviation per coordinate as a fraction of the box side.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    box_noise: Option<f64>,
    /// Train single-point prompts, multimask.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    point_prompts: Option<bool>,
    /// Train corrective points from the error region.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    corrective_points: Option<bool>,
    /// Seed of the random weights, the scenes and the prompts.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    /// Validation scenes.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    val_scenes: Option<usize>,
    /// First seed of the validation scenes, below 2^63.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    val_seed: Option<u64>,
}

pub fn run(args: PretrainArgs) -> Result<()> {
    let saved = args.out.join("last/settings.json");
    let settings = if args.resume {
        let text = std::fs::read_to_string(&saved)
            .with_context(|| format!("--resume: no run to continue in {}", args.out.display()))?;
        let run: PretrainSettings = serde_json::from_str(&text)
            .with_context(|| format!("{}: unreadable settings", saved.display()))?;
        let asked = settings(&args, toml::Table::try_from(&run)?)?;
        check_same_run(&run, &asked)?;
        asked
    } else {
        let base = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("{}", path.display()))?
            }
            None => toml::Table::new(),
        };
        settings(&args, base)?
    };
    settings.validate().map_err(anyhow::Error::msg)?;
    let device = super::device::parse(&args.device)?;
    claim_run_dir(&args.out, args.resume, args.force)?;
    let pretrainer = Pretrainer {
        settings,
        out: args.out.clone(),
        stop: Some(super::stop_flag()?),
        device,
    };
    let state = pretrainer.run(args.resume, &mut super::train::Bars::default())?;
    if let (Some(best), Some(epoch)) = (state.best_score, state.best_epoch) {
        println!(
            "best validation (box Dice {best:.2}%) after {} steps -> {}",
            (epoch + 1) * pretrainer.settings.epoch_steps,
            args.out.join("best").join(MODEL_FILE).display()
        );
    }
    println!(
        "last -> {}",
        args.out.join("last").join(MODEL_FILE).display()
    );
    Ok(())
}

/// `base` with every flag given put over it.
fn settings(args: &PretrainArgs, mut base: toml::Table) -> Result<PretrainSettings> {
    base.extend(toml::Table::try_from(&args.settings)?);
    let where_ = args
        .config
        .as_deref()
        .map_or("the settings".into(), |p: &Path| p.display().to_string());
    base.try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{where_}: {}", e.message()))
}

/// A resumed run keeps its settings: only a larger step count may extend it.
fn check_same_run(run: &PretrainSettings, asked: &PretrainSettings) -> Result<()> {
    if asked.steps < run.steps {
        bail!(
            "--resume: --steps {} is fewer than the run's {}",
            asked.steps,
            run.steps
        );
    }
    let (a, b) = (
        toml::Table::try_from(PretrainSettings {
            steps: 0,
            ..run.clone()
        })?,
        toml::Table::try_from(PretrainSettings {
            steps: 0,
            ..asked.clone()
        })?,
    );
    for (key, value) in &a {
        if b.get(key) != Some(value) {
            bail!(
                "--resume: the run was made with {key} = {value}, not {}",
                b.get(key).map_or("nothing".into(), ToString::to_string)
            );
        }
    }
    Ok(())
}
