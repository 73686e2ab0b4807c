//! AdaptFormer as the authors' code computes it (docs/methods.md#adaptformer-adapter): a bottleneck branch parallel to the
//! block's MLP, reading the norm2 output, optionally with COBOT (docs/methods.md#adapter-with-cobot).

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use super::cobot::{Head, scale};
use super::{PeftConfig, Site};
use crate::nn::init::Init;
use crate::nn::layers::{LayerNorm, Linear};
use crate::nn::weights::{ModelLoadError, Weights};

/// Per-block COBOT tensors of an adapter: `gamma` `[V]` and the head `FacT_d1`.
#[derive(Module, Debug)]
pub struct AdapterCobot {
    pub gamma: Param<Tensor<1>>,
    pub head: Head,
}

#[derive(Module, Debug)]
pub struct Adapter {
    pub norm: LayerNorm,
    pub down: Linear,
    pub up: Linear,
    pub cobot: Option<AdapterCobot>,
    /// After the ReLU; active only on an autodiff device (training), as `nn.Dropout` in train mode.
    pub dropout: Dropout,
}

impl Adapter {
    /// Loads the adapter of `image_encoder.blocks.{block}.mlp`.
    pub fn load(
        w: &mut Weights,
        block: usize,
        c: usize,
        cfg: &PeftConfig,
    ) -> Result<Self, ModelLoadError> {
        let p = Site::Mlp.prefix(block);
        let v = cfg.bottleneck;
        // The authors' initialisation: a Kaiming-uniform down projection, everything else zero
        // (the branch adds nothing at step 0).
        let zero = Init::Constant(0.0);
        let down_init = Init::kaiming_uniform(c);
        let norm = LayerNorm::load(w, &format!("{p}.adapter_layer_norm_before"), c, 1e-5)?;
        let down = Linear::load_with(w, &format!("{p}.down_proj"), [c, v], down_init, Some(zero))?;
        let up = Linear::load_with(w, &format!("{p}.up_proj"), [v, c], zero, Some(zero))?;
        let cobot = if cfg.method.cobot() {
            Some(AdapterCobot {
                gamma: w.param(&format!("{p}.gamma"), [v], Init::Constant(1.0))?,
                head: Head::load(w, &format!("{p}.FacT_d1"), v, cfg.head)?,
            })
        } else {
            None
        };
        Ok(Self {
            norm,
            down,
            up,
            cobot,
            dropout: DropoutConfig::new(cfg.adapter_dropout).init(),
        })
    }

    pub fn forward(&self, n: Tensor<2>, cross_block: Option<Tensor<1>>) -> Tensor<2> {
        let h = self.down.forward(self.norm.forward(n));
        let h = match &self.cobot {
            None => h,
            Some(cobot) => cobot.head.forward(scale(h, cross_block, cobot.gamma.val())),
        };
        self.up.forward(self.dropout.forward(relu(h)))
    }
}
