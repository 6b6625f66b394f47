package grammar

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Parse compiles a grammar in GBNF, llama.cpp's notation (grammars/README.md there):
//
//	root    ::= answer "."          # generation starts at root
//	answer  ::= "yes" | "no" | num
//	num     ::= [1-9] [0-9]{0,2}    # 1 to 999
//	word    ::= [^ \t\n]+ ws?       # negated class, one or more, optional
//	ws      ::= [ \t\n]*
//
// A rule is `name ::= alternatives` on one line (a group may span lines); names are letters,
// digits, '-' and '_'. Elements: "literal", [class] with ranges a-z and ^ for negation, '.' for
// any character, a rule name, ( group ); postfix *, +, ?, {m}, {m,}, {m,n}. Escapes in
// literals and classes: \n \t \r \\ \" \[ \] \xHH \uHHHH \UHHHHHHHH. '#' starts a comment.
// Token references (<[id]>) are not supported. Errors name the line and what was expected.
func Parse(src string) (*Grammar, error) {
	p := &parser{src: src, line: 1}
	if !utf8.ValidString(src) {
		return nil, fmt.Errorf("%w: the grammar is not valid UTF-8", ErrGrammar)
	}
	p.space(true)
	for p.pos < len(p.src) {
		if err := p.ruleDef(); err != nil {
			return nil, err
		}
		p.space(true)
	}
	return p.b.compile(src)
}

// MustParse is Parse for grammars written in the program; it panics on an error.
func MustParse(src string) *Grammar {
	g, err := Parse(src)
	if err != nil {
		panic(err)
	}
	return g
}

type parser struct {
	src  string
	pos  int
	line int
	b    builder
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: line %d: %s", ErrGrammar, p.line, fmt.Sprintf(format, args...))
}

func (p *parser) peek() byte {
	if p.pos < len(p.src) {
		return p.src[p.pos]
	}
	return 0
}

// near quotes the source at the current position for messages.
func (p *parser) near() string {
	if p.pos >= len(p.src) {
		return "the end of the grammar"
	}
	end := min(len(p.src), p.pos+12)
	for i := p.pos; i < end; i++ {
		if p.src[i] == '\n' {
			end = i
			break
		}
	}
	return strconv.Quote(p.src[p.pos:end])
}

// space skips blanks and comments, and newlines too when newlines is set.
func (p *parser) space(newlines bool) {
	for p.pos < len(p.src) {
		switch c := p.src[p.pos]; {
		case c == ' ' || c == '\t':
			p.pos++
		case c == '#':
			for p.pos < len(p.src) && p.src[p.pos] != '\n' {
				p.pos++
			}
		case newlines && (c == '\n' || c == '\r'):
			if c == '\n' {
				p.line++
			}
			p.pos++
		default:
			return
		}
	}
}

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

func (p *parser) name() string {
	start := p.pos
	for p.pos < len(p.src) && isNameByte(p.src[p.pos]) {
		p.pos++
	}
	return p.src[start:p.pos]
}

// ruleDef parses `name ::= alternatives` up to the end of its line.
func (p *parser) ruleDef() error {
	line := p.line
	name := p.name()
	if name == "" {
		return p.errorf("expected a rule name, found %s", p.near())
	}
	p.space(false)
	if !hasPrefixAt(p.src, p.pos, "::=") {
		return p.errorf("expected ::= after rule name %q, found %s", name, p.near())
	}
	p.pos += 3
	p.space(true)
	id := p.b.rule(name, line)
	if p.b.defined[id] {
		return p.errorf("rule %q is defined twice", name)
	}
	p.b.defined[id] = true
	alts, err := p.alternatives(name, false)
	if err != nil {
		return err
	}
	p.b.alts[id] = alts
	if c := p.peek(); c != 0 && c != '\n' && c != '\r' {
		return p.errorf("unexpected %s in rule %q", p.near(), name)
	}
	return nil
}

func hasPrefixAt(s string, i int, prefix string) bool {
	return len(s)-i >= len(prefix) && s[i:i+len(prefix)] == prefix
}

// alternatives parses sequences separated by '|'. Inside a group (nested) newlines are blanks.
func (p *parser) alternatives(rule string, nested bool) ([][]item, error) {
	var alts [][]item
	for {
		seq, err := p.sequence(rule, nested)
		if err != nil {
			return nil, err
		}
		alts = append(alts, seq)
		if p.peek() != '|' {
			return alts, nil
		}
		p.pos++
		p.space(true)
	}
}

