package engine_test

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
)

// gateBackend wraps a backend so that a test can hold the scheduler inside a forward step
// (Read ends every step): Lock pauses the next step, Unlock lets it go.
type gateBackend struct {
	model.Backend
	sync.Mutex
	reads atomic.Int64
}

func (g *gateBackend) Read(dst []float32, x model.Buffer, n int) error {
	g.Lock()
	g.reads.Add(1)
	g.Unlock()
	return g.Backend.Read(dst, x, n)
}

// loadStories loads stories260K.gguf on a one-thread CPU backend behind a gate.
func loadStories(tb testing.TB, context int) (*engine.Engine, *gateBackend) {
	tb.Helper()
	path := shared(tb, "stories260K/stories260K.gguf")
	g := &gateBackend{Backend: cpu.New(cpu.Options{Threads: 1})}
	e, err := engine.Load(engine.Options{ModelPath: path, Backend: g, CloseBackend: true, Context: context})
	require.NoError(tb, err)
	tb.Cleanup(func() { e.Close() })
	return e, g
}

// solo is one request's reference output from Engine.Generate.
type solo struct {
	ids    []int32
	text   string
	reason string // Generate's stop reason
}

func generateSolo(tb testing.TB, e *engine.Engine, req engine.Request) solo {
	tb.Helper()
	var out solo
	var sb strings.Builder
	st, err := e.Generate(context.Background(), req, func(id int32, text string) error {
		if id >= 0 {
			out.ids = append(out.ids, id)
		}
		sb.WriteString(text)
		return nil
	})
	require.NoError(tb, err)
	out.text, out.reason = sb.String(), st.StopReason
	return out
}

// collect reads a stream to its end, checking the event invariants on the way.
func collect(tb testing.TB, st *engine.Stream) ([]int32, string, engine.Event) {
	tb.Helper()
	var ids []int32
	var sb strings.Builder
	var final engine.Event
	n := 0
	for ev := range st.C {
		require.False(tb, final.Done, "event after the final one")
		require.True(tb, utf8.ValidString(ev.Text), "event text is not valid UTF-8: %q", ev.Text)
		if ev.Done {
			final = ev
			require.Equal(tb, int32(-1), ev.Token)
		} else {
			ids = append(ids, ev.Token)
		}
		sb.WriteString(ev.Text)
		n++
	}
	require.True(tb, final.Done, "stream closed without a final event")
	return ids, sb.String(), final
}

var stopReason = map[string]string{"eos": engine.FinishStop, "max_tokens": engine.FinishLength, "context": engine.FinishLength}

// Prompts of different lengths; some are longer than a small MaxBatchTokens, so their prefill is
// chunked and shares steps with the decodes of the others.
var storyPrompts = []string{
	"",
	"Once upon a time",
	"Lily and Tom went to the park. They saw a big dog. The dog was brown and happy. Lily wanted to pet the dog, but Tom was scared.",
	"The sun",
	"One day, a little girl named Sue found a red ball in the garden. She",
	"Tim had a toy car.",
	"There was a cat who liked to sleep in the sun. Every day the cat would find a warm spot and",
	"Mom said",
}

