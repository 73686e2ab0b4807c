//! The kernels on burn's Flex CPU backend without autodiff: each op of [`CpuKernels`] as one
//! parallel pass over contiguous f32 buffers (inference, and the forward values under autodiff).

use burn::backend::Flex;
use burn_flex::FlexTensor;

use super::buffers::{attention_inputs, contiguous, f32s, flex, inputs, linear_dims};
use super::{AdamStep, CpuKernels, adam, attention, gelu, layer_norm, linear};

impl CpuKernels for Flex {
    fn rel_pos_attention(
        qkv: FlexTensor,
        pad: FlexTensor,
        rel_h: FlexTensor,
        rel_w: FlexTensor,
        heads: usize,
    ) -> FlexTensor {
        let (geo, [qkv, pad, rel_h, rel_w]) = attention_inputs([qkv, pad, rel_h, rel_w], heads);
        let out = attention::forward(geo, &inputs(&qkv, &pad, &rel_h, &rel_w));
        flex(out, vec![geo.b, geo.h, geo.w, geo.heads * geo.hd])
    }

    fn gelu(x: FlexTensor) -> FlexTensor {
        let x = contiguous(x);
        let out = gelu::forward(f32s(&x));
        flex(out, x.layout().shape().to_vec())
    }

    fn layer_norm(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, eps: f64) -> FlexTensor {
        let [x, gamma, beta] = [x, gamma, beta].map(contiguous);
        let out = layer_norm::forward(f32s(&x), f32s(&gamma), f32s(&beta), eps as f32);
        flex(out, x.layout().shape().to_vec())
    }

    fn linear(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let [x, weight, bias] = [x, weight, bias].map(contiguous);
        let [m, k, n] = linear_dims(&x, &weight);
        let out = linear::forward(f32s(&x), f32s(&weight), f32s(&bias), m, k, n);
        flex(out, vec![m, n])
    }

    fn linear_low_rank(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        z: FlexTensor,
        up: FlexTensor,
    ) -> FlexTensor {
        let [x, weight, bias, z, up] = [x, weight, bias, z, up].map(contiguous);
        let [m, k, n] = linear_dims(&x, &weight);
        let [rows, r, cols] = linear_dims(&z, &up);
        assert!(
            rows == m && cols == n,
            "linear_low_rank: z·upᵀ is [{rows}, {cols}], x·Wᵀ [{m}, {n}]"
        );
        let mut out = linear::forward(f32s(&x), f32s(&weight), f32s(&bias), m, k, n);
        linear::accumulate(&mut out, f32s(&z), f32s(&up), m, r, n);
        flex(out, vec![m, n])
    }

    fn product_t(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
        let [x, weight] = [x, weight].map(contiguous);
        let [m, k, n] = linear_dims(&x, &weight);
        flex(
            linear::product(f32s(&x), f32s(&weight), m, k, n),
            vec![m, n],
        )
    }

    fn adam_step(
        theta: FlexTensor,
        grad: FlexTensor,
        m: FlexTensor,
        v: FlexTensor,
        step: AdamStep,
    ) -> FlexTensor {
        let [theta, grad, m, v] = [theta, grad, m, v].map(contiguous);
        let out = adam::step(f32s(&theta), f32s(&grad), f32s(&m), f32s(&v), &step);
        let len = out.len();
        flex(out, vec![len])
    }
}
