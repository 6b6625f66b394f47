// Package sample picks the next token from a vector of logits: greedy argmax, or a seeded random
// draw after repetition penalty, top-k, temperature, top-p (nucleus) and min-p filtering.
//
// A Sampler is created once per sequence (or per request) and allocates all its buffers then;
// Sample allocates nothing. Draws come from a PCG generator (math/rand/v2) seeded from
// Params.Seed, so the same seed and the same logits give the same tokens on every run. The
// generator is integer arithmetic and every tie is broken by token id, so results agree across
// machines too; the one float operation that may differ in the last bit between architectures is
// math.Exp (assembly on amd64/arm64/s390x), which can only matter when a draw lands within
// rounding error of a boundary between two tokens.
//
// Cost per call on a 32000-token vocabulary: greedy is one pass (argmax); sampling copies the
// logits, selects top-k with a k-sized heap, and for top-p sorts only the candidates near the
// nucleus boundary (a histogram of the weights by exponent finds it) instead of the vocabulary.
//
// Order of operations (see Sampler.Sample):
//
//	logit bias → repetition, frequency and presence penalties → top-k → softmax(logits / temperature) → top-p → min-p → draw
//
// This is llama.cpp's chain order for penalty, top-k, top-p and min-p. Temperature is applied
// before top-p and min-p, as llama2.c and Hugging Face transformers do; llama.cpp's default chain
// applies temperature last, so with temperature ≠ 1 its top-p/min-p sets are computed on the
// untempered distribution and can differ from ours. Greedy decoding (temperature 0 or top-k 1) is
// unaffected by the difference.
package sample

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// ErrParams is wrapped by every error Validate and New return.
var ErrParams = errors.New("sample: invalid parameters")

// Params configures a Sampler. The zero value is greedy decoding with every filter off: a TopP or
// RepeatPenalty of 0 means "off", like 1, so that Params{Temperature: 0.7} does what it says.
type Params struct {
	// Temperature divides the logits before the softmax. 0 selects greedy decoding (argmax, the
	// lowest index on ties, as llama2.c); values below 1 sharpen the distribution, above 1 flatten
	// it. Must be ≥ 0 and finite.
	Temperature float32
	// TopK keeps only the K most likely tokens before the softmax. 0 (or ≥ vocab) disables it;
	// 1 is greedy. Must be ≥ 0.
	TopK int
	// TopP keeps the smallest set of most likely tokens whose probabilities sum to ≥ TopP (always
	// at least one token). 1 (or 0, the zero value) disables it. Must be in [0, 1].
	TopP float32
	// MinP drops tokens whose probability is below MinP times the largest probability. 0 disables
	// it. Must be in [0, 1].
	MinP float32
	// RepeatPenalty is the CTRL-style repetition penalty applied to every distinct token among the
	// last RepeatLastN tokens of the history: a positive logit is divided by it, a negative one
	// multiplied. 1 (or 0, the zero value) disables it; llama.cpp's CLI suggests 1.1 when one is
	// wanted. Must be ≥ 0.
	RepeatPenalty float32
	// FrequencyPenalty and PresencePenalty are OpenAI's additive penalties, over the same
	// window as RepeatPenalty (llama.cpp's penalty_last_n): a token seen c > 0 times among the
	// last RepeatLastN history tokens has c·FrequencyPenalty + PresencePenalty subtracted from
	// its logit, after the repetition penalty. 0 disables each; negative values encourage
	// repetition. Must be finite.
	FrequencyPenalty, PresencePenalty float32
	// RepeatLastN is how many of the most recent history tokens the penalties look at: 0
	// disables them, -1 means the whole history (llama.cpp: the whole context). Must be ≥ -1.
	RepeatLastN int
	// Seed seeds the random generator. Any value is valid (0 included); choose a random one for
	// non-reproducible output.
	Seed uint64
	// LogitBias is added to the logits of the tokens it names before anything else (OpenAI's
	// logit_bias: −100 bans a token in practice, +100 all but forces it). Values must be finite;
	// ids must be in the vocabulary (New checks).
	LogitBias map[int32]float32
}

// DefaultParams returns llama.cpp's CLI defaults (common/common.h): temperature 0.8, top-k 40,
// top-p 0.95, min-p 0.05, repetition penalty 1.0 (off) over the last 64 tokens, and seed 0.
// (llama.cpp picks a random seed by default; here the caller sets Seed explicitly.)
func DefaultParams() Params {
	return Params{
		Temperature:   0.8,
		TopK:          40,
		TopP:          0.95,
		MinP:          0.05,
		RepeatPenalty: 1.0,
		RepeatLastN:   64,
		Seed:          0,
	}
}

