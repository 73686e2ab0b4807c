//! Seeded training augmentation (docs/methods.md#augmentation) and box-prompt jitter (docs/methods.md#box-prompt-jitter).
//!
//! [`Augment::apply`] transforms a [`Sample`] jointly (image, boxes, per-object masks) in its own
//! pixel frame, before pre-processing, in the authors' order: horizontal flip, rotation, random
//! resized crop, colour jitter. The authors (torchvision v2 on the padded 1024 × 1024 frame)
//! only promise distributional parity; differences, all deliberate:
//!
//! - The crop is resized back to the input size `(h, w)` rather than to `S × S`, so that the
//!   augmentation does not depend on the model size (pre-processing follows). For the square
//!   sonar frames of the authors this is the same geometry.
//! - Nearest-neighbour resampling uses half-pixel centres (`floor((d + 0.5)·in/out)`, PIL's
//!   `NEAREST`), consistent with the box transform; torchvision's tensor path uses PyTorch's
//!   legacy `floor(d·in/out)`, a shift of up to half a source pixel.
//! - Boxes are carried in floating point through the chain and rounded outwards once at the
//!   end (`floor` for x1/y1, `ceil` for x2/y2), then clamped to the image; torchvision keeps an
//!   integer dtype and truncates after every step.
//! - After augmentation each mask is restricted to its box (the authors build the per-object
//!   target as `m[y1:y2, x1:x2] = mask[y1:y2, x1:x2]` from the augmented box), and objects whose
//!   box or mask became empty are **dropped**: the authors keep degenerate boxes, but an empty
//!   target teaches nothing.

use super::{Object, Sample};
use crate::data::preprocess::resize_nearest;
use image::{GrayImage, ImageBuffer, Pixel, RgbImage};
use rand::Rng;
use rand::rngs::StdRng;

/// torchvision `RandomResizedCrop`'s default aspect-ratio range `(3/4, 4/3)`.
pub const CROP_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// The training augmentation (docs/methods.md#augmentation). A component is off when its parameter is neutral:
/// `flip = false`, `rotate_degrees = 0`, `crop_scale.0 >= 1` (no crop), `brightness = 0`,
/// `contrast = 0`. Disabled components draw no random numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    /// Horizontal flip with probability 0.5.
    pub flip: bool,
    /// Rotation by an angle uniform in `[−d, d]` degrees (counter-clockwise for positive angles,
    /// as torchvision), about the image centre, nearest, no expand, fill 0.
    pub rotate_degrees: f32,
    /// `RandomResizedCrop` area fraction range; the aspect ratio range is [`CROP_RATIO`].
    pub crop_scale: (f32, f32),
    /// Brightness factor uniform in `[1 − b, 1 + b]`.
    pub brightness: f32,
    /// Contrast factor uniform in `[1 − c, 1 + c]`.
    pub contrast: f32,
}

impl Default for Augment {
    /// The authors' settings: flip, ±30°, scale (0.6, 1), brightness and contrast 0.2.
    fn default() -> Self {
        Self {
            flip: true,
            rotate_degrees: 30.0,
            crop_scale: (0.6, 1.0),
            brightness: 0.2,
            contrast: 0.2,
        }
    }
}

impl Augment {
    /// No augmentation at all (the identity, apart from dropping empty objects).
    pub fn none() -> Self {
        Self {
            flip: false,
            rotate_degrees: 0.0,
            crop_scale: (1.0, 1.0),
            brightness: 0.0,
            contrast: 0.0,
        }
    }

