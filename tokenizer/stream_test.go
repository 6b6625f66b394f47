package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// streamAll feeds ids to a StreamDecoder and returns the chunks, Flush's output last.
func streamAll(tok *Tokenizer, prev int32, ids []int32) []string {
	d := tok.NewStreamDecoder(prev)
	var chunks []string
	for _, id := range ids {
		chunks = append(chunks, d.Add(id))
	}
	return append(chunks, d.Flush())
}

func TestStreamDecoderMatchesDecode(t *testing.T) {
	tok := llamaModel(t)
	for _, text := range []string{
		"안녕하세요, 세계!",
		"대한민국의 수도는 서울입니다. 저는 학생입니다.",
		"東京は日本の首都です。🦙🦙 👨‍👩‍👧‍👦",
		"Hello world",
		"  leading spaces and trailing  ",
		"\n\tcode();\n",
		"mixed 한국어 and English, 😂 emoji",
	} {
		t.Run(text, func(t *testing.T) {
			ids := tok.Encode(text, true)
			// Generation from the prompt's BOS: the prompt is BOS, the rest is streamed.
			chunks := streamAll(tok, ids[0], ids[1:])
			bytesSeen := false
			for i, c := range chunks {
				if !utf8.ValidString(c) {
					t.Fatalf("chunk %d %q is not valid UTF-8", i, c)
				}
				if i < len(ids)-1 && tok.IsByte(ids[i+1]) {
					bytesSeen = true
				}
			}
			if got := strings.Join(chunks, ""); got != text || got != tok.Decode(ids) {
				t.Errorf("streamed %q, Decode %q, text %q", got, tok.Decode(ids), text)
			}
			if chunks[len(chunks)-1] != "" {
				t.Errorf("Flush after complete text returned %q", chunks[len(chunks)-1])
			}
			if strings.ContainsAny(text, "안세") && !bytesSeen {
				t.Errorf("%q was expected to use byte fallback", text)
			}
			// No BOS at all: prev -1 behaves like BOS for the first piece.
			if got := strings.Join(streamAll(tok, -1, ids[1:]), ""); got != text {
				t.Errorf("prev -1: streamed %q, want %q", got, text)
			}
		})
	}
}

func TestStreamDecoderHoldsBytes(t *testing.T) {
	tok := llamaModel(t)
	b := func(x byte) int32 { return tok.bytes[x] }
	hello, _ := tok.ID("▁Hello")
	for _, c := range []struct {
		name   string
		prev   int32
		ids    []int32
		chunks []string // per Add, then Flush
	}{
		// 한 = ED 95 9C: nothing until the third byte.
		{"korean syllable", 1, []int32{b(0xED), b(0x95), b(0x9C)}, []string{"", "", "한", ""}},
		// 🦙 = F0 9F A6 99.
		{"emoji", 1, []int32{b(0xF0), b(0x9F), b(0xA6), b(0x99)}, []string{"", "", "", "🦙", ""}},
		// A byte that can never start or continue a character is replaced at once.
		{"invalid byte", 1, []int32{b(0xFF), b(0x41)}, []string{"\uFFFD", "A", ""}},
		// ED followed by ASCII: ED can no longer complete.
		{"broken sequence", 1, []int32{b(0xED), b(0x41)}, []string{"", "\uFFFDA", ""}},
		// Surrogate encoding ED A0 80 is invalid UTF-8: each byte is replaced.
		{"surrogate", 1, []int32{b(0xED), b(0xA0), b(0x80)}, []string{"", "\uFFFD\uFFFD", "\uFFFD", ""}},
		// A non-byte token ends the run, as in Decode.
		{"run ended by a piece", 1, []int32{b(0xED), b(0x95), hello}, []string{"", "", "\uFFFD\uFFFD Hello", ""}},
		{"run ended by EOS", 1, []int32{b(0xED), 2}, []string{"", "\uFFFD", ""}},
		// Flush releases an incomplete tail.
		{"flush", 1, []int32{b(0xF0), b(0x9F)}, []string{"", "", "\uFFFD\uFFFD"}},
		// The BOS rule: the space is dropped after BOS (or with no previous token) only.
		{"after BOS", 1, []int32{hello, hello}, []string{"Hello", " Hello", ""}},
		{"no previous token", -1, []int32{hello}, []string{"Hello", ""}},
		{"after a prompt word", hello, []int32{hello}, []string{" Hello", ""}},
		{"BOS mid-stream", hello, []int32{1, hello}, []string{"", "Hello", ""}},
		{"EOS then piece", 1, []int32{2, hello}, []string{"", " Hello", ""}},
		{"out of range", 1, []int32{-5, 99999}, []string{"", "", ""}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := streamAll(tok, c.prev, c.ids)
			if strings.Join(got, "|") != strings.Join(c.chunks, "|") {
				t.Errorf("chunks (-want +got)\n-%q\n+%q", c.chunks, got)
			}
		})
	}
}
