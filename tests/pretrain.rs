//! `sam-cobot pretrain` and `sam-cobot scenes` end to end with the tiny architecture: the model
//! it writes loads as a SAM checkpoint, equal seeds give equal bytes, a killed run resumes to the
//! same weights and step log, settings are checked before anything is written, and a run folder
//! is never replaced silently.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::ok;
use sam_cobot::checkpoint::load_state_dict;
use sam_cobot::data::{DataSource, Dataset};
use sam_cobot::train::step_log::StepLog;

fn sam_cobot(args: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sam-cobot"))
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// A few steps of the tiny SAM on one thread; `extra` adds or overrides flags.
fn pretrain(out: &Path, extra: &[&str]) -> Output {
    pretrain_on("1", out, extra)
}

fn pretrain_on(threads: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "--threads",
        threads,
        "pretrain",
        "--model",
        "tiny",
        "--steps",
        "4",
        "--epoch-steps",
        "2",
        "--warmup-steps",
        "2",
        "--val-scenes",
        "2",
        "--max-objects",
        "3",
        "--max-prompts",
        "2",
    ];
    args.extend_from_slice(extra);
    sam_cobot(&args, out)
}

#[test]
fn scenes_are_a_coco_data_set_with_one_mask_per_object() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("scenes");
    ok(&sam_cobot(
        &["scenes", "--count", "3", "--size", "64", "--seed", "5"],
        &dir,
    ));
    let data = Dataset::open(&DataSource::new(dir.join("annotations.json"))).unwrap();
    assert_eq!(data.len(), 3);
    let expected = sam_cobot::data::scenes::scene(5, 64, 8);
    let loaded = data.load(0).unwrap();
    assert_eq!(loaded.image, expected.image);
    assert_eq!(loaded.objects.len(), expected.objects.len());
    for (a, b) in loaded.objects.iter().zip(&expected.objects) {
        assert_eq!(a.mask, b.mask);
        assert_eq!(a.bbox, b.bbox);
    }

    // A folder that holds a data set is not written over without --force, which replaces the
    // earlier scenes and keeps the user's own files.
    std::fs::write(dir.join("images/mine.png"), "mine").unwrap();
    let again = ["scenes", "--count", "2", "--size", "64", "--seed", "9"];
    let out = sam_cobot(&again, &dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--force"), "{err}");
    assert_eq!(
        Dataset::open(&DataSource::new(dir.join("annotations.json")))
            .unwrap()
            .len(),
        3
    );
    ok(&sam_cobot(&[&again[..], &["--force"]].concat(), &dir));
    let mut images: Vec<String> = std::fs::read_dir(dir.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    images.sort();
    assert_eq!(images, ["mine.png", "scene_10.png", "scene_9.png"]);
}

#[test]
fn pretraining_writes_a_sam_checkpoint_and_equal_seeds_give_equal_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    // The same bytes on any thread count: every parallel sum has a fixed order.
    ok(&pretrain(&a, &[]));
    ok(&pretrain_on("2", &b, &[]));
    let model = a.join("last/model.safetensors");
    let dict = load_state_dict(&model).unwrap();
    assert!(dict.contains("mask_decoder.iou_token.weight"));
    assert_eq!(
        std::fs::read(&model).unwrap(),
        std::fs::read(b.join("last/model.safetensors")).unwrap()
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("last/state.json")).unwrap()).unwrap();
    assert_eq!(state["steps"], 4);
    assert_eq!(state["history"].as_array().unwrap().len(), 2);
    assert!(state["history"][1]["val_point_dice"].is_number());
    // The model it wrote is a checkpoint like any other: predict runs on it.
    let mask = tmp.path().join("mask.png");
    ok(&Command::new(env!("CARGO_BIN_EXE_sam-cobot"))
        .args(["predict", "--checkpoint"])
        .arg(&model)
        .arg("--image")
        .arg(a.join("val/images/scene_1000000.png"))
        .args(["--box", "10,10,100,100", "--out"])
        .arg(&mask)
        .output()
        .unwrap());
    assert!(mask.exists());
}

