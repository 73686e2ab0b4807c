//! `sam-cobot pretrain`: SAM from random weights on generated scenes (see
//! [`crate::train::pretrain`]). Settings come from a TOML file (`--config`, e.g.
//! `presets/pretrain-base.toml`) with the flags' names, and any flag given overrides the file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use burn::tensor::Device;

use super::run_dir_args::RunDirArgs;
use crate::checkpoint::load_state_dict;
use crate::files::guard::FileRoles;
use crate::sam::Sam;
use crate::train::pretrain::{MODEL_FILE, PretrainFlags, PretrainSettings, Pretrainer};

#[derive(Args, Debug)]
#[command(args_override_self = true)]
pub struct PretrainArgs {
    /// Settings file (TOML, with the names of the flags below); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    run: RunDirArgs,
    #[command(flatten)]
    device: super::device::DeviceArg,
    #[command(flatten)]
    settings: PretrainFlags,
}

pub fn run(args: PretrainArgs) -> Result<()> {
    let saved = args.run.out.join("last/settings.json");
    let settings = if args.run.resume {
        let text = std::fs::read_to_string(&saved).with_context(|| {
            format!("--resume: no run to continue in {}", args.run.out.display())
        })?;
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
    let device = args.device.device()?;
    let mut roles = FileRoles::new();
    if let Some(config) = &args.config {
        roles.input("--config", config);
    }
    if let Some(init) = settings.init.as_ref().filter(|_| !args.run.resume) {
        roles.input("--init", init);
    }
    args.run.outputs(&mut roles)?;
    args.run.claim()?;
    let pretrainer = Pretrainer {
        settings,
        out: args.run.out.clone(),
        stop: Some(super::stop_flag()?),
        device,
        step_log: args.run.log_jsonl.clone(),
    };
    let result = pretrainer.run(args.run.resume, &mut super::train::Bars::default());
    if result.is_err() {
        args.run.forget_if_unstarted();
    }
    let state = result?;
    if let (Some(best), Some(epoch)) = (state.best_score, state.best_epoch) {
        println!(
            "best validation (box Dice {best:.2}%) after {} steps -> {}",
            (epoch + 1) * pretrainer.settings.epoch_steps,
            args.run.out.join("best").join(MODEL_FILE).display()
        );
    }
    let last = args.run.out.join("last").join(MODEL_FILE);
    println!("last -> {}", last.display());
    // A run at another size than its start's checkpoint keeps that checkpoint's grid (the
    // forward pass resizes it), so its files name the start's size as native.
    let size = pretrainer.settings.image_size;
    let native = Sam::from_state_dict(load_state_dict(&last)?, None, &Device::flex())?.image_size;
    if native != size {
        println!(
            "note: the checkpoints keep the {native} px grid they started from and run at \
             {native} px unless told --image-size {size}; `sam-cobot merge --checkpoint {} \
             --image-size {size} --out FILE` writes one native at {size} px",
            last.display()
        );
    }
    Ok(())
}

/// `base` with every flag given put over it.
fn settings(args: &PretrainArgs, mut base: toml::Table) -> Result<PretrainSettings> {
    base.extend(args.settings.table());
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
