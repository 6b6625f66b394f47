// gemv.cu — the decode matmul: a few activation rows times a weight matrix.
//
//   out[b, r] = Σ_k x[b, k] · w[r, k]      out (n, N) fp32; x (n, K) fp32; w (N, K) f32|f16|bf16|q8_0|q4_0
//
// fp32 accumulation; weights widened in registers (f16: __half22float2; bf16: a shift).
//
// Versions
//   gemv_<dt>_v1      : one warp per (row r, batch row b), lanes stride over K with scalar loads,
//                       warp-shuffle sum. Any n, N, K. The reference.
//   gemv_<dt>_v2_n<B> : B = 1, 2, 4, 8 (compiled batch width; n ≤ B rows used). One warp per 4
//                       weight rows, 4 warps (16 rows) per block. Each lane streams 16-byte
//                       vectors (8 halves / 4 floats) of the 4 rows with ld.global.nc.L1::no_allocate
//                       (weights are read once: keep L1 for x), the loop unrolled twice, so a warp
//                       has 4·2·512 = 4 KB of weights in flight; the matching x vector of each
//                       batch row is read once per 4 rows through L1 (__ldg) and reused for all 4.
//                       Needs K a multiple of the vector (8 for f16/bf16, 4 for f32); else v1.
//   gemv_<dt>_v2_qkv_n<B>, gemv_<dt>_v2_glu_n<B>: v2 fused — q/k/v in one grid, and the FFN's
//                       gate/up with SwiGLU in the epilogue (section "v2, fused").
//   gemv_<dt>_v3[_qkv|_glu]_n<B>_k<ks>: v2 with K split over ks = 1, 2 or 4 warps per 4-row group, so
//                       that matrices of few rows (N = 4096) still fill the GPU; the bits do not
//                       depend on ks (section "v3: split K"). The default for f32/f16/bf16:
//                       on an H100 (n = 1, ks = 4) 79–100% of the copy bandwidth on 7B's shapes
//                       where v2 reached 61–96% (bench/results/gpu-h100-2026-11-28-run2).
//   gemv_<dt>_v3_qkv_rope_<kv>_n<B>: the q/k/v kernel (ks = 4) with RoPE and the paged KV store
//                       in its epilogue: one launch for a decode layer's attention prologue
//                       (section "v3, q/k/v with RoPE and the KV store").
//   gemv_<dt>_v3n_qkv_rope_<kv>_n1, gemv_<dt>_v3n_glu_n1: those two kernels at one row with the
//                       residual add and RMSNorm in front folded in (section "v3n").
//   gemv_<dt>_v4*     : f16/bf16 on the tensor cores for steps of 2–8 rows: kernels/gemv_mma.cu.
//   gemv_q8_0_*, gemv_q4_0_*: the same versions for weights kept quantised (sections "Q8_0",
//                       "Q4_0" and the shared quantised loop at the end), and dequant_<q>_f16
//                       for the cuBLAS path of prefill. The k-quants' are in kquant.cu.
//
// Speed: decode is bandwidth-bound: N·K·sizeof(dt) bytes per call must stream at HBM speed.
// With all N/4 warps resident (N = 4096 → 1024 warps ≈ 8 per SM on an H100) there are ≈ 4 MB of
// loads in flight, above the ≈ 2.5 MB that Little's law asks of 3.35 TB/s at ~700 ns. The x
// traffic through L1 is 2·B/4 bytes per weight byte (x fp32 vs w fp16, shared by 4 rows): at
// B = 8 that is 4× the weight bytes, near the L1 rate — why B stops at 8 and the host moves to
// cuBLAS (gemm.cu) above it. Small N (< ~1000 rows) cannot fill the GPU (no split-K yet): at
// 70B TP 8 the fused q/k/v grid has 1280 rows, 80 blocks for 132 SMs (BenchmarkGEMV and the
// device check's one-rank run will say what that costs).
// Target: ≥ 90% of the device-to-device copy bandwidth on 7B shapes (bench: llamacu bench
// kernels); checked by model/modeltest (MatMul): go test -tags cuda ./gpu -run Conformance/MatMul
#include "common.cuh"

// ---------------------------------------------------------------- v1

template <typename W>
__device__ void gemv_v1(float* out, const float* x, const W* w, int n, int N, int K) {
    const int warps = blockDim.x >> 5;
    const int r = blockIdx.x * warps + (threadIdx.x >> 5), b = blockIdx.y, lane = threadIdx.x & 31;
    if (r >= N) return;  // whole warp
    const W* wr = w + (int64_t)r * K;
    const float* xr = x + (int64_t)b * K;
    float acc = 0.f;
    for (int k = lane; k < K; k += 32) acc += to_f32(wr[k]) * xr[k];
    acc = warp_sum(acc);
    if (lane == 0) out[(int64_t)b * N + r] = acc;
}

// grid (ceil(N/8), n), block (256).
extern "C" __global__ void gemv_f32_v1(float* out, const float* x, const float* w, int n, int N,
                                       int K) {
    pdl_begin();
    gemv_v1(out, x, w, n, N, K);
}
extern "C" __global__ void gemv_f16_v1(float* out, const float* x, const __half* w, int n, int N,
                                       int K) {
    pdl_begin();
    gemv_v1(out, x, w, n, N, K);
}
extern "C" __global__ void gemv_bf16_v1(float* out, const float* x, const __nv_bfloat16* w, int n,
                                        int N, int K) {
    pdl_begin();
    gemv_v1(out, x, w, n, N, K);
}

// ---------------------------------------------------------------- v2

#define GEMV_THREADS 128
#define GEMV_ROWS 4  // weight rows per warp
#define GEMV_ROWS_PER_BLOCK (GEMV_ROWS * GEMV_THREADS / 32)

// gemv_fma_vec adds, for the R weight vectors raw[r] (vector v of each row, 16 bytes as loaded)
// and vector v of x's first n ≤ NB rows, every product to acc[r][b], element by element in order.
template <typename W, int NB, int R>
__device__ __forceinline__ void gemv_fma_vec(float (&acc)[R][NB], const uint4 (&raw)[R],
                                             const float* __restrict__ x, int n, int K, int v) {
    constexpr int VEC = Vec16<W>::N;
    float wf[R][VEC];
#pragma unroll
    for (int r = 0; r < R; r++) unpack16<W>(raw[r], wf[r]);
#pragma unroll
    for (int b = 0; b < NB; b++) {
        if (b < n) {
            float xf[VEC];
            load_f32x<VEC>(x + (int64_t)b * K + (int64_t)v * VEC, xf);
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int e = 0; e < VEC; e++) acc[r][b] += wf[r][e] * xf[e];
        }
    }
}

// gemv_v2_acc adds each lane's share of Σ_k w[r, k]·x[b, k], for the R weight rows wr[r] and the
// first n ≤ NB rows of x, to acc[r][b] (the warp_sum comes after). The sequence of additions into
// one acc[r][b] does not depend on R, so the fused kernels below give bit for bit the sums that
// separate gemv_<dt>_v2 launches give.
//
// The lane takes the 16-byte vectors v0, v0 + vstep, v0 + 2·vstep, … of each row: v2 passes
// (lane, 32), v3 one K group's (g·32 + lane, 128).
template <typename W, int NB, int R>
__device__ __forceinline__ void gemv_v2_acc(float (&acc)[R][NB], const W* const (&wr)[R],
                                            const float* __restrict__ x, int n, int K, int v0,
                                            int vstep) {
    constexpr int VEC = Vec16<W>::N;
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int b = 0; b < NB; b++) acc[r][b] = 0.f;
    const int nvec = K / VEC;
#pragma unroll 2
    for (int v = v0; v < nvec; v += vstep) {
        uint4 raw[R];
#pragma unroll
        for (int r = 0; r < R; r++) raw[r] = load16_stream(wr[r] + (int64_t)v * VEC);
        gemv_fma_vec<W, NB, R>(acc, raw, x, n, K, v);
    }
}

