//go:build cuda || cudaemu

package gpu

import (
	"fmt"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/model"
)

// SwiGLU: out[i,j] = silu(gate[i,j])·up[i,j], silu(x) = x/(1+e^−x). All (n, ffn); out may be gate
// or up. kernels/swiglu.cu: float4 v2 when n·ffn % 4 == 0, else v1.
func (b *Backend) SwiGLU(out, gate, up model.Buffer, n int) {
	ob, gb, ub := buf(out), buf(gate), buf(up)
	checkRows("SwiGLU", n, ob, gb, ub)
	if ob.cols != gb.cols || ub.cols != gb.cols {
		panic(fmt.Sprintf("gpu: SwiGLU: out (%d, %d), gate (%d, %d), up (%d, %d)", n, ob.cols, n, gb.cols, n, ub.cols))
	}
	total := n * gb.cols
	if total == 0 || !b.ok() {
		return
	}
	args := []cuda.Arg{cuda.Ptr(ob.ptr), cuda.Ptr(gb.ptr), cuda.Ptr(ub.ptr), i32(total)}
	if !b.opts.Naive && total%4 == 0 {
		b.launch(b.k.swiglu, gridFor(total/4, 256), cuda.Dim3{X: 256}, args...)
		return
	}
	b.launch(b.k.swigluV1, gridFor(total, 256), cuda.Dim3{X: 256}, args...)
}
