package grammar

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Regular expressions, as vLLM's guided_regex and JSON Schema's pattern write them: the
// syntax ECMAScript, Python and RE2 share.
//
//	literals, \-escaped punctuation, \n \t \r \f \v \0 \xHH \uHHHH
//	.  (any character but \n)   \d \D \w \W \s \S (ASCII: [0-9], [A-Za-z0-9_], [ \t\n\r\f\v])
//	[abc] [^a-z] [\d.-]         classes, with ranges and the escapes above
//	(x) (?:x) (?<name>x) (?P<name>x)   groups (nothing is captured: the text is the result)
//	x|y   x* x+ x? x{n} x{n,} x{n,m}   (lazy x*? and the like match the same texts)
//	^ at the start and $ at the end of the pattern or of one of its top-level alternatives
//
// Refused, with an error naming the place: backreferences, lookaround, \b and \B, inline
// flags such as (?i), possessive quantifiers, \p{…} classes, anchors elsewhere, and bounds
// above 1000. A '{' that does not begin a valid bound is a literal, as in ECMAScript and RE2.
// (So are ECMAScript's [] and [^]; a ']' first in a class is itself, as in Python and RE2.)
//
// A pattern with many parses of one text — nested repetitions of optional parts, (a?a?)* — is
// as ambiguous as a grammar: a Matcher stops with ErrAmbiguous when more than MaxStacks parses
// stay open.

// reKind says what a regex node is.
type reKind uint8

const (
	reLit    reKind = iota // one code point, lit
	reSet                  // one code point in set
	reConcat               // subs in order
	reAlt                  // one of subs
	reRepeat               // subs[0] from min to max times (max < 0: no bound)
)

type reNode struct {
	kind     reKind
	lit      rune
	set      []span // sorted, disjoint
	subs     []*reNode
	min, max int
	// Top-level alternatives (top) only: anchored at the start (^) and at the end ($).
	top, start, end bool
}

// regexParser is a recursive-descent parser over the pattern's code points.
type regexParser struct {
	src []rune
	pos int
}

func (p *regexParser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: regex at offset %d: %s", ErrGrammar, p.pos, fmt.Sprintf(format, args...))
}

func (p *regexParser) more() bool { return p.pos < len(p.src) }

func (p *regexParser) peekIs(s string) bool {
	r := []rune(s)
	if len(p.src)-p.pos < len(r) {
		return false
	}
	for i, c := range r {
		if p.src[p.pos+i] != c {
			return false
		}
	}
	return true
}

// parseRegex parses a whole pattern: top-level alternatives, each with its anchors.
func parseRegex(pattern string) (*reNode, error) {
	if !utf8.ValidString(pattern) {
		return nil, fmt.Errorf("%w: regex is not valid UTF-8", ErrGrammar)
	}
	p := &regexParser{src: []rune(pattern)}
	top := &reNode{kind: reAlt}
	for {
		alt := &reNode{kind: reConcat, top: true}
		if p.more() && p.src[p.pos] == '^' {
			p.pos++
			alt.start = true
		}
		if err := p.concat(alt, true); err != nil {
			return nil, err
		}
		top.subs = append(top.subs, alt)
		if !p.more() {
			return top, nil
		}
		switch p.src[p.pos] {
		case '|':
			p.pos++
		case ')':
			return nil, p.errorf("unmatched )")
		}
	}
}

// alternation parses x|y|… up to a ')' or the end.
func (p *regexParser) alternation() (*reNode, error) {
	alt := &reNode{kind: reAlt}
	for {
		c := &reNode{kind: reConcat}
		if err := p.concat(c, false); err != nil {
			return nil, err
		}
		alt.subs = append(alt.subs, c)
		if !p.more() || p.src[p.pos] != '|' {
			return alt, nil
		}
		p.pos++
	}
}

