// attention_paged: query tokens over the paged KV cache (decode, and chunked prefill), and
// kv_cache_write, which fills that cache.
//
// Cache row of (sequence s, position j): block_tables[s * max_blocks + j / block_size] *
// block_size + j % block_size; each row holds n_kv_heads * head_dim values.
//
// Split-KV: grid = (tokens, n_kv_heads * head_chunks, n_splits). A block takes up to G query heads
// (G = 1, 2, 4 or 8, the smallest that holds the group, so registers scale with the group) that
// share one KV head and one slice of the context, so each K/V row is read once for all of them. In a warp, D/8 lanes hold one key (16 bytes each), so a warp reads 32/(D/8) keys at once,
// coalesced; the next key's K and V are loaded before the current one is used. Scores live in the log2 domain (q is pre-scaled by scale*log2(e)). Each split writes
// its normalised output and log-sum-exp; attention_paged_merge combines the splits.
#include "common.cuh"

constexpr int PAGED_WARPS = 4;
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;

extern "C" __global__ void kv_cache_write(const KvCacheWriteParams p) {
    const int r = blockIdx.x;
    if (r >= p.rows) return;
    const size_t dst = (size_t)p.slots[r] * p.kv_dim, src = (size_t)r * p.kv_dim;
    for (int i = threadIdx.x; i < p.kv_dim; i += blockDim.x) {
        p.k_cache[dst + i] = p.k[src + i];
        p.v_cache[dst + i] = p.v[src + i];
    }
}

DEVICE void load8(const bf16* src, float* dst) {
    const uint4 raw = *reinterpret_cast<const uint4*>(src);
    const __nv_bfloat162* h2 = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 f = __bfloat1622float2(h2[i]);
        dst[2 * i] = f.x;
        dst[2 * i + 1] = f.y;
    }
}

template <int D, int G>
DEVICE void attention_paged_impl(const AttentionPagedParams& p) {
    constexpr int LPK = D / 8;     // lanes per key
    constexpr int KPW = 32 / LPK;  // keys per warp step
    __shared__ float sm_m[PAGED_WARPS][G];
    __shared__ float sm_l[PAGED_WARPS][G];
    __shared__ float sm_acc[PAGED_WARPS][G][D];

    const int t = blockIdx.x;
    const int group = p.n_heads / p.n_kv_heads;
    const int chunks = (group + G - 1) / G;
    const int kvh = blockIdx.y / chunks;
    const int chunk = blockIdx.y % chunks;
    const int h0 = kvh * group + chunk * G;
    const int nh = min(G, group - chunk * G);
    const int split = blockIdx.z;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = lane / LPK, part = lane % LPK;

    const int seq = p.token_seq[t];
    const int ctx = (int)p.positions[t] + 1;
    const int k_begin = split * p.split_len;
    const int k_end = min(ctx, k_begin + p.split_len);
    const int kv_dim = p.n_kv_heads * D;
    const uint32_t* table = p.block_tables + (size_t)seq * p.max_blocks;

    float q[G][8], acc[G][8], m[G], l[G];
    const float qscale = p.scale * LOG2E;
#pragma unroll
    for (int h = 0; h < G; ++h) {
        m[h] = -INFINITY;
        l[h] = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[h][i] = 0.0f;
        if (h < nh) {
            load8(p.q + ((size_t)t * p.n_heads + h0 + h) * D + part * 8, q[h]);
#pragma unroll
            for (int i = 0; i < 8; ++i) q[h][i] *= qscale;
        }
    }

    // K/V of the key this lane group handles in the current step, and of the next step.
    auto key_offset = [&](int key) -> size_t {
        const size_t row = (size_t)table[key / p.block_size] * p.block_size + key % p.block_size;
        return row * kv_dim + (size_t)kvh * D + part * 8;
    };
    float kf[8], vf[8];
    const int first = k_begin + warp * KPW + sub;
    if (first < k_end) {
        const size_t off = key_offset(first);
        load8(p.k_cache + off, kf);
        load8(p.v_cache + off, vf);
    }
    for (int base = k_begin + warp * KPW; base < k_end; base += PAGED_WARPS * KPW) {
        const int key = base + sub;
        const bool valid = key < k_end;
        float kn[8] = {}, vn[8] = {};
        const int next = key + PAGED_WARPS * KPW;
        if (next < k_end) {
            const size_t off = key_offset(next);
            load8(p.k_cache + off, kn);
            load8(p.v_cache + off, vn);
        }
#pragma unroll
        for (int h = 0; h < G; ++h) {
            if (h >= nh) break;
            float s = 0.0f;
            if (valid) {
#pragma unroll
                for (int i = 0; i < 8; ++i) s += q[h][i] * kf[i];
            }
#pragma unroll
            for (int o = 1; o < LPK; o <<= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
            if (valid) {
                const float m_new = fmaxf(m[h], s);
                const float corr = exp2f(m[h] - m_new);
                const float pr = exp2f(s - m_new);
                l[h] = l[h] * corr + pr;
#pragma unroll
                for (int i = 0; i < 8; ++i) acc[h][i] = acc[h][i] * corr + pr * vf[i];
                m[h] = m_new;
            }
        }
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            kf[i] = kn[i];
            vf[i] = vn[i];
        }
    }

    // Merge the key slots of the warp (lanes with the same `part`).
#pragma unroll
    for (int h = 0; h < G; ++h) {
        if (h >= nh) break;
#pragma unroll
        for (int o = LPK; o < 32; o <<= 1) {
            const float mo = __shfl_xor_sync(0xffffffffu, m[h], o);
            const float lo = __shfl_xor_sync(0xffffffffu, l[h], o);
            const float m_new = fmaxf(m[h], mo);
            const float c1 = m_new == -INFINITY ? 0.0f : exp2f(m[h] - m_new);
            const float c2 = m_new == -INFINITY ? 0.0f : exp2f(mo - m_new);
            l[h] = l[h] * c1 + lo * c2;
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const float ao = __shfl_xor_sync(0xffffffffu, acc[h][i], o);
                acc[h][i] = acc[h][i] * c1 + ao * c2;
            }
            m[h] = m_new;
        }
        if (sub == 0) {
            if (part == 0) {
                sm_m[warp][h] = m[h];
                sm_l[warp][h] = l[h];
            }
#pragma unroll
            for (int i = 0; i < 8; ++i) sm_acc[warp][h][part * 8 + i] = acc[h][i];
        }
    }
    __syncthreads();

    // Merge the warps and write this split's result.
    for (int j = threadIdx.x; j < nh * D; j += blockDim.x) {
        const int h = j / D, d = j % D;
        float mm = -INFINITY;
#pragma unroll
        for (int w = 0; w < PAGED_WARPS; ++w) mm = fmaxf(mm, sm_m[w][h]);
        float ll = 0.0f, o = 0.0f;
        if (mm != -INFINITY) {
#pragma unroll
            for (int w = 0; w < PAGED_WARPS; ++w) {
                const float c = exp2f(sm_m[w][h] - mm);
                ll += sm_l[w][h] * c;
                o += sm_acc[w][h][d] * c;
            }
        }
        const float out = ll > 0.0f ? o / ll : 0.0f;
        const size_t th = (size_t)t * p.n_heads + h0 + h;
        if (p.n_splits == 1) {
            p.out[th * D + d] = to_bf16(out);
        } else {
            const size_t ts = th * p.n_splits + split;
            p.part_out[ts * D + d] = out;
            if (d == 0) p.part_lse[ts] = ll > 0.0f ? (mm + log2f(ll)) * LN2 : -INFINITY;
        }
    }
}