// gemv_store sums each acc[r][b] over the warp and stores row r0 + r of batch row b of out (n, N):
// every lane ends with every sum; lane r·NB+b stores (r, b).
template <int NB>
__device__ __forceinline__ void gemv_store(float* __restrict__ out, float (&acc)[GEMV_ROWS][NB], int n,
                                           int N, int r0) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
        for (int b = 0; b < NB; b++) {
            const float s = warp_sum(acc[r][b]);
            if (lane == r * NB + b && b < n && r0 + r < N) out[(int64_t)b * N + r0 + r] = s;
        }
}

// gemv_store_glu is gemv_store of silu(gate)·up, the gate sums in acc[0, 4) and the up sums in
// acc[4, 8).
template <int NB>
__device__ __forceinline__ void gemv_store_glu(float* __restrict__ out, float (&acc)[2 * GEMV_ROWS][NB],
                                               int n, int N, int r0) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
        for (int b = 0; b < NB; b++) {
            const float g = warp_sum(acc[r][b]), u = warp_sum(acc[GEMV_ROWS + r][b]);
            if (lane == r * NB + b && b < n && r0 + r < N) out[(int64_t)b * N + r0 + r] = silu_mul(g, u);
        }
}

// gemv_v2_rows computes rows r0 … r0+3 of out (n, N) = x · wᵀ: one warp's work in gemv_v2.
template <typename W, int NB>
__device__ __forceinline__ void gemv_v2_rows(float* __restrict__ out, const float* __restrict__ x,
                                             const W* __restrict__ w, int n, int N, int K, int r0) {
    const W* wr[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) wr[r] = w + (int64_t)min(r0 + r, N - 1) * K;  // tail: reread
    float acc[GEMV_ROWS][NB];
    gemv_v2_acc<W, NB, GEMV_ROWS>(acc, wr, x, n, K, threadIdx.x & 31, 32);
    gemv_store<NB>(out, acc, n, N, r0);
}

template <typename W, int NB>
__device__ void gemv_v2(float* __restrict__ out, const float* __restrict__ x,
                        const W* __restrict__ w, int n, int N, int K) {
    const int r0 = (blockIdx.x * (GEMV_THREADS / 32) + (threadIdx.x >> 5)) * GEMV_ROWS;
    if (r0 >= N) return;  // whole warp; no barrier below
    gemv_v2_rows<W, NB>(out, x, w, n, N, K, r0);
}

#define GEMV_ENTRY(DT, WT, NB)                                                                  \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS)                                  \
        gemv_##DT##_v2_n##NB(float* out, const float* x, const WT* w, int n, int N, int K) {    \
        pdl_begin();                                                                            \
        gemv_v2<WT, NB>(out, x, w, n, N, K);                                                    \
    }

// grid (ceil(N / GEMV_ROWS_PER_BLOCK)), block (GEMV_THREADS); K % (16/sizeof(dt)) == 0, n ≤ B.
GEMV_ENTRY(f32, float, 1)
GEMV_ENTRY(f32, float, 2)
GEMV_ENTRY(f32, float, 4)
GEMV_ENTRY(f32, float, 8)
GEMV_ENTRY(f16, __half, 1)
GEMV_ENTRY(f16, __half, 2)
GEMV_ENTRY(f16, __half, 4)
GEMV_ENTRY(f16, __half, 8)
GEMV_ENTRY(bf16, __nv_bfloat16, 1)
GEMV_ENTRY(bf16, __nv_bfloat16, 2)
GEMV_ENTRY(bf16, __nv_bfloat16, 4)
GEMV_ENTRY(bf16, __nv_bfloat16, 8)

// ---------------------------------------------------------------- v2, fused
//
// A decode step ran 15 kernels per layer, and each costs a launch gap on the GPU (~1–2 µs, even
// replayed from a CUDA graph) beside its 10–130 µs of streaming at 7B. These two remove 4 of them
// per layer (rmsnorm.cu's add_rmsnorm_f32 2 more: 9 per layer, 192 fewer per token at 7B):
//   gemv_<dt>_v2_qkv_n<B>: q, k, v = x·Wqᵀ, x·Wkᵀ, x·Wvᵀ in one launch. The grid covers
//                          N0 + N1 + N2 rows; each warp's 4 rows come from one matrix (N0 and N1
//                          are multiples of 4: the host checks).
//   gemv_<dt>_v2_glu_n<B>: out = silu(x·W1ᵀ)·(x·W3ᵀ), LLaMA's gate and up projections and
//                          SwiGLU: each warp streams 4 rows of W1 and the same 4 rows of W3 (8 rows
//                          of loads in flight) and applies SwiGLU in the epilogue, so gate and up
//                          never go through memory.
// Both give bit for bit what gemv_<dt>_v2_n<B> (and swiglu_f32) give unfused (gpu/fused_test.go,
// TestFusedOps). Q8_0 and Q4_0 have theirs at the end of this file.

template <typename W, int NB>
__device__ void gemv_v2_qkv(float* out0, float* out1, float* out2, const float* x, const W* w0,
                            const W* w1, const W* w2, int n, int N0, int N1, int N2, int K) {
    int r0 = (blockIdx.x * (GEMV_THREADS / 32) + (threadIdx.x >> 5)) * GEMV_ROWS;
    if (r0 < N0) {
        gemv_v2_rows<W, NB>(out0, x, w0, n, N0, K, r0);
        return;
    }
    r0 -= N0;
    if (r0 < N1) {
        gemv_v2_rows<W, NB>(out1, x, w1, n, N1, K, r0);
        return;
    }
    r0 -= N1;
    if (r0 < N2) gemv_v2_rows<W, NB>(out2, x, w2, n, N2, K, r0);
}

template <typename W, int NB>
__device__ void gemv_v2_glu(float* __restrict__ out, const float* __restrict__ x,
                            const W* __restrict__ w1, const W* __restrict__ w3, int n, int N, int K) {
    const int r0 = (blockIdx.x * (GEMV_THREADS / 32) + (threadIdx.x >> 5)) * GEMV_ROWS;
    if (r0 >= N) return;  // whole warp; no barrier below
    const W* wr[2 * GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        const int64_t row = min(r0 + r, N - 1);  // tail: reread
        wr[r] = w1 + row * K;
        wr[GEMV_ROWS + r] = w3 + row * K;
    }
    float acc[2 * GEMV_ROWS][NB];
    gemv_v2_acc<W, NB, 2 * GEMV_ROWS>(acc, wr, x, n, K, threadIdx.x & 31, 32);
    gemv_store_glu<NB>(out, acc, n, N, r0);
}

#define GEMV_FUSED_ENTRY(DT, WT, NB)                                                              \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_##DT##_v2_qkv_n##NB(          \
        float* out0, float* out1, float* out2, const float* x, const WT* w0, const WT* w1,        \
        const WT* w2, int n, int N0, int N1, int N2, int K) {                                     \
        pdl_begin();                                                                              \
        gemv_v2_qkv<WT, NB>(out0, out1, out2, x, w0, w1, w2, n, N0, N1, N2, K);                   \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_##DT##_v2_glu_n##NB(          \
        float* out, const float* x, const WT* w1, const WT* w3, int n, int N, int K) {            \
        pdl_begin();                                                                              \
        gemv_v2_glu<WT, NB>(out, x, w1, w3, n, N, K);                                             \
    }

// qkv: grid (ceil((N0 + N1 + N2) / GEMV_ROWS_PER_BLOCK)); glu: grid (ceil(N / GEMV_ROWS_PER_BLOCK));
// block (GEMV_THREADS); K % (16/sizeof(dt)) == 0, n ≤ B.
GEMV_FUSED_ENTRY(f32, float, 1)
GEMV_FUSED_ENTRY(f32, float, 2)
GEMV_FUSED_ENTRY(f32, float, 4)
GEMV_FUSED_ENTRY(f32, float, 8)
GEMV_FUSED_ENTRY(f16, __half, 1)
GEMV_FUSED_ENTRY(f16, __half, 2)
GEMV_FUSED_ENTRY(f16, __half, 4)
GEMV_FUSED_ENTRY(f16, __half, 8)
GEMV_FUSED_ENTRY(bf16, __nv_bfloat16, 1)
GEMV_FUSED_ENTRY(bf16, __nv_bfloat16, 2)
GEMV_FUSED_ENTRY(bf16, __nv_bfloat16, 4)
GEMV_FUSED_ENTRY(bf16, __nv_bfloat16, 8)

