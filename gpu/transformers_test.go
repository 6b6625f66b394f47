//go:build cuda || cudaemu

package gpu_test

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/gpu"
	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/model/hfref"
)

// TestTransformers compares llamacu with PyTorch/transformers on the random-init GQA
// LlamaForCausalLM (fp16 weights) that bench/reference/hf_logits.py builds on the GPU machine;
// LLAMACU_HF_REF names its output folder (bench/device/check.sh makes it and runs this test).
// The folder is read by the HF loader (safetensors, Q/K rows permuted back to Meta order) onto
// each backend; the 64 tokens run as one prefill batch, and again as a prefill of 48 and 16 decode
// steps, and every position's logits are compared with transformers' fp16 and fp32 runs:
//
//   - cpu: the fp32 reference; within TransformersTolF32 of transformers fp32 (the same function
//     from the same fp16-rounded weights) and TransformersTolF16 of transformers fp16.
//   - cuda (engine defaults: fp16 weights, fp16 KV cache, cuBLAS for prefill): within
//     TransformersTolF16 of both (the fp16 KV cache and cuBLAS's fp16 rounding of x are the same
//     kind of error as transformers' fp16 activations).
//   - cuda kv-f32/no-cublas (fp16 weights, fp32 everything else): within TransformersTolF32 of
//     transformers fp32.
func TestTransformers(t *testing.T) {
	dir := os.Getenv("LLAMACU_HF_REF")
	if dir == "" {
		t.Skip("LLAMACU_HF_REF not set: run bench/reference/hf_logits.py first")
	}
	ref, err := hfref.ReadTransformersRef(dir)
	if err != nil {
		t.Fatal(err)
	}
	meta, _ := json.Marshal(ref.Meta)
	t.Logf("reference: %d tokens, vocab %d, made with %s", len(ref.TokenIDs), ref.Vocab, meta)
	f32, f16 := hfref.TransformersTolF32, hfref.TransformersTolF16
	for _, tc := range []struct {
		name string
		be   func(t *testing.T) model.Backend
		tols map[string]hfref.LogitsTol
	}{
		{"cpu", func(t *testing.T) model.Backend {
			be := cpu.New(cpu.Options{})
			t.Cleanup(func() { be.Close() })
			return be
		}, map[string]hfref.LogitsTol{"float32": f32, "float16": f16}},
		{"cuda", func(t *testing.T) model.Backend { return open(t, gpu.Options{}) },
			map[string]hfref.LogitsTol{"float32": f16, "float16": f16}},
		{"cuda/kv-f32/no-cublas", func(t *testing.T) model.Backend { return open(t, gpu.Options{KVF32: true, NoCublas: true}) },
			map[string]hfref.LogitsTol{"float32": f32, "float16": f16}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := tc.be(t)
			f, err := loader.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			m, err := model.New(be, f.Config, f.Tensor, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			checks, err := ref.Compare(m, 16, tc.tols)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range checks {
				t.Logf("%s vs transformers %s, %s: %v", be.Name(), c.Run, c.Mode, c.Diff)
				if !c.Diff.OK() {
					t.Errorf("%s vs transformers %s, %s: outside the tolerance: %v", be.Name(), c.Run, c.Mode, c.Diff)
				}
			}
		})
	}
}