// concat parses quantified atoms into c until '|', ')' or the end. At the top level a '$'
// that ends the alternative anchors it.
func (p *regexParser) concat(c *reNode, top bool) error {
	for p.more() {
		switch p.src[p.pos] {
		case '|', ')':
			return nil
		case '$':
			p.pos++
			if top && (!p.more() || p.src[p.pos] == '|') {
				c.end = true
				return nil
			}
			p.pos--
			return p.errorf("$ is supported only at the end of the pattern or of a top-level alternative")
		case '^':
			return p.errorf("^ is supported only at the start of the pattern or of a top-level alternative")
		}
		atom, err := p.atom()
		if err != nil {
			return err
		}
		if atom, err = p.quantified(atom); err != nil {
			return err
		}
		c.subs = append(c.subs, atom)
	}
	return nil
}

// quantified applies the quantifiers that follow an atom.
func (p *regexParser) quantified(atom *reNode) (*reNode, error) {
	for p.more() {
		lo, hi := 0, 0
		switch p.src[p.pos] {
		case '*':
			lo, hi = 0, -1
			p.pos++
		case '+':
			lo, hi = 1, -1
			p.pos++
		case '?':
			lo, hi = 0, 1
			p.pos++
		case '{':
			var ok bool
			var err error
			if lo, hi, ok, err = p.bound(); err != nil {
				return nil, err
			} else if !ok {
				return atom, nil // a literal '{': the next atom
			}
		default:
			return atom, nil
		}
		if p.more() && p.src[p.pos] == '?' { // lazy: the same texts
			p.pos++
		} else if p.more() && p.src[p.pos] == '+' {
			return nil, p.errorf("possessive quantifiers are not supported")
		}
		// One quantifier: another after it is an error at the next atom, as in ECMAScript,
		// Python and RE2.
		return &reNode{kind: reRepeat, subs: []*reNode{atom}, min: lo, max: hi}, nil
	}
	return atom, nil
}

// bound parses {n}, {n,} or {n,m} at '{'; ok is false (nothing consumed) when what follows is
// not one.
func (p *regexParser) bound() (lo, hi int, ok bool, err error) {
	start := p.pos
	p.pos++
	num := func() (int, bool) {
		s := p.pos
		for p.more() && '0' <= p.src[p.pos] && p.src[p.pos] <= '9' {
			p.pos++
		}
		if p.pos == s {
			return 0, false
		}
		n, err := strconv.Atoi(string(p.src[s:p.pos]))
		if err != nil || n > maxRepeat {
			return maxRepeat + 1, true
		}
		return n, true
	}
	lo, okLo := num()
	hi = lo
	if okLo && p.more() && p.src[p.pos] == ',' {
		p.pos++
		var okHi bool
		if hi, okHi = num(); !okHi {
			hi = -1
		}
	}
	if !okLo || !p.more() || p.src[p.pos] != '}' {
		p.pos = start
		return 0, 0, false, nil
	}
	p.pos++
	switch {
	case lo > maxRepeat || hi > maxRepeat:
		p.pos = start
		return 0, 0, false, p.errorf("repetition bounds above %d are not supported", maxRepeat)
	case hi >= 0 && hi < lo:
		p.pos = start
		return 0, 0, false, p.errorf("repetition {%d,%d} is backwards", lo, hi)
	}
	return lo, hi, true, nil
}

