//! The flags that choose a fine-tuning method and its switches, shared by the commands that
//! build one.

use anyhow::Result;
use clap::Args;

use crate::peft::{Coefficients, HeadKind, LoraInit, Method, PeftConfig, Relation};

#[derive(Args, Debug, Clone)]
pub struct PeftArgs {
    /// freeze, lightweight, lora, adapter, full, lora+cobot (the paper's) or adapter+cobot.
    #[arg(long, default_value_t = PeftConfig::default().method)]
    pub method: Method,
    /// LoRA rank r.
    #[arg(long, default_value_t = PeftConfig::default().rank)]
    pub rank: usize,
    /// Adapter bottleneck width V.
    #[arg(long, default_value_t = PeftConfig::default().bottleneck)]
    pub bottleneck: usize,
    /// How LoRA starts: xavier (A and B Xavier-normal, the authors') or zero-b (the LoRA paper's).
    #[arg(long, value_enum, default_value_t = PeftConfig::default().lora_init)]
    pub lora_init: LoraInit,
    /// COBOT coefficient sets: dual (cross-block and per-block) or block (per-block only).
    #[arg(long, value_enum, default_value_t = PeftConfig::default().coefficients)]
    pub coefficients: Coefficients,
    /// COBOT relation matrix: learnable, identity (off, frozen) or fixed (random, frozen).
    #[arg(long, value_enum, default_value_t = PeftConfig::default().relation)]
    pub relation: Relation,
    /// COBOT head: quaternion (hyper-complex layer), none, or linear (plain r×r layer).
    #[arg(long, value_enum, default_value_t = PeftConfig::default().head)]
    pub head: HeadKind,
}

impl PeftArgs {
    pub fn config(&self) -> Result<PeftConfig> {
        let cfg = PeftConfig {
            rank: self.rank,
            bottleneck: self.bottleneck,
            lora_init: self.lora_init,
            coefficients: self.coefficients,
            relation: self.relation,
            head: self.head,
            ..PeftConfig::new(self.method)
        };
        cfg.validate().map_err(anyhow::Error::msg)?;
        Ok(cfg)
    }
}
