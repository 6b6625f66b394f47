//go:build cuda || cudaemu

package gpu

import (
	"fmt"
	"math/bits"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// Constants of kernels/gemv.cu.
const (
	gemvThreads      = 128
	gemvRows         = 4  // GEMV_ROWS: weight rows per warp
	gemvRowsPerBlock = 16 // GEMV_ROWS_PER_BLOCK
	gemvMaxBatch     = 8  // widest compiled batch (gemv_<dt>_v2_n8)
)

// gemvSplit is v3's ks: Options.GEMVSplit when set, else 4, whatever the matrix. The second
// GPU check (bench/results/gpu-h100-2026-11-28-run2, H100, n = 1) timed every split of 7B's
// shapes: ks = 4 was fastest or within the run's ±4% noise of it for all of them — 4096×4096
// 2380 GB/s (ks 1: 2109), 11008×4096 2795 (ks 1: 2619), 32000×4096 3030 (ks 1: 2949), the fused
// gate/up 2951 (ks 1: 2684), 4096×11008 2545 against ks 2's 2666 — so it is the default for every
// shape (an earlier rule, which gave 11008 or more rows ks = 1, measured 3–9% slower there).
func (b *Backend) gemvSplit() int {
	if k := b.opts.GEMVSplit; k == 1 || k == 2 || k == 4 {
		return k
	}
	return 4
}

// gemvV3Grid is v3's grid for N rows split over ks warps per row group, and ks's index in the
// kernel tables (1, 2, 4 → 0, 1, 2).
func gemvV3Grid(N, ks int) (cuda.Dim3, int) {
	return cuda.Dim3{X: ceilDiv(N*ks, gemvRowsPerBlock)}, bits.Len(uint(ks)) - 1
}

// MatMul: out[i,r] = Σ_k x[i,k]·w[r,k]. out (n, N), x (n, K), w (N, K). out is not x.
//
// Path (kernels/gemv.cu, kernels/gemm.cu):
//   - n ≤ 8: gemv_<dt>_v3_n{1,2,4,8} (weights streamed once, 16-byte loads, K split over
//     1–4 warps per row group; v2 under Options.GEMVv2); for 2–8 rows of F16/BF16 weights,
//     gemv_<dt>_v4 on the tensor cores (gemv_mma.go);
//   - n > 8 with cuBLAS: x rounded to the weight dtype (convert_f32_to_<dt>; F32 weights use x
//     as is), then cublasGemmEx with fp32 accumulation and fp32 output;
//   - n > 8 without cuBLAS: the n ≤ 8 kernel over 8-row slices;
//   - K not a multiple of the 16-byte vector, or Options.Naive: gemv_<dt>_v1;
//   - quantised weights (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K): the same choices with their kernels
//     (matMulQuant).
func (b *Backend) MatMul(out, x model.Buffer, w model.Weight, n int) {
	ob, xb, ww := buf(out), buf(x), wt(w)
	checkRows("MatMul", n, ob, xb)
	if ob.cols != ww.rows || xb.cols != ww.cols || ob == xb || len(ww.shape) != 2 {
		panic(fmt.Sprintf("gpu: MatMul: out (%d, %d) = x (%d, %d) · w%v ᵀ (out must not be x)", n, ob.cols, n, xb.cols, ww.shape))
	}
	if n == 0 || !b.ok() {
		return
	}
	if ww.quantised() {
		b.matMulQuant(ob, xb, ww, n)
		return
	}
	N, K, d := ww.rows, ww.cols, ww.wdt()
	vec := 8
	if ww.dtype == tensor.F32 {
		vec = 4
	}
	if b.opts.Naive || K%vec != 0 {
		b.launch(b.k.gemvV1[d], cuda.Dim3{X: ceilDiv(N, 8), Y: n}, cuda.Dim3{X: 256},
			cuda.Ptr(ob.ptr), cuda.Ptr(xb.ptr), cuda.Ptr(ww.ptr), i32(n), i32(N), i32(K))
		return
	}
	if n > gemvMaxBatch && b.blas != nil {
		b.gemmCublas(ob, xb, ww, n)
		return
	}
	for i := 0; i < n; i += gemvMaxBatch {
		m := min(gemvMaxBatch, n-i)
		b.gemv(ob.row(i), xb.row(i), ww, m)
	}
}

// gemv launches gemv_<dt>_v4 where gemvV4 says (2–8 rows of F16/BF16 weights), else
// gemv_<dt>_v3_n<B> (gemv_<dt>_v2_n<B> under Options.GEMVv2) for m ≤ 8 rows: out (m, N), x (m, K).
func (b *Backend) gemv(out, x cuda.DevicePtr, w *Weight, m int) {
	if b.gemvV4(m, w) {
		b.gemv4(out, x, w, m)
		return
	}
	j := batchWidth(m)
	if b.opts.GEMVv2 {
		b.launch(b.k.gemvV2[w.wdt()][j], cuda.Dim3{X: ceilDiv(w.rows, gemvRowsPerBlock)}, cuda.Dim3{X: gemvThreads},
			cuda.Ptr(out), cuda.Ptr(x), cuda.Ptr(w.ptr), i32(m), i32(w.rows), i32(w.cols))
		return
	}
	grid, ki := gemvV3Grid(w.rows, b.gemvSplit())
	b.launch(b.k.gemvV3[w.wdt()][j][ki], grid, cuda.Dim3{X: gemvThreads},
		cuda.Ptr(out), cuda.Ptr(x), cuda.Ptr(w.ptr), i32(m), i32(w.rows), i32(w.cols))
}

// matMulQuant is MatMul for quantised weights (kernels/gemv.cu: Q8_0, Q4_0; kernels/kquant.cu:
// Q4_K, Q5_K, Q6_K): gemv_<q>_v2_n{1,2,4,8}
// over 8-row slices; for more than 8 rows with cuBLAS, the matrix dequantised to fp16 scratch
// (dequant_<q>_f16: under 3 bytes moved per weight, small beside a prefill GEMM's arithmetic)
// and cuBLAS's fp16 path; under Options.Naive, gemv_<q>_v1. Slices of 2–8 rows of Q8_0 or Q4_0
// run GEMV v4 (gemv_mma.go).
func (b *Backend) matMulQuant(out, x *Buffer, w *Weight, n int) {
	N, K, q := w.rows, w.cols, w.qi()
	if b.opts.Naive {
		b.launch(b.k.gemvQV1[q], cuda.Dim3{X: ceilDiv(N, 8), Y: n}, cuda.Dim3{X: 256},
			cuda.Ptr(out.ptr), cuda.Ptr(x.ptr), cuda.Ptr(w.ptr), cuda.Ptr(w.scales), i32(n), i32(N), i32(K))
		return
	}
	if n > gemvMaxBatch && b.blas != nil {
		total := N * K // < 2³¹, checked at Upload
		wh := b.ensure(&b.wHalf, int64(total)*2)
		if !b.ok() {
			return
		}
		b.launch(b.k.dequantQ[q], gridFor(total, 256), cuda.Dim3{X: 256}, cuda.Ptr(wh), cuda.Ptr(w.ptr), cuda.Ptr(w.scales), i32(total))
		b.wDeq = Weight{name: w.name, shape: w.shape, dtype: tensor.F16, rows: N, cols: K, ptr: wh}
		b.gemmCublas(out, x, &b.wDeq, n)
		return
	}
	for i := 0; i < n; i += gemvMaxBatch {
		m := min(gemvMaxBatch, n-i)
		if b.gemvV4(m, w) {
			b.gemv4(out.row(i), x.row(i), w, m)
			continue
		}
		j := 0 // batch width index: 1, 2, 4, 8
		for 1<<j < m {
			j++
		}
		b.launch(b.k.gemvQV2[q][j], cuda.Dim3{X: ceilDiv(N, gemvRowsPerBlock)}, cuda.Dim3{X: gemvThreads},
			cuda.Ptr(out.row(i)), cuda.Ptr(x.row(i)), cuda.Ptr(w.ptr), cuda.Ptr(w.scales), i32(m), i32(N), i32(K))
	}
}

// gemmCublas computes out (n, N) = x (n, K) · wᵀ with cuBLAS.
func (b *Backend) gemmCublas(out, x *Buffer, w *Weight, n int) {
	xp, t := b.cublasInput(x, w, n)
	b.cublasNT(out.ptr, cuda.TypeF32, xp, t, w, n)
}

// cublasInput is x (n, K) as cuBLAS takes it for w: rounded to w's dtype in the xHalf scratch
// (convert_f32_to_<dt>) for F16 and BF16 weights, x itself for F32 ones. The scratch holds it
// until the next cublasInput.
func (b *Backend) cublasInput(x *Buffer, w *Weight, n int) (cuda.DevicePtr, cuda.DataType) {
	if w.dtype != tensor.F16 && w.dtype != tensor.BF16 {
		return x.ptr, cuda.TypeF32
	}
	total := n * x.cols
	xp := b.ensure(&b.xHalf, int64(total)*2)
	if !b.ok() {
		return 0, 0
	}
	f, t := b.k.toF16, cuda.TypeF16
	if w.dtype == tensor.BF16 {
		f, t = b.k.toBF16, cuda.TypeBF16
	}
	b.launch(f, gridFor(total, 256), cuda.Dim3{X: 256}, cuda.Ptr(xp), cuda.Ptr(x.ptr), i32(total))
	return xp, t
}

// cublasNT computes out (n, N) = x (n, K) · wᵀ with cuBLAS, x of type t (w's, or F32 for F32
// weights) and out of type ot (F32, or t): cublasGemmEx with fp32 accumulation.
func (b *Backend) cublasNT(out cuda.DevicePtr, ot cuda.DataType, x cuda.DevicePtr, t cuda.DataType, w *Weight, n int) {
	if !b.ok() {
		return
	}
	N, K := w.rows, w.cols
	b.flushDirect() // cuBLAS is not recorded: the step runs directly from here
	if err := b.blas.MatMulNT(n, N, K, x, t, w.ptr, t, out, ot); err != nil {
		b.fail(fmt.Errorf("gpu: MatMul (%d, %d)·(%d, %d)ᵀ: %w", n, K, N, K, err))
	}
}

// MatMulV1 is MatMul through the naive gemm_<dt>_v1 kernel (one thread per output): the
// reference the fast paths are tested against.
func (b *Backend) MatMulV1(out, x model.Buffer, w model.Weight, n int) {
	ob, xb, ww := buf(out), buf(x), wt(w)
	checkRows("MatMulV1", n, ob, xb)
	if ob.cols != ww.rows || xb.cols != ww.cols || ob == xb || len(ww.shape) != 2 {
		panic(fmt.Sprintf("gpu: MatMulV1: out (%d, %d) = x (%d, %d) · w%v ᵀ (out must not be x)", n, ob.cols, n, xb.cols, ww.shape))
	}
	if n == 0 || !b.ok() {
		return
	}
	if ww.quantised() { // gemv_<q>_v1 is the naive kernel
		b.launch(b.k.gemvQV1[ww.qi()], cuda.Dim3{X: ceilDiv(ww.rows, 8), Y: n}, cuda.Dim3{X: 256},
			cuda.Ptr(ob.ptr), cuda.Ptr(xb.ptr), cuda.Ptr(ww.ptr), cuda.Ptr(ww.scales), i32(n), i32(ww.rows), i32(ww.cols))
		return
	}
	b.launch(b.k.gemmV1[ww.wdt()], cuda.Dim3{X: ceilDiv(ww.rows, 128), Y: n}, cuda.Dim3{X: 128},
		cuda.Ptr(ob.ptr), cuda.Ptr(xb.ptr), cuda.Ptr(ww.ptr), i32(n), i32(ww.rows), i32(ww.cols))
}
