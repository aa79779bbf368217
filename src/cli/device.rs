//! `--device cpu|cuda|auto`.

use anyhow::{anyhow, Result};

use crate::backend::cuda::cuda_available;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
    /// CUDA when a GPU and this build's kernels are present, otherwise the CPU.
    Auto,
}

impl Device {
    /// Parses `model.device` of a run config (`cpu`, `cuda` or `auto`, any case).
    pub fn from_config(value: &str) -> Result<Device> {
        clap::ValueEnum::from_str(value, true).map_err(|_| anyhow!("model.device must be cpu, cuda or auto, got {value:?}"))
    }

    /// The device to run on: `auto` resolved, `cuda` checked.
    pub fn resolve(self) -> Result<Device> {
        match self {
            Device::Cpu => Ok(Device::Cpu),
            Device::Auto => Ok(if cuda_available().is_ok() { Device::Cuda } else { Device::Cpu }),
            Device::Cuda => {
                cuda_available().map_err(|why| anyhow!("device cuda: {why}"))?;
                Ok(Device::Cuda)
            }
        }
    }
}
