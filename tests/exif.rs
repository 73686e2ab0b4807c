//! Images are read as viewers show them (issue 19, item 8): the format comes from the bytes, the
//! EXIF orientation is applied with PIL's `ImageOps.exif_transpose` semantics, and a file that
//! cannot be decoded gets one message that names it and says why once.
//!
//! The EXIF JPEGs are made here: a JPEG from the image crate with an APP1 `Exif` segment spliced
//! in after its APP0 (a big-endian TIFF header and one IFD entry, 0x0112 Orientation).

use std::fs;
use std::path::Path;

use image::{Rgb, RgbImage};
use sam_cobot::data::{DataError, DataSource, Dataset, open_image};
use serde_json::json;

/// A stored `w`x`h` picture with no symmetry: a gradient, a red block at the top left and a
/// blue one at the bottom left.
fn picture(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        if x < w / 3 && y < h / 3 {
            Rgb([250, 0, 0])
        } else if x < w / 3 && y >= h - h / 3 {
            Rgb([0, 0, 250])
        } else {
            Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
        }
    })
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(img)
        .unwrap();
    out
}

/// A minimal Exif block: a big-endian TIFF header and one IFD entry, 0x0112 = `orientation`.
fn exif_tiff(orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\x00\x2A"); // big endian, TIFF magic
    tiff.extend_from_slice(&8u32.to_be_bytes()); // first IFD right after the header
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // one value
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding to 4 bytes
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    tiff
}

/// `jpeg` with an Exif APP1 segment saying `orientation`.
fn with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    assert_eq!(&jpeg[..2], [0xFF, 0xD8], "not a JPEG");
    // After SOI, and after the JFIF APP0 if there is one.
    let mut at = 2;
    if jpeg[2..4] == [0xFF, 0xE0] {
        at = 4 + u16::from_be_bytes([jpeg[4], jpeg[5]]) as usize;
    }
    let tiff = exif_tiff(orientation);
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
    app1.extend_from_slice(b"Exif\x00\x00");
    app1.extend_from_slice(&tiff);
    [&jpeg[..at], &app1, &jpeg[at..]].concat()
}

/// PIL `ImageOps.exif_transpose` for `orientation`, by pixel coordinates.
fn pil_transpose(src: &RgbImage, orientation: u16) -> RgbImage {
    let (w, h) = src.dimensions();
    let swap = orientation >= 5;
    let (ow, oh) = if swap { (h, w) } else { (w, h) };
    RgbImage::from_fn(ow, oh, |x, y| {
        let (sx, sy) = match orientation {
            1 => (x, y),
            2 => (w - 1 - x, y),         // FLIP_LEFT_RIGHT
            3 => (w - 1 - x, h - 1 - y), // ROTATE_180
            4 => (x, h - 1 - y),         // FLIP_TOP_BOTTOM
            5 => (y, x),                 // TRANSPOSE
            6 => (y, h - 1 - x),         // ROTATE_270 (90° clockwise)
            7 => (w - 1 - y, h - 1 - x), // TRANSVERSE
            8 => (w - 1 - y, x),         // ROTATE_90 (90° anticlockwise)
            _ => unreachable!(),
        };
        *src.get_pixel(sx, sy)
    })
}

fn near(a: Rgb<u8>, b: [u8; 3]) -> bool {
    a.0.iter().zip(b).all(|(&p, q)| p.abs_diff(q) < 40)
}

#[test]
fn orientation_6_turns_a_stored_30x20_jpeg_into_the_20x30_image_viewers_show() {
    let dir = tempfile::tempdir().unwrap();
    let plain = jpeg(&picture(30, 20));
    let path = dir.path().join("rot.jpg");
    fs::write(&path, with_orientation(&plain, 6)).unwrap();

    let shown = open_image(&path).unwrap().to_rgb8();
    assert_eq!(shown.dimensions(), (20, 30));
    // The same JPEG data without the tag, decoded and turned 90° clockwise: pixel for pixel.
    let stored = image::load_from_memory(&plain).unwrap().to_rgb8();
    assert_eq!(stored.dimensions(), (30, 20));
    assert_eq!(shown, image::imageops::rotate90(&stored));
    assert_eq!(shown, pil_transpose(&stored, 6));
    // Clockwise: the stored top-left (red) is now top-right, the bottom-left (blue) top-left.
    assert!(
        near(*shown.get_pixel(17, 2), [250, 0, 0]),
        "{:?}",
        shown.get_pixel(17, 2)
    );
    assert!(
        near(*shown.get_pixel(2, 2), [0, 0, 250]),
        "{:?}",
        shown.get_pixel(2, 2)
    );
}

