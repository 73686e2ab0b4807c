//! How a tensor starts when it is not loaded: each module names its tensors' initialisers where
//! it declares them ([`crate::nn::weights::Weights::param`]), and random weights, fresh PEFT
//! modules and parameter counts are all read off those declarations.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use crate::checkpoint::{RawTensor, StateDict};

/// A tensor's initialiser, as the reference (PyTorch) code draws it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Every entry the same: norms (1 and 0), position tables (0), COBOT's starting scales.
    Constant(f32),
    /// U[−b, b]: PyTorch's default for a linear or convolution layer's weight and bias, with
    /// b = 1/√fan_in of the weight ([`Init::fan_in_uniform`]).
    Uniform(f32),
    /// U[−b, b) ([`Init::kaiming_uniform`]).
    UniformHalfOpen(f32),
    /// U[0, 1): `torch.rand`.
    Uniform01,
    /// N(0, σ²): embedding tables (σ = 1), Xavier-normal weights.
    Normal(f64),
    /// The identity matrix (a square tensor).
    Identity,
}

impl Init {
    /// PyTorch's default for a layer whose weight has `weight_shape` (fan_in = its size over the
    /// first axis: `in` of a linear `[out, in]`, `in·k·k` of a convolution).
    pub fn fan_in_uniform(weight_shape: &[usize]) -> Self {
        let fan_in: usize = weight_shape[1..].iter().product();
        Self::Uniform(1.0 / (fan_in as f32).sqrt())
    }

    /// PyTorch's `kaiming_uniform_(a = √5)` for a weight of `fan_in` inputs: U[−1/√fan_in,
    /// 1/√fan_in), half-open as the authors' PEFT code draws it.
    pub fn kaiming_uniform(fan_in: usize) -> Self {
        Self::UniformHalfOpen(1.0 / (fan_in as f32).sqrt())
    }

    /// PyTorch's `xavier_normal_` (gain 1) for a `[out, in]` weight.
    pub fn xavier_normal([out, d_in]: [usize; 2]) -> Self {
        Self::Normal((2.0 / (out + d_in) as f64).sqrt())
    }

    /// The values of a tensor of `shape`, drawn from `rng` in row-major order (constants and the
    /// identity take nothing from it).
    fn draw(self, shape: &[usize], rng: &mut StdRng) -> Vec<f32> {
        let n: usize = shape.iter().product();
        match self {
            Self::Constant(v) => vec![v; n],
            Self::Uniform(b) => (0..n).map(|_| rng.random_range(-b..=b)).collect(),
            Self::UniformHalfOpen(b) => (0..n).map(|_| rng.random_range(-b..b)).collect(),
            Self::Uniform01 => (0..n).map(|_| rng.random::<f32>()).collect(),
            Self::Normal(std) => {
                let normal = Normal::new(0.0, std).expect("finite std");
                (0..n).map(|_| normal.sample(rng) as f32).collect()
            }
            Self::Identity => {
                let side = shape[0];
                (0..n)
                    .map(|i| f32::from(u8::from(i % (side + 1) == 0)))
                    .collect()
            }
        }
    }
}

/// One tensor as a module declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    pub key: String,
    pub shape: Vec<usize>,
    pub init: Init,
}

impl Declared {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Draws every declared tensor from one generator seeded with `seed`, in declaration order (the
/// order is part of a seed's meaning: the shipped base's recipe starts from `init`'s draw).
pub fn draw_all(declared: &[Declared], seed: u64) -> StateDict {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut dict = StateDict::new();
    for d in declared {
        let data = d.init.draw(&d.shape, &mut rng);
        dict.insert(d.key.clone(), RawTensor::new(d.shape.clone(), data));
    }
    dict
}
