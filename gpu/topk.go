//go:build cuda || cudaemu

package gpu

import (
	"fmt"
	"unsafe"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
)

var _ model.TopKer = (*Backend)(nil)

// TopK implements model.TopKer with kernels/topk.cu: topk_f32 (radix select), or topk_f32_v1
// under Options.Naive. One block per row; the k values and k ids of every row come back in one
// copy of 8·n·k bytes.
func (b *Backend) TopK(vals []float32, ids []int32, x model.Buffer, n, k int) error {
	xb := buf(x)
	if n < 0 || n > xb.rows || k < 1 || k > min(xb.cols, sample.MaxTopK) || len(vals) < n*k || len(ids) < n*k {
		return fmt.Errorf("gpu: top-%d of %d rows of a (%d, %d) buffer into %d values and %d ids (k must be in [1, %d])",
			k, n, xb.rows, xb.cols, len(vals), len(ids), min(xb.cols, sample.MaxTopK))
	}
	if b.err != nil || n == 0 {
		return b.err
	}
	m := n * k
	out := b.ensure(&b.topOut, int64(m)*8) // vals (n, k) fp32, then ids (n, k) int32
	f := b.k.topk
	if b.opts.Naive {
		f = b.k.topkV1
	}
	b.launch(f, cuda.Dim3{X: n}, cuda.Dim3{X: 1024}, cuda.Ptr(out), cuda.Ptr(out+cuda.DevicePtr(4*m)), cuda.Ptr(xb.ptr), i32(xb.cols), i32(k))
	if b.err != nil {
		return b.err
	}
	if len(b.topHost) < 2*m {
		b.topHost = make([]int32, 2*m)
	}
	host := b.topHost[:2*m]
	// A recorded step must run before its results are read; the copy waits for all queued work.
	b.flush()
	b.fail(b.ctx.CopyDtoH(int32Bytes(host), out))
	b.rec.pending = b.rec.pending && b.err != nil
	copy(vals[:m], unsafe.Slice((*float32)(unsafe.Pointer(&host[0])), m))
	copy(ids[:m], host[m:])
	return b.err
}