// Greedy output through the scheduler equals Engine.Generate on a sequence of its own, token for
// token, however many sequences share the steps, however prefill is chunked, and when requests
// must wait for KV blocks.
func TestSchedulerMatchesGenerate(t *testing.T) {
	e, _ := loadStories(t, 0)
	reqs := make([]engine.Request, len(storyPrompts))
	want := make([]solo, len(storyPrompts))
	for i, p := range storyPrompts {
		reqs[i] = engine.Request{Prompt: p, MaxTokens: 40 + 13*i, Sampling: sample.GreedyParams()}
		want[i] = generateSolo(t, e, reqs[i])
	}
	// Seeded sampling: each sequence has its own Sampler, so it equals its solo run too.
	for i := 0; i < 3; i++ {
		r := engine.Request{Prompt: storyPrompts[i+1], MaxTokens: 50, Sampling: sample.Params{Temperature: 1, TopP: 0.9, Seed: uint64(7 + i)}}
		reqs = append(reqs, r)
		want = append(want, generateSolo(t, e, r))
	}

	for _, tc := range []struct {
		name string
		opts engine.SchedulerOptions
	}{
		{"all-at-once", engine.SchedulerOptions{MaxSeqs: 16}},
		{"chunked-prefill", engine.SchedulerOptions{MaxSeqs: 8, MaxBatchTokens: 11}},
		{"queued", engine.SchedulerOptions{MaxSeqs: 3, MaxBatchTokens: 8, BlockSize: 8}},
		{"kv-bound", engine.SchedulerOptions{MaxSeqs: 8, MaxBatchTokens: 32, BlockSize: 4, KVBlocks: 40}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := engine.NewScheduler(e, tc.opts)
			require.NoError(t, err)
			defer s.Close(context.Background())
			// Submit from many goroutines at once; the streams buffer every event, so they are
			// read afterwards on the test goroutine.
			streams := make([]*engine.Stream, len(reqs))
			var wg sync.WaitGroup
			for i := range reqs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st, err := s.Submit(context.Background(), reqs[i])
					if assertNoError(t, err) {
						streams[i] = st
					}
				}()
			}
			wg.Wait()
			for i, st := range streams {
				if st == nil {
					continue
				}
				ids, text, final := collect(t, st)
				w := want[i]
				require.Equal(t, w.ids, ids, "request %d (%q): token ids differ from the solo run", i, reqs[i].Prompt)
				require.Equal(t, w.text, text, "request %d", i)
				require.NoError(t, final.Err)
				require.Equal(t, stopReason[w.reason], final.FinishReason, "request %d", i)
				cached := final.Usage.CachedTokens // prompts repeat: later ones read the cache
				require.Equal(t, engine.Usage{PromptTokens: st.PromptTokens(), CompletionTokens: len(w.ids), CachedTokens: cached}, final.Usage)
				require.Zero(t, cached%s.Options().BlockSize)
				require.Less(t, cached, st.PromptTokens())
			}
			waitIdle(t, s)
			stats := s.Stats()
			require.EqualValues(t, len(reqs), stats.Completed)
			require.Positive(t, stats.Steps)
		})
	}
}

func assertNoError(tb testing.TB, err error) bool {
	tb.Helper()
	if err != nil {
		tb.Errorf("unexpected error: %v", err)
		return false
	}
	return true
}

// waitIdle waits (briefly) for the scheduler to hold no sequence and no KV block.
func waitIdle(tb testing.TB, s *engine.Scheduler) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := s.Stats()
		if st.Running == 0 && st.Queued == 0 && st.KVBlocksInUse == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("scheduler not idle: %+v", st)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Cancelling a running or a queued request frees its slot and KV blocks at the next step.
func TestSchedulerCancelFreesBlocks(t *testing.T) {
	e, g := loadStories(t, 0)
	s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 1, MaxQueue: 4})
	require.NoError(t, err)
	defer s.Close(context.Background())

	// Hold the scheduler inside the first step of a long request while a second one queues.
	g.Lock()
	ctx, cancel := context.WithCancel(context.Background())
	running, err := s.Submit(ctx, engine.Request{Prompt: "Once upon a time", MaxTokens: 1000, Sampling: sample.GreedyParams()})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return s.Stats().Running == 1 }, 5*time.Second, time.Millisecond)
	qctx, qcancel := context.WithCancel(context.Background())
	queued, err := s.Submit(qctx, engine.Request{Prompt: "Tim", MaxTokens: 10})
	require.NoError(t, err)
	st := s.Stats()
	require.Equal(t, 1, st.Running)
	require.Equal(t, 1, st.Queued)
	require.Equal(t, (running.PromptTokens()+15)/16, st.KVBlocksInUse, "blocks are taken as the sequence grows, not reserved")
	cancel()
	qcancel()
	g.Unlock()

	_, _, final := collect(t, running)
	require.ErrorIs(t, final.Err, context.Canceled)
	require.Equal(t, engine.FinishCancelled, final.FinishReason)
	require.Less(t, final.Usage.CompletionTokens, 1000)
	_, text, final := collect(t, queued)
	require.ErrorIs(t, final.Err, context.Canceled)
	require.Empty(t, text)
	require.Equal(t, engine.Usage{PromptTokens: queued.PromptTokens()}, final.Usage)
	waitIdle(t, s)

	// Stream.Cancel does the same for a consumer that stops reading.
	g.Lock()
	st2, err := s.Submit(context.Background(), engine.Request{Prompt: "Mom said", MaxTokens: 1000})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return s.Stats().Running == 1 }, 5*time.Second, time.Millisecond)
	st2.Cancel()
	g.Unlock()
	_, _, final = collect(t, st2)
	require.ErrorIs(t, final.Err, context.Canceled)
	waitIdle(t, s)
}

