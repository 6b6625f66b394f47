// Package modeltest is the conformance suite every model.Backend must pass: the CPU reference
// backend today, the CUDA backend tomorrow. Run drives each Backend op through the public
// interface on a table of cases — tiny shapes, block edges (1023/1024/1025 columns), real LLaMA 2
// shapes (dim 4096, FFN 11008 and 28672, vocab 32000; behind Options.Large), grouped-query
// attention with 1, 2 and 8 query heads per KV head, paged attention over scattered block tables,
// several sequences of different lengths in one batch, and mixed prefill+decode batches — and
// compares each result with a "slow twin": a plain, obviously correct loop written here in
// float64.
//
// The pass rule is |got − want| ≤ ATol + RTol·mag, where mag is |want| for element-wise ops and
// the magnitude of the terms of the sum for reductions (Σ|x·w| for MatMul, max |V| for
// Attention), so that fp32 rounding of large cancelling sums is not mistaken for a bug. RoPE
// adds an allowance for the fp32 rounding of the angle pos·freq (|angle|·2⁻¹⁹·|x|), unavoidable
// at long positions. A failure prints the first mismatches and the max absolute and relative error.
//
// Loading inputs: the Backend interface has no method to write a buffer, on purpose (the forward
// pass never needs one). The suite loads arbitrary rows with Embed instead: it uploads the rows
// as an F32 "table" weight of shape (rows, cols) and embeds tokens 0..rows−1 into the buffer.
// Embed with F32 weights is therefore checked first; if it fails, every other op will too.
package modeltest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// Options tunes the suite for a backend.
type Options struct {
	// ATol and RTol are the pass rule's absolute and relative tolerances; zero means 1e-5 and
	// 1e-4 (right for fp32 accumulation).
	ATol, RTol float64
	// Large adds the real LLaMA 2 shapes (dim 4096 and 8192, FFN 11008 and 28672, vocab 32000,
	// contexts to 4096). Slow on a small CPU and needs a few GB of memory.
	Large bool
	// DTypes are the weight dtypes MatMul and Embed are tested with; nil means all that
	// tensor.Encode writes: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K (shapes whose rows are not
	// whole blocks are left out per dtype).
	DTypes []tensor.DType
}

func (o Options) withDefaults() Options {
	if o.ATol == 0 {
		o.ATol = 1e-5
	}
	if o.RTol == 0 {
		o.RTol = 1e-4
	}
	if o.DTypes == nil {
		o.DTypes = []tensor.DType{tensor.F32, tensor.F16, tensor.BF16, tensor.Q8_0, tensor.Q4_0, tensor.Q4_K, tensor.Q5_K, tensor.Q6_K}
	}
	return o
}

// Run runs the whole suite against be, one subtest per op and case.
func Run(t *testing.T, be model.Backend, opts Options) {
	h := &harness{be: be, o: opts.withDefaults()}
	t.Run("Embed", h.testEmbed)
	t.Run("Read", h.testRead)
	t.Run("Upload", h.testUpload)
	t.Run("RMSNorm", h.testRMSNorm)
	t.Run("MatMul", h.testMatMul)
	t.Run("RoPE", h.testRoPE)
	t.Run("SwiGLU", h.testSwiGLU)
	t.Run("Add", h.testAdd)
	t.Run("GatherRows", h.testGatherRows)
	t.Run("Attention", h.testAttention)
}

type harness struct {
	be model.Backend
	o  Options
}

// rng returns a deterministic generator for a case name.
func rng(name string) *rand.Rand {
	var seed uint64 = 1469598103934665603
	for _, c := range []byte(name) {
		seed = (seed ^ uint64(c)) * 1099511628211
	}
	return rand.New(rand.NewPCG(seed, 0x5eed))
}

// normal returns n standard-normal values times scale.
func normal(r *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * scale)
	}
	return v
}

// upload makes data, shaped, resident as dtype d and returns the weight and the values the
// backend must see (data rounded through d).
func (h *harness) upload(t testing.TB, name string, d tensor.DType, shape []int, data []float32) (model.Weight, []float32) {
	t.Helper()
	tt := &tensor.Tensor{Name: name, DType: d, Shape: shape, Data: tensor.Encode(d, data)}
	w, err := h.be.Upload(tt)
	if err != nil {
		t.Fatalf("Upload %s %v %v: %v", name, d, shape, err)
	}
	return w, tt.Float32s()
}

