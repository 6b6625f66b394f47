// gemv_mma.cu — the decode matmul of 2–8 activation rows on tensor cores (GEMV v4).
//
//   out[b, r] = Σ_k x[b, k] · w[r, k]      out (n, N) fp32; x (n, K) fp32, n ≤ 8;
//                                          w (N, K) f16|bf16|q8_0|q4_0
//
// Why: a decode step of several sequences (serving, a drafted step) multiplies a few rows of x
// by each weight matrix, and should cost what one row costs: the weights' bytes. GEMV v3 does
// not get there: per 16-byte vector of weights it does 8·B fp32 FMAs and reads B 32-byte
// vectors of x through L1 (4 bytes of x a weight byte at B = 8), and at n = 8 it read 41–61% of
// the copy bandwidth on 7B's shapes where one row read 79–100% (H100,
// bench/results/gpu-h100-2026-11-28-run2). mma.sync m16n8k16 takes a 16 × 16 tile of weights
// and 16 × 8 of x in one instruction per warp: the 8 columns are the batch rows.
//
// Fragments straight from global memory, no shared-memory staging. A block computes one tile of
// 16 weight rows r0 … r0+15. Its K is cut into 32-wide chunks; in a chunk, lane (gid, tig)
// (gid = lane / 4, tig = lane % 4) loads 16 bytes — 8 weights at k = 32c + 8·tig … +7 — of row
// r0+gid and of row r0+gid+8, and the 8 floats of x row gid at the same k (lanes of rows ≥ n
// load nothing and hold zeros). A sum over k does not care in which order its terms come, so the
// 16 K slots of an mma may stand for any 16 k of the chunk, as long as A and B agree: the
// lane's first 4 k fill its slots 2tig, 2tig+1, 2tig+8, 2tig+9 of one mma (a[0] row gid, a[1]
// row gid+8, a[2], a[3] the next pair: common.cuh's layout), its last 4 those of a second.
// Every load is a 16-byte vector; the 4 lanes of a row read 64 contiguous bytes of it (Q8_0: 8
// bytes a lane, Q4_0: 4, a whole block's quants across the 4).
//
// x keeps fp32's accuracy: it is split into parts of the weight dtype — fp16: hi = x rounded
// and lo = (x − hi)·2¹¹ rounded (scaled so that fp16 keeps it normal); bf16: three parts of 8
// bits, scaled by 2⁸ and 2¹⁶ — each multiplied by the weights into its own fp32 accumulator, the
// parts' sums joined at the end (Σ acc_p·S⁻ᵖ). x's error is then ~2⁻²² of it (bf16: 2⁻²⁴)
// instead of rounding x's 2⁻¹¹ (2⁻⁸), so a sequence decoded with others gets what it gets alone
// (v3, fp32 x) up to the order of the sums. It costs 4 mmas (bf16: 6) per 1 KB of weights a warp;
// at 3 TB/s an SM receives ~13 bytes of weights a clock, and an H100 SM issues about one
// m16n8k16 a clock: the tensor cores idle most of the time still. (|x| must stay below fp16's
// 65504 with fp16 weights, as on the cuBLAS path of prefill.)
//
// Split K, bits independent of the split: the chunks are dealt into GEMV4_G = 8 K groups
// (group g holds chunks g, g + 8, …), each summed by one warp in chunk order; a tile's KS warps
// (4 or 8, the host's choice by the matrix's rows: enough warps to fill the GPU) take 8/KS groups
// each, and the block adds the 8 group sums in order through shared memory. So the bits do not
// depend on KS, and the fused kernels (q/k/v, gate/up, q/k/v + RoPE) give bit for bit what
// separate v4 launches give.
//
// Q8_0 and Q4_0 weights (section "weight formats"): a chunk is one block, whose quants are exact
// small integers in fp16; each chunk's mma sums are scaled by the rows' d in fp32.
//
// Versions (f16, bf16, q8_0, q4_0; block (32·KS), KS = 4 or 8; grid one block per 16-row tile):
//   gemv_<dt>_v4_k<KS>          : out = x·wᵀ.                          grid (ceil(N/16))
//   gemv_<dt>_v4_qkv_k<KS>      : q, k, v = x·Wqᵀ, x·Wkᵀ, x·Wvᵀ; tiles of q, then k, then v (any
//                                 row counts).                         grid (Σ ceil(Nᵢ/16))
//   gemv_<dt>_v4_glu_k<KS>      : out = silu(x·W1ᵀ)·(x·W3ᵀ); a tile's warps stream its 16 rows of
//                                 both.                                grid (ceil(N/16))
//   gemv_<dt>_v4_qkv_rope_<kv>_k<KS>: the q/k/v kernel with RoPE and the paged KV store in its
//                                 epilogue, as gemv_<dt>_v3_qkv_rope (Nq % head_dim == 0, head_dim
//                                 even: a tile holds whole pairs).      grid (ceil(Nq/16) + 2·ceil(Nkv/16))
// Needs K % 32 == 0 (the host sends other shapes to v3). Checked against the CPU by
// kernels/emu_gemv4_test.go (testGEMVMMA) and go test -tags cuda ./gpu -run
// 'Conformance|Fused|GEMVSplit|BatchedDecode'; timed by BenchmarkGEMV and BenchmarkGEMVQuant.
#include "common.cuh"