// An idle scheduler notices a cancelled queued request without any step running.
func TestSchedulerQueueFull(t *testing.T) {
	e, g := loadStories(t, 0)
	s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 1, MaxQueue: 2})
	require.NoError(t, err)
	defer s.Close(context.Background())

	g.Lock() // no step completes: the first request stays running, the next two wait
	first, err := s.Submit(context.Background(), engine.Request{Prompt: "A", MaxTokens: 5})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return s.Stats().Running == 1 }, 5*time.Second, time.Millisecond)
	var queued []*engine.Stream
	for i := 0; i < 2; i++ {
		st, err := s.Submit(context.Background(), engine.Request{Prompt: "B", MaxTokens: 5})
		require.NoError(t, err)
		queued = append(queued, st)
	}
	_, err = s.Submit(context.Background(), engine.Request{Prompt: "C", MaxTokens: 5})
	require.ErrorIs(t, err, engine.ErrQueueFull)
	require.EqualValues(t, 3, s.Stats().Submitted)
	g.Unlock()
	for _, st := range append(queued, first) {
		_, _, final := collect(t, st)
		require.NoError(t, final.Err)
	}
	waitIdle(t, s)
	// With room again, Submit accepts.
	st, err := s.Submit(context.Background(), engine.Request{Prompt: "C", MaxTokens: 5})
	require.NoError(t, err)
	collect(t, st)

	// MaxQueue < 0: no waiting line at all.
	s2, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 1, MaxQueue: -1})
	require.NoError(t, err)
	defer s2.Close(context.Background())
	g.Lock()
	a, err := s2.Submit(context.Background(), engine.Request{Prompt: "A", MaxTokens: 3})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return s2.Stats().Running == 1 }, 5*time.Second, time.Millisecond)
	_, err = s2.Submit(context.Background(), engine.Request{Prompt: "B", MaxTokens: 3})
	require.ErrorIs(t, err, engine.ErrQueueFull)
	g.Unlock()
	collect(t, a)
}

func TestSchedulerRejects(t *testing.T) {
	e, _ := loadStories(t, 64) // a 64-position context
	s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 2, BlockSize: 16, KVBlocks: 3})
	require.NoError(t, err)
	defer s.Close(context.Background())
	long := strings.Repeat("the dog ran. ", 30)
	for _, tc := range []struct {
		name string
		req  engine.Request
		want error
		msg  string
	}{
		{"prompt-longer-than-context", engine.Request{Prompt: long}, engine.ErrPromptTooLong, "the context holds 64"},
		{"prompt-plus-max-tokens", engine.Request{Prompt: "Once upon a time", MaxTokens: 61}, engine.ErrPromptTooLong, "5 tokens and max tokens is 61: 66 in all, the context holds 64"},
		{"more-than-the-kv-cache", engine.Request{Prompt: "Once upon a time", MaxTokens: 50}, engine.ErrPromptTooLong, "the cache holds 3"},
		{"bad-token-id", engine.Request{PromptIDs: []int32{1, 512}}, engine.ErrInvalidRequest, "token id 512"},
		{"empty-ids", engine.Request{PromptIDs: []int32{}}, engine.ErrInvalidRequest, "empty prompt"},
		{"negative-max-tokens", engine.Request{Prompt: "x", MaxTokens: -1}, engine.ErrInvalidRequest, "negative"},
		{"empty-stop", engine.Request{Prompt: "x", MaxTokens: 4, Stop: []string{"a", ""}}, engine.ErrInvalidRequest, "empty stop"},
		{"max-tokens-max-int", engine.Request{Prompt: "Once upon a time", MaxTokens: math.MaxInt}, engine.ErrPromptTooLong, "max tokens is 9223372036854775807"},
		{"max-tokens-overflows", engine.Request{Prompt: "Once upon a time", MaxTokens: math.MaxInt - 3}, engine.ErrPromptTooLong, "the context holds 64"},
		{"stop-not-utf8", engine.Request{Prompt: "x", MaxTokens: 4, Stop: []string{"\xa9x"}}, engine.ErrInvalidRequest, "not valid UTF-8"},
		{"bad-sampling", engine.Request{Prompt: "x", MaxTokens: 4, Sampling: sample.Params{TopP: 2}}, sample.ErrParams, "top_p"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := s.Submit(context.Background(), tc.req)
			require.Nil(t, st)
			require.ErrorIs(t, err, tc.want)
			require.ErrorContains(t, err, tc.msg)
		})
	}
	require.EqualValues(t, 0, s.Stats().Submitted)
	// Exactly filling the context is fine: 5 + 43 = 48 positions, 3 blocks.
	st, err := s.Submit(context.Background(), engine.Request{Prompt: "Once upon a time", MaxTokens: 43})
	require.NoError(t, err)
	_, _, final := collect(t, st)
	require.NoError(t, final.Err)
}

