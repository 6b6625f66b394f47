// attention.cu — causal grouped-query attention over the paged KV cache.
//
// For batch row i (sequence position p = pos[i], block table tab = tables + row_tab[i]) and
// query head h, with G = heads/kv_heads query heads per KV head and g = h / G:
//
//   s[t]      = q[i, h, :] · K[tab[t/bs], t%bs, g, :] / sqrt(head_dim),   t = 0 … p
//   a         = softmax(s)
//   out[i,h,:] = Σ_t a[t] · V[tab[t/bs], t%bs, g, :]
//
//   q, out (B, heads·head_dim) fp32; K, V (layers, num_blocks, bs, kv_heads, head_dim) in the
//   cache dtype <kv> = f32 | f16 (fp16 by default: half the bytes of every decode step).
//
// Which rows each kernel computes is decided on the host (gpu/attention.go) and passed as lists,
// so that one step can use several kernels on disjoint rows:
//   rows  (nr)      batch rows, for v1 and decode;
//   tiles (nt, 2)   (first row, row count) of a run of rows of ONE sequence at consecutive
//                   positions, for prefill (count ≤ 32/G).
//
// Versions
//   attention_<kv>_v1: the readable reference. One block per (row, query head), one thread per
//       head_dim element; for each t a block reduction gives s[t] and an online softmax update
//       (running max m, sum l, accumulator) folds V[t] in. O(p) barriers: slow, but obviously
//       right for every head_dim ≤ 1024 and every G.
//   attention_decode_<kv>_g<GM> + attention_reduce_f32 (v2, flash-decoding, Dao et al. 2023):
//       grid (splits, kv_heads, rows). Each block takes one KV head and a chunk of ≤ 512 cached
//       tokens of one row and computes ALL G ≤ GM query heads of that KV head: every K and V row
//       is loaded once (16-byte vectors) and used G times — the GQA sharing that makes 70B's
//       64/8 heads read the cache once, not 8 times. Scores: one thread per token (no shuffles),
//       q in shared memory (broadcast reads); softmax of the chunk in shared memory; PV: lanes
//       split head_dim in 16-byte vectors and tokens, reduced by shuffles and across warps in
//       shared memory. Each block writes its partial (max m, sum l, unnormalised o); the reduce
//       kernel rescales and sums the splits (or, with one split, the block writes out directly).
//       The chunk length is chosen on the host so that splits·kv_heads·rows fills the GPU.
//       Needs head_dim·sizeof(kv) a multiple of 16 with head_dim/vector a power of two ≤ 32
//       (head_dim 8…128 in fp16, 4…128 in fp32) and G ≤ 8; otherwise v1.
//   attention_decode_v3_<kv>_g<GM> + attention_reduce_f32_v2 (v3; the default from 8 decode rows
//       a step, gpu/attention.go's decV3MinRows): v2 with the
//       scores read as the PV phase reads V — nv lanes per K row, so a warp's loads cover whole
//       rows (v2's thread-per-token loads touch 32 rows 1–8 KB apart per instruction), 4 rows per
//       lane in flight, the G dot products summed by shuffles; the G heads' softmax maxima and
//       sums reduced over the block at once (v2: one barrier pair per head, 16 at G = 8); and a
//       merge kernel that computes the splits' weights once per block. The first GPU check
//       measured v2 at 46% (7B) and 15% (70B, G = 8) of the copy bandwidth at 4096 tokens. The
//       second measured v3 at 0.81× v2 for one row (7B; 0.79× at the 70B shape) and 1.21× for
//       eight (7B): with one row there are few blocks, and v3's per-token shuffles and its
//       separate merge cost more than the coalescing saves. Not yet known why in detail (ncu).
//   attention_decode_v4_f16_hd<HD>_g<GM> (v4, the default for an fp16 cache at head_dim 64 or
//       128; section "v4 decode"): the same splits, but each block streams its chunk in 32-key
//       tiles through two shared stages with cp.async, each warp keeps its own online softmax
//       (one block barrier a tile), and the splits of a row and KV head are merged by their last
//       block when there are few (G·splits ≤ 32), else by attention_reduce_f32_v2.
//   attention_decode_v5_f16_hd<HD> (v5, the default where G ≥ 2; section "v5 decode"): v4's
//       splits and merges with both products on the tensor cores (mma.sync m16n8k16): the G ≤ 8
//       heads' q and the probabilities each as an fp16 pair (hi, lo·2¹¹) in the A operand's
//       16 rows, so the sums keep ~22 bits; 16-key tiles in 4 cp.async stages.
//   attention_prefill_<kv> (v2, flash-attention style, Dao 2022, fp32 SIMT):
//       grid (tiles, kv_heads). A block holds 32 "query vectors" = (rows of the tile) × (the G
//       query heads of its KV head) in shared memory, streams 32-key tiles of K and then V of the
//       sequence through shared memory (keys beyond the tile's last position are never loaded:
//       causal skip), and keeps the online softmax state and a 32 × head_dim output tile in
//       registers (4 query vectors × 8 dims per thread). Needs head_dim even and ≤ 128, G ≤ 32.
//   attention_prefill_f16_v3_hd<HD> (v3, flash-attention 2 on tensor cores, fp16 cache only):
//       grid (tiles, kv_heads), 4 warps. The same tiles with up to 64 query vectors (rows ×
//       G heads); each warp owns 16 of them and keeps Q as mma A fragments (fp16, scaled by
//       1/sqrt(HD)), the 16 × HD output and its softmax state in registers. 64-key tiles of K
//       and V go through shared memory; S = Q·Kᵀ and O += P·V are mma.sync m16n8k16 with fp32
//       accumulation, and the S accumulator is reused as P's A fragment (rounded to fp16)
//       without leaving registers. HD 64 and 128 (the LLaMA 2 head_dim is 128).
//   attention_prefill_f16_v4_hd<HD> (v4, the default; section "v4 prefill"): v3 with the K/V
//       tiles double-buffered by cp.async (32 keys each), B fragments loaded by ldmatrix, a
//       base-2 softmax and the heaviest causal tiles first. Agrees with v3 to rounding.
//
// Speed. Decode is memory-bound: it must read 2·(p+1)·kv_heads·head_dim·sizeof(kv) bytes per
// row; v2 reads each byte once and keeps ≥ 4 blocks per SM in flight; its limits are the split
// count (a short context cannot fill the GPU) and, for G = 8, the 64 FMAs per loaded 16 bytes
// (fine: still under the FMA rate at HBM speed). Prefill is compute-bound: v2 runs on the fp32
// pipes (about 1/8 of the tensor-core rate), shared-memory bandwidth-bound at ~2.7 FMA per
// shared load; v3 moves both products to the tensor cores (fp16 cache, HD 64/128).
// Checked by model/modeltest (Attention; paged, GQA 1/2/8, mixed batches) with both the fast and
// the v1 kernels and both cache dtypes:  go test -tags cuda ./gpu -run Conformance
#include "common.cuh"

// ================================================================ v1

template <typename KV>
__device__ void attention_v1(float* out, const float* q, const KV* kc, const KV* vc,
                             const int* rows, const int* pos, const int* row_tab,
                             const int* tables, int heads, int kv_heads, int head_dim, int layer,
                             int num_blocks, int block_size) {
    __shared__ float scratch[32];
    const int i = rows[blockIdx.y], h = blockIdx.x, d = threadIdx.x;
    const int g = h / (heads / kv_heads), kv_dim = kv_heads * head_dim;
    const int64_t qo = ((int64_t)i * heads + h) * head_dim;
    const float qd = d < head_dim ? q[qo + d] : 0.f;
    const int p = pos[i];
    const int* tab = tables + row_tab[i];
    const float scale = sqrtf((float)head_dim);
    float m = -INFINITY, l = 0.f, acc = 0.f;
    for (int t = 0; t <= p; t++) {
        const int64_t off =
            kv_offset(layer, num_blocks, block_size, kv_dim, tab[t / block_size], t % block_size) +
            (int64_t)g * head_dim;
        const float kd = d < head_dim ? to_f32(kc[off + d]) : 0.f;
        const float s = block_sum(qd * kd, scratch) / scale;
        const float mn = fmaxf(m, s);
        const float corr = expf(m - mn), e = expf(s - mn);
        l = l * corr + e;
        acc = acc * corr + (d < head_dim ? e * to_f32(vc[off + d]) : 0.f);
        m = mn;
    }
    if (d < head_dim) out[qo + d] = acc / l;
}

// grid (heads, nr), block (roundup32(head_dim)).
extern "C" __global__ void attention_f32_v1(float* out, const float* q, const float* kc,
                                            const float* vc, const int* rows, const int* pos,
                                            const int* row_tab, const int* tables, int heads,
                                            int kv_heads, int head_dim, int layer,
                                            int num_blocks, int block_size) {
    pdl_begin();
    attention_v1(out, q, kc, vc, rows, pos, row_tab, tables, heads, kv_heads, head_dim, layer,
                 num_blocks, block_size);
}
extern "C" __global__ void attention_f16_v1(float* out, const float* q, const __half* kc,
                                            const __half* vc, const int* rows, const int* pos,
                                            const int* row_tab, const int* tables, int heads,
                                            int kv_heads, int head_dim, int layer,
                                            int num_blocks, int block_size) {
    pdl_begin();
    attention_v1(out, q, kc, vc, rows, pos, row_tab, tables, heads, kv_heads, head_dim, layer,
                 num_blocks, block_size);
}

// ================================================================ v2 decode (flash-decoding)

#define DEC_THREADS 128
#define DEC_WARPS (DEC_THREADS / 32)
#define DEC_CHUNK_MAX 512
#define DEC_GMAX 8
#define DEC_HD_MAX 128
#define DEC_U 4  // v3: K rows per lane loaded before the scores use them

// part_o (nr, heads, max_splits, head_dim) and part_ml (nr, heads, max_splits, 2) hold the
// splits' unnormalised outputs and (max, sum); unused when direct != 0 (max_splits == 1).
// GM ≥ G is the compiled group width (1, 2, 4, 8).
// Per-head block reductions of v3: the GM values of every thread reduced at once (one barrier
// pair instead of GM). scratch holds DEC_WARPS·GM ≤ 32 floats; a leading barrier lets
// consecutive calls reuse it.
template <int GM, bool MAX>
__device__ __forceinline__ void block_reduce_heads(float (&v)[GM], float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int gg = 0; gg < GM; gg++) v[gg] = MAX ? warp_max(v[gg]) : warp_sum(v[gg]);
    __syncthreads();
    if (lane == 0)
