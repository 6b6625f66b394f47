package grammar

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Quote returns s as a GBNF string literal: quotes, backslashes and control characters escaped,
// everything else (non-ASCII included) as is.
func Quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7F:
			fmt.Fprintf(&b, `\x%02X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Choice returns the grammar whose sentences are exactly the given strings (vLLM's
// guided_choice). Options that share a prefix share its parse (written as a trie, as the JSON
// Schema compiler writes an enum), so many options do not make the grammar ambiguous.
func Choice(options ...string) (*Grammar, error) {
	if len(options) == 0 {
		return nil, fmt.Errorf("%w: no choices", ErrGrammar)
	}
	for i, o := range options {
		if !utf8.ValidString(o) {
			return nil, fmt.Errorf("%w: choice %d is not valid UTF-8", ErrGrammar, i)
		}
	}
	texts := slices.Compact(slices.Sorted(slices.Values(options)))
	if len(texts) == 1 && texts[0] == "" {
		return Parse("root ::= \"\"\n")
	}
	expr, err := (&compiler{}).choice("", texts, 0)
	if err != nil {
		return nil, err
	}
	return Parse("root ::= " + expr + "\n")
}
