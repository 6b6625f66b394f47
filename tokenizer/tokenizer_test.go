package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// sharedDir is ../shared/testdata from the repository root (see its README).
const sharedDir = "../../shared/testdata"

// sharedPath returns the path of a shared test file or skips the test naming it.
func sharedPath(tb testing.TB, rel string) string {
	tb.Helper()
	p := filepath.Join(sharedDir, rel)
	if _, err := os.Stat(p); err != nil {
		tb.Skipf("shared test data %s not available: %v", p, err)
	}
	return p
}

// The LLaMA 2 tokenizers are loaded once per test binary.
var (
	llamaModelOnce = sync.OnceValues(func() (*Tokenizer, error) {
		return LoadModelProto(filepath.Join(sharedDir, "llama2-tokenizer/tokenizer.model"))
	})
	llamaBinOnce = sync.OnceValues(func() (*Tokenizer, error) {
		return LoadLlama2cBin(filepath.Join(sharedDir, "llama2-tokenizer/tokenizer.bin"), 32000)
	})
	llamaGGUFOnce = sync.OnceValues(func() (*Tokenizer, error) {
		v, err := readGGUFVocab(filepath.Join(sharedDir, "llama2-tokenizer/ggml-vocab-llama-spm.gguf"))
		if err != nil {
			return nil, err
		}
		return FromVocab(v)
	})
)

