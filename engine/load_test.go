package engine_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/plan"
	"github.com/llamacu/llamacu/sample"
)

// Load reports upload progress up to the total, which is what the CLI's progress bar draws.
func TestLoadReportsProgress(t *testing.T) {
	var calls int
	var last, total int64
	e, err := engine.Load(engine.Options{ModelPath: shared(t, "stories260K/stories260K.gguf"), Progress: func(d, tot int64) {
		require.GreaterOrEqual(t, d, last)
		calls, last, total = calls+1, d, tot
	}})
	require.NoError(t, err)
	defer e.Close()
	require.Equal(t, len(e.Model.Config.WeightShapes()), calls)
	require.Equal(t, total, last)
	require.Greater(t, total, int64(1_000_000)) // ~1 MB of F32 weights
}

// The built-in synthetic model loads with no file and generates deterministically.
func TestSyntheticDefault(t *testing.T) {
	e, err := engine.Load(engine.Options{})
	require.NoError(t, err)
	defer e.Close()
	require.Contains(t, e.Source, "synthetic")
	require.Equal(t, model.Tiny.Vocab, e.Tokenizer.VocabSize())
	ids := e.Tokenizer.Encode("Once upon a time", true)
	require.Equal(t, int32(1), ids[0])
	require.Equal(t, "Once upon a time", e.Tokenizer.Decode(ids))
	var a, b strings.Builder
	for _, sb := range []*strings.Builder{&a, &b} {
		_, err := e.Generate(context.Background(), engine.Request{Prompt: "Once upon a time", MaxTokens: 20},
			func(_ int32, s string) error { sb.WriteString(s); return nil })
		require.NoError(t, err)
	}
	require.Equal(t, a.String(), b.String())
}

func TestGenerateLimitsAndCancel(t *testing.T) {
	e, err := engine.Load(engine.Options{ModelPath: shared(t, "stories260K/stories260K.bin"),
		TokenizerPath: filepath.Join("..", "..", "shared", "testdata", "stories260K", "tok512.bin"), Context: 32})
	require.NoError(t, err)
	defer e.Close()

	// The context caps generation: 32 positions, 5 prompt tokens → at most 27 new ones.
	st, err := e.Generate(context.Background(), engine.Request{Prompt: "Once upon a time"}, func(int32, string) error { return nil })
	require.NoError(t, err)
	require.Equal(t, 27, st.Generated)
	require.Equal(t, "context", st.StopReason)

	// A prompt longer than the context is an error, not a panic.
	_, err = e.Generate(context.Background(), engine.Request{Prompt: strings.Repeat("Lily and Ben played. ", 20)}, func(int32, string) error { return nil })
	require.ErrorIs(t, err, engine.ErrPromptTooLong)

	// Cancellation stops generation at the next token.
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	_, err = e.Generate(ctx, engine.Request{Prompt: "Once", Sampling: sample.Params{Temperature: 1, Seed: 3}}, func(int32, string) error {
		if n++; n == 3 {
			cancel()
		}
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 3, n)

	// An error from the consumer stops it too, and is returned.
	stop := errors.New("client went away")
	_, err = e.Generate(context.Background(), engine.Request{Prompt: "Once"}, func(int32, string) error { return stop })
	require.ErrorIs(t, err, stop)
}

// A model that cannot fit is refused with the planner's explanation before anything is
// allocated, instead of crashing out of memory.
func TestLoadRefusesWhatDoesNotFit(t *testing.T) {
	cfg := model.Llama2_70B
	_, err := engine.Load(engine.Options{SyntheticConfig: &cfg})
	require.ErrorIs(t, err, plan.ErrDoesNotFit)
	require.Contains(t, err.Error(), "GiB")
}
