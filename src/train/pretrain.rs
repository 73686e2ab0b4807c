//! Pretraining SAM from random weights on generated scenes ([`crate::data::scenes`]), SAM's own
//! recipe in small: every step samples, for each object, a noisy box prompt, a single positive
//! point (ambiguous: SAM's three masks, the loss on the best of them) and a corrective point
//! taken from the error region of that point's prediction (as SAM's interactive training does);
//! the loss is 20 × focal + Dice on each mask plus the MSE between the predicted IoU and the
//! mask's actual IoU. AdamW with linear warm-up and cosine decay. Seeded and resumable: each
//! step's scenes and prompts are a function of (seed, step), so a resumed run repeats them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use super::loss::{sam_mask_loss, upsample_logits};
use super::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use super::run_state::{EpochLog, EpochLosses, RunState};
use super::schedule::warmup_cosine;
use super::step_log::StepLogFile;
use super::trainer::{
    Interrupted, Progress, encode_batch, optimise, read_run_state, save_run_files,
};
use crate::checkpoint::{load_state_dict, write_safetensors};
use crate::data::degrade::degrade;
use crate::data::preprocess::{ModelInput, Preprocessing, preprocess_sample};
use crate::data::scenes::{ObjectSizes, scene_with, write_coco};
use crate::data::{DataSource, Dataset};
use crate::eval::{EvalOptions, PromptKind, Scorer, evaluate};
use crate::files::atomic::{previous_dir, write_dir_atomic};
use crate::nn::F32Values;
use crate::peft::{Method, PeftConfig};
use crate::sam::config::SamConfig;
use crate::sam::deepen::deepen_encoder;
use crate::sam::random::random_state_dict;
use crate::sam::widen::widen_decoder;
use crate::sam::{Prompts, Sam};

/// The noise that parts a widened decoder's copied channels, as a fraction of each weight's
/// standard deviation.
const WIDEN_NOISE: f32 = 0.01;

/// Box noise is capped at 20 pixels at 1024 px (SAM's rule), scaled to the input size.
const MAX_BOX_NOISE_AT_1024: f64 = 20.0;

crate::settings! {
    /// Everything that defines a pretraining run (`presets/pretrain-*.toml`, flags override).
    pub struct PretrainSettings;
    /// The pretraining settings as flags: each one given replaces the file's (or the default) value.
    pub struct PretrainFlags;
    /// Architecture from random weights: tiny, mini, small, vit_b, vit_l, vit_h.
    model: String = "mini".into(),
    /// Start from this checkpoint's weights instead of random ones (its own architecture).
    init: Option<PathBuf> => PathBuf = None,
    /// Deepen the init checkpoint's image encoder to this many blocks before training: each
    /// block followed by copies that start as the identity (sam::deepen).
    deepen_encoder: Option<usize> => usize = None,
    /// Widen the init checkpoint's neck, prompt encoder and mask decoder to this width (a whole
    /// multiple of its own) before training: copies of the trained channels, parted by a little
    /// noise (sam::widen).
    widen_decoder: Option<usize> => usize = None,
    /// What trains: `full` (every tensor of SAM) or `lightweight` (the mask decoder alone, the
    /// encoders as they are: a decoder-first stage, or more decoder steps on a trained
    /// encoder, which cost no encoder backward pass).
    method: Method = Method::FULL,
    /// Input size S of the scenes and the model, a multiple of 16.
    image_size: usize = 256,
    /// Optimiser steps in all.
    steps: usize = 20_000,
    /// Steps between validations and checkpoints (one "epoch" of the plot and the run state).
    epoch_steps: usize = 500,
    /// Linear warm-up steps from 0, then cosine decay to the final learning rate.
    warmup_steps: usize = 250,
    /// Peak learning rate of AdamW.
    lr: f64 = 1e-3,
    /// Learning rate the cosine decay ends at.
    final_lr: f64 = 1e-5,
    /// AdamW's decoupled weight decay.
    weight_decay: f64 = 0.01,
    /// Scenes per step.
    batch: usize = 1,
    /// Objects per scene, at most.
    max_objects: usize = 8,
    /// Objects prompted per scene and prompt kind, at most (a random subset beyond).
    max_prompts: usize = 8,
    /// Losses at S / this: 1, 2 or 4 (the decoder's own resolution), against targets
    /// area-averaged to that size.
    loss_downscale: usize = 2,
    /// Box noise: standard deviation per coordinate as a fraction of the box side.
    box_noise: f64 = 0.1,
    /// Train single-point prompts, multimask (the loss on the best of SAM's three masks).
    point_prompts: bool = true,
    /// Train corrective points from the error region of each single-point prediction.
    corrective_points: bool = true,
    /// Fraction of training scenes degraded as sonar, radar and endoscopy images are (lower
    /// contrast, blur, speckle, grain: data::degrade); validation scenes stay clean.
    degrade: f64 = 0.0,
    /// Fraction of training scenes whose objects include small ones, down to a few pixels
    /// (data::scenes::ObjectSizes::WithSmall); validation scenes keep the medium sizes.
    small_objects: f64 = 0.0,
    /// Seed of the random weights, the scenes and the prompts.
    seed: u64 = 0,
    /// Validation scenes (seeds from the validation seed on), scored with boxes and one point.
    val_scenes: usize = 32,
    /// First seed of the validation scenes, below 2^63.
    val_seed: u64 = 1_000_000,
}

