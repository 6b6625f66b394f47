package loader

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// smallConfig is the synthetic shape of the round-trip tests: GQA 2:1, head_dim 8.
func smallConfig(tied bool) model.Config {
	return model.Config{Name: "small", Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, FFN: 48, Vocab: 64,
		MaxSeq: 128, NormEps: 1e-5, RopeTheta: 10000, TiedOutput: tied}
}

// randomTensors returns every weight cfg needs, F32, filled with seeded normal values.
func randomTensors(tb testing.TB, cfg model.Config, seed uint64) map[string]*tensor.Tensor {
	tb.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	ts := map[string]*tensor.Tensor{}
	for _, ws := range cfg.WeightShapes() {
		t := &tensor.Tensor{Name: ws.Name, DType: tensor.F32, Shape: slices.Clone(ws.Shape)}
		v := make([]float32, t.NumElements())
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		t.Data = tensor.Encode(tensor.F32, v)
		ts[ws.Name] = t
	}
	return ts
}

// exportTB runs ExportHF into a fresh folder under tb.TempDir and returns it.
func exportTB(tb testing.TB, cfg model.Config, ts map[string]*tensor.Tensor, opts ExportOptions) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "hf")
	if err := ExportHF(dir, cfg, ts, opts); err != nil {
		tb.Fatalf("ExportHF: %v", err)
	}
	return dir
}

// roundTripped is what a tensor of src should read back as after storing it as dtype: the
// dtype's own rounding (tensor.Encode), then fp32.
func roundTripped(src *tensor.Tensor, dtype tensor.DType) []float32 {
	v := src.Float32s()
	out := make([]float32, len(v))
	tensor.Decode(out, dtype, tensor.Encode(dtype, v))
	return out
}

// firstMismatch compares bit patterns (so NaNs and -0 count) and describes the first difference.
func firstMismatch(want, got []float32) string {
	if len(want) != len(got) {
		return fmt.Sprintf("length: want %d, got %d", len(want), len(got))
	}
	for i := range want {
		if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
			return fmt.Sprintf("element %d: want %g, got %g", i, want[i], got[i])
		}
	}
	return ""
}

func TestHFRoundTrip(t *testing.T) {
	tok := "../../shared/testdata/stories260K/tok512.model"
	if _, err := os.Stat(tok); err != nil {
		tok = "" // the tokenizer copy is checked only where the shared data is
	}
	cases := []struct {
		name   string
		dtype  tensor.DType
		shards int
		tied   bool
		untie  bool
		tok    string
	}{
		{"f32 single untied", tensor.F32, 0, false, false, ""},
		{"f32 single tied", tensor.F32, 1, true, false, tok},
		{"f32 3 shards untied", tensor.F32, 3, false, false, ""},
		{"f32 3 shards tied", tensor.F32, 3, true, false, ""},
		{"f32 tied written untied", tensor.F32, 2, true, true, ""},
		{"bf16 single", tensor.BF16, 1, false, false, ""},
		{"bf16 4 shards tied", tensor.BF16, 4, true, false, ""},
		{"f16 single tied", tensor.F16, 1, true, false, ""},
		{"f16 2 shards untied", tensor.F16, 2, false, false, tok},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := smallConfig(tc.tied)
			src := randomTensors(t, cfg, uint64(i))
			dir := exportTB(t, cfg, src, ExportOptions{DType: tc.dtype, Shards: tc.shards, UntieOutput: tc.untie, TokenizerModel: tc.tok})

			// The folder layout.
			_, singleErr := os.Stat(filepath.Join(dir, hfSingleName))
			_, indexErr := os.Stat(filepath.Join(dir, hfIndexName))
			shardFiles, _ := filepath.Glob(filepath.Join(dir, "model-*-of-*.safetensors"))
			if tc.shards > 1 {
				if singleErr == nil || indexErr != nil || len(shardFiles) != tc.shards {
					t.Fatalf("want %d shards and an index, have single=%v index=%v shards=%v", tc.shards, singleErr == nil, indexErr == nil, shardFiles)
				}
				last := filepath.Join(dir, fmt.Sprintf("model-%05d-of-%05d.safetensors", tc.shards, tc.shards))
				if _, err := os.Stat(last); err != nil {
					t.Errorf("shard naming: %v", err)
				}
			} else if singleErr != nil || indexErr == nil || len(shardFiles) != 0 {
				t.Fatalf("want one model.safetensors, have single=%v index=%v shards=%v", singleErr == nil, indexErr == nil, shardFiles)
			}

			m, err := openHF(dir)
			if err != nil {
				t.Fatalf("openHF: %v", err)
			}
			defer m.Close()

			want := cfg
			want.Name = "hf-llama"
			if tc.untie {
				want.TiedOutput = false
			}
			if m.Config != want {
				t.Errorf("config (-want +got):\n-%+v\n+%+v", want, m.Config)
			}
			if m.Format != FormatSafetensors || m.Path != dir {
				t.Errorf("Format %q Path %q", m.Format, m.Path)
			}
			if len(m.Skipped) != 0 {
				t.Errorf("Skipped = %q, want none", m.Skipped)
			}
			if wantTok := map[bool]string{true: filepath.Join(dir, hfTokenizerName)}[tc.tok != ""]; m.TokenizerPath != wantTok {
				t.Errorf("TokenizerPath = %q, want %q", m.TokenizerPath, wantTok)
			}
			if tc.tok != "" {
				a, _ := os.ReadFile(tc.tok)
				b, _ := os.ReadFile(m.TokenizerPath)
				if !bytes.Equal(a, b) {
					t.Errorf("tokenizer.model is not a copy of %s", tc.tok)
				}
			}
			if len(m.Tensors) != len(want.WeightShapes()) {
				t.Errorf("%d tensors, want %d", len(m.Tensors), len(want.WeightShapes()))
			}
			for _, ws := range want.WeightShapes() {
				got, err := m.Tensor(ws.Name)
				if err != nil {
					t.Fatal(err)
				}
				s := src[ws.Name]
				if ws.Name == model.NameOutput && tc.tied {
					s = src[model.NameTokEmbed] // UntieOutput writes the embedding as lm_head
				}
				if got.DType != tc.dtype || !slices.Equal(got.Shape, ws.Shape) || got.Name != ws.Name {
					t.Errorf("%s: %v %v %q, want %v %v", ws.Name, got.DType, got.Shape, got.Name, tc.dtype, ws.Shape)
				}
				// wq and wk come back in Meta order: element-wise equal to the source.
				if d := firstMismatch(roundTripped(s, tc.dtype), got.Float32s()); d != "" {
					t.Errorf("%s: %s", ws.Name, d)
				}
			}
		})
	}
}

