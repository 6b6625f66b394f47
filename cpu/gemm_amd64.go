//go:build !purego

package cpu

import "golang.org/x/sys/cpu"

//go:noescape
func gemm4x6AVX512(xp *[4]*float32, wp *[6]*float32, k int, acc *float32, mode int, res *float32)

//go:noescape
func gemm4x3AVX2(xp *[4]*float32, wp *[3]*float32, k int, acc *float32, mode int, res *float32)

// hasAVX512 reports whether the AVX-512 GEMM kernel is usable (with the AVX2 ones: hasAVX2).
var hasAVX512 = hasAVX2 && cpu.X86.HasAVX512F

// gemmAVX512 is 4 activation rows × 6 weight rows, 16-lane accumulators (24 of the 32 registers).
var gemmAVX512 = gemmKernel{name: "avx512", mr: 4, nr: 6, lanes: 16, tile: gemmTileAVX512, pos: gemmPos(4, 6, gemmAVX512Pos)}

// gemmAVX2 is 4 activation rows × 3 weight rows, 8-lane accumulators (12 of the 16 registers).
var gemmAVX2 = gemmKernel{name: "avx2", mr: 4, nr: 3, lanes: 8, tile: gemmTileAVX2, pos: gemmPos(4, 3, gemmAVX2Pos)}

// gemmAVX512Pos: where gemm4x6AVX512 leaves accumulator a (register Za, a = i·6 + j).
func gemmAVX512Pos(a int) int {
	if a < 16 {
		return 4*(a%4) + a/4
	}
	return 16 + 4*(a%4) + (a-16)/4
}

// gemmAVX2Pos: where gemm4x3AVX2 leaves accumulator a (register Ya, a = i·3 + j).
func gemmAVX2Pos(a int) int { return 8*(a/8) + 4*(a%2) + (a%8)/2 }

func gemmPos(mr, nr int, f func(int) int) (p [gemmMaxMR * gemmMaxNR]uint8) {
	for a := range mr * nr {
		p[a] = uint8(f(a))
	}
	return p
}

// bestGemm is the fastest kernel this CPU runs.
func bestGemm() *gemmKernel {
	switch {
	case hasAVX512:
		return &gemmAVX512
	case hasAVX2:
		return &gemmAVX2
	}
	return &gemmGo
}

func gemmTileAVX512(xs *[gemmMaxMR][]float32, ws *[gemmMaxNR][]float32, acc []float32, mode int, res *[gemmMaxRes]float32) {
	k := len(ws[0])
	_ = acc[4*6*16-1]
	var xp [4]*float32
	var wp [6]*float32
	for i := range xp {
		xp[i] = &xs[i][:k][0]
	}
	for j := range wp {
		wp[j] = &ws[j][:k][0]
	}
	gemm4x6AVX512(&xp, &wp, k, &acc[0], mode, &res[0])
}

// gemmTileAVX2 runs the whole vectors through gemm4x3AVX2, then the last k%8 elements from
// zero-padded copies.
func gemmTileAVX2(xs *[gemmMaxMR][]float32, ws *[gemmMaxNR][]float32, acc []float32, mode int, res *[gemmMaxRes]float32) {
	k := len(ws[0])
	_ = acc[4*3*8-1]
	m := k &^ 7
	var xp [4]*float32
	var wp [3]*float32
	if m > 0 {
		for i := range xp {
			xp[i] = &xs[i][:k][0]
		}
		for j := range wp {
			wp[j] = &ws[j][:k][0]
		}
		if m == k {
			gemm4x3AVX2(&xp, &wp, k, &acc[0], mode, &res[0])
			return
		}
		gemm4x3AVX2(&xp, &wp, m, &acc[0], mode|tileSave, &res[0])
		mode |= tileLoad
	}
	var pad [7][8]float32
	for i := range xp {
		copy(pad[i][:], xs[i][m:k])
		xp[i] = &pad[i][0]
	}
	for j := range wp {
		copy(pad[4+j][:], ws[j][m:k])
		wp[j] = &pad[4+j][0]
	}
	gemm4x3AVX2(&xp, &wp, 8, &acc[0], mode, &res[0])
}

// gemmKernels lists every kernel this CPU runs, the pure-Go one first (for tests).
func gemmKernels() []*gemmKernel {
	ks := []*gemmKernel{&gemmGo}
	if hasAVX2 {
		ks = append(ks, &gemmAVX2)
	}
	if hasAVX512 {
		ks = append(ks, &gemmAVX512)
	}
	return ks
}
