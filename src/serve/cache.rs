//! The server's image embeddings: computed once per (model, image), kept in memory (least
//! recently used out first) and on disk, where they are checked against the model that made
//! them before use, so a stale file is never decoded.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use lru::LruCache;

use crate::checkpoint::RawTensor;
use crate::sam::embeddings::{EmbeddingSource, SavedEmbedding, read_embeddings, write_embeddings};

/// One image's embedding by one model: `[1, E, g, g]` and the image's `(h, w)`.
pub type Embedding = Arc<SavedEmbedding>;

pub struct EmbeddingCache {
    memory: LruCache<(String, String), Embedding>,
    disk: Option<PathBuf>,
}

/// The name a saved embedding is stored under in its file.
const NAME: &str = "image";

impl EmbeddingCache {
    /// `capacity` embeddings in memory; files under `disk` when given.
    pub fn new(capacity: NonZeroUsize, disk: Option<PathBuf>) -> Self {
        Self {
            memory: LruCache::new(capacity),
            disk,
        }
    }

    /// The embedding of image `image` (its SHA-256) by model `model`, from memory or disk.
    pub fn get(&mut self, model: &str, source: &EmbeddingSource, image: &str) -> Option<Embedding> {
        let key = (model.to_string(), image.to_string());
        if let Some(hit) = self.memory.get(&key) {
            return Some(hit.clone());
        }
        let path = self.file(source, image)?;
        let (made_by, mut saved) = read_embeddings(&path).ok()?;
        made_by.check_matches(source, &path).ok()?;
        let embedding = Arc::new(saved.remove(NAME)?);
        self.memory.put(key, embedding.clone());
        Some(embedding)
    }

    /// Keeps a freshly computed embedding (and writes it to disk when there is a disk cache; a
    /// failed write only costs a recomputation later, so it is reported and not fatal).
    pub fn put(
        &mut self,
        model: &str,
        source: &EmbeddingSource,
        image: &str,
        embedding: RawTensor,
        original_size: (usize, usize),
    ) -> Embedding {
        let saved = Arc::new(SavedEmbedding {
            embedding,
            original_size,
        });
        if let Some(path) = self.file(source, image) {
            let one = [(NAME.to_string(), (*saved).clone())].into_iter().collect();
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .map_err(anyhow::Error::from)
                .and_then(|()| write_embeddings(&path, source, &one));
            if let Err(e) = written {
                eprintln!("warning: embedding cache: {e:#}");
            }
        }
        self.memory
            .put((model.to_string(), image.to_string()), saved.clone());
        saved
    }

    /// `<disk>/<model identity>/<image sha256>.safetensors`: the identity is the checkpoint's
    /// tensor hash, the adapter's hash and the input size, so another model never finds it.
    fn file(&self, source: &EmbeddingSource, image: &str) -> Option<PathBuf> {
        let dir = self.disk.as_ref()?;
        let adapter = source.adapter_sha256.as_deref().unwrap_or("none");
        let model = format!(
            "{}-{}-{}",
            &source.checkpoint_tensors_sha256[..16.min(source.checkpoint_tensors_sha256.len())],
            &adapter[..16.min(adapter.len())],
            source.image_size
        );
        Some(dir.join(model).join(format!("{image}.safetensors")))
    }
}
