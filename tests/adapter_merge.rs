//! Adapter files and merging, on the tiny fixture model: an adapter saved from a model with PEFT
//! modules (and a "trained" decoder tensor) reloads onto its base with identical predictions; it is
//! refused on another base or when it is not an adapter; LoRA methods merge into a stock SAM
//! checkpoint (.safetensors and .pth) that predicts like base + adapter; adapter methods refuse to
//! merge. Run with `--nocapture` to see the measured differences and file sizes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::tensor::{Device, Tensor};
use common::fixtures;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sam_cobot::adapter::{
    AdapterError, MergeError, load_with_adapter, merge, open_adapter, read_adapter_info,
    save_adapter,
};
use sam_cobot::checkpoint::identity::ADAPTER_FORMAT;
use sam_cobot::checkpoint::{
    StateDict, load_state_dict, read_safetensors_metadata, sha256_file, tensors_sha256, write_pth,
    write_safetensors,
};
use sam_cobot::peft::initial_state;
use sam_cobot::peft::{Coefficients, HeadKind, Method, PeftConfig, Relation};
use sam_cobot::sam::predictor::Predictor;
use sam_cobot::sam::{Prompts, Sam};
use tempfile::TempDir;

const BASE: &str = "tiny256.pth";
/// A decoder tensor the tests change, as training would.
const TRAINED_DECODER_KEY: &str = "mask_decoder.output_upscaling.0.bias";

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn device() -> Device {
    Device::flex()
}

fn cfg(method: Method) -> PeftConfig {
    PeftConfig::new(method)
}

fn cfg_with(
    method: Method,
    relation: Relation,
    head: HeadKind,
    coefficients: Coefficients,
) -> PeftConfig {
    PeftConfig {
        relation,
        head,
        coefficients,
        ..PeftConfig::new(method)
    }
}

/// Adds uniform noise to every tensor (so B, W_up, gamma, ... are all "trained").
fn perturb(dict: StateDict, seed: u64, amplitude: f32) -> StateDict {
    let mut rng = StdRng::seed_from_u64(seed);
    dict.into_iter()
        .map(|(k, mut t)| {
            for x in &mut t.data {
                *x += rng.random_range(-amplitude..amplitude);
            }
            (k, t)
        })
        .collect()
}

/// The tiny model with `cfg`'s modules at perturbed starting values and a changed decoder tensor:
/// what a short training run would leave in memory.
fn trained_model(cfg: &PeftConfig, seed: u64) -> Sam {
    let mut base = load_state_dict(&fixture(BASE)).unwrap();
    let mut rng = StdRng::seed_from_u64(seed ^ 0xdec0);
    let t = base.get(TRAINED_DECODER_KEY).unwrap().clone();
    let changed: Vec<f32> = t
        .data
        .iter()
        .map(|x| x + rng.random_range(-0.3f32..0.3))
        .collect();
    base.insert(
        TRAINED_DECODER_KEY,
        sam_cobot::checkpoint::RawTensor::new(t.shape, changed),
    );
    let sam = Sam::from_state_dict(base, Some(256), &device()).unwrap();
    let vit = sam.config.peft_encoder().unwrap();
    let (c, depth) = (vit.embed_dim, vit.depth);
    let state = perturb(initial_state(cfg, c, depth, seed), seed + 1, 0.05);
    let mut cfg = cfg.clone();
    cfg.adapter_dropout = 0.0;
    sam.attach_peft(cfg, state).unwrap()
}

