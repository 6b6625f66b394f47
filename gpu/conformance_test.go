//go:build cuda || cudaemu

package gpu_test

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/gpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/model/modeltest"
	"github.com/llamacu/llamacu/sample"
	"github.com/llamacu/llamacu/tensor"
)

// The test binary links gorgonia.org/cu, whose init exits the process when no driver or GPU is
// present: without a GPU it cannot start at all (CI only compiles it: go test -c -tags cuda).
// With a driver and no device, open skips.

// open starts a backend on device 0 or skips the test when the machine has no CUDA device.
func open(t testing.TB, opts gpu.Options) *gpu.Backend {
	t.Helper()
	be, err := gpu.New(opts)
	if err != nil {
		if strings.Contains(err.Error(), "0 device(s)") {
			t.Skipf("no CUDA device: %v", err)
		}
		t.Fatalf("gpu.New(%+v): %v", opts, err)
	}
	t.Cleanup(func() {
		if err := be.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return be
}

// Tight tolerances: fp32 everywhere (KV cache, weights as stored), only the order of sums and
// the fast-math exp/rsqrt differ from the float64 reference.
var tight = modeltest.Options{ATol: 2e-5, RTol: 2e-4, DTypes: []tensor.DType{tensor.F32, tensor.F16, tensor.BF16, tensor.Q8_0, tensor.Q4_0, tensor.Q4_K, tensor.Q5_K, tensor.Q6_K}}

// Half tolerances: the fp16 KV cache (2⁻¹¹ relative rounding of every K and V, which moves the
// softmax weights by ~|q|·|k|·2⁻¹¹/sqrt(head_dim)), Q8_0/Q4_0 dequantised to fp16 (2⁻¹¹ per
// weight), and cuBLAS's rounding of x to fp16/bf16 for more than 8 rows (bf16: 2⁻⁸ per element;
// the worst case, all terms of one sign, is 2⁻⁸·Σ|x·w| < 5e-3·Σ|x·w|).
var half = modeltest.Options{ATol: 1e-3, RTol: 5e-3}

func TestConformance(t *testing.T) {
	large := half
	large.Large = !testing.Short() && !cuda.Emulated // LLaMA-sized shapes take minutes emulated
	for _, tc := range []struct {
		name string
		opts gpu.Options
		mt   modeltest.Options
	}{
		// The configuration the engine runs: fast kernels, fp16 KV cache, cuBLAS for n > 8.
		{"fast/kv-f16", gpu.Options{}, large},
		// Fast kernels checked tightly: fp32 KV, GEMV slices instead of cuBLAS.
		{"fast/kv-f32/no-cublas", gpu.Options{KVF32: true, NoCublas: true}, tight},
		// Decode attention v5 (tensor cores) and v4 wherever they apply (by default v5 runs on
		// an fp16 cache from 2 query heads per KV head, v4 at 1).
		{"fast/decode-v5/kv-f16", gpu.Options{Decode: 5}, half},
		{"fast/decode-v4/kv-f16", gpu.Options{Decode: 4}, half},
		// Decode attention v3 at every batch (by default v3 runs on an fp32 cache in steps of 8
		// or more decode rows), and v2 on an fp16 cache.
		{"fast/decode-v3/kv-f16", gpu.Options{Decode: 3}, half},
		{"fast/decode-v2/kv-f16", gpu.Options{Decode: 2}, half},
		{"fast/decode-v3/kv-f32/no-cublas", gpu.Options{Decode: 3, KVF32: true, NoCublas: true}, tight},
		// Programmatic dependent launch (a no-op emulated and before sm_90; on an H100 the
		// kernels overlap and each must wait in pdl_begin).
		{"fast/pdl/kv-f16", gpu.Options{PDL: true}, half},
		// The previous tensor-core prefill attention (v3), still selectable for comparisons.
		{"fast/prefill-v3/kv-f16", gpu.Options{PrefillV3: true}, half},
		// The previous fast versions, still selectable for comparisons: GEMV v2, decode attention v2.
		{"v2/kv-f32/no-cublas", gpu.Options{KVF32: true, NoCublas: true, GEMVv2: true, Decode: 2}, tight},
		// The v1 kernels, the GPU-side spec.
		{"v1/kv-f32", gpu.Options{Naive: true, KVF32: true, NoCublas: true}, tight},
		{"v1/kv-f16", gpu.Options{Naive: true}, half},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := open(t, tc.opts)
			t.Logf("%s, cuBLAS %v", be.Name(), be.HasCublas())
			modeltest.Run(t, be, tc.mt)
		})
	}
}

