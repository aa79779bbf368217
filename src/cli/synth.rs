//! `atomrl synth`: build the task corpus from pinned Python packages by mutation.

use crate::skills::{Grader, GraderConfig};
use crate::synth::{read_sources, synth_all, SynthConfig};
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// The package list (fetch the sdists first: scripts/fetch-corpus-sources.sh).
    #[arg(long, default_value = "data/corpus/sources.tsv")]
    pub sources: PathBuf,
    /// Where train.jsonl and test.jsonl are written.
    #[arg(long, default_value = "data/corpus")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Mutants kept per package, at most (each gives one instance per skill).
    #[arg(long, default_value_t = 40)]
    pub max_mutants: usize,
    /// Mutants tried per package, at most.
    #[arg(long, default_value_t = 400)]
    pub max_candidates: usize,
    /// Only these packages (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub packages: Vec<String>,
    /// Concurrent sandbox runs (default: the number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
}

pub fn run(args: SynthArgs) -> Result<()> {
    let mut specs = read_sources(&args.sources)?;
    if !args.packages.is_empty() {
        specs.retain(|s| args.packages.contains(&s.name));
        if specs.is_empty() {
            bail!(
                "none of {:?} is in {}",
                args.packages,
                args.sources.display()
            );
        }
    }
    let mut gcfg = GraderConfig::default();
    if let Some(w) = args.workers {
        gcfg.workers = w;
    }
    let workers = gcfg.workers;
    let grader = Grader::new(gcfg)?;
    let cfg = SynthConfig {
        seed: args.seed,
        max_mutants: args.max_mutants,
        max_candidates: args.max_candidates,
        workers,
        ..SynthConfig::default()
    };
    let start = std::time::Instant::now();
    let tasks = synth_all(&grader, &specs, &cfg, &args.out, &|line| {
        eprintln!("{line}")
    })?;
    eprintln!(
        "{} instances written to {} in {:.0}s",
        tasks.len(),
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
