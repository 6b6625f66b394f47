//go:build cuda || cudaemu

package gpu_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/gpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
	"github.com/llamacu/llamacu/tensor"
)

// The kernel benchmarks report bytes moved (b.SetBytes), so `go test -bench` prints GB/s to set
// against BenchmarkCopy's device-to-device bandwidth measured in the same run (issue 3's targets:
// GEMV ≥ 90%, decode attention ≥ 80% of it). Launches run inside Context.Do (no goroutine hand-off)
// and the device is synchronised once per timing, so the figures are device throughput.
//
//	go test -tags cuda ./gpu -run '^$' -bench . -benchtime 200x

// BenchmarkCopy measures device-to-device copy bandwidth (bytes read + written).
func BenchmarkCopy(b *testing.B) {
	be := open(b, gpu.Options{})
	const size = 1 << 30
	ctx := be.Context()
	src, err := ctx.Alloc(size)
	if err != nil {
		b.Fatal(err)
	}
	dst, err := ctx.Alloc(size)
	if err != nil {
		b.Fatal(err)
	}
	defer ctx.Free(src)
	defer ctx.Free(dst)
	b.SetBytes(2 * size)
	run(b, be, func() { _ = ctx.CopyDtoD(dst, src, size, nil) })
}

// run times b.N calls of f inside one Context.Do, synchronising before and after.
func run(b *testing.B, be *gpu.Backend, f func()) {
	b.Helper()
	ctx := be.Context()
	f() // warm up (and grow any scratch)
	if err := ctx.Synchronize(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	err := ctx.Do(func() error {
		for i := 0; i < b.N; i++ {
			f()
		}
		return ctx.Synchronize()
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkGEMV: decode matmuls of LLaMA 2 7B's shapes (N×K weights), n activation rows, by
// kernel version, each forced: v3 (K split over 4 warps per 4-row group; the default at n = 1),
// v4 (tensor cores; the default at n = 2…8), v2 (one warp per row group); for F16, v3 at n = 1
// with each ks and v4 at n = 8 with each ks. Then a 70B rank's shapes (TP 8), the defaults only.
func BenchmarkGEMV(b *testing.B) {
	type variant struct {
		name string
		be   *gpu.Backend
		rows []int // activation rows timed
		f16  bool  // F16 only
	}
	variants := []variant{
		{"v3", open(b, gpu.Options{GEMVv3: true}), []int{1, 4, 8}, false},
		{"v4", open(b, gpu.Options{GEMVv4OneRow: true}), []int{1, 4, 8}, false},
		{"v2", open(b, gpu.Options{GEMVv2: true}), []int{1, 8}, false},
	}
	for _, ks := range []int{1, 2, 4} {
		variants = append(variants, variant{fmt.Sprintf("v3-ks%d", ks), open(b, gpu.Options{GEMVSplit: ks, GEMVv3: true}), []int{1}, true})
	}
	for _, ks := range []int{4, 8} {
		variants = append(variants, variant{fmt.Sprintf("v4-ks%d", ks), open(b, gpu.Options{GEMVv4Split: ks}), []int{8}, true})
	}
	r := rand.New(rand.NewPCG(1, 1))
	for _, d := range []tensor.DType{tensor.F16, tensor.BF16} {
		for _, s := range [][2]int{{4096, 4096}, {11008, 4096}, {4096, 11008}, {32000, 4096}} {
			N, K := s[0], s[1]
			data := tensor.Encode(d, normal(r, N*K))
			for _, v := range variants {
				if v.f16 && d != tensor.F16 {
					continue
				}
				be := v.be
				w, err := be.Upload(&tensor.Tensor{Name: "w", DType: d, Shape: []int{N, K}, Data: data})
				if err != nil {
					b.Fatal(err)
				}
				for _, n := range v.rows {
					b.Run(fmt.Sprintf("%s/%v/%dx%d/n=%d", v.name, d, N, K, n), func(b *testing.B) {
						x := newBuf(b, be, n, K, normal(r, n*K))
						out := newBuf(b, be, n, N, nil)
						b.SetBytes(int64(N) * int64(K) * 2)
						run(b, be, func() { be.MatMul(out, x, w, n) })
					})
				}
			}
		}
	}
	// One rank of Llama-2-70B at TP 8, F16: q/k/v (1280×8192), Wo (8192×1024), gate and up as one
	// matrix (7168×8192), W2 (8192×3584) — smaller than 7B's, so their first and last
	// microseconds weigh more (the rank measured 61% of the copy bandwidth end to end on the
	// H200, 7B 79%). The default kernels: v3 at one row, v4 at eight.
	for _, s := range [][2]int{{1280, 8192}, {8192, 1024}, {7168, 8192}, {8192, 3584}} {
		N, K := s[0], s[1]
		data := tensor.Encode(tensor.F16, normal(r, N*K))
		for _, v := range []struct {
			variant
			n int
		}{{variants[0], 1}, {variants[1], 8}} {
			be, n := v.be, v.n
			w, err := be.Upload(&tensor.Tensor{Name: "w", DType: tensor.F16, Shape: []int{N, K}, Data: data})
			if err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("%s/F16/%dx%d/n=%d", v.name, N, K, n), func(b *testing.B) {
				x := newBuf(b, be, n, K, normal(r, n*K))
				out := newBuf(b, be, n, N, nil)
				b.SetBytes(int64(N) * int64(K) * 2)
				run(b, be, func() { be.MatMul(out, x, w, n) })
			})
		}
	}
}

// randomBlocks returns rows×cols weights of a ggml block type as random bytes with every block's
// fp16 scales set to small finite values: valid blocks (llamacu cannot encode the k-quants), for
// timing only.
func randomBlocks(r *rand.Rand, d tensor.DType, rows, cols int) []byte {
	n, _ := d.Bytes(int64(rows) * int64(cols))
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	bb := d.BlockBytes()
	scale := tensor.F32ToF16(1e-3)
	for off := 0; off < len(data); off += bb {
		switch d {
		case tensor.Q4_K, tensor.Q5_K: // d, dmin first
			binary.LittleEndian.PutUint16(data[off:], scale)
			binary.LittleEndian.PutUint16(data[off+2:], scale)
		case tensor.Q6_K: // d last
			binary.LittleEndian.PutUint16(data[off+bb-2:], scale)
		default: // Q8_0, Q4_0: d first
			binary.LittleEndian.PutUint16(data[off:], scale)
		}
	}
	return data
}

// BenchmarkGEMVQuant: decode GEMV (n = 1) on weights kept quantised, 7B shapes; bytes are the
// stored bytes (Q8_0 1.06, Q4_0 0.56, Q4_K 0.56, Q5_K 0.69, Q6_K 0.82 per weight), so MB/s compares with
// BenchmarkCopy and BenchmarkGEMV's fp16 directly. Q8_0 and Q4_0 also at n = 8: v4 (tensor
// cores, the default) and v2 ("v2/…", LLAMACU_GEMV=v3's choice for them).
func BenchmarkGEMVQuant(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 3))
	for _, v := range []struct {
		name string
		be   *gpu.Backend
		rows []int
	}{{"", open(b, gpu.Options{}), []int{1, 8}}, {"v2/", open(b, gpu.Options{GEMVv3: true}), []int{8}}} {
		be := v.be
		for _, d := range []tensor.DType{tensor.Q8_0, tensor.Q4_0, tensor.Q4_K, tensor.Q5_K, tensor.Q6_K} {
			for _, s := range [][2]int{{4096, 4096}, {11008, 4096}, {4096, 11008}} {
				N, K := s[0], s[1]
				data := randomBlocks(r, d, N, K)
				w, err := be.Upload(&tensor.Tensor{Name: "w", DType: d, Shape: []int{N, K}, Data: data})
				if err != nil {
					b.Fatal(err)
				}
				if w.DType() != d {
					b.Fatalf("%v resides as %v", d, w.DType())
				}
				for _, n := range v.rows {
					if n > 1 && d != tensor.Q8_0 && d != tensor.Q4_0 {
						continue // the k-quants have no v4: the same kernel either way
					}
					b.Run(fmt.Sprintf("%s%v/%dx%d/n=%d", v.name, d, N, K, n), func(b *testing.B) {
						x := newBuf(b, be, n, K, normal(r, n*K))
						out := newBuf(b, be, n, N, nil)
						b.SetBytes(int64(len(data)))
						run(b, be, func() { be.MatMul(out, x, w, n) })
					})
				}
			}
		}
	}
}

// BenchmarkAttentionDecode: one decode token per sequence at a 4096-token context, fp16 cache;
// bytes are the K and V rows read. The default kernels (v4 at 7B's G = 1, v5 at 70B's G = 8),
// then v5 and v4 each forced ("v5/…", "v4/…"), the default with its splits aimed at 2 and 6
// blocks per SM instead of 3 ("bps2/…", "bps6/…"), then v3's ("v3/…") and v2's ("v2/…").
func BenchmarkAttentionDecode(b *testing.B) {
	def := open(b, gpu.Options{})
	v5 := open(b, gpu.Options{Decode: 5})
	v4 := open(b, gpu.Options{Decode: 4})
	bps2 := open(b, gpu.Options{DecodeBlocksPerSM: 2})
	bps6 := open(b, gpu.Options{DecodeBlocksPerSM: 6})
	v3 := open(b, gpu.Options{Decode: 3})
	v2 := open(b, gpu.Options{Decode: 2})
	for _, c := range []struct {
		name           string
		heads, kvHeads int
		seqs           int
	}{{"7B", 32, 32, 1}, {"70B", 64, 8, 1}, {"7B/8seqs", 32, 32, 8}} {
		for _, v := range []struct {
			name string
			be   *gpu.Backend
		}{{"", def}, {"v5/", v5}, {"v4/", v4}, {"bps2/", bps2}, {"bps6/", bps6}, {"v3/", v3}, {"v2/", v2}} {
			be := v.be
			b.Run(v.name+c.name, func(b *testing.B) {
				const hd, bs, ctxLen = 128, 16, 4096
				perSeq := ctxLen / bs
				l := model.KVLayout{Layers: 1, KVHeads: c.kvHeads, HeadDim: hd, BlockSize: bs, NumBlocks: perSeq * c.seqs}
				cache, err := be.NewKVCache(l)
				if err != nil {
					b.Fatal(err)
				}
				bt := &model.Batch{Tokens: make([]int32, c.seqs), Pos: make([]int32, c.seqs), Seq: make([]int32, c.seqs)}
				for s := 0; s < c.seqs; s++ {
					tab := make([]int32, perSeq)
					for i := range tab {
						tab[i] = int32(s*perSeq + i)
					}
					bt.BlockTables = append(bt.BlockTables, tab)
					bt.Pos[s], bt.Seq[s] = ctxLen-1, int32(s)
				}
				r := rand.New(rand.NewPCG(2, 2))
				q := newBuf(b, be, c.seqs, c.heads*hd, normal(r, c.seqs*c.heads*hd))
				out := newBuf(b, be, c.seqs, c.heads*hd, nil)
				b.SetBytes(int64(c.seqs) * 2 * ctxLen * int64(c.kvHeads) * hd * 2)
				run(b, be, func() { be.Attention(out, q, cache, 0, bt) })
			})
		}
	}
}

// BenchmarkAttentionPrefill: causal attention of one 2048-token prompt over the fp16 cache, 7B
// (32/32 heads) and 70B (64/8) shapes, head_dim 128: the tensor-core kernels (v4, pipelined,
// and v3) against the fp32 SIMT one (v2). TFLOP/s counts the causal half of QKᵀ and PV:
// 2·2·heads·hd·n²/2.
func BenchmarkAttentionPrefill(b *testing.B) {
	for _, v := range []struct {
		kernel string
		opts   gpu.Options
	}{{"v4-mma", gpu.Options{}}, {"v3-mma", gpu.Options{PrefillV3: true}}, {"v2-simt", gpu.Options{SIMTPrefill: true}}} {
		kernel := v.kernel
		be := open(b, v.opts)
		for _, c := range []struct {
			name           string
			heads, kvHeads int
		}{{"7B", 32, 32}, {"70B", 64, 8}} {
			b.Run(fmt.Sprintf("%s/%s/n=2048", kernel, c.name), func(b *testing.B) {
				const hd, bs, n = 128, 16, 2048
				cache, err := be.NewKVCache(model.KVLayout{Layers: 1, KVHeads: c.kvHeads, HeadDim: hd, BlockSize: bs, NumBlocks: n / bs})
				if err != nil {
					b.Fatal(err)
				}
				bt := &model.Batch{Tokens: make([]int32, n), Pos: make([]int32, n), Seq: make([]int32, n)}
				tab := make([]int32, n/bs)
				for i := range tab {
					tab[i] = int32(i)
				}
				bt.BlockTables = [][]int32{tab}
				for i := range n {
					bt.Pos[i] = int32(i)
				}
				r := rand.New(rand.NewPCG(3, 3))
				q := newBuf(b, be, n, c.heads*hd, normal(r, n*c.heads*hd))
				kv := newBuf(b, be, n, c.kvHeads*hd, normal(r, n*c.kvHeads*hd))
				be.StoreKV(cache, 0, kv, kv, bt) // K = V: any finite values do for timing
				out := newBuf(b, be, n, c.heads*hd, nil)
				run(b, be, func() { be.Attention(out, q, cache, 0, bt) })
				flops := 2.0 * float64(c.heads*hd) * n * n // 2 products × 2 flops × n²/2 (causal)
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e12, "TFLOP/s")
			})
		}
	}
}

