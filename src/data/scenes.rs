//! Generated scenes for pretraining SAM from random weights: many objects per image (ellipses,
//! rectangles, polygons, stars, rings, blobs, thin bars, crescents, L shapes), solid, striped,
//! chequered and shaded fills, occlusion (later objects cover earlier ones, whose masks lose
//! those pixels), gradients and noise, grey and RGB. Every scene is a pure function of its seed,
//! so a run, its resume and its validation set are reproducible.
//!
//! [`write_coco`] writes scenes as a COCO data set (RLE masks, so overlapping objects keep their
//! own masks) that `eval` and `train` read like any other.

use std::f32::consts::PI;
use std::path::Path;

use anyhow::{Context, Result};
use image::{GrayImage, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use super::{Object, Sample};
use crate::files::atomic::write_atomic;
use crate::rle::Rle;

/// Objects smaller than this (visible pixels, at 256 px) are dropped: too small to prompt.
const MIN_AREA_AT_256: f32 = 48.0;

/// How large a scene's objects are, as radii in fractions of its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectSizes {
    /// Uniform from 0.04 to 0.22: objects of 10 to 56 px in a 256 px scene.
    Medium,
    /// A log-uniform size from 0.006 to 0.22 (a third of them under 0.02, a few pixels across
    /// in a 256 px scene), each radius 0.3 to 1 times it: ships on radar chips and debris on
    /// sonar are that small. Objects down to [`MIN_AREA_SMALL`] pixels are kept.
    WithSmall,
}

/// The smallest object kept in [`ObjectSizes::WithSmall`] scenes, in pixels at any size.
const MIN_AREA_SMALL: usize = 12;

/// The scene with seed `seed`: `size` × `size` pixels, 1 to `max_objects` objects.
pub fn scene(seed: u64, size: u32, max_objects: usize) -> Sample {
    scene_with(seed, size, max_objects, ObjectSizes::Medium)
}

/// [`scene`] with objects of the given sizes.
pub fn scene_with(seed: u64, size: u32, max_objects: usize, sizes: ObjectSizes) -> Sample {
    let mut rng = StdRng::seed_from_u64(seed);
    let s = size as f32;
    let n = size as usize * size as usize;
    let grey = rng.random_bool(0.25);
    let background = Fill::random(&mut rng, s, None, grey, true);
    let mut pixels: Vec<[f32; 3]> = (0..n)
        .map(|i| background.colour(((i % size as usize) as f32, (i / size as usize) as f32)))
        .collect();
    let mut masks: Vec<Vec<bool>> = Vec::new();
    for _ in 0..rng.random_range(1..=max_objects.max(1)) {
        let shape = Shape::random(&mut rng, s, sizes);
        let centre = background.colour(shape.centre);
        let fill = Fill::random(&mut rng, s, Some(centre), grey, false);
        let inside: Vec<bool> = (0..n)
            .map(|i| {
                let p = (
                    (i % size as usize) as f32 + 0.5,
                    (i / size as usize) as f32 + 0.5,
                );
                shape.contains(p)
            })
            .collect();
        for (i, _) in inside.iter().enumerate().filter(|(_, v)| **v) {
            pixels[i] = fill.colour(((i % size as usize) as f32, (i / size as usize) as f32));
            for m in &mut masks {
                m[i] = false;
            }
        }
        masks.push(inside);
    }
    let noise = Normal::new(0.0f32, rng.random_range(0.0..0.08)).expect("finite std");
    let mut image = RgbImage::new(size, size);
    for (px, c) in image.pixels_mut().zip(&pixels) {
        let shared = noise.sample(&mut rng);
        let v = c.map(|v| v + if grey { shared } else { noise.sample(&mut rng) });
        px.0 = v.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8);
    }
    let min_area = match sizes {
        ObjectSizes::Medium => (MIN_AREA_AT_256 * (s / 256.0).powi(2)).max(4.0) as usize,
        ObjectSizes::WithSmall => MIN_AREA_SMALL,
    };
    let objects = masks
        .iter()
        .filter(|m| m.iter().filter(|v| **v).count() >= min_area)
        .map(|m| object_of(m, size))
        .collect();
    Sample {
        name: format!("scene_{seed}"),
        image,
        objects,
    }
}

