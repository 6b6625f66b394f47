// argmax.cu — greedy sampling on the device.
//
//   out[i] = argmax_j x[i, j]   (the lowest j among equal maxima; NaN never wins)
//                               out (n) int32; x (n, cols) fp32 logits
//
// Versions
//   argmax_f32 (v1, the only one): one block of 1024 threads per row: a strided scan keeping
//              (max, index), then a warp-shuffle and shared-memory merge.
//
// Speed: reads n·cols·4 bytes (128 KB per row for a 32000 vocabulary) and returns 4 bytes per row
// instead of the whole logits row: what it saves is the device-to-host copy, not compute.
// Checked against a host argmax in gpu/conformance_test.go (TestArgmax).
#include "common.cuh"

// grid (n), block (1024).
extern "C" __global__ void argmax_f32(int* __restrict__ out, const float* __restrict__ x,
                                      int cols) {
    pdl_begin();
    __shared__ float sv[32];
    __shared__ int si[32];
    const float* row = x + (int64_t)blockIdx.x * cols;
    float best = -INFINITY;
    int bi = 0x7fffffff;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) argmax_merge(best, bi, row[j], j);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, best, o);
        int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
        argmax_merge(best, bi, v2, i2);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sv[warp] = best;
        si[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        const int nw = blockDim.x >> 5;
        best = lane < nw ? sv[lane] : -INFINITY;
        bi = lane < nw ? si[lane] : 0x7fffffff;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float v2 = __shfl_xor_sync(0xffffffffu, best, o);
            int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
            argmax_merge(best, bi, v2, i2);
        }
        // A row of NaN (or −inf) only: report column 0 rather than an impossible index.
        if (lane == 0) out[blockIdx.x] = bi < cols ? bi : 0;
    }
}
