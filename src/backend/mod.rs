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

/// How the policy-gradient objective turns log-probabilities into a loss (the per-token part;
/// how tokens are weighted into one number is the caller's `weights`, see `rl::objective`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolicyLossParams {
    /// Divides the logits before the log-softmax (the sampling temperature).
    pub temperature: f32,
    /// The ratio is clipped to `[1 - clip_low, 1 + clip_high]` (clip-higher when they differ).
    pub clip_low: f32,
    pub clip_high: f32,
    /// Dual-clip constant `c > 1`: for negative advantages the loss is capped at `-A * c`.
    pub dual_clip: Option<f32>,
    /// Weight of the KL penalty to the reference policy (ignored without `ref_logp`).
    pub kl_coef: f32,
    pub kl_estimator: KlEstimator,
    /// Truncated importance sampling: the loss of each token is multiplied by
    /// `min(exp(old_logp - rollout_logp), cap)` (ignored without `rollout_logp`).
    pub tis_cap: Option<f32>,
}

/// Estimators of `KL(policy || reference)` from one sample, with `d = ref_logp - logp`
/// (Schulman's k1, k2, k3): `-d`, `d²/2`, `exp(d) - d - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlEstimator {
    K1,
    K2,
    K3,
}

/// The rows a token-level loss reads: hidden states (`[rows, dim]`, after the final norm), the
/// output head (`[vocab, dim]`), the target token of each row and the row's weight in the loss.
/// Rows of weight 0 are skipped (their log-prob is written as 0). The logits are formed `chunk`
/// active rows at a time, so `[rows, vocab]` never exists whole.
pub struct LossRows<'a, B: Backend + ?Sized> {
    pub rows: usize,
    pub dim: usize,
    pub vocab: usize,
    pub chunk: usize,
    pub hidden: &'a B::Tensor,
    pub head: &'a B::Tensor,
    pub targets: &'a B::Index,
    pub weights: &'a B::Tensor,
}

/// Inputs of [`Backend::policy_loss`], per row: the advantage, optionally the log-prob under
/// the policy that the ratio is taken against, under a reference policy (KL penalty) and under
/// the rollout engine (truncated importance sampling).
pub struct PolicyLoss<'a, B: Backend + ?Sized> {
    pub rows: LossRows<'a, B>,
    pub advantages: &'a B::Tensor,
    /// `None` takes each row's current log-prob, detached: the on-policy case, where the ratio
    /// is 1 and the gradient is `-A · ∇logp`, without a separate pass for old log-probs.
    pub old_logp: Option<&'a B::Tensor>,
    pub ref_logp: Option<&'a B::Tensor>,
    pub rollout_logp: Option<&'a B::Tensor>,
    pub params: PolicyLossParams,
}

/// Inputs of [`Backend::cross_entropy`]: `loss = -sum(weights * logp)`.
pub struct CrossEntropy<'a, B: Backend + ?Sized> {
    pub rows: LossRows<'a, B>,
    pub temperature: f32,
}

/// Where a loss op writes its gradients: `d_hidden` (`[rows, dim]`) is overwritten, `d_head`
/// (`[vocab, dim]`) accumulated into.
pub struct LossGrads<'a, B: Backend + ?Sized> {
    pub d_hidden: &'a mut B::Tensor,
    pub d_head: &'a mut B::Tensor,
}

/// Slots of the statistics a loss op writes (`[LOSS_STATS]`). Everything except `Loss` and the
/// ratio extremes is a sum over the active rows, so micro-batches combine by addition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossStat {
    /// `sum(weights * per-token loss)`: the loss itself when the weights are normalised.
    Loss,
    /// Active rows (weight ≠ 0).
    Tokens,
    /// Tokens where the clipped branch is active below (`A < 0`) and above (`A > 0`).
    ClipLow,
    ClipHigh,
    /// Tokens capped by the dual clip.
    DualClip,
    /// Sum of the KL estimate to the reference.
    Kl,
    /// Sum of the entropy of the tempered distribution.
    Entropy,
    RatioSum,
    RatioMin,
    RatioMax,
    /// Sum of the truncated importance weights, tokens where the cap applied, and the k3
    /// estimate of `KL(rollout || old)` (the rollout/trainer mismatch).
    TisWeight,
    TisCapped,
    Mismatch,
}

