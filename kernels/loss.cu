// The token-level losses (cpu/loss.rs is the reference): the clipped policy-gradient objective
// and next-token cross-entropy, over a chunk of logits the host formed with cuBLAS.
//
// Per chunk of active rows (src/backend/cuda/loss.rs drives it): loss_copy_rows gathers their
// hidden states, a gemm writes the f32 logits [chunk, vocab], and policy_loss / cross_entropy
// (one block per row) turn each row into exp(z - max z) in place, read off log-prob, entropy
// and the sum, apply the objective to get the row's loss and dL/dlogp, add the statistics into
// f32 scratch, and write dL/dlogits = dL/dlogp · (onehot - p) / T in bf16 for the two gradient
// gemms; loss_copy_rows scatters the d_hidden rows back, and loss_stats writes the statistics
// out once every chunk is done.
//
// The per-row scalar math (the objective, log of the sum) runs on one thread per row with
// IEEE-rounded f32 operations and exp/expm1/log in double rounded to f32, as the CPU computes
// them, so clip decisions and counts follow the CPU's given the same log-prob. The per-logit
// exponentials use __expf (fast-math), well inside the f32 tolerance of the sums they feed.
#include "common.cuh"

constexpr int LOSS_THREADS = 512;

// The slots of LossStat (src/backend/mod.rs), same order; loss.rs asserts the count and the
// ratio slots. RATIO_MIN and RATIO_MAX hold the ordered-int form of a float (see ordered_int).
enum LossSlot {
    S_LOSS, S_TOKENS, S_CLIP_LOW, S_CLIP_HIGH, S_DUAL_CLIP, S_KL, S_ENTROPY, S_RATIO_SUM,
    S_RATIO_MIN, S_RATIO_MAX, S_TIS_WEIGHT, S_TIS_CAPPED, S_MISMATCH, S_COUNT
};

// Flags of LossChunkParams.flags.
constexpr uint32_t LOSS_DUAL_CLIP = 1u, LOSS_TIS_CAP = 2u;

// A float as an int whose signed order is the float's order (an involution: it also decodes).
DEVICE int ordered_int(int bits) { return bits >= 0 ? bits : bits ^ 0x7fffffff; }

DEVICE float exp_rn(float x) { return (float)exp((double)x); }
DEVICE float expm1_rn(float x) { return (float)expm1((double)x); }
DEVICE float clamp20(float x) { return fminf(fmaxf(x, -20.0f), 20.0f); }

struct RowLoss {
    float loss, dlogp;
};

// cpu/loss.rs policy_token, line for line: the clipped surrogate, dual clip, truncated
// importance weight and KL penalty of row r; adds its statistics.
DEVICE RowLoss policy_token(const LossChunkParams& p, int64_t r, float logp) {
    float* st = p.stats;
    const float w = load(p.weights, is_bf16(p.bf16_mask, 1), r);
    const float a = load(p.advantages, is_bf16(p.bf16_mask, 2), r);
    const float old_logp = p.old_logp ? load(p.old_logp, is_bf16(p.bf16_mask, 3), r) : logp;
    const float ratio = exp_rn(clamp20(__fsub_rn(logp, old_logp)));
    const float lo = __fsub_rn(1.0f, p.clip_low), hi = __fadd_rn(1.0f, p.clip_high);
    const float unclipped = __fmul_rn(-a, ratio);
    const float clipped = __fmul_rn(-a, fminf(fmaxf(ratio, lo), hi));
    // max(unclipped, clipped): the clipped branch has no gradient when it wins.
    float pg = unclipped, dpg = unclipped;
    if (!(unclipped >= clipped)) {
        pg = clipped;
        dpg = 0.0f;
    }
    if (unclipped < clipped) atomicAdd(&st[a < 0.0f ? S_CLIP_LOW : S_CLIP_HIGH], 1.0f);
    if ((p.flags & LOSS_DUAL_CLIP) && a < 0.0f && pg > __fmul_rn(-a, p.dual_clip)) {
        pg = __fmul_rn(-a, p.dual_clip);
        dpg = 0.0f;
        atomicAdd(&st[S_DUAL_CLIP], 1.0f);
    }
    if (p.rollout_logp) {
        const float d = clamp20(__fsub_rn(old_logp, load(p.rollout_logp, is_bf16(p.bf16_mask, 5), r)));
        const float wt = exp_rn(d);
        atomicAdd(&st[S_MISMATCH], __fsub_rn(expm1_rn(d), d));
        if (p.flags & LOSS_TIS_CAP) {
            const float wc = fminf(wt, p.tis_cap);
            if (wt > p.tis_cap) atomicAdd(&st[S_TIS_CAPPED], 1.0f);
            atomicAdd(&st[S_TIS_WEIGHT], wc);
            pg = __fmul_rn(pg, wc);
            dpg = __fmul_rn(dpg, wc);
        }
    }
    float kl = 0.0f, dkl = 0.0f;
    if (p.ref_logp) {
        const float d = __fsub_rn(load(p.ref_logp, is_bf16(p.bf16_mask, 4), r), logp);
        if (p.kl_estimator == 1) {
            kl = -d;
            dkl = 1.0f;
        } else if (p.kl_estimator == 2) {
            kl = __fmul_rn(__fmul_rn(0.5f, d), d);
            dkl = -d;
        } else {
            const float em1 = expm1_rn(clamp20(d));
            kl = __fsub_rn(em1, d);
            dkl = -em1;
        }
        atomicAdd(&st[S_KL], kl);
    }
    atomicAdd(&st[S_RATIO_SUM], ratio);
    if (ratio == ratio) { // NaN takes no part in the extremes, as with f32::min/max
        atomicMin((int*)&st[S_RATIO_MIN], ordered_int(__float_as_int(ratio)));
        atomicMax((int*)&st[S_RATIO_MAX], ordered_int(__float_as_int(ratio)));
    }
    RowLoss out;
    out.loss = __fmul_rn(w, __fadd_rn(pg, __fmul_rn(p.kl_coef, kl)));
    out.dlogp = __fmul_rn(w, __fadd_rn(dpg, __fmul_rn(p.kl_coef, dkl)));
    return out;
}

