package loader

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// ExportOptions controls ExportHF.
type ExportOptions struct {
	// DType is the storage type of every tensor: tensor.F32 (the zero value), F16 or BF16.
	// Tensors of another dtype (Q8_0 from a GGUF...) are decoded to fp32 and re-encoded.
	DType tensor.DType
	// Shards is the number of safetensors files; 0 or 1 writes one model.safetensors, more writes
	// model-0000k-of-0000N.safetensors and model.safetensors.index.json.
	Shards int
	// UntieOutput writes lm_head.weight (a copy of the embedding) and tie_word_embeddings false
	// even when the config ties the LM head, for tools that expect lm_head.weight.
	UntieOutput bool
	// TokenizerModel, if not "", is a SentencePiece tokenizer.model copied into the folder.
	TokenizerModel string
}

// ExportHF writes a model as a Hugging Face folder that transformers' LlamaForCausalLM and openHF
// both read: config.json, the weights under HF names (wq and wk rows permuted to HF's rotate-half
// order) in one or opts.Shards safetensors files, and optionally tokenizer.model.
//
// tensors holds the canonical weights (model.WeightShapes of cfg, Meta RoPE order) in any dtype
// tensor.Decode reads. The output is deterministic: tensors in sorted name order, headers JSON
// with sorted keys padded with spaces to a multiple of 8 bytes so each data section is aligned.
// dir is created if needed; ExportHF refuses to overwrite an existing export in it.
func ExportHF(dir string, cfg model.Config, tensors map[string]*tensor.Tensor, opts ExportOptions) error {
	fail := func(err error) error { return fmt.Errorf("loader: export %s: %w", dir, err) }
	dtypeName, err := stDTypeName(opts.DType)
	if err != nil {
		return fail(err)
	}
	nShards := max(opts.Shards, 1)
	if opts.Shards < 0 {
		return fail(fmt.Errorf("shards must be ≥ 0, not %d", opts.Shards))
	}
	in := &Model{Path: "export to " + dir, Config: cfg, Tensors: tensors}
	if err := in.check(); err != nil {
		return err // "loader: export to DIR: tensor ...: ..."
	}

	// What to write, under HF names.
	type item struct {
		hf    string
		src   *tensor.Tensor
		heads int   // > 0: permute rows Meta → HF with this many heads
		size  int64 // bytes in the output dtype
	}
	var items []item
	add := func(hf string, src *tensor.Tensor, heads int) {
		size, _ := opts.DType.Bytes(src.NumElements()) // F32/F16/BF16 take any count
		items = append(items, item{hf, src, heads, size})
	}
	add(hfEmbed, tensors[model.NameTokEmbed], 0)
	add(hfNorm, tensors[model.NameNorm], 0)
	tied := cfg.TiedOutput && !opts.UntieOutput
	switch {
	case !cfg.TiedOutput:
		add(hfLMHead, tensors[model.NameOutput], 0)
	case opts.UntieOutput:
		add(hfLMHead, tensors[model.NameTokEmbed], 0)
	}
	for l := 0; l < cfg.Layers; l++ {
		for _, p := range hfLayerNames {
			heads := 0
			switch p.canon {
			case model.NameWq:
				heads = cfg.Heads
			case model.NameWk:
				heads = cfg.KVHeads
			}
			add(hfLayerName(l, p.canon), tensors[model.LayerName(l, p.canon)], heads)
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].hf < items[j].hf })
	if nShards > len(items) {
		return fail(fmt.Errorf("%d shards for %d tensors", nShards, len(items)))
	}

	// Split the sorted list into nShards contiguous, non-empty runs of about equal bytes: start a
	// new shard when the next tensor's midpoint passes the current shard's share of the total, or
	// when only as many tensors are left as shards still to fill.
	var total int64
	for _, it := range items {
		total += it.size
	}
	shardOf := make([]int, len(items))
	shard, inShard, cum := 0, 0, int64(0)
	for i, it := range items {
		if shard < nShards-1 && inShard > 0 &&
			(len(items)-i <= nShards-1-shard || (2*cum+it.size)*int64(nShards) > 2*total*int64(shard+1)) {
			shard, inShard = shard+1, 0
		}
		shardOf[i] = shard
		inShard++
		cum += it.size
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(err)
	}
	for _, name := range []string{hfConfigName, hfSingleName, hfIndexName} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return fail(fmt.Errorf("%s already exists; refusing to overwrite an export: %w", name, fs.ErrExist))
		}
	}

	shardName := func(k int) string {
		if nShards == 1 {
			return hfSingleName
		}
		return fmt.Sprintf("model-%05d-of-%05d.safetensors", k+1, nShards)
	}
	weightMap := map[string]string{}
	for k := 0; k < nShards; k++ {
		var mine []item
		for i, it := range items {
			if shardOf[i] == k {
				mine = append(mine, it)
				weightMap[it.hf] = shardName(k)
			}
		}
		entries := make([]stExportEntry, len(mine))
		var off int64
		for i, it := range mine {
			entries[i] = stExportEntry{Name: it.hf, DType: dtypeName, Shape: it.src.Shape, Begin: off, End: off + it.size}
			off += it.size
		}
		path := filepath.Join(dir, shardName(k))
		err := writeSafetensors(path, entries, map[string]string{"format": "pt"}, func(w io.Writer, i int) error {
			it := mine[i]
			var data []byte
			if it.src.DType == opts.DType {
				data = it.src.Data
			} else {
				data = tensor.Encode(opts.DType, it.src.Float32s())
			}
			if it.heads > 0 {
				data = permuteRoPERows(data, it.src.Shape[0], it.heads, true)
			}
			_, err := w.Write(data)
			return err
		})
		if err != nil {
			return fail(err)
		}
	}
	if nShards > 1 {
		idx := struct {
			Metadata  map[string]int64  `json:"metadata"`
			WeightMap map[string]string `json:"weight_map"`
		}{map[string]int64{"total_size": total}, weightMap}
		if err := writeJSON(filepath.Join(dir, hfIndexName), idx); err != nil {
			return fail(err)
		}
	}

	torchDType := map[tensor.DType]string{tensor.F32: "float32", tensor.F16: "float16", tensor.BF16: "bfloat16"}[opts.DType]
	if err := writeJSON(filepath.Join(dir, hfConfigName), newHFConfigOut(cfg, tied, torchDType)); err != nil {
		return fail(err)
	}
	if opts.TokenizerModel != "" {
		if err := copyFile(filepath.Join(dir, hfTokenizerName), opts.TokenizerModel); err != nil {
			return fail(err)
		}
	}
	return nil
}

