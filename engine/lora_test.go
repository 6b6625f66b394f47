package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
)

const loraFile = "testdata/stories260K-lora.gguf" // bench/peer/mklora's, seed 1

// greedyIDs is Engine.Generate's greedy token ids.
func greedyIDs(t *testing.T, e *engine.Engine, prompt string, n int) []int32 {
	t.Helper()
	return generateSolo(t, e, engine.Request{Prompt: prompt, MaxTokens: n, Sampling: sample.Params{Temperature: 0}}).ids
}

// The same adapter as a PEFT folder on the Hugging Face export of the model gives the GGUF
// adapter's text on the GGUF model, and its hidden states (within F32 rounding: the Q and K
// rows travel permuted); at strength 0 the text is the base model's; at TP 2 the same as TP 1.
func TestLoRAFormatsAgree(t *testing.T) {
	dir := shared(t, "stories260K")
	gguf := filepath.Join(dir, "stories260K.gguf")
	src, err := loader.Open(gguf)
	require.NoError(t, err)
	hf := filepath.Join(t.TempDir(), "hf")
	require.NoError(t, loader.ExportHF(hf, src.Config, src.Tensors, loader.ExportOptions{TokenizerModel: filepath.Join(dir, "tok512.model")}))
	adapter, err := loader.OpenLoRA(loraFile, src.Config)
	require.NoError(t, err)
	peft := filepath.Join(t.TempDir(), "peft")
	require.NoError(t, loader.ExportPEFT(peft, src.Config, adapter.Pairs, 2*float64(anyRank(adapter))))
	adapter.Close()
	src.Close()

	load := func(path string, tp int, lora ...engine.LoRAOption) *engine.Engine {
		e, err := engine.Load(engine.Options{ModelPath: path, LoRA: lora, TP: tp, Threads: 1})
		require.NoError(t, err)
		t.Cleanup(func() { e.Close() })
		return e
	}
	base := load(gguf, 1)
	withGGUF := load(gguf, 1, engine.LoRAOption{Path: loraFile, Scale: 1})
	withPEFT := load(hf, 1, engine.LoRAOption{Path: peft, Scale: 1})
	zero := load(gguf, 1, engine.LoRAOption{Path: loraFile, Scale: 0})
	tp2 := load(gguf, 2, engine.LoRAOption{Path: loraFile, Scale: 1})
	require.Contains(t, withGGUF.Source, "LoRA "+loraFile)

	differ := 0
	for _, p := range []string{"Once upon a time", "Lily and Ben", "The cat sat on the mat", "One day, a little girl"} {
		want := greedyIDs(t, withGGUF, p, 60)
		require.Equal(t, want, greedyIDs(t, withPEFT, p, 60), "PEFT on the HF folder, prompt %q", p)
		require.Equal(t, want, greedyIDs(t, tp2, p, 60), "TP 2, prompt %q", p)
		b := greedyIDs(t, base, p, 60)
		require.Equal(t, b, greedyIDs(t, zero, p, 60), "strength 0, prompt %q", p)
		if !slices.Equal(b, want) {
			differ++
		}
		hg, err := withGGUF.Embed(context.Background(), engine.EmbedRequest{Prompt: p})
		require.NoError(t, err)
		hp, err := withPEFT.Embed(context.Background(), engine.EmbedRequest{Prompt: p})
		require.NoError(t, err)
		if _, at := embedClose(hp, f64(hg), 1e-5, 1e-5); at >= 0 {
			t.Errorf("prompt %q: hidden state element %d: PEFT %g, GGUF %g", p, at, hp[at], hg[at])
		}
	}
	require.Positive(t, differ, "the adapter changed no text: the test would not tell")
}

func anyRank(l *loader.LoRA) int {
	for _, p := range l.Pairs {
		return p.Rank()
	}
	return 0
}

// An adapter made for another model is refused, naming the tensor (the shared tiny-random
// model and the built-in one have other shapes); so is a strength that is not a number. (A
// quantized weight's refusal: loader's TestLoRAErrors.)
func TestLoRAErrorsAtLoad(t *testing.T) {
	_, err := engine.Load(engine.Options{ModelPath: shared(t, "tiny-random/llama-2-tiny-random.gguf"), LoRA: []engine.LoRAOption{{Path: loraFile, Scale: 1}}})
	require.ErrorIs(t, err, loader.ErrLoRA)
	cfg := model.Tiny
	_, err = engine.Load(engine.Options{SyntheticConfig: &cfg, LoRA: []engine.LoRAOption{{Path: loraFile, Scale: 1}}})
	require.ErrorIs(t, err, loader.ErrLoRA)
	_, err = engine.Load(engine.Options{ModelPath: shared(t, "stories260K/stories260K.gguf"), LoRA: []engine.LoRAOption{{Path: loraFile, Scale: math.NaN()}}})
	require.ErrorIs(t, err, loader.ErrLoRA)
}

