//! `atomrl report RUN_DIR`: plots of a run's metrics.

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A run directory (holding metrics.jsonl).
    pub run_dir: PathBuf,
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    for path in crate::metrics::report::render(&args.run_dir)? {
        println!("{}", path.display());
    }
    Ok(())
}
