//go:build cuda || cudaemu

package gpu

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"unsafe"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/kernels"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// Options configures a Backend.
type Options struct {
	// Device is the CUDA device ordinal.
	Device int
	// Weights is the device dtype of float weight matrices. F16 or BF16 convert every F32, F16
	// and BF16 matrix to it at Upload; the zero value (F32) keeps each as stored. Q8_0, Q4_0,
	// Q4_K, Q5_K and Q6_K matrices stay quantised (kernels/gemv.cu's and kquant.cu's kernels
	// read 1.06, 0.56, 0.56, 0.69 and 0.82 bytes per weight) unless WidenQuant; the other ggml
	// types are decoded on the host to Weights (F16 for the zero value). Vectors (norm weights)
	// are always F32.
	Weights tensor.DType
	// WidenQuant converts those quantised matrices to Weights (F16 for the zero value) instead
	// of keeping them quantised: 2–3.6× the memory and decode bytes, no dequantisation before
	// prefill's cuBLAS; for A/B benchmarks.
	WidenQuant bool
	// KVF32 keeps the KV cache in fp32 (exactly the cpu reference's values). By default it is
	// fp16: half the memory and half the bytes attention reads per step, at a relative rounding
	// of 2⁻¹¹ on every cached K and V.
	KVF32 bool
	// Naive runs the v1 (reference) kernel of every family instead of the fast versions.
	Naive bool
	// Graphs records each RunStep and replays it as a CUDA graph when an identical step was seen
	// before (graph.go): decode steps then cost one launch. Only RunStep records; ops called
	// outside it run directly.
	Graphs bool
	// SIMTPrefill runs the fp32 SIMT prefill attention (v2) where the tensor-core one (v4)
	// applies: for benchmarks that compare them.
	SIMTPrefill bool
	// PrefillV3 runs the previous tensor-core prefill attention (v3: no cp.async pipeline, no
	// ldmatrix) instead of v4: for benchmarks that compare them.
	PrefillV3 bool
	// Decode picks the decode attention kernels: 0 runs v5 (tensor cores) where it applies
	// (fp16 cache, head_dim 64 or 128, 2 ≤ G ≤ 8 query heads per KV head), v4 for G = 1, and
	// otherwise chooses by the step (v3 for steps of at least decV3MinRows decode rows, v2
	// below: see gpu/attention.go); 4 or 5 runs that version wherever v4 and v5 apply; 2 or 3
	// forces that version.
	Decode int
	// DecodeBlocksPerSM sets the blocks per SM that v4 and v5 decode attention's splits aim at; 0
	// chooses (d4BlocksPerSM: 3). More splits fill the GPU sooner but leave more partials to
	// merge; for benchmarks that tune it.
	DecodeBlocksPerSM int
	// GEMVv2 runs the v2 GEMV kernels (one warp per 4 weight rows) for fp32/fp16/bf16 weights
	// instead of v3 (K split over 1–4 warps per row group): for benchmarks that compare them.
	GEMVv2 bool
	// GEMVSplit forces v3's warps per row group (1, 2 or 4); 0 chooses (gemvSplit: 4). The
	// results are the same bits whatever it is; for benchmarks.
	GEMVSplit int
	// GEMVv3 runs GEMV v3 (v2 for Q8_0 and Q4_0) for steps of 2–8 rows too, where F16, BF16,
	// Q8_0 and Q4_0 weights go to v4 (tensor cores, kernels/gemv_mma.cu) by default: for
	// benchmarks that compare them.
	GEMVv3 bool
	// GEMVv4OneRow runs v4 for one row too (v3 by default: fp32 FMAs, 79–100% of the copy
	// bandwidth at one row on an H100): for benchmarks that compare them.
	GEMVv4OneRow bool
	// GEMVv4Split forces v4's warps per 16-row tile (4 or 8); 0 chooses (gemv4Split). The
	// results are the same bits whatever it is; for benchmarks.
	GEMVv4Split int
	// SeparateRoPE runs RoPE and the KV store as a launch of their own after the q/k/v GEMV
	// (rope_qk_store_kv) instead of in its epilogue (gemv_<dt>_v3_qkv_rope): for benchmarks
	// that compare them. The bits are the same.
	SeparateRoPE bool
	// SeparateNorm keeps the residual add and RMSNorm in front of a one-row decode step's q/k/v
	// and gate/up GEMVs in a launch of their own (add_rmsnorm_f32) instead of folded into those
	// GEMVs (gemv_<dt>_v3n_*, model.NormFolder): for benchmarks that compare them. The results
	// differ by fp32 rounding.
	SeparateNorm bool
	// PDL launches kernels with programmatic dependent launch where the device has it (sm_90
	// and a CUDA 12 driver; else it is ignored): each kernel may be scheduled while the one
	// before it finishes, and waits for it in its first statement (kernels/common.cuh's
	// pdl_begin), so that launch latencies and last waves overlap. Off by default until a GPU
	// run has measured it (LLAMACU_PDL=1).
	PDL bool
	// F32Intermediates keeps prefill's intermediates (more than 8 rows with cuBLAS) in fp32
	// between the GEMMs and the kernels after them — the feed-forward block's gate, up and h
	// (MatMulFFN runs MatMulSwiGLU then MatMul), and the attention block's q, k and v
	// (MatMulQKVRoPEStoreKV runs MatMulQKV then RoPEStoreKV) — instead of in the weight dtype
	// that the GEMMs round them to anyway: for benchmarks that compare them.
	F32Intermediates bool
	// NoCublas never loads cuBLAS: matmuls of more than 8 rows run the GEMV kernel over 8-row
	// slices. By default cuBLAS is used when it can be dlopened.
	NoCublas bool
}