impl PretrainSettings {
    /// Settings a run cannot use, named by their flag (they may also come from a config file).
    pub fn validate(&self) -> Result<(), String> {
        if self.init.is_none() && SamConfig::named(&self.model).is_none() {
            return Err(format!(
                "--model {}: unknown (expected one of {})",
                self.model,
                SamConfig::NAMES.join(", ")
            ));
        }
        if !PRETRAIN_METHODS.contains(&self.method) {
            return Err(format!(
                "--method {}: pretrain trains SAM's own tensors: {} or {}",
                self.method, PRETRAIN_METHODS[0], PRETRAIN_METHODS[1]
            ));
        }
        for (flag, given, reshape) in [
            ("--deepen-encoder", self.deepen_encoder.is_some(), "deepen"),
            ("--widen-decoder", self.widen_decoder.is_some(), "widen"),
        ] {
            if given && self.init.is_none() {
                return Err(format!(
                    "{flag}: needs --init (a trained checkpoint to {reshape})"
                ));
            }
        }
        if self.image_size == 0 || !self.image_size.is_multiple_of(16) {
            return Err(format!(
                "--image-size {}: must be a positive multiple of 16",
                self.image_size
            ));
        }
        for (flag, value) in [
            ("--steps", self.steps),
            ("--epoch-steps", self.epoch_steps),
            ("--batch", self.batch),
            ("--max-objects", self.max_objects),
            ("--max-prompts", self.max_prompts),
        ] {
            if value == 0 {
                return Err(format!("{flag} 0: must be at least 1"));
            }
        }
        for (flag, value) in [
            ("--lr", self.lr),
            ("--final-lr", self.final_lr),
            ("--weight-decay", self.weight_decay),
            ("--box-noise", self.box_noise),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!(
                    "{flag} {value}: must be a finite number, 0 or more"
                ));
            }
        }
        for (flag, value) in [
            ("--degrade", self.degrade),
            ("--small-objects", self.small_objects),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("{flag} {value}: must be a fraction from 0 to 1"));
            }
        }
        if ![1, 2, 4].contains(&self.loss_downscale) {
            return Err(format!(
                "--loss-downscale {}: must be 1, 2 or 4",
                self.loss_downscale
            ));
        }
        if self.val_seed >= TRAIN_SEED_BIT {
            return Err(format!(
                "--val-seed {}: must be below 2^63 (training scenes use the seeds above)",
                self.val_seed
            ));
        }
        Ok(())
    }
}

/// The methods `pretrain` accepts: those that train SAM's own tensors and add no module.
const PRETRAIN_METHODS: [Method; 2] = [Method::FULL, Method::LIGHTWEIGHT];

/// Training scenes have seeds with this bit set; every other seed (validation, `sam-cobot
/// scenes`) is never trained on.
const TRAIN_SEED_BIT: u64 = 1 << 63;

/// Mixed into a scene's seed for the streams that degrade it and choose its object sizes.
const DEGRADE_STREAM: u64 = 0xD1B5_4A32_D192_ED03;
const SIZES_STREAM: u64 = 0x8CB9_2BA7_2F3D_8DD7;

