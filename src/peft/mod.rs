//! Parameter-efficient fine-tuning inside SAM's image encoder (docs/methods.md#methods, #cobot): one module per
//! method, all configured by [`PeftConfig`] and loaded by the official key names of docs/methods.md#key-names.
//! A [`Method`] is a [`BaseMethod`] with or without COBOT's orchestration; every base is
//! registered in [`registry`] (what it can do: the layers it wraps, whether it folds, whether
//! COBOT can orchestrate it; and the hooks an encoder block calls its modules through), and
//! [`modules`] is the one place that builds a configuration's modules.

pub mod adaptformer;
pub mod cobot;
pub mod lora;
pub mod modules;
pub mod quaternion;
pub mod registry;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use modules::{PeftModules, initial_state};
pub use registry::{BaseMethod, BlockModules, Site};

/// A fine-tuning method: a base method, optionally orchestrated across blocks by COBOT
/// (docs/methods.md#cobot). Written by its name (`lora`, `lora+cobot`) in files and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Method {
    pub base: BaseMethod,
    /// COBOT's coefficients, relation matrix and head on the base's bottlenecks.
    pub cobot: bool,
}

impl Method {
    pub const FREEZE: Method = Method::plain(BaseMethod::Freeze);
    pub const LIGHTWEIGHT: Method = Method::plain(BaseMethod::Lightweight);
    pub const LORA: Method = Method::plain(BaseMethod::Lora);
    pub const ADAPTER: Method = Method::plain(BaseMethod::Adapter);
    pub const FULL: Method = Method::plain(BaseMethod::Full);
    /// The paper's method.
    pub const LORA_COBOT: Method = Method::orchestrated(BaseMethod::Lora);
    pub const ADAPTER_COBOT: Method = Method::orchestrated(BaseMethod::Adapter);

    pub const fn plain(base: BaseMethod) -> Self {
        Self { base, cobot: false }
    }

    /// `base` with COBOT (which only an [`BaseMethod::orchestrable`] base can have).
    pub const fn orchestrated(base: BaseMethod) -> Self {
        Self { base, cobot: true }
    }

    /// Every method: each base, then each orchestrable base with COBOT.
    pub fn all() -> Vec<Method> {
        let plain = BaseMethod::ALL.into_iter().map(Method::plain);
        let orchestrated = BaseMethod::ALL
            .into_iter()
            .filter(|b| b.orchestrable())
            .map(Method::orchestrated);
        plain.chain(orchestrated).collect()
    }

    /// `lora`, `lora+cobot`, ….
    pub fn name(self) -> String {
        let base = self.base.name();
        if self.cobot {
            format!("{base}+cobot")
        } else {
            base.to_string()
        }
    }

    /// Whether the method puts LoRA on the qkv projections.
    pub fn lora(self) -> bool {
        self.base == BaseMethod::Lora
    }

    /// Whether the method puts an AdaptFormer adapter beside the MLPs.
    pub fn adapter(self) -> bool {
        self.base == BaseMethod::Adapter
    }

    pub fn cobot(self) -> bool {
        self.cobot
    }

    /// Whether the image encoder stays as the base has it (no tensor of it trains, no module
    /// is added to it), so its embeddings can be computed once.
    pub fn encoder_frozen(self) -> bool {
        matches!(self.base, BaseMethod::Freeze | BaseMethod::Lightweight)
    }

    /// Whether `merge` can fold the method into SAM's own weights (COBOT keeps a base linear).
    pub fn foldable(self) -> bool {
        self.base.foldable()
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl TryFrom<String> for Method {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Method> for String {
    fn from(m: Method) -> String {
        m.name()
    }
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Method::all()
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Method::all().iter().map(|m| m.name()).collect();
                format!(
                    "unknown method '{s}' (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// COBOT's coefficient sets (paper Table 1 "CoS").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Coefficients {
    /// Cross-block (`FacT_c @ FacT_p`) and per-block (`gamma`) sets: `h ⊙ m + g ⊙ h`.
    Dual,
    /// The per-block set alone: `g ⊙ h` (no `FacT_c`, no `FacT_p`).
    Block,
}

/// The relation matrix `FacT_p` (paper Table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Relation {
    /// Identity at start, trained.
    Learnable,
    /// Identity, frozen: no relation across blocks.
    Identity,
    /// Random U[0, 1), frozen.
    Fixed,
}

/// The map after the coefficients (paper Table 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum HeadKind {
    /// The hyper-complex (quaternion) layer.
    Quaternion,
    /// No head.
    None,
    /// A plain k×k linear layer.
    Linear,
}

/// How LoRA's matrices start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LoraInit {
    /// Xavier-normal A and B, as the authors' code (the delta is non-zero at step 0).
    Xavier,
    /// Xavier-normal A, zero B, as the LoRA paper (the delta starts at zero).
    ZeroB,
}

crate::settings! {
    /// A method and its sizes and switches: what `train`, `params`, `bench` and `init` build,
    /// and what every adapter file records (as JSON). The defaults are the paper's: lora+cobot,
    /// r = 4, V = 16, full COBOT.
    pub struct PeftConfig;
    /// The PEFT settings as flags, shared by the commands that build a method.
    pub struct PeftFlags;
    /// Fine-tuning method: freeze, lightweight (the mask decoder), full, lora, adapter,
    /// lora+cobot (the paper's) or adapter+cobot.
    method: Method = Method::LORA_COBOT,
    /// LoRA rank r (lora, lora+cobot).
    rank: usize = 4,
    /// AdaptFormer bottleneck width V (adapter, adapter+cobot).
    bottleneck: usize = 16,
    /// How LoRA's matrices start.
    lora_init: LoraInit = LoraInit::Xavier,
    /// COBOT's coefficient sets (paper Table 1).
    coefficients: Coefficients = Coefficients::Dual,
    /// COBOT's relation matrix across blocks (paper Table 2).
    relation: Relation = Relation::Learnable,
    /// COBOT's map after the coefficients (paper Table 3).
    head: HeadKind = HeadKind::Quaternion,
    /// Adapter dropout while training, in [0, 1) (the authors' 0.1).
    adapter_dropout: f64 = 0.1,
}

impl PeftFlags {
    /// The configuration the flags give (the defaults where none is given), checked.
    pub fn config(&self) -> Result<PeftConfig, String> {
        let cfg: PeftConfig = crate::settings::from_flags(self.table());
        cfg.validate()?;
        Ok(cfg)
    }
}

impl PeftConfig {
    /// `method` with the paper's sizes and switches (the defaults of every command).
    pub fn new(method: Method) -> Self {
        Self {
            method,
            ..Self::default()
        }
    }

