//! Widening a trained mask decoder (`pretrain --widen-decoder W`): a wider neck, prompt encoder
//! and mask decoder that start by computing what the trained ones did.
//!
//! Every width of the decoder side grows by the same whole factor k: the width the neck, the
//! prompts and the decoder share (SAM's `transformer_dim`), the attentions' inner widths (the
//! 8 heads keep their number, each k times wider), the MLPs', the upscaling's channels and the
//! IoU head's. Each new channel is a copy of a trained one (Net2Net's wider layers): a layer
//! reading k copies of a channel takes 1/k of its weight from each, so every sum, LayerNorm
//! (copies keep the mean and the variance), dot product and mask comes out as before. Two
//! products need more: q·k over k copies per head is k times larger while the scale only falls
//! by √k, so the queries shrink by √k; and the mask (hypernetwork output · upscaled channels)
//! sums k copies, so the hypernetworks' outputs shrink by k. The image encoder is untouched.
//!
//! Exact copies would get equal gradients and stay copies, so [`widen_decoder`] adds Gaussian
//! noise (a fraction of each weight tensor's standard deviation) to let them part.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use crate::checkpoint::{RawTensor, StateDict};
use crate::sam::config::DECODER_HEADS;

/// How one axis of a tensor widens.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Axis {
    /// Not widened (the image encoder's channels, the four IoU outputs, a kernel's rows).
    Keep,
    /// The shared width, laid out as the random positional encoding lays it out: k copies of
    /// the sines, then k copies of the cosines.
    Shared,
    /// An attention's inner width: each of the heads k times wider, its channels repeated.
    Heads,
    /// Any other inner width (MLP, upscaling, positional-encoding frequencies): repeated k times.
    Inner,
}

/// How a tensor widens: its axes, which of them a product sums over (each widened one
/// divides the tensor by k), and a further factor.
struct Rule {
    axes: Vec<Axis>,
    summed: Option<usize>,
    extra: Extra,
}

/// A factor beyond the 1/k of a summed axis.
#[derive(Clone, Copy, PartialEq)]
enum Extra {
    None,
    /// Queries: 1/√k, so that q·k/√(head width) stays the same.
    Query,
    /// Hypernetwork outputs: 1/k, so that the mask's sum over the upscaled channels stays.
    MaskSum,
}

/// `dict` with the neck, prompt encoder and mask decoder widened to `width` (a whole multiple
/// of the checkpoint's), noise of `noise` × each weight's standard deviation drawn from `seed`.
pub fn widen_decoder(
    dict: &StateDict,
    width: usize,
    noise: f32,
    seed: u64,
) -> Result<StateDict, String> {
    let no_mask = "prompt_encoder.no_mask_embed.weight";
    let dim = *dict
        .get(no_mask)
        .ok_or_else(|| format!("{no_mask} is missing"))?
        .shape
        .last()
        .ok_or_else(|| format!("{no_mask} has no shape"))?;
    if dim == 0 || width < dim || !width.is_multiple_of(dim) {
        return Err(format!(
            "width {width} is not a whole multiple of the checkpoint's decoder width {dim}"
        ));
    }
    let k = width / dim;
    let iou_last = dict
        .count_indexed("mask_decoder.iou_prediction_head.layers.", ".weight")
        .checked_sub(1)
        .ok_or("mask_decoder.iou_prediction_head.layers.0.weight is missing")?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = StateDict::new();
    for (key, tensor) in dict.iter() {
        let widened = match rule(key, iou_last) {
            Some(rule) if k > 1 => {
                let mut t = widen(tensor, &rule, k).map_err(|e| format!("{key}: {e}"))?;
                if t.shape.len() > 1 && noise > 0.0 {
                    add_noise(&mut t, noise, &mut rng);
                }
                t
            }
            _ => tensor.clone(),
        };
        out.insert(key, widened);
    }
    Ok(out)
}

