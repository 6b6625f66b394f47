//go:build !purego

package cpu

import (
	"golang.org/x/sys/cpu"
)

// The AVX2+FMA+F16C kernels of dot_amd64.s. They take raw pointers and handle whole vectors
// (or whole blocks); the wrappers below finish the tails in Go. Build with -tags purego for the
// pure-Go kernels alone.

//go:noescape
func dotF32AVX(a, b *float32, n int) float32

//go:noescape
func axpyAVX(y, x *float32, a float32, n int)

//go:noescape
func dotQ8AVX(w *byte, x *float32, nb int) float32

//go:noescape
func dotQ4AVX(w *byte, x *float32, nb int) float32

//go:noescape
func dotF16AVX(w *byte, x *float32, n int) float32

//go:noescape
func cvtF16AVX(dst *float32, src *byte, n int)

//go:noescape
func axpyF16AVX(y *float32, x *byte, a float32, n int)

//go:noescape
func deqQ8AVX(dst *float32, w *byte, nb int)

//go:noescape
func deqQ4AVX(dst *float32, w *byte, nb int)

//go:noescape
func nibDotsAVX(q *byte, x *float32, n int, out *float32)

//go:noescape
func q6DotsAVX(ql, qh *byte, x *float32, out *float32)

//go:noescape
func nib5DotsAVX(q, qh *byte, x *float32, out *float32)

//go:noescape
func deqNibAVX(dst *float32, q *byte, s *float32, n int)

//go:noescape
func deq6AVX(dst *float32, ql, qh *byte, s *float32)

//go:noescape
func deq5AVX(dst *float32, q, qh *byte, s *float32)

// hasAVX2 reports whether the assembly kernels are usable on this CPU.
var hasAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C

func init() {
	if hasAVX2 {
		useAsm()
	}
}

// useAsm installs the assembly kernels; usePureGo (in dot.go) undoes it, for tests.
func useAsm() {
	dotF32, dotQ8, dotQ4, dotF16, cvtF16, deqQ8, deqQ4, axpy, axpyF16 = dotF32Asm, dotQ8Asm, dotQ4Asm, dotF16Asm, cvtF16Asm, deqQ8Asm, deqQ4Asm, axpyAsm, axpyF16Asm
	nibDots, nib5Dots, q6Dots, deqNibAsmOn = nibDotsAsm, nib5DotsAsm, q6DotsAsm, true
	gemm = bestGemm()
}

func dotF32Asm(a, b []float32) float32 {
	n := len(a)
	b = b[:n]
	m := n &^ 7
	var s float32
	if m > 0 {
		s = dotF32AVX(&a[0], &b[0], m)
	}
	for k := m; k < n; k++ {
		s += a[k] * b[k]
	}
	return s
}

func dotQ8Asm(w []byte, x []float32) float32 {
	nb := len(w) / 34
	if nb == 0 {
		return 0
	}
	_ = x[nb*32-1]
	return dotQ8AVX(&w[0], &x[0], nb)
}

func dotQ4Asm(w []byte, x []float32) float32 {
	nb := len(w) / 18
	if nb == 0 {
		return 0
	}
	_ = x[nb*32-1]
	// The kernel reads 16 bytes from offset 2 of each block: within the block.
	return dotQ4AVX(&w[0], &x[0], nb)
}

func dotF16Asm(w []byte, x []float32) float32 {
	n := len(w) / 2
	x = x[:n]
	m := n &^ 7
	var s float32
	if m > 0 {
		s = dotF16AVX(&w[0], &x[0], m)
	}
	for k := m; k < n; k++ {
		s += f16tab[uint16(w[2*k])|uint16(w[2*k+1])<<8] * x[k]
	}
	return s
}

func cvtF16Asm(dst []float32, src []byte) {
	n := len(dst)
	src = src[:2*n]
	m := n &^ 7
	if m > 0 {
		cvtF16AVX(&dst[0], &src[0], m)
	}
	for k := m; k < n; k++ {
		dst[k] = f16tab[uint16(src[2*k])|uint16(src[2*k+1])<<8]
	}
}

func deqQ8Asm(dst []float32, w []byte) {
	nb := len(dst) / 32
	if nb == 0 {
		return
	}
	_ = w[nb*34-1]
	deqQ8AVX(&dst[0], &w[0], nb)
}

func deqQ4Asm(dst []float32, w []byte) {
	nb := len(dst) / 32
	if nb == 0 {
		return
	}
	_ = w[nb*18-1]
	deqQ4AVX(&dst[0], &w[0], nb)
}

func axpyAsm(y []float32, a float32, x []float32) {
	n := len(y)
	x = x[:n]
	m := n &^ 7
	if m > 0 {
		axpyAVX(&y[0], &x[0], a, m)
	}
	for k := m; k < n; k++ {
		y[k] += float32(a * x[k])
	}
}

func axpyF16Asm(y []float32, a float32, x []byte) {
	n := len(y)
	x = x[:2*n]
	m := n &^ 7
	if m > 0 {
		axpyF16AVX(&y[0], &x[0], a, m)
	}
	for k := m; k < n; k++ {
		y[k] += float32(a * f16tab[uint16(x[2*k])|uint16(x[2*k+1])<<8])
	}
}

func nibDotsAsm(q []byte, x, out []float32) {
	n := len(out) / 2
	if n == 0 {
		return
	}
	_, _ = q[32*n-1], x[64*n-1]
	nibDotsAVX(&q[0], &x[0], n, &out[0])
}

func q6DotsAsm(ql, qh []byte, x, out []float32) {
	_, _, _, _ = ql[63], qh[31], x[127], out[7]
	q6DotsAVX(&ql[0], &qh[0], &x[0], &out[0])
}

func nib5DotsAsm(q, qh []byte, x, out []float32) {
	_, _, _, _ = q[127], qh[31], x[255], out[7]
	nib5DotsAVX(&q[0], &qh[0], &x[0], &out[0])
}

func deqNibAsm(dst []float32, q []byte, s []float32) {
	n := len(s) / 4
	if n == 0 {
		return
	}
	_, _ = dst[64*n-1], q[32*n-1]
	deqNibAVX(&dst[0], &q[0], &s[0], n)
}

func deq5Asm(dst []float32, q, qh []byte, s []float32) {
	_, _, _, _ = dst[255], q[127], qh[31], s[15]
	deq5AVX(&dst[0], &q[0], &qh[0], &s[0])
}

func deq6Asm(dst []float32, ql, qh []byte, s []float32) {
	_, _, _, _ = dst[127], ql[63], qh[31], s[7]
	deq6AVX(&dst[0], &ql[0], &qh[0], &s[0])
}
