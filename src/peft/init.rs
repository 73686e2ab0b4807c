//! Starting values of the PEFT tensors, drawn on the host from a seed with the authors'
//! initialisations (docs/methods.md#lora, #adaptformer-adapter, #key-names), under their official key names.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use super::{HeadKind, LoraInit, PeftConfig, Relation};
use crate::checkpoint::{RawTensor, StateDict};

struct Init {
    rng: StdRng,
    dict: StateDict,
    /// Draw the values; without, each tensor is only its shape (empty data), for counting.
    values: bool,
}

impl Init {
    fn put(&mut self, key: String, shape: &[usize], fill: impl FnMut(&mut StdRng) -> f32) {
        let mut fill = fill;
        let n = if self.values {
            shape.iter().product()
        } else {
            0
        };
        let data = (0..n).map(|_| fill(&mut self.rng)).collect();
        self.dict.insert(key, RawTensor::new(shape.to_vec(), data));
    }

    fn constant(&mut self, key: String, shape: &[usize], value: f32) {
        self.put(key, shape, |_| value);
    }

    /// PyTorch's `xavier_normal_` (gain 1) for a `[out, in]` weight.
    fn xavier_normal(&mut self, key: String, shape: [usize; 2]) {
        let std = (2.0 / (shape[0] + shape[1]) as f64).sqrt();
        let normal = Normal::new(0.0, std).expect("finite std");
        self.put(key, &shape, |rng| normal.sample(rng) as f32);
    }

    /// PyTorch's default Linear weight init (Kaiming-uniform, a = √5): U(±1/√fan_in).
    fn kaiming_uniform(&mut self, key: String, shape: [usize; 2]) {
        let bound = 1.0 / (shape[1] as f32).sqrt();
        self.put(key, &shape, |rng| rng.random_range(-bound..bound));
    }

    fn uniform01(&mut self, key: String, shape: &[usize]) {
        self.put(key, shape, |rng| rng.random::<f32>());
    }

    fn head(&mut self, prefix: &str, k: usize, kind: HeadKind) {
        match kind {
            HeadKind::Quaternion => {
                let q = [k / 4, k / 4];
                self.constant(format!("{prefix}.r_weight"), &q, 0.0);
                for part in ["i", "j", "k"] {
                    self.uniform01(format!("{prefix}.{part}_weight"), &q);
                }
            }
            HeadKind::Linear => self.kaiming_uniform(format!("{prefix}.weight"), [k, k]),
            HeadKind::None => {}
        }
    }
}

/// Fresh PEFT tensors for an encoder of width `c` and `depth` blocks.
pub fn initial_state(cfg: &PeftConfig, c: usize, depth: usize, seed: u64) -> StateDict {
    build(cfg, c, depth, seed, true)
}

/// The PEFT tensors' keys and shapes, without their values (`data` is empty): what counting
/// needs, at no memory cost.
pub fn initial_shapes(cfg: &PeftConfig, c: usize, depth: usize) -> StateDict {
    build(cfg, c, depth, 0, false)
}

fn build(cfg: &PeftConfig, c: usize, depth: usize, seed: u64, values: bool) -> StateDict {
    let mut init = Init {
        rng: StdRng::seed_from_u64(seed),
        dict: StateDict::new(),
        values,
    };
    let k = cfg.cobot_width();
    let t = cfg.cobot_modules(depth);
    if cfg.has_shared() {
        let site = cfg.method.site().expect("COBOT wraps a site").key();
        let shared = format!("image_encoder.blocks.0.{site}");
        init.constant(format!("{shared}.FacT_c"), &[1, k, t], 1.0);
        match cfg.relation {
            Relation::Fixed => init.uniform01(format!("{shared}.FacT_p"), &[t, t]),
            Relation::Learnable | Relation::Identity => {
                let mut i = 0;
                init.put(format!("{shared}.FacT_p"), &[t, t], |_| {
                    i += 1;
                    f32::from(u8::from((i - 1) % (t + 1) == 0))
                });
            }
        }
    }
    for i in 0..depth {
        if cfg.method.lora() {
            let p = format!("image_encoder.blocks.{i}.attn.qkv");
            let r = cfg.rank;
            for m in ["q", "v"] {
                init.xavier_normal(format!("{p}.linear_a_{m}.weight"), [r, c]);
                match cfg.lora_init {
                    LoraInit::Xavier => {
                        init.xavier_normal(format!("{p}.linear_b_{m}.weight"), [c, r])
                    }
                    LoraInit::ZeroB => {
                        init.constant(format!("{p}.linear_b_{m}.weight"), &[c, r], 0.0)
                    }
                }
            }
            if cfg.method.cobot() {
                init.constant(format!("{p}.gamma"), &[2 * r], 1.0);
                init.head(&format!("{p}.FacT_d1"), r, cfg.head);
                init.head(&format!("{p}.FacT_d2"), r, cfg.head);
            }
        }
        if cfg.method.adapter() {
            let p = format!("image_encoder.blocks.{i}.mlp");
            let v = cfg.bottleneck;
            init.constant(format!("{p}.adapter_layer_norm_before.weight"), &[c], 1.0);
            init.constant(format!("{p}.adapter_layer_norm_before.bias"), &[c], 0.0);
            init.kaiming_uniform(format!("{p}.down_proj.weight"), [v, c]);
            init.constant(format!("{p}.down_proj.bias"), &[v], 0.0);
            init.constant(format!("{p}.up_proj.weight"), &[c, v], 0.0);
            init.constant(format!("{p}.up_proj.bias"), &[c], 0.0);
            if cfg.method.cobot() {
                init.constant(format!("{p}.gamma"), &[v], 1.0);
                init.head(&format!("{p}.FacT_d1"), v, cfg.head);
            }
        }
    }
    init.dict
}
