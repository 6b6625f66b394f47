// kquant.cu — ggml's k-quant matrices kept quantised on the device: Q4_K (most matrices of a
// Q4_K_M file, the commonest LLaMA 2 GGUF), Q5_K (the same of a Q5_K_M file) and Q6_K (their LM
// head and some V / FFN-down matrices).
//
//   out[b, r] = Σ_k x[b, k] · w[r, k]      out (n, N) fp32; x (n, K) fp32; K a multiple of 256
//   w[r, k] decoded as ggml's dequantize_row_<type> (tensor.Decode)
//
// Device layouts (gpu/upload.go):
//   Q4_K: the file's blocks unchanged — 144 bytes per 256 weights: fp16 d, fp16 dmin, 12 bytes of
//         6-bit scales and mins, 128 bytes of nibbles (bytes l of the 32-byte chunk j hold element
//         64j + l in the low nibble and 64j + 32 + l in the high one). 144 = 9·16, so every block
//         and every 16-byte piece of nibbles is aligned. 0.5625 bytes per weight.
//   Q5_K: the file's blocks unchanged — 176 bytes (11·16): Q4_K's 16-byte header, then qh (32
//         bytes: bit 2j of qh[l] is bit 4 of the low-nibble element l of chunk j, bit 2j+1 of
//         the high one), then Q4_K's 128 bytes of nibbles. 0.6875 bytes per weight.
//   Q6_K: repacked, because the file's 210-byte blocks would misalign 16-byte loads: each block's
//         ql (128), qh (64) and int8 scales (16) as 208 bytes, all blocks first, then every
//         block's fp16 d (rows, K/256). 0.8203 bytes per weight.
//
// Versions
//   gemv_<q>_v1      : one warp per (row, batch row), lanes stride over K element by element
//                      through <q>_at, the dequantiser. The reference.
//   gemv_<q>_v2_n<B> : gemv_v2's geometry (4 rows per warp, 4 warps per block, B = 1, 2, 4, 8).
//                      Q4_K: a lane step takes one 16-byte piece of a block's nibbles (32 weights:
//                      16 of each of two sub-blocks) and the block's 16-byte header (one __ldg
//                      shared by the block's 8 lanes); per 16-weight run,
//                      Σ w·x = (d·sc)·Σ q·x − (dmin·m)·Σ x.
//                      Q5_K: as Q4_K, plus the 16 bytes of qh at l0 (shared by 4 lanes).
//                      Q6_K: a lane step takes 16 bytes of ql at l0 and at l0 + 32 and 16 of qh:
//                      64 weights, a run of 16 from each of 4 sub-blocks, each scaled by d·sc.
//   gemv_<q>_v2_glu_n<B> (Q4_K, Q5_K): the FFN's gate and up with SwiGLU in one launch, as
//                      gemv.cu's fused kernels, equal to the unfused sequence bit for bit.
//   dequant_<q>_f16  : the matrix as fp16 for prefill's cuBLAS path (as gemv.cu's Q8_0/Q4_0).
//   embed_<q>        : rows of a token table.
// <q>_at equals tensor.Decode (so ggml) bit for bit: its products are __fmul_rn, which nvcc
// never contracts into an FMA. The v2 sums differ from it by the order of additions only.
// Checked by gpu/quant_test.go (TestKQuantMatMul, TestLlamaCppQuantisedFiles) against the CPU.
// Included by all.cu after gemv.cu, whose geometry (GEMV_ROWS, GEMV_THREADS) and helpers
// (gemv_store, load_x16, dot16) it uses.
#include "common.cuh"

#define QKK 256
#define Q4K_BLOCK 144  // bytes per 256 weights
#define Q5K_BLOCK 176  // bytes per 256 weights
#define Q6K_BLOCK 208  // bytes per 256 weights, without d

// byte16 is byte i (0…15) of a 16-byte vector.
LLAMACU_DEVICE int byte16(uint4 u, int i) {
    const uint32_t w = i < 8 ? (i < 4 ? u.x : u.y) : (i < 12 ? u.z : u.w);
    return (w >> (8 * (i & 3))) & 0xff;
}