// load writes rows (len(data)/cols of them) into buf through an F32 embedding table, as
// modeltest does (the Backend interface has no other way in).
func load(t testing.TB, be model.Backend, buf model.Buffer, data []float32) {
	t.Helper()
	rows := len(data) / buf.Cols()
	w, err := be.Upload(&tensor.Tensor{Name: "load", DType: tensor.F32, Shape: []int{rows, buf.Cols()}, Data: tensor.Encode(tensor.F32, data)})
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	tok := make([]int32, rows)
	for i := range tok {
		tok[i] = int32(i)
	}
	be.Embed(buf, w, tok)
}

// uploadWeight uploads data (rows·cols values) as a (rows, cols) weight matrix of dtype d.
func uploadWeight(tb testing.TB, be model.Backend, d tensor.DType, rows, cols int, data []float32) model.Weight {
	tb.Helper()
	w, err := be.Upload(&tensor.Tensor{Name: "w", DType: d, Shape: []int{rows, cols}, Data: tensor.Encode(d, data)})
	if err != nil {
		tb.Fatalf("Upload (%d, %d) %v: %v", rows, cols, d, err)
	}
	return w
}

func newBuf(t testing.TB, be model.Backend, rows, cols int, data []float32) model.Buffer {
	t.Helper()
	b, err := be.NewBuffer(rows, cols)
	if err != nil {
		t.Fatalf("NewBuffer: %v", err)
	}
	if data != nil {
		load(t, be, b, data)
	}
	return b
}

func read(t testing.TB, be model.Backend, b model.Buffer, n int) []float32 {
	t.Helper()
	out := make([]float32, n*b.Cols())
	if err := be.Read(out, b, n); err != nil {
		t.Fatalf("Read: %v", err)
	}
	return out
}