    /// Augments `sample`; the same `rng` state gives the same output.
    pub fn apply(&self, sample: &Sample, rng: &mut StdRng) -> Sample {
        let mut image = sample.image.clone();
        let mut boxes: Vec<[f64; 4]> = sample
            .objects
            .iter()
            .map(|o| o.bbox.map(f64::from))
            .collect();
        let mut masks: Vec<GrayImage> = sample.objects.iter().map(|o| o.mask.clone()).collect();

        if self.flip && rng.random_bool(0.5) {
            image = image::imageops::flip_horizontal(&image);
            masks = masks.iter().map(image::imageops::flip_horizontal).collect();
            let w = f64::from(image.width());
            for b in &mut boxes {
                *b = flip_box(*b, w);
            }
        }

        if self.rotate_degrees > 0.0 {
            let d = f64::from(self.rotate_degrees);
            let angle = rng.random_range(-d..=d);
            image = rotate(&image, angle);
            masks = masks.iter().map(|m| rotate(m, angle)).collect();
            let (w, h) = image.dimensions();
            for b in &mut boxes {
                *b = rotate_box(*b, angle, (h as usize, w as usize));
            }
        }

        if self.crop_scale.0 < 1.0 {
            let (w, h) = image.dimensions();
            let (h, w) = (h as usize, w as usize);
            let scale = (f64::from(self.crop_scale.0), f64::from(self.crop_scale.1));
            let crop = random_resized_crop_params(h, w, scale, CROP_RATIO, rng);
            image = resized_crop(&image, crop);
            masks = masks.iter().map(|m| resized_crop(m, crop)).collect();
            for b in &mut boxes {
                *b = crop_box(*b, crop, (h, w));
            }
        }

        if self.brightness > 0.0 || self.contrast > 0.0 {
            let factor = |rng: &mut StdRng, a: f32| {
                (a > 0.0).then(|| {
                    let a = f64::from(a);
                    rng.random_range((1.0 - a).max(0.0)..=1.0 + a) as f32
                })
            };
            let b = factor(rng, self.brightness);
            let c = factor(rng, self.contrast);
            let brightness_first = rng.random_bool(0.5);
            let brightness = |img: &mut RgbImage| {
                if let Some(f) = b {
                    adjust_brightness(img, f);
                }
            };
            let contrast = |img: &mut RgbImage| {
                if let Some(f) = c {
                    adjust_contrast(img, f);
                }
            };
            if brightness_first {
                brightness(&mut image);
                contrast(&mut image);
            } else {
                contrast(&mut image);
                brightness(&mut image);
            }
        }

        let (w, h) = image.dimensions();
        let objects = sample
            .objects
            .iter()
            .zip(boxes)
            .zip(masks)
            .filter_map(|((o, b), m)| finish_object(o.class, b, m, (h, w)))
            .collect();
        Sample {
            name: sample.name.clone(),
            image,
            objects,
        }
    }
}

/// Rounds a box outwards to integers, clamps it to the image, restricts the mask to it; `None`
/// when the box or the restricted mask is empty.
fn finish_object(
    class: usize,
    b: [f64; 4],
    mut mask: GrayImage,
    (h, w): (u32, u32),
) -> Option<Object> {
    // A small tolerance keeps exact integers (up to float noise) from growing by one.
    const EPS: f64 = 1e-6;
    let lo = |v: f64, max: u32| (v + EPS).floor().clamp(0.0, f64::from(max)) as u32;
    let hi = |v: f64, max: u32| (v - EPS).ceil().clamp(0.0, f64::from(max)) as u32;
    let bbox = [lo(b[0], w), lo(b[1], h), hi(b[2], w), hi(b[3], h)];
    if bbox[2] <= bbox[0] || bbox[3] <= bbox[1] {
        return None;
    }
    let mut any = false;
    for (x, y, p) in mask.enumerate_pixels_mut() {
        if x < bbox[0] || x >= bbox[2] || y < bbox[1] || y >= bbox[3] {
            p.0[0] = 0;
        } else {
            any |= p.0[0] > 0;
        }
    }
    any.then_some(Object { bbox, class, mask })
}

/// Horizontal flip of a box in an image `w` wide: `x ↦ w − x`.
pub fn flip_box(b: [f64; 4], w: f64) -> [f64; 4] {
    [w - b[2], b[1], w - b[0], b[3]]
}

