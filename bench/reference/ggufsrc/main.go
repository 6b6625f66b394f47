// Command ggufsrc writes the F32 GGUF that bench/reference/ggml_quants.py's "quantize" turns into
// llama.cpp-quantised test models (loader/testdata/kquant): a small LLaMA 2-architecture model
// whose every matrix has rows of whole 256-element k-quant super-blocks (dim 256, FFN 768, 4
// query and 2 key/value heads, 2 layers) and stories260K's 512-token vocabulary, with seeded
// weights scaled like bench/reference/hf_logits.py's (embeddings N(0, 1), linear weights
// N(0, 1/fan_in), norms 1 + 0.1·N(0, 1)) so that logits and attention are far from uniform.
//
//	go run ./bench/reference/ggufsrc -vocab ../shared/testdata/stories260K/stories260K.gguf -out /tmp/kq-f32.gguf
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"

	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

func main() {
	vocabPath := flag.String("vocab", "../shared/testdata/stories260K/stories260K.gguf", "GGUF whose vocabulary the model takes")
	out := flag.String("out", "", "output GGUF")
	seed := flag.Uint64("seed", 20261127, "weights seed")
	flag.Parse()
	if err := run(*vocabPath, *out, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "ggufsrc:", err)
		os.Exit(1)
	}
}

func run(vocabPath, out string, seed uint64) error {
	if out == "" {
		return fmt.Errorf("-out is required")
	}
	vocab, err := loader.ReadGGUFVocab(vocabPath)
	if err != nil {
		return err
	}
	cfg := model.Config{Name: "llamacu k-quant test model", Dim: 256, Layers: 2, Heads: 4, KVHeads: 2, FFN: 768,
		Vocab: len(vocab.Tokens), MaxSeq: 512, NormEps: 1e-5, RopeTheta: 10000}
	rng := rand.New(rand.NewPCG(seed, 0x6b7175616e74))
	tensors := map[string]*tensor.Tensor{}
	for _, ws := range cfg.WeightShapes() {
		n := 1
		for _, s := range ws.Shape {
			n *= s
		}
		vals := make([]float32, n)
		for i := range vals {
			g := rng.NormFloat64()
			switch {
			case len(ws.Shape) == 1: // RMSNorm weight
				vals[i] = float32(1 + 0.1*g)
			case ws.Name == "tok_embeddings.weight":
				vals[i] = float32(g)
			default:
				vals[i] = float32(g / math.Sqrt(float64(ws.Shape[1])))
			}
		}
		data := make([]byte, 4*n)
		for i, v := range vals {
			binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
		}
		tensors[ws.Name] = &tensor.Tensor{Name: ws.Name, DType: tensor.F32, Shape: ws.Shape, Data: data}
	}
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
