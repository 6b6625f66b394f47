// emu.h — a small CUDA device shim that lets g++ compile kernels/*.cu for the host, so that the
// real kernel sources run (slowly) on a machine without a GPU. Used by kernels/emu_test.go
// through harness.cpp; common.cuh reaches it through the cuda_fp16.h / cuda_bf16.h next to it.
//
// Execution model
//   - A launch runs its blocks one after another, in blockIdx order (x fastest). No two blocks
//     ever run at the same time, so `__shared__` can simply be `static` storage.
//   - Each CUDA thread of a block is a fiber (ucontext, its own 64 KB stack with a guard page),
//     all on ONE OS thread. harness.cpp's scheduler resumes every runnable fiber once per pass,
//     in a pseudo-random order seeded by blockIdx (so the run is deterministic, but a missing
//     __syncthreads is unlikely to be hidden by a lucky fixed order); a fiber runs until it
//     waits at a barrier or returns. Warps drift apart: each warp of a block sits out a pass
//     with a probability drawn per block (0, 1/4 or 1/2), so that one warp may run ahead of
//     another up to the next __syncthreads, though warp-collective operations would otherwise
//     keep them in step.
//   - __syncthreads() is a block barrier over the threads that have not returned (as on the
//     GPU). Every thread of one barrier phase must call it from the same source line; a thread
//     waiting at another line is reported as divergence (undefined behaviour in CUDA).
//   - __shfl_xor_sync(0xffffffff, ...) is a warp barrier: each lane publishes its value, all 32
//     lanes of the warp must arrive (a lane that returned, a partial warp or another mask is an
//     error), each reads its partner's value, and a second barrier protects the slots.
//   - If no fiber can make progress (e.g. a shuffle that some lane never reaches) the harness
//     reports a deadlock instead of hanging.
//   - Vector loads (__ldg of float2/float4/uint4 and the one inline PTX load in common.cuh) check
//     their alignment, as the GPU faults on a misaligned one. Each device buffer ends at a
//     PROT_NONE page, so reading or writing past its end faults (reported with the block and
//     thread); reads before the start are not caught.
//
// Limits (what this cannot find)
//   - no real concurrency: races between blocks, missing __syncthreads where a write and a read
//     happen to be ordered by the scheduler anyway, memory-model and atomics effects;
//   - tensor cores: mma.sync (common.cuh's mma_m16n8k16) is computed in float from the PTX
//     ISA's fragment layouts, and ldmatrix gathers its fragments from the same ISA's layout; an
//     error in those layouts would be the same here and in a kernel, so the conformance suite on
//     a GPU stays the judge of the mma kernels;
//   - cp.async timing: a copy group lands either when issued or when its thread waits for it
//     (a hash picks, per group); on a GPU it may land any time in between — so a hazard that
//     needs a copy to land at one particular moment between the two may go unseen;
//   - exact libm arithmetic: expf, sqrtf, 1/x are IEEE here, while nvcc --use_fast_math uses
//     approximate __expf, rsqrt and division, and nvcc contracts a*b+c into FMAs (-ffp-contract
//     is off here); the Go test's tolerances are those of the fp32 reference, not bit equality;
//   - performance, occupancy, shared-memory and register limits, __launch_bounds__ (ignored:
//     a launch with more threads than a kernel's bound would fail on the GPU, not here);
//   - uninitialised shared memory: `static` storage keeps the previous block's values.
#pragma once

// Kernels test this to replace inline PTX with the emulator's equivalent (common.cuh).
#define LLAMACU_EMU 1

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <math.h>
#include <stdint.h>

// ---------------------------------------------------------------- qualifiers

#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
// Kernels go to their own section: kernels/emu_test.go lists it (debug/elf) to check that the
// harness's kernel table names every extern "C" __global__ function.
#define __global__ __attribute__((section("emu_kernels"), used, noinline))

// ---------------------------------------------------------------- built-in types

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct __align__(8) float2 { float x, y; };
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(16) uint4 { uint32_t x, y, z, w; };
struct __align__(8) uint2 { uint32_t x, y; };

inline float2 make_float2(float a, float b) { return {a, b}; }
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline uint4 make_uint4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) { return {a, b, c, d}; }
inline uint2 make_uint2(uint32_t a, uint32_t b) { return {a, b}; }
inline float __uint_as_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
inline uint32_t __float_as_uint(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

// IEEE-rounded intrinsics: the host operations are IEEE already (no FMA contraction here).
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }

using std::max;
using std::min;

// ---------------------------------------------------------------- the execution model (harness.cpp)

