//! The building blocks both SAM (`sam`) and the PEFT modules (`peft`) are made
//! of: layers that hold their weights in PyTorch's key layout ([`layers`]), the loader that takes
//! tensors out of a state dict by key with shape checks, or only declares them ([`weights`]), the
//! initialisers each tensor declares ([`init`]), and the names of every parameter, for saving,
//! exporting and gradients ([`params`]).

pub mod init;
pub mod layers;
pub mod params;
pub mod weights;

use burn::tensor::{Device, Tensor, TensorData};

use crate::checkpoint::RawTensor;

/// A tensor's values on the host as f32, whatever its element type (the one way the code reads
/// tensors back).
pub trait F32Values {
    /// [`F32Values::try_f32_values`] that panics on the device's failure: for tests, where
    /// that failure is the test's. The library and the commands read with `try_f32_values`.
    fn f32_values(self) -> Vec<f32>;

    /// The values, or the device's failure as an error naming the device: a GPU reports work
    /// it could not do (a buffer it could not allocate) on the read of what that work should
    /// have written.
    fn try_f32_values(self) -> anyhow::Result<Vec<f32>>;
}

impl<const D: usize> F32Values for Tensor<D> {
    fn f32_values(self) -> Vec<f32> {
        self.try_f32_values().unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_f32_values(self) -> anyhow::Result<Vec<f32>> {
        let device = self.device();
        let data = self
            .try_into_data()
            .map_err(|e| anyhow::anyhow!("the device {device:?} failed: {e}"))?;
        Ok(data
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("values converted to f32"))
    }
}

/// A tensor as a checkpoint tensor: its shape and f32 values, or the device's failure.
pub fn to_raw<const D: usize>(tensor: Tensor<D>) -> anyhow::Result<RawTensor> {
    let shape = tensor.dims().to_vec();
    Ok(RawTensor::new(shape, tensor.try_f32_values()?))
}

/// A checkpoint tensor on `device`, or `None` when its rank is not `D`.
pub fn from_raw<const D: usize>(raw: RawTensor, device: &Device) -> Option<Tensor<D>> {
    let shape: [usize; D] = raw.shape[..].try_into().ok()?;
    Some(Tensor::from_data(TensorData::new(raw.data, shape), device))
}
