//! `--device`: which burn backend runs the model. GPU backends exist only in builds with their
//! cargo feature.

use anyhow::{Result, bail};
use burn::tensor::Device;

/// Parses `cpu`, `vulkan[:N]` or `cuda[:N]`. A GPU device is started here, so that a missing
/// driver or card is reported as an error naming the device rather than as a panic later.
pub fn parse(name: &str) -> Result<Device> {
    let (kind, index) = match name.split_once(':') {
        Some((kind, index)) => {
            let index: usize = index
                .parse()
                .map_err(|_| anyhow::anyhow!("--device {name}: '{index}' is not a device index"))?;
            (kind, Some(index))
        }
        None => (name, None),
    };
    let device = match kind {
        "cpu" => return Ok(Device::flex()),
        "vulkan" => vulkan(index)?,
        "cuda" => cuda(index.unwrap_or(0))?,
        _ => bail!("--device {name}: unknown device (expected cpu, vulkan[:N] or cuda[:N])"),
    };
    start(name, device)
}

/// Runs one tiny op on `device`. GPU backends panic when no driver or card answers; that panic
/// becomes an error here (its message is printed once by the default hook).
fn start(name: &str, device: Device) -> Result<Device> {
    let probe = device.clone();
    std::panic::catch_unwind(move || {
        burn::tensor::Tensor::<1>::ones([1], &probe).into_data();
    })
    .map_err(|_| {
        anyhow::anyhow!(
            "--device {name}: the device could not be started (is its driver installed?)"
        )
    })?;
    Ok(device)
}

/// `vulkan` is the adapter the driver ranks best; `vulkan:N` the Nth discrete GPU.
#[cfg(feature = "vulkan")]
fn vulkan(index: Option<usize>) -> Result<Device> {
    use burn::tensor::DeviceKind;
    Ok(Device::vulkan(index.map_or(
        DeviceKind::DefaultDevice,
        DeviceKind::DiscreteGpu,
    )))
}

#[cfg(not(feature = "vulkan"))]
fn vulkan(_: Option<usize>) -> Result<Device> {
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
