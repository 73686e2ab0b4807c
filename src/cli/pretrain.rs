//! `sam-cobot pretrain`: SAM from random weights on generated scenes (see
//! [`crate::train::pretrain`]). Settings come from a TOML file (`--config`, e.g.
//! `presets/pretrain-base.toml`) with the flags' names, and any flag given overrides the file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::train::pretrain::{MODEL_FILE, PretrainFlags, PretrainSettings, Pretrainer};
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
    /// auto (a GPU this build can drive, else the CPU), cpu, vulkan[:N|:cpu] or cuda[:N].
    #[arg(long, default_value = "auto")]
    device: String,
    #[command(flatten)]
    settings: PretrainFlags,
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