/// The seed of scene `b` of step `step` of a run with seed `seed`.
fn train_scene_seed(seed: u64, step: u64, b: usize) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(b as u64);
    // splitmix64's finaliser.
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) | TRAIN_SEED_BIT
}

/// Where the model is written: `out/{best,last}/model.safetensors` (SAM's key names, loadable
/// wherever a SAM checkpoint is), with the optimiser moments, run state and settings beside.
pub const MODEL_FILE: &str = "model.safetensors";

pub struct Pretrainer<'a> {
    pub settings: PretrainSettings,
    pub out: PathBuf,
    /// Set (by Ctrl-C) to stop after the current step.
    pub stop: Option<&'a AtomicBool>,
    pub device: Device,
    /// Write one JSON line per optimiser step to this file ([`super::step_log`]).
    pub step_log: Option<PathBuf>,
}

impl Pretrainer<'_> {
    /// Trains from the start, or from `out/last` when `resume`.
    pub fn run(&self, resume: bool, progress: &mut dyn Progress) -> Result<RunState> {
        let s = &self.settings;
        s.validate().map_err(anyhow::Error::msg)?;
        let device = self.device.clone().autodiff();
        let mut optimizer =
            Optimizer::new(OptimizerConfig::new(OptimizerKind::Adamw, s.weight_decay));
        let (mut sam, mut state) = if resume {
            let dir = previous_dir(&self.out.join("last"));
            let state = read_run_state(&dir)?;
            let sam = self.model(&dir.join(MODEL_FILE), false, &device)?;
            let moments = load_state_dict(&dir.join("optimizer.safetensors"))?;
            optimizer.restore(
                moments,
                state.steps - state.skipped_steps as u64,
                &self.device,
            );
            (sam, state)
        } else {
            let sam = match &s.init {
                Some(path) => self.model(path, true, &device)?,
                None => {
                    let cfg = SamConfig::named(&s.model).expect("validated");
                    let dict = random_state_dict(&cfg, s.seed);
                    trainable(
                        Sam::from_state_dict(dict, Some(s.image_size), &device)?,
                        s.method,
                    )?
                }
            };
            (sam, RunState::default())
        };
        let mut step_log = self
            .step_log
            .as_deref()
            .map(|path| StepLogFile::open(path, resume.then_some(state.steps)))
            .transpose()?;
        let val = self.validation_set()?;
        let epochs = s.steps.div_ceil(s.epoch_steps);
        for epoch in state.epochs_done..epochs {
            let started = Instant::now();
            let first = epoch * s.epoch_steps;
            let last = ((epoch + 1) * s.epoch_steps).min(s.steps);
            progress.epoch_start(epoch, last - first);
            let mut losses = EpochLosses::default();
            for step in first..last {
                if self.stop.is_some_and(|stop| stop.load(Ordering::SeqCst)) {
                    self.save(&sam, &optimizer, &state, "interrupted")?;
                    return Err(Interrupted(self.out.join("interrupted")).into());
                }
                let lr = warmup_cosine(s.lr, s.final_lr, step, s.warmup_steps, s.steps);
                let mut rng =
                    StdRng::seed_from_u64(train_scene_seed(s.seed, step as u64, usize::MAX));
                let inputs: Vec<ModelInput> = (0..s.batch)
                    .map(|b| {
                        let seed = train_scene_seed(s.seed, step as u64, b);
                        // The choices below draw from streams of their own, so that each one
                        // leaves the others' draws as they are without it.
                        let sizes = if s.small_objects > 0.0
                            && StdRng::seed_from_u64(seed ^ SIZES_STREAM)
                                .random_bool(s.small_objects)
                        {
                            ObjectSizes::WithSmall
                        } else {
                            ObjectSizes::Medium
                        };
                        let mut sample =
                            scene_with(seed, s.image_size as u32, s.max_objects, sizes);
                        if s.degrade > 0.0 {
                            let mut rng = StdRng::seed_from_u64(seed ^ DEGRADE_STREAM);
                            if rng.random_bool(s.degrade) {
                                degrade(&mut sample.image, &mut rng);
                            }
                        }
                        preprocess_sample(&sample, &Preprocessing::Sam, s.image_size)
                    })
                    .filter(|input| !input.boxes.is_empty())
                    .collect();
                state.steps += 1;
                if inputs.is_empty() {
                    state.skipped_steps += 1;
                    continue;
                }
                let loss = step_loss(&sam, &inputs, s, &mut rng, &device)?;
                let value;
                (sam, value) = optimise(sam, &mut optimizer, loss, lr)?;
                if !losses.add(value) {
                    state.skipped_steps += 1;
                }
                progress.step(value, lr, inputs.len());
                if let Some(log) = &mut step_log {
                    log.write(epoch, state.steps, value, lr, inputs.len())?;
                }
            }
            let model = sam.valid();
            let score = |prompt| -> Result<f64> {
                let opts = EvalOptions {
                    preprocessing: Preprocessing::Sam,
                    prompt,
                    image_size: s.image_size,
                    overlays: None,
                    strict: true,
                };
                let indices: Vec<usize> = (0..val.len()).collect();
                Ok(
                    evaluate(&val, &indices, &Scorer::Model(&model), &opts, || {})?
                        .summary
                        .mean_dice,
                )
            };
            let log = EpochLog {
                epoch,
                mean_loss: losses.mean(),
                val_dice: Some(score(PromptKind::Box)?),
                val_point_dice: Some(score(PromptKind::Point)?),
                seconds: started.elapsed().as_secs_f64(),
                skipped_items: 0,
                non_finite_steps: losses.non_finite,
            };
            progress.epoch_end(&log);
            let score = log.val_dice.unwrap_or(f64::NAN);
            let is_best = state.end_epoch(log, score);
            self.save(&sam, &optimizer, &state, "last")?;
            super::plot::write_training_plot(&self.out.join("training.png"), &state.history)?;
            if is_best {
                self.save(&sam, &optimizer, &state, "best")?;
            }
        }
        if state.steps > 0 && state.skipped_steps as u64 == state.steps {
            bail!("every step was skipped (non-finite loss): nothing trained");
        }
        Ok(state)
    }

    /// The checkpoint at `path` as a model at this run's input size, its tensors trainable as
    /// the method says;
    /// `reshape`: its encoder deepened and its decoder widened as the settings ask (a run's
    /// start, not its resume).
    fn model(&self, path: &Path, reshape: bool, device: &Device) -> Result<Sam> {
        let s = &self.settings;
        let mut dict = load_state_dict(path)?;
        if let Some(depth) = s.deepen_encoder.filter(|_| reshape) {
            dict = deepen_encoder(&dict, depth)
                .map_err(|e| anyhow!("--deepen-encoder {depth}: {}: {e}", path.display()))?;
        }
        if let Some(width) = s.widen_decoder.filter(|_| reshape) {
            dict = widen_decoder(&dict, width, WIDEN_NOISE, s.seed)
                .map_err(|e| anyhow!("--widen-decoder {width}: {}: {e}", path.display()))?;
        }
        let sam = Sam::from_state_dict(dict, Some(s.image_size), device)
            .with_context(|| format!("{} is not a usable SAM checkpoint", path.display()))?;
        trainable(sam, s.method)
    }

    /// The validation scenes, written once as a COCO data set under `out/val`.
    fn validation_set(&self) -> Result<Dataset> {
        let s = &self.settings;
        let dir = self.out.join("val");
        let annotations = dir.join("annotations.json");
        if !annotations.exists() {
            write_coco(
                &dir,
                s.val_scenes,
                s.val_seed,
                s.image_size as u32,
                s.max_objects,
            )?;
        }
        Ok(Dataset::open(&DataSource::new(annotations))?)
    }

    fn save(&self, sam: &Sam, optimizer: &Optimizer, state: &RunState, name: &str) -> Result<()> {
        write_dir_atomic(&self.out.join(name), |tmp| {
            let metadata = [
                ("format".to_string(), "pt".to_string()),
                ("made_by".to_string(), "sam-cobot pretrain".to_string()),
                ("steps".to_string(), state.steps.to_string()),
            ]
            .into();
            write_safetensors(&tmp.join(MODEL_FILE), &sam.state_dict()?, &metadata)?;
            save_run_files(tmp, optimizer, state, &self.settings)
        })
    }
}

