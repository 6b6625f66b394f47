// kvcache.cu — writing K and V rows into the paged KV cache.
//
//   for each batch row i (sequence position p = pos[i], block table tab = tables + row_tab[i]):
//     Kc[layer, tab[p / bs], p % bs, :, :] = k[i, :]      k, v (n, kv_heads·head_dim) fp32
//     Vc[layer, tab[p / bs], p % bs, :, :] = v[i, :]      Kc, Vc (layers, num_blocks, bs,
//                                                                  kv_heads, head_dim) f32 | f16
// (model.KVLayout). row_tab[i] is the offset in `tables` (every block table of the step,
// concatenated) of row i's sequence; the host checked every block index against num_blocks.
//
// Versions
//   store_kv_<kv> (v1, the only one): one block per row, threads over kv_heads·head_dim. The fp16
//                 cache rounds to nearest even. rope.cu's rope_qk_store_kv_<kv> fuses this with
//                 RoPE on Q and K (one launch instead of three per layer).
//
// Speed: 2·n·kv_dim·(4 + sizeof(kv)) bytes; negligible next to attention's reads.
// Checked by model/modeltest (Attention, which stores through it): go test -tags cuda ./gpu
#include "common.cuh"

template <typename KV>
__device__ void store_kv(KV* kc, KV* vc, const float* k, const float* v, const int* pos,
                         const int* row_tab, const int* tables, int kv_dim, int layer,
                         int num_blocks, int block_size) {
    const int i = blockIdx.x;
    const int p = pos[i];
    const int blk = tables[row_tab[i] + p / block_size];
    const int64_t off = kv_offset(layer, num_blocks, block_size, kv_dim, blk, p % block_size);
    const float* kr = k + (int64_t)i * kv_dim;
    const float* vr = v + (int64_t)i * kv_dim;
    for (int j = threadIdx.x; j < kv_dim; j += blockDim.x) {
        kc[off + j] = from_f32<KV>(kr[j]);
        vc[off + j] = from_f32<KV>(vr[j]);
    }
}

// grid (n), block (128).
extern "C" __global__ void store_kv_f32(float* kc, float* vc, const float* k, const float* v,
                                        const int* pos, const int* row_tab, const int* tables,
                                        int kv_dim, int layer, int num_blocks, int block_size) {
    pdl_begin();
    store_kv(kc, vc, k, v, pos, row_tab, tables, kv_dim, layer, num_blocks, block_size);
}
extern "C" __global__ void store_kv_f16(__half* kc, __half* vc, const float* k, const float* v,
                                        const int* pos, const int* row_tab, const int* tables,
                                        int kv_dim, int layer, int num_blocks, int block_size) {
    pdl_begin();
    store_kv(kc, vc, k, v, pos, row_tab, tables, kv_dim, layer, num_blocks, block_size);
}