// atom parses one literal, class, escape, '.' or group.
func (p *regexParser) atom() (*reNode, error) {
	c := p.src[p.pos]
	switch c {
	case '(':
		p.pos++
		switch {
		case p.peekIs("?:"):
			p.pos += 2
		case p.peekIs("?P<") || p.peekIs("?<") && !p.peekIs("?<=") && !p.peekIs("?<!"):
			for p.more() && p.src[p.pos] != '>' {
				p.pos++
			}
			if !p.more() {
				return nil, p.errorf("unterminated group name")
			}
			p.pos++
		case p.peekIs("?=") || p.peekIs("?!") || p.peekIs("?<=") || p.peekIs("?<!"):
			return nil, p.errorf("lookaround is not supported")
		case p.peekIs("?"):
			return nil, p.errorf("inline flags and other (? groups are not supported")
		}
		alt, err := p.alternation()
		if err != nil {
			return nil, err
		}
		if !p.more() || p.src[p.pos] != ')' {
			return nil, p.errorf("missing )")
		}
		p.pos++
		if len(alt.subs) == 1 {
			return alt.subs[0], nil
		}
		return alt, nil
	case '[':
		p.pos++
		return p.class()
	case '.':
		p.pos++
		return &reNode{kind: reSet, set: complement([]span{{'\n', '\n'}})}, nil
	case '\\':
		p.pos++
		set, r, err := p.escape(false)
		if err != nil {
			return nil, err
		}
		if set != nil {
			return &reNode{kind: reSet, set: set}, nil
		}
		return &reNode{kind: reLit, lit: r}, nil
	case '*', '+', '?':
		return nil, p.errorf("%c with nothing to repeat", c)
	case '{':
		if _, _, ok, err := p.bound(); err != nil || ok {
			return nil, p.errorf("a repetition with nothing to repeat")
		}
	case ']', '}':
		// ECMAScript (without the u flag) and RE2 read a lone ] or } as itself.
	}
	p.pos++
	return &reNode{kind: reLit, lit: c}, nil
}

// Class escapes, ASCII as in ECMAScript.
var (
	digitSpans = []span{{'0', '9'}}
	wordSpans  = []span{{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}}
	spaceSpans = []span{{'\t', '\r'}, {' ', ' '}} // \t \n \v \f \r and space
)

// escape parses what follows a backslash: a class (\d …) as set, else one code point.
func (p *regexParser) escape(inClass bool) (set []span, r rune, err error) {
	if !p.more() {
		return nil, 0, p.errorf("\\ at the end of the pattern")
	}
	c := p.src[p.pos]
	p.pos++
	switch c {
	case 'd':
		return digitSpans, 0, nil
	case 'D':
		return complement(digitSpans), 0, nil
	case 'w':
		return wordSpans, 0, nil
	case 'W':
		return complement(wordSpans), 0, nil
	case 's':
		return spaceSpans, 0, nil
	case 'S':
		return complement(spaceSpans), 0, nil
	case 'n':
		return nil, '\n', nil
	case 't':
		return nil, '\t', nil
	case 'r':
		return nil, '\r', nil
	case 'f':
		return nil, '\f', nil
	case 'v':
		return nil, '\v', nil
	case '0':
		if p.more() && '0' <= p.src[p.pos] && p.src[p.pos] <= '9' {
			return nil, 0, p.errorf("octal escapes are not supported")
		}
		return nil, 0, nil
	case 'b':
		if inClass {
			return nil, '\b', nil // backspace, in a class
		}
		return nil, 0, p.errorf(`\b (word boundary) is not supported`)
	case 'B':
		return nil, 0, p.errorf(`\B (not a word boundary) is not supported`)
	case 'x', 'u':
		n := map[rune]int{'x': 2, 'u': 4}[c]
		if len(p.src)-p.pos < n {
			return nil, 0, p.errorf("\\%c needs %d hex digits", c, n)
		}
		v, perr := strconv.ParseUint(string(p.src[p.pos:p.pos+n]), 16, 32)
		if perr != nil {
			return nil, 0, p.errorf("bad escape \\%c%s", c, string(p.src[p.pos:p.pos+n]))
		}
		p.pos += n
		if 0xD800 <= v && v <= 0xDFFF {
			return nil, 0, p.errorf("\\u%04X is a surrogate: write the character itself", v)
		}
		return nil, rune(v), nil
	case 'p', 'P':
		return nil, 0, p.errorf(`\%c{…} Unicode classes are not supported`, c)
	}
	if '1' <= c && c <= '9' {
		return nil, 0, p.errorf("backreferences are not supported")
	}
	if c < utf8.RuneSelf && ('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
		return nil, 0, p.errorf("unknown escape \\%c", c)
	}
	return nil, c, nil // \. \* \\ \/ \- …: the character itself
}

