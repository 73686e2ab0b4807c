//! The segmentation loss on upsampled mask logits: BCE + soft Dice (docs/methods.md#forward-pass-and-loss, with the Dice term
//! made differentiable as the paper describes).

use burn::tensor::Tensor;
use burn::tensor::activation::{relu, sigmoid};

/// Low-resolution logits `[N, 1, h, w]` → `[N, 1, S, S]`, bilinear with `align_corners = true`
/// and no crop, as the authors' training code.
pub fn upsample_logits(low_res: Tensor<4>, size: usize) -> Tensor<4> {
    crate::sam::transforms::resize_bilinear(low_res, [size, size], true)
}

/// The Dice term of the loss.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum DiceKind {
    /// `p = sigmoid(logit)`: differentiable (the paper's BCE + Dice).
    Soft,
    /// `p = sigmoid(logit) > 0.5`, as the authors' code: it gives no gradient, only BCE trains.
    Hard,
}

/// Σ over the N objects of `BCEWithLogits` (mean over pixels) + `1 − Dice`, with
/// `Dice = (2·Σp·g + 1) / (Σp + Σg + 1)`. `logits`, `targets`: `[N, 1, H, W]`.
pub fn segmentation_loss(logits: Tensor<4>, targets: Tensor<4>, dice: DiceKind) -> Tensor<1> {
    let [_, _, h, w] = logits.dims();
    let x = logits;
    let t = targets;
    // Stable BCE with logits: max(x, 0) − x·t + log(1 + e^−|x|).
    let bce = relu(x.clone()) - x.clone() * t.clone() + x.clone().abs().neg().exp().log1p();
    let bce = pixel_sum(bce) / (h * w) as f64;
    let p = match dice {
        DiceKind::Soft => sigmoid(x),
        DiceKind::Hard => sigmoid(x.detach()).greater_elem(0.5).float(),
    };
    let intersection = pixel_sum(p.clone() * t.clone());
    let dice = (intersection * 2.0 + 1.0) / (pixel_sum(p) + pixel_sum(t) + 1.0);
    (bce - dice + 1.0).sum()
}

/// SAM's mask loss of each mask: 20 × focal loss (α = 0.25, γ = 2, mean over pixels) + soft Dice
/// `1 − (2·Σp·g + 1) / (Σp + Σg + 1)`. `logits`: `[N, K, H, W]` (K candidate masks per prompt),
/// `targets`: `[N, 1, H, W]` → `[N, K]`.
pub fn sam_mask_loss(logits: Tensor<4>, targets: Tensor<4>) -> Tensor<2> {
    let [n, k, h, w] = logits.dims();
    let x = logits;
    let t = targets.expand([n, k, h, w]);
    let ce = relu(x.clone()) - x.clone() * t.clone() + x.clone().abs().neg().exp().log1p();
    let p = sigmoid(x);
    // 1 − p_t = p + t − 2·p·t; α_t = 0.75 − 0.5·t.
    let miss = p.clone() + t.clone() - p.clone() * t.clone() * 2.0;
    let weight = t.clone() * -0.5 + 0.75;
    let focal = grid_sum(weight * miss.clone() * miss * ce) / (h * w) as f64;
    let dice = (grid_sum(p.clone() * t.clone()) * 2.0 + 1.0) / (grid_sum(p) + grid_sum(t) + 1.0);
    focal * 20.0 - dice + 1.0
}

/// `[N, K, H, W]` → `[N, K]`, rows first (see [`pixel_sum`]).
fn grid_sum(x: Tensor<4>) -> Tensor<2> {
    let [n, k, _, _] = x.dims();
    x.sum_dim(3).sum_dim(2).reshape([n, k])
}

/// `[N, 1, H, W]` → `[N]`, summing rows first: a single pass over H·W values in f32 loses
/// digits (1e-5 on the loss at 256²), two passes of H and W values keep them.
fn pixel_sum(x: Tensor<4>) -> Tensor<1> {
    let [n, _, _, _] = x.dims();
    grid_sum(x).reshape([n])
}
