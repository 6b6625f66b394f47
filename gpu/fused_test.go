//go:build cuda || cudaemu

package gpu_test

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/gpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// TestFusedOps: each fused op (MatMulQKV, MatMulSwiGLU, AddRMSNorm) equals the unfused sequence
// of model/backend.go bit for bit — on the fused kernels (≤ 8 rows; float, Q8_0 and Q4_0
// weights) and on the shapes that fall back (9 rows, row counts not a multiple of 4).
func TestFusedOps(t *testing.T) {
	be := open(t, gpu.Options{NoCublas: true})
	r := rand.New(rand.NewPCG(21, 22))
	upload := func(d tensor.DType, rows, cols int) model.Weight {
		return uploadWeight(t, be, d, rows, cols, normal(r, rows*cols))
	}
	dim, kv, ffn := 256, 64, 688 // K = dim; kv and ffn rows
	if !cuda.Emulated {
		dim, kv, ffn = 4096, 1024, 11008 // LLaMA 7B/70B-like rows
		if testing.Short() {
			dim, kv, ffn = 1024, 256, 2752
		}
	}
	for _, d := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16, tensor.Q8_0, tensor.Q4_0, tensor.Q4_K, tensor.Q5_K} {
		// q, k, v: the usual shape, and a k/v height that is not a multiple of 4.
		wq := upload(d, dim, dim)
		var kvs [2][2]model.Weight
		for i, rows := range []int{kv, kv + 2} {
			kvs[i] = [2]model.Weight{upload(d, rows, dim), upload(d, rows, dim)}
		}
		w1, w3 := upload(d, ffn, dim), upload(d, ffn, dim)
		for _, n := range []int{1, 3, 8, 9} {
			t.Run(fmt.Sprintf("%v/n=%d", d, n), func(t *testing.T) {
				x := newBuf(t, be, n, dim, normal(r, n*dim))
				for i, kvRows := range []int{kv, kv + 2} {
					wk, wv := kvs[i][0], kvs[i][1]
					outs := [2][3]model.Buffer{}
					for i := range outs {
						outs[i] = [3]model.Buffer{newBuf(t, be, n, dim, nil), newBuf(t, be, n, kvRows, nil), newBuf(t, be, n, kvRows, nil)}
					}
					be.MatMulQKV(outs[0][0], outs[0][1], outs[0][2], x, wq, wk, wv, n)
					for j, w := range []model.Weight{wq, wk, wv} {
						be.MatMul(outs[1][j], x, w, n)
					}
					for j, what := range []string{"q", "k", "v"} {
						same(t, fmt.Sprintf("MatMulQKV %s (kv rows %d)", what, kvRows), read(t, be, outs[0][j], n), read(t, be, outs[1][j], n))
					}
				}
				// Gate/up and SwiGLU.
				fused, tmp := newBuf(t, be, n, ffn, nil), newBuf(t, be, n, ffn, nil)
				be.MatMulSwiGLU(fused, tmp, x, w1, w3, n)
				gate, up := newBuf(t, be, n, ffn, nil), newBuf(t, be, n, ffn, nil)
				be.MatMul(gate, x, w1, n)
				be.MatMul(up, x, w3, n)
				be.SwiGLU(gate, gate, up, n)
				same(t, "MatMulSwiGLU", read(t, be, fused, n), read(t, be, gate, n))
			})
		}
	}
	// The residual add and RMSNorm, out aliasing y as the forward pass calls it.
	for _, n := range []int{1, 5} {
		for _, cols := range []int{dim, 4100, 4102} { // 4102: not float4-aligned, unfused
			xs, ys := normal(r, n*cols), normal(r, n*cols)
			w, err := be.Upload(&tensor.Tensor{Name: "norm", DType: tensor.F32, Shape: []int{cols}, Data: tensor.Encode(tensor.F32, normal(r, cols))})
			if err != nil {
				t.Fatal(err)
			}
			x1, y1 := newBuf(t, be, n, cols, xs), newBuf(t, be, n, cols, ys)
			be.AddRMSNorm(y1, x1, y1, w, n, 1e-5)
			x2, y2 := newBuf(t, be, n, cols, xs), newBuf(t, be, n, cols, ys)
			be.Add(x2, y2, n)
			be.RMSNorm(y2, x2, w, n, 1e-5)
			same(t, fmt.Sprintf("AddRMSNorm x (n %d, dim %d)", n, cols), read(t, be, x1, n), read(t, be, x2, n))
			same(t, fmt.Sprintf("AddRMSNorm out (n %d, dim %d)", n, cols), read(t, be, y1, n), read(t, be, y2, n))
		}
	}
}

