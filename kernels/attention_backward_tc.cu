// attention_causal_backward on tensor cores, for bf16 q, k, v and dO and head dims 16, 32, 64,
// 128 (the trainer's case; attention_backward.cu covers the rest). Same formulas:
//
//   P = exp(scale·Q·Kᵀ - lse),  dS = P ∘ (dO·Vᵀ - D),  D = rowsum(dO ∘ O) (the _delta kernel)
//   dQ = scale·dS·K,  dK = scale·dSᵀ·Q,  dV = Pᵀ·dO
//
// Two kernels, each owning the rows it writes (no atomics, deterministic), 4 warps of 16 rows:
// - _dq_hd{D}: 64 query rows of one head; walks the key tiles up to the diagonal. S = Q·Kᵀ and
//   dP = dO·Vᵀ as in the forward (Q and dO fragments in registers, K and V rows as B
//   fragments), then dQ += dS·K with dS re-packed from the accumulators and K read by
//   ldmatrix.trans.
// - _dkv_hd{D}: 64 key rows of one kv head; walks the query tiles from the diagonal on, for each
//   query head of the group. The scores are formed transposed, Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ (K and V
//   fragments in registers), so that Pᵀ and dSᵀ are already A fragments for dV += Pᵀ·dO and
//   dK += dSᵀ·Q (dO and Q by ldmatrix.trans).
// P and dS are rounded to bf16 for the products (as P is in the forward). Tiles are loaded with
// cp.async and used after a full wait: no prefetch yet. grid = (tokens/64 + n_seqs, heads).
#include "tensor_core.cuh"

// Rows [row0, row0 + 64) of `a` and `b` (same row stride) into sa and sb, as one cp.async group.
template <int D, int LD>
DEVICE void load_pair(bf16* sa, bf16* sb, const bf16* a, const bf16* b, int stride, int row0, int valid) {
    load_tile<D, LD>(sa, a, stride, row0, valid);
    load_tile<D, LD>(sb, b, stride, row0, valid);
    cp_async_commit();
}

// This warp's A fragments of rows [row0, row0 + 64) of `a` and `b`, staged through sa and sb
// (free again on return).
template <int D, int LD>
DEVICE void stage_fragments(uint32_t (*fa)[4], uint32_t (*fb)[4], bf16* sa, bf16* sb, const bf16* a, const bf16* b, int stride, int row0, int valid) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    load_pair<D, LD>(sa, sb, a, b, stride, row0, valid);
    cp_async_wait<0>();
    __syncthreads();
    a_fragments<D, LD>(fa, sa, warp, lane >> 2, lane & 3);
    a_fragments<D, LD>(fb, sb, warp, lane >> 2, lane & 3);
    __syncthreads();
}

// Writes a warp's 16 x D accumulator rows (times `scale`) to rows [row0, row0 + 16) of `dst`
// (row stride `stride`, f32 or bf16), rows at or past `valid` skipped.
template <int D>
DEVICE void store_rows(void* dst, bool bf, int64_t base, int stride, const float (*acc)[4], float scale, int row0, int valid, int g, int t4) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = row0 + g + 8 * r;
        if (row >= valid) continue;
#pragma unroll
        for (int i = 0; i < D / 8; ++i) {
            const int64_t at = base + (int64_t)row * stride + i * 8 + 2 * t4;
            store(dst, bf, at, scale * acc[i][2 * r]);
            store(dst, bf, at + 1, scale * acc[i][2 * r + 1]);
        }
    }
}

