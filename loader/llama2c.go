package loader

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// The llama2.c legacy checkpoint (karpathy/llama2.c export.py legacy_export, read by run.c):
//
//	7 × int32: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//	fp32 arrays, row-major, in this order:
//	  token_embedding_table (vocab, dim)
//	  rms_att_weight (layers, dim)
//	  wq (layers, dim, dim)          wk (layers, kv_dim, dim)
//	  wv (layers, kv_dim, dim)       wo (layers, dim, dim)
//	  rms_ffn_weight (layers, dim)
//	  w1 (layers, hidden, dim)       w2 (layers, dim, hidden)       w3 (layers, hidden, dim)
//	  rms_final_weight (dim)
//	  freq_cis_real (seq_len, head_size/2)   freq_cis_imag (seq_len, head_size/2)   — skipped
//	  wcls (vocab, dim)              — only when vocab_size < 0 (unshared classifier)
//
// A negative vocab_size means the classifier is stored separately; its absolute value is the
// vocabulary size. The wq/wk rows are in Meta's interleaved RoPE order already. The file must end
// exactly after the last array.
//
// The newer llama2.c exports ("version 1" fp32 and "version 2" int8, export.py --version 1/2),
// which start with the magic 0x616b3432 ("ak42") and a 256-byte header, are not supported yet:
// they are rejected with ErrFormat.

const (
	l2cHeaderBytes = 7 * 4
	l2cMagicV1     = 0x616b3432 // "ak42" as a little-endian uint32
)

// openLlama2C memory-maps a llama2.c legacy checkpoint; its tensors alias the mapping.
func openLlama2C(path string) (*Model, error) {
	m, err := openMapped(path, llama2cModel)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	for _, name := range []string{"tokenizer.model", "tokenizer.bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			m.TokenizerPath = p
			break
		}
	}
	return m, nil
}

// l2cArray is one of the file's fp32 arrays: stacked over layers (layers > 0) or not.
type l2cArray struct {
	file   string // llama2.c's name for the array
	canon  string // canonical (per-layer) name, or "" for a skipped array
	layers int    // 0: one tensor; n: n stacked per-layer tensors
	shape  []int  // the shape of one tensor (one layer's slice)
	skip   string // why a skipped array is skipped
}

// llama2cModel builds a checked Model from a llama2.c legacy checkpoint held in data; the
// tensors alias data.
func llama2cModel(data []byte, path string) (*Model, error) {
	bad := func(sentinel error, format string, a ...any) error {
		return &TensorError{Path: path, Err: fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, a...))}
	}
	if len(data) >= 4 && binary.LittleEndian.Uint32(data) == l2cMagicV1 {
		return nil, bad(ErrFormat, `a llama2.c version 1/2 export (magic "ak42") is not supported yet; export the model with export.py --version 0 (legacy)`)
	}
	if len(data) < l2cHeaderBytes {
		return nil, bad(ErrTruncated, "a llama2.c checkpoint starts with a %d-byte header, the file has %d bytes", l2cHeaderBytes, len(data))
	}
	var h [7]int32
	for i := range h {
		h[i] = int32(binary.LittleEndian.Uint32(data[4*i:]))
	}
	dim, hidden, layers, heads, kvHeads, vocab, seqLen := h[0], h[1], h[2], h[3], h[4], h[5], h[6]
	shared := vocab > 0
	if vocab < 0 {
		vocab = -vocab // math.MinInt32 stays negative and is rejected below
	}
	cfg := model.Config{
		Name: strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)),
		Dim:  int(dim), Layers: int(layers), Heads: int(heads), KVHeads: int(kvHeads), FFN: int(hidden),
		Vocab: int(vocab), MaxSeq: int(seqLen), NormEps: 1e-5, RopeTheta: 10000, TiedOutput: shared,
	}
	if err := cfg.Validate(); err != nil {
		return nil, bad(ErrCorrupt, "llama2.c header (dim %d, hidden_dim %d, n_layers %d, n_heads %d, n_kv_heads %d, vocab_size %d, seq_len %d) is out of range: %v; "+
			"is this really a llama2.c legacy checkpoint?", h[0], h[1], h[2], h[3], h[4], h[5], h[6], err)
	}
	// Validate bounds every size, so no product below overflows int64.
	d, f, kv, L := cfg.Dim, cfg.FFN, cfg.KVDim(), cfg.Layers
	half := cfg.HeadDim() / 2
	arrays := []l2cArray{
		{file: "token_embedding_table", canon: model.NameTokEmbed, shape: []int{cfg.Vocab, d}},
		{file: "rms_att_weight", canon: model.NameAttnNorm, layers: L, shape: []int{d}},
		{file: "wq", canon: model.NameWq, layers: L, shape: []int{d, d}},
		{file: "wk", canon: model.NameWk, layers: L, shape: []int{kv, d}},
		{file: "wv", canon: model.NameWv, layers: L, shape: []int{kv, d}},
		{file: "wo", canon: model.NameWo, layers: L, shape: []int{d, d}},
		{file: "rms_ffn_weight", canon: model.NameFFNNorm, layers: L, shape: []int{d}},
		{file: "w1", canon: model.NameW1, layers: L, shape: []int{f, d}},
		{file: "w2", canon: model.NameW2, layers: L, shape: []int{d, f}},
		{file: "w3", canon: model.NameW3, layers: L, shape: []int{f, d}},
		{file: "rms_final_weight", canon: model.NameNorm, shape: []int{d}},
		{file: "freq_cis_real", shape: []int{cfg.MaxSeq, half}, skip: "legacy RoPE table, recomputed from rope_theta"},
		{file: "freq_cis_imag", shape: []int{cfg.MaxSeq, half}, skip: "legacy RoPE table, recomputed from rope_theta"},
	}
	if !shared {
		arrays = append(arrays, l2cArray{file: "wcls", canon: model.NameOutput, shape: []int{cfg.Vocab, d}})
	}

	m := &Model{Path: path, Format: FormatLlama2C, Config: cfg, Tensors: map[string]*tensor.Tensor{}}
	off := int64(l2cHeaderBytes)
	for _, a := range arrays {
		elems := int64(1)
		for _, s := range a.shape {
			elems *= int64(s)
		}
		size := elems * 4
		n := max(a.layers, 1)
		for l := range n {
			name := a.canon
			if a.layers > 0 {
				name = model.LayerName(l, a.canon)
			} else if a.canon == "" {
				name = a.file
			}
			if end := off + size; end > int64(len(data)) {
				where := fmt.Sprintf("llama2.c array %s %v", a.file, a.shape)
				if a.layers > 0 {
					where = fmt.Sprintf("layer %d of llama2.c array %s (%d layers of %v)", l, a.file, a.layers, a.shape)
				}
				return nil, &TensorError{Path: path, Tensor: name, Err: fmt.Errorf(
					"%w: %s needs bytes [%d, %d), the file has %d", ErrTruncated, where, off, end, len(data))}
			}
			if a.canon != "" {
				m.Tensors[name] = &tensor.Tensor{Name: name, DType: tensor.F32, Shape: slices.Clone(a.shape), Data: data[off : off+size : off+size]}
			}
			off += size
		}
		if a.canon == "" {
			m.Skipped = append(m.Skipped, fmt.Sprintf("%s %v: %s", a.file, a.shape, a.skip))
		}
	}
	if extra := int64(len(data)) - off; extra > 0 {
		return nil, bad(ErrCorrupt, "%d bytes follow the last llama2.c array (the header implies a %d-byte file); a wrong header, or not a llama2.c legacy checkpoint", extra, off)
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return m, nil
}
