//! `--device`: which burn backend runs the model. GPU backends exist only in builds with their
//! cargo feature.

use anyhow::{Result, bail};
use burn::tensor::Device;

/// Parses `cpu`, `vulkan[:N]` or `cuda[:N]`.
pub fn parse(name: &str) -> Result<Device> {
    let (kind, index) = match name.split_once(':') {
        Some((kind, index)) => {
            let index: usize = index
                .parse()
                .map_err(|_| anyhow::anyhow!("--device {name}: '{index}' is not a device index"))?;
            (kind, index)
        }
        None => (name, 0),
    };
    match kind {
        "cpu" => Ok(Device::flex()),
        "vulkan" => vulkan(index),
        "cuda" => cuda(index),
        _ => bail!("--device {name}: unknown device (expected cpu, vulkan[:N] or cuda[:N])"),
    }
}

#[cfg(feature = "vulkan")]
fn vulkan(index: usize) -> Result<Device> {
    Ok(Device::vulkan(burn::tensor::DeviceKind::DiscreteGpu(index)))
}

#[cfg(not(feature = "vulkan"))]
fn vulkan(_: usize) -> Result<Device> {
    bail!(
        "--device vulkan: this sam-cobot was built without the `vulkan` feature (cargo build --release --features vulkan)"
    )
}

#[cfg(feature = "cuda")]
fn cuda(index: usize) -> Result<Device> {
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_: usize) -> Result<Device> {
    bail!(
        "--device cuda: this sam-cobot was built without the `cuda` feature (cargo build --release --features cuda)"
    )
}
