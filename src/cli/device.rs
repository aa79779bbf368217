//! `--device cpu|cuda|auto`.

use anyhow::{anyhow, Result};

use crate::backend::cuda::cuda_available;

/// Why `train` and `sft` refuse `model.device = "cuda"` (docs/kernels.md, "Not done yet").
pub const NO_GPU_TRAINING: &str = "training on the GPU is not wired up yet: every op of the training step has a CUDA kernel (compiled, not yet run on a GPU), but the trainer would keep the weights, gradients and AdamW state in bf16 on CUDA (f32 master weights are missing); use model.device=cpu";

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