#pragma unroll
        for (int gg = 0; gg < GM; gg++) scratch[warp * GM + gg] = v[gg];
    __syncthreads();
#pragma unroll
    for (int gg = 0; gg < GM; gg++) {
        float r = scratch[gg];
#pragma unroll
        for (int w = 1; w < DEC_WARPS; w++)
            r = MAX ? fmaxf(r, scratch[w * GM + gg]) : r + scratch[w * GM + gg];
        v[gg] = r;
    }
}

// V3 selects v3's score phase and reductions (see the file comment); the PV phase is shared.
template <typename KV, int GM, bool V3>
__device__ void attention_decode(float* out, float* part_o, float* part_ml, const float* q,
                                 const KV* kc, const KV* vc, const int* rows, const int* pos,
                                 const int* row_tab, const int* tables, int heads, int kv_heads,
                                 int head_dim, int layer, int num_blocks, int block_size,
                                 int chunk, int max_splits, int direct) {
    constexpr int VEC = Vec16<KV>::N;
    __shared__ __align__(16) float qs[GM * DEC_HD_MAX];        // (G, head_dim), pre-scaled
    __shared__ float sc[GM * DEC_CHUNK_MAX];                   // (G, chunk) scores, then e^(s−m)
    __shared__ __align__(16) float red[DEC_WARPS * GM * DEC_HD_MAX];  // (warps, G, head_dim)
    __shared__ float scratch[32];

    const int split = blockIdx.x, g = blockIdx.y, di = blockIdx.z;
    const int i = rows[di];
    const int ctx = pos[i] + 1;
    const int t0 = split * chunk;
    if (t0 >= ctx) return;  // uniform over the block: this row has fewer splits
    const int t1 = min(t0 + chunk, ctx);
    const int G = heads / kv_heads, kv_dim = kv_heads * head_dim, nv = head_dim / VEC;
    const int* tab = tables + row_tab[i];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

    // q of the G heads, scaled by 1/sqrt(head_dim).
    const float scale = 1.f / sqrtf((float)head_dim);
    const float* qrow = q + ((int64_t)i * heads + (int64_t)g * G) * head_dim;
    for (int k = tid; k < G * head_dim; k += DEC_THREADS) qs[k] = qrow[k] * scale;
    __syncthreads();

    float lmax[GM];
#pragma unroll
    for (int gg = 0; gg < GM; gg++) lmax[gg] = -INFINITY;
    if constexpr (V3) {
        // Scores, v3: nv lanes per K row (one 16-byte vector each: a warp reads 32/nv whole rows,
        // coalesced), the G partial dot products summed over those lanes by shuffles; DEC_U rows
        // per lane loaded before any is used. The loop bound is uniform over a warp (shuffles).
        const int v = lane % nv, tpw = 32 / nv;
        const int ntl = DEC_WARPS * tpw;
        for (int tb = t0 + warp * tpw; tb < t1; tb += DEC_U * ntl) {
            float kf[DEC_U][VEC];
#pragma unroll
            for (int u = 0; u < DEC_U; u++) {
                const int t = tb + u * ntl + lane / nv;
                if (t < t1) {
                    const KV* kr = kc + kv_offset(layer, num_blocks, block_size, kv_dim, tab[t / block_size],
                                                  t % block_size) +
                                   (int64_t)g * head_dim + v * VEC;
                    unpack16<KV>(load16(kr), kf[u]);
                } else {
#pragma unroll
                    for (int e = 0; e < VEC; e++) kf[u][e] = 0.f;
                }
            }
#pragma unroll
            for (int u = 0; u < DEC_U; u++) {
                const int t = tb + u * ntl + lane / nv;
#pragma unroll
                for (int gg = 0; gg < GM; gg++) {
                    if (gg < G) {
                        const float4* q4 = reinterpret_cast<const float4*>(qs + gg * head_dim + v * VEC);
                        float acc = 0.f;
#pragma unroll
                        for (int e = 0; e < VEC; e += 4) {
                            const float4 qq = q4[e >> 2];
                            acc += qq.x * kf[u][e] + qq.y * kf[u][e + 1] + qq.z * kf[u][e + 2] +
                                   qq.w * kf[u][e + 3];
                        }
                        for (int o = 1; o < nv; o <<= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
                        if (t < t1) {
                            if (v == 0) sc[gg * chunk + (t - t0)] = acc;
                            lmax[gg] = fmaxf(lmax[gg], acc);
                        }
                    }
                }
            }
        }
    } else
    // Scores: one thread per cached token, G dot products per K row.
    for (int t = t0 + tid; t < t1; t += DEC_THREADS) {
        const KV* kr = kc + kv_offset(layer, num_blocks, block_size, kv_dim, tab[t / block_size],
                                      t % block_size) +
                       (int64_t)g * head_dim;
        float acc[GM];
#pragma unroll
        for (int gg = 0; gg < GM; gg++) acc[gg] = 0.f;
#pragma unroll 4
        for (int v = 0; v < nv; v++) {
            float kf[VEC];
            unpack16<KV>(load16(kr + v * VEC), kf);
#pragma unroll
            for (int gg = 0; gg < GM; gg++) {
                if (gg < G) {
                    const float4* q4 = reinterpret_cast<const float4*>(qs + gg * head_dim + v * VEC);
#pragma unroll
                    for (int e = 0; e < VEC; e += 4) {
                        const float4 qq = q4[e >> 2];
                        acc[gg] += qq.x * kf[e] + qq.y * kf[e + 1] + qq.z * kf[e + 2] +
                                   qq.w * kf[e + 3];
                    }
                }
            }
        }
#pragma unroll
        for (int gg = 0; gg < GM; gg++) {
            if (gg < G) {
                sc[gg * chunk + (t - t0)] = acc[gg];
                lmax[gg] = fmaxf(lmax[gg], acc[gg]);
            }
        }
    }

    // Softmax of the chunk: block max, then e^(s−m) in place (each thread its own tokens), sums.
    float m[GM], l[GM];
    if constexpr (V3) {
        block_reduce_heads<GM, true>(lmax, scratch);
#pragma unroll
        for (int gg = 0; gg < GM; gg++) m[gg] = gg < G ? lmax[gg] : 0.f;
    } else {
#pragma unroll
        for (int gg = 0; gg < GM; gg++) m[gg] = gg < G ? block_max(lmax[gg], scratch) : 0.f;
    }
    float lsum[GM];
#pragma unroll
    for (int gg = 0; gg < GM; gg++) lsum[gg] = 0.f;
    // (v3: the scores were written by other threads than read them below; block_reduce_heads's
    // barriers published them.)
    for (int t = t0 + tid; t < t1; t += DEC_THREADS) {
#pragma unroll
        for (int gg = 0; gg < GM; gg++) {
            if (gg < G) {
                const float e = expf(sc[gg * chunk + (t - t0)] - m[gg]);
                sc[gg * chunk + (t - t0)] = e;
                lsum[gg] += e;
            }
        }
    }
    // block_sum's leading barrier also publishes sc to every thread.
    if constexpr (V3) {
        block_reduce_heads<GM, false>(lsum, scratch);
#pragma unroll
        for (int gg = 0; gg < GM; gg++) l[gg] = gg < G ? lsum[gg] : 1.f;
    } else {
#pragma unroll
        for (int gg = 0; gg < GM; gg++) l[gg] = gg < G ? block_sum(lsum[gg], scratch) : 1.f;
    }

    // PV: lane = token-lane·nv + vector; nv divides 32, so a warp covers 32/nv tokens per step.
    const int v = lane % nv, tpw = 32 / nv;
    const int tl = warp * tpw + lane / nv, ntl = DEC_WARPS * tpw;
    float acc[GM][VEC];
#pragma unroll
    for (int gg = 0; gg < GM; gg++)
#pragma unroll
        for (int e = 0; e < VEC; e++) acc[gg][e] = 0.f;
    for (int t = t0 + tl; t < t1; t += ntl) {
        const KV* vr = vc + kv_offset(layer, num_blocks, block_size, kv_dim, tab[t / block_size],
                                      t % block_size) +
                       (int64_t)g * head_dim + v * VEC;
        float vf[VEC];
        unpack16<KV>(load16(vr), vf);
#pragma unroll
        for (int gg = 0; gg < GM; gg++) {
            if (gg < G) {
                const float pe = sc[gg * chunk + (t - t0)];
#pragma unroll
                for (int e = 0; e < VEC; e++) acc[gg][e] += pe * vf[e];
            }
        }
    }
    // Sum the token-lanes of a warp (lanes nv apart), then the warps through shared memory.
#pragma unroll
    for (int gg = 0; gg < GM; gg++)
#pragma unroll
        for (int e = 0; e < VEC; e++)
            for (int o = nv; o < 32; o <<= 1)
                acc[gg][e] += __shfl_xor_sync(0xffffffffu, acc[gg][e], o);
    if (lane < nv) {
#pragma unroll
        for (int gg = 0; gg < GM; gg++)
            if (gg < G)
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    red[(warp * G + gg) * head_dim + v * VEC + e] = acc[gg][e];
    }
    __syncthreads();
    for (int k = tid; k < G * head_dim; k += DEC_THREADS) {
        float o = 0.f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) o += red[w * G * head_dim + k];
        const int gg = k / head_dim, d = k % head_dim;
        const int h = g * G + gg;
        // m and l live in registers indexed by gg: select without dynamic indexing.
        float mg = 0.f, lg = 1.f;
#pragma unroll
        for (int x = 0; x < GM; x++)
            if (x == gg) {
                mg = m[x];
                lg = l[x];
            }
        if (direct) {
            out[((int64_t)i * heads + h) * head_dim + d] = o / lg;
        } else {
            const int64_t po = ((int64_t)di * heads + h) * max_splits + split;
            part_o[po * head_dim + d] = o;
            if (d == 0) {
                part_ml[po * 2] = mg;
                part_ml[po * 2 + 1] = lg;
            }
        }
    }
}

