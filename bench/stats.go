// Package bench is llamacu's benchmark harness: the statistics (mean, sample standard deviation,
// percentiles), a ProfilingBackend that times every Backend op and counts the bytes it moves, the
// model benchmark behind `llamacu bench` (prompt processing pp and token generation tg, as
// llama-bench measures them), the serving benchmark behind `llamacu bench serve` (TTFT, TPOT, ITL,
// end-to-end latency, as vLLM's benchmark_serving measures them), the device's measured copy
// bandwidth, and the reports: Markdown, JSON (the schema in bench/results/README.md), CSV, and an
// SVG plot of tokens/s against batch size and context depth.
package bench

import (
	"math"
	"slices"
)

// Summary describes a sample.
type Summary struct {
	N      int     `json:"n"`
	Mean   float64 `json:"mean"`
	Stddev float64 `json:"stddev"` // sample standard deviation (n−1), 0 for n < 2
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Median float64 `json:"median"`
	P90    float64 `json:"p90"`
	P99    float64 `json:"p99"`
}

// Summarize computes the Summary of xs (the zero Summary for an empty sample).
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return Summary{
		N: len(s), Mean: Mean(s), Stddev: Stddev(s), Min: s[0], Max: s[len(s)-1],
		Median: percentileSorted(s, 50), P90: percentileSorted(s, 90), P99: percentileSorted(s, 99),
	}
}

// Mean is the arithmetic mean (NaN for an empty sample).
func Mean(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

// Stddev is the sample standard deviation, sqrt(Σ(x−mean)²/(n−1)), as llama-bench reports it
// (Bessel's correction: the repetitions are a sample of the run-to-run noise). It is 0 for n < 2.
func Stddev(xs []float64) float64 {
	if len(xs) < 2 {
		return 0
	}
	m := Mean(xs)
	var ss float64
	for _, x := range xs {
		ss += (x - m) * (x - m)
	}
	return math.Sqrt(ss / float64(len(xs)-1))
}

// Percentile is the p-th percentile (0 ≤ p ≤ 100) of xs by linear interpolation between closest
// ranks — Hyndman & Fan's type 7, the default of NumPy's percentile (which vLLM's benchmarks use),
// R's quantile and Excel's PERCENTILE.INC: with the sample sorted ascending as x[0..n−1],
//
//	h = (n−1)·p/100,  P = x[⌊h⌋] + (h − ⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋])
//
// so p = 0 is the minimum, p = 100 the maximum and p = 50 the median. NaN for an empty sample.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return percentileSorted(s, p)
}

func percentileSorted(s []float64, p float64) float64 {
	p = min(max(p, 0), 100)
	h := float64(len(s)-1) * p / 100
	lo := int(math.Floor(h))
	if lo >= len(s)-1 {
		return s[len(s)-1]
	}
	return s[lo] + (h-float64(lo))*(s[lo+1]-s[lo])
}
