package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// BenchmarkMatMul measures decode GEMV (n=1) and a prefill chunk (n=16) for each weight dtype,
// at the 110M model's shapes and a 7B-sized square. SetBytes is the weight bytes per op, so
// MB/s is the weight streaming rate. Sub-benchmark "go" forces the pure-Go kernels.
//
//	go test ./cpu -run '^$' -bench MatMul -benchtime 200x
func BenchmarkMatMul(b *testing.B) {
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
		for _, dt := range []tensor.DType{tensor.F32, tensor.F16, tensor.Q8_0, tensor.Q4_0, tensor.Q4_K, tensor.Q5_K, tensor.Q6_K} {
			for _, sh := range [][2]int{{768, 768}, {2048, 768}, {768, 2048}, {4096, 4096}} {
				for _, n := range []int{1, 16} {
					N, K := sh[0], sh[1]
					name := fmt.Sprintf("%s/%v/n=%d/%dx%d", kern, dt, n, N, K)
					b.Run(name, func(b *testing.B) {
						if testing.Short() && N*K > 4<<20 {
							b.Skip("large shape in -short mode")
						}
						if kern == "go" {
							usePureGo()
						} else {
							useAsm()
						}
						benchMatMul(b, dt, n, N, K)
					})
				}
			}
		}
	}
}

func benchMatMul(b *testing.B, dt tensor.DType, n, N, K int) {
	be := New(Options{KeepHalf: true})
	defer be.Close()
	r := rand.New(rand.NewPCG(1, 1))
	tt := &tensor.Tensor{Name: "w", DType: dt, Shape: []int{N, K}, Data: tensor.Encode(dt, randVec(r, N*K, 0.05))}
	w, err := be.Upload(tt)
	if err != nil {
		b.Fatal(err)
	}
	x, out := mustBuf(b, be, n, K), mustBuf(b, be, n, N)
	setBuf(x, randVec(r, n*K, 1))
	b.SetBytes(int64(len(tt.Data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		be.MatMul(out, x, w, n)
	}
	b.ReportMetric(float64(b.N)*2*float64(n*N*K)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// BenchmarkAttention measures decode attention (one token, 12 heads of 64) at a 1024 context.
func BenchmarkAttention(b *testing.B) {
	be := New(Options{})
	defer be.Close()
	const heads, hd, ctx, bs = 12, 64, 1024, 16
	c, err := be.NewKVCache(model.KVLayout{Layers: 1, KVHeads: heads, HeadDim: hd, BlockSize: bs, NumBlocks: ctx / bs})
	if err != nil {
		b.Fatal(err)
	}
	tab := make([]int32, ctx/bs)
	for i := range tab {
		tab[i] = int32(i)
	}
	bt := &model.Batch{Tokens: []int32{0}, Pos: []int32{ctx - 1}, Seq: []int32{0}, BlockTables: [][]int32{tab}}
	q, o := mustBuf(b, be, 1, heads*hd), mustBuf(b, be, 1, heads*hd)
	setBuf(q, randVec(rand.New(rand.NewPCG(2, 2)), heads*hd, 1))
	b.SetBytes(2 * ctx * heads * hd * 4) // K and V read
	for b.Loop() {
		be.Attention(o, q, c, 0, bt)
	}
}

// BenchmarkGemmTile measures each prefill micro-kernel alone on one L1-resident tile (K = 512,
// one K block, reduced): the compute ceiling of the prefill MatMul per core.
func BenchmarkGemmTile(b *testing.B) {
	const K = 512
	r := rand.New(rand.NewPCG(1, 1))
	for _, kern := range gemmKernels() {
		b.Run(kern.name, func(b *testing.B) {
			sc := newGemmScratch()
			for i := range kern.mr {
				sc.xs[i] = randVec(r, K, 1)
			}
			for j := range kern.nr {
				sc.ws[j] = randVec(r, K, 1)
			}
			for b.Loop() {
				kern.tile(&sc.xs, &sc.ws, sc.acc, 0, &sc.res)
			}
			b.ReportMetric(float64(b.N)*2*float64(kern.mr*kern.nr*K)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
