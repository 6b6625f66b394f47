// Package hfref reads and checks logits references computed by PyTorch/transformers
// (bench/reference/hf_logits.py): the CPU and CUDA backends are compared with them.
package hfref

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/llamacu/llamacu/model"
)

// TransformersRefFormat is the "format" of the reference.json that ReadTransformersRef reads.
const TransformersRefFormat = "llamacu-hf-logits/1"

// TransformersRef is a logits reference computed by PyTorch/transformers: a Hugging Face model
// folder (config.json, model.safetensors) with a reference.json naming the token ids fed and the
// logits transformers produced, one binary file per run. bench/reference/hf_logits.py makes it on
// the GPU machine; the tests of the engine (CPU) and gpu (CUDA) packages compare llamacu with it.
type TransformersRef struct {
	Dir       string            `json:"-"`          // the folder
	Format    string            `json:"format"`     // TransformersRefFormat
	TokenIDs  []int32           `json:"token_ids"`  // (T) one sequence, positions 0..T-1
	LogitRows []int32           `json:"logit_rows"` // (R) positions whose logits are stored, ascending
	Vocab     int               `json:"vocab"`
	Runs      []TransformersRun `json:"runs"`
	// Meta says how the reference was made (versions, device, seed...): reported, never checked.
	Meta map[string]any `json:"meta,omitempty"`
}

// TransformersRun is the output of one transformers run (one dtype) over the reference tokens.
type TransformersRun struct {
	Name  string `json:"name"`  // "float16", "float32"
	DType string `json:"dtype"` // the torch dtype of weights and activations
	File  string `json:"file"`  // a file in the folder: (R, vocab) little-endian float32
	Shape []int  `json:"shape"` // (R, vocab)
	// Logits are the file's contents (R, vocab), filled by ReadTransformersRef.
	Logits []float32 `json:"-"`
}

// ErrTransformersRef reports a reference folder that cannot be used.
var ErrTransformersRef = errors.New("transformers reference")

// ReadTransformersRef reads dir/reference.json and every run's logits, checking that shapes,
// token ids and rows agree with each other.
func ReadTransformersRef(dir string) (*TransformersRef, error) {
	path := filepath.Join(dir, "reference.json")
	fail := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrTransformersRef, path, fmt.Sprintf(format, a...))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTransformersRef, err)
	}
	r := &TransformersRef{Dir: dir}
	if err := json.Unmarshal(data, r); err != nil {
		return nil, fail("%v", err)
	}
	if r.Format != TransformersRefFormat {
		return nil, fail("format %q, want %q", r.Format, TransformersRefFormat)
	}
	t := len(r.TokenIDs)
	switch {
	case t == 0:
		return nil, fail("no token_ids")
	case r.Vocab <= 0:
		return nil, fail("vocab %d", r.Vocab)
	case len(r.LogitRows) == 0:
		return nil, fail("no logit_rows")
	case len(r.Runs) == 0:
		return nil, fail("no runs")
	}
	for i, id := range r.TokenIDs {
		if id < 0 || int(id) >= r.Vocab {
			return nil, fail("token_ids[%d] = %d is outside the vocabulary of %d", i, id, r.Vocab)
		}
	}
	for i, p := range r.LogitRows {
		if p < 0 || int(p) >= t || (i > 0 && p <= r.LogitRows[i-1]) {
			return nil, fail("logit_rows must ascend within [0, %d): logit_rows[%d] = %d", t, i, p)
		}
	}
	rows := len(r.LogitRows)
	for i := range r.Runs {
		run := &r.Runs[i]
		if len(run.Shape) != 2 || run.Shape[0] != rows || run.Shape[1] != r.Vocab {
			return nil, fail("run %q: shape %v, want [%d %d]", run.Name, run.Shape, rows, r.Vocab)
		}
		if run.File == "" || run.File != filepath.Base(run.File) || strings.HasPrefix(run.File, ".") {
			return nil, fail("run %q: file %q must be a file name in the folder", run.Name, run.File)
		}
		lp := filepath.Join(dir, run.File)
		b, err := os.ReadFile(lp)
		if err != nil {
			return nil, fmt.Errorf("%w: run %q: %w", ErrTransformersRef, run.Name, err)
		}
		if len(b) != 4*rows*r.Vocab {
			return nil, fmt.Errorf("%w: %s: %d bytes, want %d (%d × %d float32)", ErrTransformersRef, lp, len(b), 4*rows*r.Vocab, rows, r.Vocab)
		}
		run.Logits = make([]float32, rows*r.Vocab)
		for j := range run.Logits {
			v := math.Float32frombits(binary.LittleEndian.Uint32(b[4*j:]))
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("%w: %s: logit %d (row %d) is %g", ErrTransformersRef, lp, j, j/r.Vocab, v)
			}
			run.Logits[j] = v
		}
	}
	return r, nil
}

