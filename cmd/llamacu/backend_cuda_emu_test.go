//go:build cudaemu && !cuda

package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCUDABackendEmulated runs the CLI's cuda backend on the emulated driver (build tag cudaemu:
// the real kernels/*.cu on the CPU, see cuda/emu.go): `run --backend cuda` on stories260K prints
// llama2.c's greedy text, alone and at --tp 2 (ranks on two emulated devices talking through
// the emulated NCCL), with the fp32 KV cache and weights as stored; and with the default fp16
// weights and KV cache for the first sentence.
func TestCUDABackendEmulated(t *testing.T) {
	dir := shared(t, "stories260K")
	once := strings.TrimPrefix(readText(t, filepath.Join(dir, "expected_once_upon_a_time_n64.txt")), "Once upon a time")
	model := []string{"--model", filepath.Join(dir, "stories260K.gguf"), "--max-tokens", "60", "Once upon a time"}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"f32", map[string]string{"LLAMACU_WEIGHTS": "stored", "LLAMACU_KV": "f32"}, nil, once},
		{"f32/tp2/nccl", map[string]string{"LLAMACU_WEIGHTS": "stored", "LLAMACU_KV": "f32", "LLAMACU_TP_COMM": "nccl"}, []string{"--tp", "2"}, once},
		{"f16", nil, nil, once[:strings.Index(once, ".")+1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := append(append([]string{"run", "--backend", "cuda", "--temperature", "0"}, tc.args...), model...)
			out, errOut, code := cli(t, args...)
			require.Equal(t, 0, code, "stderr: %s", errOut)
			require.Contains(t, errOut, "llamacu emulator")
			require.True(t, strings.HasPrefix(out, tc.want), "got %q, want a prefix %q", out, tc.want)
		})
	}
}
