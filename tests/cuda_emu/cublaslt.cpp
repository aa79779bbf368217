// A CPU stand-in for libcublasLt.so: the descriptor calls and cublasLtMatmul, as the CUDA
// backend uses them (column-major layouts, TRANSA/TRANSB, bf16 or f32 operands, f32 compute),
// computed with a plain loop in f32 and written as the output layout's type. It follows the
// cuBLASLt documentation of those calls, so a wrong layout, leading dimension or transpose in the
// backend gives wrong numbers here as it would on a GPU.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "include/cuda_bf16.h"

extern "C" {

typedef int cublasStatus_t;
enum { SUCCESS = 0, INVALID_VALUE = 7, NOT_SUPPORTED = 15 };
enum { R_32F = 0, R_16BF = 14 };
enum { DESC_TRANSA = 3, DESC_TRANSB = 4 };

struct Desc {
    int trans_a = 0, trans_b = 0;
};
struct Layout {
    int type;
    uint64_t rows, cols;
    int64_t ld;
};
struct Algo {
    uint64_t data[8];
};
struct HeuristicResult {
    Algo algo;
    size_t workspace_size;
    cublasStatus_t state;
    float waves;
    int reserved[4];
};

static int g_handle;
static int g_pref;

cublasStatus_t cublasLtCreate(void** h) {
    *h = &g_handle;
    return SUCCESS;
}
cublasStatus_t cublasLtDestroy(void*) { return SUCCESS; }

cublasStatus_t cublasLtMatmulDescCreate(Desc** d, int compute, int scale) {
    if (compute != 68 /* CUBLAS_COMPUTE_32F */ || scale != R_32F) return NOT_SUPPORTED;
    *d = new Desc();
    return SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(Desc* d) {
    delete d;
    return SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(Desc* d, int attr, const void* buf, size_t n) {
    if (n != sizeof(int32_t)) return INVALID_VALUE;
    int32_t v;
    std::memcpy(&v, buf, n);
    if (attr == DESC_TRANSA) d->trans_a = v;
    else if (attr == DESC_TRANSB) d->trans_b = v;
    else return NOT_SUPPORTED;
    return SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(Layout** l, int type, uint64_t rows, uint64_t cols, int64_t ld) {
    if (type != R_32F && type != R_16BF) return NOT_SUPPORTED;
    if (ld < (int64_t)rows) return INVALID_VALUE;  // column-major: ld >= rows
    *l = new Layout{type, rows, cols, ld};
    return SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(Layout* l) {
    delete l;
    return SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(void** p) {
    *p = &g_pref;
    return SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(void*, int, const void*, size_t) { return SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceDestroy(void*) { return SUCCESS; }

// op(A) is m x k, op(B) k x n, C and D m x n.
static bool shapes(const Desc* d, const Layout* a, const Layout* b, const Layout* c, uint64_t* m, uint64_t* n, uint64_t* k) {
    *m = d->trans_a ? a->cols : a->rows;
    *k = d->trans_a ? a->rows : a->cols;
    const uint64_t kb = d->trans_b ? b->cols : b->rows;
    *n = d->trans_b ? b->rows : b->cols;
    return kb == *k && c->rows == *m && c->cols == *n;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(void*, Desc* d, Layout* a, Layout* b, Layout* c, Layout* dl, void*, int requested, HeuristicResult* out,
                                              int* count) {
    uint64_t m, n, k;
    if (requested < 1 || !shapes(d, a, b, c, &m, &n, &k) || dl->rows != c->rows || dl->cols != c->cols) return INVALID_VALUE;
    std::memset(&out[0], 0, sizeof out[0]);
    out[0].waves = 1.0f;
    *count = 1;
    return SUCCESS;
}

static float get(const Layout* l, const void* p, uint64_t r, uint64_t c) {
    const uint64_t i = c * (uint64_t)l->ld + r;
    return l->type == R_16BF ? __bfloat162float(((const __nv_bfloat16*)p)[i]) : ((const float*)p)[i];
}

cublasStatus_t cublasLtMatmul(void*, Desc* d, const float* alpha, const void* A, Layout* a, const void* B, Layout* b, const float* beta, const void* C,
                              Layout* c, void* D, Layout* dl, const Algo*, void*, size_t, void*) {
    uint64_t m, n, k;
    if (!shapes(d, a, b, c, &m, &n, &k) || dl->rows != m || dl->cols != n || dl->type != c->type) return INVALID_VALUE;
    // op(A) as m rows of k and op(B) as n rows of k, contiguous, then dot products (8 partial sums).
    std::vector<float> ar(m * k), bt(n * k);
    for (uint64_t i = 0; i < m; ++i)
        for (uint64_t p = 0; p < k; ++p) ar[i * k + p] = d->trans_a ? get(a, A, p, i) : get(a, A, i, p);
    for (uint64_t j = 0; j < n; ++j)
        for (uint64_t p = 0; p < k; ++p) bt[j * k + p] = d->trans_b ? get(b, B, j, p) : get(b, B, p, j);
    for (uint64_t j = 0; j < n; ++j) {
        const float* y = &bt[j * k];
        for (uint64_t i = 0; i < m; ++i) {
            const float* x = &ar[i * k];
            float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            uint64_t p = 0;
            for (; p + 8 <= k; p += 8)
                for (int e = 0; e < 8; ++e) part[e] += x[p + e] * y[p + e];
            for (; p < k; ++p) part[0] += x[p] * y[p];
            const float acc = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
            const float v = *alpha * acc + (*beta != 0.0f ? *beta * get(c, C, i, j) : 0.0f);
            const uint64_t o = j * (uint64_t)dl->ld + i;
            if (dl->type == R_16BF) ((__nv_bfloat16*)D)[o] = __float2bfloat16_rn(v);
            else ((float*)D)[o] = v;
        }
    }
    return SUCCESS;
}

}  // extern "C"
