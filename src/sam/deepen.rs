//! Deepening a trained image encoder (`pretrain --deepen-encoder N`): more blocks without losing
//! what the trained ones learned.
//!
//! Each block is followed by copies of itself whose output projections (`attn.proj`, `mlp.lin2`)
//! start at zero. A block adds `attn(norm1(x))` and then `mlp(norm2(x))` to its input, so a copy
//! starts as the identity and the deeper model computes exactly what the trained one did. Its
//! other tensors are the trained block's, not random ones: training gives each copy its own work
//! from inputs it already knows how to read, and no seed is needed. A copy of a global block is
//! global (its relative-position tables span the grid), of a windowed one windowed.

use crate::checkpoint::{RawTensor, StateDict};

const BLOCKS: &str = "image_encoder.blocks.";

/// The tensors a copy starts with at zero: what it adds to the residual stream.
const OUTPUT_PROJECTIONS: [&str; 4] = [
    "attn.proj.weight",
    "attn.proj.bias",
    "mlp.lin2.weight",
    "mlp.lin2.bias",
];

/// `dict` with `depth` encoder blocks, the trained ones spread evenly among their copies.
pub fn deepen_encoder(dict: &StateDict, depth: usize) -> Result<StateDict, String> {
    let trained = dict.count_indexed(BLOCKS, ".norm1.weight");
    if trained == 0 {
        return Err(format!(
            "no image-encoder blocks ({BLOCKS}0.norm1.weight is missing)"
        ));
    }
    if depth < trained {
        return Err(format!(
            "depth {depth} is below the checkpoint's {trained} encoder blocks"
        ));
    }
    // Block i of the trained encoder becomes blocks first[i] .. first[i + 1] (itself, then copies).
    let first: Vec<usize> = (0..=trained).map(|i| i * depth / trained).collect();
    let mut out = StateDict::new();
    for (key, tensor) in dict.iter() {
        let Some((block, name)) = block_tensor(key) else {
            out.insert(key, tensor.clone());
            continue;
        };
        if block >= trained {
            return Err(format!("{key}: block {block} has no norm1.weight"));
        }
        for (n, index) in (first[block]..first[block + 1]).enumerate() {
            let copy = if n > 0 && OUTPUT_PROJECTIONS.contains(&name) {
                RawTensor::new(tensor.shape.clone(), vec![0.0; tensor.numel()])
            } else {
                tensor.clone()
            };
            out.insert(format!("{BLOCKS}{index}.{name}"), copy);
        }
    }
    Ok(out)
}

/// `image_encoder.blocks.{i}.{name}` as `(i, name)`.
fn block_tensor(key: &str) -> Option<(usize, &str)> {
    let (index, name) = key.strip_prefix(BLOCKS)?.split_once('.')?;
    Some((index.parse().ok()?, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(keys: &[&str]) -> StateDict {
        let mut d = StateDict::new();
        for (i, k) in keys.iter().enumerate() {
            d.insert(*k, RawTensor::new(vec![2], vec![i as f32 + 1.0; 2]));
        }
        d
    }

    #[test]
    fn copies_follow_their_block_and_start_with_zero_output_projections() {
        let d = dict(&[
            "image_encoder.blocks.0.norm1.weight",
            "image_encoder.blocks.0.attn.proj.weight",
            "image_encoder.blocks.1.norm1.weight",
            "image_encoder.blocks.1.mlp.lin2.bias",
            "image_encoder.neck.0.weight",
        ]);
        let deep = deepen_encoder(&d, 5).unwrap();
        // Block 0 becomes blocks 0 and 1, block 1 becomes blocks 2, 3 and 4.
        assert_eq!(deep.len(), 1 + 2 * 2 + 3 * 2);
        let value = |k: &str| deep.get(k).unwrap().data[0];
        assert_eq!(value("image_encoder.blocks.1.norm1.weight"), 1.0);
        assert_eq!(value("image_encoder.blocks.0.attn.proj.weight"), 2.0);
        assert_eq!(value("image_encoder.blocks.1.attn.proj.weight"), 0.0);
        assert_eq!(value("image_encoder.blocks.4.norm1.weight"), 3.0);
        assert_eq!(value("image_encoder.blocks.2.mlp.lin2.bias"), 4.0);
        assert_eq!(value("image_encoder.blocks.3.mlp.lin2.bias"), 0.0);
        assert_eq!(value("image_encoder.neck.0.weight"), 5.0);
        assert_eq!(deepen_encoder(&d, 2).unwrap(), d);
        assert!(deepen_encoder(&d, 1).unwrap_err().contains("below"));
    }

    #[test]
    fn the_deepened_encoder_computes_what_the_trained_one_did() {
        use crate::nn::F32Values;
        use crate::sam::{Sam, SamConfig, random::random_state_dict};
        use burn::tensor::{Device, Tensor, TensorData};

        let dict = random_state_dict(&SamConfig::tiny(), 3);
        let device = Device::flex();
        let s = 64;
        let pixels = (0..3 * s * s).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0);
        let image = TensorData::new(pixels.collect::<Vec<_>>(), [1, 3, s, s]);
        let embed = |dict: StateDict| {
            let sam = Sam::from_state_dict(dict, Some(s), &device).unwrap();
            sam.embed_image(Tensor::from_data(image.clone(), &device))
                .f32_values()
        };
        let deep = deepen_encoder(&dict, 7).unwrap();
        assert!(deep.contains("image_encoder.blocks.6.attn.qkv.weight"));
        // Adding zeros changes no bit.
        assert_eq!(embed(deep), embed(dict));
    }
}