// ---------------------------------------------------------------- v3: split K
//
// v2 gives each 4-row group one warp. At N = 4096 (7B's q, k, v, o and down projections) that is
// 1024 warps, ~8 per SM of an H100, whose loads in flight fall short of what HBM needs: the first
// GPU check measured 62% of the copy bandwidth for 4096×4096 and 69% for 4096×11008, against 84–96%
// for 11008 and 32000 rows (bench/results/gpu-h100-2026-11-28-run1). v3 lets ks = 1, 2 or 4 warps
// share a row group, each taking part of K, so that N/4·ks warps fill the SMs.
//
// Determinism: K is cut into GEMV_KG = 4 interleaved groups (group g holds the vectors
// g·32 + lane + 128·i); each group's sums are reduced by one warp (warp_sum), and a row group's
// total is ((s0 + s1) + s2) + s3, through shared memory, whatever ks is. So the bits do not
// depend on ks (the host's choice: 4 by default, any by Options.GEMVSplit), and the fused q/k/v
// and gate/up kernels give bit for bit what separate v3 launches give, as v2's do.
// PDL: the v3 kernels (and the q/k/v + RoPE one) ask L2 for each warp's first trip of weights
// before pdl_begin's wait (pdl_begin_after, gemv_v3_prefetch). Launched with programmatic
// dependent launch, a GEMV's blocks start during the previous kernel's last wave, and the first
// DRAM latency of every warp — a kernel of one partial wave at 4096 rows, whose warps make 4
// dependent trips (session 8's ncu: 71% of DRAM over 14.75 µs) — overlaps it. Without PDL the
// loads that follow at once merge with the pending lines.
//   gemv_<dt>_v3_n<B>_k<ks>, gemv_<dt>_v3_qkv_n<B>_k<ks>, gemv_<dt>_v3_glu_n<B>_k<ks>:
//   grid (ceil(rows·ks / GEMV_ROWS_PER_BLOCK)), block (GEMV_THREADS); ks ∈ {1, 2, 4}.
#define GEMV_KG 4
#define GEMV_WARPS (GEMV_THREADS / 32)

// GemvNormIn is v3n's extra input (section "v3n"): x + y, normalised and scaled by g, is the GEMV's x.
struct GemvNormIn {
    const float* y;  // (n, K): added to x
    const float* g;  // (K): the norm's weight
    float* xout;     // (n, K): x + y, written by block 0
    float eps;
};

// gemv_v3n_sums is in section "v3n" (declared here for gemv_v3_glu).
template <typename W, int NB, int R>
__device__ __forceinline__ bool gemv_v3n_sums(float (&tot)[R][NB], const W* const (&wr)[R],
                                              bool active, const float* __restrict__ x,
                                              const GemvNormIn& nin, int n, int K);


// gemv_v3_part sums the GPW K groups part, part + ks, … of one warp into red (K group, row,
// batch). Where the registers allow (GPW·R ≤ 16 loads and GPW·R·NB ≤ 32 sums per lane), the
// groups are streamed together, GPW·R 16-byte loads in flight per lane per trip, as one stream;
// else one after the other (gemv_v2_acc each), which drains the warp's loads between groups. Each
// group's sums are the same additions in the same order either way.
template <typename W, int NB, int R, int GPW>
__device__ __forceinline__ void gemv_v3_part(float (&red)[GEMV_KG][R][NB], const W* const (&wr)[R],
                                             const float* __restrict__ x, int n, int K, int part) {
    constexpr int VEC = Vec16<W>::N, ks = GEMV_KG / GPW;
    const int lane = threadIdx.x & 31;
    if constexpr (GPW * R <= 16 && GPW * R * NB <= 32) {
        float acc[GPW][R][NB];
#pragma unroll
        for (int j = 0; j < GPW; j++)
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int b = 0; b < NB; b++) acc[j][r][b] = 0.f;
        const int nvec = K / VEC;
        for (int base = lane; base < nvec; base += 32 * GEMV_KG) {
            uint4 raw[GPW][R];
#pragma unroll
            for (int j = 0; j < GPW; j++) {
                const int v = base + (part + ks * j) * 32;
#pragma unroll
                for (int r = 0; r < R; r++)
                    if (v < nvec) raw[j][r] = load16_stream(wr[r] + (int64_t)v * VEC);
            }
#pragma unroll
            for (int j = 0; j < GPW; j++) {
                const int v = base + (part + ks * j) * 32;
                if (v < nvec) gemv_fma_vec<W, NB, R>(acc[j], raw[j], x, n, K, v);
            }
        }
#pragma unroll
        for (int j = 0; j < GPW; j++)
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int b = 0; b < NB; b++) {
                    const float sum = warp_sum(acc[j][r][b]);
                    if (lane == 0) red[part + ks * j][r][b] = sum;
                }
    } else {
        for (int j = 0; j < GPW; j++) {
            const int g = part + ks * j;
            float acc[R][NB];
            gemv_v2_acc<W, NB, R>(acc, wr, x, n, K, g * 32 + lane, 32 * GEMV_KG);
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int b = 0; b < NB; b++) {
                    const float sum = warp_sum(acc[r][b]);
                    if (lane == 0) red[g][r][b] = sum;
                }
        }
    }
}

// gemv_v3_sums computes, for the block's warps, KS per row group, the R×NB sums of their row
// group's weight rows wr[0, R) with x's first n rows. Every lane of the row group's first warp
// (part 0) returns true with tot[r][b] the total; all threads of the block must call it (one
// barrier), active or not.
template <typename W, int NB, int R, int KS>
__device__ __forceinline__ bool gemv_v3_sums(float (&tot)[R][NB], const W* const (&wr)[R],
                                             bool active, const float* __restrict__ x, int n,
                                             int K) {
    __shared__ float red[GEMV_WARPS][GEMV_KG][R][NB];  // (row group in block, K group, row, batch)
    const int warp = threadIdx.x >> 5;
    const int rgl = warp / KS, part = warp % KS;
    if (active) gemv_v3_part<W, NB, R, GEMV_KG / KS>(red[rgl], wr, x, n, K, part);
    __syncthreads();
    if (!active || part != 0) return false;
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int b = 0; b < NB; b++)
            tot[r][b] = ((red[rgl][0][r][b] + red[rgl][1][r][b]) + red[rgl][2][r][b]) + red[rgl][3][r][b];
    return true;
}

// gemv_v3_group is the row group (index in the grid) of the calling warp.
template <int KS> __device__ __forceinline__ int gemv_v3_group() {
    return blockIdx.x * (GEMV_WARPS / KS) + (threadIdx.x >> 5) / KS;
}

// gemv_qkv_pick maps r0, a row group's first row in the q | k | v grid, to its matrix (0 q, 1 k,
// 2 v) and its row within it (each row group lies in one matrix: N0, N1 % 4 == 0).
__device__ __forceinline__ int gemv_qkv_pick(int& r0, int N0, int N1) {
    if (r0 < N0) return 0;
    r0 -= N0;
    if (r0 < N1) return 1;
    r0 -= N1;
    return 2;
}

// gemv_v3_prefetch asks L2 for the first trip of the calling warp's loads in gemv_v3_part —
// vectors lane + (part + KS·j)·32 of rows r0 … r0+3 of w (clamped to N, as gemv_v3_rows) — and is
// called before pdl_begin's wait (pdl_begin_after): the weights are no kernel's output, so under
// PDL the warp's first weight loads overlap the previous kernel's end.
template <typename W, int KS>
__device__ __forceinline__ void gemv_v3_prefetch(const W* w, int N, int K, int r0) {
    constexpr int VEC = Vec16<W>::N;
    if (r0 >= N) return;
    const int lane = threadIdx.x & 31, part = (threadIdx.x >> 5) % KS, nvec = K / VEC;
#pragma unroll
    for (int j = 0; j < GEMV_KG / KS; j++) {
        const int v = lane + (part + KS * j) * 32;
        if (v < nvec)
#pragma unroll
            for (int r = 0; r < GEMV_ROWS; r++)
                prefetch_l2(w + (int64_t)min(r0 + r, N - 1) * K + (int64_t)v * VEC);
    }
}

