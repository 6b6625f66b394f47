package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// l2cSynthetic builds a llama2.c legacy checkpoint from a header (dim, hidden, layers, heads,
// kv_heads, vocab, seq_len), its arrays filled with i·0.001 for the i-th float, laid out as
// llama2.c's export.py writes them.
func l2cSynthetic(h [7]int32) []byte {
	dim, hidden, layers, heads, kv, vocab, seq := int(h[0]), int(h[1]), int(h[2]), int(h[3]), int(h[4]), int(h[5]), int(h[6])
	shared := vocab > 0
	vocab = max(vocab, -vocab)
	hs := dim / heads
	n := vocab*dim + layers*(dim+dim*dim+2*kv*hs*dim+dim*dim+dim+3*hidden*dim) + dim + seq*hs
	if !shared {
		n += vocab * dim
	}
	b := make([]byte, 0, 28+4*n)
	for _, x := range h {
		b = binary.LittleEndian.AppendUint32(b, uint32(x))
	}
	for i := range n {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(i)*0.001))
	}
	return b
}

func TestLlama2CSynthetic(t *testing.T) {
	// dim 16, hidden 24, 2 layers, 4 heads, 2 KV heads (head_dim 4, kv_dim 8), vocab 10, seq 6.
	for _, shared := range []bool{true, false} {
		vocab := int32(10)
		if !shared {
			vocab = -10
		}
		b := l2cSynthetic([7]int32{16, 24, 2, 4, 2, vocab, 6})
		m, err := llama2cModel(b, "synthetic.bin")
		if err != nil {
			t.Fatal(err)
		}
		want := model.Config{Name: "synthetic", Dim: 16, FFN: 24, Layers: 2, Heads: 4, KVHeads: 2, Vocab: 10, MaxSeq: 6, NormEps: 1e-5, RopeTheta: 10000, TiedOutput: shared}
		if m.Config != want {
			t.Errorf("Config:\n got %+v\nwant %+v", m.Config, want)
		}
		// Walk the file in export.py's order and check each tensor starts at the right float.
		next := 0
		at := func(name string, elems int) {
			tt := m.Tensors[name]
			if tt == nil {
				t.Fatalf("%s missing", name)
			}
			if got := tt.Float32s(); len(got) != elems || got[0] != float32(next)*0.001 || got[elems-1] != float32(next+elems-1)*0.001 {
				t.Errorf("%s: %d elements from %g, want %d from %g", name, len(got), got[0], elems, float32(next)*0.001)
			}
			next += elems
		}
		at(model.NameTokEmbed, 10*16)
		for _, w := range []struct {
			name  string
			elems int
		}{{model.NameAttnNorm, 16}, {model.NameWq, 256}, {model.NameWk, 128}, {model.NameWv, 128}, {model.NameWo, 256}, {model.NameFFNNorm, 16}, {model.NameW1, 384}, {model.NameW2, 384}, {model.NameW3, 384}} {
			for l := range 2 {
				at(model.LayerName(l, w.name), w.elems)
			}
		}
		at(model.NameNorm, 16)
		next += 2 * 6 * 2 // freq_cis_real, freq_cis_imag: (seq 6, head_dim/2 2) each
		if !shared {
			at(model.NameOutput, 160)
		}
		if got := m.Tensors[model.LayerName(1, model.NameWk)].Shape; !slices.Equal(got, []int{8, 16}) {
			t.Errorf("wk shape %v, want [8 16]", got)
		}
	}
}

func TestLlama2CStories260K(t *testing.T) {
	src := readerTestBytes(t, "stories260K/stories260K.bin")
	dir := t.TempDir()
	// An unshared classifier: vocab_size −512 and wcls appended (here a copy of the embedding).
	unshared := slices.Clone(src)
	putU32(unshared, 20, uint32(0xffffffff-511)) // −512
	unshared = append(unshared, src[28:28+512*64*4]...)
	m, err := Open(writeTempFile(t, dir, "unshared.bin", unshared))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Config.TiedOutput || m.Config.Vocab != 512 {
		t.Errorf("unshared: TiedOutput %v, vocab %d", m.Config.TiedOutput, m.Config.Vocab)
	}
	if out := m.Tensors[model.NameOutput]; out == nil || !bytes.Equal(out.Data, m.Tensors[model.NameTokEmbed].Data) {
		t.Error("unshared: output.weight is not the appended classifier")
	}

	// A tokenizer beside the checkpoint is found.
	sub := t.TempDir()
	bin := writeTempFile(t, sub, "model.bin", src)
	if m, err := Open(bin); err != nil || m.TokenizerPath != "" {
		t.Errorf("no tokenizer beside: %q, %v", m.TokenizerPath, err)
	} else {
		m.Close()
	}
	for _, name := range []string{"tokenizer.bin", "tokenizer.model"} { // .model wins when both exist
		tok := writeTempFile(t, sub, name, readerTestBytes(t, "stories260K/tok512."+strings.TrimPrefix(filepath.Ext(name), ".")))
		m, err := Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		if m.TokenizerPath != tok {
			t.Errorf("TokenizerPath = %q, want %q", m.TokenizerPath, tok)
		}
		m.Close()
	}
}