// class parses the rest of [...].
func (p *regexParser) class() (*reNode, error) {
	negate := false
	if p.more() && p.src[p.pos] == '^' {
		negate = true
		p.pos++
	}
	var spans []span
	first := true
	for {
		if !p.more() {
			return nil, p.errorf("unterminated character class")
		}
		c := p.src[p.pos]
		if c == ']' && !first {
			p.pos++
			break
		}
		first = false
		lo, set, err := p.classAtom()
		if err != nil {
			return nil, err
		}
		if set != nil {
			spans = append(spans, set...)
			continue
		}
		if p.pos+1 < len(p.src) && p.src[p.pos] == '-' && p.src[p.pos+1] != ']' {
			p.pos++
			hi, set, err := p.classAtom()
			if err != nil {
				return nil, err
			}
			if set != nil {
				return nil, p.errorf("a class escape cannot end a range")
			}
			if hi < lo {
				return nil, p.errorf("range %q-%q is backwards", lo, hi)
			}
			spans = append(spans, span{lo, hi})
			continue
		}
		spans = append(spans, span{lo, lo})
	}
	set := normalize(charset{spans: spans}).spans
	if negate {
		set = complement(set)
	}
	if len(set) == 0 {
		return nil, p.errorf("the class matches no character")
	}
	return &reNode{kind: reSet, set: set}, nil
}

// classAtom is one character of a class, or a class escape (set).
func (p *regexParser) classAtom() (rune, []span, error) {
	c := p.src[p.pos]
	p.pos++
	if c == '[' && p.more() && (p.src[p.pos] == ':' || p.src[p.pos] == '=' || p.src[p.pos] == '.') {
		return 0, nil, p.errorf("POSIX classes such as [:alpha:] are not supported")
	}
	if c != '\\' {
		return c, nil, nil
	}
	set, r, err := p.escape(true)
	return r, set, err
}

// complement is every code point not in spans (sorted and disjoint).
func complement(spans []span) []span {
	var out []span
	next := rune(0)
	for _, s := range normalize(charset{spans: spans}).spans {
		if s.lo > next {
			out = append(out, span{next, s.lo - 1})
		}
		next = s.hi + 1
	}
	if next <= maxRune {
		out = append(out, span{next, maxRune})
	}
	return out
}

// RegexGBNF compiles a regular expression (see the syntax above) to GBNF whose sentences are
// exactly the texts the expression matches in full — vLLM's guided_regex, for which ^ and $
// change nothing. Parts the grammar refers to from several places become rules of their own
// ("re-1", …), so the grammar grows with the pattern, not with its nesting.
func RegexGBNF(pattern string) (string, error) {
	re, err := parseRegex(pattern)
	if err != nil {
		return "", err
	}
	var rules []string
	w := newRegexWriter(re, false, "", func(body string) string {
		name := "re-" + strconv.Itoa(len(rules)+1)
		rules = append(rules, name+" ::= "+body)
		return name
	})
	root := w.write()
	if w.err != nil {
		return "", w.err
	}
	var b strings.Builder
	b.WriteString("root ::= " + root + "\n")
	for _, r := range rules {
		b.WriteString(r + "\n")
	}
	return b.String(), nil
}

// FromRegex compiles a regular expression into a Grammar: Parse(RegexGBNF(pattern)).
func FromRegex(pattern string) (*Grammar, error) {
	src, err := RegexGBNF(pattern)
	if err != nil {
		return nil, err
	}
	return Parse(src)
}

// regexWriter writes a parsed regex as a GBNF expression. With json set it writes the texts
// as they appear inside a JSON string — '"', '\', \n, \r and \t escaped; other control
// characters are refused — and a top-level alternative not anchored by ^ (or $) has any text
// before (or after) it, written as the rule any: JSON Schema's pattern is a search, not a full
// match.
//
// It first rewrites the tree into a graph (normalize): a repetition of something that can match
// nothing becomes a repetition of its non-empty texts (GBNF would otherwise repeat an empty
// match forever, a left-recursive rule), built once per node and sharing the parts the
// rewrite repeats; then it writes each node referred to more than once as a rule (define).
type regexWriter struct {
	json   bool
	any    string // json: the rule of one character of a JSON string, escapes included
	define func(body string) string
	root   *reNode
	norm   map[*reNode]*reNode // the tree's nodes rewritten
	ne     map[*reNode]*reNode // nonEmpty's results (nil: none)
	refs   map[*reNode]int     // references to each node of the graph
	rules  map[*reNode]string  // nodes written as rules
	size   int
	err    error
}

