//! COCO: a broken annotation is dropped on its own and named; the other objects of its image are
//! kept (issue 19, item 7); `eval` reports each object's score beside the means.

use std::fs;
use std::path::{Path, PathBuf};

use sam_cobot::data::{DataError, DataSource, Dataset};
use serde_json::{Value, json};

/// `root/images/<name>` (10x8 PNGs) + `root/instances.json` with these annotations.
fn coco_set(root: &Path, images: &[&str], annotations: Value) -> PathBuf {
    fs::create_dir_all(root.join("images")).unwrap();
    for name in images {
        image::RgbImage::from_fn(10, 8, |x, y| {
            image::Rgb([(x * 20) as u8, (y * 30) as u8, 7])
        })
        .save(root.join("images").join(name))
        .unwrap();
    }
    let json = root.join("instances.json");
    let file = json!({
        "images": images.iter().enumerate().map(|(i, n)| json!({
            "id": i as i64 + 1, "file_name": n, "width": 10, "height": 8})).collect::<Vec<_>>(),
        "annotations": annotations,
        "categories": [{"id": 3, "name": "ship"}],
    });
    fs::write(&json, serde_json::to_string_pretty(&file).unwrap()).unwrap();
    json
}

fn square() -> Value {
    json!([[1, 1, 6, 1, 6, 5, 1, 5]])
}

#[test]
fn a_broken_annotation_is_dropped_alone_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let json = coco_set(
        dir.path(),
        &["a.png", "b.png"],
        json!([
            {"id": 101, "image_id": 1, "category_id": 3, "segmentation": square(),
             "bbox": [1, 1, 5, 4], "iscrowd": 0},
            {"id": 102, "image_id": 1, "category_id": 3, "segmentation": [],
             "bbox": [2, 2, 3, 3], "iscrowd": 0},
            {"id": 103, "image_id": 99, "category_id": 3, "segmentation": square(),
             "bbox": [1, 1, 5, 4], "iscrowd": 0},
            // Without an id: named by its place in "annotations".
            {"image_id": 42, "category_id": 3, "segmentation": square(), "iscrowd": 0},
            // A crowd annotation of an unknown image is not used anyway: no message.
            {"id": 105, "image_id": 77, "category_id": 3, "segmentation": square(),
             "iscrowd": 1},
            // Image b: its only annotation has an unknown class.
            {"id": 106, "image_id": 2, "category_id": 9, "segmentation": square(),
             "iscrowd": 0},
        ]),
    );
    let ds = Dataset::open(&DataSource::new(&json)).unwrap();
    assert_eq!(ds.len(), 2);

    // Open time: the annotations that belong to no image.
    let w = ds.warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("instances.json")
            && w[0].contains("annotation id 103")
            && w[0].contains("image_id 99")
            && w[0].contains("matches no image"),
        "{}",
        w[0]
    );
    assert!(
        w[1].contains("annotation 3 of \"annotations\"") && w[1].contains("image_id 42"),
        "{}",
        w[1]
    );

    // Load time: the good object is kept, the empty segmentation is named.
    let loaded = ds.load_lenient(0).unwrap();
    assert_eq!(loaded.sample.name, "a.png");
    assert_eq!(loaded.sample.objects.len(), 1);
    let o = &loaded.sample.objects[0];
    assert_eq!(o.bbox, [1, 1, 6, 5]);
    assert_eq!(o.class, 1);
    assert_eq!(o.mask.dimensions(), (10, 8));
    assert_eq!(loaded.dropped.len(), 1);
    let m = loaded.dropped[0].to_string();
    assert!(
        matches!(loaded.dropped[0], DataError::Invalid { .. }),
        "{m}"
    );
    assert!(
        m.contains("instances.json")
            && m.contains("annotation id 102 (image a.png)")
            && m.contains("segmentation is an empty list"),
        "{m}"
    );

    // An image whose only annotation is broken is a sample without objects.
    let loaded = ds.load_lenient(1).unwrap();
    assert!(loaded.sample.objects.is_empty());
    assert_eq!(loaded.dropped.len(), 1);
    let m = loaded.dropped[0].to_string();
    assert!(
        matches!(loaded.dropped[0], DataError::UnknownClass { .. })
            && m.contains("annotation id 106")
            && m.contains("category_id 9"),
        "{m}"
    );

    // The strict form fails such an item with its (first) broken annotation.
    let e = ds.load(0).unwrap_err().to_string();
    assert!(e.contains("annotation id 102"), "{e}");
}

