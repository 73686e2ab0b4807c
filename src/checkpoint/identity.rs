//! What identifies a checkpoint: a SHA-256 of its tensors, equal for the same weights in any file
//! format or order ([`tensors_sha256`]), and reading a base checkpoint that refuses a sam-cobot
//! adapter file given in its place ([`load_base`]).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{CheckpointError, StateDict, load_state_dict, read_safetensors_metadata};

/// The `format` metadata of sam-cobot adapter files (which the `adapter` module writes).
pub const ADAPTER_FORMAT: &str = "sam-cobot-adapter";

/// SHA-256 of a file's bytes, lowercase hex, read in chunks (never the whole file at once).
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// SHA-256 of a state dict's tensors, lowercase hex: for each tensor in key order, its name,
/// its element type as loaded (`f32`), its shape and its values (little-endian), each part
/// length-prefixed. Equal for any file that holds the same tensors, in any format or order.
pub fn tensors_sha256(dict: &StateDict) -> String {
    let mut hasher = Sha256::new();
    for key in dict.keys() {
        let tensor = dict.get(key).expect("listed key");
        hasher.update((key.len() as u64).to_le_bytes());
        hasher.update(key.as_bytes());
        hasher.update(b"f32");
        hasher.update((tensor.shape.len() as u64).to_le_bytes());
        for &d in &tensor.shape {
            hasher.update((d as u64).to_le_bytes());
        }
        for chunk in tensor.data.chunks(1 << 16) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            hasher.update(&bytes);
        }
    }
    format!("{:x}", hasher.finalize())
}

/// Reads a base SAM checkpoint; an adapter file given in its place is named as such.
pub fn load_base(path: &Path) -> Result<StateDict, CheckpointError> {
    let dict = load_state_dict(path)?;
    let meta = read_safetensors_metadata(path).unwrap_or_default();
    if meta.get("format").map(String::as_str) == Some(ADAPTER_FORMAT) {
        // The method is read loosely: this file is refused whatever its configuration says.
        let method = meta
            .get("peft")
            .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok())
            .and_then(|peft| peft.get("method")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown method".into());
        return Err(CheckpointError::AdapterAsBase {
            path: path.to_path_buf(),
            method,
            base_name: meta.get("base_name").cloned(),
        });
    }
    Ok(dict)
}

/// What identifies the base checkpoint an adapter is trained on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseId {
    /// [`tensors_sha256`] of its tensors: the identity.
    pub tensors_sha256: String,
    /// SHA-256 of the file's bytes (informational).
    pub file_sha256: String,
    /// The file's name (informational).
    pub name: Option<String>,
}

impl BaseId {
    /// Reads and hashes the checkpoint at `path`.
    pub fn of(path: &Path) -> Result<Self, CheckpointError> {
        let file_sha256 = sha256_file(path).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            tensors_sha256: tensors_sha256(&load_base(path)?),
            file_sha256,
            name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        })
    }
}
