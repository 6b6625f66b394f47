package model_test

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
	"github.com/llamacu/llamacu/tp"
)

// newTP builds an n-way tensor-parallel model on n CPU backends (goroutine ranks).
func newTP(tb testing.TB, cfg model.Config, src model.TensorSource, n int) *model.Model {
	tb.Helper()
	comms, err := tp.NewInProcess(n)
	if err != nil {
		tb.Fatal(err)
	}
	bes := make([]model.Backend, n)
	for i := range bes {
		bes[i] = cpu.New(cpu.Options{Threads: 1})
	}
	m, err := model.NewParallel(bes, cfg, src, comms, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		m.Close()
		for _, b := range bes {
			b.Close()
		}
	})
	return m
}

// greedy decodes n tokens from BOS, feeding each argmax back, and returns the ids and every
// step's logits.
func greedy(tb testing.TB, m *model.Model, n int) ([]int32, [][]float32) {
	tb.Helper()
	s, err := m.NewState(1, 1, 16, (n+16)/16)
	if err != nil {
		tb.Fatal(err)
	}
	table := make([]int32, (n+16)/16)
	for i := range table {
		table[i] = int32(i)
	}
	tok := int32(1)
	var ids []int32
	var all [][]float32
	for pos := 0; pos < n; pos++ {
		b := &model.Batch{Tokens: []int32{tok}, Pos: []int32{int32(pos)}, Seq: []int32{0}, BlockTables: [][]int32{table}}
		l, err := m.Forward(s, b, []int32{0})
		if err != nil {
			tb.Fatal(err)
		}
		all = append(all, append([]float32(nil), l...))
		best := 0
		for i, v := range l {
			if v > l[best] {
				best = i
			}
		}
		tok = int32(best)
		ids = append(ids, tok)
	}
	return ids, all
}

// stories260K (8 heads, 4 KV heads): TP 2 and 4 print the same greedy text as TP 1 and their
// logits agree within 1e-5 (|Δ| ≤ 1e-5 + 1e-5·|want|, DESIGN.md's rule: logits reach ~15 here,
// where one float32 ulp is 1e-6 and the all-reduce adds partial sums in another order).
func TestTensorParallelStories260K(t *testing.T) {
	path := filepath.Join("..", "..", "shared", "testdata", "stories260K", "stories260K.bin")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("test data not found: %s", path)
	}
	f, err := loader.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	refIDs, refLogits := greedy(t, newTP(t, f.Config, f.Tensor, 1), 120)
	for _, n := range []int{2, 4} {
		t.Run(fmt.Sprintf("tp%d", n), func(t *testing.T) {
			ids, logits := greedy(t, newTP(t, f.Config, f.Tensor, n), 120)
			if fmt.Sprint(ids) != fmt.Sprint(refIDs) {
				t.Fatalf("greedy ids differ from TP 1:\n%v\n%v", ids, refIDs)
			}
			worst := 0.0
			for i := range logits {
				worst = max(worst, maxDiff(logits[i], refLogits[i]))
				for j, v := range logits[i] {
					want := float64(refLogits[i][j])
					if d := math.Abs(float64(v) - want); d > 1e-5+1e-5*math.Abs(want) {
						t.Fatalf("step %d logit %d: %g vs %g (|Δ| %g)", i, j, v, want, d)
					}
				}
			}
			t.Logf("TP %d: max |Δlogit| over 120 steps = %.2g", n, worst)
		})
	}
}

