// rope.cu — rotary position embedding (Su et al. 2021), interleaved pairs (Meta / llama2.c order).
//
//   for each row i, head h, pair j < head_dim/2:
//     θ = pos[i] · theta^(−2j/head_dim)
//     (x[2j], x[2j+1]) ← (x[2j]·cosθ − x[2j+1]·sinθ,  x[2j]·sinθ + x[2j+1]·cosθ)
//   x (n, heads·head_dim) fp32, in place.
//
// The angle is computed exactly as the cpu package (and llama2.c) does, so the two backends
// rotate bit-identically: freq = 1/(float)pow((double)theta, (double)((float)2j/(float)hd)) with
// IEEE fp32 division (__fdiv_rn, immune to --use_fast_math), val = (float)pos·freq (__fmul_rn),
// cos and sin of val in fp64, rounded to fp32; the rotation uses __fmul_rn/__fadd_rn so nvcc
// contracts nothing into an FMA. The cos/sin table of a row (head_dim/2 entries) is built once per
// block in shared memory and used by every head: fp64 work is n·head_dim/2 pow+sincos per launch.
//
// Versions
//   rope_f32 (v1): one block per row; the first head_dim/2 threads build the row's table, then
//                  all threads rotate the row's pairs (float2 loads, coalesced).
//   rope_qk_store_kv_<kv> (v2, fused): one launch per layer for RoPE on Q, RoPE on K, and the
//                  store of K and V into the paged cache (kvcache.cu's store_kv), sharing the
//                  table between Q and K. Equivalent to RoPE(q); RoPE(k); StoreKV(k, v).
//   gemv.cu's gemv_<dt>_v3_qkv_rope_<kv>_n<B> (v3): the same work in the epilogue of the q/k/v
//                  projection (rope_angle and rope_pair per element), so a decode layer's
//                  attention prologue is one launch, not two.
//   rope_qk_store_kv_<kv>_from_<dt> (prefill): v2's work on q, k, v that cuBLAS wrote in the
//                  weight dtype (gpu.Backend.MatMulQKVRoPEStoreKV for more than 8 rows): the
//                  rotated q to fp32 (attention's input), the rotated k and v straight into the
//                  cache; no fp32 k and v are written or read back. 10 bytes per q/k/v element
//                  (fp16 cache) instead of v2's 16 after an fp32 GEMM output's 4.
//
// Speed: decode is latency-bound (one block per token; ~2-4 µs, dominated by the fp64 pow/sincos
// of 64 angles and one round trip to memory); prefill moves 8 bytes per element. head_dim ≤ 1024.
// Checked by model/modeltest (RoPE) and gpu/conformance_test.go (TestRoPEStoreKV):
//   go test -tags cuda ./gpu -run 'Conformance/RoPE|RoPEStoreKV'
#include "common.cuh"

#define ROPE_MAX_HALF 512

// rope_angle sets c, s to the cosine and sine of pair j's angle at position p, as the cpu package
// computes them (see the header). gemv.cu's fused q/k/v epilogue calls it too.
LLAMACU_DEVICE void rope_angle(int p, int j, int head_dim, float theta, float& c, float& s) {
    const float e = __fdiv_rn((float)(2 * j), (float)head_dim);
    const float freq = __fdiv_rn(1.f, (float)pow((double)theta, (double)e));
    const float val = __fmul_rn((float)p, freq);
    double sd, cd;
    sincos((double)val, &sd, &cd);
    c = (float)cd;
    s = (float)sd;
}

// rope_pair is one rotated element of the pair (x, y) = (x[2j], x[2j+1]): the first when odd is
// false, else the second; the same roundings as rotate_row.
LLAMACU_DEVICE float rope_pair(float x, float y, float c, float s, bool odd) {
    return odd ? __fadd_rn(__fmul_rn(x, s), __fmul_rn(y, c))
               : __fsub_rn(__fmul_rn(x, c), __fmul_rn(y, s));
}

// rope_table fills cs, sn (head_dim/2) for position p, then synchronises the block.
LLAMACU_DEVICE void rope_table(float* cs, float* sn, int p, int head_dim, float theta) {
    for (int j = threadIdx.x; j < (head_dim >> 1); j += blockDim.x)
        rope_angle(p, j, head_dim, theta, cs[j], sn[j]);
    __syncthreads();
}

// rotate_row rotates the cols/2 pairs of one row in place (cols a multiple of head_dim).
LLAMACU_DEVICE void rotate_row(float* row, int cols, int head_dim, const float* cs,
                               const float* sn) {
    const int half = head_dim >> 1;
    float2* r2 = reinterpret_cast<float2*>(row);
    for (int k = threadIdx.x; k < (cols >> 1); k += blockDim.x) {
        const int j = k % half;
        const float2 v = r2[k];
        const float c = cs[j], s = sn[j];
        r2[k] = make_float2(rope_pair(v.x, v.y, c, s, false), rope_pair(v.x, v.y, c, s, true));
    }
}

// grid (n), block (128). cols % head_dim == 0, head_dim even, ≤ 2·ROPE_MAX_HALF.
extern "C" __global__ void rope_f32(float* x, const int* pos, int cols, int head_dim,
                                    float theta) {
    pdl_begin();
    __shared__ float cs[ROPE_MAX_HALF], sn[ROPE_MAX_HALF];
    rope_table(cs, sn, pos[blockIdx.x], head_dim, theta);
    rotate_row(x + (int64_t)blockIdx.x * cols, cols, head_dim, cs, sn);
}

