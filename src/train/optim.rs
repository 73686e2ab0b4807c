//! Optimisers over a model's trainable parameters, with state kept by parameter name so it can
//! be saved and resumed exactly.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Gradients, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{RawTensor, StateDict};
use crate::kernels::{self, AdamStep, WeightDecay};
use crate::nn::F32Values;
use crate::nn::params::ParamNames;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// Adam with coupled L2 weight decay (decay added to the gradient), as the authors.
    Adam,
    /// Adam with decoupled weight decay.
    Adamw,
    /// Plain SGD (weight decay added to the gradient).
    Sgd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl OptimizerConfig {
    pub fn new(kind: OptimizerKind, weight_decay: f64) -> Self {
        Self {
            kind,
            weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// First and second moments of one parameter, flattened (on the model's inner device).
struct Moments {
    m: Tensor<1>,
    v: Tensor<1>,
}

pub struct Optimizer {
    pub config: OptimizerConfig,
    /// Optimiser steps taken (Adam's bias correction uses it).
    pub steps: u64,
    moments: BTreeMap<String, Moments>,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig) -> Self {
        Self {
            config,
            steps: 0,
            moments: BTreeMap::new(),
        }
    }

    /// One update of every parameter of `module` that has a gradient in `grads`.
    pub fn step<M: Module>(
        &mut self,
        module: M,
        names: &ParamNames,
        grads: &Gradients,
        lr: f64,
    ) -> M {
        self.steps += 1;
        let mut update = Update {
            optimizer: self,
            names,
            grads,
            lr,
        };
        module.map(&mut update)
    }

    /// Moments as a state dict (`m.<key>`, `v.<key>`), for checkpoints, or the device's
    /// failure to read one.
    pub fn state(&self) -> anyhow::Result<StateDict> {
        let mut dict = StateDict::new();
        for (key, moments) in &self.moments {
            for (prefix, t) in [("m", &moments.m), ("v", &moments.v)] {
                let data = t.clone().try_f32_values()?;
                dict.insert(
                    format!("{prefix}.{key}"),
                    RawTensor::new(vec![data.len()], data),
                );
            }
        }
        Ok(dict)
    }

    /// Restores the moments saved by [`Optimizer::state`] after `steps` steps.
    pub fn restore(&mut self, state: StateDict, steps: u64, device: &burn::tensor::Device) {
        self.steps = steps;
        self.moments.clear();
        let mut m = BTreeMap::new();
        let mut v = BTreeMap::new();
        for (key, t) in state {
            let n = t.data.len();
            let tensor = Tensor::<1>::from_data(TensorData::new(t.data, [n]), device);
            if let Some(k) = key.strip_prefix("m.") {
                m.insert(k.to_string(), tensor);
            } else if let Some(k) = key.strip_prefix("v.") {
                v.insert(k.to_string(), tensor);
            }
        }
        for (key, m) in m {
            if let Some(v) = v.remove(&key) {
                self.moments.insert(key, Moments { m, v });
            }
        }
    }
}

struct Update<'a> {
    optimizer: &'a mut Optimizer,
    names: &'a ParamNames,
    grads: &'a Gradients,
    lr: f64,
}

impl ModuleMapper for Update<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(grad) = param.val().grad(self.grads) else {
            return param;
        };
        let Some((key, _)) = self.names.get(&param.id) else {
            return param;
        };
        let key = key.to_string();
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let shape = tensor.dims();
        // The update runs outside the autodiff graph, on flattened tensors.
        let theta = tensor.inner().flatten::<1>(0, D - 1);
        let g = grad.flatten::<1>(0, D - 1);
        let theta = self.optimizer.update(&key, theta, g, self.lr);
        let mut updated = Tensor::from_inner(theta.reshape(shape));
        if require_grad {
            updated = updated.require_grad();
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}

impl Optimizer {
    fn update(&mut self, key: &str, theta: Tensor<1>, g: Tensor<1>, lr: f64) -> Tensor<1> {
        let c = self.config.clone();
        match c.kind {
            OptimizerKind::Sgd => {
                let g = if c.weight_decay > 0.0 {
                    g + theta.clone() * c.weight_decay
                } else {
                    g
                };
                theta - g * lr
            }
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                let moments = self
                    .moments
                    .entry(key.to_string())
                    .or_insert_with(|| Moments {
                        m: g.zeros_like(),
                        v: g.zeros_like(),
                    });
                let step = adam_scalars(&c, lr, self.steps as i32);
                if kernels::fused_kernels_run_on(&theta.device()) {
                    let [theta, m, v] =
                        kernels::adam_step(theta, g, moments.m.clone(), moments.v.clone(), step);
                    (moments.m, moments.v) = (m, v);
                    return theta;
                }
                // The kernel's operations, in its order, composed of burn's ops.
                let (theta, g) = match step.decay {
                    WeightDecay::None => (theta, g),
                    WeightDecay::Coupled(wd) => (theta.clone(), g + theta * wd),
                    WeightDecay::Decoupled(keep) => (theta * keep, g),
                };
                moments.m = moments.m.clone() * step.beta1 + g.clone() * step.one_minus_beta1;
                moments.v = moments.v.clone() * step.beta2 + g.clone() * g * step.one_minus_beta2;
                let m_hat = moments.m.clone() / step.bias_correction1;
                let v_hat = moments.v.clone() / step.bias_correction2;
                theta - m_hat / (v_hat.sqrt() + step.eps) * step.lr
            }
        }
    }
}

