//! Binary masks as 8-bit grey PNGs.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};
use image::ExtendedColorType;
use image::ImageEncoder;
use image::codecs::png::PngEncoder;

use crate::files::atomic::write_atomic;

/// Writes the `h × w` logits of one mask as a PNG: `logit > 0` → 255, else 0 (SAM's threshold).
pub fn write_mask_png(path: &Path, logits: &[f32], h: usize, w: usize) -> Result<()> {
    ensure!(
        logits.len() == h * w,
        "mask has {} values, expected {h}x{w}",
        logits.len()
    );
    let pixels: Vec<u8> = logits
        .iter()
        .map(|&v| if v > 0.0 { 255 } else { 0 })
        .collect();
    write_png(path, &pixels, w, h, ExtendedColorType::L8)
}

/// Refuses an output name whose extension is not `.png`: the bytes written are PNG, and a mask
/// saved as JPEG would no longer be binary.
pub fn check_png_name(flag: &str, path: &Path) -> Result<()> {
    let png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    ensure!(
        png,
        "{flag} {}: masks and overlays are written as PNG; name the file .png",
        path.display()
    );
    Ok(())
}

/// Encodes raw pixels as a PNG, atomically. `color` is `L8` or `Rgb8`.
pub(crate) fn write_png(
    path: &Path,
    pixels: &[u8],
    w: usize,
    h: usize,
    color: ExtendedColorType,
) -> Result<()> {
    let (w, h) = (u32::try_from(w)?, u32::try_from(h)?);
    write_atomic(path, |out: &mut dyn Write| {
        PngEncoder::new(out).write_image(pixels, w, h, color)?;
        Ok(())
    })
}

/// File names for `n` prompts of `k` masks each: [`numbered_paths`] when `k == 1`, else
/// `stem_<prompt>_<k>.ext` (`mask.png` → `mask_0_0.png`, `mask_0_1.png`, …), prompt-major.
pub fn mask_paths(path: &Path, n: usize, k: usize) -> Vec<PathBuf> {
    if k == 1 {
        return numbered_paths(path, n);
    }
    (0..n * k)
        .map(|j| with_suffix(path, &format!("_{}_{}", j / k, j % k)))
        .collect()
}

/// File names for `n` outputs: the path itself when `n == 1`, else `stem_0.ext`, `stem_1.ext`, …
/// in the same directory (`mask.png` → `mask_0.png`, `mask_1.png`).
pub fn numbered_paths(path: &Path, n: usize) -> Vec<PathBuf> {
    if n == 1 {
        return vec![path.to_path_buf()];
    }
    (0..n)
        .map(|i| with_suffix(path, &format!("_{i}")))
        .collect()
}

/// `path` with `suffix` added to its stem: `dir/mask.png` → `dir/mask<suffix>.png`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}{suffix}.{}", ext.to_string_lossy()),
        None => format!("{stem}{suffix}"),
    };
    path.with_file_name(name)
}

/// Writes an RGB image as a PNG, atomically.
pub(crate) fn write_rgb_png(path: &Path, image: &image::RgbImage) -> Result<()> {
    write_png(
        path,
        image.as_raw(),
        image.width() as usize,
        image.height() as usize,
        ExtendedColorType::Rgb8,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_paths_single_and_many() {
        let p = Path::new("out/mask.png");
        assert_eq!(numbered_paths(p, 1), vec![PathBuf::from("out/mask.png")]);
        assert_eq!(
            numbered_paths(p, 3),
            ["out/mask_0.png", "out/mask_1.png", "out/mask_2.png"].map(PathBuf::from)
        );
        assert_eq!(
            numbered_paths(Path::new("logits"), 2),
            ["logits_0", "logits_1"].map(PathBuf::from)
        );
        assert!(numbered_paths(p, 0).is_empty());
    }

    #[test]
    fn mask_png_thresholds_at_zero() {
        let dir = std::env::temp_dir().join(format!("sam-cobot-mask-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mask.png");
        let logits = [-1.0, 0.0, 0.5, 3.0, -0.0, 1e-7];
        write_mask_png(&path, &logits, 2, 3).unwrap();
        let img = image::open(&path).unwrap();
        assert_eq!(img.color(), image::ColorType::L8);
        assert_eq!((img.width(), img.height()), (3, 2));
        assert_eq!(img.into_luma8().into_raw(), vec![0, 0, 255, 255, 0, 255]);
        assert!(write_mask_png(&path, &logits, 2, 2).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
