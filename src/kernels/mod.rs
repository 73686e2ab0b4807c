//! Fused CPU kernels for SAM's hot paths, with their own backward passes.
//!
//! burn's Flex backend runs elementwise ops on one thread and materialises every permute, slice
//! and broadcast of SAM's attention. These kernels do that work in one parallel pass instead:
//! - [`rel_pos_attention`]: windowed or global attention with decomposed relative positions,
//!   straight from `qkv` (windows, padding, heads, softmax and both products, fused);
//! - [`layer_norm`]: LayerNorm over the last axis;
//! - [`gelu`]: exact GELU;
//! - [`linear`]: `x·Wᵀ + b` or `x·Wᵀ`, split across the threads, with only the gradients the
//!   graph needs;
//! - [`linear_low_rank`]: the same plus a low-rank addend `z·Uᵀ` (LoRA's deltas) in that pass;
//! - [`adam_step`]: the optimiser's update of one parameter (no gradient of its own).
//!
//! They run on the Flex backend (with or without autodiff) in f32; on any other device or dtype
//! the same functions compose burn's tensor ops, so results never depend on the path taken
//! beyond float rounding (tests/kernels.rs compares both, values and gradients).
//!
//! Here: the entry points and what decides the path ([`takes_fused_path`],
//! [`fused_kernels_run_on`], [`set_enabled`]), and the backend extension [`CpuKernels`];
//! `precision` holds mixed precision, the dtype the composed path's products run in, and
//! `composed` the composed path's own attention and GELU (a second extension, on every backend,
//! whose backward passes recompute what burn's ops would keep). `CpuKernels`'
//! implementations: `flex` (the kernels on plain Flex tensors) and `autodiff` (the same under
//! autodiff, with their backward passes recorded); `buffers` holds the buffer helpers both use;
//! one file per kernel holds its arithmetic (`attention`, `layer_norm`, `gelu`, `linear`,
//! `adam`, over `matmul` and `math`).

#[macro_use]
mod multiversion;

mod adam;
mod attention;
mod autodiff;
mod buffers;
mod composed;
mod flex;
mod gelu;
mod layer_norm;
mod linear;
mod math;
mod matmul;
mod precision;

use std::cell::Cell;

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, backend_extension};
use burn::tensor::{DType, Device, Tensor};

pub use adam::{AdamStep, WeightDecay};
use buffers::{SharedOut, repeat_rows, zeros};
pub use composed::banded_attention;
pub use precision::{
    Precision, conv_transpose2d_in_precision, conv2d_in_precision, precision, product,
    set_precision,
};

/// The fused path of `sam::attention::rel_pos_attention` (same arguments and result).
/// Flex only: that function checks [`takes_fused_path`] and composes burn's ops elsewhere.
pub fn rel_pos_attention(
    qkv: Tensor<4>,
    pad: Tensor<1>,
    rel_h: Tensor<3>,
    rel_w: Tensor<3>,
    heads: usize,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as CpuKernels>::rel_pos_attention(
        qkv.into_dispatch(),
        pad.into_dispatch(),
        rel_h.into_dispatch(),
        rel_w.into_dispatch(),
        heads,
    ))
}

/// Exact (erf) GELU, as PyTorch's `nn.GELU()`.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if takes_fused_path(&x) {
        Tensor::from_dispatch(<Dispatch as CpuKernels>::gelu(x.into_dispatch()))
    } else {
        composed::gelu(x)
    }
}

/// LayerNorm of `x` over its last axis, `(x − mean) / √(var + eps) · gamma + beta`.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    if takes_fused_path(&x) {
        Tensor::from_dispatch(<Dispatch as CpuKernels>::layer_norm(
            x.into_dispatch(),
            gamma.into_dispatch(),
            beta.into_dispatch(),
            eps,
        ))
    } else {
        burn::tensor::module::layer_norm(x, gamma, Some(beta), eps)
    }
}

/// `x·Wᵀ + b` (or `x·Wᵀ` without a bias) for `x` `[rows, in]`, `weight` `[out, in]` (PyTorch's
/// layout) and `bias` `[out]`.
pub fn linear(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    if !takes_fused_path(&x) {
        return precision::linear_composed(x, weight, bias);
    }
    let (x, weight) = (x.into_dispatch(), weight.into_dispatch());
    Tensor::from_dispatch(match bias {
        Some(bias) => <Dispatch as CpuKernels>::linear(x, weight, bias.into_dispatch()),
        None => <Dispatch as CpuKernels>::product_t(x, weight),
    })
}

