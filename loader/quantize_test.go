package loader_test

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/llamacu/llamacu/bench/reference/kqsrc"
	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// llamaCppQuantTypes is what llama.cpp's llama_model_quantize wrote for kqsrc's 8-layer model
// (testdata/llama-cpp-quant-types.json, bench/reference/ggml_quants.py types): each tensor's
// type, and the rms error of its values against the F32 source.
type llamaCppQuantTypes struct {
	Source struct {
		Layers int    `json:"layers"`
		Seed   uint64 `json:"seed"`
	} `json:"source"`
	FTypes map[string]struct {
		Tensors map[string]struct {
			Type string  `json:"type"`
			RMSE float64 `json:"rmse"`
		} `json:"tensors"`
	} `json:"ftypes"`
}

// Quantize writes the file llama.cpp's llama-quantize writes for each file type: every tensor
// in the same type, and its values within a few percent of llama.cpp's rms error (the same
// bytes for Q8_0 and Q4_0, whose quantisers are ggml's reference ones).
func TestQuantizeMatchesLlamaCpp(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "llama-cpp-quant-types.json"))
	require.NoError(t, err)
	var ref llamaCppQuantTypes
	require.NoError(t, json.Unmarshal(b, &ref))
	require.Len(t, ref.FTypes, 7)
	vocab, err := loader.ReadGGUFVocab(sharedFile(t, "stories260K/stories260K.gguf"))
	require.NoError(t, err)
	cfg, src := kqsrc.Model(vocab, ref.Source.Layers, ref.Source.Seed)
	for name, want := range ref.FTypes {
		t.Run(name, func(t *testing.T) {
			qt, err := loader.ParseQuantType(name)
			require.NoError(t, err)
			var buf bytes.Buffer
			require.NoError(t, loader.Quantize(&buf, cfg, vocab, func(n string) (*tensor.Tensor, error) { return src[n], nil }, qt, loader.QuantizeOptions{}))
			path := filepath.Join(t.TempDir(), "q.gguf")
			require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
			info, err := loader.ReadGGUFInfo(path)
			require.NoError(t, err)
			f, err := loader.Open(path)
			require.NoError(t, err)
			defer f.Close()
			require.Len(t, info.Tensors, len(want.Tensors))
			shapes := cfg.WeightShapes() // WriteGGUFModel's order
			worst, worstName := 0.0, ""
			defer func() { t.Logf("%s: worst rms error ÷ llama.cpp's: %.4f (%s)", name, worst, worstName) }()
			require.Len(t, info.Tensors, len(shapes))
			for i, gt := range info.Tensors {
				w, ok := want.Tensors[gt.Name]
				require.True(t, ok, "tensor %s is not in llama.cpp's file", gt.Name)
				require.Equal(t, w.Type, gt.Type.String(), "%s: tensor %s", name, gt.Name)
				if w.RMSE == 0 {
					continue // F32
				}
				canon := shapes[i].Name
				require.Equal(t, shapes[i].Shape, gt.Shape, "%s is %s", gt.Name, canon)
				got := f.Tensors[canon].Float32s()
				orig := src[canon].Float32s()
				var ss float64
				for i := range got {
					d := float64(got[i] - orig[i])
					ss += d * d
				}
				rmse := math.Sqrt(ss / float64(len(got)))
				if rmse/w.RMSE > worst {
					worst, worstName = rmse/w.RMSE, gt.Name
				}
				ratio := map[string]float64{"Q8_0": 1.0001, "Q4_0": 1.0001}[gt.Type.String()]
				if ratio == 0 {
					ratio = 1.01
				}
				require.LessOrEqual(t, rmse, ratio*w.RMSE, "%s: tensor %s (%s): rms error %.4g, llama.cpp's %.4g", name, gt.Name, gt.Type, rmse, w.RMSE)
			}
		})
	}
}

// sharedFile returns the path of a file in ../shared/testdata, or skips the test naming it.
func sharedFile(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join("..", "..", "shared", "testdata", filepath.FromSlash(rel))
	if _, err := os.Stat(p); err != nil {
		t.Skipf("shared test file not found: %s", p)
	}
	return p
}

// The rules llama.cpp applies that kqsrc's model does not reach: a tied embedding quantized as
// the LM head; rows that are not whole super-blocks fall back (Q4_K → Q5_0, Q5_K → Q5_1,
// Q6_K → Q8_0), and rows not whole 32-blocks to F16; the 70B's value projection gets Q5_K.
func TestQuantTypeRules(t *testing.T) {
	q := func(name string) loader.QuantType {
		qt, err := loader.ParseQuantType(name)
		require.NoError(t, err)
		return qt
	}
	tied := model.Config{Dim: 64, Layers: 5, Heads: 8, KVHeads: 4, FFN: 172, Vocab: 512, MaxSeq: 256, TiedOutput: true}
	l70 := model.Config{Dim: 8192, Layers: 80, Heads: 64, KVHeads: 8, FFN: 28672, Vocab: 32000, MaxSeq: 4096}
	for _, tc := range []struct {
		qt    string
		cfg   model.Config
		name  string
		shape []int
		want  tensor.DType
	}{
		{"Q4_K_M", tied, model.NameTokEmbed, []int{512, 64}, tensor.Q8_0}, // the LM head's Q6_K, 64 columns: Q8_0
		{"Q4_K_M", tied, model.LayerName(0, model.NameWq), []int{64, 64}, tensor.Q5_0},
		{"Q5_K_S", tied, model.LayerName(0, model.NameWq), []int{64, 64}, tensor.Q5_1},
		{"Q6_K", tied, model.LayerName(0, model.NameWq), []int{64, 64}, tensor.Q8_0},
		{"Q8_0", tied, model.LayerName(0, model.NameW2), []int{64, 172}, tensor.F16},
		{"Q4_K_M", tied, model.LayerName(0, model.NameW2), []int{64, 172}, tensor.F16},
		{"Q4_K_M", tied, model.LayerName(0, model.NameAttnNorm), []int{64}, tensor.F32},
		{"F16", tied, model.LayerName(0, model.NameAttnNorm), []int{64}, tensor.F32},
		{"F16", tied, model.NameTokEmbed, []int{512, 64}, tensor.F16},
		{"Q4_K_M", l70, model.LayerName(11, model.NameWv), []int{1024, 8192}, tensor.Q5_K}, // not a more-bits layer: Q4_K, then 70B's Q5_K
		{"Q4_K_M", l70, model.LayerName(0, model.NameWv), []int{1024, 8192}, tensor.Q6_K},
		{"Q4_K_M", l70, model.LayerName(1, model.NameWq), []int{8192, 8192}, tensor.Q4_K},
		{"Q4_0", l70, model.NameOutput, []int{32000, 8192}, tensor.Q6_K},
		{"Q8_0", l70, model.NameOutput, []int{32000, 8192}, tensor.Q8_0},
		{"Q4_K_M", tied, model.NameOutput, []int{513, 40}, tensor.F16}, // rows of 40: not even Q8_0's blocks
		{"Q8_0", tied, model.NameOutput, []int{513, 40}, tensor.F16},
	} {
		require.Equal(t, tc.want, q(tc.qt).TensorType(tc.cfg, tc.name, tc.shape), "%s %s %v", tc.qt, tc.name, tc.shape)
	}
	_, err := loader.ParseQuantType("IQ4_XS")
	require.ErrorIs(t, err, loader.ErrQuantType)
}
