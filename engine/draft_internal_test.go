package engine

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestLookupDraft(t *testing.T) {
	for _, tc := range []struct {
		name    string
		history []int32
		k       int
		want    []int32
	}{
		{"three-token match", []int32{1, 5, 6, 7, 8, 9, 2, 5, 6, 7}, 3, []int32{8, 9, 2}},
		{"most recent occurrence", []int32{5, 6, 1, 5, 6, 2, 5, 6}, 2, []int32{2, 5}},
		{"falls back to shorter suffixes", []int32{4, 9, 3, 8, 9}, 4, []int32{3, 8, 9}},
		{"proposal stops at the end of history", []int32{7, 7}, 5, []int32{7}},
		{"longer match wins over a nearer shorter one", []int32{1, 2, 3, 4, 9, 3, 5, 1, 2, 3}, 1, []int32{4}},
		{"no earlier occurrence", []int32{1, 2, 3}, 4, nil},
		{"too short", []int32{1}, 4, nil},
		{"empty", nil, 4, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, lookupDraft(nil, tc.history, tc.k))
		})
	}
}