func load(tb testing.TB, rel string, f func() (*Tokenizer, error)) *Tokenizer {
	tb.Helper()
	sharedPath(tb, rel)
	tok, err := f()
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

func llamaModel(tb testing.TB) *Tokenizer {
	return load(tb, "llama2-tokenizer/tokenizer.model", llamaModelOnce)
}

// llamaTokenizers returns the LLaMA 2 vocabulary from each of its three file formats.
func llamaTokenizers(t *testing.T) map[string]*Tokenizer {
	return map[string]*Tokenizer{
		"tokenizer.model": llamaModel(t),
		"tokenizer.bin":   load(t, "llama2-tokenizer/tokenizer.bin", llamaBinOnce),
		"gguf":            load(t, "llama2-tokenizer/ggml-vocab-llama-spm.gguf", llamaGGUFOnce),
	}
}

// vectorCase is one reference case, BOS already stripped from want.
type vectorCase struct {
	name    string
	input   string
	want    []int32  // ids without BOS
	tokens  []string // expected pieces, or nil
	decoded *string  // expected Decode of the ids, or nil
}

// loadVectors reads the published vector files and the llama.cpp vectors generated for this
// package (testdata/llama-cpp-extra.json, see gen-extra.mjs).
func loadVectors(t *testing.T) []vectorCase {
	t.Helper()
	var cases []vectorCase

	var spm struct {
		Cases []struct {
			Input  string  `json:"input"`
			IDs    []int32 `json:"expected_ids_no_bos"`
			Agrees bool    `json:"raw_sentencepiece_agrees"`
		} `json:"cases"`
	}
	readJSON(t, sharedPath(t, "tokenizer-vectors/llama-cpp-spm.json"), &spm)
	for i, c := range spm.Cases {
		if !c.Agrees {
			// SentencePiece is the spec; every case in the file agrees with it today.
			t.Fatalf("llama-cpp-spm case %d %q: raw_sentencepiece_agrees is false; decide which behaviour to test", i, c.Input)
		}
		cases = append(cases, vectorCase{name: fmt.Sprintf("llama.cpp/%d", i), input: c.Input, want: c.IDs})
	}

	var tjs struct {
		Cases []struct {
			Name    string   `json:"name"`
			Text    string   `json:"text"`
			IDs     []int32  `json:"expected_ids"`
			Tokens  []string `json:"expected_tokens"`
			Decoded string   `json:"decoded"`
			Agrees  bool     `json:"raw_sentencepiece_agrees"`
		} `json:"cases"`
	}
	readJSON(t, sharedPath(t, "tokenizer-vectors/transformers-js-llama.json"), &tjs)
	for i, c := range tjs.Cases {
		if !c.Agrees {
			t.Fatalf("transformers.js case %s: raw_sentencepiece_agrees is false; decide which behaviour to test", c.Name)
		}
		if len(c.IDs) == 0 || c.IDs[0] != 1 {
			t.Fatalf("transformers.js case %s: ids %v do not start with BOS", c.Name, c.IDs)
		}
		// HF's legacy decode writes "<s> " for BOS; SentencePiece's gives nothing for it.
		dec, ok := strings.CutPrefix(c.Decoded, "<s> ")
		if !ok {
			t.Fatalf("transformers.js case %s: decoded %q does not start with \"<s> \"", c.Name, c.Decoded)
		}
		cases = append(cases, vectorCase{
			name: fmt.Sprintf("transformers.js/%d-%s", i, c.Name), input: c.Text,
			want: c.IDs[1:], tokens: c.Tokens, decoded: &dec,
		})
	}

	var extra struct {
		Source string `json:"source"`
		Cases  []struct {
			Input string  `json:"input"`
			IDs   []int32 `json:"expected_ids_no_bos"`
		} `json:"cases"`
	}
	readJSON(t, "testdata/llama-cpp-extra.json", &extra)
	if !strings.Contains(extra.Source, "llama.cpp") {
		t.Fatalf("testdata/llama-cpp-extra.json: no provenance in source %q", extra.Source)
	}
	for i, c := range extra.Cases {
		cases = append(cases, vectorCase{name: fmt.Sprintf("llama.cpp-extra/%d", i), input: c.Input, want: c.IDs})
	}
	return cases
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// roundTrip is what Decode(Encode(s)) must give for LLaMA: s with each invalid UTF-8 byte as
// U+FFFD (SentencePiece's normaliser) and each "▁" (U+2581) as a space (the decoder cannot tell
// it from an escaped space). Everything else survives: the dummy prefix is the only leading
// space Decode drops, and byte fallback covers every character.
func roundTrip(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteString("\uFFFD")
		case r == '▁':
			b.WriteByte(' ')
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func TestVectors(t *testing.T) {
	cases := loadVectors(t)
	if len(cases) < 46+37+30 {
		t.Fatalf("only %d vector cases", len(cases))
	}
	for src, tok := range llamaTokenizers(t) {
		t.Run(src, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					got := tok.Encode(c.input, false)
					if !slices.Equal(got, c.want) {
						t.Fatalf("Encode(%q, false)\n got %v %q\nwant %v %q", c.input, got, pieces(tok, got), c.want, pieces(tok, c.want))
					}
					withBOS := tok.Encode(c.input, true)
					if len(withBOS) == 0 || withBOS[0] != 1 || !slices.Equal(withBOS[1:], c.want) {
						t.Errorf("Encode(%q, true) = %v, want [1] + %v", c.input, withBOS, c.want)
					}
					if c.tokens != nil && !slices.Equal(pieces(tok, got), c.tokens) {
						t.Errorf("pieces of %q: (-want +got)\n-%q\n+%q", c.input, c.tokens, pieces(tok, got))
					}
					dec := tok.Decode(c.want)
					if want := roundTrip(c.input); dec != want {
						t.Errorf("Decode(%v) = %q, want %q", c.want, dec, want)
					}
					if c.decoded != nil && dec != *c.decoded {
						t.Errorf("Decode(%v) = %q, want the reference's %q", c.want, dec, *c.decoded)
					}
					if d := tok.Decode(withBOS); d != dec {
						t.Errorf("Decode with BOS = %q, without = %q", d, dec)
					}
				})
			}
		})
	}
}

func pieces(tok *Tokenizer, ids []int32) []string {
	p := make([]string, len(ids))
	for i, id := range ids {
		p[i] = tok.Piece(id)
	}
	return p
}

