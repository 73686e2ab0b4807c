//! Mixed precision: the dtype the model's matrix products and convolutions run in.
//!
//! Weights, optimiser state, activations between layers, normalisation, softmax and the loss
//! stay f32; only the products take their operands in half precision (f16 or bf16) and return
//! f32, which is where GPUs gain (tensor cores, half the bytes read). The CPU's fused kernels
//! compute in f32: with a lower precision set, the CPU takes the composed path with the same
//! casts (burn's Flex backend rounds the operands and multiplies in f32), which reproduces the
//! rounding of a half-precision device but is slower than f32, so the CLI refuses it there.
//!
//! The precision is one setting for the whole process ([`set_precision`]), like the device the
//! CLI picks: models run on worker threads (the server's) that a thread-local would not reach.

use std::sync::atomic::{AtomicU8, Ordering};

use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{DType, Device, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

/// What the model's products compute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Products in bfloat16 (f32's range, 8 bits of mantissa): CUDA.
    Bf16,
    /// Products in IEEE half (5 exponent bits, 11 of mantissa): Vulkan devices with
    /// shaderFloat16.
    F16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    /// The dtype the products take their operands in; `None` for f32 (no casts).
    pub fn half(self) -> Option<FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(FloatDType::BF16),
            Precision::F16 => Some(FloatDType::F16),
        }
    }

    /// Whether `device` computes in this precision: f32 everywhere; a half precision on a GPU
    /// whose backend reports the dtype (f16 on Vulkan needs shaderFloat16; WGSL has no bf16),
    /// never on the CPU, whose kernels compute in f32.
    pub fn runs_on(self, device: &Device) -> bool {
        match self.half() {
            None => true,
            Some(_) if super::is_cpu(device) => false,
            Some(half) => device.supports_dtype(DType::from(half)),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

static PRECISION: AtomicU8 = AtomicU8::new(0);

/// Sets the precision of every model's products in this process (f32 at start).
pub fn set_precision(precision: Precision) {
    PRECISION.store(precision as u8, Ordering::Relaxed);
}

pub fn precision() -> Precision {
    match PRECISION.load(Ordering::Relaxed) {
        0 => Precision::F32,
        1 => Precision::Bf16,
        _ => Precision::F16,
    }
}

/// `a · b` (batched over leading dims) with the operands in the process's precision, as f32.
pub fn product<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    match precision().half() {
        None => a.matmul(b),
        Some(half) => a.cast(half).matmul(b.cast(half)).cast(FloatDType::F32),
    }
}

/// `x·Wᵀ (+ b)` on the composed path for `x` `[rows, in]`, `weight` `[out, in]`; the bias is
/// added in f32.
pub(super) fn linear_composed(
    x: Tensor<2>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<2> {
    if precision() == Precision::F32 {
        return burn::tensor::module::linear(x, weight.transpose(), bias);
    }
    let y = product(x, weight.transpose());
    match bias {
        Some(bias) => y + bias.unsqueeze(),
        None => y,
    }
}

/// burn's `conv2d` with input and weight in the process's precision, bias added in f32.
pub fn conv2d_in_precision(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    convolution(x, weight, bias, |x, w, b| conv2d(x, w, b, options.clone()))
}

/// burn's `conv_transpose2d` with input and weight in the process's precision, bias added in f32.
pub fn conv_transpose2d_in_precision(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvTransposeOptions<2>,
) -> Tensor<4> {
    convolution(x, weight, bias, |x, w, b| {
        conv_transpose2d(x, w, b, options.clone())
    })
}

/// `conv(x, weight, bias)` in f32, or on half-precision operands without the bias, which is
/// then added to the f32 result per channel (`[B, C, H, W]`).
fn convolution(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    conv: impl Fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>) -> Tensor<4>,
) -> Tensor<4> {
    let Some(half) = precision().half() else {
        return conv(x, weight, bias);
    };
    let y = conv(x.cast(half), weight.cast(half), None).cast(FloatDType::F32);
    match bias {
        Some(bias) => {
            let c = bias.dims()[0];
            y + bias.reshape([1, c, 1, 1])
        }
        None => y,
    }
}
