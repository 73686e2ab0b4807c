//! The `sam-cobot` binary end to end: `predict` on the tiny fixture model against the PyTorch
//! reference outputs, and every kind of bad input failing with one clear message (never a panic).
//! Each test works in its own temporary folder.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{fixtures, reference_tensor};
use sam_cobot::checkpoint::{RawTensor, StateDict, load_state_dict, write_safetensors};
use sam_cobot::output::npy::read_npy_f32;
use tempfile::TempDir;

const CASE: &str = "tiny256_at256";
const PTH: &str = "tiny256.pth";
const SAFETENSORS: &str = "tiny256.safetensors";
const IMAGE: &str = "image_300x200.png";
const W: u32 = 300;
const H: u32 = 200;

/// The prompt sets of `tiny256_at256/prompts.json` as command-line flags.
const BOX1: &[&str] = &["--box", "60,40,220,160"];
const BOX2: &[&str] = &["--box", "60,40,220,160", "--box", "150,20,290,190"];
const POINTS: &[&str] = &["--point", "120,90,1", "--point", "250,150,0"];
const BOX_POINT: &[&str] = &["--box", "30,50,200,180", "--point", "110,110,1"];

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// Runs the binary with `args` in `dir`, without backtraces (so a panic shows as such).
fn sam_cobot<S: Into<OsString> + Clone>(dir: &Path, args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sam-cobot"))
        .args(args.iter().cloned().map(Into::into))
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("running sam-cobot")
}

