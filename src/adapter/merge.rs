//! Folding the PEFT modules back into a stock SAM state dict.
//!
//! LoRA (with or without COBOT) is linear in its input, so its q and v deltas are weight matrices:
//! feeding the C×C identity through [`LoraQv::deltas`] — the very code the forward runs — gives
//! `ΔW_qᵀ` and `ΔW_vᵀ`, which are added to rows `0..C` and `2C..3C` of
//! `image_encoder.blocks.{i}.attn.qkv.weight` (k is untouched; LoRA has no bias). The adapter
//! methods put a ReLU on the bottleneck and cannot be folded. `freeze`, `lightweight` and `full`
//! have no encoder modules: merging only keeps the (trained) base tensors.

use burn::tensor::Tensor;

use crate::checkpoint::StateDict;
use crate::nn::F32Values;
use crate::nn::params::{self, Origin};
use crate::peft::cobot::{CobotShared, lora_columns};
use crate::peft::lora::LoraQv;
use crate::peft::{BlockModules, Method, Site};
use crate::sam::Sam;

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(
        "method '{0}' cannot be merged into SAM's weights: its modules are not linear maps of their \
         input (AdaptFormer's branch has a ReLU); keep the adapter file and pass it at prediction \
         time instead (sam-cobot predict --checkpoint BASE --adapter ADAPTER ...)"
    )]
    NotFoldable(Method),
    #[error("the model has no PEFT configuration attached: nothing to merge")]
    NoPeft,
    #[error("the model has no tensor '{0}' to fold LoRA into")]
    MissingKey(String),
    #[error(
        "the PEFT tensor '{0}' was not folded into SAM's weights: merging would lose it (the \
         method's merge does not know it)"
    )]
    NotFolded(String),
    /// The device failed to give back a tensor of the model.
    #[error(transparent)]
    Device(#[from] anyhow::Error),
}

/// `(ΔW_q, ΔW_v)` of a LoRA wrapper, each `[C, C]` in PyTorch's `[out, in]` layout, computed by
/// the forward's own code on the identity. `columns`: the block's (q, v) COBOT coefficient
/// columns, when the model has shared COBOT tensors.
pub fn lora_weight_deltas(
    lora: &LoraQv,
    columns: Option<(Tensor<1>, Tensor<1>)>,
) -> (Tensor<2>, Tensor<2>) {
    let c = lora.a_q.dims()[1];
    let eye = Tensor::<2>::eye(c, &lora.a_q.device());
    // Row j of the output is the delta of input e_j: the transposed weight delta.
    let (dq_t, dv_t) = lora.deltas(eye, columns);
    (dq_t.transpose(), dv_t.transpose())
}

/// The stock SAM state dict of `sam` (official keys only, no PEFT tensors) with the LoRA deltas
/// folded into the qkv weights. The base tensors are the model's current ones (e.g. a trained
/// decoder).
pub fn merge(sam: &Sam) -> Result<StateDict, MergeError> {
    let cfg = sam.peft.as_ref().ok_or(MergeError::NoPeft)?;
    if !cfg.method.foldable() {
        return Err(MergeError::NotFoldable(cfg.method));
    }
    let encoder = sam.image_encoder.vit().ok_or(MergeError::NoPeft)?;
    let mut dict = params::export(sam, &sam.names, |_, origin| origin == Origin::Base)?;
    // Every PEFT tensor must be accounted for by a fold below: a module this function does not
    // know can never be dropped silently.
    let folded = |key: &str| {
        let blocks = &encoder.blocks;
        let has_lora = |i: usize| {
            blocks[i]
                .peft
                .as_ref()
                .and_then(BlockModules::lora)
                .is_some()
        };
        let lora_block =
            |i: usize| has_lora(i) && key.starts_with(&format!("{}.", Site::Qkv.prefix(i)));
        // COBOT's shared tensors enter every block's fold.
        let shared = key.ends_with(".FacT_c") || key.ends_with(".FacT_p");
        (0..blocks.len()).any(lora_block) || (shared && (0..blocks.len()).any(has_lora))
    };
    let peft = params::export(sam, &sam.names, |_, origin| origin == Origin::Peft)?;
    if let Some(key) = peft.keys().find(|k| !folded(k)) {
        return Err(MergeError::NotFolded(key.to_string()));
    }
    let cross_block = encoder.cobot.as_ref().map(CobotShared::module_coefficients);
    for (i, block) in encoder.blocks.iter().enumerate() {
        let Some(lora) = block.peft.as_ref().and_then(BlockModules::lora) else {
            continue;
        };
        let columns = cross_block.as_ref().map(|m| lora_columns(m, i));
        let (dq, dv) = lora_weight_deltas(lora, columns);
        let key = format!("{}.weight", Site::Qkv.prefix(i));
        let qkv = dict
            .get(&key)
            .ok_or_else(|| MergeError::MissingKey(key.clone()))?;
        let c = dq.dims()[0];
        let mut data = qkv.data.clone();
        let dq: Vec<f32> = dq.try_f32_values()?;
        let dv: Vec<f32> = dv.try_f32_values()?;
        // Rows 0..C are q, C..2C k, 2C..3C v; row-major [3C, C].
        for (w, d) in data[..c * c].iter_mut().zip(&dq) {
            *w += d;
        }
        for (w, d) in data[2 * c * c..3 * c * c].iter_mut().zip(&dv) {
            *w += d;
        }
        let shape = qkv.shape.clone();
        dict.insert(key, crate::checkpoint::RawTensor::new(shape, data));
    }
    Ok(dict)
}
