//! The training loop: ragged batches (every box of every image in one step), validation with the
//! paper's metric after each epoch, best and last checkpoints written atomically, exact resume.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::embedding_cache::EmbeddingCache;
use super::loss::{DiceKind, segmentation_loss, upsample_logits};
use super::optim::{Optimizer, OptimizerConfig};
use super::run_state::{EpochLog, EpochLosses, RunState};
use super::schedule::Schedule;
use super::step_log::StepLogFile;
use crate::adapter::{open_adapter, save_adapter_on};
use crate::checkpoint::{BaseId, load_base};
use crate::checkpoint::{load_state_dict, read_safetensors_metadata, write_safetensors};
use crate::data::Dataset;
use crate::data::augment::{Augment, jitter_boxes};
use crate::data::preprocess::{ModelInput, Preprocessing, preprocess_sample};
use crate::eval::{EvalOptions, Scorer, evaluate};
use crate::files::atomic::{previous_dir, write_atomic, write_dir_atomic};
use crate::nn::F32Values;
use crate::peft::initial_state;
use crate::peft::{Method, PeftConfig};
use crate::sam::{Prompts, Sam};

/// Everything that defines a run (saved with every checkpoint).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSettings {
    pub checkpoint: PathBuf,
    /// Input size S; `None`: the checkpoint's native size (1024 for Meta's). The saved
    /// settings record the size the run used.
    pub image_size: Option<usize>,
    pub peft: PeftConfig,
    pub optimizer: OptimizerConfig,
    pub lr: f64,
    pub schedule: Schedule,
    pub epochs: usize,
    /// Images per optimiser step (each with all its boxes).
    pub batch: usize,
    pub seed: u64,
    pub dice: DiceKind,
    pub augment: bool,
    /// Box jitter: up to this many pixels (at the 1024 scale) added to each coordinate.
    pub box_jitter: u32,
    /// Start from the tensors of this adapter file (trained on the same base with the same
    /// method) instead of fresh ones: warm start or transfer to another data set.
    pub init_adapter: Option<PathBuf>,
    #[serde(skip, default = "sam_preprocessing")]
    pub preprocessing: Preprocessing,
    pub strict: bool,
}

impl TrainSettings {
    /// Counts and rates a run cannot use, named by their flag (they may also come from a config
    /// file).
    pub fn validate(&self) -> Result<(), String> {
        if self.batch == 0 {
            return Err("--batch 0: must be at least 1".into());
        }
        if self.epochs == 0 {
            return Err("--epochs 0: must be at least 1".into());
        }
        if self.peft.method == Method::FREEZE {
            return Err(
                "--method freeze trains nothing (every tensor stays frozen): score the base \
                 model with `sam-cobot eval` instead"
                    .into(),
            );
        }
        if let Preprocessing::Sonar { norm } = &self.preprocessing {
            if let Some(bad) = norm.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                return Err(format!("--std {bad}: must be a positive finite number"));
            }
            if let Some(bad) = norm.mean.iter().find(|m| !m.is_finite()) {
                return Err(format!("--mean {bad}: must be a finite number"));
            }
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(format!(
                "--lr {}: must be a finite number, 0 or more",
                self.lr
            ));
        }
        let decay = self.optimizer.weight_decay;
        if !(decay.is_finite() && decay >= 0.0) {
            return Err(format!(
                "--weight-decay {decay}: must be a finite number, 0 or more"
            ));
        }
        Ok(())
    }
}

fn sam_preprocessing() -> Preprocessing {
    Preprocessing::Sam
}

/// Progress reports from the loop (the CLI draws bars from them).
pub trait Progress {
    fn epoch_start(&mut self, epoch: usize, steps: usize);
    fn step(&mut self, loss: f64, lr: f64, images: usize);
    fn epoch_end(&mut self, log: &EpochLog);
    /// A message for the user (an item skipped, a summary).
    fn note(&mut self, message: &str) {
        eprintln!("{message}");
    }
}