// llamaCppLoRARefs are llama.cpp's greedy continuations of stories260K.gguf with the adapter
// (testdata/llama-cpp-lora-stories260K.json, made by bench/peer/lora-refs.mjs). llama.cpp applies
// it unmerged, W·x + s·B·(A·x); we merge it into W as the weights load.
type llamaCppLoRARefs struct {
	Runs []struct {
		Scale float64        `json:"scale"`
		Cases []llamaCppCase `json:"cases"`
	} `json:"runs"`
}

// With the adapter at strengths 1 and 0.5, greedy decoding gives llama.cpp's tokens and text
// for all eight prompts (each of which the adapter changes; TestLoRAFormatsAgree carries this
// to the PEFT folder on the Hugging Face export).
func TestLoRAMatchesLlamaCpp(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "llama-cpp-lora-stories260K.json"))
	require.NoError(t, err)
	var refs llamaCppLoRARefs
	require.NoError(t, json.Unmarshal(b, &refs))
	require.Len(t, refs.Runs, 2)
	gguf := shared(t, "stories260K/stories260K.gguf")
	for _, run := range refs.Runs {
		require.GreaterOrEqual(t, len(run.Cases), 8)
		e, err := engine.Load(engine.Options{ModelPath: gguf, Threads: 1, LoRA: []engine.LoRAOption{{Path: loraFile, Scale: run.Scale}}})
		require.NoError(t, err)
		for _, c := range run.Cases {
			requireLlamaCpp(t, e, c, fmt.Sprintf("strength %g", run.Scale))
		}
		e.Close()
	}
}

// On a quantized model the adapter is applied at run time, unmerged (as llama.cpp applies it):
// the same greedy tokens and the same hidden states (within 1e-3, see below) as the quantized
// weights decoded to F32 with the adapter merged in.
func TestLoRAOnQuantizedWeights(t *testing.T) {
	gguf := shared(t, "stories260K/stories260K.gguf")
	f, err := loader.Open(gguf)
	require.NoError(t, err)
	dir := t.TempDir()
	write := func(name string, qt string, src model.TensorSource) string {
		q, err := loader.ParseQuantType(qt)
		require.NoError(t, err)
		var buf bytes.Buffer
		require.NoError(t, loader.Quantize(&buf, f.Config, f.Vocab, src, q, loader.QuantizeOptions{AllowRequantize: true}))
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
		return path
	}
	q8 := write("q8.gguf", "Q8_0", f.Tensor)
	f.Close()
	qf, err := loader.Open(q8)
	require.NoError(t, err)
	wide := write("wide.gguf", "F32", qf.Tensor) // the Q8_0 values, decoded
	qf.Close()

	lora := []engine.LoRAOption{{Path: loraFile, Scale: 0.7}}
	quant, err := engine.Load(engine.Options{ModelPath: q8, Threads: 1, LoRA: lora})
	require.NoError(t, err)
	defer quant.Close()
	require.Contains(t, quant.Source, "applied unmerged")
	ref, err := engine.Load(engine.Options{ModelPath: wide, Threads: 1, LoRA: lora})
	require.NoError(t, err)
	defer ref.Close()
	require.NotContains(t, ref.Source, "unmerged")
	base, err := engine.Load(engine.Options{ModelPath: q8, Threads: 1})
	require.NoError(t, err)
	defer base.Close()
	differ := 0
	for _, p := range []string{"Once upon a time", "Lily and Ben", "The cat sat on the mat", "One day, a little girl"} {
		want := greedyIDs(t, ref, p, 60)
		require.Equal(t, want, greedyIDs(t, quant, p, 60), "prompt %q", p)
		if !slices.Equal(want, greedyIDs(t, base, p, 60)) {
			differ++
		}
		hq, err := quant.Embed(context.Background(), engine.EmbedRequest{Prompt: p, Pooling: engine.PoolMean})
		require.NoError(t, err)
		hr, err := ref.Embed(context.Background(), engine.EmbedRequest{Prompt: p, Pooling: engine.PoolMean})
		require.NoError(t, err)
		// The down projection's rows (172) are not whole Q8_0 blocks: it stays F16, and its
		// adapter is merged and rounded to F16, where the reference keeps F32 (the measured
		// difference, 1.5e-4 to 2.2e-4, against the adapter's effect of 0.09 to 0.11).
		hb, err := base.Embed(context.Background(), engine.EmbedRequest{Prompt: p, Pooling: engine.PoolMean})
		require.NoError(t, err)
		require.LessOrEqual(t, relL2(hq, f64(hr)), 1e-3, "prompt %q: unmerged vs merged hidden states", p)
		require.Greater(t, relL2(hb, f64(hr)), 0.05, "prompt %q: the adapter's effect", p)
	}
	require.Positive(t, differ, "the adapter changed no text")
	// Under tensor parallelism each rank applies its shard of the pairs: TP 2 gives TP 1's text.
	tp2, err := engine.Load(engine.Options{ModelPath: q8, TP: 2, LoRA: lora})
	require.NoError(t, err)
	defer tp2.Close()
	for _, p := range []string{"Once upon a time", "Lily and Ben"} {
		require.Equal(t, greedyIDs(t, quant, p, 60), greedyIDs(t, tp2, p, 60), "TP 2, prompt %q", p)
	}
}
