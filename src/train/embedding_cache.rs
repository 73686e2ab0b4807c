//! Cached image embeddings for training with a frozen image encoder (`train --cache-embeddings
//! DIR`): each training input's embedding is computed once and read back in later epochs and
//! runs, so an epoch runs only the prompt encoder and mask decoder.
//!
//! A cached file is `DIR/<key>.safetensors`, one `[1, E, g, g]` tensor. The key is a SHA-256 of
//! the base checkpoint's tensor hash, the input size, the preprocessing and the preprocessed
//! input's own values: a cache entry is found only for exactly the same encoder input through
//! exactly the same encoder, so it is never used stale, and it survives restarts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::{Device, Tensor, TensorData};
use sha2::{Digest, Sha256};

use crate::checkpoint::BaseId;
use crate::checkpoint::{StateDict, load_state_dict, write_safetensors};
use crate::data::preprocess::{ModelInput, Preprocessing};
use crate::nn::{from_raw, to_raw};
use crate::sam::Sam;

const TENSOR: &str = "embedding";

pub struct EmbeddingCache {
    dir: PathBuf,
    /// What every key starts from: the encoder and how its input is made.
    model_key: Vec<u8>,
}

impl EmbeddingCache {
    /// The cache in `dir` (created if needed) for the encoder of `base` at `image_size`.
    pub fn open(
        dir: &Path,
        base: &BaseId,
        image_size: usize,
        preprocessing: &Preprocessing,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--cache-embeddings {}: cannot create", dir.display()))?;
        let model_key = format!(
            "sam-cobot embedding cache v1\n{}\n{image_size}\n{preprocessing:?}\n",
            base.tensors_sha256
        )
        .into_bytes();
        Ok(Self {
            dir: dir.to_path_buf(),
            model_key,
        })
    }

    fn path(&self, input: &ModelInput) -> PathBuf {
        let mut hasher = Sha256::new();
        hasher.update(&self.model_key);
        for chunk in input.image.chunks(1 << 16) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            hasher.update(&bytes);
        }
        self.dir
            .join(format!("{:x}.safetensors", hasher.finalize()))
    }

    /// The embeddings `[B, E, g, g]` of `inputs` (each `S × S`), from the cache where it holds
    /// them; the others are computed with `sam`'s encoder (as a constant: it is frozen) and
    /// written to the cache.
    pub fn embeddings(
        &self,
        sam: &Sam,
        inputs: &[ModelInput],
        size: usize,
        device: &Device,
    ) -> Result<Tensor<4>> {
        let mut planes = Vec::with_capacity(inputs.len());
        for input in inputs {
            let path = self.path(input);
            let cached = if path.exists() {
                load_state_dict(&path)?.remove(TENSOR)
            } else {
                None
            };
            let plane = match cached {
                Some(raw) => from_raw::<4>(raw, device)
                    .with_context(|| format!("{}: not a [1, E, g, g] embedding", path.display()))?,
                None => {
                    let image = Tensor::<4>::from_data(
                        TensorData::new(input.image.clone(), [1, 3, size, size]),
                        device,
                    );
                    let embedding = sam.embed_image(image).detach();
                    let mut dict = StateDict::new();
                    dict.insert(TENSOR, to_raw(embedding.clone())?);
                    write_safetensors(&path, &dict, &Default::default())?;
                    embedding
                }
            };
            planes.push(plane);
        }
        Ok(Tensor::cat(planes, 0))
    }
}
