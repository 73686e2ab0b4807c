//! The composed path's own ops (GPUs, and the CPU with the fused kernels off): burn's tensor ops
//! on the inner backend, each with a node of its own in the autodiff graph whose backward pass
//! recomputes what burn's composed ops would keep (docs/gpu.md#memory-of-the-backward-pass).
//!
//! - [`banded_attention`]: attention in bands of query rows. Composed from burn's ops,
//!   `softmax(s)·v` keeps score-sized tensors for the backward pass: one at the least (the
//!   probabilities), 805 MB per global block of ViT-B at 1024 px. This op keeps its inputs, its
//!   output and one log-sum-exp per query row, and its backward pass recomputes the scores band
//!   by band, as the fused CPU kernel does tile by tile. Bands also keep every score tensor under
//!   a GPU buffer's size limit ([`MAX_SCORE_BYTES`]).
//! - [`gelu`]: exact GELU, keeping its input alone where `x·Φ(x)` composed keeps two tensors of
//!   the MLP's width.
//!
//! One backend extension, [`ComposedKernels`], on every backend the composed path runs on: the
//! forward passes alone on Flex and the cubecl backends, and under autodiff the nodes above,
//! whose backward passes run on the inner backend. The products go through [`super::product`]
//! and compute in the chosen precision.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, Backend, Dispatch, DispatchKindConversion, DispatchTensor, Flex, backend_extension,
};
use burn::tensor::Tensor;

use super::product;

/// The most bytes one score tensor takes; larger attention runs in bands of query rows. A GPU
/// buffer has a size limit: the scores of 12 heads of global attention over 64 × 64 tokens
/// (ViT-B at 1024 px) are 805 MB, and wgpu's default limit is 256 MiB.
const MAX_SCORE_BYTES: usize = 128 << 20;

/// `softmax(q·kᵀ/√hd + rel)·v` for `q` `[n, L, hd]` (unscaled), `k` and `v` `[n, M, hd]` over
/// a key grid of `kh × kw = M` tokens, with `rel[n, l, (y, x)] = rel_h[n, l, y] + rel_w[n, l, x]`
/// (`rel_h` `[n, L, kh]`, `rel_w` `[n, L, kw]`: SAM's decomposed relative positions, already
/// multiplied by the queries) → `[n, L, hd]`.
pub fn banded_attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    rel_h: Tensor<3>,
    rel_w: Tensor<3>,
) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as ComposedKernels>::banded_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        rel_h.into_dispatch(),
        rel_w.into_dispatch(),
    ))
}

/// Exact GELU, `x·Φ(x)`, on the composed path.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let shape = x.dims();
    let flat = x.reshape([shape.iter().product::<usize>()]);
    Tensor::<1>::from_dispatch(<Dispatch as ComposedKernels>::gelu(flat.into_dispatch()))
        .reshape(shape)
}

#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda")),
    Autodiff
)]
pub trait ComposedKernels: Backend {
    fn banded_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        rel_h: FloatTensor<Self>,
        rel_w: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// `x·Φ(x)` of a flat tensor.
    fn gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The ops on a backend without autodiff: the forward passes alone.
macro_rules! forward_only {
    ($backend:ty) => {
        impl ComposedKernels for $backend {
            fn banded_attention(
                q: FloatTensor<Self>,
                k: FloatTensor<Self>,
                v: FloatTensor<Self>,
                rel_h: FloatTensor<Self>,
                rel_w: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                let inputs = Inputs::wrap::<Self>([q, k, v, rel_h, rel_w]);
                primitive::<Self, 3>(forward(&inputs, MAX_SCORE_BYTES).0)
            }

            fn gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
                primitive::<Self, 1>(gelu_value(Tensor::from_primitive::<Self>(x)))
            }
        }
    };
}

forward_only!(Flex);
#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda"))]
forward_only!(burn::backend::Cube);

