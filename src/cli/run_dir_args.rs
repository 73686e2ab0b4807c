//! The run-folder flags of the commands that train (`train`, `pretrain`): where the run lives and
//! whether it continues or starts over there.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::train::run_dir::{claim_run_dir, forget_unstarted_run};

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
}

impl RunDirArgs {
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
