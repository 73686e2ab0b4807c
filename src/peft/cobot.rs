//! COBOT (docs/methods.md#cobot): a coefficient matrix shared by all modules, mixed across blocks by a relation
//! matrix, a per-block coefficient set, and a head on the bottleneck activations.

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use super::quaternion::QuaternionLinear;

/// Tensors shared by every module of the encoder: `FacT_c` `[1, k, T]` and `FacT_p` `[T, T]`.
/// Absent when only the per-block coefficient set is used.
#[derive(Module, Debug)]
pub struct CobotShared {
    pub coefficients: Param<Tensor<3>>,
    /// Trainable or frozen depending on the relation switch; always part of the adapter state.
    pub relation: Param<Tensor<2>>,
}

impl CobotShared {
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
    pub fn forward(&self, u: Tensor<2>) -> Tensor<2> {
        match (&self.quaternion, &self.linear) {
            (Some(q), _) => q.forward(u),
            (None, Some(w)) => u.matmul(w.val().transpose()),
            (None, None) => u,
        }
    }
}
