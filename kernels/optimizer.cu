// The optimizer's kernels (cpu/adamw.rs is the reference): sum_squares for the global gradient
// norm, and the fused AdamW step. Tensors are f32 or bf16 at run time (bf16_mask, params.cuh).
#include "common.cuh"

// ---- sum_squares: grid-stride; each thread sums in double (as the CPU does), the block sums
// the threads' partials in f32, and one atomic add per block goes into acc[0].
extern "C" __global__ void sum_squares(const SumSquaresParams p) {
    __shared__ float scratch[32];
    const bool bf_acc = is_bf16(p.bf16_mask, 0), bf_x = is_bf16(p.bf16_mask, 1);
    double acc = 0.0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < p.n; i += (int64_t)gridDim.x * blockDim.x) {
        const double v = (double)load(p.x, bf_x, i);
        acc += v * v;
    }
    const float total = block_sum((float)acc, scratch);
    if (threadIdx.x == 0) atomic_add(p.acc, bf_acc, 0, total);
}

// ---- adamw: PyTorch's AdamW (foreach=False arithmetic), elementwise:
// g = grad·grad_scale; w *= decay; m += (g - m)(1 - beta1); v = v·beta2 + (1 - beta2)·g²;
// w -= step_size · m / (sqrt(v)/bc2_sqrt + eps).
// The square root and the divisions are IEEE-rounded (__fsqrt_rn, __fdiv_rn) so that
// --use_fast_math does not replace them with approximations.
extern "C" __global__ void adamw(const AdamwParams p) {
    const bool bf_w = is_bf16(p.bf16_mask, 0), bf_g = is_bf16(p.bf16_mask, 1), bf_m = is_bf16(p.bf16_mask, 2),
               bf_v = is_bf16(p.bf16_mask, 3);
    const float b1 = p.beta1, b2 = p.beta2;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < p.n; i += (int64_t)gridDim.x * blockDim.x) {
        const float g = load(p.grad, bf_g, i) * p.grad_scale;
        float w = load(p.param, bf_w, i) * p.decay;
        float m = load(p.m, bf_m, i), v = load(p.v, bf_v, i);
        m += (g - m) * (1.0f - b1);
        v = v * b2 + (1.0f - b2) * g * g;
        const float denom = __fdiv_rn(__fsqrt_rn(v), p.bc2_sqrt) + p.eps;
        w -= __fdiv_rn(p.step_size * m, denom);
        store(p.m, bf_m, i, m);
        store(p.v, bf_v, i, v);
        store(p.param, bf_w, i, w);
    }
}
