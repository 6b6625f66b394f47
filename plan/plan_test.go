package plan

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

const (
	GiB = int64(1) << 30
	KiB = int64(1) << 10
)

// The published parameter counts of Meta's checkpoints (Hugging Face model cards / num_parameters()).
const (
	params7B  = 6_738_415_616
	params13B = 13_015_864_320
	params70B = 68_976_648_192
)

func gpu80(cfg model.Config, t, batch int) Options {
	o := DefaultOptions()
	o.GPUs, o.Batch, o.Ctx = t, batch, 4096
	return o
}

func compute(t *testing.T, cfg model.Config, o Options) Report {
	t.Helper()
	r, err := Compute(cfg, o)
	require.NoError(t, err)
	return r
}

func TestParamsMatchPublishedCounts(t *testing.T) {
	for _, tc := range []struct {
		cfg  model.Config
		want int64
	}{{model.Llama2_7B, params7B}, {model.Llama2_13B, params13B}, {model.Llama2_70B, params70B}} {
		t.Run(tc.cfg.Name, func(t *testing.T) {
			r := compute(t, tc.cfg, DefaultOptions())
			require.Equal(t, tc.want, r.Params)
		})
	}
}

// Weights at TP 1 are every parameter at 2 bytes, plus 2 more bytes for each norm element (F32).
func TestWeightsFP16HandArithmetic(t *testing.T) {
	for _, tc := range []struct {
		cfg    model.Config
		params int64
		gb     float64 // the figure everyone quotes, decimal GB
	}{{model.Llama2_7B, params7B, 13.5}, {model.Llama2_13B, params13B, 26.0}, {model.Llama2_70B, params70B, 138.0}} {
		t.Run(tc.cfg.Name, func(t *testing.T) {
			r := compute(t, tc.cfg, DefaultOptions())
			norms := int64(2*tc.cfg.Layers+1) * int64(tc.cfg.Dim)
			require.Equal(t, 2*tc.params+2*norms, r.Weights)
			require.Equal(t, r.Weights, r.WeightsTotal, "at TP 1 a device holds everything")
			require.InDelta(t, tc.gb, float64(r.Weights)/1e9, 0.1)
		})
	}
}

func TestWeightsQuantized(t *testing.T) {
	cfg := model.Llama2_7B
	norms := int64(65 * 4096)
	for _, tc := range []struct {
		d    tensor.DType
		bits float64 // per matrix element, block scales included
	}{{tensor.F32, 32}, {tensor.BF16, 16}, {tensor.Q8_0, 8.5}, {tensor.Q4_0, 4.5}} {
		t.Run(tc.d.String(), func(t *testing.T) {
			o := DefaultOptions()
			o.DType = tc.d
			r := compute(t, cfg, o)
			want := int64(float64(params7B-norms)*tc.bits/8) + norms*4
			require.Equal(t, want, r.Weights)
		})
	}
}

func TestKVPerToken(t *testing.T) {
	for _, tc := range []struct {
		cfg  model.Config
		kv   tensor.DType
		tp   int
		want int64
	}{
		// 2 (K,V) · layers · kv_heads · head_dim · 2 bytes
		{model.Llama2_7B, tensor.F16, 1, 2 * 32 * 32 * 128 * 2}, // 512 KiB
		{model.Llama2_7B, tensor.F32, 1, 1024 * KiB},
		{model.Llama2_7B, tensor.F16, 4, 128 * KiB},
		{model.Llama2_13B, tensor.F16, 1, 2 * 40 * 40 * 128 * 2}, // 800 KiB
		{model.Llama2_70B, tensor.F16, 1, 2 * 80 * 8 * 128 * 2},  // 320 KiB (GQA)
		{model.Llama2_70B, tensor.F16, 8, 40 * KiB},
	} {
		t.Run(fmt.Sprintf("%s/%v/tp%d", tc.cfg.Name, tc.kv, tc.tp), func(t *testing.T) {
			o := gpu80(tc.cfg, tc.tp, 1)
			o.KVDType = tc.kv
			r := compute(t, tc.cfg, o)
			require.Equal(t, tc.want, r.KVPerToken)
			require.Equal(t, tc.want*4096, r.KV, "one sequence of 4096")
		})
	}
	require.Equal(t, 512*KiB, int64(2*32*32*128*2))
	require.Equal(t, 320*KiB, int64(2*80*8*128*2))
}

