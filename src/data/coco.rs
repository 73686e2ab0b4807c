//! COCO instances JSON (`images`, `annotations`, `categories`), decoded as pycocotools does.
//!
//! - Items: the `images` entries in file order; an image without (non-crowd) annotations is an
//!   item with no objects. Name = `file_name`.
//! - Classes: index 0 `"background"`, then the category names in ascending category `id`;
//!   `category_id` maps to that index (an unknown id is an error of the item).
//! - Objects: the annotations of the image in file order, except `iscrowd` ones (not used as
//!   prompts). A broken annotation (unknown `category_id`, missing or empty segmentation, bad
//!   box, ...) is left out of its item: [`Dataset::load_lenient`](super::Dataset::load_lenient)
//!   keeps the item's other objects and returns one error per dropped annotation, naming it by
//!   `id`; [`Dataset::load`](super::Dataset::load) fails the item with the first of them. An
//!   annotation whose `image_id` matches no image is dropped at open, with a message in
//!   [`Dataset::warnings`](super::Dataset::warnings). Target = the decoded mask, not
//!   restricted to the box (docs/methods.md#other-data-formats), exactly as pycocotools `COCO.annToMask`: a polygon list
//!   goes through `frPyObjects` (each entry is a
//!   polygon rasterised by `rleFrPoly`; a first entry of 4 or fewer numbers is an error, as it
//!   is in pycocotools) and the parts are merged (union); an
//!   RLE `{"counts": [..] | "..", "size": [h, w]}` is decoded column-major. See [`super::rle`].
//!   The RLE size must equal the image size, and the counts must cover exactly `h * w` pixels.
//! - Box: from `bbox` `[x, y, w, h]` (floats). It covers pixels `x <= px < x + w`,
//!   `y <= py < y + h`: `x1 = floor(x)`, `y1 = floor(y)`, `x2 = ceil(x + w)`, `y2 = ceil(y + h)`,
//!   so integer boxes are taken as they are and fractional ones grow to the pixels they touch.
//!   Values within 1e-6 of an integer are snapped to it first (float noise in exported JSON).
//!   `w <= 0` or `h <= 0` is an error, and so is a box reaching outside `[0, W] × [0, H]` (no
//!   clipping, as for the sonar boxes). Without `bbox`, the box is the extent of the mask.
//! - Image size: the image file decides, as a viewer shows it (after its EXIF orientation, see
//!   [`super::open_image`]); a `width` / `height` in the JSON that disagrees is an error of the
//!   item.
//!
//! Image folder (`DataSource::images`, else the first of these folders that holds one of the
//! first 16 listed images): with the JSON at `D/<stem>.json` and `<split>` = `<stem>` without
//! an `instances_` prefix: `D/images`, `D/../images`, `D/../<split>`, `D/<split>`,
//! `D/../images/<split>`, `D/../<stem>`, `D`. The SSDD layout `annotations/instances_train.json`
//! + `train/` is found by `D/../<split>`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::metadata::Orientation;
use serde::Deserialize;
use serde_json::Value;

use super::{DataError, ItemKey, Object, Sample, read_image_oriented};
use crate::rle::{Rle, column_major_to_image};

#[derive(Debug, Clone, Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<CocoAnnotation>,
    #[serde(default)]
    categories: Vec<CocoCategory>,
}

