package tokenizer

import (
	"math"
	"strings"
	"unicode/utf8"
)

// Encode tokenizes text as SentencePiece does (EncodeAsIds), with BOS first when addBOS is set
// and the model has one. Empty text gives no tokens (only BOS when asked). Invalid UTF-8 bytes
// are replaced by U+FFFD, as SentencePiece's normaliser does. The text is taken literally:
// "<s>" in it is three characters, not BOS.
//
// It runs in O(n log n) for n characters: a doubly linked list of symbols and a max-heap of
// candidate merges ordered by (score desc, left position asc), like bpe_model.cc.
func (t *Tokenizer) Encode(text string, addBOS bool) []int32 {
	out := make([]int32, 0, len(text)/3+2)
	if addBOS && t.bos >= 0 {
		out = append(out, t.bos)
	}
	norm := t.normalize(text)
	if len(norm) == 0 {
		return out
	}
	return t.encodeNormalized(norm, out)
}

// spaceOut is what a space becomes after normalisation.
func (t *Tokenizer) spaceOut() string {
	if t.escapeSpace {
		return spaceSymbol
	}
	return " "
}

// matchUser returns the length of the longest user-defined piece that prefixes s, or 0.
func (t *Tokenizer) matchUser(s string) int {
	if t.maxUserLen == 0 {
		return 0
	}
	return t.userDefined.longest(s)
}

// normalize is SentencePiece's Normalizer::Normalize without a precompiled charsmap: user-defined
// pieces and valid characters are kept, each invalid byte becomes U+FFFD, spaces become "▁"
// (escape_whitespaces), a "▁" is prepended (add_dummy_prefix) and, with remove_extra_whitespaces,
// leading, trailing and repeated spaces are dropped. Empty or (with remove_extra_whitespaces)
// all-space text gives an empty result.
func (t *Tokenizer) normalize(s string) []byte {
	if t.removeExtraSpace {
		for len(s) > 0 && s[0] == ' ' && t.matchUser(s) == 0 {
			s = s[1:]
		}
	}
	if s == "" {
		return nil
	}
	space := t.spaceOut()
	buf := make([]byte, 0, len(s)+len(s)/2+len(space))
	if t.addDummyPrefix {
		buf = append(buf, space...)
	}
	if !t.removeExtraSpace && t.maxUserLen == 0 {
		// Fast path (LLaMA): one pass, byte at a time for ASCII.
		for i := 0; i < len(s); {
			c := s[i]
			if c < utf8.RuneSelf {
				if c == ' ' {
					buf = append(buf, space...)
				} else {
					buf = append(buf, c)
				}
				i++
				continue
			}
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				buf = append(buf, "\uFFFD"...)
			} else {
				buf = append(buf, s[i:i+size]...)
			}
			i += size
		}
		return buf
	}
	isPrevSpace := t.removeExtraSpace
	for len(s) > 0 {
		var piece string
		consumed := t.matchUser(s)
		if consumed > 0 {
			piece = s[:consumed]
		} else {
			r, size := utf8.DecodeRuneInString(s)
			consumed = size
			if r == utf8.RuneError && size == 1 {
				piece = "\uFFFD"
			} else {
				piece = s[:size]
			}
		}
		if isPrevSpace {
			piece = strings.TrimLeft(piece, " ")
		}
		if piece != "" {
			for j := 0; j < len(piece); j++ {
				if piece[j] == ' ' && t.escapeSpace {
					buf = append(buf, spaceSymbol...)
				} else {
					buf = append(buf, piece[j])
				}
			}
			isPrevSpace = piece[len(piece)-1] == ' '
		}
		s = s[consumed:]
		if !t.removeExtraSpace {
			isPrevSpace = false
		}
	}
	if t.removeExtraSpace {
		for len(buf) >= len(space) && string(buf[len(buf)-len(space):]) == space {
			buf = buf[:len(buf)-len(space)]
		}
	}
	return buf
}

// symbol is a node of the linked list of current pieces: the bytes norm[start:end].
type symbol struct {
	start, end int32
	prev, next int32 // -1 at the ends
	freeze     bool  // user-defined piece: never merged
}

// candidate is a possible merge of symbols left and right into a piece of size bytes. key packs
// the order of bpe_model.cc's SymbolPairComparator into one integer: higher score first, then
// the leftmost pair. The score's bits are mapped so that unsigned order is float order.
type candidate struct {
	key         uint64 // orderedBits(score)<<32 | ^left
	right, size int32
}

func (c *candidate) left() int32 { return int32(^uint32(c.key)) }

func makeCandidate(score float32, left, right, size int32) candidate {
	return candidate{key: uint64(orderedBits(score))<<32 | uint64(^uint32(left)), right: right, size: size}
}

