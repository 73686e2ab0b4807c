//! No command replaces a file the user did not ask it to: an input, another of its outputs, an
//! existing checkpoint or report without `--force`; and the messages of the commands a user
//! mistypes.

mod common;

use std::path::Path;
use std::process::Command;

use common::{fails, fixtures, succeeds};

fn sam_cobot(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sam-cobot"));
    cmd.args(args);
    cmd
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `predict` on the tiny fixture with one box; `extra` names the outputs.
fn predict(image: &Path, extra: &[&str]) -> Command {
    let checkpoint = fixtures().join("tiny256.pth");
    let mut cmd = sam_cobot(&[
        "predict",
        "--checkpoint",
        s(&checkpoint),
        "--image",
        s(image),
    ]);
    cmd.args(["--box", "10,10,100,100"]).args(extra);
    cmd
}

#[test]
fn predict_never_writes_over_its_input_or_its_other_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("a.png");
    std::fs::copy(fixtures().join("image_300x200.png"), &image).unwrap();
    let before = std::fs::read(&image).unwrap();
    let err = fails(&mut predict(&image, &["--out", s(&image)]));
    assert!(err.contains("--image") && err.contains("input"), "{err}");
    let same = tmp.path().join("./x/../a.png");
    std::fs::create_dir(tmp.path().join("x")).unwrap();
    fails(&mut predict(&image, &["--out", s(&same)]));
    let mask = tmp.path().join("m.png");
    let err = fails(&mut predict(
        &image,
        &["--out", s(&mask), "--overlay", s(&mask)],
    ));
    assert!(err.contains("--out writes that file too"), "{err}");
    let err = fails(&mut predict(
        &image,
        &["--out", s(&tmp.path().join("m.jpg"))],
    ));
    assert!(err.contains("name the file .png"), "{err}");
    assert_eq!(std::fs::read(&image).unwrap(), before);
    assert!(!mask.exists());
}

/// A mask-folder data set `dir` of one 40x30 image with one square object.
fn make_dataset(dir: &Path) {
    for sub in ["images", "masks"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let mut mask = image::GrayImage::new(40, 30);
    for (x, y, p) in mask.enumerate_pixels_mut() {
        p.0 = [if (10..30).contains(&x) && (5..25).contains(&y) {
            255
        } else {
            0
        }];
    }
    mask.save(dir.join("masks/a.png")).unwrap();
    image::RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])
    })
    .save(dir.join("images/a.png"))
    .unwrap();
}

/// An adapter trained for one step on the tiny fixture, in `dir/run`.
fn make_adapter(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("adapter-data");
    make_dataset(&data);
    let run = dir.join("run");
    let base = fixtures().join("tiny256.pth");
    succeeds(&mut sam_cobot(&[
        "train",
        "--checkpoint",
        s(&base),
        "--data",
        s(&data),
        "--method",
        "lora",
        "--epochs",
        "1",
        "--out",
        s(&run),
    ]));
    run.join("last/adapter.safetensors")
}

#[test]
fn eval_never_writes_into_the_data_set() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data);
    let before = std::fs::read(data.join("images/a.png")).unwrap();
    let checkpoint = fixtures().join("tiny256.pth");
    let images = data.join("images");
    let err = fails(&mut sam_cobot(&[
        "eval",
        "--checkpoint",
        s(&checkpoint),
        "--data",
        s(&data),
        "--overlays",
        "--out",
        s(&images),
    ]));
    assert!(err.contains("--out") && err.contains("--data"), "{err}");
    assert_eq!(std::fs::read(data.join("images/a.png")).unwrap(), before);

    // An earlier report is replaced only with --force, and the user's files beside it stay.
    let report = tmp.path().join("report");
    let boxfill = |extra: &[&str]| {
        let mut cmd = sam_cobot(&["eval", "--data", s(&data), "--baseline", "boxfill"]);
        cmd.args(["--out", s(&report)]).args(extra);
        cmd
    };
    succeeds(&mut boxfill(&[]));
    std::fs::write(report.join("notes.txt"), "mine").unwrap();
    let err = fails(&mut boxfill(&[]));
    assert!(err.contains("--force"), "{err}");
    succeeds(&mut boxfill(&["--force"]));
    assert!(report.join("metrics.json").is_file());
    assert_eq!(
        std::fs::read_to_string(report.join("notes.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn merge_and_init_refuse_to_replace_a_file_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("photo.png");
    std::fs::write(&png, "mine").unwrap();
    let err = fails(&mut sam_cobot(&[
        "init",
        "--model",
        "tiny",
        "--out",
        s(&png),
    ]));
    assert!(err.contains(".pth or .safetensors"), "{err}");
    // init follows the extension: .pth is a PyTorch zip archive.
    let pth = tmp.path().join("random.pth");
    succeeds(&mut sam_cobot(&[
        "init",
        "--model",
        "tiny",
        "--out",
        s(&pth),
    ]));
    assert!(std::fs::read(&pth).unwrap().starts_with(b"PK\x03\x04"));
    let before = std::fs::read(&pth).unwrap();
    let err = fails(&mut sam_cobot(&[
        "init",
        "--model",
        "tiny",
        "--seed",
        "1",
        "--out",
        s(&pth),
    ]));
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&pth).unwrap(), before);
    succeeds(&mut sam_cobot(&[
        "init",
        "--model",
        "tiny",
        "--seed",
        "1",
        "--out",
        s(&pth),
        "--force",
    ]));
    assert_ne!(std::fs::read(&pth).unwrap(), before);

    let base = fixtures().join("tiny256.pth");
    let adapter = make_adapter(tmp.path());
    let copy = tmp.path().join("base.pth");
    std::fs::copy(&base, &copy).unwrap();
    for out in [&copy, &adapter] {
        let err = fails(&mut sam_cobot(&[
            "merge",
            "--checkpoint",
            s(&copy),
            "--adapter",
            s(&adapter),
            "--out",
            s(out),
            "--force",
        ]));
        assert!(err.contains("refusing to overwrite an input"), "{err}");
    }
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&base).unwrap());
}

