//! Where the automatic mask generator prompts: each crop layer's point grid and the crop boxes,
//! computed as Meta's `build_all_layer_point_grids` and `generate_crop_boxes` do, so that the
//! coordinates equal theirs to the bit (docs/sam.md#segment-everything).

/// A crop `[x0, y0, x1, y1]` of the image in pixels (x1, y1 exclusive).
pub type CropBox = [usize; 4];

/// `n × n` points in [0, 1]², row by row (x fastest), each at the centre of its cell.
pub fn point_grid(n: usize) -> Vec<(f64, f64)> {
    let side = cell_centres(n);
    side.iter()
        .flat_map(|&y| side.iter().map(move |&x| (x, y)))
        .collect()
}

/// The grid of every crop layer: layer `i` has `points_per_side / downscale^i` points a side.
pub fn layer_grids(
    points_per_side: usize,
    layers: usize,
    downscale: usize,
) -> Vec<Vec<(f64, f64)>> {
    (0..=layers)
        .map(|i| point_grid(layer_points_per_side(points_per_side, i, downscale)))
        .collect()
}

/// Points a side of crop layer `layer` (0 when the downscaling leaves none).
pub fn layer_points_per_side(points_per_side: usize, layer: usize, downscale: usize) -> usize {
    let divisor = u32::try_from(layer)
        .ok()
        .and_then(|l| downscale.checked_pow(l))
        .unwrap_or(usize::MAX);
    points_per_side / divisor
}

/// `n` values from `1/2n` to `1 − 1/2n` as `numpy.linspace` computes them (`i·step + start`,
/// the last one set to `stop`).
fn cell_centres(n: usize) -> Vec<f64> {
    if n == 0 {
        return Vec::new();
    }
    let start = 1.0 / (2 * n) as f64;
    let stop = 1.0 - start;
    if n == 1 {
        return vec![start];
    }
    let step = (stop - start) / (n - 1) as f64;
    let mut values: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
    values[n - 1] = stop;
    values
}

/// The whole image (layer 0), then for each layer `i ≥ 1` a `2^i × 2^i` tiling of overlapping
/// crops, x outer and y inner, with the layer index of each.
pub fn crop_boxes(
    height: usize,
    width: usize,
    layers: usize,
    overlap_ratio: f64,
) -> Vec<(CropBox, usize)> {
    let mut boxes = vec![([0, 0, width, height], 0)];
    let short_side = height.min(width) as f64;
    let crop_len = |len: usize, n: usize, overlap: usize| {
        ((overlap * (n - 1) + len) as f64 / n as f64).ceil() as usize
    };
    for layer in 1..=layers {
        let n = 1usize << layer;
        let overlap = (overlap_ratio * short_side * (2.0 / n as f64)) as usize;
        let (crop_w, crop_h) = (crop_len(width, n, overlap), crop_len(height, n, overlap));
        let starts = |crop: usize| (0..n).map(move |i| crop.saturating_sub(overlap) * i);
        for x0 in starts(crop_w) {
            for y0 in starts(crop_h) {
                boxes.push((
                    [x0, y0, (x0 + crop_w).min(width), (y0 + crop_h).min(height)],
                    layer,
                ));
            }
        }
    }
    boxes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_cell_centres_x_fastest() {
        let g = point_grid(2);
        assert_eq!(
            g,
            vec![(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)]
        );
        assert_eq!(point_grid(1), vec![(0.5, 0.5)]);
        // numpy.linspace(1/64, 1 - 1/64, 32)[1] is 0.046875 exactly.
        assert_eq!(point_grid(32)[1].0, 0.046875);
    }

    #[test]
    fn downscaled_layers_can_run_out_of_points() {
        assert_eq!(layer_points_per_side(32, 2, 2), 8);
        assert_eq!(layer_points_per_side(3, 2, 2), 0);
        assert_eq!(layer_grids(4, 1, 2)[1].len(), 4);
    }

    #[test]
    fn one_crop_layer_tiles_the_image_with_overlap() {
        // Meta's generate_crop_boxes((200, 300), 1, 512 / 1500).
        let boxes = crop_boxes(200, 300, 1, 512.0 / 1500.0);
        let want: Vec<(CropBox, usize)> = vec![
            ([0, 0, 300, 200], 0),
            ([0, 0, 184, 134], 1),
            ([0, 66, 184, 200], 1),
            ([116, 0, 300, 134], 1),
            ([116, 66, 300, 200], 1),
        ];
        assert_eq!(boxes, want);
    }
}
