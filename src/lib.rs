//! sam-cobot: Segment Anything in Rust, with parameter-efficient fine-tuning.
//!
//! - [`checkpoint`]: reading PyTorch `.pth` and `.safetensors` state dicts (never executing pickles).
//! - [`peft`]: LoRA, AdaptFormer and COBOT inside the image encoder.
//! - [`sam`]: the model (image encoder, prompt encoder, mask decoder) and its pre/post-processing.
//! - [`train`]: losses and training.
//! - [`output`]: what `predict` writes: mask PNGs, overlays, `.npy` logits.
//! - [`cli`]: the command-line front end.

pub mod checkpoint;
pub mod cli;
pub mod output;
pub mod peft;
pub mod sam;
pub mod train;