#define GEMV4_G 8          // K groups
#define GEMV4_TILE 16      // weight rows a block
#define GEMV4_CHUNK 32     // k a chunk
// Blocks an SM must hold (fp16, Q8_0, Q4_0): 6 of 4 warps, 3 of 8 — 80 registers a thread at
// most. At 7B's gate/up (11008 rows: 688 tiles, ks = 4) that keeps every tile in one wave on an
// H100 (6 × 132 = 792; the 90 registers the kernel took unbounded held 5, 660 tiles, and left 28
// for a second wave). ptxas (sm_90) spills nothing but 16 bytes in Q8_0's q/k/v kernel. bf16
// carries x in 3 parts, not 2: bounded so, its gate/up kernel spilled 180 bytes, so it is left
// unbounded (126 registers there: 4 blocks an SM).
#define GEMV4_MINBLOCKS_f16(KS) (24 / (KS))
#define GEMV4_MINBLOCKS_bf16(KS) 1
#define GEMV4_MINBLOCKS_q8_0(KS) (24 / (KS))
#define GEMV4_MINBLOCKS_q4_0(KS) (24 / (KS))

// unpack2<W> widens the two W of a packed pair (pack2's inverse).
template <typename W> LLAMACU_DEVICE float2 unpack2(uint32_t u);
template <> LLAMACU_DEVICE float2 unpack2<__half>(uint32_t u) { return h2_to_f2(u); }
template <> LLAMACU_DEVICE float2 unpack2<__nv_bfloat16>(uint32_t u) { return bf2_to_f2(u); }

// Gemv4Parts<W>: x is carried as P parts of W, part p scaled by S^p (fp16: 2 parts, 11 + 11
// bits; bf16: 3 parts, 8 + 8 + 8 bits).
template <typename W> struct Gemv4Parts;
template <> struct Gemv4Parts<__half> {
    static constexpr int P = 2;
    static constexpr float S = 2048.f;  // 2¹¹
};
template <> struct Gemv4Parts<__nv_bfloat16> {
    static constexpr int P = 3;
    static constexpr float S = 256.f;  // 2⁸
};

// gemv4_split splits x[0 … 7] into the mma B fragments of its parts: part 0 = x rounded to W,
// part p + 1 = (x − Σ parts so far)·S^(p+1) rounded (each residual and scaling is exact in
// fp32). xp[p][0], xp[p][1] are the chunk's first mma's (x[0, 1], x[2, 3]), xp[p][2], xp[p][3]
// its second's.
template <typename W>
LLAMACU_DEVICE void gemv4_split(const float (&x)[8], uint32_t (&xp)[Gemv4Parts<W>::P][4]) {
    constexpr int P = Gemv4Parts<W>::P;
    constexpr float S = Gemv4Parts<W>::S;
    float r[8];
#pragma unroll
    for (int i = 0; i < 8; i++) r[i] = x[i];
#pragma unroll
    for (int p = 0; p < P; p++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            xp[p][i] = pack2<W>(r[2 * i], r[2 * i + 1]);
            const float2 h = unpack2<W>(xp[p][i]);
            r[2 * i] = (r[2 * i] - h.x) * S;
            r[2 * i + 1] = (r[2 * i + 1] - h.y) * S;
        }
}

// gemv4_mma: c (16 × 8) += a (16 × 16 of W) · b (16 × 8 of W), fp32 accumulation.
template <typename W> LLAMACU_DEVICE void gemv4_mma(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
template <> LLAMACU_DEVICE void gemv4_mma<__half>(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    mma_m16n8k16(c, a, b);
}
template <> LLAMACU_DEVICE void gemv4_mma<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    mma_m16n8k16_bf16(c, a, b);
}

// gemv4_chunk adds chunk c's products of a tile's rows (w_lo: lane row gid, w_hi: row gid+8,
// as loaded) with each part of x to that part's accumulator.
template <typename W>
LLAMACU_DEVICE void gemv4_chunk(float (&acc)[Gemv4Parts<W>::P][4], uint4 w_lo, uint4 w_hi,
                                const uint32_t (&xp)[Gemv4Parts<W>::P][4]) {
    const uint32_t a0[4] = {w_lo.x, w_hi.x, w_lo.y, w_hi.y}, a1[4] = {w_lo.z, w_hi.z, w_lo.w, w_hi.w};
#pragma unroll
    for (int p = 0; p < Gemv4Parts<W>::P; p++) {
        const uint32_t b0[2] = {xp[p][0], xp[p][1]}, b1[2] = {xp[p][2], xp[p][3]};
        gemv4_mma<W>(acc[p], a0, b0);
        gemv4_mma<W>(acc[p], a1, b1);
    }
}