// gemv_v3_prefetch_qkv is gemv_v3_prefetch for the q | k | v grid.
template <typename W, int KS>
__device__ __forceinline__ void gemv_v3_prefetch_qkv(const W* w0, const W* w1, const W* w2, int N0,
                                                     int N1, int N2, int K) {
    int r0 = gemv_v3_group<KS>() * GEMV_ROWS;
    const int mat = gemv_qkv_pick(r0, N0, N1);
    gemv_v3_prefetch<W, KS>(mat == 0 ? w0 : mat == 1 ? w1 : w2, mat == 0 ? N0 : mat == 1 ? N1 : N2, K, r0);
}

// gemv_v3_rows: rows r0 … r0+3 of out (n, N) = x · wᵀ for the calling warp's row group.
template <typename W, int NB, int KS>
__device__ __forceinline__ void gemv_v3_rows(float* __restrict__ out, const float* __restrict__ x,
                                             const W* __restrict__ w, bool active, int n, int N,
                                             int K, int r0) {
    const W* wr[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) wr[r] = w + (int64_t)max(0, min(r0 + r, N - 1)) * K;
    float tot[GEMV_ROWS][NB];
    if (!gemv_v3_sums<W, NB, GEMV_ROWS, KS>(tot, wr, active, x, n, K)) return;
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
        for (int b = 0; b < NB; b++)
            if (lane == r * NB + b && b < n && r0 + r < N) out[(int64_t)b * N + r0 + r] = tot[r][b];
}

template <typename W, int NB, int KS>
__device__ void gemv_v3(float* __restrict__ out, const float* __restrict__ x,
                        const W* __restrict__ w, int n, int N, int K) {
    const int r0 = gemv_v3_group<KS>() * GEMV_ROWS;
    gemv_v3_rows<W, NB, KS>(out, x, w, r0 < N, n, N, K, r0);
}

// q, k, v rows in one grid, as gemv_v2_qkv: each row group lies in one matrix (N0, N1 % 4 == 0).
template <typename W, int NB, int KS>
__device__ void gemv_v3_qkv(float* out0, float* out1, float* out2, const float* x, const W* w0,
                            const W* w1, const W* w2, int n, int N0, int N1, int N2, int K) {
    int r0 = gemv_v3_group<KS>() * GEMV_ROWS;
    const int mat = gemv_qkv_pick(r0, N0, N1);
    const int N = mat == 0 ? N0 : mat == 1 ? N1 : N2;
    gemv_v3_rows<W, NB, KS>(mat == 0 ? out0 : mat == 1 ? out1 : out2, x, mat == 0 ? w0 : mat == 1 ? w1 : w2,
                            r0 < N, n, N, K, r0);
}

// out = silu(x·W1ᵀ)·(x·W3ᵀ), as gemv_v2_glu: 4 rows of W1 and the same 4 of W3 per row group.
// NORM (KS = 4): v3n's (GemvNormIn nin), else nin is unused.
template <typename W, int NB, int KS, bool NORM = false>
__device__ void gemv_v3_glu(float* __restrict__ out, const float* __restrict__ x,
                            const W* __restrict__ w1, const W* __restrict__ w3, int n, int N, int K,
                            const GemvNormIn& nin = GemvNormIn{}) {
    const int r0 = gemv_v3_group<KS>() * GEMV_ROWS;
    const W* wr[2 * GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        const int64_t row = max(0, min(r0 + r, N - 1));
        wr[r] = w1 + row * K;
        wr[GEMV_ROWS + r] = w3 + row * K;
    }
    float tot[2 * GEMV_ROWS][NB];
    if constexpr (NORM) {
        static_assert(KS == GEMV_KG, "v3n: ks = 4");
        if (!gemv_v3n_sums<W, NB, 2 * GEMV_ROWS>(tot, wr, r0 < N, x, nin, n, K)) return;
    } else {
        if (!gemv_v3_sums<W, NB, 2 * GEMV_ROWS, KS>(tot, wr, r0 < N, x, n, K)) return;
    }
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++)
#pragma unroll
        for (int b = 0; b < NB; b++)
            if (lane == r * NB + b && b < n && r0 + r < N)
                out[(int64_t)b * N + r0 + r] = silu_mul(tot[r][b], tot[GEMV_ROWS + r][b]);
}

#define GEMV_V3_ENTRY(DT, WT, NB, KS)                                                            \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_##DT##_v3_n##NB##_k##KS(      \
        float* out, const float* x, const WT* w, int n, int N, int K) {                           \
        pdl_begin_after([&] { gemv_v3_prefetch<WT, KS>(w, N, K, gemv_v3_group<KS>() * GEMV_ROWS); }); \
        gemv_v3<WT, NB, KS>(out, x, w, n, N, K);                                                  \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_##DT##_v3_qkv_n##NB##_k##KS(  \
        float* out0, float* out1, float* out2, const float* x, const WT* w0, const WT* w1,        \
        const WT* w2, int n, int N0, int N1, int N2, int K) {                                     \
        pdl_begin_after([&] { gemv_v3_prefetch_qkv<WT, KS>(w0, w1, w2, N0, N1, N2, K); });        \
        gemv_v3_qkv<WT, NB, KS>(out0, out1, out2, x, w0, w1, w2, n, N0, N1, N2, K);               \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_##DT##_v3_glu_n##NB##_k##KS(  \
        float* out, const float* x, const WT* w1, const WT* w3, int n, int N, int K) {            \
        pdl_begin_after([&] {                                                                     \
            const int r0 = gemv_v3_group<KS>() * GEMV_ROWS;                                       \
            gemv_v3_prefetch<WT, KS>(w1, N, K, r0);                                               \
            gemv_v3_prefetch<WT, KS>(w3, N, K, r0);                                               \
        });                                                                                       \
        gemv_v3_glu<WT, NB, KS>(out, x, w1, w3, n, N, K);                                         \
    }

// K % (16/sizeof(dt)) == 0, n ≤ B; each KS (1, 2, 4) its own kernel, so that each has the
// registers it needs (ks = 1 streams its warp's 4 K groups together: ~120 registers at B = 1;
// ks = 4 one group: ~40, for 48 warps an SM).
GEMV_V3_ENTRY(f32, float, 1, 1)
GEMV_V3_ENTRY(f32, float, 1, 2)
GEMV_V3_ENTRY(f32, float, 1, 4)
GEMV_V3_ENTRY(f32, float, 2, 1)
GEMV_V3_ENTRY(f32, float, 2, 2)
GEMV_V3_ENTRY(f32, float, 2, 4)
GEMV_V3_ENTRY(f32, float, 4, 1)
GEMV_V3_ENTRY(f32, float, 4, 2)
GEMV_V3_ENTRY(f32, float, 4, 4)
GEMV_V3_ENTRY(f32, float, 8, 1)
GEMV_V3_ENTRY(f32, float, 8, 2)
GEMV_V3_ENTRY(f32, float, 8, 4)
GEMV_V3_ENTRY(f16, __half, 1, 1)
GEMV_V3_ENTRY(f16, __half, 1, 2)
GEMV_V3_ENTRY(f16, __half, 1, 4)
GEMV_V3_ENTRY(f16, __half, 2, 1)
GEMV_V3_ENTRY(f16, __half, 2, 2)
GEMV_V3_ENTRY(f16, __half, 2, 4)
GEMV_V3_ENTRY(f16, __half, 4, 1)
GEMV_V3_ENTRY(f16, __half, 4, 2)
GEMV_V3_ENTRY(f16, __half, 4, 4)
GEMV_V3_ENTRY(f16, __half, 8, 1)
GEMV_V3_ENTRY(f16, __half, 8, 2)
GEMV_V3_ENTRY(f16, __half, 8, 4)
GEMV_V3_ENTRY(bf16, __nv_bfloat16, 1, 1)
GEMV_V3_ENTRY(bf16, __nv_bfloat16, 1, 2)
GEMV_V3_ENTRY(bf16, __nv_bfloat16, 1, 4)
GEMV_V3_ENTRY(bf16, __nv_bfloat16, 2, 1)
GEMV_V3_ENTRY(bf16, __nv_bfloat16, 2, 2)
GEMV_V3_ENTRY(bf16, __nv_bfloat16, 2, 4)
GEMV_V3_ENTRY(bf16, __nv_bfloat16, 4, 1)
GEMV_V3_ENTRY(bf16, __nv_bfloat16, 4, 2)
GEMV_V3_ENTRY(bf16, __nv_bfloat16, 4, 4)
GEMV_V3_ENTRY(bf16, __nv_bfloat16, 8, 1)
GEMV_V3_ENTRY(bf16, __nv_bfloat16, 8, 2)
GEMV_V3_ENTRY(bf16, __nv_bfloat16, 8, 4)