    /// The bottleneck width COBOT works on: r at the qkv projection (LoRA), V at the MLP
    /// (adapters); 0 for a method without modules.
    pub fn cobot_width(&self) -> usize {
        match self.method.base.bottleneck_site() {
            Some(Site::Qkv) => self.rank,
            Some(Site::Mlp) => self.bottleneck,
            None => 0,
        }
    }

    /// Number of COBOT modules T over `depth` blocks: q and v of every block for LoRA, one per
    /// block for adapters.
    pub fn cobot_modules(&self, depth: usize) -> usize {
        depth
            * self
                .method
                .base
                .bottleneck_site()
                .map_or(0, Site::modules_per_block)
    }

    /// Whether COBOT's shared `FacT_c` / `FacT_p` exist.
    pub fn has_shared(&self) -> bool {
        self.method.cobot() && self.coefficients == Coefficients::Dual
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.method.cobot && !self.method.base.orchestrable() {
            return Err(format!(
                "COBOT orchestrates the bottleneck modules of a method; '{}' has none",
                self.method.base.name()
            ));
        }
        let k = self.cobot_width();
        if self.method.lora() && self.rank == 0 {
            return Err("the LoRA rank must be at least 1".into());
        }
        if self.method.adapter() && self.bottleneck == 0 {
            return Err("the adapter bottleneck must be at least 1".into());
        }
        if self.method.cobot() && self.head == HeadKind::Quaternion && !k.is_multiple_of(4) {
            return Err(format!(
                "the quaternion head needs a width divisible by 4, got {k} (rank or bottleneck)"
            ));
        }
        if !(0.0..1.0).contains(&self.adapter_dropout) {
            return Err(format!(
                "adapter dropout {} is not in [0, 1)",
                self.adapter_dropout
            ));
        }
        Ok(())
    }

    /// Checks the sizes against an image encoder of width `embed_dim`: a LoRA rank or adapter
    /// bottleneck wider than the layers it adapts adds parameters without adding capacity (and a
    /// typo such as `--rank 100000` would allocate its square in COBOT's tensors).
    pub fn check_fits(&self, embed_dim: usize) -> Result<(), String> {
        if self.method.lora() && self.rank > embed_dim {
            return Err(format!(
                "--rank {}: at most the encoder's width {embed_dim}",
                self.rank
            ));
        }
        if self.method.adapter() && self.bottleneck > embed_dim {
            return Err(format!(
                "--bottleneck {}: at most the encoder's width {embed_dim}",
                self.bottleneck
            ));
        }
        Ok(())
    }

    /// Whether the tensor `key` trains under this configuration. `peft` says whether it belongs
    /// to the PEFT modules rather than to SAM itself.
    pub fn is_trainable(&self, key: &str, peft: bool) -> bool {
        match self.method.base {
            BaseMethod::Freeze => false,
            BaseMethod::Full => {
                key != "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
            }
            BaseMethod::Lightweight => key.starts_with("mask_decoder."),
            _ if peft => !(key.ends_with(".FacT_p") && self.relation != Relation::Learnable),
            _ => key.starts_with("mask_decoder."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_methods_are_each_base_and_each_orchestrable_base_with_cobot() {
        let names: Vec<String> = Method::all().iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            [
                "freeze",
                "lightweight",
                "lora",
                "adapter",
                "full",
                "lora+cobot",
                "adapter+cobot"
            ]
        );
        for method in Method::all() {
            assert_eq!(method.name().parse::<Method>(), Ok(method));
        }
        let err = "full+cobot".parse::<Method>().unwrap_err();
        assert!(err.contains("unknown method 'full+cobot'"), "{err}");
        let unorchestrable = PeftConfig::new(Method::orchestrated(BaseMethod::Full));
        let err = unorchestrable.validate().unwrap_err();
        assert!(err.contains("'full' has none"), "{err}");
    }
}