// GreedyParams returns parameters for plain argmax decoding with every filter disabled, matching
// llama2.c's run.c with temperature 0.
func GreedyParams() Params {
	return Params{Temperature: 0, TopK: 0, TopP: 1, MinP: 0, RepeatPenalty: 1, RepeatLastN: 0}
}

// Validate reports the first out-of-range field, wrapping ErrParams.
func (p Params) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrParams, fmt.Sprintf(format, args...))
	}
	switch {
	case isNaN32(p.Temperature) || p.Temperature < 0 || math.IsInf(float64(p.Temperature), 0):
		return bad("temperature %v: must be finite and ≥ 0 (0 means greedy)", p.Temperature)
	case p.TopK < 0:
		return bad("top_k %d: must be ≥ 0 (0 disables it)", p.TopK)
	case isNaN32(p.TopP) || p.TopP < 0 || p.TopP > 1:
		return bad("top_p %v: must be in [0, 1] (0 or 1 disables it)", p.TopP)
	case isNaN32(p.MinP) || p.MinP < 0 || p.MinP > 1:
		return bad("min_p %v: must be in [0, 1] (0 disables it)", p.MinP)
	case isNaN32(p.RepeatPenalty) || p.RepeatPenalty < 0 || math.IsInf(float64(p.RepeatPenalty), 0):
		return bad("repeat_penalty %v: must be finite and ≥ 0 (0 or 1 disables it)", p.RepeatPenalty)
	case isNaN32(p.FrequencyPenalty) || math.IsInf(float64(p.FrequencyPenalty), 0):
		return bad("frequency_penalty %v: must be finite (0 disables it)", p.FrequencyPenalty)
	case isNaN32(p.PresencePenalty) || math.IsInf(float64(p.PresencePenalty), 0):
		return bad("presence_penalty %v: must be finite (0 disables it)", p.PresencePenalty)
	case !finiteBias(p.LogitBias):
		return bad("logit_bias: every bias must be finite")
	case p.RepeatLastN < -1:
		return bad("repeat_last_n %d: must be ≥ -1 (0 disables the penalty, -1 means all history)", p.RepeatLastN)
	}
	return nil
}

// candidate is one token under consideration: its id, its (penalised) logit and, once the
// softmax has run, its unnormalised probability exp((l - lmax)/T).
type candidate struct {
	p  float64
	l  float32
	id int32
}

// Sampler draws tokens according to its Params. It is not safe for concurrent use; give each
// sequence its own Sampler.
type Sampler struct {
	p     Params
	vocab int
	rng   *rand.Rand
	pcg   *rand.PCG

	cands []candidate // (vocab) working copy of the logits, reordered by the filters
	stamp []uint32    // (vocab) marks tokens already counted in this call
	count []uint32    // (vocab) occurrences in the penalty window of tokens stamped this call
	gen   uint32      // current stamp value

	buckets [numBuckets]float64 // top-p weight histogram, see bucketEdges
}

// New validates p and returns a Sampler for logits of length vocab, with all buffers allocated.
func New(p Params, vocab int) (*Sampler, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if vocab <= 0 || vocab > math.MaxInt32 {
		return nil, fmt.Errorf("%w: vocabulary size %d", ErrParams, vocab)
	}
	for id := range p.LogitBias {
		if id < 0 || int(id) >= vocab {
			return nil, fmt.Errorf("%w: logit_bias token %d is outside the vocabulary (0..%d)", ErrParams, id, vocab-1)
		}
	}
	if p.TopP == 0 { // the zero value means off
		p.TopP = 1
	}
	if p.RepeatPenalty == 0 {
		p.RepeatPenalty = 1
	}
	s := &Sampler{
		p:     p,
		vocab: vocab,
		cands: make([]candidate, vocab),
		stamp: make([]uint32, vocab),
		count: make([]uint32, vocab),
	}
	s.pcg = rand.NewPCG(0, 0)
	s.rng = rand.New(s.pcg)
	s.Reseed(p.Seed)
	return s, nil
}

// pcgStream is the second PCG seed word, a fixed constant so that one uint64 seeds the generator.
const pcgStream = 0x9e3779b97f4a7c15

