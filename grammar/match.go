package grammar

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"unicode/utf8"
)

// frame is one level of a parse stack: the element to match next (pos in Grammar.elems) and
// the frame below it (an index into the Matcher's frames, −1 at the bottom). Frames are
// interned, so two stacks are equal exactly when their top frames' indices are.
type frame struct{ pos, next int32 }

// state is a set of parse stacks (their top frames, sorted; −1, an empty stack, first) and the
// partial character the text ends inside. States are interned too, and each remembers where
// each byte leads: the Matcher grows a DFA over bytes lazily, so that Mask, which feeds the
// same few states most of the vocabulary's bytes, mostly looks transitions up.
type state struct {
	stacks []int32
	utf    partial
	next   *[256]int32 // 0: not yet computed, 1: no stack takes the byte, s+2: state s
}

// Matcher follows one generation through a Grammar. It is not safe for concurrent use: give
// each sequence its own.
type Matcher struct {
	g *Grammar
	v *Vocab

	frames   []frame
	frameIDs map[frame]int32
	states   []state
	stateIDs map[string]int32
	cur      int32 // the state the text so far leaves
	trim     bool  // the next token's leading space is dropped by the decoder
	noCache  bool  // compute every transition afresh (the reference the cache is tested against)

	buf       []int32  // the stack set being computed
	nodeState []int32  // (trie nodes) Mask's state at each node of the vocabulary's trie
	key       []byte   // a state's interning key
	allow     []uint64 // Mask's bitset over the vocabulary
	overflow  bool     // a stack set outgrew MaxStacks
}

// MaxStacks bounds the parses a Matcher keeps open at once. Grammars for JSON and JSON Schema
// keep a handful; an ambiguous grammar (("a"?){500}) can open hundreds, and each costs time in
// every Mask, so past the bound the Matcher reports ErrAmbiguous instead of slowing down.
const MaxStacks = 128

// ErrAmbiguous reports a grammar that keeps more than MaxStacks parses open at some point.
var ErrAmbiguous = fmt.Errorf("%w: more than %d parses open at once: the grammar is too ambiguous", ErrGrammar, MaxStacks)

// Bounds on a Matcher's tables: states beyond maxCachedStates get no transition table (1 KiB
// each); past either bound, Accept starts the tables afresh from the current state.
const (
	maxCachedStates = 1 << 12
	maxFrames       = 1 << 18
)

// NewMatcher returns a Matcher at the start of the grammar for tokens of v.
func (g *Grammar) NewMatcher(v *Vocab) *Matcher {
	m := &Matcher{g: g, v: v, allow: make([]uint64, (len(v.bytes)+63)/64), nodeState: make([]int32, len(v.edge))}
	m.reset()
	for _, a := range g.alts[g.root] {
		m.expand(a, -1)
	}
	m.cur = m.intern(m.buf, partial{})
	return m
}

func (m *Matcher) reset() {
	m.frames, m.frameIDs = m.frames[:0], map[frame]int32{}
	m.states, m.stateIDs = m.states[:0], map[string]int32{}
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
	st := &m.states[m.cur]
	return st.utf.n == 0 && len(st.stacks) > 0 && st.stacks[0] < 0
}

// Done reports whether nothing but an end-of-generation token may come: the text is complete
// and no character can extend it.
func (m *Matcher) Done() bool {
	st := &m.states[m.cur]
	return m.Accepting() && len(st.stacks) == 1
}