#define DECODE_ENTRY(KVNAME, KVT, GM)                                                             \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS) attention_decode_##KVNAME##_g##GM(   \
        float* out, float* part_o, float* part_ml, const float* q, const KVT* kc, const KVT* vc,  \
        const int* rows, const int* pos, const int* row_tab, const int* tables, int heads,        \
        int kv_heads, int head_dim, int layer, int num_blocks, int block_size, int chunk,         \
        int max_splits, int direct) {                                                             \
        pdl_begin();                                                                              \
        attention_decode<KVT, GM, false>(out, part_o, part_ml, q, kc, vc, rows, pos, row_tab,     \
                                         tables, heads, kv_heads, head_dim, layer, num_blocks,    \
                                         block_size, chunk, max_splits, direct);                  \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS)                                     \
        attention_decode_v3_##KVNAME##_g##GM(                                                     \
            float* out, float* part_o, float* part_ml, const float* q, const KVT* kc,             \
            const KVT* vc, const int* rows, const int* pos, const int* row_tab,                   \
            const int* tables, int heads, int kv_heads, int head_dim, int layer, int num_blocks,  \
            int block_size, int chunk, int max_splits, int direct) {                              \
        pdl_begin();                                                                              \
        attention_decode<KVT, GM, true>(out, part_o, part_ml, q, kc, vc, rows, pos, row_tab,      \
                                        tables, heads, kv_heads, head_dim, layer, num_blocks,     \
                                        block_size, chunk, max_splits, direct);                   \
    }

// grid (max_splits, kv_heads, nr), block (DEC_THREADS).
DECODE_ENTRY(f32, float, 1)
DECODE_ENTRY(f32, float, 2)
DECODE_ENTRY(f32, float, 4)
DECODE_ENTRY(f32, float, 8)
DECODE_ENTRY(f16, __half, 1)
DECODE_ENTRY(f16, __half, 2)
DECODE_ENTRY(f16, __half, 4)
DECODE_ENTRY(f16, __half, 8)

// attention_reduce_f32 merges the splits of each (row, head):
//   M = max_s m_s,  w_s = e^(m_s − M),  out = Σ_s w_s·o_s / Σ_s w_s·l_s,
// over the splits s < ceil((pos+1)/chunk) that row actually has.
// grid (heads, nr), block (128).
extern "C" __global__ void attention_reduce_f32(float* out, const float* part_o,
                                                const float* part_ml, const int* rows,
                                                const int* pos, int heads, int head_dim,
                                                int chunk, int max_splits) {
    pdl_begin();
    const int h = blockIdx.x, di = blockIdx.y;
    const int i = rows[di];
    const int ns = (pos[i] + chunk) / chunk;  // ceil((pos+1)/chunk)
    const int64_t base = ((int64_t)di * heads + h) * max_splits;
    float M = -INFINITY;
    for (int s = 0; s < ns; s++) M = fmaxf(M, part_ml[(base + s) * 2]);
    float L = 0.f;
    for (int s = 0; s < ns; s++) L += expf(part_ml[(base + s) * 2] - M) * part_ml[(base + s) * 2 + 1];
    const float invL = 1.f / L;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float o = 0.f;
        for (int s = 0; s < ns; s++)
            o += expf(part_ml[(base + s) * 2] - M) * part_o[(base + s) * head_dim + d];
        out[((int64_t)i * heads + h) * head_dim + d] = o * invL;
    }
}

// attention_reduce_f32_v2 is v3 decode's merge, the same sums as attention_reduce_f32 but with
// the splits' weights e^(m_s − M) and the total L computed once per block, in parallel over the
// splits (shared memory), rather than by every thread in turn; each thread then sums its
// element over the splits with 8 loads in flight.
// grid (heads, nr), block (128); max_splits ≤ DEC_SPLITS_MAX.
#define DEC_SPLITS_MAX 1024
extern "C" __global__ void attention_reduce_f32_v2(float* out, const float* part_o,
                                                   const float* part_ml, const int* rows,
                                                   const int* pos, int heads, int head_dim,
                                                   int chunk, int max_splits) {
    pdl_begin();
    __shared__ float w[DEC_SPLITS_MAX];
    __shared__ float scratch[32];
    const int h = blockIdx.x, di = blockIdx.y;
    const int i = rows[di];
    const int ns = (pos[i] + chunk) / chunk;  // ceil((pos+1)/chunk)
    const int64_t base = ((int64_t)di * heads + h) * max_splits;
    float mloc = -INFINITY;
    for (int s = threadIdx.x; s < ns; s += blockDim.x) mloc = fmaxf(mloc, part_ml[(base + s) * 2]);
    const float M = block_max(mloc, scratch);
    float lloc = 0.f;
    for (int s = threadIdx.x; s < ns; s += blockDim.x) {
        const float ws = expf(part_ml[(base + s) * 2] - M);
        w[s] = ws;
        lloc += ws * part_ml[(base + s) * 2 + 1];
    }
    const float invL = 1.f / block_sum(lloc, scratch);  // its leading barrier publishes w
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float o = 0.f;
#pragma unroll 8
        for (int s = 0; s < ns; s++) o += w[s] * part_o[(base + s) * head_dim + d];
        out[((int64_t)i * heads + h) * head_dim + d] = o * invL;
    }
}

// ================================================================ v4 decode (cp.async pipeline)
//
// attention_decode_v4_f16_hd<HD>_g<GM>: flash-decoding for the fp16 cache at head_dim 64 / 128,
// after what the GPU checks measured: v2 at 46% (7B) and 15% (70B shape) of the copy bandwidth
// for one row at 4096 tokens, v3 lower still. Both walk a chunk in phases — all scores, a
// block-wide softmax, then all of PV — and in each phase a thread has a handful of 16-byte
// loads in flight, waits for them, and the block meets at a barrier; with one row there are too
// few blocks for those waits to overlap (Little's law: the H100 needs ~25 KB in flight per SM).
// v4 instead:
//   - streams the chunk in tiles of D4_BK = 32 keys: K and V of tile t + 1 are copied by
//     cp.async into the second of two shared stages while tile t is computed, so 16 KB a block
//     (HD 128) are always in flight, and nothing waits on a register load;
//   - gives each warp 8 keys of a tile and its own online softmax (running max and sum per
//     head, base 2: q is pre-scaled by log2(e)/sqrt(HD)), so a tile costs one block barrier (the
//     stage is complete) instead of v2's 2·G + 2 or v3's 4; the 4 warps' states are merged once,
//     at the end, as splits are;
//   - keeps the lane's slice of q for the G heads in registers, and sums the G partial dot
//     products of a K row over its NV = HD/8 lanes with a reduce-scatter (G − 1 shuffles leave
//     lane v with head v % G's sum, then log2(NV/G) more): 8 shuffles a row at G = 8, not 32.
// The splits and the partials (max converted back to base e) are v3's, with chunks chosen for
// v4 (gpu/attention.go: no 512-token cap, as nothing per token is kept; fewer splits, as each
// block keeps its loads in flight by itself). mode says who merges them:
//   D4_DIRECT  one split: the block writes out itself;
//   D4_REDUCE  attention_reduce_f32_v2 runs next (many splits · heads to merge);
//   D4_MERGE   the last block of each (row, KV head) to finish merges its G heads' splits
//              (≤ D4_MERGE_MAX of them): no second launch. Blocks count themselves in
//              counts[row·kv_heads + g] (zero before the launch; the last block resets it, so
//              a replayed graph finds it zero again), after fencing their partials. A row
//              whose context fits one chunk (a short row in a batch, the first tokens of a
//              graph's context bucket) has one split: its block writes out as D4_DIRECT.
//   grid (max_splits, kv_heads, nr), block (D4_THREADS); chunk a multiple of D4_BK.
#define D4_BK 32  // keys per tile
#define D4_THREADS 128
#define D4_WARPS (D4_THREADS / 32)
#define D4_KW (D4_BK / D4_WARPS)  // keys per warp per tile
#define D4_REDUCE 0
#define D4_DIRECT 1
#define D4_MERGE 2
#define D4_MERGE_MAX 32  // the most splits a D4_MERGE block merges (gpu/attention.go: G·splits ≤ 32)

// kv_tile_async starts the cp.async copies of one tile of BK keys, k0 … k0+BK−1 of KV head g,
// into the shared stages ks and vs (rows S halves apart) and commits them as one group: thread
// tid copies vector tid % (HD/8) of keys tid / (HD/8) + i·THREADS/(HD/8). Keys ≥ end are
// zero-filled (their scores are masked, and a zero V row keeps 0 · V finite). Decode v4 and
// prefill v4 stream their tiles with it.
template <int BK, int HD, int S, int THREADS>
__device__ __forceinline__ void kv_tile_async(__half* ks, __half* vs, const __half* kc,
                                              const __half* vc, const int* tab, int k0, int end,
                                              int g, int layer, int num_blocks, int block_size,
                                              int kv_dim) {
    constexpr int VPR = HD / 8;  // 16-byte vectors per key row
    static_assert(BK * VPR % THREADS == 0, "a tile is whole 16-byte copies per thread");
    const int tid = threadIdx.x;
#pragma unroll
    for (int i = 0; i < BK * VPR / THREADS; i++) {
        const int key = tid / VPR + i * (THREADS / VPR), j = tid % VPR, kp = k0 + key;
        const bool valid = kp < end;
        int64_t off = 0;
        if (valid)
            off = kv_offset(layer, num_blocks, block_size, kv_dim, tab[kp / block_size],
                            kp % block_size) +
                  (int64_t)g * HD + 8 * j;
        cp_async16(ks + key * S + 8 * j, kc + off, valid);
        cp_async16(vs + key * S + 8 * j, vc + off, valid);
    }
    cp_async_commit();
}

// reduce_scatter sums a[0 … GM) over the GM lanes lane ^ 0 … lane ^ (GM−1) and leaves head
// lane % GM's sum in a[0]: each step trades half of the remaining values with the lane `half`
// apart, the lane with that bit set keeping the upper half. GM − 1 shuffles instead of GM·log2(GM).
template <int GM> LLAMACU_DEVICE float reduce_scatter(float (&a)[GM], int lane) {
#pragma unroll
    for (int half = GM / 2; half >= 1; half >>= 1) {
        const bool up = lane & half;
#pragma unroll
        for (int j = 0; j < half; j++) {
            const float send = up ? a[j] : a[j + half];
            const float keep = up ? a[j + half] : a[j];
            a[j] = keep + __shfl_xor_sync(0xffffffffu, send, half);
        }
    }
    return a[0];
}

