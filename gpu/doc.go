// Package gpu is the CUDA implementation of model.Backend: fp32 activation buffers in device
// memory, weights uploaded once in fp16/bf16 (or fp32; Q8_0, Q4_0, Q4_K, Q5_K, Q6_K stay quantised), a paged
// KV cache in fp16 (or fp32) with the same layout as the cpu reference, and one launcher per
// kernel family of the kernels package (gpu/rmsnorm.go drives kernels/rmsnorm.cu, and so on).
// It also offers the forward pass's optional fast paths: the fused decode ops (fused.go: q/k/v
// with RoPE and the K/V store in one GEMV, gate/up with SwiGLU, add with RMSNorm, and at one
// row the add and RMSNorm folded into the q/k/v and gate/up GEMVs: foldnorm.go), the fused
// RoPE and K/V store, prefill's attention prologue and feed-forward block with cuBLAS's outputs
// kept in the weight dtype (fused.go: MatMulQKVRoPEStoreKV, MatMulFFN), top-k on the device
// (topk.go), decode steps of 2–8 rows on the tensor cores (gemv_mma.go: GEMV v4, for every
// decode matmul and its fused forms), steps run as CUDA graphs (graph.go), and programmatic
// dependent launch (Options.PDL).
//
// Every file but this one is built only with -tags cuda (see the cuda package: linking
// gorgonia.org/cu needs libcuda.so.1 and exits without a GPU), so the default build has an empty
// package here. The backend is registered for the CLI as "cuda" by cmd/llamacu/backend_cuda.go.
//
// Errors: shape mismatches are programmer errors and panic, naming the shapes; device errors
// (a failed launch, an asynchronous fault) are sticky: the first one is kept, later ops do
// nothing, and Read returns it.
//
// Batch metadata: ops that take host int32 slices (Embed's tokens, RoPE's positions,
// GatherRows' rows, a Batch's positions and block tables) keep the last values they uploaded and
// upload again only when the contents differ, with an asynchronous copy on the compute stream
// (so it is ordered after the kernels still reading the previous values). In a forward step the
// batch is packed and uploaded once, by the first StoreKV or Attention call of the step (layer 0),
// and every later layer finds the same contents; the comparison costs O(B + block-table length)
// host work per call and no device traffic.
package gpu
