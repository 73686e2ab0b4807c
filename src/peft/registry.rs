//! Every method is registered here, once: what its base can do (`BaseMethod`: its name, the
//! layers it wraps (`Site`), whether COBOT can orchestrate it, whether it folds) and the modules it adds
//! to an encoder block (`BlockModules`: how they load and the hooks a block calls). A new method
//! adds its file beside this one, a variant of each enum and their arms, which the compiler
//! lists (docs/extending.md#adding-a-peft-method).

use burn::module::Module;
use burn::tensor::Tensor;

use super::PeftConfig;
use super::adaptformer::Adapter;
use super::cobot::{lora_columns, module_column};
use super::lora::LoraQv;
use crate::nn::weights::{ModelLoadError, Weights};

/// A way of adapting SAM before any orchestration: what it adds to the image encoder, where, and
/// what trains (docs/methods.md#what-trains, paper semantics: the prompt encoder stays frozen
/// except in `full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseMethod {
    /// Nothing trains (evaluation of the pretrained model).
    Freeze,
    /// The mask decoder trains.
    Lightweight,
    Lora,
    Adapter,
    /// Every SAM tensor trains.
    Full,
}

impl BaseMethod {
    /// Every base method, in the order commands list them (the compiler does not check that a new
    /// variant is here: its name would not parse).
    pub const ALL: [BaseMethod; 5] = [
        BaseMethod::Freeze,
        BaseMethod::Lightweight,
        BaseMethod::Lora,
        BaseMethod::Adapter,
        BaseMethod::Full,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BaseMethod::Freeze => "freeze",
            BaseMethod::Lightweight => "lightweight",
            BaseMethod::Lora => "lora",
            BaseMethod::Adapter => "adapter",
            BaseMethod::Full => "full",
        }
    }

    /// The layers of each encoder block the method's modules wrap (none: it adds none; a
    /// method such as SSF, which scales and shifts several layers, lists each).
    pub fn sites(self) -> &'static [Site] {
        match self {
            BaseMethod::Lora => &[Site::Qkv],
            BaseMethod::Adapter => &[Site::Mlp],
            BaseMethod::Freeze | BaseMethod::Lightweight | BaseMethod::Full => &[],
        }
    }

    /// The site of the bottleneck COBOT scales and mixes, for an [`BaseMethod::orchestrable`]
    /// method (its one site).
    pub fn bottleneck_site(self) -> Option<Site> {
        match self.sites() {
            [site] if self.orchestrable() => Some(*site),
            _ => None,
        }
    }

    /// Whether COBOT can orchestrate it: it has a bottleneck in every block (at its one site),
    /// which COBOT scales and mixes.
    pub fn orchestrable(self) -> bool {
        match self {
            BaseMethod::Lora | BaseMethod::Adapter => true,
            BaseMethod::Freeze | BaseMethod::Lightweight | BaseMethod::Full => false,
        }
    }

    /// Whether `merge` can fold it into SAM's own weights: its encoder modules (if any) are
    /// linear maps of their input. A new method is not foldable until its merge is written.
    pub fn foldable(self) -> bool {
        match self {
            BaseMethod::Freeze | BaseMethod::Lightweight | BaseMethod::Full => true,
            BaseMethod::Lora => true,
            // The adapter branch has a ReLU.
            BaseMethod::Adapter => false,
        }
    }
}

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

/// The encoder blocks' key prefix in SAM's checkpoints (docs/methods.md#key-names).
const ENCODER_BLOCKS: &str = "image_encoder.blocks";

/// The layer of an encoder block a method wraps; its key under `image_encoder.blocks.{i}.`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// The fused q/k/v projection (LoRA): two COBOT modules per block, q and v.
    Qkv,
    /// The MLP (AdaptFormer, in parallel to it): one COBOT module per block.
    Mlp,
}

impl Site {
    /// Its key inside a block.
    pub fn key(self) -> &'static str {
        match self {
            Site::Qkv => "attn.qkv",
            Site::Mlp => "mlp",
        }
    }

    /// The key prefix of the layer in block `block` (`image_encoder.blocks.3.attn.qkv`), under
    /// which the method's tensors of that block are named.
    pub fn prefix(self, block: usize) -> String {
        format!("{ENCODER_BLOCKS}.{block}.{}", self.key())
    }

    /// How many COBOT modules (bottlenecks) a block has at this site.
    pub fn modules_per_block(self) -> usize {
        match self {
            Site::Qkv => 2,
            Site::Mlp => 1,
        }
    }
}
