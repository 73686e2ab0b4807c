//! Outputs of `predict` and `segment-everything`: binary mask PNGs, overlays, `.npy` logits and
//! COCO-RLE JSON, all written atomically;
//! and the checks that no output replaces an input or another output ([`guard`]).

pub mod atomic;
pub mod automatic_masks;
pub mod guard;
pub mod mask_png;
pub mod npy;
pub mod overlay;

pub use atomic::write_atomic;
pub use mask_png::{numbered_paths, write_mask_png};
pub use npy::{read_npy_f32, write_npy_f32};
pub use overlay::{OverlayPrompts, write_overlay};
