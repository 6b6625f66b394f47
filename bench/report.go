package bench

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/llamacu/llamacu/model"
)

// Schema names the JSON layout of Report (documented in bench/results/README.md); the PyTorch peer
// scripts in bench/reference write the same.
const Schema = "llamacu-bench/1"

// Report is a whole model benchmark: what ran where, and the results.
type Report struct {
	Schema    string    `json:"schema"`
	Tool      string    `json:"tool"` // "llamacu", or the peer ("transformers-eager", …)
	Date      string    `json:"date"` // RFC 3339
	Commit    string    `json:"commit"`
	GoVersion string    `json:"go_version,omitempty"`
	Host      Host      `json:"host"`
	Device    Device    `json:"device"`
	Backend   string    `json:"backend"`
	Model     ModelInfo `json:"model"`
	Settings  Settings  `json:"settings"`
	Results   []Result  `json:"results"`
	Skipped   []string  `json:"skipped,omitempty"`
}

// ModelInfo is the model under test.
type ModelInfo struct {
	Name        string       `json:"name"`
	Source      string       `json:"source"` // a path, or "synthetic 110m (seed 1)"
	Params      int64        `json:"params"`
	DType       string       `json:"dtype"`        // weight storage as resident on the backend
	WeightBytes int64        `json:"weight_bytes"` // resident weights
	Config      model.Config `json:"config"`
}

// Settings are the options the tests ran with.
type Settings struct {
	Prompt  int   `json:"p"`
	Gen     int   `json:"n"`
	Batches []int `json:"batch"`
	Depths  []int `json:"depth"`
	Reps    int   `json:"reps"`
	Warmup  int   `json:"warmup"`
	UBatch  int   `json:"ubatch,omitempty"`
	TopK    int   `json:"topk,omitempty"`    // tg read each row's best TopK logits (ModelOptions.TopK)
	RankOf  int   `json:"rank_of,omitempty"` // the model was rank 0 of a RankOf-way TP model, timed alone
	Threads int   `json:"threads,omitempty"`
}

// NewReport starts a Report for this run: schema, tool, date, commit, Go version and host.
func NewReport() *Report {
	return &Report{Schema: Schema, Tool: "llamacu", Date: time.Now().UTC().Format(time.RFC3339),
		Commit: Commit(), GoVersion: goVersion(), Host: HostInfo()}
}

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// ReadReport parses a JSON report and checks its schema.
func ReadReport(rd io.Reader) (*Report, error) {
	var r Report
	dec := json.NewDecoder(rd)
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("bench: report: %w", err)
	}
	if r.Schema != Schema {
		return nil, fmt.Errorf("bench: report: schema %q, want %q", r.Schema, Schema)
	}
	return &r, nil
}

