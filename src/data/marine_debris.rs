//! The marine-debris FLS water-tank layout (docs/methods.md#sonar-data):
//!
//! ```text
//! Images/<id>.png          8-bit grey sonar frame
//! Masks/<id>.png           class-id map (0..11), same size
//! BoxAnnotations/<id>.xml  <object><name>Tire</name><bndbox><x>..</x><y>..</y><w>..</w><h>..</h></bndbox></object>
//! train.txt / val.txt / test.txt   split lists (one stem per line, no extension)
//! ```
//!
//! Items are the `.png` files of `Images/` sorted by file name (byte order) unless a split list
//! is given. A box `x, y, w, h` (integers, top-left + size) becomes `[x, y, x + w, y + h]`; a box
//! with `w` or `h` <= 0 is an error, and so is one reaching outside `[0, W] × [0, H]` (no clipping).
//! The object's class is its `<name>` looked up in [`CLASSES`] (exact spelling; unknown = error).
//! Its target is 0 everywhere except inside the box, where it is 255 where `mask == class`;
//! a target with no such pixel is an error. Objects keep their XML order. The `<size>` element
//! is not used: the image file decides the size.

use std::path::{Path, PathBuf};

use super::{DataError, ItemKey, Object, Sample, read_image, read_text};

/// Class names, index = mask value (docs/methods.md#sonar-data).
pub const CLASSES: [&str; 12] = [
    "Background",
    "Bottle",
    "Can",
    "Chain",
    "Drink-carton",
    "Hook",
    "Propeller",
    "Shampoo-bottle",
    "Standing-bottle",
    "Tire",
    "Valve",
    "Wall",
];

pub(crate) fn class_names() -> Vec<String> {
    CLASSES.iter().map(|s| s.to_string()).collect()
}

#[derive(Debug, Clone)]
pub(crate) struct MarineDebris {
    root: PathBuf,
    /// (stem, file name)
    items: Vec<(String, String)>,
}

/// One `<object>` of a box file, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxAnnotation {
    pub name: String,
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
}

impl MarineDebris {
    pub(crate) fn open(root: &Path) -> Result<Self, DataError> {
        for d in ["Images", "Masks", "BoxAnnotations"] {
            if !root.join(d).is_dir() {
                return Err(DataError::Layout {
                    path: root.to_path_buf(),
                    message: format!(
                        "not a marine-debris folder: {d}/ is missing (needs Images/, Masks/, \
                         BoxAnnotations/)"
                    ),
                });
            }
        }
        let images = super::list_images(&root.join("Images"))?;
        let items = images
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
            .filter_map(|p| {
                let file = p.file_name()?.to_str()?.to_string();
                let stem = p.file_stem()?.to_str()?.to_string();
                Some((stem, file))
            })
            .collect();
        Ok(MarineDebris {
            root: root.to_path_buf(),
            items,
        })
    }

    pub(crate) fn items(&self) -> Vec<ItemKey<'_>> {
        super::item_keys(&self.items)
    }

    /// The files and folders the data set is read from.
    pub(crate) fn sources(&self) -> Vec<PathBuf> {
        vec![self.root.clone()]
    }

    pub(crate) fn looked_in(&self) -> String {
        format!("no <name>.png in {}", self.root.join("Images").display())
    }

    pub(crate) fn load(&self, i: usize) -> Result<Sample, DataError> {
        let (stem, file) = &self.items[i];
        let image_path = self.root.join("Images").join(file);
        let mask_path = self.root.join("Masks").join(format!("{stem}.png"));
        let xml_path = self.root.join("BoxAnnotations").join(format!("{stem}.xml"));

        let image = read_image(&image_path, "sonar image")?.to_rgb8();
        let (w, h) = image.dimensions();
        let mask = class_map(&mask_path)?;
        if mask.dimensions() != (w, h) {
            return Err(DataError::MaskSize {
                mask: mask_path,
                mask_w: mask.width(),
                mask_h: mask.height(),
                image: image_path,
                image_w: w,
                image_h: h,
            });
        }
        let xml = read_text(&xml_path, "box annotation file")?;
        let boxes = parse_boxes(&xml, &xml_path)?;

        let mut objects = Vec::with_capacity(boxes.len());
        for (k, b) in boxes.iter().enumerate() {
            let object = format!("object {k} ({})", b.name);
            let class = CLASSES.iter().position(|c| *c == b.name).ok_or_else(|| {
                DataError::UnknownClass {
                    path: xml_path.clone(),
                    object: format!("object {k}"),
                    class: format!("{:?}", b.name),
                    known: CLASSES.join(", "),
                }
            })?;
            let desc = format!("x={} y={} w={} h={}", b.x, b.y, b.w, b.h);
            if b.w <= 0 || b.h <= 0 {
                return Err(DataError::EmptyBox {
                    path: xml_path.clone(),
                    object,
                    bbox: desc,
                });
            }
            let (x2, y2) = (b.x + b.w, b.y + b.h);
            if b.x < 0 || b.y < 0 || x2 > w as i64 || y2 > h as i64 {
                return Err(DataError::BoxOutside {
                    path: xml_path.clone(),
                    object,
                    bbox: desc,
                    width: w,
                    height: h,
                });
            }
            let bbox = [b.x as u32, b.y as u32, x2 as u32, y2 as u32];
            let mut target = image::GrayImage::new(w, h);
            let mut count = 0u64;
            for y in bbox[1]..bbox[3] {
                for x in bbox[0]..bbox[2] {
                    if mask.get_pixel(x, y)[0] as usize == class {
                        target.put_pixel(x, y, image::Luma([255]));
                        count += 1;
                    }
                }
            }
            if count == 0 {
                return Err(DataError::EmptyMask {
                    path: xml_path.clone(),
                    object,
                    detail: format!(
                        "no pixel of class {class} inside box {desc} in {}",
                        mask_path.display()
                    ),
                });
            }
            objects.push(Object {
                bbox,
                class,
                mask: target,
            });
        }
        Ok(Sample {
            name: stem.clone(),
            image,
            objects,
        })
    }
}

