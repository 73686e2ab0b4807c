//! `sam-cobot predict`: masks for box and point prompts on one image.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;

use super::model_args::ModelArgs;
use crate::files::guard::FileRoles;
use crate::nn::{F32Values, from_raw};
use crate::output::mask_png::{check_png_name, mask_paths, write_mask_png};
use crate::output::npy::{read_npy_f32, write_npy_f32};
use crate::output::overlay::{OverlayPrompts, write_overlay};
use crate::sam::Sam;
use crate::sam::embeddings::{image_name, read_embeddings};
use crate::sam::predictor::{ImageEmbedding, Predictor, UserPrompts};

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Input image (PNG, JPEG, ...: the format is read from the bytes); grey images are used as
    /// RGB, and an EXIF orientation is applied as image viewers do.
    #[arg(long)]
    image: PathBuf,
    /// Box prompt `x1,y1,x2,y2` in image pixels; one mask per box (repeatable).
    #[arg(long = "box", value_name = "X1,Y1,X2,Y2", allow_hyphen_values = true)]
    boxes: Vec<BoxArg>,
    /// Point prompt `x,y[,label]`, label 1 = foreground (default), 0 = background (repeatable).
    /// Points join every box; without a box, all points make one mask.
    #[arg(long = "point", value_name = "X,Y[,LABEL]", allow_hyphen_values = true)]
    points: Vec<PointArg>,
    /// Binary mask PNG at the image's resolution; several masks are numbered (mask_0.png, ...),
    /// and with --multimask by prompt and mask (mask_0_0.png, mask_0_1.png, ...).
    #[arg(long)]
    out: PathBuf,
    /// SAM's three masks per prompt, each with its predicted IoU (for ambiguous prompts such as
    /// one point), instead of the single mask.
    #[arg(long)]
    multimask: bool,
    /// Of the three masks, keep the one with the highest predicted IoU (as SamPredictor users
    /// do); implies --multimask's prediction, writes one mask per prompt.
    #[arg(long, conflicts_with = "multimask")]
    best: bool,
    /// Also write the image with the masks and prompts drawn on it.
    #[arg(long)]
    overlay: Option<PathBuf>,
    /// A mask prompt: low-resolution logits of an earlier prediction (its --logits-out, or
    /// SamPredictor's `low_res_masks`) as float32 .npy, `1 x S/4 x S/4` or `N x 1 x S/4 x S/4`
    /// (one per prompt, or one for all): SAM's iterative refinement.
    #[arg(long)]
    mask_input: Option<PathBuf>,
    /// Decode with the image's saved embedding from this file (`sam-cobot embed`, by the
    /// image's file name) instead of running the encoder; refused if another checkpoint,
    /// adapter or input size made it.
    #[arg(long)]
    embeddings: Option<PathBuf>,
    /// Low-resolution mask logits as float32 .npy, `N x K x S/4 x S/4` (K = 3 with --multimask,
    /// else 1).
    #[arg(long)]
    logits_out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
struct BoxArg([f32; 4]);

impl FromStr for BoxArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v = parse_numbers(s)?;
        let [x1, y1, x2, y2] = v[..] else {
            return Err(format!("'{s}': a box is four numbers x1,y1,x2,y2"));
        };
        if x2 <= x1 || y2 <= y1 {
            return Err(format!(
                "'{s}': the box has no area (need x1 < x2 and y1 < y2)"
            ));
        }
        Ok(Self([x1, y1, x2, y2]))
    }
}

#[derive(Debug, Clone, Copy)]
struct PointArg((f32, f32, i32));

impl FromStr for PointArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v = parse_numbers(s)?;
        let label = match v[..] {
            [_, _] => 1,
            [_, _, l] if l == 0.0 || l == 1.0 => l as i32,
            [_, _, _] => {
                return Err(format!(
                    "'{s}': the label must be 1 (foreground) or 0 (background)"
                ));
            }
            _ => return Err(format!("'{s}': a point is x,y or x,y,label")),
        };
        Ok(Self((v[0], v[1], label)))
    }
}

fn parse_numbers(s: &str) -> Result<Vec<f32>, String> {
    s.split(',')
        .map(|part| match part.trim().parse::<f32>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(format!("'{s}': '{part}' is not a number")),
        })
        .collect()
}