#[derive(Debug, Clone, Deserialize)]
struct CocoImage {
    id: i64,
    file_name: String,
    #[serde(default)]
    width: Option<u32>,
    #[serde(default)]
    height: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
struct CocoAnnotation {
    #[serde(default)]
    id: Option<Value>,
    image_id: i64,
    category_id: i64,
    #[serde(default)]
    segmentation: Option<Value>,
    #[serde(default)]
    bbox: Option<Vec<f64>>,
    #[serde(default)]
    iscrowd: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct CocoCategory {
    id: i64,
    name: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Coco {
    json: PathBuf,
    image_dir: PathBuf,
    images: Vec<CocoImage>,
    /// Per item, its non-crowd annotations.
    annotations: Vec<Vec<CocoAnnotation>>,
    /// Categories sorted by id.
    categories: Vec<CocoCategory>,
    category_index: HashMap<i64, usize>,
    /// Annotations dropped at open (an `image_id` that matches no image), one message each.
    warnings: Vec<String>,
}

impl Coco {
    pub(crate) fn open(json: &Path, images: Option<&Path>) -> Result<Self, DataError> {
        let text = std::fs::read(json).map_err(|e| DataError::Io {
            path: json.to_path_buf(),
            source: e,
        })?;
        let file: CocoFile = serde_json::from_slice(&text).map_err(|e| DataError::Invalid {
            path: json.to_path_buf(),
            message: format!("not a COCO instances file: {e}"),
        })?;
        let mut categories = file.categories;
        categories.sort_by_key(|c| c.id);
        for pair in categories.windows(2) {
            if pair[0].id == pair[1].id {
                return Err(DataError::Invalid {
                    path: json.to_path_buf(),
                    message: format!("category id {} is listed twice", pair[0].id),
                });
            }
        }
        let category_index = categories
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i + 1))
            .collect();
        let index_of: HashMap<i64, usize> = file
            .images
            .iter()
            .enumerate()
            .map(|(i, im)| (im.id, i))
            .collect();
        let mut annotations = vec![Vec::new(); file.images.len()];
        let mut warnings = Vec::new();
        for (k, a) in file.annotations.into_iter().enumerate() {
            if is_crowd(a.iscrowd.as_ref()) {
                continue;
            }
            match index_of.get(&a.image_id) {
                Some(&i) => annotations[i].push(a),
                // Annotations of images that are not listed cannot be loaded.
                None => warnings.push(format!(
                    "{}: {}: image_id {} matches no image in \"images\"; annotation dropped",
                    json.display(),
                    match &a.id {
                        Some(id) => format!("annotation id {id}"),
                        None => format!("annotation {k} of \"annotations\" (no id)"),
                    },
                    a.image_id
                )),
            }
        }
        let image_dir = match images {
            Some(d) => {
                if !d.is_dir() {
                    return Err(DataError::Layout {
                        path: d.to_path_buf(),
                        message: format!("image folder for {} does not exist", json.display()),
                    });
                }
                d.to_path_buf()
            }
            None => find_image_dir(json, &file.images)?,
        };
        Ok(Coco {
            json: json.to_path_buf(),
            image_dir,
            images: file.images,
            annotations,
            categories,
            category_index,
            warnings,
        })
    }

    pub(crate) fn classes(&self) -> Vec<String> {
        std::iter::once("background".to_string())
            .chain(self.categories.iter().map(|c| c.name.clone()))
            .collect()
    }

    pub(crate) fn items(&self) -> Vec<ItemKey<'_>> {
        self.images
            .iter()
            .map(|im| ItemKey {
                name: &im.file_name,
                file: &im.file_name,
            })
            .collect()
    }

    /// The files and folders the data set is read from.
    pub(crate) fn sources(&self) -> Vec<PathBuf> {
        vec![self.json.clone(), self.image_dir.clone()]
    }

    /// Annotations dropped at open, one message each.
    pub(crate) fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub(crate) fn looked_in(&self) -> String {
        format!("no such file_name in {}", self.json.display())
    }

    /// Item `i` with its valid objects, and one error per annotation left out.
    pub(crate) fn load(&self, i: usize) -> Result<(Sample, Vec<DataError>), DataError> {
        let info = &self.images[i];
        let image_path = self.image_dir.join(&info.file_name);
        let (image, orientation) = read_image_oriented(&image_path, "image")?;
        let image = image.to_rgb8();
        let (w, h) = image.dimensions();
        if info.width.is_some_and(|jw| jw != w) || info.height.is_some_and(|jh| jh != h) {
            let rotated = matches!(
                orientation,
                Orientation::Rotate90
                    | Orientation::Rotate270
                    | Orientation::Rotate90FlipH
                    | Orientation::Rotate270FlipH
            );
            let json_is_stored_size =
                info.width.is_none_or(|jw| jw == h) && info.height.is_none_or(|jh| jh == w);
            let note = if rotated && json_is_stored_size {
                format!(
                    " (shown as its EXIF orientation says; stored {h}x{w}: the annotations may \
                     have been made on the unrotated image)"
                )
            } else {
                String::new()
            };
            return Err(DataError::Invalid {
                path: self.json.clone(),
                message: format!(
                    "image {} (id {}) is {}x{} in the JSON but {w}x{h} in {}{note}",
                    info.file_name,
                    info.id,
                    info.width.map_or("?".into(), |v| v.to_string()),
                    info.height.map_or("?".into(), |v| v.to_string()),
                    image_path.display()
                ),
            });
        }
        let mut objects = Vec::with_capacity(self.annotations[i].len());
        let mut dropped = Vec::new();
        for (k, ann) in self.annotations[i].iter().enumerate() {
            match self.object(ann, k, info, w, h) {
                Ok(o) => objects.push(o),
                Err(e) => dropped.push(e),
            }
        }
        let sample = Sample {
            name: info.file_name.clone(),
            image,
            objects,
        };
        Ok((sample, dropped))
    }

