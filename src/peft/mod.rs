//! Parameter-efficient fine-tuning inside SAM's image encoder (docs/methods.md#methods, #cobot): one module per
//! method, all configured by [`PeftConfig`] and loaded by the official key names of docs/methods.md#key-names.

pub mod adapter;
pub mod cobot;
pub mod count;
pub mod init;
pub mod lora;
pub mod merge;
pub mod quaternion;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::nn::weights::{ModelLoadError, Weights};
use cobot::Head;
use quaternion::QuaternionLinear;

/// What trains (docs/methods.md#what-trains, paper semantics: the prompt encoder stays frozen except in `full`).
/// Written by its name (`lora+cobot`) in files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Method {
    /// Nothing trains (evaluation of the pretrained model).
    Freeze,
    /// The mask decoder trains.
    Lightweight,
    Lora,
    Adapter,
    /// Every SAM tensor trains.
    Full,
    LoraCobot,
    AdapterCobot,
}

impl Method {
    pub const ALL: [Method; 7] = [
        Method::Freeze,
        Method::Lightweight,
        Method::Lora,
        Method::Adapter,
        Method::Full,
        Method::LoraCobot,
        Method::AdapterCobot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Freeze => "freeze",
            Method::Lightweight => "lightweight",
            Method::Lora => "lora",
            Method::Adapter => "adapter",
            Method::Full => "full",
            Method::LoraCobot => "lora+cobot",
            Method::AdapterCobot => "adapter+cobot",
        }
    }

    pub fn lora(self) -> bool {
        matches!(self, Method::Lora | Method::LoraCobot)
    }

    pub fn adapter(self) -> bool {
        matches!(self, Method::Adapter | Method::AdapterCobot)
    }

    pub fn cobot(self) -> bool {
        matches!(self, Method::LoraCobot | Method::AdapterCobot)
    }

    /// Whether the image encoder stays as the base has it (no tensor of it trains, no module
    /// is added to it), so its embeddings can be computed once.
    pub fn encoder_frozen(self) -> bool {
        matches!(self, Method::Freeze | Method::Lightweight)
    }

    /// Where in each encoder block the method's modules sit (`None`: it has none).
    pub fn site(self) -> Option<Site> {
        if self.lora() {
            Some(Site::Qkv)
        } else if self.adapter() {
            Some(Site::Mlp)
        } else {
            None
        }
    }

    /// Whether `merge` can fold the method into SAM's own weights: its encoder modules (if any)
    /// are linear maps of their input. A new method is not foldable until its merge is written.
    pub fn foldable(self) -> bool {
        match self {
            Method::Freeze | Method::Lightweight | Method::Full => true,
            Method::Lora | Method::LoraCobot => true,
            // The adapter branch has a ReLU.
            Method::Adapter | Method::AdapterCobot => false,
        }
    }
}

/// The layer of an encoder block a method wraps; its key under `image_encoder.blocks.{i}.`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// The fused q/k/v projection (LoRA).
    Qkv,
    /// The MLP (AdaptFormer, in parallel to it).
    Mlp,
}

impl Site {
    pub fn key(self) -> &'static str {
        match self {
            Site::Qkv => "attn.qkv",
            Site::Mlp => "mlp",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
        m.name().to_string()
    }
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Method::ALL.iter().map(|m| m.name()).collect();
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeftConfig {
    pub method: Method,
    /// LoRA rank r.
    pub rank: usize,
    /// Adapter bottleneck V.
    pub bottleneck: usize,
    pub lora_init: LoraInit,
    pub coefficients: Coefficients,
    pub relation: Relation,
    pub head: HeadKind,
    /// Adapter dropout while training (the authors' 0.1).
    pub adapter_dropout: f64,
}

/// The paper's method, lora+cobot, with its sizes and switches.
impl Default for PeftConfig {
    fn default() -> Self {
        Self::new(Method::LoraCobot)
    }
}

impl PeftConfig {
    /// The paper's defaults for `method`: r = 4, V = 16, full COBOT.
    /// `method` with the paper's sizes and switches (the defaults of every command).
    pub fn new(method: Method) -> Self {
        Self {
            method,
            rank: 4,
            bottleneck: 16,
            lora_init: LoraInit::Xavier,
            coefficients: Coefficients::Dual,
            relation: Relation::Learnable,
            head: HeadKind::Quaternion,
            adapter_dropout: 0.1,
        }
    }

    /// The bottleneck width COBOT works on: r for LoRA, V for adapters.
    pub fn cobot_width(&self) -> usize {
        if self.method.lora() {
            self.rank
        } else {
            self.bottleneck
        }
    }

    /// Number of COBOT modules T: q and v of every block for LoRA, one per block for adapters.
    pub fn cobot_modules(&self, depth: usize) -> usize {
        if self.method.lora() { 2 * depth } else { depth }
    }

    /// Whether COBOT's shared `FacT_c` / `FacT_p` exist.
    pub fn has_shared(&self) -> bool {
        self.method.cobot() && self.coefficients == Coefficients::Dual
    }

    pub fn validate(&self) -> Result<(), String> {
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
        match self.method {
            Method::Freeze => false,
            Method::Full => key != "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
            Method::Lightweight => key.starts_with("mask_decoder."),
            _ if peft => !(key.ends_with(".FacT_p") && self.relation != Relation::Learnable),
            _ => key.starts_with("mask_decoder."),
        }
    }
}

/// Loads the head at `prefix` (`...FacT_d1` / `...FacT_d2`) for width `k`.
fn load_head(
    w: &mut Weights,
    prefix: &str,
    k: usize,
    cfg: &PeftConfig,
) -> Result<Head, ModelLoadError> {
    Ok(match cfg.head {
        HeadKind::Quaternion => {
            let mut part = |name: &str| w.param(&format!("{prefix}.{name}_weight"), [k / 4, k / 4]);
            Head {
                quaternion: Some(QuaternionLinear {
                    r: part("r")?,
                    i: part("i")?,
                    j: part("j")?,
                    k: part("k")?,
                }),
                linear: None,
            }
        }
        HeadKind::Linear => Head {
            quaternion: None,
            linear: Some(w.param(&format!("{prefix}.weight"), [k, k])?),
        },
        HeadKind::None => Head {
            quaternion: None,
            linear: None,
        },
    })
}
