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
	st, err := e.Generate(ctx, engine.Request{Prompt: prompt, MaxTokens: *maxTokens, Sampling: params, Grammar: g},
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
