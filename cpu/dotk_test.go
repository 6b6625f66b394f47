package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llamacu/llamacu/tensor"
)

// TestDotKQuant: the Q4_K, Q5_K and Q6_K decode dots (pure Go and, where the CPU has it, nibDots in
// assembly) equal their slow twin — tensor.Decode of the row (ggml's values) and a float64 dot —
// within 1e-5 of Σ|w·x|, on ggml's own blocks and on encoded random rows up to 7B widths.
func TestDotKQuant(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	type row struct {
		name string
		d    tensor.DType
		data []byte
		K    int
	}
	var rows []row
	for _, d := range []tensor.DType{tensor.Q4_K, tensor.Q5_K, tensor.Q6_K} {
		blocks, err := os.ReadFile(filepath.Join("..", "tensor", "testdata", "ggml", strings.ToLower(d.String())+".blocks"))
		if err != nil {
			t.Fatal(err)
		}
		rb, _ := d.Bytes(512)
		for i := 0; i < 8; i++ {
			rows = append(rows, row{fmt.Sprintf("%v/ggml-row-%d", d, i), d, blocks[int(rb)*i : int(rb)*(i+1)], 512})
		}
		for _, K := range []int{256, 768, 4096, 11008} {
			rows = append(rows, row{fmt.Sprintf("%v/encoded/K=%d", d, K), d, tensor.Encode(d, randVec(r, K, 0.05)), K})
		}
	}
	for kern := range kernelSets() {
		for _, rw := range rows {
			x := randVec(r, rw.K, 1)
			w := make([]float32, rw.K)
			tensor.Decode(w, rw.d, rw.data)
			var want, mag float64
			for k := range w {
				want += float64(w[k]) * float64(x[k])
				mag += math.Abs(float64(w[k]) * float64(x[k]))
			}
			var got float32
			xsum := make([]float32, rw.K/32)
			subSums(xsum, x)
			switch rw.d {
			case tensor.Q4_K:
				got = dotQ4K(rw.data, x, xsum, make([]float32, 8))
			case tensor.Q5_K:
				got = dotQ5K(rw.data, x, xsum, make([]float32, 8))
			default:
				got = dotQ6K(rw.data, x, make([]float32, 8))
			}
			if d := math.Abs(float64(got) - want); d > 1e-5*mag+1e-12 {
				t.Errorf("%s %s: %g, twin %g (|Δ| %.3g > 1e-5 · %.3g)", kern, rw.name, got, want, d, mag)
			}
		}
	}
}

// deqQ4K, deqQ5K and deqQ6K, the prefill GEMM's widening of k-quant tiles, equal tensor.Decode
// (ggml's values) bit for bit, in Go and in assembly.
func TestDeqK(t *testing.T) {
	for _, d := range []tensor.DType{tensor.Q4_K, tensor.Q5_K, tensor.Q6_K} {
		t.Run(d.String(), func(t *testing.T) { testDeqK(t, d) })
	}
}

func testDeqK(t *testing.T, d tensor.DType) {
	r := rand.New(rand.NewPCG(7, 8))
	blocks, err := os.ReadFile(filepath.Join("..", "tensor", "testdata", "ggml", strings.ToLower(d.String())+".blocks"))
	if err != nil {
		t.Fatal(err)
	}
	datas := [][]byte{blocks, tensor.Encode(d, randVec(r, 11008, 0.05))}
	for kern := range kernelSets() {
		for i, data := range datas {
			n := len(data) / d.BlockBytes() * 256
			want, got := make([]float32, n), make([]float32, n)
			tensor.Decode(want, d, data)
			decodeInto(got, d, data)
			for k := range want {
				if math.Float32bits(got[k]) != math.Float32bits(want[k]) {
					t.Fatalf("%s data %d element %d: %g, tensor.Decode %g", kern, i, k, got[k], want[k])
				}
			}
		}
	}
}

// kernelSets installs, in turn, the pure-Go kernels ("go") and, where the CPU has them, the
// assembly ones ("asm"), yielding each name; the assembly ones stay installed afterwards.
func kernelSets() func(yield func(string) bool) {
	return func(yield func(string) bool) {
		defer useAsm()
		usePureGo()
		if !yield("go") || !hasAVX2 {
			return
		}
		useAsm()
		yield("asm")
	}
}
