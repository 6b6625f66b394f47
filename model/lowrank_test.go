package model_test

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// lowRankPairs makes rank-r pairs (F32) for some projections of cfg: name → A (r, in), B (out, r).
func lowRankPairs(cfg model.Config, r int) map[string][2]*tensor.Tensor {
	rng := rand.New(rand.NewPCG(4, 4))
	shapes := map[string][]int{}
	for _, ws := range cfg.WeightShapes() {
		shapes[ws.Name] = ws.Shape
	}
	rnd := func(n int, scale float64) []byte {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * scale)
		}
		return tensor.Encode(tensor.F32, v)
	}
	out := map[string][2]*tensor.Tensor{}
	for _, name := range []string{model.LayerName(0, model.NameWq), model.LayerName(0, model.NameWv), model.LayerName(1, model.NameWk),
		model.LayerName(1, model.NameWo), model.LayerName(2, model.NameW1), model.LayerName(2, model.NameW2), model.LayerName(3, model.NameW3)} {
		o, in := shapes[name][0], shapes[name][1]
		out[name] = [2]*tensor.Tensor{
			{Name: name + ".a", DType: tensor.F32, Shape: []int{r, in}, Data: rnd(r*in, 0.3)},
			{Name: name + ".b", DType: tensor.F32, Shape: []int{o, r}, Data: rnd(o*r, 0.3)},
		}
	}
	return out
}

// merged is src with W + B·A for each pair, in F32.
func merged(src model.TensorSource, pairs map[string][2]*tensor.Tensor) model.TensorSource {
	return func(name string) (*tensor.Tensor, error) {
		t, err := src(name)
		if err != nil {
			return nil, err
		}
		p, ok := pairs[name]
		if !ok {
			return t, nil
		}
		w, a, b := t.Float32s(), p[0].Float32s(), p[1].Float32s()
		r, in := p[0].Shape[0], p[0].Shape[1]
		for o := range t.Shape[0] {
			for k := range in {
				d := float32(0)
				for j := range r {
					d += b[o*r+j] * a[j*in+k]
				}
				w[o*in+k] += d
			}
		}
		return &tensor.Tensor{Name: name, DType: tensor.F32, Shape: t.Shape, Data: tensor.Encode(tensor.F32, w)}, nil
	}
}

// widen decodes every tensor to F32.
func widen(src model.TensorSource) model.TensorSource {
	return func(name string) (*tensor.Tensor, error) {
		t, err := src(name)
		if err != nil {
			return nil, err
		}
		return &tensor.Tensor{Name: name, DType: tensor.F32, Shape: t.Shape, Data: tensor.Encode(tensor.F32, t.Float32s())}, nil
	}
}

// Pairs added at run time give the logits of the weights with B·A merged in — on F32 weights and
// on Q8_0 ones (against the Q8_0 weights decoded, then merged) — for a prefill and a decode step.
func TestLowRankEqualsMerged(t *testing.T) {
	cfg := model.Tiny
	pairs := lowRankPairs(cfg, 3)
	for _, dt := range []tensor.DType{tensor.F32, tensor.Q8_0} {
		src := model.Synthetic(cfg, 1, dt)
		be := cpu.New(cpu.Options{Threads: 2})
		defer be.Close()
		run, err := model.New(be, cfg, src, nil)
		if err != nil {
			t.Fatal(err)
		}
		for name, p := range pairs {
			if err := run.AddLowRank(name, p[0], p[1]); err != nil {
				t.Fatal(err)
			}
		}
		ref, err := model.New(be, cfg, merged(widen(src), pairs), nil)
		if err != nil {
			t.Fatal(err)
		}
		base, err := model.New(be, cfg, src, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, want, plain := seqLogits(t, run, prompt, []int32{0, 1, 2, 3, 4}), seqLogits(t, ref, prompt, []int32{0, 1, 2, 3, 4}), seqLogits(t, base, prompt, []int32{0, 1, 2, 3, 4})
		moved := 0.0
		for i := range got {
			if d := maxDiff(got[i], want[i]); d > 1e-4 {
				t.Errorf("%v: step %d: logits differ from the merged weights' by %g", dt, i, d)
			}
			moved = max(moved, maxDiff(got[i], plain[i]))
		}
		if moved < 1e-2 {
			t.Errorf("%v: the pairs moved the logits by %g only: the test would not tell", dt, moved)
		}
		// Prefill in one batch too.
		s, err := run.NewState(len(prompt), len(prompt), 4, 16)
		if err != nil {
			t.Fatal(err)
		}
		rows := make([]int32, len(prompt))
		for i := range rows {
			rows[i] = int32(i)
		}
		l, err := run.Forward(s, prefillBatch(prompt), rows)
		if err != nil {
			t.Fatal(err)
		}
		for i := range prompt {
			if d := maxDiff(l[i*cfg.Vocab:(i+1)*cfg.Vocab], want[i]); d > 1e-4 {
				t.Errorf("%v: prefill row %d differs by %g", dt, i, d)
			}
		}
	}
}

func TestLowRankErrors(t *testing.T) {
	cfg := model.Tiny
	m := newTiny(t, tensor.F32)
	pairs := lowRankPairs(cfg, 2)
	wq := model.LayerName(0, model.NameWq)
	s, err := m.NewState(1, 1, 4, 16) // before the pairs: no room for them
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		a, b *tensor.Tensor
	}{
		{model.NameOutput, pairs[wq][0], pairs[wq][1]},
		{model.LayerName(9, model.NameWq), pairs[wq][0], pairs[wq][1]},
		{model.LayerName(0, model.NameAttnNorm), pairs[wq][0], pairs[wq][1]},
		{model.LayerName(0, model.NameW1), pairs[wq][0], pairs[wq][1]}, // W1 is (352, 128): B's rows do not fit
	} {
		if err := m.AddLowRank(c.name, c.a, c.b); !errors.Is(err, model.ErrBadConfig) {
			t.Errorf("%s: got %v, want ErrBadConfig", c.name, err)
		}
	}
	if err := m.AddLowRank(wq, pairs[wq][0], pairs[wq][1]); err != nil {
		t.Fatal(err)
	}
	b := &model.Batch{Tokens: []int32{1}, Pos: []int32{0}, Seq: []int32{0}, BlockTables: [][]int32{{0}}}
	if _, err := m.Forward(s, b, []int32{0}); !errors.Is(err, model.ErrBatch) {
		t.Errorf("a State made before AddLowRank: got %v, want ErrBatch", err)
	}
}

// Under tensor parallelism each rank takes its shard of each pair — rows of B beside a
// row-split projection, columns of A beside a column-split one, whose partial B·(A·x) the
// all-reduce adds up: TP 2 and 4 give TP 1's logits (within the all-reduce's reordering).
func TestLowRankTensorParallel(t *testing.T) {
	cfg := model.Tiny
	pairs := lowRankPairs(cfg, 3)
	for _, dt := range []tensor.DType{tensor.F32, tensor.Q8_0} {
		src := model.Synthetic(cfg, 1, dt)
		var want [][]float32
		for _, n := range []int{1, 2, 4} {
			m := newTP(t, cfg, src, n)
			for name, p := range pairs {
				if err := m.AddLowRank(name, p[0], p[1]); err != nil {
					t.Fatal(err)
				}
			}
			_, logits := greedy(t, m, 12)
			if n == 1 {
				want = logits
				continue
			}
			for i := range logits {
				if d := maxDiff(logits[i], want[i]); d > 1e-4 {
					t.Errorf("%v, TP %d, step %d: logits differ from TP 1 by %g", dt, n, i, d)
				}
			}
		}
	}
}
