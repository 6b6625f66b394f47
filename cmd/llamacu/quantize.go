package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/dustin/go-humanize"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
	"github.com/llamacu/llamacu/tokenizer"
)

func init() {
	register(command{"quantize", "write a model as a GGUF file of another type (llama-quantize's), LoRA adapters merged in", cmdQuantize})
}

func cmdQuantize(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("quantize", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelPath := fs.String("model", "", "input model: llama2.c .bin, .gguf or Hugging Face folder (required)")
	tokPath := fs.String("tokenizer", "", "tokenizer for a file without a vocabulary (default: in or beside the model)")
	typeName := fs.String("type", "Q4_K_M", "file type: "+quantTypeNames())
	out := fs.String("out", "", "output .gguf (required)")
	requant := fs.Bool("allow-requantize", false, "allow quantizing tensors that are quantized already (their errors add up)")
	var lora []engine.LoRAOption
	addLoRAFlags(fs, &lora) // merged first, as llama.cpp's export-lora
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: llamacu quantize --model IN --type TYPE --out OUT.gguf [--lora ADAPTER]...\n\n"+
			"Writes the model as a GGUF file of TYPE: norms F32, the LM head Q6_K, and in the _M types\n"+
			"Q6_K for the value and down projections of some layers, as llama.cpp's llama-quantize.\n\nflags:")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	case *modelPath == "" || *out == "":
		return fmt.Errorf("%w: --model and --out are required", errUsage)
	}
	qt, err := loader.ParseQuantType(*typeName)
	if err != nil {
		return fmt.Errorf("%w: --type: %v", errUsage, err)
	}
	f, err := loader.Open(*modelPath)
	if err != nil {
		return err
	}
	defer f.Close()
	vocab := f.Vocab
	if vocab == nil || *tokPath != "" {
		tok, err := engine.OpenTokenizer(*modelPath, *tokPath)
		if err != nil {
			return err
		}
		vocab = vocabOf(tok)
	}
	if len(vocab.Tokens) != f.Config.Vocab {
		return fmt.Errorf("the tokenizer has %d pieces but the model's vocabulary is %d", len(vocab.Tokens), f.Config.Vocab)
	}
	src := model.TensorSource(f.Tensor)
	if len(lora) > 0 { // all adapters in one merge: each weight rounded to its type once
		var adapters []*loader.LoRA
		var scales []float64
		defer func() {
			for _, a := range adapters {
				a.Close()
			}
		}()
		for _, o := range lora {
			a, err := loader.OpenLoRA(o.Path, f.Config)
			if err != nil {
				return err
			}
			adapters, scales = append(adapters, a), append(scales, o.Scale)
		}
		src = loader.MergeLoRA(src, adapters, scales)
	}

	tmp := *out + ".tmp"
	w, err := os.Create(tmp)
	if err != nil {
		return err
	}
	counts := map[tensor.DType]int{}
	bw := bufio.NewWriterSize(w, 4<<20)
	err = loader.Quantize(bw, f.Config, vocab, src, qt, loader.QuantizeOptions{AllowRequantize: *requant,
		Progress: func(name string, from, to tensor.DType) { counts[to]++ }})
	if err == nil {
		err = bw.Flush()
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, *out) // nothing half-written is left under the output's name
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	in, _ := os.Stat(*modelPath)
	st, _ := os.Stat(*out)
	var parts []string
	for _, d := range slices.Sorted(func(yield func(tensor.DType) bool) {
		for d := range counts {
			if !yield(d) {
				return
			}
		}
	}) {
		parts = append(parts, fmt.Sprintf("%d %v", counts[d], d))
	}
	size := ""
	if in != nil && !in.IsDir() {
		size = humanize.IBytes(uint64(in.Size())) + " → "
	}
	fmt.Fprintf(stderr, "wrote %s (%s): %s%s; tensors %s\n", *out, qt.Name, size, humanize.IBytes(uint64(st.Size())), strings.Join(parts, ", "))
	return nil
}

func quantTypeNames() string {
	names := make([]string, len(loader.QuantTypes))
	for i, q := range loader.QuantTypes {
		names[i] = q.Name
	}
	return strings.Join(names, ", ")
}

// vocabOf is a tokenizer's vocabulary as GGUF stores it (tokenizer.ggml.*).
func vocabOf(t *tokenizer.Tokenizer) *loader.Vocab {
	n := t.VocabSize()
	v := &loader.Vocab{Model: "llama", Tokens: make([]string, n), Scores: make([]float32, n), Types: make([]int32, n),
		BOS: t.BOS(), EOS: t.EOS(), UNK: t.UNK(), PAD: t.PAD(), AddBOS: true}
	for i := range n {
		id := int32(i)
		v.Tokens[i], v.Scores[i], v.Types[i] = t.Piece(id), t.Score(id), int32(t.Type(id))
	}
	return v
}
