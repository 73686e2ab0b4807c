//! The shipped base model (`models/sam-cobot-base-512.safetensors`) segments: on generated
//! 512 px scenes from seeds pretraining never used, box prompts and single points (SAM's three masks,
//! the highest predicted IoU kept) reach the Dice floors below. A handful of scenes, so the
//! floors are this file's own figures less a margin; `models/README.md` reports 200 scenes.

use std::path::Path;

use burn::tensor::Device;
use sam_cobot::checkpoint::load_state_dict;
use sam_cobot::checkpoint::tensors_sha256;
use sam_cobot::data::preprocess::Preprocessing;
use sam_cobot::data::scenes::write_coco;
use sam_cobot::data::{DataSource, Dataset};
use sam_cobot::eval::{EvalOptions, PromptKind, Scorer, evaluate};
use sam_cobot::sam::Sam;
use sam_cobot::sam::config::SamConfig;
use sam_cobot::sam::random::random_state_dict;

const BASE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/sam-cobot-base-512.safetensors"
);

fn dice(sam: &Sam, data: &Dataset, prompt: PromptKind) -> f64 {
    let opts = EvalOptions {
        preprocessing: Preprocessing::Sam,
        prompt,
        image_size: sam.image_size,
        overlays: None,
        strict: true,
    };
    let indices: Vec<usize> = (0..data.len()).collect();
    evaluate(data, &indices, &Scorer::Model(sam), &opts, || {})
        .unwrap()
        .summary
        .mean_dice
}

#[test]
fn the_shipped_base_segments_unseen_scenes() {
    let sam = Sam::from_state_dict(
        load_state_dict(Path::new(BASE)).unwrap(),
        None,
        &Device::flex(),
    )
    .unwrap();
    assert_eq!(sam.image_size, 512);
    let tmp = tempfile::tempdir().unwrap();
    write_coco(tmp.path(), 8, 7_000_000, 512, 8).unwrap();
    let data = Dataset::open(&DataSource::new(tmp.path().join("annotations.json"))).unwrap();
    let (boxes, point) = (
        dice(&sam, &data, PromptKind::Box),
        dice(&sam, &data, PromptKind::Point),
    );
    let box_fill = {
        let opts = EvalOptions {
            preprocessing: Preprocessing::Sam,
            prompt: PromptKind::Box,
            image_size: 512,
            overlays: None,
            strict: true,
        };
        let indices: Vec<usize> = (0..data.len()).collect();
        evaluate(&data, &indices, &Scorer::BoxFill, &opts, || {})
            .unwrap()
            .summary
            .mean_dice
    };
    println!("box prompts {boxes:.2}%, one point {point:.2}%, box-fill {box_fill:.2}%");
    assert!(
        boxes >= BOX_FLOOR && boxes > box_fill + 10.0,
        "box prompts: {boxes:.2}%"
    );
    assert!(point >= POINT_FLOOR, "one point: {point:.2}%");
}

/// Floors on these 8 scenes, a few points under what the shipped file scores on them (box
/// prompts 86.22%, one point 73.79%, box-fill 67.94%; the test prints them): a model that lost
/// its pretraining scores far below.
const BOX_FLOOR: f64 = 82.0;
const POINT_FLOOR: f64 = 69.0;

/// The shipped base's recipe starts from the random weights of `mini` with seed 0
/// (presets/pretrain-base.toml). Random weights are drawn in the order the loaders declare their
/// tensors, so that order is part of the recipe: this pins it (the tensors' SHA-256 as
/// `tensors_sha256` hashes them).
#[test]
fn the_recipes_random_start_is_pinned() {
    let dict = random_state_dict(&SamConfig::named("mini").unwrap(), 0);
    assert_eq!(
        tensors_sha256(&dict),
        "292fcee6ff4b1db9b2a597e43e8f4184fb7264ed1f0730f24f4d2d5c266da7d9"
    );
}
