// embed.cu — token embedding lookup.
//
//   out[i, :] = table[tokens[i], :]      out (n, dim) fp32; table (vocab, dim) f32 | f16 | bf16 | q8_0 | q4_0
//
// Versions
//   embed_<dt>  (v1, the only one): one block per row, each thread copies dim/blockDim elements,
//               widening to fp32. Tokens are validated on the host (gpu/embed.go).
//
// Speed: n·dim·(4 + sizeof(dt)) bytes moved once per step; a few microseconds at any batch, so
// there is no faster version. Checked by model/modeltest (Embed) through gpu/conformance_test.go:
//   go test -tags cuda ./gpu -run Conformance/Embed
#include "common.cuh"

template <typename T>
__device__ void embed(float* __restrict__ out, const T* __restrict__ table,
                      const int* __restrict__ tokens, int dim) {
    const int i = blockIdx.x;
    const T* src = table + (int64_t)tokens[i] * dim;
    float* dst = out + (int64_t)i * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) dst[j] = to_f32(src[j]);
}

// grid (n), block (256).
extern "C" __global__ void embed_f32(float* out, const float* table, const int* tokens, int dim) {
    pdl_begin();
    embed(out, table, tokens, dim);
}
extern "C" __global__ void embed_f16(float* out, const __half* table, const int* tokens, int dim) {
    pdl_begin();
    embed(out, table, tokens, dim);
}
extern "C" __global__ void embed_bf16(float* out, const __nv_bfloat16* table, const int* tokens,
                                      int dim) {
    pdl_begin();
    embed(out, table, tokens, dim);
}

// embed_q8_0: the table resident as Q8_0 (q (vocab, dim) int8, d (vocab, dim/32) fp16; see
// gemv.cu), out[i, j] = d[t, j/32] · q[t, j] for t = tokens[i].
// grid (n), block (256).
extern "C" __global__ void embed_q8_0(float* out, const int8_t* q, const __half* d, const int* tokens, int dim) {
    pdl_begin();
    const int64_t t = tokens[blockIdx.x];
    const int8_t* src = q + t * dim;
    const __half* ds = d + t * (dim / 32);
    float* dst = out + (int64_t)blockIdx.x * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) dst[j] = __half2float(ds[j / 32]) * (float)src[j];
}

// embed_q4_0: the table resident as Q4_0 (q (vocab, dim/2) bytes, d (vocab, dim/32) fp16; see
// gemv.cu). grid (n), block (256).
extern "C" __global__ void embed_q4_0(float* out, const uint8_t* q, const __half* d, const int* tokens, int dim) {
    pdl_begin();
    const int64_t t = tokens[blockIdx.x];
    const uint8_t* src = q + t * (dim / 2);
    const __half* ds = d + t * (dim / 32);
    float* dst = out + (int64_t)blockIdx.x * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) dst[j] = __half2float(ds[j / 32]) * (float)q4_at(src, j);
}
