//! The GPU path (burn's wgpu backend, composed ops instead of the fused CPU kernels) against the
//! CPU, from the command line: `eval` and a few `train` steps give the same figures and tensors
//! on the device as on the CPU. Built only with a GPU feature (`vulkan` or `wgpu`); the device is
//! `SAM_COBOT_TEST_DEVICE` (default `vulkan:cpu`: Mesa's software Vulkan, lavapipe, which CI
//! installs). The parity, gradient, training-parity and predict tests run on the same device
//! through the same variable (docs/gpu.md).
#![cfg(any(feature = "vulkan", feature = "wgpu"))]

mod common;

use std::path::Path;
use std::process::Command;

use common::fixtures;
use sam_cobot::checkpoint::load_state_dict;
use sam_cobot::train::step_log::StepLog;

fn device() -> String {
    std::env::var("SAM_COBOT_TEST_DEVICE").unwrap_or_else(|_| "vulkan:cpu".into())
}

fn run(args: &[&str], dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_sam-cobot"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The runs each test compares, `(name, --device, --precision)`: the CPU, the device, and the
/// device in f16 when it computes in f16 (Vulkan's shaderFloat16; lavapipe has it).
fn runs(device: &str) -> Vec<(&'static str, &str, &'static str)> {
    let mut runs = vec![("cpu", "cpu", "f32"), ("gpu", device, "f32")];
    let started = sam_cobot::cli::device::parse(device).unwrap();
    if sam_cobot::kernels::Precision::F16.runs_on(&started) {
        runs.push(("gpu-f16", device, "f16"));
    }
    runs
}

fn metrics(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn eval_on_the_device_scores_as_on_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run(
        &["scenes", "--out", "scenes", "--count", "3", "--seed", "5"],
        dir,
    );
    let base = common::BASE_256;
    let device = device();
    let runs = runs(&device);
    for (name, on, precision) in &runs {
        let args = [
            "eval",
            "--data",
            "scenes/annotations.json",
            "--checkpoint",
            base,
        ];
        let on = ["--device", on, "--precision", precision, "--out", name];
        run(&[&args[..], &on].concat(), dir);
    }
    let cpu = metrics(&dir.join("cpu/metrics.json"));
    for (name, _, precision) in &runs[1..] {
        let gpu = metrics(&dir.join(name).join("metrics.json"));
        assert_eq!(cpu["objects"], gpu["objects"]);
        for key in ["mean_dice", "mean_iou"] {
            let (a, b) = (cpu[key].as_f64().unwrap(), gpu[key].as_f64().unwrap());
            // Percentages over 9 objects; a pixel flipped at a threshold moves them by ~0.01, and
            // f16 products flip a few more (the masks agree to 99.9%: tests/precision.rs).
            let tolerance = if *precision == "f32" { 0.05 } else { 0.5 };
            assert!(
                (a - b).abs() <= tolerance,
                "{key}: cpu {a} vs {device} {precision} {b}"
            );
        }
    }
}

#[test]
fn training_steps_on_the_device_equal_the_cpus() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = fixtures().join("tiny256.pth");
    let items = fixtures().join("train_parity/items");
    let device = device();
    let runs = runs(&device);
    for &(name, on, precision) in &runs {
        let args = [
            "train",
            "--checkpoint",
            base.to_str().unwrap(),
            "--data",
            items.to_str().unwrap(),
            "--method",
            "lora+cobot",
            "--batch",
            "2",
            "--epochs",
            "3",
            "--augment",
            "false",
            "--box-jitter",
            "0",
            "--adapter-dropout",
            "0",
            "--device",
            on,
            "--precision",
            precision,
            "--log-jsonl",
            &format!("{name}.jsonl"),
            "--out",
            name,
        ];
        run(&args, dir);
    }
    let steps = |name: &str| -> Vec<StepLog> {
        std::fs::read_to_string(dir.join(format!("{name}.jsonl")))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let cpu = steps("cpu");
    for &(name, _, precision) in &runs[1..] {
        // f32 on the device: the CPU's losses to float drift; f16 products: within f16's rounding
        // (11 significant bits, over the forward and backward passes).
        let bound = if precision == "f32" { 1e-4 } else { 1e-2 };
        let device_steps = steps(name);
        assert_eq!(cpu.len(), device_steps.len(), "{name}");
        for (a, b) in cpu.iter().zip(&device_steps) {
            let rel = (a.loss - b.loss).abs() / a.loss.abs();
            assert!(
                rel <= bound,
                "{name} step {}: loss {} vs {} ({rel:.1e})",
                a.step,
                a.loss,
                b.loss
            );
        }
    }
    let adapter = |name: &str| load_state_dict(&dir.join(name).join("last/adapter.safetensors"));
    let (cpu, gpu) = (adapter("cpu").unwrap(), adapter("gpu").unwrap());
    for (key, t) in cpu.iter() {
        let g = gpu
            .get(key)
            .unwrap_or_else(|| panic!("no {key} on {device}"));
        let (num, den) = t
            .data
            .iter()
            .zip(&g.data)
            .fold((0f64, 0f64), |(n, d), (a, b)| {
                (n + f64::from(a - b).powi(2), d + f64::from(*a).powi(2))
            });
        let rel = (num / den.max(1e-30)).sqrt();
        assert!(rel <= 1e-4, "{key}: relative L2 {rel:.1e} after 3 steps");
    }
}
