//! `sam-cobot stats` on a generated mask-folder data set, and the training plot PNG.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{GrayImage, Rgb, RgbImage};
use sam_cobot::data::stats::image_stats;
use sam_cobot::data::{DataSource, Dataset};
use sam_cobot::train::plot::{PLOT_SIZE, write_training_plot};
use sam_cobot::train::run_state::EpochLog;
use serde_json::Value;

/// Two images with known pixels: `a` 3 × 2 of varied colours, `b` 2 × 2 of one colour.
fn images() -> Vec<(&'static str, RgbImage)> {
    let a = RgbImage::from_fn(3, 2, |x, y| {
        let k = (y * 3 + x) as u8;
        Rgb([
            k * 40,
            255 - k * 10,
            if k.is_multiple_of(2) { 0 } else { 255 },
        ])
    });
    let b = RgbImage::from_pixel(2, 2, Rgb([51, 102, 153]));
    vec![("a", a), ("b", b)]
}

/// images/ + masks/ with the images above (empty masks) and, with `bad`, an unreadable PNG.
fn mask_folder(root: &Path, bad: bool) -> PathBuf {
    let data = root.join("set");
    fs::create_dir_all(data.join("images")).unwrap();
    fs::create_dir_all(data.join("masks")).unwrap();
    for (name, img) in images() {
        img.save(data.join("images").join(format!("{name}.png")))
            .unwrap();
        GrayImage::new(img.width(), img.height())
            .save(data.join("masks").join(format!("{name}.png")))
            .unwrap();
    }
    if bad {
        fs::write(data.join("images/c.png"), b"not a png at all").unwrap();
        GrayImage::new(2, 2).save(data.join("masks/c.png")).unwrap();
    }
    data
}

/// Reference mean / population std on the 0–1 scale, per channel then pooled, by plain f64 sums.
fn reference() -> ([f64; 3], [f64; 3], f64, f64) {
    let mut per: [Vec<f64>; 3] = Default::default();
    for (_, img) in images() {
        for p in img.pixels() {
            for c in 0..3 {
                per[c].push(f64::from(p[c]) / 255.0);
            }
        }
    }
    let ms = |v: &[f64]| {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
        (m, var.sqrt())
    };
    let all: Vec<f64> = per.concat();
    let (gm, gs) = ms(&all);
    (
        std::array::from_fn(|c| ms(&per[c]).0),
        std::array::from_fn(|c| ms(&per[c]).1),
        gm,
        gs,
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn sam_cobot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sam-cobot"))
        .args(args)
        .output()
        .expect("run sam-cobot")
}

#[test]
fn library_stats_of_a_mask_folder_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let data = mask_folder(dir.path(), false);
    let ds = Dataset::open(&DataSource::new(&data)).unwrap();
    assert_eq!(ds.len(), 2);
    let s = image_stats((0..ds.len()).map(|i| ds.load(i).unwrap().image));
    let (mean, std, gm, gs) = reference();
    assert_eq!(s.pixels, 6 + 4);
    for c in 0..3 {
        assert!(
            close(s.mean[c], mean[c]) && close(s.std[c], std[c]),
            "{s:?}"
        );
    }
    assert!(close(s.grey_mean, gm) && close(s.grey_std, gs), "{s:?}");
    // Channel G of `b` alone would be 0.4; spot-check one hand-computed value: R of all ten
    // pixels is (0+40+80+120+160+200 + 4·51)/10/255.
    assert!(close(s.mean[0], (600.0 + 204.0) / 10.0 / 255.0));
}

#[test]
fn cli_json_counts_the_unreadable_image() {
    let dir = tempfile::tempdir().unwrap();
    let data = mask_folder(dir.path(), true);
    let out = sam_cobot(&["stats", "--data", data.to_str().unwrap(), "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(stderr.contains("c.png"), "stderr: {stderr}");
    assert!(stderr.contains("1 item(s) skipped"), "stderr: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v["images"], 2);
    assert_eq!(v["skipped"], 1);
    assert_eq!(v["pixels"], 10);
    let (mean, std, gm, gs) = reference();
    for c in 0..3 {
        assert!(close(v["mean"][c].as_f64().unwrap(), mean[c]), "{v}");
        assert!(close(v["std"][c].as_f64().unwrap(), std[c]), "{v}");
    }
    assert!(close(v["grey_mean"].as_f64().unwrap(), gm), "{v}");
    assert!(close(v["grey_std"].as_f64().unwrap(), gs), "{v}");
}

#[test]
fn cli_text_output_split_and_strict() {
    let dir = tempfile::tempdir().unwrap();
    let data = mask_folder(dir.path(), true);
    let data_s = data.to_str().unwrap();

    // --strict stops at the unreadable image, naming it.
    let out = sam_cobot(&["stats", "--data", data_s, "--strict"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("c.png"), "stderr: {stderr}");

    // A split with only `b`: one colour, std 0, pooled mean (51+102+153)/3/255 = 0.4.
    let split = dir.path().join("split.txt");
    fs::write(&split, "b\n").unwrap();
    let out = sam_cobot(&[
        "stats",
        "--data",
        data_s,
        "--format",
        "mask-folder",
        "--split",
        split.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 images, 4 pixels"), "{stdout}");
    assert!(stdout.contains("R: mean 0.2000  std 0.0000"), "{stdout}");
    assert!(stdout.contains("--mean 0.4000"), "{stdout}");
}

fn history(with_val: bool) -> Vec<EpochLog> {
    (1..=3)
        .map(|epoch| EpochLog {
            epoch,
            mean_loss: 1.0 / epoch as f64,
            val_dice: with_val.then_some(50.0 + 10.0 * epoch as f64),
            val_point_dice: None,
            seconds: 1.0,
            skipped_items: 0,
            non_finite_steps: 0,
        })
        .collect()
}

fn has_colour(img: &RgbImage, c: [u8; 3]) -> bool {
    img.pixels().any(|p| p.0 == c)
}

#[test]
fn training_plot_is_a_png_of_the_expected_size_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    for (with_val, name) in [(true, "with.png"), (false, "without.png")] {
        let path = dir.path().join(name);
        write_training_plot(&path, &history(with_val)).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
            .unwrap()
            .to_rgb8();
        assert_eq!(img.dimensions(), PLOT_SIZE);
        // The loss line (blue) is drawn; the Dice line (red) only with validation values.
        assert!(has_colour(&img, [31, 119, 180]));
        assert_eq!(has_colour(&img, [214, 39, 40]), with_val);
        // Text is drawn (anti-aliased glyphs give grey pixels, which lines in pure colours and
        // the black axes do not).
        assert!(
            img.pixels()
                .any(|p| p[0] == p[1] && p[1] == p[2] && p[0] > 0 && p[0] < 200)
        );
    }
    // Overwriting works too; the folder holds the two plots and nothing else.
    write_training_plot(&dir.path().join("with.png"), &history(true)).unwrap();
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["with.png", "without.png"]);
}

#[test]
fn training_plot_handles_empty_and_non_finite_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plot.png");
    write_training_plot(&path, &[]).unwrap();
    let mut h = history(true);
    h[1].mean_loss = f64::NAN;
    h[2].val_dice = None;
    write_training_plot(&path, &h).unwrap();
    let img = image::open(&path).unwrap();
    assert_eq!((img.width(), img.height()), PLOT_SIZE);
    // A missing folder is an error naming the file, and leaves nothing behind.
    let missing = dir.path().join("no/such/plot.png");
    let err = write_training_plot(&missing, &h).unwrap_err();
    assert!(format!("{err:#}").contains("plot.png"), "{err:#}");
}
