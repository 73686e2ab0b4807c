//! `Sam::from_state_dict` on state dicts that are not (quite) SAM: each failure is its own
//! `ModelLoadError` variant with a message naming the key; and the configuration it infers from
//! the fixture checkpoints is the one `scripts/make_fixtures.py` built.

mod common;

use burn::tensor::Device;
use common::fixtures;
use sam_cobot::checkpoint::{RawTensor, StateDict, load_state_dict};
use sam_cobot::sam::config::{EncoderConfig, VitConfig};
use sam_cobot::sam::{ModelLoadError, Sam};

fn checkpoint(name: &str) -> StateDict {
    load_state_dict(&fixtures().join(name)).unwrap_or_else(|e| panic!("{e}"))
}

fn tiny256() -> StateDict {
    checkpoint("tiny256.pth")
}

fn load(dict: StateDict) -> Result<Sam, ModelLoadError> {
    Sam::from_state_dict(dict, None, &Device::flex())
}

/// The error of loading `dict`, which must fail.
#[track_caller]
fn load_err(dict: StateDict) -> ModelLoadError {
    match load(dict) {
        Ok(sam) => panic!("loaded a model: {:?}", sam.config),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_contains(message: &str, part: &str) {
    assert!(message.contains(part), "{message:?} lacks {part:?}");
}

#[test]
fn tiny256_config_is_what_the_fixture_script_built() {
    let sam = load(tiny256()).unwrap();
    // The demo's built-in tiny model is this same architecture.
    let expected = sam_cobot::sam::config::SamConfig::tiny();
    assert_eq!(sam.config, expected);
    assert_eq!(sam.config.variant(), "custom");
    assert_eq!(sam.image_size, 256);
}

#[test]
fn tiny1024_config_has_native_size_1024() {
    let sam = load(checkpoint("tiny1024.pth")).unwrap();
    assert_eq!(sam.config.encoder.native_image_size(), 1024);
    assert_eq!(sam.image_size, 1024);
    // Same architecture as tiny256 otherwise.
    let tiny256 = load(tiny256()).unwrap().config;
    assert_eq!(sam.config.decoder, tiny256.decoder);
    assert_eq!(sam.config.prompt, tiny256.prompt);
    let EncoderConfig::Vit(vit) = sam.config.encoder;
    assert_eq!(
        EncoderConfig::Vit(VitConfig {
            native_image_size: 256,
            ..vit
        }),
        tiny256.encoder
    );
}

#[test]
fn missing_key() {
    let mut dict = tiny256();
    dict.remove("mask_decoder.mask_tokens.weight").unwrap();
    let e = load_err(dict);
    assert!(
        matches!(&e, ModelLoadError::MissingKey(k) if k == "mask_decoder.mask_tokens.weight"),
        "{e:?}"
    );
    assert_contains(
        &e.to_string(),
        "missing key 'mask_decoder.mask_tokens.weight'",
    );
}

#[test]
fn missing_key_that_is_not_used_for_the_config() {
    let key = "mask_decoder.output_upscaling.0.bias";
    let mut dict = tiny256();
    dict.remove(key).unwrap();
    let e = load_err(dict);
    assert!(
        matches!(&e, ModelLoadError::MissingKey(k) if k == key),
        "{e:?}"
    );
}

#[test]
fn wrong_shape() {
    let key = "image_encoder.blocks.0.attn.proj.weight";
    let mut dict = tiny256();
    assert_eq!(dict.get(key).unwrap().shape, [64, 64]);
    dict.insert(key, RawTensor::new(vec![64, 63], vec![0.0; 64 * 63]));
    let e = load_err(dict);
    match &e {
        ModelLoadError::WrongShape {
            key: k,
            found,
            expected,
        } => {
            assert_eq!(k, key);
            assert_eq!(found, &[64, 63]);
            assert_eq!(expected, "[64, 64]");
        }
        other => panic!("{other:?}"),
    }
    let message = e.to_string();
    assert_contains(&message, key);
    assert_contains(&message, "[64, 63]");
    assert_contains(&message, "[64, 64]");
}

#[test]
fn wrong_number_of_dimensions() {
    let key = "mask_decoder.iou_token.weight";
    let mut dict = tiny256();
    assert_eq!(dict.get(key).unwrap().shape, [1, 32]);
    dict.insert(key, RawTensor::new(vec![32], vec![0.0; 32]));
    let e = load_err(dict);
    assert!(
        matches!(&e, ModelLoadError::WrongShape { key: k, found, .. } if k == key && found == &[32]),
        "{e:?}"
    );
    assert_contains(&e.to_string(), key);
}

#[test]
fn extra_key() {
    let mut dict = tiny256();
    dict.insert("foo.bar", RawTensor::new(vec![2], vec![1.0, 2.0]));
    let e = load_err(dict);
    assert!(
        matches!(&e, ModelLoadError::UnexpectedKeys(keys) if keys == &["foo.bar"]),
        "{e:?}"
    );
    assert_contains(&e.to_string(), "unexpected keys");
    assert_contains(&e.to_string(), "foo.bar");
}

#[test]
fn state_dict_that_is_not_sam() {
    let dict: StateDict = [
        ("fc.weight", RawTensor::new(vec![4, 3], vec![0.5; 12])),
        ("fc.bias", RawTensor::new(vec![4], vec![0.1; 4])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let e = load_err(dict);
    assert!(matches!(e, ModelLoadError::MissingKey(_)), "{e:?}");
    let message = e.to_string();
    assert_contains(&message, "missing key");
    assert_contains(&message, "not a SAM checkpoint");
}

#[test]
fn empty_state_dict() {
    let e = load_err(StateDict::new());
    assert!(matches!(e, ModelLoadError::MissingKey(_)), "{e:?}");
    assert_contains(&e.to_string(), "not a SAM checkpoint");
}

#[test]
fn prompt_encoder_narrower_than_the_neck() {
    let key = "prompt_encoder.no_mask_embed.weight";
    let mut dict = tiny256();
    assert_eq!(dict.get(key).unwrap().shape, [1, 32]);
    dict.insert(key, RawTensor::new(vec![1, 16], vec![0.0; 16]));
    let e = load_err(dict);
    assert!(matches!(e, ModelLoadError::NotSam(_)), "{e:?}");
    let message = e.to_string();
    assert_contains(&message, "not a SAM checkpoint");
    assert_contains(&message, "16");
    assert_contains(&message, "32");
}

#[test]
fn bad_image_size() {
    for size in [0, 100, 250] {
        let e = match Sam::from_state_dict(tiny256(), Some(size), &Device::flex()) {
            Ok(_) => panic!("image size {size} accepted"),
            Err(e) => e,
        };
        assert!(
            matches!(e, ModelLoadError::BadImageSize(s, 16) if s == size),
            "{e:?}"
        );
        assert_contains(&e.to_string(), &size.to_string());
    }
}
