package model

import (
	"fmt"

	"github.com/llamacu/llamacu/tensor"
)

// Tensor-parallel sharding, Megatron style (Shoeybi et al. 2019), for a group of n ranks:
//
//	wq, wk, wv   split by rows (heads): rank r holds heads [r·H/n, (r+1)·H/n)      zero-copy
//	w1, w3       split by rows (FFN columns of the activation)                     zero-copy
//	wo, w2       split by columns (the same heads / FFN slice on the input side)    copied
//	output       split by rows (vocabulary) when n divides it, else replicated      zero-copy
//	embeddings, norms                                                               replicated
//
// Each rank computes attention for its heads and the FFN for its slice; the partial outputs of
// wo and w2 are summed by an all-reduce, and the vocabulary-split logits are all-gathered. Row
// splits are slices of the (memory-mapped) file; column splits copy only the rank's part, so no
// rank holds the whole model.

// CheckTP reports whether n ranks can split this model: n must divide the KV heads (so every
// rank keeps whole GQA groups), and the FFN width; quantized column splits must stay on blocks.
func (c Config) CheckTP(n int) error {
	var valid []int
	for d := 1; d <= c.KVHeads; d++ {
		if c.KVHeads%d == 0 && c.FFN%d == 0 {
			valid = append(valid, d)
		}
	}
	if n < 1 || c.KVHeads%n != 0 || c.FFN%n != 0 {
		return fmt.Errorf("%w: tensor-parallel degree %d does not divide %d KV heads and FFN %d; valid degrees: %v", ErrBadConfig, n, c.KVHeads, c.FFN, valid)
	}
	return nil
}

// localConfig is the shape one of n ranks computes: a slice of the heads and of the FFN. Vocab
// stays global (the embedding is replicated); outputRows says how many LM-head rows the rank has.
func (c Config) localConfig(n int) (local Config, outputRows int) {
	local = c
	local.HeadSize = c.HeadDim()
	local.Heads, local.KVHeads, local.FFN = c.Heads/n, c.KVHeads/n, c.FFN/n
	outputRows = c.Vocab
	if c.Vocab%n == 0 {
		outputRows = c.Vocab / n
	}
	return local, outputRows
}

// localShapes lists the weights of rank r of n with their local shapes.
func (c Config) localShapes(n int) []WeightShape {
	local, outRows := c.localConfig(n)
	shapes := local.WeightShapes()
	for i := range shapes {
		switch shapes[i].Name {
		case NameOutput:
			shapes[i].Shape = []int{outRows, c.Dim}
		case NameTokEmbed:
			shapes[i].Shape = []int{c.Vocab, c.Dim}
		}
	}
	if c.TiedOutput && n > 1 && outRows != c.Vocab {
		// A tied LM head is still split by vocabulary: the rank's rows of the embedding.
		shapes = append(shapes, WeightShape{NameOutput, []int{outRows, c.Dim}})
	}
	return shapes
}

// ShardSource returns the tensors of rank r of n, by canonical name with local shapes.
func ShardSource(c Config, src TensorSource, r, n int) TensorSource {
	return func(name string) (*tensor.Tensor, error) {
		srcName, kind := shardKind(c, name, n)
		t, err := src(srcName)
		if err != nil || n == 1 || kind == shardWhole {
			return t, err
		}
		if kind == shardRows {
			return sliceRows(t, name, r, n)
		}
		return sliceCols(t, name, r, n)
	}
}

// How a rank's tensor comes from the whole model's.
const (
	shardWhole = iota // replicated
	shardRows         // a contiguous block of rows
	shardCols         // a block of every row's columns
)

