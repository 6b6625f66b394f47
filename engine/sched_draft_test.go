package engine_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/grammar"
	"github.com/llamacu/llamacu/sample"
)

// Speculative decoding by prompt lookup gives the tokens decoding one at a time gives — greedy,
// sampled, with stop strings, max tokens, a grammar and logprobs — in fewer steps.
func TestSchedulerDraftsChangeNothingButSteps(t *testing.T) {
	e, _ := loadStories(t, 512)
	requests := func() []engine.Request {
		var reqs []engine.Request
		for i, p := range storyPrompts {
			reqs = append(reqs, engine.Request{Prompt: p, MaxTokens: 200})
			reqs = append(reqs, engine.Request{Prompt: p, MaxTokens: 150, Sampling: sample.Params{Temperature: 0.8, TopP: 0.95, Seed: uint64(i)}})
		}
		reqs = append(reqs,
			engine.Request{Prompt: "Once upon a time", MaxTokens: 300, Stop: []string{"park"}},
			engine.Request{Prompt: "Tim had a toy car.", MaxTokens: 37, Logprobs: true, TopLogprobs: 3},
			engine.Request{Prompt: "Lily", MaxTokens: 80, Grammar: grammar.MustParse(`root ::= ([A-Za-z ,.]+ "\n")+`)},
			engine.Request{Prompt: "Mom said", MaxTokens: 120, MinTokens: 100, Sampling: sample.Params{Temperature: 1, Seed: 9}},
		)
		return reqs
	}
	type out struct {
		ids   []int32
		text  string
		final engine.Event
		lps   []*engine.Logprob
	}
	run := func(opts engine.SchedulerOptions) ([]out, engine.SchedulerStats) {
		sched, err := engine.NewScheduler(e, opts)
		require.NoError(t, err)
		defer sched.Close(context.Background())
		var streams []*engine.Stream
		for _, req := range requests() {
			st, err := sched.Submit(context.Background(), req)
			require.NoError(t, err)
			streams = append(streams, st)
		}
		var outs []out
		for _, st := range streams {
			var o out
			for ev := range st.C {
				if ev.Done {
					o.final = ev
					o.text += ev.Text
					continue
				}
				o.ids = append(o.ids, ev.Token)
				o.text += ev.Text
				if ev.Logprob != nil {
					o.lps = append(o.lps, ev.Logprob)
				}
			}
			outs = append(outs, o)
		}
		waitIdle(t, sched)
		return outs, sched.Stats()
	}
	plain, plainStats := run(engine.SchedulerOptions{MaxSeqs: 4, NoPrefixCache: true})
	drafted, stats := run(engine.SchedulerOptions{MaxSeqs: 4, NoPrefixCache: true, DraftTokens: 4})
	// With the prefix cache and a KV cache of one context for 4 sequences: preemptions, and
	// blocks cached from steps that wrote proposals.
	tight, tightStats := run(engine.SchedulerOptions{MaxSeqs: 4, KVBlocks: 512 / 16, DraftTokens: 4})
	require.Greater(t, tightStats.Preemptions, int64(0))
	for i := range plain {
		require.Equal(t, plain[i].ids, tight[i].ids, "request %d with preemptions", i)
		require.Equal(t, plain[i].text, tight[i].text, "request %d with preemptions", i)
	}
	for i := range plain {
		require.Equal(t, plain[i].ids, drafted[i].ids, "request %d", i)
		require.Equal(t, plain[i].text, drafted[i].text, "request %d", i)
		require.Equal(t, plain[i].final.FinishReason, drafted[i].final.FinishReason, "request %d", i)
		require.Equal(t, plain[i].final.Usage, drafted[i].final.Usage, "request %d", i)
		require.Len(t, drafted[i].lps, len(plain[i].lps))
		for j := range plain[i].lps {
			assert.InDelta(t, plain[i].lps[j].Logprob, drafted[i].lps[j].Logprob, 1e-4)
		}
	}
	assert.Zero(t, plainStats.DraftTokens)
	t.Logf("steps %d → %d; proposed %d, accepted %d", plainStats.Steps, stats.Steps, stats.DraftTokens, stats.DraftAccepted)
	assert.Greater(t, stats.DraftAccepted, int64(0))
	assert.LessOrEqual(t, stats.DraftAccepted, stats.DraftTokens)
	assert.Less(t, stats.Steps, plainStats.Steps)
	assert.Equal(t, plainStats.Generated, stats.Generated)
	assert.Zero(t, stats.KVBlocksInUse)

	_, err := engine.NewScheduler(e, engine.SchedulerOptions{DraftTokens: engine.MaxDraftTokens + 1})
	assert.Error(t, err)
}