// Reseed restarts the random sequence as if the Sampler had just been created with Seed = seed.
func (s *Sampler) Reseed(seed uint64) {
	s.p.Seed = seed
	s.pcg.Seed(seed, seed^pcgStream)
}

// Params returns the parameters the Sampler was created with (Seed as last set by Reseed).
func (s *Sampler) Params() Params { return s.p }

// Vocab returns the logits length the Sampler expects.
func (s *Sampler) Vocab() int { return s.vocab }

// Sample returns the next token id for logits (vocab) given the ids generated or forced so far
// (history, oldest first; only the last RepeatLastN are read, and ids outside [0, vocab) are
// ignored). It never modifies logits or history and allocates nothing.
//
// NaN logits are treated as -Inf (never chosen). If every logit is -Inf or NaN the result is 0.
// If some logit is +Inf the result is the lowest index holding +Inf (a point mass), without a
// random draw. Temperature 0 or TopK 1 returns the argmax of the penalised logits, lowest index
// on ties. It panics if len(logits) != vocab (a programmer error).
func (s *Sampler) Sample(logits []float32, history []int32) int32 {
	kept, tok := s.filter(logits, history)
	if kept == nil {
		return tok
	}
	return s.draw(kept)
}

// TopKNeeded returns how many of a row's best logits Sample looks at: a k for which SampleTop,
// given the row's k best candidates (TopK), returns what Sample returns given the whole row.
// It is 1 for greedy decoding and Params.TopK when top-k is on; 0 means Sample needs the whole
// row: top-k is off (top-p and min-p alone may keep any number of tokens), or a penalty is on
// (it can move a token into or out of the k best).
func (s *Sampler) TopKNeeded() int {
	p := &s.p
	switch {
	case p.penalties() || len(p.LogitBias) > 0:
		return 0
	case p.Temperature == 0 || p.TopK == 1:
		return 1
	case p.TopK > 0 && p.TopK < s.vocab:
		return p.TopK
	}
	return 0
}

// SampleTop is Sample for a row of which only the best candidates are known: vals and ids hold
// at least TopKNeeded() of them, best first, as TopK returns them (a device top-k, model.TopKer,
// computes exactly that). It returns the token Sample would return for the whole row, with the
// same draws from the generator, and allocates nothing. It panics if TopKNeeded() is 0 or more
// than the candidates given (programmer errors).
func (s *Sampler) SampleTop(vals []float32, ids []int32) int32 {
	n := s.TopKNeeded()
	if n == 0 || len(vals) < n || len(ids) < n {
		panic(fmt.Sprintf("sample: SampleTop with %d values and %d ids; the sampler needs %d (0: the whole row)", len(vals), len(ids), n))
	}
	lmax := vals[0]
	if n == 1 || math.IsInf(float64(lmax), 0) {
		return ids[0]
	}
	c := s.cands[:n]
	for i := range c {
		c[i] = candidate{l: vals[i], id: ids[i]}
	}
	return s.draw(s.truncate(c, lmax, true))
}

// draw picks one of the kept candidates in proportion to their weights.
func (s *Sampler) draw(kept []candidate) int32 {
	var total float64
	for i := range kept {
		total += kept[i].p
	}
	r := s.rng.Float64() * total
	var cum float64
	last := kept[0].id
	for i := range kept {
		if kept[i].p == 0 {
			continue
		}
		cum += kept[i].p
		last = kept[i].id
		if r < cum {
			return kept[i].id
		}
	}
	return last // r rounded to the very top of the range
}

// filter applies penalty, top-k, temperature, top-p and min-p. It returns either the surviving
// candidates (a prefix of s.cands, in no particular order, weights unnormalised) or, when no
// random draw is needed (greedy, +Inf, all -Inf), nil and the token.
func (s *Sampler) filter(logits []float32, history []int32) ([]candidate, int32) {
	if len(logits) != s.vocab {
		panic(fmt.Sprintf("sample: logits has length %d, sampler vocabulary is %d", len(logits), s.vocab))
	}
	p := &s.p
	penalise := p.penalties() && len(history) > 0
	greedy := p.Temperature == 0 || p.TopK == 1
	if greedy && !penalise && len(p.LogitBias) == 0 {
		return nil, Argmax(logits)
	}

	// Working copy; NaN becomes -Inf. While untouched, cands[i].id == i.
	c := s.cands
	negInf := float32(math.Inf(-1))
	for i, l := range logits {
		if l != l {
			l = negInf
		}
		c[i] = candidate{l: l, id: int32(i)}
	}
	for id, b := range p.LogitBias {
		c[id].l += b
	}
	if penalise {
		s.penalise(history)
	}

	// Best candidate (lowest index on ties); also the greedy answer.
	best := 0
	for i := 1; i < len(c); i++ {
		if c[i].l > c[best].l {
			best = i
		}
	}
	lmax := c[best].l
	if greedy || math.IsInf(float64(lmax), 0) {
		return nil, int32(best)
	}

	// Top-k: c[:n] becomes the k best, sorted best first.
	n := len(c)
	sorted := false
	if p.TopK > 0 && p.TopK < n {
		n = p.TopK
		selectTop(c, n)
		slices.SortFunc(c[:n], cmpCand)
		sorted = true
	}

	return s.truncate(c[:n], lmax, sorted), -1
}

