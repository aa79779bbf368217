//! Sub-commands of the `atomrl` binary. Each lives in its own file with its arguments and `run`.

use clap::{Parser, Subcommand};

pub mod convert;
pub mod device;
pub mod eval;
pub mod generate;
pub mod report;
pub mod sft;
pub mod sft_data;
pub mod synth;
pub mod train;

#[derive(Parser, Debug)]
#[command(name = "atomrl", version, about = "Joint RL over five atomic coding skills, on one runtime")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate completions for prompts with a model.
    Generate(generate::GenerateArgs),
    /// Convert a foreign checkpoint (GGUF) into a Hugging Face directory.
    #[command(subcommand)]
    Convert(convert::ConvertCommand),
    /// Plot a run's metrics (reward per skill, KL, entropy, lengths) as SVG files.
    Report(report::ReportArgs),
    /// Grade completions of task instances and print per-skill rewards.
    Eval(eval::EvalArgs),
    /// Train a model with joint GRPO over the atomic skills.
    Train(train::TrainArgs),
    /// Supervised fine-tuning on chat transcripts (assistant tokens only): the warm start.
    Sft(sft::SftArgs),
    /// Turn the skill corpus's gold answers into chat transcripts for `atomrl sft`.
    SftData(sft_data::SftDataArgs),
    /// Build task instances from Python packages by mutation.
    Synth(synth::SynthArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Convert(cmd) => convert::run(cmd),
        Command::Report(args) => report::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Train(args) => train::run(args),
        Command::Sft(args) => sft::run(args),
        Command::SftData(args) => sft_data::run(args),
    }
}
