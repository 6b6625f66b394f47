//go:build cuda || cudaemu

package gpu

import (
	"testing"

	"github.com/llamacu/llamacu/tensor"
)

// Which weights take the fused decode kernels (TestFusedOps checks that those equal the unfused
// sequence): every dtype with a gemv_<dt>_v2_glu kernel for gate/up, and Q4_K/Q5_K but not for
// q/k/v (no gemv_<q>_v2_qkv kernel); never mixed dtypes, more than 8 rows, or Options.Naive.
func TestFusable(t *testing.T) {
	w := func(d tensor.DType, cols int) *Weight {
		return &Weight{dtype: d, rows: 8, cols: cols, shape: []int{8, cols}}
	}
	b := &Backend{}
	for _, tc := range []struct {
		d        tensor.DType
		qkv, glu bool
	}{
		{tensor.F32, true, true}, {tensor.F16, true, true}, {tensor.BF16, true, true},
		{tensor.Q8_0, true, true}, {tensor.Q4_0, true, true},
		{tensor.Q4_K, false, true}, {tensor.Q5_K, false, true}, {tensor.Q6_K, false, false},
	} {
		if got := b.fusable(1, false, w(tc.d, 512), w(tc.d, 512), w(tc.d, 512)); got != tc.qkv {
			t.Errorf("%v q/k/v fusable %v, want %v", tc.d, got, tc.qkv)
		}
		if got := b.fusable(1, true, w(tc.d, 512), w(tc.d, 512)); got != tc.glu {
			t.Errorf("%v gate/up fusable %v, want %v", tc.d, got, tc.glu)
		}
		if b.fusable(9, true, w(tc.d, 512), w(tc.d, 512)) {
			t.Errorf("%v: fusable with 9 rows", tc.d)
		}
	}
	if b.fusable(1, true, w(tensor.Q4_K, 512), w(tensor.Q6_K, 512)) {
		t.Error("mixed Q4_K/Q6_K gate/up fusable")
	}
	b.opts.Naive = true
	if b.fusable(1, true, w(tensor.F16, 512), w(tensor.F16, 512)) {
		t.Error("fusable under Options.Naive")
	}
}
