//! `atomrl sft --config sft.toml [key.path=value ...]`: supervised fine-tuning on chat
//! transcripts, only the assistant's tokens in the loss.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::backend::cpu::Cpu;
use crate::cli::device::{Device, NO_GPU_TRAINING};
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
    let device: Device = clap::ValueEnum::from_str(&cfg.model.device, true).map_err(|_| anyhow::anyhow!("model.device must be cpu, cuda or auto, got {:?}", cfg.model.device))?;
    let opts = SftOptions { output: args.output, resume: args.resume, stop_after: None };
    match device {
        Device::Cuda => bail!(NO_GPU_TRAINING),
        Device::Cpu | Device::Auto => sft(&Cpu, &cfg, &opts).map(|_| ()),
    }
}