// gemv4_join is a fragment element's sum over x's parts: Σ_p acc[p]·S^−p.
template <typename W> LLAMACU_DEVICE float gemv4_join(const float (&acc)[Gemv4Parts<W>::P][4], int i) {
    constexpr int P = Gemv4Parts<W>::P;
    float s = acc[P - 1][i];
#pragma unroll
    for (int p = P - 2; p >= 0; p--) s = acc[p][i] + s * (1.f / Gemv4Parts<W>::S);
    return s;
}

// ---------------------------------------------------------------- weight formats
//
// A format F says how a lane gets its share of one chunk of one weight row and adds its products:
//   F::T          the mma's dtype (fp16 or bf16), hence x's parts (Gemv4Parts<F::T>);
//   F::Mat        a matrix as the kernel receives it; F::Row a row of it, F::row(mat, r, K);
//   F::Raw        what the lane loads of a row for a chunk: F::load(row, c, tig), streamed (used
//                 once), or F::zero(); F::at(row, c, tig) its address (prefetch);
//   F::x8         the 8 floats of an x row that the lane's fragments pair with;
//   F::add        the chunk's products of the lane's rows gid (lo) and gid + 8 (hi) with x's
//                 parts, added to their accumulators.

// fp16 / bf16 rows: the lane's 8 weights at k = 32c + 8·tig … +7, one 16-byte load.
template <typename W> struct Gemv4Float {
    typedef W T;
    typedef const W* Mat;
    typedef const W* Row;
    typedef uint4 Raw;
    static LLAMACU_DEVICE Row row(Mat m, int r, int K) { return m + (int64_t)r * K; }
    static LLAMACU_DEVICE const void* at(Row w, int c, int tig) { return w + (int64_t)c * GEMV4_CHUNK + 8 * tig; }
    static LLAMACU_DEVICE Raw load(Row w, int c, int tig) { return load16_stream(at(w, c, tig)); }
    static LLAMACU_DEVICE Raw zero() { return make_uint4(0, 0, 0, 0); }
    static LLAMACU_DEVICE void x8(const float* xr, int c, int tig, float (&xf)[8]) {
        load_f32x<8>(xr + (int64_t)c * GEMV4_CHUNK + 8 * tig, xf);
    }
    static LLAMACU_DEVICE void add(float (&acc)[Gemv4Parts<W>::P][4], Raw lo, Raw hi,
                                   const uint32_t (&xp)[Gemv4Parts<W>::P][4]) {
        gemv4_chunk<W>(acc, lo, hi, xp);
    }
};

// Q8_0 and Q4_0 as resident (gpu/upload.go): quants (N, K) int8 or (N, K/2) nibbles and the
// blocks' fp16 scales d (N, K/32). A chunk is one block, so its 16 × 8 sums of quants times x,
// exact integers in fp16 on the tensor cores, are scaled by each row's d once: a separate mma
// accumulator per chunk, then acc += d·sum (d of row gid for fragment elements 0, 1, of row
// gid + 8 for 2, 3).
struct Gemv4QRaw {
    uint2 q;  // the lane's 8 quants as loaded (Q4_0: 4 bytes in q.x)
    float d;
};
template <typename Q> struct Gemv4QRow {
    const Q* q;
    const __half* d;
};

// gemv4_qadd: the quantised formats' F::add, w_lo and w_hi the lane's 8 quants of each row widened
// to packed fp16 pairs (k pairs 0-1, 2-3, 4-5, 6-7 of the lane's 8, as x8 orders them).
LLAMACU_DEVICE void gemv4_qadd(float (&acc)[2][4], const uint32_t (&w_lo)[4], float d_lo,
                               const uint32_t (&w_hi)[4], float d_hi, const uint32_t (&xp)[2][4]) {
    const uint32_t a0[4] = {w_lo[0], w_hi[0], w_lo[1], w_hi[1]}, a1[4] = {w_lo[2], w_hi[2], w_lo[3], w_hi[3]};
#pragma unroll
    for (int p = 0; p < 2; p++) {
        float t[4] = {0.f, 0.f, 0.f, 0.f};
        const uint32_t b0[2] = {xp[p][0], xp[p][1]}, b1[2] = {xp[p][2], xp[p][3]};
        gemv4_mma<__half>(t, a0, b0);
        gemv4_mma<__half>(t, a1, b1);
        acc[p][0] += d_lo * t[0];
        acc[p][1] += d_lo * t[1];
        acc[p][2] += d_hi * t[2];
        acc[p][3] += d_hi * t[3];
    }
}

