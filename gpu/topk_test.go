//go:build cuda || cudaemu

package gpu_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/llamacu/llamacu/engine"
	"github.com/llamacu/llamacu/gpu"
	"github.com/llamacu/llamacu/sample"
)

// TestDeviceTopKSampling: the engine on the CUDA backend samples from the device's top-k
// candidates (kernels/topk.cu) and draws exactly the tokens of whole-row sampling on the host
// (Engine.HostSampling), with decode graphs on, at TP 1 and at TP 2 (ranks sharing the GPU, the
// vocabulary split between them so that candidates are merged across ranks).
func TestDeviceTopKSampling(t *testing.T) {
	path := shared(t, "stories260K/stories260K.gguf")
	params := []sample.Params{
		sample.GreedyParams(),
		sample.DefaultParams(), // top-k 40, top-p 0.95, min-p 0.05
		{Temperature: 1.5, TopK: 200, TopP: 0.9, Seed: 11},
	}
	for _, tp := range []int{1, 2} {
		t.Run(fmt.Sprintf("tp%d", tp), func(t *testing.T) {
			g := newGroup(t, tp, gpu.CommStaged, gpu.Options{Graphs: true})
			e, err := engine.Load(engine.Options{ModelPath: path, Backends: g.ModelBackends(), Comms: g.Comms})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { e.Close() })
			if !e.Model.DeviceTopK() {
				t.Fatal("the CUDA backend does not offer model.TopKer")
			}
			for i, p := range params {
				p.Seed += uint64(i)
				run := func(host bool) []int32 {
					e.HostSampling = host
					var ids []int32
					_, err := e.Generate(context.Background(), engine.Request{Prompt: "Once upon a time", MaxTokens: 30, Sampling: p},
						func(id int32, _ string) error { ids = append(ids, id); return nil })
					if err != nil {
						t.Fatalf("Generate: %v", err)
					}
					return ids
				}
				want, got := run(true), run(false)
				if !slices.Equal(got, want) {
					t.Errorf("%+v: device top-k sampled\n%v\nwhole rows sampled\n%v", p, got, want)
				}
			}
			if st := g.Backends[0].GraphStats(); st.Failed > 0 || st.Replayed < 100 {
				t.Errorf("graph stats %+v: want ≥ 100 replayed steps, no failed capture", st)
			}
		})
	}
}