/// Low-res logits `[1, 1, 64, 64]` for one box on the fixture image.
fn logits(sam: &Sam) -> Vec<f32> {
    let image = image::open(fixture("image_300x200.png")).unwrap().to_rgb8();
    let input = Predictor::new(sam).input_tensor(&image);
    let prompts = Prompts {
        points: Vec::new(),
        boxes: vec![[40.0, 30.0, 190.0, 150.0]],
    };
    let embedding = sam.embed_image(input);
    let out: Tensor<4> = sam.predict_masks(embedding, &prompts, false).low_res_logits;
    out.into_data().try_to_vec::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The keys an adapter of `cfg` on the tiny model must hold.
fn expected_keys(cfg: &PeftConfig, base: &StateDict) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = initial_state(cfg, 64, 4, 0)
        .keys()
        .map(str::to_owned)
        .collect();
    keys.extend(
        base.keys()
            .filter(|k| cfg.is_trainable(k, false))
            .map(str::to_owned),
    );
    keys
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Saves and reloads an adapter of `cfg`; checks keys, metadata and predictions.
fn round_trip(name: &str, cfg: &PeftConfig) {
    let dir = TempDir::new().unwrap();
    let sam = trained_model(cfg, 7);
    let expected = logits(&sam);
    let path = dir.path().join(format!("{name}.safetensors"));
    save_adapter(&path, &sam, &fixture(BASE)).unwrap();

    let stored = load_state_dict(&path).unwrap();
    let base = load_state_dict(&fixture(BASE)).unwrap();
    let keys: BTreeSet<String> = stored.keys().map(str::to_owned).collect();
    assert_eq!(keys, expected_keys(cfg, &base), "{name}: adapter keys");
    assert_ne!(
        stored.get(TRAINED_DECODER_KEY),
        base.get(TRAINED_DECODER_KEY),
        "the trained decoder tensor is stored"
    );

    let meta = read_safetensors_metadata(&path).unwrap();
    assert_eq!(meta["format"], ADAPTER_FORMAT);
    assert_eq!(meta["version"], "1");
    assert_eq!(meta["model_type"], "custom");
    assert_eq!(meta["image_size"], "256");
    assert_eq!(meta["base_sha256"], sha256_file(&fixture(BASE)).unwrap());
    let encoder: serde_json::Value = serde_json::from_str(&meta["encoder"]).unwrap();
    assert_eq!(encoder["embed_dim"], 64);
    assert_eq!(encoder["depth"], 4);
    assert_eq!(encoder["native_image_size"], 256);
    let info = read_adapter_info(&path).unwrap();
    assert_eq!(info.peft.method, cfg.method);
    assert_eq!(info.peft.relation, cfg.relation);
    assert_eq!(info.peft.head, cfg.head);

    let loaded = load_with_adapter(&fixture(BASE), &path, None, &device()).unwrap();
    assert_eq!(loaded.image_size, 256);
    let got = logits(&loaded);
    let diff = max_abs_diff(&got, &expected);
    eprintln!(
        "{name}: adapter {} bytes, {} tensors; reloaded logits max |diff| {diff:e}",
        file_size(&path),
        stored.len()
    );
    assert!(diff <= 1e-6, "{name}: reloaded logits differ by {diff}");
}

#[test]
fn adapter_round_trip_lora() {
    round_trip("lora", &cfg(Method::LORA));
}

#[test]
fn adapter_round_trip_lora_cobot() {
    round_trip("lora_cobot", &cfg(Method::LORA_COBOT));
}

#[test]
fn adapter_round_trip_lora_cobot_fixed_relation_linear_head() {
    // The frozen random FacT_p must travel with the adapter.
    let c = cfg_with(
        Method::LORA_COBOT,
        Relation::Fixed,
        HeadKind::Linear,
        Coefficients::Dual,
    );
    round_trip("lora_cobot_fixed_linear", &c);
}

#[test]
fn adapter_round_trip_adapter_cobot() {
    round_trip("adapter_cobot", &cfg(Method::ADAPTER_COBOT));
}

#[test]
fn adapter_round_trip_lightweight() {
    round_trip("lightweight", &cfg(Method::LIGHTWEIGHT));
}

fn saved_adapter(dir: &Path, cfg: &PeftConfig) -> PathBuf {
    let path = dir.join("adapter.safetensors");
    save_adapter(&path, &trained_model(cfg, 3), &fixture(BASE)).unwrap();
    path
}

fn load_err(base: &Path, adapter: &Path) -> String {
    match load_with_adapter(base, adapter, None, &device()) {
        Ok(_) => panic!("{} on {} loaded", adapter.display(), base.display()),
        Err(e) => e.to_string(),
    }
}

#[track_caller]
fn assert_contains(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "'{message}' lacks '{part}'");
    }
}