#[test]
fn a_run_can_start_from_a_checkpoints_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, second) = (tmp.path().join("first"), tmp.path().join("second"));
    ok(&pretrain(&first, &["--steps", "2"]));
    let start = first.join("last/model.safetensors");
    ok(&pretrain(
        &second,
        &["--init", start.to_str().unwrap(), "--seed", "1"],
    ));
    let before = load_state_dict(&start).unwrap();
    let after = load_state_dict(&second.join("last/model.safetensors")).unwrap();
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    assert_ne!(before, after, "the steps from --init changed nothing");

    // --method lightweight trains the mask decoder alone: every other tensor keeps its bytes.
    let decoder = tmp.path().join("decoder");
    ok(&pretrain(
        &decoder,
        &["--init", start.to_str().unwrap(), "--method", "lightweight"],
    ));
    let decoder = load_state_dict(&decoder.join("last/model.safetensors")).unwrap();
    let changed: Vec<&str> = before
        .keys()
        .filter(|k| before.get(k) != decoder.get(k))
        .collect();
    assert!(!changed.is_empty(), "the decoder did not train");
    assert!(
        changed.iter().all(|k| k.starts_with("mask_decoder.")),
        "{changed:?}"
    );

    // A deepened start trains its copies too (they begin with zero output projections).
    let deep = tmp.path().join("deep");
    ok(&pretrain(
        &deep,
        &["--init", start.to_str().unwrap(), "--deepen-encoder", "6"],
    ));
    let deep = load_state_dict(&deep.join("last/model.safetensors")).unwrap();
    let copy = deep.get("image_encoder.blocks.5.mlp.lin2.weight").unwrap();
    assert!(
        copy.data.iter().any(|&v| v != 0.0),
        "the copy did not train"
    );
    assert!(!deep.contains("image_encoder.blocks.6.norm1.weight"));

    // A widened start trains at its new width, and resumes at it without widening again.
    let wide = tmp.path().join("wide");
    let widen = ["--init", start.to_str().unwrap(), "--widen-decoder", "64"];
    ok(&pretrain(&wide, &[&widen[..], &["--steps", "2"]].concat()));
    ok(&pretrain(&wide, &[&widen[..], &["--resume"]].concat()));
    let wide = load_state_dict(&wide.join("last/model.safetensors")).unwrap();
    assert_eq!(
        wide.get("mask_decoder.iou_token.weight").unwrap().shape,
        [1, 64]
    );
    assert_eq!(
        wide.get("image_encoder.neck.0.weight").unwrap().shape[0],
        64
    );

    // At another size the checkpoints keep the start's grid; the command says how to convert.
    let third = tmp.path().join("third");
    let out = pretrain(
        &third,
        &["--init", start.to_str().unwrap(), "--image-size", "128"],
    );
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("keep the 256 px grid") && stdout.contains("--image-size 128"),
        "{stdout}"
    );
}