// Run returns the run called name.
func (r *TransformersRef) Run(name string) (*TransformersRun, error) {
	var names []string
	for i := range r.Runs {
		if r.Runs[i].Name == name {
			return &r.Runs[i], nil
		}
		names = append(names, r.Runs[i].Name)
	}
	return nil, fmt.Errorf("%w: %s has no run %q (it has %s)", ErrTransformersRef, r.Dir, name, strings.Join(names, ", "))
}

// WriteTransformersRef writes r (with its runs' Logits) into r.Dir in the layout
// ReadTransformersRef reads: reference.json and each run's File. The model itself (config.json,
// model.safetensors) is the caller's to write, with loader.ExportHF for instance.
func WriteTransformersRef(r *TransformersRef) error {
	for _, run := range r.Runs {
		if len(run.Logits) != len(r.LogitRows)*r.Vocab {
			return fmt.Errorf("%w: run %q has %d logits, want %d × %d", ErrTransformersRef, run.Name, len(run.Logits), len(r.LogitRows), r.Vocab)
		}
		b := make([]byte, 4*len(run.Logits))
		for j, v := range run.Logits {
			binary.LittleEndian.PutUint32(b[4*j:], math.Float32bits(v))
		}
		if err := os.WriteFile(filepath.Join(r.Dir, run.File), b, 0o644); err != nil {
			return fmt.Errorf("%w: %w", ErrTransformersRef, err)
		}
	}
	js, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTransformersRef, err)
	}
	return os.WriteFile(filepath.Join(r.Dir, "reference.json"), append(js, '\n'), 0o644)
}

// Logits runs the reference tokens through m as one sequence and returns the logits of LogitRows,
// (R, vocab). The first prefill tokens go in one batch (all of them when prefill ≤ 0 or ≥ T),
// the rest one decode step each, so that both the prefill and the decode paths of a backend can
// be checked against the same reference. The KV cache is paged in blocks of 16 positions laid
// out in reverse order, so that a kernel ignoring the block table cannot pass.
func (r *TransformersRef) Logits(m *model.Model, prefill int) ([]float32, error) {
	t := len(r.TokenIDs)
	if m.Config.Vocab != r.Vocab {
		return nil, fmt.Errorf("%w: the model's vocabulary is %d, the reference's %d", ErrTransformersRef, m.Config.Vocab, r.Vocab)
	}
	if t > m.Config.MaxSeq {
		return nil, fmt.Errorf("%w: %d tokens, the model's context is %d", ErrTransformersRef, t, m.Config.MaxSeq)
	}
	if prefill <= 0 || prefill > t {
		prefill = t
	}
	const bs = 16
	blocks := (t + bs - 1) / bs
	table := make([]int32, blocks)
	for i := range table {
		table[i] = int32(blocks - 1 - i)
	}
	s, err := m.NewState(prefill, prefill, bs, blocks)
	if err != nil {
		return nil, err
	}
	all := make([]float32, t*r.Vocab) // (T, vocab)
	for start := 0; start < t; {
		n := 1
		if start == 0 {
			n = prefill
		}
		b := &model.Batch{Tokens: r.TokenIDs[start : start+n], Pos: make([]int32, n), Seq: make([]int32, n), BlockTables: [][]int32{table}}
		rows := make([]int32, n)
		for i := range rows {
			b.Pos[i], rows[i] = int32(start+i), int32(i)
		}
		l, err := m.Forward(s, b, rows)
		if err != nil {
			return nil, fmt.Errorf("forward at position %d: %w", start, err)
		}
		copy(all[start*r.Vocab:], l)
		start += n
	}
	out := make([]float32, 0, len(r.LogitRows)*r.Vocab)
	for _, p := range r.LogitRows {
		out = append(out, all[int(p)*r.Vocab:int(p+1)*r.Vocab]...)
	}
	return out, nil
}

