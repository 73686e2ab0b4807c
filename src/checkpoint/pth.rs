//! PyTorch `torch.save` zip archives: `<dir>/data.pkl` describes the tensors, `<dir>/data/<key>`
//! holds each storage's raw bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Cursor, ErrorKind, Read, Seek};
use std::path::Path;
use std::rc::Rc;

use zip::ZipArchive;
use zip::result::ZipError;

use super::pickle::{self, Pickle, TensorSpec, Value};
use super::{CheckpointError, RawTensor, StateDict, convert_contiguous, element, memory_path};

/// data.pkl of a ViT-H checkpoint is ~100 kB; anything near this cap is not a state dict.
const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// Reads a `.pth` archive held in memory.
pub fn read_pth(bytes: &[u8]) -> Result<StateDict, CheckpointError> {
    read_archive(&memory_path(), Cursor::new(bytes), bytes.len() as u64)
}

pub(crate) fn read_pth_file(path: &Path, file: File) -> Result<StateDict, CheckpointError> {
    let len = file
        .metadata()
        .map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    read_archive(path, BufReader::new(file), len)
}

/// A tensor's validated view of its storage, in elements.
struct Layout {
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
    numel: usize,
    /// One past the largest element index it touches (0 when empty).
    span: u128,
}

fn read_archive<R: Read + Seek>(
    path: &Path,
    reader: R,
    archive_len: u64,
) -> Result<StateDict, CheckpointError> {
    let zip_err = |source| CheckpointError::Zip {
        path: path.to_path_buf(),
        source,
    };
    let mut zip = ZipArchive::new(reader).map_err(zip_err)?;

    // The entries share one top-level folder whose name varies (`archive/`, the file stem, ...).
    let pkl_name = zip
        .file_names()
        .filter(|n| n.strip_suffix("data.pkl").is_some_and(is_top_dir))
        .min()
        .map(str::to_owned)
        .ok_or_else(|| CheckpointError::NoPickle {
            path: path.to_path_buf(),
        })?;
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];

    let pkl =
        read_entry(path, &mut zip, &pkl_name, MAX_PICKLE_BYTES, archive_len)?.ok_or_else(|| {
            CheckpointError::NoPickle {
                path: path.to_path_buf(),
            }
        })?;
    let big_endian = read_entry(
        path,
        &mut zip,
        &format!("{prefix}byteorder"),
        16,
        archive_len,
    )?
    .is_some_and(|b| b.trim_ascii() == b"big");

    let pk = pickle::parse(&pkl).map_err(|e| CheckpointError::Pickle {
        path: path.to_path_buf(),
        offset: e.offset,
        message: e.message,
    })?;
    drop(pkl);
    let entries = tensor_entries(path, &pk)?;

    // Validate everything before reading any storage, then read each storage once.
    let mut by_storage: BTreeMap<&str, Vec<(&str, &TensorSpec, Layout)>> = BTreeMap::new();
    for (key, spec) in &entries {
        if spec.storage.dtype.size().is_none() {
            return Err(CheckpointError::UnsupportedDtype {
                path: path.to_path_buf(),
                key: key.clone(),
                dtype: spec.storage.dtype.to_string(),
            });
        }
        let layout = layout(&pk, spec).map_err(|message| CheckpointError::BadLayout {
            path: path.to_path_buf(),
            key: key.clone(),
            message,
        })?;
        by_storage
            .entry(&spec.storage.key)
            .or_default()
            .push((key, spec, layout));
    }

    let mut dict = StateDict::new();
    for (storage, tensors) in by_storage {
        let needed = tensors
            .iter()
            .map(|(_, spec, l)| {
                l.span
                    .saturating_mul(spec.storage.dtype.size().unwrap_or(1) as u128)
            })
            .max()
            .unwrap_or(0);
        let bytes = if needed == 0 {
            Vec::new()
        } else {
            let entry = format!("{prefix}data/{storage}");
            let limit = u64::try_from(needed).unwrap_or(u64::MAX);
            read_entry(path, &mut zip, &entry, limit, archive_len)?.ok_or_else(|| {
                CheckpointError::MissingStorage {
                    path: path.to_path_buf(),
                    key: tensors[0].0.to_owned(),
                    storage: storage.to_owned(),
                    entry,
                }
            })?
        };
        for (key, spec, layout) in tensors {
            let dtype = &spec.storage.dtype;
            let size = dtype.size().unwrap_or(1);
            let need = layout.span.saturating_mul(size as u128);
            if need > bytes.len() as u128 {
                return Err(CheckpointError::StorageTooSmall {
                    path: path.to_path_buf(),
                    key: key.to_owned(),
                    storage: storage.to_owned(),
                    needed: need,
                    available: bytes.len(),
                });
            }
            let data = if is_contiguous(&layout) {
                let start = layout.offset * size;
                convert_contiguous(
                    &bytes[start..start + layout.numel * size],
                    dtype,
                    big_endian,
                )
            } else {
                gather(&layout, |i| element(&bytes, i, dtype, big_endian))
            };
            dict.insert(key, RawTensor::new(layout.shape, data));
        }
    }
    Ok(dict)
}