// orderedBits maps a float32 to a uint32 with the same order (-Inf < ... < -0 < +0 < ... < +Inf).
func orderedBits(f float32) uint32 {
	if f == 0 {
		f = 0 // -0 == +0, as in the float comparison
	}
	b := math.Float32bits(f)
	if b&(1<<31) != 0 {
		return ^b
	}
	return b | 1<<31
}

// before orders the heap (a max-heap on key).
func (a *candidate) before(b *candidate) bool { return a.key > b.key }

// agenda is a binary max-heap of candidates (hand-rolled: container/heap's interface calls
// cost more than the merges themselves).
type agenda []candidate

func (h *agenda) push(c candidate) {
	*h = append(*h, c)
	a := *h
	i := len(a) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !a[i].before(&a[p]) {
			break
		}
		a[i], a[p] = a[p], a[i]
		i = p
	}
}

func (h *agenda) pop() candidate {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	a = a[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && a[r].before(&a[l]) {
			m = r
		}
		if !a[m].before(&a[i]) {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
	*h = a
	return top
}

// encodeNormalized is bpe_model.cc's Model::Encode followed by the byte-fallback / unknown
// handling of SentencePieceProcessor::PopulateSentencePieceText. It appends to out.
func (t *Tokenizer) encodeNormalized(norm []byte, out []int32) []int32 {
	// Split into characters (user-defined pieces as single frozen symbols).
	syms := make([]symbol, 0, len(norm))
	var normStr string // norm as a string, made once: converting norm[i:] at each i is quadratic
	if t.maxUserLen > 0 {
		normStr = string(norm)
	}
	for i := 0; i < len(norm); {
		n, freeze := 0, false
		if t.maxUserLen > 0 {
			if n = t.matchUser(normStr[i:]); n > 0 {
				freeze = true
			}
		}
		if n == 0 {
			if norm[i] < utf8.RuneSelf {
				n = 1
			} else {
				_, n = utf8.DecodeRune(norm[i:])
			}
		}
		k := int32(len(syms))
		syms = append(syms, symbol{start: int32(i), end: int32(i + n), prev: k - 1, next: k + 1, freeze: freeze})
		i += n
	}
	syms[len(syms)-1].next = -1

	var revMerge map[string][2]string // unused piece -> the two pieces it was merged from
	if t.hasUnused {
		revMerge = make(map[string][2]string)
	}
	h := make(agenda, 0, len(syms))
	maybeAdd := func(l, r int32) {
		if l < 0 || r < 0 || syms[l].freeze || syms[r].freeze {
			return
		}
		piece := norm[syms[l].start:syms[r].end]
		id, ok := t.merge[string(piece)]
		if !ok {
			return
		}
		h.push(makeCandidate(t.scores[id], l, r, int32(len(piece))))
		if t.hasUnused && t.types[id] == TypeUnused {
			revMerge[string(piece)] = [2]string{
				string(norm[syms[l].start:syms[l].end]),
				string(norm[syms[r].start:syms[r].end]),
			}
		}
	}
	for i := 1; i < len(syms); i++ {
		maybeAdd(int32(i-1), int32(i))
	}

	for len(h) > 0 {
		c := h.pop()
		left := c.left()
		l, r := &syms[left], &syms[c.right]
		// Stale: one side was merged away or grew since this candidate was pushed.
		if l.start == l.end || r.start == r.end || (l.end-l.start)+(r.end-r.start) != c.size {
			continue
		}
		l.end = r.end
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = left
		}
		r.end = r.start // empty: merged away
		maybeAdd(l.prev, left)
		maybeAdd(left, l.next)
	}

	prevUnk := false
	emit := func(piece []byte) {
		id, ok := t.ids[string(piece)]
		if !ok {
			id = t.unk
		}
		isUnk := t.types[id] == TypeUnknown
		switch {
		case isUnk && t.byteFallback:
			for _, b := range piece {
				out = append(out, t.bytes[b])
			}
		case isUnk && prevUnk:
			// SentencePiece merges a run of unknown pieces into one.
		default:
			out = append(out, id)
		}
		prevUnk = isUnk
	}
	var resegment func(piece string)
	resegment = func(piece string) {
		if id, ok := t.ids[piece]; ok && t.types[id] == TypeUnused {
			if parts, ok := revMerge[piece]; ok {
				resegment(parts[0])
				resegment(parts[1])
				return
			}
		}
		emit([]byte(piece))
	}
	for i := int32(0); i >= 0; i = syms[i].next {
		piece := norm[syms[i].start:syms[i].end]
		if t.hasUnused {
			resegment(string(piece))
		} else {
			emit(piece)
		}
	}
	return out
}
