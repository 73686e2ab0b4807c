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
    // The γ and β gradients sum over every row: each chunk of `ROWS` rows sums its own into a
    // partial, and the partials are added in chunk order on this thread. A parallel `reduce`
    // would add them in an order that depends on which thread stole what (rayon splits
    // adaptively), so two runs could differ in the last bits; chunks fixed by the sizes alone
    // give the same bits run after run and for any thread count.
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk).zip(grad.par_chunks(chunk)))
        .map(|(dx, (x, grad))| {
            let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
            math::layer_norm_rows_backward(x, gamma, grad, eps, dx, &mut dg, &mut db);
            (dg, db)
        })
        .collect();
    let (mut gamma_grad, mut beta_grad) = (vec![0.0; c], vec![0.0; c]);
    for (g, b) in &partials {
        gamma_grad.iter_mut().zip(g).for_each(|(a, v)| *a += v);
        beta_grad.iter_mut().zip(b).for_each(|(a, v)| *a += v);
    }
    Grads {
        x: dx,
        gamma: gamma_grad,
        beta: beta_grad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * seed).sin() * 2.0).collect()
    }

    /// The γ and β gradients are the same bits on 1 to 4 threads and run after run: rows that
    /// make an odd number of chunks (and a last, short one), where a parallel `reduce` changed
    /// its association with the work stealing.
    #[test]
    fn parameter_gradients_do_not_depend_on_the_threads() {
        let (rows, c) = (37 * ROWS + 5, 48);
        let (x, gamma, grad) = (
            values(rows * c, 0.37),
            values(c, 1.3),
            values(rows * c, 0.11),
        );
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let g = pool.install(|| backward(&x, &gamma, &grad, 1e-6));
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            (bits(&g.x), bits(&g.gamma), bits(&g.beta))
        };
        let first = run(1);
        for threads in [2, 3, 4, 2, 2, 2] {
            assert!(run(threads) == first, "{threads} threads");
        }
    }
}
