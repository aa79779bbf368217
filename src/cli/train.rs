//! `atomrl train --config run.toml [key.path=value ...]`: joint RL over the atomic skills.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::backend::cpu::Cpu;
use crate::backend::cuda::CudaBackend;
use crate::cli::device::Device;
use crate::rl::run::{load_config, train, RunOptions};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The run config (TOML); see configs/demo.toml for every section.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Overrides such as `trainer.max_steps=10` or `rollout.temperature=0.8`.
    pub overrides: Vec<String>,
    /// The run directory (metrics.jsonl, checkpoints, plots).
    #[arg(long, default_value = "runs/latest")]
    pub output: PathBuf,
    /// Continue from the run directory's latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Check the config, print it resolved (overrides applied, defaults filled in) and exit.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let cfg = load_config(args.config.as_deref(), &args.overrides)?;
    if args.dry_run {
        cfg.validate()?;
        print!("{}", toml::to_string(&cfg)?);
        return Ok(());
    }
    let device = Device::from_config(&cfg.model.device)?.resolve_for_training()?;
    let opts = RunOptions { output: args.output, resume: args.resume };
    match device {
        Device::Cpu => train(&Cpu, &cfg, &opts),
        // The GPU training step passes its tests on the CPU emulator but has not run on a GPU yet
        // (docs/kernels.md, "Not done yet").
        Device::Cuda => train(&CudaBackend::new(0)?, &cfg, &opts),
        Device::Auto => unreachable!("resolve_for_training() never returns Auto"),
    }
}
