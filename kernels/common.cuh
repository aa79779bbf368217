// Shared by every kernel file: bf16 conversion, warp and block reductions, Philox4x32-10.
// Storage is bf16, math is f32.
#pragma once
#include "params.cuh"
#include <cuda_bf16.h>
#include <cstdint>
#include <cfloat>

#define DEVICE __device__ __forceinline__

DEVICE float to_f32(bf16 x) { return __bfloat162float(x); }
DEVICE bf16 to_bf16(float x) { return __float2bfloat16_rn(x); }

// Tensors whose type is chosen at run time (the backward and optimizer kernels): `bf` says
// whether `p` points to bf16 (else f32); see `bf16_mask` in params.cuh.
DEVICE bool is_bf16(uint32_t mask, int bit) { return (mask >> bit) & 1u; }
DEVICE float load(const void* p, bool bf, int64_t i) {
    return bf ? to_f32(((const bf16*)p)[i]) : ((const float*)p)[i];
}
DEVICE void store(void* p, bool bf, int64_t i, float v) {
    if (bf) ((bf16*)p)[i] = to_bf16(v);
    else ((float*)p)[i] = v;
}
DEVICE void atomic_add(void* p, bool bf, int64_t i, float v) {
    if (bf) atomicAdd((bf16*)p + i, to_bf16(v));
    else atomicAdd((float*)p + i, v);
}

DEVICE float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

DEVICE float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide reductions for blockDim.x a multiple of 32 (at most 1024). Every thread gets the
// result. `scratch` holds 32 floats; the call ends with a barrier, so scratch may be reused.
DEVICE float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

DEVICE float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -FLT_MAX;
    v = warp_max(v);
    __syncthreads();
    return v;
}

// Philox4x32-10 (Salmon et al., Random123; the constants curand uses).
struct Philox4 {
    uint32_t x[4];
};

DEVICE Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
    const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        const uint32_t hi0 = __umulhi(M0, c0), lo0 = M0 * c0;
        const uint32_t hi1 = __umulhi(M1, c2), lo1 = M1 * c2;
        const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += W0; k1 += W1;
    }
    Philox4 r;
    r.x[0] = c0; r.x[1] = c1; r.x[2] = c2; r.x[3] = c3;
    return r;
}

// The cosine and sine of RoPE's angle for element pair i of a head at position pos, formed as
// Hugging Face does (inv_freq in f32, then pos * inv_freq in f32), with the sine and cosine
// taken in double (fast-math leaves double alone) and rounded to f32.
__device__ __forceinline__ void rope_cos_sin(float pos, int i, int head_dim, float theta, float* cs, float* sn) {
    const float inv_freq = (float)(1.0 / pow((double)theta, (double)(2 * i) / (double)head_dim));
    const float angle = pos * inv_freq;
    double s, c;
    sincos((double)angle, &s, &c);
    *cs = (float)c;
    *sn = (float)s;
}
