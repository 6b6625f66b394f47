package model_test

import (
	"fmt"
	"testing"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// A column split whose rank's columns are not whole quantisation blocks (Tiny256's FFN, 768 = 3
// blocks of 256, in two; its Wo, 256 columns, in two) is widened: each rank's W2 and Wo are
// F16, and hold exactly the file's decoded values of their columns, rounded to F16. Whole-block
// splits (the same model in Q8_0) keep the file's dtype.
func TestShardWidensPartialBlocks(t *testing.T) {
	c := model.Tiny256
	for _, tc := range []struct {
		dtype tensor.DType
		n     int
		want  tensor.DType
	}{{tensor.Q4_K, 2, model.SplitDType}, {tensor.Q6_K, 2, model.SplitDType}, {tensor.Q8_0, 2, tensor.Q8_0}, {tensor.Q4_K, 1, tensor.Q4_K}} {
		src := model.Synthetic(c, 3, tc.dtype)
		for _, name := range []string{"layers.1." + model.NameW2, "layers.0." + model.NameWo} {
			whole, err := src(name)
			if err != nil {
				t.Fatal(err)
			}
			full := whole.Float32s()
			for r := range tc.n {
				t.Run(fmt.Sprintf("%v/tp%d/%s/rank%d", tc.dtype, tc.n, name, r), func(t *testing.T) {
					got, err := model.ShardSource(c, src, r, tc.n)(name)
					if err != nil {
						t.Fatal(err)
					}
					per := whole.Cols() / tc.n
					if got.DType != tc.want || got.Rows() != whole.Rows() || got.Cols() != per {
						t.Fatalf("shard is %v %v, want %v [%d %d]", got.DType, got.Shape, tc.want, whole.Rows(), per)
					}
					if model.SplitWidens(tc.dtype, whole.Cols(), tc.n) != (tc.want != tc.dtype) {
						t.Fatalf("SplitWidens(%v, %d, %d) disagrees with the shard's dtype", tc.dtype, whole.Cols(), tc.n)
					}
					vals := got.Float32s()
					for i := range got.Rows() {
						for j := range per {
							want := full[i*whole.Cols()+r*per+j]
							if tc.want == tensor.F16 {
								want = tensor.F16ToF32(tensor.F32ToF16(want))
							}
							if vals[i*per+j] != want {
								t.Fatalf("[%d][%d] = %g, want %g", i, j, vals[i*per+j], want)
							}
						}
					}
				})
			}
		}
	}
}

// A Q4_K model whose column splits are widened runs at TP 2 and agrees with TP 1 (the only
// difference: W2 and Wo rounded to F16, 2⁻¹¹ relative, and the all-reduce's order of sums).
func TestTensorParallelWidenedSplit(t *testing.T) {
	c := model.Tiny256
	src := model.Synthetic(c, 5, tensor.Q4_K)
	refIDs, refLogits := greedy(t, newTP(t, c, src, 1), 16)
	ids, logits := greedy(t, newTP(t, c, src, 2), 16)
	if fmt.Sprint(ids) != fmt.Sprint(refIDs) {
		t.Errorf("greedy ids differ: %v vs %v", ids, refIDs)
	}
	worst := 0.0
	for i := range logits {
		worst = max(worst, maxDiff(logits[i], refLogits[i]))
	}
	t.Logf("TP 2, W2 and Wo widened to F16: max |Δlogit| over 16 steps = %.2g", worst)
	if worst > 1e-3 {
		t.Fatalf("max |Δlogit| %g > 1e-3", worst)
	}
}