// A 70B-shaped model scaled down (64 query / 8 KV heads kept; tied and untied LM heads, F32 and
// Q8_0) agrees at TP 2, 4 and 8.
func TestTensorParallel70BShape(t *testing.T) {
	cfg := model.Config{Name: "70b-mini", Dim: 256, Layers: 2, Heads: 64, KVHeads: 8, FFN: 512, Vocab: 512, MaxSeq: 64, NormEps: 1e-5, RopeTheta: 10000}
	for _, tc := range []struct {
		name  string
		tied  bool
		dtype tensor.DType
		tol   float64
	}{{"f32", false, tensor.F32, 1e-5}, {"f32-tied", true, tensor.F32, 1e-5}, {"q8_0", false, tensor.Q8_0, 1e-4}} {
		c := cfg
		c.TiedOutput = tc.tied
		src := model.Synthetic(c, 5, tc.dtype)
		refIDs, refLogits := greedy(t, newTP(t, c, src, 1), 12)
		for _, n := range []int{2, 4, 8} {
			t.Run(fmt.Sprintf("%s/tp%d", tc.name, n), func(t *testing.T) {
				ids, logits := greedy(t, newTP(t, c, src, n), 12)
				if fmt.Sprint(ids) != fmt.Sprint(refIDs) {
					t.Errorf("greedy ids differ: %v vs %v", ids, refIDs)
				}
				for i := range logits {
					if d := maxDiff(logits[i], refLogits[i]); d > tc.tol {
						t.Fatalf("step %d: max |Δlogit| %g > %g", i, d, tc.tol)
					}
				}
			})
		}
	}
}

func TestTensorParallelDegreeErrors(t *testing.T) {
	cfg := model.Tiny // 8 heads, 4 KV heads
	for _, n := range []int{3, 8} {
		comms, _ := tp.NewInProcess(n)
		bes := make([]model.Backend, n)
		for i := range bes {
			bes[i] = cpu.New(cpu.Options{Threads: 1})
			defer bes[i].Close()
		}
		_, err := model.NewParallel(bes, cfg, model.Synthetic(cfg, 1, tensor.F32), comms, nil)
		if !errors.Is(err, model.ErrBadConfig) {
			t.Errorf("TP %d on 4 KV heads: err = %v", n, err)
		}
	}
	if err := model.Llama2_70B.CheckTP(8); err != nil {
		t.Errorf("70B TP 8: %v", err)
	}
	if err := model.Llama2_70B.CheckTP(16); err == nil {
		t.Error("70B TP 16 (8 KV heads) should fail")
	}
}

// hangingComm is a rank whose all-reduces never complete until the group aborts it (Close), as
// a rank stuck in a GPU collective: the in-process group waits for it with no time-out.
type hangingComm struct {
	tp.Comm
	closed chan struct{}
	once   sync.Once
}

func (h *hangingComm) AllReduceSum([]float32) error {
	<-h.closed
	return tp.ErrClosed
}

func (h *hangingComm) Close() error {
	h.once.Do(func() { close(h.closed) })
	return h.Comm.Close()
}

// TestStepTimeoutAbortsHungRank: a step in which one rank hangs fails after the step time-out,
// naming it, instead of blocking forever: the watchdog aborts the group (closing every
// communicator, which is what frees a rank stuck in NCCL).
func TestStepTimeoutAbortsHungRank(t *testing.T) {
	cfg := model.Tiny
	comms, err := tp.NewInProcess(2)
	if err != nil {
		t.Fatal(err)
	}
	comms[1] = &hangingComm{Comm: comms[1], closed: make(chan struct{})}
	bes := []model.Backend{cpu.New(cpu.Options{Threads: 1}), cpu.New(cpu.Options{Threads: 1})}
	m, err := model.NewParallel(bes, cfg, model.Synthetic(cfg, 1, tensor.F32), comms, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		m.Close()
		for _, b := range bes {
			b.Close()
		}
	}()
	m.SetStepTimeout(300 * time.Millisecond)
	s, err := m.NewState(1, 1, 16, 1)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = m.Forward(s, &model.Batch{Tokens: []int32{1}, Pos: []int32{0}, Seq: []int32{0}, BlockTables: [][]int32{{0}}}, []int32{0})
	if !errors.Is(err, tp.ErrTimeout) {
		t.Fatalf("Forward with a hung rank: %v, want tp.ErrTimeout", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the step failed only after %v", d)
	}
	t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
}
