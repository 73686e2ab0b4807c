//! Writing a flat dict of f32 tensors as `torch.save(state_dict)` does: a stored (uncompressed) zip
//! with `<name>/data.pkl` (a protocol-2 pickle of a `collections.OrderedDict` of
//! `torch._utils._rebuild_tensor_v2(...)` calls), `<name>/byteorder`, one raw little-endian
//! storage `<name>/data/<i>` per tensor and `<name>/version`. `torch.load(..., weights_only=True)`
//! and Meta's `build_sam` read it.

use std::io::{Cursor, Write};
use std::path::Path;

use anyhow::{Context, Result};
use zip::ZipWriter;
use zip::write::SimpleFileOptions;

use super::{RawTensor, StateDict};
use crate::files::atomic::write_atomic;

/// PyTorch aligns storages to 64 bytes in its archives (so they can be memory-mapped).
const ALIGNMENT: u16 = 64;

/// Writes `dict` to `path` as a PyTorch `.pth` archive, atomically.
///
/// The archive is assembled in memory (the zip writer needs to seek), then written in one go.
pub fn write_pth(path: &Path, dict: &StateDict) -> Result<()> {
    let bytes = pth_bytes(&archive_name(path), dict)
        .with_context(|| format!("cannot write {}", path.display()))?;
    write_atomic(path, |w| Ok(w.write_all(&bytes)?))
}

/// The archive's top-level folder: the file stem, as `torch.save` names it.
fn archive_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if stem.is_empty() || stem.contains(['/', '\\']) {
        "archive".into()
    } else {
        stem
    }
}

/// The bytes of a `.pth` archive whose entries sit under `name/`.
pub fn pth_bytes(name: &str, dict: &StateDict) -> Result<Vec<u8>> {
    for (key, t) in dict.iter() {
        anyhow::ensure!(
            t.numel() == t.data.len(),
            "tensor '{key}': shape {:?} does not match its {} values",
            t.shape,
            t.data.len()
        );
    }
    let data_len: usize = dict.iter().map(|(_, t)| 4 * t.data.len()).sum();
    let mut zip = ZipWriter::new(Cursor::new(Vec::with_capacity(
        data_len + 200 * dict.len() + 4096,
    )));
    let stored = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(data_len > u32::MAX as usize);
    let aligned = stored.with_alignment(ALIGNMENT);

    zip.start_file(format!("{name}/data.pkl"), aligned)?;
    zip.write_all(&pickle(dict))?;
    zip.start_file(format!("{name}/byteorder"), stored)?;
    zip.write_all(b"little")?;
    for (i, (_, t)) in dict.iter().enumerate() {
        zip.start_file(format!("{name}/data/{i}"), aligned)?;
        let mut buf = Vec::with_capacity(4 * t.data.len());
        for x in &t.data {
            buf.extend_from_slice(&x.to_le_bytes());
        }
        zip.write_all(&buf)?;
    }
    zip.start_file(format!("{name}/version"), stored)?;
    zip.write_all(b"3\n")?;
    Ok(zip.finish()?.into_inner())
}

/// Protocol-2 pickle opcodes used here.
mod op {
    pub const PROTO: u8 = 0x80;
    pub const GLOBAL: u8 = b'c';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const MARK: u8 = b'(';
    pub const TUPLE: u8 = b't';
    pub const REDUCE: u8 = b'R';
    pub const BINPERSID: u8 = b'Q';
    pub const BINUNICODE: u8 = b'X';
    pub const BININT: u8 = b'J';
    pub const LONG1: u8 = 0x8a;
    pub const NEWFALSE: u8 = 0x89;
    pub const SETITEMS: u8 = b'u';
    pub const STOP: u8 = b'.';
}

struct Pickler {
    out: Vec<u8>,
}

impl Pickler {
    fn global(&mut self, module: &str, name: &str) {
        self.out.push(op::GLOBAL);
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
    }

