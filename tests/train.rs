//! Training end to end on a small generated data set with the tiny fixture SAM: checkpoints,
//! and a run killed after its first checkpoint and resumed ends with the same weights as an
//! uninterrupted one.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{epochs_done, fails, fixtures, succeeds};
use image::{GrayImage, Luma, Rgb, RgbImage};
use sam_cobot::checkpoint::load_state_dict;

/// `images/` + `masks/` with one or two ellipses per image on a noisy background.
fn make_dataset(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    for i in 0..n {
        let (w, h) = (96u32, 80u32);
        let mut image = RgbImage::new(w, h);
        let mut mask = GrayImage::new(w, h);
        let centres = [
            (20.0 + 5.0 * i as f32, 30.0, 12.0, 9.0),
            (65.0, 50.0 - 2.0 * i as f32, 10.0, 14.0),
        ];
        for y in 0..h {
            for x in 0..w {
                let noise = ((x * 7 + y * 13 + i as u32 * 31) % 23) as u8;
                let inside = centres.iter().take(1 + i % 2).any(|&(cx, cy, rx, ry)| {
                    ((x as f32 - cx) / rx).powi(2) + ((y as f32 - cy) / ry).powi(2) <= 1.0
                });
                let v = if inside { 180 + noise } else { 40 + noise };
                image.put_pixel(x, y, Rgb([v, v / 2 + 20, 255 - v]));
                mask.put_pixel(x, y, Luma([if inside { 255 } else { 0 }]));
            }
        }
        image.save(dir.join(format!("images/img{i}.png"))).unwrap();
        mask.save(dir.join(format!("masks/img{i}.png"))).unwrap();
    }
}

fn train_command(data: &Path, out: &Path) -> Command {
    train_command_for(data, out, 3, "1e-3")
}

/// `sam-cobot train` on `checkpoint` and `data`, at the checkpoint's native input size (256 px
/// for the tiny fixture); the tests add the rest.
fn train(checkpoint: &Path, data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sam-cobot"));
    cmd.args(["train", "--checkpoint"])
        .arg(checkpoint)
        .arg("--data")
        .arg(data);
    cmd
}

fn train_command_for(data: &Path, out: &Path, epochs: usize, lr: &str) -> Command {
    let mut cmd = train(&fixtures().join("tiny256.pth"), data);
    cmd.args(["--batch", "2", "--method", "lora+cobot"])
        .args(["--epochs", &epochs.to_string()])
        .args(["--lr", lr, "--seed", "7", "--out"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

#[test]
fn killed_run_resumes_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data, 6);
    let uninterrupted: PathBuf = tmp.path().join("a");
    assert!(
        train_command(&data, &uninterrupted)
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(epochs_done(&uninterrupted), 3);
    for file in ["adapter.safetensors", "optimizer.safetensors", "state.json"] {
        assert!(
            uninterrupted.join("best").join(file).exists(),
            "best/{file}"
        );
    }

    // Kill the second run as soon as its first checkpoint is on disk.
    let interrupted = tmp.path().join("b");
    let mut child = train_command(&data, &interrupted).spawn().unwrap();
    let started = Instant::now();
    while epochs_done(&interrupted) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        epochs_done(&interrupted) < 3,
        "the run finished before it could be killed"
    );
    let mut resume = train_command(&data, &interrupted);
    resume.arg("--resume");
    assert!(resume.status().unwrap().success());
    assert_eq!(epochs_done(&interrupted), 3);

    let a = load_state_dict(&uninterrupted.join("last/adapter.safetensors")).unwrap();
    let b = load_state_dict(&interrupted.join("last/adapter.safetensors")).unwrap();
    assert_eq!(a.len(), b.len());
    for (key, ta) in a.iter() {
        let tb = b.get(key).unwrap();
        assert_eq!(ta.data, tb.data, "{key} differs after resume");
    }
    // And the runs trained: every PEFT tensor that trains moved from its seeded start.
    let cfg = sam_cobot::peft::PeftConfig::new(sam_cobot::peft::Method::LORA_COBOT);
    let start = sam_cobot::peft::initial_state(&cfg, 64, 4, 7);
    for (key, t) in start.iter().filter(|(k, _)| cfg.is_trainable(k, true)) {
        assert_ne!(t.data, a.get(key).unwrap().data, "{key} never moved");
    }
}

#[test]
fn input_size_defaults_to_the_checkpoints_own() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data, 2);
    let out = tmp.path().join("run");
    let run = train(&fixtures().join("tiny256.pth"), &data)
        .args(["--epochs", "1", "--batch", "2", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("last/settings.json")).unwrap())
            .unwrap();
    assert_eq!(
        settings["image_size"], 256,
        "the saved settings name the size used"
    );
    let meta =
        sam_cobot::checkpoint::read_safetensors_metadata(&out.join("last/adapter.safetensors"))
            .unwrap();
    assert_eq!(meta["image_size"], "256");
}

