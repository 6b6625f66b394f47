package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// cliTimeout runs the CLI like cli, failing the test if it panics or takes longer than d.
func cliTimeout(t *testing.T, d time.Duration, args ...string) (string, string, int) {
	t.Helper()
	type result struct {
		out, errOut string
		code        int
		panicked    any
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() {
			r.panicked = recover()
			done <- r
		}()
		r.out, r.errOut, r.code = cli(t, args...)
	}()
	select {
	case r := <-done:
		require.Nil(t, r.panicked, "panic on %q", args)
		return r.out, r.errOut, r.code
	case <-time.After(d):
		t.Fatalf("%q still running after %v", args, d)
		return "", "", -1
	}
}

// Weird flag values and bad files: exit 1 or 2 with a message naming the problem, never a panic,
// a hang or an out-of-memory death.
func TestWeirdFlagsAndFiles(t *testing.T) {
	dir := t.TempDir()
	gguf := shared(t, "stories260K/stories260K.gguf")
	vocabOnly := shared(t, "llama2-tokenizer/ggml-vocab-llama-spm.gguf")
	garbage := filepath.Join(dir, "garbage.gguf")
	require.NoError(t, os.WriteFile(garbage, []byte("GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff"), 0o644))
	empty := filepath.Join(dir, "empty.bin")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600)) // opening it for reading blocks until a writer comes
	cases := []struct {
		name    string
		args    []string
		code    int
		message string
	}{
		{"run threads negative", []string{"run", "--threads", "-5", "x"}, 2, "--threads -5"},
		{"run threads huge", []string{"run", "--threads", "1000000000", "x"}, 2, "--threads 1000000000"},
		{"run ctx negative", []string{"run", "--ctx", "-1", "x"}, 2, "--ctx -1"},
		{"run tp 0", []string{"run", "--tp", "0", "x"}, 2, "--tp must be ≥ 1"},
		{"run tp huge", []string{"run", "--tp", "10000000", "x"}, 2, "--tp 10000000"},
		{"run tp not a number", []string{"run", "--tp", "two", "x"}, 2, "invalid value"},
		{"run max-tokens negative", []string{"run", "--max-tokens", "-3", "x"}, 2, "--max-tokens"},
		{"run ctx 1", []string{"run", "--ctx", "1", "--max-tokens", "2", "x"}, 1, "longer than the context"},
		{"run vocab-only gguf", []string{"run", "--model", vocabOnly, "x"}, 1, "no tensors"},
		{"run garbage gguf", []string{"run", "--model", garbage, "x"}, 1, "garbage.gguf"},
		{"run empty file", []string{"run", "--model", empty, "x"}, 1, "empty.bin"},
		{"run directory without config", []string{"run", "--model", dir, "x"}, 1, "config.json"},
		{"run model as tokenizer", []string{"run", "--model", gguf, "--tokenizer", shared(t, "stories260K/stories260K.bin"), "x"}, 1, "stories260K.bin"},
		{"run fifo", []string{"run", "--model", fifo, "x"}, 1, "not a regular file"},
		{"run device", []string{"run", "--model", os.DevNull, "x"}, 1, "not a regular file"},
		{"run fifo tokenizer", []string{"run", "--model", gguf, "--tokenizer", fifo, "x"}, 1, "not a regular file"},
		{"tokenize fifo", []string{"tokenize", "--tokenizer", fifo, "x"}, 1, "not a regular file"},
		{"tokenize fifo model", []string{"tokenize", "--model", fifo, "x"}, 1, "not a regular file"},
		{"info fifo", []string{"info", "--model", fifo}, 1, "not a regular file"},
		{"plan fifo", []string{"plan", "--model", fifo}, 1, "not a regular file"},
		{"chat threads huge", []string{"chat", "--threads", "99999999"}, 2, "--threads"},
		{"chat max-tokens 0", []string{"chat", "--max-tokens", "0"}, 2, "--max-tokens"},
		{"chat max-tokens fill the context", []string{"chat", "--ctx", "16", "--max-tokens", "16"}, 2, "leaves no room"},
		{"tokenize empty tokenizer", []string{"tokenize", "--tokenizer", empty, "x"}, 1, "empty.bin"},
		{"tokenize directory", []string{"tokenize", "--tokenizer", dir, "x"}, 1, "directory"},
		{"tokenize two texts", []string{"tokenize", "--model", gguf, "a", "b"}, 2, "one TEXT"},
		{"info vocab-only gguf", []string{"info", "--model", vocabOnly}, 1, "no tensors"},
		{"info bad preset", []string{"info", "--preset", "nonsense"}, 2, "unknown preset"},
		{"bench batch empty", []string{"bench", "--synthetic", "tiny", "--batch", ""}, 2, "--batch"},
		{"bench depth bad", []string{"bench", "--synthetic", "tiny", "--depth", "1,x,2"}, 2, "--depth"},
		{"bench threads negative", []string{"bench", "--synthetic", "tiny", "--threads", "-1"}, 2, "--threads"},
		{"bench tp huge", []string{"bench", "--synthetic", "tiny", "--tp", "100000000"}, 2, "--tp"},
		{"bench bad preset", []string{"bench", "--synthetic", "nonsense"}, 2, "unknown preset"},
		{"plan gpus 0", []string{"plan", "--preset", "7b", "--gpus", "0"}, 2, "--gpus"},
		{"plan gpu-mem lots", []string{"plan", "--preset", "7b", "--gpu-mem", "lots"}, 2, `--gpu-mem "lots"`},
		{"plan gpu-mem 9EiB", []string{"plan", "--preset", "7b", "--gpu-mem", "9EiB"}, 2, "8 EiB"},
		{"plan overhead 9EiB", []string{"plan", "--preset", "7b", "--overhead", "9EiB"}, 2, "8 EiB"},
		{"plan ctx max int", []string{"plan", "--preset", "7b", "--ctx", "9223372036854775807"}, 1, "absurdly large"},
		{"plan ctx near max int", []string{"plan", "--preset", "7b", "--ctx", "9223372036854775800"}, 1, "absurdly large"},
		{"plan batch huge", []string{"plan", "--preset", "7b", "--batch", "99999999999999"}, 1, "absurdly large"},
		{"plan tokens per step huge", []string{"plan", "--preset", "7b", "--max-batch-tokens", "99999999999999"}, 1, "absurdly large"},
		{"plan bandwidth NaN", []string{"plan", "--preset", "7b", "--bandwidth-gbps", "NaN"}, 2, "--bandwidth-gbps"},
		{"plan bandwidth Inf", []string{"plan", "--preset", "7b", "--bandwidth-gbps", "+Inf"}, 2, "--bandwidth-gbps"},
		{"plan allreduce NaN", []string{"plan", "--preset", "7b", "--allreduce-us", "NaN"}, 2, "--allreduce-us"},
		{"plan preset nonsense", []string{"plan", "--preset", "nonsense"}, 2, "unknown preset"},
		{"plan vocab-only gguf", []string{"plan", "--model", vocabOnly}, 1, "no tensors"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := cliTimeout(t, 30*time.Second, tc.args...)
			require.Equal(t, tc.code, code, errOut)
			require.Contains(t, errOut, tc.message)
			require.NotContains(t, strings.ToLower(errOut), "goroutine ")
		})
	}
}
