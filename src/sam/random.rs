//! A SAM-shaped model with random weights, built in code: for the bundled demo and for tests
//! that need a model without downloading one.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use super::config::SamConfig;
use super::shapes::checkpoint_shapes;
use crate::checkpoint::{RawTensor, StateDict};

/// Every tensor of `cfg`'s checkpoint, randomly initialised: norms at 1/0, biases 0, weights
/// N(0, 1/fan_in), embeddings and the Fourier matrix N(0, 1), position tables N(0, 0.02²).
pub fn random_state_dict(cfg: &SamConfig, seed: u64) -> StateDict {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut dict = StateDict::new();
    for (key, shape) in checkpoint_shapes(cfg) {
        let n: usize = shape.iter().product();
        let std = if key.ends_with("pos_embed") || key.contains("rel_pos") {
            0.02
        } else if shape.len() == 1 {
            0.0
        } else if key.contains("embed") || key.contains("token") || key.contains("gaussian") {
            1.0
        } else {
            1.0 / (shape[1..].iter().product::<usize>() as f64).sqrt()
        };
        let data = if shape.len() == 1 && key.ends_with(".weight") {
            vec![1.0; n] // every 1-D weight in SAM is a norm's scale
        } else if std == 0.0 {
            vec![0.0; n]
        } else {
            let normal = Normal::new(0.0, std).expect("finite std");
            (0..n).map(|_| normal.sample(&mut rng) as f32).collect()
        };
        dict.insert(key, RawTensor::new(shape, data));
    }
    dict
}
