package engine

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// logprobs is log-softmax against a float64 reference, its top list is the row's best ids in
// order (ties by lower id), and rows with −Inf, NaN and +Inf give what the sampler's
// treatment of them implies.
func TestLogprobs(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	row := make([]float32, 32000)
	for i := range row {
		row[i] = float32(r.NormFloat64() * 4)
	}
	row[17], row[99] = 30, 30 // a tie at the top: 17 first
	var z float64
	for _, l := range row {
		z += math.Exp(float64(l) - 30)
	}
	for _, next := range []int32{17, 99, 0, 31999} {
		lp := logprobs(row, next, 5)
		want := float64(row[next]) - 30 - math.Log(z)
		if lp.Token != next || math.Abs(float64(lp.Logprob)-want) > 1e-6 {
			t.Fatalf("token %d: logprob %g (token %d), want %g", next, lp.Logprob, lp.Token, want)
		}
		ids := make([]int32, len(row))
		for i := range ids {
			ids[i] = int32(i)
		}
		slices.SortStableFunc(ids, func(a, b int32) int {
			switch {
			case row[a] > row[b]:
				return -1
			case row[a] < row[b]:
				return 1
			}
			return 0
		})
		if len(lp.Top) != 5 {
			t.Fatalf("%d top entries, want 5", len(lp.Top))
		}
		for i, e := range lp.Top {
			if e.Token != ids[i] || math.Abs(float64(e.Logprob)-(float64(row[ids[i]])-30-math.Log(z))) > 1e-6 {
				t.Fatalf("top[%d] = %+v, want token %d", i, e, ids[i])
			}
		}
	}
	if lp := logprobs(row, 3, 0); lp.Top != nil {
		t.Fatalf("top 0 gave %v", lp.Top)
	}

	ninf, nan := float32(math.Inf(-1)), float32(math.NaN())
	for _, tc := range []struct {
		name string
		row  []float32
		next int32
		want float32
		top  []int32
	}{
		{"-inf entries", []float32{0, ninf, 0}, 0, float32(-math.Ln2), []int32{0, 2, 1}},
		{"nan is -inf", []float32{nan, 1, 1}, 0, ninf, []int32{1, 2}},
		{"all -inf", []float32{ninf, ninf}, 0, ninf, []int32{0, 1}},
		{"+inf is a point mass", []float32{1, float32(math.Inf(1)), 2}, 1, 0, []int32{1, 2, 0}},
		{"beside +inf", []float32{1, float32(math.Inf(1)), 2}, 2, ninf, []int32{1, 2, 0}},
		{"top longer than row", []float32{1, 2}, 1, float32(math.Log(1 / (1 + math.Exp(-1)))), []int32{1, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lp := logprobs(tc.row, tc.next, 5)
			if math.Abs(float64(lp.Logprob-tc.want)) > 1e-6 && lp.Logprob != tc.want {
				t.Fatalf("logprob %g, want %g", lp.Logprob, tc.want)
			}
			var got []int32
			for _, e := range lp.Top {
				got = append(got, e.Token)
				if e.Logprob != e.Logprob || e.Logprob > 0 {
					t.Fatalf("top %+v: logprob not in [−Inf, 0]", e)
				}
			}
			if !slices.Equal(got, tc.top) {
				t.Fatalf("top ids %v, want %v", got, tc.top)
			}
		})
	}
}
