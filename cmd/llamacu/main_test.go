package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/sample"
)

// shared returns a path in ../shared/testdata, skipping the test when it is absent.
func shared(tb testing.TB, rel string) string {
	tb.Helper()
	p := filepath.Join("..", "..", "..", "shared", "testdata", rel)
	if _, err := os.Stat(p); err != nil {
		tb.Skipf("test data not found: %s", p)
	}
	return p
}

// cli runs the CLI in-process and returns stdout, stderr and the exit status.
func cli(tb testing.TB, args ...string) (string, string, int) {
	tb.Helper()
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb)
	return out.String(), errb.String(), code
}

func readText(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	require.NoError(tb, err)
	return string(b)
}

// The llama2.c references: greedy from BOS alone, and "Once upon a time" then greedy (the file
// includes the prompt; `run` prints only what follows it).
func TestRunStories260KMatchesLlama2c(t *testing.T) {
	dir := shared(t, "stories260K")
	greedy := readText(t, filepath.Join(dir, "expected_greedy_n200.txt"))
	once := readText(t, filepath.Join(dir, "expected_once_upon_a_time_n64.txt"))
	require.True(t, strings.HasPrefix(once, "Once upon a time"))
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"bin/empty", []string{"--model", filepath.Join(dir, "stories260K.bin"), "--tokenizer", filepath.Join(dir, "tok512.bin"), "--max-tokens", "200", ""}, greedy},
		{"gguf/empty", []string{"--model", filepath.Join(dir, "stories260K.gguf"), "--max-tokens", "200", ""}, greedy},
		{"bin/once", []string{"--model", filepath.Join(dir, "stories260K.bin"), "--tokenizer", filepath.Join(dir, "tok512.bin"), "--max-tokens", "60", "Once upon a time"}, strings.TrimPrefix(once, "Once upon a time")},
		{"gguf/once", []string{"--model", filepath.Join(dir, "stories260K.gguf"), "--max-tokens", "60", "Once upon a time"}, strings.TrimPrefix(once, "Once upon a time")},
		{"bin/tp2", []string{"--tp", "2", "--model", filepath.Join(dir, "stories260K.bin"), "--tokenizer", filepath.Join(dir, "tok512.bin"), "--max-tokens", "200", ""}, greedy},
		{"gguf/tp4/once", []string{"--tp", "4", "--model", filepath.Join(dir, "stories260K.gguf"), "--max-tokens", "60", "Once upon a time"}, strings.TrimPrefix(once, "Once upon a time")},
		{"bin/tok512.model", []string{"--model", filepath.Join(dir, "stories260K.bin"), "--tokenizer", filepath.Join(dir, "tok512.model"), "--max-tokens", "200", ""}, greedy},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"run", "--temperature", "0"}, tc.args...)
			out, errOut, code := cli(t, args...)
			require.Equal(t, 0, code, "stderr: %s", errOut)
			require.Equal(t, tc.want, out)
			require.Contains(t, errOut, "tok/s")
		})
	}
}

func TestRunBuiltinModel(t *testing.T) {
	out, errOut, code := cli(t, "run", "--temperature", "0", "--max-tokens", "12", "Once upon a time")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "synthetic")
	require.NotEmpty(t, out)
	// Greedy is deterministic.
	out2, _, _ := cli(t, "run", "--temperature", "0", "--max-tokens", "12", "Once upon a time")
	require.Equal(t, out, out2)
}

func TestRunSeededSamplingIsReproducible(t *testing.T) {
	m := shared(t, "stories260K/stories260K.gguf")
	args := []string{"run", "--model", m, "--temperature", "1", "--seed", "7", "--max-tokens", "40", "Lily"}
	a, e1, c1 := cli(t, args...)
	b, _, _ := cli(t, args...)
	require.Equal(t, 0, c1, e1)
	require.Equal(t, a, b)
	args[6] = "8"
	c, _, _ := cli(t, args...)
	require.NotEqual(t, a, c, "different seeds should give different text")
}

