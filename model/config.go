// Package model holds the LLaMA 2 architecture: its configuration (presets for 7B/13B/70B and
// readers for Hugging Face config.json), the canonical weight names, the Backend seam every compute
// backend implements, the paged KV-cache geometry, and the forward pass, written once against
// the seam.
package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/llamacu/llamacu/tensor"
)

// Config is the shape of a LLaMA-family model.
type Config struct {
	Name       string  `json:"name,omitempty"`
	Dim        int     `json:"dim"`         // model width d (hidden_size)
	Layers     int     `json:"n_layers"`    // transformer blocks
	Heads      int     `json:"n_heads"`     // query heads
	KVHeads    int     `json:"n_kv_heads"`  // key/value heads (GQA: Heads is a multiple of KVHeads)
	FFN        int     `json:"ffn_dim"`     // SwiGLU hidden width (intermediate_size)
	Vocab      int     `json:"vocab_size"`  // tokens
	MaxSeq     int     `json:"max_seq_len"` // context length
	NormEps    float32 `json:"norm_eps"`    // RMSNorm epsilon
	RopeTheta  float32 `json:"rope_theta"`  // RoPE base
	TiedOutput bool    `json:"tied_output"` // the LM head shares the token embedding matrix
	// HeadSize, when not 0, is the head dimension; 0 means Dim / Heads (always so for whole
	// models; a tensor-parallel rank's slice keeps the full model's head size with fewer heads).
	HeadSize int `json:"head_size,omitempty"`
}

// HeadDim is the width of one attention head: Dim / Heads unless HeadSize says otherwise.
func (c Config) HeadDim() int {
	if c.HeadSize != 0 {
		return c.HeadSize
	}
	return c.Dim / c.Heads
}

// KVDim is KVHeads · HeadDim: the width of one token's K (or V).
func (c Config) KVDim() int { return c.KVHeads * c.HeadDim() }

// ErrBadConfig wraps every configuration error.
var ErrBadConfig = errors.New("bad model config")

// Validate checks the shape is self-consistent.
func (c Config) Validate() error {
	bad := func(f string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrBadConfig, fmt.Sprintf(f, a...))
	}
	switch {
	case c.Dim <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.FFN <= 0 || c.Vocab <= 0 || c.MaxSeq <= 0 || c.HeadSize < 0:
		return bad("every size must be positive: %+v", c)
	case c.Dim%c.Heads != 0:
		return bad("dim %d is not a multiple of n_heads %d", c.Dim, c.Heads)
	case c.HeadDim()%2 != 0:
		return bad("head_dim %d must be even for RoPE", c.HeadDim())
	case c.Heads%c.KVHeads != 0:
		return bad("n_heads %d is not a multiple of n_kv_heads %d", c.Heads, c.KVHeads)
	case !(c.NormEps > 0) || !(c.RopeTheta > 0) || math.IsInf(float64(c.NormEps), 0) || math.IsInf(float64(c.RopeTheta), 0):
		return bad("norm_eps %g and rope_theta %g must be positive and finite", c.NormEps, c.RopeTheta)
	case c.Dim > 1<<20 || c.FFN > 1<<22 || c.Vocab > 1<<24 || c.Layers > 1<<12 || c.MaxSeq > 1<<24:
		return bad("implausibly large: %+v", c)
	}
	return nil
}

// The LLaMA 2 presets, from the paper and Meta's params.json.
var (
	Llama2_7B  = Config{Name: "llama-2-7b", Dim: 4096, Layers: 32, Heads: 32, KVHeads: 32, FFN: 11008, Vocab: 32000, MaxSeq: 4096, NormEps: 1e-5, RopeTheta: 10000}
	Llama2_13B = Config{Name: "llama-2-13b", Dim: 5120, Layers: 40, Heads: 40, KVHeads: 40, FFN: 13824, Vocab: 32000, MaxSeq: 4096, NormEps: 1e-5, RopeTheta: 10000}
	Llama2_70B = Config{Name: "llama-2-70b", Dim: 8192, Layers: 80, Heads: 64, KVHeads: 8, FFN: 28672, Vocab: 32000, MaxSeq: 4096, NormEps: 1e-5, RopeTheta: 10000}
	// Tiny is the built-in synthetic model: the real architecture (GQA 2:1, SwiGLU, RoPE), small.
	Tiny = Config{Name: "llama-tiny-synthetic", Dim: 128, Layers: 4, Heads: 8, KVHeads: 4, FFN: 352, Vocab: 512, MaxSeq: 512, NormEps: 1e-5, RopeTheta: 10000}
	// Tiny256 is Tiny with every matrix row whole 256-element k-quant blocks (Q4_K, Q5_K,
	// Q6_K), the shape of loader/testdata/kquant's files: for quick runs in those dtypes.
	Tiny256 = Config{Name: "llama-tiny256-synthetic", Dim: 256, Layers: 2, Heads: 4, KVHeads: 2, FFN: 768, Vocab: 512, MaxSeq: 512, NormEps: 1e-5, RopeTheta: 10000}
	// Bench110M is a ~110M-parameter shape (llama2.c's stories110M) for CPU benchmarks.
	Bench110M = Config{Name: "llama-110m-synthetic", Dim: 768, Layers: 12, Heads: 12, KVHeads: 12, FFN: 2048, Vocab: 32000, MaxSeq: 1024, NormEps: 1e-5, RopeTheta: 10000}
)

