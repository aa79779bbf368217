// What the tensor-core attention kernels share: mma.sync, ldmatrix and cp.async (with their
// host versions for the CPU emulator), 64-row tiles of a head in shared memory, and which
// (sequence, tile) of packed sequences a block owns.
#pragma once
#include "common.cuh"

constexpr int ATTN_BM = 64;
constexpr int ATTN_BN = 64;
constexpr int ATTN_THREADS = 128;
constexpr float ATTN_LOG2E = 1.4426950408889634f;
constexpr float ATTN_LN2 = 0.6931471805599453f;

// The PTX instructions below have host versions in the CPU emulator (tests/cuda_emu), which
// compiles these sources as C++ to check them without a GPU.
#ifdef ATOMRL_CUDA_EMU
DEVICE void mma_bf16_16816(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) { emu::mma_m16n8k16_bf16(c, a, b0, b1); }
DEVICE void cp_async16(void* smem, const void* gmem, bool valid) { emu::cp_async16(smem, gmem, valid ? 16 : 0); }
DEVICE void cp_async_commit() { emu::cp_async_commit(); }
template <int N>
DEVICE void cp_async_wait() { emu::cp_async_wait(N); }
DEVICE void ldmatrix_x4_trans(uint32_t* r, const void* smem) { emu::ldmatrix_x4_trans(r, smem); }
#else
DEVICE void mma_bf16_16816(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

DEVICE void cp_async16(void* smem, const void* gmem, bool valid) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    const int n = valid ? 16 : 0;  // 0: zero-fill the 16 bytes
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}

DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
DEVICE void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

DEVICE void ldmatrix_x4_trans(uint32_t* r, const void* smem) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}
#endif

DEVICE uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
}

DEVICE uint32_t lds32(const bf16* p) { return *reinterpret_cast<const uint32_t*>(p); }

// 64 rows of D bf16 from global (row stride `stride` elements) into shared (row stride LD);
// rows at or past `valid_rows` are zero-filled.
template <int D, int LD>
DEVICE void load_tile(bf16* dst, const bf16* src, int stride, int row0, int valid_rows) {
    constexpr int CHUNKS = D / 8;
    for (int i = threadIdx.x; i < ATTN_BN * CHUNKS; i += ATTN_THREADS) {
        const int r = i / CHUNKS, c = i % CHUNKS;
        const bool ok = row0 + r < valid_rows;
        cp_async16(dst + r * LD + c * 8, ok ? src + (size_t)(row0 + r) * stride + c * 8 : src, ok);
    }
}

// A fragments (16 rows of this warp, D columns) of a tile staged in shared memory.
template <int D, int LD>
DEVICE void a_fragments(uint32_t (*f)[4], const bf16* tile, int warp, int g, int t4) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        const bf16* b = tile + (warp * 16 + g) * LD + kk * 16 + 2 * t4;
        f[kk][0] = lds32(b);
        f[kk][1] = lds32(b + 8 * LD);
        f[kk][2] = lds32(b + 8);
        f[kk][3] = lds32(b + 8 * LD + 8);
    }
}

// acc[nn] (16 x 8·NB per warp, in 8-column blocks) += A (16 x D, fragments) · Bᵀ, B the first
// 8·NB rows of `tile` (rows of D): the product of this warp's rows with those rows.
template <int D, int LD, int NB = ATTN_BN / 8>
DEVICE void mma_rows(float (*acc)[4], const uint32_t (*a)[4], const bf16* tile, int g, int t4) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
        for (int nn = 0; nn < NB; ++nn) {
            const bf16* b = tile + (nn * 8 + g) * LD + kk * 16 + 2 * t4;
            mma_bf16_16816(acc[nn], a[kk], lds32(b), lds32(b + 8));
        }
    }
}

// out (16 x D per warp, in 8-column blocks) += X (16 x 16·KB, accumulator layout) · the first
// 16·KB rows of tile (rows of D), X rounded to bf16 and re-packed as A fragments, the tile read
// by ldmatrix.trans.
template <int D, int LD, int KB = ATTN_BN / 16>
DEVICE void mma_acc_tile(float (*out)[4], const float (*x)[4], const bf16* tile, int lane) {
#pragma unroll
    for (int kk = 0; kk < KB; ++kk) {
        uint32_t a[4];
        a[0] = pack_bf16(x[2 * kk][0], x[2 * kk][1]);
        a[1] = pack_bf16(x[2 * kk][2], x[2 * kk][3]);
        a[2] = pack_bf16(x[2 * kk + 1][0], x[2 * kk + 1][1]);
        a[3] = pack_bf16(x[2 * kk + 1][2], x[2 * kk + 1][3]);
#pragma unroll
        for (int nd = 0; nd < D / 16; ++nd) {
            uint32_t b[4];
            const int mi = lane >> 3;
            ldmatrix_x4_trans(b, tile + (kk * 16 + (mi & 1) * 8 + (lane & 7)) * LD + nd * 16 + (mi >> 1) * 8);
            mma_bf16_16816(out[2 * nd], a, b[0], b[1]);
            mma_bf16_16816(out[2 * nd + 1], a, b[2], b[3]);
        }
    }
}

// Zeroes N accumulator blocks of 4.
template <int N>
DEVICE void zero_acc(float (*acc)[4]) {
#pragma unroll
    for (int i = 0; i < N; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
}

// The (sequence, 64-row tile) that block blockIdx.x owns when a grid of tokens/64 + n_seqs
// blocks covers every tile of every sequence in order: the sequence's first token and length,
// the tile's index within it and its number of tiles. False for blocks past the last tile.
DEVICE bool block_tile(const uint32_t* cu_seqlens, int n_seqs, int& seq_start, int& seq_len, int& tile, int& n_tiles) {
    for (int s = 0, first = 0; s < n_seqs; ++s) {
        const int start = (int)cu_seqlens[s], len = (int)cu_seqlens[s + 1] - start;
        const int n = (len + ATTN_BM - 1) / ATTN_BM;
        if ((int)blockIdx.x < first + n) {
            seq_start = start;
            seq_len = len;
            tile = (int)blockIdx.x - first;
            n_tiles = n;
            return true;
        }
        first += n;
    }
    return false;
}
