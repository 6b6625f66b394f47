//go:build cuda || cudaemu

package gpu_test

import (
	"testing"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/gpu"
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
