//! Architecture mapping: GGUF hyper-parameters and tensor names to their Hugging Face
//! counterparts, and the undoing of llama.cpp's rotary permutation of q/k.
//!
//! Supported: `llama` (q/k rows permuted by `convert_hf_to_gguf.py`, undone here) and `qwen2`
//! (q/k/v biases; llama.cpp keeps the Hugging Face row order for it because it uses NeoX rotary).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, ensure, Context, Result};

use super::gguf::{GgufFile, TensorInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
}

impl Arch {
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }

    /// Whether GGUF stores q/k rows in llama.cpp's interleaved rotary order.
    fn permutes_qk(self) -> bool {
        matches!(self, Arch::Llama)
    }
}

/// Hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Hparams {
    pub arch: Arch,
    pub n_layers: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// The factor of linear rope scaling, when the file has one.
    pub rope_scaling_linear: Option<f64>,
    pub context_length: usize,
    pub vocab_size: usize,
    /// No `output.weight`: the output projection reuses the embedding.
    pub tie_word_embeddings: bool,
    /// The checkpoint has q/k/v biases.
    pub attention_bias: bool,
}

impl Hparams {
    pub fn read(g: &GgufFile) -> Result<Hparams> {
        let arch_name = g.str("general.architecture")?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => bail!(
                "{}: architecture `{other}` is not supported (supported: llama, qwen2)",
                g.path.display()
            ),
        };
        let k = |suffix: &str| format!("{arch_name}.{suffix}");
        let hidden_size = g.usize(&k("embedding_length"))?;
        let n_heads = g.usize(&k("attention.head_count"))?;
        let n_kv_heads = g
            .opt_usize(&k("attention.head_count_kv"))?
            .unwrap_or(n_heads);
        ensure!(
            n_heads > 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0,
            "{}: head_count {n_heads} is not a positive multiple of head_count_kv {n_kv_heads}",
            g.path.display()
        );
        let head_dim = match g.opt_usize(&k("attention.key_length"))? {
            Some(d) => d,
            None => {
                ensure!(
                    hidden_size % n_heads == 0,
                    "{}: embedding_length {hidden_size} is not divisible by head_count {n_heads}",
                    g.path.display()
                );
                hidden_size / n_heads
            }
        };
        if let Some(v) = g.opt_usize(&k("attention.value_length"))? {
            ensure!(
                v == head_dim,
                "value_length {v} differs from key_length {head_dim}"
            );
        }
        ensure!(
            head_dim > 0 && head_dim % 2 == 0,
            "{}: head dimension {head_dim} must be even and positive",
            g.path.display()
        );
        if let Some(rot) = g.opt_usize(&k("rope.dimension_count"))? {
            ensure!(
                rot == head_dim,
                "{}: rope.dimension_count {rot} differs from the head dimension {head_dim} \
                 (partial rotary embeddings are not supported)",
                g.path.display()
            );
        }
        let rope_scaling_linear = match g.opt_str(&k("rope.scaling.type"))? {
            None | Some("none") => None,
            Some("linear") => Some(g.f64(&k("rope.scaling.factor"))?),
            Some(other) => bail!(
                "{}: rope scaling `{other}` is not supported (only linear)",
                g.path.display()
            ),
        };
        if g.tensor("rope_freqs.weight").is_some() {
            bail!(
                "{}: tensor `rope_freqs.weight` (llama3-style rope frequency scaling) is not \
                 supported",
                g.path.display()
            );
        }

        let embd = g
            .tensor("token_embd.weight")
            .ok_or_else(|| anyhow!("{}: missing tensor `token_embd.weight`", g.path.display()))?;
        let vocab_size = match g.opt_usize(&k("vocab_size"))? {
            Some(v) => v,
            None => embd.dims.get(1).copied().unwrap_or(0) as usize,
        };

        Ok(Hparams {
            arch,
            n_layers: g.usize(&k("block_count"))?,
            hidden_size,
            intermediate_size: g.usize(&k("feed_forward_length"))?,
            n_heads,
            n_kv_heads,
            head_dim,
            rms_norm_eps: g.f64(&k("attention.layer_norm_rms_epsilon"))?,
            rope_theta: g.opt_f64(&k("rope.freq_base"))?.unwrap_or(10000.0),
            rope_scaling_linear,
            context_length: g.usize(&k("context_length"))?,
            vocab_size,
            tie_word_embeddings: g.tensor("output.weight").is_none(),
            attention_bias: g.tensor("blk.0.attn_q.bias").is_some(),
        })
    }
}

