package tokenizer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// byteVocab is a small vocabulary with <unk>, <s>, </s>, the 256 byte pieces and extra pieces
// of the given types.
func byteVocab(extra []string, extraTypes []int32) Vocab {
	toks := []string{"<unk>", "<s>", "</s>"}
	types := []int32{int32(TypeUnknown), int32(TypeControl), int32(TypeControl)}
	for b := 0; b < 256; b++ {
		toks = append(toks, fmt.Sprintf("<0x%02X>", b))
		types = append(types, int32(TypeByte))
	}
	return Vocab{Tokens: append(toks, extra...), Types: append(types, extraTypes...), BOS: 1, EOS: 2, UNK: 0, PAD: -1, AddDummyPrefix: true}
}

// User-defined pieces are matched longest first, as SentencePiece's prefix matcher does.
func TestUserDefinedLongestMatch(t *testing.T) {
	v := byteVocab([]string{"▁", "a", "<|im", "<|im_start|>"}, []int32{1, 1, 4, 4})
	tok, err := FromVocab(v)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		text string
		want []string
	}{
		{"a<|im_start|>a", []string{"▁", "a", "<|im_start|>", "a"}},
		{"<|im_start|><|im", []string{"▁", "<|im_start|>", "<|im"}},
		{"<|im_star", []string{"▁", "<|im", "<0x5F>", "<0x73>", "<0x74>", "a", "<0x72>"}},
	}
	for _, tc := range cases {
		if got := pieces(tok, tok.Encode(tc.text, false)); !slices.Equal(got, tc.want) {
			t.Errorf("Encode(%q) = %q, want %q", tc.text, got, tc.want)
		}
	}
}

// A vocabulary with user-defined pieces (common in fine-tuned GGUF files) must still encode in
// about linear time. Matching them used to copy the rest of the text at every character
// (quadratic: 256 KiB took 4-8 s) and to hash every prefix up to the longest piece (quadratic in
// the piece length). Now it walks a trie: O(text × longest match), as SentencePiece's matcher.
func TestEncodeUserDefinedIsNotQuadratic(t *testing.T) {
	long := strings.Repeat("b", 31) + "c"
	huge := strings.Repeat("d", 1000) + "e" // long, but no text here matches more than its first byte
	tok, err := FromVocab(byteVocab([]string{"▁", "a", "b", "<|im_start|>", long, huge}, []int32{1, 1, 1, 4, 4, 4}))
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{strings.Repeat("a", 256<<10), strings.Repeat("b", 256<<10), strings.Repeat("x<|im_start|>d", 20000)} {
		start := time.Now()
		ids := tok.Encode(text, true)
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("Encode of %d bytes (%q…) took %v", len(text), text[:8], d)
		}
		if got := tok.Decode(ids); got != text {
			t.Errorf("Decode(Encode(%q…)) does not round-trip", text[:8])
		}
	}
}

// Bad input text never panics and round-trips as SentencePiece normalises it: invalid UTF-8
// bytes become U+FFFD, NUL and control characters survive as byte pieces, and a 1 MiB text
// encodes in well under a second per MiB on the LLaMA vocabulary.
func TestEncodeHostileText(t *testing.T) {
	tok := llamaModel(t)
	texts := map[string]string{
		"invalid utf8":   "a\xff\xfeb\xc3(\xe2\x82",
		"nul":            "x\x00\x00y\x00",
		"controls":       "\x01\x02\x1b[31m\x7f",
		"surrogate utf8": "\xed\xa0\x80\xed\xbf\xbf",
		"1MiB words":     strings.Repeat("hello world ", 1<<20/12),
		"1MiB spaces":    strings.Repeat(" ", 1<<20),
		"1MiB 0xff":      strings.Repeat("\xff", 1<<20),
		"1MiB ▁":         strings.Repeat("▁", 1<<20/3),
	}
	for name, text := range texts {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			ids := tok.Encode(text, true)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Encode took %v", d)
			}
			for _, id := range ids {
				if id < 0 || int(id) >= tok.VocabSize() {
					t.Fatalf("id %d out of range", id)
				}
			}
			// A literal "▁" in the text is SentencePiece's space symbol and decodes as a space.
			want := strings.ReplaceAll(roundTripBytes(text), "▁", " ")
			if got := tok.Decode(ids); got != want {
				t.Errorf("Decode(Encode(text)) differs from the text with invalid bytes replaced (len %d vs %d)", len(got), len(want))
			}
		})
	}
}

