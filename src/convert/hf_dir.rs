//! Writing the Hugging Face directory: `config.json`, `generation_config.json` and
//! `model.safetensors` (bf16). Every file is written under a temporary name and renamed into
//! place, so an interrupted conversion never leaves a truncated file under the final name.

use std::borrow::Cow;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use half::bf16;
use safetensors::{Dtype, View};
use serde_json::{json, Value as Json};

use super::arch::{unpermute_rows, Arch, Hparams, PlannedTensor, Transform};
use super::dequant::dequantize;
use super::gguf::GgufFile;
use super::tokenizer_json::TokenizerFiles;

/// `config.json` for the model.
pub fn config_json(hp: &Hparams, tok: &TokenizerFiles) -> Json {
    let (model_type, architecture) = match hp.arch {
        Arch::Llama => ("llama", "LlamaForCausalLM"),
        Arch::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
    };
    let rope_scaling = hp.rope_scaling_linear.map_or(
        Json::Null,
        |factor| json!({"rope_type": "linear", "type": "linear", "factor": factor}),
    );
    let mut c = json!({
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_act": "silu",
        "hidden_size": hp.hidden_size,
        "intermediate_size": hp.intermediate_size,
        "num_hidden_layers": hp.n_layers,
        "num_attention_heads": hp.n_heads,
        "num_key_value_heads": hp.n_kv_heads,
        "head_dim": hp.head_dim,
        "rms_norm_eps": hp.rms_norm_eps,
        "rope_theta": hp.rope_theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": hp.context_length,
        "vocab_size": hp.vocab_size,
        "tie_word_embeddings": hp.tie_word_embeddings,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "torch_dtype": "bfloat16",
        "use_cache": true,
    });
    match hp.arch {
        Arch::Llama => {
            c["attention_bias"] = json!(hp.attention_bias);
            c["mlp_bias"] = json!(false);
        }
        Arch::Qwen2 => {
            c["use_sliding_window"] = json!(false);
        }
    }
    c
}

/// `generation_config.json`: eos (and the end-of-turn token, when it differs) stop generation.
pub fn generation_config_json(tok: &TokenizerFiles) -> Json {
    let eos = match (tok.eos_token_id, tok.eot_token_id) {
        (Some(e), Some(t)) => json!([e, t]),
        (Some(e), None) => json!(e),
        (None, Some(t)) => json!(t),
        (None, None) => Json::Null,
    };
    json!({
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": tok.pad_token_id,
    })
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

pub fn write_json(path: &Path, value: &Json) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .with_context(|| format!("serializing {}", path.display()))?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// One output tensor, dequantized only when the safetensors writer asks for its bytes so that at
/// most a few tensors are in memory at once.
struct LazyTensor<'a> {
    planned: &'a PlannedTensor<'a>,
    gguf: &'a GgufFile,
    writer: &'a WriterState<'a>,
}

struct WriterState<'a> {
    done: AtomicUsize,
    total: usize,
    /// The first failure: `View::data` cannot return an error, so it is kept here and the
    /// half-written file discarded afterwards.
    error: Mutex<Option<anyhow::Error>>,
    progress: &'a (dyn Fn(usize, usize, &str) + Sync),
}

impl LazyTensor<'_> {
    fn bf16_bytes(&self) -> Result<Vec<u8>> {
        let t = self.planned.source;
        let mut values = vec![0f32; t.n_elements()];
        dequantize(t.ggml_type, self.gguf.tensor_bytes(t), &mut values)?;
        if let Transform::UnpermuteRows { n_head } = self.planned.transform {
            values = unpermute_rows(&values, self.planned.shape[0], n_head)?;
        }
        let out: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
        Ok(bytemuck::cast_slice(&out).to_vec())
    }
}

impl View for LazyTensor<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::BF16
    }

    fn shape(&self) -> &[usize] {
        &self.planned.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let name = &self.planned.hf_name;
        let bytes = match self.bf16_bytes() {
            Ok(b) => b,
            Err(e) => {
                let mut slot = self.writer.error.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(e.context(format!("tensor `{}`", self.planned.source.name)));
                vec![0; self.data_len()]
            }
        };
        let done = self.writer.done.fetch_add(1, Ordering::Relaxed) + 1;
        (self.writer.progress)(done, self.writer.total, name);
        Cow::Owned(bytes)
    }

    fn data_len(&self) -> usize {
        self.planned.shape.iter().product::<usize>() * 2
    }
}

/// Writes every planned tensor as bf16 into `path`, calling `progress(done, total, hf_name)` after
/// each one.
pub fn write_safetensors(
    path: &Path,
    gguf: &GgufFile,
    planned: &[PlannedTensor<'_>],
    progress: &(dyn Fn(usize, usize, &str) + Sync),
) -> Result<()> {
    let writer = WriterState {
        done: AtomicUsize::new(0),
        total: planned.len(),
        error: Mutex::new(None),
        progress,
    };
    let views = planned.iter().map(|p| {
        (
            p.hf_name.clone(),
            LazyTensor {
                planned: p,
                gguf,
                writer: &writer,
            },
        )
    });
    let metadata = [("format".to_string(), "pt".to_string())]
        .into_iter()
        .collect();
    let tmp = tmp_path(path);
    let written = safetensors::serialize_to_file(views, Some(metadata), &tmp)
        .map_err(|e| anyhow!("writing {}: {e}", tmp.display()));
    let failed = writer
        .error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Err(err) = failed.map_or(written, Err) {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