// ---------------------------------------------------------------- v3n: the residual add and RMSNorm folded in
//
// In a decode step each of a layer's two norms sits between one GEMV and the next:
//
//   x += y;  h = rmsnorm(x)·g;  then q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ  (or gate, up = h·W1ᵀ, h·W3ᵀ)
//
// add_rmsnorm_f32 does the first two in a launch of their own: one block, latency-bound, 3.3 µs
// under ncu in run 3 (gpu-h200-2026-11-28-run3), twice a layer — 5% of a 7B step, more of a 70B
// rank's. v3n folds them into the GEMV that reads h, using
//
//   (h·wᵀ)[r] = inv · Σ_k w[r, k]·(g[k]·s[k]),   s = x + y,   inv = 1/sqrt(Σ_k s[k]²/K + eps)
//
// Every row group already walks all of K (its ks = 4 warps one K group each), so it adds x and y
// as it reads them, sums s² beside its dot products (one more row of red, reduced in the same
// order as the sums), and scales its totals by inv at the end. Block 0 (one row group) writes s
// to xout, the new residual — not over x, which the other blocks are still reading: the model
// alternates two residual buffers (model.NormFolder).
// Cost: y and g come through L1 beside x (1.5 bytes of L1 reads per weight byte at one row
// where v3 reads 0.5; 0.75 for gate/up's 8 rows a warp), and the add and s² are 2 more flops per
// element of x per row group. Against that, a launch and its latency chain are gone.
// Bits: not add_rmsnorm_f32 + v3's — inv multiplies each sum instead of each element, and Σs²
// runs in another order — but within fp32 rounding of them (the conformance tolerance;
// gpu/foldnorm_test.go compares the two paths).
//   gemv_<dt>_v3n_qkv_rope_<kv>_n1, gemv_<dt>_v3n_glu_n1: one row, ks = 4; grid as v3's,
//   block (GEMV_THREADS).

// gemv_v3n_fma_vec is gemv_fma_vec on g·(x + y) for vector v, adding (x + y)² to ss[b] and, where
// store, writing x + y to nin.xout.
template <typename W, int NB, int R>
__device__ __forceinline__ void gemv_v3n_fma_vec(float (&acc)[R][NB], float (&ss)[NB],
                                                 const uint4 (&raw)[R], const float* __restrict__ x,
                                                 const GemvNormIn& nin, bool store, int n, int K,
                                                 int v) {
    constexpr int VEC = Vec16<W>::N;
    float wf[R][VEC], gf[VEC];
#pragma unroll
    for (int r = 0; r < R; r++) unpack16<W>(raw[r], wf[r]);
    load_f32x<VEC>(nin.g + (int64_t)v * VEC, gf);
#pragma unroll
    for (int b = 0; b < NB; b++) {
        if (b < n) {
            const int64_t o = (int64_t)b * K + (int64_t)v * VEC;
            float xf[VEC], yf[VEC];
            load_f32x<VEC>(x + o, xf);
            load_f32x<VEC>(nin.y + o, yf);
#pragma unroll
            for (int e = 0; e < VEC; e++) {
                xf[e] += yf[e];
                ss[b] += xf[e] * xf[e];
            }
            if (store)
#pragma unroll
                for (int e = 0; e < VEC; e += 4)
                    *reinterpret_cast<float4*>(nin.xout + o + e) = make_float4(xf[e], xf[e + 1], xf[e + 2], xf[e + 3]);
#pragma unroll
            for (int e = 0; e < VEC; e++) xf[e] *= gf[e];
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int e = 0; e < VEC; e++) acc[r][b] += wf[r][e] * xf[e];
        }
    }
}

// gemv_v3n_sums is gemv_v3_sums (ks = 4) with x replaced by rmsnorm(x + y)·g (GemvNormIn): the
// row group's first warp returns true with tot[r][b] = inv[b]·Σ_k w[r, k]·g[k]·s[b, k]. Block 0's
// row group writes s to nin.xout. All threads of the block must call it (one barrier).
template <typename W, int NB, int R>
__device__ __forceinline__ bool gemv_v3n_sums(float (&tot)[R][NB], const W* const (&wr)[R],
                                              bool active, const float* __restrict__ x,
                                              const GemvNormIn& nin, int n, int K) {
    constexpr int VEC = Vec16<W>::N, KS = GEMV_KG;
    // (row group in block, K group, row — R is Σs² —, batch)
    __shared__ float red[GEMV_WARPS / KS][GEMV_KG][R + 1][NB];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int rgl = warp / KS, part = warp % KS;
    if (active) {
        const bool store = blockIdx.x == 0 && rgl == 0;
        float acc[R][NB], ss[NB];
#pragma unroll
        for (int b = 0; b < NB; b++) {
            ss[b] = 0.f;
#pragma unroll
            for (int r = 0; r < R; r++) acc[r][b] = 0.f;
        }
        const int nvec = K / VEC;
        for (int v = part * 32 + lane; v < nvec; v += 32 * GEMV_KG) {
            uint4 raw[R];
#pragma unroll
            for (int r = 0; r < R; r++) raw[r] = load16_stream(wr[r] + (int64_t)v * VEC);
            gemv_v3n_fma_vec<W, NB, R>(acc, ss, raw, x, nin, store, n, K, v);
        }
#pragma unroll
        for (int b = 0; b < NB; b++) {
#pragma unroll
            for (int r = 0; r < R; r++) {
                const float sum = warp_sum(acc[r][b]);
                if (lane == 0) red[rgl][part][r][b] = sum;
            }
            const float sum = warp_sum(ss[b]);
            if (lane == 0) red[rgl][part][R][b] = sum;
        }
    }
    __syncthreads();
    if (!active || part != 0) return false;
#pragma unroll
    for (int b = 0; b < NB; b++) {
        const float s2 = ((red[rgl][0][R][b] + red[rgl][1][R][b]) + red[rgl][2][R][b]) + red[rgl][3][R][b];
        const float inv = 1.f / sqrtf(s2 / (float)K + nin.eps);
#pragma unroll
        for (int r = 0; r < R; r++)
            tot[r][b] = inv * (((red[rgl][0][r][b] + red[rgl][1][r][b]) + red[rgl][2][r][b]) + red[rgl][3][r][b]);
    }
    return true;
}