func normal(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// TestRoPEStoreKV checks the fused prologue against its unfused equivalent, bit for bit: the
// rotated q and k, and the K and V caches.
func TestRoPEStoreKV(t *testing.T) {
	for _, f32 := range []bool{true, false} {
		name := "kv-f16"
		if f32 {
			name = "kv-f32"
		}
		t.Run(name, func(t *testing.T) {
			be := open(t, gpu.Options{KVF32: f32})
			const heads, kvHeads, hd, bs = 8, 2, 64, 4
			r := rand.New(rand.NewPCG(1, 2))
			l := model.KVLayout{Layers: 2, KVHeads: kvHeads, HeadDim: hd, BlockSize: bs, NumBlocks: 12}
			bt := &model.Batch{
				Tokens:      make([]int32, 6),
				Pos:         []int32{0, 1, 2, 3, 4, 7},
				Seq:         []int32{0, 0, 0, 0, 0, 1},
				BlockTables: [][]int32{{5, 2}, {9, 0}},
			}
			B := bt.Len()
			qs, ks, vs := normal(r, B*heads*hd), normal(r, B*kvHeads*hd), normal(r, B*kvHeads*hd)
			var caches [2][2][]byte
			var outs [2][2][]float32
			for path := 0; path < 2; path++ {
				c, err := be.NewKVCache(l)
				if err != nil {
					t.Fatal(err)
				}
				q := newBuf(t, be, B, heads*hd, qs)
				k := newBuf(t, be, B, kvHeads*hd, ks)
				v := newBuf(t, be, B, kvHeads*hd, vs)
				if path == 0 {
					be.RoPE(q, hd, bt.Pos, 10000)
					be.RoPE(k, hd, bt.Pos, 10000)
					be.StoreKV(c, 1, k, v, bt)
				} else {
					be.RoPEStoreKV(q, k, v, c, 1, bt, hd, 10000)
				}
				outs[path] = [2][]float32{read(t, be, q, B), read(t, be, k, B)}
				gc := c.(*gpu.KVCache)
				n := l.Layers * l.NumBlocks * l.BlockSize * kvHeads * hd * 2
				if f32 {
					n *= 2
				}
				for j, p := range []cuda.DevicePtr{gc.K(), gc.V()} {
					caches[path][j] = make([]byte, n)
					if err := be.Context().CopyDtoH(caches[path][j], p); err != nil {
						t.Fatal(err)
					}
				}
			}
			for j, what := range []string{"q", "k"} {
				for i := range outs[0][j] {
					if outs[0][j][i] != outs[1][j][i] {
						t.Fatalf("%s[%d]: unfused %g, fused %g", what, i, outs[0][j][i], outs[1][j][i])
					}
				}
			}
			for j, what := range []string{"K cache", "V cache"} {
				if !bytes.Equal(caches[0][j], caches[1][j]) {
					t.Errorf("%s differs between the fused and unfused paths", what)
				}
			}
		})
	}
}

// TestArgmax compares the device argmax with a host scan (lowest index among equal maxima).
func TestArgmax(t *testing.T) {
	be := open(t, gpu.Options{})
	r := rand.New(rand.NewPCG(3, 4))
	for _, cols := range []int{1, 7, 1024, 32000} {
		const n = 5
		x := normal(r, n*cols)
		if cols > 10 {
			x[2*cols+3], x[2*cols+9] = 100, 100 // a tie: index 3 wins
			x[4*cols+cols-1] = 50               // the last column
		}
		xb := newBuf(t, be, n, cols, x)
		got := make([]int32, n)
		if err := be.Argmax(got, xb, n); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			want := 0
			for j := 1; j < cols; j++ {
				if x[i*cols+j] > x[i*cols+want] {
					want = j
				}
			}
			if int(got[i]) != want {
				t.Errorf("cols %d row %d: argmax %d, want %d", cols, i, got[i], want)
			}
		}
	}
}

// TestTopK compares both top-k kernels with sample.TopK, bit for bit: rows with exact ties,
// NaN, ±Inf and ±0, at widths around a block (1023…1025), a TP-split vocabulary (16000) and
// LLaMA 2's (32000), for k from greedy (1) to the maximum (256).
func TestTopK(t *testing.T) {
	for _, naive := range []bool{false, true} {
		name := "v2"
		if naive {
			name = "v1"
		}
		t.Run(name, func(t *testing.T) {
			be := open(t, gpu.Options{Naive: naive})
			r := rand.New(rand.NewPCG(11, 12))
			for _, cols := range []int{1, 3, 300, 1023, 1024, 1025, 16000, 32000} {
				const n = 3
				x := normal(r, n*cols)
				for i := range x {
					switch r.IntN(16) {
					case 0:
						x[i] = float32(math.NaN())
					case 1:
						x[i] = float32(math.Inf(-1))
					case 2:
						x[i] = float32(math.Copysign(0, -1))
					case 3:
						x[i] = 0
					case 4, 5:
						x[i] = float32(r.IntN(3)) // exact ties, among the best values
					}
				}
				x[2*cols-1] = float32(math.Inf(1)) // row 1: +Inf in the last column
				for i := range cols {
					x[2*cols+i] = float32(math.NaN()) // row 2: nothing but NaN
				}
				xb := newBuf(t, be, n, cols, x)
				for _, k := range []int{1, 2, 40, 256} {
					if k > cols {
						continue
					}
					vals, ids := make([]float32, n*k), make([]int32, n*k)
					if err := be.TopK(vals, ids, xb, n, k); err != nil {
						t.Fatal(err)
					}
					wv, wi := make([]float32, k), make([]int32, k)
					for i := range n {
						sample.TopK(wv, wi, x[i*cols:(i+1)*cols], k)
						for j := range k {
							g := i*k + j
							if ids[g] != wi[j] || math.Float32bits(vals[g]) != math.Float32bits(wv[j]) {
								t.Fatalf("cols %d k %d row %d: candidate %d is (%v, %d), want (%v, %d)", cols, k, i, j, vals[g], ids[g], wv[j], wi[j])
							}
						}
					}
				}
			}
			// Bad sizes are errors, not faults.
			xb := newBuf(t, be, 2, 10, nil)
			for _, c := range []struct{ n, k, room int }{{3, 1, 3}, {1, 0, 1}, {1, 11, 11}, {2, 5, 9}, {-1, 1, 1}} {
				if err := be.TopK(make([]float32, c.room), make([]int32, c.room), xb, c.n, c.k); err == nil {
					t.Errorf("TopK(n %d, k %d) into %d: no error", c.n, c.k, c.room)
				}
			}
		})
	}
}

