package grammar

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// Numeric bounds of JSON Schema (minimum, maximum, exclusiveMinimum, exclusiveMaximum) as
// grammars over decimal digits: an integer range is cut into runs of digits of one length, and
// each run into a prefix shared by both ends then digit classes (the construction regex
// generators for numeric ranges use).

// maxDigits bounds integers as the builtin integer rule does: at most 16 digits.
const maxDigits = 16

// maxMagnitude is the largest integer of maxDigits digits.
const maxMagnitude = 9_999_999_999_999_999

// intRange is a GBNF expression for the JSON integers n with lo ≤ n ≤ hi (canonical: no
// leading zeros, no "-0"). lo ≤ hi, both within ±maxMagnitude.
func intRange(lo, hi int64) string {
	var alts []string
	if lo < 0 { // −n for n in [max(1, −hi), −lo]
		alts = append(alts, `"-" `+posRange(max(1, -hi), -lo))
	}
	if lo <= 0 && 0 <= hi {
		alts = append(alts, `"0"`)
	}
	if hi > 0 {
		alts = append(alts, posRange(max(1, lo), hi))
	}
	return group(alts)
}

// posRange is the integers in [a, b], 1 ≤ a ≤ b: one run per number of digits, the runs
// that hold every number of their length merged into one ([1-9] [0-9]{m,n}).
func posRange(a, b int64) string {
	var alts []string
	fullFrom := 0 // digits of the first whole run pending, 0 when none
	flush := func(to int) {
		if fullFrom > 0 {
			rest := "[0-9]{" + strconv.Itoa(fullFrom-1) + "," + strconv.Itoa(to-1) + "}"
			switch {
			case to == 1:
				rest = ""
			case fullFrom == to:
				rest = anyDigits(to - 1)
			case fullFrom == 1:
				rest = "[0-9]{0," + strconv.Itoa(to-1) + "}"
			}
			alts = append(alts, spaced("[1-9]", rest))
			fullFrom = 0
		}
	}
	last := len(strconv.FormatInt(b, 10))
	for digits := len(strconv.FormatInt(a, 10)); digits <= last; digits++ {
		first, top := int64(math.Pow10(digits-1)), int64(math.Pow10(digits))-1
		if a <= first && top <= b {
			if fullFrom == 0 {
				fullFrom = digits
			}
			continue
		}
		flush(digits - 1)
		alts = append(alts, sameLength(strconv.FormatInt(max(a, first), 10), strconv.FormatInt(min(b, top), 10)))
	}
	flush(last)
	return group(alts)
}

// sameLength is the digit strings from lo to hi, which have the same length: the common prefix,
// then lo's digit followed by what reaches up from lo's rest, the digits between followed by
// anything, and hi's digit followed by what reaches up to hi's rest.
func sameLength(lo, hi string) string {
	var b strings.Builder
	i := 0
	for i < len(lo) && lo[i] == hi[i] {
		i++
	}
	if i > 0 {
		b.WriteString(Quote(lo[:i]))
	}
	if i == len(lo) {
		return b.String()
	}
	if n := len(lo) - i; lo[i:] == strings.Repeat("0", n) && hi[i:] == strings.Repeat("9", n) {
		return spaced(b.String(), anyDigits(n)) // every digit string of the rest's length
	}
	rest := len(lo) - i - 1
	loRest, hiRest := lo[i+1:], hi[i+1:]
	dLo, dHi := lo[i], hi[i]
	// Runs that start at the rest's least (0…0) or end at its most (9…9) join the middle.
	if loRest == strings.Repeat("0", rest) {
		dLo--
	}
	if hiRest == strings.Repeat("9", rest) {
		dHi++
	}
	var alts []string
	if dLo == lo[i] {
		alts = append(alts, spaced(Quote(lo[i:i+1]), sameLength(loRest, strings.Repeat("9", rest))))
	}
	if dLo+1 <= dHi-1 {
		alts = append(alts, spaced(digitClass(dLo+1, dHi-1), anyDigits(rest)))
	}
	if dHi == hi[i] {
		alts = append(alts, spaced(Quote(hi[i:i+1]), sameLength(strings.Repeat("0", rest), hiRest)))
	}
	if i > 0 {
		b.WriteByte(' ')
	}
	b.WriteString(group(alts))
	return b.String()
}

func digitClass(lo, hi byte) string {
	if lo == hi {
		return Quote(string(lo))
	}
	return fmt.Sprintf("[%c-%c]", lo, hi)
}

func anyDigits(n int) string {
	switch n {
	case 0:
		return ""
	case 1:
		return "[0-9]"
	}
	return fmt.Sprintf("[0-9]{%d}", n)
}

// numBounds are a schema's numeric bounds, exact (a JSON number's decimal text as a rational):
// the least and greatest value (nil when absent) and whether each is excluded.
type numBounds struct {
	lo, hi         *big.Rat
	exclLo, exclHi bool
}

// maxBoundRat is ±maxMagnitude's bound on what a bound may be.
var maxBoundRat = new(big.Rat).SetInt64(maxMagnitude)

