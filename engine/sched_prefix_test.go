package engine_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
)

// A conversation's next turn resends the whole conversation: with the prefix cache it reads
// the blocks the previous turn wrote (its prompt and its answer) and prefills only the rest,
// and its answer is token for token what a solo run without any cache gives. With the cache
// off it reads nothing and answers the same.
func TestSchedulerPrefixCacheMultiTurn(t *testing.T) {
	e, _ := loadStories(t, 0)
	const bs = 8
	turn1 := e.Tokenizer.Encode("Once upon a time, there was a little girl named Lily. She loved to play", true)
	for _, off := range []bool{false, true} {
		s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 2, BlockSize: bs, NoPrefixCache: off})
		require.NoError(t, err)
		run := func(ids []int32) ([]int32, engine.Usage) {
			st, err := s.Submit(context.Background(), engine.Request{PromptIDs: ids, MaxTokens: 30, Sampling: sample.GreedyParams()})
			require.NoError(t, err)
			got, _, final := collect(t, st)
			require.NoError(t, final.Err)
			want := generateSolo(t, e, engine.Request{PromptIDs: ids, MaxTokens: 30, Sampling: sample.GreedyParams()})
			require.Equal(t, want.ids, got)
			return got, final.Usage
		}
		gen1, u1 := run(turn1)
		require.Zero(t, u1.CachedTokens)
		// Turn 2: the conversation so far, then new text.
		turn2 := append(append(append([]int32(nil), turn1...), gen1...), e.Tokenizer.Encode("One day, Lily", false)...)
		_, u2 := run(turn2)
		// Turn 1 wrote K and V for its prompt and every answer token but the last (sampled,
		// never fed back): its full blocks are what turn 2 reads.
		written := len(turn1) + len(gen1) - 1
		want := written / bs * bs
		if off {
			want = 0
		}
		require.Equal(t, want, u2.CachedTokens, "cache off: %v", off)
		stats := s.Stats()
		require.EqualValues(t, want, stats.CachedTokens)
		require.EqualValues(t, len(turn1)+len(turn2)-want, stats.PromptTokens, "prompt tokens computed")
		waitIdle(t, s)
		if !off {
			require.Positive(t, s.Stats().KVBlocksIdle, "the conversation stays cached")
		} else {
			require.Zero(t, s.Stats().KVBlocksIdle)
		}
		require.NoError(t, s.Close(context.Background()))
	}
}

// Under memory pressure idle cached blocks give way: a KV cache of barely two contexts serves
// many different prompts, each as its solo run, evicting what earlier ones left.
func TestSchedulerPrefixCacheEviction(t *testing.T) {
	e, _ := loadStories(t, 128)
	s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 2, BlockSize: 8, KVBlocks: 2*128/8 + 1})
	require.NoError(t, err)
	defer s.Close(context.Background())
	written := 0 // blocks the requests fill: more than the pool, so the cache must evict
	for _, p := range storyPrompts {
		written += (len(e.Tokenizer.Encode(p, true)) + 60) / 8
	}
	require.Greater(t, written, s.Options().KVBlocks)
	for i, p := range storyPrompts {
		req := engine.Request{Prompt: p, MaxTokens: 60, Sampling: sample.GreedyParams()}
		want := generateSolo(t, e, req)
		st, err := s.Submit(context.Background(), req)
		require.NoError(t, err)
		got, _, final := collect(t, st)
		require.NoError(t, final.Err)
		require.Equal(t, want.ids, got, "prompt %d", i)
	}
	waitIdle(t, s)
	st := s.Stats()
	require.LessOrEqual(t, st.KVBlocksIdle, st.KVBlocksTotal)
	require.Positive(t, st.KVBlocksIdle)
}

