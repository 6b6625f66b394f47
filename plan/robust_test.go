package plan

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// Huge workloads used to wrap int64 around and come out as a small total that "fits" (a context
// of 2^63−1 positions planned as 8 MiB of KV cache). They are ErrOptions now; large but sane ones
// still plan, and do not fit.
func TestComputeHugeWorkloads(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(o *Options)
	}{
		{"ctx max int", func(o *Options) { o.Ctx = math.MaxInt }},
		{"ctx near max int", func(o *Options) { o.Ctx = math.MaxInt - 8 }},
		{"ctx 2^40+1", func(o *Options) { o.Ctx = 1<<40 + 1 }},
		{"batch 1e14", func(o *Options) { o.Batch = 99999999999999 }},
		{"batch max int", func(o *Options) { o.Batch = math.MaxInt }},
		{"tokens per step 1e14", func(o *Options) { o.MaxBatchTokens = 99999999999999 }},
		{"block size max int", func(o *Options) { o.BlockSize = math.MaxInt }},
		{"overhead max int64", func(o *Options) { o.Overhead = math.MaxInt64 }},
		{"ctx × batch", func(o *Options) { o.Ctx, o.Batch = 1<<30, 1<<30 }},
		{"negative memory", func(o *Options) { o.GPUMem = -1 }},
		{"unknown dtype", func(o *Options) { o.DType = tensor.DType(99) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultOptions()
			tc.edit(&o)
			r, err := Compute(model.Llama2_7B, o)
			require.ErrorIs(t, err, ErrOptions, "report: %+v", r)
			if o.GPUMem > 0 { // CheckFits plans nothing for an unknown capacity
				require.ErrorIs(t, CheckFits(model.Llama2_7B, o), ErrOptions)
			}
		})
	}
	// A million sequences of 4096 positions is absurd but plannable: it does not fit.
	o := DefaultOptions()
	o.Batch = 1 << 20
	r, err := Compute(model.Llama2_7B, o)
	require.NoError(t, err)
	require.False(t, r.Fits)
	require.Greater(t, r.Total, int64(1)<<50)
	require.Equal(t, int64(1<<20)*4096*r.KVPerToken, r.KV)
}

// Odd but valid shapes plan without panicking: head_dim 2, a single layer, vocabulary 1.
func TestComputeOddShapes(t *testing.T) {
	for _, cfg := range []model.Config{
		{Name: "hd2", Dim: 8, Layers: 1, Heads: 4, KVHeads: 1, FFN: 8, Vocab: 1, MaxSeq: 1, NormEps: 1e-5, RopeTheta: 1e4},
		{Name: "wide", Dim: 1 << 20, Layers: 1 << 12, Heads: 1 << 10, KVHeads: 1 << 10, FFN: 1 << 22, Vocab: 1 << 24, MaxSeq: 1 << 24, NormEps: 1e-5, RopeTheta: 1e4},
	} {
		require.NoError(t, cfg.Validate())
		for _, d := range []tensor.DType{tensor.F32, tensor.F16, tensor.Q8_0, tensor.Q4_0} {
			o := DefaultOptions()
			o.DType = d
			if _, err := Compute(cfg, o); err != nil {
				require.ErrorIs(t, err, ErrTP) // Q8_0/Q4_0 need rows of whole 32-blocks
			}
			_ = ValidTP(cfg, d)
		}
	}
}