// TestFormatsAgree checks that tokenizer.bin and the GGUF vocabulary hold exactly the pieces,
// scores and types of tokenizer.model (the .bin's types and byte-fallback flag are inferred).
func TestFormatsAgree(t *testing.T) {
	ref := llamaModel(t)
	if ref.VocabSize() != 32000 || ref.BOS() != 1 || ref.EOS() != 2 || ref.UNK() != 0 || ref.PAD() != -1 || !ref.ByteFallback() {
		t.Fatalf("tokenizer.model: vocab %d bos %d eos %d unk %d pad %d byte fallback %v; want 32000 1 2 0 -1 true",
			ref.VocabSize(), ref.BOS(), ref.EOS(), ref.UNK(), ref.PAD(), ref.ByteFallback())
	}
	if id, ok := ref.ID("<0x00>"); !ok || id != 3 {
		t.Errorf("ID(<0x00>) = %d, %v; want 3 (README)", id, ok)
	}
	for src, tok := range llamaTokenizers(t) {
		t.Run(src, func(t *testing.T) {
			if tok.VocabSize() != ref.VocabSize() || tok.BOS() != ref.BOS() || tok.EOS() != ref.EOS() || tok.UNK() != ref.UNK() || tok.ByteFallback() != ref.ByteFallback() {
				t.Fatalf("vocab %d bos %d eos %d unk %d; want %d %d %d %d", tok.VocabSize(), tok.BOS(), tok.EOS(), tok.UNK(), ref.VocabSize(), ref.BOS(), ref.EOS(), ref.UNK())
			}
			bad := 0
			for id := range int32(ref.VocabSize()) {
				if tok.Piece(id) != ref.Piece(id) || tok.Score(id) != ref.Score(id) || tok.Type(id) != ref.Type(id) {
					if bad++; bad <= 5 {
						t.Errorf("id %d: %q %v %d; want %q %v %d", id, tok.Piece(id), tok.Score(id), tok.Type(id), ref.Piece(id), ref.Score(id), ref.Type(id))
					}
				}
			}
			if !tok.IsControl(1) || !tok.IsControl(2) || tok.IsControl(0) || tok.IsControl(3) || !tok.IsByte(3) || tok.IsControl(-1) || tok.IsControl(32000) {
				t.Error("IsControl/IsByte disagree with the README (1, 2 control; 3 = <0x00>)")
			}
		})
	}
}

// TestStories260K uses the 512-piece vocabulary of the stories260K model in both formats; the
// shared README gives "Once upon a time" as BOS + 4 tokens.
func TestStories260K(t *testing.T) {
	model, err := LoadModelProto(sharedPath(t, "stories260K/tok512.model"))
	if err != nil {
		t.Fatal(err)
	}
	bin, err := LoadLlama2cBin(sharedPath(t, "stories260K/tok512.bin"), 512)
	if err != nil {
		t.Fatal(err)
	}
	if model.VocabSize() != 512 || bin.VocabSize() != 512 {
		t.Fatalf("vocab sizes %d and %d, want 512", model.VocabSize(), bin.VocabSize())
	}
	once := model.Encode("Once upon a time", true)
	if len(once) != 5 || once[0] != model.BOS() {
		t.Errorf("Encode(Once upon a time) = %v %q, want BOS + 4 tokens", once, pieces(model, once))
	}
	for _, s := range []string{
		"Once upon a time",
		"Once upon a time, there was a little girl named Lily. She loved to play outside.",
		"",
		"Tom said, \"I'm happy!\"\nThe end.",
		"안녕하세요, 세계! 🦙",
		"naïve café\t123",
		"\xff\xfe invalid",
	} {
		t.Run("", func(t *testing.T) {
			a, b := model.Encode(s, true), bin.Encode(s, true)
			if !slices.Equal(a, b) {
				t.Fatalf("%q: tok512.model %v, tok512.bin %v", s, a, b)
			}
			if got, want := model.Decode(a), roundTrip(s); got != want {
				t.Errorf("Decode(Encode(%q)) = %q, want %q", s, got, want)
			}
		})
	}
	// tok512.model keeps SentencePiece's default remove_extra_whitespaces=true (LLaMA's model sets
	// it false); llama2.c's run.c, the reference for tok512.bin, never collapses whitespace. So the
	// two files differ exactly on leading, trailing and repeated spaces.
	for _, c := range []struct{ text, collapsed string }{
		{" ", ""},
		{"  leading and trailing  ", "leading and trailing"},
		{"Once  upon \t a   time", "Once upon \t a time"},
	} {
		if got, want := model.Encode(c.text, true), model.Encode(c.collapsed, true); !slices.Equal(got, want) {
			t.Errorf("tok512.model: Encode(%q) = %v, want Encode(%q) = %v", c.text, got, c.collapsed, want)
		}
		if got, want := bin.Decode(bin.Encode(c.text, true)), c.text; got != want {
			t.Errorf("tok512.bin: round trip of %q gave %q", c.text, got)
		}
	}
	// The expected generation text starts with the prompt, decoded as run.c prints it.
	want, err := os.ReadFile(sharedPath(t, "stories260K/expected_once_upon_a_time_n64.txt"))
	if err != nil {
		t.Fatal(err)
	}
	ids := model.Encode(string(want), true)
	if got := model.Decode(ids); got != string(want) {
		t.Errorf("round trip of the reference text failed:\n got %q\nwant %q", got, want)
	}
	if !slices.Equal(ids[:5], once) {
		t.Errorf("reference text starts with %v, prompt is %v", ids[:5], once)
	}
}

