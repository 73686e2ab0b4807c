//! `sam-cobot serve`: the local web page and its JSON API (see [`crate::serve`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::model_args::load_model;
use crate::sam::embeddings::EmbeddingSource;
use crate::serve::{ServeSettings, ServedModel, serve};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// SAM checkpoint (.pth or .safetensors): the model `base`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Adapters trained on --checkpoint, each a model named by its file stem (repeatable): the
    /// page shows base and adapted side by side.
    #[arg(long)]
    adapter: Vec<PathBuf>,
    /// A folder whose images the page offers (besides uploads).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Address to listen on: 127.0.0.1 (this machine only) unless you give another.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Port (0: any free one; the URL is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Input size S (default: each model's own).
    #[arg(long)]
    image_size: Option<usize>,
    /// Embeddings kept between runs here (default: ~/.cache/sam-cobot/embeddings).
    #[arg(long, conflicts_with = "no_disk_cache")]
    cache_dir: Option<PathBuf>,
    /// Keep embeddings in memory only.
    #[arg(long)]
    no_disk_cache: bool,
    /// Image embeddings kept in memory (least recently used out first).
    #[arg(long, default_value_t = NonZeroUsize::new(32).expect("nonzero"))]
    cached_embeddings: NonZeroUsize,
    /// Decoded images kept in memory (segment-everything needs the pixels).
    #[arg(long, default_value_t = NonZeroUsize::new(8).expect("nonzero"))]
    cached_images: NonZeroUsize,
    /// Largest upload accepted, in MiB.
    #[arg(long, default_value_t = 64)]
    max_upload_mib: usize,
    /// Largest image accepted, in pixels (width x height).
    #[arg(long, default_value_t = 50_000_000)]
    max_image_pixels: u64,
    /// Model runs at once (more only share the same cores).
    #[arg(long, default_value_t = 1, value_parser = super::at_least_one)]
    max_concurrent: usize,
    /// Requests that may wait for a run; more are refused with 429.
    #[arg(long, default_value_t = 64)]
    max_queued: usize,
    #[command(flatten)]
    device: super::device::DeviceArg,
}

pub fn run(args: ServeArgs) -> Result<()> {
    if !args.host.is_loopback() {
        eprintln!(
            "warning: --host {}: the page and its API will be reachable from other machines, \
             with no authentication",
            args.host
        );
    }
    if let Some(dir) = &args.images
        && !dir.is_dir()
    {
        bail!("--images {}: not a folder", dir.display());
    }
    let device = args.device.device()?;
    let mut models = Vec::new();
    let mut sources: Vec<(String, Option<PathBuf>)> = vec![("base".into(), None)];
    for adapter in &args.adapter {
        let id = adapter
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if sources.iter().any(|(other, _)| *other == id) {
            bail!(
                "--adapter {}: another model is already named '{id}'",
                adapter.display()
            );
        }
        sources.push((id, Some(adapter.clone())));
    }
    let mut base: Option<EmbeddingSource> = None;
    for (id, adapter) in sources {
        let sam = load_model(
            &args.checkpoint,
            adapter.as_deref(),
            args.image_size,
            &device,
        )?;
        // The checkpoint is hashed once, for the first model; adapters only add their own hash.
        let source = match &base {
            Some(base) => base.with_adapter(adapter.as_deref(), sam.image_size)?,
            None => EmbeddingSource::of(&args.checkpoint, adapter.as_deref(), sam.image_size)?,
        };
        base.get_or_insert_with(|| source.clone());
        eprintln!("model '{id}': {} px", sam.image_size);
        models.push(ServedModel {
            id,
            checkpoint: args.checkpoint.clone(),
            adapter,
            sam,
            source,
        });
    }
    let cache_dir = if args.no_disk_cache {
        None
    } else {
        match args.cache_dir {
            Some(dir) => Some(dir),
            None => Some(default_cache_dir()?),
        }
    };
    let settings = ServeSettings {
        address: SocketAddr::new(args.host, args.port),
        images: args.images,
        cached_embeddings: args.cached_embeddings,
        cached_images: args.cached_images,
        cache_dir,
        max_upload_bytes: args.max_upload_mib.saturating_mul(1 << 20),
        max_image_pixels: args.max_image_pixels,
        max_concurrent: args.max_concurrent,
        max_queued: args.max_queued,
    };
    serve(models, settings, |address| {
        // The first line of stdout, so that scripts can read the port.
        println!("serving on http://{address}/");
    })
}

/// `$XDG_CACHE_HOME/sam-cobot/embeddings`, else `~/.cache/sam-cobot/embeddings`.
fn default_cache_dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("no HOME or XDG_CACHE_HOME for the embedding cache: give --cache-dir or --no-disk-cache")?;
    Ok(base.join("sam-cobot").join("embeddings"))
}