// ---------------------------------------------------------------- v3, q/k/v with RoPE and the KV store
//
// gemv_<dt>_v3_qkv_rope_<kv>_n<B>: the attention block's prologue of a decode step in one launch,
// where it took two (gemv_<dt>_v3_qkv_n<B>_k4, then rope.cu's rope_qk_store_kv_<kv>): the q/k/v
// projection (ks = 4), whose epilogue rotates q and k by each batch row's position and stores k
// and v into the paged cache (kvcache.cu's layout). out (n, N) rows of q and k come back rotated,
// as the two launches leave them, and the bits are theirs: the same sums (gemv_v3_sums), the same
// angle and rounding (rope.cu's rope_angle, rope_pair), the same cache conversion.
//
// Why it fits the GEMV: a row group is 4 consecutive rows of one matrix (Nq, Nkv % 4 == 0) and
// every lane of its first warp holds all 4 × B sums, so the pair (2j, 2j + 1) of a head is in one
// warp's registers. Each stored element pays an fp64 pow and sincos (rope_angle), as rope.cu's
// table does per pair; with B = 1 that is 4 lanes of each warp, in the epilogue.
//   grid (ceil((Nq + 2·Nkv)·4 / GEMV_ROWS_PER_BLOCK)), block (GEMV_THREADS); head_dim even.
// NORM: v3n's (GemvNormIn nin), else nin is unused.
template <typename W, typename KV, int NB, bool NORM = false>
__device__ void gemv_v3_qkv_rope(float* q, float* k, float* v, const float* x, const W* wq,
                                 const W* wk, const W* wv, KV* kc, KV* vc, const int* pos,
                                 const int* row_tab, const int* tables, int n, int Nq, int Nkv,
                                 int K, int head_dim, float theta, int layer, int num_blocks,
                                 int block_size, const GemvNormIn& nin = GemvNormIn{}) {
    constexpr int KS = GEMV_KG;
    int r0 = gemv_v3_group<KS>() * GEMV_ROWS;
    const int mat = gemv_qkv_pick(r0, Nq, Nkv);  // 0 q, 1 k, 2 v
    float* out = mat == 0 ? q : mat == 1 ? k : v;
    const W* w = mat == 0 ? wq : mat == 1 ? wk : wv;
    const int N = mat == 0 ? Nq : Nkv;
    const W* wr[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) wr[r] = w + (int64_t)max(0, min(r0 + r, N - 1)) * K;
    float tot[GEMV_ROWS][NB];
    if constexpr (NORM) {
        if (!gemv_v3n_sums<W, NB, GEMV_ROWS>(tot, wr, r0 < N, x, nin, n, K)) return;
    } else {
        if (!gemv_v3_sums<W, NB, GEMV_ROWS, KS>(tot, wr, r0 < N, x, n, K)) return;
    }
    // Lane r·NB + b takes element r0 + r of batch row b, and the other element of its pair.
    const int lane = threadIdx.x & 31, r = lane / NB, b = lane % NB;
    if (r >= GEMV_ROWS || b >= n || r0 + r >= N) return;
    float mine = 0.f, other = 0.f;
#pragma unroll
    for (int rr = 0; rr < GEMV_ROWS; rr++)
#pragma unroll
        for (int bb = 0; bb < NB; bb++)
            if (lane == rr * NB + bb) mine = tot[rr][bb], other = tot[rr ^ 1][bb];
    const int e = r0 + r, p = pos[b];
    float y = mine;
    if (mat < 2) {
        float c, s;
        rope_angle(p, (e % head_dim) >> 1, head_dim, theta, c, s);
        const bool odd = e & 1;
        y = odd ? rope_pair(other, mine, c, s, true) : rope_pair(mine, other, c, s, false);
    }
    out[(int64_t)b * N + e] = y;
    if (mat > 0) {
        const int blk = tables[row_tab[b] + p / block_size];
        KV* cache = mat == 1 ? kc : vc;
        cache[kv_offset(layer, num_blocks, block_size, Nkv, blk, p % block_size) + e] =
            from_f32<KV>(y);
    }
}

#define GEMV_V3_ROPE_ENTRY(DT, WT, KVNAME, KVT, NB)                                               \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS)                                    \
        gemv_##DT##_v3_qkv_rope_##KVNAME##_n##NB(                                                 \
            float* q, float* k, float* v, const float* x, const WT* wq, const WT* wk,             \
            const WT* wv, KVT* kc, KVT* vc, const int* pos, const int* row_tab,                   \
            const int* tables, int n, int Nq, int Nkv, int K, int head_dim, float theta,          \
            int layer, int num_blocks, int block_size) {                                          \
        pdl_begin_after([&] { gemv_v3_prefetch_qkv<WT, GEMV_KG>(wq, wk, wv, Nq, Nkv, Nkv, K); }); \
        gemv_v3_qkv_rope<WT, KVT, NB>(q, k, v, x, wq, wk, wv, kc, vc, pos, row_tab, tables, n,    \
                                      Nq, Nkv, K, head_dim, theta, layer, num_blocks,             \
                                      block_size);                                                \
    }
// Weights f32/f16/bf16 × cache f32/f16 × batch width 1, 2, 4, 8.
GEMV_V3_ROPE_ENTRY(f32, float, f32, float, 1)
GEMV_V3_ROPE_ENTRY(f32, float, f32, float, 2)
GEMV_V3_ROPE_ENTRY(f32, float, f32, float, 4)
GEMV_V3_ROPE_ENTRY(f32, float, f32, float, 8)
GEMV_V3_ROPE_ENTRY(f32, float, f16, __half, 1)
GEMV_V3_ROPE_ENTRY(f32, float, f16, __half, 2)
GEMV_V3_ROPE_ENTRY(f32, float, f16, __half, 4)
GEMV_V3_ROPE_ENTRY(f32, float, f16, __half, 8)
GEMV_V3_ROPE_ENTRY(f16, __half, f32, float, 1)
GEMV_V3_ROPE_ENTRY(f16, __half, f32, float, 2)
GEMV_V3_ROPE_ENTRY(f16, __half, f32, float, 4)
GEMV_V3_ROPE_ENTRY(f16, __half, f32, float, 8)
GEMV_V3_ROPE_ENTRY(f16, __half, f16, __half, 1)
GEMV_V3_ROPE_ENTRY(f16, __half, f16, __half, 2)
GEMV_V3_ROPE_ENTRY(f16, __half, f16, __half, 4)
GEMV_V3_ROPE_ENTRY(f16, __half, f16, __half, 8)
GEMV_V3_ROPE_ENTRY(bf16, __nv_bfloat16, f32, float, 1)
GEMV_V3_ROPE_ENTRY(bf16, __nv_bfloat16, f32, float, 2)
GEMV_V3_ROPE_ENTRY(bf16, __nv_bfloat16, f32, float, 4)
GEMV_V3_ROPE_ENTRY(bf16, __nv_bfloat16, f32, float, 8)
GEMV_V3_ROPE_ENTRY(bf16, __nv_bfloat16, f16, __half, 1)
GEMV_V3_ROPE_ENTRY(bf16, __nv_bfloat16, f16, __half, 2)
GEMV_V3_ROPE_ENTRY(bf16, __nv_bfloat16, f16, __half, 4)
GEMV_V3_ROPE_ENTRY(bf16, __nv_bfloat16, f16, __half, 8)


// v3n entries (section "v3n"): the q/k/v + RoPE kernel and the gate/up kernel at one row, with
// xout = x + y and x's norm folded in.
#define GEMV_V3N_ENTRY(DT, WT)                                                                    \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_##DT##_v3n_glu_n1(             \
        float* out, float* xout, const float* x, const float* y, const float* g, const WT* w1,    \
        const WT* w3, int n, int N, int K, float eps) {                                           \
        pdl_begin_after([&] {                                                                     \
            const int r0 = gemv_v3_group<GEMV_KG>() * GEMV_ROWS;                                  \
            gemv_v3_prefetch<WT, GEMV_KG>(w1, N, K, r0);                                          \
            gemv_v3_prefetch<WT, GEMV_KG>(w3, N, K, r0);                                          \
        });                                                                                       \
        gemv_v3_glu<WT, 1, GEMV_KG, true>(out, x, w1, w3, n, N, K, GemvNormIn{y, g, xout, eps});  \
    }
#define GEMV_V3N_ROPE_ENTRY(DT, WT, KVNAME, KVT)                                                  \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS)                                    \
        gemv_##DT##_v3n_qkv_rope_##KVNAME##_n1(                                                   \
            float* q, float* k, float* v, float* xout, const float* x, const float* y,            \
            const float* g, const WT* wq, const WT* wk, const WT* wv, KVT* kc, KVT* vc,           \
            const int* pos, const int* row_tab, const int* tables, int n, int Nq, int Nkv, int K, \
            int head_dim, float theta, int layer, int num_blocks, int block_size, float eps) {    \
        pdl_begin_after([&] { gemv_v3_prefetch_qkv<WT, GEMV_KG>(wq, wk, wv, Nq, Nkv, Nkv, K); }); \
        gemv_v3_qkv_rope<WT, KVT, 1, true>(q, k, v, x, wq, wk, wv, kc, vc, pos, row_tab, tables,  \
                                           n, Nq, Nkv, K, head_dim, theta, layer, num_blocks,     \
                                           block_size, GemvNormIn{y, g, xout, eps});              \
    }
