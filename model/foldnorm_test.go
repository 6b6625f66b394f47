package model_test

import (
	"math"
	"testing"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// folding is the cpu backend with model.NormFolder built from its primitives, by the
// interface's definition, that leaves x and h holding garbage afterwards (they are unspecified):
// a forward pass that read either after a fold would go wrong.
type folding struct {
	*cpu.Backend
	folds int
}

var _ model.NormFolder = (*folding)(nil)

// addNorm is xout = x + y; h = rmsnorm(xout)·norm, then x doubled.
func (f *folding) addNorm(xout, h, x, y model.Buffer, norm model.Weight, n int, eps float32) {
	rows := make([]int32, n)
	for i := range rows {
		rows[i] = int32(i)
	}
	f.GatherRows(xout, x, rows)
	f.Add(xout, y, n)
	f.RMSNorm(h, xout, norm, n, eps)
	f.Add(x, x, n)
	f.folds++
}

func (f *folding) AddRMSNormQKVRoPEStoreKV(xout, h, x, y model.Buffer, norm model.Weight, eps float32, q, k, v model.Buffer, wq, wk, wv model.Weight, c model.KVCache, layer int, b *model.Batch, headDim int, theta float32) {
	n := b.Len()
	f.addNorm(xout, h, x, y, norm, n, eps)
	f.MatMul(q, h, wq, n)
	f.MatMul(k, h, wk, n)
	f.MatMul(v, h, wv, n)
	f.RoPE(q, headDim, b.Pos, theta)
	f.RoPE(k, headDim, b.Pos, theta)
	f.StoreKV(c, layer, k, v, b)
	f.Add(h, h, n)
}

func (f *folding) AddRMSNormFFN(xout, h, x, y model.Buffer, norm model.Weight, eps float32, out, hb, tmp model.Buffer, gate, up, down model.Weight, n int) {
	f.addNorm(xout, h, x, y, norm, n, eps)
	f.MatMul(hb, h, gate, n)
	f.MatMul(tmp, h, up, n)
	f.SwiGLU(hb, hb, tmp, n)
	f.MatMul(out, hb, down, n)
}

// TestForwardWithNormFolder: with a backend that folds the norms, the forward pass moves the
// residual between its two buffers and reads it from the right one — the logits and final
// hidden states of a prefill step and of decode steps are those of the plain cpu backend —
// and folds every norm but the first layer's attention norm (which follows the embedding).
func TestForwardWithNormFolder(t *testing.T) {
	cfg := model.Tiny
	type run struct{ logits, hidden []float32 }
	var runs [2]run
	var folder *folding
	for i := range runs {
		var be model.Backend = cpu.New(cpu.Options{Threads: 2})
		if i == 1 {
			folder = &folding{Backend: be.(*cpu.Backend)}
			be = folder
		}
		m, err := model.New(be, cfg, model.Synthetic(cfg, 3, tensor.F32), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer be.Close()
		n := len(prompt)
		s, err := m.NewState(n, n, 4, 16)
		if err != nil {
			t.Fatal(err)
		}
		bt := prefillBatch(prompt)
		bt.BlockTables[0] = append(bt.BlockTables[0], 4, 1) // room for the decode steps
		l, h, err := m.ForwardHidden(s, bt, []int32{int32(n - 1), 2}, []int32{0, int32(n - 1)})
		if err != nil {
			t.Fatal(err)
		}
		runs[i].logits, runs[i].hidden = append(runs[i].logits, l...), append(runs[i].hidden, h...)
		for step := range 3 {
			if folder != nil {
				folder.folds = 0
			}
			dec := &model.Batch{Tokens: []int32{int32(7 + step)}, Pos: []int32{int32(n + step)}, Seq: []int32{0}, BlockTables: bt.BlockTables}
			l, h, err := m.ForwardHidden(s, dec, []int32{0}, []int32{0})
			if err != nil {
				t.Fatal(err)
			}
			runs[i].logits, runs[i].hidden = append(runs[i].logits, l...), append(runs[i].hidden, h...)
			if folder != nil && folder.folds != 2*cfg.Layers-1 {
				t.Errorf("decode step %d folded %d norms, want %d", step, folder.folds, 2*cfg.Layers-1)
			}
		}
	}
	for _, c := range []struct {
		what      string
		got, want []float32
	}{{"logits", runs[1].logits, runs[0].logits}, {"hidden", runs[1].hidden, runs[0].hidden}} {
		if len(c.got) != len(c.want) {
			t.Fatalf("%s: %d values, want %d", c.what, len(c.got), len(c.want))
		}
		for i := range c.want {
			if math.Float32bits(c.got[i]) != math.Float32bits(c.want[i]) {
				t.Fatalf("%s[%d] = %v with the folding backend, %v without", c.what, i, c.got[i], c.want[i])
			}
		}
	}
}
