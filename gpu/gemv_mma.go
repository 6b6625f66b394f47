//go:build cuda || cudaemu

package gpu

import (
	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/tensor"
)

// GEMV v4 (kernels/gemv_mma.cu): decode matmuls of 2–8 activation rows on the tensor cores.
// The n = 8 GEMV v3 read 41–61% of the copy bandwidth on 7B's shapes where one row read 79–100%
// (H100, bench/results/gpu-h100-2026-11-28-run2): its fp32 FMAs and its x reads through L1 grow
// with the rows, the weights' bytes do not. v4 gives each 16-row tile's 16 × 8 products to
// mma.sync, the batch rows as the mma's 8 columns, with x split into fp16/bf16 parts so that
// its accuracy stays fp32's; Q8_0 and Q4_0 weights too, their quants exact in fp16 and scaled
// per block after the mma. MatMul, MatMulQKV, MatMulSwiGLU and MatMulQKVRoPEStoreKV (fp16/bf16)
// take it where gemvV4 says; one row stays on v3 (v2 quantised; Options.GEMVv4OneRow moves it),
// and Options.GEMVv3 keeps every step on those for comparisons.

// Constants of kernels/gemv_mma.cu.
const (
	gemv4Tile  = 16 // GEMV4_TILE: weight rows a block
	gemv4Chunk = 32 // GEMV4_CHUNK: K must be a multiple
)

// gemvV4 reports whether m rows of x times each of ws run GEMV v4: F16, BF16, Q8_0 or Q4_0
// weights of one dtype and K, K a multiple of 32, 2 ≤ m ≤ 8 (1 ≤ m under Options.GEMVv4OneRow),
// and none of Options.Naive, GEMVv2, GEMVv3.
func (b *Backend) gemvV4(m int, ws ...*Weight) bool {
	o := b.opts
	if o.Naive || o.GEMVv2 || o.GEMVv3 || m > gemvMaxBatch || m < 2 && !(o.GEMVv4OneRow && m == 1) {
		return false
	}
	d, K := ws[0].dtype, ws[0].cols
	switch d {
	case tensor.F16, tensor.BF16, tensor.Q8_0, tensor.Q4_0:
	default:
		return false
	}
	if K%gemv4Chunk != 0 {
		return false
	}
	for _, w := range ws {
		if w.dtype != d || w.cols != K || len(w.shape) != 2 {
			return false
		}
	}
	return true
}

// gemv4Split is v4's warps per tile (ks) for a grid of tiles, and its index in the kernel
// tables (4 → 0, 8 → 1): 4 where that gives the SMs 16 warps each, else 8 (Options.GEMVv4Split
// forces one). 7B on an H100 (132 SMs): 4096-row matrices take 8 (256 tiles, 2048 warps),
// 11008 rows and more take 4. The bits do not depend on it.
func (b *Backend) gemv4Split(tiles int) (ks, ki int) {
	switch b.opts.GEMVv4Split {
	case 4:
		return 4, 0
	case 8:
		return 8, 1
	}
	if tiles*4 >= 16*b.sms {
		return 4, 0
	}
	return 8, 1
}

// gemv4 launches gemv_<dt>_v4_k<ks>: out (m, N) = x (m, K) · wᵀ, m ≤ 8. (Each launch below
// comes in two forms, a matrix being one pointer or, quantised, its quants' and its scales'.)
func (b *Backend) gemv4(out, x cuda.DevicePtr, w *Weight, m int) {
	tiles := ceilDiv(w.rows, gemv4Tile)
	ks, ki := b.gemv4Split(tiles)
	if w.quantised() {
		b.launch(b.k.gemvQV4[w.qi()][ki], cuda.Dim3{X: tiles}, cuda.Dim3{X: 32 * ks}, cuda.Ptr(out), cuda.Ptr(x), cuda.Ptr(w.ptr), cuda.Ptr(w.scales), i32(m), i32(w.rows), i32(w.cols))
		return
	}
	b.launch(b.k.gemvV4[w.wdt()-1][ki], cuda.Dim3{X: tiles}, cuda.Dim3{X: 32 * ks}, cuda.Ptr(out), cuda.Ptr(x), cuda.Ptr(w.ptr), i32(m), i32(w.rows), i32(w.cols))
}

// gemv4QKV launches gemv_<dt>_v4_qkv_k<ks>: q, k, v (m, rows of each) = x (m, K) · ws[i]ᵀ.
func (b *Backend) gemv4QKV(q, k, v, x cuda.DevicePtr, ws []*Weight, m int) {
	tiles := gemv4Tiles(ws)
	ks, ki := b.gemv4Split(tiles)
	if ws[0].quantised() {
		b.launch(b.k.gemvQQKV4[ws[0].qi()][ki], cuda.Dim3{X: tiles}, cuda.Dim3{X: 32 * ks}, cuda.Ptr(q), cuda.Ptr(k), cuda.Ptr(v), cuda.Ptr(x),
			cuda.Ptr(ws[0].ptr), cuda.Ptr(ws[0].scales), cuda.Ptr(ws[1].ptr), cuda.Ptr(ws[1].scales), cuda.Ptr(ws[2].ptr), cuda.Ptr(ws[2].scales),
			i32(m), i32(ws[0].rows), i32(ws[1].rows), i32(ws[2].rows), i32(ws[0].cols))
		return
	}
	b.launch(b.k.gemvQKV4[ws[0].wdt()-1][ki], cuda.Dim3{X: tiles}, cuda.Dim3{X: 32 * ks}, cuda.Ptr(q), cuda.Ptr(k), cuda.Ptr(v), cuda.Ptr(x), cuda.Ptr(ws[0].ptr), cuda.Ptr(ws[1].ptr), cuda.Ptr(ws[2].ptr),
		i32(m), i32(ws[0].rows), i32(ws[1].rows), i32(ws[2].rows), i32(ws[0].cols))
}

// gemv4GLU launches gemv_<dt>_v4_glu_k<ks>: out (m, N) = silu(x·gateᵀ)·(x·upᵀ).
func (b *Backend) gemv4GLU(out, x cuda.DevicePtr, gate, up *Weight, m int) {
	tiles := ceilDiv(gate.rows, gemv4Tile)
	ks, ki := b.gemv4Split(tiles)
	if gate.quantised() {
		b.launch(b.k.gemvQGLU4[gate.qi()][ki], cuda.Dim3{X: tiles}, cuda.Dim3{X: 32 * ks}, cuda.Ptr(out), cuda.Ptr(x), cuda.Ptr(gate.ptr), cuda.Ptr(gate.scales), cuda.Ptr(up.ptr), cuda.Ptr(up.scales),
			i32(m), i32(gate.rows), i32(gate.cols))
		return
	}
	b.launch(b.k.gemvGLU4[gate.wdt()-1][ki], cuda.Dim3{X: tiles}, cuda.Dim3{X: 32 * ks}, cuda.Ptr(out), cuda.Ptr(x), cuda.Ptr(gate.ptr), cuda.Ptr(up.ptr), i32(m), i32(gate.rows), i32(gate.cols))
}

// gemv4Tiles is the q | k | v grid of the fused v4 kernels: each matrix's tiles.
func gemv4Tiles(ws []*Weight) int {
	return ceilDiv(ws[0].rows, gemv4Tile) + ceilDiv(ws[1].rows, gemv4Tile) + ceilDiv(ws[2].rows, gemv4Tile)
}
