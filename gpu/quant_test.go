//go:build cuda || cudaemu

package gpu_test

import (
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

// TestLlamaCppQuantisedFiles: GGUF files that llama.cpp quantised (loader/testdata/kquant: Q4_K
// and Q6_K; Q3_K, Q4_K, Q5_K and Q6_K) run on the device and agree with the CPU backend on the
// same file. Their k-quant matrices are decoded on the host and reside in fp16.
func TestLlamaCppQuantisedFiles(t *testing.T) {
	for _, tc := range []struct {
		file    string
		resides map[string]tensor.DType
	}{
		{"kq256-Q4_K_M.gguf", map[string]tensor.DType{model.LayerName(0, model.NameWq): tensor.F16, model.NameOutput: tensor.F16}},
		{"kq256-Q3_K_M.gguf", map[string]tensor.DType{model.LayerName(0, model.NameWq): tensor.F16, model.NameOutput: tensor.F16}},
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