// --frequency-penalty and --presence-penalty reach the sampler: greedy text changes, and equals
// the engine's with the same penalties; an infinite penalty is a usage error.
func TestRunPenaltyFlags(t *testing.T) {
	m := shared(t, "stories260K/stories260K.gguf")
	e, err := engine.Load(engine.Options{ModelPath: m, Threads: 1})
	require.NoError(t, err)
	defer e.Close()
	base := []string{"run", "--model", m, "--temperature", "0", "--max-tokens", "60"}
	greedy, errOut, code := cli(t, append(base, "Once upon a time")...)
	require.Equal(t, 0, code, errOut)
	for _, tc := range []struct {
		flag       string
		freq, pres float32
	}{{"--frequency-penalty", 1.5, 0}, {"--presence-penalty", 0, 2}} {
		t.Run(tc.flag, func(t *testing.T) {
			val := fmt.Sprint(max(tc.freq, tc.pres))
			out, errOut, code := cli(t, append(base, tc.flag, val, "Once upon a time")...)
			require.Equal(t, 0, code, errOut)
			require.NotEqual(t, greedy, out)
			sp := sample.GreedyParams()
			sp.FrequencyPenalty, sp.PresencePenalty, sp.RepeatLastN = tc.freq, tc.pres, 64
			var want strings.Builder
			_, err := e.Generate(context.Background(), engine.Request{Prompt: "Once upon a time", MaxTokens: 60, Sampling: sp},
				func(_ int32, s string) error { want.WriteString(s); return nil })
			require.NoError(t, err)
			require.Equal(t, want.String(), out)

			_, errOut, code = cli(t, append(base, tc.flag, "1e300", "x")...)
			require.Equal(t, 2, code)
			require.Contains(t, errOut, "must be finite")
		})
	}
}

// --logit-bias ID-BIAS (llama.cpp's form, repeatable) reaches the sampler: banning greedy's first
// token gives the engine's answer under the same bias; malformed values are usage errors.
func TestRunLogitBias(t *testing.T) {
	m := shared(t, "stories260K/stories260K.gguf")
	e, err := engine.Load(engine.Options{ModelPath: m, Threads: 1})
	require.NoError(t, err)
	defer e.Close()
	var first int32 = -1
	_, err = e.Generate(context.Background(), engine.Request{Prompt: "Once upon a time", MaxTokens: 1, Sampling: sample.GreedyParams()},
		func(id int32, _ string) error { first = id; return nil })
	require.NoError(t, err)
	sp := sample.GreedyParams()
	sp.LogitBias = map[int32]float32{first: -100, 5: 1e-5}
	var want strings.Builder
	_, err = e.Generate(context.Background(), engine.Request{Prompt: "Once upon a time", MaxTokens: 30, Sampling: sp},
		func(_ int32, s string) error { want.WriteString(s); return nil })
	require.NoError(t, err)
	out, errOut, code := cli(t, "run", "--model", m, "--temperature", "0", "--max-tokens", "30",
		"--logit-bias", fmt.Sprintf("%d-100", first), "--logit-bias", "5+1e-5", "Once upon a time")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, want.String(), out)
	for _, bad := range []string{"abc", "12", "-5+1", "12+x", "12+inf"} {
		_, errOut, code := cli(t, "run", "--model", m, "--logit-bias", bad, "x")
		require.Equal(t, 2, code, "%s: %s", bad, errOut)
		require.Contains(t, errOut, "logit-bias")
	}
}

func TestTinyRandomGGUFLoadsAndGenerates(t *testing.T) {
	m := shared(t, "tiny-random/llama-2-tiny-random.gguf")
	out, errOut, code := cli(t, "run", "--model", m, "--temperature", "0", "--max-tokens", "8", "Hello")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "generated")
	_ = out // random weights: any text, possibly empty if EOS comes first
}

