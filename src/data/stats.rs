//! Data-set pixel statistics for normalisation (docs/methods.md#sonar-data: the sonar set is normalised with its
//! own mean/std, 0.1701 / 0.1848, computed as SonarSAM's `utils/calc_mean_std.py` does:
//! `np.mean` / `np.std` (population, ddof 0) of all pixels ÷ 255 of the training images).
//!
//! The sums are exact: per channel the pixel values and their squares are summed in integers
//! (u64 per image, u128 overall), and mean and variance come from those in one final step
//! (`var = (n·Σp² − (Σp)²)/(n²·255²)`, the numerator exact in u128), so the result does not
//! depend on the order or on the number of images.

use image::RgbImage;
use rayon::prelude::*;

/// Mean and population standard deviation on the 0–1 scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Per channel (R, G, B).
    pub mean: [f64; 3],
    pub std: [f64; 3],
    /// All channels pooled (what a grey data set's single mean/std is, e.g. the sonar set:
    /// its grey images are replicated to three equal channels).
    pub grey_mean: f64,
    pub grey_std: f64,
    /// Pixels per channel (sum of `h·w` over the images).
    pub pixels: u64,
}

/// Exact integer sums of one channel: count, Σp, Σp².
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    n: u128,
    s: u128,
    s2: u128,
}

impl Sums {
    fn add(self, o: Self) -> Self {
        Self {
            n: self.n + o.n,
            s: self.s + o.s,
            s2: self.s2 + o.s2,
        }
    }

    /// Mean and population std on the 0–1 scale (0 and 0 for no pixels).
    fn mean_std(self) -> (f64, f64) {
        if self.n == 0 {
            return (0.0, 0.0);
        }
        let n = self.n as f64;
        let mean = self.s as f64 / n / 255.0;
        // n·Σp² ≥ (Σp)² (Cauchy–Schwarz), exact in u128 for up to ~10^16 pixels.
        let num = self.n * self.s2 - self.s * self.s;
        let var = num as f64 / (n * n) / (255.0 * 255.0);
        (mean, var.sqrt())
    }
}

fn image_sums(img: &RgbImage) -> [Sums; 3] {
    let row = (img.width() as usize * 3).max(3);
    let (s, s2) = img
        .as_raw()
        .par_chunks(row)
        .map(|r| {
            let mut s = [0u64; 3];
            let mut s2 = [0u64; 3];
            for p in r.chunks_exact(3) {
                for c in 0..3 {
                    let v = u64::from(p[c]);
                    s[c] += v;
                    s2[c] += v * v;
                }
            }
            (s, s2)
        })
        .reduce(
            || ([0; 3], [0; 3]),
            |a, b| {
                (
                    std::array::from_fn(|c| a.0[c] + b.0[c]),
                    std::array::from_fn(|c| a.1[c] + b.1[c]),
                )
            },
        );
    let n = u128::from(img.width()) * u128::from(img.height());
    std::array::from_fn(|c| Sums {
        n,
        s: u128::from(s[c]),
        s2: u128::from(s2[c]),
    })
}

/// Mean and std of a set of images, per channel and pooled, on the 0–1 scale (exact; see the
/// module documentation).
///
/// Images are consumed one at a time (the iterator typically decodes files); the rows of each
/// image are summed in parallel.
pub fn image_stats(images: impl Iterator<Item = RgbImage>) -> Stats {
    let sums = images.fold([Sums::default(); 3], |acc, img| {
        let s = image_sums(&img);
        std::array::from_fn(|c| acc[c].add(s[c]))
    });
    let per: [(f64, f64); 3] = std::array::from_fn(|c| sums[c].mean_std());
    let (grey_mean, grey_std) = sums[0].add(sums[1]).add(sums[2]).mean_std();
    Stats {
        mean: per.map(|p| p.0),
        std: per.map(|p| p.1),
        grey_mean,
        grey_std,
        pixels: sums[0].n as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// R alternates 0 / 255, G is 51, B cycles 10, 20, 30, 40.
    fn synthetic(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let k = y * w + x;
            Rgb([
                if k.is_multiple_of(2) { 0 } else { 255 },
                51,
                (10 + 10 * (k % 4)) as u8,
            ])
        })
    }

    #[test]
    fn known_mean_and_std() {
        let s = image_stats(std::iter::once(synthetic(4, 3)));
        assert_eq!(s.pixels, 12);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-15;
        assert!(close(s.mean[0], 0.5) && close(s.std[0], 0.5), "{s:?}");
        assert!(close(s.mean[1], 0.2) && s.std[1] == 0.0, "{s:?}");
        assert!(close(s.mean[2], 25.0 / 255.0), "{s:?}");
        assert!(close(s.std[2], 125f64.sqrt() / 255.0), "{s:?}");
        // NumPy: `np.concatenate([r, g, b]) / 255` → mean 0.26601307189542484,
        // std 0.33627625652982324.
        assert!(close(s.grey_mean, 0.266_013_071_895_424_84), "{s:?}");
        assert!(close(s.grey_std, 0.336_276_256_529_823_24), "{s:?}");
    }

    #[test]
    fn split_into_images_gives_the_same() {
        let one = image_stats(std::iter::once(synthetic(4, 6)));
        // The same 24 pixels as two 4 × 3 images (rows 0..3 and 3..6 of the first).
        let big = synthetic(4, 6);
        let halves = (0..2).map(|k| RgbImage::from_fn(4, 3, |x, y| *big.get_pixel(x, y + 3 * k)));
        let two = image_stats(halves);
        assert_eq!(one, two);
        assert_eq!(two.pixels, 24);
    }

    #[test]
    fn grey_images_pool_to_the_channel_stats() {
        let img = RgbImage::from_fn(7, 5, |x, y| Rgb([(x * 30 + y) as u8; 3]));
        let s = image_stats(std::iter::once(img));
        assert_eq!(s.mean[0], s.grey_mean);
        assert!((s.std[1] - s.grey_std).abs() < 1e-15);
        let empty = image_stats(std::iter::empty());
        assert_eq!(
            (empty.pixels, empty.grey_mean, empty.grey_std),
            (0, 0.0, 0.0)
        );
    }
}