// decode_merge_last is D4_MERGE's ending, shared by v4 and v5 (D4_THREADS threads a block):
// each block of (row di = batch row i, KV head g) has written its partials; the last of the row's
// ns splits to finish merges them for the G ≤ GM query heads of g into out, as
// attention_reduce_f32_v2 would. Every thread fences its partials before the count
// (threadFenceReduction's pattern), so the last block sees all of them.
template <int GM, int HD>
__device__ void decode_merge_last(float* out, const float* part_o, const float* part_ml,
                                  int* counts, int di, int i, int g, int G, int heads,
                                  int kv_heads, int max_splits, int ns) {
    __shared__ int last;
    __shared__ float mw[GM][D4_MERGE_MAX];  // e^(m_s − M) by head and split
    __shared__ float inv_l[GM];
    const int tid = threadIdx.x;
    __threadfence();
    __syncthreads();
    if (tid == 0) {
        int* c = counts + (int64_t)di * kv_heads + g;
        last = atomicAdd(c, 1) == ns - 1;
        if (last) *c = 0;  // no other block touches it again in this launch
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    // attention_reduce_f32_v2's sums, read through L2 (__ldcg: other SMs wrote them).
    const int64_t base = ((int64_t)di * heads + (int64_t)g * G) * max_splits;  // head g·G, split 0
    if (tid < G) {
        const float* ml = part_ml + (base + (int64_t)tid * max_splits) * 2;
        float M = -INFINITY;
        for (int x = 0; x < ns; x++) M = fmaxf(M, __ldcg(ml + 2 * x));
        float L = 0.f;
        for (int x = 0; x < ns; x++) {
            const float w = expf(__ldcg(ml + 2 * x) - M);
            mw[tid][x] = w;
            L += w * __ldcg(ml + 2 * x + 1);
        }
        inv_l[tid] = 1.f / L;
    }
    __syncthreads();
    for (int k = tid; k < G * HD; k += D4_THREADS) {
        const int gg = k / HD, d = k % HD;
        const float* po = part_o + (base + (int64_t)gg * max_splits) * HD + d;
        float o = 0.f;
#pragma unroll 8
        for (int x = 0; x < ns; x++) o += mw[gg][x] * __ldcg(po + (int64_t)x * HD);
        out[((int64_t)i * heads + g * G + gg) * HD + d] = o * inv_l[gg];
    }
}

template <int HD, int GM>
__device__ void attention_decode_v4(float* out, float* part_o, float* part_ml, int* counts,
                                    const float* q, const __half* kc, const __half* vc,
                                    const int* rows, const int* pos, const int* row_tab,
                                    const int* tables, int heads, int kv_heads, int layer,
                                    int num_blocks, int block_size, int chunk, int max_splits,
                                    int mode) {
    constexpr int NV = HD / 8;                        // 16-byte vectors per K/V row
    constexpr int TPW = 32 / NV;                      // rows a warp covers per instruction
    static_assert(GM <= NV && D4_KW % TPW == 0, "geometry");
    static_assert(D4_WARPS * GM * HD * 4 <= sizeof(__half) * 2 * D4_BK * HD, "red fits in ks");
    __shared__ __align__(16) __half ks[2][D4_BK * HD];  // (stage, key, HD)
    __shared__ __align__(16) __half vs[2][D4_BK * HD];
    __shared__ __align__(16) float ps[D4_WARPS][D4_KW][GM];  // a warp's probabilities (key, head)
    __shared__ float pc[D4_WARPS][GM];                       // … and its rescale factors
    __shared__ float wml[D4_WARPS][GM][2];                   // each warp's final (max, sum)

    const int split = blockIdx.x, g = blockIdx.y, di = blockIdx.z;
    const int i = rows[di];
    const int ctx = pos[i] + 1, t0 = split * chunk;
    if (t0 >= ctx) return;  // uniform over the block: this row has fewer splits
    // A row whose context fits one chunk has nothing to merge: its block writes out itself.
    if (mode == D4_MERGE && ctx <= chunk) mode = D4_DIRECT;
    const int t1 = min(t0 + chunk, ctx), ntiles = (t1 - t0 + D4_BK - 1) / D4_BK;
    const int G = heads / kv_heads, kv_dim = kv_heads * HD;
    const int* tab = tables + row_tab[i];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int v = lane % NV, r = lane / NV;  // this lane's 16-byte slice of a row, and its row

    auto load_tile = [&](int stage, int k0) {
        kv_tile_async<D4_BK, HD, HD, D4_THREADS>(ks[stage], vs[stage], kc, vc, tab, k0, t1, g, layer,
                                                 num_blocks, block_size, kv_dim);
    };
    load_tile(0, t0);  // in flight while q is read

    // q (G heads of this KV head; zero for G ≤ gg < GM), elements 8v … 8v+7, in base-2 units.
    const float scale = 1.4426950408889634f / sqrtf((float)HD);
    const float* qrow = q + ((int64_t)i * heads + (int64_t)g * G) * HD + 8 * v;
    float qf[GM][8];
#pragma unroll
    for (int gg = 0; gg < GM; gg++) {
        float4 a = make_float4(0.f, 0.f, 0.f, 0.f), b = a;
        if (gg < G) {
            a = __ldg(reinterpret_cast<const float4*>(qrow + gg * HD));
            b = __ldg(reinterpret_cast<const float4*>(qrow + gg * HD + 4));
        }
        qf[gg][0] = a.x * scale, qf[gg][1] = a.y * scale, qf[gg][2] = a.z * scale, qf[gg][3] = a.w * scale;
        qf[gg][4] = b.x * scale, qf[gg][5] = b.y * scale, qf[gg][6] = b.z * scale, qf[gg][7] = b.w * scale;
    }

    // The warp's online softmax state for head lane % GM (the same in every lane of that head),
    // and the lane's share of the output: GM heads × 8 elements, over keys r, r + TPW, ….
    float m = -INFINITY, l = 0.f;
    float acc[GM][8];
#pragma unroll
    for (int gg = 0; gg < GM; gg++)
#pragma unroll
        for (int e = 0; e < 8; e++) acc[gg][e] = 0.f;

    for (int it = 0; it < ntiles; it++) {
        const int st = it & 1, k0 = t0 + it * D4_BK;
        cp_async_wait<0>();
        // Tile it is in shared memory (every thread's copies), and every warp has finished tile
        // it − 1: its stage may be refilled, and ps reused.
        __syncthreads();
        if (it + 1 < ntiles) load_tile(st ^ 1, k0 + D4_BK);
        const __half* kt = ks[st] + warp * D4_KW * HD;
        const __half* vt = vs[st] + warp * D4_KW * HD;

        // Scores of the warp's keys u·TPW + r.
        float s[D4_KW / TPW];
        float tmax = -INFINITY;
#pragma unroll
        for (int u = 0; u < D4_KW / TPW; u++) {
            const int kk = u * TPW + r;
            float kf[8];
            unpack16<__half>(*reinterpret_cast<const uint4*>(kt + kk * HD + 8 * v), kf);
            float a[GM];
#pragma unroll
            for (int gg = 0; gg < GM; gg++) {
                float d = 0.f;
#pragma unroll
                for (int e = 0; e < 8; e++) d += qf[gg][e] * kf[e];
                a[gg] = d;
            }
            float d = reduce_scatter<GM>(a, lane);
#pragma unroll
            for (int o = GM; o < NV; o <<= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
            s[u] = k0 + warp * D4_KW + kk < t1 ? d : -INFINITY;
            tmax = fmaxf(tmax, s[u]);
        }
        // The tile's maximum over the warp's keys (lanes NV apart hold the other rows).
#pragma unroll
        for (int o = NV; o < 32; o <<= 1) tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, o));
        const float mn = fmaxf(m, tmax);
        // A warp that has seen no key yet (mn = −∞: past the chunk's end) keeps zeros.
        const float corr = mn == -INFINITY ? 1.f : exp2f(m - mn);
        float psum = 0.f;
#pragma unroll
        for (int u = 0; u < D4_KW / TPW; u++) {
            const float p = mn == -INFINITY ? 0.f : exp2f(s[u] - mn);
            psum += p;
            if (v < GM) ps[warp][u * TPW + r][v] = p;
        }
#pragma unroll
        for (int o = NV; o < 32; o <<= 1) psum += __shfl_xor_sync(0xffffffffu, psum, o);
        l = l * corr + psum;
        m = mn;
        if (lane < GM) pc[warp][lane] = corr;
        warp_sync();

        // PV over the same keys: rescale, then add p · V for each head.
#pragma unroll
        for (int gg = 0; gg < GM; gg++) {
            const float c = pc[warp][gg];
#pragma unroll
            for (int e = 0; e < 8; e++) acc[gg][e] *= c;
        }
#pragma unroll
        for (int u = 0; u < D4_KW / TPW; u++) {
            const int kk = u * TPW + r;
            float vf[8];
            unpack16<__half>(*reinterpret_cast<const uint4*>(vt + kk * HD + 8 * v), vf);
#pragma unroll
            for (int gg = 0; gg < GM; gg++) {
                const float p = ps[warp][kk][gg];
#pragma unroll
                for (int e = 0; e < 8; e++) acc[gg][e] += p * vf[e];
            }
        }
    }

    // Merge: the TPW rows of a warp (lanes NV apart), then the warps through shared memory (the
    // K stages, free once every warp is past its last tile).
#pragma unroll
    for (int gg = 0; gg < GM; gg++)
#pragma unroll
        for (int e = 0; e < 8; e++)
#pragma unroll
            for (int o = NV; o < 32; o <<= 1) acc[gg][e] += __shfl_xor_sync(0xffffffffu, acc[gg][e], o);
    if (lane < GM) {
        wml[warp][lane][0] = m;
        wml[warp][lane][1] = l;
    }
    __syncthreads();
    float* red = reinterpret_cast<float*>(&ks[0][0]);  // (warps, GM, HD)
    if (r == 0)
#pragma unroll
        for (int gg = 0; gg < GM; gg++)
#pragma unroll
            for (int e = 0; e < 8; e++) red[(warp * GM + gg) * HD + 8 * v + e] = acc[gg][e];
    __syncthreads();
    for (int k = tid; k < G * HD; k += D4_THREADS) {
        const int gg = k / HD, d = k % HD, h = g * G + gg;
        // Warp 0 holds the chunk's first key, so M is finite; a warp that saw none has m = −∞
        // and weight 0.
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < D4_WARPS; w++) M = fmaxf(M, wml[w][gg][0]);
        float o = 0.f, L = 0.f;
#pragma unroll
        for (int w = 0; w < D4_WARPS; w++) {
            const float ww = exp2f(wml[w][gg][0] - M);
            o += ww * red[(w * GM + gg) * HD + d];
            L += ww * wml[w][gg][1];
        }
        if (mode == D4_DIRECT) {
            out[((int64_t)i * heads + h) * HD + d] = o / L;
        } else {
            const int64_t po = ((int64_t)di * heads + h) * max_splits + split;
            part_o[po * HD + d] = o;
            if (d == 0) {
                part_ml[po * 2] = M * 0.6931471805599453f;  // back to base e for the merge
                part_ml[po * 2 + 1] = L;
            }
        }
    }
    if (mode == D4_MERGE)
        decode_merge_last<GM, HD>(out, part_o, part_ml, counts, di, i, g, G, heads, kv_heads,
                                  max_splits, (ctx + chunk - 1) / chunk);
}

