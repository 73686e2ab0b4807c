//! From a [`Sample`] to the model's input at size `S` (docs/sam.md#preprocessing-and-postprocessing, #other-input-sizes; docs/methods.md#sonar-data).
//!
//! Two pipelines:
//! - [`Preprocessing::Sam`]: SAM's predictor path (ResizeLongestSide with PIL's antialiased
//!   bilinear, SAM mean/std on the 0–255 scale, zero padding bottom/right after normalisation).
//! - [`Preprocessing::Sonar`]: the `[REM]`/SonarSAM loader: centred zero padding to a square in
//!   pixel space, OpenCV `INTER_LINEAR` resize to `S × S`, `ToTensor` (÷255) then
//!   `(v − mean)/std` (padded pixels therefore become `−mean/std`, not 0).
//!
//! Every [`ModelInput`] carries a [`FrameMap`] that maps between original pixels and the `S`
//! frame in both directions, so that predictions can be evaluated at the original resolution.

use super::Sample;
use crate::sam::transforms::{
    Normalization, ResizeLongestSide, normalize_pad, postprocess_logits, resize_bilinear_antialias,
    upsample_bilinear,
};
use rayon::prelude::*;

/// Marine-debris (watertank-segmentation) training-split statistics on the 0–1 scale, as the
/// SonarSAM / SAM-COBOT loaders hard-code them (`T.Normalize(mean=[0.1701], std=[0.1848])`).
pub const SONAR_MEAN: f32 = 0.1701;
/// See [`SONAR_MEAN`].
pub const SONAR_STD: f32 = 0.1848;

/// Which pre-processing turns a sample into model input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Preprocessing {
    /// SAM's predictor path (docs/sam.md#preprocessing-and-postprocessing).
    Sam,
    /// The sonar path (docs/methods.md#sonar-data): centred square padding, OpenCV bilinear resize, then the given
    /// normalisation. The authors use [`Normalization::unit_scale`]`(0.1701, 0.1848)`
    /// ([`Preprocessing::sonar_default`]); docs/methods.md#other-data-formats uses this path with SAM's mean/std
    /// ([`Normalization::SAM`]) for other natural / remote-sensing sets.
    Sonar { norm: Normalization },
}

impl Preprocessing {
    /// The sonar path with the marine-debris statistics (0.1701, 0.1848).
    pub fn sonar_default() -> Self {
        Self::sonar(SONAR_MEAN, SONAR_STD)
    }

    /// Checks a data-set mean and standard deviation (0–1 scale) before they are used: both
    /// positive and finite, or every normalised pixel would be infinite or NaN.
    pub fn check_statistics(mean: f32, std: f32) -> Result<(), String> {
        for (flag, value) in [("--mean", mean), ("--std", std)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!("{flag} {value}: must be a positive finite number"));
            }
        }
        Ok(())
    }

    /// The sonar path with one data-set mean/std (0–1 scale) for all three channels.
    pub fn sonar(mean: f32, std: f32) -> Self {
        Self::Sonar {
            norm: Normalization::unit_scale(mean, std),
        }
    }
}

/// Where the image content sits inside the `S × S` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// SAM: resized to `new = (new_h, new_w)` and placed top-left; padding bottom/right.
    TopLeft { new: (usize, usize) },
    /// Sonar: zero-padded to a `square × square` image (`square = max(h, w)`) with `pad =
    /// (top, left)` pixels before the content, then that square resized to `S × S`.
    CentredSquare { square: usize, pad: (usize, usize) },
}

/// The geometry between an original `h × w` image and the `S × S` model frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMap {
    /// Original `(h, w)`.
    pub orig: (usize, usize),
    /// The model input size `S`.
    pub size: usize,
    pub layout: Layout,
}

impl FrameMap {
    pub fn sam(orig: (usize, usize), size: usize) -> Self {
        let new = ResizeLongestSide::new(size).new_size(orig.0, orig.1);
        Self {
            orig,
            size,
            layout: Layout::TopLeft { new },
        }
    }