#[test]
fn every_orientation_is_applied_as_pil_exif_transpose_does() {
    let dir = tempfile::tempdir().unwrap();
    let plain = jpeg(&picture(30, 20));
    let stored = image::load_from_memory(&plain).unwrap().to_rgb8();
    for o in 1..=8u16 {
        let path = dir.path().join(format!("o{o}.jpg"));
        fs::write(&path, with_orientation(&plain, o)).unwrap();
        let shown = open_image(&path).unwrap().to_rgb8();
        assert!(shown == pil_transpose(&stored, o), "orientation {o}");
    }
    // A JPEG without EXIF, or with an invalid orientation value, is shown as stored.
    for (name, bytes) in [
        ("none.jpg", plain.clone()),
        ("bad.jpg", with_orientation(&plain, 0)),
    ] {
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        assert_eq!(open_image(&path).unwrap().to_rgb8(), stored, "{name}");
    }
}

#[test]
fn a_png_with_an_exif_chunk_is_turned_too() {
    use image::ImageEncoder;
    let dir = tempfile::tempdir().unwrap();
    let img = picture(30, 20);
    let mut png = Vec::new();
    let mut enc = image::codecs::png::PngEncoder::new(&mut png);
    enc.set_exif_metadata(exif_tiff(6)).unwrap();
    enc.write_image(img.as_raw(), 30, 20, image::ExtendedColorType::Rgb8)
        .unwrap();
    let path = dir.path().join("exif.png");
    fs::write(&path, png).unwrap();
    assert_eq!(open_image(&path).unwrap().to_rgb8(), pil_transpose(&img, 6));
}

#[test]
fn the_format_comes_from_the_content_not_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    let img = picture(12, 9);
    let png = dir.path().join("really_png.jpg");
    img.save_with_format(&png, image::ImageFormat::Png).unwrap();
    assert_eq!(open_image(&png).unwrap().to_rgb8(), img);
    // And a JPEG (with its orientation) named .png.
    let jpg = dir.path().join("really_jpeg.png");
    let plain = jpeg(&img);
    fs::write(&jpg, with_orientation(&plain, 8)).unwrap();
    let stored = image::load_from_memory(&plain).unwrap().to_rgb8();
    assert_eq!(
        open_image(&jpg).unwrap().to_rgb8(),
        pil_transpose(&stored, 8)
    );
}

/// The message as `anyhow`'s `{:#}` prints it: the error and each of its sources.
fn chain(e: &DataError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

#[test]
fn a_broken_file_gets_one_message_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let img = picture(12, 9);

    // Not an image at all (an HTML page saved as .png).
    let html = dir.path().join("page.png");
    fs::write(&html, "<!DOCTYPE html><html></html>").unwrap();
    let e = open_image(&html).unwrap_err();
    let m = chain(&e);
    assert!(matches!(e, DataError::Image { .. }), "{m}");
    assert_eq!(m, e.to_string(), "no source repeats the message");
    assert_eq!(
        m,
        format!(
            "cannot decode image {}: not a JPEG or PNG file (it starts with 3c 21 44 4f 43 54 59 50)",
            html.display()
        )
    );

    // A PNG cut short: the decoder's complaint, once.
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let cut = dir.path().join("cut.png");
    fs::write(&cut, &png[..png.len() / 2]).unwrap();
    let e = open_image(&cut).unwrap_err();
    let m = chain(&e);
    assert!(matches!(e, DataError::Image { .. }), "{m}");
    assert_eq!(m, e.to_string(), "no source repeats the message");
    let prefix = format!("cannot decode image {}: ", cut.display());
    assert!(m.starts_with(&prefix), "{m}");
    let why = &m[prefix.len()..];
    println!("{m}");
    assert!(why.contains("PNG"), "{m}");
    // Each ": "-separated part appears once.
    let parts: Vec<&str> = why.split(": ").collect();
    for p in &parts {
        assert_eq!(why.matches(p).count(), 1, "{p:?} repeats in {m}");
    }

    // A JPEG whose data is garbage after a valid start.
    let jpg_bytes = jpeg(&img);
    let bad_jpeg = dir.path().join("bad.jpg");
    fs::write(&bad_jpeg, &jpg_bytes[..40]).unwrap();
    let e = open_image(&bad_jpeg).unwrap_err();
    let m = chain(&e);
    assert_eq!(m, e.to_string());
    assert!(m.contains("bad.jpg") && m.contains("JPEG"), "{m}");
    println!("{m}");

    let empty = dir.path().join("empty.jpg");
    fs::write(&empty, b"").unwrap();
    let m = open_image(&empty).unwrap_err().to_string();
    assert!(
        m.contains("empty.jpg") && m.contains("the file is empty"),
        "{m}"
    );

    let e = open_image(&dir.path().join("absent.png")).unwrap_err();
    assert!(matches!(e, DataError::MissingFile { .. }), "{e}");
    assert!(e.to_string().contains("absent.png"), "{e}");
}

