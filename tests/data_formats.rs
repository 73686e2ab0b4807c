//! Data-set readers: marine-debris, COCO, mask folders; detection; split lists; broken data;
//! COCO polygon / RLE decoding against pycocotools (tests/data/formats/coco_pycocotools.json,
//! made by scripts/make_coco_fixtures.py).
//!
//! Synthetic data is written to a temporary folder by each test. The tests at the end read the
//! real data sets in ../shared/datasets and skip (with a note) when that folder is absent;
//! `cargo test --test data_formats -- --ignored --nocapture` loads every item of every real set
//! and prints the figures.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use image::{GrayImage, Luma, Rgb, RgbImage};
use sam_cobot::data::coco::segmentation_to_rle;
use sam_cobot::data::{DataError, DataSource, Dataset, Format, Sample};
use sam_cobot::rle::Rle;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// helpers

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn save_gray(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    GrayImage::from_fn(w, h, |x, y| Luma([f(x, y)]))
        .save(path)
        .unwrap();
}

fn save_rgb(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_fn(w, h, |x, y| Rgb(f(x, y)))
        .save(path)
        .unwrap();
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn src(path: &Path) -> DataSource {
    DataSource {
        path: path.to_path_buf(),
        ..Default::default()
    }
}

fn open(s: &DataSource) -> Dataset {
    Dataset::open(s).unwrap_or_else(|e| panic!("open {}: {e}", s.path.display()))
}

fn load_err(ds: &Dataset, i: usize) -> (DataError, String) {
    match ds.load(i) {
        Ok(s) => panic!("item {i} ({}) loaded but should fail", s.name),
        Err(e) => {
            let msg = e.to_string();
            (e, msg)
        }
    }
}

fn count_on(m: &GrayImage) -> usize {
    m.pixels().filter(|p| p[0] == 255).count()
}

/// Every mask value is 0 or 255 and the target has the image's size.
fn check_sample_shape(s: &Sample) {
    for o in &s.objects {
        assert_eq!(o.mask.dimensions(), s.image.dimensions(), "{}", s.name);
        assert!(o.mask.pixels().all(|p| p[0] == 0 || p[0] == 255));
        let [x1, y1, x2, y2] = o.bbox;
        assert!(x1 < x2 && y1 < y2 && x2 <= s.image.width() && y2 <= s.image.height());
    }
}

// ---------------------------------------------------------------------------------------------
// marine-debris

fn md_xml(objects: &[(&str, i64, i64, i64, i64)]) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" ?>\n<annotation>\n\t<folder>Images</folder>\n\t<size>\
         <width>40</width><height>30</height><depth>1</depth></size>\n",
    );
    for (name, x, y, w, h) in objects {
        s.push_str(&format!(
            "\t<object>\n\t\t<name>{name}</name>\n\t\t<bndbox>\n\t\t\t<x>{x}</x>\n\t\t\t<y>{y}</y>\
             \n\t\t\t<w>{w}</w>\n\t\t\t<h>{h}</h>\n\t\t</bndbox>\n\t</object>\n"
        ));
    }
    s.push_str("</annotation>\n");
    s
}

/// A 40×30 sonar frame: mask has class 9 (Tire) in [5,15)×[4,12), class 2 (Can) in
/// [20,26)×[10,20), and a stray class-9 blob at [30,34)×[22,26) outside the Tire box.
fn md_item(root: &Path, stem: &str, objects: &[(&str, i64, i64, i64, i64)]) {
    save_gray(&root.join(format!("Images/{stem}.png")), 40, 30, |x, y| {
        ((x * 5 + y * 3) % 256) as u8
    });
    save_gray(&root.join(format!("Masks/{stem}.png")), 40, 30, |x, y| {
        if (5..15).contains(&x) && (4..12).contains(&y) {
            9
        } else if (20..26).contains(&x) && (10..20).contains(&y) {
            2
        } else if (30..34).contains(&x) && (22..26).contains(&y) {
            9
        } else {
            0
        }
    });
    write(
        &root.join(format!("BoxAnnotations/{stem}.xml")),
        &md_xml(objects),
    );
}

const MD_OK: &[(&str, i64, i64, i64, i64)] = &[("Tire", 4, 3, 12, 10), ("Can", 20, 10, 6, 10)];

fn md_set(root: &Path) {
    for stem in ["frame-2", "frame-10", "frame-1"] {
        md_item(root, stem, MD_OK);
    }
}

#[test]
fn marine_debris_reads_boxes_classes_and_box_restricted_targets() {
    let dir = tmp();
    md_set(dir.path());
    let ds = open(&src(dir.path()));
    assert_eq!(ds.format, Format::MarineDebris);
    assert_eq!(ds.classes.len(), 12);
    assert_eq!(ds.classes[0], "Background");
    assert_eq!(ds.classes[4], "Drink-carton");
    assert_eq!(ds.classes[11], "Wall");
    assert_eq!(ds.len(), 3);
    // Byte order of the file names.
    let names: Vec<&str> = (0..ds.len()).map(|i| ds.name(i)).collect();
    assert_eq!(names, ["frame-1", "frame-10", "frame-2"]);

    let s = ds.load(0).unwrap();
    check_sample_shape(&s);
    assert_eq!(s.name, "frame-1");
    assert_eq!(s.image.dimensions(), (40, 30));
    // Grey → three identical channels.
    let p = s.image.get_pixel(7, 3);
    assert_eq!((p[0], p[1], p[2]), (44, 44, 44));
    assert_eq!(s.objects.len(), 2);
    let tire = &s.objects[0];
    assert_eq!(tire.bbox, [4, 3, 16, 13]);
    assert_eq!(tire.class, 9);
    // (mask == 9) inside the box only: the stray class-9 blob outside the box is not included.
    assert_eq!(count_on(&tire.mask), 10 * 8);
    assert_eq!(tire.mask.get_pixel(5, 4)[0], 255);
    assert_eq!(tire.mask.get_pixel(31, 23)[0], 0);
    let can = &s.objects[1];
    assert_eq!((can.bbox, can.class), ([20, 10, 26, 20], 2));
    assert_eq!(count_on(&can.mask), 60);
}

