//! `sam-cobot embed`: the image embeddings of one or many images, saved so that `predict
//! --embeddings` decodes prompts without running the encoder again (see
//! [`crate::sam::embeddings`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::model_args::ModelArgs;
use crate::data::open_image;
use crate::files::guard::{FileRoles, refuse_existing};
use crate::nn::to_raw;
use crate::sam::embeddings::{SavedEmbedding, image_name, write_embeddings};
use crate::sam::predictor::Predictor;

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Images, or folders of images (their image files, by name); each is stored under its file
    /// name, which must be unique.
    #[arg(long, required = true, num_args = 1..)]
    images: Vec<PathBuf>,
    /// Output file (.safetensors): one `[1, E, g, g]` embedding per image, with the model's
    /// identity and each image's size as metadata.
    #[arg(long)]
    out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
}

pub fn run(args: EmbedArgs) -> Result<()> {
    let files = image_files(&args.images)?;
    let mut roles = FileRoles::new();
    args.model.declare_inputs(&mut roles);
    for (_, path) in &files {
        roles.input("--images", path);
    }
    if args.out.extension().is_none_or(|e| e != "safetensors") {
        bail!(
            "--out {}: embeddings are written as .safetensors",
            args.out.display()
        );
    }
    roles.output("--out", &args.out)?;
    refuse_existing("--out", &args.out, args.force)?;

    let sam = args.model.load()?;
    let source = args.model.embedding_source(sam.image_size)?;
    let predictor = Predictor::new(&sam);
    let bar = ProgressBar::new(files.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} images  {per_sec}  eta {eta}")
            .expect("valid template"),
    );
    let started = Instant::now();
    let mut embeddings = BTreeMap::new();
    for (name, path) in &files {
        let image = open_image(path)?.to_rgb8();
        let embedded = predictor.set_image(&image);
        embeddings.insert(
            name.clone(),
            SavedEmbedding {
                embedding: to_raw(embedded.embedding)?,
                original_size: embedded.original_size,
            },
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    write_embeddings(&args.out, &source, &embeddings)?;
    println!(
        "{} image embedding(s) at {} px in {:.1}s -> {}",
        embeddings.len(),
        sam.image_size,
        started.elapsed().as_secs_f32(),
        args.out.display()
    );
    Ok(())
}

/// The images named, each under its file name, which must be unique.
fn image_files(paths: &[PathBuf]) -> Result<Vec<(String, PathBuf)>> {
    let files = super::image_files::image_files("--images", paths)?;
    let mut named: BTreeMap<String, PathBuf> = BTreeMap::new();
    for file in files {
        let name = image_name(&file);
        if let Some(other) = named.insert(name.clone(), file.clone()) {
            bail!(
                "--images: {} and {} have the same name '{name}': embeddings are stored by file \
                 name",
                other.display(),
                file.display()
            );
        }
    }
    Ok(named.into_iter().collect())
}