pub struct Trainer<'a> {
    pub settings: TrainSettings,
    pub train: &'a Dataset,
    pub val: Option<&'a Dataset>,
    pub out: PathBuf,
    /// Set (by Ctrl-C) to stop after the current step.
    pub stop: Option<&'a AtomicBool>,
    /// Where the model trains (not part of the settings: a run may resume on another device).
    pub device: Device,
    /// Write one JSON line per optimiser step to this file ([`super::step_log`]).
    pub step_log: Option<PathBuf>,
    /// Cache the image embeddings in this folder ([`EmbeddingCache`]): only for methods whose
    /// image encoder is frozen, and without augmentation.
    pub embedding_cache: Option<PathBuf>,
}

/// The run was stopped by [`Trainer::stop`]; the weights of that moment are in `out/interrupted`.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted: the weights of this moment are in {0}; `--resume` continues from the last finished epoch"
)]
pub struct Interrupted(pub PathBuf);

impl Trainer<'_> {
    /// Trains from the start, or from `out/last` when `resume`.
    pub fn run(&self, resume: bool, progress: &mut dyn Progress) -> Result<RunState> {
        let s = &self.settings;
        check_trainable(s, self.train)?;
        let inner = self.device.clone();
        let device = inner.clone().autodiff();
        let mut optimizer = Optimizer::new(s.optimizer.clone());
        let (mut sam, state) = if resume {
            self.resume(&device, &inner, &mut optimizer)?
        } else {
            (self.fresh_model(&device)?, RunState::default())
        };
        let step_log = self
            .step_log
            .as_deref()
            .map(|path| StepLogFile::open(path, resume.then_some(state.steps)))
            .transpose()?;
        let base = BaseId::of(&s.checkpoint)?;
        let cache = match &self.embedding_cache {
            None => None,
            Some(dir) => {
                if !s.peft.method.encoder_frozen() {
                    bail!(
                        "--cache-embeddings: --method {} trains the image encoder, so its \
                         embeddings change every step (lightweight trains the decoder alone)",
                        s.peft.method
                    );
                }
                if s.augment {
                    bail!(
                        "--cache-embeddings needs --augment false: an augmented image is new every epoch"
                    );
                }
                Some(EmbeddingCache::open(
                    dir,
                    &base,
                    sam.image_size,
                    &s.preprocessing,
                )?)
            }
        };
        let mut run = RunContext {
            device,
            optimizer,
            state,
            base,
            cache,
            step_log,
            unreadable: BTreeSet::new(),
            reported: BTreeSet::new(),
        };
        for epoch in run.state.epochs_done..s.epochs {
            let started = Instant::now();
            let (losses, skipped_items);
            (sam, losses, skipped_items) = self.train_epoch(epoch, sam, &mut run, progress)?;
            self.end_epoch(
                epoch,
                started,
                &sam,
                &losses,
                skipped_items,
                &mut run,
                progress,
            )?;
        }
        if !run.unreadable.is_empty() {
            progress.note(&format!(
                "{} unreadable item(s) skipped in every epoch (--strict stops at the first)",
                run.unreadable.len()
            ));
        }
        Ok(run.state)
    }

    /// The optimiser steps of one epoch: the model after them, the steps' losses and how many
    /// items could not be read. Stopped by [`Trainer::stop`], it saves `out/interrupted` first.
    fn train_epoch(
        &self,
        epoch: usize,
        mut sam: Sam,
        run: &mut RunContext,
        progress: &mut dyn Progress,
    ) -> Result<(Sam, EpochLosses, usize)> {
        let s = &self.settings;
        let steps_per_epoch = self.train.len().div_ceil(s.batch);
        // Everything random in an epoch derives from (seed, epoch): a resumed run repeats it.
        let mut rng =
            StdRng::seed_from_u64(s.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        run.device.seed(s.seed.wrapping_add(epoch as u64));
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        order.shuffle(&mut rng);
        progress.epoch_start(epoch, steps_per_epoch);
        let (mut losses, mut skipped_items) = (EpochLosses::default(), 0);
        for chunk in order.chunks(s.batch) {
            if self.stop.is_some_and(|stop| stop.load(Ordering::SeqCst)) {
                self.save(&sam, run, "interrupted")?;
                return Err(Interrupted(self.out.join("interrupted")).into());
            }
            let lr = s
                .schedule
                .lr(s.lr, run.state.steps as usize, steps_per_epoch, s.epochs);
            let mut inputs = Vec::new();
            for &i in chunk {
                let reported = &mut run.reported;
                match self.prepare(i, sam.image_size, &mut rng, &mut |message| {
                    if reported.insert(message.clone()) {
                        progress.note(&format!("dropped: {message}"));
                    }
                }) {
                    Ok(Some(input)) => inputs.push(input),
                    Ok(None) => {}
                    Err(e) if !s.strict => {
                        // Each unreadable item is named once per run; the total at the end.
                        if run.unreadable.insert(i) {
                            progress.note(&format!("skipped: {e:#}"));
                        }
                        skipped_items += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
            if inputs.is_empty() {
                continue;
            }
            let loss = match &run.cache {
                None => batch_loss(&sam, &inputs, sam.image_size, s.dice, &run.device),
                Some(cache) => {
                    let embeddings =
                        cache.embeddings(&sam, &inputs, sam.image_size, &run.device)?;
                    batch_loss_on(
                        &sam,
                        embeddings,
                        &inputs,
                        sam.image_size,
                        s.dice,
                        &run.device,
                    )
                }
            };
            let value;
            (sam, value) = optimise(sam, &mut run.optimizer, loss, lr)?;
            run.state.steps += 1;
            if !losses.add(value) {
                run.state.skipped_steps += 1;
            }
            progress.step(value, lr, inputs.len());
            if let Some(log) = &mut run.step_log {
                log.write(epoch, run.state.steps, value, lr, inputs.len())?;
            }
        }
        if losses.finite() == 0 {
            bail!(
                "epoch {}: every step was skipped ({skipped_items} unreadable item(s), {} \
                 non-finite loss(es)): nothing was trained, nothing written for this epoch",
                epoch + 1,
                losses.non_finite
            );
        }
        Ok((sam, losses, skipped_items))
    }

    /// After an epoch's steps: validation, the epoch's log, the `last` (and, if it is the best
    /// yet, `best`) checkpoint and the plot.
    #[allow(clippy::too_many_arguments)]
    fn end_epoch(
        &self,
        epoch: usize,
        started: Instant,
        sam: &Sam,
        losses: &EpochLosses,
        skipped_items: usize,
        run: &mut RunContext,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let val_dice = match self.val {
            Some(val) => Some(self.validate(sam, val)?),
            None => None,
        };
        let log = EpochLog {
            epoch,
            mean_loss: losses.mean(),
            val_dice,
            val_point_dice: None,
            seconds: started.elapsed().as_secs_f64(),
            skipped_items,
            non_finite_steps: losses.non_finite,
        };
        progress.epoch_end(&log);
        let score = val_dice.unwrap_or(-log.mean_loss);
        let is_best = run.state.end_epoch(log, score);
        self.save(sam, run, "last")?;
        super::plot::write_training_plot(&self.out.join("training.png"), &run.state.history)?;
        if is_best {
            self.save(sam, run, "best")?;
        }
        Ok(())
    }

    fn fresh_model(&self, device: &Device) -> Result<Sam> {
        let s = &self.settings;
        if let Some(adapter) = &s.init_adapter {
            let parts = open_adapter(&s.checkpoint, adapter)?;
            if parts.info.peft.method != s.peft.method {
                bail!(
                    "--init-adapter {}: it was trained with --method {}, this run trains {}",
                    adapter.display(),
                    parts.info.peft.method,
                    s.peft.method
                );
            }
            let sam = Sam::from_state_dict(parts.base, s.image_size, device)?;
            let sam = sam
                .attach_peft(s.peft.clone(), parts.peft)
                .with_context(|| {
                    format!(
                        "--init-adapter {}: switches differ from this run's",
                        adapter.display()
                    )
                })?;
            return Ok(sam.with_trainable_set());
        }
        let base = load_base(&s.checkpoint)?;
        let sam = Sam::from_state_dict(base, s.image_size, device).with_context(|| {
            format!("{} is not a usable SAM checkpoint", s.checkpoint.display())
        })?;
        let e = sam.config.peft_encoder()?;
        // Before the tensors are drawn: a rank wider than the encoder would allocate its square.
        s.peft.check_fits(e.embed_dim).map_err(anyhow::Error::msg)?;
        let init = initial_state(&s.peft, e.embed_dim, e.depth, s.seed);
        Ok(sam.attach_peft(s.peft.clone(), init)?.with_trainable_set())
    }

    fn resume(
        &self,
        device: &Device,
        inner: &Device,
        optimizer: &mut Optimizer,
    ) -> Result<(Sam, RunState)> {
        let s = &self.settings;
        let dir = previous_dir(&self.out.join("last"));
        let state = read_run_state(&dir)?;
        let parts = open_adapter(&s.checkpoint, &dir.join("adapter.safetensors"))?;
        let sam = Sam::from_state_dict(parts.base, s.image_size, device)?
            .attach_peft(s.peft.clone(), parts.peft)?
            .with_trainable_set();
        let moments = load_state_dict(&dir.join("optimizer.safetensors"))?;
        optimizer.restore(moments, state.steps - state.skipped_steps as u64, inner);
        Ok((sam, state))
    }

    /// Training item `i`, augmented and preprocessed at input size `image_size`; `None` when no
    /// object survives.
    /// Annotations left out of the item go to `dropped` (strict runs stop at them instead).
    fn prepare(
        &self,
        i: usize,
        image_size: usize,
        rng: &mut StdRng,
        dropped: &mut dyn FnMut(String),
    ) -> Result<Option<ModelInput>> {
        let s = &self.settings;
        let sample = if s.strict {
            self.train.load(i)?
        } else {
            let loaded = self.train.load_lenient(i)?;
            for e in loaded.dropped {
                dropped(e.to_string());
            }
            loaded.sample
        };
        let sample = if s.augment {
            Augment::default().apply(&sample, rng)
        } else {
            sample
        };
        if sample.objects.is_empty() {
            return Ok(None);
        }
        let mut input = preprocess_sample(&sample, &s.preprocessing, image_size);
        jitter_boxes(&mut input.boxes, s.box_jitter, image_size, rng);
        Ok(Some(input))
    }

    fn validate(&self, sam: &Sam, val: &Dataset) -> Result<f64> {
        let s = &self.settings;
        let model = sam.valid();
        let opts = EvalOptions {
            preprocessing: s.preprocessing,
            prompt: Default::default(),
            image_size: sam.image_size,
            overlays: None,
            strict: s.strict,
        };
        let indices: Vec<usize> = (0..val.len()).collect();
        Ok(
            evaluate(val, &indices, &Scorer::Model(&model), &opts, || {})?
                .summary
                .mean_dice,
        )
    }

    /// Writes `out/<name>/` (adapter, optimiser moments, state, settings) atomically.
    fn save(&self, sam: &Sam, run: &RunContext, name: &str) -> Result<()> {
        let settings = TrainSettings {
            image_size: Some(sam.image_size),
            ..self.settings.clone()
        };
        write_dir_atomic(&self.out.join(name), |tmp| {
            save_adapter_on(&tmp.join("adapter.safetensors"), sam, &run.base)?;
            save_run_files(tmp, &run.optimizer, &run.state, &settings)
        })
    }
}

/// What a run carries from epoch to epoch besides the model.
struct RunContext {
    /// The autodiff device the model trains on.
    device: Device,
    optimizer: Optimizer,
    state: RunState,
    /// The base checkpoint's identity, hashed once, written into every adapter.
    base: BaseId,
    cache: Option<EmbeddingCache>,
    step_log: Option<StepLogFile>,
    /// Items already reported unreadable, and annotations already reported dropped: each is
    /// named once per run.
    unreadable: BTreeSet<usize>,
    reported: BTreeSet<String>,
}

/// The optimiser moments, run state and settings of a checkpoint folder.
pub fn save_run_files(
    dir: &Path,
    optimizer: &Optimizer,
    state: &RunState,
    settings: &impl Serialize,
) -> Result<()> {
    write_safetensors(
        &dir.join("optimizer.safetensors"),
        &optimizer.state()?,
        &Default::default(),
    )?;
    for (file, json) in [
        ("state.json", serde_json::to_string_pretty(state)?),
        ("settings.json", serde_json::to_string_pretty(settings)?),
    ] {
        write_atomic(&dir.join(file), |w| Ok(w.write_all(json.as_bytes())?))?;
    }
    Ok(())
}

/// The run state of a checkpoint folder.
pub fn read_run_state(dir: &Path) -> Result<RunState> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("nothing to resume: cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: unreadable run state", path.display()))
}

/// One optimiser step on `loss`; with its value. A non-finite loss never reaches the weights:
/// `sam` comes back unchanged. A device that failed to compute the loss is an error.
pub fn optimise(
    sam: Sam,
    optimizer: &mut Optimizer,
    loss: Tensor<1>,
    lr: f64,
) -> Result<(Sam, f64)> {
    let value = f64::from(loss.clone().try_f32_values()?[0]);
    if !value.is_finite() {
        return Ok((sam, value));
    }
    let grads = loss.backward();
    let names = sam.names.clone();
    Ok((optimizer.step(sam, &names, &grads, lr), value))
}

/// Low-resolution mask logits `[N_i, 1, S/4, S/4]` of every image's boxes: the encoder runs
/// once on the whole batch, the decoder once per image with all its boxes.
pub fn batch_logits(
    sam: &Sam,
    inputs: &[ModelInput],
    size: usize,
    device: &Device,
) -> Vec<Tensor<4>> {
    decode_batch(sam, encode_batch(sam, inputs, size, device), inputs)
}

/// The image embeddings `[B, E, g, g]` of a batch: in one encoder pass, or on a GPU in as few
/// as keep every tensor, the batch of images included, within the device's buffer limit.
pub fn encode_batch(sam: &Sam, inputs: &[ModelInput], size: usize, device: &Device) -> Tensor<4> {
    let images = sam.images_per_encoder_pass(size, device);
    encode_in_passes(sam, inputs, size, device, images)
}

/// [`encode_batch`] with at most `images` images per encoder pass.
fn encode_in_passes(
    sam: &Sam,
    inputs: &[ModelInput],
    size: usize,
    device: &Device,
    images: usize,
) -> Tensor<4> {
    let encode = |part: &[ModelInput]| {
        let pixels: Vec<f32> = part.iter().flat_map(|i| i.image.iter().copied()).collect();
        let data = TensorData::new(pixels, [part.len(), 3, size, size]);
        sam.embed_image(Tensor::<4>::from_data(data, device))
    };
    // One pass (always on the CPU) needs no concatenation, which would copy the embeddings.
    if inputs.len() <= images {
        return encode(inputs);
    }
    Tensor::cat(inputs.chunks(images).map(encode).collect(), 0)
}

/// The logits of every image's boxes from the batch's embeddings (the decoder once per image).
pub fn decode_batch(sam: &Sam, embeddings: Tensor<4>, inputs: &[ModelInput]) -> Vec<Tensor<4>> {
    let [_, e, g, _] = embeddings.dims();
    inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let embedding = embeddings.clone().slice([i..i + 1, 0..e, 0..g, 0..g]);
            let prompts = Prompts {
                points: Vec::new(),
                boxes: input.boxes.clone(),
            };
            sam.predict_masks(embedding, &prompts, false).low_res_logits
        })
        .collect()
}