    pub fn centred_square(orig: (usize, usize), size: usize) -> Self {
        let (h, w) = orig;
        let square = h.max(w);
        // [REM]: if h > w pad left/right (left gets the floor half), else top/bottom.
        let pad = if h > w {
            (0, (h - w) / 2)
        } else {
            ((w - h) / 2, 0)
        };
        Self {
            orig,
            size,
            layout: Layout::CentredSquare { square, pad },
        }
    }

    /// The content rectangle in `S`-frame pixels, `[y0, x0, y1, x1]` (end-exclusive).
    ///
    /// SAM: `[0, 0, new_h, new_w]`. Sonar: the content spans the continuous interval
    /// `[pad·S/square, (pad + len)·S/square)`, which need not fall on pixel edges; the rectangle
    /// holds the pixels whose centres lie inside it (edges rounded half up, exact integer
    /// arithmetic). For 480 × 320 at 1024 that is columns `[171, 853)` (the authors' metric crop
    /// uses `[170, 853)`, docs/methods.md#metrics).
    pub fn content_rect(&self) -> [usize; 4] {
        match self.layout {
            Layout::TopLeft { new } => [0, 0, new.0, new.1],
            Layout::CentredSquare { square, pad } => {
                let s = self.size;
                let round = |p: usize| (2 * p * s + square) / (2 * square);
                [
                    round(pad.0),
                    round(pad.1),
                    round(pad.0 + self.orig.0),
                    round(pad.1 + self.orig.1),
                ]
            }
        }
    }

    /// `(h, w)` of [`FrameMap::content_rect`].
    pub fn valid(&self) -> (usize, usize) {
        let [y0, x0, y1, x1] = self.content_rect();
        (y1 - y0, x1 - x0)
    }

    /// A point in original pixel coordinates (continuous; pixel `i` spans `[i, i+1)`) to the
    /// `S` frame, without rounding. SAM: `x·new_w/w`; sonar: `(x + pad)·S/square`.
    pub fn to_frame(&self, x: f64, y: f64) -> (f64, f64) {
        let (h, w) = self.orig;
        match self.layout {
            Layout::TopLeft { new } => (x * new.1 as f64 / w as f64, y * new.0 as f64 / h as f64),
            Layout::CentredSquare { square, pad } => {
                let r = self.size as f64 / square as f64;
                ((x + pad.1 as f64) * r, (y + pad.0 as f64) * r)
            }
        }
    }

    /// The inverse of [`FrameMap::to_frame`].
    pub fn to_original_point(&self, x: f64, y: f64) -> (f64, f64) {
        let (h, w) = self.orig;
        match self.layout {
            Layout::TopLeft { new } => (x * w as f64 / new.1 as f64, y * h as f64 / new.0 as f64),
            Layout::CentredSquare { square, pad } => {
                let r = square as f64 / self.size as f64;
                (x * r - pad.1 as f64, y * r - pad.0 as f64)
            }
        }
    }

    /// Maps a `side × side` plane in the `S` frame (logits at `side = S`, or the decoder's
    /// low-res `side = S/4`) to the original `h × w` resolution, bilinear with
    /// `align_corners = false` (PyTorch's CPU arithmetic), padding excluded.
    ///
    /// - SAM: exactly `postprocess_masks` (upsample to `S × S`, crop `[:new_h, :new_w]`, upsample
    ///   to `(h, w)`); for `side = S` the first step is the identity.
    /// - Sonar: the padded square is not pixel-aligned in the `S` frame, so instead of cropping
    ///   first the plane is resized to the padded `square × square` and the padding cropped
    ///   (`F.interpolate(x, (square, square))[..., top:top+h, left:left+w]`): the exact inverse of
    ///   the forward pad-then-resize, equal to cropping the continuous content region first.
    pub fn to_original(&self, plane: &[f32], side: usize) -> Vec<f32> {
        assert_eq!(plane.len(), side * side, "plane is not side*side");
        let (h, w) = self.orig;
        match self.layout {
            Layout::TopLeft { new } => postprocess_logits(plane, side, self.size, new, self.orig),
            Layout::CentredSquare { square, pad } => {
                let full = upsample_bilinear(plane, side, side, square, square);
                full.chunks(square)
                    .skip(pad.0)
                    .take(h)
                    .flat_map(|row| row[pad.1..pad.1 + w].iter().copied())
                    .collect()
            }
        }
    }
}

