package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/sample"
)

// --lora and --lora-scaled reach the engine: run prints the adapted model's greedy text.
func TestRunLoRAFlags(t *testing.T) {
	m := shared(t, "stories260K/stories260K.gguf")
	adapter := filepath.Join("..", "..", "engine", "testdata", "stories260K-lora.gguf")
	for _, tc := range []struct {
		flags []string
		scale float64
	}{{[]string{"--lora", adapter}, 1}, {[]string{"--lora-scaled", adapter + ":0.5"}, 0.5}} {
		e, err := engine.Load(engine.Options{ModelPath: m, Threads: 1, LoRA: []engine.LoRAOption{{Path: adapter, Scale: tc.scale}}})
		require.NoError(t, err)
		var want strings.Builder
		_, err = e.Generate(context.Background(), engine.Request{Prompt: "Lily and Ben", MaxTokens: 80, Sampling: sample.GreedyParams()},
			func(_ int32, s string) error { want.WriteString(s); return nil })
		require.NoError(t, err)
		e.Close()
		out, errOut, code := cli(t, append(append([]string{"run", "--model", m, "--temperature", "0", "--max-tokens", "80"}, tc.flags...), "Lily and Ben")...)
		require.Equal(t, 0, code, errOut)
		require.Equal(t, want.String(), out, "%v", tc.flags)
		require.Contains(t, errOut, "+ LoRA")
	}
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"run", "--model", m, "--lora-scaled", adapter, "x"}, "want PATH:SCALE"},
		{[]string{"run", "--model", m, "--lora-scaled", adapter + ":inf", "x"}, "finite number"},
		{[]string{"run", "--model", m, "--lora", filepath.Join(t.TempDir(), "none.gguf"), "x"}, "no such file"},
		{[]string{"bench", "--synthetic", "tiny", "--lora", adapter}, "not --synthetic"},
	} {
		_, errOut, code := cli(t, tc.args...)
		require.NotEqual(t, 0, code)
		require.Contains(t, errOut, tc.msg)
	}
}
