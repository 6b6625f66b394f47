package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/dustin/go-humanize"

	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// infoReport is what `llamacu info --json` prints.
type infoReport struct {
	Source       string           `json:"source"`
	Format       string           `json:"format,omitempty"`
	FileBytes    int64            `json:"file_bytes,omitempty"`
	Config       model.Config     `json:"config"`
	HeadDim      int              `json:"head_dim"`
	Parameters   int64            `json:"parameters"`
	TensorDTypes map[string]int   `json:"tensor_dtypes,omitempty"` // dtype → tensor count in the file
	WeightBytes  map[string]int64 `json:"weight_bytes"`            // dtype → all weights stored so
	KVPerToken   map[string]int64 `json:"kv_bytes_per_token"`      // cache dtype → bytes per token
	KVFull       map[string]int64 `json:"kv_bytes_full_context"`   // at max_seq_len, one sequence
	Vocabulary   int              `json:"vocabulary_in_file,omitempty"`
	Skipped      []string         `json:"skipped_tensors,omitempty"`
}

func init() {
	register(command{"info", "print a model's configuration, parameters and memory", cmdInfo})
}

func cmdInfo(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("info", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelPath := fs.String("model", "", "model file or folder")
	preset := fs.String("preset", "", "a built-in shape instead of a file: 7b, 13b, 70b, tiny, 110m")
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: llamacu info --model PATH | --preset NAME [--json]\n\nflags:")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || (*modelPath == "") == (*preset == "") {
		return fmt.Errorf("%w: exactly one of --model or --preset is required", errUsage)
	}
	var r infoReport
	if *preset != "" {
		cfg, err := model.Preset(*preset)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		r.Source, r.Config = "preset "+*preset, cfg
	} else {
		f, err := loader.Open(*modelPath)
		if err != nil {
			return err
		}
		defer f.Close()
		r.Source, r.Format, r.Config, r.Skipped = *modelPath, string(f.Format), f.Config, f.Skipped
		r.FileBytes = pathSize(*modelPath)
		r.TensorDTypes = map[string]int{}
		for _, t := range f.Tensors {
			r.TensorDTypes[t.DType.String()]++
		}
		if f.Vocab != nil {
			r.Vocabulary = len(f.Vocab.Tokens)
		}
	}
	c := r.Config
	r.HeadDim, r.Parameters = c.HeadDim(), c.ParamCount()
	r.WeightBytes, r.KVPerToken, r.KVFull = map[string]int64{}, map[string]int64{}, map[string]int64{}
	for _, d := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16, tensor.Q8_0, tensor.Q4_0} {
		r.WeightBytes[d.String()] = c.WeightBytes(d)
	}
	for name, eb := range map[string]int{"F32": 4, "F16": 2} {
		r.KVPerToken[name] = c.KVBytesPerToken(eb)
		r.KVFull[name] = c.KVBytesPerToken(eb) * int64(c.MaxSeq)
	}
	if *asJSON {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	row := func(k, f string, a ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(f, a...)) }
	row("source", "%s", r.Source)
	if r.Format != "" {
		row("format", "%s, %s on disk", r.Format, humanize.IBytes(uint64(r.FileBytes)))
		row("tensors", "%s", dtypeCounts(r.TensorDTypes))
	}
	row("dim", "%d (head_dim %d)", c.Dim, r.HeadDim)
	row("layers", "%d", c.Layers)
	row("heads", "%d query, %d key/value (GQA %d:1)", c.Heads, c.KVHeads, c.Heads/c.KVHeads)
	row("ffn", "%d", c.FFN)
	row("vocab", "%d", c.Vocab)
	row("context", "%d", c.MaxSeq)
	row("rms eps / rope theta", "%g / %g", c.NormEps, c.RopeTheta)
	row("output", "%s", map[bool]string{true: "tied to the token embedding", false: "own matrix"}[c.TiedOutput])
	row("parameters", "%s (%d)", humanize.SIWithDigits(float64(r.Parameters), 2, ""), r.Parameters)
	for _, d := range []string{"F32", "F16", "BF16", "Q8_0", "Q4_0"} {
		row("weights "+d, "%s", humanize.IBytes(uint64(r.WeightBytes[d])))
	}
	row("KV cache F16", "%s per token, %s at %d tokens", humanize.IBytes(uint64(r.KVPerToken["F16"])), humanize.IBytes(uint64(r.KVFull["F16"])), c.MaxSeq)
	if r.Vocabulary > 0 {
		row("vocabulary in file", "%d pieces", r.Vocabulary)
	}
	for _, s := range r.Skipped {
		row("skipped", "%s", s)
	}
	return tw.Flush()
}

func dtypeCounts(m map[string]int) string {
	var parts []string
	for d, n := range m {
		parts = append(parts, fmt.Sprintf("%d %s", n, d))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// pathSize is the size of a file, or the total of a folder's files.
func pathSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	if !st.IsDir() {
		return st.Size()
	}
	var n int64
	entries, _ := os.ReadDir(path)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && !fi.IsDir() {
			n += fi.Size()
		}
	}
	return n
}
