// A CPU stand-in for libcuda.so: the part of the driver API the CUDA backend calls, with the
// kernels of kernels/*.cu compiled as host C++ (kernels.cpp) and run here, thread by thread.
//
// "Device" memory is host memory, so device pointers are host addresses and copies are memcpy.
// Every launch runs synchronously on the calling thread. A block's threads are fibers (a
// stack each and a six-register context switch, x86-64 only) that the scheduler below runs until each reaches a barrier: __syncthreads for the
// block, or a warp-wide operation (shuffle, mma.sync, ldmatrix) for its warp. A barrier that
// some thread of its block or warp has exited before, or skips, a block that can make no
// progress (divergent barriers), and a misaligned cp.async or ldmatrix address fail the launch
// with a message on stderr.
// cp.async copies land at the cp.async.wait_group that retires their group, the latest moment
// the hardware may deliver them, so a read that waits too little sees stale data.
#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cuda_emu.h"

struct EmuKernel {
    const char* name;
    void (*run)(const void* params);
};
extern const EmuKernel emu_kernels[];
extern const size_t emu_kernel_count;

namespace {

constexpr int WARP = 32;
constexpr size_t STACK_BYTES = 256 << 10;
constexpr size_t SLOT_BYTES = 32;

enum class State { Ready, AtBlockBarrier, AtWarpBarrier, Done };

struct Copy {
    void* dst;
    const void* src;
    int bytes;
};

// A fiber's saved stack pointer; the callee-saved registers sit on its stack.
struct Context {
    void* sp = nullptr;
};

// Saves the caller's callee-saved registers and stack pointer in *from, resumes `to`.
extern "C" void emu_switch(void** from, void* to);
asm(R"(
    .text
    .p2align 4
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");

void ctx_switch(Context& from, const Context& to) { emu_switch(&from.sp, to.sp); }

// A fresh context whose first resumption enters `entry` (which must never return) on `stack`,
// aligned as if `entry` had been called.
Context ctx_new(char* stack, size_t bytes, void (*entry)()) {
    uintptr_t top = ((uintptr_t)(stack + bytes) & ~(uintptr_t)15) - 16;
    void** sp = (void**)top;
    sp[1] = nullptr;        // above the return address
    sp[0] = (void*)entry;   // popped by `ret`; entry then sees rsp = top + 8, as after a call
    sp -= 6;                // r15 r14 r13 r12 rbx rbp
    for (int i = 0; i < 6; ++i) sp[i] = nullptr;
    return Context{(void*)sp};
}

struct Fiber {
    Context ctx;
    uint3 tid;
    State state = State::Ready;
    std::vector<std::vector<Copy>> groups;  // committed cp.async groups, oldest first
    std::vector<Copy> open;                 // issued since the last commit
};

struct Warp {
    int size = 0, live = 0, arrived = 0;
    unsigned gen = 0;
    // Exchange table, double-buffered by generation: a lane released from barrier g may write
    // table (g+1)&1 while slower lanes still read table g&1.
    unsigned char table[2][WARP][SLOT_BYTES];
};

struct Block {
    const EmuKernel* kernel;
    const void* params;
    uint3 bdim, gdim, bidx;
    int n = 0, live = 0, arrived = 0, cur = 0;
    bool descending = false;  // hand off to the previous lane instead of the next
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    Context sched;
    std::string error;
};

thread_local Block* tl_block = nullptr;
thread_local std::vector<std::unique_ptr<char[]>> tl_stacks;

Block& block() { return *tl_block; }
Fiber& fiber() { return block().fibers[block().cur]; }
Warp& warp() { return block().warps[block().cur / WARP]; }
int lane() { return block().cur % WARP; }

// Stops the calling fiber for good and fails the launch with `fmt`.
[[noreturn]] void fail(const char* fmt, ...) {
    Block& b = block();
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (b.error.empty()) b.error = msg;
    fiber().state = State::Done;
    ctx_switch(fiber().ctx, b.sched);
    abort();  // a failed fiber is never resumed
}

// Passes control to the next ready lane of the caller's warp (the common case after a lane
// reaches a warp-wide operation), else back to the scheduler.
void yield() {
    Block& b = block();
    Fiber& self = b.fibers[b.cur];
    const int first = b.cur / WARP * WARP, size = b.warps[b.cur / WARP].size;
    for (int k = 1; k < size; ++k) {
        const int step = b.descending ? size - k : k;
        const int i = first + (b.cur - first + step) % size;
        if (b.fibers[i].state == State::Ready) {
            b.cur = i;
            ctx_switch(self.ctx, b.fibers[i].ctx);
            return;
        }
    }
    ctx_switch(self.ctx, b.sched);
}

void release_block() {
    Block& b = block();
    b.arrived = 0;
    for (Fiber& f : b.fibers)
        if (f.state == State::AtBlockBarrier) f.state = State::Ready;
}

void release_warp(Warp& w, int first) {
    w.arrived = 0;
    ++w.gen;
    Block& b = block();
    for (int i = first; i < first + w.size; ++i)
        if (b.fibers[i].state == State::AtWarpBarrier) b.fibers[i].state = State::Ready;
}

void warp_barrier() {
    Block& b = *tl_block;
    Warp& w = b.warps[b.cur / WARP];
    if (w.live != WARP) fail("a full-warp operation in warp %d with %d live lanes (all 32 must take part)", b.cur / WARP, w.live);
    b.fibers[b.cur].state = State::AtWarpBarrier;
    if (++w.arrived == w.live) {
        release_warp(w, b.cur / WARP * WARP);
        return;
    }
    yield();
}

void land(const std::vector<Copy>& group) {
    for (const Copy& c : group) {
        if (c.bytes) std::memcpy(c.dst, c.src, c.bytes);
        std::memset((char*)c.dst + c.bytes, 0, 16 - c.bytes);
    }
}

[[noreturn]] void fiber_main() {
    Block& b = block();
    b.kernel->run(b.params);
    Fiber& f = fiber();
    for (auto& g : f.groups) land(g);
    land(f.open);
    f.state = State::Done;
    --b.live;
    Warp& w = warp();
    --w.live;
    if (w.arrived > 0) fail("thread %d exited while its warp waits at a warp-wide operation", b.cur);
    if (b.arrived > 0) fail("thread %d exited while %d threads wait at __syncthreads", b.cur, b.arrived);
    ctx_switch(f.ctx, b.sched);
    abort();  // a finished fiber is never resumed
}

bool run_block(Block& b) {
    const int n = b.n;
    while ((int)tl_stacks.size() < n) tl_stacks.emplace_back(new char[STACK_BYTES]);
    b.fibers.assign(n, Fiber());
    b.warps.assign((n + WARP - 1) / WARP, Warp());
    for (int i = 0; i < n; ++i) {
        Warp& w = b.warps[i / WARP];
        ++w.size;
        ++w.live;
        b.fibers[i].ctx = ctx_new(tl_stacks[i].get(), STACK_BYTES, fiber_main);
        const unsigned t = (unsigned)i;
        b.fibers[i].tid = uint3{t % b.bdim.x, t / b.bdim.x % b.bdim.y, t / (b.bdim.x * b.bdim.y)};
    }
    b.live = n;
    b.arrived = 0;
    // Threads start in ascending, descending or shuffled order, by block, so that a read of
    // another thread's write that lacks a barrier sees the stale value in some of them.
    std::vector<int> order(n);
    for (int i = 0; i < n; ++i) order[i] = i;
    const unsigned mode = (b.bidx.x + b.bidx.y + b.bidx.z) % 3;
    b.descending = mode == 1;
    if (mode == 1) std::reverse(order.begin(), order.end());
    if (mode == 2) {
        uint32_t x = 0x9e3779b9u ^ (b.bidx.x * 73856093u) ^ (b.bidx.y * 19349663u) ^ (b.bidx.z * 83492791u);
        for (int i = n - 1; i > 0; --i) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            std::swap(order[i], order[x % (uint32_t)(i + 1)]);
        }
    }
    for (;;) {
        bool ran = false, done = true;
        for (int k = 0; k < n; ++k) {
            const int i = order[k];
            if (b.fibers[i].state == State::Ready) {
                b.cur = i;
                ctx_switch(b.sched, b.fibers[i].ctx);
                ran = true;
                if (!b.error.empty()) return false;
            }
            if (b.fibers[i].state != State::Done) done = false;
        }
        if (done) return true;
        if (!ran) {
            int at_block = 0, at_warp = 0;
            for (const Fiber& f : b.fibers) {
                at_block += f.state == State::AtBlockBarrier;
                at_warp += f.state == State::AtWarpBarrier;
            }
            char msg[256];
            snprintf(msg, sizeof msg, "deadlock: %d threads wait at __syncthreads, %d at warp-wide operations, %d exited", at_block, at_warp, n - b.live);
            b.error = msg;
            return false;
        }
    }
}

bool launch(const EmuKernel* k, uint3 grid, uint3 blk, const void* params) {
    Block b;
    b.kernel = k;
    b.params = params;
    b.gdim = grid;
    b.bdim = blk;
    b.n = (int)(blk.x * blk.y * blk.z);
    Block* outer = tl_block;
    tl_block = &b;
    bool ok = true;
    for (unsigned z = 0; z < grid.z && ok; ++z)
        for (unsigned y = 0; y < grid.y && ok; ++y)
            for (unsigned x = 0; x < grid.x && ok; ++x) {
                b.bidx = uint3{x, y, z};
                ok = run_block(b);
            }
    if (!ok)
        fprintf(stderr, "cuda-emu: kernel %s, block (%u,%u,%u) of (%u,%u,%u), %u threads: %s\n", k->name, b.bidx.x, b.bidx.y, b.bidx.z, grid.x, grid.y,
                grid.z, b.n, b.error.c_str());
    tl_block = outer;
    return ok;
}

}  // namespace

