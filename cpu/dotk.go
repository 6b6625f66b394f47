package cpu

import (
	"encoding/binary"

	"github.com/llamacu/llamacu/tensor"
)

// The decode dot products of the k-quants Q4_K_M and Q5_K_M files hold, Q4_K, Q5_K and Q6_K,
// straight from the stored blocks (pure Go, with AVX2 inner loops where the CPU has them). Their slow twin is tensor.Decode of the row then dotF32, which the
// other read-only types use and which TestDotKQuant compares them with.
//
// Q4_K's min term needs Σx over each 32-element sub-block; it does not depend on the weight row,
// so the caller computes it once per x (subSums) and every row reuses it.

// q45Combine finishes a Q4_K/Q5_K block's dot from its 16-byte header (fp16 d, dmin, 6-bit
// scales): Σ over the 8 sub-blocks of (d·sc)·qx[i] − (dmin·m)·xs[i], qx[i] = Σ q·x and xs[i] = Σ x.
func q45Combine(hdr []byte, qx, xs []float32) float32 {
	d := f16tab[binary.LittleEndian.Uint16(hdr[0:])]
	dmin := f16tab[binary.LittleEndian.Uint16(hdr[2:])]
	var total float32
	for i := range 8 {
		sc, m := tensor.ScaleMinK4(i, hdr[4:16])
		total += d*float32(sc)*qx[i] - dmin*float32(m)*xs[i]
	}
	return total
}

// nibLo and nibHi map a byte to its low and high nibble as float32.
var nibLo, nibHi = func() (lo, hi [256]float32) {
	for i := range 256 {
		lo[i], hi[i] = float32(i&0xf), float32(i>>4)
	}
	return
}()

// subSums writes Σ x over each 32-element run of x into dst (len(x)/32 values).
func subSums(dst, x []float32) {
	for i := range dst {
		r := (*[32]float32)(x[32*i : 32*i+32])
		var s0, s1, s2, s3 float32
		for l := 0; l < 32; l += 4 {
			s0 += r[l]
			s1 += r[l+1]
			s2 += r[l+2]
			s3 += r[l+3]
		}
		dst[i] = (s0 + s1) + (s2 + s3)
	}
}

// dotQ4K returns Σ dequant(w)[k]·x[k] for a Q4_K row w (len(x)/256 blocks of 144 bytes), with
// xsum = subSums(x): per sub-block, (d·sc)·Σ q·x − (dmin·m)·Σ x, the Σ q·x from nibDots into
// qx (8 floats of scratch: a local array would escape through the nibDots variable).
func dotQ4K(w []byte, x, xsum, qx []float32) float32 {
	var total float32
	qx = qx[:8]
	for b := 0; b < len(x)/tensor.QKK; b++ {
		blk := (*[144]byte)(w[144*b : 144*b+144])
		xs := (*[8]float32)(xsum[8*b : 8*b+8])
		nibDots(blk[16:144], x[256*b:256*b+256], qx)
		total += q45Combine(blk[:16], qx, xs[:])
	}
	return total
}

func nibDotsGo(q []byte, x, out []float32) {
	for c := range len(out) / 2 {
		qc := (*[32]byte)(q[32*c : 32*c+32])
		xl := (*[32]float32)(x[64*c : 64*c+32])
		xh := (*[32]float32)(x[64*c+32 : 64*c+64])
		var l0, l1, l2, l3, h0, h1, h2, h3 float32
		for l := 0; l < 32; l += 4 {
			q0, q1, q2, q3 := qc[l], qc[l+1], qc[l+2], qc[l+3]
			l0 += nibLo[q0] * xl[l]
			l1 += nibLo[q1] * xl[l+1]
			l2 += nibLo[q2] * xl[l+2]
			l3 += nibLo[q3] * xl[l+3]
			h0 += nibHi[q0] * xh[l]
			h1 += nibHi[q1] * xh[l+1]
			h2 += nibHi[q2] * xh[l+2]
			h3 += nibHi[q3] * xh[l+3]
		}
		out[2*c], out[2*c+1] = (l0+l1)+(l2+l3), (h0+h1)+(h2+h3)
	}
}

