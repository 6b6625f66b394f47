package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/tensor"
)

// quantize writes a file llamacu loads, of the types asked for; its greedy text at Q8_0 is the
// F32 model's; with --lora it is the adapted model's (llama.cpp's export-lora, then quantize).
func TestQuantizeCommand(t *testing.T) {
	dir := shared(t, "stories260K")
	gguf := filepath.Join(dir, "stories260K.gguf")
	tmp := t.TempDir()
	run := func(args ...string) string {
		out, errOut, code := cli(t, args...)
		require.Equal(t, 0, code, errOut)
		return out
	}
	greedy := func(model string, extra ...string) string {
		return run(append(append([]string{"run", "--model", model, "--temperature", "0", "--max-tokens", "60"}, extra...), "Once upon a time")...)
	}
	q8 := filepath.Join(tmp, "q8.gguf")
	_, errOut, code := cli(t, "quantize", "--model", filepath.Join(dir, "stories260K.bin"), "--tokenizer", filepath.Join(dir, "tok512.bin"), "--type", "q8_0", "--out", q8)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "Q8_0")
	f, err := loader.Open(q8)
	require.NoError(t, err)
	types := map[tensor.DType]int{}
	for _, tt := range f.Tensors {
		types[tt.DType]++
	}
	f.Close()
	// stories260K (its LM head tied to the embeddings): rows of 64 (Q8_0) but the down
	// projection's 172 (not whole blocks: F16).
	require.Equal(t, map[tensor.DType]int{tensor.F32: 11, tensor.Q8_0: 31, tensor.F16: 5}, types)
	require.Equal(t, greedy(gguf), greedy(q8))

	adapter := filepath.Join("..", "..", "engine", "testdata", "stories260K-lora.gguf")
	merged := filepath.Join(tmp, "merged-f32.gguf")
	run("quantize", "--model", gguf, "--lora", adapter, "--type", "F32", "--out", merged)
	require.Equal(t, greedy(gguf, "--lora", adapter), greedy(merged))

	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"quantize", "--model", gguf, "--type", "q2_k", "--out", filepath.Join(tmp, "x.gguf")}, "llama.cpp's llama-quantize"},
		{[]string{"quantize", "--model", gguf, "--type", "q4_0"}, "--out are required"},
		{[]string{"quantize", "--model", q8, "--type", "q4_0", "--out", filepath.Join(tmp, "y.gguf")}, "Q8_0 already"},
	} {
		_, errOut, code := cli(t, tc.args...)
		require.NotEqual(t, 0, code)
		require.Contains(t, errOut, tc.msg)
		require.False(t, strings.Contains(errOut, "panic"))
	}
	_, _, code = cli(t, "quantize", "--model", q8, "--type", "q4_0", "--allow-requantize", "--out", filepath.Join(tmp, "z.gguf"))
	require.Equal(t, 0, code)
}
