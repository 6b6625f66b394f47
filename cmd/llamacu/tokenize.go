package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/llamacu/llamacu/engine"
)

func init() {
	register(command{"tokenize", "print the token ids of a text as a JSON array", cmdTokenize})
}

func cmdTokenize(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tokenize", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelPath := fs.String("model", "", "model whose tokenizer to use (.gguf, HF folder, or llama2.c .bin with a tokenizer beside it)")
	tokPath := fs.String("tokenizer", "", "tokenizer.model, .gguf vocabulary, or llama2.c tokenizer.bin (with --model for its size)")
	noBOS := fs.Bool("no-bos", false, "do not prepend BOS")
	pieces := fs.Bool("pieces", false, "print [id, piece] pairs instead of ids")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: llamacu tokenize --model PATH | --tokenizer PATH [--no-bos] TEXT\n\nflags:")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: one TEXT argument expected, got %d", errUsage, len(pos))
	}
	if *modelPath == "" && *tokPath == "" {
		return fmt.Errorf("%w: --model or --tokenizer is required", errUsage)
	}
	tok, err := engine.OpenTokenizer(*modelPath, *tokPath)
	if err != nil {
		return err
	}
	ids := tok.Encode(pos[0], !*noBOS)
	var out any = ids
	if *pieces {
		pairs := make([][2]any, len(ids))
		for i, id := range ids {
			pairs[i] = [2]any{id, tok.Piece(id)}
		}
		out = pairs
	}
	if ids == nil {
		out = []int32{}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", b)
	return err
}