// q4k_scale_min unpacks the 6-bit scale and min of sub-block j (0…7) from the 16-byte header h
// of a Q4_K block (scales at bytes 4…15): j < 4 in the low 6 bits of scales[j] and scales[j+4];
// j ≥ 4 from a nibble of scales[j+4] and the top 2 bits of scales[j−4] (scale), scales[j] (min).
LLAMACU_DEVICE void q4k_scale_min(uint4 h, int j, int& sc, int& m) {
    if (j < 4) {
        sc = byte16(h, 4 + j) & 63;
        m = byte16(h, 8 + j) & 63;
    } else {
        sc = (byte16(h, 8 + j) & 0xf) | ((byte16(h, j) >> 6) << 4);
        m = (byte16(h, 8 + j) >> 4) | ((byte16(h, 4 + j) >> 6) << 4);
    }
}

LLAMACU_DEVICE float half_lo(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w & 0xffff))); }
LLAMACU_DEVICE float half_hi(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w >> 16))); }

// q4_K_at is element k of Q4_K blocks starting at q (a row, or a whole matrix: rows are whole
// blocks).
LLAMACU_DEVICE float q4_K_at(const uint8_t* q, int64_t k) {
    const uint8_t* blk = q + (k / QKK) * Q4K_BLOCK;
    const int i = (int)(k % QKK), j = i / 64, hi = (i / 32) & 1, l = i % 32;
    const uint4 h = load16(blk);
    int sc, m;
    q4k_scale_min(h, 2 * j + hi, sc, m);
    const int b = blk[16 + 32 * j + l];
    const int qv = hi ? b >> 4 : b & 0xf;
    const float d1 = __fmul_rn(half_lo(h.x), (float)sc), m1 = __fmul_rn(half_hi(h.x), (float)m);
    return __fsub_rn(__fmul_rn(d1, (float)qv), m1);
}

// q5_K_at is q4_K_at for Q5_K blocks: the nibble plus 16 × its bit of qh.
LLAMACU_DEVICE float q5_K_at(const uint8_t* q, int64_t k) {
    const uint8_t* blk = q + (k / QKK) * Q5K_BLOCK;
    const int i = (int)(k % QKK), j = i / 64, hi = (i / 32) & 1, l = i % 32;
    const uint4 h = load16(blk);
    int sc, m;
    q4k_scale_min(h, 2 * j + hi, sc, m);
    const int b = blk[48 + 32 * j + l];
    const int qv = (hi ? b >> 4 : b & 0xf) + 16 * ((blk[16 + l] >> (2 * j + hi)) & 1);
    const float d1 = __fmul_rn(half_lo(h.x), (float)sc), m1 = __fmul_rn(half_hi(h.x), (float)m);
    return __fsub_rn(__fmul_rn(d1, (float)qv), m1);
}

// q6_K_at is element k of repacked Q6_K blocks q with scales d: in half n = i/128 of a block,
// element 32g + l (g = 0…3) takes a nibble of ql[l + 32(g&1)] (low for g < 2), bits 2g, 2g+1 of
// qh[l], and scale 2g + l/16.
LLAMACU_DEVICE float q6_K_at(const uint8_t* q, const __half* d, int64_t k) {
    const int64_t sb = k / QKK;
    const uint8_t* blk = q + sb * Q6K_BLOCK;
    const int i = (int)(k % QKK), n = i / 128, g = (i % 128) / 32, l = i % 32;
    const int lb = blk[64 * n + 32 * (g & 1) + l];
    const int nib = g < 2 ? lb & 0xf : lb >> 4;
    const int h = (blk[128 + 32 * n + l] >> (2 * g)) & 3;
    const int sc = (int8_t)blk[192 + 8 * n + 2 * g + l / 16];
    return __fmul_rn(__fmul_rn(__half2float(d[sb]), (float)sc), (float)((nib | (h << 4)) - 32));
}

// ---------------------------------------------------------------- v1

