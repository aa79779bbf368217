// attention_causal_backward: the gradient of attention_causal over packed sequences (varlen,
// cu_seqlens), grouped-query, from the saved log-sum-exp (cpu/attention_backward.rs is the
// reference):
//
//   P  = exp(scale·Q·Kᵀ - lse)      (causal: key j is visible to query i when j <= i)
//   D  = rowsum(dO ∘ O),  dS = P ∘ (dO·Vᵀ - D)
//   dQ = scale·dS·K,  dK = scale·dSᵀ·Q,  dV = Pᵀ·dO
//
// Three kernels, no atomics (every gradient row is written once, by one warp):
// - attention_causal_backward_delta: D per (token, head), one warp each.
// - attention_causal_backward_dq: one warp per (query token, head) walks the visible keys.
// - attention_causal_backward_dkv: one warp per (key token, kv head) walks the queries that
//   see it, over every query head of its group.
// P and dS are recomputed by both of the last two. The dot products are warp reductions on CUDA
// cores, not tensor cores: a plain first version. A lane holds elements lane, lane+32, ... of a
// head (head_dim <= 128, so at most ATTN_BWD_E per lane).
// Tensors are f32 or bf16 at run time (bf16_mask, params.cuh); math is f32.
#include "common.cuh"

constexpr int ATTN_BWD_E = 4;        // head_dim / 32, at most
constexpr int ATTN_BWD_WARPS = 4;    // warps per block; blockDim.x = 32 * ATTN_BWD_WARPS

// The sequence holding token t: [start, end) from cu_seqlens (binary search).
DEVICE void find_seq(const uint32_t* cu, int n_seqs, int t, int& start, int& end) {
    int lo = 0, hi = n_seqs - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if ((int)cu[mid] <= t) lo = mid;
        else hi = mid - 1;
    }
    start = (int)cu[lo];
    end = (int)cu[lo + 1];
}

// Loads one head's row (head_dim elements at `at`) into a lane's registers (0 past head_dim).
DEVICE void load_row(float* r, const void* p, bool bf, int64_t at, int head_dim, int lane) {
#pragma unroll
    for (int e = 0; e < ATTN_BWD_E; ++e) {
        const int d = lane + 32 * e;
        r[e] = d < head_dim ? load(p, bf, at + d) : 0.0f;
    }
}

DEVICE float dot_row(const float* a, const float* b) {
    float s = 0.0f;
#pragma unroll
    for (int e = 0; e < ATTN_BWD_E; ++e) s += a[e] * b[e];
    return warp_sum(s);
}

extern "C" __global__ void attention_causal_backward_delta(const AttentionBackwardParams p) {
    const int warp = blockIdx.x * ATTN_BWD_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (warp >= p.tokens * p.n_heads) return;
    const bool bf_do = is_bf16(p.bf16_mask, 3), bf_o = is_bf16(p.bf16_mask, 7);
    const int64_t at = (int64_t)warp * p.head_dim;  // [tokens, n_heads, head_dim] = [tokens, q_dim]
    float a[ATTN_BWD_E], b[ATTN_BWD_E];
    load_row(a, p.d_out, bf_do, at, p.head_dim, lane);
    load_row(b, p.out, bf_o, at, p.head_dim, lane);
    const float d = dot_row(a, b);
    if (lane == 0) p.delta[warp] = d;
}

