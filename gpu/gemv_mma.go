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
// mma.sync, the batch rows as the mma's 8 columns, with x split in two fp16/bf16 parts so that
// its accuracy stays fp32's. MatMul, MatMulQKV, MatMulSwiGLU and MatMulQKVRoPEStoreKV take it
// where gemvV4 says; one row stays on v3 (Options.GEMVv4OneRow moves it), and
// Options.GEMVv3 keeps every step on v3 for comparisons.

// Constants of kernels/gemv_mma.cu.
const (
	gemv4Tile  = 16 // GEMV4_TILE: weight rows a block
	gemv4Chunk = 32 // GEMV4_CHUNK: K must be a multiple
)

// gemvV4 reports whether m rows of x times each of ws run GEMV v4: F16 or BF16 weights of one
// dtype and K, K a multiple of 32, 2 ≤ m ≤ 8 (1 ≤ m under Options.GEMVv4OneRow), and none of
// Options.Naive, GEMVv2, GEMVv3.
func (b *Backend) gemvV4(m int, ws ...*Weight) bool {
	o := b.opts
	if o.Naive || o.GEMVv2 || o.GEMVv3 || m > gemvMaxBatch || m < 2 && !(o.GEMVv4OneRow && m == 1) {
		return false
	}
	d, K := ws[0].dtype, ws[0].cols
	if (d != tensor.F16 && d != tensor.BF16) || K%gemv4Chunk != 0 {
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

// gemv4 launches gemv_<dt>_v4_k<ks>: out (m, N) = x (m, K) · wᵀ, m ≤ 8.
func (b *Backend) gemv4(out, x cuda.DevicePtr, w *Weight, m int) {
	tiles := ceilDiv(w.rows, gemv4Tile)
	ks, ki := b.gemv4Split(tiles)
	b.launch(b.k.gemvV4[w.wdt()-1][ki], cuda.Dim3{X: tiles}, cuda.Dim3{X: 32 * ks},
		cuda.Ptr(out), cuda.Ptr(x), cuda.Ptr(w.ptr), i32(m), i32(w.rows), i32(w.cols))
}

// gemv4Tiles is the q | k | v grid of the fused v4 kernels: each matrix's tiles.
func gemv4Tiles(ws []*Weight) int {
	return ceilDiv(ws[0].rows, gemv4Tile) + ceilDiv(ws[1].rows, gemv4Tile) + ceilDiv(ws[2].rows, gemv4Tile)
}
