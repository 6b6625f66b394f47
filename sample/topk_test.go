package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// awkwardRow returns logits with ties, NaN, ±Inf and ±0 sprinkled over normal values.
func awkwardRow(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		switch r.IntN(20) {
		case 0:
			x[i] = float32(math.NaN())
		case 1:
			x[i] = float32(math.Inf(-1))
		case 2:
			x[i] = float32(math.Copysign(0, -1))
		case 3:
			x[i] = 0
		case 4, 5, 6:
			x[i] = float32(r.IntN(4)) // many exact ties
		default:
			x[i] = float32(r.NormFloat64() * 3)
		}
	}
	if r.IntN(8) == 0 {
		x[r.IntN(n)] = float32(math.Inf(1))
	}
	return x
}

// topKSorted is TopK written the obvious way: sort every (value, id) pair.
func topKSorted(row []float32, k int) ([]float32, []int32) {
	ids := make([]int32, len(row))
	for i := range ids {
		ids[i] = int32(i)
	}
	slices.SortFunc(ids, func(a, b int32) int {
		va, vb := canonical(row[a]), canonical(row[b])
		switch {
		case beats(va, a, vb, b):
			return -1
		case beats(vb, b, va, a):
			return 1
		}
		return 0
	})
	vals := make([]float32, k)
	for i := range vals {
		vals[i] = canonical(row[ids[i]])
	}
	return vals, ids[:k]
}

func TestTopK(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1, 2, 5, 64, 1000, 32000} {
		for _, k := range []int{1, 2, 7, 40, 256} {
			if k > n {
				continue
			}
			row := awkwardRow(r, n)
			wantV, wantI := topKSorted(row, k)
			vals, ids := make([]float32, k), make([]int32, k)
			TopK(vals, ids, row, k)
			for i := range k {
				if ids[i] != wantI[i] || math.Float32bits(vals[i]) != math.Float32bits(wantV[i]) {
					t.Fatalf("n %d k %d: candidate %d is (%v, %d), want (%v, %d)", n, k, i, vals[i], ids[i], wantV[i], wantI[i])
				}
			}
			// Merging shuffled halves of a longer list gives the same k.
			cv, cid := make([]float32, 0, n), make([]int32, 0, n)
			for _, j := range r.Perm(n) {
				cv, cid = append(cv, row[j]), append(cid, int32(j))
			}
			clear(vals)
			MergeTopK(vals, ids, cv, cid, k)
			if !slices.Equal(ids, wantI) {
				t.Fatalf("n %d k %d: MergeTopK ids %v, want %v", n, k, ids, wantI)
			}
		}
	}
}

// TestSampleTopEqualsSample: for every parameter set whose TopKNeeded is k > 0, a Sampler fed
// the k best candidates draws exactly the tokens a Sampler with the same seed draws from the
// whole rows, call after call.
func TestSampleTopEqualsSample(t *testing.T) {
	const vocab = 3000
	params := []Params{
		GreedyParams(),
		DefaultParams(),
		with(DefaultParams(), func(p *Params) { p.TopK = 1; p.Temperature = 1.3 }),
		with(DefaultParams(), func(p *Params) { p.TopK = 2 }),
		with(DefaultParams(), func(p *Params) { p.TopK = 256; p.TopP = 1; p.MinP = 0; p.Temperature = 2 }),
		with(DefaultParams(), func(p *Params) { p.TopK = 50; p.TopP = 0.5 }),
		with(DefaultParams(), func(p *Params) { p.TopK = 100; p.TopP = 1; p.MinP = 0.3; p.Temperature = 0.3 }),
		with(DefaultParams(), func(p *Params) { p.RepeatPenalty = 1.1; p.RepeatLastN = 0 }), // penalty looks at nothing
	}
	r := rand.New(rand.NewPCG(9, 10))
	for i, p := range params {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			p.Seed = uint64(i) * 77
			whole, top := mustNew(t, p, vocab), mustNew(t, p, vocab)
			k := top.TopKNeeded()
			if k == 0 {
				t.Fatalf("%+v: TopKNeeded 0", p)
			}
			vals, ids := make([]float32, k), make([]int32, k)
			for call := range 300 {
				row := randLogits(vocab, 2, uint64(call)+100*uint64(i))
				if call%3 == 0 {
					row = awkwardRow(r, vocab)
				}
				TopK(vals, ids, row, k)
				want := whole.Sample(row, nil)
				if got := top.SampleTop(vals, ids); got != want {
					t.Fatalf("call %d: SampleTop %d, Sample %d", call, got, want)
				}
			}
		})
	}
}

func TestTopKNeeded(t *testing.T) {
	const vocab = 100
	for _, c := range []struct {
		p    Params
		want int
	}{
		{GreedyParams(), 1},
		{DefaultParams(), 40},
		{with(DefaultParams(), func(p *Params) { p.TopK = 0 }), 0},     // top-p alone: any number
		{with(DefaultParams(), func(p *Params) { p.TopK = vocab }), 0}, // top-k covers the row
		{with(DefaultParams(), func(p *Params) { p.RepeatPenalty = 1.1 }), 0},
		{with(GreedyParams(), func(p *Params) { p.RepeatPenalty = 1.1; p.RepeatLastN = 8 }), 0},
		{with(DefaultParams(), func(p *Params) { p.TopK = 1 }), 1},
		{with(DefaultParams(), func(p *Params) { p.Temperature = 0 }), 1},
		{with(GreedyParams(), func(p *Params) { p.LogitBias = map[int32]float32{7: 5} }), 0}, // can lift any token
	} {
		if got := mustNew(t, c.p, vocab).TopKNeeded(); got != c.want {
			t.Errorf("%+v: TopKNeeded %d, want %d", c.p, got, c.want)
		}
	}
}

func TestSampleTopPanicsOnTooFew(t *testing.T) {
	s := mustNew(t, DefaultParams(), 100)
	defer func() {
		if recover() == nil {
			t.Error("SampleTop with 39 of the 40 candidates it needs did not panic")
		}
	}()
	s.SampleTop(make([]float32, 39), make([]int32, 39))
}

func TestSampleTopNoAllocs(t *testing.T) {
	s := mustNew(t, DefaultParams(), 32000)
	row := randLogits(32000, 2, 1)
	vals, ids := make([]float32, 40), make([]int32, 40)
	TopK(vals, ids, row, 40)
	if a := testing.AllocsPerRun(100, func() { TopK(vals, ids, row, 40); s.SampleTop(vals, ids) }); a != 0 {
		t.Errorf("TopK + SampleTop allocate %v times per call", a)
	}
}

// BenchmarkSampleTop compares the host cost of sampling from 40 device candidates with Sample
// on the whole 32000-token row (llama.cpp's default chain).
func BenchmarkSampleTop(b *testing.B) {
	row := randLogits(32000, 2, 1)
	vals, ids := make([]float32, 40), make([]int32, 40)
	TopK(vals, ids, row, 40)
	b.Run("whole-row", func(b *testing.B) {
		s := mustNew(b, DefaultParams(), 32000)
		for b.Loop() {
			s.Sample(row, nil)
		}
	})
	b.Run("top40", func(b *testing.B) {
		s := mustNew(b, DefaultParams(), 32000)
		for b.Loop() {
			s.SampleTop(vals, ids)
		}
	})
	b.Run("host-topk40", func(b *testing.B) {
		for b.Loop() {
			TopK(vals, ids, row, 40)
		}
	})
}