// The three types behind one element accessor: T::at(q, d, k) is element k of blocks q (a row or
// a whole matrix) with, for Q6_K, their scales d (Q4_K and Q5_K keep theirs inside the blocks
// and ignore d); T::BLOCK is the bytes per 256 weights in q.
struct Q4KAt {
    static constexpr int BLOCK = Q4K_BLOCK;
    static LLAMACU_DEVICE float at(const uint8_t* q, const __half*, int64_t k) { return q4_K_at(q, k); }
};
struct Q5KAt {
    static constexpr int BLOCK = Q5K_BLOCK;
    static LLAMACU_DEVICE float at(const uint8_t* q, const __half*, int64_t k) { return q5_K_at(q, k); }
};
struct Q6KAt {
    static constexpr int BLOCK = Q6K_BLOCK;
    static LLAMACU_DEVICE float at(const uint8_t* q, const __half* d, int64_t k) { return q6_K_at(q, d, k); }
};

// grid (ceil(N/8), n), block (256).
template <typename T>
__device__ void gemv_kq_v1(float* out, const float* x, const uint8_t* q, const __half* d, int N, int K) {
    const int warps = blockDim.x >> 5;
    const int r = blockIdx.x * warps + (threadIdx.x >> 5), b = blockIdx.y, lane = threadIdx.x & 31;
    if (r >= N) return;  // whole warp
    const uint8_t* qr = q + (int64_t)r * (K / QKK) * T::BLOCK;
    const __half* dr = d + (int64_t)r * (K / QKK);  // Q6_K's scales; not read for Q4_K, Q5_K
    const float* xr = x + (int64_t)b * K;
    float acc = 0.f;
    for (int k = lane; k < K; k += 32) acc += T::at(qr, dr, k) * xr[k];
    acc = warp_sum(acc);
    if (lane == 0) out[(int64_t)b * N + r] = acc;
}

// ---------------------------------------------------------------- v2

// unpack_nib16 widens the 16 low (half 0) or high (half 1) nibbles of a 16-byte vector.
LLAMACU_DEVICE void unpack_nib16(uint4 u, int half, float* w) {
    const uint32_t words[4] = {u.x, u.y, u.z, u.w};
    const int shift = 4 * half;
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) w[4 * i + j] = (float)((words[i] >> (8 * j + shift)) & 0xf);
}

LLAMACU_DEVICE float sum16(const float* xf) {
    float s = 0.f;
#pragma unroll
    for (int e = 0; e < 16; e++) s += xf[e];
    return s;
}

// add_q5_high16 adds to unpack_nib16's 16 values 16 × bit `bit` of the 16 bytes of qh.
LLAMACU_DEVICE void add_q5_high16(uint4 qh, int bit, float* w) {
    const uint32_t words[4] = {qh.x, qh.y, qh.z, qh.w};
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) w[4 * i + j] += (float)(16 * ((words[i] >> (8 * j + bit)) & 1));
}

// gemv_q45_K_acc serves Q4_K (Q5 false) and Q5_K (Q5 true): the blocks differ by Q5_K's qh.
// R rows: 4 (gemv_<q>_v2) or 8 (the gate's and the up's 4 rows of gemv_<q>_v2_glu). HOIST widens
// each row's 16 nibbles once per half, before the loop over batch rows; without it they are
// widened for each batch row, so that 8 rows fit in registers. The additions into one acc[r][b]
// are the same either way, so the fused kernel equals the unfused ones bit for bit.
template <int NB, bool Q5, int R, bool HOIST>
__device__ __forceinline__ void gemv_q45_K_acc(float (&acc)[R][NB], const uint8_t* const (&qr)[R],
                                               const float* __restrict__ x, int n, int K) {
    constexpr int BLOCK = Q5 ? Q5K_BLOCK : Q4K_BLOCK, QS = Q5 ? 48 : 16;  // block bytes, nibbles' offset
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int b = 0; b < NB; b++) acc[r][b] = 0.f;
    const int nstep = K / QKK * 8;  // 16-byte pieces of nibbles per row
