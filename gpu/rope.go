//go:build cuda || cudaemu

package gpu

import (
	"fmt"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/model"
)

// ropeMaxHeadDim is 2·ROPE_MAX_HALF in kernels/rope.cu.
const ropeMaxHeadDim = 1024

// RoPE rotates, in place, each head of each row i by position pos[i], interleaved pairs.
// x (len(pos), heads·headDim). kernels/rope.cu (rope_f32): the angles are computed as the cpu
// backend computes them, so both rotate identically up to the last bit.
func (b *Backend) RoPE(x model.Buffer, headDim int, pos []int32, theta float32) {
	xb := buf(x)
	checkRows("RoPE", len(pos), xb)
	if headDim <= 0 || headDim%2 != 0 || xb.cols%headDim != 0 || headDim > ropeMaxHeadDim {
		panic(fmt.Sprintf("gpu: RoPE: head_dim %d does not divide a row of %d into even heads (≤ %d)", headDim, xb.cols, ropeMaxHeadDim))
	}
	if len(pos) == 0 || !b.ok() {
		return
	}
	p := b.upload(&b.ropePos, pos)
	b.launch(b.k.rope, cuda.Dim3{X: len(pos)}, cuda.Dim3{X: 128},
		cuda.Ptr(xb.ptr), cuda.Ptr(p), i32(xb.cols), i32(headDim), cuda.F32(theta))
}

// The fused prologue of the attention block (one launch per layer instead of three) is
// model.RoPEStorer; Forward uses it when the backend has it.
var _ model.RoPEStorer = (*Backend)(nil)

// RoPEStoreKV implements RoPEStorer with kernels/rope.cu's rope_qk_store_kv_<kv>.
// q (B, heads·head_dim); k, v (B, kv_heads·head_dim).
func (b *Backend) RoPEStoreKV(q, k, v model.Buffer, c model.KVCache, layer int, bt *model.Batch, headDim int, theta float32) {
	qb, kb, vb, cc := buf(q), buf(k), buf(v), kvc(c)
	kvDim := cc.l.KVHeads * cc.l.HeadDim
	if headDim != cc.l.HeadDim || headDim%2 != 0 || headDim > ropeMaxHeadDim || qb.cols%headDim != 0 || kb.cols != kvDim || vb.cols != kvDim {
		panic(fmt.Sprintf("gpu: RoPEStoreKV: q (%d, %d), k (%d, %d), v (%d, %d), head_dim %d, into kv_heads·head_dim %d·%d",
			bt.Len(), qb.cols, bt.Len(), kb.cols, bt.Len(), vb.cols, headDim, cc.l.KVHeads, cc.l.HeadDim))
	}
	d := b.prepareBatch("RoPEStoreKV", cc, layer, bt, false, qb, kb, vb)
	if bt.Len() == 0 || !b.ok() {
		return
	}
	f := b.k.ropeStoreF16
	if cc.f32 {
		f = b.k.ropeStoreF32
	}
	l := cc.l
	b.launch(f, cuda.Dim3{X: bt.Len()}, cuda.Dim3{X: 128},
		cuda.Ptr(qb.ptr), cuda.Ptr(kb.ptr), cuda.Ptr(vb.ptr), cuda.Ptr(cc.k), cuda.Ptr(cc.v),
		cuda.Ptr(d.pos), cuda.Ptr(d.rowTab), cuda.Ptr(d.tables),
		i32(qb.cols), i32(kvDim), i32(headDim), cuda.F32(theta),
		i32(layer), i32(l.NumBlocks), i32(l.BlockSize))
}