// A KV cache far smaller than the running sequences' full lengths: blocks are taken as they
// grow, and when a decoding sequence finds none the newest other one is preempted, prefilled
// again later from its prompt and its tokens so far, and goes on where it stopped — each
// answer still its solo run's, token for token. A prompt-logprobs request in the same batch is
// never preempted while its prompt's rows are being gathered.
func TestSchedulerPreemption(t *testing.T) {
	e, _ := loadStories(t, 256)
	for _, cache := range []bool{true, false} {
		s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 4, BlockSize: 4, KVBlocks: 60, NoPrefixCache: !cache})
		require.NoError(t, err)
		reqs := make([]engine.Request, len(storyPrompts))
		for i, p := range storyPrompts {
			reqs[i] = engine.Request{Prompt: p, MaxTokens: 100, Sampling: sample.GreedyParams()}
			if i == 2 {
				reqs[i].Sampling = sample.Params{Temperature: 1, Seed: 3} // sampling resumes too
			}
		}
		reqs[1].PromptLogprobs = true
		want := make([]solo, len(reqs))
		for i, r := range reqs {
			want[i] = generateSolo(t, e, r)
		}
		streams := make([]*engine.Stream, len(reqs))
		for i, r := range reqs {
			streams[i], err = s.Submit(context.Background(), r)
			require.NoError(t, err)
		}
		for i, st := range streams {
			ids, text, final := collect(t, st)
			require.NoError(t, final.Err)
			require.Equal(t, want[i].ids, ids, "request %d (cache %v)", i, cache)
			require.Equal(t, want[i].text, text)
		}
		waitIdle(t, s)
		stats := s.Stats()
		t.Logf("cache %v: %d preemptions, %d prompt tokens prefilled, %d read from the cache", cache, stats.Preemptions, stats.PromptTokens, stats.CachedTokens)
		require.Positive(t, stats.Preemptions, "the test needs a cache too small for every sequence at once")
		require.NoError(t, s.Close(context.Background()))
	}
}

// memBackend is a CPU backend that reports device-like memory (model.MemoryReporter).
type memBackend struct {
	model.Backend
	free, total int64
}

func (m *memBackend) FreeMemory() (int64, int64, error) { return m.free, m.total, nil }
func (m *memBackend) KVElementBytes() int               { return 2 }

// On a backend with memory of its own the default KV cache is MaxSeqs full contexts capped by
// what its free memory holds less a reserve (a tenth of the device, at least 1 GiB) — not by
// the CPU's 4 GiB — and never below one context.
func TestSchedulerKVFromDeviceMemory(t *testing.T) {
	path := shared(t, "stories260K/stories260K.gguf")
	c := func() model.Config {
		e, err := engine.Load(engine.Options{ModelPath: path, Context: 512})
		require.NoError(t, err)
		defer e.Close()
		return e.Model.Config
	}()
	perBlock := int64(2*c.Layers*c.KVDim()*2) * 16 // fp16, 16-token blocks
	for _, tc := range []struct {
		name        string
		free, total int64
		maxSeqs     int
		want        int
	}{
		{"room for all", 80 << 30, 80 << 30, 8, 8 * 32},
		{"free memory less 1 GiB", 1<<30 + 50*perBlock, 4 << 30, 64, 50},
		{"free memory less a tenth of the device", 8<<30 + 100*perBlock, 80 << 30, 64, 100},
		{"at least one context", 1 << 30, 4 << 30, 8, 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := &memBackend{Backend: cpu.New(cpu.Options{Threads: 1}), free: tc.free, total: tc.total}
			e, err := engine.Load(engine.Options{ModelPath: path, Context: 512, Backend: be, CloseBackend: true})
			require.NoError(t, err)
			defer e.Close()
			s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: tc.maxSeqs})
			require.NoError(t, err)
			defer s.Close(context.Background())
			require.Equal(t, tc.want, s.Options().KVBlocks)
		})
	}
}

// IgnoreEOS: generation goes on through EOS (or BOS) to MaxTokens; up to it the tokens are the
// ones a normal request gets, and the EOS itself is emitted and fed back.
func TestSchedulerIgnoreEOS(t *testing.T) {
	e, _ := loadStories(t, 0)
	s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 2})
	require.NoError(t, err)
	defer s.Close(context.Background())
	run := func(ignore bool) ([]int32, engine.Event) {
		st, err := s.Submit(context.Background(), engine.Request{Prompt: "Once upon a time", MaxTokens: 400,
			Sampling: sample.GreedyParams(), IgnoreEOS: ignore})
		require.NoError(t, err)
		ids, _, final := collect(t, st)
		return ids, final
	}
	plain, final := run(false)
	require.Equal(t, engine.FinishStop, final.FinishReason, "the test needs a story that ends before 400 tokens")
	all, final := run(true)
	require.Equal(t, engine.FinishLength, final.FinishReason)
	require.Len(t, all, 400)
	require.Equal(t, plain, all[:len(plain)])
	// stories260K, a llama2.c model, ends a story with BOS (which also ends generation).
	require.Contains(t, []int32{e.Tokenizer.EOS(), e.Tokenizer.BOS()}, all[len(plain)])
}
