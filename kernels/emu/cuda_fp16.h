// cuda_fp16.h — host stand-in for CUDA's fp16 header, just what kernels/*.cu use (see emu.h).
#pragma once
#include "emu.h"

struct __align__(2) __half { uint16_t x; };
struct __align__(4) __half2 { __half x, y; };

// __half2float widens exactly (subnormals, inf and NaN included).
inline float __half2float(__half h) {
    const uint32_t s = h.x >> 15, e = (h.x >> 10) & 31, m = h.x & 1023;
    float v;
    if (e == 0) v = ldexpf((float)m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = ldexpf((float)(m | 1024), (int)e - 25);
    return s ? -v : v;
}
// __float2half_rn rounds to nearest even, through the compiler's _Float16 (GCC ≥ 12).
inline __half __float2half_rn(float f) {
    _Float16 h = (_Float16)f;
    __half r;
    memcpy(&r.x, &h, 2);
    return r;
}
inline float2 __half22float2(__half2 h) { return {__half2float(h.x), __half2float(h.y)}; }
inline __half2 __float2half2_rn(float f) { return {__float2half_rn(f), __float2half_rn(f)}; }
inline unsigned short __half_as_ushort(__half h) { return h.x; }
inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