// BenchmarkTopK: each row's k best of a 32000-token vocabulary, for sampling. Bytes are the
// logits read once (n·32000·4). v2 (radix select) and v1 (k rounds) return 8·k bytes per row;
// read+host is what they replace: the whole rows copied to the host and sample.TopK there.
func BenchmarkTopK(b *testing.B) {
	const cols = 32000
	r := rand.New(rand.NewPCG(3, 3))
	for _, v := range []string{"v2", "v1", "read+host"} {
		be := open(b, gpu.Options{Naive: v == "v1"})
		for _, n := range []int{1, 8} {
			x := newBuf(b, be, n, cols, normal(r, n*cols))
			for _, k := range []int{1, 40} {
				b.Run(fmt.Sprintf("%s/n=%d/k=%d", v, n, k), func(b *testing.B) {
					vals, ids := make([]float32, n*k), make([]int32, n*k)
					b.SetBytes(int64(n) * cols * 4)
					if v != "read+host" {
						run(b, be, func() { _ = be.TopK(vals, ids, x, n, k) })
						return
					}
					host := make([]float32, n*cols)
					run(b, be, func() {
						_ = be.Read(host, x, n)
						for i := range n {
							sample.TopK(vals[i*k:(i+1)*k], ids[i*k:(i+1)*k], host[i*cols:(i+1)*cols], k)
						}
					})
				})
			}
		}
	}
}