/// The object (box and 0/255 mask) of a row-major boolean mask.
fn object_of(mask: &[bool], size: u32) -> Object {
    let (mut x1, mut y1, mut x2, mut y2) = (u32::MAX, u32::MAX, 0, 0);
    for (i, _) in mask.iter().enumerate().filter(|(_, v)| **v) {
        let (x, y) = (i as u32 % size, i as u32 / size);
        (x1, y1, x2, y2) = (x1.min(x), y1.min(y), x2.max(x + 1), y2.max(y + 1));
    }
    let raw = mask.iter().map(|&v| if v { 255 } else { 0 }).collect();
    Object {
        bbox: [x1, y1, x2, y2],
        class: 1,
        mask: GrayImage::from_raw(size, size, raw).expect("size × size values"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Ellipse,
    Rectangle,
    Polygon,
    Star,
    Ring,
    Blob,
    Bar,
    Crescent,
    LShape,
}

pub(crate) const KINDS: [Kind; 9] = [
    Kind::Ellipse,
    Kind::Rectangle,
    Kind::Polygon,
    Kind::Star,
    Kind::Ring,
    Kind::Blob,
    Kind::Bar,
    Kind::Crescent,
    Kind::LShape,
];

/// A shape in its own rotated frame: `(u, v)` scaled by the radii `(rx, ry)`.
pub(crate) struct Shape {
    pub kind: Kind,
    pub centre: (f32, f32),
    radii: (f32, f32),
    angle: f32,
    /// Kind-specific numbers: polygon vertices `(u, v)` pairs, star points, ring hole, blob
    /// harmonics, ...
    params: Vec<f32>,
}

impl Shape {
    /// A random shape of a random kind in an `s × s` image.
    pub fn random(rng: &mut StdRng, s: f32, sizes: ObjectSizes) -> Self {
        let kind = KINDS[rng.random_range(0..KINDS.len())];
        Self::random_of(kind, rng, s, sizes)
    }

    /// A random shape of `kind` in an `s × s` image.
    pub fn random_of(kind: Kind, rng: &mut StdRng, s: f32, sizes: ObjectSizes) -> Self {
        let mut radii = match sizes {
            ObjectSizes::Medium => {
                let r = |rng: &mut StdRng| rng.random_range(0.04..0.22) * s;
                (r(rng), r(rng))
            }
            ObjectSizes::WithSmall => {
                // One log-uniform size, then each radius a part of it, so that small objects
                // stay a few pixels thick instead of becoming one-pixel slivers.
                let size = rng.random_range(0.006f32.ln()..0.22f32.ln()).exp() * s;
                (
                    size * rng.random_range(0.3..1.0),
                    size * rng.random_range(0.3..1.0),
                )
            }
        };
        let params = match kind {
            Kind::Polygon => {
                // Vertices at even angles and random radii, computed once (contains runs per
                // pixel).
                let n = rng.random_range(3..=8);
                let radii: Vec<f32> = (0..n).map(|_| rng.random_range(0.45..1.0)).collect();
                radii
                    .iter()
                    .enumerate()
                    .flat_map(|(i, r)| {
                        let a = 2.0 * PI * i as f32 / n as f32;
                        [r * a.cos(), r * a.sin()]
                    })
                    .collect()
            }
            Kind::Star => vec![rng.random_range(3..=7) as f32, rng.random_range(0.3..0.55)],
            Kind::Ring => vec![rng.random_range(0.4..0.7)],
            Kind::Blob => (0..6).map(|_| rng.random_range(-0.18..0.18)).collect(),
            Kind::Bar => {
                radii = (
                    rng.random_range(0.12..0.35) * s,
                    rng.random_range(0.012..0.03) * s,
                );
                vec![]
            }
            Kind::Crescent => vec![rng.random_range(0.35..0.7)],
            Kind::LShape => vec![rng.random_range(0.3..0.6)],
            Kind::Ellipse | Kind::Rectangle => vec![],
        };
        let margin = 0.08 * s;
        Self {
            kind,
            centre: (
                rng.random_range(margin..s - margin),
                rng.random_range(margin..s - margin),
            ),
            radii,
            angle: rng.random_range(0.0..PI),
            params,
        }
    }

    /// Whether the point `(x, y)` (pixel centres at `i + 0.5`) is inside.
    pub fn contains(&self, (x, y): (f32, f32)) -> bool {
        let (dx, dy) = (x - self.centre.0, y - self.centre.1);
        let (sin, cos) = self.angle.sin_cos();
        let (u, v) = (
            (dx * cos + dy * sin) / self.radii.0,
            (-dx * sin + dy * cos) / self.radii.1,
        );
        if u.abs() > 1.5 || v.abs() > 1.5 {
            return false;
        }
        let (rho, phi) = (u.hypot(v), v.atan2(u));
        let p = &self.params;
        match self.kind {
            Kind::Ellipse => rho <= 1.0,
            Kind::Rectangle | Kind::Bar => u.abs() <= 1.0 && v.abs() <= 1.0,
            Kind::Polygon => inside_polygon(p, (u, v)),
            Kind::Star => rho <= 1.0 - p[1] * (0.5 - 0.5 * (p[0] * phi).cos()),
            Kind::Ring => rho <= 1.0 && rho >= p[0],
            Kind::Blob => {
                let wobble: f32 = (0..3)
                    .map(|j| p[2 * j] * ((j + 2) as f32 * phi + 6.0 * p[2 * j + 1]).cos())
                    .sum();
                rho <= 0.85 + wobble
            }
            Kind::Crescent => rho <= 1.0 && (u - p[0]).hypot(v) > 0.85,
            Kind::LShape => {
                (u.abs() <= 1.0 && v.abs() <= 1.0)
                    && (u <= -1.0 + 2.0 * p[0] || v >= 1.0 - 2.0 * p[0])
            }
        }
    }
}

/// Even-odd rule; `vertices` as flat `(x, y)` pairs.
fn inside_polygon(vertices: &[f32], (x, y): (f32, f32)) -> bool {
    let n = vertices.len() / 2;
    let vertex = |i: usize| (vertices[2 * i], vertices[2 * i + 1]);
    let mut inside = false;
    let mut j = n - 1;
    for i in 0..n {
        let ((xi, yi), (xj, yj)) = (vertex(i), vertex(j));
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// How a region is coloured (values 0–1).
struct Fill {
    base: [f32; 3],
    second: [f32; 3],
    pattern: Pattern,
}

enum Pattern {
    Solid,
    /// A linear ramp from `base` to `second` along the direction.
    Gradient {
        dir: (f32, f32),
        length: f32,
    },
    Stripes {
        dir: (f32, f32),
        period: f32,
    },
    Checker {
        period: f32,
    },
}

impl Fill {
    /// A random fill; an object's (`against` = the background at its centre) differs from it
    /// by at least 0.25 in some channel (in brightness for grey scenes), so it can be seen.
    fn random(
        rng: &mut StdRng,
        s: f32,
        against: Option<[f32; 3]>,
        grey: bool,
        background: bool,
    ) -> Self {
        let colour = |rng: &mut StdRng| {
            if grey {
                [rng.random_range(0.0..1.0f32); 3]
            } else {
                [(); 3].map(|_| rng.random_range(0.0..1.0f32))
            }
        };
        let mut base = colour(rng);
        if let Some(bg) = against {
            for _ in 0..20 {
                let distance = base
                    .iter()
                    .zip(bg)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                if distance >= 0.25 {
                    break;
                }
                base = colour(rng);
            }
        }
        // Patterns stay subtle so the object keeps one identity: the second colour is near.
        let contrast = if background { 0.35 } else { 0.2 };
        let second = base.map(|v| (v + rng.random_range(-contrast..contrast)).clamp(0.0, 1.0));
        let second = if grey { [second[0]; 3] } else { second };
        let angle = rng.random_range(0.0..PI);
        let dir = (angle.cos(), angle.sin());
        let pattern = match rng.random_range(0..if background { 3 } else { 4 }) {
            0 => Pattern::Solid,
            1 => Pattern::Gradient { dir, length: s },
            2 => Pattern::Stripes {
                dir,
                period: rng.random_range(0.02..0.08) * s,
            },
            _ => Pattern::Checker {
                period: rng.random_range(0.02..0.06) * s,
            },
        };
        Self {
            base,
            second,
            pattern,
        }
    }

    fn colour(&self, (x, y): (f32, f32)) -> [f32; 3] {
        let t = match self.pattern {
            Pattern::Solid => 0.0,
            Pattern::Gradient { dir, length } => ((x * dir.0 + y * dir.1) / length).clamp(0.0, 1.0),
            Pattern::Stripes { dir, period } => {
                f32::from(((x * dir.0 + y * dir.1) / period).floor() as i64 % 2 != 0)
            }
            Pattern::Checker { period } => {
                f32::from(((x / period).floor() + (y / period).floor()) as i64 % 2 != 0)
            }
        };
        [0, 1, 2].map(|c| self.base[c] * (1.0 - t) + self.second[c] * t)
    }
}

/// Writes scenes `first_seed .. first_seed + count` as a COCO data set: `dir/images/*.png` and
/// `dir/annotations.json` (one RLE annotation per object), each file written atomically.
pub fn write_coco(
    dir: &Path,
    count: usize,
    first_seed: u64,
    size: u32,
    max_objects: usize,
) -> Result<()> {
    let images_dir = dir.join("images");
    std::fs::create_dir_all(&images_dir)
        .with_context(|| format!("cannot create {}", images_dir.display()))?;
    let (mut images, mut annotations) = (Vec::new(), Vec::new());
    for k in 0..count {
        let seed = first_seed + k as u64;
        let sample = scene(seed, size, max_objects);
        let file_name = format!("{}.png", sample.name);
        let path = images_dir.join(&file_name);
        let mut png = Vec::new();
        sample
            .image
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
        write_atomic(&path, |w| Ok(w.write_all(&png)?))?;
        images.push(serde_json::json!({
            "id": k + 1, "file_name": file_name, "width": size, "height": size,
        }));
        for o in &sample.objects {
            let column_major: Vec<u8> = (0..size * size)
                .map(|i| u8::from(o.mask.as_raw()[((i % size) * size + i / size) as usize] > 0))
                .collect();
            let rle = Rle::from_column_major(&column_major, size, size);
            let [x1, y1, x2, y2] = o.bbox;
            annotations.push(serde_json::json!({
                "id": annotations.len() + 1,
                "image_id": k + 1,
                "category_id": 1,
                "segmentation": {"size": [size, size], "counts": rle.to_string_compressed()},
                "area": rle.area(),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "iscrowd": 0,
            }));
        }
    }
    let json = serde_json::to_string(&serde_json::json!({
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object"}],
    }))?;
    write_atomic(&dir.join("annotations.json"), |w| {
        Ok(w.write_all(json.as_bytes())?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_are_a_function_of_their_seed() {
        let (a, b) = (scene(7, 128, 6), scene(7, 128, 6));
        assert_eq!(a, b);
        assert_ne!(a.image, scene(8, 128, 6).image);
    }

    #[test]
    fn occluded_pixels_leave_the_masks_below() {
        for seed in 0..20 {
            let sample = scene(seed, 96, 8);
            assert!(sample.objects.len() <= 8);
            let mut covered = vec![0u8; 96 * 96];
            for o in &sample.objects {
                for (c, &m) in covered.iter_mut().zip(o.mask.as_raw()) {
                    *c += u8::from(m > 0);
                }
                let [x1, y1, x2, y2] = o.bbox;
                assert!(x1 < x2 && y1 < y2 && x2 <= 96 && y2 <= 96);
            }
            assert!(
                covered.iter().all(|&c| c <= 1),
                "masks overlap in scene {seed}"
            );
        }
    }

    #[test]
    fn small_object_scenes_hold_objects_below_the_medium_floor() {
        let area = |o: &Object| o.mask.as_raw().iter().filter(|&&v| v > 0).count();
        let medium_floor = MIN_AREA_AT_256 as usize * 4;
        let (mut small, mut medium_smallest) = (0, usize::MAX);
        for seed in 0..20 {
            let with_small = scene_with(seed, 512, 8, ObjectSizes::WithSmall);
            small += with_small
                .objects
                .iter()
                .filter(|o| area(o) < medium_floor)
                .count();
            assert!(with_small.objects.iter().all(|o| area(o) >= MIN_AREA_SMALL));
            let medium = scene(seed, 512, 8);
            medium_smallest =
                medium_smallest.min(medium.objects.iter().map(area).min().unwrap_or(usize::MAX));
        }
        assert!(small >= 10, "{small} small objects in 20 scenes");
        assert!(medium_smallest >= medium_floor);
    }
}
