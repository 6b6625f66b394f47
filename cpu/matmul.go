package cpu

import (
	"fmt"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// The prefill tile: xTile activation rows by kBlock columns (32 KiB of float32, about L1) are
// multiplied by each weight row's matching segment before moving on. kBlock is a multiple of the
// quantization block.
const (
	xTile  = 16
	kBlock = 512
)

// MatMul: out[i,r] = Σ_k x[i,k]·w[r,k]. out (n, N), x (n, K), w (N, K). out is not x.
//
// The N weight rows are split into chunks across the workers. Decode (n = 1) streams each row
// once through a dot kernel that reads the stored dtype directly; prefill (n > 1) widens each
// non-F32 row once into a per-worker scratch row and multiplies it against four activation rows
// at a time.
func (b *Backend) MatMul(out, x model.Buffer, w model.Weight, n int) {
	ob, xb, ww := buf(out), buf(x), wt(w)
	checkRows("MatMul", n, ob, xb)
	if ob.cols != ww.rows || xb.cols != ww.cols || ob == xb {
		panic(fmt.Sprintf("cpu: MatMul: out (%d, %d) = x (%d, %d) · w%v ᵀ (out must not be x)", n, ob.cols, n, xb.cols, ww.shape))
	}
	if n == 0 {
		return
	}
	t := &b.mm
	t.out, t.x, t.w, t.n, t.rowBuf = ob, xb, ww, n, b.rowBuf
	// Small ops run on one goroutine: waking the pool costs microseconds.
	grain := ww.rows
	if work := n * ww.rows * ww.cols; work >= 1<<15 {
		grain = b.pool.grainFor(ww.rows, 4, 4)
	}
	b.pool.parallel(t, ww.rows, grain)
	t.out, t.x, t.w = nil, nil, nil
}

// matmulTask computes output columns [lo, hi) (weight rows) for all n rows of x.
type matmulTask struct {
	out, x *Buffer
	w      *Weight
	n      int
	rowBuf [][]float32
}

func (t *matmulTask) run(wk, lo, hi int) {
	w, n, K, N := t.w, t.n, t.w.cols, t.w.rows
	out, x := t.out.data, t.x.data
	if n == 1 {
		xr := x[:K]
		switch w.dtype {
		case tensor.F32:
			for r := lo; r < hi; r++ {
				out[r] = dotF32(w.f32[r*K:(r+1)*K], xr)
			}
		case tensor.Q8_0:
			for r := lo; r < hi; r++ {
				out[r] = dotQ8(w.rawRow(r), xr)
			}
		case tensor.Q4_0:
			for r := lo; r < hi; r++ {
				out[r] = dotQ4(w.rawRow(r), xr)
			}
		case tensor.F16:
			for r := lo; r < hi; r++ {
				out[r] = dotF16(w.rawRow(r), xr)
			}
		case tensor.BF16:
			for r := lo; r < hi; r++ {
				out[r] = dotBF16(w.rawRow(r), xr)
			}
		}
		return
	}
	// Prefill: tile the activations (xTile rows by kBlock columns, which stay in L1) so that each
	// weight row segment is loaded, and widened, once per tile and used for every row of it.
	bb, bs := w.dtype.BlockBytes(), w.dtype.BlockSize()
	for i0 := 0; i0 < n; i0 += xTile {
		i1 := min(i0+xTile, n)
		for k0 := 0; k0 < K; k0 += kBlock {
			k1 := min(k0+kBlock, K)
			for r := lo; r < hi; r++ {
				var wr []float32
				if w.dtype == tensor.F32 {
					wr = w.f32[r*K+k0 : r*K+k1]
				} else {
					wr = t.rowBuf[wk][:k1-k0]
					decodeInto(wr, w.dtype, w.rawRow(r)[k0/bs*bb:k1/bs*bb])
				}
				i := i0
				for ; i+4 <= i1; i += 4 {
					r0, r1, r2, r3 := dot4F32(wr, x[i*K+k0:i*K+k1], x[(i+1)*K+k0:(i+1)*K+k1], x[(i+2)*K+k0:(i+2)*K+k1], x[(i+3)*K+k0:(i+3)*K+k1])
					if k0 > 0 {
						r0 += out[i*N+r]
						r1 += out[(i+1)*N+r]
						r2 += out[(i+2)*N+r]
						r3 += out[(i+3)*N+r]
					}
					out[i*N+r], out[(i+1)*N+r], out[(i+2)*N+r], out[(i+3)*N+r] = r0, r1, r2, r3
				}
				for ; i < i1; i++ {
					v := dotF32(wr, x[i*K+k0:i*K+k1])
					if k0 > 0 {
						v += out[i*N+r]
					}
					out[i*N+r] = v
				}
			}
		}
	}
}