GEMV_V3N_ENTRY(f32, float)
GEMV_V3N_ENTRY(f16, __half)
GEMV_V3N_ENTRY(bf16, __nv_bfloat16)
GEMV_V3N_ROPE_ENTRY(f32, float, f32, float)
GEMV_V3N_ROPE_ENTRY(f32, float, f16, __half)
GEMV_V3N_ROPE_ENTRY(f16, __half, f32, float)
GEMV_V3N_ROPE_ENTRY(f16, __half, f16, __half)
GEMV_V3N_ROPE_ENTRY(bf16, __nv_bfloat16, f32, float)
GEMV_V3N_ROPE_ENTRY(bf16, __nv_bfloat16, f16, __half)

// ---------------------------------------------------------------- Q8_0
//
// Q8_0 weights stay quantised on the device, repacked by gpu/upload.go from the file's 34-byte
// blocks (an fp16 scale, then 32 int8) into two arrays, so that every load is aligned:
//
//   q (N, K) int8, d (N, K/32) fp16:   w[r, k] = d[r, k/32] · q[r, k]      (K % 32 == 0)
//
// 1.0625 bytes per weight instead of fp16's 2: a decode step streams 53% of the bytes.
//   gemv_q8_0_v1      : gemv_<dt>_v1's loop on the dequantised weight. The reference.
//   gemv_q8_0_v2_n<B> : gemv_<dt>_v2's layout with 16 int8 (half a block) per lane and load;
//                       the 16 products are summed, then scaled once by the block's d.

// grid (ceil(N/8), n), block (256).
extern "C" __global__ void gemv_q8_0_v1(float* out, const float* x, const int8_t* q, const __half* d,
                                        int n, int N, int K) {
    pdl_begin();
    const int warps = blockDim.x >> 5;
    const int r = blockIdx.x * warps + (threadIdx.x >> 5), b = blockIdx.y, lane = threadIdx.x & 31;
    if (r >= N) return;  // whole warp
    const int8_t* qr = q + (int64_t)r * K;
    const __half* dr = d + (int64_t)r * (K / 32);
    const float* xr = x + (int64_t)b * K;
    float acc = 0.f;
    for (int k = lane; k < K; k += 32) acc += __half2float(dr[k / 32]) * (float)qr[k] * xr[k];
    acc = warp_sum(acc);
    if (lane == 0) out[(int64_t)b * N + r] = acc;
}

// unpack_i8x16 widens 16 int8 (element 0 in the low byte of u.x) to float.
LLAMACU_DEVICE void unpack_i8x16(uint4 u, float* f) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) f[4 * i + j] = (float)(int8_t)(w[i] >> (8 * j));
}


// dequant_q8_0_f16: out[i] = d[i/32] · q[i] as fp16, for the cuBLAS path of prefill (n > 8).
// grid-stride, block (256).
// total = N·K < 2^31 (the host checks).
extern "C" __global__ void dequant_q8_0_f16(__half* out, const int8_t* q, const __half* d, int total) {
    pdl_begin();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x)
        out[i] = __float2half_rn(__half2float(d[i / 32]) * (float)q[i]);
}

// ---------------------------------------------------------------- Q4_0
//
// Q4_0 weights stay quantised too, repacked by gpu/upload.go from the file's 18-byte blocks (an
// fp16 scale, then 16 bytes: byte j holds element j in its low nibble and element j+16 in its
// high one) into
//
//   q (N, K/2) bytes in the file's order, d (N, K/32) fp16:   w[r, k] = d[r, k/32] · (nibble − 8)
//
// 0.5625 bytes per weight: a decode step streams 28% of fp16's bytes.
//   gemv_q4_0_v1      : the reference loop on the dequantised weight.
//   gemv_q4_0_v2_n<B> : gemv_q8_0_v2's layout with one whole block (16 bytes, 32 weights) per lane
//                       and load; the low nibbles meet x[32v … 32v+15], the high ones the next 16.

// grid (ceil(N/8), n), block (256).
extern "C" __global__ void gemv_q4_0_v1(float* out, const float* x, const uint8_t* q, const __half* d,
                                        int n, int N, int K) {
    pdl_begin();
    const int warps = blockDim.x >> 5;
    const int r = blockIdx.x * warps + (threadIdx.x >> 5), b = blockIdx.y, lane = threadIdx.x & 31;
    if (r >= N) return;  // whole warp
    const uint8_t* qr = q + (int64_t)r * (K / 2);
    const __half* dr = d + (int64_t)r * (K / 32);
    const float* xr = x + (int64_t)b * K;
    float acc = 0.f;
    for (int k = lane; k < K; k += 32) acc += __half2float(dr[k / 32]) * (float)q4_at(qr, k) * xr[k];
    acc = warp_sum(acc);
    if (lane == 0) out[(int64_t)b * N + r] = acc;
}

// unpack_q4x16 widens half of one 16-byte Q4_0 block, minus 8: half 0 = elements 0…15 (the low
// nibbles), half 1 = elements 16…31 (the high nibbles).
LLAMACU_DEVICE void unpack_q4x16(uint4 u, int half, float* w) {
    const uint32_t words[4] = {u.x, u.y, u.z, u.w};
    const int shift = 4 * half;
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) w[4 * i + j] = (float)((int)((words[i] >> (8 * j + shift)) & 0xf) - 8);
}


// dequant_q4_0_f16: out[i] = d[i/32] · (nibble i − 8) as fp16, for prefill's cuBLAS path.
// total = N·K < 2^31 (the host checks). grid-stride, block (256).
extern "C" __global__ void dequant_q4_0_f16(__half* out, const uint8_t* q, const __half* d, int total) {
    pdl_begin();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x)
        out[i] = __float2half_rn(__half2float(d[i / 32]) * (float)q4_at(q, i));
}

// ---------------------------------------------------------------- Q8_0 and Q4_0, fused
//
// One inner loop, gemvq_acc, serves gemv_<q>_v2_n<B> and the fused gemv_<q>_v2_qkv_n<B> and
// gemv_<q>_v2_glu_n<B> of Q8_0 and Q4_0 weights (the float types' fused kernels, above), so the
// fused kernels equal the unfused ones bit for bit.

// Q8Fmt / Q4Fmt describe a quantised row for gemvq_acc: its element type and bytes per row.
struct Q8Fmt {
    typedef int8_t Q;
    static __device__ __forceinline__ int64_t row_bytes(int K) { return K; }
};
struct Q4Fmt {
    typedef uint8_t Q;
    static __device__ __forceinline__ int64_t row_bytes(int K) { return K / 2; }
};

// unpack_half widens the 16 values of lane step half (0, or for Q4_0 also 1) of a quant vector.
template <typename F> LLAMACU_DEVICE void unpack_half(uint4 u, int half, float* w) {
    if constexpr (std::is_same<F, Q4Fmt>::value) {
        unpack_q4x16(u, half, w);
    } else {
        unpack_i8x16(u, w);
    }
}

// load_x16 reads 16 consecutive floats of x; dot16 is Σ_e w[e]·x[e], left to right.
LLAMACU_DEVICE void load_x16(const float* p, float* xf) {
    load_f32x<8>(p, xf);
    load_f32x<8>(p + 8, xf + 8);
}
LLAMACU_DEVICE float dot16(const float* w, const float* xf) {
    float d = 0.f;
#pragma unroll
    for (int e = 0; e < 16; e++) d += w[e] * xf[e];
    return d;
}

// gemvq_acc is gemv_v2_acc for quantised rows (qr, dr): each lane step loads 16 bytes of quants
// per row (16 Q8_0 values, half a block; or a whole 32-value Q4_0 block, used as two halves of
// 16) and the block's scale; the 16 products of a half are summed, then scaled once. HOIST widens
// each row's quants once per step, before the loop over batch rows (gemv_<q>_v2, qkv); without it
// they are widened inside that loop (B conversions per weight instead of one, nothing more at
// B = 1), so that 8 rows fit in registers (glu). The additions into one acc[r][b] are the same
// either way.
template <typename F, int NB, int R, bool HOIST>
__device__ __forceinline__ void gemvq_acc(float (&acc)[R][NB], const typename F::Q* const (&qr)[R],
                                          const __half* const (&dr)[R], const float* __restrict__ x,
                                          int n, int K) {
    constexpr bool q4 = std::is_same<F, Q4Fmt>::value;
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int b = 0; b < NB; b++) acc[r][b] = 0.f;
    const int nstep = q4 ? K / 32 : K / 16;