/// How the tensor `key` widens, or `None` when it stays (the image encoder's blocks);
/// `iou_last` is the index of the IoU head's last layer.
fn rule(key: &str, iou_last: usize) -> Option<Rule> {
    use Axis::{Heads, Inner, Keep, Shared};
    let r = |axes: &[Axis], summed: Option<usize>, extra| {
        Some(Rule {
            axes: axes.to_vec(),
            summed,
            extra,
        })
    };
    let plain = |axes: &[Axis], summed| r(axes, summed, Extra::None);
    let (module, name) = key.rsplit_once('.')?;
    let last = module.rsplit('.').next()?;
    if let Some(neck) = module.strip_prefix("image_encoder.neck.") {
        return match (neck, name) {
            ("0", "weight") => plain(&[Shared, Keep, Keep, Keep], None),
            ("2", "weight") => plain(&[Shared, Shared, Keep, Keep], Some(1)),
            _ => plain(&[Shared], None),
        };
    }
    if let Some(part) = module.strip_prefix("prompt_encoder.") {
        return match part {
            "pe_layer" => plain(&[Keep, Inner], None),
            "mask_downscaling.6" if name == "weight" => plain(&[Shared, Keep, Keep, Keep], None),
            "mask_downscaling.6" => plain(&[Shared], None),
            p if p.starts_with("mask_downscaling") => None,
            _ => plain(&[Keep, Shared], None),
        };
    }
    let part = module.strip_prefix("mask_decoder.")?;
    let weight = name == "weight";
    if part == "iou_token" || part == "mask_tokens" {
        return plain(&[Keep, Shared], None);
    }
    if part.starts_with("transformer.") {
        return match (last, weight) {
            ("q_proj", true) => r(&[Heads, Shared], Some(1), Extra::Query),
            ("q_proj", false) => r(&[Heads], None, Extra::Query),
            ("k_proj" | "v_proj", true) => plain(&[Heads, Shared], Some(1)),
            ("k_proj" | "v_proj", false) => plain(&[Heads], None),
            ("out_proj", true) => plain(&[Shared, Heads], Some(1)),
            ("lin1", true) => plain(&[Inner, Shared], Some(1)),
            ("lin1", false) => plain(&[Inner], None),
            ("lin2", true) => plain(&[Shared, Inner], Some(1)),
            _ => plain(&[Shared], None),
        };
    }
    if let Some(layer) = part.strip_prefix("output_upscaling.") {
        return match (layer, weight) {
            // ConvTranspose2d weights are [in, out, kh, kw].
            ("0", true) => plain(&[Shared, Inner, Keep, Keep], Some(0)),
            ("3", true) => plain(&[Inner, Inner, Keep, Keep], Some(0)),
            _ => plain(&[Inner], None),
        };
    }
    if part.starts_with("output_hypernetworks_mlps.") {
        let first = part.ends_with("layers.0");
        let output = part.ends_with("layers.2");
        let extra = if output { Extra::MaskSum } else { Extra::None };
        return match weight {
            true if first => r(&[Inner, Shared], Some(1), extra),
            true => r(&[Inner, Inner], Some(1), extra),
            false => r(&[Inner], None, extra),
        };
    }
    if let Some(layer) = part.strip_prefix("iou_prediction_head.layers.") {
        let input = if layer == "0" { Shared } else { Inner };
        // The last layer's outputs are the IoU scores, one per mask token.
        let output = if layer == iou_last.to_string() {
            Keep
        } else {
            Inner
        };
        return match weight {
            true => plain(&[output, input], Some(1)),
            false => plain(&[output], None),
        };
    }
    None
}

/// `t` with each axis widened by `k` as `rule` says.
fn widen(t: &RawTensor, rule: &Rule, k: usize) -> Result<RawTensor, String> {
    if rule.axes.len() != t.shape.len() {
        return Err(format!(
            "expected {} axes, found shape {:?}",
            rule.axes.len(),
            t.shape
        ));
    }
    // For each axis, the old index of every new one.
    let maps: Vec<Vec<usize>> = rule
        .axes
        .iter()
        .zip(&t.shape)
        .map(|(axis, &n)| source_indices(*axis, n, k))
        .collect::<Result<_, _>>()?;
    let mut scale = match rule.extra {
        Extra::None => 1.0,
        Extra::Query => 1.0 / (k as f32).sqrt(),
        Extra::MaskSum => 1.0 / k as f32,
    };
    if let Some(axis) = rule.summed
        && rule.axes[axis] != Axis::Keep
    {
        scale /= k as f32;
    }
    let shape: Vec<usize> = maps.iter().map(Vec::len).collect();
    let old_strides = strides(&t.shape);
    let mut data = Vec::with_capacity(shape.iter().product());
    let mut index = vec![0usize; shape.len()];
    for _ in 0..shape.iter().product::<usize>() {
        let old: usize = (0..shape.len())
            .map(|a| maps[a][index[a]] * old_strides[a])
            .sum();
        data.push(t.data[old] * scale);
        // Next index, last axis fastest.
        for a in (0..shape.len()).rev() {
            index[a] += 1;
            if index[a] < shape[a] {
                break;
            }
            index[a] = 0;
        }
    }
    Ok(RawTensor::new(shape, data))
}