// TestMatMulPaths compares every MatMul path (GEMV v2, cuBLAS, GEMV slices) with the naive
// gemm_<dt>_v1 on the same device, including LLaMA 7B shapes.
func TestMatMulPaths(t *testing.T) {
	for _, noBlas := range []bool{false, true} {
		be := open(t, gpu.Options{NoCublas: noBlas})
		r := rand.New(rand.NewPCG(5, 6))
		for _, d := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16, tensor.Q8_0, tensor.Q4_0} {
			shapes := [][3]int{{1, 4096, 4096}, {3, 4096, 11008}, {8, 11008, 4096}, {9, 256, 72}, {64, 4096, 512}, {5, 4096, 32000}}
			if cuda.Emulated { // the same paths at sizes a CPU emulating every thread can afford
				shapes = [][3]int{{1, 512, 256}, {3, 256, 344}, {8, 344, 256}, {9, 256, 72}, {20, 512, 136}, {5, 256, 1000}, {2, 172, 64}}
			}
			for _, c := range shapes {
				n, K, N := c[0], c[1], c[2]
				if N >= 1000 && d != tensor.F16 && d != tensor.Q8_0 && d != tensor.Q4_0 {
					continue // the LM head shape for each kernel family is enough (0.5 GB of F32)
				}
				if K%tensor.QK != 0 && d.BlockSize() > 1 {
					continue // quantised rows are whole blocks of 32
				}
				w, err := be.Upload(&tensor.Tensor{Name: "w", DType: d, Shape: []int{N, K}, Data: tensor.Encode(d, normal(r, N*K))})
				if err != nil {
					t.Fatal(err)
				}
				x := newBuf(t, be, n, K, normal(r, n*K))
				got, want := newBuf(t, be, n, N, nil), newBuf(t, be, n, N, nil)
				be.MatMul(got, x, w, n)
				be.MatMulV1(want, x, w, n)
				g, wv := read(t, be, got, n), read(t, be, want, n)
				var maxErr float64
				for i := range g {
					maxErr = max(maxErr, math.Abs(float64(g[i]-wv[i])))
				}
				// Terms are N(0,1)·N(0,1): sums have std sqrt(K); rounding x to bf16 for cuBLAS
				// moves them by ~2⁻⁹·sqrt(K).
				tol := 1e-4 * math.Sqrt(float64(K))
				if n > 8 && !noBlas && d != tensor.F32 {
					tol = 1e-2 * math.Sqrt(float64(K))
				}
				if maxErr > tol {
					t.Errorf("cuBLAS=%v %v n=%d K=%d N=%d: max |MatMul − v1| = %.3g > %.3g", be.HasCublas(), d, n, K, N, maxErr, tol)
				}
			}
		}
	}
}

func shared(tb testing.TB, rel string) string {
	tb.Helper()
	p := filepath.Join("..", "..", "shared", "testdata", rel)
	if _, err := os.Stat(p); err != nil {
		tb.Skipf("test data not found: %s", p)
	}
	return p
}

