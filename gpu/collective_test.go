//go:build cuda || cudaemu

package gpu_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/gpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
	"github.com/llamacu/llamacu/tp"
)

// newGroup builds n ranks with the given communicators, or skips without a device (or, for
// CommNCCL, without libnccl or without a GPU per rank).
func newGroup(t testing.TB, n int, mode gpu.CommMode, opts gpu.Options) *gpu.Group {
	t.Helper()
	count, err := cuda.DeviceCount()
	if err != nil || count == 0 {
		t.Skipf("no CUDA device (count %d, err %v)", count, err)
	}
	if mode == gpu.CommNCCL {
		if _, err := cuda.LoadNCCL(); errors.Is(err, cuda.ErrNoNCCL) {
			t.Skip(err)
		}
		if count < n {
			t.Skipf("NCCL with %d ranks needs %d GPUs, have %d", n, n, count)
		}
	}
	g, err := gpu.NewTP(opts, gpu.TPOptions{Size: n, Mode: mode, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("NewTP(%d ranks, %v): %v", n, mode, err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Errorf("Group.Close: %v", err)
		}
	})
	return g
}

// TestTensorParallelStories260K: stories260K (8 heads, 4 KV heads) at TP 2 and 4 on the GPU —
// ranks sharing the one GPU through the staged path, and with NCCL where there are enough GPUs —
// decodes the same greedy ids as TP 1 on the GPU, with logits within 1e-3 (the fp32 KV test
// tolerance of TestStories260K: splitting Wo and W2 by columns changes the order of the dot
// products' sums, by a few float32 ulps of logits that reach ~15, and the all-reduce adds the
// partial sums in yet another order).
func TestTensorParallelStories260K(t *testing.T) {
	// The GGUF carries its vocabulary (the .bin needs tok512.bin beside the engine options).
	path := shared(t, "stories260K/stories260K.gguf")
	opts := gpu.Options{KVF32: true}
	ref := loadOnGroup(t, path, newGroup(t, 1, gpu.CommStaged, opts))
	want := greedyIDs(t, ref, 120)
	for _, tc := range []struct {
		n    int
		mode gpu.CommMode
	}{{2, gpu.CommStaged}, {4, gpu.CommStaged}, {2, gpu.CommNCCL}, {4, gpu.CommNCCL}} {
		t.Run(fmt.Sprintf("tp%d/%v", tc.n, tc.mode), func(t *testing.T) {
			g := newGroup(t, tc.n, tc.mode, opts)
			e := loadOnGroup(t, path, g)
			if e.Model.TP() != tc.n {
				t.Fatalf("model TP %d, want %d", e.Model.TP(), tc.n)
			}
			got := greedyIDs(t, e, 120)
			for i := range want {
				if i >= len(got) || got[i] != want[i] {
					t.Fatalf("greedy ids differ from TP 1 at step %d:\nTP 1:  %v\nTP %d: %v", i, want, tc.n, got)
				}
			}
			d := logitsDiff(t, ref.Model, e.Model)
			t.Logf("TP %d (%v, devices %v): %d greedy ids equal TP 1's; logits max |Δ| = %.3g", tc.n, g.Mode, g.Devices, len(want), d)
			if d > 1e-3 {
				t.Errorf("logits max abs diff from TP 1 = %.3g > 1e-3", d)
			}
		})
	}
}

// TestTensorParallelKQuantFile: llama.cpp's Q4_K_M file at TP 2 on the GPU (ranks sharing it)
// decodes TP 1's greedy ids. Its W2 (768 = 3 blocks of 256) and Wo (256 columns) cannot split
// in two on whole blocks, so each rank holds them in F16 (model.SplitDType) beside its Q4_K and
// Q6_K matrices.
func TestTensorParallelKQuantFile(t *testing.T) {
	path := filepath.Join("..", "loader", "testdata", "kquant", "kq256-Q4_K_M.gguf")
	opts := gpu.Options{KVF32: true}
	ref := loadOnGroup(t, path, newGroup(t, 1, gpu.CommStaged, opts))
	want := greedyIDs(t, ref, 24)
	e := loadOnGroup(t, path, newGroup(t, 2, gpu.CommStaged, opts))
	if got := greedyIDs(t, e, 24); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("greedy ids differ from TP 1:\nTP 1: %v\nTP 2: %v", want, got)
	}
	d := logitsDiff(t, ref.Model, e.Model)
	t.Logf("TP 2 with W2 and Wo widened to F16: logits max |Δ| from TP 1 = %.3g", d)
	if d > 5e-3 {
		t.Errorf("logits max abs diff from TP 1 = %.3g > 5e-3", d)
	}
}

