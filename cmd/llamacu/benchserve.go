package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/llamacu/llamacu/bench"
)

// cmdBenchServe is `llamacu bench serve`: streamed /v1/completions requests against a running
// OpenAI-compatible server at several concurrency levels.
func cmdBenchServe(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "server base URL, e.g. http://127.0.0.1:8080 (/v1/completions is appended)")
	concList := fs.String("concurrency", "1,8,64", "comma-separated concurrency levels (requests in flight)")
	requests := fs.Int("requests", 100, "requests per concurrency level")
	inputLen := fs.Int("input-len", 128, "prompt length in words (≈ tokens)")
	ignoreEOS := fs.Bool("ignore-eos", false, "ask for --output-len tokens whatever the model samples (ignore_eos: vLLM, llama.cpp and llamacu accept it)")
	prefixLen := fs.Int("prefix-len", 0, "words opening every prompt, the same for all (a shared system prompt), before --input-len of its own")
	outputLen := fs.Int("output-len", 128, "max_tokens of each request (outputs may end early at EOS)")
	seed := fs.Uint64("seed", 1, "seed of the prompt dataset")
	apiKey := fs.String("api-key", os.Getenv("LLAMACU_API_KEY"), "Bearer API key (default $LLAMACU_API_KEY)")
	modelName := fs.String("model", "", "the request's model field")
	timeout := fs.Duration("timeout", 10*time.Minute, "per-request timeout")
	format := fs.String("format", "md", "report on stdout: md, json or csv")
	outDir := fs.String("out", "", "also write NAME.json, .md, .csv and .log into this folder")
	name := fs.String("name", "serve", "base name of the files in --out")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: llamacu bench serve --url URL [flags]\n\n"+
			"Sends --requests streamed completions (temperature 0) at each concurrency level and reports\n"+
			"time to first token, time per output token, inter-token latency and end-to-end latency\n"+
			"(mean, median, p90, p99), requests/s and output tokens/s.\n\nflags:")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	if *url == "" {
		return fmt.Errorf("%w: --url is required", errUsage)
	}
	if !strings.HasPrefix(*url, "http://") && !strings.HasPrefix(*url, "https://") {
		return fmt.Errorf("%w: --url %q must start with http:// or https://", errUsage, *url)
	}
	levels, err := parseInts("--concurrency", *concList, 1)
	if err != nil {
		return err
	}
	if *requests < 1 || *inputLen < 1 || *outputLen < 1 || *prefixLen < 0 {
		return fmt.Errorf("%w: --requests, --input-len and --output-len must be ≥ 1, --prefix-len ≥ 0", errUsage)
	}
	if *format != "md" && *format != "json" && *format != "csv" {
		return fmt.Errorf("%w: --format %q (want md, json or csv)", errUsage, *format)
	}
	o := bench.ServeOptions{URL: *url, APIKey: *apiKey, Model: *modelName, Requests: *requests, InputLen: *inputLen, PrefixLen: *prefixLen, IgnoreEOS: *ignoreEOS,
		OutputLen: *outputLen, Seed: *seed, Timeout: *timeout}
	var log bytes.Buffer
	logf := func(f string, a ...any) {
		line := fmt.Sprintf(f, a...)
		fmt.Fprintln(stderr, line)
		log.WriteString(line + "\n")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep := bench.NewServeReport(o)
	for _, c := range levels {
		res, err := bench.RunServe(ctx, o, c)
		if err != nil {
			return err
		}
		logf("concurrency %3d: %d/%d done, %.2f req/s, %.1f output tok/s, TTFT median %.1f ms, TPOT median %.1f ms",
			c, res.Completed, res.Requests, res.RequestsPerS, res.OutputTokS, res.TTFTms.Median, res.TPOTms.Median)
		for _, e := range res.Errors {
			logf("  error: %s", e)
		}
		rep.Results = append(rep.Results, res)
	}
	if err := rep.Write(stdout, *format); err != nil {
		return err
	}
	if *outDir != "" {
		if err := writeOutputs(*outDir, fileName(*name), log.Bytes(), stderr, map[string]func(io.Writer) error{
			".json": rep.WriteJSON, ".md": rep.WriteMarkdown, ".csv": rep.WriteCSV,
		}); err != nil {
			return err
		}
	}
	for _, r := range rep.Results {
		if r.Completed == 0 {
			return fmt.Errorf("no request succeeded at concurrency %d (first error: %s)", r.Concurrency, r.Errors[0])
		}
	}
	return nil
}
