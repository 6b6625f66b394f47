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
	"github.com/llamacu/llamacu/sample"
)

func init() {
	register(command{"run", "generate text from a prompt", cmdRun})
}

func cmdRun(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lf := addLoadFlags(fs)
	temp := fs.Float64("temperature", 0.8, "sampling temperature; 0 is greedy")
	topK := fs.Int("top-k", 40, "keep the k most likely tokens (0: all)")
	topP := fs.Float64("top-p", 0.95, "nucleus sampling: keep the smallest set with this much probability (1: off)")
	minP := fs.Float64("min-p", 0.05, "drop tokens less likely than this fraction of the most likely (0: off)")
	rep := fs.Float64("repeat-penalty", 1.0, "penalise the last --repeat-last-n tokens (1: off)")
	repN := fs.Int("repeat-last-n", 64, "how many recent tokens the repeat penalty looks at")
	seed := fs.Int64("seed", -1, "random seed (-1: from the clock, printed to stderr)")
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
	if *seed < 0 {
		*seed = time.Now().UnixNano() & (1<<62 - 1)
		if *temp > 0 {
			fmt.Fprintf(stderr, "seed: %d\n", *seed)
		}
	}
	params := sample.Params{
		Temperature: float32(*temp), TopK: *topK, TopP: float32(*topP), MinP: float32(*minP),
		RepeatPenalty: float32(*rep), RepeatLastN: *repN, Seed: uint64(*seed),
	}
	if err := params.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}

	e, err := lf.load(stderr)
	if err != nil {
		return err
	}
	defer e.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	st, err := e.Generate(ctx, engine.Request{Prompt: prompt, MaxTokens: *maxTokens, Sampling: params},
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
