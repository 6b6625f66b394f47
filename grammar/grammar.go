// Package grammar constrains generation to a formal language: GBNF grammars (llama.cpp's
// format), JSON, and JSON Schema, for OpenAI's response_format, llama.cpp's grammar and vLLM's
// guided decoding.
//
// A Grammar is compiled once and is safe to share. A Matcher follows one generation through it:
// Allows says whether a token may come next, Mask sets every logit the grammar forbids to −Inf,
// Accept advances by the token chosen. Tokens are matched by the bytes they add to the text
// (Vocab), so a grammar sees exactly what the user reads, and multi-byte characters that
// SentencePiece spells as several byte tokens (<0xEC><0x95><0x88> for 안) are followed byte by
// byte: a token may end inside a character if some character the grammar allows starts so.
//
// # How matching works
//
// Each rule is a list of alternatives, each a sequence of elements: a character set or a
// reference to a rule. Repetitions and groups are rewritten into rules at compile time
// (x* becomes R ::= x R | ε). The state of a Matcher is the set of parse stacks that the text
// so far leaves open, as in llama.cpp: each stack holds, on top, the character set the next
// character must match, and below it where to go on once the rules above are finished. A
// character advances every stack whose top matches it and expands the rest of its rule down to
// the next character sets; a stack that empties means the text so far is a complete sentence.
// Stacks live in an arena as linked frames, sharing their tails.
//
// Left-recursive rules (a rule that can reach itself before consuming a character) would
// expand forever and are refused at compile time.
package grammar

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrGrammar is wrapped by every error Parse and the schema compiler return.
var ErrGrammar = errors.New("grammar")

// maxRune is the largest Unicode code point.
const maxRune = 0x10FFFF

// span is an inclusive range of code points.
type span struct{ lo, hi rune }

// charset matches one code point: one in spans, or with negate one not in them.
type charset struct {
	spans  []span
	negate bool
}

func (c *charset) match(r rune) bool {
	in := false
	for _, s := range c.spans {
		if s.lo <= r && r <= s.hi {
			in = true
			break
		}
	}
	return in != c.negate
}

// overlaps reports whether some code point in [lo, hi] matches.
func (c *charset) overlaps(lo, hi rune) bool {
	if !c.negate {
		for _, s := range c.spans {
			if s.lo <= hi && lo <= s.hi {
				return true
			}
		}
		return false
	}
	// Some point of [lo, hi] lies outside every span: walk the spans (sorted and disjoint once
	// compiled, see normalize) over [lo, hi].
	next := lo
	for _, s := range c.spans {
		if s.hi < next {
			continue
		}
		if s.lo > next {
			return true
		}
		next = s.hi + 1
		if next > hi {
			return false
		}
	}
	return next <= hi
}

// normalize sorts a set's spans and merges those that overlap or touch.
func normalize(c charset) charset {
	spans := slices.Clone(c.spans)
	slices.SortFunc(spans, func(a, b span) int { return int(a.lo - b.lo) })
	out := spans[:0]
	for _, s := range spans {
		if n := len(out); n > 0 && s.lo <= out[n-1].hi+1 {
			out[n-1].hi = max(out[n-1].hi, s.hi)
			continue
		}
		out = append(out, s)
	}
	return charset{spans: out, negate: c.negate}
}

// elemKind says what an element of a flattened alternative is.
type elemKind uint8

const (
	elemEnd  elemKind = iota // end of an alternative: return to the rule that referred here
	elemChar                 // one code point matching set
	elemRef                  // the rule ref
)

type elem struct {
	kind elemKind
	ref  int32
	set  charset
}

// Grammar is a compiled grammar. It is immutable and safe for concurrent use.
type Grammar struct {
	elems []elem    // every rule's alternatives, each ending with elemEnd
	alts  [][]int32 // per rule: the position in elems where each alternative starts
	names []string  // per rule, for messages ("value", "object_3" for a group inside object)
	root  int32
	src   string
}

// String returns the source the grammar was compiled from (GBNF).
func (g *Grammar) String() string { return g.src }

// Rules returns the number of rules after repetitions and groups became rules of their own.
func (g *Grammar) Rules() int { return len(g.alts) }

// item is an element before flattening: a character set or a reference.
type item struct {
	ref int32 // -1 for a character set
	set charset
}

// builder collects rules while parsing, then checks and flattens them.
type builder struct {
	names   []string
	alts    [][][]item // per rule: alternatives, each a sequence
	defined []bool
	usedAt  []int // per rule: a line that refers to it (for "undefined rule" errors)
	byName  map[string]int32
}

