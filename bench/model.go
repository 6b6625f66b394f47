package bench

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/llamacu/llamacu/model"
)

// ModelOptions are the tests of a model benchmark.
type ModelOptions struct {
	Prompt  int   // p: tokens of the prompt-processing test (0: no pp test)
	Gen     int   // n: decode steps of the token-generation test (0: no tg test)
	Batches []int // sequences decoded together in tg (each B is one tg test per depth)
	Depths  []int // KV positions already cached when a test starts
	Reps    int   // timed repetitions (≥ 1)
	Warmup  int   // untimed repetitions before them
	// UBatch is the most prompt tokens one forward step takes in pp (0: all p at once).
	UBatch int
	// TopK, when > 0, makes each tg step read every row's TopK best logits (Model.ForwardTopK:
	// selected on the device where the backend can) instead of the whole rows, as a sampling
	// engine does; 0 reads the rows, as llama-bench does.
	TopK int
	// Profile adds one extra repetition of each test through a ProfilingBackend, reported as the
	// test's per-op profile (its time is not in the headline numbers).
	Profile bool
	// Seed picks the token ids fed to the model (0: 1). The ids do not change the cost of a step.
	Seed uint64
	// Log, if not nil, receives one line per test as it runs.
	Log func(format string, args ...any)
}

// Result is one test: pp (prompt processing: Tokens = p tokens of one sequence, in steps of at
// most UBatch) or tg (token generation: Gen steps, each one token of each of Batch sequences, so
// Tokens = Gen·Batch), at KV depth Depth.
type Result struct {
	Test    string    `json:"test"` // "pp512", "tg128"
	Kind    string    `json:"kind"` // "pp" or "tg"
	Batch   int       `json:"batch"`
	Depth   int       `json:"depth"`
	Tokens  int       `json:"tokens"`  // tokens processed per repetition
	Steps   int       `json:"steps"`   // forward calls per repetition
	Seconds []float64 `json:"seconds"` // wall time of each timed repetition
	TokS    Summary   `json:"tok_s"`   // tokens/s over the repetitions
	Profile *Profile  `json:"profile,omitempty"`
	// KernelsPerStep is the kernels a forward step launched (the last timed repetition's mean),
	// on backends that count them (the CUDA backend's Launches); 0 elsewhere.
	KernelsPerStep float64 `json:"kernels_per_step,omitempty"`
}

// Label is "pp512", or "tg128 b8 d2048".
func (r Result) Label() string {
	if r.Kind == "pp" && r.Batch == 1 && r.Depth == 0 {
		return r.Test
	}
	if r.Kind == "pp" {
		return fmt.Sprintf("%s d%d", r.Test, r.Depth)
	}
	return fmt.Sprintf("%s b%d d%d", r.Test, r.Batch, r.Depth)
}

// Profile is one profiled repetition of a test.
type Profile struct {
	WallNS int64       `json:"wall_ns"` // the whole repetition, profiler overhead included
	OpsNS  int64       `json:"ops_ns"`  // the ops' times summed
	Ops    []OpProfile `json:"ops"`     // by descending time
}

// OpProfile is an OpStat with its rates and shares.
type OpProfile struct {
	OpStat
	GBps      float64 `json:"gbps"`
	TFLOPs    float64 `json:"tflops,omitempty"`
	PctTime   float64 `json:"pct_time"`              // of OpsNS
	PctCopyBW float64 `json:"pct_copy_bw,omitempty"` // GBps / the device's measured copy bandwidth
	PerCallNS int64   `json:"per_call_ns"`
}

// ErrOptions reports impossible benchmark options.
var ErrOptions = errors.New("bench: bad options")

// blockSize is the KV block size the benchmark allocates (as the engine does).
const blockSize = 16

// Needs returns the State a run of o on cfg allocates: the most tokens in one step, the most
// logit rows, and the KV positions per sequence and the sequences. It is what the memory planner
// should check before the run.
func (o ModelOptions) Needs() (maxBatchTokens, maxLogits, ctx, seqs int) {
	ub := o.UBatch
	if ub <= 0 || ub > o.Prompt {
		ub = o.Prompt
	}
	maxBatchTokens, maxLogits, seqs = max(ub, 1), 1, 1
	for _, d := range o.Depths {
		if o.Prompt > 0 {
			ctx = max(ctx, d+o.Prompt)
		}
		if o.Gen > 0 {
			ctx = max(ctx, d+o.Gen)
		}
	}
	if o.Gen > 0 {
		for _, b := range o.Batches {
			maxBatchTokens, maxLogits, seqs = max(maxBatchTokens, b), max(maxLogits, b), max(seqs, b)
		}
	}
	return
}

