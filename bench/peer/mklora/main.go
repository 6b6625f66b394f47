// Command mklora writes a seeded random LoRA adapter for a LLaMA model file, as llama.cpp's
// GGUF adapter and optionally as a Hugging Face PEFT folder, so that llamacu and llama.cpp can
// run the same adapted model.
//
// Usage (from the repository root):
//
//	go run ./bench/peer/mklora -model ../shared/testdata/stories260K/stories260K.gguf \
//	    -out engine/testdata/stories260K-lora.gguf [-peft DIR]
//
// Every attention and feed-forward projection of every layer gets a pair: A (r, in) uniform in
// ±1/√in, B (out, r) uniform in ±std, alpha 2r (scale 2).
package main

import (
	"bufio"
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
	modelPath := flag.String("model", "../shared/testdata/stories260K/stories260K.gguf", "the base model the adapter is for")
	rank := flag.Int("rank", 4, "r")
	std := flag.Float64("std", 0.05, "B's entries are uniform in ±std")
	seed := flag.Uint64("seed", 1, "random seed")
	out := flag.String("out", "", "output GGUF adapter (required)")
	peft := flag.String("peft", "", "also write a PEFT folder here")
	flag.Parse()
	if err := run(*modelPath, *rank, *std, *seed, *out, *peft); err != nil {
		fmt.Fprintln(os.Stderr, "mklora:", err)
		os.Exit(1)
	}
}

func run(modelPath string, rank int, std float64, seed uint64, out, peft string) error {
	if out == "" {
		return fmt.Errorf("-out is required")
	}
	m, err := loader.Open(modelPath)
	if err != nil {
		return err
	}
	defer m.Close()
	cfg := m.Config
	rng := rand.New(rand.NewPCG(seed, 0x10a))
	uniform := func(n int, a float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32((2*rng.Float64() - 1) * a)
		}
		return v
	}
	pairs := map[string]loader.LoRAPair{}
	for _, ws := range cfg.WeightShapes() {
		if len(ws.Shape) != 2 || ws.Name == model.NameTokEmbed || ws.Name == model.NameOutput {
			continue
		}
		outDim, in := ws.Shape[0], ws.Shape[1]
		a := &tensor.Tensor{Name: ws.Name + ".a", DType: tensor.F32, Shape: []int{rank, in}, Data: tensor.Encode(tensor.F32, uniform(rank*in, 1/math.Sqrt(float64(in))))}
		b := &tensor.Tensor{Name: ws.Name + ".b", DType: tensor.F32, Shape: []int{outDim, rank}, Data: tensor.Encode(tensor.F32, uniform(outDim*rank, std))}
		pairs[ws.Name] = loader.LoRAPair{A: a, B: b}
	}
	alpha := float32(2 * rank)
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if err := loader.WriteLoRAGGUF(w, pairs, alpha); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if peft != "" {
		return loader.ExportPEFT(peft, cfg, pairs, float64(alpha))
	}
	return nil
}
