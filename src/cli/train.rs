//! `sam-cobot train`: fine-tune SAM on a data set. Settings come from an experiment TOML file
//! (`--config`), and any flag given overrides the file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::data_args::PreprocessingKind;
use super::run_dir_args::RunDirArgs;
use crate::data::preprocess::{SONAR_MEAN, SONAR_STD};
use crate::data::{DataSource, Dataset};
use crate::files::atomic::write_atomic;
use crate::files::guard::{FileRoles, canonical};
use crate::peft::{Coefficients, HeadKind, LoraInit, Method, PeftConfig, Relation};
use crate::train::loss::DiceKind;
use crate::train::optim::{OptimizerConfig, OptimizerKind};
use crate::train::run_state::EpochLog;
use crate::train::schedule::Schedule;
use crate::train::trainer::{Progress, TrainSettings, Trainer, check_resumable, check_trainable};

/// Every setting of a run; in a TOML file or as flags (`--epochs 20` = `epochs = 20`). A run
/// records them, resolved, in `--out`/experiment.toml: `--resume` continues with those, and the
/// file reruns the experiment (`--config run/experiment.toml`).
#[derive(Args, Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Base SAM checkpoint.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: Option<PathBuf>,
    /// Data set folder or COCO annotations file.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<PathBuf>,
    /// COCO image folder.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    images: Option<PathBuf>,
    /// Training split (image names); default: every image.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    train_split: Option<PathBuf>,
    /// Validation split, scored after every epoch with the paper's metric.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    val_split: Option<PathBuf>,
    /// Image preprocessing: SAM's, or the paper's sonar one (centred padding, --mean/--std).
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    preprocessing: Option<PreprocessingKind>,
    /// Data-set mean for --preprocessing sonar (0-1 scale; `sam-cobot stats` computes it).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    mean: Option<f32>,
    /// Data-set standard deviation for --preprocessing sonar.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    std: Option<f32>,
    /// Fine-tuning method: lightweight (the mask decoder), full, lora, adapter, lora+cobot or
    /// adapter+cobot (freeze trains nothing: score the base with `eval`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<Method>,
    /// LoRA rank (lora, lora+cobot).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    rank: Option<usize>,
    /// AdaptFormer bottleneck width (adapter, adapter+cobot).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bottleneck: Option<usize>,
    /// How LoRA's matrices start.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    lora_init: Option<LoraInit>,
    /// COBOT's coefficient sets (paper Table 1).
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    coefficients: Option<Coefficients>,
    /// COBOT's relation matrix across blocks (paper Table 2).
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    relation: Option<Relation>,
    /// COBOT's map after the coefficients (paper Table 3).
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    head: Option<HeadKind>,
    /// Adapter dropout while training, in [0, 1).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    adapter_dropout: Option<f64>,
    /// Input size S (a multiple of 16; default: the checkpoint's, 1024 for Meta's).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    image_size: Option<usize>,
    /// Optimiser.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    optimizer: Option<OptimizerKind>,
    /// Peak learning rate.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    lr: Option<f64>,
    /// Weight decay (Adam: L2 in the gradient; AdamW: decoupled).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    weight_decay: Option<f64>,
    /// Learning-rate schedule.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<Schedule>,
    /// Epochs (passes over the training split).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    epochs: Option<usize>,
    /// Images per step (each with all its boxes).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<usize>,
    /// Seed of the adapter's initial tensors, the order, augmentation and dropout.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    /// soft or hard: the authors' thresholded Dice, which gives no gradient.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    dice: Option<DiceKind>,
    /// Augment training images.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    augment: Option<bool>,
    /// Box jitter in pixels at the 1024 scale: each box coordinate shifted by 0 to N-1 pixels,
    /// right and down, as the COBOT authors' sonar training does (the paper's presets set 50).
    /// Off by default: the one-sided shift teaches the model to reach up and left of the box
    /// (docs/methods.md#box-prompt-jitter).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    box_jitter: Option<u32>,
    /// Start from this adapter's tensors (same base and method): warm start or transfer.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    init_adapter: Option<PathBuf>,
}

