//! `--device cpu|cuda|auto`.

use anyhow::{bail, Result};

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
            Device::Auto => Ok(Device::Cpu),
            Device::Cuda => bail!("the CUDA backend is not part of this build yet; use --device cpu"),
        }
    }
}
