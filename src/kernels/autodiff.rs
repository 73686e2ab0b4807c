//! The kernels under burn's autodiff: each op of [`CpuKernels`] runs its Flex forward pass and
//! records a backward pass of its own in the graph ([`differentiable`]), saving only the inputs
//! that backward pass reads for the gradients asked for.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Flex};
use burn_flex::FlexTensor;

use super::buffers::{attention_inputs, contiguous, f32s, flex, inputs};
use super::{AdamStep, CpuKernels, attention, gelu, layer_norm, linear};

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
