// sample: one token per row of logits, with its log-probability, and philox (the generator).
//
// Per row (settings in SampleRow): T == 0 is argmax (lowest index on ties), logprob =
// log_softmax(logits)[tok]. Otherwise p = softmax(logits / T) (max-subtracted) and the reported
// logprob is log p[tok] of that unfiltered distribution. The kept set is cut by thresholds on p,
// never a sort: top_k keeps p >= the k-th largest p (ties kept), found by radix select over the
// bits of p (p >= 0, so its bit pattern orders like its value: 4 passes of 8-bit digits with a
// 256-bin count histogram); top_p keeps p >= the largest v with mass(p >= v) >= top_p * mass(kept
// by top_k), found by a 16-way search over the bits of v (about 8 passes); min_p keeps
// p >= min_p * max p. p_i = exp((logit_i - max) * (1/T)) / z, as src/backend/cpu/sampling.rs.
// Draw: Philox4x32-10 with key (seed lo, seed hi) and counter (step, stream, 0, 0);
// u = (x0 >> 8) * 2^-24; target = u * S (S = sum of kept p); scan kept tokens in index order and
// take the first whose running sum exceeds target, else the last kept token.
//
// One block of 1024 threads per row; the row is re-read from memory in each pass (about 17
// with every filter on). Every sum that decides the draw (z, the top-p masses, S and the
// running sum) is taken in a fixed order (block_sum over per-thread sums,
// block_exclusive_scan over per-thread chunks) that the CPU reference reproduces step for
// step, so both draw the same token. exp and log run in double (see exp_ref): fast-math is not
// used for the probabilities.
#include "common.cuh"

constexpr int SAMPLE_THREADS = 1024;
constexpr int TOP_P_WAYS = 16;  // candidates per top-p pass, plus one

DEVICE float load_logit(const SampleParams& p, size_t i) {
    return p.logits ? p.logits[i] : to_f32(p.logits_bf16[i]);
}

// exp and log as the CPU reference takes them (libm, f32 in and out): in double, rounded once, so
// the values agree with the CPU's to the last bit in all but rare double-rounding cases. Fast-math
// would turn expf into __expf, whose error grows with |x|; double math is left alone by it.
DEVICE float exp_ref(float x) { return (float)exp((double)x); }
DEVICE float log_ref(float x) { return (float)log((double)x); }

// p_i = exp((logit - max) * (1/T)) / z, every f32 operation IEEE-rounded as on the CPU.
DEVICE float prob(float logit, float lmax, float inv_t, float z) {
    return __fdiv_rn(exp_ref(__fmul_rn(__fsub_rn(logit, lmax), inv_t)), z);
}

