// all.cu — the one translation unit nvcc compiles into kernels/llamacu.fatbin (nvcc --fatbin
// takes a single input per output). Every kernel family is #included here; add new .cu files
// to this list. Build: make kernels.
#include "embed.cu"
#include "rmsnorm.cu"
#include "rope.cu"
#include "kvcache.cu"
#include "attention.cu"
#include "gemv.cu"
#include "gemv_mma.cu"  // after rope.cu: its q/k/v + RoPE kernel uses rope_angle, rope_pair
#include "kquant.cu"  // after gemv.cu: uses its GEMV geometry and helpers
#include "gemm.cu"
#include "swiglu.cu"
#include "add.cu"
#include "gather.cu"
#include "argmax.cu"
#include "topk.cu"
