package tensor

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// IEEE-754 binary16 reference values.
func TestF16Known(t *testing.T) {
	for _, tc := range []struct {
		h uint16
		f float32
	}{
		{0x0000, 0}, {0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0400, 6.103515625e-05},
		{0x0001, 5.960464477539063e-08}, {0x3555, 0.333251953125}, {0x7c00, float32(math.Inf(1))},
	} {
		if got := F16ToF32(tc.h); got != tc.f {
			t.Errorf("F16ToF32(%#04x) = %g, want %g", tc.h, got, tc.f)
		}
		if got := F32ToF16(tc.f); got != tc.h {
			t.Errorf("F32ToF16(%g) = %#04x, want %#04x", tc.f, got, tc.h)
		}
	}
	if F32ToF16(65520) != 0x7c00 { // rounds to infinity
		t.Error("65520 should overflow to +inf")
	}
	if F32ToF16(1+1.0/2048) != 0x3c00 { // halfway between 1 and 1+2⁻¹⁰ rounds to even (1)
		t.Error("round half to even")
	}
}

// Every binary16 value survives a round trip through float32.
func TestF16RoundTripExhaustive(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := F16ToF32(uint16(h))
		if f != f { // NaN: stays NaN
			if g := F16ToF32(F32ToF16(f)); g == g {
				t.Fatalf("%#04x: NaN lost", h)
			}
			continue
		}
		if back := F32ToF16(f); back != uint16(h) {
			t.Fatalf("%#04x → %g → %#04x", h, f, back)
		}
	}
}

func TestBF16(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := BF16ToF32(uint16(h))
		if f == f && F32ToBF16(f) != uint16(h) {
			t.Fatalf("%#04x round trip", h)
		}
	}
	if F32ToBF16(1.00390625) != 0x3f80 { // 1 + 2⁻⁸ is halfway: rounds to even (1.0)
		t.Error("bf16 round half to even")
	}
	if F32ToBF16(1.01171875) != 0x3f82 { // 1 + 3·2⁻⁸ is halfway: rounds up to even
		t.Error("bf16 round half to even (up)")
	}
}

func TestQuantRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, 4*QK)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	for _, tc := range []struct {
		d      DType
		relErr float64 // of the block's absolute maximum
	}{{Q8_0, 1.0 / 127}, {Q4_0, 1.0 / 8}, {F16, 1e-3}, {BF16, 1e-2}, {F32, 0}} {
		t.Run(tc.d.String(), func(t *testing.T) {
			b := Encode(tc.d, x)
			if n, _ := tc.d.Bytes(int64(len(x))); int64(len(b)) != n {
				t.Fatalf("encoded %d bytes, want %d", len(b), n)
			}
			y := make([]float32, len(x))
			Decode(y, tc.d, b)
			for blk := 0; blk < len(x)/QK; blk++ {
				amax := 0.0
				for _, v := range x[blk*QK : (blk+1)*QK] {
					amax = math.Max(amax, math.Abs(float64(v)))
				}
				for i := blk * QK; i < (blk+1)*QK; i++ {
					if e := math.Abs(float64(x[i] - y[i])); e > tc.relErr*amax*1.01 {
						t.Fatalf("element %d: %g → %g (error %g > %g)", i, x[i], y[i], e, tc.relErr*amax)
					}
				}
			}
		})
	}
}

// ggml's Q4_0 layout: low nibbles are elements 0..15, high nibbles 16..31, value (q−8)·d.
func TestQ4_0Layout(t *testing.T) {
	blk := make([]byte, 18)
	blk[0], blk[1] = 0x00, 0x3c // d = 1.0
	for j := 0; j < 16; j++ {
		blk[2+j] = byte(j) | byte(15-j)<<4
	}
	out := make([]float32, QK)
	Decode(out, Q4_0, blk)
	for j := 0; j < 16; j++ {
		if out[j] != float32(j-8) || out[j+16] != float32(7-j) {
			t.Fatalf("j=%d: %g %g", j, out[j], out[j+16])
		}
	}
}

func TestValidate(t *testing.T) {
	ok := &Tensor{Name: "w", DType: Q8_0, Shape: []int{2, 64}, Data: make([]byte, 2*2*34)}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []*Tensor{
		{Name: "short", DType: F32, Shape: []int{2, 3}, Data: make([]byte, 20)},
		{Name: "zero", DType: F32, Shape: []int{0, 3}},
		{Name: "partial block", DType: Q4_0, Shape: []int{2, 48}, Data: make([]byte, 3*18)},
		{Name: "dtype", DType: DType(42), Shape: []int{1}, Data: make([]byte, 4)},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%s: no error", bad.Name)
		}
	}
	if _, err := ParseDType("iq4_xs"); !errors.Is(err, ErrUnknownDType) {
		t.Errorf("ParseDType: %v", err)
	}
}