/// `predict --checkpoint <checkpoint> --image <image> --out <dir>/mask.png <extra...>`.
fn predict_args(dir: &Path, checkpoint: &Path, image: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "predict".into(),
        "--checkpoint".into(),
        checkpoint.into(),
        "--image".into(),
        image.into(),
        "--out".into(),
        dir.join("mask.png").into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    // The prediction tests run on `SAM_COBOT_TEST_DEVICE` (docs/gpu.md) unless they name one.
    if !extra.contains(&"--device") {
        args.extend(["--device".into(), common::test_device_name().into()]);
    }
    args
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `predict` on the fixture image and expects success; returns stdout.
fn predict_ok(dir: &Path, checkpoint: &str, extra: &[&str]) -> String {
    let args = predict_args(dir, &fixture(checkpoint), &fixture(IMAGE), extra);
    let out = sam_cobot(dir, &args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "{args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    stdout
}

/// Expects failure with a single `error:` message on stderr that contains every part of
/// `expected`, and no panic. Returns the message.
#[track_caller]
fn assert_fails<S: Into<OsString> + Clone>(dir: &Path, args: &[S], expected: &[&str]) -> String {
    let out = sam_cobot(dir, args);
    let stderr = text(&out.stderr);
    let shown: Vec<OsString> = args.iter().cloned().map(Into::into).collect();
    assert!(
        !out.status.success(),
        "{shown:?} succeeded:\nstdout: {}\nstderr: {stderr}",
        text(&out.stdout)
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{shown:?} panicked:\n{stderr}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(
        errors.len(),
        1,
        "{shown:?}: expected one error line:\n{stderr}"
    );
    let segments: Vec<&str> = errors[0].split(": ").collect();
    for (i, segment) in segments.iter().enumerate() {
        assert!(
            !segments[i + 1..].contains(segment),
            "{shown:?}: the error repeats {segment:?}:\n{stderr}"
        );
    }
    for part in expected {
        assert!(
            errors[0].contains(part),
            "{shown:?}: error lacks {part:?}:\n{stderr}"
        );
    }
    errors[0].to_string()
}

/// `predict` with a bad checkpoint on the good image and a good box.
#[track_caller]
fn assert_checkpoint_fails(dir: &Path, checkpoint: &Path, expected: &[&str]) -> String {
    let args = predict_args(dir, checkpoint, &fixture(IMAGE), BOX1);
    let message = assert_fails(dir, &args, expected);
    assert!(!dir.join("mask.png").exists(), "a mask was written");
    message
}

/// `predict` on the fixture checkpoint and image with `extra` flags that must be rejected.
#[track_caller]
fn assert_flags_fail(extra: &[&str], expected: &[&str]) -> String {
    let dir = TempDir::new().unwrap();
    let args = predict_args(dir.path(), &fixture(PTH), &fixture(IMAGE), extra);
    let message = assert_fails(dir.path(), &args, expected);
    let written: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(written.is_empty(), "{extra:?} wrote {written:?}");
    message
}

/// A mask PNG must be `W x H` 8-bit grey, only 0/255, and equal to `reference > 0` wherever the
/// reference logit is not within 1e-3 of the threshold.
#[track_caller]
fn check_mask(path: &Path, reference: &[f32]) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(img.color(), image::ColorType::L8, "{}", path.display());
    assert_eq!((img.width(), img.height()), (W, H), "{}", path.display());
    let pixels = img.into_luma8().into_raw();
    assert_eq!(pixels.len(), reference.len());
    let mut mismatches = 0;
    let mut foreground = 0;
    for (&p, &r) in pixels.iter().zip(reference) {
        assert!(p == 0 || p == 255, "{}: pixel value {p}", path.display());
        foreground += usize::from(p == 255);
        if r.abs() >= 1e-3 && (p == 255) != (r > 0.0) {
            mismatches += 1;
        }
    }
    assert_eq!(
        mismatches,
        0,
        "{}: pixels unlike the reference",
        path.display()
    );
    assert!(
        foreground > 0 && foreground < pixels.len(),
        "{}: the mask is all one value",
        path.display()
    );
}

/// Checks the masks of prompt set `set` written under `dir` (`mask.png`, or `mask_i.png` when
/// there are several) and the predicted IoUs printed on `stdout`.
fn check_prediction(dir: &Path, stdout: &str, set: &str) {
    let (shape, logits) = reference_tensor(CASE, &format!("{set}.masks_logits"));
    let (_, iou) = reference_tensor(CASE, &format!("{set}.iou"));
    let n = shape[0];
    assert_eq!(shape, [n, 1, H as usize, W as usize]);
    let plane = (W * H) as usize;
    let paths: Vec<PathBuf> = if n == 1 {
        vec![dir.join("mask.png")]
    } else {
        (0..n).map(|i| dir.join(format!("mask_{i}.png"))).collect()
    };
    if n > 1 {
        assert!(
            !dir.join("mask.png").exists(),
            "mask.png written besides mask_i.png"
        );
    } else {
        assert!(
            !dir.join("mask_0.png").exists(),
            "a single mask was numbered"
        );
    }
    for (i, path) in paths.iter().enumerate() {
        check_mask(path, &logits[i * plane..(i + 1) * plane]);
    }

    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("predicted IoU"))
        .collect();
    assert_eq!(lines.len(), n, "one IoU line per mask:\n{stdout}");
    for (i, line) in lines.iter().enumerate() {
        assert!(line.starts_with(&format!("mask {i}:")), "{line}");
        assert!(line.contains(&*paths[i].to_string_lossy()), "{line}");
        let printed = printed_iou(line);
        // 4 decimals: the printed value is the reference rounded, give or take its last digit.
        assert!(
            (printed - iou[i]).abs() <= 0.5e-4 + 1e-5,
            "mask {i}: printed IoU {printed}, reference {}",
            iou[i]
        );
    }
}

/// The IoU a `mask ...: predicted IoU X -> path` line prints.
fn printed_iou(line: &str) -> f32 {
    line.split("predicted IoU ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no IoU in {line:?}"))
}

/// Low-resolution logits written with `--logits-out` against `{set}.low_res_logits`.
fn check_logits(path: &Path, set: &str) {
    let (shape, data) = read_npy_f32(path).unwrap_or_else(|e| panic!("{e:#}"));
    let (ref_shape, reference) = reference_tensor(CASE, &format!("{set}.low_res_logits"));
    assert_eq!(shape, ref_shape);
    assert_eq!(shape[1..], [1, 64, 64]);
    let diff = common::max_abs_diff_slices(&data, &reference);
    assert!(diff <= 1e-4, "{set} low-res logits differ by {diff:e}");
}