func (o ModelOptions) validate() error {
	switch {
	case o.Prompt < 0 || o.Gen < 0 || o.UBatch < 0 || o.Warmup < 0 || o.TopK < 0:
		return fmt.Errorf("%w: negative size", ErrOptions)
	case o.Reps < 1:
		return fmt.Errorf("%w: reps must be ≥ 1", ErrOptions)
	case o.Prompt == 0 && o.Gen == 0:
		return fmt.Errorf("%w: nothing to run: both -p and -n are 0", ErrOptions)
	case len(o.Depths) == 0 || (o.Gen > 0 && len(o.Batches) == 0):
		return fmt.Errorf("%w: no depths or batch sizes", ErrOptions)
	}
	for _, b := range o.Batches {
		if b < 1 {
			return fmt.Errorf("%w: batch size %d", ErrOptions, b)
		}
	}
	for _, d := range o.Depths {
		if d < 0 {
			return fmt.Errorf("%w: depth %d", ErrOptions, d)
		}
	}
	return nil
}

// RunModel runs the pp and tg tests of o on m and returns their results, plus a note for each test
// skipped because it would run past the model's context. Each test calls model.Forward directly:
// pp feeds p tokens of one sequence at positions d … d+p−1 (logits of the last token only, as a
// prompt needs); tg runs n steps of B tokens, sequence i at position d+j in step j, with the logits
// of all B rows read back (or, with TopK, each row's best TopK). Sampling is not timed. The KV cache at depth d is allocated (each
// sequence its own blocks) but not computed: attention reads the d cached positions whatever they
// hold, so its cost is the same as after a real prefill. Ids are seeded pseudo-random tokens.
func RunModel(m *model.Model, o ModelOptions) ([]Result, []string, error) {
	if err := o.validate(); err != nil {
		return nil, nil, err
	}
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	maxSeq := m.Config.MaxSeq
	var skipped []string
	fits := func(name string, d, n int) bool {
		if d+n > maxSeq {
			skipped = append(skipped, fmt.Sprintf("%s at depth %d: %d positions exceed the context of %d", name, d, d+n, maxSeq))
			return false
		}
		return true
	}
	// Only allocate for the tests that fit.
	fit := o
	fit.Depths = nil
	for _, d := range o.Depths {
		if (o.Prompt > 0 && d+o.Prompt <= maxSeq) || (o.Gen > 0 && d+o.Gen <= maxSeq) {
			fit.Depths = append(fit.Depths, d)
		}
	}
	if len(fit.Depths) == 0 {
		for _, d := range o.Depths {
			if o.Prompt > 0 {
				fits(fmt.Sprintf("pp%d", o.Prompt), d, o.Prompt)
			}
			if o.Gen > 0 {
				fits(fmt.Sprintf("tg%d", o.Gen), d, o.Gen)
			}
		}
		return nil, skipped, nil
	}
	mbt, ml, ctx, seqs := fit.Needs()
	ctx = min(ctx, maxSeq)
	perSeq := (ctx + blockSize - 1) / blockSize
	s, err := m.NewState(mbt, ml, blockSize, perSeq*seqs)
	if err != nil {
		return nil, nil, err
	}
	r := &runner{m: m, s: s, o: o, rng: splitmix(max(o.Seed, 1)), perSeq: perSeq}
	r.batch.BlockTables = make([][]int32, seqs)
	for i := range r.batch.BlockTables {
		t := make([]int32, perSeq)
		for j := range t {
			t[j] = int32(i*perSeq + j)
		}
		r.batch.BlockTables[i] = t
	}

	var results []Result
	for _, d := range o.Depths {
		if o.Prompt > 0 && fits(fmt.Sprintf("pp%d", o.Prompt), d, o.Prompt) {
			res, err := r.run(Result{Test: fmt.Sprintf("pp%d", o.Prompt), Kind: "pp", Batch: 1, Depth: d, Tokens: o.Prompt})
			if err != nil {
				return results, skipped, err
			}
			logf("%-18s %10.2f ± %.2f tok/s%s", res.Label(), res.TokS.Mean, res.TokS.Stddev, kernelsNote(res))
			results = append(results, res)
		}
		if o.Gen == 0 || !fits(fmt.Sprintf("tg%d", o.Gen), d, o.Gen) {
			continue
		}
		for _, b := range o.Batches {
			res, err := r.run(Result{Test: fmt.Sprintf("tg%d", o.Gen), Kind: "tg", Batch: b, Depth: d, Tokens: o.Gen * b})
			if err != nil {
				return results, skipped, err
			}
			logf("%-18s %10.2f ± %.2f tok/s%s", res.Label(), res.TokS.Mean, res.TokS.Stddev, kernelsNote(res))
			results = append(results, res)
		}
	}
	return results, skipped, nil
}

// kernelsNote is ", N kernels/step" where the backend counts its launches.
func kernelsNote(res Result) string {
	if res.KernelsPerStep == 0 {
		return ""
	}
	return fmt.Sprintf(", %.0f kernels/step", res.KernelsPerStep)
}

type runner struct {
	m      *model.Model
	s      *model.State
	o      ModelOptions
	rng    splitmix
	perSeq int
	batch  model.Batch
	rows   []int32
}