func TestLlama2CCorrupt(t *testing.T) {
	src := readerTestBytes(t, "stories260K/stories260K.bin")
	const (
		embEnd = 28 + 512*64*4
		wqAt   = embEnd + 5*64*4 // after rms_att_weight (5, 64)
	)
	hdr := func(field int, v int32) func([]byte) []byte {
		return func(b []byte) []byte { return putU32(b, 4*field, uint32(v)) }
	}
	dir := t.TempDir()
	tests := []struct {
		name   string
		mutate func([]byte) []byte
		want   error
		in     string
	}{
		{"empty", func([]byte) []byte { return nil }, ErrTruncated, "28-byte header"},
		{"truncated in header", func(b []byte) []byte { return b[:20] }, ErrTruncated, "28-byte header"},
		{"truncated in embedding", func(b []byte) []byte { return b[:1000] }, ErrTruncated, `tensor "tok_embeddings.weight": file is truncated: llama2.c array token_embedding_table [512 64] needs bytes [28, 131100)`},
		{"truncated in wq layer 2", func(b []byte) []byte { return b[:wqAt+2*64*64*4+10] }, ErrTruncated, `tensor "layers.2.attention.wq.weight": file is truncated: layer 2 of llama2.c array wq`},
		{"truncated in freq_cis", func(b []byte) []byte { return b[:len(b)-100] }, ErrTruncated, "freq_cis_imag"},
		{"trailing bytes", func(b []byte) []byte { return append(b, 0, 0, 0, 0) }, ErrCorrupt, "4 bytes follow the last llama2.c array"},
		{"version 1 magic", hdr(0, 0x616b3432), ErrFormat, "ak42"},
		{"negative dim", hdr(0, -64), ErrCorrupt, "dim -64"},
		{"zero layers", hdr(2, 0), ErrCorrupt, "n_layers 0"},
		{"heads do not divide dim", hdr(3, 7), ErrCorrupt, "not a multiple of n_heads 7"},
		{"kv heads do not divide heads", hdr(4, 3), ErrCorrupt, "n_kv_heads 3"},
		{"zero vocab", hdr(5, 0), ErrCorrupt, "vocab_size 0"},
		{"most negative vocab", hdr(5, math.MinInt32), ErrCorrupt, "vocab_size -2147483648"},
		{"zero seq_len", hdr(6, 0), ErrCorrupt, "seq_len 0"},
		{"huge dim", hdr(0, 1<<30), ErrCorrupt, "implausibly large"},
		{"vocab larger than the file", hdr(5, 1<<20), ErrTruncated, `"tok_embeddings.weight"`},
		{"missing classifier", hdr(5, -512), ErrTruncated, `"output.weight"`},
		{"more kv heads than stored", hdr(4, 8), ErrTruncated, "llama2.c array"},
		{"fewer kv heads than stored", hdr(4, 2), ErrCorrupt, "bytes follow the last llama2.c array"},
		{"longer seq_len than stored", hdr(6, 513), ErrTruncated, "freq_cis_imag"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTempFile(t, dir, strings.ReplaceAll(tc.name, " ", "_")+".bin", tc.mutate(slices.Clone(src)))
			m, err := openLlama2C(path)
			if err == nil {
				m.Close()
				t.Fatal("loaded without error")
			}
			msg := err.Error()
			if !errors.Is(err, tc.want) || !strings.Contains(msg, path) || !strings.Contains(msg, tc.in) {
				t.Errorf("error %q\nwant one wrapping %q, naming %s and containing %q", msg, tc.want, path, tc.in)
			}
		})
	}
}

func TestOpenDispatch(t *testing.T) {
	// Open picks the reader by content, not by name: a GGUF named .bin is still a GGUF.
	dir := t.TempDir()
	for _, tc := range []struct {
		rel    string
		format Format
	}{
		{"stories260K/stories260K.bin", FormatLlama2C},
		{"stories260K/stories260K.gguf", FormatGGUF},
	} {
		path := writeTempFile(t, dir, "model-"+string(tc.format)+".bin", readerTestBytes(t, tc.rel))
		m, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if m.Format != tc.format || m.Tensors[model.NameTokEmbed].DType != tensor.F32 {
			t.Errorf("%s: format %q", tc.rel, m.Format)
		}
		m.Close()
	}
}