    fn object(
        &self,
        ann: &CocoAnnotation,
        k: usize,
        info: &CocoImage,
        w: u32,
        h: u32,
    ) -> Result<Object, DataError> {
        let object = match &ann.id {
            Some(id) => format!("annotation id {id} (image {})", info.file_name),
            None => format!("annotation {k} of image {}", info.file_name),
        };
        let invalid = |message: String| DataError::Invalid {
            path: self.json.clone(),
            message: format!("{object}: {message}"),
        };
        let class =
            *self
                .category_index
                .get(&ann.category_id)
                .ok_or_else(|| DataError::UnknownClass {
                    path: self.json.clone(),
                    object: object.clone(),
                    class: format!("category_id {}", ann.category_id),
                    known: self
                        .categories
                        .iter()
                        .map(|c| format!("{} ({})", c.id, c.name))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
        let seg = ann
            .segmentation
            .as_ref()
            .ok_or_else(|| invalid("no segmentation".into()))?;
        let rle = segmentation_to_rle(seg, h, w).map_err(&invalid)?;
        let bits = rle.decode().map_err(|e| invalid(e.to_string()))?;
        if !bits.contains(&1) {
            return Err(DataError::EmptyMask {
                path: self.json.clone(),
                object,
                detail: "the segmentation covers no pixel centre".into(),
            });
        }
        let mask = column_major_to_image(&bits, h, w);
        let bbox = match &ann.bbox {
            Some(b) => pixel_box(b, w, h).map_err(|e| match e {
                BoxError::Malformed(m) => invalid(m),
                BoxError::Empty => DataError::EmptyBox {
                    path: self.json.clone(),
                    object: object.clone(),
                    bbox: format!("{b:?} [x, y, w, h]"),
                },
                BoxError::Outside => DataError::BoxOutside {
                    path: self.json.clone(),
                    object: object.clone(),
                    bbox: format!("{b:?} [x, y, w, h]"),
                    width: w,
                    height: h,
                },
            })?,
            None => mask_extent(&bits, h, w),
        };
        Ok(Object { bbox, class, mask })
    }
}

fn is_crowd(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    }
}

/// pycocotools `frPyObjects` (+ `merge` for polygon lists) for one annotation's segmentation.
pub fn segmentation_to_rle(seg: &Value, h: u32, w: u32) -> Result<Rle, String> {
    match seg {
        Value::Array(parts) => {
            let first = parts
                .first()
                .ok_or("segmentation is an empty list".to_string())?;
            let first_len = first
                .as_array()
                .ok_or("segmentation list entries must be lists of numbers".to_string())?
                .len();
            // pycocotools frPyObjects: a first entry of exactly 4 numbers is taken for a box
            // list and fails (TypeError); fewer than 4 also fails. Later entries may be short.
            if first_len <= 4 {
                return Err(format!(
                    "first polygon has {first_len} coordinates; pycocotools needs more than 4"
                ));
            }
            let mut union: Option<Vec<u8>> = None;
            for (p, part) in parts.iter().enumerate() {
                let coords =
                    numbers(part).ok_or(format!("polygon {p} is not a list of finite numbers"))?;
                let bits = Rle::from_polygon(&coords, h, w)
                    .decode()
                    .map_err(|e| e.to_string())?;
                match &mut union {
                    None => union = Some(bits),
                    Some(u) => u.iter_mut().zip(&bits).for_each(|(a, b)| *a |= b),
                }
            }
            let bits = union.expect("at least one part");
            Ok(Rle::from_column_major(&bits, h, w))
        }
        Value::Object(obj) => {
            let size = obj
                .get("size")
                .and_then(|s| s.as_array())
                .filter(|s| s.len() == 2)
                .and_then(|s| Some([s[0].as_u64()?, s[1].as_u64()?]))
                .ok_or("RLE has no valid \"size\": [h, w]".to_string())?;
            if size != [h as u64, w as u64] {
                return Err(format!(
                    "RLE size [h, w] = [{}, {}] differs from the image size [{h}, {w}]",
                    size[0], size[1]
                ));
            }
            match obj.get("counts") {
                Some(Value::String(s)) => {
                    Rle::from_string(s.as_bytes(), h, w).map_err(|e| e.to_string())
                }
                Some(Value::Array(c)) => {
                    let counts = c
                        .iter()
                        .enumerate()
                        .map(|(j, v)| {
                            v.as_u64()
                                .and_then(|v| u32::try_from(v).ok())
                                .ok_or(format!(
                                    "RLE count {j} ({v}) is not a 32-bit unsigned integer"
                                ))
                        })
                        .collect::<Result<Vec<u32>, String>>()?;
                    Ok(Rle { h, w, counts })
                }
                _ => Err("RLE has no \"counts\" (list of integers or string)".into()),
            }
        }
        _ => Err("segmentation is neither a polygon list nor an RLE object".into()),
    }
}

fn numbers(v: &Value) -> Option<Vec<f64>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_f64().filter(|f| f.is_finite()))
        .collect()
}