// TestStories260K runs the stories260K GGUF end to end on the GPU and on the CPU: greedy text
// must be the same, and the logits of a prefill step and three decode steps close.
func TestStories260K(t *testing.T) {
	path := shared(t, "stories260K/stories260K.gguf")
	want, err := os.ReadFile(filepath.Join(filepath.Dir(path), "expected_greedy_n200.txt"))
	if err != nil {
		t.Fatal(err)
	}
	cpuEng, err := engine.Load(engine.Options{ModelPath: path, Backend: cpu.New(cpu.Options{}), CloseBackend: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cpuEng.Close()
	cpuText := generate(t, cpuEng)
	if cpuText != string(want) {
		t.Fatalf("the cpu backend no longer gives llama2.c's text:\n%s", cpuText)
	}
	for _, tc := range []struct {
		name     string
		opts     gpu.Options
		maxDiff  float64 // logits
		minMatch int     // characters of the greedy text that must equal the cpu's
	}{
		{"kv-f32", gpu.Options{KVF32: true}, 1e-3, len(want)},
		{"kv-f16", gpu.Options{}, 5e-2, len(want) / 2},
		{"v1", gpu.Options{Naive: true, KVF32: true}, 1e-3, len(want)},
		{"pdl/kv-f32", gpu.Options{KVF32: true, PDL: true}, 1e-3, len(want)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.PDL && cuda.Emulated {
				t.Skip("emulated, PDL launches run in order: this case is for a GPU, where kernels overlap (TestConformance/fast/pdl covers the host side here)")
			}
			be := open(t, tc.opts)
			e, err := engine.Load(engine.Options{ModelPath: path, Backend: be})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			got := generate(t, e)
			common := 0
			for common < len(got) && common < len(cpuText) && got[common] == cpuText[common] {
				common++
			}
			t.Logf("%s: greedy text equals the cpu's for %d of %d characters", be.Name(), common, len(cpuText))
			if common < tc.minMatch {
				t.Errorf("greedy text diverged from the cpu's after %d characters (need %d):\n%s", common, tc.minMatch, got)
			}
			d := logitsDiff(t, cpuEng.Model, e.Model)
			t.Logf("logits max |gpu − cpu| = %.3g", d)
			if d > tc.maxDiff {
				t.Errorf("logits max abs diff %.3g > %.3g", d, tc.maxDiff)
			}
		})
	}
}

func generate(t testing.TB, e *engine.Engine) string {
	t.Helper()
	var sb strings.Builder
	_, err := e.Generate(context.Background(), engine.Request{Prompt: "", MaxTokens: 200, Sampling: sample.Params{Temperature: 0}},
		func(_ int32, s string) error { sb.WriteString(s); return nil })
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return sb.String()
}

// logitsDiff runs the same steps on two models (a 12-token prefill, then three decode steps, in
// one sequence) and returns the largest absolute difference of their logits.
func logitsDiff(t testing.TB, a, b *model.Model) float64 {
	t.Helper()
	const bs, blocks = 4, 16
	table := make([]int32, blocks)
	for i := range table {
		table[i] = int32(blocks - 1 - i) // scattered: the paged layout matters
	}
	var states [2]*model.State
	for i, m := range []*model.Model{a, b} {
		s, err := m.NewState(16, 16, bs, blocks)
		if err != nil {
			t.Fatal(err)
		}
		states[i] = s
	}
	r := rand.New(rand.NewPCG(7, 8))
	var maxDiff float64
	step := func(tokens []int32, pos0 int) {
		bt := &model.Batch{Tokens: tokens, Pos: make([]int32, len(tokens)), Seq: make([]int32, len(tokens)), BlockTables: [][]int32{table}}
		rows := make([]int32, len(tokens))
		for i := range tokens {
			bt.Pos[i], rows[i] = int32(pos0+i), int32(i)
		}
		var logits [2][]float32
		for i, m := range []*model.Model{a, b} {
			l, err := m.Forward(states[i], bt, rows)
			if err != nil {
				t.Fatal(err)
			}
			logits[i] = append([]float32(nil), l...)
		}
		for i := range logits[0] {
			maxDiff = max(maxDiff, math.Abs(float64(logits[0][i]-logits[1][i])))
		}
	}
	vocab := a.Config.Vocab
	prompt := []int32{1}
	for len(prompt) < 12 {
		prompt = append(prompt, int32(3+r.IntN(vocab-3)))
	}
	step(prompt, 0)
	for i := 0; i < 3; i++ {
		step([]int32{int32(3 + r.IntN(vocab-3))}, 12+i)
	}
	return maxDiff
}

// TestDeviceInfo: the bench harness gets the GPU's own description and a device copy bandwidth
// (not the host's), and the copy really moves the bytes it times.
func TestDeviceInfo(t *testing.T) {
	be := open(t, gpu.Options{})
	d := be.DeviceInfo()
	if !strings.Contains(d.Name, be.Context().DeviceName()) || !strings.Contains(d.Name, "SMs") || !strings.HasPrefix(d.Driver, "CUDA driver ") {
		t.Errorf("DeviceInfo = %+v", d)
	}
	bw, err := be.CopyBandwidth()
	if err != nil || bw <= 0 {
		t.Fatalf("CopyBandwidth = %v, %v", bw, err)
	}
	t.Logf("%s: device-to-device copy %.1f GB/s (read + write)", d.Name, bw/1e9)
}

// TestGraphs: with Options.Graphs the engine's steps are recorded and replayed as CUDA graphs;
// stories260K decodes the same greedy ids, with the same logits, as without — and most decode
// steps do replay a graph (a decode step's launches repeat for graphCtxBucket tokens). Also under
// tensor parallelism with NCCL (the all-reduces captured in the graphs).
func TestGraphs(t *testing.T) {
	path := shared(t, "stories260K/stories260K.gguf")
	for _, tc := range []struct {
		name string
		tp   int
		opts gpu.Options
	}{
		{"kv-f32", 1, gpu.Options{KVF32: true}},
		{"kv-f16", 1, gpu.Options{}},
		{"pdl/kv-f16", 1, gpu.Options{PDL: true}},
		{"tp2/nccl", 2, gpu.Options{KVF32: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.PDL && cuda.Emulated {
				t.Skip("emulated, PDL launches run in order: this case is for a GPU, where captured kernels overlap")
			}
			load := func(graphs bool) (*engine.Engine, []*gpu.Backend) {
				opts := tc.opts
				opts.Graphs = graphs
				mode := gpu.CommStaged
				if tc.tp > 1 {
					mode = gpu.CommNCCL
				}
				g := newGroup(t, tc.tp, mode, opts)
				e, err := engine.Load(engine.Options{ModelPath: path, Backends: g.ModelBackends(), Comms: g.Comms})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { e.Close() })
				return e, g.Backends
			}
			ref, _ := load(false)
			want := greedyIDs(t, ref, 120)
			e, bes := load(true)
			got := greedyIDs(t, e, 120)
			if !slices.Equal(got, want) {
				t.Fatalf("greedy ids with graphs differ:\nwithout: %v\nwith:    %v", want, got)
			}
			st := bes[0].GraphStats()
			t.Logf("rank 0: %+v, programmatic dependent launch %v", st, bes[0].PDL())
			if st.Captured < 1 || st.Replayed < 100 || st.Failed > 0 {
				t.Errorf("graph stats %+v: want captures, ≥ 100 of 120 steps replayed, no failed capture", st)
			}
			// Not bit for bit: with graphs the decode attention is planned for the bucketed
			// context (more splits, another summation order).
			if d := logitsDiff(t, ref.Model, e.Model); d > 1e-4 {
				t.Errorf("logits with graphs differ from without by %.3g", d)
			}
		})
	}
}
