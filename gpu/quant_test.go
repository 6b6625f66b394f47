//go:build cuda || cudaemu

package gpu_test

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/gpu"
	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// TestQuantModel: a model whose matrices are Q8_0 or Q4_0 keeps them quantised on the device
// (the q8_0/q4_0 GEMV, the dequantise-then-cuBLAS prefill and the quantised embedding) and
// agrees with the CPU backend on the same file, as the same model widened to fp16 on the device
// (Options.WidenQuant) does.
func TestQuantModel(t *testing.T) {
	cfg := model.Tiny
	for _, dt := range []tensor.DType{tensor.Q8_0, tensor.Q4_0} {
		t.Run(dt.String(), func(t *testing.T) {
			src := model.Synthetic(cfg, 3, dt)
			cpuBe := cpu.New(cpu.Options{})
			defer cpuBe.Close()
			ref, err := model.New(cpuBe, cfg, src, nil)
			if err != nil {
				t.Fatal(err)
			}
			emb, err := src(model.NameTokEmbed)
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				name    string
				opts    gpu.Options
				resides tensor.DType
				maxDiff float64
			}{
				// The 12-token prefill goes through cuBLAS with x rounded to fp16 (2⁻¹¹ relative
				// per element): ~6e-4 on this model.
				{"native", gpu.Options{KVF32: true, Weights: tensor.F16}, dt, 2e-3},
				// GEMV only: the products d·q·x in fp32, as the CPU's: ~3e-7.
				{"native/no-cublas", gpu.Options{KVF32: true, NoCublas: true}, dt, 1e-5},
				{"native/v1", gpu.Options{KVF32: true, Naive: true}, dt, 1e-5},
				{"widened", gpu.Options{KVF32: true, Weights: tensor.F16, WidenQuant: true}, tensor.F16, 2e-3},
			} {
				t.Run(tc.name, func(t *testing.T) {
					be := open(t, tc.opts)
					w, err := be.Upload(emb)
					if err != nil {
						t.Fatal(err)
					}
					if w.DType() != tc.resides {
						t.Errorf("a %v matrix resides as %v, want %v", dt, w.DType(), tc.resides)
					}
					m, err := model.New(be, cfg, src, nil)
					if err != nil {
						t.Fatal(err)
					}
					d := logitsDiff(t, ref, m)
					t.Logf("logits max |gpu − cpu| = %.3g", d)
					if d > tc.maxDiff {
						t.Errorf("logits max abs diff %.3g > %.3g", d, tc.maxDiff)
					}
				})
			}
		})
	}
}

// TestLlamaCppQuantisedFiles: GGUF files that llama.cpp quantised (loader/testdata/kquant:
// Q4_K_M, Q3_K_M, Q5_K_M: Q3_K … Q6_K) run on the device and agree with the CPU backend on the
// same file. Q4_K, Q5_K and Q6_K matrices stay quantised; the other types are decoded on the host
// and reside in fp16.
func TestLlamaCppQuantisedFiles(t *testing.T) {
	for _, tc := range []struct {
		file    string
		resides map[string]tensor.DType
	}{
		{"kq256-Q4_K_M.gguf", map[string]tensor.DType{model.LayerName(0, model.NameWq): tensor.Q4_K, model.NameOutput: tensor.Q6_K}},
		{"kq256-Q3_K_M.gguf", map[string]tensor.DType{model.LayerName(0, model.NameWq): tensor.F16, model.NameOutput: tensor.Q6_K}},
		{"kq256-Q5_K_M.gguf", map[string]tensor.DType{model.LayerName(0, model.NameWq): tensor.Q5_K, model.NameOutput: tensor.Q6_K}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			f, err := loader.Open(filepath.Join("..", "loader", "testdata", "kquant", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cpuBe := cpu.New(cpu.Options{})
			defer cpuBe.Close()
			ref, err := model.New(cpuBe, f.Config, f.Tensor, nil)
			if err != nil {
				t.Fatal(err)
			}
			be := open(t, gpu.Options{KVF32: true, Weights: tensor.F16})
			for name, want := range tc.resides {
				src, err := f.Tensor(name)
				if err != nil {
					t.Fatal(err)
				}
				w, err := be.Upload(src)
				if err != nil {
					t.Fatal(err)
				}
				if w.DType() != want {
					t.Errorf("%s (%v in the file) resides as %v, want %v", name, src.DType, w.DType(), want)
				}
			}
			m, err := model.New(be, f.Config, f.Tensor, nil)
			if err != nil {
				t.Fatal(err)
			}
			d := logitsDiff(t, ref, m)
			t.Logf("logits max |gpu − cpu| = %.3g", d)
			if d > 5e-3 {
				t.Errorf("logits max abs diff %.3g > 5e-3", d)
			}
		})
	}
}

// kquantMatrices are Q4_K, Q5_K and Q6_K matrices as llama.cpp wrote them: those of
// loader/testdata/kquant's Q4_K_M and Q5_K_M files, and row slices of them whose counts are not
// a multiple of the 16 rows of a GEMV block.
func kquantMatrices(t *testing.T) []*tensor.Tensor {
	t.Helper()
	var out []*tensor.Tensor
	for _, file := range []string{"kq256-Q4_K_M.gguf", "kq256-Q5_K_M.gguf"} {
		f, err := loader.Open(filepath.Join("..", "loader", "testdata", "kquant", file))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		for _, name := range []string{model.NameTokEmbed, model.NameOutput, model.LayerName(0, model.NameWk),
			model.LayerName(1, model.NameWv), model.LayerName(0, model.NameW2), model.LayerName(1, model.NameW1)} {
			w, err := f.Tensor(name)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, w)
		}
	}
	for _, w := range out[:2] {
		rows := 13
		out = append(out, &tensor.Tensor{Name: w.Name + "[:13]", DType: w.DType, Shape: []int{rows, w.Cols()}, Data: w.Data[:rows*w.RowBytes()]})
	}
	types := map[tensor.DType]bool{}
	for _, w := range out {
		types[w.DType] = true
	}
	if !types[tensor.Q4_K] || !types[tensor.Q5_K] || !types[tensor.Q6_K] || len(types) != 3 {
		t.Fatalf("matrices of types %v, want Q4_K, Q5_K and Q6_K", types)
	}
	return out
}

