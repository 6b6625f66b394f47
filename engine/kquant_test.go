package engine_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/sample"
)

// A file llama.cpp quantised runs tensor-parallel, and greedy text equals TP 1's: the Q5_0
// file's Wo and W2 (Q5_0, blocks of 32) split at TP 2 in their blocks although its LM head is
// Q6_K (blocks of 256, split by rows); the Q4_K_M file's FFN (768 = 3 blocks of 256) and Wo
// (256 columns) cannot split in two on whole blocks, so each rank holds its W2 and Wo widened.
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
	for _, file := range []string{"kq256-Q5_0.gguf", "kq256-Q4_K_M.gguf"} {
		t.Run(file, func(t *testing.T) {
			one, err := gen(1, file)
			require.NoError(t, err)
			two, err := gen(2, file)
			require.NoError(t, err)
			require.Len(t, one, 24)
			require.Equal(t, one, two)
		})
	}
}
