//! SAM against the PyTorch reference: fixtures written by `scripts/make_fixtures.py` with
//! Meta's `segment_anything` package, loaded through the same path users use. The fixture
//! cases run on `SAM_COBOT_TEST_DEVICE` (the CPU by default; docs/gpu.md).

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use std::path::{Path, PathBuf};

use common::{fixtures, max_abs_diff, max_abs_diff_slices, reference_tensor};
use sam_cobot::checkpoint::load_state_dict;
use sam_cobot::sam::Sam;
use sam_cobot::sam::image_encoder::vit::{rel_pos_for, resize_pos_embed};
use sam_cobot::sam::predictor::{Predictor, UserPrompts};
use sam_cobot::sam::transforms::{ResizeLongestSide, resize_bilinear_antialias};
use serde_json::Value;

const TOL: f32 = 1e-4;

fn user_prompts(set: &Value) -> UserPrompts {
    let floats = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let boxes = set["boxes"]
        .as_array()
        .map(|b| b.iter().map(|b| floats(b).try_into().unwrap()).collect())
        .unwrap_or_default();
    // Points are stored per batch row; the fixtures use the same points for every row.
    let points = set["points"]
        .as_array()
        .and_then(|rows| rows.first())
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let p = floats(p);
                    (p[0], p[1], p[2] as i32)
                })
                .collect()
        })
        .unwrap_or_default();
    UserPrompts { boxes, points }
}

/// Runs one committed fixture case end to end and compares every stored intermediate.
fn check_case(case: &str, checkpoint: &str) {
    check_case_at(&fixtures().join(case), &fixtures().join(checkpoint), TOL);
}

/// Runs the case in `dir` (prompts.json + reference.safetensors) on `checkpoint`.
fn check_case_at(dir: &Path, checkpoint: &Path, tol: f32) {
    let case = dir.display();
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("prompts.json")).unwrap()).unwrap();
    let reference = load_state_dict(&dir.join("reference.safetensors")).unwrap();
    let device = common::test_device();
    let dict = load_state_dict(checkpoint).unwrap();
    let run_size = meta["run_size"].as_u64().unwrap() as usize;
    let sam = Sam::from_state_dict(dict, Some(run_size), &device).unwrap();
    let image = image::open(fixtures().join(meta["image"].as_str().unwrap()))
        .unwrap()
        .to_rgb8();
    let predictor = Predictor::new(&sam);

    let mut report = Vec::new();
    let mut check = |what: String, diff: f32| {
        report.push(format!("{what}: {diff:.2e}"));
        assert!(
            diff <= tol,
            "{case} {what}: max abs diff {diff:e} > {tol:e}"
        );
    };
    if reference.contains("input_image") {
        let input = predictor.input_tensor(&image);
        check(
            "input_image".into(),
            max_abs_diff(input, &reference, "input_image"),
        );
    }
    let embedded = predictor.set_image(&image);
    check(
        "image_embedding".into(),
        max_abs_diff(embedded.embedding.clone(), &reference, "image_embedding"),
    );
    for (name, set) in meta["prompt_sets"].as_object().unwrap() {
        let prompts = user_prompts(set);
        let model_prompts = predictor.model_prompts(&prompts, embedded.original_size);
        let (sparse, dense) = sam.prompt_encoder.forward(&model_prompts);
        check(
            format!("{name}.sparse"),
            max_abs_diff(sparse, &reference, &format!("{name}.sparse")),
        );
        if reference.contains(&format!("{name}.dense")) {
            check(
                format!("{name}.dense"),
                max_abs_diff(dense, &reference, &format!("{name}.dense")),
            );
        }
        let out = predictor.predict(&embedded, &prompts, false).unwrap();
        let key = format!("{name}.low_res_logits");
        check(
            key.clone(),
            max_abs_diff(out.low_res_logits, &reference, &key),
        );
        let iou = &reference.get(&format!("{name}.iou")).unwrap().data;
        check(format!("{name}.iou"), max_abs_diff_slices(&out.iou, iou));
        let masks: Vec<f32> = out.masks.concat();
        let expected = &reference.get(&format!("{name}.masks_logits")).unwrap().data;
        check(
            format!("{name}.masks_logits"),
            max_abs_diff_slices(&masks, expected),
        );
        if reference.contains(&format!("{name}.multi_iou")) {
            let out = predictor.predict(&embedded, &prompts, true).unwrap();
            let key = format!("{name}.multi_low_res_logits");
            check(
                key.clone(),
                max_abs_diff(out.low_res_logits, &reference, &key),
            );
            let iou = &reference.get(&format!("{name}.multi_iou")).unwrap().data;
            check(
                format!("{name}.multi_iou"),
                max_abs_diff_slices(&out.iou, iou),
            );
        }
    }
    eprintln!("{case}:\n  {}", report.join("\n  "));
}

