//! Saved image embeddings (`sam-cobot embed`): the encoder's output for one or many images, so
//! that prompts can be decoded later without running the encoder again.
//!
//! A `.safetensors` file: one tensor per image, `[1, E, g, g]` under the image's file name, and
//! `__metadata__` entries that say which model made them:
//!
//! | key | value |
//! |---|---|
//! | `format` | `sam-cobot-embeddings` |
//! | `version` | `1` |
//! | `checkpoint_tensors_sha256` | the base checkpoint's tensor hash (as adapters record it) |
//! | `checkpoint_sha256` | its file's SHA-256 (information) |
//! | `adapter_sha256` | the adapter file's SHA-256, absent without an adapter |
//! | `image_size` | the input size S the encoder ran at |
//! | `original_sizes` | JSON `{name: [h, w]}`: each image's own size, which decoding needs |

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::checkpoint::{BaseId, sha256_file};
use crate::checkpoint::{
    RawTensor, StateDict, load_state_dict, read_safetensors_metadata, write_safetensors,
};

pub const EMBEDDINGS_FORMAT: &str = "sam-cobot-embeddings";
const VERSION: &str = "1";

/// Which model made a set of embeddings: only that model may decode them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingSource {
    pub checkpoint_tensors_sha256: String,
    pub checkpoint_sha256: String,
    pub adapter_sha256: Option<String>,
    pub image_size: usize,
}

impl EmbeddingSource {
    /// The source of embeddings made with `checkpoint` (and `adapter`) at input size `image_size`.
    pub fn of(checkpoint: &Path, adapter: Option<&Path>, image_size: usize) -> Result<Self> {
        let base = BaseId::of(checkpoint)?;
        Self {
            checkpoint_tensors_sha256: base.tensors_sha256,
            checkpoint_sha256: base.file_sha256,
            adapter_sha256: None,
            image_size,
        }
        .with_adapter(adapter, image_size)
    }

    /// The same checkpoint with `adapter` at `image_size`, without hashing the checkpoint again.
    pub fn with_adapter(&self, adapter: Option<&Path>, image_size: usize) -> Result<Self> {
        let adapter_sha256 = match adapter {
            Some(path) => {
                Some(sha256_file(path).with_context(|| format!("cannot read {}", path.display()))?)
            }
            None => None,
        };
        Ok(Self {
            adapter_sha256,
            image_size,
            ..self.clone()
        })
    }

    /// Refuses embeddings made by another model than `current`, naming both.
    pub fn check_matches(&self, current: &EmbeddingSource, file: &Path) -> Result<()> {
        let differs = |what: &str, made: &str, now: &str| {
            anyhow::anyhow!(
                "{}: the embeddings were made with {what} {made}, but this model has {now}: \
                 make them again with `sam-cobot embed` for this model",
                file.display()
            )
        };
        if self.checkpoint_tensors_sha256 != current.checkpoint_tensors_sha256 {
            return Err(differs(
                "a checkpoint whose tensors hash to",
                &self.checkpoint_tensors_sha256,
                &current.checkpoint_tensors_sha256,
            ));
        }
        let name = |a: &Option<String>| a.clone().unwrap_or_else(|| "no adapter".into());
        if self.adapter_sha256 != current.adapter_sha256 {
            return Err(differs(
                "adapter",
                &name(&self.adapter_sha256),
                &name(&current.adapter_sha256),
            ));
        }
        if self.image_size != current.image_size {
            return Err(differs(
                "input size",
                &self.image_size.to_string(),
                &current.image_size.to_string(),
            ));
        }
        Ok(())
    }
}

/// The name an image's embedding is stored under: its file name.
pub fn image_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// One image's embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedEmbedding {
    /// `[1, E, g, g]`.
    pub embedding: RawTensor,
    /// The image's own `(h, w)`.
    pub original_size: (usize, usize),
}

/// Writes `embeddings` (by image name) and their source to `path`, atomically.
pub fn write_embeddings(
    path: &Path,
    source: &EmbeddingSource,
    embeddings: &BTreeMap<String, SavedEmbedding>,
) -> Result<()> {
    let mut meta = BTreeMap::new();
    meta.insert("format".into(), EMBEDDINGS_FORMAT.into());
    meta.insert("version".into(), VERSION.into());
    meta.insert(
        "checkpoint_tensors_sha256".into(),
        source.checkpoint_tensors_sha256.clone(),
    );
    meta.insert("checkpoint_sha256".into(), source.checkpoint_sha256.clone());
    if let Some(adapter) = &source.adapter_sha256 {
        meta.insert("adapter_sha256".into(), adapter.clone());
    }
    meta.insert("image_size".into(), source.image_size.to_string());
    let sizes: BTreeMap<&str, [usize; 2]> = embeddings
        .iter()
        .map(|(name, e)| (name.as_str(), [e.original_size.0, e.original_size.1]))
        .collect();
    meta.insert("original_sizes".into(), serde_json::to_string(&sizes)?);
    let dict: StateDict = embeddings
        .iter()
        .map(|(name, e)| (name.clone(), e.embedding.clone()))
        .collect();
    write_safetensors(path, &dict, &meta)?;
    Ok(())
}

/// Reads an embeddings file: its source and the embeddings by image name.
pub fn read_embeddings(path: &Path) -> Result<(EmbeddingSource, BTreeMap<String, SavedEmbedding>)> {
    let meta = read_safetensors_metadata(path)?;
    let get = |key: &str| {
        meta.get(key)
            .with_context(|| format!("{}: no '{key}' in its metadata", path.display()))
    };
    if meta.get("format").map(String::as_str) != Some(EMBEDDINGS_FORMAT) {
        bail!(
            "{}: not a sam-cobot embeddings file (its metadata has no format '{EMBEDDINGS_FORMAT}'; \
             `sam-cobot embed` writes them)",
            path.display()
        );
    }
    if get("version")? != VERSION {
        bail!(
            "{}: embeddings format version {} (this build reads {VERSION})",
            path.display(),
            get("version")?
        );
    }
    let image_size = get("image_size")?
        .parse()
        .with_context(|| format!("{}: image_size is not a number", path.display()))?;
    let source = EmbeddingSource {
        checkpoint_tensors_sha256: get("checkpoint_tensors_sha256")?.clone(),
        checkpoint_sha256: get("checkpoint_sha256")?.clone(),
        adapter_sha256: meta.get("adapter_sha256").cloned(),
        image_size,
    };
    let sizes: BTreeMap<String, [usize; 2]> = serde_json::from_str(get("original_sizes")?)
        .with_context(|| {
            format!(
                "{}: original_sizes is not a name → [h, w] map",
                path.display()
            )
        })?;
    let mut embeddings = BTreeMap::new();
    for (name, embedding) in load_state_dict(path)? {
        let Some(&[h, w]) = sizes.get(&name) else {
            bail!(
                "{}: embedding '{name}' has no original size",
                path.display()
            );
        };
        embeddings.insert(
            name,
            SavedEmbedding {
                embedding,
                original_size: (h, w),
            },
        );
    }
    Ok((source, embeddings))
}
