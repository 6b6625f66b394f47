package loader

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// The fuzzers feed arbitrary bytes to the byte-level readers (the same code openGGUF and
// openLlama2C run on a mapped file). The property: no panic, and every error wraps one of the
// loader's sentinels. Run them with, e.g.,
//
//	go test ./loader -run '^$' -fuzz FuzzGGUF -fuzztime 60s -fuzzminimizetime 5s
//
// (the seeds are kept to a few KB: the engine minimises every new interesting input, for up to
// -fuzzminimizetime, and a long minimisation on a large input stalls a 2-core machine).

// loaderSentinels are the errors every loader error must wrap (one of).
var loaderSentinels = []error{ErrFormat, ErrTruncated, ErrCorrupt, ErrMissing, ErrShape, ErrUnused, tensor.ErrUnknownDType}

func wrapsSentinel(err error) bool {
	for _, s := range loaderSentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// addSharedSeed adds the first n bytes of a shared test file to the corpus, if it is there.
func addSharedSeed(f *testing.F, rel string, n int) {
	b, err := os.ReadFile(filepath.Join("..", "..", "shared", "testdata", filepath.FromSlash(rel)))
	if err != nil {
		return // the synthetic seeds suffice
	}
	f.Add(b[:min(n, len(b))])
}

// tinyGGUF is a complete, valid GGUF model small enough to mutate quickly: 1 layer, 2 heads,
// 1 KV head, a 4-token vocabulary, dim = FFN = width; matrices in dt (width a multiple of its
// block size).
func tinyGGUF(tb testing.TB, dt tensor.DType, width int) []byte {
	tb.Helper()
	cfg := model.Config{Name: "tiny", Dim: width, Layers: 1, Heads: 2, KVHeads: 1, FFN: width, Vocab: 4, MaxSeq: 8, NormEps: 1e-5, RopeTheta: 10000, TiedOutput: true}
	ts := map[string]*tensor.Tensor{}
	for _, ws := range cfg.WeightShapes() {
		d := dt
		if len(ws.Shape) == 1 {
			d = tensor.F32
		}
		n := 1
		for _, s := range ws.Shape {
			n *= s
		}
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(i%7) - 3
		}
		ts[ws.Name] = &tensor.Tensor{Name: ws.Name, DType: d, Shape: ws.Shape, Data: tensor.Encode(d, x)}
	}
	vocab := &Vocab{Model: "llama", Tokens: []string{"<unk>", "<s>", "</s>", "▁a"}, Scores: []float32{0, 0, 0, -1}, Types: []int32{2, 3, 3, 1}, BOS: 1, EOS: 2, UNK: 0, PAD: -1, AddBOS: true}
	var buf bytes.Buffer
	if err := WriteGGUFModel(&buf, cfg, vocab, ts); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func FuzzGGUF(f *testing.F) {
	f.Add(tinyGGUF(f, tensor.F32, 4))
	f.Add(tinyGGUF(f, tensor.Q4_0, 32))
	addSharedSeed(f, "stories260K/stories260K.gguf", 2<<10)
	addSharedSeed(f, "tiny-random/llama-2-tiny-random.gguf", 1<<10)
	f.Fuzz(func(t *testing.T, data []byte) {
		if info, err := parseGGUF(data, "fuzz.gguf"); err != nil {
			if !wrapsSentinel(err) {
				t.Fatalf("parseGGUF: error wraps no sentinel: %v", err)
			}
		} else if _, err := ggufVocab(info.Meta, "fuzz.gguf"); err != nil && !wrapsSentinel(err) {
			t.Fatalf("ggufVocab: error wraps no sentinel: %v", err)
		}
		m, err := ggufModel(data, "fuzz.gguf")
		if err != nil {
			if !wrapsSentinel(err) {
				t.Fatalf("ggufModel: error wraps no sentinel: %v", err)
			}
			return
		}
		// A file that loads writes back to one that loads with the same config.
		var buf bytes.Buffer
		if err := WriteGGUFModel(&buf, m.Config, m.Vocab, m.Tensors); err != nil {
			t.Fatalf("WriteGGUFModel of a loaded model: %v", err)
		}
		m2, err := ggufModel(buf.Bytes(), "fuzz.gguf")
		if err != nil {
			t.Fatalf("re-reading a written model: %v", err)
		}
		if m2.Config != m.Config {
			t.Fatalf("config changed in a round trip: %+v → %+v", m.Config, m2.Config)
		}
	})
}

func FuzzLlama2C(f *testing.F) {
	f.Add(l2cSynthetic([7]int32{4, 4, 1, 2, 1, 2, 1}))
	f.Add(l2cSynthetic([7]int32{4, 6, 1, 2, 2, -3, 2}))
	addSharedSeed(f, "stories260K/stories260K.bin", 256)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := llama2cModel(data, "fuzz.bin")
		if err != nil {
			if !wrapsSentinel(err) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		var n int64 = 28
		for _, tt := range m.Tensors {
			n += int64(len(tt.Data))
		}
		if n > int64(len(data)) {
			t.Fatalf("tensors hold %d bytes of a %d-byte file", n, len(data))
		}
	})
}

// FuzzLoRAGGUF: arbitrary bytes as a GGUF adapter never panic the reader, the shape check or a
// merge, and every error wraps a loader sentinel or ErrLoRA.
func FuzzLoRAGGUF(f *testing.F) {
	cfg := model.Tiny
	var buf bytes.Buffer
	if err := WriteLoRAGGUF(&buf, randomPairs(cfg, 2, model.LayerName(0, model.NameWq), model.LayerName(1, model.NameW2)), 4); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	if b, err := os.ReadFile(filepath.Join("..", "engine", "testdata", "stories260K-lora.gguf")); err == nil {
		f.Add(b[:min(len(b), 4<<10)])
	}
	base := model.Synthetic(cfg, 1, tensor.F16)
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := loraGGUF(data, "fuzz.gguf")
		if err == nil {
			err = l.check(cfg)
		}
		if err != nil {
			if !wrapsSentinel(err) && !errors.Is(err, ErrLoRA) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		merged := MergeLoRA(base, []*LoRA{l}, []float64{1})
		for name := range l.Pairs {
			if _, err := merged(name); err != nil {
				t.Fatalf("merging a checked adapter: %v", err)
			}
		}
	})
}
