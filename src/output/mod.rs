//! Outputs of `predict` and `segment-everything`: binary mask PNGs, overlays, `.npy` logits and
//! COCO-RLE JSON, all written atomically ([`crate::files`]).

pub mod automatic_masks;
pub mod mask_png;
pub mod npy;
pub mod overlay;

pub use mask_png::{numbered_paths, write_mask_png};
pub use npy::{read_npy_f32, write_npy_f32};
pub use overlay::{OverlayPrompts, write_overlay};
