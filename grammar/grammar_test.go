package grammar

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// byteVocab has one token per byte value (id = the byte) and EOS = 256: a Matcher over it
// follows text byte by byte.
func byteVocab() *Vocab {
	tokens := make([][]byte, 257)
	for b := range 256 {
		tokens[b] = []byte{byte(b)}
	}
	return NewVocab(tokens, nil, 256)
}

const byteEOS = 256

// matches feeds s byte by byte and reports whether the grammar accepts each byte, and whether
// s is then a complete sentence.
func matches(t *testing.T, g *Grammar, s string) (prefix, complete bool) {
	t.Helper()
	m := g.NewMatcher(byteVocab())
	for i := 0; i < len(s); i++ {
		if m.Accept(int32(s[i])) != nil {
			return false, false
		}
	}
	return true, m.Accepting()
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{``, `no rule named "root"`},
		{`start ::= "a"`, `no rule named "root"`},
		{`root ::= thing`, `line 1: undefined rule "thing"`},
		{"root ::= a\na ::= \"x\"\n\nroot ::= \"y\"", `line 4: rule "root" is defined twice`},
		{`root ::= "abc`, `unterminated string literal`},
		{`root ::= [a-`, `unterminated character class`},
		{`root ::= [z-a]`, `backwards`},
		{`root ::= "\q"`, `unknown escape \q`},
		{`root ::= "\x4"`, `bad escape \x4"`},
		{`root ::= "\x4`, `\x needs 2 hex digits`},
		{`root ::= "\UFFFFFFFF"`, `bad escape`},
		{`root ::= * "a"`, `follows nothing`},
		{`root ::= "a"{3,2}`, `maximum is below the minimum`},
		{`root ::= "a"{1,5000}`, `at most 1000`},
		{`root ::= "a"{x}`, `expected a number`},
		{`root ::= "a"{2`, `expected }`},
		{`root ::= ("a" | "b"`, `expected ) to close the group`},
		{`root = "a"`, `expected ::=`},
		{`root ::= "a" ) "b"`, `unexpected ")`},
		{"::= \"a\"", `expected a rule name`},
		{`root ::= root "a" | "b"`, `rule "root" is left-recursive (root → root)`},
		{"root ::= a\na ::= b? a \"x\"\nb ::= \"y\"", `rule "a" is left-recursive`},
		{"root ::= (\"a\"?)*", `left-recursive`},
		{"root ::= \"\xff\"", `not valid UTF-8`},
	} {
		_, err := Parse(tc.src)
		require.Error(t, err, "%q", tc.src)
		assert.True(t, errors.Is(err, ErrGrammar), "%v", err)
		assert.Contains(t, err.Error(), tc.want, "%q", tc.src)
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		name, src  string
		yes, no    []string // complete sentences; texts that are not
		prefixOnly []string // texts that are prefixes but not complete
	}{
		{name: "literal", src: `root ::= "yes" | "no"`,
			yes: []string{"yes", "no"}, no: []string{"y", "yess", "noo", "", "maybe"}, prefixOnly: []string{"ye", ""}},
		{name: "class and repetition", src: `root ::= [1-9] [0-9]{0,2}`,
			yes: []string{"1", "99", "999", "105"}, no: []string{"0", "1000", "12a", ""}},
		{name: "negation", src: `root ::= "\"" [^"\\\n]* "\""`,
			yes: []string{`""`, `"abc"`, `"한국어"`}, no: []string{`"a"b"`, "\"a\nb\"", `"\"`}},
		{name: "plus and optional", src: "root ::= \"a\"+ \"b\"?  # comment\n",
			yes: []string{"a", "aaa", "ab", "aaab"}, no: []string{"b", "abb", ""}},
		{name: "exact count", src: `root ::= ("ab"){2} "!"{2,}`,
			yes: []string{"abab!!", "abab!!!!"}, no: []string{"ab!!", "abab!", "ababab!!"}},
		{name: "group across lines", src: "root ::= (\n  \"x\" |\n  \"y\"\n) ws \"z\"\nws ::= [ \\t]*",
			yes: []string{"xz", "y \t z"}, no: []string{"x\nz", "z"}},
		{name: "any char and unicode range", src: `root ::= . [가-힣]+`,
			yes: []string{"a한국", "ñ어"}, no: []string{"a", "ab", "aa한"}},
		{name: "nested rules", src: "root ::= list\nlist ::= \"[\" (item (\",\" item)*)? \"]\"\nitem ::= [a-z]+ | list",
			yes: []string{"[]", "[a]", "[a,[b,[]],c]"}, no: []string{"[a,]", "[[]", "[,]"}},
		{name: "escapes", src: `root ::= "\x41\u00e9\t" [\]\[]`,
			yes: []string{"Aé\t]", "Aé\t["}, no: []string{"Ae\t]"}},
		{name: "empty alternative", src: `root ::= "a" | `,
			yes: []string{"a", ""}, no: []string{"b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Parse(tc.src)
			require.NoError(t, err)
			for _, s := range tc.yes {
				prefix, complete := matches(t, g, s)
				assert.True(t, prefix && complete, "%q should match", s)
			}
			for _, s := range tc.no {
				_, complete := matches(t, g, s)
				assert.False(t, complete, "%q should not match", s)
			}
			for _, s := range tc.prefixOnly {
				prefix, complete := matches(t, g, s)
				if s == "" && complete {
					continue
				}
				assert.True(t, prefix && !complete, "%q should be a prefix only", s)
			}
		})
	}
}