/// One sample ready for the model.
#[derive(Debug, Clone)]
pub struct ModelInput {
    /// CHW `[3, S, S]`.
    pub image: Vec<f32>,
    /// `(x1, y1, x2, y2)` per object in the `S` frame.
    pub boxes: Vec<[f32; 4]>,
    /// Per object, `S × S` row-major, values 0.0 / 1.0, in the same frame.
    pub targets: Vec<Vec<f32>>,
    pub classes: Vec<usize>,
    /// `(h, w)` of the region of the frame that holds image content (SAM: top-left `new_h ×
    /// new_w`; sonar: [`FrameMap::content_rect`], whose offset the frame map gives).
    pub valid: (usize, usize),
    pub frame: FrameMap,
}

/// Turns a sample into model input at size `size` (`S`).
pub fn preprocess_sample(sample: &Sample, pre: &Preprocessing, size: usize) -> ModelInput {
    let (w, h) = sample.image.dimensions();
    let (h, w) = (h as usize, w as usize);
    assert!(h > 0 && w > 0 && size > 0, "empty image or size");
    let classes = sample.objects.iter().map(|o| o.class).collect();
    match pre {
        Preprocessing::Sam => {
            let frame = FrameMap::sam((h, w), size);
            let Layout::TopLeft { new } = frame.layout else {
                unreachable!()
            };
            let r = ResizeLongestSide::new(size);
            let resized = resize_bilinear_antialias(sample.image.as_raw(), h, w, 3, new.0, new.1);
            let image = normalize_pad(&resized, new.0, new.1, size, &Normalization::SAM);
            let boxes = sample
                .objects
                .iter()
                .map(|o| r.apply_box(o.bbox.map(f64::from), (h, w)))
                .collect();
            let targets = sample
                .objects
                .par_iter()
                .map(|o| {
                    let m = resize_nearest(o.mask.as_raw(), h, w, new.0, new.1);
                    let mut t = vec![0f32; size * size];
                    for (y, row) in m.chunks(new.1).enumerate() {
                        for (x, &v) in row.iter().enumerate() {
                            t[y * size + x] = if v > 0 { 1.0 } else { 0.0 };
                        }
                    }
                    t
                })
                .collect();
            ModelInput {
                image,
                boxes,
                targets,
                classes,
                valid: new,
                frame,
            }
        }
        Preprocessing::Sonar { norm } => {
            let frame = FrameMap::centred_square((h, w), size);
            let Layout::CentredSquare { square, pad } = frame.layout else {
                unreachable!()
            };
            let padded = pad_square(sample.image.as_raw(), h, w, 3, square, pad);
            let resized = resize_bilinear_opencv(&padded, square, square, 3, size, size);
            let image = normalize_pad(&resized, size, size, size, norm);
            // [REM]: `scale_ratio = float(S) / side`; `int((x + pad) * scale_ratio)`.
            let ratio = size as f64 / square as f64;
            let map = |v: u32, p: usize| ((f64::from(v) + p as f64) * ratio) as i64 as f32;
            let boxes = sample
                .objects
                .iter()
                .map(|o| {
                    let [x1, y1, x2, y2] = o.bbox;
                    [
                        map(x1, pad.1),
                        map(y1, pad.0),
                        map(x2, pad.1),
                        map(y2, pad.0),
                    ]
                })
                .collect();
            let targets = sample
                .objects
                .par_iter()
                .map(|o| {
                    // 0/1 u8 maps resized bilinearly: OpenCV's rounding gives ≥ 0.5 coverage.
                    let bin: Vec<u8> = o.mask.as_raw().iter().map(|&v| u8::from(v > 0)).collect();
                    let padded = pad_square(&bin, h, w, 1, square, pad);
                    resize_bilinear_opencv(&padded, square, square, 1, size, size)
                        .into_iter()
                        .map(f32::from)
                        .collect()
                })
                .collect();
            ModelInput {
                image,
                boxes,
                targets,
                classes,
                valid: frame.valid(),
                frame,
            }
        }
    }
}