// shardKind says which tensor of the whole model rank tensor name comes from (the embedding
// for a tied LM head) and how it is cut at TP degree n.
func shardKind(c Config, name string, n int) (srcName string, kind int) {
	_, outRows := c.localConfig(n)
	base := name
	var l int
	if _, err := fmt.Sscanf(name, "layers.%d.", &l); err == nil {
		base = name[len(fmt.Sprintf("layers.%d.", l)):]
	}
	switch base {
	case NameWq, NameWk, NameWv, NameW1, NameW3:
		kind = shardRows
	case NameWo, NameW2:
		kind = shardCols
	case NameOutput:
		if outRows != c.Vocab {
			kind = shardRows
		}
	}
	srcName = name
	if name == NameOutput && c.TiedOutput {
		srcName = NameTokEmbed
	}
	if n == 1 {
		kind = shardWhole
	}
	return srcName, kind
}

// sliceRows is rank r's contiguous block of rows: a slice of t.Data, no copy.
func sliceRows(t *tensor.Tensor, name string, r, n int) (*tensor.Tensor, error) {
	rows := t.Rows()
	if rows%n != 0 {
		return nil, fmt.Errorf("model: shard %q: %d rows do not split %d ways", name, rows, n)
	}
	rb := t.RowBytes()
	per := rows / n
	return &tensor.Tensor{Name: name, DType: t.DType, Shape: []int{per, t.Cols()}, Data: t.Data[r*per*rb : (r+1)*per*rb]}, nil
}

// sliceCols copies rank r's block of columns of every row. When those columns are not whole
// quantisation blocks (Llama-2-7B's FFN of 11008 = 43 blocks of 256, split in two) the shard
// cannot stay in t's blocks and is widened to F16 (widenCols).
func sliceCols(t *tensor.Tensor, name string, r, n int) (*tensor.Tensor, error) {
	cols := t.Cols()
	if cols%n != 0 {
		return nil, fmt.Errorf("model: shard %q: %d columns do not split %d ways", name, cols, n)
	}
	per := cols / n
	if per%t.DType.BlockSize() != 0 {
		return widenCols(t, name, r*per, (r+1)*per)
	}
	pb, err := t.DType.Bytes(int64(per))
	if err != nil {
		return nil, err
	}
	rb := t.RowBytes()
	out := make([]byte, t.Rows()*int(pb))
	for i := 0; i < t.Rows(); i++ {
		copy(out[i*int(pb):(i+1)*int(pb)], t.Data[i*rb+r*int(pb):i*rb+(r+1)*int(pb)])
	}
	return &tensor.Tensor{Name: name, DType: t.DType, Shape: []int{t.Rows(), per}, Data: out}, nil
}

// SplitDType is the dtype of a column shard whose columns are not whole blocks of the file's
// quantisation: F16 is what the GPU holds any unquantised matrix in, and its rounding (2⁻¹¹
// relative) is far below that of the quantisation it replaces (Q4_K: about 2⁻⁵).
const SplitDType = tensor.F16

// SplitWidens reports whether a column shard of cols columns of dtype d at TP degree n is
// widened to SplitDType.
func SplitWidens(d tensor.DType, cols, n int) bool {
	return n > 1 && cols%n == 0 && (cols/n)%d.BlockSize() != 0
}

// widenCols is columns [c0, c1) of every row of t (whole blocks), decoded and re-encoded as
// SplitDType.
func widenCols(t *tensor.Tensor, name string, c0, c1 int) (*tensor.Tensor, error) {
	rows, cols := t.Rows(), t.Cols()
	if c0 < 0 || c1 > cols || c0 > c1 {
		return nil, fmt.Errorf("model: shard %q: columns [%d, %d) of %d", name, c0, c1, cols)
	}
	w := c1 - c0
	wb, err := SplitDType.Bytes(int64(w))
	if err != nil {
		return nil, err
	}
	row := make([]float32, cols)
	out := make([]byte, rows*int(wb))
	for i := 0; i < rows; i++ {
		t.DecodeRow(row, i)
		tensor.EncodeTo(out[i*int(wb):(i+1)*int(wb)], SplitDType, row[c0:c1])
	}
	return &tensor.Tensor{Name: name, DType: SplitDType, Shape: []int{rows, w}, Data: out}, nil
}
