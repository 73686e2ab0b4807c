//! Checkpoint files: PyTorch `.pth` archives and `.safetensors`, read into a flat map of f32 tensors.
//!
//! Pickles are interpreted, never executed: only the handful of globals that `torch.save` emits for a
//! state dict are understood, everything else becomes an inert "unsupported object" value.

pub mod identity;
mod pickle;
mod pth;
mod pth_writer;
mod safetensors;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use self::identity::{BaseId, load_base, sha256_file, tensors_sha256};
pub use self::pth::read_pth;
pub use self::pth_writer::write_pth;
pub use self::safetensors::{read_safetensors, read_safetensors_metadata, write_safetensors};

/// One tensor of a checkpoint, always converted to f32 (f16, bf16 and f64 sources are converted).
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl RawTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self { shape, data }
    }

    /// Number of elements the shape describes (which `data.len()` should equal).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Flat name → tensor map, ordered by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateDict {
    tensors: BTreeMap<String, RawTensor>,
}

impl StateDict {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts a tensor, returning the one it replaces.
    pub fn insert(&mut self, name: impl Into<String>, tensor: RawTensor) -> Option<RawTensor> {
        self.tensors.insert(name.into(), tensor)
    }

    pub fn get(&self, name: &str) -> Option<&RawTensor> {
        self.tensors.get(name)
    }

    pub fn remove(&mut self, name: &str) -> Option<RawTensor> {
        self.tensors.remove(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// How many consecutive indexes `i` have a key `{prefix}{i}{suffix}` (blocks, layers).
    pub fn count_indexed(&self, prefix: &str, suffix: &str) -> usize {
        (0..)
            .take_while(|i| self.contains(&format!("{prefix}{i}{suffix}")))
            .count()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawTensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

impl IntoIterator for StateDict {
    type Item = (String, RawTensor);
    type IntoIter = std::collections::btree_map::IntoIter<String, RawTensor>;

    fn into_iter(self) -> Self::IntoIter {
        self.tensors.into_iter()
    }
}

impl FromIterator<(String, RawTensor)> for StateDict {
    fn from_iter<I: IntoIterator<Item = (String, RawTensor)>>(iter: I) -> Self {
        Self {
            tensors: iter.into_iter().collect(),
        }
    }
}

/// Everything that can go wrong reading or writing a checkpoint. Every message starts with the file
/// (`<memory>` for the in-memory readers).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}", path = .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: file is empty", path = .path.display())]
    Empty { path: PathBuf },
    #[error("{path}: not a zip archive and not safetensors (starts with {start})", path = .path.display())]
    UnknownFormat { path: PathBuf, start: String },
    #[error("{path}: truncated {what}", path = .path.display())]
    Truncated { path: PathBuf, what: String },
    #[error("{path}: truncated or corrupt zip archive: {source}", path = .path.display())]
    Zip {
        path: PathBuf,
        source: zip::result::ZipError,
    },
    #[error("{path}: zip archive has no '<dir>/data.pkl': not a PyTorch checkpoint", path = .path.display())]
    NoPickle { path: PathBuf },
    #[error("{path}: data.pkl at byte {offset}: {message}", path = .path.display())]
    Pickle {
        path: PathBuf,
        offset: usize,
        message: String,
    },
    #[error("{path}: not a state dict: {message}", path = .path.display())]
    NotAStateDict { path: PathBuf, message: String },
    #[error("{path}: entry '{key}' is not a tensor but {found}", path = .path.display())]
    NotATensor {
        path: PathBuf,
        key: String,
        found: String,
    },
    #[error("{path}: tensor '{key}' has dtype {dtype}; only float tensors (f32, f16, bf16, f64) are supported", path = .path.display())]
    UnsupportedDtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },
    #[error("{path}: tensor '{key}': {message}", path = .path.display())]
    BadLayout {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: tensor '{key}' uses storage '{storage}' but the archive has no entry '{entry}'", path = .path.display())]
    MissingStorage {
        path: PathBuf,
        key: String,
        storage: String,
        entry: String,
    },
    #[error("{path}: tensor '{key}' needs {needed} bytes but storage '{storage}' holds {available}", path = .path.display())]
    StorageTooSmall {
        path: PathBuf,
        key: String,
        storage: String,
        needed: u128,
        available: usize,
    },
    #[error("{path}: invalid safetensors file: {source}", path = .path.display())]
    Safetensors {
        path: PathBuf,
        source: ::safetensors::SafeTensorError,
    },
    #[error(
        "{path} is a sam-cobot adapter ({method}{base}), not a SAM checkpoint: pass it as \
         --adapter, and its base as --checkpoint",
        path = .path.display(),
        base = .base_name.as_ref().map(|n| format!(", trained on {n}")).unwrap_or_default()
    )]
    AdapterAsBase {
        path: PathBuf,
        method: String,
        base_name: Option<String>,
    },
}

/// Element types found in checkpoints; only the float ones can be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DType {
    F32,
    F16,
    BF16,
    F64,
    /// Any other type, by its name in the source format (`int64`, `I64`, ...).
    Other(String),
}

impl DType {
    /// Bytes per element, for the float types.
    fn size(&self) -> Option<usize> {
        match self {
            DType::F32 => Some(4),
            DType::F16 | DType::BF16 => Some(2),
            DType::F64 => Some(8),
            DType::Other(_) => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F64 => "float64",
            DType::Other(name) => name,
        })
    }
}

