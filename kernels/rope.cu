// rope: Hugging Face rotate_half layout. Element i of a head pairs with element i + head_dim/2,
// angle = pos * theta^(-2i/head_dim).
// Not fast-math: under --use_fast_math sinf/cosf become __sinf/__cosf, whose error grows with the
// argument (positions reach 10^5 radians). The angle is formed in f32 as Hugging Face does
// (inv_freq in f32, then pos * inv_freq in f32), and its sine and cosine are taken in double,
// which fast-math leaves alone, then rounded to f32.
#include "common.cuh"

extern "C" __global__ void rope(const RopeParams p) {
    const int row = blockIdx.x;
    if (row >= p.rows) return;
    const int half = p.head_dim / 2;
    const float pos = (float)p.positions[row];
    bf16* x = p.x + (size_t)row * p.n_heads * p.head_dim;
    for (int j = threadIdx.x; j < p.n_heads * half; j += blockDim.x) {
        const int h = j / half, i = j % half;
        float cs, sn;
        rope_cos_sin(pos, i, p.head_dim, p.theta, &cs, &sn);
        bf16* head = x + h * p.head_dim;
        const float x1 = to_f32(head[i]), x2 = to_f32(head[i + half]);
        head[i] = to_bf16(x1 * cs - x2 * sn);
        head[i + half] = to_bf16(x2 * cs + x1 * sn);
    }
}