extern "C" __global__ void attention_causal_backward_dq(const AttentionBackwardParams p) {
    const int t = blockIdx.x * ATTN_BWD_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    const int h = blockIdx.y;
    if (t >= p.tokens) return;
    const bool bf_dq = is_bf16(p.bf16_mask, 0), bf_do = is_bf16(p.bf16_mask, 3), bf_q = is_bf16(p.bf16_mask, 4),
               bf_k = is_bf16(p.bf16_mask, 5), bf_v = is_bf16(p.bf16_mask, 6), bf_lse = is_bf16(p.bf16_mask, 8);
    const int hd = p.head_dim, q_dim = p.n_heads * hd, kv_dim = p.n_kv_heads * hd;
    const int kh = h / (p.n_heads / p.n_kv_heads);
    int start, end;
    find_seq(p.cu_seqlens, p.n_seqs, t, start, end);
    if (t >= end) return;  // past the last sequence: left as it is, like the CPU does
    const int64_t qa = (int64_t)t * q_dim + (int64_t)h * hd;
    float q[ATTN_BWD_E], dO[ATTN_BWD_E], dq[ATTN_BWD_E] = {};
    load_row(q, p.q, bf_q, qa, hd, lane);
    load_row(dO, p.d_out, bf_do, qa, hd, lane);
    const float lse = load(p.lse, bf_lse, (int64_t)t * p.n_heads + h);
    const float delta = p.delta[(int64_t)t * p.n_heads + h];
    for (int j = start; j <= t; ++j) {
        const int64_t ka = (int64_t)j * kv_dim + (int64_t)kh * hd;
        float k[ATTN_BWD_E], v[ATTN_BWD_E];
        load_row(k, p.k, bf_k, ka, hd, lane);
        load_row(v, p.v, bf_v, ka, hd, lane);
        const float pr = __expf(p.scale * dot_row(q, k) - lse);
        const float ds = pr * (dot_row(dO, v) - delta);
#pragma unroll
        for (int e = 0; e < ATTN_BWD_E; ++e) dq[e] += ds * k[e];
    }
#pragma unroll
    for (int e = 0; e < ATTN_BWD_E; ++e) {
        const int d = lane + 32 * e;
        if (d < hd) store(p.dq, bf_dq, qa + d, p.scale * dq[e]);
    }
}

extern "C" __global__ void attention_causal_backward_dkv(const AttentionBackwardParams p) {
    const int j = blockIdx.x * ATTN_BWD_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    const int kh = blockIdx.y;
    if (j >= p.tokens) return;
    const bool bf_dk = is_bf16(p.bf16_mask, 1), bf_dv = is_bf16(p.bf16_mask, 2), bf_do = is_bf16(p.bf16_mask, 3),
               bf_q = is_bf16(p.bf16_mask, 4), bf_k = is_bf16(p.bf16_mask, 5), bf_v = is_bf16(p.bf16_mask, 6),
               bf_lse = is_bf16(p.bf16_mask, 8);
    const int hd = p.head_dim, q_dim = p.n_heads * hd, kv_dim = p.n_kv_heads * hd;
    const int group = p.n_heads / p.n_kv_heads;
    int start, end;
    find_seq(p.cu_seqlens, p.n_seqs, j, start, end);
    if (j >= end) return;  // past the last sequence: left as it is, like the CPU does
    const int64_t ka = (int64_t)j * kv_dim + (int64_t)kh * hd;
    float k[ATTN_BWD_E], v[ATTN_BWD_E], dk[ATTN_BWD_E] = {}, dv[ATTN_BWD_E] = {};
    load_row(k, p.k, bf_k, ka, hd, lane);
    load_row(v, p.v, bf_v, ka, hd, lane);
    for (int i = j; i < end; ++i) {
        for (int g = 0; g < group; ++g) {
            const int h = kh * group + g;
            const int64_t qa = (int64_t)i * q_dim + (int64_t)h * hd;
            float q[ATTN_BWD_E], dO[ATTN_BWD_E];
            load_row(q, p.q, bf_q, qa, hd, lane);
            load_row(dO, p.d_out, bf_do, qa, hd, lane);
            const float lse = load(p.lse, bf_lse, (int64_t)i * p.n_heads + h);
            const float delta = p.delta[(int64_t)i * p.n_heads + h];
            const float pr = __expf(p.scale * dot_row(q, k) - lse);
            const float ds = pr * (dot_row(dO, v) - delta);
#pragma unroll
            for (int e = 0; e < ATTN_BWD_E; ++e) {
                dv[e] += pr * dO[e];
                dk[e] += ds * q[e];
            }
        }
    }
#pragma unroll
    for (int e = 0; e < ATTN_BWD_E; ++e) {
        const int d = lane + 32 * e;
        if (d < hd) {
            store(p.dk, bf_dk, ka + d, p.scale * dk[e]);
            store(p.dv, bf_dv, ka + d, dv[e]);
        }
    }
}
