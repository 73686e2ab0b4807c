//! What a PEFT configuration adds to the image encoder: building its modules (from a state dict,
//! or declared only) and drawing fresh ones. The modules of each method and the hooks an
//! encoder block calls are registered in [`super::registry`].

use super::cobot::CobotShared;
use super::{BlockModules, PeftConfig};
use crate::checkpoint::StateDict;
use crate::nn::init::{Declared, draw_all};
use crate::nn::params::Origin;
use crate::nn::weights::{ModelLoadError, Weights};

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