// BenchmarkGateUp: LLaMA 7B's FFN gate and up projections and SwiGLU (2 × 11008×4096 fp16),
// fused (gemv_f16_v3_glu: one launch) and unfused (two GEMVs and swiglu_f32); bytes are the two
// matrices. The ratio is what the fusion buys per layer, launch gaps included. Then the fused
// kernel at n = 1 as v2 and as v3 with each split (fused-v2, fused-ks1, -ks2, -ks4).
func BenchmarkGateUp(b *testing.B) {
	be := open(b, gpu.Options{})
	r := rand.New(rand.NewPCG(4, 4))
	N, K := 11008, 4096
	if cuda.Emulated {
		N, K = 344, 128
	}
	w1data, w3data := normal(r, N*K), normal(r, N*K)
	w1, w3 := uploadWeight(b, be, tensor.F16, N, K, w1data), uploadWeight(b, be, tensor.F16, N, K, w3data)
	// The fused kernel at n = 1 by version and split: v2, and v3 with each ks forced.
	for _, v := range []struct {
		name string
		opts gpu.Options
	}{{"v2", gpu.Options{GEMVv2: true}}, {"ks1", gpu.Options{GEMVSplit: 1}}, {"ks2", gpu.Options{GEMVSplit: 2}}, {"ks4", gpu.Options{GEMVSplit: 4}}} {
		vb := open(b, v.opts)
		var ws [2]model.Weight
		for i, d := range [][]float32{w1data, w3data} {
			ws[i] = uploadWeight(b, vb, tensor.F16, N, K, d)
		}
		x := newBuf(b, vb, 1, K, normal(r, K))
		out, tmp := newBuf(b, vb, 1, N, nil), newBuf(b, vb, 1, N, nil)
		b.Run("fused-"+v.name+"/n=1", func(b *testing.B) {
			b.SetBytes(2 * int64(N) * int64(K) * 2)
			run(b, vb, func() { vb.MatMulSwiGLU(out, tmp, x, ws[0], ws[1], 1) })
		})
	}
	for _, n := range []int{1, 8} {
		x := newBuf(b, be, n, K, normal(r, n*K))
		out, tmp := newBuf(b, be, n, N, nil), newBuf(b, be, n, N, nil)
		b.Run(fmt.Sprintf("fused/n=%d", n), func(b *testing.B) {
			b.SetBytes(2 * int64(N) * int64(K) * 2)
			run(b, be, func() { be.MatMulSwiGLU(out, tmp, x, w1, w3, n) })
		})
		b.Run(fmt.Sprintf("unfused/n=%d", n), func(b *testing.B) {
			b.SetBytes(2 * int64(N) * int64(K) * 2)
			run(b, be, func() {
				be.MatMul(out, x, w1, n)
				be.MatMul(tmp, x, w3, n)
				be.SwiGLU(out, out, tmp, n)
			})
		})
	}
}