#[test]
fn unusable_counts_and_rates_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    for (flag, value, expected) in [
        ("--batch", "0", "--batch 0: must be at least 1"),
        ("--epochs", "0", "--epochs 0: must be at least 1"),
        ("--lr", "-1e-4", "--lr -0.0001: must be a finite number"),
        ("--lr", "NaN", "--lr NaN: must be a finite number"),
        (
            "--weight-decay",
            "inf",
            "--weight-decay inf: must be a finite number",
        ),
    ] {
        let run = train(&fixtures().join("tiny256.pth"), &tmp.path().join("data"))
            .arg(format!("{flag}={value}"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{flag} {value}");
        assert!(err.contains(expected), "{flag} {value}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            !out.exists(),
            "{flag} {value}: the refused run made its folder"
        );
    }
}

#[test]
fn resume_without_a_run_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data, 2);
    let out = train(&fixtures().join("tiny256.pth"), &data)
        .args(["--resume", "--out"])
        .arg(tmp.path().join("nothing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no run to continue there"), "{err}");
    assert!(!err.contains(".last.old"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn init_adapter_warm_starts_and_refuses_another_method() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data, 2);
    let first = tmp.path().join("first");
    assert!(
        train_command_for(&data, &first, 1, "1e-3")
            .status()
            .unwrap()
            .success()
    );
    let adapter = first.join("last/adapter.safetensors");
    let cfg = sam_cobot::peft::PeftConfig::new(sam_cobot::peft::Method::LORA_COBOT);
    let fresh = sam_cobot::peft::initial_state(&cfg, 64, 4, 7);
    let trained = load_state_dict(&adapter).unwrap();
    assert!(
        fresh
            .iter()
            .any(|(key, t)| trained.get(key).unwrap().data != t.data),
        "the first run never moved its tensors"
    );

    // Same method: the run starts from the adapter's tensors.
    let second = tmp.path().join("second");
    let mut cmd = train_command_for(&data, &second, 1, "0");
    cmd.arg("--init-adapter")
        .arg(&adapter)
        .stderr(Stdio::piped());
    let run = cmd.output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let a = load_state_dict(&adapter).unwrap();
    let b = load_state_dict(&second.join("last/adapter.safetensors")).unwrap();
    for (key, t) in a.iter() {
        assert_eq!(
            t.data,
            b.get(key).unwrap().data,
            "{key}: a zero learning rate keeps the start"
        );
    }

    let out = train(&fixtures().join("tiny256.pth"), &data)
        .args(["--epochs", "1", "--method", "lora", "--init-adapter"])
        .arg(&adapter)
        .arg("--out")
        .arg(tmp.path().join("third"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--method lora+cobot") && err.contains("trains lora"),
        "{err}"
    );

    // Starting over in the first run's folder would remove the adapter it starts from.
    let err = fails(
        train_command_for(&data, &first, 1, "1e-3")
            .arg("--init-adapter")
            .arg(&adapter)
            .arg("--force")
            .stderr(Stdio::piped()),
    );
    assert!(err.contains("--init-adapter"), "{err}");
    assert!(adapter.exists());
}

#[test]
fn non_finite_losses_skip_their_steps_and_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data, 2);
    // A NaN in the mask tokens makes every logit, and so every loss, NaN.
    let mut dict = load_state_dict(&fixtures().join("tiny256.pth")).unwrap();
    let mut tokens = dict.remove("mask_decoder.mask_tokens.weight").unwrap();
    tokens.data[0] = f32::NAN;
    dict.insert("mask_decoder.mask_tokens.weight", tokens);
    let checkpoint = tmp.path().join("nan.safetensors");
    sam_cobot::checkpoint::write_safetensors(&checkpoint, &dict, &Default::default()).unwrap();

    // Every step of the epoch is skipped: the run fails, and nothing of it is left.
    let out = tmp.path().join("run");
    let run = train(&checkpoint, &data)
        .args(["--epochs", "1", "--batch", "1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{err}");
    assert!(
        err.contains("epoch 1: every step was skipped") && err.contains("2 non-finite"),
        "{err}"
    );
    assert!(!out.exists(), "the failed run left {}", out.display());
}

