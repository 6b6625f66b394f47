package model_test

import (
	"fmt"
	"testing"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// ffnCounter is a Backend with the fused feed-forward op (model.FFNMatMuler), built from the
// wrapped backend's own ops, that counts its calls and the plain MatMuls made around it.
type ffnCounter struct {
	model.Backend
	ffn, matmuls int
}

func (f *ffnCounter) MatMul(out, x model.Buffer, w model.Weight, n int) {
	f.matmuls++
	f.Backend.MatMul(out, x, w, n)
}

func (f *ffnCounter) MatMulFFN(out, h, tmp, x model.Buffer, gate, up, down model.Weight, n int) {
	f.ffn++
	f.Backend.MatMul(h, x, gate, n)
	f.Backend.MatMul(tmp, x, up, n)
	f.Backend.SwiGLU(h, h, tmp, n)
	f.Backend.MatMul(out, h, down, n)
}

// TestForwardFusesFeedForward: a backend with MatMulFFN gets one call per layer per step and no
// separate gate, up or down MatMul (4 per layer: q, k, v, o; plus the LM head), with the logits
// of the unfused forward pass bit for bit — prefill and decode; a layer with a low-rank pair on
// W1, W3 or W2 runs unfused (the pairs read and write the intermediates).
func TestForwardFusesFeedForward(t *testing.T) {
	cfg := model.Tiny
	src := model.Synthetic(cfg, 1, tensor.F32)
	base := cpu.New(cpu.Options{Threads: 2})
	defer base.Close()
	for _, lowRank := range []bool{false, true} {
		t.Run(fmt.Sprintf("low-rank=%v", lowRank), func(t *testing.T) {
			fused := &ffnCounter{Backend: base}
			var ms [2]*model.Model
			for i, be := range []model.Backend{base, fused} {
				m, err := model.New(be, cfg, src, nil)
				if err != nil {
					t.Fatal(err)
				}
				if lowRank {
					for name, p := range lowRankPairs(cfg, 2) {
						if err := m.AddLowRank(name, p[0], p[1]); err != nil {
							t.Fatal(err)
						}
					}
				}
				ms[i] = m
			}
			unfusedLayers, pairMatMuls := 0, 0
			if lowRank {
				unfusedLayers = 2                           // lowRankPairs: layer 2 (W1, W2) and layer 3 (W3)
				pairMatMuls = 2 * len(lowRankPairs(cfg, 2)) // x·Aᵀ, then ·Bᵀ
			}
			fusedLayers := cfg.Layers - unfusedLayers
			// Prefill of the prompt in one step, logits for every row.
			rows := make([]int32, len(prompt))
			for i := range rows {
				rows[i] = int32(i)
			}
			var got [2][]float32
			for i, m := range ms {
				s, err := m.NewState(len(prompt), len(prompt), 4, 16)
				if err != nil {
					t.Fatal(err)
				}
				l, err := m.Forward(s, prefillBatch(prompt), rows)
				if err != nil {
					t.Fatal(err)
				}
				got[i] = append([]float32(nil), l...)
			}
			if fused.ffn != fusedLayers {
				t.Errorf("prefill: %d MatMulFFN calls, want %d (one per layer without a low-rank pair on the FFN)", fused.ffn, fusedLayers)
			}
			if want := 4*cfg.Layers + 3*unfusedLayers + pairMatMuls + 1; fused.matmuls != want {
				t.Errorf("prefill: %d plain MatMuls around MatMulFFN, want %d", fused.matmuls, want)
			}
			if d := maxDiff(got[0], got[1]); d != 0 {
				t.Errorf("prefill: logits differ from the unfused pass by %g", d)
			}
			// Decode, one token at a time.
			fused.ffn = 0
			want, gotDec := seqLogits(t, ms[0], prompt[:5], []int32{0, 1}), seqLogits(t, ms[1], prompt[:5], []int32{0, 1})
			if fused.ffn != 5*fusedLayers {
				t.Errorf("decode: %d MatMulFFN calls over 5 steps, want %d", fused.ffn, 5*fusedLayers)
			}
			for i := range want {
				if d := maxDiff(want[i], gotDec[i]); d != 0 {
					t.Errorf("decode step %d: logits differ from the unfused pass by %g", i, d)
				}
			}
		})
	}
}
