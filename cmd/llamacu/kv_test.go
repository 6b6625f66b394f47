package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// $LLAMACU_KV picks the CPU's KV cache type; anything but f16 or f32 is a usage error.
func TestKVEnv(t *testing.T) {
	m := shared(t, "stories260K/stories260K.gguf")
	args := []string{"run", "--model", m, "--temperature", "0", "--max-tokens", "20", "Once upon a time"}
	want, errOut, code := cli(t, args...)
	require.Equal(t, 0, code, errOut)
	t.Setenv("LLAMACU_KV", "f16")
	got, errOut, code := cli(t, args...)
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, want, got, "greedy text with an fp16 cache")
	t.Setenv("LLAMACU_KV", "int8")
	_, errOut, code = cli(t, args...)
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `LLAMACU_KV="int8"`)
}