#[test]
fn marine_debris_target_is_cut_to_the_box() {
    let dir = tmp();
    // Box covers only the left half of the Tire region: x in [5, 10).
    md_item(dir.path(), "a", &[("Tire", 0, 0, 10, 30)]);
    let s = open(&src(dir.path())).load(0).unwrap();
    assert_eq!(s.objects[0].bbox, [0, 0, 10, 30]);
    assert_eq!(count_on(&s.objects[0].mask), 5 * 8);
}

#[test]
fn marine_debris_box_touching_the_far_edges_is_valid() {
    let dir = tmp();
    md_item(dir.path(), "a", &[("Can", 0, 0, 40, 30)]);
    let s = open(&src(dir.path())).load(0).unwrap();
    assert_eq!(s.objects[0].bbox, [0, 0, 40, 30]);
}

#[test]
fn marine_debris_broken_items_fail_with_precise_errors() {
    let dir = tmp();
    let root = dir.path();
    md_item(root, "ok", MD_OK);
    md_item(
        root,
        "outside",
        &[("Tire", 4, 3, 12, 10), ("Can", 30, 10, 11, 5)],
    );
    md_item(root, "negative", &[("Can", -1, 10, 6, 5)]);
    md_item(root, "zero", &[("Can", 20, 10, 0, 5)]);
    md_item(root, "empty", &[("Bottle", 20, 10, 6, 10)]);
    md_item(root, "unknown", &[("Submarine", 20, 10, 6, 10)]);
    md_item(root, "badvalue", MD_OK);
    write(
        &root.join("BoxAnnotations/badvalue.xml"),
        &md_xml(&[("Can", 20, 10, 6, 10)]).replace("<w>6</w>", "<w>6.5</w>"),
    );
    md_item(root, "badxml", MD_OK);
    write(
        &root.join("BoxAnnotations/badxml.xml"),
        "<annotation><object>",
    );
    md_item(root, "noxml", MD_OK);
    fs::remove_file(root.join("BoxAnnotations/noxml.xml")).unwrap();
    md_item(root, "nomask", MD_OK);
    fs::remove_file(root.join("Masks/nomask.png")).unwrap();
    md_item(root, "corrupt", MD_OK);
    fs::write(
        root.join("Images/corrupt.png"),
        b"\x89PNG\r\n\x1a\n not really",
    )
    .unwrap();
    md_item(root, "badmask", MD_OK);
    fs::write(root.join("Masks/badmask.png"), b"garbage").unwrap();
    md_item(root, "size", MD_OK);
    save_gray(&root.join("Masks/size.png"), 41, 30, |_, _| 0);
    md_item(root, "rgbmask", MD_OK);
    save_rgb(&root.join("Masks/rgbmask.png"), 40, 30, |x, _| {
        [x as u8, 0, 0]
    });

    let ds = open(&src(root));
    let idx = |name: &str| (0..ds.len()).find(|&i| ds.name(i) == name).unwrap();
    assert!(ds.load(idx("ok")).is_ok());

    let (e, m) = load_err(&ds, idx("outside"));
    assert!(matches!(e, DataError::BoxOutside { .. }), "{m}");
    assert!(
        m.contains("BoxAnnotations/outside.xml") && m.contains("object 1 (Can)"),
        "{m}"
    );
    assert!(
        m.contains("x=30 y=10 w=11 h=5") && m.contains("40x30"),
        "{m}"
    );

    let (e, m) = load_err(&ds, idx("negative"));
    assert!(matches!(e, DataError::BoxOutside { .. }), "{m}");
    assert!(m.contains("x=-1"), "{m}");

    let (e, m) = load_err(&ds, idx("zero"));
    assert!(matches!(e, DataError::EmptyBox { .. }), "{m}");
    assert!(
        m.contains("zero.xml") && m.contains("object 0 (Can)") && m.contains("w=0"),
        "{m}"
    );

    let (e, m) = load_err(&ds, idx("empty"));
    assert!(matches!(e, DataError::EmptyMask { .. }), "{m}");
    assert!(
        m.contains("empty.xml") && m.contains("object 0 (Bottle)"),
        "{m}"
    );
    assert!(
        m.contains("Masks/empty.png") && m.contains("class 1"),
        "{m}"
    );

    let (e, m) = load_err(&ds, idx("unknown"));
    assert!(matches!(e, DataError::UnknownClass { .. }), "{m}");
    assert!(
        m.contains("unknown.xml") && m.contains("\"Submarine\""),
        "{m}"
    );
    assert!(m.contains("Standing-bottle"), "{m}");

    let (e, m) = load_err(&ds, idx("badvalue"));
    assert!(matches!(e, DataError::Invalid { .. }), "{m}");
    assert!(
        m.contains("badvalue.xml") && m.contains("<w>") && m.contains("6.5"),
        "{m}"
    );

    let (e, m) = load_err(&ds, idx("badxml"));
    assert!(matches!(e, DataError::Invalid { .. }), "{m}");
    assert!(m.contains("badxml.xml") && m.contains("bad XML"), "{m}");

    let (e, m) = load_err(&ds, idx("noxml"));
    assert!(matches!(e, DataError::MissingFile { .. }), "{m}");
    assert!(m.contains("BoxAnnotations/noxml.xml"), "{m}");

    let (e, m) = load_err(&ds, idx("nomask"));
    assert!(matches!(e, DataError::MissingFile { .. }), "{m}");
    assert!(m.contains("Masks/nomask.png"), "{m}");

    let (e, m) = load_err(&ds, idx("corrupt"));
    assert!(matches!(e, DataError::Image { .. }), "{m}");
    assert!(m.contains("Images/corrupt.png"), "{m}");

    let (e, m) = load_err(&ds, idx("badmask"));
    assert!(matches!(e, DataError::Image { .. }), "{m}");
    assert!(m.contains("Masks/badmask.png"), "{m}");

    let (e, m) = load_err(&ds, idx("size"));
    assert!(matches!(e, DataError::MaskSize { .. }), "{m}");
    assert!(
        m.contains("Masks/size.png is 41x30") && m.contains("Images/size.png is 40x30"),
        "{m}"
    );

    let (e, m) = load_err(&ds, idx("rgbmask"));
    assert!(matches!(e, DataError::Invalid { .. }), "{m}");
    assert!(
        m.contains("Masks/rgbmask.png") && m.contains("colour"),
        "{m}"
    );

    // Out of range is an error, not a panic.
    let (e, _) = load_err(&ds, ds.len());
    assert!(matches!(e, DataError::IndexOutOfRange { .. }));
}

