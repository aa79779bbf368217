// rms_norm and add_rms_norm: one warp per row, f32 sum of squares.
// rms_norm also serves the per-head q/k norm (rows = tokens * heads, dim = head_dim).
#include "common.cuh"

constexpr int NORM_ROWS_PER_BLOCK = 4;  // blockDim.x == 32 * NORM_ROWS_PER_BLOCK

extern "C" __global__ void rms_norm(const RmsNormParams p) {
    const int row = blockIdx.x * NORM_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= p.rows) return;
    const bf16* x = p.x + (size_t)row * p.dim;
    float ss = 0.0f;
    for (int i = lane; i < p.dim; i += 32) {
        const float v = to_f32(x[i]);
        ss += v * v;
    }
    const float inv = rsqrtf(warp_sum(ss) / (float)p.dim + p.eps);
    bf16* out = p.out + (size_t)row * p.dim;
    for (int i = lane; i < p.dim; i += 32) out[i] = to_bf16(to_f32(x[i]) * inv * to_f32(p.weight[i]));
}

extern "C" __global__ void add_rms_norm(const AddRmsNormParams p) {
    const int row = blockIdx.x * NORM_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= p.rows) return;
    bf16* res = p.residual + (size_t)row * p.dim;
    const bf16* x = p.x + (size_t)row * p.dim;
    float ss = 0.0f;
    for (int i = lane; i < p.dim; i += 32) {
        const bf16 s = to_bf16(to_f32(res[i]) + to_f32(x[i]));
        res[i] = s;
        const float v = to_f32(s);
        ss += v * v;
    }
    const float inv = rsqrtf(warp_sum(ss) / (float)p.dim + p.eps);
    bf16* out = p.out + (size_t)row * p.dim;
    for (int i = lane; i < p.dim; i += 32) out[i] = to_bf16(to_f32(res[i]) * inv * to_f32(p.weight[i]));
}