// Backend is the CUDA implementation of model.Backend on one device. Like the cpu backend, its
// methods must not be called from several goroutines at once; all work goes to one stream.
type Backend struct {
	opts Options
	ctx  *cuda.Context
	mod  *cuda.Module
	k    kernelSet
	blas *cuda.Cublas // nil without cuBLAS
	name string
	sms  int
	src  string // where the fatbin came from
	err  error  // first device error (sticky)
	// launches counts launch calls (Launches).
	launches int64
	// pdl: kernels go out with programmatic dependent launch (Options.PDL, where the device has it).
	pdl    bool
	closed bool

	allocs []cuda.DevicePtr // everything to free at Close

	// Host-to-device int32 metadata, re-uploaded only when it changes (see the package comment).
	tokens, ropePos, rows, argRows intSlab
	batch                          batchMeta
	plan                           attnPlan

	// Grow-only device scratch (allocated when a larger size is first needed, never per step).
	xHalf   scratch // x rounded to the weight dtype for cuBLAS, (n, K)
	qkvHalf scratch // prefill's q, k, v in the weight dtype, (n, q_cols + 2·kv_dim)
	wHalf   scratch // a Q8_0 matrix dequantised to fp16 for cuBLAS, (N, K)
	wDeq    Weight  // describes wHalf for gemmCublas
	partO   scratch // attention split partials (rows, heads, splits, head_dim) fp32
	partML  scratch // (rows, heads, splits, 2) fp32
	decCnt  scratch // (rows, kv_heads) int32: decode v4's finished-split counts, zero between launches
	argOut  scratch // (n) int32 argmax results
	topOut  scratch // (n, k) fp32 top-k values, then (n, k) int32 ids

	topHost []int32 // (2, n, k) TopK's copy of topOut
	argHost []int32

	stage *cuda.HostBuffer // pinned staging of the host-path all-reduce (collective.go); nil until used

	rec recorder // the step being recorded for a CUDA graph (graph.go)
}

var _ model.Backend = (*Backend)(nil)

// ErrBadShape is returned by NewBuffer, NewKVCache and Upload for non-positive or inconsistent
// sizes.
var ErrBadShape = errors.New("gpu: bad shape")