// hfConfigOut is the config.json ExportHF writes, in transformers' LlamaConfig field names.
type hfConfigOut struct {
	Architectures         []string    `json:"architectures"`
	ModelType             string      `json:"model_type"`
	HiddenSize            int         `json:"hidden_size"`
	IntermediateSize      int         `json:"intermediate_size"`
	NumHiddenLayers       int         `json:"num_hidden_layers"`
	NumAttentionHeads     int         `json:"num_attention_heads"`
	NumKeyValueHeads      int         `json:"num_key_value_heads"`
	HeadDim               int         `json:"head_dim"`
	VocabSize             int         `json:"vocab_size"`
	MaxPositionEmbeddings int         `json:"max_position_embeddings"`
	RMSNormEps            json.Number `json:"rms_norm_eps"`
	RopeTheta             json.Number `json:"rope_theta"`
	RopeScaling           *struct{}   `json:"rope_scaling"` // always null
	TieWordEmbeddings     bool        `json:"tie_word_embeddings"`
	TorchDType            string      `json:"torch_dtype"`
	HiddenAct             string      `json:"hidden_act"`
	AttentionBias         bool        `json:"attention_bias"`
	MLPBias               bool        `json:"mlp_bias"`
	BOSTokenID            int         `json:"bos_token_id"`
	EOSTokenID            int         `json:"eos_token_id"`
	InitializerRange      float64     `json:"initializer_range"`
	PretrainingTP         int         `json:"pretraining_tp"`
	UseCache              bool        `json:"use_cache"`
}

