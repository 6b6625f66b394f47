package cpu

import (
	"encoding/binary"

	"github.com/llamacu/llamacu/tensor"
)

// The dot-product kernels. Each has a pure-Go version (dot*Go) and, where the CPU allows, an
// assembly one installed by init in dot_amd64.go; the function variables below are what the ops
// call. All require len(b) ≥ the elements in a.

var (
	// dotF32 returns Σ a[k]·b[k] over len(a).
	dotF32 = dotF32Go
	// dotQ8 returns Σ dequant(w)[k]·x[k] for a Q8_0 row w (len(w)/34 blocks).
	dotQ8 = dotQ8Go
	// dotQ4 is dotQ8 for a Q4_0 row (len(w)/18 blocks).
	dotQ4 = dotQ4Go
	// dotF16 is dotQ8 for an F16 row (len(w)/2 elements).
	dotF16 = dotF16Go
	// cvtF16 widens len(dst) F16 values from src.
	cvtF16 = cvtF16Go
	// axpy: y += a·x over len(y), the product rounded before the add.
	axpy = axpyGo
	// axpyF16 is axpy for x in F16 (2 bytes an element).
	axpyF16 = axpyF16Go
	// deqQ8 and deqQ4 widen len(dst)/32 blocks from w.
	deqQ8 = deqQ8Go
	deqQ4 = deqQ4Go
	// nibDots: for each 32-byte chunk c of q (len(out)/2 chunks), out[2c] = Σ low nibbles ·
	// x[64c … 64c+31] and out[2c+1] = Σ high nibbles · x[64c+32 … 64c+63] (Q4_K's layout).
	nibDots = nibDotsGo
	// nib5Dots is nibDots over one Q5_K block (4 chunks of q, qh 32 bytes, 256 floats, 8 sums),
	// each nibble given bit 4 from qh (bit 2c of qh[l] for chunk c's low nibbles, 2c+1 high).
	nib5Dots = nib5DotsGo
	// q6Dots: for one half of a Q6_K block (ql 64 bytes, qh 32, x 128 floats), out[2g + l/16]
	// = Σ q·x over the run of 16 of sub-block 2g + l/16's half (q the 6-bit value minus 32).
	q6Dots = q6DotsGo
	// deqNibAsmOn makes deqNib use the assembly kernel (a flag, not a function variable, so that
	// deqQ4K's scale array stays on the stack).
	deqNibAsmOn = false
)

// deqNib widens len(s)/4 chunks of 32 bytes of nibbles to 64 floats each: (q & 15)·s[0] − s[1]
// for the low nibbles, (q >> 4)·s[2] − s[3] for the high, s advancing 4 a chunk.
func deqNib(dst []float32, q []byte, s []float32) {
	if deqNibAsmOn {
		deqNibAsm(dst, q, s)
		return
	}
	deqNibGo(dst, q, s)
}

func deqQ8Go(dst []float32, w []byte) { tensor.Decode(dst, tensor.Q8_0, w[:len(dst)/32*34]) }
func deqQ4Go(dst []float32, w []byte) { tensor.Decode(dst, tensor.Q4_0, w[:len(dst)/32*18]) }

// usePureGo installs the pure-Go kernels (tests compare them with the assembly ones).
func usePureGo() {
	dotF32, dotQ8, dotQ4, dotF16, cvtF16, deqQ8, deqQ4, axpy, axpyF16 = dotF32Go, dotQ8Go, dotQ4Go, dotF16Go, cvtF16Go, deqQ8Go, deqQ4Go, axpyGo, axpyF16Go
	nibDots, nib5Dots, q6Dots, deqNibAsmOn = nibDotsGo, nib5DotsGo, q6DotsGo, false
	gemm = &gemmGo
}

func cvtF16Go(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = f16tab[binary.LittleEndian.Uint16(src[2*i:])]
	}
}

func dotF32Go(a, b []float32) float32 {
	n := len(a)
	b = b[:n]
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
	k := 0
	for ; k+8 <= n; k += 8 {
		aa, bb := a[k:k+8:k+8], b[k:k+8:k+8]
		s0 += aa[0] * bb[0]
		s1 += aa[1] * bb[1]
		s2 += aa[2] * bb[2]
		s3 += aa[3] * bb[3]
		s4 += aa[4] * bb[4]
		s5 += aa[5] * bb[5]
		s6 += aa[6] * bb[6]
		s7 += aa[7] * bb[7]
	}
	for ; k < n; k++ {
		s0 += a[k] * b[k]
	}
	return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}

