package cpu

import "github.com/llamacu/llamacu/tensor"

// The prefill GEMM: out (n, N) = x (n, K) · wᵀ for n > 1, w row-major (N, K), so every output is
// a dot product along K. A micro-kernel computes a tile of mr activation rows × nr weight rows,
// loading each x and w vector once per step and using it nr (or mr) times from registers.
//
// Determinism: each output is accumulated in one set of lanes in K order and reduced in a fixed
// order, the same wherever it sits in a tile. Partial tiles repeat the last row (the repeated
// outputs are computed identically and written once), so an output's value depends neither on
// how the N weight rows are split among workers nor on n; only on the kernel (and so the CPU).

const (
	gemmMaxMR  = 4  // activation rows per tile, any kernel
	gemmMaxNR  = 6  // weight rows per tile, any kernel
	gemmMaxRes = 32 // reduced outputs a kernel writes (with its padding)
	gemmLanes  = 16 // widest accumulator, in float32 lanes

	// gemmKC is the longest K block: a block's weight segments (nr rows) and activation segments
	// (up to gemmXBlock rows) stay in L1/L2 while every tile over them runs. K is cut into equal
	// blocks no longer than this, multiples of the quantization block (32; 256 for k-quants). Between blocks each
	// tile's accumulators are saved unreduced, so the blocking does not change the results.
	gemmKC = 2048
	// gemmXBlock is how many activation rows share one pass over a weight tile's K blocks (the
	// saved accumulators of its tiles are per-worker scratch).
	gemmXBlock = 64
)

// Kernel modes (see gemm_amd64.s).
const (
	tileLoad = 1 // continue from the saved accumulators (else start from zero)
	tileSave = 2 // save the accumulators (else reduce them into res)
)

// gemmKernel is one micro-kernel and its geometry.
type gemmKernel struct {
	name   string
	mr, nr int // tile: activation rows × weight rows
	lanes  int // accumulator floats per output
	// tile adds Σ_{k<len(ws[0])} xs[i][k]·ws[j][k] to output (i, j)'s accumulator for i < mr,
	// j < nr (every slice at least len(ws[0]) long); see the modes. acc holds
	// mr·nr·lanes floats.
	tile func(xs *[gemmMaxMR][]float32, ws *[gemmMaxNR][]float32, acc []float32, mode int, res *[gemmMaxRes]float32)
	// pos[i·nr+j] is where output (i, j) lands in res.
	pos [gemmMaxMR * gemmMaxNR]uint8
}

// gemm is the kernel prefill uses: gemmGo, or an assembly one installed by useAsm.
var gemm = &gemmGo

// gemmGo is the pure-Go kernel: 4 activation rows × 1 weight row, each output in two partial
// sums (even and odd k).
var gemmGo = gemmKernel{name: "go", mr: 4, nr: 1, lanes: 2, tile: gemmTileGo, pos: [gemmMaxMR * gemmMaxNR]uint8{0, 1, 2, 3}}

func gemmTileGo(xs *[gemmMaxMR][]float32, ws *[gemmMaxNR][]float32, acc []float32, mode int, res *[gemmMaxRes]float32) {
	w := ws[0]
	n := len(w)
	x0, x1, x2, x3 := xs[0][:n], xs[1][:n], xs[2][:n], xs[3][:n]
	acc = acc[:8]
	var a0, a1, a2, a3, b0, b1, b2, b3 float32
	if mode&tileLoad != 0 {
		a0, b0, a1, b1, a2, b2, a3, b3 = acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7]
	}
	k := 0
	for ; k+2 <= n; k += 2 {
		w0, w1 := w[k], w[k+1]
		a0 += w0 * x0[k]
		a1 += w0 * x1[k]
		a2 += w0 * x2[k]
		a3 += w0 * x3[k]
		b0 += w1 * x0[k+1]
		b1 += w1 * x1[k+1]
		b2 += w1 * x2[k+1]
		b3 += w1 * x3[k+1]
	}
	if k < n {
		w0 := w[k]
		a0 += w0 * x0[k]
		a1 += w0 * x1[k]
		a2 += w0 * x2[k]
		a3 += w0 * x3[k]
	}
	if mode&tileSave != 0 {
		acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7] = a0, b0, a1, b1, a2, b2, a3, b3
		return
	}
	res[0], res[1], res[2], res[3] = a0+b0, a1+b1, a2+b2, a3+b3
}