// Q8_0: the lane's 8 quants at k = 32c + 8·tig … +7 (8 bytes).
struct Gemv4Q8 {
    typedef __half T;
    typedef Gemv4QRow<int8_t> Mat;
    typedef Gemv4QRow<int8_t> Row;
    typedef Gemv4QRaw Raw;
    static LLAMACU_DEVICE Row row(Mat m, int r, int K) { return {m.q + (int64_t)r * K, m.d + (int64_t)r * (K / 32)}; }
    static LLAMACU_DEVICE const void* at(Row w, int c, int tig) { return w.q + (int64_t)c * GEMV4_CHUNK + 8 * tig; }
    static LLAMACU_DEVICE Raw load(Row w, int c, int tig) { return {load8_stream(at(w, c, tig)), __half2float(__ldg(w.d + c))}; }
    static LLAMACU_DEVICE Raw zero() { return {make_uint2(0, 0), 0.f}; }
    static LLAMACU_DEVICE void x8(const float* xr, int c, int tig, float (&xf)[8]) {
        load_f32x<8>(xr + (int64_t)c * GEMV4_CHUNK + 8 * tig, xf);
    }
    static LLAMACU_DEVICE void widen(uint2 q, uint32_t (&w)[4]) {
        const uint32_t b[2] = {q.x, q.y};
#pragma unroll
        for (int i = 0; i < 4; i++)
            w[i] = pack2<__half>((float)(int8_t)(b[i / 2] >> (16 * (i % 2))), (float)(int8_t)(b[i / 2] >> (16 * (i % 2) + 8)));
    }
    static LLAMACU_DEVICE void add(float (&acc)[2][4], Raw lo, Raw hi, const uint32_t (&xp)[2][4]) {
        uint32_t wl[4], wh[4];
        widen(lo.q, wl);
        widen(hi.q, wh);
        gemv4_qadd(acc, wl, lo.d, wh, hi.d, xp);
    }
};

// Q4_0: block c's bytes 4·tig … +3 (4 bytes): the low nibbles are elements 4·tig … +3 of the
// block, the high ones 16 + 4·tig … +3 (byte j holds elements j and j + 16).
struct Gemv4Q4 {
    typedef __half T;
    typedef Gemv4QRow<uint8_t> Mat;
    typedef Gemv4QRow<uint8_t> Row;
    typedef Gemv4QRaw Raw;
    static LLAMACU_DEVICE Row row(Mat m, int r, int K) { return {m.q + (int64_t)r * (K / 2), m.d + (int64_t)r * (K / 32)}; }
    static LLAMACU_DEVICE const void* at(Row w, int c, int tig) { return w.q + (int64_t)c * 16 + 4 * tig; }
    static LLAMACU_DEVICE Raw load(Row w, int c, int tig) {
        return {make_uint2(load4_stream(at(w, c, tig)), 0), __half2float(__ldg(w.d + c))};
    }
    static LLAMACU_DEVICE Raw zero() { return {make_uint2(0, 0), 0.f}; }
    static LLAMACU_DEVICE void x8(const float* xr, int c, int tig, float (&xf)[8]) {
        load_f32x<4>(xr + (int64_t)c * GEMV4_CHUNK + 4 * tig, xf);
        load_f32x<4>(xr + (int64_t)c * GEMV4_CHUNK + 16 + 4 * tig, xf + 4);
    }
    static LLAMACU_DEVICE void widen(uint2 q, uint32_t (&w)[4]) {
        const uint32_t b = q.x;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int shift = i < 2 ? 0 : 4, j = 2 * (i % 2);  // values 2i, 2i+1: bytes j, j+1
            w[i] = pack2<__half>((float)((int)((b >> (8 * j + shift)) & 0xf) - 8),
                                 (float)((int)((b >> (8 * (j + 1) + shift)) & 0xf) - 8));
        }
    }
    static LLAMACU_DEVICE void add(float (&acc)[2][4], Raw lo, Raw hi, const uint32_t (&xp)[2][4]) {
        uint32_t wl[4], wh[4];
        widen(lo.q, wl);
        widen(hi.q, wh);
        gemv4_qadd(acc, wl, lo.d, wh, hi.d, xp);
    }
};

