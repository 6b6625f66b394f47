package tokenizer

import (
	"strings"
	"unicode/utf8"
)

const replacementChar = "\uFFFD"

// appendBytesRun appends a run of byte-piece bytes to dst the way SentencePiece decodes it: each
// complete valid UTF-8 character as is, each other byte as U+FFFD.
func appendBytesRun(dst, run []byte) []byte {
	for len(run) > 0 {
		r, size := utf8.DecodeRune(run)
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, replacementChar...)
		} else {
			dst = append(dst, run[:size]...)
		}
		run = run[size:]
	}
	return dst
}

// Decode turns ids back into text with SentencePiece's DecodeIds semantics: "▁" becomes a space;
// the leading "▁" of the first non-byte piece is dropped while nothing has been output yet (the
// dummy prefix; control tokens before it do not count); consecutive byte pieces are joined into
// raw bytes, and each byte that does not belong to a valid UTF-8 character becomes U+FFFD; control
// tokens (BOS, EOS) give nothing; the unknown token gives " ⁇ ". Ids out of range are skipped
// (SentencePiece rejects them).
func (t *Tokenizer) Decode(ids []int32) string {
	var (
		out     = make([]byte, 0, len(ids)*4)
		run     []byte // pending byte pieces
		isBosWS = true // the next non-byte piece may lose its leading "▁"
		bosSeen = false
	)
	for _, id := range ids {
		if id < 0 || int(id) >= len(t.pieces) {
			continue
		}
		typ := t.types[id]
		if typ == TypeByte {
			b, _ := parseBytePiece(t.pieces[id])
			run = append(run, b)
			continue
		}
		out = appendBytesRun(out, run)
		run = run[:0]
		// sentencepiece_processor.cc: "if we have seen a bos_ws token or any non-empty token".
		if bosSeen || len(out) > 0 {
			isBosWS = false
		}
		bosSeen = false
		switch typ {
		case TypeControl, TypeUnknown:
			out = append(out, t.text[id]...)
		default:
			p := t.pieces[id]
			if isBosWS && (t.addDummyPrefix || t.removeExtraSpace) {
				if rest, ok := strings.CutPrefix(p, spaceSymbol); ok {
					p = rest
					bosSeen = !t.removeExtraSpace
				}
				out = append(out, strings.ReplaceAll(p, spaceSymbol, " ")...)
			} else {
				out = append(out, t.text[id]...)
			}
		}
	}
	out = appendBytesRun(out, run)
	return string(out)
}

// StreamDecoder decodes generated tokens one at a time for printing or streaming. It never
// returns part of a UTF-8 character: byte-fallback pieces (a Korean syllable arrives as three
// <0xNN> tokens) are held until the character is complete. Bytes that can no longer become a
// valid character come out as U+FFFD, one per byte, as in Decode; a non-byte token ends a run of
// byte pieces, so bytes left incomplete before it come out as U+FFFD too. Every string it returns
// is valid UTF-8.
//
// The leading space of a piece is dropped when the token before it is BOS, or when it is the very
// first token and there was no previous token (llama2.c run.c's rule: "if the previous token is
// BOS and the piece starts with a space, skip the space"). For a sequence that starts with BOS (or
// nothing) followed by ordinary text, the concatenated output equals Decode of the whole sequence.
//
// A StreamDecoder is not safe for concurrent use.
type StreamDecoder struct {
	t       *Tokenizer
	prev    int32
	pending []byte // bytes of an incomplete UTF-8 character (at most 3)
}

// NewStreamDecoder returns a decoder for tokens that follow prev, the last token of the prompt
// (BOS for generation from BOS alone), or -1 when there is none.
func (t *Tokenizer) NewStreamDecoder(prev int32) *StreamDecoder {
	return &StreamDecoder{t: t, prev: prev}
}

// Add decodes the next token and returns the text that is now complete (possibly "").
func (d *StreamDecoder) Add(id int32) string {
	t := d.t
	prev := d.prev
	d.prev = id
	if id < 0 || int(id) >= len(t.pieces) {
		return ""
	}
	if t.types[id] == TypeByte {
		b, _ := parseBytePiece(t.pieces[id])
		d.pending = append(d.pending, b)
		return d.drain(false)
	}
	var out []byte
	if len(d.pending) > 0 {
		out = appendBytesRun(nil, d.pending)
		d.pending = d.pending[:0]
	}
	text := t.text[id]
	if t.types[id] != TypeControl && t.types[id] != TypeUnknown && (prev < 0 || prev == t.bos) {
		text = strings.TrimPrefix(text, " ")
	}
	if out == nil && utf8.ValidString(text) {
		return text
	}
	return string(appendBytesRun(out, []byte(text)))
}

// drain returns the complete characters at the front of pending (invalid bytes as U+FFFD) and
// keeps an incomplete but still possibly valid tail, unless all is set.
func (d *StreamDecoder) drain(all bool) string {
	var out []byte
	p := d.pending
	for len(p) > 0 {
		if !all && !utf8.FullRune(p) {
			break
		}
		r, size := utf8.DecodeRune(p)
		if r == utf8.RuneError && size == 1 {
			out = append(out, replacementChar...)
		} else {
			out = append(out, p[:size]...)
		}
		p = p[size:]
	}
	d.pending = append(d.pending[:0], p...)
	return string(out)
}

// Flush returns whatever is held back (an incomplete character comes out as U+FFFD per byte) and
// empties the decoder; call it when generation ends.
func (d *StreamDecoder) Flush() string {
	return d.drain(true)
}