#[test]
fn a_resumed_run_ends_with_the_uninterrupted_runs_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, parts) = (tmp.path().join("whole"), tmp.path().join("parts"));
    // Degraded scenes and small objects too: they are part of what a resumed run must repeat.
    let scenes = ["--degrade", "0.5", "--small-objects", "0.5"];
    let (whole_log, parts_log) = (
        tmp.path().join("whole.jsonl"),
        tmp.path().join("parts.jsonl"),
    );
    let log = |path: &Path| ["--log-jsonl".to_string(), path.display().to_string()];
    let whole_flags = log(&whole_log);
    let whole_flags: Vec<&str> = whole_flags.iter().map(String::as_str).collect();
    ok(&pretrain(&whole, &[&whole_flags[..], &scenes].concat()));
    let parts_flags = log(&parts_log);
    let parts_flags: Vec<&str> = parts_flags.iter().map(String::as_str).collect();
    ok(&pretrain(
        &parts,
        &[&["--steps", "2"][..], &scenes, &parts_flags].concat(),
    ));
    // A step the interrupted run logged after its last checkpoint is run again on resume, and
    // logged once.
    let mut lines = std::fs::read_to_string(&parts_log).unwrap();
    lines.push_str(r#"{"epoch":1,"step":3,"loss":9.0,"lr":0.001,"images":1,"seconds":1.0}"#);
    lines.push('\n');
    std::fs::write(&parts_log, lines).unwrap();
    // Resuming takes the run's settings; only a longer --steps is accepted.
    let out = sam_cobot(&["pretrain", "--resume", "--lr", "0.5"], &parts);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lr = 0.001") && err.contains("0.5"), "{err}");
    ok(&sam_cobot(
        &[
            &["--threads", "1", "pretrain", "--resume", "--steps", "4"][..],
            &parts_flags,
        ]
        .concat(),
        &parts,
    ));
    assert_eq!(
        load_state_dict(&whole.join("last/model.safetensors")).unwrap(),
        load_state_dict(&parts.join("last/model.safetensors")).unwrap()
    );
    let steps = |path: &Path| -> Vec<(usize, u64, f64, f64)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<StepLog>(l).unwrap())
            .map(|s| (s.epoch, s.step, s.loss, s.lr))
            .collect()
    };
    assert_eq!(steps(&whole_log).len(), 4);
    assert_eq!(steps(&whole_log), steps(&parts_log));
}

#[test]
fn unusable_settings_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    for (flag, value, says) in [
        ("--steps", "0", "--steps 0"),
        ("--batch", "0", "--batch 0"),
        ("--lr", "nan", "--lr NaN"),
        ("--image-size", "100", "--image-size 100"),
        ("--model", "vit_q", "--model vit_q"),
        ("--method", "lora", "--method lora"),
        ("--loss-downscale", "3", "--loss-downscale 3"),
        ("--degrade", "1.5", "--degrade 1.5"),
        ("--small-objects", "2", "--small-objects 2"),
        ("--deepen-encoder", "8", "--deepen-encoder: needs --init"),
        ("--widen-decoder", "64", "--widen-decoder: needs --init"),
        ("--init", "missing.safetensors", "missing.safetensors"),
    ] {
        let out_dir = tmp.path().join(flag.trim_start_matches('-'));
        let out = pretrain(&out_dir, &[flag, value]);
        assert!(!out.status.success(), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flag} {value}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            !out_dir.exists(),
            "{flag} {value} wrote {}",
            out_dir.display()
        );
    }
    let config = tmp.path().join("bad.toml");
    std::fs::write(&config, "stepz = 3\n").unwrap();
    let out = pretrain(
        &tmp.path().join("cfg"),
        &["--config", config.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("stepz"), "{err}");
}

#[test]
fn a_run_folder_is_not_replaced_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    ok(&pretrain(&run, &["--steps", "2"]));
    std::fs::write(run.join("notes.txt"), "mine").unwrap();
    let out = pretrain(&run, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    // --force replaces last/ and best/, so a start inside them is refused before anything goes.
    let init = run.join("last/model.safetensors");
    let out = pretrain(&run, &["--force", "--init", init.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--init"), "{err}");
    assert!(init.exists());
    ok(&pretrain(&run, &["--force"]));
    assert_eq!(
        std::fs::read_to_string(run.join("notes.txt")).unwrap(),
        "mine"
    );
    let state = std::fs::read_to_string(run.join("last/state.json")).unwrap();
    assert!(state.contains("\"steps\": 4"), "{state}");
}

#[test]
fn the_shipped_presets_are_valid_settings_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in [
        "pretrain-base.toml",
        "pretrain-base-512.toml",
        "pretrain-base-small.toml",
    ] {
        let text = std::fs::read_to_string(root.join("presets").join(name)).unwrap();
        let settings: sam_cobot::train::pretrain::PretrainSettings = toml::from_str(&text).unwrap();
        settings.validate().unwrap();
        // The second stage starts from the first, shipped beside the tests (the third from the
        // second's run folder).
        if let Some(init) = settings.init.as_ref().filter(|p| p.starts_with("tests")) {
            assert!(root.join(init).exists(), "{name}: {}", init.display());
        }
    }
}
