//! The few building blocks SAM needs, holding weights in PyTorch's key layout.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::ops::ConvOptions;

use super::init::Init;
use super::weights::{ModelLoadError, Weights};

/// `y = x·Wᵀ + b`, with `W` in PyTorch's `[out, in]` layout (the matmul reads the transposed
/// view without a copy).
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
}

impl Linear {
    /// Loads `{prefix}.weight` (`[out, in]`) and, if `bias`, `{prefix}.bias`, both starting as
    /// PyTorch's `nn.Linear` does.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Self, ModelLoadError> {
        let init = Init::fan_in_uniform(&[d_out, d_in]);
        Self::load_with(w, prefix, [d_in, d_out], init, bias.then_some(init))
    }

    /// [`Linear::load`] with other initialisers (`bias: None`: no bias).
    pub fn load_with(
        w: &mut Weights,
        prefix: &str,
        [d_in, d_out]: [usize; 2],
        weight: Init,
        bias: Option<Init>,
    ) -> Result<Self, ModelLoadError> {
        Ok(Self {
            weight: w.param(&format!("{prefix}.weight"), [d_out, d_in], weight)?,
            bias: match bias {
                Some(init) => Some(w.param(&format!("{prefix}.bias"), [d_out], init)?),
                None => None,
            },
        })
    }

    /// Over the last axis of `x` `[.., in]` (see `linear_over_last_axis`).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear_over_last_axis(x, self.weight.val(), self.bias.as_ref().map(Param::val))
    }

    /// `x·Wᵀ + b + z·upᵀ` for `x` `[n, in]` and a low-rank addend (`z` `[n, r]`, `up`
    /// `[out, r]`), added as the output is written.
    pub fn forward_low_rank(&self, x: Tensor<2>, z: Tensor<2>, up: Tensor<2>) -> Tensor<2> {
        let weight = self.weight.val();
        let bias = match &self.bias {
            Some(bias) => bias.val(),
            None => Tensor::zeros([weight.dims()[0]], &weight.device()),
        };
        crate::kernels::linear_low_rank(x, weight, bias, z, up)
    }
}

/// `x·Wᵀ + b` over the last axis of `x` `[.., in]`, its leading dims folded into rows first:
/// one `[rows, in] · [in, out]` product. (burn may otherwise keep them as a batch of small
/// products that each repack the weight; at 512 px that packing was a fifth of a training step.)
fn linear_over_last_axis<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let mut dims = x.dims();
    let rows = x.reshape([-1, dims[D - 1] as i64]);
    let y = crate::kernels::linear(rows, weight, bias);
    dims[D - 1] = y.dims()[1];
    y.reshape(dims)
}

/// LayerNorm over the last axis (affine).
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub eps: f64,
}

impl LayerNorm {
    /// Loads `{prefix}.weight` and `{prefix}.bias` (`[dim]`, starting at 1 and 0).
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        dim: usize,
        eps: f64,
    ) -> Result<Self, ModelLoadError> {
        Ok(Self {
            weight: w.param(&format!("{prefix}.weight"), [dim], Init::Constant(1.0))?,
            bias: w.param(&format!("{prefix}.bias"), [dim], Init::Constant(0.0))?,
            eps,
        })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        crate::kernels::layer_norm(x, self.weight.val(), self.bias.val(), self.eps)
    }

    /// SAM's LayerNorm2d: normalises `[B, C, H, W]` over C.
    pub fn forward_channels_first(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward(x.permute([0, 2, 3, 1])).permute([0, 3, 1, 2])
    }
}

/// A square 2-D convolution with symmetric padding.
#[derive(Module, Debug)]
pub struct Conv2d {
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    /// Loads `{prefix}.weight` of shape `[c_out, c_in, k, k]` and, if `bias`, `{prefix}.bias`,
    /// both starting as PyTorch's `nn.Conv2d` does.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        [c_out, c_in, k]: [usize; 3],
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Result<Self, ModelLoadError> {
        let shape = [c_out, c_in, k, k];
        let init = Init::fan_in_uniform(&shape);
        Ok(Self {
            weight: w.param(&format!("{prefix}.weight"), shape, init)?,
            bias: if bias {
                Some(w.param(&format!("{prefix}.bias"), [c_out], init)?)
            } else {
                None
            },
            stride,
            padding,
        })
    }

    /// A 1×1 convolution (stride 1, no padding) on channels-last `x` `[.., C_in]` →
    /// `[.., C_out]`: a linear layer over the channels, on the parallel linear kernel.
    pub fn forward_pointwise<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let [c_out, c_in, kh, kw] = self.weight.dims();
        assert!(
            [kh, kw, self.stride] == [1, 1, 1] && self.padding == 0,
            "forward_pointwise needs a 1×1 convolution of stride 1 without padding"
        );
        let weight = self.weight.val().reshape([c_out, c_in]);
        linear_over_last_axis(x, weight, self.bias.as_ref().map(Param::val))
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let (s, p) = (self.stride, self.padding);
        crate::kernels::conv2d_in_precision(
            x,
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
            ConvOptions::new([s, s], [p, p], [1, 1], 1),
        )
    }
}

/// SAM's `MLP`: linear layers with ReLU between them and none after the last.
#[derive(Module, Debug)]
pub struct Mlp {
    pub layers: Vec<Linear>,
}

impl Mlp {
    /// Loads `{prefix}.layers.{0..depth}`: `d_in` → `d_hidden` → … → `d_out`.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        depth: usize,
        [d_in, d_hidden, d_out]: [usize; 3],
    ) -> Result<Self, ModelLoadError> {
        let layers = (0..depth)
            .map(|i| {
                let a = if i == 0 { d_in } else { d_hidden };
                let b = if i + 1 == depth { d_out } else { d_hidden };
                Linear::load(w, &format!("{prefix}.layers.{i}"), a, b, true)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { layers })
    }

    pub fn forward<const D: usize>(&self, mut x: Tensor<D>) -> Tensor<D> {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        x
    }
}