impl<B, C> ComposedKernels for Autodiff<B, C>
where
    B: Backend,
    C: CheckpointStrategy,
    DispatchTensor: DispatchKindConversion<B>,
{
    fn banded_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        rel_h: FloatTensor<Self>,
        rel_w: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let inputs = [q, k, v, rel_h, rel_w];
        let nodes = inputs.each_ref().map(|t| t.node());
        let inputs = inputs.map(|t| t.into_primitive());
        let (out, lse) = forward(&Inputs::wrap::<B>(inputs.clone()), MAX_SCORE_BYTES);
        let out = primitive::<B, 3>(out);
        match Recomputed.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let state = Saved {
                    inputs,
                    out: out.clone(),
                    lse: primitive::<B, 2>(lse),
                };
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let node = x.node();
        let x = x.into_primitive();
        let out = primitive::<B, 1>(gelu_value(Tensor::from_primitive::<B>(x.clone())));
        match GeluNode.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(x, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

/// The op's node in the autodiff graph.
#[derive(Debug)]
struct Recomputed;

/// What the backward pass reads: the inputs, the output and the log-sum-exp of each query row's
/// scores `[n, L]`, all token-sized.
#[derive(Clone, Debug)]
struct Saved<B: Backend> {
    inputs: [FloatTensor<B>; 5],
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
}

impl<B> Backward<B, 5> for Recomputed
where
    B: Backend,
    DispatchTensor: DispatchKindConversion<B>,
{
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let Saved { inputs, out, lse } = ops.state;
        let grad = Tensor::<3>::from_primitive::<B>(grads.consume::<B>(&ops.node));
        let input_grads = backward(
            &Inputs::wrap::<B>(inputs),
            Tensor::from_primitive::<B>(out),
            Tensor::from_primitive::<B>(lse),
            grad,
            MAX_SCORE_BYTES,
        );
        for (parent, grad) in ops.parents.into_iter().zip(input_grads) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, primitive::<B, 3>(grad));
            }
        }
    }
}

/// GELU's node in the autodiff graph: it keeps `x` and recomputes `Φ(x) + x·φ(x)`.
#[derive(Debug)]
struct GeluNode;

impl<B> Backward<B, 1> for GeluNode
where
    B: Backend,
    DispatchTensor: DispatchKindConversion<B>,
{
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = Tensor::<1>::from_primitive::<B>(ops.state);
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            let grad = Tensor::<1>::from_primitive::<B>(grad);
            let density = (x.clone().powi_scalar(2) * -0.5).exp()
                * (2.0 * std::f64::consts::PI).sqrt().recip();
            primitive::<B, 1>(grad * (normal_cdf(x.clone()) + x * density))
        });
    }
}

/// GELU's forward value, `x·Φ(x)`.
fn gelu_value(x: Tensor<1>) -> Tensor<1> {
    x.clone() * normal_cdf(x)
}

/// `Φ(x)`, the standard normal's distribution function, exact to f32 everywhere: burn's GPU
/// kernels compute erf with Abramowitz–Stegun 7.1.26, exact to 1.5e-7 absolute but not
/// relative, which in GELU's tail put the gradients 1e-4 to 4e-4 (relative) away from
/// PyTorch's on lavapipe. This is Numerical Recipes' erfc (relative error < 1.2e-7 for every x).
fn normal_cdf(x: Tensor<1>) -> Tensor<1> {
    const ERFC: [f64; 10] = [
        -1.26551223,
        1.00002368,
        0.37409196,
        0.09678418,
        -0.18628806,
        0.27886807,
        -1.13520398,
        1.48851587,
        -0.82215223,
        0.17087277,
    ];
    // Φ(x) = erfc(z) / 2 with z = −x/√2; erfc(z) = 2 − erfc(−z) for z < 0.
    let z = x * -std::f64::consts::FRAC_1_SQRT_2;
    let a = z.clone().abs();
    let t = (a.clone() * 0.5 + 1.0).recip();
    let mut poly = t.clone() * ERFC[9];
    for c in ERFC[1..9].iter().rev() {
        poly = (poly + *c) * t.clone();
    }
    let tail = t * (poly + ERFC[0] - a.clone() * a).exp();
    tail.clone().mask_where(z.lower_elem(0.0), tail.neg() + 2.0) * 0.5
}

/// The op's inputs as tensors of the backend they live on (no autodiff).
struct Inputs {
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    rel_h: Tensor<3>,
    rel_w: Tensor<3>,
}

impl Inputs {
    fn wrap<B: Backend>([q, k, v, rel_h, rel_w]: [FloatTensor<B>; 5]) -> Self
    where
        DispatchTensor: DispatchKindConversion<B>,
    {
        let [q, k, v, rel_h, rel_w] = [q, k, v, rel_h, rel_w].map(Tensor::from_primitive::<B>);
        Self {
            q,
            k,
            v,
            rel_h,
            rel_w,
        }
    }