// Stop strings end generation where the decoded text contains them, across token boundaries;
// the stop string is not emitted; the earliest of several wins.
func TestSchedulerStopStrings(t *testing.T) {
	e, _ := loadStories(t, 0)
	base := engine.Request{Prompt: "Once upon a time", MaxTokens: 80, Sampling: sample.GreedyParams()}
	ref := generateSolo(t, e, base)
	// Byte offsets where each token's text starts in ref.text, to build stop strings that
	// straddle a token boundary.
	tok := e.Tokenizer
	var starts []int
	promptIDs := tok.Encode(base.Prompt, true)
	dec := tok.NewStreamDecoder(promptIDs[len(promptIDs)-1])
	off := 0
	for _, id := range ref.ids {
		starts = append(starts, off)
		off += len(dec.Add(id))
	}
	require.Equal(t, len(ref.text), off)
	mid := starts[20] - 2 // two bytes before token 20 starts: the stop spans tokens 19 and 20
	span := ref.text[mid : starts[21]+1]
	require.Equal(t, mid, strings.Index(ref.text, span), "pick a first occurrence")

	s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 4})
	require.NoError(t, err)
	defer s.Close(context.Background())
	for _, tc := range []struct {
		name string
		stop []string
	}{
		{"straddles-tokens", []string{span}},
		{"earliest-wins", []string{ref.text[starts[30]:starts[32]], span}},
		{"never-matches", []string{"zebra!", "Once upon a time, there"}},
		{"prefix-then-no-match", []string{ref.text[mid:starts[21]] + "\x00"}},
		{"at-the-start", []string{ref.text[:3]}},
		{"newline-or-period", []string{"\n", "."}},
	} {
		// The reference: the solo text cut at the earliest stop string.
		want, reason := ref.text, stopReason[ref.reason]
		for _, stop := range tc.stop {
			if i := strings.Index(ref.text, stop); i >= 0 && i < len(want) {
				want, reason = ref.text[:i], engine.FinishStop
			}
		}
		t.Run(tc.name, func(t *testing.T) {
			req := base
			req.Stop = tc.stop
			st, err := s.Submit(context.Background(), req)
			require.NoError(t, err)
			ids, text, final := collect(t, st)
			require.NoError(t, final.Err)
			require.Equal(t, want, text)
			require.Equal(t, reason, final.FinishReason)
			// The tokens streamed are a prefix of the solo run; usage counts all of them.
			require.Equal(t, ref.ids[:len(ids)], ids)
			require.Equal(t, len(ids), final.Usage.CompletionTokens)
		})
	}
}

type countObserver struct{ ttft, itl atomic.Int64 }

func (o *countObserver) TimeToFirstToken(d time.Duration)  { o.ttft.Add(1) }
func (o *countObserver) InterTokenLatency(d time.Duration) { o.itl.Add(1) }

func TestSchedulerObserverAndStats(t *testing.T) {
	e, _ := loadStories(t, 0)
	var obs countObserver
	s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 4, Observer: &obs})
	require.NoError(t, err)
	defer s.Close(context.Background())
	var streams []*engine.Stream
	for i := 0; i < 5; i++ {
		st, err := s.Submit(context.Background(), engine.Request{Prompt: storyPrompts[i], MaxTokens: 10 + i})
		require.NoError(t, err)
		streams = append(streams, st)
	}
	total, prompt := 0, 0
	for _, st := range streams {
		ids, _, final := collect(t, st)
		total += len(ids)
		prompt += st.PromptTokens()
		require.Equal(t, len(ids), final.Usage.CompletionTokens)
	}
	waitIdle(t, s)
	stats := s.Stats()
	require.EqualValues(t, total, stats.Generated)
	require.EqualValues(t, prompt, stats.PromptTokens)
	require.EqualValues(t, 5, stats.Completed)
	require.Equal(t, 4, stats.MaxSeqs)
	require.EqualValues(t, 5, obs.ttft.Load())
	require.EqualValues(t, total-5, obs.itl.Load())
}

