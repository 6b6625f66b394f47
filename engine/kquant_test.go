package engine_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/sample"
)

// A file llama.cpp quantised runs tensor-parallel where its split matrices allow it: the Q5_0
// file's Wo and W2 (Q5_0, blocks of 32) split at TP 2 although its LM head is Q6_K (blocks of
// 256, split by rows), and greedy text equals TP 1's. The Q4_K_M file, whose FFN (768 = 3
// blocks of 256) cannot split in two, is refused with the valid degrees.
func TestKQuantFilesTP(t *testing.T) {
	dir := filepath.Join("..", "loader", "testdata", "kquant")
	gen := func(tp int, file string) ([]int32, error) {
		e, err := engine.Load(engine.Options{ModelPath: filepath.Join(dir, file), TP: tp, Threads: 2})
		if err != nil {
			return nil, err
		}
		defer e.Close()
		var ids []int32
		_, err = e.Generate(context.Background(), engine.Request{Prompt: "Once upon a time", MaxTokens: 24,
			Sampling: sample.Params{Temperature: 0}}, func(id int32, _ string) error {
			if id >= 0 {
				ids = append(ids, id)
			}
			return nil
		})
		return ids, err
	}
	one, err := gen(1, "kq256-Q5_0.gguf")
	require.NoError(t, err)
	two, err := gen(2, "kq256-Q5_0.gguf")
	require.NoError(t, err)
	require.Len(t, one, 24)
	require.Equal(t, one, two)

	_, err = gen(2, "kq256-Q4_K_M.gguf")
	require.ErrorContains(t, err, "valid degrees up to 8: 1")
}
