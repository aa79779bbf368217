//! `atomrl generate`: sample completions for prompts.

use clap::Args;

#[derive(Args, Debug)]
pub struct GenerateArgs {}

pub fn run(_args: GenerateArgs) -> anyhow::Result<()> {
    anyhow::bail!("generate is not implemented yet")
}
