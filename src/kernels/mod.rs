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

#[macro_use]
mod multiversion;

mod adam;
mod attention;
mod gelu;
mod layer_norm;
mod linear;
mod math;
mod matmul;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, DispatchDevice, Flex, backend_extension,
};
use burn::tensor::{DType, Device, Tensor, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;
use std::cell::Cell;

pub use adam::{AdamStep, WeightDecay};
use attention::{Geometry, Inputs};

/// The fused path of [`crate::sam::attention::rel_pos_attention`] (same arguments and result).
/// Flex only: that function checks [`fused`] and composes burn's ops elsewhere.
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
    if fused(&x) {
        Tensor::from_dispatch(<Dispatch as CpuKernels>::gelu(x.into_dispatch()))
    } else {
        burn::tensor::activation::gelu(x)
    }
}

/// LayerNorm of `x` over its last axis, `(x − mean) / √(var + eps) · gamma + beta`.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    if fused(&x) {
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
    if !fused(&x) {
        return burn::tensor::module::linear(x, weight.transpose(), bias);
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
    if fused(&x) {
        Tensor::from_dispatch(<Dispatch as CpuKernels>::linear_low_rank(
            x.into_dispatch(),
            weight.into_dispatch(),
            bias.into_dispatch(),
            z.into_dispatch(),
            up.into_dispatch(),
        ))
    } else {
        burn::tensor::module::linear(x, weight.transpose(), Some(bias)) + z.matmul(up.transpose())
    }
}

/// One Adam update of a flat parameter `theta` from its gradient and moments: `[θ', m', v']`.
/// The caller checks [`serve`]; `train::optim` composes burn's ops elsewhere.
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

/// Whether the fused kernels serve `x`: an f32 tensor on a device they [`serve`].
pub fn fused<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && serve(&x.device())
}

/// Whether the fused kernels run on `device`: the Flex device (with or without autodiff), unless
/// they were switched off with [`set_enabled`].
pub fn serve(device: &Device) -> bool {
    enabled() && is_cpu(device)
}

/// Whether `device` is burn's Flex CPU backend (with or without autodiff).
pub fn is_cpu(device: &Device) -> bool {
    matches!(
        device.clone().inner().as_dispatch(),
        DispatchDevice::Flex(_)
    )
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

impl<C: CheckpointStrategy> CpuKernels for Autodiff<Flex, C> {
    fn rel_pos_attention(
        qkv: FloatTensor<Self>,
        pad: FloatTensor<Self>,
        rel_h: FloatTensor<Self>,
        rel_w: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        differentiable::<C, _, 4>(
            [qkv, pad, rel_h, rel_w],
            heads,
            |[qkv, pad, rel_h, rel_w], &heads| {
                Flex::rel_pos_attention(qkv, pad, rel_h, rel_w, heads)
            },
            every_input,
            |saved, &heads, grad, _| {
                let saved = saved.map(|t| t.expect("every input is saved"));
                let shapes = saved.each_ref().map(|t| t.layout().shape().to_vec());
                let (geo, [qkv, pad, rel_h, rel_w]) = attention_inputs(saved, heads);
                let inputs = inputs(&qkv, &pad, &rel_h, &rel_w);
                let g = attention::backward(geo, &inputs, f32s(&grad));
                let mut shapes = shapes.into_iter();
                [g.qkv, g.pad, g.rel_h, g.rel_w].map(|v| Some(flex(v, shapes.next().unwrap())))
            },
        )
    }

    fn gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        differentiable::<C, _, 1>(
            [x],
            (),
            |[x], _| Flex::gelu(x),
            every_input,
            |[x], _, grad, _| {
                let x = contiguous(x.expect("the input is saved"));
                let dx = gelu::backward(f32s(&x), f32s(&grad));
                [Some(flex(dx, x.layout().shape().to_vec()))]
            },
        )
    }

    fn layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        differentiable::<C, _, 3>(
            [x, gamma, beta],
            eps,
            |[x, gamma, beta], &eps| Flex::layer_norm(x, gamma, beta, eps),
            |_| [true, true, false],
            |[x, gamma, _], &eps, grad, _| {
                let [x, gamma] = [x, gamma].map(|t| contiguous(t.expect("saved")));
                let g = layer_norm::backward(f32s(&x), f32s(&gamma), f32s(&grad), eps as f32);
                let c = g.gamma.len();
                [
                    Some(flex(g.x, x.layout().shape().to_vec())),
                    Some(flex(g.gamma, vec![c])),
                    Some(flex(g.beta, vec![c])),
                ]
            },
        )
    }

    fn linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        differentiable::<C, _, 3>(
            [x, weight, bias],
            (),
            |[x, weight, bias], _| Flex::linear(x, weight, bias),
            // x's gradient reads the weight, the weight's reads x, the bias's neither.
            |[x, weight, _]| [weight, x, false],
            |[x, weight, _], _, grad, [need_x, need_weight, need_bias]| {
                let [dx, dw] = product_grads(&grad, [x, weight], [need_x, need_weight]);
                [dx, dw, need_bias.then(|| bias_grad(&grad))]
            },
        )
    }

    fn linear_low_rank(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        z: FloatTensor<Self>,
        up: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        differentiable::<C, _, 5>(
            [x, weight, bias, z, up],
            (),
            |[x, weight, bias, z, up], _| Flex::linear_low_rank(x, weight, bias, z, up),
            // As `linear`, for both products.
            |[x, weight, _, z, up]| [weight, x, false, up, z],
            |[x, weight, _, z, up], _, grad, [need_x, need_weight, need_bias, need_z, need_up]| {
                let [dx, dw] = product_grads(&grad, [x, weight], [need_x, need_weight]);
                let [dz, dup] = product_grads(&grad, [z, up], [need_z, need_up]);
                [dx, dw, need_bias.then(|| bias_grad(&grad)), dz, dup]
            },
        )
    }

    fn product_t(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        differentiable::<C, _, 2>(
            [x, weight],
            (),
            |[x, weight], _| Flex::product_t(x, weight),
            |[x, weight]| [weight, x],
            |saved, _, grad, needed| product_grads(&grad, saved, needed),
        )
    }

    /// On values outside the graph: the update is not differentiated.
    fn adam_step(
        theta: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        step: AdamStep,
    ) -> FloatTensor<Self> {
        let [theta, grad, m, v] = [theta, grad, m, v].map(Self::inner);
        Self::from_inner(Flex::adam_step(theta, grad, m, v, step))
    }
}

