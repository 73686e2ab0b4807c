//! LoRA on the fused qkv projection, for q and v only (docs/methods.md#lora), optionally with COBOT (docs/methods.md#lora-with-cobot).

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use super::cobot::{Head, scale};
use super::{LoraInit, PeftConfig, Site};
use crate::kernels;
use crate::nn::init::Init;
use crate::nn::weights::{ModelLoadError, Weights};

/// Per-block COBOT tensors of a LoRA wrapper: `gamma` `[2r]` (q uses `[0, r)`, v `[r, 2r)`).
#[derive(Module, Debug)]
pub struct LoraCobot {
    pub gamma: Param<Tensor<1>>,
    pub head_q: Head,
    pub head_v: Head,
}

/// `Δq = B_q·head(scale(A_q·x))`, same for v; no α/r scaling, as the authors' code.
#[derive(Module, Debug)]
pub struct LoraQv {
    /// `[r, C]`, `[C, r]`, `[r, C]`, `[C, r]` (PyTorch Linear layout).
    pub a_q: Param<Tensor<2>>,
    pub b_q: Param<Tensor<2>>,
    pub a_v: Param<Tensor<2>>,
    pub b_v: Param<Tensor<2>>,
    pub cobot: Option<LoraCobot>,
}

impl LoraQv {
    /// Loads the wrapper of `image_encoder.blocks.{block}.attn.qkv`.
    pub fn load(
        w: &mut Weights,
        block: usize,
        c: usize,
        cfg: &PeftConfig,
    ) -> Result<Self, ModelLoadError> {
        let p = Site::Qkv.prefix(block);
        let r = cfg.rank;
        // The authors' initialisation: Xavier-normal A, and B Xavier-normal or zero.
        let b_init = match cfg.lora_init {
            LoraInit::Xavier => Init::xavier_normal([c, r]),
            LoraInit::ZeroB => Init::Constant(0.0),
        };
        let mut factor = |name: &str, shape: [usize; 2], init: Init| {
            w.param(&format!("{p}.{name}.weight"), shape, init)
        };
        let a_q = factor("linear_a_q", [r, c], Init::xavier_normal([r, c]))?;
        let b_q = factor("linear_b_q", [c, r], b_init)?;
        let a_v = factor("linear_a_v", [r, c], Init::xavier_normal([r, c]))?;
        let b_v = factor("linear_b_v", [c, r], b_init)?;
        let cobot = if cfg.method.cobot() {
            Some(LoraCobot {
                gamma: w.param(&format!("{p}.gamma"), [2 * r], Init::Constant(1.0))?,
                head_q: Head::load(w, &format!("{p}.FacT_d1"), r, cfg.head)?,
                head_v: Head::load(w, &format!("{p}.FacT_d2"), r, cfg.head)?,
            })
        } else {
            None
        };
        Ok(Self {
            a_q,
            b_q,
            a_v,
            b_v,
            cobot,
        })
    }

    pub fn deltas(
        &self,
        x: Tensor<2>,
        cross_block: Option<(Tensor<1>, Tensor<1>)>,
    ) -> (Tensor<2>, Tensor<2>) {
        let (z_q, z_v) = self.bottleneck(x, cross_block);
        (
            z_q.matmul(self.b_q.val().transpose()),
            z_v.matmul(self.b_v.val().transpose()),
        )
    }

    /// The whole qkv delta `[Δq, 0, Δv]` `[n, 3C]` as factors `z·upᵀ`, for a linear layer that
    /// adds it as it writes its output: `z = [z_q, z_v]` `[n, 2r]` and
    /// `up = [[B_q, 0], [0, 0], [0, B_v]]` `[3C, 2r]`.
    pub fn qkv_factors(
        &self,
        x: Tensor<2>,
        cross_block: Option<(Tensor<1>, Tensor<1>)>,
    ) -> (Tensor<2>, Tensor<2>) {
        let (z_q, z_v) = self.bottleneck(x, cross_block);
        let (b_q, b_v) = (self.b_q.val(), self.b_v.val());
        let zeros = b_q.zeros_like();
        let up = Tensor::cat(
            vec![
                Tensor::cat(vec![b_q, zeros.clone()], 1),
                Tensor::cat(vec![zeros.clone(), zeros.clone()], 1),
                Tensor::cat(vec![zeros, b_v], 1),
            ],
            0,
        );
        (Tensor::cat(vec![z_q, z_v], 1), up)
    }

    /// `(z_q, z_v)` `[n, r]`: `head(scale(A·x))` for q and v (`A·x` alone without COBOT).
    fn bottleneck(
        &self,
        x: Tensor<2>,
        cross_block: Option<(Tensor<1>, Tensor<1>)>,
    ) -> (Tensor<2>, Tensor<2>) {
        // One product for both: `[n, 2r]`.
        let a = Tensor::cat(vec![self.a_q.val(), self.a_v.val()], 0);
        let h = kernels::linear(x, a, None);
        let [n, r2] = h.dims();
        let r = r2 / 2;
        let h_q = h.clone().slice([0..n, 0..r]);
        let h_v = h.slice([0..n, r..r2]);
        match &self.cobot {
            None => (h_q, h_v),
            Some(cobot) => {
                let gamma = cobot.gamma.val();
                let (m_q, m_v) = cross_block.unzip();
                let u_q = scale(h_q, m_q, gamma.clone().slice(0..r));
                let u_v = scale(h_v, m_v, gamma.slice(r..2 * r));
                (cobot.head_q.forward(u_q), cobot.head_v.forward(u_v))
            }
        }
    }
}
