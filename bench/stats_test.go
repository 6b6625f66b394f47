package bench

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// References: NumPy's documentation of numpy.percentile (method "linear"), and the textbook
// standard-deviation example (Wikipedia, "Standard deviation": 2, 4, 4, 4, 5, 5, 7, 9 has population
// standard deviation 2, so the sample one is sqrt(32/7)).
func TestPercentile(t *testing.T) {
	numpyDoc := []float64{10, 7, 4, 3, 2, 1} // np.percentile([[10, 7, 4], [3, 2, 1]], 50) == 3.5
	cases := []struct {
		name string
		xs   []float64
		p    float64
		want float64
	}{
		{"numpy-doc median", numpyDoc, 50, 3.5},
		{"min", numpyDoc, 0, 1},
		{"max", numpyDoc, 100, 10},
		// h = 5·0.9 = 4.5 → 7 + 0.5·(10−7)
		{"p90 of 6", numpyDoc, 90, 8.5},
		// h = 5·0.99 = 4.95 → 7 + 0.95·3
		{"p99 of 6", numpyDoc, 99, 9.85},
		// 1..10: h = 9·0.9 = 8.1 → 9 + 0.1·1 (numpy.percentile(range(1, 11), 90) == 9.1)
		{"p90 of 1..10", []float64{3, 1, 4, 10, 5, 9, 2, 6, 8, 7}, 90, 9.1},
		{"p25 of 1..4", []float64{1, 2, 3, 4}, 25, 1.75},
		{"single", []float64{42}, 99, 42},
		{"p clamped", []float64{1, 2}, 150, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.InDelta(t, tc.want, Percentile(tc.xs, tc.p), 1e-12)
		})
	}
	require.True(t, math.IsNaN(Percentile(nil, 50)))
}

func TestMeanStddev(t *testing.T) {
	xs := []float64{2, 4, 4, 4, 5, 5, 7, 9}
	require.Equal(t, 5.0, Mean(xs))
	require.InDelta(t, math.Sqrt(32.0/7), Stddev(xs), 1e-12)
	require.Zero(t, Stddev([]float64{3}))
	require.True(t, math.IsNaN(Mean(nil)))
}

func TestSummarize(t *testing.T) {
	xs := []float64{9, 2, 4, 4, 5, 4, 7, 5}
	s := Summarize(xs)
	require.InDelta(t, math.Sqrt(32.0/7), s.Stddev, 1e-12)
	s.Stddev = 0
	require.Equal(t, Summary{N: 8, Mean: 5, Min: 2, Max: 9, Median: 4.5,
		P90: 7.6 /* h = 6.3 → 7 + 0.3·2 */, P99: 8.86 /* h = 6.93 */}, roundSummary(s))
	require.Equal(t, []float64{9, 2, 4, 4, 5, 4, 7, 5}, xs, "the input is not reordered")
	require.Equal(t, Summary{}, Summarize(nil))
}

func roundSummary(s Summary) Summary {
	r := func(x float64) float64 { return math.Round(x*1e9) / 1e9 }
	s.Mean, s.Median, s.P90, s.P99 = r(s.Mean), r(s.Median), r(s.P90), r(s.P99)
	return s
}
