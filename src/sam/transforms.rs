//! SAM's pre- and post-processing on plain buffers (docs/sam.md#preprocessing-and-postprocessing, #other-input-sizes).
//!
//! Everything here reproduces the reference arithmetic bit for bit where it can:
//! - the image resize is PIL's `Image.resize(.., BILINEAR)` (8-bit fixed point, antialiased),
//! - coordinates are scaled in f64 as NumPy does, then cast to f32,
//! - logits are upsampled as PyTorch's CPU `interpolate(mode="bilinear", align_corners=False)`.
//!
//! [`resize_bilinear`] is the tensor resize that training differentiates, on every backend.

use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

/// SAM's `ResizeLongestSide`: the longest side becomes `target`, the aspect ratio is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizeLongestSide {
    pub target: usize,
}

impl ResizeLongestSide {
    pub fn new(target: usize) -> Self {
        Self { target }
    }

    /// `get_preprocess_shape`: `scale = target / max(h, w)`, `new = int(x * scale + 0.5)` in f64.
    pub fn new_size(&self, h: usize, w: usize) -> (usize, usize) {
        let scale = self.target as f64 / h.max(w) as f64;
        let round = |x: usize| (x as f64 * scale + 0.5) as usize;
        (round(h), round(w))
    }

    /// `apply_coords` for one point given in the original image frame `orig = (h, w)`.
    /// SAM multiplies by the ratio `new_w / old_w` (computed first, in f64), then torch casts to f32.
    pub fn apply_coords(&self, x: f64, y: f64, orig: (usize, usize)) -> (f32, f32) {
        let (h, w) = orig;
        let (nh, nw) = self.new_size(h, w);
        let x = x * (nw as f64 / w as f64);
        let y = y * (nh as f64 / h as f64);
        (x as f32, y as f32)
    }

    /// `apply_boxes`: a box `(x1, y1, x2, y2)` is two points.
    pub fn apply_box(&self, b: [f64; 4], orig: (usize, usize)) -> [f32; 4] {
        let (x1, y1) = self.apply_coords(b[0], b[1], orig);
        let (x2, y2) = self.apply_coords(b[2], b[3], orig);
        [x1, y1, x2, y2]
    }
}

/// Per-channel pixel normalisation `((p / divisor) - mean) / std`, computed in f32.
///
/// SAM uses the 0–255 scale (`divisor = 1`); torchvision's `ToTensor` + `Normalize` pipelines
/// divide by 255 first (`divisor = 255`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub divisor: f32,
}

impl Normalization {
    /// SAM's `pixel_mean` / `pixel_std`.
    pub const SAM: Self = Self {
        mean: [123.675, 116.28, 103.53],
        std: [58.395, 57.12, 57.375],
        divisor: 1.0,
    };

    /// Data-set statistics on the 0–1 scale (`ToTensor` then `Normalize(mean, std)`), the same
    /// value for all three channels, e.g. the sonar set's `(0.1701, 0.1848)`.
    pub fn unit_scale(mean: f32, std: f32) -> Self {
        Self {
            mean: [mean; 3],
            std: [std; 3],
            divisor: 255.0,
        }
    }

    fn apply(&self, p: u8, c: usize) -> f32 {
        // Division, not a reciprocal multiply: that is what the reference does.
        (f32::from(p) / self.divisor - self.mean[c]) / self.std[c]
    }
}

impl Default for Normalization {
    fn default() -> Self {
        Self::SAM
    }
}

// --- PIL bilinear resize -------------------------------------------------------------------------

