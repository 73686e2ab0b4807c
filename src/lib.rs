//! sam-cobot: Segment Anything in Rust, with parameter-efficient fine-tuning.
//!
//! - [`checkpoint`]: reading PyTorch `.pth` and `.safetensors` state dicts (never executing pickles).
//! - [`nn`]: the layers, weight loader and parameter names that `sam` and `peft` are built from.
//! - [`peft`]: LoRA, AdaptFormer and COBOT inside the image encoder.
//! - [`sam`]: the model (image encoder, prompt encoder, mask decoder) and its pre/post-processing.
//! - [`data`]: data-set readers (marine-debris, COCO, image/mask folders), augmentation, pre-processing.
//! - [`train`]: losses and training.
//! - [`eval`]: the paper's metrics and reports.
//! - [`output`]: what the commands write: mask PNGs, overlays, `.npy` logits, COCO-RLE JSON.
//! - [`files`]: atomic writes, and the checks that no output replaces an input or another output.
//! - [`rle`]: run-length encoded masks (COCO's RLE), read by the COCO reader and written by the
//!   mask generator.
//! - [`serve`]: the local web page and its JSON API (`sam-cobot serve`).
//! - [`bench`](mod@bench): timing of training steps and inference (`sam-cobot bench`).
//! - [`settings`](mod@settings): groups of settings declared once, as settings files and as flags.
//! - [`cli`]: the command-line front end.

pub mod adapter;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod eval;
pub mod files;
pub mod kernels;
pub mod nn;
pub mod output;
pub mod peft;
pub mod rle;
pub mod sam;
pub mod serve;
pub mod settings;
pub mod train;
