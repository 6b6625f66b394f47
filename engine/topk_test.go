package engine_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
)

// topKBackend is the CPU backend offering model.TopKer, as the CUDA backend does, and counting
// the rows it was asked for.
type topKBackend struct {
	model.Backend
	rows atomic.Int64
}

func (b *topKBackend) TopK(vals []float32, ids []int32, x model.Buffer, n, k int) error {
	b.rows.Add(int64(n))
	cols := x.Cols()
	all := make([]float32, n*cols)
	if err := b.Read(all, x, n); err != nil {
		return err
	}
	for i := range n {
		sample.TopK(vals[i*k:(i+1)*k], ids[i*k:(i+1)*k], all[i*cols:(i+1)*cols], k)
	}
	return nil
}

// With a backend that selects top-k, Generate and the scheduler sample from candidates where
// every row's sampler allows it, and the tokens are those of whole-row sampling
// (HostSampling), for greedy, top-k, top-k with top-p and min-p, and — mixed into the same
// steps — a repetition penalty, which needs whole rows.
func TestDeviceTopKSamplesLikeWholeRows(t *testing.T) {
	path := shared(t, "stories260K/stories260K.gguf")
	be := &topKBackend{Backend: cpu.New(cpu.Options{Threads: 1})}
	e, err := engine.Load(engine.Options{ModelPath: path, Backend: be, CloseBackend: true})
	require.NoError(t, err)
	t.Cleanup(func() { e.Close() })
	require.True(t, e.Model.DeviceTopK())

	params := []sample.Params{
		sample.GreedyParams(),
		{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, Seed: 3},
		{Temperature: 1.5, TopK: 200, TopP: 0.9, Seed: 4},
		{Temperature: 1, TopK: 5, Seed: 5},
		{Temperature: 0.9, TopK: 40, RepeatPenalty: 1.3, RepeatLastN: 16, Seed: 6},
	}
	var reqs []engine.Request
	var want []solo
	e.HostSampling = true
	for i, p := range params {
		r := engine.Request{Prompt: storyPrompts[i+1], MaxTokens: 60, Sampling: p}
		reqs = append(reqs, r)
		want = append(want, generateSolo(t, e, r))
	}
	require.Zero(t, be.rows.Load(), "HostSampling still used the device top-k")

	e.HostSampling = false
	for i, r := range reqs {
		got := generateSolo(t, e, r)
		require.Equal(t, want[i].ids, got.ids, "Generate, request %d (%+v)", i, r.Sampling)
	}
	solo := be.rows.Load()
	require.Positive(t, solo, "Generate never used the device top-k")

	s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 8})
	require.NoError(t, err)
	defer s.Close(context.Background())
	var streams []*engine.Stream
	for _, r := range reqs[:4] { // no penalty: these steps can all use candidates
		st, err := s.Submit(context.Background(), r)
		require.NoError(t, err)
		streams = append(streams, st)
	}
	for i, st := range streams {
		ids, _, final := collect(t, st)
		require.NoError(t, final.Err)
		require.Equal(t, want[i].ids, ids, "scheduler, request %d", i)
	}
	require.Greater(t, be.rows.Load(), solo, "the scheduler never used the device top-k")
	// All five at once: steps holding the penalised sequence read whole rows.
	streams = streams[:0]
	for _, r := range reqs {
		st, err := s.Submit(context.Background(), r)
		require.NoError(t, err)
		streams = append(streams, st)
	}
	for i, st := range streams {
		ids, _, final := collect(t, st)
		require.NoError(t, final.Err)
		require.Equal(t, want[i].ids, ids, "scheduler with a penalised sequence, request %d", i)
	}
	// With speculative decoding: each proposal's row sampled from its candidates.
	ds, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 8, DraftTokens: 4})
	require.NoError(t, err)
	defer ds.Close(context.Background())
	streams = streams[:0]
	for _, r := range reqs {
		st, err := ds.Submit(context.Background(), r)
		require.NoError(t, err)
		streams = append(streams, st)
	}
	for i, st := range streams {
		ids, _, final := collect(t, st)
		require.NoError(t, final.Err)
		require.Equal(t, want[i].ids, ids, "scheduler with drafts, request %d", i)
	}
	require.Positive(t, ds.Stats().DraftAccepted)
}
