//! `atomrl convert gguf FILE OUT_DIR`: import a GGUF checkpoint as a Hugging Face directory.

use std::path::PathBuf;
use std::time::Instant;

use clap::Subcommand;

use crate::convert::{gguf_to_hf, Progress};

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
            let start = Instant::now();
            eprintln!("reading {}", file.display());
            let summary = gguf_to_hf(&file, &out_dir, &|p| match p {
                Progress::Start { n_tensors } => {
                    eprintln!("converting {n_tensors} tensors to bf16");
                }
                Progress::Tensor { done, total, name } => {
                    // About ten lines whatever the model size.
                    if done == total || done % total.div_ceil(10).max(1) == 0 {
                        eprintln!("  [{done:>4}/{total}] {name}");
                    }
                }
            })?;
            eprintln!("{summary} in {:.1}s", start.elapsed().as_secs_f64());
            Ok(())
        }
    }
}
