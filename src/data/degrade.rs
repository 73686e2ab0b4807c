//! Imaging degradations for pretraining: what sonar, radar and endoscopy images do to a scene
//! that clean generated scenes never show. A model pretrained on clean scenes alone follows
//! speckle and grain out of its box on real sonar (the shipped base's zero-shot masks on
//! marine-debris spilled past their boxes), so `pretrain --degrade` shows it degraded scenes
//! too: lower contrast, blurred edges, multiplicative speckle and additive grain.

use image::RgbImage;
use image::imageops::blur;
use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Gamma, Normal};

use super::augment::adjust_contrast;

/// Degrades `image` in place with random strengths drawn from `rng`. Each effect is drawn on
/// its own; sizes (blur radius) scale with the image side against 256 px.
pub fn degrade(image: &mut RgbImage, rng: &mut StdRng) {
    let scale = image.width().max(image.height()) as f32 / 256.0;
    if rng.random_bool(0.5) {
        // Faint targets: contrast towards the mean grey, as low-return objects are.
        adjust_contrast(image, rng.random_range(0.3..0.9));
    }
    if rng.random_bool(0.5) {
        // Soft edges: the beam width of sonar, the point spread of SAR and of a camera.
        *image = blur(image, rng.random_range(0.5..2.0) * scale);
    }
    if rng.random_bool(0.7) {
        // Speckle: coherent imaging multiplies the intensity by Gamma(L, 1/L) noise of mean 1
        // (L looks; L = 1 is fully developed speckle), the same factor in every channel.
        let looks = rng.random_range(1.0..6.0f32);
        let speckle = Gamma::new(looks, 1.0 / looks).expect("positive shape and scale");
        for px in image.pixels_mut() {
            let k = speckle.sample(rng);
            px.0 = px.0.map(|v| (f32::from(v) * k).clamp(0.0, 255.0) as u8);
        }
    }
    if rng.random_bool(0.3) {
        // Sensor grain on top.
        let grain = Normal::new(0.0f32, rng.random_range(2.0..20.0)).expect("finite std");
        for px in image.pixels_mut() {
            let d = grain.sample(rng);
            px.0 = px.0.map(|v| (f32::from(v) + d).clamp(0.0, 255.0) as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use rand::SeedableRng;

    fn two_tone() -> RgbImage {
        RgbImage::from_fn(64, 64, |x, _| {
            if x < 32 {
                Rgb([40, 40, 40])
            } else {
                Rgb([200, 180, 160])
            }
        })
    }

    #[test]
    fn same_seed_same_image_and_the_size_is_kept() {
        let (mut a, mut b) = (two_tone(), two_tone());
        degrade(&mut a, &mut StdRng::seed_from_u64(3));
        degrade(&mut b, &mut StdRng::seed_from_u64(3));
        assert_eq!(a, b);
        assert_eq!(a.dimensions(), (64, 64));
    }

    #[test]
    fn some_seeds_change_the_image_and_speckle_keeps_the_mean_near() {
        let clean = two_tone();
        let mean =
            |img: &RgbImage| img.pixels().map(|p| f64::from(p.0[0])).sum::<f64>() / (64.0 * 64.0);
        let mut changed = 0;
        for seed in 0..20 {
            let mut img = clean.clone();
            degrade(&mut img, &mut StdRng::seed_from_u64(seed));
            changed += usize::from(img != clean);
            // Contrast pulls towards the mean and the noises have mean 0 or 1 (up to clipping).
            assert!((mean(&img) - mean(&clean)).abs() < 25.0, "seed {seed}");
        }
        assert!(changed >= 18, "{changed} of 20 degraded");
    }
}