func TestEncodeEdgeCases(t *testing.T) {
	tok := llamaModel(t)
	for _, c := range []struct {
		name   string
		text   string
		bos    bool
		pieces []string
	}{
		{"empty", "", false, []string{}},
		{"empty with BOS", "", true, []string{"<s>"}},
		// Control pieces are never produced from text.
		{"literal BOS", "<s>", false, []string{"▁<", "s", ">"}},
		// Each invalid UTF-8 byte becomes U+FFFD, which LLaMA has as a piece.
		{"invalid byte", "\xff", false, []string{"▁", "\uFFFD"}},
		{"invalid bytes", "a\xed\x95", false, []string{"▁a", "\uFFFD\uFFFD"}},
		{"NUL", "\x00", false, []string{"▁", "<0x00>"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := pieces(tok, tok.Encode(c.text, c.bos))
			if !slices.Equal(got, c.pieces) {
				t.Errorf("Encode(%q) = %q, want %q", c.text, got, c.pieces)
			}
		})
	}
	if got := tok.Decode([]int32{0}); got != " \u2047 " {
		t.Errorf("Decode(<unk>) = %q, want SentencePiece's unk surface %q", got, " \u2047 ")
	}
	if got := tok.Decode([]int32{-1, 40000, 15043}); got != "Hello" {
		t.Errorf("Decode with out-of-range ids = %q, want %q", got, "Hello")
	}
	if got := tok.Piece(-1) + tok.Piece(32000); got != "" {
		t.Errorf("Piece out of range = %q", got)
	}
}

// TokenBytes is each token's own surface: a space for "▁", one raw byte for a byte piece,
// nothing for a control piece; concatenated over a sequence that does not start with a word
// (so that no dummy-prefix space is dropped), they are Decode's bytes.
func TestTokenBytes(t *testing.T) {
	tok := llamaModel(t)
	for _, tc := range []struct {
		piece string
		want  []byte
	}{{"▁Hello", []byte(" Hello")}, {"<0xE5>", []byte{0xe5}}, {"<0x0A>", []byte("\n")}, {"<s>", []byte{}}, {"<unk>", []byte(" \u2047 ")}} {
		id, ok := tok.ID(tc.piece)
		if !ok {
			t.Fatalf("no piece %q", tc.piece)
		}
		if got := tok.TokenBytes(id); !bytes.Equal(got, tc.want) {
			t.Errorf("TokenBytes(%q) = %q, want %q", tc.piece, got, tc.want)
		}
	}
	ids := tok.Encode("x 안녕하세요, 世界 ok", false)
	var all []byte
	for _, id := range ids {
		all = append(all, tok.TokenBytes(id)...)
	}
	if want := " " + tok.Decode(ids); string(all) != want {
		t.Errorf("TokenBytes concatenated = %q, want %q", all, want)
	}
	if tok.TokenBytes(-1) != nil || tok.TokenBytes(32000) != nil {
		t.Error("TokenBytes out of range is not nil")
	}
}