// gemv4_tile computes one 16-row tile of each of M matrices (M = 1, or 2 for gate and up):
// tile[m][row][b] = Σ_k x[b, k]·w[m][r0 + row, k] for row < 16, b < 8 (b ≥ n: 0). w[m] points at
// row 0 of matrix m, N its rows (rows ≥ N read row N − 1 and are not meant to be stored). Every
// thread of the block calls it; it ends with a barrier, after which every thread may read tile.
template <typename F, int KS, int M>
LLAMACU_DEVICE void gemv4_tile(float (&tile)[M][GEMV4_TILE][8], const typename F::Mat (&w)[M], int N,
                               const float* __restrict__ x, int n, int K, int r0) {
    typedef typename F::T W;
    constexpr int GPW = GEMV4_G / KS;                // K groups a warp
    constexpr int U = (M == 1 ? 4 : 2) / GPW > 0 ? (M == 1 ? 4 : 2) / GPW : 1;  // trips a loop
    __shared__ float red[M][GEMV4_G][32][4];         // (matrix, K group, lane, fragment element)
    const int lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3, warp = threadIdx.x >> 5;
    const int nch = K / GEMV4_CHUNK;
    const bool xin = gid < n;
    const float* xr = x + (int64_t)(xin ? gid : 0) * K;
    typename F::Row wr[M][2];
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int h = 0; h < 2; h++) wr[m][h] = F::row(w[m], min(r0 + gid + 8 * h, N - 1), K);
    constexpr int P = Gemv4Parts<W>::P;
    float acc[M][GPW][P][4];
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int j = 0; j < GPW; j++)
#pragma unroll
            for (int p = 0; p < P; p++)
#pragma unroll
                for (int i = 0; i < 4; i++) acc[m][j][p][i] = 0.f;
    for (int base = 0; base < nch; base += GEMV4_G * U) {
        typename F::Raw a[U][GPW][M][2];  // every load of the trip first, then the arithmetic
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int j = 0; j < GPW; j++) {
                const int c = base + u * GEMV4_G + warp + KS * j;
#pragma unroll
                for (int m = 0; m < M; m++)
#pragma unroll
                    for (int h = 0; h < 2; h++)
                        a[u][j][m][h] = c < nch ? F::load(wr[m][h], c, tig) : F::zero();
            }
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int j = 0; j < GPW; j++) {
                // No branch on c < nch (past the end, the weights are zeros and so are the
                // products): the compiler may then issue every chunk's x loads early.
                const int c = base + u * GEMV4_G + warp + KS * j;
                float xf[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
                if (xin && c < nch) F::x8(xr, c, tig, xf);
                uint32_t xp[P][4];
                gemv4_split<W>(xf, xp);
#pragma unroll
                for (int m = 0; m < M; m++) F::add(acc[m][j], a[u][j][m][0], a[u][j][m][1], xp);
            }
    }
#pragma unroll
    for (int m = 0; m < M; m++)
#pragma unroll
        for (int j = 0; j < GPW; j++) {
            const int g = warp + KS * j;
            *reinterpret_cast<float4*>(red[m][g][lane]) =
                make_float4(gemv4_join<W>(acc[m][j], 0), gemv4_join<W>(acc[m][j], 1),
                            gemv4_join<W>(acc[m][j], 2), gemv4_join<W>(acc[m][j], 3));
        }
    __syncthreads();
    // Element (m, lane, i): the groups' sums added in group order. Fragment element i of lane
    // (gid, tig) is row gid + 8·(i / 2), batch row 2·tig + i % 2 (common.cuh).
    for (int e = threadIdx.x; e < M * 128; e += blockDim.x) {
        const int m = e / 128, l = (e / 4) % 32, i = e % 4;
        float s = 0.f;
#pragma unroll
        for (int g = 0; g < GEMV4_G; g++) s += red[m][g][l][i];
        tile[m][(l >> 2) + 8 * (i >> 1)][2 * (l & 3) + (i & 1)] = s;
    }
    __syncthreads();
}

// gemv4_prefetch asks L2 for the first trip of the calling lane's weight loads in gemv4_tile, before
// pdl_begin's wait (pdl_begin_after): weights are no kernel's output.
template <typename F>
LLAMACU_DEVICE void gemv4_prefetch(typename F::Mat w, int N, int K, int r0) {
    const int lane = threadIdx.x & 31, c = threadIdx.x >> 5;  // the warp's first chunk
    if (c >= K / GEMV4_CHUNK) return;
#pragma unroll
    for (int h = 0; h < 2; h++) prefetch_l2(F::at(F::row(w, min(r0 + (lane >> 2) + 8 * h, N - 1), K), c, lane & 3));
}

// gemv4_store writes tile (16 rows × 8 batch rows) into out (n, N) at rows r0 …: thread e takes
// batch row e / 16, row e % 16 (a batch row's 16 floats are contiguous in out).
LLAMACU_DEVICE void gemv4_store(float* __restrict__ out, const float (&tile)[GEMV4_TILE][8], int n, int N, int r0) {
    for (int e = threadIdx.x; e < 128; e += blockDim.x) {
        const int b = e / 16, row = e % 16;
        if (b < n && r0 + row < N) out[(int64_t)b * N + r0 + row] = tile[row][b];
    }
}

// gemv4_pick maps the block to its matrix of q | k | v (0, 1, 2) and the tile's first row in it:
// ceil(N0/16) tiles of q, then ceil(N1/16) of k, then v's.
LLAMACU_DEVICE int gemv4_pick(int& r0, int N0, int N1) {
    const int t = blockIdx.x, t0 = (N0 + 15) / 16, t1 = (N1 + 15) / 16;
    if (t < t0) {
        r0 = 16 * t;
        return 0;
    }
    if (t < t0 + t1) {
        r0 = 16 * (t - t0);
        return 1;
    }
    r0 = 16 * (t - t0 - t1);
    return 2;
}

