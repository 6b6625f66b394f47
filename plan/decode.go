package plan

import (
	"fmt"

	"github.com/dustin/go-humanize"
)

// DefaultDecodeGBps is H100 SXM's HBM3 peak, 3.35 TB/s, times 0.9: what a well-vectorised GEMV streams in practice.
// An assumption, not a measurement: --bandwidth-gbps replaces it with a measured figure.
const DefaultDecodeGBps = 3350 * 0.9

// DecodeEstimate is the planner's batch-1 decode speed at one TP degree:
//
//	t_token = S / BW + 2·L·A        tokens/s = 1 / t_token
//
// S is the bytes each GPU streams per token: its weights less the replicated embedding table
// (one row of it is looked up, the rest never read); BW the per-GPU memory bandwidth; L the
// layers, each with two all-reduces (after attention and after the FFN) of A each, measured
// (gpu BenchmarkAllReduce, or the all-reduce line of llamacu bench). Every rank streams its
// shard at once, so the time is one GPU's. Left out, so the figure is an upper bound: KV-cache
// reads (S grows by KV/token/GPU × depth), the logits gather, kernel launch gaps and any compute
// bound. Without A (0) the all-reduce term is missing too, and the output says so.
type DecodeEstimate struct {
	TP           int     `json:"tp"`
	StreamBytes  int64   `json:"stream_bytes_per_gpu"`
	GBps         float64 `json:"bandwidth_gbps"`
	AllReduces   int     `json:"allreduces_per_token"`
	AllReduceUs  float64 `json:"allreduce_us"` // 0: not given
	MsPerToken   float64 `json:"ms_per_token"`
	TokensPerSec float64 `json:"tokens_per_s"`
}

// EstimateDecode applies DecodeEstimate's formula to a planner report (llamacu plan, and bench
// summarize with a GPU run's measured bandwidth).
func EstimateDecode(r Report, layers int, gbps, allReduceUs float64) DecodeEstimate {
	e := DecodeEstimate{TP: r.GPUs, StreamBytes: r.Weights - r.Replicated, GBps: gbps, AllReduceUs: allReduceUs}
	if r.GPUs > 1 {
		e.AllReduces = 2 * layers
	}
	sec := float64(e.StreamBytes)/(gbps*1e9) + float64(e.AllReduces)*allReduceUs*1e-6
	e.MsPerToken = sec * 1e3
	if sec > 0 {
		e.TokensPerSec = 1 / sec
	}
	return e
}

// String is the plan's estimate line.
func (e DecodeEstimate) String() string {
	ar := fmt.Sprintf("+ %d all-reduces × %.1f µs ", e.AllReduces, e.AllReduceUs)
	bound := "≈"
	switch {
	case e.AllReduces == 0:
		ar = ""
	case e.AllReduceUs == 0:
		ar = fmt.Sprintf("+ %d all-reduces (cost not given: --allreduce-us) ", e.AllReduces)
		bound = "≤"
	}
	return fmt.Sprintf("decode estimate, batch 1, TP %d: %s/GPU ÷ %.0f GB/s %s⇒ %.2f ms/token, %s %.0f tokens/s (leaves out KV reads, launch gaps and the logits gather)",
		e.TP, humanize.IBytes(uint64(e.StreamBytes)), e.GBps, ar, e.MsPerToken, bound, e.TokensPerSec)
}
