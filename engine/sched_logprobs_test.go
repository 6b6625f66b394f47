package engine_test

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
)

// Each token event of a request with logprobs carries log-softmax of the model's logits at that
// step — checked against one forward pass of the whole sequence on a fresh State — and its top
// list; sampled (seeded, temperature 1) and greedy requests share the batch with one that
// asked for none, whose events carry nothing.
func TestSchedulerLogprobs(t *testing.T) {
	e, _ := loadStories(t, 0)
	s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 4})
	require.NoError(t, err)
	defer s.Close(context.Background())

	reqs := []engine.Request{
		{Prompt: "Once upon a time", MaxTokens: 30, Sampling: sample.GreedyParams(), Logprobs: true, TopLogprobs: 3},
		{Prompt: "Lily", MaxTokens: 30, Sampling: sample.Params{Temperature: 1, Seed: 5}, Logprobs: true},
		{Prompt: "Tom and", MaxTokens: 30, Sampling: sample.GreedyParams()},
	}
	streams := make([]*engine.Stream, len(reqs))
	for i, r := range reqs {
		streams[i], err = s.Submit(context.Background(), r)
		require.NoError(t, err)
	}
	// Every stream is read to its end before the reference runs: the backend serves one
	// goroutine at a time.
	allIDs := make([][]int32, len(streams))
	allLPs := make([][]*engine.Logprob, len(streams))
	for i, st := range streams {
		for ev := range st.C {
			if ev.Done {
				require.Nil(t, ev.Logprob)
				continue
			}
			allIDs[i] = append(allIDs[i], ev.Token)
			allLPs[i] = append(allLPs[i], ev.Logprob)
		}
	}
	waitIdle(t, s)
	for i := range streams {
		ids, lps := allIDs[i], allLPs[i]
		if !reqs[i].Logprobs {
			for _, lp := range lps {
				require.Nil(t, lp, "request %d asked for no logprobs", i)
			}
			continue
		}
		want := stepLogprobs(t, e, e.Tokenizer.Encode(reqs[i].Prompt, true), ids)
		for j, lp := range lps {
			require.NotNil(t, lp, "request %d token %d", i, j)
			require.Equal(t, ids[j], lp.Token)
			require.InDelta(t, want[j][ids[j]], lp.Logprob, 1e-4, "request %d token %d", i, j)
			require.Len(t, lp.Top, reqs[i].TopLogprobs)
			for k, alt := range lp.Top {
				require.InDelta(t, want[j][alt.Token], alt.Logprob, 1e-4)
				if k > 0 {
					require.LessOrEqual(t, alt.Logprob, lp.Top[k-1].Logprob)
				}
			}
			if reqs[i].Sampling.Temperature == 0 {
				require.Equal(t, ids[j], lp.Top[0].Token, "greedy picks the most likely token")
			}
		}
	}

	_, err = s.Submit(context.Background(), engine.Request{Prompt: "x", MaxTokens: 2, TopLogprobs: engine.MaxTopLogprobs + 1})
	require.True(t, errors.Is(err, engine.ErrInvalidRequest), "%v", err)
	_, err = s.Submit(context.Background(), engine.Request{Prompt: "x", MaxTokens: 2, TopLogprobs: -1})
	require.True(t, errors.Is(err, engine.ErrInvalidRequest), "%v", err)
}

// stepLogprobs runs prompt+gen through the model in one batch on a fresh State and returns,
// for each generated token, log-softmax of the logits that predicted it (float64).
func stepLogprobs(t *testing.T, e *engine.Engine, prompt, gen []int32) [][]float64 {
	t.Helper()
	toks := append(append([]int32(nil), prompt...), gen[:len(gen)-1]...)
	n := len(toks)
	const bs = 16
	st, err := e.Model.NewState(n, len(gen), bs, (n+bs-1)/bs)
	require.NoError(t, err)
	table := make([]int32, (n+bs-1)/bs)
	for i := range table {
		table[i] = int32(i)
	}
	b := &model.Batch{Tokens: toks, Pos: make([]int32, n), Seq: make([]int32, n), BlockTables: [][]int32{table}}
	var rows []int32
	for i := range toks {
		b.Pos[i] = int32(i)
		if i >= len(prompt)-1 {
			rows = append(rows, int32(i))
		}
	}
	logits, err := e.Model.Forward(st, b, rows)
	require.NoError(t, err)
	vocab := e.Model.Config.Vocab
	out := make([][]float64, len(rows))
	for r := range rows {
		row := logits[r*vocab : (r+1)*vocab]
		lmax := math.Inf(-1)
		for _, l := range row {
			lmax = max(lmax, float64(l))
		}
		var z float64
		for _, l := range row {
			z += math.Exp(float64(l) - lmax)
		}
		out[r] = make([]float64, vocab)
		for k, l := range row {
			out[r][k] = float64(l) - lmax - math.Log(z)
		}
	}
	return out
}

// PromptLogprobs: the first event carries, for every prompt token after the first, its log
// probability given the tokens before it — checked against one whole-sequence forward pass —
// whatever the prefill chunking (prompts longer than the step's spare logit rows take several
// steps), and even when the prompt is already in the prefix cache (it is computed again).
func TestSchedulerPromptLogprobs(t *testing.T) {
	e, _ := loadStories(t, 0)
	long := e.Tokenizer.Encode("Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. "+
		"One day, she saw a big red ball in the park. She ran to the ball and kicked it very high. Her friend Tom laughed and "+
		"ran after the ball too. They played together all day until the sun went down.", true)
	require.Greater(t, len(long), 70, "the prompt must need more than one step's logit rows")
	for _, opts := range []engine.SchedulerOptions{{MaxSeqs: 2}, {MaxSeqs: 3, MaxBatchTokens: 8, BlockSize: 8}} {
		s, err := engine.NewScheduler(e, opts)
		require.NoError(t, err)
		for round := range 2 { // the second round finds the prompt cached
			streams := make([]*engine.Stream, 2)
			for i := range streams { // two at once, sharing the steps' rows
				streams[i], err = s.Submit(context.Background(), engine.Request{PromptIDs: long[:len(long)-5*i], MaxTokens: 3,
					Sampling: sample.GreedyParams(), PromptLogprobs: true, TopLogprobs: 2})
				require.NoError(t, err)
			}
			// Read both streams to the end before the reference runs: the backend serves one
			// goroutine at a time.
			firsts := make([]engine.Event, len(streams))
			for i, st := range streams {
				n := 0
				for ev := range st.C {
					if ev.Done {
						require.Zero(t, ev.Usage.CachedTokens, "a prompt-logprobs request reads no cache")
					}
					if n == 0 {
						firsts[i] = ev
					} else {
						require.Nil(t, ev.PromptLogprobs)
					}
					n++
				}
			}
			waitIdle(t, s)
			for i, ev := range firsts {
				ids := long[:len(long)-5*i]
				require.Len(t, ev.PromptLogprobs, len(ids)-1, "round %d request %d", round, i)
				want := stepLogprobs(t, e, ids[:1], ids[1:])
				for p, lp := range ev.PromptLogprobs {
					require.Equal(t, ids[p+1], lp.Token)
					require.InDelta(t, want[p][ids[p+1]], lp.Logprob, 1e-4, "position %d", p+1)
					require.Len(t, lp.Top, 2)
					require.InDelta(t, want[p][lp.Top[0].Token], lp.Top[0].Logprob, 1e-4)
				}
			}
		}
		require.NoError(t, s.Close(context.Background()))
	}
}
