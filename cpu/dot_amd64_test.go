//go:build !purego

package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/llamacu/llamacu/tensor"
)

// TestDotKernels checks the assembly kernels (when this CPU has them) against the pure-Go ones
// on awkward lengths, relative to Σ|a·b|; axpy, which has no FMA, bit for bit.
func TestDotKernels(t *testing.T) {
	if !hasAVX2 {
		t.Skip("no AVX2/FMA/F16C on this CPU (or -tags purego): only the pure-Go kernels exist")
	}
	r := rand.New(rand.NewPCG(1, 2))
	const tol = 1e-5
	for n := 1; n <= 1100; n += 1 + n/16 {
		a, b := randVec(r, n, 1), randVec(r, n, 1)
		mag := func(x []float32) float64 {
			s := 0.0
			for k := range a {
				s += math.Abs(float64(a[k]) * float64(x[k]))
			}
			return s
		}
		if g, w := dotF32Asm(a, b), dotF32Go(a, b); !closeRel(g, w, mag(b), tol) {
			t.Errorf("dotF32 n=%d: asm %g, go %g", n, g, w)
		}
		y0 := randVec(r, n, 1)
		y1 := append([]float32(nil), y0...)
		axpyAsm(y0, 0.37, a)
		axpyGo(y1, 0.37, a)
		for k := range y0 {
			if y0[k] != y1[k] {
				t.Fatalf("axpy n=%d element %d: asm %g, go %g (must be bit-identical)", n, k, y0[k], y1[k])
			}
		}
		f16 := tensor.Encode(tensor.F16, b)
		wide := make([]float32, n)
		tensor.Decode(wide, tensor.F16, f16)
		y0 = randVec(r, n, 1)
		y1 = append(y1[:0], y0...)
		axpyF16Asm(y0, -1.7, f16)
		axpyF16Go(y1, -1.7, f16)
		for k := range y0 {
			if y0[k] != y1[k] {
				t.Fatalf("axpyF16 n=%d element %d: asm %g, go %g (must be bit-identical)", n, k, y0[k], y1[k])
			}
		}
		if g, w := dotF16Asm(f16, a), dotF16Go(f16, a); !closeRel(g, w, mag(wide), tol) {
			t.Errorf("dotF16 n=%d: asm %g, go %g", n, g, w)
		}
		got := make([]float32, n)
		cvtF16Asm(got, f16)
		for k := range got {
			if got[k] != wide[k] {
				t.Fatalf("cvtF16 n=%d element %d: %g, want %g", n, k, got[k], wide[k])
			}
		}
		if nb := n / 32; nb > 0 {
			for _, dt := range []tensor.DType{tensor.Q8_0, tensor.Q4_0} {
				q := tensor.Encode(dt, b[:nb*32])
				deq := make([]float32, nb*32)
				tensor.Decode(deq, dt, q)
				m := 0.0
				for k := range deq {
					m += math.Abs(float64(deq[k]) * float64(a[k]))
				}
				g, w := dotQ8Asm(q, a), dotQ8Go(q, a)
				if dt == tensor.Q4_0 {
					g, w = dotQ4Asm(q, a), dotQ4Go(q, a)
				}
				if !closeRel(g, w, m, tol) {
					t.Errorf("dot %v n=%d: asm %g, go %g", dt, nb*32, g, w)
				}
				dq := make([]float32, nb*32)
				if dt == tensor.Q8_0 {
					deqQ8Asm(dq, q)
				} else {
					deqQ4Asm(dq, q)
				}
				for k := range dq {
					if dq[k] != deq[k] {
						t.Fatalf("dequant %v element %d: asm %g, want %g", dt, k, dq[k], deq[k])
					}
				}
			}
		}
	}
}
