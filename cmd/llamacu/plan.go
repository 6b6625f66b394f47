package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"

	"github.com/dustin/go-humanize"

	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/plan"
	"github.com/llamacu/llamacu/tensor"
)

func init() {
	register(command{"plan", "plan GPU memory: weights, KV cache, activations per GPU under tensor parallelism", cmdPlan})
}

// planOutput is what `llamacu plan --json` prints.
type planOutput struct {
	Requested plan.Report         `json:"requested"`
	ByTP      []plan.Report       `json:"by_tp"`
	Verdict   string              `json:"verdict"`
	Decode    plan.DecodeEstimate `json:"decode_estimate"`
}

func cmdPlan(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelPath := fs.String("model", "", "model file or folder (its shape; weights are not loaded)")
	preset := fs.String("preset", "", "a built-in shape instead of a file: 7b, 13b, 70b, tiny, 110m")
	dtypeName := fs.String("dtype", "", "weight storage: fp16, bf16, q8_0, q4_0, f32 (default: the file's, or fp16 for a preset)")
	kvName := fs.String("kv-dtype", "fp16", "KV cache storage: fp16, bf16, f32")
	gpus := fs.Int("gpus", 1, "tensor-parallel degree (GPUs the model is split over)")
	memStr := fs.String("gpu-mem", "80GiB", "memory per GPU (80GiB, 141GB, …)")
	ctx := fs.Int("ctx", 0, "context positions per sequence (0: the model's)")
	batch := fs.Int("batch", 1, "concurrent sequences")
	mbt := fs.Int("max-batch-tokens", 0, fmt.Sprintf("tokens per forward step the activations hold (0: max(batch, %d))", plan.DefaultMaxBatchTokens))
	overhead := fs.String("overhead", humanize.IBytes(uint64(plan.CUDAOverhead)), "fixed memory per GPU: CUDA context, cuBLAS workspace, NCCL buffers")
	gbps := fs.Float64("bandwidth-gbps", plan.DefaultDecodeGBps, "per-GPU memory bandwidth for the decode estimate, GB/s (default: H100 SXM 3350 × 0.9, an assumption)")
	arUs := fs.Float64("allreduce-us", 0, "measured time of one decode all-reduce, µs, for the decode estimate (gpu BenchmarkAllReduce; 0: not included)")
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: llamacu plan --model PATH | --preset 7b|13b|70b [flags]\n\nPrints the memory each GPU needs at every tensor-parallel degree the model can be split by,\nand whether the requested deployment fits.\n\nflags:")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || (*modelPath == "") == (*preset == "") {
		return fmt.Errorf("%w: exactly one of --model or --preset is required", errUsage)
	}
	var (
		cfg   model.Config
		dtype = tensor.F16
	)
	if *preset != "" {
		if cfg, err = model.Preset(*preset); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	} else {
		f, err := loader.Open(*modelPath)
		if err != nil {
			return err
		}
		cfg, dtype = f.Config, residentDType(matrixDType(f), "cuda")
		f.Close()
	}
	if *dtypeName != "" {
		if dtype, err = tensor.ParseDType(*dtypeName); err != nil {
			return fmt.Errorf("%w: --dtype: %v", errUsage, err)
		}
	}
	kv, err := tensor.ParseDType(*kvName)
	if err != nil {
		return fmt.Errorf("%w: --kv-dtype: %v", errUsage, err)
	}
	mem, err := humanize.ParseBytes(*memStr)
	if err != nil {
		return fmt.Errorf("%w: --gpu-mem %q: want a size such as 80GiB or 141GB (%v)", errUsage, *memStr, err)
	}
	ovh, err := humanize.ParseBytes(*overhead)
	if err != nil {
		return fmt.Errorf("%w: --overhead %q: want a size such as 1GiB (%v)", errUsage, *overhead, err)
	}
	if !(*gbps > 0) || !(*arUs >= 0) || math.IsInf(*gbps, 0) || math.IsInf(*arUs, 0) {
		return fmt.Errorf("%w: --bandwidth-gbps must be finite and > 0, --allreduce-us finite and ≥ 0", errUsage)
	}
	if mem > math.MaxInt64 || ovh > math.MaxInt64 {
		return fmt.Errorf("%w: --gpu-mem %s or --overhead %s is more than 8 EiB", errUsage, *memStr, *overhead)
	}
	if *gpus < 1 || *ctx < 0 || *batch < 1 || *mbt < 0 {
		return fmt.Errorf("%w: --gpus and --batch must be ≥ 1, --ctx and --max-batch-tokens ≥ 0", errUsage)
	}
	opts := plan.Options{DType: dtype, KVDType: kv, GPUs: *gpus, GPUMem: int64(mem), Ctx: *ctx, Batch: *batch,
		MaxBatchTokens: *mbt, Overhead: int64(ovh), SplitDType: model.SplitDType}
	req, err := plan.Compute(cfg, opts)
	if err != nil {
		if errors.Is(err, plan.ErrTP) {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		return err
	}
	out := planOutput{Requested: req, Verdict: req.Explain(), Decode: plan.EstimateDecode(req, cfg.Layers, *gbps, *arUs)}
	for _, t := range plan.ValidTP(cfg, dtype) {
		o := opts
		o.GPUs = t
		r, err := plan.Compute(cfg, o)
		if err != nil {
			return err
		}
		out.ByTP = append(out.ByTP, r)
	}
	if *asJSON {
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	c := cfg
	fmt.Fprintf(stdout, "%s: %s parameters, %d layers, %d query / %d KV heads; %s weights, %s KV cache\n",
		req.Model, paramCount(req.Params), c.Layers, c.Heads, c.KVHeads, req.DType, req.KVDType)
	fmt.Fprintf(stdout, "workload: %d sequence(s) × %d positions, %d tokens per step; %s per GPU, %s fixed overhead\n\n",
		req.Batch, req.Ctx, req.MaxBatchTokens, humanize.IBytes(mem), humanize.IBytes(ovh))
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "TP\tweights/GPU\tKV/token/GPU\tKV/GPU\tactivations\ttotal/GPU\tfits\tmax seqs at ctx\t")
	for _, r := range out.ByTP {
		fits := "no"
		if r.Fits {
			fits = "yes"
		}
		mark := ""
		if r.GPUs == req.GPUs {
			mark = " *"
		}
		fmt.Fprintf(tw, "%d%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", r.GPUs, mark, humanize.IBytes(uint64(r.Weights)),
			humanize.IBytes(uint64(r.KVPerToken)), humanize.IBytes(uint64(r.KV)), humanize.IBytes(uint64(r.Activations)),
			humanize.IBytes(uint64(r.Total)), fits, r.MaxBatchAtCtx)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var widened []string
	for _, r := range out.ByTP {
		if r.WidenedSplit != "" {
			widened = append(widened, fmt.Sprint(r.GPUs))
		}
	}
	if len(widened) > 0 {
		fmt.Fprintf(stdout, "TP %s: a rank's columns of Wo or W2 are not whole %s blocks; those shards are held in %v (counted above)\n",
			strings.Join(widened, ", "), req.DType, model.SplitDType)
	}
	if _, err = fmt.Fprintf(stdout, "\n%s\n%s\n", out.Verdict, out.Decode); err != nil {
		return err
	}
	if req.MaxKVTokens > 0 {
		// serve sizes its KV cache from --max-seqs and the memory it finds; this is the flag
		// that gives it exactly the room the plan leaves.
		blocks := req.MaxKVTokens / plan.DefaultBlockSize
		_, err = fmt.Fprintf(stdout, "serve: --kv-blocks %d gives the KV cache that room (%d positions in %s; sequences take blocks as they grow)\n",
			blocks, blocks*plan.DefaultBlockSize, req.KVDType)
	}
	return err
}

// matrixDType is the dtype holding most of a file's weight bytes.
func matrixDType(f *loader.Model) tensor.DType {
	bytes := map[tensor.DType]int{}
	for _, t := range f.Tensors {
		if len(t.Shape) == 2 {
			bytes[t.DType] += len(t.Data)
		}
	}
	best, n := tensor.F16, -1
	for d, b := range bytes {
		if b > n || (b == n && d < best) {
			best, n = d, b
		}
	}
	return best
}

// paramCount prints a parameter count rounded to 3 significant digits: "6.74 B", "110 M", "293 k".
func paramCount(n int64) string {
	x := float64(n)
	for _, u := range []struct {
		div  float64
		name string
	}{{1e9, "B"}, {1e6, "M"}, {1e3, "k"}} {
		if x >= u.div {
			return fmt.Sprintf("%.3g %s", x/u.div, u.name)
		}
	}
	return fmt.Sprint(n)
}
