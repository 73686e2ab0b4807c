//! The flags that name the model a command runs: `--checkpoint`, `--adapter`, `--image-size` and
//! `--device`, shared by `predict`, `embed` and `segment-everything`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::predict::load_model;
use crate::output::guard::FileRoles;
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
    /// auto (a GPU this build can drive, else the CPU), cpu, vulkan[:N|:cpu] or cuda[:N] (GPU
    /// backends need their cargo feature).
    #[arg(long, default_value = "auto")]
    pub device: String,
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
        let device = super::device::parse(&self.device)?;
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
