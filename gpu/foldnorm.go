//go:build cuda || cudaemu

package gpu

import (
	"fmt"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// The residual add and RMSNorm folded into the GEMV after them (model.NormFolder): a decode step
// of one row loses a layer's two add_rmsnorm_f32 launches (kernels/gemv.cu, section "v3n").
var _ model.NormFolder = (*Backend)(nil)

// checkFold panics, naming op, unless the sum xout is a buffer of its own (not x or y) and the
// norm's output h is not xout or x: what model.NormFolder asks, whichever path runs.
func checkFold(op string, xo, h, xb, yb *Buffer) {
	if xo == xb || xo == yb || h == xo || h == xb {
		panic(fmt.Sprintf("gpu: %s: x + y must go to a buffer of its own, and h (AddRMSNorm's out) must not be x or the sum", op))
	}
}

// foldable reports whether the v3n kernels take x + y (n, K) normalised by norm into weights
// of K columns: one row (v4's tensor-core kernels take 2–8, cuBLAS more), not
// Options.SeparateNorm or Naive, a norm weight of K fp32. The callers add what their v3 kernel
// needs.
func (b *Backend) foldable(n int, xo, xb, yb *Buffer, nw *Weight, K int) bool {
	return n == 1 && !b.opts.SeparateNorm && !b.opts.Naive && nw.dtype == tensor.F32 && nw.rows*nw.cols == K &&
		xb.cols == K && yb.cols == K && xo.cols == K
}

// AddRMSNormQKVRoPEStoreKV: xout = x + y, h = rmsnorm(xout)·norm, then MatMulQKVRoPEStoreKV on h
// — in one launch of gemv_<dt>_v3n_qkv_rope_<kv>_n1 where the step is one row and
// MatMulQKVRoPEStoreKV would launch gemv_<dt>_v3_qkv_rope_<kv>_n1 (h is not written then);
// else AddRMSNorm's kernel into xout and h, then MatMulQKVRoPEStoreKV.
func (b *Backend) AddRMSNormQKVRoPEStoreKV(xout, h, x, y model.Buffer, norm model.Weight, eps float32, q, k, v model.Buffer, wq, wk, wv model.Weight, c model.KVCache, layer int, bt *model.Batch, headDim int, theta float32) {
	n := bt.Len()
	xo, xb, yb, nw := buf(xout), buf(x), buf(y), wt(norm)
	qb, kb, vb, cc := buf(q), buf(k), buf(v), kvc(c)
	ws := []*Weight{wt(wq), wt(wk), wt(wv)}
	checkFold("AddRMSNormQKVRoPEStoreKV", xo, buf(h), xb, yb)
	if !b.foldable(n, xo, xb, yb, nw, ws[0].cols) || b.qkvRoPEPath(n, ws, cc, headDim) != qkvRoPEV3 {
		b.addRMSNormTo(h, xout, x, y, norm, n, eps)
		b.MatMulQKVRoPEStoreKV(q, k, v, h, wq, wk, wv, c, layer, bt, headDim, theta)
		return
	}
	checkRows("AddRMSNormQKVRoPEStoreKV", n, xo, xb, yb)
	checkQKV("AddRMSNormQKVRoPEStoreKV", n, []*Buffer{qb, kb, vb}, xb, ws)
	checkQKV("AddRMSNormQKVRoPEStoreKV", n, []*Buffer{qb, kb, vb}, yb, ws) // y and the sum are inputs too
	checkQKV("AddRMSNormQKVRoPEStoreKV", n, []*Buffer{qb, kb, vb}, xo, ws)
	d := b.prepareBatch("AddRMSNormQKVRoPEStoreKV", cc, layer, bt, false, qb, kb, vb, xb)
	if !b.ok() {
		return
	}
	kvi := 1
	if cc.f32 {
		kvi = 0
	}
	l, kvDim := cc.l, ws[1].rows
	grid, _ := gemvV3Grid(ws[0].rows+2*kvDim, 4)
	b.launch(b.k.gemvQKVRoPENorm[ws[0].wdt()][kvi], grid, cuda.Dim3{X: gemvThreads},
		cuda.Ptr(qb.ptr), cuda.Ptr(kb.ptr), cuda.Ptr(vb.ptr), cuda.Ptr(xo.ptr), cuda.Ptr(xb.ptr), cuda.Ptr(yb.ptr), cuda.Ptr(nw.ptr),
		cuda.Ptr(ws[0].ptr), cuda.Ptr(ws[1].ptr), cuda.Ptr(ws[2].ptr),
		cuda.Ptr(cc.k), cuda.Ptr(cc.v), cuda.Ptr(d.pos), cuda.Ptr(d.rowTab), cuda.Ptr(d.tables),
		i32(n), i32(ws[0].rows), i32(kvDim), i32(xb.cols), i32(headDim), cuda.F32(theta),
		i32(layer), i32(l.NumBlocks), i32(l.BlockSize), cuda.F32(eps))
}

// AddRMSNormFFN: xout = x + y, h = rmsnorm(xout)·norm, then MatMulFFN on h — the gate/up
// projections and SwiGLU in one launch of gemv_<dt>_v3n_glu_n1 where the step is one row and
// MatMulSwiGLU would launch gemv_<dt>_v3_glu_n1_k4 (h is not written then), then the down
// projection; else AddRMSNorm's kernel into xout and h, then MatMulFFN.
func (b *Backend) AddRMSNormFFN(xout, h, x, y model.Buffer, norm model.Weight, eps float32, out, hb, tmp model.Buffer, gate, up, down model.Weight, n int) {
	xo, xb, yb, nw, hbb := buf(xout), buf(x), buf(y), wt(norm), buf(hb)
	wg, wu := wt(gate), wt(up)
	checkFold("AddRMSNormFFN", xo, buf(h), xb, yb)
	if !b.foldable(n, xo, xb, yb, nw, wg.cols) || !b.fusable(n, true, wg, wu) || wg.rows != wu.rows || wg.quantised() ||
		b.gemvV4(n, wg, wu) || b.opts.GEMVv2 || b.gemvSplit() != 4 {
		b.addRMSNormTo(h, xout, x, y, norm, n, eps)
		b.MatMulFFN(out, hb, tmp, h, gate, up, down, n)
		return
	}
	checkRows("AddRMSNormFFN", n, xo, xb, yb, hbb)
	if hbb.cols != wg.rows || hbb == xb || hbb == yb || hbb == xo {
		panic(fmt.Sprintf("gpu: AddRMSNormFFN: hb (%d, %d) = swiglu(x (%d, %d) · gate%v ᵀ, · up%v ᵀ) (hb must not be x, y or xout)",
			n, hbb.cols, n, xb.cols, wg.shape, wu.shape))
	}
	if !b.ok() {
		return
	}
	grid, _ := gemvV3Grid(wg.rows, 4)
	b.launch(b.k.gemvGLUNorm[wg.wdt()], grid, cuda.Dim3{X: gemvThreads},
		cuda.Ptr(hbb.ptr), cuda.Ptr(xo.ptr), cuda.Ptr(xb.ptr), cuda.Ptr(yb.ptr), cuda.Ptr(nw.ptr), cuda.Ptr(wg.ptr), cuda.Ptr(wu.ptr),
		i32(n), i32(wg.rows), i32(wg.cols), cuda.F32(eps))
	b.MatMul(out, hb, down, n)
}
