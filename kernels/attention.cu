// attention_causal: flash-style causal attention over packed sequences (varlen, cu_seqlens),
// grouped-query, bf16 tensor cores (mma.sync m16n8k16, f32 accumulation), online softmax in the
// log2 domain; writes the output and the log-sum-exp per token and head.
//
// Block = 4 warps = 64 query rows of one head of one sequence; each warp owns 16 rows. Keys come
// in tiles of 64: S = Q K^T (Q fragments stay in registers), mask, rescale, O += P V with P
// re-packed from the S accumulators into A fragments (no trip through shared memory) and V read
// with ldmatrix.trans. K(j+1) streams in with cp.async while P V(j) runs, V(j+1) while S(j+1) runs.
// The Q tile is staged in the V buffer before V(0) arrives, so shared memory is 2 * 64 rows.
// grid = (tokens/64 + n_seqs, n_heads): blockIdx.x is a (sequence, tile) pair, last tiles first
// (they have the most keys), and blocks past the last tile return at once.
#include "tensor_core.cuh"

template <int D>
DEVICE void attention_causal_impl(const AttentionCausalParams& p) {
    constexpr int LD = D + 8;  // +16 bytes per row: conflict-free fragment loads
    __shared__ __align__(16) bf16 sK[ATTN_BN * LD];
    __shared__ __align__(16) bf16 sV[ATTN_BN * LD];

    // Which sequence and query tile this block owns: last tiles (the most keys) first.
    int seq_start, seq_len, tile, n_tiles_seq;
    if (!block_tile(p.cu_seqlens, p.n_seqs, seq_start, seq_len, tile, n_tiles_seq)) return;
    const int q0 = (n_tiles_seq - 1 - tile) * ATTN_BM;

    const int h = blockIdx.y;
    const int kvh = h / (p.n_heads / p.n_kv_heads);
    const int q_stride = p.n_heads * D, kv_stride = p.n_kv_heads * D;
    const bf16* qg = p.q + (size_t)seq_start * q_stride + h * D;
    const bf16* kg = p.k + (size_t)seq_start * kv_stride + kvh * D;
    const bf16* vg = p.v + (size_t)seq_start * kv_stride + kvh * D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t4 = lane & 3;

    // Q (staged in sV) and K(0).
    load_tile<D, LD>(sV, qg, q_stride, q0, seq_len);
    load_tile<D, LD>(sK, kg, kv_stride, 0, seq_len);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    uint32_t qf[D / 16][4];
    a_fragments<D, LD>(qf, sV, warp, g, t4);
    __syncthreads();
    load_tile<D, LD>(sV, vg, kv_stride, 0, seq_len);
    cp_async_commit();

    float o[D / 8][4];
    zero_acc<D / 8>(o);
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
    const float scale_log2 = p.scale * ATTN_LOG2E;
    const int row0 = q0 + warp * 16 + g, row1 = row0 + 8;
    const int n_tiles = (min(q0 + ATTN_BM, seq_len) + ATTN_BN - 1) / ATTN_BN;

    for (int j = 0; j < n_tiles; ++j) {
        const int k0 = j * ATTN_BN;
        float s[ATTN_BN / 8][4];
        zero_acc<ATTN_BN / 8>(s);
        mma_rows<D, LD>(s, qf, sK, g, t4);
        __syncthreads();  // every warp is done with sK
        if (j + 1 < n_tiles) load_tile<D, LD>(sK, kg, kv_stride, k0 + ATTN_BN, seq_len);
        cp_async_commit();

        // Causal and length mask, then the online softmax update (log2 domain).
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int nn = 0; nn < ATTN_BN / 8; ++nn) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = k0 + nn * 8 + 2 * t4 + (e & 1);
                const int row = e < 2 ? row0 : row1;
                s[nn][e] = (key <= row && key < seq_len) ? s[nn][e] * scale_log2 : -INFINITY;
                mx[e >> 1] = fmaxf(mx[e >> 1], s[nn][e]);
            }
        }
        float corr[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            const float m_new = fmaxf(m_run[r], mx[r]);  // finite: key 0 is visible to every row
            corr[r] = exp2f(m_run[r] - m_new);
            m_run[r] = m_new;
            l_run[r] *= corr[r];
        }
#pragma unroll
        for (int nn = 0; nn < ATTN_BN / 8; ++nn) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[nn][e] = exp2f(s[nn][e] - m_run[e >> 1]);
                l_run[e >> 1] += s[nn][e];
            }
        }
#pragma unroll
        for (int i = 0; i < D / 8; ++i) {
            o[i][0] *= corr[0];
            o[i][1] *= corr[0];
            o[i][2] *= corr[1];
            o[i][3] *= corr[1];
        }

        cp_async_wait<1>();  // V(j) has landed (K(j+1) may still be in flight)
        __syncthreads();
        mma_acc_tile<D, LD>(o, s, sV, lane);
        __syncthreads();  // every warp is done with sV
        if (j + 1 < n_tiles) load_tile<D, LD>(sV, vg, kv_stride, k0 + ATTN_BN, seq_len);
        cp_async_commit();
        cp_async_wait<1>();  // K(j+1) has landed
        __syncthreads();
    }

    // Normalise, write the output rows and the log-sum-exp.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
        l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
    }
    const float inv[2] = {1.0f / l_run[0], 1.0f / l_run[1]};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = r == 0 ? row0 : row1;
        if (row >= seq_len) continue;
        const size_t tok = (size_t)seq_start + row;
        bf16* out = p.out + tok * q_stride + h * D;
#pragma unroll
        for (int i = 0; i < D / 8; ++i)
            *reinterpret_cast<uint32_t*>(out + i * 8 + 2 * t4) = pack_bf16(o[i][2 * r] * inv[r], o[i][2 * r + 1] * inv[r]);
        if (t4 == 0) {
            const float lse = (m_run[r] + log2f(l_run[r])) * ATTN_LN2;
            if (p.lse) p.lse[tok * p.n_heads + h] = lse;
            else p.lse_bf16[tok * p.n_heads + h] = to_bf16(lse);
        }
    }
}

extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attention_causal_hd16(const AttentionCausalParams p) { attention_causal_impl<16>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attention_causal_hd32(const AttentionCausalParams p) { attention_causal_impl<32>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attention_causal_hd64(const AttentionCausalParams p) { attention_causal_impl<64>(p); }
extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attention_causal_hd128(const AttentionCausalParams p) { attention_causal_impl<128>(p); }
