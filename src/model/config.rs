//! The model configuration, read from a Hugging Face `config.json`.
//!
//! Supported families: `llama`, `qwen2` (q/k/v biases) and `qwen3` (per-head q/k RMSNorm and a
//! `head_dim` independent of the hidden size). Anything else is refused by name.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Llama,
    Qwen2,
    Qwen3,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry biases (qwen2, or llama with `attention_bias`).
    pub attention_bias: bool,
    /// Per-head RMSNorm on q and k before RoPE (qwen3).
    pub qk_norm: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// The subset of `config.json` that atomrl reads; unknown keys are ignored (HF adds many).
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f32>,
    rope_theta: Option<f32>,
    rope_parameters: Option<Value>,
    rope_scaling: Option<Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
    hidden_act: Option<String>,
}

fn token_ids(v: &Option<Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
        _ => Vec::new(),
    }
}

/// RoPE theta from `rope_parameters` (transformers 5.x) or top-level `rope_theta`; only the
/// default rope type is supported, so any scaling is refused by name.
fn rope_theta(raw: &RawConfig) -> Result<f32> {
    for (key, section) in [("rope_parameters", &raw.rope_parameters), ("rope_scaling", &raw.rope_scaling)] {
        let Some(Value::Object(map)) = section else { continue };
        let kind = map.get("rope_type").or_else(|| map.get("type")).and_then(Value::as_str).unwrap_or("default");
        if kind != "default" {
            bail!("unsupported rope scaling {kind:?} (in {key}); atomrl supports the default RoPE only");
        }
        if let Some(theta) = map.get("rope_theta").and_then(Value::as_f64) {
            return Ok(theta as f32);
        }
    }
    Ok(raw.rope_theta.unwrap_or(10000.0))
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).context("parsing model config")?;
        let family = match raw.model_type.as_deref() {
            Some("llama") => Family::Llama,
            Some("qwen2") => Family::Qwen2,
            Some("qwen3") => Family::Qwen3,
            Some(other) => bail!("unsupported model_type {other:?}: atomrl supports llama, qwen2 and qwen3"),
            None => bail!("config has no model_type: atomrl supports llama, qwen2 and qwen3"),
        };
        if let Some(act) = raw.hidden_act.as_deref() {
            if act != "silu" {
                bail!("unsupported hidden_act {act:?}: atomrl supports silu (SwiGLU) only");
            }
        }
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if raw.num_attention_heads == 0 || num_kv_heads == 0 || raw.num_attention_heads % num_kv_heads != 0 {
            bail!("num_attention_heads ({}) must be a positive multiple of num_key_value_heads ({num_kv_heads})", raw.num_attention_heads);
        }
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / raw.num_attention_heads);
        if head_dim % 2 != 0 {
            bail!("head_dim {head_dim} must be even for RoPE");
        }
        let tie_default = family != Family::Llama;
        Ok(ModelConfig {
            family,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: rope_theta(&raw)?,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(tie_default),
            attention_bias: raw.attention_bias.unwrap_or(family == Family::Qwen2),
            qk_norm: family == Family::Qwen3,
            bos_token_id: token_ids(&raw.bos_token_id).first().copied(),
            eos_token_ids: token_ids(&raw.eos_token_id),
        })
    }

    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
    pub fn attn_shape(&self) -> crate::backend::AttnShape {
        crate::backend::AttnShape {
            n_heads: self.num_heads,
            n_kv_heads: self.num_kv_heads,
            head_dim: self.head_dim,
            scale: 1.0 / (self.head_dim as f32).sqrt(),
        }
    }

    /// Number of parameters (for MFU and memory estimates).
    pub fn num_params(&self) -> usize {
        let (d, f) = (self.hidden_size, self.intermediate_size);
        let attn = d * (self.q_dim() + 2 * self.kv_dim()) + self.q_dim() * d;
        let layer = attn + 3 * d * f + 2 * d;
        let head = if self.tie_word_embeddings { 0 } else { self.vocab_size * d };
        self.vocab_size * d + self.num_layers * layer + d + head
    }
}
