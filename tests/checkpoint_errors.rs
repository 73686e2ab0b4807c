//! The checkpoint reader against real torch files, hand-built archives and a corpus of broken
//! inputs, each of which must fail with its own message. The broken files are generated here
//! (into a temporary folder) rather than committed.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use sam_cobot::checkpoint::{
    CheckpointError, RawTensor, StateDict, load_state_dict, read_pth, read_safetensors,
    read_safetensors_metadata, write_safetensors,
};
use zip::write::SimpleFileOptions;

fn data_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Writes `bytes` as `name` in a fresh temporary folder and loads it.
fn load_bytes(name: &str, bytes: &[u8]) -> Result<StateDict, CheckpointError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    load_state_dict(&path)
}

fn load_err(name: &str, bytes: &[u8]) -> String {
    match load_bytes(name, bytes) {
        Ok(sd) => panic!("{name}: expected an error, got {} tensors", sd.len()),
        Err(e) => e.to_string(),
    }
}

#[track_caller]
fn assert_contains(message: &str, part: &str) {
    assert!(message.contains(part), "{message:?} lacks {part:?}");
}

/// A tensor entry: name, storage class, storage key, storage offset, shape, stride.
type Entry<'a> = (&'a str, &'a str, &'a str, i64, &'a [i64], &'a [i64]);

/// Minimal pickle writer for the opcodes `torch.save` uses.
#[derive(Default)]
struct Pickle(Vec<u8>);

impl Pickle {
    fn op(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    fn str(&mut self, s: &str) -> &mut Self {
        self.op(b"X")
            .op(&(s.len() as u32).to_le_bytes())
            .op(s.as_bytes())
    }

    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }

    fn int(&mut self, i: i64) -> &mut Self {
        self.op(&[0x8a, 8]).op(&i.to_le_bytes())
    }

    fn ints(&mut self, v: &[i64]) -> &mut Self {
        self.op(b"(");
        for &i in v {
            self.int(i);
        }
        self.op(b"t")
    }

    /// `_rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())`.
    fn tensor(
        &mut self,
        class: &str,
        key: &str,
        offset: i64,
        shape: &[i64],
        stride: &[i64],
    ) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b"((")
            .str("storage")
            .global("torch", class)
            .str(key)
            .str("cpu")
            .int(0)
            .op(b"tQ")
            .int(offset)
            .ints(shape)
            .ints(stride)
            .op(b"\x89")
            .global("collections", "OrderedDict")
            .op(b")Rt")
            .op(b"R")
    }

    /// `{name: tensor}` with one `FloatStorage` per entry.
    fn dict(entries: &[Entry]) -> Vec<u8> {
        let mut p = Pickle::default();
        p.op(b"\x80\x02}(");
        for &(name, class, key, offset, shape, stride) in entries {
            p.str(name).tensor(class, key, offset, shape, stride);
        }
        p.op(b"u.");
        p.0
    }
}

/// A `torch.save`-style archive: `<dir>/data.pkl`, `<dir>/data/<key>` entries and a version.
fn archive(pickle: &[u8], storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
    zip_of(
        std::iter::once(("ckpt/data.pkl".to_owned(), pickle.to_vec()))
            .chain(
                storages
                    .iter()
                    .map(|(k, b)| (format!("ckpt/data/{k}"), b.clone())),
            )
            .chain(std::iter::once((
                "ckpt/version".to_owned(),
                b"3\n".to_vec(),
            ))),
    )
}

