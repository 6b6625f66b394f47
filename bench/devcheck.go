package bench

// The GPU check's summary: bench/device/check.sh leaves, in its output folder, check.log (with
// the kernel benchmarks' `go test -bench` lines), llamacu bench reports (llamacu-*.json) and the
// PyTorch peer's (hf-*.jsonl). SummarizeDeviceCheck reads them and sets each figure against the
// target it answers to (issue 3: GEMV ≥ 90% and decode attention ≥ 80% of the copy bandwidth
// measured in the same run; 7B decode ≥ 200 tok/s on an H100; 2048-token prefill ≥ 30,000 tok/s;
// the ratio to PyTorch), so that a session with a GPU turns its few minutes into
// bench/results/ with one command: llamacu bench summarize DIR.

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/plan"
	"github.com/llamacu/llamacu/tensor"
)

// GoBench is one line of `go test -bench` output.
type GoBench struct {
	Name    string             // without the -GOMAXPROCS suffix
	N       int                // iterations
	NsPerOp float64            // ns/op
	Metrics map[string]float64 // unit → value: "MB/s", "TFLOP/s", …
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+([0-9.e+]+) ns/op(.*)$`)

// ParseGoBench returns the benchmark lines of a test log, in order. Lines in a section of the
// device check's log headed `===== ncu…` are left out: there a benchmark runs once
// (-test.benchtime 1x) under the profiler, which replays each kernel it profiles, so its ns/op
// is no timing (run 3's summary listed them as figures: "decode attention 70B 1.42 % of copy").
func ParseGoBench(r io.Reader) ([]GoBench, error) {
	var out []GoBench
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	profiled := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if h, ok := strings.CutPrefix(line, "===== "); ok {
			profiled = strings.HasPrefix(h, "ncu")
			continue
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil || profiled {
			continue
		}
		n, _ := strconv.Atoi(m[2])
		ns, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		b := GoBench{Name: m[1], N: n, NsPerOp: ns, Metrics: map[string]float64{}}
		f := strings.Fields(m[4])
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				b.Metrics[f[i+1]] = v
			}
		}
		out = append(out, b)
	}
	return out, sc.Err()
}

// Check is one figure against its target.
type Check struct {
	What   string  // "GEMV F16 4096x4096 n=1"
	Value  float64 // in Unit
	Unit   string  // "% of copy", "tok/s", "×"
	Target float64 // 0: no target (reported only)
	Note   string
}

// Met reports whether the figure reaches its target (always true without one).
func (c Check) Met() bool { return c.Target == 0 || c.Value >= c.Target }

// DeviceCheck is the summary of one GPU check folder.
type DeviceCheck struct {
	Device   string // from the llamacu report, else the log
	CopyMBps float64
	Checks   []Check
	Reports  []string // files read

	allReduceUs  float64 // the all-reduce cost the TP estimates use (addTP8)
	allReduceHow string  // where it comes from
}

// SummarizeDeviceCheck reads dir (check.sh's $OUT).
func SummarizeDeviceCheck(dir string) (*DeviceCheck, error) {
	s := &DeviceCheck{}
	if f, err := os.Open(filepath.Join(dir, "check.log")); err == nil {
		benches, err := ParseGoBench(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("bench: check.log: %w", err)
		}
		s.Reports = append(s.Reports, "check.log")
		s.addKernels(benches)
	} else if !os.IsNotExist(err) {
		return nil, err
	}
	reports := map[string]*Report{}
	names, _ := filepath.Glob(filepath.Join(dir, "*.json*"))
	sort.Strings(names)
	for _, name := range names {
		base := filepath.Base(name)
		// llamacu bench's reports (llamacu-*.json) and the PyTorch peer's (hf-*.jsonl); other
		// JSON beside them, such as hf_logits.py's hf-logits-reference.json, is not a report.
		if !(strings.HasPrefix(base, "llamacu-") && strings.HasSuffix(base, ".json")) &&
			!(strings.HasPrefix(base, "hf-") && strings.HasSuffix(base, ".jsonl")) {
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		r, err := ReadReport(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", base, err)
		}
		reports[strings.TrimSuffix(strings.TrimSuffix(base, ".jsonl"), ".json")] = r
		s.Reports = append(s.Reports, base)
	}
	s.addModels(reports)
	s.addRanks(reports)
	if len(s.Reports) == 0 {
		return nil, fmt.Errorf("bench: %s holds neither check.log nor bench reports", dir)
	}
	return s, nil
}

// addKernels turns the kernel benchmarks into checks against BenchmarkCopy's bandwidth.
func (s *DeviceCheck) addKernels(benches []GoBench) {
	for _, b := range benches {
		if b.Name == "BenchmarkCopy" {
			s.CopyMBps = b.Metrics["MB/s"]
		}
	}
	tflops := map[string]float64{}
	topk := map[string]float64{}    // ns/op by "v2/n=8/k=40"
	gateUp := map[string]float64{}  // ns/op by "fused/n=1"
	qkvRoPE := map[string]float64{} // ns/op by "fused/7B/n=1"
	decode := map[string]float64{}  // ns/op by "7B", "v3/7B"
	for _, b := range benches {
		switch {
		case strings.HasPrefix(b.Name, "BenchmarkGEMV/") && s.CopyMBps > 0:
			what := "GEMV " + strings.ReplaceAll(strings.TrimPrefix(b.Name, "BenchmarkGEMV/"), "/", " ")
			target := 0.0
			if strings.HasSuffix(b.Name, "n=1") {
				target = 90
			}
			s.Checks = append(s.Checks, Check{What: what, Value: 100 * b.Metrics["MB/s"] / s.CopyMBps, Unit: "% of copy", Target: target,
				Note: fmt.Sprintf("%.0f GB/s", b.Metrics["MB/s"]/1e3)})
		case strings.HasPrefix(b.Name, "BenchmarkGEMVQuant/") && s.CopyMBps > 0: // stored bytes; reported only
			what := "GEMV " + strings.ReplaceAll(strings.TrimPrefix(b.Name, "BenchmarkGEMVQuant/"), "/", " ") + " (quantised)"
			s.Checks = append(s.Checks, Check{What: what, Value: 100 * b.Metrics["MB/s"] / s.CopyMBps, Unit: "% of copy",
				Note: fmt.Sprintf("%.0f GB/s of stored blocks", b.Metrics["MB/s"]/1e3)})
		case strings.HasPrefix(b.Name, "BenchmarkAttentionDecode/") && s.CopyMBps > 0:
			rest := strings.TrimPrefix(b.Name, "BenchmarkAttentionDecode/")
			decode[rest] = b.NsPerOp
			what := "decode attention " + rest + ", 4096 context"
			target := 0.0
			// The target is the default kernels' at one row ("7B", "70B"; "v4/…", "bps2/…" are
			// forced or tuned, "7B/8seqs" is eight rows).
			if !strings.Contains(rest, "/") {
				target = 80
			}
			s.Checks = append(s.Checks, Check{What: what, Value: 100 * b.Metrics["MB/s"] / s.CopyMBps, Unit: "% of copy", Target: target,
				Note: fmt.Sprintf("%.0f GB/s of K/V", b.Metrics["MB/s"]/1e3)})
		case strings.HasPrefix(b.Name, "BenchmarkAttentionPrefill/"):
			rest := strings.TrimPrefix(b.Name, "BenchmarkAttentionPrefill/")
			tflops[rest] = b.Metrics["TFLOP/s"]
			s.Checks = append(s.Checks, Check{What: "prefill attention " + strings.ReplaceAll(rest, "/", " "), Value: b.Metrics["TFLOP/s"], Unit: "TFLOP/s"})
		case strings.HasPrefix(b.Name, "BenchmarkGateUp/"):
			gateUp[strings.TrimPrefix(b.Name, "BenchmarkGateUp/")] = b.NsPerOp
		case strings.HasPrefix(b.Name, "BenchmarkQKVRoPE/"):
			qkvRoPE[strings.TrimPrefix(b.Name, "BenchmarkQKVRoPE/")] = b.NsPerOp
		case strings.HasPrefix(b.Name, "BenchmarkTopK/"):
			rest := strings.TrimPrefix(b.Name, "BenchmarkTopK/")
			topk[rest] = b.NsPerOp
			s.Checks = append(s.Checks, Check{What: "top-k " + strings.ReplaceAll(rest, "/", " ") + ", 32000 vocabulary", Value: b.NsPerOp / 1e3, Unit: "µs"})
		case strings.HasPrefix(b.Name, "BenchmarkAllReduce"):
			s.Checks = append(s.Checks, Check{What: "all-reduce " + strings.TrimPrefix(strings.TrimPrefix(b.Name, "BenchmarkAllReduce"), "/"), Value: b.NsPerOp / 1e3, Unit: "µs"})
		}
	}
	s.addTP8(benches)
	for _, k := range slices.Sorted(maps.Keys(gateUp)) {
		if un := gateUp["unfused/"+strings.TrimPrefix(k, "fused/")]; strings.HasPrefix(k, "fused/") && un > 0 && gateUp[k] > 0 {
			s.Checks = append(s.Checks, Check{What: "FFN gate/up + SwiGLU fused ÷ unfused (7B, fp16), " + strings.TrimPrefix(k, "fused/"), Value: un / gateUp[k], Unit: "×",
				Note: fmt.Sprintf("%.1f vs %.1f µs", gateUp[k]/1e3, un/1e3)})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(qkvRoPE)) {
		if sep := qkvRoPE["separate/"+strings.TrimPrefix(k, "fused/")]; strings.HasPrefix(k, "fused/") && sep > 0 && qkvRoPE[k] > 0 {
			s.Checks = append(s.Checks, Check{What: "q/k/v GEMV with RoPE and the KV store fused ÷ separate (fp16), " + strings.ReplaceAll(strings.TrimPrefix(k, "fused/"), "/", " "),
				Value: sep / qkvRoPE[k], Unit: "×", Note: fmt.Sprintf("%.1f vs %.1f µs", qkvRoPE[k]/1e3, sep/1e3)})
		}
	}
	// Decode attention by shape ("7B", "70B", "7B/8seqs": the names without a version or tuning
	// prefix): v5 ÷ v4 and v4 ÷ v3, each forced ("v5/…", "v4/…", "v3/…"; logs from before v5
	// have no "v4/…": their default was v4).
	for _, k := range slices.Sorted(maps.Keys(decode)) {
		if strings.HasPrefix(k, "v") || strings.HasPrefix(k, "bps") {
			continue
		}
		v4 := decode["v4/"+k]
		if v4 == 0 {
			v4 = decode[k]
		}
		if v5 := decode["v5/"+k]; v5 > 0 && v4 > 0 {
			s.Checks = append(s.Checks, Check{What: "decode attention v5 (tensor cores) ÷ v4, " + k + ", 4096 context", Value: v4 / v5, Unit: "×",
				Note: fmt.Sprintf("%.1f vs %.1f µs", v5/1e3, v4/1e3)})
		}
		if v3 := decode["v3/"+k]; v3 > 0 && v4 > 0 {
			s.Checks = append(s.Checks, Check{What: "decode attention v4 (cp.async pipeline) ÷ v3, " + k + ", 4096 context", Value: v3 / v4, Unit: "×",
				Note: fmt.Sprintf("%.1f vs %.1f µs", v4/1e3, v3/1e3)})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(topk)) {
		v2 := topk[k]
		if host := topk["read+host/"+strings.TrimPrefix(k, "v2/")]; strings.HasPrefix(k, "v2/") && host > 0 && v2 > 0 {
			s.Checks = append(s.Checks, Check{What: "top-k on the device: read+host ÷ v2, " + strings.ReplaceAll(strings.TrimPrefix(k, "v2/"), "/", " "), Value: host / v2, Unit: "×"})
		}
	}
	// Prefill attention: the newest tensor-core kernel (v4; v3 in logs from before it) ÷ SIMT,
	// and v4 ÷ v3.
	for _, k := range slices.Sorted(maps.Keys(tflops)) {
		ver, shape, ok := strings.Cut(k, "/")
		if !ok || tflops[k] <= 0 {
			continue
		}
		name := strings.ReplaceAll(shape, "/", " ")
		simt := tflops["v2-simt/"+shape]
		switch {
		case ver == "v4-mma":
			if v3 := tflops["v3-mma/"+shape]; v3 > 0 {
				s.Checks = append(s.Checks, Check{What: "prefill attention v4 (cp.async pipeline, ldmatrix) ÷ v3, " + name, Value: tflops[k] / v3, Unit: "×"})
			}
		case ver == "v3-mma" && tflops["v4-mma/"+shape] == 0:
		default:
			continue
		}
		if simt > 0 {
			s.Checks = append(s.Checks, Check{What: "prefill attention tensor cores ÷ SIMT, " + name, Value: tflops[k] / simt, Unit: "×"})
		}
	}
}

// assumedAllReduceUs is the all-reduce cost the TP 8 estimate uses when the check ran on fewer
// than two GPUs (NCCL between GPUs not measured): llamacu plan's README example, an assumption.
const assumedAllReduceUs = 20

// addTP8 is issue 6's figure: Llama-2-70B fp16, batch 1, on 8×H100 by the planner's arithmetic
// (llamacu plan: the weights each GPU streams per token ÷ this run's copy bandwidth + 160
// all-reduces), with the NCCL all-reduce measured here when the machine had several GPUs.
// allReduce is the cost of one all-reduce for the TP estimates: the NCCL benchmark's when the
// machine had several GPUs, else assumedAllReduceUs. It remembers it for addModels.
func (s *DeviceCheck) allReduce(benches []GoBench) (float64, string) {
	us, how := float64(assumedAllReduceUs), fmt.Sprintf("all-reduce %d µs assumed (one GPU: NCCL between GPUs not measured)", assumedAllReduceUs)
	for _, b := range benches {
		if strings.HasPrefix(b.Name, "BenchmarkAllReduce/") && strings.HasSuffix(b.Name, "/NCCL") {
			if v := b.Metrics["µs/allreduce"]; v > 0 {
				us, how = v, fmt.Sprintf("all-reduce %.1f µs measured (%s)", v, strings.TrimPrefix(b.Name, "BenchmarkAllReduce/"))
			}
		}
	}
	s.allReduceUs, s.allReduceHow = us, how
	return us, how
}

func (s *DeviceCheck) addTP8(benches []GoBench) {
	if s.CopyMBps <= 0 {
		return
	}
	r, err := plan.Compute(model.Llama2_70B, plan.Options{DType: tensor.F16, KVDType: tensor.F16, GPUs: 8, Batch: 1})
	if err != nil {
		return
	}
	us, how := s.allReduce(benches)
	e := plan.EstimateDecode(r, model.Llama2_70B.Layers, s.CopyMBps/1e3, us)
	s.Checks = append(s.Checks, Check{What: "Llama-2-70B fp16 b1 at TP 8 (planner arithmetic, this GPU ×8)", Value: e.TokensPerSec, Unit: "tok/s", Target: 100,
		Note: fmt.Sprintf("%.1f GB/GPU ÷ %.0f GB/s + %d × %s; leaves out KV reads and launch gaps", float64(e.StreamBytes)/1e9, e.GBps, e.AllReduces, how)})
}

// addRanks turns each report of one rank timed alone (llamacu bench --rank-of N) into the group's
// decode rate: the rank's measured step time plus the step's all-reduces (two per layer, at the
// cost addTP8 chose). Issue 6's figure, Llama-2-70B fp16 at TP 8, has the 100 tok/s target.
func (s *DeviceCheck) addRanks(reports map[string]*Report) {
	us, how := s.allReduceUs, s.allReduceHow
	if us <= 0 {
		us, how = float64(assumedAllReduceUs), fmt.Sprintf("all-reduce %d µs assumed", assumedAllReduceUs)
	}
	for _, name := range slices.Sorted(maps.Keys(reports)) {
		r := reports[name]
		tpN, layers := r.Settings.RankOf, r.Model.Config.Layers
		if tpN == 0 || layers == 0 {
			continue
		}
		for _, x := range r.Results {
			if x.Kind != "tg" || x.Batch != 1 || x.TokS.Mean <= 0 {
				continue
			}
			step := 1/x.TokS.Mean + float64(2*layers)*us*1e-6
			c := Check{What: fmt.Sprintf("%s b1 d%d at TP %d: one rank measured alone + %d all-reduces", r.Model.Config.Name, x.Depth, tpN, 2*layers),
				Value: 1 / step, Unit: "tok/s",
				Note: fmt.Sprintf("rank 0 alone %.2f ms/token (%s, %s) + %d × %s", 1e3/x.TokS.Mean, name, r.Model.DType, 2*layers, how)}
			if ab := abRun(name); ab != "" { // an A/B run of the rank: named, no target
				c.What += " (" + ab + ")"
				s.rankAB(reports, name, x)
			} else if r.Model.Config.Name == model.Llama2_70B.Name && tpN == 8 && r.Model.DType == "F16" && x.Depth == 0 {
				c.Target = 100
			}
			s.Checks = append(s.Checks, c)
		}
	}
}

// rankAB sets an A/B run of one rank (result x of report name) against the rank's main run, as
// addModels does for whole models.
func (s *DeviceCheck) rankAB(reports map[string]*Report, name string, x Result) {
	for _, ab := range abRuns {
		main := reports[strings.TrimSuffix(name, ab.suffix)]
		if !strings.HasSuffix(name, ab.suffix) || main == nil {
			continue
		}
		y, ok := find(main, x.Label())
		if !ok || y.TokS.Mean <= 0 || x.TokS.Mean <= 0 {
			return
		}
		if ab.abHasIt {
			x, y = y, x
		}
		s.Checks = append(s.Checks, Check{What: fmt.Sprintf("%s, %s, %s", ab.what, main.Model.Config.Name+" rank", x.Label()),
			Value: y.TokS.Mean / x.TokS.Mean, Unit: "×", Note: fmt.Sprintf("%.1f vs %.1f tok/s", y.TokS.Mean, x.TokS.Mean)})
		return
	}
}

// abRuns are the A/B runs beside a shape's main run, llamacu-<shape>-f16-cuda<suffix>: the fp32
// SIMT prefill, launch by launch decode (the main run has the feature); decode reading 40
// candidates per row, and the model in Q4_K, Q8_0 or Q4_0 (llamacu-<shape>-q8_0-cuda) instead of
// fp16 (the A/B run has it).
var abRuns = []struct {
	suffix, what string
	abHasIt      bool
}{
	{"-simt-prefill", "prefill with tensor-core attention ÷ SIMT", false},
	{"-no-graphs", "decode with CUDA graphs ÷ without", false},
	{"-v2-kernels", "decode with GEMV v3 and decode attention v3 ÷ their v2 (LLAMACU_GEMV=v2 LLAMACU_DECODE=v2)", false},
	{"-gemv-v3", "decode with GEMV v4 (tensor cores, 2–8 rows) ÷ v3 (LLAMACU_GEMV=v3)", false},
	{"-ubatch2048", "prefill in one 2048-token step ÷ in steps of 512 (--ubatch 2048)", true},
	{"-separate-rope", "decode with RoPE and the KV store in the q/k/v GEMV ÷ their own launch (LLAMACU_ROPE=separate)", false},
	{"-separate-norm", "decode with the residual add and RMSNorm folded into the q/k/v and gate/up GEMVs ÷ their own launch (LLAMACU_NORM=separate)", false},
	{"-prefill-v3", "prefill with attention v4 ÷ v3 (LLAMACU_PREFILL=v3)", false},
	{"-decode-v3", "decode with attention v4 ÷ v3 (LLAMACU_DECODE=v3)", false},
	{"-decode-v4", "decode with attention v5 (tensor cores) ÷ v4 (LLAMACU_DECODE=v4)", false},
	{"-decode-v5", "decode with attention v5 (tensor cores) at every group size ÷ the default (LLAMACU_DECODE=v5)", true},
	{"-f32-intermediates", "prefill with the GEMMs' outputs kept in fp16 ÷ through fp32 (LLAMACU_INTERMEDIATES=f32)", false},
	{"-pdl", "decode with programmatic dependent launch ÷ without (LLAMACU_PDL=1)", true},
	{"-topk40", "decode reading each row's 40 best logits (device top-k) ÷ whole rows", true},
	{"-q4_k", "Q4_K weights kept quantised ÷ fp16", true},
	{"-q8_0", "Q8_0 weights kept quantised ÷ fp16", true},
	{"-q4_0", "Q4_0 weights kept quantised ÷ fp16", true},
}

// isABRun reports whether a report's name is one of abRuns' (not a main run).
func isABRun(name string) bool { return abRun(name) != "" || quantAB(name) }

// abRun is the suffix (without its dash) of abRuns' that name ends with, or "". Any
// -ubatch<N> is one (check.sh names it after its prompt length, 2048 unless CHECK_PREFILL).
func abRun(name string) string {
	for _, ab := range abRuns {
		if strings.HasSuffix(name, ab.suffix) {
			return strings.TrimPrefix(ab.suffix, "-")
		}
	}
	if m := reUBatchRun.FindStringSubmatch(name); m != nil {
		return m[1]
	}
	return ""
}

var reUBatchRun = regexp.MustCompile(`-(ubatch\d+)$`)

// find is r's result with this label.
func find(r *Report, label string) (Result, bool) {
	if r == nil {
		return Result{}, false
	}
	for _, x := range r.Results {
		if x.Label() == label {
			return x, true
		}
	}
	return Result{}, false
}

// addModels sets the llamacu reports against the targets and their peers.
func (s *DeviceCheck) addModels(reports map[string]*Report) {
	var names []string
	for name := range reports {
		if strings.HasPrefix(name, "llamacu-") && !isABRun(name) && reports[name].Settings.RankOf == 0 {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		r := reports[name]
		if s.Device == "" {
			s.Device = r.Device.Name
		}
		shape := strings.TrimSuffix(strings.TrimPrefix(name, "llamacu-"), "-f16-cuda")
		var peer *Report
		for pn, p := range reports {
			if strings.HasPrefix(pn, "hf-"+shape+"-") {
				peer = p
			}
		}
		big := strings.HasPrefix(shape, "7b")
		modelName := r.Model.Name // with its dtype unless fp16: llama-2-70b Q4_K (the one-GPU run)
		if d := r.Model.DType; d != "" && !strings.EqualFold(d, "F16") {
			modelName += " " + d
		}
		for _, x := range r.Results {
			c := Check{What: fmt.Sprintf("%s %s", modelName, x.Label()), Value: x.TokS.Mean, Unit: "tok/s"}
			if big && x.Label() == "tg"+strconv.Itoa(r.Settings.Gen)+" b1 d0" {
				c.Target = 200
			}
			if big && x.Kind == "pp" && x.Tokens >= 2048 && x.Depth == 0 {
				c.Target = 30000
			}
			if p, ok := find(peer, x.Label()); ok && p.TokS.Mean > 0 {
				c.Note = fmt.Sprintf("%.2f× PyTorch eager (%.1f tok/s)", x.TokS.Mean/p.TokS.Mean, p.TokS.Mean)
			}
			s.Checks = append(s.Checks, c)
		}
		// The A/B runs of the same shape.
		for _, ab := range abRuns {
			o := reports[name+ab.suffix]
			if quantAB(ab.suffix + "-") { // llamacu-7b-q8_0-cuda beside llamacu-7b-f16-cuda
				o = nil
				if strings.Contains(name, "-f16-") { // not the one-GPU Q4_K run against itself
					o = reports[strings.Replace(name, "-f16-", ab.suffix+"-", 1)]
				}
			}
			if o == nil {
				continue
			}
			for _, x := range o.Results {
				y, ok := find(r, x.Label())
				if ab.abHasIt {
					x, y = y, x
				}
				if ok && x.TokS.Mean > 0 {
					s.Checks = append(s.Checks, Check{What: fmt.Sprintf("%s, %s", ab.what, x.Label()), Value: y.TokS.Mean / x.TokS.Mean, Unit: "×",
						Note: fmt.Sprintf("%.1f vs %.1f tok/s", y.TokS.Mean, x.TokS.Mean)})
				}
			}
		}
	}
}

// WriteMarkdown writes the summary as a table: figure, value, target, met.
func (s *DeviceCheck) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "device: %s; copy bandwidth %.0f GB/s (BenchmarkCopy, read+write); files: %s\n\n", orUnknown(s.Device), s.CopyMBps/1e3, strings.Join(s.Reports, ", "))
	b.WriteString("| figure | value | target | met | note |\n|---|--:|--:|:-:|---|\n")
	for _, c := range s.Checks {
		target, met := "", ""
		if c.Target > 0 {
			target = fmt.Sprintf("%g %s", c.Target, c.Unit)
			met = "no"
			if c.Met() {
				met = "yes"
			}
		}
		fmt.Fprintf(&b, "| %s | %s %s | %s | %s | %s |\n", c.What, formatValue(c.Value), c.Unit, target, met, c.Note)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func formatValue(v float64) string {
	switch {
	case v >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// quantAB reports a bench report name of a quantised A/B run (llamacu-7b-q4_k-cuda).
func quantAB(name string) bool {
	for _, q := range []string{"-q4_k-", "-q8_0-", "-q4_0-"} {
		if strings.Contains(name, q) {
			return true
		}
	}
	return false
}
