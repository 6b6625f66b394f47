package bench

import (
	"bytes"
	"encoding/csv"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/model"
)

func TestRunModel(t *testing.T) {
	be := cpu.New(cpu.Options{Threads: 1})
	defer be.Close()
	m := tinyModel(t, be) // context 512
	var logged []string
	o := ModelOptions{Prompt: 32, Gen: 8, Batches: []int{1, 4}, Depths: []int{0, 490}, Reps: 3, Warmup: 1, UBatch: 16, Profile: true,
		Log: func(f string, a ...any) { logged = append(logged, f) }}
	res, skipped, err := RunModel(m, o)
	require.NoError(t, err)
	// depth 490: pp32 would reach 522 > 512 and is skipped; tg8 reaches 498 and runs.
	require.Len(t, skipped, 1)
	require.Contains(t, skipped[0], "pp32 at depth 490")
	var labels []string
	for _, r := range res {
		labels = append(labels, r.Label())
	}
	require.Equal(t, []string{"pp32", "tg8 b1 d0", "tg8 b4 d0", "tg8 b1 d490", "tg8 b4 d490"}, labels)
	require.Len(t, logged, 5)
	for _, r := range res {
		t.Run(r.Label(), func(t *testing.T) {
			require.Len(t, r.Seconds, 3)
			require.Equal(t, 3, r.TokS.N)
			require.Positive(t, r.TokS.Mean)
			if r.Kind == "pp" {
				require.Equal(t, 32, r.Tokens)
				require.Equal(t, 2, r.Steps, "32 tokens in ubatches of 16")
			} else {
				require.Equal(t, 8*r.Batch, r.Tokens)
				require.Equal(t, 8, r.Steps)
			}
			// The rate is tokens over each rep's wall time.
			for i, s := range r.Seconds {
				require.Positive(t, s, i)
			}
			require.InDelta(t, Mean(rates(r)), r.TokS.Mean, 1e-9*r.TokS.Mean)
			p := r.Profile
			require.NotNil(t, p)
			require.LessOrEqual(t, p.OpsNS, p.WallNS, "ops are timed inside the rep")
			require.Positive(t, p.OpsNS)
			var matmuls int
			for _, op := range p.Ops {
				if op.Op == "MatMul" {
					matmuls += op.Calls
				}
			}
			require.Equal(t, r.Steps*(7*4+1), matmuls)
		})
	}
}

// The profiled repetition of each test is the same work as the timed ones, so its rate agrees with
// theirs within noise. Timing on a shared 2-core machine (other test binaries run beside this one)
// can stall a sub-millisecond repetition by a scheduler quantum, so the check allows a factor of 3
// beyond the range of the timed repetitions, and retries a run that falls outside it.
func TestRunModelRatesAgreeWithProfile(t *testing.T) {
	be := cpu.New(cpu.Options{Threads: 1})
	defer be.Close()
	m := tinyModel(t, be)
	o := ModelOptions{Prompt: 64, Gen: 16, Batches: []int{1, 8}, Depths: []int{0, 256}, Reps: 3, Warmup: 1, Profile: true}
	var bad []string
	for attempt := 0; attempt < 3; attempt++ {
		res, _, err := RunModel(m, o)
		require.NoError(t, err)
		bad = ratesDisagree(res, 3)
		if len(bad) == 0 {
			return
		}
		t.Logf("attempt %d: %v", attempt+1, bad)
	}
	t.Fatalf("profiled and timed rates disagree in 3 runs: %v", bad)
}

// ratesDisagree lists the tests whose profiled rate (tokens over the profiled rep's wall time, and
// over its summed op times) lies outside [min/f, max·f] of the timed repetitions' rates.
func ratesDisagree(res []Result, f float64) []string {
	var bad []string
	for _, r := range res {
		for what, ns := range map[string]int64{"wall": r.Profile.WallNS, "ops": r.Profile.OpsNS} {
			rate := float64(r.Tokens) / (float64(ns) / 1e9)
			if rate < r.TokS.Min/f || rate > r.TokS.Max*f {
				bad = append(bad, fmt.Sprintf("%s: %s rate %.0f vs timed %.0f..%.0f", r.Label(), what, rate, r.TokS.Min, r.TokS.Max))
			}
		}
	}
	return bad
}

func rates(r Result) []float64 {
	out := make([]float64, len(r.Seconds))
	for i, s := range r.Seconds {
		out[i] = float64(r.Tokens) / s
	}
	return out
}

func TestRunModelOptions(t *testing.T) {
	be := cpu.New(cpu.Options{Threads: 1})
	defer be.Close()
	m := tinyModel(t, be)
	for name, o := range map[string]ModelOptions{
		"no reps":    {Prompt: 8, Depths: []int{0}},
		"nothing":    {Reps: 1, Depths: []int{0}},
		"no batches": {Gen: 4, Reps: 1, Depths: []int{0}},
		"bad batch":  {Gen: 4, Reps: 1, Depths: []int{0}, Batches: []int{0}},
		"neg depth":  {Prompt: 4, Reps: 1, Depths: []int{-1}},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := RunModel(m, o)
			require.ErrorIs(t, err, ErrOptions)
		})
	}
	res, skipped, err := RunModel(m, ModelOptions{Prompt: 8, Gen: 8, Batches: []int{1}, Depths: []int{600}, Reps: 1})
	require.NoError(t, err)
	require.Empty(t, res)
	require.Len(t, skipped, 2)
}