/// Fixed-point precision of PIL's 8-bit resampler (`PRECISION_BITS = 32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// One output sample's window in the input: first index and its integer weights.
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// PIL's `precompute_coeffs` for the triangle filter followed by `normalize_coeffs_8bpc`.
fn pil_coeffs(in_size: usize, out_size: usize) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    // Downscaling widens the filter (antialias); upscaling keeps support 1.
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support 1.0 times filterscale
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero; the clamp at 0 makes that equal to floor here.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) * ss).abs();
                    if t < 1.0 { 1.0 - t } else { 0.0 }
                })
                .collect();
            let total: f64 = w.iter().sum();
            let weights = w
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    let scaled = k * f64::from(1u32 << PRECISION_BITS);
                    // Round half away from zero, as PIL does (`(int)(±0.5 + k)`).
                    (if scaled < 0.0 {
                        scaled - 0.5
                    } else {
                        scaled + 0.5
                    }) as i32
                })
                .collect();
            Taps {
                start: xmin,
                weights,
            }
        })
        .collect()
}

/// PIL's `clip8`: drop the fraction (arithmetic shift) and saturate to 0..=255.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an interleaved `h × w × channels` u8 image to `new_h × new_w` exactly as PIL's
/// `Image.resize((new_w, new_h), Image.BILINEAR)` does (Pillow ≥ 7, no `reducing_gap`).
///
/// PIL runs the horizontal pass first (only when the width changes), rounds and clips to 8 bits,
/// then the vertical pass (only when the height changes). Weights are in 22-bit fixed point and
/// accumulation starts at one half for rounding. The result is identical to PIL's (±0).
pub fn resize_bilinear_antialias(
    src: &[u8],
    h: usize,
    w: usize,
    channels: usize,
    new_h: usize,
    new_w: usize,
) -> Vec<u8> {
    assert_eq!(src.len(), h * w * channels, "buffer is not h*w*channels");
    let half = 1i64 << (PRECISION_BITS - 1);

    let horiz;
    let (mid, mid_w) = if new_w != w {
        let taps = pil_coeffs(w, new_w);
        let mut out = vec![0u8; h * new_w * channels];
        out.par_chunks_mut(new_w * channels)
            .zip(src.par_chunks(w * channels))
            .for_each(|(orow, irow)| {
                for (xx, t) in taps.iter().enumerate() {
                    for c in 0..channels {
                        let acc = t.weights.iter().enumerate().fold(half, |acc, (k, &wt)| {
                            acc + i64::from(irow[(t.start + k) * channels + c]) * i64::from(wt)
                        });
                        orow[xx * channels + c] = clip8(acc);
                    }
                }
            });
        horiz = out;
        (&horiz[..], new_w)
    } else {
        (src, w)
    };

    if new_h == h {
        return mid.to_vec();
    }
    let taps = pil_coeffs(h, new_h);
    let row_len = mid_w * channels;
    let mut out = vec![0u8; new_h * row_len];
    out.par_chunks_mut(row_len)
        .zip(taps.par_iter())
        .for_each(|(orow, t)| {
            for (i, o) in orow.iter_mut().enumerate() {
                let acc = t.weights.iter().enumerate().fold(half, |acc, (k, &wt)| {
                    acc + i64::from(mid[(t.start + k) * row_len + i]) * i64::from(wt)
                });
                *o = clip8(acc);
            }
        });
    out
}

/// Normalises a resized `rh × rw × 3` u8 image and zero-pads it bottom/right into a CHW
/// `[3, target, target]` tensor (padding after normalisation, so padded values are 0).
pub fn normalize_pad(
    img: &[u8],
    rh: usize,
    rw: usize,
    target: usize,
    norm: &Normalization,
) -> Vec<f32> {
    assert_eq!(img.len(), rh * rw * 3, "buffer is not rh*rw*3");
    assert!(rh <= target && rw <= target, "image larger than the target");
    let plane = target * target;
    let mut out = vec![0f32; 3 * plane];
    for (c, chan) in out.chunks_mut(plane).enumerate() {
        for (y, row) in chan.chunks_mut(target).take(rh).enumerate() {
            for (x, v) in row[..rw].iter_mut().enumerate() {
                *v = norm.apply(img[(y * rw + x) * 3 + c], c);
            }
        }
    }
    out
}