// truncate applies temperature, top-p and min-p to the candidates c (the best one's logit is
// lmax; sorted says c is in better() order) and returns the survivors, a prefix of c.
func (s *Sampler) truncate(c []candidate, lmax float32, sorted bool) []candidate {
	p := &s.p
	n := len(c)
	// Softmax with temperature, unnormalised: the best token has weight exactly 1.
	invT := 1 / float64(p.Temperature)
	fmax := float64(lmax)
	var z float64
	for i := range c[:n] {
		e := math.Exp((float64(c[i].l) - fmax) * invT)
		c[i].p = e
		z += e
	}

	// Top-p, then min-p. Both keep a prefix of the sorted order (best first), so together they
	// keep the shorter of the two prefixes. Min-p's threshold is relative to the best weight,
	// which is exactly 1.
	topP, minP := p.TopP < 1, float64(p.MinP)
	target := float64(p.TopP) * z
	switch {
	case sorted:
		if topP {
			n = prefixReaching(c[:n], target, 0)
		}
		if minP > 0 {
			for i := range c[:n] {
				if c[i].p < minP {
					n = i
					break
				}
			}
		}
	case topP:
		n = s.nucleus(c[:n], target, minP)
	case minP > 0:
		m := 0
		for i := range c[:n] {
			if c[i].p >= minP {
				c[m] = c[i]
				m++
			}
		}
		n = m
	}
	return c[:n]
}

// The top-p histogram: weights in (0, 1] are bucketed by binary exponent and the top 3 mantissa
// bits (8 buckets per octave, best first) over 64 octaves; smaller weights share the last bucket.
const (
	octaves    = 64
	numBuckets = octaves*8 + 1
)

// nucleus moves the top-p nucleus of c (unsorted weights in [0, 1], the best exactly 1) that
// also passes min-p (weights ≥ minP) to the front of c and returns its length. Instead of
// sorting all of c, a histogram finds the bucket where the sorted cumulative sum reaches
// target: heavier candidates are surely in, lighter ones surely out, and only the boundary
// bucket is sorted.
func (s *Sampler) nucleus(c []candidate, target, minP float64) int {
	lo, hi := s.bucketEdges(c, target)
	cut := max(lo, minP)
	// Partition: c[:a] sure members (w ≥ hi), c[a:m] the boundary (cut ≤ w < hi); drop the rest.
	a, m := 0, 0
	var cum float64
	for i := range c {
		x := c[i]
		if x.p < cut {
			continue
		}
		if x.p >= hi {
			c[m] = c[a]
			c[a] = x
			a++
			cum += x.p
		} else {
			c[m] = x
		}
		m++
	}
	if cum >= target {
		// Only by rounding (the histogram sums in another order): sort everything kept.
		slices.SortFunc(c[:m], cmpCand)
		return prefixReaching(c[:m], target, 0)
	}
	slices.SortFunc(c[a:m], cmpCand)
	return a + prefixReaching(c[a:m], target, cum)
}

// bucketEdges returns the edges [lo, hi) of the histogram bucket in which the weights of c,
// summed best first, reach target: the nucleus holds every weight ≥ hi and none below lo.
func (s *Sampler) bucketEdges(c []candidate, target float64) (lo, hi float64) {
	b := &s.buckets
	clear(b[:])
	for i := range c {
		bits := math.Float64bits(c[i].p)
		key := numBuckets - 1
		// For w in (0, 1]: w ∈ [2^-k, 2^-k+1) with k = 1023 - biased exponent.
		if k := 1023 - int(bits>>52&0x7ff); k < octaves {
			key = k*8 + 7 - int(bits>>49&7)
		}
		b[key] += c[i].p
	}
	var cum float64
	for key := range numBuckets - 1 {
		cum += b[key]
		if cum >= target {
			k, j := key/8, 7-key%8 // octave, top mantissa bits
			return math.Ldexp(float64(8+j), -k-3), math.Ldexp(float64(9+j), -k-3)
		}
	}
	return 0, math.Ldexp(1, 1-octaves)
}

