package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/llamacu/llamacu/engine"
)

func init() {
	register(command{"run", "generate text from a prompt", cmdRun})
}

func cmdRun(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lf := addLoadFlags(fs)
	sf := addSamplingFlags(fs, "random seed (-1: from the clock, printed to stderr)")
	maxTokens := fs.Int("max-tokens", 256, "most tokens to generate (0: until the context is full)")
	draft := fs.Int("draft", 0, fmt.Sprintf("speculative decoding by prompt lookup: propose up to N tokens a step (0: off, at most %d); the text is the same", engine.MaxDraftTokens))
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: llamacu run [--model PATH] [flags] PROMPT\n\nGenerates a continuation of PROMPT; stdout carries only the generated text.\nWithout --model a built-in synthetic model is used.\n\nflags:")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return fmt.Errorf("%w: one PROMPT argument expected, got %d (quote the prompt)", errUsage, len(pos))
	}
	prompt := ""
	if len(pos) == 1 {
		prompt = pos[0]
	}
	if *maxTokens < 0 {
		return fmt.Errorf("%w: --max-tokens must be ≥ 0", errUsage)
	}
	if *draft < 0 || *draft > engine.MaxDraftTokens {
		return fmt.Errorf("%w: --draft must be 0 to %d", errUsage, engine.MaxDraftTokens)
	}
	params, err := sf.params(stderr)
	if err != nil {
		return err
	}
	g, err := sf.grammar()
	if err != nil {
		return err
	}

	if lf.follower() {
		return lf.follow(stderr)
	}
	e, err := lf.load(stderr)
	if err != nil {
		return err
	}
	defer e.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	req := engine.Request{Prompt: prompt, MaxTokens: *maxTokens, Sampling: params, Grammar: g}
	if *draft > 0 {
		return runDrafted(ctx, e, req, *draft, stdout, stderr)
	}
	st, err := e.Generate(ctx, req,
		func(_ int32, text string) error {
			_, err := io.WriteString(stdout, text)
			return err
		})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "\nprompt: %d tokens in %v (%.1f tok/s); generated %d tokens in %v (%.1f tok/s decode); stop: %s\n",
		st.PromptTokens, st.PromptTime.Round(time.Millisecond), st.PromptTokensPerSec(),
		st.Generated, (st.PromptTime + st.DecodeTime).Round(time.Millisecond), st.DecodeTokensPerSec(), st.StopReason)
	return nil
}

// runDrafted is run with speculative decoding: one request through a one-sequence scheduler
// (the scheduler drafts; Engine.Generate does not), its tokens printed as they come.
func runDrafted(ctx context.Context, e *engine.Engine, req engine.Request, draft int, stdout, stderr io.Writer) error {
	sched, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 1, DraftTokens: draft, NoPrefixCache: true})
	if err != nil {
		return err
	}
	defer sched.Close(context.Background())
	if req.MaxTokens > 0 && req.MaxTokens > e.Context-len(e.Tokenizer.Encode(req.Prompt, true)) {
		req.MaxTokens = 0 // as Generate: until the context is full
	}
	st, err := sched.Submit(ctx, req)
	if err != nil {
		return err
	}
	var first, last engine.Event
	n := 0
	for ev := range st.C {
		if _, err := io.WriteString(stdout, ev.Text); err != nil {
			st.Cancel()
			return err
		}
		if !ev.Done {
			if n == 0 {
				first = ev
			}
			n++
		}
		last = ev
	}
	if last.Err != nil {
		return last.Err
	}
	stats := sched.Stats()
	if n == 0 {
		first = last // nothing generated: the prompt took until the end
	}
	prompt := first.Time.Sub(st.Submitted())
	decode := last.Time.Sub(first.Time)
	rate := 0.0
	if n > 1 && decode > 0 {
		rate = float64(n-1) / decode.Seconds()
	}
	reason := "eos" // Generate's names, decided as it decides them
	if last.FinishReason == engine.FinishLength {
		reason = "max_tokens"
		if st.PromptTokens()+n >= e.Context {
			reason = "context"
		}
	}
	fmt.Fprintf(stderr, "\nprompt: %d tokens in %v; generated %d tokens in %v (%.1f tok/s decode) in %d steps, %d of %d proposals kept; stop: %s\n",
		st.PromptTokens(), prompt.Round(time.Millisecond), n, (prompt + decode).Round(time.Millisecond), rate,
		stats.Steps, stats.DraftAccepted, stats.DraftTokens, reason)
	return nil
}