/// What a fused op's backward pass reads, by which inputs need a gradient → which inputs to
/// save.
type SavesFn<const N: usize> = fn([bool; N]) -> [bool; N];

/// For ops whose backward pass reads every input, whatever it computes.
fn every_input<const N: usize>(_: [bool; N]) -> [bool; N] {
    [true; N]
}

/// The backward pass of a fused op: its saved inputs (as [`SavesFn`] chose), its parameters, the
/// gradient of its output and which inputs need a gradient → the gradients asked for (others may
/// be `None`).
type BackwardFn<P, const N: usize> =
    fn([Option<FlexTensor>; N], &P, FlexTensor, [bool; N]) -> [Option<FlexTensor>; N];

/// A fused op in the autodiff graph: the inputs it saved, and [`Fused::backward`] turns the
/// output's gradient into theirs (registered for the inputs that need one).
#[derive(Debug)]
struct Fused<P, const N: usize> {
    backward: BackwardFn<P, N>,
}

impl<P, const N: usize> Backward<Flex, N> for Fused<P, N>
where
    P: Clone + Send + std::fmt::Debug + 'static,
{
    type State = ([Option<NodeId>; N], P);

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let (ids, params) = ops.state;
        let saved = ids.map(|id| id.map(|id| checkpointer.retrieve_node_output::<FlexTensor>(id)));
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let needed = ops.parents.each_ref().map(Option::is_some);
        let input_grads = (self.backward)(saved, &params, grad, needed);
        for (parent, grad) in ops.parents.into_iter().zip(input_grads) {
            if let Some(node) = parent {
                let grad = grad.expect("a fused op's backward computes every gradient asked for");
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

/// Runs `forward` on the inputs' values and records it in the autodiff graph with `backward`,
/// saving the inputs that `saves` names for the inputs that need a gradient.
fn differentiable<C: CheckpointStrategy, P, const N: usize>(
    inputs: [FloatTensor<Autodiff<Flex, C>>; N],
    params: P,
    forward: fn([FlexTensor; N], &P) -> FlexTensor,
    saves: SavesFn<N>,
    backward: BackwardFn<P, N>,
) -> FloatTensor<Autodiff<Flex, C>>
where
    P: Clone + Send + std::fmt::Debug + 'static,
{
    let nodes = inputs.each_ref().map(|t| t.node());
    let save = saves(inputs.each_ref().map(|t| t.is_tracked()));
    match (Fused { backward })
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let mut keep = save.into_iter();
            let ids = inputs
                .each_ref()
                .map(|t| keep.next().unwrap().then(|| prep.checkpoint(t)));
            let out = forward(inputs.map(|t| t.into_primitive()), &params);
            prep.finish((ids, params), out)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(forward(inputs.map(|t| t.into_primitive()), &params))
        }
    }
}

/// The gradients asked for of `x` `[m, k]` and `weight` `[n, k]` in an output `… + x·weightᵀ`,
/// from its gradient `[m, n]`; each reads the other input, saved when needed.
fn product_grads(
    grad: &FlexTensor,
    [x, weight]: [Option<FlexTensor>; 2],
    [need_x, need_weight]: [bool; 2],
) -> [Option<FlexTensor>; 2] {
    let [x, weight] = [x, weight].map(|t| t.map(contiguous));
    let [m, n] = [0, 1].map(|i| grad.layout().shape()[i]);
    let g = f32s(grad);
    let dx = need_x.then(|| {
        let w = weight
            .as_ref()
            .expect("the weight is saved for x's gradient");
        let k = w.layout().shape()[1];
        flex(linear::input_grad(g, f32s(w), m, k, n), vec![m, k])
    });
    let dw = need_weight.then(|| {
        let x = x.as_ref().expect("x is saved for the weight's gradient");
        let k = x.layout().shape()[1];
        flex(linear::weight_grad(g, f32s(x), m, k, n), vec![n, k])
    });
    [dx, dw]
}

/// The bias gradient of a linear: the column sums of its output's gradient `[m, n]`.
fn bias_grad(grad: &FlexTensor) -> FlexTensor {
    let [m, n] = [0, 1].map(|i| grad.layout().shape()[i]);
    flex(linear::bias_grad(f32s(grad), m, n), vec![n])
}

/// `[m, k, n]` of a linear: `x` `[m, k]`, `weight` `[n, k]`.
fn linear_dims(x: &FlexTensor, weight: &FlexTensor) -> [usize; 3] {
    let (x, w) = (x.layout().shape(), weight.layout().shape());
    assert!(
        x.num_dims() == 2 && w.num_dims() == 2 && x[1] == w[1],
        "linear: x {:?}, weight {:?}",
        x.to_vec(),
        w.to_vec()
    );
    [x[0], x[1], w[0]]
}

/// The geometry of a [`CpuKernels::rel_pos_attention`] call, and its inputs made contiguous.
fn attention_inputs(tensors: [FlexTensor; 4], heads: usize) -> (Geometry, [FlexTensor; 4]) {
    let [qkv, pad, rel_h, rel_w] = tensors.map(contiguous);
    let dims = |t: &FlexTensor| t.layout().shape().to_vec();
    let (q, h, w) = (dims(&qkv), dims(&rel_h), dims(&rel_w));
    assert!(
        q.len() == 4 && h.len() == 3 && w.len() == 3 && heads > 0 && q[3] % (3 * heads) == 0,
        "rel_pos_attention: qkv {q:?}, rel_h {h:?}, rel_w {w:?}, {heads} heads"
    );
    let geo = Geometry {
        b: q[0],
        h: q[1],
        w: q[2],
        heads,
        hd: q[3] / (3 * heads),
        wh: h[0],
        ww: w[0],
    };
    (geo, [qkv, pad, rel_h, rel_w])
}

fn inputs<'a>(
    qkv: &'a FlexTensor,
    pad: &'a FlexTensor,
    rel_h: &'a FlexTensor,
    rel_w: &'a FlexTensor,
) -> Inputs<'a> {
    Inputs {
        qkv: f32s(qkv),
        pad: f32s(pad),
        rel_h: f32s(rel_h),
        rel_w: f32s(rel_w),
    }
}

