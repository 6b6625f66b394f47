package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/llamacu/llamacu/tensor"
)

// TestGemmKernels runs the prefill MatMul with every GEMM kernel this CPU has (the pure-Go one
// included) on awkward shapes: K with vector tails, several K blocks and a partial last one; n
// and N that leave partial tiles; n beyond one x block. Each result must match a float64
// matmul, the assembly kernels must agree with the Go one, and each kernel's results must be
// bit-identical for 1, 2 and 3 threads and however the weight rows are split into chunks.
func TestGemmKernels(t *testing.T) {
	defer func(k *gemmKernel) { gemm = k }(gemm)
	shapes := [][3]int{ // n, K, N
		{2, 1, 1}, {3, 7, 5}, {4, 16, 6}, {5, 17, 7}, {2, 33, 13}, {9, 100, 19},
		{6, gemmKC + 9, 11}, {7, 2*gemmKC + 1, 25}, {gemmXBlock + 7, 40, 9}, {17, 3 * gemmKC, 8},
	}
	for _, sh := range shapes {
		n, K, N := sh[0], sh[1], sh[2]
		r := rand.New(rand.NewPCG(uint64(n*K*N), 11))
		wv, xs := randVec(r, N*K, 0.1), randVec(r, n*K, 1)
		wt := &tensor.Tensor{Name: "w", DType: tensor.F32, Shape: []int{N, K}, Data: tensor.Encode(tensor.F32, wv)}
		var goOut []float32
		for _, kern := range gemmKernels() {
			t.Run(fmt.Sprintf("%s/n=%d/%dx%d", kern.name, n, N, K), func(t *testing.T) {
				gemm = kern
				var ref []float32
				for _, th := range []int{1, 2, 3} {
					be := New(Options{Threads: th})
					w, err := be.Upload(wt)
					if err != nil {
						t.Fatal(err)
					}
					x, out := mustBuf(t, be, n, K), mustBuf(t, be, n, N)
					setBuf(x, xs)
					be.MatMul(out, x, w, n)
					got := append([]float32(nil), out.(*Buffer).data...)
					// and split into chunks of any size, as no thread count would
					mm := &matmulTask{out: out.(*Buffer), x: x.(*Buffer), w: w.(*Weight), n: n, scratch: be.gemmBufs}
					for _, c := range []int{1, 5, 7} {
						clear(mm.out.data)
						for lo := 0; lo < N; lo += c {
							mm.run(lo%th, lo, min(lo+c, N))
						}
						for i := range got {
							if mm.out.data[i] != got[i] {
								t.Fatalf("threads=%d, chunks of %d rows: element %d = %g, one MatMul gave %g", th, c, i, mm.out.data[i], got[i])
							}
						}
					}
					be.Close()
					if ref == nil {
						ref = got
						continue
					}
					for i := range got {
						if got[i] != ref[i] {
							t.Fatalf("threads=%d: element %d = %g, threads=1 gave %g", th, i, got[i], ref[i])
						}
					}
				}
				for i := 0; i < n; i++ {
					for j := 0; j < N; j++ {
						s, m := 0.0, 0.0
						for k := 0; k < K; k++ {
							p := float64(xs[i*K+k]) * float64(wv[j*K+k])
							s, m = s+p, m+math.Abs(p)
						}
						g := ref[i*N+j]
						if math.Abs(float64(g)-s) > 1e-5*m+1e-7 {
							t.Fatalf("out[%d,%d] = %g, want %g (Σ|x·w| %g)", i, j, g, s, m)
						}
						if goOut != nil && !closeRel(g, goOut[i*N+j], m, 2e-6) {
							t.Fatalf("out[%d,%d] = %g, the Go kernel gives %g (Σ|x·w| %g)", i, j, g, goOut[i*N+j], m)
						}
					}
				}
				if kern == &gemmGo {
					goOut = ref
				}
			})
		}
	}
}