// sequence parses elements and their repetition operators until '|', ')' or the line's end.
func (p *parser) sequence(rule string, nested bool) ([]item, error) {
	var seq []item
	last := -1 // index in seq where the last element starts (literals are several items)
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		start := len(seq)
		switch {
		case c == '"':
			p.pos++
			lit, err := p.literal()
			if err != nil {
				return nil, err
			}
			seq = append(seq, lit...)
		case c == '[':
			p.pos++
			set, err := p.class()
			if err != nil {
				return nil, err
			}
			seq = append(seq, item{ref: -1, set: set})
		case c == '.':
			p.pos++
			seq = append(seq, item{ref: -1, set: charset{spans: []span{{0, maxRune}}}})
		case c == '(':
			p.pos++
			p.space(true)
			alts, err := p.alternatives(rule, true)
			if err != nil {
				return nil, err
			}
			if p.peek() != ')' {
				return nil, p.errorf("expected ) to close the group in rule %q, found %s", rule, p.near())
			}
			p.pos++
			seq = append(seq, item{ref: p.b.anon(rule, alts)})
		case isNameByte(c):
			line := p.line
			seq = append(seq, item{ref: p.b.rule(p.name(), line)})
		case c == '*' || c == '+' || c == '?' || c == '{':
			if last < 0 {
				return nil, p.errorf("%q in rule %q follows nothing", c, rule)
			}
			min, max, err := p.repetition()
			if err != nil {
				return nil, err
			}
			x := p.single(rule, seq[last:])
			seq = append(seq[:last], p.b.repeat(rule, x, min, max)...)
			start = last
		default:
			return seq, nil
		}
		last = start
		p.space(nested)
	}
	return seq, nil
}

// single makes one item of an element that spans several (a literal): a rule of its own.
func (p *parser) single(rule string, items []item) item {
	if len(items) == 1 {
		return items[0]
	}
	return item{ref: p.b.anon(rule, [][]item{append([]item(nil), items...)})}
}

// repetition parses *, +, ? or {m}, {m,}, {m,n}; max < 0 means unbounded.
func (p *parser) repetition() (min, max int, err error) {
	c := p.src[p.pos]
	p.pos++
	switch c {
	case '*':
		return 0, -1, nil
	case '+':
		return 1, -1, nil
	case '?':
		return 0, 1, nil
	}
	p.space(false)
	if min, err = p.integer(); err != nil {
		return 0, 0, err
	}
	p.space(false)
	max = min
	if p.peek() == ',' {
		p.pos++
		p.space(false)
		max = -1
		if p.peek() != '}' {
			if max, err = p.integer(); err != nil {
				return 0, 0, err
			}
			p.space(false)
		}
	}
	if p.peek() != '}' {
		return 0, 0, p.errorf("expected } to close a repetition, found %s", p.near())
	}
	p.pos++
	switch {
	case min > maxRepeat || max > maxRepeat:
		return 0, 0, p.errorf("repetition {%d,%d}: at most %d", min, max, maxRepeat)
	case max >= 0 && max < min:
		return 0, 0, p.errorf("repetition {%d,%d}: the maximum is below the minimum", min, max)
	}
	return min, max, nil
}

func (p *parser) integer() (int, error) {
	start := p.pos
	for p.pos < len(p.src) && '0' <= p.src[p.pos] && p.src[p.pos] <= '9' && p.pos-start < 6 {
		p.pos++
	}
	if p.pos == start {
		return 0, p.errorf("expected a number in a repetition, found %s", p.near())
	}
	n, _ := strconv.Atoi(p.src[start:p.pos])
	return n, nil
}

// literal parses the rest of "..." into one single-character item per code point.
func (p *parser) literal() ([]item, error) {
	var out []item
	for {
		if p.pos >= len(p.src) || p.src[p.pos] == '\n' {
			return nil, p.errorf("unterminated string literal")
		}
		if p.src[p.pos] == '"' {
			p.pos++
			return out, nil
		}
		r, err := p.char()
		if err != nil {
			return nil, err
		}
		out = append(out, item{ref: -1, set: charset{spans: []span{{r, r}}}})
	}
}

// class parses the rest of [...].
func (p *parser) class() (charset, error) {
	var set charset
	if p.peek() == '^' {
		set.negate = true
		p.pos++
	}
	for {
		if p.pos >= len(p.src) || p.src[p.pos] == '\n' {
			return set, p.errorf("unterminated character class")
		}
		if p.src[p.pos] == ']' {
			p.pos++
			return set, nil
		}
		lo, err := p.char()
		if err != nil {
			return set, err
		}
		hi := lo
		if p.peek() == '-' && p.pos+1 < len(p.src) && p.src[p.pos+1] != ']' {
			p.pos++
			if hi, err = p.char(); err != nil {
				return set, err
			}
			if hi < lo {
				return set, p.errorf("character range %q-%q is backwards", lo, hi)
			}
		}
		set.spans = append(set.spans, span{lo, hi})
	}
}

// char parses one character of a literal or class, escapes included.
func (p *parser) char() (rune, error) {
	if p.src[p.pos] != '\\' {
		r, size := utf8.DecodeRuneInString(p.src[p.pos:])
		p.pos += size
		return r, nil
	}
	p.pos++
	if p.pos >= len(p.src) {
		return 0, p.errorf("escape at the end of the grammar")
	}
	c := p.src[p.pos]
	p.pos++
	switch c {
	case 'n':
		return '\n', nil
	case 't':
		return '\t', nil
	case 'r':
		return '\r', nil
	case '\\', '"', '[', ']', '-', '^', '/':
		return rune(c), nil
	case 'x', 'u', 'U':
		n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[c]
		if len(p.src)-p.pos < n {
			return 0, p.errorf("\\%c needs %d hex digits", c, n)
		}
		v, err := strconv.ParseUint(p.src[p.pos:p.pos+n], 16, 32)
		if err != nil || v > maxRune {
			return 0, p.errorf("bad escape \\%c%s", c, p.src[p.pos:p.pos+n])
		}
		p.pos += n
		return rune(v), nil
	}
	return 0, p.errorf("unknown escape \\%c", c)
}
