//! `sam-cobot demo`: the whole product on a fresh machine with no download: a tiny SAM with random
//! weights built in code, a generated sonar-like data set, lora+cobot training, evaluation
//! against the box-filled baseline, reports, overlays and the training plot.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::checkpoint::adapter::load_with_adapter;
use crate::checkpoint::write_safetensors;
use crate::data::preprocess::Preprocessing;
use crate::data::synthetic::write_sonar_like;
use crate::data::{DataSource, Dataset};
use crate::eval::report::write_reports;
use crate::eval::{EvalOptions, Scorer, evaluate};
use crate::peft::{Method, PeftConfig};
use crate::sam::config::SamConfig;
use crate::sam::random::random_state_dict;
use crate::train::loss::DiceKind;
use crate::train::optim::{OptimizerConfig, OptimizerKind};
use crate::train::schedule::Schedule;
use crate::train::trainer::{TrainSettings, Trainer};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Folder for everything the demo makes.
    #[arg(long, default_value = "demo")]
    out: PathBuf,
    /// Training epochs.
    #[arg(long, default_value_t = 12, value_parser = super::at_least_one)]
    epochs: usize,
    /// Generated training images (a quarter as many again for validation).
    #[arg(long, default_value_t = 96, value_parser = super::at_least_one)]
    images: usize,
    /// cpu, vulkan[:N] or cuda[:N] (GPU backends need the matching cargo feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let device = super::device::parse(&args.device)?;
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let checkpoint = out.join("tiny_sam_random.safetensors");
    write_safetensors(
        &checkpoint,
        &random_state_dict(&SamConfig::tiny(), 1),
        &Default::default(),
    )?;
    println!("tiny SAM with random weights -> {}", checkpoint.display());
    let (train_dir, val_dir) = (out.join("data/train"), out.join("data/val"));
    write_sonar_like(&train_dir, args.images, 160, 2)?;
    write_sonar_like(&val_dir, (args.images / 4).max(2), 160, 3)?;
    println!(
        "generated sonar-like images -> {}",
        out.join("data").display()
    );

    let open = |dir: &PathBuf| {
        Dataset::open(&DataSource {
            path: dir.clone(),
            ..DataSource::default()
        })
    };
    let (train, val) = (open(&train_dir)?, open(&val_dir)?);
    let settings = TrainSettings {
        checkpoint: checkpoint.clone(),
        image_size: Some(256),
        peft: PeftConfig::new(Method::LoraCobot),
        optimizer: OptimizerConfig::new(OptimizerKind::Adam, 5e-5),
        lr: 2e-3,
        schedule: Schedule::WarmupCosine,
        epochs: args.epochs,
        batch: 4,
        seed: 42,
        dice: DiceKind::Soft,
        augment: true,
        box_jitter: 50,
        init_adapter: None,
        preprocessing: Preprocessing::Sam,
        strict: false,
    };
    let run_dir = out.join("run");
    let trainer = Trainer {
        settings,
        train: &train,
        val: Some(&val),
        out: run_dir.clone(),
        stop: None,
        device: device.clone(),
    };
    trainer.run(false, &mut super::train::Bars::default())?;

    let sam = load_with_adapter(
        &checkpoint,
        &run_dir.join("best/adapter.safetensors"),
        None,
        &device,
    )?;
    let indices: Vec<usize> = (0..val.len()).collect();
    for (name, scorer) in [
        ("report", Scorer::Model(&sam)),
        ("baseline", Scorer::BoxFill),
    ] {
        let dir = out.join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let opts = EvalOptions {
            preprocessing: Preprocessing::Sam,
            image_size: 256,
            overlays: (name == "report").then(|| dir.clone()),
            strict: false,
        };
        let outcome = evaluate(&val, &indices, &scorer, &opts, || {})?;
        write_reports(
            &dir,
            &outcome.summary,
            &format!("demo: {name} on the generated validation images"),
        )?;
        println!(
            "{name}: mean Dice {:.2}%, mean IoU {:.2}% -> {}",
            outcome.summary.mean_dice,
            outcome.summary.mean_iou,
            dir.join("metrics.md").display()
        );
    }
    println!(
        "training plot -> {}",
        run_dir.join("training.png").display()
    );
    println!(
        "This was a SAM with random weights: it shows the workflow, not a model. Minutes of \
         training do not teach a random SAM to segment (it learns the background first); real \
         results start from one of Meta's checkpoints."
    );
    Ok(())
}
