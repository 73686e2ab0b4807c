//! What a run records besides its tensors, in every checkpoint folder's `state.json`: the epochs
//! and steps done, the best score so far and the history of epochs the plot draws.

use serde::{Deserialize, Serialize};

/// What a checkpoint folder records besides the tensors.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunState {
    pub epochs_done: usize,
    pub steps: u64,
    pub best_score: Option<f64>,
    pub best_epoch: Option<usize>,
    pub skipped_steps: usize,
    pub history: Vec<EpochLog>,
}

/// An epoch's step losses: the finite ones averaged, the others counted.
#[derive(Debug, Default)]
pub struct EpochLosses {
    sum: f64,
    finite: usize,
    pub non_finite: usize,
}

impl EpochLosses {
    /// Adds a step's loss; whether it was finite.
    pub fn add(&mut self, value: f64) -> bool {
        if value.is_finite() {
            self.sum += value;
            self.finite += 1;
        } else {
            self.non_finite += 1;
        }
        value.is_finite()
    }

    /// How many finite losses were added.
    pub fn finite(&self) -> usize {
        self.finite
    }

    /// The mean finite loss (NaN when there was none).
    pub fn mean(&self) -> f64 {
        if self.finite == 0 {
            f64::NAN
        } else {
            self.sum / self.finite as f64
        }
    }
}

impl RunState {
    /// Records a finished epoch scored `score` (higher is better); whether it is the best yet.
    pub fn end_epoch(&mut self, log: EpochLog, score: f64) -> bool {
        let epoch = log.epoch;
        self.history.push(log);
        self.epochs_done = epoch + 1;
        let is_best = self.best_score.is_none_or(|b| score > b);
        if is_best {
            self.best_score = Some(score);
            self.best_epoch = Some(epoch);
        }
        is_best
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub mean_loss: f64,
    /// Validation Dice with box prompts (the paper's protocol).
    pub val_dice: Option<f64>,
    /// Validation Dice with one point per object (pretraining reports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_point_dice: Option<f64>,
    pub seconds: f64,
    pub skipped_items: usize,
    pub non_finite_steps: usize,
}
