package grammar

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// An integer schema's bounds take exactly the integers within them, written as JSON writes
// integers (no leading zeros, no "-0", no fraction or exponent): every integer near the
// bounds, near each power of ten and at random is checked against the bounds themselves.
func TestIntegerBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	type bound struct {
		key string
		v   int64
	}
	cases := [][]bound{
		{{"minimum", 0}}, {{"maximum", 0}}, {{"minimum", 1}, {"maximum", 100}}, {{"minimum", -100}, {"maximum", -1}},
		{{"minimum", -7}, {"maximum", 13}}, {{"exclusiveMinimum", 9}, {"exclusiveMaximum", 100}}, {{"minimum", 10}, {"maximum", 10}},
		{{"minimum", 1999}, {"maximum", 30001}}, {{"minimum", -5000}}, {{"maximum", 12345}}, {{"exclusiveMaximum", -10}},
		{{"minimum", 100}, {"maximum", 999}}, {{"minimum", 101}, {"maximum", 998}}, {{"minimum", 0}, {"maximum", 9}},
		{{"minimum", 999999999}, {"maximum", 1000000001}},
	}
	for range 20 {
		a, b := rng.Int64N(20000)-10000, rng.Int64N(20000)-10000
		cases = append(cases, []bound{{"minimum", min(a, b)}, {"maximum", max(a, b)}})
	}
	for _, bs := range cases {
		schema := `{"type": "integer"`
		lo, hi := int64(-maxMagnitude), int64(maxMagnitude)
		for _, b := range bs {
			schema += fmt.Sprintf(`, %q: %d`, b.key, b.v)
			switch b.key {
			case "minimum":
				lo = b.v
			case "exclusiveMinimum":
				lo = b.v + 1
			case "maximum":
				hi = b.v
			case "exclusiveMaximum":
				hi = b.v - 1
			}
		}
		schema += "}"
		g, err := FromJSONSchema([]byte(schema))
		require.NoError(t, err, schema)
		var ns []int64
		for _, c := range []int64{lo, hi, 0} {
			for d := int64(-25); d <= 25; d++ {
				ns = append(ns, c+d)
			}
		}
		for p := int64(1); p < 1e12; p *= 10 {
			ns = append(ns, p-1, p, p+1, -p+1, -p, -p-1)
		}
		for range 200 {
			ns = append(ns, rng.Int64N(2*max(hi-lo, 10)+1)+lo-max(hi-lo, 10)/2)
		}
		for _, n := range ns {
			if n < -maxMagnitude || n > maxMagnitude {
				continue
			}
			require.Equal(t, lo <= n && n <= hi, accepts(t, g, strconv.FormatInt(n, 10)), "%s, %d", schema, n)
		}
		for _, s := range []string{"-0", "00", "01", "+1", "1.0", "1e2", "-", ""} {
			require.False(t, accepts(t, g, s), "%s takes %q", schema, s)
		}
	}
}

