//! The forward pass, written once against the backend op set.
//!
//! Two entry points share the layer code: [`Model::forward_cached`] appends new tokens of many
//! sequences to the paged KV cache and attends over it (prefill and decode are the same call),
//! and [`Model::forward_train`] runs packed sequences with causal attention and keeps what the
//! backward pass needs.

use std::path::Path;

use anyhow::{ensure, Context, Result};

use crate::backend::{Backend, CausalAttn, Gemm, PagedAttn, Rope};

use super::checkpoint::load_weights;
use super::config::ModelConfig;
use super::kv_cache::{KvCache, SeqId};
use super::weights::Weights;

pub struct Model<B: Backend> {
    pub config: ModelConfig,
    pub weights: Weights<B::Tensor>,
}

/// Which attention a layer runs.
enum Attn<'a, B: Backend> {
    /// Write the new keys/values into the cache, then attend over it. When every sequence is
    /// new (a prefill), `prefill` holds the packed layout and attention runs on the new
    /// keys/values directly, which is the same computation with fewer indirections.
    Paged { cache: &'a mut KvCache<B>, slots: &'a B::Index, meta: PagedAttn<'a, B>, prefill: Option<CausalAttn<'a, B>> },
    Causal { meta: CausalAttn<'a, B> },
}

/// What one layer's forward keeps for the backward pass (`[tokens, width]` each).
pub struct LayerActs<B: Backend> {
    /// The residual stream entering the layer.
    pub x_in: B::Tensor,
    /// q and k after bias, before the per-head q/k norm (only for families that have one).
    pub q_pre: Option<B::Tensor>,
    pub k_pre: Option<B::Tensor>,
    /// q and k as attention saw them (after norm and RoPE), and v.
    pub q: B::Tensor,
    pub k: B::Tensor,
    pub v: B::Tensor,
    pub attn: B::Tensor,
    /// Softmax log-sum-exp per token and head.
    pub lse: B::Tensor,
    /// The residual stream after attention.
    pub x_mid: B::Tensor,
    pub gate: B::Tensor,
    pub up: B::Tensor,
}

/// A layer's saved state: all its activations, or only its input, from which the backward pass
/// recomputes them (activation checkpointing: one more layer forward for far less memory).
pub enum SavedLayer<B: Backend> {
    Acts(LayerActs<B>),
    Input(B::Tensor),
}

/// Which layers keep only their input and recompute their activations in the backward pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recompute {
    /// Keep every activation (fastest, most memory).
    #[default]
    Never,
    /// Recompute every layer.
    Always,
    /// Recompute the layers whose index is listed.
    Layers(Vec<usize>),
}

impl Recompute {
    pub fn layer(&self, idx: usize) -> bool {
        match self {
            Recompute::Never => false,
            Recompute::Always => true,
            Recompute::Layers(l) => l.contains(&idx),
        }
    }
}

/// The packed batch as the backend sees it, kept for the backward pass.
pub struct PackedBatch<B: Backend> {
    pub tokens: usize,
    pub n_seqs: usize,
    pub ids: B::Index,
    pub positions: B::Index,
    pub cu_seqlens: B::Index,
}

/// What [`Model::forward_train`] returns.
pub struct TrainForward<B: Backend> {
    /// Final hidden states after the last norm, `[tokens, hidden]`.
    pub hidden: B::Tensor,
    /// The residual stream before the final norm.
    pub x_final: B::Tensor,
    /// One entry per layer when activations were saved, else empty.
    pub layers: Vec<SavedLayer<B>>,
    pub batch: PackedBatch<B>,
}

/// Work buffers for one forward call, reused across layers.
struct Scratch<B: Backend> {
    h: B::Tensor,
    q: B::Tensor,
    k: B::Tensor,
    v: B::Tensor,
    attn: B::Tensor,
    o: B::Tensor,
    gate: B::Tensor,
    up: B::Tensor,
    lse: B::Tensor,
}

impl<B: Backend> Scratch<B> {
    fn new(be: &B, c: &ModelConfig, t: usize) -> Result<Self> {
        Ok(Scratch {
            h: be.zeros(t * c.hidden_size)?,
            q: be.zeros(t * c.q_dim())?,
            k: be.zeros(t * c.kv_dim())?,
            v: be.zeros(t * c.kv_dim())?,
            attn: be.zeros(t * c.q_dim())?,
            o: be.zeros(t * c.hidden_size)?,
            gate: be.zeros(t * c.intermediate_size)?,
            up: be.zeros(t * c.intermediate_size)?,
            // f32: the backward pass recomputes the softmax from it (bf16 would be off by
            // up to 2^-9 of the log-sum-exp, a relative error of that size in every weight).
            lse: be.zeros_f32(t * c.num_heads)?,
        })
    }
}