/// `x·Wᵀ + b + z·upᵀ` for `x` `[rows, in]`, `weight` `[out, in]`, `bias` `[out]`, `z`
/// `[rows, r]` and `up` `[out, r]`: a linear layer with a low-rank addend, such as LoRA's
/// `B·(A·x)`. The fused path adds it into the linear's output as it is written, where composed
/// ops build the `[rows, out]` addend and add it in passes of their own on one thread.
pub fn linear_low_rank(
    x: Tensor<2>,
    weight: Tensor<2>,
    bias: Tensor<1>,
    z: Tensor<2>,
    up: Tensor<2>,
) -> Tensor<2> {
    if takes_fused_path(&x) {
        Tensor::from_dispatch(<Dispatch as CpuKernels>::linear_low_rank(
            x.into_dispatch(),
            weight.into_dispatch(),
            bias.into_dispatch(),
            z.into_dispatch(),
            up.into_dispatch(),
        ))
    } else {
        precision::linear_composed(x, weight, Some(bias)) + product(z, up.transpose())
    }
}

/// One Adam update of a flat parameter `theta` from its gradient and moments: `[θ', m', v']`.
/// The caller checks [`fused_kernels_run_on`]; `train::optim` composes burn's ops elsewhere.
pub fn adam_step(
    theta: Tensor<1>,
    grad: Tensor<1>,
    m: Tensor<1>,
    v: Tensor<1>,
    step: AdamStep,
) -> [Tensor<1>; 3] {
    let n = theta.dims()[0];
    let out = Tensor::<1>::from_dispatch(<Dispatch as CpuKernels>::adam_step(
        theta.into_dispatch(),
        grad.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        step,
    ));
    [0, 1, 2].map(|i| out.clone().slice(i * n..(i + 1) * n))
}

/// Whether an op on `x` takes the fused path: `x` is f32 on a device where
/// [`layers_fuse_on`].
pub fn takes_fused_path<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && layers_fuse_on(&x.device())
}

/// Whether the model's layers run the fused kernels on `device`: they run there
/// ([`fused_kernels_run_on`]) and the products compute in f32 ([`precision`]).
pub fn layers_fuse_on(device: &Device) -> bool {
    precision() == Precision::F32 && fused_kernels_run_on(device)
}

/// Whether the fused kernels run on `device`: the Flex device (with or without autodiff), unless
/// they were switched off with [`set_enabled`].
pub fn fused_kernels_run_on(device: &Device) -> bool {
    enabled() && is_cpu(device)
}

/// Whether `device` is burn's Flex CPU backend (with or without autodiff).
pub fn is_cpu(device: &Device) -> bool {
    matches!(
        device.clone().inner().as_dispatch(),
        DispatchDevice::Flex(_)
    )
}

/// The largest buffer `device` allocates, in bytes: on a GPU every tensor is one buffer, whose
/// size the driver limits (lavapipe: 128 MiB). `None` where no such limit applies (the CPU).
#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda"))]
pub fn max_buffer_bytes(device: &Device) -> Option<u64> {
    match device.clone().inner().as_dispatch() {
        DispatchDevice::Cube(gpu) => Some(gpu.client().properties().memory.max_page_size),
        _ => None,
    }
}

/// How many items of `bytes_per_item` bytes each one tensor on `device` may hold: any number
/// where buffers have no limit, else as many as fit in one buffer (at least one).
pub fn items_per_buffer(device: &Device, bytes_per_item: u64) -> usize {
    max_buffer_bytes(device).map_or(usize::MAX, |limit| {
        usize::try_from(limit / bytes_per_item.max(1)).map_or(usize::MAX, |n| n.max(1))
    })
}

/// The largest buffer `device` allocates: no limit in a build without a GPU backend.
#[cfg(not(any(feature = "wgpu", feature = "vulkan", feature = "cuda")))]
pub fn max_buffer_bytes(_device: &Device) -> Option<u64> {
    None
}

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Switches the fused kernels on or off for models run on the calling thread (on by default);
/// off, every device takes the composed path. For measuring the kernels and testing both paths.
pub fn set_enabled(on: bool) {
    ENABLED.set(on);
}

pub fn enabled() -> bool {
    ENABLED.get()
}

#[backend_extension(Flex, Autodiff)]
pub trait CpuKernels: Backend {
    fn rel_pos_attention(
        qkv: FloatTensor<Self>,
        pad: FloatTensor<Self>,
        rel_h: FloatTensor<Self>,
        rel_w: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self>;

    fn gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;

    fn layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;

    fn linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    fn linear_low_rank(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        z: FloatTensor<Self>,
        up: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// `x·weightᵀ`: a linear layer without a bias.
    fn product_t(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;

    fn adam_step(
        theta: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: AdamStep,
    ) -> FloatTensor<Self>;
}
