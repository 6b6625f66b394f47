//go:build cuda || cudaemu

package gpu

import (
	"fmt"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/model"
)

// Add: x[i,:] += y[i,:]. x, y (n, dim). kernels/add.cu: float4 v2 when n·dim % 4 == 0, else v1.
func (b *Backend) Add(x, y model.Buffer, n int) {
	xb, yb := buf(x), buf(y)
	checkRows("Add", n, xb, yb)
	if xb.cols != yb.cols {
		panic(fmt.Sprintf("gpu: Add: x (%d, %d) += y (%d, %d)", n, xb.cols, n, yb.cols))
	}
	total := n * xb.cols
	if total == 0 || !b.ok() {
		return
	}
	args := []cuda.Arg{cuda.Ptr(xb.ptr), cuda.Ptr(yb.ptr), i32(total)}
	if !b.opts.Naive && total%4 == 0 {
		b.launch(b.k.add, gridFor(total/4, 256), cuda.Dim3{X: 256}, args...)
		return
	}
	b.launch(b.k.addV1, gridFor(total, 256), cuda.Dim3{X: 256}, args...)
}
