//! `sam-cobot train`: fine-tune SAM on a data set. Settings come from an experiment TOML file
//! (`--config`), and any flag given overrides the file.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

use super::data_args::PreprocessingKind;
use crate::data::preprocess::{Preprocessing, SONAR_MEAN, SONAR_STD};
use crate::data::{DataSource, Dataset};
use crate::peft::{Coefficients, HeadKind, LoraInit, Method, PeftConfig, Relation};
use crate::train::loss::DiceKind;
use crate::train::optim::{OptimizerConfig, OptimizerKind};
use crate::train::schedule::Schedule;
use crate::train::trainer::{EpochLog, Progress, TrainSettings, Trainer, check_resumable};

/// Every setting of a run; in a TOML file or as flags (`--epochs 20` = `epochs = 20`).
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Base SAM checkpoint.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Data set folder or COCO annotations file.
    #[arg(long)]
    data: Option<PathBuf>,
    /// COCO image folder.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Training split (image names); default: every image.
    #[arg(long)]
    train_split: Option<PathBuf>,
    /// Validation split, scored after every epoch with the paper's metric.
    #[arg(long)]
    val_split: Option<PathBuf>,
    #[arg(long, value_enum)]
    preprocessing: Option<PreprocessingKind>,
    #[arg(long)]
    mean: Option<f32>,
    #[arg(long)]
    std: Option<f32>,
    #[arg(long)]
    method: Option<Method>,
    #[arg(long)]
    rank: Option<usize>,
    #[arg(long)]
    bottleneck: Option<usize>,
    #[arg(long, value_enum)]
    lora_init: Option<LoraInit>,
    #[arg(long, value_enum)]
    coefficients: Option<Coefficients>,
    #[arg(long, value_enum)]
    relation: Option<Relation>,
    #[arg(long, value_enum)]
    head: Option<HeadKind>,
    /// Adapter dropout while training, in [0, 1) (default 0.1, the authors').
    #[arg(long)]
    adapter_dropout: Option<f64>,
    /// Input size S (a multiple of 16; default: the checkpoint's, 1024 for Meta's).
    #[arg(long)]
    image_size: Option<usize>,
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerKind>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    weight_decay: Option<f64>,
    #[arg(long, value_enum)]
    schedule: Option<Schedule>,
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per step (each with all its boxes).
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// soft (default) or hard: the authors' thresholded Dice, which gives no gradient.
    #[arg(long, value_enum)]
    dice: Option<DiceKind>,
    /// Augment training images (default true).
    #[arg(long)]
    augment: Option<bool>,
    /// Box jitter in pixels at the 1024 scale (default 50).
    #[arg(long)]
    box_jitter: Option<u32>,
    /// Start from this adapter's tensors (same base and method): warm start or transfer.
    #[arg(long)]
    init_adapter: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Experiment file (TOML) with any of the settings below.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: Experiment,
    /// Run folder: checkpoints (best/, last/), logs.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Stop at the first unreadable item instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// Write one JSON line per step (epoch, step, loss, lr, images, seconds) to this file;
    /// appended to with --resume.
    #[arg(long)]
    log_jsonl: Option<PathBuf>,
    /// cpu, vulkan[:N] or cuda[:N] (GPU backends need the matching cargo feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

macro_rules! merge {
    ($flags:expr, $file:expr, $($field:ident),*) => {
        $( if $flags.$field.is_none() { $flags.$field = $file.$field.take(); } )*
    };
}

