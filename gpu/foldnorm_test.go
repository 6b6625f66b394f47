//go:build cuda || cudaemu

package gpu_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/llamacu/llamacu/cuda"
	"github.com/llamacu/llamacu/gpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// closeAll fails unless every got[i] is within atol + rtol·|want[i]| of want[i].
func closeAll(t *testing.T, what string, got, want []float32, atol, rtol float64) {
	t.Helper()
	bad, worst := 0, 0.0
	for i := range want {
		d := math.Abs(float64(got[i] - want[i]))
		worst = max(worst, d)
		if !(d <= atol+rtol*math.Abs(float64(want[i]))) {
			if bad == 0 {
				t.Errorf("%s[%d]: %v, want %v", what, i, got[i], want[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values out of tolerance (max |diff| %.3g)", what, bad, len(want), worst)
	}
}

// TestFoldNorm: model.NormFolder's two ops against their definition — AddRMSNorm into another
// buffer, then MatMulQKVRoPEStoreKV or MatMulFFN — on the v3n kernels (one row; fp32, fp16 and
// bf16 weights; fp32 and fp16 caches) and where they fall back (3 rows, Q8_0 weights,
// Options.SeparateNorm): the sum the same bits, the outputs and the cache within fp32 rounding
// (and a one-rounding flip of an fp16 cache element); the folded op in one launch (two for the
// feed-forward block: the down projection) where it applies.
func TestFoldNorm(t *testing.T) {
	heads, kvHeads, hd, dim, ffn := 8, 2, 16, 128, 352
	if !cuda.Emulated {
		heads, kvHeads, hd, dim, ffn = 32, 8, 128, 4096, 11008
	}
	const bs, numBlocks, theta, eps = 4, 16, 10000, 1e-5
	l := model.KVLayout{Layers: 2, KVHeads: kvHeads, HeadDim: hd, BlockSize: bs, NumBlocks: numBlocks}
	batch := func(n int) *model.Batch {
		bt := &model.Batch{BlockTables: [][]int32{{9, 3, 14, 0, 7}, {11}}}
		for i := 0; i < n; i++ { // sequence 0 from position 6 (across blocks), 1 from 1
			pos := 6 + i
			if i%2 == 1 {
				pos = 1 + i/2
			}
			bt.Tokens, bt.Pos, bt.Seq = append(bt.Tokens, 0), append(bt.Pos, int32(pos)), append(bt.Seq, int32(i%2))
		}
		return bt
	}
	r := rand.New(rand.NewPCG(51, 52))
	for _, tc := range []struct {
		name   string
		opts   gpu.Options
		d      tensor.DType
		n      int
		folded bool
	}{
		{"f16/n=1", gpu.Options{}, tensor.F16, 1, true},
		{"bf16/n=1", gpu.Options{}, tensor.BF16, 1, true},
		{"f32/n=1/kv-f32", gpu.Options{KVF32: true}, tensor.F32, 1, true},
		{"f16/n=1/kv-f32", gpu.Options{KVF32: true}, tensor.F16, 1, true},
		{"f16/n=3", gpu.Options{}, tensor.F16, 3, false}, // v4
		{"f16/n=3/gemv-v3", gpu.Options{GEMVv3: true}, tensor.F16, 3, false},
		{"q8_0/n=1", gpu.Options{}, tensor.Q8_0, 1, false}, // no v3n kernel
		{"f16/n=1/separate", gpu.Options{SeparateNorm: true}, tensor.F16, 1, false},
		{"f16/n=1/naive", gpu.Options{Naive: true}, tensor.F16, 1, false}, // add_rmsnorm's copy fallback
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := open(t, tc.opts)
			n, bt := tc.n, batch(tc.n)
			var ws [3]model.Weight
			for i, rows := range []int{heads * hd, kvHeads * hd, kvHeads * hd} {
				ws[i] = uploadWeight(t, be, tc.d, rows, dim, normal(r, rows*dim))
			}
			w1, w3, w2 := uploadWeight(t, be, tc.d, ffn, dim, normal(r, ffn*dim)), uploadWeight(t, be, tc.d, ffn, dim, normal(r, ffn*dim)),
				uploadWeight(t, be, tc.d, dim, ffn, normal(r, dim*ffn))
			norm := uploadWeight(t, be, tensor.F32, 1, dim, normal(r, dim))
			x, y := normal(r, n*dim), normal(r, n*dim)

			// The attention block: path 0 folded, path 1 its definition.
			var qkv [2][5][]float32 // q, k, v (unused: k, v scratch), K cache, V cache
			var sums [2][]float32
			for path := range 2 {
				c, err := be.NewKVCache(l)
				if err != nil {
					t.Fatal(err)
				}
				xb, yb, xo := newBuf(t, be, n, dim, x), newBuf(t, be, n, dim, y), newBuf(t, be, n, dim, nil)
				q, k, v := newBuf(t, be, n, heads*hd, nil), newBuf(t, be, n, kvHeads*hd, nil), newBuf(t, be, n, kvHeads*hd, nil)
				before := be.Launches()
				if path == 0 {
					be.AddRMSNormQKVRoPEStoreKV(xo, yb, xb, yb, norm, eps, q, k, v, ws[0], ws[1], ws[2], c, 1, bt, hd, theta)
					if launched := be.Launches() - before; (launched == 1) != tc.folded {
						t.Errorf("attention block: %d launches (folded: %v)", launched, tc.folded)
					}
				} else {
					h := newBuf(t, be, n, dim, nil)
					be.AddRMSNorm(h, xb, yb, norm, n, eps)
					be.MatMulQKVRoPEStoreKV(q, k, v, h, ws[0], ws[1], ws[2], c, 1, bt, hd, theta)
					xo = xb
				}
				sums[path] = read(t, be, xo, n)
				qkv[path][0] = read(t, be, q, n)
				gc := c.(*gpu.KVCache)
				for j, p := range []cuda.DevicePtr{gc.K(), gc.V()} {
					raw := make([]byte, l.Layers*numBlocks*bs*kvHeads*hd*be.KVElementBytes())
					if err := be.Context().CopyDtoH(raw, p); err != nil {
						t.Fatal(err)
					}
					d := tensor.F16
					if tc.opts.KVF32 {
						d = tensor.F32
					}
					qkv[path][3+j] = make([]float32, len(raw)/d.BlockBytes())
					tensor.Decode(qkv[path][3+j], d, raw)
				}
			}
			same(t, "attention block: x + y", sums[0], sums[1])
			closeAll(t, "attention block: q", qkv[0][0], qkv[1][0], 1e-3, 1e-4)
			ctol := 1e-4
			if !tc.opts.KVF32 {
				ctol = 1e-3 // an fp16 element a rounding apart
			}
			closeAll(t, "attention block: K cache", qkv[0][3], qkv[1][3], 1e-3, ctol)
			closeAll(t, "attention block: V cache", qkv[0][4], qkv[1][4], 1e-3, ctol)

			// The feed-forward block.
			var outs [2][]float32
			for path := range 2 {
				xb, yb, xo := newBuf(t, be, n, dim, x), newBuf(t, be, n, dim, y), newBuf(t, be, n, dim, nil)
				hb, tmp := newBuf(t, be, n, ffn, nil), newBuf(t, be, n, ffn, nil)
				before := be.Launches()
				if path == 0 {
					be.AddRMSNormFFN(xo, yb, xb, yb, norm, eps, yb, hb, tmp, w1, w3, w2, n)
					if launched := be.Launches() - before; (launched == 2) != tc.folded {
						t.Errorf("feed-forward block: %d launches (folded: %v)", launched, tc.folded)
					}
				} else {
					be.AddRMSNorm(yb, xb, yb, norm, n, eps)
					be.MatMulFFN(yb, hb, tmp, yb, w1, w3, w2, n)
					xo = xb
				}
				sums[path] = read(t, be, xo, n)
				outs[path] = read(t, be, yb, n)
			}
			same(t, "feed-forward block: x + y", sums[0], sums[1])
			scale := 0.0
			for _, v := range outs[1] {
				scale = max(scale, math.Abs(float64(v)))
			}
			closeAll(t, "feed-forward block: out", outs[0], outs[1], 1e-5*scale, 1e-4)
		})
	}
}

// TestFoldNormChecks: the folded ops refuse aliasing that the kernels cannot take — the sum
// written over x or y — with a panic naming the op (the model never asks for it).
func TestFoldNormChecks(t *testing.T) {
	be := open(t, gpu.Options{})
	const dim, ffn = 64, 96
	r := rand.New(rand.NewPCG(53, 54))
	w1, w3, w2 := uploadWeight(t, be, tensor.F16, ffn, dim, normal(r, ffn*dim)), uploadWeight(t, be, tensor.F16, ffn, dim, normal(r, ffn*dim)),
		uploadWeight(t, be, tensor.F16, dim, ffn, normal(r, dim*ffn))
	norm := uploadWeight(t, be, tensor.F32, 1, dim, normal(r, dim))
	x, y := newBuf(t, be, 1, dim, normal(r, dim)), newBuf(t, be, 1, dim, normal(r, dim))
	hb, tmp := newBuf(t, be, 1, ffn, nil), newBuf(t, be, 1, ffn, nil)
	for _, tc := range []struct {
		name    string
		xout, h model.Buffer
	}{{"sum over y", y, x}, {"out over the sum", newBuf(t, be, 1, dim, nil), nil}} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.h
			if h == nil {
				h = tc.xout
			}
			defer func() {
				if p := recover(); p == nil || !strings.Contains(fmt.Sprint(p), "AddRMSNorm") {
					t.Errorf("panic %v, want one naming AddRMSNorm", p)
				}
			}()
			be.AddRMSNormFFN(tc.xout, h, x, y, norm, 1e-5, y, hb, tmp, w1, w3, w2, 1)
		})
	}
}