// gemmScratch is one worker's prefill scratch, allocated by New. The tile arguments live here
// rather than on the stack: passed through a function value, they would escape (allocate).
type gemmScratch struct {
	acc  []float32 // (gemmXBlock/mr tiles, mr·nr·lanes) accumulators saved between K blocks
	wbuf []float32 // (gemmMaxNR, gemmKC) weight segments widened to F32
	xs   [gemmMaxMR][]float32
	ws   [gemmMaxNR][]float32
	res  [gemmMaxRes]float32
	row  []float32 // one widened weight row (decode of the read-only ggml types)
}

// rowBuf returns the scratch row, grown to n floats.
func (s *gemmScratch) rowBuf(n int) []float32 {
	if cap(s.row) < n {
		s.row = make([]float32, n)
	}
	return s.row[:n]
}

func newGemmScratch() *gemmScratch {
	return &gemmScratch{
		acc:  make([]float32, gemmXBlock/gemmMaxMR*gemmMaxMR*gemmMaxNR*gemmLanes),
		wbuf: make([]float32, gemmMaxNR*gemmKC),
	}
}

// prefill computes output columns [lo, hi) (weight rows) of t for all n > 1 rows of x, on worker
// wk.
func (t *matmulTask) prefill(wk, lo, hi int) {
	kern := gemm
	mr, nr := kern.mr, kern.nr
	tileAcc := mr * nr * kern.lanes
	w, n, K, N := t.w, t.n, t.w.cols, t.w.rows
	out, x := t.out.data, t.x.data
	sc := t.scratch[wk]
	acc, wbuf, xs, ws, res := sc.acc, sc.wbuf, &sc.xs, &sc.ws, &sc.res
	bb, bs := w.dtype.BlockBytes(), w.dtype.BlockSize()
	nkb := (K + gemmKC - 1) / gemmKC
	align := max(32, bs)                                   // whole quantisation blocks (k-quants: 256)
	kc := min(((K+nkb-1)/nkb+align-1)/align*align, gemmKC) // equal blocks, multiples of align
	for j0 := lo; j0 < hi; j0 += nr {
		jn := min(nr, hi-j0) // weight rows in this tile; the rest repeat the last
		for i0 := 0; i0 < n; i0 += gemmXBlock {
			i1 := min(i0+gemmXBlock, n)
			for k0 := 0; k0 < K; k0 += kc {
				k1 := min(k0+kc, K)
				mode := 0
				if k0 > 0 {
					mode |= tileLoad
				}
				if k1 < K {
					mode |= tileSave
				}
				for j := range nr {
					r := j0 + min(j, jn-1)
					if w.dtype == tensor.F32 {
						ws[j] = w.f32[r*K+k0 : r*K+k1]
					} else if j < jn {
						ws[j] = wbuf[j*gemmKC : j*gemmKC+k1-k0]
						decodeInto(ws[j], w.dtype, w.rawRow(r)[k0/bs*bb:k1/bs*bb])
					} else {
						ws[j] = ws[jn-1]
					}
				}
				for i, a := i0, 0; i < i1; i, a = i+mr, a+tileAcc {
					in := min(mr, i1-i)
					for m := range mr {
						r := i + min(m, in-1)
						xs[m] = x[r*K+k0 : r*K+k1]
					}
					kern.tile(xs, ws, acc[a:a+tileAcc], mode, res)
					if mode&tileSave != 0 {
						continue
					}
					// the repeated rows of a partial tile are left out here
					for m := range in {
						o := out[(i+m)*N+j0 : (i+m)*N+j0+jn]
						p := kern.pos[m*nr : m*nr+jn]
						for j := range o {
							o[j] = res[p[j]]
						}
					}
				}
			}
		}
	}
}