// TestQKVRoPEStoreKV: the attention block's prologue in one op (MatMulQKVRoPEStoreKV) equals
// MatMulQKV then RoPEStoreKV bit for bit — q, k, v and both caches, paged positions, GQA — in
// one launch where the fused kernel applies (float weights, ≤ 8 rows; Q8_0 and Q4_0 at 2–8 rows,
// v4) and through the two ops where it does not (one row of Q8_0, 9 rows, Options.SeparateRoPE).
func TestQKVRoPEStoreKV(t *testing.T) {
	heads, kvHeads, hd, dim := 8, 2, 16, 128
	if !cuda.Emulated {
		heads, kvHeads, hd, dim = 32, 8, 128, 4096 // 70B's head geometry at 7B's width
	}
	const bs, numBlocks, theta = 4, 16, 10000
	l := model.KVLayout{Layers: 2, KVHeads: kvHeads, HeadDim: hd, BlockSize: bs, NumBlocks: numBlocks}
	// batch: n−1 rows of sequence 0 from position 5 (crossing blocks), one of sequence 1 at 2.
	batch := func(n int) *model.Batch {
		bt := &model.Batch{BlockTables: [][]int32{{9, 3, 14, 0, 7}, {11}}}
		for i := 0; i < n-1; i++ {
			bt.Tokens, bt.Pos, bt.Seq = append(bt.Tokens, 0), append(bt.Pos, int32(5+i)), append(bt.Seq, 0)
		}
		bt.Tokens, bt.Pos, bt.Seq = append(bt.Tokens, 0), append(bt.Pos, 2), append(bt.Seq, 1)
		return bt
	}
	r := rand.New(rand.NewPCG(41, 42))
	for _, tc := range []struct {
		name  string
		opts  gpu.Options
		d     tensor.DType
		n     int
		fused bool
	}{
		{"f16/n=1", gpu.Options{}, tensor.F16, 1, true},
		{"f16/n=3", gpu.Options{}, tensor.F16, 3, true},
		{"bf16/n=8", gpu.Options{}, tensor.BF16, 8, true},
		{"f32/n=2/kv-f32", gpu.Options{KVF32: true}, tensor.F32, 2, true},
		{"f16/n=4/kv-f32", gpu.Options{KVF32: true}, tensor.F16, 4, true},
		{"f16/n=9", gpu.Options{NoCublas: true}, tensor.F16, 9, false},
		{"q8_0/n=1", gpu.Options{}, tensor.Q8_0, 1, false}, // v2: no RoPE epilogue
		{"q8_0/n=2", gpu.Options{}, tensor.Q8_0, 2, true},  // v4
		{"q4_0/n=5/kv-f32", gpu.Options{KVF32: true}, tensor.Q4_0, 5, true},
		{"f16/n=2/separate", gpu.Options{SeparateRoPE: true}, tensor.F16, 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := open(t, tc.opts)
			var ws [3]model.Weight
			for i, rows := range []int{heads * hd, kvHeads * hd, kvHeads * hd} {
				ws[i] = uploadWeight(t, be, tc.d, rows, dim, normal(r, rows*dim))
			}
			bt := batch(tc.n)
			x := normal(r, tc.n*dim)
			var got [2][5][]byte // path → q, k, v, K cache, V cache
			for path := range got {
				c, err := be.NewKVCache(l)
				if err != nil {
					t.Fatal(err)
				}
				xb := newBuf(t, be, tc.n, dim, x)
				q, k, v := newBuf(t, be, tc.n, heads*hd, nil), newBuf(t, be, tc.n, kvHeads*hd, nil), newBuf(t, be, tc.n, kvHeads*hd, nil)
				before := be.Launches()
				if path == 0 {
					be.MatMulQKVRoPEStoreKV(q, k, v, xb, ws[0], ws[1], ws[2], c, 1, bt, hd, theta)
					if launched := be.Launches() - before; (launched == 1) != tc.fused {
						t.Errorf("%d launches (fused kernel expected: %v)", launched, tc.fused)
					}
				} else {
					be.MatMulQKV(q, k, v, xb, ws[0], ws[1], ws[2], tc.n)
					be.RoPEStoreKV(q, k, v, c, 1, bt, hd, theta)
				}
				for j, b := range []model.Buffer{q, k, v} {
					got[path][j] = tensor.Encode(tensor.F32, read(t, be, b, tc.n))
				}
				gc := c.(*gpu.KVCache)
				size := l.Layers * numBlocks * bs * kvHeads * hd * be.KVElementBytes()
				for j, p := range []cuda.DevicePtr{gc.K(), gc.V()} {
					got[path][3+j] = make([]byte, size)
					if err := be.Context().CopyDtoH(got[path][3+j], p); err != nil {
						t.Fatal(err)
					}
				}
			}
			for j, what := range []string{"q", "k", "v", "K cache", "V cache"} {
				if !bytes.Equal(got[0][j], got[1][j]) {
					t.Errorf("%s differs between the fused op and MatMulQKV + RoPEStoreKV", what)
				}
			}
		})
	}
}