func dotQ8Go(w []byte, x []float32) float32 {
	var sum float32
	nb := len(w) / 34
	x = x[:nb*tensor.QK]
	for b := 0; b < nb; b++ {
		blk := w[b*34 : b*34+34 : b*34+34]
		q := blk[2:34:34]
		xx := x[b*32 : b*32+32 : b*32+32]
		var s0, s1, s2, s3 float32
		for j := 0; j < 32; j += 4 {
			s0 += float32(int8(q[j])) * xx[j]
			s1 += float32(int8(q[j+1])) * xx[j+1]
			s2 += float32(int8(q[j+2])) * xx[j+2]
			s3 += float32(int8(q[j+3])) * xx[j+3]
		}
		sum += tensor.F16ToF32(binary.LittleEndian.Uint16(blk)) * ((s0 + s1) + (s2 + s3))
	}
	return sum
}

func dotQ4Go(w []byte, x []float32) float32 {
	var sum float32
	nb := len(w) / 18
	x = x[:nb*tensor.QK]
	for b := 0; b < nb; b++ {
		blk := w[b*18 : b*18+18 : b*18+18]
		q := blk[2:18:18]
		lo := x[b*32 : b*32+16 : b*32+16]
		hi := x[b*32+16 : b*32+32 : b*32+32]
		var s0, s1, s2, s3 float32
		for j := 0; j < 16; j += 2 {
			q0, q1 := q[j], q[j+1]
			s0 += float32(int(q0&15)-8) * lo[j]
			s1 += float32(int(q0>>4)-8) * hi[j]
			s2 += float32(int(q1&15)-8) * lo[j+1]
			s3 += float32(int(q1>>4)-8) * hi[j+1]
		}
		sum += tensor.F16ToF32(binary.LittleEndian.Uint16(blk)) * ((s0 + s1) + (s2 + s3))
	}
	return sum
}

func dotF16Go(w []byte, x []float32) float32 {
	n := len(w) / 2
	x = x[:n]
	var s0, s1, s2, s3 float32
	k := 0
	for ; k+4 <= n; k += 4 {
		ww := w[2*k : 2*k+8 : 2*k+8]
		s0 += f16tab[binary.LittleEndian.Uint16(ww[0:])] * x[k]
		s1 += f16tab[binary.LittleEndian.Uint16(ww[2:])] * x[k+1]
		s2 += f16tab[binary.LittleEndian.Uint16(ww[4:])] * x[k+2]
		s3 += f16tab[binary.LittleEndian.Uint16(ww[6:])] * x[k+3]
	}
	for ; k < n; k++ {
		s0 += f16tab[binary.LittleEndian.Uint16(w[2*k:])] * x[k]
	}
	return (s0 + s1) + (s2 + s3)
}

// dotBF16 is dotQ8 for a BF16 row (widening is a shift, no table needed).
func dotBF16(w []byte, x []float32) float32 {
	n := len(w) / 2
	x = x[:n]
	var s0, s1, s2, s3 float32
	k := 0
	for ; k+4 <= n; k += 4 {
		ww := w[2*k : 2*k+8 : 2*k+8]
		s0 += tensor.BF16ToF32(binary.LittleEndian.Uint16(ww[0:])) * x[k]
		s1 += tensor.BF16ToF32(binary.LittleEndian.Uint16(ww[2:])) * x[k+1]
		s2 += tensor.BF16ToF32(binary.LittleEndian.Uint16(ww[4:])) * x[k+2]
		s3 += tensor.BF16ToF32(binary.LittleEndian.Uint16(ww[6:])) * x[k+3]
	}
	for ; k < n; k++ {
		s0 += tensor.BF16ToF32(binary.LittleEndian.Uint16(w[2*k:])) * x[k]
	}
	return (s0 + s1) + (s2 + s3)
}

// f16tab maps every binary16 bit pattern to its float32 value (256 KiB), for the pure-Go F16 paths.
var f16tab = func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = tensor.F16ToF32(uint16(i))
	}
	return &t
}()

// decodeInto widens a stored row of dtype d into dst (len(dst) elements).
func decodeInto(dst []float32, d tensor.DType, src []byte) {
	switch d {
	case tensor.F16:
		cvtF16(dst, src)
	case tensor.Q8_0:
		deqQ8(dst, src)
	case tensor.Q4_0:
		deqQ4(dst, src)
	case tensor.Q4_K:
		deqQ4K(dst, src)
	case tensor.Q5_K:
		deqQ5K(dst, src)
	case tensor.Q6_K:
		deqQ6K(dst, src)
	default:
		tensor.Decode(dst, d, src)
	}
}
