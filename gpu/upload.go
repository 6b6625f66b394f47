//go:build cuda || cudaemu

package gpu

import (
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// Weight is a parameter tensor resident on the device: F32, F16, BF16, or kept quantised, Q8_0,
// Q4_0, Q4_K, Q5_K or Q6_K (see Options.Weights for which dtype a file tensor becomes; the other
// ggml types a GGUF file may hold, Q4_1, Q5_0, Q5_1, Q2_K and Q3_K, are decoded on the host and
// stored as Options.Weights). Vectors are always F32.
type Weight struct {
	name       string
	shape      []int
	dtype      tensor.DType // resident dtype
	rows, cols int
	// ptr is (rows, cols) of dtype, or of a quantised type: Q8_0 int8 q (rows, cols); Q4_0 nibbles
	// (rows, cols/2); Q4_K, Q5_K the file's 144- and 176-byte blocks; Q6_K 208-byte blocks
	// without their d.
	ptr cuda.DevicePtr
	// scales: Q8_0, Q4_0 the fp16 d (rows, cols/32), Q6_K the fp16 d (rows, cols/256), after
	// ptr's bytes in the same allocation; Q4_K, Q5_K ptr (their scales are inside the blocks).
	scales cuda.DevicePtr
}

// deviceQuant lists the quantised types kept quantised on the device, in the order of the
// per-quantised-type kernel tables (kernelFuncs.gemvQV2 …).
var deviceQuant = [...]tensor.DType{tensor.Q8_0, tensor.Q4_0, tensor.Q4_K, tensor.Q6_K, tensor.Q5_K}

// isDeviceQuant reports whether d is one of deviceQuant.
func isDeviceQuant(d tensor.DType) bool { return slices.Contains(deviceQuant[:], d) }

// quantised reports a weight kept quantised (ptr and scales).
func (w *Weight) quantised() bool { return isDeviceQuant(w.dtype) }

// qi indexes the per-quantised-type kernel tables: deviceQuant's order.
func (w *Weight) qi() int {
	for i, d := range deviceQuant {
		if d == w.dtype {
			return i
		}
	}
	panic(fmt.Sprintf("gpu: %v is not a device-quantised type", w.dtype))
}

// Shape is the tensor's shape, as uploaded.
func (w *Weight) Shape() []int { return w.shape }

// DType is the resident dtype.
func (w *Weight) DType() tensor.DType { return w.dtype }

// Ptr is the device address of the first element.
func (w *Weight) Ptr() cuda.DevicePtr { return w.ptr }

// wt asserts that w is a gpu weight.
func wt(w model.Weight) *Weight {
	ww, ok := w.(*Weight)
	if !ok {
		panic(fmt.Sprintf("gpu: weight of type %T is not from the gpu backend", w))
	}
	return ww
}

// wdt indexes per-dtype kernel tables: 0 F32, 1 F16, 2 BF16.
func (w *Weight) wdt() int {
	switch w.dtype {
	case tensor.F16:
		return 1
	case tensor.BF16:
		return 2
	}
	return 0
}

// residentDType is the device dtype of a tensor of dtype d (vector or matrix).
func (b *Backend) residentDType(d tensor.DType, matrix bool) tensor.DType {
	if !matrix {
		return tensor.F32
	}
	if isDeviceQuant(d) && !b.opts.WidenQuant {
		return d
	}
	if b.opts.Weights != tensor.F32 {
		return b.opts.Weights
	}
	switch d {
	case tensor.F32, tensor.F16, tensor.BF16:
		return d
	}
	return tensor.F16 // device-quantised types under WidenQuant, and the other ggml types
}

// Upload converts t to its resident dtype on the host (in parallel over rows) and copies it to
// the device once. t.Data is not used after Upload returns.
func (b *Backend) Upload(t *tensor.Tensor) (model.Weight, error) {
	if t == nil {
		return nil, fmt.Errorf("%w: nil tensor", ErrBadShape)
	}
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("gpu: upload: %w", err)
	}
	if len(t.Shape) == 0 || len(t.Shape) > 2 {
		return nil, fmt.Errorf("%w: tensor %q: shape %v is not a vector or matrix", ErrBadShape, t.Name, t.Shape)
	}
	switch t.DType {
	case tensor.F32, tensor.F16, tensor.BF16:
	default:
		if !t.DType.Quantized() {
			return nil, fmt.Errorf("gpu: upload: tensor %q: %w: %v", t.Name, tensor.ErrUnknownDType, t.DType)
		}
	}
	w := &Weight{name: t.Name, shape: append([]int(nil), t.Shape...), rows: t.Rows(), cols: t.Cols()}
	w.dtype = b.residentDType(t.DType, len(t.Shape) == 2)
	data := t.Data
	switch {
	case w.quantised():
		if int64(w.rows)*int64(w.cols) >= 1<<31 {
			return nil, fmt.Errorf("%w: %v tensor %q of %d×%d elements: at most 2³¹−1 on the device", ErrBadShape, w.dtype, t.Name, w.rows, w.cols)
		}
		switch w.dtype {
		case tensor.Q6_K:
			data = repackQ6K(t)
		case tensor.Q8_0, tensor.Q4_0:
			data = repackQuant(t)
		} // Q4_K, Q5_K: the file's blocks as they are
	case w.dtype != t.DType:
		data = convert(t, w.dtype)
	}
	p, err := b.alloc(int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("gpu: upload %q (%d bytes): %w", t.Name, len(data), err)
	}
	if err := b.ctx.CopyHtoD(p, data); err != nil {
		return nil, fmt.Errorf("gpu: upload %q: %w", t.Name, err)
	}
	w.ptr = p
	switch w.dtype {
	case tensor.Q8_0, tensor.Q4_0, tensor.Q6_K:
		w.scales = p + cuda.DevicePtr(len(data)-w.rows*w.cols/w.dtype.BlockSize()*2)
	case tensor.Q4_K, tensor.Q5_K:
		w.scales = p
	}
	return w, nil
}