    /// `1/√hd`, SAM's scale of the queries.
    fn scale(&self) -> f64 {
        (self.q.dims()[2] as f64).powf(-0.5)
    }

    /// The query rows of each band: as many as keep `[n, rows, M]` f32 scores under
    /// `max_bytes`, at least one.
    fn bands(&self, max_bytes: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
        let [n, l, _] = self.q.dims();
        let row_bytes = n * self.k.dims()[1] * size_of::<f32>();
        let band = (max_bytes / row_bytes.max(1)).clamp(1, l.max(1));
        (0..l).step_by(band).map(move |r0| r0..(r0 + band).min(l))
    }

    /// The scores of the query rows `rows`, `[n, rows, M]`, and those queries scaled.
    fn scores(&self, rows: std::ops::Range<usize>) -> (Tensor<3>, Tensor<3>) {
        let [n, _, hd] = self.q.dims();
        let (kh, kw) = (self.rel_h.dims()[2], self.rel_w.dims()[2]);
        let b = rows.len();
        let q = self.q.clone().slice([0..n, rows.clone(), 0..hd]) * self.scale();
        let s = product(q.clone(), self.k.clone().swap_dims(1, 2));
        let rel_h = self.rel_h.clone().slice([0..n, rows.clone(), 0..kh]);
        let rel_w = self.rel_w.clone().slice([0..n, rows, 0..kw]);
        // Added one after the other, in the order of Meta's `add_decomposed_rel_pos`.
        let s =
            s.reshape([n, b, kh, kw]) + rel_h.reshape([n, b, kh, 1]) + rel_w.reshape([n, b, 1, kw]);
        (s.reshape([n, b, kh * kw]), q)
    }
}

/// The output `[n, L, hd]` and the log-sum-exp of each query row's scores `[n, L]`.
fn forward(x: &Inputs, max_bytes: usize) -> (Tensor<3>, Tensor<2>) {
    let [n, l, _] = x.q.dims();
    let (outs, lses): (Vec<_>, Vec<_>) = x
        .bands(max_bytes)
        .map(|rows| {
            let (s, _) = x.scores(rows);
            let max = s.clone().max_dim(2); // [n, b, 1]
            let e = (s - max.clone()).exp();
            let sum = e.clone().sum_dim(2);
            // Normalised before the product, in the order of Meta's softmax and matmul.
            (product(e / sum.clone(), x.v.clone()), max + sum.log())
        })
        .unzip();
    (Tensor::cat(outs, 1), Tensor::cat(lses, 1).reshape([n, l]))
}

/// The gradients of `q`, `k`, `v`, `rel_h` and `rel_w` from the output's: per band, the
/// probabilities `p = exp(s − lse)` again, `dv += pᵀ·g`, `ds = p ⊙ (g·vᵀ − Σ g ⊙ out)`, then
/// `dq = ds·k/√hd`, `dk += dsᵀ·q/√hd`, and `ds` summed over the key grid's columns (`rel_h`) and
/// rows (`rel_w`).
fn backward(
    x: &Inputs,
    out: Tensor<3>,
    lse: Tensor<2>,
    grad: Tensor<3>,
    max_bytes: usize,
) -> [Tensor<3>; 5] {
    let [n, _, hd] = x.q.dims();
    let (kh, kw) = (x.rel_h.dims()[2], x.rel_w.dims()[2]);
    let scale = x.scale();
    // Σ_k p·(g·vᵀ) = g·outᵀ row by row: the softmax's correction term, [n, L, 1].
    let centre = (grad.clone() * out).sum_dim(2);
    let (mut dk, mut dv) = (x.k.zeros_like(), x.v.zeros_like());
    let mut dq = Vec::new();
    let mut drel = (Vec::new(), Vec::new());
    for rows in x.bands(max_bytes) {
        let b = rows.len();
        let (s, q) = x.scores(rows.clone());
        let lse = lse.clone().slice([0..n, rows.clone()]).reshape([n, b, 1]);
        let p = (s - lse).exp();
        let g = grad.clone().slice([0..n, rows.clone(), 0..hd]);
        dv = dv + product(p.clone().swap_dims(1, 2), g.clone());
        let centre = centre.clone().slice([0..n, rows, 0..1]);
        let ds = p * (product(g, x.v.clone().swap_dims(1, 2)) - centre);
        dq.push(product(ds.clone(), x.k.clone()) * scale);
        dk = dk + product(ds.clone().swap_dims(1, 2), q);
        let ds = ds.reshape([n, b, kh, kw]);
        drel.0.push(ds.clone().sum_dim(3).reshape([n, b, kh]));
        drel.1.push(ds.sum_dim(2).reshape([n, b, kw]));
    }
    [
        Tensor::cat(dq, 1),
        dk,
        dv,
        Tensor::cat(drel.0, 1),
        Tensor::cat(drel.1, 1),
    ]
}

