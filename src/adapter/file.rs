//! Adapter files: the tensors a fine-tuning run changed, as `.safetensors` with metadata that ties
//! them to the base checkpoint they were trained on.
//!
//! An adapter holds every PEFT tensor (frozen ones too, e.g. a fixed random relation matrix
//! `FacT_p`, which is needed to reproduce the model) and every base tensor that trains under its
//! [`PeftConfig`] (e.g. the mask decoder), all under their official keys. Its `__metadata__`:
//!
//! | key | value |
//! |---|---|
//! | `format` | `sam-cobot-adapter` |
//! | `version` | `1` |
//! | `peft` | the [`PeftConfig`] as JSON |
//! | `model_type` | `vit_b`, `vit_l`, `vit_h` or `custom` |
//! | `encoder` | JSON `{embed_dim, depth, num_heads, native_image_size}` |
//! | `image_size` | the input size S it was trained at |
//! | `base_tensors_sha256` | SHA-256 (hex) of the base's tensors ([`tensors_sha256`](crate::checkpoint::tensors_sha256)): what identifies the base |
//! | `base_sha256` | SHA-256 (hex) of the base checkpoint file's bytes (informational; adapters written before `base_tensors_sha256` existed are checked against it) |
//! | `base_name` | the base checkpoint's file name (informational) |
//!
//! A base is identified by its tensors, not its file: the same weights as `.pth` and as
//! `.safetensors` are the same base.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::checkpoint::identity::ADAPTER_FORMAT;
use crate::checkpoint::{
    BaseId, CheckpointError, StateDict, load_base, load_state_dict, read_safetensors_metadata,
    sha256_file, tensors_sha256, write_safetensors,
};
use crate::nn::params::{self, Origin};
use crate::peft::PeftConfig;
use crate::sam::config::EncoderConfig;
use crate::sam::{ModelLoadError, Sam};

/// Value of the `format` metadata entry.
/// The adapter format version this build writes and reads.
pub const ADAPTER_VERSION: &str = "1";

/// What identifies the image encoder an adapter belongs to (enough for custom models too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncoderId {
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub native_image_size: usize,
}

impl EncoderId {
    pub fn of(cfg: &EncoderConfig) -> Self {
        let EncoderConfig::Vit(cfg) = cfg;
        Self {
            embed_dim: cfg.embed_dim,
            depth: cfg.depth,
            num_heads: cfg.num_heads,
            native_image_size: cfg.native_image_size,
        }
    }

    fn json(&self) -> String {
        serde_json::to_string(self).expect("plain struct serialises")
    }
}

/// The parsed metadata of an adapter file.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterInfo {
    pub peft: PeftConfig,
    pub model_type: String,
    pub encoder: EncoderId,
    pub image_size: usize,
    /// SHA-256 of the base file's bytes when it was saved.
    pub base_sha256: String,
    /// [`tensors_sha256`] of the base (absent in adapters written before it was recorded).
    pub base_tensors_sha256: Option<String>,
    /// File name of the base checkpoint at save time, if recorded.
    pub base_name: Option<String>,
}

/// Everything that can go wrong saving or applying an adapter. Messages name the files involved.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: {source}", path = .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot save an adapter: the model has no PEFT configuration attached")]
    NoPeft,
    /// The device failed to give back a tensor of the adapter.
    #[error(transparent)]
    Device(anyhow::Error),
    #[error("{path}: not a sam-cobot adapter: {reason}", path = .path.display())]
    NotAnAdapter { path: PathBuf, reason: String },
    #[error(
        "{path}: adapter format version '{found}' is not supported (this build reads version {ADAPTER_VERSION})",
        path = .path.display()
    )]
    UnknownVersion { path: PathBuf, found: String },
    #[error("{path}: corrupt adapter metadata '{key}': {message}", path = .path.display())]
    BadMetadata {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error(
        "{adapter} was trained on a different base checkpoint: it expects {expected}{name}, but {base} has {found}",
        adapter = .adapter.display(),
        base = .base.display(),
        name = .expected_name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
    )]
    BaseMismatch {
        adapter: PathBuf,
        base: PathBuf,
        /// What identifies the base, and its SHA-256: "tensors SHA-256 ..." or "file SHA-256 ...".
        expected: String,
        expected_name: Option<String>,
        found: String,
    },
    #[error(
        "{adapter} was trained on a different model: its {what} is {expected}, but {base} has {found}",
        adapter = .adapter.display(),
        base = .base.display()
    )]
    ModelMismatch {
        adapter: PathBuf,
        base: PathBuf,
        what: String,
        expected: String,
        found: String,
    },
    #[error(
        "{adapter}: tensor '{key}' has shape {found:?}, but in {base} it has shape {expected:?}",
        adapter = .adapter.display(),
        base = .base.display()
    )]
    ShapeMismatch {
        adapter: PathBuf,
        base: PathBuf,
        key: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error(
        "{adapter} does not fit {base}: {source}",
        adapter = .adapter.display(),
        base = .base.display()
    )]
    Model {
        adapter: PathBuf,
        base: PathBuf,
        source: ModelLoadError,
    },
}