// TransformersCheck is one comparison made by Compare.
type TransformersCheck struct {
	Mode string // how the tokens were fed: "prefill 64" or "prefill 48 + decode 16"
	Run  string // the TransformersRun compared with
	Diff LogitsDiff
}

// Compare runs the reference tokens through m twice, all of them as one prefill batch and then
// the first T−decode as a prefill followed by decode steps (skipped when decode ≤ 0 or ≥ T), and
// compares the logits of each with every run that tols has a tolerance for. A run named in tols
// must exist.
func (r *TransformersRef) Compare(m *model.Model, decode int, tols map[string]LogitsTol) ([]TransformersCheck, error) {
	t := len(r.TokenIDs)
	type mode struct {
		name    string
		prefill int
	}
	modes := []mode{{fmt.Sprintf("prefill %d", t), t}}
	if decode > 0 && decode < t {
		modes = append(modes, mode{fmt.Sprintf("prefill %d + decode %d", t-decode, decode), t - decode})
	}
	for name := range tols {
		if _, err := r.Run(name); err != nil {
			return nil, err
		}
	}
	var out []TransformersCheck
	for _, md := range modes {
		got, err := r.Logits(m, md.prefill)
		if err != nil {
			return nil, err
		}
		for i := range r.Runs {
			tol, ok := tols[r.Runs[i].Name]
			if !ok {
				continue
			}
			out = append(out, TransformersCheck{md.name, r.Runs[i].Name, CompareLogits(got, r.Runs[i].Logits, r.Vocab, tol)})
		}
	}
	return out, nil
}

// LogitsTol is an elementwise tolerance: |got − want| ≤ ATol + RTol·|want|.
type LogitsTol struct{ ATol, RTol float64 }

// Tolerances for comparisons with a TransformersRef (logits of standard deviation about 1, as
// hf_logits.py initialises them; hidden 256, 4 layers, 64 positions):
//
//   - TransformersTolF32: two fp32 computations of the same function from the same (fp16-rounded)
//     weights differ only in the order of sums and in exp/rsqrt rounding: ~1e-6 relative per op,
//     ~1e-5 on the logits. 1e-3 leaves a margin of 100 and still catches any real bug (a wrong
//     RoPE order, head mapping or norm weight moves logits by 0.1 to 1).
//   - TransformersTolF16: transformers in fp16 rounds every activation to fp16 (2⁻¹¹ relative)
//     between ops, and its logits too (half an ulp at |4| is 1e-3); the GPU backend's fp16 KV
//     cache and cuBLAS's fp16 rounding of x do the same to fewer values. A float64 emulation of
//     transformers' fp16 eager forward (every rounding it makes, hf_logits.py's shape and init,
//     3 seeds; not committed) differed from fp32 by at most 0.0059–0.0065 over 64 × 32000 logits
//     (0.26–0.29 of this tolerance) with the same argmax in every row: a margin of 3.5 for one
//     fp16 side, about 1.7 when both sides round.
var (
	TransformersTolF32 = LogitsTol{ATol: 1e-3, RTol: 1e-3}
	TransformersTolF16 = LogitsTol{ATol: 2e-2, RTol: 1e-2}
)

