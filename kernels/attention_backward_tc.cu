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

// A fragments (16 rows of this warp, D columns) of a tile staged in shared memory.
template <int D, int LD>
DEVICE void a_fragments(uint32_t (*f)[4], const bf16* tile, int warp, int g, int t4) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        const bf16* b = tile + (warp * 16 + g) * LD + kk * 16 + 2 * t4;
        f[kk][0] = lds32(b);
        f[kk][1] = lds32(b + 8 * LD);
        f[kk][2] = lds32(b + 8);
        f[kk][3] = lds32(b + 8 * LD + 8);
    }
}

// acc[nn] (16 x 8·NB per warp, in 8-column blocks) += A (16 x D, fragments) · Bᵀ, B the first
// 8·NB rows of `tile` (rows of D): the product of this warp's rows with those rows.
template <int D, int LD, int NB = ATTN_BN / 8>
DEVICE void mma_rows(float (*acc)[4], const uint32_t (*a)[4], const bf16* tile, int g, int t4) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
        for (int nn = 0; nn < NB; ++nn) {
            const bf16* b = tile + (nn * 8 + g) * LD + kk * 16 + 2 * t4;
            mma_bf16_16816(acc[nn], a[kk], lds32(b), lds32(b + 8));
        }
    }
}

// out (16 x D per warp, in 8-column blocks) += X (16 x 16·KB, accumulator layout) · the first
// 16·KB rows of tile (rows of D), X rounded to bf16 and re-packed as A fragments, the tile read
// by ldmatrix.trans.
template <int D, int LD, int KB = ATTN_BN / 16>
DEVICE void mma_acc_tile(float (*out)[4], const float (*x)[4], const bf16* tile, int lane) {
#pragma unroll
    for (int kk = 0; kk < KB; ++kk) {
        uint32_t a[4];
        a[0] = pack_bf16(x[2 * kk][0], x[2 * kk][1]);
        a[1] = pack_bf16(x[2 * kk][2], x[2 * kk][3]);
        a[2] = pack_bf16(x[2 * kk + 1][0], x[2 * kk + 1][1]);
        a[3] = pack_bf16(x[2 * kk + 1][2], x[2 * kk + 1][3]);
#pragma unroll
        for (int nd = 0; nd < D / 16; ++nd) {
            uint32_t b[4];
            const int mi = lane >> 3;
            ldmatrix_x4_trans(b, tile + (kk * 16 + (mi & 1) * 8 + (lane & 7)) * LD + nd * 16 + (mi >> 1) * 8);
            mma_bf16_16816(out[2 * nd], a, b[0], b[1]);
            mma_bf16_16816(out[2 * nd + 1], a, b[2], b[3]);
        }
    }
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
    load_tile<D, LD>(sK, qg, q_stride, q0, seq_len);
    load_tile<D, LD>(sV, dog, q_stride, q0, seq_len);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    uint32_t qf[D / 16][4], dof[D / 16][4];
    a_fragments<D, LD>(qf, sK, warp, g, t4);
    a_fragments<D, LD>(dof, sV, warp, g, t4);
    __syncthreads();

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
#pragma unroll
    for (int i = 0; i < D / 8; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.0f;
    const int n_tiles = (min(q0 + ATTN_BM, seq_len) + ATTN_BN - 1) / ATTN_BN;
    for (int j = 0; j < n_tiles; ++j) {
        const int k0 = j * ATTN_BN;
        load_tile<D, LD>(sK, kg, kv_stride, k0, seq_len);
        load_tile<D, LD>(sV, vg, kv_stride, k0, seq_len);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
        float s[ATTN_BN / 8][4], dp[ATTN_BN / 8][4];
#pragma unroll
        for (int nn = 0; nn < ATTN_BN / 8; ++nn)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[nn][e] = dp[nn][e] = 0.0f;
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
    load_tile<D, LD>(sQ, kg, kv_stride, k0, seq_len);
    load_tile<D, LD>(sO, vg, kv_stride, k0, seq_len);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    uint32_t kf[D / 16][4], vf[D / 16][4];
    a_fragments<D, LD>(kf, sQ, warp, g, t4);
    a_fragments<D, LD>(vf, sO, warp, g, t4);
    __syncthreads();

    const int keys[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};
    const float scale_log2 = p.scale * ATTN_LOG2E;
    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; ++i) dk[i][0] = dk[i][1] = dk[i][2] = dk[i][3] = dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.0f;

    const int n_q_tiles = (seq_len + ATTN_BM - 1) / ATTN_BM;
    for (int hg = 0; hg < group; ++hg) {
        const int h = kvh * group + hg;
        const bf16* qg = (const bf16*)p.q + (size_t)seq_start * q_stride + h * D;
        const bf16* dog = (const bf16*)p.d_out + (size_t)seq_start * q_stride + h * D;
        for (int i = tile; i < n_q_tiles; ++i) {
            const int q0 = i * ATTN_BM;
            load_tile<D, LD>(sQ, qg, q_stride, q0, seq_len);
            load_tile<D, LD>(sO, dog, q_stride, q0, seq_len);
            cp_async_commit();
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
#pragma unroll
                for (int nn = 0; nn < QN / 8; ++nn)
#pragma unroll
                    for (int e = 0; e < 4; ++e) st[nn][e] = dpt[nn][e] = 0.0f;
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