/// SAM's image pre-processing: `h × w × 3` u8 RGB → CHW f32 `[3, target, target]`
/// (ResizeLongestSide with PIL bilinear, normalise, zero-pad bottom/right).
pub fn preprocess(img: &[u8], h: usize, w: usize, target: usize, norm: &Normalization) -> Vec<f32> {
    let (nh, nw) = ResizeLongestSide::new(target).new_size(h, w);
    let resized = resize_bilinear_antialias(img, h, w, 3, nh, nw);
    normalize_pad(&resized, nh, nw, target, norm)
}

// --- PyTorch bilinear interpolation --------------------------------------------------------------

/// Source indices and weights of one output position (`i0`, `i1`, `w0`, `w1`).
#[derive(Debug, Clone, Copy)]
struct Lerp {
    i0: usize,
    i1: usize,
    w0: f32,
    w1: f32,
}

/// The `[out, in]` matrix of 1-D linear interpolation on `device`: multiplying a signal by it
/// resizes it exactly as PyTorch's `interpolate` does, and keeps the resize differentiable when
/// the signal is a trained tensor.
pub fn linear_interpolation_matrix(
    in_size: usize,
    out_size: usize,
    align_corners: bool,
    device: &Device,
) -> Tensor<2> {
    let mut m = vec![0f32; out_size * in_size];
    for (row, l) in m
        .chunks_mut(in_size)
        .zip(lerp_table(in_size, out_size, align_corners))
    {
        row[l.i0] += l.w0;
        row[l.i1] += l.w1;
    }
    Tensor::from_data(TensorData::new(m, [out_size, in_size]), device)
}

/// Bilinear resize of `[N, C, h, w]` to `[N, C, out_h, out_w]`, as PyTorch's
/// `interpolate(mode="bilinear")`, differentiable on every backend: burn's `interpolate` on the
/// CPU, and elsewhere (burn's GPU kernels have no bilinear backward pass) two products with the
/// [`linear_interpolation_matrix`]es, which apply the same weights.
pub fn resize_bilinear(x: Tensor<4>, out: [usize; 2], align_corners: bool) -> Tensor<4> {
    if crate::kernels::is_cpu(&x.device()) {
        interpolate(
            x,
            InterpolateOptions::new(InterpolateMode::Bilinear)
                .with_align_corners(align_corners)
                .with_output_size(out),
        )
    } else {
        resize_by_matrices(x, out, align_corners)
    }
}

/// `R_h · x · R_wᵀ` over the last two axes.
fn resize_by_matrices(x: Tensor<4>, [out_h, out_w]: [usize; 2], align_corners: bool) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let device = x.device();
    let matrix =
        |from: usize, to: usize| linear_interpolation_matrix(from, to, align_corners, &device);
    let rows = matrix(h, out_h).unsqueeze::<4>().expand([n, c, out_h, h]);
    let cols = matrix(w, out_w)
        .transpose()
        .unsqueeze::<4>()
        .expand([n, c, w, out_w]);
    rows.matmul(x).matmul(cols)
}

/// PyTorch's `compute_source_index_and_lambda` (no scale factor), in f32. `align_corners`:
/// `src = dst · (in − 1) / (out − 1)`; otherwise `src = max(in / out · (dst + 0.5) − 0.5, 0)`.
fn lerp_table(in_size: usize, out_size: usize, align_corners: bool) -> Vec<Lerp> {
    if in_size == out_size {
        return (0..out_size)
            .map(|i| Lerp {
                i0: i,
                i1: i,
                w0: 1.0,
                w1: 0.0,
            })
            .collect();
    }
    let scale = match (align_corners, out_size) {
        (true, 1) => 0.0,
        (true, _) => (in_size - 1) as f32 / (out_size - 1) as f32,
        (false, _) => in_size as f32 / out_size as f32,
    };
    (0..out_size)
        .map(|d| {
            // Two separately rounded f32 operations (no fma), as the reference computes it.
            let src = if align_corners {
                scale * d as f32
            } else {
                (scale * (d as f32 + 0.5) - 0.5).max(0.0)
            };
            let i0 = (src.floor() as usize).min(in_size - 1);
            let w1 = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < in_size - 1 { i0 + 1 } else { i0 };
            Lerp {
                i0,
                i1,
                w0: 1.0 - w1,
                w1,
            }
        })
        .collect()
}

