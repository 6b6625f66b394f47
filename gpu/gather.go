//go:build cuda || cudaemu

package gpu

import (
	"fmt"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/model"
)

// GatherRows: out[i,:] = x[rows[i],:]. out (len(rows), cols), x (B, cols). out is not x.
// kernels/gather.cu.
func (b *Backend) GatherRows(out, x model.Buffer, rows []int32) {
	ob, xb := buf(out), buf(x)
	checkRows("GatherRows", len(rows), ob)
	if ob.cols != xb.cols || ob == xb {
		panic(fmt.Sprintf("gpu: GatherRows: out (%d, %d) from x (%d, %d) (out must not be x)", len(rows), ob.cols, xb.rows, xb.cols))
	}
	for _, r := range rows {
		if r < 0 || int(r) >= xb.rows {
			panic(fmt.Sprintf("gpu: GatherRows: row %d outside x (%d, %d)", r, xb.rows, xb.cols))
		}
	}
	if len(rows) == 0 || !b.ok() {
		return
	}
	vec4 := 0
	if xb.cols%4 == 0 {
		vec4 = 1
	}
	dev := b.upload(&b.rows, rows)
	b.launch(b.k.gather, cuda.Dim3{X: len(rows)}, cuda.Dim3{X: 256},
		cuda.Ptr(ob.ptr), cuda.Ptr(xb.ptr), cuda.Ptr(dev), i32(xb.cols), i32(vec4))
}