// TestKQuantMatMul: Q4_K, Q5_K and Q6_K matrices stay quantised on the device, and MatMul (the v2
// GEMV at every batch width, the dequantise-then-cuBLAS prefill, the v1 reference) and Embed
// agree with the CPU backend, which decodes exactly as ggml does. Embed is bit-exact: the
// device's dequantiser rounds as ggml's.
func TestKQuantMatMul(t *testing.T) {
	mats := kquantMatrices(t)
	cpuBe := cpu.New(cpu.Options{})
	defer cpuBe.Close()
	r := rand.New(rand.NewPCG(31, 32))
	for _, tc := range []struct {
		name string
		opts gpu.Options
		tol  float64 // relative to Σ|w·x|
	}{
		{"v2", gpu.Options{NoCublas: true}, 1e-5},
		{"cublas", gpu.Options{}, 2e-3}, // x and the dequantised weights in fp16 for > 8 rows
		{"v1", gpu.Options{Naive: true}, 1e-5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := open(t, tc.opts)
			for _, w := range mats {
				gw, err := be.Upload(w)
				if err != nil {
					t.Fatal(err)
				}
				if gw.DType() != w.DType {
					t.Fatalf("%s: %v resides as %v", w.Name, w.DType, gw.DType())
				}
				cw, err := cpuBe.Upload(w)
				if err != nil {
					t.Fatal(err)
				}
				N, K := w.Rows(), w.Cols()
				dense := w.Float32s() // ggml's values (tensor.Decode)
				for _, n := range []int{1, 2, 3, 5, 8, 12} {
					xs := normal(r, n*K)
					x := newBuf(t, be, n, K, xs)
					out := newBuf(t, be, n, N, nil)
					be.MatMul(out, x, gw, n)
					got := read(t, be, out, n)
					cx, _ := cpuBe.NewBuffer(n, K)
					load(t, cpuBe, cx, xs)
					cout, _ := cpuBe.NewBuffer(n, N)
					cpuBe.MatMul(cout, cx, cw, n)
					want := read(t, cpuBe, cout, n)
					for b := 0; b < n; b++ {
						for j := 0; j < N; j++ {
							var mag float64
							for k := 0; k < K; k++ {
								mag += math.Abs(float64(dense[j*K+k] * xs[b*K+k]))
							}
							if d := math.Abs(float64(got[b*N+j] - want[b*N+j])); d > tc.tol*mag+1e-6 {
								t.Fatalf("%s %v (%d×%d), n=%d: out[%d,%d] = %v, cpu %v (|Δ| %.3g > %.3g·%.3g)",
									w.Name, w.DType, N, K, n, b, j, got[b*N+j], want[b*N+j], d, tc.tol, mag)
							}
						}
					}
				}
				if tc.name == "v2" {
					toks := []int32{0, int32(N - 1), int32(N / 2), 0}
					out := newBuf(t, be, len(toks), K, nil)
					be.Embed(out, gw, toks)
					got := read(t, be, out, len(toks))
					for i, tok := range toks {
						for k := 0; k < K; k++ {
							if math.Float32bits(got[i*K+k]) != math.Float32bits(dense[int(tok)*K+k]) {
								t.Fatalf("%s: Embed row %d element %d = %v, ggml %v", w.Name, tok, k, got[i*K+k], dense[int(tok)*K+k])
							}
						}
					}
				}
			}
		})
	}
	// Options.WidenQuant stores them in fp16 instead.
	be := open(t, gpu.Options{WidenQuant: true})
	for _, w := range mats[:2] {
		gw, err := be.Upload(w)
		if err != nil {
			t.Fatal(err)
		}
		if gw.DType() != tensor.F16 {
			t.Errorf("%s: %v under WidenQuant resides as %v, want F16", w.Name, w.DType, gw.DType())
		}
	}
}