// ---------------------------------------------------------------------------------------------
// success paths
// ---------------------------------------------------------------------------------------------

fn two_boxes(checkpoint: &str) {
    let dir = TempDir::new().unwrap();
    let mut extra = BOX2.to_vec();
    extra.extend(["--logits-out", "logits.npy"]);
    let stdout = predict_ok(dir.path(), checkpoint, &extra);
    check_prediction(dir.path(), &stdout, "box2");
    check_logits(&dir.path().join("logits.npy"), "box2");
}

#[test]
fn two_boxes_write_numbered_masks_ious_and_logits() {
    two_boxes(PTH);
}

#[test]
fn two_boxes_from_safetensors() {
    two_boxes(SAFETENSORS);
}

/// `--multimask`: SAM's three masks of one box, as Meta's `multimask_output=True`: logits and
/// IoUs equal the reference's, one PNG per mask named by prompt and mask.
#[test]
fn multimask_writes_the_three_masks_with_their_ious() {
    let dir = TempDir::new().unwrap();
    let mut extra = BOX1.to_vec();
    extra.extend(["--multimask", "--logits-out", "multi.npy"]);
    let stdout = predict_ok(dir.path(), PTH, &extra);
    let (shape, data) = read_npy_f32(&dir.path().join("multi.npy")).unwrap();
    let (ref_shape, reference) = reference_tensor(CASE, "box1.multi_low_res_logits");
    assert_eq!(
        (shape.clone(), ref_shape),
        (vec![1, 3, 64, 64], vec![1, 3, 64, 64])
    );
    let diff = common::max_abs_diff_slices(&data, &reference);
    assert!(diff <= 1e-4, "multimask logits differ by {diff:e}");
    let (_, iou) = reference_tensor(CASE, "box1.multi_iou");
    for (k, &reference_iou) in iou.iter().enumerate() {
        let path = dir.path().join(format!("mask_0_{k}.png"));
        assert!(path.exists(), "{}", path.display());
        let line = stdout
            .lines()
            .find(|l| l.contains(&*path.to_string_lossy()))
            .unwrap_or_else(|| panic!("no line for mask {k}: {stdout}"));
        let printed = printed_iou(line);
        assert!(
            (printed - reference_iou).abs() <= 0.6e-4,
            "{line} vs {reference_iou}"
        );
    }
    assert!(!dir.path().join("mask.png").exists());

    // --best keeps the mask of the highest predicted IoU, under the single-mask name.
    let best = (0..3).fold(0, |b, k| if iou[k] > iou[b] { k } else { b });
    let dir = TempDir::new().unwrap();
    let mut extra = BOX1.to_vec();
    extra.extend(["--best", "--logits-out", "best.npy"]);
    predict_ok(dir.path(), PTH, &extra);
    let (shape, data) = read_npy_f32(&dir.path().join("best.npy")).unwrap();
    assert_eq!(shape, [1, 1, 64, 64]);
    let plane = &reference[best * 64 * 64..(best + 1) * 64 * 64];
    assert!(common::max_abs_diff_slices(&data, plane) <= 1e-4);
    assert!(dir.path().join("mask.png").exists());
}