#define DECODE_V4_ENTRY(HD, GM)                                                                    \
    extern "C" __global__ void __launch_bounds__(D4_THREADS, 3) attention_decode_v4_f16_hd##HD##_g##GM( \
        float* out, float* part_o, float* part_ml, int* counts, const float* q, const __half* kc,  \
        const __half* vc, const int* rows, const int* pos, const int* row_tab, const int* tables,  \
        int heads, int kv_heads, int layer, int num_blocks, int block_size, int chunk,             \
        int max_splits, int mode) {                                                                \
        pdl_begin();                                                                               \
        attention_decode_v4<HD, GM>(out, part_o, part_ml, counts, q, kc, vc, rows, pos, row_tab,   \
                                    tables, heads, kv_heads, layer, num_blocks, block_size, chunk, \
                                    max_splits, mode);                                             \
    }

// grid (max_splits, kv_heads, nr), block (D4_THREADS).
DECODE_V4_ENTRY(64, 1)
DECODE_V4_ENTRY(64, 2)
DECODE_V4_ENTRY(64, 4)
DECODE_V4_ENTRY(64, 8)
DECODE_V4_ENTRY(128, 1)
DECODE_V4_ENTRY(128, 2)
DECODE_V4_ENTRY(128, 4)
DECODE_V4_ENTRY(128, 8)

// ================================================================ v5 decode (tensor cores)
//
// attention_decode_v5_f16_hd<HD>: v4's splits, partials and merges with the products on the
// tensor cores, after what the H200 check measured (bench/results/gpu-h200-2026-11-28-run3): v4
// at one row reached 52% of the copy bandwidth at 7B (G = 1) but 19% at the 70B shape (G = 8),
// where every lane spends 64 FMAs on each K row it holds and 64 on each V row, plus a
// reduce-scatter of 7 shuffles — ~800 instructions a warp per 8 keys, about what the SMs can
// issue at HBM speed, so nothing is left for latency. v5:
//   - puts the G ≤ 8 query heads of the KV head in the 16 rows of an mma A operand twice: row r
//     holds head r's q (pre-scaled by log2(e)/sqrt(HD)) rounded to fp16, row r + 8 the rounding's
//     remainder times 2¹¹, also in fp16. One m16n8k16 gives both halves of the scores of 8 keys
//     (S = Q·Kᵀ, K as stored: ldmatrix), and s = hi + lo·2⁻¹¹ carries ~22 bits of q — as v4's
//     fp32 q did, to fp32 rounding of the sums, where an fp16 q (prefill v3/v4) loses 2⁻¹¹;
//   - does the same with P for O += P·V (V with ldmatrix.trans): the probabilities' hi and lo
//     halves are the A operand's rows r and r + 8, and they come from S's accumulators in the
//     lane that holds them (the accumulator layout of 16 keys is the A layout), so o = hi +
//     lo·2⁻¹¹ with no shuffle;
//   - every warp computes the (cheap) scores of the whole tile and the same online softmax, and
//     owns HD/4 of the output dims: no merge between warps;
//   - tiles of D5_BK = 16 keys in D5_STAGES = 4 shared stages: three tiles (24 KB of K and V at
//     HD 128) in flight while one is computed, where v4 had one of 32 keys (16 KB).
// Per warp and 16 keys: 16 + 2·HD/64 mmas, 8 + HD/64 ldmatrix, ~40 other instructions.
// G > 8 is not handled (v2's kernels take it, as for v4).
//   grid (max_splits, kv_heads, nr), block (D5_THREADS); chunk a multiple of D5_BK.
#define D5_BK 16
#define D5_STAGES 4
#define D5_THREADS 128
#define D5_WARPS (D5_THREADS / 32)

// split_half2 rounds (a, b) to fp16 (hi) and the rounding's remainders, times 2¹¹, to fp16 (lo):
// a ≈ hi + lo·2⁻¹¹ to ~22 bits (the remainder and its scaling are exact in fp32).
LLAMACU_DEVICE void split_half2(float a, float b, uint32_t& hi, uint32_t& lo) {
    hi = pack_half2(a, b);
    const float2 h = h2_to_f2(hi);
    lo = pack_half2((a - h.x) * 2048.f, (b - h.y) * 2048.f);
}

// mma_qk_tile sets s[n] = Q·Kᵀ for keys 8n … 8n + 7 of a shared K tile kt (BK keys, rows S
// halves apart), Q given as A fragments (qf[kk]: dims 16kk … 16kk + 15). The ldmatrix matrices
// of keys 8n …: dims 16kk …, 16kk + 8 …, 16(kk + 1) …, 16(kk + 1) + 8 … — the B fragments of
// k-steps kk and kk + 1. s[n] holds keys 8n + 2tig, +1 of rows gid and gid + 8. Prefill v4 and
// decode v5.
template <int BK, int HD, int S>
LLAMACU_DEVICE void mma_qk_tile(float (&s)[BK / 8][4], const uint32_t (&qf)[HD / 16][4],
                                const __half* kt, int lane) {
#pragma unroll
    for (int n = 0; n < BK / 8; n++) {
        s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk += 2) {
            uint32_t b[4];
            ldmatrix_x4<false>(b, kt + (8 * n + (lane & 7)) * S + 16 * kk + 8 * (lane >> 3));
            mma_m16n8k16(s[n], qf[kk], b);
            mma_m16n8k16(s[n], qf[kk + 1], b + 2);
        }
    }
}

// mma_pv_tile adds P·V to o[n], dims d0 + 8n … d0 + 8n + 7 (n < NT), P as A fragments of the
// tile's BK keys (pf[j]: keys 16j … 16j + 15), V a shared tile vt (rows S halves apart). The
// ldmatrix.trans matrices for keys 16j …: (keys 16j … +7, dims d …), (16j + 8 …, d …),
// (16j …, d + 8 …), (16j + 8 …, d + 8 …), d = d0 + 8n — the B fragments of dims d and d + 8;
// lane l gives row l % 8 of matrix l / 8. Prefill v4 and decode v5.
template <int BK, int NT, int S>
LLAMACU_DEVICE void mma_pv_tile(float (&o)[NT][4], const uint32_t (&pf)[BK / 16][4],
                                const __half* vt, int d0, int lane) {
    static_assert(NT % 2 == 0, "ldmatrix.x4.trans covers two n-tiles");
#pragma unroll
    for (int n = 0; n < NT; n += 2)
#pragma unroll
        for (int j = 0; j < BK / 16; j++) {
            uint32_t b[4];
            ldmatrix_x4<true>(b, vt + (16 * j + 8 * ((lane >> 3) & 1) + (lane & 7)) * S + d0 + 8 * n +
                                     8 * (lane >> 4));
            mma_m16n8k16(o[n], pf[j], b);
            mma_m16n8k16(o[n + 1], pf[j], b + 2);
        }
}

template <int HD>
__device__ void attention_decode_v5(float* out, float* part_o, float* part_ml, int* counts,
                                    const float* q, const __half* kc, const __half* vc,
                                    const int* rows, const int* pos, const int* row_tab,
                                    const int* tables, int heads, int kv_heads, int layer,
                                    int num_blocks, int block_size, int chunk, int max_splits,
                                    int mode) {
    constexpr int S = HD + 8;                // row stride in halves (conflict-free ldmatrix)
    constexpr int KS = HD / 16;              // k-steps of S = Q·Kᵀ
    constexpr int NW = HD / 8 / D5_WARPS;    // 8-dim n-tiles of O per warp (4 at HD 128)
    constexpr float LO = 1.f / 2048.f;       // weight of a lo half
    static_assert(NW % 2 == 0 && D5_BK % 16 == 0, "geometry");
    __shared__ __align__(16) __half ks[D5_STAGES][D5_BK * S];  // (stage, key, HD)
    __shared__ __align__(16) __half vs[D5_STAGES][D5_BK * S];

    const int split = blockIdx.x, g = blockIdx.y, di = blockIdx.z;
    const int i = rows[di];
    const int ctx = pos[i] + 1, t0 = split * chunk;
    if (t0 >= ctx) return;  // uniform over the block: this row has fewer splits
    // A row whose context fits one chunk has nothing to merge: its block writes out itself.
    if (mode == D4_MERGE && ctx <= chunk) mode = D4_DIRECT;
    const int t1 = min(t0 + chunk, ctx), ntiles = (t1 - t0 + D5_BK - 1) / D5_BK;
    const int G = heads / kv_heads, kv_dim = kv_heads * HD;
    const int* tab = tables + row_tab[i];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gid = lane >> 2, tig = lane & 3;

    // Tile t is copy group t: past the last tile the group is empty, so that waiting for
    // "all but D5_STAGES − 2 groups" always means tile t has landed.
    auto load_tile = [&](int t) {
        if (t < ntiles)
            kv_tile_async<D5_BK, HD, S, D5_THREADS>(ks[t % D5_STAGES], vs[t % D5_STAGES], kc, vc,
                                                    tab, t0 + t * D5_BK, t1, g, layer, num_blocks,
                                                    block_size, kv_dim);
        else
            cp_async_commit();
    };
#pragma unroll
    for (int t = 0; t < D5_STAGES - 1; t++) load_tile(t);  // in flight while q is read

    // Q as A fragments: rows gid (hi) and gid + 8 (lo) are head g·G + gid (zero for gid ≥ G);
    // qf[kk] covers dims 16kk + 2tig, +1 (regs 0, 1) and +8, +9 (regs 2, 3).
    const float scale = 1.4426950408889634f / sqrtf((float)HD);
    const bool hv = gid < G;
    const float* qrow = q + ((int64_t)i * heads + (int64_t)g * G + (hv ? gid : 0)) * HD + 2 * tig;
    uint32_t qf[KS][4];
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        float2 a = make_float2(0.f, 0.f), b = a;
        if (hv) {
            a = __ldg(reinterpret_cast<const float2*>(qrow + 16 * kk));
            b = __ldg(reinterpret_cast<const float2*>(qrow + 16 * kk + 8));
        }
        split_half2(a.x * scale, a.y * scale, qf[kk][0], qf[kk][1]);
        split_half2(b.x * scale, b.y * scale, qf[kk][2], qf[kk][3]);
    }

    // O: dims dw + 8n + 2tig, +1 (dw = the warp's first dim) of rows gid (hi: 0, 1) and gid + 8
    // (lo: 2, 3). The online softmax of head gid (base 2): running max m, the lane's share l of
    // the sum (its keys 2tig, 2tig + 1 of each 8), the same in every warp.
    const int dw = warp * NW * 8;
    float o[NW][4];
