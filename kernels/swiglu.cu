// swiglu.cu — the SwiGLU gate of the LLaMA feed-forward block.
//
//   out[k] = silu(gate[k]) · up[k],  silu(g) = g / (1 + e^−g),   k < total = n·ffn
//
// out may be gate or up (element k is read before it is written, by the same thread).
// The arithmetic is llama2.c's: g · (1/(1+expf(−g))) · u. expf is __expf under --use_fast_math
// (2 ulp + a term growing with |g|); for g < −88, e^−g = inf and silu(g) = −0, as on the CPU.
//
// Versions
//   swiglu_f32_v1: one thread per element.
//   swiglu_f32   : (v2) float4 per thread when total % 4 == 0.
//
// Speed: 12 bytes per element, memory-bound. For decode, gemv_<dt>_v2_glu (gemv.cu) applies the
// same silu_mul (common.cuh) in the epilogue of the gate and up projections instead.
// Checked by model/modeltest (SwiGLU): go test -tags cuda ./gpu -run Conformance/SwiGLU
#include "common.cuh"


// grid (ceil(total/256)), block (256).
extern "C" __global__ void swiglu_f32_v1(float* out, const float* gate, const float* up,
                                         int total) {
    pdl_begin();
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < total; k += gridDim.x * blockDim.x)
        out[k] = silu_mul(gate[k], up[k]);
}

// grid (ceil(total/4/256)), block (256); total % 4 == 0. No __restrict__/__ldg: out may alias.
extern "C" __global__ void swiglu_f32(float* out, const float* gate, const float* up, int total) {
    pdl_begin();
    const int n4 = total >> 2;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < n4; k += gridDim.x * blockDim.x) {
        float4 g = reinterpret_cast<const float4*>(gate)[k];
        float4 u = reinterpret_cast<const float4*>(up)[k];
        float4 o;
        o.x = silu_mul(g.x, u.x);
        o.y = silu_mul(g.y, u.y);
        o.z = silu_mul(g.z, u.z);
        o.w = silu_mul(g.w, u.w);
        reinterpret_cast<float4*>(out)[k] = o;
    }
}