// repackQuant rewrites a Q8_0 or Q4_0 matrix from the file's blocks (an fp16 d, then 32 int8
// or 16 bytes of nibbles) into the device layout of kernels/gemv.cu: every block's quants
// (rows, cols) int8 or (rows, cols/2) bytes, then every d (rows, cols/32) fp16, so that the
// kernels' 16-byte loads of the quants are aligned.
func repackQuant(t *tensor.Tensor) []byte {
	rows, cols := t.Rows(), t.Cols()
	nb := cols / tensor.QK
	bb := t.DType.BlockBytes() // 34 or 18
	qb := bb - 2               // quant bytes per block
	out := make([]byte, rows*nb*bb)
	q, d := out[:rows*nb*qb], out[rows*nb*qb:]
	parallelRows(rows, cols, func(lo, hi int) {
		for blk := lo * nb; blk < hi*nb; blk++ {
			src := t.Data[blk*bb : (blk+1)*bb]
			d[2*blk], d[2*blk+1] = src[0], src[1]
			copy(q[blk*qb:(blk+1)*qb], src[2:])
		}
	})
	return out
}

// repackQ6K rewrites a Q6_K matrix from the file's 210-byte blocks (ql 128, qh 64, int8 scales
// 16, fp16 d) into kernels/kquant.cu's layout: every block's first 208 bytes, then every d
// (rows, cols/256) fp16, so that the kernels' 16-byte loads are aligned.
func repackQ6K(t *tensor.Tensor) []byte {
	rows, cols := t.Rows(), t.Cols()
	nb := cols / tensor.QKK
	const bb, qb = 210, 208
	out := make([]byte, rows*nb*bb)
	q, d := out[:rows*nb*qb], out[rows*nb*qb:]
	parallelRows(rows, cols, func(lo, hi int) {
		for blk := lo * nb; blk < hi*nb; blk++ {
			src := t.Data[blk*bb : (blk+1)*bb]
			copy(q[blk*qb:(blk+1)*qb], src[:qb])
			d[2*blk], d[2*blk+1] = src[qb], src[qb+1]
		}
	})
	return out
}

// parallelRows runs f over [0, rows) split into one range per core (a few for small tensors).
func parallelRows(rows, cols int, f func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), max(1, rows*cols/(1<<16)))
	var wg sync.WaitGroup
	for wk := 0; wk < workers; wk++ {
		lo, hi := rows*wk/workers, rows*(wk+1)/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(lo, hi)
		}()
	}
	wg.Wait()
}

// convert re-encodes t's rows as dtype to (F32, F16 or BF16), using every core.
func convert(t *tensor.Tensor, to tensor.DType) []byte {
	rows, cols := t.Rows(), t.Cols()
	eb := to.BlockBytes()
	out := make([]byte, rows*cols*eb)
	parallelRows(rows, cols, func(lo, hi int) {
		row := make([]float32, cols)
		for r := lo; r < hi; r++ {
			t.DecodeRow(row, r)
			tensor.EncodeTo(out[r*cols*eb:(r+1)*cols*eb], to, row)
		}
	})
	return out
}