#pragma unroll
    for (int n = 0; n < NW; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m = -INFINITY, l = 0.f;

    for (int t = 0; t < ntiles; t++) {
        const int st = t % D5_STAGES, k0 = t0 + t * D5_BK;
        cp_async_wait<D5_STAGES - 2>();  // this thread's copies of tile t have landed
        __syncthreads();  // … and every thread's; every warp is past tile t − 1, whose stage …
        load_tile(t + D5_STAGES - 1);  // … tile t + D5_STAGES − 1 refills
        const __half* kt = ks[st];
        const __half* vt = vs[st];

        // S = Q·Kᵀ: s[n] holds keys k0 + 8n + 2tig, +1 of rows gid (hi) and gid + 8 (lo).
        float s[D5_BK / 8][4];
        mma_qk_tile<D5_BK, HD, S>(s, qf, kt, lane);

        // Head gid's scores (keys past the chunk's end masked), the tile's max over the 4 lanes
        // that hold the head, and the running max. Key k0 < t1 is in every tile, so mx is finite.
        float x[D5_BK / 8][2];
        float mx = -INFINITY;
#pragma unroll
        for (int n = 0; n < D5_BK / 8; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                x[n][e] = k0 + 8 * n + 2 * tig + e < t1 ? s[n][e] + s[n][2 + e] * LO : -INFINITY;
                mx = fmaxf(mx, x[n][e]);
            }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mn = fmaxf(m, mx);
        const float corr = exp2f(m - mn);  // 0 on the first tile (m = −∞)
        m = mn;
        l *= corr;
#pragma unroll
        for (int n = 0; n < NW; n++) o[n][0] *= corr, o[n][1] *= corr, o[n][2] *= corr, o[n][3] *= corr;

        // P = 2^(s − m) as A fragments, hi and lo: keys 16j + 2tig, +1 (n = 2j) in regs 0 (hi)
        // and 1 (lo), keys 16j + 8 + 2tig, +1 (n = 2j + 1) in regs 2 and 3.
        uint32_t pf[D5_BK / 16][4];
#pragma unroll
        for (int j = 0; j < D5_BK / 16; j++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const float p0 = exp2f(x[2 * j + h][0] - mn), p1 = exp2f(x[2 * j + h][1] - mn);
                l += p0 + p1;
                split_half2(p0, p1, pf[j][2 * h], pf[j][2 * h + 1]);
            }

        // O += P·V over the warp's dims.
        mma_pv_tile<D5_BK, NW, S>(o, pf, vt, dw, lane);
    }
    cp_async_wait<0>();  // only empty groups are left: nothing lands after the block ends

    // Head gid's sum over its 4 lanes; the chunk's output o = hi + lo·2⁻¹¹ (base-2 max m).
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    if (hv) {
        const int h = g * G + gid;
        const int64_t po = ((int64_t)di * heads + h) * max_splits + split;
        const float inv = mode == D4_DIRECT ? 1.f / l : 1.f;
        float* dst = mode == D4_DIRECT ? out + ((int64_t)i * heads + h) * HD : part_o + po * HD;
#pragma unroll
        for (int n = 0; n < NW; n++)
            *reinterpret_cast<float2*>(dst + dw + 8 * n + 2 * tig) =
                make_float2((o[n][0] + o[n][2] * LO) * inv, (o[n][1] + o[n][3] * LO) * inv);
        if (mode != D4_DIRECT && warp == 0 && tig == 0) {
            part_ml[po * 2] = m * 0.6931471805599453f;  // back to base e for the merge
            part_ml[po * 2 + 1] = l;
        }
    }
    if (mode == D4_MERGE)
        decode_merge_last<8, HD>(out, part_o, part_ml, counts, di, i, g, G, heads, kv_heads,
                                 max_splits, (ctx + chunk - 1) / chunk);
}

#define DECODE_V5_ENTRY(HD)                                                                       \
    extern "C" __global__ void __launch_bounds__(D5_THREADS, 4) attention_decode_v5_f16_hd##HD( \
        float* out, float* part_o, float* part_ml, int* counts, const float* q, const __half* kc, \
        const __half* vc, const int* rows, const int* pos, const int* row_tab, const int* tables, \
        int heads, int kv_heads, int layer, int num_blocks, int block_size, int chunk,            \
        int max_splits, int mode) {                                                               \
        pdl_begin();                                                                              \
        attention_decode_v5<HD>(out, part_o, part_ml, counts, q, kc, vc, rows, pos, row_tab,      \
                                tables, heads, kv_heads, layer, num_blocks, block_size, chunk,    \
                                max_splits, mode);                                                \
    }

// grid (max_splits, kv_heads, nr), block (D5_THREADS).
DECODE_V5_ENTRY(64)
DECODE_V5_ENTRY(128)

// ================================================================ v2 prefill (flash attention)

#define PF_BQ 32       // query vectors per block
#define PF_BK 32       // keys per tile
#define PF_THREADS 128
#define PF_HD_MAX 128
#define PF_QSTRIDE (PF_HD_MAX + 4)  // floats; rows 16-byte aligned, banks shifted by 4 per row
#define PF_KSTRIDE (PF_HD_MAX + 2)  // elements; odd word stride in fp16

// KV2 is a pair of cache elements loaded as one 4- or 8-byte word.
template <typename KV> struct KV2;
template <> struct KV2<float> {
    typedef float2 T;
    static LLAMACU_DEVICE float2 f(float2 v) { return v; }
    static LLAMACU_DEVICE float2 zero() { return make_float2(0.f, 0.f); }
};
template <> struct KV2<__half> {
    typedef __half2 T;
    static LLAMACU_DEVICE float2 f(__half2 v) { return __half22float2(v); }
    static LLAMACU_DEVICE __half2 zero() { return __float2half2_rn(0.f); }
};

template <typename KV>
__device__ void attention_prefill(float* out, const float* q, const KV* kc, const KV* vc,
                                  const int* tiles, const int* pos, const int* row_tab,
                                  const int* tables, int heads, int kv_heads, int head_dim,
                                  int layer, int num_blocks, int block_size) {
    typedef typename KV2<KV>::T P2;
    __shared__ __align__(16) float qs[PF_BQ * PF_QSTRIDE];  // (32 query vectors, head_dim)
    __shared__ __align__(16) KV kvs[PF_BK * PF_KSTRIDE];    // (32 keys, head_dim): K, then V
    __shared__ float ps[PF_BQ * (PF_BK + 1)];               // (32, 32) probabilities

    const int tile = blockIdx.x, g = blockIdx.y, tid = threadIdx.x;
    const int r0 = tiles[2 * tile], nrows = tiles[2 * tile + 1];
    const int G = heads / kv_heads, kv_dim = kv_heads * head_dim, half = head_dim >> 1;
    const int nq = nrows * G;            // valid query vectors
    const int p0 = pos[r0];              // positions p0 … p0 + nrows − 1
    const int pmax = p0 + nrows - 1;
    const int* tab = tables + row_tab[r0];

    // Query vector qv is (row r0 + qv/G, head g·G + qv%G); invalid ones (qv ≥ nq) duplicate the
    // last valid one, so that their softmax stays finite; they are never stored.
    const float scale = 1.f / sqrtf((float)head_dim);
    for (int k = tid; k < PF_BQ * half; k += PF_THREADS) {
        const int qv = k / half, j = k % half;
        const int qe = min(qv, nq - 1);
        const int r = r0 + qe / G, h = g * G + qe % G;
        const float2 x =
            *reinterpret_cast<const float2*>(q + ((int64_t)r * heads + h) * head_dim + 2 * j);
        *reinterpret_cast<float2*>(qs + qv * PF_QSTRIDE + 2 * j) =
            make_float2(x.x * scale, x.y * scale);
    }

    // This thread: query vectors rg·4 … rg·4+3; score keys kq and kq+16; output dim pairs
    // kq, kq+16, kq+32, kq+48.
    const int rg = tid >> 4, kq = tid & 15;
    int qpos[4];
#pragma unroll
    for (int a = 0; a < 4; a++) qpos[a] = p0 + min(rg * 4 + a, nq - 1) / G;
    float m[4], l[4], o[4][8];
#pragma unroll
    for (int a = 0; a < 4; a++) {
        m[a] = -INFINITY;
        l[a] = 0.f;
#pragma unroll
        for (int e = 0; e < 8; e++) o[a][e] = 0.f;
    }

    for (int k0 = 0; k0 <= pmax; k0 += PF_BK) {
        // K tile (keys past pmax are zero and masked).
        __syncthreads();  // previous tile's PV is done with kvs and ps
        for (int k = tid; k < PF_BK * half; k += PF_THREADS) {
            const int key = k / half, j = k % half, kp = k0 + key;
            P2 val;
            if (kp <= pmax) {
                const int64_t off = kv_offset(layer, num_blocks, block_size, kv_dim,
                                              tab[kp / block_size], kp % block_size) +
                                    (int64_t)g * head_dim + 2 * j;
                val = *reinterpret_cast<const P2*>(kc + off);
            } else {
                val = KV2<KV>::zero();
            }
            *reinterpret_cast<P2*>(kvs + key * PF_KSTRIDE + 2 * j) = val;
        }
        __syncthreads();

        // Scores s[a][b] for query vector rg·4+a and key kq + 16·b.
        float s[4][2];
#pragma unroll
        for (int a = 0; a < 4; a++) s[a][0] = s[a][1] = 0.f;
        for (int j = 0; j < half; j++) {
            const float2 k0v = KV2<KV>::f(*reinterpret_cast<const P2*>(kvs + kq * PF_KSTRIDE + 2 * j));
            const float2 k1v =
                KV2<KV>::f(*reinterpret_cast<const P2*>(kvs + (kq + 16) * PF_KSTRIDE + 2 * j));
#pragma unroll
            for (int a = 0; a < 4; a++) {
                const float2 qq = *reinterpret_cast<const float2*>(qs + (rg * 4 + a) * PF_QSTRIDE + 2 * j);
                s[a][0] += qq.x * k0v.x + qq.y * k0v.y;
                s[a][1] += qq.x * k1v.x + qq.y * k1v.y;
            }
        }
        // Causal mask, online softmax over the 16 lanes that share these query vectors.
#pragma unroll
        for (int a = 0; a < 4; a++) {
            if (k0 + kq > qpos[a]) s[a][0] = -INFINITY;
            if (k0 + kq + 16 > qpos[a]) s[a][1] = -INFINITY;
            float tmax = fmaxf(s[a][0], s[a][1]);
#pragma unroll
            for (int off = 8; off > 0; off >>= 1)
                tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, off));
            // The first tile holds key 0 ≤ every query position: mn is finite from then on.
            const float mn = fmaxf(m[a], tmax);
            const float corr = expf(m[a] - mn);
            const float e0 = expf(s[a][0] - mn), e1 = expf(s[a][1] - mn);
            float rs = e0 + e1;
#pragma unroll
            for (int off = 8; off > 0; off >>= 1) rs += __shfl_xor_sync(0xffffffffu, rs, off);
            l[a] = l[a] * corr + rs;
            m[a] = mn;
#pragma unroll
            for (int e = 0; e < 8; e++) o[a][e] *= corr;
            ps[(rg * 4 + a) * (PF_BK + 1) + kq] = e0;
            ps[(rg * 4 + a) * (PF_BK + 1) + kq + 16] = e1;
        }
        __syncthreads();  // scores done with K; ps complete

        // V tile into the same buffer.
        for (int k = tid; k < PF_BK * half; k += PF_THREADS) {
            const int key = k / half, j = k % half, kp = k0 + key;
            P2 val;
            if (kp <= pmax) {
                const int64_t off = kv_offset(layer, num_blocks, block_size, kv_dim,
                                              tab[kp / block_size], kp % block_size) +
                                    (int64_t)g * head_dim + 2 * j;
                val = *reinterpret_cast<const P2*>(vc + off);
            } else {
                val = KV2<KV>::zero();
            }
            *reinterpret_cast<P2*>(kvs + key * PF_KSTRIDE + 2 * j) = val;
        }
        __syncthreads();

        // o[a][2c+{0,1}] += Σ_key p[a][key] · V[key][2·(kq + 16c) + {0,1}]
        const int kend = min(PF_BK, pmax - k0 + 1);
        for (int key = 0; key < kend; key++) {
            float pa[4];
#pragma unroll
            for (int a = 0; a < 4; a++) pa[a] = ps[(rg * 4 + a) * (PF_BK + 1) + key];
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int j = kq + 16 * c;
                if (j < half) {
                    const float2 vv =
                        KV2<KV>::f(*reinterpret_cast<const P2*>(kvs + key * PF_KSTRIDE + 2 * j));
#pragma unroll
                    for (int a = 0; a < 4; a++) {
                        o[a][2 * c] += pa[a] * vv.x;
                        o[a][2 * c + 1] += pa[a] * vv.y;
                    }
                }
            }
        }
    }