// TestForwardFusesPrologue: the forward pass uses the fused attention prologue — a decode step
// launches one kernel per layer fewer than with Options.SeparateRoPE — and its logits are the
// same bits.
func TestForwardFusesPrologue(t *testing.T) {
	cfg := model.Tiny
	var launches [2]int64
	var logits [2][]float32
	// SeparateNorm in both: folding the norm into the q/k/v kernel needs the fused RoPE (TestForwardFoldsNorm).
	for i, opts := range []gpu.Options{{Weights: tensor.F16, SeparateNorm: true}, {Weights: tensor.F16, SeparateRoPE: true, SeparateNorm: true}} {
		be := open(t, opts)
		m, err := model.New(be, cfg, model.Synthetic(cfg, 1, tensor.F16), nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := m.NewState(1, 1, 16, 4)
		if err != nil {
			t.Fatal(err)
		}
		bt := &model.Batch{Tokens: []int32{5}, Pos: []int32{0}, Seq: []int32{0}, BlockTables: [][]int32{{2, 0, 3, 1}}}
		for step := 0; step < 3; step++ { // decode steps at positions 0, 1, 2
			bt.Tokens[0], bt.Pos[0] = int32(5+step), int32(step)
			before := be.Launches()
			l, err := m.Forward(s, bt, []int32{0})
			if err != nil {
				t.Fatal(err)
			}
			launches[i] = be.Launches() - before
			logits[i] = append(logits[i][:0], l...)
		}
	}
	if launches[1]-launches[0] != int64(cfg.Layers) {
		t.Errorf("a decode step launched %d kernels fused and %d separate: want %d (one per layer) fewer", launches[0], launches[1], cfg.Layers)
	}
	for i := range logits[0] {
		if math.Float32bits(logits[0][i]) != math.Float32bits(logits[1][i]) {
			t.Fatalf("logit %d: %v fused, %v separate", i, logits[0][i], logits[1][i])
		}
	}
}

// TestPDLOption: Options.PDL launches with programmatic dependent launch where the context can
// (the emulated device is an sm_90), and the results are the same bits as stream order.
func TestPDLOption(t *testing.T) {
	on, off := open(t, gpu.Options{PDL: true}), open(t, gpu.Options{})
	if off.PDL() {
		t.Error("PDL without Options.PDL")
	}
	if on.PDL() != on.Context().PDL() {
		t.Errorf("Options.PDL: Backend.PDL %v, but the context can: %v", on.PDL(), on.Context().PDL())
	}
	if cuda.Emulated && !on.PDL() {
		t.Error("the emulated sm_90 has programmatic dependent launch")
	}
	r := rand.New(rand.NewPCG(51, 52))
	const n, K, N = 3, 256, 68
	wdata, xdata := normal(r, N*K), normal(r, n*K)
	var got [2][]float32
	for i, be := range []*gpu.Backend{on, off} {
		w := uploadWeight(t, be, tensor.F16, N, K, wdata)
		x, out := newBuf(t, be, n, K, xdata), newBuf(t, be, n, N, nil)
		be.MatMul(out, x, w, n)
		be.SwiGLU(out, out, out, n) // a second kernel reading the first's output
		got[i] = read(t, be, out, n)
	}
	for i := range got[1] {
		if math.Float32bits(got[0][i]) != math.Float32bits(got[1][i]) {
			t.Fatalf("element %d: %v with PDL, %v without", i, got[0][i], got[1][i])
		}
	}
}

// TestGEMVSplit: gemv v3 gives the same bits whatever its K split (ks = 1, 2, 4 warps per row
// group: chosen on the host from the rows and the SM count, so it differs between GPUs and between
// a fused grid and its unfused matrices), plain, fused q/k/v and fused gate/up alike; so does v4
// (tensor cores: ks = 4, 8 warps per 16-row tile, here at every row count, one included; also
// for Q8_0 and Q4_0, whose other path is v2's); and they agree with v2 and the naive v1 to fp32
// rounding (v4 too: x keeps fp32's accuracy).
func TestGEMVSplit(t *testing.T) {
	bes := map[string]*gpu.Backend{"v2": open(t, gpu.Options{NoCublas: true, GEMVv2: true}), "v1": open(t, gpu.Options{NoCublas: true, Naive: true})}
	for _, ks := range []int{1, 2, 4} {
		bes[fmt.Sprint("ks=", ks)] = open(t, gpu.Options{NoCublas: true, GEMVSplit: ks, GEMVv3: true})
	}
	// v4 (tensor cores) at every row count, with each of its splits.
	for _, ks := range []int{4, 8} {
		bes[fmt.Sprint("v4 ks=", ks)] = open(t, gpu.Options{NoCublas: true, GEMVv4Split: ks, GEMVv4OneRow: true})
	}
	order := []string{"ks=1", "ks=2", "ks=4", "v4 ks=4", "v4 ks=8", "v2", "v1"}
	r := rand.New(rand.NewPCG(31, 32))
	K, N, kvN := 512, 260, 66 // N, kvN: tails of 4-row groups; K: 1 vector per lane per K group and more
	if !cuda.Emulated {
		K, N, kvN = 4096, 4100, 1026
	}
	for _, d := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16, tensor.Q8_0, tensor.Q4_0} {
		wdata := [4][]float32{normal(r, N*K), normal(r, kvN*K), normal(r, kvN*K), normal(r, N*K)}
		for _, n := range []int{1, 3, 8} {
			t.Run(fmt.Sprintf("%v/n=%d", d, n), func(t *testing.T) {
				xdata := normal(r, n*K)
				got := map[string][][]float32{} // backend → [matmul, q, k, v, glu]
				for _, name := range order {
					be := bes[name]
					var ws [4]model.Weight
					for i, rows := range []int{N, kvN, kvN, N} {
						ws[i] = uploadWeight(t, be, d, rows, K, wdata[i])
					}
					x := newBuf(t, be, n, K, xdata)
					mm, q, k, v := newBuf(t, be, n, N, nil), newBuf(t, be, n, N, nil), newBuf(t, be, n, kvN, nil), newBuf(t, be, n, kvN, nil)
					glu, tmp := newBuf(t, be, n, N, nil), newBuf(t, be, n, N, nil)
					be.MatMul(mm, x, ws[0], n)
					be.MatMulQKV(q, k, v, x, ws[0], ws[1], ws[2], n)
					be.MatMulSwiGLU(glu, tmp, x, ws[0], ws[3], n)
					got[name] = [][]float32{read(t, be, mm, n), read(t, be, q, n), read(t, be, k, n), read(t, be, v, n), read(t, be, glu, n)}
				}
				what := []string{"MatMul", "MatMulQKV q", "MatMulQKV k", "MatMulQKV v", "MatMulSwiGLU"}
				ref := got["ks=1"]
				// Within ks=1: the fused q equals the plain MatMul of the same matrix.
				for i := range ref[0] {
					if math.Float32bits(ref[0][i]) != math.Float32bits(ref[1][i]) {
						t.Fatalf("ks=1: MatMulQKV q[%d] = %v, MatMul %v", i, ref[1][i], ref[0][i])
					}
				}
				// v4 ran: F16 and BF16 rows that are v3's sums to rounding, not v3's bits.
				if d != tensor.F32 && slices.EqualFunc(got["v4 ks=4"][0], ref[0], func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }) {
					t.Fatal("v4 ks=4: MatMul gives v3's bits: the tensor-core kernel did not run")
				}
				// The same within v4, ks=4: its q is its MatMul.
				for i, w := range got["v4 ks=4"][0] {
					if g := got["v4 ks=4"][1][i]; math.Float32bits(g) != math.Float32bits(w) {
						t.Fatalf("v4 ks=4: MatMulQKV q[%d] = %v, MatMul %v", i, g, w)
					}
				}
				for _, name := range order[1:] {
					for j := range ref {
						for i := range ref[j] {
							g, w := got[name][j][i], ref[j][i]
							if name == "v4 ks=8" { // v4's bits do not depend on its split either
								if w4 := got["v4 ks=4"][j][i]; math.Float32bits(g) != math.Float32bits(w4) {
									t.Fatalf("%s: %s[%d] = %v, v4 ks=4 gives %v", name, what[j], i, g, w4)
								}
							}
							if name[0] == 'k' {
								if math.Float32bits(g) != math.Float32bits(w) {
									t.Fatalf("%s: %s[%d] = %v, ks=1 gives %v", name, what[j], i, g, w)
								}
							} else if diff := math.Abs(float64(g - w)); diff > 1e-4*math.Sqrt(float64(K))*(1+math.Abs(float64(w))) {
								t.Fatalf("%s: %s[%d] = %v, v3 gives %v (|Δ| %.3g)", name, what[j], i, g, w, diff)
							}
						}
					}
				}
			})
		}
	}
}

