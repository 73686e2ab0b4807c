//! The routes: the page's static files and the JSON API (docs/serve.md#api).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::data::{decode_image, list_images};
use crate::nn::{F32Values, from_raw, to_raw};
use crate::output::automatic_masks::{CocoRle, MaskRecord};
use crate::rle::Rle;
use crate::sam::embeddings::SavedEmbedding;
use crate::sam::mask_generator::{MaskGenerator, MaskGeneratorSettings, mask_box};
use crate::sam::predictor::{ImageEmbedding, Predictor, UserPrompts};

/// An error as the API returns it: `{"error": "..."}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The model's device failed to compute or give back a result.
    fn device(e: anyhow::Error) -> Self {
        Self::internal(format!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        Self::new(e.status(), format!("malformed request: {}", e.body_text()))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        Self::new(e.status(), e.body_text())
    }
}

pub(super) fn router(state: Arc<AppState>) -> Router {
    let limit = state.settings.max_upload_bytes;
    Router::new()
        .route("/", get(|| static_file("index.html")))
        .route(
            "/static/{file}",
            get(|UrlPath(f): UrlPath<String>| static_file_owned(f)),
        )
        .route("/models", get(models))
        .route("/images", get(images))
        .route("/images/{name}", get(image_file))
        .route("/embed", post(embed))
        .route("/predict", post(predict))
        .route("/everything", post(everything))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such page or API route") })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

const INDEX: &str = include_str!("static/index.html");
const APP_JS: &str = include_str!("static/app.js");
const STYLE: &str = include_str!("static/style.css");

async fn static_file(name: &'static str) -> Response {
    static_file_owned(name.to_string()).await
}

async fn static_file_owned(name: String) -> Response {
    let (body, kind) = match name.as_str() {
        "index.html" => (INDEX, "text/html; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        _ => {
            return ApiError::new(StatusCode::NOT_FOUND, format!("no file {name}")).into_response();
        }
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

#[derive(Serialize)]
struct ModelInfo {
    id: String,
    checkpoint: String,
    adapter: Option<String>,
    method: Option<String>,
    image_size: usize,
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Vec<ModelInfo>> {
    Json(
        state
            .models
            .iter()
            .map(|m| ModelInfo {
                id: m.id.clone(),
                checkpoint: m.checkpoint.display().to_string(),
                adapter: m.adapter.as_ref().map(|a| a.display().to_string()),
                method: m.sam.peft.as_ref().map(|p| p.method.to_string()),
                image_size: m.sam.image_size,
            })
            .collect(),
    )
}

/// The `--images` folder's image files, by name.
fn image_names(state: &AppState) -> Vec<String> {
    let Some(dir) = &state.settings.images else {
        return Vec::new();
    };
    list_images(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect()
}

async fn images(State(state): State<Arc<AppState>>) -> Result<Json<Vec<String>>, ApiError> {
    let names = state.blocking(|state| Ok(image_names(state))).await?;
    Ok(Json(names))
}

/// The bytes of one listed image (only names the folder lists, so no path leaves it).
fn listed_image(state: &AppState, name: &str) -> Result<Vec<u8>, ApiError> {
    let dir = state.settings.images.as_ref();
    match dir.filter(|_| image_names(state).iter().any(|n| n == name)) {
        Some(dir) => std::fs::read(dir.join(name))
            .map_err(|e| ApiError::internal(format!("cannot read {name}: {e}"))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no image '{name}' in the served folder"),
        )),
    }
}

async fn image_file(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    let bytes = state
        .blocking(move |state| listed_image(state, &name))
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[derive(Deserialize)]
struct EmbedQuery {
    model: String,
    /// An image of the served folder instead of an uploaded body.
    name: Option<String>,
}

#[derive(Serialize)]
struct Embedded {
    model: String,
    /// The image's SHA-256: what /predict and /everything name it by.
    image: String,
    width: usize,
    height: usize,
    /// Whether the embedding came from the cache.
    cached: bool,
    seconds: f64,
}

/// `POST /embed?model=ID[&name=FILE]`, body: the image file's bytes (unless `name`).
async fn embed(
    State(state): State<Arc<AppState>>,
    Query(query): Query<EmbedQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Embedded>, ApiError> {
    let started = Instant::now();
    state.model(&query.model)?;
    let bytes = match query.name.clone() {
        Some(name) => {
            state
                .blocking(move |state| listed_image(state, &name))
                .await?
        }
        None => body?.to_vec(),
    };
    if bytes.is_empty() {
        return Err(ApiError::bad(
            "the request has no image (send the file as the body)",
        ));
    }
    let bytes = Arc::new(bytes);
    let hashed = bytes.clone();
    let image_id = state
        .blocking(move |_| Ok(format!("{:x}", Sha256::digest(&*hashed))))
        .await?;
    // Bound first: a guard in the match's scrutinee would be held into its arms.
    let known = state.images.lock().await.get(&image_id).cloned();
    let image = match known {
        Some(image) => image,
        None => {
            let name = query.name.clone();
            let decoded = state
                .blocking(move |state| decode_checked(state, &bytes, name.as_deref()))
                .await?;
            let image = Arc::new(decoded);
            state
                .images
                .lock()
                .await
                .put(image_id.clone(), image.clone());
            image
        }
    };
    let (cached, _) = embedding_of(&state, &query.model, &image_id, Some(image.clone())).await?;
    Ok(Json(Embedded {
        model: query.model,
        image: image_id,
        width: image.width() as usize,
        height: image.height() as usize,
        cached,
        seconds: started.elapsed().as_secs_f64(),
    }))
}

fn decode_checked(
    state: &AppState,
    bytes: &[u8],
    name: Option<&str>,
) -> Result<image::RgbImage, ApiError> {
    let name = Path::new(name.unwrap_or("the uploaded file"));
    let (w, h) = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok())
        .unwrap_or((0, 0));
    let pixels = u64::from(w) * u64::from(h);
    if pixels > state.settings.max_image_pixels {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the image is {w}x{h} = {pixels} pixels, over this server's limit of {} \
                 (--max-image-pixels)",
                state.settings.max_image_pixels
            ),
        ));
    }
    decode_image(bytes, name)
        .map(|i| i.to_rgb8())
        .map_err(|e| ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string()))
}

/// The embedding of `image_id` by `model`: from the cache, or computed from `image` (false,
/// embedding) — 404 when it is neither cached nor given.
async fn embedding_of(
    state: &Arc<AppState>,
    model: &str,
    image_id: &str,
    image: Option<Arc<image::RgbImage>>,
) -> Result<(bool, super::cache::Embedding), ApiError> {
    let source = state.model(model)?.source.clone();
    if let Some(hit) = state.embeddings.remembered(model, image_id) {
        return Ok((true, hit));
    }
    let (from, id) = (source.clone(), image_id.to_string());
    let on_disk = state
        .blocking(move |state| Ok(state.embeddings.load(&from, &id)))
        .await?;
    if let Some(saved) = on_disk {
        let saved = Arc::new(saved);
        state.embeddings.remember(model, image_id, saved.clone());
        return Ok((true, saved));
    }
    let Some(image) = image else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "image {image_id} has no embedding for model '{model}': POST it to /embed first"
            ),
        ));
    };
    let (model_id, id) = (model.to_string(), image_id.to_string());
    let saved = state
        .compute(move |state| {
            let sam = &state.model(&model_id)?.sam;
            let embedded = Predictor::new(sam).set_image(&image);
            let saved = SavedEmbedding {
                embedding: to_raw(embedded.embedding).map_err(ApiError::device)?,
                original_size: embedded.original_size,
            };
            state.embeddings.store(&source, &id, &saved);
            Ok(Arc::new(saved))
        })
        .await?;
    state.embeddings.remember(model, image_id, saved.clone());
    Ok((false, saved))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    model: String,
    image: String,
    /// `[x, y, label]`: label 1 foreground, 0 background.
    #[serde(default)]
    points: Vec<[f32; 3]>,
    /// `[x1, y1, x2, y2]`, one mask each; points join every box.
    #[serde(default)]
    boxes: Vec<[f32; 4]>,
    /// SAM's three masks per prompt.
    #[serde(default)]
    multimask: bool,
    /// A previous answer's `low_res_logits` (base64, f32 little-endian, S/4 × S/4): the mask
    /// prompt of SAM's iterative refinement.
    mask_input: Option<String>,
}