#pragma unroll 2
    for (int v = lane; v < nstep; v += 32) {
        const int64_t sb = v >> 3;
        const int j = (v & 7) >> 1, l0 = (v & 1) * 16;  // chunk j, bytes l0 … l0+15
        uint4 raw[R], qh[R];
        float ds[R][2], ms[R][2];
#pragma unroll
        for (int r = 0; r < R; r++) {
            const uint8_t* blk = qr[r] + sb * BLOCK;
            const uint4 h = load16(blk);
            raw[r] = load16_stream(blk + QS + 32 * j + l0);
            if constexpr (Q5) qh[r] = load16(blk + 16 + l0);  // shared by the block's 4 lanes at l0
            const float d = half_lo(h.x), dmin = half_hi(h.x);
#pragma unroll
            for (int hi = 0; hi < 2; hi++) {
                int sc, m;
                q4k_scale_min(h, 2 * j + hi, sc, m);
                ds[r][hi] = d * (float)sc;
                ms[r][hi] = dmin * (float)m;
            }
        }
        const int64_t k0 = sb * QKK + 64 * j + l0;
#pragma unroll
        for (int hi = 0; hi < 2; hi++) {
            if constexpr (HOIST) {
                float wq[R][16];
#pragma unroll
                for (int r = 0; r < R; r++) {
                    unpack_nib16(raw[r], hi, wq[r]);
                    if constexpr (Q5) add_q5_high16(qh[r], 2 * j + hi, wq[r]);
                }
#pragma unroll
                for (int b = 0; b < NB; b++) {
                    if (b < n) {
                        float xf[16];
                        load_x16(x + (int64_t)b * K + k0 + 32 * hi, xf);
                        const float xs = sum16(xf);
#pragma unroll
                        for (int r = 0; r < R; r++) acc[r][b] += ds[r][hi] * dot16(wq[r], xf) - ms[r][hi] * xs;
                    }
                }
            } else {
#pragma unroll
                for (int b = 0; b < NB; b++) {
                    if (b < n) {
                        float xf[16];
                        load_x16(x + (int64_t)b * K + k0 + 32 * hi, xf);
                        const float xs = sum16(xf);
#pragma unroll
                        for (int r = 0; r < R; r++) {
                            float wf[16];
                            unpack_nib16(raw[r], hi, wf);
                            if constexpr (Q5) add_q5_high16(qh[r], 2 * j + hi, wf);
                            acc[r][b] += ds[r][hi] * dot16(wf, xf) - ms[r][hi] * xs;
                        }
                    }
                }
            }
        }
    }
}

// unpack_q6x16 widens run g (0…3) of a Q6_K lane step: 16 nibbles of lo (low for g < 2, high
// for g ≥ 2) with bits 2g, 2g+1 of qh above them, minus 32.
LLAMACU_DEVICE void unpack_q6x16(uint4 lo, uint4 qh, int g, float* w) {
    const uint32_t lw[4] = {lo.x, lo.y, lo.z, lo.w}, hw[4] = {qh.x, qh.y, qh.z, qh.w};
    const int ns = g < 2 ? 0 : 4;
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int nib = (lw[i] >> (8 * j + ns)) & 0xf;
            const int h = (hw[i] >> (8 * j + 2 * g)) & 3;
            w[4 * i + j] = (float)((nib | (h << 4)) - 32);
        }
}

template <int NB>
__device__ __forceinline__ void gemv_q6_K_acc(float (&acc)[GEMV_ROWS][NB], const uint8_t* const (&qr)[GEMV_ROWS],
                                              const __half* const (&dr)[GEMV_ROWS], const float* __restrict__ x,
                                              int n, int K) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
        for (int b = 0; b < NB; b++) acc[r][b] = 0.f;
    const int nstep = K / QKK * 4;  // (half, l0) steps per row
#pragma unroll 2
    for (int v = lane; v < nstep; v += 32) {
        const int64_t sb = v >> 2;
        const int hn = (v & 3) >> 1, l0 = (v & 1) * 16;  // half of the block, bytes l0 … l0+15
        uint4 lo0[GEMV_ROWS], lo1[GEMV_ROWS], qh[GEMV_ROWS];
        float s[GEMV_ROWS][4];
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++) {
            const uint8_t* blk = qr[r] + sb * Q6K_BLOCK;
            lo0[r] = load16_stream(blk + 64 * hn + l0);
            lo1[r] = load16_stream(blk + 64 * hn + 32 + l0);
            qh[r] = load16_stream(blk + 128 + 32 * hn + l0);
            const uint4 scv = load16(blk + 192);  // shared by the block's 4 lanes
            const float d = __half2float(__ldg(dr[r] + sb));
#pragma unroll
            for (int g = 0; g < 4; g++) s[r][g] = d * (float)(int8_t)byte16(scv, 8 * hn + 2 * g + l0 / 16);
        }
        const int64_t k0 = sb * QKK + 128 * hn + l0;
