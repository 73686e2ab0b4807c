//! COBOT's hyper-complex head: a quaternion linear map, assembled from its four components by the
//! Hamilton product (SPEC §3.3).

use burn::module::{Module, Param};
use burn::tensor::Tensor;

/// `z = u · W` with `W` `[4a, 4b]` built from `R, I, J, K` `[a, b]`
/// (rows: input component, columns: output component).
#[derive(Module, Debug)]
pub struct QuaternionLinear {
    pub r: Param<Tensor<2>>,
    pub i: Param<Tensor<2>>,
    pub j: Param<Tensor<2>>,
    pub k: Param<Tensor<2>>,
}

impl QuaternionLinear {
    /// The assembled weight; autodiff through it gives the authors' custom gradient exactly.
    pub fn weight(&self) -> Tensor<2> {
        let (r, i, j, k) = (self.r.val(), self.i.val(), self.j.val(), self.k.val());
        let row = |blocks: [Tensor<2>; 4]| Tensor::cat(blocks.to_vec(), 1);
        Tensor::cat(
            vec![
                row([r.clone(), i.clone(), j.clone(), k.clone()]),
                row([-i.clone(), r.clone(), k.clone(), -j.clone()]),
                row([-j.clone(), -k.clone(), r.clone(), i.clone()]),
                row([-k, j, -i, r]),
            ],
            0,
        )
    }

    /// `u`: `[n, 4a]` → `[n, 4b]`.
    pub fn forward(&self, u: Tensor<2>) -> Tensor<2> {
        u.matmul(self.weight())
    }
}
