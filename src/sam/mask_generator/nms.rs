//! Non-maximum suppression over boxes, as torchvision's `batched_nms` computes it with one
//! category (the automatic mask generator's only use).

/// The indices of the boxes kept, highest score first: boxes are visited in score order (a stable
/// sort, so equal scores keep their order) and each kept box suppresses every later box whose IoU
/// with it exceeds `iou_threshold`. Boxes are `[x0, y0, x1, y1]`; one of zero area overlaps
/// nothing (its IoU is 0/0, never above the threshold), as in torchvision.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], iou_threshold: f64) -> Vec<usize> {
    assert_eq!(boxes.len(), scores.len(), "one score per box");
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let area = |b: &[f32; 4]| (b[2] - b[0]) * (b[3] - b[1]);
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (rank, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let (bi, area_i) = (&boxes[i], area(&boxes[i]));
        for &j in &order[rank + 1..] {
            if suppressed[j] {
                continue;
            }
            let bj = &boxes[j];
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0])).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1])).max(0.0);
            let inter = w * h;
            let iou = inter / (area_i + area(bj) - inter);
            if f64::from(iou) > iou_threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_of_overlapping_boxes_in_score_order() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 1.0, 10.0, 10.0],   // IoU 0.81 with the first
            [20.0, 20.0, 30.0, 30.0], // apart
            [5.0, 5.0, 5.0, 5.0],     // no area: never suppressed
        ];
        assert_eq!(nms(&boxes, &[0.5, 0.9, 0.7, 0.1], 0.7), vec![1, 2, 3]);
        assert_eq!(nms(&boxes, &[0.5, 0.9, 0.7, 0.1], 0.9), vec![1, 2, 0, 3]);
        // Equal scores keep their order.
        assert_eq!(nms(&boxes[2..], &[1.0, 1.0], 0.7), vec![0, 1]);
    }
}
