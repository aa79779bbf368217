// One params struct per kernel, passed by value as the kernel's only argument. build.rs reads
// this file and generates the #[repr(C)] Rust mirror (u64 for every pointer), and checks both
// layouts with static asserts. Keep to `TYPE NAME;` fields of fixed-size types.
#pragma once
#include <cstdint>
#include <cstddef>
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;

/// out[t,:] = table[ids[t],:]; rows whose id is out of range are written as zeros.
struct EmbeddingParams {
    bf16* out;
    const bf16* table;
    const uint32_t* ids;
    int32_t rows;
    int32_t dim;
    int32_t vocab;
};

/// out = x / rms(x) * weight over rows of `dim`; also the per-head q/k norm (rows = tokens*heads).
struct RmsNormParams {
    bf16* out;
    const bf16* x;
    const bf16* weight;
    int32_t rows;
    int32_t dim;
    float eps;
};

/// residual += x; out = residual / rms(residual) * weight (residual is rounded to bf16 first).
struct AddRmsNormParams {
    bf16* out;
    bf16* residual;
    const bf16* x;
    const bf16* weight;
    int32_t rows;
    int32_t dim;
    float eps;
};

/// x[rows, n_heads*head_dim] rotated in place (Hugging Face rotate_half layout).
struct RopeParams {
    bf16* x;
    const uint32_t* positions;
    int32_t rows;
    int32_t n_heads;
    int32_t head_dim;
    float theta;
};

/// out = silu(gate) * up.
struct SwigluParams {
    bf16* out;
    const bf16* gate;
    const bf16* up;
    int64_t n;
};

/// acc += x (n elements); with `dim` > 0, x is a bias of `dim` broadcast over rows.
struct AddParams {
    bf16* acc;
    const bf16* x;
    int64_t n;
    int32_t dim;
};

/// Writes rows of k and v into cache rows slots[r].
struct KvCacheWriteParams {
    bf16* k_cache;
    bf16* v_cache;
    const bf16* k;
    const bf16* v;
    const uint32_t* slots;
    int32_t rows;
    int32_t kv_dim;
};

/// f32 <-> bf16.
struct CastParams {
    void* out;
    const void* src;
    int64_t n;
};

/// Causal attention over packed sequences (cu_seqlens), flash-style. lse is f32 [tokens, n_heads]
/// (lse_bf16 when the caller's buffer is bf16; exactly one of the two is set).
struct AttentionCausalParams {
    bf16* out;
    float* lse;
    bf16* lse_bf16;
    const bf16* q;
    const bf16* k;
    const bf16* v;
    const uint32_t* cu_seqlens;
    int32_t tokens;
    int32_t n_seqs;
    int32_t n_heads;
    int32_t n_kv_heads;
    float scale;
};

/// Attention of query tokens over the paged KV cache, split over the context (split-KV).
/// Each split writes its partial output (f32, unnormalised by nothing: already divided by its
/// own sum) and log-sum-exp; attention_paged_merge combines them. With n_splits == 1 the first
/// kernel writes `out` directly.
struct AttentionPagedParams {
    bf16* out;
    float* part_out;
    float* part_lse;
    const bf16* q;
    const bf16* k_cache;
    const bf16* v_cache;
    const uint32_t* positions;
    const uint32_t* token_seq;
    const uint32_t* block_tables;
    int32_t tokens;
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t block_size;
    int32_t max_blocks;
    int32_t n_splits;
    int32_t split_len;
    float scale;
};

/// One row's sampling settings, as the sampling kernel reads them (array of rows on the device).
struct SampleRow {
    float temperature;
    int32_t top_k;
    float top_p;
    float min_p;
    uint64_t seed;
    uint32_t stream;
    uint32_t step;
};

/// Samples one token per row of logits (f32 [rows, vocab], or bf16 when logits_bf16 is set).
struct SampleParams {
    uint32_t* tokens;
    float* logprobs;
    const float* logits;
    const bf16* logits_bf16;
    const SampleRow* rows_cfg;
    int32_t rows;
    int32_t vocab;
};

/// Philox4x32-10 of n (counter, key) pairs: counter[4*i..], key[2*i..] -> out[4*i..].
struct PhiloxParams {
    uint32_t* out;
    const uint32_t* counter;
    const uint32_t* key;
    int32_t n;
};

// ---- backward ops and the optimizer. Their tensors are f32 or bf16, chosen at run time: bit i
// of `bf16_mask` is set when the i-th tensor pointer of the struct (the `void*` ones, counting
// from 0 in declaration order) points to bf16, clear for f32. Index and scratch pointers come
// after them and have no bit. Math is f32 either way.

/// d_table[ids[t],:] += d_out[t,:] (atomic adds; rows whose id is out of range are skipped).
struct EmbeddingBackwardParams {
    void* d_table;
    const void* d_out;
    const uint32_t* ids;
    int32_t rows;
    int32_t dim;
    int32_t vocab;
    uint32_t bf16_mask;
};