// TestForwardFoldsNorm: the forward pass folds the norms — a one-row decode step launches
// 2·layers − 1 kernels fewer than with Options.SeparateNorm (the first layer's attention norm
// follows the embedding, not a residual add) — and its logits agree with the separate norms'
// to fp32 rounding, over several steps (the residual moving between its two buffers).
func TestForwardFoldsNorm(t *testing.T) {
	cfg := model.Tiny
	var launches [2]int64
	var logits [2][]float32
	for i, opts := range []gpu.Options{{Weights: tensor.F16}, {Weights: tensor.F16, SeparateNorm: true}} {
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
		for step := 0; step < 4; step++ {
			bt.Tokens[0], bt.Pos[0] = int32(5+step), int32(step)
			before := be.Launches()
			l, err := m.Forward(s, bt, []int32{0})
			if err != nil {
				t.Fatal(err)
			}
			launches[i] = be.Launches() - before
			logits[i] = append(logits[i], l...)
		}
	}
	if want := int64(2*cfg.Layers - 1); launches[1]-launches[0] != want {
		t.Errorf("a decode step launched %d kernels folded and %d separate: want %d fewer", launches[0], launches[1], want)
	}
	scale := 0.0
	for _, v := range logits[1] {
		scale = max(scale, math.Abs(float64(v)))
	}
	closeAll(t, "logits", logits[0], logits[1], 1e-5*scale, 1e-4)
}