// One block per row i of the chunk (cpu/loss.rs softmax_row and the loop after it).
template <bool POLICY>
DEVICE void loss_row(const LossChunkParams& p) {
    __shared__ float scratch[32];
    __shared__ float s_dlogp;
    const int i = blockIdx.x;
    if (i >= p.n) return;
    const int64_t r = p.rows[i];
    const uint32_t target = p.targets[r];
    float* row = p.logits + (int64_t)i * p.vocab;
    const float x_target = row[target]; // read before any thread overwrites the row
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < p.vocab; j += blockDim.x) mx = fmaxf(mx, row[j]);
    mx = block_max(mx, scratch);
    const float shift = __fmul_rn(mx, p.inv_t);
    float sum = 0.0f, ez = 0.0f;
    for (int j = threadIdx.x; j < p.vocab; j += blockDim.x) {
        const float z = __fsub_rn(__fmul_rn(row[j], p.inv_t), shift);
        const float e = __expf(z);
        row[j] = e;
        sum += e;
        ez += e * z;
    }
    sum = block_sum(sum, scratch);
    ez = block_sum(ez, scratch);
    if (threadIdx.x == 0) {
        const float ln_s = (float)log((double)sum);
        const float logp = __fsub_rn(__fsub_rn(__fmul_rn(x_target, p.inv_t), shift), ln_s);
        store(p.logp, is_bf16(p.bf16_mask, 0), r, logp);
        atomicAdd(&p.stats[S_TOKENS], 1.0f);
        atomicAdd(&p.stats[S_ENTROPY], __fsub_rn(ln_s, __fdiv_rn(ez, sum)));
        RowLoss l;
        if (POLICY) {
            l = policy_token(p, r, logp);
        } else {
            const float w = load(p.weights, is_bf16(p.bf16_mask, 1), r);
            l.loss = __fmul_rn(-w, logp);
            l.dlogp = -w;
        }
        atomicAdd(&p.stats[S_LOSS], l.loss);
        s_dlogp = l.dlogp;
    }
    if (!p.d_logits) return;
    __syncthreads();
    const float g = __fmul_rn(s_dlogp, p.inv_t);
    const float scale = __fdiv_rn(-g, sum);
    bf16* d_row = p.d_logits + (int64_t)i * p.vocab;
    for (int j = threadIdx.x; j < p.vocab; j += blockDim.x) {
        float v = __fmul_rn(row[j], scale);
        if (j == (int)target) v = __fadd_rn(v, g);
        d_row[j] = to_bf16(v);
    }
}

extern "C" __global__ void __launch_bounds__(LOSS_THREADS) policy_loss(const LossChunkParams p) { loss_row<true>(p); }

extern "C" __global__ void __launch_bounds__(LOSS_THREADS) cross_entropy(const LossChunkParams p) { loss_row<false>(p); }

// ---- loss_copy_rows: one block per row i; dst row dst_rows[i] (or i) = src row src_rows[i] (or i).
extern "C" __global__ void loss_copy_rows(const LossCopyRowsParams p) {
    const int i = blockIdx.x;
    if (i >= p.n) return;
    const bool bf_dst = is_bf16(p.bf16_mask, 0), bf_src = is_bf16(p.bf16_mask, 1);
    const int64_t dst = (int64_t)(p.dst_rows ? p.dst_rows[i] : (uint32_t)i) * p.dim;
    const int64_t src = (int64_t)(p.src_rows ? p.src_rows[i] : (uint32_t)i) * p.dim;
    for (int k = threadIdx.x; k < p.dim; k += blockDim.x) store(p.dst, bf_dst, dst + k, load(p.src, bf_src, src + k));
}

// ---- loss_stats: the f32 scratch into the op's output, the ratio extremes decoded, or set to
// `ratio_value` when `set_ratio` (no active row; cross-entropy, whose ratio is 1).
extern "C" __global__ void loss_stats(const LossStatsParams p) {
    const int s = threadIdx.x;
    if (s >= S_COUNT) return;
    const bool bf = is_bf16(p.bf16_mask, 0);
    float v = p.stats[s];
    if (s == S_RATIO_MIN || s == S_RATIO_MAX) v = p.set_ratio ? p.ratio_value : __int_as_float(ordered_int(__float_as_int(v)));
    store(p.out, bf, s, v);
}
