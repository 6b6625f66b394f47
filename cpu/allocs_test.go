package cpu

import (
	"math/rand/v2"
	"testing"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// TestNoAllocs: no op allocates once buffers, weights and the cache exist (the decode loop's
// contract). Each op runs at a decode shape (n = 1) and a prefill shape, big enough to go
// parallel.
func TestNoAllocs(t *testing.T) {
	be := New(Options{Threads: 2, KeepHalf: true})
	defer be.Close()
	r := rand.New(rand.NewPCG(9, 9))
	const dim, ffn, heads, kvHeads, hd, B = 256, 512, 8, 4, 32, 16
	up := func(dt tensor.DType, shape ...int) model.Weight {
		n := 1
		for _, s := range shape {
			n *= s
		}
		w, err := be.Upload(&tensor.Tensor{Name: "w", DType: dt, Shape: shape, Data: tensor.Encode(dt, randVec(r, n, 0.1))})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	emb, norm := up(tensor.Q8_0, 100, dim), up(tensor.F32, dim)
	ws := map[string]model.Weight{}
	for _, dt := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16, tensor.Q8_0, tensor.Q4_0} {
		ws[dt.String()] = up(dt, ffn, dim)
	}
	x, x2 := mustBuf(t, be, B, dim), mustBuf(t, be, B, dim)
	h, h2 := mustBuf(t, be, B, ffn), mustBuf(t, be, B, ffn)
	q, o := mustBuf(t, be, B, heads*hd), mustBuf(t, be, B, heads*hd)
	k, v := mustBuf(t, be, B, kvHeads*hd), mustBuf(t, be, B, kvHeads*hd)
	c, err := be.NewKVCache(model.KVLayout{Layers: 1, KVHeads: kvHeads, HeadDim: hd, BlockSize: 16, NumBlocks: 8})
	if err != nil {
		t.Fatal(err)
	}
	tables := [][]int32{{3, 1, 6}, {0, 2}}
	decode := &model.Batch{Tokens: []int32{5, 7}, Pos: []int32{40, 20}, Seq: []int32{0, 1}, BlockTables: tables}
	prefill := &model.Batch{Tokens: make([]int32, B), Pos: make([]int32, B), Seq: make([]int32, B), BlockTables: tables}
	for i := range prefill.Pos {
		prefill.Pos[i] = int32(i)
	}
	dst := make([]float32, B*ffn)
	rows := []int32{B - 1}
	for _, bt := range []*model.Batch{decode, prefill} {
		n := bt.Len()
		ops := map[string]func(){
			"Embed":      func() { be.Embed(x, emb, bt.Tokens) },
			"RMSNorm":    func() { be.RMSNorm(x2, x, norm, n, 1e-5) },
			"RoPE":       func() { be.RoPE(q, hd, bt.Pos, 10000) },
			"StoreKV":    func() { be.StoreKV(c, 0, k, v, bt) },
			"Attention":  func() { be.Attention(o, q, c, 0, bt) },
			"SwiGLU":     func() { be.SwiGLU(h, h, h2, n) },
			"Add":        func() { be.Add(x, x2, n) },
			"GatherRows": func() { be.GatherRows(x2, x, rows) },
			"Read":       func() { _ = be.Read(dst, h, n) },
		}
		for name, w := range ws {
			ops["MatMul/"+name] = func() { be.MatMul(h, x, w, n) }
		}
		for name, op := range ops {
			op() // warm up (RoPE sizes its table once)
			if a := testing.AllocsPerRun(20, op); a != 0 {
				t.Errorf("%s (n=%d): %v allocations per call", name, n, a)
			}
		}
	}
}
