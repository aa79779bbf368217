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

    /// The device to train on: like [`Device::resolve`], except that `auto` stays on the CPU
    /// until the GPU training step has been checked on a GPU (docs/kernels.md); `cuda` opts in.
    pub fn resolve_for_training(self) -> Result<Device> {
        match self {
            Device::Auto => {
                if cuda_available().is_ok() {
                    eprintln!("model.device = \"auto\" trains on the CPU: the GPU training step has not been checked on a GPU yet; set model.device=cuda to use it");
                }
                Ok(Device::Cpu)
            }
            d => d.resolve(),
        }
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
