//! Timing of the two workloads that matter: one training step (forward, loss, backward, optimiser
//! update) and one inference (encoder + decoder), on synthetic input, after warm-up.
//!
//! `scripts/bench_reference.py` runs the same work in PyTorch in the same run and prints ratios.

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::data::preprocess::{FrameMap, ModelInput};
use crate::nn::F32Values;
use crate::peft::PeftConfig;
use crate::peft::initial_state;
use crate::sam::Sam;
use crate::train::loss::DiceKind;
use crate::train::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use crate::train::trainer::{batch_logits, batch_loss};

/// What to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Forward, BCE + Dice loss, backward and an Adam update (the trainer's own step).
    TrainStep,
    /// Image encoder, prompt encoder and mask decoder, no gradients.
    Inference,
    /// One matrix product in --precision (square unless --gemm-size says otherwise): the
    /// machine's GEMM rate, to set the others against.
    Gemm,
}

#[derive(Debug, Clone)]
pub struct BenchSettings {
    pub workload: Workload,
    /// How the report names the model (a configuration name or a checkpoint file).
    pub model: String,
    pub image_size: usize,
    pub peft: PeftConfig,
    /// Images per step.
    pub batch: usize,
    /// Box prompts per image.
    pub boxes: usize,
    pub warmup: usize,
    pub runs: usize,
    /// Where it runs (`Device::flex()` for the CPU, or a GPU backend).
    pub device: Device,
    /// How the report names the device (`cpu`, `vulkan:0`, …).
    pub device_name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub workload: Workload,
    pub model: String,
    pub image_size: usize,
    pub method: String,
    pub batch: usize,
    pub boxes: usize,
    pub device: String,
    pub threads: usize,
    /// Whether the fused CPU kernels ran (`--unfused` times burn's composed ops instead).
    pub fused_kernels: bool,
    /// What the products computed in (`--precision`).
    pub precision: crate::kernels::Precision,
    /// Every timed run, in milliseconds.
    pub runs_ms: Vec<f64>,
    pub median_ms: f64,
    /// Peak resident memory of the whole process (Linux `VmHWM`), MiB; `None` elsewhere.
    pub peak_rss_mib: Option<f64>,
}

/// Times `s.workload` on SAM built from `base` (random or loaded weights), with the PEFT
/// modules of `s.peft` attached at their initial values.
pub fn run(base: crate::checkpoint::StateDict, s: &BenchSettings) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(
        s.workload != Workload::Gemm,
        "the GEMM workload has no model: use bench::gemm"
    );
    let train = s.workload == Workload::TrainStep;
    if train && s.peft.method == crate::peft::Method::FREEZE {
        anyhow::bail!("--method freeze trains nothing: time it with --workload inference");
    }
    let device = if train {
        s.device.clone().autodiff()
    } else {
        s.device.clone()
    };
    let sam = Sam::from_state_dict(base, Some(s.image_size), &device)?;
    let e = sam.config.peft_encoder()?;
    let (embed_dim, depth) = (e.embed_dim, e.depth);
    let mut sam = sam
        .attach_peft(s.peft.clone(), initial_state(&s.peft, embed_dim, depth, 0))?
        .with_trainable_set();
    let inputs: Vec<ModelInput> = (0..s.batch)
        .map(|i| synthetic_input(s.image_size, s.boxes, i as u64))
        .collect();
    let mut optimizer = Optimizer::new(OptimizerConfig::new(OptimizerKind::Adam, 5e-5));
    let mut runs_ms = Vec::with_capacity(s.runs);
    for run in 0..s.warmup + s.runs {
        let started = Instant::now();
        if train {
            let loss = batch_loss(&sam, &inputs, s.image_size, DiceKind::Soft, &device);
            let grads = loss.clone().backward();
            let names = sam.names.clone();
            sam = optimizer.step(sam, &names, &grads, 1e-4);
            // A GPU's failure shows on a read, not on a sync: a timing counts once its result is read.
            loss.try_f32_values()?;
        } else {
            for logits in batch_logits(&sam, &inputs, s.image_size, &device) {
                logits.try_f32_values()?;
            }
        }
        // GPU backends run asynchronously: the step is done when the device is idle.
        sync(&device)?;
        if run >= s.warmup {
            runs_ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(BenchReport {
        workload: s.workload,
        model: s.model.clone(),
        image_size: s.image_size,
        method: s.peft.method.to_string(),
        batch: s.batch,
        boxes: s.boxes,
        device: s.device_name.clone(),
        threads: rayon::current_num_threads(),
        fused_kernels: crate::kernels::layers_fuse_on(&s.device),
        precision: crate::kernels::precision(),
        median_ms: median(&runs_ms),
        runs_ms,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// The shape of a GEMM benchmark: `[m, k] · [k, n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

impl GemmShape {
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.k as f64 * self.n as f64
    }
}

impl std::fmt::Display for GemmShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.m, self.k, self.n)
    }
}