/// dx += ∂out/∂x · d_out row by row; d_weight += sum over rows of d_out · x / rms(x).
struct RmsNormBackwardParams {
    void* dx;
    void* d_weight;
    const void* d_out;
    const void* x;
    const void* weight;
    int32_t rows;
    int32_t dim;
    float eps;
    uint32_t bf16_mask;
};

/// d_bias += column sums of dx ([rows, dim]).
struct AddBiasBackwardParams {
    void* d_bias;
    const void* dx;
    int32_t rows;
    int32_t dim;
    uint32_t bf16_mask;
};

/// dx ([rows, n_heads*head_dim]) rotated in place by each row's negative angle.
struct RopeBackwardParams {
    void* x;
    const uint32_t* positions;
    int32_t rows;
    int32_t n_heads;
    int32_t head_dim;
    float theta;
    uint32_t bf16_mask;
};

/// d_gate = d_out · up · silu'(gate), d_up = d_out · silu(gate) (n elements, overwritten).
struct SwigluBackwardParams {
    void* d_gate;
    void* d_up;
    const void* d_out;
    const void* gate;
    const void* up;
    int64_t n;
    uint32_t bf16_mask;
};

/// acc[0] += sum(x²) over n elements (one atomic add per block).
struct SumSquaresParams {
    void* acc;
    const void* x;
    int64_t n;
    uint32_t bf16_mask;
};

/// One AdamW step (PyTorch semantics) over n elements. The host computes the step-dependent
/// scalars as the CPU backend does: decay = 1 - lr·wd, step_size = lr / (1 - beta1^t),
/// bc2_sqrt = sqrt(1 - beta2^t).
struct AdamwParams {
    void* param;
    const void* grad;
    void* m;
    void* v;
    int64_t n;
    float beta1;
    float beta2;
    float eps;
    float decay;
    float step_size;
    float bc2_sqrt;
    float grad_scale;
    uint32_t bf16_mask;
};

/// Gradient of attention_causal (attention_backward.cu): writes dq [tokens, q_dim], dk and dv
/// [tokens, kv_dim] from d_out, q, k, v, out and lse ([tokens, n_heads], natural log). `delta`
/// is f32 scratch of [tokens, n_heads] (rowsum(d_out ∘ out)). bf16_mask bits: 0 dq, 1 dk, 2 dv,
/// 3 d_out, 4 q, 5 k, 6 v, 7 out, 8 lse.
struct AttentionBackwardParams {
    void* dq;
    void* dk;
    void* dv;
    const void* d_out;
    const void* q;
    const void* k;
    const void* v;
    const void* out;
    const void* lse;
    float* delta;
    const uint32_t* cu_seqlens;
    int32_t tokens;
    int32_t n_seqs;
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t head_dim;
    float scale;
    uint32_t bf16_mask;
};

// ---- the token-level losses (loss.cu). The per-row tensors and the outputs are f32 or bf16
// (bf16_mask, as above); logits, d_logits and stats are the op's own scratch.

/// One chunk of `n` active rows of policy_loss or cross_entropy: `rows[i]` is chunk row i's
/// index into the per-row tensors, `logits` its f32 logits [n, vocab], overwritten with
/// exp(z - max z). Writes logp[rows[i]], adds into `stats` (f32 scratch, slots as LossStat),
/// and where `d_logits` is set writes dL/dlogits [n, vocab] in bf16. Absent inputs are null.
/// bf16_mask bits: 0 logp, 1 weights, 2 advantages, 3 old_logp, 4 ref_logp, 5 rollout_logp.
/// kl_estimator 1, 2, 3 (k1, k2, k3); flags: 1 dual clip on, 2 TIS cap on.
struct LossChunkParams {
    void* logp;
    const void* weights;
    const void* advantages;
    const void* old_logp;
    const void* ref_logp;
    const void* rollout_logp;
    float* logits;
    bf16* d_logits;
    float* stats;
    const uint32_t* targets;
    const uint32_t* rows;
    int32_t n;
    int32_t vocab;
    float inv_t;
    float clip_low;
    float clip_high;
    float dual_clip;
    float kl_coef;
    float tis_cap;
    int32_t kl_estimator;
    uint32_t flags;
    uint32_t bf16_mask;
};

/// dst[dst_rows[i], :] = src[src_rows[i], :] for i < n rows of `dim` (a null index is the
/// identity): gathers a loss chunk's hidden rows, scatters its d_hidden rows. bf16_mask bits:
/// 0 dst, 1 src.
struct LossCopyRowsParams {
    void* dst;
    const void* src;
    const uint32_t* dst_rows;
    const uint32_t* src_rows;
    int32_t n;
    int32_t dim;
    uint32_t bf16_mask;
};

/// Writes a loss op's statistics from its f32 scratch into `out` (bf16_mask bit 0), the ratio
/// extremes decoded, or both set to `ratio_value` when `set_ratio` is non-zero.
struct LossStatsParams {
    void* out;
    const float* stats;
    float ratio_value;
    int32_t set_ratio;
    uint32_t bf16_mask;
};