#[test]
fn marine_debris_split_lists() {
    let dir = tmp();
    md_set(dir.path());
    write(
        &dir.path().join("train.txt"),
        "# a comment\nframe-2\n\n  frame-1.png  \r\nframe-99\nframe-10\n",
    );
    let ds = open(&DataSource {
        split: Some(dir.path().join("train.txt")),
        ..src(dir.path())
    });
    let names: Vec<&str> = (0..ds.len()).map(|i| ds.name(i)).collect();
    assert_eq!(names, ["frame-2", "frame-1", "frame-99", "frame-10"]);
    assert_eq!(ds.load(0).unwrap().name, "frame-2");
    assert_eq!(ds.load(1).unwrap().name, "frame-1");
    assert_eq!(ds.load(3).unwrap().name, "frame-10");
    // A listed name that does not exist fails at load, naming it and the split file.
    let (e, m) = load_err(&ds, 2);
    assert!(matches!(e, DataError::NotInDataset { .. }), "{m}");
    assert!(m.contains("\"frame-99\"") && m.contains("train.txt"), "{m}");
    assert!(m.contains("Images"), "{m}");
    assert_eq!(ds.missing(), ["frame-99"]);
    let report = ds.split_report().unwrap();
    assert!(
        report.contains("4 names, 1 not in") && report.contains("frame-99"),
        "{report}"
    );

    // A split whose names are all missing, or that lists none, fails at open.
    write(
        &dir.path().join("none.txt"),
        "frame-98
frame-99
",
    );
    write(&dir.path().join("empty.txt"), "# nothing\n\n");
    for (file, says) in [
        ("none.txt", "none of the 2 names"),
        ("empty.txt", "lists no names"),
    ] {
        let e = Dataset::open(&DataSource {
            split: Some(dir.path().join(file)),
            ..src(dir.path())
        })
        .unwrap_err();
        assert!(
            e.to_string().contains(says) && e.to_string().contains(file),
            "{e}"
        );
    }

    // A split file that does not exist fails at open.
    let e = Dataset::open(&DataSource {
        split: Some(dir.path().join("nope.txt")),
        ..src(dir.path())
    })
    .unwrap_err();
    assert!(matches!(e, DataError::SplitFileMissing { .. }), "{e}");
    assert!(e.to_string().contains("nope.txt"), "{e}");
}

#[test]
fn marine_debris_forced_format_on_a_wrong_folder_names_what_is_missing() {
    let dir = tmp();
    fs::create_dir_all(dir.path().join("Images")).unwrap();
    fs::create_dir_all(dir.path().join("Masks")).unwrap();
    let e = Dataset::open(&DataSource {
        format: Some(Format::MarineDebris),
        ..src(dir.path())
    })
    .unwrap_err();
    assert!(e.to_string().contains("BoxAnnotations/ is missing"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// COCO: decoding against pycocotools

fn fixtures() -> Vec<Value> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/formats/coco_pycocotools.json");
    let v: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    v["cases"].as_array().unwrap().clone()
}

#[test]
fn coco_decoding_matches_pycocotools_pixel_for_pixel() {
    let cases = fixtures();
    assert!(cases.len() >= 30);
    let mut polygons = 0;
    let mut compressed = 0;
    let mut uncompressed = 0;
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let h = c["h"].as_u64().unwrap() as u32;
        let w = c["w"].as_u64().unwrap() as u32;
        let seg = &c["segmentation"];
        match seg {
            Value::Array(_) => polygons += 1,
            Value::Object(o) if o["counts"].is_string() => compressed += 1,
            _ => uncompressed += 1,
        }
        let expected = Rle::from_string(c["expected"]["counts"].as_str().unwrap().as_bytes(), h, w)
            .unwrap()
            .decode()
            .unwrap();
        let ours = segmentation_to_rle(seg, h, w)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .decode()
            .unwrap();
        let diff = ours.iter().zip(&expected).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "{name}: {diff} pixels differ from pycocotools");
        let area = ours.iter().filter(|&&b| b == 1).count() as u64;
        assert_eq!(area, c["expected"]["area"].as_u64().unwrap(), "{name}");
        // The rasteriser's own RLE string equals pycocotools' frPyObjects output.
        if let Some(s) = c.get("poly_string").and_then(Value::as_str) {
            let coords: Vec<f64> = seg[0]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let rle = Rle::from_polygon(&coords, h, w);
            assert_eq!(rle.to_string_compressed(), s, "{name}: RLE string");
        }
        // Our string encoder reproduces pycocotools' for the compressed cases.
        if let Some(s) = seg.get("counts").and_then(Value::as_str) {
            let rle = Rle::from_string(s.as_bytes(), h, w).unwrap();
            assert_eq!(rle.to_string_compressed(), s, "{name}: re-encoded string");
        }
    }
    assert!(polygons >= 20 && compressed >= 5 && uncompressed >= 4);
}