template <typename KV>
__device__ void rope_qk_store_kv(float* q, float* k, const float* v, KV* kc, KV* vc,
                                 const int* pos, const int* row_tab, const int* tables,
                                 int q_cols, int kv_dim, int head_dim, float theta, int layer,
                                 int num_blocks, int block_size) {
    __shared__ float cs[ROPE_MAX_HALF], sn[ROPE_MAX_HALF];
    const int i = blockIdx.x;
    const int p = pos[i];
    rope_table(cs, sn, p, head_dim, theta);
    rotate_row(q + (int64_t)i * q_cols, q_cols, head_dim, cs, sn);
    float* kr = k + (int64_t)i * kv_dim;
    rotate_row(kr, kv_dim, head_dim, cs, sn);
    __syncthreads();  // the rotated k row is read back below by other threads
    const int blk = tables[row_tab[i] + p / block_size];
    const int64_t off = kv_offset(layer, num_blocks, block_size, kv_dim, blk, p % block_size);
    const float* vr = v + (int64_t)i * kv_dim;
    for (int j = threadIdx.x; j < kv_dim; j += blockDim.x) {
        kc[off + j] = from_f32<KV>(kr[j]);
        vc[off + j] = from_f32<KV>(vr[j]);
    }
}

// grid (n), block (128).
extern "C" __global__ void rope_qk_store_kv_f32(float* q, float* k, const float* v, float* kc,
                                                float* vc, const int* pos, const int* row_tab,
                                                const int* tables, int q_cols, int kv_dim,
                                                int head_dim, float theta, int layer,
                                                int num_blocks, int block_size) {
    pdl_begin();
    rope_qk_store_kv(q, k, v, kc, vc, pos, row_tab, tables, q_cols, kv_dim, head_dim, theta,
                     layer, num_blocks, block_size);
}
extern "C" __global__ void rope_qk_store_kv_f16(float* q, float* k, const float* v, __half* kc,
                                                __half* vc, const int* pos, const int* row_tab,
                                                const int* tables, int q_cols, int kv_dim,
                                                int head_dim, float theta, int layer,
                                                int num_blocks, int block_size) {
    pdl_begin();
    rope_qk_store_kv(q, k, v, kc, vc, pos, row_tab, tables, q_cols, kv_dim, head_dim, theta,
                     layer, num_blocks, block_size);
}

// rope_store_from is rope_qk_store_kv from q, k, v of dtype T (n, q_cols) and (n, kv_dim): q
// rotated into q_out (fp32), k rotated into the cache, v copied into it, with rotate_row's
// roundings.
template <typename T, typename KV>
__device__ void rope_store_from(float* q_out, const T* q, const T* k, const T* v, KV* kc, KV* vc,
                                const int* pos, const int* row_tab, const int* tables, int q_cols,
                                int kv_dim, int head_dim, float theta, int layer, int num_blocks,
                                int block_size) {
    __shared__ float cs[ROPE_MAX_HALF], sn[ROPE_MAX_HALF];
    const int i = blockIdx.x;
    const int p = pos[i];
    rope_table(cs, sn, p, head_dim, theta);
    const int half = head_dim >> 1;
    const T* qr = q + (int64_t)i * q_cols;
    float* qo = q_out + (int64_t)i * q_cols;
    for (int e = threadIdx.x; e < (q_cols >> 1); e += blockDim.x) {
        const int j = e % half;
        const float x = to_f32(qr[2 * e]), y = to_f32(qr[2 * e + 1]);
        qo[2 * e] = rope_pair(x, y, cs[j], sn[j], false);
        qo[2 * e + 1] = rope_pair(x, y, cs[j], sn[j], true);
    }
    const int blk = tables[row_tab[i] + p / block_size];
    const int64_t off = kv_offset(layer, num_blocks, block_size, kv_dim, blk, p % block_size);
    const T* kr = k + (int64_t)i * kv_dim;
    const T* vr = v + (int64_t)i * kv_dim;
    for (int e = threadIdx.x; e < (kv_dim >> 1); e += blockDim.x) {
        const int j = e % half;
        const float x = to_f32(kr[2 * e]), y = to_f32(kr[2 * e + 1]);
        kc[off + 2 * e] = from_f32<KV>(rope_pair(x, y, cs[j], sn[j], false));
        kc[off + 2 * e + 1] = from_f32<KV>(rope_pair(x, y, cs[j], sn[j], true));
        vc[off + 2 * e] = from_f32<KV>(to_f32(vr[2 * e]));
        vc[off + 2 * e + 1] = from_f32<KV>(to_f32(vr[2 * e + 1]));
    }
}

// grid (n), block (128). q_cols and kv_dim multiples of head_dim, head_dim even, ≤ 2·ROPE_MAX_HALF.
#define ROPE_STORE_FROM(kvname, KVT, dtname, DT)                                                   \
    extern "C" __global__ void rope_qk_store_kv_##kvname##_from_##dtname(                          \
        float* q_out, const DT* q, const DT* k, const DT* v, KVT* kc, KVT* vc, const int* pos,    \
        const int* row_tab, const int* tables, int q_cols, int kv_dim, int head_dim, float theta, \
        int layer, int num_blocks, int block_size) {                                              \
        pdl_begin();                                                                              \
        rope_store_from(q_out, q, k, v, kc, vc, pos, row_tab, tables, q_cols, kv_dim, head_dim,   \
                        theta, layer, num_blocks, block_size);                                    \
    }
ROPE_STORE_FROM(f32, float, f16, __half)
ROPE_STORE_FROM(f32, float, bf16, __nv_bfloat16)
ROPE_STORE_FROM(f16, __half, f16, __half)
ROPE_STORE_FROM(f16, __half, bf16, __nv_bfloat16)
