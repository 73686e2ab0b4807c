//! The command-line front end: argument parsing and reporting over the library.

mod device;
mod predict;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "sam-cobot",
    version,
    about = "Segment Anything in Rust, with parameter-efficient fine-tuning"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Segment objects in an image from box and point prompts.
    Predict(predict::PredictArgs),
}

/// Parses the arguments and runs the command.
pub fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Predict(args) => predict::run(args),
    }
}