// ---- the device language (cuda_emu.h)

namespace emu {

uint3 thread_idx() {
    const Block& b = block();
    return b.fibers[b.cur].tid;
}
uint3 block_idx() { return block().bidx; }
uint3 block_dim() { return block().bdim; }
uint3 grid_dim() { return block().gdim; }

void syncthreads() {
    Block& b = block();
    // CUDA requires every thread of the block to reach each __syncthreads.
    if (b.live < b.n) fail("__syncthreads after %d threads of the block exited", b.n - b.live);
    fiber().state = State::AtBlockBarrier;
    if (++b.arrived == b.live) {
        release_block();
        return;
    }
    yield();
}

void warp_exchange(const void* in, void* out, size_t bytes, int src) {
    Block& b = *tl_block;
    Warp& w = b.warps[b.cur / WARP];
    const unsigned g = w.gen & 1;
    std::memcpy(w.table[g][b.cur % WARP], in, bytes);
    warp_barrier();
    std::memcpy(out, w.table[g][src & (WARP - 1)], bytes);
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, fragments as the PTX ISA lays them out
// (groupID = lane / 4, t = lane % 4):
//   A 16x16: a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..]
//   B 16x8:  b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   C 16x8:  c[0..1] = C[g][2t..2t+1], c[2..3] = C[g+8][2t..2t+1]
// (the lower 16 bits of a register hold the lower column or row index).
void mma_m16n8k16_bf16(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
    struct In {
        uint32_t a[4], b[2];
    } in{{a[0], a[1], a[2], a[3]}, {b0, b1}};
    static_assert(sizeof(In) <= SLOT_BYTES, "slot too small");
    Warp& w = warp();
    const unsigned g = w.gen & 1;
    std::memcpy(w.table[g][lane()], &in, sizeof in);
    warp_barrier();
    auto lane_in = [&](int l) {
        In v;
        std::memcpy(&v, w.table[g][l], sizeof v);
        return v;
    };
    auto half = [](uint32_t r, int hi) { return __bfloat162float(__nv_bfloat16{(uint16_t)(hi ? r >> 16 : r & 0xffffu)}); };
    auto A = [&](int row, int col) { return half(lane_in((row % 8) * 4 + (col % 8) / 2).a[row / 8 + 2 * (col / 8)], col & 1); };
    auto B = [&](int k, int col) { return half(lane_in(col * 4 + (k % 8) / 2).b[k / 8], k & 1); };
    const int gid = lane() / 4, t = lane() % 4;
    for (int i = 0; i < 4; ++i) {
        const int row = gid + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
        float acc = c[i];
        for (int k = 0; k < 16; ++k) acc += A(row, k) * B(k, col);
        c[i] = acc;
    }
}

// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16: lanes 8i..8i+7 give the addresses of rows
// 0..7 of matrix i (8 b16 each); with .trans, lane l receives in r[i] the elements
// M_i[2(l%4)][l/4] (low half) and M_i[2(l%4)+1][l/4] (high half).
void ldmatrix_x4_trans(uint32_t* r, const void* smem) {
    Warp& w = warp();
    const unsigned g = w.gen & 1;
    if ((uintptr_t)smem % 16) fail("ldmatrix row address not 16-byte aligned");
    std::memcpy(w.table[g][lane()], &smem, sizeof smem);
    warp_barrier();
    auto row = [&](int l) {
        const uint16_t* p;
        std::memcpy(&p, w.table[g][l], sizeof p);
        return p;
    };
    const int l = lane();
    for (int i = 0; i < 4; ++i) {
        const uint16_t lo = row(8 * i + 2 * (l % 4))[l / 4], hi = row(8 * i + 2 * (l % 4) + 1)[l / 4];
        r[i] = (uint32_t)lo | ((uint32_t)hi << 16);
    }
}

void cp_async16(void* smem, const void* gmem, int bytes) {
    if ((uintptr_t)smem % 16 || (bytes && (uintptr_t)gmem % 16)) fail("cp.async.cg with a source or destination not 16-byte aligned");
    fiber().open.push_back(Copy{smem, gmem, bytes});
}

void cp_async_commit() {
    Fiber& f = fiber();
    f.groups.push_back(std::move(f.open));
    f.open.clear();
}

void cp_async_wait(int pending) {
    Fiber& f = fiber();
    while ((int)f.groups.size() > pending) {
        land(f.groups.front());
        f.groups.erase(f.groups.begin());
    }
}

}  // namespace emu

// ---- the driver API subset

extern "C" {

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void* CUcontext;
typedef void* CUstream;
typedef void* CUmodule;
typedef const EmuKernel* CUfunction;

enum {
    OK = 0,
    INVALID_VALUE = 1,
    OUT_OF_MEMORY = 2,
    INVALID_DEVICE = 101,
    NOT_FOUND = 500,
    LAUNCH_FAILED = 719,
    NOT_SUPPORTED = 801,
};

static int g_ctx_token, g_stream_token, g_module_token;
static thread_local CUcontext tl_ctx = nullptr;

CUresult cuInit(unsigned) { return OK; }
CUresult cuDriverGetVersion(int* v) {
    *v = 13000;
    return OK;
}
CUresult cuDeviceGetCount(int* n) {
    *n = 1;
    return OK;
}
CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (ordinal != 0) return INVALID_DEVICE;
    *d = 0;
    return OK;
}
CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    snprintf(name, (size_t)len, "atomrl CPU emulator (not a GPU)");
    return OK;
}
CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice) {
    switch (attr) {
        case 16: *v = 132; break;  // multiprocessors, as an H100 SXM
        case 75: *v = 9; break;    // compute capability 9.0
        case 76: *v = 0; break;
        default: *v = 0;
    }
    return OK;
}
CUresult cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice) {
    *c = &g_ctx_token;
    return OK;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return OK; }