// Every malformed vocabulary is an ErrVocab, never a panic.
func TestFromVocabRejects(t *testing.T) {
	good := byteVocab([]string{"▁", "a"}, []int32{1, 1})
	if _, err := FromVocab(good); err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(v *Vocab)) Vocab {
		v := good
		v.Tokens = slices.Clone(good.Tokens)
		v.Types = slices.Clone(good.Types)
		f(&v)
		return v
	}
	cases := map[string]Vocab{
		"empty piece":        mutate(func(v *Vocab) { v.Tokens[len(v.Tokens)-1] = "" }),
		"bos out of range":   mutate(func(v *Vocab) { v.BOS = int32(len(v.Tokens)) }),
		"eos negative":       mutate(func(v *Vocab) { v.EOS = -7 }),
		"pad out of range":   mutate(func(v *Vocab) { v.PAD = 1 << 30 }),
		"unk out of range":   mutate(func(v *Vocab) { v.UNK = int32(len(v.Tokens)) }),
		"unk not unknown":    mutate(func(v *Vocab) { v.UNK = 1 }),
		"no unk":             mutate(func(v *Vocab) { v.UNK = -1; v.Types[0] = int32(TypeNormal) }),
		"type out of range":  mutate(func(v *Vocab) { v.Types[4] = 99 }),
		"negative type":      mutate(func(v *Vocab) { v.Types[4] = -3 }),
		"bad byte piece":     mutate(func(v *Vocab) { v.Tokens[3] = "<0xZZ>" }),
		"short types":        mutate(func(v *Vocab) { v.Types = v.Types[:3] }),
		"only one token":     {Tokens: []string{"<unk>"}, BOS: 1, EOS: -1, UNK: 0, PAD: -1},
		"no tokens, bos set": {BOS: 0, EOS: 0, UNK: 0},
	}
	for name, v := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := FromVocab(v); !errors.Is(err, ErrVocab) {
				t.Errorf("FromVocab: %v, want ErrVocab", err)
			}
		})
	}
	// Accepted oddities: duplicate pieces keep the first id; a vocabulary without byte pieces
	// encodes unknown characters as <unk>.
	dup := mutate(func(v *Vocab) { v.Tokens = append(v.Tokens, "a"); v.Types = append(v.Types, 1) })
	tok, err := FromVocab(dup)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := tok.ID("a"); id != int32(len(good.Tokens)-1) {
		t.Errorf("duplicate piece: ID(a) = %d, want the first, %d", id, len(good.Tokens)-1)
	}
	noBytes := Vocab{Tokens: []string{"<unk>", "<s>", "</s>", "▁"}, BOS: 1, EOS: 2, UNK: 0, PAD: -1, AddDummyPrefix: true}
	tok, err = FromVocab(noBytes)
	if err != nil {
		t.Fatal(err)
	}
	if got := pieces(tok, tok.Encode("héllo\x00", false)); !slices.Equal(got, []string{"▁", "<unk>"}) {
		t.Errorf("no byte pieces: %q", got)
	}
}

// FuzzUserTrie: the trie finds the longest user-defined piece prefixing a text, as trying every
// prefix length from the longest down does.
func FuzzUserTrie(f *testing.F) {
	f.Add("<|im|<|im_start|>|a", "<|im_start|>x")
	f.Add("ab|abc|b", "abcd")
	f.Add("é|éé", "ééé")
	f.Fuzz(func(t *testing.T, pieces, text string) {
		var tr userTrie
		set := map[string]bool{}
		maxLen := 0
		for _, p := range strings.Split(pieces, "|") {
			if p != "" {
				tr.add(p)
				set[p] = true
				maxLen = max(maxLen, len(p))
			}
		}
		for i := 0; i <= len(text); i++ {
			s := text[i:]
			want := 0
			for n := min(len(s), maxLen); n > 0; n-- {
				if set[s[:n]] {
					want = n
					break
				}
			}
			if got := tr.longest(s); got != want {
				t.Fatalf("pieces %q, text %q: longest = %d, want %d", pieces, s, got, want)
			}
		}
	})
}
