//! `sam-cobot bench`: median time and peak memory of a training step or an inference.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::bench::{BenchSettings, GemmShape, Workload};
use crate::checkpoint::load_state_dict;
use crate::peft::PeftFlags;
use crate::sam::random::random_state_dict;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What to time.
    #[arg(long, value_enum, default_value = "train-step")]
    workload: Workload,
    /// A named configuration with random weights (tiny, small, vit_b, vit_l, vit_h).
    #[arg(long, default_value = "vit_b", conflicts_with = "checkpoint")]
    model: String,
    /// Time this checkpoint instead of random weights.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Input size S.
    #[arg(long, default_value_t = 256)]
    image_size: usize,
    #[command(flatten)]
    peft: PeftFlags,
    /// Images per step.
    #[arg(long, default_value_t = 1, value_parser = super::at_least_one)]
    batch: usize,
    /// Box prompts per image.
    #[arg(long, default_value_t = 1, value_parser = super::at_least_one)]
    boxes: usize,
    #[command(flatten)]
    device: super::device::DeviceArg,
    /// Untimed runs first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = super::at_least_one)]
    runs: usize,
    /// Matrix sizes of `--workload gemm`: N (square) or MxKxN.
    #[arg(long, default_value = "2048")]
    gemm_size: GemmShape,
    /// Compose burn's ops instead of running the fused CPU kernels (to measure what they gain).
    #[arg(long)]
    unfused: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    crate::kernels::set_enabled(!args.unfused);
    let device = args.device.device()?;
    let device_name = super::device::describe(&device);
    if args.workload == Workload::Gemm {
        let shape = args.gemm_size;
        let runs = crate::bench::gemm(shape, &device, args.warmup, args.runs)?;
        let ms = crate::bench::median(&runs);
        let gflops = shape.flops() / (ms * 1e-3) / 1e9;
        if args.json {
            let report = serde_json::json!({"workload": "gemm", "size": shape.to_string(),
                "device": device_name, "precision": args.device.precision, "median_ms": ms,
                "gflops": gflops, "threads": rayon::current_num_threads()});
            println!("{report}");
        } else {
            println!(
                "gemm {shape} {} on {device_name}, {} threads: median {ms:.1} ms, {gflops:.1} GFLOP/s",
                args.device.precision,
                rayon::current_num_threads()
            );
        }
        return Ok(());
    }
    let base = match &args.checkpoint {
        Some(path) => load_state_dict(path)?,
        None => random_state_dict(&super::init::model_config(&args.model)?, 0),
    };
    let settings = BenchSettings {
        workload: args.workload,
        model: match &args.checkpoint {
            Some(path) => path.display().to_string(),
            None => args.model.clone(),
        },
        image_size: args.image_size,
        peft: args.peft.config().map_err(anyhow::Error::msg)?,
        batch: args.batch,
        boxes: args.boxes,
        warmup: args.warmup,
        runs: args.runs,
        device,
        device_name,
    };
    let report = crate::bench::run(base, &settings)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} {} {} at {} px, {} image(s) x {} box(es), {}, {}, {} threads{}: median {:.1} ms over {} runs, peak RSS {}",
            clap::ValueEnum::to_possible_value(&report.workload)
                .expect("every workload has a name")
                .get_name(),
            report.model,
            report.method,
            report.image_size,
            report.batch,
            report.boxes,
            report.device,
            report.precision,
            report.threads,
            if args.unfused { ", unfused" } else { "" },
            report.median_ms,
            report.runs_ms.len(),
            report
                .peak_rss_mib
                .map_or("unknown".into(), |m| format!("{m:.0} MiB"))
        );
    }
    Ok(())
}
