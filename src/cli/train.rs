//! `sam-cobot train`: fine-tune SAM on a data set. Settings come from an experiment TOML file
//! (`--config`), and any flag given overrides the file.

use std::path::{Path, PathBuf};

use super::data_args::{PreprocessFlags, PreprocessSettings};
use super::run_dir_args::RunDirArgs;
use crate::data::{DataSource, Dataset};
use crate::files::atomic::write_atomic;
use crate::files::guard::{FileRoles, canonical};
use crate::peft::{PeftConfig, PeftFlags};
use crate::settings::{as_table, split_table};
use crate::train::loss::DiceKind;
use crate::train::optim::{OptimizerConfig, OptimizerKind};
use crate::train::run_dir::EXPERIMENT_FILE;
use crate::train::run_state::EpochLog;
use crate::train::schedule::Schedule;
use crate::train::trainer::{Progress, TrainSettings, Trainer, check_resumable, check_trainable};
use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

crate::settings! {
    /// A training run's settings beside its preprocessing ([`PreprocessSettings`]) and its
    /// method ([`PeftConfig`]).
    pub struct RunSettings;
    /// The run settings as flags.
    pub struct RunFlags;
    /// Base SAM checkpoint.
    checkpoint: Option<PathBuf> => PathBuf = None,
    /// Data set folder or COCO annotations file.
    data: Option<PathBuf> => PathBuf = None,
    /// COCO image folder.
    images: Option<PathBuf> => PathBuf = None,
    /// Training split (image names); default: every image.
    train_split: Option<PathBuf> => PathBuf = None,
    /// Validation split, scored after every epoch with the paper's metric.
    val_split: Option<PathBuf> => PathBuf = None,
    /// Input size S (a multiple of 16; default: the checkpoint's, 1024 for Meta's).
    image_size: Option<usize> => usize = None,
    /// Optimiser.
    optimizer: OptimizerKind = OptimizerKind::Adam,
    /// Peak learning rate (the COBOT authors' sonar code peaks at 3e-4: its warm-up climbs to
    /// twice its 1.5e-4).
    lr: f64 = 3e-4,
    /// Weight decay (Adam: L2 in the gradient; AdamW: decoupled).
    weight_decay: f64 = 5e-5,
    /// Learning-rate schedule.
    schedule: Schedule = Schedule::WarmupCosine,
    /// Epochs (passes over the training split).
    epochs: usize = 20,
    /// Images per step (each with all its boxes).
    batch: usize = 2,
    /// Seed of the adapter's initial tensors, the order, augmentation and dropout.
    seed: u64 = 42,
    /// soft or hard: the authors' thresholded Dice, which gives no gradient.
    dice: DiceKind = DiceKind::Soft,
    /// Augment training images.
    augment: bool = true,
    /// Box jitter in pixels at the 1024 scale: each box coordinate shifted by 0 to N-1 pixels,
    /// right and down, as the COBOT authors' sonar training does (the paper's presets set 50).
    /// Off by default: the one-sided shift teaches the model to reach up and left of the box
    /// (docs/methods.md#box-prompt-jitter).
    box_jitter: u32 = 0,
    /// Start from this adapter's tensors (same base and method): warm start or transfer.
    init_adapter: Option<PathBuf> => PathBuf = None,
}

/// Every setting of a run as flags (`--epochs 20`), each also a key of an experiment file
/// (`epochs = 20`): the run's own, its preprocessing and its method.
#[derive(Args, Debug, Default, Clone)]
pub struct Experiment {
    #[command(flatten)]
    run: RunFlags,
    #[command(flatten)]
    preprocess: PreprocessFlags,
    #[command(flatten)]
    peft: PeftFlags,
}

impl Experiment {
    /// The settings given, as an experiment file's table.
    fn table(&self) -> toml::Table {
        let mut table = self.run.table();
        table.extend(self.preprocess.table());
        table.extend(self.peft.table());
        table
    }
}

/// Every setting of a run, resolved: what a new run starts from (the defaults), and what
/// `RUN/experiment.toml` records. Its keys are those of [`Experiment`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ExperimentSettings {
    run: RunSettings,
    preprocess: PreprocessSettings,
    peft: PeftConfig,
}

impl ExperimentSettings {
    /// The settings of `table` (an experiment file, or one with the flags put over it), each
    /// key it leaves out at its default; an unknown key or a wrong value names `source`.
    fn from_table(table: &toml::Table, source: &str) -> Result<Self> {
        let (run, rest) = split_table(table, RunSettings::KEYS);
        let (preprocess, rest) = split_table(&rest, PreprocessSettings::KEYS);
        let (peft, rest) = split_table(&rest, PeftConfig::KEYS);
        if let Some(key) = rest.keys().next() {
            bail!("{source}: unknown setting '{key}'");
        }
        fn read<T: serde::de::DeserializeOwned>(table: toml::Table, source: &str) -> Result<T> {
            table
                .try_into()
                .map_err(|e: toml::de::Error| anyhow::anyhow!("{source}: {}", e.message()))
        }
        Ok(Self {
            run: read(run, source)?,
            preprocess: read(preprocess, source)?,
            peft: read(peft, source)?,
        })
    }

