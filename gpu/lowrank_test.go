//go:build cuda || cudaemu

package gpu_test

import (
	"math/rand/v2"
	"testing"

	"github.com/llamacu/llamacu/cpu"
	"github.com/llamacu/llamacu/gpu"
	"github.com/llamacu/llamacu/model"
	"github.com/llamacu/llamacu/tensor"
)

// TestLowRankOnGPU: low-rank pairs added at run time (an unmerged LoRA on a Q8_0 model) give on
// the CUDA backend, decode graphs on, the CPU backend's logits — through the small MatMuls of
// rank rows (the GEMV of N = r) and of K = r columns (the naive kernel's odd K) and the unfused
// gate/up path they force.
func TestLowRankOnGPU(t *testing.T) {
	cfg := model.Tiny
	src := model.Synthetic(cfg, 3, tensor.Q8_0)
	rng := rand.New(rand.NewPCG(5, 5))
	shapes := map[string][]int{}
	for _, ws := range cfg.WeightShapes() {
		shapes[ws.Name] = ws.Shape
	}
	type pair struct{ a, b *tensor.Tensor }
	pairs := map[string]pair{}
	for _, name := range []string{model.LayerName(0, model.NameWq), model.LayerName(1, model.NameWv), model.LayerName(2, model.NameW1),
		model.LayerName(2, model.NameW2), model.LayerName(3, model.NameWo), model.LayerName(3, model.NameW3)} {
		o, in, r := shapes[name][0], shapes[name][1], 5
		rnd := func(n int) []byte {
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(rng.NormFloat64() * 0.3)
			}
			return tensor.Encode(tensor.F32, v)
		}
		pairs[name] = pair{&tensor.Tensor{Name: name + ".a", DType: tensor.F32, Shape: []int{r, in}, Data: rnd(r * in)},
			&tensor.Tensor{Name: name + ".b", DType: tensor.F32, Shape: []int{o, r}, Data: rnd(o * r)}}
	}
	build := func(be model.Backend) *model.Model {
		m, err := model.New(be, cfg, src, nil)
		if err != nil {
			t.Fatal(err)
		}
		for name, p := range pairs {
			if err := m.AddLowRank(name, p.a, p.b); err != nil {
				t.Fatal(err)
			}
		}
		return m
	}
	cpuBe := cpu.New(cpu.Options{})
	defer cpuBe.Close()
	ref := build(cpuBe)
	plain, err := model.New(cpuBe, cfg, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := build(open(t, gpu.Options{KVF32: true, Graphs: true}))
	d := logitsDiff(t, ref, m)
	t.Logf("logits max |gpu − cpu| = %.3g", d)
	if d > 2e-3 {
		t.Errorf("logits max abs diff %.3g > 2e-3", d)
	}
	if moved := logitsDiff(t, ref, plain); moved < 1e-2 {
		t.Errorf("the pairs moved the logits by %.3g only: the test would not tell", moved)
	}
}
