// cast_f32_to_bf16 (round to nearest even) and cast_bf16_to_f32.
#include "common.cuh"

extern "C" __global__ void cast_f32_to_bf16(const CastParams p) {
    const float* in = (const float*)p.src;
    bf16* out = (bf16*)p.out;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < p.n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = to_bf16(in[i]);
}

extern "C" __global__ void cast_bf16_to_f32(const CastParams p) {
    const bf16* in = (const bf16*)p.src;
    float* out = (float*)p.out;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < p.n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = to_f32(in[i]);
}
