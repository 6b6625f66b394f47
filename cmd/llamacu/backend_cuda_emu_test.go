//go:build cudaemu && !cuda

package main

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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

// TestCUDAMultiNodeEmulated: the cuda build's multi-node path (node 0's NCCL id through the
// rendezvous, one NCCL communicator across the nodes, node 0's steps broadcast over the
// rendezvous connections) with two "nodes" in this process — the emulated NCCL joins ranks of
// one process only. Node 0 prints llama2.c's text; node 1 prints nothing and exits 0.
func TestCUDAMultiNodeEmulated(t *testing.T) {
	dir := shared(t, "stories260K")
	once := strings.TrimPrefix(readText(t, filepath.Join(dir, "expected_once_upon_a_time_n64.txt")), "Once upon a time")
	t.Setenv("LLAMACU_WEIGHTS", "stored")
	t.Setenv("LLAMACU_KV", "f32")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	type result struct {
		out, errOut string
		code        int
	}
	results := make([]result, 2)
	var wg sync.WaitGroup
	for node := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, errOut, code := cli(t, "run", "--backend", "cuda", "--temperature", "0", "--tp", "2", "--nodes", "2",
				"--node-rank", strconv.Itoa(node), "--rendezvous", addr,
				"--model", filepath.Join(dir, "stories260K.gguf"), "--max-tokens", "60", "Once upon a time")
			results[node] = result{out, errOut, code}
		}()
	}
	wg.Wait()
	for node, r := range results {
		require.Equal(t, 0, r.code, "node %d stderr: %s", node, r.errOut)
	}
	require.True(t, strings.HasPrefix(results[0].out, once), "node 0 printed %q, want a prefix %q", results[0].out, once)
	require.Empty(t, results[1].out, "node 1 must print nothing")
	require.Contains(t, results[0].errOut, "llamacu emulator")
}

// TestCUDABackendSettings: the cuda backend's environment settings are checked, naming the
// variable and what it accepts.
func TestCUDABackendSettings(t *testing.T) {
	for _, tc := range []struct{ env, val, want string }{
		{"LLAMACU_PREFILL", "fast", "want mma (tensor cores, v4: the default), v3"},
		{"LLAMACU_GRAPHS", "yes", "want 1"},
		{"LLAMACU_GEMV", "v5", "want v4 (tensor cores for 2–8 rows"},
		{"LLAMACU_ROPE", "fast", "want fused"},
		{"LLAMACU_INTERMEDIATES", "fp8", "want half (prefill's GEMM outputs"},
		{"LLAMACU_PDL", "yes", "want 0"},
		{"LLAMACU_QUANT", "q4", "want native or widen"},
		{"LLAMACU_DECODE", "v1", "want auto"},
		{"LLAMACU_WEIGHTS", "q4", "want f16, bf16 or stored"},
		{"LLAMACU_DEVICE", "gpu0", "is not a device number"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(tc.env, tc.val)
			_, errOut, code := cli(t, "run", "--backend", "cuda", "--max-tokens", "1", "x")
			require.NotEqual(t, 0, code)
			require.Contains(t, errOut, tc.env)
			require.Contains(t, errOut, tc.want)
		})
	}
	t.Setenv("LLAMACU_PREFILL", "simt")
	out, errOut, code := cli(t, "run", "--backend", "cuda", "--temperature", "0", "--max-tokens", "4", "Once upon a time")
	require.Equal(t, 0, code, errOut)
	require.NotEmpty(t, out)
}