// prefixReaching returns the length of the shortest prefix of c whose weights, added to cum,
// reach target, or len(c) if none does.
func prefixReaching(c []candidate, target, cum float64) int {
	for i := range c {
		cum += c[i].p
		if cum >= target {
			return i + 1
		}
	}
	return len(c)
}

// finiteBias reports whether every bias is finite.
func finiteBias(m map[int32]float32) bool {
	for _, b := range m {
		if b != b || math.IsInf(float64(b), 0) {
			return false
		}
	}
	return true
}

// penalties reports whether any penalty is on.
func (p *Params) penalties() bool {
	return p.RepeatLastN != 0 && (p.RepeatPenalty != 1 || p.FrequencyPenalty != 0 || p.PresencePenalty != 0)
}

// penalise applies the penalties to s.cands (still in id order) for the tokens of the window:
// the repetition penalty once per distinct token, then c·frequency + presence for a token seen
// c times (llama.cpp's order).
func (s *Sampler) penalise(history []int32) {
	if n := s.p.RepeatLastN; n >= 0 && n < len(history) {
		history = history[len(history)-n:]
	}
	s.gen++
	if s.gen == 0 { // wrapped: clear the marks
		clear(s.stamp)
		s.gen = 1
	}
	for _, t := range history {
		if t < 0 || int(t) >= s.vocab {
			continue
		}
		if s.stamp[t] != s.gen {
			s.stamp[t], s.count[t] = s.gen, 0
		}
		s.count[t]++
	}
	pen, freq, pres := s.p.RepeatPenalty, s.p.FrequencyPenalty, s.p.PresencePenalty
	for _, t := range history {
		if t < 0 || int(t) >= s.vocab || s.count[t] == 0 {
			continue // out of range, or already penalised (its count zeroed below)
		}
		l := s.cands[t].l
		if pen != 1 {
			if l > 0 {
				l /= pen
			} else {
				l *= pen
			}
		}
		if freq != 0 || pres != 0 {
			l -= float32(s.count[t])*freq + pres
		}
		s.cands[t].l = l
		s.count[t] = 0
	}
}

// better reports whether a ranks before b: higher logit, then lower id. It is a strict total
// order, so every selection and sort below is deterministic.
func better(a, b *candidate) bool {
	return a.l > b.l || (a.l == b.l && a.id < b.id)
}

func cmpCand(a, b candidate) int {
	switch {
	case better(&a, &b):
		return -1
	case better(&b, &a):
		return 1
	}
	return 0
}

// selectTop moves the k best candidates of c into c[:k] (in heap order), in O(len(c)·log k):
// a heap of the k best seen so far with the worst at the root.
func selectTop(c []candidate, k int) {
	h := c[:k]
	for i := k/2 - 1; i >= 0; i-- {
		siftDown(h, i)
	}
	for i := k; i < len(c); i++ {
		if better(&c[i], &h[0]) {
			h[0], c[i] = c[i], h[0]
			siftDown(h, 0)
		}
	}
}

// siftDown restores the worst-at-root heap property below i.
func siftDown(h []candidate, i int) {
	for {
		w := 2*i + 1
		if w >= len(h) {
			return
		}
		if r := w + 1; r < len(h) && better(&h[w], &h[r]) {
			w = r // the worse child
		}
		if better(&h[w], &h[i]) {
			return
		}
		h[i], h[w] = h[w], h[i]
		i = w
	}
}

// Argmax returns the index of the largest element of x (x: (n)), the lowest index on ties.
// NaN elements are never chosen; if every element is NaN or -Inf it returns 0, and for an empty
// x it returns -1.
func Argmax(x []float32) int32 {
	if len(x) == 0 {
		return -1
	}
	best := 0
	bv := float32(math.Inf(-1))
	for i, v := range x {
		if v > bv {
			best, bv = i, v
		}
	}
	return int32(best)
}

func isNaN32(f float32) bool { return f != f }
