package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/llamacu/llamacu/bench"
	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/plan"
	"github.com/llamacu/llamacu/sample"
	"github.com/llamacu/llamacu/tensor"
	"github.com/llamacu/llamacu/tp"
)

func init() {
	register(command{"bench", "benchmark prompt processing and generation (bench serve: an OpenAI server; bench summarize: a GPU check's results)", cmdBench})
}

// copyBufferBytes is the host buffer the CPU copy bandwidth is measured on: far larger than any
// last-level cache.
const copyBufferBytes = 256 << 20

func cmdBench(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "serve" {
		return cmdBenchServe(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "summarize" {
		return cmdBenchSummarize(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	lf := addLoadFlags(fs)
	synthetic := fs.String("synthetic", "", "benchmark a synthetic model of this shape (7b, 13b, 70b, tiny, 110m) built with seeded random weights on the backend")
	dtypeName := fs.String("dtype", "f32", "weight dtype of the synthetic model: f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k")
	seed := fs.Uint64("seed", 1, "seed of the synthetic weights and of the token ids")
	p := fs.Int("p", 512, "prompt tokens of the pp test (0: no pp test)")
	n := fs.Int("n", 128, "decode steps of the tg test (0: no tg test)")
	ubatch := fs.Int("ubatch", 512, "most prompt tokens per forward step in pp")
	rankOf := fs.Int("rank-of", 0, "time one rank of an N-way tensor-parallel model alone (--synthetic, --tp 1): its shards and its share of every op, the collectives left out; add the all-reduce cost (BenchmarkAllReduce) for the group's step")
	topk := fs.Int("topk", 0, "tg reads each row's best K logits (selected on the device where the backend can), as sampling with top-k does (0: the whole rows, as llama-bench)")
	batchList := fs.String("batch", "1,8,32", "comma-separated batch sizes of tg (sequences decoding together)")
	depthList := fs.String("depth", "0,2048", "comma-separated KV depths (positions already cached) each test runs at")
	reps := fs.Int("reps", 5, "timed repetitions of each test")
	warmup := fs.Int("warmup", 1, "untimed repetitions before them")
	format := fs.String("format", "md", "report on stdout: md, json or csv")
	outDir := fs.String("out", "", "also write NAME.json, .md, .csv, .svg (plot) and .log into this folder")
	name := fs.String("name", "", "base name of the files in --out (default: model-dtype-backend)")
	noProfile := fs.Bool("no-profile", false, "skip the profiled repetition (per-op times and GB/s)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: llamacu bench --model PATH | --synthetic NAME [flags]\n       llamacu bench serve --url URL [flags]\n\n"+
			"Measures prompt processing (pp: tokens/s of a p-token prompt) and token generation (tg: tokens/s\n"+
			"of n decode steps of B sequences at KV depth d), mean ± sample stddev over --reps after --warmup,\n"+
			"and one profiled repetition per test with each op's time and GB/s against the measured copy\n"+
			"bandwidth.\n\nflags:")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	if (lf.model == "") == (*synthetic == "") {
		return fmt.Errorf("%w: exactly one of --model or --synthetic is required", errUsage)
	}
	if *synthetic != "" && len(lf.lora) > 0 {
		return fmt.Errorf("%w: --lora and --lora-scaled apply to --model files, not --synthetic", errUsage)
	}
	if err := lf.checkNodes(); err != nil {
		return err
	}
	batches, err := parseInts("--batch", *batchList, 1)
	if err != nil {
		return err
	}
	depths, err := parseInts("--depth", *depthList, 0)
	if err != nil {
		return err
	}
	if *format != "md" && *format != "json" && *format != "csv" {
		return fmt.Errorf("%w: --format %q (want md, json or csv)", errUsage, *format)
	}
	opts := bench.ModelOptions{Prompt: *p, Gen: *n, Batches: batches, Depths: depths, Reps: *reps, Warmup: *warmup,
		UBatch: *ubatch, TopK: *topk, Profile: !*noProfile, Seed: *seed}
	if *rankOf < 0 || (*rankOf > 0 && (*synthetic == "" || lf.tp != 1 || lf.nodes != 1)) {
		return fmt.Errorf("%w: --rank-of N times one rank alone: it needs --synthetic, and neither --tp nor --nodes", errUsage)
	}
	if *p < 0 || *n < 0 || *reps < 1 || *warmup < 0 || *ubatch < 1 || (*p == 0 && *n == 0) || *topk < 0 || *topk > sample.MaxTopK {
		return fmt.Errorf("%w: -p and -n must be ≥ 0 (not both 0), --reps and --ubatch ≥ 1, --warmup ≥ 0, --topk in [0, %d]", errUsage, sample.MaxTopK)
	}
	threads := lf.threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}

	var log bytes.Buffer
	logf := func(f string, a ...any) {
		line := fmt.Sprintf(f, a...)
		fmt.Fprintln(stderr, line)
		log.WriteString(line + "\n")
	}
	opts.Log = logf

	rep := bench.NewReport()
	var (
		m        *model.Model
		resident tensor.DType
	)
	if *synthetic != "" {
		m, resident, err = syntheticModel(*synthetic, *dtypeName, *seed, *rankOf, lf, opts, rep)
		if err != nil {
			return err
		}
		defer func() {
			m.Close()
			for _, b := range m.Backends() {
				b.Close()
			}
		}()
		if lf.follower() {
			return lf.followModel(m, stderr)
		}
	} else if lf.follower() {
		return lf.follow(stderr)
	} else {
		if resident, err = checkFileFits(lf, opts); err != nil {
			return err
		}
		e, err := lf.load(stderr)
		if err != nil {
			return err
		}
		defer e.Close()
		m = e.Model
		rep.Model = bench.ModelInfo{Name: m.Config.Name, Source: e.Source, Params: m.Config.ParamCount()}
	}
	rep.Model.Config = m.Config
	if rep.Model.Name == "" || rep.Model.Name == "llama" {
		rep.Model.Name = strings.TrimSuffix(filepath.Base(lf.model), filepath.Ext(lf.model))
	}
	rep.Model.DType, rep.Model.WeightBytes = resident.String(), m.Config.WeightBytes(resident)
	if *rankOf > 0 { // the rank's share, as the planner counts it
		if r, err := plan.Compute(m.Config, plan.Options{DType: resident, KVDType: tensor.F16, GPUs: *rankOf, SplitDType: model.SplitDType}); err == nil {
			rep.Model.WeightBytes = r.Weights
		}
	}
	rep.Backend = backendSummary(m.Backends())
	if lf.nodes > 1 { // only this node's backends are known here
		rep.Backend += fmt.Sprintf(" on node 0 (ranks 0–%d of %d; the rest on %d more node(s))", lf.tp/lf.nodes-1, lf.tp, lf.nodes-1)
	}
	rep.Settings = bench.Settings{Prompt: *p, Gen: *n, Batches: batches, Depths: depths, Reps: *reps, Warmup: *warmup, UBatch: *ubatch, TopK: *topk, RankOf: *rankOf, Threads: threads}
	rep.Device = describeDevice(m.Backend, threads, logf)
	logf("model %s (%s, %s parameters, %s weights); backend %s", rep.Model.Name, rep.Model.DType,
		humanize.SIWithDigits(float64(rep.Model.Params), 1, ""), humanize.IBytes(uint64(rep.Model.WeightBytes)), rep.Backend)

	var arCalls, arBytes int
	var arTime time.Duration
	m.SetCollectiveObserver(func(d time.Duration, bytes int) { arCalls, arBytes, arTime = arCalls+1, arBytes+bytes, arTime+d })
	results, skipped, err := bench.RunModel(m, opts)
	if arCalls > 0 {
		mean := arTime / time.Duration(arCalls)
		logf("tensor parallel: %d all-reduces on rank 0, mean %v of %s each ⇒ %v per forward step (2 per layer × %d layers); "+
			"the time the host waited, which on NCCL is only the enqueue (gpu BenchmarkAllReduce measures the exchange)",
			arCalls, mean.Round(100*time.Nanosecond), humanize.IBytes(uint64(arBytes/arCalls)), (mean * time.Duration(2*m.Config.Layers)).Round(time.Microsecond), m.Config.Layers)
	}
	for _, s := range skipped {
		logf("skipped: %s", s)
	}
	if err != nil {
		return err
	}
	for i := range results {
		if results[i].Profile != nil {
			results[i].Profile.SetCopyBandwidth(rep.Device.CopyGBps)
		}
	}
	rep.Results, rep.Skipped = results, skipped
	if err := rep.Write(stdout, *format); err != nil {
		return err
	}
	if *outDir != "" {
		base := *name
		if base == "" {
			base = fileName(fmt.Sprintf("%s-%s-%s", rep.Model.Name, rep.Model.DType, strings.Fields(rep.Backend)[0]))
		}
		return writeOutputs(*outDir, base, log.Bytes(), stderr, map[string]func(io.Writer) error{
			".json": rep.WriteJSON, ".md": rep.WriteMarkdown, ".csv": rep.WriteCSV, ".svg": rep.WritePlot,
		})
	}
	return nil
}

// syntheticModel builds the named shape with seeded random weights directly on the backend, after
// the memory planner has checked that the weights and the benchmark's State fit. With rankOf > 0
// it builds only rank 0 of a rankOf-way tensor-parallel model, alone (tp.Solo).
func syntheticModel(shape, dtypeName string, seed uint64, rankOf int, lf *loadFlags, opts bench.ModelOptions, rep *bench.Report) (*model.Model, tensor.DType, error) {
	cfg, err := model.Preset(shape)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: --synthetic: %v", errUsage, err)
	}
	dtype, err := tensor.ParseDType(dtypeName)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: --dtype: %v", errUsage, err)
	}
	if dtype.ReadOnly() {
		return nil, 0, fmt.Errorf("%w: --dtype %v: llamacu reads %v files but does not write the type (quantise with llama.cpp); synthetic weights are F32, F16, BF16, Q8_0 or Q4_0", errUsage, dtype, dtype)
	}
	if lf.tp < 1 {
		return nil, 0, fmt.Errorf("%w: --tp must be ≥ 1", errUsage)
	}
	if err := cfg.CheckTP(lf.tp); err != nil {
		return nil, 0, fmt.Errorf("%w: %v", errUsage, err)
	}
	if rankOf > 0 {
		if err := cfg.CheckTP(rankOf); err != nil {
			return nil, 0, fmt.Errorf("%w: --rank-of: %v", errUsage, err)
		}
	}
	if err := checkFits(cfg, dtype, lf.backend, max(rankOf, 1), opts); err != nil {
		return nil, 0, err
	}
	threads := lf.threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	var bes []model.Backend
	closeAll := func() {
		for _, b := range bes {
			b.Close()
		}
	}
	var (
		comms []tp.Comm
		node  *tp.TCPNode
	)
	if lf.backend == "cpu" && lf.nodes == 1 {
		for range lf.tp {
			// Keep half-precision weights half, so that "f16" measures f16 weights.
			kv, err := kvType()
			if err != nil {
				return nil, 0, err
			}
			bes = append(bes, cpu.New(cpu.Options{Threads: max(1, threads/lf.tp), KeepHalf: true, KVF16: kv == "f16"}))
		}
	} else { // cuda: a GPU per rank, NCCL; several nodes: TCP (or NCCL) between them
		rg, err := lf.backends(os.Stderr)
		if err != nil {
			return nil, 0, err
		}
		bes, comms, node = rg.backends, rg.comms, rg.node
	}
	if comms == nil {
		if comms, err = tp.NewInProcess(lf.tp); err != nil {
			closeAll()
			return nil, 0, err
		}
	}
	var m *model.Model
	if rankOf > 0 {
		solo, err := tp.NewSolo(0, rankOf)
		if err == nil {
			m, err = model.NewRank(bes[0], cfg, model.SyntheticShard(cfg, seed, dtype, 0, rankOf), solo, nil)
		}
		if err != nil {
			closeAll()
			return nil, 0, err
		}
		rep.Model = bench.ModelInfo{Name: fmt.Sprintf("%s, rank 0 of TP %d alone", cfg.Name, rankOf), Source: fmt.Sprintf("synthetic %s (seed %d)", shape, seed), Params: cfg.ParamCount()}
		return m, dtype, nil
	}
	if node != nil {
		m, err = model.NewParallelNode(bes, cfg, model.Synthetic(cfg, seed, dtype), comms, node, nil)
	} else {
		m, err = model.NewParallel(bes, cfg, model.Synthetic(cfg, seed, dtype), comms, nil)
	}
	if err != nil {
		closeAll()
		if node != nil {
			node.Close()
		}
		return nil, 0, err
	}
	rep.Model = bench.ModelInfo{Name: cfg.Name, Source: fmt.Sprintf("synthetic %s (seed %d)", shape, seed), Params: cfg.ParamCount()}
	return m, dtype, nil
}

// checkFits asks the planner whether weights of dtype and the State the benchmark allocates fit:
// on the CPU against the host's available memory (fp32 KV cache, no fixed overhead), for one rank
// of a tp-way model. Other backends are not checked here (their capacity is the device's; the
// engine checks at load).
func checkFits(cfg model.Config, dtype tensor.DType, backend string, tp int, o bench.ModelOptions) error {
	if backend != "cpu" {
		return nil
	}
	mem, err := plan.HostMemory()
	if err != nil {
		return nil // no /proc: nothing to check against
	}
	mbt, _, ctx, seqs := o.Needs()
	ctx = min(max(ctx, 1), cfg.MaxSeq)
	po := plan.Options{DType: dtype, KVDType: tensor.F32, GPUs: tp, GPUMem: mem, Ctx: ctx, Batch: seqs, MaxBatchTokens: mbt, MaxTP: 1, SplitDType: model.SplitDType} // KeepHalf: F16 stays F16
	if err := plan.CheckFits(cfg, po); err != nil {
		return fmt.Errorf("refusing to allocate: %w", err)
	}
	return nil
}

// checkFileFits runs checkFits for a model file, with the dtype the backend will keep its matrices
// in, which it returns.
func checkFileFits(lf *loadFlags, o bench.ModelOptions) (tensor.DType, error) {
	f, err := loader.Open(lf.model)
	if err != nil {
		return 0, err
	}
	cfg, d := f.Config, residentDType(matrixDType(f), lf.backend)
	f.Close()
	return d, checkFits(cfg, d, lf.backend, 1, o)
}

// describeDevice asks the backend for its device and copy bandwidth, else describes the host CPU
// and times a host copy.
func describeDevice(be model.Backend, threads int, logf func(string, ...any)) bench.Device {
	var d bench.Device
	if dd, ok := be.(bench.DeviceDescriber); ok {
		d = dd.DeviceInfo()
	} else {
		d.Name = bench.HostInfo().CPU
	}
	if cm, ok := be.(bench.CopyBandwidthMeter); ok {
		if bw, err := cm.CopyBandwidth(); err == nil {
			d.CopyGBps, d.CopyMethod = bw/1e9, "device-to-device copy"
		} else {
			logf("copy bandwidth: %v", err)
		}
	} else {
		d.CopyGBps = bench.HostCopyBandwidth(copyBufferBytes, threads, 10) / 1e9
		d.CopyMethod = fmt.Sprintf("host copy of %s on %d goroutines, read+write bytes, best of 10", humanize.IBytes(copyBufferBytes), threads)
	}
	logf("device: %s; copy bandwidth %.1f GB/s (%s)", d.Name, d.CopyGBps, d.CopyMethod)
	return d
}

// residentDType is the dtype the backend keeps matrices of file dtype d in: the CPU backend (as
// `run` builds it) widens F16 and BF16 to F32.
func residentDType(d tensor.DType, backend string) tensor.DType {
	if backend == "cpu" && (d == tensor.F16 || d == tensor.BF16) {
		return tensor.F32
	}
	if backend != "cpu" && d.Quantized() && d != tensor.Q8_0 && d != tensor.Q4_0 && d != tensor.Q4_K && d != tensor.Q5_K && d != tensor.Q6_K {
		return tensor.F16 // the CUDA backend keeps Q8_0, Q4_0, Q4_K, Q5_K and Q6_K quantised, widens the rest (gpu/upload.go)
	}
	return d
}

// parseInts parses a comma-separated list of integers ≥ lo.
func parseInts(flagName, s string, lo int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v < lo {
			return nil, fmt.Errorf("%w: %s: %q is not an integer ≥ %d", errUsage, flagName, f, lo)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s: empty list", errUsage, flagName)
	}
	return out, nil
}

// fileName keeps letters, digits, '.', '-' and '_'.
func fileName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '_'
	}, s)
}

// writeOutputs writes base+ext for each writer, and base.log, into dir.
func writeOutputs(dir, base string, log []byte, stderr io.Writer, writers map[string]func(io.Writer) error) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var errs []error
	for ext, write := range writers {
		path := filepath.Join(dir, base+ext)
		f, err := os.Create(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = write(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
	}
	if err := os.WriteFile(filepath.Join(dir, base+".log"), log, 0o644); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		fmt.Fprintf(stderr, "wrote %s.{json,md,csv,svg,log}\n", filepath.Join(dir, base))
	}
	return errors.Join(errs...)
}
