//! Helpers shared by the integration tests: fixture paths and tensor comparisons.
#![allow(dead_code)] // each test binary uses a different subset

pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::tensor::Tensor;
use sam_cobot::checkpoint::{StateDict, load_state_dict};

/// The `--device` the model tests run on: `SAM_COBOT_TEST_DEVICE` (for instance `vulkan:cpu`,
/// the GPU path on Mesa's software Vulkan, in a build with a GPU feature), else the CPU.
pub fn test_device_name() -> String {
    std::env::var("SAM_COBOT_TEST_DEVICE").unwrap_or_else(|_| "cpu".into())
}

/// [`test_device_name`] as a burn device.
pub fn test_device() -> burn::tensor::Device {
    let name = test_device_name();
    sam_cobot::cli::device::parse(&name)
        .unwrap_or_else(|e| panic!("SAM_COBOT_TEST_DEVICE={name}: {e}"))
}

/// The first stage of the shipped base model (`models/README.md`): the 256 px SAM that the
/// segment-everything fixtures were made with and that the server and GPU-path tests run
/// (four times cheaper than the shipped 512 px model).
pub const BASE_256: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/sam-cobot-base-256.safetensors"
);

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The reference tensors of a fixture case.
pub fn reference(case: &str) -> StateDict {
    let path = fixtures().join(case).join("reference.safetensors");
    load_state_dict(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// A tensor of a reference file as f32, including the uint8 images the fixtures store.
pub fn reference_tensor(case: &str, key: &str) -> (Vec<usize>, Vec<f32>) {
    let path = fixtures().join(case).join("reference.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    let data = match view.dtype() {
        safetensors::Dtype::U8 => view.data().iter().map(|&v| f32::from(v)).collect(),
        safetensors::Dtype::F32 => view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        other => panic!("{key}: unexpected dtype {other:?}"),
    };
    (view.shape().to_vec(), data)
}

/// Largest absolute difference between `actual` and the reference tensor `key`, after checking
/// that the shapes agree.
pub fn max_abs_diff<const D: usize>(actual: Tensor<D>, reference: &StateDict, key: &str) -> f32 {
    let expected = reference
        .get(key)
        .unwrap_or_else(|| panic!("reference has no '{key}'"));
    assert_eq!(
        actual.dims().as_slice(),
        expected.shape.as_slice(),
        "shape of '{key}'"
    );
    let actual: Vec<f32> = actual.into_data().try_to_vec().unwrap();
    max_abs_diff_slices(&actual, &expected.data)
}

/// `‖a − b‖ / ‖b‖` (f64 sums); `‖a − b‖` where `b` is all zeros.
pub fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

pub fn max_abs_diff_slices(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Panics with the command's output unless it succeeded.
pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd`, which must succeed; its stdout and stderr together.
pub fn succeeds(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    ok(&out);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Runs `cmd`, which must fail without a panic; its stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "succeeded: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// The epochs a run folder's last checkpoint has done (0 before the first).
pub fn epochs_done(out: &Path) -> usize {
    std::fs::read_to_string(out.join("last/state.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["epochs_done"].as_u64())
        .map_or(0, |n| n as usize)
}