pub fn run(args: PredictArgs) -> Result<()> {
    ensure!(
        !args.boxes.is_empty() || !args.points.is_empty() || args.mask_input.is_some(),
        "give at least one --box, --point or --mask-input"
    );
    let image = crate::data::open_image(&args.image)?.to_rgb8();
    let (h, w) = (image.height() as usize, image.width() as usize);
    let prompts = UserPrompts {
        boxes: args.boxes.iter().map(|b| b.0).collect(),
        points: args.points.iter().map(|p| p.0).collect(),
    };
    prompts
        .check_inside(w, h)
        .map_err(|e| anyhow::anyhow!("--{e}"))?;

    let started = Instant::now();
    let sam = args.model.load()?;
    let adapter = match (&args.model.adapter, &sam.peft) {
        (Some(path), Some(cfg)) => format!(" + {} ({})", path.display(), cfg.method),
        _ => String::new(),
    };
    eprintln!(
        "loaded {}{adapter} ({}) at {} px in {:.1}s",
        args.model.checkpoint.display(),
        sam.config.variant(),
        sam.image_size,
        started.elapsed().as_secs_f32()
    );
    // SAM's multimask outputs: every mask token but the single-mask one.
    let multimask_outputs = sam.config.decoder.num_mask_tokens - 1;
    check_outputs(&args, if args.multimask { multimask_outputs } else { 1 })?;
    let mask_input = match &args.mask_input {
        Some(path) => Some(read_mask_input(path, &sam, prompts.boxes.len().max(1))?),
        None => None,
    };
    let predictor = Predictor::new(&sam);
    predictor.check_prompts_per_call(&prompts)?;
    let embedding = match &args.embeddings {
        Some(path) => {
            let started = Instant::now();
            let saved = saved_embedding(path, &args, &sam, (h, w))?;
            eprintln!(
                "read the saved embedding and checked its model in {:.2}s",
                started.elapsed().as_secs_f32()
            );
            saved
        }
        None => {
            let started = Instant::now();
            let embedded = predictor.set_image(&image);
            eprintln!(
                "encoded the image in {:.2}s",
                started.elapsed().as_secs_f32()
            );
            embedded
        }
    };
    let started = Instant::now();
    let prediction = predictor.predict_with_mask(
        &embedding,
        &prompts,
        mask_input,
        args.multimask || args.best,
    )?;
    let prediction = if args.best {
        prediction.keep_best()
    } else {
        prediction
    };
    eprintln!(
        "decoded the prompts in {:.3}s",
        started.elapsed().as_secs_f32()
    );

    let k = prediction.per_prompt();
    let paths = mask_paths(&args.out, prediction.masks.len() / k, k);
    for (i, (mask, path)) in prediction.masks.iter().zip(&paths).enumerate() {
        write_mask_png(path, mask, h, w)?;
        let name = if k == 1 {
            format!("{i}")
        } else {
            format!("{} ({} of {k})", i / k, i % k + 1)
        };
        println!(
            "mask {name}: predicted IoU {:.4} -> {}",
            prediction.iou[i],
            path.display()
        );
    }
    if let Some(path) = &args.overlay {
        let masks: Vec<&[f32]> = prediction.masks.iter().map(Vec::as_slice).collect();
        let drawn = OverlayPrompts {
            boxes: prompts.boxes.clone(),
            points: prompts.points.clone(),
        };
        write_overlay(path, &image, &masks, &drawn)?;
        println!("overlay -> {}", path.display());
    }
    if let Some(path) = &args.logits_out {
        let dims = prediction.low_res_logits.dims();
        let data: Vec<f32> = prediction.low_res_logits.try_f32_values()?;
        write_npy_f32(path, &dims, &data)?;
        println!("low-res logits {dims:?} -> {}", path.display());
    }
    Ok(())
}

/// No output may replace an input or another output; masks and overlays are PNG files.
/// `per_prompt`: the masks written for each prompt.
fn check_outputs(args: &PredictArgs, per_prompt: usize) -> Result<()> {
    let mut roles = FileRoles::new();
    roles.input("--image", &args.image);
    args.model.declare_inputs(&mut roles);
    for (flag, path) in [
        ("--mask-input", &args.mask_input),
        ("--embeddings", &args.embeddings),
    ] {
        if let Some(path) = path {
            roles.input(flag, path);
        }
    }
    check_png_name("--out", &args.out)?;
    for path in mask_paths(&args.out, args.boxes.len().max(1), per_prompt) {
        roles.output("--out", &path)?;
    }
    if let Some(path) = &args.overlay {
        check_png_name("--overlay", path)?;
        roles.output("--overlay", path)?;
    }
    if let Some(path) = &args.logits_out {
        roles.output("--logits-out", path)?;
    }
    Ok(())
}

/// The image's embedding from an `embed` file, checked against this model and this image.
fn saved_embedding(
    path: &Path,
    args: &PredictArgs,
    sam: &Sam,
    size: (usize, usize),
) -> Result<ImageEmbedding> {
    let (source, mut embeddings) = read_embeddings(path)?;
    let current = args.model.embedding_source(sam.image_size)?;
    source.check_matches(&current, path)?;
    let name = image_name(&args.image);
    let Some(saved) = embeddings.remove(&name) else {
        let known: Vec<&String> = embeddings.keys().take(5).collect();
        bail!(
            "--embeddings {}: no embedding of '{name}' (it holds {} image(s): {known:?}...)",
            path.display(),
            embeddings.len()
        );
    };
    if saved.original_size != size {
        bail!(
            "--embeddings {}: '{name}' was {}x{} when it was embedded, --image {} is {}x{}",
            path.display(),
            saved.original_size.1,
            saved.original_size.0,
            args.image.display(),
            size.1,
            size.0
        );
    }
    let embedding = from_raw(saved.embedding, &sam.device()).with_context(|| {
        format!(
            "--embeddings {}: '{name}' is not [1, E, g, g]",
            path.display()
        )
    })?;
    Ok(ImageEmbedding {
        embedding,
        original_size: size,
    })
}

/// The `--mask-input` logits as `[M, 1, S/4, S/4]` (M = 1 or one per prompt), shape-checked.
fn read_mask_input(path: &Path, sam: &Sam, prompts: usize) -> Result<burn::tensor::Tensor<4>> {
    let (shape, data) = read_npy_f32(path)?;
    let side = sam.image_size / 4;
    let masks = match shape[..] {
        [1, h, w] if h == side && w == side => 1,
        [m, 1, h, w] if h == side && w == side && (m == 1 || m == prompts) => m,
        _ => bail!(
            "--mask-input {}: shape {shape:?}, expected 1 x {side} x {side} or N x 1 x {side} x \
             {side} with N = 1 or the {prompts} prompt(s) (the low-resolution logits of a \
             prediction at input size {})",
            path.display(),
            sam.image_size
        ),
    };
    let device = sam.device();
    Ok(burn::tensor::Tensor::from_data(
        burn::tensor::TensorData::new(data, [masks, 1, side, side]),
        &device,
    ))
}
