package tokenizer

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// addSeedFile adds a shared file (or its first n bytes, n > 0) to a fuzz corpus when present.
func addSeedFile(f *testing.F, rel string, n int) {
	b, err := os.ReadFile(filepath.Join(sharedDir, rel))
	if err != nil {
		return // seeding is optional; the fuzzer still runs
	}
	if n > 0 && n < len(b) {
		b = b[:n]
	}
	f.Add(b)
}

// checkTokenizer exercises a tokenizer built from untrusted data: nothing may panic.
func checkTokenizer(t *testing.T, tok *Tokenizer) {
	for _, s := range []string{"", "Hello world", " 안녕\xff\t", "<s>"} {
		ids := tok.Encode(s, true)
		for _, id := range ids {
			if id < 0 || int(id) >= tok.VocabSize() {
				t.Fatalf("Encode(%q) produced id %d outside [0,%d)", s, id, tok.VocabSize())
			}
		}
		tok.Decode(ids)
		d := tok.NewStreamDecoder(-1)
		for _, id := range ids {
			if c := d.Add(id); !utf8.ValidString(c) {
				t.Fatalf("StreamDecoder returned invalid UTF-8 %q", c)
			}
		}
		d.Flush()
	}
}

func FuzzModelProto(f *testing.F) {
	addSeedFile(f, "stories260K/tok512.model", 0)
	addSeedFile(f, "llama2-tokenizer/tokenizer.model", 4096)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x05, 0x0a, 0x03, 0xe2, 0x96, 0x81, 0x12, 0x02, 0x18, 0x02})
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := FromModelProto(data)
		if err != nil {
			if tok != nil {
				t.Fatal("non-nil tokenizer with an error")
			}
			return
		}
		checkTokenizer(t, tok)
	})
}

func FuzzLlama2cBin(f *testing.F) {
	addSeedFile(f, "stories260K/tok512.bin", 0)
	addSeedFile(f, "llama2-tokenizer/tokenizer.bin", 4096)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, n := range []int{0, 3, 512} {
			tok, err := FromLlama2cBin(data, n)
			if err != nil {
				continue
			}
			if n > 0 && tok.VocabSize() != n {
				t.Fatalf("vocab %d, want %d", tok.VocabSize(), n)
			}
			checkTokenizer(t, tok)
		}
	})
}

// FuzzEncodeDecode checks, on the LLaMA 2 vocabulary, for any input string s:
//   - Decode(Encode(s)) == roundTrip(s): s itself with each invalid UTF-8 byte as U+FFFD and each
//     "▁" as a space; with or without BOS. (Exact because LLaMA keeps all whitespace, adds the one
//     dummy-prefix space that Decode removes, and byte fallback covers every character.)
//   - the pieces of Encode(s) spell "▁" + s' byte for byte (s' = s with invalid bytes replaced and
//     spaces escaped), byte pieces standing for their byte;
//   - Encode equals the O(n²) reference naiveEncode (short inputs);
//   - streaming the ids after BOS yields only valid UTF-8 and concatenates to Decode.
func FuzzEncodeDecode(f *testing.F) {
	for _, s := range []string{"", " ", "Hello world", "안녕하세요, 세계!", "\xed\x95", "▁x", "  a  \t\n", "🦙Ꙋ", "<s></s>"} {
		f.Add(s)
	}
	tok := llamaModel(f)
	f.Fuzz(func(t *testing.T, s string) {
		ids := tok.Encode(s, false)
		want := roundTrip(s)
		if got := tok.Decode(ids); got != want {
			t.Fatalf("Decode(Encode(%q)) = %q, want %q", s, got, want)
		}
		var spelled strings.Builder
		for _, id := range ids {
			if tok.IsByte(id) {
				b, _ := parseBytePiece(tok.Piece(id))
				spelled.WriteByte(b)
			} else {
				spelled.WriteString(tok.Piece(id))
			}
		}
		norm := ""
		if s != "" {
			norm = "▁" + strings.ReplaceAll(roundTripBytes(s), " ", "▁")
		}
		if spelled.String() != norm {
			t.Fatalf("pieces of %q spell %q, want %q", s, spelled.String(), norm)
		}
		withBOS := tok.Encode(s, true)
		if len(s) <= 256 {
			if ref := naiveEncode(tok, s); !slices.Equal(withBOS, ref) {
				t.Fatalf("Encode(%q) = %v, naive BPE %v", s, withBOS, ref)
			}
		}
		var streamed strings.Builder
		for _, c := range streamAll(tok, withBOS[0], withBOS[1:]) {
			if !utf8.ValidString(c) {
				t.Fatalf("stream chunk %q is not valid UTF-8", c)
			}
			streamed.WriteString(c)
		}
		if streamed.String() != want {
			t.Fatalf("streamed %q, want %q", streamed.String(), want)
		}
	})
}
