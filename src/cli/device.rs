//! `--device` and `--precision`: which burn backend runs the model, and in what precision its
//! products run. GPU backends exist only in builds with their cargo feature.

use anyhow::{Result, bail};
use burn::tensor::Device;
use clap::Args;

use crate::kernels::Precision;

/// The `--device` and `--precision` flags of every command that runs a model.
#[derive(Args, Debug, Clone)]
pub struct DeviceArg {
    /// auto (a GPU this build can drive, else the CPU), cpu, vulkan[:N|:cpu] or cuda[:N] (GPU
    /// backends need their cargo feature).
    #[arg(long = "device", value_name = "DEVICE", default_value = "auto")]
    pub name: String,
    /// What the model's matrix products and convolutions compute in: weights, optimiser state,
    /// normalisation, softmax and the loss stay f32. bf16 and f16 need a GPU that has them (CUDA:
    /// both; Vulkan: f16 where the device has shaderFloat16); the CPU computes in f32.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

impl DeviceArg {
    /// The device, started (see [`parse`]), with the products set to `--precision` for this
    /// process once the device is known to compute in it.
    pub fn device(&self) -> Result<Device> {
        let device = parse(&self.name)?;
        check_precision(self.precision, &device)?;
        crate::kernels::set_precision(self.precision);
        Ok(device)
    }
}

/// Refuses a precision `device` cannot compute in, naming both.
fn check_precision(precision: Precision, device: &Device) -> Result<()> {
    if precision.runs_on(device) {
        return Ok(());
    }
    if crate::kernels::is_cpu(device) {
        let gpus = match precision {
            Precision::Bf16 => "on CUDA GPUs (--device cuda)",
            _ => "on CUDA GPUs and on Vulkan GPUs with shaderFloat16 (--device cuda or vulkan)",
        };
        bail!(
            "--precision {precision}: the CPU computes in f32 only (sam-cobot's CPU kernels); {precision} runs {gpus}"
        );
    }
    let can: Vec<&str> = [Precision::Bf16, Precision::F16]
        .into_iter()
        .filter(|p| p.runs_on(device))
        .map(Precision::name)
        .collect();
    bail!(
        "--precision {precision}: the device {} cannot compute in {precision} (it can: f32{})",
        describe(device),
        can.iter().map(|p| format!(", {p}")).collect::<String>()
    )
}

/// Parses `auto`, `cpu`, `vulkan[:N|:cpu]` or `cuda[:N]`. A GPU device is started here, so that
/// a missing driver or card is reported as an error naming the device rather than as a panic
/// later. `auto` takes the first GPU this build can drive that answers (CUDA, then a discrete
/// Vulkan GPU), else the CPU, and says which when there was a choice.
pub fn parse(name: &str) -> Result<Device> {
    if name == "auto" {
        return Ok(auto());
    }
    if name == "vulkan:cpu" {
        return start(name, vulkan_cpu()?);
    }
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
        _ => bail!(
            "--device {name}: unknown device (expected auto, cpu, vulkan[:N|:cpu] or cuda[:N])"
        ),
    };
    start(name, device)
}

/// How a device is named in reports: `cpu`, or the backend's own description of a GPU.
pub fn describe(device: &Device) -> String {
    if crate::kernels::is_cpu(device) {
        "cpu".into()
    } else {
        format!("{device:?}")
    }
}

/// A device `--device auto` may take, by name, and how to make it.
type Candidate = (&'static str, fn() -> Result<Device>);

/// The device `--device auto` picks.
fn auto() -> Device {
    let candidates: &[Candidate] = &[
        #[cfg(feature = "cuda")]
        ("cuda:0", || cuda(0)),
        #[cfg(any(feature = "vulkan", feature = "wgpu"))]
        ("vulkan:0", || vulkan(Some(0))),
    ];
    if candidates.is_empty() {
        // A CPU-only build: nothing to choose.
        return Device::flex();
    }
    for &(name, make) in candidates {
        if let Ok(device) = make().and_then(|d| start_quietly(name, d)) {
            eprintln!("device: {name} (--device auto)");
            return device;
        }
    }
    eprintln!("device: cpu (--device auto: no GPU answered)");
    Device::flex()
}

/// [`start`] without the panic messages of a device that does not answer: `auto` tries devices
/// that may well be absent, and says in one line which it took. The hook is process-wide, and
/// the backend's own threads panic too, so it is silenced for the probe and put back after.
fn start_quietly(name: &str, device: Device) -> Result<Device> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let started = start(name, device);
    std::panic::set_hook(hook);
    started
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
#[cfg(any(feature = "vulkan", feature = "wgpu"))]
fn vulkan(index: Option<usize>) -> Result<Device> {
    use burn::tensor::DeviceKind;
    Ok(wgpu_device(index.map_or(
        DeviceKind::DefaultDevice,
        DeviceKind::DiscreteGpu,
    )))
}

/// Mesa's software Vulkan (lavapipe) or any CPU adapter: burn never picks one by itself.
#[cfg(any(feature = "vulkan", feature = "wgpu"))]
fn vulkan_cpu() -> Result<Device> {
    Ok(wgpu_device(burn::tensor::DeviceKind::Cpu))
}

/// The `vulkan` build compiles kernels to SPIR-V; the `wgpu` build to WGSL (through naga), which
/// runs where a driver's SPIR-V path fails (lavapipe: docs/gpu.md).
#[cfg(feature = "vulkan")]
fn wgpu_device(kind: burn::tensor::DeviceKind) -> Device {
    Device::vulkan(kind)
}

#[cfg(all(feature = "wgpu", not(feature = "vulkan")))]
fn wgpu_device(kind: burn::tensor::DeviceKind) -> Device {
    Device::wgpu(kind)
}

#[cfg(not(any(feature = "vulkan", feature = "wgpu")))]
fn vulkan_cpu() -> Result<Device> {
    vulkan(None)
}

#[cfg(not(any(feature = "vulkan", feature = "wgpu")))]
fn vulkan(_: Option<usize>) -> Result<Device> {
    bail!(
        "--device vulkan: this sam-cobot was built without the `vulkan` or `wgpu` feature (cargo build --release --features vulkan)"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_the_cpu_in_a_cpu_only_build_and_unknown_names_are_refused() {
        if cfg!(not(any(
            feature = "cuda",
            feature = "vulkan",
            feature = "wgpu"
        ))) {
            assert!(crate::kernels::is_cpu(&parse("auto").unwrap()));
        }
        assert!(crate::kernels::is_cpu(&parse("cpu").unwrap()));
        let err = parse("tpu").unwrap_err().to_string();
        assert!(
            err.contains("auto, cpu, vulkan[:N|:cpu] or cuda[:N]"),
            "{err}"
        );
        assert!(parse("vulkan:x").unwrap_err().to_string().contains("'x'"));
        #[cfg(not(any(feature = "vulkan", feature = "wgpu")))]
        assert!(
            parse("vulkan:cpu")
                .unwrap_err()
                .to_string()
                .contains("without the `vulkan` or `wgpu` feature")
        );
    }
}
