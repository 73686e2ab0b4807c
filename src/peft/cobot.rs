//! COBOT (docs/methods.md#cobot): a coefficient matrix shared by all modules, mixed across blocks by a relation
//! matrix, a per-block coefficient set, and a head on the bottleneck activations.

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use super::quaternion::QuaternionLinear;
use super::{HeadKind, PeftConfig, Relation};
use crate::nn::init::Init;
use crate::nn::weights::{ModelLoadError, Weights};

/// Tensors shared by every module of the encoder: `FacT_c` `[1, k, T]` and `FacT_p` `[T, T]`.
/// Absent when only the per-block coefficient set is used.
#[derive(Module, Debug)]
pub struct CobotShared {
    pub coefficients: Param<Tensor<3>>,
    /// Trainable or frozen depending on the relation switch; always part of the adapter state.
    pub relation: Param<Tensor<2>>,
}

impl CobotShared {
    /// `FacT_c` `[1, k, T]` (ones) and `FacT_p` `[T, T]` (the identity, or U[0, 1) when fixed),
    /// kept under the first block's site for the `depth`-block encoder.
    pub fn load(w: &mut Weights, cfg: &PeftConfig, depth: usize) -> Result<Self, ModelLoadError> {
        let site = cfg.method.base.bottleneck_site();
        let prefix = site.expect("COBOT orchestrates a bottleneck").prefix(0);
        let (k, t) = (cfg.cobot_width(), cfg.cobot_modules(depth));
        let relation = match cfg.relation {
            Relation::Fixed => Init::Uniform01,
            Relation::Learnable | Relation::Identity => Init::Identity,
        };
        Ok(Self {
            coefficients: w.param(&format!("{prefix}.FacT_c"), [1, k, t], Init::Constant(1.0))?,
            relation: w.param(&format!("{prefix}.FacT_p"), [t, t], relation)?,
        })
    }

    /// `FacT_c @ FacT_p` as `[k, T]`: column t is module t's cross-block coefficient set.
    pub fn module_coefficients(&self) -> Tensor<2> {
        let c = self.coefficients.val();
        let [_, k, t] = c.dims();
        c.reshape([k, t]).matmul(self.relation.val())
    }
}

/// Column `t` of the `[k, T]` module coefficients: module t's cross-block set.
pub fn module_column(coefficients: &Tensor<2>, t: usize) -> Tensor<1> {
    let k = coefficients.dims()[0];
    coefficients.clone().slice([0..k, t..t + 1]).reshape([k])
}

/// The (q, v) columns of LoRA block `block`, which owns modules 2·block and 2·block + 1.
pub fn lora_columns(coefficients: &Tensor<2>, block: usize) -> (Tensor<1>, Tensor<1>) {
    (
        module_column(coefficients, 2 * block),
        module_column(coefficients, 2 * block + 1),
    )
}

/// Scales the bottleneck activations `h` `[n, k]`: `h ⊙ m + g ⊙ h` with the cross-block set `m`
/// (in this order, as the authors' code), or `g ⊙ h` with the per-block set alone.
pub fn scale(h: Tensor<2>, cross_block: Option<Tensor<1>>, per_block: Tensor<1>) -> Tensor<2> {
    let g = per_block.unsqueeze::<2>();
    match cross_block {
        Some(m) => h.clone() * m.unsqueeze::<2>() + g * h,
        None => g * h,
    }
}

/// The map after the coefficients: quaternion (the paper's), a plain linear layer, or nothing.
#[derive(Module, Debug)]
pub struct Head {
    pub quaternion: Option<QuaternionLinear>,
    /// `[k, k]`, used as a Linear (`u · Wᵀ`).
    pub linear: Option<Param<Tensor<2>>>,
}

impl Head {
    /// The head at `prefix` (`...FacT_d1` / `...FacT_d2`) for width `k`: a quaternion layer
    /// (`r` zero, `i`, `j`, `k` U[0, 1), as the authors start it), a Kaiming-uniform `[k, k]`
    /// linear map, or nothing.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        k: usize,
        kind: HeadKind,
    ) -> Result<Self, ModelLoadError> {
        Ok(match kind {
            HeadKind::Quaternion => {
                let mut part = |name: &str, init: Init| {
                    w.param(&format!("{prefix}.{name}_weight"), [k / 4, k / 4], init)
                };
                Self {
                    quaternion: Some(QuaternionLinear {
                        r: part("r", Init::Constant(0.0))?,
                        i: part("i", Init::Uniform01)?,
                        j: part("j", Init::Uniform01)?,
                        k: part("k", Init::Uniform01)?,
                    }),
                    linear: None,
                }
            }
            HeadKind::Linear => Self {
                quaternion: None,
                linear: Some(w.param(
                    &format!("{prefix}.weight"),
                    [k, k],
                    Init::kaiming_uniform(k),
                )?),
            },
            HeadKind::None => Self {
                quaternion: None,
                linear: None,
            },
        })
    }

    pub fn forward(&self, u: Tensor<2>) -> Tensor<2> {
        match (&self.quaternion, &self.linear) {
            (Some(q), _) => q.forward(u),
            (None, Some(w)) => u.matmul(w.val().transpose()),
            (None, None) => u,
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;
    use crate::nn::F32Values;

    fn tensor<const D: usize>(data: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
        Tensor::from_data(TensorData::new(data, shape), &Device::flex())
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.f32_values()
    }

    /// Dual sets: `h ⊙ m + g ⊙ h` per column; the per-block set alone: `g ⊙ h`.
    #[test]
    fn scaling_multiplies_each_bottleneck_channel_by_its_coefficients() {
        let h = tensor(vec![1.0, 2.0, 3.0, -1.0, 0.5, 4.0], [2, 3]);
        let m = tensor(vec![10.0, 20.0, 30.0], [3]);
        let g = tensor(vec![1.0, -1.0, 0.5], [3]);
        let dual = values(scale(h.clone(), Some(m), g.clone()));
        let expected: Vec<f32> = [1.0, 2.0, 3.0, -1.0, 0.5, 4.0]
            .iter()
            .enumerate()
            .map(|(i, &x)| x * [10.0, 20.0, 30.0][i % 3] + [1.0, -1.0, 0.5][i % 3] * x)
            .collect();
        assert_eq!(dual, expected);
        assert_eq!(values(scale(h, None, g)), [1.0, -2.0, 1.5, -1.0, -0.5, 2.0]);
    }

    /// Module t's cross-block set is column t of `FacT_c · FacT_p`; LoRA block b owns modules
    /// 2b (q) and 2b + 1 (v).
    #[test]
    fn module_coefficients_mix_the_shared_set_through_the_relation_matrix() {
        let device = Device::flex();
        // k = 2 channels, T = 4 modules.
        let c = tensor(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], [1, 2, 4]);
        let mut p = vec![0.0; 16];
        // Relation: module 0 takes module 3's column, module 3 takes module 0's, 1 and 2 stay.
        for (row, col) in [(3, 0), (1, 1), (2, 2), (0, 3)] {
            p[row * 4 + col] = 1.0;
        }
        let shared = CobotShared {
            coefficients: Param::from_tensor(c),
            relation: Param::from_tensor(Tensor::from_data(TensorData::new(p, [4, 4]), &device)),
        };
        let mixed = shared.module_coefficients();
        assert_eq!(
            values(mixed.clone()),
            [4.0, 2.0, 3.0, 1.0, 8.0, 6.0, 7.0, 5.0]
        );
        let (q, v) = lora_columns(&mixed, 1);
        assert_eq!((values(q), values(v)), (vec![3.0, 7.0], vec![1.0, 5.0]));
    }
}