// TestMatMulFFN: the feed-forward block in one op. Where it keeps gate, up and h in the weight
// dtype (prefill: more than 8 rows with cuBLAS, F16 or BF16 weights) it matches a float64
// reference built from the same rounded x and weights, to the rounding of gate, up and h, and
// launches 2 kernels (x's rounding, SwiGLU) where MatMulSwiGLU then MatMul launch 4; out may be
// x. Elsewhere (decode, F32 or Q8_0 weights, no cuBLAS, Options.F32Intermediates) it is MatMulSwiGLU
// then MatMul, bit for bit.
func TestMatMulFFN(t *testing.T) {
	dim, ffn := 64, 224
	if !cuda.Emulated {
		dim, ffn = 4096, 11008
	}
	bes := map[string]*gpu.Backend{"cublas": open(t, gpu.Options{}), "no-cublas": open(t, gpu.Options{NoCublas: true}),
		"f32-intermediates": open(t, gpu.Options{F32Intermediates: true})}
	r := rand.New(rand.NewPCG(61, 62))
	for _, tc := range []struct {
		be    string
		d     tensor.DType
		n     int
		fused bool // gate, up and h in the weight dtype
	}{
		{"cublas", tensor.F16, 1, false},
		{"cublas", tensor.F16, 8, false},
		{"cublas", tensor.F16, 9, true},
		{"cublas", tensor.F16, 21, true},
		{"cublas", tensor.BF16, 13, true},
		{"cublas", tensor.F32, 12, false},
		{"cublas", tensor.Q8_0, 12, false},
		{"no-cublas", tensor.F16, 12, false},
		{"f32-intermediates", tensor.F16, 12, false},
	} {
		t.Run(fmt.Sprintf("%s/%v/n=%d", tc.be, tc.d, tc.n), func(t *testing.T) {
			be := bes[tc.be]
			n := tc.n
			xs := normal(r, n*dim)
			wdata := [3][]float32{normal(r, ffn*dim), normal(r, ffn*dim), normal(r, dim*ffn)}
			for i := range wdata[2] {
				wdata[2][i] *= 0.05 // keep h·down near 1
			}
			gate, up, down := uploadWeight(t, be, tc.d, ffn, dim, wdata[0]), uploadWeight(t, be, tc.d, ffn, dim, wdata[1]), uploadWeight(t, be, tc.d, dim, ffn, wdata[2])
			// The op as the forward pass calls it: out is x.
			x, h, tmp := newBuf(t, be, n, dim, xs), newBuf(t, be, n, ffn, nil), newBuf(t, be, n, ffn, nil)
			before := be.Launches()
			be.MatMulFFN(x, h, tmp, x, gate, up, down, n)
			launched := be.Launches() - before
			got := read(t, be, x, n)
			// The unfused sequence.
			x2, h2, tmp2, out2 := newBuf(t, be, n, dim, xs), newBuf(t, be, n, ffn, nil), newBuf(t, be, n, ffn, nil), newBuf(t, be, n, dim, nil)
			before = be.Launches()
			be.MatMulSwiGLU(h2, tmp2, x2, gate, up, n)
			be.MatMul(out2, h2, down, n)
			unfusedLaunches := be.Launches() - before
			want := read(t, be, out2, n)
			if !tc.fused {
				same(t, "MatMulFFN", got, want)
				if launched != unfusedLaunches {
					t.Errorf("%d launches, MatMulSwiGLU then MatMul: %d", launched, unfusedLaunches)
				}
				return
			}
			if launched != 2 || unfusedLaunches != 4 {
				t.Errorf("%d launches (want 2: x's rounding, SwiGLU), unfused %d (want 4)", launched, unfusedLaunches)
			}
			// float64 reference from what cuBLAS multiplies: x and the weights rounded to d.
			round := func(v []float32) []float64 {
				dec := make([]float32, len(v))
				tensor.Decode(dec, tc.d, tensor.Encode(tc.d, v))
				return f64(dec)
			}
			xr, wg, wu, wd := round(xs), round(wdata[0]), round(wdata[1]), round(wdata[2])
			eps := math.Ldexp(1, -10) // fp16: gate, up and h each rounded once (2⁻¹¹), with room
			if tc.d == tensor.BF16 {
				eps = math.Ldexp(1, -7)
			}
			for i := 0; i < n; i++ {
				hr := make([]float64, ffn)
				for j := range hr {
					var g, u float64
					for k := 0; k < dim; k++ {
						g += xr[i*dim+k] * wg[j*dim+k]
						u += xr[i*dim+k] * wu[j*dim+k]
					}
					hr[j] = g / (1 + math.Exp(-g)) * u
				}
				for o := 0; o < dim; o++ {
					var s, mag float64
					for j, hv := range hr {
						s += hv * wd[o*ffn+j]
						mag += math.Abs(hv * wd[o*ffn+j])
					}
					// gate and up rounded (each moves h by ≤ eps, silu's slope ≤ 1.1), then h: ≤ 3.2·eps·Σ|h·w|.
					tol := 1e-4 + 3.5*eps*mag
					if d := math.Abs(float64(got[i*dim+o]) - s); d > tol {
						t.Fatalf("row %d, out %d: %v, float64 reference %v (|Δ| %.3g > %.3g)", i, o, got[i*dim+o], s, d, tol)
					}
					if d := math.Abs(float64(want[i*dim+o]) - s); d > tol {
						t.Fatalf("unfused: row %d, out %d: %v, float64 reference %v (|Δ| %.3g > %.3g)", i, o, want[i*dim+o], s, d, tol)
					}
				}
			}
		})
	}
}