// TestHFExportFileContents checks what ExportHF writes against the Hugging Face conventions
// themselves, not against our reader: HF names, q/k rows in rotate-half order, aligned headers,
// deterministic bytes.
func TestHFExportFileContents(t *testing.T) {
	cfg := smallConfig(false)
	src := randomTensors(t, cfg, 42)
	dir := exportTB(t, cfg, src, ExportOptions{})
	raw, err := os.ReadFile(filepath.Join(dir, hfSingleName))
	if err != nil {
		t.Fatal(err)
	}
	n := int(raw[0]) | int(raw[1])<<8 | int(raw[2])<<16
	if n%8 != 0 || !bytes.HasPrefix(raw[8:], []byte(`{"__metadata__":{"format":"pt"}`)) {
		t.Errorf("header length %d, header starts %q", n, raw[8:min(len(raw), 48)])
	}
	st, err := parseSafetensors(raw, "model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Tensors) != len(cfg.WeightShapes()) {
		t.Errorf("%d tensors in the file, want %d", len(st.Tensors), len(cfg.WeightShapes()))
	}
	// q_proj of layer 1: HF row h·hd + j·hd/2 + i holds Meta row h·hd + 2i + j.
	hd, heads := cfg.HeadDim(), cfg.Heads
	q := st.Tensors["model.layers.1.self_attn.q_proj.weight"]
	meta := src[model.LayerName(1, model.NameWq)]
	row := func(t *tensor.Tensor, r int) []float32 { v := make([]float32, t.Cols()); t.DecodeRow(v, r); return v }
	for h := 0; h < heads; h++ {
		for i := 0; i < hd/2; i++ {
			for j := 0; j < 2; j++ {
				if d := firstMismatch(row(meta, h*hd+2*i+j), row(q, h*hd+j*hd/2+i)); d != "" {
					t.Fatalf("q_proj head %d pair %d half %d: %s", h, i, j, d)
				}
			}
		}
	}
	// Other weights are not permuted.
	if d := firstMismatch(src[model.LayerName(0, model.NameWv)].Float32s(), st.Tensors["model.layers.0.self_attn.v_proj.weight"].Float32s()); d != "" {
		t.Errorf("v_proj: %s", d)
	}
	for _, name := range []string{"model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.up_proj.weight", "lm_head.weight", "model.embed_tokens.weight", "model.norm.weight", "model.layers.1.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight"} {
		if _, ok := st.Tensors[name]; !ok {
			t.Errorf("no %s in the export", name)
		}
	}
	if d := firstMismatch(src[model.LayerName(0, model.NameW1)].Float32s(), st.Tensors["model.layers.0.mlp.gate_proj.weight"].Float32s()); d != "" {
		t.Errorf("gate_proj is not w1: %s", d)
	}
	if d := firstMismatch(src[model.LayerName(0, model.NameW2)].Float32s(), st.Tensors["model.layers.0.mlp.down_proj.weight"].Float32s()); d != "" {
		t.Errorf("down_proj is not w2: %s", d)
	}

	// config.json in transformers' vocabulary.
	cj, _ := os.ReadFile(filepath.Join(dir, hfConfigName))
	for _, want := range []string{`"architectures": [` + "\n" + `    "LlamaForCausalLM"`, `"model_type": "llama"`, `"torch_dtype": "float32"`, `"tie_word_embeddings": false`, `"rms_norm_eps": 1e-05`, `"num_key_value_heads": 2`, `"rope_theta": 10000`} {
		if !strings.Contains(string(cj), want) {
			t.Errorf("config.json lacks %s:\n%s", want, cj)
		}
	}

	// Deterministic: a second export is byte-identical.
	dir2 := exportTB(t, cfg, src, ExportOptions{})
	for _, f := range []string{hfSingleName, hfConfigName} {
		a, _ := os.ReadFile(filepath.Join(dir, f))
		b, _ := os.ReadFile(filepath.Join(dir2, f))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two exports", f)
		}
	}
	// And it refuses to overwrite.
	if err := ExportHF(dir, cfg, src, ExportOptions{}); !errors.Is(err, os.ErrExist) {
		t.Errorf("export over an export: %v, want ErrExist", err)
	}
}