/// The tensors an adapter of `sam` carries: every PEFT tensor, and every base tensor that trains
/// under the attached configuration.
pub fn adapter_state(sam: &Sam) -> Result<StateDict, AdapterError> {
    let cfg = sam.peft.as_ref().ok_or(AdapterError::NoPeft)?;
    params::export(sam, &sam.names, |key, origin| {
        origin == Origin::Peft || cfg.is_trainable(key, false)
    })
    .map_err(AdapterError::Device)
}

/// The metadata `save_adapter` writes for `sam` trained on `base`.
pub fn adapter_metadata(
    sam: &Sam,
    base: &BaseId,
) -> Result<BTreeMap<String, String>, AdapterError> {
    let cfg = sam.peft.as_ref().ok_or(AdapterError::NoPeft)?;
    let mut meta = BTreeMap::new();
    meta.insert("format".into(), ADAPTER_FORMAT.into());
    meta.insert("version".into(), ADAPTER_VERSION.into());
    meta.insert(
        "peft".into(),
        serde_json::to_string(cfg).expect("PeftConfig serialises"),
    );
    meta.insert("model_type".into(), sam.config.variant().into());
    meta.insert("encoder".into(), EncoderId::of(&sam.config.encoder).json());
    meta.insert("image_size".into(), sam.image_size.to_string());
    meta.insert("base_tensors_sha256".into(), base.tensors_sha256.clone());
    meta.insert("base_sha256".into(), base.file_sha256.clone());
    if let Some(name) = &base.name {
        meta.insert("base_name".into(), name.clone());
    }
    Ok(meta)
}

/// Writes the adapter of `sam` (trained on `base_checkpoint`) to `path`, atomically.
pub fn save_adapter(path: &Path, sam: &Sam, base_checkpoint: &Path) -> Result<(), AdapterError> {
    save_adapter_on(path, sam, &BaseId::of(base_checkpoint)?)
}

/// [`save_adapter`] with the base already identified (a run hashes its base once).
pub fn save_adapter_on(path: &Path, sam: &Sam, base: &BaseId) -> Result<(), AdapterError> {
    let state = adapter_state(sam)?;
    write_safetensors(path, &state, &adapter_metadata(sam, base)?)?;
    Ok(())
}

/// Reads and checks an adapter's metadata (format, version, and that every entry parses).
pub fn read_adapter_info(path: &Path) -> Result<AdapterInfo, AdapterError> {
    let meta = match read_safetensors_metadata(path) {
        Ok(meta) => meta,
        Err(e @ (CheckpointError::Io { .. } | CheckpointError::Empty { .. })) => {
            return Err(e.into());
        }
        Err(e) => {
            return Err(AdapterError::NotAnAdapter {
                path: path.to_path_buf(),
                reason: format!("not a readable safetensors file ({e})"),
            });
        }
    };
    parse_info(path, &meta)
}

fn parse_info(path: &Path, meta: &BTreeMap<String, String>) -> Result<AdapterInfo, AdapterError> {
    match meta.get("format") {
        Some(f) if f == ADAPTER_FORMAT => {}
        Some(f) => {
            return Err(AdapterError::NotAnAdapter {
                path: path.to_path_buf(),
                reason: format!("its metadata says format '{f}', expected '{ADAPTER_FORMAT}'"),
            });
        }
        None => {
            return Err(AdapterError::NotAnAdapter {
                path: path.to_path_buf(),
                reason: format!(
                    "its metadata has no format '{ADAPTER_FORMAT}' (a plain checkpoint? pass it as --checkpoint)"
                ),
            });
        }
    }
    let get = |key: &str| {
        meta.get(key).ok_or_else(|| AdapterError::BadMetadata {
            path: path.to_path_buf(),
            key: key.into(),
            message: "missing".into(),
        })
    };
    let bad = |key: &str, message: String| AdapterError::BadMetadata {
        path: path.to_path_buf(),
        key: key.into(),
        message,
    };
    let version = get("version")?;
    if version != ADAPTER_VERSION {
        return Err(AdapterError::UnknownVersion {
            path: path.to_path_buf(),
            found: version.clone(),
        });
    }
    let peft: PeftConfig = serde_json::from_str(get("peft")?)
        .map_err(|e| bad("peft", format!("not a PEFT configuration: {e}")))?;
    peft.validate()
        .map_err(|e| bad("peft", format!("invalid PEFT configuration: {e}")))?;
    let encoder: EncoderId = serde_json::from_str(get("encoder")?)
        .map_err(|e| bad("encoder", format!("not an encoder description: {e}")))?;
    let image_size = get("image_size")?;
    let image_size = image_size
        .parse::<usize>()
        .map_err(|_| bad("image_size", format!("'{image_size}' is not a number")))?;
    let sha = |key: &str, value: &String| {
        let value = value.to_ascii_lowercase();
        if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(key, format!("'{value}' is not a SHA-256 in hex")));
        }
        Ok(value)
    };
    let base_sha256 = sha("base_sha256", get("base_sha256")?)?;
    let base_tensors_sha256 = match meta.get("base_tensors_sha256") {
        Some(value) => Some(sha("base_tensors_sha256", value)?),
        None => None,
    };
    Ok(AdapterInfo {
        peft,
        model_type: get("model_type")?.clone(),
        encoder,
        image_size,
        base_sha256,
        base_tensors_sha256,
        base_name: meta.get("base_name").cloned(),
    })
}