// loadOnGroup loads the model at path on g's ranks (closed with the test).
func loadOnGroup(t testing.TB, path string, g *gpu.Group) *engine.Engine {
	t.Helper()
	e, err := engine.Load(engine.Options{ModelPath: path, Backends: g.ModelBackends(), Comms: g.Comms})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func greedyIDs(t testing.TB, e *engine.Engine, n int) []int32 {
	t.Helper()
	var ids []int32
	_, err := e.Generate(context.Background(), engine.Request{Prompt: "", MaxTokens: n, Sampling: sample.Params{Temperature: 0}},
		func(id int32, _ string) error { ids = append(ids, id); return nil })
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return ids
}

// TestNCCLSingleRankComm: NCCL initialises with one rank; the host-slice collectives and the
// on-stream Backend.AllReduceSum leave the data as it is (a sum over one rank), the all-gather
// copies it, and Barrier returns.
func TestNCCLSingleRankComm(t *testing.T) {
	g := newGroup(t, 1, gpu.CommNCCL, gpu.Options{})
	if g.Mode != gpu.CommNCCL {
		t.Fatalf("mode %v, want NCCL", g.Mode)
	}
	c := g.Comms[0]
	if c.Rank() != 0 || c.Size() != 1 {
		t.Fatalf("rank %d of %d, want 0 of 1", c.Rank(), c.Size())
	}
	r := rand.New(rand.NewPCG(1, 2))
	want := normal(r, 3*4099)
	got := append([]float32(nil), want...)
	if err := c.AllReduceSum(got); err != nil {
		t.Fatal(err)
	}
	dst := make([]float32, len(want))
	if err := c.AllGather(dst, got); err != nil {
		t.Fatal(err)
	}
	if err := c.Barrier(); err != nil {
		t.Fatal(err)
	}
	be := g.Backends[0]
	x := newBuf(t, be, 3, 4099, want)
	if err := be.AllReduceSum(x, 3, c); err != nil {
		t.Fatal(err)
	}
	dev := read(t, be, x, 3)
	for i := range want {
		if got[i] != want[i] || dst[i] != want[i] || dev[i] != want[i] {
			t.Fatalf("element %d: host all-reduce %v, all-gather %v, device all-reduce %v; want %v", i, got[i], dst[i], dev[i], want[i])
		}
	}
}

// TestAllReducePaths runs Backend.AllReduceSum on n ranks at once, each on its own goroutine, and
// compares every rank's rows with the sum computed on the host in rank order: the staged path
// (ranks sharing GPUs) must equal it exactly (it is that sum), NCCL (a GPU per rank) within a
// few ulps (its ring adds in another order), and both must agree with each other.
func TestAllReducePaths(t *testing.T) {
	const rows, cols, n = 5, 1000, 3 // n rows of 5 are reduced
	for _, tc := range []struct {
		ranks int
		mode  gpu.CommMode
	}{{1, gpu.CommStaged}, {2, gpu.CommStaged}, {4, gpu.CommStaged}, {2, gpu.CommNCCL}, {4, gpu.CommNCCL}} {
		t.Run(fmt.Sprintf("%d/%v", tc.ranks, tc.mode), func(t *testing.T) {
			g := newGroup(t, tc.ranks, tc.mode, gpu.Options{})
			r := rand.New(rand.NewPCG(9, uint64(tc.ranks)))
			in := make([][]float32, tc.ranks)
			want := make([]float32, rows*cols)
			for k := range in {
				in[k] = normal(r, rows*cols)
			}
			for i := range want {
				if i >= n*cols {
					want[i] = in[0][i] // rows past n stay as they were
					continue
				}
				s := in[0][i]
				for k := 1; k < tc.ranks; k++ {
					s += in[k][i]
				}
				want[i] = s
			}
			bufs := make([]model.Buffer, tc.ranks)
			for k, be := range g.Backends {
				bufs[k] = newBuf(t, be, rows, cols, in[k])
			}
			errs := make([]error, tc.ranks)
			var wg sync.WaitGroup
			for k, be := range g.Backends {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[k] = be.AllReduceSum(bufs[k], n, g.Comms[k])
				}()
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			for k, be := range g.Backends {
				got := read(t, be, bufs[k], rows)
				for i := range got {
					if i >= n*cols && got[i] != in[k][i] {
						t.Fatalf("rank %d element %d past the %d reduced rows changed: %v, was %v", k, i, n, got[i], in[k][i])
					}
					if i >= n*cols {
						continue
					}
					tol := 0.0
					if g.Mode == gpu.CommNCCL {
						tol = 4 * float64(tc.ranks) * 6e-8 * math.Abs(float64(want[i]))
						tol = max(tol, 1e-6)
					}
					if d := math.Abs(float64(got[i] - want[i])); d > tol {
						t.Fatalf("%v rank %d element %d = %v, want %v (|Δ| %.3g > %.3g)", g.Mode, k, i, got[i], want[i], d, tol)
					}
				}
			}
		})
	}
}

// BenchmarkAllReduce times one all-reduce of a decode step's activation row (1 × 8192 fp32, the
// 70B width) over every GPU with NCCL, and over 2 ranks sharing GPU 0 with the staged path, each
// waited for (stream synchronised). It reports µs per all-reduce and what 160 of them (70B: two
// per layer, 80 layers) cost per token: the "measured all-reduce cost" term of llamacu plan's
// estimate (--allreduce-us).
func BenchmarkAllReduce(b *testing.B) {
	count, err := cuda.DeviceCount()
	if err != nil || count == 0 {
		b.Skipf("no CUDA device (count %d, err %v)", count, err)
	}
	const dim = 8192
	for _, tc := range []struct {
		ranks int
		mode  gpu.CommMode
	}{{count, gpu.CommNCCL}, {2, gpu.CommStaged}} {
		if tc.ranks < 2 {
			continue
		}
		b.Run(fmt.Sprintf("%d/%v", tc.ranks, tc.mode), func(b *testing.B) {
			g := newGroup(b, tc.ranks, tc.mode, gpu.Options{})
			bufs := make([]model.Buffer, tc.ranks)
			for k, be := range g.Backends {
				bufs[k] = newBuf(b, be, 1, dim, nil)
			}
			b.SetBytes(4 * dim)
			b.ResetTimer()
			var wg sync.WaitGroup
			errs := make([]error, tc.ranks)
			for k, be := range g.Backends {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[k] = be.Context().Do(func() error {
						for range b.N {
							if err := be.AllReduceSum(bufs[k], 1, g.Comms[k]); err != nil {
								return err
							}
							if err := be.Context().Stream().Synchronize(); err != nil {
								return err
							}
						}
						return nil
					})
				}()
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				b.Fatal(err)
			}
			us := float64(b.Elapsed().Microseconds()) / float64(b.N)
			b.ReportMetric(us, "µs/allreduce")
			b.ReportMetric(us*160/1e3, "ms/token-70B")
		})
	}
}

var _ tp.Comm = (*gpu.NCCLComm)(nil)

// TestNCCLCloseBreaksHang: a rank whose all-reduce can never complete (its peer never calls it)
// is freed by closing its communicator from another goroutine — ncclCommAbort, not through the
// blocked context thread — and its Read reports an error instead of hanging.
func TestNCCLCloseBreaksHang(t *testing.T) {
	g := newGroup(t, 2, gpu.CommNCCL, gpu.Options{})
	be := g.Backends[0]
	x := newBuf(t, be, 1, 64, make([]float32, 64))
	done := make(chan error, 1)
	go func() {
		if err := be.AllReduceSum(x, 1, g.Comms[0]); err != nil {
			done <- err
			return
		}
		done <- be.Read(make([]float32, 64), x, 1)
	}()
	select {
	case err := <-done:
		t.Fatalf("the all-reduce finished without its peer: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := g.Comms[0].Close(); err != nil {
		t.Logf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Read after an aborted all-reduce returned no error")
		}
		t.Logf("rank 0 after the abort: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("closing the communicator did not free the rank blocked in NCCL")
	}
}
