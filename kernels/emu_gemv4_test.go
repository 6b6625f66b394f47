package kernels

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// ---- GEMV v4 (kernels/gemv_mma.cu; gpu/gemv_mma.go: a block per 16-row tile, 32·ks threads)

// testGEMVMMA checks the tensor-core GEMV (fp16, bf16; Q8_0 and Q4_0 as resident) against the
// cpu backend on shapes with partial tiles,
// K groups left empty or uneven (K = 32 … 544: 1 to 17 chunks over 8 groups) and x at three
// scales (1e-5: fp16 subnormals, where the lo part needs its scaling); that its bits do not
// depend on the split (ks 4 and 8) and that the fused q/k/v kernel gives the separate launches'
// bits; and that nothing is written beyond row n. The tolerance is the fp32 GEMV's: x rounded
// to fp16 once (no lo part) misses it by ~50×, to bf16 by ~400×.
func testGEMVMMA(t *testing.T, e *emulator) {
	r := rand.New(rand.NewPCG(31, 31))
	for _, d := range []tensor.DType{tensor.F16, tensor.BF16, tensor.Q8_0, tensor.Q4_0} {
		dt := kvName(d)
		quant := d == tensor.Q8_0 || d == tensor.Q4_0
		for _, c := range []struct {
			n, N0, N1, N2, K int
			scale            float32
		}{
			{1, 16, 16, 16, 32, 1}, {2, 40, 8, 8, 96, 1}, {3, 17, 5, 33, 288, 1},
			{8, 48, 16, 16, 64, 1}, {5, 16, 16, 32, 544, 1e-5}, {8, 9, 7, 3, 32, 30},
		} {
			t.Run(fmt.Sprintf("%v/%dx%d+%d+%dx%d/x%g", d, c.n, c.N0, c.N1, c.N2, c.K, c.scale), func(t *testing.T) {
				x := normal(r, c.n*c.K, c.scale)
				be := newCPU(t)
				xb, _ := hostBuf(t, be, c.n, c.K, x)
				ns := []int{c.N0, c.N1, c.N2}
				// ws: the weights as the kernels see them (float rounded, or quantised and
				// dequantised exactly); enc: as they go to the device (Q8_0, Q4_0 repacked as
				// gpu/upload.go does: quants, then the scales).
				var ws, want [3][]float32
				var enc [3][]byte
				for i, N := range ns {
					if quant {
						q := tensor.Encode(d, normal(r, N*c.K, 1))
						ws[i] = make([]float32, N*c.K)
						tensor.Decode(ws[i], d, q)
						enc[i] = repackQuantForTest(d, q, N, c.K)
					} else {
						ws[i] = roundTo(d, normal(r, N*c.K, 1))
						enc[i] = tensor.Encode(d, ws[i])
					}
					var ob model.Buffer
					ob, want[i] = hostBuf(t, be, c.n, N, nil)
					be.MatMul(ob, xb, upload(t, be, tensor.F32, N, c.K, ws[i]), c.n)
				}
				// The CPU's SwiGLU of gate (W0's first N1 rows) and up (W1).
				gate, gw := hostBuf(t, be, c.n, c.N1, nil)
				be.MatMul(gate, xb, upload(t, be, tensor.F32, c.N1, c.K, ws[0][:c.N1*c.K]), c.n)
				up, _ := hostBuf(t, be, c.n, c.N1, want[1])
				be.SwiGLU(gate, gate, up, c.n)

				var plain [2][3][]byte // by split: each matrix's own launch
				for si, ks := range []int{4, 8} {
					s := &script{}
					xd := s.buf(f32Bytes(x))
					// mat is a matrix's kernel parameters: its pointer, or its quants' and scales'.
					mat := func(data []byte, rows int) []arg {
						b := s.buf(data)
						if quant {
							return []arg{ptr(b), ptrAt(b, len(data)-rows*c.K/32*2)}
						}
						return []arg{ptr(b)}
					}
					var mats [3][]arg
					var outs, qkv [3]dev
					var gotPlain, gotQKV [3]*[]byte
					for i, N := range ns {
						mats[i] = mat(enc[i], N)
						outs[i] = s.buf(f32Bytes(nanFill((c.n + 1) * N))) // a row beyond n stays NaN
						qkv[i] = s.buf(f32Bytes(nanFill(c.n * N)))
						s.launch(fmt.Sprintf("gemv_%s_v4_k%d", dt, ks), d1(ceilDiv(N, 16)), d1(32*ks),
							slices.Concat([]arg{ptr(outs[i]), ptr(xd)}, mats[i], []arg{i32(c.n), i32(N), i32(c.K)})...)
						gotPlain[i] = s.read(outs[i])
					}
					s.launch(fmt.Sprintf("gemv_%s_v4_qkv_k%d", dt, ks), d1(ceilDiv(c.N0, 16)+ceilDiv(c.N1, 16)+ceilDiv(c.N2, 16)), d1(32*ks),
						slices.Concat([]arg{ptr(qkv[0]), ptr(qkv[1]), ptr(qkv[2]), ptr(xd)}, mats[0], mats[1], mats[2],
							[]arg{i32(c.n), i32(c.N0), i32(c.N1), i32(c.N2), i32(c.K)})...)
					for i := range qkv {
						gotQKV[i] = s.read(qkv[i])
					}
					glu := s.buf(f32Bytes(nanFill(c.n * c.N1)))
					// W0's first N1 rows: the first N1 rows of its quants and of its scales.
					top := enc[0][:c.N1*c.K*len(enc[0])/(c.N0*c.K)]
					if quant {
						qb := len(enc[0]) - c.N0*c.K/32*2 // W0's quant bytes
						top = slices.Concat(enc[0][:qb*c.N1/c.N0], enc[0][qb:qb+c.N1*c.K/32*2])
					}
					s.launch(fmt.Sprintf("gemv_%s_v4_glu_k%d", dt, ks), d1(ceilDiv(c.N1, 16)), d1(32*ks),
						slices.Concat([]arg{ptr(glu), ptr(xd)}, mat(top, c.N1), mats[1], []arg{i32(c.n), i32(c.N1), i32(c.K)})...)
					gotGLU := s.read(glu)
					e.run(t, s)

					for i, N := range ns {
						name := fmt.Sprintf("gemv_%s_v4_k%d out %d", dt, ks, i)
						g := bytesF32(*gotPlain[i])
						compare(t, name, g[:c.n*N], want[i], absDot(x, ws[i], c.n, N, c.K), tol{1e-6, 1e-5})
						for j, v := range g[c.n*N:] {
							if !math.IsNaN(float64(v)) {
								t.Errorf("%s wrote out[%d] = %g beyond its %d rows", name, c.n*N+j, v, c.n)
								break
							}
						}
						plain[si][i] = (*gotPlain[i])[:4*c.n*N]
						if !bytes.Equal(*gotQKV[i], plain[si][i]) {
							t.Errorf("gemv_%s_v4_qkv_k%d out %d: not the bits of its own launch", dt, ks, i)
						}
					}
					compare(t, fmt.Sprintf("gemv_%s_v4_glu_k%d", dt, ks), bytesF32(*gotGLU), gw, nil, tol{1e-5, 1e-4})
				}
				for i := range ns {
					if !bytes.Equal(plain[0][i], plain[1][i]) {
						t.Errorf("gemv_%s_v4 out %d: ks 4 and 8 give different bits", dt, i)
					}
				}
			})
		}
	}
}