pub fn run(args: TrainArgs) -> Result<()> {
    let device = super::device::parse(&args.device)?;
    let mut e = args.flags;
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut file: Experiment = toml::from_str(&text)
            .with_context(|| format!("{}: invalid experiment file", path.display()))?;
        merge!(
            e,
            file,
            checkpoint,
            data,
            images,
            train_split,
            val_split,
            preprocessing,
            mean,
            std,
            method,
            rank,
            bottleneck,
            lora_init,
            coefficients,
            relation,
            head,
            adapter_dropout,
            image_size,
            optimizer,
            lr,
            weight_decay,
            schedule,
            epochs,
            batch,
            seed,
            dice,
            augment,
            box_jitter,
            init_adapter
        );
    }
    let Some(checkpoint) = e.checkpoint.clone() else {
        bail!("no --checkpoint (flag or config)")
    };
    let Some(data) = e.data.clone() else {
        bail!("no --data (flag or config)")
    };
    let method = e.method.unwrap_or(Method::LoraCobot);
    let peft = PeftConfig {
        rank: e.rank.unwrap_or(4),
        bottleneck: e.bottleneck.unwrap_or(16),
        lora_init: e.lora_init.unwrap_or(LoraInit::Xavier),
        coefficients: e.coefficients.unwrap_or(Coefficients::Dual),
        relation: e.relation.unwrap_or(Relation::Learnable),
        head: e.head.unwrap_or(HeadKind::Quaternion),
        adapter_dropout: e.adapter_dropout.unwrap_or(0.1),
        ..PeftConfig::new(method)
    };
    peft.validate().map_err(anyhow::Error::msg)?;
    let image_size = e.image_size;
    if let Some(size) = image_size.filter(|&s| s == 0 || !s.is_multiple_of(16)) {
        bail!("--image-size {size}: must be a positive multiple of 16");
    }
    let preprocessing = match e.preprocessing.unwrap_or(PreprocessingKind::Sam) {
        PreprocessingKind::Sam => Preprocessing::Sam,
        PreprocessingKind::Sonar => {
            Preprocessing::sonar(e.mean.unwrap_or(SONAR_MEAN), e.std.unwrap_or(SONAR_STD))
        }
    };
    let settings = TrainSettings {
        checkpoint,
        image_size,
        peft,
        optimizer: OptimizerConfig::new(
            e.optimizer.unwrap_or(OptimizerKind::Adam),
            e.weight_decay.unwrap_or(5e-5),
        ),
        lr: e.lr.unwrap_or(1e-4),
        schedule: e.schedule.unwrap_or(Schedule::WarmupCosine),
        epochs: e.epochs.unwrap_or(20),
        batch: e.batch.unwrap_or(2),
        seed: e.seed.unwrap_or(42),
        dice: e.dice.unwrap_or(DiceKind::Soft),
        augment: e.augment.unwrap_or(true),
        box_jitter: e.box_jitter.unwrap_or(50),
        init_adapter: e.init_adapter.clone(),
        preprocessing,
        strict: args.strict,
    };
    // Before anything is written; `Trainer::run` checks again for library callers.
    settings.validate().map_err(anyhow::Error::msg)?;
    let open = |split: Option<PathBuf>| -> Result<Dataset> {
        Ok(Dataset::open(&DataSource {
            path: data.clone(),
            images: e.images.clone(),
            split,
            ..DataSource::default()
        })?)
    };
    let train = open(e.train_split.clone())?;
    let val = e.val_split.clone().map(|s| open(Some(s))).transpose()?;
    if train.is_empty() {
        bail!("{}: no training images", data.display());
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    if args.resume {
        check_resumable(&args.out)?;
    }
    let stop = super::stop_flag()?;
    let trainer = Trainer {
        settings,
        train: &train,
        val: val.as_ref(),
        out: args.out.clone(),
        stop: Some(stop),
        device,
        step_log: args.log_jsonl.clone(),
    };
    let state = trainer.run(args.resume, &mut Bars::default())?;
    if let (Some(best), Some(epoch)) = (state.best_score, state.best_epoch) {
        println!(
            "best epoch {} (score {best:.2}) -> {}",
            epoch + 1,
            args.out.join("best/adapter.safetensors").display()
        );
    }
    if state.skipped_steps > 0 {
        println!(
            "{} step(s) skipped for a non-finite loss",
            state.skipped_steps
        );
    }
    Ok(())
}

#[derive(Default)]
pub(super) struct Bars {
    bar: Option<ProgressBar>,
    images: usize,
    started: Option<std::time::Instant>,
}

impl Progress for Bars {
    fn epoch_start(&mut self, epoch: usize, steps: usize) {
        let bar = ProgressBar::new(steps as u64).with_style(
            ProgressStyle::with_template("epoch {prefix} {bar:25} {pos}/{len} {msg} eta {eta}")
                .expect("valid template"),
        );
        bar.set_prefix(format!("{}", epoch + 1));
        self.bar = Some(bar);
        self.images = 0;
        self.started = Some(std::time::Instant::now());
    }

    fn step(&mut self, loss: f64, lr: f64, images: usize) {
        self.images += images;
        let rate = self.images as f64
            / self
                .started
                .map_or(1.0, |s| s.elapsed().as_secs_f64().max(1e-9));
        if let Some(bar) = &self.bar {
            bar.set_message(format!("loss {loss:.4} lr {lr:.2e} {rate:.2} img/s"));
            bar.inc(1);
        }
    }

    fn epoch_end(&mut self, log: &EpochLog) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let mut val = log
            .val_dice
            .map_or(String::new(), |d| format!(", val Dice {d:.2}%"));
        if let Some(d) = log.val_point_dice {
            val.push_str(&format!(" (one point {d:.2}%)"));
        }
        println!(
            "epoch {}: loss {:.4}{val} ({:.0}s)",
            log.epoch + 1,
            log.mean_loss,
            log.seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::Experiment;

    /// Every shipped fine-tuning preset is a valid experiment file (`pretrain-*` ones are
    /// pretraining settings, tested with `pretrain`).
    #[test]
    fn presets_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("presets");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("pretrain-")
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let e: Experiment =
                toml::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            assert!(
                e.method.is_some() && e.lr.is_some() && e.epochs.is_some(),
                "{}",
                path.display()
            );
            n += 1;
        }
        assert_eq!(n, 11);
    }
}
