package tensor

import (
	"encoding/binary"
	"math"
)

// The ggml block types beyond Q8_0 and Q4_0 that GGUF files of LLaMA 2 come in: the legacy
// Q4_1, Q5_0 and Q5_1 (blocks of 32) and the k-quants Q2_K … Q6_K (super-blocks of QKK = 256
// elements in 8 or 16 sub-blocks, whose scales are themselves quantised). llamacu decodes them
// all (Decode; backends dequantise rows or whole matrices from them); layouts are ggml's
// (ggml-common.h), and every decoder equals ggml's dequantize_row_<type> bit for bit
// (testdata/ggml, made by ggml itself through bench/reference/ggml_quants.py).
//
// Of these it encodes only Q4_K, Q5_K and Q6_K, the types of Q4_K_M and Q5_K_M files, which the
// CUDA backend keeps quantised (so that tests and synthetic benchmarks can make them). The encoders are
// simple — min/max scales per sub-block, not ggml's search for the best ones (make_qkx2_quants)
// — so their error is somewhat above llama-quantize's; files for real use come from llama.cpp.
// The other types are ReadOnly.
//
// The arithmetic follows ggml's order of operations, and every product is converted to float32
// before a subtraction or addition so that no compiler fuses it into an FMA (ggml's portable
// dequantisers are compiled without FMA): that is what makes the results bit-identical.

// QKK is the number of elements in one k-quant super-block.
const QKK = 256

// blockBytesGGML holds the block sizes of the types in this file.
var blockBytesGGML = map[DType]int{
	Q4_1: 4 + QK/2,                   // fp16 d, fp16 m, 16 bytes of nibbles
	Q5_0: 2 + 4 + QK/2,               // fp16 d, 32 high bits, 16 bytes of nibbles
	Q5_1: 4 + 4 + QK/2,               // fp16 d, fp16 m, 32 high bits, nibbles
	Q2_K: QKK/16 + QKK/4 + 4,         // 16 scale|min bytes, 2-bit quants, fp16 d, dmin
	Q3_K: QKK/8 + QKK/4 + 12 + 2,     // high-bit mask, 2-bit quants, 12 bytes of 6-bit scales, fp16 d
	Q4_K: 4 + 12 + QKK/2,             // fp16 d, dmin, 12 bytes of 6-bit scales and mins, nibbles
	Q5_K: 4 + 12 + QKK/8 + QKK/2,     // as Q4_K plus a high bit per element
	Q6_K: QKK/2 + QKK/4 + QKK/16 + 2, // low nibbles, high 2 bits, 16 int8 scales, fp16 d
}

func f16At(b []byte, off int) float32 { return F16ToF32(binary.LittleEndian.Uint16(b[off:])) }

// decodeGGML decodes the types of this file; Decode has checked the sizes.
func decodeGGML(dst []float32, d DType, src []byte) {
	bs := d.BlockSize()
	bb := d.BlockBytes()
	for b := 0; b < len(dst)/bs; b++ {
		y, blk := dst[b*bs:(b+1)*bs], src[b*bb:(b+1)*bb]
		switch d {
		case Q4_1:
			decodeQ4_1(y, blk)
		case Q5_0:
			decodeQ5_0(y, blk)
		case Q5_1:
			decodeQ5_1(y, blk)
		case Q2_K:
			decodeQ2_K(y, blk)
		case Q3_K:
			decodeQ3_K(y, blk)
		case Q4_K:
			decodeQ4_K(y, blk)
		case Q5_K:
			decodeQ5_K(y, blk)
		case Q6_K:
			decodeQ6_K(y, blk)
		}
	}
}

// Q4_1: x = d·q + m, q in [0, 16); byte j holds elements j (low nibble) and j+16.
func decodeQ4_1(y []float32, blk []byte) {
	d, m := f16At(blk, 0), f16At(blk, 2)
	qs := blk[4:]
	for j := 0; j < QK/2; j++ {
		y[j] = float32(float32(qs[j]&0xf)*d) + m
		y[j+QK/2] = float32(float32(qs[j]>>4)*d) + m
	}
}

// Q5_0: x = d·(q − 16), q in [0, 32): the nibbles of Q4_0 plus bit j of qh as bit 4 of element j.
func decodeQ5_0(y []float32, blk []byte) {
	d := f16At(blk, 0)
	qh := binary.LittleEndian.Uint32(blk[2:])
	qs := blk[6:]
	for j := 0; j < QK/2; j++ {
		h0 := byte(qh>>j<<4) & 0x10
		h1 := byte(qh>>(j+12)) & 0x10
		y[j] = float32(int32(qs[j]&0xf|h0)-16) * d
		y[j+QK/2] = float32(int32(qs[j]>>4|h1)-16) * d
	}
}

