// Command mkgguf writes a synthetic LLaMA model (seeded random weights from model.Synthetic) as
// a GGUF file carrying the real LLaMA 2 vocabulary, so that llama.cpp accepts it and llamacu and
// llama.cpp can be timed on the very same file.
//
// Usage (from the repository root):
//
//	go run ./bench/peer/mkgguf -preset 110m -dtype f32 -out /tmp/peer/synth110m-f32.gguf
//
// The vocabulary comes from -vocab (default ../shared/testdata/llama2-tokenizer/ggml-vocab-llama-spm.gguf).
// The output is large (~440 MB for 110m in F32): write it outside the repository.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"slices"

	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

func main() {
	preset := flag.String("preset", "110m", "model shape: a model.Preset name (tiny, 110m, 7b, ...)")
	dtypeName := flag.String("dtype", "f32", "storage type of the matrices (norms stay F32)")
	seed := flag.Uint64("seed", 1, "weight seed")
	vocabPath := flag.String("vocab", "../shared/testdata/llama2-tokenizer/ggml-vocab-llama-spm.gguf", "GGUF file whose tokenizer.ggml.* vocabulary is copied")
	out := flag.String("out", "", "output GGUF path (required)")
	flag.Parse()
	if err := run(*preset, *dtypeName, *seed, *vocabPath, *out); err != nil {
		fmt.Fprintln(os.Stderr, "mkgguf:", err)
		os.Exit(1)
	}
}

func run(preset, dtypeName string, seed uint64, vocabPath, out string) error {
	if out == "" {
		return fmt.Errorf("-out is required")
	}
	cfg, err := model.Preset(preset)
	if err != nil {
		return err
	}
	dtype, err := tensor.ParseDType(dtypeName)
	if err != nil {
		return err
	}
	if dtype.ReadOnly() {
		return fmt.Errorf("-dtype %v: llamacu does not write that type", dtype)
	}
	vocab, err := loader.ReadGGUFVocab(vocabPath)
	if err != nil {
		return err
	}
	if len(vocab.Tokens) != cfg.Vocab {
		return fmt.Errorf("%s: %d tokens, preset %s needs %d", vocabPath, len(vocab.Tokens), preset, cfg.Vocab)
	}
	src := model.Synthetic(cfg, seed, dtype)
	tensors := make(map[string]*tensor.Tensor)
	for _, ws := range cfg.WeightShapes() {
		t, err := src(ws.Name)
		if err != nil {
			return err
		}
		tensors[ws.Name] = t
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err := loader.WriteGGUFModel(w, cfg, vocab, tensors); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", out, err)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", out, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	// Say which tokenizer keys of the source did not come across (WriteGGUFModel writes the
	// vocabulary loader.Vocab models; llama.cpp's defaults cover the rest for SentencePiece).
	src0, err := loader.ReadGGUFInfo(vocabPath)
	if err != nil {
		return err
	}
	got, err := loader.ReadGGUFInfo(out)
	if err != nil {
		return fmt.Errorf("reading back: %w", err)
	}
	for _, k := range src0.Keys {
		if _, ok := got.Meta[k]; !ok && !slices.Contains([]string{"general.name", "general.architecture"}, k) {
			fmt.Fprintf(os.Stderr, "mkgguf: note: key %s = %v of %s not written\n", k, src0.Meta[k], vocabPath)
		}
	}
	fmt.Fprintf(os.Stderr, "mkgguf: wrote %s: %s, %d params, %s, %d tensors\n", out, cfg.Name, cfg.ParamCount(), dtype, len(got.Tensors))
	return nil
}
