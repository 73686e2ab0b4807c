//! The input image with semi-transparent coloured masks and the prompts drawn on top.

use std::path::Path;

use anyhow::{Result, ensure};
use image::{Rgb, RgbImage};

use super::mask_png::write_rgb_png;

/// Distinct colours; mask `i` (and box `i`) uses `PALETTE[i % len]`.
pub const PALETTE: [[u8; 3]; 10] = [
    [30, 144, 255],  // dodger blue (SAM's demo colour)
    [255, 165, 0],   // orange
    [186, 85, 211],  // orchid
    [0, 206, 209],   // turquoise
    [255, 215, 0],   // gold
    [255, 105, 180], // pink
    [154, 205, 50],  // yellow green
    [139, 69, 19],   // brown
    [70, 130, 180],  // steel blue
    [220, 20, 60],   // crimson
];
/// Opacity of the mask colour.
pub const MASK_ALPHA: f32 = 0.45;
const POSITIVE: Rgb<u8> = Rgb([0, 255, 0]);
const NEGATIVE: Rgb<u8> = Rgb([255, 0, 0]);
const OUTLINE: Rgb<u8> = Rgb([255, 255, 255]);

/// Prompts to draw, in original-image pixel coordinates.
#[derive(Debug, Clone, Default)]
pub struct OverlayPrompts {
    /// `(x1, y1, x2, y2)` per box.
    pub boxes: Vec<[f32; 4]>,
    /// `(x, y, label)`: label 1 = foreground (green), 0 = background (red).
    pub points: Vec<(f32, f32, i32)>,
}

/// Draws the masks (each an `h × w` logit plane, shown where `logit > 0`) and the prompts.
pub fn render_overlay(
    img: &RgbImage,
    masks: &[&[f32]],
    prompts: &OverlayPrompts,
) -> Result<RgbImage> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = img.clone();
    for (i, m) in masks.iter().enumerate() {
        ensure!(
            m.len() == w * h,
            "mask {i} has {} values, expected {h}x{w}",
            m.len()
        );
        paint_mask(
            &mut out,
            PALETTE[i % PALETTE.len()],
            m.iter().map(|&v| v > 0.0),
        );
    }
    for (i, b) in prompts.boxes.iter().enumerate() {
        draw_box(&mut out, b, Rgb(PALETTE[i % PALETTE.len()]), 2);
    }
    // Radius grows with the image so points stay visible on large frames.
    let r = (w.min(h) as f32 / 150.0).max(3.0);
    for &(x, y, label) in &prompts.points {
        let color = if label == 1 { POSITIVE } else { NEGATIVE };
        draw_disc(&mut out, x, y, r + 1.0, OUTLINE);
        draw_disc(&mut out, x, y, r, color);
    }
    Ok(out)
}

/// Renders the overlay and writes it as an RGB PNG, atomically.
pub fn write_overlay(
    path: &Path,
    img: &RgbImage,
    masks: &[&[f32]],
    prompts: &OverlayPrompts,
) -> Result<()> {
    let out = render_overlay(img, masks, prompts)?;
    write_rgb_png(path, &out)
}

/// Blends `color` into the pixels (row-major) where `on` is true.
pub fn paint_mask(img: &mut RgbImage, color: [u8; 3], on: impl Iterator<Item = bool>) {
    for (p, on) in img.pixels_mut().zip(on) {
        if on {
            for (c, &k) in p.0.iter_mut().zip(&color) {
                *c = (f32::from(*c) * (1.0 - MASK_ALPHA) + f32::from(k) * MASK_ALPHA).round() as u8;
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, color: Rgb<u8>) {
    if x >= 0 && y >= 0 && x < i64::from(img.width()) && y < i64::from(img.height()) {
        img.put_pixel(x as u32, y as u32, color);
    }
}

/// Rectangle outline `thickness` pixels wide, drawn inwards from the rounded corners.
fn draw_box(img: &mut RgbImage, b: &[f32; 4], color: Rgb<u8>, thickness: i64) {
    let [x1, y1, x2, y2] = b.map(|v| v.round() as i64);
    let (x1, x2) = (x1.min(x2), x1.max(x2));
    let (y1, y2) = (y1.min(y2), y1.max(y2));
    for t in 0..thickness {
        for x in x1..=x2 {
            put(img, x, y1 + t, color);
            put(img, x, y2 - t, color);
        }
        for y in y1..=y2 {
            put(img, x1 + t, y, color);
            put(img, x2 - t, y, color);
        }
    }
}

fn draw_disc(img: &mut RgbImage, cx: f32, cy: f32, r: f32, color: Rgb<u8>) {
    let ri = r.ceil() as i64;
    let (x0, y0) = (cx.round() as i64, cy.round() as i64);
    for dy in -ri..=ri {
        for dx in -ri..=ri {
            if ((dx * dx + dy * dy) as f32) <= r * r {
                put(img, x0 + dx, y0 + dy, color);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blends_mask_and_draws_prompts() {
        let img = RgbImage::from_pixel(40, 30, Rgb([100, 100, 100]));
        let mut mask = vec![-1.0f32; 40 * 30];
        mask[15 * 40 + 20] = 2.0;
        let prompts = OverlayPrompts {
            boxes: vec![[5.0, 5.0, 30.0, 25.0]],
            points: vec![(35.0, 3.0, 1), (3.0, 27.0, 0)],
        };
        let out = render_overlay(&img, &[&mask], &prompts).unwrap();
        // 100·0.55 + c·0.45 for PALETTE[0] = (30, 144, 255).
        assert_eq!(out.get_pixel(20, 15), &Rgb([69, 120, 170]));
        assert_eq!(out.get_pixel(0, 0), &Rgb([100, 100, 100]));
        // Box outline, 2 px wide, in the mask's colour; inside untouched.
        let c = Rgb(PALETTE[0]);
        assert_eq!(out.get_pixel(5, 10), &c);
        assert_eq!(out.get_pixel(6, 10), &c);
        assert_eq!(out.get_pixel(7, 10), &Rgb([100, 100, 100]));
        assert_eq!(out.get_pixel(17, 25), &c);
        assert_eq!(out.get_pixel(35, 3), &POSITIVE);
        assert_eq!(out.get_pixel(3, 27), &NEGATIVE);
    }

    #[test]
    fn wrong_mask_size_is_an_error() {
        let img = RgbImage::new(4, 4);
        assert!(render_overlay(&img, &[&[0.0; 3]], &OverlayPrompts::default()).is_err());
    }

    #[test]
    fn writes_png() {
        let dir = std::env::temp_dir().join(format!("sam-cobot-overlay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("overlay.png");
        let img = RgbImage::from_pixel(8, 6, Rgb([1, 2, 3]));
        write_overlay(&path, &img, &[], &OverlayPrompts::default()).unwrap();
        assert_eq!(image::open(&path).unwrap().into_rgb8(), img);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