/// `--mask-input`: SAM's iterative refinement. Points plus the box prediction's low-resolution
/// logits as the mask prompt, against Meta's `SamPredictor.predict(mask_input=...)`
/// (tests/fixtures/mask_input, from scripts/make_mask_input_fixture.py).
#[test]
fn mask_input_refines_as_meta_does() {
    let reference = |key: &str| reference_tensor("mask_input", key);
    let dir = TempDir::new().unwrap();
    let (shape, mask) = reference("mask_input");
    assert_eq!(shape, [1, 64, 64]);
    sam_cobot::output::npy::write_npy_f32(&dir.path().join("first.npy"), &shape, &mask).unwrap();
    let points = ["--point", "120,90,1", "--point", "250,150,0"];
    let mut extra = points.to_vec();
    extra.extend(["--mask-input", "first.npy", "--logits-out", "refined.npy"]);
    let stdout = predict_ok(dir.path(), PTH, &extra);
    let (shape, data) = read_npy_f32(&dir.path().join("refined.npy")).unwrap();
    assert_eq!(shape, [1, 1, 64, 64]);
    let (_, expected) = reference("refined.low_res_logits");
    let diff = common::max_abs_diff_slices(&data, &expected);
    assert!(diff <= 1e-4, "refined logits differ by {diff:e}");
    let (_, iou) = reference("refined.iou");
    assert!(
        stdout.contains(&format!("predicted IoU {:.4}", iou[0])),
        "{stdout} vs {iou:?}"
    );
    // The same without the mask prompt is another prediction: the mask input is used.
    let mut plain = points.to_vec();
    plain.extend(["--logits-out", "plain.npy"]);
    predict_ok(dir.path(), PTH, &plain);
    let (_, without) = read_npy_f32(&dir.path().join("plain.npy")).unwrap();
    assert!(common::max_abs_diff_slices(&without, &expected) > 1e-2);

    // Chained from sam-cobot's own box prediction (its N x 1 x S/4 x S/4 --logits-out).
    let mut first = BOX1.to_vec();
    first.extend(["--logits-out", "box.npy"]);
    predict_ok(dir.path(), PTH, &first);
    let mut extra = points.to_vec();
    extra.extend(["--mask-input", "box.npy", "--logits-out", "chained.npy"]);
    predict_ok(dir.path(), PTH, &extra);
    let (_, chained) = read_npy_f32(&dir.path().join("chained.npy")).unwrap();
    let diff = common::max_abs_diff_slices(&chained, &expected);
    assert!(diff <= 1e-3, "chained refinement differs by {diff:e}");

    // A mask input of the wrong shape names the file, its shape and what is expected.
    sam_cobot::output::npy::write_npy_f32(
        &dir.path().join("bad.npy"),
        &[2, 1, 64, 64],
        &[0.0; 2 * 64 * 64],
    )
    .unwrap();
    let mut extra = BOX1.to_vec();
    extra.extend(["--mask-input", "bad.npy"]);
    let args = predict_args(dir.path(), &fixture(PTH), &fixture(IMAGE), &extra);
    assert_fails(
        dir.path(),
        &args,
        &["--mask-input", "bad.npy", "[2, 1, 64, 64]", "1 x 64 x 64"],
    );
}

