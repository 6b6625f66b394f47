package loader

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// File names in a Hugging Face model folder.
const (
	hfConfigName    = "config.json"
	hfSingleName    = "model.safetensors"
	hfIndexName     = "model.safetensors.index.json"
	hfTokenizerName = "tokenizer.model"
	hfLMHead        = "lm_head.weight"
	hfEmbed         = "model.embed_tokens.weight"
	hfNorm          = "model.norm.weight"
	hfLayerPrefix   = "model.layers."
)

// hfLayerNames pairs each per-layer canonical name with its Hugging Face suffix
// ("model.layers.{l}." + hf). w1 is the gate, w2 the down and w3 the up projection.
var hfLayerNames = [...]struct{ canon, hf string }{
	{model.NameAttnNorm, "input_layernorm.weight"},
	{model.NameWq, "self_attn.q_proj.weight"},
	{model.NameWk, "self_attn.k_proj.weight"},
	{model.NameWv, "self_attn.v_proj.weight"},
	{model.NameWo, "self_attn.o_proj.weight"},
	{model.NameFFNNorm, "post_attention_layernorm.weight"},
	{model.NameW1, "mlp.gate_proj.weight"},
	{model.NameW2, "mlp.down_proj.weight"},
	{model.NameW3, "mlp.up_proj.weight"},
}

// hfInvFreq is the per-layer RoPE frequency buffer older transformers versions saved.
const hfInvFreq = "self_attn.rotary_emb.inv_freq"

// hfCanonicalName maps a Hugging Face tensor name to its canonical name, or returns a reason to
// skip it, or neither ("", "") for a name llamacu does not know.
func hfCanonicalName(name string) (canon, skip string) {
	switch name {
	case hfEmbed:
		return model.NameTokEmbed, ""
	case hfNorm:
		return model.NameNorm, ""
	case hfLMHead:
		return model.NameOutput, ""
	}
	rest, ok := strings.CutPrefix(name, hfLayerPrefix)
	if !ok {
		return "", ""
	}
	num, suffix, ok := strings.Cut(rest, ".")
	if !ok {
		return "", ""
	}
	l, err := strconv.Atoi(num)
	if err != nil || l < 0 || strconv.Itoa(l) != num { // no signs, no leading zeros
		return "", ""
	}
	if suffix == hfInvFreq {
		return "", name + ": RoPE frequencies are recomputed from rope_theta"
	}
	for _, p := range hfLayerNames {
		if p.hf == suffix {
			return model.LayerName(l, p.canon), ""
		}
	}
	return "", ""
}

// hfLayerName is the Hugging Face name of a per-layer weight (canon one of model.Name*).
func hfLayerName(l int, canon string) string {
	for _, p := range hfLayerNames {
		if p.canon == canon {
			return hfLayerPrefix + strconv.Itoa(l) + "." + p.hf
		}
	}
	panic("loader: no Hugging Face name for " + canon)
}

// permuteRoPERows converts the rows of a Q or K projection between Meta's interleaved RoPE order
// and Hugging Face's rotate-half order, returning a new slice (src is untouched).
//
// HF's convert_llama_weights_to_hf.py stores
//
//	permute(w, n_heads) = w.view(n_heads, hd/2, 2, in).transpose(1, 2).reshape(n_heads·hd, in)
//
// so within head h, for i < hd/2 and j ∈ {0, 1}:
//
//	HF row  h·hd + j·hd/2 + i  =  Meta row  h·hd + 2i + j
//
// i.e. Meta's interleaved pair (2i, 2i+1) becomes HF's rotate-half pair (i, i + hd/2). toHF picks
// the direction. Rows are moved whole, so the permutation does not depend on the dtype. src holds
// rows equal rows of len(src)/rows bytes; rows must be a multiple of heads with an even head_dim
// (a programmer error otherwise: callers check shapes first).
func permuteRoPERows(src []byte, rows, heads int, toHF bool) []byte {
	if heads <= 0 || rows%heads != 0 || (rows/heads)%2 != 0 || rows == 0 || len(src)%rows != 0 {
		panic(fmt.Sprintf("loader: permuteRoPERows: %d bytes, %d rows, %d heads", len(src), rows, heads))
	}
	hd, rb := rows/heads, len(src)/rows
	half := hd / 2
	dst := make([]byte, len(src))
	for h := 0; h < heads; h++ {
		for i := 0; i < half; i++ {
			for j := 0; j < 2; j++ {
				meta, hf := h*hd+2*i+j, h*hd+j*half+i
				from, to := hf, meta
				if toHF {
					from, to = meta, hf
				}
				copy(dst[to*rb:(to+1)*rb], src[from*rb:(from+1)*rb])
			}
		}
	}
	return dst
}