/// `sam` with the tensors of `method` (one of [`PRETRAIN_METHODS`]) trainable.
fn trainable(sam: Sam, method: Method) -> Result<Sam> {
    let cfg = PeftConfig::new(method);
    Ok(sam
        .attach_peft(cfg, Default::default())?
        .with_trainable_set())
}

/// The mean loss of a step over its scenes: for each scene, the box, point and corrective-point
/// prompt groups, each the mean of its masks' losses plus its IoU head's MSE. An error is the
/// device's failure to give back what the corrective points are drawn from.
fn step_loss(
    sam: &Sam,
    inputs: &[ModelInput],
    s: &PretrainSettings,
    rng: &mut StdRng,
    device: &Device,
) -> Result<Tensor<1>> {
    let size = s.image_size;
    let embeddings = encode_batch(sam, inputs, size, device);
    let [_, e, g, _] = embeddings.dims();
    let mut total: Option<Tensor<1>> = None;
    for (i, input) in inputs.iter().enumerate() {
        let embedding = embeddings.clone().slice([i..i + 1, 0..e, 0..g, 0..g]);
        let mut chosen: Vec<usize> = (0..input.boxes.len()).collect();
        chosen.shuffle(rng);
        chosen.truncate(s.max_prompts);
        let f = s.loss_downscale;
        let side = size / f;
        let targets: Vec<Vec<f32>> = chosen
            .iter()
            .map(|&k| area_average(&input.targets[k], size, f))
            .collect();
        let n = targets.len();
        let target_tensor = Tensor::<4>::from_data(
            TensorData::new(targets.concat(), [n, 1, side, side]),
            device,
        );
        let group = |prompts: Prompts, multimask: bool| {
            let out = sam.predict_masks(embedding.clone(), &prompts, multimask);
            let logits = if f == 4 {
                out.low_res_logits
            } else {
                upsample_logits(out.low_res_logits, side)
            };
            Group::score(logits, out.iou, target_tensor.clone(), &targets, device)
        };
        let boxes = chosen
            .iter()
            .map(|&k| noisy_box(input.boxes[k], s.box_noise, size, rng))
            .collect();
        let mut loss = group(
            Prompts {
                points: Vec::new(),
                boxes,
            },
            false,
        )?
        .loss;
        if s.point_prompts {
            let first: Vec<(f32, f32, i32)> = chosen
                .iter()
                .map(|&k| {
                    let i = random_pixel(&input.targets[k], |v| v > 0.5, rng)
                        .expect("an object has pixels");
                    ((i % size) as f32, (i / size) as f32, 1)
                })
                .collect();
            let points = first.iter().map(|&p| vec![p]).collect();
            let single = group(
                Prompts {
                    points,
                    boxes: Vec::new(),
                },
                true,
            )?;
            loss = loss + single.loss;
            if s.corrective_points {
                let points = first
                    .iter()
                    .zip(&targets)
                    .zip(&single.chosen)
                    .map(|((&p, t), predicted)| vec![p, corrective_point(t, predicted, f, rng)])
                    .collect();
                loss = loss
                    + group(
                        Prompts {
                            points,
                            boxes: Vec::new(),
                        },
                        false,
                    )?
                    .loss;
            }
        }
        total = Some(match total {
            Some(t) => t + loss,
            None => loss,
        });
    }
    Ok(total.expect("a step has at least one scene") / inputs.len() as f64)
}

