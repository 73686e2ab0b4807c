//! The paper's per-object scores (docs/methods.md#metrics, #per-object-dice-and-iou) and their class averages.

use std::collections::BTreeMap;

use serde::Serialize;

/// Smoothed Dice and IoU of a binary prediction against a binary target (same length):
/// `(2|A∩B| + 1) / (|A| + |B| + 1)` and `(|A∩B| + 1) / (|A∪B| + 1)`.
pub fn dice_iou(
    prediction: impl Iterator<Item = bool>,
    target: impl Iterator<Item = bool>,
) -> (f64, f64) {
    let (mut inter, mut a, mut b) = (0u64, 0u64, 0u64);
    for (p, t) in prediction.zip(target) {
        a += u64::from(p);
        b += u64::from(t);
        inter += u64::from(p && t);
    }
    let union = a + b - inter;
    let dice = (2 * inter + 1) as f64 / (a + b + 1) as f64;
    let iou = (inter + 1) as f64 / (union + 1) as f64;
    (dice, iou)
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ClassScore {
    /// Percentages.
    pub dice: f64,
    pub iou: f64,
    pub objects: usize,
}

/// Scores accumulated per class.
#[derive(Debug, Clone, Default)]
pub struct Scores {
    sums: BTreeMap<usize, (f64, f64, usize)>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Mean over the object classes present (background excluded), percent.
    pub mean_dice: f64,
    pub mean_iou: f64,
    /// The authors' convention: mean over all object classes, absent ones counting 0.
    pub mean_dice_absent_zero: f64,
    pub objects: usize,
    pub per_class: BTreeMap<String, ClassScore>,
}

impl Scores {
    pub fn add(&mut self, class: usize, dice: f64, iou: f64) {
        let entry = self.sums.entry(class).or_default();
        entry.0 += dice;
        entry.1 += iou;
        entry.2 += 1;
    }

    /// Class means and the means over object classes; `classes[0]` is the background.
    pub fn summary(&self, classes: &[String]) -> Summary {
        let mut per_class = BTreeMap::new();
        let (mut dice, mut iou, mut present) = (0.0, 0.0, 0usize);
        for (&class, &(d, i, n)) in &self.sums {
            let score = ClassScore {
                dice: 100.0 * d / n as f64,
                iou: 100.0 * i / n as f64,
                objects: n,
            };
            if class != 0 {
                dice += score.dice;
                iou += score.iou;
                present += 1;
            }
            let name = classes
                .get(class)
                .cloned()
                .unwrap_or_else(|| format!("class {class}"));
            per_class.insert(name, score);
        }
        let foreground = classes.len().saturating_sub(1).max(present);
        let mean = |sum: f64, n: usize| if n == 0 { 0.0 } else { sum / n as f64 };
        Summary {
            mean_dice: mean(dice, present),
            mean_iou: mean(iou, present),
            mean_dice_absent_zero: mean(dice, foreground),
            objects: self.sums.values().map(|s| s.2).sum(),
            per_class,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothed_scores() {
        let p = [true, true, false, false];
        let t = [true, false, true, false];
        let (d, i) = dice_iou(p.into_iter(), t.into_iter());
        assert!((d - 3.0 / 5.0).abs() < 1e-12);
        assert!((i - 2.0 / 4.0).abs() < 1e-12);
        // Both empty: perfect by the smoothing.
        let (d, i) = dice_iou([false; 3].into_iter(), [false; 3].into_iter());
        assert_eq!((d, i), (1.0, 1.0));
    }

    #[test]
    fn class_means_exclude_background_and_absent_classes() {
        let classes: Vec<String> = ["background", "a", "b", "c"].map(String::from).to_vec();
        let mut s = Scores::default();
        s.add(1, 0.8, 0.6);
        s.add(1, 0.6, 0.4);
        s.add(2, 0.5, 0.5);
        let sum = s.summary(&classes);
        assert_eq!(sum.objects, 3);
        assert!((sum.per_class["a"].dice - 70.0).abs() < 1e-9);
        assert!((sum.mean_dice - 60.0).abs() < 1e-9);
        assert!((sum.mean_iou - 50.0).abs() < 1e-9);
        assert!((sum.mean_dice_absent_zero - 40.0).abs() < 1e-9);
    }
}
