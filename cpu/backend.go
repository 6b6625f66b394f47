// Package cpu is the pure-Go reference implementation of model.Backend: fp32 activations in
// ordinary slices, weights used in place (F32, and by default nothing else is copied except
// F16/BF16, which are widened to F32 at Upload), quantized weights (Q8_0, Q4_0, the k-quants and
// the other ggml types) multiplied block by block in their stored form, and a persistent worker
// pool that splits each op across cores.
//
// Its float32 arithmetic follows llama2.c's run.c where the order matters (RMSNorm, softmax,
// SwiGLU, RoPE frequencies), so that greedy generation reproduces llama2.c's reference texts. It is
// the numerical reference that the conformance suite (model/modeltest) and the CUDA backend are
// checked against, and the fallback where no GPU exists.
//
// No op allocates: scratch (per-worker GEMM tiles and RoPE tables, attention scores) is sized
// at New and NewKVCache (the RoPE tables at the first call for a head size).
package cpu

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// Options configures a Backend.
type Options struct {
	// Threads is the number of goroutines an op is split across; 0 means runtime.GOMAXPROCS(0).
	Threads int
	// KeepHalf keeps F16 and BF16 weights in their 2-byte form and widens them on the fly (half
	// the memory and bandwidth of F32, at some compute cost). By default Upload converts them to F32.
	KeepHalf bool
	// KVF16 keeps the KV cache in F16 (half the memory and the bytes attention reads; values
	// rounded as stored, like the GPU's cache). By default it is F32, exactly llama2.c's.
	KVF16 bool
}

// Backend is the CPU implementation of model.Backend. Its methods must not be called from
// several goroutines at once (the forward pass drives one backend from one goroutine); the
// pool serialises parallel ops anyway.
type Backend struct {
	opts     Options
	pool     *pool
	closed   bool
	gemmBufs []*gemmScratch // per-worker prefill GEMM scratch
	rope     [][]float32    // (workers, 2·headDim/2) cos, sin tables for one position
	err      error

	// reusable task structs (see task)
	mm   matmulTask
	attn attentionTask
	norm normTask
	rot  ropeTask
	glu  swigluTask
	add  addTask
}

var _ model.Backend = (*Backend)(nil)

// New starts a Backend and its worker pool. Close stops the workers.
func New(opts Options) *Backend {
	if opts.Threads <= 0 {
		opts.Threads = runtime.GOMAXPROCS(0)
	}
	b := &Backend{opts: opts, pool: newPool(opts.Threads)}
	b.rope = make([][]float32, opts.Threads)
	b.rot.tabs = b.rope
	b.gemmBufs = make([]*gemmScratch, opts.Threads)
	for i := range b.gemmBufs {
		b.gemmBufs[i] = newGemmScratch()
	}
	return b
}

// Name reports "cpu (N threads)".
func (b *Backend) Name() string { return fmt.Sprintf("cpu (%d threads)", b.opts.Threads) }

// Close stops the worker pool. Ops called afterwards still work, on the calling goroutine alone.
func (b *Backend) Close() error {
	if !b.closed {
		b.closed = true
		b.pool.close()
	}
	return nil
}

// Buffer is a CPU activation matrix: (rows, cols) float32, row-major.
type Buffer struct {
	rows, cols int
	data       []float32 // (rows, cols)
}

// Rows is the capacity in rows.
func (x *Buffer) Rows() int { return x.rows }

// Cols is the row width.
func (x *Buffer) Cols() int { return x.cols }

// row returns row i.
func (x *Buffer) row(i int) []float32 { return x.data[i*x.cols : (i+1)*x.cols : (i+1)*x.cols] }

// ErrBadShape is returned by NewBuffer, NewKVCache and Upload for non-positive or inconsistent sizes.
var ErrBadShape = errors.New("cpu: bad shape")

// NewBuffer allocates a zeroed (rows, cols) buffer.
func (b *Backend) NewBuffer(rows, cols int) (model.Buffer, error) {
	if rows <= 0 || cols <= 0 || int64(rows)*int64(cols) > math.MaxInt32*8 {
		return nil, fmt.Errorf("%w: buffer (%d, %d)", ErrBadShape, rows, cols)
	}
	return &Buffer{rows: rows, cols: cols, data: make([]float32, rows*cols)}, nil
}

// Weight is a resident parameter tensor. F32 data aliases the uploaded tensor's bytes when they
// are 4-byte aligned; F16/BF16 matrices are widened to F32 unless Options.KeepHalf; quantised
// matrices (Q8_0, Q4_0, and the read-only ggml types: Q4_1 … Q6_K) alias the uploaded bytes in
// their ggml block layout; vectors (norms) are always F32.
type Weight struct {
	name       string
	shape      []int
	dtype      tensor.DType // resident dtype (F32 after widening)
	rows, cols int
	f32        []float32 // dtype F32: (rows, cols)
	raw        []byte    // other dtypes: rows of RowBytes each
	rowBytes   int
}

