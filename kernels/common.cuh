// common.cuh: helpers shared by every llamacu kernel (compiled into one translation unit, all.cu).
//
// - warp and block reductions (sum, max, (max, argmax));
// - 16-byte vector loads and their conversion to float for the three element types the kernels
//   read (float, __half, __nv_bfloat16), written with bit operations that compile on CUDA 11.8 for
//   every target of the fatbin (sm_80 … sm_90, compute_90);
// - the paged-KV-cache slot formula shared by kvcache.cu, rope.cu and attention.cu;
// - the tensor-core instruction the kernels use (mma.sync m16n8k16, fp16 in, fp32 out), the
//   shared-memory fragment loads that feed it (ldmatrix) and asynchronous global-to-shared copies
//   (cp.async), each with the emulator's equivalent (emu/emu.h).
//
// Conventions of every kernel file:
// - entry points are extern "C" and named <op>_<dtype>[_vN] (DESIGN.md); v1 is the naive,
//   readable version and the spec on the GPU side;
// - every parameter is a pointer or a 32-bit int/float (the Go side passes each in its own 8-byte
//   slot, cuda.Arg); no struct is passed by value;
// - activations are fp32 (n, cols) row-major, n rows used of a larger buffer;
// - shapes are checked on the host (gpu/*.go): kernels trust them and only guard their own tails.
#pragma once

#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

#define LLAMACU_DEVICE __device__ __forceinline__

// ---------------------------------------------------------------- programmatic dependent launch

// pdl_begin is every kernel's first statement (or pdl_begin_after, below; gpu/kernelsig_test.go
// checks it). Launched with programmatic stream serialization (gpu Options.PDL, sm_90), a kernel
// may start while the one before it in the stream is still running; pdl_begin waits until the
// grids it depends on have completed and their writes are visible (griddepcontrol.wait), and
// only then lets the next kernel be scheduled (griddepcontrol.launch_dependents) — whose own
// pdl_begin waits for this one. So the next kernel's blocks take the SMs this one's last wave
// leaves idle and its launch latency overlaps this one's tail; no kernel reads or writes what
// its predecessor may write before that one is done. Launched without the attribute, or before
// sm_90, it does nothing (the emulator too).
LLAMACU_DEVICE void pdl_begin() {
#if !defined(LLAMACU_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// pdl_begin_after(f) is pdl_begin with f run before the wait: f may only touch memory that no
// kernel writes — the weights — e.g. ask L2 for them (prefetch_l2), so that under PDL a kernel's
// first weight loads overlap the last wave of the kernel before it instead of starting when it
// ends. Without PDL, f simply runs first. gpu/kernelsig_test.go accepts it as a kernel's first
// statement in place of pdl_begin().
template <typename F> LLAMACU_DEVICE void pdl_begin_after(F&& f) {
    f();
    pdl_begin();
}

// prefetch_l2 asks L2 for the line holding p (prefetch.global.L2: a hint, nothing waits for
// it). p must lie inside an allocation; the emulator checks that.
LLAMACU_DEVICE void prefetch_l2(const void* p) {
#ifdef LLAMACU_EMU
    emu::prefetch(p);
#else
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#endif
}

// ---------------------------------------------------------------- scalar conversions

// to_f32 widens one stored element to float.
LLAMACU_DEVICE float to_f32(float x) { return x; }
LLAMACU_DEVICE float to_f32(__half x) { return __half2float(x); }
LLAMACU_DEVICE float to_f32(__nv_bfloat16 x) {
    // bf16 is the top half of a binary32: exact, and no intrinsic needed.
    return __uint_as_float(((uint32_t)__bfloat16_as_ushort(x)) << 16);
}

// from_f32<T> narrows a float to a stored element (round to nearest even).
template <typename T> LLAMACU_DEVICE T from_f32(float x);
template <> LLAMACU_DEVICE float from_f32<float>(float x) { return x; }
template <> LLAMACU_DEVICE __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> LLAMACU_DEVICE __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// Unpack 32 bits holding two fp16 / bf16 values (element 0 in the low half, as in memory).
LLAMACU_DEVICE float2 h2_to_f2(uint32_t u) {
    __half2 h = *reinterpret_cast<__half2*>(&u);
    return __half22float2(h);
}
LLAMACU_DEVICE float2 bf2_to_f2(uint32_t u) {
    return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
}

// pack2<T> rounds lo and hi to T (fp16 or bf16) and packs them into 32 bits, lo in the low half
// (the lower index, as in memory).
template <typename T> LLAMACU_DEVICE uint32_t pack2(float lo, float hi);
template <> LLAMACU_DEVICE uint32_t pack2<__half>(float lo, float hi) {
    return (uint32_t)__half_as_ushort(__float2half_rn(lo)) |
           ((uint32_t)__half_as_ushort(__float2half_rn(hi)) << 16);
}
template <> LLAMACU_DEVICE uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
    return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
           ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
}

// ---------------------------------------------------------------- 16-byte vectors