// TestDecodeSentencePieceRules pins the decoder rules of sentencepiece_processor.cc.
func TestDecodeSentencePieceRules(t *testing.T) {
	tok := llamaModel(t)
	id := func(p string) int32 {
		i, ok := tok.ID(p)
		if !ok {
			t.Fatalf("no piece %q", p)
		}
		return i
	}
	for _, c := range []struct {
		name string
		ids  []int32
		want string
	}{
		{"first space dropped", []int32{id("▁Hello"), id("▁world")}, "Hello world"},
		{"after BOS too", []int32{1, id("▁Hello")}, "Hello"},
		{"only one space", []int32{id("▁▁"), id("▁Hello")}, "  Hello"},
		{"lone dummy prefix", []int32{id("▁"), id("▁Hello")}, " Hello"},
		{"bytes first keep the space", []int32{id("<0x41>"), id("▁Hello")}, "A Hello"},
		{"korean bytes", []int32{id("<0xED>"), id("<0x95>"), id("<0x9C>")}, "한"},
		{"truncated char", []int32{id("<0xED>"), id("<0x95>")}, "\uFFFD\uFFFD"},
		{"run split by control", []int32{id("<0xED>"), 2, id("<0x95>"), id("<0x9C>")}, "\uFFFD\uFFFD\uFFFD"},
		{"invalid then valid", []int32{id("<0xFF>"), id("<0x41>")}, "\uFFFDA"},
		{"EOS", []int32{id("▁Hi"), 2}, "Hi"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := tok.Decode(c.ids); got != c.want {
				t.Errorf("Decode(%q) = %q, want %q", pieces(tok, c.ids), got, c.want)
			}
		})
	}
}

// TestNaiveBPE compares Encode with a plain O(n²) transcription of the algorithm (llama2.c's
// run.c loop: merge the best-scoring pair, leftmost on ties, until none merges) on varied text.
func TestNaiveBPE(t *testing.T) {
	tok := llamaModel(t)
	texts := []string{
		"The quick brown fox jumps over the lazy dog. 1234567890",
		"대한민국의 수도는 서울입니다. 안녕하세요!",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbb",
		"    \t\t\n\n  mixed   whitespace  ",
		strings.Repeat("tokenization ", 20),
	}
	for _, s := range texts {
		if got, want := tok.Encode(s, true), naiveEncode(tok, s); !slices.Equal(got, want) {
			t.Errorf("Encode(%q)\n got %v\nwant %v", s, got, want)
		}
	}
}

// naiveEncode is the reference for TestNaiveBPE and FuzzEncodeDecode (LLaMA settings only: dummy
// prefix, byte fallback, no user-defined or unused pieces).
func naiveEncode(tok *Tokenizer, text string) []int32 {
	out := []int32{tok.BOS()}
	if text == "" {
		return out
	}
	norm := "▁" + strings.ReplaceAll(roundTripBytes(text), " ", "▁")
	var syms []string
	for _, r := range norm {
		syms = append(syms, string(r))
	}
	for {
		best, bestScore := -1, float32(0)
		for i := 0; i+1 < len(syms); i++ {
			id, ok := tok.merge[syms[i]+syms[i+1]]
			if ok && (best < 0 || tok.scores[id] > bestScore) {
				best, bestScore = i, tok.scores[id]
			}
		}
		if best < 0 {
			break
		}
		syms = slices.Replace(syms, best, best+2, syms[best]+syms[best+1])
	}
	for _, s := range syms {
		if id, ok := tok.ids[s]; ok {
			out = append(out, id)
			continue
		}
		for i := 0; i < len(s); i++ {
			out = append(out, tok.bytes[s[i]])
		}
	}
	return out
}