// run times res's test: warm-up, Reps timed repetitions, then the profiled one.
func (r *runner) run(res Result) (Result, error) {
	rep := r.tg
	if res.Kind == "pp" {
		rep = r.pp
	}
	for i := 0; i < r.o.Warmup; i++ {
		if _, err := rep(res); err != nil {
			return res, err
		}
	}
	var rates []float64
	counter, counts := r.m.Backend.(interface{ Launches() int64 })
	for i := 0; i < r.o.Reps; i++ {
		var launched int64
		if counts {
			launched = counter.Launches()
		}
		t0 := time.Now()
		steps, err := rep(res)
		sec := time.Since(t0).Seconds()
		if err != nil {
			return res, err
		}
		if counts && steps > 0 {
			res.KernelsPerStep = float64(counter.Launches()-launched) / float64(steps)
		}
		res.Steps = steps
		res.Seconds = append(res.Seconds, sec)
		rates = append(rates, float64(res.Tokens)/sec)
	}
	res.TokS = Summarize(rates)
	if r.o.Profile {
		prof := NewProfilingBackend(r.m.Backend)
		orig := r.m.Backend
		r.m.Backend = prof
		t0 := time.Now()
		_, err := rep(res)
		wall := time.Since(t0)
		r.m.Backend = orig
		if err != nil {
			return res, err
		}
		stats, err := prof.Stats()
		if err != nil {
			return res, err
		}
		res.Profile = NewProfile(stats, wall, 0)
	}
	return res, nil
}

// NewProfile turns op stats into a Profile; copyGBps > 0 adds each op's share of it.
func NewProfile(stats []OpStat, wall time.Duration, copyGBps float64) *Profile {
	p := &Profile{WallNS: wall.Nanoseconds()}
	for _, s := range stats {
		p.OpsNS += s.Time.Nanoseconds()
	}
	SortByTime(stats)
	for _, s := range stats {
		op := OpProfile{OpStat: s, GBps: s.GBps(), TFLOPs: s.TFLOPs()}
		if p.OpsNS > 0 {
			op.PctTime = 100 * float64(s.Time.Nanoseconds()) / float64(p.OpsNS)
		}
		if s.Calls > 0 {
			op.PerCallNS = s.Time.Nanoseconds() / int64(s.Calls)
		}
		p.Ops = append(p.Ops, op)
	}
	p.SetCopyBandwidth(copyGBps)
	return p
}

// SetCopyBandwidth sets each op's PctCopyBW against copyGBps (GB/s; ≤ 0 clears them).
func (p *Profile) SetCopyBandwidth(copyGBps float64) {
	for i := range p.Ops {
		p.Ops[i].PctCopyBW = 0
		if copyGBps > 0 {
			p.Ops[i].PctCopyBW = 100 * p.Ops[i].GBps / copyGBps
		}
	}
}

// pp runs one prompt: the p tokens of sequence 0 from position Depth, UBatch at a time.
func (r *runner) pp(res Result) (int, error) {
	ub := r.o.UBatch
	if ub <= 0 {
		ub = res.Tokens
	}
	steps := 0
	for done := 0; done < res.Tokens; done += ub {
		n := min(ub, res.Tokens-done)
		r.fill(n)
		for i := 0; i < n; i++ {
			r.batch.Pos[i] = int32(res.Depth + done + i)
			r.batch.Seq[i] = 0
		}
		r.rows = append(r.rows[:0], int32(n-1))
		if _, err := r.m.Forward(r.s, &r.batch, r.rows); err != nil {
			return steps, fmt.Errorf("bench: %s: %w", res.Label(), err)
		}
		steps++
	}
	return steps, nil
}

// tg runs Gen decode steps of Batch sequences at positions Depth, Depth+1, ….
func (r *runner) tg(res Result) (int, error) {
	b := res.Batch
	r.rows = r.rows[:0]
	for i := 0; i < b; i++ {
		r.rows = append(r.rows, int32(i))
	}
	steps := res.Tokens / b
	for j := 0; j < steps; j++ {
		r.fill(b)
		for i := 0; i < b; i++ {
			r.batch.Pos[i] = int32(res.Depth + j)
			r.batch.Seq[i] = int32(i)
		}
		var err error
		if r.o.TopK > 0 {
			_, _, err = r.m.ForwardTopK(r.s, &r.batch, r.rows, r.o.TopK)
		} else {
			_, err = r.m.Forward(r.s, &r.batch, r.rows)
		}
		if err != nil {
			return j, fmt.Errorf("bench: %s: %w", res.Label(), err)
		}
	}
	return steps, nil
}

// fill sizes the batch to n tokens of seeded random ids.
func (r *runner) fill(n int) {
	r.batch.Tokens = slices.Grow(r.batch.Tokens[:0], n)[:n]
	r.batch.Pos = slices.Grow(r.batch.Pos[:0], n)[:n]
	r.batch.Seq = slices.Grow(r.batch.Seq[:0], n)[:n]
	v := uint64(r.m.Config.Vocab)
	for i := range r.batch.Tokens {
		r.batch.Tokens[i] = int32(r.rng.next() % v)
	}
}

// splitmix is SplitMix64, for token ids and the serving dataset.
type splitmix uint64

func (s *splitmix) next() uint64 {
	*s += 0x9E3779B97F4A7C15
	z := uint64(*s)
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	return z ^ z>>31
}