/// The scalars of Adam step `t`, each computed in f64 and rounded once to f32, for both the CPU
/// kernel and the composed update (so the two agree bit for bit).
fn adam_scalars(c: &OptimizerConfig, lr: f64, t: i32) -> AdamStep {
    let decay = match c.kind {
        _ if c.weight_decay <= 0.0 => WeightDecay::None,
        OptimizerKind::Adamw => WeightDecay::Decoupled((1.0 - lr * c.weight_decay) as f32),
        _ => WeightDecay::Coupled(c.weight_decay as f32),
    };
    AdamStep {
        lr: lr as f32,
        beta1: c.beta1 as f32,
        one_minus_beta1: (1.0 - c.beta1) as f32,
        beta2: c.beta2 as f32,
        one_minus_beta2: (1.0 - c.beta2) as f32,
        bias_correction1: (1.0 - c.beta1.powi(t)) as f32,
        bias_correction2: (1.0 - c.beta2.powi(t)) as f32,
        eps: c.eps as f32,
        decay,
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;
    use crate::nn::params::Origin;

    #[derive(Module, Debug)]
    struct Linear1 {
        w: Param<Tensor<1>>,
    }

    /// Two steps on `loss = Σ c·w` (gradient c) against the update rules written out in f64.
    fn two_steps(kind: OptimizerKind, wd: f64) -> (Vec<f32>, Vec<f64>) {
        let device = Device::flex().autodiff();
        let w0 = [1.0f32, -2.0];
        let c = [0.5f32, 3.0];
        let param = Param::from_tensor(Tensor::<1>::from_data(w0, &device));
        let mut names = ParamNames::default();
        names.insert(param.id, "w".into(), Origin::Base);
        let mut module = Linear1 { w: param };
        let mut opt = Optimizer::new(OptimizerConfig::new(kind, wd));
        let lr = 0.1;
        for _ in 0..2 {
            let loss = (module.w.val() * Tensor::<1>::from_data(c, &device)).sum();
            let grads = loss.backward();
            module = opt.step(module, &names, &grads, lr);
        }
        let got = module.w.val().f32_values();

        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let expected = (0..2)
            .map(|i| {
                let (mut w, c) = (f64::from(w0[i]), f64::from(c[i]));
                let (mut m, mut v) = (0.0, 0.0);
                for t in 1..=2 {
                    match kind {
                        OptimizerKind::Sgd => w -= lr * (c + wd * w),
                        _ => {
                            let g = if kind == OptimizerKind::Adam {
                                c + wd * w
                            } else {
                                c
                            };
                            if kind == OptimizerKind::Adamw {
                                w *= 1.0 - lr * wd;
                            }
                            m = b1 * m + (1.0 - b1) * g;
                            v = b2 * v + (1.0 - b2) * g * g;
                            let m_hat = m / (1.0 - b1.powi(t));
                            let v_hat = v / (1.0 - b2.powi(t));
                            w -= lr * m_hat / (v_hat.sqrt() + eps);
                        }
                    }
                }
                w
            })
            .collect();
        (got, expected)
    }

    /// The CPU kernel and the composed update give the same bits, over three steps of a
    /// parameter long enough to be split across threads.
    #[test]
    fn kernel_update_equals_the_composed_one() {
        let device = Device::flex();
        let n = 50_000;
        let values = |seed: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * seed).sin()).collect() };
        let theta0 = Tensor::<1>::from_data(TensorData::new(values(0.37), [n]), &device);
        for kind in [OptimizerKind::Adam, OptimizerKind::Adamw] {
            for wd in [0.0, 0.05] {
                let run = |fused: bool| {
                    kernels::set_enabled(fused);
                    let mut opt = Optimizer::new(OptimizerConfig::new(kind, wd));
                    let mut theta = theta0.clone();
                    for step in 1..=3 {
                        opt.steps = step;
                        let grad = Tensor::<1>::from_data(
                            TensorData::new(values(0.11 * step as f32), [n]),
                            &device,
                        );
                        theta = opt.update("w", theta, grad, 1e-3);
                    }
                    kernels::set_enabled(true);
                    theta.f32_values()
                };
                let (fused, composed) = (run(true), run(false));
                let same = fused
                    .iter()
                    .zip(&composed)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{kind:?} wd {wd}: the two paths differ");
            }
        }
    }

    #[test]
    fn updates_follow_the_rules() {
        for kind in [
            OptimizerKind::Adam,
            OptimizerKind::Adamw,
            OptimizerKind::Sgd,
        ] {
            for wd in [0.0, 0.05] {
                let (got, expected) = two_steps(kind, wd);
                for (g, e) in got.iter().zip(&expected) {
                    assert!(
                        (f64::from(*g) - e).abs() < 1e-6,
                        "{kind:?} wd {wd}: {got:?} vs {expected:?}"
                    );
                }
            }
        }
    }
}