/// `vec![0.0; len]`, zeroed by the worker threads: `vec!` zeroes a reused allocation on the
/// calling thread, and the outputs of a training step's kernels add up to tens of megabytes.
fn zeros(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(1 << 16)
        .for_each(|chunk| chunk.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: the first `len` values were all written just above.
    unsafe { v.set_len(len) };
    v
}

/// An output that parallel tasks write in disjoint parts: each task's part is its own by
/// construction, which the caller vouches for where it writes.
#[derive(Clone, Copy)]
struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: the tasks write disjoint parts (each use says why), and the output outlives them (it
// is borrowed by the function that runs them).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn new(out: &mut [f32]) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }

    /// `offset` values in (by value, so closures capture the whole `Send` wrapper).
    fn at(self, offset: usize) -> *mut f32 {
        assert!(offset <= self.len, "offset out of the output");
        self.ptr.wrapping_add(offset)
    }

    /// Copies `values` to `offset..offset + values.len()`.
    ///
    /// # Safety
    /// No other task reads or writes those values meanwhile.
    unsafe fn write(self, offset: usize, values: &[f32]) {
        assert!(offset + values.len() <= self.len, "write out of the output");
        // SAFETY: in bounds (just checked); the caller vouches that no one else touches them.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.at(offset), values.len()) }
    }
}

/// `t` itself when its values are one run in its buffer (a slice of a larger buffer too: burn's
/// `to_contiguous` copies those), else a contiguous copy.
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() {
        t
    } else {
        t.to_contiguous()
    }
}

/// `count` copies of `row` end to end, written by the worker threads (`repeat` writes on the
/// calling thread).
fn repeat_rows(row: &[f32], count: usize) -> Vec<f32> {
    let len = row.len() * count;
    let mut v = Vec::with_capacity(len);
    if len > 0 {
        v.spare_capacity_mut()[..len]
            .par_chunks_mut(row.len())
            .for_each(|copy| {
                copy.write_copy_of_slice(row);
            });
    }
    // SAFETY: the first `len` values were all written just above (whole copies of `row`).
    unsafe { v.set_len(len) };
    v
}

/// The values of a contiguous f32 tensor.
fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("fused kernels take contiguous f32 tensors")
}

fn flex(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}
