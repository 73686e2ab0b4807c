//! The building blocks both SAM ([`crate::sam`]) and the PEFT modules ([`crate::peft`]) are made
//! of: layers that hold their weights in PyTorch's key layout ([`layers`]), the loader that takes
//! tensors out of a state dict by key with shape checks ([`weights`]), and the names of every
//! parameter, for saving, exporting and gradients ([`params`]).

pub mod layers;
pub mod params;
pub mod weights;
