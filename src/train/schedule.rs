//! Learning-rate schedules, as a function of the optimiser step.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// One epoch of linear warm-up, then cosine decay to zero (the default).
    WarmupCosine,
    /// The authors' sonar code exactly (docs/methods.md#learning-rate-schedules): warm-up stepped per iteration through two
    /// epochs, peaking near 2× the base rate, then a per-epoch cosine.
    Authors,
    /// The base rate throughout (the medical code).
    Constant,
}

impl Schedule {
    /// Learning rate of the 0-based step `step` (`epoch = step / steps_per_epoch`).
    pub fn lr(self, base: f64, step: usize, steps_per_epoch: usize, epochs: usize) -> f64 {
        let n = steps_per_epoch.max(1);
        match self {
            Schedule::Constant => base,
            Schedule::WarmupCosine => warmup_cosine(base, 0.0, step, n, (n * epochs).max(n + 1)),
            Schedule::Authors => {
                let (epoch, k) = (step / n, step % n);
                let pi = std::f64::consts::PI;
                let t_max = epochs.max(1) as f64;
                match epoch {
                    0 => base * k as f64 / n as f64,
                    1 if k == 0 => base * (1.0 + (pi / t_max).cos()) / 2.0,
                    1 => base * (n + k) as f64 / n as f64,
                    e => {
                        let e = e as f64;
                        2.0 * base * (1.0 + (pi * e / t_max).cos()) / (1.0 + (pi / t_max).cos())
                    }
                }
            }
        }
    }
}

/// Linear warm-up to `base` over the first `warmup` steps (step `k` gets `(k + 1) / warmup`),
/// then cosine decay from `base` to `end` at step `total`.
pub fn warmup_cosine(base: f64, end: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
    end + (base - end) * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let lr = |s| Schedule::WarmupCosine.lr(1.0, s, 10, 5);
        assert!((lr(0) - 0.1).abs() < 1e-12);
        assert!((lr(9) - 1.0).abs() < 1e-12);
        assert!((lr(10) - 1.0).abs() < 1e-12);
        assert!((lr(30) - 0.5).abs() < 1e-12);
        assert!(lr(49) < 0.01);
    }

    #[test]
    fn authors_schedule_matches_spec() {
        // docs/methods.md#learning-rate-schedules with η = 1, N = 560, T_max = 20.
        let lr = |s| Schedule::Authors.lr(1.0, s, 560, 20);
        assert_eq!(lr(0), 0.0);
        assert!((lr(560) - 0.99384).abs() < 1e-5);
        assert!((lr(561) - 561.0 / 560.0).abs() < 1e-12);
        assert!((lr(2 * 560) - 1.963).abs() < 1e-3);
        assert!((lr(19 * 560 + 5) - 0.01239).abs() < 1e-5);
    }
}