// The check: 70B fp16 is ≈ 138 GB, so not on one 80 GiB GPU; on TP 2 only without room for
// much KV; on TP 4 comfortably.
func Test70BOn80GiB(t *testing.T) {
	cfg := model.Llama2_70B
	one := compute(t, cfg, gpu80(cfg, 1, 1))
	require.False(t, one.Fits)
	require.Zero(t, one.MaxKVTokens, "the weights alone exceed the GPU")
	require.Equal(t, 2, one.FitsAtTP)
	require.Equal(t, "Q8_0", one.FitsAtDType)

	// TP 2 per rank, by hand: per layer 32 of 64 query heads, 4 of 8 KV heads, half of FFN 28672.
	perLayer := int64(4096*8192 + 2*512*8192 + 8192*4096 + 2*14336*8192 + 8192*14336)
	want := 80*perLayer*2 + 32000*8192*2 /*embedding, replicated*/ + 16000*8192*2 /*head half*/ + 161*8192*4
	two := compute(t, cfg, gpu80(cfg, 2, 1))
	require.Equal(t, want, two.Weights)
	require.True(t, two.Fits, "one 4096-token sequence fits on TP 2: %s", two.Explain())
	require.Less(t, two.MaxBatchAtCtx, int64(32))
	require.Greater(t, two.MaxBatchAtCtx, int64(8))

	two32 := compute(t, cfg, gpu80(cfg, 2, 32))
	require.False(t, two32.Fits, "32 × 4096 KV positions do not fit beside 64 GiB of weights")
	require.Equal(t, 4, two32.FitsAtTP)

	four := compute(t, cfg, gpu80(cfg, 4, 32))
	require.True(t, four.Fits)
	require.Less(t, four.Total, 50*GiB, "TP 4 at batch 32 leaves plenty: %s", four.Explain())
	require.Equal(t, 10*GiB, four.KV) // 80 KiB × 32 × 4096
}

func Test7BFitsOneGPU(t *testing.T) {
	r := compute(t, model.Llama2_7B, gpu80(model.Llama2_7B, 1, 32))
	// 12.6 GiB weights + 64 GiB KV (512 KiB × 131072) + activations + 1 GiB.
	require.Equal(t, 64*GiB, r.KV)
	require.True(t, r.Fits, r.Explain())
	r = compute(t, model.Llama2_7B, gpu80(model.Llama2_7B, 1, 64))
	require.False(t, r.Fits)
	require.Equal(t, 2, r.FitsAtTP)
	require.Empty(t, r.FitsAtDType, "the KV cache, not the weights, is what does not fit")
}

func TestActivationsFormula(t *testing.T) {
	cfg := model.Llama2_7B
	o := gpu80(cfg, 2, 8)
	o.MaxBatchTokens = 256
	r := compute(t, cfg, o)
	B, R := int64(256), int64(8)
	floats := 2*B*4096 + 2*B*2048 + 2*B*2048 + 2*B*5504 + R*4096 + R*32000
	require.Equal(t, floats*4, r.Activations)
	require.Equal(t, r.Weights+r.KV+r.Activations+CUDAOverhead, r.Total)
}

func TestDivisibilityErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg   model.Config
		tp    int
		valid string
	}{
		{model.Llama2_70B, 3, "1, 2, 4, 8"},
		{model.Llama2_70B, 16, "1, 2, 4, 8"},
		{model.Llama2_7B, 3, "1, 2, 4, 8"},
		{model.Llama2_13B, 5, "1, 2, 4, 8"}, // 5 divides 40 heads but not FFN 13824
		{model.Tiny, 8, "1, 2, 4"},
	} {
		t.Run(fmt.Sprintf("%s/tp%d", tc.cfg.Name, tc.tp), func(t *testing.T) {
			_, err := Compute(tc.cfg, gpu80(tc.cfg, tc.tp, 1))
			require.ErrorIs(t, err, ErrTP)
			require.Contains(t, err.Error(), "valid degrees up to 8: "+tc.valid)
		})
	}
	_, err := Compute(model.Llama2_7B, Options{GPUs: -1})
	require.ErrorIs(t, err, ErrOptions)
	_, err = Compute(model.Llama2_7B, Options{DType: tensor.DType(42)})
	require.ErrorIs(t, err, ErrOptions)
}

