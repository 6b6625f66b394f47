// rmsnorm.cu — RMSNorm (Zhang & Sennrich 2019) as LLaMA uses it.
//
//   out[i, j] = w[j] · (x[i, j] · 1/sqrt(Σ_j x[i, j]² / dim + eps))
//               out, x (n, dim) fp32 (out may be x); w (dim) fp32
//
// The arithmetic follows llama2.c (and the cpu package): ss = Σx² in fp32, ss = ss/dim + eps,
// inv = 1/sqrtf(ss), out = w·(inv·x). Only the order of the sum differs (a tree instead of a
// left-to-right loop), which the conformance tolerance allows. With --use_fast_math, 1/sqrtf is
// the approximate reciprocal square root (≤ 2 ulp).
//
// Versions
//   rmsnorm_f32_v1: one block of 256 threads per row, scalar strided loops, two passes over x.
//   rmsnorm_f32   : (v2) one block per row sized to the row (blockDim = dim/4 rounded up to a
//                   warp, ≤ 1024), each thread keeping its ≤ 4 float4s of x in registers, so x is
//                   read once and w once; needs dim % 4 == 0 and dim ≤ 16384 (else v1).
//   add_rmsnorm_f32: v2 with the residual add x += y in front (model.AddRMSNormer).
//
// Speed: memory-bound, 8·n·dim bytes + the weight. For decode (n = 1) a single block cannot use
// the whole GPU's bandwidth; it is latency-bound (~3-5 µs: one load, one reduction, one store),
// which is why v2 loads everything up front, and why add_rmsnorm_f32 below fuses it with the
// residual add before it (one launch instead of two, twice per layer).
// Checked by model/modeltest (RMSNorm): go test -tags cuda ./gpu -run Conformance/RMSNorm
#include "common.cuh"

// grid (n), block (256).
extern "C" __global__ void rmsnorm_f32_v1(float* out, const float* x, const float* w, int dim,
                                          float eps) {
    pdl_begin();
    __shared__ float scratch[32];
    const float* xr = x + (int64_t)blockIdx.x * dim;
    float* orow = out + (int64_t)blockIdx.x * dim;
    float ss = 0.f;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) ss += xr[j] * xr[j];
    ss = block_sum(ss, scratch);
    const float inv = 1.f / sqrtf(ss / (float)dim + eps);
    // Each thread writes only the elements it read: safe when out == x.
    for (int j = threadIdx.x; j < dim; j += blockDim.x) orow[j] = w[j] * (inv * xr[j]);
}

#define RMSNORM_MAXV 4  // float4s per thread: dim ≤ 4·4·1024 = 16384

// rmsnorm_v2_store ends rmsnorm_f32 (and add_rmsnorm_f32): the block's Σx² from each thread's
// partial ss, then out = w·(x/rms) for the float4s v the thread holds.
LLAMACU_DEVICE void rmsnorm_v2_store(float4* __restrict__ orow, const float4* __restrict__ w4,
                                     const float4 (&v)[RMSNORM_MAXV], float ss, int dim, float eps,
                                     float* scratch) {
    const int d4 = dim >> 2;
    ss = block_sum(ss, scratch);
    const float inv = 1.f / sqrtf(ss / (float)dim + eps);
#pragma unroll
    for (int k = 0; k < RMSNORM_MAXV; k++) {
        const int j = threadIdx.x + k * blockDim.x;
        if (j < d4) {
            const float4 g = __ldg(w4 + j);
            float4 o;
            o.x = g.x * (inv * v[k].x);
            o.y = g.y * (inv * v[k].y);
            o.z = g.z * (inv * v[k].z);
            o.w = g.w * (inv * v[k].w);
            orow[j] = o;
        }
    }
}

// grid (n), block (roundup32(dim/4) ≤ 1024); dim % 4 == 0, dim/4 ≤ RMSNORM_MAXV·blockDim.
extern "C" __global__ void rmsnorm_f32(float* out, const float* x, const float* w, int dim,
                                       float eps) {
    pdl_begin();
    __shared__ float scratch[32];
    const int d4 = dim >> 2;
    const float4* xr = reinterpret_cast<const float4*>(x + (int64_t)blockIdx.x * dim);
    float4* orow = reinterpret_cast<float4*>(out + (int64_t)blockIdx.x * dim);
    const float4* w4 = reinterpret_cast<const float4*>(w);
    float4 v[RMSNORM_MAXV];
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < RMSNORM_MAXV; k++) {
        const int j = threadIdx.x + k * blockDim.x;
        if (j < d4) {
            v[k] = xr[j];
            ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
        }
    }
    rmsnorm_v2_store(orow, w4, v, ss, dim, eps, scratch);
}

// add_rmsnorm_f32 (fused): the residual add and the RMSNorm that follows it in LLaMA's block,
//   xout[i, :] = x[i, :] + y[i, :];  out[i, :] = rmsnorm(xout[i, :])·w
// in one launch, with rmsnorm_f32's layout and arithmetic (and add_f32's float4 adds): bit for bit
// Add then RMSNorm. xout is x (the add in place) or another buffer (model.NormFolder's moving
// residual, where gemv.cu's v3n kernels do not apply). out may be y: each thread reads its
// elements of x and y before the barrier inside block_sum and writes only those elements after it.
// grid (n), block (roundup32(dim/4) ≤ 1024); dim % 4 == 0, dim/4 ≤ RMSNORM_MAXV·blockDim.
extern "C" __global__ void add_rmsnorm_f32(float* out, float* xout, const float* x, const float* y,
                                           const float* w, int dim, float eps) {
    pdl_begin();
    __shared__ float scratch[32];
    const int d4 = dim >> 2;
    const float4* xr = reinterpret_cast<const float4*>(x + (int64_t)blockIdx.x * dim);
    float4* xo = reinterpret_cast<float4*>(xout + (int64_t)blockIdx.x * dim);
    const float4* yr = reinterpret_cast<const float4*>(y + (int64_t)blockIdx.x * dim);
    float4* orow = reinterpret_cast<float4*>(out + (int64_t)blockIdx.x * dim);
    const float4* w4 = reinterpret_cast<const float4*>(w);
    float4 v[RMSNORM_MAXV];
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < RMSNORM_MAXV; k++) {
        const int j = threadIdx.x + k * blockDim.x;
        if (j < d4) {
            float4 a = xr[j];
            const float4 c = yr[j];
            a.x += c.x;
            a.y += c.y;
            a.z += c.z;
            a.w += c.w;
            v[k] = a;
            xo[j] = a;
            ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
        }
    }
    rmsnorm_v2_store(orow, w4, v, ss, dim, eps, scratch);
}