fn run_settings(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("last/settings.json")).unwrap()).unwrap()
}

#[test]
fn a_folder_that_is_not_empty_needs_resume_or_force_and_force_keeps_the_users_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data, 2);
    let out = tmp.path().join("run");
    let base = || {
        let mut cmd = train(&fixtures().join("tiny256.pth"), &data);
        cmd.args(["--batch", "2", "--out"]).arg(&out);
        cmd
    };
    // A folder of the user's files is not a run folder.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let err = fails(base().args(["--epochs", "1"]));
    assert!(
        err.contains("is not empty") && err.contains("--force"),
        "{err}"
    );
    succeeds(base().args(["--epochs", "2", "--force"]));
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );
    // A finished run is not replaced by a new one without --force.
    let err = fails(base().args(["--epochs", "1"]));
    assert!(err.contains("holds a run"), "{err}");
    assert_eq!(epochs_done(&out), 2);
    // A file of the user's inside a checkpoint folder stops --force: saving would lose it.
    std::fs::write(out.join("best/mine.txt"), "x").unwrap();
    let err = fails(base().args(["--epochs", "1", "--force"]));
    assert!(err.contains("mine.txt"), "{err}");
    assert!(out.join("best/mine.txt").exists() && epochs_done(&out) == 2);
}

#[test]
fn resume_continues_with_the_runs_own_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data, 3);
    let out = tmp.path().join("run");
    succeeds(
        train(&fixtures().join("tiny256.pth"), &data)
            .args(["--method", "lora", "--lr", "0.01", "--batch", "1"])
            .args(["--epochs", "1", "--out"])
            .arg(&out),
    );
    let resume = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sam-cobot"));
        cmd.args(["train", "--resume", "--out"]).arg(&out);
        cmd
    };
    // A flag that contradicts the run is refused, naming both values.
    let err = fails(resume().args(["--lr", "1e-4"]));
    assert!(err.contains("--lr 0.01") && err.contains("0.0001"), "{err}");
    let err = fails(resume().args(["--batch", "2"]));
    assert!(err.contains("--batch 1") && err.contains("not 2"), "{err}");
    // Alone, or with a longer --epochs, it continues with the run's settings.
    succeeds(&mut resume());
    succeeds(resume().args(["--epochs", "2", "--lr", "0.01"]));
    assert_eq!(epochs_done(&out), 2);
    let settings = run_settings(&out);
    assert_eq!(settings["lr"], 0.01);
    assert_eq!(settings["batch"], 1);
    assert_eq!(settings["peft"]["method"], "lora");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("last/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["steps"], 6, "batch 1 over 3 images for 2 epochs");
}

#[test]
fn runs_that_cannot_train_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data, 2);
    let broken = tmp.path().join("broken");
    make_dataset(&broken, 2);
    for i in 0..2 {
        std::fs::write(broken.join(format!("images/img{i}.png")), "not an image").unwrap();
    }
    let split = tmp.path().join("split.txt");
    std::fs::write(&split, "img7\nimg8\n").unwrap();
    let out = tmp.path().join("run");
    let log_in_data = data.join("steps.jsonl");
    let cases: [(&Path, &[&str], &str); 7] = [
        (
            &data,
            &["--method", "freeze"],
            "--method freeze trains nothing",
        ),
        (&broken, &[], "none of the 2 training items could be read"),
        (
            &data,
            &["--preprocessing", "sonar", "--std", "0"],
            "--std 0",
        ),
        (
            &data,
            &["--preprocessing", "sonar", "--mean", "nan"],
            "--mean NaN",
        ),
        (&data, &["--rank", "100000"], "--rank 100000"),
        (
            &data,
            &["--train-split", split.to_str().unwrap()],
            "none of the 2 names",
        ),
        (
            &data,
            &["--log-jsonl", log_in_data.to_str().unwrap()],
            "lies inside --data",
        ),
    ];
    for (set, flags, says) in cases {
        let err = fails(
            train(&fixtures().join("tiny256.pth"), set)
                .args(flags)
                .arg("--out")
                .arg(&out),
        );
        assert!(err.contains(says), "{flags:?}: {err}");
        assert!(!out.exists(), "{flags:?} wrote {}", out.display());
    }
    assert!(!log_in_data.exists());
}