/// A base checkpoint and an adapter, checked against each other and split up.
pub struct AdapterParts {
    pub info: AdapterInfo,
    /// The base state dict with the adapter's trained base tensors substituted.
    pub base: StateDict,
    /// The PEFT tensors, for [`Sam::attach_peft`].
    pub peft: StateDict,
}

/// Reads `adapter`, checks it belongs to `base` (the same tensors, in whatever file format), and
/// splits its tensors.
pub fn open_adapter(base: &Path, adapter: &Path) -> Result<AdapterParts, AdapterError> {
    let info = read_adapter_info(adapter)?;
    let mut base_dict = load_base(base)?;
    let (what, expected, found) = match &info.base_tensors_sha256 {
        Some(expected) => ("tensors", expected.clone(), tensors_sha256(&base_dict)),
        // Written before tensor hashes were recorded: the file's bytes identify the base.
        None => (
            "file",
            info.base_sha256.clone(),
            sha256_file(base).map_err(|source| AdapterError::Io {
                path: base.to_path_buf(),
                source,
            })?,
        ),
    };
    if found != expected {
        return Err(AdapterError::BaseMismatch {
            adapter: adapter.to_path_buf(),
            base: base.to_path_buf(),
            expected: format!("{what} SHA-256 {expected}"),
            expected_name: info.base_name.clone(),
            found: format!("{what} SHA-256 {found}"),
        });
    }
    let tensors = load_state_dict(adapter)?;
    let mut peft = StateDict::new();
    for (key, tensor) in tensors {
        match base_dict.get(&key) {
            Some(old) if old.shape != tensor.shape => {
                return Err(AdapterError::ShapeMismatch {
                    adapter: adapter.to_path_buf(),
                    base: base.to_path_buf(),
                    key,
                    found: tensor.shape,
                    expected: old.shape.clone(),
                });
            }
            Some(_) => {
                base_dict.insert(key, tensor);
            }
            None => {
                peft.insert(key, tensor);
            }
        }
    }
    Ok(AdapterParts {
        info,
        base: base_dict,
        peft,
    })
}

/// SAM from `base` with the adapter applied, at `image_size` (default: the size the adapter was
/// trained at). Adapter dropout is switched off (inference).
pub fn load_with_adapter(
    base: &Path,
    adapter: &Path,
    image_size: Option<usize>,
    device: &Device,
) -> Result<Sam, AdapterError> {
    let parts = open_adapter(base, adapter)?;
    let model_err = |source| AdapterError::Model {
        adapter: adapter.to_path_buf(),
        base: base.to_path_buf(),
        source,
    };
    let size = image_size.unwrap_or(parts.info.image_size);
    let sam = Sam::from_state_dict(parts.base, Some(size), device).map_err(model_err)?;
    check_model(&parts.info, &sam, base, adapter)?;
    let mut cfg = parts.info.peft;
    cfg.adapter_dropout = 0.0;
    sam.attach_peft(cfg, parts.peft).map_err(model_err)
}

/// The base the adapter was made on must be the same kind of model (a second line of defence
/// after the SHA-256, e.g. against a hand-edited adapter).
fn check_model(
    info: &AdapterInfo,
    sam: &Sam,
    base: &Path,
    adapter: &Path,
) -> Result<(), AdapterError> {
    let mismatch = |what: &str, expected: String, found: String| AdapterError::ModelMismatch {
        adapter: adapter.to_path_buf(),
        base: base.to_path_buf(),
        what: what.into(),
        expected,
        found,
    };
    let variant = sam.config.variant();
    if info.model_type != variant {
        return Err(mismatch(
            "model type",
            info.model_type.clone(),
            variant.into(),
        ));
    }
    let encoder = EncoderId::of(&sam.config.encoder);
    if info.encoder != encoder {
        return Err(mismatch("encoder", info.encoder.json(), encoder.json()));
    }
    Ok(())
}