/// Zero-pads an interleaved `h × w × channels` image into a `square × square` one with the
/// content at `pad = (top, left)`.
pub fn pad_square(
    src: &[u8],
    h: usize,
    w: usize,
    channels: usize,
    square: usize,
    pad: (usize, usize),
) -> Vec<u8> {
    assert_eq!(src.len(), h * w * channels, "buffer is not h*w*channels");
    assert!(
        pad.0 + h <= square && pad.1 + w <= square,
        "content exceeds the square"
    );
    let row = w * channels;
    let mut out = vec![0u8; square * square * channels];
    for (y, src_row) in src.chunks(row).enumerate() {
        let start = ((y + pad.0) * square + pad.1) * channels;
        out[start..start + row].copy_from_slice(src_row);
    }
    out
}

/// Nearest-neighbour resize of one `h × w` u8 plane with half-pixel centres: output pixel `d`
/// takes source `floor((d + 0.5)·in/out)` (exact integer arithmetic). This is PIL's `NEAREST` and
/// PyTorch's `nearest-exact`; it keeps the geometry consistent with the bilinear image resize.
pub fn resize_nearest(src: &[u8], h: usize, w: usize, new_h: usize, new_w: usize) -> Vec<u8> {
    assert_eq!(src.len(), h * w, "buffer is not h*w");
    let idx = |d: usize, inp: usize, out: usize| ((2 * d + 1) * inp / (2 * out)).min(inp - 1);
    let xs: Vec<usize> = (0..new_w).map(|x| idx(x, w, new_w)).collect();
    let mut out = Vec::with_capacity(new_h * new_w);
    for y in 0..new_h {
        let row = &src[idx(y, h, new_h) * w..][..w];
        out.extend(xs.iter().map(|&x| row[x]));
    }
    out
}

// --- OpenCV INTER_LINEAR -------------------------------------------------------------------------

/// OpenCV's `INTER_RESIZE_COEF_BITS`: interpolation weights in 11-bit fixed point.
const CV_COEF_BITS: u32 = 11;

/// Source index pair and fixed-point weights of one output position.
struct CvTap {
    i0: usize,
    i1: usize,
    a0: i32,
    a1: i32,
}

/// OpenCV `resize`'s coefficient set-up for `INTER_LINEAR` on 8-bit data: `fx = (float)((d +
/// 0.5)·scale − 0.5)` with `scale = 1/(out/in)` in double, `sx = floor(fx)`, `fx −= sx` in
/// float; weights `saturate_cast<short>((1 − fx)·2048)` and `(fx·2048)` (round half to even).
///
/// The two directions differ at the borders, as in OpenCV: horizontally (`clamp_weights`) a
/// position left of the first pixel or at/after the last one gets `fx = 0` and the clamped
/// index; vertically the weights are kept and only the row indices are clamped, so a border row
/// is computed as `w0·r + w1·r` with two separately truncated products (one grey level lower
/// than the horizontal border treatment in some cases).
fn cv_taps(in_size: usize, out_size: usize, clamp_weights: bool) -> Vec<CvTap> {
    let scale = 1.0 / (out_size as f64 / in_size as f64);
    let last = in_size - 1;
    let one = (1 << CV_COEF_BITS) as f32;
    (0..out_size)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut sx = f.floor() as i64;
            let mut fx = f - sx as f32;
            if clamp_weights {
                if sx < 0 {
                    sx = 0;
                    fx = 0.0;
                }
                if sx >= last as i64 {
                    sx = last as i64;
                    fx = 0.0;
                }
            }
            let clamp = |i: i64| i.clamp(0, last as i64) as usize;
            CvTap {
                i0: clamp(sx),
                i1: clamp(sx + 1),
                a0: ((1.0 - fx) * one).round_ties_even() as i32,
                a1: (fx * one).round_ties_even() as i32,
            }
        })
        .collect()
}