// Block-wide exclusive scan of one float per thread (blockDim.x == SAMPLE_THREADS).
DEVICE float block_exclusive_scan(float v, float* warp_sums) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float incl = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const float n = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += n;
    }
    if (lane == 31) warp_sums[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        float w = warp_sums[lane];
        float wi = w;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const float n = __shfl_up_sync(0xffffffffu, wi, o);
            if (lane >= o) wi += n;
        }
        warp_sums[lane] = wi - w;  // exclusive prefix of the warp totals
    }
    __syncthreads();
    const float r = warp_sums[warp] + incl - v;
    __syncthreads();
    return r;
}

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS, 1) sample(const SampleParams p) {
    __shared__ float red[32];
    __shared__ unsigned hist[256];
    __shared__ int sel_bin;
    __shared__ int found;
    __shared__ int last_kept;

    const int row = blockIdx.x;
    if (row >= p.rows) return;
    const SampleRow& cfg = p.rows_cfg[row];
    const int V = p.vocab;
    const size_t base = (size_t)row * V;
    const int tid = threadIdx.x;

    // Max logit (and its lowest index).
    float mx = -INFINITY;
    int arg = V;
    for (int i = tid; i < V; i += SAMPLE_THREADS) {
        const float l = load_logit(p, base + i);
        if (l > mx) { mx = l; arg = i; }
    }
    const float lmax = block_max(mx, red);
    if (mx != lmax) arg = V;
    for (int o = 16; o > 0; o >>= 1) arg = min(arg, __shfl_xor_sync(0xffffffffu, arg, o));
    if ((tid & 31) == 0) red[tid >> 5] = __int_as_float(arg);
    __syncthreads();
    if (tid < 32) {
        int a = __float_as_int(red[tid]);
        for (int o = 16; o > 0; o >>= 1) a = min(a, __shfl_xor_sync(0xffffffffu, a, o));
        if (tid == 0) found = a;
    }
    __syncthreads();
    const int argmax = found;
    __syncthreads();

    if (!(cfg.temperature > 0.0f)) {
        float z = 0.0f;
        for (int i = tid; i < V; i += SAMPLE_THREADS) z += exp_ref(__fsub_rn(load_logit(p, base + i), lmax));
        z = block_sum(z, red);
        if (tid == 0) {
            p.tokens[row] = (uint32_t)argmax;
            p.logprobs[row] = __fsub_rn(load_logit(p, base + argmax), __fadd_rn(lmax, log_ref(z)));
        }
        return;
    }

    const float inv_t = __fdiv_rn(1.0f, cfg.temperature);
    float z = 0.0f;
    for (int i = tid; i < V; i += SAMPLE_THREADS) z += exp_ref(__fmul_rn(__fsub_rn(load_logit(p, base + i), lmax), inv_t));
    z = block_sum(z, red);
#define PROB(i) prob(load_logit(p, base + (i)), lmax, inv_t, z)

    // top_k: the k-th largest p, by radix select on its bits.
    float tau = 0.0f;
    if (cfg.top_k > 0 && cfg.top_k < V) {
        uint32_t prefix = 0, mask = 0;
        int k_rem = cfg.top_k;
        for (int shift = 24; shift >= 0; shift -= 8) {
            for (int b = tid; b < 256; b += SAMPLE_THREADS) hist[b] = 0;
            __syncthreads();
            for (int i = tid; i < V; i += SAMPLE_THREADS) {
                const uint32_t bits = __float_as_uint(PROB(i));
                if ((bits & mask) == prefix) atomicAdd(&hist[(bits >> shift) & 255u], 1u);
            }
            __syncthreads();
            if (tid == 0) {
                int cum = 0, b = 255;
                for (; b > 0; --b) {
                    if (cum + (int)hist[b] >= k_rem) break;
                    cum += hist[b];
                }
                sel_bin = b;
                k_rem -= cum;
            }
            __syncthreads();
            prefix |= (uint32_t)sel_bin << shift;
            mask |= 255u << shift;
            __syncthreads();
        }
        tau = __uint_as_float(prefix);
    }

    // top_p: the largest v >= tau with mass(v) >= top_p * mass(tau), mass(v) = the sum of the
    // p >= v in the order of block_sum over strided per-thread sums (the CPU reference sums the
    // same way, so both find the same v). mass only shrinks as v grows, so a search over the bit
    // patterns of v (p >= 0: bits order like values) finds it: each pass evaluates TOP_P_WAYS - 1
    // evenly spaced candidates at once and keeps the bracket [last passing, first failing).
    if (cfg.top_p < 1.0f) {
        float m0 = 0.0f;
        for (int i = tid; i < V; i += SAMPLE_THREADS) {
            const float pi = PROB(i);
            if (pi >= tau) m0 += pi;
        }
        const float target = __fmul_rn(cfg.top_p, block_sum(m0, red));
        uint32_t lo = __float_as_uint(tau), hi = __float_as_uint(__fdiv_rn(1.0f, z)) + 1u;  // 1/z: the largest p
        while (hi - lo > 1u) {
            const uint32_t step = (hi - lo + TOP_P_WAYS - 1) / TOP_P_WAYS;
            float part[TOP_P_WAYS - 1];
#pragma unroll
            for (int j = 0; j < TOP_P_WAYS - 1; ++j) part[j] = 0.0f;
            for (int i = tid; i < V; i += SAMPLE_THREADS) {
                const float pi = PROB(i);
                const uint32_t bits = __float_as_uint(pi);
#pragma unroll
                for (int j = 0; j < TOP_P_WAYS - 1; ++j)
                    if (bits >= lo + (uint32_t)(j + 1) * step) part[j] += pi;
            }
            uint32_t new_lo = lo, new_hi = hi;
            for (int j = 0; j < TOP_P_WAYS - 1; ++j) {
                const uint32_t c = lo + (uint32_t)(j + 1) * step;
                if (c >= hi) break;
                if (block_sum(part[j], red) >= target) {
                    new_lo = c;
                } else {
                    new_hi = c;
                    break;
                }
            }
            lo = new_lo;
            hi = new_hi;
        }
        tau = __uint_as_float(lo);
    }

    // min_p: relative to the largest p, exp(0) / z.
    if (cfg.min_p > 0.0f) tau = fmaxf(tau, __fmul_rn(cfg.min_p, __fdiv_rn(1.0f, z)));

    // S = sum of kept p, each thread over a contiguous chunk so the scan below is in index order.
    const int chunk = (V + SAMPLE_THREADS - 1) / SAMPLE_THREADS;
    const int lo = min(V, tid * chunk), hi = min(V, lo + chunk);
    float local = 0.0f;
    int my_last = -1;
    for (int i = lo; i < hi; ++i) {
        const float pi = PROB(i);
        if (pi >= tau) { local += pi; my_last = i; }
    }
    if (tid == 0) { found = V; last_kept = -1; }
    const float before = block_exclusive_scan(local, red);
    const float s_total = block_sum(tid == SAMPLE_THREADS - 1 ? before + local : 0.0f, red);
    atomicMax(&last_kept, my_last);

    const Philox4 r = philox4x32_10(cfg.step, cfg.stream, 0u, 0u, (uint32_t)cfg.seed, (uint32_t)(cfg.seed >> 32));
    const float u = (float)(r.x[0] >> 8) * (1.0f / 16777216.0f);
    const float target = u * s_total;
    if (local > 0.0f && before + local > target) {
        float run = before;
        for (int i = lo; i < hi; ++i) {
            const float pi = PROB(i);
            if (pi >= tau) {
                run += pi;
                if (run > target) { atomicMin(&found, i); break; }
            }
        }
    }
    __syncthreads();
    if (tid == 0) {
        const int tok = found < V ? found : (last_kept >= 0 ? last_kept : argmax);
        p.tokens[row] = (uint32_t)tok;
        p.logprobs[row] = log_ref(PROB(tok));
    }
#undef PROB
}

extern "C" __global__ void philox(const PhiloxParams p) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    const Philox4 r = philox4x32_10(p.counter[4 * i], p.counter[4 * i + 1], p.counter[4 * i + 2], p.counter[4 * i + 3], p.key[2 * i], p.key[2 * i + 1]);
#pragma unroll
    for (int j = 0; j < 4; ++j) p.out[4 * i + j] = r.x[j];
}
