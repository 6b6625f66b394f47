package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/llamacu/llamacu/chat"
	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/grammar"
	"github.com/llamacu/llamacu/sample"
)

func init() {
	register(command{"chat", "chat with a Llama 2 chat model on stdin/stdout", cmdChat})
}

// stdin is what chat reads the user's lines from; tests replace it.
var stdin io.Reader = os.Stdin

// notifyInterrupt delivers Ctrl-C to c until the returned function is called; tests replace it.
var notifyInterrupt = func(c chan<- os.Signal) (stop func()) {
	signal.Notify(c, os.Interrupt)
	return func() { signal.Stop(c) }
}

const chatHelp = "type a message and press Enter; /reset clears the history, /exit (or Ctrl-D) quits, Ctrl-C stops an answer"

func cmdChat(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lf := addLoadFlags(fs)
	system := fs.String("system", "", "system prompt, kept for the whole conversation (empty: none)")
	sf := addSamplingFlags(fs, "random seed; answer n uses seed+n (-1: from the clock, printed to stderr)")
	maxTokens := fs.Int("max-tokens", 512, "most tokens per answer; the prompt gets the rest of the context")
	stats := fs.Bool("stats", false, "print token counts and speed after each answer (stderr)")
	draft := fs.Int("draft", 0, fmt.Sprintf("speculative decoding by prompt lookup: propose up to N tokens a step (0: off, at most %d)", engine.MaxDraftTokens))
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: llamacu chat [--model PATH] [--system TEXT] [flags]\n\n"+
			"Chats in the Llama 2 chat format ([INST] ... [/INST]): reads one message a line from stdin,\n"+
			"streams each answer to stdout followed by a blank line; the \"> \" prompt and notices go to stderr.\n"+
			"The oldest turns are dropped when the conversation outgrows the context (--ctx less --max-tokens);\n"+
			"the system prompt is always kept.\n"+chatHelp+".\n\nflags:")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: chat takes no arguments (got %q); messages come from stdin", errUsage, pos)
	}
	if *maxTokens < 1 {
		return fmt.Errorf("%w: --max-tokens must be ≥ 1", errUsage)
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
	var sys []chat.Message
	if *system != "" {
		sys = []chat.Message{{Role: chat.System, Content: *system}}
		if err := chat.Validate(append(sys, chat.Message{Role: chat.User})); err != nil {
			return fmt.Errorf("%w: --system: %v", errUsage, err)
		}
	}

	if lf.follower() {
		return lf.follow(stderr)
	}
	e, err := lf.load(stderr)
	if err != nil {
		return err
	}
	defer e.Close()
	budget := e.Context - *maxTokens
	if budget < 1 {
		return fmt.Errorf("%w: --max-tokens %d leaves no room for the prompt in a context of %d (raise --ctx or lower --max-tokens)",
			errUsage, *maxTokens, e.Context)
	}

	// One sequence at a time, through the scheduler for its prefix cache: each turn resends the
	// conversation, and only what the previous turn did not already write is prefilled.
	sched, err := engine.NewScheduler(e, engine.SchedulerOptions{MaxSeqs: 1, DraftTokens: *draft})
	if err != nil {
		return err
	}
	defer sched.Close(context.Background())
	s := &chatSession{
		e: e, sched: sched, params: params, grammar: g, budget: budget, maxTokens: *maxTokens, stats: *stats,
		stdout: stdout, stderr: stderr, sys: sys,
	}
	return s.loop()
}

// chatSession is one interactive conversation.
type chatSession struct {
	e              *engine.Engine
	sched          *engine.Scheduler
	params         sample.Params
	grammar        *grammar.Grammar // every answer follows it (--grammar, --json, ...); nil: free
	budget         int              // most prompt tokens: the context less maxTokens
	maxTokens      int
	stats          bool
	stdout, stderr io.Writer
	sys            []chat.Message // the system message, or none
	history        []chat.Message // sys, then completed (user, assistant) turns
	answers        int            // answers generated so far: answer n samples with Seed+n
}

