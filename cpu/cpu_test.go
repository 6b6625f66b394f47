package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

func randVec(r *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * scale)
	}
	return v
}

// closeRel reports |a−b| ≤ tol·max(mag, tiny).
func closeRel(a, b float32, mag, tol float64) bool {
	return math.Abs(float64(a)-float64(b)) <= tol*math.Max(mag, 1e-30)
}

// setBuf writes data into the first rows of a CPU buffer.
func setBuf(b model.Buffer, data []float32) { copy(b.(*Buffer).data, data) }

func mustBuf(t testing.TB, be *Backend, rows, cols int) model.Buffer {
	t.Helper()
	b, err := be.NewBuffer(rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMatMulQuantized checks every weight dtype and both paths (decode n=1 and prefill n>1,
// both kernel sets) against tensor.Decode followed by a plain float64 matmul.
func TestMatMulQuantized(t *testing.T) {
	kernels := []string{"go"}
	if hasAVX2 {
		kernels = append(kernels, "asm")
	}
	defer func() {
		if hasAVX2 {
			useAsm()
		}
	}()
	for _, kern := range kernels {
		if kern == "go" {
			usePureGo()
		} else {
			useAsm()
		}
		for _, keep := range []bool{false, true} {
			be := New(Options{Threads: 2, KeepHalf: keep})
			for _, dt := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16, tensor.Q8_0, tensor.Q4_0} {
				for _, sh := range [][3]int{{1, 64, 9}, {1, 1024, 37}, {5, 96, 130}, {37, 160, 67}} {
					n, K, N := sh[0], sh[1], sh[2]
					name := fmt.Sprintf("%s/keep=%v/%v/n=%d/%dx%d", kern, keep, dt, n, N, K)
					t.Run(name, func(t *testing.T) {
						r := rand.New(rand.NewPCG(uint64(n*K*N), 7))
						tt := &tensor.Tensor{Name: "w", DType: dt, Shape: []int{N, K}, Data: tensor.Encode(dt, randVec(r, N*K, 0.1))}
						w, err := be.Upload(tt)
						if err != nil {
							t.Fatal(err)
						}
						wv := tt.Float32s()
						xs := randVec(r, n*K, 1)
						x, out := mustBuf(t, be, n, K), mustBuf(t, be, n, N)
						setBuf(x, xs)
						be.MatMul(out, x, w, n)
						got := out.(*Buffer).data
						for i := 0; i < n; i++ {
							for j := 0; j < N; j++ {
								s, m := 0.0, 0.0
								for k := 0; k < K; k++ {
									p := float64(xs[i*K+k]) * float64(wv[j*K+k])
									s, m = s+p, m+math.Abs(p)
								}
								if g := got[i*N+j]; math.Abs(float64(g)-s) > 1e-5*m+1e-7 {
									t.Fatalf("out[%d,%d] = %g, want %g (Σ|x·w| %g)", i, j, g, s, m)
								}
							}
						}
					})
				}
			}
			be.Close()
		}
	}
}

// TestThreadsBitIdentical: results do not depend on the thread count (each output element is
// computed by one kernel call, whichever worker runs it).
func TestThreadsBitIdentical(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const n, K, N = 7, 256, 300
	wt := &tensor.Tensor{Name: "w", DType: tensor.Q8_0, Shape: []int{N, K}, Data: tensor.Encode(tensor.Q8_0, randVec(r, N*K, 0.1))}
	xs := randVec(r, n*K, 1)
	var ref []float32
	for _, th := range []int{1, 2, 5} {
		be := New(Options{Threads: th})
		w, err := be.Upload(wt)
		if err != nil {
			t.Fatal(err)
		}
		x, out := mustBuf(t, be, n, K), mustBuf(t, be, n, N)
		setBuf(x, xs)
		be.MatMul(out, x, w, n)
		got := append([]float32(nil), out.(*Buffer).data...)
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
}

// TestLlama2cArithmetic: RMSNorm, softmax-in-attention and SwiGLU reproduce llama2.c's float32
// expressions bit for bit (what makes greedy output match its reference texts).
func TestLlama2cArithmetic(t *testing.T) {
	be := New(Options{Threads: 1})
	defer be.Close()
	r := rand.New(rand.NewPCG(5, 6))
	const dim = 288
	xs, g := randVec(r, dim, 1), randVec(r, dim, 1)
	w, _ := be.Upload(&tensor.Tensor{Name: "g", DType: tensor.F32, Shape: []int{dim}, Data: tensor.Encode(tensor.F32, g)})
	x := mustBuf(t, be, 1, dim)
	setBuf(x, xs)
	be.RMSNorm(x, x, w, 1, 1e-5)
	// run.c: ss += x[j]*x[j]; ss /= size; ss += 1e-5f; ss = 1.0f / sqrtf(ss); o[j] = weight[j] * (ss * x[j]);
	var ss float32
	for _, v := range xs {
		ss += v * v
	}
	ss /= dim
	ss += 1e-5
	ss = 1 / float32(math.Sqrt(float64(ss)))
	for j, v := range xs {
		if want, got := g[j]*(ss*v), x.(*Buffer).data[j]; got != want {
			t.Fatalf("RMSNorm[%d] = %g, llama2.c gives %g", j, got, want)
		}
	}
	// run.c: val *= (1.0f / (1.0f + expf(-val))); val *= hb2[i];
	gate, up := mustBuf(t, be, 1, dim), mustBuf(t, be, 1, dim)
	gs, us := randVec(r, dim, 3), randVec(r, dim, 1)
	setBuf(gate, gs)
	setBuf(up, us)
	be.SwiGLU(gate, gate, up, 1)
	for j, v := range gs {
		v *= 1 / (1 + float32(math.Exp(float64(-v))))
		if want, got := v*us[j], gate.(*Buffer).data[j]; got != want {
			t.Fatalf("SwiGLU[%d] = %g, llama2.c gives %g", j, got, want)
		}
	}
}

// TestUploadF32InPlace: aligned F32 data is used in place (no copy of a mmapped file); unaligned
// data is copied, with the same values.
func TestUploadF32InPlace(t *testing.T) {
	be := New(Options{Threads: 1})
	defer be.Close()
	vals := []float32{1, -2, 3.5, 4, 5, 6}
	raw := make([]byte, 4*len(vals)+5)
	for _, off := range []int{0, 1, 4} {
		data := raw[off : off+4*len(vals)]
		copy(data, tensor.Encode(tensor.F32, vals))
		w, err := be.Upload(&tensor.Tensor{Name: "w", DType: tensor.F32, Shape: []int{2, 3}, Data: data})
		if err != nil {
			t.Fatal(err)
		}
		f := w.(*Weight).f32
		aligned := uintptr(unsafe.Pointer(&data[0]))%4 == 0
		if inPlace := unsafe.Pointer(&f[0]) == unsafe.Pointer(&data[0]); inPlace != aligned {
			t.Errorf("offset %d: in place = %v, want %v", off, inPlace, aligned)
		}
		for i, v := range vals {
			if f[i] != v {
				t.Errorf("offset %d: element %d = %g, want %g", off, i, f[i], v)
			}
		}
	}
}

// TestUploadDTypes: half matrices widen unless KeepHalf; norms are always F32.
func TestUploadDTypes(t *testing.T) {
	for _, c := range []struct {
		keep  bool
		dt    tensor.DType
		shape []int
		want  tensor.DType
	}{
		{false, tensor.F16, []int{2, 32}, tensor.F32},
		{true, tensor.F16, []int{2, 32}, tensor.F16},
		{true, tensor.BF16, []int{2, 32}, tensor.BF16},
		{true, tensor.F16, []int{32}, tensor.F32},
		{false, tensor.Q8_0, []int{2, 32}, tensor.Q8_0},
		{false, tensor.Q4_0, []int{32}, tensor.F32},
	} {
		be := New(Options{Threads: 1, KeepHalf: c.keep})
		n := 1
		for _, d := range c.shape {
			n *= d
		}
		vals := randVec(rand.New(rand.NewPCG(1, 1)), n, 1)
		tt := &tensor.Tensor{Name: "w", DType: c.dt, Shape: c.shape, Data: tensor.Encode(c.dt, vals)}
		w, err := be.Upload(tt)
		if err != nil {
			t.Fatal(err)
		}
		if w.DType() != c.want {
			t.Errorf("keep=%v %v %v: resident dtype %v, want %v", c.keep, c.dt, c.shape, w.DType(), c.want)
		}
		// decodeRow gives the file's values whatever the resident form
		ww := w.(*Weight)
		row := make([]float32, ww.cols)
		want := tt.Float32s()
		for r := 0; r < ww.rows; r++ {
			ww.decodeRow(row, r)
			for k, v := range row {
				if v != want[r*ww.cols+k] {
					t.Fatalf("keep=%v %v: row %d element %d = %g, want %g", c.keep, c.dt, r, k, v, want[r*ww.cols+k])
				}
			}
		}
		be.Close()
	}
}