    /// The experiment file of these settings, group by group.
    fn to_toml(&self) -> Result<String> {
        Ok([
            toml::to_string(&self.run)?,
            toml::to_string(&self.preprocess)?,
            toml::to_string(&self.peft)?,
        ]
        .concat())
    }

    /// One table of every group, as the experiment file holds it.
    fn table(&self) -> toml::Table {
        let mut table = as_table(&self.run);
        table.extend(as_table(&self.preprocess));
        table.extend(as_table(&self.peft));
        table
    }

    /// The settings a run uses, checked.
    fn resolve(&self) -> Result<Resolved> {
        let run = &self.run;
        let Some(checkpoint) = run.checkpoint.clone() else {
            bail!("no --checkpoint (flag or config)")
        };
        let Some(data) = run.data.clone() else {
            bail!("no --data (flag or config)")
        };
        self.peft.validate().map_err(anyhow::Error::msg)?;
        if let Some(size) = run.image_size.filter(|&s| s == 0 || !s.is_multiple_of(16)) {
            bail!("--image-size {size}: must be a positive multiple of 16");
        }
        let settings = TrainSettings {
            checkpoint,
            image_size: run.image_size,
            peft: self.peft.clone(),
            optimizer: OptimizerConfig::new(run.optimizer, run.weight_decay),
            lr: run.lr,
            schedule: run.schedule,
            epochs: run.epochs,
            batch: run.batch,
            seed: run.seed,
            dice: run.dice,
            augment: run.augment,
            box_jitter: run.box_jitter,
            init_adapter: run.init_adapter.clone(),
            preprocessing: self.preprocess.preprocessing()?,
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
    #[command(flatten)]
    device: super::device::DeviceArg,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let device = args.device.device()?;
    let from_file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let table: toml::Table = toml::from_str(&text)
                .with_context(|| format!("{}: invalid experiment file", path.display()))?;
            // On its own first, so that an unknown or mistyped key names the file.
            ExperimentSettings::from_table(&table, &path.display().to_string())?;
            table
        }
        None => toml::Table::new(),
    };
    let flags = args.flags.table();
    let saved = args.run.out.join(EXPERIMENT_FILE);
    let mut experiment = if args.run.resume {
        check_resumable(&args.run.out)?;
        let text = std::fs::read_to_string(&saved).with_context(|| {
            format!(
                "--resume: cannot read the run's settings {} (runs made before sam-cobot \
                 recorded them cannot be resumed)",
                saved.display()
            )
        })?;
        let recorded: toml::Table = toml::from_str(&text)
            .with_context(|| format!("{}: unreadable settings", saved.display()))?;
        let run = ExperimentSettings::from_table(&recorded, &saved.display().to_string())?;
        let mut asked = from_file;
        asked.extend(flags);
        check_same_run(&run, &asked)?;
        let mut table = run.table();
        table.extend(asked);
        ExperimentSettings::from_table(&table, "the flags")?
    } else {
        let mut table = from_file;
        table.extend(flags);
        ExperimentSettings::from_table(&table, "the settings")?
    };
    if args.cache_embeddings.is_some() && !args.run.resume && experiment.run.augment {
        // A cached embedding is of one image; augmentation makes a new one every epoch.
        eprintln!("warning: --cache-embeddings turns augmentation off (augment = false)");
        experiment.run.augment = false;
    }
    let Resolved { mut settings, data } = experiment.resolve()?;
    settings.strict = args.strict;
    let open = |split: Option<PathBuf>| -> Result<Dataset> {
        let dataset = Dataset::open(&DataSource {
            path: data.clone(),
            images: experiment.run.images.clone(),
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
    let train = open(experiment.run.train_split.clone())?;
    let val = experiment
        .run
        .val_split
        .clone()
        .map(|s| open(Some(s)))
        .transpose()?;
    if train.is_empty() {
        bail!("{}: no training images", data.display());
    }
    let mut roles = FileRoles::new();
    roles.input("--checkpoint", &settings.checkpoint);
    for (flag, path) in [
        ("--config", args.config.as_ref()),
        ("--train-split", experiment.run.train_split.as_ref()),
        ("--val-split", experiment.run.val_split.as_ref()),
        ("--init-adapter", settings.init_adapter.as_ref()),
    ] {
        if let Some(path) = path {
            roles.input(flag, path);
        }
    }
    for source in train
        .sources()
        .into_iter()
        .chain(val.iter().flat_map(Dataset::sources))
    {
        roles.input("--data", &source);
    }
    args.run.outputs(&mut roles)?;
    if let Some(dir) = &args.cache_embeddings {
        roles.output_dir("--cache-embeddings", dir)?;
    }
    check_trainable(&settings, &train)?;
    args.run.claim()?;
    let record = experiment.to_toml()?;
    write_atomic(&saved, |w| Ok(w.write_all(record.as_bytes())?))?;
    let stop = super::stop_flag()?;
    let trainer = Trainer {
        settings,
        train: &train,
        val: val.as_ref(),
        out: args.run.out.clone(),
        stop: Some(stop),
        device,
        step_log: args.run.log_jsonl.clone(),
        embedding_cache: args.cache_embeddings.clone(),
    };
    let result = trainer.run(args.run.resume, &mut Bars::default());
    if result.is_err() {
        args.run.forget_if_unstarted();
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

/// A resumed run keeps its settings: each one given again (flag or file) must be the run's,
/// except a larger `epochs`, which extends it.
fn check_same_run(run: &ExperimentSettings, asked: &toml::Table) -> Result<()> {
    let recorded = run.table();
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

/// A bar per epoch on a terminal; elsewhere (a log file, a pipe) a plain line at most once a
/// minute, so that a long run's log shows it is alive.
#[derive(Default)]
pub(super) struct Bars {
    bar: Option<ProgressBar>,
    images: usize,
    started: Option<std::time::Instant>,
    last_line: Option<std::time::Instant>,
}

/// Time between two plain progress lines when no bar can be drawn.
const PLAIN_LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

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
        self.last_line = self.started;
    }

    fn step(&mut self, loss: f64, lr: f64, images: usize) {
        self.images += images;
        let rate = self.images as f64
            / self
                .started
                .map_or(1.0, |s| s.elapsed().as_secs_f64().max(1e-9));
        if let Some(bar) = &self.bar {
            let message = format!("loss {loss:.4} lr {lr:.2e} {rate:.2} img/s");
            bar.inc(1);
            if bar.is_hidden() {
                if self
                    .last_line
                    .is_none_or(|t| t.elapsed() >= PLAIN_LINE_EVERY)
                {
                    self.last_line = Some(std::time::Instant::now());
                    let (done, len) = (bar.position(), bar.length().unwrap_or(0));
                    eprintln!("epoch {}: step {done}/{len}, {message}", bar.prefix());
                }
            } else {
                bar.set_message(message);
            }
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
    use super::{Experiment, ExperimentSettings};

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
        "#;
        let from_file: toml::Table = toml::from_str(file).unwrap();
        let mut every_key: Vec<&str> = [
            super::RunSettings::KEYS,
            super::PreprocessSettings::KEYS,
            crate::peft::PeftConfig::KEYS,
        ]
        .concat();
        every_key.sort();
        assert_eq!(
            from_file.keys().collect::<Vec<_>>(),
            every_key.iter().collect::<Vec<_>>(),
            "the test file names every setting"
        );
        let defaults = ExperimentSettings::default().table();
        for (key, value) in &from_file {
            assert_ne!(defaults.get(key), Some(value), "{key} is its default");
        }
        let resolved = ExperimentSettings::from_table(&from_file, "file").unwrap();
        assert_eq!(resolved.table(), from_file);

        let mut flags = Experiment::default();
        flags.run.lr = Some(0.5);
        flags.run.epochs = Some(2);
        flags.peft.rank = Some(12);
        flags.preprocess.mean = Some(0.125);
        let mut table = from_file.clone();
        table.extend(flags.table());
        let resolved = ExperimentSettings::from_table(&table, "flags").unwrap();
        assert_eq!(
            (resolved.run.lr, resolved.run.epochs, resolved.run.batch),
            (0.5, 2, 3)
        );
        assert_eq!((resolved.peft.rank, resolved.peft.bottleneck), (12, 32));
        assert_eq!(
            (resolved.preprocess.mean, resolved.preprocess.std),
            (0.125, 0.5)
        );

        let unknown: toml::Table = toml::from_str("epochs = 2\nlearning_rate = 1").unwrap();
        let err = ExperimentSettings::from_table(&unknown, "e.toml").unwrap_err();
        assert_eq!(err.to_string(), "e.toml: unknown setting 'learning_rate'");
        let mistyped: toml::Table = toml::from_str("rank = \"four\"").unwrap();
        let err = ExperimentSettings::from_table(&mistyped, "e.toml").unwrap_err();
        assert!(err.to_string().starts_with("e.toml: "), "{err}");
    }

    /// A resumed run given one of its own settings again, as a flag or in a file, is the same
    /// run, f32 settings included (`--mean 0.1701` is not its f64 widening).
    #[test]
    fn a_setting_given_again_on_resume_is_the_runs_own() {
        let file: toml::Table =
            toml::from_str("preprocessing = \"sonar\"\nmean = 0.1701\nstd = 0.1848").unwrap();
        let run = ExperimentSettings::from_table(&file, "file").unwrap();
        let mut flags = Experiment::default();
        flags.preprocess.mean = Some(0.1701);
        flags.preprocess.std = Some(0.1848);
        super::check_same_run(&run, &flags.table()).unwrap();
        super::check_same_run(&run, &file).unwrap();
        flags.preprocess.mean = Some(0.17);
        assert!(super::check_same_run(&run, &flags.table()).is_err());
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
            let table: toml::Table = toml::from_str(&text).unwrap();
            let name = path.display().to_string();
            ExperimentSettings::from_table(&table, &name).unwrap_or_else(|err| panic!("{err}"));
            for key in ["method", "lr", "epochs"] {
                assert!(table.contains_key(key), "{name} sets no {key}");
            }
            n += 1;
        }
        assert_eq!(n, 10);
    }
}