/// What to do to a tensor's rows after dequantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    None,
    /// Undo llama.cpp's rotary permutation with this many heads.
    UnpermuteRows {
        n_head: usize,
    },
}

/// One output tensor: where it comes from and what it becomes.
#[derive(Debug, Clone)]
pub struct PlannedTensor<'a> {
    pub hf_name: String,
    pub source: &'a TensorInfo,
    /// Row-major Hugging Face shape.
    pub shape: Vec<usize>,
    pub transform: Transform,
}

/// Maps every GGUF tensor to its Hugging Face name, checking that the set is complete, every
/// shape agrees with the hyper-parameters and every type can be dequantized.
pub fn plan<'a>(g: &'a GgufFile, hp: &Hparams) -> Result<Vec<PlannedTensor<'a>>> {
    let mut expected = expected_tensors(hp);
    let mut planned = Vec::with_capacity(g.tensors.len());
    for t in &g.tensors {
        let Some((hf_name, shape, transform)) = expected.remove(&t.name) else {
            bail!(
                "tensor `{}` has no Hugging Face counterpart in a {} model with {} layers",
                t.name,
                hp.arch.gguf_name(),
                hp.n_layers
            );
        };
        let actual = t.hf_shape();
        ensure!(
            actual == shape,
            "tensor `{}` has shape {actual:?} (GGUF dims {:?}), expected {shape:?} from the \
             metadata",
            t.name,
            t.dims
        );
        ensure!(
            t.ggml_type.supported(),
            "tensor `{}` has type {}, which cannot be dequantized (supported: {})",
            t.name,
            t.ggml_type,
            super::dequant::GgmlType::supported_names()
        );
        planned.push(PlannedTensor {
            hf_name,
            source: t,
            shape,
            transform,
        });
    }
    if let Some(missing) = expected.keys().next() {
        bail!(
            "missing tensor `{missing}` ({} expected tensors absent in all)",
            expected.len()
        );
    }
    Ok(planned)
}

/// Every tensor a GGUF file of this shape must hold: GGUF name → (Hugging Face name, Hugging Face
/// shape, transform).
fn expected_tensors(hp: &Hparams) -> BTreeMap<String, (String, Vec<usize>, Transform)> {
    let (h, v, f) = (hp.hidden_size, hp.vocab_size, hp.intermediate_size);
    let (q, kv) = (hp.n_heads * hp.head_dim, hp.n_kv_heads * hp.head_dim);
    let none = Transform::None;
    // llama.cpp stores llama's q/k rows permuted for its RoPE layout.
    let (perm_q, perm_k) = if hp.arch.permutes_qk() {
        (Transform::UnpermuteRows { n_head: hp.n_heads }, Transform::UnpermuteRows { n_head: hp.n_kv_heads })
    } else {
        (none, none)
    };
    let mut out = BTreeMap::new();
    out.insert("token_embd.weight".into(), ("model.embed_tokens.weight".into(), vec![v, h], none));
    out.insert("output_norm.weight".into(), ("model.norm.weight".into(), vec![h], none));
    if !hp.tie_word_embeddings {
        out.insert("output.weight".into(), ("lm_head.weight".into(), vec![v, h], none));
    }
    for i in 0..hp.n_layers {
        let mut layer = vec![
            ("attn_norm.weight", "input_layernorm.weight", vec![h], none),
            ("ffn_norm.weight", "post_attention_layernorm.weight", vec![h], none),
            ("attn_q.weight", "self_attn.q_proj.weight", vec![q, h], perm_q),
            ("attn_k.weight", "self_attn.k_proj.weight", vec![kv, h], perm_k),
            ("attn_v.weight", "self_attn.v_proj.weight", vec![kv, h], none),
            ("attn_output.weight", "self_attn.o_proj.weight", vec![h, q], none),
            ("ffn_gate.weight", "mlp.gate_proj.weight", vec![f, h], none),
            ("ffn_up.weight", "mlp.up_proj.weight", vec![f, h], none),
            ("ffn_down.weight", "mlp.down_proj.weight", vec![h, f], none),
        ];
        if hp.attention_bias {
            layer.extend([
                ("attn_q.bias", "self_attn.q_proj.bias", vec![q], perm_q),
                ("attn_k.bias", "self_attn.k_proj.bias", vec![kv], perm_k),
                ("attn_v.bias", "self_attn.v_proj.bias", vec![kv], none),
            ]);
        }
        for (gguf, hf, shape, t) in layer {
            out.insert(format!("blk.{i}.{gguf}"), (format!("model.layers.{i}.{hf}"), shape, t));
        }
    }
    out
}