/// Rewrites the adapter's metadata entry `key` (tensors kept).
fn with_metadata(src: &Path, dst: &Path, key: &str, value: &str) {
    let mut meta: BTreeMap<String, String> = read_safetensors_metadata(src).unwrap();
    meta.insert(key.into(), value.into());
    write_safetensors(dst, &load_state_dict(src).unwrap(), &meta).unwrap();
}

#[test]
fn adapter_errors_name_files_and_values() {
    let dir = TempDir::new().unwrap();
    let adapter = saved_adapter(dir.path(), &cfg(Method::LORA_COBOT));
    let other = fixture("tiny1024.pth");
    // A base is identified by its tensors, not its file's bytes.
    let sha_other = tensors_sha256(&load_state_dict(&other).unwrap());
    let sha_base = tensors_sha256(&load_state_dict(&fixture(BASE)).unwrap());

    let e = load_err(&other, &adapter);
    eprintln!("other base: {e}");
    assert_contains(
        &e,
        &[
            "different base checkpoint",
            "tiny1024.pth",
            "adapter.safetensors",
            &sha_other,
            &sha_base,
            "(tiny256.pth)",
        ],
    );

    let plain = fixture("tiny256.safetensors");
    let e = load_err(&fixture(BASE), &plain);
    eprintln!("plain checkpoint: {e}");
    assert_contains(&e, &["tiny256.safetensors", "not a sam-cobot adapter"]);

    let pth_as_adapter = load_err(&fixture(BASE), &fixture(BASE));
    assert_contains(&pth_as_adapter, &["tiny256.pth", "not a sam-cobot adapter"]);

    let corrupt = dir.path().join("corrupt.safetensors");
    with_metadata(
        &adapter,
        &corrupt,
        "peft",
        "{\"method\": \"LoraCobot\", \"rank\":",
    );
    let e = load_err(&fixture(BASE), &corrupt);
    eprintln!("corrupt peft: {e}");
    assert_contains(
        &e,
        &["corrupt.safetensors", "corrupt adapter metadata 'peft'"],
    );

    with_metadata(&adapter, &corrupt, "encoder", "[1, 2");
    assert_contains(
        &load_err(&fixture(BASE), &corrupt),
        &["corrupt adapter metadata 'encoder'"],
    );

    with_metadata(&adapter, &corrupt, "version", "2");
    let e = load_err(&fixture(BASE), &corrupt);
    assert_contains(&e, &["corrupt.safetensors", "version '2'", "version 1"]);

    // A hand-edited adapter whose encoder does not match its (right) base.
    with_metadata(
        &adapter,
        &corrupt,
        "encoder",
        r#"{"embed_dim":768,"depth":12,"num_heads":12,"native_image_size":1024}"#,
    );
    let e = load_err(&fixture(BASE), &corrupt);
    eprintln!("encoder mismatch: {e}");
    assert_contains(&e, &["different model", "encoder", "768", "tiny256.pth"]);
    with_metadata(&adapter, &corrupt, "model_type", "vit_b");
    let e = load_err(&fixture(BASE), &corrupt);
    assert_contains(&e, &["model type is vit_b", "custom"]);

    assert!(matches!(
        load_with_adapter(
            &fixture(BASE),
            &dir.path().join("missing.safetensors"),
            None,
            &device()
        ),
        Err(AdapterError::Checkpoint(_))
    ));
}