/// Σ of the per-object losses of every image (logits from [`batch_logits`]).
pub fn batch_loss(
    sam: &Sam,
    inputs: &[ModelInput],
    size: usize,
    dice: DiceKind,
    device: &Device,
) -> Tensor<1> {
    batch_loss_on(
        sam,
        encode_batch(sam, inputs, size, device),
        inputs,
        size,
        dice,
        device,
    )
}

/// [`batch_loss`] from the batch's embeddings `[B, E, g, g]` (computed or cached).
pub fn batch_loss_on(
    sam: &Sam,
    embeddings: Tensor<4>,
    inputs: &[ModelInput],
    size: usize,
    dice: DiceKind,
    device: &Device,
) -> Tensor<1> {
    decode_batch(sam, embeddings, inputs)
        .into_iter()
        .zip(inputs)
        .map(|(low_res, input)| {
            let n = input.boxes.len();
            let targets: Vec<f32> = input.targets.iter().flatten().copied().collect();
            let targets =
                Tensor::<4>::from_data(TensorData::new(targets, [n, 1, size, size]), device);
            segmentation_loss(upsample_logits(low_res, size), targets, dice)
        })
        .reduce(|total, loss| total + loss)
        .expect("a batch has at least one image")
}

/// Refuses, before anything is written, a run that could not train: settings that train
/// nothing or cannot ([`TrainSettings::validate`]) and a training set none of whose items reads.
pub fn check_trainable(settings: &TrainSettings, train: &Dataset) -> Result<()> {
    settings.validate().map_err(anyhow::Error::msg)?;
    let mut first_error = None;
    for i in 0..train.len() {
        match train.load(i) {
            Ok(_) => return Ok(()),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        None => bail!("the training set has no items"),
        Some(e) => bail!(
            "none of the {} training items could be read; the first: {e}",
            train.len()
        ),
    }
}

/// Checks that `dir` holds a run that can be resumed (used before any work starts).
pub fn check_resumable(dir: &Path) -> Result<()> {
    let adapter = previous_dir(&dir.join("last")).join("adapter.safetensors");
    if !adapter.exists() {
        bail!(
            "--resume {}: there is no run to continue there (no last/ checkpoint)",
            dir.display()
        );
    }
    read_safetensors_metadata(&adapter)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::scenes::scene;
    use crate::sam::SamConfig;
    use crate::sam::random::random_state_dict;

    /// A batch split across encoder passes (as on a GPU whose buffer limit it would pass) gives
    /// the embeddings and the gradients of one pass.
    #[test]
    fn encoder_passes_split_a_batch_without_changing_it() {
        let device = Device::flex().autodiff();
        let dict = random_state_dict(&SamConfig::named("tiny").unwrap(), 5);
        let sam = Sam::from_state_dict(dict, Some(64), &device).unwrap();
        assert_eq!(sam.images_per_encoder_pass(64, &device), usize::MAX);
        let inputs: Vec<ModelInput> = (0..3)
            .map(|seed| preprocess_sample(&scene(seed, 64, 3), &Preprocessing::Sam, 64))
            .collect();
        let run = |images: usize| {
            let out = encode_in_passes(&sam, &inputs, 64, &device, images);
            assert_eq!(out.dims()[0], 3);
            let grads = (out.clone() * out.clone().detach().sin()).sum().backward();
            let patch_embed = &sam.image_encoder.vit().unwrap().patch_embed.weight;
            let grad = patch_embed.val().grad(&grads).unwrap();
            (out.f32_values(), grad.f32_values())
        };
        let (whole, whole_grad) = run(3);
        for images in [1, 2] {
            let (split, split_grad) = run(images);
            let pairs = whole
                .iter()
                .zip(&split)
                .chain(whole_grad.iter().zip(&split_grad));
            for (a, b) in pairs {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                    "{images}: {a} vs {b}"
                );
            }
        }
    }
}
