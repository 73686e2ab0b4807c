//! Training-loop parity with PyTorch: `sam-cobot train` and the reference loop of
//! `scripts/make_train_parity_fixtures.py` (segment-anything + the reference PEFT modules) train
//! the tiny SAM with lora+cobot and adapter+cobot for 30 steps from the same tensors on the same
//! items; every step's loss (from `--log-jsonl`) and every trained tensor at the end agree.

mod common;

use std::path::Path;
use std::process::Command;

use burn::tensor::Device;
use common::fixtures;
use sam_cobot::adapter::save_adapter;
use sam_cobot::checkpoint::load_state_dict;
use sam_cobot::peft::{Method, PeftConfig};
use sam_cobot::sam::Sam;
use sam_cobot::train::step_log::StepLog;

/// Per-step loss, relative. Both sides compute in f32 with different operation orders (and
/// the batch order differs: the trainer shuffles it), and 30 Adam steps carry those roundings
/// forward.
const LOSS_TOLERANCE: f64 = 1e-4;
/// Relative L2 distance of each trained tensor.
const TENSOR_TOLERANCE: f64 = 1e-3;

fn check(case: &str, method: Method) {
    let dir = fixtures().join("train_parity").join(case);
    let base = fixtures().join("tiny256.pth");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = PeftConfig {
        adapter_dropout: 0.0,
        ..PeftConfig::new(method)
    };
    let sam = Sam::from_state_dict(load_state_dict(&base).unwrap(), None, &Device::flex())
        .unwrap()
        .attach_peft(
            cfg,
            load_state_dict(&dir.join("start.safetensors")).unwrap(),
        )
        .unwrap();
    let start = tmp.path().join("start.safetensors");
    save_adapter(&start, &sam, &base).unwrap();
    let (run, log) = (tmp.path().join("run"), tmp.path().join("steps.jsonl"));
    let out = Command::new(env!("CARGO_BIN_EXE_sam-cobot"))
        .args(["--threads", "1", "train", "--checkpoint"])
        .arg(&base)
        .arg("--data")
        .arg(fixtures().join("train_parity/items"))
        .args(["--method", &method.name(), "--init-adapter"])
        .arg(&start)
        .args([
            "--batch",
            "2",
            "--epochs",
            "30",
            "--lr",
            "1e-3",
            "--optimizer",
            "adam",
        ])
        .args([
            "--weight-decay",
            "5e-5",
            "--schedule",
            "warmup-cosine",
            "--augment",
            "false",
        ])
        .args(["--device", &common::test_device_name()])
        .args(["--box-jitter", "0", "--adapter-dropout", "0", "--log-jsonl"])
        .arg(&log)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let steps: Vec<StepLog> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let losses = reference["losses"].as_array().unwrap();
    let rates = reference["learning_rates"].as_array().unwrap();
    assert_eq!(steps.len(), losses.len());
    let mut worst = 0f64;
    for (k, (step, expected)) in steps.iter().zip(losses).enumerate() {
        let expected = expected.as_f64().unwrap();
        let rel = (step.loss - expected).abs() / expected.abs();
        worst = worst.max(rel);
        assert!(
            rel <= LOSS_TOLERANCE,
            "{case} step {k}: loss {} vs {expected} ({rel:.1e})",
            step.loss
        );
        let lr = rates[k].as_f64().unwrap();
        assert!(
            (step.lr - lr).abs() <= 1e-12 * lr.max(1.0),
            "{case} step {k}: lr {}",
            step.lr
        );
        assert_eq!((step.epoch, step.step, step.images), (k, k as u64 + 1, 2));
    }
    let trained = load_state_dict(&run.join("last/adapter.safetensors")).unwrap();
    let expected = load_state_dict(&dir.join("final.safetensors")).unwrap();
    let mut worst_tensor = (0f64, String::new());
    for (key, t) in expected.iter() {
        let mine = trained
            .get(key)
            .unwrap_or_else(|| panic!("{case}: no {key} in the adapter"));
        let rel = common::relative_l2(&mine.data, &t.data);
        if rel > worst_tensor.0 {
            worst_tensor = (rel, key.to_string());
        }
        assert!(
            rel <= TENSOR_TOLERANCE,
            "{case}: {key} differs by {rel:.1e} (relative L2)"
        );
    }
    println!(
        "{case}: worst step loss {worst:.1e} relative, worst tensor {:.1e} ({})",
        worst_tensor.0, worst_tensor.1
    );
    assert!(Path::new(&run.join("last/state.json")).exists());
}

#[test]
fn lora_cobot_trains_as_the_pytorch_reference() {
    check("lora_cobot", Method::LORA_COBOT);
}

#[test]
fn adapter_cobot_trains_as_the_pytorch_reference() {
    check("adapter_cobot", Method::ADAPTER_COBOT);
}