extern dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace emu {
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void syncthreads(const char* file, int line);
uint64_t shfl_xor(uint64_t bits, unsigned mask, int lane_mask, const char* file, int line);
// syncwarp is __syncwarp(): a barrier over the 32 lanes of the calling thread's warp.
void syncwarp(const char* file, int line);
// mma_m16n8k16 is the warp-collective mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32:
// every lane of the warp must call it (a warp barrier); each lane passes its A (4 × 32-bit: 8
// halves), B (2 × 32-bit) and C/D (4 floats) fragments in the PTX ISA's layout, gets its D back
// in c. Products are exact and summed in float (a tensor core's order and truncation differ).
// bf16: A and B hold bf16 (mma…f32.bf16.bf16.f32) instead of fp16.
void mma_m16n8k16(float* c, const uint32_t* a, const uint32_t* b, bool bf16, const char* file, int line);

// ldmatrix_x4 is the warp-collective ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 (a warp
// barrier, like mma): lane l passes the address of row l % 8 of matrix l / 8 and gets one 32-bit
// fragment of each of the four matrices in r, in the PTX ISA's layout (common.cuh).
void ldmatrix_x4(uint32_t* r, const void* p, bool trans, const char* file, int line);
// cp.async: a thread's copies are queued in groups. Each group lands in shared memory either
// when it is issued or only when the thread waits for it (cp_async_wait), chosen per group by a
// hash (harness.cpp's lands_early), so that a kernel that reads a stage before waiting for it, or
// without the barrier after, reads stale data here too, and one that copies into a stage other
// threads may still be reading overwrites it here too. The source is read when the copy is
// issued.
void cp_async16(void* dst, const void* src, bool valid);
void cp_async_commit();
void cp_async_wait(int n);
void async_reset(unsigned t);  // empties thread t's queue (the harness, at each block's start)

inline void check_align(const void* p, size_t a, const char* what) {
    if (reinterpret_cast<uintptr_t>(p) % a != 0) fail("misaligned %s load at %p (needs %zu bytes)", what, p, a);
}

// prefetch is prefetch.global.L2: nothing to fetch here, but p is read (one byte) so that a
// prefetch past an allocation's end faults on its guard page, as a load would.
inline void prefetch(const void* p) { (void)*static_cast<const volatile char*>(p); }

// ptx runs the inline PTX of common.cuh's load16_stream, load8_stream and load4_stream, the only
// asm statements in the kernels: 16, 8 or 4 bytes through the non-coherent path, i.e. a plain
// aligned load here. Anything else aborts.
inline void ptx(const char* text, uint4& r, const void* p) {
    if (!strstr(text, "ld.global.nc.L1::no_allocate.v4.u32")) fail("unsupported inline PTX: %s", text);
    check_align(p, 16, "ld.global.nc.v4");
    memcpy(&r, p, 16);
}
inline void ptx(const char* text, uint2& r, const void* p) {
    if (!strstr(text, "ld.global.nc.L1::no_allocate.v2.u32")) fail("unsupported inline PTX: %s", text);
    check_align(p, 8, "ld.global.nc.v2");
    memcpy(&r, p, 8);
}
inline void ptx(const char* text, uint32_t& r, const void* p) {
    if (!strstr(text, "ld.global.nc.L1::no_allocate.u32")) fail("unsupported inline PTX: %s", text);
    check_align(p, 4, "ld.global.nc");
    memcpy(&r, p, 4);
}
}  // namespace emu

#define __syncthreads() emu::syncthreads(__FILE__, __LINE__)

// atomicAdd: fibers switch only at barriers, so a plain read-modify-write is atomic here.
template <typename T> inline T atomicAdd(T* p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}

template <typename T> inline T emu_shfl_xor(unsigned mask, T v, int lane_mask, const char* file, int line) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 64 bits");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = emu::shfl_xor(bits, mask, lane_mask, file, line);
    memcpy(&v, &bits, sizeof v);
    return v;
}
#define __shfl_xor_sync(mask, v, o) emu_shfl_xor((mask), (v), (o), __FILE__, __LINE__)

// __threadfence: blocks run one after another here, so every write is already visible.
inline void __threadfence() {}

// __ldcg (load through L2 only, skipping a possibly stale L1) is a plain load here.
template <typename T> inline T __ldcg(const T* p) {
    emu::check_align(p, alignof(T), "__ldcg");
    return *p;
}

template <typename T> inline T __ldg(const T* p) {
    emu::check_align(p, alignof(T), "__ldg");
    return *p;
}

// common.cuh's load16_stream is `asm volatile("ld.global.nc…" : outputs : "l"(p))` writing r.
// `asm` vanishes and `volatile(…)` (only ever followed by '(' there) becomes emu::ptx on the
// stringised operands, r and p. Defined last, after every standard header, which it must not
// reach; harness.cpp #undefs both after including the kernels.
#define asm
#define volatile(...) emu::ptx(#__VA_ARGS__, r, p)