#pragma unroll
        for (int g = 0; g < 4; g++) {
            float w[GEMV_ROWS][16];
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++) unpack_q6x16((g & 1) ? lo1[r] : lo0[r], qh[r], g, w[r]);
#pragma unroll
            for (int b = 0; b < NB; b++) {
                if (b < n) {
                    float xf[16];
                    load_x16(x + (int64_t)b * K + k0 + 32 * g, xf);
#pragma unroll
                    for (int r = 0; r < GEMV_ROWS; r++) acc[r][b] += s[r][g] * dot16(w[r], xf);
                }
            }
        }
    }
}

// grid (ceil(N / GEMV_ROWS_PER_BLOCK)), block (GEMV_THREADS); K % 256 == 0, n ≤ B.
template <int NB, bool Q5>
__device__ void gemv_q45_K_v2(float* __restrict__ out, const float* __restrict__ x, const uint8_t* __restrict__ q,
                              int n, int N, int K) {
    const int r0 = (blockIdx.x * (GEMV_THREADS / 32) + (threadIdx.x >> 5)) * GEMV_ROWS;
    if (r0 >= N) return;  // whole warp; no barrier below
    const uint8_t* qr[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++)
        qr[r] = q + (int64_t)min(r0 + r, N - 1) * (K / QKK) * (Q5 ? Q5K_BLOCK : Q4K_BLOCK);  // tail: reread
    float acc[GEMV_ROWS][NB];
    gemv_q45_K_acc<NB, Q5, GEMV_ROWS, true>(acc, qr, x, n, K);
    gemv_store<NB>(out, acc, n, N, r0);
}

// gemv_q45_K_glu: out = silu(x·W1ᵀ)·(x·W3ᵀ), gemv_<dt>_v2_glu for Q4_K/Q5_K gate and up (one
// dtype): 4 rows of each per warp, SwiGLU in the epilogue (gemv_store_glu).
template <int NB, bool Q5>
__device__ void gemv_q45_K_glu(float* __restrict__ out, const float* __restrict__ x, const uint8_t* __restrict__ q1,
                               const uint8_t* __restrict__ q3, int n, int N, int K) {
    const int r0 = (blockIdx.x * (GEMV_THREADS / 32) + (threadIdx.x >> 5)) * GEMV_ROWS;
    if (r0 >= N) return;  // whole warp; no barrier below
    const uint8_t* qr[2 * GEMV_ROWS];
    const int64_t rowBytes = (int64_t)(K / QKK) * (Q5 ? Q5K_BLOCK : Q4K_BLOCK);
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        const int64_t row = min(r0 + r, N - 1);  // tail: reread
        qr[r] = q1 + row * rowBytes;
        qr[GEMV_ROWS + r] = q3 + row * rowBytes;
    }
    float acc[2 * GEMV_ROWS][NB];
    gemv_q45_K_acc<NB, Q5, 2 * GEMV_ROWS, false>(acc, qr, x, n, K);
    gemv_store_glu<NB>(out, acc, n, N, r0);
}

template <int NB>
__device__ void gemv_q6_K_v2(float* __restrict__ out, const float* __restrict__ x, const uint8_t* __restrict__ q,
                             const __half* __restrict__ d, int n, int N, int K) {
    const int r0 = (blockIdx.x * (GEMV_THREADS / 32) + (threadIdx.x >> 5)) * GEMV_ROWS;
    if (r0 >= N) return;  // whole warp; no barrier below
    const uint8_t* qr[GEMV_ROWS];
    const __half* dr[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        const int64_t row = min(r0 + r, N - 1);  // tail: reread
        qr[r] = q + row * (K / QKK) * Q6K_BLOCK;
        dr[r] = d + row * (K / QKK);
    }
    float acc[GEMV_ROWS][NB];
    gemv_q6_K_acc<NB>(acc, qr, dr, x, n, K);
    gemv_store<NB>(out, acc, n, N, r0);
}

