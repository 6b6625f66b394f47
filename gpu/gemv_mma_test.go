//go:build cuda || cudaemu

package gpu_test

import (
	"math"
	"testing"

	"github.com/llamacu/llamacu/gpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// TestBatchedDecodeKeepsAccuracy: sequences decoded together (steps of 4 rows: GEMV v4 on the
// tensor cores) get the logits each gets decoded alone (steps of one row: GEMV v3, fp32 x) to
// fp32 rounding — not to the rounding of x to the weight dtype, which an mma fed x as fp16 or
// bf16 would cost (about 2⁻¹¹ or 2⁻⁸ of each product). F16, BF16, Q8_0 and Q4_0 weights (one
// row: v3, or v2 for the quantised); an fp32 KV cache, so that only the matmuls differ.
func TestBatchedDecodeKeepsAccuracy(t *testing.T) {
	cfg := model.Tiny // every K (128, 352) a multiple of v4's 32
	const seqs, steps = 4, 3
	for _, d := range []tensor.DType{tensor.F16, tensor.BF16, tensor.Q8_0, tensor.Q4_0} {
		t.Run(d.String(), func(t *testing.T) {
			stored := d // the dtype the float tensors (norms, embeddings) take on the device
			if d == tensor.Q8_0 || d == tensor.Q4_0 {
				stored = tensor.F16
			}
			var logits [2][]float32 // alone, together: the last step's (seqs, vocab)
			var launches [2]int64
			for path := range logits {
				be := open(t, gpu.Options{Weights: stored, KVF32: true, NoCublas: true})
				m, err := model.New(be, cfg, model.Synthetic(cfg, 7, d), nil)
				if err != nil {
					t.Fatal(err)
				}
				s, err := m.NewState(seqs, seqs, 16, seqs)
				if err != nil {
					t.Fatal(err)
				}
				tables := [][]int32{{2}, {0}, {3}, {1}}
				for step := range steps {
					tok := func(i int) int32 { return int32((i*37 + step*11 + 1) % cfg.Vocab) }
					before := be.Launches()
					if path == 0 {
						for i := range seqs {
							bt := &model.Batch{Tokens: []int32{tok(i)}, Pos: []int32{int32(step)}, Seq: []int32{0}, BlockTables: [][]int32{tables[i]}}
							l, err := m.Forward(s, bt, []int32{0})
							if err != nil {
								t.Fatal(err)
							}
							if step == steps-1 {
								logits[path] = append(logits[path], l...)
							}
						}
					} else {
						bt := &model.Batch{BlockTables: tables}
						for i := range seqs {
							bt.Tokens, bt.Pos, bt.Seq = append(bt.Tokens, tok(i)), append(bt.Pos, int32(step)), append(bt.Seq, int32(i))
						}
						l, err := m.Forward(s, bt, []int32{0, 1, 2, 3})
						if err != nil {
							t.Fatal(err)
						}
						if step == steps-1 {
							logits[path] = append(logits[path], l...)
						}
					}
					launches[path] = be.Launches() - before
				}
			}
			// The same kernels per step (one row or four): the batched step's matmuls are v4's fused
			// ones, as one row's are v3's — but one row folds the residual adds and norms into its
			// q/k/v and gate/up GEMVs (gemv_<dt>_v3n, all but the first layer's attention norm),
			// which four rows launch on their own. Quantised, one a layer fewer: v2 (one row) has
			// no q/k/v kernel with RoPE and the KV store in its epilogue, v4 has (and no v3n).
			want := launches[0]/seqs + int64(2*cfg.Layers-1)
			if stored != d {
				want = launches[0]/seqs - int64(cfg.Layers)
			}
			if launches[0]%seqs != 0 || launches[1] != want {
				t.Errorf("a step launched %d kernels for 4 rows, %d for one: want %d", launches[1], launches[0]/seqs, want)
			}
			maxAbs, maxDiff := 0.0, 0.0
			for i, w := range logits[0] {
				maxAbs = max(maxAbs, math.Abs(float64(w)))
				maxDiff = max(maxDiff, math.Abs(float64(logits[1][i]-w)))
			}
			t.Logf("%v: logits max |Δ| %.3g of max |logit| %.3g", d, maxDiff, maxAbs)
			if maxDiff > 2e-5*maxAbs {
				t.Errorf("%v: 4 rows a step differ from one by %.3g (max |logit| %.3g): more than fp32 rounding", d, maxDiff, maxAbs)
			}
		})
	}
}
