package chat

import (
	"testing"
	"unicode/utf8"
)

// pythonSpace is every code point for which CPython 3's str.isspace() is true
// ([c for c in range(0x110000) if chr(c).isspace()]): what Meta's .strip() removes.
var pythonSpace = map[rune]bool{
	0x09: true, 0x0a: true, 0x0b: true, 0x0c: true, 0x0d: true, 0x1c: true, 0x1d: true, 0x1e: true,
	0x1f: true, 0x20: true, 0x85: true, 0xa0: true, 0x1680: true, 0x2000: true, 0x2001: true,
	0x2002: true, 0x2003: true, 0x2004: true, 0x2005: true, 0x2006: true, 0x2007: true, 0x2008: true,
	0x2009: true, 0x200a: true, 0x2028: true, 0x2029: true, 0x202f: true, 0x205f: true, 0x3000: true,
}

func TestPyStripMatchesPython(t *testing.T) {
	for r := rune(0); r <= utf8.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		if s := "a" + string(r) + "b"; pyStrip(s) != s {
			t.Fatalf("U+%04X: inner characters must stay", r)
		}
		stripped := pyStrip(string(r) + "x" + string(r))
		want := string(r) + "x" + string(r)
		if pythonSpace[r] {
			want = "x"
		}
		if stripped != want {
			t.Fatalf("U+%04X (Python whitespace: %v): strip gave %q, want %q", r, pythonSpace[r], stripped, want)
		}
	}
}