func sampleReport(t *testing.T) *Report {
	t.Helper()
	be := cpu.New(cpu.Options{Threads: 1})
	defer be.Close()
	m := tinyModel(t, be)
	o := ModelOptions{Prompt: 16, Gen: 4, Batches: []int{1, 2, 4}, Depths: []int{0, 64}, Reps: 2, Profile: true}
	res, skipped, err := RunModel(m, o)
	require.NoError(t, err)
	r := NewReport()
	r.Backend = be.Name()
	r.Device = Device{Name: r.Host.CPU, CopyGBps: 10, CopyMethod: "test"}
	r.Model = ModelInfo{Name: m.Config.Name, Source: "synthetic tiny", Params: m.Config.ParamCount(), DType: "F32", Config: m.Config}
	r.Settings = Settings{Prompt: 16, Gen: 4, Batches: o.Batches, Depths: o.Depths, Reps: 2}
	r.Results, r.Skipped = res, skipped
	return r
}

func TestReportFormats(t *testing.T) {
	r := sampleReport(t)
	var js bytes.Buffer
	require.NoError(t, r.Write(&js, "json"))
	back, err := ReadReport(&js)
	require.NoError(t, err)
	require.Equal(t, Schema, back.Schema)
	require.Len(t, back.Results, len(r.Results))
	require.Equal(t, r.Results[1].TokS, back.Results[1].TokS)
	require.NotEmpty(t, back.Results[1].Profile.Ops)

	var md bytes.Buffer
	require.NoError(t, r.Write(&md, "md"))
	for _, want := range []string{"| test | batch |", "| pp16 | 1 | 0 | 16 |", "| tg4 | 4 | 64 | 16 |", "### profile: tg4 b2 d64", "| MatMul | 512x128 F32 |"} {
		require.Contains(t, md.String(), want)
	}

	var cs bytes.Buffer
	require.NoError(t, r.Write(&cs, "csv"))
	rows, err := csv.NewReader(&cs).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 1+len(r.Results))
	require.Equal(t, CSVHeader, rows[0])
	require.Equal(t, "tg4", rows[2][7])

	require.ErrorIs(t, r.Write(io.Discard, "xml"), ErrOptions)
	_, err = ReadReport(strings.NewReader(`{"schema": "other"}`))
	require.Error(t, err)
}

func TestWritePlotIsSVG(t *testing.T) {
	r := sampleReport(t)
	var buf bytes.Buffer
	require.NoError(t, r.WritePlot(&buf))
	dec := xml.NewDecoder(&buf)
	var root string
	var texts []string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		switch el := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = el.Name.Local
			}
		case xml.CharData:
			if s := strings.TrimSpace(string(el)); s != "" {
				texts = append(texts, s)
			}
		}
	}
	require.Equal(t, "svg", root)
	all := strings.Join(texts, "|")
	for _, want := range []string{"tokens/s", "tg4, depth 64", "tg4, batch 2", "pp16", "batch size"} {
		require.Contains(t, all, want)
	}
}

func TestHostCopyBandwidth(t *testing.T) {
	bw := HostCopyBandwidth(8<<20, 2, 2)
	require.Greater(t, bw, 1e8, "even a slow machine copies 100 MB/s")
	h := HostInfo()
	require.NotEmpty(t, h.CPU)
	require.Positive(t, h.Cores)
	require.NotEmpty(t, Commit())
}

// matMulCounter is a backend that counts its MatMul calls as "launches" (as the CUDA backend
// counts kernels), hiding the cpu backend's fused ops so that each projection is one MatMul.
type matMulCounter struct {
	model.Backend
	n int64
}

func (c *matMulCounter) MatMul(out, x model.Buffer, w model.Weight, n int) {
	c.n++
	c.Backend.MatMul(out, x, w, n)
}

func (c *matMulCounter) Launches() int64 { return c.n }

// TestRunModelKernelsPerStep: on a backend that counts launches, each result reports the mean
// per forward step: here the matmuls of a decode step, 7 per layer and the LM head.
func TestRunModelKernelsPerStep(t *testing.T) {
	be := cpu.New(cpu.Options{Threads: 1})
	defer be.Close()
	c := &matMulCounter{Backend: be}
	m := tinyModel(t, c)
	res, _, err := RunModel(m, ModelOptions{Gen: 4, Batches: []int{1, 2}, Depths: []int{0}, Reps: 2})
	require.NoError(t, err)
	require.Len(t, res, 2)
	for _, r := range res {
		require.Equal(t, float64(7*model.Tiny.Layers+1), r.KernelsPerStep, r.Label())
	}
	rep := NewReport()
	rep.Results = res
	var md bytes.Buffer
	require.NoError(t, rep.Write(&md, "md"))
	require.Contains(t, md.String(), "| ms/step | kernels/step |")
	require.Contains(t, md.String(), fmt.Sprintf(" | %d |\n", 7*model.Tiny.Layers+1))
	// A backend that does not count reports none, and the table has no such column.
	res, _, err = RunModel(tinyModel(t, be), ModelOptions{Gen: 2, Batches: []int{1}, Depths: []int{0}, Reps: 1})
	require.NoError(t, err)
	require.Zero(t, res[0].KernelsPerStep)
	rep.Results = res
	md.Reset()
	require.NoError(t, rep.Write(&md, "md"))
	require.NotContains(t, md.String(), "kernels/step")
}
