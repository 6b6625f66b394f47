package model_test

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/sample"
)

// ForwardTopK returns exactly sample.TopK of Forward's logits, at TP 1 and with the vocabulary
// split across 2 and 4 ranks (stories260K: 512 tokens, 128 per rank at TP 4, so k = 200 and 256
// also exercise ranks that hold fewer than k).
func TestForwardTopKEqualsForward(t *testing.T) {
	path := filepath.Join("..", "..", "shared", "testdata", "stories260K", "stories260K.bin")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("test data not found: %s", path)
	}
	f, err := loader.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, n := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("tp%d", n), func(t *testing.T) {
			m := newTP(t, f.Config, f.Tensor, n)
			s, err := m.NewState(8, 3, 16, 4)
			if err != nil {
				t.Fatal(err)
			}
			// A prefill of 8 tokens with logits for 3 of them, run twice at the same positions:
			// the second run rewrites the same K/V, so the logits are the same.
			b := &model.Batch{Tokens: []int32{1, 403, 407, 261, 378, 434, 302, 289}, Pos: []int32{0, 1, 2, 3, 4, 5, 6, 7},
				Seq: []int32{0, 0, 0, 0, 0, 0, 0, 0}, BlockTables: [][]int32{{2}}}
			rows := []int32{7, 0, 4}
			logits, err := m.Forward(s, b, rows)
			if err != nil {
				t.Fatal(err)
			}
			logits = append([]float32(nil), logits...)
			vocab := f.Config.Vocab
			for _, k := range []int{1, 2, 40, 200, 256} {
				vals, ids, err := m.ForwardTopK(s, b, rows, k)
				if err != nil {
					t.Fatal(err)
				}
				if len(vals) != len(rows)*k || len(ids) != len(rows)*k {
					t.Fatalf("k %d: %d values and %d ids for %d rows", k, len(vals), len(ids), len(rows))
				}
				wv, wi := make([]float32, k), make([]int32, k)
				for i := range rows {
					sample.TopK(wv, wi, logits[i*vocab:(i+1)*vocab], k)
					for j := range k {
						g := i*k + j
						if ids[g] != wi[j] || math.Float32bits(vals[g]) != math.Float32bits(wv[j]) {
							t.Fatalf("k %d row %d candidate %d: (%v, %d), want (%v, %d)", k, i, j, vals[g], ids[g], wv[j], wi[j])
						}
					}
				}
			}
			for _, k := range []int{0, -1, sample.MaxTopK + 1} {
				if _, _, err := m.ForwardTopK(s, b, rows, k); !errors.Is(err, model.ErrBatch) {
					t.Errorf("k %d: %v, want ErrBatch", k, err)
				}
			}
		})
	}
}