// largestMagnitude is the value of x farthest from 0, with its sign (the first of equals): ggml's
// symmetric quantisers map it to the wide end of their range.
func largestMagnitude(x []float32) float32 {
	var amax, m float32
	for _, v := range x {
		if a := float32(math.Abs(float64(v))); a > amax {
			amax, m = a, v
		}
	}
	return m
}

// encodeQ5_0 is ggml's reference Q5_0 quantiser: d = m/−16 for the value m of largest
// magnitude, q = ⌊x/d + 16.5⌋ capped at 31 (the cast truncates; x/d + 16.5 ≥ 0.5 here).
func encodeQ5_0(blk []byte, x []float32) {
	d := largestMagnitude(x) / -16
	id := float32(0)
	if d != 0 {
		id = 1 / d
	}
	binary.LittleEndian.PutUint16(blk, F32ToF16(d))
	packQ5(blk[2:6], blk[6:22], x, func(v float32) int { return min(31, int(v*id+16.5)) })
}

// encodeQ5_1 is ggml's reference Q5_1 quantiser: d = (max − min)/31, m = min,
// q = ⌊(x − min)/d + 0.5⌋.
func encodeQ5_1(blk []byte, x []float32) {
	lo, hi := x[0], x[0]
	for _, v := range x {
		lo, hi = min(lo, v), max(hi, v)
	}
	d := (hi - lo) / 31
	id := float32(0)
	if d != 0 {
		id = 1 / d
	}
	binary.LittleEndian.PutUint16(blk, F32ToF16(d))
	binary.LittleEndian.PutUint16(blk[2:], F32ToF16(lo))
	packQ5(blk[4:8], blk[8:24], x, func(v float32) int { return int((v-lo)*id + 0.5) })
}

// packQ5 writes 32 five-bit values: the low nibbles of elements j and j+16 in byte j of qs,
// the fifth bits as bits j and j+16 of qh (decodeQ5_0's layout).
func packQ5(qhb, qs []byte, x []float32, q func(float32) int) {
	var qh uint32
	for j := 0; j < QK/2; j++ {
		q0, q1 := q(x[j]), q(x[j+QK/2])
		qs[j] = byte(q0&0xf) | byte(q1&0xf)<<4
		qh |= uint32(q0>>4&1)<<j | uint32(q1>>4&1)<<(j+QK/2)
	}
	binary.LittleEndian.PutUint32(qhb, qh)
}

// Q5_1: x = d·q + m, q in [0, 32), bits as Q5_0.
func decodeQ5_1(y []float32, blk []byte) {
	d, m := f16At(blk, 0), f16At(blk, 2)
	qh := binary.LittleEndian.Uint32(blk[4:])
	qs := blk[8:]
	for j := 0; j < QK/2; j++ {
		h0 := byte(qh>>j<<4) & 0x10
		h1 := byte(qh>>(j+12)) & 0x10
		y[j] = float32(float32(qs[j]&0xf|h0)*d) + m
		y[j+QK/2] = float32(float32(qs[j]>>4|h1)*d) + m
	}
}

// Q2_K: 16 sub-blocks of 16; sub-block i has scale d·(scales[i]&15) and min dmin·(scales[i]>>4);
// x = scale·q − min with 2-bit q. Byte l of a 32-byte group holds, at bit 2j, an element of the
// j-th 32-element run of that group's 128.
func decodeQ2_K(y []float32, blk []byte) {
	scales, qs := blk[:16], blk[16:80]
	d, dmin := f16At(blk, 80), f16At(blk, 82)
	is, o := 0, 0
	for n := 0; n < QKK; n += 128 {
		q := qs[n/4:]
		for shift := uint(0); shift < 8; shift += 2 {
			for half := 0; half < 2; half++ {
				sc := scales[is]
				is++
				dl, ml := d*float32(sc&0xf), dmin*float32(sc>>4)
				for l := 0; l < 16; l++ {
					y[o] = float32(dl*float32(q[16*half+l]>>shift&3)) - ml
					o++
				}
			}
		}
	}
}