impl Experiment {
    /// The one place the defaults are written: every setting that has one.
    /// The method's come from [`PeftConfig::default`], shared with every command that builds one.
    pub fn defaults() -> Self {
        let peft = PeftConfig::default();
        Self {
            preprocessing: Some(PreprocessingKind::Sam),
            mean: Some(SONAR_MEAN),
            std: Some(SONAR_STD),
            method: Some(peft.method),
            rank: Some(peft.rank),
            bottleneck: Some(peft.bottleneck),
            lora_init: Some(peft.lora_init),
            coefficients: Some(peft.coefficients),
            relation: Some(peft.relation),
            head: Some(peft.head),
            adapter_dropout: Some(peft.adapter_dropout),
            optimizer: Some(OptimizerKind::Adam),
            lr: Some(1e-4),
            weight_decay: Some(5e-5),
            schedule: Some(Schedule::WarmupCosine),
            epochs: Some(20),
            batch: Some(2),
            seed: Some(42),
            dice: Some(DiceKind::Soft),
            augment: Some(true),
            box_jitter: Some(0),
            ..Self::default()
        }
    }

    fn table(&self) -> Result<toml::Table> {
        Ok(toml::Table::try_from(self)?)
    }

    /// `self` with every setting of `over` put over it.
    fn overlaid(&self, over: &toml::Table, source: &str) -> Result<Self> {
        let mut table = self.table()?;
        table.extend(over.clone());
        table
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{source}: {}", e.message()))
    }

    /// The settings a run uses: what `self` leaves out taken from the defaults.
    fn resolve(&self) -> Result<Resolved> {
        let e = self;
        let Some(checkpoint) = e.checkpoint.clone() else {
            bail!("no --checkpoint (flag or config)")
        };
        let Some(data) = e.data.clone() else {
            bail!("no --data (flag or config)")
        };
        let want = |name: &str| anyhow::anyhow!("no {name} (the defaults give one)");
        let method = e.method.ok_or_else(|| want("--method"))?;
        let peft = PeftConfig {
            rank: e.rank.ok_or_else(|| want("--rank"))?,
            bottleneck: e.bottleneck.ok_or_else(|| want("--bottleneck"))?,
            lora_init: e.lora_init.ok_or_else(|| want("--lora-init"))?,
            coefficients: e.coefficients.ok_or_else(|| want("--coefficients"))?,
            relation: e.relation.ok_or_else(|| want("--relation"))?,
            head: e.head.ok_or_else(|| want("--head"))?,
            adapter_dropout: e.adapter_dropout.ok_or_else(|| want("--adapter-dropout"))?,
            ..PeftConfig::new(method)
        };
        peft.validate().map_err(anyhow::Error::msg)?;
        if let Some(size) = e.image_size.filter(|&s| s == 0 || !s.is_multiple_of(16)) {
            bail!("--image-size {size}: must be a positive multiple of 16");
        }
        let preprocessing = e
            .preprocessing
            .ok_or_else(|| want("--preprocessing"))?
            .with_statistics(
                e.mean.ok_or_else(|| want("--mean"))?,
                e.std.ok_or_else(|| want("--std"))?,
            )?;
        let settings = TrainSettings {
            checkpoint,
            image_size: e.image_size,
            peft,
            optimizer: OptimizerConfig::new(
                e.optimizer.ok_or_else(|| want("--optimizer"))?,
                e.weight_decay.ok_or_else(|| want("--weight-decay"))?,
            ),
            lr: e.lr.ok_or_else(|| want("--lr"))?,
            schedule: e.schedule.ok_or_else(|| want("--schedule"))?,
            epochs: e.epochs.ok_or_else(|| want("--epochs"))?,
            batch: e.batch.ok_or_else(|| want("--batch"))?,
            seed: e.seed.ok_or_else(|| want("--seed"))?,
            dice: e.dice.ok_or_else(|| want("--dice"))?,
            augment: e.augment.ok_or_else(|| want("--augment"))?,
            box_jitter: e.box_jitter.ok_or_else(|| want("--box-jitter"))?,
            init_adapter: e.init_adapter.clone(),
            preprocessing,
            strict: false,
        };
        // Before anything is written; `Trainer::run` checks again for library callers.
        settings.validate().map_err(anyhow::Error::msg)?;
        Ok(Resolved { settings, data })
    }
}