// Close lets in-flight work finish while its context lasts, refuses new work, cancels what is
// left when the context ends, and stops its goroutine; nothing leaks.
func TestSchedulerCloseAndGoroutines(t *testing.T) {
	e, g := loadStories(t, 0)
	before := runtime.NumGoroutine()

	t.Run("drain", func(t *testing.T) {
		s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 2})
		require.NoError(t, err)
		var streams []*engine.Stream
		for i := 0; i < 4; i++ {
			st, err := s.Submit(context.Background(), engine.Request{Prompt: storyPrompts[i], MaxTokens: 20})
			require.NoError(t, err)
			streams = append(streams, st)
		}
		require.NoError(t, s.Close(context.Background()))
		for _, st := range streams {
			_, _, final := collect(t, st)
			require.NoError(t, final.Err)
		}
		_, err = s.Submit(context.Background(), engine.Request{Prompt: "x", MaxTokens: 1})
		require.ErrorIs(t, err, engine.ErrClosed)
		require.NoError(t, s.Close(context.Background()), "Close twice")
	})

	t.Run("abort", func(t *testing.T) {
		s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 1})
		require.NoError(t, err)
		g.Lock()
		run, err := s.Submit(context.Background(), engine.Request{Prompt: "A", MaxTokens: 1000})
		require.NoError(t, err)
		require.Eventually(t, func() bool { return s.Stats().Running == 1 }, 5*time.Second, time.Millisecond)
		wait, err := s.Submit(context.Background(), engine.Request{Prompt: "B", MaxTokens: 10})
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		var closeErr error
		done := make(chan struct{})
		go func() { closeErr = s.Close(ctx); close(done) }()
		time.Sleep(40 * time.Millisecond)
		g.Unlock()
		<-done
		require.ErrorIs(t, closeErr, context.DeadlineExceeded)
		for _, st := range []*engine.Stream{run, wait} {
			_, _, final := collect(t, st)
			require.ErrorIs(t, final.Err, engine.ErrClosed)
			require.Equal(t, engine.FinishCancelled, final.FinishReason)
		}
		require.Zero(t, s.Stats().KVBlocksInUse)
	})

	t.Run("cancelled-contexts", func(t *testing.T) {
		s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 2, MaxBatchTokens: 4})
		require.NoError(t, err)
		var wg sync.WaitGroup
		for i := 0; i < 12; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				st, err := s.Submit(ctx, engine.Request{Prompt: storyPrompts[i%len(storyPrompts)], MaxTokens: 200})
				if !assertNoError(t, err) {
					return
				}
				for j := 0; j < i%4; j++ {
					<-st.C
				}
				cancel()
				for range st.C {
				}
			}()
		}
		wg.Wait()
		waitIdle(t, s)
		require.NoError(t, s.Close(context.Background()))
	})

	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	require.LessOrEqual(t, runtime.NumGoroutine(), before, "goroutines leaked")
}

// Streamed text is valid UTF-8 in every event even when the model emits arbitrary byte-fallback
// tokens (random weights over the real LLaMA vocabulary), and it equals the solo run.
func TestSchedulerUTF8FromByteTokens(t *testing.T) {
	path := shared(t, "tiny-random/llama-2-tiny-random.gguf")
	e, err := engine.Load(engine.Options{ModelPath: path, Threads: 1})
	require.NoError(t, err)
	defer e.Close()
	prompts := []string{"안녕하세요", "한국어 텍스트", "Hello"}
	var want []solo
	for i, p := range prompts {
		want = append(want, generateSolo(t, e, engine.Request{Prompt: p, MaxTokens: 60, Sampling: sample.Params{Temperature: 1, Seed: uint64(i)}}))
	}
	s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 4})
	require.NoError(t, err)
	defer s.Close(context.Background())
	bytesSeen := 0
	for i, p := range prompts {
		st, err := s.Submit(context.Background(), engine.Request{Prompt: p, MaxTokens: 60, Sampling: sample.Params{Temperature: 1, Seed: uint64(i)}})
		require.NoError(t, err)
		ids, text, _ := collect(t, st) // collect checks every event is valid UTF-8
		require.Equal(t, want[i].ids, ids)
		require.Equal(t, want[i].text, text)
		for _, id := range ids {
			if e.Tokenizer.IsByte(id) {
				bytesSeen++
			}
		}
	}
	t.Logf("%d byte-fallback tokens streamed", bytesSeen)
	require.Positive(t, bytesSeen, "the random model should emit byte tokens")
}

