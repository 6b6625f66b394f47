package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/llamacu/llamacu/tensor"
)

// GGUF hyperparameters that parse but make no sense: every one is an error naming the file.
func TestGGUFAbsurdHyperparameters(t *testing.T) {
	src := readerTestBytes(t, "stories260K/stories260K.gguf")
	dir := t.TempDir()
	// The file has no llama.rope.freq_base: the same model written by WriteGGUFModel has.
	m, err := Open(readerTestdata(t, "stories260K/stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	var withTheta bytes.Buffer
	err = WriteGGUFModel(&withTheta, m.Config, m.Vocab, m.Tensors)
	m.Close()
	if err != nil {
		t.Fatal(err)
	}
	f32 := func(key string, v float32) func(b []byte) []byte {
		return func(b []byte) []byte { return putU32(b, ggufKeyAt(t, b, key)+4, math.Float32bits(v)) }
	}
	u32 := func(key string, v uint32) func(b []byte) []byte {
		return func(b []byte) []byte { return putU32(b, ggufKeyAt(t, b, key)+4, v) }
	}
	theta := func(v float32) func(b []byte) []byte {
		return func([]byte) []byte {
			b := slices.Clone(withTheta.Bytes())
			return putU32(b, ggufKeyAt(t, b, "llama.rope.freq_base")+4, math.Float32bits(v))
		}
	}
	tests := []struct {
		name   string
		mutate func(b []byte) []byte
		want   error
		in     string
	}{
		{"eps NaN", f32("llama.attention.layer_norm_rms_epsilon", float32(math.NaN())), ErrCorrupt, "norm_eps"},
		{"eps +Inf", f32("llama.attention.layer_norm_rms_epsilon", float32(math.Inf(1))), ErrCorrupt, "norm_eps"},
		{"eps negative", f32("llama.attention.layer_norm_rms_epsilon", -1e-5), ErrCorrupt, "norm_eps"},
		{"theta +Inf", theta(float32(math.Inf(1))), ErrCorrupt, "rope_theta"},
		{"theta NaN", theta(float32(math.NaN())), ErrCorrupt, "rope_theta"},
		{"theta 0", theta(0), ErrCorrupt, "rope_theta"},
		{"context 0", u32("llama.context_length", 0), ErrCorrupt, "llama.context_length"},
		{"context 2^31", u32("llama.context_length", 1<<31), ErrCorrupt, "llama.context_length"},
		{"context 2^30", u32("llama.context_length", 1<<30), ErrCorrupt, "implausibly large"},
		{"layers 2^32-1", u32("llama.block_count", math.MaxUint32), ErrCorrupt, "llama.block_count"},
		{"layers 1000000", u32("llama.block_count", 1000000), ErrCorrupt, "implausibly large"},
		{"heads 0", u32("llama.attention.head_count", 0), ErrCorrupt, "llama.attention.head_count"},
		{"dim 2^31-1", u32("llama.embedding_length", math.MaxInt32), ErrCorrupt, "2147483647"},
		{"dims multiply past int64", func(b []byte) []byte {
			// Four dimensions of 2^31−1: 2^124 elements.
			nd := ggufTensorAt(t, b, "blk.0.attn_norm.weight")
			out := slices.Clone(b[:nd])
			out = binary.LittleEndian.AppendUint32(out, 4)
			for range 4 {
				out = binary.LittleEndian.AppendUint64(out, math.MaxInt32)
			}
			return append(out, b[nd+4+8:]...)
		}, ErrCorrupt, `"blk.0.attn_norm.weight"`},
		{"dims multiply past the file", func(b []byte) []byte {
			dims, _, _ := ggufTensorFields(t, b, "token_embd.weight")
			return putU64(b, dims+8, 1<<30) // (1<<30, 64) F32: 256 GiB
		}, ErrTruncated, `"token_embd.weight"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTempFile(t, dir, strings.ReplaceAll(tc.name, " ", "_")+".gguf", tc.mutate(slices.Clone(src)))
			m, err := Open(path)
			if err == nil {
				m.Close()
				t.Fatalf("loaded without error: %+v", m.Config)
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.in) {
				t.Errorf("error %q\nwant one wrapping %q, naming %s and containing %q", err, tc.want, path, tc.in)
			}
		})
	}
}

// Safetensors shapes whose element counts overflow, or exceed the file, are corrupt.
func TestSafetensorsAbsurdShapes(t *testing.T) {
	for _, shape := range []string{
		"[2147483648, 2147483648]", "[4611686018427387904, 4]", "[1099511627776, 1099511627776, 1099511627776]",
		"[9223372036854775807, 2]", "[-1, -8]", "[3, 0, 9223372036854775807, 9223372036854775807]",
		"[1e30]", `["8"]`, "8", "null",
	} {
		t.Run(shape, func(t *testing.T) {
			h := `{"x": {"dtype": "F32", "shape": ` + shape + `, "data_offsets": [0, 8]}}`
			data := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
			data = append(append(data, h...), make([]byte, 8)...)
			_, err := parseSafetensors(data, "s.safetensors")
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `"x"`) {
				t.Errorf("shape %s: %v, want ErrCorrupt naming the tensor", shape, err)
			}
		})
	}
	// A zero-sized dimension makes an empty tensor, whatever the others.
	h := `{"x": {"dtype": "F16", "shape": [0, 4611686018427387904], "data_offsets": [0, 0]}}`
	data := append(binary.LittleEndian.AppendUint64(nil, uint64(len(h))), h...)
	f, err := parseSafetensors(data, "s.safetensors")
	if err != nil || len(f.Tensors["x"].Data) != 0 || f.Tensors["x"].DType != tensor.F16 {
		t.Errorf("empty tensor: %v", err)
	}
}