/// A tensor of the backend `B` (no autodiff) as its primitive.
fn primitive<B: Backend, const D: usize>(t: Tensor<D>) -> FloatTensor<B>
where
    DispatchTensor: DispatchKindConversion<B>,
{
    t.try_into_primitive::<B>()
        .expect("the op computes on its inputs' backend")
}

#[cfg(test)]
mod tests {
    use burn::tensor::activation::softmax;
    use burn::tensor::{Device, TensorData};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn random(rng: &mut StdRng, shape: [usize; 3], device: &Device) -> Tensor<3> {
        let values: Vec<f32> = (0..shape.iter().product())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    fn relative_l2(got: &Tensor<3>, want: &Tensor<3>) -> f32 {
        let [got, want] = [got, want].map(|t| t.to_data().try_to_vec::<f32>().unwrap());
        let diff: f32 = got.iter().zip(&want).map(|(a, b)| (a - b).powi(2)).sum();
        (diff / want.iter().map(|b| b * b).sum::<f32>()).sqrt()
    }

    /// Values and every gradient, in one band and in bands of 3 query rows (7 rows: the last
    /// band is short), against burn's autodiff through `softmax(q·kᵀ/√hd + rel)·v`.
    #[test]
    fn bands_and_recomputed_gradients_match_autodiff_through_the_softmax() {
        let (n, l, hd, kh, kw) = (2, 7, 4, 3, 5);
        let device = Device::flex();
        let mut rng = StdRng::seed_from_u64(3);
        let shapes = [
            [n, l, hd],
            [n, kh * kw, hd],
            [n, kh * kw, hd],
            [n, l, kh],
            [n, l, kw],
        ];
        let inputs = shapes.map(|shape| random(&mut rng, shape, &device));
        let weights = random(&mut rng, [n, l, hd], &device);

        let ad = device.clone().autodiff();
        let [q, k, v, rel_h, rel_w] = inputs
            .clone()
            .map(|t| Tensor::from_data(t.to_data(), &ad).require_grad());
        let rel = rel_h.clone().reshape([n, l, kh, 1]) + rel_w.clone().reshape([n, l, 1, kw]);
        let s = (q.clone() * (hd as f64).powf(-0.5)).matmul(k.clone().swap_dims(1, 2))
            + rel.reshape([n, l, kh * kw]);
        let want_out = softmax(s, 2).matmul(v.clone());
        let grads = (want_out.clone() * Tensor::from_data(weights.to_data(), &ad))
            .sum()
            .backward();
        let want_grads = [q, k, v, rel_h, rel_w].map(|t| t.grad(&grads).unwrap());

        let [q, k, v, rel_h, rel_w] = inputs;
        let x = Inputs {
            q,
            k,
            v,
            rel_h,
            rel_w,
        };
        let row_bytes = n * kh * kw * size_of::<f32>();
        assert_eq!(x.bands(3 * row_bytes).count(), 3);
        for max_bytes in [MAX_SCORE_BYTES, 3 * row_bytes] {
            let (out, lse) = forward(&x, max_bytes);
            assert!(relative_l2(&out, &want_out.clone().inner()) < 1e-6);
            let got = backward(&x, out, lse, weights.clone(), max_bytes);
            for (i, (got, want)) in got.iter().zip(&want_grads).enumerate() {
                let err = relative_l2(got, want);
                assert!(err < 1e-5, "input {i}, {max_bytes} bytes a band: {err:e}");
            }
        }
    }
}
