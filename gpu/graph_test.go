//go:build cuda || cudaemu

package gpu_test

import (
	"testing"

	"github.com/llamacu/llamacu/gpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// TestPrefillStepsRunDirect: under Options.Graphs, the part of a prefill step before its first
// cuBLAS GEMM runs launch by launch, never as a captured or replayed graph — replaying one
// crashed cuGraphLaunch on an H200 (bench/results/gpu-h200-2026-11-28-run3) — while decode
// steps, whole logs, still replay.
func TestPrefillStepsRunDirect(t *testing.T) {
	be := open(t, gpu.Options{Weights: tensor.F16, Graphs: true})
	if !be.HasCublas() {
		t.Skip("no cuBLAS: prefill steps never flush for it")
	}
	cfg := model.Tiny
	m, err := model.New(be, cfg, model.Synthetic(cfg, 3, tensor.F16), nil)
	if err != nil {
		t.Fatal(err)
	}
	const prompt = 16 // more than 8 rows: cuBLAS
	s, err := m.NewState(prompt, 1, 16, 4)
	if err != nil {
		t.Fatal(err)
	}
	tables := [][]int32{{0, 1}}
	for rep := range 3 { // the same prefill step three times: a repeated log
		bt := &model.Batch{BlockTables: tables}
		for p := range prompt {
			bt.Tokens, bt.Pos, bt.Seq = append(bt.Tokens, int32(p*7%cfg.Vocab)), append(bt.Pos, int32(p)), append(bt.Seq, 0)
		}
		if _, err := m.Forward(s, bt, []int32{prompt - 1}); err != nil {
			t.Fatalf("prefill %d: %v", rep, err)
		}
	}
	if st := be.GraphStats(); st.Captured+st.Replayed != 0 {
		t.Fatalf("prefill steps ran as graphs: %+v", st)
	}
	for step := range 4 { // decode steps: whole logs, captured then replayed
		bt := &model.Batch{Tokens: []int32{5}, Pos: []int32{prompt + int32(step)}, Seq: []int32{0}, BlockTables: tables}
		if _, err := m.Forward(s, bt, []int32{0}); err != nil {
			t.Fatalf("decode %d: %v", step, err)
		}
	}
	if st := be.GraphStats(); st.Captured < 1 || st.Replayed < 1 {
		t.Fatalf("decode steps did not run as graphs: %+v", st)
	}
}
