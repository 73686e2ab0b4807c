//! The fused CPU kernels against burn's composed ops (the path of every other device): SAM's
//! attention (windowed with padding on both axes, global, several query tiles, a batch of two),
//! LayerNorm, GELU, linear (with a bias, without, and with a low-rank addend), values and
//! gradients of every input.

mod common;

use burn::tensor::{Device, Gradients, Tensor, TensorData};
use common::relative_l2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sam_cobot::kernels;
use sam_cobot::sam::attention::rel_pos_attention;

fn device() -> Device {
    Device::flex().autodiff()
}

fn random<const D: usize>(rng: &mut StdRng, shape: [usize; D], scale: f32) -> Tensor<D> {
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
    Tensor::from_data(TensorData::new(values, shape), &device()).require_grad()
}

fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data().try_to_vec::<f32>().unwrap()
}

/// The values of `t`'s gradient, which must exist.
fn grad<const D: usize>(t: &Tensor<D>, grads: &Gradients) -> Vec<f32> {
    values(&t.grad(grads).unwrap())
}

/// Runs `run` with the fused kernels and with burn's composed ops. `run` returns the output's
/// values, then the gradient of each input of `Σ output · weights`, in the order of `labels`
/// (after "output"). Outputs must agree to 1e-6 and gradients to 1e-5 (relative L2); a gradient
/// that is zero on the composed path must be zero on the fused one.
fn compare(name: &str, labels: &[&str], run: impl Fn() -> Vec<Vec<f32>>) {
    let results = [true, false].map(|fused| {
        kernels::set_enabled(fused);
        run()
    });
    kernels::set_enabled(true);
    let [fused, composed] = &results;
    for (i, (label, (got, want))) in labels.iter().zip(fused.iter().zip(composed)).enumerate() {
        if i > 0 && want.iter().all(|v| *v == 0.0) {
            assert!(
                got.iter().all(|v| *v == 0.0),
                "{name}: {label} gets a gradient"
            );
            continue;
        }
        let err = relative_l2(got, want);
        let bound = if i == 0 { 1e-6 } else { 1e-5 };
        assert!(err < bound, "{name}: {label} differs by {err:e}");
    }
}

fn check_attention(name: &str, shape: [usize; 4], heads: usize, window: (usize, usize)) {
    let mut rng = StdRng::seed_from_u64(7);
    let [b, h, w, c3] = shape;
    let hd = c3 / 3 / heads;
    let qkv = random(&mut rng, shape, 1.0);
    let pad = random(&mut rng, [c3], 1.0);
    let rel_h = random(&mut rng, [window.0, window.0, hd], 0.5);
    let rel_w = random(&mut rng, [window.1, window.1, hd], 0.5);
    let weights = random(&mut rng, [b, h, w, c3 / 3], 1.0).detach();
    compare(name, &["output", "qkv", "pad", "rel_h", "rel_w"], || {
        let out = rel_pos_attention(
            qkv.clone(),
            pad.clone(),
            rel_h.clone(),
            rel_w.clone(),
            heads,
        );
        let grads = (out.clone() * weights.clone()).sum().backward();
        // An input the output does not depend on (pad, with no padding) may get no gradient.
        let pad_grad = pad.grad(&grads).map_or(vec![0.0; c3], |g| values(&g));
        vec![
            values(&out),
            grad(&qkv, &grads),
            pad_grad,
            grad(&rel_h, &grads),
            grad(&rel_w, &grads),
        ]
    });
}

#[test]
fn windowed_attention_with_padding_on_both_axes() {
    // 11 × 9 tokens in 4 × 4 windows: full windows, a 3-row band, a 1-column band and a corner.
    check_attention("windowed", [1, 11, 9, 3 * 2 * 8], 2, (4, 4));
}

#[test]
fn windowed_attention_over_a_batch_with_unequal_window_sides() {
    check_attention("batch", [2, 7, 10, 3 * 3 * 4], 3, (5, 3));
}

#[test]
fn windows_larger_than_the_grid() {
    // A small image: 3 rows in windows of 4 (all padding below), 5 columns in 4 + 1.
    check_attention("small grid", [1, 3, 5, 3 * 2 * 4], 2, (4, 4));
}

#[test]
fn global_attention_in_several_query_tiles() {
    // 24 × 24 keys: the kernel takes the 576 queries in tiles of 113.
    check_attention("global", [1, 24, 24, 3 * 2 * 8], 2, (24, 24));
}

#[test]
fn windowed_attention_in_several_query_tiles() {
    // 20 × 20 windows (400 keys, tiles of 163 queries) on a 23 × 21 grid.
    check_attention("large windows", [1, 23, 21, 3 * 8], 1, (20, 20));
}

#[test]
fn layer_norm_matches_composed_ops() {
    let mut rng = StdRng::seed_from_u64(5);
    // An offset mean, rows of an odd width, and a non-contiguous view as SAM's LayerNorm2d has.
    let x = (random(&mut rng, [5, 2, 37], 2.0) + 3.0)
        .detach()
        .require_grad();
    let gamma = random(&mut rng, [37], 1.0);
    let beta = random(&mut rng, [37], 1.0);
    let weights = random(&mut rng, [2, 5, 37], 1.0).detach();
    compare("layer_norm", &["output", "x", "gamma", "beta"], || {
        let out = kernels::layer_norm(x.clone().swap_dims(0, 1), gamma.clone(), beta.clone(), 1e-6);
        let grads = (out.clone() * weights.clone()).sum().backward();
        vec![
            values(&out),
            grad(&x, &grads),
            grad(&gamma, &grads),
            grad(&beta, &grads),
        ]
    });
}

