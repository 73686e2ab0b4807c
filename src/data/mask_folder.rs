//! Image / mask folder pairs (e.g. Kvasir-SEG):
//!
//! ```text
//! images/<stem>.<ext>   the image (png / jpg / ...)
//! masks/<stem>.<ext>    its binary mask, same size (any image extension: paired by stem)
//! ```
//!
//! Items: the image files of `images/` sorted by file name; name = file stem. The mask is read
//! as grey (colour masks through luma) and a pixel is foreground when its value is
//! `>= DataSource::mask_threshold` (default 128; JPEG masks carry intermediate values). Each
//! 8-connected component of the foreground is one object of class 1 (`"object"`) with at least
//! `DataSource::min_object_area` pixels (default 16: smaller components are dropped as JPEG
//! speckle); objects are ordered by their first pixel in row-major order. Box = the component's
//! extent (`x2`, `y2` exclusive); target = that component only. A mask with no component left is
//! a sample with no objects (not an error). A missing mask, or two masks with the same stem, is
//! an error of the item.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{DataError, ItemKey, Object, Sample, read_image};

pub(crate) fn class_names() -> Vec<String> {
    vec!["background".to_string(), "object".to_string()]
}

#[derive(Debug, Clone)]
pub(crate) struct MaskFolder {
    root: PathBuf,
    /// (stem, image file name)
    items: Vec<(String, String)>,
    /// stem → mask files with that stem
    masks: HashMap<String, Vec<PathBuf>>,
    threshold: u8,
    min_area: u32,
}

impl MaskFolder {
    pub(crate) fn open(root: &Path, threshold: u8, min_area: u32) -> Result<Self, DataError> {
        for d in ["images", "masks"] {
            if !root.join(d).is_dir() {
                return Err(DataError::Layout {
                    path: root.to_path_buf(),
                    message: format!(
                        "not an image/mask folder: {d}/ is missing (needs images/ and masks/)"
                    ),
                });
            }
        }
        let items = super::list_images(&root.join("images"))?
            .iter()
            .filter_map(|p| {
                Some((
                    p.file_stem()?.to_str()?.to_string(),
                    p.file_name()?.to_str()?.to_string(),
                ))
            })
            .collect();
        let mut masks: HashMap<String, Vec<PathBuf>> = HashMap::new();
        for p in super::list_images(&root.join("masks"))? {
            if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                masks.entry(stem.to_string()).or_default().push(p.clone());
            }
        }
        Ok(MaskFolder {
            root: root.to_path_buf(),
            items,
            masks,
            threshold,
            min_area,
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
        format!("no such image in {}", self.root.join("images").display())
    }

    pub(crate) fn load(&self, i: usize) -> Result<Sample, DataError> {
        let (stem, file) = &self.items[i];
        let image_path = self.root.join("images").join(file);
        let mask_path = match self.masks.get(stem).map(Vec::as_slice) {
            None | Some([]) => {
                return Err(DataError::MissingFile {
                    path: self.root.join("masks").join(format!("{stem}.*")),
                    what: format!("mask for image {}", image_path.display()),
                });
            }
            Some([one]) => one.clone(),
            Some(several) => {
                return Err(DataError::Invalid {
                    path: image_path,
                    message: format!(
                        "several masks have the stem {stem:?}: {}",
                        several
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        };
        let image = read_image(&image_path, "image")?.to_rgb8();
        let mask = read_image(&mask_path, "mask")?.to_luma8();
        if mask.dimensions() != image.dimensions() {
            return Err(DataError::MaskSize {
                mask: mask_path,
                mask_w: mask.width(),
                mask_h: mask.height(),
                image: image_path,
                image_w: image.width(),
                image_h: image.height(),
            });
        }
        let fg: Vec<bool> = mask.pixels().map(|p| p[0] >= self.threshold).collect();
        let objects = components(&fg, mask.width(), mask.height())
            .into_iter()
            .filter(|c| c.area >= self.min_area as u64)
            .map(|c| Object {
                bbox: c.bbox,
                class: 1,
                mask: c.mask,
            })
            .collect();
        Ok(Sample {
            name: stem.clone(),
            image,
            objects,
        })
    }
}

/// One 8-connected component.
pub struct Component {
    /// `[x1, y1, x2, y2]`, end-exclusive.
    pub bbox: [u32; 4],
    pub area: u64,
    /// This component only: 255 inside, 0 elsewhere.
    pub mask: image::GrayImage,
}

/// 8-connected components of a row-major foreground map, in the row-major order of their first
/// pixel.
pub fn components(fg: &[bool], w: u32, h: u32) -> Vec<Component> {
    let (wu, hu) = (w as usize, h as usize);
    let mut label = vec![0u32; wu * hu];
    let mut out = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    for start in 0..wu * hu {
        if !fg[start] || label[start] != 0 {
            continue;
        }
        let id = out.len() as u32 + 1;
        let mut pixels = Vec::new();
        label[start] = id;
        stack.push(start);
        let (mut x1, mut y1, mut x2, mut y2) = (usize::MAX, usize::MAX, 0, 0);
        while let Some(p) = stack.pop() {
            pixels.push(p);
            let (x, y) = (p % wu, p / wu);
            x1 = x1.min(x);
            y1 = y1.min(y);
            x2 = x2.max(x + 1);
            y2 = y2.max(y + 1);
            for ny in y.saturating_sub(1)..=(y + 1).min(hu - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(wu - 1) {
                    let q = ny * wu + nx;
                    if fg[q] && label[q] == 0 {
                        label[q] = id;
                        stack.push(q);
                    }
                }
            }
        }
        let mut mask = image::GrayImage::new(w, h);
        for &p in &pixels {
            mask.put_pixel((p % wu) as u32, (p / wu) as u32, image::Luma([255]));
        }
        out.push(Component {
            bbox: [x1 as u32, y1 as u32, x2 as u32, y2 as u32],
            area: pixels.len() as u64,
            mask,
        });
    }
    out
}
