//! A generated sonar-like data set (speckled background, bright objects casting acoustic
//! shadows) in the image/mask folder layout: the demo's target domain, with no download.
//!
//! Its objects are the pretraining scenes' shapes other than rectangles (stars, rings, blobs,
//! crescents, polygons, L shapes, bars), so a box is not already a good mask, and they never
//! touch, so each is one 8-connected region of the mask file. The grey, multiplicative speckle
//! and the shadows are what the pretrained base model has never seen.

use std::path::Path;

use anyhow::{Context, Result};
use image::{GrayImage, Luma};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::scenes::{KINDS, Kind, ObjectSizes, Shape};

/// Writes `n` images of `size`×`size` into `dir/images` and their masks into `dir/masks`.
pub fn write_sonar_like(dir: &Path, n: usize, size: u32, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    for sub in ["images", "masks"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    let kinds: Vec<Kind> = KINDS
        .into_iter()
        .filter(|&k| k != Kind::Rectangle)
        .collect();
    let side = size as usize;
    for i in 0..n {
        let mut object = vec![false; side * side];
        // Kept objects stay this many pixels apart, so they remain separate regions.
        let gap = 3i64;
        let wanted = rng.random_range(1..=3);
        let (mut kept, mut tries) = (0, 0);
        while kept < wanted && tries < 30 {
            tries += 1;
            let kind = kinds[rng.random_range(0..kinds.len())];
            let shape = Shape::random_of(kind, &mut rng, size as f32, ObjectSizes::Medium);
            let inside: Vec<usize> = (0..side * side)
                .filter(|&p| shape.contains(((p % side) as f32 + 0.5, (p / side) as f32 + 0.5)))
                .collect();
            let near_other = inside.iter().any(|&p| {
                let (x, y) = ((p % side) as i64, (p / side) as i64);
                (-gap..=gap).any(|dy| {
                    (-gap..=gap).any(|dx| {
                        let (nx, ny) = (x + dx, y + dy);
                        nx >= 0
                            && ny >= 0
                            && nx < side as i64
                            && ny < side as i64
                            && object[ny as usize * side + nx as usize]
                    })
                })
            });
            if inside.len() >= 64 && !near_other {
                inside.iter().for_each(|&p| object[p] = true);
                kept += 1;
            }
        }
        // The shadow: below each column's lowest object pixel, for a third of the image.
        let mut shadow = vec![false; side * side];
        for x in 0..side {
            if let Some(bottom) = (0..side).rev().find(|&y| object[y * side + x]) {
                for y in bottom + 1..(bottom + side / 3).min(side) {
                    shadow[y * side + x] = !object[y * side + x];
                }
            }
        }
        let mut image = GrayImage::new(size, size);
        let mut mask = GrayImage::new(size, size);
        for p in 0..side * side {
            // Speckle: exponentially distributed intensity around the local mean.
            let speckle = -rng.random::<f32>().max(1e-6).ln();
            let mean = if object[p] {
                150.0
            } else if shadow[p] {
                12.0
            } else {
                60.0
            };
            let (x, y) = ((p % side) as u32, (p / side) as u32);
            image.put_pixel(x, y, Luma([(mean * speckle).clamp(0.0, 255.0) as u8]));
            mask.put_pixel(x, y, Luma([if object[p] { 255 } else { 0 }]));
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