// New opens the device, loads the kernels (the embedded fatbin, or $LLAMACU_FATBIN) and, unless
// opts.NoCublas, cuBLAS. A missing cuBLAS is not an error: large matmuls then use the GEMV path.
func New(opts Options) (*Backend, error) {
	switch opts.Weights {
	case tensor.F32, tensor.F16, tensor.BF16:
	default:
		return nil, fmt.Errorf("gpu: weight dtype %v: want F16, BF16 or F32 (as stored)", opts.Weights)
	}
	image, src, err := kernels.Load()
	if err != nil {
		return nil, err
	}
	ctx, err := cuda.Open(opts.Device)
	if err != nil {
		return nil, fmt.Errorf("gpu: %w", err)
	}
	b := &Backend{opts: opts, ctx: ctx, src: src, sms: max(ctx.SMCount(), 1), pdl: opts.PDL && ctx.PDL()}
	b.name = "cuda: " + ctx.DeviceName()
	if b.mod, err = ctx.LoadModule(image); err != nil {
		ctx.Close()
		return nil, fmt.Errorf("gpu: load kernels (%s): %w", src, err)
	}
	if err := loadKernels(&b.k, b.mod); err != nil {
		b.mod.Close()
		ctx.Close()
		return nil, fmt.Errorf("gpu: kernels (%s): %w", src, err)
	}
	if !opts.NoCublas {
		if blas, err := ctx.LoadCublas(); err == nil {
			b.blas = blas
		} else if !errors.Is(err, cuda.ErrNoCublas) {
			b.Close()
			return nil, fmt.Errorf("gpu: %w", err)
		}
	}
	return b, nil
}

// Name reports "cuda: <device name>".
func (b *Backend) Name() string { return b.name }

// Context is the device context, for callers that run a whole step inside Context.Do (every
// launch is then made on the context's thread, without a goroutine hand-off or allocation).
func (b *Backend) Context() *cuda.Context { return b.ctx }

// HasCublas reports whether large matmuls go to cuBLAS.
func (b *Backend) HasCublas() bool { return b.blas != nil }

// Close frees every device allocation and releases the context.
func (b *Backend) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	err := b.ctx.Synchronize()
	for _, s := range []*scratch{&b.xHalf, &b.qkvHalf, &b.wHalf, &b.partO, &b.partML, &b.decCnt, &b.argOut, &b.topOut} {
		b.allocs = append(b.allocs, s.ptr)
	}
	for _, s := range []*intSlab{&b.tokens, &b.ropePos, &b.rows, &b.argRows, &b.batch.slab, &b.plan.slab} {
		b.allocs = append(b.allocs, s.dev)
	}
	for _, p := range b.allocs {
		err = errors.Join(err, b.ctx.Free(p))
	}
	b.allocs = nil
	err = errors.Join(err, b.closeCollective())
	err = errors.Join(err, b.closeGraphs())
	if b.blas != nil {
		err = errors.Join(err, b.blas.Close())
	}
	if b.mod != nil {
		err = errors.Join(err, b.mod.Close())
	}
	return errors.Join(err, b.ctx.Close())
}

// fail records the first device error.
func (b *Backend) fail(err error) {
	if err != nil && b.err == nil {
		b.err = err
	}
}

// ok reports whether ops should still run (no sticky error yet).
func (b *Backend) ok() bool { return b.err == nil && !b.closed }

// launch queues f on the compute stream, recording any error.
func (b *Backend) launch(f *cuda.Function, grid, block cuda.Dim3, args ...cuda.Arg) {
	if b.err != nil {
		return
	}
	b.launches++
	if b.rec.on {
		b.recordLaunch(f, grid, block, args)
		return
	}
	b.fail(b.launchNow(f, grid, block, args))
}

// launchNow launches f on the compute stream, with programmatic dependent launch under b.pdl.
func (b *Backend) launchNow(f *cuda.Function, grid, block cuda.Dim3, args []cuda.Arg) error {
	if b.pdl {
		return f.LaunchPDL(grid, block, 0, nil, args...)
	}
	return f.Launch(grid, block, 0, nil, args...)
}

