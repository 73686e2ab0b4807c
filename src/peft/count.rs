//! Trainable parameter counts, the paper's way (docs/methods.md#parameter-counts): what a method adds inside the image
//! encoder (shared COBOT tensors once), and everything that trains.

use serde::Serialize;

use super::PeftConfig;
use super::init::initial_shapes;
use crate::sam::config::SamConfig;
use crate::sam::shapes::checkpoint_shapes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParamCounts {
    /// Trainable parameters inside the image encoder (the paper's Table 4 column).
    pub encoder: usize,
    /// All trainable parameters.
    pub total: usize,
}

pub fn trainable_counts(sam: &SamConfig, peft: &PeftConfig) -> ParamCounts {
    let base = checkpoint_shapes(sam)
        .into_iter()
        .filter(|(key, _)| peft.is_trainable(key, false))
        .map(|(key, shape)| (key, shape.iter().product::<usize>()));
    // The PEFT tensors are those a fresh attach creates; only their shapes matter here.
    let vit = sam.encoder.vit();
    let added = vit
        .map(|e| initial_shapes(peft, e.embed_dim, e.depth))
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| peft.is_trainable(key, true))
        .map(|(key, t)| (key, t.numel()))
        .collect::<Vec<_>>();
    let mut counts = ParamCounts {
        encoder: 0,
        total: 0,
    };
    for (key, n) in base.chain(added) {
        counts.total += n;
        if key.starts_with("image_encoder.") {
            counts.encoder += n;
        }
    }
    counts
}
