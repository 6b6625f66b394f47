package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// readerTestdata returns the path of a shared test file, or skips the test naming it.
func readerTestdata(tb testing.TB, rel string) string {
	tb.Helper()
	p := filepath.Join("..", "..", "shared", "testdata", filepath.FromSlash(rel))
	if _, err := os.Stat(p); err != nil {
		tb.Skipf("shared test file not found: %s", p)
	}
	return p
}

// readerTestBytes reads a shared test file, or skips.
func readerTestBytes(tb testing.TB, rel string) []byte {
	tb.Helper()
	b, err := os.ReadFile(readerTestdata(tb, rel))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// writeTempFile writes data to dir/name and returns the path.
func writeTempFile(tb testing.TB, dir, name string, data []byte) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// llama2cTokenizerBin parses llama2.c's tokenizer.bin export (int32 max_token_length, then per
// token: float32 score, int32 length, bytes) — an independent reference for GGUF vocabularies.
func llama2cTokenizerBin(tb testing.TB, data []byte) (tokens []string, scores []float32) {
	tb.Helper()
	le := binary.LittleEndian
	for off := 4; off < len(data); {
		if off+8 > len(data) {
			tb.Fatalf("tokenizer.bin: truncated at %d", off)
		}
		scores = append(scores, math.Float32frombits(le.Uint32(data[off:])))
		n := int(le.Uint32(data[off+4:]))
		tokens = append(tokens, string(data[off+8:off+8+n]))
		off += 8 + n
	}
	return tokens, scores
}

// ggufKeyAt returns the offset of the value type of metadata key in a GGUF file image (the key
// is found by its length-prefixed bytes, independently of the parser).
func ggufKeyAt(tb testing.TB, b []byte, key string) int {
	tb.Helper()
	pat := binary.LittleEndian.AppendUint64(nil, uint64(len(key)))
	pat = append(pat, key...)
	i := bytes.Index(b, pat)
	if i < 0 {
		tb.Fatalf("key %q not found", key)
	}
	return i + len(pat)
}

// ggufTensorAt returns the offset of the n_dims field of tensor name's directory entry.
func ggufTensorAt(tb testing.TB, b []byte, name string) int {
	tb.Helper()
	return ggufKeyAt(tb, b, name)
}

// ggufTensorFields returns the offsets of a tensor's dims, type and offset fields.
func ggufTensorFields(tb testing.TB, b []byte, name string) (dims, typ, off int) {
	tb.Helper()
	nd := ggufTensorAt(tb, b, name)
	dims = nd + 4
	typ = dims + 8*int(binary.LittleEndian.Uint32(b[nd:]))
	return dims, typ, typ + 4
}

func putU32(b []byte, at int, v uint32) []byte { binary.LittleEndian.PutUint32(b[at:], v); return b }
func putU64(b []byte, at int, v uint64) []byte { binary.LittleEndian.PutUint64(b[at:], v); return b }

func TestStories260KBinMatchesGGUF(t *testing.T) {
	binPath := readerTestdata(t, "stories260K/stories260K.bin")
	ggufPath := readerTestdata(t, "stories260K/stories260K.gguf")
	bin, err := Open(binPath)
	if err != nil {
		t.Fatal(err)
	}
	defer bin.Close()
	gg, err := Open(ggufPath)
	if err != nil {
		t.Fatal(err)
	}
	defer gg.Close()

	// The README's description of the model.
	want := model.Config{Dim: 64, FFN: 172, Layers: 5, Heads: 8, KVHeads: 4, Vocab: 512, NormEps: 1e-5, RopeTheta: 10000}
	for _, tc := range []struct {
		m      *Model
		format Format
		maxSeq int
		tied   bool
	}{
		{bin, FormatLlama2C, 512, true},
		{gg, FormatGGUF, 2048, false},
	} {
		t.Run(string(tc.format), func(t *testing.T) {
			w := want
			w.MaxSeq, w.TiedOutput, w.Name = tc.maxSeq, tc.tied, tc.m.Config.Name
			if tc.m.Format != tc.format {
				t.Errorf("Format = %q, want %q", tc.m.Format, tc.format)
			}
			if tc.m.Config != w {
				t.Errorf("Config:\n got %+v\nwant %+v", tc.m.Config, w)
			}
		})
	}
	if len(bin.Skipped) != 2 || !strings.HasPrefix(bin.Skipped[0], "freq_cis_real") || !strings.HasPrefix(bin.Skipped[1], "freq_cis_imag") {
		t.Errorf(".bin Skipped = %q, want the two freq_cis tables", bin.Skipped)
	}

	// Every tensor is bit-identical between the files, and both are F32.
	for name, bt := range bin.Tensors {
		gt, ok := gg.Tensors[name]
		if !ok {
			t.Errorf("%s: in the .bin, not in the GGUF", name)
			continue
		}
		if bt.DType != tensor.F32 || gt.DType != tensor.F32 || !slices.Equal(bt.Shape, gt.Shape) {
			t.Errorf("%s: .bin %v %v, GGUF %v %v", name, bt.DType, bt.Shape, gt.DType, gt.Shape)
			continue
		}
		if !bytes.Equal(bt.Data, gt.Data) {
			t.Errorf("%s: data differs between the .bin and the GGUF", name)
		}
	}
	if len(gg.Tensors) != len(bin.Tensors)+1 {
		t.Errorf("GGUF has %d tensors, the .bin %d (+1 for output.weight expected)", len(gg.Tensors), len(bin.Tensors))
	}
	if _, ok := bin.Tensors[model.NameOutput]; ok {
		t.Errorf(".bin has %s; its classifier is shared", model.NameOutput)
	}
	out, err := gg.Tensor(model.NameOutput)
	if err != nil {
		t.Fatal(err)
	}
	if emb := bin.Tensors[model.NameTokEmbed]; !bytes.Equal(out.Data, emb.Data) {
		t.Errorf("GGUF %s differs from the embedding", model.NameOutput)
	}
	// The first embedding value, read off a hex dump of the file: bytes 28..31 = 50 e9 96 be.
	if got := math.Float32bits(bin.Tensors[model.NameTokEmbed].Float32s()[0]); got != 0xbe96e950 {
		t.Errorf("tok_embeddings[0,0] bits = %#x, want 0xbe96e950", got)
	}
	// Tensors are capped slices, so an append can never write into the mapping.
	for name, tt := range gg.Tensors {
		if cap(tt.Data) != len(tt.Data) {
			t.Errorf("%s: cap %d ≠ len %d", name, cap(tt.Data), len(tt.Data))
		}
	}

	// The GGUF's vocabulary is tok512: compare with llama2.c's export of it (▁ spelled as a space).
	v := gg.Vocab
	if v == nil {
		t.Fatal("GGUF Vocab is nil")
	}
	if len(v.Tokens) != 512 || v.BOS != 1 || v.EOS != 2 || v.UNK != 0 || v.PAD != -1 || !v.AddBOS || v.Model != "llama" {
		t.Errorf("Vocab: %d tokens, BOS %d EOS %d UNK %d PAD %d AddBOS %v model %q; want 512, 1, 2, 0, -1 (stored as 0xFFFFFFFF), true, llama",
			len(v.Tokens), v.BOS, v.EOS, v.UNK, v.PAD, v.AddBOS, v.Model)
	}
	if v.Tokens[3] != "<0x00>" || v.Types[0] != 2 || v.Types[1] != 3 || v.Types[3] != 6 {
		t.Errorf("tokens[3] = %q, types[:4] = %v; want <0x00>, [2 3 3 6]", v.Tokens[3], v.Types[:4])
	}
	refTokens, refScores := llama2cTokenizerBin(t, readerTestBytes(t, "stories260K/tok512.bin"))
	if len(refTokens) != len(v.Tokens) {
		t.Fatalf("tok512.bin has %d tokens, the GGUF %d", len(refTokens), len(v.Tokens))
	}
	for i := 3; i < len(refTokens); i++ {
		if g := strings.ReplaceAll(v.Tokens[i], "▁", " "); g != refTokens[i] || v.Scores[i] != refScores[i] {
			t.Errorf("token %d: GGUF %q %g, tok512.bin %q %g", i, v.Tokens[i], v.Scores[i], refTokens[i], refScores[i])
		}
	}
	if gg.Meta["general.architecture"] != "llama" || gg.Meta["llama.context_length"] != uint32(2048) {
		t.Errorf("Meta: architecture %v, context_length %#v", gg.Meta["general.architecture"], gg.Meta["llama.context_length"])
	}
}

func TestGGUFVersion2(t *testing.T) {
	// v2 and v3 share the layout (v3 only allowed big-endian files): a v2 header loads the same.
	b := putU32(readerTestBytes(t, "stories260K/stories260K.gguf"), 4, 2)
	m, err := openGGUF(writeTempFile(t, t.TempDir(), "v2.gguf", b))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Config.Dim != 64 || len(m.Tensors) != 48 {
		t.Errorf("v2: dim %d, %d tensors", m.Config.Dim, len(m.Tensors))
	}
}

func TestTinyRandomGGUF(t *testing.T) {
	m, err := Open(readerTestdata(t, "tiny-random/llama-2-tiny-random.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := model.Config{Name: "LLaMA v2", Dim: 8, Layers: 1, Heads: 2, KVHeads: 2, FFN: 32, Vocab: 32000, MaxSeq: 4096, NormEps: 1e-5, RopeTheta: 10000}
	if m.Config != want {
		t.Errorf("Config:\n got %+v\nwant %+v", m.Config, want)
	}
	if len(m.Tensors) != 12 {
		t.Errorf("%d tensors, want 12", len(m.Tensors))
	}
	for name, tt := range m.Tensors {
		wantDT := tensor.F16
		if len(tt.Shape) == 1 {
			wantDT = tensor.F32
		}
		if tt.DType != wantDT {
			t.Errorf("%s: %v, want %v", name, tt.DType, wantDT)
		}
		for i, x := range tt.Float32s() {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Errorf("%s[%d] = %g", name, i, x)
				break
			}
		}
	}
	if got := m.Tensors[model.NameTokEmbed].Shape; !slices.Equal(got, []int{32000, 8}) {
		t.Errorf("embedding shape %v, want [32000 8] (GGUF stores [8 32000] innermost first)", got)
	}
	if m.Vocab == nil || len(m.Vocab.Tokens) != 32000 || m.Vocab.Tokens[3] != "<0x00>" || m.Vocab.BOS != 1 || m.Vocab.EOS != 2 {
		t.Errorf("vocabulary not read right: %+v", m.Vocab)
	}
}

func TestGGUFVocabOnly(t *testing.T) {
	path := readerTestdata(t, "llama2-tokenizer/ggml-vocab-llama-spm.gguf")
	v, err := ReadGGUFVocab(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Tokens) != 32000 || v.BOS != 1 || v.EOS != 2 || v.UNK != 0 || v.PAD != -1 || !v.AddBOS || v.Model != "llama" {
		t.Errorf("%d tokens, BOS %d EOS %d UNK %d PAD %d AddBOS %v model %q; want 32000, 1, 2, 0, -1, true, llama",
			len(v.Tokens), v.BOS, v.EOS, v.UNK, v.PAD, v.AddBOS, v.Model)
	}
	if v.Tokens[3] != "<0x00>" || v.Tokens[258] != "<0xFF>" || len(v.Scores) != 32000 || len(v.Types) != 32000 {
		t.Errorf("tokens[3] %q tokens[258] %q, %d scores, %d types", v.Tokens[3], v.Tokens[258], len(v.Scores), len(v.Types))
	}
	// The same vocabulary as llama2.c's tokenizer.bin export of Meta's tokenizer.model.
	refTokens, refScores := llama2cTokenizerBin(t, readerTestBytes(t, "llama2-tokenizer/tokenizer.bin"))
	if len(refTokens) != 32000 {
		t.Fatalf("tokenizer.bin has %d tokens", len(refTokens))
	}
	bad := 0
	for i := 3; i < 32000 && bad < 5; i++ {
		if g := strings.ReplaceAll(v.Tokens[i], "▁", " "); g != refTokens[i] || v.Scores[i] != refScores[i] {
			t.Errorf("token %d: GGUF %q %g, tokenizer.bin %q %g", i, v.Tokens[i], v.Scores[i], refTokens[i], refScores[i])
			bad++
		}
	}

	// The directory: no tensors, a data offset past the end of the file (which is fine).
	info, err := ReadGGUFInfo(path)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if info.Version != 3 || len(info.Tensors) != 0 || info.DataOffset <= st.Size() || info.Alignment != 32 {
		t.Errorf("info: version %d, %d tensors, data offset %d (file %d), alignment %d", info.Version, len(info.Tensors), info.DataOffset, st.Size(), info.Alignment)
	}
	if len(info.Keys) != 22 || info.Keys[0] != "general.architecture" || info.Meta["llama.vocab_size"] != uint32(32000) || info.Meta["tokenizer.ggml.add_eos_token"] != false {
		t.Errorf("keys %q; vocab_size %#v", info.Keys, info.Meta["llama.vocab_size"])
	}

	// Opening it as a model fails clearly.
	_, err = Open(path)
	if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "ReadGGUFVocab") || !strings.Contains(err.Error(), path) {
		t.Errorf("Open(vocab-only) = %v; want ErrMissing naming the file and ReadGGUFVocab", err)
	}
	// A model file's vocabulary reads the same way.
	if v2, err := ReadGGUFVocab(readerTestdata(t, "tiny-random/llama-2-tiny-random.gguf")); err != nil || !slices.Equal(v2.Tokens, v.Tokens) {
		t.Errorf("tiny-random vocabulary differs from the vocab-only file's (err %v)", err)
	}
}

func TestGGUFCorrupt(t *testing.T) {
	src := readerTestBytes(t, "stories260K/stories260K.gguf")
	clone := func() []byte { return slices.Clone(src) }
	dir := t.TempDir()
	tests := []struct {
		name   string
		mutate func(b []byte) []byte
		want   error
		in     string // a substring the message must hold (the tensor or key), or ""
	}{
		{"empty", func(b []byte) []byte { return nil }, ErrTruncated, ""},
		{"truncated in header", func(b []byte) []byte { return b[:20] }, ErrTruncated, "tensor count"},
		{"truncated in key count", func(b []byte) []byte { return b[:19] }, ErrTruncated, "tensor count"},
		{"truncated in magic", func(b []byte) []byte { return b[:3] }, ErrTruncated, "magic"},
		{"truncated in metadata", func(b []byte) []byte { return b[:ggufKeyAt(t, b, "tokenizer.ggml.scores")+100] }, ErrTruncated, "tokenizer.ggml.scores"},
		{"truncated in tensor info", func(b []byte) []byte { return b[:ggufTensorAt(t, b, "blk.0.attn_q.weight")+2] }, ErrTruncated, "blk.0.attn_q.weight"},
		{"truncated mid-tensor", func(b []byte) []byte { return b[:len(b)-1000] }, ErrTruncated, "blk.4.ffn_up.weight"},
		{"last byte missing", func(b []byte) []byte { return b[:len(b)-1] }, ErrTruncated, "blk.4.ffn_norm.weight"},
		{"bad magic", func(b []byte) []byte { b[0] = 'X'; return b }, ErrFormat, "magic"},
		{"version 1", func(b []byte) []byte { return putU32(b, 4, 1) }, ErrFormat, "version 1"},
		{"version 4", func(b []byte) []byte { return putU32(b, 4, 4) }, ErrFormat, "version 4"},
		{"big-endian version", func(b []byte) []byte { return putU32(b, 4, 3<<24) }, ErrFormat, "big-endian"},
		{"huge tensor count", func(b []byte) []byte { return putU64(b, 8, 1<<40) }, ErrCorrupt, "tensor count"},
		{"huge key count", func(b []byte) []byte { return putU64(b, 16, 1<<62) }, ErrCorrupt, "key/value count"},
		{"huge array", func(b []byte) []byte { return putU64(b, ggufKeyAt(t, b, "tokenizer.ggml.tokens")+8, 1<<50) }, ErrCorrupt, "tokenizer.ggml.tokens"},
		{"huge string", func(b []byte) []byte { return putU64(b, ggufKeyAt(t, b, "general.name")+4, math.MaxUint64) }, ErrCorrupt, "general.name"},
		{"unknown value type", func(b []byte) []byte { return putU32(b, ggufKeyAt(t, b, "general.name"), 99) }, ErrCorrupt, "value type 99"},
		{"unsupported ggml type", func(b []byte) []byte {
			_, typ, _ := ggufTensorFields(t, b, "token_embd.weight")
			return putU32(b, typ, 20)
		}, tensor.ErrUnknownDType, `"token_embd.weight": unknown dtype: IQ4_NL`},
		{"unknown ggml type", func(b []byte) []byte {
			_, typ, _ := ggufTensorFields(t, b, "output_norm.weight")
			return putU32(b, typ, 99)
		}, tensor.ErrUnknownDType, "ggml type 99"},
		{"misaligned offset", func(b []byte) []byte {
			_, _, off := ggufTensorFields(t, b, "token_embd.weight")
			return putU64(b, off, 4)
		}, ErrCorrupt, `"token_embd.weight": file is corrupt: offset 4`},
		{"offset past the end", func(b []byte) []byte {
			_, _, off := ggufTensorFields(t, b, "output.weight")
			return putU64(b, off, 1<<40)
		}, ErrTruncated, `"output.weight"`},
		{"tensor runs past the end", func(b []byte) []byte {
			_, _, off := ggufTensorFields(t, b, "blk.4.ffn_norm.weight")
			return putU64(b, off, binary.LittleEndian.Uint64(b[off:])+64)
		}, ErrTruncated, `"blk.4.ffn_norm.weight"`},
		{"five dimensions", func(b []byte) []byte { return putU32(b, ggufTensorAt(t, b, "token_embd.weight"), 5) }, ErrCorrupt, `"token_embd.weight"`},
		{"zero dimension", func(b []byte) []byte {
			dims, _, _ := ggufTensorFields(t, b, "blk.0.attn_v.weight")
			return putU64(b, dims, 0)
		}, ErrCorrupt, `"blk.0.attn_v.weight"`},
		{"shape disagrees with config", func(b []byte) []byte {
			dims, _, _ := ggufTensorFields(t, b, "blk.0.attn_k.weight")
			return putU64(b, dims+8, 16) // (32, 64) → (16, 64)
		}, ErrShape, model.LayerName(0, model.NameWk)},
		{"unused layer", func(b []byte) []byte { return putU32(b, ggufKeyAt(t, b, "llama.block_count")+4, 4) }, ErrUnused, "layers.4."},
		{"unknown tensor name", func(b []byte) []byte {
			i := ggufTensorAt(t, b, "blk.0.attn_q.weight")
			copy(b[i-len("q.weight"):], "x")
			return b
		}, ErrUnused, "blk.0.attn_x.weight"},
		{"duplicate tensor name", func(b []byte) []byte {
			i := ggufTensorAt(t, b, "blk.0.attn_k.weight")
			copy(b[i-len("k.weight"):], "q")
			return b
		}, ErrCorrupt, `"blk.0.attn_q.weight": file is corrupt: appears twice`},
		{"duplicate key", func(b []byte) []byte {
			i := ggufKeyAt(t, b, "tokenizer.ggml.bos_token_id")
			b[i-len("bos_token_id")] = 'e'
			return b
		}, ErrCorrupt, `"tokenizer.ggml.eos_token_id" appears twice`},
		{"not llama", func(b []byte) []byte {
			i := ggufKeyAt(t, b, "general.architecture")
			b[i+4+8+4] = 'x' // "llama" → "llamx"
			return b
		}, ErrFormat, `"llamx"`},
		{"rope dimension", func(b []byte) []byte { return putU32(b, ggufKeyAt(t, b, "llama.rope.dimension_count")+4, 4) }, ErrCorrupt, "dimension_count 4"},
		{"missing key", func(b []byte) []byte {
			i := ggufKeyAt(t, b, "llama.embedding_length")
			b[i-1] = 'X'
			return b
		}, ErrCorrupt, "missing metadata key llama.embedding_length"},
		{"integer key of the wrong type", func(b []byte) []byte { return putU32(b, ggufKeyAt(t, b, "llama.block_count"), 6) }, ErrCorrupt, "llama.block_count has type float32"},
		{"bad BOS id", func(b []byte) []byte { return putU32(b, ggufKeyAt(t, b, "tokenizer.ggml.bos_token_id")+4, 512) }, ErrCorrupt, "bos_token_id = 512"},
		{"kv heads", func(b []byte) []byte { return putU32(b, ggufKeyAt(t, b, "llama.attention.head_count_kv")+4, 3) }, ErrCorrupt, "n_kv_heads 3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTempFile(t, dir, strings.ReplaceAll(tc.name, " ", "_")+".gguf", tc.mutate(clone()))
			m, err := openGGUF(path)
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

// quantizable reports whether a matrix can be stored as dtype (its rows are whole blocks).
func quantizable(t *tensor.Tensor, dt tensor.DType) bool {
	return len(t.Shape) == 2 && t.Cols()%dt.BlockSize() == 0
}

func TestWriteGGUFModelRoundTrip(t *testing.T) {
	src, err := Open(readerTestdata(t, "stories260K/stories260K.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	vocab, err := ReadGGUFVocab(readerTestdata(t, "stories260K/stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, dt := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16, tensor.Q8_0, tensor.Q4_0} {
		t.Run(dt.String(), func(t *testing.T) {
			ts := make(map[string]*tensor.Tensor, len(src.Tensors))
			converted := 0
			for name, st := range src.Tensors {
				nt := *st
				if quantizable(st, dt) {
					nt.DType, nt.Data = dt, tensor.Encode(dt, st.Float32s())
					converted++
				}
				ts[name] = &nt
			}
			if converted < 30 {
				t.Fatalf("only %d matrices converted", converted)
			}
			var buf bytes.Buffer
			if err := WriteGGUFModel(&buf, src.Config, vocab, ts); err != nil {
				t.Fatal(err)
			}
			path := writeTempFile(t, t.TempDir(), "stories260K-"+dt.String()+".gguf", buf.Bytes())
			m, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if m.Config != src.Config {
				t.Errorf("Config:\n got %+v\nwant %+v", m.Config, src.Config)
			}
			if !reflect.DeepEqual(m.Vocab, vocab) {
				t.Errorf("vocabulary differs after the round trip")
			}
			for name, want := range ts {
				got := m.Tensors[name]
				if got == nil || got.DType != want.DType || !slices.Equal(got.Shape, want.Shape) || !bytes.Equal(got.Data, want.Data) {
					t.Errorf("%s: differs after the round trip", name)
				}
			}
			if len(m.Tensors) != len(ts) {
				t.Errorf("%d tensors, want %d", len(m.Tensors), len(ts))
			}
			// Independently of our reader: the GGUF names, ggml type ids and innermost-first dims.
			b := buf.Bytes()
			dims, typ, _ := ggufTensorFields(t, b, "blk.0.ffn_gate.weight")
			wantType := map[tensor.DType]uint32{tensor.F32: 0, tensor.F16: 1, tensor.BF16: 30, tensor.Q8_0: 8, tensor.Q4_0: 2}[dt]
			le := binary.LittleEndian
			if le.Uint32(b[typ:]) != wantType || le.Uint64(b[dims:]) != 64 || le.Uint64(b[dims+8:]) != 172 {
				t.Errorf("blk.0.ffn_gate.weight: type %d dims [%d %d], want %d [64 172]", le.Uint32(b[typ:]), le.Uint64(b[dims:]), le.Uint64(b[dims+8:]), wantType)
			}
		})
	}
}

func TestWriteGGUFMetadataRoundTrip(t *testing.T) {
	meta := map[string]any{
		"u8": uint8(200), "i8": int8(-100), "u16": uint16(60000), "i16": int16(-30000),
		"u32": uint32(4e9), "i32": int32(-2e9), "f32": float32(1.5), "bool": true, "str": "héllo ▁",
		"u64": uint64(1 << 63), "i64": int64(-1 << 62), "f64": math.Pi, "empty": "",
		"a.u8": []uint8{1, 2}, "a.i8": []int8{-1}, "a.bool": []bool{true, false}, "a.u16": []uint16{7},
		"a.i16": []int16{-7}, "a.u32": []uint32{1, 2, 3}, "a.i32": []int32{-1, 0, 1}, "a.f32": []float32{0.5, -2},
		"a.u64": []uint64{9}, "a.i64": []int64{-9}, "a.f64": []float64{2.5}, "a.str": []string{"a", "", "ç"},
		"a.empty":           []string{},
		"a.nested":          []any{[]int32{1, 2}, []string{"x"}, []any{[]float32{3}}, []uint8{}},
		"general.alignment": uint32(64),
	}
	tensors := []*tensor.Tensor{
		{Name: "a", DType: tensor.F32, Shape: []int{3}, Data: tensor.Encode(tensor.F32, []float32{1, 2, 3})},
		{Name: "b", DType: tensor.Q8_0, Shape: []int{2, 32}, Data: tensor.Encode(tensor.Q8_0, make([]float32, 64))},
		{Name: "c", DType: tensor.F16, Shape: []int{1, 2, 3, 4}, Data: tensor.Encode(tensor.F16, make([]float32, 24))},
	}
	var buf bytes.Buffer
	if err := WriteGGUF(&buf, meta, tensors); err != nil {
		t.Fatal(err)
	}
	info, err := parseGGUF(buf.Bytes(), "mem.gguf")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(info.Meta, meta) {
		for k, v := range meta {
			if !reflect.DeepEqual(info.Meta[k], v) {
				t.Errorf("%s: got %#v, want %#v", k, info.Meta[k], v)
			}
		}
	}
	if info.Alignment != 64 || info.DataOffset%64 != 0 || !slices.IsSorted(info.Keys) {
		t.Errorf("alignment %d, data offset %d, keys %q", info.Alignment, info.DataOffset, info.Keys)
	}
	for i, gt := range info.Tensors {
		want := tensors[i]
		wt, _ := ggmlTypeOf(want.DType)
		if gt.Name != want.Name || gt.Type != wt || !slices.Equal(gt.Shape, want.Shape) || gt.Offset%64 != 0 ||
			!bytes.Equal(buf.Bytes()[info.DataOffset+gt.Offset:][:gt.Size], want.Data) {
			t.Errorf("tensor %d: got %+v", i, gt)
		}
	}

	// A non-power-of-two alignment is refused by the writer and, patched into a file, by the reader.
	b := slices.Clone(buf.Bytes())
	putU32(b, ggufKeyAt(t, b, "general.alignment")+4, 48)
	if _, err := parseGGUF(b, "mem.gguf"); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "general.alignment 48") {
		t.Errorf("alignment 48: %v", err)
	}
	for _, bad := range []map[string]any{
		{"general.alignment": uint32(48)},
		{"general.alignment": 64}, // an int, not a uint32
		{"x": 1},
		{"x": []any{"not an array"}},
		{"x": []int{1}},
	} {
		if err := WriteGGUF(io.Discard, bad, nil); err == nil {
			t.Errorf("WriteGGUF(%v) succeeded", bad)
		}
	}
	if err := WriteGGUF(io.Discard, nil, []*tensor.Tensor{{Name: "q4k", DType: tensor.DType(99), Shape: []int{1}, Data: []byte{0}}}); err == nil {
		t.Error("WriteGGUF of an unknown dtype succeeded")
	}
}

func TestGGMLTypes(t *testing.T) {
	// The ids and names GGUF files use (ggml.h), and the thirteen llamacu computes with.
	for _, tc := range []struct {
		id   GGMLType
		name string
		dt   tensor.DType
		ok   bool
	}{
		{0, "F32", tensor.F32, true}, {1, "F16", tensor.F16, true}, {2, "Q4_0", tensor.Q4_0, true},
		{8, "Q8_0", tensor.Q8_0, true}, {30, "BF16", tensor.BF16, true},
		{3, "Q4_1", tensor.Q4_1, true}, {6, "Q5_0", tensor.Q5_0, true}, {7, "Q5_1", tensor.Q5_1, true},
		{10, "Q2_K", tensor.Q2_K, true}, {11, "Q3_K", tensor.Q3_K, true}, {12, "Q4_K", tensor.Q4_K, true},
		{13, "Q5_K", tensor.Q5_K, true}, {14, "Q6_K", tensor.Q6_K, true},
		{9, "Q8_1", 0, false}, {15, "Q8_K", 0, false}, {20, "IQ4_NL", 0, false}, {4, "ggml type 4", 0, false},
	} {
		dt, err := tc.id.DType()
		if tc.id.String() != tc.name || (err == nil) != tc.ok || (tc.ok && dt != tc.dt) || (!tc.ok && !errors.Is(err, tensor.ErrUnknownDType)) {
			t.Errorf("%d: %q, %v, %v; want %q, %v", tc.id, tc.id.String(), dt, err, tc.name, tc.dt)
		}
		if tc.ok {
			if back, err := ggmlTypeOf(tc.dt); err != nil || back != tc.id {
				t.Errorf("ggmlTypeOf(%v) = %d, %v", tc.dt, back, err)
			}
		}
	}
	// Block geometry agrees with package tensor for the shared types.
	for _, dt := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16, tensor.Q8_0, tensor.Q4_0} {
		id, _ := ggmlTypeOf(dt)
		if ti := ggmlTypes[id]; ti.blockSize != int64(dt.BlockSize()) || ti.blockBytes != int64(dt.BlockBytes()) {
			t.Errorf("%v: ggml geometry %+v, tensor %d/%d", dt, ti, dt.BlockSize(), dt.BlockBytes())
		}
	}
}

func TestGGUFNames(t *testing.T) {
	for _, ws := range model.Tiny.WeightShapes() {
		g, ok := ggufName(ws.Name)
		if !ok {
			t.Errorf("%s has no GGUF name", ws.Name)
			continue
		}
		if back, skip := ggufCanonicalName(g); back != ws.Name || skip != "" {
			t.Errorf("%s → %s → %q", ws.Name, g, back)
		}
	}
	for _, name := range []string{"blk.01.attn_q.weight", "blk.-1.attn_q.weight", "blk.0.attn_q.bias", "blk.x.ffn_up.weight", "blk.0", "token_embd", "blk.99999999999999999999.attn_q.weight"} {
		if c, skip := ggufCanonicalName(name); c != "" || skip != "" {
			t.Errorf("%s → %q %q, want unknown", name, c, skip)
		}
	}
	if _, skip := ggufCanonicalName("rope_freqs.weight"); skip == "" {
		t.Error("rope_freqs.weight is not skipped")
	}
}

func TestGGUFRopeFreqsSkipped(t *testing.T) {
	// A file with rope_freqs.weight loads and reports it in Skipped.
	src, err := Open(readerTestdata(t, "stories260K/stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var ts []*tensor.Tensor
	for _, ws := range src.Config.WeightShapes() {
		st := src.Tensors[ws.Name]
		g, _ := ggufName(ws.Name)
		ts = append(ts, &tensor.Tensor{Name: g, DType: st.DType, Shape: st.Shape, Data: st.Data})
	}
	ts = append(ts, &tensor.Tensor{Name: "rope_freqs.weight", DType: tensor.F32, Shape: []int{4}, Data: make([]byte, 16)})
	var buf bytes.Buffer
	if err := WriteGGUF(&buf, src.Meta, ts); err != nil {
		t.Fatal(err)
	}
	m, err := ggufModel(buf.Bytes(), "mem.gguf")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Skipped) != 1 || !strings.HasPrefix(m.Skipped[0], "rope_freqs.weight: ") {
		t.Errorf("Skipped = %q", m.Skipped)
	}
	// And an extra unknown tensor is refused, naming it.
	ts[len(ts)-1].Name = "blk.0.attn_q.bias"
	buf.Reset()
	if err := WriteGGUF(&buf, src.Meta, ts); err != nil {
		t.Fatal(err)
	}
	if _, err := ggufModel(buf.Bytes(), "mem.gguf"); !errors.Is(err, ErrUnused) || !strings.Contains(err.Error(), `"blk.0.attn_q.bias"`) {
		t.Errorf("extra tensor: %v", err)
	}
}

// Converting a model to a Q8_0 GGUF: quantize every matrix whose rows are whole blocks, keep the
// rest (norms, and matrices like stories260K's (64, 172) w2) as they are.
func ExampleWriteGGUFModel() {
	m, err := Open("stories260K.bin")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	q := make(map[string]*tensor.Tensor, len(m.Tensors))
	for name, t := range m.Tensors {
		nt := *t
		if len(t.Shape) == 2 && t.Cols()%tensor.QK == 0 {
			nt.DType, nt.Data = tensor.Q8_0, tensor.Encode(tensor.Q8_0, t.Float32s())
		}
		q[name] = &nt
	}
	f, err := os.Create("stories260K-q8_0.gguf")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()
	if err := WriteGGUFModel(f, m.Config, m.Vocab, q); err != nil {
		fmt.Println(err)
	}
}
