package engine_test

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/sample"
)

// Stop strings made of multi-byte characters that the model spells with byte-fallback tokens
// (so the characters are held back until complete) cut the output exactly where the solo run's
// text contains them, and no event splits a character.
func TestSchedulerStopStringsUTF8(t *testing.T) {
	path := shared(t, "tiny-random/llama-2-tiny-random.gguf")
	e, err := engine.Load(engine.Options{ModelPath: path, Threads: 1})
	require.NoError(t, err)
	defer e.Close()
	var refs []solo
	var reqs []engine.Request
	for seed := range 6 {
		req := engine.Request{Prompt: "안녕하세요", MaxTokens: 60, Sampling: sample.Params{Temperature: 1, Seed: uint64(seed)}}
		reqs = append(reqs, req)
		refs = append(refs, generateSolo(t, e, req))
	}
	s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 4})
	require.NoError(t, err)
	defer s.Close(context.Background())
	tested := 0
	for i, ref := range refs {
		// The first non-ASCII character after the start, alone and with its neighbours.
		runes := []rune(ref.text)
		at := -1
		for j, r := range runes {
			if j > 0 && r >= 0x80 && r != utf8.RuneError {
				at = j
				break
			}
		}
		if at < 0 {
			continue
		}
		for _, stop := range []string{
			string(runes[at]),
			string(runes[at-1 : min(at+2, len(runes))]),
			string(runes[at]) + "\x00never",
		} {
			want, reason := ref.text, stopReason[ref.reason]
			if k := strings.Index(ref.text, stop); k >= 0 {
				want, reason = ref.text[:k], engine.FinishStop
			}
			req := reqs[i]
			req.Stop = []string{stop}
			st, err := s.Submit(context.Background(), req)
			require.NoError(t, err)
			_, text, final := collect(t, st) // every event valid UTF-8
			require.NoError(t, final.Err)
			require.Equal(t, want, text, "seed %d stop %q", i, stop)
			require.Equal(t, reason, final.FinishReason, "seed %d stop %q", i, stop)
			tested++
		}
	}
	require.Positive(t, tested, "no non-ASCII output to stop on")
}