// PDL reports whether kernels go out with programmatic dependent launch (Options.PDL on a
// device that has it).
func (b *Backend) PDL() bool { return b.pdl }

// Launches is the number of kernels the backend has launched since it opened, those recorded
// into a step's CUDA graph included (a replayed step counts each of its kernels): what a fusion
// saves shows here.
func (b *Backend) Launches() int64 { return b.launches }

// alloc allocates device memory that lives until Close.
func (b *Backend) alloc(bytes int64) (cuda.DevicePtr, error) {
	p, err := b.ctx.Alloc(bytes)
	if err != nil {
		return 0, err
	}
	b.allocs = append(b.allocs, p)
	return p, nil
}

// ---------------------------------------------------------------- buffers

// Buffer is a device activation matrix: (rows, cols) fp32, row-major, contiguous.
type Buffer struct {
	rows, cols int
	ptr        cuda.DevicePtr // (rows, cols) float32
}

// Rows is the capacity in rows.
func (x *Buffer) Rows() int { return x.rows }

// Cols is the row width.
func (x *Buffer) Cols() int { return x.cols }

// Ptr is the device address of element (0, 0).
func (x *Buffer) Ptr() cuda.DevicePtr { return x.ptr }

// row is the device address of row i.
func (x *Buffer) row(i int) cuda.DevicePtr { return x.ptr + cuda.DevicePtr(i*x.cols*4) }

// NewBuffer allocates a zeroed (rows, cols) fp32 buffer.
func (b *Backend) NewBuffer(rows, cols int) (model.Buffer, error) {
	if rows <= 0 || cols <= 0 || int64(rows)*int64(cols) > math.MaxInt32 {
		return nil, fmt.Errorf("%w: buffer (%d, %d)", ErrBadShape, rows, cols)
	}
	bytes := int64(rows) * int64(cols) * 4
	p, err := b.alloc(bytes)
	if err != nil {
		return nil, fmt.Errorf("gpu: buffer (%d, %d): %w", rows, cols, err)
	}
	if err := b.ctx.Memset(p, bytes); err != nil {
		return nil, fmt.Errorf("gpu: buffer (%d, %d): %w", rows, cols, err)
	}
	return &Buffer{rows: rows, cols: cols, ptr: p}, nil
}

// Read copies the first n rows of x into dst after all queued work, and returns the first device
// error seen so far (sticky), or an error for a bad n or a short dst.
func (b *Backend) Read(dst []float32, x model.Buffer, n int) error {
	xb := buf(x)
	if n < 0 || n > xb.rows {
		return fmt.Errorf("gpu: read %d rows of a (%d, %d) buffer", n, xb.rows, xb.cols)
	}
	if len(dst) < n*xb.cols {
		return fmt.Errorf("gpu: read %d rows of %d cols into %d floats", n, xb.cols, len(dst))
	}
	if b.err != nil {
		return b.err
	}
	b.flush() // a recorded step must run before its results are read
	if n == 0 {
		b.fail(b.ctx.Synchronize())
	} else {
		b.fail(b.ctx.CopyFloatsDtoH(dst[:n*xb.cols], xb.ptr)) // waits for all queued work
	}
	b.rec.pending = b.rec.pending && b.err != nil
	return b.err
}

// buf asserts that x is a gpu buffer (a programmer error otherwise).
func buf(x model.Buffer) *Buffer {
	xb, ok := x.(*Buffer)
	if !ok {
		panic(fmt.Sprintf("gpu: buffer of type %T is not from the gpu backend", x))
	}
	return xb
}

// checkRows panics unless n rows fit in every buffer.
func checkRows(op string, n int, xs ...*Buffer) {
	for _, x := range xs {
		if n < 0 || n > x.rows {
			panic(fmt.Sprintf("gpu: %s: %d rows do not fit a (%d, %d) buffer", op, n, x.rows, x.cols))
		}
	}
}