#[test]
fn rle_string_and_count_errors() {
    // Counts [3, 2, 4] on a 3×3 image.
    let ok = Rle {
        h: 3,
        w: 3,
        counts: vec![3, 2, 4],
    };
    let s = ok.to_string_compressed();
    assert_eq!(Rle::from_string(s.as_bytes(), 3, 3).unwrap(), ok);
    assert_eq!(
        ok.decode().unwrap(),
        vec![0, 0, 0, 1, 1, 0, 0, 0, 0],
        "column-major runs"
    );
    assert!(matches!(
        Rle::from_string(b"3 2", 3, 3),
        Err(sam_cobot::rle::RleError::BadChar { position: 1, .. })
    ));
    // 0x20 set on the last character: the number never ends.
    assert!(Rle::from_string(b"P", 3, 3).is_err());
    let short = Rle {
        h: 3,
        w: 3,
        counts: vec![3, 2],
    };
    assert!(short.decode().unwrap_err().to_string().contains("5 pixels"));
}

// ---------------------------------------------------------------------------------------------
// COCO: data sets

/// SSDD-like layout: annotations/instances_train.json + train/<name>.jpg.
fn coco_set(root: &Path, annotations: Value, images: &[(&str, u32, u32)]) -> PathBuf {
    for (name, w, h) in images {
        save_rgb(&root.join("train").join(name), *w, *h, |x, y| {
            [(x * 7) as u8, (y * 5) as u8, 100]
        });
    }
    let json = root.join("annotations/instances_train.json");
    let file = json!({
        "images": images.iter().enumerate().map(|(i, (n, w, h))| json!({
            "id": i as i64 + 10, "file_name": n, "width": w, "height": h})).collect::<Vec<_>>(),
        "annotations": annotations,
        "categories": [{"id": 7, "name": "boat"}, {"id": 2, "name": "ship", "supercategory": null}],
    });
    write(&json, &serde_json::to_string_pretty(&file).unwrap());
    json
}

fn ann(id: i64, image_id: i64, cat: i64, seg: Value, bbox: Value) -> Value {
    json!({"id": id, "image_id": image_id, "category_id": cat, "segmentation": seg,
           "bbox": bbox, "iscrowd": 0, "area": 1.0})
}

#[test]
fn coco_reads_polygons_rle_classes_boxes_and_skips_crowd() {
    let dir = tmp();
    let poly = json!([[2.0, 2.0, 9.0, 2.0, 9.0, 7.0, 2.0, 7.0]]);
    // 4×5 block at x 3..7, y 1..6 as an uncompressed RLE on a 12×10 (w×h) image.
    let mut bits = vec![0u8; 120];
    for x in 3..7 {
        for y in 1..6 {
            bits[x * 10 + y] = 1;
        }
    }
    let rle = Rle::from_column_major(&bits, 10, 12);
    let (counts, rle_c) = (rle.counts.clone(), rle.to_string_compressed());
    let annotations = json!([
        ann(1, 10, 2, poly.clone(), json!([2.0, 2.0, 7.0, 5.0])),
        ann(2, 10, 7, json!({"counts": counts, "size": [10, 12]}), json!([3, 1, 4, 5])),
        {"id": 3, "image_id": 10, "category_id": 2, "iscrowd": 1,
         "segmentation": {"counts": counts, "size": [10, 12]}, "bbox": [3, 1, 4, 5]},
        ann(4, 11, 2, json!({"counts": rle_c, "size": [10, 12]}), json!([2.5, 0.5, 4.2, 5.0])),
        {"id": 5, "image_id": 11, "category_id": 7, "segmentation": poly, "iscrowd": 0},
        ann(6, 999, 2, json!([[0, 0, 1, 0, 1, 1]]), json!([0, 0, 1, 1])),
    ]);
    let json = coco_set(
        dir.path(),
        annotations,
        &[("a.jpg", 12, 10), ("b.jpg", 12, 10), ("c.jpg", 12, 10)],
    );
    let ds = open(&src(&json));
    assert_eq!(ds.format, Format::Coco);
    // background, then categories in id order (2 ship, 7 boat).
    assert_eq!(ds.classes, ["background", "ship", "boat"]);
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.name(1), "b.jpg");

    let a = ds.load(0).unwrap();
    check_sample_shape(&a);
    assert_eq!(a.name, "a.jpg");
    assert_eq!(a.objects.len(), 2, "crowd annotation skipped");
    let o = &a.objects[0];
    assert_eq!((o.bbox, o.class), ([2, 2, 9, 7], 1));
    // pycocotools fills pixel centres 2..=8 × 2..=6 of this polygon: 7 × 5; not box-restricted.
    assert_eq!(count_on(&o.mask), 35);
    assert_eq!(o.mask.get_pixel(2, 2)[0], 255);
    assert_eq!(o.mask.get_pixel(9, 7)[0], 0);
    let o = &a.objects[1];
    assert_eq!((o.bbox, o.class), ([3, 1, 7, 6], 2));
    assert_eq!(count_on(&o.mask), 20);
    assert_eq!(o.mask.get_pixel(3, 1)[0], 255);
    assert_eq!(o.mask.get_pixel(6, 5)[0], 255);
    assert_eq!(o.mask.get_pixel(7, 5)[0], 0);

    let b = ds.load(1).unwrap();
    assert_eq!(b.objects.len(), 2);
    // Fractional box: floor of the start, ceil of the end: [2.5, 0.5, 6.7, 5.5] → [2, 0, 7, 6].
    assert_eq!(b.objects[0].bbox, [2, 0, 7, 6]);
    assert_eq!(count_on(&b.objects[0].mask), 20, "compressed RLE");
    // No bbox: the mask's extent.
    assert_eq!((b.objects[1].bbox, b.objects[1].class), ([2, 2, 9, 7], 2));

    // An image without annotations is an item without objects.
    assert!(ds.load(2).unwrap().objects.is_empty());
}