/// `embed` then `predict --embeddings`: the same logits as running the encoder, and refused for
/// another checkpoint, another input size or an image the file does not hold.
#[test]
fn saved_embeddings_decode_like_the_encoder_and_belong_to_their_model() {
    let dir = TempDir::new().unwrap();
    let image = fixture(IMAGE);
    let gray = fixture("gray_150x220.png");
    let embed = |extra: &[&str]| {
        let mut args: Vec<OsString> =
            vec!["embed".into(), "--checkpoint".into(), fixture(PTH).into()];
        args.extend(["--images".into(), image.clone().into(), gray.clone().into()]);
        args.extend(["--device".into(), common::test_device_name().into()]);
        args.extend(extra.iter().map(OsString::from));
        args
    };
    let out = sam_cobot(dir.path(), &embed(&["--out", "emb.safetensors"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 image embedding(s)"),
        "{}",
        text(&out.stdout)
    );
    // The stored embedding is the encoder's output, as Meta's predictor computes it.
    let saved = load_state_dict(&dir.path().join("emb.safetensors")).unwrap();
    let (shape, reference) = reference_tensor(CASE, "image_embedding");
    let stored = saved.get(IMAGE).unwrap();
    assert_eq!(stored.shape, shape);
    let diff = common::max_abs_diff_slices(&stored.data, &reference);
    assert!(diff <= 1e-4, "embedding differs from Meta's by {diff:e}");
    assert_eq!(saved.len(), 2);
    // An existing file needs --force.
    assert_fails(
        dir.path(),
        &embed(&["--out", "emb.safetensors"]),
        &["exists", "--force"],
    );

    let mut extra = BOX1.to_vec();
    extra.extend(["--logits-out", "encoder.npy"]);
    predict_ok(dir.path(), PTH, &extra);
    let mut extra = BOX1.to_vec();
    extra.extend([
        "--embeddings",
        "emb.safetensors",
        "--logits-out",
        "saved.npy",
    ]);
    predict_ok(dir.path(), PTH, &extra);
    assert_eq!(
        std::fs::read(dir.path().join("encoder.npy")).unwrap(),
        std::fs::read(dir.path().join("saved.npy")).unwrap()
    );

    let mut extra = BOX1.to_vec();
    extra.extend(["--embeddings", "emb.safetensors"]);
    let other = predict_args(dir.path(), &fixture("tiny1024.pth"), &image, &extra);
    assert_fails(
        dir.path(),
        &other,
        &[
            "emb.safetensors",
            "checkpoint whose tensors hash to",
            "embed",
        ],
    );
    let mut resized = extra.clone();
    resized.extend(["--image-size", "512"]);
    let args = predict_args(dir.path(), &fixture(PTH), &image, &resized);
    assert_fails(dir.path(), &args, &["input size 256", "512"]);
    let absent = dir.path().join("absent.png");
    std::fs::copy(&image, &absent).unwrap();
    let args = predict_args(dir.path(), &fixture(PTH), &absent, &extra);
    assert_fails(
        dir.path(),
        &args,
        &["no embedding of 'absent.png'", "2 image(s)"],
    );
    // A corrupt or truncated file, and a checkpoint given as an embeddings file.
    let bytes = std::fs::read(dir.path().join("emb.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("cut.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    std::fs::write(
        dir.path().join("junk.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    let tiny = fixture(SAFETENSORS);
    for (file, says) in [
        ("cut.safetensors", "cut.safetensors"),
        ("junk.safetensors", "junk.safetensors"),
        (tiny.to_str().unwrap(), "not a sam-cobot embeddings file"),
    ] {
        let mut extra = BOX1.to_vec();
        extra.extend(["--embeddings", file]);
        let args = predict_args(dir.path(), &fixture(PTH), &image, &extra);
        assert_fails(dir.path(), &args, &[says]);
    }
}

#[test]
fn one_box_writes_out_path_logits_and_overlay() {
    let dir = TempDir::new().unwrap();
    let mut extra = BOX1.to_vec();
    extra.extend(["--logits-out", "x.npy", "--overlay", "o.png"]);
    let stdout = predict_ok(dir.path(), PTH, &extra);
    check_prediction(dir.path(), &stdout, "box1");
    check_logits(&dir.path().join("x.npy"), "box1");

    let overlay = image::open(dir.path().join("o.png")).unwrap();
    assert_eq!(overlay.color(), image::ColorType::Rgb8);
    assert_eq!((overlay.width(), overlay.height()), (W, H));
    let input = image::open(fixture(IMAGE)).unwrap().to_rgb8();
    let overlay = overlay.into_rgb8();
    let changed = input
        .pixels()
        .zip(overlay.pixels())
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        changed > 1000,
        "overlay differs from the image in {changed} pixels only"
    );
    assert!(stdout.contains("overlay ->"), "{stdout}");
    assert!(stdout.contains("low-res logits [1, 1, 64, 64]"), "{stdout}");

    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["mask.png", "o.png", "x.npy"],
        "no other (temporary) files"
    );
}

#[test]
fn points_only() {
    for checkpoint in [PTH, SAFETENSORS] {
        let dir = TempDir::new().unwrap();
        let stdout = predict_ok(dir.path(), checkpoint, POINTS);
        check_prediction(dir.path(), &stdout, "points");
    }
}

#[test]
fn box_and_point() {
    for checkpoint in [PTH, SAFETENSORS] {
        let dir = TempDir::new().unwrap();
        let stdout = predict_ok(dir.path(), checkpoint, BOX_POINT);
        check_prediction(dir.path(), &stdout, "box_point");
    }
}

// ---------------------------------------------------------------------------------------------
// bad checkpoints
// ---------------------------------------------------------------------------------------------

fn tiny256() -> StateDict {
    load_state_dict(&fixture(PTH)).unwrap()
}

/// Writes `dict` as `name` in `dir`.
fn write_checkpoint(dir: &Path, name: &str, dict: &StateDict) -> PathBuf {
    let path = dir.join(name);
    write_safetensors(&path, dict, &BTreeMap::new()).unwrap();
    path
}

#[test]
fn nonexistent_checkpoint() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("missing.pth");
    assert_checkpoint_fails(dir.path(), &path, &["missing.pth", "No such file"]);
}

#[test]
fn checkpoint_that_is_a_directory() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("folder.pth");
    std::fs::create_dir(&path).unwrap();
    assert_checkpoint_fails(dir.path(), &path, &["folder.pth", "directory"]);
}

#[test]
fn checkpoint_of_random_bytes() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("random.pth");
    // xorshift: deterministic noise, not starting like a zip or safetensors file.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect();
    assert!(!bytes.starts_with(b"PK") && bytes[8] != b'{');
    std::fs::write(&path, bytes).unwrap();
    assert_checkpoint_fails(dir.path(), &path, &["random.pth", "not a zip archive"]);
}

#[test]
fn truncated_pth() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("truncated.pth");
    let bytes = std::fs::read(fixture(PTH)).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_checkpoint_fails(dir.path(), &path, &["truncated.pth", "truncated"]);
}

