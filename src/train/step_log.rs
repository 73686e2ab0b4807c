//! `--log-jsonl`: one JSON line per optimiser step of `train` and `pretrain`, so that any two runs
//! (or a run and the PyTorch reference) can be compared step by step.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::files::atomic::write_atomic;

/// One line: a step's epoch (0-based), global step (1-based), loss, learning rate, images, and
/// the seconds since the run (or its resume) started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    pub epoch: usize,
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub images: usize,
    pub seconds: f64,
}

/// The open log file.
pub struct StepLogFile {
    file: std::fs::File,
    path: PathBuf,
    started: Instant,
}

impl StepLogFile {
    /// Opens `path` afresh, or, for a run resumed after `resumed_steps` steps, keeps the lines of
    /// those steps and appends after them: the steps an interrupted run logged after its last
    /// checkpoint are run again, and logged once.
    pub fn open(path: &Path, resumed_steps: Option<u64>) -> Result<Self> {
        if let Some(done) = resumed_steps {
            keep_steps_up_to(path, done)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(resumed_steps.is_some())
            .write(true)
            .truncate(resumed_steps.is_none())
            .open(path)
            .with_context(|| format!("--log-jsonl {}: cannot open", path.display()))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            started: Instant::now(),
        })
    }

    pub fn write(
        &mut self,
        epoch: usize,
        step: u64,
        loss: f64,
        lr: f64,
        images: usize,
    ) -> Result<()> {
        let line = serde_json::to_string(&StepLog {
            epoch,
            step,
            loss,
            lr,
            images,
            seconds: self.started.elapsed().as_secs_f64(),
        })?;
        writeln!(self.file, "{line}")
            .with_context(|| format!("--log-jsonl {}: cannot write", self.path.display()))
    }
}

/// Drops the lines of steps after `done` (a missing file has none); lines that are not a step's
/// (the user's own, a half-written last one) are kept as they are.
fn keep_steps_up_to(path: &Path, done: u64) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| format!("--log-jsonl {}: cannot read", path.display()));
        }
    };
    let kept: String = text
        .lines()
        .filter(|line| serde_json::from_str::<StepLog>(line).map_or(true, |s| s.step <= done))
        .map(|line| format!("{line}\n"))
        .collect();
    if kept != text {
        write_atomic(path, |w| Ok(w.write_all(kept.as_bytes())?))
            .with_context(|| format!("--log-jsonl {}: cannot rewrite", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resumed run's log keeps the steps up to its checkpoint and then goes on after them.
    #[test]
    fn resuming_drops_the_steps_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steps.jsonl");
        let mut log = StepLogFile::open(&path, None).unwrap();
        for step in 1..=5 {
            log.write(0, step, 1.0 / step as f64, 1e-3, 1).unwrap();
        }
        drop(log);
        let mut log = StepLogFile::open(&path, Some(3)).unwrap();
        log.write(1, 4, 0.5, 1e-3, 1).unwrap();
        drop(log);
        let steps: Vec<(usize, u64)> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<StepLog>(l).unwrap())
            .map(|s| (s.epoch, s.step))
            .collect();
        assert_eq!(steps, [(0, 1), (0, 2), (0, 3), (1, 4)]);
    }
}
