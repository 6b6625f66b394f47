//go:build cuda || cudaemu

package gpu_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/gpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// TestDecodeV4V5InModel runs decode attention v5 and v4 where the model uses them (fp16 cache,
// head_dim 128, GQA 4: v5 by default, v4 forced): a 64-token prompt, then decode steps whose
// context crosses a split boundary, so that each merges two splits in the kernel (its last block
// per KV head) instead of launching the reduce. Checked against v3's decode attention (its
// partials merged by attention_reduce_f32_v2) and with the steps replayed as CUDA graphs, where
// the split counters the kernel leaves at zero must be zero again at every replay.
func TestDecodeV4V5InModel(t *testing.T) {
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
	v5 := do(gpu.Options{Weights: tensor.F16})
	v4 := do(gpu.Options{Weights: tensor.F16, Decode: 4})
	v3 := do(gpu.Options{Weights: tensor.F16, Decode: 3})
	graphs := do(gpu.Options{Weights: tensor.F16, Graphs: true})

	for i := 0; i < steps; i++ {
		scale := 0.0
		for _, x := range v3.logits[i] {
			scale = max(scale, math.Abs(float64(x)))
		}
		for _, v := range []struct {
			name string
			r    run
		}{{"v5", v5}, {"v4", v4}} {
			// Context prompt + i + 1 ≥ 65: two splits, merged by the kernel itself and by v3's reduce.
			if want := v3.launches[i] - int64(cfg.Layers); v.r.launches[i] != want {
				t.Errorf("decode step %d: %d launches with %s, %d with v3: want one per layer fewer (no reduce)", i, v.r.launches[i], v.name, v3.launches[i])
			}
			for j := range v.r.logits[i] {
				if d := math.Abs(float64(v.r.logits[i][j] - v3.logits[i][j])); d > 1e-4*scale {
					t.Fatalf("decode step %d, logit %d: %v with %s, %v with v3 (|diff| %.3g, scale %.3g)", i, j, v.r.logits[i][j], v.name, v3.logits[i][j], d, scale)
				}
			}
		}
		for j := range v5.logits[i] {
			if math.Float32bits(graphs.logits[i][j]) != math.Float32bits(v5.logits[i][j]) {
				t.Fatalf("decode step %d, logit %d: %v replayed as a graph, %v launched directly", i, j, graphs.logits[i][j], v5.logits[i][j])
			}
		}
	}
	// The first decode step runs directly (a new step), the second is captured, the rest replay.
	if st := graphs.be.GraphStats(); st.Captured+st.Replayed < steps-2 || st.Replayed < 2 || st.Failed > 0 {
		t.Errorf("graph stats %+v: want the decode steps replayed", st)
	}
}

// TestDecodeBlocksPerSM: Options.DecodeBlocksPerSM sets how many splits v4 decode attention cuts
// a context into, and so which merge it takes, not what it computes. On the emulated device (8
// SMs), one row at 1000 tokens with 4 query heads per KV head: aimed at 1 block per SM, 8 splits
// (G·splits = 32: merged by the kernel, one launch); at 6, 16 splits (64: the reduce kernel too).
func TestDecodeBlocksPerSM(t *testing.T) {
	const heads, kvHeads, hd, ctx, bs = 4, 1, 128, 1000, 16
	r := rand.New(rand.NewPCG(71, 72))
	q := normal(r, heads*hd)
	kv := [2][]float32{normal(r, ctx*kvHeads*hd), normal(r, ctx*kvHeads*hd)}
	table := make([]int32, ctx/bs+1)
	for i := range table {
		table[i] = int32(len(table) - 1 - i) // paged out of order
	}
	var outs [2][]float32
	var launches [2]int64
	for i, perSM := range []int{1, 6} {
		be := open(t, gpu.Options{DecodeBlocksPerSM: perSM})
		if n := be.Context().SMCount(); n != 8 && cuda.Emulated {
			t.Fatalf("emulated device has %d SMs, the test assumes 8", n)
		}
		cache, err := be.NewKVCache(model.KVLayout{Layers: 1, KVHeads: kvHeads, HeadDim: hd, BlockSize: bs, NumBlocks: len(table)})
		if err != nil {
			t.Fatal(err)
		}
		fill := &model.Batch{BlockTables: [][]int32{table}}
		for p := 0; p < ctx; p++ {
			fill.Tokens, fill.Pos, fill.Seq = append(fill.Tokens, 0), append(fill.Pos, int32(p)), append(fill.Seq, 0)
		}
		be.StoreKV(cache, 0, newBuf(t, be, ctx, kvHeads*hd, kv[0]), newBuf(t, be, ctx, kvHeads*hd, kv[1]), fill)
		bt := &model.Batch{Tokens: []int32{0}, Pos: []int32{ctx - 1}, Seq: []int32{0}, BlockTables: [][]int32{table}}
		qb, ob := newBuf(t, be, 1, heads*hd, q), newBuf(t, be, 1, heads*hd, nil)
		before := be.Launches()
		be.Attention(ob, qb, cache, 0, bt)
		launches[i] = be.Launches() - before
		outs[i] = read(t, be, ob, 1)
	}
	if cuda.Emulated && (launches[0] != 1 || launches[1] != 2) {
		t.Errorf("launches %v at 1 and 6 blocks per SM: want 1 (merged in the kernel) and 2 (the reduce)", launches)
	}
	for j := range outs[0] {
		if d := math.Abs(float64(outs[0][j] - outs[1][j])); d > 1e-5 {
			t.Fatalf("element %d: %v with 8 splits, %v with 16", j, outs[0][j], outs[1][j])
		}
	}
}