// bounds reads minimum, maximum, exclusiveMinimum and exclusiveMaximum (a number, or draft 4's
// boolean beside minimum/maximum).
func (c *compiler) bounds(n *node, ptr string) (numBounds, error) {
	var b numBounds
	num := func(key string) (*big.Rat, error) {
		v := n.get(key)
		if v == nil {
			return nil, nil
		}
		if v.kind != '0' {
			return nil, c.errorf(ptr, "%s must be a number, not %s", key, v)
		}
		r, ok := new(big.Rat).SetString(v.text)
		if !ok || new(big.Rat).Abs(r).Cmp(maxBoundRat) > 0 {
			return nil, c.errorf(ptr, "%s %s is beyond %d digits", key, v.text, maxDigits)
		}
		return r, nil
	}
	var err error
	if b.lo, err = num("minimum"); err != nil {
		return b, err
	}
	if b.hi, err = num("maximum"); err != nil {
		return b, err
	}
	for _, e := range []struct {
		key, plain string
		val        **big.Rat
		excl       *bool
		sign       int // the tighter of two bounds x, y: x·sign ≥ y·sign
	}{
		{"exclusiveMinimum", "minimum", &b.lo, &b.exclLo, 1},
		{"exclusiveMaximum", "maximum", &b.hi, &b.exclHi, -1},
	} {
		v := n.get(e.key)
		switch {
		case v == nil:
		case v.kind == 't': // draft 4: a flag on minimum or maximum
			if v.yes && *e.val == nil {
				return b, c.errorf(ptr, "%s true needs %s", e.key, e.plain)
			}
			*e.excl = *e.excl || v.yes
		default:
			x, err := num(e.key)
			if err != nil {
				return b, err
			}
			if *e.val == nil || x.Cmp(*e.val)*e.sign >= 0 { // at the same value, excluding is tighter
				*e.val, *e.excl = x, true
			}
		}
	}
	return b, nil
}

// integerRange is the GBNF of the JSON integers within b (absent bounds: the 16-digit builtin's).
func (c *compiler) integerRange(b numBounds, ptr string) (string, error) {
	lo, hi := int64(-maxMagnitude), int64(maxMagnitude)
	if b.lo != nil { // the least integer ≥ lo (> lo when excluded)
		q := new(big.Int).Div(b.lo.Num(), b.lo.Denom()) // floor, the denominator being positive
		if !b.lo.IsInt() || b.exclLo {
			q.Add(q, big.NewInt(1))
		}
		lo = q.Int64()
	}
	if b.hi != nil { // the greatest integer ≤ hi (< hi when excluded)
		q := new(big.Int).Div(b.hi.Num(), b.hi.Denom())
		if b.hi.IsInt() && b.exclHi {
			q.Sub(q, big.NewInt(1))
		}
		hi = q.Int64()
	}
	lo, hi = max(lo, -maxMagnitude), min(hi, maxMagnitude)
	if lo > hi {
		return "", c.errorf(ptr, "no integer lies within the bounds")
	}
	return intRange(lo, hi), nil
}

// numberRange is the GBNF of JSON numbers within b, written without an exponent, for the bounds
// it supports: integers, the lower one at least 0. A value's integer part I and fraction F
// (x = I.F) then decide: x ≥ L is I ≥ L; x > L is I > L, or I = L and F not all zeros; x ≤ H
// is I < H, or I = H and F all zeros; x < H is I < H.
func (c *compiler) numberRange(b numBounds, ptr string) (string, error) {
	if b.lo == nil || b.lo.Sign() < 0 || !b.lo.IsInt() || b.hi != nil && !b.hi.IsInt() {
		return "", c.errorf(ptr, "bounds on a number are supported when they are integers and the lower one is at least 0 (on an integer, any bounds are)")
	}
	L, H := b.lo.Num().Int64(), int64(maxMagnitude)
	if b.hi != nil {
		H = b.hi.Num().Int64()
	}
	const anyFrac, zeroFrac, nonzeroFrac = `( "." [0-9]+ )?`, `( "." "0"+ )?`, `"." [0-9]* [1-9] [0-9]*`
	var alts []string
	loAny, hiAny := L, H-1 // integer parts any fraction may follow
	if b.exclLo {
		loAny = L + 1
		if b.hi == nil || L < H { // L.F with F ≠ 0 is above L and below H
			alts = append(alts, spaced(intRange(L, L), nonzeroFrac))
		}
	}
	if b.hi == nil {
		hiAny = H
	}
	if loAny <= hiAny {
		alts = append(alts, spaced(intRange(loAny, hiAny), anyFrac))
	}
	if b.hi != nil && !b.exclHi && (H > L || H == L && !b.exclLo) { // H itself, as H or H.0…
		alts = append(alts, spaced(intRange(H, H), zeroFrac))
	}
	if len(alts) == 0 {
		return "", c.errorf(ptr, "no number lies within the bounds")
	}
	return group(alts), nil
}
