package model_test

import (
	"errors"
	"testing"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// prefillBatch is the prompt as one sequence in one batch, in blocks of 4 tokens.
func prefillBatch(toks []int32) *model.Batch {
	b := &model.Batch{Tokens: toks, BlockTables: [][]int32{{9, 3, 12, 0, 7}}}
	for i := range toks {
		b.Pos = append(b.Pos, int32(i))
		b.Seq = append(b.Seq, 0)
	}
	return b
}

// The hidden state ForwardHidden returns is what the LM head reads: its product with the output
// matrix, done here on the host in float64, is the logits row Forward returns for that token.
// Rows come back in the order asked, whatever the logit rows are.
func TestForwardHiddenIsWhatTheLMHeadReads(t *testing.T) {
	cfg := model.Tiny
	src := model.Synthetic(cfg, 1, tensor.F32)
	m := newTiny(t, tensor.F32)
	name := model.NameOutput
	if cfg.TiedOutput {
		name = model.NameTokEmbed
	}
	out, err := src(name)
	if err != nil {
		t.Fatal(err)
	}
	wout := out.Float32s() // (vocab, dim)

	n := len(prompt)
	s, err := m.NewState(n, n, 4, 16)
	if err != nil {
		t.Fatal(err)
	}
	all := make([]int32, n)
	for i := range all {
		all[i] = int32(i)
	}
	logits, err := m.Forward(s, prefillBatch(prompt), all)
	if err != nil {
		t.Fatal(err)
	}
	logits = append([]float32(nil), logits...)

	hiddenRows := []int32{int32(n - 1), 0, 7, 7} // any order, repeats allowed
	for _, logitRows := range [][]int32{nil, {3}, all} {
		l, h, err := m.ForwardHidden(s, prefillBatch(prompt), logitRows, hiddenRows)
		if err != nil {
			t.Fatal(err)
		}
		if len(l) != len(logitRows)*cfg.Vocab || len(h) != len(hiddenRows)*cfg.Dim {
			t.Fatalf("logit rows %v: got %d logits and %d hidden values", logitRows, len(l), len(h))
		}
		for i, r := range logitRows {
			if d := maxDiff(l[i*cfg.Vocab:(i+1)*cfg.Vocab], logits[int(r)*cfg.Vocab:(int(r)+1)*cfg.Vocab]); d > 1e-5 {
				t.Errorf("logit rows %v: row %d differs from Forward's by %g", logitRows, r, d)
			}
		}
		for i, r := range hiddenRows {
			row := h[i*cfg.Dim : (i+1)*cfg.Dim]
			want := logits[int(r)*cfg.Vocab : (int(r)+1)*cfg.Vocab]
			for v := 0; v < cfg.Vocab; v++ {
				dot := 0.0
				for j, x := range row {
					dot += float64(x) * float64(wout[v*cfg.Dim+j])
				}
				if d := dot - float64(want[v]); d > 1e-4 || d < -1e-4 {
					t.Fatalf("logit rows %v: hidden row of token %d times the LM head gives %g for logit %d, Forward %g", logitRows, r, dot, v, want[v])
				}
			}
		}
	}
}

// Under tensor parallelism the hidden state is rank 0's copy of the all-reduced residual stream:
// the same as one rank's, at TP 2 and 4.
func TestForwardHiddenTensorParallel(t *testing.T) {
	cfg := model.Tiny
	src := model.Synthetic(cfg, 1, tensor.F32)
	n := len(prompt)
	hiddenOf := func(m *model.Model) []float32 {
		s, err := m.NewState(n, n, 4, 16)
		if err != nil {
			t.Fatal(err)
		}
		_, h, err := m.ForwardHidden(s, prefillBatch(prompt), []int32{int32(n - 1)}, []int32{0, 5, int32(n - 1)})
		if err != nil {
			t.Fatal(err)
		}
		return append([]float32(nil), h...)
	}
	want := hiddenOf(newTP(t, cfg, src, 1))
	for _, tpn := range []int{2, 4} {
		got := hiddenOf(newTP(t, cfg, src, tpn))
		if d := maxDiff(got, want); d > 1e-5 {
			t.Errorf("TP %d: hidden states differ from TP 1 by %g", tpn, d)
		}
	}
}

func TestForwardHiddenBadRows(t *testing.T) {
	m := newTiny(t, tensor.F32)
	s, err := m.NewState(4, 2, 4, 16)
	if err != nil {
		t.Fatal(err)
	}
	toks := prompt[:4]
	for _, rows := range [][]int32{{4}, {-1}, {0, 1, 2}} {
		if _, _, err := m.ForwardHidden(s, prefillBatch(toks), nil, rows); !errors.Is(err, model.ErrBatch) {
			t.Errorf("hidden rows %v: got %v, want ErrBatch", rows, err)
		}
	}
}
