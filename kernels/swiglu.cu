// swiglu: out = silu(gate) * up; and add: acc += x (or += bias broadcast over rows).
#include "common.cuh"

extern "C" __global__ void swiglu(const SwigluParams p) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < p.n; i += (int64_t)gridDim.x * blockDim.x) {
        const float g = to_f32(p.gate[i]);
        p.out[i] = to_bf16(g / (1.0f + __expf(-g)) * to_f32(p.up[i]));
    }
}

extern "C" __global__ void add(const AddParams p) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < p.n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t j = p.dim > 0 ? i % p.dim : i;
        p.acc[i] = to_bf16(to_f32(p.acc[i]) + to_f32(p.x[j]));
    }
}