/// `w0 * a + w1 * b` the way PyTorch's CPU kernel evaluates it: `fma(w0, a, w1 * b)`.
#[inline]
fn mix(w0: f32, a: f32, w1: f32, b: f32) -> f32 {
    w0.mul_add(a, w1 * b)
}

/// Bilinear resize of one `sh × sw` plane to `dh × dw`, as
/// `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` on CPU.
///
/// Bit-exact against PyTorch 2.15's separable CPU kernel, which is what SAM's post-processing
/// hits (checked for outputs 1024², 1800×1200, 500×333, …). For very small outputs (roughly
/// ≤ 64 wide) PyTorch switches to a 4-tap kernel with another rounding order; there results
/// differ in the last bit (≈1e-7 relative), never more.
pub fn upsample_bilinear(src: &[f32], sh: usize, sw: usize, dh: usize, dw: usize) -> Vec<f32> {
    upsample_bilinear_crop(src, sh, sw, (sh, sw), dh, dw)
}

/// Resizes the top-left `crop = (ch, cw)` region of a `sh × sw` plane (row stride `sw`) to
/// `dh × dw`; equal to slicing `[:ch, :cw]` then `upsample_bilinear`.
fn upsample_bilinear_crop(
    src: &[f32],
    sh: usize,
    sw: usize,
    crop: (usize, usize),
    dh: usize,
    dw: usize,
) -> Vec<f32> {
    assert_eq!(src.len(), sh * sw, "buffer is not sh*sw");
    let (ch, cw) = crop;
    assert!(ch <= sh && cw <= sw && ch > 0 && cw > 0, "bad crop");
    let ys = lerp_table(ch, dh, false);
    let xs = lerp_table(cw, dw, false);
    let mut out = vec![0f32; dh * dw];
    // Row-parallel; each row interpolates the two source rows horizontally then mixes them.
    out.par_chunks_mut(dw)
        .zip(ys.par_iter())
        .for_each(|(orow, ly)| {
            let r0 = &src[ly.i0 * sw..ly.i0 * sw + cw];
            let r1 = &src[ly.i1 * sw..ly.i1 * sw + cw];
            for (o, lx) in orow.iter_mut().zip(&xs) {
                let t0 = mix(lx.w0, r0[lx.i0], lx.w1, r0[lx.i1]);
                let t1 = mix(lx.w0, r1[lx.i0], lx.w1, r1[lx.i1]);
                *o = mix(ly.w0, t0, ly.w1, t1);
            }
        });
    out
}