// dotQ5K is dotQ4K for a Q5_K row (176-byte blocks): Σ q·x from nib5Dots, q the 5-bit value.
func dotQ5K(w []byte, x, xsum, qx []float32) float32 {
	var total float32
	qx = qx[:8]
	for b := 0; b < len(x)/tensor.QKK; b++ {
		blk := (*[176]byte)(w[176*b : 176*b+176])
		xs := (*[8]float32)(xsum[8*b : 8*b+8])
		nib5Dots(blk[48:176], blk[16:48], x[256*b:256*b+256], qx)
		total += q45Combine(blk[:16], qx, xs[:])
	}
	return total
}

func nib5DotsGo(q, qh []byte, x, out []float32) {
	h := (*[32]byte)(qh[:32])
	for c := range 4 {
		qc := (*[32]byte)(q[32*c : 32*c+32])
		xl := (*[32]float32)(x[64*c : 64*c+32])
		xh := (*[32]float32)(x[64*c+32 : 64*c+64])
		var lo, hi float32
		for l := range 32 {
			lo += float32(qc[l]&0xf|h[l]>>(2*c)&1<<4) * xl[l]
			hi += float32(qc[l]>>4|h[l]>>(2*c+1)&1<<4) * xh[l]
		}
		out[2*c], out[2*c+1] = lo, hi
	}
}

// dotQ6K is dotQ4K for a Q6_K row (210-byte blocks): per 16-element sub-block, (d·sc)·Σ q·x,
// the Σ q·x from q6Dots into qx (8 floats of scratch).
func dotQ6K(w []byte, x, qx []float32) float32 {
	var total float32
	qx = qx[:8]
	for b := 0; b < len(x)/tensor.QKK; b++ {
		blk := (*[210]byte)(w[210*b : 210*b+210])
		d := f16tab[binary.LittleEndian.Uint16(blk[208:])]
		for n := range 2 {
			q6Dots(blk[64*n:64*n+64], blk[128+32*n:160+32*n], x[256*b+128*n:256*b+128*n+128], qx)
			sc := (*[8]byte)(blk[192+8*n : 200+8*n])
			var s float32
			for i := range 8 { // qx[i] belongs to sub-block 8n + i
				s += float32(int8(sc[i])) * qx[i]
			}
			total += d * s
		}
	}
	return total
}

func q6DotsGo(ql, qh []byte, x, out []float32) {
	xb := (*[128]float32)(x[:128])
	for is := range 2 {
		var a0, a1, a2, a3 float32
		for l := 16 * is; l < 16*is+16; l++ {
			lo, hi, h := ql[l], ql[l+32], qh[l]
			a0 += float32(int(lo&0xf|h&3<<4)-32) * xb[l]
			a1 += float32(int(hi&0xf|h>>2&3<<4)-32) * xb[l+32]
			a2 += float32(int(lo>>4|h>>4&3<<4)-32) * xb[l+64]
			a3 += float32(int(hi>>4|h>>6<<4)-32) * xb[l+96]
		}
		out[is], out[2+is], out[4+is], out[6+is] = a0, a1, a2, a3
	}
}

// scaleMinK fills s with a Q4_K/Q5_K block's 8 (scale, min) pairs from its 16-byte header
// (fp16 d and dmin, then 6-bit scales and mins): s[2i] = d·sc_i, s[2i+1] = dmin·m_i.
func scaleMinK(s *[16]float32, hdr []byte) {
	d := f16tab[binary.LittleEndian.Uint16(hdr[0:])]
	dmin := f16tab[binary.LittleEndian.Uint16(hdr[2:])]
	for i := range 8 {
		c, m := tensor.ScaleMinK4(i, hdr[4:16])
		s[2*i], s[2*i+1] = d*float32(c), dmin*float32(m)
	}
}