#[test]
fn gelu_matches_composed_ops() {
    let mut rng = StdRng::seed_from_u64(9);
    let x = random(&mut rng, [3, 1000], 6.0);
    let weights = random(&mut rng, [3, 1000], 1.0).detach();
    compare("gelu", &["output", "x"], || {
        let out = kernels::gelu(x.clone());
        let grads = (out.clone() * weights.clone()).sum().backward();
        vec![values(&out), grad(&x, &grads)]
    });
}

/// A product small enough for one thread and one split across the threads, a transposed view as
/// `x`, and a frozen weight and bias: those get no gradient, and x still gets its own.
#[test]
fn linear_matches_composed_ops() {
    let mut rng = StdRng::seed_from_u64(11);
    for (rows, d_in, d_out) in [(40, 24, 19), (300, 64, 96)] {
        let x = random(&mut rng, [d_in, rows], 1.0);
        let weight = random(&mut rng, [d_out, d_in], 0.5);
        let bias = random(&mut rng, [d_out], 0.5);
        let weights = random(&mut rng, [rows, d_out], 1.0).detach();
        compare(
            &format!("linear over {rows} rows"),
            &["output", "x", "weight", "bias"],
            || {
                let out =
                    kernels::linear(x.clone().transpose(), weight.clone(), Some(bias.clone()));
                let grads = (out.clone() * weights.clone()).sum().backward();
                vec![
                    values(&out),
                    grad(&x, &grads),
                    grad(&weight, &grads),
                    grad(&bias, &grads),
                ]
            },
        );
        // Copies without require_grad.
        let frozen_weight = Tensor::<2>::from_data(weight.to_data(), &device());
        let frozen_bias = Tensor::<1>::from_data(bias.to_data(), &device());
        compare(
            &format!("frozen linear over {rows} rows"),
            &["output", "x"],
            || {
                let out = kernels::linear(
                    x.clone().transpose(),
                    frozen_weight.clone(),
                    Some(frozen_bias.clone()),
                );
                let grads = (out.clone() * weights.clone()).sum().backward();
                assert!(frozen_weight.grad(&grads).is_none() && frozen_bias.grad(&grads).is_none());
                vec![values(&out), grad(&x, &grads)]
            },
        );
    }
}

/// Without a bias, small and split across the threads, the narrow output by rows.
#[test]
fn unbiased_linear_matches_composed_ops() {
    let mut rng = StdRng::seed_from_u64(13);
    for (rows, d_in, d_out) in [(40, 24, 19), (300, 64, 96), (700, 256, 8)] {
        let x = random(&mut rng, [rows, d_in], 1.0);
        let weight = random(&mut rng, [d_out, d_in], 0.5);
        let weights = random(&mut rng, [rows, d_out], 1.0).detach();
        compare(
            &format!("unbiased linear {rows}×{d_in}→{d_out}"),
            &["output", "x", "weight"],
            || {
                let out = kernels::linear(x.clone(), weight.clone(), None);
                let grads = (out.clone() * weights.clone()).sum().backward();
                vec![values(&out), grad(&x, &grads), grad(&weight, &grads)]
            },
        );
    }
}

/// `x·Wᵀ + b + z·upᵀ` with a frozen weight and bias (LoRA's case) and with all five trainable.
#[test]
fn low_rank_linear_matches_composed_ops() {
    let mut rng = StdRng::seed_from_u64(17);
    let (rows, d_in, d_out, r) = (300, 64, 96, 8);
    let x = random(&mut rng, [rows, d_in], 1.0);
    let weight = random(&mut rng, [d_out, d_in], 0.5);
    let bias = random(&mut rng, [d_out], 0.5);
    let z = random(&mut rng, [rows, r], 1.0);
    let up = random(&mut rng, [d_out, r], 0.5);
    let weights = random(&mut rng, [rows, d_out], 1.0).detach();
    compare(
        "low-rank linear",
        &["output", "x", "weight", "bias", "z", "up"],
        || {
            let out = kernels::linear_low_rank(
                x.clone(),
                weight.clone(),
                bias.clone(),
                z.clone(),
                up.clone(),
            );
            let grads = (out.clone() * weights.clone()).sum().backward();
            vec![
                values(&out),
                grad(&x, &grads),
                grad(&weight, &grads),
                grad(&bias, &grads),
                grad(&z, &grads),
                grad(&up, &grads),
            ]
        },
    );
    let frozen_weight = Tensor::<2>::from_data(weight.to_data(), &device());
    let frozen_bias = Tensor::<1>::from_data(bias.to_data(), &device());
    compare(
        "low-rank linear, frozen weight and bias",
        &["output", "x", "z", "up"],
        || {
            let out = kernels::linear_low_rank(
                x.clone(),
                frozen_weight.clone(),
                frozen_bias.clone(),
                z.clone(),
                up.clone(),
            );
            let grads = (out.clone() * weights.clone()).sum().backward();
            assert!(frozen_weight.grad(&grads).is_none() && frozen_bias.grad(&grads).is_none());
            vec![
                values(&out),
                grad(&x, &grads),
                grad(&z, &grads),
                grad(&up, &grads),
            ]
        },
    );
}
