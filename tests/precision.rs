//! Mixed precision (`--precision`): the products run in f16 or bf16 and the model stays close to
//! the PyTorch reference (f32) on the parity fixtures, with the same masks on a model that
//! segments. Runs on `SAM_COBOT_TEST_DEVICE` for each half precision its backend has; on the CPU
//! (burn's Flex backend) that is both, on the composed path, which rounds the operands as a
//! device of that precision does. The precision is one setting per process, so this binary holds
//! a lock around each test.

mod common;

use std::sync::Mutex;

use burn::tensor::{DType, Device, Tensor, TensorData};
use common::{fixtures, max_abs_diff};
use sam_cobot::checkpoint::load_state_dict;
use sam_cobot::eval::metrics::dice_iou;
use sam_cobot::kernels::{self, Precision};
use sam_cobot::sam::Sam;
use sam_cobot::sam::predictor::{Predictor, UserPrompts};

static PRECISION: Mutex<()> = Mutex::new(());

/// Runs `f` with the products in `precision`, back to f32 afterwards (also after a panic).
fn with_precision<T>(precision: Precision, f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            kernels::set_precision(Precision::F32);
        }
    }
    let _reset = Reset;
    kernels::set_precision(precision);
    f()
}

/// The half precisions the test device's backend computes in.
fn half_precisions(device: &Device) -> Vec<Precision> {
    [Precision::F16, Precision::Bf16]
        .into_iter()
        .filter(|p| device.supports_dtype(DType::from(p.half().unwrap())))
        .collect()
}

#[test]
fn products_round_their_operands_to_the_precision() {
    let _lock = PRECISION.lock().unwrap_or_else(|e| e.into_inner());
    let device = common::test_device();
    // 1 + 2^-9 is exact in f32 and f16 (10 mantissa bits) but not in bf16 (7 bits: it rounds to
    // 1); 1 + 2^-12 is exact only in f32.
    let (x, y) = (1.0 + 2f32.powi(-9), 1.0 + 2f32.powi(-12));
    let a = Tensor::<2>::from_data(TensorData::new(vec![x, y], [1, 2]), &device);
    let b = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 1.0], [2, 1]), &device);
    let product = |p| {
        let out = with_precision(p, || kernels::product(a.clone(), b.clone()));
        assert_eq!(
            out.dtype(),
            DType::F32,
            "{p}: the product comes back in f32"
        );
        out.into_data().try_to_vec::<f32>().unwrap()[0]
    };
    assert_eq!(product(Precision::F32), x + y);
    for p in half_precisions(&device) {
        let expected = match p {
            Precision::F16 => x + 1.0,
            _ => 2.0,
        };
        assert_eq!(product(p), expected, "{p}");
    }
}

/// The image embedding and a box's low-resolution logits in each half precision against the
/// reference, next to f32's difference: the accuracy cost docs/gpu.md quotes.
#[test]
fn sam_in_half_precision_stays_near_the_reference() {
    let _lock = PRECISION.lock().unwrap_or_else(|e| e.into_inner());
    let device = common::test_device();
    for (case, checkpoint, size) in [
        ("tiny256_at256", "tiny256.pth", 256),
        ("tiny1024_at1024", "tiny1024.pth", 1024),
    ] {
        let dir = fixtures().join(case);
        let reference = load_state_dict(&dir.join("reference.safetensors")).unwrap();
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("prompts.json")).unwrap())
                .unwrap();
        let image = image::open(fixtures().join(meta["image"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let corners: Vec<f32> = meta["prompt_sets"]["box1"]["boxes"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let prompts = UserPrompts {
            boxes: vec![corners.try_into().unwrap()],
            points: vec![],
        };
        let dict = load_state_dict(&fixtures().join(checkpoint)).unwrap();
        let sam = Sam::from_state_dict(dict, Some(size), &device).unwrap();
        let largest = |key: &str| {
            let values = &reference.get(key).unwrap().data;
            values.iter().fold(0f32, |m, v| m.max(v.abs()))
        };
        let (embedding_scale, logits_scale) =
            (largest("image_embedding"), largest("box1.low_res_logits"));
        let mut f32_difference = 0.0;
        for precision in [Precision::F32].into_iter().chain(half_precisions(&device)) {
            let (embedding, logits) = with_precision(precision, || {
                let predictor = Predictor::new(&sam);
                let embedded = predictor.set_image(&image);
                let logits = predictor
                    .predict(&embedded, &prompts, false)
                    .unwrap()
                    .low_res_logits;
                (embedded.embedding, logits)
            });
            let embedding =
                max_abs_diff(embedding, &reference, "image_embedding") / embedding_scale;
            let logits = max_abs_diff(logits, &reference, "box1.low_res_logits") / logits_scale;
            eprintln!(
                "{case} {precision}: largest difference from the reference, relative to the largest value: \
                 image_embedding {embedding:.1e}, low_res_logits {logits:.1e}"
            );
            // f16 keeps 11 significant bits (4.9e-4 relative), bf16 8 (3.9e-3); a product of
            // many terms, over a few layers, stays within a few times that of its largest value
            // (the CPU, f16 at 1024 px: 1.1e-3 / 3.8e-3); burn's GPU kernels lose about three
            // times more (lavapipe: 5.8e-3 / 1.1e-2).
            let bound = match precision {
                Precision::F32 => 1e-5,
                Precision::F16 => 3e-2,
                Precision::Bf16 => 1e-1,
            };
            assert!(
                embedding <= bound && logits <= bound,
                "{case} {precision}: over {bound:e}"
            );
            // The half precisions do round: ten times f32's difference at least.
            if precision == Precision::F32 {
                f32_difference = embedding;
            } else {
                assert!(
                    embedding > 10.0 * f32_difference,
                    "{case} {precision}: as f32"
                );
            }
        }
    }
}

/// The shipped base's first stage, which segments: its masks for boxes on a generated scene are
/// the same in each half precision as in f32 but for a few boundary pixels.
#[test]
fn the_base_models_masks_agree_in_half_precision() {
    let _lock = PRECISION.lock().unwrap_or_else(|e| e.into_inner());
    let device = common::test_device();
    let scene = sam_cobot::data::scenes::scene(7, 256, 8);
    let base = load_state_dict(std::path::Path::new(common::BASE_256)).unwrap();
    let sam = Sam::from_state_dict(base, None, &device).unwrap();
    let prompts = UserPrompts {
        boxes: scene
            .objects
            .iter()
            .map(|o| o.bbox.map(|v| v as f32))
            .collect(),
        points: vec![],
    };
    let masks = |p| {
        with_precision(p, || {
            let predictor = Predictor::new(&sam);
            let embedded = predictor.set_image(&scene.image);
            predictor.predict(&embedded, &prompts, false).unwrap().masks
        })
    };
    let reference = masks(Precision::F32);
    for precision in half_precisions(&device) {
        for (i, (a, b)) in masks(precision).iter().zip(&reference).enumerate() {
            let (dice, _) = dice_iou(a.iter().map(|v| *v > 0.0), b.iter().map(|v| *v > 0.0));
            eprintln!(
                "{precision}: object {i}: Dice against f32 {:.2}%",
                100.0 * dice
            );
            assert!(
                dice >= 0.99,
                "{precision}: object {i}: Dice against f32 {dice}"
            );
        }
    }
}
