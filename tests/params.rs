//! Parameter counts against the reference's (`tests/fixtures/peft/param_counts.json`, counted on
//! the real PyTorch modules) and docs/methods.md#parameter-counts, and the checkpoint layout of a configuration.

mod common;

use std::process::Command;

use common::fixtures;
use sam_cobot::adapter::trainable_counts;
use sam_cobot::checkpoint::load_state_dict;
use sam_cobot::nn::params::Origin;
use sam_cobot::nn::weights::Weights;
use sam_cobot::peft::{Coefficients, HeadKind, Method, PeftConfig, Relation};
use sam_cobot::sam::checkpoint_shapes;
use sam_cobot::sam::config::SamConfig;
use serde_json::Value;

/// The configuration a fixture case name stands for (`lora_cobot_rel_fixed`, ...).
fn case_config(case: &str) -> PeftConfig {
    let (method, switches) = match case.split_once("_cobot") {
        Some((base, rest)) => (format!("{base}+cobot"), rest),
        None => (case.to_string(), ""),
    };
    let mut cfg = PeftConfig::new(method.parse::<Method>().unwrap());
    match switches {
        "" => {}
        "_block" => cfg.coefficients = Coefficients::Block,
        "_rel_identity" => cfg.relation = Relation::Identity,
        "_rel_fixed" => cfg.relation = Relation::Fixed,
        "_head_none" => cfg.head = HeadKind::None,
        "_head_linear" => cfg.head = HeadKind::Linear,
        other => panic!("unknown case suffix {other}"),
    }
    cfg
}

#[test]
fn counts_match_the_reference_for_every_model_and_method() {
    let text = std::fs::read_to_string(fixtures().join("peft/param_counts.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    for model in ["vit_b", "vit_l", "vit_h"] {
        let sam = SamConfig::named(model).unwrap();
        for (case, want) in reference[model].as_object().unwrap() {
            let got = trainable_counts(&sam, &case_config(case));
            let want = (
                want["encoder"].as_u64().unwrap(),
                want["total"].as_u64().unwrap(),
            );
            assert_eq!(
                (got.encoder as u64, got.total as u64),
                want,
                "{model} {case}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * 17);
}

#[test]
fn vit_b_counts_are_the_papers() {
    let sam = SamConfig::named("vit_b").unwrap();
    let encoder = |cfg: PeftConfig| trainable_counts(&sam, &cfg).encoder;
    assert_eq!(encoder(PeftConfig::new(Method::LORA)), 147_456);
    assert_eq!(encoder(PeftConfig::new(Method::LORA_COBOT)), 148_320);
    assert_eq!(encoder(PeftConfig::new(Method::ADAPTER)), 322_752);
    assert_eq!(encoder(PeftConfig::new(Method::ADAPTER_COBOT)), 324_048);
}

#[test]
fn shapes_of_a_configuration_are_its_checkpoints() {
    let dict = load_state_dict(&fixtures().join("tiny256.pth")).unwrap();
    let device = burn::tensor::Device::flex();
    let expected: Vec<(String, Vec<usize>)> = dict
        .iter()
        .map(|(k, t)| (k.to_string(), t.shape.clone()))
        .collect();
    let cfg = SamConfig::infer(&Weights::new(dict, &device, Origin::Base)).unwrap();
    let mut shapes = checkpoint_shapes(&cfg);
    shapes.sort();
    assert_eq!(shapes, expected);

    // docs/sam.md#variants: 93,735,472 parameters in vit_b, plus the 2×128 PE buffer.
    let vit_b = checkpoint_shapes(&SamConfig::named("vit_b").unwrap());
    let total: usize = vit_b.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(total, 93_735_472 + 256);
}

#[test]
fn params_command_prints_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_sam-cobot"))
        .args([
            "params",
            "--model",
            "vit_b",
            "--method",
            "lora+cobot",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["encoder"], 148_320);
    assert_eq!(json["total"], 148_320 + 4_058_340);
}

#[test]
fn params_command_rejects_bad_switches() {
    let out = Command::new(env!("CARGO_BIN_EXE_sam-cobot"))
        .args([
            "params",
            "--model",
            "vit_b",
            "--method",
            "lora+cobot",
            "--rank",
            "6",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("divisible by 4") && err.contains('6'), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
