package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/llamacu/llamacu/engine"
)

func init() {
	register(command{"embed", "print the embeddings of texts as JSON lines", cmdEmbed})
}

func cmdEmbed(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("embed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lf := addLoadFlags(fs)
	pooling := fs.String("pooling", "last", "last: the last token's final hidden state (llama.cpp's and ollama's for LLaMA); mean: the mean over the tokens")
	normalize := fs.Bool("normalize", true, "scale each vector to unit length (false: as the model gives it)")
	file := fs.String("file", "", "embed each non-empty line of this file (- for stdin) after the TEXT arguments")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: llamacu embed [--model PATH] [flags] TEXT... | --file FILE\n\n"+
			"Prints one JSON object per text: {\"index\", \"tokens\", \"embedding\"}. Each text is encoded\n"+
			"with BOS, as a prompt. Without --model a built-in synthetic model is used.\n\nflags:")
		fs.PrintDefaults()
	}
	texts, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	how, err := engine.ParsePooling(*pooling)
	if err != nil {
		return fmt.Errorf("%w: --pooling %q: want last or mean", errUsage, *pooling)
	}
	if *file != "" {
		lines, err := readLines(*file)
		if err != nil {
			return err
		}
		texts = append(texts, lines...)
	}
	if len(texts) == 0 {
		return fmt.Errorf("%w: a TEXT argument or --file is required", errUsage)
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
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	enc := json.NewEncoder(w)
	for i, text := range texts {
		ids := e.Tokenizer.Encode(text, true)
		v, err := e.Embed(ctx, engine.EmbedRequest{PromptIDs: ids, Pooling: how, Normalize: *normalize})
		if err != nil {
			return fmt.Errorf("text %d: %w", i, err)
		}
		if err := enc.Encode(embedLine{i, len(ids), v}); err != nil {
			return err
		}
	}
	return nil
}

// embedLine is one line of embed's output.
type embedLine struct {
	Index     int       `json:"index"`
	Tokens    int       `json:"tokens"`
	Embedding []float32 `json:"embedding"`
}

// readLines returns the non-empty lines of a file, or of stdin for "-".
func readLines(path string) ([]string, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var lines []string
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		if l := sc.Text(); l != "" {
			lines = append(lines, l)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--file %s: %w", path, err)
	}
	return lines, nil
}