// WriteMarkdown writes r as a header, the results table (llama-bench's layout: tokens/s as mean ±
// sample standard deviation) and a per-op table for each profiled test.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	m := r.Model
	fmt.Fprintf(&b, "## %s on %s\n\n", m.Name, r.Backend)
	fmt.Fprintf(&b, "- model: %s — %s parameters, %s weights (%s)\n", m.Source, humanize.SIWithDigits(float64(m.Params), 1, ""), m.DType, humanize.IBytes(uint64(m.WeightBytes)))
	fmt.Fprintf(&b, "- device: %s", r.Device.Name)
	if r.Device.Driver != "" {
		fmt.Fprintf(&b, ", driver %s", r.Device.Driver)
	}
	if r.Device.CopyGBps > 0 {
		fmt.Fprintf(&b, "; measured copy bandwidth %.1f GB/s (%s)", r.Device.CopyGBps, r.Device.CopyMethod)
	}
	if r.Device.PeakTFLOPs > 0 {
		fmt.Fprintf(&b, "; rated peak %.0f TFLOP/s", r.Device.PeakTFLOPs)
	}
	fmt.Fprintf(&b, "\n- host: %s, %d cores, %s\n", r.Host.CPU, r.Host.Cores, r.Host.OS)
	fmt.Fprintf(&b, "- %s, commit %s, %s; %d reps after %d warm-up\n\n", r.Tool, r.Commit, r.Date, r.Settings.Reps, r.Settings.Warmup)
	// Kernels per step, where the backend counted them (the CUDA backend).
	kernels := slices.ContainsFunc(r.Results, func(res Result) bool { return res.KernelsPerStep > 0 })
	b.WriteString("| test | batch | depth | tokens/rep | t/s | median t/s | ms/step |")
	if kernels {
		b.WriteString(" kernels/step |")
	}
	b.WriteString("\n|---|--:|--:|--:|--:|--:|--:|")
	if kernels {
		b.WriteString("--:|")
	}
	b.WriteString("\n")
	for _, res := range r.Results {
		ms := 0.0
		if res.Steps > 0 {
			ms = 1000 * Mean(res.Seconds) / float64(res.Steps)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %.2f ± %.2f | %.2f | %.3f |", res.Test, res.Batch, res.Depth, res.Tokens,
			res.TokS.Mean, res.TokS.Stddev, res.TokS.Median, ms)
		if kernels {
			fmt.Fprintf(&b, " %.0f |", res.KernelsPerStep)
		}
		b.WriteString("\n")
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(&b, "\nskipped: %s\n", s)
	}
	for _, res := range r.Results {
		p := res.Profile
		if p == nil {
			continue
		}
		fmt.Fprintf(&b, "\n### profile: %s (one rep: %.2f ms wall, ops %.2f ms)\n\n", res.Label(), float64(p.WallNS)/1e6, float64(p.OpsNS)/1e6)
		b.WriteString("| op | weight | calls | ms | % time | µs/call | GB/s | % copy BW | GFLOP/s |\n|---|---|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, op := range p.Ops {
			fmt.Fprintf(&b, "| %s | %s | %d | %.3f | %.1f | %.1f | %.2f | %.1f | %s |\n", op.Op, op.Detail, op.Calls,
				float64(op.Time.Nanoseconds())/1e6, op.PctTime, float64(op.PerCallNS)/1e3, op.GBps, op.PctCopyBW, gflops(op))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func gflops(op OpProfile) string {
	if op.FLOPs == 0 {
		return ""
	}
	return fmt.Sprintf("%.1f", op.TFLOPs*1000)
}

// CSVHeader is the header row of WriteCSV.
var CSVHeader = []string{"tool", "model", "dtype", "backend", "device", "commit", "date", "test", "kind", "batch", "depth",
	"tokens", "reps", "tok_s_mean", "tok_s_stddev", "tok_s_median", "tok_s_min", "tok_s_max"}

// WriteCSV writes one row per result (per-op profiles are in the JSON and Markdown only).
func (r *Report) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return err
	}
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', 3, 64) }
	for _, res := range r.Results {
		row := []string{r.Tool, r.Model.Name, r.Model.DType, r.Backend, r.Device.Name, r.Commit, r.Date, res.Test, res.Kind,
			strconv.Itoa(res.Batch), strconv.Itoa(res.Depth), strconv.Itoa(res.Tokens), strconv.Itoa(res.TokS.N),
			f(res.TokS.Mean), f(res.TokS.Stddev), f(res.TokS.Median), f(res.TokS.Min), f(res.TokS.Max)}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// Write writes r in format "md", "json" or "csv".
func (r *Report) Write(w io.Writer, format string) error {
	return writeFormat(w, format, r.WriteMarkdown, r.WriteJSON, r.WriteCSV)
}

// writeFormat calls the writer of format "md" (or "markdown"), "json" or "csv".
func writeFormat(w io.Writer, format string, md, js, csv func(io.Writer) error) error {
	switch format {
	case "md", "markdown":
		return md(w)
	case "json":
		return js(w)
	case "csv":
		return csv(w)
	}
	return fmt.Errorf("%w: format %q (want md, json or csv)", ErrOptions, format)
}