// rule returns the id of the named rule, creating an undefined one on first mention.
func (b *builder) rule(name string, line int) int32 {
	if id, ok := b.byName[name]; ok {
		return id
	}
	if b.byName == nil {
		b.byName = map[string]int32{}
	}
	id := int32(len(b.names))
	b.byName[name] = id
	b.names = append(b.names, name)
	b.alts = append(b.alts, nil)
	b.defined = append(b.defined, false)
	b.usedAt = append(b.usedAt, line)
	return id
}

// anon returns a new rule named after the rule it is part of (parent_N), defined as alts.
func (b *builder) anon(parent string, alts [][]item) int32 {
	for n := len(b.names); ; n++ {
		name := fmt.Sprintf("%s_%d", parent, n)
		if _, taken := b.byName[name]; !taken {
			id := b.rule(name, 0)
			b.alts[id] = alts
			b.defined[id] = true
			return id
		}
	}
}

// maxRepeat bounds x{m,n}: each repetition is a copy of x in the compiled grammar.
const maxRepeat = 1000

// repeat rewrites x{min,max} (max < 0: unbounded) into items that refer to new rules.
func (b *builder) repeat(parent string, x item, min, max int) []item {
	out := make([]item, 0, min+1)
	for range min {
		out = append(out, x)
	}
	switch {
	case max < 0: // x* : R ::= x R | ε
		id := b.anon(parent, nil)
		b.alts[id] = [][]item{{x, {ref: id}}, {}}
		out = append(out, item{ref: id})
	case max > min: // (x (x (x)?)?)? : O1 ::= x | ε, Ok ::= x Ok-1 | ε
		var prev int32 = -1
		for range max - min {
			seq := []item{x}
			if prev >= 0 {
				seq = append(seq, item{ref: prev})
			}
			prev = b.anon(parent, [][]item{seq, {}})
		}
		out = append(out, item{ref: prev})
	}
	return out
}

// compile checks the collected rules and flattens them into a Grammar.
func (b *builder) compile(src string) (*Grammar, error) {
	for id, ok := range b.defined {
		if !ok {
			return nil, fmt.Errorf("%w: line %d: undefined rule %q", ErrGrammar, b.usedAt[id], b.names[id])
		}
	}
	root, ok := b.byName["root"]
	if !ok {
		return nil, fmt.Errorf("%w: no rule named \"root\" (generation starts there)", ErrGrammar)
	}
	if err := b.leftRecursion(); err != nil {
		return nil, err
	}
	g := &Grammar{alts: make([][]int32, len(b.alts)), names: b.names, root: root, src: src}
	for id, alts := range b.alts {
		for _, seq := range alts {
			g.alts[id] = append(g.alts[id], int32(len(g.elems)))
			for _, it := range seq {
				if it.ref >= 0 {
					g.elems = append(g.elems, elem{kind: elemRef, ref: it.ref})
				} else {
					g.elems = append(g.elems, elem{kind: elemChar, set: normalize(it.set)})
				}
			}
			g.elems = append(g.elems, elem{kind: elemEnd})
		}
	}
	return g, nil
}

// leftRecursion refuses a rule that can reach itself without consuming a character: expanding
// it would never end.
func (b *builder) leftRecursion() error {
	n := len(b.alts)
	nullable := make([]bool, n)
	for changed := true; changed; {
		changed = false
		for id, alts := range b.alts {
			if nullable[id] {
				continue
			}
			for _, seq := range alts {
				all := true
				for _, it := range seq {
					if it.ref < 0 || !nullable[it.ref] {
						all = false
						break
					}
				}
				if all {
					nullable[id], changed = true, true
					break
				}
			}
		}
	}
	// first[id]: rules that id may expand into before its first character.
	first := make([][]int32, n)
	for id, alts := range b.alts {
		for _, seq := range alts {
			for _, it := range seq {
				if it.ref < 0 {
					break
				}
				first[id] = append(first[id], it.ref)
				if !nullable[it.ref] {
					break
				}
			}
		}
	}
	const (
		unseen = iota
		active
		finished
	)
	state := make([]uint8, n)
	var path []int32
	var visit func(id int32) error
	visit = func(id int32) error {
		state[id] = active
		path = append(path, id)
		for _, next := range first[id] {
			switch state[next] {
			case active:
				i := slices.Index(path, next)
				cycle := make([]string, 0, len(path)-i+1)
				for _, r := range path[i:] {
					cycle = append(cycle, b.names[r])
				}
				cycle = append(cycle, b.names[next])
				return fmt.Errorf("%w: rule %q is left-recursive (%s): it can refer to itself before matching a character; rewrite it with repetition (x*)",
					ErrGrammar, b.names[next], strings.Join(cycle, " → "))
			case unseen:
				if err := visit(next); err != nil {
					return err
				}
			}
		}
		path = path[:len(path)-1]
		state[id] = finished
		return nil
	}
	for id := range n {
		if state[id] == unseen {
			if err := visit(int32(id)); err != nil {
				return err
			}
		}
	}
	return nil
}