func TestCheckFits(t *testing.T) {
	err := CheckFits(model.Llama2_70B, gpu80(model.Llama2_70B, 1, 1))
	require.ErrorIs(t, err, ErrDoesNotFit)
	for _, want := range []string{"llama-2-70b", "tensor parallelism over 2 devices", "Q8_0 weights", "80 GiB"} {
		require.Contains(t, err.Error(), want)
	}
	require.NoError(t, CheckFits(model.Llama2_70B, gpu80(model.Llama2_70B, 4, 32)))
	require.NoError(t, CheckFits(model.Llama2_70B, Options{}), "unknown capacity is not a refusal")
	_, err = Compute(model.Llama2_70B, gpu80(model.Llama2_70B, 3, 1))
	require.True(t, errors.Is(CheckFits(model.Llama2_70B, gpu80(model.Llama2_70B, 3, 1)), ErrTP), "%v", err)

	// The CPU: no overhead, F32 KV, 20 GiB of host memory: 7B in F32 (27 GB) does not fit.
	cpuOpts := Options{DType: tensor.F32, KVDType: tensor.F32, GPUMem: 20 * GiB, Ctx: 256, Batch: 1, MaxTP: 1}
	err = CheckFits(model.Llama2_7B, cpuOpts)
	require.ErrorIs(t, err, ErrDoesNotFit)
	require.Contains(t, err.Error(), "it would fit with F16 weights")
	require.NotContains(t, err.Error(), "parallel", "MaxTP 1: no TP advice")
	cpuOpts.DType = tensor.Q4_0
	require.NoError(t, CheckFits(model.Llama2_7B, cpuOpts))
}

func TestExplainFits(t *testing.T) {
	r := compute(t, model.Llama2_7B, gpu80(model.Llama2_7B, 1, 1))
	s := r.Explain()
	require.True(t, strings.Contains(s, "fits in 80 GiB"), s)
	require.Contains(t, s, "512 KiB/token")
}

func TestParseMemAvailable(t *testing.T) {
	n, err := parseMemAvailable("MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n")
	require.NoError(t, err)
	require.Equal(t, int64(20000000)*1024, n)
	_, err = parseMemAvailable("MemTotal: 1 kB\n")
	require.Error(t, err)
	if n, err := HostMemory(); err == nil {
		require.Positive(t, n)
	}
}

// Llama-2-7B in Q4_K at TP 2: the FFN (11008 = 43 blocks of 256) leaves each rank half a block
// of W2's columns, so W2 is held in SplitDType; Wo's 2048 columns are whole blocks and stay
// Q4_K. At TP 4 (2752 columns, not whole blocks) W2 is widened too; 70B at TP 8 (3584 = 14
// blocks) widens nothing.
func TestWeightsWidenedSplit(t *testing.T) {
	q4k := func(bytes int64) int64 { return bytes / 256 * 144 }
	for _, tc := range []struct {
		cfg   model.Config
		tp    int
		split tensor.DType
		wide  bool
	}{
		{model.Llama2_7B, 2, tensor.F16, true}, {model.Llama2_7B, 2, tensor.F32, true},
		{model.Llama2_7B, 4, tensor.F16, true}, {model.Llama2_70B, 8, tensor.F16, false},
	} {
		t.Run(fmt.Sprintf("%s/tp%d/%v", tc.cfg.Name, tc.tp, tc.split), func(t *testing.T) {
			c := tc.cfg
			require.Contains(t, ValidTP(c, tensor.Q4_K), tc.tp)
			o := DefaultOptions()
			o.DType, o.GPUs, o.SplitDType = tensor.Q4_K, tc.tp, tc.split
			r := compute(t, c, o)
			dim, ffn, hd := int64(c.Dim), int64(c.FFN/tc.tp), int64(c.HeadDim())
			q, kv := int64(c.Heads/tc.tp)*hd, int64(c.KVHeads/tc.tp)*hd
			w2 := q4k(dim * ffn)
			if tc.wide {
				w2 = dim * ffn * int64(tc.split.BlockBytes())
				require.Equal(t, tc.split.String(), r.WidenedSplit)
			} else {
				require.Empty(t, r.WidenedSplit)
			}
			layer := q4k(q*dim+2*kv*dim+dim*q+2*ffn*dim) + w2
			replicated := q4k(int64(c.Vocab)*dim) + int64(2*c.Layers+1)*dim*4
			require.Equal(t, int64(c.Layers)*layer+replicated+q4k(int64(c.Vocab)/int64(tc.tp)*dim), r.Weights)
		})
	}
}
