// embedding: out[t,:] = table[ids[t],:]. One block per token row.
#include "common.cuh"

extern "C" __global__ void embedding(const EmbeddingParams p) {
    const int row = blockIdx.x;
    if (row >= p.rows) return;
    const uint32_t id = p.ids[row];
    bf16* out = p.out + (size_t)row * p.dim;
    if (id >= (uint32_t)p.vocab) {
        for (int i = threadIdx.x; i < p.dim; i += blockDim.x) out[i] = to_bf16(0.0f);
        return;
    }
    const bf16* src = p.table + (size_t)id * p.dim;
    for (int i = threadIdx.x; i < p.dim; i += blockDim.x) out[i] = src[i];
}
