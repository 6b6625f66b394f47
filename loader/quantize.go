package loader

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// Quantization of a whole model into a GGUF file, as llama.cpp's llama-quantize does it: a
// file type names a base storage type, and per-tensor rules keep the norms in F32, give the LM
// head Q6_K, and spend more bits on the value projection and the feed-forward down projection
// of some layers (the _M types) — llama.cpp's llama_tensor_get_type for these types, checked
// against what llama.cpp itself writes (loader/testdata/llama-cpp-quant-types.json).

// QuantType is a model file type: "F16", "Q8_0", "Q4_K_M", ...
type QuantType struct {
	Name string
	base tensor.DType
}

// QuantTypes lists the file types Quantize writes, by llama.cpp's names.
var QuantTypes = []QuantType{
	{"F32", tensor.F32}, {"F16", tensor.F16}, {"BF16", tensor.BF16}, {"Q8_0", tensor.Q8_0},
	{"Q4_0", tensor.Q4_0}, {"Q5_0", tensor.Q5_0}, {"Q5_1", tensor.Q5_1}, {"Q4_K_S", tensor.Q4_K},
	{"Q4_K_M", tensor.Q4_K}, {"Q5_K_S", tensor.Q5_K}, {"Q5_K_M", tensor.Q5_K}, {"Q6_K", tensor.Q6_K},
}

// ErrQuantType reports a file type Quantize does not write.
var ErrQuantType = errors.New("unknown quantization type")

// ParseQuantType finds a file type by name, case-insensitively ("q4_k_m").
func ParseQuantType(s string) (QuantType, error) {
	for _, q := range QuantTypes {
		if strings.EqualFold(q.Name, s) {
			return q, nil
		}
	}
	names := make([]string, len(QuantTypes))
	for i, q := range QuantTypes {
		names[i] = q.Name
	}
	return QuantType{}, fmt.Errorf("%w %q: want one of %s (Q2_K, Q3_K and the IQ types come from llama.cpp's llama-quantize)", ErrQuantType, s, strings.Join(names, ", "))
}

// moreBits is llama.cpp's use_more_bits: the first and last eighth of the layers, and every
// third layer between, get more bits in the _M types.
func moreBits(i, n int) bool { return i < n/8 || i >= 7*n/8 || (i-n/8)%3 == 2 }

// TensorType is the storage type q gives the canonical tensor name of a model of config cfg.
func (q QuantType) TensorType(cfg model.Config, name string, shape []int) tensor.DType {
	if len(shape) != 2 {
		return tensor.F32 // norms stay F32 in every file type
	}
	t := q.base
	if !t.Quantized() {
		return t
	}
	layer, base := -1, name
	if rest, ok := strings.CutPrefix(name, "layers."); ok {
		num, b, _ := strings.Cut(rest, ".")
		layer, _ = strconv.Atoi(num)
		base = b
	}
	cols := shape[1]
	switch {
	case name == model.NameOutput || cfg.TiedOutput && name == model.NameTokEmbed: // a tied embedding is the LM head too
		if t != tensor.Q8_0 {
			t = tensor.Q6_K
		}
		return fallback(t, cols) // Q6_K → Q8_0 → F16 as the rows allow
	case base == model.NameWv:
		switch {
		case (q.Name == "Q4_K_M" || q.Name == "Q5_K_M") && moreBits(layer, cfg.Layers):
			t = tensor.Q6_K
		case q.Name == "Q4_K_S" && layer < 4:
			t = tensor.Q5_K
		}
		// llama.cpp's rule for the 70B model, whose value projection eight query heads share
		// (a 70B: 80 layers and grouped-query attention).
		if cfg.Layers == 80 && cfg.KVHeads < cfg.Heads && (t == tensor.Q3_K || t == tensor.Q4_K) {
			t = tensor.Q5_K
		}
	case base == model.NameW2:
		switch {
		case (q.Name == "Q4_K_M" || q.Name == "Q5_K_M") && moreBits(layer, cfg.Layers):
			t = tensor.Q6_K
		case q.Name == "Q4_K_S" && layer < cfg.Layers/8:
			t = tensor.Q5_K
		}
	}
	return fallback(t, cols)
}

// fallback is llama.cpp's type for rows that are not whole super-blocks of a k-quant.
func fallback(t tensor.DType, cols int) tensor.DType {
	if cols%t.BlockSize() == 0 {
		return t
	}
	switch t {
	case tensor.Q4_K:
		t = tensor.Q5_0
	case tensor.Q5_K:
		t = tensor.Q5_1
	case tensor.Q6_K:
		t = tensor.Q8_0
	}
	if cols%t.BlockSize() != 0 {
		return tensor.F16
	}
	return t
}

// QuantizeOptions tune Quantize.
type QuantizeOptions struct {
	// AllowRequantize lets a tensor already stored in a quantized type be decoded and quantized
	// again (llama-quantize's --allow-requantize): the errors add up.
	AllowRequantize bool
	// Progress, if not nil, is called after each tensor with its name and the types it went
	// from and to.
	Progress func(name string, from, to tensor.DType)
}

// Quantize writes the model cfg whose weights src yields as a GGUF file of type q (with the
// vocabulary, if not nil): each tensor in the type q.TensorType gives it, converted from what
// src stores (decoded to float32, then encoded).
func Quantize(w io.Writer, cfg model.Config, vocab *Vocab, src model.TensorSource, q QuantType, opts QuantizeOptions) error {
	out := map[string]*tensor.Tensor{}
	for _, ws := range cfg.WeightShapes() {
		t, err := src(ws.Name)
		if err != nil {
			return err
		}
		from, to := t.DType, q.TensorType(cfg, ws.Name, ws.Shape)
		if from != to {
			if t.DType.Quantized() && !opts.AllowRequantize {
				return fmt.Errorf("loader: quantize: tensor %q is %v already: quantizing it again adds its errors to the new ones (allow it explicitly, or start from the F16/F32 model)", ws.Name, t.DType)
			}
			t = &tensor.Tensor{Name: t.Name, DType: to, Shape: t.Shape, Data: encodeRows(to, t.Float32s(), t.Rows(), t.Cols())}
		}
		if opts.Progress != nil {
			opts.Progress(ws.Name, from, to)
		}
		out[ws.Name] = t
	}
	return WriteGGUFModel(w, cfg, vocab, out)
}

// encodeRows is tensor.Encode of a (rows, cols) matrix, its rows shared out among the cores
// (a k-quant's scale search costs ~130 ns a value on one core).
func encodeRows(d tensor.DType, x []float32, rows, cols int) []byte {
	rb, err := d.Bytes(int64(cols))
	if err != nil {
		return tensor.Encode(d, x) // not whole blocks per row: Encode says so
	}
	out := make([]byte, int64(rows)*rb)
	workers := min(runtime.GOMAXPROCS(0), rows)
	var wg sync.WaitGroup
	for g := range workers {
		lo, hi := rows*g/workers, rows*(g+1)/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			tensor.EncodeTo(out[int64(lo)*rb:int64(hi)*rb], d, x[lo*cols:hi*cols])
		}()
	}
	wg.Wait()
	return out
}
