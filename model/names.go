package model

import "fmt"

// Canonical weight names. Every loader maps its file's names onto these; shapes are row-major
// (out, in), y = W·x. Wq and Wk rows are in Meta's interleaved RoPE order (pairs 2i, 2i+1), as in
// Meta's and llama2.c's checkpoints and GGUF; the loader undoes Hugging Face's rotate-half
// permutation.
const (
	NameTokEmbed = "tok_embeddings.weight" // (vocab, dim)
	NameNorm     = "norm.weight"           // (dim)
	NameOutput   = "output.weight"         // (vocab, dim); absent when Config.TiedOutput
)

// Per-layer weight names; use LayerName.
const (
	NameAttnNorm = "attention_norm.weight"  // (dim)
	NameWq       = "attention.wq.weight"    // (heads·head_dim, dim)
	NameWk       = "attention.wk.weight"    // (kv_heads·head_dim, dim)
	NameWv       = "attention.wv.weight"    // (kv_heads·head_dim, dim)
	NameWo       = "attention.wo.weight"    // (dim, heads·head_dim)
	NameFFNNorm  = "ffn_norm.weight"        // (dim)
	NameW1       = "feed_forward.w1.weight" // (ffn, dim) gate
	NameW2       = "feed_forward.w2.weight" // (dim, ffn) down
	NameW3       = "feed_forward.w3.weight" // (ffn, dim) up
)

// LayerName returns "layers.{l}.{name}".
func LayerName(l int, name string) string { return fmt.Sprintf("layers.%d.%s", l, name) }

// WeightShape is a canonical name with the shape the config demands.
type WeightShape struct {
	Name  string
	Shape []int
}

// WeightShapes lists every weight the config needs, in file order (embedding, layers, norm, output).
func (c Config) WeightShapes() []WeightShape {
	d, f, q, kv := c.Dim, c.FFN, c.Heads*c.HeadDim(), c.KVDim()
	ws := []WeightShape{{NameTokEmbed, []int{c.Vocab, d}}}
	for l := 0; l < c.Layers; l++ {
		for _, w := range []WeightShape{
			{NameAttnNorm, []int{d}},
			{NameWq, []int{q, d}}, {NameWk, []int{kv, d}}, {NameWv, []int{kv, d}}, {NameWo, []int{d, q}},
			{NameFFNNorm, []int{d}},
			{NameW1, []int{f, d}}, {NameW2, []int{d, f}}, {NameW3, []int{f, d}},
		} {
			ws = append(ws, WeightShape{LayerName(l, w.Name), w.Shape})
		}
	}
	ws = append(ws, WeightShape{NameNorm, []int{d}})
	if !c.TiedOutput {
		ws = append(ws, WeightShape{NameOutput, []int{c.Vocab, d}})
	}
	return ws
}