template <typename F, int KS>
LLAMACU_DEVICE void gemv_v4(float* out, const float* x, typename F::Mat w, int n, int N, int K) {
    __shared__ float tile[1][GEMV4_TILE][8];
    const int r0 = 16 * blockIdx.x;
    const typename F::Mat ws[1] = {w};
    gemv4_tile<F, KS, 1>(tile, ws, N, x, n, K, r0);
    gemv4_store(out, tile[0], n, N, r0);
}

template <typename F, int KS>
LLAMACU_DEVICE void gemv_v4_qkv(float* out0, float* out1, float* out2, const float* x, typename F::Mat w0,
                                typename F::Mat w1, typename F::Mat w2, int n, int N0, int N1, int N2, int K) {
    __shared__ float tile[1][GEMV4_TILE][8];
    int r0;
    const int mat = gemv4_pick(r0, N0, N1);
    const int N = mat == 0 ? N0 : mat == 1 ? N1 : N2;
    const typename F::Mat ws[1] = {mat == 0 ? w0 : mat == 1 ? w1 : w2};
    gemv4_tile<F, KS, 1>(tile, ws, N, x, n, K, r0);
    gemv4_store(mat == 0 ? out0 : mat == 1 ? out1 : out2, tile[0], n, N, r0);
}

template <typename F, int KS>
LLAMACU_DEVICE void gemv_v4_glu(float* out, const float* x, typename F::Mat w1, typename F::Mat w3, int n, int N, int K) {
    __shared__ float tile[2][GEMV4_TILE][8];
    const int r0 = 16 * blockIdx.x;
    const typename F::Mat ws[2] = {w1, w3};
    gemv4_tile<F, KS, 2>(tile, ws, N, x, n, K, r0);
    for (int e = threadIdx.x; e < 128; e += blockDim.x) {
        const int b = e / 16, row = e % 16;
        if (b < n && r0 + row < N) out[(int64_t)b * N + r0 + row] = silu_mul(tile[0][row][b], tile[1][row][b]);
    }
}

// The q/k/v tile, then RoPE on q's and k's (pairs (2j, 2j+1) of a head lie in one tile: Nq and
// head_dim even, tiles start at multiples of 16) and k, v into the cache, as gemv_v3_qkv_rope:
// the same angle and rounding (rope.cu's rope_angle, rope_pair) and cache conversion.
template <typename F, typename KV, int KS>
LLAMACU_DEVICE void gemv_v4_qkv_rope(float* q, float* k, float* v, const float* x, typename F::Mat wq,
                                     typename F::Mat wk, typename F::Mat wv, KV* kc, KV* vc, const int* pos,
                                     const int* row_tab, const int* tables, int n, int Nq, int Nkv,
                                     int K, int head_dim, float theta, int layer, int num_blocks,
                                     int block_size) {
    __shared__ float tile[1][GEMV4_TILE][8];
    int r0;
    const int mat = gemv4_pick(r0, Nq, Nkv);  // 0 q, 1 k, 2 v
    const int N = mat == 0 ? Nq : Nkv;
    const typename F::Mat ws[1] = {mat == 0 ? wq : mat == 1 ? wk : wv};
    gemv4_tile<F, KS, 1>(tile, ws, N, x, n, K, r0);
    float* out = mat == 0 ? q : mat == 1 ? k : v;
    for (int e = threadIdx.x; e < 128; e += blockDim.x) {
        const int b = e / 16, row = e % 16, el = r0 + row;
        if (b >= n || el >= N) continue;
        const int p = pos[b];
        const float mine = tile[0][row][b];
        float y = mine;
        if (mat < 2) {
            const float other = tile[0][row ^ 1][b];
            float c, s;
            rope_angle(p, (el % head_dim) >> 1, head_dim, theta, c, s);
            const bool odd = el & 1;
            y = odd ? rope_pair(other, mine, c, s, true) : rope_pair(mine, other, c, s, false);
        }
        out[(int64_t)b * N + el] = y;
        if (mat > 0) {
            const int blk = tables[row_tab[b] + p / block_size];
            KV* cache = mat == 1 ? kc : vc;
            cache[kv_offset(layer, num_blocks, block_size, Nkv, blk, p % block_size) + el] = from_f32<KV>(y);
        }
    }
}

