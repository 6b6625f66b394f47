//go:build cuda || cudaemu

package gpu

import (
	"fmt"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// rmsnormMaxV is RMSNORM_MAXV in kernels/rmsnorm.cu: float4s per thread of the fast kernel.
const rmsnormMaxV = 4

// RMSNorm: out[i,:] = x[i,:] / sqrt(mean_j(x[i,j]²) + eps) · w. out, x (n, dim); w (dim) F32.
// out may be x. kernels/rmsnorm.cu: v2 (one block sized to the row, x in registers) when
// dim % 4 == 0 and dim ≤ 16384, else v1.
func (b *Backend) RMSNorm(out, x model.Buffer, w model.Weight, n int, eps float32) {
	ob, xb, ww := buf(out), buf(x), wt(w)
	checkRows("RMSNorm", n, ob, xb)
	dim := xb.cols
	if ob.cols != dim || ww.rows*ww.cols != dim || ww.dtype != tensor.F32 {
		panic(fmt.Sprintf("gpu: RMSNorm: out (%d, %d), x (%d, %d), w %v %v (want F32 (%d))", n, ob.cols, n, dim, ww.dtype, ww.shape, dim))
	}
	if n == 0 || !b.ok() {
		return
	}
	args := []cuda.Arg{cuda.Ptr(ob.ptr), cuda.Ptr(xb.ptr), cuda.Ptr(ww.ptr), i32(dim), cuda.F32(eps)}
	d4 := dim / 4
	if !b.opts.Naive && dim%4 == 0 && d4 <= rmsnormMaxV*1024 {
		threads := min(1024, (d4+31)/32*32) // one float4 per thread up to dim 4096
		b.launch(b.k.rmsnorm, cuda.Dim3{X: n}, cuda.Dim3{X: threads}, args...)
		return
	}
	b.launch(b.k.rmsnormV1, cuda.Dim3{X: n}, cuda.Dim3{X: 256}, args...)
}
