//go:build cuda || cudaemu

package gpu

import (
	"fmt"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/model"
)

// Argmaxer is the optional greedy fast path: the index of each row's largest value computed on
// the device, so that only 4 bytes per row cross to the host instead of the logits row. Its
// unfused equivalent is Read followed by a host argmax (lowest index among equal maxima).
type Argmaxer interface {
	// Argmax sets dst[i] = argmax_j x[i, j] for i < n (len(dst) ≥ n) after all queued work, and
	// returns any device error, as Read does.
	Argmax(dst []int32, x model.Buffer, n int) error
}

var _ Argmaxer = (*Backend)(nil)

// Argmax implements Argmaxer with kernels/argmax.cu.
func (b *Backend) Argmax(dst []int32, x model.Buffer, n int) error {
	xb := buf(x)
	if n < 0 || n > xb.rows || len(dst) < n {
		return fmt.Errorf("gpu: argmax of %d rows of a (%d, %d) buffer into %d ints", n, xb.rows, xb.cols, len(dst))
	}
	if b.err != nil || n == 0 {
		return b.err
	}
	out := b.ensure(&b.argOut, int64(n)*4)
	b.launch(b.k.argmax, cuda.Dim3{X: n}, cuda.Dim3{X: 1024}, cuda.Ptr(out), cuda.Ptr(xb.ptr), i32(xb.cols))
	if b.err != nil {
		return b.err
	}
	// A recorded step must run before its results are read; the copy waits for all queued work.
	b.flush()
	b.fail(b.ctx.CopyDtoH(int32Bytes(dst[:n]), out))
	b.rec.pending = b.rec.pending && b.err != nil
	return b.err
}