#pragma unroll
    for (int a = 0; a < 4; a++) {
        const int qv = rg * 4 + a;
        if (qv < nq) {
            const int r = r0 + qv / G, h = g * G + qv % G;
            float* orow = out + ((int64_t)r * heads + h) * head_dim;
            const float inv = 1.f / l[a];
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int j = kq + 16 * c;
                if (j < half)
                    *reinterpret_cast<float2*>(orow + 2 * j) =
                        make_float2(o[a][2 * c] * inv, o[a][2 * c + 1] * inv);
            }
        }
    }
}

// grid (nt, kv_heads), block (PF_THREADS).
extern "C" __global__ void __launch_bounds__(PF_THREADS)
    attention_prefill_f32(float* out, const float* q, const float* kc, const float* vc,
                          const int* tiles, const int* pos, const int* row_tab, const int* tables,
                          int heads, int kv_heads, int head_dim, int layer, int num_blocks,
                          int block_size) {
    pdl_begin();
    attention_prefill(out, q, kc, vc, tiles, pos, row_tab, tables, heads, kv_heads, head_dim,
                      layer, num_blocks, block_size);
}
extern "C" __global__ void __launch_bounds__(PF_THREADS)
    attention_prefill_f16(float* out, const float* q, const __half* kc, const __half* vc,
                          const int* tiles, const int* pos, const int* row_tab,
                          const int* tables, int heads, int kv_heads, int head_dim, int layer,
                          int num_blocks, int block_size) {
    pdl_begin();
    attention_prefill(out, q, kc, vc, tiles, pos, row_tab, tables, heads, kv_heads, head_dim,
                      layer, num_blocks, block_size);
}

// ================================================================ v3 prefill (tensor cores)

#define PM_BQ 64       // query vectors per block: 16 per warp
#define PM_BK 64       // keys per tile
#define PM_THREADS 128

// The pieces v3 and v4 share. A warp owns 16 query vectors; with gid = lane / 4 and tig =
// lane % 4, a thread holds rows gid and gid + 8 of them (i = 0, 1) in the mma layouts.

// pm_queries sets the thread's two query vectors, qv = first + 8i: (batch row r0 + qv/G, head
// g·G + qv%G, position p0 + qv/G). Invalid ones (qv ≥ nq) duplicate the last valid one, so that
// their softmax stays finite; pm_store never stores them.
LLAMACU_DEVICE void pm_queries(int (&qrow)[2], int (&qhead)[2], int (&qpos)[2], int first, int nq,
                               int r0, int p0, int G, int g) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int qe = min(first + 8 * i, nq - 1);
        qrow[i] = r0 + qe / G;
        qhead[i] = g * G + qe % G;
        qpos[i] = p0 + qe / G;
    }
}

// pm_load_q reads Q (16 × HD per warp) as A fragments, times scale, rounded to fp16: qf[kk]
// covers dims 16kk … 16kk + 15.
template <int HD>
LLAMACU_DEVICE void pm_load_q(uint32_t (&qf)[HD / 16][4], const float* q, const int (&qrow)[2],
                              const int (&qhead)[2], int heads, int tig, float scale) {
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const float* qp = q + ((int64_t)qrow[i] * heads + qhead[i]) * HD + 16 * kk + 2 * tig;
            const float2 lo = *reinterpret_cast<const float2*>(qp);
            const float2 hi = *reinterpret_cast<const float2*>(qp + 8);
            qf[kk][i] = pack_half2(lo.x * scale, lo.y * scale);
            qf[kk][2 + i] = pack_half2(hi.x * scale, hi.y * scale);
        }
    }
}

// pm_softmax takes the scores of one BK-key tile (s[n]: keys k0 + 8n + 2tig, +1 of rows gid and
// gid + 8), masks the keys past each row's position, updates the online softmax (Milakov &
// Gimelshein 2018: running max m, this thread's share of the sums l, O rescaled) and returns
// P = exp(S − m) — exp2 when BASE2 (scores pre-scaled by log2 e) — as A fragments: the
// accumulator layout of keys 16j … 16j + 15 (s[2j], s[2j + 1]) is the A layout of a 16 × 16 tile.
template <int HD, int BK, bool BASE2>
LLAMACU_DEVICE void pm_softmax(float (&s)[BK / 8][4], uint32_t (&pf)[BK / 16][4],
                               float (&o)[HD / 8][4], float (&m)[2], float (&l)[2],
                               const int (&qpos)[2], int k0, int tig) {
    // Each row's max over the tile is reduced over the 4 lanes (tig) that hold it.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < BK / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            if (k0 + 8 * n + 2 * tig + (e & 1) > qpos[e >> 1]) s[n][e] = -INFINITY;
            mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
        }
    float alpha[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
        // Key k0 ≤ every position is in the first tile, so m is finite from then on and no
        // exp sees −∞ − (−∞).
        const float mn = fmaxf(m[i], mx[i]);
        alpha[i] = BASE2 ? exp2f(m[i] - mn) : expf(m[i] - mn);
        m[i] = mn;
        l[i] *= alpha[i];
    }
#pragma unroll
    for (int n = 0; n < HD / 8; n++) {
        o[n][0] *= alpha[0], o[n][1] *= alpha[0];
        o[n][2] *= alpha[1], o[n][3] *= alpha[1];
    }
#pragma unroll
    for (int j = 0; j < BK / 16; j++) {
        float p[2][4];
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float d = s[2 * j + h][e] - m[e >> 1];
                p[h][e] = BASE2 ? exp2f(d) : expf(d);
                l[e >> 1] += p[h][e];
            }
        pf[j][0] = pack_half2(p[0][0], p[0][1]);
        pf[j][1] = pack_half2(p[0][2], p[0][3]);
        pf[j][2] = pack_half2(p[1][0], p[1][1]);
        pf[j][3] = pack_half2(p[1][2], p[1][3]);
    }
}

// pm_store sums each row's l over its 4 lanes and writes O / l for the valid query vectors
// (first + 8i < nq): dims 8n + 2tig, +1.
template <int HD>
LLAMACU_DEVICE void pm_store(float* out, const float (&o)[HD / 8][4], float (&l)[2],
                             const int (&qrow)[2], const int (&qhead)[2], int heads, int first,
                             int nq, int tig) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (first + 8 * i >= nq) continue;
        float* orow = out + ((int64_t)qrow[i] * heads + qhead[i]) * HD + 2 * tig;
        const float inv = 1.f / l[i];
#pragma unroll
        for (int n = 0; n < HD / 8; n++)
            *reinterpret_cast<float2*>(orow + 8 * n) =
                make_float2(o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
    }
}

