package grammar

import (
	"fmt"
	"math"
	"unicode/utf8"
)

// frame is one level of a parse stack: the element to match next (pos in Grammar.elems) and
// the frame below it (an index into the Matcher's arena, −1 at the bottom).
type frame struct{ pos, next int32 }

// Matcher follows one generation through a Grammar. It is not safe for concurrent use: give
// each sequence its own.
type Matcher struct {
	g *Grammar
	v *Vocab

	arena  []frame // stack frames; the current stacks' frames first, scratch above
	stacks []int32 // current stack set: top frames in arena, −1 for an empty (finished) stack
	utf    partial // bytes of a character the text so far ends inside
	trim   bool    // the next token's leading space is dropped by the decoder

	buf      []int32  // scratch stack sets, used as a stack of [lo, hi) ranges
	allow    []uint64 // Mask's bitset over the vocabulary
	overflow bool     // a stack set outgrew MaxStacks
}

// MaxStacks bounds the parses a Matcher keeps open at once. Grammars for JSON and JSON Schema
// keep a handful; an ambiguous grammar (("a"?){500}) can open hundreds, and each costs time in
// every Mask, so past the bound the Matcher reports ErrAmbiguous instead of slowing down.
const MaxStacks = 128

// ErrAmbiguous reports a grammar that keeps more than MaxStacks parses open at some point.
var ErrAmbiguous = fmt.Errorf("%w: more than %d parses open at once: the grammar is too ambiguous", ErrGrammar, MaxStacks)

// NewMatcher returns a Matcher at the start of the grammar for tokens of v.
func (g *Grammar) NewMatcher(v *Vocab) *Matcher {
	m := &Matcher{g: g, v: v, allow: make([]uint64, (len(v.bytes)+63)/64)}
	for _, a := range g.alts[g.root] {
		m.expand(a, -1, 0)
	}
	m.stacks = append([]int32(nil), m.buf...)
	m.buf = m.buf[:0]
	return m
}

// Err returns ErrAmbiguous when the grammar's start already opens more than MaxStacks parses.
func (m *Matcher) Err() error {
	if m.overflow {
		return ErrAmbiguous
	}
	return nil
}

// DropLeadingSpace tells the Matcher that the next token's leading space will not reach the
// text: what SentencePiece decoding does to the first token after BOS (tokenizer.StreamDecoder
// with BOS before it). Byte tokens and tokens that raw (NewVocab) marks keep their space.
func (m *Matcher) DropLeadingSpace() { m.trim = true }

// Accepting reports whether the text so far is a complete sentence of the grammar, so that an
// end-of-generation token may come now.
func (m *Matcher) Accepting() bool {
	if m.utf.n > 0 {
		return false
	}
	for _, s := range m.stacks {
		if s < 0 {
			return true
		}
	}
	return false
}

// Done reports whether nothing but an end-of-generation token may come: the text is complete
// and no character can extend it.
func (m *Matcher) Done() bool {
	for _, s := range m.stacks {
		if s >= 0 {
			return false
		}
	}
	return m.utf.n == 0
}

// Allows reports whether token id may come next.
func (m *Matcher) Allows(id int32) bool {
	if m.v.isEOS(id) {
		return m.Accepting()
	}
	marks := len(m.arena)
	_, _, _, ok := m.token(id)
	m.arena, m.buf = m.arena[:marks], m.buf[:0]
	ok = ok && !m.overflow
	m.overflow = false
	return ok
}

// Accept advances the Matcher past token id, or returns an error (and changes nothing) when
// the grammar does not allow it. An end-of-generation token is accepted when Accepting.
func (m *Matcher) Accept(id int32) error {
	if m.v.isEOS(id) {
		if !m.Accepting() {
			return fmt.Errorf("%w: end of generation before the text is complete", ErrGrammar)
		}
		return nil
	}
	lo, hi, st, ok := m.token(id)
	if m.overflow {
		m.buf, m.overflow = m.buf[:0], false
		return ErrAmbiguous
	}
	if !ok {
		m.buf = m.buf[:0]
		if id < 0 || int(id) >= len(m.v.bytes) {
			return fmt.Errorf("%w: token %d is outside the vocabulary", ErrGrammar, id)
		}
		return fmt.Errorf("%w: token %d (%q) does not continue the text", ErrGrammar, id, m.v.bytes[id])
	}
	m.stacks = append(m.stacks[:0], m.buf[lo:hi]...)
	m.buf = m.buf[:0]
	m.utf = st
	m.trim = false
	if len(m.arena) > 1<<14 {
		m.compact()
	}
	return nil
}

