package model_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// SyntheticShard makes, value by value, the bytes that slicing Synthetic's whole tensors makes.
func TestSyntheticShardEqualsShardSource(t *testing.T) {
	mini := model.Config{Name: "70b-mini", Dim: 256, Layers: 2, Heads: 64, KVHeads: 8, FFN: 512, Vocab: 512, MaxSeq: 64, NormEps: 1e-5, RopeTheta: 10000}
	tied := mini
	tied.TiedOutput = true
	big := mini // matrices of over 2^20 values span several random streams
	big.Name, big.Dim, big.FFN, big.Vocab = "70b-mini-big", 1024, 2048, 1024
	for _, c := range []model.Config{model.Tiny, model.Tiny256, mini, tied, big} {
		for _, d := range []tensor.DType{tensor.F32, tensor.F16, tensor.Q8_0, tensor.Q4_0, tensor.Q4_K, tensor.Q6_K} {
			for _, n := range []int{1, 2, 4, 8} {
				if c.CheckTP(n) != nil {
					continue
				}
				for r := range n {
					if c.Name == big.Name && c.Dim == big.Dim && (n != 8 || d != tensor.Q4_0 || (r != 0 && r != 7)) {
						continue // the long rows once are enough
					}
					t.Run(fmt.Sprintf("%s/tied=%v/%v/rank%dof%d", c.Name, c.TiedOutput, d, r, n), func(t *testing.T) {
						want := model.ShardSource(c, model.Synthetic(c, 9, d), r, n)
						got := model.SyntheticShard(c, 9, d, r, n)
						names := []string{model.NameOutput}
						for _, ws := range c.WeightShapes() {
							names = append(names, ws.Name)
						}
						for _, name := range names {
							w, werr := want(name)
							g, gerr := got(name)
							if (werr == nil) != (gerr == nil) {
								t.Fatalf("%s: errors %v and %v", name, werr, gerr)
							}
							if werr != nil {
								continue
							}
							if g.Name != w.Name || g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) || !bytes.Equal(g.Data, w.Data) {
								t.Fatalf("%s: got %s %v %v (%d bytes), want %s %v %v (%d bytes)", name, g.Name, g.DType, g.Shape, len(g.Data), w.Name, w.DType, w.Shape, len(w.Data))
							}
						}
					})
				}
			}
		}
	}
}