#[test]
fn checkpoint_missing_a_key() {
    let dir = TempDir::new().unwrap();
    let mut dict = tiny256();
    dict.remove("mask_decoder.mask_tokens.weight").unwrap();
    let path = write_checkpoint(dir.path(), "missing_key.safetensors", &dict);
    assert_checkpoint_fails(
        dir.path(),
        &path,
        &[
            "missing_key.safetensors",
            "missing key 'mask_decoder.mask_tokens.weight'",
        ],
    );
}

#[test]
fn checkpoint_with_a_wrong_shape() {
    let dir = TempDir::new().unwrap();
    let mut dict = tiny256();
    let key = "image_encoder.blocks.0.attn.proj.weight";
    assert_eq!(dict.get(key).unwrap().shape, [64, 64]);
    dict.insert(key, RawTensor::new(vec![64, 63], vec![0.0; 64 * 63]));
    let path = write_checkpoint(dir.path(), "wrong_shape.safetensors", &dict);
    assert_checkpoint_fails(
        dir.path(),
        &path,
        &["wrong_shape.safetensors", key, "[64, 63]", "[64, 64]"],
    );
}

#[test]
fn checkpoint_with_an_extra_key() {
    let dir = TempDir::new().unwrap();
    let mut dict = tiny256();
    dict.insert("foo.bar", RawTensor::new(vec![2], vec![1.0, 2.0]));
    let path = write_checkpoint(dir.path(), "extra_key.safetensors", &dict);
    assert_checkpoint_fails(
        dir.path(),
        &path,
        &["extra_key.safetensors", "unexpected key", "foo.bar"],
    );
}

