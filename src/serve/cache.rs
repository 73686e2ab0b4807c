//! The server's image embeddings: computed once per (model, image), kept in memory (least
//! recently used out first) and on disk, where they are checked against the model that made
//! them before use, so a stale file is never decoded.
//!
//! The memory side is a short lock, safe on the async threads; the disk side reads and writes
//! files and runs on blocking threads.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::sam::embeddings::{EmbeddingSource, SavedEmbedding, read_embeddings, write_embeddings};

/// One image's embedding by one model: `[1, E, g, g]` and the image's `(h, w)`.
pub type Embedding = Arc<SavedEmbedding>;

pub struct EmbeddingCache {
    memory: Mutex<LruCache<(String, String), Embedding>>,
    disk: Option<PathBuf>,
}

/// The name a saved embedding is stored under in its file.
const NAME: &str = "image";

impl EmbeddingCache {
    /// `capacity` embeddings in memory; files under `disk` when given.
    pub fn new(capacity: NonZeroUsize, disk: Option<PathBuf>) -> Self {
        Self {
            memory: Mutex::new(LruCache::new(capacity)),
            disk,
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, LruCache<(String, String), Embedding>> {
        // A panic elsewhere cannot leave the map half-updated: each use is one call.
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The embedding of image `image` (its SHA-256) by model `model`, if it is in memory.
    pub fn remembered(&self, model: &str, image: &str) -> Option<Embedding> {
        self.memory()
            .get(&(model.to_string(), image.to_string()))
            .cloned()
    }

    pub fn remember(&self, model: &str, image: &str, embedding: Embedding) {
        self.memory()
            .put((model.to_string(), image.to_string()), embedding);
    }

    /// The embedding on disk, if there is one that `source` made (blocking).
    pub fn load(&self, source: &EmbeddingSource, image: &str) -> Option<SavedEmbedding> {
        let path = self.file(source, image)?;
        let (made_by, mut saved) = read_embeddings(&path).ok()?;
        made_by.check_matches(source, &path).ok()?;
        saved.remove(NAME)
    }

    /// Writes a freshly computed embedding to disk when there is a disk cache (blocking). A
    /// failed write only costs a recomputation later, so it is reported and not fatal.
    pub fn store(&self, source: &EmbeddingSource, image: &str, embedding: &SavedEmbedding) {
        let Some(path) = self.file(source, image) else {
            return;
        };
        let one = [(NAME.to_string(), embedding.clone())]
            .into_iter()
            .collect();
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(anyhow::Error::from)
            .and_then(|()| write_embeddings(&path, source, &one));
        if let Err(e) = written {
            eprintln!("warning: embedding cache: {e:#}");
        }
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
