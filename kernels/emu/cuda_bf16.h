// cuda_bf16.h — host stand-in for CUDA's bf16 header, just what kernels/*.cu use (see emu.h).
#pragma once
#include "cuda_fp16.h"

struct __align__(2) __nv_bfloat16 { uint16_t x; };

inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.x; }
// __float2bfloat16_rn rounds to nearest even; NaN stays a (quiet) NaN.
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return {(uint16_t)((u >> 16) | 0x40)};
    u += 0x7fffu + ((u >> 16) & 1);
    return {(uint16_t)(u >> 16)};
}
