package main

import (
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/plan"
	"github.com/llamacu/llamacu/tensor"
)

// TestEstimateDecode checks the formula t = S/BW + 2·L·A on hand-worked numbers, and the bytes
// streamed per GPU for Llama-2-70B at TP 8 against its published parameter count
// (68,976,648,192 in the Hugging Face model card/config): every parameter but the embedding table
// and the RMSNorm weights is sharded, in fp16, over 8 GPUs.
func TestEstimateDecode(t *testing.T) {
	for _, tc := range []struct {
		name       string
		r          plan.Report
		layers     int
		gbps, arUs float64
		wantMs     float64
		wantLine   string
	}{
		// 17e9 B / 3000 GB/s = 5.6667 ms; 160 × 20 µs = 3.2 ms.
		{"tp8 with all-reduce", plan.Report{GPUs: 8, Weights: 17.5e9, Replicated: 0.5e9}, 80, 3000, 20, 8.8667, "≈ 113 tokens/s"},
		// No all-reduce cost given: the bound without it, 5.6667 ms.
		{"tp8 without all-reduce cost", plan.Report{GPUs: 8, Weights: 17.5e9, Replicated: 0.5e9}, 80, 3000, 0, 5.6667, "≤ 176 tokens/s"},
		// TP 1 has no all-reduces whatever --allreduce-us says: 13e9 / 3250e9 = 4 ms.
		{"tp1", plan.Report{GPUs: 1, Weights: 13.5e9, Replicated: 0.5e9}, 32, 3250, 25, 4, "≈ 250 tokens/s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := plan.EstimateDecode(tc.r, tc.layers, tc.gbps, tc.arUs)
			require.InDelta(t, tc.wantMs, e.MsPerToken, 1e-3)
			require.InDelta(t, 1e3/tc.wantMs, e.TokensPerSec, 0.1)
			require.Contains(t, e.String(), tc.wantLine)
		})
	}

	cfg, err := model.Preset("70b")
	require.NoError(t, err)
	r, err := plan.Compute(cfg, plan.Options{DType: tensor.F16, KVDType: tensor.F16, GPUs: 8, GPUMem: 80 << 30, Batch: 1})
	require.NoError(t, err)
	const params70B = 68976648192
	norms := int64(2*cfg.Layers+1) * int64(cfg.Dim)
	want := 2 * (params70B - int64(cfg.Vocab)*int64(cfg.Dim) - norms) / 8
	e := plan.EstimateDecode(r, cfg.Layers, plan.DefaultDecodeGBps, 20)
	require.InEpsilon(t, float64(want), float64(e.StreamBytes), 1e-4, "bytes streamed per GPU per token")
	require.Equal(t, 160, e.AllReduces)
	// The 8×H100 figure README quotes: 17.18 GB / 3015 GB/s + 160 × 20 µs = 8.90 ms ⇒ 112 tokens/s.
	require.InDelta(t, 1/(float64(want)/3015e9+160*20e-6), e.TokensPerSec, 0.5)
	require.True(t, strings.HasPrefix(e.String(), "decode estimate, batch 1, TP 8:"), e.String())
	require.False(t, math.IsInf(e.TokensPerSec, 0))
}
