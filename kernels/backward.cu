// Backward ops of the row-wise and elementwise forward ops (cpu/backward.rs is the reference):
// embedding_backward, rms_norm_backward, add_bias_backward, rope_backward, swiglu_backward.
// Every tensor is f32 or bf16 at run time (bf16_mask, see params.cuh); math is f32. Gradients
// summed over rows (d_table, d_weight, d_bias) are accumulated with atomic adds, so their
// summation order, and their last bits, vary from run to run.
#include "common.cuh"

// ---- embedding_backward: one block per token row, atomic adds into the table gradient.
extern "C" __global__ void embedding_backward(const EmbeddingBackwardParams p) {
    const int row = blockIdx.x;
    if (row >= p.rows) return;
    const uint32_t id = p.ids[row];
    if (id >= (uint32_t)p.vocab) return;
    const bool bf_table = is_bf16(p.bf16_mask, 0), bf_out = is_bf16(p.bf16_mask, 1);
    const int64_t src = (int64_t)row * p.dim, dst = (int64_t)id * p.dim;
    for (int i = threadIdx.x; i < p.dim; i += blockDim.x) atomic_add(p.d_table, bf_table, dst + i, load(p.d_out, bf_out, src + i));
}

// ---- rms_norm_backward. With y = x·r·w, r = 1/sqrt(mean(x²) + eps), g = dy·w:
// dx += r·g - x·r³·mean(g·x), d_weight += sum over rows of dy·x·r.
// A block of RMS_BWD_THREADS threads owns RMS_BWD_ROWS consecutive rows: each warp does whole
// rows (dx, and r and c = r³·mean(g·x) into shared memory), then the block sums dy·x·r over its
// rows column by column and adds that into d_weight, one atomic add per column per block.
constexpr int RMS_BWD_THREADS = 256;
constexpr int RMS_BWD_ROWS = 32;

extern "C" __global__ void __launch_bounds__(RMS_BWD_THREADS) rms_norm_backward(const RmsNormBackwardParams p) {
    __shared__ float s_r[RMS_BWD_ROWS];
    const bool bf_dx = is_bf16(p.bf16_mask, 0), bf_dw = is_bf16(p.bf16_mask, 1), bf_dy = is_bf16(p.bf16_mask, 2),
               bf_x = is_bf16(p.bf16_mask, 3), bf_w = is_bf16(p.bf16_mask, 4);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int row0 = blockIdx.x * RMS_BWD_ROWS;
    const int nrows = min(RMS_BWD_ROWS, p.rows - row0);
    for (int j = warp; j < nrows; j += warps) {
        const int64_t base = (int64_t)(row0 + j) * p.dim;
        float ss = 0.0f, gx = 0.0f;
        for (int i = lane; i < p.dim; i += 32) {
            const float x = load(p.x, bf_x, base + i);
            ss += x * x;
            gx += load(p.d_out, bf_dy, base + i) * load(p.weight, bf_w, i) * x;
        }
        ss = warp_sum(ss);
        gx = warp_sum(gx);
        const float r = 1.0f / sqrtf(ss / (float)p.dim + p.eps);
        const float c = r * r * r * (gx / (float)p.dim);
        for (int i = lane; i < p.dim; i += 32) {
            const float x = load(p.x, bf_x, base + i), dy = load(p.d_out, bf_dy, base + i);
            store(p.dx, bf_dx, base + i, load(p.dx, bf_dx, base + i) + (r * dy * load(p.weight, bf_w, i) - c * x));
        }
        if (lane == 0) s_r[j] = r;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < p.dim; i += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < nrows; ++j) {
            const int64_t at = (int64_t)(row0 + j) * p.dim + i;
            acc += load(p.d_out, bf_dy, at) * load(p.x, bf_x, at) * s_r[j];
        }
        atomic_add(p.d_weight, bf_dw, i, acc);
    }
}

// ---- add_bias_backward: grid (column blocks, row chunks); a thread sums one column over
// BIAS_BWD_ROWS rows and adds the partial into d_bias.
constexpr int BIAS_BWD_ROWS = 64;

extern "C" __global__ void add_bias_backward(const AddBiasBackwardParams p) {
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= p.dim) return;
    const bool bf_db = is_bf16(p.bf16_mask, 0), bf_dx = is_bf16(p.bf16_mask, 1);
    const int row0 = blockIdx.y * BIAS_BWD_ROWS;
    const int row1 = min(row0 + BIAS_BWD_ROWS, p.rows);
    float acc = 0.0f;
    for (int r = row0; r < row1; ++r) acc += load(p.dx, bf_dx, (int64_t)r * p.dim + col);
    atomic_add(p.d_bias, bf_db, col, acc);
}

// ---- rope_backward: the rotation of rope.cu by the negative angle, with the angle, its sine
// and cosine formed exactly as rope.cu forms them (f32 angle, double sincos; see there).
extern "C" __global__ void rope_backward(const RopeBackwardParams p) {
    const int row = blockIdx.x;
    if (row >= p.rows) return;
    const bool bf = is_bf16(p.bf16_mask, 0);
    const int half = p.head_dim / 2;
    const float pos = (float)p.positions[row];
    const int64_t base = (int64_t)row * p.n_heads * p.head_dim;
    for (int j = threadIdx.x; j < p.n_heads * half; j += blockDim.x) {
        const int h = j / half, i = j % half;
        float cs, sn;
        rope_cos_sin(pos, i, p.head_dim, p.theta, &cs, &sn);
        const int64_t a = base + (int64_t)h * p.head_dim + i, b = a + half;
        const float x1 = load(p.x, bf, a), x2 = load(p.x, bf, b);
        store(p.x, bf, a, x1 * cs + x2 * sn);
        store(p.x, bf, b, x2 * cs - x1 * sn);
    }
}

// ---- swiglu_backward: silu(g) = g·s with s = sigmoid(g), silu'(g) = s·(1 + g·(1 - s)).
extern "C" __global__ void swiglu_backward(const SwigluBackwardParams p) {
    const bool bf_dg = is_bf16(p.bf16_mask, 0), bf_du = is_bf16(p.bf16_mask, 1), bf_dy = is_bf16(p.bf16_mask, 2),
               bf_g = is_bf16(p.bf16_mask, 3), bf_u = is_bf16(p.bf16_mask, 4);
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < p.n; i += (int64_t)gridDim.x * blockDim.x) {
        const float dy = load(p.d_out, bf_dy, i), g = load(p.gate, bf_g, i), u = load(p.up, bf_u, i);
        const float s = 1.0f / (1.0f + __expf(-g));
        store(p.d_gate, bf_dg, i, dy * u * s * (1.0f + g * (1.0f - s)));
        store(p.d_up, bf_du, i, dy * g * s);
    }
}
