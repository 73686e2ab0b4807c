//! What a PEFT configuration adds to the image encoder: building its modules (from a state dict,
//! or declared only), drawing fresh ones, and the two places an encoder block calls them. A new
//! method registers here: a [`BlockModules`] variant, its arm in [`BlockModules::load`], and its
//! hooks.

use burn::module::Module;
use burn::tensor::Tensor;

use super::adaptformer::Adapter;
use super::cobot::{CobotShared, lora_columns, module_column};
use super::lora::LoraQv;
use super::{BaseMethod, PeftConfig};
use crate::checkpoint::StateDict;
use crate::nn::init::{Declared, draw_all};
use crate::nn::params::Origin;
use crate::nn::weights::{ModelLoadError, Weights};

/// The modules a method adds to one encoder block.
#[derive(Module, Debug)]
pub enum BlockModules {
    /// LoRA on the q and v columns of the qkv projection.
    Lora(LoraQv),
    /// An AdaptFormer branch beside the MLP.
    Adapter(Adapter),
}

impl BlockModules {
    /// Block `block`'s modules under `cfg` for an encoder of width `c`; `None` for a method that
    /// adds none.
    pub fn load(
        w: &mut Weights,
        block: usize,
        c: usize,
        cfg: &PeftConfig,
    ) -> Result<Option<Self>, ModelLoadError> {
        Ok(match cfg.method.base {
            BaseMethod::Lora => Some(Self::Lora(LoraQv::load(w, block, c, cfg)?)),
            BaseMethod::Adapter => Some(Self::Adapter(Adapter::load(w, block, c, cfg)?)),
            BaseMethod::Freeze | BaseMethod::Lightweight | BaseMethod::Full => None,
        })
    }

    /// The low-rank addend `(z [n, r'], up [3C, r'])` of block `block`'s qkv projection for its
    /// input rows `x` `[n, C]` (`Linear::forward_low_rank` adds `z·upᵀ`), when the method acts
    /// there. `cross_block`: COBOT's `[k, T]` coefficients, one column per module.
    pub fn qkv_addend(
        &self,
        x: &Tensor<2>,
        block: usize,
        cross_block: Option<&Tensor<2>>,
    ) -> Option<(Tensor<2>, Tensor<2>)> {
        match self {
            // LoRA block i owns COBOT modules 2i (q) and 2i + 1 (v).
            Self::Lora(lora) => {
                let columns = cross_block.map(|m| lora_columns(m, block));
                Some(lora.qkv_factors(x.clone(), columns))
            }
            Self::Adapter(_) => None,
        }
    }

    /// What the method adds to block `block`'s MLP output, for the MLP's input rows `n` `[n, C]`
    /// (the norm2 output), when it acts there.
    pub fn mlp_addend(
        &self,
        n: &Tensor<2>,
        block: usize,
        cross_block: Option<&Tensor<2>>,
    ) -> Option<Tensor<2>> {
        match self {
            Self::Lora(_) => None,
            // An adapter block i owns COBOT module i.
            Self::Adapter(adapter) => {
                let column = cross_block.map(|m| module_column(m, block));
                Some(adapter.forward(n.clone(), column))
            }
        }
    }

    /// The LoRA wrapper, for merging.
    pub fn lora(&self) -> Option<&LoraQv> {
        match self {
            Self::Lora(lora) => Some(lora),
            Self::Adapter(_) => None,
        }
    }
}

/// The PEFT modules of one configuration for a ViT of width `c` with `depth` blocks, before
/// `Sam::attach_peft` puts them in place.
pub struct PeftModules {
    /// COBOT's `FacT_c` and `FacT_p`, shared by all blocks.
    pub shared: Option<CobotShared>,
    /// Each block's modules.
    pub blocks: Vec<Option<BlockModules>>,
}

impl PeftModules {
    /// Declared in the order fresh tensors are drawn ([`initial_state`]).
    pub fn load(
        w: &mut Weights,
        cfg: &PeftConfig,
        c: usize,
        depth: usize,
    ) -> Result<Self, ModelLoadError> {
        let shared = if cfg.has_shared() {
            Some(CobotShared::load(w, cfg, depth)?)
        } else {
            None
        };
        let blocks = (0..depth)
            .map(|i| BlockModules::load(w, i, c, cfg))
            .collect::<Result<_, _>>()?;
        Ok(Self { shared, blocks })
    }

    /// Every PEFT tensor of `cfg` for a ViT of width `c` and `depth` blocks (key, shape,
    /// initialiser), without making any.
    pub fn declarations(cfg: &PeftConfig, c: usize, depth: usize) -> Vec<Declared> {
        let device = burn::tensor::Device::flex();
        let mut w = Weights::declare(&device, Origin::Peft);
        Self::load(&mut w, cfg, c, depth).expect("declaring loads nothing that can fail");
        w.declarations()
    }
}

/// Fresh PEFT tensors for an encoder of width `c` and `depth` blocks, drawn on the host from
/// `seed` with the authors' initialisations (docs/methods.md#initial-values), under their
/// official key names.
pub fn initial_state(cfg: &PeftConfig, c: usize, depth: usize, seed: u64) -> StateDict {
    draw_all(&PeftModules::declarations(cfg, c, depth), seed)
}
