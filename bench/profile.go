package bench

import (
	"fmt"
	"slices"
	"time"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// OpTimer is implemented by a backend whose ops run asynchronously on a device (CUDA), where the
// wall time around a call measures only the launch. The ProfilingBackend then brackets the ops with
// device timestamps instead (CUDA events recorded on the stream):
//
//	RecordMark(); op₁; RecordMark(); op₂; RecordMark(); …; MarkIntervals()
//
// and attributes interval i to op i. A backend whose ops are synchronous (the CPU) need not
// implement it: the wall time of the call is then the op's time.
type OpTimer interface {
	// RecordMark enqueues a timestamp that completes after all work queued so far.
	RecordMark()
	// MarkIntervals waits for every recorded mark and returns the device time between each
	// consecutive pair (len = marks − 1, or 0 with fewer than two marks), then forgets them all.
	MarkIntervals() ([]time.Duration, error)
}

// KVElemBytes is optionally implemented by a backend's KVCache to say the bytes of one stored
// element (2 for an fp16 cache); without it the profiler assumes 4 (fp32, as the CPU stores it).
type KVElemBytes interface {
	ElemBytes() int
}

// OpStat is the accumulated cost of one kind of op. Bytes is the minimum traffic the op must move —
// each operand read once, each result written once: weights in their resident dtype (the whole
// matrix for MatMul, the gathered rows for Embed), activations as fp32, the KV cache at its element
// size (Attention reads, per sequence in the step, the K and V of every cached position up to its
// last token). FLOPs counts a multiply-add as 2 (MatMul: 2·n·N·K; Attention: 4·head_dim per query
// head per attended position). Both are what the op needs, not what an implementation does.
type OpStat struct {
	Op     string        `json:"op"`     // "MatMul", "Attention", …
	Detail string        `json:"detail"` // MatMul: the weight shape and dtype ("768x2048 F32")
	Calls  int           `json:"calls"`
	Time   time.Duration `json:"time_ns"`
	Bytes  int64         `json:"bytes"`
	FLOPs  int64         `json:"flops"`
}

// GBps is the achieved bandwidth in GB/s (10⁹ bytes per second).
func (s OpStat) GBps() float64 { return rate(float64(s.Bytes), s.Time) / 1e9 }

// TFLOPs is the achieved arithmetic rate in TFLOP/s (10¹² per second).
func (s OpStat) TFLOPs() float64 { return rate(float64(s.FLOPs), s.Time) / 1e12 }

func rate(x float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return x / d.Seconds()
}

type opKey struct{ op, detail string }

// ProfilingBackend wraps a model.Backend and records, for every op, its time, calls, bytes and
// FLOPs. It is itself a model.Backend: build the model on it (model.New with the profiler as the
// backend) or swap it in with Model.Backend = NewProfilingBackend(m.Backend) for a profiled run.
// Timing costs a clock read per op (tens of nanoseconds on the CPU), so profile in a run of its
// own, not in the run whose throughput you report. Optional fast-path interfaces of the wrapped
// backend are not forwarded (the forward pass uses none yet): when it does, add a forwarding
// method here, or the profiled run takes the unfused path.
type ProfilingBackend struct {
	model.Backend
	timer   OpTimer // nil: wall time per call
	enabled bool
	stats   map[opKey]*OpStat
	order   []opKey
	pending []*OpStat       // ops awaiting device intervals (OpTimer)
	lastPos map[int32]int32 // Attention scratch: last position of each sequence in the step
}

// NewProfilingBackend wraps be; profiling is on. If be implements OpTimer, ops are timed on the
// device.
func NewProfilingBackend(be model.Backend) *ProfilingBackend {
	p := &ProfilingBackend{Backend: be, enabled: true, stats: map[opKey]*OpStat{}, lastPos: map[int32]int32{}}
	p.timer, _ = be.(OpTimer)
	return p
}

// Enable turns recording on or off (off: ops pass straight through).
func (p *ProfilingBackend) Enable(on bool) { p.enabled = on }

// Reset forgets everything recorded.
func (p *ProfilingBackend) Reset() {
	clear(p.stats)
	p.order = p.order[:0]
	p.pending = p.pending[:0]
	if p.timer != nil {
		_, _ = p.timer.MarkIntervals()
	}
}

// Stats returns the recorded ops in first-call order (after collecting any device intervals).
func (p *ProfilingBackend) Stats() ([]OpStat, error) {
	err := p.flush()
	out := make([]OpStat, 0, len(p.order))
	for _, k := range p.order {
		out = append(out, *p.stats[k])
	}
	return out, err
}

// Unwrap returns the wrapped backend.
func (p *ProfilingBackend) Unwrap() model.Backend { return p.Backend }

// Name is the wrapped backend's name.
func (p *ProfilingBackend) Name() string { return p.Backend.Name() }

func (p *ProfilingBackend) stat(op, detail string) *OpStat {
	k := opKey{op, detail}
	s := p.stats[k]
	if s == nil {
		s = &OpStat{Op: op, Detail: detail}
		p.stats[k] = s
		p.order = append(p.order, k)
	}
	return s
}

// time runs f and charges it to (op, detail) with the given traffic.
func (p *ProfilingBackend) time(op, detail string, bytes, flops int64, f func()) {
	if !p.enabled {
		f()
		return
	}
	s := p.stat(op, detail)
	s.Calls++
	s.Bytes += bytes
	s.FLOPs += flops
	if p.timer != nil {
		if len(p.pending) == 0 {
			p.timer.RecordMark()
		}
		f()
		p.timer.RecordMark()
		p.pending = append(p.pending, s)
		return
	}
	t0 := time.Now()
	f()
	s.Time += time.Since(t0)
}

// flush attributes the device intervals of pending ops.
func (p *ProfilingBackend) flush() error {
	if p.timer == nil || len(p.pending) == 0 {
		return nil
	}
	iv, err := p.timer.MarkIntervals()
	if err == nil && len(iv) != len(p.pending) {
		err = fmt.Errorf("bench: profiler: %d device intervals for %d ops", len(iv), len(p.pending))
	}
	for i, s := range p.pending {
		if i < len(iv) {
			s.Time += iv[i]
		}
	}
	p.pending = p.pending[:0]
	return err
}

// weightBytes is the resident size of w.
func weightBytes(w model.Weight) int64 {
	n := int64(1)
	for _, d := range w.Shape() {
		n *= int64(d)
	}
	b, err := w.DType().Bytes(n)
	if err != nil {
		return 0
	}
	return b
}

func weightDetail(w model.Weight) string {
	s := w.Shape()
	if len(s) == 2 {
		return fmt.Sprintf("%dx%d %v", s[0], s[1], w.DType())
	}
	return fmt.Sprintf("%v %v", s, w.DType())
}

const f32 = 4

// Embed is timed and charged the gathered rows of the table and the written rows.
func (p *ProfilingBackend) Embed(out model.Buffer, table model.Weight, tokens []int32) {
	n := int64(len(tokens))
	var row int64
	if s := table.Shape(); len(s) == 2 && s[0] > 0 {
		row = weightBytes(table) / int64(s[0])
	}
	p.time("Embed", "", n*row+n*int64(out.Cols())*f32, 0, func() { p.Backend.Embed(out, table, tokens) })
}

// RMSNorm is timed and charged x read, out written and the weight vector.
func (p *ProfilingBackend) RMSNorm(out, x model.Buffer, w model.Weight, n int, eps float32) {
	b := 2*int64(n)*int64(x.Cols())*f32 + weightBytes(w)
	p.time("RMSNorm", "", b, 0, func() { p.Backend.RMSNorm(out, x, w, n, eps) })
}

// MatMul is timed per weight shape and charged the whole weight, x read and out written.
func (p *ProfilingBackend) MatMul(out, x model.Buffer, w model.Weight, n int) {
	var N, K int64
	if s := w.Shape(); len(s) == 2 {
		N, K = int64(s[0]), int64(s[1])
	}
	b := weightBytes(w) + int64(n)*(K+N)*f32
	p.time("MatMul", weightDetail(w), b, 2*int64(n)*N*K, func() { p.Backend.MatMul(out, x, w, n) })
}

// RoPE is timed and charged the rows read and written in place.
func (p *ProfilingBackend) RoPE(x model.Buffer, headDim int, pos []int32, theta float32) {
	b := 2 * int64(len(pos)) * int64(x.Cols()) * f32
	p.time("RoPE", "", b, 0, func() { p.Backend.RoPE(x, headDim, pos, theta) })
}

func kvElem(c model.KVCache) int64 {
	if e, ok := c.(KVElemBytes); ok {
		return int64(e.ElemBytes())
	}
	return f32
}

// StoreKV is timed and charged k and v read and their cache slots written.
func (p *ProfilingBackend) StoreKV(c model.KVCache, layer int, k, v model.Buffer, b *model.Batch) {
	n := int64(b.Len()) * int64(k.Cols())
	p.time("StoreKV", "", 2*n*f32+2*n*kvElem(c), 0, func() { p.Backend.StoreKV(c, layer, k, v, b) })
}

// Attention is timed and charged q read, out written, and each sequence's cached K and V up to
// its last position in the step.
func (p *ProfilingBackend) Attention(out, q model.Buffer, c model.KVCache, layer int, b *model.Batch) {
	l := c.Layout()
	kvWidth := int64(l.KVHeads * l.HeadDim)
	var attended, kvPositions int64
	last := p.lastPos
	clear(last)
	for i, s := range b.Seq {
		attended += int64(b.Pos[i]) + 1
		if p, ok := last[s]; !ok || b.Pos[i] > p {
			last[s] = b.Pos[i]
		}
	}
	for _, pos := range last {
		kvPositions += int64(pos) + 1
	}
	qCols := int64(q.Cols())
	bytes := 2*int64(b.Len())*qCols*f32 + 2*kvPositions*kvWidth*kvElem(c)
	flops := 4 * attended * qCols // q·k and a·v over head_dim, for every query head
	p.time("Attention", "", bytes, flops, func() { p.Backend.Attention(out, q, c, layer, b) })
}

// SwiGLU is timed and charged two inputs read and one output written.
func (p *ProfilingBackend) SwiGLU(out, gate, up model.Buffer, n int) {
	p.time("SwiGLU", "", 3*int64(n)*int64(gate.Cols())*f32, 0, func() { p.Backend.SwiGLU(out, gate, up, n) })
}

// Add is timed and charged two inputs read and one output written.
func (p *ProfilingBackend) Add(x, y model.Buffer, n int) {
	p.time("Add", "", 3*int64(n)*int64(x.Cols())*f32, 0, func() { p.Backend.Add(x, y, n) })
}

// GatherRows is timed and charged the rows read and written.
func (p *ProfilingBackend) GatherRows(out, x model.Buffer, rows []int32) {
	p.time("GatherRows", "", 2*int64(len(rows))*int64(x.Cols())*f32, 0, func() { p.Backend.GatherRows(out, x, rows) })
}

// Read is timed (wall time: it waits for the device) and charged the rows copied to the host. It
// also collects the device intervals of the ops before it.
func (p *ProfilingBackend) Read(dst []float32, x model.Buffer, n int) error {
	if !p.enabled {
		return p.Backend.Read(dst, x, n)
	}
	var err error
	s := p.stat("Read", "")
	s.Calls++
	s.Bytes += int64(n) * int64(x.Cols()) * f32
	t0 := time.Now()
	err = p.Backend.Read(dst, x, n)
	s.Time += time.Since(t0)
	if ferr := p.flush(); err == nil {
		err = ferr
	}
	return err
}

// Upload passes through (loading is not profiled).
func (p *ProfilingBackend) Upload(t *tensor.Tensor) (model.Weight, error) { return p.Backend.Upload(t) }

// SortByTime sorts stats by descending time.
func SortByTime(stats []OpStat) {
	slices.SortStableFunc(stats, func(a, b OpStat) int {
		switch {
		case a.Time > b.Time:
			return -1
		case a.Time < b.Time:
			return 1
		}
		return 0
	})
}