// Allows reports whether token id may come next.
func (m *Matcher) Allows(id int32) bool {
	if m.v.isEOS(id) {
		return m.Accepting()
	}
	ok := m.token(id) >= 0 && !m.overflow
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
	s := m.token(id)
	if m.overflow {
		m.overflow = false
		return ErrAmbiguous
	}
	if s < 0 {
		if id < 0 || int(id) >= len(m.v.bytes) {
			return fmt.Errorf("%w: token %d is outside the vocabulary", ErrGrammar, id)
		}
		return fmt.Errorf("%w: token %d (%q) does not continue the text", ErrGrammar, id, m.v.bytes[id])
	}
	m.cur, m.trim = s, false
	if len(m.states) > maxCachedStates || len(m.frames) > maxFrames {
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
	if m.trim {
		m.walkTrimmed(m.cur)
	} else {
		m.walk(0, m.cur, anyToken)
	}
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

// walk marks the tokens in the subtree below trie node root (root itself excluded) whose bytes
// state s can take: one pass over the preorder nodes, each node's state from its parent's.
func (m *Matcher) walk(root, s int32, which int) {
	v := m.v
	at := m.nodeState
	at[root] = s
	for i := root + 1; i < v.end[root]; {
		ps, b := at[v.parent[i]], v.edge[i]
		var ns int32
		if t := m.states[ps].next; t != nil && t[b] != 0 {
			ns = t[b] - 2
		} else {
			ns = m.step(ps, b)
		}
		if ns < 0 {
			i = v.end[i] // no token below continues the text either
			continue
		}
		at[i] = ns
		if v.idsAt[i] != v.idsAt[i+1] {
			m.mark(i, which)
		}
		i++
	}
}

// walkTrimmed is walk from the root for the first token after BOS: below the space, tokens
// that lose their leading space are matched without it, raw ones with it.
func (m *Matcher) walkTrimmed(s int32) {
	v := m.v
	for k := int32(1); k < v.end[0]; k = v.end[k] { // the root's children
		which := anyToken
		if v.edge[k] == ' ' {
			m.mark(k, trimmedOnly) // " " alone adds nothing
			m.walk(k, s, trimmedOnly)
			which = rawOnly
		}
		if ns := m.step(s, v.edge[k]); ns >= 0 {
			m.mark(k, which)
			m.walk(k, ns, which)
		}
	}
}

func (m *Matcher) mark(node int32, which int) {
	for _, id := range m.v.nodeIDs(node) {
		if which == rawOnly && !m.v.isRaw(id) || which == trimmedOnly && m.v.isRaw(id) {
			continue
		}
		m.allow[id/64] |= 1 << (id % 64)
	}
}

// token returns the state after token id's bytes, or −1 when the grammar refuses them.
func (m *Matcher) token(id int32) int32 {
	if id < 0 || int(id) >= len(m.v.bytes) || len(m.v.bytes[id]) == 0 {
		return -1
	}
	bs := m.v.bytes[id]
	if m.trim && bs[0] == ' ' && !m.v.isRaw(id) {
		bs = bs[1:]
	}
	s := m.cur
	for _, b := range bs {
		if s = m.step(s, b); s < 0 {
			break
		}
	}
	return s
}

// step returns the state after byte b from state s, or −1: from the transition table when it
// is there, else computed (and remembered).
func (m *Matcher) step(s int32, b byte) int32 {
	if t := m.states[s].next; t != nil && t[b] != 0 {
		return t[b] - 2
	}
	ns := m.compute(s, b)
	if m.noCache || m.overflow {
		return ns
	}
	st := &m.states[s] // compute may have grown states
	if st.next == nil {
		if len(m.states) > maxCachedStates {
			return ns
		}
		st.next = new([256]int32)
	}
	st.next[b] = ns + 2
	return ns
}

// compute feeds byte b to the stacks of state s. A byte inside a multi-byte character keeps
// the stacks whose next set has a character starting with the bytes so far; the character's
// last byte advances them and expands each down to the character sets it may match next.
func (m *Matcher) compute(s int32, b byte) int32 {
	st := m.states[s]
	nutf, r, res := st.utf.feed(b)
	m.buf = m.buf[:0]
	switch res {
	case feedInvalid:
		return -1
	case feedPartial:
		lo, hi, ok := nutf.span()
		if !ok {
			return -1
		}
		for _, t := range st.stacks {
			if t >= 0 && m.g.elems[m.frames[t].pos].set.overlaps(lo, hi) {
				m.buf = append(m.buf, t)
			}
		}
	default:
		for _, t := range st.stacks {
			if t < 0 {
				continue
			}
			if f := m.frames[t]; m.g.elems[f.pos].set.match(r) {
				m.expand(f.pos+1, f.next)
			}
		}
	}
	if len(m.buf) == 0 || m.overflow {
		return -1
	}
	return m.intern(m.buf, nutf)
}

// expand continues a stack at pos (with rest below it) down to the character sets it may
// match next, adding the resulting stacks to buf.
func (m *Matcher) expand(pos, rest int32) {
	for {
		e := &m.g.elems[pos]
		switch e.kind {
		case elemEnd:
			if rest < 0 {
				m.add(-1)
				return
			}
			f := m.frames[rest]
			pos, rest = f.pos, f.next
		case elemChar:
			m.add(m.frame(pos, rest))
			return
		default: // elemRef
			cont := rest
			if m.g.elems[pos+1].kind != elemEnd { // a reference in tail position returns straight to rest
				cont = m.frame(pos+1, rest)
			}
			for _, a := range m.g.alts[e.ref] {
				m.expand(a, cont)
			}
			return
		}
	}
}

func (m *Matcher) add(t int32) {
	if slices.Contains(m.buf, t) {
		return
	}
	if len(m.buf) >= MaxStacks {
		m.overflow = true
		return
	}
	m.buf = append(m.buf, t)
}

// frame returns the interned frame (pos, next).
func (m *Matcher) frame(pos, next int32) int32 {
	f := frame{pos, next}
	if id, ok := m.frameIDs[f]; ok {
		return id
	}
	id := int32(len(m.frames))
	m.frames = append(m.frames, f)
	m.frameIDs[f] = id
	return id
}

// intern returns the state of the stack set tops (sorted here) and partial character utf.
func (m *Matcher) intern(tops []int32, utf partial) int32 {
	slices.Sort(tops)
	key := append(m.key[:0], utf.n, utf.need)
	key = append(key, utf.b[:utf.n]...)
	for _, t := range tops {
		key = binary.LittleEndian.AppendUint32(key, uint32(t))
	}
	m.key = key
	if id, ok := m.stateIDs[string(key)]; ok {
		return id
	}
	id := int32(len(m.states))
	m.states = append(m.states, state{stacks: slices.Clone(tops), utf: utf})
	m.stateIDs[string(key)] = id
	return id
}

// compact starts the tables afresh, keeping only the current state and its frames.
func (m *Matcher) compact() {
	old, cur := m.frames, m.states[m.cur]
	m.frames, m.frameIDs = nil, map[frame]int32{}
	m.states, m.stateIDs = nil, map[string]int32{}
	moved := map[int32]int32{}
	var move func(t int32) int32
	move = func(t int32) int32 {
		if t < 0 {
			return -1
		}
		if n, ok := moved[t]; ok {
			return n
		}
		f := old[t]
		n := m.frame(f.pos, move(f.next))
		moved[t] = n
		return n
	}
	tops := make([]int32, len(cur.stacks))
	for i, t := range cur.stacks {
		tops[i] = move(t)
	}
	m.cur = m.intern(tops, cur.utf)
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