func newRegexWriter(re *reNode, json bool, any string, define func(string) string) *regexWriter {
	w := &regexWriter{json: json, any: any, define: define, norm: map[*reNode]*reNode{}, ne: map[*reNode]*reNode{},
		refs: map[*reNode]int{}, rules: map[*reNode]string{}}
	w.root = w.normalize(re)
	w.count(w.root)
	return w
}

// write writes the whole expression; w.err says whether it was too large.
func (w *regexWriter) write() string {
	out := w.expr(w.root)
	if w.size+len(out) > maxGrammarSize {
		w.err = fmt.Errorf("%w: the regex's grammar would exceed %d bytes", ErrGrammar, maxGrammarSize)
	}
	return out
}

// emptyNode matches the empty text only.
func emptyNode() *reNode { return &reNode{kind: reConcat} }

// normalize rewrites n: repetitions of what can match nothing made repetitions of its
// non-empty texts, x{0} made empty.
func (w *regexWriter) normalize(n *reNode) *reNode {
	if m, ok := w.norm[n]; ok {
		return m
	}
	var out *reNode
	switch n.kind {
	case reLit, reSet:
		out = n
	case reRepeat:
		body := w.normalize(n.subs[0])
		switch {
		case n.max == 0:
			out = emptyNode()
		case nullable(body):
			// x{m,M} with x able to match nothing is x'{0,M}, x' its non-empty texts.
			if ne := w.nonEmpty(body); ne == nil {
				out = emptyNode()
			} else {
				out = &reNode{kind: reRepeat, subs: []*reNode{ne}, min: 0, max: n.max}
			}
		default:
			out = &reNode{kind: reRepeat, subs: []*reNode{body}, min: n.min, max: n.max}
		}
	default:
		out = &reNode{kind: n.kind, top: n.top, start: n.start, end: n.end}
		for _, s := range n.subs {
			out.subs = append(out.subs, w.normalize(s))
		}
	}
	w.norm[n] = out
	return out
}

// nonEmpty is a node of the graph matching the texts n (normalized) matches but the empty one
// (nil: there are none). A normalized repetition's body never matches the empty text.
func (w *regexWriter) nonEmpty(n *reNode) *reNode {
	if m, ok := w.ne[n]; ok {
		return m
	}
	var out *reNode
	switch n.kind {
	case reLit, reSet:
		out = n
	case reRepeat:
		if n.max != 0 {
			out = &reNode{kind: reRepeat, subs: n.subs, min: max(n.min, 1), max: n.max}
		}
	case reAlt:
		alt := &reNode{kind: reAlt}
		for _, s := range n.subs {
			if s = w.nonEmpty(s); s != nil {
				alt.subs = append(alt.subs, s)
			}
		}
		out = oneOrAlt(alt)
	case reConcat:
		// a1…an: for the first part i that is not empty, a1…a(i−1) are empty (each nullable),
		// ai is a non-empty text and the rest, rest(i+1) = a(i+1) rest(i+2), anything: the
		// rests are a chain of shared nodes, so the alternatives do not copy them.
		if len(n.subs) == 0 {
			break // the empty text only
		}
		last := 0
		for last < len(n.subs)-1 && nullable(n.subs[last]) {
			last++
		}
		rest := make([]*reNode, len(n.subs)+1) // rest[i]: a(i)…an, nil for none
		for i := len(n.subs) - 1; i >= 1; i-- {
			rest[i] = &reNode{kind: reConcat, subs: []*reNode{n.subs[i]}}
			if rest[i+1] != nil {
				rest[i].subs = append(rest[i].subs, rest[i+1])
			}
		}
		alt := &reNode{kind: reAlt}
		for i := 0; i <= last; i++ {
			if ne := w.nonEmpty(n.subs[i]); ne != nil {
				c := &reNode{kind: reConcat, subs: []*reNode{ne}}
				if rest[i+1] != nil {
					c.subs = append(c.subs, rest[i+1])
				}
				alt.subs = append(alt.subs, c)
			}
		}
		out = oneOrAlt(alt)
	}
	w.ne[n] = out
	return out
}

