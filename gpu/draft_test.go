//go:build cuda || cudaemu

package gpu_test

import (
	"context"
	"slices"
	"testing"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/gpu"
	"github.com/llamacu/llamacu/grammar"
	"github.com/llamacu/llamacu/sample"
)

// TestSchedulerDraftsAndGrammarOnGPU: on the CUDA backend (decode graphs on), speculative
// decoding's several-token decode rows and a grammar's whole-row steps give the tokens the
// scheduler gives without them, greedy and sampled. Emulated, every token; on a GPU the first
// 16 of each answer: a step of several rows of one sequence runs other kernels (prefill
// attention on the tensor cores, cuBLAS past 8 rows) than one-row decode, whose fp16 rounding
// may tip a near-tie later in a long answer (as in vLLM), while a wrong position or KV slot
// would derail the answer at once.
func TestSchedulerDraftsAndGrammarOnGPU(t *testing.T) {
	path := shared(t, "stories260K/stories260K.gguf")
	be := open(t, gpu.Options{Graphs: true})
	e, err := engine.Load(engine.Options{ModelPath: path, Backend: be, Context: 512})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	reqs := []engine.Request{
		{Prompt: "Once upon a time", MaxTokens: 110},
		{Prompt: "Lily and Tom", MaxTokens: 30, Sampling: sample.Params{Temperature: 0.8, TopK: 40, Seed: 5}},
		{Prompt: "The cat", MaxTokens: 20, Grammar: grammar.MustParse(`root ::= ([A-Za-z ,.]+ "\n")+`)},
	}
	run := func(draft int) ([][]int32, engine.SchedulerStats) {
		s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 4, DraftTokens: draft, NoPrefixCache: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close(context.Background())
		var streams []*engine.Stream
		for _, r := range reqs {
			st, err := s.Submit(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			streams = append(streams, st)
		}
		out := make([][]int32, len(streams))
		for i, st := range streams {
			for ev := range st.C {
				if ev.Done && ev.Err != nil {
					t.Fatalf("request %d: %v", i, ev.Err)
				}
				if !ev.Done {
					out[i] = append(out[i], ev.Token)
				}
			}
		}
		return out, s.Stats()
	}
	plain, _ := run(0)
	drafted, st := run(4)
	for i := range plain {
		n := len(plain[i])
		if !cuda.Emulated {
			n = min(n, 16)
		}
		if len(drafted[i]) < n || !slices.Equal(plain[i][:n], drafted[i][:n]) {
			t.Errorf("request %d: with drafts\n%v\nwithout\n%v", i, drafted[i], plain[i])
		}
		if !slices.Equal(plain[i], drafted[i]) {
			t.Logf("request %d: the answers part after %d tokens", i, commonPrefix(plain[i], drafted[i]))
		}
	}
	if st.DraftAccepted == 0 {
		t.Errorf("no proposal was kept: %+v", st)
	}
	t.Logf("proposed %d, kept %d, steps %d", st.DraftTokens, st.DraftAccepted, st.Steps)
}

func commonPrefix(a, b []int32) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
