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
