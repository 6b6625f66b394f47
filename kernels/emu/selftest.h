// selftest.h — kernels that exist only in the emulator (harness.cpp includes this after
// ../all.cu), for kernels/emu_test.go to check that the emulator finds the shared-memory hazards
// it claims to (emu.h): each has a correct form and racy forms, chosen by an argument.
#pragma once
#include "../common.cuh"

// emu_selftest_pipeline: the double-buffered cp.async loop of the v4 attention kernels, reduced.
// 64 threads (2 warps); tile k is in[256k, 256k + 256), one 16-byte cp.async per thread into
// stage k % 2. Each thread adds the 4 floats that the other warp's thread t ± 32 copied, with a
// warp shuffle (a warp barrier, as mma and ldmatrix are) between reads:
//
//   out[b·64 + t] = Σ_k Σ_{j<4} in[256k + (4t + 128 + j) % 256]
//
// racy & 1: no __syncthreads at the end of an iteration, so a warp that runs ahead may copy tile
//           k + 2 into the stage the other warp still reads (write after read);
// racy & 2: no cp_async_wait before the barrier, so the stage may be read before its copies land
//           (read after write).
extern "C" __global__ void emu_selftest_pipeline(float* out, const float* in, int tiles, int racy) {
    __shared__ __align__(16) float st[2][256];
    const int t = threadIdx.x;
    auto load = [&](int s, int k) {
        cp_async16(&st[s][4 * t], in + 256 * k + 4 * t, true);
        cp_async_commit();
    };
    load(0, 0);
    float acc = 0.f;
    for (int k = 0; k < tiles; k++) {
        if (k + 1 < tiles) load((k + 1) & 1, k + 1);
        if (!(racy & 2)) {
            if (k + 1 < tiles)
                cp_async_wait<1>();
            else
                cp_async_wait<0>();
        }
        __syncthreads();
        for (int j = 0; j < 4; j++) {
            acc += st[k & 1][(4 * t + 128 + j) % 256];
            acc += __shfl_xor_sync(0xffffffffu, 0.f, 1);
        }
        if (!(racy & 1)) __syncthreads();
    }
    out[blockIdx.x * 64 + t] = acc;
}