/// What one prompt group contributes.
struct Group {
    loss: Tensor<1>,
    /// Per prompt, the kept mask (the lowest-loss candidate) as 0/1 at S × S.
    chosen: Vec<Vec<bool>>,
}

impl Group {
    /// `logits` `[N, K, S, S]` and `iou` `[N, K]` against `targets` `[N, 1, S, S]`: the mean over
    /// prompts of the best candidate's mask loss, plus the MSE of every candidate's predicted IoU.
    fn score(
        logits: Tensor<4>,
        iou: Tensor<2>,
        targets: Tensor<4>,
        target_planes: &[Vec<f32>],
        device: &Device,
    ) -> Result<Self> {
        let [n, k, h, w] = logits.dims();
        let losses = sam_mask_loss(logits.clone(), targets);
        let values = losses.clone().try_f32_values()?;
        let best: Vec<usize> = values
            .chunks(k)
            .map(|row| (0..k).fold(0, |b, j| if row[j] < row[b] { j } else { b }))
            .collect();
        let one_hot: Vec<f32> = best
            .iter()
            .flat_map(|&j| (0..k).map(move |c| f32::from(u8::from(c == j))))
            .collect();
        let one_hot = Tensor::<2>::from_data(TensorData::new(one_hot, [n, k]), device);
        let mask_loss = (losses * one_hot).sum() / n as f64;
        let planes = logits.try_f32_values()?;
        let masks: Vec<Vec<bool>> = planes
            .chunks(h * w)
            .map(|p| p.iter().map(|&v| v > 0.0).collect())
            .collect();
        let actual: Vec<f32> = masks
            .iter()
            .enumerate()
            .map(|(m, mask)| mask_iou(mask, &target_planes[m / k]))
            .collect();
        let actual = Tensor::<2>::from_data(TensorData::new(actual, [n, k]), device);
        let diff = iou - actual;
        let iou_loss = (diff.clone() * diff).sum() / (n * k) as f64;
        let chosen = best
            .iter()
            .enumerate()
            .map(|(p, &j)| masks[p * k + j].clone())
            .collect();
        Ok(Self {
            loss: mask_loss + iou_loss,
            chosen,
        })
    }
}

