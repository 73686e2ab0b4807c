//! Removing small holes and islands from a mask (Meta's `remove_small_regions`, with OpenCV's
//! 8-connected components).

/// Which small regions to remove: holes (filled) or islands (dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regions {
    Holes,
    Islands,
}

/// Removes the regions of `mode` smaller than `min_area` pixels from the row-major
/// `height × width` mask; true if the mask changed. Islands: when every island is small, the
/// largest (the first in raster order among equals) stays.
pub fn remove_small_regions(
    mask: &mut [bool],
    height: usize,
    width: usize,
    min_area: usize,
    mode: Regions,
) -> bool {
    let region_value = mode == Regions::Islands;
    let (labels, sizes) = components(mask, height, width, region_value);
    let small: Vec<bool> = sizes.iter().map(|&s| s < min_area).collect();
    if !small.contains(&true) {
        return false;
    }
    match mode {
        Regions::Holes => {
            for (m, &l) in mask.iter_mut().zip(&labels) {
                if l > 0 && small[l as usize - 1] {
                    *m = true;
                }
            }
        }
        Regions::Islands => {
            let mut keep: Vec<bool> = small.iter().map(|&s| !s).collect();
            if !keep.contains(&true) {
                let largest =
                    (0..sizes.len()).fold(0, |b, i| if sizes[i] > sizes[b] { i } else { b });
                keep[largest] = true;
            }
            for (m, &l) in mask.iter_mut().zip(&labels) {
                *m = l > 0 && keep[l as usize - 1];
            }
        }
    }
    true
}

/// 8-connected components of the pixels equal to `value`: a label per pixel (0 for the others,
/// components numbered from 1 in raster order of their first pixel) and each component's size.
fn components(mask: &[bool], height: usize, width: usize, value: bool) -> (Vec<u32>, Vec<usize>) {
    let mut labels = vec![0u32; mask.len()];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if mask[start] != value || labels[start] != 0 {
            continue;
        }
        sizes.push(0usize);
        let label = sizes.len() as u32;
        labels[start] = label;
        stack.push(start);
        while let Some(p) = stack.pop() {
            sizes[label as usize - 1] += 1;
            let (y, x) = (p / width, p % width);
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let q = ny * width + nx;
                    if mask[q] == value && labels[q] == 0 {
                        labels[q] = label;
                        stack.push(q);
                    }
                }
            }
        }
    }
    (labels, sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(rows: &[&str]) -> Vec<bool> {
        rows.iter()
            .flat_map(|r| r.chars().map(|c| c == '#'))
            .collect()
    }

    #[test]
    fn fills_small_holes_and_drops_small_islands() {
        let mut m = parse(&["#####.", "#.###.", "#####.", "......", "....#."]);
        assert!(remove_small_regions(&mut m, 5, 6, 2, Regions::Holes));
        assert_eq!(
            m,
            parse(&["#####.", "#####.", "#####.", "......", "....#."])
        );
        assert!(remove_small_regions(&mut m, 5, 6, 2, Regions::Islands));
        assert_eq!(
            m,
            parse(&["#####.", "#####.", "#####.", "......", "......"])
        );
        assert!(!remove_small_regions(&mut m, 5, 6, 2, Regions::Islands));
    }

    #[test]
    fn diagonal_pixels_connect_and_the_largest_island_stays() {
        let mut m = parse(&["#..", ".#.", "..."]);
        assert!(!remove_small_regions(&mut m, 3, 3, 2, Regions::Islands));
        let mut m = parse(&["##.", "...", "..#"]);
        assert!(remove_small_regions(&mut m, 3, 3, 5, Regions::Islands));
        assert_eq!(m, parse(&["##.", "...", "..."]));
    }
}