#[test]
fn every_broken_annotation_of_an_item_is_named_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let json = coco_set(
        dir.path(),
        &["a.png"],
        json!([
            {"id": 1, "image_id": 1, "category_id": 3, "segmentation": [], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "segmentation": square(),
             "bbox": [1, 1, 5, 4], "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 3, "iscrowd": 0},
            {"id": 4, "image_id": 1, "category_id": 3, "segmentation": square(),
             "bbox": [6, 1, 5, 4], "iscrowd": 0},
            {"id": 5, "image_id": 1, "category_id": 3, "segmentation": square(),
             "bbox": [1, 1, 0, 4], "iscrowd": 0},
            {"id": 6, "image_id": 1, "category_id": 3, "segmentation": square(),
             "iscrowd": 0},
        ]),
    );
    let ds = Dataset::open(&DataSource::new(&json)).unwrap();
    assert!(ds.warnings().is_empty());
    let loaded = ds.load_lenient(0).unwrap();
    // Objects 2 and 6 (box from the mask's extent).
    let boxes: Vec<[u32; 4]> = loaded.sample.objects.iter().map(|o| o.bbox).collect();
    assert_eq!(boxes, [[1, 1, 6, 5], [1, 1, 6, 5]]);
    let msgs: Vec<String> = loaded.dropped.iter().map(|e| e.to_string()).collect();
    assert_eq!(msgs.len(), 4, "{msgs:#?}");
    for (m, (id, why)) in msgs.iter().zip([
        (1, "empty list"),
        (3, "no segmentation"),
        (4, "outside the 10x8 image"),
        (5, "zero area"),
    ]) {
        assert!(
            m.contains(&format!("annotation id {id} (image a.png)")) && m.contains(why),
            "{m}"
        );
    }
    assert!(matches!(loaded.dropped[2], DataError::BoxOutside { .. }));
    assert!(matches!(loaded.dropped[3], DataError::EmptyBox { .. }));
}

#[test]
fn a_clean_data_set_has_no_messages() {
    let dir = tempfile::tempdir().unwrap();
    let json = coco_set(
        dir.path(),
        &["a.png"],
        json!([{"id": 1, "image_id": 1, "category_id": 3, "segmentation": square(),
                "iscrowd": 0}]),
    );
    let ds = Dataset::open(&DataSource::new(&json)).unwrap();
    assert!(ds.warnings().is_empty());
    let loaded = ds.load_lenient(0).unwrap();
    assert!(loaded.dropped.is_empty());
    assert_eq!(ds.load(0).unwrap(), loaded.sample);
}

/// `eval` scores the objects that are left and names each annotation it dropped.
#[test]
fn eval_names_each_dropped_annotation_and_scores_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let json = coco_set(
        dir.path(),
        &["a.png"],
        json!([
            {"id": 101, "image_id": 1, "category_id": 3, "segmentation": square(),
             "bbox": [1, 1, 5, 4], "iscrowd": 0},
            {"id": 102, "image_id": 1, "category_id": 3, "segmentation": [],
             "bbox": [2, 2, 3, 3], "iscrowd": 0},
            {"id": 103, "image_id": 99, "category_id": 3, "segmentation": square(),
             "bbox": [1, 1, 5, 4], "iscrowd": 0},
        ]),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sam-cobot"))
        .args(["eval", "--baseline", "boxfill", "--data"])
        .arg(&json)
        .arg("--out")
        .arg(dir.path().join("report"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 images, 1 objects"), "{text}");
    assert!(
        text.contains("annotation id 102") && text.contains("annotation id 103"),
        "{text}"
    );
}

/// `objects.csv` has one row per scored object, and its Dice column averages to the report's.
#[test]
fn eval_writes_each_objects_score() {
    let dir = tempfile::tempdir().unwrap();
    sam_cobot::data::scenes::write_coco(dir.path(), 3, 5, 64, 4).unwrap();
    let report = dir.path().join("report");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sam-cobot"))
        .args(["eval", "--baseline", "boxfill", "--data"])
        .arg(dir.path().join("annotations.json"))
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("metrics.json")).unwrap())
            .unwrap();
    let csv = std::fs::read_to_string(report.join("objects.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("image,object,class,area,x1,y1,x2,y2,dice,iou")
    );
    let dice: Vec<f64> = lines
        .map(|l| l.split(',').nth(8).unwrap().parse().unwrap())
        .collect();
    assert_eq!(dice.len() as u64, metrics["objects"].as_u64().unwrap());
    let mean = 100.0 * dice.iter().sum::<f64>() / dice.len() as f64;
    assert!(
        (mean - metrics["mean_dice"].as_f64().unwrap()).abs() < 1e-3,
        "{mean} against {}",
        metrics["mean_dice"]
    );
}