// oneOrAlt is alt, its only alternative, or nil when it has none.
func oneOrAlt(alt *reNode) *reNode {
	switch len(alt.subs) {
	case 0:
		return nil
	case 1:
		return alt.subs[0]
	}
	return alt
}

// count counts the references to each node of the graph.
func (w *regexWriter) count(n *reNode) {
	w.refs[n]++
	if w.refs[n] > 1 {
		return
	}
	for _, s := range n.subs {
		w.count(s)
	}
}

// expr writes node n: a node referred to from several places as its rule.
func (w *regexWriter) expr(n *reNode) string {
	if n.kind == reLit || n.kind == reSet || w.refs[n] < 2 || n == w.root {
		return w.body(n)
	}
	if name, ok := w.rules[n]; ok {
		return name
	}
	body := w.body(n)
	w.size += len(body) + 16
	if w.size > maxGrammarSize {
		if w.err == nil {
			w.err = fmt.Errorf("%w: the regex's grammar would exceed %d bytes", ErrGrammar, maxGrammarSize)
		}
		return `""`
	}
	name := w.define(body)
	w.rules[n] = name
	return name
}

func (w *regexWriter) body(n *reNode) string {
	if w.err != nil {
		return `""`
	}
	switch n.kind {
	case reLit:
		return w.chars([]span{{n.lit, n.lit}})
	case reSet:
		return w.chars(n.set)
	case reRepeat:
		x := "(" + w.expr(n.subs[0]) + ")"
		switch {
		case n.min == 1 && n.max == 1:
			return x
		case n.min == 0 && n.max < 0:
			return x + "*"
		case n.min == 1 && n.max < 0:
			return x + "+"
		case n.min == 0 && n.max == 1:
			return x + "?"
		case n.max < 0:
			return fmt.Sprintf("%s{%d,}", x, n.min)
		case n.min == n.max:
			return fmt.Sprintf("%s{%d}", x, n.min)
		}
		return fmt.Sprintf("%s{%d,%d}", x, n.min, n.max)
	case reConcat:
		var parts []string
		if w.json && n.top && !n.start {
			parts = append(parts, w.any+"*")
		}
		var lit []rune // runs of literals as one string
		flush := func() {
			if len(lit) > 0 {
				parts = append(parts, w.literal(lit))
				lit = lit[:0]
			}
		}
		for _, s := range n.subs {
			if s.kind == reLit && (!w.json || s.lit >= 0x20 || s.lit == '\n' || s.lit == '\r' || s.lit == '\t') {
				lit = append(lit, s.lit)
				continue
			}
			flush()
			parts = append(parts, w.expr(s))
		}
		flush()
		if w.json && n.top && !n.end {
			parts = append(parts, w.any+"*")
		}
		if len(parts) == 0 {
			return `""`
		}
		return strings.Join(parts, " ")
	case reAlt:
		parts := make([]string, len(n.subs))
		for i, s := range n.subs {
			parts[i] = w.expr(s)
		}
		if len(parts) == 1 {
			return parts[0]
		}
		return "(" + strings.Join(parts, " | ") + ")"
	}
	panic("grammar: unknown regex node")
}

// nullable reports whether n matches the empty text.
func nullable(n *reNode) bool {
	switch n.kind {
	case reLit, reSet:
		return false
	case reRepeat:
		return n.min == 0 || n.max == 0 || nullable(n.subs[0])
	case reAlt:
		for _, s := range n.subs {
			if nullable(s) {
				return true
			}
		}
		return false
	}
	for _, s := range n.subs { // reConcat
		if !nullable(s) {
			return false
		}
	}
	return true
}