CUresult cuCtxSetCurrent(CUcontext c) {
    tl_ctx = c;
    return OK;
}
CUresult cuCtxGetCurrent(CUcontext* c) {
    *c = tl_ctx;
    return OK;
}
CUresult cuCtxGetDevice(CUdevice* d) {
    *d = 0;
    return OK;
}
CUresult cuCtxSynchronize() { return OK; }
CUresult cuStreamCreate(CUstream* s, unsigned) {
    *s = &g_stream_token;
    return OK;
}
CUresult cuStreamCreateWithPriority(CUstream* s, unsigned, int) {
    *s = &g_stream_token;
    return OK;
}
CUresult cuStreamDestroy_v2(CUstream) { return OK; }
CUresult cuStreamSynchronize(CUstream) { return OK; }

CUresult cuModuleLoadData(CUmodule* m, const void*) {
    *m = &g_module_token;
    return OK;
}
CUresult cuModuleUnload(CUmodule) { return OK; }
CUresult cuModuleGetFunction(CUfunction* f, CUmodule, const char* name) {
    for (size_t i = 0; i < emu_kernel_count; ++i)
        if (std::strcmp(emu_kernels[i].name, name) == 0) {
            *f = &emu_kernels[i];
            return OK;
        }
    return NOT_FOUND;
}

CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned, CUstream, void** params,
                        void** extra) {
    if (!f || !params || extra || bx * by * bz == 0 || bx * by * bz > 1024 || gx * gy * gz == 0) return INVALID_VALUE;
    return launch(f, uint3{gx, gy, gz}, uint3{bx, by, bz}, params[0]) ? OK : LAUNCH_FAILED;
}

CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
    void* m = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (!m) return OUT_OF_MEMORY;
    *p = (CUdeviceptr)m;
    return OK;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
    std::free((void*)p);
    return OK;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, CUstream) {
    std::memcpy((void*)dst, src, n);
    return OK;
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, CUstream) {
    std::memcpy(dst, (const void*)src, n);
    return OK;
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream) {
    std::memmove((void*)dst, (const void*)src, n);
    return OK;
}
CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, CUstream) {
    std::memset((void*)p, v, n);
    return OK;
}
CUresult cuMemsetD16Async(CUdeviceptr p, unsigned short v, size_t n, CUstream) {
    for (size_t i = 0; i < n; ++i) ((unsigned short*)p)[i] = v;
    return OK;
}
CUresult cuMemsetD32Async(CUdeviceptr p, unsigned v, size_t n, CUstream) {
    for (size_t i = 0; i < n; ++i) ((unsigned*)p)[i] = v;
    return OK;
}

CUresult cuGetErrorString(CUresult e, const char** s) {
    switch (e) {
        case OK: *s = "no error"; break;
        case INVALID_VALUE: *s = "invalid argument"; break;
        case OUT_OF_MEMORY: *s = "out of memory"; break;
        case NOT_FOUND: *s = "named symbol not found"; break;
        case LAUNCH_FAILED: *s = "kernel failed in the CPU emulator (see stderr)"; break;
        default: *s = "error in the CPU emulator";
    }
    return OK;
}
CUresult cuGetErrorName(CUresult e, const char** s) {
    switch (e) {
        case OK: *s = "CUDA_SUCCESS"; break;
        case LAUNCH_FAILED: *s = "CUDA_ERROR_LAUNCH_FAILED"; break;
        default: *s = "CUDA_ERROR_UNKNOWN";
    }
    return OK;
}

}  // extern "C"
