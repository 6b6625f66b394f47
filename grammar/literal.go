package grammar

import (
	"fmt"
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
// guided_choice).
func Choice(options ...string) (*Grammar, error) {
	if len(options) == 0 {
		return nil, fmt.Errorf("%w: no choices", ErrGrammar)
	}
	alts := make([]string, len(options))
	for i, o := range options {
		if !utf8.ValidString(o) {
			return nil, fmt.Errorf("%w: choice %d is not valid UTF-8", ErrGrammar, i)
		}
		alts[i] = Quote(o)
	}
	return Parse("root ::= " + strings.Join(alts, " | ") + "\n")
}