// literal writes code points in a row as one GBNF string (escaped for JSON in json mode).
func (w *regexWriter) literal(rs []rune) string {
	if !w.json {
		return Quote(string(rs))
	}
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(jsonEscaped(r))
	}
	return Quote(b.String())
}

// jsonEscaped is how a code point is written inside a JSON string: '"', '\', \n, \r and \t
// with a backslash (as encoding/json writes them), the rest as is.
func jsonEscaped(r rune) string {
	switch r {
	case '"':
		return `\"`
	case '\\':
		return `\\`
	case '\n':
		return `\n`
	case '\r':
		return `\r`
	case '\t':
		return `\t`
	}
	return string(r)
}

// chars writes a set of code points as a GBNF class. In JSON mode the characters a JSON
// string escapes leave the class and come as alternatives, each its escape; other control
// characters are dropped (a set of nothing but those is an error at Parse: an empty class).
func (w *regexWriter) chars(set []span) string {
	if !w.json {
		return classExpr(set)
	}
	var plain []span
	var escaped []string
	for _, s := range set {
		lo, hi := s.lo, s.hi
		for _, special := range []rune{'\t', '\n', '\r', '"', '\\'} {
			if lo <= special && special <= hi {
				escaped = append(escaped, Quote(jsonEscaped(special)))
			}
		}
		for _, cut := range []span{{0, 0x1F}, {'"', '"'}, {'\\', '\\'}} {
			if lo <= cut.hi && cut.lo <= hi { // take [lo, hi] ∖ cut: the part below, then go on above
				if lo < cut.lo {
					plain = append(plain, span{lo, cut.lo - 1})
				}
				lo = max(lo, cut.hi+1)
			}
		}
		if lo <= hi {
			plain = append(plain, span{lo, hi})
		}
	}
	var parts []string
	if len(plain) > 0 {
		parts = append(parts, classExpr(plain))
	}
	parts = append(parts, escaped...)
	switch len(parts) {
	case 0:
		if w.err == nil {
			w.err = fmt.Errorf("%w: the pattern needs a control character other than \\n, \\r and \\t at some place, which the grammar does not write in a JSON string", ErrGrammar)
		}
		return `""`
	case 1:
		return parts[0]
	}
	return "(" + strings.Join(parts, " | ") + ")"
}

// classExpr writes sorted, disjoint spans as [...] or, when shorter, as [^...] of the rest.
func classExpr(set []span) string {
	in := classBody(set)
	if out := classBody(complement(set)); len(out)+1 < len(in) {
		return "[^" + out + "]"
	}
	return "[" + in + "]"
}

func classBody(set []span) string {
	var b strings.Builder
	for _, s := range set {
		b.WriteString(classChar(s.lo))
		if s.hi > s.lo {
			if s.hi > s.lo+1 {
				b.WriteByte('-')
			}
			b.WriteString(classChar(s.hi))
		}
	}
	return b.String()
}

// classChar writes one code point for a GBNF class.
func classChar(r rune) string {
	switch {
	case r == '\\' || r == ']' || r == '[' || r == '-' || r == '^' || r == '"':
		return `\` + string(r)
	case r == '\n':
		return `\n`
	case r == '\t':
		return `\t`
	case r == '\r':
		return `\r`
	case r < 0x20 || r == 0x7F:
		return fmt.Sprintf(`\x%02X`, r)
	case 0xD800 <= r && r <= 0xDFFF || r > 0xFFFF:
		return fmt.Sprintf(`\U%08X`, r)
	case r >= 0x80 && !isPrintable(r):
		return fmt.Sprintf(`\u%04X`, r)
	}
	return string(r)
}

// isPrintable is a conservative test for writing a code point as itself in a class.
func isPrintable(r rune) bool { return r >= 0xA0 && r < 0xD800 || r >= 0xE000 && r < 0xFFF0 }
