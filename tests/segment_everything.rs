//! `segment-everything` against Meta's SamAutomaticMaskGenerator: the fixtures of
//! `scripts/make_amg_fixture.py` (the 256 px base, `tests/fixtures/sam-cobot-base-256.safetensors`, on the 300x200 test image, with the
//! thresholds loosened so that masks survive; one run with a crop layer, one with small-region
//! removal, one with both filters off). The same masks in the same order, the same RLEs, areas,
//! boxes, points and crops, predicted IoU and stability within 1e-4; then the command's files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::Device;
use common::{fails, fixtures, succeeds};
use sam_cobot::checkpoint::load_state_dict;
use sam_cobot::output::automatic_masks::metadata_csv;
use sam_cobot::rle::Rle;
use sam_cobot::sam::Sam;
use sam_cobot::sam::mask_generator::{GeneratedMask, MaskGenerator, MaskGeneratorSettings};
use serde_json::Value;

const BASE: &str = common::BASE_256;

fn image() -> PathBuf {
    fixtures().join("image_300x200.png")
}

fn base() -> Sam {
    let dict = load_state_dict(Path::new(BASE)).unwrap();
    Sam::from_state_dict(dict, None, &Device::flex()).unwrap()
}

fn reference(run: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(format!("amg/{run}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Runs the generator with the reference run's settings and compares mask by mask.
fn matches_meta(run: &str) {
    let reference = reference(run);
    let settings: MaskGeneratorSettings =
        serde_json::from_value(reference["settings"].clone()).unwrap();
    let sam = base();
    let generator = MaskGenerator::new(&sam, settings).unwrap();
    let image = sam_cobot::data::open_image(&image()).unwrap().to_rgb8();
    let (masks, timing) = generator.generate(&image, &mut || {}).unwrap();
    let want = reference["masks"].as_array().unwrap();
    assert_eq!(masks.len(), want.len(), "{run}: number of masks");
    assert_eq!(timing.batches, generator.batches(200, 300));
    for (i, (m, r)) in masks.iter().zip(want).enumerate() {
        let counts: Vec<u32> = r["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap() as u32)
            .collect();
        let theirs = Rle {
            h: 200,
            w: 300,
            counts,
        };
        let differing = m
            .rle
            .decode_row_major()
            .unwrap()
            .iter()
            .zip(theirs.decode_row_major().unwrap())
            .filter(|(a, b)| **a != *b)
            .count();
        assert_eq!(differing, 0, "{run} mask {i}: {differing} pixels differ");
        assert_eq!(m.rle, theirs, "{run} mask {i}: RLE");
        assert_eq!(m.rle.to_string_compressed(), r["coco"].as_str().unwrap());
        assert_eq!(m.area(), r["area"].as_u64().unwrap());
        let [x0, y0, x1, y1] = m.bbox.map(|v| v as f64);
        assert_eq!(
            vec![x0, y0, x1 - x0, y1 - y0],
            numbers(&r["bbox"]),
            "{run} mask {i}"
        );
        let [cx0, cy0, cx1, cy1] = m.crop_box.map(|v| v as f64);
        assert_eq!(
            vec![cx0, cy0, cx1 - cx0, cy1 - cy0],
            numbers(&r["crop_box"])
        );
        assert_eq!(vec![m.point.0, m.point.1], numbers(&r["point_coords"][0]));
        let close = |ours: f32, key: &str| {
            let theirs = r[key].as_f64().unwrap();
            assert!(
                (f64::from(ours) - theirs).abs() <= 1e-4,
                "{run} mask {i}: {key} {ours} against {theirs}"
            );
        };
        close(m.predicted_iou, "predicted_iou");
        close(m.stability_score, "stability_score");
    }
    csv_matches(run, &masks, &reference);
}

/// metadata.csv as amg.py writes it: the same rows, numbers equal (floats within 1e-4).
fn csv_matches(run: &str, masks: &[GeneratedMask], reference: &Value) {
    let ours = metadata_csv(masks);
    let theirs: Vec<&str> = reference["metadata_csv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = ours.lines().collect();
    assert_eq!(ours.len(), theirs.len());
    assert_eq!(ours[0], theirs[0], "header");
    for (a, b) in ours.iter().zip(&theirs).skip(1) {
        let (a, b): (Vec<&str>, Vec<&str>) = (a.split(',').collect(), b.split(',').collect());
        assert_eq!(a.len(), b.len());
        for (k, (x, y)) in a.iter().zip(&b).enumerate() {
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!(
                (x - y).abs() <= 1e-4,
                "{run} csv column {k}: {x} against {y}"
            );
        }
    }
}

#[test]
fn point_grid_matches_meta() {
    matches_meta("grid");
}

#[test]
fn crop_layer_matches_meta() {
    matches_meta("crops");
}

#[test]
fn small_region_removal_matches_meta() {
    matches_meta("regions");
}

#[test]
fn unfiltered_candidates_match_meta() {
    matches_meta("unfiltered");
}

fn command(out: &Path) -> Command {
    command_on(&image(), out)
}

fn command_on(image: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sam-cobot"));
    cmd.args([
        "--threads",
        "2",
        "segment-everything",
        "--checkpoint",
        BASE,
        "--image",
    ])
    .arg(image)
    .arg("--out")
    .arg(out);
    cmd
}

/// The `grid` fixture's settings.
fn loose(out: &Path) -> Command {
    let mut cmd = command(out);
    cmd.args(["--points-per-side", "16", "--pred-iou-thresh", "0.5"])
        .args(["--stability-score-thresh", "0.7"]);
    cmd
}

#[test]
fn writes_amg_py_layout_and_refuses_to_replace_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let said = succeeds(&mut loose(&out));
    assert!(said.contains("8 masks"), "{said}");
    let folder = out.join("image_300x200");
    let csv = std::fs::read_to_string(folder.join("metadata.csv")).unwrap();
    assert_eq!(csv.lines().count(), 9);
    let mask = image::open(folder.join("0.png")).unwrap().to_luma8();
    assert_eq!(mask.dimensions(), (300, 200));
    let area = mask.pixels().filter(|p| p.0[0] == 255).count();
    assert_eq!(
        area,
        reference("grid")["masks"][0]["area"].as_u64().unwrap() as usize
    );
    assert!(mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
    assert!(out.join("image_300x200.overlay.png").is_file());

    let err = fails(&mut loose(&out));
    assert!(err.contains("exists; --force replaces it"), "{err}");
    succeeds(loose(&out).arg("--force"));

    succeeds(loose(&out).args(["--output-mode", "coco-rle", "--force"]));
    let text = std::fs::read_to_string(out.join("image_300x200.json")).unwrap();
    let keys = [
        "segmentation",
        "area",
        "bbox",
        "predicted_iou",
        "point_coords",
        "stability_score",
        "crop_box",
    ];
    let at: Vec<usize> = keys
        .iter()
        .map(|k| text.find(&format!("\"{k}\"")).unwrap())
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "amg.py's key order: {at:?}"
    );
    let json: Value = serde_json::from_str(&text).unwrap();
    let first = &json.as_array().unwrap()[0];
    assert_eq!(
        first["segmentation"]["counts"],
        reference("grid")["masks"][0]["coco"]
    );
}

#[test]
fn unusable_settings_and_inputs_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cases: [(&[&str], &str); 5] = [
        (
            &["--points-per-side", "0"],
            "--points-per-side 0: a grid of zero points",
        ),
        (
            &["--pred-iou-thresh", "nan"],
            "--pred-iou-thresh NaN: must be a finite number",
        ),
        (
            &["--box-nms-thresh", "inf"],
            "--box-nms-thresh inf: must be a finite number",
        ),
        (
            &[
                "--crop-n-layers",
                "2",
                "--crop-n-points-downscale-factor",
                "16",
            ],
            "crop layer 2's grid would have zero points (32 / 16^2",
        ),
        (
            &["--points-per-batch", "0"],
            "--points-per-batch 0: must be at least 1",
        ),
    ];
    for (flags, want) in cases {
        let err = fails(command(&out).args(flags));
        assert!(err.contains(want), "{flags:?}: {err}");
    }
    let not_image = dir.path().join("notes.png");
    std::fs::write(&not_image, "hello").unwrap();
    let err = fails(&mut command_on(&not_image, &out));
    assert!(err.contains("notes.png"), "{err}");
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
}
