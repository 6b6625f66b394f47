//go:build cuda || cudaemu

package gpu_test

import (
	"math"
	"testing"

	"github.com/llamacu/llamacu/gpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// TestDecodeV4InModel runs decode attention v4 where the model uses it (fp16 cache, head_dim
// 128, GQA 4): a 64-token prompt, then decode steps whose context crosses a split boundary, so
// that v4 merges two splits in the kernel (its last block per KV head) instead of launching the
// reduce. Checked against v3's decode attention (its partials merged by attention_reduce_f32_v2)
// and with the steps replayed as CUDA graphs, where the split counters the kernel leaves at zero
// must be zero again at every replay.
func TestDecodeV4InModel(t *testing.T) {
	cfg := model.Config{Name: "hd128-gqa4", Dim: 512, Layers: 2, Heads: 4, KVHeads: 1, FFN: 1024, Vocab: 512,
		MaxSeq: 512, NormEps: 1e-5, RopeTheta: 10000}
	const prompt, steps = 64, 6
	type run struct {
		logits   [][]float32 // per decode step
		launches []int64
		be       *gpu.Backend
	}
	do := func(opts gpu.Options) run {
		be := open(t, opts)
		m, err := model.New(be, cfg, model.Synthetic(cfg, 3, tensor.F16), nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := m.NewState(prompt, 1, 16, 8)
		if err != nil {
			t.Fatal(err)
		}
		table := [][]int32{{5, 0, 7, 2, 1, 6, 3, 4}} // paged out of order
		bt := &model.Batch{BlockTables: table}
		for p := 0; p < prompt; p++ {
			bt.Tokens, bt.Pos, bt.Seq = append(bt.Tokens, int32(p*7%cfg.Vocab)), append(bt.Pos, int32(p)), append(bt.Seq, 0)
		}
		if _, err := m.Forward(s, bt, []int32{prompt - 1}); err != nil {
			t.Fatal(err)
		}
		r := run{be: be}
		for i := 0; i < steps; i++ {
			bt := &model.Batch{Tokens: []int32{int32(11 * i)}, Pos: []int32{int32(prompt + i)}, Seq: []int32{0}, BlockTables: table}
			before := be.Launches()
			l, err := m.Forward(s, bt, []int32{0})
			if err != nil {
				t.Fatal(err)
			}
			r.launches = append(r.launches, be.Launches()-before)
			r.logits = append(r.logits, append([]float32(nil), l...))
		}
		return r
	}
	v4 := do(gpu.Options{Weights: tensor.F16})
	v3 := do(gpu.Options{Weights: tensor.F16, Decode: 3})
	graphs := do(gpu.Options{Weights: tensor.F16, Graphs: true})

	for i := 0; i < steps; i++ {
		// Context prompt + i + 1 ≥ 65: two 64-token splits, merged by v4 itself and by v3's reduce.
		if want := v3.launches[i] - int64(cfg.Layers); v4.launches[i] != want {
			t.Errorf("decode step %d: %d launches with v4, %d with v3: want v4 one per layer fewer (no reduce)", i, v4.launches[i], v3.launches[i])
		}
		scale := 0.0
		for _, x := range v3.logits[i] {
			scale = max(scale, math.Abs(float64(x)))
		}
		for j := range v4.logits[i] {
			if d := math.Abs(float64(v4.logits[i][j] - v3.logits[i][j])); d > 1e-4*scale {
				t.Fatalf("decode step %d, logit %d: %v with v4, %v with v3 (|diff| %.3g, scale %.3g)", i, j, v4.logits[i][j], v3.logits[i][j], d, scale)
			}
			if math.Float32bits(graphs.logits[i][j]) != math.Float32bits(v4.logits[i][j]) {
				t.Fatalf("decode step %d, logit %d: %v replayed as a graph, %v launched directly", i, j, graphs.logits[i][j], v4.logits[i][j])
			}
		}
	}
	// The first decode step runs directly (a new step), the second is captured, the rest replay.
	if st := graphs.be.GraphStats(); st.Captured+st.Replayed < steps-2 || st.Replayed < 2 || st.Failed > 0 {
		t.Errorf("graph stats %+v: want the decode steps replayed", st)
	}
}