/// Forward rotation by `angle` degrees counter-clockwise (y axis pointing down) of a point
/// relative to the centre.
fn rotate_vec(x: f64, y: f64, angle: f64) -> (f64, f64) {
    let (s, c) = angle.to_radians().sin_cos();
    (x * c + y * s, -x * s + y * c)
}

/// The axis-aligned box of a box's four corners rotated by `angle` degrees counter-clockwise
/// about the image centre `(w/2, h/2)`, clamped to the image (torchvision's box rotation).
pub fn rotate_box(b: [f64; 4], angle: f64, (h, w): (usize, usize)) -> [f64; 4] {
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let corners = [(b[0], b[1]), (b[2], b[1]), (b[0], b[3]), (b[2], b[3])];
    let mut out = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    for (x, y) in corners {
        let (rx, ry) = rotate_vec(x - cx, y - cy, angle);
        let (rx, ry) = (rx + cx, ry + cy);
        out = [
            out[0].min(rx),
            out[1].min(ry),
            out[2].max(rx),
            out[3].max(ry),
        ];
    }
    [
        out[0].clamp(0.0, w as f64),
        out[1].clamp(0.0, h as f64),
        out[2].clamp(0.0, w as f64),
        out[3].clamp(0.0, h as f64),
    ]
}

/// Rotates an interleaved `h × w × channels` image by `angle` degrees counter-clockwise about
/// its centre, nearest neighbour, same size, fill 0 — torchvision's `rotate(.., NEAREST,
/// expand=False)` on tensors: each output pixel centre is mapped back by the inverse rotation
/// and the source pixel is `round_half_even(u − 0.5)` (`grid_sample` nearest, align_corners
/// false).
pub fn rotate_nearest(src: &[u8], h: usize, w: usize, channels: usize, angle: f64) -> Vec<u8> {
    assert_eq!(src.len(), h * w * channels, "buffer is not h*w*channels");
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let mut out = vec![0u8; src.len()];
    for y in 0..h {
        for x in 0..w {
            // Inverse of the forward rotation = rotation by −angle.
            let (u, v) = rotate_vec(x as f64 + 0.5 - cx, y as f64 + 0.5 - cy, -angle);
            let sx = (u + cx - 0.5).round_ties_even();
            let sy = (v + cy - 0.5).round_ties_even();
            if sx >= 0.0 && sy >= 0.0 && sx < w as f64 && sy < h as f64 {
                let (si, di) = (
                    (sy as usize * w + sx as usize) * channels,
                    (y * w + x) * channels,
                );
                out[di..di + channels].copy_from_slice(&src[si..si + channels]);
            }
        }
    }
    out
}

/// Applies a size-keeping operation on raw `h × w × channels` u8 buffers to an image of any
/// 8-bit pixel type (the RGB image and the grey masks go through the same code).
fn same_size<P: Pixel<Subpixel = u8>>(
    img: &ImageBuffer<P, Vec<u8>>,
    op: impl FnOnce(&[u8], usize, usize, usize) -> Vec<u8>,
) -> ImageBuffer<P, Vec<u8>> {
    let (w, h) = img.dimensions();
    let buf = op(
        img.as_raw(),
        h as usize,
        w as usize,
        usize::from(P::CHANNEL_COUNT),
    );
    ImageBuffer::from_raw(w, h, buf).expect("size is kept")
}

fn rotate<P: Pixel<Subpixel = u8>>(
    img: &ImageBuffer<P, Vec<u8>>,
    angle: f64,
) -> ImageBuffer<P, Vec<u8>> {
    same_size(img, |buf, h, w, ch| rotate_nearest(buf, h, w, ch, angle))
}

/// A crop window: top `i`, left `j`, height `h`, width `w` (torchvision's `(i, j, h, w)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    pub i: usize,
    pub j: usize,
    pub h: usize,
    pub w: usize,
}

