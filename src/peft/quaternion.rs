//! COBOT's hyper-complex head: a quaternion linear map, assembled from its four components by the
//! Hamilton product (docs/methods.md#quaternion-head).

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

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;
    use crate::nn::F32Values;

    fn param(data: Vec<f32>, shape: [usize; 2], device: &Device) -> Param<Tensor<2>> {
        Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), device))
    }

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.f32_values()
    }

    /// With one-element components the map is the Hamilton product `q ⊗ p` of the weight
    /// quaternion `q = (R, I, J, K)` and the input `p`.
    #[test]
    fn one_element_components_give_the_hamilton_product() {
        let device = Device::flex();
        let (r, i, j, k) = (1.5f32, -2.0, 0.5, 3.0);
        let layer = QuaternionLinear {
            r: param(vec![r], [1, 1], &device),
            i: param(vec![i], [1, 1], &device),
            j: param(vec![j], [1, 1], &device),
            k: param(vec![k], [1, 1], &device),
        };
        let p = [0.25f32, -1.0, 2.0, 0.75];
        let u = Tensor::from_data(TensorData::new(p.to_vec(), [1, 4]), &device);
        let got = values(layer.forward(u));
        let [pr, pi, pj, pk] = p;
        let hamilton = [
            r * pr - i * pi - j * pj - k * pk,
            r * pi + i * pr + j * pk - k * pj,
            r * pj - i * pk + j * pr + k * pi,
            r * pk + i * pj - j * pi + k * pr,
        ];
        for (g, h) in got.iter().zip(hamilton) {
            assert!((g - h).abs() < 1e-6, "{got:?} vs {hamilton:?}");
        }
    }

    /// The `[4a, 4b]` weight is laid out in `a × b` blocks: row blocks are the input's
    /// components, column blocks the output's, with the signs of the Hamilton table.
    #[test]
    fn the_weight_is_the_signed_block_table() {
        let device = Device::flex();
        let (a, b) = (2, 3);
        let component = |c: f32| param((0..a * b).map(|x| c + x as f32).collect(), [a, b], &device);
        let layer = QuaternionLinear {
            r: component(100.0),
            i: component(200.0),
            j: component(300.0),
            k: component(400.0),
        };
        let w = values(layer.weight());
        // Block (row, column) = sign × component, each component's entries 100·c + (x·b + y).
        let table = [
            [(1.0, 100.0), (1.0, 200.0), (1.0, 300.0), (1.0, 400.0)],
            [(-1.0, 200.0), (1.0, 100.0), (1.0, 400.0), (-1.0, 300.0)],
            [(-1.0, 300.0), (-1.0, 400.0), (1.0, 100.0), (1.0, 200.0)],
            [(-1.0, 400.0), (1.0, 300.0), (-1.0, 200.0), (1.0, 100.0)],
        ];
        for (bi, row) in table.iter().enumerate() {
            for (bj, &(sign, base)) in row.iter().enumerate() {
                for x in 0..a {
                    for y in 0..b {
                        let got = w[(bi * a + x) * 4 * b + bj * b + y];
                        assert_eq!(got, sign * (base + (x * b + y) as f32), "block {bi},{bj}");
                    }
                }
            }
        }
    }
}