// Mask sets the logits of every token the grammar does not allow next to −Inf and returns how
// many tokens remain, or ErrAmbiguous. len(logits) must be the vocabulary's size.
func (m *Matcher) Mask(logits []float32) (int, error) {
	if len(logits) != len(m.v.bytes) {
		panic(fmt.Sprintf("grammar: Mask of %d logits, the vocabulary has %d tokens", len(logits), len(m.v.bytes)))
	}
	clear(m.allow)
	marks := len(m.arena)
	m.buf = append(m.buf[:0], m.stacks...)
	if m.trim {
		m.walkTrimmed(0, len(m.buf))
	} else {
		m.walk(0, 0, len(m.buf), m.utf, anyToken)
	}
	m.arena, m.buf = m.arena[:marks], m.buf[:0]
	if m.overflow {
		m.overflow = false
		return 0, ErrAmbiguous
	}
	if m.Accepting() {
		for _, id := range m.v.eos {
			m.allow[id/64] |= 1 << (id % 64)
		}
	}
	n := 0
	negInf := float32(math.Inf(-1))
	for id := range logits {
		if m.allow[id/64]&(1<<(id%64)) != 0 {
			n++
		} else {
			logits[id] = negInf
		}
	}
	return n, nil
}

// which tokens a walk marks.
const (
	anyToken = iota
	rawOnly
	trimmedOnly
)

// walk marks the tokens below trie node whose bytes the stacks buf[lo:hi] (with partial
// character st) can take.
func (m *Matcher) walk(node int32, lo, hi int, st partial, which int) {
	for _, k := range m.v.nodes[node].kids {
		marks, bufMark := len(m.arena), len(m.buf)
		if nlo, nhi, nst, ok := m.step(lo, hi, st, k.b); ok {
			m.mark(k.node, which)
			if len(m.v.nodes[k.node].kids) > 0 {
				m.walk(k.node, nlo, nhi, nst, which)
			}
		}
		m.arena, m.buf = m.arena[:marks], m.buf[:bufMark]
	}
}

// walkTrimmed is walk from the root for the first token after BOS: below the space, tokens
// that lose their leading space are matched without it, raw ones with it.
func (m *Matcher) walkTrimmed(lo, hi int) {
	for _, k := range m.v.nodes[0].kids {
		if k.b != ' ' {
			continue
		}
		m.mark(k.node, trimmedOnly) // " " alone adds nothing
		m.walk(k.node, lo, hi, m.utf, trimmedOnly)
		marks, bufMark := len(m.arena), len(m.buf)
		if nlo, nhi, nst, ok := m.step(lo, hi, m.utf, ' '); ok {
			m.mark(k.node, rawOnly)
			m.walk(k.node, nlo, nhi, nst, rawOnly)
		}
		m.arena, m.buf = m.arena[:marks], m.buf[:bufMark]
	}
	// Every other first byte: no space to drop.
	for _, k := range m.v.nodes[0].kids {
		if k.b == ' ' {
			continue
		}
		marks, bufMark := len(m.arena), len(m.buf)
		if nlo, nhi, nst, ok := m.step(lo, hi, m.utf, k.b); ok {
			m.mark(k.node, anyToken)
			m.walk(k.node, nlo, nhi, nst, anyToken)
		}
		m.arena, m.buf = m.arena[:marks], m.buf[:bufMark]
	}
}

func (m *Matcher) mark(node int32, which int) {
	for _, id := range m.v.nodes[node].ids {
		if which == rawOnly && !m.v.isRaw(id) || which == trimmedOnly && m.v.isRaw(id) {
			continue
		}
		m.allow[id/64] |= 1 << (id % 64)
	}
}

// token runs the current stacks over token id's bytes into buf[lo:hi].
func (m *Matcher) token(id int32) (lo, hi int, st partial, ok bool) {
	if id < 0 || int(id) >= len(m.v.bytes) || len(m.v.bytes[id]) == 0 {
		return 0, 0, st, false
	}
	bs := m.v.bytes[id]
	if m.trim && bs[0] == ' ' && !m.v.isRaw(id) {
		bs = bs[1:]
	}
	m.buf = append(m.buf[:0], m.stacks...)
	lo, hi, st = 0, len(m.buf), m.utf
	for _, b := range bs {
		if lo, hi, st, ok = m.step(lo, hi, st, b); !ok {
			return 0, 0, st, false
		}
	}
	return lo, hi, st, true
}

// step feeds one byte to the stacks buf[lo:hi] and returns the stacks after it, appended to
// buf. A byte inside a multi-byte character keeps the stacks whose next set has a character
// starting with the bytes so far; the character's last byte advances them.
func (m *Matcher) step(lo, hi int, st partial, b byte) (int, int, partial, bool) {
	nst, r, res := st.feed(b)
	nlo := len(m.buf)
	switch res {
	case feedInvalid:
		return 0, 0, st, false
	case feedPartial:
		clo, chi, ok := nst.span()
		if !ok {
			return 0, 0, st, false
		}
		for i := lo; i < hi; i++ {
			if s := m.buf[i]; s >= 0 && m.g.elems[m.arena[s].pos].set.overlaps(clo, chi) {
				m.buf = append(m.buf, s)
			}
		}
	default:
		for i := lo; i < hi; i++ {
			s := m.buf[i]
			if s < 0 {
				continue
			}
			if f := m.arena[s]; m.g.elems[f.pos].set.match(r) {
				m.expand(f.pos+1, f.next, nlo)
			}
		}
	}
	return nlo, len(m.buf), nst, len(m.buf) > nlo
}

