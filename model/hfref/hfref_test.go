package hfref_test

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/model/hfref"
	"github.com/llamacu/llamacu/tensor"
)

// TestTransformers compares the CPU backend with PyTorch/transformers on the random-init
// LlamaForCausalLM that bench/reference/hf_logits.py builds (on the GPU machine, where torch is):
// LLAMACU_HF_REF names its output folder. The cuda-tagged gpu package has the same test for the
// CUDA backend (and this one again).
func TestTransformers(t *testing.T) {
	dir := os.Getenv("LLAMACU_HF_REF")
	if dir == "" {
		t.Skip("LLAMACU_HF_REF not set: run bench/reference/hf_logits.py first")
	}
	ref, err := hfref.ReadTransformersRef(dir)
	if err != nil {
		t.Fatal(err)
	}
	meta, _ := json.Marshal(ref.Meta)
	t.Logf("reference: %d tokens, vocab %d, made with %s", len(ref.TokenIDs), ref.Vocab, meta)
	be := cpu.New(cpu.Options{})
	t.Cleanup(func() { be.Close() })
	checkTransformers(t, ref, loadHF(t, dir, be), map[string]hfref.LogitsTol{
		"float32": hfref.TransformersTolF32, // the same function in fp32: only the order of sums differs
		"float16": hfref.TransformersTolF16, // transformers' fp16 rounding of activations
	})
}

// checkTransformers runs ref.Compare (prefill; prefill then 16 decode steps) and asserts each
// comparison is within its tolerance.
func checkTransformers(t *testing.T, ref *hfref.TransformersRef, m *model.Model, tols map[string]hfref.LogitsTol) {
	t.Helper()
	checks, err := ref.Compare(m, 16, tols)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range checks {
		t.Logf("%s vs transformers %s, %s: %v", m.Backend.Name(), c.Run, c.Mode, c.Diff)
		if !c.Diff.OK() {
			t.Errorf("%s vs transformers %s, %s: outside the tolerance: %v", m.Backend.Name(), c.Run, c.Mode, c.Diff)
		}
	}
}

