package engine_test

import (
	"context"
	"fmt"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/sample"
)

// A Scheduler serves many requests at once over one loaded Engine; each Stream delivers its
// tokens as they are generated.
func ExampleScheduler() {
	e, err := engine.Load(engine.Options{}) // the built-in synthetic model
	if err != nil {
		panic(err)
	}
	defer e.Close()
	s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 4})
	if err != nil {
		panic(err)
	}
	defer s.Close(context.Background())

	var streams []*engine.Stream
	for _, p := range []string{"Once upon a time", "The little dog"} {
		st, err := s.Submit(context.Background(), engine.Request{Prompt: p, MaxTokens: 8, Sampling: sample.GreedyParams()})
		if err != nil {
			panic(err)
		}
		streams = append(streams, st)
	}
	for _, st := range streams {
		for ev := range st.C {
			if ev.Done {
				fmt.Println(ev.Err, ev.Usage.PromptTokens, ev.Usage.CompletionTokens <= 8)
			}
			// else: ev.Token, ev.Text (complete UTF-8) arrive as they are generated
		}
	}
	// Output:
	// <nil> 9 true
	// <nil> 7 true
}

// Scoring a text (perplexity, multiple choice): PromptLogprobs gives the log probability of
// every prompt token after the first, in the stream's first event. A second request that
// starts with the same tokens reads their KV blocks from the prefix cache.
func ExampleScheduler_promptLogprobs() {
	e, err := engine.Load(engine.Options{}) // the built-in synthetic model
	if err != nil {
		panic(err)
	}
	defer e.Close()
	s, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 2})
	if err != nil {
		panic(err)
	}
	defer s.Close(context.Background())

	prompt := "Once upon a time there was a little girl named Lily. She went to the park with her mom and dad."
	st, err := s.Submit(context.Background(), engine.Request{Prompt: prompt, MaxTokens: 1, PromptLogprobs: true})
	if err != nil {
		panic(err)
	}
	var sum float64
	n := 0
	for ev := range st.C {
		for _, lp := range ev.PromptLogprobs { // first event only
			sum += float64(lp.Logprob)
			n++
		}
	}
	fmt.Println(n == st.PromptTokens()-1, sum < 0)

	st, err = s.Submit(context.Background(), engine.Request{Prompt: prompt + " They played.", MaxTokens: 1})
	if err != nil {
		panic(err)
	}
	for ev := range st.C {
		if ev.Done {
			fmt.Println(ev.Usage.CachedTokens > 0) // the first request's full blocks
		}
	}
	// Output:
	// true true
	// true
}
