// The bf16 types and conversions of CUDA's <cuda_bf16.h>, for compiling kernels/*.cu as host
// C++ in the CPU emulator. Round-to-nearest-even like __float2bfloat16_rn; NaN stays NaN.
#pragma once
#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
    uint16_t __x;
};
struct __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
struct float2 {
    float x, y;
};

inline float __bfloat162float(__nv_bfloat16 h) {
    const uint32_t bits = (uint32_t)h.__x << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    __nv_bfloat16 h;
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        h.__x = (uint16_t)((bits >> 16) | 0x40u);  // quiet NaN
        return h;
    }
    bits += 0x7fffu + ((bits >> 16) & 1u);
    h.__x = (uint16_t)(bits >> 16);
    return h;
}

inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
    return __nv_bfloat162{__float2bfloat16_rn(lo), __float2bfloat16_rn(hi)};
}

inline float2 __bfloat1622float2(__nv_bfloat162 v) {
    return float2{__bfloat162float(v.x), __bfloat162float(v.y)};
}
