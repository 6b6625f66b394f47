package model_test

import (
	"math"
	"testing"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

func newTiny(tb testing.TB, dtype tensor.DType) *model.Model {
	tb.Helper()
	cfg := model.Tiny
	m, err := model.New(cpu.New(cpu.Options{Threads: 2}), cfg, model.Synthetic(cfg, 1, dtype), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Backend.Close() })
	return m
}

var prompt = []int32{1, 37, 400, 12, 99, 250, 3, 511, 77, 200, 18, 42, 5, 6, 301, 17, 88, 9, 140}

// seqLogits runs tokens one step at a time (pure decode) and returns each step's logits.
func seqLogits(tb testing.TB, m *model.Model, toks []int32, table []int32) [][]float32 {
	tb.Helper()
	s, err := m.NewState(1, 1, 4, 16)
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]float32
	for i, tok := range toks {
		b := &model.Batch{Tokens: []int32{tok}, Pos: []int32{int32(i)}, Seq: []int32{0}, BlockTables: [][]int32{table}}
		l, err := m.Forward(s, b, []int32{0})
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, append([]float32(nil), l...))
	}
	return out
}

func maxDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// Prefill in one batch, decode one at a time, and two sequences sharing a batch with scattered
// KV blocks must all give the same logits: one code path for every kind of step.
func TestBatchShapesAgree(t *testing.T) {
	m := newTiny(t, tensor.F32)
	ref := seqLogits(t, m, prompt, []int32{0, 1, 2, 3, 4})

	// Whole prompt in one batch, logits for every row.
	s, err := m.NewState(len(prompt), len(prompt), 4, 16)
	if err != nil {
		t.Fatal(err)
	}
	b := &model.Batch{Tokens: prompt, BlockTables: [][]int32{{9, 3, 12, 0, 7}}}
	rows := make([]int32, len(prompt))
	for i := range prompt {
		b.Pos = append(b.Pos, int32(i))
		b.Seq = append(b.Seq, 0)
		rows[i] = int32(i)
	}
	l, err := m.Forward(s, b, rows)
	if err != nil {
		t.Fatal(err)
	}
	v := m.Config.Vocab
	for i := range prompt {
		if d := maxDiff(l[i*v:(i+1)*v], ref[i]); d > 1e-4 {
			t.Errorf("prefill row %d differs from decode by %g", i, d)
		}
	}

	// Two sequences interleaved: A = prompt, B = prompt reversed, in mixed chunks.
	rev := make([]int32, len(prompt))
	for i := range prompt {
		rev[i] = prompt[len(prompt)-1-i]
	}
	refB := seqLogits(t, m, rev, []int32{0, 1, 2, 3, 4})
	s2, _ := m.NewState(8, 2, 4, 16)
	tables := [][]int32{{15, 2, 8, 11, 5}, {1, 14, 4, 6, 13}}
	posA, posB := 0, 0
	for posA < len(prompt) || posB < len(rev) {
		bb := &model.Batch{BlockTables: tables}
		var lr []int32
		for k := 0; k < 3 && posA < len(prompt); k++ { // up to 3 of A (a prefill chunk)
			bb.Tokens, bb.Pos, bb.Seq = append(bb.Tokens, prompt[posA]), append(bb.Pos, int32(posA)), append(bb.Seq, 0)
			posA++
		}
		if len(bb.Tokens) > 0 {
			lr = append(lr, int32(len(bb.Tokens)-1))
		}
		if posB < len(rev) { // one of B (a decode step)
			bb.Tokens, bb.Pos, bb.Seq = append(bb.Tokens, rev[posB]), append(bb.Pos, int32(posB)), append(bb.Seq, 1)
			posB++
			lr = append(lr, int32(len(bb.Tokens)-1))
		}
		l, err := m.Forward(s2, bb, lr)
		if err != nil {
			t.Fatal(err)
		}
		for j, r := range lr {
			want := ref[posA-1]
			if bb.Seq[r] == 1 {
				want = refB[posB-1]
			}
			if d := maxDiff(l[j*v:(j+1)*v], want); d > 1e-4 {
				t.Errorf("mixed batch: seq %d pos %d differs by %g", bb.Seq[r], bb.Pos[r], d)
			}
		}
	}
}

// A decode step allocates nothing (DESIGN.md: allocate at load, never per token).
func TestDecodeStepDoesNotAllocate(t *testing.T) {
	m := newTiny(t, tensor.F32)
	s, err := m.NewState(1, 1, 16, 8)
	if err != nil {
		t.Fatal(err)
	}
	b := &model.Batch{Tokens: []int32{5}, Pos: []int32{0}, Seq: []int32{0}, BlockTables: [][]int32{{0, 1, 2, 3, 4, 5, 6, 7}}}
	rows := []int32{0}
	pos := int32(0)
	allocs := testing.AllocsPerRun(20, func() {
		b.Pos[0] = pos
		pos++
		if _, err := m.Forward(s, b, rows); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Forward allocates %v times per decode step", allocs)
	}
}

// Bad batches are errors, not panics.
func TestForwardRejectsBadBatches(t *testing.T) {
	m := newTiny(t, tensor.F32)
	s, _ := m.NewState(2, 1, 4, 4)
	tbl := [][]int32{{0, 1}}
	for name, b := range map[string]*model.Batch{
		"empty":          {BlockTables: tbl},
		"too many":       {Tokens: []int32{1, 2, 3}, Pos: []int32{0, 1, 2}, Seq: []int32{0, 0, 0}, BlockTables: tbl},
		"token range":    {Tokens: []int32{512}, Pos: []int32{0}, Seq: []int32{0}, BlockTables: tbl},
		"negative token": {Tokens: []int32{-1}, Pos: []int32{0}, Seq: []int32{0}, BlockTables: tbl},
		"no block":       {Tokens: []int32{1}, Pos: []int32{8}, Seq: []int32{0}, BlockTables: tbl},
		"bad block id":   {Tokens: []int32{1}, Pos: []int32{0}, Seq: []int32{0}, BlockTables: [][]int32{{4}}},
		"no table":       {Tokens: []int32{1}, Pos: []int32{0}, Seq: []int32{1}, BlockTables: tbl},
		"ragged":         {Tokens: []int32{1, 2}, Pos: []int32{0}, Seq: []int32{0, 0}, BlockTables: tbl},
		"context":        {Tokens: []int32{1}, Pos: []int32{512}, Seq: []int32{0}, BlockTables: tbl},
	} {
		if _, err := m.Forward(s, b, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	ok := &model.Batch{Tokens: []int32{1}, Pos: []int32{0}, Seq: []int32{0}, BlockTables: tbl}
	if _, err := m.Forward(s, ok, []int32{1}); err == nil {
		t.Error("logit row outside the batch: no error")
	}
}

// Quantized and half-precision weights run through the same pass and stay close to F32.
func TestWeightDTypesAgree(t *testing.T) {
	ref := seqLogits(t, newTiny(t, tensor.F32), prompt[:6], []int32{0, 1})
	for _, tc := range []struct {
		d   tensor.DType
		tol float64
	}{{tensor.F16, 2e-3}, {tensor.BF16, 2e-2}, {tensor.Q8_0, 2e-2}, {tensor.Q4_0, 2e-1}} {
		got := seqLogits(t, newTiny(t, tc.d), prompt[:6], []int32{0, 1})
		for i := range got {
			if d := maxDiff(got[i], ref[i]); d > tc.tol {
				t.Errorf("%v step %d: max |Δlogit| %g > %g", tc.d, i, d, tc.tol)
			}
		}
	}
}
