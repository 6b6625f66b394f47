// Package kqsrc makes the F32 source model that llama.cpp quantises into llamacu's GGUF test
// models (loader/testdata/kquant, loader/testdata/llama-cpp-quant-types.json): a small LLaMA
// 2-architecture model whose every matrix has rows of whole 256-element k-quant super-blocks
// (dim 256, FFN 768, 4 query and 2 key/value heads) with a given vocabulary (stories260K's 512
// tokens in the test files), and seeded weights scaled like bench/reference/hf_logits.py's
// (embeddings N(0, 1), linear weights N(0, 1/fan_in), norms 1 + 0.1·N(0, 1)) so that logits and
// attention are far from uniform.
//
// bench/reference/ggufsrc writes it as a GGUF; the weights are a pure function of the layer
// count and the seed, so the checked-in files can be made again bit for bit.
package kqsrc

import (
	"encoding/binary"
	"math"
	"math/rand/v2"

	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// DefaultSeed is the weights seed of the checked-in files (loader/testdata/kquant: 2 layers;
// loader/testdata/llama-cpp-quant-types.json: 8 layers).
const DefaultSeed = 20261127

// Model returns the configuration and the F32 weights (named as model.Config.WeightShapes names
// them) of the test model with the given vocabulary, number of layers and seed. The weights are
// drawn from one PCG stream in WeightShapes order: models of one seed share the token
// embeddings and their common first layers, but the final norm and output matrices differ with
// the layer count.
func Model(vocab *loader.Vocab, layers int, seed uint64) (model.Config, map[string]*tensor.Tensor) {
	cfg := model.Config{Name: "llamacu k-quant test model", Dim: 256, Layers: layers, Heads: 4, KVHeads: 2, FFN: 768,
		Vocab: len(vocab.Tokens), MaxSeq: 512, NormEps: 1e-5, RopeTheta: 10000}
	rng := rand.New(rand.NewPCG(seed, 0x6b7175616e74))
	tensors := map[string]*tensor.Tensor{}
	for _, ws := range cfg.WeightShapes() {
		n := 1
		for _, s := range ws.Shape {
			n *= s
		}
		data := make([]byte, 4*n)
		for i := 0; i < n; i++ {
			g := rng.NormFloat64()
			var v float32
			switch {
			case len(ws.Shape) == 1: // RMSNorm weight
				v = float32(1 + 0.1*g)
			case ws.Name == model.NameTokEmbed:
				v = float32(g)
			default:
				v = float32(g / math.Sqrt(float64(ws.Shape[1])))
			}
			binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
		}
		tensors[ws.Name] = &tensor.Tensor{Name: ws.Name, DType: tensor.F32, Shape: ws.Shape, Data: data}
	}
	return cfg, tensors
}
