package engine

import "testing"

func TestStopMatching(t *testing.T) {
	for _, tc := range []struct {
		name  string
		text  string
		stops []string
		index int // stopIndex
		held  int // heldSuffix
	}{
		{"none", "hello world", []string{"xyz"}, -1, 0},
		{"match", "hello world", []string{"o w"}, 4, 0},
		{"earliest", "hello world", []string{"world", "llo"}, 2, 0},
		{"partial-at-end", "hello wor", []string{"world"}, -1, 3},
		{"longest-partial", "aaa", []string{"aab"}, -1, 2},
		{"whole-stop-is-not-held", "abc", []string{"c"}, 2, 0},
		{"two-stops-longest-held", "so the en", []string{"end", " the end"}, -1, len(" the en")},
		{"korean-partial", "안녕하", []string{"하세요"}, -1, len("하")},
		{"korean-match", "안녕하세요!", []string{"세요"}, len("안녕하"), 0},
		{"empty-text", "", []string{"x"}, -1, 0},
		{"no-stops", "abc", nil, -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := stopIndex(tc.text, tc.stops); got != tc.index {
				t.Errorf("stopIndex(%q, %q) = %d, want %d", tc.text, tc.stops, got, tc.index)
			}
			if tc.index >= 0 {
				return
			}
			if got := heldSuffix(tc.text, tc.stops); got != tc.held {
				t.Errorf("heldSuffix(%q, %q) = %d, want %d", tc.text, tc.stops, got, tc.held)
			}
		})
	}
}
