//! Gradient parity of every method and switch against the PyTorch reference
//! (`scripts/make_peft_fixtures.py`): one forward and backward of BCE + soft Dice on two box
//! prompts with the tiny SAM, the same starting values on both sides. SAM runs with the fused CPU
//! kernels and, in one test, with burn's composed ops; on `SAM_COBOT_TEST_DEVICE` (the CPU by
//! default; docs/gpu.md).

mod common;

use burn::tensor::{Tensor, TensorData};
use common::{fixtures, relative_l2};
use sam_cobot::checkpoint::{StateDict, load_state_dict};
use sam_cobot::nn::params::gradients;
use sam_cobot::peft::{Coefficients, HeadKind, LoraInit, Method, PeftConfig, Relation};
use sam_cobot::sam::predictor::Predictor;
use sam_cobot::sam::{Prompts, Sam};
use sam_cobot::train::loss::{DiceKind, segmentation_loss, upsample_logits};
use serde_json::Value;

fn config(meta: &Value) -> PeftConfig {
    let text = |key: &str, default: &str| meta[key].as_str().unwrap_or(default).to_string();
    let parse = |key: &str, default: &str| -> Value { Value::String(text(key, default)) };
    let mut cfg = PeftConfig::new(text("method", "").parse::<Method>().unwrap());
    if let Some(rank) = meta["rank"].as_u64() {
        cfg.rank = rank as usize;
    }
    if let Some(bottleneck) = meta["bottleneck"].as_u64() {
        cfg.bottleneck = bottleneck as usize;
    }
    cfg.coefficients =
        serde_json::from_value::<Coefficients>(parse("coefficients", "dual")).unwrap();
    cfg.relation = serde_json::from_value::<Relation>(parse("relation", "learnable")).unwrap();
    cfg.head = serde_json::from_value::<HeadKind>(parse("head", "quaternion")).unwrap();
    cfg.lora_init = LoraInit::Xavier;
    cfg.adapter_dropout = 0.0;
    cfg
}

fn with_prefix(dict: &StateDict, prefix: &str) -> StateDict {
    dict.iter()
        .filter_map(|(k, t)| k.strip_prefix(prefix).map(|k| (k.to_string(), t.clone())))
        .collect()
}

/// `fused`: run SAM with the fused CPU kernels, or with burn's composed ops (the path of
/// every other device).
fn check_case(case: &str, fused: bool) {
    sam_cobot::kernels::set_enabled(fused);
    let dir = fixtures().join("peft").join(case);
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let reference = load_state_dict(&dir.join("reference.safetensors")).unwrap();
    let device = common::test_device().autodiff();
    let base = load_state_dict(&fixtures().join("tiny256.pth")).unwrap();
    let cfg = config(&meta);
    let sam = Sam::from_state_dict(base, Some(256), &device)
        .unwrap()
        .attach_peft(cfg, with_prefix(&reference, "peft."))
        .unwrap()
        .with_trainable_set();

    let image = image::open(fixtures().join("image_300x200.png"))
        .unwrap()
        .to_rgb8();
    let input = Predictor::new(&sam).input_tensor(&image);
    let boxes: Vec<[f32; 4]> = meta["boxes_input_frame"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let v: Vec<f32> = b
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            v.try_into().unwrap()
        })
        .collect();
    let prompts = Prompts {
        points: Vec::new(),
        boxes,
    };
    let embedding = sam.embed_image(input);
    let low_res = sam.predict_masks(embedding, &prompts, false).low_res_logits;
    let common = load_state_dict(&fixtures().join("peft/common.safetensors")).unwrap();
    let targets = common.get("targets").unwrap();
    let targets = Tensor::<4>::from_data(
        TensorData::new(targets.data.clone(), [2, 1, 256, 256]),
        &device,
    );
    let loss = segmentation_loss(upsample_logits(low_res, 256), targets, DiceKind::Soft);
    let loss_value: f32 = loss.clone().into_data().try_to_vec::<f32>().unwrap()[0];
    let expected_loss = reference.get("loss").unwrap().data[0];
    assert!(
        (loss_value - expected_loss).abs() <= 1e-5,
        "{case}: loss {loss_value} vs reference {expected_loss}"
    );
    if cfg_trains_nothing(&meta) {
        return;
    }
    let grads = loss.backward();
    let ours = gradients(&sam, &sam.names, &grads).expect("gradients read back");
    let expected = with_prefix(&reference, "grad.");
    let mut worst = (0.0, String::new());
    // Softmax ignores a key bias: those gradients are zero up to float noise on both sides.
    let analytically_zero: Vec<&str> = meta["grad_analytically_zero"]
        .as_array()
        .map(|keys| keys.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (key, want) in expected.iter() {
        let Some(got) = ours.get(key) else {
            // Tensors the loss does not reach get no gradient in burn; the reference stores zeros.
            assert!(
                want.data.iter().all(|v| *v == 0.0),
                "{case}: no gradient for '{key}'"
            );
            continue;
        };
        assert_eq!(got.shape, want.shape, "{case}: gradient shape of '{key}'");
        if analytically_zero.contains(&key) {
            let norm = got.data.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!(
                norm <= 1e-5,
                "{case}: '{key}' should get no gradient, has norm {norm:e}"
            );
            continue;
        }
        let err = relative_l2(&got.data, &want.data);
        assert!(
            err <= 1e-4,
            "{case}: gradient of '{key}' differs by {err:e} (relative L2)"
        );
        if err > worst.0 {
            worst = (err, key.to_string());
        }
    }
    let extra: Vec<&str> = ours.keys().filter(|k| !expected.contains(k)).collect();
    assert!(
        extra.is_empty(),
        "{case}: gradients for tensors that should be frozen: {extra:?}"
    );
    eprintln!(
        "{case}: loss diff {:.1e}, {} gradients, worst {:.1e} ({})",
        (loss_value - expected_loss).abs(),
        expected.len(),
        worst.0,
        worst.1
    );
}

fn cfg_trains_nothing(meta: &Value) -> bool {
    meta["method"].as_str() == Some("freeze")
}

macro_rules! cases {
    ($($name:ident => $dir:literal,)*) => {
        $(#[test] fn $name() { check_case($dir, true); })*
    };
}

/// The composed path (GPU devices, other dtypes) against the same references.
#[test]
fn composed_ops_match_the_reference_too() {
    for case in ["full", "lora_cobot", "adapter_cobot"] {
        check_case(case, false);
    }
}

cases! {
    freeze => "freeze",
    lightweight => "lightweight",
    lora => "lora",
    adapter => "adapter",
    full => "full",
    lora_cobot => "lora_cobot",
    lora_cobot_block => "lora_cobot_block",
    lora_cobot_rel_identity => "lora_cobot_rel_identity",
    lora_cobot_rel_fixed => "lora_cobot_rel_fixed",
    lora_cobot_head_none => "lora_cobot_head_none",
    lora_cobot_head_linear => "lora_cobot_head_linear",
    adapter_cobot => "adapter_cobot",
    adapter_cobot_block => "adapter_cobot_block",
    adapter_cobot_rel_identity => "adapter_cobot_rel_identity",
    adapter_cobot_rel_fixed => "adapter_cobot_rel_fixed",
    adapter_cobot_head_none => "adapter_cobot_head_none",
    adapter_cobot_head_linear => "adapter_cobot_head_linear",
}
