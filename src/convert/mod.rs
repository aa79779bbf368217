//! Importing foreign checkpoints into Hugging Face directories: `atomrl convert gguf FILE OUT_DIR`.
//!
//! - [`gguf`]: the GGUF reader (header, metadata, tensor infos, mapped data), bounds-checked.
//! - [`dequant`]: ggml block formats to f32.
//! - [`arch`]: hyper-parameters and tensor names per architecture, q/k rotary un-permutation.
//! - [`tokenizer_json`]: `tokenizer.json` / `tokenizer_config.json` from the GGUF vocabulary.
//! - [`hf_dir`]: `config.json`, `generation_config.json`, bf16 `model.safetensors`.
//!
//! Everything is validated (metadata, tensor set, shapes, types, tokenizer) before the first
//! weight is written.

pub mod arch;
pub mod dequant;
pub mod gguf;
pub mod hf_dir;
pub mod tokenizer_json;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use arch::Hparams;
use gguf::GgufFile;

/// What a conversion produced.
#[derive(Debug, Clone)]
pub struct Summary {
    pub out_dir: PathBuf,
    pub hparams: Hparams,
    pub n_tensors: usize,
    pub n_params: usize,
    pub n_tokens: usize,
    pub pre_tokenizer: tokenizer_json::PreTokenizer,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hp = &self.hparams;
        write!(
            f,
            "wrote {}: {} ({} layers, hidden {}, {} heads / {} kv heads), {} tensors, {:.1}M \
             parameters in bf16, {} tokens ({:?} pre-tokenizer){}",
            self.out_dir.display(),
            hp.arch.gguf_name(),
            hp.n_layers,
            hp.hidden_size,
            hp.n_heads,
            hp.n_kv_heads,
            self.n_tensors,
            self.n_params as f64 / 1e6,
            self.n_tokens,
            self.pre_tokenizer,
            if hp.tie_word_embeddings {
                ", tied embeddings"
            } else {
                ""
            },
        )
    }
}

/// Progress events of [`gguf_to_hf`].
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// The file is read and validated; `n_tensors` tensors will be written.
    Start { n_tensors: usize },
    /// Tensor number `done` of `total` was written.
    Tensor {
        done: usize,
        total: usize,
        name: &'a str,
    },
}

/// Converts a GGUF file into a Hugging Face model directory `out_dir` (created if missing).
pub fn gguf_to_hf(
    file: &Path,
    out_dir: &Path,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Summary> {
    let g = GgufFile::open(file)?;
    let hp = Hparams::read(&g)?;
    let planned = arch::plan(&g, &hp).with_context(|| format!("{}", file.display()))?;
    let tok = tokenizer_json::build(&g, hp.context_length)?;
    if tok.n_tokens > hp.vocab_size {
        return Err(anyhow!(
            "{}: the tokenizer has {} tokens but the embedding only {} rows",
            file.display(),
            tok.n_tokens,
            hp.vocab_size
        ));
    }
    // Catch a tokenizer the runtime could not load before writing anything.
    let tokenizer_text = serde_json::to_string(&tok.tokenizer)?;
    tokenizers::Tokenizer::from_bytes(tokenizer_text.as_bytes()).map_err(|e| {
        anyhow!(
            "{}: the rebuilt tokenizer.json does not load: {e}",
            file.display()
        )
    })?;

    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    progress(Progress::Start {
        n_tensors: planned.len(),
    });
    hf_dir::write_safetensors(
        &out_dir.join("model.safetensors"),
        &g,
        &planned,
        &|done, total, name| progress(Progress::Tensor { done, total, name }),
    )?;
    hf_dir::write_json(
        &out_dir.join("config.json"),
        &hf_dir::config_json(&hp, &tok),
    )?;
    hf_dir::write_json(
        &out_dir.join("generation_config.json"),
        &hf_dir::generation_config_json(&tok),
    )?;
    hf_dir::write_atomic(&out_dir.join("tokenizer.json"), tokenizer_text.as_bytes())?;
    hf_dir::write_json(
        &out_dir.join("tokenizer_config.json"),
        &tok.tokenizer_config,
    )?;

    Ok(Summary {
        out_dir: out_dir.to_path_buf(),
        n_tensors: planned.len(),
        n_params: planned
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum(),
        n_tokens: tok.n_tokens,
        pre_tokenizer: tok.pre,
        hparams: hp,
    })
}