#pragma unroll 2
    for (int v = lane; v < nstep; v += 32) {
        uint4 raw[R];
        float s[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            raw[r] = load16_stream(qr[r] + (int64_t)v * 16);
            s[r] = __half2float(__ldg(dr[r] + (q4 ? v : v >> 1)));
        }
#pragma unroll
        for (int half = 0; half < (q4 ? 2 : 1); half++) {
            if constexpr (HOIST) {
                float wh[R][16];
#pragma unroll
                for (int r = 0; r < R; r++) unpack_half<F>(raw[r], half, wh[r]);
#pragma unroll
                for (int b = 0; b < NB; b++) {
                    if (b < n) {
                        float xf[16];
                        load_x16(x + (int64_t)b * K + (int64_t)v * (q4 ? 32 : 16) + half * 16, xf);
#pragma unroll
                        for (int r = 0; r < R; r++) acc[r][b] += s[r] * dot16(wh[r], xf);
                    }
                }
            } else {
#pragma unroll
                for (int b = 0; b < NB; b++) {
                    if (b < n) {
                        float xf[16];
                        load_x16(x + (int64_t)b * K + (int64_t)v * (q4 ? 32 : 16) + half * 16, xf);
#pragma unroll
                        for (int r = 0; r < R; r++) {
                            float wf[16];
                            unpack_half<F>(raw[r], half, wf);
                            acc[r][b] += s[r] * dot16(wf, xf);
                        }
                    }
                }
            }
        }
    }
}

// gemvq_rows computes rows r0 … r0+3 of out (n, N) = x · wᵀ for quantised w (q, d).
template <typename F, int NB>
__device__ __forceinline__ void gemvq_rows(float* __restrict__ out, const float* __restrict__ x,
                                           const typename F::Q* __restrict__ q, const __half* __restrict__ d,
                                           int n, int N, int K, int r0) {
    const typename F::Q* qr[GEMV_ROWS];
    const __half* dr[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        const int64_t row = min(r0 + r, N - 1);  // tail: reread
        qr[r] = q + row * F::row_bytes(K);
        dr[r] = d + row * (K / 32);
    }
    float acc[GEMV_ROWS][NB];
    gemvq_acc<F, NB, GEMV_ROWS, true>(acc, qr, dr, x, n, K);
    gemv_store<NB>(out, acc, n, N, r0);
}

template <typename F, int NB>
__device__ void gemvq_qkv(float* out0, float* out1, float* out2, const float* x, const typename F::Q* q0,
                          const __half* d0, const typename F::Q* q1, const __half* d1,
                          const typename F::Q* q2, const __half* d2, int n, int N0, int N1, int N2, int K) {
    int r0 = (blockIdx.x * (GEMV_THREADS / 32) + (threadIdx.x >> 5)) * GEMV_ROWS;
    if (r0 < N0) {
        gemvq_rows<F, NB>(out0, x, q0, d0, n, N0, K, r0);
        return;
    }
    r0 -= N0;
    if (r0 < N1) {
        gemvq_rows<F, NB>(out1, x, q1, d1, n, N1, K, r0);
        return;
    }
    r0 -= N1;
    if (r0 < N2) gemvq_rows<F, NB>(out2, x, q2, d2, n, N2, K, r0);
}

template <typename F, int NB>
__device__ void gemvq_glu(float* __restrict__ out, const float* __restrict__ x, const typename F::Q* q1,
                          const __half* d1, const typename F::Q* q3, const __half* d3, int n, int N, int K) {
    const int r0 = (blockIdx.x * (GEMV_THREADS / 32) + (threadIdx.x >> 5)) * GEMV_ROWS;
    if (r0 >= N) return;  // whole warp; no barrier below
    const typename F::Q* qr[2 * GEMV_ROWS];
    const __half* dr[2 * GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        const int64_t row = min(r0 + r, N - 1);  // tail: reread
        qr[r] = q1 + row * F::row_bytes(K);
        qr[GEMV_ROWS + r] = q3 + row * F::row_bytes(K);
        dr[r] = d1 + row * (K / 32);
        dr[GEMV_ROWS + r] = d3 + row * (K / 32);
    }
    float acc[2 * GEMV_ROWS][NB];
    gemvq_acc<F, NB, 2 * GEMV_ROWS, false>(acc, qr, dr, x, n, K);
    gemv_store_glu<NB>(out, acc, n, N, r0);
}

#define GEMVQ_FUSED_ENTRY(DT, FMT, NB)                                                               \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_##DT##_v2_qkv_n##NB(             \
        float* out0, float* out1, float* out2, const float* x, const FMT::Q* q0, const __half* d0,   \
        const FMT::Q* q1, const __half* d1, const FMT::Q* q2, const __half* d2, int n, int N0,       \
        int N1, int N2, int K) {                                                                     \
        pdl_begin();                                                                                 \
        gemvq_qkv<FMT, NB>(out0, out1, out2, x, q0, d0, q1, d1, q2, d2, n, N0, N1, N2, K);           \
    }                                                                                                \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_##DT##_v2_glu_n##NB(             \
        float* out, const float* x, const FMT::Q* q1, const __half* d1, const FMT::Q* q3,            \
        const __half* d3, int n, int N, int K) {                                                     \
        pdl_begin();                                                                                 \
        gemvq_glu<FMT, NB>(out, x, q1, d1, q3, d3, n, N, K);                                         \
    }

// As the float types' fused kernels; K % 32 == 0.
GEMVQ_FUSED_ENTRY(q8_0, Q8Fmt, 1)
GEMVQ_FUSED_ENTRY(q8_0, Q8Fmt, 2)
GEMVQ_FUSED_ENTRY(q8_0, Q8Fmt, 4)
GEMVQ_FUSED_ENTRY(q8_0, Q8Fmt, 8)
GEMVQ_FUSED_ENTRY(q4_0, Q4Fmt, 1)
GEMVQ_FUSED_ENTRY(q4_0, Q4Fmt, 2)
GEMVQ_FUSED_ENTRY(q4_0, Q4Fmt, 4)
GEMVQ_FUSED_ENTRY(q4_0, Q4Fmt, 8)

// The single-matrix kernels, gemv_q8_0_v2_n<B> and gemv_q4_0_v2_n<B>: one warp per 4 rows, as
// gemv_<dt>_v2. grid (ceil(N / GEMV_ROWS_PER_BLOCK)), block (GEMV_THREADS); n ≤ B.
template <typename F, int NB>
__device__ void gemvq_v2(float* __restrict__ out, const float* __restrict__ x, const typename F::Q* __restrict__ q,
                         const __half* __restrict__ d, int n, int N, int K) {
    const int r0 = (blockIdx.x * (GEMV_THREADS / 32) + (threadIdx.x >> 5)) * GEMV_ROWS;
    if (r0 >= N) return;  // whole warp; no barrier below
    gemvq_rows<F, NB>(out, x, q, d, n, N, K, r0);
}

#define GEMVQ_ENTRY(DT, FMT, NB)                                                                     \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_##DT##_v2_n##NB(                 \
        float* out, const float* x, const FMT::Q* q, const __half* d, int n, int N, int K) {         \
        pdl_begin();                                                                                 \
        gemvq_v2<FMT, NB>(out, x, q, d, n, N, K);                                                    \
    }

GEMVQ_ENTRY(q8_0, Q8Fmt, 1)
GEMVQ_ENTRY(q8_0, Q8Fmt, 2)
GEMVQ_ENTRY(q8_0, Q8Fmt, 4)
GEMVQ_ENTRY(q8_0, Q8Fmt, 8)
GEMVQ_ENTRY(q4_0, Q4Fmt, 1)
GEMVQ_ENTRY(q4_0, Q4Fmt, 2)
GEMVQ_ENTRY(q4_0, Q4Fmt, 4)
GEMVQ_ENTRY(q4_0, Q4Fmt, 8)