fn mask_iou(mask: &[bool], target: &[f32]) -> f32 {
    let (mut inter, mut union) = (0u32, 0u32);
    for (&m, &t) in mask.iter().zip(target) {
        let t = t > 0.5;
        inter += u32::from(m && t);
        union += u32::from(m || t);
    }
    if union == 0 {
        1.0
    } else {
        inter as f32 / union as f32
    }
}

/// SAM's box noise: each coordinate moved by N(0, (noise × side)²), at most 20 px at 1024 px.
fn noisy_box(b: [f32; 4], noise: f64, size: usize, rng: &mut StdRng) -> [f32; 4] {
    let cap = MAX_BOX_NOISE_AT_1024 * size as f64 / 1024.0;
    let sides = [b[2] - b[0], b[3] - b[1]];
    let mut out = [0f32; 4];
    for (c, v) in out.iter_mut().enumerate() {
        let std = noise * f64::from(sides[c % 2]);
        let offset = if std > 0.0 {
            Normal::new(0.0, std)
                .expect("finite std")
                .sample(rng)
                .clamp(-cap, cap)
        } else {
            0.0
        };
        *v = (f64::from(b[c]) + offset).clamp(0.0, size as f64) as f32;
    }
    // A box never turns inside out.
    for c in 0..2 {
        if out[c + 2] < out[c] + 1.0 {
            (out[c], out[c + 2]) = (b[c], b[c + 2]);
        }
    }
    out
}

/// The `size × size` plane averaged over `f × f` cells.
fn area_average(plane: &[f32], size: usize, f: usize) -> Vec<f32> {
    let side = size / f;
    let mut out = vec![0f32; side * side];
    for (i, &v) in plane.iter().enumerate() {
        out[(i / size / f) * side + (i % size) / f] += v;
    }
    let cell = (f * f) as f32;
    out.iter_mut().for_each(|v| *v /= cell);
    out
}

/// The index of a uniformly drawn element of `plane` where `keep` holds.
fn random_pixel(plane: &[f32], keep: impl Fn(f32) -> bool, rng: &mut StdRng) -> Option<usize> {
    let candidates: Vec<usize> = (0..plane.len()).filter(|&i| keep(plane[i])).collect();
    candidates
        .get(rng.random_range(0..candidates.len().max(1)))
        .copied()
}

/// A point of the S frame drawn uniformly from the error region of `predicted` against `target`
/// (both at S / `f`): positive where the object was missed, negative where background was
/// taken; anywhere in the chosen cell. Without errors, another positive point.
fn corrective_point(
    target: &[f32],
    predicted: &[bool],
    f: usize,
    rng: &mut StdRng,
) -> (f32, f32, i32) {
    let side = (target.len() as f64).sqrt() as usize;
    let errors: Vec<f32> = target
        .iter()
        .zip(predicted)
        .map(|(&t, &p)| f32::from(u8::from((t > 0.5) != p)))
        .collect();
    let (i, label) = match random_pixel(&errors, |v| v > 0.5, rng) {
        Some(i) => (i, i32::from(target[i] > 0.5)),
        None => (random_pixel(target, |v| v > 0.5, rng).unwrap_or(0), 1),
    };
    let mut cell = |c: usize| (c * f + rng.random_range(0..f)) as f32;
    (cell(i % side), cell(i / side), label)
}