// same fails t at the first element whose bits differ.
func same(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: element %d is %v fused, %v unfused", what, i, got[i], want[i])
		}
	}
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// TestMatMulQKVSharesRounding: for more than 8 rows with cuBLAS, MatMulQKV rounds x to the weight
// dtype once for its three GEMMs (one launch) where three MatMuls round it three times, and the
// results are the same bits.
func TestMatMulQKVSharesRounding(t *testing.T) {
	be := open(t, gpu.Options{})
	r := rand.New(rand.NewPCG(71, 72))
	const n, dim, kv = 12, 128, 40
	for _, d := range []tensor.DType{tensor.F16, tensor.BF16} {
		ws := []model.Weight{uploadWeight(t, be, d, dim, dim, normal(r, dim*dim)), uploadWeight(t, be, d, kv, dim, normal(r, kv*dim)), uploadWeight(t, be, d, kv, dim, normal(r, kv*dim))}
		x := newBuf(t, be, n, dim, normal(r, n*dim))
		var outs [2][3]model.Buffer
		var launches [2]int64
		for path := range outs {
			outs[path] = [3]model.Buffer{newBuf(t, be, n, dim, nil), newBuf(t, be, n, kv, nil), newBuf(t, be, n, kv, nil)}
			before := be.Launches()
			if path == 0 {
				be.MatMulQKV(outs[0][0], outs[0][1], outs[0][2], x, ws[0], ws[1], ws[2], n)
			} else {
				for j := range ws {
					be.MatMul(outs[1][j], x, ws[j], n)
				}
			}
			launches[path] = be.Launches() - before
		}
		if launches[0] != 1 || launches[1] != 3 {
			t.Errorf("%v: %d launches fused (want 1: x's rounding), %d as three MatMuls (want 3)", d, launches[0], launches[1])
		}
		for j, what := range []string{"q", "k", "v"} {
			same(t, fmt.Sprintf("%v: MatMulQKV %s", d, what), read(t, be, outs[0][j], n), read(t, be, outs[1][j], n))
		}
	}
}