#[test]
fn sizes_are_checked_before_anything_is_allocated() {
    let tmp = tempfile::tempdir().unwrap();
    let image = fixtures().join("image_300x200.png");
    let out = tmp.path().join("m.png");
    for size in ["65536", "131072", "1048576"] {
        let err = fails(&mut predict(
            &image,
            &["--out", s(&out), "--image-size", size],
        ));
        assert!(
            err.contains(&format!("--image-size: input size {size} px")) && err.contains("GiB"),
            "{err}"
        );
    }
    let err = fails(&mut sam_cobot(&[
        "params", "--model", "tiny", "--rank", "100000",
    ]));
    assert!(
        err.contains("--rank 100000: at most the encoder's width 64"),
        "{err}"
    );
    // Counting never builds the tensors: the largest rank the width allows is counted at once.
    let text = succeeds(&mut sam_cobot(&[
        "params", "--model", "vit_h", "--rank", "1280", "--json",
    ]));
    assert!(text.contains("\"total\""), "{text}");
}

#[test]
fn messages_say_it_once_and_in_the_users_terms() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.png");
    // A PNG named .jpg is read by its bytes.
    let renamed = tmp.path().join("photo.jpg");
    std::fs::copy(fixtures().join("image_300x200.png"), &renamed).unwrap();
    succeeds(&mut predict(&renamed, &["--out", s(&out)]));
    // A broken file: one message, naming it, without the decoder's text twice.
    let broken = tmp.path().join("broken.png");
    std::fs::write(&broken, "not a png at all").unwrap();
    let err = fails(&mut predict(&broken, &["--out", s(&out)]));
    assert!(err.contains("broken.png"), "{err}");
    let line = err.lines().next().unwrap();
    for part in line.split(": ") {
        assert_eq!(line.matches(part).count(), 1, "{part:?} twice in {line}");
    }
    // A negative number after a space is a value, checked as one.
    let err = fails(&mut sam_cobot(&[
        "train",
        "--checkpoint",
        "x.pth",
        "--data",
        "d",
        "--lr",
        "-1",
        "--out",
        s(&tmp.path().join("run")),
    ]));
    assert!(err.contains("--lr -1: must be a finite number"), "{err}");
    // An adapter given as the checkpoint.
    let adapter = make_adapter(tmp.path());
    let err = fails(&mut sam_cobot(&[
        "predict",
        "--checkpoint",
        s(&adapter),
        "--image",
        s(&renamed),
        "--box",
        "1,1,50,50",
        "--out",
        s(&out),
    ]));
    assert!(
        err.contains("is a sam-cobot adapter") && err.contains("--adapter"),
        "{err}"
    );
}

/// Embeddings made with an adapter are refused by the base alone, and the other way round: a
/// saved embedding is never decoded by a model that did not make it.
#[test]
fn saved_embeddings_are_refused_by_another_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let adapter = make_adapter(tmp.path());
    let base = fixtures().join("tiny256.pth");
    let image = fixtures().join("image_300x200.png");
    let with = tmp.path().join("with.safetensors");
    succeeds(&mut sam_cobot(&[
        "embed",
        "--checkpoint",
        s(&base),
        "--adapter",
        s(&adapter),
        "--images",
        s(&image),
        "--out",
        s(&with),
    ]));
    let out = tmp.path().join("m.png");
    let err = fails(&mut predict(
        &image,
        &["--embeddings", s(&with), "--out", s(&out)],
    ));
    assert!(
        err.contains("adapter") && err.contains("no adapter"),
        "{err}"
    );
    let mut cmd = predict(
        &image,
        &[
            "--adapter",
            s(&adapter),
            "--embeddings",
            s(&with),
            "--out",
            s(&out),
        ],
    );
    succeeds(&mut cmd);
}
