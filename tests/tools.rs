//! The commands around training: `demo` (the whole workflow on generated data), `init` (random
//! checkpoints of named configurations) and `bench` (timing reports).

use std::path::Path;
use std::process::{Command, Output};

use sam_cobot::checkpoint::load_state_dict;
use sam_cobot::nn::params::Origin;
use sam_cobot::nn::weights::Weights;
use sam_cobot::sam::config::SamConfig;

fn sam_cobot(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sam-cobot"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("running sam-cobot")
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn metrics(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn demo_compares_the_methods_from_the_shipped_base() {
    let tmp = tempfile::tempdir().unwrap();
    let out = sam_cobot(
        tmp.path(),
        &["demo", "--out", "d", "--images", "4", "--epochs", "1"],
    );
    let stdout = stdout_ok(&out);
    assert!(stdout.contains("| lora+cobot |"), "{stdout}");
    let d = tmp.path().join("d");
    let summary = metrics(&d.join("summary.json"));
    for method in ["freeze", "lightweight", "lora", "lora+cobot", "box-fill"] {
        let row = &summary["methods"][method];
        for score in ["dice", "iou"] {
            let v = row[score]
                .as_f64()
                .unwrap_or_else(|| panic!("{method} {score}: {row}"));
            assert!((0.0..=100.0).contains(&v), "{method} {score} = {v}");
        }
        let report = metrics(&d.join("report").join(method).join("metrics.json"));
        assert!(report["objects"].as_u64().unwrap() > 0);
        assert!(
            d.join("report")
                .join(method)
                .join("sonar_000.png")
                .is_file()
        );
    }
    for method in ["lightweight", "lora", "lora+cobot"] {
        assert!(d.join("runs").join(method).join("training.png").is_file());
        assert!(
            d.join("runs")
                .join(method)
                .join("best/adapter.safetensors")
                .is_file()
        );
    }
    // The generated objects are not boxes: box-filling them is far from perfect.
    assert!(summary["methods"]["box-fill"]["dice"].as_f64().unwrap() < 85.0);
}

#[test]
fn demo_refuses_an_unusable_rate_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    for lr in ["-1", "nan"] {
        let flag = format!("--lr={lr}");
        let out = sam_cobot(tmp.path(), &["demo", "--out", "d", &flag]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--lr"), "{err}");
        assert!(!tmp.path().join("d").exists());
    }
}

#[test]
fn demo_does_not_write_into_a_folder_that_holds_files_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("notes.txt"), "mine").unwrap();
    let out = sam_cobot(tmp.path(), &["demo", "--out", "d"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
}

#[test]
fn demo_names_a_missing_or_broken_base() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("broken.safetensors"), b"not a checkpoint").unwrap();
    for base in ["missing.safetensors", "broken.safetensors"] {
        let out = sam_cobot(tmp.path(), &["demo", "--out", "d", "--base", base]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(base) && !err.contains("panicked"), "{err}");
        assert!(
            !tmp.path().join("d").exists(),
            "{base}: the demo wrote its folder"
        );
    }
}

#[test]
fn zero_counts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (command, flag) in [
        (&["demo", "--out", "d"][..], "--epochs"),
        (&["demo", "--out", "d"][..], "--images"),
        (&["bench", "--model", "tiny"][..], "--runs"),
        (&["bench", "--model", "tiny"][..], "--batch"),
        (&["bench", "--model", "tiny"][..], "--boxes"),
    ] {
        let out = sam_cobot(tmp.path(), &[command, &[flag, "0"]].concat());
        assert!(!out.status.success(), "{flag} 0");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("invalid value '0' for '{flag}"))
                && stderr.contains("must be at least 1"),
            "{stderr}"
        );
        assert!(!tmp.path().join("d").exists(), "{flag} 0 made the folder");
    }
}

#[test]
fn init_writes_the_named_configurations() {
    let tmp = tempfile::tempdir().unwrap();
    let device = burn::tensor::Device::flex();
    for name in ["tiny", "small"] {
        let file = format!("{name}.safetensors");
        let out = sam_cobot(tmp.path(), &["init", "--model", name, "--out", &file]);
        stdout_ok(&out);
        let dict = load_state_dict(&tmp.path().join(&file)).unwrap();
        let weights = Weights::new(dict, &device, Origin::Base);
        assert_eq!(
            SamConfig::infer(&weights).unwrap(),
            SamConfig::named(name).unwrap(),
            "{name}"
        );
    }
    let out = sam_cobot(
        tmp.path(),
        &["init", "--model", "vit_q", "--out", "x.safetensors"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--model vit_q") && err.contains("small"),
        "{err}"
    );
    assert!(!tmp.path().join("x.safetensors").exists());
}

#[test]
fn bench_reports_medians_and_refuses_freeze_steps() {
    let tmp = tempfile::tempdir().unwrap();
    for workload in ["train-step", "inference"] {
        let out = sam_cobot(
            tmp.path(),
            &[
                "bench",
                "--workload",
                workload,
                "--model",
                "tiny",
                "--method",
                "lora+cobot",
                "--boxes",
                "2",
                "--warmup",
                "0",
                "--runs",
                "3",
                "--json",
            ],
        );
        let report: serde_json::Value = serde_json::from_str(stdout_ok(&out).trim()).unwrap();
        assert_eq!(report["workload"], workload);
        assert_eq!(report["model"], "tiny");
        assert_eq!(report["boxes"], 2);
        assert_eq!(report["device"], "cpu");
        let runs = report["runs_ms"].as_array().unwrap();
        assert_eq!(runs.len(), 3);
        let median = report["median_ms"].as_f64().unwrap();
        assert!(runs.iter().any(|r| r.as_f64() == Some(median)), "{report}");
    }
    let out = sam_cobot(
        tmp.path(),
        &[
            "bench",
            "--workload",
            "gemm",
            "--gemm-size",
            "48x64x32",
            "--runs",
            "2",
            "--json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(stdout_ok(&out).trim()).unwrap();
    assert!(report["gflops"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(report["size"], "48x64x32");
    let out = sam_cobot(
        tmp.path(),
        &["bench", "--workload", "gemm", "--gemm-size", "48x0x32"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`48x0x32` is not a GEMM size"));
    let out = sam_cobot(
        tmp.path(),
        &["bench", "--model", "tiny", "--method", "freeze"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("freeze trains nothing"));
}

#[test]
fn bench_and_train_refuse_unknown_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let run = run_dir.to_str().unwrap();
    for (args, expected) in [
        (
            &["bench", "--device", "tpu"][..],
            "--device tpu: unknown device",
        ),
        (
            &["bench", "--device", "vulkan:first"][..],
            "'first' is not a device index",
        ),
        (
            &["train", "--device", "tpu", "--out", run][..],
            "--device tpu: unknown device",
        ),
    ] {
        let out = sam_cobot(tmp.path(), args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert!(
        !run_dir.exists(),
        "a refused run must not create its folder"
    );
}
