// Command ggufsrc writes the F32 GGUF that bench/reference/ggml_quants.py's "quantize" and
// "types" turn into llama.cpp-quantised test data (loader/testdata/kquant,
// loader/testdata/llama-cpp-quant-types.json): bench/reference/kqsrc's model, a small LLaMA
// 2-architecture model whose every matrix has rows of whole 256-element k-quant super-blocks
// (dim 256, FFN 768, 4 query and 2 key/value heads, -layers layers) with stories260K's
// 512-token vocabulary and seeded weights.
//
//	go run ./bench/reference/ggufsrc -vocab ../shared/testdata/stories260K/stories260K.gguf -out /tmp/kq-f32.gguf
//	go run ./bench/reference/ggufsrc -layers 8 -out /tmp/kq8-f32.gguf
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"

	"github.com/llamacu/llamacu/bench/reference/kqsrc"
	"github.com/llamacu/llamacu/loader"
)

func main() {
	vocabPath := flag.String("vocab", "../shared/testdata/stories260K/stories260K.gguf", "GGUF whose vocabulary the model takes")
	out := flag.String("out", "", "output GGUF")
	layers := flag.Int("layers", 2, "transformer blocks")
	seed := flag.Uint64("seed", kqsrc.DefaultSeed, "weights seed")
	flag.Parse()
	if err := run(*vocabPath, *out, *layers, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "ggufsrc:", err)
		os.Exit(1)
	}
}

func run(vocabPath, out string, layers int, seed uint64) error {
	if out == "" {
		return fmt.Errorf("-out is required")
	}
	if layers < 1 {
		return fmt.Errorf("-layers %d: need at least 1", layers)
	}
	vocab, err := loader.ReadGGUFVocab(vocabPath)
	if err != nil {
		return err
	}
	cfg, tensors := kqsrc.Model(vocab, layers, seed)
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if err := loader.WriteGGUFModel(w, cfg, vocab, tensors); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
