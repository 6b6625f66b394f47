package grammar

import (
	"errors"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// Patterns in the syntax RE2 (Go's regexp) shares with ECMAScript and Python: for these the
// grammar's sentences must be exactly the texts regexp matches in full.
var regexPatterns = []string{
	`abc`, `a|b|`, `(ab|cd)*e`, `a+b?c*`, `[a-c]{2,4}x`, `[^a-c\n]+`, `\d{3}-\d{4}`,
	`\w+@\w+\.(com|org)`, `(?:x|yz){0,3}`, `(?P<year>\d{4})-(?<mm>\d\d)`, `.*`, `.+q`, `a.c`,
	`[\d.-]+`, `[-a]`, `[a-]`, `[]a]`, `\s*\S+`, `\W\D`, `^hi$`, `^a|b$`, `[+*?.(){}|]+`,
	`\.\*\\\/\+\?\(\)\[\]\{\}\|\^\$`, `a{3}`, `a{2,}`, `(a{2}){1,2}`, `{`, `a{`, `a{x}`, `a{,2}`,
	`}`, `a}b`, `x*?y+?z??`, `(a|ab)(c|bcd)(d*)`, `(a*)*b`, `((a|b)*c)+`, `안녕(하세요)?`,
	`[가-힣]+`, `[^\x00-\x7F]`, `\x41\x42`, `[\x20-\x2F]+`, `(|a)b`, `()`, `(((a)))`, `[a-z]+( [a-z]+)*\.`,
	`(true|false|null)`, `-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`, `\t\n\r\f`, `[\t ]+`,
	`(a{0})*b`, `(a{0}|b)*`, `(x{0}){2}y`, `(a?(b?c)*)*d`, `((a|)(b|))*c`, `(a*b*)*`, `(a?a?a?)+b`,
}

func TestRegexMatchesGoRegexp(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, pat := range regexPatterns {
		g, err := FromRegex(pat)
		require.NoError(t, err, "pattern %q", pat)
		re := regexp.MustCompile(`^(?:` + pat + `)$`)
		tree, err := parseRegex(pat)
		require.NoError(t, err)
		alphabet := []rune("ab0 \n.é안-x_Z9\t%\"\\\r😀")
		for _, r := range pat {
			alphabet = append(alphabet, r)
		}
		var texts []string
		for range 300 {
			texts = append(texts, mutate(rng, genRegex(rng, tree), alphabet))
			texts = append(texts, genRegex(rng, tree))
			b := make([]rune, rng.IntN(7))
			for i := range b {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			}
			texts = append(texts, string(b))
		}
		matched := 0
		for _, s := range texts {
			want := re.MatchString(s)
			if want {
				matched++
			}
			require.Equal(t, want, accepts(t, g, s), "pattern %q, text %q (grammar %s)", pat, s, g.String())
		}
		require.Positive(t, matched, "pattern %q: no text matched, the test would not tell", pat)
	}
}

// genRegex draws a text the tree matches in full.
func genRegex(rng *rand.Rand, n *reNode) string {
	switch n.kind {
	case reLit:
		return string(n.lit)
	case reSet:
		for {
			s := n.set[rng.IntN(len(n.set))]
			hi := min(s.hi, s.lo+300) // near the bottom of wide ranges: characters tests can read
			r := s.lo + rune(rng.IntN(int(hi-s.lo)+1))
			if utf8.ValidRune(r) && r != '\v' {
				return string(r)
			}
		}
	case reRepeat:
		k := n.min
		if n.max < 0 {
			k += rng.IntN(4)
		} else {
			k += rng.IntN(n.max - n.min + 1)
		}
		var b strings.Builder
		for range k {
			b.WriteString(genRegex(rng, n.subs[0]))
		}
		return b.String()
	case reConcat:
		var b strings.Builder
		for _, s := range n.subs {
			b.WriteString(genRegex(rng, s))
		}
		return b.String()
	case reAlt:
		return genRegex(rng, n.subs[rng.IntN(len(n.subs))])
	}
	panic("unknown node")
}

// mutate inserts, deletes or replaces one character.
func mutate(rng *rand.Rand, s string, alphabet []rune) string {
	r := []rune(s)
	i := rng.IntN(len(r) + 1)
	c := alphabet[rng.IntN(len(alphabet))]
	switch op := rng.IntN(3); {
	case op == 0 || len(r) == 0 || i == len(r):
		r = append(r[:i], append([]rune{c}, r[i:]...)...)
	case op == 1:
		r = append(r[:i], r[i+1:]...)
	default:
		r[i] = c
	}
	return string(r)
}

// What RE2 spells otherwise, or lacks: \u escapes, \v in \s, lazy quantifiers' languages.
func TestRegexMatch(t *testing.T) {
	for _, tc := range []struct {
		pat     string
		yes, no []string
	}{
		{`\u00e9\u0041`, []string{"éA"}, []string{"eA", `\u00e9A`}},
		{`\s`, []string{" ", "\t", "\n", "\r", "\f", "\v"}, []string{"a", "\u00a0"}},
		{`[\b]`, []string{"\b"}, []string{"b"}},
		{`a\0b`, []string{"a\x00b"}, []string{"a0b"}},
		{`a.b`, []string{"a b", "a안b"}, []string{"a\nb", "ab"}},
		{`[^a]`, []string{"b", "😀"}, []string{"a", ""}},
		{`^$`, []string{""}, []string{"a"}},
	} {
		g, err := FromRegex(tc.pat)
		require.NoError(t, err, tc.pat)
		for _, s := range tc.yes {
			require.True(t, accepts(t, g, s), "%q should match %q", tc.pat, s)
		}
		for _, s := range tc.no {
			require.False(t, accepts(t, g, s), "%q should not match %q", tc.pat, s)
		}
	}
}

func TestRegexErrors(t *testing.T) {
	for _, tc := range []struct{ pat, want string }{
		{`(a`, "missing )"},
		{`a)`, "unmatched )"},
		{`[a`, "unterminated character class"},
		{`[]`, "unterminated character class"},
		{`*a`, "* with nothing to repeat"},
		{`a**`, "* with nothing to repeat"},
		{`a{2}{3}`, "nothing to repeat"},
		{`{2}`, "nothing to repeat"},
		{`a{1001}`, "above 1000"},
		{`a{3,2}`, "backwards"},
		{`[z-a]`, "backwards"},
		{`[a-\d]`, "cannot end a range"},
		{`(a)\1`, "backreferences"},
		{`a(?=b)`, "lookaround"},
		{`a(?!b)`, "lookaround"},
		{`(?<=a)b`, "lookaround"},
		{`(?i)a`, "inline flags"},
		{`\bword\b`, "word boundary"},
		{`\Bx`, "not a word boundary"},
		{`a++`, "possessive"},
		{`\p{L}`, "Unicode classes"},
		{`a^b`, "^ is supported only"},
		{`a$b`, "$ is supported only"},
		{`(a$)`, "$ is supported only"},
		{`\q`, "unknown escape"},
		{`\x4`, "2 hex digits"},
		{`\uD800`, "surrogate"},
		{`a\`, "end of the pattern"},
		{`[[:alpha:]]`, "POSIX"},
		{`[^\x00-\x{10FFFF}]`, ""},
		{"\xff", "UTF-8"},
		{`(?<name`, "unterminated group name"},
		{`\012`, "octal"},
	} {
		_, err := FromRegex(tc.pat)
		require.Error(t, err, tc.pat)
		require.True(t, errors.Is(err, ErrGrammar), "%q: %v", tc.pat, err)
		require.Contains(t, err.Error(), tc.want, tc.pat)
	}
}

// The GBNF text is what Parse compiles, and literals come out as one string.
func TestRegexGBNFText(t *testing.T) {
	src, err := RegexGBNF(`^ab(c|d)+[^"]$`)
	require.NoError(t, err)
	require.Equal(t, "root ::= \"ab\" ((\"c\" | \"d\"))+ [^\\\"]\n", src)
}

// A JSON Schema pattern matches the decoded string anywhere unless anchored: the grammar takes
// the JSON text of a string exactly when Go's regexp finds the pattern in the string (strings
// written as encoding/json writes them, without control characters other than \n \r \t, which
// the grammar never writes).
func TestSchemaPatternMatchesGoRegexp(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, pat := range []string{`^\d{3}-\d{4}$`, `ab`, `^ab`, `ab$`, `^a|b$`, `"q"`, `\\`, `^[^"]*$`, `^\w+@\w+\.(com|org)$`,
		`^.{2,4}$`, `\n`, `^\s*$`, `^[a-z]+( [a-z]+)*\.$`, `^(안녕|hi)!?$`, `x*`} {
		g, err := FromJSONSchema([]byte(`{"type": "string", "pattern": ` + jsonString(pat) + `}`))
		require.NoError(t, err, "pattern %q", pat)
		re := regexp.MustCompile(pat)
		tree, err := parseRegex(pat)
		require.NoError(t, err)
		alphabet := []rune("ab0 \n.é안-x_Z9\t\"\\\r@q!")
		var texts []string
		for range 200 {
			texts = append(texts, mutate(rng, genRegex(rng, tree), alphabet), genRegex(rng, tree))
			b := make([]rune, rng.IntN(6))
			for i := range b {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			}
			texts = append(texts, string(b))
		}
		matched := 0
		for _, s := range texts {
			if strings.ContainsFunc(s, func(r rune) bool {
				return r < 0x20 && r != '\n' && r != '\r' && r != '\t' || r == 0x2028 || r == 0x2029
			}) {
				continue
			}
			want := re.MatchString(s)
			if want {
				matched++
			}
			require.Equal(t, want, accepts(t, g, jsonString(s)), "pattern %q, string %q (grammar %s)", pat, s, g.String())
		}
		require.Positive(t, matched, "pattern %q", pat)
	}
}

// Nested repetitions of what may match nothing are rewritten without copying: the grammar
// grows with the pattern, not with its nesting (each level used to double it), and a pattern
// whose grammar would still be too large is an error, not an allocation.
func TestRegexGrammarSize(t *testing.T) {
	nested := "b"
	for k := range 20 {
		nested = "(" + string(rune('c'+k)) + "?" + nested + ")*" // (w?(v?(…(c?b)*…)*)*)*
	}
	flat := "(" + strings.Repeat("a?", 1000) + ")*"
	for _, pat := range []string{nested, flat} {
		src, err := RegexGBNF(pat)
		require.NoError(t, err)
		require.Less(t, len(src), 40*len(pat), "%.40s…: %d bytes of GBNF for %d of pattern", pat, len(src), len(pat))
		_, err = Parse(src)
		require.NoError(t, err)
	}
	// Such patterns still mean what they say, as far as they stay unambiguous enough to match
	// (MaxStacks parses: at 20 levels a lone b has more; a run of a's in the flat one has a
	// thousand, ErrAmbiguous either way).
	nested = "b"
	for k := range 4 {
		nested = "(" + string(rune('c'+k)) + "?" + nested + ")*"
	}
	g, err := FromRegex(nested)
	require.NoError(t, err)
	re := regexp.MustCompile(`^(?:` + nested + `)$`)
	tree, err := parseRegex(nested)
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(11, 12))
	alphabet := []rune("bcdefghijx")
	matched, ambiguous, texts := 0, 0, 0
	for range 300 {
		for _, s := range []string{genRegex(rng, tree), mutate(rng, genRegex(rng, tree), alphabet)} {
			texts++
			m := g.NewMatcher(byteVocab())
			var err error
			for i := 0; i < len(s) && err == nil; i++ {
				err = m.Accept(int32(s[i]))
			}
			if errors.Is(err, ErrAmbiguous) {
				ambiguous++
				continue
			}
			want := re.MatchString(s)
			if want {
				matched++
			}
			require.Equal(t, want, err == nil && m.Accepting(), "%q", s)
		}
	}
	require.Positive(t, matched)
	require.Less(t, ambiguous, texts/3, "too ambiguous to tell")
	_, err = RegexGBNF(strings.Repeat("(ab|cd|ef)*", 60000))
	require.ErrorContains(t, err, "would exceed")
}

// FuzzRegex: any pattern compiles or is refused with ErrGrammar — no panic, a grammar that
// grows with the pattern — and what compiles matches texts without panicking, as a full match
// and as a JSON Schema pattern.
func FuzzRegex(f *testing.F) {
	for _, p := range regexPatterns {
		f.Add(p, "ab0-")
	}
	f.Add(`(a?(b?c)*)*`, "abc")
	f.Fuzz(func(t *testing.T, pat, text string) {
		src, err := RegexGBNF(pat)
		if err != nil {
			if !errors.Is(err, ErrGrammar) {
				t.Fatalf("%q: error wraps no ErrGrammar: %v", pat, err)
			}
			return
		}
		if len(src) > 64*len(pat)+64 {
			t.Fatalf("%q: %d bytes of grammar", pat, len(src))
		}
		g, err := Parse(src)
		if err != nil {
			t.Fatalf("%q: the grammar does not parse: %v\n%s", pat, err, src)
		}
		matches(t, g, text)
		if sg, err := FromJSONSchema([]byte(`{"type": "string", "pattern": ` + jsonString(pat) + `}`)); err == nil {
			matches(t, sg, jsonString(text))
		} else if !errors.Is(err, ErrGrammar) {
			t.Fatalf("%q as a pattern: error wraps no ErrGrammar: %v", pat, err)
		}
	})
}