// Shape is the tensor's shape, as uploaded.
func (w *Weight) Shape() []int { return w.shape }

// DType is the resident dtype: F32 for F16/BF16 tensors widened at Upload, else the file dtype.
func (w *Weight) DType() tensor.DType { return w.dtype }

// Upload makes t resident: see Weight for what is copied. t.Data must stay valid while the
// Backend lives.
func (b *Backend) Upload(t *tensor.Tensor) (model.Weight, error) {
	if t == nil {
		return nil, fmt.Errorf("%w: nil tensor", ErrBadShape)
	}
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("cpu: upload: %w", err)
	}
	if len(t.Shape) == 0 || len(t.Shape) > 2 {
		return nil, fmt.Errorf("%w: tensor %q: shape %v is not a vector or matrix", ErrBadShape, t.Name, t.Shape)
	}
	w := &Weight{name: t.Name, shape: append([]int(nil), t.Shape...), dtype: t.DType, rows: t.Rows(), cols: t.Cols()}
	switch t.DType {
	case tensor.F32:
		w.f32 = f32View(t.Data)
	case tensor.F16, tensor.BF16:
		if b.opts.KeepHalf && len(t.Shape) == 2 {
			w.raw = t.Data
		} else {
			w.f32 = t.Float32s()
			w.dtype = tensor.F32
		}
	default:
		if !t.DType.Quantized() {
			return nil, fmt.Errorf("cpu: upload: tensor %q: %w: %v", t.Name, tensor.ErrUnknownDType, t.DType)
		}
		if len(t.Shape) == 1 { // norms are always F32
			w.f32 = t.Float32s()
			w.dtype = tensor.F32
		} else {
			w.raw = t.Data
		}
	}
	if w.dtype != tensor.F32 {
		w.rowBytes = t.RowBytes()
	}
	return w, nil
}

// f32View reinterprets little-endian bytes as float32s without copying when they are aligned
// (and the host is little-endian, as every Go amd64/arm64 target is), else copies.
func f32View(data []byte) []float32 {
	if len(data) == 0 {
		return nil
	}
	if uintptr(unsafe.Pointer(&data[0]))%4 == 0 {
		return unsafe.Slice((*float32)(unsafe.Pointer(&data[0])), len(data)/4)
	}
	out := make([]float32, len(data)/4)
	tensor.Decode(out, tensor.F32, data)
	return out
}

// rawRow returns the stored bytes of row r (non-F32 weights).
func (w *Weight) rawRow(r int) []byte {
	return w.raw[r*w.rowBytes : (r+1)*w.rowBytes : (r+1)*w.rowBytes]
}

// decodeRow widens row r of w into dst (len cols).
func (w *Weight) decodeRow(dst []float32, r int) {
	if w.dtype == tensor.F32 {
		copy(dst, w.f32[r*w.cols:(r+1)*w.cols])
		return
	}
	decodeInto(dst, w.dtype, w.rawRow(r))
}

// Read copies the first n rows of x into dst. It reports an error for a bad n or short dst.
func (b *Backend) Read(dst []float32, x model.Buffer, n int) error {
	xb := buf(x)
	if n < 0 || n > xb.rows {
		return fmt.Errorf("cpu: read %d rows of a (%d, %d) buffer", n, xb.rows, xb.cols)
	}
	if len(dst) < n*xb.cols {
		return fmt.Errorf("cpu: read %d rows of %d cols into %d floats", n, xb.cols, len(dst))
	}
	copy(dst, xb.data[:n*xb.cols])
	return b.err
}

// buf asserts that x is a CPU buffer (a programmer error otherwise).
func buf(x model.Buffer) *Buffer {
	xb, ok := x.(*Buffer)
	if !ok {
		panic(fmt.Sprintf("cpu: buffer of type %T is not from the cpu backend", x))
	}
	return xb
}

// wt asserts that w is a CPU weight.
func wt(w model.Weight) *Weight {
	ww, ok := w.(*Weight)
	if !ok {
		panic(fmt.Sprintf("cpu: weight of type %T is not from the cpu backend", w))
	}
	return ww
}

// checkRows panics unless n rows fit in every buffer.
func checkRows(op string, n int, xs ...*Buffer) {
	for _, x := range xs {
		if n < 0 || n > x.rows {
			panic(fmt.Sprintf("cpu: %s: %d rows do not fit a (%d, %d) buffer", op, n, x.rows, x.cols))
		}
	}
}