/// torchvision `RandomResizedCrop.get_params`: up to 10 attempts of an area fraction uniform in
/// `scale` and a log-uniform aspect ratio in `ratio`, `w = round(√(area·r))`, `h = round(√(area/r))`
/// (Python rounding, half to even), accepted when it fits, at a uniform position; otherwise the
/// central crop clamped to `ratio` (or the whole image).
pub fn random_resized_crop_params(
    height: usize,
    width: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut StdRng,
) -> Crop {
    let area = (height * width) as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    let uniform = |rng: &mut StdRng, a: f64, b: f64| {
        if a < b { rng.random_range(a..b) } else { a }
    };
    for _ in 0..10 {
        let target = area * uniform(rng, scale.0, scale.1);
        let r = uniform(rng, lr0, lr1).exp();
        let w = (target * r).sqrt().round_ties_even() as usize;
        let h = (target / r).sqrt().round_ties_even() as usize;
        if w > 0 && w <= width && h > 0 && h <= height {
            let i = rng.random_range(0..=height - h);
            let j = rng.random_range(0..=width - w);
            return Crop { i, j, h, w };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (h, w) = if in_ratio < ratio.0 {
        ((width as f64 / ratio.0).round_ties_even() as usize, width)
    } else if in_ratio > ratio.1 {
        (height, (height as f64 * ratio.1).round_ties_even() as usize)
    } else {
        (height, width)
    };
    Crop {
        i: (height - h) / 2,
        j: (width - w) / 2,
        h,
        w,
    }
}

/// Crops each channel plane and resizes it back to the full size, nearest (half-pixel centres).
fn resized_crop_planes(src: &[u8], h: usize, w: usize, channels: usize, c: Crop) -> Vec<u8> {
    let mut out = vec![0u8; h * w * channels];
    for ch in 0..channels {
        let plane: Vec<u8> = (c.i..c.i + c.h)
            .flat_map(|y| (c.j..c.j + c.w).map(move |x| (y, x)))
            .map(|(y, x)| src[(y * w + x) * channels + ch])
            .collect();
        let resized = resize_nearest(&plane, c.h, c.w, h, w);
        for (k, v) in resized.into_iter().enumerate() {
            out[k * channels + ch] = v;
        }
    }
    out
}

fn resized_crop<P: Pixel<Subpixel = u8>>(
    img: &ImageBuffer<P, Vec<u8>>,
    c: Crop,
) -> ImageBuffer<P, Vec<u8>> {
    same_size(img, |buf, h, w, ch| resized_crop_planes(buf, h, w, ch, c))
}

/// A box under crop `c` followed by the resize back to `(h, w)`, clamped.
pub fn crop_box(b: [f64; 4], c: Crop, (h, w): (usize, usize)) -> [f64; 4] {
    let sx = w as f64 / c.w as f64;
    let sy = h as f64 / c.h as f64;
    [
        ((b[0] - c.j as f64) * sx).clamp(0.0, w as f64),
        ((b[1] - c.i as f64) * sy).clamp(0.0, h as f64),
        ((b[2] - c.j as f64) * sx).clamp(0.0, w as f64),
        ((b[3] - c.i as f64) * sy).clamp(0.0, h as f64),
    ]
}

/// torchvision v2 `adjust_brightness` on uint8: `(p·f).clamp(0, 255)` in f32, truncated.
pub fn adjust_brightness(img: &mut RgbImage, factor: f32) {
    for p in img.iter_mut() {
        *p = (f32::from(*p) * factor).clamp(0.0, 255.0) as u8;
    }
}

/// torchvision v2 `adjust_contrast` on uint8 RGB: blend with the mean of the floored grey image
/// (`0.2989 r + 0.587 g + 0.114 b`), `(p·f + mean·(1 − f)).clamp(0, 255)`, truncated.
pub fn adjust_contrast(img: &mut RgbImage, factor: f32) {
    let n = u64::from(img.width()) * u64::from(img.height());
    if n == 0 {
        return;
    }
    let sum: f64 = img
        .pixels()
        .map(|p| {
            let [r, g, b] = p.0.map(f32::from);
            f64::from((r * 0.2989 + g * 0.587 + b * 0.114).floor())
        })
        .sum();
    let mean = (sum / n as f64) as f32;
    let offset = mean * (1.0 - factor);
    for p in img.iter_mut() {
        *p = (f32::from(*p) * factor + offset).clamp(0.0, 255.0) as u8;
    }
}

/// Box-prompt jitter of the `[REM]` training loop (docs/methods.md#box-prompt-jitter): every coordinate of every box gets
/// an independent integer uniform in `[0, max_px_at_1024)` added (the authors' additive shift,
/// 50 → `randint(0, 50)`), scaled by `input_size / 1024` for another input size; no clipping,
/// as the authors. Applied in the `S` frame after pre-processing. `max_px_at_1024 = 0` is a no-op.
pub fn jitter_boxes(
    boxes: &mut [[f32; 4]],
    max_px_at_1024: u32,
    input_size: usize,
    rng: &mut StdRng,
) {
    if max_px_at_1024 == 0 {
        return;
    }
    let scale = input_size as f32 / 1024.0;
    for b in boxes.iter_mut() {
        for v in b.iter_mut() {
            *v += rng.random_range(0..max_px_at_1024) as f32 * scale;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb};
    use rand::SeedableRng;

    fn box_mask(h: u32, w: u32, b: [u32; 4]) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            let inside = x >= b[0] && x < b[2] && y >= b[1] && y < b[3];
            Luma([if inside { 255 } else { 0 }])
        })
    }

    /// A 40 × 60 image with a gradient and two box-filling objects.
    fn sample() -> Sample {
        let (h, w) = (40, 60);
        let image = RgbImage::from_fn(w, h, |x, y| Rgb([(x * 4) as u8, (y * 6) as u8, 128]));
        let boxes = [[5, 8, 25, 30], [30, 2, 55, 20]];
        let objects = boxes
            .iter()
            .enumerate()
            .map(|(k, &b)| Object {
                bbox: b,
                class: k + 1,
                mask: box_mask(h, w, b),
            })
            .collect();
        Sample {
            name: "s".into(),
            image,
            objects,
        }
    }

    fn mask_extent(m: &GrayImage) -> Option<[u32; 4]> {
        let mut e: Option<[u32; 4]> = None;
        for (x, y, p) in m.enumerate_pixels() {
            if p.0[0] > 0 {
                let b = e.get_or_insert([x, y, x + 1, y + 1]);
                *b = [b[0].min(x), b[1].min(y), b[2].max(x + 1), b[3].max(y + 1)];
            }
        }
        e
    }

    #[test]
    fn flip_moves_boxes() {
        assert_eq!(
            flip_box([5.0, 8.0, 25.0, 30.0], 60.0),
            [35.0, 8.0, 55.0, 30.0]
        );
        let aug = Augment {
            flip: true,
            ..Augment::none()
        };
        let s = sample();
        let mut flipped = 0;
        for seed in 0..20 {
            let out = aug.apply(&s, &mut StdRng::seed_from_u64(seed));
            let was_flipped = out.image.get_pixel(0, 0).0[0] == s.image.get_pixel(59, 0).0[0];
            flipped += usize::from(was_flipped);
            let want = if was_flipped {
                [[35, 8, 55, 30], [5, 2, 30, 20]]
            } else {
                [[5, 8, 25, 30], [30, 2, 55, 20]]
            };
            for (o, b) in out.objects.iter().zip(want) {
                assert_eq!(o.bbox, b);
                assert_eq!(mask_extent(&o.mask), Some(b));
            }
        }
        assert!(flipped > 0 && flipped < 20);
    }

    #[test]
    fn rotation_by_90_degrees() {
        // 20 × 20, centre (10, 10): counter-clockwise by 90° (y down) maps (x, y) relative to
        // the centre to (y, −x): the box [4, 6, 12, 10] goes to [6, 8, 10, 16].
        let b = rotate_box([4.0, 6.0, 12.0, 10.0], 90.0, (20, 20));
        let want = [6.0, 8.0, 10.0, 16.0];
        for (v, w) in b.iter().zip(want) {
            assert!((v - w).abs() < 1e-9, "{b:?}");
        }
        let m = box_mask(20, 20, [4, 6, 12, 10]);
        let r = rotate(&m, 90.0);
        assert_eq!(r, box_mask(20, 20, [6, 8, 10, 16]));
        // A corner box rotated by 45° is clamped to the image.
        let b = rotate_box([0.0, 0.0, 20.0, 20.0], 45.0, (20, 20));
        assert_eq!(b, [0.0, 0.0, 20.0, 20.0]);
    }

    #[test]
    fn rotation_fills_with_zero() {
        let img = RgbImage::from_pixel(10, 20, Rgb([9, 9, 9]));
        let r = rotate(&img, 30.0);
        assert_eq!(r.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(r.get_pixel(5, 10).0, [9, 9, 9]);
        assert_eq!(rotate(&img, 0.0), img);
    }

    #[test]
    fn crop_params_follow_torchvision() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let c = random_resized_crop_params(40, 60, (0.6, 1.0), CROP_RATIO, &mut rng);
            assert!(c.i + c.h <= 40 && c.j + c.w <= 60 && c.h > 0 && c.w > 0);
            let frac = (c.h * c.w) as f64 / 2400.0;
            assert!((0.55..=1.0).contains(&frac), "{c:?}");
        }
        // Impossible scale → fallback: a 10 × 100 image is wider than 4/3, so h = 10,
        // w = round(10·4/3) = 13, centred.
        let c = random_resized_crop_params(10, 100, (2.0, 3.0), CROP_RATIO, &mut rng);
        assert_eq!(
            c,
            Crop {
                i: 0,
                j: 43,
                h: 10,
                w: 13
            }
        );
        let c = random_resized_crop_params(30, 30, (2.0, 3.0), CROP_RATIO, &mut rng);
        assert_eq!(
            c,
            Crop {
                i: 0,
                j: 0,
                h: 30,
                w: 30
            }
        );
    }

    #[test]
    fn crop_box_scales() {
        let c = Crop {
            i: 10,
            j: 20,
            h: 20,
            w: 30,
        };
        // Back to 40 × 60: ×2 both ways; clamped to the image.
        assert_eq!(
            crop_box([25.0, 15.0, 35.0, 20.0], c, (40, 60)),
            [10.0, 10.0, 30.0, 20.0]
        );
        assert_eq!(
            crop_box([0.0, 0.0, 100.0, 100.0], c, (40, 60)),
            [0.0, 0.0, 60.0, 40.0]
        );
    }

    #[test]
    fn augmented_masks_stay_inside_boxes() {
        let s = sample();
        let aug = Augment::default();
        let mut kept = 0;
        for seed in 0..40 {
            let out = aug.apply(&s, &mut StdRng::seed_from_u64(seed));
            assert_eq!(out.image.dimensions(), s.image.dimensions());
            for o in &out.objects {
                assert!(o.bbox[0] < o.bbox[2] && o.bbox[2] <= 60);
                assert!(o.bbox[1] < o.bbox[3] && o.bbox[3] <= 40);
                let e = mask_extent(&o.mask).expect("kept objects are not empty");
                assert!(e[0] >= o.bbox[0] && e[1] >= o.bbox[1]);
                assert!(e[2] <= o.bbox[2] && e[3] <= o.bbox[3]);
                assert!(o.mask.iter().all(|&v| v == 0 || v == 255));
                kept += 1;
            }
        }
        assert!(kept > 40);
    }

    #[test]
    fn same_seed_same_output() {
        let s = sample();
        let aug = Augment::default();
        let a = aug.apply(&s, &mut StdRng::seed_from_u64(42));
        let b = aug.apply(&s, &mut StdRng::seed_from_u64(42));
        assert_eq!(a.image, b.image);
        assert_eq!(a.objects.len(), b.objects.len());
        for (x, y) in a.objects.iter().zip(&b.objects) {
            assert_eq!((x.bbox, x.class, &x.mask), (y.bbox, y.class, &y.mask));
        }
        let c = aug.apply(&s, &mut StdRng::seed_from_u64(43));
        assert!(c.image != a.image);
    }

    #[test]
    fn empty_objects_are_dropped() {
        let (h, w) = (40, 60);
        let mut s = sample();
        // An empty mask, a zero-width box, and an object whose mask lies outside its box.
        s.objects.push(Object {
            bbox: [1, 1, 10, 10],
            class: 7,
            mask: GrayImage::new(w, h),
        });
        s.objects.push(Object {
            bbox: [10, 1, 10, 10],
            class: 8,
            mask: box_mask(h, w, [10, 1, 11, 10]),
        });
        s.objects.push(Object {
            bbox: [0, 0, 5, 5],
            class: 9,
            mask: box_mask(h, w, [20, 20, 30, 30]),
        });
        let out = Augment::none().apply(&s, &mut StdRng::seed_from_u64(0));
        let classes: Vec<usize> = out.objects.iter().map(|o| o.class).collect();
        assert_eq!(classes, [1, 2]);
        assert_eq!(out.image, s.image);
    }

    #[test]
    fn colour_jitter_as_torchvision() {
        let mut img = RgbImage::from_raw(2, 1, vec![200, 250, 0, 10, 20, 30]).unwrap();
        adjust_brightness(&mut img, 1.1);
        // 200·1.1 = 220.00001 → 220; 250·1.1 → 255 (clamped); 10·1.1 = 11.000001 → 11.
        assert_eq!(img.as_raw(), &[220, 255, 0, 11, 22, 33]);
        // Grey 100: floor(0.2989·100 + 0.587·100 + 0.114·100) = floor(99.99) = 99;
        // factor 0.5 → 100·0.5 + 99·0.5 = 99.5 → 99.
        let mut img = RgbImage::from_pixel(3, 3, Rgb([100; 3]));
        adjust_contrast(&mut img, 0.5);
        assert!(img.iter().all(|&v| v == 99));
        // Factor 2 on a two-level image 0 / 200 (grey floors 0 / 199, mean 99.5):
        // 0 → −99.5 → 0; 200 → 300.5 → 255.
        let mut img = RgbImage::from_raw(2, 1, vec![0, 0, 0, 200, 200, 200]).unwrap();
        adjust_contrast(&mut img, 2.0);
        assert_eq!(img.as_raw(), &[0, 0, 0, 255, 255, 255]);
    }

    #[test]
    fn jitter_adds_integers_below_the_maximum() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut boxes = vec![[10.0f32, 20.0, 30.0, 40.0]; 200];
        jitter_boxes(&mut boxes, 50, 1024, &mut rng);
        let mut seen = [false; 50];
        for b in &boxes {
            for (v, base) in b.iter().zip([10.0, 20.0, 30.0, 40.0]) {
                let d = v - base;
                assert!(d.fract() == 0.0 && (0.0..50.0).contains(&d));
                seen[d as usize] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
        // At S = 512 the shift halves (multiples of 0.5 below 25).
        let mut boxes = vec![[0.0f32; 4]; 50];
        jitter_boxes(&mut boxes, 50, 512, &mut rng);
        assert!(
            boxes
                .iter()
                .flatten()
                .all(|&v| (v * 2.0).fract() == 0.0 && v < 25.0)
        );
        // Same seed → same jitter; 0 → no-op.
        let (mut a, mut b) = ([[0.0f32; 4]; 3], [[0.0f32; 4]; 3]);
        jitter_boxes(&mut a, 50, 1024, &mut StdRng::seed_from_u64(9));
        jitter_boxes(&mut b, 50, 1024, &mut StdRng::seed_from_u64(9));
        assert_eq!(a, b);
        jitter_boxes(&mut a, 0, 1024, &mut rng);
        assert_eq!(a, b);
    }
}