#[test]
fn checkpoint_that_is_not_sam() {
    let dir = TempDir::new().unwrap();
    let dict: StateDict = [
        ("fc.weight", RawTensor::new(vec![4, 3], vec![0.5; 12])),
        ("fc.bias", RawTensor::new(vec![4], vec![0.1; 4])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let path = write_checkpoint(dir.path(), "mlp.safetensors", &dict);
    assert_checkpoint_fails(
        dir.path(),
        &path,
        &["mlp.safetensors", "missing key", "not a SAM checkpoint"],
    );
}

// ---------------------------------------------------------------------------------------------
// bad images, prompts and options
// ---------------------------------------------------------------------------------------------

#[test]
fn nonexistent_image() {
    let dir = TempDir::new().unwrap();
    let image = dir.path().join("nowhere.png");
    let args = predict_args(dir.path(), &fixture(PTH), &image, BOX1);
    assert_fails(dir.path(), &args, &["missing image", "nowhere.png"]);
}

#[test]
fn image_that_is_text() {
    for name in ["notes.png", "notes.txt"] {
        let dir = TempDir::new().unwrap();
        let image = dir.path().join(name);
        std::fs::write(&image, "these are not pixels\n").unwrap();
        let args = predict_args(dir.path(), &fixture(PTH), &image, BOX1);
        assert_fails(dir.path(), &args, &["cannot decode image", name]);
    }
}

#[test]
fn box_of_three_numbers() {
    assert_flags_fail(&["--box", "1,2,3"], &["--box", "1,2,3", "four numbers"]);
}

#[test]
fn box_without_area() {
    assert_flags_fail(&["--box", "10,10,5,20"], &["10,10,5,20", "no area"]);
}

#[test]
fn box_of_letters() {
    assert_flags_fail(&["--box", "a,b,c,d"], &["a,b,c,d", "not a number"]);
}

#[test]
fn box_outside_the_image() {
    assert_flags_fail(
        &["--box", "400,300,500,350"],
        &["--box 400,300,500,350", "outside", "300x200"],
    );
}

#[test]
fn point_outside_the_image() {
    assert_flags_fail(&["--point", "-5,20"], &["--point -5,20", "outside"]);
}

#[test]
fn point_with_a_bad_label() {
    assert_flags_fail(&["--point", "1,2,7"], &["1,2,7", "label"]);
}

#[test]
fn no_prompt() {
    assert_flags_fail(&[], &["--box", "--point"]);
}

#[test]
fn image_size_not_a_multiple_of_16() {
    let message = assert_flags_fail(
        &["--box", "60,40,220,160", "--image-size", "100"],
        &["--image-size", "100", "16"],
    );
    assert!(
        !message.contains("not a usable SAM checkpoint"),
        "{message}"
    );
}

#[test]
fn image_size_zero() {
    assert_flags_fail(
        &["--box", "60,40,220,160", "--image-size", "0"],
        &["--image-size", "0"],
    );
}

#[test]
fn unknown_device() {
    assert_flags_fail(
        &["--box", "60,40,220,160", "--device", "tpu"],
        &["--device tpu", "unknown device"],
    );
}

#[test]
fn half_precision_on_the_cpu_is_refused_naming_both() {
    for precision in ["bf16", "f16"] {
        assert_flags_fail(
            &[
                "--box",
                "60,40,220,160",
                "--device",
                "cpu",
                "--precision",
                precision,
            ],
            &[
                &format!("--precision {precision}"),
                "the CPU computes in f32 only",
            ],
        );
    }
    assert_flags_fail(
        &["--box", "60,40,220,160", "--precision", "f8"],
        &["'f8'", "--precision"],
    );
}

#[cfg(not(any(feature = "vulkan", feature = "wgpu")))]
#[test]
fn vulkan_device_without_the_feature() {
    assert_flags_fail(
        &["--box", "60,40,220,160", "--device", "vulkan"],
        &[
            "--device vulkan",
            "without the `vulkan` or `wgpu` feature",
            "--features vulkan",
        ],
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_device_without_the_feature() {
    assert_flags_fail(
        &["--box", "60,40,220,160", "--device", "cuda:1"],
        &["--device cuda", "--features cuda"],
    );
}

#[test]
fn out_in_a_nonexistent_directory() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("no_such_dir").join("mask.png");
    let mut args = predict_args(dir.path(), &fixture(PTH), &fixture(IMAGE), BOX1);
    args[6] = out.clone().into();
    assert_fails(
        dir.path(),
        &args,
        &[&*out.to_string_lossy(), "No such file or directory"],
    );
    assert!(!dir.path().join("no_such_dir").exists());
}

#[test]
fn box_with_negative_coordinates_is_a_value() {
    // A box may stick out of the image; `-10,...` must not be taken for a flag.
    let dir = TempDir::new().unwrap();
    let stdout = predict_ok(
        dir.path(),
        PTH,
        &["--box", "-10,-20,100,100", "--point", "50,50"],
    );
    assert!(stdout.contains("mask 0: predicted IoU"), "{stdout}");
    assert!(dir.path().join("mask.png").exists());
}