/// Converts the element at byte `i * size` of `bytes`; the caller has checked the bounds.
#[inline]
fn element(bytes: &[u8], i: usize, dtype: &DType, big_endian: bool) -> f32 {
    fn arr<const N: usize>(b: &[u8], at: usize, big_endian: bool) -> [u8; N] {
        let mut a = [0; N];
        a.copy_from_slice(&b[at..at + N]);
        if big_endian {
            a.reverse();
        }
        a
    }
    match dtype {
        DType::F32 => f32::from_le_bytes(arr(bytes, i * 4, big_endian)),
        DType::F16 => half::f16::from_le_bytes(arr(bytes, i * 2, big_endian)).to_f32(),
        DType::BF16 => half::bf16::from_le_bytes(arr(bytes, i * 2, big_endian)).to_f32(),
        DType::F64 => f64::from_le_bytes(arr(bytes, i * 8, big_endian)) as f32,
        DType::Other(_) => f32::NAN,
    }
}

/// Converts a contiguous run of elements into f32 (the fast path).
fn convert_contiguous(bytes: &[u8], dtype: &DType, big_endian: bool) -> Vec<f32> {
    let size = dtype.size().unwrap_or(1);
    let n = bytes.len() / size;
    match (dtype, big_endian) {
        (DType::F32, false) => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        _ => (0..n)
            .map(|i| element(bytes, i, dtype, big_endian))
            .collect(),
    }
}

/// Loads a checkpoint, recognising the format by its content, not its extension.
pub fn load_state_dict(path: &Path) -> Result<StateDict, CheckpointError> {
    let io_err = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut head = [0u8; 9];
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..]).map_err(io_err)? {
            0 => break,
            n => got += n,
        }
    }
    let head = &head[..got];
    match sniff(head) {
        Format::Empty => Err(CheckpointError::Empty {
            path: path.to_path_buf(),
        }),
        Format::Zip => pth::read_pth_file(path, file),
        Format::Safetensors => safetensors::read_safetensors_file(path, &file),
        Format::Unknown => Err(CheckpointError::UnknownFormat {
            path: path.to_path_buf(),
            start: describe_start(head),
        }),
    }
}

/// The file formats sam-cobot writes checkpoints in, chosen by the output's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// `.pth` / `.pt`: a PyTorch zip archive that Meta's `sam_model_registry` loads.
    Pth,
    /// `.safetensors`.
    Safetensors,
}

impl CheckpointFormat {
    /// The format `--out PATH` asks for (`flag` names the option in the error).
    pub fn of_output(flag: &str, path: &Path) -> anyhow::Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("pth") || e.eq_ignore_ascii_case("pt") => {
                Ok(Self::Pth)
            }
            Some(e) if e.eq_ignore_ascii_case("safetensors") => Ok(Self::Safetensors),
            _ => anyhow::bail!(
                "{flag} {}: the output format follows the extension: .pth or .safetensors",
                path.display()
            ),
        }
    }

    /// Writes `dict` to `path` in this format, atomically.
    pub fn write(self, path: &Path, dict: &StateDict) -> anyhow::Result<()> {
        match self {
            Self::Pth => write_pth(path, dict),
            Self::Safetensors => Ok(write_safetensors(path, dict, &Default::default())?),
        }
    }
}

enum Format {
    Empty,
    Zip,
    Safetensors,
    Unknown,
}

fn sniff(head: &[u8]) -> Format {
    if head.is_empty() {
        Format::Empty
    } else if head.starts_with(b"PK\x03\x04") {
        Format::Zip
    } else if head.len() >= 9 && head[8] == b'{' {
        // safetensors: u64 little-endian header length, then a JSON object.
        Format::Safetensors
    } else {
        Format::Unknown
    }
}

fn describe_start(head: &[u8]) -> String {
    let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("bytes {}", hex.join(" "))
}

/// The name errors use for in-memory inputs.
fn memory_path() -> PathBuf {
    PathBuf::from("<memory>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_half_types_and_big_endian() {
        let h = half::f16::from_f32(1.5).to_le_bytes();
        assert_eq!(convert_contiguous(&h, &DType::F16, false), vec![1.5]);
        let b = half::bf16::from_f32(-2.0).to_le_bytes();
        assert_eq!(convert_contiguous(&b, &DType::BF16, false), vec![-2.0]);
        let d = 0.25f64.to_be_bytes();
        assert_eq!(convert_contiguous(&d, &DType::F64, true), vec![0.25]);
    }

    #[test]
    fn state_dict_api() {
        let mut sd = StateDict::new();
        assert!(sd.is_empty());
        sd.insert("b", RawTensor::new(vec![1], vec![2.0]));
        sd.insert("a", RawTensor::new(vec![], vec![1.0]));
        assert_eq!(sd.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert!(sd.contains("a"));
        assert_eq!(sd.remove("a").unwrap().data, vec![1.0]);
        assert_eq!(sd.len(), 1);
        assert_eq!(sd.get("b").unwrap().numel(), 1);
    }

    #[test]
    fn sniffs_by_content() {
        assert!(matches!(sniff(b""), Format::Empty));
        assert!(matches!(sniff(b"PK\x03\x04rest"), Format::Zip));
        assert!(matches!(
            sniff(b"\x02\0\0\0\0\0\0\0{}"),
            Format::Safetensors
        ));
        assert!(matches!(sniff(b"hello world"), Format::Unknown));
    }
}
