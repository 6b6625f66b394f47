// gather.cu — row gather (the rows whose logits are wanted).
//
//   out[i, :] = x[rows[i], :]     out (len(rows), cols), x (B, cols), fp32
//
// Versions
//   gather_rows_f32 (v1, the only one): one block per output row, float4 copies when cols % 4 == 0
//                   (vec4 = 1), else scalar. Rows are validated on the host (gpu/gather.go).
//
// Speed: 8·len(rows)·cols bytes; negligible (one row per sequence per step).
// Checked by model/modeltest (GatherRows): go test -tags cuda ./gpu -run Conformance/GatherRows
#include "common.cuh"

// grid (len(rows)), block (256).
extern "C" __global__ void gather_rows_f32(float* __restrict__ out, const float* __restrict__ x,
                                           const int* __restrict__ rows, int cols, int vec4) {
    pdl_begin();
    const int i = blockIdx.x;
    const int64_t src = (int64_t)rows[i] * cols, dst = (int64_t)i * cols;
    if (vec4) {
        const float4* s = reinterpret_cast<const float4*>(x + src);
        float4* d = reinterpret_cast<float4*>(out + dst);
        for (int j = threadIdx.x; j < (cols >> 2); j += blockDim.x) d[j] = s[j];
    } else {
        for (int j = threadIdx.x; j < cols; j += blockDim.x) out[dst + j] = x[src + j];
    }
}
