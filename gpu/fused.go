//go:build cuda || cudaemu

package gpu

import (
	"fmt"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// The fused decode ops (model.QKVMatMuler, model.GateUpMatMuler, model.AddRMSNormer): each is one
// launch where the unfused sequence is two or three, and equals that sequence bit for bit. (Q4_K
// and Q5_K weights have the gate/up kernel; their q/k/v, and Q6_K's, run unfused: in Q4_K_M and
// Q5_K_M files V is Q6_K in half the layers.) Where a
// fused kernel does not apply (more than 8 rows, which go to cuBLAS; weights of mixed dtypes;
// Options.Naive; shapes the kernels do not take) they run the unfused sequence.

var (
	_ model.QKVMatMuler    = (*Backend)(nil)
	_ model.GateUpMatMuler = (*Backend)(nil)
	_ model.AddRMSNormer   = (*Backend)(nil)
)

// fusable reports whether gemv_<dt>_v2_qkv (glu false) or gemv_<dt>_v2_glu (glu true) can take
// x (n, K) times these weights: weights of one dtype that has the kernel (Q4_K and Q5_K have
// glu only), n ≤ 8, K a multiple of the 16-byte vector (of a quantised block: always).
func (b *Backend) fusable(n int, glu bool, ws ...*Weight) bool {
	if b.opts.Naive || n > gemvMaxBatch {
		return false
	}
	d, K := ws[0].dtype, ws[0].cols
	vec := 8
	switch d {
	case tensor.F32:
		vec = 4
	case tensor.F16, tensor.BF16:
	case tensor.Q8_0, tensor.Q4_0:
		vec = tensor.QK
	case tensor.Q4_K, tensor.Q5_K:
		if !glu {
			return false
		}
		vec = tensor.QKK
	default:
		return false
	}
	for _, w := range ws {
		if w.dtype != d || w.cols != K || len(w.shape) != 2 {
			return false
		}
	}
	return K%vec == 0
}

// checkQKV panics, naming op and the shapes, unless outs[i] (n, rows of ws[i]) = x · ws[i]ᵀ fits
// and no output is x.
func checkQKV(op string, n int, outs []*Buffer, xb *Buffer, ws []*Weight) {
	for i, ob := range outs {
		if ob.cols != ws[i].rows || xb.cols != ws[i].cols || ob == xb || len(ws[i].shape) != 2 {
			panic(fmt.Sprintf("gpu: %s: out %d (%d, %d) = x (%d, %d) · w%v ᵀ (out must not be x)", op, i, n, ob.cols, n, xb.cols, ws[i].shape))
		}
	}
}

// cublasShared reports whether matmuls of one x (n, K) by each of ws may share one rounding of x
// for cuBLAS (cublasInput): where MatMul would send each to cuBLAS with x rounded to the weight
// dtype — more than 8 rows, cuBLAS loaded, not Options.Naive, F16 or BF16 matrices, K a multiple
// of the 16-byte vector — and the weights share that dtype and K.
func (b *Backend) cublasShared(n int, ws ...*Weight) bool {
	if b.blas == nil || b.opts.Naive || n <= gemvMaxBatch {
		return false
	}
	d, K := ws[0].dtype, ws[0].cols
	if (d != tensor.F16 && d != tensor.BF16) || K%8 != 0 {
		return false
	}
	for _, w := range ws {
		if w.dtype != d || w.cols != K || len(w.shape) != 2 {
			return false
		}
	}
	return true
}

// batchWidth is the index of the compiled batch width (1, 2, 4, 8) that holds m ≤ 8 rows.
func batchWidth(m int) int {
	j := 0
	for 1<<j < m {
		j++
	}
	return j
}

// MatMulQKV: q, k, v = x·Wqᵀ, x·Wkᵀ, x·Wvᵀ in one launch of gemv_<dt>_v3_qkv (the three row
// counts but the last multiples of 4, so that a warp's rows come from one matrix), or of
// gemv_<dt>_v4_qkv where gemvV4 says (any row counts); else three MatMuls.
//
// For more than 8 rows with cuBLAS (prefill) it rounds x to the weight dtype once for the three
// GEMMs, where three MatMuls would round it three times: the same bits.
func (b *Backend) MatMulQKV(q, k, v, x model.Buffer, wq, wk, wv model.Weight, n int) {
	qb, kb, vb, xb := buf(q), buf(k), buf(v), buf(x)
	ws := []*Weight{wt(wq), wt(wk), wt(wv)}
	shared := b.cublasShared(n, ws...)
	v4 := !shared && b.gemvV4(n, ws...)
	if !shared && !v4 && (!b.fusable(n, false, ws...) || ws[0].rows%gemvRows != 0 || ws[1].rows%gemvRows != 0) {
		b.MatMul(q, x, wq, n)
		b.MatMul(k, x, wk, n)
		b.MatMul(v, x, wv, n)
		return
	}
	checkRows("MatMulQKV", n, qb, kb, vb, xb)
	outs := []*Buffer{qb, kb, vb}
	checkQKV("MatMulQKV", n, outs, xb, ws)
	if n == 0 || !b.ok() {
		return
	}
	if shared {
		xp, t := b.cublasInput(xb, ws[0], n)
		for i, ob := range outs {
			b.cublasNT(ob.ptr, cuda.TypeF32, xp, t, ws[i], n)
		}
		return
	}
	if v4 {
		b.gemv4QKV(qb.ptr, kb.ptr, vb.ptr, xb.ptr, ws, n)
		return
	}
	rows := ws[0].rows + ws[1].rows + ws[2].rows
	if ws[0].quantised() {
		b.launch(b.k.gemvQQKV[ws[0].qi()][batchWidth(n)], cuda.Dim3{X: ceilDiv(rows, gemvRowsPerBlock)}, cuda.Dim3{X: gemvThreads},
			cuda.Ptr(qb.ptr), cuda.Ptr(kb.ptr), cuda.Ptr(vb.ptr), cuda.Ptr(xb.ptr),
			cuda.Ptr(ws[0].ptr), cuda.Ptr(ws[0].scales), cuda.Ptr(ws[1].ptr), cuda.Ptr(ws[1].scales), cuda.Ptr(ws[2].ptr), cuda.Ptr(ws[2].scales),
			i32(n), i32(ws[0].rows), i32(ws[1].rows), i32(ws[2].rows), i32(xb.cols))
		return
	}
	if b.opts.GEMVv2 {
		b.launch(b.k.gemvQKV[ws[0].wdt()][batchWidth(n)], cuda.Dim3{X: ceilDiv(rows, gemvRowsPerBlock)}, cuda.Dim3{X: gemvThreads},
			cuda.Ptr(qb.ptr), cuda.Ptr(kb.ptr), cuda.Ptr(vb.ptr), cuda.Ptr(xb.ptr), cuda.Ptr(ws[0].ptr), cuda.Ptr(ws[1].ptr), cuda.Ptr(ws[2].ptr),
			i32(n), i32(ws[0].rows), i32(ws[1].rows), i32(ws[2].rows), i32(xb.cols))
		return
	}
	grid, ki := gemvV3Grid(rows, b.gemvSplit())
	b.launch(b.k.gemvQKV3[ws[0].wdt()][batchWidth(n)][ki], grid, cuda.Dim3{X: gemvThreads},
		cuda.Ptr(qb.ptr), cuda.Ptr(kb.ptr), cuda.Ptr(vb.ptr), cuda.Ptr(xb.ptr), cuda.Ptr(ws[0].ptr), cuda.Ptr(ws[1].ptr), cuda.Ptr(ws[2].ptr),
		i32(n), i32(ws[0].rows), i32(ws[1].rows), i32(ws[2].rows), i32(xb.cols))
}

// The attention block's prologue in one launch (model.QKVRoPEStorer).
var _ model.QKVRoPEStorer = (*Backend)(nil)

// MatMulQKVRoPEStoreKV: MatMulQKV, then RoPEStoreKV, in one launch of
// gemv_<dt>_v3_qkv_rope_<kv>_n<B> (kernels/gemv.cu) where MatMulQKV would launch the v3 q/k/v
// kernel with ks = 4: float weights of one dtype, at most 8 rows, row counts multiples of 4 and
// k, v of the cache's kv_heads·head_dim; or of gemv_<dt>_v4_qkv_rope_<kv> (kernels/gemv_mma.cu;
// fp16, bf16, Q8_0, Q4_0) where MatMulQKV would launch v4 (gemvV4) and k, v have that shape. Elsewhere (and under
// Options.SeparateRoPE) it runs the two ops. Either way the bits are the same: q and k rotated,
// k and v in the cache.
//
// Prefill (more than 8 rows with cuBLAS; F16 or BF16 weights of one dtype): x is rounded once,
// cuBLAS writes q, k and v in the weight dtype (the qkvHalf scratch), and
// rope_qk_store_kv_<kv>_from_<dt> writes the rotated q (fp32) and the rotated k and v into the
// cache. k and v are left as they were (model.QKVRoPEStorer: unspecified); q and the cache differ
// from MatMulQKV then RoPEStoreKV by the rounding of q, k and v to the weight dtype before the
// rotation. Against that pair it moves 4·n·(q_cols + 3·kv_dim) bytes fewer (7B at n = 2048:
// 0.13 GB a layer, by count: q, k, v written and read as 2 bytes instead of 4, and no fp32 k
// written back). Options.F32Intermediates runs the pair.
func (b *Backend) MatMulQKVRoPEStoreKV(q, k, v, x model.Buffer, wq, wk, wv model.Weight, c model.KVCache, layer int, bt *model.Batch, headDim int, theta float32) {
	n := bt.Len()
	qb, kb, vb, xb, cc := buf(q), buf(k), buf(v), buf(x), kvc(c)
	ws := []*Weight{wt(wq), wt(wk), wt(wv)}
	kvDim := cc.l.KVHeads * cc.l.HeadDim
	path := b.qkvRoPEPath(n, ws, cc, headDim)
	switch path {
	case qkvRoPEHalf:
		b.qkvRoPEHalf(qb, kb, vb, xb, ws, cc, layer, bt, headDim, theta)
		return
	case qkvRoPEUnfused:
		b.MatMulQKV(q, k, v, x, wq, wk, wv, n)
		b.RoPEStoreKV(q, k, v, c, layer, bt, headDim, theta)
		return
	}
	v4 := path == qkvRoPEV4
	checkQKV("MatMulQKVRoPEStoreKV", n, []*Buffer{qb, kb, vb}, xb, ws)
	d := b.prepareBatch("MatMulQKVRoPEStoreKV", cc, layer, bt, false, qb, kb, vb, xb)
	if n == 0 || !b.ok() {
		return
	}
	kvi := 1
	if cc.f32 {
		kvi = 0
	}
	l := cc.l
	if v4 && ws[0].quantised() {
		tiles := gemv4Tiles(ws)
		ks, ki := b.gemv4Split(tiles)
		b.launch(b.k.gemvQQKVRoPE4[ws[0].qi()][kvi][ki], cuda.Dim3{X: tiles}, cuda.Dim3{X: 32 * ks},
			cuda.Ptr(qb.ptr), cuda.Ptr(kb.ptr), cuda.Ptr(vb.ptr), cuda.Ptr(xb.ptr),
			cuda.Ptr(ws[0].ptr), cuda.Ptr(ws[0].scales), cuda.Ptr(ws[1].ptr), cuda.Ptr(ws[1].scales), cuda.Ptr(ws[2].ptr), cuda.Ptr(ws[2].scales),
			cuda.Ptr(cc.k), cuda.Ptr(cc.v), cuda.Ptr(d.pos), cuda.Ptr(d.rowTab), cuda.Ptr(d.tables),
			i32(n), i32(ws[0].rows), i32(kvDim), i32(xb.cols), i32(headDim), cuda.F32(theta),
			i32(layer), i32(l.NumBlocks), i32(l.BlockSize))
		return
	}
	if v4 {
		tiles := gemv4Tiles(ws)
		ks, ki := b.gemv4Split(tiles)
		b.launch(b.k.gemvQKVRoPE4[ws[0].wdt()-1][kvi][ki], cuda.Dim3{X: tiles}, cuda.Dim3{X: 32 * ks},
			cuda.Ptr(qb.ptr), cuda.Ptr(kb.ptr), cuda.Ptr(vb.ptr), cuda.Ptr(xb.ptr), cuda.Ptr(ws[0].ptr), cuda.Ptr(ws[1].ptr), cuda.Ptr(ws[2].ptr),
			cuda.Ptr(cc.k), cuda.Ptr(cc.v), cuda.Ptr(d.pos), cuda.Ptr(d.rowTab), cuda.Ptr(d.tables),
			i32(n), i32(ws[0].rows), i32(kvDim), i32(xb.cols), i32(headDim), cuda.F32(theta),
			i32(layer), i32(l.NumBlocks), i32(l.BlockSize))
		return
	}
	grid, _ := gemvV3Grid(ws[0].rows+2*kvDim, 4)
	b.launch(b.k.gemvQKVRoPE[ws[0].wdt()][kvi][batchWidth(n)], grid, cuda.Dim3{X: gemvThreads},
		cuda.Ptr(qb.ptr), cuda.Ptr(kb.ptr), cuda.Ptr(vb.ptr), cuda.Ptr(xb.ptr), cuda.Ptr(ws[0].ptr), cuda.Ptr(ws[1].ptr), cuda.Ptr(ws[2].ptr),
		cuda.Ptr(cc.k), cuda.Ptr(cc.v), cuda.Ptr(d.pos), cuda.Ptr(d.rowTab), cuda.Ptr(d.tables),
		i32(n), i32(ws[0].rows), i32(kvDim), i32(xb.cols), i32(headDim), cuda.F32(theta),
		i32(layer), i32(l.NumBlocks), i32(l.BlockSize))
}

// qkvRoPEPath is the way MatMulQKVRoPEStoreKV goes for n rows of x times ws into cache cc.
type qkvRoPEPath int

const (
	qkvRoPEUnfused qkvRoPEPath = iota // MatMulQKV, then RoPEStoreKV
	qkvRoPEHalf                       // prefill: cuBLAS in the weight dtype, then rope_qk_store_kv_<kv>_from_<dt>
	qkvRoPEV4                         // gemv_<dt>_v4_qkv_rope_<kv>_k<ks> (tensor cores)
	qkvRoPEV3                         // gemv_<dt>_v3_qkv_rope_<kv>_n<B> (ks = 4)
)

func (b *Backend) qkvRoPEPath(n int, ws []*Weight, cc *KVCache, headDim int) qkvRoPEPath {
	kvDim := cc.l.KVHeads * cc.l.HeadDim
	ropeShape := ws[1].rows == kvDim && ws[2].rows == kvDim && headDim == cc.l.HeadDim && headDim%2 == 0 && ws[0].rows%headDim == 0
	switch {
	case !b.opts.F32Intermediates && b.cublasShared(n, ws...) && ropeShape && headDim <= ropeMaxHeadDim:
		return qkvRoPEHalf
	case !b.opts.SeparateRoPE && ropeShape && b.gemvV4(n, ws...):
		return qkvRoPEV4
	case b.opts.SeparateRoPE || b.opts.GEMVv2 || b.gemvSplit() != 4 || !b.fusable(n, false, ws...) || ws[0].quantised() ||
		ws[0].rows%gemvRows != 0 || kvDim%gemvRows != 0 || !ropeShape:
		return qkvRoPEUnfused
	}
	return qkvRoPEV3
}

// qkvRoPEHalf is MatMulQKVRoPEStoreKV's prefill path (see there).
func (b *Backend) qkvRoPEHalf(qb, kb, vb, xb *Buffer, ws []*Weight, cc *KVCache, layer int, bt *model.Batch, headDim int, theta float32) {
	n, qCols, kvDim := bt.Len(), ws[0].rows, ws[1].rows
	checkQKV("MatMulQKVRoPEStoreKV", n, []*Buffer{qb, kb, vb}, xb, ws)
	d := b.prepareBatch("MatMulQKVRoPEStoreKV", cc, layer, bt, false, qb, kb, vb, xb)
	if n == 0 || !b.ok() {
		return
	}
	q16 := b.ensure(&b.qkvHalf, 2*int64(n)*int64(qCols+2*kvDim)) // (n, q_cols), then (n, kv_dim) twice
	k16 := q16 + cuda.DevicePtr(2*n*qCols)
	v16 := k16 + cuda.DevicePtr(2*n*kvDim)
	xp, t := b.cublasInput(xb, ws[0], n)
	for i, p := range []cuda.DevicePtr{q16, k16, v16} {
		b.cublasNT(p, t, xp, t, ws[i], n)
	}
	kvi := 1
	if cc.f32 {
		kvi = 0
	}
	l := cc.l
	b.launch(b.k.ropeStoreFrom[ws[0].wdt()-1][kvi], cuda.Dim3{X: n}, cuda.Dim3{X: 128},
		cuda.Ptr(qb.ptr), cuda.Ptr(q16), cuda.Ptr(k16), cuda.Ptr(v16), cuda.Ptr(cc.k), cuda.Ptr(cc.v),
		cuda.Ptr(d.pos), cuda.Ptr(d.rowTab), cuda.Ptr(d.tables),
		i32(qCols), i32(kvDim), i32(headDim), cuda.F32(theta),
		i32(layer), i32(l.NumBlocks), i32(l.BlockSize))
}

// MatMulSwiGLU: out = silu(x·gateᵀ)·(x·upᵀ) in one launch of gemv_<dt>_v3_glu (gemv_<dt>_v4_glu
// where gemvV4 says); else MatMul into out and tmp and SwiGLU. tmp (n, N) is scratch for the unfused path; it may be left as it was.
func (b *Backend) MatMulSwiGLU(out, tmp, x model.Buffer, gate, up model.Weight, n int) {
	ob, xb, wg, wu := buf(out), buf(x), wt(gate), wt(up)
	if !b.fusable(n, true, wg, wu) || wg.rows != wu.rows {
		b.MatMul(out, x, gate, n)
		b.MatMul(tmp, x, up, n)
		b.SwiGLU(out, out, tmp, n)
		return
	}
	checkRows("MatMulSwiGLU", n, ob, xb)
	if ob.cols != wg.rows || xb.cols != wg.cols || ob == xb {
		panic(fmt.Sprintf("gpu: MatMulSwiGLU: out (%d, %d) = x (%d, %d) · w%v ᵀ (out must not be x)", n, ob.cols, n, xb.cols, wg.shape))
	}
	if n == 0 || !b.ok() {
		return
	}
	if b.gemvV4(n, wg, wu) {
		b.gemv4GLU(ob.ptr, xb.ptr, wg, wu, n)
		return
	}
	if wg.quantised() {
		var f *cuda.Function
		switch wg.dtype {
		case tensor.Q4_K:
			f = b.k.gemvKGLU[0][batchWidth(n)]
		case tensor.Q5_K:
			f = b.k.gemvKGLU[1][batchWidth(n)]
		default: // Q8_0, Q4_0
			f = b.k.gemvQGLU[wg.qi()][batchWidth(n)]
		}
		b.launch(f, cuda.Dim3{X: ceilDiv(wg.rows, gemvRowsPerBlock)}, cuda.Dim3{X: gemvThreads},
			cuda.Ptr(ob.ptr), cuda.Ptr(xb.ptr), cuda.Ptr(wg.ptr), cuda.Ptr(wg.scales), cuda.Ptr(wu.ptr), cuda.Ptr(wu.scales), i32(n), i32(wg.rows), i32(wg.cols))
		return
	}
	if b.opts.GEMVv2 {
		b.launch(b.k.gemvGLU[wg.wdt()][batchWidth(n)], cuda.Dim3{X: ceilDiv(wg.rows, gemvRowsPerBlock)}, cuda.Dim3{X: gemvThreads},
			cuda.Ptr(ob.ptr), cuda.Ptr(xb.ptr), cuda.Ptr(wg.ptr), cuda.Ptr(wu.ptr), i32(n), i32(wg.rows), i32(wg.cols))
		return
	}
	grid, ki := gemvV3Grid(wg.rows, b.gemvSplit())
	b.launch(b.k.gemvGLU3[wg.wdt()][batchWidth(n)][ki], grid, cuda.Dim3{X: gemvThreads},
		cuda.Ptr(ob.ptr), cuda.Ptr(xb.ptr), cuda.Ptr(wg.ptr), cuda.Ptr(wu.ptr), i32(n), i32(wg.rows), i32(wg.cols))
}

// AddRMSNorm: x += y, then out = rmsnorm(x)·w, in one launch of add_rmsnorm_f32 where RMSNorm
// would run its v2 kernel (and Add its float4 one); else Add then RMSNorm. out may be y.
func (b *Backend) AddRMSNorm(out, x, y model.Buffer, w model.Weight, n int, eps float32) {
	b.addRMSNormTo(out, x, x, y, w, n, eps)
}

// addRMSNormTo is AddRMSNorm with the sum written to xout: xout = x + y, out = rmsnorm(xout)·w.
// xout is x, or another buffer (NormFolder's moving residual) which must not be out or y. Where
// add_rmsnorm_f32 does not apply and xout is not x, x is copied to xout (GatherRows) first.
func (b *Backend) addRMSNormTo(out, xout, x, y model.Buffer, w model.Weight, n int, eps float32) {
	ob, xo, xb, yb, ww := buf(out), buf(xout), buf(x), buf(y), wt(w)
	dim := xb.cols
	d4 := dim / 4
	checkRows("AddRMSNorm", n, ob, xo, xb, yb)
	if ob.cols != dim || xo.cols != dim || yb.cols != dim || ww.rows*ww.cols != dim || ww.dtype != tensor.F32 || ob == xb || ob == xo ||
		(xo != xb && xo == yb) {
		panic(fmt.Sprintf("gpu: AddRMSNorm: out (%d, %d), x (%d, %d) + y (%d, %d) into (%d, %d), w %v %v (want F32 (%d); out must not be x or the sum, the sum not y)",
			n, ob.cols, n, dim, n, yb.cols, n, xo.cols, ww.dtype, ww.shape, dim))
	}
	if b.opts.Naive || dim%4 != 0 || d4 > rmsnormMaxV*1024 {
		if xo != xb {
			rows := make([]int32, n)
			for i := range rows {
				rows[i] = int32(i)
			}
			b.GatherRows(xout, x, rows)
		}
		b.Add(xout, y, n)
		b.RMSNorm(out, xout, w, n, eps)
		return
	}
	if n == 0 || !b.ok() {
		return
	}
	threads := min(1024, (d4+31)/32*32) // as RMSNorm
	b.launch(b.k.addRMSNorm, cuda.Dim3{X: n}, cuda.Dim3{X: threads},
		cuda.Ptr(ob.ptr), cuda.Ptr(xo.ptr), cuda.Ptr(xb.ptr), cuda.Ptr(yb.ptr), cuda.Ptr(ww.ptr), i32(dim), cuda.F32(eps))
}

// The feed-forward block in one op (model.FFNMatMuler).
var _ model.FFNMatMuler = (*Backend)(nil)

// MatMulFFN: out = (silu(x·gateᵀ)·(x·upᵀ))·downᵀ. out (n, dim) may be x; h and tmp (n, ffn) are
// scratch.
//
// Prefill (more than 8 rows with cuBLAS; F16 or BF16 gate, up and down of one dtype, K and ffn
// multiples of 8): x is rounded to the weight dtype once, cuBLAS writes gate and up in that
// dtype into h's memory, swiglu_<dt> (kernels/swiglu.cu) turns them into h in place, and the
// down GEMM reads that h. Against MatMulSwiGLU then MatMul, which round x twice, write gate and
// up as fp32, read them back, write h as fp32 and round it again for the down GEMM, this moves
// 2·n·(3·dim + 8·ffn) bytes fewer: 7B at n = 2048, 0.41 GB of the 0.77 GB a layer that these
// steps move besides the weights and out (by count, not measured). The
// results differ by the rounding of gate and up to the weight dtype; h is rounded to it for the
// down GEMM either way.
//
// Elsewhere (decode's GEMV path; quantised or F32 weights; Options.F32Intermediates), MatMulSwiGLU
// then MatMul.
func (b *Backend) MatMulFFN(out, h, tmp, x model.Buffer, gate, up, down model.Weight, n int) {
	ob, hb, xb := buf(out), buf(h), buf(x)
	wg, wu, wd := wt(gate), wt(up), wt(down)
	if b.opts.F32Intermediates || !b.cublasShared(n, wg, wu) || !b.cublasShared(n, wd) || wd.dtype != wg.dtype || wg.rows%8 != 0 {
		b.MatMulSwiGLU(h, tmp, x, gate, up, n)
		b.MatMul(out, h, down, n)
		return
	}
	checkRows("MatMulFFN", n, ob, hb, xb)
	ffn := wg.rows
	if xb.cols != wg.cols || wu.rows != ffn || hb.cols != ffn || wd.cols != ffn || ob.cols != wd.rows || hb == xb || hb == ob {
		panic(fmt.Sprintf("gpu: MatMulFFN: out (%d, %d) = swiglu(x (%d, %d) · gate%v ᵀ, · up%v ᵀ) in h (%d, %d) · down%v ᵀ (h must not be x or out)",
			n, ob.cols, n, xb.cols, wg.shape, wu.shape, n, hb.cols, wd.shape))
	}
	if n == 0 || !b.ok() {
		return
	}
	// h's n fp32 rows hold gate and up in the weight dtype: gate (n, ffn) at the start, up
	// (n, ffn) after it, 16-byte aligned for swiglu's vectors (n·ffn is a multiple of 8).
	total := n * ffn
	g := hb.ptr
	u := g + cuda.DevicePtr(2*total)
	xp, t := b.cublasInput(xb, wg, n)
	b.cublasNT(g, t, xp, t, wg, n)
	b.cublasNT(u, t, xp, t, wu, n)
	b.launch(b.k.swigluHalf[wg.wdt()-1], gridFor(ceilDiv(total, 8), 256), cuda.Dim3{X: 256},
		cuda.Ptr(g), cuda.Ptr(g), cuda.Ptr(u), i32(total))
	b.cublasNT(ob.ptr, cuda.TypeF32, g, t, wd, n)
}
