// The CUDA device language on the host: what kernels/*.cu use, so that the same sources compile
// as C++ into the CPU emulator (force-included before each kernel file; see emulator.cpp).
//
// Each thread of a block is a fiber; __syncthreads and every warp-wide operation (shuffles,
// mma.sync, ldmatrix) are barriers the scheduler enforces. __shared__ becomes thread_local
// static: the blocks of one launch run one after another on the launching thread.
#pragma once
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "cuda_bf16.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict

struct uint3 {
    unsigned x, y, z;
};
struct uint4 {
    unsigned x, y, z, w;
};

namespace emu {
uint3 thread_idx();
uint3 block_idx();
uint3 block_dim();
uint3 grid_dim();
void syncthreads();
// Every lane of the calling warp puts `bytes` of `in` on the table, then reads lane `src`'s.
void warp_exchange(const void* in, void* out, size_t bytes, int src);
void mma_m16n8k16_bf16(float* c, const uint32_t* a, uint32_t b0, uint32_t b1);
void ldmatrix_x4_trans(uint32_t* r, const void* smem);
void cp_async16(void* smem, const void* gmem, int bytes);
void cp_async_commit();
void cp_async_wait(int pending);
}  // namespace emu

#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::block_idx())
#define blockDim (::emu::block_dim())
#define gridDim (::emu::grid_dim())

inline void __syncthreads() { emu::syncthreads(); }

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int mask) {
    T r;
    emu::warp_exchange(&v, &r, sizeof(T), (int)(threadIdx.x & 31) ^ mask);
    return r;
}

template <class T>
inline T __shfl_up_sync(unsigned, T v, unsigned delta) {
    const int lane = (int)(threadIdx.x & 31);
    T r;
    emu::warp_exchange(&v, &r, sizeof(T), lane >= (int)delta ? lane - (int)delta : lane);
    return r;
}

// Atomics: the fibers of a launch share one OS thread and never preempt each other.
template <class T>
inline T atomicAdd(T* p, T v) {
    const T old = *p;
    *p = old + v;
    return old;
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* p, __nv_bfloat16 v) {
    const __nv_bfloat16 old = *p;
    *p = __float2bfloat16_rn(__bfloat162float(old) + __bfloat162float(v));
    return old;
}
template <class T>
inline T atomicMin(T* p, T v) {
    const T old = *p;
    if (v < old) *p = v;
    return old;
}
template <class T>
inline T atomicMax(T* p, T v) {
    const T old = *p;
    if (v > old) *p = v;
    return old;
}

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }

inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }
inline float __expf(float a) { return std::exp(a); }
inline float __sinf(float a) { return std::sin(a); }
inline float __cosf(float a) { return std::cos(a); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }

template <class To, class From>
inline To emu_bits(From v) {
    To r;
    std::memcpy(&r, &v, sizeof(To));
    return r;
}
inline int __float_as_int(float f) { return emu_bits<int>(f); }
inline unsigned __float_as_uint(float f) { return emu_bits<unsigned>(f); }
inline float __int_as_float(int i) { return emu_bits<float>(i); }
inline float __uint_as_float(unsigned i) { return emu_bits<float>(i); }