#define GEMV_KQ_ENTRY(NB)                                                                              \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_q4_K_v2_n##NB(                      \
        float* out, const float* x, const uint8_t* q, const __half* d, int n, int N, int K) {           \
        pdl_begin();                                                                                  \
        gemv_q45_K_v2<NB, false>(out, x, q, n, N, K);                                                 \
    }                                                                                                  \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_q5_K_v2_n##NB(                      \
        float* out, const float* x, const uint8_t* q, const __half* d, int n, int N, int K) {           \
        pdl_begin();                                                                                  \
        gemv_q45_K_v2<NB, true>(out, x, q, n, N, K);                                                  \
    }                                                                                                  \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_q6_K_v2_n##NB(                      \
        float* out, const float* x, const uint8_t* q, const __half* d, int n, int N, int K) {           \
        pdl_begin();                                                                                  \
        gemv_q6_K_v2<NB>(out, x, q, d, n, N, K);                                                      \
    }

GEMV_KQ_ENTRY(1)
GEMV_KQ_ENTRY(2)
GEMV_KQ_ENTRY(4)
GEMV_KQ_ENTRY(8)

// gemv_<q>_v2_glu_n<B> for Q4_K and Q5_K, with the Q8_0/Q4_0 kernels' signature (d1, d3 unused).
// grid (ceil(N / GEMV_ROWS_PER_BLOCK)), block (GEMV_THREADS).
#define GEMV_KQ_GLU_ENTRY(NB)                                                                          \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_q4_K_v2_glu_n##NB(                  \
        float* out, const float* x, const uint8_t* q1, const __half* d1, const uint8_t* q3,            \
        const __half* d3, int n, int N, int K) {                                                       \
        pdl_begin();                                                                                   \
        gemv_q45_K_glu<NB, false>(out, x, q1, q3, n, N, K);                                            \
    }                                                                                                  \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_q5_K_v2_glu_n##NB(                  \
        float* out, const float* x, const uint8_t* q1, const __half* d1, const uint8_t* q3,            \
        const __half* d3, int n, int N, int K) {                                                       \
        pdl_begin();                                                                                   \
        gemv_q45_K_glu<NB, true>(out, x, q1, q3, n, N, K);                                             \
    }

GEMV_KQ_GLU_ENTRY(1)
GEMV_KQ_GLU_ENTRY(2)
GEMV_KQ_GLU_ENTRY(4)
GEMV_KQ_GLU_ENTRY(8)

// ---------------------------------------------------------------- dequant, embed, entries

// total = N·K < 2^31 (the host checks). grid-stride, block (256).
template <typename T> __device__ void dequant_kq_f16(__half* out, const uint8_t* q, const __half* d, int total) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x)
        out[i] = __float2half_rn(T::at(q, d, i));
}

// out[i, :] = table[tokens[i], :], the table resident as above. grid (n), block (256).
template <typename T>
__device__ void embed_kq(float* out, const uint8_t* q, const __half* d, const int* tokens, int dim) {
    const int64_t t = tokens[blockIdx.x];
    const uint8_t* src = q + t * (dim / QKK) * T::BLOCK;
    const __half* ds = d + t * (dim / QKK);
    float* dst = out + (int64_t)blockIdx.x * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) dst[j] = T::at(src, ds, j);
}

// gemv_<q>_v1, dequant_<q>_f16 and embed_<q> of each type.
#define KQ_ENTRIES(NAME, T)                                                                            \
    extern "C" __global__ void gemv_##NAME##_v1(float* out, const float* x, const uint8_t* q,           \
                                                const __half* d, int n, int N, int K) {                 \
        pdl_begin();                                                                                   \
        gemv_kq_v1<T>(out, x, q, d, N, K);                                                             \
    }                                                                                                  \
    extern "C" __global__ void dequant_##NAME##_f16(__half* out, const uint8_t* q, const __half* d,     \
                                                    int total) {                                       \
        pdl_begin();                                                                                   \
        dequant_kq_f16<T>(out, q, d, total);                                                           \
    }                                                                                                  \
    extern "C" __global__ void embed_##NAME(float* out, const uint8_t* q, const __half* d,              \
                                            const int* tokens, int dim) {                              \
        pdl_begin();                                                                                   \
        embed_kq<T>(out, q, d, tokens, dim);                                                           \
    }

KQ_ENTRIES(q4_K, Q4KAt)
KQ_ENTRIES(q5_K, Q5KAt)
KQ_ENTRIES(q6_K, Q6KAt)