// TestForwardFusesFFN: a prefill step of an F16 model runs the feed-forward block through
// MatMulFFN's fp16 path — 2 launches a layer fewer than under Options.F32Intermediates — and its
// logits agree with the unfused pass to the rounding of gate and up; the decode step after it,
// on the GEMV path either way, too.
func TestForwardFusesFFN(t *testing.T) {
	cfg := model.Tiny
	const prompt = 24
	var launches [2]int64
	var logits [2][]float32
	for i, opts := range []gpu.Options{{Weights: tensor.F16}, {Weights: tensor.F16, F32Intermediates: true}} {
		be := open(t, opts)
		m, err := model.New(be, cfg, model.Synthetic(cfg, 5, tensor.F16), nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := m.NewState(prompt, prompt, 16, 4)
		if err != nil {
			t.Fatal(err)
		}
		bt := &model.Batch{BlockTables: [][]int32{{2, 0, 3, 1}}}
		rows := make([]int32, prompt)
		for p := range prompt {
			bt.Tokens, bt.Pos, bt.Seq = append(bt.Tokens, int32(p*13%cfg.Vocab)), append(bt.Pos, int32(p)), append(bt.Seq, 0)
			rows[p] = int32(p)
		}
		before := be.Launches()
		l, err := m.Forward(s, bt, rows)
		if err != nil {
			t.Fatal(err)
		}
		launches[i] = be.Launches() - before
		logits[i] = append(logits[i], l...)
		dec := &model.Batch{Tokens: []int32{9}, Pos: []int32{prompt}, Seq: []int32{0}, BlockTables: bt.BlockTables}
		if l, err = m.Forward(s, dec, []int32{0}); err != nil {
			t.Fatal(err)
		}
		logits[i] = append(logits[i], l...)
	}
	if launches[1]-launches[0] != int64(2*cfg.Layers) {
		t.Errorf("prefill launched %d kernels fused and %d unfused: want 2 per layer fewer", launches[0], launches[1])
	}
	var scale, diff float64
	for i := range logits[0] {
		scale = max(scale, math.Abs(float64(logits[1][i])))
		diff = max(diff, math.Abs(float64(logits[0][i]-logits[1][i])))
	}
	if diff > 5e-3*scale || diff == 0 {
		t.Errorf("logits: max |fused − unfused| %.3g at scale %.3g: want within 0.5%% of it, and not 0 (the fp16 path must run)", diff, scale)
	}
	t.Logf("max |fused − unfused| %.3g, logits up to %.3g", diff, scale)
}

// TestQKVRoPEStoreKVPrefill: for more than 8 rows with cuBLAS, MatMulQKVRoPEStoreKV keeps q, k
// and v in the weight dtype between the GEMMs and the rotation (rope_qk_store_kv_<kv>_from_<dt>):
// q and both caches agree with the fp32 path (Options.F32Intermediates: MatMulQKV then
// RoPEStoreKV) to that rounding — fp16 and bf16 weights, fp16 and fp32 caches, GQA, paged
// positions across blocks and two sequences — and are not its bits (the path ran).
func TestQKVRoPEStoreKVPrefill(t *testing.T) {
	heads, kvHeads, hd, dim := 8, 2, 16, 128
	const bs, numBlocks, theta, n = 4, 16, 10000, 12
	l := model.KVLayout{Layers: 2, KVHeads: kvHeads, HeadDim: hd, BlockSize: bs, NumBlocks: numBlocks}
	bt := &model.Batch{BlockTables: [][]int32{{9, 3, 14, 0, 7}, {11, 2}}}
	for i := 0; i < n; i++ { // 9 rows of sequence 0 from position 5, 3 of sequence 1 from 0
		seq, p := 0, 5+i
		if i >= 9 {
			seq, p = 1, i-9
		}
		bt.Tokens, bt.Pos, bt.Seq = append(bt.Tokens, 0), append(bt.Pos, int32(p)), append(bt.Seq, int32(seq))
	}
	r := rand.New(rand.NewPCG(81, 82))
	for _, d := range []tensor.DType{tensor.F16, tensor.BF16} {
		for _, kvF32 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/kv-f32=%v", d, kvF32), func(t *testing.T) {
				wdata := [3][]float32{normal(r, heads*hd*dim), normal(r, kvHeads*hd*dim), normal(r, kvHeads*hd*dim)}
				x := normal(r, n*dim)
				var got [2][3][]float32 // path (half, f32) → q, K cache, V cache
				for path, f32 := range []bool{false, true} {
					be := open(t, gpu.Options{KVF32: kvF32, F32Intermediates: f32})
					if !be.HasCublas() {
						t.Fatal("no cuBLAS")
					}
					var ws [3]model.Weight
					for i, rows := range []int{heads * hd, kvHeads * hd, kvHeads * hd} {
						ws[i] = uploadWeight(t, be, d, rows, dim, wdata[i])
					}
					c, err := be.NewKVCache(l)
					if err != nil {
						t.Fatal(err)
					}
					xb := newBuf(t, be, n, dim, x)
					q, k, v := newBuf(t, be, n, heads*hd, nil), newBuf(t, be, n, kvHeads*hd, nil), newBuf(t, be, n, kvHeads*hd, nil)
					be.MatMulQKVRoPEStoreKV(q, k, v, xb, ws[0], ws[1], ws[2], c, 1, bt, hd, theta)
					got[path][0] = read(t, be, q, n)
					gc := c.(*gpu.KVCache)
					ed := tensor.F16
					if kvF32 {
						ed = tensor.F32
					}
					size := l.Layers * numBlocks * bs * kvHeads * hd
					for j, p := range []cuda.DevicePtr{gc.K(), gc.V()} {
						raw := make([]byte, size*be.KVElementBytes())
						if err := be.Context().CopyDtoH(raw, p); err != nil {
							t.Fatal(err)
						}
						got[path][1+j] = make([]float32, size)
						tensor.Decode(got[path][1+j], ed, raw)
					}
				}
				// q, k, v ~ N(0, dim): rounding them to d before the rotation moves each rotated
				// element by at most 2 units of d's last place of the pair's magnitude.
				ulp := math.Ldexp(1, -10)
				if d == tensor.BF16 {
					ulp = math.Ldexp(1, -7)
				}
				for j, what := range []string{"q", "K cache", "V cache"} {
					var scale, diff float64
					for i, w := range got[1][j] {
						scale = max(scale, math.Abs(float64(w)))
						diff = max(diff, math.Abs(float64(got[0][j][i]-w)))
					}
					if diff > 4*ulp*scale {
						t.Errorf("%s: max |Δ| %.3g against the fp32 path, at scale %.3g (allowed %.3g)", what, diff, scale, 4*ulp*scale)
					}
					if j < 2 && diff == 0 { // V: the cache's rounding of the fp32 v equals d's when the cache is f16 and d is
						t.Errorf("%s: the same bits as the fp32 path: the %v path did not run", what, d)
					}
				}
			})
		}
	}
}
