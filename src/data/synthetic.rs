//! A generated sonar-like data set (speckled background, bright objects casting acoustic
//! shadows) in the image/mask folder layout: the bundled demo trains on it with no download.

use std::path::Path;

use anyhow::{Context, Result};
use image::{GrayImage, Luma};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Writes `n` images of `size`×`size` into `dir/images` and their masks into `dir/masks`.
pub fn write_sonar_like(dir: &Path, n: usize, size: u32, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    for sub in ["images", "masks"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    for i in 0..n {
        let s = size as f32;
        let objects: Vec<(f32, f32, f32, f32)> = (0..rng.random_range(1..=3))
            .map(|_| {
                let (rx, ry) = (
                    rng.random_range(0.06..0.16) * s,
                    rng.random_range(0.05..0.12) * s,
                );
                (
                    rng.random_range(0.2..0.8) * s,
                    rng.random_range(0.15..0.6) * s,
                    rx,
                    ry,
                )
            })
            .collect();
        let mut image = GrayImage::new(size, size);
        let mut mask = GrayImage::new(size, size);
        for y in 0..size {
            for x in 0..size {
                let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
                let inside = |&(cx, cy, rx, ry): &(f32, f32, f32, f32)| {
                    ((fx - cx) / rx).powi(2) + ((fy - cy) / ry).powi(2) <= 1.0
                };
                // The shadow: the object's footprint continued away from the sonar (downwards).
                let shadowed = objects
                    .iter()
                    .any(|&(cx, cy, rx, _)| fy > cy && (fx - cx).abs() < rx * 0.9);
                let object = objects.iter().any(inside);
                // Speckle: exponentially distributed intensity around the local mean.
                let speckle = -rng.random::<f32>().max(1e-6).ln();
                let mean = if object {
                    190.0
                } else if shadowed {
                    12.0
                } else {
                    60.0
                };
                let v = (mean * speckle).clamp(0.0, 255.0) as u8;
                image.put_pixel(x, y, Luma([v]));
                mask.put_pixel(x, y, Luma([if object { 255 } else { 0 }]));
            }
        }
        let name = format!("sonar_{i:03}.png");
        image
            .save(dir.join("images").join(&name))
            .with_context(|| format!("cannot write {name}"))?;
        mask.save(dir.join("masks").join(&name))
            .with_context(|| format!("cannot write {name}"))?;
    }
    Ok(())
}