// newBuffer allocates a (rows, cols) buffer or fails the test.
func (h *harness) newBuffer(t testing.TB, rows, cols int) model.Buffer {
	t.Helper()
	b, err := h.be.NewBuffer(rows, cols)
	if err != nil {
		t.Fatalf("NewBuffer(%d, %d): %v", rows, cols, err)
	}
	return b
}

// load writes data (len(data)/cols rows) into the first rows of buf, by uploading it as an F32
// table and embedding tokens 0..rows−1 (see the package comment).
func (h *harness) load(t testing.TB, buf model.Buffer, data []float32) {
	t.Helper()
	cols := buf.Cols()
	rows := len(data) / cols
	if rows*cols != len(data) || rows > buf.Rows() {
		t.Fatalf("load: %d floats into a (%d, %d) buffer", len(data), buf.Rows(), cols)
	}
	if rows == 0 {
		return
	}
	w, _ := h.upload(t, "modeltest.load", tensor.F32, []int{rows, cols}, data)
	tok := make([]int32, rows)
	for i := range tok {
		tok[i] = int32(i)
	}
	h.be.Embed(buf, w, tok)
}

// input allocates a (rows, cols) buffer holding data in its first rows and sentinel values in
// the rest, and returns it.
func (h *harness) input(t testing.TB, rows, cols int, data []float32) model.Buffer {
	t.Helper()
	b := h.newBuffer(t, rows, cols)
	full := make([]float32, rows*cols)
	copy(full, data)
	for i := len(data); i < len(full); i++ {
		full[i] = sentinel(i)
	}
	h.load(t, b, full)
	return b
}

// sentinel is the value the suite parks in rows an op must not touch.
func sentinel(i int) float32 { return 1e4 + float32(i%97) }

// read returns the first n rows of buf.
func (h *harness) read(t testing.TB, buf model.Buffer, n int) []float32 {
	t.Helper()
	dst := make([]float32, n*buf.Cols())
	if err := h.be.Read(dst, buf, n); err != nil {
		t.Fatalf("Read: %v", err)
	}
	return dst
}

// checkUntouched fails if rows [n, Rows) of buf no longer hold the sentinels input put there.
func (h *harness) checkUntouched(t testing.TB, op string, buf model.Buffer, n int) {
	t.Helper()
	all := h.read(t, buf, buf.Rows())
	for i := n * buf.Cols(); i < len(all); i++ {
		if all[i] != sentinel(i) {
			t.Errorf("%s wrote row %d (element %d = %g) beyond its %d rows", op, i/buf.Cols(), i, all[i], n)
			return
		}
	}
}

// compare applies the pass rule |got−want| ≤ atol + rtol·mag[i] (mag nil: |want[i]|), plus
// extra[i] when extra is not nil.
func (h *harness) compare(t testing.TB, what string, got []float32, want, mag, extra []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d values, want %d", what, len(got), len(want))
	}
	var maxAbs, maxRel float64
	bad := 0
	var first strings.Builder
	for i, w := range want {
		g := float64(got[i])
		m := math.Abs(w)
		if mag != nil {
			m = mag[i]
		}
		tol := h.o.ATol + h.o.RTol*m
		if extra != nil {
			tol += extra[i]
		}
		d := math.Abs(g - w)
		if math.IsNaN(g) || math.IsInf(g, 0) {
			d = math.Inf(1)
		}
		maxAbs = max(maxAbs, d)
		if w != 0 {
			maxRel = max(maxRel, d/math.Abs(w))
		}
		if !(d <= tol) {
			if bad < 5 {
				fmt.Fprintf(&first, "\n\t[%d] got %.9g want %.9g (|diff| %.3g > tol %.3g)", i, g, w, d, tol)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values out of tolerance (max abs err %.3g, max rel err %.3g); first:%s",
			what, bad, len(want), maxAbs, maxRel, first.String())
	}
}

// shapes of a case, for names
func dims(ds ...int) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = fmt.Sprint(d)
	}
	return strings.Join(s, "x")
}

func f64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