/// Runs the binary in `dir` without backtraces (so a panic shows as such).
fn sam_cobot(dir: &Path, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sam-cobot"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("running sam-cobot")
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

#[track_caller]
fn assert_cli_fails(out: &Output, parts: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(stderr.contains("error: "), "{stderr}");
    assert_contains(&stderr, parts);
    stderr
}

fn predict_with_adapter(dir: &Path, base: &Path, adapter: &Path) -> Output {
    let out = dir.join("mask.png");
    let image = fixture("image_300x200.png");
    sam_cobot(
        dir,
        &[
            os("predict"),
            os("--checkpoint"),
            base.as_os_str(),
            os("--adapter"),
            adapter.as_os_str(),
            os("--image"),
            image.as_os_str(),
            os("--box"),
            os("60,40,220,160"),
            os("--out"),
            out.as_os_str(),
        ],
    )
}

#[test]
fn cli_predict_with_adapter_and_its_errors() {
    let dir = TempDir::new().unwrap();
    let adapter = saved_adapter(dir.path(), &cfg(Method::ADAPTER_COBOT));
    let ok = predict_with_adapter(dir.path(), &fixture(BASE), &adapter);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    assert_contains(&stderr, &["adapter.safetensors", "adapter+cobot", "256 px"]);
    assert!(dir.path().join("mask.png").exists());

    let out = predict_with_adapter(dir.path(), &fixture("tiny1024.pth"), &adapter);
    let e = assert_cli_fails(&out, &["different base checkpoint", "tiny1024.pth"]);
    eprintln!("cli other base: {e}");
    let out = predict_with_adapter(dir.path(), &fixture(BASE), &fixture("tiny256.safetensors"));
    assert_cli_fails(&out, &["tiny256.safetensors", "not a sam-cobot adapter"]);
    let corrupt = dir.path().join("corrupt.safetensors");
    with_metadata(&adapter, &corrupt, "peft", "not json");
    let out = predict_with_adapter(dir.path(), &fixture(BASE), &corrupt);
    assert_cli_fails(&out, &["corrupt adapter metadata 'peft'"]);
}

fn cli_merge(dir: &Path, adapter: &Path, out: &Path) -> Output {
    cli_merge_on(dir, &fixture(BASE), adapter, out)
}

fn cli_merge_on(dir: &Path, base: &Path, adapter: &Path, out: &Path) -> Output {
    cli_merge_with(dir, base, adapter, out, &[])
}

/// `merge` with `extra` flags after the files.
fn cli_merge_with(
    dir: &Path,
    base: &Path,
    adapter: &Path,
    out: &Path,
    extra: &[&std::ffi::OsStr],
) -> Output {
    let args = [
        os("merge"),
        os("--checkpoint"),
        base.as_os_str(),
        os("--adapter"),
        adapter.as_os_str(),
        os("--out"),
        out.as_os_str(),
    ];
    sam_cobot(dir, &[&args[..], extra].concat())
}

/// Merges an adapter of `cfg` (through the CLI, both formats) and compares the stock model's
/// predictions with base + adapter.
fn merge_round_trip(name: &str, cfg: &PeftConfig) {
    let dir = TempDir::new().unwrap();
    let adapter = dir.path().join(format!("{name}.safetensors"));
    save_adapter(&adapter, &trained_model(cfg, 11), &fixture(BASE)).unwrap();
    let with_adapter =
        logits(&load_with_adapter(&fixture(BASE), &adapter, None, &device()).unwrap());
    let base_keys: BTreeSet<String> = load_state_dict(&fixture(BASE))
        .unwrap()
        .keys()
        .map(str::to_owned)
        .collect();
    let plain = logits(
        &Sam::from_state_dict(
            load_state_dict(&fixture(BASE)).unwrap(),
            Some(256),
            &device(),
        )
        .unwrap(),
    );
    let mut merged_dicts = Vec::new();
    for ext in ["safetensors", "pth"] {
        let out = dir.path().join(format!("merged_{name}.{ext}"));
        let run = cli_merge(dir.path(), &adapter, &out);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let dict = load_state_dict(&out).unwrap();
        let keys: BTreeSet<String> = dict.keys().map(str::to_owned).collect();
        assert_eq!(keys, base_keys, "{name}.{ext}: official keys only");
        let merged = Sam::from_state_dict(dict.clone(), Some(256), &device()).unwrap();
        let got = logits(&merged);
        let diff = max_abs_diff(&got, &with_adapter);
        let effect = max_abs_diff(&plain, &with_adapter);
        eprintln!(
            "{name}: merged .{ext} ({} bytes) vs base + adapter: max |diff| {diff:e} (adapter changes the logits by up to {effect:.3})",
            file_size(&out)
        );
        assert!(diff <= 1e-4, "{name}.{ext}: merged logits differ by {diff}");
        assert!(effect > 1e-2, "{name}: the adapter should matter");
        merged_dicts.push(dict);
    }
    assert_eq!(
        merged_dicts[0], merged_dicts[1],
        "both formats hold the same tensors"
    );
}

#[test]
fn merge_round_trip_lora() {
    merge_round_trip("lora", &cfg(Method::LORA));
}

#[test]
fn merge_round_trip_lora_cobot() {
    merge_round_trip("lora_cobot", &cfg(Method::LORA_COBOT));
}

#[test]
fn merge_round_trip_lora_cobot_fixed_relation_linear_head() {
    let c = cfg_with(
        Method::LORA_COBOT,
        Relation::Fixed,
        HeadKind::Linear,
        Coefficients::Dual,
    );
    merge_round_trip("lora_cobot_fixed_linear", &c);
}

#[test]
fn merge_round_trip_lora_cobot_block_coefficients_no_head() {
    let c = cfg_with(
        Method::LORA_COBOT,
        Relation::Learnable,
        HeadKind::None,
        Coefficients::Block,
    );
    merge_round_trip("lora_cobot_block_none", &c);
}

#[test]
fn merge_substitutes_trained_base_tensors_for_lightweight_and_full() {
    for method in [Method::LIGHTWEIGHT, Method::FULL, Method::FREEZE] {
        let sam = trained_model(&cfg(method), 5);
        let dict = merge(&sam).unwrap();
        let base = load_state_dict(&fixture(BASE)).unwrap();
        assert_eq!(dict.len(), base.len());
        for (key, t) in dict.iter() {
            let same = base.get(key) == Some(t);
            assert_eq!(same, key != TRAINED_DECODER_KEY, "{method}: {key}");
        }
    }
}

#[test]
fn merging_an_adapter_method_is_a_clear_error() {
    let sam = trained_model(&cfg(Method::ADAPTER_COBOT), 5);
    let e = merge(&sam).unwrap_err();
    assert!(matches!(e, MergeError::NotFoldable(Method::ADAPTER_COBOT)));

    let dir = TempDir::new().unwrap();
    for method in [Method::ADAPTER, Method::ADAPTER_COBOT] {
        let adapter = saved_adapter(dir.path(), &cfg(method));
        let out = dir.path().join("merged.pth");
        let run = cli_merge(dir.path(), &adapter, &out);
        let e = assert_cli_fails(
            &run,
            &["cannot be merged", "ReLU", "--adapter", &method.name()],
        );
        eprintln!("merge {method}: {e}");
        assert!(!out.exists());
    }
    let adapter = saved_adapter(dir.path(), &cfg(Method::LORA));
    let run = cli_merge(dir.path(), &adapter, &dir.path().join("merged.bin"));
    assert_cli_fails(&run, &["merged.bin", ".pth or .safetensors"]);
}

#[test]
fn pth_writer_round_trips_the_fixture() {
    let dir = TempDir::new().unwrap();
    let dict = load_state_dict(&fixture(BASE)).unwrap();
    let path = dir.path().join("copy.pth");
    write_pth(&path, &dict).unwrap();
    assert_eq!(load_state_dict(&path).unwrap(), dict);
    eprintln!(
        "tiny256: original .pth {} bytes, rewritten {} bytes",
        file_size(&fixture(BASE)),
        file_size(&path)
    );
}

#[test]
fn open_adapter_splits_base_and_peft_tensors() {
    let dir = TempDir::new().unwrap();
    let adapter = saved_adapter(dir.path(), &cfg(Method::LORA));
    let parts = open_adapter(&fixture(BASE), &adapter).unwrap();
    assert!(parts.peft.keys().all(|k| k.contains(".attn.qkv.linear_")));
    assert_eq!(parts.peft.len(), 4 * 4);
    assert!(parts.base.contains(TRAINED_DECODER_KEY));
}

fn python_has_segment_anything() -> bool {
    Command::new("python3")
        .args(["-c", "import segment_anything, safetensors"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `scripts/check_merged.py` (Meta's model, `load_state_dict(strict=True)`) on merged tiny
/// files in both formats. Skipped (passes with a note) when `python3 -c "import segment_anything"`
/// fails.
#[test]
fn check_merged_py_accepts_merged_files_skipped_without_segment_anything() {
    if !python_has_segment_anything() {
        eprintln!("SKIPPED: python3 with segment_anything and safetensors is not available");
        return;
    }
    let dir = TempDir::new().unwrap();
    let adapter = saved_adapter(dir.path(), &cfg(Method::LORA_COBOT));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/check_merged.py");
    let pth = dir.path().join("merged.pth");
    let st = dir.path().join("merged.safetensors");
    for out in [&pth, &st] {
        assert!(cli_merge(dir.path(), &adapter, out).status.success());
    }
    // The fixture rewritten by our .pth writer must equal the original under torch.load.
    let copy = dir.path().join("copy.pth");
    write_pth(&copy, &load_state_dict(&fixture(BASE)).unwrap()).unwrap();
    let checks: [(&Path, Option<PathBuf>); 3] = [
        (&pth, Some(st.clone())),
        (&st, None),
        (&copy, Some(fixture(BASE))),
    ];
    for (file, compare) in checks {
        let mut cmd = Command::new("python3");
        cmd.arg(&script).arg(file);
        if let Some(other) = &compare {
            cmd.arg("--compare").arg(other);
        }
        let run = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        eprintln!("{}", stdout.trim());
        assert!(
            run.status.success() && stdout.starts_with("OK"),
            "check_merged.py {}: {stdout}\n{}",
            file.display(),
            String::from_utf8_lossy(&run.stderr)
        );
    }
}

/// Full-size ViT-B (a random one: `python3 scripts/make_fixtures.py --skip-small --full-vit-b
/// /tmp/vitb`; or set `SAM_COBOT_VIT_B`): adapter file sizes for lora+cobot and adapter+cobot, and
/// a merged `.pth` checked by `scripts/check_merged.py` (`sam_model_registry["vit_b"](checkpoint=)`)
/// when Python has segment_anything. Ignored by default (≈ 400 MB of files, slow in debug).
#[test]
#[ignore]
fn vit_b_adapter_sizes_and_merged_pth() {
    let base = std::env::var_os("SAM_COBOT_VIT_B")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/vitb/sam_vit_b_random.pth"));
    if !base.exists() {
        eprintln!("SKIPPED: {} not found", base.display());
        return;
    }
    let dir = TempDir::new().unwrap();
    for method in [Method::LORA_COBOT, Method::ADAPTER_COBOT] {
        let c = cfg(method);
        let sam = Sam::from_state_dict(load_state_dict(&base).unwrap(), None, &device()).unwrap();
        assert_eq!(sam.config.variant(), "vit_b");
        let state = perturb(initial_state(&c, 768, 12, 1), 2, 0.01);
        let values: usize = state.iter().map(|(_, t)| t.numel()).sum();
        let sam = sam.attach_peft(c.clone(), state).unwrap();
        let adapter = dir
            .path()
            .join(format!("{}.safetensors", method.name().replace('+', "_")));
        save_adapter(&adapter, &sam, &base).unwrap();
        let stored = load_state_dict(&adapter).unwrap();
        let total: usize = stored.iter().map(|(_, t)| t.numel()).sum();
        let size = file_size(&adapter);
        eprintln!(
            "vit_b {method}: adapter {size} bytes = 4 x {total} values ({values} PEFT + {} decoder) + {} header, {} tensors",
            total - values,
            size as usize - 4 * total,
            stored.len()
        );
        if method == Method::LORA_COBOT {
            let merged = dir.path().join("sam_vit_b_merged.pth");
            let run = cli_merge_on(dir.path(), &base, &adapter, &merged);
            assert!(
                run.status.success(),
                "{}",
                String::from_utf8_lossy(&run.stderr)
            );
            eprintln!("merged vit_b .pth: {} bytes", file_size(&merged));
            if python_has_segment_anything() {
                let script =
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/check_merged.py");
                let run = Command::new("python3")
                    .arg(&script)
                    .arg(&merged)
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&run.stdout);
                eprintln!("{}", stdout.trim());
                assert!(
                    run.status.success() && stdout.starts_with("OK"),
                    "{stdout}\n{}",
                    String::from_utf8_lossy(&run.stderr)
                );
            }
        }
    }
}

/// A PEFT tensor that no fold consumes makes `merge` fail instead of vanishing from the output:
/// here COBOT's shared tensors stay while every block's LoRA module is taken out.
#[test]
fn merge_fails_on_a_peft_tensor_it_did_not_fold() {
    let mut sam = trained_model(&cfg(Method::LORA_COBOT), 5);
    merge(&sam).unwrap();
    for block in &mut sam.image_encoder.vit_mut().unwrap().blocks {
        block.peft = None;
    }
    let err = merge(&sam).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("was not folded"), "{err}");
    assert!(Method::LORA.foldable() && !Method::ADAPTER_COBOT.foldable());
}

/// `merge --image-size` writes a checkpoint native at that size: read back, its shapes name that
/// size (global relative-position tables of 2g − 1 rows), and it predicts there as the original
/// resized on the fly does; alone or with an adapter folded in.
#[test]
fn merge_writes_a_checkpoint_native_at_another_input_size() {
    let tmp = TempDir::new().unwrap();
    let base = fixture(BASE);
    let at = |sam: Sam| logits(&sam);
    let original =
        Sam::from_state_dict(load_state_dict(&base).unwrap(), Some(320), &device()).unwrap();
    let converted = tmp.path().join("tiny320.safetensors");
    // `merge --checkpoint base --image-size S --out FILE`.
    let convert = |size: &str, out: &Path| {
        sam_cobot(
            tmp.path(),
            &[
                os("merge"),
                os("--checkpoint"),
                base.as_os_str(),
                os("--image-size"),
                os(size),
                os("--out"),
                out.as_os_str(),
            ],
        )
    };
    let out = convert("320", &converted);
    assert!(out.status.success(), "{out:?}");
    let dict = load_state_dict(&converted).unwrap();
    assert_eq!(
        dict.get("image_encoder.pos_embed").unwrap().shape,
        [1, 20, 20, 64]
    );
    let native = Sam::from_state_dict(dict, None, &device()).unwrap();
    assert_eq!(native.image_size, 320);
    let global = &native.config.encoder.vit().unwrap().global_attn_indexes;
    assert!(!global.is_empty());
    let diff = max_abs_diff(&at(original), &at(native));
    println!("converted to 320 px: max |Δ logits| {diff:e}");
    assert!(diff < 1e-4, "{diff}");

    // With an adapter: the same model as merging at the native size and running at 320.
    let cfg = cfg(Method::LORA);
    let adapter = saved_adapter(tmp.path(), &cfg);
    let (both, plain) = (tmp.path().join("both.pth"), tmp.path().join("plain.pth"));
    for (out, extra) in [(&both, &[os("--image-size"), os("320")][..]), (&plain, &[])] {
        let result = cli_merge_with(tmp.path(), &base, &adapter, out, extra);
        assert!(result.status.success(), "{result:?}");
    }
    let load = |path: &Path, size| {
        Sam::from_state_dict(load_state_dict(path).unwrap(), size, &device()).unwrap()
    };
    let diff = max_abs_diff(&at(load(&both, None)), &at(load(&plain, Some(320))));
    assert!(diff < 1e-4, "{diff}");

    // A size the patches do not divide is refused, naming it; nothing is written.
    let bad = tmp.path().join("bad.safetensors");
    let out = convert("100", &bad);
    assert_cli_fails(&out, &["--image-size 100"]);
    assert!(!bad.exists());
}
