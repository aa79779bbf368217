// Checks of the emulator itself (scripts/build-cuda-emu.sh runs them): what it must compute, and
// the faults it must report instead of hiding, on small kernels written for the purpose.
#include <cstdio>
#include <cstdlib>

#include "cuda_emu.h"

struct EmuKernel {
    const char* name;
    void (*run)(const void* params);
};
extern "C" int cuLaunchKernel(const EmuKernel*, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void*, void**, void**);

static int failures = 0;

static void expect(bool ok, const char* what) {
    printf("%s: %s\n", ok ? "ok  " : "FAIL", what);
    failures += !ok;
}

static bool run(void (*fn)(const void*), unsigned blocks, unsigned threads, void* params) {
    EmuKernel k{"selftest", fn};
    void* args[] = {params};
    return cuLaunchKernel(&k, blocks, 1, 1, threads, 1, 1, 0, nullptr, args, nullptr) == 0;
}

// Block sums through shared memory and shuffles: out[block] = sum of 0..threads-1.
static void block_sum_kernel(const void* p) {
    __shared__ float part[32];
    float v = (float)threadIdx.x;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0;
        for (unsigned w = 0; w < blockDim.x / 32; ++w) s += part[w];
        ((float*)p)[blockIdx.x] = s;
    }
}

// Half the block skips a __syncthreads the other half waits at.
static void divergent_barrier_kernel(const void*) {
    if (threadIdx.x < 32) __syncthreads();
}

// Lanes 16..31 exit before the others shuffle.
static void partial_warp_shuffle_kernel(const void*) {
    if (threadIdx.x >= 16) return;
    (void)__shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

// A read of a cp.async destination before cp.async.wait_group sees what was there before.
struct CpAsync {
    int before_wait, after_wait;
};
static void cp_async_kernel(const void* p) {
    __shared__ __align__(16) int dst[4];
    static const int src[4] = {7, 7, 7, 7};
    dst[0] = 1;
    emu::cp_async16(dst, src, 16);
    emu::cp_async_commit();
    const int before = dst[0];
    emu::cp_async_wait(0);
    ((CpAsync*)p)->before_wait = before;
    ((CpAsync*)p)->after_wait = dst[0];
}

// Thread 0 writes shared memory that thread 1 reads without a barrier between: out[block] is
// what thread 1 saw.
static void missing_barrier_kernel(const void* p) {
    __shared__ int flag;
    if (threadIdx.x == 0) flag = 0;
    __syncthreads();
    if (threadIdx.x == 0) flag = 1;
    if (threadIdx.x == 1) ((int*)p)[blockIdx.x] = flag;
}

// cp.async to a destination that is not 16-byte aligned.
static void misaligned_cp_async_kernel(const void*) {
    __shared__ __align__(16) int dst[8];
    static const int src[8] = {};
    emu::cp_async16(dst + 1, src, 16);
}

// One mma.m16n8k16 with A[r][c] = r + c / 16 and B[k][n] = k == n: D = A's first 8 columns.
static void mma_kernel(const void* p) {
    const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    auto pack = [](float lo, float hi) {
        const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        uint32_t r;
        std::memcpy(&r, &v, 4);
        return r;
    };
    auto a = [](int r, int c) { return (float)r + (float)c / 16.0f; };
    auto b = [](int k, int n) { return k == n ? 1.0f : 0.0f; };
    const uint32_t af[4] = {pack(a(g, 2 * t), a(g, 2 * t + 1)), pack(a(g + 8, 2 * t), a(g + 8, 2 * t + 1)), pack(a(g, 2 * t + 8), a(g, 2 * t + 9)),
                            pack(a(g + 8, 2 * t + 8), a(g + 8, 2 * t + 9))};
    float c[4] = {0, 0, 0, 0};
    emu::mma_m16n8k16_bf16(c, af, pack(b(2 * t, g), b(2 * t + 1, g)), pack(b(2 * t + 8, g), b(2 * t + 9, g)));
    float* out = (float*)p;  // D[16][8]
    out[g * 8 + 2 * t] = c[0];
    out[g * 8 + 2 * t + 1] = c[1];
    out[(g + 8) * 8 + 2 * t] = c[2];
    out[(g + 8) * 8 + 2 * t + 1] = c[3];
}

int main() {
    float sums[3] = {0, 0, 0};
    expect(run(block_sum_kernel, 3, 256, sums) && sums[0] == 32640.0f && sums[2] == 32640.0f, "block sums by shuffles and shared memory");

    fprintf(stderr, "(the next three launches are meant to fail)\n");
    expect(!run(divergent_barrier_kernel, 1, 64, nullptr), "a __syncthreads that half the block skips is refused");
    expect(!run(partial_warp_shuffle_kernel, 1, 32, nullptr), "a full-mask shuffle after lanes exited is refused");
    expect(!run(misaligned_cp_async_kernel, 1, 1, nullptr), "a cp.async to an address that is not 16-byte aligned is refused");

    int seen[3] = {-1, -1, -1};
    expect(run(missing_barrier_kernel, 3, 32, seen) && (seen[0] != seen[1] || seen[1] != seen[2]),
           "a read of another thread's write without a barrier sees the old value in some blocks");

    CpAsync cp{0, 0};
    expect(run(cp_async_kernel, 1, 1, &cp) && cp.before_wait == 1 && cp.after_wait == 7, "cp.async lands at the wait that retires it");

    float d[16 * 8];
    bool ok = run(mma_kernel, 1, 32, d);
    for (int r = 0; r < 16; ++r)
        for (int n = 0; n < 8; ++n) ok = ok && d[r * 8 + n] == __bfloat162float(__float2bfloat16_rn((float)r + (float)n / 16.0f));
    expect(ok, "mma.m16n8k16 with B = identity returns A's columns where the PTX layout puts them");

    return failures ? 1 : 0;
}