func (s *chatSession) loop() error {
	// Lines are read in a goroutine so that Ctrl-C at the prompt can quit while a read blocks.
	lines := make(chan string)
	readErr := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	in := stdin
	go func() {
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-done:
				return
			}
		}
		readErr <- sc.Err()
		close(lines)
	}()
	intr := make(chan os.Signal, 1)
	defer notifyInterrupt(intr)()

	s.history = append([]chat.Message(nil), s.sys...)
	fmt.Fprintln(s.stderr, chatHelp)
	for {
		fmt.Fprint(s.stderr, "> ")
		var line string
		select {
		case l, ok := <-lines:
			if !ok {
				fmt.Fprintln(s.stderr)
				if err := <-readErr; err != nil {
					return fmt.Errorf("reading stdin: %w", err)
				}
				return nil
			}
			line = l
		case <-intr:
			fmt.Fprintln(s.stderr)
			return nil
		}
		switch strings.TrimSpace(line) {
		case "":
			continue
		case "/exit", "/quit":
			return nil
		case "/reset":
			s.history = append(s.history[:0], s.sys...)
			fmt.Fprintln(s.stderr, "(history cleared)")
			continue
		case "/help", "/?":
			fmt.Fprintln(s.stderr, chatHelp)
			continue
		}
		if err := s.answer(line, intr); err != nil {
			return err
		}
	}
}

// answer generates the reply to one user message, streaming it to stdout, and records the turn.
// Errors about the message itself (special tags, too long) are reported and the message dropped;
// only failures of the engine or of stdout end the session.
func (s *chatSession) answer(line string, intr <-chan os.Signal) error {
	msgs := append(append([]chat.Message(nil), s.history...), chat.Message{Role: chat.User, Content: line})
	kept, ids, err := chat.Fit(s.e.Tokenizer, msgs, s.budget)
	if errors.Is(err, chat.ErrUnsafe) || errors.Is(err, chat.ErrTooLong) {
		fmt.Fprintf(s.stderr, "(message not sent: %v)\n", err)
		return nil
	}
	if err != nil {
		return err
	}
	if dropped := (len(msgs) - len(kept)) / 2; dropped > 0 {
		fmt.Fprintf(s.stderr, "(dropped the %d oldest turn(s) to fit the context)\n", dropped)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watchDone := make(chan struct{})
	watched := make(chan bool, 1)
	go func() {
		select {
		case <-intr:
			cancel()
			watched <- true
		case <-watchDone:
			watched <- false
		}
	}()

	params := s.params
	params.Seed += uint64(s.answers)
	s.answers++
	var text strings.Builder
	first := true
	var final, firstEv engine.Event
	stream, err := s.sched.Submit(ctx, engine.Request{PromptIDs: ids, MaxTokens: s.maxTokens, Sampling: params,
		Grammar: s.grammar, TrimLeadingSpace: true}) // the answer is shown without its first space
	if err == nil {
		for ev := range stream.C {
			if ev.Done {
				final = ev
				err = ev.Err
			} else if firstEv.Time.IsZero() {
				firstEv = ev
			}
			piece := ev.Text
			if first && piece != "" {
				// The answer's first piece carries SentencePiece's word-start space; Meta's
				// decode of the answer alone drops it.
				piece = strings.TrimPrefix(piece, " ")
				first = false
			}
			text.WriteString(piece)
			if _, werr := io.WriteString(s.stdout, piece); werr != nil && err == nil {
				err = werr
				stream.Cancel() // drain: the scheduler sends the final event at its next step
			}
		}
	}
	close(watchDone)
	interrupted := <-watched
	if _, werr := io.WriteString(s.stdout, "\n\n"); werr != nil && err == nil {
		err = werr
	}
	switch {
	case interrupted && (err == nil || errors.Is(err, context.Canceled)):
		fmt.Fprintln(s.stderr, "(answer interrupted)")
	case err != nil:
		return err
	}
	if s.stats {
		u := final.Usage
		var prompt, decode time.Duration
		if !firstEv.Time.IsZero() {
			prompt, decode = firstEv.Time.Sub(stream.Submitted()), final.Time.Sub(firstEv.Time)
		}
		rate := 0.0
		if u.CompletionTokens > 1 && decode > 0 {
			rate = float64(u.CompletionTokens-1) / decode.Seconds()
		}
		fmt.Fprintf(s.stderr, "(prompt %d tokens, %d of them cached, in %v; %d tokens at %.1f tok/s; stop: %s)\n",
			u.PromptTokens, u.CachedTokens, prompt.Round(time.Millisecond), u.CompletionTokens, rate, final.FinishReason)
	}
	// The partial answer of an interrupted turn stays: it is what the user saw.
	s.history = append(kept[:len(kept)-1:len(kept)-1], chat.Message{Role: chat.User, Content: line},
		chat.Message{Role: chat.Assistant, Content: text.String()})
	return nil
}