#[test]
fn coco_image_folder_rules_and_split() {
    let dir = tmp();
    let json = coco_set(
        dir.path(),
        json!([ann(
            1,
            10,
            2,
            json!([[1, 1, 5, 1, 5, 5, 1, 5]]),
            json!([1, 1, 4, 4])
        )]),
        &[("a.jpg", 8, 8), ("b.jpg", 8, 8)],
    );
    // Default: annotations/instances_train.json → ../train/.
    assert_eq!(open(&src(&json)).load(0).unwrap().objects.len(), 1);
    // images/ beside the annotations folder wins over train/.
    fs::rename(dir.path().join("train"), dir.path().join("images")).unwrap();
    assert_eq!(
        open(&src(&json)).load(0).unwrap().image.dimensions(),
        (8, 8)
    );
    // Explicit folder.
    fs::rename(dir.path().join("images"), dir.path().join("pics")).unwrap();
    let e = Dataset::open(&src(&json)).unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("instances_train.json") && m.contains("no image folder"),
        "{m}"
    );
    assert!(m.contains("\"a.jpg\"") && m.contains("train"), "{m}");
    let with_images = DataSource {
        images: Some(dir.path().join("pics")),
        ..src(&json)
    };
    let ds = open(&with_images);
    assert!(ds.load(1).unwrap().objects.is_empty());
    let e = Dataset::open(&DataSource {
        images: Some(dir.path().join("nope")),
        ..src(&json)
    })
    .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");

    // Split: by file_name or stem, in that order; a missing name fails at load.
    write(&dir.path().join("s.txt"), "b\na.jpg\nzzz.jpg\n");
    let ds = open(&DataSource {
        split: Some(dir.path().join("s.txt")),
        ..with_images.clone()
    });
    let names: Vec<&str> = (0..ds.len()).map(|i| ds.name(i)).collect();
    assert_eq!(names, ["b.jpg", "a.jpg", "zzz.jpg"]);
    assert_eq!(ds.load(1).unwrap().objects.len(), 1);
    let (e, m) = load_err(&ds, 2);
    assert!(matches!(e, DataError::NotInDataset { .. }), "{m}");
    assert!(
        m.contains("zzz.jpg") && m.contains("s.txt") && m.contains("instances_train.json"),
        "{m}"
    );
}