template <int D>
DEVICE void attention_backward_dq(const AttentionBackwardParams& p) {
    constexpr int LD = D + 8;
    __shared__ __align__(16) bf16 sK[ATTN_BN * LD];
    __shared__ __align__(16) bf16 sV[ATTN_BN * LD];
    int seq_start, seq_len, tile, n_tiles_seq;
    if (!block_tile(p.cu_seqlens, p.n_seqs, seq_start, seq_len, tile, n_tiles_seq)) return;
    const int q0 = (n_tiles_seq - 1 - tile) * ATTN_BM;  // last tiles (the most keys) first
    const int h = blockIdx.y, kvh = h / (p.n_heads / p.n_kv_heads);
    const int q_stride = p.n_heads * D, kv_stride = p.n_kv_heads * D;
    const bf16* qg = (const bf16*)p.q + (size_t)seq_start * q_stride + h * D;
    const bf16* dog = (const bf16*)p.d_out + (size_t)seq_start * q_stride + h * D;
    const bf16* kg = (const bf16*)p.k + (size_t)seq_start * kv_stride + kvh * D;
    const bf16* vg = (const bf16*)p.v + (size_t)seq_start * kv_stride + kvh * D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;

    // Q and dO fragments, staged in sK and sV.
    uint32_t qf[D / 16][4], dof[D / 16][4];
    stage_fragments<D, LD>(qf, dof, sK, sV, qg, dog, q_stride, q0, seq_len);

    // lse (log2 domain) and D of this lane's two rows; rows past the sequence keep P = 0.
    const bool bf_lse = is_bf16(p.bf16_mask, 8);
    const int rows[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
    float lse2[2], delta[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const bool ok = rows[r] < seq_len;
        const int64_t at = (int64_t)(seq_start + (ok ? rows[r] : 0)) * p.n_heads + h;
        lse2[r] = ok ? load(p.lse, bf_lse, at) * ATTN_LOG2E : INFINITY;
        delta[r] = ok ? p.delta[at] : 0.0f;
    }
    const float scale_log2 = p.scale * ATTN_LOG2E;

    float dq[D / 8][4];
    zero_acc<D / 8>(dq);
    const int n_tiles = (min(q0 + ATTN_BM, seq_len) + ATTN_BN - 1) / ATTN_BN;
    for (int j = 0; j < n_tiles; ++j) {
        const int k0 = j * ATTN_BN;
        load_pair<D, LD>(sK, sV, kg, vg, kv_stride, k0, seq_len);
        cp_async_wait<0>();
        __syncthreads();
        float s[ATTN_BN / 8][4], dp[ATTN_BN / 8][4];
        zero_acc<ATTN_BN / 8>(s);
        zero_acc<ATTN_BN / 8>(dp);
        mma_rows<D, LD>(s, qf, sK, g, t4);
        mma_rows<D, LD>(dp, dof, sV, g, t4);
        // dS = P (dP - D), P = 0 where the key is not visible
#pragma unroll
        for (int nn = 0; nn < ATTN_BN / 8; ++nn) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = k0 + nn * 8 + 2 * t4 + (e & 1), r = e >> 1;
                const float pr = (key <= rows[r] && key < seq_len) ? exp2f(s[nn][e] * scale_log2 - lse2[r]) : 0.0f;
                s[nn][e] = pr * (dp[nn][e] - delta[r]);
            }
        }
        mma_acc_tile<D, LD>(dq, s, sK, lane);
        __syncthreads();  // every warp is done with sK and sV
    }
    const int64_t base = (int64_t)seq_start * q_stride + h * D;
    store_rows<D>(p.dq, is_bf16(p.bf16_mask, 0), base, q_stride, dq, p.scale, q0 + warp * 16, seq_len, g, t4);
}