/// Resizes an interleaved `h × w × channels` u8 image as OpenCV's `cv2.resize(src, (new_w,
/// new_h), interpolation=cv2.INTER_LINEAR)` does (bilinear, half-pixel centres, no antialias).
///
/// OpenCV works in fixed point for 8-bit data: a horizontal pass with 11-bit weights into an
/// int buffer, then the vertical pass `((b0·(r0 >> 4)) >> 16) + ((b1·(r1 >> 4)) >> 16) + 2) >> 2`.
/// This is that arithmetic; it matched `cv2` 5.0.0 exactly on every case we compared (random
/// images, up- and downscaling, 1 and 3 channels). The exact-2× downscale that OpenCV routes
/// to `INTER_AREA` gives the same values by construction. Same size → copy.
pub fn resize_bilinear_opencv(
    src: &[u8],
    h: usize,
    w: usize,
    channels: usize,
    new_h: usize,
    new_w: usize,
) -> Vec<u8> {
    assert_eq!(src.len(), h * w * channels, "buffer is not h*w*channels");
    if (h, w) == (new_h, new_w) {
        return src.to_vec();
    }
    let xs = cv_taps(w, new_w, true);
    let ys = cv_taps(h, new_h, false);
    let row_len = new_w * channels;
    // Horizontal pass for every source row (values scaled by 2^11).
    let horiz = |y: usize| -> Vec<i32> {
        let row = &src[y * w * channels..(y + 1) * w * channels];
        let mut out = Vec::with_capacity(row_len);
        for t in &xs {
            for c in 0..channels {
                let a = i32::from(row[t.i0 * channels + c]);
                let b = i32::from(row[t.i1 * channels + c]);
                out.push(a * t.a0 + b * t.a1);
            }
        }
        out
    };
    let rows: Vec<Vec<i32>> = (0..h).into_par_iter().map(horiz).collect();
    let mut out = vec![0u8; new_h * row_len];
    out.par_chunks_mut(row_len)
        .zip(ys.par_iter())
        .for_each(|(orow, t)| {
            let (r0, r1) = (&rows[t.i0], &rows[t.i1]);
            for ((o, &s0), &s1) in orow.iter_mut().zip(r0).zip(r1) {
                let v = ((t.a0 * (s0 >> 4)) >> 16) + ((t.a1 * (s1 >> 4)) >> 16) + 2;
                *o = (v >> 2).clamp(0, 255) as u8;
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Object;
    use image::{GrayImage, RgbImage};

    fn sample(h: u32, w: u32, grey: u8, objects: Vec<Object>) -> Sample {
        Sample {
            name: "t".into(),
            image: RgbImage::from_pixel(w, h, image::Rgb([grey; 3])),
            objects,
        }
    }

    /// An object whose mask fills its box.
    fn box_object(h: u32, w: u32, bbox: [u32; 4], class: usize) -> Object {
        let mask = GrayImage::from_fn(w, h, |x, y| {
            let inside = x >= bbox[0] && x < bbox[2] && y >= bbox[1] && y < bbox[3];
            image::Luma([if inside { 255 } else { 0 }])
        });
        Object { bbox, class, mask }
    }

    #[test]
    fn centred_square_geometry() {
        // The sonar frames: 480 high, 320 wide → pad 80 left, 80 right.
        let f = FrameMap::centred_square((480, 320), 1024);
        assert_eq!(
            f.layout,
            Layout::CentredSquare {
                square: 480,
                pad: (0, 80)
            }
        );
        // 80·1024/480 = 170.67 → 171; 400·1024/480 = 853.33 → 853.
        assert_eq!(f.content_rect(), [0, 171, 1024, 853]);
        assert_eq!(f.valid(), (1024, 682));
        // Wide image, odd padding: 3 high, 6 wide → pad top 1, bottom 2.
        let f = FrameMap::centred_square((3, 6), 12);
        assert_eq!(
            f.layout,
            Layout::CentredSquare {
                square: 6,
                pad: (1, 0)
            }
        );
        assert_eq!(f.content_rect(), [2, 0, 8, 12]);
        let (x, y) = f.to_frame(1.5, 2.0);
        assert_eq!((x, y), (3.0, 6.0));
        assert_eq!(f.to_original_point(x, y), (1.5, 2.0));
    }

    #[test]
    fn sam_frame_geometry() {
        let f = FrameMap::sam((1200, 1800), 1024);
        assert_eq!(f.layout, Layout::TopLeft { new: (683, 1024) });
        assert_eq!(f.content_rect(), [0, 0, 683, 1024]);
        let (x, y) = f.to_frame(900.0, 600.0);
        assert!((x - 512.0).abs() < 1e-9 && (y - 341.5).abs() < 1e-9);
        let (x, y) = f.to_original_point(x, y);
        assert!((x - 900.0).abs() < 1e-9 && (y - 600.0).abs() < 1e-9);
    }

    #[test]
    fn pad_square_centres_content() {
        // 3 high × 1 wide, one channel → square 3, pad left 1.
        let out = pad_square(&[1, 2, 3], 3, 1, 1, 3, (0, 1));
        assert_eq!(out, [0, 1, 0, 0, 2, 0, 0, 3, 0]);
        // 1 × 2 RGB into a 2 × 2 square, pad top 0 (floor half of 1).
        let out = pad_square(&[1, 2, 3, 4, 5, 6], 1, 2, 3, 2, (0, 0));
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn nearest_half_pixel_centres() {
        // Up: 2 → 4 takes sources floor((d + 0.5)/2) = 0, 0, 1, 1.
        assert_eq!(resize_nearest(&[7, 9], 1, 2, 1, 4), [7, 7, 9, 9]);
        // Down: 4 → 2 takes floor((d + 0.5)·2) = 1, 3.
        assert_eq!(resize_nearest(&[1, 2, 3, 4], 4, 1, 2, 1), [2, 4]);
        // 3 → 2: floor(0.75) = 0, floor(2.25) = 2.
        assert_eq!(resize_nearest(&[1, 2, 3], 1, 3, 1, 2), [1, 3]);
    }

    /// Expected values from `cv2.resize(src, (new_w, new_h), interpolation=cv2.INTER_LINEAR)`,
    /// OpenCV 4.8.1 (opencv-python-headless 4.8.1.78; 5.0.0 gives the same), with
    /// `a = (np.arange(20).reshape(4, 5) * 53 % 256).astype(np.uint8)`, an RGB stack
    /// `[a, 255 - a, a // 2]`, and a 0/1 mask `m = zeros((6, 4)); m[1:4, 1:3] = 1`.
    /// (Against both versions the implementation also matched 305 random cases exactly.)
    #[test]
    fn opencv_linear_matches_cv2() {
        let a: Vec<u8> = (0..20u32).map(|v| (v * 53 % 256) as u8).collect();
        #[rustfmt::skip]
        let up = [
            0, 18, 47, 76, 106, 135, 165, 194, 212, 3, 21, 50, 80, 109, 139, 168, 197, 215, 8, 26,
            55, 85, 114, 144, 173, 203, 220, 14, 31, 61, 90, 120, 149, 178, 208, 226, 18, 36, 66,
            95, 124, 154, 183, 213, 231, 24, 41, 71, 100, 130, 159, 189, 218, 236, 27, 45, 74, 103,
            133, 162, 192, 221, 239,
        ];
        assert_eq!(resize_bilinear_opencv(&a, 4, 5, 1, 7, 9), up);
        assert_eq!(
            resize_bilinear_opencv(&a, 4, 5, 1, 3, 3),
            [19, 107, 196, 31, 120, 208, 43, 131, 220]
        );
        let rgb: Vec<u8> = a.iter().flat_map(|&v| [v, 255 - v, v / 2]).collect();
        #[rustfmt::skip]
        let up_rgb = [
            7, 248, 3, 73, 182, 36, 139, 116, 69, 205, 50, 103, 11, 244, 5, 77, 178, 38, 144, 111,
            71, 210, 45, 105, 17, 238, 8, 83, 172, 41, 149, 105, 75, 216, 39, 107, 23, 232, 11, 89,
            166, 44, 155, 99, 77, 222, 33, 111, 29, 226, 14, 95, 160, 47, 162, 93, 80, 228, 27,
            114, 34, 221, 16, 100, 155, 50, 166, 89, 83, 232, 23, 116,
        ];
        assert_eq!(resize_bilinear_opencv(&rgb, 4, 5, 3, 6, 4), up_rgb);
        let mut m = vec![0u8; 24];
        for y in 1..4 {
            m[y * 4 + 1] = 1;
            m[y * 4 + 2] = 1;
        }
        let out = resize_bilinear_opencv(&m, 6, 4, 1, 11, 7);
        let ones: Vec<usize> = (0..77).filter(|&i| out[i] == 1).collect();
        let want: Vec<usize> = (2..7)
            .flat_map(|y| (2..5).map(move |x| y * 7 + x))
            .collect();
        assert_eq!(ones, want);
    }

    #[test]
    fn opencv_linear_hand_values() {
        // 2 → 5 horizontally: positions −0.3 (clamped to 0), 0.1, 0.5, 0.9, 1.3 (clamped).
        let out = resize_bilinear_opencv(&[100, 200], 1, 2, 1, 1, 5);
        assert_eq!(out, [100, 110, 150, 190, 200]);
        // Same-size is a copy.
        assert_eq!(resize_bilinear_opencv(&[1, 2, 3], 1, 3, 1, 1, 3), [1, 2, 3]);
        // Vertically a border row keeps its weights: 229/2 = 114.5 computes as 114 (cv2 too).
        let out = resize_bilinear_opencv(&[100, 129, 7, 9], 2, 2, 1, 5, 5);
        assert_eq!(out[2], 114);
    }

    #[test]
    fn sam_preprocessing() {
        // 4 high × 2 wide → new (8, 4) at S = 8.
        let s = sample(4, 2, 200, vec![box_object(4, 2, [0, 1, 1, 3], 5)]);
        let m = preprocess_sample(&s, &Preprocessing::Sam, 8);
        assert_eq!(m.valid, (8, 4));
        assert_eq!(m.classes, [5]);
        // apply_boxes: x·4/2, y·8/4.
        assert_eq!(m.boxes, [[0.0, 2.0, 2.0, 6.0]]);
        let v0 = (200.0f32 - 123.675) / 58.395;
        assert_eq!(m.image[0], v0);
        assert_eq!(m.image[4], 0.0);
        // Target: rows 1..3 × column 0 → rows 2..6 × columns 0..2 in the frame.
        let t = &m.targets[0];
        let ones: Vec<usize> = (0..64).filter(|&i| t[i] == 1.0).collect();
        let want: Vec<usize> = (2..6)
            .flat_map(|y| (0..2).map(move |x| y * 8 + x))
            .collect();
        assert_eq!(ones, want);
        assert!(t.iter().all(|&v| v == 0.0 || v == 1.0));
    }

    #[test]
    fn sonar_preprocessing() {
        // 6 high × 4 wide → square 6, pad left 1; S = 12 (ratio 2).
        let s = sample(6, 4, 100, vec![box_object(6, 4, [0, 1, 4, 5], 3)]);
        let pre = Preprocessing::sonar_default();
        let m = preprocess_sample(&s, &pre, 12);
        assert_eq!(m.boxes, [[2.0, 2.0, 10.0, 10.0]]);
        assert_eq!(m.frame.content_rect(), [0, 2, 12, 10]);
        assert_eq!(m.valid, (12, 8));
        let content = (100.0f32 / 255.0 - 0.1701) / 0.1848;
        let pad = (0.0f32 - 0.1701) / 0.1848;
        for c in 0..3 {
            assert_eq!(m.image[c * 144 + 5 * 12], pad);
            assert_eq!(m.image[c * 144 + 5 * 12 + 6], content);
            assert_eq!(m.image[c * 144 + 5 * 12 + 11], pad);
        }
        // Target = the box region scaled by 2, exactly (columns 2..10, rows 2..10).
        let t = &m.targets[0];
        for y in 0..12 {
            for x in 0..12 {
                let inside = (2..10).contains(&x) && (2..10).contains(&y);
                assert_eq!(t[y * 12 + x], if inside { 1.0 } else { 0.0 }, "({y}, {x})");
            }
        }
        // Truncation: S = 10, ratio 10/6: int(2·1.667) = 3, int(1.667) = 1, int(3·1.667) = 5.
        let s = sample(6, 4, 0, vec![box_object(6, 4, [1, 1, 2, 3], 1)]);
        let m = preprocess_sample(&s, &pre, 10);
        assert_eq!(m.boxes, [[3.0, 1.0, 5.0, 5.0]]);
    }

    /// A disc-shaped object of an `h × w` image.
    fn disc(h: u32, w: u32) -> Object {
        let (cx, cy, r) = (w as f32 * 0.45, h as f32 * 0.55, h.min(w) as f32 * 0.3);
        let mask = GrayImage::from_fn(w, h, |x, y| {
            let d = (x as f32 + 0.5 - cx).hypot(y as f32 + 0.5 - cy);
            image::Luma([if d < r { 255 } else { 0 }])
        });
        Object {
            bbox: [0, 0, w, h],
            class: 1,
            mask,
        }
    }

    /// Pixels of `mask` whose `(2m+1)²` neighbourhood is uniform.
    fn interior(mask: &GrayImage, m: i64) -> Vec<(u32, u32)> {
        let (w, h) = mask.dimensions();
        let at = |x: i64, y: i64| {
            mask.get_pixel(
                x.clamp(0, w as i64 - 1) as u32,
                y.clamp(0, h as i64 - 1) as u32,
            )
            .0[0]
        };
        mask.enumerate_pixels()
            .filter(|(x, y, p)| {
                let (x, y) = (i64::from(*x), i64::from(*y));
                (-m..=m).all(|dy| (-m..=m).all(|dx| at(x + dx, y + dy) == p.0[0]))
            })
            .map(|(x, y, _)| (x, y))
            .collect()
    }

    /// A target mapped into the frame, used as a logit plane (±1) and mapped back, reproduces
    /// the original mask away from its boundary — at side `S` and, average-pooled, at `S/4`.
    #[test]
    fn frame_map_round_trip() {
        for (h, w) in [(37, 23), (23, 37), (30, 30)] {
            for pre in [Preprocessing::Sam, Preprocessing::sonar_default()] {
                let s = sample(h, w, 50, vec![disc(h, w)]);
                let size = 128;
                let m = preprocess_sample(&s, &pre, size);
                let logits: Vec<f32> = m.targets[0].iter().map(|t| 2.0 * t - 1.0).collect();
                let g = size / 4;
                let low: Vec<f32> = (0..g * g)
                    .map(|i| {
                        let (y, x) = (i / g, i % g);
                        let sum: f32 = (0..16)
                            .map(|k| logits[(4 * y + k / 4) * size + 4 * x + k % 4])
                            .sum();
                        sum / 16.0
                    })
                    .collect();
                for (plane, side, margin) in [(&logits, size, 1), (&low, g, 2)] {
                    let back = m.frame.to_original(plane, side);
                    assert_eq!(back.len(), (h * w) as usize);
                    let mask = &s.objects[0].mask;
                    let pts = interior(mask, margin);
                    assert!(pts.len() > (h * w) as usize / 2);
                    for (x, y) in pts {
                        let want = mask.get_pixel(x, y).0[0] > 0;
                        let got = back[(y * w + x) as usize] > 0.0;
                        assert_eq!(got, want, "{pre:?} {h}x{w} side {side} at ({x}, {y})");
                    }
                }
            }
        }
    }

    #[test]
    fn sonar_to_original_crops_padding() {
        // A plane that is +1 on the content rectangle and −1 on the padding maps back to +1
        // everywhere (3 high × 6 wide, S = 12: content rows 2..8).
        let f = FrameMap::centred_square((3, 6), 12);
        let plane: Vec<f32> = (0..144)
            .map(|i| {
                if (2..8).contains(&(i / 12)) {
                    1.0
                } else {
                    -1.0
                }
            })
            .collect();
        let back = f.to_original(&plane, 12);
        assert_eq!(back, vec![1.0; 18]);
    }
}
