// add.cu — residual add.
//
//   x[k] += y[k]   for k < total = n·dim (x, y (n, dim) fp32, contiguous rows)
//
// Versions
//   add_f32_v1: one thread per element, grid-stride loop.
//   add_f32   : (v2) float4 per thread when total % 4 == 0 (the host picks v1 otherwise).
//
// Speed: 12 bytes per element (two reads, one write); memory-bound, a few µs for a decode step.
// Checked by model/modeltest (Add): go test -tags cuda ./gpu -run Conformance/Add
#include "common.cuh"

// grid (ceil(total/256)), block (256).
extern "C" __global__ void add_f32_v1(float* x, const float* y, int total) {
    pdl_begin();
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < total; k += gridDim.x * blockDim.x)
        x[k] += y[k];
}

// grid (ceil(total/4/256)), block (256); total % 4 == 0.
extern "C" __global__ void add_f32(float* x, const float* y, int total) {
    pdl_begin();
    float4* x4 = reinterpret_cast<float4*>(x);
    const float4* y4 = reinterpret_cast<const float4*>(y);
    const int n4 = total >> 2;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < n4; k += gridDim.x * blockDim.x) {
        float4 a = x4[k], b = __ldg(y4 + k);
        a.x += b.x; a.y += b.y; a.z += b.z; a.w += b.w;
        x4[k] = a;
    }
}
