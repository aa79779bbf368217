//! `atomrl sft --config sft.toml [key.path=value ...]`: supervised fine-tuning on chat
//! transcripts, only the assistant's tokens in the loss.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::backend::cpu::Cpu;
use crate::backend::cuda::CudaBackend;
use crate::cli::device::Device;
use crate::sft::run::load_config;
use crate::sft::{sft, SftOptions};

#[derive(Args, Debug)]
pub struct SftArgs {
    /// The SFT config (TOML); see configs/sft-demo.toml for every section.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Overrides such as `trainer.max_steps=10` or `schedule.lr=1e-5`.
    pub overrides: Vec<String>,
    /// The run directory (metrics.jsonl, checkpoints `step_N/`, each a model directory).
    #[arg(long, default_value = "runs/sft")]
    pub output: PathBuf,
    /// Continue from the run directory's latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Print the resolved config and exit.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: SftArgs) -> Result<()> {
    let cfg = load_config(args.config.as_deref(), &args.overrides)?;
    if args.dry_run {
        print!("{}", toml::to_string(&cfg)?);
        return cfg.validate();
    }
    let device = Device::from_config(&cfg.model.device)?.resolve_for_training()?;
    let opts = SftOptions { output: args.output, resume: args.resume, stop_after: None };
    match device {
        Device::Cpu => sft(&Cpu, &cfg, &opts).map(|_| ()),
        // The GPU training step passes its tests on the CPU emulator but has not run on a GPU yet
        // (docs/kernels.md, "Not done yet").
        Device::Cuda => sft(&CudaBackend::new(0)?, &cfg, &opts).map(|_| ()),
        Device::Auto => unreachable!("resolve_for_training() never returns Auto"),
    }
}
