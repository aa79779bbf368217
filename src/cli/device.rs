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
    /// The device to run on: `auto` resolved, `cuda` checked.
    pub fn resolve(self) -> Result<Device> {
        match self {
            Device::Cpu => Ok(Device::Cpu),
            Device::Auto => Ok(if cuda_available().is_ok() { Device::Cuda } else { Device::Cpu }),
            Device::Cuda => {
                cuda_available().map_err(|why| anyhow!("--device cuda: {why}"))?;
                Ok(Device::Cuda)
            }
        }
    }
}
