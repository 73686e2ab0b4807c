//! `.safetensors` files through the `safetensors` crate, converted to f32.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors};

use super::{CheckpointError, DType, RawTensor, StateDict, convert_contiguous, memory_path};

/// Reads a safetensors file held in memory.
pub fn read_safetensors(bytes: &[u8]) -> Result<StateDict, CheckpointError> {
    parse(&memory_path(), bytes, |_| {})
}

pub(crate) fn read_safetensors_file(
    path: &Path,
    file: &File,
) -> Result<StateDict, CheckpointError> {
    let map = map_file(path, file)?;
    parse(path, &map, |done| release(&map, done))
}

/// Drops the pages of a tensor already converted, so resident memory stays near the size of the
/// f32 output instead of file plus output.
#[cfg(unix)]
fn release(map: &Mmap, done: &[u8]) {
    let offset = done.as_ptr() as usize - map.as_ptr() as usize;
    // SAFETY: the map is read-only and file-backed: MADV_DONTNEED only discards resident pages,
    // and any later access reads the same bytes back from the file.
    let _ = unsafe {
        map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, done.len())
    };
}

#[cfg(not(unix))]
fn release(_map: &Mmap, _done: &[u8]) {}

/// The `__metadata__` of a safetensors file (empty if it has none).
pub fn read_safetensors_metadata(path: &Path) -> Result<BTreeMap<String, String>, CheckpointError> {
    let file = File::open(path).map_err(|source| io_error(path, source))?;
    let map = map_file(path, &file)?;
    let (_, meta) = SafeTensors::read_metadata(&map).map_err(|e| st_error(path, &map, e))?;
    Ok(meta
        .metadata()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}

fn map_file(path: &Path, file: &File) -> Result<Mmap, CheckpointError> {
    if file.metadata().map_err(|e| io_error(path, e))?.len() == 0 {
        return Err(CheckpointError::Empty {
            path: path.to_path_buf(),
        });
    }
    // SAFETY: the map is only read while we hold it. Another process truncating the file at the
    // same time could fault (SIGBUS), the accepted price for not copying a multi-GB checkpoint.
    unsafe { Mmap::map(file) }.map_err(|source| io_error(path, source))
}

/// `release` is told about each tensor's bytes once they are converted.
fn parse(path: &Path, bytes: &[u8], release: impl Fn(&[u8])) -> Result<StateDict, CheckpointError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| st_error(path, bytes, e))?;
    let mut dict = StateDict::new();
    for (name, view) in st.iter() {
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            Dtype::F64 => DType::F64,
            other => {
                return Err(CheckpointError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    key: name.to_owned(),
                    dtype: other.to_string(),
                });
            }
        };
        let data = convert_contiguous(view.data(), &dtype, false);
        release(view.data());
        dict.insert(name, RawTensor::new(view.shape().to_vec(), data));
    }
    Ok(dict)
}

/// Names truncation plainly: the crate reports it as an "incomplete buffer" or a bad header length.
fn st_error(path: &Path, bytes: &[u8], source: SafeTensorError) -> CheckpointError {
    let truncated = |what: String| CheckpointError::Truncated {
        path: path.to_path_buf(),
        what,
    };
    let header_len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    match (&source, header_len) {
        (SafeTensorError::InvalidHeaderLength, Some(n))
            if n.saturating_add(8) > bytes.len() as u64 =>
        {
            truncated(format!(
                "safetensors header: {n} bytes declared, {} present",
                bytes.len().saturating_sub(8)
            ))
        }
        (SafeTensorError::MetadataIncompleteBuffer, Some(n)) => {
            let data = (bytes.len() as u64).saturating_sub(8 + n);
            match data_end(bytes, n) {
                Some(end) if end > data => truncated(format!(
                    "safetensors data: header describes {end} bytes, {data} present"
                )),
                _ => CheckpointError::Safetensors {
                    path: path.to_path_buf(),
                    source,
                },
            }
        }
        _ => CheckpointError::Safetensors {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// End of the tensor data the header describes (largest `data_offsets` end).
fn data_end(bytes: &[u8], header_len: u64) -> Option<u64> {
    let header = bytes.get(8..8 + usize::try_from(header_len).ok()?)?;
    let json: serde_json::Value = serde_json::from_slice(header).ok()?;
    json.as_object()?
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
}

/// Writes `dict` as f32 safetensors, atomically: a temporary file in the same folder, fsync, then
/// rename, so a crash never leaves a half-written checkpoint under `path`.
pub fn write_safetensors(
    path: &Path,
    dict: &StateDict,
    metadata: &BTreeMap<String, String>,
) -> Result<(), CheckpointError> {
    for (key, t) in dict.iter() {
        if t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(t.data.len()) {
            return Err(CheckpointError::BadLayout {
                path: path.to_path_buf(),
                key: key.to_owned(),
                message: format!(
                    "shape {:?} does not match its {} values",
                    t.shape,
                    t.data.len()
                ),
            });
        }
    }
    let tmp = temp_path(path);
    let result = write_then_rename(path, &tmp, dict, metadata);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_then_rename(
    path: &Path,
    tmp: &Path,
    dict: &StateDict,
    metadata: &BTreeMap<String, String>,
) -> Result<(), CheckpointError> {
    let mut tensors: Vec<(&str, &RawTensor)> = dict.iter().collect();
    tensors.sort_by_key(|(k, _)| *k);
    let file = File::create(tmp).map_err(|e| io_error(tmp, e))?;
    let mut out = BufWriter::new(file);
    let written = out
        .write_all(&header(&tensors, metadata))
        .and_then(|()| write_data(&mut out, &tensors))
        .and_then(|()| out.into_inner().map_err(|e| e.into_error()))
        .and_then(|file| file.sync_all());
    written.map_err(|e| io_error(tmp, e))?;
    fs::rename(tmp, path).map_err(|e| io_error(path, e))?;
    // Persist the rename itself; not every platform can open a directory, so best effort.
    if let Ok(dir) = File::open(parent(path)) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// The tensors' values as little-endian f32, a chunk at a time, so a checkpoint is never held
/// twice in memory.
fn write_data(out: &mut impl Write, tensors: &[(&str, &RawTensor)]) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(4 << 14);
    for (_, t) in tensors {
        for chunk in t.data.chunks(1 << 14) {
            bytes.clear();
            bytes.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
            out.write_all(&bytes)?;
        }
    }
    Ok(())
}

/// The length-prefixed safetensors header of `tensors` (in key order) as f32, its entries in key
/// order (metadata first), so equal tensors and metadata always give equal bytes (the
/// `safetensors` crate writes its metadata in hash-map order). The data follows in the same
/// order.
fn header(tensors: &[(&str, &RawTensor)], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let meta = metadata
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    }
    let mut offset = 0usize;
    for (key, t) in tensors {
        let end = offset + 4 * t.data.len();
        header.insert(
            (*key).to_string(),
            serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header)).expect("JSON");
    // The data starts 8-byte aligned; the format pads the header with spaces.
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend(json);
    bytes
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent(path).join(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

fn io_error(path: &Path, source: std::io::Error) -> CheckpointError {
    CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}
