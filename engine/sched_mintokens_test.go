package engine_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
)

// StopTokenIDs end a generation at the token, which is emitted; MinTokens holds EOS (and the
// stop tokens and strings) back until that many tokens have come.
func TestSchedulerMinTokensAndStopTokenIDs(t *testing.T) {
	e, _ := loadStories(t, 512)
	ref := generateSolo(t, e, engine.Request{Prompt: "One day, a little girl named Sue found a red ball in the garden. She", MaxTokens: 480})
	require.Equal(t, "eos", ref.reason, "the test needs a story that ends")
	n := len(ref.ids)
	require.Greater(t, n, 12)
	sched, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 2})
	require.NoError(t, err)
	defer sched.Close(context.Background())
	run := func(req engine.Request) ([]int32, string, engine.Event) {
		t.Helper()
		st, err := sched.Submit(context.Background(), req)
		require.NoError(t, err)
		return collect(t, st)
	}

	// Stop at the first occurrence of the 8th token's id, that token included.
	stopID := ref.ids[7]
	k := 0
	for ref.ids[k] != stopID {
		k++
	}
	ids, text, final := run(engine.Request{Prompt: "One day, a little girl named Sue found a red ball in the garden. She", MaxTokens: 480, StopTokenIDs: []int32{stopID}})
	assert.Equal(t, ref.ids[:k+1], ids)
	assert.NotEmpty(t, text)
	assert.True(t, strings.HasPrefix(ref.text, text), "%q is not the start of %q", text, ref.text)
	assert.Equal(t, engine.FinishStop, final.FinishReason)

	// Past the story's end: the same tokens up to where EOS came, then more.
	ids, _, final = run(engine.Request{Prompt: "One day, a little girl named Sue found a red ball in the garden. She", MaxTokens: 480, MinTokens: n + 20})
	require.GreaterOrEqual(t, len(ids), n+20)
	assert.Equal(t, ref.ids, ids[:n])
	assert.NotEqual(t, e.Tokenizer.EOS(), ids[n])
	assert.Contains(t, []string{engine.FinishStop, engine.FinishLength}, final.FinishReason)

	// A stop token and a stop string inside the first MinTokens do not stop it.
	ids, _, _ = run(engine.Request{Prompt: "One day, a little girl named Sue found a red ball in the garden. She", MaxTokens: 480, MinTokens: k + 3, StopTokenIDs: []int32{stopID}})
	assert.Greater(t, len(ids), k+1)
	word := strings.Fields(ref.text)[1]
	_, text, _ = run(engine.Request{Prompt: "One day, a little girl named Sue found a red ball in the garden. She", MaxTokens: 480, MinTokens: n, Stop: []string{word}})
	assert.Greater(t, len(text), strings.Index(ref.text, word)+len(word), "the stop string %q was honoured before MinTokens", word)

	for _, bad := range []engine.Request{
		{Prompt: "x", MaxTokens: 5, MinTokens: 6},
		{Prompt: "x", MinTokens: -1},
		{Prompt: "x", StopTokenIDs: []int32{int32(e.Model.Config.Vocab)}},
		{Prompt: "x", StopTokenIDs: []int32{-2}},
	} {
		_, err := sched.Submit(context.Background(), bad)
		assert.ErrorIs(t, err, engine.ErrInvalidRequest, "%+v", bad)
	}
}