// The plain, q/k/v and gate/up entries: fp16/bf16 (weights WT), then Q8_0/Q4_0 (format FMT,
// quants QT: each matrix comes as its quants and its scales).
#define GEMV_V4_ENTRY(DT, WT, KS)                                                                 \
    extern "C" __global__ void __launch_bounds__(32 * KS, GEMV4_MINBLOCKS_##DT(KS))               \
        gemv_##DT##_v4_k##KS(float* out, const float* x, const WT* w, int n, int N, int K) {      \
        pdl_begin_after([&] { gemv4_prefetch<Gemv4Float<WT>>(w, N, K, 16 * blockIdx.x); });      \
        gemv_v4<Gemv4Float<WT>, KS>(out, x, w, n, N, K);                                          \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * KS, GEMV4_MINBLOCKS_##DT(KS))               \
        gemv_##DT##_v4_qkv_k##KS(float* out0, float* out1, float* out2, const float* x,           \
                                 const WT* w0, const WT* w1, const WT* w2, int n, int N0, int N1, \
                                 int N2, int K) {                                                 \
        pdl_begin_after([&] {                                                                     \
            int r0;                                                                               \
            const int mat = gemv4_pick(r0, N0, N1);                                               \
            gemv4_prefetch<Gemv4Float<WT>>(mat == 0 ? w0 : mat == 1 ? w1 : w2,                    \
                                           mat == 0 ? N0 : mat == 1 ? N1 : N2, K, r0);            \
        });                                                                                       \
        gemv_v4_qkv<Gemv4Float<WT>, KS>(out0, out1, out2, x, w0, w1, w2, n, N0, N1, N2, K);       \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * KS, GEMV4_MINBLOCKS_##DT(KS))               \
        gemv_##DT##_v4_glu_k##KS(float* out, const float* x, const WT* w1, const WT* w3, int n,   \
                                 int N, int K) {                                                  \
        pdl_begin_after([&] {                                                                     \
            gemv4_prefetch<Gemv4Float<WT>>(w1, N, K, 16 * blockIdx.x);                            \
            gemv4_prefetch<Gemv4Float<WT>>(w3, N, K, 16 * blockIdx.x);                            \
        });                                                                                       \
        gemv_v4_glu<Gemv4Float<WT>, KS>(out, x, w1, w3, n, N, K);                                 \
    }

#define GEMV_V4Q_ENTRY(DT, FMT, QT, KS)                                                           \
    extern "C" __global__ void __launch_bounds__(32 * KS, GEMV4_MINBLOCKS_##DT(KS))               \
        gemv_##DT##_v4_k##KS(float* out, const float* x, const QT* q, const __half* d, int n,     \
                             int N, int K) {                                                      \
        pdl_begin_after([&] { gemv4_prefetch<FMT>({q, d}, N, K, 16 * blockIdx.x); });            \
        gemv_v4<FMT, KS>(out, x, {q, d}, n, N, K);                                                \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * KS, GEMV4_MINBLOCKS_##DT(KS))               \
        gemv_##DT##_v4_qkv_k##KS(float* out0, float* out1, float* out2, const float* x,           \
                                 const QT* q0, const __half* d0, const QT* q1, const __half* d1,  \
                                 const QT* q2, const __half* d2, int n, int N0, int N1, int N2,   \
                                 int K) {                                                         \
        pdl_begin_after([&] {                                                                     \
            int r0;                                                                               \
            const int mat = gemv4_pick(r0, N0, N1);                                               \
            gemv4_prefetch<FMT>(mat == 0 ? FMT::Mat{q0, d0} : mat == 1 ? FMT::Mat{q1, d1} : FMT::Mat{q2, d2}, \
                                mat == 0 ? N0 : mat == 1 ? N1 : N2, K, r0);                       \
        });                                                                                       \
        gemv_v4_qkv<FMT, KS>(out0, out1, out2, x, {q0, d0}, {q1, d1}, {q2, d2}, n, N0, N1, N2, K); \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * KS, GEMV4_MINBLOCKS_##DT(KS))               \
        gemv_##DT##_v4_glu_k##KS(float* out, const float* x, const QT* q1, const __half* d1,      \
                                 const QT* q3, const __half* d3, int n, int N, int K) {           \
        pdl_begin_after([&] {                                                                     \
            gemv4_prefetch<FMT>({q1, d1}, N, K, 16 * blockIdx.x);                                 \
            gemv4_prefetch<FMT>({q3, d3}, N, K, 16 * blockIdx.x);                                 \
        });                                                                                       \
        gemv_v4_glu<FMT, KS>(out, x, {q1, d1}, {q3, d3}, n, N, K);                                \
    }

