//! The run-folder flags of the commands that train (`train`, `pretrain`): where the run lives,
//! whether it continues or starts over there, and its step log.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::files::guard::{FileRoles, refuse_existing};
use crate::train::run_dir::{RUN_FILES, claim_run_dir, forget_unstarted_run};

#[derive(Args, Debug)]
pub struct RunDirArgs {
    /// Run folder: best/ and last/ checkpoints (with the optimiser state, the run state and the
    /// settings), training.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its last checkpoint, with the run's own settings (a
    /// setting given again must be the same; only the length, train's --epochs or pretrain's
    /// --steps, may grow).
    #[arg(long)]
    pub resume: bool,
    /// Start over in an --out that is not empty (the files a run writes are removed, others
    /// kept).
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Write one JSON line per step (epoch, step, loss, lr, images, seconds) to this file; with
    /// --resume, the lines after the last checkpoint are replaced by the steps run again.
    #[arg(long)]
    pub log_jsonl: Option<PathBuf>,
}

impl RunDirArgs {
    /// Records --out and --log-jsonl among the command's outputs (neither may be, or lie in, an
    /// input, nor may an input lie in the checkpoint folders a new run replaces); a log file that
    /// exists is only started over with --force (--resume continues it).
    pub fn outputs(&self, roles: &mut FileRoles) -> Result<()> {
        roles.output_dir("--out", &self.out)?;
        if !self.resume {
            // A new run replaces these folders of --out whole (with --force, or when they are
            // absent), so no input may live in them.
            for name in RUN_FILES {
                roles.replaced("--out", &self.out.join(name))?;
            }
        }
        if let Some(log) = &self.log_jsonl {
            roles.output("--log-jsonl", log)?;
            if !self.resume {
                refuse_existing("--log-jsonl", log, self.force)?;
            }
        }
        Ok(())
    }

    /// Takes --out for this run (see [`claim_run_dir`]).
    pub fn claim(&self) -> Result<()> {
        claim_run_dir(&self.out, self.resume, self.force)
    }

    /// After a run failed: a new one that saved nothing leaves nothing behind (see
    /// [`forget_unstarted_run`]); a resumed one keeps its folder.
    pub fn forget_if_unstarted(&self) {
        if !self.resume {
            forget_unstarted_run(&self.out);
        }
    }
}