// hfIndex is model.safetensors.index.json.
type hfIndex struct {
	Metadata  map[string]any    `json:"metadata"`
	WeightMap map[string]string `json:"weight_map"` // HF tensor name → shard file name
}

// readHFIndex reads and sanity-checks a safetensors index: a non-empty weight_map whose shard
// names are plain file names in the same folder.
func readHFIndex(path string) (*hfIndex, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loader: %w", err)
	}
	var idx hfIndex
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, &TensorError{Path: path, Err: fmt.Errorf("%w: not a valid safetensors index: %v", ErrCorrupt, err)}
	}
	if len(idx.WeightMap) == 0 {
		return nil, &TensorError{Path: path, Err: fmt.Errorf("%w: weight_map is missing or empty", ErrCorrupt)}
	}
	for _, name := range sortedKeys(idx.WeightMap) {
		shard := idx.WeightMap[name]
		if shard == "" || shard == "." || shard == ".." || strings.ContainsAny(shard, `/\`) {
			return nil, &TensorError{Path: path, Tensor: name, Err: fmt.Errorf("%w: shard %q must be a file name in the same folder", ErrCorrupt, shard)}
		}
	}
	return &idx, nil
}

// openHF opens a Hugging Face model folder: config.json (LlamaForCausalLM) and either one
// model.safetensors or a model.safetensors.index.json whose weight_map names the shards
// (model-00001-of-0000N.safetensors ...). As transformers does, a single model.safetensors is
// preferred when both are present. tokenizer.model, if present, becomes TokenizerPath.
func openHF(dir string) (*Model, error) {
	single := filepath.Join(dir, hfSingleName)
	if st, err := os.Stat(single); err == nil && !st.IsDir() {
		return openHFWeights(dir, []string{hfSingleName}, nil, dir)
	}
	indexPath := filepath.Join(dir, hfIndexName)
	if _, err := os.Stat(indexPath); err != nil {
		if _, cerr := os.Stat(filepath.Join(dir, hfConfigName)); cerr != nil {
			return nil, &TensorError{Path: dir, Err: fmt.Errorf("%w: not a Hugging Face model folder: no %s and no %s", ErrFormat, hfConfigName, hfSingleName)}
		}
		return nil, &TensorError{Path: dir, Err: fmt.Errorf("%w: a Hugging Face folder needs %s or %s (%w)", ErrFormat, hfSingleName, hfIndexName, fs.ErrNotExist)}
	}
	idx, err := readHFIndex(indexPath)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var shards []string
	for _, s := range idx.WeightMap {
		if !seen[s] {
			seen[s] = true
			shards = append(shards, s)
		}
	}
	sort.Strings(shards)
	return openHFWeights(dir, shards, idx.WeightMap, dir)
}

// openHFWeights reads config.json from dir and the safetensors files shards (names in dir).
// weightMap, when not nil, is the index: every tensor it lists must be in the shard it names and
// every tensor of a shard must be listed there. modelPath becomes Model.Path.
//
// The LM head: lm_head.weight absent means a tied output whatever tie_word_embeddings says. When
// tie_word_embeddings is true but lm_head.weight is stored anyway, it is dropped (and listed in
// Skipped) if its bytes equal the embedding's; otherwise the file is honoured and the model is
// loaded untied. (transformers would use the embedding in that last case; a stored, different LM
// head more likely means a wrong flag than a tensor to be thrown away.)
func openHFWeights(dir string, shards []string, weightMap map[string]string, modelPath string) (m *Model, err error) {
	cfgPath := filepath.Join(dir, hfConfigName)
	cfgData, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, &TensorError{Path: cfgPath, Err: fmt.Errorf("%w: a Hugging Face folder needs %s: %w", ErrFormat, hfConfigName, err)}
	}
	cfg, err := model.FromHFConfig(cfgData)
	if err != nil {
		return nil, &TensorError{Path: cfgPath, Err: fmt.Errorf("%w: %w", ErrCorrupt, err)}
	}
	m = &Model{Path: modelPath, Format: FormatSafetensors, Config: cfg, Tensors: map[string]*tensor.Tensor{}}
	opened := m // the error returns below set m to nil before this runs
	defer func() {
		if err != nil {
			opened.Close()
		}
	}()

	// Read every shard; file holds each HF tensor's shard path.
	byShard := map[string][]string{} // shard → tensors the index puts there (sorted)
	for _, name := range sortedKeys(weightMap) {
		byShard[weightMap[name]] = append(byShard[weightMap[name]], name)
	}
	hfTensors := map[string]*tensor.Tensor{}
	file := map[string]string{}
	for _, shard := range shards {
		path := filepath.Join(dir, shard)
		if _, serr := os.Stat(path); serr != nil && weightMap != nil {
			return nil, &TensorError{Path: path, Tensor: byShard[shard][0], Err: fmt.Errorf("%w: %s puts %d tensors in this shard, which cannot be read: %w", ErrMissing, hfIndexName, len(byShard[shard]), serr)}
		}
		f, unmap, err := mapSafetensors(path)
		if err != nil {
			return nil, err
		}
		m.closers = append(m.closers, unmap)
		for _, name := range sortedKeys(f.Tensors) {
			if weightMap != nil && weightMap[name] != shard {
				why := "does not list it"
				if other, ok := weightMap[name]; ok {
					why = "puts it in " + other
				}
				return nil, &TensorError{Path: path, Tensor: name, Err: fmt.Errorf("%w: the shard holds the tensor but %s %s", ErrCorrupt, hfIndexName, why)}
			}
			if prev, dup := file[name]; dup { // only possible without an index
				return nil, &TensorError{Path: path, Tensor: name, Err: fmt.Errorf("%w: tensor also stored in %s", ErrCorrupt, prev)}
			}
			hfTensors[name] = f.Tensors[name]
			file[name] = path
		}
	}
	for _, name := range sortedKeys(weightMap) {
		if _, ok := hfTensors[name]; !ok {
			return nil, &TensorError{Path: filepath.Join(dir, weightMap[name]), Tensor: name, Err: fmt.Errorf("%w: %s puts it in this shard, which does not hold it", ErrMissing, hfIndexName)}
		}
	}

	// Canonical names.
	var unknown []string
	for _, name := range sortedKeys(hfTensors) {
		canon, skip := hfCanonicalName(name)
		switch {
		case skip != "":
			m.Skipped = append(m.Skipped, skip)
		case canon == "":
			unknown = append(unknown, name)
		default:
			t := *hfTensors[name]
			t.Name = canon
			m.Tensors[canon] = &t
		}
	}
	if len(unknown) > 0 {
		return nil, &TensorError{Path: file[unknown[0]], Tensor: unknown[0], Err: fmt.Errorf("%w: not a LLaMA weight name: %s", ErrUnused, strings.Join(unknown, ", "))}
	}

	// LM head (see the doc comment).
	out, hasOut := m.Tensors[model.NameOutput]
	switch {
	case !hasOut:
		m.Config.TiedOutput = true
	case m.Config.TiedOutput:
		if emb, ok := m.Tensors[model.NameTokEmbed]; ok && emb.DType == out.DType && slices.Equal(emb.Shape, out.Shape) && bytes.Equal(emb.Data, out.Data) {
			delete(m.Tensors, model.NameOutput)
			m.Skipped = append(m.Skipped, hfLMHead+": tie_word_embeddings is true and it equals "+hfEmbed)
		} else {
			m.Config.TiedOutput = false
		}
	}

	// RoPE: HF rotate-half rows back to Meta's interleaved order. A tensor of the wrong shape is
	// left alone for check to report.
	hd := m.Config.HeadDim()
	for l := 0; l < m.Config.Layers; l++ {
		for _, qk := range []struct {
			name  string
			heads int
		}{{model.NameWq, m.Config.Heads}, {model.NameWk, m.Config.KVHeads}} {
			t, ok := m.Tensors[model.LayerName(l, qk.name)]
			if !ok || len(t.Shape) != 2 || t.Shape[0] != qk.heads*hd || t.Validate() != nil {
				continue
			}
			t.Data = permuteRoPERows(t.Data, t.Shape[0], qk.heads, false)
		}
	}

	if st, err := os.Stat(filepath.Join(dir, hfTokenizerName)); err == nil && st.Mode().IsRegular() {
		m.TokenizerPath = filepath.Join(dir, hfTokenizerName)
	}
	if err := m.check(); err != nil {
		var te *TensorError
		if errors.As(err, &te) && te.Tensor != "" {
			// Name the file that holds (or should hold) the tensor, not just the folder.
			if hf := hfNameOf(te.Tensor); file[hf] != "" {
				te.Path = file[hf]
			} else if hf != "" && errors.Is(te.Err, ErrMissing) {
				te.Err = fmt.Errorf("%w: no %s in the safetensors files", te.Err, hf)
			}
		}
		return nil, err
	}
	return m, nil
}

// hfNameOf is the Hugging Face name of a canonical name, or "" if it has none.
func hfNameOf(canon string) string {
	switch canon {
	case model.NameTokEmbed:
		return hfEmbed
	case model.NameNorm:
		return hfNorm
	case model.NameOutput:
		return hfLMHead
	}
	rest, ok := strings.CutPrefix(canon, "layers.")
	if !ok {
		return ""
	}
	num, suffix, ok := strings.Cut(rest, ".")
	if !ok {
		return ""
	}
	for _, p := range hfLayerNames {
		if p.canon == suffix {
			return hfLayerPrefix + num + "." + p.hf
		}
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