#[derive(Serialize)]
struct PredictedMask {
    prompt: usize,
    candidate: usize,
    predicted_iou: f32,
    area: u64,
    /// `[x, y, w, h]` around the mask (`[0, 0, 0, 0]` when empty).
    bbox: [i64; 4],
    segmentation: CocoRle,
    /// This mask's low-resolution logits (base64 f32 little-endian, `low_res_size`²), to send
    /// back as `mask_input`.
    low_res_logits: String,
}

#[derive(Serialize)]
struct PredictResponse {
    model: String,
    image: String,
    low_res_size: usize,
    masks: Vec<PredictedMask>,
    seconds: f64,
}

/// `POST /predict`: masks for points and boxes on an embedded image.
async fn predict(
    State(state): State<Arc<AppState>>,
    request: Result<Json<PredictRequest>, JsonRejection>,
) -> Result<Json<PredictResponse>, ApiError> {
    let started = Instant::now();
    let Json(request) = request?;
    let (_, saved) = embedding_of(&state, &request.model, &request.image, None).await?;
    let (h, w) = saved.original_size;
    let prompts = UserPrompts {
        boxes: request.boxes.clone(),
        points: request
            .points
            .iter()
            .map(|&[x, y, label]| {
                if label == 0.0 || label == 1.0 {
                    Ok((x, y, label as i32))
                } else {
                    Err(ApiError::bad(format!(
                        "point {x},{y} has label {label}: 1 (foreground) or 0 (background)"
                    )))
                }
            })
            .collect::<Result<_, _>>()?,
    };
    if prompts.boxes.is_empty() && prompts.points.is_empty() && request.mask_input.is_none() {
        return Err(ApiError::bad("give at least one point, box or mask_input"));
    }
    prompts.check_inside(w, h).map_err(ApiError::bad)?;
    let mask_input = request.mask_input.clone();
    let multimask = request.multimask;
    let model = request.model.clone();
    let masks = state
        .compute(move |state| {
            let sam = &state.model(&model)?.sam;
            let s4 = sam.image_size / 4;
            let device = sam.device();
            let mask_input = match mask_input {
                None => None,
                Some(text) => {
                    let values = decode_f32(&text, s4 * s4)?;
                    Some(Tensor::from_data(
                        TensorData::new(values, [1, 1, s4, s4]),
                        &device,
                    ))
                }
            };
            let image = image_embedding(&saved, &device)?;
            let out = Predictor::new(sam)
                .predict_with_mask(&image, &prompts, mask_input, multimask)
                .map_err(ApiError::device)?;
            let k = out.per_prompt();
            let low_res: Vec<f32> = out
                .low_res_logits
                .clone()
                .try_f32_values()
                .map_err(ApiError::device)?;
            Ok(out
                .masks
                .iter()
                .zip(low_res.chunks(s4 * s4))
                .enumerate()
                .map(|(i, (logits, low))| {
                    let mask: Vec<bool> = logits.iter().map(|&v| v > 0.0).collect();
                    let rle = Rle::encode(h as u32, w as u32, |y, x| mask[y * w + x]);
                    let [x0, y0, x1, y1] = mask_box(&mask, h, w);
                    PredictedMask {
                        prompt: i / k,
                        candidate: i % k,
                        predicted_iou: out.iou[i],
                        area: rle.area(),
                        bbox: [x0, y0, x1 - x0, y1 - y0],
                        segmentation: CocoRle::new(&rle),
                        low_res_logits: encode_f32(low),
                    }
                })
                .collect::<Vec<_>>())
        })
        .await?;
    let low_res_size = state.model(&request.model)?.sam.image_size / 4;
    Ok(Json(PredictResponse {
        model: request.model,
        image: request.image,
        low_res_size,
        masks,
        seconds: started.elapsed().as_secs_f64(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EverythingRequest {
    model: String,
    image: String,
    /// Meta's generator options by their names; the missing ones take Meta's defaults.
    #[serde(default)]
    settings: MaskGeneratorSettings,
}

/// `POST /everything`: the automatic mask generator on an embedded image, as amg.py's JSON.
async fn everything(
    State(state): State<Arc<AppState>>,
    request: Result<Json<EverythingRequest>, JsonRejection>,
) -> Result<Json<Vec<MaskRecord>>, ApiError> {
    let Json(request) = request?;
    request
        .settings
        .validate()
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let (_, saved) = embedding_of(&state, &request.model, &request.image, None).await?;
    let image = state.images.lock().await.get(&request.image).cloned();
    let Some(image) = image else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "image {} is no longer in memory: POST it to /embed again",
                request.image
            ),
        ));
    };
    let model = request.model.clone();
    let records = state
        .compute(move |state| {
            let sam = &state.model(&model)?.sam;
            let generator = MaskGenerator::new(sam, request.settings)
                .map_err(|e| ApiError::bad(e.to_string()))?;
            let full = image_embedding(&saved, &sam.device())?;
            let (masks, _) = generator
                .generate_with(&image, Some(&full), &mut || {})
                .map_err(ApiError::device)?;
            Ok(masks.iter().map(MaskRecord::new).collect())
        })
        .await?;
    Ok(Json(records))
}

/// A cached embedding as the predictor takes it.
fn image_embedding(
    saved: &SavedEmbedding,
    device: &burn::tensor::Device,
) -> Result<ImageEmbedding, ApiError> {
    let embedding = from_raw(saved.embedding.clone(), device)
        .ok_or_else(|| ApiError::internal("a cached embedding is not [1, E, g, g]"))?;
    Ok(ImageEmbedding {
        embedding,
        original_size: saved.original_size,
    })
}

fn encode_f32(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    BASE64.encode(bytes)
}

fn decode_f32(text: &str, expected: usize) -> Result<Vec<f32>, ApiError> {
    let bytes = BASE64
        .decode(text)
        .map_err(|e| ApiError::bad(format!("mask_input is not base64: {e}")))?;
    if bytes.len() != expected * 4 {
        return Err(ApiError::bad(format!(
            "mask_input has {} bytes; this model's low-resolution masks are {expected} float32 \
             values ({} bytes)",
            bytes.len(),
            expected * 4
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}