impl std::str::FromStr for GemmShape {
    type Err = String;

    /// `N` (square) or `MxKxN`, every size at least 1.
    fn from_str(text: &str) -> Result<Self, String> {
        let sizes = text
            .split('x')
            .map(|part| part.trim().parse::<usize>().ok().filter(|&v| v > 0))
            .collect::<Option<Vec<_>>>();
        match sizes.as_deref() {
            Some(&[n]) => Ok(Self { m: n, k: n, n }),
            Some(&[m, k, n]) => Ok(Self { m, k, n }),
            _ => Err(format!(
                "`{text}` is not a GEMM size: give N (square) or MxKxN, e.g. 256x768x2304"
            )),
        }
    }
}

fn sync(device: &Device) -> anyhow::Result<()> {
    device
        .sync()
        .map_err(|e| anyhow::anyhow!("the device failed: {e:?}"))
}

/// Times `[m, k] · [k, n]` in f32 on seeded random matrices; returns the timed runs in ms. On
/// the CPU the product is the one the model's linear layers run (`kernels::linear` without a
/// bias, the right factor stored `[n, k]`); elsewhere burn's matmul.
pub fn gemm(
    shape: GemmShape,
    device: &Device,
    warmup: usize,
    runs: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut rng = StdRng::seed_from_u64(0);
    let mut matrix = |rows: usize, cols: usize| {
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        Tensor::<2>::from_data(TensorData::new(values, [rows, cols]), device)
    };
    let a = matrix(shape.m, shape.k);
    let half = crate::kernels::precision().half();
    let product: Box<dyn Fn() -> Tensor<2>> = if let Some(half) = half {
        // Operands stored in the lower precision, as a product's inputs are on a GPU that has it.
        let (a, b) = (a.cast(half), matrix(shape.k, shape.n).cast(half));
        Box::new(move || a.clone().matmul(b.clone()))
    } else if crate::kernels::fused_kernels_run_on(device) {
        let w = matrix(shape.n, shape.k);
        Box::new(move || crate::kernels::linear(a.clone(), w.clone(), None))
    } else {
        let b = matrix(shape.k, shape.n);
        Box::new(move || a.clone().matmul(b.clone()))
    };
    sync(device)?;
    let mut timed = Vec::with_capacity(runs);
    for run in 0..warmup + runs {
        let started = Instant::now();
        // Bound, so the product lives until the device has computed it.
        let _product = product();
        sync(device)?;
        if run >= warmup {
            timed.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(timed)
}

/// A seeded noise image with `boxes` boxes, each target the filled box.
fn synthetic_input(size: usize, boxes: usize, seed: u64) -> ModelInput {
    let mut rng = StdRng::seed_from_u64(seed);
    let image = (0..3 * size * size)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    let (mut rects, mut targets) = (Vec::new(), Vec::new());
    for _ in 0..boxes {
        let (w, h) = (
            rng.random_range(size / 8..size / 2),
            rng.random_range(size / 8..size / 2),
        );
        let (x, y) = (rng.random_range(0..size - w), rng.random_range(0..size - h));
        rects.push([x as f32, y as f32, (x + w) as f32, (y + h) as f32]);
        let mut target = vec![0.0f32; size * size];
        for row in y..y + h {
            target[row * size + x..row * size + x + w].fill(1.0);
        }
        targets.push(target);
    }
    ModelInput {
        image,
        classes: vec![1; boxes],
        boxes: rects,
        targets,
        valid: (size, size),
        frame: FrameMap::sam((size, size), size),
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The process's peak resident set (`VmHWM` in `/proc/self/status`), MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
