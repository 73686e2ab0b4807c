//! Masks as COCO run-length encodings, and the box around a mask, as Meta's `mask_to_rle_pytorch`,
//! `rle_to_mask`, `area_from_rle`, `batched_mask_to_box` and pycocotools' compressed strings do.

use serde::Serialize;

/// A binary mask as COCO's uncompressed RLE: the lengths of alternating runs of 0 and 1 over the
/// pixels in column-major (Fortran) order, starting with a run of 0s (which may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rle {
    pub height: usize,
    pub width: usize,
    pub counts: Vec<u32>,
}

/// The COCO form written to JSON: `{"size": [h, w], "counts": "<compressed>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CocoRle {
    pub size: [usize; 2],
    pub counts: String,
}

impl Rle {
    /// Encodes the mask `on(y, x)` of a `height × width` image.
    pub fn encode(height: usize, width: usize, on: impl Fn(usize, usize) -> bool) -> Rle {
        let mut counts = Vec::new();
        let (mut current, mut run) = (false, 0u32);
        for x in 0..width {
            for y in 0..height {
                if on(y, x) != current {
                    counts.push(run);
                    run = 0;
                    current = !current;
                }
                run += 1;
            }
        }
        counts.push(run);
        Rle {
            height,
            width,
            counts,
        }
    }

    /// Encodes a row-major `height × width` mask.
    pub fn from_mask(mask: &[bool], height: usize, width: usize) -> Rle {
        assert_eq!(mask.len(), height * width, "mask is not height*width");
        Rle::encode(height, width, |y, x| mask[y * width + x])
    }

    /// The row-major mask.
    pub fn decode(&self) -> Vec<bool> {
        let (h, w) = (self.height, self.width);
        let mut mask = vec![false; h * w];
        let mut at = 0usize;
        for (i, &count) in self.counts.iter().enumerate() {
            if i % 2 == 1 {
                for k in at..at + count as usize {
                    mask[(k % h) * w + k / h] = true;
                }
            }
            at += count as usize;
        }
        mask
    }

    /// Pixels in the mask.
    pub fn area(&self) -> u64 {
        self.counts
            .iter()
            .skip(1)
            .step_by(2)
            .map(|&c| u64::from(c))
            .sum()
    }

    /// pycocotools' compressed form (`rleToString`): each count minus the count two before it
    /// (from the fourth on), in 5-bit groups with a continuation bit, offset by 48.
    pub fn to_coco(&self) -> CocoRle {
        let mut s = String::new();
        for (i, &count) in self.counts.iter().enumerate() {
            let mut x = i64::from(count);
            if i > 2 {
                x -= i64::from(self.counts[i - 2]);
            }
            loop {
                let mut c = x & 0x1f;
                x >>= 5;
                let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                s.push(char::from(u8::try_from(c + 48).expect("a 6-bit group")));
                if !more {
                    break;
                }
            }
        }
        CocoRle {
            size: [self.height, self.width],
            counts: s,
        }
    }
}

/// The inclusive box `[x0, y0, x1, y1]` around a row-major `height × width` mask; `[0, 0, 0, 0]`
/// when the mask is empty, as Meta's `batched_mask_to_box` gives it.
pub fn mask_box(mask: &[bool], height: usize, width: usize) -> [i64; 4] {
    let mut b: Option<[usize; 4]> = None;
    for y in 0..height {
        let row = &mask[y * width..(y + 1) * width];
        let (Some(first), Some(last)) = (row.iter().position(|&v| v), row.iter().rposition(|&v| v))
        else {
            continue;
        };
        b = Some(match b {
            None => [first, y, last, y],
            Some([x0, y0, x1, _]) => [x0.min(first), y0, x1.max(last), y],
        });
    }
    b.map_or([0; 4], |b| b.map(|v| v as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_column_major_and_start_with_zeros() {
        // 2 × 3, row-major:  0 1 1 / 0 0 1  → column-major 0 0 | 1 0 | 1 1.
        let mask = [false, true, true, false, false, true];
        let rle = Rle::from_mask(&mask, 2, 3);
        assert_eq!(rle.counts, vec![2, 1, 1, 2]);
        assert_eq!(rle.area(), 3);
        assert_eq!(rle.decode(), mask);
        let full = Rle::from_mask(&[true; 4], 2, 2);
        assert_eq!(full.counts, vec![0, 4]);
        assert_eq!(Rle::from_mask(&[false; 4], 2, 2).counts, vec![4]);
    }

    #[test]
    fn coco_strings_match_pycocotools() {
        // pycocotools.mask.frPyObjects({"size": [h, w], "counts": c}, h, w)["counts"].
        let coco = |counts: Vec<u32>| {
            Rle {
                height: 10,
                width: 10,
                counts,
            }
            .to_coco()
            .counts
        };
        assert_eq!(coco(vec![100]), "T3");
        assert_eq!(coco(vec![0, 100]), "0T3");
        assert_eq!(coco(vec![12, 3, 40, 5, 40]), "<3X120");
    }

    #[test]
    fn box_is_inclusive_and_empty_is_zero() {
        let mut mask = vec![false; 5 * 6];
        mask[6 + 2] = true;
        mask[3 * 6 + 4] = true;
        assert_eq!(mask_box(&mask, 5, 6), [2, 1, 4, 3]);
        assert_eq!(mask_box(&[false; 4], 2, 2), [0; 4]);
    }
}
