package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/serve"
)

func init() {
	register(command{"serve", "OpenAI-compatible HTTP server with continuous batching", cmdServe})
}

// serveListening, when set (by tests), is called with the address once the server listens.
var serveListening func(addr string)

func cmdServe(args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // after the first signal, a second one ends the process at once
	return runServe(ctx, args, stderr, serveListening)
}

// runServe listens, loads the model (answering /health with 503 meanwhile), serves until ctx is
// done, then drains: it stops accepting connections, lets requests in flight finish for up to
// --grace, cancels the rest, and returns nil.
func runServe(ctx context.Context, args []string, stderr io.Writer, onListen func(addr string)) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lf := addLoadFlags(fs)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address HOST:PORT (port 0: any free port)")
	apiKey := fs.String("api-key", os.Getenv("LLAMACU_API_KEY"), "require \"Authorization: Bearer KEY\" on /v1/ (default $LLAMACU_API_KEY; empty: no key)")
	maxQueue := fs.Int("max-queue", 64, "requests waiting beyond the running batch before 429 (0: none wait)")
	maxSeqs := fs.Int("max-seqs", 8, "sequences decoding together in the running batch")
	maxBatch := fs.Int("max-batch-tokens", 0, "tokens per forward step, prefill chunks plus decodes (0: max(256, --max-seqs); --backend cuda: max(2048, --max-seqs))")
	kvBlocks := fs.Int("kv-blocks", 0, "KV-cache blocks of 16 tokens (0: --max-seqs full contexts, at most 4 GiB on the CPU, the free memory less a tenth on a GPU)")
	noPrefix := fs.Bool("no-prefix-cache", false, "do not keep finished requests' KV blocks for later prompts that start the same way")
	draft := fs.Int("draft", 0, fmt.Sprintf("speculative decoding by prompt lookup: propose up to N tokens per sequence and step (0: off, at most %d)", engine.MaxDraftTokens))
	grace := fs.Duration("grace", 30*time.Second, "on SIGTERM/SIGINT, how long requests in flight may run before they are cancelled")
	name := fs.String("model-name", "", "model id reported by the API (default: the model file's name)")
	pooling := fs.String("pooling", "last", "embeddings (/v1/embeddings, /api/embed): last, the last token's final hidden state (llama.cpp's and ollama's for LLaMA), or mean over the tokens")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: llamacu serve --model PATH [--addr HOST:PORT] [--api-key KEY] [--max-queue N] [--max-seqs N] [--grace 30s]\n\n"+
			"Serves POST /v1/completions, POST /v1/chat/completions (Llama 2 chat format), GET /v1/models,\n"+
			"POST /v1/embeddings, POST /tokenize and /detokenize, GET /health and GET /metrics, and ollama's\n"+
			"/api/generate, /api/chat, /api/embed, /api/embeddings, /api/tags, /api/show, /api/ps, /api/version.\n"+
			"Listens before the model is loaded\n"+
			"(/health answers 503 until then). Finished requests' full KV blocks stay cached for prompts that\n"+
			"start the same way (--no-prefix-cache turns that off).\n\nflags:")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	case *maxQueue < 0:
		return fmt.Errorf("%w: --max-queue must be ≥ 0", errUsage)
	case *draft < 0 || *draft > engine.MaxDraftTokens:
		return fmt.Errorf("%w: --draft must be 0 to %d", errUsage, engine.MaxDraftTokens)
	case *maxSeqs < 1:
		return fmt.Errorf("%w: --max-seqs must be ≥ 1", errUsage)
	case *maxBatch < 0 || *kvBlocks < 0:
		return fmt.Errorf("%w: --max-batch-tokens and --kv-blocks must be ≥ 0", errUsage)
	case *grace < 0:
		return fmt.Errorf("%w: --grace must be ≥ 0", errUsage)
	}
	if *name == "" {
		*name = "llamacu-synthetic"
		if lf.model != "" {
			*name = strings.TrimSuffix(filepath.Base(lf.model), filepath.Ext(lf.model))
		}
	}
	sopts := engine.SchedulerOptions{MaxSeqs: *maxSeqs, MaxBatchTokens: *maxBatch, KVBlocks: *kvBlocks, MaxQueue: *maxQueue, NoPrefixCache: *noPrefix, DraftTokens: *draft}
	if *maxQueue == 0 {
		sopts.MaxQueue = -1 // the scheduler's "no waiting line"
	}

	if lf.follower() { // no HTTP here: node 0 serves, this node runs its forward steps
		return lf.follow(stderr)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	how, err := engine.ParsePooling(*pooling)
	if err != nil {
		return fmt.Errorf("%w: --pooling %q: want last or mean", errUsage, *pooling)
	}
	srv := serve.New(nil, nil, serve.Options{APIKey: *apiKey, ModelName: *name, Pooling: how})
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second, // no ReadTimeout/WriteTimeout: streams last as long as generation
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(stderr, "llamacu serve: ", 0),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	fmt.Fprintf(stderr, "listening on http://%s\n", ln.Addr())
	if onListen != nil {
		onListen(ln.Addr().String())
	}

	type loaded struct {
		e   *engine.Engine
		err error
	}
	lc := make(chan loaded, 1)
	go func() {
		e, err := lf.load(stderr)
		lc <- loaded{e, err}
	}()
	var e *engine.Engine
	select {
	case l := <-lc:
		if l.err != nil {
			hs.Close()
			return l.err
		}
		e = l.e
	case <-ctx.Done(): // a signal while loading: stop now, close the engine when it arrives
		hs.Close()
		go func() {
			if l := <-lc; l.e != nil {
				l.e.Close()
			}
		}()
		fmt.Fprintln(stderr, "stopped while loading")
		return nil
	case err := <-serveErr:
		go func() {
			if l := <-lc; l.e != nil {
				l.e.Close()
			}
		}()
		return err
	}
	defer e.Close()
	sched, err := engine.NewScheduler(e, sopts)
	if err != nil {
		hs.Close()
		return err
	}
	srv.SetEngine(sched, e)
	o := sched.Options()
	fmt.Fprintf(stderr, "ready: model %q, %d sequences × %d tokens per step, KV cache %d blocks of %d tokens, queue %d\n",
		*name, o.MaxSeqs, o.MaxBatchTokens, o.KVBlocks, o.BlockSize, max(o.MaxQueue, 0))

	// With several nodes, a node that leaves breaks the group for good: stop serving (every
	// request would fail) and exit non-zero, so that a supervisor restarts the group.
	var groupDone <-chan struct{}
	if lf.node != nil {
		groupDone = lf.node.Done()
	}
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		_ = sched.Close(context.Background())
		return err
	case <-groupDone:
		err := fmt.Errorf("tensor-parallel group ended: %w", lf.node.Err())
		fmt.Fprintf(stderr, "%v: shutting down\n", err)
		hs.Close()
		_ = sched.Close(context.Background())
		return err
	}

	// Drain: refuse new work, let requests in flight finish within the grace period.
	fmt.Fprintf(stderr, "shutting down: draining requests in flight for up to %v\n", *grace)
	start := time.Now()
	srv.Drain()
	gctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	schedDone := make(chan error, 1)
	go func() { schedDone <- sched.Close(gctx) }()
	// Handlers end once their streams do; give them a moment past the grace period to write
	// their last bytes after the scheduler cancels what is left.
	hctx, hcancel := context.WithTimeout(context.Background(), *grace+5*time.Second)
	defer hcancel()
	if err := hs.Shutdown(hctx); err != nil {
		hs.Close()
	}
	schedErr := <-schedDone
	st := sched.Stats()
	if errors.Is(schedErr, context.DeadlineExceeded) {
		fmt.Fprintf(stderr, "grace period over: requests still running were cancelled\n")
	}
	fmt.Fprintf(stderr, "stopped after %v: %d requests, %d tokens generated\n",
		time.Since(start).Round(time.Millisecond), st.Completed, st.Generated)
	return nil
}
