//! `sam-cobot demo`: the paper's story in small, on a fresh machine with no download. The shipped
//! base SAM (pretrained here on generated scenes, `models/`) is adapted to a generated sonar-like
//! domain it never saw (speckle, shadows, shapes that are not boxes) with `freeze` (zero-shot),
//! `lightweight`, `lora` and `lora+cobot` on the same budget, and each is scored on held-out
//! images next to the box-filled baseline: one table, `summary.json`, reports, overlays and the
//! training plots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use crate::adapter::load_with_adapter;
use crate::checkpoint::load_state_dict;
use crate::data::preprocess::Preprocessing;
use crate::data::synthetic::write_sonar_like;
use crate::data::{DataSource, Dataset};
use crate::eval::report::write_reports;
use crate::eval::{EvalOptions, Scorer, evaluate};
use crate::files::atomic::write_atomic;
use crate::files::guard::{FileRoles, claim_output_dir};
use crate::peft::{Method, PeftConfig};
use crate::sam::Sam;
use crate::train::loss::DiceKind;
use crate::train::optim::{OptimizerConfig, OptimizerKind};
use crate::train::schedule::Schedule;
use crate::train::trainer::{TrainSettings, Trainer};

/// The shipped base model, in this checkout.
pub const SHIPPED_BASE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/sam-cobot-base-512.safetensors"
);

/// The methods the demo compares, in table order (`freeze` is the base model, zero-shot).
const METHODS: [Method; 4] = [
    Method::FREEZE,
    Method::LIGHTWEIGHT,
    Method::LORA,
    Method::LORA_COBOT,
];

/// What the demo writes at the top of its --out.
const DEMO_FILES: [&str; 4] = ["data", "report", "runs", "summary.json"];

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Folder for everything the demo makes.
    #[arg(long, default_value = "demo")]
    out: PathBuf,
    /// Write into an --out that is not empty, replacing an earlier demo's data, report, runs
    /// and summary.json (other files are kept).
    #[arg(long)]
    force: bool,
    /// The base SAM checkpoint to adapt [default: the shipped models/sam-cobot-base-512.safetensors].
    #[arg(long)]
    base: Option<PathBuf>,
    /// Training epochs of each method.
    #[arg(long, default_value_t = 6, value_parser = super::at_least_one)]
    epochs: usize,
    /// Generated training images (a quarter as many again for validation and for the test).
    #[arg(long, default_value_t = 48, value_parser = super::at_least_one)]
    images: usize,
    /// Peak learning rate of every method.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    #[command(flatten)]
    device: super::device::DeviceArg,
}

/// One row of `summary.json` (percentages).
#[derive(Debug, Serialize)]
struct Score {
    dice: f64,
    iou: f64,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let device = args.device.device()?;
    let base = args.base.clone().unwrap_or_else(|| SHIPPED_BASE.into());
    let base_model = load_base(&base, &device)?;
    let image_size = base_model.image_size;
    // Every run's settings are checked before anything is written (`freeze` is scored, not
    // trained).
    for method in METHODS.into_iter().filter(|&m| m != Method::FREEZE) {
        settings(&base, method, image_size, &args)
            .validate()
            .map_err(anyhow::Error::msg)?;
    }
    let out = &args.out;
    let mut roles = FileRoles::new();
    roles.input("--base", &base);
    for name in DEMO_FILES {
        roles.replaced("--out", &out.join(name))?;
    }
    claim_output_dir("--out", out, args.force, &DEMO_FILES)?;
    let data = out.join("data");
    let held_out = (args.images / 4).max(2);
    for (split, n, seed) in [
        ("train", args.images, 2),
        ("val", held_out, 3),
        ("test", held_out, 4),
    ] {
        write_sonar_like(&data.join(split), n, 256, seed)?;
    }
    println!("generated sonar-like images -> {}", data.display());
    let open = |split: &str| Dataset::open(&DataSource::new(data.join(split)));
    let (train, val, test) = (open("train")?, open("val")?, open("test")?);
    let indices: Vec<usize> = (0..test.len()).collect();
    let score = |scorer: &Scorer, name: &str| -> Result<Score> {
        let dir = out.join("report").join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let opts = EvalOptions {
            preprocessing: Preprocessing::Sam,
            prompt: Default::default(),
            image_size,
            overlays: Some(dir.clone()),
            strict: false,
        };
        let summary = evaluate(&test, &indices, scorer, &opts, || {})?.summary;
        write_reports(
            &dir,
            &summary,
            &format!("demo: {name} on the generated test images"),
        )?;
        Ok(Score {
            dice: summary.mean_dice,
            iou: summary.mean_iou,
        })
    };

    let mut methods = BTreeMap::new();
    for method in METHODS {
        let name = method.name();
        if method == Method::FREEZE {
            methods.insert(name.clone(), score(&Scorer::Model(&base_model), &name)?);
            continue;
        }
        println!("{name}: training {} epochs", args.epochs);
        let run_dir = out.join("runs").join(&name);
        let trainer = Trainer {
            settings: settings(&base, method, image_size, &args),
            train: &train,
            val: Some(&val),
            out: run_dir.clone(),
            stop: None,
            device: device.clone(),
            step_log: None,
            embedding_cache: None,
        };
        trainer.run(false, &mut super::train::Bars::default())?;
        let adapter = run_dir.join("best/adapter.safetensors");
        let sam = load_with_adapter(&base, &adapter, None, &device)?;
        methods.insert(name.clone(), score(&Scorer::Model(&sam), &name)?);
    }
    methods.insert("box-fill".into(), score(&Scorer::BoxFill, "box-fill")?);

    println!(
        "\n{} test images, {} Dice / IoU (%)",
        test.len(),
        base.display()
    );
    println!("| method | Dice % | IoU % |\n|---|---:|---:|");
    for name in METHODS.iter().map(|m| m.name()).chain(["box-fill".into()]) {
        let s = &methods[&name];
        println!("| {name} | {:.2} | {:.2} |", s.dice, s.iou);
    }
    let summary = serde_json::to_string_pretty(&serde_json::json!({ "methods": methods }))?;
    let path = out.join("summary.json");
    write_atomic(&path, |w| Ok(w.write_all(summary.as_bytes())?))?;
    println!(
        "\nsummary -> {}\noverlays and reports -> {}\ntraining plots -> {}",
        path.display(),
        out.join("report").display(),
        out.join("runs/<method>/training.png").display()
    );
    Ok(())
}

/// The base model at its native input size (the zero-shot row); a missing or broken file is
/// named.
fn load_base(base: &Path, device: &burn::tensor::Device) -> Result<Sam> {
    let dict = load_state_dict(base).with_context(|| {
        format!(
            "the base model {} cannot be read (the shipped one is {SHIPPED_BASE})",
            base.display()
        )
    })?;
    Sam::from_state_dict(dict, None, device)
        .with_context(|| format!("{} is not a usable SAM checkpoint", base.display()))
}

fn settings(base: &Path, method: Method, image_size: usize, args: &DemoArgs) -> TrainSettings {
    TrainSettings {
        checkpoint: base.to_path_buf(),
        image_size: Some(image_size),
        peft: PeftConfig::new(method),
        optimizer: OptimizerConfig::new(OptimizerKind::Adamw, 1e-4),
        lr: args.lr,
        schedule: Schedule::WarmupCosine,
        epochs: args.epochs,
        batch: 2,
        seed: 42,
        dice: DiceKind::Soft,
        augment: true,
        box_jitter: 20,
        init_adapter: None,
        preprocessing: Preprocessing::Sam,
        strict: false,
    }
}
