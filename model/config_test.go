package model

import (
	"errors"
	"testing"

	"github.com/llamacu/llamacu/tensor"
)

// Parameter counts published for Meta's Hugging Face checkpoints (safetensors metadata).
func TestPresetParamCounts(t *testing.T) {
	for _, tc := range []struct {
		name string
		want int64
	}{
		{"7b", 6_738_415_616},
		{"13b", 13_015_864_320},
		{"70b", 68_976_648_192},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Preset(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := c.ParamCount(); got != tc.want {
				t.Errorf("ParamCount = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestPresetShapes(t *testing.T) {
	c70, _ := Preset("llama-2-70b")
	if c70.Heads != 64 || c70.KVHeads != 8 || c70.FFN != 28672 || c70.HeadDim() != 128 || c70.KVDim() != 1024 {
		t.Errorf("70B preset: %+v", c70)
	}
	for _, n := range []string{"7b", "13b", "70b"} {
		c, _ := Preset(n)
		if c.MaxSeq != 4096 || c.Vocab != 32000 || c.NormEps != 1e-5 || c.RopeTheta != 10000 {
			t.Errorf("%s: %+v", n, c)
		}
	}
	if _, err := Preset("65b"); !errors.Is(err, ErrBadConfig) {
		t.Errorf("unknown preset: err = %v", err)
	}
}

// 70B in fp16 is about 138 GB of weights (the paper's figure for serving it on several GPUs).
func TestWeightBytes(t *testing.T) {
	gb := float64(Llama2_70B.WeightBytes(tensor.F16)) / 1e9
	if gb < 137.5 || gb > 138.5 {
		t.Errorf("70B fp16 = %.2f GB, want ≈138", gb)
	}
	// Q4_0 is 4.5 bits per weight.
	q4 := float64(Llama2_7B.WeightBytes(tensor.Q4_0)) / float64(Llama2_7B.ParamCount())
	if q4 < 0.56 || q4 > 0.57 {
		t.Errorf("7B Q4_0 bytes per parameter = %.3f, want ≈0.5625", q4)
	}
	// KV cache per token, fp16: 2 · layers · kv_dim · 2 bytes (7B: 512 KiB; 70B with GQA: 320 KiB).
	if got := Llama2_7B.KVBytesPerToken(2); got != 512<<10 {
		t.Errorf("7B KV/token = %d", got)
	}
	if got := Llama2_70B.KVBytesPerToken(2); got != 320<<10 {
		t.Errorf("70B KV/token = %d", got)
	}
}

// The config.json Meta published with meta-llama/Llama-2-7b-hf and Llama-2-70b-hf.
func TestFromHFConfig(t *testing.T) {
	const llama7b = `{"architectures":["LlamaForCausalLM"],"bos_token_id":1,"eos_token_id":2,"hidden_act":"silu",
"hidden_size":4096,"initializer_range":0.02,"intermediate_size":11008,"max_position_embeddings":4096,
"model_type":"llama","num_attention_heads":32,"num_hidden_layers":32,"num_key_value_heads":32,
"pretraining_tp":1,"rms_norm_eps":1e-05,"rope_scaling":null,"tie_word_embeddings":false,
"torch_dtype":"float16","transformers_version":"4.31.0.dev0","use_cache":true,"vocab_size":32000}`
	const llama70b = `{"architectures":["LlamaForCausalLM"],"hidden_size":8192,"intermediate_size":28672,
"max_position_embeddings":4096,"model_type":"llama","num_attention_heads":64,"num_hidden_layers":80,
"num_key_value_heads":8,"rms_norm_eps":1e-05,"rope_scaling":null,"tie_word_embeddings":false,"vocab_size":32000}`
	for _, tc := range []struct {
		name, json string
		want       Config
	}{
		{"7b", llama7b, Llama2_7B},
		{"70b", llama70b, Llama2_70B},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := FromHFConfig([]byte(tc.json))
			if err != nil {
				t.Fatal(err)
			}
			c.Name, tc.want.Name = "", ""
			if c != tc.want {
				t.Errorf("got %+v\nwant %+v", c, tc.want)
			}
		})
	}
	for _, bad := range []string{
		`{`, `{"model_type":"mistral","hidden_size":8}`, `{"hidden_size":"4096"}`,
		`{"model_type":"llama","hidden_size":10,"num_attention_heads":3,"num_hidden_layers":1,"intermediate_size":4,"vocab_size":8}`,
		`{"model_type":"llama","hidden_size":8,"num_attention_heads":2,"num_key_value_heads":3,"num_hidden_layers":1,"intermediate_size":4,"vocab_size":8}`,
		`{"model_type":"llama","hidden_size":8,"num_attention_heads":2,"num_hidden_layers":1,"intermediate_size":4,"vocab_size":8,"rope_scaling":{"type":"linear","factor":2}}`,
	} {
		if _, err := FromHFConfig([]byte(bad)); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%s: err = %v, want ErrBadConfig", bad, err)
		}
	}
}

func TestBlockAllocator(t *testing.T) {
	a := NewBlockAllocator(4, 16)
	t1, err := a.Grow(nil, 17) // two blocks
	if err != nil || len(t1) != 2 || a.InUse() != 2 {
		t.Fatalf("Grow(17) = %v, %v; in use %d", t1, err, a.InUse())
	}
	t1, _ = a.Grow(t1, 32) // still two
	if len(t1) != 2 {
		t.Fatalf("Grow(32) = %v", t1)
	}
	t2, err := a.Grow(nil, 48) // needs 3, only 2 free
	if !errors.Is(err, ErrNoBlocks) || len(t2) != 0 || a.InUse() != 2 {
		t.Fatalf("over-allocation: %v, %v, in use %d", t2, err, a.InUse())
	}
	a.Release(t1)
	if a.InUse() != 0 {
		t.Fatalf("after release: %d in use", a.InUse())
	}
	if t2, err = a.Grow(nil, 64); err != nil || len(t2) != 4 {
		t.Fatalf("Grow(64) after release = %v, %v", t2, err)
	}
}

func TestSyntheticIsDeterministic(t *testing.T) {
	src := Synthetic(Tiny, 3, tensor.F16)
	a, err := src(LayerName(2, NameWq))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Synthetic(Tiny, 3, tensor.F16)(LayerName(2, NameWq))
	c, _ := Synthetic(Tiny, 4, tensor.F16)(LayerName(2, NameWq))
	if string(a.Data) != string(b.Data) || string(a.Data) == string(c.Data) {
		t.Error("synthetic weights must depend on the seed and only on it")
	}
	if err := a.Validate(); err != nil {
		t.Error(err)
	}
	if _, err := src("nope"); err == nil {
		t.Error("unknown name must fail")
	}
}
