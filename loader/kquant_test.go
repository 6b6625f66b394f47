package loader_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/loader"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// testdata/kquant holds GGUF files written by llama.cpp's own quantiser (llama_model_quantize,
// through bench/reference/ggml_quants.py) from one F32 model (bench/reference/ggufsrc: dim 256,
// FFN 768, 4/2 heads, 2 layers, stories260K's vocabulary, random weights), so each mixes types
// as a downloaded LLaMA 2 GGUF of that name does.
var kquantFiles = []struct {
	file  string
	types map[tensor.DType]int // tensors of each dtype, as llama.cpp chose them
}{
	{"kq256-Q2_K.gguf", map[tensor.DType]int{tensor.F32: 5, tensor.Q2_K: 9, tensor.Q3_K: 6, tensor.Q6_K: 1}},
	{"kq256-Q3_K_M.gguf", map[tensor.DType]int{tensor.F32: 5, tensor.Q3_K: 9, tensor.Q4_K: 4, tensor.Q5_K: 2, tensor.Q6_K: 1}},
	{"kq256-Q4_K_M.gguf", map[tensor.DType]int{tensor.F32: 5, tensor.Q4_K: 13, tensor.Q6_K: 3}},
	{"kq256-Q5_K_M.gguf", map[tensor.DType]int{tensor.F32: 5, tensor.Q5_K: 13, tensor.Q6_K: 3}},
	{"kq256-Q5_0.gguf", map[tensor.DType]int{tensor.F32: 5, tensor.Q5_0: 15, tensor.Q6_K: 1}},
}

// widened is src with every quantised tensor decoded to F32: the same function in plain floats.
func widened(src model.TensorSource) model.TensorSource {
	return func(name string) (*tensor.Tensor, error) {
		t, err := src(name)
		if err != nil || !t.DType.Quantized() {
			return t, err
		}
		return &tensor.Tensor{Name: t.Name, DType: tensor.F32, Shape: t.Shape, Data: tensor.Encode(tensor.F32, t.Float32s())}, nil
	}
}

// runLogits runs a 12-token prompt and 4 decode steps through m and returns every logit row.
func runLogits(t *testing.T, m *model.Model) [][]float32 {
	t.Helper()
	s, err := m.NewState(12, 12, 16, 4)
	if err != nil {
		t.Fatal(err)
	}
	tokens := []int32{1, 403, 261, 378, 300, 17, 95, 260, 480, 33, 270, 511}
	var out [][]float32
	step := func(toks []int32, pos0 int) {
		b := &model.Batch{Tokens: toks, Pos: make([]int32, len(toks)), Seq: make([]int32, len(toks)), BlockTables: [][]int32{{2, 0, 3, 1}}}
		rows := make([]int32, len(toks))
		for i := range toks {
			b.Pos[i], rows[i] = int32(pos0+i), int32(i)
		}
		l, err := m.Forward(s, b, rows)
		if err != nil {
			t.Fatal(err)
		}
		for i := range toks {
			out = append(out, append([]float32(nil), l[i*m.Config.Vocab:(i+1)*m.Config.Vocab]...))
		}
	}
	step(tokens, 0)
	for i := range 4 {
		step([]int32{int32(40 + 97*i)}, len(tokens)+i)
	}
	return out
}

// Files as llama.cpp quantises them load, and compute what their decoded weights compute: the
// CPU's matmuls over the stored blocks (decode and prefill) agree with the same model widened to
// F32 within 1e-5 (Q4_K and Q6_K decode sum per sub-block, the other types decode each row).
// Across files, the error against the finest (Q5_K_M) shrinks with the bits.
func TestLlamaCppQuantisedFiles(t *testing.T) {
	rel := map[string]float64{}
	var finest [][]float32
	for i := len(kquantFiles) - 1; i >= 0; i-- { // Q5_0, then Q5_K_M first: the others compare to it
		kf := kquantFiles[i]
		t.Run(kf.file, func(t *testing.T) {
			f, err := loader.Open(filepath.Join("testdata", "kquant", kf.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got := map[tensor.DType]int{}
			for _, tt := range f.Tensors {
				got[tt.DType]++
			}
			if len(got) != len(kf.types) {
				t.Errorf("dtypes %v, want %v", got, kf.types)
			}
			for d, n := range kf.types {
				if got[d] != n {
					t.Errorf("%d %v tensors, want %d", got[d], d, n)
				}
			}
			be := cpu.New(cpu.Options{Threads: 2})
			defer be.Close()
			q, err := model.New(be, f.Config, f.Tensor, nil)
			if err != nil {
				t.Fatal(err)
			}
			w, err := model.New(be, f.Config, widened(f.Tensor), nil)
			if err != nil {
				t.Fatal(err)
			}
			lq, lw := runLogits(t, q), runLogits(t, w)
			var maxDiff float64
			for r := range lq {
				for j := range lq[r] {
					maxDiff = max(maxDiff, math.Abs(float64(lq[r][j]-lw[r][j])))
				}
			}
			t.Logf("quantised vs widened to F32: max |Δlogit| %.3g", maxDiff)
			if maxDiff > 1e-5 {
				t.Errorf("max |Δlogit| %.3g between the quantised model and its F32 twin", maxDiff)
			}
			if kf.file == "kq256-Q5_K_M.gguf" {
				finest = lq
			} else if finest != nil {
				var se, ss float64
				for r := range lq {
					for j := range lq[r] {
						d := float64(lq[r][j] - finest[r][j])
						se += d * d
						ss += float64(finest[r][j]) * float64(finest[r][j])
					}
				}
				rel[kf.file] = math.Sqrt(se / ss)
				t.Logf("rms logit difference from Q5_K_M: %.3g of the rms logit", rel[kf.file])
			}
		})
	}
	if !(rel["kq256-Q2_K.gguf"] > rel["kq256-Q3_K_M.gguf"] && rel["kq256-Q3_K_M.gguf"] > rel["kq256-Q4_K_M.gguf"] && rel["kq256-Q2_K.gguf"] < 1) {
		t.Errorf("relative logit errors against Q5_K_M do not shrink with the bits: %v", rel)
	}
}