func TestExportHFErrors(t *testing.T) {
	cfg := smallConfig(false)
	src := randomTensors(t, cfg, 1)
	missing := randomTensors(t, cfg, 1)
	delete(missing, model.LayerName(1, model.NameW3))
	cases := []struct {
		name string
		ts   map[string]*tensor.Tensor
		opts ExportOptions
		want error
	}{
		{"q8_0 output", src, ExportOptions{DType: tensor.Q8_0}, tensor.ErrUnknownDType},
		{"missing tensor", missing, ExportOptions{}, ErrMissing},
		{"too many shards", src, ExportOptions{Shards: 1000}, nil},
		{"negative shards", src, ExportOptions{Shards: -1}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ExportHF(filepath.Join(t.TempDir(), "x"), cfg, tc.ts, tc.opts)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("got %v, want an error wrapping %v", err, tc.want)
			}
		})
	}
}

// TestPermuteRoPERowsFormula checks the row permutation against HF's convert_llama_weights_to_hf.py,
// permute(w) = w.view(n_heads, hd/2, 2, in).transpose(1, 2).reshape(n_heads·hd, in), evaluated by
// hand on row labels: row r of the Meta matrix holds the value r in every column.
func TestPermuteRoPERowsFormula(t *testing.T) {
	cases := []struct {
		heads, hd int
		// hfRows[k] is the Meta row that lands in HF row k: torch.arange(heads·hd)
		// .view(heads, hd/2, 2).transpose(1, 2).reshape(-1), worked out by hand.
		hfRows []int
	}{
		{2, 4, []int{0, 2, 1, 3, 4, 6, 5, 7}},
		{1, 8, []int{0, 2, 4, 6, 1, 3, 5, 7}},
		{3, 2, []int{0, 1, 2, 3, 4, 5}}, // hd 2: one pair per head, nothing moves
		{1, 4, []int{0, 2, 1, 3}},
	}
	for _, tc := range cases {
		for _, dt := range []tensor.DType{tensor.F32, tensor.BF16} {
			t.Run(fmt.Sprintf("heads%d_hd%d_%v", tc.heads, tc.hd, dt), func(t *testing.T) {
				rows, cols := tc.heads*tc.hd, 3
				v := make([]float32, rows*cols)
				for r := range rows {
					for c := range cols {
						v[r*cols+c] = float32(r)
					}
				}
				meta := tensor.Encode(dt, v)
				hf := permuteRoPERows(meta, rows, tc.heads, true)
				gotV := make([]float32, len(v))
				tensor.Decode(gotV, dt, hf)
				for k, want := range tc.hfRows {
					for c := range cols {
						if gotV[k*cols+c] != float32(want) {
							t.Fatalf("HF row %d col %d holds Meta row %g, want %d", k, c, gotV[k*cols+c], want)
						}
					}
				}
				if back := permuteRoPERows(hf, rows, tc.heads, false); !bytes.Equal(back, meta) {
					t.Errorf("HF → Meta does not undo Meta → HF")
				}
			})
		}
	}
}

