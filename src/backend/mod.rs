//! The op set every backend implements, and the choice of backend.
//!
//! The model, the sampler and the trainer are written once against [`Backend`]. The CPU backend
//! (`cpu/`) is the f32 reference; the CUDA backend implements the same ops under the same names in
//! `kernels/*.cu`, and the parity tests run each op on both. Tensors are flat buffers: shapes are
//! passed to each op in a small params struct, the way a kernel receives them.

pub mod cpu;
pub mod cuda;
pub mod philox;

use anyhow::Result;

/// Attention geometry shared by the attention ops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Softmax scale, normally `1/sqrt(head_dim)`.
    pub scale: f32,
}

impl AttnShape {
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
    /// Query heads that share one key/value head (grouped-query attention).
    pub fn group(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }
}

/// `out[m,n] (+)= a[m,k] · b` where `b` is `[n,k]` (`trans_b`, a Hugging Face `Linear` weight) or
/// `[k,n]`; `a` is `[m,k]`, or `[k,m]` when `trans_a` (used for weight gradients).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    /// Add into `out` instead of overwriting it.
    pub accumulate: bool,
}

impl Gemm {
    /// `out[m,n] = x[m,k] · w[n,k]^T`: a linear layer's forward.
    pub fn linear(m: usize, n: usize, k: usize) -> Self {
        Gemm { m, n, k, trans_a: false, trans_b: true, accumulate: false }
    }
}

/// Rotary position embedding in the Hugging Face layout (`rotate_half`: the first half of each
/// head pairs with the second half).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    pub rows: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub theta: f32,
}

/// Attention of new query tokens over a paged KV cache: token `t` belongs to sequence
/// `token_seq[t]`, sits at position `positions[t]`, and sees cache positions `0..=positions[t]`
/// of its sequence, found through `block_tables[seq * max_blocks + pos / block_size]`.
pub struct PagedAttn<'a, B: Backend + ?Sized> {
    pub tokens: usize,
    pub shape: AttnShape,
    pub block_size: usize,
    pub max_blocks: usize,
    pub positions: &'a B::Index,
    pub token_seq: &'a B::Index,
    pub block_tables: &'a B::Index,
}

/// Causal attention inside each of several packed sequences: sequence `s` spans token rows
/// `cu_seqlens[s]..cu_seqlens[s+1]` (the flash-attention "varlen" convention).
pub struct CausalAttn<'a, B: Backend + ?Sized> {
    pub tokens: usize,
    pub n_seqs: usize,
    pub shape: AttnShape,
    pub cu_seqlens: &'a B::Index,
}

/// How to draw one row's next token. See `cpu/sampling.rs` for the exact semantics, which the
/// sampling kernel reproduces draw for draw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleParams {
    /// 0 means greedy (argmax, lowest index on ties).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 keeps all.
    pub top_k: u32,
    /// Keep the smallest most-likely set with this much of the mass; 1 keeps all.
    pub top_p: f32,
    /// Keep tokens at least this fraction as likely as the most likely one; 0 keeps all.
    pub min_p: f32,
    pub seed: u64,
    /// The random stream (the sequence's id) and the token index within it: the Philox counter.
    pub stream: u32,
    pub step: u32,
}

/// A drawn token and its log-probability under the tempered, unfiltered distribution (the
/// quantity the policy-gradient objective recomputes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampled {
    pub token: u32,
    pub logprob: f32,
}

/// The op set. Every op writes its outputs into buffers the caller owns, so the model decides
/// what lives how long; every op returns `Result` because a GPU launch can fail.
pub trait Backend: Send + Sync + 'static {
    /// Float storage: f32 on the CPU; on CUDA, bf16 activations and f32 master weights.
    type Tensor: Send + Sync;
    /// Integer storage on the device: token ids, positions, block tables, offsets.
    type Index: Send + Sync;

    fn name(&self) -> &'static str;

    // ---- memory
    fn zeros(&self, len: usize) -> Result<Self::Tensor>;
    fn from_f32(&self, data: &[f32]) -> Result<Self::Tensor>;
    fn to_f32(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    fn index(&self, data: &[u32]) -> Result<Self::Index>;
    fn len(&self, t: &Self::Tensor) -> usize;
    /// `dst[dst_off..dst_off+len] = src[src_off..src_off+len]`.
    fn copy(&self, dst: &mut Self::Tensor, dst_off: usize, src: &Self::Tensor, src_off: usize, len: usize) -> Result<()>;
    /// `t[dst_off..dst_off+len] = t[src_off..src_off+len]` for ranges that do not overlap.
    fn copy_within(&self, t: &mut Self::Tensor, src_off: usize, dst_off: usize, len: usize) -> Result<()>;

    // ---- forward ops
    /// `out[t,:] = table[ids[t],:]`.
    fn embedding(&self, out: &mut Self::Tensor, table: &Self::Tensor, ids: &Self::Index, rows: usize, dim: usize) -> Result<()>;
    /// `out = x / rms(x) * weight`, row by row.
    fn rms_norm(&self, out: &mut Self::Tensor, x: &Self::Tensor, weight: &Self::Tensor, rows: usize, dim: usize, eps: f32) -> Result<()>;
    /// Matrix product, see [`Gemm`].
    fn gemm(&self, out: &mut Self::Tensor, a: &Self::Tensor, b: &Self::Tensor, g: Gemm) -> Result<()>;
    /// `x[r,:] += bias` for each row.
    fn add_bias(&self, x: &mut Self::Tensor, bias: &Self::Tensor, rows: usize, dim: usize) -> Result<()>;
    /// `acc += x`, elementwise.
    fn add(&self, acc: &mut Self::Tensor, x: &Self::Tensor) -> Result<()>;
    /// Rotates `x` (`[rows, n_heads*head_dim]`) in place by each row's position.
    fn rope(&self, x: &mut Self::Tensor, positions: &Self::Index, r: Rope) -> Result<()>;
    /// `out = silu(gate) * up`, elementwise.
    fn swiglu(&self, out: &mut Self::Tensor, gate: &Self::Tensor, up: &Self::Tensor) -> Result<()>;
    /// Writes `k`, `v` rows (`[rows, kv_dim]`) into cache rows `slots[r]`.
    fn kv_cache_write(&self, k_cache: &mut Self::Tensor, v_cache: &mut Self::Tensor, k: &Self::Tensor, v: &Self::Tensor, slots: &Self::Index, rows: usize, kv_dim: usize) -> Result<()>;
    /// Attention of `q` (`[tokens, q_dim]`) over the paged cache; writes `[tokens, q_dim]`.
    fn attention_paged(&self, out: &mut Self::Tensor, q: &Self::Tensor, k_cache: &Self::Tensor, v_cache: &Self::Tensor, p: &PagedAttn<Self>) -> Result<()>;
    /// Causal attention over packed sequences. Writes `out` (`[tokens, q_dim]`) and the softmax
    /// log-sum-exp per token and head (`[tokens, n_heads]`), which the backward pass reuses.
    fn attention_causal(&self, out: &mut Self::Tensor, lse: &mut Self::Tensor, q: &Self::Tensor, k: &Self::Tensor, v: &Self::Tensor, p: &CausalAttn<Self>) -> Result<()>;
    /// Draws one token per row of `logits` (`[rows, vocab]`, `rows = params.len()`).
    fn sample(&self, logits: &Self::Tensor, vocab: usize, params: &[SampleParams]) -> Result<Vec<Sampled>>;
}
