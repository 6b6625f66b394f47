package model_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
	"github.com/llamacu/llamacu/tp"
)

// countingBackend counts the bytes uploaded to it and the collectives' buffers it would see.
type countingBackend struct {
	model.Backend
	mu    sync.Mutex
	bytes int64
}

func (c *countingBackend) Upload(t *tensor.Tensor) (model.Weight, error) {
	c.mu.Lock()
	c.bytes += int64(len(t.Data))
	c.mu.Unlock()
	return c.Backend.Upload(t)
}

// NewRank on tp.Solo holds exactly what rank r of NewParallel holds (its shards), runs its share
// of a step alone (no collective waits for the other ranks), and refuses a degree that does not
// divide the heads.
func TestNewRankSolo(t *testing.T) {
	cfg := model.Config{Name: "70b-mini", Dim: 256, Layers: 2, Heads: 64, KVHeads: 8, FFN: 512, Vocab: 512, MaxSeq: 64, NormEps: 1e-5, RopeTheta: 10000}
	src := model.Synthetic(cfg, 5, tensor.F32)
	const n = 4
	comms, err := tp.NewInProcess(n)
	if err != nil {
		t.Fatal(err)
	}
	bes := make([]model.Backend, n)
	counts := make([]*countingBackend, n)
	for i := range bes {
		counts[i] = &countingBackend{Backend: cpu.New(cpu.Options{Threads: 1})}
		bes[i] = counts[i]
	}
	group, err := model.NewParallel(bes, cfg, src, comms, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer group.Close()
	for r := range n {
		solo, err := tp.NewSolo(r, n)
		if err != nil {
			t.Fatal(err)
		}
		be := &countingBackend{Backend: cpu.New(cpu.Options{Threads: 1})}
		m, err := model.NewRank(be, cfg, model.ShardSource(cfg, src, r, n), solo, nil)
		if err != nil {
			t.Fatal(err)
		}
		if be.bytes != counts[r].bytes {
			t.Errorf("rank %d alone uploaded %d bytes, in the group %d", r, be.bytes, counts[r].bytes)
		}
		s, err := m.NewState(2, 1, 16, 1)
		if err != nil {
			t.Fatal(err)
		}
		logits, err := m.Forward(s, &model.Batch{Tokens: []int32{1, 7}, Pos: []int32{0, 1}, Seq: []int32{0, 0}, BlockTables: [][]int32{{0}}}, []int32{1})
		if err != nil || len(logits) != cfg.Vocab {
			t.Errorf("rank %d alone: %d logits, %v", r, len(logits), err)
		}
	}
	full := &countingBackend{Backend: cpu.New(cpu.Options{Threads: 1})}
	if _, err := model.New(full, cfg, src, nil); err != nil {
		t.Fatal(err)
	}
	for r, c := range counts {
		if c.bytes == 0 || c.bytes > full.bytes/2 {
			t.Errorf("rank %d holds %d of the model's %d bytes: not its shards", r, c.bytes, full.bytes)
		}
	}
	solo, _ := tp.NewSolo(0, 3)
	if _, err := model.NewRank(cpu.New(cpu.Options{}), cfg, model.ShardSource(cfg, src, 0, 3), solo, nil); !errors.Is(err, model.ErrBadConfig) && !errors.Is(err, tp.ErrDegree) {
		t.Errorf("rank of 3 (64 heads): %v, want a degree error", err)
	}
	if _, err := tp.NewSolo(4, 4); !errors.Is(err, tp.ErrDegree) {
		t.Errorf("NewSolo(4, 4): %v", err)
	}
}