#[test]
fn tiny256_at_native_size() {
    check_case("tiny256_at256", "tiny256.pth");
}

#[test]
fn tiny1024_at_native_size() {
    check_case("tiny1024_at1024", "tiny1024.pth");
}

#[test]
fn tiny1024_checkpoint_run_at_256() {
    check_case("tiny1024_at256", "tiny1024.pth");
}

#[test]
fn safetensors_checkpoint_predicts_like_pth() {
    check_case("tiny256_at256", "tiny256.safetensors");
}

/// Official ViT-B size with random weights, at 1024 px and at 256 px from the same checkpoint.
/// The files (~400 MB) are not committed: write them with
/// `python3 scripts/make_fixtures.py --skip-small --full-vit-b DIR`, then run
/// `SAM_COBOT_VIT_B_DIR=DIR cargo test --release --test parity -- --ignored --nocapture`.
/// Embeddings agree to ~1e-5; the decoder's logits reach ±80 with random ViT-B weights, so float32
/// accumulation leaves up to ~2e-4 there (2e-6 relative): the default tolerance is 5e-4
/// (`SAM_COBOT_VIT_B_TOL` overrides it).
#[test]
#[ignore = "needs the ViT-B reference files; see the comment"]
fn vit_b_full_size() {
    let Some(dir) = std::env::var_os("SAM_COBOT_VIT_B_DIR").map(PathBuf::from) else {
        eprintln!("SAM_COBOT_VIT_B_DIR is not set: skipped");
        return;
    };
    let checkpoint = dir.join("sam_vit_b_random.pth");
    let tol = std::env::var("SAM_COBOT_VIT_B_TOL").map_or(5e-4, |t| t.parse().unwrap());
    check_case_at(&dir.join("vit_b_at1024"), &checkpoint, tol);
    check_case_at(&dir.join("vit_b_at256"), &checkpoint, tol);
}

fn unit_tensor<const D: usize>(key: &str) -> Tensor<D> {
    let (shape, data) = reference_tensor("unit", key);
    let shape: [usize; D] = shape.try_into().unwrap();
    Tensor::from_data(TensorData::new(data, shape), &Device::flex())
}

fn unit_diff<const D: usize>(actual: Tensor<D>, key: &str) -> f32 {
    let (shape, expected) = reference_tensor("unit", key);
    assert_eq!(actual.dims().as_slice(), shape.as_slice(), "shape of {key}");
    max_abs_diff_slices(&actual.into_data().try_to_vec::<f32>().unwrap(), &expected)
}

#[test]
fn rel_pos_tables_resize_like_get_rel_pos() {
    let diff = unit_diff(
        rel_pos_for(unit_tensor("rel_pos_27"), 32, 32),
        "get_rel_pos_27_q32_k32",
    );
    assert!(diff <= 1e-6, "27 → 63 rows: {diff:e}");
    let diff = unit_diff(
        rel_pos_for(unit_tensor("rel_pos_127"), 16, 16),
        "get_rel_pos_127_q16_k16",
    );
    assert!(diff <= 1e-6, "127 → 31 rows: {diff:e}");
}

#[test]
fn pos_embed_resizes_like_interpolate() {
    let resized = resize_pos_embed(unit_tensor("pos_embed_64"), 16);
    let diff = unit_diff(resized, "pos_embed_64_to_16");
    assert!(diff <= 1e-6, "64 → 16 grid: {diff:e}");
}

#[test]
fn image_resize_matches_pil() {
    for (file, key) in [
        ("image_300x200.png", "resize_256_u8"),
        ("gray_150x220.png", "gray_resize_256_u8"),
    ] {
        let image = image::open(fixtures().join(file)).unwrap().to_rgb8();
        let (h, w) = (image.height() as usize, image.width() as usize);
        let (nh, nw) = ResizeLongestSide::new(256).new_size(h, w);
        let ours = resize_bilinear_antialias(image.as_raw(), h, w, 3, nh, nw);
        let (shape, expected) = reference_tensor("unit", key);
        assert_eq!(shape, [nh, nw, 3], "{file}");
        let ours: Vec<f32> = ours.into_iter().map(f32::from).collect();
        assert_eq!(max_abs_diff_slices(&ours, &expected), 0.0, "{file}");
    }
}