#[test]
fn unreadable_items_are_named_once_with_a_total() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data, 3);
    std::fs::write(data.join("images/img2.png"), "not an image").unwrap();
    let text = succeeds(
        train(&fixtures().join("tiny256.pth"), &data)
            .args(["--epochs", "2", "--batch", "2", "--out"])
            .arg(tmp.path().join("run")),
    );
    assert_eq!(text.matches("skipped: ").count(), 1, "{text}");
    assert!(
        text.contains("1 unreadable item(s) skipped in every epoch"),
        "{text}"
    );
}

#[test]
fn an_adapter_trained_on_one_file_fits_another_file_with_the_same_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data, 2);
    let out = tmp.path().join("run");
    succeeds(
        train(&fixtures().join("tiny256.safetensors"), &data)
            .args(["--epochs", "1", "--out"])
            .arg(&out),
    );
    let adapter = out.join("last/adapter.safetensors");
    let image = data.join("images/img0.png");
    let predict = |base: &str, out_name: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sam-cobot"));
        cmd.args(["predict", "--checkpoint"])
            .arg(fixtures().join(base))
            .arg("--adapter")
            .arg(&adapter)
            .arg("--image")
            .arg(&image)
            .args(["--box", "5,5,60,50", "--out"])
            .arg(tmp.path().join(out_name));
        cmd
    };
    succeeds(&mut predict("tiny256.safetensors", "a.png"));
    succeeds(&mut predict("tiny256.pth", "b.png"));
    assert_eq!(
        std::fs::read(tmp.path().join("a.png")).unwrap(),
        std::fs::read(tmp.path().join("b.png")).unwrap()
    );
    let err = fails(&mut predict("tiny1024.pth", "c.png"));
    assert!(
        err.contains("different base checkpoint") && err.contains("tensors"),
        "{err}"
    );
    // The adapter is not a checkpoint.
    let err = fails(
        train(&adapter, &data)
            .args(["--epochs", "1", "--out"])
            .arg(tmp.path().join("other")),
    );
    assert!(
        err.contains("is a sam-cobot adapter") && err.contains("--adapter"),
        "{err}"
    );
}

/// Decoder-only training on cached embeddings equals uncached `lightweight` training without
/// augmentation (per-step losses and final weights), fills the cache once per image, reuses it
/// in a second run, and is refused for a method that trains the encoder.
#[test]
fn cached_embeddings_train_as_the_encoder_does() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data, 3);
    let cache = tmp.path().join("cache");
    let run = |name: &str, cached: bool| {
        let out = tmp.path().join(name);
        let log = tmp.path().join(format!("{name}.jsonl"));
        let mut cmd = train(&fixtures().join("tiny256.pth"), &data);
        cmd.args([
            "--method",
            "lightweight",
            "--augment",
            "false",
            "--epochs",
            "2",
        ])
        .args(["--batch", "2", "--lr", "1e-3", "--seed", "3", "--out"])
        .arg(&out)
        .arg("--log-jsonl")
        .arg(&log);
        if cached {
            cmd.arg("--cache-embeddings").arg(&cache);
        }
        succeeds(&mut cmd);
        let losses: Vec<f64> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        (
            losses,
            load_state_dict(&out.join("last/adapter.safetensors")).unwrap(),
        )
    };
    let (plain, plain_weights) = run("plain", false);
    let (cached, cached_weights) = run("cached", true);
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        3,
        "one entry per image"
    );
    let (again, _) = run("again", true);
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        3,
        "the second run reuses them"
    );
    assert_eq!(plain.len(), 4);
    for (a, b) in plain.iter().zip(&cached).chain(cached.iter().zip(&again)) {
        assert!((a - b).abs() <= 1e-6 * a.abs(), "step losses {a} vs {b}");
    }
    for (key, t) in plain_weights.iter() {
        let c = &cached_weights.get(key).unwrap().data;
        let scale = t.data.iter().map(|v| v.abs()).fold(1e-12f32, f32::max);
        let diff = t
            .data
            .iter()
            .zip(c)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            diff <= 1e-6 * scale,
            "{key}: differs by {diff:e} (scale {scale:e})"
        );
    }
    let err = fails(
        train(&fixtures().join("tiny256.pth"), &data)
            .args(["--method", "lora", "--epochs", "1", "--cache-embeddings"])
            .arg(&cache)
            .arg("--out")
            .arg(tmp.path().join("lora")),
    );
    assert!(
        err.contains("--cache-embeddings") && err.contains("trains the image encoder"),
        "{err}"
    );
}