/// A run's settings, resolved, and its data set.
struct Resolved {
    settings: TrainSettings,
    data: PathBuf,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Experiment file (TOML) with any of the settings below.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: Experiment,
    #[command(flatten)]
    run: RunDirArgs,
    /// Stop at the first unreadable item instead of skipping it.
    #[arg(long)]
    strict: bool,
    /// Cache the training images' embeddings in this folder and train the prompt encoder and
    /// mask decoder on them: for methods whose image encoder is frozen (lightweight); turns
    /// augmentation off. Entries are keyed by the checkpoint's tensors, the input size, the
    /// preprocessing and the image, so they survive restarts and are never used stale.
    #[arg(long)]
    cache_embeddings: Option<PathBuf>,
    /// Write one JSON line per step (epoch, step, loss, lr, images, seconds) to this file;
    /// appended to with --resume.
    #[arg(long)]
    log_jsonl: Option<PathBuf>,
    #[command(flatten)]
    device: super::device::DeviceArg,
}

/// The run's resolved settings, at the top of its folder.
const EXPERIMENT_FILE: &str = "experiment.toml";

pub fn run(args: TrainArgs) -> Result<()> {
    let device = args.device.device()?;
    let from_file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            // Through `Experiment` first, so an unknown or mistyped key names the file.
            let file: Experiment = toml::from_str(&text)
                .with_context(|| format!("{}: invalid experiment file", path.display()))?;
            file.table()?
        }
        None => toml::Table::new(),
    };
    let flags = args.flags.table()?;
    let saved = args.run.out.join(EXPERIMENT_FILE);
    let experiment = if args.run.resume {
        check_resumable(&args.run.out)?;
        let text = std::fs::read_to_string(&saved).with_context(|| {
            format!(
                "--resume: cannot read the run's settings {} (runs made before sam-cobot \
                 recorded them cannot be resumed)",
                saved.display()
            )
        })?;
        let run: Experiment = toml::from_str(&text)
            .with_context(|| format!("{}: unreadable settings", saved.display()))?;
        let mut asked = from_file;
        asked.extend(flags);
        check_same_run(&run, &asked)?;
        run.overlaid(&asked, "the flags")?
    } else {
        let source = args
            .config
            .as_ref()
            .map_or("the settings".into(), |p| p.display().to_string());
        Experiment::defaults()
            .overlaid(&from_file, &source)?
            .overlaid(&flags, "the flags")?
    };
    let mut experiment = experiment;
    if args.cache_embeddings.is_some() && !args.run.resume && experiment.augment != Some(false) {
        // A cached embedding is of one image; augmentation makes a new one every epoch.
        eprintln!("warning: --cache-embeddings turns augmentation off (augment = false)");
        experiment.augment = Some(false);
    }
    let Resolved { mut settings, data } = experiment.resolve()?;
    settings.strict = args.strict;
    let open = |split: Option<PathBuf>| -> Result<Dataset> {
        let dataset = Dataset::open(&DataSource {
            path: data.clone(),
            images: experiment.images.clone(),
            split,
            ..DataSource::default()
        })?;
        if let Some(line) = dataset.split_report() {
            eprintln!("{line}");
        }
        for warning in dataset.warnings() {
            eprintln!("{warning}");
        }
        Ok(dataset)
    };
    let train = open(experiment.train_split.clone())?;
    let val = experiment
        .val_split
        .clone()
        .map(|s| open(Some(s)))
        .transpose()?;
    if train.is_empty() {
        bail!("{}: no training images", data.display());
    }
    let mut roles = FileRoles::new();
    roles.input("--checkpoint", &settings.checkpoint);
    for source in train
        .sources()
        .into_iter()
        .chain(val.iter().flat_map(Dataset::sources))
    {
        roles.input("--data", &source);
    }
    roles.output_dir("--out", &args.run.out)?;
    if let Some(dir) = &args.cache_embeddings {
        roles.output_dir("--cache-embeddings", dir)?;
    }
    check_trainable(&settings, &train)?;
    args.run.claim()?;
    let record = toml::to_string(&experiment)?;
    write_atomic(&saved, |w| Ok(w.write_all(record.as_bytes())?))?;
    let stop = super::stop_flag()?;
    let trainer = Trainer {
        settings,
        train: &train,
        val: val.as_ref(),
        out: args.run.out.clone(),
        stop: Some(stop),
        device,
        step_log: args.log_jsonl.clone(),
        embedding_cache: args.cache_embeddings.clone(),
    };
    let result = trainer.run(args.run.resume, &mut Bars::default());
    if result.is_err() && !args.run.resume {
        forget_unstarted_run(&args.run.out);
    }
    let state = result?;
    if let (Some(best), Some(epoch)) = (state.best_score, state.best_epoch) {
        println!(
            "best epoch {} (score {best:.2}) -> {}",
            epoch + 1,
            args.run.out.join("best/adapter.safetensors").display()
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

/// A run that failed before its first checkpoint leaves nothing behind, so the same command
/// can be given again.
fn forget_unstarted_run(out: &Path) {
    let saved = ["last", ".last.old", "interrupted"];
    if saved.iter().all(|d| !out.join(d).exists()) {
        let _ = std::fs::remove_file(out.join(EXPERIMENT_FILE));
        let _ = std::fs::remove_dir(out); // only if empty
    }
}

/// A resumed run keeps its settings: each one given again (flag or file) must be the run's,
/// except a larger `epochs`, which extends it.
fn check_same_run(run: &Experiment, asked: &toml::Table) -> Result<()> {
    let recorded = run.table()?;
    for (key, value) in asked {
        let same = match (key.as_str(), recorded.get(key)) {
            ("epochs", Some(old)) => value.as_integer() >= old.as_integer(),
            (_, Some(old)) if is_path(key) => {
                let path = |v: &toml::Value| v.as_str().map(|s| canonical(Path::new(s)));
                path(old) == path(value)
            }
            (_, Some(old)) => old == value,
            (_, None) => false,
        };
        if !same {
            let flag = key.replace('_', "-");
            let was = recorded
                .get(key)
                .map_or("nothing (the default)".into(), ToString::to_string);
            bail!(
                "--resume: the run was made with --{flag} {was}, not {value}{}",
                if key == "epochs" {
                    " (a resumed run may only get more epochs)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

/// The settings that name files (compared as the files they name).
fn is_path(key: &str) -> bool {
    matches!(
        key,
        "checkpoint" | "data" | "images" | "train_split" | "val_split" | "init_adapter"
    )
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

    /// Every setting can come from the file, and a flag given overrides the file's value: a file
    /// that sets every key to a value other than the default resolves to exactly that file.
    #[test]
    fn every_setting_comes_from_the_file_and_a_flag_overrides_it() {
        let file = r#"
            checkpoint = "base.pth"
            data = "set"
            images = "set/images"
            train_split = "train.txt"
            val_split = "val.txt"
            preprocessing = "sonar"
            mean = 0.25
            std = 0.5
            method = "adapter+cobot"
            rank = 8
            bottleneck = 32
            lora_init = "zero-b"
            coefficients = "block"
            relation = "fixed"
            head = "linear"
            adapter_dropout = 0.2
            image_size = 512
            optimizer = "adamw"
            lr = 0.003
            weight_decay = 0.01
            schedule = "constant"
            epochs = 7
            batch = 3
            seed = 9
            dice = "hard"
            augment = false
            box_jitter = 10
            init_adapter = "start.safetensors"
        "#;
        let from_file: toml::Table = toml::from_str(file).unwrap();
        let defaults = Experiment::defaults().table().unwrap();
        let all_keys = toml::Table::try_from(Experiment {
            checkpoint: Some("c".into()),
            data: Some("d".into()),
            images: Some("i".into()),
            train_split: Some("t".into()),
            val_split: Some("v".into()),
            image_size: Some(16),
            init_adapter: Some("a".into()),
            ..Experiment::defaults()
        })
        .unwrap();
        assert_eq!(
            from_file.keys().collect::<Vec<_>>(),
            all_keys.keys().collect::<Vec<_>>(),
            "the test file names every setting"
        );
        for (key, value) in &from_file {
            assert_ne!(defaults.get(key), Some(value), "{key} is its default");
        }
        let resolved = Experiment::defaults().overlaid(&from_file, "file").unwrap();
        assert_eq!(resolved.table().unwrap(), from_file);
        let flags = Experiment {
            lr: Some(0.5),
            epochs: Some(2),
            ..Experiment::default()
        };
        let resolved = resolved.overlaid(&flags.table().unwrap(), "flags").unwrap();
        assert_eq!(
            (resolved.lr, resolved.epochs, resolved.batch),
            (Some(0.5), Some(2), Some(3))
        );
    }

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
        assert_eq!(n, 10);
    }
}
