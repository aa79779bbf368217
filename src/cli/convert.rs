//! `atomrl convert gguf FILE OUT_DIR`.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum ConvertCommand {
    /// Convert a GGUF v3 file into a Hugging Face model directory (bf16 safetensors + tokenizer).
    Gguf {
        /// The .gguf file to read.
        file: PathBuf,
        /// The directory to write (created if missing).
        out_dir: PathBuf,
    },
}

pub fn run(cmd: ConvertCommand) -> anyhow::Result<()> {
    match cmd {
        ConvertCommand::Gguf { file, out_dir } => {
            let _ = (file, out_dir);
            anyhow::bail!("GGUF conversion is not implemented yet")
        }
    }
}
