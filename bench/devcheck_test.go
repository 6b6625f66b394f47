package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/plan"
	"github.com/llamacu/llamacu/tensor"
)

// A check.log excerpt in `go test -bench` format (GOMAXPROCS suffixes, -test.v name lines, a
// custom metric), with figures chosen so that each target is met or missed on purpose.
const checkLog = `===== kernel benchmarks =====
goos: linux
BenchmarkCopy
BenchmarkCopy-16                     	     200	   5368709 ns/op	 400000.00 MB/s
BenchmarkGEMV/F16/4096x4096/n=1-16   	     200	     93206 ns/op	 360000.00 MB/s
BenchmarkGEMV/F16/11008x4096/n=1-16  	     200	    280000 ns/op	 322000.00 MB/s
BenchmarkGEMV/F16/4096x4096/n=8-16   	     200	    120000 ns/op	 280000.00 MB/s
BenchmarkGEMVQuant/Q4_K/4096x4096/n=1-16 	     200	     40000 ns/op	 240000.00 MB/s
BenchmarkAttentionDecode/7B-16       	     200	    400000 ns/op	 336000.00 MB/s
BenchmarkAttentionDecode/7B/8seqs-16 	     200	   2000000 ns/op	 300000.00 MB/s
BenchmarkAttentionDecode/v3/7B-16    	     200	    800000 ns/op	 168000.00 MB/s
BenchmarkAttentionDecode/bps2/7B-16  	     200	    500000 ns/op	 268800.00 MB/s
BenchmarkAttentionDecode/70B-16      	     200	    100000 ns/op	 320000.00 MB/s
BenchmarkAttentionDecode/v5/70B-16   	     200	    100000 ns/op	 320000.00 MB/s
BenchmarkAttentionDecode/v4/70B-16   	     200	    300000 ns/op	 106666.67 MB/s
BenchmarkAttentionPrefill/v4-mma/7B/n=2048-16  	200	 150000 ns/op	 229.0 TFLOP/s
BenchmarkAttentionPrefill/v3-mma/7B/n=2048-16  	200	 300000 ns/op	 114.5 TFLOP/s
BenchmarkAttentionPrefill/v3-mma/70B/n=2048-16 	200	 300000 ns/op	 100.0 TFLOP/s
BenchmarkAttentionPrefill/v2-simt/70B/n=2048-16 	200	1500000 ns/op	  20.0 TFLOP/s
BenchmarkAttentionPrefill/v2-simt/7B/n=2048-16 	200	1500000 ns/op	  22.9 TFLOP/s
BenchmarkGateUp/fused/n=1-16        	     200	    110000 ns/op	 1639.68 MB/s
BenchmarkQKVRoPE/fused/7B/n=1-16     	     200	     40000 ns/op	 2516582.40 MB/s
BenchmarkQKVRoPE/separate/7B/n=1-16  	     200	     44000 ns/op	 2287802.18 MB/s
BenchmarkGateUp/unfused/n=1-16      	     200	    121000 ns/op	 1490.62 MB/s
BenchmarkTopK/v2/n=8/k=40-16         	     200	     30000 ns/op	 34133.33 MB/s
BenchmarkTopK/read+host/n=8/k=40-16  	     200	    600000 ns/op	  1706.67 MB/s
BenchmarkAllReduce/1x4096-16         	    1000	     25000 ns/op
BenchmarkAllReduce/8/NCCL-16         	    1000	     30000 ns/op	  1092.27 MB/s	 25.00 µs/allreduce	 4.000 ms/token-70B
PASS
===== ncu: what limits decode attention at the 70B shape =====
==PROF== Profiling "attention_decode_v5_f16_hd128": 0%....50%....100% - 10 passes
BenchmarkAttentionDecode/70B-16         	       1	    277644 ns/op	60427.08 MB/s
BenchmarkAttentionDecode/v9/70B-16      	       1	    277644 ns/op	60427.08 MB/s
PASS
`

func writeReport(t *testing.T, path, tool string, results ...Result) {
	t.Helper()
	r := &Report{Schema: Schema, Tool: tool, Device: Device{Name: "NVIDIA H100 80GB HBM3"}, Model: ModelInfo{Name: "llama-2-7b"},
		Settings: Settings{Prompt: 2048, Gen: 128}, Results: results}
	var b bytes.Buffer
	require.NoError(t, r.WriteJSON(&b))
	require.NoError(t, os.WriteFile(path, b.Bytes(), 0o644))
}