fn zip_of(entries: impl IntoIterator<Item = (String, Vec<u8>)>) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        zip.start_file(name, opts).unwrap();
        zip.write_all(&bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn tensor(shape: &[usize], data: &[f32]) -> RawTensor {
    RawTensor::new(shape.to_vec(), data.to_vec())
}

fn tiny_expected() -> Vec<(&'static str, RawTensor)> {
    vec![
        ("a.weight", tensor(&[2, 3], &[0., 1., 2., 3., 4., 5.])),
        (
            "view.t",
            tensor(&[4, 2], &[4., 8., 5., 9., 6., 10., 7., 11.]),
        ),
        ("view.slice", tensor(&[3], &[2., 3., 4.])),
        ("half", tensor(&[3], &[1.5, -2.0, 0.25])),
        ("bf16", tensor(&[1, 2], &[1.0, -0.5])),
        ("double", tensor(&[2], &[0.125, 3.0])),
        ("param", tensor(&[2], &[7.0, 7.0])),
        ("scalar", tensor(&[], &[3.5])),
        ("empty", tensor(&[0, 3], &[])),
    ]
}

#[test]
fn real_torch_file_loads_with_views_and_dtypes() {
    let sd = load_state_dict(&data_file("tiny_state_dict.pth")).unwrap();
    let expected = tiny_expected();
    assert_eq!(sd.len(), expected.len());
    for (name, t) in expected {
        assert_eq!(sd.get(name), Some(&t), "{name}");
    }
}

#[test]
fn wrapped_model_dict_is_unwrapped() {
    let direct = load_state_dict(&data_file("tiny_state_dict.pth")).unwrap();
    let wrapped = load_state_dict(&data_file("tiny_wrapped.pth")).unwrap();
    assert_eq!(direct, wrapped);
}

#[test]
fn handmade_archive_with_strides_and_offsets() {
    let p = Pickle::dict(&[
        ("w", "FloatStorage", "0", 0, &[2, 2], &[2, 1]),
        ("wt", "FloatStorage", "0", 0, &[2, 2], &[1, 2]),
        ("tail", "FloatStorage", "0", 2, &[2], &[1]),
        ("h", "HalfStorage", "1", 0, &[1], &[1]),
    ]);
    let half = half::f16::from_f32(0.5).to_le_bytes().to_vec();
    let bytes = archive(&p, &[("0", f32_bytes(&[1., 2., 3., 4.])), ("1", half)]);
    let sd = read_pth(&bytes).unwrap();
    assert_eq!(sd.get("w"), Some(&tensor(&[2, 2], &[1., 2., 3., 4.])));
    assert_eq!(sd.get("wt"), Some(&tensor(&[2, 2], &[1., 3., 2., 4.])));
    assert_eq!(sd.get("tail"), Some(&tensor(&[2], &[3., 4.])));
    assert_eq!(sd.get("h"), Some(&tensor(&[1], &[0.5])));
}

#[test]
fn truncated_pth() {
    let bytes = std::fs::read(data_file("tiny_state_dict.pth")).unwrap();
    let msg = load_err("cut.pth", &bytes[..bytes.len() / 2]);
    assert_contains(&msg, "cut.pth");
    assert_contains(&msg, "truncated or corrupt zip archive");
}

#[test]
fn truncated_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.safetensors");
    let mut sd = StateDict::new();
    sd.insert("x", tensor(&[64], &[1.0; 64]));
    write_safetensors(&path, &sd, &BTreeMap::new()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let msg = load_err("cut.safetensors", &bytes[..bytes.len() - 10]);
    assert_contains(
        &msg,
        "truncated safetensors data: header describes 256 bytes, 246 present",
    );
    let msg = load_err("cut.safetensors", &bytes[..20]);
    assert_contains(&msg, "truncated safetensors header");
}

#[test]
fn random_bytes() {
    let bytes: Vec<u8> = (0..1000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let msg = load_err("noise.bin", &bytes);
    assert_contains(&msg, "noise.bin: not a zip archive and not safetensors");
}

#[test]
fn empty_file() {
    assert_contains(&load_err("empty.pth", b""), "empty.pth: file is empty");
}

#[test]
fn zip_of_something_else() {
    let bytes = zip_of([("docs/readme.txt".to_owned(), b"hello".to_vec())]);
    assert_contains(&load_err("other.zip", &bytes), "has no '<dir>/data.pkl'");
}

#[test]
fn pickle_references_missing_storage() {
    let p = Pickle::dict(&[("w", "FloatStorage", "7", 0, &[2], &[1])]);
    let msg = load_err("m.pth", &archive(&p, &[]));
    assert_contains(
        &msg,
        "tensor 'w' uses storage '7' but the archive has no entry 'ckpt/data/7'",
    );
}

#[test]
fn storage_too_small() {
    let p = Pickle::dict(&[("w", "FloatStorage", "0", 1, &[2, 3], &[3, 1])]);
    let msg = load_err("s.pth", &archive(&p, &[("0", f32_bytes(&[1.0, 2.0]))]));
    assert_contains(&msg, "tensor 'w' needs 28 bytes but storage '0' holds 8");
}

#[test]
fn unsupported_global_used_as_tensor() {
    let mut p = Pickle::default();
    p.op(b"\x80\x02}(")
        .str("w")
        .global("os", "system")
        .str("echo hi")
        .op(b"\x85R")
        .op(b"u.");
    let msg = load_err("evil.pth", &archive(&p.0, &[]));
    assert_contains(
        &msg,
        "entry 'w' is not a tensor but an unsupported object (os.system(...))",
    );
}

#[test]
fn int64_tensor() {
    let p = Pickle::dict(&[("steps", "LongStorage", "0", 0, &[1], &[1])]);
    let msg = load_err("i.pth", &archive(&p, &[("0", 5i64.to_le_bytes().to_vec())]));
    assert_contains(&msg, "tensor 'steps' has dtype int64");
}

#[test]
fn int64_safetensors() {
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![1], &[0; 8]).unwrap();
    let bytes = safetensors::serialize([("count", view)], None).unwrap();
    let msg = read_safetensors(&bytes).unwrap_err().to_string();
    assert_contains(&msg, "<memory>: tensor 'count' has dtype I64");
}

#[test]
fn unsupported_opcode() {
    // PERSID (text protocol 0) is not something torch.save emits.
    let msg = load_err("op.pth", &archive(b"\x80\x02P0\n.", &[]));
    assert_contains(&msg, "data.pkl at byte 2: pickle opcode 0x50 not supported");
}

#[test]
fn negative_and_overflowing_shapes() {
    let p = Pickle::dict(&[("w", "FloatStorage", "0", 0, &[-2], &[1])]);
    assert_contains(
        &load_err("n.pth", &archive(&p, &[])),
        "tensor 'w': negative size -2",
    );
    let big = i64::MAX;
    let p = Pickle::dict(&[("w", "FloatStorage", "0", 0, &[big, big], &[1, 1])]);
    assert_contains(&load_err("o.pth", &archive(&p, &[])), "overflows");
    let p = Pickle::dict(&[("w", "FloatStorage", "0", 0, &[1 << 40], &[0])]);
    assert_contains(
        &load_err("b.pth", &archive(&p, &[])),
        "broadcast views are not supported",
    );
}

#[test]
fn nonexistent_path() {
    let err = load_state_dict(Path::new("/nonexistent/sam.pth")).unwrap_err();
    assert!(matches!(err, CheckpointError::Io { .. }));
    assert_contains(&err.to_string(), "/nonexistent/sam.pth: No such file");
}

#[test]
fn in_memory_errors_name_memory() {
    assert_contains(
        &read_pth(b"PK\x03\x04").unwrap_err().to_string(),
        "<memory>",
    );
    assert_contains(
        &read_safetensors(b"junk").unwrap_err().to_string(),
        "<memory>",
    );
}

#[test]
fn safetensors_round_trip_is_exact_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.safetensors");
    let sd: StateDict = tiny_expected()
        .into_iter()
        .map(|(k, t)| (k.to_owned(), t))
        .collect();
    let meta = BTreeMap::from([
        ("format".to_owned(), "pt".to_owned()),
        ("adapter".to_owned(), "lora r=4".to_owned()),
    ]);
    write_safetensors(&path, &sd, &meta).unwrap();
    // Overwriting goes through the same temp-file-and-rename path.
    write_safetensors(&path, &sd, &meta).unwrap();
    assert_eq!(load_state_dict(&path).unwrap(), sd);
    assert_eq!(read_safetensors_metadata(&path).unwrap(), meta);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["out.safetensors"]);
}

#[test]
fn failed_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let mut sd = StateDict::new();
    sd.insert("w", tensor(&[2, 2], &[1.0]));
    let msg = write_safetensors(&path, &sd, &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert_contains(&msg, "tensor 'w': shape [2, 2] does not match its 1 values");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // A folder that does not exist: the error names the file, nothing is created.
    let missing = dir.path().join("no/such/dir/x.safetensors");
    assert!(write_safetensors(&missing, &StateDict::new(), &BTreeMap::new()).is_err());
}

#[test]
fn metadata_of_file_without_metadata_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.safetensors");
    write_safetensors(&path, &StateDict::new(), &BTreeMap::new()).unwrap();
    assert!(read_safetensors_metadata(&path).unwrap().is_empty());
    assert!(load_state_dict(&path).unwrap().is_empty());
}
