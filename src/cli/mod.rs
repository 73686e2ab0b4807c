//! The command-line front end: argument parsing and reporting over the library.

mod bench;
mod data_args;
mod demo;
pub mod device;
mod embed;
mod eval;
mod image_files;
mod init;
mod merge;
mod model_args;
mod params;
mod predict;
mod pretrain;
mod run_dir_args;
mod scenes;
mod segment_everything;
mod serve;
mod stats;
mod train;

use std::sync::atomic::{AtomicBool, Ordering};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "sam-cobot",
    version,
    about = "Segment Anything in Rust, with parameter-efficient fine-tuning"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Worker threads (default: every core, or RAYON_NUM_THREADS).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
}

/// clap value parser for counts that must be at least 1 (runs, images, boxes, epochs).
fn at_least_one(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Adapt the shipped base SAM to a generated sonar-like domain: zero-shot, lightweight, lora
    /// and lora+cobot against the box-filled baseline, in one table.
    Demo(demo::DemoArgs),
    /// Segment objects in an image from box and point prompts.
    Predict(predict::PredictArgs),
    /// Fine-tune SAM on a data set (LoRA, AdaptFormer, COBOT, ...).
    Train(train::TrainArgs),
    /// Save image embeddings, so that `predict --embeddings` decodes prompts without the encoder.
    Embed(embed::EmbedArgs),
    /// Every object in an image: SAM prompted with a grid of points, as Meta's automatic mask
    /// generator (scripts/amg.py) does.
    SegmentEverything(segment_everything::SegmentEverythingArgs),
    /// A local web page for interactive segmentation (and its JSON API), comparing base and
    /// adapted models side by side.
    Serve(serve::ServeArgs),
    /// Score a model (or the box-filled baseline) on a data set with the paper's metrics.
    Eval(eval::EvalArgs),
    /// Time a training step or an inference: median and peak memory.
    Bench(bench::BenchArgs),
    /// Pretrain SAM from random weights on generated scenes (how the shipped base was made).
    Pretrain(pretrain::PretrainArgs),
    /// Write generated scenes (the pretraining distribution) as a COCO data set.
    Scenes(scenes::ScenesArgs),
    /// Write a SAM checkpoint with random weights (a named configuration), to train from scratch.
    Init(init::InitArgs),
    /// Count the trainable parameters of a fine-tuning method.
    Params(params::ParamsArgs),
    /// Fold an adapter into its base checkpoint, or write a checkpoint native at another input
    /// size (--image-size): a stock SAM .pth or .safetensors.
    Merge(merge::MergeArgs),
    /// Mean and standard deviation of a data set's images (0–1 scale), for --preprocessing sonar.
    Stats(stats::StatsArgs),
}

/// A flag that Ctrl-C sets, for loops that stop after their current step and save; a second
/// Ctrl-C kills the process.
fn stop_flag() -> anyhow::Result<&'static AtomicBool> {
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step (Ctrl-C again to kill)...");
    })
    .map_err(|e| anyhow::anyhow!("cannot install the Ctrl-C handler: {e}"))?;
    Ok(stop)
}

/// Parses the arguments and runs the command. A failure comes back as one message: the error and
/// its causes, each cause only once.
///
/// The command runs on a worker of its own thread pool, so the parallel work it starts (matrix
/// products, kernels) is shared with the thread that started it instead of handed across and
/// waited for: that hand-off cost 7% of a ViT-B training step at 256 px on two threads.
pub fn run() -> anyhow::Result<()> {
    let mut command = Cli::command();
    // `--lr -1` is a value to check, not an unknown flag.
    let names: Vec<String> = command
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    for name in names {
        command = command.mut_subcommand(name, |c| c.allow_negative_numbers(true));
    }
    let matches = command.get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cli.threads.map_or(0, usize::from))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the worker threads: {e}"))?;
    pool.install(|| run_command(cli.command))
}

fn run_command(command: Command) -> anyhow::Result<()> {
    let result = match command {
        Command::Predict(args) => predict::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Params(args) => params::run(args),
        Command::Init(args) => init::run(args),
        Command::Pretrain(args) => pretrain::run(args),
        Command::Scenes(args) => scenes::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Embed(args) => embed::run(args),
        Command::SegmentEverything(args) => segment_everything::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Train(args) => train::run(args),
        Command::Merge(args) => merge::run(args),
        Command::Stats(args) => stats::run(args),
    };
    result.map_err(|e| anyhow::Error::msg(message(&e)))
}

/// `outer: cause: ...`, leaving out causes whose text is already in the message: errors that
/// print their own source (`thiserror`'s `{source}`, `image`'s errors) would otherwise say it twice.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.is_empty() {
            out = text;
        } else if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}