// Q3_K: 16 sub-blocks of 16 with 6-bit scales s (stored offset by 32, packed in 12 bytes);
// x = d·(s − 32)·(q − 4·(1 − h)): 2-bit q as Q2_K, and its high bit h in hmask (bit j of byte l
// for the element at l of the j-th run of 32).
func decodeQ3_K(y []float32, blk []byte) {
	hm, qs, packed := blk[:32], blk[32:96], blk[96:108]
	d := f16At(blk, 108)
	var sc [16]int8
	for i := 0; i < 16; i++ {
		// Low 4 bits: nibble i%8 of bytes 0..7 (low nibbles first); high 2 bits: bits 2·(i/4)
		// of byte 8 + i%4.
		lo := packed[i%8] >> (4 * uint(i/8)) & 0xf
		hi := packed[8+i%4] >> (2 * uint(i/4)) & 3
		sc[i] = int8(lo|hi<<4) - 32
	}
	is, o := 0, 0
	m := byte(1)
	for n := 0; n < QKK; n += 128 {
		q := qs[n/4:]
		for shift := uint(0); shift < 8; shift += 2 {
			for half := 0; half < 2; half++ {
				dl := d * float32(sc[is])
				is++
				for l := 16 * half; l < 16*half+16; l++ {
					v := int8(q[l] >> shift & 3)
					if hm[l]&m == 0 {
						v -= 4
					}
					y[o] = dl * float32(v)
					o++
				}
			}
			m <<= 1
		}
	}
}

// ScaleMinK4 unpacks the 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block from
// its 12 scale bytes s (bytes 4…15 of the block): j < 4 in the low 6 bits of bytes j and j+4; j ≥ 4 as a nibble of byte j+4 and the top 2 bits
// of bytes j−4 (scale) and j (min).
func ScaleMinK4(j int, s []byte) (sc, m byte) {
	if j < 4 {
		return s[j] & 63, s[j+4] & 63
	}
	return s[j+4]&0xf | s[j-4]>>6<<4, s[j+4]>>4 | s[j]>>6<<4
}

// Q4_K: 8 sub-blocks of 32, x = d·sc·q − dmin·m with 4-bit q; each 32 bytes of qs hold two
// sub-blocks, the first in the low nibbles.
func decodeQ4_K(y []float32, blk []byte) {
	d, dmin := f16At(blk, 0), f16At(blk, 2)
	scales, qs := blk[4:16], blk[16:144]
	o := 0
	for j := 0; j < 4; j++ {
		sc1, m1 := ScaleMinK4(2*j, scales)
		sc2, m2 := ScaleMinK4(2*j+1, scales)
		d1, mn1 := d*float32(sc1), dmin*float32(m1)
		d2, mn2 := d*float32(sc2), dmin*float32(m2)
		q := qs[32*j : 32*j+32]
		for l := 0; l < 32; l++ {
			y[o+l] = float32(d1*float32(q[l]&0xf)) - mn1
			y[o+32+l] = float32(d2*float32(q[l]>>4)) - mn2
		}
		o += 64
	}
}

// Q5_K: Q4_K with a fifth bit per element: bit 2j (first sub-block of pair j) and 2j+1 (second)
// of qh[l].
func decodeQ5_K(y []float32, blk []byte) {
	d, dmin := f16At(blk, 0), f16At(blk, 2)
	scales, qh, qs := blk[4:16], blk[16:48], blk[48:176]
	o := 0
	for j := 0; j < 4; j++ {
		sc1, m1 := ScaleMinK4(2*j, scales)
		sc2, m2 := ScaleMinK4(2*j+1, scales)
		d1, mn1 := d*float32(sc1), dmin*float32(m1)
		d2, mn2 := d*float32(sc2), dmin*float32(m2)
		q := qs[32*j : 32*j+32]
		for l := 0; l < 32; l++ { // ggml: nibble + (qh[l] & u ? 16 : 0), here without a branch
			lo := q[l]&0xf | qh[l]>>(2*j)&1<<4
			hi := q[l]>>4 | qh[l]>>(2*j+1)&1<<4
			y[o+l] = float32(d1*float32(lo)) - mn1
			y[o+32+l] = float32(d2*float32(hi)) - mn2
		}
		o += 64
	}
}