func newHFConfigOut(c model.Config, tied bool, torchDType string) hfConfigOut {
	// The shortest decimal that reads back as the same float32 (1e-05, not 9.999999747378752e-06).
	f32 := func(x float32) json.Number { return json.Number(strconv.FormatFloat(float64(x), 'g', -1, 32)) }
	return hfConfigOut{
		Architectures: []string{"LlamaForCausalLM"}, ModelType: "llama",
		HiddenSize: c.Dim, IntermediateSize: c.FFN, NumHiddenLayers: c.Layers,
		NumAttentionHeads: c.Heads, NumKeyValueHeads: c.KVHeads, HeadDim: c.HeadDim(),
		VocabSize: c.Vocab, MaxPositionEmbeddings: c.MaxSeq,
		RMSNormEps: f32(c.NormEps), RopeTheta: f32(c.RopeTheta), TieWordEmbeddings: tied,
		TorchDType: torchDType, HiddenAct: "silu",
		BOSTokenID: 1, EOSTokenID: 2, // the LLaMA SentencePiece convention
		InitializerRange: 0.02, PretrainingTP: 1, UseCache: true,
	}
}

// stExportEntry is one tensor of a safetensors file being written.
type stExportEntry struct {
	Name       string
	DType      string
	Shape      []int
	Begin, End int64 // offsets in the data section
}

// encodeSafetensorsHeader returns the 8-byte length and the JSON header (keys sorted, padded with
// spaces to a multiple of 8 bytes, as the format allows) for entries.
func encodeSafetensorsHeader(entries []stExportEntry, metadata map[string]string) []byte {
	type rec struct {
		DType       string  `json:"dtype"`
		Shape       []int   `json:"shape"`
		DataOffsets []int64 `json:"data_offsets"`
	}
	h := make(map[string]any, len(entries)+1)
	if metadata != nil {
		h[stMetadataKey] = metadata
	}
	for _, e := range entries {
		shape := e.Shape
		if shape == nil {
			shape = []int{}
		}
		h[e.Name] = rec{e.DType, shape, []int64{e.Begin, e.End}}
	}
	js, err := json.Marshal(h) // encoding/json sorts map keys
	if err != nil {
		panic("loader: safetensors header: " + err.Error()) // only plain values above
	}
	for len(js)%8 != 0 {
		js = append(js, ' ')
	}
	out := make([]byte, 8, 8+len(js))
	binary.LittleEndian.PutUint64(out, uint64(len(js)))
	return append(out, js...)
}

// writeSafetensors writes a safetensors file: the header for entries, then write(w, i) for each
// entry in order, which must write exactly End-Begin bytes.
func writeSafetensors(path string, entries []stExportEntry, metadata map[string]string, write func(w io.Writer, i int) error) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if _, err := bw.Write(encodeSafetensorsHeader(entries, metadata)); err != nil {
		return err
	}
	for i, e := range entries {
		cw := &countingWriter{w: bw}
		if err := write(cw, i); err != nil {
			return fmt.Errorf("%s: tensor %q: %w", path, e.Name, err)
		}
		if cw.n != e.End-e.Begin {
			return fmt.Errorf("%s: tensor %q: wrote %d bytes, the header says %d", path, e.Name, cw.n, e.End-e.Begin)
		}
	}
	return bw.Flush()
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func writeJSON(path string, v any) error {
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(js, '\n'), 0o644)
}

func copyFile(dst, src string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer func() {
		err = errors.Join(err, out.Close())
	}()
	_, err = io.Copy(out, in)
	return err
}
