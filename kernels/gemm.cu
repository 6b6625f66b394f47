// gemm.cu — the prefill matmul (many activation rows), and the conversions it needs.
//
//   out[i, r] = Σ_k x[i, k] · w[r, k]      out (n, N) fp32; x (n, K) fp32; w (N, K) f32|f16|bf16
//
// Which: for n > 8 rows the CUDA backend calls cuBLAS (cublasGemmEx through the cuda package,
// loaded with dlopen): x is first rounded to the weight dtype by convert_f32_to_<dt> (tensor
// cores take fp16/bf16 pairs), then Y = X·Wᵀ with fp32 output and fp32 accumulation
// (CUBLAS_COMPUTE_32F). The feed-forward block's prefill (gpu.Backend.MatMulFFN) rounds x once
// for the gate and up GEMMs, has cuBLAS write them in the weight dtype, and feeds
// swiglu_<dt>'s output (swiglu.cu) to the down GEMM as it is; q, k and v share one rounding of x
// too, and are written in the weight dtype for rope.cu's rope_qk_store_kv_<kv>_from_<dt>.
// (Options.F32Intermediates / LLAMACU_INTERMEDIATES=f32 keeps every output fp32.) Why cuBLAS and not a hand-written mma.sync GEMM: prefill is
// compute-bound, and cuBLAS reaches 70-80% of the tensor-core peak on every shape and
// architecture from sm_80 to sm_90 (wgmma on Hopper, which CUDA 11.8 cannot emit); a
// hand-written kernel would take weeks to match it, while the decode GEMVs (gemv.cu), where
// cuBLAS is weak at n = 1, are ours. When libcublas cannot be loaded the backend falls back to
// gemv_<dt>_v2_n8 over 8-row slices (correct, but it rereads the weights n/8 times).
//
// Rounding x to fp16 costs ~3 decimal digits of the activations (bf16: ~2); the conformance
// tolerances for the CUDA backend allow it (gpu/conformance_test.go).
//
// Versions
//   gemm_<dt>_v1: one thread per output element, plain loop over K. The readable reference that
//                 the cuBLAS path is compared with (TestMatMulPaths).
//   convert_f32_to_f16 / convert_f32_to_bf16 (v1): elementwise rounding, grid-stride.
//
// Speed: v1 is for correctness only (it rereads x and w from L2 for every output).
#include "common.cuh"

template <typename W>
__device__ void gemm_v1(float* out, const float* x, const W* w, int n, int N, int K) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x, i = blockIdx.y;
    if (r >= N || i >= n) return;
    const W* wr = w + (int64_t)r * K;
    const float* xr = x + (int64_t)i * K;
    float acc = 0.f;
    for (int k = 0; k < K; k++) acc += xr[k] * to_f32(wr[k]);
    out[(int64_t)i * N + r] = acc;
}

// grid (ceil(N/128), n), block (128).
extern "C" __global__ void gemm_f32_v1(float* out, const float* x, const float* w, int n, int N,
                                       int K) {
    pdl_begin();
    gemm_v1(out, x, w, n, N, K);
}
extern "C" __global__ void gemm_f16_v1(float* out, const float* x, const __half* w, int n, int N,
                                       int K) {
    pdl_begin();
    gemm_v1(out, x, w, n, N, K);
}
extern "C" __global__ void gemm_bf16_v1(float* out, const float* x, const __nv_bfloat16* w, int n,
                                        int N, int K) {
    pdl_begin();
    gemm_v1(out, x, w, n, N, K);
}

// grid (ceil(total/256) capped), block (256).
extern "C" __global__ void convert_f32_to_f16(__half* out, const float* x, int total) {
    pdl_begin();
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < total; k += gridDim.x * blockDim.x)
        out[k] = __float2half_rn(x[k]);
}
extern "C" __global__ void convert_f32_to_bf16(__nv_bfloat16* out, const float* x, int total) {
    pdl_begin();
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < total; k += gridDim.x * blockDim.x)
        out[k] = __float2bfloat16_rn(x[k]);
}