// LogitsDiff summarises got against want, both (rows, vocab).
type LogitsDiff struct {
	Rows, Vocab int
	Tol         LogitsTol
	MaxAbs      float64 // max |got − want|
	MaxAbsRow   int     // where MaxAbs is
	MaxAbsCol   int
	// MaxRel is max |got − want| / |want| over the logits with |want| ≥ 0.1·RMS(want) (the ratio
	// means nothing near zero).
	MaxRel float64
	// Excess is max |got − want| / (ATol + RTol·|want|): at most 1 when every logit is within Tol.
	Excess float64
	// Over counts the logits outside Tol.
	Over int
	// ArgmaxDiffer counts rows whose argmax differs. ArgmaxBad lists those where the reference
	// prefers its own argmax over got's by more than Tol at that logit (rows whose top two are
	// closer than the tolerance may legitimately flip).
	ArgmaxDiffer int
	ArgmaxBad    []int
}

// OK reports whether every logit is within Tol and no argmax flip is beyond it.
func (d LogitsDiff) OK() bool { return d.Over == 0 && len(d.ArgmaxBad) == 0 }

func (d LogitsDiff) String() string {
	return fmt.Sprintf("max |Δ| %.3g (row %d, token %d), max rel %.3g, %.3g of the tolerance (%g + %g·|want|), %d logits over; argmax differs in %d of %d rows, beyond tolerance in %d %v",
		d.MaxAbs, d.MaxAbsRow, d.MaxAbsCol, d.MaxRel, d.Excess, d.Tol.ATol, d.Tol.RTol, d.Over, d.ArgmaxDiffer, d.Rows, len(d.ArgmaxBad), d.ArgmaxBad)
}

// CompareLogits compares got with want, both (rows, vocab) row-major, under tol.
func CompareLogits(got, want []float32, vocab int, tol LogitsTol) LogitsDiff {
	if vocab <= 0 || len(got) != len(want) || len(want)%vocab != 0 {
		panic(fmt.Sprintf("engine: CompareLogits: %d and %d logits, vocab %d", len(got), len(want), vocab))
	}
	d := LogitsDiff{Rows: len(want) / vocab, Vocab: vocab, Tol: tol}
	var sq float64
	for _, w := range want {
		sq += float64(w) * float64(w)
	}
	floor := 0.1 * math.Sqrt(sq/float64(max(len(want), 1)))
	for i := range want {
		w, g := float64(want[i]), float64(got[i])
		e := math.Abs(g - w)
		if math.IsNaN(e) {
			e = math.Inf(1)
		}
		if e > d.MaxAbs {
			d.MaxAbs, d.MaxAbsRow, d.MaxAbsCol = e, i/vocab, i%vocab
		}
		if math.Abs(w) >= floor && w != 0 {
			d.MaxRel = max(d.MaxRel, e/math.Abs(w))
		}
		lim := tol.ATol + tol.RTol*math.Abs(w)
		d.Excess = max(d.Excess, e/lim)
		if !(e <= lim) {
			d.Over++
		}
	}
	for row := 0; row < d.Rows; row++ {
		g, w := got[row*vocab:(row+1)*vocab], want[row*vocab:(row+1)*vocab]
		ig, iw := argmax(g), argmax(w)
		if ig == iw {
			continue
		}
		d.ArgmaxDiffer++
		if gap := float64(w[iw]) - float64(w[ig]); gap > tol.ATol+tol.RTol*math.Abs(float64(w[iw])) {
			d.ArgmaxBad = append(d.ArgmaxBad, row)
		}
	}
	return d
}

// argmax is the lowest index of the largest value (NaN never wins).
func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}