fn save_jpeg_with_orientation(path: &Path, img: &RgbImage, orientation: u16) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, with_orientation(&jpeg(img), orientation)).unwrap();
}

#[test]
fn coco_sizes_and_boxes_refer_to_the_shown_image() {
    let dir = tempfile::tempdir().unwrap();
    // Stored 30x20, shown 20x30.
    save_jpeg_with_orientation(&dir.path().join("images/r.jpg"), &picture(30, 20), 6);
    let write_json = |w: u32, h: u32| {
        let json = dir.path().join("instances.json");
        let file = json!({
            "images": [{"id": 1, "file_name": "r.jpg", "width": w, "height": h}],
            // A box that only fits the shown image (y up to 28 > 20).
            "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "segmentation": [[2, 22, 8, 22, 8, 28, 2, 28]],
                             "bbox": [2, 22, 6, 6]}],
            "categories": [{"id": 1, "name": "ship"}],
        });
        fs::write(&json, file.to_string()).unwrap();
        json
    };
    let ds = Dataset::open(&DataSource::new(write_json(20, 30))).unwrap();
    let loaded = ds.load_lenient(0).unwrap();
    assert!(loaded.dropped.is_empty(), "{:?}", loaded.dropped);
    let s = loaded.sample;
    assert_eq!(s.image.dimensions(), (20, 30));
    assert_eq!(s.objects.len(), 1);
    assert_eq!(s.objects[0].bbox, [2, 22, 8, 28]);
    assert_eq!(s.objects[0].mask.dimensions(), (20, 30));

    // A JSON sized as stored: the error says the orientation made the difference.
    let ds = Dataset::open(&DataSource::new(write_json(30, 20))).unwrap();
    let m = ds.load(0).unwrap_err().to_string();
    assert!(
        m.contains("30x20 in the JSON but 20x30") && m.contains("EXIF orientation"),
        "{m}"
    );
}

#[test]
fn mask_folder_masks_follow_their_own_orientation() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("masks")).unwrap();
    // Shown 20x30: an object at x 4..12, y 18..27 of the shown image.
    let shown_mask = image::GrayImage::from_fn(20, 30, |x, y| {
        image::Luma([if (4..12).contains(&x) && (18..27).contains(&y) {
            255
        } else {
            0
        }])
    });
    // a: image stored 30x20 with orientation 6, PNG mask as shown (no EXIF).
    save_jpeg_with_orientation(&root.join("images/a.jpg"), &picture(30, 20), 6);
    shown_mask.save(root.join("masks/a.png")).unwrap();
    // b: PNG image as shown, JPEG mask stored turned back (90° anticlockwise) with orientation 6.
    picture(20, 30).save(root.join("images/b.png")).unwrap();
    let stored_mask = image::DynamicImage::ImageLuma8(image::imageops::rotate270(&shown_mask));
    save_jpeg_with_orientation(&root.join("masks/b.jpg"), &stored_mask.to_rgb8(), 6);

    let ds = Dataset::open(&DataSource::new(root)).unwrap();
    for i in 0..2 {
        let s = ds.load(i).unwrap_or_else(|e| panic!("{}: {e}", ds.name(i)));
        assert_eq!(s.image.dimensions(), (20, 30), "{}", s.name);
        assert_eq!(s.objects.len(), 1, "{}", s.name);
        assert_eq!(s.objects[0].bbox, [4, 18, 12, 27], "{}", s.name);
    }
}