// Q6_K: 16 sub-blocks of 16 with int8 scales; x = d·sc·(q − 32), 6-bit q from a nibble of ql
// and 2 bits of qh. Each half (128 elements) uses 64 bytes of ql, 32 of qh and 8 scales.
func decodeQ6_K(y []float32, blk []byte) {
	d := f16At(blk, 208)
	for n := 0; n < 2; n++ {
		ql, qh, sc := blk[64*n:64*n+64], blk[128+32*n:128+32*n+32], blk[192+8*n:192+8*n+8]
		o := y[128*n:]
		for l := 0; l < 32; l++ {
			is := l / 16
			q1 := int8(ql[l]&0xf|(qh[l]>>0&3)<<4) - 32
			q2 := int8(ql[l+32]&0xf|(qh[l]>>2&3)<<4) - 32
			q3 := int8(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
			q4 := int8(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
			o[l] = d * float32(int8(sc[is])) * float32(q1)
			o[l+32] = d * float32(int8(sc[is+2])) * float32(q2)
			o[l+64] = d * float32(int8(sc[is+4])) * float32(q3)
			o[l+96] = d * float32(int8(sc[is+6])) * float32(q4)
		}
	}
}

// encodeQ45_K quantises 256 values into one Q4_K (bits 4) or Q5_K (bits 5) block: per 32-value
// sub-block a scale and a min chosen by fitScaleMin, both quantised to 6 bits against the
// block's fp16 d and dmin; q = round((x + dmin·m)/(d·sc)) in [0, 2^bits − 1]. The low 4 bits
// of q are the nibbles (bytes 16… for Q4_K, 48… for Q5_K); Q5_K's bit 4 of the element at l of
// sub-block i is bit i of qh[l] (bytes 16…47).
func encodeQ45_K(blk []byte, x []float32, bits int) {
	top := float32(int(1)<<bits - 1)
	var scale, minus [8]float32
	var maxScale, maxMin float32
	for i := range 8 {
		scale[i], minus[i] = fitScaleMin(x[32*i:32*i+32], top)
		maxScale, maxMin = max(maxScale, scale[i]), max(maxMin, minus[i])
	}
	d, dmin := F32ToF16(maxScale/63), F32ToF16(maxMin/63)
	binary.LittleEndian.PutUint16(blk, d)
	binary.LittleEndian.PutUint16(blk[2:], dmin)
	df, dminf := F16ToF32(d), F16ToF32(dmin)
	var sc, m [8]byte
	for i := range 8 {
		if df > 0 {
			sc[i] = byte(min(63, math.Round(float64(scale[i]/df))))
		}
		if dminf > 0 {
			m[i] = byte(min(63, math.Round(float64(minus[i]/dminf))))
		}
	}
	s := blk[4:16] // ScaleMinK4's packing, inverted
	for j := range 4 {
		s[j] = sc[j] | sc[j+4]>>4<<6
		s[j+4] = m[j] | m[j+4]>>4<<6
		s[j+8] = sc[j+4]&0xf | m[j+4]<<4
	}
	qs := blk[16:144]
	var qh []byte
	if bits == 5 {
		qh, qs = blk[16:48], blk[48:176]
		clear(qh)
	}
	for i := range 8 {
		ds, ms := df*float32(sc[i]), dminf*float32(m[i])
		for l := range 32 {
			q := 0
			if ds > 0 {
				q = int(max(0, min(float64(top), math.Round(float64((x[32*i+l]+ms)/ds)))))
			}
			b := &qs[32*(i/2)+l]
			if i%2 == 0 {
				*b = *b&0xf0 | byte(q&0xf)
			} else {
				*b = *b&0x0f | byte(q&0xf)<<4
			}
			if qh != nil {
				qh[l] |= byte(q>>4) << i
			}
		}
	}
}

// fitScaleMin picks a sub-block's scale s ≥ 0 and min m ≥ 0 (x ≈ s·q − m, q an integer in
// [0, top]) for a small weighted squared error Σ w·(s·q − m − x)², w = rms(x) + |x| so that
// large values count more. It starts from the range's s = (max − min)/top and tries 20 slightly
// larger steps, refitting s and m by weighted least squares for the q each gives, and keeps the
// one whose q, rounded afresh for its s and m (as the block will be), err least: the search
// ggml's k-quant quantiser runs (make_qkx2_quants, −1 + 0.1·k).
func fitScaleMin(x []float32, top float32) (scale, minus float32) {
	lo, hi := x[0], x[0]
	var sumX2 float32
	for _, v := range x {
		lo, hi = min(lo, v), max(hi, v)
		sumX2 += v * v
	}
	lo = min(lo, 0)
	if hi == lo {
		return 0, -lo
	}
	av := float32(math.Sqrt(float64(sumX2 / float32(len(x)))))
	var w [32]float32
	var sw, sx float64 // the least-squares sums in float64: det = sw·sl2 − sl² cancels
	for i, v := range x {
		w[i] = av + float32(math.Abs(float64(v)))
		sw += float64(w[i])
		sx += float64(w[i] * v)
	}
	errOf := func(s, m float32) float32 { // m ≤ 0 here: x ≈ s·q + m
		is := 1 / s
		var e float32
		for i, v := range x {
			q := min(top, max(0, float32(int32((v-m)*is+0.5)))) // (v−m)/s + 0.5 > −1: truncation rounds
			d := s*q + m - v
			e += w[i] * d * d
		}
		return e
	}
	span := hi - lo
	bestS, bestM := span/top, lo
	best := errOf(bestS, bestM)
	for k := range 21 {
		is := (top - 1 + 0.1*float32(k)) / span
		var sl, sl2, sxl float64
		for i, v := range x {
			q := min(top, float32(int32(is*(v-lo)+0.5)))
			wq := w[i] * q
			sl += float64(wq)
			sl2 += float64(wq * q)
			sxl += float64(wq * v)
		}
		det := sw*sl2 - sl*sl
		if det <= 0 {
			continue
		}
		s, m := (sw*sxl-sx*sl)/det, (sl2*sx-sl*sxl)/det
		if m > 0 { // a positive offset is not storable: fit the scale alone
			m, s = 0, sxl/sl2
		}
		if s <= 0 {
			continue
		}
		if e := errOf(float32(s), float32(m)); e < best {
			best, bestS, bestM = e, float32(s), float32(m)
		}
	}
	return bestS, -bestM
}

// fitSymmetric picks a 16-value sub-block's scale s for x ≈ s·q, q an integer in [−32, 31], with
// a small squared error weighted by x² (the large values): the value m of largest magnitude
// goes to −32 (s = m/−32), then 18 nearby steps −(32 ± 0.1·k)/m are tried, each with s refitted
// by least squares for the q it gives and scored with those q (Σwx² − (Σwxq)²/Σwq²) — the
// search of ggml's make_qx_quants.
func fitSymmetric(x []float32) float32 {
	m := largestMagnitude(x)
	if m == 0 {
		return 0
	}
	var sx2 float64
	for _, v := range x {
		sx2 += float64(v * v * v * v)
	}
	sums := func(is float32) (sxl, sl2 float64) {
		for _, v := range x {
			q := max(-32, min(31, float32(math.Round(float64(is*v)))))
			wq := v * v * q
			sxl += float64(wq * v)
			sl2 += float64(wq * q)
		}
		return sxl, sl2
	}
	bestS := float64(m) / -32
	sxl, sl2 := sums(-32 / m)
	best := sx2 - 2*bestS*sxl + bestS*bestS*sl2
	for k := -9; k <= 9; k++ {
		sxl, sl2 := sums(-(32 + 0.1*float32(k)) / m)
		if sl2 == 0 {
			continue
		}
		if e := sx2 - sxl*sxl/sl2; e < best { // strictly better: ties keep m ↦ −32
			best, bestS = e, sxl/sl2
		}
	}
	return float32(bestS)
}

// encodeQ6_K quantises 256 values into one Q6_K block: per 16-value sub-block a signed scale
// from fitSymmetric (the value of largest magnitude goes to −32, the wider end of [−32, 31]),
// quantised to int8 against the block's fp16 d the same way; q = round(x/(d·sc)) in [−32, 31].
func encodeQ6_K(blk []byte, x []float32) {
	var scale [16]float32
	var maxScale float32 // the scale of largest magnitude, signed
	for i := range 16 {
		scale[i] = fitSymmetric(x[16*i : 16*i+16])
		if math.Abs(float64(scale[i])) > math.Abs(float64(maxScale)) {
			maxScale = scale[i]
		}
	}
	d := F32ToF16(maxScale / -128)
	df := F16ToF32(d)
	binary.LittleEndian.PutUint16(blk[208:], d)
	var u [QKK]byte // q + 32
	for i := range 16 {
		sc := int8(0)
		if df != 0 {
			sc = int8(max(-128, min(127, math.Round(float64(scale[i]/df)))))
		}
		blk[192+i] = byte(sc)
		ds := df * float32(sc)
		for l := range 16 {
			q := 0
			if ds != 0 {
				q = int(max(-32, min(31, math.Round(float64(x[16*i+l]/ds)))))
			}
			u[16*i+l] = byte(q + 32)
		}
	}
	for n := range 2 {
		ql, qh := blk[64*n:64*n+64], blk[128+32*n:128+32*n+32]
		e := u[128*n:]
		for l := range 32 {
			ql[l] = e[l]&0xf | e[l+64]&0xf<<4
			ql[l+32] = e[l+32]&0xf | e[l+96]&0xf<<4
			qh[l] = e[l]>>4 | e[l+32]>>4<<2 | e[l+64]>>4<<4 | e[l+96]>>4<<6
		}
	}
}