template <int D>
DEVICE void attention_backward_dkv(const AttentionBackwardParams& p) {
    constexpr int LD = D + 8;
    constexpr int QN = D > 64 ? 32 : 64;  // queries per pass over the scores
    __shared__ __align__(16) bf16 sQ[ATTN_BN * LD];
    __shared__ __align__(16) bf16 sO[ATTN_BN * LD];  // dO
    __shared__ float sLse[ATTN_BN], sDelta[ATTN_BN];
    int seq_start, seq_len, tile, n_tiles_seq;
    if (!block_tile(p.cu_seqlens, p.n_seqs, seq_start, seq_len, tile, n_tiles_seq)) return;
    const int k0 = tile * ATTN_BN;  // first tiles (the most queries) first
    const int kvh = blockIdx.y, group = p.n_heads / p.n_kv_heads;
    const int q_stride = p.n_heads * D, kv_stride = p.n_kv_heads * D;
    const bf16* kg = (const bf16*)p.k + (size_t)seq_start * kv_stride + kvh * D;
    const bf16* vg = (const bf16*)p.v + (size_t)seq_start * kv_stride + kvh * D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
    const bool bf_lse = is_bf16(p.bf16_mask, 8);

    // K and V fragments of this warp's 16 key rows, staged in sQ and sO.
    uint32_t kf[D / 16][4], vf[D / 16][4];
    stage_fragments<D, LD>(kf, vf, sQ, sO, kg, vg, kv_stride, k0, seq_len);

    const int keys[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};
    const float scale_log2 = p.scale * ATTN_LOG2E;
    float dk[D / 8][4], dv[D / 8][4];
    zero_acc<D / 8>(dk);
    zero_acc<D / 8>(dv);

    const int n_q_tiles = (seq_len + ATTN_BM - 1) / ATTN_BM;
    for (int hg = 0; hg < group; ++hg) {
        const int h = kvh * group + hg;
        const bf16* qg = (const bf16*)p.q + (size_t)seq_start * q_stride + h * D;
        const bf16* dog = (const bf16*)p.d_out + (size_t)seq_start * q_stride + h * D;
        for (int i = tile; i < n_q_tiles; ++i) {
            const int q0 = i * ATTN_BM;
            load_pair<D, LD>(sQ, sO, qg, dog, q_stride, q0, seq_len);
            for (int r = threadIdx.x; r < ATTN_BM; r += ATTN_THREADS) {
                const bool ok = q0 + r < seq_len;
                const int64_t at = (int64_t)(seq_start + (ok ? q0 + r : 0)) * p.n_heads + h;
                sLse[r] = ok ? load(p.lse, bf_lse, at) * ATTN_LOG2E : INFINITY;
                sDelta[r] = ok ? p.delta[at] : 0.0f;
            }
            cp_async_wait<0>();
            __syncthreads();
            // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ: rows are this warp's keys, columns the tile's queries,
            // QN of them at a time (32 at head dim 128, which would spill registers with 64).
#pragma unroll
            for (int q_off = 0; q_off < ATTN_BM; q_off += QN) {
                float st[QN / 8][4], dpt[QN / 8][4];
                zero_acc<QN / 8>(st);
                zero_acc<QN / 8>(dpt);
                mma_rows<D, LD, QN / 8>(st, kf, sQ + q_off * LD, g, t4);
                mma_rows<D, LD, QN / 8>(dpt, vf, sO + q_off * LD, g, t4);
#pragma unroll
                for (int nn = 0; nn < QN / 8; ++nn) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int c = q_off + nn * 8 + 2 * t4 + (e & 1), query = q0 + c, key = keys[e >> 1];
                        const float pr = (key <= query && query < seq_len) ? exp2f(st[nn][e] * scale_log2 - sLse[c]) : 0.0f;
                        st[nn][e] = pr;                              // Pᵀ
                        dpt[nn][e] = pr * (dpt[nn][e] - sDelta[c]);  // dSᵀ
                    }
                }
                mma_acc_tile<D, LD, QN / 16>(dv, st, sO + q_off * LD, lane);
                mma_acc_tile<D, LD, QN / 16>(dk, dpt, sQ + q_off * LD, lane);
            }
            __syncthreads();  // every warp is done with sQ, sO, sLse, sDelta
        }
    }
    const int64_t base = (int64_t)seq_start * kv_stride + kvh * D;
    store_rows<D>(p.dk, is_bf16(p.bf16_mask, 1), base, kv_stride, dk, p.scale, k0 + warp * 16, seq_len, g, t4);
    store_rows<D>(p.dv, is_bf16(p.bf16_mask, 2), base, kv_stride, dv, 1.0f, k0 + warp * 16, seq_len, g, t4);
}

extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attention_causal_backward_dq_hd16(const AttentionBackwardParams p) { attention_backward_dq<16>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attention_causal_backward_dq_hd32(const AttentionBackwardParams p) { attention_backward_dq<32>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attention_causal_backward_dq_hd64(const AttentionBackwardParams p) { attention_backward_dq<64>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attention_causal_backward_dq_hd128(const AttentionBackwardParams p) { attention_backward_dq<128>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attention_causal_backward_dkv_hd16(const AttentionBackwardParams p) { attention_backward_dkv<16>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attention_causal_backward_dkv_hd32(const AttentionBackwardParams p) { attention_backward_dkv<32>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attention_causal_backward_dkv_hd64(const AttentionBackwardParams p) { attention_backward_dkv<64>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attention_causal_backward_dkv_hd128(const AttentionBackwardParams p) { attention_backward_dkv<128>(p); }