// Vec16<T> describes a 16-byte vector of T: N elements, loaded as one uint4 (LDG.128).
template <typename T> struct Vec16 { static constexpr int N = 16 / sizeof(T); };

// load16 reads 16 bytes through the read-only (non-coherent) path. p must be 16-byte aligned.
LLAMACU_DEVICE uint4 load16(const void* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }

// load16_stream reads 16 bytes that are used once (weights in a GEMV): the L1 keeps no copy, so
// it stays free for the activations that every warp re-reads.
LLAMACU_DEVICE uint4 load16_stream(const void* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

// load8_stream and load4_stream are load16_stream for 8 and 4 bytes (quantised rows in GEMV v4).
LLAMACU_DEVICE uint2 load8_stream(const void* p) {
    uint2 r;
    asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(r.x), "=r"(r.y) : "l"(p));
    return r;
}
LLAMACU_DEVICE uint32_t load4_stream(const void* p) {
    uint32_t r;
    asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(r) : "l"(p));
    return r;
}

// unpack16<T> converts a 16-byte vector of T to Vec16<T>::N floats.
template <typename T> LLAMACU_DEVICE void unpack16(uint4 u, float* f);
template <> LLAMACU_DEVICE void unpack16<float>(uint4 u, float* f) {
    f[0] = __uint_as_float(u.x);
    f[1] = __uint_as_float(u.y);
    f[2] = __uint_as_float(u.z);
    f[3] = __uint_as_float(u.w);
}
template <> LLAMACU_DEVICE void unpack16<__half>(uint4 u, float* f) {
    float2 a = h2_to_f2(u.x), b = h2_to_f2(u.y), c = h2_to_f2(u.z), d = h2_to_f2(u.w);
    f[0] = a.x; f[1] = a.y; f[2] = b.x; f[3] = b.y;
    f[4] = c.x; f[5] = c.y; f[6] = d.x; f[7] = d.y;
}
template <> LLAMACU_DEVICE void unpack16<__nv_bfloat16>(uint4 u, float* f) {
    float2 a = bf2_to_f2(u.x), b = bf2_to_f2(u.y), c = bf2_to_f2(u.z), d = bf2_to_f2(u.w);
    f[0] = a.x; f[1] = a.y; f[2] = b.x; f[3] = b.y;
    f[4] = c.x; f[5] = c.y; f[6] = d.x; f[7] = d.y;
}

// load_f32x<N> reads N consecutive floats (N = 4 or 8) with 16-byte loads through L1.
template <int N> LLAMACU_DEVICE void load_f32x(const float* p, float* f) {
#pragma unroll
    for (int i = 0; i < N; i += 4) {
        float4 v = __ldg(reinterpret_cast<const float4*>(p + i));
        f[i] = v.x; f[i + 1] = v.y; f[i + 2] = v.z; f[i + 3] = v.w;
    }
}

// ---------------------------------------------------------------- reductions

LLAMACU_DEVICE float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

LLAMACU_DEVICE float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// block_sum returns the sum of v over the block to every thread. scratch holds 32 floats;
// blockDim.x is a multiple of 32 (≤ 1024). It begins with a barrier, so scratch may be reused by
// consecutive calls.
LLAMACU_DEVICE float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0.f;
    return warp_sum(v);
}

// block_max is block_sum's twin for the maximum.
LLAMACU_DEVICE float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : -INFINITY;
    return warp_max(v);
}

// argmax_merge keeps the larger value, and of equal values the lower index (NaN never wins).
LLAMACU_DEVICE void argmax_merge(float& v, int& i, float v2, int i2) {
    if (v2 > v || (v2 == v && i2 < i)) {
        v = v2;
        i = i2;
    }
}

// ---------------------------------------------------------------- SwiGLU

// silu_mul is SwiGLU's element, llama2.c's arithmetic: silu(g)·u = g · (1/(1+e^−g)) · u
// (swiglu.cu, and the epilogue of gemv.cu's fused gate/up GEMV).
LLAMACU_DEVICE float silu_mul(float g, float u) { return g * (1.f / (1.f + expf(-g))) * u; }

// ---------------------------------------------------------------- Q4_0

// q4_at is element k of a row of Q4_0 nibbles as resident on the device (gemv.cu: each block
// of 32 is 16 bytes, byte j holding element j in its low nibble and j+16 in its high one),
// before the block's scale: the nibble minus 8.
LLAMACU_DEVICE int q4_at(const uint8_t* row, int k) {
    const uint8_t byte = row[(k / 32) * 16 + (k % 16)];
    return (k % 32 < 16 ? (byte & 0xf) : (byte >> 4)) - 8;
}

// ---------------------------------------------------------------- paged KV cache