func TestAcceptRefusesAndKeepsState(t *testing.T) {
	g := MustParse(`root ::= "ab"`)
	m := g.NewMatcher(byteVocab())
	require.NoError(t, m.Accept('a'))
	err := m.Accept('x')
	require.ErrorIs(t, err, ErrGrammar)
	assert.Contains(t, err.Error(), `does not continue the text`)
	require.Error(t, m.Accept(byteEOS), "EOS before the text is complete")
	require.NoError(t, m.Accept('b'), "the refused tokens changed nothing")
	assert.True(t, m.Accepting())
	assert.True(t, m.Done())
	require.NoError(t, m.Accept(byteEOS))
	assert.Error(t, m.Accept(-1))
	assert.Error(t, m.Accept(1000))
}

// A character that SentencePiece spells as byte tokens is followed byte by byte: a byte is
// allowed when some character the grammar allows starts with the bytes so far.
func TestMatchPartialUTF8(t *testing.T) {
	g := MustParse(`root ::= [가-나] "!"`) // U+AC00..U+B098: lead byte 0xEA or 0xEB
	for _, tc := range []struct {
		text    string
		prefix  bool
		comment string
	}{
		{"\xea", true, "lead of 가"},
		{"\xea\xb0", true, "가's first two bytes"},
		{"가!", true, "complete"},
		{"\xeb\x82\x98!", true, "나 is the range's end"},
		{"\xeb\x82\x99", false, "낙 is one past it"},
		{"\xec", false, "no allowed character starts with 0xEC"},
		{"\xea\x41", false, "not a continuation byte"},
		{"\xe0\x80", false, "overlong form"},
		{"\xed\xa0", false, "surrogate"},
		{"\xff", false, "never in UTF-8"},
	} {
		prefix, _ := matches(t, g, tc.text)
		assert.Equal(t, tc.prefix, prefix, "%q: %s", tc.text, tc.comment)
	}
	m := g.NewMatcher(byteVocab())
	require.NoError(t, m.Accept(0xea))
	assert.False(t, m.Accepting(), "inside a character")
	assert.False(t, m.Done())
}

func TestNegatedSetOverlaps(t *testing.T) {
	set := normalize(charset{spans: []span{{'a', 'z'}, {'0', '9'}, {'b', 'c'}}, negate: true})
	assert.Equal(t, []span{{'0', '9'}, {'a', 'z'}}, set.spans)
	assert.False(t, set.overlaps('a', 'z'))
	assert.False(t, set.overlaps('0', '9'))
	assert.True(t, set.overlaps('9', 'a'), "':' lies between")
	assert.True(t, set.overlaps('z', 'z'+1))
	assert.True(t, set.overlaps(0, '0'))
}

func TestRepetitionIsCompiledOnce(t *testing.T) {
	// x{0,n} becomes n nested optional rules, not 2^n alternatives.
	g := MustParse(`root ::= [a-z]{0,300}`)
	assert.Less(t, g.Rules(), 400)
	prefix, complete := matches(t, g, strings.Repeat("q", 300))
	assert.True(t, prefix && complete)
	prefix, _ = matches(t, g, strings.Repeat("q", 301))
	assert.False(t, prefix)
}

func TestAmbiguousGrammarIsBounded(t *testing.T) {
	// 300 optional "a"s: after k letters, every way of choosing which optionals took them is
	// open — far more than MaxStacks.
	g := MustParse(`root ::= ("a"?){300} "b"`)
	m := g.NewMatcher(byteVocab())
	require.ErrorIs(t, m.Err(), ErrAmbiguous, "the start already opens 301 parses")

	g = MustParse(`root ::= "x" ("a"?){300} "b"`)
	m = g.NewMatcher(byteVocab())
	require.NoError(t, m.Err())
	assert.False(t, m.Allows('x'), "too ambiguous to say")
	require.ErrorIs(t, m.Accept('x'), ErrAmbiguous)
	_, err := m.Mask(make([]float32, 257))
	require.ErrorIs(t, err, ErrAmbiguous)

	// A bounded but ambiguous grammar within the limit works.
	prefix, complete := matches(t, MustParse(`root ::= ("a"?){50} "b"`), "aaab")
	assert.True(t, prefix && complete)
}

func TestChoiceAndQuote(t *testing.T) {
	options := []string{`say "hi"`, `back\slash`, "two\nlines\t\x01", "한국어", ""}
	g, err := Choice(options...)
	require.NoError(t, err)
	for _, o := range options {
		prefix, complete := matches(t, g, o)
		assert.True(t, prefix && complete, "%q", o)
	}
	_, complete := matches(t, g, "say")
	assert.False(t, complete)

	// 256 options, 200 of them alike up to their last character: one parse per next character.
	many := []string{}
	for i := range 256 {
		many = append(many, fmt.Sprintf("option-%03d", i))
	}
	g, err = Choice(many...)
	require.NoError(t, err)
	prefix, complete := matches(t, g, "option-255")
	assert.True(t, prefix && complete)
	_, complete = matches(t, g, "option-256")
	assert.False(t, complete)
	_, err = Choice()
	assert.ErrorIs(t, err, ErrGrammar)
	_, err = Choice("ok", "\xff")
	assert.ErrorIs(t, err, ErrGrammar)
}
