package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
)

// `embed` prints one JSON line per text, arguments then --file lines, each Engine.Embed's
// vector with the flags' pooling and normalization; at TP 2 the same.
func TestEmbedCommand(t *testing.T) {
	m := shared(t, "stories260K/stories260K.gguf")
	texts := []string{"Once upon a time", "안녕하세요", "The cat sat on the mat."}
	file := filepath.Join(t.TempDir(), "texts.txt")
	require.NoError(t, os.WriteFile(file, []byte(texts[1]+"\n\n"+texts[2]+"\n"), 0o644))
	e, err := engine.Load(engine.Options{ModelPath: m})
	require.NoError(t, err)
	defer e.Close()
	for _, tc := range []struct {
		flags []string
		req   engine.EmbedRequest
	}{
		{nil, engine.EmbedRequest{Pooling: engine.PoolLast, Normalize: true}},
		{[]string{"--pooling", "mean", "--normalize=false"}, engine.EmbedRequest{Pooling: engine.PoolMean}},
		{[]string{"--tp", "2", "--pooling", "mean"}, engine.EmbedRequest{Pooling: engine.PoolMean, Normalize: true}},
	} {
		args := append(append([]string{"embed", "--model", m}, tc.flags...), texts[0], "--file", file)
		out, errOut, code := cli(t, args...)
		require.Equal(t, 0, code, errOut)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, len(texts), "%v: %s", tc.flags, out)
		for i, l := range lines {
			var got embedLine
			require.NoError(t, json.Unmarshal([]byte(l), &got))
			req := tc.req
			req.Prompt = texts[i]
			want, err := e.Embed(context.Background(), req)
			require.NoError(t, err)
			require.Equal(t, i, got.Index)
			require.Equal(t, len(e.Tokenizer.Encode(texts[i], true)), got.Tokens)
			require.InDeltaSlice(t, toF64(want), toF64(got.Embedding), 1e-5, "%v: text %d", tc.flags, i)
		}
	}
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"embed"}, "a TEXT argument or --file is required"},
		{[]string{"embed", "--pooling", "cls", "x"}, "want last or mean"},
		{[]string{"serve", "--pooling", "cls"}, "want last or mean"},
		{[]string{"embed", "--file", filepath.Join(t.TempDir(), "none.txt")}, "no such file"},
	} {
		_, errOut, code := cli(t, tc.args...)
		require.NotEqual(t, 0, code)
		require.Contains(t, errOut, tc.msg)
	}
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