// loadHF opens a Hugging Face folder and uploads it to be (engine.Load would also want a
// tokenizer, which a reference folder does not have: the tokens are ids).
func loadHF(t *testing.T, dir string, be model.Backend) *model.Model {
	t.Helper()
	f, err := loader.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if f.Format != loader.FormatSafetensors {
		t.Fatalf("%s: format %v, want a Hugging Face folder", dir, f.Format)
	}
	m, err := model.New(be, f.Config, f.Tensor, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// refConfig is a small GQA model for the fake reference: 4 heads of 16 over 2 KV heads.
var refConfig = model.Config{Name: "hf-ref-test", Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFN: 160, Vocab: 256,
	MaxSeq: 64, NormEps: 1e-5, RopeTheta: 10000}

// hfLikeWeights draws canonical (Meta RoPE order) weights as hf_logits.py does — embeddings
// N(0, 1), matrices N(0, 1/fan_in), norms 1 + 0.1·N(0, 1) — stored as F16, so that attention is
// far from uniform and a RoPE or head-order mistake shows in the logits.
func hfLikeWeights(cfg model.Config, seed uint64) map[string]*tensor.Tensor {
	r := rand.New(rand.NewPCG(seed, 99))
	out := map[string]*tensor.Tensor{}
	for _, ws := range cfg.WeightShapes() {
		n := 1
		for _, s := range ws.Shape {
			n *= s
		}
		v := make([]float32, n)
		for i := range v {
			x := r.NormFloat64()
			switch {
			case len(ws.Shape) == 1:
				x = 1 + 0.1*x
			case ws.Name != model.NameTokEmbed:
				x /= math.Sqrt(float64(ws.Shape[1]))
			}
			v[i] = float32(x)
		}
		out[ws.Name] = &tensor.Tensor{Name: ws.Name, DType: tensor.F16, Shape: ws.Shape, Data: tensor.Encode(tensor.F16, v)}
	}
	return out
}

func mapSource(ts map[string]*tensor.Tensor) model.TensorSource {
	return func(name string) (*tensor.Tensor, error) {
		if t, ok := ts[name]; ok {
			return t, nil
		}
		return nil, os.ErrNotExist
	}
}

// toHFOrder permutes the rows of a Q or K projection from Meta's interleaved RoPE order to HF's
// rotate-half order (HF row h·hd + j·hd/2 + i = Meta row h·hd + 2i + j), as a loader that forgot
// to undo it would leave them.
func toHFOrder(w *tensor.Tensor, heads int) *tensor.Tensor {
	rows := w.Shape[0]
	hd, rb := rows/heads, len(w.Data)/rows
	data := make([]byte, len(w.Data))
	for h := 0; h < heads; h++ {
		for i := 0; i < hd/2; i++ {
			for j := 0; j < 2; j++ {
				meta, hf := h*hd+2*i+j, h*hd+j*hd/2+i
				copy(data[hf*rb:(hf+1)*rb], w.Data[meta*rb:(meta+1)*rb])
			}
		}
	}
	c := *w
	c.Data = data
	return &c
}

// fakeRef writes, without torch, a reference folder in hf_logits.py's layout: the weights of
// hfLikeWeights exported by loader.ExportHF (fp16, HF names and row order) and, as both runs,
// the logits of the CPU backend on the canonical weights. It checks the plumbing (file format,
// names, Q/K row permutation, GQA shapes, prefill and decode), not the arithmetic.
func fakeRef(t *testing.T, be model.Backend, tokens int) (string, map[string]*tensor.Tensor) {
	t.Helper()
	dir := t.TempDir()
	w := hfLikeWeights(refConfig, 1)
	if err := loader.ExportHF(dir, refConfig, w, loader.ExportOptions{DType: tensor.F16}); err != nil {
		t.Fatal(err)
	}
	m, err := model.New(be, refConfig, mapSource(w), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	ref := &hfref.TransformersRef{Dir: dir, Format: hfref.TransformersRefFormat, Vocab: refConfig.Vocab,
		Meta: map[string]any{"tool": "engine/transformers_test.go fakeRef"}}
	ref.TokenIDs = append(ref.TokenIDs, 1)
	for len(ref.TokenIDs) < tokens {
		ref.TokenIDs = append(ref.TokenIDs, int32(3+r.IntN(refConfig.Vocab-3)))
	}
	for i := range tokens {
		ref.LogitRows = append(ref.LogitRows, int32(i))
	}
	logits, err := ref.Logits(m, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"float16", "float32"} {
		ref.Runs = append(ref.Runs, hfref.TransformersRun{Name: name, DType: name, File: "logits_" + name + ".f32",
			Shape: []int{tokens, refConfig.Vocab}, Logits: logits})
	}
	if err := hfref.WriteTransformersRef(ref); err != nil {
		t.Fatal(err)
	}
	return dir, w
}

// TestTransformersRefPlumbing runs the comparison of TestTransformers on a reference made here
// (fakeRef): it must pass for the exported folder loaded back, and fail for models that differ
// from the reference the way real bugs would (Q/K rows left in HF order; other weights).
func TestTransformersRefPlumbing(t *testing.T) {
	be := cpu.New(cpu.Options{})
	t.Cleanup(func() { be.Close() })
	const tokens = 40
	dir, w := fakeRef(t, be, tokens)
	ref, err := hfref.ReadTransformersRef(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ref.TokenIDs) != tokens || len(ref.Runs) != 2 || len(ref.Runs[1].Logits) != tokens*refConfig.Vocab {
		t.Fatalf("read back %d tokens, %d runs", len(ref.TokenIDs), len(ref.Runs))
	}
	tols := map[string]hfref.LogitsTol{"float32": hfref.TransformersTolF32, "float16": hfref.TransformersTolF16}

	t.Run("hf folder", func(t *testing.T) {
		checkTransformers(t, ref, loadHF(t, dir, be), tols)
	})

	// Models that must not pass: every comparison has to be outside the tolerance.
	bad := func(t *testing.T, src map[string]*tensor.Tensor) {
		m, err := model.New(be, refConfig, mapSource(src), nil)
		if err != nil {
			t.Fatal(err)
		}
		checks, err := ref.Compare(m, 16, map[string]hfref.LogitsTol{"float32": hfref.TransformersTolF16})
		if err != nil {
			t.Fatal(err)
		}
		if len(checks) != 2 {
			t.Fatalf("%d checks, want 2 (prefill; prefill + decode)", len(checks))
		}
		for _, c := range checks {
			t.Logf("%s: %v", c.Mode, c.Diff)
			if c.Diff.OK() || c.Diff.MaxAbs < 0.1 {
				t.Errorf("%s: a wrong model passes even the fp16 tolerance: %v", c.Mode, c.Diff)
			}
		}
	}
	t.Run("qk rows in hf order", func(t *testing.T) {
		src := map[string]*tensor.Tensor{}
		for k, v := range w {
			src[k] = v
		}
		for l := range refConfig.Layers {
			src[model.LayerName(l, model.NameWq)] = toHFOrder(w[model.LayerName(l, model.NameWq)], refConfig.Heads)
			src[model.LayerName(l, model.NameWk)] = toHFOrder(w[model.LayerName(l, model.NameWk)], refConfig.KVHeads)
		}
		bad(t, src)
	})
	t.Run("other weights", func(t *testing.T) {
		bad(t, hfLikeWeights(refConfig, 2))
	})
}

func TestReadTransformersRefErrors(t *testing.T) {
	be := cpu.New(cpu.Options{})
	t.Cleanup(func() { be.Close() })
	dir, _ := fakeRef(t, be, 8)
	js, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		edit   func(js string) string
		trunc  bool // cut the float32 logits file short
		substr string
	}{
		{"format", func(s string) string { return strings.Replace(s, hfref.TransformersRefFormat, "other/1", 1) }, false, "format"},
		{"token outside vocab", func(s string) string {
			return strings.Replace(s, `"token_ids": [`+"\n  1,", `"token_ids": [`+"\n  999,", 1)
		}, false, "outside the vocabulary"},
		{"file escapes", func(s string) string { return strings.Replace(s, `"logits_float32.f32"`, `"../x.f32"`, 1) }, false, "file name in the folder"},
		{"shape", func(s string) string { return strings.Replace(s, `"shape": [`+"\n    8,", `"shape": [`+"\n    9,", 1) }, false, "shape"},
		{"short file", func(s string) string { return s }, true, "bytes, want"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			edited := tc.edit(string(js))
			if !tc.trunc && edited == string(js) {
				t.Fatalf("the edit did not apply to:\n%s", js)
			}
			for _, f := range []string{"logits_float16.f32", "logits_float32.f32"} {
				b, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				if tc.trunc && f == "logits_float32.f32" {
					b = b[:len(b)-4]
				}
				if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(d, "reference.json"), []byte(edited), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := hfref.ReadTransformersRef(d)
			if err == nil || !strings.Contains(err.Error(), tc.substr) {
				t.Fatalf("error %v, want one containing %q", err, tc.substr)
			}
		})
	}
}