/// Reads a class-id map: an 8-bit grey PNG (grey + alpha: the grey; RGB: only when all channels
/// agree, so that palette-like colour masks are not silently mixed into class ids).
fn class_map(path: &Path) -> Result<image::GrayImage, DataError> {
    let img = read_image(path, "class mask")?;
    match img {
        image::DynamicImage::ImageLuma8(m) => Ok(m),
        image::DynamicImage::ImageLumaA8(_) => Ok(img.to_luma8()),
        image::DynamicImage::ImageRgb8(ref rgb) => {
            if rgb.pixels().all(|p| p[0] == p[1] && p[1] == p[2]) {
                Ok(image::GrayImage::from_fn(
                    rgb.width(),
                    rgb.height(),
                    |x, y| image::Luma([rgb.get_pixel(x, y)[0]]),
                ))
            } else {
                Err(DataError::Invalid {
                    path: path.to_path_buf(),
                    message: "class mask is a colour image; expected 8-bit grey class ids"
                        .to_string(),
                })
            }
        }
        other => Err(DataError::Invalid {
            path: path.to_path_buf(),
            message: format!(
                "class mask has pixel type {:?}; expected 8-bit grey class ids",
                other.color()
            ),
        }),
    }
}

/// Parses the `<object>` elements of a box file (children of the root element).
pub fn parse_boxes(xml: &str, path: &Path) -> Result<Vec<BoxAnnotation>, DataError> {
    let invalid = |message: String| DataError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let doc = roxmltree::Document::parse(xml).map_err(|e| invalid(format!("bad XML: {e}")))?;
    let mut out = Vec::new();
    for (k, obj) in doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("object"))
        .enumerate()
    {
        let name = child(obj, "name")
            .and_then(|n| n.text())
            .map(|t| t.trim().to_string())
            .ok_or_else(|| invalid(format!("object {k} has no <name>")))?;
        let bb = child(obj, "bndbox")
            .ok_or_else(|| invalid(format!("object {k} ({name}) has no <bndbox>")))?;
        let mut v = [0i64; 4];
        for (slot, tag) in v.iter_mut().zip(["x", "y", "w", "h"]) {
            let text = child(bb, tag)
                .and_then(|n| n.text())
                .map(str::trim)
                .ok_or_else(|| invalid(format!("object {k} ({name}): <bndbox> has no <{tag}>")))?;
            *slot = parse_int(text).ok_or_else(|| {
                invalid(format!(
                    "object {k} ({name}): <{tag}> is {text:?}, not an integer pixel coordinate"
                ))
            })?;
        }
        out.push(BoxAnnotation {
            name,
            x: v[0],
            y: v[1],
            w: v[2],
            h: v[3],
        });
    }
    Ok(out)
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|n| n.has_tag_name(tag))
}

/// An integer, also written as a float with no fractional part ("12.0").
fn parse_int(s: &str) -> Option<i64> {
    if let Ok(v) = s.parse::<i64>() {
        return Some(v);
    }
    let f: f64 = s.parse().ok()?;
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15).then_some(f as i64)
}