pub const LOSS_STATS: usize = LossStat::Mismatch as usize + 1;

/// One AdamW step with PyTorch semantics (decoupled weight decay, bias correction) over one
/// parameter; the gradient is multiplied by `grad_scale` first (global-norm clipping).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1-based step count, for bias correction.
    pub step: u64,
    pub grad_scale: f32,
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

/// The error of an op a backend does not implement (yet): the training ops have defaults that
/// return it, so a backend can be brought up op by op.
fn unsupported(backend: &str, op: &str) -> Result<()> {
    anyhow::bail!("the {backend} backend does not implement {op}")
}

/// The op set. Every op writes its outputs into buffers the caller owns, so the model decides
/// what lives how long; every op returns `Result` because a GPU launch can fail.
pub trait Backend: Send + Sync + 'static {
    /// Float storage: f32 on the CPU; on CUDA, bf16 (activations and the weights the kernels
    /// read) or f32 (gradients, optimizer state, master weights, the loss ops' per-row data).
    type Tensor: Send + Sync;
    /// Integer storage on the device: token ids, positions, block tables, offsets.
    type Index: Send + Sync;

    fn name(&self) -> &'static str;

    // ---- memory
    /// Zeros in the compute storage type (bf16 on CUDA).
    fn zeros(&self, len: usize) -> Result<Self::Tensor>;
    /// `data` in the compute storage type (rounded to bf16 on CUDA).
    #[allow(clippy::wrong_self_convention)] // an upload: the backend is the receiver
    fn from_f32(&self, data: &[f32]) -> Result<Self::Tensor>;
    /// Zeros stored as f32 whatever the compute type: for what must not round (gradients,
    /// optimizer moments, master weights, the loss ops' per-row inputs and outputs). The ops
    /// that accept f32 operands say so; on the CPU every tensor is f32 and this is `zeros`.
    fn zeros_f32(&self, len: usize) -> Result<Self::Tensor> {
        self.zeros(len)
    }
    /// `data` stored as f32, exactly (see [`Backend::zeros_f32`]).
    #[allow(clippy::wrong_self_convention)] // an upload: the backend is the receiver
    fn from_f32_exact(&self, data: &[f32]) -> Result<Self::Tensor> {
        self.from_f32(data)
    }
    /// Whether the compute storage type is narrower than f32 (bf16 on CUDA). The trainer then
    /// keeps an f32 master copy of each parameter, updates it and refreshes the compute copy
    /// with [`Backend::cast`] (`rl::optimizer`); otherwise it updates the parameters in place.
    fn needs_master_weights(&self) -> bool {
        false
    }
    /// `dst[..len(src)] = src`, converted to `dst`'s storage type (f32 ↔ bf16 on CUDA).
    fn cast(&self, dst: &mut Self::Tensor, src: &Self::Tensor) -> Result<()> {
        let n = self.len(src);
        self.copy(dst, 0, src, 0, n)
    }
    fn to_f32(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    fn index(&self, data: &[u32]) -> Result<Self::Index>;
    fn len(&self, t: &Self::Tensor) -> usize;
    /// `dst[dst_off..dst_off+len] = src[src_off..src_off+len]`.
    fn copy(&self, dst: &mut Self::Tensor, dst_off: usize, src: &Self::Tensor, src_off: usize, len: usize) -> Result<()>;
    /// Sets every element of `x` to `value` (zeroing gradients kept across steps).
    #[allow(unused_variables)]
    fn fill(&self, x: &mut Self::Tensor, value: f32) -> Result<()> {
        unsupported(self.name(), "fill")
    }
    /// `t[dst_off..dst_off+len] = t[src_off..src_off+len]` for ranges that do not overlap.
    fn copy_within(&self, t: &mut Self::Tensor, src_off: usize, dst_off: usize, len: usize) -> Result<()>;

    // ---- forward ops
    /// `out[t,:] = table[ids[t],:]`.
    fn embedding(&self, out: &mut Self::Tensor, table: &Self::Tensor, ids: &Self::Index, rows: usize, dim: usize) -> Result<()>;
    /// Gradient of [`Backend::embedding`]: `d_table[ids[t],:] += d_out[t,:]`.
    #[allow(unused_variables)]
    fn embedding_backward(&self, d_table: &mut Self::Tensor, d_out: &Self::Tensor, ids: &Self::Index, rows: usize, dim: usize) -> Result<()> {
        unsupported(self.name(), "embedding_backward")
    }
    /// `out = x / rms(x) * weight`, row by row.
    fn rms_norm(&self, out: &mut Self::Tensor, x: &Self::Tensor, weight: &Self::Tensor, rows: usize, dim: usize, eps: f32) -> Result<()>;
    /// Gradient of [`Backend::rms_norm`] given `d_out`: `dx += ∂/∂x`, `d_weight += ∂/∂weight`.
    #[allow(clippy::too_many_arguments)]
    #[allow(unused_variables)]
    fn rms_norm_backward(&self, dx: &mut Self::Tensor, d_weight: &mut Self::Tensor, d_out: &Self::Tensor, x: &Self::Tensor, weight: &Self::Tensor, rows: usize, dim: usize, eps: f32) -> Result<()> {
        unsupported(self.name(), "rms_norm_backward")
    }
    /// Matrix product, see [`Gemm`].
    fn gemm(&self, out: &mut Self::Tensor, a: &Self::Tensor, b: &Self::Tensor, g: Gemm) -> Result<()>;
    /// `x[r,:] += bias` for each row.
    fn add_bias(&self, x: &mut Self::Tensor, bias: &Self::Tensor, rows: usize, dim: usize) -> Result<()>;
    /// Gradient of [`Backend::add_bias`]: `d_bias += ` the column sums of `dx` (`[rows, dim]`).
    #[allow(unused_variables)]
    fn add_bias_backward(&self, d_bias: &mut Self::Tensor, dx: &Self::Tensor, rows: usize, dim: usize) -> Result<()> {
        unsupported(self.name(), "add_bias_backward")
    }
    /// `acc += x`, elementwise.
    fn add(&self, acc: &mut Self::Tensor, x: &Self::Tensor) -> Result<()>;
    /// Rotates `x` (`[rows, n_heads*head_dim]`) in place by each row's position.
    fn rope(&self, x: &mut Self::Tensor, positions: &Self::Index, r: Rope) -> Result<()>;
    /// Gradient of [`Backend::rope`]: rotates `dx` in place by each row's negative angle.
    #[allow(unused_variables)]
    fn rope_backward(&self, dx: &mut Self::Tensor, positions: &Self::Index, r: Rope) -> Result<()> {
        unsupported(self.name(), "rope_backward")
    }
    /// `out = silu(gate) * up`, elementwise.
    fn swiglu(&self, out: &mut Self::Tensor, gate: &Self::Tensor, up: &Self::Tensor) -> Result<()>;
    /// Gradient of [`Backend::swiglu`]: writes `d_gate` and `d_up`.
    #[allow(unused_variables)]
    fn swiglu_backward(&self, d_gate: &mut Self::Tensor, d_up: &mut Self::Tensor, d_out: &Self::Tensor, gate: &Self::Tensor, up: &Self::Tensor) -> Result<()> {
        unsupported(self.name(), "swiglu_backward")
    }
    /// Writes `k`, `v` rows (`[rows, kv_dim]`) into cache rows `slots[r]`.
    #[allow(clippy::too_many_arguments)]
    fn kv_cache_write(&self, k_cache: &mut Self::Tensor, v_cache: &mut Self::Tensor, k: &Self::Tensor, v: &Self::Tensor, slots: &Self::Index, rows: usize, kv_dim: usize) -> Result<()>;
    /// Attention of `q` (`[tokens, q_dim]`) over the paged cache; writes `[tokens, q_dim]`.
    fn attention_paged(&self, out: &mut Self::Tensor, q: &Self::Tensor, k_cache: &Self::Tensor, v_cache: &Self::Tensor, p: &PagedAttn<Self>) -> Result<()>;
    /// Causal attention over packed sequences. Writes `out` (`[tokens, q_dim]`) and the softmax
    /// log-sum-exp per token and head (`[tokens, n_heads]`), which the backward pass reuses.
    fn attention_causal(&self, out: &mut Self::Tensor, lse: &mut Self::Tensor, q: &Self::Tensor, k: &Self::Tensor, v: &Self::Tensor, p: &CausalAttn<Self>) -> Result<()>;
    /// Gradient of [`Backend::attention_causal`] from its inputs, its output `out` and `lse`:
    /// writes `dq` (`[tokens, q_dim]`), `dk` and `dv` (`[tokens, kv_dim]`).
    #[allow(clippy::too_many_arguments)]
    #[allow(unused_variables)]
    fn attention_causal_backward(&self, dq: &mut Self::Tensor, dk: &mut Self::Tensor, dv: &mut Self::Tensor, d_out: &Self::Tensor, q: &Self::Tensor, k: &Self::Tensor, v: &Self::Tensor, out: &Self::Tensor, lse: &Self::Tensor, p: &CausalAttn<Self>) -> Result<()> {
        unsupported(self.name(), "attention_causal_backward")
    }

    // ---- losses (chunked over rows: the `[rows, vocab]` logits never exist whole)
    /// The clipped policy-gradient objective with optional KL penalty and truncated importance
    /// weights. Writes each row's log-prob (`[rows]`) and the statistics (`[LOSS_STATS]`, see
    /// [`LossStat`]); with `grads`, also the gradient of `Loss`.
    #[allow(unused_variables)]
    fn policy_loss(&self, logp: &mut Self::Tensor, stats: &mut Self::Tensor, grads: Option<LossGrads<Self>>, p: &PolicyLoss<Self>) -> Result<()> {
        unsupported(self.name(), "policy_loss")
    }
    /// Weighted next-token cross-entropy, `-sum(weights * logp)`, with the same outputs.
    #[allow(unused_variables)]
    fn cross_entropy(&self, logp: &mut Self::Tensor, stats: &mut Self::Tensor, grads: Option<LossGrads<Self>>, p: &CrossEntropy<Self>) -> Result<()> {
        unsupported(self.name(), "cross_entropy")
    }

    // ---- optimizer
    /// `acc[0] += sum(x²)` (for the global gradient norm without a sync per parameter).
    #[allow(unused_variables)]
    fn sum_squares(&self, acc: &mut Self::Tensor, x: &Self::Tensor) -> Result<()> {
        unsupported(self.name(), "sum_squares")
    }
    /// One AdamW step over one parameter and its moments, see [`AdamW`].
    #[allow(unused_variables)]
    fn adamw(&self, param: &mut Self::Tensor, grad: &Self::Tensor, m: &mut Self::Tensor, v: &mut Self::Tensor, p: AdamW) -> Result<()> {
        unsupported(self.name(), "adamw")
    }

    // ---- sampling
    /// Draws one token per row of `logits` (`[rows, vocab]`, `rows = params.len()`).
    fn sample(&self, logits: &Self::Tensor, vocab: usize, params: &[SampleParams]) -> Result<Vec<Sampled>>;
}