func TestNewSchedulerOptions(t *testing.T) {
	e, _ := loadStories(t, 0)
	_, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 8, MaxBatchTokens: 4})
	require.ErrorContains(t, err, "below MaxSeqs")
	_, err = engine.NewScheduler(nil, engine.SchedulerOptions{})
	require.Error(t, err)
	s, err := engine.NewScheduler(e, engine.SchedulerOptions{})
	require.NoError(t, err)
	defer s.Close(context.Background())
	o := s.Options()
	require.Equal(t, 8, o.MaxSeqs)
	require.Equal(t, engine.PrefillChunk, o.MaxBatchTokens)
	require.Equal(t, 16, o.BlockSize)
	require.Equal(t, 256, o.MaxQueue)
	require.Equal(t, 8*e.Context/16, o.KVBlocks, fmt.Sprintf("context %d", e.Context))

	// Engine.PrefillChunk (the CLI's 2048 on a GPU) is the default step size.
	e.PrefillChunk = 2048
	s2, err := engine.NewScheduler(e, engine.SchedulerOptions{})
	require.NoError(t, err)
	defer s2.Close(context.Background())
	require.Equal(t, 2048, s2.Options().MaxBatchTokens)
}

// TestPrefillChunk: a prompt taken in steps of any size gives the same greedy text (Generate
// and Embed read Engine.PrefillChunk), and Load refuses a negative one.
func TestPrefillChunk(t *testing.T) {
	e, _ := loadStories(t, 0)
	prompt := "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends."
	var want string
	for _, chunk := range []int{0, 5, 64, 2048} {
		e.PrefillChunk = chunk
		var b strings.Builder
		_, err := e.Generate(context.Background(), engine.Request{Prompt: prompt, MaxTokens: 24, Sampling: sample.Params{Temperature: 0}}, func(_ int32, text string) error {
			b.WriteString(text)
			return nil
		})
		require.NoError(t, err)
		if chunk == 0 {
			want = b.String()
			require.NotEmpty(t, want)
			continue
		}
		require.Equal(t, want, b.String(), "PrefillChunk %d", chunk)
	}
	_, err := engine.Load(engine.Options{PrefillChunk: -1})
	require.ErrorContains(t, err, "PrefillChunk")
}

// BenchmarkSchedulerThroughput: 32 requests of 16 greedy tokens through the scheduler, one at a
// time (MaxSeqs 1) or batched, on a ~25M-parameter synthetic model where the forward pass, not
// the bookkeeping, dominates. Reports aggregate generated tokens/s.
func BenchmarkSchedulerThroughput(b *testing.B) {
	cfg := model.Config{Name: "bench-25m", Dim: 512, Layers: 8, Heads: 8, KVHeads: 8, FFN: 1376, Vocab: 512,
		MaxSeq: 256, NormEps: 1e-5, RopeTheta: 10000}
	e, err := engine.Load(engine.Options{SyntheticConfig: &cfg})
	require.NoError(b, err)
	defer e.Close()
	for _, maxSeqs := range []int{1, 4, 16, 32} {
		b.Run(fmt.Sprintf("seqs=%d", maxSeqs), func(b *testing.B) {
			s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: maxSeqs, MaxQueue: 64})
			require.NoError(b, err)
			defer s.Close(context.Background())
			tokens := 0
			b.ResetTimer()
			for range b.N {
				var streams []*engine.Stream
				for i := 0; i < 32; i++ {
					st, err := s.Submit(context.Background(), engine.Request{Prompt: storyPrompts[i%len(storyPrompts)], MaxTokens: 16})
					require.NoError(b, err)
					streams = append(streams, st)
				}
				for _, st := range streams {
					_, final := st.Collect()
					tokens += final.Usage.CompletionTokens
				}
			}
			b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}
