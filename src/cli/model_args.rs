//! The flags that name the model a command runs: `--checkpoint`, `--adapter`, `--image-size` and
//! `--device`, shared by `predict`, `embed` and `segment-everything`; and loading that model, with
//! errors that name the file or the flag.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::adapter::{AdapterError, load_with_adapter};
use crate::checkpoint::load_base;
use crate::sam::ModelLoadError;
use clap::Args;

use crate::files::guard::FileRoles;
use crate::sam::Sam;
use crate::sam::embeddings::EmbeddingSource;

#[derive(Args, Debug)]
pub struct ModelArgs {
    /// SAM checkpoint: Meta's .pth (e.g. sam_vit_b_01ec64.pth) or a .safetensors with the same keys.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Adapter trained on --checkpoint (.safetensors from training): its PEFT modules and
    /// trained tensors are applied; the default --image-size becomes the adapter's.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Input size S the model runs at (a multiple of 16); default: the checkpoint's own (1024),
    /// or the size the adapter was trained at.
    #[arg(long)]
    pub image_size: Option<usize>,
    #[command(flatten)]
    pub device: super::device::DeviceArg,
}

impl ModelArgs {
    /// Records the checkpoint and adapter as inputs.
    pub fn declare_inputs(&self, roles: &mut FileRoles) {
        roles.input("--checkpoint", &self.checkpoint);
        if let Some(adapter) = &self.adapter {
            roles.input("--adapter", adapter);
        }
    }

    /// The model, on the device named; errors name the file or flag.
    pub fn load(&self) -> Result<Sam> {
        let device = self.device.device()?;
        load_model(
            &self.checkpoint,
            self.adapter.as_deref(),
            self.image_size,
            &device,
        )
    }

    /// Which model made embeddings at `image_size` (for saved-embedding files).
    pub fn embedding_source(&self, image_size: usize) -> Result<EmbeddingSource> {
        EmbeddingSource::of(&self.checkpoint, self.adapter.as_deref(), image_size)
    }
}

/// Builds SAM from a base checkpoint and an adapter trained on it; errors name the files.
fn load_sam_with_adapter(
    base: &Path,
    adapter: &Path,
    image_size: Option<usize>,
    device: &burn::tensor::Device,
) -> Result<Sam> {
    load_with_adapter(base, adapter, image_size, device).map_err(|e| match &e {
        AdapterError::Model { source, .. } => size_error(source).unwrap_or_else(|| e.into()),
        _ => e.into(),
    })
}

/// SAM from `checkpoint`, with `adapter`'s PEFT modules and tensors when given.
pub fn load_model(
    checkpoint: &Path,
    adapter: Option<&Path>,
    image_size: Option<usize>,
    device: &burn::tensor::Device,
) -> Result<Sam> {
    match adapter {
        None => load_sam(checkpoint, image_size, device),
        Some(adapter) => load_sam_with_adapter(checkpoint, adapter, image_size, device),
    }
}

/// Reads a checkpoint and builds SAM; errors name the file.
pub fn load_sam(
    path: &Path,
    image_size: Option<usize>,
    device: &burn::tensor::Device,
) -> Result<Sam> {
    let dict = load_base(path)?;
    // A refused size is the flag's fault, anything else the checkpoint's.
    Sam::from_state_dict(dict, image_size, device).map_err(|e| {
        size_error(&e).unwrap_or_else(|| {
            anyhow::Error::new(e)
                .context(format!("{} is not a usable SAM checkpoint", path.display()))
        })
    })
}

/// The flag's message when the model refused the input size itself.
fn size_error(e: &ModelLoadError) -> Option<anyhow::Error> {
    match e {
        ModelLoadError::BadImageSize(size, patch) => Some(anyhow::anyhow!(
            "--image-size {size}: must be a positive multiple of the model's patch size {patch}"
        )),
        ModelLoadError::ImageSizeTooLarge { .. } => Some(anyhow::anyhow!("--image-size: {e}")),
        _ => None,
    }
}