/// True for `""` (entries at the root) and `"<dir>/"`.
fn is_top_dir(prefix: &str) -> bool {
    prefix.is_empty() || prefix.find('/') == Some(prefix.len() - 1)
}

/// Reads up to `limit` bytes of an entry, `None` if there is no such entry. The capacity comes
/// from sizes the archive can actually hold, never from a declared size alone.
fn read_entry<R: Read + Seek>(
    path: &Path,
    zip: &mut ZipArchive<R>,
    name: &str,
    limit: u64,
    archive_len: u64,
) -> Result<Option<Vec<u8>>, CheckpointError> {
    let entry = match zip.by_name(name) {
        Ok(entry) => entry,
        Err(ZipError::FileNotFound) => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Zip {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    // Deflate expands at most ~1032:1.
    let ratio = if entry.compression() == zip::CompressionMethod::Stored {
        1
    } else {
        1032
    };
    let cap = limit
        .min(entry.size())
        .min(archive_len.saturating_mul(ratio));
    let mut buf = Vec::with_capacity(usize::try_from(cap).unwrap_or(0));
    entry
        .take(limit)
        .read_to_end(&mut buf)
        .map_err(|source| match source.kind() {
            ErrorKind::UnexpectedEof => CheckpointError::Truncated {
                path: path.to_path_buf(),
                what: format!("zip entry '{name}'"),
            },
            _ => CheckpointError::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
    Ok(Some(buf))
}

/// The `key → tensor` pairs of the state dict, unwrapping `{"model": ...}` or `{"state_dict": ...}`.
fn tensor_entries(
    path: &Path,
    pk: &Pickle,
) -> Result<BTreeMap<String, Rc<TensorSpec>>, CheckpointError> {
    let not_sd = |message: String| CheckpointError::NotAStateDict {
        path: path.to_path_buf(),
        message,
    };
    let items = pk
        .dict(&pk.root)
        .ok_or_else(|| not_sd(format!("the pickle holds {}", pk.describe(&pk.root))))?;
    let has_tensors = |items: &[(Value, Value)]| {
        items.is_empty() || items.iter().any(|(_, v)| matches!(v, Value::Tensor(_)))
    };
    let items = if has_tensors(items) {
        items
    } else {
        let wrapped: Vec<_> = items
            .iter()
            .filter(|(k, _)| matches!(k, Value::Str(s) if &**s == "model" || &**s == "state_dict"))
            .filter_map(|(_, v)| pk.dict(v))
            .collect();
        match wrapped[..] {
            [inner] => inner,
            // Something torch-like we cannot rebuild: let the error name that entry.
            _ if items
                .iter()
                .any(|(_, v)| matches!(v, Value::Unsupported(_))) =>
            {
                items
            }
            _ => {
                let keys: Vec<String> = items.iter().take(8).map(|(k, _)| pk.describe(k)).collect();
                return Err(not_sd(format!(
                    "a dict without tensors and without a single 'model' or 'state_dict' entry (keys: {})",
                    keys.join(", ")
                )));
            }
        }
    };
    let mut out = BTreeMap::new();
    for (k, v) in items {
        let Value::Str(key) = k else {
            return Err(not_sd(format!("a key is {}, not a string", pk.describe(k))));
        };
        let Value::Tensor(spec) = v else {
            return Err(CheckpointError::NotATensor {
                path: path.to_path_buf(),
                key: key.to_string(),
                found: pk.describe(v),
            });
        };
        // A repeated key: the later one wins, as in Python.
        out.insert(key.to_string(), spec.clone());
    }
    Ok(out)
}

fn layout(pk: &Pickle, spec: &TensorSpec) -> Result<Layout, String> {
    let offset = match spec.offset {
        Value::Int(o) => usize::try_from(o).map_err(|_| format!("negative storage offset {o}"))?,
        ref v => return Err(format!("storage offset is {}", pk.describe(v))),
    };
    let shape = usize_seq(pk, &spec.size, "size")?;
    let stride = usize_seq(pk, &spec.stride, "stride")?;
    if shape.len() != stride.len() {
        return Err(format!(
            "shape {shape:?} and stride {stride:?} differ in length"
        ));
    }
    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    let span = if numel == 0 {
        0
    } else {
        shape
            .iter()
            .zip(&stride)
            .try_fold(offset as u128 + 1, |acc, (&d, &s)| {
                (d as u128 - 1)
                    .checked_mul(s as u128)
                    .and_then(|x| acc.checked_add(x))
            })
            .ok_or_else(|| format!("shape {shape:?} with stride {stride:?} overflows"))?
    };
    // Only overlapping views (expand/broadcast) touch fewer elements than they have; refusing
    // them bounds the output by the storage's real size.
    if numel as u128 > span {
        return Err(format!(
            "shape {shape:?} with stride {stride:?} overlaps itself (broadcast views are not supported)"
        ));
    }
    Ok(Layout {
        offset,
        shape,
        stride,
        numel,
        span,
    })
}

fn usize_seq(pk: &Pickle, v: &Value, what: &str) -> Result<Vec<usize>, String> {
    let items = pk
        .seq(v)
        .ok_or_else(|| format!("{what} is {}, not a tuple", pk.describe(v)))?;
    items
        .iter()
        .map(|x| match x {
            Value::Int(i) => usize::try_from(*i).map_err(|_| format!("negative {what} {i}")),
            other => Err(format!("{what} holds {}", pk.describe(other))),
        })
        .collect()
}

fn is_contiguous(l: &Layout) -> bool {
    let mut expected = 1;
    for (&d, &s) in l.shape.iter().zip(&l.stride).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected *= d;
    }
    true
}

/// Materialises a strided view in row-major order; `at` converts one element by storage index.
fn gather(l: &Layout, at: impl Fn(usize) -> f32) -> Vec<f32> {
    let dims: Vec<(usize, usize)> = l
        .shape
        .iter()
        .zip(&l.stride)
        .filter(|(d, _)| **d != 1)
        .map(|(&d, &s)| (d, s))
        .collect();
    let mut out = Vec::with_capacity(l.numel);
    if l.numel == 0 {
        return out;
    }
    let mut idx = vec![0usize; dims.len()];
    let mut pos = l.offset;
    loop {
        out.push(at(pos));
        // Odometer increment from the last dimension.
        let mut k = dims.len();
        loop {
            if k == 0 {
                return out;
            }
            k -= 1;
            let (d, s) = dims[k];
            idx[k] += 1;
            pos += s;
            if idx[k] < d {
                break;
            }
            pos -= s * d;
            idx[k] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(shape: &[usize], stride: &[usize], offset: usize) -> Layout {
        Layout {
            offset,
            shape: shape.to_vec(),
            stride: stride.to_vec(),
            numel: shape.iter().product(),
            span: 0,
        }
    }

    #[test]
    fn gathers_permuted_views_in_row_major_order() {
        // A (2, 3, 2) storage permuted to (2, 2, 3): stride (6, 1, 2).
        let l = layout(&[2, 2, 3], &[6, 1, 2], 0);
        assert!(!is_contiguous(&l));
        let got = gather(&l, |i| i as f32);
        assert_eq!(got, [0., 2., 4., 1., 3., 5., 6., 8., 10., 7., 9., 11.]);
        // Size-1 dimensions may carry any stride and stay contiguous.
        assert!(is_contiguous(&layout(&[1, 3], &[99, 1], 5)));
        assert_eq!(
            gather(&layout(&[1, 3], &[99, 1], 5), |i| i as f32),
            [5., 6., 7.]
        );
        assert!(gather(&layout(&[0, 3], &[3, 1], 0), |i| i as f32).is_empty());
    }

    #[test]
    fn top_dir_detection() {
        assert!(is_top_dir(""));
        assert!(is_top_dir("archive/"));
        assert!(!is_top_dir("a/b/"));
        assert!(!is_top_dir("archive"));
    }
}
