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
//   swiglu_f16, swiglu_bf16: gate, up and out in the weights' dtype, 8 elements (16 bytes) per
//                 thread (total % 8 == 0); fp32 arithmetic, out rounded to nearest even. The
//                 prefill feed-forward block (gpu.Backend.MatMulFFN) runs it between cuBLAS's
//                 gate/up GEMMs, which write fp16/bf16, and the down GEMM, which reads it: its
//                 h is rounded to that dtype for the down GEMM in either case, so the fp32
//                 round trip (gate, up and h written and read as fp32, h converted again) buys
//                 no accuracy there. Checked against the fp32 path (TestMatMulFFN).
//
// Speed: 12 bytes per element (fp16/bf16: 6), memory-bound. For decode, gemv_<dt>_v2_glu
// (gemv.cu) applies the same silu_mul (common.cuh) in the epilogue of the gate and up
// projections instead.
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

// swiglu_half: out may be gate or up (each element read, then written, by one thread), so plain
// loads, not the read-only path. gate, up and out 16-byte aligned; total % 8 == 0.
template <typename T>
__device__ void swiglu_half(T* out, const T* gate, const T* up, int total) {
    const int tid = blockIdx.x * blockDim.x + threadIdx.x, stride = gridDim.x * blockDim.x;
    const int n8 = total >> 3;
    for (int k = tid; k < n8; k += stride) {
        float g[8], u[8];
        unpack16<T>(reinterpret_cast<const uint4*>(gate)[k], g);
        unpack16<T>(reinterpret_cast<const uint4*>(up)[k], u);
        uint4 o;
        o.x = pack2<T>(silu_mul(g[0], u[0]), silu_mul(g[1], u[1]));
        o.y = pack2<T>(silu_mul(g[2], u[2]), silu_mul(g[3], u[3]));
        o.z = pack2<T>(silu_mul(g[4], u[4]), silu_mul(g[5], u[5]));
        o.w = pack2<T>(silu_mul(g[6], u[6]), silu_mul(g[7], u[7]));
        reinterpret_cast<uint4*>(out)[k] = o;
    }
}

// grid (ceil(total/8/256) capped), block (256); total % 8 == 0.
extern "C" __global__ void swiglu_f16(__half* out, const __half* gate, const __half* up,
                                      int total) {
    pdl_begin();
    swiglu_half(out, gate, up, total);
}
extern "C" __global__ void swiglu_bf16(__nv_bfloat16* out, const __nv_bfloat16* gate,
                                       const __nv_bfloat16* up, int total) {
    pdl_begin();
    swiglu_half(out, gate, up, total);
}