    fn str(&mut self, s: &str) {
        self.out.push(op::BINUNICODE);
        self.out
            .extend_from_slice(&u32::try_from(s.len()).expect("short string").to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, v: usize) {
        match i32::try_from(v) {
            Ok(v) => {
                self.out.push(op::BININT);
                self.out.extend_from_slice(&v.to_le_bytes());
            }
            Err(_) => {
                // LONG1: little-endian two's complement; 9 bytes hold any usize as positive.
                self.out.push(op::LONG1);
                self.out.push(9);
                self.out.extend_from_slice(&(v as u64).to_le_bytes());
                self.out.push(0);
            }
        }
    }

    fn int_tuple(&mut self, values: &[usize]) {
        if values.is_empty() {
            self.out.push(op::EMPTY_TUPLE);
            return;
        }
        self.out.push(op::MARK);
        for &v in values {
            self.int(v);
        }
        self.out.push(op::TUPLE);
    }

    /// `collections.OrderedDict()`.
    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.push(op::EMPTY_TUPLE);
        self.out.push(op::REDUCE);
    }

    /// `torch._utils._rebuild_tensor_v2(<storage i>, 0, size, stride, False, OrderedDict())`.
    fn tensor(&mut self, storage: usize, t: &RawTensor) {
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.out.push(op::MARK);
        // Persistent id ('storage', torch.FloatStorage, '<i>', 'cpu', numel).
        self.out.push(op::MARK);
        self.str("storage");
        self.global("torch", "FloatStorage");
        self.str(&storage.to_string());
        self.str("cpu");
        self.int(t.numel());
        self.out.push(op::TUPLE);
        self.out.push(op::BINPERSID);
        self.int(0);
        self.int_tuple(&t.shape);
        self.int_tuple(&contiguous_strides(&t.shape));
        self.out.push(op::NEWFALSE);
        self.ordered_dict();
        self.out.push(op::TUPLE);
        self.out.push(op::REDUCE);
    }
}

/// Row-major strides, as PyTorch gives a contiguous tensor.
fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// data.pkl: the ordered dict of tensors, storage i for the i-th tensor in key order.
fn pickle(dict: &StateDict) -> Vec<u8> {
    let mut p = Pickler {
        out: vec![op::PROTO, 2],
    };
    p.ordered_dict();
    if !dict.is_empty() {
        p.out.push(op::MARK);
        for (i, (key, t)) in dict.iter().enumerate() {
            p.str(key);
            p.tensor(i, t);
        }
        p.out.push(op::SETITEMS);
    }
    p.out.push(op::STOP);
    p.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::read_pth;

    #[test]
    fn round_trips_through_the_reader() {
        let mut dict = StateDict::new();
        dict.insert(
            "a.weight",
            RawTensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]),
        );
        dict.insert("b", RawTensor::new(vec![], vec![-0.5]));
        dict.insert("c.empty", RawTensor::new(vec![0, 4], vec![]));
        dict.insert(
            "d",
            RawTensor::new(vec![1, 2, 1, 2], vec![f32::MIN, 0., 1e-30, 7.]),
        );
        let bytes = pth_bytes("x", &dict).unwrap();
        assert_eq!(read_pth(&bytes).unwrap(), dict);
        assert_eq!(
            read_pth(&pth_bytes("x", &StateDict::new()).unwrap()).unwrap(),
            StateDict::new()
        );
    }

    #[test]
    fn strides_and_names() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), [12, 4, 1]);
        assert!(contiguous_strides(&[]).is_empty());
        assert_eq!(archive_name(Path::new("/tmp/merged.pth")), "merged");
        assert_eq!(archive_name(Path::new(".pth")), ".pth");
    }

    #[test]
    fn big_ints_use_long1() {
        let mut p = Pickler { out: Vec::new() };
        p.int(1 << 40);
        assert_eq!(p.out[0], op::LONG1);
    }

    #[test]
    fn rejects_inconsistent_tensors() {
        let mut dict = StateDict::new();
        dict.insert("a", RawTensor::new(vec![2, 2], vec![1.0]));
        assert!(pth_bytes("x", &dict).is_err());
    }
}
