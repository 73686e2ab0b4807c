//! Taking SAM's tensors out of a state dict by their official names, with shape checks.
//!
//! Every tensor is taken at most once; whatever is left over at the end is an unexpected key.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

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
    #[error("PEFT configuration: {0}")]
    BadPeft(String),
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

/// A state dict being consumed into modules; every parameter made is named by its key.
pub struct Weights<'a> {
    dict: StateDict,
    device: &'a Device,
    origin: Origin,
    names: ParamNames,
}

impl<'a> Weights<'a> {
    /// `origin` tells whether the tensors are SAM's own or those of PEFT modules.
    pub fn new(dict: StateDict, device: &'a Device, origin: Origin) -> Self {
        Self {
            dict,
            device,
            origin,
            names: ParamNames::default(),
        }
    }

    /// The shape of a key, without taking it (for inferring the configuration).
    pub fn shape(&self, key: &str) -> Result<&[usize], ModelLoadError> {
        self.dict
            .get(key)
            .map(|t| t.shape.as_slice())
            .ok_or_else(|| ModelLoadError::MissingKey(key.to_string()))
    }

    /// How many consecutive indexes `i` have a key `{prefix}{i}{suffix}` (blocks, layers).
    pub fn count_indexed(&self, prefix: &str, suffix: &str) -> usize {
        (0..)
            .take_while(|i| self.contains(&format!("{prefix}{i}{suffix}")))
            .count()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.dict.contains(key)
    }

    pub fn device(&self) -> &Device {
        self.device
    }

    /// Takes `key`, which must have exactly `shape`.
    pub fn tensor<const D: usize>(
        &mut self,
        key: &str,
        shape: [usize; D],
    ) -> Result<Tensor<D>, ModelLoadError> {
        let raw = self.take(key)?;
        if raw.shape != shape {
            return Err(ModelLoadError::WrongShape {
                key: key.to_string(),
                found: raw.shape,
                expected: format!("{shape:?}"),
            });
        }
        Ok(to_tensor(raw, shape, self.device))
    }

    /// Takes `key` as a trainable parameter.
    pub fn param<const D: usize>(
        &mut self,
        key: &str,
        shape: [usize; D],
    ) -> Result<Param<Tensor<D>>, ModelLoadError> {
        let param = Param::from_tensor(self.tensor(key, shape)?);
        self.names.insert(param.id, key.to_string(), self.origin);
        Ok(param)
    }

    fn take(&mut self, key: &str) -> Result<RawTensor, ModelLoadError> {
        self.dict
            .remove(key)
            .ok_or_else(|| ModelLoadError::MissingKey(key.to_string()))
    }

    /// The names of the parameters made; fails if any key was not used.
    pub fn finish(self) -> Result<ParamNames, ModelLoadError> {
        if self.dict.is_empty() {
            Ok(self.names)
        } else {
            Err(ModelLoadError::UnexpectedKeys(
                self.dict.keys().map(|k| k.to_string()).collect(),
            ))
        }
    }
}

fn to_tensor<const D: usize>(raw: RawTensor, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(raw.data, shape), device)
}
