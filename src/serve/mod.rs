//! `sam-cobot serve`: a local web page for interactive segmentation, and the JSON API behind it
//! (docs/serve.md). The page's files are in `static/`, compiled into the binary.
//!
//! Requests that run a model wait for one of a few compute slots (`max_concurrent`; more would
//! only share the same cores) in a bounded queue; a request beyond the queue is refused with 429
//! at once. Image embeddings are computed once per (model, image) and cached ([`cache`]).

mod api;
pub mod cache;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use axum::Router;
use axum::http::StatusCode;
use image::RgbImage;
use lru::LruCache;
use tokio::sync::{Mutex, Semaphore};

use crate::sam::Sam;
use crate::sam::embeddings::EmbeddingSource;
use api::ApiError;
use cache::EmbeddingCache;

/// A model the page can use: SAM, or SAM with an adapter.
pub struct ServedModel {
    /// `base`, or the adapter file's stem.
    pub id: String,
    pub checkpoint: PathBuf,
    pub adapter: Option<PathBuf>,
    pub sam: Sam,
    pub source: EmbeddingSource,
}

#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub address: SocketAddr,
    /// A folder whose images the page lists.
    pub images: Option<PathBuf>,
    /// Embeddings kept in memory.
    pub cached_embeddings: NonZeroUsize,
    /// Decoded images kept in memory (segment-everything needs the pixels, predict only the
    /// embedding).
    pub cached_images: NonZeroUsize,
    /// Where embeddings are kept between runs (none: memory only).
    pub cache_dir: Option<PathBuf>,
    /// Largest upload accepted, in bytes.
    pub max_upload_bytes: usize,
    /// Largest image accepted, in pixels.
    pub max_image_pixels: u64,
    /// Model runs at once.
    pub max_concurrent: usize,
    /// Requests waiting for a slot before new ones are refused.
    pub max_queued: usize,
}

struct AppState {
    models: Vec<ServedModel>,
    settings: ServeSettings,
    embeddings: EmbeddingCache,
    images: Mutex<LruCache<String, Arc<RgbImage>>>,
    slots: Semaphore,
    waiting: AtomicUsize,
    pool: rayon::ThreadPool,
}

impl AppState {
    fn model(&self, id: &str) -> Result<&ServedModel, ApiError> {
        self.models.iter().find(|m| m.id == id).ok_or_else(|| {
            let known: Vec<&str> = self.models.iter().map(|m| m.id.as_str()).collect();
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown model '{id}' (this server has: {})",
                    known.join(", ")
                ),
            )
        })
    }

    /// Runs `work` on the compute pool once a slot is free; 429 when the queue is full.
    async fn compute<T, F>(self: &Arc<Self>, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&AppState) -> Result<T, ApiError> + Send + 'static,
    {
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        if queued >= self.settings.max_queued + self.settings.max_concurrent {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many concurrent requests ({queued} running or waiting); try again shortly"
                ),
            ));
        }
        let permit = self.slots.acquire().await;
        let result = self
            .blocking(move |state| state.pool.install(|| work(state)))
            .await;
        drop(permit);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// Runs `work` (file I/O, decoding) on a blocking thread, off the async ones, without
    /// taking a compute slot.
    async fn blocking<T, F>(self: &Arc<Self>, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&AppState) -> Result<T, ApiError> + Send + 'static,
    {
        let state = self.clone();
        tokio::task::spawn_blocking(move || work(&state))
            .await
            .map_err(|e| ApiError::internal(format!("the computation failed: {e}")))?
    }
}

/// Serves `models` until Ctrl-C; `on_ready` gets the bound address (port 0 picks a free one).
pub fn serve(
    models: Vec<ServedModel>,
    settings: ServeSettings,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let threads = rayon::current_num_threads();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("cannot start the worker threads")?;
    let state = Arc::new(AppState {
        embeddings: EmbeddingCache::new(settings.cached_embeddings, settings.cache_dir.clone()),
        images: Mutex::new(LruCache::new(settings.cached_images)),
        slots: Semaphore::new(settings.max_concurrent.max(1)),
        waiting: AtomicUsize::new(0),
        pool,
        models,
        settings,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the server's runtime")?;
    runtime.block_on(async move {
        let address = state.settings.address;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        on_ready(listener.local_addr()?);
        let app: Router = api::router(state);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("the server stopped")
    })
}