// expand continues a stack at pos (with rest below it) down to the character sets it may
// match next, appending the resulting stacks to buf (those from start on are deduplicated).
func (m *Matcher) expand(pos, rest int32, start int) {
	for {
		e := &m.g.elems[pos]
		switch e.kind {
		case elemEnd:
			if rest < 0 {
				m.addFinished(start)
				return
			}
			f := m.arena[rest]
			pos, rest = f.pos, f.next
		case elemChar:
			m.addTop(start, pos, rest)
			return
		default: // elemRef
			cont := rest
			if m.g.elems[pos+1].kind != elemEnd { // a reference in tail position returns straight to rest
				m.arena = append(m.arena, frame{pos + 1, rest})
				cont = int32(len(m.arena) - 1)
			}
			for _, a := range m.g.alts[e.ref] {
				m.expand(a, cont, start)
			}
			return
		}
	}
}

func (m *Matcher) addFinished(start int) {
	for _, s := range m.buf[start:] {
		if s < 0 {
			return
		}
	}
	if len(m.buf)-start >= MaxStacks {
		m.overflow = true
		return
	}
	m.buf = append(m.buf, -1)
}

func (m *Matcher) addTop(start int, pos, rest int32) {
	for _, s := range m.buf[start:] {
		if s >= 0 && m.arena[s].pos == pos && m.same(m.arena[s].next, rest) {
			return
		}
	}
	if len(m.buf)-start >= MaxStacks {
		m.overflow = true
		return
	}
	m.arena = append(m.arena, frame{pos, rest})
	m.buf = append(m.buf, int32(len(m.arena)-1))
}

// same reports whether two stacks hold the same frames.
func (m *Matcher) same(a, b int32) bool {
	for a != b {
		if a < 0 || b < 0 || m.arena[a].pos != m.arena[b].pos {
			return false
		}
		a, b = m.arena[a].next, m.arena[b].next
	}
	return true
}

// compact copies the current stacks into a fresh arena, dropping frames no stack uses.
func (m *Matcher) compact() {
	arena := make([]frame, 0, 256)
	moved := map[int32]int32{}
	var move func(s int32) int32
	move = func(s int32) int32 {
		if s < 0 {
			return -1
		}
		if n, ok := moved[s]; ok {
			return n
		}
		f := m.arena[s]
		next := move(f.next)
		arena = append(arena, frame{f.pos, next})
		moved[s] = int32(len(arena) - 1)
		return moved[s]
	}
	for i, s := range m.stacks {
		m.stacks[i] = move(s)
	}
	m.arena = arena
}

// partial holds the first bytes of a UTF-8 character the text ends inside.
type partial struct {
	b    [4]byte
	n    uint8 // bytes held
	need uint8 // the character's length
}

const (
	feedInvalid = iota
	feedPartial
	feedRune
)

// feed adds a byte: the character it completes, or the longer partial character, or invalid
// UTF-8.
func (p partial) feed(b byte) (partial, rune, int) {
	if p.n == 0 {
		switch {
		case b < 0x80:
			return p, rune(b), feedRune
		case 0xC2 <= b && b <= 0xDF:
			p.need = 2
		case 0xE0 <= b && b <= 0xEF:
			p.need = 3
		case 0xF0 <= b && b <= 0xF4:
			p.need = 4
		default:
			return p, 0, feedInvalid
		}
		p.b[0], p.n = b, 1
		return p, 0, feedPartial
	}
	if b&0xC0 != 0x80 {
		return p, 0, feedInvalid
	}
	p.b[p.n] = b
	p.n++
	if p.n < p.need {
		if _, _, ok := p.span(); !ok {
			return p, 0, feedInvalid
		}
		return p, 0, feedPartial
	}
	r, size := utf8.DecodeRune(p.b[:p.n])
	if r == utf8.RuneError && size <= 1 {
		return p, 0, feedInvalid
	}
	return partial{}, r, feedRune
}

// span returns the code points a partial character may still become; ok is false when no
// valid character starts with its bytes (overlong forms, surrogates, beyond U+10FFFF).
func (p partial) span() (lo, hi rune, ok bool) {
	var v rune
	switch p.need {
	case 2:
		v = rune(p.b[0] & 0x1F)
	case 3:
		v = rune(p.b[0] & 0x0F)
	default:
		v = rune(p.b[0] & 0x07)
	}
	for i := 1; i < int(p.n); i++ {
		v = v<<6 | rune(p.b[i]&0x3F)
	}
	rem := uint(p.need-p.n) * 6
	lo, hi = v<<rem, v<<rem|(1<<rem-1)
	lo = max(lo, [5]rune{0, 0, 0x80, 0x800, 0x10000}[p.need])
	hi = min(hi, maxRune)
	if lo >= 0xD800 && hi <= 0xDFFF {
		return 0, 0, false
	}
	return lo, hi, lo <= hi
}
