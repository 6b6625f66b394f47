package cpu

import (
	"strings"
	"testing"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// TestProgrammerErrors: shape mismatches panic on the calling goroutine (never inside a worker),
// with a message naming the shapes.
func TestProgrammerErrors(t *testing.T) {
	be := New(Options{Threads: 2})
	defer be.Close()
	w, err := be.Upload(&tensor.Tensor{Name: "w", DType: tensor.F32, Shape: []int{4, 8}, Data: make([]byte, 4*8*4)})
	if err != nil {
		t.Fatal(err)
	}
	nb := func(r, c int) model.Buffer { return mustBuf(t, be, r, c) }
	x8, out4, x5 := nb(2, 8), nb(2, 4), nb(2, 5)
	c, err := be.NewKVCache(model.KVLayout{Layers: 1, KVHeads: 1, HeadDim: 4, BlockSize: 2, NumBlocks: 2})
	if err != nil {
		t.Fatal(err)
	}
	q, o := nb(1, 4), nb(1, 4)
	for _, tc := range []struct {
		name, want string
		op         func()
	}{
		{"MatMul/K", "x (1, 5) · w[4 8]", func() { be.MatMul(out4, x5, w, 1) }},
		{"MatMul/rows", "3 rows", func() { be.MatMul(out4, x8, w, 3) }},
		{"MatMul/alias", "must not", func() { be.MatMul(x8, x8, w, 1) }},
		{"Add/cols", "(1, 8)", func() { be.Add(x8, x5, 1) }},
		{"Embed/token", "token 4", func() { be.Embed(x8, w, []int32{4}) }},
		{"GatherRows/row", "row 2", func() { be.GatherRows(nb(1, 8), x8, []int32{2}) }},
		{"RoPE/headDim", "head_dim 3", func() { be.RoPE(x8, 3, []int32{0}, 1e4) }},
		{"Attention/block", "block 7", func() {
			be.Attention(o, q, c, 0, &model.Batch{Tokens: []int32{0}, Pos: []int32{3}, Seq: []int32{0}, BlockTables: [][]int32{{7, 1}}})
		}},
		{"Attention/beyond-table", "beyond its 1 blocks", func() {
			be.Attention(o, q, c, 0, &model.Batch{Tokens: []int32{0}, Pos: []int32{3}, Seq: []int32{0}, BlockTables: [][]int32{{1}}})
		}},
		{"StoreKV/layer", "layer 1 of 1", func() {
			be.StoreKV(c, 1, q, q, &model.Batch{Tokens: []int32{0}, Pos: []int32{0}, Seq: []int32{0}, BlockTables: [][]int32{{1}}})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatal("no panic")
				}
				if msg, _ := r.(string); !strings.Contains(msg, tc.want) {
					t.Errorf("panic %q does not mention %q", r, tc.want)
				}
			}()
			tc.op()
		})
	}
	// the backend still works after a recovered panic
	be.MatMul(out4, x8, w, 2)
}

func TestBadSizes(t *testing.T) {
	be := New(Options{Threads: 1})
	defer be.Close()
	if _, err := be.NewBuffer(0, 4); err == nil {
		t.Error("NewBuffer(0, 4) = nil error")
	}
	if _, err := be.NewKVCache(model.KVLayout{Layers: 1, KVHeads: 1, HeadDim: 4, BlockSize: 0, NumBlocks: 1}); err == nil {
		t.Error("NewKVCache with block size 0 = nil error")
	}
	if _, err := be.Upload(&tensor.Tensor{Name: "cube", DType: tensor.F32, Shape: []int{2, 2, 2}, Data: make([]byte, 32)}); err == nil {
		t.Error("Upload of a 3-D tensor = nil error")
	}
	if err := be.Read(make([]float32, 3), mustBuf(t, be, 2, 2), 2); err == nil {
		t.Error("Read into a short slice = nil error")
	}
}