/// SAM's `postprocess_masks` for one `g4 × g4` low-res logit plane: upsample to `target ×
/// target`, crop `[:new_h, :new_w]`, upsample to the original `(h, w)`.
///
/// Only the cropped part of the intermediate plane is computed (its values do not depend on
/// the rest), so the cost is dominated by the final `h × w` pass.
pub fn postprocess_logits(
    low_res: &[f32],
    g4: usize,
    target: usize,
    new: (usize, usize),
    orig: (usize, usize),
) -> Vec<f32> {
    assert_eq!(low_res.len(), g4 * g4, "buffer is not g4*g4");
    let (nh, nw) = new;
    assert!(
        nh <= target && nw <= target,
        "new size larger than the target"
    );
    let ys = lerp_table(g4, target, false);
    let xs = lerp_table(g4, target, false);
    let mut mid = vec![0f32; nh * nw];
    mid.par_chunks_mut(nw)
        .zip(ys[..nh].par_iter())
        .for_each(|(orow, ly)| {
            let r0 = &low_res[ly.i0 * g4..(ly.i0 + 1) * g4];
            let r1 = &low_res[ly.i1 * g4..(ly.i1 + 1) * g4];
            for (o, lx) in orow.iter_mut().zip(&xs[..nw]) {
                let t0 = mix(lx.w0, r0[lx.i0], lx.w1, r0[lx.i1]);
                let t1 = mix(lx.w0, r1[lx.i0], lx.w1, r1[lx.i1]);
                *o = mix(ly.w0, t0, ly.w1, t1);
            }
        });
    upsample_bilinear_crop(&mid, nh, nw, (nh, nw), orig.0, orig.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_size_matches_sam() {
        let r = ResizeLongestSide::new(1024);
        assert_eq!(r.new_size(1200, 1800), (683, 1024));
        assert_eq!(r.new_size(480, 320), (1024, 683));
        assert_eq!(r.new_size(1024, 1024), (1024, 1024));
        assert_eq!(r.new_size(256, 256), (1024, 1024));
        // 1024 * 333 / 500 = 681.984 → 682
        assert_eq!(r.new_size(333, 500), (682, 1024));
        assert_eq!(ResizeLongestSide::new(512).new_size(3, 2), (512, 341));
    }

    /// Expected values: `ResizeLongestSide(1024).apply_coords(pts, orig).astype(np.float32)`
    /// (segment_anything 1.0, NumPy 2.4.6).
    #[test]
    fn coords_match_sam() {
        let r = ResizeLongestSide::new(1024);
        let orig = (1200, 1800);
        assert_eq!(r.apply_coords(900.3, 600.7, orig), (512.170_65, 341.898_4));
        assert_eq!(
            r.apply_coords(0.1, 1199.9, orig),
            (0.056_888_89, 682.943_05)
        );
        assert_eq!(
            r.apply_coords(1234.5678, 3.21, orig),
            (702.331_9, 1.827_025)
        );
        assert_eq!(
            r.apply_coords(17.0, 311.0, (333, 500)),
            (34.816, 636.942_93)
        );
        assert_eq!(
            r.apply_box([0.0, 0.0, 1800.0, 1200.0], orig),
            [0.0, 0.0, 1024.0, 683.0]
        );
    }

    #[test]
    fn resize_identity_is_copy() {
        let img: Vec<u8> = (0..2 * 3 * 3).map(|v| v as u8 * 13).collect();
        assert_eq!(resize_bilinear_antialias(&img, 2, 3, 3, 2, 3), img);
    }

    #[test]
    fn resize_downscale_by_two_averages_pairs() {
        // 1 × 4 → 1 × 2: scale 2, so the triangle's support widens to 2 (antialias).
        let img = [0u8, 90, 180, 255];
        let out = resize_bilinear_antialias(&img, 1, 4, 1, 1, 2);
        // Output 0: centre 1.0, taps x=0..2 with t = |x+0.5-1|/2 → w = 0.75, 0.75, 0.25.
        // (0·0.75 + 90·0.75 + 180·0.25)/1.75 = 64.28 → 64.
        // Output 1: centre 3.0, taps x=1..3 → w = 0.25, 0.75, 0.75: (22.5+135+191.25)/1.75 = 199.29.
        assert_eq!(out, vec![64, 199]);
    }

    #[test]
    fn resize_upscale_interpolates() {
        // 1 × 2 → 1 × 4, support 1, centres 0.25, 0.75, 1.25, 1.75. Output 0 has only tap 0
        // (normalised to 1) → 0; output 1: 0.75·0 + 0.25·100 = 25; symmetric for 2 and 3.
        let img = [0u8, 100];
        let out = resize_bilinear_antialias(&img, 1, 2, 1, 1, 4);
        assert_eq!(out, vec![0, 25, 75, 100]);
    }

    #[test]
    fn preprocess_pads_with_zero() {
        let img = vec![200u8; 4 * 2 * 3];
        let t = preprocess(&img, 4, 2, 8, &Normalization::SAM);
        assert_eq!(t.len(), 3 * 64);
        // Resized to 8 × 4; the constant image stays constant.
        let v0 = (200.0f32 - 123.675) / 58.395;
        assert_eq!(t[0], v0);
        assert_eq!(t[7 * 8 + 3], v0);
        assert_eq!(t[4], 0.0);
        assert_eq!(t[64 + 7 * 8 + 7], 0.0);
        assert_eq!(t[2 * 64], (200.0f32 - 103.53) / 57.375);
    }

    #[test]
    fn unit_scale_normalisation() {
        let n = Normalization::unit_scale(0.1701, 0.1848);
        assert_eq!(n.apply(255, 1), (1.0f32 - 0.1701) / 0.1848);
    }

    /// Expected values from Pillow 13.0.0: `Image.fromarray(a).resize((w, h), Image.BILINEAR)`
    /// with `a = (np.arange(20).reshape(4, 5) * 13 % 256).astype(np.uint8)` (and an RGB stack
    /// `[a, 255 - a, a // 2]`).
    #[test]
    fn resize_matches_pil() {
        let a: Vec<u8> = (0..20u32).map(|v| (v * 13 % 256) as u8).collect();
        assert_eq!(
            resize_bilinear_antialias(&a, 4, 5, 1, 2, 3),
            [52, 72, 92, 155, 175, 195]
        );
        #[rustfmt::skip]
        let up = [
            0, 7, 17, 26, 35, 45, 52, 33, 40, 50, 59, 68, 78, 85, 76, 83, 93, 102, 111, 121, 128,
            119, 126, 136, 145, 154, 164, 171, 163, 170, 180, 189, 198, 208, 215, 195, 202, 212,
            221, 230, 240, 247,
        ];
        assert_eq!(resize_bilinear_antialias(&a, 4, 5, 1, 6, 7), up);
        let rgb: Vec<u8> = a.iter().flat_map(|&v| [v, 255 - v, v / 2]).collect();
        assert_eq!(
            resize_bilinear_antialias(&rgb, 4, 5, 3, 2, 3),
            [
                52, 203, 26, 72, 183, 36, 92, 163, 46, 155, 100, 77, 175, 80, 87, 195, 60, 97
            ]
        );
    }

    /// Expected values from PyTorch 2.15 (CPU, 2 threads): `F.interpolate(x, (70, 90),
    /// mode="bilinear", align_corners=False)` with `x[i] = ((i * 37) % 11 - 5) * 0.37` (f32,
    /// shape 1×1×5×7); a few samples plus the wrapping sum of all f32 bit patterns.
    #[test]
    fn upsample_matches_torch() {
        let x: Vec<f32> = (0..35).map(|i| ((i * 37) % 11 - 5) as f32 * 0.37).collect();
        let out = upsample_bilinear(&x, 5, 7, 70, 90);
        let samples: [(usize, usize, f64); 8] = [
            (0, 0, -1.850000023841858),
            (3, 5, -1.850000023841858),
            (10, 17, -0.02055535838007927),
            (33, 44, -0.8280225396156311),
            (50, 61, -0.9463630318641663),
            (69, 89, -0.3700000047683716),
            (21, 88, 1.0439283847808838),
            (68, 1, -1.1100000143051147),
        ];
        for (y, x, v) in samples {
            assert_eq!(out[y * 90 + x], v as f32, "at ({y}, {x})");
        }
        let bits = out
            .iter()
            .fold(0u64, |acc, v| acc.wrapping_add(u64::from(v.to_bits())));
        assert_eq!(bits, 0xc7d4b46cf83);
    }

    #[test]
    fn upsample_2x2_to_4x4() {
        // align_corners=False: source positions -0.25(→0), 0.25, 0.75, 1.25(→clamped 1).
        let src = [0.0, 1.0, 2.0, 3.0];
        let out = upsample_bilinear(&src, 2, 2, 4, 4);
        #[rustfmt::skip]
        let want = [
            0.0, 0.25, 0.75, 1.0,
            0.5, 0.75, 1.25, 1.5,
            1.5, 1.75, 2.25, 2.5,
            2.0, 2.25, 2.75, 3.0,
        ];
        assert_eq!(out, want);
    }

    #[test]
    fn upsample_same_size_is_identity() {
        let src: Vec<f32> = (0..12).map(|v| v as f32 * 0.3).collect();
        assert_eq!(upsample_bilinear(&src, 3, 4, 3, 4), src);
    }

    #[test]
    fn postprocess_equals_upsample_crop_upsample() {
        let g4 = 8;
        let src: Vec<f32> = (0..g4 * g4).map(|v| ((v * 37) % 11) as f32 - 5.0).collect();
        let (target, new, orig) = (32, (21, 32), (40, 61));
        let full = upsample_bilinear(&src, g4, g4, target, target);
        let crop: Vec<f32> = full
            .chunks(target)
            .take(new.0)
            .flat_map(|r| r[..new.1].to_vec())
            .collect();
        let want = upsample_bilinear(&crop, new.0, new.1, orig.0, orig.1);
        assert_eq!(postprocess_logits(&src, g4, target, new, orig), want);
    }

    /// The matrix resize (the GPU path of `resize_bilinear`) gives burn's `interpolate` values
    /// and gradients, up- and downsampling, with and without aligned corners.
    #[test]
    fn matrix_resize_matches_interpolate() {
        use burn::tensor::Device;
        let device = Device::flex().autodiff();
        for (from, to) in [
            ([64, 64], [256, 256]),
            ([64, 64], [16, 16]),
            ([27, 13], [50, 7]),
            ([5, 9], [1, 12]),
        ] {
            for align_corners in [false, true] {
                let n = 2 * 3 * from[0] * from[1];
                let values: Vec<f32> = (0..n)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                    .collect();
                let x = || {
                    Tensor::<4>::from_data(
                        TensorData::new(values.clone(), [2, 3, from[0], from[1]]),
                        &device,
                    )
                    .require_grad()
                };
                let run = |resize: &dyn Fn(Tensor<4>) -> Tensor<4>| {
                    let input = x();
                    let out = resize(input.clone());
                    // A non-uniform weighting, so every output position's gradient differs.
                    let weight = out.clone().detach().sin();
                    let grads = (out.clone() * weight).sum().backward();
                    let grad = input.grad(&grads).expect("input gradient");
                    (
                        out.into_data().try_to_vec::<f32>().unwrap(),
                        grad.into_data().try_to_vec::<f32>().unwrap(),
                    )
                };
                let (want, want_grad) = run(&|t| {
                    interpolate(
                        t,
                        InterpolateOptions::new(InterpolateMode::Bilinear)
                            .with_align_corners(align_corners)
                            .with_output_size(to),
                    )
                });
                let (got, got_grad) = run(&|t| resize_by_matrices(t, to, align_corners));
                let case = format!("{from:?} -> {to:?}, align_corners {align_corners}");
                assert_eq!(got.len(), 2 * 3 * to[0] * to[1], "{case}");
                for (name, a, b) in [
                    ("values", &got, &want),
                    ("gradients", &got_grad, &want_grad),
                ] {
                    // Relative to the largest entry. burn computes aligned source positions
                    // exactly, PyTorch (and the matrices) as `f32(scale) · dst`, which moves
                    // weights by ~1e-6 relative.
                    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
                    let worst = a
                        .iter()
                        .zip(b.iter())
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        worst <= 5e-5 * scale,
                        "{case}: {name} differ by {worst} (largest {scale})"
                    );
                }
            }
        }
    }
}