// kv_offset is the element offset in K or V, stored (layers, num_blocks, block_size, kv_heads,
// head_dim), of (layer, physical block blk, slot) — the start of that token's kv_heads·head_dim
// row. 64-bit: a 70B cache exceeds 2³¹ elements.
LLAMACU_DEVICE int64_t kv_offset(int layer, int num_blocks, int block_size, int kv_dim, int blk,
                                 int slot) {
    return (((int64_t)layer * num_blocks + blk) * block_size + slot) * (int64_t)kv_dim;
}

// ---------------------------------------------------------------- tensor cores (sm_80 and later)

// pack_half2 rounds lo and hi to fp16 and packs them into one 32-bit register, lo in the low
// half: the element with the lower index, as in memory and in mma fragments.
LLAMACU_DEVICE uint32_t pack_half2(float lo, float hi) { return pack2<__half>(lo, hi); }

// pack_halves packs two stored fp16 values (lo in the low half).
LLAMACU_DEVICE uint32_t pack_halves(__half lo, __half hi) {
    return (uint32_t)__half_as_ushort(lo) | ((uint32_t)__half_as_ushort(hi) << 16);
}

// mma_m16n8k16: c (16 × 8, fp32) += a (16 × 16, fp16, row-major) · b (16 × 8, fp16, col-major)
// for one warp; every lane calls it with its fragments. With gid = lane / 4 and tig = lane % 4
// (PTX ISA, "Matrix Fragments for mma.m16n8k16"):
//   a[0] = A[gid][2tig, 2tig+1]   a[1] = A[gid+8][2tig, 2tig+1]
//   a[2] = A[gid][2tig+8, +9]     a[3] = A[gid+8][2tig+8, +9]
//   b[0] = B[2tig, 2tig+1][gid]   b[1] = B[2tig+8, 2tig+9][gid]
//   c    = C[gid][2tig], C[gid][2tig+1], C[gid+8][2tig], C[gid+8][2tig+1]
LLAMACU_DEVICE void mma_m16n8k16(float* c, const uint32_t* a, const uint32_t* b) {
#ifdef LLAMACU_EMU
    emu::mma_m16n8k16(c, a, b, false, __FILE__, __LINE__);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// mma_m16n8k16_bf16 is mma_m16n8k16 with bf16 A and B (same fragment layout).
LLAMACU_DEVICE void mma_m16n8k16_bf16(float* c, const uint32_t* a, const uint32_t* b) {
#ifdef LLAMACU_EMU
    emu::mma_m16n8k16(c, a, b, true, __FILE__, __LINE__);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// ---------------------------------------------------------------- fragment loads, async copies

#ifndef LLAMACU_EMU
// smem_addr is p's address in the shared window, as ldmatrix and cp.async take it.
LLAMACU_DEVICE unsigned smem_addr(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
#endif

// ldmatrix_x4 loads four 8 × 8 fp16 matrices from shared memory, one 32-bit fragment of each
// per lane (ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16). Lane l passes p = the address of
// row l % 8 of matrix l / 8 (16-byte aligned); with gid = l / 4, tig = l % 4, r[m] is
//   TRANS false: matrix m's (row gid, cols 2tig, 2tig+1) — an mma B fragment of a matrix whose
//                rows are B's columns (K as stored: rows are keys, S = Q·Kᵀ);
//   TRANS true:  matrix m's (rows 2tig, 2tig+1; col gid) — the B fragment of a matrix stored
//                with B's rows as rows (V as stored: O = P·V).
template <bool TRANS> LLAMACU_DEVICE void ldmatrix_x4(uint32_t (&r)[4], const __half* p) {
#ifdef LLAMACU_EMU
    emu::ldmatrix_x4(r, p, TRANS, __FILE__, __LINE__);
#else
    if constexpr (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(smem_addr(p)));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(smem_addr(p)));
#endif
}

// cp_async16 starts a copy of 16 bytes from global src to shared dst (cp.async.cg: through L2
// only, no register round trip), or of 16 zero bytes when valid is false (src is not read). The
// copies a thread started land when it waits for their group (cp_async_commit, cp_async_wait);
// the block then needs __syncthreads before other threads read them.
LLAMACU_DEVICE void cp_async16(void* dst, const void* src, bool valid) {
#ifdef LLAMACU_EMU
    emu::cp_async16(dst, src, valid);
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"
                 :
                 : "r"(smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
#endif
}

// cp_async_commit closes the group of the copies this thread started since the last commit.
LLAMACU_DEVICE void cp_async_commit() {
#ifdef LLAMACU_EMU
    emu::cp_async_commit();
#else
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

// warp_sync is __syncwarp: the lanes of a warp meet, and the shared-memory writes each made
// before it are visible to the others after it. Every lane of the warp must reach it.
LLAMACU_DEVICE void warp_sync() {
#ifdef LLAMACU_EMU
    emu::syncwarp(__FILE__, __LINE__);
#else
    __syncwarp();
#endif
}

// cp_async_wait blocks until at most N of this thread's committed groups are still in flight.
template <int N> LLAMACU_DEVICE void cp_async_wait() {
#ifdef LLAMACU_EMU
    emu::cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}
