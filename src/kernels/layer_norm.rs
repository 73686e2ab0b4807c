//! LayerNorm over the last axis and its backward pass, split by rows across the worker threads.

use rayon::prelude::*;

use super::{math, zeros};

/// Rows per parallel task (SAM's rows are 256 to 1,280 wide).
const ROWS: usize = 64;

/// `x` `[rows, c]` → normalised, scaled and shifted, `c = gamma.len()`.
pub(super) fn forward(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
    let chunk = ROWS * gamma.len();
    let mut out = zeros(x.len());
    out.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(out, x)| math::layer_norm_rows(x, gamma, beta, eps, out));
    out
}

/// Gradients of `x`, `gamma` and `beta`, given `grad` of the output.
pub(super) struct Grads {
    pub x: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

pub(super) fn backward(x: &[f32], gamma: &[f32], grad: &[f32], eps: f32) -> Grads {
    let c = gamma.len();
    let chunk = ROWS * c;
    let mut dx = zeros(x.len());
    let (gamma_grad, beta_grad) = dx
        .par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk).zip(grad.par_chunks(chunk)))
        .map(|(dx, (x, grad))| {
            let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
            math::layer_norm_rows_backward(x, gamma, grad, eps, dx, &mut dg, &mut db);
            (dg, db)
        })
        .reduce(
            || (vec![0.0; c], vec![0.0; c]),
            |(mut dg, mut db), (g, b)| {
                dg.iter_mut().zip(g).for_each(|(a, v)| *a += v);
                db.iter_mut().zip(b).for_each(|(a, v)| *a += v);
                (dg, db)
            },
        );
    Grads {
        x: dx,
        gamma: gamma_grad,
        beta: beta_grad,
    }
}