// deqQ4K widens len(dst)/256 Q4_K blocks exactly as tensor.Decode does (ggml's values), the
// nibbles through deqNib: the prefill GEMM's weight tiles.
func deqQ4K(dst []float32, w []byte) {
	var s [16]float32
	for b := 0; b < len(dst)/tensor.QKK; b++ {
		blk := (*[144]byte)(w[144*b : 144*b+144])
		scaleMinK(&s, blk[:16])
		deqNib(dst[256*b:256*b+256], blk[16:144], s[:])
	}
}

// deqQ5K is deqQ4K for Q5_K blocks (176 bytes): the nibbles given their fifth bit from qh.
func deqQ5K(dst []float32, w []byte) {
	var s [16]float32
	for b := 0; b < len(dst)/tensor.QKK; b++ {
		blk := (*[176]byte)(w[176*b : 176*b+176])
		scaleMinK(&s, blk[:16])
		if deqNibAsmOn {
			deq5Asm(dst[256*b:256*b+256], blk[48:176], blk[16:48], s[:])
		} else {
			deq5Go(dst[256*b:256*b+256], blk[48:176], blk[16:48], s[:])
		}
	}
}

func deq5Go(dst []float32, q, qh []byte, s []float32) {
	h := (*[32]byte)(qh[:32])
	for c := range 4 {
		qc := (*[32]byte)(q[32*c : 32*c+32])
		lo, hi := (*[32]float32)(dst[64*c:64*c+32]), (*[32]float32)(dst[64*c+32:64*c+64])
		d1, m1, d2, m2 := s[4*c], s[4*c+1], s[4*c+2], s[4*c+3]
		for l := range 32 {
			lo[l] = float32(d1*float32(qc[l]&0xf|h[l]>>(2*c)&1<<4)) - m1
			hi[l] = float32(d2*float32(qc[l]>>4|h[l]>>(2*c+1)&1<<4)) - m2
		}
	}
}

func deqNibGo(dst []float32, q []byte, s []float32) {
	for c := range len(s) / 4 {
		qc := (*[32]byte)(q[32*c : 32*c+32])
		lo, hi := (*[32]float32)(dst[64*c:64*c+32]), (*[32]float32)(dst[64*c+32:64*c+64])
		d1, m1, d2, m2 := s[4*c], s[4*c+1], s[4*c+2], s[4*c+3]
		for l := range 32 {
			lo[l] = float32(d1*nibLo[qc[l]]) - m1
			hi[l] = float32(d2*nibHi[qc[l]]) - m2
		}
	}
}

// deqQ6K widens len(dst)/256 Q6_K blocks exactly as tensor.Decode does: (d·sc)·q, the 8 scales
// of each half computed here, the 6-bit values widened by deq6 (assembly where the CPU has it).
func deqQ6K(dst []float32, w []byte) {
	var s [8]float32
	for b := 0; b < len(dst)/tensor.QKK; b++ {
		blk := (*[210]byte)(w[210*b : 210*b+210])
		d := f16tab[binary.LittleEndian.Uint16(blk[208:])]
		for n := range 2 {
			sc := (*[8]byte)(blk[192+8*n : 200+8*n])
			for i := range 8 { // s[2g + is] scales elements 32g + 16·is … +15 of this half
				s[i] = d * float32(int8(sc[i]))
			}
			o := dst[256*b+128*n : 256*b+128*n+128]
			if deqNibAsmOn {
				deq6Asm(o, blk[64*n:64*n+64], blk[128+32*n:160+32*n], s[:])
			} else {
				deq6Go(o, blk[64*n:64*n+64], blk[128+32*n:160+32*n], s[:])
			}
		}
	}
}

func deq6Go(dst []float32, ql, qh []byte, s []float32) {
	for l := range 32 {
		lo, hi, h := ql[l], ql[l+32], qh[l]
		is := l / 16
		dst[l] = s[is] * float32(int(lo&0xf|h&3<<4)-32)
		dst[l+32] = s[2+is] * float32(int(hi&0xf|h>>2&3<<4)-32)
		dst[l+64] = s[4+is] * float32(int(lo>>4|h>>4&3<<4)-32)
		dst[l+96] = s[6+is] * float32(int(hi>>4|h>>6<<4)-32)
	}
}
