package engine_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
	"github.com/llamacu/llamacu/tp"
)

// countingComm is a tp.Comm that counts what goes through it.
type countingComm struct {
	tp.Comm
	reduces, closes *atomic.Int64
}

func (c countingComm) AllReduceSum(buf []float32) error {
	c.reduces.Add(1)
	return c.Comm.AllReduceSum(buf)
}

func (c countingComm) Close() error {
	c.closes.Add(1)
	return c.Comm.Close()
}

// TestLoadUsesGivenComms: Options.Comms replaces the engine's in-process communicators (every
// all-reduce goes through them), the greedy text equals the default TP 2 engine's and TP 1's, and
// Engine.Close closes them.
func TestLoadUsesGivenComms(t *testing.T) {
	gen := func(bes []model.Backend, comms []tp.Comm) []int32 {
		t.Helper()
		e, err := engine.Load(engine.Options{Backends: bes, Comms: comms, CloseBackend: true})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		var ids []int32
		_, err = e.Generate(context.Background(), engine.Request{Prompt: "Once upon a time", MaxTokens: 12, Sampling: sample.Params{Temperature: 0}},
			func(id int32, _ string) error { ids = append(ids, id); return nil })
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	cpus := func(n int) []model.Backend {
		var bes []model.Backend
		for range n {
			bes = append(bes, cpu.New(cpu.Options{Threads: 1}))
		}
		return bes
	}
	inner, err := tp.NewInProcess(2)
	if err != nil {
		t.Fatal(err)
	}
	var reduces, closes atomic.Int64
	comms := []tp.Comm{countingComm{inner[0], &reduces, &closes}, countingComm{inner[1], &reduces, &closes}}
	got := gen(cpus(2), comms)
	if reduces.Load() == 0 {
		t.Fatal("no all-reduce went through the given communicators")
	}
	if closes.Load() == 0 {
		t.Error("Engine.Close did not close the given communicators")
	}
	for name, want := range map[string][]int32{"TP 2, engine's comms": gen(cpus(2), nil), "TP 1": gen(cpus(1), nil)} {
		if !slices.Equal(got, want) {
			t.Errorf("greedy ids with the given comms %v, %s %v", got, name, want)
		}
	}
}
