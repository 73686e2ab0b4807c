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

/// A GPU limits each buffer (lavapipe: 128 MiB), and what cannot fit is refused before any work
/// with the size that can: an input size at which one image's encoder tensors pass it, more
/// prompts in one call than their masks' tensor holds, a segment-everything batch of as many.
#[test]
fn what_passes_the_devices_buffer_limit_is_refused_before_any_work() {
    use burn::tensor::Tensor;
    use sam_cobot::sam::config::SamConfig;
    use sam_cobot::sam::mask_generator::{MaskGenerator, MaskGeneratorSettings};
    use sam_cobot::sam::predictor::{ImageEmbedding, Predictor, UserPrompts};
    use sam_cobot::sam::{Sam, random::random_state_dict};

    let device = sam_cobot::cli::device::parse(&device()).unwrap();
    let limit = sam_cobot::kernels::max_buffer_bytes(&device).expect("a GPU limits its buffers");
    let cfg = SamConfig::named("tiny").unwrap();
    let dict = random_state_dict(&cfg, 1);

    // The pixels of one 8192 px image alone take 768 MiB.
    let err = Sam::from_state_dict(dict.clone(), Some(8192), &device)
        .expect_err("an 8192 px input is refused")
        .to_string();
    assert!(err.contains("input size 8192 px"), "{err}");

    let sam = Sam::from_state_dict(dict, Some(1024), &device).unwrap();
    // [N, M, 256, 256] f32 masks at 1024 px: M · 256 KiB a prompt.
    let per_prompt = 4 * cfg.decoder.num_mask_tokens as u64 * 256 * 256;
    let most = sam.prompts_per_call();
    assert_eq!(most as u64, limit / per_prompt);

    let (e, g) = (cfg.prompt.embed_dim, 64);
    let image = ImageEmbedding {
        embedding: Tensor::<4>::zeros([1, e, g, g], &device),
        original_size: (1024, 1024),
    };
    let prompts = UserPrompts {
        boxes: vec![[10.0, 10.0, 200.0, 200.0]; most + 1],
        points: Vec::new(),
    };
    let err = Predictor::new(&sam)
        .predict(&image, &prompts, false)
        .err()
        .expect("one prompt too many is refused")
        .to_string();
    assert!(
        err.contains(&format!("give at most {most} prompts per call")),
        "{err}"
    );

    let settings = MaskGeneratorSettings {
        points_per_batch: most + 1,
        ..Default::default()
    };
    let err = MaskGenerator::new(&sam, settings)
        .err()
        .expect("a batch of too many points is refused")
        .to_string();
    assert!(
        err.starts_with(&format!("points_per_batch {}", most + 1)),
        "{err}"
    );
}