// A number schema's bounds (integers, the lower one at least 0) take exactly the numbers within
// them among decimals written without an exponent, "3", "3.0", "3.25", "0.001"; nothing it
// takes is outside them.
func TestNumberBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var texts []string
	for i := range 30 {
		for _, f := range []string{"", ".0", ".00", ".5", ".01", ".10", ".999", ".0001"} {
			texts = append(texts, strconv.Itoa(i)+f)
		}
	}
	for _, n := range []int{99, 100, 101, 999, 1000, 1001} {
		texts = append(texts, strconv.Itoa(n), strconv.Itoa(n)+".0", strconv.Itoa(n)+".5")
	}
	for range 300 {
		texts = append(texts, strconv.FormatFloat(rng.Float64()*rng.Float64()*2000, 'f', rng.IntN(4), 64))
	}
	// Not in the grammar's form: refused whatever their value (never taken when out of bounds).
	odd := []string{"-0", "-0.0", "-1", "-0.5", "1e1", "1E0", "01", "1.", ".5", "5.5.5", "+1"}
	for _, lo := range []int{0, 1, 7, 10, 99} {
		for _, hi := range []int{-1, 0, 1, 7, 8, 12, 100, 1000} { // −1: no maximum
			for _, excl := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
				if hi >= 0 && hi < lo {
					continue
				}
				lk, hk := "minimum", "maximum"
				if excl[0] {
					lk = "exclusiveMinimum"
				}
				if excl[1] {
					hk = "exclusiveMaximum"
				}
				schema := fmt.Sprintf(`{"type": "number", %q: %d`, lk, lo)
				if hi >= 0 {
					schema += fmt.Sprintf(`, %q: %d`, hk, hi)
				}
				schema += "}"
				in := func(s string) bool {
					x, ok := new(big.Rat).SetString(s)
					if !ok {
						return false
					}
					c := x.Cmp(big.NewRat(int64(lo), 1))
					if c < 0 || c == 0 && excl[0] {
						return false
					}
					if hi < 0 {
						return true
					}
					c = x.Cmp(big.NewRat(int64(hi), 1))
					return c < 0 || c == 0 && !excl[1]
				}
				g, err := FromJSONSchema([]byte(schema))
				if hi >= 0 && (hi == lo && (excl[0] || excl[1])) {
					require.ErrorContains(t, err, "no number lies within the bounds", schema)
					continue
				}
				require.NoError(t, err, schema)
				for _, s := range texts {
					require.Equal(t, in(s), accepts(t, g, s), "%s, %s", schema, s)
				}
				for _, s := range odd {
					if accepts(t, g, s) {
						require.True(t, in(s), "%s takes %s", schema, s)
					}
				}
			}
		}
	}
}

// Runs of whole lengths merge: the GBNF stays short.
func TestIntegerRangeText(t *testing.T) {
	for _, tc := range []struct {
		lo, hi int64
		want   string
	}{
		{1, 9, `[1-9]`},
		{0, 99, `( "0" | [1-9] [0-9]{0,1} )`},
		{10, 99, `[1-9] [0-9]`},
		{1, 999, `[1-9] [0-9]{0,2}`},
		{100, 199, `"1" [0-9]{2}`},
		{123, 456, `( "1" ( "2" [3-9] | [3-9] [0-9] ) | [2-3] [0-9]{2} | "4" ( [0-4] [0-9] | "5" [0-6] ) )`},
		{-5, -1, `"-" [1-5]`},
		{7, 7, `"7"`},
	} {
		require.Equal(t, tc.want, intRange(tc.lo, tc.hi), "[%d, %d]", tc.lo, tc.hi)
	}
}

// Bounds are read exactly from their decimal text, not through float64: near 2^53 and at the
// 16-digit edge the integer taken is the one written.
func TestIntegerBoundsExact(t *testing.T) {
	for _, tc := range []struct {
		schema  string
		yes, no []string
	}{
		{`{"type": "integer", "minimum": 9007199254740993, "maximum": 9007199254740993}`, []string{"9007199254740993"}, []string{"9007199254740992", "9007199254740994"}},
		{`{"type": "integer", "maximum": 9999999999999999}`, []string{"9999999999999999", "-9999999999999999"}, []string{"10000000000000000"}},
		{`{"type": "integer", "minimum": -9999999999999999}`, []string{"-9999999999999999"}, []string{"-10000000000000000"}},
		{`{"type": "integer", "exclusiveMinimum": 2.5, "exclusiveMaximum": 4}`, []string{"3"}, []string{"2", "4"}},
		{`{"type": "integer", "minimum": -2.5, "maximum": -0.5}`, []string{"-2", "-1"}, []string{"-3", "0"}},
	} {
		g, err := FromJSONSchema([]byte(tc.schema))
		require.NoError(t, err, tc.schema)
		for _, s := range tc.yes {
			require.True(t, accepts(t, g, s), "%s should take %s", tc.schema, s)
		}
		for _, s := range tc.no {
			require.False(t, accepts(t, g, s), "%s should refuse %s", tc.schema, s)
		}
	}
	for _, schema := range []string{`{"type": "integer", "maximum": 1e16}`, `{"type": "integer", "minimum": -10000000000000000}`} {
		_, err := FromJSONSchema([]byte(schema))
		require.ErrorContains(t, err, "beyond 16 digits", schema)
	}
}