func TestTokenizeVectors(t *testing.T) {
	type spm struct {
		Cases []struct {
			Input string  `json:"input"`
			IDs   []int32 `json:"expected_ids_no_bos"`
		} `json:"cases"`
	}
	var v spm
	require.NoError(t, json.Unmarshal([]byte(readText(t, shared(t, "tokenizer-vectors/llama-cpp-spm.json"))), &v))
	tokModel := shared(t, "llama2-tokenizer/tokenizer.model")
	vocabGGUF := shared(t, "llama2-tokenizer/ggml-vocab-llama-spm.gguf")
	for i, c := range v.Cases {
		for _, src := range [][]string{{"--tokenizer", tokModel}, {"--model", vocabGGUF}} {
			args := append([]string{"tokenize", "--no-bos"}, src...)
			out, errOut, code := cli(t, append(args, "--", c.Input)...)
			require.Equal(t, 0, code, errOut)
			var got []int32
			require.NoError(t, json.Unmarshal([]byte(out), &got), out)
			if c.IDs == nil {
				c.IDs = []int32{}
			}
			require.Equal(t, c.IDs, got, "case %d %q via %s", i, c.Input, src[1])
		}
	}
}

func TestTokenizeWithBOS(t *testing.T) {
	out, errOut, code := cli(t, "tokenize", "--tokenizer", shared(t, "llama2-tokenizer/tokenizer.model"), "How are you doing?")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "[1,1128,526,366,2599,29973]\n", out) // transformers.js "SIMPLE" vector
}

func TestInfo(t *testing.T) {
	out, errOut, code := cli(t, "info", "--model", shared(t, "stories260K/stories260K.bin"), "--json")
	require.Equal(t, 0, code, errOut)
	var r infoReport
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	require.Equal(t, 64, r.Config.Dim)
	require.Equal(t, 4, r.Config.KVHeads)
	require.Equal(t, 8, r.HeadDim)
	require.EqualValues(t, r.Config.ParamCount(), r.Parameters)

	out, _, code = cli(t, "info", "--preset", "70b")
	require.Equal(t, 0, code)
	require.Contains(t, out, "64 query, 8 key/value")
}

func TestErrorsAreClearAndNeverPanic(t *testing.T) {
	dir := t.TempDir()
	trunc := filepath.Join(dir, "trunc.gguf")
	full, err := os.ReadFile(shared(t, "stories260K/stories260K.gguf"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(trunc, full[:len(full)/2], 0o644))
	cases := []struct {
		name    string
		args    []string
		code    int
		message string
	}{
		{"no such file", []string{"run", "--model", filepath.Join(dir, "nope.gguf"), "x"}, 1, "no such file"},
		{"truncated gguf", []string{"run", "--model", trunc, "x"}, 1, "trunc.gguf"},
		{"tokenizer size mismatch", []string{"run", "--model", shared(t, "stories260K/stories260K.bin"), "--tokenizer", shared(t, "llama2-tokenizer/tokenizer.model"), "x"}, 1, "512"},
		{"tp does not divide kv heads", []string{"run", "--tp", "3", "--model", shared(t, "stories260K/stories260K.bin"), "--tokenizer", shared(t, "stories260K/tok512.bin"), "x"}, 1, "valid degrees up to 8: 1, 2, 4"},
		{"unknown backend", []string{"run", "--backend", "tpu", "x"}, 2, "unknown backend"},
		{"bad temperature", []string{"run", "--temperature", "-1", "x"}, 2, "temperature"},
		{"two prompts", []string{"run", "a", "b"}, 2, "one PROMPT"},
		{"unknown command", []string{"fly"}, 2, "unknown command"},
		{"tokenize without source", []string{"tokenize", "x"}, 2, "--model or --tokenizer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := cli(t, tc.args...)
			require.Equal(t, tc.code, code, errOut)
			require.Contains(t, errOut, tc.message)
		})
	}
}