// grid (nt, kv_heads), block (PM_THREADS). Tiles as for v2, with up to PM_BQ/G rows each.
template <int HD>
__device__ void attention_prefill_mma(float* out, const float* q, const __half* kc,
                                      const __half* vc, const int* tiles, const int* pos,
                                      const int* row_tab, const int* tables, int heads,
                                      int kv_heads, int layer, int num_blocks, int block_size) {
    constexpr int S = HD + 8;  // row stride in halves: rows shift by 4 banks, conflict-free reads
    __shared__ __align__(16) __half ks[PM_BK * S];  // (64 keys, HD)
    __shared__ __align__(16) __half vs[PM_BK * S];  // (64 keys, HD)

    const int tile = blockIdx.x, g = blockIdx.y, tid = threadIdx.x;
    const int warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
    const int r0 = tiles[2 * tile], nrows = tiles[2 * tile + 1];
    const int G = heads / kv_heads, kv_dim = kv_heads * HD;
    const int nq = nrows * G;  // valid query vectors
    const int p0 = pos[r0], pmax = p0 + nrows - 1;
    const int* tab = tables + row_tab[r0];

    int qrow[2], qhead[2], qpos[2];
    pm_queries(qrow, qhead, qpos, warp * 16 + gid, nq, r0, p0, G, g);
    uint32_t qf[HD / 16][4];
    pm_load_q<HD>(qf, q, qrow, qhead, heads, tig, 1.f / sqrtf((float)HD));

    float o[HD / 8][4];  // O accumulator: dims 8·n + 2·tig, +1 of rows gid (0, 1) and gid+8 (2, 3)
#pragma unroll
    for (int n = 0; n < HD / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY};  // running max of rows gid, gid + 8
    float l[2] = {0.f, 0.f};              // this thread's share of their running sums

    for (int k0 = 0; k0 <= pmax; k0 += PM_BK) {
        // K and V tiles, 16-byte vectors; keys past pmax are zero and masked.
        __syncthreads();  // the previous tile's products are done with ks and vs
        for (int v = tid; v < PM_BK * HD / 8; v += PM_THREADS) {
            const int key = v / (HD / 8), j = v % (HD / 8), kp = k0 + key;
            uint4 kx = make_uint4(0u, 0u, 0u, 0u), vx = kx;
            if (kp <= pmax) {
                const int64_t off = kv_offset(layer, num_blocks, block_size, kv_dim,
                                              tab[kp / block_size], kp % block_size) +
                                    (int64_t)g * HD + 8 * j;
                kx = *reinterpret_cast<const uint4*>(kc + off);
                vx = *reinterpret_cast<const uint4*>(vc + off);
            }
            *reinterpret_cast<uint4*>(ks + key * S + 8 * j) = kx;
            *reinterpret_cast<uint4*>(vs + key * S + 8 * j) = vx;
        }
        __syncthreads();

        // S = Q·Kᵀ (16 × 64 per warp): s[n] holds keys 8n + 2tig, +1 of rows gid and gid + 8.
        float s[PM_BK / 8][4];
#pragma unroll
        for (int n = 0; n < PM_BK / 8; n++) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
            const __half* kr = ks + (8 * n + gid) * S + 2 * tig;
#pragma unroll
            for (int kc = 0; kc < HD / 16; kc++) {
                const uint32_t b[2] = {*reinterpret_cast<const uint32_t*>(kr + 16 * kc),
                                       *reinterpret_cast<const uint32_t*>(kr + 16 * kc + 8)};
                mma_m16n8k16(s[n], qf[kc], b);
            }
        }

        // Causal mask and the online softmax; P as A fragments.
        uint32_t pf[PM_BK / 16][4];
        pm_softmax<HD, PM_BK, false>(s, pf, o, m, l, qpos, k0, tig);

        // O += P·V: B fragment (keys 16j + 2tig, +1 and +8, +9; dim 8n + gid).
#pragma unroll
        for (int n = 0; n < HD / 8; n++) {
#pragma unroll
            for (int j = 0; j < PM_BK / 16; j++) {
                const __half* vp = vs + (16 * j + 2 * tig) * S + 8 * n + gid;
                const uint32_t b[2] = {pack_halves(vp[0], vp[S]), pack_halves(vp[8 * S], vp[9 * S])};
                mma_m16n8k16(o[n], pf[j], b);
            }
        }
    }

    pm_store<HD>(out, o, l, qrow, qhead, heads, warp * 16 + gid, nq, tig);
}

// grid (nt, kv_heads), block (PM_THREADS).
extern "C" __global__ void __launch_bounds__(PM_THREADS)
    attention_prefill_f16_v3_hd64(float* out, const float* q, const __half* kc, const __half* vc,
                                  const int* tiles, const int* pos, const int* row_tab,
                                  const int* tables, int heads, int kv_heads, int layer,
                                  int num_blocks, int block_size) {
    pdl_begin();
    attention_prefill_mma<64>(out, q, kc, vc, tiles, pos, row_tab, tables, heads, kv_heads, layer,
                              num_blocks, block_size);
}
extern "C" __global__ void __launch_bounds__(PM_THREADS)
    attention_prefill_f16_v3_hd128(float* out, const float* q, const __half* kc, const __half* vc,
                                   const int* tiles, const int* pos, const int* row_tab,
                                   const int* tables, int heads, int kv_heads, int layer,
                                   int num_blocks, int block_size) {
    pdl_begin();
    attention_prefill_mma<128>(out, q, kc, vc, tiles, pos, row_tab, tables, heads, kv_heads, layer,
                               num_blocks, block_size);
}

// ================================================================ v4 prefill (tensor cores, pipelined)
//
// attention_prefill_f16_v4_hd<HD>: v3's flash-attention 2 with what the first GPU check's 63
// TFLOP/s at 7B n = 2048 pointed at (bench/results/gpu-h100-2026-11-28-run1): v3 loads each
// K/V tile through registers and waits for it (nothing overlaps the global loads), and it
// gathers its mma B fragments with one shared load per 32-bit word (K) or per half (V: four
// 16-bit loads per mma). v4:
//   - copies tiles with cp.async into two shared-memory stages: tile t + 1 streams in while
//     tile t is computed (32-key tiles, so that both stages of K and V fit the 48 KB of static
//     shared memory: 34 KB at HD 128);
//   - loads B fragments with ldmatrix.x4 — K as stored for S = Q·Kᵀ, V with .trans for O = P·V —
//     one instruction for two mmas, where v3 spent 4 (K) or 8 (V);
//   - works in base 2: Q is pre-scaled by log2(e)/sqrt(HD), so each probability is one exp2f;
//   - starts the heaviest tiles first: grid (kv_heads, tiles) with tile = tiles − 1 − blockIdx.y,
//     and a causal tile's work grows with its position, so the last wave is the light tiles.
// Same tiles, fragments, online softmax and output as v3; the sums are the same products in the
// same order per key tile but over 32 keys instead of 64, and the exponentials differ in the
// last bits (exp2f of a pre-scaled score): v4 agrees with v3 to rounding, not bit for bit.
//   grid (kv_heads, nt), block (P4_THREADS).
#define P4_BQ 64       // query vectors per block: 16 per warp
#define P4_BK 32       // keys per tile
#define P4_THREADS 128

template <int HD>
__device__ void attention_prefill_v4(float* out, const float* q, const __half* kc,
                                     const __half* vc, const int* tiles, const int* pos,
                                     const int* row_tab, const int* tables, int heads,
                                     int kv_heads, int layer, int num_blocks, int block_size) {
    constexpr int S = HD + 8;    // row stride in halves: 8 rows of a matrix hit 8 × 4 banks
    __shared__ __align__(16) __half ks[2][P4_BK * S];  // (stage, 32 keys, HD)
    __shared__ __align__(16) __half vs[2][P4_BK * S];

    const int g = blockIdx.x, tile = gridDim.y - 1 - blockIdx.y, tid = threadIdx.x;
    const int warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
    const int r0 = tiles[2 * tile], nrows = tiles[2 * tile + 1];
    const int G = heads / kv_heads, kv_dim = kv_heads * HD;
    const int nq = nrows * G;
    const int p0 = pos[r0], pmax = p0 + nrows - 1;
    const int* tab = tables + row_tab[r0];

    int qrow[2], qhead[2], qpos[2];
    pm_queries(qrow, qhead, qpos, warp * 16 + gid, nq, r0, p0, G, g);

    auto load_tile = [&](int stage, int k0) {
        kv_tile_async<P4_BK, HD, S, P4_THREADS>(ks[stage], vs[stage], kc, vc, tab, k0, pmax + 1, g,
                                                layer, num_blocks, block_size, kv_dim);
    };
    load_tile(0, 0);  // in flight while Q is read

    // Q as A fragments, scaled by log2(e)/sqrt(HD): the softmax works in base 2.
    uint32_t qf[HD / 16][4];
    pm_load_q<HD>(qf, q, qrow, qhead, heads, tig, 1.4426950408889634f / sqrtf((float)HD));

    float o[HD / 8][4];
#pragma unroll
    for (int n = 0; n < HD / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY};  // running max of rows gid, gid + 8 (base 2)
    float l[2] = {0.f, 0.f};

    const int ntiles = pmax / P4_BK + 1;
    for (int t = 0; t < ntiles; t++) {
        const int st = t & 1, k0 = t * P4_BK;
        // Stage st ^ 1 was last read in iteration t − 1, which ended with a barrier.
        if (t + 1 < ntiles) {
            load_tile(st ^ 1, k0 + P4_BK);
            cp_async_wait<1>();  // tile t's copies have landed; t + 1's are in flight
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();  // … and every thread's copies of tile t are visible
        const __half* kt = ks[st];
        const __half* vt = vs[st];

        // S = Q·Kᵀ (16 × 32 per warp).
        float s[P4_BK / 8][4];
        mma_qk_tile<P4_BK, HD, S>(s, qf, kt, lane);

        // Causal mask and the online softmax, as v3, in base 2; P as A fragments.
        uint32_t pf[P4_BK / 16][4];
        pm_softmax<HD, P4_BK, true>(s, pf, o, m, l, qpos, k0, tig);

        // O += P·V over all HD dims.
        mma_pv_tile<P4_BK, HD / 8, S>(o, pf, vt, 0, lane);
        __syncthreads();  // every warp is done with stage st before iteration t + 1 refills it
    }

    pm_store<HD>(out, o, l, qrow, qhead, heads, warp * 16 + gid, nq, tig);
}

// grid (kv_heads, nt), block (P4_THREADS).
extern "C" __global__ void __launch_bounds__(P4_THREADS)
    attention_prefill_f16_v4_hd64(float* out, const float* q, const __half* kc, const __half* vc,
                                  const int* tiles, const int* pos, const int* row_tab,
                                  const int* tables, int heads, int kv_heads, int layer,
                                  int num_blocks, int block_size) {
    pdl_begin();
    attention_prefill_v4<64>(out, q, kc, vc, tiles, pos, row_tab, tables, heads, kv_heads, layer,
                             num_blocks, block_size);
}
extern "C" __global__ void __launch_bounds__(P4_THREADS)
    attention_prefill_f16_v4_hd128(float* out, const float* q, const __half* kc, const __half* vc,
                                   const int* tiles, const int* pos, const int* row_tab,
                                   const int* tables, int heads, int kv_heads, int layer,
                                   int num_blocks, int block_size) {
    pdl_begin();
    attention_prefill_v4<128>(out, q, kc, vc, tiles, pos, row_tab, tables, heads, kv_heads, layer,
                              num_blocks, block_size);
}
