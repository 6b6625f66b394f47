package model_test

import (
	"testing"
	"time"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// TestCollectiveObserver: with an observer, rank 0 reports two all-reduces per layer per step,
// each of the step's rows × dim fp32 values; removing it stops the reports; a model without
// tensor parallelism has no all-reduces to report.
func TestCollectiveObserver(t *testing.T) {
	cfg := model.Tiny
	src := model.Synthetic(cfg, 1, tensor.F32)
	m := newTP(t, cfg, src, 2)
	s, err := m.NewState(4, 4, 16, 4)
	if err != nil {
		t.Fatal(err)
	}
	var calls int
	var sizes []int
	var total time.Duration
	m.SetCollectiveObserver(func(d time.Duration, bytes int) {
		calls++
		sizes = append(sizes, bytes)
		total += d
	})
	table := []int32{0, 1, 2, 3}
	step := func(tokens []int32, pos0 int) {
		t.Helper()
		b := &model.Batch{Tokens: tokens, Pos: make([]int32, len(tokens)), Seq: make([]int32, len(tokens)), BlockTables: [][]int32{table}}
		for i := range tokens {
			b.Pos[i] = int32(pos0 + i)
		}
		if _, err := m.Forward(s, b, []int32{int32(len(tokens) - 1)}); err != nil {
			t.Fatal(err)
		}
	}
	step([]int32{1, 5, 9}, 0) // a 3-token prefill
	step([]int32{7}, 3)       // a decode step
	if want := 2 * 2 * cfg.Layers; calls != want {
		t.Fatalf("%d all-reduces observed over two steps, want %d (2 per layer per step)", calls, want)
	}
	for i, b := range sizes {
		rows := 3
		if i >= 2*cfg.Layers {
			rows = 1
		}
		if b != 4*rows*cfg.Dim {
			t.Fatalf("all-reduce %d: %d bytes, want %d (%d rows × dim %d × 4)", i, b, 4*rows*cfg.Dim, rows, cfg.Dim)
		}
	}
	if total <= 0 {
		t.Errorf("observed all-reduce time %v, want > 0", total)
	}
	m.SetCollectiveObserver(nil)
	step([]int32{3}, 4)
	if calls != 2*2*cfg.Layers {
		t.Errorf("observer still called after removal: %d calls", calls)
	}

	be := cpu.New(cpu.Options{Threads: 1})
	defer be.Close()
	single, err := model.New(be, cfg, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	single.SetCollectiveObserver(func(time.Duration, int) { t.Error("observer called without tensor parallelism") })
	s1, err := single.NewState(1, 1, 16, 1)
	if err != nil {
		t.Fatal(err)
	}
	b := &model.Batch{Tokens: []int32{1}, Pos: []int32{0}, Seq: []int32{0}, BlockTables: [][]int32{{0}}}
	if _, err := single.Forward(s1, b, []int32{0}); err != nil {
		t.Fatal(err)
	}
}