// roundTripBytes replaces each invalid UTF-8 byte by U+FFFD.
func roundTripBytes(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func TestModelProtoErrors(t *testing.T) {
	good, err := os.ReadFile(sharedPath(t, "stories260K/tok512.model"))
	if err != nil {
		t.Fatal(err)
	}
	// A trainer_spec appended later overrides fields of the earlier one (proto merge semantics):
	// model_type = 1 (unigram).
	unigram := append(slices.Clone(good), 0x12, 0x02, 0x18, 0x01)
	charsmap := append(slices.Clone(good), 0x1a, 0x03, 0x12, 0x01, 0x00)
	suffix := append(slices.Clone(good), 0x12, 0x03, 0xc0, 0x01, 0x01) // field 24 = true
	for _, c := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrUnsupported}, // an empty message is a unigram model without pieces
		{"truncated", good[:len(good)/2], ErrFormat},
		{"garbage", []byte("this is not a protobuf"), ErrFormat},
		{"unigram", unigram, ErrUnsupported},
		{"charsmap", charsmap, ErrUnsupported},
		{"whitespace as suffix", suffix, ErrUnsupported},
		{"duplicate piece", append(slices.Clone(good), good[:2+int(good[1])]...), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := FromModelProto(c.data)
			if c.want == nil {
				// The first field of tok512.model is the <unk> piece; appending it again makes a
				// duplicate.
				if !errors.Is(err, ErrVocab) {
					t.Fatalf("got %v, want a duplicate-piece error", err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestLlama2cBinErrors(t *testing.T) {
	good, err := os.ReadFile(sharedPath(t, "stories260K/tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := FromLlama2cBin(good, 513); !errors.Is(err, ErrFormat) {
		t.Errorf("vocab 513 from a 512-token file: got %v, want ErrFormat", err)
	}
	small, err := FromLlama2cBin(good, 300)
	if err != nil || small.VocabSize() != 300 {
		t.Errorf("vocab 300 from a 512-token file: %v, %v; want the first 300 tokens", small, err)
	}
	all, err := FromLlama2cBin(good, 0)
	if err != nil || all.VocabSize() != 512 {
		t.Errorf("vocab 0 (read to end): %v; want 512 tokens", err)
	}
	for _, data := range [][]byte{nil, good[:3], good[:len(good)-1]} {
		if _, err := FromLlama2cBin(data, 512); !errors.Is(err, ErrFormat) {
			t.Errorf("%d bytes: got %v, want ErrFormat", len(data), err)
		}
	}
}

func TestFromVocab(t *testing.T) {
	v := Vocab{
		Tokens: []string{"<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "ab", "▁ab"},
		Scores: []float32{0, 0, 0, -1, -2, -3, -4, -5, -6},
		BOS:    1, EOS: 2, UNK: 0, PAD: -1, AddDummyPrefix: true,
	}
	tok, err := FromVocab(v)
	if err != nil {
		t.Fatal(err)
	}
	if tok.ByteFallback() {
		t.Error("byte fallback without byte pieces")
	}
	// No byte pieces: unknown characters become <unk>, one per run (SentencePiece merges runs).
	if got, want := pieces(tok, tok.Encode("ab xyz b", false)), []string{"▁ab", "▁", "<unk>", "▁", "b"}; !slices.Equal(got, want) {
		t.Errorf("Encode = %q, want %q", got, want)
	}
	if got := tok.Decode(tok.Encode("ab xyz", true)); got != "ab  \u2047 " {
		t.Errorf("Decode = %q", got)
	}
	bad := v
	bad.Scores = bad.Scores[:2]
	if _, err := FromVocab(bad); !errors.Is(err, ErrVocab) {
		t.Errorf("short scores: %v", err)
	}
	bad = v
	bad.BOS = 99
	if _, err := FromVocab(bad); !errors.Is(err, ErrVocab) {
		t.Errorf("bos out of range: %v", err)
	}
	if _, err := FromVocab(Vocab{}); !errors.Is(err, ErrVocab) {
		t.Errorf("empty vocab: %v", err)
	}
}

func BenchmarkEncode(b *testing.B) {
	tok := llamaModel(b)
	text := benchText()
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n = len(tok.Encode(text, true))
	}
	b.ReportMetric(float64(n), "tokens/op")
}

func BenchmarkDecode(b *testing.B) {
	tok := llamaModel(b)
	text := benchText()
	ids := tok.Encode(text, true)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		tok.Decode(ids)
	}
}

// benchText is about 6 KB of English with some Korean (byte fallback) mixed in.
func benchText() string {
	return strings.Repeat("Once upon a time, there was a little girl named Lily. She loved to play outside in the "+
		"sunshine. One day, she saw a big, red ball in the park. 대한민국의 수도는 서울입니다. "+
		"def main():\n\tprint(\"hello, world\")  # 42\n", 25)
}