extern "C" __global__ void __launch_bounds__(128) attention_paged_hd16_g1(const AttentionPagedParams p) { attention_paged_impl<16, 1>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_paged_hd16_g2(const AttentionPagedParams p) { attention_paged_impl<16, 2>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_paged_hd16_g4(const AttentionPagedParams p) { attention_paged_impl<16, 4>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_paged_hd16_g8(const AttentionPagedParams p) { attention_paged_impl<16, 8>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_paged_hd32_g1(const AttentionPagedParams p) { attention_paged_impl<32, 1>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_paged_hd32_g2(const AttentionPagedParams p) { attention_paged_impl<32, 2>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_paged_hd32_g4(const AttentionPagedParams p) { attention_paged_impl<32, 4>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_paged_hd32_g8(const AttentionPagedParams p) { attention_paged_impl<32, 8>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_paged_hd64_g1(const AttentionPagedParams p) { attention_paged_impl<64, 1>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_paged_hd64_g2(const AttentionPagedParams p) { attention_paged_impl<64, 2>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_paged_hd64_g4(const AttentionPagedParams p) { attention_paged_impl<64, 4>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_paged_hd64_g8(const AttentionPagedParams p) { attention_paged_impl<64, 8>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_paged_hd128_g1(const AttentionPagedParams p) { attention_paged_impl<128, 1>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_paged_hd128_g2(const AttentionPagedParams p) { attention_paged_impl<128, 2>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_paged_hd128_g4(const AttentionPagedParams p) { attention_paged_impl<128, 4>(p); }
extern "C" __global__ void __launch_bounds__(128) attention_paged_hd128_g8(const AttentionPagedParams p) { attention_paged_impl<128, 8>(p); }

// Combines the splits: grid = (tokens, n_heads), blockDim.x >= head_dim (head_dim = D inferred
// from blockDim.x, which the host sets to head_dim).
extern "C" __global__ void attention_paged_merge(const AttentionPagedParams p) {
    const int t = blockIdx.x, h = blockIdx.y, d = threadIdx.x, D = blockDim.x;
    const size_t th = (size_t)t * p.n_heads + h;
    const float* lse = p.part_lse + th * p.n_splits;
    float mm = -INFINITY;
    for (int s = 0; s < p.n_splits; ++s) mm = fmaxf(mm, lse[s]);
    float wsum = 0.0f, o = 0.0f;
    if (mm != -INFINITY) {
        for (int s = 0; s < p.n_splits; ++s) {
            const float w = __expf(lse[s] - mm);
            wsum += w;
            o += w * p.part_out[(th * p.n_splits + s) * D + d];
        }
    }
    p.out[th * D + d] = to_bf16(wsum > 0.0f ? o / wsum : 0.0f);
}