enum BoxError {
    Malformed(String),
    Empty,
    Outside,
}

/// COCO `[x, y, w, h]` → `[x1, y1, x2, y2]` (see the module documentation).
fn pixel_box(b: &[f64], w: u32, h: u32) -> Result<[u32; 4], BoxError> {
    if b.len() != 4 || b.iter().any(|v| !v.is_finite()) {
        return Err(BoxError::Malformed(format!(
            "bbox {b:?} is not 4 finite numbers [x, y, w, h]"
        )));
    }
    if b[2] <= 0.0 || b[3] <= 0.0 {
        return Err(BoxError::Empty);
    }
    let snap = |v: f64| {
        let r = v.round();
        if (v - r).abs() < 1e-6 { r } else { v }
    };
    let x1 = snap(b[0]).floor();
    let y1 = snap(b[1]).floor();
    let x2 = snap(b[0] + b[2]).ceil();
    let y2 = snap(b[1] + b[3]).ceil();
    if x1 < 0.0 || y1 < 0.0 || x2 > w as f64 || y2 > h as f64 {
        return Err(BoxError::Outside);
    }
    if x2 <= x1 || y2 <= y1 {
        return Err(BoxError::Empty);
    }
    Ok([x1 as u32, y1 as u32, x2 as u32, y2 as u32])
}

/// Extent of the set pixels of a non-empty column-major mask, end-exclusive.
fn mask_extent(bits: &[u8], h: u32, w: u32) -> [u32; 4] {
    let (mut x1, mut y1, mut x2, mut y2) = (w, h, 0, 0);
    for x in 0..w {
        let col = &bits[(x * h) as usize..((x + 1) * h) as usize];
        if let Some(top) = col.iter().position(|&b| b != 0) {
            let bottom = col.iter().rposition(|&b| b != 0).unwrap_or(top);
            x1 = x1.min(x);
            x2 = x2.max(x + 1);
            y1 = y1.min(top as u32);
            y2 = y2.max(bottom as u32 + 1);
        }
    }
    [x1, y1, x2, y2]
}

/// The default image folder (see the module documentation).
fn find_image_dir(json: &Path, images: &[CocoImage]) -> Result<PathBuf, DataError> {
    let dir = json.parent().unwrap_or(Path::new("")).to_path_buf();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let stem = json
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let split = stem.strip_prefix("instances_").unwrap_or(&stem).to_string();
    let up = dir.join("..");
    let mut candidates = vec![
        dir.join("images"),
        up.join("images"),
        up.join(&split),
        dir.join(&split),
        up.join("images").join(&split),
        up.join(&stem),
        dir.clone(),
    ];
    candidates.dedup();
    if images.is_empty() {
        return Ok(candidates
            .iter()
            .find(|c| c.is_dir())
            .cloned()
            .unwrap_or(dir));
    }
    for c in &candidates {
        if c.is_dir()
            && images
                .iter()
                .take(16)
                .any(|im| c.join(&im.file_name).is_file())
        {
            return Ok(c.clone());
        }
    }
    Err(DataError::Layout {
        path: json.to_path_buf(),
        message: format!(
            "no image folder found (none of the first listed images, e.g. {:?}, is in any of: \
             {}); set the image folder explicitly",
            images[0].file_name,
            candidates
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}
