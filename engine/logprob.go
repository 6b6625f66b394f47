package engine

import "math"

// Logprob is one generated token's log probability under the model, and the step's most likely
// tokens (Request.TopLogprobs of them, best first, ties by lower id).
type Logprob struct {
	TokenLogprob
	Top []TokenLogprob
}

// TokenLogprob is a token id and its natural-log probability.
type TokenLogprob struct {
	Token   int32
	Logprob float32
}

// logprobs is log-softmax(row) at token next, and the top best tokens of the row. The sums run
// in float64 from the row's maximum, so a 32000-token row loses nothing to rounding; NaN
// logits count as −Inf, as the sampler treats them.
func logprobs(row []float32, next int32, top int) *Logprob {
	lmax := math.Inf(-1)
	for _, l := range row {
		if v := float64(l); v > lmax {
			lmax = v
		}
	}
	var z float64
	for _, l := range row {
		if v := float64(l); v == v && !math.IsInf(lmax, 0) {
			z += math.Exp(v - lmax)
		}
	}
	lse := lmax + math.Log(z)
	at := func(id int32) float32 {
		v := float64(row[id])
		switch {
		case v != v || math.IsInf(lmax, -1): // NaN, or a row of nothing but −Inf and NaN
			return float32(math.Inf(-1))
		case math.IsInf(lmax, 1): // a point mass on the +Inf logits
			if math.IsInf(v, 1) {
				return 0
			}
			return float32(math.Inf(-1))
		}
		return float32(v - lse)
	}
	lp := &Logprob{TokenLogprob: TokenLogprob{Token: next, Logprob: at(next)}}
	if top <= 0 {
		return lp
	}
	// The top best ids by insertion into a short sorted list (top ≤ MaxTopLogprobs).
	best := make([]int32, 0, top+1)
	for id := range row {
		l := row[id]
		if l != l {
			continue
		}
		if len(best) == top && !(l > row[best[top-1]]) {
			continue
		}
		j := len(best)
		for j > 0 && l > row[best[j-1]] {
			j--
		}
		best = append(best, 0)
		copy(best[j+1:], best[j:])
		best[j] = int32(id)
		best = best[:min(len(best), top)]
	}
	lp.Top = make([]TokenLogprob, len(best))
	for i, id := range best {
		lp.Top[i] = TokenLogprob{Token: id, Logprob: at(id)}
	}
	return lp
}