pub(crate) fn clone_tensor<B: Backend>(be: &B, t: &B::Tensor) -> Result<B::Tensor> {
    let n = be.len(t);
    let mut out = be.zeros(n)?;
    be.copy(&mut out, 0, t, 0, n)?;
    Ok(out)
}

impl<B: Backend> Model<B> {
    /// Loads `config.json` and the safetensors weights of a Hugging Face directory.
    pub fn load(be: &B, dir: &Path) -> Result<Self> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let host = load_weights(dir, &config)?;
        Self::from_host(be, config, &host)
    }

    pub fn from_host(be: &B, config: ModelConfig, host: &Weights<Vec<f32>>) -> Result<Self> {
        let weights = host.try_map(|w| be.from_f32(w))?;
        Ok(Model { config, weights })
    }

    /// The parameters as host f32 vectors: the compute copies, rounded to bf16 on CUDA (a
    /// trainer saves its f32 masters instead, `Trainer::host_weights`).
    pub fn to_host(&self, be: &B) -> Result<Weights<Vec<f32>>> {
        self.weights.try_map(|w| be.to_f32(w))
    }

    #[allow(clippy::too_many_arguments)]
    fn layer(&self, be: &B, idx: usize, x: &mut B::Tensor, s: &mut Scratch<B>, t: usize, positions: &B::Index, attn: &mut Attn<B>, save: bool) -> Result<Option<LayerActs<B>>> {
        let c = &self.config;
        let l = &self.weights.layers[idx];
        let (d, qd, kvd, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let x_in = if save { Some(clone_tensor(be, x)?) } else { None };

        be.rms_norm(&mut s.h, x, &l.input_norm, t, d, c.rms_norm_eps)?;
        be.gemm(&mut s.q, &s.h, &l.q_proj, Gemm::linear(t, qd, d))?;
        be.gemm(&mut s.k, &s.h, &l.k_proj, Gemm::linear(t, kvd, d))?;
        be.gemm(&mut s.v, &s.h, &l.v_proj, Gemm::linear(t, kvd, d))?;
        if let (Some(qb), Some(kb), Some(vb)) = (&l.q_bias, &l.k_bias, &l.v_bias) {
            be.add_bias(&mut s.q, qb, t, qd)?;
            be.add_bias(&mut s.k, kb, t, kvd)?;
            be.add_bias(&mut s.v, vb, t, kvd)?;
        }
        let mut pre = None;
        if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
            // Per-head RMSNorm is a row-wise RMSNorm over rows of `head_dim`.
            let (q_raw, k_raw) = (clone_tensor(be, &s.q)?, clone_tensor(be, &s.k)?);
            be.rms_norm(&mut s.q, &q_raw, qn, t * c.num_heads, c.head_dim, c.rms_norm_eps)?;
            be.rms_norm(&mut s.k, &k_raw, kn, t * c.num_kv_heads, c.head_dim, c.rms_norm_eps)?;
            pre = save.then_some((q_raw, k_raw));
        }
        be.rope(&mut s.q, positions, Rope { rows: t, n_heads: c.num_heads, head_dim: c.head_dim, theta: c.rope_theta })?;
        be.rope(&mut s.k, positions, Rope { rows: t, n_heads: c.num_kv_heads, head_dim: c.head_dim, theta: c.rope_theta })?;
        match attn {
            Attn::Paged { cache, slots, meta, prefill } => {
                let (kc, vc) = &mut cache.layers[idx];
                be.kv_cache_write(kc, vc, &s.k, &s.v, slots, t, kvd)?;
                match prefill {
                    Some(p) => be.attention_causal(&mut s.attn, &mut s.lse, &s.q, &s.k, &s.v, p)?,
                    None => be.attention_paged(&mut s.attn, &s.q, kc, vc, meta)?,
                }
            }
            Attn::Causal { meta } => be.attention_causal(&mut s.attn, &mut s.lse, &s.q, &s.k, &s.v, meta)?,
        }
        be.gemm(&mut s.o, &s.attn, &l.o_proj, Gemm::linear(t, d, qd))?;
        be.add(x, &s.o)?;
        let x_mid = if save { Some(clone_tensor(be, x)?) } else { None };

        be.rms_norm(&mut s.h, x, &l.post_norm, t, d, c.rms_norm_eps)?;
        be.gemm(&mut s.gate, &s.h, &l.gate_proj, Gemm::linear(t, f, d))?;
        be.gemm(&mut s.up, &s.h, &l.up_proj, Gemm::linear(t, f, d))?;
        let mut act = be.zeros(t * f)?;
        be.swiglu(&mut act, &s.gate, &s.up)?;
        be.gemm(&mut s.o, &act, &l.down_proj, Gemm::linear(t, d, f))?;
        be.add(x, &s.o)?;

        let (Some(x_in), Some(x_mid)) = (x_in, x_mid) else { return Ok(None) };
        let (q_pre, k_pre) = pre.unzip();
        // The saved tensors leave the scratch, which gets fresh buffers: no copies.
        let take = |x: &mut B::Tensor| -> Result<B::Tensor> {
            let fresh = be.zeros(be.len(x))?;
            Ok(std::mem::replace(x, fresh))
        };
        Ok(Some(LayerActs {
            x_in,
            q_pre,
            k_pre,
            q: take(&mut s.q)?,
            k: take(&mut s.k)?,
            v: take(&mut s.v)?,
            attn: take(&mut s.attn)?,
            lse: std::mem::replace(&mut s.lse, be.zeros_f32(t * c.num_heads)?),
            x_mid,
            gate: take(&mut s.gate)?,
            up: take(&mut s.up)?,
        }))
    }

    fn embed(&self, be: &B, tokens: &[u32]) -> Result<B::Tensor> {
        let d = self.config.hidden_size;
        let mut x = be.zeros(tokens.len() * d)?;
        be.embedding(&mut x, &self.weights.embed, &be.index(tokens)?, tokens.len(), d)?;
        Ok(x)
    }

    /// Appends `new_tokens` of each sequence to the cache and returns the logits
    /// (`[rows, vocab]`) of the last new token of each entry, or of every new token when
    /// `all_logits` is set (entries in order).
    pub fn forward_cached(&self, be: &B, cache: &mut KvCache<B>, entries: &[(SeqId, &[u32])], all_logits: bool) -> Result<B::Tensor> {
        let c = &self.config;
        let mut tokens = Vec::new();
        let mut positions = Vec::new();
        let mut token_seq = Vec::new();
        let mut slots = Vec::new();
        let mut last_rows = Vec::new();
        let all_new = entries.iter().all(|(seq, _)| cache.len(*seq) == 0);
        let mut cu_seqlens = vec![0u32];
        for (i, (seq, new)) in entries.iter().enumerate() {
            ensure!(!new.is_empty(), "sequence {seq} has no new tokens");
            let start = cache.len(*seq);
            ensure!(start + new.len() <= c.max_position_embeddings, "sequence of {} tokens exceeds the model's context of {}", start + new.len(), c.max_position_embeddings);
            slots.extend(cache.append(*seq, new.len())?);
            tokens.extend_from_slice(new);
            positions.extend((start..start + new.len()).map(|p| p as u32));
            token_seq.extend(std::iter::repeat_n(i as u32, new.len()));
            last_rows.push(tokens.len() - 1);
            cu_seqlens.push(tokens.len() as u32);
        }
        let t = tokens.len();
        let cu_seqlens = if all_new { Some(be.index(&cu_seqlens)?) } else { None };
        let max_blocks = entries.iter().map(|(s, _)| cache.blocks_of(*s)).max().unwrap_or(1);
        let tables: Vec<u32> = entries.iter().flat_map(|(s, _)| cache.block_table(*s, max_blocks)).collect();
        let (positions, token_seq, tables, slots) = (be.index(&positions)?, be.index(&token_seq)?, be.index(&tables)?, be.index(&slots)?);

        let mut x = self.embed(be, &tokens)?;
        let mut s = Scratch::new(be, c, t)?;
        let block_size = cache.block_size;
        for idx in 0..c.num_layers {
            let meta = PagedAttn { tokens: t, shape: c.attn_shape(), block_size, max_blocks, positions: &positions, token_seq: &token_seq, block_tables: &tables };
            let prefill = cu_seqlens.as_ref().map(|cu| CausalAttn { tokens: t, n_seqs: entries.len(), shape: c.attn_shape(), cu_seqlens: cu });
            let mut attn = Attn::Paged { cache: &mut *cache, slots: &slots, meta, prefill };
            self.layer(be, idx, &mut x, &mut s, t, &positions, &mut attn, false)?;
        }
        let rows: Vec<usize> = if all_logits { (0..t).collect() } else { last_rows };
        self.logits(be, &x, &rows)
    }

    /// Final norm and output head for the given rows of the residual stream `x`.
    pub fn logits(&self, be: &B, x: &B::Tensor, rows: &[usize]) -> Result<B::Tensor> {
        let c = &self.config;
        let d = c.hidden_size;
        let mut picked = be.zeros(rows.len() * d)?;
        for (i, &r) in rows.iter().enumerate() {
            be.copy(&mut picked, i * d, x, r * d, d)?;
        }
        let mut h = be.zeros(rows.len() * d)?;
        be.rms_norm(&mut h, &picked, &self.weights.norm, rows.len(), d, c.rms_norm_eps)?;
        let mut logits = be.zeros(rows.len() * c.vocab_size)?;
        be.gemm(&mut logits, &h, self.weights.head(), Gemm::linear(rows.len(), c.vocab_size, d))?;
        Ok(logits)
    }

    /// Runs packed sequences (`cu_seqlens` offsets into `tokens`) with causal attention and
    /// returns the final hidden states; with `save`, also every layer's activations.
    pub fn forward_train(&self, be: &B, tokens: &[u32], cu_seqlens: &[u32], save: bool) -> Result<TrainForward<B>> {
        let batch = self.pack(be, tokens, cu_seqlens)?;
        self.forward_packed(be, batch, save.then_some(&Recompute::Never))
    }

    /// Checks `cu_seqlens` and moves the batch to the backend.
    pub fn pack(&self, be: &B, tokens: &[u32], cu_seqlens: &[u32]) -> Result<PackedBatch<B>> {
        let c = &self.config;
        let t = tokens.len();
        ensure!(cu_seqlens.first() == Some(&0) && cu_seqlens.last() == Some(&(t as u32)), "cu_seqlens must run from 0 to the token count");
        let mut positions = Vec::with_capacity(t);
        for w in cu_seqlens.windows(2) {
            ensure!(w[1] >= w[0], "cu_seqlens must not decrease");
            let len = (w[1] - w[0]) as usize;
            ensure!(len <= c.max_position_embeddings, "sequence of {len} tokens exceeds the model's context of {}", c.max_position_embeddings);
            positions.extend(0..len as u32);
        }
        Ok(PackedBatch { tokens: t, n_seqs: cu_seqlens.len() - 1, ids: be.index(tokens)?, positions: be.index(&positions)?, cu_seqlens: be.index(cu_seqlens)? })
    }

    /// The training forward over a packed batch. With `save`, keeps what the backward pass
    /// needs: every activation, or only the input of the layers `save` says to recompute.
    pub fn forward_packed(&self, be: &B, batch: PackedBatch<B>, save: Option<&Recompute>) -> Result<TrainForward<B>> {
        let c = &self.config;
        let t = batch.tokens;
        let mut x = be.zeros(t * c.hidden_size)?;
        be.embedding(&mut x, &self.weights.embed, &batch.ids, t, c.hidden_size).context("embedding")?;
        let mut s = Scratch::new(be, c, t)?;
        let mut layers = Vec::new();
        for idx in 0..c.num_layers {
            let recompute = save.is_some_and(|r| r.layer(idx));
            if recompute {
                layers.push(SavedLayer::Input(clone_tensor(be, &x)?));
            }
            let meta = CausalAttn { tokens: t, n_seqs: batch.n_seqs, shape: c.attn_shape(), cu_seqlens: &batch.cu_seqlens };
            let acts = self.layer(be, idx, &mut x, &mut s, t, &batch.positions, &mut Attn::Causal { meta }, save.is_some() && !recompute)?;
            layers.extend(acts.map(SavedLayer::Acts));
        }
        let mut hidden = be.zeros(t * c.hidden_size)?;
        be.rms_norm(&mut hidden, &x, &self.weights.norm, t, c.hidden_size, c.rms_norm_eps)?;
        Ok(TrainForward { hidden, x_final: x, layers, batch })
    }

    /// Re-runs layer `idx` from its saved input and returns its activations.
    pub fn recompute_layer(&self, be: &B, idx: usize, x_in: &B::Tensor, batch: &PackedBatch<B>) -> Result<LayerActs<B>> {
        let t = batch.tokens;
        let mut x = clone_tensor(be, x_in)?;
        let mut s = Scratch::new(be, &self.config, t)?;
        let meta = CausalAttn { tokens: t, n_seqs: batch.n_seqs, shape: self.config.attn_shape(), cu_seqlens: &batch.cu_seqlens };
        let acts = self.layer(be, idx, &mut x, &mut s, t, &batch.positions, &mut Attn::Causal { meta }, true)?;
        acts.context("layer forward saved no activations")
    }
}