// ---------------------------------------------------------------- int32 metadata

// intSlab is device memory holding the int32 values last uploaded through it, and their host
// copy, so that an unchanged slice costs a comparison and no copy.
type intSlab struct {
	dev   cuda.DevicePtr
	cap   int     // int32s allocated at dev
	last  []int32 // what dev holds
	valid bool
}

// upload makes s hold vals (uploading only when they differ) and returns its device address.
// The copy is queued on the compute stream, after the kernels that read the previous values.
func (b *Backend) upload(s *intSlab, vals []int32) cuda.DevicePtr {
	if s.valid && slices.Equal(s.last, vals) {
		return s.dev
	}
	need := len(vals)
	if b.opts.Graphs {
		// Recorded copies are padded to a bucket, so that a growing block table does not
		// change the copy (and the graph) every block.
		need = ceilDiv(need, graphCopyBucket) * graphCopyBucket
	}
	if need > s.cap {
		b.flush() // recorded operations may use the old allocation
		c := max(256, 2*need)
		if s.dev != 0 {
			// Queued kernels may still read the old allocation.
			b.fail(b.ctx.Synchronize())
			b.fail(b.ctx.Free(s.dev))
			s.dev, s.cap = 0, 0
		}
		p, err := b.ctx.Alloc(int64(c) * 4)
		if err != nil {
			b.fail(fmt.Errorf("gpu: metadata (%d int32): %w", c, err))
			s.valid = false
			return 0
		}
		s.dev, s.cap = p, c
	}
	if len(vals) > 0 && !(b.rec.on && b.recordCopy(s.dev, vals, need)) {
		b.flush() // the arena is full: the rest of the step runs directly
		b.fail(b.ctx.CopyHtoDAsync(s.dev, int32Bytes(vals), nil))
	}
	s.last = append(s.last[:0], vals...)
	s.valid = b.err == nil
	return s.dev
}

// int32Bytes views vals as bytes.
func int32Bytes(vals []int32) []byte {
	if len(vals) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&vals[0])), 4*len(vals))
}

// scratch is grow-only device memory.
type scratch struct {
	ptr   cuda.DevicePtr
	bytes int64
}

// ensure returns s's address after growing it to at least bytes (synchronising first, since
// queued kernels may still use the old allocation). Steady-state steps never grow it.
func (b *Backend) ensure(s *scratch, bytes int64) cuda.DevicePtr {
	if bytes <= s.bytes {
		return s.ptr
	}
	bytes = max(bytes, 2*s.bytes, 1<<12)
	b.flush() // recorded operations may use the old allocation
	if s.ptr != 0 {
		b.fail(b.ctx.Synchronize())
		b.fail(b.ctx.Free(s.ptr))
		s.ptr, s.bytes = 0, 0
	}
	p, err := b.ctx.Alloc(bytes)
	if err != nil {
		b.fail(fmt.Errorf("gpu: scratch of %d bytes: %w", bytes, err))
		return 0
	}
	s.ptr, s.bytes = p, bytes
	return p
}

// ensureZeroed is ensure for scratch that must start zeroed (counters that the kernels using
// them leave zero again): a new allocation is cleared before it is returned.
func (b *Backend) ensureZeroed(s *scratch, bytes int64) cuda.DevicePtr {
	if bytes <= s.bytes {
		return s.ptr
	}
	p := b.ensure(s, bytes)
	if p != 0 {
		b.fail(b.ctx.Memset(p, s.bytes))
	}
	return p
}

// ---------------------------------------------------------------- grid helpers

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// gridFor returns a 1-D grid of threads-sized blocks covering n items, capped (grid-stride loops
// cover the rest).
func gridFor(n, threads int) cuda.Dim3 {
	return cuda.Dim3{X: max(1, min(ceilDiv(n, threads), 65535))}
}

func i32(v int) cuda.Arg { return cuda.I32(int32(v)) }