/// The row llama.cpp's permutation moves Hugging Face row `r` to. Rows are grouped per head; within
/// a head of `hd` rows, HF row `i * hd/2 + j` (i in 0..2) is stored at `2 * j + i`.
fn permuted_row(r: usize, head_dim: usize) -> usize {
    let (head, within) = (r / head_dim, r % head_dim);
    let half = head_dim / 2;
    let (i, j) = (within / half, within % half);
    head * head_dim + 2 * j + i
}

fn check_rows(len: usize, rows: usize, n_head: usize) -> Result<(usize, usize)> {
    ensure!(
        n_head > 0 && rows % n_head == 0 && (rows / n_head) % 2 == 0 && rows > 0 && len % rows == 0,
        "cannot split {rows} rows into {n_head} heads of even size (data of {len} elements)"
    );
    Ok((rows / n_head, len / rows))
}

/// llama.cpp's `permute`: `w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols)`.
pub fn permute_rows(data: &[f32], rows: usize, n_head: usize) -> Result<Vec<f32>> {
    let (hd, cols) = check_rows(data.len(), rows, n_head).context("permuting q/k rows")?;
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        let p = permuted_row(r, hd);
        out[p * cols..(p + 1) * cols].copy_from_slice(&data[r * cols..(r + 1) * cols]);
    }
    Ok(out)
}

/// The inverse of [`permute_rows`]: back to Hugging Face's half-split rotary layout.
pub fn unpermute_rows(data: &[f32], rows: usize, n_head: usize) -> Result<Vec<f32>> {
    let (hd, cols) = check_rows(data.len(), rows, n_head).context("un-permuting q/k rows")?;
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        let p = permuted_row(r, hd);
        out[r * cols..(r + 1) * cols].copy_from_slice(&data[p * cols..(p + 1) * cols]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_matches_llama_cpp_formula() {
        // 2 heads of head_dim 4, 3 columns; value = 100 * row + col.
        let (rows, cols, n_head) = (8, 3, 2);
        let hf: Vec<f32> = (0..rows * cols)
            .map(|i| (100 * (i / cols) + i % cols) as f32)
            .collect();
        let g = permute_rows(&hf, rows, n_head).unwrap();
        // reshape(2, 2, 2, 3).swapaxes(1, 2): per head, rows [0, 2, 1, 3].
        let order = [0, 2, 1, 3, 4, 6, 5, 7];
        for (dst, &src) in order.iter().enumerate() {
            assert_eq!(
                &g[dst * cols..(dst + 1) * cols],
                &hf[src * cols..(src + 1) * cols]
            );
        }
        assert_eq!(unpermute_rows(&g, rows, n_head).unwrap(), hf);
    }

    #[test]
    fn unpermute_inverts_permute() {
        for (rows, cols, n_head) in [(576, 5, 9), (192, 3, 3), (64, 1, 1), (24, 7, 3)] {
            let w: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 7.0).collect();
            let p = permute_rows(&w, rows, n_head).unwrap();
            assert_ne!(p, w);
            assert_eq!(unpermute_rows(&p, rows, n_head).unwrap(), w);
        }
    }

    #[test]
    fn permute_rejects_bad_head_split() {
        assert!(permute_rows(&[0.0; 12], 6, 4).is_err());
        assert!(unpermute_rows(&[0.0; 12], 6, 2).is_err()); // head_dim 3 is odd
        assert!(unpermute_rows(&[0.0; 12], 4, 0).is_err());
    }
}