/// The old index of each of the `n · k` new ones of an axis of size `n` (or `n` for `Keep`).
fn source_indices(axis: Axis, n: usize, k: usize) -> Result<Vec<usize>, String> {
    Ok(match axis {
        Axis::Keep => (0..n).collect(),
        Axis::Inner => (0..n * k).map(|j| j % n).collect(),
        Axis::Shared => {
            if !n.is_multiple_of(2) {
                return Err(format!("the shared width {n} is odd (sines and cosines)"));
            }
            let half = n / 2;
            (0..n * k)
                .map(|j| match j < half * k {
                    true => j % half,
                    false => half + (j - half * k) % half,
                })
                .collect()
        }
        Axis::Heads => {
            if !n.is_multiple_of(DECODER_HEADS) {
                return Err(format!("width {n} is not {DECODER_HEADS} heads"));
            }
            let head = n / DECODER_HEADS;
            (0..n * k)
                .map(|j| (j / (head * k)) * head + (j % (head * k)) % head)
                .collect()
        }
    })
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        s[a] = s[a + 1] * shape[a + 1];
    }
    s
}

/// Adds N(0, (`fraction` · std of `t`)²) to every value of `t`.
fn add_noise(t: &mut RawTensor, fraction: f32, rng: &mut StdRng) {
    let n = t.data.len() as f32;
    let mean = t.data.iter().sum::<f32>() / n;
    let var = t.data.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n;
    let std = fraction * var.sqrt();
    if std > 0.0 {
        let normal = Normal::new(0.0, std).expect("finite, positive std");
        for v in &mut t.data {
            *v += normal.sample(rng);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::F32Values;
    use crate::sam::{Prompts, Sam, SamConfig, random::random_state_dict};
    use burn::tensor::{Device, Tensor, TensorData};

    /// Masks and IoU scores of `dict` for a box and for a point with a background point.
    fn outputs(dict: StateDict) -> Vec<f32> {
        let device = Device::flex();
        let s = 64;
        let sam = Sam::from_state_dict(dict, Some(s), &device).unwrap();
        let pixels = (0..3 * s * s).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0);
        let image = TensorData::new(pixels.collect::<Vec<_>>(), [1, 3, s, s]);
        let embedding = sam.embed_image(Tensor::from_data(image, &device));
        let prompts = [
            Prompts {
                points: vec![],
                boxes: vec![[5.0, 9.0, 40.0, 51.0]],
            },
            Prompts {
                points: vec![vec![(20.0, 30.0, 1), (50.0, 10.0, 0)]],
                boxes: vec![],
            },
        ];
        let mut values = Vec::new();
        for p in &prompts {
            let out = sam.predict_masks(embedding.clone(), p, true);
            values.extend(out.low_res_logits.f32_values());
            values.extend(out.iou.f32_values());
        }
        values
    }

    #[test]
    fn the_widened_decoder_computes_what_the_trained_one_did() {
        let dict = random_state_dict(&SamConfig::named("mini").unwrap(), 5);
        let wide = widen_decoder(&dict, 192, 0.0, 0).unwrap();
        assert_eq!(
            wide.get("mask_decoder.transformer.layers.1.cross_attn_token_to_image.q_proj.weight")
                .unwrap()
                .shape,
            [96, 192]
        );
        assert_eq!(
            wide.get("mask_decoder.iou_prediction_head.layers.2.weight")
                .unwrap()
                .shape,
            [4, 192]
        );
        let (before, after) = (outputs(dict), outputs(wide));
        let scale = before.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = before
            .iter()
            .zip(&after)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-4 * scale, "max difference {worst} of {scale}");
    }

    #[test]
    fn noise_parts_the_copies_and_a_width_that_is_no_multiple_is_refused() {
        let dict = random_state_dict(&SamConfig::named("mini").unwrap(), 5);
        let key = "mask_decoder.transformer.layers.0.mlp.lin1.weight";
        let wide = widen_decoder(&dict, 128, 0.01, 7).unwrap();
        let w = wide.get(key).unwrap();
        // Row 0 and its copy, row 256, differ a little.
        let (a, b) = (&w.data[..128], &w.data[256 * 128..257 * 128]);
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff > 0.0 && diff < 0.05, "{diff}");
        assert_eq!(widen_decoder(&dict, 64, 0.01, 7).unwrap(), dict);
        assert!(
            widen_decoder(&dict, 96, 0.0, 0)
                .unwrap_err()
                .contains("multiple")
        );
    }
}