#[test]
fn coco_broken_items_fail_with_precise_errors() {
    let dir = tmp();
    let sq = json!([[1, 1, 5, 1, 5, 5, 1, 5]]);
    let images = [
        ("ok.jpg", 8, 8),
        ("unknown_cat.jpg", 8, 8),
        ("outside.jpg", 8, 8),
        ("zero.jpg", 8, 8),
        ("empty.jpg", 8, 8),
        ("rle_size.jpg", 8, 8),
        ("rle_len.jpg", 8, 8),
        ("missing.jpg", 8, 8),
        ("json_size.jpg", 8, 8),
        ("short_poly.jpg", 8, 8),
        ("corrupt.jpg", 8, 8),
        ("negative.jpg", 8, 8),
    ];
    let annotations = json!([
        ann(1, 10, 2, sq.clone(), json!([1, 1, 4, 4])),
        ann(2, 11, 5, sq.clone(), json!([1, 1, 4, 4])),
        ann(3, 12, 2, sq.clone(), json!([5, 1, 3.5, 4])),
        ann(4, 13, 2, sq.clone(), json!([1, 1, 0, 4])),
        ann(
            5,
            14,
            2,
            json!([[3.1, 3.1, 3.3, 3.1, 3.3, 3.3]]),
            json!([3, 3, 1, 1])
        ),
        ann(
            6,
            15,
            2,
            json!({"counts": [64], "size": [8, 9]}),
            json!([1, 1, 4, 4])
        ),
        ann(
            7,
            16,
            2,
            json!({"counts": [10, 5, 10], "size": [8, 8]}),
            json!([1, 1, 4, 4])
        ),
        ann(8, 17, 2, sq.clone(), json!([1, 1, 4, 4])),
        ann(9, 18, 2, sq.clone(), json!([1, 1, 4, 4])),
        ann(10, 19, 2, json!([[1, 1, 5, 1]]), json!([1, 1, 4, 4])),
        ann(11, 20, 2, sq.clone(), json!([1, 1, 4, 4])),
        ann(12, 21, 2, sq.clone(), json!([-0.5, 1, 4, 4])),
    ]);
    let json = coco_set(dir.path(), annotations, &images);
    fs::remove_file(dir.path().join("train/missing.jpg")).unwrap();
    fs::write(dir.path().join("train/corrupt.jpg"), b"\xff\xd8 no jpeg").unwrap();
    save_rgb(&dir.path().join("train/json_size.jpg"), 9, 8, |_, _| {
        [0, 0, 0]
    });
    let ds = open(&src(&json));
    let idx = |name: &str| (0..ds.len()).find(|&i| ds.name(i) == name).unwrap();
    assert_eq!(ds.load(idx("ok.jpg")).unwrap().objects.len(), 1);

    let (e, m) = load_err(&ds, idx("unknown_cat.jpg"));
    assert!(matches!(e, DataError::UnknownClass { .. }), "{m}");
    assert!(
        m.contains("instances_train.json") && m.contains("annotation id 2"),
        "{m}"
    );
    assert!(m.contains("category_id 5") && m.contains("2 (ship)"), "{m}");

    let (e, m) = load_err(&ds, idx("outside.jpg"));
    assert!(matches!(e, DataError::BoxOutside { .. }), "{m}");
    assert!(
        m.contains("annotation id 3 (image outside.jpg)") && m.contains("3.5") && m.contains("8x8"),
        "{m}"
    );

    let (e, m) = load_err(&ds, idx("negative.jpg"));
    assert!(matches!(e, DataError::BoxOutside { .. }), "{m}");
    assert!(m.contains("-0.5"), "{m}");

    let (e, m) = load_err(&ds, idx("zero.jpg"));
    assert!(matches!(e, DataError::EmptyBox { .. }), "{m}");
    assert!(m.contains("annotation id 4"), "{m}");

    let (e, m) = load_err(&ds, idx("empty.jpg"));
    assert!(matches!(e, DataError::EmptyMask { .. }), "{m}");
    assert!(
        m.contains("annotation id 5") && m.contains("instances_train.json"),
        "{m}"
    );

    let (e, m) = load_err(&ds, idx("rle_size.jpg"));
    assert!(matches!(e, DataError::Invalid { .. }), "{m}");
    assert!(
        m.contains("annotation id 6") && m.contains("[8, 9]") && m.contains("[8, 8]"),
        "{m}"
    );

    let (_, m) = load_err(&ds, idx("rle_len.jpg"));
    assert!(
        m.contains("annotation id 7") && m.contains("25 pixels") && m.contains("64"),
        "{m}"
    );

    let (e, m) = load_err(&ds, idx("missing.jpg"));
    assert!(matches!(e, DataError::MissingFile { .. }), "{m}");
    assert!(m.contains("train/missing.jpg"), "{m}");

    let (e, m) = load_err(&ds, idx("json_size.jpg"));
    assert!(matches!(e, DataError::Invalid { .. }), "{m}");
    assert!(
        m.contains("json_size.jpg") && m.contains("8x8 in the JSON but 9x8"),
        "{m}"
    );

    let (_, m) = load_err(&ds, idx("short_poly.jpg"));
    assert!(
        m.contains("annotation id 10") && m.contains("4 coordinates"),
        "{m}"
    );

    let (e, m) = load_err(&ds, idx("corrupt.jpg"));
    assert!(matches!(e, DataError::Image { .. }), "{m}");
    assert!(m.contains("train/corrupt.jpg"), "{m}");

    // A structurally broken JSON fails at open, naming the file.
    let bad = dir.path().join("annotations/bad.json");
    write(&bad, "{\"images\": [{\"id\": 1}]}");
    let e = Dataset::open(&src(&bad)).unwrap_err();
    assert!(
        e.to_string().contains("bad.json") && e.to_string().contains("file_name"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// mask folders

fn blobs(x: u32, y: u32) -> u8 {
    let in_a = (2..10).contains(&x) && (3..9).contains(&y);
    // Diagonal touch at (12,9)-(13,10): 8-connected to the second block.
    let in_b = ((14..20).contains(&x) && (10..16).contains(&y)) || (x == 13 && y == 9);
    let speck = (24..26).contains(&x) && (2..4).contains(&y); // 4 px
    if in_a || in_b || speck { 255 } else { 0 }
}

#[test]
fn mask_folder_components_boxes_threshold_and_min_area() {
    let dir = tmp();
    let root = dir.path();
    save_rgb(&root.join("images/p1.png"), 30, 20, |x, y| {
        [x as u8, y as u8, 9]
    });
    save_gray(&root.join("masks/p1.png"), 30, 20, blobs);
    // Grey mask with values around the threshold.
    save_rgb(&root.join("images/p2.png"), 30, 20, |_, _| [1, 2, 3]);
    save_gray(&root.join("masks/p2.png"), 30, 20, |x, y| {
        if (5..8).contains(&x) && (5..15).contains(&y) {
            if x == 5 { 127 } else { 128 }
        } else {
            40
        }
    });
    let ds = open(&src(root));
    assert_eq!(ds.format, Format::MaskFolder);
    assert_eq!(ds.classes, ["background", "object"]);
    assert_eq!((ds.len(), ds.name(0)), (2, "p1"));

    let s = ds.load(0).unwrap();
    check_sample_shape(&s);
    assert_eq!(s.image.get_pixel(3, 4).0, [3, 4, 9]);
    // The 4-pixel speck is dropped (min_object_area 16 by default).
    assert_eq!(s.objects.len(), 2);
    assert_eq!((s.objects[0].bbox, s.objects[0].class), ([2, 3, 10, 9], 1));
    assert_eq!(count_on(&s.objects[0].mask), 48);
    assert_eq!(
        s.objects[1].bbox,
        [13, 9, 20, 16],
        "diagonal pixel joins (8-connected)"
    );
    assert_eq!(count_on(&s.objects[1].mask), 37);
    assert_eq!(
        s.objects[1].mask.get_pixel(3, 4)[0],
        0,
        "target = that component only"
    );

    let s = ds.load(1).unwrap();
    assert_eq!(s.objects.len(), 1);
    assert_eq!(s.objects[0].bbox, [6, 5, 8, 15], ">= 128 is foreground");

    let keep_all = DataSource {
        min_object_area: 1,
        mask_threshold: 30,
        ..src(root)
    };
    let ds = open(&keep_all);
    assert_eq!(ds.load(0).unwrap().objects.len(), 3);
    let s = ds.load(1).unwrap();
    assert_eq!((s.objects.len(), s.objects[0].bbox), (1, [0, 0, 30, 20]));
}

#[test]
fn mask_folder_jpeg_masks_and_split() {
    let dir = tmp();
    let root = dir.path();
    for stem in ["k1", "k2"] {
        save_rgb(&root.join(format!("images/{stem}.jpg")), 40, 30, |x, y| {
            [x as u8 * 3, y as u8 * 4, 50]
        });
        let m = RgbImage::from_fn(40, 30, |x, y| {
            let v = blobs(x, y);
            Rgb([v, v, v])
        });
        fs::create_dir_all(root.join("masks")).unwrap();
        m.save(root.join(format!("masks/{stem}.jpg"))).unwrap();
    }
    write(&root.join("split.txt"), "k2.jpg\nk1\n");
    let ds = open(&DataSource {
        split: Some(root.join("split.txt")),
        ..src(root)
    });
    assert_eq!((ds.name(0), ds.name(1)), ("k2", "k1"));
    let s = ds.load(0).unwrap();
    check_sample_shape(&s);
    assert_eq!(
        s.objects.len(),
        2,
        "JPEG ringing must not split or add objects"
    );
    let close = |a: [u32; 4], b: [u32; 4]| a.iter().zip(&b).all(|(p, q)| p.abs_diff(*q) <= 1);
    assert!(
        close(s.objects[0].bbox, [2, 3, 10, 9]),
        "{:?}",
        s.objects[0].bbox
    );
    assert!(
        close(s.objects[1].bbox, [13, 9, 20, 16]),
        "{:?}",
        s.objects[1].bbox
    );
}

#[test]
fn mask_folder_broken_items() {
    let dir = tmp();
    let root = dir.path();
    save_rgb(&root.join("images/nomask.png"), 10, 10, |_, _| [0, 0, 0]);
    save_gray(&root.join("masks/other.png"), 10, 10, |_, _| 255);
    save_rgb(&root.join("images/size.png"), 10, 10, |_, _| [0, 0, 0]);
    save_gray(&root.join("masks/size.png"), 10, 11, |_, _| 255);
    save_rgb(&root.join("images/twice.png"), 10, 10, |_, _| [0, 0, 0]);
    save_gray(&root.join("masks/twice.png"), 10, 10, |_, _| 255);
    save_gray(&root.join("masks/twice.jpg"), 10, 10, |_, _| 255);
    save_rgb(&root.join("images/blank.png"), 10, 10, |_, _| [0, 0, 0]);
    save_gray(&root.join("masks/blank.png"), 10, 10, |_, _| 0);
    fs::write(root.join("images/corrupt.png"), b"nope").unwrap();
    save_gray(&root.join("masks/corrupt.png"), 10, 10, |_, _| 255);
    let ds = open(&src(root));
    let idx = |name: &str| (0..ds.len()).find(|&i| ds.name(i) == name).unwrap();

    let (e, m) = load_err(&ds, idx("nomask"));
    assert!(matches!(e, DataError::MissingFile { .. }), "{m}");
    assert!(
        m.contains("masks/nomask.*") && m.contains("images/nomask.png"),
        "{m}"
    );
    let (e, m) = load_err(&ds, idx("size"));
    assert!(matches!(e, DataError::MaskSize { .. }), "{m}");
    assert!(m.contains("masks/size.png is 10x11"), "{m}");
    let (_, m) = load_err(&ds, idx("twice"));
    assert!(m.contains("twice.jpg") && m.contains("twice.png"), "{m}");
    let (e, m) = load_err(&ds, idx("corrupt"));
    assert!(
        matches!(e, DataError::Image { .. }) && m.contains("images/corrupt.png"),
        "{m}"
    );
    // An empty mask is a sample without objects.
    assert!(ds.load(idx("blank")).unwrap().objects.is_empty());
}

// ---------------------------------------------------------------------------------------------
// detection and formats

#[test]
fn detection_and_format_names() {
    assert_eq!(
        "marine-debris".parse::<Format>().unwrap(),
        Format::MarineDebris
    );
    assert_eq!("coco".parse::<Format>().unwrap(), Format::Coco);
    assert_eq!("mask-folder".parse::<Format>().unwrap(), Format::MaskFolder);
    let e = "voc".parse::<Format>().unwrap_err().to_string();
    assert!(e.contains("\"voc\"") && e.contains("mask-folder"), "{e}");
    assert_eq!(Format::MaskFolder.to_string(), "mask-folder");

    let dir = tmp();
    let root = dir.path();
    let e = Dataset::open(&src(&root.join("absent"))).unwrap_err();
    assert!(
        matches!(e, DataError::NotFound { .. }) && e.to_string().contains("absent"),
        "{e}"
    );

    fs::create_dir_all(root.join("empty/annotations")).unwrap();
    write(&root.join("empty/annotations/x.json"), "{}");
    let e = Dataset::open(&src(&root.join("empty")))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Images/ + Masks/ + BoxAnnotations/") && e.contains("images/ + masks/"),
        "{e}"
    );
    assert!(
        e.contains(".json") && e.contains("annotations/x.json"),
        "{e}"
    );

    write(&root.join("notes.txt"), "x");
    let e = Dataset::open(&src(&root.join("notes.txt")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("notes.txt") && e.contains("not .json"), "{e}");

    md_item(&root.join("md"), "a", MD_OK);
    assert_eq!(open(&src(&root.join("md"))).format, Format::MarineDebris);
    save_gray(&root.join("mf/images/a.png"), 4, 4, |_, _| 0);
    save_gray(&root.join("mf/masks/a.png"), 4, 4, |_, _| 0);
    assert_eq!(open(&src(&root.join("mf"))).format, Format::MaskFolder);
    // Forcing a format overrides detection.
    let e = Dataset::open(&DataSource {
        format: Some(Format::MaskFolder),
        ..src(&root.join("md"))
    })
    .unwrap_err();
    assert!(e.to_string().contains("images/ is missing"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// real data sets (../shared/datasets; skipped when absent)

fn shared(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/datasets")
        .join(name);
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("note: {} absent, real-data check skipped", p.display());
        None
    }
}

/// Opens and loads items (all, or a spread of `limit`), returns (images, objects, per class,
/// failures, seconds).
fn sweep(
    src: &DataSource,
    limit: Option<usize>,
) -> (Dataset, usize, usize, Vec<usize>, Vec<String>, f64) {
    let t = Instant::now();
    let ds = open(src);
    let n = ds.len();
    let picks: Vec<usize> = match limit {
        None => (0..n).collect(),
        Some(k) => (0..k.min(n)).map(|j| j * n / k.min(n).max(1)).collect(),
    };
    let mut per_class = vec![0; ds.classes.len()];
    let (mut images, mut objects, mut failures) = (0, 0, Vec::new());
    for i in picks {
        match ds.load(i) {
            Ok(s) => {
                check_sample_shape(&s);
                images += 1;
                objects += s.objects.len();
                for o in &s.objects {
                    per_class[o.class] += 1;
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    (
        ds,
        images,
        objects,
        per_class,
        failures,
        t.elapsed().as_secs_f64(),
    )
}

fn report(label: &str, ds: &Dataset, r: &(usize, usize, Vec<usize>, Vec<String>, f64)) {
    let classes: Vec<String> = ds
        .classes
        .iter()
        .zip(&r.2)
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    eprintln!(
        "{label}: {} items, {} loaded, {} objects [{}], {} failed, {:.2} s (open + load)",
        ds.len(),
        r.0,
        r.1,
        classes.join(", "),
        r.3.len(),
        r.4
    );
    for f in r.3.iter().take(5) {
        eprintln!("  failed: {f}");
    }
}

fn md_real(full: bool) {
    // Reads ../shared/datasets/marine-debris-fls (local subset: 450 / 180 / 244 of SonarSAM's
    // 1120 / 374 / 374; the rest is held out, see its README).
    let Some(root) = shared("marine-debris-fls") else {
        return;
    };
    let expected = [("train", 450, 957), ("val", 180, 365), ("test", 244, 517)];
    for (split, frames, boxes) in expected {
        let s = DataSource {
            split: Some(root.join(format!("{split}.txt"))),
            ..src(&root)
        };
        let (ds, images, objects, per_class, failures, secs) =
            sweep(&s, if full { None } else { Some(4) });
        assert_eq!(ds.format, Format::MarineDebris);
        assert_eq!(ds.len(), frames, "{split}");
        assert_eq!(ds.classes[9], "Tire");
        assert!(failures.is_empty(), "{split}: {failures:?}");
        if full {
            assert_eq!((images, objects), (frames, boxes), "{split}");
            assert!(
                per_class[1..].iter().all(|&n| n > 0),
                "every class in every split"
            );
        }
        report(
            &format!("marine-debris {split}"),
            &ds,
            &(images, objects, per_class, failures, secs),
        );
    }
    // Every object's target lies inside its box, and is (mask == class) there.
    let ds = open(&src(&root));
    assert_eq!(ds.len(), 874);
    for i in [0, 100, 500, 873] {
        let s = ds.load(i).unwrap();
        for o in &s.objects {
            let [x1, y1, x2, y2] = o.bbox;
            for (x, y, p) in o.mask.enumerate_pixels() {
                if p[0] != 0 {
                    assert!(
                        x >= x1 && x < x2 && y >= y1 && y < y2,
                        "{} outside box",
                        s.name
                    );
                }
            }
        }
    }
}

fn ssdd_real(full: bool) {
    // Reads ../shared/datasets/ssdd (COCO polygons; images in train/ and test/ beside
    // annotations/, found by the default image-folder rule).
    let Some(root) = shared("ssdd") else { return };
    for (split, images, ships) in [("train", 735, 1647), ("test", 116, 252)] {
        let s = src(&root.join(format!("annotations/instances_{split}.json")));
        let (ds, n, objects, per_class, failures, secs) =
            sweep(&s, if full { None } else { Some(5) });
        assert_eq!(ds.classes, ["background", "ship"]);
        assert_eq!(ds.len(), images, "{split}");
        assert!(failures.is_empty(), "{split}: {failures:?}");
        if full {
            assert_eq!((n, objects), (images, ships), "{split}");
        }
        report(
            &format!("ssdd {split}"),
            &ds,
            &(n, objects, per_class, failures, secs),
        );
    }
}

fn kvasir_real(full: bool) {
    // Reads ../shared/datasets/kvasir-seg (JPEG masks) and compares the connected components
    // with kavsir_bboxes.json.
    let Some(root) = shared("kvasir-seg") else {
        return;
    };
    let (ds, n, objects, per_class, failures, secs) =
        sweep(&src(&root), if full { None } else { Some(5) });
    assert_eq!(ds.len(), 400);
    assert_eq!(ds.classes, ["background", "object"]);
    assert!(failures.is_empty(), "{failures:?}");
    report("kvasir-seg", &ds, &(n, objects, per_class, failures, secs));
    if !full {
        return;
    }
    let boxes: Value =
        serde_json::from_slice(&fs::read(root.join("kavsir_bboxes.json")).unwrap()).unwrap();
    let (mut same_count, mut exact, mut within2, mut json_boxes) = (0, 0, 0, 0);
    for i in 0..ds.len() {
        let s = ds.load(i).unwrap();
        let list = boxes[&s.name]["bbox"].as_array().unwrap();
        json_boxes += list.len();
        if list.len() == s.objects.len() {
            same_count += 1;
        }
        for b in list {
            let jb = ["xmin", "ymin", "xmax", "ymax"].map(|k| b[k].as_i64().unwrap());
            let best = s
                .objects
                .iter()
                .map(|o| {
                    o.bbox
                        .iter()
                        .zip(&jb)
                        .map(|(a, b)| (*a as i64 - b).abs())
                        .max()
                        .unwrap()
                })
                .min()
                .unwrap_or(i64::MAX);
            if best == 0 {
                exact += 1;
            }
            if best <= 2 {
                within2 += 1;
            }
        }
    }
    eprintln!(
        "kvasir-seg vs kavsir_bboxes.json: {json_boxes} JSON boxes, {objects} components; \
         {same_count}/400 images with the same number; JSON boxes matched by a component box \
         exactly: {exact}, within 2 px (max coordinate difference): {within2}"
    );
}

#[test]
fn real_marine_debris_fls() {
    md_real(false);
}

#[test]
fn real_ssdd() {
    ssdd_real(false);
}

#[test]
fn real_kvasir_seg() {
    kvasir_real(false);
}

/// Loads every item of every real set and prints figures and timings.
#[test]
#[ignore = "slow: loads all real items; run with --ignored --nocapture"]
fn real_sets_full_sweep() {
    md_real(true);
    ssdd_real(true);
    kvasir_real(true);
}
