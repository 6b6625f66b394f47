package cpu

import (
	"fmt"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// MatMul: out[i,r] = Σ_k x[i,k]·w[r,k]. out (n, N), x (n, K), w (N, K). out is not x.
//
// The N weight rows are split into chunks across the workers. Decode (n = 1) streams each row
// once through a dot kernel that reads the stored dtype directly; prefill (n > 1) runs a GEMM
// micro-kernel over tiles of activation rows × weight rows (see gemm.go), widening non-F32 weight
// segments into per-worker scratch first.
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
	t.out, t.x, t.w, t.n, t.scratch = ob, xb, ww, n, b.gemmBufs
	// Small ops run on one goroutine: waking the pool costs microseconds.
	grain := ww.rows
	if work := n * ww.rows * ww.cols; work >= 1<<15 {
		align := 4
		if n > 1 {
			align = gemm.nr // whole tiles per chunk
		}
		grain = b.pool.grainFor(ww.rows, align, align)
	}
	b.pool.parallel(t, ww.rows, grain)
	t.out, t.x, t.w = nil, nil, nil
}

// matmulTask computes output columns [lo, hi) (weight rows) for all n rows of x: decode GEMV
// for n = 1, else the prefill GEMM (gemm.go).
type matmulTask struct {
	out, x  *Buffer
	w       *Weight
	n       int
	scratch []*gemmScratch // per worker
}

func (t *matmulTask) run(wk, lo, hi int) {
	if t.n > 1 {
		t.prefill(wk, lo, hi)
		return
	}
	w, K := t.w, t.w.cols
	out, xr := t.out.data, t.x.data[:K]
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
	case tensor.Q4_K:
		buf := t.scratch[wk].rowBuf(K/32 + 8)
		xsum, qx := buf[:K/32], buf[K/32:]
		subSums(xsum, xr)
		for r := lo; r < hi; r++ {
			out[r] = dotQ4K(w.rawRow(r), xr, xsum, qx)
		}
	case tensor.Q5_K:
		buf := t.scratch[wk].rowBuf(K/32 + 8)
		xsum, qx := buf[:K/32], buf[K/32:]
		subSums(xsum, xr)
		for r := lo; r < hi; r++ {
			out[r] = dotQ5K(w.rawRow(r), xr, xsum, qx)
		}
	case tensor.Q6_K:
		qx := t.scratch[wk].rowBuf(8)
		for r := lo; r < hi; r++ {
			out[r] = dotQ6K(w.rawRow(r), xr, qx)
		}
	default: // the other ggml types (Q4_1 … Q3_K): each row widened, then the F32 dot
		row := t.scratch[wk].rowBuf(K)
		for r := lo; r < hi; r++ {
			tensor.Decode(row, w.dtype, w.rawRow(r))
			out[r] = dotF32(row, xr)
		}
	}
}
