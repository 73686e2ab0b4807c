//! Trainable parameter counts, the paper's way (docs/methods.md#parameter-counts): what a method adds inside the image
//! encoder (shared COBOT tensors once), and everything that trains.

use serde::Serialize;

use crate::peft::{PeftConfig, PeftModules};
use crate::sam::Sam;
use crate::sam::config::SamConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParamCounts {
    /// Trainable parameters inside the image encoder (the paper's Table 4 column).
    pub encoder: usize,
    /// All trainable parameters.
    pub total: usize,
}

pub fn trainable_counts(sam: &SamConfig, peft: &PeftConfig) -> ParamCounts {
    let base = Sam::declarations(sam)
        .into_iter()
        .filter(|d| peft.is_trainable(&d.key, false));
    // The PEFT tensors are those a fresh attach declares.
    let added = sam
        .encoder
        .vit()
        .map(|e| PeftModules::declarations(peft, e.embed_dim, e.depth))
        .unwrap_or_default()
        .into_iter()
        .filter(|d| peft.is_trainable(&d.key, true));
    let mut counts = ParamCounts {
        encoder: 0,
        total: 0,
    };
    for d in base.chain(added) {
        counts.total += d.numel();
        if d.key.starts_with("image_encoder.") {
            counts.encoder += d.numel();
        }
    }
    counts
}
