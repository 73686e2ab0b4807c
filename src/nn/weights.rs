//! Where each module declares its tensors (key, shape, initialiser) as it is built: taking them
//! out of a state dict by their official names, with shape checks, or only declaring them.
//!
//! Loading takes every tensor at most once; whatever is left over at the end is an unexpected
//! key. Declaring builds the modules with lazy, never-filled parameters, so that a
//! configuration's keys, shapes, random weights and parameter counts come from the same code
//! that loads it ([`Weights::declare`]).

use burn::module::{Param, ParamId};
use burn::tensor::{Device, Tensor, TensorData};

use super::init::{Declared, Init};
use super::params::{Origin, ParamNames};
use crate::checkpoint::{RawTensor, StateDict};

/// Why a state dict could not become a SAM model.
#[derive(Debug, thiserror::Error)]
pub enum ModelLoadError {
    #[error("missing key '{0}': not a SAM checkpoint, or a truncated one")]
    MissingKey(String),
    #[error("key '{key}' has shape {found:?}, expected {expected}")]
    WrongShape {
        key: String,
        found: Vec<usize>,
        expected: String,
    },
    #[error("unexpected keys (not part of SAM): {}", .0.join(", "))]
    UnexpectedKeys(Vec<String>),
    #[error("not a SAM checkpoint: {0}")]
    NotSam(String),
    #[error("image size {0} is not a positive multiple of the patch size {1}")]
    BadImageSize(usize, usize),
    #[error(
        "input size {size} px: the image encoder needs at least {} at this size, more than this \
         machine's {} (the model's own size is {native})",
        gib(*.needs),
        gib(*.memory)
    )]
    ImageSizeTooLarge {
        size: usize,
        needs: u64,
        memory: u64,
        native: usize,
    },
    #[error(
        "input size {size} px: the image encoder's largest tensor for one image takes {}, more \
         than the {} the device {device} allows in one buffer (the model's own size is {native})",
        mib(*.largest),
        mib(*.limit)
    )]
    TensorOverBufferLimit {
        size: usize,
        largest: u64,
        limit: u64,
        device: String,
        native: usize,
    },
    #[error("PEFT configuration: {0}")]
    BadPeft(String),
}

/// Bytes in MiB, for messages.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// Bytes in GiB (or TiB), for messages.
fn gib(bytes: u64) -> String {
    let gib = bytes as f64 / f64::from(1u32 << 30);
    if gib >= 1024.0 {
        format!("{:.1} TiB", gib / 1024.0)
    } else {
        format!("{gib:.1} GiB")
    }
}

/// A state dict being consumed into modules (or none, when only declaring); every parameter made
/// is named by its key.
pub struct Weights<'a> {
    /// `None`: declaring only.
    dict: Option<StateDict>,
    device: &'a Device,
    origin: Origin,
    names: ParamNames,
    declared: Vec<Declared>,
}

impl<'a> Weights<'a> {
    /// `origin` tells whether the tensors are SAM's own or those of PEFT modules.
    pub fn new(dict: StateDict, device: &'a Device, origin: Origin) -> Self {
        Self {
            dict: Some(dict),
            device,
            origin,
            names: ParamNames::default(),
            declared: Vec::new(),
        }
    }

    /// Nothing to load: the modules built on it only declare their tensors
    /// ([`Weights::declarations`]); their parameters are never filled (no memory is used) and
    /// must not be read.
    pub fn declare(device: &'a Device, origin: Origin) -> Self {
        Self {
            dict: None,
            device,
            origin,
            names: ParamNames::default(),
            declared: Vec::new(),
        }
    }

    /// Every tensor declared so far, in declaration order.
    pub fn declarations(self) -> Vec<Declared> {
        self.declared
    }

    /// The shape of a key, without taking it (for inferring the configuration).
    pub fn shape(&self, key: &str) -> Result<&[usize], ModelLoadError> {
        self.dict
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|t| t.shape.as_slice())
            .ok_or_else(|| ModelLoadError::MissingKey(key.to_string()))
    }

    /// How many consecutive indexes `i` have a key `{prefix}{i}{suffix}` (blocks, layers).
    pub fn count_indexed(&self, prefix: &str, suffix: &str) -> usize {
        self.dict
            .as_ref()
            .map_or(0, |d| d.count_indexed(prefix, suffix))
    }

    pub fn contains(&self, key: &str) -> bool {
        self.dict.as_ref().is_some_and(|d| d.contains(key))
    }

    pub fn device(&self) -> &Device {
        self.device
    }

    /// Declares the trainable parameter `key` of `shape`, which starts as `init` says when it
    /// is not loaded, and takes it (it must have exactly `shape`).
    pub fn param<const D: usize>(
        &mut self,
        key: &str,
        shape: [usize; D],
        init: Init,
    ) -> Result<Param<Tensor<D>>, ModelLoadError> {
        self.declared.push(Declared {
            key: key.to_string(),
            shape: shape.to_vec(),
            init,
        });
        let param = match &mut self.dict {
            Some(dict) => {
                let raw = dict
                    .remove(key)
                    .ok_or_else(|| ModelLoadError::MissingKey(key.to_string()))?;
                if raw.shape != shape {
                    return Err(ModelLoadError::WrongShape {
                        key: key.to_string(),
                        found: raw.shape,
                        expected: format!("{shape:?}"),
                    });
                }
                Param::from_tensor(to_tensor(raw, shape, self.device))
            }
            None => Param::uninitialized(
                ParamId::new(),
                move |device, _| Tensor::zeros(shape, device),
                self.device.clone(),
                false,
                shape.into(),
            ),
        };
        self.names.insert(param.id, key.to_string(), self.origin);
        Ok(param)
    }

    /// The names of the parameters made; fails if any key was not used.
    pub fn finish(self) -> Result<ParamNames, ModelLoadError> {
        match self.dict {
            Some(dict) if !dict.is_empty() => Err(ModelLoadError::UnexpectedKeys(
                dict.keys().map(|k| k.to_string()).collect(),
            )),
            _ => Ok(self.names),
        }
    }
}

fn to_tensor<const D: usize>(raw: RawTensor, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(raw.data, shape), device)
}