// TestPermuteRoPEEquivalence checks the reason for the permutation: rotating Meta-ordered q and k
// by interleaved pairs (2i, 2i+1) gives the same attention score q·k as rotating the HF-permuted
// q and k by rotate-half pairs (i, i+hd/2), as transformers' apply_rotary_pos_emb does.
func TestPermuteRoPEEquivalence(t *testing.T) {
	const heads, hd, in = 2, 8, 5
	rng := rand.New(rand.NewPCG(3, 4))
	mat := func() []float32 {
		v := make([]float32, heads*hd*in)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	wq, wk := mat(), mat()
	x := make([]float32, in)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	matvec := func(w []float32) []float64 {
		y := make([]float64, heads*hd)
		for r := range y {
			for c := range in {
				y[r] += float64(w[r*in+c]) * float64(x[c])
			}
		}
		return y
	}
	toHF := func(w []float32) []float32 {
		out := make([]float32, len(w))
		tensor.Decode(out, tensor.F32, permuteRoPERows(tensor.Encode(tensor.F32, w), heads*hd, heads, true))
		return out
	}
	interleaved := func(q []float64, pos int) { // Meta / llama2.c
		for h := 0; h < heads; h++ {
			for i := 0; i < hd/2; i++ {
				a := float64(pos) * math.Pow(10000, -float64(2*i)/hd)
				p := q[h*hd+2*i:]
				p[0], p[1] = p[0]*math.Cos(a)-p[1]*math.Sin(a), p[0]*math.Sin(a)+p[1]*math.Cos(a)
			}
		}
	}
	rotateHalf := func(q []float64, pos int) { // transformers: q·cos + rotate_half(q)·sin
		for h := 0; h < heads; h++ {
			p := q[h*hd:]
			for i := 0; i < hd/2; i++ {
				a := float64(pos) * math.Pow(10000, -float64(2*i)/hd)
				p[i], p[i+hd/2] = p[i]*math.Cos(a)-p[i+hd/2]*math.Sin(a), p[i+hd/2]*math.Cos(a)+p[i]*math.Sin(a)
			}
		}
	}
	for _, pos := range []int{0, 1, 7, 100} {
		qm, km := matvec(wq), matvec(wk)
		qh, kh := matvec(toHF(wq)), matvec(toHF(wk))
		interleaved(qm, pos)
		interleaved(km, pos+3)
		rotateHalf(qh, pos)
		rotateHalf(kh, pos+3)
		for h := 0; h < heads; h++ {
			var sm, sh float64
			for d := 0; d < hd; d++ {
				sm += qm[h*hd+d] * km[h*hd+d]
				sh += qh[h*hd+d] * kh[h*hd+d]
			}
			if math.Abs(sm-sh) > 1e-9*(1+math.Abs(sm)) {
				t.Errorf("pos %d head %d: Meta score %g, HF score %g", pos, h, sm, sh)
			}
		}
	}
}

// TestHFExportRealModels converts the real checkpoints of the shared test data (llama2.c .bin and
// GGUF, F32 and F16) into Hugging Face folders and reads them back: every tensor must survive
// (bit-exact where the dtype is unchanged, otherwise as tensor.Encode rounds it).
func TestHFExportRealModels(t *testing.T) {
	const data = "../../shared/testdata/"
	cases := []struct {
		name   string
		path   string
		dtype  tensor.DType
		shards int
	}{
		{"stories260K.bin f32", data + "stories260K/stories260K.bin", tensor.F32, 1},
		{"stories260K.bin bf16 sharded", data + "stories260K/stories260K.bin", tensor.BF16, 3},
		{"stories260K.gguf f16 sharded", data + "stories260K/stories260K.gguf", tensor.F16, 2},
		{"tiny-random.gguf f16", data + "tiny-random/llama-2-tiny-random.gguf", tensor.F16, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := os.Stat(tc.path); err != nil {
				t.Skipf("no %s: %v", tc.path, err)
			}
			src, err := Open(tc.path)
			if err != nil {
				t.Fatalf("Open(%s): %v", tc.path, err)
			}
			defer src.Close()
			dir := exportTB(t, src.Config, src.Tensors, ExportOptions{DType: tc.dtype, Shards: tc.shards})
			m, err := Open(dir)
			if err != nil {
				t.Fatalf("Open(%s): %v", dir, err)
			}
			defer m.Close()
			want, got := src.Config, m.Config
			want.Name, got.Name = "", ""
			if got != want {
				t.Errorf("config (-want +got):\n-%+v\n+%+v", want, got)
			}
			if len(m.Tensors) != len(src.Tensors) {
				t.Errorf("%d tensors, want %d", len(m.Tensors), len(src.Tensors))
			}
			for name, s := range src.Tensors {
				g, err := m.Tensor(name)
				if err != nil {
					t.Fatal(err)
				}
				if s.DType == tc.dtype && !bytes.Equal(s.Data, g.Data) {
					t.Errorf("%s: %v bytes differ", name, s.DType)
				}
				if d := firstMismatch(roundTripped(s, tc.dtype), g.Float32s()); d != "" {
					t.Errorf("%s: %s", name, d)
				}
			}
		})
	}
}