#define GEMV_V4_ROPE_ENTRY(DT, WT, KVNAME, KVT, KS)                                               \
    extern "C" __global__ void __launch_bounds__(32 * KS, GEMV4_MINBLOCKS_##DT(KS))                                \
        gemv_##DT##_v4_qkv_rope_##KVNAME##_k##KS(                                                 \
            float* q, float* k, float* v, const float* x, const WT* wq, const WT* wk,             \
            const WT* wv, KVT* kc, KVT* vc, const int* pos, const int* row_tab,                   \
            const int* tables, int n, int Nq, int Nkv, int K, int head_dim, float theta,          \
            int layer, int num_blocks, int block_size) {                                          \
        pdl_begin_after([&] {                                                                     \
            int r0;                                                                               \
            const int mat = gemv4_pick(r0, Nq, Nkv);                                              \
            gemv4_prefetch<Gemv4Float<WT>>(mat == 0 ? wq : mat == 1 ? wk : wv, mat == 0 ? Nq : Nkv, K, r0); \
        });                                                                                       \
        gemv_v4_qkv_rope<Gemv4Float<WT>, KVT, KS>(q, k, v, x, wq, wk, wv, kc, vc, pos, row_tab,   \
                                                  tables, n,                                      \
                                      Nq, Nkv, K, head_dim, theta, layer, num_blocks,             \
                                      block_size);                                                \
    }

#define GEMV_V4Q_ROPE_ENTRY(DT, FMT, QT, KVNAME, KVT, KS)                                        \
    extern "C" __global__ void __launch_bounds__(32 * KS, GEMV4_MINBLOCKS_##DT(KS))               \
        gemv_##DT##_v4_qkv_rope_##KVNAME##_k##KS(                                                 \
            float* q, float* k, float* v, const float* x, const QT* q0, const __half* d0,         \
            const QT* q1, const __half* d1, const QT* q2, const __half* d2, KVT* kc, KVT* vc,     \
            const int* pos, const int* row_tab, const int* tables, int n, int Nq, int Nkv, int K, \
            int head_dim, float theta, int layer, int num_blocks, int block_size) {               \
        pdl_begin_after([&] {                                                                     \
            int r0;                                                                               \
            const int mat = gemv4_pick(r0, Nq, Nkv);                                              \
            gemv4_prefetch<FMT>(mat == 0 ? FMT::Mat{q0, d0} : mat == 1 ? FMT::Mat{q1, d1} : FMT::Mat{q2, d2}, \
                                mat == 0 ? Nq : Nkv, K, r0);                                      \
        });                                                                                       \
        gemv_v4_qkv_rope<FMT, KVT, KS>(q, k, v, x, {q0, d0}, {q1, d1}, {q2, d2}, kc, vc, pos,     \
                                       row_tab, tables, n, Nq, Nkv, K, head_dim, theta, layer,    \
                                       num_blocks, block_size);                                   \
    }

// block (32·KS); K % 32 == 0, n ≤ 8. Quantised: q then d for each matrix (gpu/upload.go's arrays).
GEMV_V4_ENTRY(f16, __half, 4)
GEMV_V4_ENTRY(f16, __half, 8)
GEMV_V4_ENTRY(bf16, __nv_bfloat16, 4)
GEMV_V4_ENTRY(bf16, __nv_bfloat16, 8)
GEMV_V4Q_ENTRY(q8_0, Gemv4Q8, int8_t, 4)
GEMV_V4Q_ENTRY(q8_0, Gemv4Q8, int8_t, 8)
GEMV_V4Q_ENTRY(q4_0, Gemv4Q4, uint8_t, 4)
GEMV_V4Q_ENTRY(q4_0, Gemv4Q4, uint8_t, 8)
GEMV_V4_ROPE_ENTRY(f16, __half, f32, float, 4)
GEMV_V4_ROPE_ENTRY(f16, __half, f32, float, 8)
GEMV_V4_ROPE_ENTRY(f16, __half, f16, __half, 4)
GEMV_V4_ROPE_ENTRY(f16, __half, f16, __half, 8)
GEMV_V4_ROPE_ENTRY(bf16, __nv_bfloat16, f32, float, 4)
GEMV_V4_ROPE_ENTRY(bf16, __nv_bfloat16, f32, float, 8)
GEMV_V4_ROPE_ENTRY(bf16, __nv_bfloat16, f16, __half, 4)
GEMV_V4_ROPE_ENTRY(bf16, __nv_bfloat16, f16, __half, 8)
GEMV_V4Q_ROPE_ENTRY(q8_0, Gemv4Q8, int8_t, f32, float, 4)
GEMV_V4Q_ROPE_ENTRY(q8_0, Gemv4Q8, int8_t, f32, float, 8)
GEMV_V4Q_ROPE_ENTRY(q8_0, Gemv4Q8, int8_t, f16, __half, 4)
GEMV_V4Q_ROPE_ENTRY(q8_0, Gemv4Q8, int8_t, f16, __half, 8)
GEMV_V4Q_ROPE_ENTRY(q4_0, Gemv4Q4, uint8_t, f32, float, 4)
GEMV_V4Q_ROPE_ENTRY(q4_0, Gemv4Q4, uint8_t, f32, float, 8)
GEMV_V4Q_ROPE_ENTRY(q4_0, Gemv4Q4, uint8_t, f16, __half, 4)
GEMV_V4Q_ROPE_ENTRY(q4_0, Gemv4Q4, uint8_t, f16, __half, 8)