func res(kind string, tokens, batch, depth int, toks float64) Result {
	test := kind + "128"
	if kind == "pp" {
		test = "pp2048"
	}
	return Result{Test: test, Kind: kind, Batch: batch, Depth: depth, Tokens: tokens, TokS: Summary{N: 3, Mean: toks}}
}

func TestSummarizeDeviceCheck(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "check.log"), []byte(checkLog), 0o644))
	writeReport(t, filepath.Join(dir, "llamacu-7b-f16-cuda.json"), "llamacu",
		res("pp", 2048, 1, 0, 31000), res("tg", 128, 1, 0, 190), res("tg", 1024, 8, 0, 1400))
	writeReport(t, filepath.Join(dir, "hf-7b-eager.jsonl"), "transformers-eager", res("pp", 2048, 1, 0, 15500), res("tg", 128, 1, 0, 38))
	// hf_logits.py's reference lies beside the reports and is not one.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "hf-logits-reference.json"), []byte(`{"transformers": "5.17.0"}`), 0o644))
	writeReport(t, filepath.Join(dir, "llamacu-7b-f16-cuda-simt-prefill.json"), "llamacu", res("pp", 2048, 1, 0, 20000))
	writeReport(t, filepath.Join(dir, "llamacu-7b-f16-cuda-no-graphs.json"), "llamacu", res("tg", 128, 1, 0, 170))
	writeReport(t, filepath.Join(dir, "llamacu-7b-f16-cuda-v2-kernels.json"), "llamacu", res("tg", 128, 1, 0, 152))
	writeReport(t, filepath.Join(dir, "llamacu-7b-f16-cuda-ubatch2048.json"), "llamacu", res("pp", 2048, 1, 0, 34100))
	// Another prompt length's one-step run (CHECK_PREFILL): an A/B run too, not a model of its own.
	writeReport(t, filepath.Join(dir, "llamacu-7b-f16-cuda-ubatch4096.json"), "llamacu", res("pp", 4096, 1, 0, 30000))
	writeReport(t, filepath.Join(dir, "llamacu-7b-f16-cuda-separate-rope.json"), "llamacu", res("tg", 128, 1, 0, 180))
	writeReport(t, filepath.Join(dir, "llamacu-7b-f16-cuda-prefill-v3.json"), "llamacu", res("pp", 2048, 1, 0, 28000))
	writeReport(t, filepath.Join(dir, "llamacu-7b-f16-cuda-decode-v3.json"), "llamacu", res("tg", 128, 1, 0, 185))
	writeReport(t, filepath.Join(dir, "llamacu-7b-f16-cuda-gemv-v3.json"), "llamacu", res("tg", 1024, 8, 0, 900))
	writeReport(t, filepath.Join(dir, "llamacu-7b-f16-cuda-f32-intermediates.json"), "llamacu", res("pp", 2048, 1, 0, 29000))
	writeReport(t, filepath.Join(dir, "llamacu-7b-f16-cuda-topk40.json"), "llamacu", res("tg", 1024, 8, 0, 1540))
	writeReport(t, filepath.Join(dir, "llamacu-7b-q8_0-cuda.json"), "llamacu", res("tg", 128, 1, 0, 342), res("pp", 2048, 1, 0, 24800))
	writeReport(t, filepath.Join(dir, "llamacu-7b-q4_0-cuda.json"), "llamacu", res("tg", 128, 1, 0, 570))
	writeReport(t, filepath.Join(dir, "llamacu-7b-q4_k-cuda.json"), "llamacu", res("tg", 128, 1, 0, 494))
	{ // 70B in Q4_K on one GPU: reported under its own name and dtype
		r := &Report{Schema: Schema, Tool: "llamacu", Device: Device{Name: "NVIDIA H100 80GB HBM3"}, Model: ModelInfo{Name: "llama-2-70b", DType: "Q4_K"},
			Settings: Settings{Prompt: 512, Gen: 64}, Results: []Result{{Test: "tg64", Kind: "tg", Batch: 1, Tokens: 64, TokS: Summary{N: 1, Mean: 61}}}}
		var b bytes.Buffer
		require.NoError(t, r.WriteJSON(&b))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "llamacu-70b-q4k-1gpu.json"), b.Bytes(), 0o644))
	}

	// One rank of 70B at TP 8 timed alone: 12.5 ms/token, + 160 all-reduces of 25 µs (NCCL).
	rank := &Report{Schema: Schema, Tool: "llamacu", Model: ModelInfo{Name: "llama-2-70b, rank 0 of TP 8 alone", DType: "F16", Config: model.Llama2_70B},
		Settings: Settings{Gen: 128, RankOf: 8}, Results: []Result{res("tg", 128, 1, 0, 80)}}
	var rb bytes.Buffer
	require.NoError(t, rank.WriteJSON(&rb))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "llamacu-70b-rank-of-8-f16-cuda.json"), rb.Bytes(), 0o644))
	rank.Results = []Result{res("tg", 128, 1, 0, 100)} // the same rank with LLAMACU_PDL=1
	rb.Reset()
	require.NoError(t, rank.WriteJSON(&rb))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "llamacu-70b-rank-of-8-f16-cuda-pdl.json"), rb.Bytes(), 0o644))
	rank.Results = []Result{res("tg", 128, 1, 0, 70)} // the same rank with LLAMACU_DECODE=v4
	rb.Reset()
	require.NoError(t, rank.WriteJSON(&rb))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "llamacu-70b-rank-of-8-f16-cuda-decode-v4.json"), rb.Bytes(), 0o644))
	writeReport(t, filepath.Join(dir, "llamacu-7b-f16-cuda-pdl.json"), "llamacu", res("tg", 128, 1, 0, 200))

	s, err := SummarizeDeviceCheck(dir)
	require.NoError(t, err)
	require.Equal(t, 400000.0, s.CopyMBps)
	require.Equal(t, "NVIDIA H100 80GB HBM3", s.Device)
	got := map[string]Check{}
	for _, c := range s.Checks {
		got[c.What] = c
	}
	for _, tc := range []struct {
		what  string
		value float64
		met   bool
	}{
		{"GEMV F16 4096x4096 n=1", 90, true}, // 360 of 400 GB/s
		{"GEMV F16 11008x4096 n=1", 80.5, false},
		{"GEMV F16 4096x4096 n=8", 70, true},              // no target at n = 8
		{"GEMV Q4_K 4096x4096 n=1 (quantised)", 60, true}, // reported only
		{"decode attention 7B, 4096 context", 84, true},
		{"decode attention 7B/8seqs, 4096 context", 75, true}, // reported only
		{"decode attention v3/7B, 4096 context", 42, true},    // forced: reported only
		{"decode attention v4 (cp.async pipeline) ÷ v3, 7B, 4096 context", 2, true},
		{"decode attention bps2/7B, 4096 context", 67.2, true}, // tuned: reported only
		// The profiled run of 70B in the ncu section (1 iteration, 60 GB/s) is no figure.
		{"decode attention 70B, 4096 context", 80, true},
		{"decode attention v5 (tensor cores) ÷ v4, 70B, 4096 context", 3, true},
		{"prefill attention tensor cores ÷ SIMT, 7B n=2048", 229.0 / 22.9, true}, // v4's
		{"prefill attention v4 (cp.async pipeline, ldmatrix) ÷ v3, 7B n=2048", 2, true},
		{"prefill attention tensor cores ÷ SIMT, 70B n=2048", 5, true}, // v3's: no v4 figure
		{"all-reduce 1x4096", 25, true},
		{"top-k v2 n=8 k=40, 32000 vocabulary", 30, true},
		{"llama-2-70b b1 d0 at TP 8: one rank measured alone + 160 all-reduces", 1 / (1.0/80 + 160*25e-6), false},       // 61.5 < 100
		{"llama-2-70b b1 d0 at TP 8: one rank measured alone + 160 all-reduces (pdl)", 1 / (1.0/100 + 160*25e-6), true}, // no target
		{"decode with programmatic dependent launch ÷ without (LLAMACU_PDL=1), tg128 b1 d0", 200.0 / 190, true},
		{"decode with programmatic dependent launch ÷ without (LLAMACU_PDL=1), llama-2-70b rank, tg128 b1 d0", 100.0 / 80, true},
		{"decode with attention v5 (tensor cores) ÷ v4 (LLAMACU_DECODE=v4), llama-2-70b rank, tg128 b1 d0", 80.0 / 70, true},
		{"FFN gate/up + SwiGLU fused ÷ unfused (7B, fp16), n=1", 1.1, true},
		{"top-k on the device: read+host ÷ v2, n=8 k=40", 20, true},
		{"q/k/v GEMV with RoPE and the KV store fused ÷ separate (fp16), 7B n=1", 1.1, true},
		{"llama-2-7b pp2048", 31000, true},
		{"llama-2-7b tg128 b1 d0", 190, false}, // the 200 tok/s target
		{"llama-2-7b tg128 b8 d0", 1400, true},
		{"prefill with tensor-core attention ÷ SIMT, pp2048", 31000.0 / 20000, true},
		{"decode with CUDA graphs ÷ without, tg128 b1 d0", 190.0 / 170, true},
		{"prefill in one 2048-token step ÷ in steps of 512 (--ubatch 2048), pp2048", 34100.0 / 31000, true},
		{"decode with GEMV v3 and decode attention v3 ÷ their v2 (LLAMACU_GEMV=v2 LLAMACU_DECODE=v2), tg128 b1 d0", 190.0 / 152, true},
		{"decode with RoPE and the KV store in the q/k/v GEMV ÷ their own launch (LLAMACU_ROPE=separate), tg128 b1 d0", 190.0 / 180, true},
		{"prefill with attention v4 ÷ v3 (LLAMACU_PREFILL=v3), pp2048", 31000.0 / 28000, true},
		{"decode with attention v4 ÷ v3 (LLAMACU_DECODE=v3), tg128 b1 d0", 190.0 / 185, true},
		{"decode with GEMV v4 (tensor cores, 2–8 rows) ÷ v3 (LLAMACU_GEMV=v3), tg128 b8 d0", 1400.0 / 900, true},
		{"prefill with the GEMMs' outputs kept in fp16 ÷ through fp32 (LLAMACU_INTERMEDIATES=f32), pp2048", 31000.0 / 29000, true},
		{"decode reading each row's 40 best logits (device top-k) ÷ whole rows, tg128 b8 d0", 1540.0 / 1400, true},
		{"Q8_0 weights kept quantised ÷ fp16, tg128 b1 d0", 342.0 / 190, true},
		{"Q8_0 weights kept quantised ÷ fp16, pp2048", 24800.0 / 31000, true},
		{"Q4_K weights kept quantised ÷ fp16, tg128 b1 d0", 494.0 / 190, true},
		{"llama-2-70b Q4_K tg64 b1 d0", 61, true}, // no target; the only tg64 figure
	} {
		c, ok := got[tc.what]
		require.True(t, ok, "no check %q in %v", tc.what, s.Checks)
		require.InDelta(t, tc.value, c.Value, 1e-9, tc.what)
		require.Equal(t, tc.met, c.Met(), tc.what)
	}
	require.Contains(t, got["llama-2-7b tg128 b1 d0"].Note, "5.00× PyTorch eager")
	require.NotContains(t, got, "decode attention v9/70B, 4096 context", "a benchmark line under ncu")
	for what := range got { // the one-GPU Q4_K run has no fp16 twin: no A/B of it against itself
		if strings.Contains(what, "tg64") {
			require.Equal(t, "llama-2-70b Q4_K tg64 b1 d0", what)
		}
	}

	// Issue 6's estimate: the planner's bytes per GPU ÷ the copy bandwidth + 160 measured
	// all-reduces of 25 µs.
	r, err := plan.Compute(model.Llama2_70B, plan.Options{DType: tensor.F16, KVDType: tensor.F16, GPUs: 8, Batch: 1})
	require.NoError(t, err)
	tp8 := got["Llama-2-70B fp16 b1 at TP 8 (planner arithmetic, this GPU ×8)"]
	require.InDelta(t, 1/(float64(r.Weights-r.Replicated)/4e11+160*25e-6), tp8.Value, 1e-9)
	require.Equal(t, 100.0, tp8.Target)
	require.Contains(t, tp8.Note, "25.0 µs measured (8/NCCL)")
	var md bytes.Buffer
	require.NoError(t, s.WriteMarkdown(&md))
	require.Contains(t, md.String(), "| llama-2-7b tg128 b1 d0 | 190.0 tok/s | 200 tok/s | no |")
	require.Equal(t, 2+len(s.Checks), strings.Count(md.String(), "\n|")) // header, separator, rows

	_, err = SummarizeDeviceCheck(t.TempDir())
	require.Error(t, err, "an empty folder")
}