// Preset returns a named configuration: "7b", "13b", "70b", "tiny", "110m" (case-insensitive,
// with or without a "llama-2-" prefix).
func Preset(name string) (Config, error) {
	n := strings.TrimPrefix(strings.TrimPrefix(strings.ToLower(name), "llama-2-"), "llama2-")
	switch n {
	case "7b":
		return Llama2_7B, nil
	case "13b":
		return Llama2_13B, nil
	case "70b":
		return Llama2_70B, nil
	case "tiny":
		return Tiny, nil
	case "110m":
		return Bench110M, nil
	case "tiny256":
		return Tiny256, nil
	}
	return Config{}, fmt.Errorf("%w: unknown preset %q (want 7b, 13b, 70b, tiny, tiny256 or 110m)", ErrBadConfig, name)
}

// hfConfig is the subset of a Hugging Face LlamaConfig that matters.
type hfConfig struct {
	ModelType         string   `json:"model_type"`
	Architectures     []string `json:"architectures"`
	HiddenSize        int      `json:"hidden_size"`
	IntermediateSize  int      `json:"intermediate_size"`
	NumHiddenLayers   int      `json:"num_hidden_layers"`
	NumAttentionHeads int      `json:"num_attention_heads"`
	NumKeyValueHeads  int      `json:"num_key_value_heads"`
	VocabSize         int      `json:"vocab_size"`
	MaxPositionEmbed  int      `json:"max_position_embeddings"`
	RMSNormEps        float64  `json:"rms_norm_eps"`
	RopeTheta         float64  `json:"rope_theta"`
	TieWordEmbeddings bool     `json:"tie_word_embeddings"`
	HeadDim           int      `json:"head_dim"`
	RopeScaling       any      `json:"rope_scaling"`
}

// FromHFConfig reads a Hugging Face config.json (LlamaForCausalLM). Missing num_key_value_heads
// means MHA; missing rope_theta means 10000; missing rms_norm_eps means 1e-6 (the HF default).
func FromHFConfig(data []byte) (Config, error) {
	var h hfConfig
	if err := json.Unmarshal(data, &h); err != nil {
		return Config{}, fmt.Errorf("%w: config.json: %v", ErrBadConfig, err)
	}
	if h.ModelType != "" && h.ModelType != "llama" {
		return Config{}, fmt.Errorf("%w: config.json: model_type %q is not llama", ErrBadConfig, h.ModelType)
	}
	if h.RopeScaling != nil {
		return Config{}, fmt.Errorf("%w: config.json: rope_scaling is not supported (LLaMA 2 uses none)", ErrBadConfig)
	}
	c := Config{
		Name: "hf-llama", Dim: h.HiddenSize, Layers: h.NumHiddenLayers, Heads: h.NumAttentionHeads,
		KVHeads: h.NumKeyValueHeads, FFN: h.IntermediateSize, Vocab: h.VocabSize, MaxSeq: h.MaxPositionEmbed,
		NormEps: float32(h.RMSNormEps), RopeTheta: float32(h.RopeTheta), TiedOutput: h.TieWordEmbeddings,
	}
	if c.KVHeads == 0 {
		c.KVHeads = c.Heads
	}
	// Defaults apply to absent keys (0 as decoded), not to values that round to 0 in float32.
	if h.RopeTheta == 0 {
		c.RopeTheta = 10000
	}
	if h.RMSNormEps == 0 {
		c.NormEps = 1e-6
	}
	if c.MaxSeq == 0 {
		c.MaxSeq = 2048
	}
	if h.HeadDim != 0 && c.Heads > 0 && h.HeadDim*c.Heads != c.Dim {
		return Config{}, fmt.Errorf("%w: config.json: head_dim %d × %d heads ≠ hidden_size %d", ErrBadConfig, h.HeadDim, c.Heads, c.Dim)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config.json: %w", err)
	}
	return c, nil
}

// ParamCount is the number of parameters (the LM head counted once when tied).
func (c Config) ParamCount() int64 {
	d, f, kv := int64(c.Dim), int64(c.FFN), int64(c.KVDim())
	perLayer := d*d*2 + d*kv*2 + 3*d*f + 2*d // wq wo, wk wv, w1 w2 w3, two norms
	n := int64(c.Vocab)*d + int64(c.Layers)*perLayer + d
	if !c.TiedOutput {
		n += int64(c.Vocab) * d
	}
	return n
}

// WeightBytes is the storage of all weights with matrices in dtype and norms in fp32 (as GGUF and
// the backends keep them).
func (c Config) WeightBytes(dtype tensor.DType) int64 {
	norms := int64(c.Layers*2+1) * int64(c.Dim)
	matrices := c.ParamCount() - norms
	mb, err := dtype.Bytes(matrices - matrices%int64(dtype.BlockSize()))
	if err != nil {
		return 0
	}
	return mb + norms*4
}

// KVBytesPerToken is the K and V cache of one token over all layers, elements of elemBytes bytes.
func (c Config) KVBytesPerToken(elemBytes int) int64 {
	return int64(2*c.Layers*c.KVDim()) * int64(elemBytes)
}