// BenchmarkQKVRoPE: the attention block's prologue of one decode row, fused (gemv_f16_v3_qkv_rope:
// one launch) and separate (gemv_f16_v3_qkv, then rope_qk_store_kv), on 7B's shapes (4096 →
// 4096 + 4096 + 4096, 32 KV heads) and one TP-8 rank of 70B (8192 → 1024 + 128 + 128, 1 KV head),
// fp16 weights and cache. Bytes are the three matrices. The ratio is what the fusion buys per
// layer, the launch gap included.
func BenchmarkQKVRoPE(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, c := range []struct {
		name                string
		dim, heads, kvHeads int
	}{{"7B", 4096, 32, 32}, {"70B-rank-of-8", 8192, 8, 1}} {
		const hd = 128
		dim, heads, kvHeads := c.dim, c.heads, c.kvHeads
		if cuda.Emulated {
			dim, heads, kvHeads = 256, 2, 1
		}
		for _, v := range []struct {
			name string
			opts gpu.Options
		}{{"fused", gpu.Options{}}, {"separate", gpu.Options{SeparateRoPE: true}}} {
			be := open(b, v.opts)
			var ws [3]model.Weight
			for i, rows := range []int{heads * hd, kvHeads * hd, kvHeads * hd} {
				ws[i] = uploadWeight(b, be, tensor.F16, rows, dim, normal(r, rows*dim))
			}
			cache, err := be.NewKVCache(model.KVLayout{Layers: 1, KVHeads: kvHeads, HeadDim: hd, BlockSize: 16, NumBlocks: 64})
			if err != nil {
				b.Fatal(err)
			}
			bt := &model.Batch{Tokens: []int32{0}, Pos: []int32{1000}, Seq: []int32{0}, BlockTables: [][]int32{make([]int32, 64)}}
			x := newBuf(b, be, 1, dim, normal(r, dim))
			q, k, vv := newBuf(b, be, 1, heads*hd, nil), newBuf(b, be, 1, kvHeads*hd, nil), newBuf(b, be, 1, kvHeads*hd, nil)
			b.Run(fmt.Sprintf("%s/%s/n=1", v.name, c.name), func(b *testing.B) {
				b.SetBytes(int64(heads+2*kvHeads) * hd * int64(dim) * 2)
				run(b, be, func() { be.MatMulQKVRoPEStoreKV(q, k, vv, x, ws[0], ws[1], ws[2], cache, 0, bt, hd, 10000) })
			})
		}
	}
}
